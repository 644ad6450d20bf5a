//! skiff-api: the control plane.
//!
//! It owns the REST API tenants call, the PostgreSQL state behind it, the
//! scheduler that places containers on hosts, and the gRPC endpoint that
//! workers dial to receive assignments and report what containerd did.
//! Workers are never linked in: they speak `skiff-proto` over gRPC only.
//!
//! Layout:
//! - [`config`]: flags and `SKIFF_*` environment.
//! - [`http`]: REST routes, auth, problem+json errors ([`error`]), OpenAPI.
//! - [`model`]: JSON shapes and request validation.
//! - [`jobs`]: a job's task containers (pure) and the job driver.
//! - [`groups`]: container groups (members placed, networked and acted on together).
//! - [`aci`]: Azure Container Instances' ARM API under `/aci`, onto [`groups`].
//! - [`lifecycle`]: the container lifecycle as pure decisions (table-tested).
//! - [`store`]: PostgreSQL access, one module per resource.
//! - [`grpc`]: the workers' `ControlPlane` service and the log client.
//! - [`trust`]: the worker channel's CA, this replica's certificate, TLS.
//! - [`webhooks`]: completion webhooks, signed, retried, sent by any replica.
//! - [`scheduler`]: the background loop; [`scheduler::place`], placement as a pure function.
//! - [`report_bounds`]: what a worker's report may claim (pure, table-tested).
//! - [`notify`]: wake-ups from PostgreSQL's LISTEN/NOTIFY. [`metrics`]: Prometheus.
//! - [`ratelimit`]: per-token token buckets for reads and writes.
//!
//! Any number of replicas may serve one database: they share nothing but
//! PostgreSQL (placement under an advisory lock, rows locked `FOR UPDATE`,
//! wake-ups as `NOTIFY`s).

pub mod aci;
pub mod config;
pub mod error;
pub mod groups;
pub mod grpc;
pub mod http;
pub mod jobs;
pub mod lifecycle;
pub mod metrics;
pub mod model;
pub mod notify;
pub mod ratelimit;
pub mod report_bounds;
pub mod scheduler;
pub mod secrets;
pub mod store;
pub mod trust;
pub mod webhooks;

use config::ApiConfig;
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// How long in-flight requests may take to finish at shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Shared by every handler and background task.
pub struct AppState {
    pub config: ApiConfig,
    pub store: store::Store,
    pub hub: Arc<notify::Hub>,
    pub metrics: metrics::Metrics,
    pub agents: grpc::AgentClients,
    pub trust: Arc<trust::Trust>,
    pub admin_token_sha256: Vec<u8>,
    /// Token hash -> tenant. Tokens are never revoked yet, so entries never go stale.
    pub token_cache: TokenCache,
    /// Cancelled at shutdown, so long-lived streams end instead of holding it up.
    pub shutdown: CancellationToken,
    /// Per-token request buckets (this replica's share).
    pub rate_limits: ratelimit::RateLimits,
    /// Permits for requests in progress (streams excepted).
    pub requests_in_progress: tokio::sync::Semaphore,
}

#[derive(Default)]
pub struct TokenCache(Mutex<HashMap<Vec<u8>, Uuid>>);

impl TokenCache {
    pub fn get(&self, hash: &[u8]) -> Option<Uuid> {
        self.0.lock().expect("token cache lock").get(hash).copied()
    }

