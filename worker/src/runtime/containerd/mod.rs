//! `ContainerdRuntime`: the [`Runtime`] trait over containerd's gRPC API
//! (containerd-client, one shared tonic channel over the unix socket).
//!
//! Every request carries the `containerd-namespace` header, so the worker's
//! containers live in their own namespace. Bookkeeping (the generation being
//! run, the last exit, the sandbox) is kept in container labels, never only
//! in memory: a restarted worker finds everything by listing containers and
//! tasks. There are no per-container loops here; exits and OOM kills arrive
//! over one event subscription ([`Runtime::events`]).
//!
//! A sandbox is a container group's share of this host ([`super::sandbox`]):
//! its members (`RunSpec::sandbox`, the `skiff.sandbox` label) run in one
//! network namespace, with one address, the group's published ports and
//! hosts files, and bind the same volumes, all kept under the sandbox's id
//! where an ordinary container's are under its own. The first member to
//! start sets them up; the others join; the network goes when no member has
//! a task, the volumes with the last member's container. An ordinary
//! container takes none of these steps: its start sets up its network
//! beside Tasks.Create, as it always has.
//!
//! The module's parts: [`config`] (the settings), [`calls`] (thin calls
//! into containerd's services), [`lifecycle`] (create, start and remove of
//! a container), [`images`] (the image records the image GC reads and
//! removes) and [`events`] (the exit and OOM stream).

mod calls;
mod config;
mod events;
mod images;
mod lifecycle;

pub use config::{default_logger, ContainerdConfig};

use super::cgroup::{self, CgroupLayout};
use super::pull::{Puller, SNAPSHOTTER};
use super::sandbox;
use super::seccomp::{running_kernel, ArchScope, DockerProfile};
use super::spec::{self, SpecOptions, DEFAULT_CAPABILITIES};
use super::volumes;
use super::{
    CgroupUsage, ContainerInfo, ExitRecord, HeldImage, ImageInfo, NetworkSpec, RunSpec, Runtime,
    RuntimeError, StoredImage, TaskEvent, TaskInfo, TaskStarted, TaskStatus, LABEL_EXIT,
    LABEL_GENERATION, LABEL_SANDBOX,
};
use crate::net::{NetError, Network};
use async_trait::async_trait;
use backon::{BackoffBuilder, ExponentialBuilder};
use containerd_client::events::{TaskExit, TaskOom};
use containerd_client::services::v1::container::Runtime as ContainerRuntimeInfo;
use containerd_client::services::v1::snapshots::{
    snapshots_client::SnapshotsClient, MountsRequest, PrepareSnapshotRequest, RemoveSnapshotRequest,
};
use containerd_client::services::v1::{
    containers_client::ContainersClient, events_client::EventsClient, images_client::ImagesClient,
    tasks_client::TasksClient, version_client::VersionClient, Container, CreateContainerRequest,
    CreateTaskRequest, DeleteContainerRequest, DeleteImageRequest, DeleteTaskRequest,
    GetContainerRequest, GetRequest, KillRequest, ListContainersRequest, ListImagesRequest,
    ListTasksRequest, StartRequest, SubscribeRequest, UpdateContainerRequest, WaitRequest,
};
use containerd_client::types::v1::{Process, Status as ProcessStatus};
use prost::Message;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::mpsc;
use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::transport::Channel;
use tonic::{Code, Request, Status};
use tracing::{debug, info, instrument, warn};

const RUNC_RUNTIME: &str = "io.containerd.runc.v2";
const SPEC_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";
/// How long remove() waits for a SIGKILLed task to be reaped.
const KILL_WAIT: Duration = Duration::from_secs(10);
const SIGKILL: u32 = 9;
/// The largest unary list answer accepted from containerd (tasks, images).
const LIST_MAX_BYTES: usize = 256 * 1024 * 1024;

/// The shared channel plus the namespace header every request needs.
#[derive(Clone)]
pub(crate) struct Conn {
    pub channel: Channel,
    namespace: AsciiMetadataValue,
}

