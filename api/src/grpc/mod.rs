//! The gRPC side of the control plane: the `ControlPlane` service workers
//! dial (join, renew, register, heartbeat, assignments, reports), over
//! mutual TLS.
//!
//! - [`auth`]: the calling host, from its verified certificate.
//! - [`join`]: join tokens in, certificates out; renewal.
//! - [`chunk`]: assignment steps as size-bounded messages.
//! - [`agents`]: the client for the workers' `WorkerAgent` service (logs).
//! - [`registry`]: the registry credential an assignment carries.

pub mod agents;
pub mod auth;
pub mod chunk;
pub mod join;
pub mod registry;

pub use agents::AgentClients;
pub use chunk::messages;

use crate::secrets::{Keyring, Secrets};
use crate::store::assignments::AssignmentStep;
use crate::store::hosts::{Heartbeat, HeldImage, NetworkOffer};
use crate::store::{ContainerRow, StoreError};
use crate::AppState;
use sha2::{Digest, Sha256};
use skiff_core::{DesiredState, NetworkMode, Protocol};
use skiff_proto as pb;
use skiff_proto::control_plane_server::ControlPlane;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};
use uuid::Uuid;

/// When a change is not readable yet (an older transaction is still open),
/// how soon to look again: at this pace for [`PENDING_FAST_FOR`] (under a
/// steady stream of short write transactions, some older one is open at
/// almost every look, and a growing wait would add hundreds of
/// milliseconds to a start), then less and less often (a long transaction).
const PENDING_RETRY: Duration = Duration::from_millis(20);
const PENDING_FAST_FOR: Duration = Duration::from_secs(1);

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

/// What a worker is told of one container. Its secrets are opened here,
/// on their way to the host that runs it (over the mutual-TLS channel), and
/// only for a container meant to run. One whose secrets do not open (a key
/// missing from this replica's keyring, a tampered row) is held stopped on
/// its host, loudly, rather than started without them; the rest of the
/// host's assignments flow as ever, and it runs once the keyring opens it.
pub fn assignment(row: &ContainerRow, keyring: &Keyring) -> pb::Assignment {
    let (desired, secrets) = match row.desired {
        DesiredState::Running => match row.secrets(keyring) {
            Ok(secrets) => (desired(row), secrets),
            Err(err) => {
                tracing::error!(container = %row.id, error = %err,
                    "its secrets do not open: its host keeps it stopped");
                (pb::DesiredState::Stopped, Secrets::default())
            }
        },
        _ => (desired(row), Secrets::default()),
    };
    pb::Assignment {
        container_id: row.id.to_string(),
        desired: desired as i32,
        generation: row.generation as u64,
        spec: Some(pb::ContainerSpec {
            image: row.image.clone(),
            command: row.command.0.clone(),
            env: row.env.0.clone().into_iter().collect(),
            secure_env: secrets.env.0.into_iter().collect(),
            cpu_millis: row.cpu_millis as u32,
            memory_mib: row.memory_mib as u32,
            hostname: row.name.clone(),
            network: network_mode(row.network) as i32,
            network_key: row
                .network_group
                .as_deref()
                .map(|group| network_key(row.tenant_id, group))
                .unwrap_or_default(),
            ports: row
                .host_ports
                .0
                .iter()
                .map(|p| pb::PortMapping {
                    container_port: u32::from(p.port),
                    protocol: protocol(p.protocol) as i32,
                    host_port: u32::from(p.host_port),
                })
                .collect(),
            read_only_rootfs: row.read_only_rootfs,
            volumes: volumes(&row.volumes.0, secrets.files),
            mounts: row
                .mounts
                .0
                .iter()
                .map(|m| pb::VolumeMount {
                    volume: m.volume.clone(),
                    path: m.path.clone(),
                    read_only: m.read_only,
                })
                .collect(),
            liveness_probe: row.liveness_probe.as_ref().map(|p| probe(&p.0)),
            readiness_probe: row.readiness_probe.as_ref().map(|p| probe(&p.0)),
            registry_credential: None,
            sandbox: row.group_id.map(|g| g.to_string()).unwrap_or_default(),
        }),
        stop_timeout_s: row.stop_timeout_s as u32,
    }
}

