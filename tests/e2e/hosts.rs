//! The hosts route: what the admin sees of the pool, who may see it, and
//! drain/undrain.

use crate::tenant;
use reqwest::{Method, StatusCode};
use serde_json::json;
use skiff_e2e::{
    limit, registry_digest, secs, Platform, HOST_CPU_MILLIS, HOST_LABEL, HOST_MEMORY_MIB,
};

#[tokio::test]
async fn hosts_route_shows_the_pool_to_the_admin_only() {
    limit(secs(60), async {
        let t = tenant().await;
        let platform = t.platform;

        // A tenant token is refused...
        let refused = t.call(Method::GET, "/v1/hosts", None).await;
        assert!(
            matches!(refused.status.as_u16(), 401 | 403),
            "a tenant token cannot list hosts: {refused:?}"
        );
        refused.problem();
        for action in ["drain", "undrain"] {
            let path = format!("/v1/hosts/{}/{action}", platform.hosts[0].id);
            let refused = t.call(Method::POST, &path, None).await;
            assert!(
                matches!(refused.status.as_u16(), 401 | 403),
                "a tenant token cannot {action}: {refused:?}"
            );
        }

        // ...the admin token sees every host with its capacity and labels.
        let digest = registry_digest(platform.image()).await;
        // Images arrive with heartbeats: every host reports the test image
        // within a few of them.
        let holds = |view: &serde_json::Value| {
            view["images"]
                .as_array()
                .is_some_and(|images| images.iter().any(|i| i == digest.as_str()))
        };
        let within =
            std::time::Duration::from_secs_f64(platform.timers.heartbeat_interval_s * 20.0 + 10.0);
        let deadline = std::time::Instant::now() + within;
        let hosts = loop {
            let hosts = platform.hosts_view().await;
            if hosts.iter().all(holds) || std::time::Instant::now() > deadline {
                break hosts;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        };
        for host in &platform.hosts {
            let view = hosts
                .iter()
                .find(|h| h["id"] == host.id.as_str())
                .unwrap_or_else(|| panic!("{} missing from {hosts:?}", host.id));
            assert_eq!(view["state"], "ready", "{view}");
            assert_eq!(
                view["cpu"].as_f64(),
                Some(HOST_CPU_MILLIS as f64 / 1000.0),
                "{view}"
            );
            assert_eq!(view["memory_mib"].as_u64(), Some(HOST_MEMORY_MIB), "{view}");
            let allocated_cpu = view["allocated_cpu"].as_f64().expect("allocated_cpu");
            let allocated_mib = view["allocated_memory_mib"]
                .as_u64()
                .expect("allocated_memory_mib");
            assert!(
                allocated_cpu <= HOST_CPU_MILLIS as f64 / 1000.0
                    && allocated_mib <= HOST_MEMORY_MIB,
                "never oversubscribed: {view}"
            );
            assert!(view["running"].is_u64(), "{view}");
            assert_eq!(view["labels"], json!(host.labels), "{view}");
            assert!(view["last_heartbeat_at"].is_string(), "{view}");
            assert!(
                holds(view),
                "every host reports the test image {digest} within {within:?}: {view}"
            );
        }
    })
    .await
}

#[tokio::test]
async fn a_draining_host_takes_no_new_containers_and_keeps_its_running_ones() {
    limit(secs(120), async {
        let platform = Platform::get().await;
        let t = platform.new_exclusive_tenant().await;
        let mut sleeper = platform.spec(&["sleep", "600"]);
        sleeper["stop_timeout_s"] = json!(1);

        // A container runs on host X; binpack would put the next ones there.
        let resident = t.create_id(&sleeper).await;
        t.wait(&resident, "running", 60).await;
        let x = t.host_of(&resident).await;
        let pid = x.task_pid(&resident).await;

        let (drained, drain) = platform.drain(&x.id).await;
        assert_eq!(drained["id"], x.id.as_str(), "{drained}");
        assert_eq!(drained["state"], "draining", "{drained}");
        assert_eq!(platform.host_view(&x.id).await["state"], "draining");

        // New containers go elsewhere...
        let mut elsewhere = Vec::new();
        for _ in 0..2 {
            let id = t.create_id(&sleeper).await;
            let running = t.wait(&id, "running", 60).await;
            assert_ne!(running["host_id"], x.id.as_str(), "{}", t.diag(&id).await);
            elsewhere.push(id);
        }
        // ...and one that may only run on X waits.
        let mut pinned = platform.sh("echo on-x");
        pinned["placement"] = json!({ "host_labels": { HOST_LABEL: x.name } });
        let waiting = t.create_id(&pinned).await;
        tokio::time::sleep(std::time::Duration::from_secs_f64(
            platform.timers.scheduler_tick_s * 10.0,
        ))
        .await;
        let object = t.get(&waiting).await;
        assert_eq!(object["state"], "pending", "{}", t.diag(&waiting).await);
        assert_eq!(object["reason"], "WaitingForCapacity", "{object}");

        // The resident keeps running, untouched.
        let object = t.get(&resident).await;
        assert_eq!(object["state"], "running", "{}", t.diag(&resident).await);
        assert_eq!(x.task_pid(&resident).await, pid);

        // Undrain: X takes containers again, the waiting one first.
        let undrained = platform.set_draining(&x.id, false).await;
        drop(drain);
        assert_eq!(undrained["state"], "ready", "{undrained}");
        let done = t.wait_exited_in(&waiting, "succeeded").await;
        assert_eq!(done["host_id"], x.id.as_str(), "{}", t.diag(&waiting).await);
        assert_eq!(x.task_pid(&resident).await, pid, "the resident never moved");

        for id in elsewhere.iter().chain([&resident]) {
            t.delete(id).await;
        }
        let reply = platform
            .admin(Method::POST, "/v1/hosts/no-such-host/drain", None)
            .await
            .expect("drain request");
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{reply:?}");
        reply.problem();
    })
    .await
}

#[tokio::test]
async fn logs_come_through_the_agent_address_a_worker_derives() {
    limit(secs(90), async {
        // The spread pool's workers listen on 0.0.0.0 and advertise nothing.
        let platform = Platform::spread().await;
        let t = platform.new_tenant().await;
        let id = t.create_id(&platform.spec(&["echo", "through-the-agent"])).await;
        t.wait_exited_in(&id, "succeeded").await;
        assert_eq!(t.logs(&id).await, "through-the-agent\n", "{}", t.diag(&id).await);
        let pool = sqlx::PgPool::connect(&platform.database_url).await.unwrap();
        let addrs: Vec<String> = sqlx::query_scalar("SELECT agent_addr FROM hosts ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap();
        assert_eq!(addrs.len(), platform.hosts.len(), "{addrs:?}");
        for addr in &addrs {
            assert!(
                addr.starts_with("127.0.0.1:"),
                "a worker listening on 0.0.0.0 advertises the interface that reaches the API: {addrs:?}"
            );
        }
    })
    .await
}
