//! How a pool comes up: its database (a new one in test.sh's PostgreSQL, or
//! a cluster of its own), its network namespaces, one containerd per host
//! (lib.sh's `start_containerd`, the test image pulled in before the worker
//! starts), the API replicas, the workers, and the readiness probe (every
//! worker registered and `ready`, and a probe container run on each host).
//!
//! This module owns the order of those steps (`Platform::start`) and the
//! once-per-binary cell that runs it ([`pool`]); each step lives in a
//! submodule of its own.
//!
//! Layout:
//! - [`PoolSpec`]: what a pool consists of.
//! - `Platform::start`: the steps in order, and the pool's network
//!   namespaces.
//! - [`pool`]: starts a pool once per test binary.
//! - `env`: [`TestEnv`] (what test.sh exports), the binaries, free ports.
//! - `database`: the pool's database (a new one, or a cluster of its own).
//! - `hosts`: one containerd per host, the test image, the workers.
//! - `api`: the API replicas and their `/readyz` wait ([`wait_ready`]).
//! - `ready`: the readiness probe of a whole pool.
//! - `trust`: the pool's CA (`skiff-api ca init`) and its join token.

mod api;
mod database;
mod env;
mod hosts;
mod ready;
mod trust;

pub(crate) use api::wait_ready;
pub(crate) use env::{binary_dir, free_port};

use crate::netns::Partition;
use crate::platform::{Cell, Platform, Timers};
use crate::service::Reaper;
use anyhow::{bail, Context, Result};
use api::{start_api_replicas, wait_apis_ready};
use database::start_database;
use env::TestEnv;
use hosts::{pull_test_image, start_hosts_containerd, start_workers};
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;
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
    /// Workers listen on 0.0.0.0 and advertise nothing: they must derive a
    /// dialable agent address themselves (the API refuses 0.0.0.0).
    pub(crate) agent_listen_any: bool,
    /// `SKIFF_HOST_CERT_LIFETIME_S`: short where certificates should be
    /// renewed while tests run.
    pub(crate) cert_lifetime_s: u64,
    /// `SKIFF_IMAGE_DISK_BUDGET_BYTES` of every host (with a short GC
    /// interval and idle time); None: the worker's default.
    pub(crate) image_budget: Option<u64>,
    /// `SKIFF_HOST_LOG_BUDGET_BYTES` of every host; None: no budget.
    pub(crate) log_budget: Option<u64>,
    /// More environment of the pool's API replicas (on top of, and over,
    /// the harness's own).
    pub(crate) api_env: &'static [(&'static str, &'static str)],
}

impl PoolSpec {
    /// One replica, no host, binpack, test.sh's PostgreSQL, no
    /// namespaces, hour-long certificates, no disk budgets: what a pool
    /// changes, it says (`PoolSpec { hosts: 2, ..PoolSpec::base("x") }`).
    pub(crate) const fn base(name: &'static str) -> Self {
        PoolSpec {
            name,
            hosts: 0,
            api_replicas: 1,
            placement: "binpack",
            own_postgres: false,
            partition: false,
            host_lost_after_s: 10.0,
            agent_listen_any: false,
            cert_lifetime_s: 3600,
            image_budget: None,
            log_budget: None,
            api_env: &[],
        }
    }
}

/// What a pool is started with: the skiff binaries and lib.sh (which starts
/// containerd and PostgreSQL).
struct Programs {
    api_bin: PathBuf,
    worker_bin: PathBuf,
    lib: PathBuf,
}

/// Where one pool of this run lives, and what its names are made of.
struct PoolRun {
    /// The run id shared by every pool of this process.
    run_id: String,
    /// The run id's random tail, for names with a length limit (network
    /// namespaces, veths).
    short: String,
    /// `<SKIFF_TEST_STATE_DIR>/e2e-<run>/<pool>`.
    run_dir: PathBuf,
}

