//! [`ContainerdConfig`]: where the worker finds containerd, which namespace
//! and state directory it keeps, and what every container it starts gets
//! (cgroup parent, log driver, seccomp profile, limits, network).

use super::*;

/// Settings for [`ContainerdRuntime::connect`].
#[derive(Debug, Clone)]
pub struct ContainerdConfig {
    /// containerd's gRPC socket, e.g. `/run/containerd/containerd.sock`.
    pub socket: PathBuf,
    /// containerd namespace holding this worker's images and containers.
    pub namespace: String,
    /// Worker state; container logs go to `<state_dir>/logs/<id>.log`.
    pub state_dir: PathBuf,
    /// Which registries a pull may reach, and which over plain HTTP.
    pub egress: crate::egress::EgressPolicy,
    /// Docker-format seccomp profile; `None` runs containers unconfined.
    pub seccomp_profile: Option<PathBuf>,
    /// Parent cgroup path; a container's cgroup is `<cgroup_parent>/<id>`.
    pub cgroup_parent: String,
    /// Where the host's cgroup hierarchies are mounted (v2 or v1).
    pub cgroup_root: PathBuf,
    pub pids_limit: i64,
    /// Syscall ABIs the seccomp filter admits.
    pub seccomp_arches: ArchScope,
    /// The `skiff-logger` binary the shim runs to write a container's log.
    pub logger: PathBuf,
    /// A container's log is kept under this many bytes (0: no cap).
    pub log_max_bytes: u64,
    /// Private container networks; None: this host offers none.
    pub network: Option<crate::net::NetworkConfig>,
}

impl ContainerdConfig {
    /// The defaults for everything but the three required settings.
    pub fn new(socket: impl Into<PathBuf>, namespace: &str, state_dir: impl Into<PathBuf>) -> Self {
        Self {
            socket: socket.into(),
            namespace: namespace.to_owned(),
            state_dir: state_dir.into(),
            egress: crate::egress::EgressPolicy::default(),
            seccomp_profile: Some(PathBuf::from("/usr/share/containers/seccomp.json")),
            cgroup_parent: format!("/skiff/{namespace}"),
            cgroup_root: PathBuf::from(cgroup::DEFAULT_ROOT),
            pids_limit: 4096,
            seccomp_arches: ArchScope::Native,
            logger: default_logger(),
            log_max_bytes: 10 * 1024 * 1024,
            network: None,
        }
    }
}

/// `skiff-logger` beside the running binary (the worker and the logger are
/// built and installed together; a test binary in `target/*/deps` finds it
/// one level up).
pub fn default_logger() -> PathBuf {
    let exe_dir = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_path_buf));
    exe_dir
        .iter()
        .flat_map(|dir| [dir.join("skiff-logger"), dir.join("../skiff-logger")])
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| PathBuf::from("/usr/local/bin/skiff-logger"))
}

impl Default for ContainerdConfig {
    /// The system containerd, namespace `skiff`, state in /var/lib/skiff-worker.
    fn default() -> Self {
        Self::new(
            "/run/containerd/containerd.sock",
            "skiff",
            "/var/lib/skiff-worker",
        )
    }
}
