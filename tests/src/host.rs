//! One host of a pool: its own containerd (started with lib.sh's
//! `start_containerd` under the run dir), its own containerd namespace and a
//! `skiff-worker`, plus the out-of-band tools the fault tests use on it.
//!
//! Layout:
//! - [`Host`]: what a host is (id, capacity, labels, containerd socket and
//!   namespace, worker) and its tools: `ctr`, task pids, worker SIGKILL and
//!   respawn, containerd SIGKILL and restart, the worker's `/metrics`.
//! - [`Task`]: one row of `ctr tasks ls`.

use crate::service::{lib_sh, quote, Service};
use anyhow::{anyhow, bail, Context, Result};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One host: a containerd and a worker, as the API sees them in `host_id`.
pub struct Host {
    /// Short name inside the pool: `h1`, `h2`, ...
    pub name: String,
    /// The id the worker registers (`e2e-<run>-<pool>-h1`).
    pub id: String,
    /// Labels the worker announces (`SKIFF_HOST_LABELS`).
    pub labels: BTreeMap<String, String>,
    /// Capacity offered to the scheduler.
    pub cpu_millis: u64,
    pub memory_mib: u64,
    /// The worker's containerd namespace (unique per host: runc's state dir
    /// `/run/containerd/runc/<namespace>` is shared between containerds).
    pub namespace: String,
    /// lib.sh's DIR of this host's containerd (`containerd.pid`, config).
    pub containerd_dir: PathBuf,
    pub containerd_socket: String,
    /// `host:port` of the worker's Prometheus endpoint (inside `netns` if set).
    pub metrics_addr: String,
    /// The network namespace the worker runs in, if any (partition pool).
    pub netns: Option<String>,
    /// Its private-network settings (`SKIFF_NETWORK_*`, `SKIFF_PORT_RANGE`).
    pub net: HostNet,
    /// The worker's `SKIFF_AGENT_LISTEN`.
    pub agent_listen: String,
    pub(crate) worker: Mutex<Service>,
    pub(crate) lib: PathBuf,
    /// The worker's `SKIFF_STATE_DIR` (its key and certificate are in
    /// `identity/host.pem`).
    pub state_dir: PathBuf,
}

/// A host's private-network settings, unique on the machine.
#[derive(Debug, Clone)]
pub struct HostNet {
    /// `SKIFF_NETWORK_BRIDGE` (also names its nft tables and namespaces).
    pub bridge: String,
    /// `SKIFF_NETWORK_SUBNET`, a /24.
    pub subnet: String,
    /// The bridge's own address: the host as its containers see it.
    pub gateway: String,
    /// `SKIFF_PORT_RANGE`, inclusive.
    pub port_range: (u16, u16),
    /// `SKIFF_NETWORK_RUN_DIR` joined with the bridge.
    pub run_dir: PathBuf,
}

/// One row of `ctr tasks ls`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    pub id: String,
    pub pid: u32,
    pub status: String,
}

impl Host {
    /// Runs `ctr --address <socket> -n <namespace> <args>`; panics on failure.
    pub async fn ctr(&self, args: &[&str]) -> String {
        self.try_ctr(args)
            .await
            .unwrap_or_else(|e| panic!("{}: {e:#}", self.name))
    }

