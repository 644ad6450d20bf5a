//! Limits on a run: `timeout_s` (past its deadline a run is stopped and
//! ends `failed` with `DeadlineExceeded`) and `max_cost` (once its metered
//! cost reaches it, `BudgetExceeded`); the bill stops there, and a run
//! within its limits is untouched (the controls).

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

#[tokio::test]
async fn a_run_whose_cost_reaches_max_cost_is_stopped_budget_exceeded() {
    limit(secs(90), async {
        let platform = Platform::get().await;
        let t = platform.new_tenant().await;
        let sleeper = |max_cost: i64, seconds: &str| {
            let mut spec = platform.spec(&["sleep", seconds]);
            spec["cpu"] = json!(0.1);
            spec["memory_mib"] = json!(128);
            spec["stop_timeout_s"] = json!(1);
            spec["max_cost"] = json!(max_cost);
            spec
        };
        // The control: a budget far above what a short run costs.
        let within = t.create_id(&sleeper(1_000_000, "1")).await;
        // 0.1 vCPU and 128 MiB cost a little over one micro-unit a second
        // at the default rates: this budget lasts a few seconds.
        let max_cost = 5;
        let id = t.create_id(&sleeper(max_cost, "600")).await;
        let done = t.wait_exited_in(&id, "failed").await;
        assert_eq!(done["reason"], "BudgetExceeded", "{}", t.diag(&id).await);
        assert_eq!(done["max_cost"], max_cost);
        assert_eq!(t.count_events(&id, "BudgetExceeded").await, 1);
        let cost = done["usage"]["cost"].as_i64().unwrap();
        let billed = done["usage"]["billed_seconds"].as_i64().unwrap();
        assert!(
            cost >= max_cost,
            "stopped before its budget was spent: {done}"
        );
        // The overshoot: at most a checkpoint interval, the stop's grace and
        // a second of rounding, at the run's own rate.
        let per_second = cost as f64 / billed as f64;
        let overshoot = (platform.timers.checkpoint_interval_s + 1.0 + 1.0) * per_second;
        assert!(
            (cost - max_cost) as f64 <= overshoot.ceil(),
            "cost {cost} for a max_cost of {max_cost}: {done}"
        );
        let within = t.wait_exited_in(&within, "succeeded").await;
        assert_eq!(within["reason"], "Completed");
    })
    .await
}
