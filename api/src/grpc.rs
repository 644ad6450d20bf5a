//! The gRPC side of the control plane: the `ControlPlane` service workers
//! dial (register, heartbeat, assignments, reports), and the client for the
//! workers' `WorkerAgent` service (logs).

use crate::store::assignments::AssignmentStep;
use crate::store::hosts::{Heartbeat, HeldImage};
use crate::store::{ContainerRow, StoreError};
use crate::AppState;
use prost::Message as _;
use skiff_core::DesiredState;
use skiff_proto as pb;
use skiff_proto::control_plane_server::ControlPlane;
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_stream::Stream;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};

/// Largest encoded size of one stream message: tonic refuses messages over
/// 4 MiB by default, and a container spec can be a few hundred KiB.
const MAX_MESSAGE_BYTES: usize = 1024 * 1024;
/// When a change is not readable yet (an older transaction is still open),
/// how soon to look again.
const PENDING_RETRY: Duration = Duration::from_millis(50);

impl From<StoreError> for Status {
    fn from(err: StoreError) -> Self {
        if let StoreError::Refused(refusal) = err {
            return Status::invalid_argument(format!("report refused: {refusal}"));
        }
        if err.is_unavailable() {
            tracing::warn!(error = %err, "database unavailable in gRPC handler");
            return Status::unavailable("control plane database unavailable; retry");
        }
        tracing::error!(error = %err, "store error in gRPC handler");
        Status::internal("control plane storage error")
    }
}

pub struct ControlPlaneService {
    state: Arc<AppState>,
}

impl ControlPlaneService {
    pub fn new(state: Arc<AppState>) -> Self {
        Self { state }
    }
}

fn desired(row: &ContainerRow) -> pb::DesiredState {
    match row.desired {
        DesiredState::Running => pb::DesiredState::Running,
        DesiredState::Stopped => pb::DesiredState::Stopped,
        DesiredState::Deleted => pb::DesiredState::Deleted,
    }
}

pub fn assignment(row: &ContainerRow) -> pb::Assignment {
    pb::Assignment {
        container_id: row.id.to_string(),
        desired: desired(row) as i32,
        generation: row.generation as u64,
        spec: Some(pb::ContainerSpec {
            image: row.image.clone(),
            command: row.command.0.clone(),
            env: row.env.0.clone().into_iter().collect(),
            secure_env: row.secure_env.0 .0.clone().into_iter().collect(),
            cpu_millis: row.cpu_millis as u32,
            memory_mib: row.memory_mib as u32,
            hostname: row.name.clone(),
        }),
        stop_timeout_s: row.stop_timeout_s as u32,
    }
}

type AssignmentStream = Pin<Box<dyn Stream<Item = Result<pb::AssignmentUpdate, Status>> + Send>>;

/// Splits a step into messages under [`MAX_MESSAGE_BYTES`]; all but the
/// last have `more` set. A step with nothing in it is one empty message (it
/// still carries the revision).
pub fn messages(step: &AssignmentStep) -> Vec<pb::AssignmentUpdate> {
    let assignments = step.assignments.iter().map(assignment).collect();
    let removed = step.removed.iter().map(|id| id.to_string()).collect();
    chunk(
        step.revision,
        step.snapshot,
        assignments,
        removed,
        MAX_MESSAGE_BYTES,
    )
}

fn chunk(
    revision: u64,
    snapshot: bool,
    assignments: Vec<pb::Assignment>,
    removed: Vec<String>,
    max_bytes: usize,
) -> Vec<pb::AssignmentUpdate> {
    let new = |assignments: Vec<pb::Assignment>, removed: Vec<String>| pb::AssignmentUpdate {
        revision,
        snapshot,
        more: true,
        assignments,
        removed,
    };
    let mut out = Vec::new();
    let mut batch = Vec::new();
    let mut size = 0;
    for a in assignments {
        let len = a.encoded_len();
        if !batch.is_empty() && size + len > max_bytes {
            out.push(new(std::mem::take(&mut batch), Vec::new()));
            size = 0;
        }
        size += len;
        batch.push(a);
    }
    out.push(new(batch, removed));
    if let Some(last) = out.last_mut() {
        last.more = false;
    }
    out
}

