//! PostgreSQL stopped and started again under a pool (its own cluster, see
//! `Platform::own_postgres`): while it is down the API answers 503
//! problem+json with `Retry-After`; it recovers by itself; running
//! containers keep their processes, and what happened meanwhile (an exit) is
//! reported once the database is back.

use reqwest::{Method, StatusCode};
use serde_json::json;
use skiff_e2e::{limit, secs, Platform, Reply};
use std::time::{Duration, Instant};

/// A 503 problem+json with a Retry-After header.
fn assert_unavailable(what: &str, reply: &Reply) {
    assert_eq!(
        reply.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{what} while PostgreSQL is down: {reply:?}"
    );
    reply.problem();
    let retry_after = reply
        .headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("{what}: 503 without Retry-After: {reply:?}"));
    assert!(
        retry_after.trim().parse::<u64>().is_ok(),
        "{what}: Retry-After in seconds: {retry_after:?}"
    );
}

#[tokio::test]
async fn postgres_restart_is_503_meanwhile_and_running_containers_are_untouched() {
    limit(secs(240), async {
        let platform = Platform::own_postgres().await;
        let t = platform.new_exclusive_tenant().await;
        let postgres = platform
            .postgres
            .as_ref()
            .expect("the pool's own PostgreSQL");

        let mut spec = platform.spec(&["sleep", "600"]);
        spec["stop_timeout_s"] = json!(1);
        let sleepers = [t.create_id(&spec).await, t.create_id(&spec).await];
        let mut pids = Vec::new();
        for id in &sleepers {
            let running = t.wait(id, "running", 60).await;
            let host = t.host_of(id).await;
            pids.push((running["started_at"].clone(), host, host.task_pid(id).await));
        }
        // Exits while the database is away.
        let short = t.create_id(&platform.sh("sleep 2; exit 4")).await;
        t.wait(&short, "running", 60).await;

        postgres.stop().await;
        let down_since = Instant::now();
        let path = format!("/v1/containers/{}", sleepers[0]);
        assert_unavailable("GET a container", &t.call(Method::GET, &path, None).await);
        assert_unavailable("POST a container", &t.create(&platform.sh("echo no")).await);
        // Down long enough for the short container to exit, for several
        // heartbeats and checkpoints to find no database, and longer than
        // the host-loss timeout: a database outage is not the hosts'
        // silence, and must not be judged as such when it ends.
        let timers = &platform.timers;
        let hold = Duration::from_secs_f64(
            (timers.heartbeat_interval_s * 6.0)
                .max(timers.checkpoint_interval_s * 3.0)
                .max(timers.host_lost_after_s + timers.heartbeat_interval_s * 4.0)
                .max(4.0),
        );
        tokio::time::sleep(hold.saturating_sub(down_since.elapsed())).await;
        for (id, (_, host, pid)) in sleepers.iter().zip(&pids) {
            assert_eq!(
                host.task_pid(id).await,
                *pid,
                "same process while PostgreSQL is down"
            );
        }
        assert_unavailable("GET a container", &t.call(Method::GET, &path, None).await);

        postgres.start_again().await;
        // Recovers by itself.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let reply = t.call(Method::GET, &path, None).await;
            if reply.status == StatusCode::OK {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the API did not recover within 60 s of PostgreSQL's return: {reply:?}\n{}",
                platform.logs_dump()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Give the schedulers the host-loss timeout and a few ticks with the
        // database back: nothing may be judged lost meanwhile.
        tokio::time::sleep(Duration::from_secs_f64(
            timers.host_lost_after_s + timers.scheduler_tick_s * 5.0,
        ))
        .await;
        for host in &platform.hosts {
            assert_eq!(
                platform.host_view(&host.id).await["state"],
                "ready",
                "{} after the outage\n{}",
                host.name,
                platform.logs_dump()
            );
        }

        for (id, (started_at, host, pid)) in sleepers.iter().zip(&pids) {
            let object = t.get(id).await;
            let diag = t.diag(id).await;
            assert_eq!(object["state"], "running", "{diag}");
            assert_eq!(object["restart_count"], 0, "{diag}");
            assert_eq!(object["started_at"], *started_at, "{diag}");
            assert_eq!(object["host_id"], host.id.as_str(), "{diag}");
            assert_eq!(host.task_pid(id).await, *pid, "same process after: {diag}");
        }
        let short_done = t.wait_exited_in(&short, "failed").await;
        assert_eq!(short_done["exit_code"], 4, "{}", t.diag(&short).await);
        // Placement and workers work again.
        let fresh = t.create_id(&platform.sh("echo after-restart")).await;
        t.wait_exited_in(&fresh, "succeeded").await;
        assert!(t.logs(&fresh).await.contains("after-restart"));

        for id in &sleepers {
            t.stop(id).await;
            let stopped = t.wait_exited_in(id, "stopped").await;
            t.assert_billed_as_one_run(&stopped).await;
            t.delete(id).await;
        }
    })
    .await
}
