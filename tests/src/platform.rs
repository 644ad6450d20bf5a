//! A pool: API replicas on one database and several hosts, started once per
//! test binary and shared by the tests that use it.
//!
//! Pools of this binary (each started on first use, so a filtered run starts
//! only what it needs; they run side by side, so the small ones add little to
//! the suite's wall time, where a separate test binary would run after this
//! one):
//! - [`Platform::get`], the main pool: 3 hosts, 2 API replicas, binpack
//!   placement, a database in test.sh's PostgreSQL. Every ordinary test runs
//!   here; tests talk to replica 1 unless they say otherwise.
//! - [`Platform::spread`]: 2 hosts, 1 replica, `SKIFF_PLACEMENT=spread`
//!   (placement is a per-process setting; two replicas with different
//!   settings on one database would race for the same pending rows).
//! - [`Platform::own_postgres`]: 2 hosts, 1 replica on a PostgreSQL cluster
//!   the harness starts (lib.sh's `start_postgres`), for the test that stops
//!   and restarts it.
//! - [`Platform::partitioned`]: 2 hosts, 2 replicas; replica 2 and the
//!   worker of h2 live in network namespaces of their own, joined by a veth
//!   pair the test can cut.
//! - [`Platform::hostless`]: one replica and no host at all.
//! - [`Platform::secrets`]: 1 host, 1 replica, for the test that rotates
//!   the keyring of secrets at rest (its rows are all sealed anew).
//! - [`Platform::fuzz`]: one replica and no host, for the API fuzzer.
//!
//! Capacities are modest and honest for this machine kind: every host offers
//! 3 vCPU and 3072 MiB (`HOST_CPU_MILLIS`, `HOST_MEMORY_MIB`), so a 3.5 vCPU
//! or a 4096 MiB request fits no host, and the pool's 9 vCPU leave room for
//! the ordinary tests running 4 at a time (0.5 vCPU / 128 MiB each).
//!
//! Timers are short so loss and fencing happen within a test (see
//! [`Timers`]); tests compute their waits from these configured values.
//!
//! Disruptive tests take a pool exclusively: [`Platform::new_tenant`] holds
//! the pool's lock shared for the life of the [`Tenant`],
//! [`Platform::new_exclusive_tenant`] exclusively.
//!
//! Layout:
//! - [`Platform`]: the pools, tenants and the lock, admin routes (hosts,
//!   drain), fault tools (worker, API replica), logs.
//! - [`Timers`], [`ApiReplica`], [`DrainGuard`].
//! - How a pool starts is in `startup`; its own PostgreSQL in `postgres`;
//!   its network namespaces in `netns`.

use crate::host::Host;
use crate::netns::Partition;
use crate::postgres::OwnPostgres;
use crate::service::{Reaper, Service};
use crate::startup::{pool, wait_ready, PoolSpec};
use crate::tenant::{read_reply, Reply, Tenant};
use anyhow::{anyhow, bail, Context, Result};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

/// How often a tenant may verify its ledger (`SKIFF_VERIFY_MIN_INTERVAL_S`).
pub const VERIFY_MIN_INTERVAL_S: f64 = 0.5;

/// The image GC's pace on every host (it acts only past a budget, which
/// only the spread pool sets low: [`SPREAD_IMAGE_BUDGET`]).
pub const IMAGE_GC_INTERVAL_S: f64 = 0.3;
pub const IMAGE_MIN_IDLE_S: f64 = 1.0;
/// `SKIFF_IMAGE_DISK_BUDGET_BYTES` of the spread pool's hosts.
pub const SPREAD_IMAGE_BUDGET: u64 = 13 * 1024 * 1024;

