//! The container runtime boundary: everything the agent needs from
//! containerd, behind one trait so the reconcile logic can be unit-tested
//! with a fake and the containerd details stay in one place.
//!
//! Layout:
//! - [`containerd`]: `ContainerdRuntime`, the real implementation over containerd-client.
//! - [`cgroup`]: the host's cgroup layout (v2 or v1): usage, OOM kills and
//!   leftovers of a container's cgroup; refuses a host with neither.
//! - [`pull`]: fetches images from an OCI registry into containerd's content store and unpacks them.
//! - [`auth`]: registry credentials of a pull, and who may use a cached
//!   private image.
//! - [`spec`]: builds the complete OCI runtime spec for a container.
//! - [`seccomp`]: resolves the containers/common default profile into OCI form.
//! - `users`: the user a container runs as, looked up in its image once.
//! - [`volumes`]: a container's empty_dir and secret volumes on its host.
//! - [`sandbox`]: container groups: which runs share a network namespace
//!   and volumes, and when the shared set-up goes.
//! - [`exec`]: a process run in a running container (containerd Exec), its
//!   output collected through FIFOs.
//! - `fake` (tests only): an in-memory `Runtime` for the agent's unit tests.
//!
//! Bookkeeping lives in containerd itself (container labels), not in the
//! worker's memory, so a restarted worker re-adopts what is running.

pub mod auth;
pub mod cgroup;
pub mod containerd;
pub mod exec;
#[cfg(test)]
pub(crate) mod fake;
pub mod pull;
pub mod sandbox;
pub mod seccomp;
pub mod spec;
mod users;
pub mod volumes;

use async_trait::async_trait;
use skiff_core::{CpuMillis, MemoryMib, SecretEnv};
use std::collections::BTreeMap;
use std::path::PathBuf;
use tokio::sync::mpsc;

/// Container label holding the generation of the run last started.
pub const LABEL_GENERATION: &str = "skiff.generation";
/// Container label holding the JSON [`ExitRecord`] of the last finished run.
pub const LABEL_EXIT: &str = "skiff.exit";
/// Container label holding the sandbox (container group) it is a member
/// of; absent for an ordinary container.
pub const LABEL_SANDBOX: &str = "skiff.sandbox";

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("pulling image {image}: {source}")]
    Pull {
        image: String,
        #[source]
        source: pull::PullError,
    },
    #[error("containerd {op} for {id}: {source}")]
    Containerd {
        op: &'static str,
        id: String,
        #[source]
        source: tonic::Status,
    },
    #[error("connecting to containerd at {socket}: {message}")]
    Connect { socket: String, message: String },
    #[error("building the runtime spec for {id}: {message}")]
    Spec { id: String, message: String },
    #[error(transparent)]
    Cgroup(#[from] cgroup::CgroupError),
    #[error("network of {id}: {source}")]
    Network {
        id: String,
        #[source]
        source: crate::net::NetError,
    },
    #[error("{op} for {id}: {source}")]
    Io {
        op: &'static str,
        id: String,
        #[source]
        source: std::io::Error,
    },
}

/// The parts of an image's config that become a container's defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageDefaults {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// `KEY=value` entries, in the image's order.
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    /// `uid[:gid]` (numeric); names are not resolved.
    pub user: Option<String>,
}

/// An image present and unpacked in containerd.
#[derive(Debug, Clone)]
pub struct ImageInfo {
    /// The manifest digest (`sha256:...`).
    pub digest: String,
    /// The top layer's chain ID: the parent snapshot of a container's rootfs.
    pub top_chain_id: String,
    pub defaults: ImageDefaults,
    /// False when everything was already present and nothing was fetched.
    pub fetched: bool,
}

/// Everything needed to create one container. `secure_env` is a
/// [`SecretEnv`], so logging a spec never leaks its values.
#[derive(Debug, Clone)]
pub struct RunSpec {
    pub id: String,
    pub image_ref: String,
    pub image: ImageInfo,
    /// Replaces entrypoint+cmd when non-empty.
    pub command: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub secure_env: SecretEnv,
    pub cpu: CpuMillis,
    pub memory: MemoryMib,
    pub hostname: String,
    pub network: NetworkSpec,
    /// The root filesystem is mounted read-only.
    pub read_only_rootfs: bool,
    /// Its volumes (kept across runs, removed with it) and where it mounts them.
    pub volumes: Vec<volumes::Volume>,
    pub mounts: Vec<volumes::Mount>,
    /// The container group it belongs to (a checked [`sandbox::valid_key`]):
    /// its network namespace and volumes are the sandbox's, shared with
    /// the group's other members on this host. None: its own.
    pub sandbox: Option<String>,
}