#[tonic::async_trait]
impl ControlPlane for ControlPlaneService {
    async fn register(
        &self,
        request: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        let req = request.into_inner();
        if req.host_id.is_empty() || req.agent_addr.is_empty() {
            return Err(Status::invalid_argument(
                "host_id and agent_addr are required",
            ));
        }
        // The address is dialed for logs: an unspecified one (0.0.0.0:8082)
        // would make the control plane dial itself.
        match req.agent_addr.parse::<std::net::SocketAddr>() {
            Ok(addr) if !addr.ip().is_unspecified() && addr.port() != 0 => {}
            _ => {
                return Err(Status::invalid_argument(format!(
                    "agent_addr {:?} is not a dialable host:port (set SKIFF_AGENT_ADVERTISE)",
                    req.agent_addr
                )))
            }
        }
        self.state.store.register_host(&req).await?;
        tracing::info!(host = %req.host_id, agent = %req.agent_addr, cpu_millis = req.cpu_millis,
            memory_mib = req.memory_mib, containerd = %req.containerd_version, labels = ?req.labels,
            "host registered");
        Ok(Response::new(pb::RegisterResponse {
            heartbeat_interval_ms: self.state.config.heartbeat_interval().as_millis() as u32,
        }))
    }

    async fn heartbeat(
        &self,
        request: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let req = request.into_inner();
        let heartbeat = Heartbeat {
            host_id: &req.host_id,
            applied_revision: req.applied_revision,
            images: req
                .images
                .into_iter()
                .map(|i| HeldImage {
                    reference: i.reference,
                    digest: i.digest,
                })
                .collect(),
            running: req.running,
        };
        if self.state.store.heartbeat(&heartbeat).await?.is_none() {
            return Err(Status::not_found("unknown host: register first"));
        }
        Ok(Response::new(pb::HeartbeatResponse {}))
    }

    type WatchAssignmentsStream = AssignmentStream;

    async fn watch_assignments(
        &self,
        request: Request<pb::WatchRequest>,
    ) -> Result<Response<AssignmentStream>, Status> {
        let req = request.into_inner();
        let host = req.host_id;
        if self.state.store.host(&host).await?.is_none() {
            return Err(Status::not_found("unknown host: register first"));
        }
        let state = self.state.clone();
        let mut changed = state.hub.watch_host(&host);
        let stream = async_stream(move |tx| async move {
            // The worker's revision, if it can be resumed from; else a snapshot.
            let mut revision = req.from_revision;
            let mut first = true;
            let mut last_sent = tokio::time::Instant::now();
            let keepalive = state.config.heartbeat_interval();
            // While an old transaction holds the watermark back, look again
            // soon, then less and less often (it may be a long one).
            let mut pending_wait = PENDING_RETRY;
            loop {
                changed.borrow_and_update();
                let step = match next_step(&state, &host, revision).await {
                    Ok(step) => step,
                    Err(status) => {
                        let _ = tx.send(Err(status)).await;
                        return;
                    }
                };
                // Empty steps go out now and then only: they carry the
                // watermark a host lost earlier needs to become ready again.
                let send = first
                    || step.snapshot
                    || !step.assignments.is_empty()
                    || !step.removed.is_empty()
                    || (step.revision > revision && last_sent.elapsed() >= keepalive);
                if send {
                    let kind = if step.snapshot { "snapshot" } else { "delta" };
                    state
                        .metrics
                        .assignments_sent
                        .with_label_values(&[kind])
                        .inc_by(step.assignments.len() as u64);
                    for message in messages(&step) {
                        if tx.send(Ok(message)).await.is_err() {
                            return; // the worker went away
                        }
                    }
                    last_sent = tokio::time::Instant::now();
                    revision = step.revision;
                }
                first = false;
                let wait = if step.pending {
                    let wait = pending_wait;
                    pending_wait = (pending_wait * 2).min(keepalive);
                    wait
                } else {
                    pending_wait = PENDING_RETRY;
                    keepalive
                };
                tokio::select! {
                    // Ending the stream lets the server shut down; the
                    // worker reconnects to the next control plane.
                    _ = state.shutdown.cancelled() => return,
                    _ = tokio::time::timeout(wait, changed.changed()) => {}
                }
            }
        });
        Ok(Response::new(stream))
    }

    async fn report_status(
        &self,
        request: Request<pb::StatusReport>,
    ) -> Result<Response<pb::ReportAck>, Status> {
        let report = request.into_inner();
        let span = tracing::debug_span!("report", container = %report.container_id, generation = report.generation);
        let _enter = span.enter();
        let observed =
            pb::ObservedState::try_from(report.state).unwrap_or(pb::ObservedState::Unspecified);
        self.state
            .metrics
            .reports
            .with_label_values(&[observed.as_str_name()])
            .inc();
        let applied = self
            .state
            .store
            .apply_report(&report, self.state.config.report_clock_skew())
            .await;
        match self.refused(applied, &report.host_id, &report.container_id)? {
            Some(outcome) => {
                if observed == pb::ObservedState::Running {
                    if let Some(t) = outcome.timings {
                        let m = &self.state.metrics;
                        if let Some(q) = outcome.queued_ms {
                            m.observe_phase_ms("queue", q);
                        }
                        m.observe_phase_ms("pull", t.pull_ms as i64);
                        m.observe_phase_ms("create", t.create_ms as i64);
                        m.observe_phase_ms("start", t.start_ms as i64);
                    }
                }
                tracing::trace!(container = %outcome.container_id, state = %outcome.state, "report applied");
            }
            None => tracing::debug!("report for an unknown container ignored"),
        }
        Ok(Response::new(pb::ReportAck {}))
    }