impl Platform {
    /// Starts a pool, one step after another. Each step that arms a cleanup
    /// pushes its reaper onto `reapers` in start order, and what already
    /// runs is held in locals declared in start order, so a failing step
    /// drops (stops) the pieces in the same order as ever: the newest locals
    /// first (workers, replicas), the reapers last.
    pub(crate) async fn start(spec: PoolSpec) -> Result<Platform> {
        let env = TestEnv::from_env()?;
        let programs = Programs::locate(&env)?;
        let run = prepare_run_dir(&env, &spec)?;
        let mut reapers = Vec::new();
        let timers = pool_timers(&spec);
        let database = start_database(&env, &spec, &programs.lib, &run, &mut reapers).await?;
        let partition = start_partition(&spec, &run, &mut reapers).await?;
        let host_dirs =
            start_hosts_containerd(&spec, &programs, &run, partition.as_ref(), &mut reapers)
                .await?;
        pull_test_image(&env.image, &host_dirs).await?;
        let admin_token = format!("e2e-admin-{}", uuid::Uuid::new_v4().simple());
        let ca = trust::init_ca(&programs, &run).await?;
        let keyring = trust::init_keyring(&programs, &run, spec.name).await?;
        let apis = start_api_replicas(
            &spec,
            &run,
            &programs,
            &database,
            partition.as_ref(),
            &admin_token,
            &timers,
            (&ca, &keyring),
        )?;
        let client = reqwest::Client::new();
        wait_apis_ready(&client, &apis).await?;
        let join_token =
            trust::create_join_token(&client, &apis[0].url, &admin_token, spec.hosts).await?;
        let hosts = start_workers(
            &spec,
            &run,
            &programs,
            host_dirs,
            &apis,
            partition.as_ref(),
            &timers,
            &ca,
            &join_token,
            &env.registry,
        )?;

        let first = &apis[0];
        let api_port = reqwest::Url::parse(&first.url)?.port().unwrap_or(80);
        let mut platform = Platform {
            pool: spec.name,
            api_url: first.url.clone(),
            api_port,
            grpc_url: first.grpc_url.clone(),
            database_url: database.url,
            admin_token,
            run_id: run.run_id,
            run_dir: run.run_dir,
            apis,
            hosts,
            timers,
            placement: spec.placement,
            postgres: database.postgres,
            partition,
            image: env.image,
            registry: env.registry,
            lib: programs.lib,
            exclusive: RwLock::new(()),
            probe_token: String::new(),
            ca,
            secrets_keyring: keyring,
            api_bin: programs.api_bin,
            join_token,
            _reapers: reapers,
        };
        platform.wait_pool_ready(&client).await?;
        platform.report_up();
        Ok(platform)
    }

    /// Says on stderr where a pool that came up runs and logs.
    fn report_up(&self) {
        eprintln!(
            "skiff e2e pool {} up: api {} hosts {} logs in {}",
            self.pool,
            self.api_url,
            self.hosts
                .iter()
                .map(|h| h.id.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            self.run_dir.display()
        );
    }
}

impl Programs {
    /// Finds the binaries (which must have been built) and lib.sh.
    fn locate(env: &TestEnv) -> Result<Programs> {
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
        Ok(Programs {
            api_bin,
            worker_bin,
            lib,
        })
    }
}

/// Picks this process's run id (once, for every pool) and creates the pool's
/// directory under it.
fn prepare_run_dir(env: &TestEnv, spec: &PoolSpec) -> Result<PoolRun> {
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
    std::fs::create_dir_all(&run_dir).with_context(|| format!("creating {}", run_dir.display()))?;
    Ok(PoolRun {
        run_id,
        short,
        run_dir,
    })
}

/// The API's and workers' timers: short, so tests see heartbeats, placement
/// and checkpoints within seconds.
fn pool_timers(spec: &PoolSpec) -> Timers {
    Timers {
        heartbeat_interval_s: 0.5,
        host_lost_after_s: spec.host_lost_after_s,
        scheduler_tick_s: 0.2,
        checkpoint_interval_s: 1.0,
        cert_lifetime_s: spec.cert_lifetime_s,
    }
}

/// Creates a partitioned pool's network namespaces (after arming their
/// cleanup); `None` for an ordinary pool.
async fn start_partition(
    spec: &PoolSpec,
    run: &PoolRun,
    reapers: &mut Vec<Reaper>,
) -> Result<Option<Partition>> {
    if !spec.partition {
        return Ok(None);
    }
    let short = &run.short;
    // (test.sh cleans up namespaces named $SKIFF_TEST_NETNS_PREFIX* and
    // veths named $SKIFF_TEST_VETH_PREFIX* that a killed run leaves, and
    // keeps the veth prefix short enough for a 15-character name)
    let netns = std::env::var("SKIFF_TEST_NETNS_PREFIX").unwrap_or_else(|_| "skiff-e2e-".into());
    let veth = std::env::var("SKIFF_TEST_VETH_PREFIX").unwrap_or_else(|_| "ske2e".into());
    let partition = Partition {
        api_netns: format!("{netns}{short}-api"),
        host_netns: format!("{netns}{short}-h{}", spec.hosts),
        api_veth: format!("{veth}{short}a"),
        host_veth: format!("{veth}{short}h"),
    };
    reapers.push(Reaper::spawn(
        format!(
            "ip netns del {} 2>/dev/null; ip netns del {} 2>/dev/null; true",
            partition.api_netns, partition.host_netns
        ),
        &run.run_dir.join("reaper.log"),
    )?);
    partition.create().await?;
    Ok(Some(partition))
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
