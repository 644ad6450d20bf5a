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
    /// Every container record in the namespace, streamed one per message:
    /// a host with thousands of containers (each record carries its whole
    /// runtime spec) would pass gRPC's 4 MiB message limit in one List.
    async fn list_containers(&self) -> Result<Vec<Container>, RuntimeError> {
        self.list_containers_where(vec![]).await
    }

    /// The container records matching any of `filters` (containerd's
    /// filter syntax; none: every record).
    pub(super) async fn list_containers_where(
        &self,
        filters: Vec<String>,
    ) -> Result<Vec<Container>, RuntimeError> {
        let err = containerd_err("Containers.ListStream", "*");
        let mut stream = match self
            .containers()
            .list_stream(self.conn.req(ListContainersRequest { filters }))
            .await
        {
            Ok(r) => r.into_inner(),
            Err(s) => return Err(err(s)),
        };
        let mut out = Vec::new();
        loop {
            match stream.message().await {
                Ok(Some(message)) => out.extend(message.container),
                Ok(None) => return Ok(out),
                Err(s) => return Err(containerd_err("Containers.ListStream", "*")(s)),
            }
        }
    }

    /// Every image record in the namespace.
    async fn list_images(
        &self,
    ) -> Result<Vec<containerd_client::services::v1::Image>, RuntimeError> {
        Ok(ImagesClient::new(self.conn.channel.clone())
            .max_decoding_message_size(LIST_MAX_BYTES)
            .list(self.conn.req(ListImagesRequest { filters: vec![] }))
            .await
            .map_err(containerd_err("Images.List", "*"))?
            .into_inner()
            .images)
    }

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

    /// `msg` as a request in the worker's namespace.
    pub(super) fn conn_req<T>(&self, msg: T) -> Request<T> {
        self.conn.req(msg)
    }

    pub(super) fn tasks(&self) -> TasksClient<Channel> {
        // Tasks.List has no streaming form: room for many thousand tasks.
        TasksClient::new(self.conn.channel.clone()).max_decoding_message_size(LIST_MAX_BYTES)
    }

    pub(super) fn containers(&self) -> ContainersClient<Channel> {
        ContainersClient::new(self.conn.channel.clone())
    }

    pub(super) fn snapshots(&self) -> SnapshotsClient<Channel> {
        SnapshotsClient::new(self.conn.channel.clone())
    }

    /// The container's cgroup relative to a hierarchy's root (runc makes
    /// it from the spec's `cgroupsPath`, `<cgroup_parent>/<id>`).
    pub fn cgroup_path(&self, id: &str) -> PathBuf {
        Path::new(self.config.cgroup_parent.trim_start_matches('/')).join(id)
    }

    /// Every task in the namespace.
    async fn list_tasks(&self) -> Result<Vec<Process>, RuntimeError> {
        Ok(self
            .tasks()
            .list(self.conn.req(ListTasksRequest {
                filter: String::new(),
            }))
            .await
            .map_err(containerd_err("Tasks.List", "*"))?
            .into_inner()
            .tasks)
    }

    async fn get_task(&self, id: &str) -> Result<Option<Process>, RuntimeError> {
        match self
            .tasks()
            .get(self.conn.req(GetRequest {
                container_id: id.to_owned(),
                exec_id: String::new(),
            }))
            .await
        {
            Ok(r) => Ok(r.into_inner().process),
            Err(s) if s.code() == Code::NotFound => Ok(None),
            Err(s) => Err(containerd_err("Tasks.Get", id)(s)),
        }
    }

    async fn delete_task_inner(&self, id: &str) -> Result<(), RuntimeError> {
        match self
            .tasks()
            .delete(self.conn.req(DeleteTaskRequest {
                container_id: id.to_owned(),
            }))
            .await
        {
            Ok(_) => Ok(()),
            Err(s) if s.code() == Code::NotFound => Ok(()),
            Err(s) => Err(containerd_err("Tasks.Delete", id)(s)),
        }
    }

    /// SIGKILLs every process of the task and waits until it is reaped.
    async fn kill_and_wait(&self, id: &str) -> Result<(), RuntimeError> {
        match self
            .tasks()
            .kill(self.conn.req(KillRequest {
                container_id: id.to_owned(),
                exec_id: String::new(),
                signal: SIGKILL,
                all: true,
            }))
            .await
        {
            Ok(_) => {}
            // No task, or its process already exited.
            Err(s) if matches!(s.code(), Code::NotFound | Code::FailedPrecondition) => {}
            Err(s) => return Err(containerd_err("Tasks.Kill", id)(s)),
        }
        let mut tasks = self.tasks();
        let wait = tasks.wait(self.conn.req(WaitRequest {
            container_id: id.to_owned(),
            exec_id: String::new(),
        }));
        match tokio::time::timeout(KILL_WAIT, wait).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(s)) if s.code() == Code::NotFound => Ok(()),
            Ok(Err(s)) => Err(containerd_err("Tasks.Wait", id)(s)),
            Err(_) => Err(containerd_err("Tasks.Wait", id)(Status::deadline_exceeded(
                format!("task not stopped {}s after SIGKILL", KILL_WAIT.as_secs()),
            ))),
        }
    }

    /// Sets one label on the container record, leaving the others alone.
    async fn set_label(&self, id: &str, key: &str, value: String) -> Result<(), RuntimeError> {
        let container = Container {
            id: id.to_owned(),
            labels: HashMap::from([(key.to_owned(), value)]),
            ..Default::default()
        };
        self.containers()
            .update(self.conn.req(UpdateContainerRequest {
                container: Some(container),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec![format!("labels.{key}")],
                }),
            }))
            .await
            .map(|_| ())
            .map_err(containerd_err("Containers.Update", id))
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

    #[instrument(skip_all, fields(container_id = %spec.id, image = %spec.image_ref))]
    async fn create(&self, spec: &RunSpec) -> Result<(), RuntimeError> {
        let id = spec.id.as_str();
        sandbox::check(spec)?;
        let key = spec.sandbox_key();
        let exists = match self
            .containers()
            .get(self.conn.req(GetContainerRequest { id: id.to_owned() }))
            .await
        {
            Ok(_) => true,
            Err(s) if s.code() == Code::NotFound => false,
            Err(s) => return Err(containerd_err("Containers.Get", id)(s)),
        };
        if !exists {
            let net = match (&spec.network, &self.net) {
                (NetworkSpec::None, _) => None,
                (NetworkSpec::Private(_), Some(net)) => {
                    let (hosts, hostname) = net.hosts_files(key);
                    Some(spec::NetPaths {
                        netns: net.netns_path(key),
                        hosts,
                        hostname,
                    })
                }
                (NetworkSpec::Private(_), None) => {
                    return Err(RuntimeError::Spec {
                        id: id.to_owned(),
                        message: "a private network was asked for and this host offers none".into(),
                    })
                }
            };
            let user = self.process_user(spec).await?;
            // Holds secure env values: never logged.
            let oci = spec::build(spec, &self.spec_options, &user, net.as_ref())?;
            let value = serde_json::to_vec(&oci).map_err(|e| RuntimeError::Spec {
                id: id.to_owned(),
                message: e.to_string(),
            })?;
            let container = Container {
                id: id.to_owned(),
                // Its sandbox, for a restarted worker and the last removal.
                labels: spec
                    .sandbox
                    .iter()
                    .map(|s| (LABEL_SANDBOX.to_owned(), s.clone()))
                    .collect(),
                image: spec.image_ref.clone(),
                runtime: Some(ContainerRuntimeInfo {
                    name: RUNC_RUNTIME.to_owned(),
                    options: None,
                }),
                spec: Some(prost_types::Any {
                    type_url: SPEC_TYPE_URL.to_owned(),
                    value,
                }),
                snapshotter: SNAPSHOTTER.to_owned(),
                snapshot_key: id.to_owned(),
                ..Default::default()
            };
            match self
                .containers()
                .create(self.conn.req(CreateContainerRequest {
                    container: Some(container),
                }))
                .await
            {
                Ok(_) => {}
                Err(s) if s.code() == Code::AlreadyExists => {}
                Err(s) => return Err(containerd_err("Containers.Create", id)(s)),
            }
        }
        // After the container record: it is what keeps the snapshot from GC.
        match self
            .snapshots()
            .prepare(self.conn.req(PrepareSnapshotRequest {
                snapshotter: SNAPSHOTTER.to_owned(),
                key: id.to_owned(),
                parent: spec.image.top_chain_id.clone(),
                labels: HashMap::new(),
            }))
            .await
        {
            Ok(prepared) if !exists => {
                self.fresh
                    .lock()
                    .expect("fresh containers lock")
                    .insert(id.to_owned(), prepared.into_inner().mounts);
            }
            Ok(_) => {}
            Err(s) if s.code() == Code::AlreadyExists => {}
            Err(s) => return Err(containerd_err("Snapshots.Prepare", id)(s)),
        }
        debug!("container created");
        Ok(())
    }

    #[instrument(skip_all, fields(container_id = %run.id))]
    async fn start(&self, run: &RunSpec, generation: u64) -> Result<TaskStarted, RuntimeError> {
        let id = run.id.as_str();
        sandbox::check(run)?;
        let fresh = self.fresh.lock().expect("fresh containers lock").remove(id);
        let old = match fresh {
            Some(_) => None,
            None => self.get_task(id).await?,
        };
        if let Some(old) = old {
            match task_info(&old).status {
                TaskStatus::Running | TaskStatus::Paused => {
                    return Err(containerd_err("start", id)(Status::failed_precondition(
                        "the previous task is still running; stop it first",
                    )));
                }
                TaskStatus::Created => {
                    // Created but never started (e.g. a crash between
                    // create and start): it has a live init, kill it first.
                    self.kill_and_wait(id).await?;
                    self.delete_task_inner(id).await?;
                }
                TaskStatus::Stopped | TaskStatus::Unknown => self.delete_task(id).await?,
            }
        }
        self.set_label(id, LABEL_GENERATION, generation.to_string())
            .await?;

        let mounts = match fresh {
            Some(mounts) => mounts,
            None => {
                self.snapshots()
                    .mounts(self.conn.req(MountsRequest {
                        snapshotter: SNAPSHOTTER.to_owned(),
                        key: id.to_owned(),
                    }))
                    .await
                    .map_err(containerd_err("Snapshots.Mounts", id))?
                    .into_inner()
                    .mounts
            }
        };

        let log = self.log_path(id);
        if let Some(dir) = log.parent() {
            std::fs::create_dir_all(dir).map_err(|source| RuntimeError::Io {
                op: "creating the log directory",
                id: id.to_owned(),
                source,
            })?;
        }
        // The shim runs skiff-logger (containerd's binary:// driver), which
        // outlives a worker restart like the shim does. Not file://: see
        // worker/src/bin/skiff-logger.rs for how that loses stderr.
        let uri = format!(
            "binary://{}?file={}&cap={}",
            self.config.logger.display(),
            log.display(),
            self.config.log_max_bytes
        );
        // Its sandbox's (or its own) network and volumes: set up by this
        // start, or, a member joining, already in place.
        let key = run.sandbox_key();
        let entry = self.enter_sandbox(run).await;
        let net = match (&run.network, &self.net) {
            (NetworkSpec::Private(req), Some(net)) if !entry.joined => Some((net, req)),
            _ => None,
        };
        if let Some((net, req)) = net {
            net.prepare(key, &run.hostname, req)
                .await
                .map_err(net_err(id))?;
        }
        if !entry.joined && !run.volumes.is_empty() {
            let user = self.process_user(run).await?;
            volumes::prepare(
                &self.spec_options.volumes_root,
                key,
                &run.volumes,
                user.uid,
                user.gid,
            )
            .await?;
        }
        let mut tasks = self.tasks();
        let create = tasks.create(self.conn.req(CreateTaskRequest {
            container_id: id.to_owned(),
            rootfs: mounts,
            stdout: uri.clone(),
            stderr: uri,
            ..Default::default()
        }));
        // The namespace exists: runc joins it while the plugins attach it
        // to the bridge (the process starts only after both).
        let (created, connected) = match net {
            Some((net, req)) => {
                let (created, connected) =
                    tokio::join!(create, net.connect(key, &run.hostname, req));
                (created, Some(connected))
            }
            None => (create.await, None),
        };
        if let Err(s) = created {
            if let Some(Ok(_)) = connected {
                // Set up by this start (a sandbox's, held: nobody is in).
                self.detach(key).await;
            }
            if entry.joined {
                self.end_network_logged(id, run.sandbox.as_deref()).await;
            }
            return Err(containerd_err("Tasks.Create", id)(s));
        }
        let ip = match connected {
            Some(Err(e)) => {
                // connect tore its part down; the task goes too.
                let _ = self.kill_and_wait(id).await;
                let _ = self.delete_task_inner(id).await;
                return Err(net_err(id)(e));
            }
            Some(Ok(ip)) => Some(ip),
            None => entry.ip,
        };
        entry.set_up(id);
        // Stamped before Start: the process begins during that call, so this
        // is never after a fast process's exit time (which containerd stamps),
        // and it over-states a run by at most the call's few milliseconds.
        let started_at_unix_ms = now_ms();
        let started = self
            .tasks()
            .start(self.conn.req(StartRequest {
                container_id: id.to_owned(),
                exec_id: String::new(),
            }))
            .await;
        let pid = match started {
            Ok(r) => r.into_inner().pid,
            Err(s) => {
                // Leave no half-started task behind: the next start retries cleanly.
                let _ = self.kill_and_wait(id).await;
                let _ = self.delete_task(id).await;
                self.end_network_logged(id, run.sandbox.as_deref()).await;
                return Err(containerd_err("Tasks.Start", id)(s));
            }
        };
        info!(pid, generation, "task started");
        Ok(TaskStarted {
            pid,
            started_at_unix_ms,
            ip,
        })
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

    #[instrument(skip_all, fields(container_id = %id))]
    async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        self.fresh.lock().expect("fresh containers lock").remove(id);
        // Read before the record goes: the sandbox's network and volumes
        // may go with it.
        let sandbox = match self.sandbox_label(id).await? {
            Some(sandbox) => Some(sandbox),
            None => self.sandboxes.sandbox_of(id),
        };
        if self.get_task(id).await?.is_some() {
            self.kill_and_wait(id).await?;
            self.delete_task_inner(id).await?;
        }
        self.end_network(id, sandbox.as_deref()).await?;
        match self
            .containers()
            .delete(self.conn.req(DeleteContainerRequest { id: id.to_owned() }))
            .await
        {
            Ok(_) => {}
            Err(s) if s.code() == Code::NotFound => {}
            Err(s) => return Err(containerd_err("Containers.Delete", id)(s)),
        }
        match self
            .snapshots()
            .remove(self.conn.req(RemoveSnapshotRequest {
                snapshotter: SNAPSHOTTER.to_owned(),
                key: id.to_owned(),
            }))
            .await
        {
            Ok(_) => {}
            // GC may already have taken it once the container record went.
            Err(s) if s.code() == Code::NotFound => {}
            Err(s) => return Err(containerd_err("Snapshots.Remove", id)(s)),
        }
        volumes::remove(&self.spec_options.volumes_root, id).await?;
        if let Some(sandbox) = &sandbox {
            self.remove_sandbox_volumes(sandbox).await?;
        }
        let log = self.log_path(id);
        for path in [crate::logcap::lock_path(&log), log] {
            match tokio::fs::remove_file(path).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(RuntimeError::Io {
                        op: "removing the log file",
                        id: id.to_owned(),
                        source,
                    })
                }
            }
        }
        // runc removes the cgroups it created with the task; this catches
        // those left by a crashed shim. rmdir only succeeds on empty ones.
        for dir in self.cgroups.remove_leftovers(&self.cgroup_path(id)).await {
            debug!(dir = %dir.display(), "removed leftover cgroup");
        }
        info!("container removed");
        Ok(())
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
        let images = self.list_images().await?;
        let in_use: std::collections::HashSet<String> = self
            .list_containers()
            .await?
            .into_iter()
            .map(|c| Puller::record_name(&c.image))
            .collect();
        let last_used = self.last_used.lock().expect("last-used lock").clone();
        let mut out = Vec::new();
        for image in images {
            let Some(target) = &image.target else {
                continue;
            };
            let blobs =
                self.puller
                    .blobs_of(target)
                    .await
                    .map_err(|message| RuntimeError::Pull {
                        image: image.name.clone(),
                        message,
                    })?;
            let pulled = image
                .updated_at
                .as_ref()
                .or(image.created_at.as_ref())
                .map_or(0, ts_ms);
            out.push(StoredImage {
                in_use: in_use.contains(&image.name),
                last_used_unix_ms: last_used.get(&image.name).copied().unwrap_or(pulled),
                reference: image.name,
                blobs,
            });
        }
        Ok(out)
    }

    async fn remove_image(&self, reference: &str) -> Result<(), RuntimeError> {
        match ImagesClient::new(self.conn.channel.clone())
            .delete(self.conn.req(DeleteImageRequest {
                name: reference.to_owned(),
                // Wait for containerd's GC: the space is free on return.
                sync: true,
                target: None,
            }))
            .await
        {
            Ok(_) => {}
            Err(s) if s.code() == Code::NotFound => {}
            Err(s) => return Err(containerd_err("Images.Delete", reference)(s)),
        }
        self.last_used
            .lock()
            .expect("last-used lock")
            .remove(reference);
        self.puller.forget(&Puller::record_name(reference));
        Ok(())
    }

    async fn images(&self) -> Result<Vec<HeldImage>, RuntimeError> {
        let images = self.list_images().await?;
        // The puller creates an image record only once every layer is
        // unpacked, so a listed image is one a container can start from.
        Ok(images
            .into_iter()
            .filter_map(|image| {
                Some(HeldImage {
                    digest: image.target?.digest,
                    reference: image.name,
                })
            })
            .collect())
    }

    fn events(&self) -> mpsc::Receiver<TaskEvent> {
        let (tx, rx) = mpsc::channel(1024);
        tokio::spawn(forward_events(
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

/// Subscribes to task exit and OOM events in our namespace and forwards
/// those of main processes, re-subscribing with back-off when the stream
/// breaks. Ends when the receiver is dropped. Events that happen while
/// disconnected are lost; the agent's reconcile reads task state anyway.
async fn forward_events(conn: Conn, namespace: String, tx: mpsc::Sender<TaskEvent>) {
    // Re-subscribing: soon at first, at most every few seconds; a
    // subscription that worked starts the back-off afresh.
    const RESUBSCRIBE: ExponentialBuilder = ExponentialBuilder::new()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(5))
        .with_jitter()
        .without_max_times();
    let mut backoff = RESUBSCRIBE.build();
    let filters = vec![
        format!(r#"topic=="/tasks/exit",namespace=="{namespace}""#),
        format!(r#"topic=="/tasks/oom",namespace=="{namespace}""#),
    ];
    loop {
        let mut client = EventsClient::new(conn.channel.clone());
        // Subscribe only returns once the first event arrives (containerd
        // sends headers lazily), so it is awaited here, in its own task.
        let subscribed = tokio::select! {
            r = client.subscribe(conn.req(SubscribeRequest { filters: filters.clone() })) => r,
            _ = tx.closed() => return,
        };
        match subscribed {
            Ok(response) => {
                backoff = RESUBSCRIBE.build();
                let mut stream = response.into_inner();
                loop {
                    let next = tokio::select! {
                        m = stream.message() => m,
                        _ = tx.closed() => return,
                    };
                    match next {
                        Ok(Some(envelope)) => {
                            if let Some(event) = decode_event(&envelope, &namespace) {
                                debug!(?event, "task event");
                                if tx.send(event).await.is_err() {
                                    return;
                                }
                            }
                        }
                        Ok(None) => {
                            warn!("containerd event stream ended; re-subscribing");
                            break;
                        }
                        Err(s) => {
                            warn!(error = %s, "containerd event stream failed; re-subscribing");
                            break;
                        }
                    }
                }
            }
            Err(s) => warn!(error = %s, "subscribing to containerd events"),
        }
        // Without a max_times the back-off never runs out.
        let delay = backoff.next().unwrap_or(Duration::from_secs(5));
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = tx.closed() => return,
        }
    }
}

/// Event `Any`s carry type URLs without a '/' (`containerd.events.TaskExit`).
fn decode_event(
    envelope: &containerd_client::types::Envelope,
    namespace: &str,
) -> Option<TaskEvent> {
    if envelope.namespace != namespace {
        return None;
    }
    let any = envelope.event.as_ref()?;
    let type_name = any.type_url.rsplit('/').next().unwrap_or_default();
    match type_name {
        "containerd.events.TaskExit" => {
            let exit = TaskExit::decode(any.value.as_slice()).ok()?;
            // Exec'd processes exit too; only the main process ends the run.
            if !exit.id.is_empty() && exit.id != exit.container_id {
                return None;
            }
            Some(TaskEvent::Exited {
                id: exit.container_id,
                exit_code: exit.exit_status as i32,
                exited_at_unix_ms: exit.exited_at.as_ref().map_or_else(now_ms, ts_ms),
            })
        }
        "containerd.events.TaskOOM" | "containerd.events.TaskOom" => {
            let oom = TaskOom::decode(any.value.as_slice()).ok()?;
            Some(TaskEvent::OomKilled {
                id: oom.container_id,
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope<M: Message>(type_url: &str, msg: &M) -> containerd_client::types::Envelope {
        containerd_client::types::Envelope {
            timestamp: None,
            namespace: "skiff-test".into(),
            topic: "/tasks/exit".into(),
            event: Some(prost_types::Any {
                type_url: type_url.into(),
                value: msg.encode_to_vec(),
            }),
        }
    }

    #[test]
    fn only_main_process_exits_are_forwarded() {
        let main = TaskExit {
            container_id: "c1".into(),
            id: "c1".into(),
            pid: 10,
            exit_status: 3,
            exited_at: Some(prost_types::Timestamp {
                seconds: 1,
                nanos: 500_000_000,
            }),
        };
        match decode_event(&envelope("containerd.events.TaskExit", &main), "skiff-test") {
            Some(TaskEvent::Exited {
                id,
                exit_code,
                exited_at_unix_ms,
            }) => {
                assert_eq!(id, "c1");
                assert_eq!(exit_code, 3);
                assert_eq!(exited_at_unix_ms, 1500);
            }
            other => panic!("unexpected {other:?}"),
        }
        let exec = TaskExit {
            id: "exec-1".into(),
            ..main.clone()
        };
        assert!(
            decode_event(&envelope("containerd.events.TaskExit", &exec), "skiff-test").is_none()
        );
        assert!(decode_event(&envelope("containerd.events.TaskExit", &main), "other").is_none());
        let oom = TaskOom {
            container_id: "c1".into(),
        };
        assert!(matches!(
            decode_event(&envelope("containerd.events.TaskOOM", &oom), "skiff-test"),
            Some(TaskEvent::OomKilled { id }) if id == "c1"
        ));
    }

    #[test]
    fn namespaces_are_validated() {
        assert!(valid_namespace("skiff"));
        assert!(valid_namespace("skiff-worker_1.a"));
        assert!(!valid_namespace(""));
        assert!(!valid_namespace("a--b"));
        assert!(!valid_namespace("a/b"));
    }
}