    async fn report_usage(
        &self,
        request: Request<pb::UsageCheckpoint>,
    ) -> Result<Response<pb::ReportAck>, Status> {
        self.checkpoint(request.into_inner()).await?;
        Ok(Response::new(pb::ReportAck {}))
    }
}

impl ControlPlaneService {
    /// Counts and logs a refused report before it becomes the caller's error.
    fn refused<T>(
        &self,
        result: Result<T, StoreError>,
        host: &str,
        container: &str,
    ) -> Result<T, StoreError> {
        if let Err(StoreError::Refused(refusal)) = &result {
            tracing::warn!(host, container, reason = refusal.as_str(), "report refused");
            self.state
                .metrics
                .reports_refused
                .with_label_values(&[refusal.as_str()])
                .inc();
        }
        result
    }

    async fn checkpoint(&self, checkpoint: pb::UsageCheckpoint) -> Result<(), Status> {
        let applied = self
            .state
            .store
            .apply_checkpoint(&checkpoint, self.state.config.report_clock_skew())
            .await;
        let applied = self.refused(applied, &checkpoint.host_id, &checkpoint.container_id)?;
        self.state
            .metrics
            .checkpoints
            .with_label_values(&[if applied {
                "applied"
            } else {
                "duplicate_or_closed"
            }])
            .inc();
        Ok(())
    }
}

/// The next step of a host's stream: the changes since `revision`, or a
/// snapshot when it cannot be resumed from.
async fn next_step(state: &AppState, host: &str, revision: u64) -> Result<AssignmentStep, Status> {
    if let Some(step) = state.store.assignment_delta(host, revision).await? {
        return Ok(step);
    }
    Ok(state.store.assignment_snapshot(host).await?)
}

/// A stream fed by a spawned task through a bounded channel.
fn async_stream<F, Fut>(produce: F) -> AssignmentStream
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<pb::AssignmentUpdate, Status>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(produce(tx));
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}

/// Clients for the workers' agent endpoints, one channel per address.
#[derive(Default)]
pub struct AgentClients {
    channels: Mutex<HashMap<String, Channel>>,
}

impl AgentClients {
    pub fn client(
        &self,
        addr: &str,
    ) -> Result<pb::worker_agent_client::WorkerAgentClient<Channel>, Status> {
        let mut channels = self.channels.lock().expect("agent clients lock");
        let channel = match channels.get(addr) {
            Some(channel) => channel.clone(),
            None => {
                let endpoint = Endpoint::from_shared(format!("http://{addr}"))
                    .map_err(|e| Status::internal(format!("bad agent address {addr}: {e}")))?
                    .connect_timeout(Duration::from_secs(3));
                let channel = endpoint.connect_lazy();
                channels.insert(addr.to_owned(), channel.clone());
                channel
            }
        };
        Ok(pb::worker_agent_client::WorkerAgentClient::new(channel))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn big(n: usize) -> pb::Assignment {
        pb::Assignment {
            container_id: format!("c{n}"),
            spec: Some(pb::ContainerSpec {
                env: [("BLOB".to_owned(), "x".repeat(190 * 1024))].into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn large_steps_are_split_under_the_message_limit_and_keep_everything() {
        // ~32 specs of ~190 KiB: 6 MiB in one message would break tonic's 4 MiB.
        let all: Vec<_> = (0..32).map(big).collect();
        let messages = chunk(7, true, all, vec!["gone".into()], MAX_MESSAGE_BYTES);
        assert!(messages.len() >= 6, "{} messages", messages.len());
        for (i, m) in messages.iter().enumerate() {
            assert!(m.encoded_len() < 4 * 1024 * 1024);
            assert!(m.encoded_len() <= MAX_MESSAGE_BYTES + 1024);
            assert_eq!(
                m.more,
                i + 1 < messages.len(),
                "only the last ends the step"
            );
            assert!((m.revision, m.snapshot) == (7, true));
        }
        let ids: Vec<_> = messages
            .iter()
            .flat_map(|m| m.assignments.iter().map(|a| a.container_id.clone()))
            .collect();
        assert_eq!(ids, (0..32).map(|n| format!("c{n}")).collect::<Vec<_>>());
        assert_eq!(messages.last().unwrap().removed, vec!["gone".to_owned()]);
    }

    #[test]
    fn an_empty_step_is_one_message_carrying_its_revision() {
        let messages = chunk(9, false, Vec::new(), Vec::new(), MAX_MESSAGE_BYTES);
        assert_eq!(messages.len(), 1);
        assert!(!messages[0].more && messages[0].revision == 9);
    }
}
