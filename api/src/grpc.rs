//! The gRPC side of the control plane: the `ControlPlane` service workers
//! dial (register, heartbeat, assignments, reports), and the client for the
//! workers' `WorkerAgent` service (logs).

use crate::store::{ContainerRow, StoreError};
use crate::AppState;
use skiff_proto as pb;
use skiff_proto::control_plane_server::ControlPlane;
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_stream::Stream;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};

/// How often a worker should heartbeat.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(2);
/// An assignment stream re-sends the full set at least this often, so a
/// missed wake-up costs at most this much.
const RESYNC_INTERVAL: Duration = Duration::from_secs(15);

impl From<StoreError> for Status {
    fn from(err: StoreError) -> Self {
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
    match row.desired.as_str() {
        "running" => pb::DesiredState::Running,
        "stopped" => pb::DesiredState::Stopped,
        _ => pb::DesiredState::Deleted,
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

type AssignmentStream = Pin<Box<dyn Stream<Item = Result<pb::AssignmentSet, Status>> + Send>>;

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
        self.state.store.register_host(&req).await?;
        tracing::info!(host = %req.host_id, agent = %req.agent_addr, cpu_millis = req.cpu_millis,
            memory_mib = req.memory_mib, containerd = %req.containerd_version, "host registered");
        self.state.hub.wake_scheduler();
        Ok(Response::new(pb::RegisterResponse {
            heartbeat_interval_ms: HEARTBEAT_INTERVAL.as_millis() as u32,
        }))
    }

    async fn heartbeat(
        &self,
        request: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let host = request.into_inner().host_id;
        if !self.state.store.heartbeat(&host).await? {
            return Err(Status::not_found("unknown host: register first"));
        }
        Ok(Response::new(pb::HeartbeatResponse {}))
    }

    type WatchAssignmentsStream = AssignmentStream;

    async fn watch_assignments(
        &self,
        request: Request<pb::WatchRequest>,
    ) -> Result<Response<AssignmentStream>, Status> {
        let host = request.into_inner().host_id;
        if self.state.store.host(&host).await?.is_none() {
            return Err(Status::not_found("unknown host: register first"));
        }
        let state = self.state.clone();
        let mut changed = state.hub.watch_host(&host);
        let stream = async_stream(move |tx| async move {
            loop {
                changed.borrow_and_update();
                let rows = match state.store.assignments(&host).await {
                    Ok(rows) => rows,
                    Err(err) => {
                        let _ = tx.send(Err(err.into())).await;
                        return;
                    }
                };
                let set = pb::AssignmentSet {
                    assignments: rows.iter().map(assignment).collect(),
                };
                if tx.send(Ok(set)).await.is_err() {
                    return; // the worker went away
                }
                tokio::select! {
                    // Ending the stream lets the server shut down; the
                    // worker reconnects to the next control plane.
                    _ = state.shutdown.cancelled() => return,
                    _ = tokio::time::timeout(RESYNC_INTERVAL, changed.changed()) => {}
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
        match self.state.store.apply_report(&report).await? {
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
                self.state.hub.container_changed(outcome.container_id);
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
    async fn checkpoint(&self, checkpoint: pb::UsageCheckpoint) -> Result<(), Status> {
        let applied = self.state.store.apply_checkpoint(&checkpoint).await?;
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

/// A stream fed by a spawned task through a bounded channel.
fn async_stream<F, Fut>(produce: F) -> AssignmentStream
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<pb::AssignmentSet, Status>>) -> Fut,
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