/// A container's volumes as its worker needs them: secret files opened.
fn volumes(
    volumes: &[skiff_core::VolumeSource],
    mut files: skiff_core::SecretFiles,
) -> Vec<pb::Volume> {
    use pb::volume::Source;
    volumes
        .iter()
        .map(|v| {
            let source = match (&v.empty_dir, &v.secret) {
                (Some(dir), _) => Source::EmptyDir(pb::EmptyDir {
                    size_mib: dir.size_mib,
                    memory: dir.medium == skiff_core::Medium::Memory,
                }),
                _ => Source::Secret(pb::SecretVolume {
                    files: files
                        .0
                        .remove(&v.name)
                        .unwrap_or_default()
                        .into_iter()
                        .collect(),
                }),
            };
            pb::Volume {
                name: v.name.clone(),
                source: Some(source),
            }
        })
        .collect()
}

fn probe(p: &skiff_core::Probe) -> pb::Probe {
    use pb::probe::Action;
    use skiff_core::probes::Action as A;
    pb::Probe {
        action: p.action().map(|a| match a {
            A::Exec(command) => Action::Exec(pb::ExecAction {
                command: command.to_vec(),
            }),
            A::HttpGet { port, path } => Action::HttpGet(pb::HttpGetAction {
                port: port.into(),
                path: path.to_owned(),
            }),
            A::TcpSocket { port } => Action::TcpSocket(pb::TcpSocketAction { port: port.into() }),
        }),
        initial_delay_s: p.initial_delay_s,
        period_s: p.period_s,
        timeout_s: p.timeout_s,
        failure_threshold: p.failure_threshold,
    }
}

fn network_mode(mode: NetworkMode) -> pb::NetworkMode {
    match mode {
        NetworkMode::None => pb::NetworkMode::None,
        NetworkMode::Private => pb::NetworkMode::Private,
    }
}

fn protocol(protocol: Protocol) -> pb::Protocol {
    match protocol {
        Protocol::Tcp => pb::Protocol::Tcp,
        Protocol::Udp => pb::Protocol::Udp,
    }
}

/// The key a host groups private containers by: the first 16 hex digits
/// of sha256(tenant id, NUL, group). The tenant is part of it, so two
/// tenants naming the same group never share a key; the worker sees
/// neither the tenant nor the group's name.
pub fn network_key(tenant: Uuid, group: &str) -> String {
    let mut hash = Sha256::new();
    hash.update(tenant.to_string());
    hash.update([0]);
    hash.update(group);
    hex::encode(&hash.finalize()[..8])
}

/// A registration's network offer, checked: None when the worker offers
/// none (no `network`); a bad one is refused.
pub fn network_offer(network: Option<&pb::HostNetwork>) -> Result<Option<NetworkOffer>, Status> {
    let Some(n) = network else {
        return Ok(None);
    };
    let port = |name: &str, value: u32| {
        u16::try_from(value)
            .ok()
            .filter(|p| *p >= 1)
            .ok_or_else(|| {
                Status::invalid_argument(format!(
                    "network.{name} {value} is not a port (1 to 65535)"
                ))
            })
    };
    let start = port("port_range_start", n.port_range_start)?;
    let end = port("port_range_end", n.port_range_end)?;
    if start > end {
        return Err(Status::invalid_argument(format!(
            "network.port_range_start {start} is past port_range_end {end}"
        )));
    }
    let host_ip = n.host_ip.parse::<std::net::IpAddr>().map_err(|_| {
        Status::invalid_argument(format!(
            "network.host_ip {:?} is not an IP address",
            n.host_ip
        ))
    })?;
    if !is_cidr(&n.subnet) {
        return Err(Status::invalid_argument(format!(
            "network.subnet {:?} is not a CIDR subnet (e.g. 10.213.0.0/24)",
            n.subnet
        )));
    }
    Ok(Some(NetworkOffer {
        port_range_start: start,
        port_range_end: end,
        host_ip,
        subnet: n.subnet.clone(),
    }))
}

