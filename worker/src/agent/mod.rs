//! The host agent: registers with the control plane, keeps heartbeating,
//! follows the host's assignment stream, and makes containerd match it.
//!
//! The stream is revisioned: a snapshot (the host's complete set) or a
//! delta (changes since the revision the worker names when it connects),
//! each possibly split over several messages. A complete step is handed to
//! the containers' supervisors; then whatever the step says is no longer
//! this host's is fenced (supervisor stopped, task SIGKILLed, everything
//! removed, no report), and only then is the step's revision applied and
//! announced in heartbeats. Fencing happens only on a step actually
//! received: an unreachable control plane, a broken stream or a worker
//! start never kills anything, and the worker never stops containers when
//! it exits (containerd's shims keep them running; a restarted worker
//! re-adopts them from containerd's own records).
//!
//! Layout:
//! - this file: [`Agent`]: session, registration, heartbeats, applying steps, fencing.
//! - [`updates`]: joins a step's messages; a step counts only when complete.
//! - [`supervisor`]: one task per container carrying out reconcile steps.
//! - [`assignment`]: what an assignment asks for, in the runtime's types.
//! - [`reconcile`]: the pure decision of a container's next step.
//! - [`probes`]: a run's liveness and readiness probes.
//! - [`report`]: status reports (ordered, retried) and meter checkpoints.
//! - [`images`]: removing unused images past the host's disk budget.
//! - [`logbudget`]: cutting finished containers' logs past the host's log budget.

mod assignment;
mod control_plane;
pub mod images;
pub mod logbudget;
pub mod probes;
mod reconcile;
mod report;
mod supervisor;
#[cfg(test)]
mod tests;
mod updates;

pub use control_plane::{control_plane_client, ControlPlanes};
pub use report::{now_ms, ReportSink};
pub use updates::{AssignmentStep, StepError};

use crate::metrics::{UpdateKind, WorkerMetrics};
use crate::runtime::{ContainerInfo, Runtime, RuntimeError, TaskEvent};
use backon::{ExponentialBuilder, Retryable};
use futures::StreamExt;
use report::{cancellable_sleep, Reporter};
use skiff_proto as pb;
use skiff_proto::control_plane_client::ControlPlaneClient;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use supervisor::{Shared, SupervisorHandle};
use tokio::sync::{Mutex, Semaphore};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use updates::StepAssembler;

/// Reconnecting to the control plane: soon at first, at most every few
/// seconds (plus jitter, so a fleet does not reconnect in lockstep).
const SESSION_BACKOFF: ExponentialBuilder = ExponentialBuilder::new()
    .with_min_delay(Duration::from_millis(200))
    .with_max_delay(Duration::from_secs(5))
    .with_jitter()
    .without_max_times();
/// Heartbeats closer together than this would only load the control plane.
const MIN_HEARTBEAT: Duration = Duration::from_millis(100);
/// How long fencing waits for a container's supervisor (and its outbox) to
/// reach a safe point before aborting it.
const SUPERVISOR_EXIT_WAIT: Duration = Duration::from_secs(15);
/// Containers fenced at once: each removal waits for a SIGKILLed task.
const FENCE_CONCURRENCY: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("control plane address: {0}")]
    Endpoint(#[from] skiff_proto::tls::connect::ConnectError),
    #[error("no control plane address (SKIFF_CONTROL_PLANE is empty)")]
    NoControlPlane,
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

/// Why an assignment step was not (fully) applied. Its revision is then not
/// reached; the session ends and the next stream resumes from the last
/// revision applied, so the control plane sends the step again.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Stream(#[from] StepError),
    #[error("listing the host's containers to fence: {0}")]
    List(#[source] RuntimeError),
    #[error("fencing container {id}: {source}")]
    Fence {
        id: String,
        #[source]
        source: RuntimeError,
    },
}

/// How a control plane session ended (other than by shutdown).
#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("{call}: {source}")]
    Rpc {
        call: &'static str,
        #[source]
        source: tonic::Status,
    },
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("the control plane closed the assignment stream")]
    StreamClosed,
    #[error("the control plane no longer knows this host")]
    HeartbeatRejected,
    #[error("the heartbeat task ended")]
    HeartbeatEnded,
    #[error(transparent)]
    Apply(#[from] ApplyError),
}