impl RunSpec {
    /// What its network and volumes are kept under: its sandbox, else its
    /// own id.
    pub fn sandbox_key(&self) -> &str {
        self.sandbox.as_deref().unwrap_or(&self.id)
    }
}

/// A run's network.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum NetworkSpec {
    /// Its own network namespace with loopback only.
    #[default]
    None,
    /// An address on the host's bridge, published ports, its group.
    Private(crate::net::Request),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskStatus {
    Created,
    Running,
    Paused,
    Stopped,
    Unknown,
}

impl TaskStatus {
    /// Whether the task holds a process (and the host's resources): a paused
    /// task or one created but not yet started is as much in the way of a
    /// new run as a running one.
    pub fn is_live(self) -> bool {
        matches!(self, Self::Running | Self::Paused | Self::Created)
    }
}

/// A task as containerd reports it.
#[derive(Debug, Clone)]
pub struct TaskInfo {
    pub pid: u32,
    pub status: TaskStatus,
    /// Set once the task has stopped.
    pub exit_code: Option<i32>,
    pub exited_at_unix_ms: Option<i64>,
}

/// The outcome of a finished run, kept as a container label so a restarted
/// worker can still report it after the task was deleted.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ExitRecord {
    pub generation: u64,
    pub exit_code: i32,
    pub started_at_unix_ms: i64,
    pub finished_at_unix_ms: i64,
    pub oom_killed: bool,
    /// Its host killed it: its liveness probe failed (absent in records
    /// written before probes existed).
    #[serde(default)]
    pub liveness_failed: bool,
}

/// A container of ours in containerd, with its bookkeeping labels decoded.
#[derive(Debug, Clone)]
pub struct ContainerInfo {
    pub id: String,
    /// Generation of the run last started (LABEL_GENERATION), 0 if none.
    pub generation: u64,
    pub last_exit: Option<ExitRecord>,
    pub task: Option<TaskInfo>,
    /// The sandbox it is a member of (LABEL_SANDBOX), if any.
    pub sandbox: Option<String>,
}

/// An image present in the worker's containerd namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldImage {
    /// The name it was pulled as, e.g. `127.0.0.1:5000/skiff/busybox:latest`.
    pub reference: String,
    /// The manifest digest the name points to (`sha256:...`).
    pub digest: String,
}

/// An image stored on the host, as the image GC sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredImage {
    pub reference: String,
    /// (digest, bytes) of its blobs: manifest (and index), config, layers.
    pub blobs: Vec<(String, u64)>,
    /// A container on the host was created from it.
    pub in_use: bool,
    /// When a container last started from it (or, unknown since the
    /// worker started, when it was pulled).
    pub last_used_unix_ms: i64,
}

/// Measured consumption of a running container, for usage reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CgroupUsage {
    pub cpu_usage_ns: u64,
    pub peak_memory_bytes: u64,
}

#[derive(Debug, Clone)]
pub struct TaskStarted {
    pub pid: u32,
    pub started_at_unix_ms: i64,
    /// The container's address on the host's bridge (private network).
    pub ip: Option<std::net::Ipv4Addr>,
}

/// Events from containerd's event stream that concern our containers' main tasks.
#[derive(Debug, Clone)]
pub enum TaskEvent {
    Exited {
        id: String,
        exit_code: i32,
        exited_at_unix_ms: i64,
    },
    OomKilled {
        id: String,
    },
}

