//! skiff-e2e: the end-to-end harness. It starts the real services once per
//! test binary (a fresh PostgreSQL database, `skiff-api`, `skiff-worker`
//! against the private containerd that `deploy/local/test.sh` runs) and gives
//! each test its own tenant with small helpers over the REST API.
//!
//! Layout:
//! - [`Platform`]: the running services, shared by every test of the binary
//!   (`Platform::get()`), plus out-of-band tools (`ctr`, log tails, worker
//!   SIGKILL and respawn).
//! - [`Tenant`]: one tenant's HTTP client and the container helpers (create,
//!   wait, logs, events, stop/start/restart/delete, diagnostics).
//!
//! Environment (exported by `deploy/local/test.sh`): `SKIFF_TEST_DATABASE_URL`
//! (a superuser URL; the harness creates its own database from it),
//! `SKIFF_TEST_CONTAINERD_SOCKET`, `SKIFF_TEST_REGISTRY`, `SKIFF_TEST_IMAGE`,
//! `SKIFF_TEST_STATE_DIR`. Without them every test fails with a message that
//! says to run that script, unless `SKIFF_E2E_SKIP=1`.
//!
//! Process lifetime: statics are never dropped, so the harness cannot kill
//! its children from a destructor, and `PR_SET_PDEATHSIG` would need unsafe
//! code. Each service is therefore started under a tiny `sh` wrapper whose
//! stdin is a pipe held by this test process: when the test process exits
//! (normally, by panic or by SIGKILL) the kernel closes the pipe, the
//! wrapper's watchdog reads EOF and sends the service SIGTERM, then SIGKILL.
//! The service pids are also written to `<run dir>/api.pid` and
//! `<run dir>/worker.pid` for any outside cleanup. Containers left running
//! by a failed test stay in the run's own containerd namespace
//! (`skiff-e2e-<run>`); the private containerd that test.sh runs is
//! disposable, and so is the run's database `skiff_e2e_<pid>_<rand>`.
//!
//! Disruptive tests (the worker SIGKILL) take the platform exclusively:
//! [`Platform::new_tenant`] holds a shared lock for the life of the
//! [`Tenant`], [`Platform::new_exclusive_tenant`] an exclusive one, so a
//! worker restart never lands in the middle of another test.

