//! The host agent: registers with the control plane, keeps heartbeating,
//! receives the host's desired set, and makes containerd match it.
//!
//! One supervisor task per container serializes everything done to that
//! container (pull, create, start, stop, remove) while different containers
//! proceed in parallel. Supervisors are level-triggered: on every new
//! assignment, task event or periodic tick they compare what should be with
//! what containerd reports and take the next step, so repeating a step or
//! restarting the worker is always safe. The worker never stops containers
//! when it exits: containerd's shims keep them running, and a restarted
//! worker re-adopts them from containerd's own records.

use crate::runtime::{
    ContainerInfo, ExitRecord, RunSpec, Runtime, RuntimeError, TaskEvent, TaskInfo, TaskStatus,
};
use skiff_core::{CpuMillis, MemoryMib, Reason};
use skiff_proto as pb;
use skiff_proto::control_plane_client::ControlPlaneClient;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch, Mutex, Semaphore};
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};
use tracing::Instrument;

/// How often a supervisor re-checks containerd without being woken; also
/// the meter checkpoint interval of a running container (the issue asks
/// for at least one every 10 s).
const RESYNC: Duration = Duration::from_secs(5);
/// Re-check interval of a container with no running task: exits, stops and
/// new runs arrive as events or assignments, so this is only a safety net.
const IDLE_RESYNC: Duration = Duration::from_secs(60);
/// Checkpoints closer together than this add nothing but load.
const CHECKPOINT_MIN_GAP_MS: i64 = 2_000;
/// After SIGKILL, how long to wait for the task to be reaped.
const KILL_GRACE: Duration = Duration::from_secs(10);
const SIGTERM: u32 = 15;
const SIGKILL: u32 = 9;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("control plane address {addr}: {source}")]
    Endpoint {
        addr: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

/// Facts about this host that the control plane needs at registration.
#[derive(Debug, Clone)]
pub struct HostInfo {
    pub host_id: String,
    pub agent_addr: String,
    pub cpu_millis: u32,
    pub memory_mib: u64,
}

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Sends reports until the control plane acknowledges them. Reports are
/// idempotent on the other side, so retrying after an unclear failure is safe.
#[derive(Clone)]
struct Reporter {
    client: ControlPlaneClient<Channel>,
    host_id: String,
    shutdown: CancellationToken,
}

impl Reporter {
    /// Meter checkpoints are sent once: the next one, a few seconds later,
    /// supersedes a lost one, and the run's end is reported reliably anyway.
    async fn checkpoint(&self, mut checkpoint: pb::UsageCheckpoint) {
        checkpoint.host_id = self.host_id.clone();
        if let Err(status) = self.client.clone().report_usage(checkpoint).await {
            tracing::debug!(%status, "meter checkpoint not delivered");
        }
    }

    async fn send(&self, mut report: pb::StatusReport) {
        report.host_id = self.host_id.clone();
        let mut delay = Duration::from_millis(100);
        loop {
            match self.client.clone().report_status(report.clone()).await {
                Ok(_) => return,
                Err(status) => {
                    tracing::warn!(container = %report.container_id, %status, "report not delivered; retrying");
                }
            }
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(Duration::from_secs(2));
        }
    }
}

fn event(generation: u64, kind: &str, message: impl Into<String>) -> pb::Event {
    pb::Event {
        key: format!("{generation}:{}", kind.to_ascii_lowercase()),
        kind: kind.to_owned(),
        message: message.into(),
        at_unix_ms: now_ms(),
    }
}

fn report(id: &str, generation: u64, state: pb::ObservedState) -> pb::StatusReport {
    pb::StatusReport {
        container_id: id.to_owned(),
        generation,
        state: state as i32,
        ..Default::default()
    }
}

/// Handle to one container's supervisor.
struct Supervisor {
    desired: watch::Sender<pb::Assignment>,
    events: mpsc::UnboundedSender<TaskEvent>,
}

pub struct Agent<R: Runtime> {
    runtime: Arc<R>,
    /// Bounds container creations+starts in flight: each spawns a shim and
    /// runc, and a burst of hundreds at once on a small host thrashes the
    /// CPU and finishes later than a steady queue.
    start_slots: Arc<Semaphore>,
    host: HostInfo,
    control_plane: String,
    supervisors: Mutex<HashMap<String, Supervisor>>,
    /// What containerd held when the worker started: supervisors adopt from it.
    adopted: Mutex<HashMap<String, ContainerInfo>>,
    shutdown: CancellationToken,
}

impl<R: Runtime> Agent<R> {
    pub fn new(
        runtime: Arc<R>,
        max_concurrent_starts: usize,
        host: HostInfo,
        control_plane: String,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        Arc::new(Self {
            runtime,
            start_slots: Arc::new(Semaphore::new(max_concurrent_starts.max(1))),
            host,
            control_plane,
            supervisors: Mutex::new(HashMap::new()),
            adopted: Mutex::new(HashMap::new()),
            shutdown,
        })
    }

    /// Runs until shutdown: (re)connects to the control plane and applies
    /// every assignment set it sends. Containers are left running at exit.
    pub async fn run(self: Arc<Self>) -> Result<(), AgentError> {
        let existing = self.runtime.list().await?;
        tracing::info!(containers = existing.len(), "found containers to re-adopt");
        *self.adopted.lock().await = existing.into_iter().map(|c| (c.id.clone(), c)).collect();

        let endpoint = Endpoint::from_shared(self.control_plane.clone())
            .map_err(|source| AgentError::Endpoint {
                addr: self.control_plane.clone(),
                source,
            })?
            .connect_timeout(Duration::from_secs(3))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_while_idle(true);
        let client = ControlPlaneClient::new(endpoint.connect_lazy());
        let reporter = Reporter {
            client: client.clone(),
            host_id: self.host.host_id.clone(),
            shutdown: self.shutdown.clone(),
        };

        tokio::spawn(self.clone().route_events());

        let mut delay = Duration::from_millis(200);
        while !self.shutdown.is_cancelled() {
            match self.session(client.clone(), &reporter).await {
                Ok(()) => delay = Duration::from_millis(200),
                Err(status) => {
                    tracing::warn!(%status, "control plane session ended; reconnecting");
                }
            }
            tokio::select! {
                _ = self.shutdown.cancelled() => break,
                _ = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(Duration::from_secs(5));
        }
        tracing::info!("worker stopping; containers keep running under their shims");
        Ok(())
    }

    /// One connection's life: register, heartbeat, follow assignments.
    async fn session(
        self: &Arc<Self>,
        mut client: ControlPlaneClient<Channel>,
        reporter: &Reporter,
    ) -> Result<(), tonic::Status> {
        let version = self
            .runtime
            .version()
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        let registered = client
            .register(pb::RegisterRequest {
                host_id: self.host.host_id.clone(),
                agent_addr: self.host.agent_addr.clone(),
                cpu_millis: self.host.cpu_millis,
                memory_mib: self.host.memory_mib,
                containerd_version: version,
                hostname: self.host.host_id.clone(),
            })
            .await?
            .into_inner();
        tracing::info!(host = %self.host.host_id, "registered with the control plane");
        let session_done = CancellationToken::new();
        let heartbeat = {
            let mut client = client.clone();
            let host_id = self.host.host_id.clone();
            let interval =
                Duration::from_millis(u64::from(registered.heartbeat_interval_ms.max(500)));
            let done = session_done.clone();
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = done.cancelled() => return,
                        _ = tokio::time::sleep(interval) => {}
                    }
                    if let Err(status) = client
                        .heartbeat(pb::HeartbeatRequest {
                            host_id: host_id.clone(),
                        })
                        .await
                    {
                        tracing::warn!(%status, "heartbeat failed");
                        if status.code() == tonic::Code::NotFound {
                            // The control plane forgot us: end the session to re-register.
                            done.cancel();
                            return;
                        }
                    }
                }
            })
        };
        let _stop_heartbeat = session_done.clone().drop_guard();

        let mut stream = client
            .watch_assignments(pb::WatchRequest {
                host_id: self.host.host_id.clone(),
            })
            .await?
            .into_inner();
        loop {
            let message = tokio::select! {
                _ = self.shutdown.cancelled() => return Ok(()),
                _ = session_done.cancelled() => return Err(tonic::Status::unavailable("heartbeat rejected")),
                message = stream.message() => message?,
            };
            let Some(set) = message else {
                return Err(tonic::Status::unavailable("assignment stream closed"));
            };
            self.apply(set, reporter).await;
            if heartbeat.is_finished() {
                return Err(tonic::Status::unavailable("heartbeat task ended"));
            }
        }
    }

    /// Hands each assignment to its supervisor, starting supervisors as needed.
    async fn apply(self: &Arc<Self>, set: pb::AssignmentSet, reporter: &Reporter) {
        let mut supervisors = self.supervisors.lock().await;
        supervisors.retain(|_, s| !s.desired.is_closed());
        for assignment in set.assignments {
            let id = assignment.container_id.clone();
            if uuid::Uuid::parse_str(&id).is_err() {
                tracing::warn!(container = %id, "ignoring an assignment with a malformed id");
                continue;
            }
            if let Some(existing) = supervisors.get(&id) {
                existing.desired.send_if_modified(|current| {
                    let changed = *current != assignment;
                    *current = assignment;
                    changed
                });
                continue;
            }
            let adopted = self.adopted.lock().await.remove(&id);
            let (desired_tx, desired_rx) = watch::channel(assignment);
            let (events_tx, events_rx) = mpsc::unbounded_channel();
            let (outbox, mut queued) = mpsc::unbounded_channel::<pb::StatusReport>();
            {
                let reporter = reporter.clone();
                tokio::spawn(async move {
                    while let Some(report) = queued.recv().await {
                        reporter.send(report).await;
                    }
                });
            }
            let supervisor = ContainerSupervisor {
                id: id.clone(),
                runtime: self.runtime.clone(),
                start_slots: self.start_slots.clone(),
                reporter: reporter.clone(),
                desired: desired_rx,
                events: events_rx,
                shutdown: self.shutdown.clone(),
                observed: Observed::from(adopted),
                last_sent: None,
                oom_seen: false,
                last_checkpoint_ms: None,
                resent_last_exit: false,
                task_running: false,
                outbox,
            };
            tokio::spawn(
                supervisor
                    .run()
                    .instrument(tracing::info_span!("container", id = %id)),
            );
            supervisors.insert(
                id,
                Supervisor {
                    desired: desired_tx,
                    events: events_tx,
                },
            );
        }
    }

    /// Forwards containerd task events to the supervisor of their container.
    async fn route_events(self: Arc<Self>) {
        let mut events = self.runtime.events();
        while let Some(event) = events.recv().await {
            let id = match &event {
                TaskEvent::Exited { id, .. } | TaskEvent::OomKilled { id } => id.clone(),
            };
            if let Some(supervisor) = self.supervisors.lock().await.get(&id) {
                let _ = supervisor.events.send(event);
            }
        }
    }
}

