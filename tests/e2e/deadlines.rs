//! `timeout_s`: a run past its deadline is stopped and ends `failed` with
//! `DeadlineExceeded`, and its bill stops there; a run within it is
//! untouched (the control).

use serde_json::json;
use skiff_e2e::{limit, secs, Platform};
use std::time::Duration;

#[tokio::test]
async fn a_run_past_its_timeout_is_stopped_deadline_exceeded_and_billed_no_further() {
    limit(secs(90), async {
        let platform = Platform::get().await;
        let t = platform.new_tenant().await;
        // The control: a run well within its deadline ends as it would.
        let mut within = platform.spec(&["sleep", "1"]);
        within["timeout_s"] = json!(60);
        let within = t.create_id(&within).await;

        let (timeout_s, stop_timeout_s) = (2, 1);
        let mut spec = platform.spec(&["sleep", "600"]);
        spec["timeout_s"] = json!(timeout_s);
        spec["stop_timeout_s"] = json!(stop_timeout_s);
        let id = t.create_id(&spec).await;
        let done = t.wait_exited_in(&id, "failed").await;
        assert_eq!(done["reason"], "DeadlineExceeded", "{}", t.diag(&id).await);
        assert_eq!(done["timeout_s"], timeout_s);
        assert_eq!(t.count_events(&id, "DeadlineExceeded").await, 1);
        // Billed up to the kill: the deadline, the stop's grace, a
        // scheduler tick and a checkpoint of slack, rounded up.
        let timers = &platform.timers;
        let slack = (timers.scheduler_tick_s + timers.checkpoint_interval_s).ceil() as i64 + 1;
        let billed = done["usage"]["billed_seconds"].as_i64().unwrap();
        assert!(
            billed <= timeout_s + stop_timeout_s + slack,
            "billed {billed} s for a {timeout_s} s deadline: {done}"
        );
        // And nothing after: two checkpoint intervals later, the same.
        tokio::time::sleep(Duration::from_secs_f64(timers.checkpoint_interval_s * 2.0)).await;
        assert_eq!(t.get(&id).await["usage"]["billed_seconds"], billed);

        let within = t.wait_exited_in(&within, "succeeded").await;
        assert_eq!(within["reason"], "Completed");

        let bad = t
            .create(
                &json!({"image": platform.image(), "cpu": 0.1, "memory_mib": 64, "timeout_s": 0}),
            )
            .await;
        assert_eq!(bad.status, 400, "{bad:?}");
        assert_eq!(bad.problem()["field"], "timeout_s");
    })
    .await
}
