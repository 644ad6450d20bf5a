//! `POST /v1/containers/{id}/exec`: a process in a running container, its
//! output and exit code; bounded in time and output; in the container's
//! cgroup; another tenant's container is not found; a container that is
//! not running refuses.

use crate::tenant;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use skiff_e2e::{limit, secs, Tenant};

async fn exec(t: &Tenant, id: &str, body: Value) -> (StatusCode, Value) {
    let reply = t
        .call(
            Method::POST,
            &format!("/v1/containers/{id}/exec"),
            Some(&body),
        )
        .await;
    let status = reply.status;
    (status, reply.json())
}

#[tokio::test]
async fn exec_runs_in_the_container_and_passes_its_output_and_exit_code() {
    limit(secs(120), async {
        let t = tenant().await;
        let mut spec = t.platform.sh("echo main; exec sleep 600");
        spec["name"] = json!("exec-target");
        spec["env"] = json!({ "FROM_CONTAINER": "c1" });
        let id = t.create_id(&spec).await;
        t.wait(&id, "running", 60).await;

        let (status, out) = exec(&t, &id, json!({ "command": ["cat", "/etc/hostname"] })).await;
        assert_eq!(status, StatusCode::OK, "{out}");
        assert_eq!(out["stdout"], "exec-target\n", "{out}");
        assert_eq!(out["exit_code"], 0, "{out}");
        assert_eq!(out["timed_out"], false, "{out}");

        // Exit codes, both streams, the container's environment with the
        // request's over it.
        let (_, out) = exec(
            &t,
            &id,
            json!({
                "command": ["sh", "-c", "echo out $FROM_CONTAINER $EXTRA; echo err >&2; exit 3"],
                "env": { "EXTRA": "x2" },
            }),
        )
        .await;
        assert_eq!(out["exit_code"], 3, "{out}");
        assert_eq!(out["stdout"], "out c1 x2\n", "{out}");
        assert_eq!(out["stderr"], "err\n", "{out}");

        // It runs in the container's cgroup (its limits apply) and PID
        // namespace (pid 1 is the container's process).
        let (_, out) = exec(
            &t,
            &id,
            json!({ "command": ["sh", "-c", "cat /proc/self/cgroup; echo ---; cat /proc/1/cgroup; cat /proc/1/cmdline"] }),
        )
        .await;
        let text = out["stdout"].as_str().unwrap();
        let (own, first) = text.split_once("---\n").expect("two parts");
        assert!(first.starts_with(own), "same cgroup as pid 1: {text}");
        assert!(text.contains("sleep"), "pid 1 is the container's: {text}");

        // Bounded: past timeout_s it is SIGKILLed; output past 1 MiB dropped.
        let (_, out) = exec(&t, &id, json!({ "command": ["sleep", "100"], "timeout_s": 1 })).await;
        assert_eq!(out["timed_out"], true, "{out}");
        assert_eq!(out["exit_code"], 137, "{out}");
        let (_, out) = exec(
            &t,
            &id,
            json!({ "command": ["sh", "-c", "head -c 3000000 /dev/zero | tr '\\\\0' a"] }),
        )
        .await;
        assert_eq!(out["stdout_truncated"], true, "{}", out["stderr"]);
        assert_eq!(out["stdout"].as_str().map(str::len), Some(1024 * 1024));

        // Bad input names its field; another tenant's container does not
        // exist for it.
        let (status, problem) = exec(&t, &id, json!({ "command": [] })).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
        assert_eq!(problem["field"], "command", "{problem}");
        let (status, problem) = exec(&t, &id, json!({ "command": ["true"], "timeout_s": 0 })).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
        assert_eq!(problem["field"], "timeout_s", "{problem}");
        let other = t.another().await;
        let (status, _) = exec(&other, &id, json!({ "command": ["true"] })).await;
        assert_eq!(status, StatusCode::NOT_FOUND);

        // Not running: refused, naming the state.
        t.stop(&id).await;
        t.wait(&id, "exited", 60).await;
        let (status, problem) = exec(&t, &id, json!({ "command": ["true"] })).await;
        assert_eq!(status, StatusCode::CONFLICT, "{problem}");
        assert_eq!(problem["field"], "state", "{problem}");
        assert_eq!(t.logs(&id).await, "main\n", "exec output never reaches the log");
    })
    .await
}
