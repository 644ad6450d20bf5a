//! The image GC: past a host's disk budget, unused images idle long
//! enough are removed, least recently used first, and only until the rest
//! fit; an image a container uses is never removed.

use serde_json::{json, Value};
use skiff_e2e::{
    limit, push_extra_image, registry_digest, secs, Platform, HOST_LABEL, IMAGE_MIN_IDLE_S,
    SPREAD_IMAGE_BUDGET,
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
    })
    .await
}
