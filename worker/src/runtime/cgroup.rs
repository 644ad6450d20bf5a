//! The host's cgroup layout and everything the worker reads or removes in
//! it: which hierarchy the kernel offers (cgroup v2, one unified tree; or
//! v1, one tree per controller), where a container's cgroup lives, its CPU
//! time and peak memory, whether the kernel OOM-killed in it, whether swap
//! is accounted, and the removal of directories a crashed shim left behind.
//!
//! runc creates, limits and deletes the cgroups (from the spec's
//! `cgroupsPath`, on either layout); the worker only reads them. A host with
//! neither layout usable is refused at start ([`CgroupLayout::detect`]):
//! running containers there would meter nothing.
//!
//! Every path starts at the layout's root, so the unit tests run the same
//! code against fixture trees of both layouts (a host offers only one).
//! Why not cgroups-rs: its v2 hierarchy is fixed at `/sys/fs/cgroup` and its
//! v1 one comes from `/proc/self/mountinfo`, so neither detection nor the
//! refusal could be tested on a fixture tree; its v2 memory stats report no
//! OOM kills (`memory.events`) and no `memory.current` fallback for peak;
//! and it always pulls in a D-Bus client (zbus) and a second nix. What is
//! needed here is ten small files, most in one `key value` format.

use super::CgroupUsage;
use std::fmt;
use std::path::{Path, PathBuf};

/// Where the kernel's cgroup hierarchies are mounted on a normal host.
pub const DEFAULT_ROOT: &str = "/sys/fs/cgroup";

/// The v1 cpuacct hierarchy's names: its own mount, or shared with cpu
/// (systemd hosts, where `cpuacct` is a symlink to `cpu,cpuacct`).
const V1_CPUACCT_DIRS: [&str; 2] = ["cpuacct", "cpu,cpuacct"];
const V1_CPU_USAGE: &str = "cpuacct.usage";
const V1_MEMORY_PEAK: &str = "memory.max_usage_in_bytes";
/// In every v1 hierarchy's root; its presence in `pids/` says there is one.
const V1_PIDS: &str = "cgroup.procs";
/// The v2 controllers a container needs limited and metered (pids: its
/// pids.max, without which runc cannot create it).
const V2_CONTROLLERS: [&str; 3] = ["cpu", "memory", "pids"];

/// The cgroup hierarchy the host offers, found once at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CgroupLayout {
    /// cgroup v1: `<root>/<controller>/<cgroup>` per controller (on a
    /// hybrid host the v2 tree at `<root>/unified` is one more of them).
    V1 {
        root: PathBuf,
        /// The cpuacct hierarchy's directory: `cpuacct` or `cpu,cpuacct`.
        cpuacct: &'static str,
    },
    /// cgroup v2: one tree mounted at `root`, a cgroup at `<root>/<cgroup>`.
    V2 { root: PathBuf },
}

/// Why a host's cgroups cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error(
        "no usable cgroup hierarchy under {root}, so containers could be neither \
         limited nor metered: cgroup v2 needs {root}/cgroup.controllers listing cpu, \
         memory and pids ({v2}); cgroup v1 needs {root}/cpuacct/{V1_CPU_USAGE} (or \
         {root}/cpu,cpuacct/{V1_CPU_USAGE}), {root}/memory/{V1_MEMORY_PEAK} and \
         {root}/pids/{V1_PIDS} ({v1})",
        root = root.display()
    )]
    Unusable {
        root: PathBuf,
        v2: V2Finding,
        v1: V1Finding,
    },
}

/// What was found of cgroup v2 on a host refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum V2Finding {
    /// No readable `cgroup.controllers` at the root: not a v2 (unified) mount.
    NotUnified,
    /// A v2 root without these controllers available.
    MissingControllers(Vec<&'static str>),
}

impl fmt::Display for V2Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotUnified => f.write_str("no such file"),
            Self::MissingControllers(missing) => write!(f, "it lacks {}", missing.join(", ")),
        }
    }
}