impl Conn {
    /// `msg` as a request in our namespace.
    pub fn req<T>(&self, msg: T) -> Request<T> {
        let mut req = Request::new(msg);
        req.metadata_mut()
            .insert("containerd-namespace", self.namespace.clone());
        req
    }

    /// `msg` in our namespace under `lease`, so GC keeps what it creates.
    pub fn leased<T>(&self, msg: T, lease: &str) -> Request<T> {
        let mut req = self.req(msg);
        if let Ok(v) = MetadataValue::try_from(lease) {
            req.metadata_mut().insert("containerd-lease", v);
        }
        req
    }
}

pub struct ContainerdRuntime {
    conn: Conn,
    config: ContainerdConfig,
    pub(super) spec_options: SpecOptions,
    /// The host's cgroup hierarchy, found at connect.
    cgroups: CgroupLayout,
    puller: Puller,
    /// Image reference -> when a container last started from it (since
    /// this worker started), for the image GC's least-recently-used order.
    last_used: std::sync::Mutex<HashMap<String, i64>>,
    /// Private container networks, when the host offers them.
    pub(super) net: Option<Network>,
    /// The sandboxes' members with a task (rebuilt from the labels at
    /// connect), and the lock of each sandbox's set-up and tear-down.
    pub(super) sandboxes: sandbox::Sandboxes,
    /// Users resolved from images' files, by (manifest digest, USER): an
    /// image's files never change, so each is read once.
    pub(super) users: std::sync::Mutex<HashMap<(String, String), super::spec::user::ProcessUser>>,
    /// Containers this worker created and has not started yet, with their
    /// rootfs mounts (from `Snapshots.Prepare`): their first start needs
    /// neither a look for an old task (there is none) nor the mounts again.
    /// Lost at a restart, and then looked up as before.
    fresh: std::sync::Mutex<HashMap<String, Vec<containerd_client::types::Mount>>>,
}

pub(super) fn net_err(id: &str) -> impl FnOnce(NetError) -> RuntimeError + '_ {
    move |source| RuntimeError::Network {
        id: id.to_owned(),
        source,
    }
}

pub(super) fn containerd_err(op: &'static str, id: &str) -> impl FnOnce(Status) -> RuntimeError {
    let id = id.to_owned();
    move |source| RuntimeError::Containerd { op, id, source }
}