use anyhow::{anyhow, bail, Context, Result};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use tokio::sync::{Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// How long the services get to come up (the first run also pulls the image).
const STARTUP_TIMEOUT: Duration = Duration::from_secs(90);

/// The wrapper that ties a service's life to this test process (see the
/// crate docs). `$1` is the pid file, the rest is the service command line.
const WRAPPER: &str = r#"
pidfile=$1; shift
exec 3<&0
"$@" 3<&- </dev/null &
svc=$!
echo "$svc" > "$pidfile"
( read -r _ <&3; kill -TERM "$svc" 2>/dev/null; sleep 5; kill -KILL "$svc" 2>/dev/null ) &
watchdog=$!
exec 3<&-
wait "$svc"
rc=$?
kill "$watchdog" 2>/dev/null
exit "$rc"
"#;

static PLATFORM: OnceLock<Result<Platform, String>> = OnceLock::new();
static START_ERROR_REPORTED: AtomicBool = AtomicBool::new(false);

/// The services under test, started once per test binary.
pub struct Platform {
    /// `http://127.0.0.1:<port>` of the REST API.
    pub api_url: String,
    /// Port of the REST API (tests check a container cannot reach it).
    pub api_port: u16,
    /// The run's own database (tests that tamper with rows use it).
    pub database_url: String,
    /// The control plane's worker endpoint (tests that re-send reports use it).
    pub grpc_url: String,
    admin_token: String,
    /// Identifies this run in names: database, namespace, host id.
    pub run_id: String,
    /// `<SKIFF_TEST_STATE_DIR>/e2e-<run>`: logs, pid files, worker state.
    pub run_dir: PathBuf,
    pub containerd_socket: String,
    /// The worker's containerd namespace.
    pub namespace: String,
    /// The worker's host id as the API reports it in `host_id`.
    pub host_id: String,
    image: String,
    registry: String,
    api: std::sync::Mutex<Service>,
    worker: Mutex<Service>,
    worker_env: Vec<(String, String)>,
    /// Held shared by ordinary tests, exclusively by disruptive ones.
    exclusive: RwLock<()>,
    /// A tenant of the harness itself, for readiness probes.
    probe_token: String,
}

/// A spawned wrapper and where its service's pid and log live.
struct Service {
    name: &'static str,
    wrapper: Child,
    pid_file: PathBuf,
    log_file: PathBuf,
}

impl Platform {
    /// The shared platform, started on first use. Returns `None` (and says
    /// so) when `SKIFF_E2E_SKIP=1`; panics with the start-up error otherwise.
    pub async fn get() -> Option<&'static Platform> {
        if std::env::var("SKIFF_E2E_SKIP").as_deref() == Ok("1") {
            eprintln!("skipping end-to-end test: SKIFF_E2E_SKIP=1");
            return None;
        }
        // Start-up runs on its own thread and runtime: each #[tokio::test]
        // has a runtime that dies with the test, and nothing the platform
        // keeps may belong to one of them. Blocking this test's thread while
        // it starts is fine; the other tests wait on the same OnceLock.
        let started = PLATFORM.get_or_init(|| {
            std::thread::spawn(|| {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| format!("tokio runtime: {e}"))?;
                runtime
                    .block_on(Platform::start())
                    .map_err(|e| format!("{e:#}"))
            })
            .join()
            .unwrap_or_else(|_| Err("platform start-up panicked".into()))
        });
        match started {
            Ok(platform) => Some(platform),
            // The whole error once; the other tests point at it.
            Err(e) if !START_ERROR_REPORTED.swap(true, Ordering::SeqCst) => {
                panic!("end-to-end platform did not start: {e}")
            }
            Err(_) => panic!("end-to-end platform did not start: see the first failing test"),
        }
    }

    async fn start() -> Result<Platform> {
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

        let rand = uuid::Uuid::new_v4().simple().to_string();
        let short = &rand[..8];
        let pid = std::process::id();
        let run_id = format!("{pid}-{short}");
        let run_dir = PathBuf::from(&env.state_dir).join(format!("e2e-{run_id}"));
        std::fs::create_dir_all(run_dir.join("worker"))
            .with_context(|| format!("creating {}", run_dir.display()))?;

        let database_url =
            create_database(&env.database_url, &format!("skiff_e2e_{pid}_{short}")).await?;

        let api_port = free_port()?;
        let grpc_port = free_port()?;
        let agent_port = free_port()?;
        let admin_token = format!("e2e-admin-{}", uuid::Uuid::new_v4().simple());
        let api_url = format!("http://127.0.0.1:{api_port}");
        let namespace = format!("skiff-e2e-{short}");
        let host_id = format!("e2e-host-{run_id}");

        let api_env = vec![
            ("SKIFF_LISTEN".into(), format!("127.0.0.1:{api_port}")),
            ("SKIFF_GRPC_LISTEN".into(), format!("127.0.0.1:{grpc_port}")),
            ("SKIFF_DATABASE_URL".into(), database_url.clone()),
            ("SKIFF_ADMIN_TOKEN".into(), admin_token.clone()),
            ("RUST_LOG".into(), "info".into()),
            ("NO_COLOR".into(), "1".into()),
        ];
        let api = Service::spawn("api", &api_bin, &api_env, &run_dir)?;
        let api = std::sync::Mutex::new(api);

        let client = reqwest::Client::new();
        wait_ready(&client, &api_url, &api).await?;

        let worker_env = vec![
            (
                "SKIFF_CONTROL_PLANE".into(),
                format!("http://127.0.0.1:{grpc_port}"),
            ),
            (
                "SKIFF_AGENT_LISTEN".into(),
                format!("127.0.0.1:{agent_port}"),
            ),
            ("SKIFF_HOST_ID".into(), host_id.clone()),
            (
                "SKIFF_CONTAINERD_SOCKET".into(),
                env.containerd_socket.clone(),
            ),
            ("SKIFF_CONTAINERD_NAMESPACE".into(), namespace.clone()),
            (
                "SKIFF_STATE_DIR".into(),
                run_dir.join("worker").display().to_string(),
            ),
            ("SKIFF_CPU_MILLIS".into(), "64000".into()),
            ("SKIFF_MEMORY_MIB".into(), "65536".into()),
            ("RUST_LOG".into(), "info".into()),
            ("NO_COLOR".into(), "1".into()),
        ];
        let worker = Service::spawn("worker", &worker_bin, &worker_env, &run_dir)?;

        let mut platform = Platform {
            api_url,
            api_port,
            database_url,
            grpc_url: format!("http://127.0.0.1:{grpc_port}"),
            admin_token,
            run_id,
            run_dir,
            containerd_socket: env.containerd_socket,
            namespace,
            host_id,
            image: env.image,
            registry: env.registry,
            api,
            worker: Mutex::new(worker),
            worker_env,
            exclusive: RwLock::new(()),
            probe_token: String::new(),
        };
        let (_, probe_token) = platform
            .create_tenant(&client, "e2e-harness-probe")
            .await
            .context("creating the harness's probe tenant")?;
        platform.probe_token = probe_token;
        platform
            .probe_worker(&client)
            .await
            .with_context(|| platform.logs_dump())?;
        eprintln!(
            "skiff e2e platform up: api {} namespace {} logs in {}",
            platform.api_url,
            platform.namespace,
            platform.run_dir.display()
        );
        Ok(platform)
    }

    /// The test image (busybox-static: sh, echo, sleep, cat, wget, ...).
    pub fn image(&self) -> &str {
        &self.image
    }

    /// The loopback registry, `127.0.0.1:<port>`.
    pub fn registry(&self) -> &str {
        &self.registry
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

    /// [`Platform::spec`] for `sh -c <script>`.
    pub fn sh(&self, script: &str) -> Value {
        self.spec(&["sh", "-c", script])
    }

    /// A fresh tenant for one test. It holds the platform shared until it
    /// is dropped, so exclusive tests wait for it.
    pub async fn new_tenant(&'static self) -> Tenant {
        let guard = self.exclusive.read().await;
        self.tenant_with(Some(guard), None).await
    }

    /// A fresh tenant that holds the platform exclusively: for tests that
    /// disrupt the services (worker SIGKILL). Other tests wait meanwhile.
    pub async fn new_exclusive_tenant(&'static self) -> Tenant {
        let guard = self.exclusive.write().await;
        self.tenant_with(None, Some(guard)).await
    }

    async fn tenant_with(
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
            _shared: shared,
            _exclusive: exclusive,
        }
    }

    /// POST /v1/tenants with the admin token; returns (id, token).
    async fn create_tenant(
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

    /// The admin token, for tests of the tenant route itself.
    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    /// Proves a worker serves this platform: a short `echo` container runs
    /// to `succeeded` (this also warms the image cache for the tests).
    async fn probe_worker(&self, client: &reqwest::Client) -> Result<()> {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let response = client
            .post(format!("{}/v1/containers", self.api_url))
            .bearer_auth(&self.probe_token)
            .json(&self.spec(&["echo", "probe"]))
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
            if let Ok(Some(exit)) = self.worker.lock().await.wrapper.try_wait() {
                bail!("the worker exited during start-up: {exit}");
            }
        }
    }

    /// SIGKILLs the worker process (containerd shims keep the containers
    /// running), respawns it with the same environment, and waits until it
    /// serves again (a probe container succeeds). Call it only from a test
    /// holding [`Platform::new_exclusive_tenant`].
    pub async fn restart_worker_with_sigkill(&self) {
        assert!(
            self.exclusive.try_read().is_err(),
            "restart_worker_with_sigkill needs an exclusive tenant (Platform::new_exclusive_tenant)"
        );
        let mut worker = self.worker.lock().await;
        let pid = worker
            .pid()
            .unwrap_or_else(|e| panic!("worker pid: {e:#}\n{}", self.logs_dump()));
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap_or_else(|e| panic!("SIGKILL worker pid {pid}: {e}"));
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match worker.wrapper.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                other => panic!("worker wrapper did not exit after SIGKILL: {other:?}"),
            }
        }
        let _ = std::fs::remove_file(&worker.pid_file);
        let bin = binary_dir().expect("binary dir").join("skiff-worker");
        *worker = Service::spawn("worker", &bin, &self.worker_env, &self.run_dir)
            .unwrap_or_else(|e| panic!("respawning the worker: {e:#}"));
        drop(worker);
        let client = reqwest::Client::new();
        if let Err(e) = self.probe_worker(&client).await {
            panic!(
                "worker did not come back after SIGKILL: {e:#}\n{}",
                self.logs_dump()
            );
        }
    }

    /// The pid of the containerd task whose id contains `container_id`, as
    /// `ctr tasks ls` shows it in the worker's namespace. Panics with the
    /// table if there is none.
    pub async fn ctr_task_pid(&self, container_id: &str) -> u32 {
        let table = self.ctr(&["tasks", "ls"]).await;
        table
            .lines()
            .skip(1)
            .find_map(|line| {
                let mut columns = line.split_whitespace();
                let task = columns.next()?;
                let pid = columns.next()?;
                task.contains(container_id)
                    .then(|| pid.parse::<u32>().ok())?
            })
            .unwrap_or_else(|| {
                panic!(
                    "no containerd task for {container_id} in namespace {}:\n{table}",
                    self.namespace
                )
            })
    }

    /// The containerd container ids in the worker's namespace.
    pub async fn ctr_container_ids(&self) -> Vec<String> {
        self.ctr(&["containers", "ls", "-q"])
            .await
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty())
            .map(str::to_string)
            .collect()
    }

    /// Runs `ctr --address <socket> -n <namespace> <args>`; panics on failure.
    pub async fn ctr(&self, args: &[&str]) -> String {
        let output = tokio::process::Command::new("ctr")
            .arg("--address")
            .arg(&self.containerd_socket)
            .arg("-n")
            .arg(&self.namespace)
            .args(args)
            .output()
            .await
            .unwrap_or_else(|e| panic!("running ctr {args:?}: {e}"));
        assert!(
            output.status.success(),
            "ctr {args:?} failed: {}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// The last lines of the api and worker logs, for assertion messages.
    pub fn logs_dump(&self) -> String {
        self.logs_dump_matching(None)
    }

    /// Like [`Platform::logs_dump`], plus the log lines that mention `needle`.
    pub fn logs_dump_matching(&self, needle: Option<&str>) -> String {
        let mut out = String::new();
        // A service that died explains most failures: say so first.
        if let Ok(mut api) = self.api.lock() {
            if let Ok(Some(exit)) = api.wrapper.try_wait() {
                let _ = writeln!(out, "!!! the api process has exited: {exit}");
            }
        }
        if let Ok(mut worker) = self.worker.try_lock() {
            if let Ok(Some(exit)) = worker.wrapper.try_wait() {
                let _ = writeln!(out, "!!! the worker process has exited: {exit}");
            }
        }
        for (name, file) in [
            ("api", self.run_dir.join("api.log")),
            ("worker", self.run_dir.join("worker.log")),
        ] {
            let text = std::fs::read_to_string(&file).unwrap_or_else(|e| format!("({e})"));
            let lines: Vec<&str> = text.lines().collect();
            if let Some(needle) = needle {
                let hits: Vec<&str> = lines
                    .iter()
                    .copied()
                    .filter(|l| l.contains(needle))
                    .collect();
                let from = hits.len().saturating_sub(40);
                let _ = writeln!(
                    out,
                    "--- {name} log lines mentioning {needle} ({}):",
                    file.display()
                );
                for line in &hits[from..] {
                    let _ = writeln!(out, "{line}");
                }
            }
            let from = lines.len().saturating_sub(30);
            let _ = writeln!(out, "--- {name} log tail ({}):", file.display());
            for line in &lines[from..] {
                let _ = writeln!(out, "{line}");
            }
        }
        out
    }

    /// The full text of the api and worker logs (to check nothing leaks).
    pub fn service_logs(&self) -> String {
        ["api.log", "worker.log"]
            .iter()
            .map(|f| std::fs::read_to_string(self.run_dir.join(f)).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Service {
    /// Starts `bin` under the watchdog wrapper with `env` (and no other
    /// `SKIFF_*` variable from the caller's environment), appending its
    /// output to `<run dir>/<name>.log`.
    fn spawn(
        name: &'static str,
        bin: &Path,
        env: &[(String, String)],
        run_dir: &Path,
    ) -> Result<Service> {
        let log_file = run_dir.join(format!("{name}.log"));
        let pid_file = run_dir.join(format!("{name}.pid"));
        let _ = std::fs::remove_file(&pid_file);
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_file)
            .with_context(|| format!("opening {}", log_file.display()))?;
        writeln!(log, "=== skiff-e2e: starting {}", bin.display())?;
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(WRAPPER)
            .arg("skiff-e2e-wrapper")
            .arg(&pid_file)
            .arg(bin)
            .stdin(Stdio::piped())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log));
        for (key, _) in std::env::vars() {
            if key.starts_with("SKIFF_") {
                command.env_remove(key);
            }
        }
        command.envs(env.iter().map(|(k, v)| (k, v)));
        let wrapper = command
            .spawn()
            .with_context(|| format!("spawning {}", bin.display()))?;
        let mut service = Service {
            name,
            wrapper,
            pid_file,
            log_file,
        };
        // Wait for the wrapper to write the service's pid.
        let deadline = Instant::now() + Duration::from_secs(10);
        while service.pid().is_err() {
            if Instant::now() > deadline {
                bail!("{name} wrapper wrote no pid file");
            }
            if let Some(exit) = service.wrapper.try_wait()? {
                bail!(
                    "{name} exited at once ({exit}): {}",
                    tail(&service.log_file, 30)
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(service)
    }

    fn pid(&self) -> Result<i32> {
        let text = std::fs::read_to_string(&self.pid_file)?;
        text.trim()
            .parse()
            .with_context(|| format!("pid file {} holds {text:?}", self.pid_file.display()))
    }
}

/// Polls GET /readyz until 200, failing early if the API exits.
async fn wait_ready(
    client: &reqwest::Client,
    api_url: &str,
    api: &std::sync::Mutex<Service>,
) -> Result<()> {
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    loop {
        let last = match client
            .get(format!("{api_url}/readyz"))
            .timeout(Duration::from_secs(5))
            .send()
            .await
        {
            Ok(r) if r.status() == StatusCode::OK => return Ok(()),
            Ok(r) => format!("status {}", r.status()),
            Err(e) => format!("{e}"),
        };
        {
            let mut api = api.lock().expect("api mutex");
            if let Some(exit) = api.wrapper.try_wait()? {
                bail!(
                    "{} exited during start-up ({exit}):\n{}",
                    api.name,
                    tail(&api.log_file, 40)
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "GET /readyz not 200 after {STARTUP_TIMEOUT:?} (last: {last}):\n{}",
                    tail(&api.log_file, 40)
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn tail(file: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The variables test.sh exports.
struct TestEnv {
    database_url: String,
    containerd_socket: String,
    registry: String,
    image: String,
    state_dir: String,
}

impl TestEnv {
    fn from_env() -> Result<TestEnv> {
        let names = [
            "SKIFF_TEST_DATABASE_URL",
            "SKIFF_TEST_CONTAINERD_SOCKET",
            "SKIFF_TEST_REGISTRY",
            "SKIFF_TEST_IMAGE",
            "SKIFF_TEST_STATE_DIR",
        ];
        let values: Vec<Option<String>> = names
            .iter()
            .map(|n| std::env::var(n).ok().filter(|v| !v.is_empty()))
            .collect();
        let missing: Vec<&str> = names
            .iter()
            .zip(&values)
            .filter(|(_, v)| v.is_none())
            .map(|(n, _)| *n)
            .collect();
        if !missing.is_empty() {
            bail!(
                "{} not set: the end-to-end tests need the real services; run them with \
                 deploy/local/test.sh (which starts PostgreSQL, containerd and the registry \
                 and exports these), or set SKIFF_E2E_SKIP=1 to skip them",
                missing.join(", ")
            );
        }
        let mut values = values.into_iter().map(Option::unwrap_or_default);
        let mut next = || values.next().unwrap_or_default();
        Ok(TestEnv {
            database_url: next(),
            containerd_socket: next(),
            registry: next(),
            image: next(),
            state_dir: next(),
        })
    }
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

/// One tenant of the platform with its own HTTP client.
pub struct Tenant {
    pub id: String,
    pub name: String,
    pub token: String,
    /// Built inside the test's runtime (pooled connections belong to it).
    pub client: reqwest::Client,
    pub platform: &'static Platform,
    _shared: Option<RwLockReadGuard<'static, ()>>,
    _exclusive: Option<RwLockWriteGuard<'static, ()>>,
}

/// A response read to the end, for assertions.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub content_type: String,
    pub text: String,
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
        format!("{}{path}", self.platform.api_url)
    }

    /// Any authenticated request; the body, if any, is sent as JSON.
    pub async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> Reply {
        let mut request = self
            .client
            .request(method.clone(), self.url(path))
            .bearer_auth(&self.token);
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
        let deadline = Instant::now() + Duration::from_secs(timeout_s);
        loop {
            let object = self.get(id).await;
            if done(&object) {
                return object;
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out waiting for {what} on {id}\n{}",
                    self.diag(id).await
                );
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

    /// DELETE /v1/containers/{id}, asserting 204.
    pub async fn delete(&self, id: &str) {
        let reply = self
            .call(Method::DELETE, &format!("/v1/containers/{id}"), None)
            .await;
        if reply.status != StatusCode::NO_CONTENT {
            panic!("delete {id}: {reply:?}\n{}", self.diag(id).await);
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

async fn read_reply(response: reqwest::Response) -> Reply {
    let status = response.status();
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
