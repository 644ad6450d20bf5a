//! The worker is SIGKILLed while containers run: containerd's shims keep
//! them alive and the respawned worker re-adopts them without a restart.

use serde_json::json;
use skiff_e2e::Platform;

#[tokio::test]
async fn sigkilled_worker_readopts_running_containers() {
    let Some(platform) = Platform::get().await else {
        return;
    };
    // Exclusive: no other test runs while the worker is down.
    let t = platform.new_exclusive_tenant().await;

    let mut spec = platform.spec(&["sleep", "300"]);
    spec["stop_timeout_s"] = json!(2);
    let sleeper = t.create_id(&spec).await;
    // This one exits with 4 around the time the worker is away: its exit
    // must still be reported once the worker is back.
    let short = t.create_id(&platform.sh("sleep 2; exit 4")).await;
    let before = t.wait(&sleeper, "running", 60).await;
    t.wait(&short, "running", 60).await;
    let pid_before = platform.ctr_task_pid(&sleeper).await;

    platform.restart_worker_with_sigkill().await;

    let pid_after = platform.ctr_task_pid(&sleeper).await;
    assert_eq!(
        pid_after,
        pid_before,
        "the same process keeps running across the worker restart\n{}",
        t.diag(&sleeper).await
    );
    let after = t.get(&sleeper).await;
    let diag = t.diag(&sleeper).await;
    assert_eq!(after["state"], "running", "{diag}");
    assert_eq!(
        after["started_at"], before["started_at"],
        "not restarted: {diag}"
    );
    assert_eq!(after["restart_count"], 0, "{diag}");
    assert_eq!(t.count_events(&sleeper, "Started").await, 1, "{diag}");

    let short_done = t.wait_exited_in(&short, "failed").await;
    assert_eq!(short_done["exit_code"], 4, "{}", t.diag(&short).await);

    // The new worker controls the adopted container: stop works as usual.
    t.stop(&sleeper).await;
    let stopped = t.wait_exited_in(&sleeper, "stopped").await;
    assert_eq!(
        stopped["reason"],
        "StopRequested",
        "{}",
        t.diag(&sleeper).await
    );
    // Metering saw one continuous run: billed exactly its duration rounded
    // up (no gap while the worker was away, nothing counted twice), and the
    // ledger's stretches of it are contiguous.
    let started =
        chrono::DateTime::parse_from_rfc3339(stopped["started_at"].as_str().unwrap()).unwrap();
    let finished =
        chrono::DateTime::parse_from_rfc3339(stopped["finished_at"].as_str().unwrap()).unwrap();
    let run_ms = (finished - started).num_milliseconds();
    let expected = ((run_ms + 999) / 1000).max(1);
    assert_eq!(
        stopped["usage"]["billed_seconds"].as_i64(),
        Some(expected),
        "run of {run_ms} ms\n{}",
        t.diag(&sleeper).await
    );
    let pool = sqlx::PgPool::connect(&platform.database_url).await.unwrap();
    let stretches: Vec<(chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>)> = sqlx::query_as(
        "SELECT start_at, end_at FROM usage_records WHERE container_id = $1::uuid ORDER BY start_at",
    )
    .bind(&sleeper)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(!stretches.is_empty());
    for pair in stretches.windows(2) {
        assert_eq!(
            pair[0].1, pair[1].0,
            "gap or overlap in the ledger: {stretches:?}"
        );
    }
    t.delete(&sleeper).await;
}
