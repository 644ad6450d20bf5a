//! One tenant's view of a pool: its HTTP client and the container helpers
//! (create, wait, logs, events, stop/start/restart/delete, diagnostics), plus
//! the lookups of where a container runs.
//!
//! Layout:
//! - [`Tenant`]: requests as one tenant, to replica 1 unless [`Tenant::via`]
//!   picks another replica.
//! - [`Reply`]: a response read to the end, with a problem+json check.
//! - [`id_of`], [`unique`]: small helpers for tests.

use crate::host::Host;
use crate::platform::Platform;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use std::time::{Duration, Instant};
use tokio::sync::{RwLockReadGuard, RwLockWriteGuard};

/// One tenant of the platform with its own HTTP client.
pub struct Tenant {
    pub id: String,
    pub name: String,
    pub token: String,
    /// Built inside the test's runtime (pooled connections belong to it).
    pub client: reqwest::Client,
    pub platform: &'static Platform,
    /// The REST base URL this handle talks to (replica 1 by default).
    pub api_url: String,
    pub(crate) _shared: Option<RwLockReadGuard<'static, ()>>,
    pub(crate) _exclusive: Option<RwLockWriteGuard<'static, ()>>,
    /// Whether dropping this handle removes the tenant's containers that
    /// still hold capacity (false for [`Tenant::via`] copies).
    pub(crate) owner: bool,
}

/// A response read to the end, for assertions.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub content_type: String,
    pub text: String,
    pub headers: reqwest::header::HeaderMap,
}

impl Reply {
    /// The body as JSON (Null if it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or(Value::Null)
    }

    /// Asserts a problem+json body whose `status` matches the HTTP status
    /// and which has `type`, `title` and `detail`; returns it.
    pub fn problem(&self) -> Value {
        assert!(
            self.content_type.starts_with("application/problem+json"),
            "expected application/problem+json, got {:?}: {self:?}",
            self.content_type
        );
        let body = self.json();
        assert_eq!(
            body["status"],
            self.status.as_u16(),
            "problem status field: {self:?}"
        );
        for key in ["type", "title", "detail"] {
            assert!(body[key].is_string(), "problem without {key}: {self:?}");
        }
        body
    }
}

