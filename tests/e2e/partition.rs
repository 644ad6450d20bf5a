//! A host cut off for real (see `Platform::partitioned`: its worker and the
//! API replica it talks to sit in network namespaces joined by a veth pair):
//! after the configured silence it is `lost`; its `never` container fails
//! `HostLost`, its `always` and `on_failure` containers run again on another
//! host (losing the host is a failure); the
//! cut-off copies keep running (an unreachable API never makes a worker kill
//! anything) until the link returns, when the worker fences the moved one
//! before its host is `ready` again (and kills the failed one); and the bill
//! has no overlap between the two runs.

use serde_json::json;
use skiff_e2e::{limit, secs, Platform};
use std::time::Duration;

/// Whether process `pid` is alive (a zombie has an empty cmdline).
fn alive(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| !c.is_empty())
}

#[tokio::test]
async fn a_cut_off_host_is_lost_its_containers_move_and_the_old_copies_are_fenced() {
    limit(secs(300), async {
        let platform = Platform::partitioned().await;
        let t = platform.new_exclusive_tenant().await;
        let link = platform.partition.as_ref().expect("a partitioned pool");
        let (h1, h2) = (platform.host("h1"), platform.host("h2"));
        assert!(h2.netns.is_some(), "h2 is the host behind the link");
        let timers = &platform.timers;

        // Both containers start on h2: h1 drains meanwhile.
        let (_, drain) = platform.drain(&h1.id).await;
        let mut always = platform.spec(&["sleep", "600"]);
        always["restart_policy"] = json!("always");
        always["stop_timeout_s"] = json!(1);
        let mover = t.create_id(&always).await;
        let mut on_failure = always.clone();
        on_failure["restart_policy"] = json!("on_failure");
        let failure_mover = t.create_id(&on_failure).await;
        let mut never = platform.spec(&["sleep", "600"]);
        never["stop_timeout_s"] = json!(1);
        let stayer = t.create_id(&never).await;
        for id in [&mover, &failure_mover, &stayer] {
            let running = t.wait(id, "running", 60).await;
            assert_eq!(running["host_id"], h2.id.as_str(), "{}", t.diag(id).await);
        }
        platform.set_draining(&h1.id, false).await;
        drop(drain);
        let old_mover = h2.task_pid(&mover).await;
        let old_failure_mover = h2.task_pid(&failure_mover).await;
        let old_stayer = h2.task_pid(&stayer).await;
        // A few checkpoints, so the first run has metered seconds.
        tokio::time::sleep(Duration::from_secs_f64(timers.checkpoint_interval_s * 3.0)).await;
        let fenced_before = h2.metric("skiff_worker_fenced_total").await;

        link.set_link(false).await;
        platform
            .wait_host_state(&h2.id, "lost", timers.lost_within())
            .await;
        let lost = t.wait_state_reason(&stayer, "failed", "HostLost", 60).await;
        assert!(lost["finished_at"].is_string(), "{}", t.diag(&stayer).await);
        let moved = t
            .poll_until(&mover, 60, "the always container running on h1", |c| {
                c["state"] == "running" && c["host_id"] == h1.id.as_str()
            })
            .await;
        assert_ne!(moved["started_at"], serde_json::Value::Null);
        let new_mover = h1.task_pid(&mover).await;
        let moved_on_failure = t
            .poll_until(&failure_mover, 60, "the on_failure container running on h1", |c| {
                c["state"] == "running" && c["host_id"] == h1.id.as_str()
            })
            .await;
        assert_eq!(moved_on_failure["restart_count"], 1, "{}", t.diag(&failure_mover).await);

        // Cut off, h2's worker kills nothing: both old copies still run, and
        // h2 stays lost.
        assert_eq!(
            h2.task_pid(&mover).await,
            old_mover,
            "the cut-off copy runs on"
        );
        assert_eq!(
            h2.task_pid(&stayer).await,
            old_stayer,
            "the cut-off copy runs on"
        );
        assert!(alive(old_mover) && alive(old_stayer));
        assert_eq!(platform.host_view(&h2.id).await["state"], "lost");

        // The link returns: h2 is ready again only once its worker has
        // fenced the copy of the container that moved away.
        link.set_link(true).await;
        platform
            .wait_host_state(&h2.id, "ready", timers.lost_within() * 3)
            .await;
        for (id, old_pid) in [(&mover, old_mover), (&failure_mover, old_failure_mover)] {
            let leftover = h2.task_of(id).await;
            assert!(
                leftover.is_none() && !alive(old_pid),
                "h2 is ready while a moved container's old copy is still there: {leftover:?}\n{}",
                platform.logs_dump_matching(Some(&h2.id))
            );
        }
        assert!(
            h2.metric("skiff_worker_fenced_total").await > fenced_before,
            "h2 counts what it fenced"
        );
        // The copy of the container that failed HostLost does not run on
        // either: the platform said it failed.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while alive(old_stayer) {
            assert!(
                std::time::Instant::now() < deadline,
                "the HostLost container's copy still runs on h2 30 s after the link returned: {:?}\n{}",
                h2.task_of(&stayer).await,
                platform.logs_dump_matching(Some(&stayer))
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }

        // The moved container runs on, once, on h1.
        let object = t.get(&mover).await;
        assert_eq!(object["state"], "running", "{}", t.diag(&mover).await);
        assert_eq!(object["host_id"], h1.id.as_str());
        assert_eq!(h1.task_pid(&mover).await, new_mover);
        let stayer_now = t.get(&stayer).await;
        assert_eq!(stayer_now["state"], "failed");
        assert_eq!(stayer_now["reason"], "HostLost");

        // Billing: the two runs do not overlap.
        t.stop(&mover).await;
        t.wait_exited_in(&mover, "stopped").await;
        let stretches = t.usage_stretches(&mover).await;
        assert!(!stretches.is_empty(), "{}", t.diag(&mover).await);
        for pair in stretches.windows(2) {
            assert!(
                pair[0].1 <= pair[1].0,
                "overlapping usage records: {stretches:?}\n{}",
                t.diag(&mover).await
            );
        }
        t.delete(&mover).await;
        t.delete(&failure_mover).await;
        t.delete(&stayer).await;
    })
    .await
}
