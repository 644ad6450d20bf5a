//! One container's supervisor: a task that serializes everything done to
//! that container (pull, create, start, stop, remove) while different
//! containers proceed in parallel. On every new assignment, task event or
//! periodic tick it asks [`reconcile::decide`] for the next step and carries
//! it out against the [`Runtime`], reporting through its [`Outbox`].
//!
//! A supervisor never outlives its cancellation token: the agent cancels it
//! when the container is fenced (assigned to another host now), and the
//! worker's shutdown cancels them all. Cancelled, it stops at the next safe
//! point and touches neither containerd nor the control plane again.

use super::assignment::{network_of, sandbox_of, volume_of};
use super::probes;
use super::reconcile::{self, Known, Step};
use super::report::{event, now_ms, report, Outbox, Reporter};
use crate::runtime::auth::RegistryLogin;
use crate::runtime::volumes::Mount;
use crate::runtime::{
    ContainerInfo, ExitRecord, RunSpec, Runtime, RuntimeError, TaskEvent, TaskInfo, TaskStatus,
};
use skiff_core::{CpuMillis, MemoryMib, Reason};
use skiff_proto as pb;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Re-check interval of a container with no running task: exits, stops and
/// new runs arrive as events or assignments, so this is only a safety net.
const IDLE_RESYNC: Duration = Duration::from_secs(60);
/// Checkpoints closer together than this add nothing but load (at most; a
/// short checkpoint interval shortens it to half the interval).
const CHECKPOINT_MIN_GAP: Duration = Duration::from_secs(2);
/// After SIGKILL, how long to wait for the task to be reaped.
const KILL_GRACE: Duration = Duration::from_secs(10);
/// How often a stop re-reads the task while waiting, besides exit events.
const STOP_POLL: Duration = Duration::from_millis(500);
const SIGTERM: u32 = 15;
const SIGKILL: u32 = 9;

/// What every supervisor shares with the agent.
pub struct Shared<R: Runtime> {
    pub runtime: Arc<R>,
    /// Bounds container creations+starts in flight: each spawns a shim and
    /// runc, and a burst of hundreds at once on a small host thrashes the
    /// CPU and finishes later than a steady queue.
    pub start_slots: Arc<Semaphore>,
    pub reporter: Reporter,
    /// The running-container re-check and meter checkpoint interval.
    pub checkpoint_interval: Duration,
    /// How often a pull's progress is reported (when it moved).
    pub pull_progress_interval: Duration,
}

/// The agent's handle to one container's supervisor.
pub struct SupervisorHandle {
    pub desired: watch::Sender<pb::Assignment>,
    pub events: mpsc::UnboundedSender<TaskEvent>,
    /// Stops the supervisor and withdraws its undelivered reports.
    pub cancel: CancellationToken,
    pub task: JoinHandle<()>,
    /// The delivery task of its outbox.
    pub delivery: JoinHandle<()>,
}

impl SupervisorHandle {
    /// Whether the supervisor has ended by itself (after removing its container).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished() || self.desired.is_closed()
    }
}

