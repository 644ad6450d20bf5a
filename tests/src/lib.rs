//! skiff-e2e: the end-to-end harness. It starts real pools once per test
//! binary (API replicas on a fresh PostgreSQL database, hosts made of a
//! private containerd each plus a `skiff-worker`) and gives each test its own
//! tenant with small helpers over the REST API, and the out-of-band tools
//! fault tests need (ctr per host, SIGKILL and respawn of workers, API
//! replicas and containerd, PostgreSQL stop/start, a cuttable link).
//!
//! Layout:
//! - [`platform`]: [`Platform`], one pool (replicas, hosts, timers, the
//!   exclusive lock, admin routes, logs), and the pools of a run.
//! - `startup`: how a pool comes up, and its readiness probe.
//! - [`host`]: [`Host`], one containerd + worker, and its tools.
//! - [`postgres`]: a pool's own PostgreSQL cluster (stop, start again).
//! - [`registry`]: the test registry behind basic auth, and its login.
//! - [`netns`]: a partitioned pool's network namespaces and link.
//! - [`tenant`]: [`Tenant`] and [`Reply`], one tenant's requests.
//! - [`service`]: child processes tied to the test process's life.
//! - [`trust`]: credentials and clients for tests that speak the worker
//!   channel themselves.
//! - [`limit`]: every test's own time limit.
//!
//! Environment (exported by `deploy/local/test.sh`): `SKIFF_TEST_DATABASE_URL`
//! (a superuser URL; the harness creates its own databases from it),
//! `SKIFF_TEST_REGISTRY`, `SKIFF_TEST_IMAGE`, `SKIFF_TEST_STATE_DIR`, the
//! registries with auth ([`registry`]: `SKIFF_TEST_AUTH_REGISTRY`,
//! `SKIFF_TEST_TOKEN_REGISTRY`, `SKIFF_TEST_TOKEN_SERVER`, and their login
//! `SKIFF_TEST_AUTH_REGISTRY_USER`, `SKIFF_TEST_AUTH_REGISTRY_PASSWORD`), and when
//! present `SKIFF_TEST_PG_SOCKET_DIR` (else asked of PostgreSQL) and
//! `SKIFF_TEST_DEPLOY_LIB` (else this checkout's `deploy/local/lib.sh`).
//! Without them every test fails with a message that says to run that
//! script: there is no way to skip silently.
//!
//! Everything a run starts lives under `<SKIFF_TEST_STATE_DIR>/e2e-<run>/`
//! (one folder per pool, one per host), and dies with the test process (see
//! [`service`]).

pub mod host;
pub mod netns;
pub mod platform;
pub mod postgres;
pub mod registry;
pub mod service;
mod startup;
pub mod tenant;
pub mod trust;

pub use host::{metric_series, metric_sum, Host, Task};
pub use platform::{
    ExtraApi, Platform, Timers, DENIED_REGISTRY, DENIED_REGISTRY_NET, HOST_CPU_MILLIS, HOST_LABEL,
    HOST_MEMORY_MIB, IMAGE_MIN_IDLE_S, LOG_GC_INTERVAL_S, LOG_MAX_BYTES, PIDS_LIMIT,
    REDIRECTING_REGISTRY_HOST, SPREAD_IMAGE_BUDGET, SPREAD_LOG_BUDGET, VERIFY_MIN_INTERVAL_S,
};
pub use tenant::{id_of, unique, Reply, Tenant};

use std::fmt::Write as _;
use std::future::Future;
use std::task::Poll;
use std::time::Duration;

tokio::task_local! {
    /// When the running test's clock started (see [`limit`]).
    static CLOCK: std::cell::Cell<Option<std::time::Instant>>;
}

