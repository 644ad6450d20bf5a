//! A pool's API replicas: their processes and environment, and the wait for
//! their `/readyz`.
//!
//! Layout:
//! - [`start_api_replicas`]: spawns every replica (the last one inside the
//!   API's network namespace in a partitioned pool).
//! - [`wait_apis_ready`]: waits for the replicas the harness can reach.
//! - [`wait_ready`]: polls one replica's `/readyz` (also used when a test
//!   restarts a replica).

use super::database::PoolDatabase;
use super::env::free_port;
use super::{PoolRun, PoolSpec, Programs, STARTUP_TIMEOUT};
use crate::netns::Partition;
use crate::platform::{ApiReplica, Timers};
use crate::service::{tail, Service};
use crate::trust::CaFiles;
use anyhow::{bail, Result};
use reqwest::StatusCode;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Spawns the pool's API replicas, all on the pool's database and sharing
/// its admin token; does not wait for them.
#[allow(clippy::too_many_arguments)]
pub(super) fn start_api_replicas(
    spec: &PoolSpec,
    run: &PoolRun,
    programs: &Programs,
    database: &PoolDatabase,
    partition: Option<&Partition>,
    admin_token: &str,
    timers: &Timers,
    (ca, keyring): (&CaFiles, &std::path::Path),
) -> Result<Vec<ApiReplica>> {
    let run_dir = &run.run_dir;
    let mut apis = Vec::new();
    for r in 1..=spec.api_replicas {
        let in_netns = partition.filter(|_| r == spec.api_replicas);
        let port = free_port()?;
        let grpc_port = free_port()?;
        let ip = if in_netns.is_some() {
            crate::netns::API_IP
        } else {
            "127.0.0.1"
        };
        let db_url = match (in_netns, &database.socket_dir) {
            // Inside the namespace PostgreSQL's TCP port is out of reach:
            // its unix socket is not.
            (Some(_), Some(dir)) => format!(
                "postgres://postgres@localhost/{}?host={dir}&port={}",
                database.name, database.port
            ),
            _ => database.url.clone(),
        };
        let mut env_vars = vec![
            ("SKIFF_LISTEN".to_string(), format!("{ip}:{port}")),
            ("SKIFF_GRPC_LISTEN".into(), format!("{ip}:{grpc_port}")),
            ("SKIFF_DATABASE_URL".into(), db_url),
            ("SKIFF_ADMIN_TOKEN".into(), admin_token.to_string()),
            ("SKIFF_PLACEMENT".into(), spec.placement.into()),
            (
                "SKIFF_SCHEDULER_TICK_S".into(),
                timers.scheduler_tick_s.to_string(),
            ),
            (
                "SKIFF_HEARTBEAT_INTERVAL_S".into(),
                timers.heartbeat_interval_s.to_string(),
            ),
            ("SKIFF_CA_CERT".into(), ca.cert.display().to_string()),
            ("SKIFF_CA_KEY".into(), ca.key.display().to_string()),
            (
                "SKIFF_SECRETS_KEYRING_FILE".into(),
                keyring.display().to_string(),
            ),
            (
                "SKIFF_HOST_CERT_LIFETIME_S".into(),
                timers.cert_lifetime_s.to_string(),
            ),
            // Webhooks to the tests' loopback receivers, retried quickly.
            (
                "SKIFF_WEBHOOK_ALLOWED_HOSTS".into(),
                "127.0.0.1,localhost".into(),
            ),
            ("SKIFF_WEBHOOK_RETRY_BASE_S".into(), "0.3".into()),
            // The ACI layer checks images of the test registries at
            // admission (InaccessibleImage), as the workers pull them.
            ("SKIFF_ACI_CHECK_REGISTRIES".into(), aci_check_registries()),
            // Tests poll hard with one token (200 waits at once in the
            // replicas' burst): far above the defaults here. The limits
            // themselves are tested on a replica of their own (limits.rs),
            // and the defaults by the noisy-neighbour bench.
            ("SKIFF_RATE_READ_PER_S".into(), "5000".into()),
            ("SKIFF_RATE_READ_BURST".into(), "20000".into()),
            ("SKIFF_RATE_WRITE_PER_S".into(), "500".into()),
            ("SKIFF_RATE_WRITE_BURST".into(), "2000".into()),
            ("SKIFF_WEBHOOK_POLL_S".into(), "0.2".into()),
            (
                "SKIFF_VERIFY_MIN_INTERVAL_S".into(),
                crate::platform::VERIFY_MIN_INTERVAL_S.to_string(),
            ),
            ("RUST_LOG".into(), "info".into()),
            ("NO_COLOR".into(), "1".into()),
            // Lets test.sh recognise leftovers of this run.
            ("SKIFF_E2E_RUN_DIR".into(), run_dir.display().to_string()),
        ];
        env_vars.push((
            "SKIFF_HOST_LOST_AFTER_S".into(),
            timers.host_lost_after_s.to_string(),
        ));
        env_vars.retain(|(k, _)| !spec.api_env.iter().any(|(name, _)| k == name));
        env_vars.extend(
            spec.api_env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string())),
        );
        let mut command = Vec::new();
        if let Some(p) = in_netns {
            command.extend(["ip", "netns", "exec", &p.api_netns].map(String::from));
        }
        command.push(programs.api_bin.display().to_string());
        let service = Service::spawn(&format!("api{r}"), command, env_vars, run_dir)?;
        apis.push(ApiReplica {
            index: r,
            url: format!("http://{ip}:{port}"),
            grpc_url: format!("https://{ip}:{grpc_port}"),
            netns: in_netns.map(|p| p.api_netns.clone()),
            service: Mutex::new(service),
        });
    }
    Ok(apis)
}

/// Waits for `/readyz` of every replica outside a network namespace (the
/// harness cannot reach into one: that replica shows it is up when the
/// partitioned host, which talks only to it, registers).
pub(super) async fn wait_apis_ready(client: &reqwest::Client, apis: &[ApiReplica]) -> Result<()> {
    for api in apis.iter().filter(|a| a.netns.is_none()) {
        wait_ready(client, api).await?;
    }
    Ok(())
}

/// Polls GET /readyz of a replica until 200, failing early if it exits.
pub(crate) async fn wait_ready(client: &reqwest::Client, api: &ApiReplica) -> Result<()> {
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    loop {
        let last = match client
            .get(format!("{}/readyz", api.url))
            .timeout(Duration::from_secs(5))
            .send()
            .await
        {
            Ok(r) if r.status() == StatusCode::OK => return Ok(()),
            Ok(r) => format!("status {}", r.status()),
            Err(e) => format!("{e}"),
        };
        {
            let mut service = api.service.lock().expect("api mutex");
            if let Some(exit) = service.exited() {
                bail!(
                    "api{} exited during start-up ({exit}):\n{}",
                    api.index,
                    tail(&service.log_file, 40)
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "api{} GET /readyz not 200 after {STARTUP_TIMEOUT:?} (last: {last}):\n{}",
                    api.index,
                    tail(&service.log_file, 40)
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The test registries (plain HTTP) whose images the API checks at an ACI
/// group's admission.
fn aci_check_registries() -> String {
    let mut registries: Vec<String> = std::env::var("SKIFF_TEST_REGISTRY")
        .ok()
        .filter(|r| !r.is_empty())
        .into_iter()
        .collect();
    if let Some(auth) = crate::registry::AuthRegistry::from_env() {
        registries.push(auth.host);
        registries.push(auth.token_registry);
    }
    registries
        .iter()
        .map(|r| format!("http://{r}"))
        .collect::<Vec<_>>()
        .join(",")
}