impl Tenant {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.api_url)
    }

    /// The same tenant talking to API replica `index` (1-based). It takes
    /// no lock of its own (`self` holds one).
    pub fn via(&self, index: usize) -> Tenant {
        Tenant {
            id: self.id.clone(),
            name: self.name.clone(),
            token: self.token.clone(),
            client: self.client.clone(),
            platform: self.platform,
            api_url: self.platform.api(index).url.clone(),
            _shared: None,
            _exclusive: None,
            owner: false,
        }
    }

    /// The host a container runs on (or last ran on), from its `host_id`.
    pub async fn host_of(&self, id: &str) -> &'static Host {
        let object = self.get(id).await;
        if object["host_id"].as_str().is_none() {
            panic!("{id} has no host_id\n{}", self.diag(id).await);
        }
        self.platform.host_of(&object)
    }

    /// The pid of a container's task on its host, as `ctr tasks ls` shows it.
    pub async fn task_pid(&self, id: &str) -> u32 {
        self.host_of(id).await.task_pid(id).await
    }

    /// Any authenticated request; the body, if any, is sent as JSON.
    pub async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> Reply {
        self.call_with_key(method, path, body, None).await
    }

    /// [`Tenant::call`] with an `Idempotency-Key` header, when given.
    pub async fn call_with_key(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        idempotency_key: Option<&str>,
    ) -> Reply {
        let mut request = self
            .client
            .request(method.clone(), self.url(path))
            .bearer_auth(&self.token);
        if let Some(key) = idempotency_key {
            request = request.header("Idempotency-Key", key);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}\n{}", self.platform.logs_dump()));
        read_reply(response).await
    }

    /// POST with a raw body and content type (invalid JSON, huge bodies).
    pub async fn post_raw(&self, path: &str, content_type: &str, body: Vec<u8>) -> Reply {
        let response = self
            .client
            .post(self.url(path))
            .bearer_auth(&self.token)
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}"));
        read_reply(response).await
    }

    /// POST /v1/containers.
    pub async fn create(&self, spec: &Value) -> Reply {
        self.call(Method::POST, "/v1/containers", Some(spec)).await
    }

    /// POST /v1/containers, asserting 201; returns the container object.
    pub async fn create_ok(&self, spec: &Value) -> Value {
        let reply = self.create(spec).await;
        assert_eq!(
            reply.status,
            StatusCode::CREATED,
            "create {spec}: {reply:?}\n{}",
            self.platform.logs_dump()
        );
        let object = reply.json();
        assert!(object["id"].is_string(), "no id in {reply:?}");
        object
    }

    /// POST /v1/containers and return the new id.
    pub async fn create_id(&self, spec: &Value) -> String {
        id_of(&self.create_ok(spec).await)
    }

    /// A second, fresh tenant for tests that need two. It takes no lock of
    /// its own (`self` already holds one: taking a second shared lock could
    /// deadlock behind a queued exclusive test).
    pub async fn another(&self) -> Tenant {
        self.platform.tenant_with(None, None).await
    }

    /// GET /v1/containers/{id}, asserting 200.
    pub async fn get(&self, id: &str) -> Value {
        let reply = self
            .call(Method::GET, &format!("/v1/containers/{id}"), None)
            .await;
        assert_eq!(reply.status, StatusCode::OK, "GET {id}: {reply:?}");
        reply.json()
    }

    /// GET /v1/containers with query pairs; returns {"items", "next"}.
    pub async fn list(&self, query: &[(&str, &str)]) -> Value {
        let response = self
            .client
            .get(self.url("/v1/containers"))
            .query(query)
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET /v1/containers {query:?}: {e}"));
        let reply = read_reply(response).await;
        assert_eq!(reply.status, StatusCode::OK, "list {query:?}: {reply:?}");
        reply.json()
    }

    /// GET .../wait?for=<what>&timeout_s=<n>, asserting 200 (a 408 panics
    /// with diagnostics).
    pub async fn wait(&self, id: &str, what: &str, timeout_s: u64) -> Value {
        let reply = self.wait_reply(id, what, timeout_s).await;
        if reply.status != StatusCode::OK {
            panic!(
                "wait for={what} timeout_s={timeout_s} on {id}: {reply:?}\n{}",
                self.diag(id).await
            );
        }
        reply.json()
    }

    /// `POST /v1/containers/{id}/exec` with `body`: the status and the answer.
    pub async fn exec(&self, id: &str, body: Value) -> (StatusCode, Value) {
        let reply = self
            .call(
                Method::POST,
                &format!("/v1/containers/{id}/exec"),
                Some(&body),
            )
            .await;
        (reply.status, reply.json())
    }

    /// GET .../wait, returning whatever came back.
    pub async fn wait_reply(&self, id: &str, what: &str, timeout_s: u64) -> Reply {
        let timeout_text = timeout_s.to_string();
        let response = self
            .client
            .get(self.url(&format!("/v1/containers/{id}/wait")))
            .query(&[("for", what), ("timeout_s", timeout_text.as_str())])
            .bearer_auth(&self.token)
            .timeout(Duration::from_secs(timeout_s + 30))
            .send()
            .await
            .unwrap_or_else(|e| panic!("wait on {id}: {e}"));
        read_reply(response).await
    }

    /// Waits for `exited` and asserts the final state; returns the object.
    pub async fn wait_exited_in(&self, id: &str, state: &str) -> Value {
        let object = self.wait(id, "exited", 60).await;
        if object["state"] != state {
            panic!(
                "expected state {state}, got {}\n{}",
                object["state"],
                self.diag(id).await
            );
        }
        object
    }

    /// Polls GET until `done(object)` holds (every 200 ms, up to
    /// `timeout_s`); panics with diagnostics on timeout. For transitions the
    /// wait route cannot express (a new run after start/restart).
    pub async fn poll_until(
        &self,
        id: &str,
        timeout_s: u64,
        what: &str,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let path = format!("/v1/containers/{id}");
        self.poll_path(&path, timeout_s, &format!("{what} on {id}"), done, |_| {
            self.diag(id)
        })
        .await
    }

    /// Polls GET `path` (asserting 200) until `done(object)` holds (every
    /// 200 ms, up to `timeout_s`); on timeout panics with `diag` of the last
    /// object.
    pub async fn poll_path<D: std::future::Future<Output = String>>(
        &self,
        path: &str,
        timeout_s: u64,
        what: &str,
        done: impl Fn(&Value) -> bool,
        diag: impl FnOnce(Value) -> D,
    ) -> Value {
        let deadline = Instant::now() + Duration::from_secs(timeout_s);
        loop {
            let reply = self.call(Method::GET, path, None).await;
            assert_eq!(reply.status, StatusCode::OK, "GET {path}: {reply:?}");
            let object = reply.json();
            if done(&object) {
                return object;
            }
            if Instant::now() > deadline {
                let diag = diag(object).await;
                panic!("timed out waiting for {what}\n{diag}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// GET .../logs with query pairs, asserting 200 text/plain.
    pub async fn logs_query(&self, id: &str, query: &[(&str, &str)]) -> String {
        let response = self
            .client
            .get(self.url(&format!("/v1/containers/{id}/logs")))
            .query(query)
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap_or_else(|e| panic!("logs of {id}: {e}"));
        let reply = read_reply(response).await;
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "logs {id} {query:?}: {reply:?}"
        );
        assert!(
            reply.content_type.starts_with("text/plain"),
            "logs content type {:?}",
            reply.content_type
        );
        reply.text
    }

    /// The whole log of a container.
    pub async fn logs(&self, id: &str) -> String {
        self.logs_query(id, &[]).await
    }

    /// GET .../events: the `items` array.
    pub async fn events(&self, id: &str) -> Vec<Value> {
        let reply = self
            .call(Method::GET, &format!("/v1/containers/{id}/events"), None)
            .await;
        assert_eq!(reply.status, StatusCode::OK, "events {id}: {reply:?}");
        reply.json()["items"]
            .as_array()
            .unwrap_or_else(|| panic!("events without items: {reply:?}"))
            .clone()
    }

    /// How many events of `kind` the container has.
    pub async fn count_events(&self, id: &str, kind: &str) -> usize {
        self.events(id)
            .await
            .iter()
            .filter(|e| e["kind"] == kind)
            .count()
    }

    async fn action(&self, id: &str, action: &str) -> Value {
        let reply = self
            .call(Method::POST, &format!("/v1/containers/{id}/{action}"), None)
            .await;
        if reply.status != StatusCode::ACCEPTED {
            panic!("{action} {id}: {reply:?}\n{}", self.diag(id).await);
        }
        reply.json()
    }

    /// POST .../stop, asserting 202.
    pub async fn stop(&self, id: &str) -> Value {
        self.action(id, "stop").await
    }

    /// POST .../start, asserting 202.
    pub async fn start(&self, id: &str) -> Value {
        self.action(id, "start").await
    }

    /// POST .../restart, asserting 202.
    pub async fn restart(&self, id: &str) -> Value {
        self.action(id, "restart").await
    }

    /// DELETE /v1/containers/{id}: 202 (it was running: the host stops it)
    /// or 204 (it had finished); then waits for the tenant's event log to
    /// say its host removed it, so the host's capacity and runtime state
    /// are free when this returns.
    pub async fn delete(&self, id: &str) {
        let reply = self
            .call(Method::DELETE, &format!("/v1/containers/{id}"), None)
            .await;
        match reply.status {
            StatusCode::ACCEPTED => assert_eq!(
                reply.json()["state"],
                "stopping",
                "a deleted running container is stopping: {reply:?}"
            ),
            StatusCode::NO_CONTENT => {}
            _ => panic!("delete {id}: {reply:?}\n{}", self.diag(id).await),
        }
        self.wait_removed(id).await;
    }

    /// Waits (up to 60 s) for the `removed` event of a deleted container.
    pub async fn wait_removed(&self, id: &str) {
        let path = format!("/v1/events?container={id}&type=removed&limit=1");
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let page = self.call(Method::GET, &path, None).await;
            assert_eq!(page.status, StatusCode::OK, "{page:?}");
            if !page.json()["items"].as_array().expect("items").is_empty() {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{id} not removed from its host within 60 s of its delete"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Everything known about a container, for assertion messages: the
    /// object, its events, its log tail and the service logs.
    pub async fn diag(&self, id: &str) -> String {
        let path = format!("/v1/containers/{id}");
        let object = self.call(Method::GET, &path, None).await;
        let events = self
            .call(Method::GET, &format!("{path}/events"), None)
            .await;
        let logs = self
            .call(Method::GET, &format!("{path}/logs?tail=20"), None)
            .await;
        format!(
            "=== container {id}: {} {}\n=== events: {} {}\n=== logs (tail 20): {} {}\n{}",
            object.status,
            object.text,
            events.status,
            events.text,
            logs.status,
            logs.text,
            self.platform.logs_dump_matching(Some(id))
        )
    }
}

pub(crate) async fn read_reply(response: reqwest::Response) -> Reply {
    let status = response.status();
    let headers = response.headers().clone();
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let text = response
        .text()
        .await
        .unwrap_or_else(|e| format!("(body error: {e})"));
    Reply {
        status,
        content_type,
        text,
        headers,
    }
}

/// The `id` of a container object.
pub fn id_of(object: &Value) -> String {
    object["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in {object}"))
        .to_string()
}

/// A short random suffix for names.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    )
}

/// One usage record's stretch: `[start_at, end_at)`.
pub type Stretch = (chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>);

impl Tenant {
    /// The usage records of a container, as `[start_at, end_at)` stretches
    /// ordered by start (read from the pool's database).
    pub async fn usage_stretches(&self, id: &str) -> Vec<Stretch> {
        let pool = sqlx::PgPool::connect(&self.platform.database_url)
            .await
            .unwrap_or_else(|e| panic!("connecting to the pool's database: {e}"));
        let stretches = sqlx::query_as(
            "SELECT start_at, end_at FROM usage_records WHERE container_id = $1::uuid \
             ORDER BY start_at, end_at",
        )
        .bind(id)
        .fetch_all(&pool)
        .await
        .unwrap_or_else(|e| panic!("usage_records of {id}: {e}"));
        pool.close().await;
        stretches
    }

    /// Asserts that a finished container (the object `wait` returned) was
    /// metered as one continuous run: billed exactly its duration rounded up
    /// (no gap while something was away, nothing counted twice), and its
    /// ledger stretches follow each other without gap or overlap.
    pub async fn assert_billed_as_one_run(&self, finished: &Value) {
        let id = id_of(finished);
        let diag = self.diag(&id).await;
        let time = |key: &str| {
            chrono::DateTime::parse_from_rfc3339(
                finished[key]
                    .as_str()
                    .unwrap_or_else(|| panic!("no {key}: {diag}")),
            )
            .unwrap_or_else(|e| panic!("{key}: {e}"))
        };
        let run_ms = (time("finished_at") - time("started_at")).num_milliseconds();
        let expected = ((run_ms + 999) / 1000).max(1);
        assert_eq!(
            finished["usage"]["billed_seconds"].as_i64(),
            Some(expected),
            "one run of {run_ms} ms is billed {expected} s\n{diag}"
        );
        let stretches = self.usage_stretches(&id).await;
        assert!(!stretches.is_empty(), "no usage records\n{diag}");
        for pair in stretches.windows(2) {
            assert_eq!(
                pair[0].1, pair[1].0,
                "gap or overlap in the ledger: {stretches:?}\n{diag}"
            );
        }
    }

    /// Polls until the container is `state` with `reason`; panics after
    /// `timeout_s` with diagnostics.
    pub async fn wait_state_reason(
        &self,
        id: &str,
        state: &str,
        reason: &str,
        timeout_s: u64,
    ) -> Value {
        self.poll_until(id, timeout_s, &format!("{state}/{reason}"), |c| {
            c["state"] == state && c["reason"] == reason
        })
        .await
    }
}

impl Tenant {
    /// POST /v1/containers, returning the transport error instead of
    /// panicking (for requests to a replica that may die mid-request).
    pub async fn try_create(&self, spec: &Value) -> Result<Reply, reqwest::Error> {
        let response = self
            .client
            .post(self.url("/v1/containers"))
            .bearer_auth(&self.token)
            .json(spec)
            .send()
            .await?;
        Ok(read_reply(response).await)
    }

    /// Every container of the tenant (all pages of GET /v1/containers).
    pub async fn list_all(&self) -> Vec<Value> {
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut query = vec![("limit", "100".to_string())];
            if let Some(cursor) = &cursor {
                query.push(("cursor", cursor.clone()));
            }
            let query: Vec<(&str, &str)> = query.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let page = self.list(&query).await;
            items.extend(page["items"].as_array().cloned().unwrap_or_default());
            match page["next"].as_str() {
                Some(next) => cursor = Some(next.to_string()),
                None => return items,
            }
        }
    }

    /// Waits (long polls of 30 s) until the container is terminal, up to
    /// `timeout`; returns the object.
    pub async fn wait_terminal(&self, id: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let reply = self.wait_reply(id, "exited", 30).await;
            if reply.status == StatusCode::OK {
                return reply.json();
            }
            if Instant::now() > deadline {
                panic!(
                    "{id} not terminal within {timeout:?}: {reply:?}\n{}",
                    self.diag(id).await
                );
            }
        }
    }
}

