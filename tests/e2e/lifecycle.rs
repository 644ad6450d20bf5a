//! Stop, start, restart, restart policies and delete.

use crate::tenant;
use reqwest::{Method, StatusCode};
use serde_json::json;
use skiff_e2e::{limit, secs};
use std::time::Duration;

#[tokio::test]
async fn stop_then_start_then_restart_a_running_container() {
    limit(secs(120), async {
        let t = tenant().await;
        // `sleep` as PID 1 ignores SIGTERM: each stop ends in SIGKILL after 2 s.
        let mut spec = t.platform.spec(&["sleep", "300"]);
        spec["stop_timeout_s"] = json!(2);
        let id = t.create_id(&spec).await;

        let running = t.wait(&id, "running", 60).await;
        assert_eq!(running["state"], "running", "{}", t.diag(&id).await);
        let first_start = running["started_at"].clone();
        assert!(first_start.is_string(), "{running}");

        // wait gives up with 408 while the state is not reached.
        let timeout = t.wait_reply(&id, "exited", 1).await;
        assert_eq!(timeout.status, StatusCode::REQUEST_TIMEOUT, "{timeout:?}");
        timeout.problem();

        let accepted = t.stop(&id).await;
        assert_eq!(accepted["id"], id.as_str(), "{accepted}");
        let stopped = t.wait_exited_in(&id, "stopped").await;
        assert_eq!(stopped["reason"], "StopRequested", "{}", t.diag(&id).await);
        assert!(stopped["finished_at"].is_string(), "{stopped}");

        t.start(&id).await;
        let again = t
            .poll_until(&id, 60, "running again after start", |c| {
                c["state"] == "running" && c["started_at"] != first_start
            })
            .await;
        let second_start = again["started_at"].clone();

        t.restart(&id).await;
        t.poll_until(&id, 60, "a new run after restart", |c| {
            c["state"] == "running" && c["started_at"] != second_start
        })
        .await;
        assert_eq!(
            t.count_events(&id, "Started").await,
            3,
            "three runs: {}",
            t.diag(&id).await
        );
        t.delete(&id).await;
    })
    .await
}

#[tokio::test]
async fn stop_kills_a_process_that_ignores_sigterm_after_stop_timeout() {
    limit(secs(90), async {
        let t = tenant().await;
        let mut spec = t.platform.sh("trap '' TERM; echo ignoring-term; sleep 300");
        spec["stop_timeout_s"] = json!(2);
        let created = t.create_ok(&spec).await;
        assert_eq!(created["stop_timeout_s"], 2, "{created}");
        let id = skiff_e2e::id_of(&created);
        t.wait(&id, "running", 60).await;
        t.stop(&id).await;
        let stopped = t.wait_exited_in(&id, "stopped").await;
        let events = t.events(&id).await;
        let diag = t.diag(&id).await;
        let killing = events
            .iter()
            .find(|e| e["kind"] == "Killing")
            .unwrap_or_else(|| panic!("a Killing event: {diag}"));
        // SIGTERM was ignored: the process ended by SIGKILL, and only once
        // the configured stop timeout had passed since the SIGTERM.
        let at = |v: &serde_json::Value| {
            chrono::DateTime::parse_from_rfc3339(v.as_str().expect("a time")).expect("RFC 3339")
        };
        let waited = at(&stopped["finished_at"]) - at(&killing["at"]);
        assert!(
            waited >= chrono::Duration::seconds(2),
            "killed {waited} after the SIGTERM, before stop_timeout_s (2 s): {diag}"
        );
        assert_eq!(stopped["exit_code"], 137, "ended by SIGKILL: {diag}");
        t.delete(&id).await;
    })
    .await
}

#[tokio::test]
async fn stop_sends_sigterm_first() {
    limit(secs(90), async {
        let t = tenant().await;
        // A long stop timeout: only a SIGTERM can end it within the wait below.
        let mut spec = t
            .platform
            .sh("trap 'echo got-term; exit 0' TERM; echo ready; while true; do sleep 1; done");
        spec["stop_timeout_s"] = json!(90);
        let id = t.create_id(&spec).await;
        t.wait(&id, "running", 60).await;
        t.stop(&id).await;
        t.wait_exited_in(&id, "stopped").await;
        let logs = t.logs(&id).await;
        assert!(logs.contains("got-term"), "{logs:?}\n{}", t.diag(&id).await);
        t.delete(&id).await;
    })
    .await
}

#[tokio::test]
async fn on_failure_restarts_until_max_restarts() {
    limit(secs(120), async {
        let t = tenant().await;
        let mut spec = t.platform.sh("echo run; exit 1");
        spec["restart_policy"] = json!("on_failure");
        spec["max_restarts"] = json!(2);
        let created = t.create_ok(&spec).await;
        assert_eq!(created["restart_policy"], "on_failure", "{created}");
        assert_eq!(created["max_restarts"], 2, "{created}");
        let id = skiff_e2e::id_of(&created);

        // Back-off is 1 s then 2 s; the wait route may return at the first exit
        // (a failed state between restarts), so poll for the final outcome.
        t.poll_until(&id, 60, "failed after two restarts", |c| {
            c["state"] == "failed" && c["restart_count"].as_u64() >= Some(2)
        })
        .await;
        // Longer than the next back-off (4 s): no third restart comes.
        tokio::time::sleep(Duration::from_secs(6)).await;
        let done = t.get(&id).await;
        let diag = t.diag(&id).await;
        assert_eq!(done["state"], "failed", "{diag}");
        assert_eq!(done["restart_count"], 2, "{diag}");
        assert_eq!(done["exit_code"], 1, "{diag}");
        assert_eq!(t.count_events(&id, "Started").await, 3, "{diag}");

        // on_failure does not restart a success.
        let mut ok = t.platform.spec(&["echo", "fine"]);
        ok["restart_policy"] = json!("on_failure");
        ok["max_restarts"] = json!(2);
        let ok_id = t.create_id(&ok).await;
        let done = t.wait_exited_in(&ok_id, "succeeded").await;
        assert_eq!(done["restart_count"], 0, "{}", t.diag(&ok_id).await);
    })
    .await
}