/// What the supervisor knows of its container in containerd.
#[derive(Debug, Default, Clone)]
struct Observed {
    /// Generation of the run last started (containerd label).
    generation: u64,
    last_exit: Option<ExitRecord>,
    started_at_unix_ms: Option<i64>,
    /// A generation whose start failed for good (pull or create error).
    failed_generation: Option<u64>,
}

impl From<Option<ContainerInfo>> for Observed {
    fn from(info: Option<ContainerInfo>) -> Self {
        match info {
            Some(info) => Self {
                generation: info.generation,
                last_exit: info.last_exit,
                // The worker that started the run is gone; the kernel still
                // knows when the process began.
                started_at_unix_ms: info
                    .task
                    .as_ref()
                    .filter(|t| t.pid > 0)
                    .and_then(|t| process_started_unix_ms(t.pid)),
                failed_generation: None,
            },
            None => Self::default(),
        }
    }
}

/// When process `pid` started, from /proc: `starttime` (field 22 of
/// /proc/<pid>/stat) counts USER_HZ ticks since boot, and USER_HZ is 100 on
/// Linux/x86; boot time comes from /proc/uptime's centiseconds.
fn process_started_unix_ms(pid: u32) -> Option<i64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces: fields count from after its ')'.
    let after_comm = &stat[stat.rfind(')')? + 2..];
    let start_ticks: i64 = after_comm.split_whitespace().nth(19)?.parse().ok()?;
    let uptime = std::fs::read_to_string("/proc/uptime").ok()?;
    let uptime_s: f64 = uptime.split_whitespace().next()?.parse().ok()?;
    let boot_ms = now_ms() - (uptime_s * 1000.0) as i64;
    Some(boot_ms + start_ticks * 10)
}