fn ts_ms(ts: &prost_types::Timestamp) -> i64 {
    ts.seconds * 1000 + i64::from(ts.nanos) / 1_000_000
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// containerd's namespace grammar: `[A-Za-z0-9]+([._-][A-Za-z0-9]+)*`.
fn valid_namespace(ns: &str) -> bool {
    !ns.is_empty()
        && ns
            .split(['.', '_', '-'])
            .all(|part| !part.is_empty() && part.chars().all(|c| c.is_ascii_alphanumeric()))
}

fn task_info(p: &Process) -> TaskInfo {
    let status = match ProcessStatus::try_from(p.status) {
        Ok(ProcessStatus::Created) => TaskStatus::Created,
        Ok(ProcessStatus::Running) => TaskStatus::Running,
        Ok(ProcessStatus::Paused) | Ok(ProcessStatus::Pausing) => TaskStatus::Paused,
        Ok(ProcessStatus::Stopped) => TaskStatus::Stopped,
        _ => TaskStatus::Unknown,
    };
    let stopped = status == TaskStatus::Stopped;
    TaskInfo {
        pid: p.pid,
        status,
        // Exit status is a u32 on the wire; 128+signal fits in i32 anyway.
        exit_code: stopped.then_some(p.exit_status as i32),
        exited_at_unix_ms: if stopped {
            p.exited_at.as_ref().map(ts_ms)
        } else {
            None
        },
    }
}

impl ContainerdRuntime {
    /// Finds the host's cgroup layout, connects to containerd, loads and
    /// resolves the seccomp profile, and creates the log directory. Fails
    /// fast on any of them: a host whose cgroups cannot meter is refused.
    pub async fn connect(config: ContainerdConfig) -> Result<Self, RuntimeError> {
        let socket = config.socket.display().to_string();
        let connect_err = |message: String| RuntimeError::Connect {
            socket: socket.clone(),
            message,
        };
        if !valid_namespace(&config.namespace) {
            return Err(connect_err(format!(
                "invalid containerd namespace {:?}",
                config.namespace
            )));
        }
        if !config.logger.is_file() {
            return Err(connect_err(format!(
                "the log driver {} does not exist (build the skiff-logger binary, or set SKIFF_LOGGER)",
                config.logger.display()
            )));
        }
        let cgroups = CgroupLayout::detect(&config.cgroup_root)?;
        let namespace = MetadataValue::try_from(config.namespace.as_str())
            .map_err(|e| connect_err(e.to_string()))?;
        let channel = containerd_client::connect(&config.socket)
            .await
            .map_err(|e| connect_err(format!("{e}: {e:?}")))?;
        let conn = Conn { channel, namespace };

        let seccomp = match &config.seccomp_profile {
            None => {
                warn!("no seccomp profile configured: containers run unconfined");
                None
            }
            Some(path) => {
                let profile = DockerProfile::load(path).map_err(|e| RuntimeError::Spec {
                    id: "seccomp".to_owned(),
                    message: e.to_string(),
                })?;
                // Every container gets the same capability set, so the
                // profile is resolved once.
                Some(profile.resolve(
                    DEFAULT_CAPABILITIES,
                    running_kernel(),
                    config.seccomp_arches,
                ))
            }
        };
        let spec_options = SpecOptions {
            cgroup_parent: config.cgroup_parent.clone(),
            pids_limit: config.pids_limit,
            seccomp,
            swap_accounting: cgroups.swap_accounting(),
            cgroup_namespace: matches!(cgroups, CgroupLayout::V2 { .. }),
            nofile_limit: spec::host_nofile_limit(),
            volumes_root: config.state_dir.join("volumes"),
        };
        if spec_options.nofile_limit < spec::NOFILE_LIMIT {
            warn!(
                nofile = spec_options.nofile_limit,
                "no CAP_SYS_RESOURCE: containers get the host's open-files limit"
            );
        }

        let logs = config.state_dir.join("logs");
        std::fs::create_dir_all(&logs).map_err(|source| RuntimeError::Io {
            op: "creating the log directory",
            id: logs.display().to_string(),
            source,
        })?;

        let puller = Puller::new(conn.clone(), config.egress.clone())
            .await
            .map_err(|source| RuntimeError::Io {
                op: "starting the egress proxy",
                id: "127.0.0.1".into(),
                source,
            })?;
        let runtime = Self {
            conn,
            config,
            spec_options,
            cgroups,
            puller,
            last_used: std::sync::Mutex::new(HashMap::new()),
            fresh: std::sync::Mutex::new(HashMap::new()),
            net: None,
            sandboxes: sandbox::Sandboxes::default(),
            users: std::sync::Mutex::new(HashMap::new()),
        };
        let mut runtime = runtime;
        let containers = runtime.list().await?;
        if let Some(cfg) = runtime.config.network.clone() {
            let net = Network::new(cfg).map_err(net_err("the worker"))?;
            // Runs with a live task keep their network (a sandbox's while
            // any member's lives); the rest is torn down.
            net.restore(&sandbox::live_keys(&containers))
                .await
                .map_err(net_err("the worker"))?;
            runtime.net = Some(net);
        }
        runtime.sandboxes = sandbox::Sandboxes::new(sandbox::live_members(&containers));
        // Volumes of containers (and sandboxes) removed while the worker
        // was down.
        volumes::sweep(
            &runtime.spec_options.volumes_root,
            &sandbox::known_keys(&containers),
        )
        .await;
        let version = runtime.version().await?;
        info!(%version, namespace = %runtime.config.namespace, cgroups = %runtime.cgroups,
            swap_accounting = runtime.spec_options.swap_accounting, "connected to containerd");
        Ok(runtime)
    }

    pub fn config(&self) -> &ContainerdConfig {
        &self.config
    }

    /// The host's container network, when it offers one.
    pub fn network(&self) -> Option<&Network> {
        self.net.as_ref()
    }

    /// Tears a failed start's network (of `key`) down (logged, not
    /// returned: the start's own error is the one to report).
    async fn detach(&self, key: &str) {
        if let Some(net) = &self.net {
            if let Err(e) = net.detach(key).await {
                warn!(key, error = %e, "tearing down the network of a failed start");
            }
        }
    }

    /// The host's cgroup layout, as found at connect.
    pub fn cgroup_layout(&self) -> &CgroupLayout {
        &self.cgroups
    }

    /// The container's cgroup relative to a hierarchy's root (runc makes
    /// it from the spec's `cgroupsPath`, `<cgroup_parent>/<id>`).
    pub fn cgroup_path(&self, id: &str) -> PathBuf {
        Path::new(self.config.cgroup_parent.trim_start_matches('/')).join(id)
    }

    fn container_info(c: &Container, task: Option<&Process>) -> ContainerInfo {
        ContainerInfo {
            id: c.id.clone(),
            generation: c
                .labels
                .get(LABEL_GENERATION)
                .and_then(|g| g.parse().ok())
                .unwrap_or(0),
            last_exit: c
                .labels
                .get(LABEL_EXIT)
                .and_then(|e| serde_json::from_str(e).ok()),
            task: task.map(task_info),
            // Written checked; a label that is not a key names nothing.
            sandbox: c
                .labels
                .get(LABEL_SANDBOX)
                .filter(|s| sandbox::valid_key(s))
                .cloned(),
        }
    }
}

#[async_trait]
impl Runtime for ContainerdRuntime {
    async fn version(&self) -> Result<String, RuntimeError> {
        let mut client = VersionClient::new(self.conn.channel.clone());
        let v = client
            .version(self.conn.req(()))
            .await
            .map_err(|source| RuntimeError::Connect {
                socket: self.config.socket.display().to_string(),
                message: format!("Version: {}: {}", source.code(), source.message()),
            })?
            .into_inner();
        Ok(v.version)
    }

    fn pull_progress(&self, reference: &str) -> Option<(u64, u64)> {
        self.puller.progress(reference)
    }

    fn image_known(&self, reference: &str) -> bool {
        self.puller.known(reference)
    }

    async fn ensure_image(&self, reference: &str) -> Result<ImageInfo, RuntimeError> {
        self.ensure_image_with(reference, None).await
    }

    async fn ensure_image_with(
        &self,
        reference: &str,
        login: Option<&super::auth::RegistryLogin>,
    ) -> Result<ImageInfo, RuntimeError> {
        let info = self.puller.ensure_image(reference, login).await?;
        self.last_used
            .lock()
            .expect("last-used lock")
            .insert(Puller::record_name(reference), now_ms());
        Ok(info)
    }

    async fn create(&self, spec: &RunSpec) -> Result<(), RuntimeError> {
        self.create_container(spec).await
    }

    async fn start(&self, run: &RunSpec, generation: u64) -> Result<TaskStarted, RuntimeError> {
        self.start_task(run, generation).await
    }

    #[instrument(skip_all, fields(container_id = %id))]
    async fn kill(&self, id: &str, signal: u32) -> Result<(), RuntimeError> {
        match self
            .tasks()
            .kill(self.conn.req(KillRequest {
                container_id: id.to_owned(),
                exec_id: String::new(),
                signal,
                all: false,
            }))
            .await
        {
            Ok(_) => Ok(()),
            Err(s) if s.code() == Code::NotFound => Ok(()),
            Err(s) => Err(containerd_err("Tasks.Kill", id)(s)),
        }
    }

    #[instrument(skip_all, fields(container_id = %id))]
    async fn task(&self, id: &str) -> Result<Option<TaskInfo>, RuntimeError> {
        Ok(self.get_task(id).await?.as_ref().map(task_info))
    }

    async fn usage(&self, id: &str) -> Option<CgroupUsage> {
        // The cgroup's files: cheaper than containerd's Metrics call and
        // without its protobuf types (which containerd-client lacks).
        self.cgroups.usage(&self.cgroup_path(id)).await
    }

    async fn oom_killed(&self, id: &str) -> bool {
        match self.cgroups.oom_killed(&self.cgroup_path(id)).await {
            Ok(killed) => killed,
            Err(e) => {
                debug!(container_id = %id, cgroups = %self.cgroups, error = %e, "no OOM record");
                false
            }
        }
    }

    #[instrument(skip_all, fields(container_id = %id, generation = exit.generation))]
    async fn record_exit(&self, id: &str, exit: &ExitRecord) -> Result<(), RuntimeError> {
        let record = serde_json::to_string(exit).expect("ExitRecord serializes");
        self.set_label(id, LABEL_EXIT, record).await
    }

    async fn delete_task(&self, id: &str) -> Result<(), RuntimeError> {
        self.delete_task_inner(id).await?;
        let sandbox = self.sandboxes.sandbox_of(id);
        self.end_network(id, sandbox.as_deref()).await
    }

    async fn exec(
        &self,
        id: &str,
        spec: &super::exec::ExecSpec,
    ) -> Result<super::exec::ExecOutput, RuntimeError> {
        self.exec_in(id, spec).await
    }

    async fn attach(
        &self,
        id: &str,
        spec: &super::exec::AttachSpec,
        input: mpsc::Receiver<super::exec::AttachIn>,
        output: mpsc::Sender<Vec<u8>>,
    ) -> Result<i32, RuntimeError> {
        self.attach_in(id, spec, input, output).await
    }

    /// A sandbox member answers its sandbox's address.
    async fn ip(&self, id: &str) -> Option<std::net::Ipv4Addr> {
        let sandbox = self.sandboxes.sandbox_of(id);
        self.net
            .as_ref()?
            .ip(sandbox.as_deref().unwrap_or(id))
            .await
    }

    async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        self.remove_container(id).await
    }

    async fn list(&self) -> Result<Vec<ContainerInfo>, RuntimeError> {
        let containers = self.list_containers().await?;
        // One Tasks.List instead of a Get per container.
        let tasks: HashMap<String, Process> = self
            .list_tasks()
            .await?
            .into_iter()
            .map(|p| {
                let id = if p.container_id.is_empty() {
                    p.id.clone()
                } else {
                    p.container_id.clone()
                };
                (id, p)
            })
            .collect();
        Ok(containers
            .iter()
            .map(|c| Self::container_info(c, tasks.get(&c.id)))
            .collect())
    }

    async fn live_tasks(&self) -> Result<usize, RuntimeError> {
        Ok(self
            .list_tasks()
            .await?
            .iter()
            .filter(|p| task_info(p).status.is_live())
            .count())
    }

    async fn stored_images(&self) -> Result<Vec<StoredImage>, RuntimeError> {
        self.stored_image_records().await
    }

    async fn remove_image(&self, reference: &str) -> Result<(), RuntimeError> {
        self.remove_image_record(reference).await
    }

    async fn images(&self) -> Result<Vec<HeldImage>, RuntimeError> {
        self.held_images().await
    }

    fn events(&self) -> mpsc::Receiver<TaskEvent> {
        let (tx, rx) = mpsc::channel(1024);
        tokio::spawn(events::forward(
            self.conn.clone(),
            self.config.namespace.clone(),
            tx,
        ));
        rx
    }

    fn log_path(&self, id: &str) -> PathBuf {
        self.config.state_dir.join("logs").join(format!("{id}.log"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_are_validated() {
        assert!(valid_namespace("skiff"));
        assert!(valid_namespace("skiff-worker_1.a"));
        assert!(!valid_namespace(""));
        assert!(!valid_namespace("a--b"));
        assert!(!valid_namespace("a/b"));
    }
}