/// How a session ended without failing.
enum SessionEnd {
    Shutdown,
    /// The host certificate was renewed: the next session uses it.
    NewCredential,
}

fn rpc(call: &'static str) -> impl FnOnce(tonic::Status) -> SessionError {
    move |source| SessionError::Rpc { call, source }
}

/// Facts about this host that the control plane needs at registration.
#[derive(Debug, Clone)]
pub struct HostInfo {
    /// The id its certificate names (for logs: the control plane reads it
    /// from the certificate, not from any message).
    pub host_id: String,
    /// The name it asked for (SKIFF_HOST_ID or the hostname).
    pub hostname: String,
    pub agent_addr: String,
    pub cpu_millis: u32,
    pub memory_mib: u64,
    /// Operator labels, matched against containers' placement constraints.
    pub labels: BTreeMap<String, String>,
    /// What the host offers `network: private` containers (None: nothing).
    pub network: Option<skiff_proto::HostNetwork>,
    /// Where it serves Prometheus metrics (empty: nowhere).
    pub metrics_url: String,
}

/// The agent's tunables.
#[derive(Debug, Clone)]
pub struct AgentSettings {
    /// Container creations+starts in flight at once.
    pub max_concurrent_starts: usize,
    /// The running-container re-check and meter checkpoint interval.
    pub checkpoint_interval: Duration,
    /// How often a pull's progress is reported (when it moved).
    pub pull_progress_interval: Duration,
}

/// Aborts a task when dropped (a session's helpers end with it).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// containerd's figures sent with every heartbeat (placement hints).
#[derive(Debug, Default, Clone)]
struct Inventory {
    images: Vec<pb::HeldImage>,
    running: u32,
}

pub struct Agent<R: Runtime> {
    shared: Shared<R>,
    host: HostInfo,
    control: Arc<ControlPlanes>,
    supervisors: Mutex<HashMap<String, SupervisorHandle>>,
    /// What containerd held when the worker started: supervisors adopt from it.
    adopted: Mutex<HashMap<String, ContainerInfo>>,
    /// The step being received; locked while a step is applied, so steps
    /// apply one at a time and in order.
    stream: Mutex<StepAssembler>,
    /// The last revision fully applied, fencing included (0: none yet).
    applied_revision: AtomicU64,
    metrics: Arc<WorkerMetrics>,
    shutdown: CancellationToken,
}

impl<R: Runtime> Agent<R> {
    /// `sink` receives status reports and meter checkpoints (in production
    /// `control` itself).
    pub fn new(
        runtime: Arc<R>,
        host: HostInfo,
        settings: AgentSettings,
        control: Arc<ControlPlanes>,
        sink: Arc<dyn ReportSink>,
        metrics: Arc<WorkerMetrics>,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        Arc::new(Self {
            shared: Shared {
                runtime,
                start_slots: Arc::new(Semaphore::new(settings.max_concurrent_starts.max(1))),
                reporter: Reporter::new(sink),
                checkpoint_interval: settings.checkpoint_interval,
                pull_progress_interval: settings.pull_progress_interval,
            },
            host,
            control,
            supervisors: Mutex::new(HashMap::new()),
            adopted: Mutex::new(HashMap::new()),
            stream: Mutex::new(StepAssembler::default()),
            applied_revision: AtomicU64::new(0),
            metrics,
            shutdown,
        })
    }

    /// The last assignment revision fully applied, fencing included.
    pub fn applied_revision(&self) -> u64 {
        self.applied_revision.load(Ordering::Acquire)
    }

    /// Runs until shutdown: (re)connects to the control plane and applies
    /// every step it sends. Containers are left running at exit.
    pub async fn run(self: Arc<Self>) -> Result<(), AgentError> {
        self.adopt().await?;
        tokio::spawn(self.clone().route_events());

        let shutdown = self.shutdown.clone();
        // session() returns Ok only at shutdown; every failure is retried.
        let _ = (|| self.session())
            .retry(SESSION_BACKOFF)
            .sleep(cancellable_sleep(shutdown.clone()))
            .when(|_| !shutdown.is_cancelled())
            .notify(|error, delay| {
                tracing::warn!(%error, ?delay, "control plane session ended; reconnecting");
            })
            .await;
        tracing::info!("worker stopping; containers keep running under their shims");
        Ok(())
    }