/// What was found of cgroup v1 on a host refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V1Finding {
    pub cpuacct: bool,
    pub memory: bool,
    pub pids: bool,
}

impl fmt::Display for V1Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let missing: Vec<&str> = [
            (self.cpuacct, "cpuacct"),
            (self.memory, "memory"),
            (self.pids, "pids"),
        ]
        .into_iter()
        .filter_map(|(found, name)| (!found).then_some(name))
        .collect();
        if missing.is_empty() {
            return f.write_str("all found");
        }
        write!(f, "no {} hierarchy", missing.join(" and no "))
    }
}

impl CgroupLayout {
    /// The layout under `root`: v2 when `<root>/cgroup.controllers` lists
    /// the cpu, memory and pids controllers, else v1 when the cpuacct,
    /// memory and pids hierarchies are there, else the refusal naming what was looked for.
    /// (Files, not the filesystem's magic number, so a fixture tree counts.)
    pub fn detect(root: impl Into<PathBuf>) -> Result<Self, CgroupError> {
        let root = root.into();
        let v2 = match std::fs::read_to_string(root.join("cgroup.controllers")) {
            Ok(listed) => match missing_controllers(&listed) {
                missing if missing.is_empty() => return Ok(Self::V2 { root }),
                missing => V2Finding::MissingControllers(missing),
            },
            Err(_) => V2Finding::NotUnified,
        };
        let cpuacct = V1_CPUACCT_DIRS
            .into_iter()
            .find(|dir| root.join(dir).join(V1_CPU_USAGE).is_file());
        let memory = root.join("memory").join(V1_MEMORY_PEAK).is_file();
        let pids = root.join("pids").join(V1_PIDS).is_file();
        match cpuacct {
            Some(cpuacct) if memory && pids => Ok(Self::V1 { root, cpuacct }),
            _ => Err(CgroupError::Unusable {
                root,
                v2,
                v1: V1Finding {
                    cpuacct: cpuacct.is_some(),
                    memory,
                    pids,
                },
            }),
        }
    }

    pub fn root(&self) -> &Path {
        match self {
            Self::V1 { root, .. } | Self::V2 { root } => root,
        }
    }

    /// Whether swap is accounted, so a memory+swap limit can be set: v1's
    /// `memory.memsw.*` at the memory root; on v2 `memory.swap.max`, which
    /// only non-root cgroups have, in any cgroup just below the root.
    pub fn swap_accounting(&self) -> bool {
        match self {
            Self::V1 { root, .. } => root.join("memory/memory.memsw.limit_in_bytes").is_file(),
            Self::V2 { root } => std::fs::read_dir(root).is_ok_and(|entries| {
                entries
                    .flatten()
                    .any(|entry| entry.path().join("memory.swap.max").is_file())
            }),
        }
    }

    /// The directories of the cgroup `cgroup` (relative to the hierarchy,
    /// e.g. `skiff/<namespace>/<id>`): one per v1 hierarchy, whether it
    /// exists or not, or the single v2 one.
    pub fn dirs(&self, cgroup: &Path) -> Vec<PathBuf> {
        match self {
            // A listing of cgroupfs's root is in memory: no need for tokio::fs.
            Self::V1 { root, .. } => std::fs::read_dir(root)
                .map(|entries| {
                    entries
                        .flatten()
                        .map(|entry| entry.path().join(cgroup))
                        .collect()
                })
                .unwrap_or_default(),
            Self::V2 { root } => vec![root.join(cgroup)],
        }
    }