    /// Like [`Host::ctr`], returning the failure.
    pub async fn try_ctr(&self, args: &[&str]) -> Result<String> {
        let output = tokio::process::Command::new("timeout")
            .arg("30")
            .arg("ctr")
            .arg("--address")
            .arg(&self.containerd_socket)
            .arg("-n")
            .arg(&self.namespace)
            .args(args)
            .output()
            .await
            .with_context(|| format!("running ctr {args:?}"))?;
        if !output.status.success() {
            bail!(
                "ctr {args:?} on {} failed: {}\n{}",
                self.name,
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Every task in this host's namespace.
    pub async fn tasks(&self) -> Vec<Task> {
        let table = self.ctr(&["tasks", "ls"]).await;
        table
            .lines()
            .skip(1)
            .filter_map(|line| {
                let mut columns = line.split_whitespace();
                Some(Task {
                    id: columns.next()?.to_string(),
                    pid: columns.next()?.parse().ok()?,
                    status: columns.next().unwrap_or("").to_string(),
                })
            })
            .collect()
    }

    /// The task whose id contains `container_id`, if this host has one.
    pub async fn task_of(&self, container_id: &str) -> Option<Task> {
        self.tasks()
            .await
            .into_iter()
            .find(|t| t.id.contains(container_id))
    }

    /// The pid of the task of `container_id`; panics with the table if there
    /// is none on this host.
    pub async fn task_pid(&self, container_id: &str) -> u32 {
        match self.task_of(container_id).await {
            Some(task) => task.pid,
            None => panic!(
                "no containerd task for {container_id} on {} (namespace {}):\n{}",
                self.name,
                self.namespace,
                self.ctr(&["tasks", "ls"]).await
            ),
        }
    }

    /// The containerd container ids in this host's namespace.
    pub async fn container_ids(&self) -> Vec<String> {
        self.ctr(&["containers", "ls", "-q"])
            .await
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty())
            .map(str::to_string)
            .collect()
    }

    /// The worker's pid.
    pub fn worker_pid(&self) -> i32 {
        self.worker
            .lock()
            .expect("worker mutex")
            .pid()
            .unwrap_or_else(|e| panic!("{} worker pid: {e:#}", self.name))
    }

    /// SIGKILLs the worker (containerd's shims keep the containers running).
    pub fn kill_worker(&self) {
        self.worker
            .lock()
            .expect("worker mutex")
            .kill9()
            .unwrap_or_else(|e| panic!("{}: {e:#}", self.name));
    }

    /// Starts the worker again with the same environment.
    pub fn respawn_worker(&self) {
        self.worker
            .lock()
            .expect("worker mutex")
            .respawn()
            .unwrap_or_else(|e| panic!("respawning the worker of {}: {e:#}", self.name));
    }

    /// `Some(exit)` if the worker process has exited.
    pub fn worker_exited(&self) -> Option<std::process::ExitStatus> {
        self.worker.lock().ok()?.exited()
    }

    /// The pid of this host's containerd (from its pid file).
    pub fn containerd_pid(&self) -> i32 {
        let file = self.containerd_dir.join("containerd.pid");
        std::fs::read_to_string(&file)
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or_else(|| panic!("no pid in {}", file.display()))
    }

    /// SIGKILLs this host's containerd (by pid, never by name) and waits
    /// until it is gone. Running shims and their containers survive.
    pub async fn kill_containerd(&self) {
        let pid = self.containerd_pid();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap_or_else(|e| panic!("SIGKILL containerd {pid} of {}: {e}", self.name));
        let deadline = Instant::now() + Duration::from_secs(20);
        // Gone, or a zombie (no cmdline) until its parent (setsid's bash, or
        // init) reaps it.
        while std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| !c.is_empty()) {
            assert!(
                Instant::now() < deadline,
                "containerd {pid} of {} survived SIGKILL",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Starts this host's containerd again with the same `--config` (lib.sh's
    /// `start_containerd` on the same DIR writes the same config).
    pub async fn start_containerd(&self) {
        let socket = lib_sh(
            &self.lib,
            &format!("start_containerd {}", quote(&self.containerd_dir)),
        )
        .await
        .unwrap_or_else(|e| panic!("restarting containerd of {}: {e:#}", self.name));
        assert_eq!(
            socket.trim(),
            self.containerd_socket,
            "containerd of {} came back on another socket",
            self.name
        );
    }

    /// The worker's `/metrics` text.
    pub async fn metrics(&self) -> Result<String> {
        let url = format!("http://{}/metrics", self.metrics_addr);
        if let Some(netns) = &self.netns {
            let output = tokio::process::Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    netns,
                    "curl",
                    "-fsS",
                    "--max-time",
                    "5",
                    &url,
                ])
                .output()
                .await?;
            if !output.status.success() {
                bail!(
                    "GET {url} in {netns}: {}",
                    String::from_utf8_lossy(&output.stderr)
                );
            }
            return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
        }
        let response = reqwest::Client::new()
            .get(&url)
            .timeout(Duration::from_secs(5))
            .send()
            .await?;
        if !response.status().is_success() {
            bail!("GET {url}: {}", response.status());
        }
        Ok(response.text().await?)
    }

    /// The sum of the samples of metric `name` (all label sets) in the
    /// worker's `/metrics`; panics when the endpoint or the metric is missing.
    pub async fn metric(&self, name: &str) -> f64 {
        let text = self
            .metrics()
            .await
            .unwrap_or_else(|e| panic!("metrics of {}: {e:#}", self.name));
        metric_sum(&text, name)
            .unwrap_or_else(|e| panic!("metrics of {}: {e:#}\n{text}", self.name))
    }
}

/// The value of one series, written as Prometheus prints it (e.g.
/// `skiff_reports_refused_total{reason="in_the_future"}`), in Prometheus
/// text; 0 when absent (a labelled counter appears on its first increment).
pub fn metric_series(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// The sum of the samples named `name` in Prometheus text.
pub fn metric_sum(text: &str, name: &str) -> Result<f64> {
    let mut found = false;
    let mut sum = 0.0;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let metric = series.split('{').next().unwrap_or("");
        if metric == name {
            found = true;
            sum += value
                .parse::<f64>()
                .map_err(|e| anyhow!("sample {line:?}: {e}"))?;
        }
    }
    if !found {
        bail!("no metric {name}");
    }
    Ok(sum)
}

impl Host {
    /// Waits until metric `name` of the worker's `/metrics` is at least
    /// `value` (the endpoint may not answer yet right after a respawn);
    /// panics after `within` with the last text or error.
    pub async fn wait_metric_at_least(&self, name: &str, value: f64, within: Duration) -> f64 {
        let deadline = Instant::now() + within;
        loop {
            let last = match self.metrics().await {
                Ok(text) => match metric_sum(&text, name) {
                    Ok(sum) if sum >= value => return sum,
                    Ok(sum) => format!("{name} = {sum}"),
                    Err(e) => format!("{e:#}\n{text}"),
                },
                Err(e) => format!("{e:#}"),
            };
            if Instant::now() > deadline {
                panic!(
                    "{name} of {} not >= {value} within {within:?}: {last}",
                    self.name
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
