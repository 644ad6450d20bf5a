//! Volumes: an empty_dir (memory and disk) takes writes up to its size and
//! refuses the rest, and keeps its data across a container's restarts; a
//! secret volume shows its files read-only, mode 0400, on a tmpfs, in a
//! container and in a job's task, while no response shows their contents;
//! deleting a container removes its volumes from its host; requests that
//! do not add up are refused naming the field.

use crate::tenant;
use base64::Engine as _;
use reqwest::Method;
use serde_json::{json, Value};
use skiff_e2e::{eventually, limit, secs};

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[tokio::test]
async fn an_empty_dir_refuses_writes_past_its_size_and_outlives_a_restart() {
    limit(secs(90), async {
        let t = tenant().await;
        // First run: writes within and past each size, then fails; the
        // restart finds what the first run wrote.
        let script = "if [ -f /mem/marker ]; then echo second-run; ls /mem /disk; exit 0; fi; \
            dd if=/dev/zero of=/mem/a bs=1M count=1 2>/dev/null && echo mem-within=ok; \
            dd if=/dev/zero of=/mem/b bs=1M count=4 2>/dev/null || echo mem-past=refused; \
            dd if=/dev/zero of=/disk/a bs=1M count=1 2>/dev/null && echo disk-within=ok; \
            dd if=/dev/zero of=/disk/b bs=1M count=16 2>/dev/null || echo disk-past=refused; \
            grep -E ' /(mem|disk) ' /proc/mounts | cut -d' ' -f2,3 | sort; \
            touch /mem/marker; exit 1";
        let mut spec = t.platform.sh(script);
        spec["restart_policy"] = json!("on_failure");
        spec["max_restarts"] = json!(1);
        spec["volumes"] = json!([
            {"name": "mem", "empty_dir": {"medium": "memory", "size_mib": 2}},
            {"name": "disk", "empty_dir": {"size_mib": 8}},
        ]);
        spec["mounts"] = json!([
            {"volume": "mem", "path": "/mem"},
            {"volume": "disk", "path": "/disk"},
        ]);
        let id = t.create_id(&spec).await;
        let view = t.wait_exited_in(&id, "succeeded").await;
        assert_eq!(view["restart_count"], 1, "{view}");
        assert_eq!(
            view["volumes"],
            json!([
                {"name": "mem", "empty_dir": {"size_mib": 2, "medium": "memory"}},
                {"name": "disk", "empty_dir": {"size_mib": 8, "medium": "disk"}},
            ]),
            "{view}"
        );
        let logs = t.logs(&id).await;
        let expected = "mem-within=ok\nmem-past=refused\ndisk-within=ok\ndisk-past=refused\n\
            /disk ext4\n/mem tmpfs\nsecond-run\n";
        assert!(
            logs.starts_with(expected),
            "{logs:?}\n{}",
            t.diag(&id).await
        );
        // What the first run wrote is there (b partly, up to the limit).
        for file in ["a", "b", "marker"] {
            assert!(logs.contains(&format!("{file}\n")), "{logs:?}");
        }

        // Deleting the container removes its volumes from its host.
        let host = t.host_of(&id).await;
        let dir = host.state_dir.join("volumes").join(&id);
        assert!(dir.exists(), "{} should exist while it does", dir.display());
        t.delete(&id).await;
        t.wait_removed(&id).await;
        let mounts = || std::fs::read_to_string("/proc/mounts").unwrap();
        eventually("its volumes are gone", secs(30), || async {
            (!dir.exists() && !mounts().contains(&dir.display().to_string())).then_some(())
        })
        .await;
    })
    .await
}

