//! Container groups (`/v1/groups`): members placed on one host, sharing
//! localhost, one address and the group's published ports; stopped,
//! started, restarted and deleted together; a member's own lifecycle
//! requests refused; bad requests named by field.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use skiff_e2e::{limit, secs, unique, Platform, Tenant};
use std::time::{Duration, Instant};

/// A member running `script` in the test image.
fn member(platform: &Platform, name: &str, script: &str) -> Value {
    json!({
        "name": name,
        "image": platform.image(),
        "command": ["sh", "-c", script],
        "cpu": 0.25,
        "memory_mib": 64,
    })
}

/// busybox httpd on 8080 answering `body` (in the background: the shell
/// ends on SIGTERM at once, where a process 1 without a handler would wait
/// for the SIGKILL).
fn server(platform: &Platform, body: &str) -> Value {
    member(
        platform,
        "server",
        &format!(
            "trap 'exit 0' TERM; mkdir -p /tmp/www && echo {body} > /tmp/www/index.html && \
             httpd -p 8080 -h /tmp/www && while true; do sleep 1; done"
        ),
    )
}

/// Fetches http://127.0.0.1:8080/ until it answers (at most ~20 s), prints
/// `got=<answer>`, then sleeps.
fn client(platform: &Platform, name: &str) -> Value {
    member(
        platform,
        name,
        "for i in $(seq 1 100); do out=$(timeout 2 wget -q -O- http://127.0.0.1:8080/ 2>&1) && break; \
         sleep 0.2; done; echo \"got=$out\"; trap 'exit 0' TERM; while true; do sleep 1; done",
    )
}

async fn create_group(t: &Tenant, body: &Value) -> Value {
    let reply = t.call(Method::POST, "/v1/groups", Some(body)).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{body}: {reply:?}");
    reply.json()
}

/// Polls the group until `done` (every 200 ms, up to `timeout_s`).
async fn poll_group(
    t: &Tenant,
    id: &str,
    timeout_s: u64,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let path = format!("/v1/groups/{id}");
    t.poll_path(&path, timeout_s, what, done, |g| async move {
        let mut diag = format!("{g:#}\n");
        for id in member_ids(&g) {
            diag.push_str(&t.diag(&id).await);
        }
        diag
    })
    .await
}

/// DELETE the group, asserting 204.
async fn delete_group(t: &Tenant, id: &str) {
    let reply = t
        .call(Method::DELETE, &format!("/v1/groups/{id}"), None)
        .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{reply:?}");
}

fn member_ids(g: &Value) -> Vec<String> {
    g["containers"]
        .as_array()
        .expect("containers")
        .iter()
        .map(|m| m["container"]["id"].as_str().expect("id").to_owned())
        .collect()
}

fn all_members(g: &Value, field: &str, value: &str) -> bool {
    g["containers"]
        .as_array()
        .is_some_and(|ms| ms.iter().all(|m| m["container"][field] == value))
}