/// Starts the supervisor of `assignment`'s container. `adopted` is what
/// containerd held for it when the worker started; `cancel` is a child of
/// the worker's shutdown token.
pub fn spawn<R: Runtime>(
    shared: &Shared<R>,
    assignment: pb::Assignment,
    adopted: Option<ContainerInfo>,
    cancel: CancellationToken,
) -> SupervisorHandle {
    let id = assignment.container_id.clone();
    let (desired_tx, desired_rx) = watch::channel(assignment);
    let (events_tx, events_rx) = mpsc::unbounded_channel();
    let (outbox, delivery) = Outbox::spawn(shared.reporter.clone(), cancel.clone());
    let (probe_news_tx, probe_news) = mpsc::unbounded_channel();
    let supervisor = ContainerSupervisor {
        id: id.clone(),
        runtime: shared.runtime.clone(),
        start_slots: shared.start_slots.clone(),
        reporter: shared.reporter.clone(),
        checkpoint_interval: shared.checkpoint_interval,
        pull_progress_interval: shared.pull_progress_interval,
        desired: desired_rx,
        events: events_rx,
        cancel: cancel.clone(),
        observed: Observed::from(adopted),
        last_sent: None,
        oom_seen: false,
        log_dropped_seen: 0,
        last_checkpoint_ms: None,
        resent_last_exit: false,
        task_running: false,
        outbox,
        probes: None,
        probe_news_tx,
        probe_news,
        liveness_failed: None,
    };
    let task = tokio::spawn(
        supervisor
            .run()
            .instrument(tracing::info_span!("container", id = %id)),
    );
    SupervisorHandle {
        desired: desired_tx,
        events: events_tx,
        cancel,
        task,
        delivery,
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

/// When process `pid` started: its `starttime` in /proc/<pid>/stat counts
/// clock ticks since boot, and boot is now less /proc/uptime (whose
/// centiseconds are finer than /proc/stat's whole-second `btime`).
pub(crate) fn process_started_unix_ms(pid: u32) -> Option<i64> {
    let stat = procfs::process::Process::new(i32::try_from(pid).ok()?)
        .ok()?
        .stat()
        .ok()?;
    let uptime = <procfs::Uptime as procfs::Current>::current().ok()?;
    let boot_ms = now_ms() - (uptime.uptime * 1000.0) as i64;
    let ticks_per_s = procfs::ticks_per_second().max(1);
    let since_boot_ms = i64::try_from(stat.starttime.saturating_mul(1000) / ticks_per_s).ok()?;
    Some(boot_ms + since_boot_ms)
}

/// Whether the supervisor should keep going after a step.
enum Next {
    Wait,
    Again,
    Exit,
}

/// How a wait for the task to stop ended.
#[derive(Debug, PartialEq, Eq)]
enum Waited {
    Stopped,
    TimedOut,
    Cancelled,
}

struct ContainerSupervisor<R: Runtime> {
    id: String,
    runtime: Arc<R>,
    start_slots: Arc<Semaphore>,
    reporter: Reporter,
    checkpoint_interval: Duration,
    pull_progress_interval: Duration,
    desired: watch::Receiver<pb::Assignment>,
    events: mpsc::UnboundedReceiver<TaskEvent>,
    cancel: CancellationToken,
    observed: Observed,
    /// The last (generation, state) reported, so a steady state is not re-sent on every tick.
    last_sent: Option<(u64, pb::ObservedState)>,
    oom_seen: bool,
    /// Bytes the log had dropped under its cap at the last exit this
    /// supervisor saw (only runs write the log): more at an exit, and that
    /// run's output passed the cap.
    log_dropped_seen: u64,
    last_checkpoint_ms: Option<i64>,
    /// Whether this supervisor has had its chance to re-send the last run's
    /// exit (see [`Step::ResendExit`]).
    resent_last_exit: bool,
    /// Whether the last step saw a live task (sets the re-check interval).
    task_running: bool,
    /// Reports waiting for delivery, in order.
    outbox: Outbox,
    /// The current run's probes (stopped when dropped).
    probes: Option<probes::Probing>,
    probe_news_tx: mpsc::UnboundedSender<(u64, probes::News)>,
    probe_news: mpsc::UnboundedReceiver<(u64, probes::News)>,
    /// The generation its host killed for a failed liveness probe.
    liveness_failed: Option<u64>,
}

impl<R: Runtime> ContainerSupervisor<R> {
    async fn run(mut self) {
        loop {
            if self.cancel.is_cancelled() {
                return;
            }
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
            let resync = if self.task_running {
                self.checkpoint_interval
            } else {
                IDLE_RESYNC
            };
            tokio::select! {
                _ = self.cancel.cancelled() => return,
                changed = self.desired.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                Some(event) = self.events.recv() => self.note_event(&event),
                Some((generation, news)) = self.probe_news.recv() => {
                    self.on_probe_news(generation, news).await;
                }
                _ = tokio::time::sleep(resync) => {}
            }
        }
    }

    fn note_event(&mut self, event: &TaskEvent) {
        if let TaskEvent::OomKilled { .. } = event {
            self.oom_seen = true;
        }
    }

    /// Starts the probes of run `a.generation` unless they run already.
    async fn ensure_probes(&mut self, a: &pb::Assignment, pid: u32) {
        if self
            .probes
            .as_ref()
            .is_some_and(|p| p.generation == a.generation)
        {
            return;
        }
        let Some(spec) = &a.spec else { return };
        let target = probes::Target {
            container_id: self.id.clone(),
            pid,
            ip: self.runtime.ip(&self.id).await,
        };
        self.probes = probes::spawn(
            self.runtime.clone(),
            target,
            spec.liveness_probe.clone(),
            spec.readiness_probe.clone(),
            self.probe_news_tx.clone(),
            a.generation,
        );
    }

    /// A probe's verdict changed: reported with its event; a failed
    /// liveness probe kills the run's process (its exit says why).
    async fn on_probe_news(&mut self, generation: u64, news: probes::News) {
        if generation != self.observed.generation || !self.task_running {
            return;
        }
        if let probes::News::LivenessFailed(why) = &news {
            tracing::warn!(container = %self.id, generation, %why, "liveness probe failed; killing the process");
            self.liveness_failed = Some(generation);
            self.probes = None;
            if let Err(err) = self.runtime.kill(&self.id, SIGKILL).await {
                tracing::warn!(container = %self.id, error = %err, "killing after a failed liveness probe");
            }
        }
        self.send(probes::report(&self.id, generation, &news));
    }

    /// Queues a report for in-order delivery (see [`Outbox`]).
    fn send(&mut self, report: pb::StatusReport) {
        let state = pb::ObservedState::try_from(report.state).unwrap_or_default();
        self.last_sent = Some((report.generation, state));
        self.outbox.push(report);
    }

    fn known(&self) -> Known {
        Known {
            started_generation: self.observed.generation,
            last_exit_generation: self.observed.last_exit.as_ref().map(|e| e.generation),
            failed_generation: self.observed.failed_generation,
            last_sent: self.last_sent,
            resent_last_exit: self.resent_last_exit,
        }
    }

    /// One reconcile step towards the assignment: decide, then act.
    async fn step(&mut self, a: &pb::Assignment) -> Result<Next, RuntimeError> {
        let desired =
            pb::DesiredState::try_from(a.desired).unwrap_or(pb::DesiredState::Unspecified);
        // Taken before asking containerd, so a checkpoint never claims more
        // running time than was observed.
        let observed_at = now_ms();
        let task = self.runtime.task(&self.id).await?;
        self.task_running = task.as_ref().is_some_and(|t| t.status.is_live());

        let step = reconcile::decide(
            desired,
            a.generation,
            task.as_ref().map(|t| t.status),
            &self.known(),
        );
        if reconcile::consumes_resend(step) {
            self.resent_last_exit = true;
        }
        tracing::trace!(container = %self.id, ?step, "reconcile");
        match step {
            Step::Finish => {
                // Decided on a stopped task, so there is one.
                if let Some(task) = &task {
                    self.finish(task).await?;
                }
                Ok(Next::Again)
            }
            Step::ResendExit | Step::ReportExit => {
                if let Some(exit) = self.observed.last_exit.clone() {
                    self.report_exit(&exit, None);
                }
                Ok(if step == Step::ResendExit {
                    Next::Again
                } else {
                    Next::Wait
                })
            }
            Step::Stop => {
                self.stop(a).await?;
                Ok(Next::Again)
            }
            Step::Remove => {
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
            Step::ReportNeverRan => {
                let mut r = report(&self.id, a.generation, pb::ObservedState::Exited);
                r.finished_at_unix_ms = Some(now_ms());
                self.send(r);
                Ok(Next::Wait)
            }
            Step::Start => {
                self.start(a).await;
                Ok(Next::Wait)
            }
            Step::Running {
                report: send_report,
            } => {
                let pid = task.as_ref().map_or(0, |t| t.pid);
                self.ensure_probes(a, pid).await;
                if send_report {
                    // Re-adopted after a worker restart, or a report not yet sent.
                    let mut r = report(&self.id, a.generation, pb::ObservedState::Running);
                    // Not ready until its probe passes again.
                    r.ready = a
                        .spec
                        .as_ref()
                        .and_then(|s| s.readiness_probe.as_ref())
                        .map(|_| false);
                    r.pid = task.as_ref().map_or(0, |t| t.pid);
                    r.started_at_unix_ms = self.observed.started_at_unix_ms;
                    r.ip = self
                        .runtime
                        .ip(&self.id)
                        .await
                        .map(|ip| ip.to_string())
                        .unwrap_or_default();
                    self.send(r);
                }
                self.checkpoint(a.generation, observed_at).await;
                Ok(Next::Wait)
            }
            Step::FailTaskLost => {
                self.fail(
                    a.generation,
                    Reason::TaskLost,
                    "the task of this run vanished from containerd without an exit".into(),
                );
                Ok(Next::Wait)
            }
            Step::Wait => Ok(Next::Wait),
        }
    }

    /// Whether a newer assignment (stop, delete, another run) replaced `a`
    /// while it was being started, or the container was fenced: the start
    /// goes no further.
    fn superseded(&self, a: &pb::Assignment) -> bool {
        let current = self.desired.borrow();
        self.cancel.is_cancelled()
            || current.generation != a.generation
            || current.desired != a.desired
    }

    /// Tells the meter the task of `generation` was running at `observed_at`.
    async fn checkpoint(&mut self, generation: u64, observed_at: i64) {
        let min_gap = CHECKPOINT_MIN_GAP.min(self.checkpoint_interval / 2);
        if self
            .last_checkpoint_ms
            .is_some_and(|last| observed_at - last < min_gap.as_millis() as i64)
        {
            return;
        }
        self.last_checkpoint_ms = Some(observed_at);
        let usage = self.runtime.usage(&self.id).await.unwrap_or_default();
        self.reporter
            .checkpoint(pb::UsageCheckpoint {
                report_id: format!("{}:{generation}:{observed_at}", self.id),
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
        // Checked before anything is pulled: it names namespaces and files.
        let sandbox = match sandbox_of(&spec) {
            Ok(sandbox) => sandbox,
            Err(refusal) => {
                let err = crate::runtime::RuntimeError::Spec {
                    id: self.id.clone(),
                    message: refusal.to_string(),
                };
                tracing::warn!(container = %self.id, error = %err, "refused to start");
                self.fail(generation, Reason::StartFailed, err.to_string());
                return;
            }
        };
        let pulling_event = event(
            generation,
            "Pulling",
            format!("pulling image {}", spec.image),
        );
        // An image known to be here will not be pulled: no report of its
        // own for that, the next one carries the event (one database
        // transaction less per start of a cached image).
        let unreported = if self.runtime.image_known(&spec.image) {
            Some(pulling_event)
        } else {
            let mut r = report(&self.id, generation, pb::ObservedState::Pulling);
            r.events.push(pulling_event);
            self.send(r);
            None
        };

        let pull_started = Instant::now();
        // A pull may take minutes; a fenced container must not wait for it.
        // Dropping it is safe: the content store keeps what was written, under a lease.
        let login = RegistryLogin::from_pb(spec.registry_credential.as_ref());
        let (runtime, cancel) = (self.runtime.clone(), self.cancel.clone());
        let pulling = runtime.ensure_image_with(&spec.image, login.as_ref());
        tokio::pin!(pulling);
        // First look one interval in: a cached image is ready before it.
        let mut tick = tokio::time::interval_at(
            tokio::time::Instant::now() + self.pull_progress_interval,
            self.pull_progress_interval,
        );
        let mut last = None;
        let pulled = loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                pulled = &mut pulling => break pulled,
                _ = tick.tick() => {
                    let now = self.runtime.pull_progress(&spec.image);
                    if let Some((bytes_done, bytes_total)) = now.filter(|_| now != last) {
                        let mut r = report(&self.id, generation, pb::ObservedState::Pulling);
                        r.pull = Some(pb::PullProgress { bytes_done, bytes_total });
                        self.send(r);
                        last = now;
                    }
                }
            }
        };
        let image = match pulled {
            Ok(image) => image,
            Err(err) => {
                tracing::warn!(container = %self.id, image = %spec.image, error = %err, "image pull failed");
                self.fail(generation, Reason::ImagePullFailed, err.to_string());
                return;
            }
        };
        let pull_ms = pull_started.elapsed().as_millis() as u64;
        if self.superseded(a) {
            return;
        }
        let mut r = report(&self.id, generation, pb::ObservedState::Starting);
        r.events.extend(unreported);
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

        let network = network_of(&spec);
        let run = RunSpec {
            id: self.id.clone(),
            image_ref: spec.image.clone(),
            image: image.clone(),
            command: spec.command,
            env: spec.env.into_iter().collect(),
            secure_env: skiff_core::SecretEnv(spec.secure_env.into_iter().collect()),
            cpu: CpuMillis::from_millis(spec.cpu_millis),
            memory: MemoryMib::from_mib(spec.memory_mib),
            hostname: spec.hostname.clone(),
            network,
            read_only_rootfs: spec.read_only_rootfs,
            volumes: spec.volumes.into_iter().filter_map(volume_of).collect(),
            mounts: spec
                .mounts
                .into_iter()
                .map(|m| Mount {
                    volume: m.volume,
                    path: m.path,
                    read_only: m.read_only,
                })
                .collect(),
            sandbox,
        };
        // Held through create and start; released before reporting. Create
        // and start themselves are not interrupted: a request dropped in
        // flight could still take effect in containerd after a fence.
        let _slot = tokio::select! {
            _ = self.cancel.cancelled() => return,
            slot = self.start_slots.clone().acquire_owned() => slot.ok(),
        };
        if self.superseded(a) {
            return;
        }
        let create_started = Instant::now();
        if let Err(err) = self.runtime.create(&run).await {
            self.fail(generation, Reason::StartFailed, err.to_string());
            return;
        }
        let create_ms = create_started.elapsed().as_millis() as u64;
        let created_at = now_ms();
        let start_started = Instant::now();
        let started = match self.runtime.start(&run, generation).await {
            Ok(started) => started,
            Err(err) => {
                self.fail(generation, Reason::StartFailed, err.to_string());
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
        r.ip = started.ip.map(|ip| ip.to_string()).unwrap_or_default();
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
        self.liveness_failed = None;
        self.ensure_probes(a, started.pid).await;
    }

    fn fail(&mut self, generation: u64, reason: Reason, message: String) {
        self.observed.failed_generation = Some(generation);
        let mut r = report(&self.id, generation, pb::ObservedState::Failed);
        r.reason = reason.as_str().to_owned();
        r.events.push(event(generation, "Failed", message.clone()));
        r.message = message;
        self.send(r);
    }

    /// SIGTERM, then SIGKILL after the assignment's stop timeout.
    async fn stop(&mut self, a: &pb::Assignment) -> Result<(), RuntimeError> {
        // A stopping run is not probed: its end is the stop's.
        self.probes = None;
        let generation = self.observed.generation;
        let mut r = report(&self.id, generation, pb::ObservedState::Stopping);
        r.events.push(event(
            generation,
            "Killing",
            format!("sending SIGTERM; SIGKILL after {} s", a.stop_timeout_s),
        ));
        self.send(r);
        self.runtime.kill(&self.id, SIGTERM).await?;
        match self
            .wait_stopped(Duration::from_secs(u64::from(a.stop_timeout_s)))
            .await?
        {
            // Fenced meanwhile: the agent SIGKILLs and removes the container itself.
            Waited::Stopped | Waited::Cancelled => return Ok(()),
            Waited::TimedOut => {}
        }
        tracing::info!(container = %self.id, "stop timeout passed; sending SIGKILL");
        self.runtime.kill(&self.id, SIGKILL).await?;
        self.wait_stopped(KILL_GRACE).await?;
        Ok(())
    }

    /// Waits for the main task to stop, woken by exit events, polling as a fallback.
    async fn wait_stopped(&mut self, limit: Duration) -> Result<Waited, RuntimeError> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if self.task_gone_or_stopped().await? {
                return Ok(Waited::Stopped);
            }
            let poll = tokio::time::Instant::now() + STOP_POLL;
            tokio::select! {
                _ = self.cancel.cancelled() => return Ok(Waited::Cancelled),
                Some(event) = self.events.recv() => self.note_event(&event),
                _ = tokio::time::sleep_until(poll.min(deadline)) => {}
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(if self.task_gone_or_stopped().await? {
                    Waited::Stopped
                } else {
                    Waited::TimedOut
                });
            }
        }
    }

    async fn task_gone_or_stopped(&self) -> Result<bool, RuntimeError> {
        Ok(self
            .runtime
            .task(&self.id)
            .await?
            .is_none_or(|t| t.status == TaskStatus::Stopped))
    }

    /// Records a stopped task in containerd's labels, reports the exit, and
    /// deletes the task. The report goes before the delete (a shim's exit
    /// takes a while on a busy host) so the control plane frees the run's
    /// capacity and starts what waits sooner; the exit is recorded first, so
    /// a worker that dies between report and delete finds the stopped task
    /// and its record and finishes again (the control plane takes a repeated
    /// exit report of a run as a no-op).
    async fn finish(&mut self, task: &TaskInfo) -> Result<(), RuntimeError> {
        self.probes = None;
        let oom = self.oom_seen || self.runtime.oom_killed(&self.id).await;
        let exit = ExitRecord {
            liveness_failed: self.liveness_failed == Some(self.observed.generation),
            generation: self.observed.generation,
            exit_code: task.exit_code.unwrap_or(-1),
            started_at_unix_ms: self.observed.started_at_unix_ms.unwrap_or(0),
            finished_at_unix_ms: task.exited_at_unix_ms.unwrap_or_else(now_ms),
            oom_killed: oom,
        };
        self.runtime.record_exit(&self.id, &exit).await?;
        self.observed.last_exit = Some(exit.clone());
        self.oom_seen = false;
        let dropped = self.log_dropped();
        let truncated = (dropped > self.log_dropped_seen).then_some(dropped);
        self.log_dropped_seen = dropped;
        self.report_exit(&exit, truncated);
        self.runtime.delete_task(&self.id).await
    }

    /// Bytes of the container's log dropped under its cap so far.
    fn log_dropped(&self) -> u64 {
        crate::logcap::read_marker(&self.runtime.log_path(&self.id))
            .map_or(0, |(dropped, _)| dropped)
    }

    /// Reports a run's exit; `truncated`: the log's dropped bytes, when the
    /// run's output passed the log cap.
    fn report_exit(&mut self, exit: &ExitRecord, truncated: Option<u64>) {
        let mut r = report(&self.id, exit.generation, pb::ObservedState::Exited);
        r.exit_code = Some(exit.exit_code);
        r.finished_at_unix_ms = Some(exit.finished_at_unix_ms);
        r.started_at_unix_ms = (exit.started_at_unix_ms > 0).then_some(exit.started_at_unix_ms);
        if exit.oom_killed {
            r.reason = Reason::OOMKilled.as_str().to_owned();
        } else if exit.liveness_failed {
            r.reason = Reason::LivenessProbeFailed.as_str().to_owned();
        }
        let message = if exit.oom_killed {
            format!("exited with code {} (OOM killed)", exit.exit_code)
        } else if exit.liveness_failed {
            format!(
                "exited with code {} (killed: its liveness probe failed)",
                exit.exit_code
            )
        } else {
            format!("exited with code {}", exit.exit_code)
        };
        if let Some(dropped) = truncated {
            let mut t = event(
                exit.generation,
                "LogTruncated",
                format!(
                    "the log passed its size cap: older output was dropped \
                     ({dropped} bytes so far), the newest kept"
                ),
            );
            t.at_unix_ms = exit.finished_at_unix_ms;
            r.events.push(t);
        }
        let mut e = event(exit.generation, "Exited", message);
        e.at_unix_ms = exit.finished_at_unix_ms;
        r.events.push(e);
        self.send(r);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_start_time_is_read_from_proc() {
        let started = process_started_unix_ms(std::process::id()).expect("own process");
        let uptime = <procfs::Uptime as procfs::Current>::current().unwrap();
        let booted = now_ms() - (uptime.uptime * 1000.0) as i64;
        // This process started after boot and before now; the allowance
        // covers the resolution of /proc's figures (ticks, centiseconds).
        assert!(started >= booted - 1000, "{started} before boot {booted}");
        assert!(started <= now_ms() + 1000, "{started} in the future");
        assert_eq!(process_started_unix_ms(u32::MAX), None);
    }
}