/// Each host's cap on a container's log (`SKIFF_LOG_MAX_BYTES`).
pub const LOG_MAX_BYTES: u64 = 4 * 1024 * 1024;
/// `SKIFF_HOST_LOG_BUDGET_BYTES` of the spread pool's hosts (the others
/// have none), measured every `LOG_GC_INTERVAL_S`.
pub const SPREAD_LOG_BUDGET: u64 = 5 * 1024 * 1024;
pub const LOG_GC_INTERVAL_S: f64 = 0.3;

/// In every host's `SKIFF_REGISTRY_DENY`: a registry name and a network
/// (TEST-NET-2) pulls may never reach.
pub const DENIED_REGISTRY: &str = "denied-registry.invalid";
pub const DENIED_REGISTRY_NET: &str = "198.51.100.0/24";
/// In every host's `SKIFF_INSECURE_REGISTRIES` beside the test registry
/// (any port): where the egress tests run registry stubs.
pub const REDIRECTING_REGISTRY_HOST: &str = "127.0.0.3";

/// Every host's `SKIFF_PIDS_LIMIT` (a container's pids.max): low, so the
/// fork-bomb test reaches it quickly.
pub const PIDS_LIMIT: u64 = 512;

/// What every host offers the scheduler.
pub const HOST_CPU_MILLIS: u64 = 3000;
pub const HOST_MEMORY_MIB: u64 = 3072;

/// The label every host carries with its short name (`host=h1`): tests pin a
/// container to a host with `placement.host_labels`.
pub const HOST_LABEL: &str = "host";

/// The timers the pool's processes run with (the API's and the worker's
/// `SKIFF_*` settings). Tests derive their waits from these, never from
/// wall-clock guesses.
#[derive(Debug, Clone)]
pub struct Timers {
    pub heartbeat_interval_s: f64,
    pub host_lost_after_s: f64,
    pub scheduler_tick_s: f64,
    pub checkpoint_interval_s: f64,
    pub cert_lifetime_s: u64,
}

impl Timers {
    /// A generous bound for "the host is judged lost": the silence plus
    /// several heartbeats and scheduler ticks of slack on a loaded machine.
    pub fn lost_within(&self) -> Duration {
        Duration::from_secs_f64(
            self.host_lost_after_s * 4.0 + self.heartbeat_interval_s * 10.0 + 10.0,
        )
    }
}

/// One API replica.
pub struct ApiReplica {
    /// 1-based, as tests name them.
    pub index: usize,
    /// REST base URL (inside `netns` when set).
    pub url: String,
    pub grpc_url: String,
    pub netns: Option<String>,
    pub(crate) service: Mutex<Service>,
}

/// The services under test: one pool.
pub struct Platform {
    /// `main`, `spread`, `pg`, `partition`, `hostless`, `trust`, `secrets` or `fuzz`.
    pub pool: &'static str,
    /// REST base URL of replica 1.
    pub api_url: String,
    /// Port of replica 1's REST API (tests check a container cannot reach it).
    pub api_port: u16,
    /// gRPC endpoint of replica 1, `https://` (tests that call it as a host use it).
    pub grpc_url: String,
    /// The pool's own database (tests that tamper with rows use it).
    pub database_url: String,
    pub(crate) admin_token: String,
    /// Identifies this test process in names.
    pub run_id: String,
    /// `<SKIFF_TEST_STATE_DIR>/e2e-<run>/<pool>`: logs, pid files, host dirs.
    pub run_dir: PathBuf,
    pub apis: Vec<ApiReplica>,
    pub hosts: Vec<Host>,
    pub timers: Timers,
    /// `binpack` or `spread`.
    pub placement: &'static str,
    pub postgres: Option<OwnPostgres>,
    pub partition: Option<Partition>,
    pub(crate) image: String,
    pub(crate) registry: String,
    pub(crate) lib: PathBuf,
    /// Held shared by ordinary tests, exclusively by disruptive ones.
    pub(crate) exclusive: RwLock<()>,
    /// A tenant of the harness itself, for readiness probes.
    pub(crate) probe_token: String,
    /// The pool's CA (tests mint certificates with it).
    pub ca: crate::trust::CaFiles,
    /// `SKIFF_SECRETS_KEYRING_FILE` of the pool's replicas (a test may
    /// rewrite it, then restart them, as an operator rotating keys would).
    pub secrets_keyring: PathBuf,
    /// The `skiff-api` binary (for its commands: `secrets reencrypt`, ...).
    pub api_bin: PathBuf,
    /// The token the pool's workers joined with (used up by them).
    pub join_token: String,
    pub(crate) _reapers: Vec<Reaper>,
}

