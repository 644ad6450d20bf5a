//! Probes: a container whose liveness file disappears is killed by its
//! host and restarted with `LivenessProbeFailed` (and fails with it once out
//! of restarts), beside one whose probe keeps passing; readiness (over HTTP,
//! with no network but loopback) flips `ready` and writes events as the
//! server starts and stops answering; a tcp_socket probe passes on a
//! private network. Probe requests that make no sense are refused naming
//! the field.

use crate::tenant;
use reqwest::StatusCode;
use serde_json::{json, Value};
use skiff_e2e::{eventually, limit, secs, Tenant};

/// Events of `kind` the container has.
async fn events_of(t: &Tenant, id: &str, kind: &str) -> Vec<Value> {
    t.events(id)
        .await
        .into_iter()
        .filter(|e| e["kind"] == kind)
        .collect()
}

/// Runs `script` in the running container; its stdout.
async fn sh(t: &Tenant, id: &str, script: &str) -> String {
    let (status, out) = t.exec(id, json!({ "command": ["sh", "-c", script] })).await;
    assert_eq!(status, StatusCode::OK, "{out}");
    out["stdout"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn a_failing_liveness_probe_restarts_the_run_and_then_fails_it_while_a_passing_one_does_not()
{
    limit(secs(120), async {
        let t = tenant().await;
        // Healthy until its file goes; every attempt leaves a line in
        // /tmp/probes (so the test can see attempts were made).
        let liveness = json!({
            "exec": {"command": ["sh", "-c", "echo . >> /tmp/probes; test -f /tmp/healthy"]},
            "period_s": 1, "failure_threshold": 2,
        });
        let mut failing = t
            .platform
            .sh("touch /tmp/healthy; sleep 1; rm /tmp/healthy; sleep 600");
        failing["restart_policy"] = json!("on_failure");
        failing["max_restarts"] = json!(1);
        failing["liveness_probe"] = liveness.clone();
        let failing = t.create_id(&failing).await;
        // The control: the same probe, its file never goes.
        let mut passing = t.platform.sh("touch /tmp/healthy; sleep 600");
        passing["liveness_probe"] = liveness.clone();
        let passing = t.create_id(&passing).await;

        let view = t.wait_exited_in(&failing, "failed").await;
        assert_eq!(view["reason"], "LivenessProbeFailed", "{view}");
        assert_eq!(view["restart_count"], 1, "{view}");
        assert_eq!(view["exit_code"], 137, "{view}");
        assert_eq!(
            view["liveness_probe"],
            json!({"exec": {"command": ["sh", "-c", "echo . >> /tmp/probes; test -f /tmp/healthy"]},
                   "initial_delay_s": 0, "period_s": 1, "timeout_s": 1, "failure_threshold": 2})
        );
        let killed = events_of(&t, &failing, "LivenessProbeFailed").await;
        assert_eq!(killed.len(), 2, "one per run: {killed:?}");
        assert!(
            killed[0]["message"]
                .as_str()
                .unwrap()
                .contains("exited with code 1"),
            "{killed:?}"
        );
        let exits = events_of(&t, &failing, "Exited").await;
        assert!(
            exits.iter().all(|e| e["message"]
                .as_str()
                .unwrap()
                .contains("liveness probe failed")),
            "{exits:?}"
        );

        // The control ran at least as many attempts as the failing one
        // needed, and is still on its first run.
        eventually("the passing probe's attempts", secs(30), || async {
            let lines = sh(&t, &passing, "wc -l < /tmp/probes").await;
            (lines.trim().parse::<u32>().unwrap_or(0) >= 4).then_some(())
        })
        .await;
        let view = t.get(&passing).await;
        assert_eq!(view["state"], "running", "{view}");
        assert_eq!(view["restart_count"], 0, "{view}");
        assert!(events_of(&t, &passing, "LivenessProbeFailed")
            .await
            .is_empty());
        t.delete(&passing).await;
    })
    .await
}

#[tokio::test]
async fn readiness_follows_the_server_and_tcp_probes_reach_a_private_network() {
    limit(secs(120), async {
        let t = tenant().await;
        // The server starts only once the test says so.
        let script = "mkdir -p /www; echo ok > /www/index.html; \
            while [ ! -f /tmp/go ]; do sleep 0.1; done; exec httpd -f -p 8080 -h /www";
        let mut web = t.platform.sh(script);
        web["network"] = json!("none");
        web["readiness_probe"] = json!({
            "http_get": {"port": 8080, "path": "/index.html"},
            "period_s": 1, "failure_threshold": 1,
        });
        let web = t.create_id(&web).await;
        let view = t.wait(&web, "running", 60).await;
        assert_eq!(view["ready"], false, "no server yet: {view}");
        // The control for "not ready": a container without a probe is
        // ready as soon as it runs.
        let plain = t.create_id(&t.platform.sh("sleep 600")).await;
        assert_eq!(t.wait(&plain, "running", 60).await["ready"], true);

        sh(&t, &web, "touch /tmp/go").await;
        let ready = eventually("ready", secs(30), || async {
            let v = t.get(&web).await;
            (v["ready"] == true).then_some(v)
        })
        .await;
        assert_eq!(ready["state"], "running");
        let events = events_of(&t, &web, "Ready").await;
        assert!(
            events[0]["message"].as_str().unwrap().contains("answered 200"),
            "{events:?}"
        );

        // A server that stops answering: not ready, with an event.
        sh(&t, &web, "rm /www/index.html").await;
        eventually("not ready", secs(30), || async {
            let v = t.get(&web).await;
            (v["ready"] == false).then_some(())
        })
        .await;
        let not_ready = events_of(&t, &web, "NotReady").await;
        assert!(
            not_ready[0]["message"].as_str().unwrap().contains("answered 404"),
            "{not_ready:?}"
        );

        // tcp_socket on a private network: ready once something listens.
        let mut tcp = t.platform.sh(
            "mkdir -p /www; while [ ! -f /tmp/go ]; do sleep 0.1; done; exec httpd -f -p 7000 -h /www",
        );
        tcp["readiness_probe"] = json!({"tcp_socket": {"port": 7000}, "period_s": 1});
        let tcp = t.create_id(&tcp).await;
        assert_eq!(t.wait(&tcp, "running", 60).await["ready"], false);
        sh(&t, &tcp, "touch /tmp/go").await;
        eventually("tcp ready", secs(30), || async {
            (t.get(&tcp).await["ready"] == true).then_some(())
        })
        .await;
        for id in [&web, &plain, &tcp] {
            t.delete(id).await;
        }
    })
    .await
}

#[tokio::test]
async fn probe_requests_that_make_no_sense_are_refused_naming_the_field() {
    limit(secs(60), async {
        let t = tenant().await;
        let with = |field: &str, probe: Value| {
            let mut spec = t.platform.sh("true");
            spec[field] = probe;
            spec
        };
        let cases = [
            (with("liveness_probe", json!({})), "liveness_probe"),
            (
                with(
                    "readiness_probe",
                    json!({"exec": {"command": ["true"]}, "tcp_socket": {"port": 1}}),
                ),
                "readiness_probe",
            ),
            (
                with("liveness_probe", json!({"tcp_socket": {"port": 0}})),
                "liveness_probe.tcp_socket.port",
            ),
            (
                with(
                    "liveness_probe",
                    json!({"http_get": {"port": 80, "path": "/a b"}}),
                ),
                "liveness_probe.http_get.path",
            ),
            (
                with(
                    "readiness_probe",
                    json!({"exec": {"command": ["true"]}, "period_s": 0}),
                ),
                "readiness_probe.period_s",
            ),
        ];
        for (spec, field) in cases {
            let reply = t.create(&spec).await;
            assert_eq!(reply.status, 400, "{field}: {reply:?}");
            assert_eq!(reply.problem()["field"], field, "{reply:?}");
        }
        // The control: a sensible probe is taken.
        let ok = with("liveness_probe", json!({"exec": {"command": ["true"]}}));
        let id = t.create_id(&ok).await;
        t.wait_exited_in(&id, "succeeded").await;
    })
    .await
}
