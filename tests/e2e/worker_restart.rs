//! A host's worker SIGKILLed again and again, and a host's containerd
//! SIGKILLed and restarted, while containers run there: containerd's shims
//! keep them alive, and the worker re-adopts them without a restart, a second
//! copy or a gap in billing.

use serde_json::{json, Value};
use skiff_e2e::{limit, secs, Platform, Tenant, HOST_LABEL};
use std::collections::BTreeMap;

/// Three sleepers and one container that exits with 4 a few seconds in
/// (while its host is disturbed: its exit must still be reported). Returns
/// (sleeper ids, the short one's id), all running.
async fn start_workload(t: &Tenant) -> (Vec<String>, String) {
    let mut spec = t.platform.spec(&["sleep", "600"]);
    spec["stop_timeout_s"] = json!(1);
    let mut sleepers = Vec::new();
    for _ in 0..3 {
        sleepers.push(t.create_id(&spec).await);
    }
    let short = t.create_id(&t.platform.sh("sleep 4; exit 4")).await;
    for id in sleepers.iter().chain([&short]) {
        t.wait(id, "running", 60).await;
    }
    (sleepers, short)
}

/// Each container's (started_at, host id, task pid) now.
async fn snapshot(t: &Tenant, ids: &[String]) -> BTreeMap<String, (Value, String, u32)> {
    let mut seen = BTreeMap::new();
    for id in ids {
        let object = t.get(id).await;
        let host = t.platform.host_of(&object);
        let pid = host.task_pid(id).await;
        seen.insert(
            id.clone(),
            (object["started_at"].clone(), host.id.clone(), pid),
        );
    }
    seen
}

/// The sleepers are the same runs as before: same host, same pid, same
/// start, restart_count 0, one Started event, still running.
async fn assert_same_runs(t: &Tenant, before: &BTreeMap<String, (Value, String, u32)>, when: &str) {
    let ids: Vec<String> = before.keys().cloned().collect();
    let after = snapshot(t, &ids).await;
    for id in &ids {
        let object = t.get(id).await;
        let diag = || async { t.diag(id).await };
        assert_eq!(
            after[id],
            before[id],
            "{when}: same host, pid and start\n{}",
            diag().await
        );
        assert_eq!(object["state"], "running", "{when}\n{}", diag().await);
        assert_eq!(object["restart_count"], 0, "{when}\n{}", diag().await);
        assert_eq!(
            t.count_events(id, "Started").await,
            1,
            "{when}\n{}",
            diag().await
        );
    }
}

/// Stops every sleeper and checks each was metered as one continuous run.
async fn stop_and_check_billing(t: &Tenant, sleepers: &[String]) {
    for id in sleepers {
        t.stop(id).await;
    }
    for id in sleepers {
        let stopped = t.wait_exited_in(id, "stopped").await;
        assert_eq!(stopped["reason"], "StopRequested", "{}", t.diag(id).await);
        t.assert_billed_as_one_run(&stopped).await;
        t.delete(id).await;
    }
}

#[tokio::test]
async fn sigkilled_worker_readopts_running_containers_ten_times() {
    limit(secs(300), async {
        let platform = Platform::get().await;
        // Exclusive: no other test runs while a worker is down.
        let t = platform.new_exclusive_tenant().await;
        let (sleepers, short) = start_workload(&t).await;
        let before = snapshot(&t, &sleepers).await;
        let host = t.host_of(&sleepers[0]).await;
        let on_host = before.values().filter(|(_, h, _)| *h == host.id).count();
        eprintln!(
            "{on_host} of 3 sleepers on {}, whose worker dies 10 times",
            host.name
        );

        for round in 1..=10 {
            let old_pid = host.worker_pid();
            platform.restart_worker_with_sigkill(host).await;
            assert_ne!(
                host.worker_pid(),
                old_pid,
                "round {round}: a new worker process"
            );
            // The new worker has its assignment set (and so reconciles
            // against a current one, not an empty one).
            host.wait_metric_at_least(
                "skiff_worker_assignments_received_total",
                1.0,
                std::time::Duration::from_secs(30),
            )
            .await;
            assert_same_runs(&t, &before, &format!("after worker SIGKILL round {round}")).await;
        }

        let short_done = t.wait_exited_in(&short, "failed").await;
        assert_eq!(short_done["exit_code"], 4, "{}", t.diag(&short).await);
        assert_eq!(short_done["restart_count"], 0, "{}", t.diag(&short).await);

        // The last worker controls the adopted containers: stop works, and
        // each was billed as the one run it was.
        stop_and_check_billing(&t, &sleepers).await;
    })
    .await
}

#[tokio::test]
async fn containerd_restart_keeps_containers_and_the_worker_resubscribes() {
    limit(secs(240), async {
        let platform = Platform::get().await;
        let t = platform.new_exclusive_tenant().await;
        let (sleepers, short) = start_workload(&t).await;
        let before = snapshot(&t, &sleepers).await;
        let host = t.host_of(&sleepers[0]).await;
        let old_containerd = host.containerd_pid();

        host.kill_containerd().await;
        // Down for a few heartbeats: the worker notices its event stream
        // broke while containerd is away.
        tokio::time::sleep(std::time::Duration::from_secs_f64(
            platform.timers.heartbeat_interval_s * 4.0,
        ))
        .await;
        host.start_containerd().await;
        assert_ne!(
            host.containerd_pid(),
            old_containerd,
            "a new containerd process"
        );

        assert_same_runs(&t, &before, "after the containerd restart").await;
        // Exits are still seen: the short one's, and a new container's on
        // the same host.
        let short_done = t.wait_exited_in(&short, "failed").await;
        assert_eq!(short_done["exit_code"], 4, "{}", t.diag(&short).await);
        let mut pinned = platform.sh("echo after-restart; exit 5");
        pinned["placement"] = json!({ "host_labels": { HOST_LABEL: host.name } });
        let fresh = t.create_id(&pinned).await;
        let done = t.wait_exited_in(&fresh, "failed").await;
        let diag = t.diag(&fresh).await;
        assert_eq!(done["host_id"], host.id.as_str(), "{diag}");
        assert_eq!(done["exit_code"], 5, "{diag}");
        assert!(t.logs(&fresh).await.contains("after-restart"), "{diag}");

        stop_and_check_billing(&t, &sleepers).await;
    })
    .await
}
