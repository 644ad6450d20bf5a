//! How a pool comes up: its database (a new one in test.sh's PostgreSQL, or
//! a cluster of its own), its network namespaces, one containerd per host
//! (lib.sh's `start_containerd`, the test image pulled in before the worker
//! starts), the API replicas, the workers, and the readiness probe (every
//! worker registered and `ready`, and a probe container run on each host).
//!
//! Layout:
//! - [`PoolSpec`]: what a pool consists of.
//! - `Platform::start` and its readiness probe.
//! - [`pool`]: starts a pool once per test binary.
//! - [`TestEnv`]: what test.sh exports; small helpers (free ports, the
//!   binaries, databases, PostgreSQL's socket dir, the API's timers).

use crate::host::Host;
use crate::netns::Partition;
use crate::platform::{
    ApiReplica, Cell, Platform, Timers, HOST_CPU_MILLIS, HOST_LABEL, HOST_MEMORY_MIB,
};
use crate::postgres::OwnPostgres;
use crate::service::{lib_sh, quote, tail, Reaper, Service};
use anyhow::{anyhow, bail, Context, Result};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::RwLock;

/// How long a pool gets to come up (hosts pull the image first).
const STARTUP_TIMEOUT: Duration = Duration::from_secs(120);

/// The run id and directory shared by every pool of this process.
static RUN: OnceLock<(String, PathBuf)> = OnceLock::new();

/// What a pool consists of.
pub(crate) struct PoolSpec {
    pub(crate) name: &'static str,
    pub(crate) hosts: usize,
    pub(crate) api_replicas: usize,
    pub(crate) placement: &'static str,
    pub(crate) own_postgres: bool,
    /// The last replica and the last host live in network namespaces.
    pub(crate) partition: bool,
    /// `SKIFF_HOST_LOST_AFTER_S`: short where a test waits for a host's
    /// loss; the production default where tests restart replicas and
    /// workers and a host must not be lost meanwhile.
    pub(crate) host_lost_after_s: f64,
}