#[tokio::test]
async fn a_secret_volume_is_read_only_mode_0400_on_tmpfs_and_never_shown() {
    limit(secs(90), async {
        let t = tenant().await;
        let secret = "s3cr3t-volume-value-7f1c";
        let script = "cat /etc/creds/token; echo; cat /etc/creds/tls/ca.pem; echo; \
            stat -c '%a %u' /etc/creds/token; \
            if touch /etc/creds/new 2>/dev/null; then echo volume=writable; else echo volume=read-only; fi; \
            grep ' /etc/creds ' /proc/mounts | cut -d' ' -f3; \
            echo scratch > /work/x && cat /work/x";
        let mut spec = t.platform.sh(script);
        spec["volumes"] = json!([
            {"name": "creds", "secret": {"files": {"token": b64(secret), "tls/ca.pem": b64("CA")}}},
            {"name": "work", "empty_dir": {}},
        ]);
        spec["mounts"] = json!([
            // read_only false is overridden: a secret is always read-only.
            {"volume": "creds", "path": "/etc/creds", "read_only": false},
            {"volume": "work", "path": "/work"},
        ]);
        let created = t.create_ok(&spec).await;
        let id = created["id"].as_str().unwrap().to_string();
        let view = t.wait_exited_in(&id, "succeeded").await;
        let logs = t.logs(&id).await;
        assert_eq!(
            logs,
            format!("{secret}\nCA\n400 0\nvolume=read-only\ntmpfs\nscratch\n"),
            "{}",
            t.diag(&id).await
        );
        assert_eq!(
            view["volumes"][0],
            json!({"name": "creds", "secret": {"files": ["tls/ca.pem", "token"]}}),
            "{view}"
        );
        assert_eq!(
            view["mounts"][0],
            json!({"volume": "creds", "path": "/etc/creds", "read_only": true}),
            "a secret's mount shows read-only"
        );
        assert_eq!(
            view["volumes"][1]["empty_dir"],
            json!({"size_mib": 1024, "medium": "disk"})
        );

        // The same template as a job's: its task gets the files too.
        let reply = t
            .call(
                Method::POST,
                "/v1/jobs",
                Some(&json!({"template": spec, "count": 1})),
            )
            .await;
        assert_eq!(reply.status, 201, "{reply:?}");
        let job: Value = reply.json();
        let job_id = job["id"].as_str().unwrap().to_string();
        let task = eventually("the job's task", secs(30), || async {
            let r = t
                .call(Method::GET, &format!("/v1/jobs/{job_id}/tasks"), None)
                .await;
            r.json()["items"][0]["id"].as_str().map(str::to_owned)
        })
        .await;
        t.wait_exited_in(&task, "succeeded").await;
        assert!(t.logs(&task).await.starts_with(&format!("{secret}\nCA\n")));

        // No response carries the contents (nor their base64).
        let job_view = t.call(Method::GET, &format!("/v1/jobs/{job_id}"), None).await;
        let events = t.events(&id).await;
        for (what, text) in [
            ("create response", created.to_string()),
            ("container", view.to_string()),
            ("events", json!(events).to_string()),
            ("job", job.to_string()),
            ("job now", job_view.text.clone()),
            ("task", t.get(&task).await.to_string()),
        ] {
            assert!(
                !text.contains(secret) && !text.contains(&b64(secret)),
                "{what} shows the secret: {text}"
            );
        }
        assert!(
            !t.platform.service_logs().contains(secret),
            "a service log shows the secret"
        );
    })
    .await
}

#[tokio::test]
async fn volume_requests_that_do_not_add_up_are_refused_naming_the_field() {
    limit(secs(60), async {
        let t = tenant().await;
        let with = |volumes: Value, mounts: Value| {
            let mut spec = t.platform.sh("true");
            spec["volumes"] = volumes;
            spec["mounts"] = mounts;
            spec
        };
        let scratch = json!([{"name": "s", "empty_dir": {}}]);
        let cases = [
            (
                with(scratch.clone(), json!([{"volume": "t", "path": "/x"}])),
                422,
                "mounts[0].volume",
            ),
            (
                with(scratch.clone(), json!([{"volume": "s", "path": "/proc/x"}])),
                400,
                "mounts[0].path",
            ),
            (
                with(
                    scratch.clone(),
                    json!([{"volume": "s", "path": "/a"}, {"volume": "s", "path": "/a"}]),
                ),
                422,
                "mounts[1].path",
            ),
            (with(json!([{"name": "s"}]), json!([])), 400, "volumes[0]"),
            (
                with(
                    json!([{"name": "s", "empty_dir": {"medium": "memory", "size_mib": 100000}}]),
                    json!([]),
                ),
                422,
                "volumes[0].empty_dir.size_mib",
            ),
            (
                with(
                    json!([{"name": "s", "secret": {"files": {"k": "not base64!"}}}]),
                    json!([]),
                ),
                400,
                "volumes[0].secret.files.k",
            ),
            (
                with(
                    json!([{"name": "s", "secret": {"files": {"../k": "YQ=="}}}]),
                    json!([]),
                ),
                400,
                "volumes[0].secret.files.../k",
            ),
        ];
        for (spec, status, field) in cases {
            let reply = t.create(&spec).await;
            assert_eq!(reply.status, status, "{field}: {reply:?}");
            assert_eq!(reply.problem()["field"], field, "{reply:?}");
        }
        // The control: the same volume, mounted once at a fine path.
        let ok = with(
            scratch,
            json!([{"volume": "s", "path": "/x", "read_only": true}]),
        );
        let id = t.create_id(&ok).await;
        let view = t.wait_exited_in(&id, "succeeded").await;
        assert_eq!(
            view["mounts"],
            json!([{"volume": "s", "path": "/x", "read_only": true}])
        );
    })
    .await
}
