//! A host's disk budgets. Images: past the budget, unused images idle long
//! enough are removed, least recently used first, and only until the rest
//! fit; an image a container uses is never removed. Logs: past the host's
//! log budget, finished containers' logs are cut to their newest bytes, the
//! least recently written first, and only as far as needed.

use serde_json::{json, Value};
use skiff_e2e::{
    limit, push_extra_image, registry_digest, secs, Platform, HOST_LABEL, IMAGE_MIN_IDLE_S,
    LOG_GC_INTERVAL_S, LOG_MAX_BYTES, SPREAD_IMAGE_BUDGET, SPREAD_LOG_BUDGET,
};
use std::time::{Duration, Instant};

#[tokio::test]
async fn past_the_disk_budget_the_least_recently_used_unused_image_is_removed() {
    limit(secs(240), async {
        let platform = Platform::spread().await;
        let t = platform.new_exclusive_tenant().await;
        let h1 = platform.host("h1");
        // Three images of a shared base and 3, 4 and 5 MiB of their own
        // (an extra layer's bytes follow from its size): b and c fit in the
        // budget beside the base (busybox, 2 to 3 MiB), all three do not.
        const MIB: u64 = 1024 * 1024;
        const { assert!(SPREAD_IMAGE_BUDGET < 12 * MIB + 2 * MIB) };
        const { assert!(SPREAD_IMAGE_BUDGET >= 9 * MIB + 3 * MIB) };
        let mut images = Vec::new();
        for (name, mib) in [("a", 3), ("b", 4), ("c", 5)] {
            let image = push_extra_image(platform, &format!("skiff/e2e-gc-{name}:1"), mib).await;
            let digest = registry_digest(&image).await;
            images.push((image, digest));
        }
        let run = |image: &str, command: &[&str]| {
            let mut spec: Value = platform.spec(command);
            spec["image"] = json!(image);
            spec["cpu"] = json!(0.1);
            spec["stop_timeout_s"] = json!(1);
            spec["placement"] = json!({ "host_labels": { HOST_LABEL: h1.name } });
            spec
        };
        let idle = Duration::from_secs_f64(IMAGE_MIN_IDLE_S);
        // a, then b: each runs once and its container is deleted (unused).
        for (image, _) in &images[..2] {
            let id = t.create_id(&run(image, &["true"])).await;
            t.wait_exited_in(&id, "succeeded").await;
            t.delete(&id).await;
            tokio::time::sleep(idle).await;
        }
        // c runs on: in use.
        let c = t.create_id(&run(&images[2].0, &["sleep", "600"])).await;
        t.wait(&c, "running", 120).await;

        let held = |view: &Value, digest: &str| {
            view["images"]
                .as_array()
                .is_some_and(|all| all.iter().any(|d| d == digest))
        };
        let (a, b, c_digest) = (&images[0].1, &images[1].1, &images[2].1);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let view = platform.host_view(&h1.id).await;
            if !held(&view, a) && held(&view, c_digest) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "a (least recently used) not removed from h1: {view}\n{}",
                platform.logs_dump_matching(Some("image GC"))
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // b, used more recently, stays: the rest fit without removing it.
        tokio::time::sleep(idle * 2).await;
        let view_later = platform.host_view(&h1.id).await;
        assert!(
            held(&view_later, b),
            "b removed though the rest fit: {view_later}"
        );
        assert!(
            held(&view_later, c_digest),
            "the image in use removed: {view_later}"
        );
        t.delete(&c).await;
        // a, removed, runs again: pulled anew (the worker forgot what it
        // knew of it), not started from what was removed.
        let again = t.create_id(&run(&images[0].0, &["true"])).await;
        t.wait_exited_in(&again, "succeeded").await;
        let events = t.events(&again).await;
        assert!(
            events.iter().any(|e| e["kind"] == "Pulled"
                && e["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("pulled "))),
            "a pulled again after its removal: {events:?}"
        );
    })
    .await
}

/// The bytes `seq 1 n` writes.
fn seq_bytes(n: u64) -> u64 {
    (1..=n).map(|i| i.to_string().len() as u64 + 1).sum()
}

#[tokio::test]
async fn past_the_host_log_budget_the_older_finished_log_is_cut_to_its_newest_bytes() {
    limit(secs(180), async {
        let platform = Platform::spread().await;
        let t = platform.new_exclusive_tenant().await;
        let h1 = platform.host("h1");
        // Two finished logs, each under the per-run cap, together past the
        // host's budget.
        let n: u64 = 450_000;
        let each = seq_bytes(n);
        assert!(each < LOG_MAX_BYTES, "each log ({each}) under the cap");
        assert!(2 * each > SPREAD_LOG_BUDGET, "together past the budget");
        let run = |command: &[&str]| {
            let mut spec: Value = platform.spec(command);
            spec["cpu"] = json!(0.1);
            spec["placement"] = json!({ "host_labels": { HOST_LABEL: h1.name } });
            spec
        };
        let older = t.create_id(&run(&["seq", "1", &n.to_string()])).await;
        t.wait_exited_in(&older, "succeeded").await;
        // Written later by a margin the files' times show.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let newer = t.create_id(&run(&["seq", "1", &n.to_string()])).await;
        t.wait_exited_in(&newer, "succeeded").await;

        // Cut while the newer one was still being written, and again as it
        // grew: within many passes of the budget (slack for a loaded
        // machine), the two fit.
        let marker_of = |log: &str| -> (u64, usize) {
            let (first, kept) = log.split_once('\n').unwrap_or(("", log));
            let dropped = first
                .strip_prefix("[skiff: ")
                .and_then(|r| r.strip_suffix(" bytes of older output dropped]"))
                .and_then(|d| d.parse().ok());
            match dropped {
                Some(d) => (d, log.len() - kept.len()),
                None => (0, 0),
            }
        };
        // Counted in the budget's own passes (every LOG_GC_INTERVAL_S), not
        // in wall-clock time: the newer log is finished once its logger has
        // drained, which a loaded machine may take a few passes to see.
        const PASSES: &str = "skiff_worker_log_budget_passes_total";
        const WITHIN_PASSES: f64 = 20.0;
        let first_pass = h1.metric(PASSES).await;
        let log = loop {
            let passes = h1.metric(PASSES).await;
            let log = t.logs(&older).await;
            let (dropped, marker_len) = marker_of(&log);
            if dropped > 0 && (log.len() - marker_len) as u64 + each <= SPREAD_LOG_BUDGET {
                break log;
            }
            assert!(
                passes < first_pass + WITHIN_PASSES,
                "the older log not cut to fit the budget within {WITHIN_PASSES} passes: {} bytes, \
                 {dropped} dropped\n{}",
                log.len(),
                platform.logs_dump_matching(Some("log budget"))
            );
            tokio::time::sleep(Duration::from_secs_f64(LOG_GC_INTERVAL_S / 2.0)).await;
        };
        let (dropped, marker_len) = marker_of(&log);
        let kept = &log[marker_len..];
        assert_eq!(
            dropped + kept.len() as u64,
            each,
            "every byte kept or counted"
        );
        assert!(
            kept.ends_with(&format!("{n}\n")),
            "the newest bytes are kept"
        );
        // Only as far as needed: the older keeps more than the floor.
        assert!(kept.len() as u64 > 64 * 1024, "cut further than needed");
        // The cut's event is reported after it.
        let cut = t
            .poll_until(&older, 30, "logs_truncated", |o| {
                o["logs_truncated"] == true
            })
            .await;
        assert_eq!(cut["state"], "succeeded", "{cut}");
        assert!(t.count_events(&older, "LogTruncated").await >= 1);

        // The control: the newer log is whole, and not flagged.
        let whole = t.get(&newer).await;
        assert_eq!(whole["logs_truncated"], false, "{whole}");
        assert_eq!(t.logs(&newer).await.len() as u64, each);
        t.delete(&older).await;
        t.delete(&newer).await;
    })
    .await
}