impl Platform {
    pub(crate) async fn start(spec: PoolSpec) -> Result<Platform> {
        let env = TestEnv::from_env()?;
        let bin_dir = binary_dir()?;
        let api_bin = bin_dir.join("skiff-api");
        let worker_bin = bin_dir.join("skiff-worker");
        for bin in [&api_bin, &worker_bin] {
            if !bin.exists() {
                bail!(
                    "{} does not exist: build the workspace first \
                     (cargo build --workspace), or run deploy/local/test.sh",
                    bin.display()
                );
            }
        }
        let lib = env.deploy_lib.clone();
        if !lib.exists() {
            bail!("{} (deploy/local/lib.sh) does not exist", lib.display());
        }
        let (run_id, base_dir) = RUN
            .get_or_init(|| {
                let rand = uuid::Uuid::new_v4().simple().to_string();
                let run_id = format!("{}-{}", std::process::id(), &rand[..6]);
                let dir = PathBuf::from(&env.state_dir).join(format!("e2e-{run_id}"));
                (run_id, dir)
            })
            .clone();
        let short = run_id.rsplit('-').next().unwrap_or("x").to_string();
        let run_dir = base_dir.join(spec.name);
        std::fs::create_dir_all(&run_dir)
            .with_context(|| format!("creating {}", run_dir.display()))?;
        let mut reapers = Vec::new();
        let timers = Timers {
            heartbeat_interval_s: 0.5,
            host_lost_after_s: spec.host_lost_after_s,
            scheduler_tick_s: 0.2,
            checkpoint_interval_s: 1.0,
        };

        // --- the database -------------------------------------------------
        let (postgres, database_url, pg_socket_dir, pg_port, db_name) = if spec.own_postgres {
            let port = free_port()?;
            let pg = OwnPostgres::start(&lib, &run_dir.join("postgres"), port).await?;
            reapers.push(Reaper::spawn(
                format!("source {}; stop_postgres {}", quote(&lib), quote(&pg.dir)),
                &run_dir.join("reaper.log"),
            )?);
            let url = format!("postgres://postgres@127.0.0.1:{port}/skiff");
            (Some(pg), url, None, port, "skiff".to_string())
        } else {
            let name = format!("skiff_e2e_{}_{}", run_id.replace('-', "_"), spec.name);
            let url = create_database(&env.database_url, &name).await?;
            let port = reqwest::Url::parse(&env.database_url)?
                .port()
                .unwrap_or(5432);
            let socket_dir = if spec.partition {
                Some(pg_socket_dir(&env).await?)
            } else {
                None
            };
            (None, url, socket_dir, port, name)
        };

        // --- network namespaces -------------------------------------------
        let partition = if spec.partition {
            let partition = Partition {
                // (test.sh cleans up namespaces named skiff-e2e-* and veths
                // named ske2e* that a killed run leaves)
                api_netns: format!("skiff-e2e-{short}-api"),
                host_netns: format!("skiff-e2e-{short}-h{}", spec.hosts),
                api_veth: format!("ske2e{short}a"),
                host_veth: format!("ske2e{short}h"),
            };
            reapers.push(Reaper::spawn(
                format!(
                    "ip netns del {} 2>/dev/null; ip netns del {} 2>/dev/null; true",
                    partition.api_netns, partition.host_netns
                ),
                &run_dir.join("reaper.log"),
            )?);
            partition.create().await?;
            Some(partition)
        } else {
            None
        };
        let (ns_api_ip, ns_host_ip) = (crate::netns::API_IP, crate::netns::HOST_IP);

        // --- containerd per host -----------------------------------------
        let mut host_dirs = Vec::new();
        for h in 1..=spec.hosts {
            let dir = run_dir.join("hosts").join(format!("h{h}"));
            let containerd_dir = dir.join("containerd");
            let socket = lib_sh(
                &lib,
                &format!("start_containerd {} 2>/dev/null", quote(&containerd_dir)),
            )
            .await
            .with_context(|| format!("starting containerd of h{h}"))?
            .trim()
            .to_string();
            let namespace = format!("skiff-e2e-{short}-{}-h{h}", spec.name);
            reapers.push(Reaper::spawn(
                format!(
                    "source {lib}; SKIFF_DELETE_CONTAINERS=1 containerd_kill_tasks {dir} {namespace}; \
                     stop_containerd {dir}",
                    lib = quote(&lib),
                    dir = quote(&containerd_dir),
                ),
                &dir.join("reaper.log"),
            )?);
            host_dirs.push((dir, containerd_dir, socket, namespace));
        }
        // Every host holds the test image before its worker starts, so image
        // locality does not steer the first placements to whichever host
        // happened to pull first (a partitioned host cannot reach the
        // registry at all).
        let pulls = host_dirs.iter().map(|(_, _, socket, namespace)| {
            let image = env.image.clone();
            let socket = socket.clone();
            let namespace = namespace.clone();
            async move {
                let output = tokio::process::Command::new("timeout")
                    .args(["120", "ctr", "--address", &socket, "-n", &namespace])
                    .args(["images", "pull", "--plain-http", &image])
                    .output()
                    .await?;
                if !output.status.success() {
                    bail!(
                        "ctr images pull {image} into {namespace}: {}",
                        String::from_utf8_lossy(&output.stderr)
                    );
                }
                Ok(())
            }
        });
        for pulled in futures::future::join_all(pulls).await {
            pulled?;
        }

        // --- API replicas -------------------------------------------------
        let admin_token = format!("e2e-admin-{}", uuid::Uuid::new_v4().simple());
        let mut apis = Vec::new();
        for r in 1..=spec.api_replicas {
            let in_netns = partition.as_ref().filter(|_| r == spec.api_replicas);
            let port = free_port()?;
            let grpc_port = free_port()?;
            let ip = if in_netns.is_some() {
                ns_api_ip
            } else {
                "127.0.0.1"
            };
            let db_url = match (in_netns, &pg_socket_dir) {
                // Inside the namespace PostgreSQL's TCP port is out of reach:
                // its unix socket is not.
                (Some(_), Some(dir)) => {
                    format!("postgres://postgres@localhost/{db_name}?host={dir}&port={pg_port}")
                }
                _ => database_url.clone(),
            };
            let mut env_vars = vec![
                ("SKIFF_LISTEN".to_string(), format!("{ip}:{port}")),
                ("SKIFF_GRPC_LISTEN".into(), format!("{ip}:{grpc_port}")),
                ("SKIFF_DATABASE_URL".into(), db_url),
                ("SKIFF_ADMIN_TOKEN".into(), admin_token.clone()),
                ("SKIFF_PLACEMENT".into(), spec.placement.into()),
                (
                    "SKIFF_SCHEDULER_TICK_S".into(),
                    timers.scheduler_tick_s.to_string(),
                ),
                (
                    "SKIFF_HEARTBEAT_INTERVAL_S".into(),
                    timers.heartbeat_interval_s.to_string(),
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
            let mut command = Vec::new();
            if let Some(p) = in_netns {
                command.extend(["ip", "netns", "exec", &p.api_netns].map(String::from));
            }
            command.push(api_bin.display().to_string());
            let service = Service::spawn(&format!("api{r}"), command, env_vars, &run_dir)?;
            apis.push(ApiReplica {
                index: r,
                url: format!("http://{ip}:{port}"),
                grpc_url: format!("http://{ip}:{grpc_port}"),
                netns: in_netns.map(|p| p.api_netns.clone()),
                service: Mutex::new(service),
            });
        }
        let client = reqwest::Client::new();
        for api in apis.iter().filter(|a| a.netns.is_none()) {
            wait_ready(&client, api).await?;
        }

        // --- workers ------------------------------------------------------
        let mut hosts = Vec::new();
        for (i, (dir, containerd_dir, socket, namespace)) in host_dirs.into_iter().enumerate() {
            let name = format!("h{}", i + 1);
            let in_netns = partition.as_ref().filter(|_| i + 1 == spec.hosts);
            // Workers spread over the replicas; the partitioned host talks
            // to the partitioned replica.
            let api = if in_netns.is_some() {
                apis.last().expect("a replica")
            } else {
                &apis[i % apis.iter().filter(|a| a.netns.is_none()).count()]
            };
            let ip = if in_netns.is_some() {
                ns_host_ip
            } else {
                "127.0.0.1"
            };
            let labels: BTreeMap<String, String> = [
                (HOST_LABEL.to_string(), name.clone()),
                (
                    "tier".to_string(),
                    if i == 0 { "gold" } else { "silver" }.to_string(),
                ),
            ]
            .into();
            let metrics_addr = format!("{}:{}", "127.0.0.1", free_port()?);
            let id = format!("e2e-{run_id}-{}-{name}", spec.name);
            // Every reachable replica, this host's own first: a worker moves
            // to the next when its replica fails (the partitioned host
            // reaches only the replica beside it).
            let control_planes = if in_netns.is_some() {
                api.grpc_url.clone()
            } else {
                let reachable: Vec<&ApiReplica> =
                    apis.iter().filter(|a| a.netns.is_none()).collect();
                let n = reachable.len();
                (0..n)
                    .map(|k| reachable[(i + k) % n].grpc_url.clone())
                    .collect::<Vec<_>>()
                    .join(",")
            };
            let env_vars = vec![
                ("SKIFF_CONTROL_PLANE".to_string(), control_planes),
                (
                    "SKIFF_AGENT_LISTEN".into(),
                    format!("{ip}:{}", free_port()?),
                ),
                ("SKIFF_HOST_ID".into(), id.clone()),
                ("SKIFF_CONTAINERD_SOCKET".into(), socket.clone()),
                ("SKIFF_CONTAINERD_NAMESPACE".into(), namespace.clone()),
                (
                    "SKIFF_STATE_DIR".into(),
                    dir.join("worker").display().to_string(),
                ),
                ("SKIFF_CPU_MILLIS".into(), HOST_CPU_MILLIS.to_string()),
                ("SKIFF_MEMORY_MIB".into(), HOST_MEMORY_MIB.to_string()),
                (
                    "SKIFF_HOST_LABELS".into(),
                    labels
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(","),
                ),
                (
                    "SKIFF_CHECKPOINT_INTERVAL_S".into(),
                    timers.checkpoint_interval_s.to_string(),
                ),
                ("SKIFF_METRICS_LISTEN".into(), metrics_addr.clone()),
                ("RUST_LOG".into(), "info".into()),
                ("NO_COLOR".into(), "1".into()),
                ("SKIFF_E2E_RUN_DIR".into(), run_dir.display().to_string()),
            ];
            let mut command = Vec::new();
            if let Some(p) = in_netns {
                command.extend(["ip", "netns", "exec", &p.host_netns].map(String::from));
            }
            command.push(worker_bin.display().to_string());
            let worker = Service::spawn("worker", command, env_vars, &dir)?;
            hosts.push(Host {
                name,
                id,
                labels,
                cpu_millis: HOST_CPU_MILLIS,
                memory_mib: HOST_MEMORY_MIB,
                namespace,
                containerd_dir,
                containerd_socket: socket,
                metrics_addr,
                netns: in_netns.map(|p| p.host_netns.clone()),
                worker: Mutex::new(worker),
                lib: lib.clone(),
            });
        }

        let first = &apis[0];
        let api_port = reqwest::Url::parse(&first.url)?.port().unwrap_or(80);
        let mut platform = Platform {
            pool: spec.name,
            api_url: first.url.clone(),
            api_port,
            grpc_url: first.grpc_url.clone(),
            database_url,
            admin_token,
            run_id,
            run_dir,
            apis,
            hosts,
            timers,
            placement: spec.placement,
            postgres,
            partition,
            image: env.image,
            registry: env.registry,
            lib,
            exclusive: RwLock::new(()),
            probe_token: String::new(),
            _reapers: reapers,
        };
        let (_, probe_token) = platform
            .create_tenant(&client, "e2e-harness-probe")
            .await
            .with_context(|| {
                format!(
                    "creating the harness's probe tenant\n{}",
                    platform.logs_dump()
                )
            })?;
        platform.probe_token = probe_token;
        platform
            .wait_hosts_serving(&client)
            .await
            .with_context(|| platform.logs_dump())?;
        eprintln!(
            "skiff e2e pool {} up: api {} hosts {} logs in {}",
            platform.pool,
            platform.api_url,
            platform
                .hosts
                .iter()
                .map(|h| h.id.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            platform.run_dir.display()
        );
        Ok(platform)
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
        let refused = |r: &Result<Option<()>>| matches!(r, Ok(None));
        if results.iter().any(refused) {
            // Placement constraints not accepted yet: one unpinned probe.
            let spec = self.spec(&["echo", "probe"]);
            return match self.run_probe(client, &spec, deadline).await? {
                Some(()) => Ok(()),
                None => bail!("the probe container was refused"),
            };
        }
        for result in results {
            result?;
        }
        Ok(())
    }

    /// The ids of the hosts that are not registered and ready yet.
    async fn hosts_not_ready(&self) -> Result<Vec<String>> {
        let reply = self.admin(Method::GET, "/v1/hosts", None).await?;
        if reply.status == StatusCode::OK {
            let body = reply.json();
            let ready: Vec<&str> = body["items"]
                .as_array()
                .ok_or_else(|| anyhow!("GET /v1/hosts without items: {}", reply.text))?
                .iter()
                .filter(|h| h["state"] == "ready")
                .filter_map(|h| h["id"].as_str())
                .collect();
            return Ok(self
                .hosts
                .iter()
                .filter(|h| !ready.contains(&h.id.as_str()))
                .map(|h| h.id.clone())
                .collect());
        }
        if reply.status != StatusCode::NOT_FOUND && reply.status != StatusCode::METHOD_NOT_ALLOWED {
            bail!("GET /v1/hosts -> {}: {}", reply.status, reply.text);
        }
        // No hosts route yet: the hosts table says who has registered.
        let pool = sqlx::PgPool::connect(&self.database_url).await?;
        let ids: Vec<String> = self.hosts.iter().map(|h| h.id.clone()).collect();
        let registered: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM hosts WHERE id = ANY($1) AND last_heartbeat_at > now() - interval '30 seconds'",
        )
        .bind(&ids)
        .fetch_all(&pool)
        .await?;
        pool.close().await;
        Ok(ids
            .into_iter()
            .filter(|id| !registered.contains(id))
            .collect())
    }

    /// Runs a probe container to `succeeded`. `Ok(None)` when the API
    /// refuses the body (400/422).
    async fn run_probe(
        &self,
        client: &reqwest::Client,
        spec: &Value,
        deadline: Instant,
    ) -> Result<Option<()>> {
        let response = client
            .post(format!("{}/v1/containers", self.api_url))
            .bearer_auth(&self.probe_token)
            .json(spec)
            .send()
            .await?;
        let status = response.status();
        let text = response.text().await?;
        if status == StatusCode::BAD_REQUEST || status == StatusCode::UNPROCESSABLE_ENTITY {
            return Ok(None);
        }
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
                    return Ok(Some(()));
                }
                bail!("probe container did not succeed: {text}");
            }
            if Instant::now() > deadline {
                bail!("probe container did not finish in {STARTUP_TIMEOUT:?}: {status} {text}");
            }
        }
    }
}

