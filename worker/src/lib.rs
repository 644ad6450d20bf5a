//! skiff-worker: the host agent.
//!
//! It owns everything that happens on one host: registering with the
//! control plane, turning assignments into containerd containers, reporting
//! what actually happened (with containerd's timestamps), and serving logs.
//! It talks to the control plane only through `skiff-proto` over gRPC, and to
//! containerd only through the [`runtime`] boundary.
//!
//! Layout:
//! - [`config`]: flags and `SKIFF_*` environment.
//! - [`identity`]: the host's key and certificate (join, keep, renew).
//! - [`advertise`]: the agent address the control plane dials back.
//! - [`agent`]: registration, heartbeats, the assignment stream and fencing,
//!   per-container supervisors (reconcile).
//! - [`runtime`]: the containerd boundary (pull, spec, seccomp, tasks).
//! - [`net`]: private container networks (CNI plugins, nftables, ports).
//! - [`egress`]: which registries a pull may reach (policy and proxy).
//! - [`logcap`]: a container's log kept under its size cap (newest bytes
//!   behind a marker).
//! - [`logs`]: the `WorkerAgent` gRPC service that serves log files and
//!   runs execs (to the control plane's certificate only); [`attach`]: its
//!   interactive exec; [`prewarm`]: its `Pull` (an image ahead of use).
//! - [`metrics`]: Prometheus metrics and their optional HTTP endpoint.

pub mod advertise;
pub mod agent;
pub mod attach;
pub mod config;
pub mod egress;
pub mod identity;
pub mod logcap;
pub mod logs;
pub mod metrics;
pub mod net;
pub mod prewarm;
pub mod runtime;