/// Whether the supervisor should keep going after a step.
enum Next {
    Wait,
    Again,
    Exit,
}

struct ContainerSupervisor<R: Runtime> {
    id: String,
    runtime: Arc<R>,
    start_slots: Arc<Semaphore>,
    reporter: Reporter,
    desired: watch::Receiver<pb::Assignment>,
    events: mpsc::UnboundedReceiver<TaskEvent>,
    shutdown: CancellationToken,
    observed: Observed,
    /// The last (generation, state) reported, so a steady state is not re-sent on every tick.
    last_sent: Option<(u64, pb::ObservedState)>,
    oom_seen: bool,
    last_checkpoint_ms: Option<i64>,
    /// Whether this supervisor has re-sent the last run's exit (see step()).
    resent_last_exit: bool,
    /// Whether the last step saw a live task (sets the re-check interval).
    task_running: bool,
    /// Reports waiting for delivery, in order (see [`ContainerSupervisor::send`]).
    outbox: mpsc::UnboundedSender<pb::StatusReport>,
}

impl<R: Runtime> ContainerSupervisor<R> {
    async fn run(mut self) {
        loop {
            let assignment = self.desired.borrow_and_update().clone();
            let next = match self.step(&assignment).await {
                Ok(next) => next,
                Err(err) => {
                    tracing::warn!(container = %self.id, error = %err, "reconcile step failed; will retry");
                    Next::Wait
                }
            };
            match next {
                Next::Exit => return,
                Next::Again => continue,
                Next::Wait => {}
            }
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                changed = self.desired.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                Some(event) = self.events.recv() => self.note_event(&event),
                _ = tokio::time::sleep(if self.task_running { RESYNC } else { IDLE_RESYNC }) => {}
            }
        }
    }

    fn note_event(&mut self, event: &TaskEvent) {
        if let TaskEvent::OomKilled { .. } = event {
            self.oom_seen = true;
        }
    }

    /// Queues a report for in-order delivery. The supervisor does not wait
    /// for the control plane: the facts are already recorded in containerd,
    /// and waiting would put a database round trip on the start path.
    fn send(&mut self, report: pb::StatusReport) {
        let state = pb::ObservedState::try_from(report.state).unwrap_or_default();
        self.last_sent = Some((report.generation, state));
        let _ = self.outbox.send(report);
    }

    /// One reconcile step towards the assignment.
    async fn step(&mut self, a: &pb::Assignment) -> Result<Next, RuntimeError> {
        let desired =
            pb::DesiredState::try_from(a.desired).unwrap_or(pb::DesiredState::Unspecified);
        // Taken before asking containerd, so a checkpoint never claims more
        // running time than was observed.
        let observed_at = now_ms();
        let task = self.runtime.task(&self.id).await?;
        let running = task.as_ref().is_some_and(|t| {
            matches!(
                t.status,
                TaskStatus::Running | TaskStatus::Paused | TaskStatus::Created
            )
        });

        self.task_running = running;
        // Created but never started (the worker died between create and
        // start): not running, whatever containerd's status suggests.
        let never_started = task
            .as_ref()
            .is_some_and(|t| t.status == TaskStatus::Created);

        // A task that has stopped is recorded and reported first, whatever is desired.
        if let Some(t) = task.as_ref().filter(|t| t.status == TaskStatus::Stopped) {
            self.finish(t).await?;
            return Ok(Next::Again);
        }
        // A new supervisor (the worker restarted) re-sends the last run's
        // exit once: its report may have been queued when the worker died.
        if !self.resent_last_exit {
            self.resent_last_exit = true;
            if let Some(exit) = self
                .observed
                .last_exit
                .clone()
                .filter(|e| e.generation == self.observed.generation && !running)
            {
                self.report_exit(&exit).await;
            }
        }

        match desired {
            pb::DesiredState::Deleted => {
                if running {
                    self.stop(a).await?;
                    return Ok(Next::Again);
                }
                self.runtime.remove(&self.id).await?;
                let mut r = report(&self.id, a.generation, pb::ObservedState::Removed);
                r.events.push(event(
                    a.generation,
                    "Removed",
                    "container removed from the host",
                ));
                self.send(r);
                tracing::info!(container = %self.id, "removed");
                Ok(Next::Exit)
            }
            pb::DesiredState::Stopped | pb::DesiredState::Unspecified => {
                if running {
                    self.stop(a).await?;
                    return Ok(Next::Again);
                }
                if self.observed.generation < a.generation
                    && self.last_sent != Some((a.generation, pb::ObservedState::Exited))
                {
                    // This generation never ran: say so, so the control plane settles it.
                    let mut r = report(&self.id, a.generation, pb::ObservedState::Exited);
                    r.finished_at_unix_ms = Some(now_ms());
                    self.send(r);
                }
                Ok(Next::Wait)
            }
            pb::DesiredState::Running => {
                if self.observed.generation == a.generation && never_started {
                    // runtime.start replaces a Created task.
                    self.start(a).await;
                    return Ok(Next::Wait);
                }
                if self.observed.generation == a.generation {
                    if running {
                        if self.last_sent != Some((a.generation, pb::ObservedState::Running)) {
                            // Re-adopted after a worker restart, or a report not yet sent.
                            let mut r = report(&self.id, a.generation, pb::ObservedState::Running);
                            r.pid = task.as_ref().map_or(0, |t| t.pid);
                            r.started_at_unix_ms = self.observed.started_at_unix_ms;
                            self.send(r);
                        }
                        self.checkpoint(a.generation, observed_at).await;
                        return Ok(Next::Wait);
                    }
                    if let Some(exit) = self
                        .observed
                        .last_exit
                        .clone()
                        .filter(|e| e.generation == a.generation)
                    {
                        if self.last_sent != Some((a.generation, pb::ObservedState::Exited)) {
                            self.report_exit(&exit).await;
                        }
                        return Ok(Next::Wait);
                    }
                    if self.observed.failed_generation != Some(a.generation) {
                        // Labelled as started, yet no task and no recorded
                        // exit: the task vanished (host or containerd restart,
                        // or a crash mid-start). Running it again under the
                        // same generation would hide that and bill unseen time.
                        self.fail(
                            a.generation,
                            Reason::TaskLost,
                            "the task of this run vanished from containerd without an exit".into(),
                        )
                        .await;
                    }
                    return Ok(Next::Wait);
                } else if running {
                    // An older run is still going: a restart was asked for.
                    self.stop(a).await?;
                    return Ok(Next::Again);
                } else if self.observed.failed_generation == Some(a.generation) {
                    return Ok(Next::Wait);
                }
                self.start(a).await;
                Ok(Next::Wait)
            }
        }
    }

    /// Whether a newer assignment (stop, delete, another run) replaced `a`
    /// while it was being started: the next step acts on that one instead.
    fn superseded(&self, a: &pb::Assignment) -> bool {
        let current = self.desired.borrow();
        current.generation != a.generation || current.desired != a.desired
    }

    /// Tells the meter the task of `generation` was running at `observed_at`.
    async fn checkpoint(&mut self, generation: u64, observed_at: i64) {
        if self
            .last_checkpoint_ms
            .is_some_and(|last| observed_at - last < CHECKPOINT_MIN_GAP_MS)
        {
            return;
        }
        self.last_checkpoint_ms = Some(observed_at);
        let usage = self.runtime.usage(&self.id).await.unwrap_or_default();
        self.reporter
            .checkpoint(pb::UsageCheckpoint {
                report_id: format!("{}:{generation}:{observed_at}", self.id),
                host_id: String::new(),
                container_id: self.id.clone(),
                generation,
                observed_at_unix_ms: observed_at,
                cpu_usage_ns: usage.cpu_usage_ns,
                peak_memory_bytes: usage.peak_memory_bytes,
            })
            .await;
    }

    /// Pulls, creates and starts run `a.generation`, reporting each phase.
    async fn start(&mut self, a: &pb::Assignment) {
        let generation = a.generation;
        let spec = a.spec.clone().unwrap_or_default();
        let mut r = report(&self.id, generation, pb::ObservedState::Pulling);
        r.events.push(event(
            generation,
            "Pulling",
            format!("pulling image {}", spec.image),
        ));
        self.send(r);

        let pull_started = Instant::now();
        let image = match self.runtime.ensure_image(&spec.image).await {
            Ok(image) => image,
            Err(err) => {
                tracing::warn!(container = %self.id, image = %spec.image, error = %err, "image pull failed");
                self.fail(generation, Reason::ImagePullFailed, err.to_string())
                    .await;
                return;
            }
        };
        let pull_ms = pull_started.elapsed().as_millis() as u64;
        if self.superseded(a) {
            return;
        }
        let mut r = report(&self.id, generation, pb::ObservedState::Starting);
        r.image_digest = image.digest.clone();
        r.timings = Some(pb::Timings {
            pull_ms,
            ..Default::default()
        });
        let pulled = if image.fetched {
            format!("pulled {} ({}) in {pull_ms} ms", spec.image, image.digest)
        } else {
            format!("image {} ({}) already present", spec.image, image.digest)
        };
        r.events.push(event(generation, "Pulled", pulled));
        self.send(r);

        let run = RunSpec {
            id: self.id.clone(),
            image_ref: spec.image.clone(),
            image: image.clone(),
            command: spec.command,
            env: spec.env.into_iter().collect(),
            secure_env: skiff_core::SecretEnv(spec.secure_env.into_iter().collect()),
            cpu: CpuMillis::from_millis(spec.cpu_millis),
            memory: MemoryMib::from_mib(spec.memory_mib),
            hostname: spec.hostname,
        };
        // Held through create and start; released before reporting.
        let _slot = self.start_slots.clone().acquire_owned().await.ok();
        if self.superseded(a) {
            return;
        }
        let create_started = Instant::now();
        if let Err(err) = self.runtime.create(&run).await {
            self.fail(generation, Reason::StartFailed, err.to_string())
                .await;
            return;
        }
        let create_ms = create_started.elapsed().as_millis() as u64;
        let created_at = now_ms();
        let start_started = Instant::now();
        let started = match self.runtime.start(&self.id, generation).await {
            Ok(started) => started,
            Err(err) => {
                self.fail(generation, Reason::StartFailed, err.to_string())
                    .await;
                return;
            }
        };
        let start_ms = start_started.elapsed().as_millis() as u64;
        self.observed.generation = generation;
        self.observed.started_at_unix_ms = Some(started.started_at_unix_ms);
        self.task_running = true;
        self.oom_seen = false;
        tracing::info!(container = %self.id, generation, pid = started.pid, pull_ms, create_ms, start_ms, "started");
        let mut r = report(&self.id, generation, pb::ObservedState::Running);
        r.pid = started.pid;
        r.image_digest = image.digest;
        r.started_at_unix_ms = Some(started.started_at_unix_ms);
        r.timings = Some(pb::Timings {
            pull_ms,
            create_ms,
            start_ms,
        });
        let mut created = event(
            generation,
            "Created",
            format!("container created in {create_ms} ms"),
        );
        created.at_unix_ms = created_at;
        r.events.push(created);
        let mut started_event = event(
            generation,
            "Started",
            format!("process {} started in {start_ms} ms", started.pid),
        );
        started_event.at_unix_ms = started.started_at_unix_ms;
        r.events.push(started_event);
        self.send(r);
    }

    async fn fail(&mut self, generation: u64, reason: Reason, message: String) {
        self.observed.failed_generation = Some(generation);
        let mut r = report(&self.id, generation, pb::ObservedState::Failed);
        r.reason = reason.as_str().to_owned();
        r.events.push(event(generation, "Failed", message.clone()));
        r.message = message;
        self.send(r);
    }

    /// SIGTERM, then SIGKILL after the assignment's stop timeout.
    async fn stop(&mut self, a: &pb::Assignment) -> Result<(), RuntimeError> {
        let generation = self.observed.generation;
        let mut r = report(&self.id, generation, pb::ObservedState::Stopping);
        r.events.push(event(
            generation,
            "Killing",
            format!("sending SIGTERM; SIGKILL after {} s", a.stop_timeout_s),
        ));
        self.send(r);
        self.runtime.kill(&self.id, SIGTERM).await?;
        if self
            .wait_stopped(Duration::from_secs(u64::from(a.stop_timeout_s)))
            .await?
        {
            return Ok(());
        }
        tracing::info!(container = %self.id, "stop timeout passed; sending SIGKILL");
        self.runtime.kill(&self.id, SIGKILL).await?;
        self.wait_stopped(KILL_GRACE).await?;
        Ok(())
    }

    /// Waits for the main task to stop, woken by exit events, polling as a fallback.
    async fn wait_stopped(&mut self, limit: Duration) -> Result<bool, RuntimeError> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if self
                .runtime
                .task(&self.id)
                .await?
                .is_none_or(|t| t.status == TaskStatus::Stopped)
            {
                return Ok(true);
            }
            let poll = tokio::time::Instant::now() + Duration::from_millis(500);
            tokio::select! {
                Some(event) = self.events.recv() => self.note_event(&event),
                _ = tokio::time::sleep_until(poll.min(deadline)) => {}
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(self
                    .runtime
                    .task(&self.id)
                    .await?
                    .is_none_or(|t| t.status == TaskStatus::Stopped));
            }
        }
    }

    /// Records a stopped task in containerd's labels, deletes it, and reports the exit.
    async fn finish(&mut self, task: &TaskInfo) -> Result<(), RuntimeError> {
        let oom = self.oom_seen || self.runtime.oom_killed(&self.id).await;
        let exit = ExitRecord {
            generation: self.observed.generation,
            exit_code: task.exit_code.unwrap_or(-1),
            started_at_unix_ms: self.observed.started_at_unix_ms.unwrap_or(0),
            finished_at_unix_ms: task.exited_at_unix_ms.unwrap_or_else(now_ms),
            oom_killed: oom,
        };
        self.runtime.finish_task(&self.id, &exit).await?;
        self.observed.last_exit = Some(exit.clone());
        self.oom_seen = false;
        self.report_exit(&exit).await;
        Ok(())
    }

    async fn report_exit(&mut self, exit: &ExitRecord) {
        let mut r = report(&self.id, exit.generation, pb::ObservedState::Exited);
        r.exit_code = Some(exit.exit_code);
        r.finished_at_unix_ms = Some(exit.finished_at_unix_ms);
        r.started_at_unix_ms = (exit.started_at_unix_ms > 0).then_some(exit.started_at_unix_ms);
        if exit.oom_killed {
            r.reason = Reason::OOMKilled.as_str().to_owned();
        }
        let message = if exit.oom_killed {
            format!("exited with code {} (OOM killed)", exit.exit_code)
        } else {
            format!("exited with code {}", exit.exit_code)
        };
        let mut e = event(exit.generation, "Exited", message);
        e.at_unix_ms = exit.finished_at_unix_ms;
        r.events.push(e);
        self.send(r);
    }
}
