//! When nothing fits: a request waits `pending` with `WaitingForCapacity`,
//! is placed as soon as capacity frees (fairly across tenants, in order
//! within one), and fails `NoCapacity` after its `max_pending_s`.

use serde_json::json;
use skiff_e2e::{limit, secs, Platform, Tenant, HOST_CPU_MILLIS};
use std::time::Duration;

/// Fills every host of the pool with sleepers of `cpu` vCPU and checks that
/// the hosts view shows each host's cpu fully allocated. Returns their ids.
async fn fill_pool(t: &Tenant, cpu: f64) -> Vec<String> {
    let platform = t.platform;
    let per_host = (HOST_CPU_MILLIS as f64 / (cpu * 1000.0)).round() as usize;
    let mut ids = Vec::new();
    for _ in 0..per_host * platform.hosts.len() {
        ids.push(t.create_id(&platform.sleeper(cpu)).await);
    }
    for id in &ids {
        t.wait(id, "running", 90).await;
    }
    for view in platform.hosts_view().await {
        assert_eq!(
            view["allocated_cpu"], view["cpu"],
            "the pool is full: {view}"
        );
    }
    ids
}

/// Waits a few scheduler ticks (configured), then asserts the container is
/// still `pending` with `WaitingForCapacity`.
async fn assert_still_waiting(t: &Tenant, id: &str) {
    tokio::time::sleep(Duration::from_secs_f64(
        t.platform.timers.scheduler_tick_s * 10.0,
    ))
    .await;
    let object = t.get(id).await;
    let diag = t.diag(id).await;
    assert_eq!(object["state"], "pending", "{diag}");
    assert_eq!(object["reason"], "WaitingForCapacity", "{diag}");
    assert!(object["host_id"].is_null(), "{diag}");
}

#[tokio::test]
async fn a_full_pool_queues_a_request_until_a_container_exits() {
    limit(secs(180), async {
        let platform = Platform::get().await;
        let t = platform.new_exclusive_tenant().await;
        let fillers = fill_pool(&t, HOST_CPU_MILLIS as f64 / 1000.0).await;

        let created = t.create_ok(&platform.sh("echo was-queued")).await;
        let waiting = skiff_e2e::id_of(&created);
        assert_eq!(created["state"], "pending", "{created}");
        assert_still_waiting(&t, &waiting).await;

        // One filler exits: the waiting request takes its host.
        let freed = t.host_of(&fillers[0]).await;
        t.stop(&fillers[0]).await;
        t.wait_exited_in(&fillers[0], "stopped").await;
        let done = t.wait_exited_in(&waiting, "succeeded").await;
        let diag = t.diag(&waiting).await;
        assert_eq!(done["host_id"], freed.id.as_str(), "{diag}");
        assert!(t.logs(&waiting).await.contains("was-queued"), "{diag}");
        assert_eq!(t.count_events(&waiting, "Scheduled").await, 1, "{diag}");

        for id in &fillers {
            t.delete(id).await;
        }
    })
    .await
}

#[tokio::test]
async fn a_request_waiting_longer_than_max_pending_s_fails_no_capacity() {
    limit(secs(180), async {
        let platform = Platform::get().await;
        let t = platform.new_exclusive_tenant().await;
        let fillers = fill_pool(&t, HOST_CPU_MILLIS as f64 / 1000.0).await;

        let mut impatient = platform.sh("echo never");
        impatient["max_pending_s"] = json!(2);
        let created = t.create_ok(&impatient).await;
        let impatient = skiff_e2e::id_of(&created);
        assert_eq!(created["max_pending_s"], 2, "{created}");
        // Control: the same request with the default patience keeps waiting.
        let patient = t.create_id(&platform.sh("echo later")).await;

        let failed = t.wait_exited_in(&impatient, "failed").await;
        let diag = t.diag(&impatient).await;
        assert_eq!(failed["reason"], "NoCapacity", "{diag}");
        assert!(failed["started_at"].is_null(), "never started: {diag}");
        assert!(failed["host_id"].is_null(), "never placed: {diag}");
        assert_eq!(t.count_events(&impatient, "Scheduled").await, 0, "{diag}");
        assert_still_waiting(&t, &patient).await;

        // Capacity frees: the patient one runs, the failed one stays failed.
        t.stop(&fillers[0]).await;
        t.wait_exited_in(&patient, "succeeded").await;
        let still = t.get(&impatient).await;
        assert_eq!(still["state"], "failed", "{}", t.diag(&impatient).await);
        assert_eq!(still["reason"], "NoCapacity");

        for id in &fillers {
            t.delete(id).await;
        }
    })
    .await
}

#[tokio::test]
async fn a_tenant_with_many_queued_does_not_hold_up_another_tenants_single_request() {
    limit(secs(240), async {
        let platform = Platform::get().await;
        let a = platform.new_exclusive_tenant().await;
        let b = a.another().await;
        let fillers = fill_pool(&a, 1.0).await;

        // A queues five, then B one, all 1 vCPU: one fits per freed filler.
        let mut a_queued = Vec::new();
        for _ in 0..5 {
            a_queued.push(a.create_id(&platform.sleeper(1.0)).await);
        }
        let b_single = b.create_id(&platform.sleeper(1.0)).await;
        assert_still_waiting(&b, &b_single).await;
        for id in &a_queued {
            let object = a.get(id).await;
            assert_eq!(object["state"], "pending", "{}", a.diag(id).await);
        }

        // Free one slot at a time and see who gets it.
        let mut placed: Vec<String> = Vec::new();
        for (round, filler) in fillers.iter().take(2).enumerate() {
            a.stop(filler).await;
            a.wait_exited_in(filler, "stopped").await;
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            loop {
                let mut now_placed = Vec::new();
                for (t, id) in a_queued.iter().map(|id| (&a, id)).chain([(&b, &b_single)]) {
                    if t.get(id).await["state"] != "pending" {
                        now_placed.push(id.clone());
                    }
                }
                if now_placed.len() > round {
                    assert_eq!(
                        now_placed.len(),
                        round + 1,
                        "one freed vCPU places exactly one: {now_placed:?}"
                    );
                    placed = now_placed;
                    break;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "nothing placed after filler {round} stopped\n{}",
                    platform.logs_dump()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        assert!(
            placed.contains(&b_single),
            "B's single request is placed within the first two placements, \
             though A queued five before it: placed {placed:?}, A's {a_queued:?}, B's {b_single}"
        );
        // Within A, first come first served.
        let a_placed: Vec<&String> = placed.iter().filter(|id| **id != b_single).collect();
        assert_eq!(a_placed, vec![&a_queued[0]], "A's oldest goes first");

        for id in fillers.iter().chain(&a_queued) {
            a.delete(id).await;
        }
        b.delete(&b_single).await;
    })
    .await
}