/// `address/prefix`, the prefix within the address's length.
fn is_cidr(subnet: &str) -> bool {
    let Some((address, prefix)) = subnet.split_once('/') else {
        return false;
    };
    let (Ok(address), Ok(prefix)) = (address.parse::<std::net::IpAddr>(), prefix.parse::<u8>())
    else {
        return false;
    };
    prefix <= if address.is_ipv4() { 32 } else { 128 }
}

type AssignmentStream = Pin<Box<dyn Stream<Item = Result<pb::AssignmentUpdate, Status>> + Send>>;

#[tonic::async_trait]
impl ControlPlane for ControlPlaneService {
    async fn join(
        &self,
        request: Request<pb::JoinRequest>,
    ) -> Result<Response<pb::JoinResponse>, Status> {
        join::join(&self.state, request).await.map(Response::new)
    }

    async fn renew(
        &self,
        request: Request<pb::RenewRequest>,
    ) -> Result<Response<pb::RenewResponse>, Status> {
        let host = auth::calling_host(&self.state, &request).await?;
        join::renew(&self.state, &host, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn register(
        &self,
        request: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        let host = auth::calling_host(&self.state, &request).await?.id;
        let req = request.into_inner();
        if req.agent_addr.is_empty() {
            return Err(Status::invalid_argument("agent_addr is required"));
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
        let network = network_offer(req.network.as_ref())?;
        self.state
            .store
            .register_host(&host, &req, network.as_ref())
            .await?;
        tracing::info!(host = %host, agent = %req.agent_addr, cpu_millis = req.cpu_millis,
            memory_mib = req.memory_mib, containerd = %req.containerd_version, labels = ?req.labels,
            network = ?network, "host registered");
        Ok(Response::new(pb::RegisterResponse {
            heartbeat_interval_ms: self.state.config.heartbeat_interval().as_millis() as u32,
        }))
    }

    async fn heartbeat(
        &self,
        request: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let host = auth::calling_host(&self.state, &request).await?.id;
        let req = request.into_inner();
        let heartbeat = Heartbeat {
            host_id: &host,
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
        let caller = auth::calling_host(&self.state, &request).await?;
        let req = request.into_inner();
        let host = caller.id.clone();
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
            let mut pending_since: Option<tokio::time::Instant> = None;
            // TLS checked the certificate at the handshake only: the stream
            // ends when it expires (the worker reconnects with its renewed
            // one) or is revoked.
            let expires = tokio::time::Instant::now()
                + caller
                    .cert
                    .not_after
                    .duration_since(std::time::SystemTime::now())
                    .unwrap_or_default();
            loop {
                changed.borrow_and_update();
                if let Err(status) = still_valid(&state, &caller).await {
                    let _ = tx.send(Err(status)).await;
                    return;
                }
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
                    for message in messages(&step, state.store.keyring()) {
                        if tx.send(Ok(message)).await.is_err() {
                            return; // the worker went away
                        }
                    }
                    last_sent = tokio::time::Instant::now();
                    revision = step.revision;
                }
                first = false;
                let wait = if step.pending {
                    let since = *pending_since.get_or_insert_with(tokio::time::Instant::now);
                    let wait = pending_wait;
                    if since.elapsed() >= PENDING_FAST_FOR {
                        pending_wait = (pending_wait * 2).min(keepalive);
                    }
                    wait
                } else {
                    pending_since = None;
                    pending_wait = PENDING_RETRY;
                    keepalive
                };
                tokio::select! {
                    // Ending the stream lets the server shut down; the
                    // worker reconnects to the next control plane.
                    _ = state.shutdown.cancelled() => return,
                    _ = tokio::time::sleep_until(expires) => {}
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
        let host = auth::calling_host(&self.state, &request).await?.id;
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
            .apply_report(&host, &report, self.state.config.report_clock_skew())
            .await;
        match self.refused(applied, &host, &report.container_id)? {
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
        let host = auth::calling_host(&self.state, &request).await?.id;
        self.checkpoint(&host, request.into_inner()).await?;
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

    async fn checkpoint(&self, host: &str, checkpoint: pb::UsageCheckpoint) -> Result<(), Status> {
        let applied = self
            .state
            .store
            .apply_checkpoint(host, &checkpoint, self.state.config.report_clock_skew())
            .await;
        let applied = self.refused(applied, host, &checkpoint.container_id)?;
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

/// Whether the stream's credential still counts (not expired, not revoked).
async fn still_valid(state: &AppState, caller: &auth::CallingHost) -> Result<(), Status> {
    let standing = state
        .store
        .certificate_standing(&caller.id, &caller.cert.serial)
        .await?;
    auth::judge(
        Some(&caller.cert),
        Some(standing),
        std::time::SystemTime::now(),
    )
    .map(|_| ())
    .map_err(|refusal| {
        tracing::info!(host = %caller.id, reason = refusal.as_str(),
                "assignment stream ended: its credential no longer counts");
        refusal.status()
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_keys_are_short_stable_and_per_tenant() {
        let a = Uuid::from_u128(0xa);
        let b = Uuid::from_u128(0xb);
        let key = network_key(a, "web");
        assert_eq!(key.len(), 16);
        assert!(key.bytes().all(|c| c.is_ascii_hexdigit()), "{key}");
        assert_eq!(key, network_key(a, "web"));
        assert_ne!(key, network_key(b, "web"), "tenants never share a key");
        assert_ne!(key, network_key(a, "db"));
        // The separator keeps (tenant, group) pairs apart.
        let mut hash = Sha256::new();
        hash.update(format!("{a}\0web"));
        assert_eq!(key, hex::encode(&hash.finalize()[..8]));
    }

    #[test]
    fn network_offers_table() {
        let offer = |start, end, ip: &str, subnet: &str| pb::HostNetwork {
            port_range_start: start,
            port_range_end: end,
            host_ip: ip.into(),
            subnet: subnet.into(),
        };
        #[rustfmt::skip]
        let rows = [
            // (case, offer, accepted)
            ("a local offer", offer(20000, 20999, "127.0.0.1", "10.213.0.0/24"), true),
            ("one port", offer(20000, 20000, "0.0.0.0", "10.213.0.0/24"), true),
            ("the whole port space", offer(1, 65535, "::1", "fd00::/64"), true),
            ("start past end", offer(20001, 20000, "127.0.0.1", "10.213.0.0/24"), false),
            ("port 0", offer(0, 20000, "127.0.0.1", "10.213.0.0/24"), false),
            ("past 65535", offer(20000, 65536, "127.0.0.1", "10.213.0.0/24"), false),
            ("a name, not an address", offer(20000, 20999, "localhost", "10.213.0.0/24"), false),
            ("no address", offer(20000, 20999, "", "10.213.0.0/24"), false),
            ("no subnet", offer(20000, 20999, "127.0.0.1", ""), false),
            ("a subnet without a prefix", offer(20000, 20999, "127.0.0.1", "10.213.0.0"), false),
            ("a prefix too long", offer(20000, 20999, "127.0.0.1", "10.213.0.0/33"), false),
        ];
        for (case, offer, accepted) in rows {
            let got = network_offer(Some(&offer));
            assert_eq!(got.is_ok(), accepted, "{case}: {got:?}");
            if let Err(status) = got {
                assert_eq!(status.code(), tonic::Code::InvalidArgument, "{case}");
            }
        }
        assert_eq!(network_offer(None).unwrap(), None);
        let ok = network_offer(Some(&offer(20000, 20999, "127.0.0.1", "10.213.0.0/24")))
            .unwrap()
            .unwrap();
        assert_eq!((ok.port_range_start, ok.port_range_end), (20000, 20999));
    }
}
