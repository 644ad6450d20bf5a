//! Where containers go: binpack (the fullest host that fits) on the main
//! pool, spread (the emptiest) on the spread pool, a host that holds the
//! image first, host labels, and requests bigger than any host.

use crate::tenant;
use serde_json::{json, Value};
use skiff_e2e::{
    id_of, limit, push_extra_image, registry_digest, secs, Platform, Tenant, HOST_CPU_MILLIS,
    HOST_LABEL, HOST_MEMORY_MIB,
};

/// Creates a container and waits until it runs; returns (id, host id).
async fn run_on_some_host(t: &Tenant, spec: &Value) -> (String, String) {
    let id = t.create_id(spec).await;
    let running = t.wait(&id, "running", 60).await;
    let host = running["host_id"]
        .as_str()
        .unwrap_or_else(|| panic!("running without host_id: {running}"))
        .to_string();
    (id, host)
}

/// Asserts no host of the view is allocated beyond its capacity.
fn assert_within_capacity(hosts: &[Value]) {
    for view in hosts {
        let cpu = view["cpu"].as_f64().expect("cpu");
        let memory = view["memory_mib"].as_f64().expect("memory_mib");
        assert!(
            view["allocated_cpu"].as_f64().expect("allocated_cpu") <= cpu + 1e-9
                && view["allocated_memory_mib"]
                    .as_f64()
                    .expect("allocated_memory_mib")
                    <= memory,
            "a host is oversubscribed: {view}"
        );
    }
}

#[tokio::test]
async fn binpack_fills_the_fullest_host_before_another() {
    limit(secs(120), async {
        let platform = Platform::get().await;
        let t = platform.new_exclusive_tenant().await;
        let (a, x) = run_on_some_host(&t, &platform.sleeper(1.0)).await;
        let (b, host_b) = run_on_some_host(&t, &platform.sleeper(1.0)).await;
        assert_eq!(
            host_b,
            x,
            "binpack: the second goes where the first is\n{}",
            t.diag(&b).await
        );
        // Fill X to the brim with what it has left.
        let view = platform.host_view(&x).await;
        let free = view["cpu"].as_f64().unwrap() - view["allocated_cpu"].as_f64().unwrap();
        let (c, host_c) =
            run_on_some_host(&t, &platform.sleeper((free * 100.0).round() / 100.0)).await;
        assert_eq!(host_c, x, "{}", t.diag(&c).await);
        let full = platform.host_view(&x).await;
        assert_eq!(full["allocated_cpu"], full["cpu"], "X is full: {full}");
        // X is full: the next one goes to another host, never over X's cpu.
        let (d, host_d) = run_on_some_host(&t, &platform.sleeper(0.5)).await;
        assert_ne!(host_d, x, "{}", t.diag(&d).await);
        assert_within_capacity(&platform.hosts_view().await);
        for id in [a, b, c, d] {
            t.delete(&id).await;
        }
    })
    .await
}

#[tokio::test]
async fn spread_places_each_container_on_the_emptiest_host() {
    limit(secs(120), async {
        let platform = Platform::spread().await;
        let t = platform.new_exclusive_tenant().await;
        assert_eq!(platform.placement, "spread");
        let (a, x) = run_on_some_host(&t, &platform.sleeper(1.0)).await;
        let (b, y) = run_on_some_host(&t, &platform.sleeper(1.0)).await;
        assert_ne!(
            y,
            x,
            "spread: the second goes to the other, empty host\n{}",
            t.diag(&b).await
        );
        // Both hold 1 vCPU now; a bigger one on X makes Y the emptier.
        let (c, host_c) = run_on_some_host(&t, &platform.sleeper(0.5)).await;
        let emptier = if host_c == x { &y } else { &x };
        let (d, host_d) = run_on_some_host(&t, &platform.sleeper(0.5)).await;
        assert_eq!(&host_d, emptier, "{}", t.diag(&d).await);
        assert_within_capacity(&platform.hosts_view().await);
        for id in [a, b, c, d] {
            t.delete(&id).await;
        }
    })
    .await
}