    /// Reads what containerd holds now, for supervisors to adopt. Nothing
    /// is stopped here: until the control plane says otherwise, everything
    /// found may still be this host's.
    async fn adopt(&self) -> Result<(), RuntimeError> {
        let existing = self.shared.runtime.list().await?;
        tracing::info!(containers = existing.len(), "found containers to re-adopt");
        *self.adopted.lock().await = existing.into_iter().map(|c| (c.id.clone(), c)).collect();
        Ok(())
    }

    /// Sessions on the replica in use until shutdown (Ok) or a failure,
    /// which moves the next session to the next replica. A renewed host
    /// certificate ends a session cleanly and starts the next one on the
    /// same replica, with the new certificate.
    async fn session(self: &Arc<Self>) -> Result<(), SessionError> {
        loop {
            let (addr, client) = self.control.current();
            let addr = addr.to_owned();
            match self.session_on(client).await {
                Ok(SessionEnd::Shutdown) => return Ok(()),
                Ok(SessionEnd::NewCredential) => {
                    tracing::info!(control_plane = %addr,
                        "host certificate renewed: continuing the session with it");
                }
                Err(err) => {
                    // The retry's notify logs the error; this says where it was.
                    tracing::info!(control_plane = %addr, "leaving this control plane replica");
                    self.control.rotate();
                    return Err(err);
                }
            }
        }
    }

    /// One connection's life: register, heartbeat, follow assignments.
    async fn session_on(
        self: &Arc<Self>,
        mut client: ControlPlaneClient<Channel>,
    ) -> Result<SessionEnd, SessionError> {
        if self.shutdown.is_cancelled() {
            return Ok(SessionEnd::Shutdown);
        }
        // Channels made before now carry the certificate in use now.
        let mut reconnected = self.control.reconnected();
        reconnected.borrow_and_update();
        let version = self.shared.runtime.version().await?;
        let registered = client
            .register(pb::RegisterRequest {
                agent_addr: self.host.agent_addr.clone(),
                cpu_millis: self.host.cpu_millis,
                memory_mib: self.host.memory_mib,
                containerd_version: version,
                hostname: self.host.hostname.clone(),
                labels: self.host.labels.clone().into_iter().collect(),
                network: self.host.network.clone(),
                metrics_url: self.host.metrics_url.clone(),
            })
            .await
            .map_err(rpc("Register"))?
            .into_inner();
        tracing::info!(host = %self.host.host_id, "registered with the control plane");
        let session_done = self.shutdown.child_token();
        let interval =
            Duration::from_millis(u64::from(registered.heartbeat_interval_ms)).max(MIN_HEARTBEAT);
        let heartbeat = tokio::spawn(self.clone().heartbeat(
            client.clone(),
            interval,
            session_done.clone(),
        ));
        let _stop_heartbeat = session_done.clone().drop_guard();

        // A step half-received on an earlier stream is never completed by
        // this one's messages.
        self.stream.lock().await.reset();
        let from_revision = self.applied_revision();
        let mut stream = client
            .watch_assignments(pb::WatchRequest { from_revision })
            .await
            .map_err(rpc("WatchAssignments"))?
            .into_inner();
        tracing::info!(from_revision, "following assignments");
        loop {
            let message = tokio::select! {
                _ = self.shutdown.cancelled() => return Ok(SessionEnd::Shutdown),
                _ = reconnected.changed() => return Ok(SessionEnd::NewCredential),
                _ = session_done.cancelled() => return Err(SessionError::HeartbeatRejected),
                message = stream.message() => message.map_err(rpc("WatchAssignments"))?,
            };
            let Some(update) = message else {
                return Err(SessionError::StreamClosed);
            };
            self.apply_update(update).await?;
            if heartbeat.is_finished() {
                return Err(SessionError::HeartbeatEnded);
            }
        }
    }