/// Starts the pool in `cell` once (on its own thread and runtime: each
/// #[tokio::test] has a runtime that dies with the test, and nothing the pool
/// keeps may belong to one of them).
pub(crate) fn pool(cell: &'static Cell, spec: PoolSpec) -> &'static Platform {
    static REPORTED: Mutex<Vec<&'static str>> = Mutex::new(Vec::new());
    let name = spec.name;
    let started = cell.get_or_init(|| {
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .map_err(|e| format!("tokio runtime: {e}"))?;
            runtime
                .block_on(Platform::start(spec))
                .map_err(|e| format!("{e:#}"))
        })
        .join()
        .unwrap_or_else(|_| Err("pool start-up panicked".into()))
    });
    match started {
        Ok(platform) => platform,
        Err(e) => {
            let mut reported = REPORTED.lock().unwrap_or_else(|p| p.into_inner());
            if reported.contains(&name) {
                panic!("end-to-end pool {name} did not start: see the first failing test")
            }
            reported.push(name);
            panic!("end-to-end pool {name} did not start: {e}")
        }
    }
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

/// The variables test.sh exports.
pub(crate) struct TestEnv {
    database_url: String,
    registry: String,
    image: String,
    state_dir: String,
    /// `SKIFF_TEST_PG_SOCKET_DIR`, when test.sh exports it.
    pg_socket_dir: Option<String>,
    /// `SKIFF_TEST_DEPLOY_LIB`, else this checkout's deploy/local/lib.sh.
    deploy_lib: PathBuf,
}