    pub fn insert(&self, hash: Vec<u8>, tenant: Uuid) {
        self.0
            .lock()
            .expect("token cache lock")
            .insert(hash, tenant);
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("invalid configuration: {0}")]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error("HTTP server: {0}")]
    Http(#[source] std::io::Error),
    #[error("gRPC server: {0}")]
    Grpc(#[from] tonic::transport::Error),
    #[error("worker channel trust: {0}")]
    Trust(#[from] trust::TrustError),
    #[error("REST API TLS: {0}")]
    RestTls(#[source] std::io::Error),
    #[error(transparent)]
    Secrets(#[from] secrets::SecretError),
    #[error("stored secrets were sealed under key ids the keyring lacks: {0:?} (add them back to the keyring, after the current key)")]
    MissingSecretKeys(Vec<String>),
}

/// Runs the control plane on bound listeners until `shutdown` resolves.
pub async fn serve(
    config: ApiConfig,
    http_listener: TcpListener,
    grpc_listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    config.validate()?;
    let trust = Arc::new(trust::Trust::load(&config)?);
    let agent_tls = trust
        .agent_client_config()
        .map_err(trust::TrustError::from)?;
    let grpc_tls = trust.server_config().map_err(trust::TrustError::from)?;
    let rest_tls = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => Some(trust::rest_tls_config(cert, key)?),
        _ => None,
    };
    let keyring = config.secrets.keyring()?;
    let store = store::Store::connect(
        &config.database_url,
        config.db_max_connections,
        config.db_acquire_timeout(),
        keyring,
    )
    .await?;
    store.check_secret_keys().await?;
    let missing = store.missing_secret_keys().await?;
    if !missing.is_empty() {
        return Err(ServeError::MissingSecretKeys(missing));
    }
    let legacy = store.seal_legacy_secrets().await?;
    if legacy != store::secrets::Resealed::default() {
        tracing::info!(
            containers = legacy.containers,
            jobs = legacy.jobs,
            "sealed secrets stored in plain text by an earlier version"
        );
    }
    tracing::info!(
        key = store.keyring().current(),
        "secrets at rest are sealed"
    );
    store
        .ensure_default_rate(skiff_billing::Rate {
            nano_per_vcpu_second: config.price_vcpu_second_nano,
            nano_per_gib_second: config.price_gib_second_nano,
        })
        .await?;
    let cancel = CancellationToken::new();
    let state = Arc::new(AppState {
        admin_token_sha256: http::hash_token(&config.admin_token),
        rate_limits: ratelimit::RateLimits::new(config.read_bucket(), config.write_bucket()),
        requests_in_progress: tokio::sync::Semaphore::new(config.max_concurrent_requests.max(1)),
        config,
        store,
        hub: Arc::new(notify::Hub::default()),
        metrics: metrics::Metrics::default(),
        agents: grpc::AgentClients::new(agent_tls, trust.own.clone()),
        trust: trust.clone(),
        token_cache: TokenCache::default(),
        shutdown: cancel.clone(),
    });
    {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            shutdown.await;
            cancel.cancel();
        });
    }

    let listener = tokio::spawn(notify::listen(
        state.store.pool().clone(),
        state.hub.clone(),
        cancel.clone(),
    ));
    let scheduler = tokio::spawn(scheduler::run(state.clone(), cancel.clone()));
    tokio::spawn(trust.clone().renew_own(cancel.clone()));
    tokio::spawn(webhooks::run(state.clone(), cancel.clone()));

    let grpc = {
        let cancel = cancel.clone();
        let service = skiff_proto::control_plane_server::ControlPlaneServer::new(
            grpc::ControlPlaneService::new(state.clone()),
        );
        let metrics_state = state.clone();
        let incoming =
            skiff_proto::tls::incoming::incoming(grpc_listener, grpc_tls, move |reason| {
                metrics_state
                    .metrics
                    .handshakes_refused
                    .with_label_values(&[reason])
                    .inc();
            });
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .http2_keepalive_interval(Some(Duration::from_secs(10)))
                .add_service(service)
                .serve_with_incoming_shutdown(incoming, cancel.cancelled_owned())
                .await
        })
    };

    tracing::info!(http = %http_listener.local_addr().map_err(ServeError::Http)?, "skiff-api listening");
    let app = http::router(state.clone());
    let http_cancel = cancel.clone();
    let http_result = match rest_tls {
        None => axum::serve(http_listener, app)
            .with_graceful_shutdown(async move { http_cancel.cancelled().await })
            .await
            .map_err(ServeError::Http),
        Some(tls) => {
            let handle = axum_server::Handle::new();
            {
                let handle = handle.clone();
                tokio::spawn(async move {
                    http_cancel.cancelled().await;
                    handle.graceful_shutdown(Some(DRAIN_TIMEOUT));
                });
            }
            let listener = http_listener.into_std().map_err(ServeError::RestTls)?;
            axum_server::from_tcp_rustls(
                listener,
                axum_server::tls_rustls::RustlsConfig::from_config(tls),
            )
            .map_err(ServeError::RestTls)?
            .handle(handle)
            .serve(app.into_make_service())
            .await
            .map_err(ServeError::RestTls)
        }
    };
    cancel.cancel();
    // Streams (watch, follow logs) never end by themselves: bound the drain.
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, async {
        let _ = scheduler.await;
        let _ = listener.await;
        if let Ok(Err(err)) = grpc.await {
            tracing::warn!(error = %err, "gRPC server ended with an error");
        }
    })
    .await;
    http_result
}