#[tokio::test]
async fn always_restarts_a_success_until_max_restarts() {
    limit(secs(90), async {
        let t = tenant().await;
        let mut spec = t.platform.spec(&["echo", "again"]);
        spec["restart_policy"] = json!("always");
        spec["max_restarts"] = json!(1);
        let id = t.create_id(&spec).await;
        t.poll_until(&id, 60, "succeeded after one restart", |c| {
            c["state"] == "succeeded" && c["restart_count"].as_u64() >= Some(1)
        })
        .await;
        // Longer than the next back-off (2 s): no second restart comes.
        tokio::time::sleep(Duration::from_secs(4)).await;
        let done = t.get(&id).await;
        let diag = t.diag(&id).await;
        assert_eq!(done["state"], "succeeded", "{diag}");
        assert_eq!(done["restart_count"], 1, "{diag}");
        assert_eq!(t.count_events(&id, "Started").await, 2, "{diag}");
    })
    .await
}

#[tokio::test]
async fn delete_removes_the_container_and_its_runtime_state() {
    limit(secs(120), async {
        let t = tenant().await;
        let platform = t.platform;
        let mut spec = t.platform.spec(&["sleep", "300"]);
        spec["stop_timeout_s"] = json!(1);
        let id = t.create_id(&spec).await;
        t.wait(&id, "running", 60).await;
        let host = t.host_of(&id).await;
        let in_containerd = |ids: &[String]| ids.iter().any(|c| c.contains(&id));
        assert!(
            in_containerd(&host.container_ids().await),
            "the running container is in its host's containerd (ids contain the skiff id): {:?}\n{}",
            host.container_ids().await,
            t.diag(&id).await
        );

        // A running container: 202 at once, the object in `stopping`; the
        // host stops and removes it after (its `removed` event says when).
        let path = format!("/v1/containers/{id}");
        let accepted = t.call(Method::DELETE, &path, None).await;
        assert_eq!(accepted.status, StatusCode::ACCEPTED, "{accepted:?}");
        assert_eq!(accepted.json()["state"], "stopping", "{accepted:?}");
        t.wait_removed(&id).await;
        for sub in ["", "/logs", "/events"] {
            let reply = t.call(Method::GET, &format!("{path}{sub}"), None).await;
            assert_eq!(
                reply.status,
                StatusCode::NOT_FOUND,
                "GET {path}{sub}: {reply:?}"
            );
            reply.problem();
        }
        let again = t.call(Method::DELETE, &path, None).await;
        assert_eq!(
            again.status,
            StatusCode::NOT_FOUND,
            "second delete: {again:?}"
        );
        let listed = t.list(&[]).await;
        assert!(
            !listed["items"]
                .as_array()
                .expect("items")
                .iter()
                .any(|c| c["id"] == id.as_str()),
            "deleted container listed: {listed}"
        );

        // The runtime state is gone by the `removed` event.
        let ids = host.container_ids().await;
        assert!(
            !in_containerd(&ids),
            "still in containerd after its removed event: {ids:?}\n{}",
            platform.logs_dump_matching(Some(&id))
        );

        // An exited container deletes the same way.
        let exited = t.create_id(&t.platform.spec(&["echo", "bye"])).await;
        t.wait_exited_in(&exited, "succeeded").await;
        let deleted = t
            .call(Method::DELETE, &format!("/v1/containers/{exited}"), None)
            .await;
        assert_eq!(deleted.status, StatusCode::NO_CONTENT, "{deleted:?}");
        let gone = t
            .call(Method::GET, &format!("/v1/containers/{exited}"), None)
            .await;
        assert_eq!(gone.status, StatusCode::NOT_FOUND, "{gone:?}");
    })
    .await
}

#[tokio::test]
async fn start_during_a_stop_runs_the_container_again() {
    limit(secs(90), async {
        let t = crate::tenant().await;
        let mut spec = t.platform.spec(&["sleep", "300"]);
        spec["stop_timeout_s"] = serde_json::json!(1);
        let id = t.create_id(&spec).await;
        let first = t.wait(&id, "running", 60).await;
        t.stop(&id).await;
        // The user's latest word wins: start while the stop is in flight.
        t.start(&id).await;
        let again = t
            .poll_until(&id, 60, "a new run after stop+start", |c| {
                c["state"] == "running" && c["started_at"] != first["started_at"]
            })
            .await;
        assert_eq!(again["restart_count"], 0, "{}", t.diag(&id).await);
        t.delete(&id).await;
    })
    .await
}
