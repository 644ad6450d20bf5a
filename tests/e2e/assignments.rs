//! Assignments travel as changes, not as the whole set: changing one of a
//! host's many containers sends that one, and a worker whose stream breaks
//! (its API replica killed) fails over to the other replica and resumes
//! there from its revision instead of taking a snapshot again. Read from the
//! worker's own `/metrics`.

use serde_json::json;
use skiff_e2e::{limit, metric_series, secs, Platform, HOST_LABEL};
use std::time::Duration;

const RECEIVED: &str = "skiff_worker_assignments_received_total";
/// How many containers the host holds while one of them changes.
const HELD: usize = 20;

/// `skiff_worker_assignment_updates_total{kind="<kind>"}` (0 when absent).
async fn updates_of_kind(host: &skiff_e2e::Host, kind: &str) -> f64 {
    let text = host
        .metrics()
        .await
        .unwrap_or_else(|e| panic!("metrics of {}: {e:#}", host.name));
    metric_series(
        &text,
        &format!("skiff_worker_assignment_updates_total{{kind=\"{kind}\"}}"),
    )
}

#[tokio::test]
async fn changing_one_of_many_assignments_sends_one_and_a_broken_stream_resumes() {
    limit(secs(240), async {
        let platform = Platform::get().await;
        let t = platform.new_exclusive_tenant().await;
        // Host 2's worker follows replica 2 (h1 -> R1, h2 -> R2, h3 -> R1).
        let host = &platform.hosts[1];
        let mut ids = Vec::new();
        for _ in 0..HELD {
            let mut spec = platform.spec(&["sleep", "600"]);
            spec["cpu"] = json!(0.1);
            spec["memory_mib"] = json!(64);
            spec["stop_timeout_s"] = json!(0);
            spec["placement"] = json!({ "host_labels": { HOST_LABEL: host.name } });
            ids.push(t.create_id(&spec).await);
        }
        for id in &ids {
            let running = t.wait(id, "running", 120).await;
            assert_eq!(running["host_id"], host.id.as_str(), "{}", t.diag(id).await);
        }

        // One stop changes one assignment: the worker receives one, not the
        // whole set of twenty. A second stop, seen arrive, proves that
        // nothing more came for the first.
        let before = host.metric(RECEIVED).await;
        for (n, id) in ids.iter().take(2).enumerate() {
            t.stop(id).await;
            t.wait_exited_in(id, "stopped").await;
            let after = host
                .wait_metric_at_least(RECEIVED, before + n as f64 + 1.0, Duration::from_secs(30))
                .await;
            assert_eq!(
                after,
                before + n as f64 + 1.0,
                "stop {} of a host holding {HELD} sends exactly its own assignment",
                n + 1
            );
        }

        // The stream breaks (its replica is SIGKILLed): the worker moves to
        // the other replica and resumes there from its revision, with no new
        // snapshot, and a change made meanwhile arrives as one assignment.
        let snapshots = updates_of_kind(host, "snapshot").await;
        let received = host.metric(RECEIVED).await;
        platform.kill_api(2);
        platform.respawn_api(2).await;
        t.stop(&ids[2]).await;
        t.wait_exited_in(&ids[2], "stopped").await;
        let after = host
            .wait_metric_at_least(RECEIVED, received + 1.0, Duration::from_secs(60))
            .await;
        assert_eq!(
            after,
            received + 1.0,
            "after resuming, the one change arrives alone"
        );
        assert_eq!(
            updates_of_kind(host, "snapshot").await,
            snapshots,
            "the worker resumed from its revision instead of taking a snapshot\n{}",
            platform.logs_dump_matching(Some(&host.id))
        );
        // The resumed stream still controls the rest: a running one stays.
        let still = t.get(&ids[3]).await;
        assert_eq!(still["state"], "running", "{}", t.diag(&ids[3]).await);
        for id in &ids {
            t.delete(id).await;
        }
    })
    .await
}