#[async_trait]
pub trait Runtime: Send + Sync + 'static {
    /// containerd's version string, for host registration.
    async fn version(&self) -> Result<String, RuntimeError>;

    /// Makes sure `reference` is in containerd's content store and unpacked
    /// into snapshots. Does no registry traffic for an image already present.
    async fn ensure_image(&self, reference: &str) -> Result<ImageInfo, RuntimeError>;

    /// How far a pull of `reference` under way is: (layer bytes fetched,
    /// of all its layers); None when none is under way.
    fn pull_progress(&self, _reference: &str) -> Option<(u64, u64)> {
        None
    }

    /// Whether `reference` was resolved before and is very likely still
    /// present (a guess from memory, no containerd call): a start of it
    /// will not pull. The agent then reports no `pulling` of its own.
    fn image_known(&self, _reference: &str) -> bool {
        false
    }

    /// [`Runtime::ensure_image`] with a registry login (None: anonymous);
    /// a cached image that was pulled with credentials is used only once
    /// `login` is shown to read it (see [`auth`]).
    async fn ensure_image_with(
        &self,
        reference: &str,
        login: Option<&auth::RegistryLogin>,
    ) -> Result<ImageInfo, RuntimeError> {
        let _ = login;
        self.ensure_image(reference).await
    }

    /// Creates the container record and its rootfs snapshot. Idempotent:
    /// an existing container with this id is left as it is.
    async fn create(&self, spec: &RunSpec) -> Result<(), RuntimeError>;

    /// Starts run `generation` of `run` (created before): deletes any old
    /// (stopped) task, records the generation label, sets up the run's
    /// network, creates the task with stdout+stderr appended to
    /// [`Runtime::log_path`] and starts it.
    async fn start(&self, run: &RunSpec, generation: u64) -> Result<TaskStarted, RuntimeError>;

    /// Runs a process in the container's running task and collects its
    /// output (see [`exec`]).
    async fn exec(
        &self,
        id: &str,
        _spec: &exec::ExecSpec,
    ) -> Result<exec::ExecOutput, RuntimeError> {
        Err(RuntimeError::Spec {
            id: id.to_owned(),
            message: "exec is not supported by this runtime".into(),
        })
    }

    /// Runs an interactive process in the container's running task: `input`
    /// feeds it, `output` gets what it writes; the exit code at its end. It
    /// is SIGKILLed when `input` closes before it exits.
    async fn attach(
        &self,
        id: &str,
        _spec: &exec::AttachSpec,
        _input: mpsc::Receiver<exec::AttachIn>,
        _output: mpsc::Sender<Vec<u8>>,
    ) -> Result<i32, RuntimeError> {
        Err(RuntimeError::Spec {
            id: id.to_owned(),
            message: "attach is not supported by this runtime".into(),
        })
    }

    /// The container's address while its run has a private network (a
    /// sandbox member's: its sandbox's).
    async fn ip(&self, _id: &str) -> Option<std::net::Ipv4Addr> {
        None
    }

    /// Sends `signal` to the container's main process. NotFound is not an error.
    async fn kill(&self, id: &str, signal: u32) -> Result<(), RuntimeError>;

    /// The container's current task, if it has one.
    async fn task(&self, id: &str) -> Result<Option<TaskInfo>, RuntimeError>;

    /// cpu time and peak memory of the container's cgroup so far (None when
    /// the cgroup is gone or unreadable).
    async fn usage(&self, id: &str) -> Option<CgroupUsage>;

    /// Whether the kernel OOM-killed a process in the container's cgroup
    /// during the current task (read before the task is deleted).
    async fn oom_killed(&self, id: &str) -> bool;

    /// Records a finished run in the container's labels (so a restarted
    /// worker still knows it once the task is gone).
    async fn record_exit(&self, id: &str, exit: &ExitRecord) -> Result<(), RuntimeError>;

    /// Deletes the container's task (its shim exits; the container, rootfs
    /// and logs stay) and tears down the run's network (its ports are
    /// free again; a sandbox's only once no member has a task). NotFound
    /// is not an error.
    async fn delete_task(&self, id: &str) -> Result<(), RuntimeError>;

    /// Records a finished run, then deletes the task.
    async fn finish_task(&self, id: &str, exit: &ExitRecord) -> Result<(), RuntimeError> {
        self.record_exit(id, exit).await?;
        self.delete_task(id).await
    }

    /// Removes everything of the container from the host: task (killed),
    /// container record, snapshot and log file (and, the last member of a
    /// sandbox here, the sandbox's volumes). NotFound is not an error.
    async fn remove(&self, id: &str) -> Result<(), RuntimeError>;

    /// All containers in the worker's namespace.
    async fn list(&self) -> Result<Vec<ContainerInfo>, RuntimeError>;

    /// How many tasks hold the host's resources now (running, paused, or
    /// created and not yet started), for the heartbeat. Cheaper than
    /// [`Runtime::list`], which carries every container's record: a host
    /// keeps thousands of finished ones.
    async fn live_tasks(&self) -> Result<usize, RuntimeError> {
        Ok(self
            .list()
            .await?
            .iter()
            .filter(|c| c.task.as_ref().is_some_and(|t| t.status.is_live()))
            .count())
    }

    /// All images in the worker's namespace, for the control plane's
    /// placement (hosts that hold a container's image start it sooner).
    async fn images(&self) -> Result<Vec<HeldImage>, RuntimeError>;

    /// The images stored on the host with their blobs, whether a container
    /// uses each, and when each was last used (for the image GC).
    async fn stored_images(&self) -> Result<Vec<StoredImage>, RuntimeError>;

    /// Removes an image: its record, and (containerd's GC) the content and
    /// snapshots nothing else references.
    async fn remove_image(&self, reference: &str) -> Result<(), RuntimeError>;

    /// A stream of main-task exit and OOM events. The subscription is
    /// re-established by the implementation if containerd drops it.
    fn events(&self) -> mpsc::Receiver<TaskEvent>;

    /// The host file where the container's stdout and stderr are appended.
    fn log_path(&self, id: &str) -> PathBuf;
}
