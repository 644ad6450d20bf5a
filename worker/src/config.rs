//! The worker's configuration: flags, with `SKIFF_*` environment variables.

use clap::Parser;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "skiff-worker",
    about = "skiff host agent: runs assigned containers through containerd"
)]
pub struct WorkerConfig {
    /// gRPC address of the control plane.
    #[arg(
        long,
        env = "SKIFF_CONTROL_PLANE",
        default_value = "http://127.0.0.1:8081"
    )]
    pub control_plane: String,

    /// Where this worker serves logs to the control plane.
    #[arg(long, env = "SKIFF_AGENT_LISTEN", default_value = "127.0.0.1:8082")]
    pub agent_listen: SocketAddr,

    /// This host's id (default: the hostname).
    #[arg(long, env = "SKIFF_HOST_ID")]
    pub host_id: Option<String>,

    #[arg(
        long,
        env = "SKIFF_CONTAINERD_SOCKET",
        default_value = "/run/containerd/containerd.sock"
    )]
    pub containerd_socket: PathBuf,

    /// containerd namespace holding this worker's containers.
    #[arg(long, env = "SKIFF_CONTAINERD_NAMESPACE", default_value = "skiff")]
    pub containerd_namespace: String,

    /// Logs and other host state.
    #[arg(long, env = "SKIFF_STATE_DIR", default_value = "/var/lib/skiff-worker")]
    pub state_dir: PathBuf,

    /// Allocatable cpu in milli-vCPUs (default: all cores). May exceed the
    /// machine's cores when the operator knows its containers mostly sleep.
    #[arg(long, env = "SKIFF_CPU_MILLIS")]
    pub cpu_millis: Option<u32>,

    /// Allocatable memory in MiB (default: total memory less 1 GiB for the host).
    #[arg(long, env = "SKIFF_MEMORY_MIB")]
    pub memory_mib: Option<u64>,

    /// Registries reached over plain HTTP (host or host:port), comma-separated.
    #[arg(
        long,
        env = "SKIFF_INSECURE_REGISTRIES",
        default_value = "127.0.0.1,localhost",
        value_delimiter = ','
    )]
    pub insecure_registries: Vec<String>,

    #[arg(
        long,
        env = "SKIFF_SECCOMP_PROFILE",
        default_value = "/usr/share/containers/seccomp.json"
    )]
    pub seccomp_profile: PathBuf,

    /// Let containers make 32-bit (x86, x32) syscalls, as Docker does. Off by
    /// default: a smaller attack surface and a faster seccomp set-up.
    #[arg(long, env = "SKIFF_SECCOMP_COMPAT_ARCHES", default_value_t = false)]
    pub seccomp_compat_arches: bool,

    /// Container creations+starts in flight at once (default: 4 per core).
    /// More only adds contention: each one spawns a shim and runc.
    #[arg(long, env = "SKIFF_MAX_CONCURRENT_STARTS")]
    pub max_concurrent_starts: Option<usize>,

    /// The skiff-logger binary the shim runs to write logs (default: beside skiff-worker).
    #[arg(long, env = "SKIFF_LOGGER")]
    pub logger: Option<PathBuf>,

    /// Parent cgroup of every container (default: /skiff/<namespace>).
    #[arg(long, env = "SKIFF_CGROUP_PARENT")]
    pub cgroup_parent: Option<String>,
}

impl WorkerConfig {
    pub fn host_id(&self) -> String {
        self.host_id.clone().unwrap_or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_owned())
                .unwrap_or_else(|_| "localhost".into())
        })
    }

    pub fn cpu_millis(&self) -> u32 {
        self.cpu_millis.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, |n| n.get()) as u32 * 1000
        })
    }

    pub fn memory_mib(&self) -> u64 {
        self.memory_mib.unwrap_or_else(|| {
            let total_kib = std::fs::read_to_string("/proc/meminfo")
                .ok()
                .and_then(|m| {
                    m.lines()
                        .find(|l| l.starts_with("MemTotal:"))
                        .and_then(|l| l.split_whitespace().nth(1))
                        .and_then(|n| n.parse::<u64>().ok())
                })
                .unwrap_or(2 * 1024 * 1024);
            (total_kib / 1024).saturating_sub(1024)
        })
    }

    pub fn max_concurrent_starts(&self) -> usize {
        self.max_concurrent_starts
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()) * 4)
    }

    pub fn cgroup_parent(&self) -> String {
        self.cgroup_parent
            .clone()
            .unwrap_or_else(|| format!("/skiff/{}", self.containerd_namespace))
    }
}