impl TestEnv {
    pub(crate) fn from_env() -> Result<TestEnv> {
        let names = [
            "SKIFF_TEST_DATABASE_URL",
            "SKIFF_TEST_REGISTRY",
            "SKIFF_TEST_IMAGE",
            "SKIFF_TEST_STATE_DIR",
        ];
        let var = |n: &str| std::env::var(n).ok().filter(|v| !v.is_empty());
        let missing: Vec<&str> = names.iter().copied().filter(|n| var(n).is_none()).collect();
        if !missing.is_empty() {
            bail!(
                "{} not set: the end-to-end tests need the real services; run them with \
                 deploy/local/test.sh (which starts PostgreSQL and the registry and exports these)",
                missing.join(", ")
            );
        }
        let deploy_lib = var("SKIFF_TEST_DEPLOY_LIB")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/local/lib.sh")
            });
        Ok(TestEnv {
            database_url: var("SKIFF_TEST_DATABASE_URL").unwrap_or_default(),
            registry: var("SKIFF_TEST_REGISTRY").unwrap_or_default(),
            image: var("SKIFF_TEST_IMAGE").unwrap_or_default(),
            state_dir: var("SKIFF_TEST_STATE_DIR").unwrap_or_default(),
            pg_socket_dir: var("SKIFF_TEST_PG_SOCKET_DIR"),
            deploy_lib,
        })
    }
}