use agent::{Agent, AgentError, AgentSettings, HostInfo};
use config::WorkerConfig;
use metrics::WorkerMetrics;
use runtime::containerd::{ContainerdConfig, ContainerdRuntime};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// How long the endpoints get to finish their requests after shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Agent(#[from] AgentError),
    #[error(transparent)]
    Runtime(#[from] runtime::RuntimeError),
    #[error("configuration: {0}")]
    Config(#[from] config::ConfigError),
    #[error("agent endpoint: {0}")]
    Serve(#[from] tonic::transport::Error),
    #[error(transparent)]
    Advertise(#[from] advertise::AdvertiseError),
    #[error(transparent)]
    Identity(#[from] identity::IdentityError),
    #[error("agent endpoint address: {0}")]
    Listen(#[source] std::io::Error),
    #[error("metrics endpoint {addr}: {source}")]
    MetricsListen {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Runs the worker until `shutdown` resolves. Containers keep running after.
pub async fn serve(
    config: WorkerConfig,
    agent_listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), WorkerError> {
    let identity = Arc::new(identity::Identity::establish(&config).await?);
    let runtime = Arc::new(
        ContainerdRuntime::connect(ContainerdConfig {
            socket: config.containerd_socket.clone(),
            namespace: config.containerd_namespace.clone(),
            state_dir: config.state_dir.clone(),
            egress: config.egress_policy()?,
            pids_limit: config.pids_limit,
            seccomp_profile: Some(config.seccomp_profile.clone()),
            cgroup_parent: config.cgroup_parent(),
            logger: config
                .logger
                .clone()
                .unwrap_or_else(runtime::containerd::default_logger),
            log_max_bytes: config.log_max_bytes,
            network: config.network(),
            seccomp_arches: if config.seccomp_compat_arches {
                runtime::seccomp::ArchScope::WithCompat
            } else {
                runtime::seccomp::ArchScope::Native
            },
            ..ContainerdConfig::default()
        })
        .await?,
    );
    let listening = agent_listener.local_addr().map_err(WorkerError::Listen)?;
    let agent_addr = advertise::advertise_addr(listening, config.agent_advertise, || {
        advertise::route_to(config.control_plane.first().map_or("", String::as_str))
    })?;
    // Bound before anything runs, so a taken port fails the start.
    let metrics_listener = match config.metrics_listen {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .map_err(|source| WorkerError::MetricsListen { addr, source })?,
        ),
        None => None,
    };
    let metrics_url = match &metrics_listener {
        Some(listener) => {
            let addr = listener.local_addr().map_err(WorkerError::Listen)?;
            // An address bound on every interface is reached at the agent's.
            let ip = if addr.ip().is_unspecified() {
                agent_addr.ip()
            } else {
                addr.ip()
            };
            format!(
                "http://{}/metrics",
                std::net::SocketAddr::new(ip, addr.port())
            )
        }
        None => String::new(),
    };
    let host = HostInfo {
        host_id: identity.host_id.clone(),
        hostname: config.host_id(),
        agent_addr: agent_addr.to_string(),
        cpu_millis: config.cpu_millis(),
        memory_mib: config.memory_mib(),
        labels: config.host_labels.as_map().clone(),
        network: runtime.network().map(|net| {
            let c = net.config();
            skiff_proto::HostNetwork {
                port_range_start: u32::from(c.port_range.0),
                port_range_end: u32::from(c.port_range.1),
                host_ip: c.host_ip.to_string(),
                subnet: c.subnet.to_string(),
            }
        }),
        metrics_url,
    };
    tracing::info!(host = %host.host_id, agent = %agent_addr, cpu_millis = host.cpu_millis,
        memory_mib = host.memory_mib, labels = ?host.labels, "skiff-worker starting");
    let metrics = Arc::new(WorkerMetrics::default());
    let control = Arc::new(agent::ControlPlanes::new(
        &config.control_plane,
        identity.client_config()?,
    )?);

    let cancel = CancellationToken::new();
    {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            shutdown.await;
            cancel.cancel();
        });
    }
    tokio::spawn(identity::renew(
        identity.clone(),
        control.clone(),
        metrics.clone(),
        cancel.clone(),
    ));
    if config.image_disk_budget_bytes > 0 {
        tokio::spawn(agent::images::collect(
            runtime.clone(),
            config.image_disk_budget_bytes,
            Duration::from_secs_f64(config.image_gc_interval_s.max(0.1)),
            Duration::from_secs_f64(config.image_min_idle_s.max(0.0)),
            cancel.clone(),
        ));
    }
    if config.host_log_budget_bytes > 0 {
        tokio::spawn(agent::logbudget::enforce(
            runtime.clone(),
            control.clone(),
            config.host_log_budget_bytes,
            Duration::from_secs_f64(config.log_gc_interval_s.max(0.1)),
            metrics.log_budget_passes.clone(),
            cancel.clone(),
        ));
    }
    let logs = skiff_proto::worker_agent_server::WorkerAgentServer::with_interceptor(
        logs::LogService::new(runtime.clone()),
        logs::only_the_control_plane,
    );
    let incoming =
        skiff_proto::tls::incoming::incoming(agent_listener, identity.server_config()?, |reason| {
            tracing::debug!(reason, "agent TLS handshake refused")
        });
    let server_cancel = cancel.clone();
    let server = tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(logs)
            .serve_with_incoming_shutdown(incoming, server_cancel.cancelled_owned())
            .await
    });

    let metrics_server = metrics_listener.map(|listener| {
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(%addr, "serving metrics at /metrics");
        }
        tokio::spawn(metrics::serve_metrics(
            listener,
            metrics.clone(),
            cancel.clone(),
        ))
    });

    let agent = Agent::new(
        runtime,
        host,
        AgentSettings {
            max_concurrent_starts: config.max_concurrent_starts(),
            checkpoint_interval: config.checkpoint_interval_s.get(),
            pull_progress_interval: Duration::from_millis(config.pull_progress_ms.max(10)),
        },
        control.clone(),
        control,
        metrics,
        cancel.clone(),
    );
    let result = agent.run().await;
    cancel.cancel();
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, server).await;
    if let Some(metrics_server) = metrics_server {
        let _ = tokio::time::timeout(DRAIN_TIMEOUT, metrics_server).await;
    }
    Ok(result?)
}