    /// CPU time and peak memory of `cgroup` so far; None when it is gone or
    /// its CPU time unreadable. Peak memory is 0 when unreadable, and on v2
    /// kernels before 5.19 (no `memory.peak`) the current usage instead.
    pub async fn usage(&self, cgroup: &Path) -> Option<CgroupUsage> {
        let (cpu_usage_ns, peak_memory_bytes) = match self {
            Self::V1 { root, cpuacct } => {
                let cpu = read(root.join(cpuacct).join(cgroup).join(V1_CPU_USAGE)).await;
                let peak = read(root.join("memory").join(cgroup).join(V1_MEMORY_PEAK)).await;
                (parse_u64(&cpu?)?, peak.as_deref().and_then(parse_u64))
            }
            Self::V2 { root } => {
                let dir = root.join(cgroup);
                let cpu = v2_cpu_usage_ns(&read(dir.join("cpu.stat")).await?)?;
                let peak = match read(dir.join("memory.peak")).await {
                    Some(peak) => Some(peak),
                    None => read(dir.join("memory.current")).await,
                };
                (cpu, peak.as_deref().and_then(parse_u64))
            }
        };
        Some(CgroupUsage {
            cpu_usage_ns,
            peak_memory_bytes: peak_memory_bytes.unwrap_or(0),
        })
    }

    /// Whether the kernel OOM-killed a process in `cgroup` (v1
    /// `memory.oom_control`, v2 `memory.events`), or the error reading it.
    pub async fn oom_killed(&self, cgroup: &Path) -> std::io::Result<bool> {
        Ok(match self {
            Self::V1 { root, .. } => {
                let path = root.join("memory").join(cgroup).join("memory.oom_control");
                v1_oom_killed(&tokio::fs::read_to_string(path).await?)
            }
            Self::V2 { root } => {
                let path = root.join(cgroup).join("memory.events");
                v2_oom_killed(&tokio::fs::read_to_string(path).await?)
            }
        })
    }

    /// Removes `cgroup`'s directories where they are empty (runc removes
    /// them with the task; a crashed shim leaves them). rmdir refuses a
    /// cgroup that still holds processes. Returns the ones removed.
    pub async fn remove_leftovers(&self, cgroup: &Path) -> Vec<PathBuf> {
        let mut removed = Vec::new();
        for dir in self.dirs(cgroup) {
            if tokio::fs::remove_dir(&dir).await.is_ok() {
                removed.push(dir);
            }
        }
        removed
    }
}

impl fmt::Display for CgroupLayout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::V1 { root, .. } => write!(f, "cgroup v1 at {}", root.display()),
            Self::V2 { root } => write!(f, "cgroup v2 (unified) at {}", root.display()),
        }
    }
}

async fn read(path: PathBuf) -> Option<String> {
    tokio::fs::read_to_string(path).await.ok()
}

fn parse_u64(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

/// The value of `key` in a flat keyed file (`key value` lines, as in
/// `cpu.stat`, `memory.events` and v1's `memory.oom_control`).
fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(char::is_whitespace)?;
        if k == key {
            parse_u64(v)
        } else {
            None
        }
    })
}

/// Which of the needed controllers a v2 `cgroup.controllers` lacks.
fn missing_controllers(listed: &str) -> Vec<&'static str> {
    let listed: Vec<&str> = listed.split_whitespace().collect();
    V2_CONTROLLERS
        .into_iter()
        .filter(|c| !listed.contains(c))
        .collect()
}

/// v2 `cpu.stat`'s `usage_usec`, in nanoseconds.
fn v2_cpu_usage_ns(cpu_stat: &str) -> Option<u64> {
    keyed(cpu_stat, "usage_usec").map(|us| us.saturating_mul(1000))
}

/// v1 `memory.oom_control`: `oom_kill N` (kernels from 4.13).
fn v1_oom_killed(oom_control: &str) -> bool {
    keyed(oom_control, "oom_kill").is_some_and(|n| n > 0)
}

/// v2 `memory.events`: `oom_kill N` counts the processes killed;
/// `oom_group_kill N` (kernels from 5.17) counts kills of the whole group
/// under `memory.oom.group`, which runc does not set but a host may.
fn v2_oom_killed(events: &str) -> bool {
    ["oom_kill", "oom_group_kill"]
        .into_iter()
        .any(|key| keyed(events, key).is_some_and(|n| n > 0))
}

#[cfg(test)]
mod tests;