pub(crate) type Cell = OnceLock<Result<Platform, String>>;
static MAIN: Cell = OnceLock::new();
static SPREAD: Cell = OnceLock::new();
static OWN_POSTGRES: Cell = OnceLock::new();
static PARTITIONED: Cell = OnceLock::new();
static HOSTLESS: Cell = OnceLock::new();
static TRUST: Cell = OnceLock::new();
static SECRETS: Cell = OnceLock::new();
static FUZZ: Cell = OnceLock::new();
/// The pools that have been started, for logs dumps.
pub(crate) fn started_pools() -> impl Iterator<Item = &'static Platform> {
    [
        &MAIN,
        &SPREAD,
        &OWN_POSTGRES,
        &PARTITIONED,
        &HOSTLESS,
        &TRUST,
        &SECRETS,
        &FUZZ,
    ]
    .into_iter()
    .filter_map(|cell| cell.get().and_then(|r| r.as_ref().ok()))
}

impl Platform {
    /// The main pool (3 hosts, 2 replicas, binpack). Panics with the
    /// start-up error (the first test to hit it gets the whole error).
    pub async fn get() -> &'static Platform {
        pool(
            &MAIN,
            PoolSpec {
                // Renewed every ~30 s while the suite runs.
                cert_lifetime_s: 60,
                hosts: 3,
                api_replicas: 2,
                ..PoolSpec::base("main")
            },
        )
    }

    /// A small pool placing with `SKIFF_PLACEMENT=spread`.
    pub async fn spread() -> &'static Platform {
        pool(
            &SPREAD,
            PoolSpec {
                agent_listen_any: true,
                hosts: 2,
                placement: "spread",
                image_budget: Some(SPREAD_IMAGE_BUDGET),
                log_budget: Some(SPREAD_LOG_BUDGET),
                ..PoolSpec::base("spread")
            },
        )
    }

    /// A small pool on a PostgreSQL cluster of its own.
    pub async fn own_postgres() -> &'static Platform {
        pool(
            &OWN_POSTGRES,
            PoolSpec {
                host_lost_after_s: 3.0,
                hosts: 2,
                own_postgres: true,
                ..PoolSpec::base("pg")
            },
        )
    }

    /// A pool whose replica 2 and host h2 sit behind a veth pair.
    pub async fn partitioned() -> &'static Platform {
        pool(
            &PARTITIONED,
            PoolSpec {
                host_lost_after_s: 3.0,
                hosts: 2,
                api_replicas: 2,
                partition: true,
                ..PoolSpec::base("partition")
            },
        )
    }

    /// An API replica with no host at all (what happens before any worker
    /// registers).
    pub async fn hostless() -> &'static Platform {
        pool(&HOSTLESS, PoolSpec::base("hostless"))
    }

    /// The API fuzzer's pool (`fuzz.rs`): one replica and no host, on a
    /// database of its own, so what schemathesis makes (tenants, containers
    /// and jobs by the hundred, rate cards, quotas, join tokens) never
    /// touches another pool's capacity, queue or bills, and no container
    /// ever starts (the images it names are random: nothing is pulled). An
    /// SSE stream ends after a second (`SKIFF_STREAM_MAX_S`), so the
    /// fuzzer's event-stream cases end by themselves.
    pub async fn fuzz() -> &'static Platform {
        pool(
            &FUZZ,
            PoolSpec {
                api_env: &[("SKIFF_STREAM_MAX_S", "1")],
                ..PoolSpec::base("fuzz")
            },
        )
    }

    /// A pool for the worker channel's trust: certificates of seconds (so
    /// renewals happen while a test watches), and hosts a test may revoke.
    pub async fn trust() -> &'static Platform {
        pool(
            &TRUST,
            PoolSpec {
                cert_lifetime_s: 20,
                hosts: 2,
                ..PoolSpec::base("trust")
            },
        )
    }

    /// A pool whose keyring of secrets at rest a test rotates.
    pub async fn secrets() -> &'static Platform {
        pool(
            &SECRETS,
            PoolSpec {
                hosts: 1,
                ..PoolSpec::base("secrets")
            },
        )
    }

    /// The test image (busybox-static: sh, echo, sleep, cat, wget, ...).
    pub fn image(&self) -> &str {
        &self.image
    }

    /// The loopback registry, `127.0.0.1:<port>`.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// deploy/local/lib.sh.
    pub fn deploy_lib(&self) -> &Path {
        &self.lib
    }

    /// A minimal valid create body running `command` in the test image.
    pub fn spec(&self, command: &[&str]) -> Value {
        json!({
            "image": self.image,
            "command": command,
            "cpu": 0.5,
            "memory_mib": 128,
        })
    }

    /// A `sleep 600` of `cpu` vCPU that stops within a second: what
    /// placement and queueing tests fill hosts with.
    pub fn sleeper(&self, cpu: f64) -> Value {
        let mut spec = self.spec(&["sleep", "600"]);
        spec["cpu"] = json!(cpu);
        spec["stop_timeout_s"] = json!(1);
        spec
    }

    /// [`Platform::spec`] for `sh -c <script>`.
    pub fn sh(&self, script: &str) -> Value {
        self.spec(&["sh", "-c", script])
    }

    /// A fresh tenant for one test. It holds the pool shared until it is
    /// dropped, so exclusive tests wait for it.
    pub async fn new_tenant(&'static self) -> Tenant {
        let guard = self.exclusive.read().await;
        crate::start_clock();
        self.tenant_with(Some(guard), None).await
    }

    /// A fresh tenant that holds the pool exclusively: for tests that
    /// disrupt the services or need the pool's capacity to themselves.
    pub async fn new_exclusive_tenant(&'static self) -> Tenant {
        let guard = self.exclusive.write().await;
        crate::start_clock();
        self.tenant_with(None, Some(guard)).await
    }

    pub(crate) async fn tenant_with(
        &'static self,
        shared: Option<RwLockReadGuard<'static, ()>>,
        exclusive: Option<RwLockWriteGuard<'static, ()>>,
    ) -> Tenant {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()
            .expect("reqwest client");
        let name = format!("t-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let (id, token) = self
            .create_tenant(&client, &name)
            .await
            .unwrap_or_else(|e| panic!("creating tenant {name}: {e:#}\n{}", self.logs_dump()));
        Tenant {
            id,
            name,
            token,
            client,
            platform: self,
            api_url: self.api_url.clone(),
            _shared: shared,
            _exclusive: exclusive,
            owner: true,
        }
    }

    /// Whether the calling test holds this pool exclusively.
    pub fn held_exclusively(&self) -> bool {
        self.exclusive.try_read().is_err()
    }

    fn assert_exclusive(&self, what: &str) {
        assert!(
            self.held_exclusively(),
            "{what} needs an exclusive tenant (Platform::new_exclusive_tenant)"
        );
    }

    /// POST /v1/tenants with the admin token; returns (id, token).
    pub(crate) async fn create_tenant(
        &self,
        client: &reqwest::Client,
        name: &str,
    ) -> Result<(String, String)> {
        let response = client
            .post(format!("{}/v1/tenants", self.api_url))
            .bearer_auth(&self.admin_token)
            .json(&json!({ "name": name }))
            .send()
            .await?;
        let status = response.status();
        let text = response.text().await?;
        if status != StatusCode::CREATED {
            bail!("POST /v1/tenants -> {status}: {text}");
        }
        let body: Value =
            serde_json::from_str(&text).with_context(|| format!("tenant body {text}"))?;
        let id = body["id"]
            .as_str()
            .ok_or_else(|| anyhow!("no id in {text}"))?;
        let token = body["token"]
            .as_str()
            .ok_or_else(|| anyhow!("no token in {text}"))?;
        Ok((id.to_string(), token.to_string()))
    }

    /// The admin token, for tests of admin routes.
    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    /// Any request to replica 1 with the admin token.
    pub async fn admin(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Reply> {
        let mut request = reqwest::Client::new()
            .request(method, format!("{}{path}", self.api_url))
            .timeout(Duration::from_secs(30))
            .bearer_auth(&self.admin_token);
        if let Some(body) = body {
            request = request.json(body);
        }
        Ok(read_reply(request.send().await?).await)
    }

    /// `GET /v1/hosts` (admin): the `items`, panicking unless 200.
    pub async fn hosts_view(&self) -> Vec<Value> {
        let reply = self
            .admin(Method::GET, "/v1/hosts", None)
            .await
            .unwrap_or_else(|e| panic!("GET /v1/hosts: {e:#}"));
        assert_eq!(reply.status, StatusCode::OK, "GET /v1/hosts: {reply:?}");
        reply.json()["items"]
            .as_array()
            .unwrap_or_else(|| panic!("GET /v1/hosts without items: {reply:?}"))
            .clone()
    }

    /// This pool's host `id` as `GET /v1/hosts` shows it.
    pub async fn host_view(&self, id: &str) -> Value {
        let hosts = self.hosts_view().await;
        hosts
            .iter()
            .find(|h| h["id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("host {id} not in GET /v1/hosts: {hosts:?}"))
    }

    /// Polls `GET /v1/hosts` until host `id` is in `state`; panics after
    /// `within` with the last view and the logs.
    pub async fn wait_host_state(&self, id: &str, state: &str, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let view = self.host_view(id).await;
            if view["state"] == state {
                return view;
            }
            if Instant::now() > deadline {
                panic!(
                    "host {id} not {state} within {within:?}: {view}\n{}",
                    self.logs_dump_matching(Some(id))
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// POST /v1/hosts/{id}/drain or /undrain (admin), asserting 200.
    pub async fn set_draining(&self, id: &str, draining: bool) -> Value {
        let action = if draining { "drain" } else { "undrain" };
        let reply = self
            .admin(Method::POST, &format!("/v1/hosts/{id}/{action}"), None)
            .await
            .unwrap_or_else(|e| panic!("{action} {id}: {e:#}"));
        assert_eq!(reply.status, StatusCode::OK, "{action} {id}: {reply:?}");
        reply.json()
    }

    /// The host whose id (or short name) is `id`.
    pub fn host(&self, id: &str) -> &Host {
        self.hosts
            .iter()
            .find(|h| h.id == id || h.name == id)
            .unwrap_or_else(|| {
                panic!(
                    "no host {id} in pool {} ({:?})",
                    self.pool,
                    self.hosts.iter().map(|h| &h.id).collect::<Vec<_>>()
                )
            })
    }

    /// The host a container object names in `host_id`.
    pub fn host_of(&self, container: &Value) -> &Host {
        let id = container["host_id"]
            .as_str()
            .unwrap_or_else(|| panic!("container without host_id: {container}"));
        self.host(id)
    }

    /// When the API last heard from host `id` (`GET /v1/hosts`).
    pub async fn last_heartbeat(&self, id: &str) -> chrono::DateTime<chrono::Utc> {
        let view = self.host_view(id).await;
        let at = view["last_heartbeat_at"]
            .as_str()
            .unwrap_or_else(|| panic!("no last_heartbeat_at for {id}: {view}"));
        chrono::DateTime::parse_from_rfc3339(at)
            .unwrap_or_else(|e| panic!("last_heartbeat_at {at}: {e}"))
            .with_timezone(&chrono::Utc)
    }

    /// SIGKILLs the worker of `host` (containerd's shims keep its containers
    /// running), respawns it with the same environment, and waits until the
    /// API hears from it again. Call it only from an exclusive test.
    pub async fn restart_worker_with_sigkill(&self, host: &Host) {
        self.assert_exclusive("restart_worker_with_sigkill");
        host.kill_worker();
        let respawned = chrono::Utc::now();
        host.respawn_worker();
        self.wait_heard_from(host, respawned).await;
    }

    /// Waits until the API has a heartbeat of `host` newer than `since`.
    pub async fn wait_heard_from(&self, host: &Host, since: chrono::DateTime<chrono::Utc>) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.last_heartbeat(&host.id).await <= since {
            if let Some(exit) = host.worker_exited() {
                panic!(
                    "the worker of {} exited ({exit})\n{}",
                    host.name,
                    self.logs_dump()
                );
            }
            assert!(
                Instant::now() < deadline,
                "no heartbeat from {} within 60 s of its restart\n{}",
                host.name,
                self.logs_dump()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Replica `index` (1-based).
    pub fn api(&self, index: usize) -> &ApiReplica {
        &self.apis[index - 1]
    }

    /// Starts one more API replica of this pool (outside any namespace),
    /// with replica 1's environment and `overrides` (its ports are new
    /// ones: `SKIFF_LISTEN` and `SKIFF_GRPC_LISTEN` are set here). It is
    /// SIGKILLed when dropped.
    pub fn extra_api(&self, name: &str, overrides: &[(&str, String)]) -> ExtraApi {
        let (command, env) = {
            let first = self.apis[0].service.lock().expect("api mutex");
            let (command, env) = first.command_and_env();
            (command.to_vec(), env.to_vec())
        };
        let port = crate::startup::free_port().expect("a free port");
        let grpc_port = crate::startup::free_port().expect("a free port");
        let mut env: Vec<(String, String)> = env
            .into_iter()
            .filter(|(k, _)| !overrides.iter().any(|(o, _)| o == k))
            .filter(|(k, _)| k != "SKIFF_LISTEN" && k != "SKIFF_GRPC_LISTEN")
            .collect();
        env.push(("SKIFF_LISTEN".into(), format!("127.0.0.1:{port}")));
        env.push(("SKIFF_GRPC_LISTEN".into(), format!("127.0.0.1:{grpc_port}")));
        env.extend(overrides.iter().map(|(k, v)| (k.to_string(), v.clone())));
        let service =
            Service::spawn(name, command, env, &self.run_dir).expect("spawning an extra replica");
        ExtraApi {
            address: format!("127.0.0.1:{port}"),
            service,
        }
    }

    /// SIGKILLs API replica `index`. Exclusive tests only.
    pub fn kill_api(&self, index: usize) {
        self.assert_exclusive("kill_api");
        self.api(index)
            .service
            .lock()
            .expect("api mutex")
            .kill9()
            .unwrap_or_else(|e| panic!("api{index}: {e:#}"));
    }

    /// Starts API replica `index` again and waits for its /readyz.
    pub async fn respawn_api(&self, index: usize) {
        let api = self.api(index);
        api.service
            .lock()
            .expect("api mutex")
            .respawn()
            .unwrap_or_else(|e| panic!("respawning api{index}: {e:#}"));
        if api.netns.is_none() {
            wait_ready(&reqwest::Client::new(), api)
                .await
                .unwrap_or_else(|e| panic!("api{index} did not come back: {e:#}"));
        }
    }

    /// The last lines of every service log of this pool, for assertion
    /// messages.
    pub fn logs_dump(&self) -> String {
        self.logs_dump_matching(None)
    }

    /// Like [`Platform::logs_dump`], plus the log lines that mention `needle`.
    pub fn logs_dump_matching(&self, needle: Option<&str>) -> String {
        let mut out = String::new();
        let mut logs = Vec::new();
        // A service that died explains most failures: say so first.
        for api in &self.apis {
            if let Ok(mut service) = api.service.try_lock() {
                if let Some(exit) = service.exited() {
                    let _ = writeln!(out, "!!! api{} has exited: {exit}", api.index);
                }
                logs.push((format!("api{}", api.index), service.log_file.clone()));
            }
        }
        for host in &self.hosts {
            if let Ok(mut service) = host.worker.try_lock() {
                if let Some(exit) = service.exited() {
                    let _ = writeln!(out, "!!! the worker of {} has exited: {exit}", host.name);
                }
                logs.push((format!("worker {}", host.name), service.log_file.clone()));
            }
        }
        for (name, file) in logs {
            let text = std::fs::read_to_string(&file).unwrap_or_else(|e| format!("({e})"));
            let lines: Vec<&str> = text.lines().collect();
            if let Some(needle) = needle {
                let hits: Vec<&str> = lines
                    .iter()
                    .copied()
                    .filter(|l| l.contains(needle))
                    .collect();
                let from = hits.len().saturating_sub(30);
                let _ = writeln!(
                    out,
                    "--- {name} log lines mentioning {needle} ({}):",
                    file.display()
                );
                for line in &hits[from..] {
                    let _ = writeln!(out, "{line}");
                }
            }
            let from = lines.len().saturating_sub(15);
            let _ = writeln!(out, "--- {name} log tail ({}):", file.display());
            for line in &lines[from..] {
                let _ = writeln!(out, "{line}");
            }
        }
        out
    }

    /// The full text of every service log of this pool (to check nothing
    /// leaks).
    pub fn service_logs(&self) -> String {
        let mut files = Vec::new();
        for api in &self.apis {
            if let Ok(service) = api.service.lock() {
                files.push(service.log_file.clone());
            }
        }
        for host in &self.hosts {
            if let Ok(service) = host.worker.lock() {
                files.push(service.log_file.clone());
            }
        }
        files
            .iter()
            .map(|f| std::fs::read_to_string(f).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// A replica started by [`Platform::extra_api`].
pub struct ExtraApi {
    /// `127.0.0.1:<port>` of its REST API.
    pub address: String,
    service: Service,
}

impl ExtraApi {
    /// `Some(status)` once it has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.service.exited()
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.service.log_file).unwrap_or_default()
    }
}

impl Drop for ExtraApi {
    fn drop(&mut self) {
        if self.service.exited().is_none() {
            let _ = self.service.kill9();
        }
    }
}

/// Undrains a host when dropped, so a test that fails while a host is
/// draining does not leave the pool short for the tests after it.
pub struct DrainGuard {
    platform: &'static Platform,
    host_id: String,
}

impl Platform {
    /// Drains host `id` (asserting 200) until the guard is dropped; returns
    /// the host object the API answered with, and the guard.
    pub async fn drain(&'static self, id: &str) -> (Value, DrainGuard) {
        let view = self.set_draining(id, true).await;
        let guard = DrainGuard {
            platform: self,
            host_id: id.to_string(),
        };
        (view, guard)
    }
}

impl Drop for DrainGuard {
    fn drop(&mut self) {
        let url = format!(
            "{}/v1/hosts/{}/undrain",
            self.platform.api_url, self.host_id
        );
        let token = self.platform.admin_token.clone();
        // Its own thread and runtime: drop may run inside or outside one.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async {
                reqwest::Client::new()
                    .post(url)
                    .bearer_auth(token)
                    .timeout(Duration::from_secs(10))
                    .send()
                    .await
                    .ok()
            })
        })
        .join();
    }
}