/// Polls a member's logs until `needle` appears `n` times (the logger
/// writes a run's output a moment after the run is reported).
async fn wait_logs_count(t: &Tenant, id: &str, needle: &str, n: usize) -> String {
    let mut logs = String::new();
    for _ in 0..150 {
        logs = t.logs(id).await;
        if logs.matches(needle).count() >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    logs
}

async fn http_get(url: &str) -> Option<String> {
    let reply = reqwest::Client::new()
        .get(url)
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .ok()?;
    Some(reply.text().await.ok()?.trim().to_owned())
}

#[tokio::test]
async fn a_groups_containers_share_one_host_localhost_and_its_published_port() {
    limit(secs(240), async {
        let platform = Platform::get().await;
        let t = platform.new_tenant().await;
        let body = json!({
            "name": unique("pair"),
            "containers": [server(platform, "group-pong"), client(platform, "client")],
            "ports": [{ "port": 8080 }],
            "labels": { "app": "pair" },
        });
        let created = create_group(&t, &body).await;
        assert_eq!(created["state"], "pending", "{created}");
        assert_eq!(created["restart_policy"], "always", "{created}");
        let id = created["id"].as_str().unwrap().to_owned();
        let ids = member_ids(&created);
        assert_eq!(ids.len(), 2);
        for m in created["containers"].as_array().unwrap() {
            let c = &m["container"];
            assert_eq!(c["labels"]["skiff.group"], id.as_str(), "{c}");
            assert_eq!(c["labels"]["app"], "pair", "{c}");
            assert_eq!(c["network"], "private", "{c}");
        }

        let g = poll_group(&t, &id, 90, "running with an address", |g| {
            g["state"] == "running" && g["ip"].is_string()
        })
        .await;
        // One host, one address.
        let hosts: Vec<&str> = g["containers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["container"]["host_id"].as_str().expect("host"))
            .collect();
        assert_eq!(hosts[0], hosts[1], "placed together: {g:#}");
        assert_eq!(g["host_id"], hosts[0]);
        let ip = g["ip"].as_str().unwrap();
        for m in g["containers"].as_array().unwrap() {
            let member_ip = &m["container"]["ip"];
            if member_ip.is_string() {
                assert_eq!(member_ip, ip, "one address: {g:#}");
            }
        }

        // The client reached the server on localhost.
        let client_id = &ids[1];
        let logs = wait_logs_count(&t, client_id, "got=", 1).await;
        assert!(logs.contains("got=group-pong"), "{logs}\n{}", t.diag(client_id).await);

        // The group's published port answers from the host.
        let port = &g["ports"][0];
        assert_eq!(port["port"], 8080, "{g:#}");
        let host_port = port["host_port"].as_u64().expect("host port");
        let mut answer = None;
        for _ in 0..50 {
            answer = http_get(&format!("http://127.0.0.1:{host_port}/")).await;
            if answer.as_deref() == Some("group-pong") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(answer.as_deref(), Some("group-pong"));

        // The control: a container outside the group, on the same host,
        // finds nothing on its own localhost:8080.
        let mut alone = platform.sh(
            "out=$(timeout 2 wget -q -O- http://127.0.0.1:8080/ 2>&1) && echo \"alone=$out\" || echo alone=nothing",
        );
        alone["network"] = json!("private");
        alone["restart_policy"] = json!("never");
        let host = t.host_of(&ids[0]).await;
        alone["placement"] =
            json!({ "host_labels": { skiff_e2e::platform::HOST_LABEL: host.name } });
        let alone_id = t.create_id(&alone).await;
        t.wait_exited_in(&alone_id, "succeeded").await;
        let alone_logs = t.logs(&alone_id).await;
        assert!(alone_logs.contains("alone=nothing"), "{alone_logs}");

        // Listed (by namespace too), and reported by its label.
        let reply = t.call(Method::GET, "/v1/groups?namespace=DEFAULT", None).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert!(
            reply.json()["items"].as_array().unwrap().iter().any(|i| i["id"] == id.as_str()),
            "{reply:?}"
        );
        let reply = t.call(Method::GET, "/v1/groups?namespace=elsewhere", None).await;
        assert_eq!(reply.json()["items"], json!([]), "{reply:?}");

        delete_group(&t, &id).await;
        for member in &ids {
            t.wait_removed(member).await;
        }
        let reply = t.call(Method::GET, &format!("/v1/groups/{id}"), None).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{reply:?}");
    })
    .await
}

#[tokio::test]
async fn a_group_is_stopped_started_and_restarted_as_a_whole() {
    limit(secs(240), async {
        let platform = Platform::get().await;
        let t = platform.new_tenant().await;
        // SIGTERM ends them within a second (no waiting for SIGKILL).
        let looping = |name: &str| {
            member(
                platform,
                name,
                &format!("trap 'exit 0' TERM; echo run-{name}; while true; do sleep 1; done"),
            )
        };
        let body = json!({ "containers": [looping("a"), looping("b")] });
        let created = create_group(&t, &body).await;
        let id = created["id"].as_str().unwrap().to_owned();
        let ids = member_ids(&created);
        poll_group(&t, &id, 90, "running", |g| g["state"] == "running").await;

        // A member alone is not acted on; a container of its own is (the control).
        let reply = t
            .call(
                Method::POST,
                &format!("/v1/containers/{}/stop", ids[0]),
                None,
            )
            .await;
        assert_eq!(reply.status, StatusCode::CONFLICT, "{reply:?}");
        assert!(
            reply.problem()["detail"].as_str().unwrap().contains(&id),
            "{reply:?}"
        );
        let reply = t
            .call(Method::DELETE, &format!("/v1/containers/{}", ids[1]), None)
            .await;
        assert_eq!(reply.status, StatusCode::CONFLICT, "{reply:?}");
        let own = t.create_id(&platform.sleeper(0.1)).await;
        let reply = t
            .call(Method::POST, &format!("/v1/containers/{own}/stop"), None)
            .await;
        assert_eq!(reply.status, StatusCode::ACCEPTED, "{reply:?}");

        // Stop: every member.
        let reply = t
            .call(Method::POST, &format!("/v1/groups/{id}/stop"), None)
            .await;
        assert_eq!(reply.status, StatusCode::ACCEPTED, "{reply:?}");
        let g = poll_group(&t, &id, 60, "stopped", |g| {
            g["state"] == "stopped" && all_members(g, "state", "stopped")
        })
        .await;
        assert!(g["ip"].is_null(), "{g:#}");

        // Start: every member again, on one host.
        let reply = t
            .call(Method::POST, &format!("/v1/groups/{id}/start"), None)
            .await;
        assert_eq!(reply.status, StatusCode::ACCEPTED, "{reply:?}");
        let g = poll_group(&t, &id, 90, "running again", |g| {
            g["state"] == "running" && all_members(g, "state", "running")
        })
        .await;
        let hosts: Vec<&Value> = g["containers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| &m["container"]["host_id"])
            .collect();
        assert_eq!(hosts[0], hosts[1], "{g:#}");
        for member in &ids {
            let logs = wait_logs_count(&t, member, "run-", 2).await;
            assert_eq!(logs.matches("run-").count(), 2, "two runs: {logs}");
        }

        // Restart: every member gets a new run.
        let reply = t
            .call_with_key(
                Method::POST,
                &format!("/v1/groups/{id}/restart"),
                None,
                Some("r-1"),
            )
            .await;
        assert_eq!(reply.status, StatusCode::ACCEPTED, "{reply:?}");
        let again = t
            .call_with_key(
                Method::POST,
                &format!("/v1/groups/{id}/restart"),
                None,
                Some("r-1"),
            )
            .await;
        assert_eq!(again.status, StatusCode::ACCEPTED, "{again:?}");
        assert_eq!(again.json()["id"], reply.json()["id"], "replayed");
        for member in &ids {
            // One restart asked (the key's second request replayed): one
            // Restarting event, and a third run's output.
            assert_eq!(
                t.count_events(member, "Restarting").await,
                1,
                "{}",
                t.diag(member).await
            );
            let logs = wait_logs_count(&t, member, "run-", 3).await;
            assert_eq!(logs.matches("run-").count(), 3, "{logs}");
        }
        poll_group(&t, &id, 90, "running after the restart", |g| {
            g["state"] == "running" && all_members(g, "state", "running")
        })
        .await;

        delete_group(&t, &id).await;
        let reply = t
            .call(Method::DELETE, &format!("/v1/groups/{id}"), None)
            .await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{reply:?}");
    })
    .await
}

#[tokio::test]
async fn group_requests_are_checked_field_by_field() {
    limit(secs(120), async {
        let platform = Platform::get().await;
        let t = platform.new_tenant().await;
        let ok = json!({ "containers": [member(platform, "a", "sleep 1")], "restart_policy": "never" });
        let cases: Vec<(&str, Value, StatusCode, &str)> = vec![
            (
                "a name twice",
                json!({ "containers": [member(platform, "a", "true"), member(platform, "a", "true")] }),
                StatusCode::BAD_REQUEST,
                "containers[1].name",
            ),
            ("no container", json!({ "containers": [] }), StatusCode::BAD_REQUEST, "containers"),
            (
                "a member's own field",
                {
                    let mut m = member(platform, "a", "true");
                    m["cpu"] = json!(99);
                    json!({ "containers": [m] })
                },
                StatusCode::BAD_REQUEST,
                "containers[0].cpu",
            ),
            (
                "more than a host in all",
                {
                    let big: Vec<Value> = (0..10)
                        .map(|i| {
                            let mut m = member(platform, &format!("m{i}"), "true");
                            m["cpu"] = json!(4);
                            m
                        })
                        .collect();
                    json!({ "containers": big })
                },
                StatusCode::UNPROCESSABLE_ENTITY,
                "cpu",
            ),
            (
                "the group label",
                json!({ "containers": [member(platform, "a", "true")], "labels": { "skiff.group": "x" } }),
                StatusCode::BAD_REQUEST,
                "labels.skiff.group",
            ),
            (
                "a bad namespace",
                json!({ "containers": [member(platform, "a", "true")], "namespace": "a/b" }),
                StatusCode::BAD_REQUEST,
                "namespace",
            ),
        ];
        for (what, body, status, field) in cases {
            let reply = t.call(Method::POST, "/v1/groups", Some(&body)).await;
            assert_eq!(reply.status, status, "{what}: {reply:?}");
            assert_eq!(reply.problem()["field"], field, "{what}: {reply:?}");
        }
        // The control, and its name taken in its namespace (not in another).
        let mut named = ok.clone();
        named["name"] = json!(unique("g"));
        let first = t
            .call_with_key(Method::POST, "/v1/groups", Some(&named), Some("k1"))
            .await;
        assert_eq!(first.status, StatusCode::CREATED, "{first:?}");
        let replay = t
            .call_with_key(Method::POST, "/v1/groups", Some(&named), Some("k1"))
            .await;
        assert_eq!(replay.status, StatusCode::CREATED, "{replay:?}");
        assert_eq!(replay.json()["id"], first.json()["id"], "one group per key");
        let taken = t.call(Method::POST, "/v1/groups", Some(&named)).await;
        assert_eq!(taken.status, StatusCode::CONFLICT, "{taken:?}");
        assert_eq!(taken.problem()["field"], "name");
        named["namespace"] = json!("other-rg");
        let elsewhere = t.call(Method::POST, "/v1/groups", Some(&named)).await;
        assert_eq!(elsewhere.status, StatusCode::CREATED, "{elsewhere:?}");

        // Another tenant sees none of it.
        let other = t.another().await;
        let id = first.json()["id"].as_str().unwrap().to_owned();
        let reply = other.call(Method::GET, &format!("/v1/groups/{id}"), None).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{reply:?}");
        let reply = other.call(Method::POST, &format!("/v1/groups/{id}/stop"), None).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{reply:?}");
    })
    .await
}

/// The network namespaces named after `group` (the group's id), on any host.
fn sandbox_namespaces(group: &str) -> Vec<String> {
    std::fs::read_dir("/run/netns")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.contains(group))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn a_group_keeps_its_shared_namespace_across_a_sigkilled_worker_and_loses_it_when_stopped() {
    limit(secs(240), async {
        let platform = Platform::get().await;
        // Exclusive: no other test runs while a worker is down.
        let t = platform.new_exclusive_tenant().await;
        let body = json!({
            "containers": [server(platform, "still-here"), client(platform, "client")],
        });
        let created = create_group(&t, &body).await;
        let id = created["id"].as_str().unwrap().to_owned();
        let ids = member_ids(&created);
        poll_group(&t, &id, 90, "running", |g| {
            g["state"] == "running" && g["ip"].is_string()
        })
        .await;
        let logs = wait_logs_count(&t, &ids[1], "got=", 1).await;
        assert!(logs.contains("got=still-here"), "{logs}");
        let host = t.host_of(&ids[0]).await;
        let pids = [host.task_pid(&ids[0]).await, host.task_pid(&ids[1]).await];
        assert_eq!(
            sandbox_namespaces(&id).len(),
            1,
            "one namespace for the group"
        );

        let old_pid = host.worker_pid();
        platform.restart_worker_with_sigkill(host).await;
        assert_ne!(host.worker_pid(), old_pid, "a new worker process");
        host.wait_metric_at_least(
            "skiff_worker_assignments_received_total",
            1.0,
            Duration::from_secs(30),
        )
        .await;

        // The same runs, still sharing localhost: the client reaches the
        // server through it again, from inside.
        assert_eq!(
            [host.task_pid(&ids[0]).await, host.task_pid(&ids[1]).await],
            pids,
            "re-adopted, not restarted"
        );
        let (status, out) = t
            .exec(
                &ids[1],
                json!({ "command": ["wget", "-q", "-O-", "http://127.0.0.1:8080/"] }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{out}");
        assert_eq!(out["exit_code"], 0, "{out}");
        assert_eq!(
            out["stdout"].as_str().map(str::trim),
            Some("still-here"),
            "{out}"
        );
        assert_eq!(
            sandbox_namespaces(&id).len(),
            1,
            "kept: {:?}",
            sandbox_namespaces(&id)
        );

        // Stopped: the last member's end takes the namespace with it.
        let reply = t
            .call(Method::POST, &format!("/v1/groups/{id}/stop"), None)
            .await;
        assert_eq!(reply.status, StatusCode::ACCEPTED, "{reply:?}");
        poll_group(&t, &id, 60, "stopped", |g| {
            g["state"] == "stopped" && all_members(g, "state", "stopped")
        })
        .await;
        let deadline = Instant::now() + Duration::from_secs(30);
        while !sandbox_namespaces(&id).is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert_eq!(sandbox_namespaces(&id), Vec::<String>::new(), "torn down");
        delete_group(&t, &id).await;
    })
    .await
}

#[tokio::test]
async fn a_group_request_waiting_on_a_members_report_does_not_deadlock_it() {
    limit(secs(120), async {
        let platform = Platform::get().await;
        let t = platform.new_tenant().await;
        let body = json!({ "containers": [member(platform, "a", "sleep 600"), member(platform, "b", "sleep 600")] });
        let created = create_group(&t, &body).await;
        let id = created["id"].as_str().unwrap().to_owned();
        let ids = member_ids(&created);
        // What a host's report does to its member's row, held open: lock
        // it, write it (the row version is now this transaction's), ...
        let pool = sqlx::PgPool::connect(&platform.database_url).await.unwrap();
        let mut report = pool.begin().await.unwrap();
        for sql in [
            "SELECT id FROM containers WHERE id = $1::uuid FOR UPDATE",
            "UPDATE containers SET message = 'report 1' WHERE id = $1::uuid",
        ] {
            sqlx::query(sql).bind(&ids[1]).execute(&mut *report).await.unwrap();
        }
        // ... while a request on the group locks the group and waits for
        // that member ...
        let request = {
            let t = t.via(1);
            let path = format!("/v1/groups/{id}/stop");
            tokio::spawn(async move { t.call(Method::POST, &path, None).await })
        };
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(!request.is_finished(), "the request waits for the member's row");
        // ... then writes the row again: a second write of a row this
        // transaction wrote re-checks its foreign keys (the group's row, FOR
        // KEY SHARE), which the request's lock of the group must not block.
        sqlx::query("UPDATE containers SET message = 'report 2' WHERE id = $1::uuid")
            .bind(&ids[1])
            .execute(&mut *report)
            .await
            .expect("the report's second write (a deadlock here is the bug)");
        report.commit().await.expect("the report commits");
        let reply = request.await.unwrap();
        assert_eq!(reply.status, StatusCode::ACCEPTED, "the request goes on: {reply:?}");
        poll_group(&t, &id, 60, "stopped", |g| g["state"] == "stopped").await;
        delete_group(&t, &id).await;
    })
    .await
}

#[tokio::test]
async fn a_groups_members_share_its_volumes() {
    limit(secs(120), async {
        let platform = Platform::get().await;
        let t = platform.new_tenant().await;
        let mut writer = member(
            platform,
            "writer",
            "echo from-the-writer > /shared/note; trap 'exit 0' TERM; while true; do sleep 1; done",
        );
        writer["mounts"] = json!([{ "volume": "scratch", "path": "/shared" }]);
        // The reader mounts it elsewhere and sees the writer's file there.
        let mut reader = member(
            platform,
            "reader",
            "for i in $(seq 1 100); do [ -s /data/note ] && break; sleep 0.2; done; \
             echo \"read=$(cat /data/note)\"; trap 'exit 0' TERM; while true; do sleep 1; done",
        );
        reader["mounts"] = json!([{ "volume": "scratch", "path": "/data" }]);
        let body = json!({
            "containers": [writer, reader],
            "volumes": [{ "name": "scratch", "empty_dir": { "medium": "memory", "size_mib": 8 } }],
        });
        let created = create_group(&t, &body).await;
        let id = created["id"].as_str().unwrap().to_owned();
        let ids = member_ids(&created);
        assert_eq!(created["volumes"][0]["name"], "scratch", "{created}");
        let logs = wait_logs_count(&t, &ids[1], "read=", 1).await;
        assert!(
            logs.contains("read=from-the-writer"),
            "{logs}\n{}",
            t.diag(&ids[1]).await
        );
        delete_group(&t, &id).await;
    })
    .await
}
