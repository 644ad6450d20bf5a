//! A pool's readiness probe: the harness's own probe tenant, every worker
//! registered and `ready`, and a probe container run to `succeeded` on each
//! host, so the first test does not race the pool's start-up.
//!
//! Layout:
//! - `Platform::wait_pool_ready`: the whole probe.
//! - `Platform::wait_hosts_serving`: the hosts' part of it.
//! - `Platform::hosts_not_ready`, `Platform::run_probe`: its two checks.

use super::STARTUP_TIMEOUT;
use crate::platform::{Platform, HOST_LABEL};
use anyhow::{anyhow, bail, Context, Result};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

impl Platform {
    /// Creates the harness's probe tenant, then waits until every host
    /// serves (see `wait_hosts_serving`); a failure carries the pool's logs.
    pub(super) async fn wait_pool_ready(&mut self, client: &reqwest::Client) -> Result<()> {
        let (_, probe_token) = self
            .create_tenant(client, "e2e-harness-probe")
            .await
            .with_context(|| {
                format!("creating the harness's probe tenant\n{}", self.logs_dump())
            })?;
        self.probe_token = probe_token;
        self.wait_hosts_serving(client)
            .await
            .with_context(|| self.logs_dump())?;
        Ok(())
    }

    /// Waits until every worker has registered and serves: `GET /v1/hosts`
    /// lists each host `ready` (falling back to the hosts table while that
    /// route does not exist), then one probe container per host, pinned with
    /// `placement.host_labels` (one unpinned probe while placement
    /// constraints are not accepted), runs to `succeeded`.
    async fn wait_hosts_serving(&self, client: &reqwest::Client) -> Result<()> {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            let missing = self.hosts_not_ready().await?;
            if missing.is_empty() {
                break;
            }
            for host in &self.hosts {
                if let Some(exit) = host.worker_exited() {
                    bail!(
                        "the worker of {} exited during start-up ({exit})",
                        host.name
                    );
                }
            }
            if Instant::now() > deadline {
                bail!("hosts not registered and ready after {STARTUP_TIMEOUT:?}: {missing:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let probes = self.hosts.iter().map(|host| async move {
            let mut spec = self.spec(&["echo", "probe"]);
            spec["placement"] = json!({ "host_labels": { HOST_LABEL: host.name } });
            self.run_probe(client, &spec, deadline).await
        });
        let results = futures::future::join_all(probes).await;
        for result in results {
            result?;
        }
        Ok(())
    }

    /// The ids of the hosts that are not registered and ready yet.
    async fn hosts_not_ready(&self) -> Result<Vec<String>> {
        let reply = self.admin(Method::GET, "/v1/hosts", None).await?;
        if reply.status != StatusCode::OK {
            bail!("GET /v1/hosts -> {}: {}", reply.status, reply.text);
        }
        let body = reply.json();
        let ready: Vec<&str> = body["items"]
            .as_array()
            .ok_or_else(|| anyhow!("GET /v1/hosts without items: {}", reply.text))?
            .iter()
            .filter(|h| h["state"] == "ready")
            .filter_map(|h| h["id"].as_str())
            .collect();
        Ok(self
            .hosts
            .iter()
            .filter(|h| !ready.contains(&h.id.as_str()))
            .map(|h| h.id.clone())
            .collect())
    }

    /// Runs a probe container to `succeeded`.
    async fn run_probe(
        &self,
        client: &reqwest::Client,
        spec: &Value,
        deadline: Instant,
    ) -> Result<()> {
        let response = client
            .post(format!("{}/v1/containers", self.api_url))
            .bearer_auth(&self.probe_token)
            .json(spec)
            .send()
            .await?;
        let status = response.status();
        let text = response.text().await?;
        if status != StatusCode::CREATED {
            bail!("probe container: POST /v1/containers -> {status}: {text}");
        }
        let body: Value = serde_json::from_str(&text)?;
        let id = body["id"]
            .as_str()
            .ok_or_else(|| anyhow!("no id in {text}"))?;
        loop {
            let response = client
                .get(format!("{}/v1/containers/{id}/wait", self.api_url))
                .query(&[("for", "exited"), ("timeout_s", "10")])
                .bearer_auth(&self.probe_token)
                .timeout(Duration::from_secs(40))
                .send()
                .await?;
            let status = response.status();
            let text = response.text().await?;
            if status == StatusCode::OK {
                let object: Value = serde_json::from_str(&text)?;
                if object["state"] == "succeeded" {
                    return Ok(());
                }
                bail!("probe container did not succeed: {text}");
            }
            if Instant::now() > deadline {
                bail!("probe container did not finish in {STARTUP_TIMEOUT:?}: {status} {text}");
            }
        }
    }
}