    /// Heartbeats every `interval` until `done`; cancels `done` itself when
    /// the control plane no longer knows this host (the session then ends
    /// and registers again).
    async fn heartbeat(
        self: Arc<Self>,
        mut client: ControlPlaneClient<Channel>,
        interval: Duration,
        done: CancellationToken,
    ) {
        // The heartbeat is what keeps the host alive: it never waits for
        // containerd. The inventory is refreshed by a task of its own, never
        // cancelled midway (a slow containerd still answers, later), and each
        // heartbeat carries the latest figures.
        let inventory = Arc::new(std::sync::Mutex::new(Inventory::default()));
        let refresher = {
            let (agent, inventory, done) = (self.clone(), inventory.clone(), done.clone());
            tokio::spawn(async move {
                loop {
                    let fresh = agent.inventory().await;
                    inventory.lock().expect("inventory lock").update(fresh);
                    tokio::select! {
                        _ = done.cancelled() => return,
                        _ = tokio::time::sleep(interval) => {}
                    }
                }
            })
        };
        let _stop_refresher = AbortOnDrop(refresher);
        loop {
            tokio::select! {
                _ = done.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
            let latest = inventory.lock().expect("inventory lock").clone();
            let request = pb::HeartbeatRequest {
                applied_revision: self.applied_revision(),
                images: latest.images,
                running: latest.running,
            };
            if let Err(status) = client.heartbeat(request).await {
                tracing::warn!(%status, "heartbeat failed");
                if status.code() == tonic::Code::NotFound {
                    done.cancel();
                    return;
                }
            }
        }
    }

    /// containerd's images and live tasks now (a paused task, or one created
    /// and not yet started, holds the host's resources as a running one
    /// does); a part containerd could not give is `None`.
    async fn inventory(&self) -> (Option<Vec<pb::HeldImage>>, Option<u32>) {
        let runtime = &self.shared.runtime;
        let (images, live) = tokio::join!(runtime.images(), runtime.live_tasks());
        let images = images
            .inspect_err(|error| tracing::debug!(%error, "images for the heartbeat"))
            .ok()
            .map(|images| {
                images
                    .into_iter()
                    .map(|i| pb::HeldImage {
                        reference: i.reference,
                        digest: i.digest,
                    })
                    .collect()
            });
        let running = live
            .inspect_err(|error| tracing::debug!(%error, "tasks for the heartbeat"))
            .ok()
            .map(|live| u32::try_from(live).unwrap_or(u32::MAX));
        (images, running)
    }

    /// Takes one message of the assignment stream; once it completes a
    /// step, applies the step (see [`Agent::apply_step`]).
    pub async fn apply_update(
        self: &Arc<Self>,
        update: pb::AssignmentUpdate,
    ) -> Result<(), ApplyError> {
        let mut stream = self.stream.lock().await;
        let kind = if update.snapshot {
            UpdateKind::Snapshot
        } else {
            UpdateKind::Delta
        };
        self.metrics.update_received(kind, update.assignments.len());
        let Some(step) = stream.push(update)? else {
            return Ok(());
        };
        // The stream lock is held on purpose: the next step waits for this one.
        self.apply_step(step).await
    }

    /// Applies one complete step: assignments to their supervisors, then
    /// fencing, then the revision.
    async fn apply_step(self: &Arc<Self>, step: AssignmentStep) -> Result<(), ApplyError> {
        // Only a snapshot advances the revision from 0 (a delta before one
        // is applied without it): a revision means a confirmed, complete
        // set was applied in this process, which fencing needs.
        let has_snapshot = self.applied_revision() != 0;
        if step.kind == UpdateKind::Delta {
            if !has_snapshot {
                // Only a snapshot confirms what this host should run; the
                // revision stays unreached, so the next stream asks for one.
                tracing::warn!(
                    revision = step.revision,
                    removed = step.removed.len(),
                    "delta before any snapshot: assignments applied, nothing fenced"
                );
                self.assign(step.assignments).await;
                return Ok(());
            }
            if step.revision < self.applied_revision() {
                // Replaying an old delta's removals could kill what a later
                // step re-assigned. (A delta of the revision already applied
                // is the empty one that opens a resumed stream.)
                tracing::warn!(
                    revision = step.revision,
                    applied = self.applied_revision(),
                    "ignoring a delta older than the revision applied"
                );
                return Ok(());
            }
        }
        let assigned: HashSet<String> = step
            .assignments
            .iter()
            .map(|a| a.container_id.clone())
            .collect();
        let (assignments, removed) = (step.assignments.len(), step.removed.len());
        self.assign(step.assignments).await;

        let fence: Vec<String> = match step.kind {
            UpdateKind::Snapshot => self
                .present()
                .await?
                .into_iter()
                .filter(|id| !assigned.contains(id))
                .collect(),
            UpdateKind::Delta if step.removed.is_empty() => Vec::new(),
            UpdateKind::Delta => {
                let present = self.present().await?;
                let mut fence: Vec<String> = step
                    .removed
                    .into_iter()
                    // In a step's own assignments too: assigned here after all.
                    .filter(|id| present.contains(id) && !assigned.contains(id))
                    .collect();
                fence.sort();
                fence.dedup();
                fence
            }
        };
        let fenced = fence.len();
        self.fence(fence).await?;

        self.applied_revision
            .store(step.revision, Ordering::Release);
        self.metrics.set_applied_revision(step.revision);
        tracing::info!(
            revision = step.revision,
            kind = step.kind.as_str(),
            assignments,
            removed,
            fenced,
            "assignment step applied"
        );
        Ok(())
    }

    /// Every container this host holds or is about to: containerd's, and
    /// those of live supervisors (one may be pulling for a container not
    /// created yet).
    async fn present(&self) -> Result<HashSet<String>, ApplyError> {
        let listed = self.shared.runtime.list().await.map_err(ApplyError::List)?;
        let mut present: HashSet<String> = listed.into_iter().map(|c| c.id).collect();
        present.extend(
            self.supervisors
                .lock()
                .await
                .iter()
                .filter(|(_, s)| !s.is_finished())
                .map(|(id, _)| id.clone()),
        );
        Ok(present)
    }

    /// Hands each assignment to its supervisor, starting supervisors as needed.
    async fn assign(&self, assignments: Vec<pb::Assignment>) {
        let mut supervisors = self.supervisors.lock().await;
        supervisors.retain(|_, s| !s.is_finished());
        for assignment in assignments {
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
            let handle = supervisor::spawn(
                &self.shared,
                assignment,
                adopted,
                self.shutdown.child_token(),
            );
            supervisors.insert(id, handle);
        }
    }

    /// Fences `ids`, a few at a time; the first failure is returned once all
    /// have been tried.
    async fn fence(&self, ids: Vec<String>) -> Result<(), ApplyError> {
        let results: Vec<Result<(), ApplyError>> = futures::stream::iter(ids)
            .map(|id| self.fence_one(id))
            .buffer_unordered(FENCE_CONCURRENCY)
            .collect()
            .await;
        results.into_iter().collect()
    }

    /// Stops the container's supervisor (withdrawing its undelivered
    /// reports: billing must see the container once, from its new host),
    /// then SIGKILLs its task and removes everything of it, and checks the
    /// task is gone.
    async fn fence_one(&self, id: String) -> Result<(), ApplyError> {
        tracing::warn!(container = %id, "fencing: no longer assigned to this host; killing and removing it");
        let handle = self.supervisors.lock().await.remove(&id);
        self.adopted.lock().await.remove(&id);
        if let Some(handle) = handle {
            handle.cancel.cancel();
            // Past a safe point the supervisor starts nothing and reports
            // nothing, so the removal below is final.
            for mut task in [handle.task, handle.delivery] {
                if tokio::time::timeout(SUPERVISOR_EXIT_WAIT, &mut task)
                    .await
                    .is_err()
                {
                    tracing::warn!(container = %id, "supervisor did not stop in time; aborting it");
                    task.abort();
                }
            }
        }
        let runtime = &self.shared.runtime;
        // remove() SIGKILLs the task (no grace period: the container runs on
        // its new host already), waits until it is reaped, then deletes it,
        // the container, its snapshot and its log.
        runtime
            .remove(&id)
            .await
            .map_err(|source| ApplyError::Fence {
                id: id.clone(),
                source,
            })?;
        self.metrics.fenced.inc();
        tracing::info!(container = %id, "fenced");
        Ok(())
    }

    /// Forwards containerd task events to the supervisor of their container.
    async fn route_events(self: Arc<Self>) {
        let mut events = self.shared.runtime.events();
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

impl Inventory {
    fn update(&mut self, (images, running): (Option<Vec<pb::HeldImage>>, Option<u32>)) {
        if let Some(images) = images {
            self.images = images;
        }
        if let Some(running) = running {
            self.running = running;
        }
    }
}
