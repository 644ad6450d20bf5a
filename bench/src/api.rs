//! A small client of skiff's REST API (only what the benchmark needs).

use anyhow::{bail, Context, Result};
use reqwest::StatusCode;
use serde_json::{json, Value};
use skiff_core::ContainerState;
use std::time::Duration;

/// The label every container of a benchmark run carries (value: the run id),
/// so a failed or interrupted run can delete what it left behind.
pub const RUN_LABEL: &str = "skiff-bench-run";

// The API's own types: a change to the API's JSON breaks this build, not a
// benchmark run.
pub use skiff_api::http::events::EventPage;
pub use skiff_api::http::hosts::{HostList, HostView as Host};
pub use skiff_api::http::jobs::JobView as Job;
pub use skiff_api::model::{ContainerList, ContainerView as Container, TenantCreated, Timings};

#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    pub base: String,
    pub token: String,
}

impl Api {
    pub fn new(base: &str, token: &str) -> Result<Self> {
        let http = reqwest::Client::builder()
            .no_proxy() // 127.0.0.1 only, whatever HTTP_PROXY says
            .timeout(Duration::from_secs(660))
            .connect_timeout(Duration::from_secs(5))
            .pool_max_idle_per_host(512)
            .build()?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// GET /readyz answers 2xx within 2 s.
    pub async fn ready(&self) -> bool {
        let req = self
            .http
            .get(self.url("/readyz"))
            .timeout(Duration::from_secs(2));
        matches!(req.send().await, Ok(r) if r.status().is_success())
    }

    /// POST /v1/containers: `command` in `image` with 0.1 cpu and 64 MiB,
    /// SIGKILLed at once on delete (stop_timeout_s 0: `sleep` as pid 1
    /// ignores SIGTERM, and the raw baselines SIGKILL too).
    pub async fn create(&self, image: &str, command: &[&str], run_id: &str) -> Result<Container> {
        self.create_sized(image, command, run_id, 0.1, 64).await
    }

    /// [`Api::create`] with a given size. `network: none`: the raw
    /// baselines (`ctr run`) have no network either.
    pub async fn create_sized(
        &self,
        image: &str,
        command: &[&str],
        run_id: &str,
        cpu: f64,
        memory_mib: u64,
    ) -> Result<Container> {
        let body = json!({
            "image": image,
            "command": command,
            "cpu": cpu,
            "memory_mib": memory_mib,
            "stop_timeout_s": 0,
            "network": "none",
            "labels": { RUN_LABEL: run_id },
        });
        self.create_body(&body).await
    }

    /// [`Api::create`] on a private network, publishing `ports` (container
    /// ports, host ports assigned).
    pub async fn create_networked(
        &self,
        image: &str,
        command: &[&str],
        run_id: &str,
        ports: &[u16],
    ) -> Result<Container> {
        let ports: Vec<Value> = ports.iter().map(|p| json!({ "port": p })).collect();
        let body = json!({
            "image": image,
            "command": command,
            "cpu": 0.1,
            "memory_mib": 64,
            "stop_timeout_s": 0,
            "network": "private",
            "ports": ports,
            "labels": { RUN_LABEL: run_id },
        });
        self.create_body(&body).await
    }

    async fn create_body(&self, body: &Value) -> Result<Container> {
        let resp = self
            .http
            .post(self.url("/v1/containers"))
            .bearer_auth(&self.token)
            .timeout(Duration::from_secs(60))
            .json(body)
            .send()
            .await
            .context("POST /v1/containers")?;
        let status = resp.status();
        if status != StatusCode::CREATED {
            let text = resp.text().await.unwrap_or_default();
            bail!("POST /v1/containers -> {status}: {text}");
        }
        Ok(resp.json().await?)
    }

    /// GET /v1/containers/{id}/wait?for=`what`: the container once it got there.
    async fn wait(&self, id: &str, what: &str, timeout_s: u64) -> Result<Container> {
        let resp = self
            .http
            .get(self.url(&format!(
                "/v1/containers/{id}/wait?for={what}&timeout_s={timeout_s}"
            )))
            .bearer_auth(&self.token)
            .timeout(Duration::from_secs(timeout_s + 15))
            .send()
            .await
            .with_context(|| format!("GET /v1/containers/{id}/wait"))?;
        let status = resp.status();
        if status != StatusCode::OK {
            let text = resp.text().await.unwrap_or_default();
            bail!("wait for {id} ({what}) -> {status}: {text}");
        }
        Ok(resp.json().await?)
    }

    /// Waits until the container runs; fails unless it is running.
    pub async fn wait_running(&self, id: &str, timeout_s: u64) -> Result<Container> {
        let c = self.wait(id, "running", timeout_s).await?;
        if c.state != ContainerState::Running {
            bail!(
                "container {id} is {} ({}: {}), not running",
                c.state,
                c.reason.map_or("-", |r| r.as_str()),
                c.message.as_deref().unwrap_or("-")
            );
        }
        Ok(c)
    }

    /// Waits until the container has finished.
    pub async fn wait_exited(&self, id: &str, timeout_s: u64) -> Result<Container> {
        self.wait(id, "exited", timeout_s).await
    }

    /// POST /v1/jobs: `count` tasks of `command` in `image` (0.1 cpu,
    /// 64 MiB), at most `parallelism` at once.
    pub async fn create_job(
        &self,
        image: &str,
        command: &[&str],
        run_id: &str,
        count: usize,
        parallelism: usize,
    ) -> Result<Job> {
        let body = json!({
            "template": {
                "image": image,
                "command": command,
                "cpu": 0.1,
                "memory_mib": 64,
                "stop_timeout_s": 0,
                // The raw baseline (`ctr run --rm`) has no network either.
                "network": "none",
                "labels": { RUN_LABEL: run_id },
            },
            "count": count,
            "parallelism": parallelism,
            "labels": { RUN_LABEL: run_id },
        });
        let resp = self
            .http
            .post(self.url("/v1/jobs"))
            .bearer_auth(&self.token)
            .timeout(Duration::from_secs(60))
            .json(&body)
            .send()
            .await
            .context("POST /v1/jobs")?;
        let status = resp.status();
        if status != StatusCode::CREATED {
            let text = resp.text().await.unwrap_or_default();
            bail!("POST /v1/jobs -> {status}: {text}");
        }
        Ok(resp.json().await?)
    }

    /// GET /v1/jobs/{id}.
    pub async fn job(&self, id: &str) -> Result<Job> {
        let resp = self
            .http
            .get(self.url(&format!("/v1/jobs/{id}")))
            .bearer_auth(&self.token)
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .with_context(|| format!("GET /v1/jobs/{id}"))?;
        let status = resp.status();
        if status != StatusCode::OK {
            let text = resp.text().await.unwrap_or_default();
            bail!("GET /v1/jobs/{id} -> {status}: {text}");
        }
        Ok(resp.json().await?)
    }

    /// DELETE /v1/jobs/{id} (and its task containers): the status code.
    pub async fn delete_job(&self, id: &str) -> Result<StatusCode> {
        let resp = self
            .http
            .delete(self.url(&format!("/v1/jobs/{id}")))
            .bearer_auth(&self.token)
            .timeout(Duration::from_secs(600))
            .send()
            .await
            .with_context(|| format!("DELETE /v1/jobs/{id}"))?;
        Ok(resp.status())
    }

    /// The same API as another tenant.
    pub fn as_token(&self, token: &str) -> Self {
        Self {
            http: self.http.clone(),
            base: self.base.clone(),
            token: token.to_owned(),
        }
    }

    /// POST /v1/tenants (admin): a new tenant; its id and token.
    pub async fn create_tenant(&self, admin_token: &str, name: &str) -> Result<TenantCreated> {
        let resp = self
            .http
            .post(self.url("/v1/tenants"))
            .bearer_auth(admin_token)
            .json(&json!({ "name": name }))
            .send()
            .await
            .context("POST /v1/tenants")?;
        let status = resp.status();
        if status != StatusCode::CREATED {
            let text = resp.text().await.unwrap_or_default();
            bail!("POST /v1/tenants -> {status}: {text}");
        }
        Ok(resp.json().await?)
    }

    /// PUT /v1/admin/tenants/{id}/quota (admin).
    pub async fn set_quota(
        &self,
        admin_token: &str,
        tenant: &str,
        quota: &serde_json::Value,
    ) -> Result<()> {
        let resp = self
            .http
            .put(self.url(&format!("/v1/admin/tenants/{tenant}/quota")))
            .bearer_auth(admin_token)
            .json(quota)
            .send()
            .await
            .context("PUT quota")?;
        if !resp.status().is_success() {
            bail!("PUT quota -> {}", resp.status());
        }
        Ok(())
    }

    /// One request as fast as it goes: the status code (no body kept).
    pub async fn status_of(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<StatusCode> {
        let mut req = self
            .http
            .request(method, self.url(path))
            .bearer_auth(&self.token)
            .timeout(Duration::from_secs(30));
        if let Some(body) = body {
            req = req.json(body);
        }
        Ok(req.send().await?.status())
    }

    /// GET /v1/hosts with `admin_token`.
    pub async fn hosts(&self, admin_token: &str) -> Result<Vec<Host>> {
        let resp = self
            .http
            .get(self.url("/v1/hosts"))
            .bearer_auth(admin_token)
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .context("GET /v1/hosts")?;
        let status = resp.status();
        if status != StatusCode::OK {
            let text = resp.text().await.unwrap_or_default();
            bail!("GET /v1/hosts -> {status}: {text}");
        }
        Ok(resp.json::<HostList>().await?.items)
    }

    /// DELETE /v1/containers/{id}: 202 (running: its host stops and
    /// removes it after) or 204 (finished, removed).
    pub async fn delete(&self, id: &str) -> Result<()> {
        let resp = self
            .http
            .delete(self.url(&format!("/v1/containers/{id}")))
            .bearer_auth(&self.token)
            .timeout(Duration::from_secs(60))
            .send()
            .await
            .with_context(|| format!("DELETE /v1/containers/{id}"))?;
        match resp.status() {
            StatusCode::ACCEPTED | StatusCode::NO_CONTENT => Ok(()),
            status => bail!("DELETE {id} -> {status}"),
        }
    }

    /// Waits until every container of `ids` (labelled with `run_id`) has
    /// its `removed` event: its host stopped it and removed its runtime
    /// state.
    pub async fn wait_removed(
        &self,
        run_id: &str,
        ids: &[String],
        timeout: Duration,
    ) -> Result<()> {
        let want: std::collections::HashSet<&str> = ids.iter().map(String::as_str).collect();
        let mut seen = std::collections::HashSet::new();
        let mut cursor: Option<String> = None;
        let deadline = std::time::Instant::now() + timeout;
        while seen.len() < want.len() {
            let mut req = self
                .http
                .get(self.url("/v1/events"))
                .bearer_auth(&self.token)
                .timeout(Duration::from_secs(30))
                .query(&[
                    ("type", "removed".to_owned()),
                    ("label", format!("{RUN_LABEL}={run_id}")),
                    ("limit", "1000".into()),
                ]);
            if let Some(c) = &cursor {
                req = req.query(&[("since", c)]);
            }
            let resp = req.send().await.context("GET /v1/events")?;
            if !resp.status().is_success() {
                bail!("GET /v1/events -> {}", resp.status());
            }
            let page: EventPage = resp.json().await?;
            let empty = page.items.is_empty();
            for item in page.items {
                let id = item.container_id.to_string();
                if want.contains(id.as_str()) {
                    seen.insert(id);
                }
            }
            cursor = Some(page.next);
            if std::time::Instant::now() > deadline {
                bail!(
                    "{} of {} not removed within {timeout:?}",
                    want.len() - seen.len(),
                    want.len()
                );
            }
            if empty {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(())
    }

    /// Every container of this tenant labelled with `run_id` (all pages).
    pub async fn list_run(&self, run_id: &str) -> Result<Vec<Container>> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..100 {
            let mut req = self
                .http
                .get(self.url("/v1/containers"))
                .bearer_auth(&self.token)
                .timeout(Duration::from_secs(30))
                .query(&[
                    ("label", format!("{RUN_LABEL}={run_id}")),
                    ("limit", "1000".into()),
                ]);
            if let Some(c) = &cursor {
                req = req.query(&[("cursor", c)]);
            }
            let resp = req.send().await?;
            if !resp.status().is_success() {
                bail!("GET /v1/containers -> {}", resp.status());
            }
            let page: ContainerList = resp.json().await?;
            out.extend(page.items);
            match page.next {
                Some(n) => cursor = Some(n),
                None => break,
            }
        }
        Ok(out)
    }
}
