//! What the figures were measured on, and the processes' memory.

use procfs::{Current, CurrentSI};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cores: usize,
    pub memory_mib: u64,
    pub kernel: String,
    pub os: String,
    pub containerd: String,
    pub cpu_model: String,
    /// 1-minute load average when the run started and when it ended (the
    /// machine may be shared: a high load makes every figure worse).
    pub loadavg_start: f64,
    pub loadavg_end: f64,
    /// Build profile of the running skiff-worker binary (release or debug).
    pub worker_build: String,
}

fn read(path: impl AsRef<Path>) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

pub fn loadavg() -> f64 {
    procfs::LoadAverage::current()
        .map(|l| f64::from(l.one))
        .unwrap_or(f64::NAN)
}

/// The machine's busy CPU time since boot, in seconds (all cores).
pub fn busy_cpu_s() -> Option<f64> {
    let (busy, _) = cpu_ticks()?;
    Some(busy as f64 / procfs::ticks_per_second() as f64)
}

/// The machine's busy and total CPU time since boot, in ticks.
fn cpu_ticks() -> Option<(u64, u64)> {
    let t = procfs::KernelStats::current().ok()?.total;
    let idle = t.idle + t.iowait.unwrap_or(0);
    let total = t.user
        + t.nice
        + t.system
        + idle
        + t.irq.unwrap_or(0)
        + t.softirq.unwrap_or(0)
        + t.steal.unwrap_or(0);
    Some((total - idle, total))
}

/// Waits until the machine is quiet: at most `max_busy` (0..1) of its CPU
/// time busy over one `window`, looking for at most `give_up`. What one
/// side of a comparison leaves behind (a deleted job's containers being
/// removed, containerd's garbage collection) must not run during the
/// other side's measurement. Returns the busy share of the last window
/// and whether it was quiet.
pub async fn settle(max_busy: f64, window: Duration, give_up: Duration) -> (f64, bool) {
    let start = std::time::Instant::now();
    loop {
        let Some(a) = cpu_ticks() else {
            return (f64::NAN, false);
        };
        tokio::time::sleep(window).await;
        let Some(b) = cpu_ticks() else {
            return (f64::NAN, false);
        };
        let share = (b.0 - a.0) as f64 / (b.1 - a.1).max(1) as f64;
        if share <= max_busy {
            return (share, true);
        }
        if start.elapsed() >= give_up {
            return (share, false);
        }
    }
}

/// A `/proc/meminfo` or `/proc/<pid>/status` field in KiB.
fn kib_field(text: &str, field: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|rest| rest.trim_start_matches(':').split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

impl Machine {
    pub fn probe(containerd: String, worker_pid: Option<u32>) -> Self {
        let os = read("/etc/os-release")
            .lines()
            .find_map(|l| l.strip_prefix("PRETTY_NAME="))
            .map(|v| v.trim_matches('"').to_owned())
            .unwrap_or_default();
        let cpu_model = read("/proc/cpuinfo")
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
            .unwrap_or_default();
        let worker_build = worker_pid
            .and_then(|pid| std::fs::read_link(format!("/proc/{pid}/exe")).ok())
            .map(|exe| {
                let s = exe.display().to_string();
                if s.contains("/release/") {
                    "release".to_owned()
                } else if s.contains("/debug/") {
                    "debug".to_owned()
                } else {
                    s
                }
            })
            .unwrap_or_else(|| "unknown".to_owned());
        Self {
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            memory_mib: kib_field(&read("/proc/meminfo"), "MemTotal").unwrap_or(0) / 1024,
            kernel: read("/proc/sys/kernel/osrelease").trim().to_owned(),
            os,
            containerd,
            cpu_model,
            loadavg_start: loadavg(),
            loadavg_end: f64::NAN,
            worker_build,
        }
    }
}

/// VmRSS of a process in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    kib_field(&read(format!("/proc/{pid}/status")), "VmRSS")
}

fn exe_name(pid: u32) -> Option<String> {
    std::fs::read_link(format!("/proc/{pid}/exe"))
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
}

fn pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
                .collect()
        })
        .unwrap_or_default()
}

/// The local stack's skiff-worker: the pid in `<state>/worker.pid` (written
/// by deploy/local/up.sh) if it is a skiff-worker, else the skiff-worker
/// process whose environment names `<state>/worker` as its state dir.
pub fn find_worker(state: &Path) -> Option<u32> {
    let from_file = read(state.join("worker.pid")).trim().parse::<u32>().ok();
    if let Some(pid) = from_file {
        if exe_name(pid).as_deref() == Some("skiff-worker") {
            return Some(pid);
        }
    }
    let needle = format!("SKIFF_STATE_DIR={}", state.join("worker").display());
    pids().into_iter().find(|&pid| {
        exe_name(pid).as_deref() == Some("skiff-worker")
            && std::fs::read(format!("/proc/{pid}/environ"))
                .map(|env| env.split(|b| *b == 0).any(|kv| kv == needle.as_bytes()))
                .unwrap_or(false)
    })
}

/// A variable of a process's environment.
pub fn env_of(pid: u32, key: &str) -> Option<String> {
    let env = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    let prefix = format!("{key}=");
    env.split(|b| *b == 0).find_map(|kv| {
        std::str::from_utf8(kv)
            .ok()
            .and_then(|s| s.strip_prefix(&prefix))
            .map(str::to_owned)
    })
}

/// runc shims serving containerd namespace `ns`: (count, total VmRSS KiB).
pub fn shims(ns: &str) -> (usize, u64) {
    let mut count = 0;
    let mut kib = 0;
    for pid in pids() {
        if !exe_name(pid).is_some_and(|n| n.starts_with("containerd-shim")) {
            continue;
        }
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        let in_ns = args
            .windows(2)
            .any(|w| w[0] == b"-namespace" && w[1] == ns.as_bytes());
        if in_ns {
            count += 1;
            kib += rss_kib(pid).unwrap_or(0);
        }
    }
    (count, kib)
}

/// The pid in a pid file, if that process is alive.
pub fn pid_file(path: &Path) -> Option<u32> {
    let pid: u32 = read(path).trim().parse().ok()?;
    Path::new(&format!("/proc/{pid}")).exists().then_some(pid)
}

pub fn state_dir(env_file: &Path) -> PathBuf {
    env_file
        .parent()
        .map(|p| p.join("local"))
        .unwrap_or_else(|| PathBuf::from(".skiff/local"))
}