#[tokio::test]
async fn a_host_that_holds_the_image_is_preferred() {
    limit(secs(180), async {
        let platform = Platform::get().await;
        let t = platform.new_exclusive_tenant().await;
        let image = push_extra_image(platform, "skiff/e2e-locality:1", 1).await;
        let digest = registry_digest(&image).await;
        let (h1, h2) = (platform.host("h1"), platform.host("h2"));
        for view in platform.hosts_view().await {
            assert!(
                !view["images"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|d| d == digest.as_str()),
                "no host holds {image} yet: {view}"
            );
        }
        let pin = |spec: &mut Value, host: &str| {
            spec["placement"] = json!({ "host_labels": { HOST_LABEL: host } });
        };

        // h2 pulls the image once.
        let mut first = platform.spec(&["echo", "pulled"]);
        first["image"] = json!(image);
        pin(&mut first, &h2.name);
        let first = t.create_id(&first).await;
        t.wait_exited_in(&first, "succeeded").await;
        let holds = |view: &Value| {
            view["images"]
                .as_array()
                .is_some_and(|images| images.iter().any(|d| d == digest.as_str()))
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !holds(&platform.host_view(&h2.id).await) {
            assert!(
                std::time::Instant::now() < deadline,
                "h2 does not report {digest}: {}",
                platform.host_view(&h2.id).await
            );
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }

        // h1 is the fullest: binpack sends an ordinary container there...
        let (filler, on) = {
            let mut spec = platform.sleeper(1.0);
            pin(&mut spec, &h1.name);
            run_on_some_host(&t, &spec).await
        };
        assert_eq!(on, h1.id);
        let (control, control_host) = run_on_some_host(&t, &platform.sleeper(0.5)).await;
        assert_eq!(
            control_host,
            h1.id,
            "control: binpack picks the fullest host\n{}",
            t.diag(&control).await
        );

        // ...but a container of the image h2 holds goes to h2.
        let mut local = platform.sleeper(0.5);
        local["image"] = json!(image);
        let (local, local_host) = run_on_some_host(&t, &local).await;
        assert_eq!(
            local_host,
            h2.id,
            "image locality\n{}",
            t.diag(&local).await
        );
        for id in [filler, control, local] {
            t.delete(&id).await;
        }
    })
    .await
}

#[tokio::test]
async fn host_labels_pin_containers_to_matching_hosts() {
    limit(secs(120), async {
        let t = tenant().await;
        let platform = t.platform;
        let labelled = |labels: Value| {
            let mut spec = platform.spec(&["echo", "labelled"]);
            spec["placement"] = json!({ "host_labels": labels });
            spec
        };
        let gold = platform
            .hosts
            .iter()
            .filter(|h| h.labels["tier"] == "gold")
            .map(|h| h.id.clone())
            .collect::<Vec<_>>();
        let silver = platform
            .hosts
            .iter()
            .filter(|h| h.labels["tier"] == "silver")
            .map(|h| h.id.clone())
            .collect::<Vec<_>>();
        let h3 = platform.host("h3");
        let cases = [
            (json!({ "tier": "gold" }), gold.clone()),
            (json!({ "tier": "gold" }), gold.clone()),
            (json!({ "tier": "silver" }), silver.clone()),
            (json!({ "tier": "silver" }), silver),
            (
                json!({ "tier": "silver", HOST_LABEL: h3.name }),
                vec![h3.id.clone()],
            ),
        ];
        let mut ids = Vec::new();
        for (labels, _) in &cases {
            ids.push(id_of(&t.create_ok(&labelled(labels.clone())).await));
        }
        for ((labels, allowed), id) in cases.iter().zip(&ids) {
            let done = t.wait_exited_in(id, "succeeded").await;
            let host = done["host_id"].as_str().unwrap_or_default().to_string();
            assert!(
                allowed.contains(&host),
                "{labels} ran on {host}, allowed {allowed:?}\n{}",
                t.diag(id).await
            );
        }
    })
    .await
}

#[tokio::test]
async fn a_request_no_host_can_ever_take_is_refused_with_the_largest_offer() {
    limit(secs(120), async {
        // Exclusive: the control needs a whole host free.
        let platform = Platform::get().await;
        let t = platform.new_exclusive_tenant().await;
        let max_cpu = HOST_CPU_MILLIS as f64 / 1000.0;
        let cases = [
            ("cpu", json!(max_cpu + 0.5), json!(max_cpu)),
            (
                "memory_mib",
                json!(HOST_MEMORY_MIB + 1024),
                json!(HOST_MEMORY_MIB),
            ),
        ];
        for (field, value, max) in cases {
            let mut spec = platform.spec(&["echo", "too-big"]);
            spec[field] = value.clone();
            let reply = t.create(&spec).await;
            assert_eq!(reply.status, 422, "{field}={value}: {reply:?}");
            let problem = reply.problem();
            assert_eq!(problem["field"], field, "{problem}");
            assert_eq!(
                problem["max"].as_f64(),
                max.as_f64(),
                "max is the largest {field} any host offers: {problem}"
            );
        }
        // Nothing was stored.
        assert_eq!(t.list(&[]).await["items"].as_array().map(Vec::len), Some(0));

        // Control: exactly a whole host is accepted and runs.
        let mut whole = platform.spec(&["echo", "fits"]);
        whole["cpu"] = json!(max_cpu);
        whole["memory_mib"] = json!(HOST_MEMORY_MIB);
        let id = t.create_id(&whole).await;
        let done = t.wait_exited_in(&id, "succeeded").await;
        assert!(t.logs(&id).await.contains("fits"), "{done}");
    })
    .await
}

#[tokio::test]
async fn with_no_host_registered_requests_queue_instead_of_being_refused() {
    limit(secs(60), async {
        let platform = Platform::hostless().await;
        let t = platform.new_tenant().await;
        assert!(platform.hosts_view().await.is_empty(), "no host registered");
        // Bigger than any host of the main pool, where it is a 422: here no
        // host has said what it offers, so it waits like any other.
        let mut big = platform.spec(&["echo", "big"]);
        big["cpu"] = json!(HOST_CPU_MILLIS as f64 / 1000.0 + 0.5);
        big["memory_mib"] = json!(HOST_MEMORY_MIB + 1024);
        for spec in [big, platform.spec(&["echo", "small"])] {
            let created = t.create_ok(&spec).await;
            let id = id_of(&created);
            assert_eq!(created["state"], "pending", "{created}");
            let object = t
                .poll_until(&id, 30, "a waiting reason", |c| !c["reason"].is_null())
                .await;
            assert_eq!(object["state"], "pending", "{}", t.diag(&id).await);
            assert_eq!(object["reason"], "WaitingForCapacity", "{object}");
        }
    })
    .await
}