/// The unix socket directory of test.sh's PostgreSQL:
/// `SKIFF_TEST_PG_SOCKET_DIR`, else what the server itself says.
async fn pg_socket_dir(env: &TestEnv) -> Result<String> {
    if let Some(dir) = &env.pg_socket_dir {
        return Ok(dir.clone());
    }
    use sqlx::Connection as _;
    let mut connection = sqlx::PgConnection::connect(&env.database_url).await?;
    let dirs: String = sqlx::query_scalar("SHOW unix_socket_directories")
        .fetch_one(&mut connection)
        .await?;
    connection.close().await?;
    dirs.split(',')
        .map(str::trim)
        .find(|d| d.starts_with('/'))
        .map(str::to_string)
        .ok_or_else(|| anyhow!("PostgreSQL has no unix socket directory ({dirs:?})"))
}

/// Where `skiff-api` and `skiff-worker` are: `SKIFF_E2E_BIN_DIR`, else the
/// profile directory this test binary runs from (`<target>/debug/deps/..`),
/// which also follows `CARGO_TARGET_DIR`.
fn binary_dir() -> Result<PathBuf> {
    if let Ok(dir) = std::env::var("SKIFF_E2E_BIN_DIR") {
        return Ok(PathBuf::from(dir));
    }
    let exe = std::env::current_exe()?;
    exe.parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .ok_or_else(|| anyhow!("cannot locate the target dir from {}", exe.display()))
}

/// Creates database `name` with the superuser URL and returns its URL.
async fn create_database(superuser_url: &str, name: &str) -> Result<String> {
    use sqlx::Connection as _;
    let mut connection = sqlx::PgConnection::connect(superuser_url)
        .await
        .with_context(|| {
            format!("connecting to {superuser_url} (is deploy/local/test.sh's PostgreSQL up?)")
        })?;
    sqlx::query(&format!("CREATE DATABASE \"{name}\""))
        .execute(&mut connection)
        .await
        .with_context(|| format!("CREATE DATABASE {name}"))?;
    connection.close().await?;
    let mut url = reqwest::Url::parse(superuser_url).context("SKIFF_TEST_DATABASE_URL")?;
    url.set_path(&format!("/{name}"));
    Ok(url.to_string())
}

/// A free loopback port (bound then released; the race is acceptable here).
fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}