/// A test that fails leaves its containers behind; those still holding
/// capacity (not finished) would starve the tests after it, whose placement
/// depends on free hosts. So a tenant's owning handle deletes them when it is
/// dropped, before it releases its lock of the pool (fields drop after this).
impl Drop for Tenant {
    fn drop(&mut self) {
        if !self.owner {
            return;
        }
        let base = self.platform.api_url.clone();
        let token = self.token.clone();
        // Its own thread and runtime: drop runs inside the test's runtime.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(delete_unfinished(&base, &token))
        })
        .join();
    }
}

/// Deletes the tenant's containers that are not finished.
async fn delete_unfinished(base: &str, token: &str) -> Option<()> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .ok()?;
    let mut cursor: Option<String> = None;
    let mut unfinished = Vec::new();
    loop {
        let mut request = client
            .get(format!("{base}/v1/containers"))
            .bearer_auth(token)
            .query(&[("limit", "100")]);
        if let Some(cursor) = &cursor {
            request = request.query(&[("cursor", cursor.as_str())]);
        }
        let page: Value = request.send().await.ok()?.json().await.ok()?;
        for item in page["items"].as_array()? {
            if !matches!(
                item["state"].as_str(),
                Some("succeeded" | "failed" | "stopped")
            ) {
                unfinished.push(id_of(item));
            }
        }
        match page["next"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => break,
        }
    }
    let deletes = unfinished.iter().map(|id| {
        client
            .delete(format!("{base}/v1/containers/{id}"))
            .bearer_auth(token)
            .send()
    });
    futures::future::join_all(deletes).await;
    Some(())
}