/// Polls `check` every 200 ms until it gives `Some`, or panics after
/// `within` naming `what`. For conditions no route can wait on.
pub async fn eventually<T, F, Fut>(what: &str, within: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + within;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if std::time::Instant::now() > deadline {
            panic!("timed out after {within:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Runs one test's body within `within`, or panics naming the test (libtest
/// names the thread after it) with the logs of every pool started so far.
///
/// The clock starts when the test gets its tenant (the shared or exclusive
/// lock of its pool: waiting behind an exclusive test is not the test's own
/// time), or, for a test without one, after the body's first poll (starting
/// a pool blocks inside that first poll, and that time is the run's).
pub async fn limit<F: Future>(within: Duration, test: F) -> F::Output {
    let name = std::thread::current()
        .name()
        .unwrap_or("an e2e test")
        .to_string();
    CLOCK
        .scope(std::cell::Cell::new(None), async move {
            let mut test = std::pin::pin!(test);
            let first = std::future::poll_fn(|cx| Poll::Ready(test.as_mut().poll(cx))).await;
            if let Poll::Ready(output) = first {
                return output;
            }
            if CLOCK.with(|c| c.get()).is_none() {
                start_clock();
            }
            loop {
                let started = CLOCK
                    .with(|c| c.get())
                    .unwrap_or_else(std::time::Instant::now);
                if started.elapsed() > within {
                    let mut logs = String::new();
                    for pool in platform::started_pools() {
                        let _ = writeln!(logs, "===== pool {}:\n{}", pool.pool, pool.logs_dump());
                    }
                    panic!("{name} exceeded its time limit of {within:?}\n{logs}")
                }
                tokio::select! {
                    output = test.as_mut() => return output,
                    // Re-reads the clock: getting a tenant restarts it.
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
            }
        })
        .await
}

/// (Re)starts the running test's clock, if it runs under [`limit`].
pub(crate) fn start_clock() {
    let _ = CLOCK.try_with(|c| c.set(Some(std::time::Instant::now())));
}

/// `Duration::from_secs`, for test limits.
pub const fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// The manifest digest the registry serves for `image` (`host:port/repo:tag`).
pub async fn registry_digest(image: &str) -> String {
    let (host, rest) = image.split_once('/').expect("image has a registry host");
    let (repo, tag) = rest.rsplit_once(':').unwrap_or((rest, "latest"));
    let response = reqwest::Client::new()
        .head(format!("http://{host}/v2/{repo}/manifests/{tag}"))
        .header(
            reqwest::header::ACCEPT,
            "application/vnd.oci.image.manifest.v1+json, \
             application/vnd.docker.distribution.manifest.v2+json, \
             application/vnd.oci.image.index.v1+json, \
             application/vnd.docker.distribution.manifest.list.v2+json",
        )
        .send()
        .await
        .expect("registry HEAD manifest");
    assert!(response.status().is_success(), "registry: {response:?}");
    response.headers()["docker-content-digest"]
        .to_str()
        .expect("digest header")
        .to_string()
}

/// Builds and pushes a busybox image with one extra layer of `extra_mib`
/// MiB (deploy/local/build-image.sh: deterministic, so the same arguments
/// give the same digest) as `<registry>/<repo_tag>`; returns the reference.
pub async fn push_extra_image(platform: &Platform, repo_tag: &str, extra_mib: u32) -> String {
    build_and_push(
        platform,
        repo_tag,
        &["--extra-layers", &extra_mib.to_string()],
    )
    .await
}

/// Builds and pushes a busybox image whose config's `User` is `user`, as
/// `<registry>/<repo_tag>`; returns the reference. It has a 1 MiB layer
/// above the base, so its /etc/passwd is read from a lower layer.
pub async fn push_user_image(platform: &Platform, repo_tag: &str, user: &str) -> String {
    build_and_push(platform, repo_tag, &["--extra-layers", "1", "--user", user]).await
}

/// Runs deploy/local/build-image.sh for `repo_tag` with `args`.
async fn build_and_push(platform: &Platform, repo_tag: &str, args: &[&str]) -> String {
    let script = platform.deploy_lib().with_file_name("build-image.sh");
    let output = tokio::process::Command::new("bash")
        .arg(&script)
        .arg(platform.registry())
        .arg(repo_tag)
        .args(args)
        .output()
        .await
        .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
    assert!(
        output.status.success(),
        "build-image.sh {repo_tag}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    format!("{}/{repo_tag}", platform.registry())
}
