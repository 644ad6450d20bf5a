//! Everything the control plane keeps in PostgreSQL. PostgreSQL is the only
//! shared state between API replicas: placement runs under an advisory lock,
//! rows are locked `FOR UPDATE` (queues with `SKIP LOCKED`), and wake-ups
//! travel as `NOTIFY`s written by triggers (see the migrations).
//!
//! Decisions are not made here: the lifecycle ([`crate::lifecycle`]) and
//! placement ([`crate::scheduler::place`]) are pure functions; this module
//! loads their input and writes their output, one transaction per change, so
//! an acknowledged request or report is never half-applied.
//!
//! Layout, one module per resource:
//! - [`tenants`]: tenants and their tokens.
//! - [`containers`]: a tenant's containers: create, read, list, lifecycle requests.
//! - [`exec_sessions`]: ACI's exec and attach sessions (single use, hashed passwords).
//! - [`groups`]: container groups: a group and its members, created and acted on together.
//! - [`hosts`]: registration, heartbeats, drain, loss (fail or re-place, billing).
//! - [`placement`]: the placement round, queue expiry, restarts after back-off, admission.
//! - [`reports`]: worker status reports through the lifecycle, and meter checkpoints.
//! - [`assignments`]: each host's revisioned assignment set (snapshots and deltas).
//! - [`quotas`]: per-tenant quotas: limits, use, admission.
//! - [`limits`]: runs stopped at their deadline (`timeout_s`) or budget (`max_cost`).
//! - [`idempotency`]: `Idempotency-Key` responses, stored with what they did.
//! - [`trust`]: join tokens, host identities, issued certificates, revocation.
//! - [`webhooks`]: completion webhook deliveries and the tenant's signing secret.
//! - [`events`]: the tenant's event log, read in commit order.
//! - [`registry_credentials`]: registry credentials (a tenant's stored
//!   ones, a container's own), sealed, and which applies to a pull.

pub mod assignments;
pub mod containers;
pub mod events;
pub mod exec_sessions;
pub mod groups;
pub mod hosts;
pub mod idempotency;
pub mod jobs;
pub mod limits;
pub mod placement;
pub mod quotas;
pub mod registry_credentials;
pub mod reports;
pub mod secrets;
pub mod tenants;
pub mod trust;
pub mod webhooks;

use crate::lifecycle::{Facts, Transition};
use chrono::{DateTime, Utc};
use skiff_core::{
    ContainerState, DesiredState, NetworkMode, PortRequest, PublishedPort, Reason, RestartPolicy,
};
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::types::Json;
use sqlx::{PgConnection, Postgres};
use std::collections::BTreeMap;
use std::time::Duration;
use uuid::Uuid;

pub use containers::ListFilter;
pub use hosts::HostRow;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("a container named {0:?} already exists")]
    NameTaken(String),
    #[error("a container group named {0:?} already exists in its namespace")]
    GroupNameTaken(String),
    #[error("a member of container group {0}: act on the group")]
    GroupMember(Uuid),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("corrupt row: {0}")]
    Corrupt(String),
    #[error("metering: {0}")]
    Billing(#[from] skiff_billing::BillingError),
    #[error("report refused: {0}")]
    Refused(#[from] crate::report_bounds::Refusal),
    #[error("quota: {0}")]
    QuotaExceeded(quotas::Exceeded),
    #[error("secrets: {0}")]
    Secret(#[from] crate::secrets::SecretError),
    #[error("{0} rows stayed as they were for a minute (held locked by other transactions, or rewritten under another key meanwhile)")]
    Locked(i64),
}

impl StoreError {
    /// The database cannot be reached right now (down, restarting, pool
    /// exhausted): worth retrying later, not a bug.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Self::Database(e) => database_unavailable(e),
            Self::Billing(skiff_billing::BillingError::Database(e)) => database_unavailable(e),
            _ => false,
        }
    }
}

fn database_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Tls(_) => true,
        // Class 08 (connection exception) and 57P01..57P03 (shutting down,
        // cannot connect now).
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|c| c.starts_with("08") || c.starts_with("57P")),
        _ => false,
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// One row of `containers`, as the API and scheduler read it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ContainerRow {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub name: String,
    pub image: String,
    pub image_digest: Option<String>,
    pub command: Json<Vec<String>>,
    pub env: Json<BTreeMap<String, String>>,
    /// Keys of `secure_env` (the values are sealed: [`ContainerRow::secrets`]).
    pub secure_env_keys: Vec<String>,
    pub secure_env_kid: Option<String>,
    pub secure_env_sealed: Option<Vec<u8>>,
    pub cpu_millis: i32,
    pub memory_mib: i32,
    pub restart_policy: RestartPolicy,
    pub max_restarts: Option<i32>,
    pub stop_timeout_s: i32,
    pub timeout_s: Option<i32>,
    pub max_cost: Option<i64>,
    pub notify_url: Option<String>,
    pub labels: Json<BTreeMap<String, String>>,
    pub desired: DesiredState,
    pub generation: i64,
    pub restart_at: Option<DateTime<Utc>>,
    pub state: ContainerState,
    pub reason: Option<Reason>,
    pub message: Option<String>,
    pub exit_code: Option<i32>,
    pub restart_count: i32,
    pub backoff_step: i32,
    pub host_id: Option<String>,
    pub max_pending_s: i32,
    pub pending_since: Option<DateTime<Utc>>,
    pub host_labels: Json<BTreeMap<String, String>>,
    pub prefer_host_id: Option<String>,
    pub created_at: DateTime<Utc>,
    pub scheduled_at: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub queued_ms: Option<i64>,
    pub pull_ms: Option<i64>,
    pub create_ms: Option<i64>,
    pub start_ms: Option<i64>,
    pub deleted_at: Option<DateTime<Utc>>,
    pub removed_at: Option<DateTime<Utc>>,
    pub network: NetworkMode,
    pub network_group: Option<String>,
    pub read_only_rootfs: bool,
    /// The ports it asks to publish.
    pub ports: Json<Vec<PortRequest>>,
    /// The host ports of its current placement (they count only while it
    /// holds capacity: [`ContainerRow::holds_capacity`]).
    pub host_ports: Json<Vec<PublishedPort>>,
    /// Its address on its host's bridge, as last reported running.
    pub ip: Option<String>,
    /// Its volumes (secret contents are sealed: [`ContainerRow::secrets`]).
    pub volumes: Json<Vec<skiff_core::VolumeSource>>,
    pub mounts: Json<Vec<skiff_core::VolumeMount>>,
    pub liveness_probe: Option<Json<skiff_core::Probe>>,
    pub readiness_probe: Option<Json<skiff_core::Probe>>,
    /// The container group it is a member of (None: a container of its own).
    pub group_id: Option<Uuid>,
    /// The current run's readiness as its host last reported it.
    pub ready: bool,
    /// The current run's image pull, as its host last reported it.
    pub pull_bytes_done: Option<i64>,
    pub pull_bytes_total: Option<i64>,
}

impl ContainerRow {
    /// Its `secure_env` and secret volume files, opened with the keyring.
    pub fn secrets(
        &self,
        keyring: &crate::secrets::Keyring,
    ) -> Result<crate::secrets::Secrets, crate::secrets::SecretError> {
        keyring.open_secrets(
            self.secure_env_kid.as_deref(),
            self.secure_env_sealed.as_deref(),
            &crate::secrets::container_row(self.id),
        )
    }

    /// Whether it holds capacity (cpu, memory, host ports) on its host:
    /// the row-level twin of the `holds_capacity!` condition.
    pub fn holds_capacity(&self) -> bool {
        self.host_id.is_some() && self.removed_at.is_none() && !self.state.is_terminal()
    }

    /// The facts the lifecycle decides on.
    pub fn facts(&self) -> Facts {
        Facts {
            state: self.state,
            desired: self.desired,
            restart_policy: self.restart_policy,
            max_restarts: self.max_restarts,
            restart_count: self.restart_count,
            backoff_step: self.backoff_step,
            in_backoff: self.restart_at.is_some(),
            placed: self.host_id.is_some(),
            started_at: self.started_at,
            memory_mib: self.memory_mib,
            reason: self.reason,
        }
    }
}

const CONTAINER_COLUMNS: &str = "id, tenant_id, name, image, image_digest, command, env, \
    secure_env_keys, secure_env_kid, secure_env_sealed, \
    cpu_millis, memory_mib, restart_policy, max_restarts, stop_timeout_s, timeout_s, max_cost, notify_url, labels, desired, generation, \
    restart_at, state, reason, message, exit_code, restart_count, backoff_step, host_id, \
    max_pending_s, pending_since, host_labels, prefer_host_id, created_at, \
    scheduled_at, started_at, finished_at, queued_ms, pull_ms, create_ms, start_ms, deleted_at, removed_at, \
    network, network_group, ports, host_ports, ip, read_only_rootfs, volumes, mounts, \
    liveness_probe, readiness_probe, ready, pull_bytes_done, pull_bytes_total, group_id";

/// The states that hold a host's resources (everything not finished).
const TERMINAL_STATES: &str = "('succeeded', 'failed', 'stopped')";

/// The one definition of a container holding capacity on its host (its
/// cpu, memory and host ports): placed, not removed, not finished. A
/// condition on `containers` (unqualified columns).
macro_rules! holds_capacity {
    () => {
        "host_id IS NOT NULL AND removed_at IS NULL \
         AND state NOT IN ('succeeded', 'failed', 'stopped')"
    };
}

/// The one definition of a host's allocation, for placement and the hosts
/// view alike: what its unfinished containers reserve, and how many run.
/// Join it as `a` on `a.host_id = h.id`.
const ALLOCATION_BY_HOST: &str = concat!(
    "SELECT host_id, SUM(cpu_millis)::bigint AS cpu, \
     SUM(memory_mib)::bigint AS mem, count(*) FILTER (WHERE state = 'running') AS running \
     FROM containers WHERE ",
    holds_capacity!(),
    " GROUP BY host_id"
);

/// The host ports in use, one row per (host_id, port): each a
/// [`PublishedPort`] of a container holding capacity on that host, or of a
/// container deleted and not yet removed from it. A delete marks a live
/// container `stopped` at once, but its task may run for up to its stop
/// timeout and its host holds the port until then: handed to another run
/// meanwhile, that run's start would wait for it and could give up.
const PORTS_BY_HOST: &str = concat!(
    "SELECT host_id, p AS port FROM containers, jsonb_array_elements(host_ports) p \
     WHERE host_ports <> '[]' AND ((",
    holds_capacity!(),
    ") OR (desired = 'deleted' AND host_id IS NOT NULL AND removed_at IS NULL))"
);

/// A host (`h`) heard from within `$1` seconds and not judged lost.
const HOST_ALIVE: &str =
    "(h.last_heartbeat_at > now() - make_interval(secs => $1) AND h.lost_at IS NULL \
     AND h.revoked_at IS NULL)";

#[derive(Clone)]
pub struct Store {
    pool: PgPool,
    /// Seals and opens secrets at rest.
    keyring: std::sync::Arc<crate::secrets::Keyring>,
    /// This replica's queue of admissions per tenant (see
    /// [`quotas::AdmissionQueue`]).
    admissions: std::sync::Arc<quotas::AdmissionQueue>,
}

impl Store {
    pub async fn connect(
        url: &str,
        max_connections: u32,
        acquire_timeout: Duration,
        keyring: crate::secrets::Keyring,
    ) -> Result<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            // sqlx pings a pooled connection before every use by default: a
            // second round trip on every query. A broken connection fails
            // its query instead, and the pool replaces it.
            .test_before_acquire(false)
            // Short: while PostgreSQL is down a request should answer 503
            // promptly rather than hang.
            .acquire_timeout(acquire_timeout)
            .connect(url)
            .await?;
        Self::with_pool(pool, keyring).await
    }

    /// A store on `pool`, after running the migrations.
    pub async fn with_pool(pool: PgPool, keyring: crate::secrets::Keyring) -> Result<Self> {
        sqlx::migrate!("../migrations").run(&pool).await?;
        Ok(Self {
            pool,
            keyring: std::sync::Arc::new(keyring),
            admissions: Default::default(),
        })
    }

    /// The keyring that seals secrets at rest.
    pub fn keyring(&self) -> &crate::secrets::Keyring {
        &self.keyring
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Containers waiting for a host (the queue's depth).
    pub async fn pending_count(&self) -> Result<i64> {
        Ok(sqlx::query_scalar(
            "SELECT count(*) FROM containers \
             WHERE state = 'pending' AND desired = 'running' AND deleted_at IS NULL",
        )
        .fetch_one(&self.pool)
        .await?)
    }

    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// A pooled connection, for the billing crate's queries.
    pub async fn conn(&self) -> Result<sqlx::pool::PoolConnection<Postgres>> {
        Ok(self.pool.acquire().await?)
    }

    /// Seeds the rate card from config when it is empty.
    pub async fn ensure_default_rate(&self, rate: skiff_billing::Rate) -> Result<()> {
        let mut conn = self.pool.acquire().await?;
        skiff_billing::ensure_default_rate(&mut conn, rate).await?;
        Ok(())
    }

    /// Appends a correction to the container's tenant's ledger; false when
    /// an adjustment with this id was already applied.
    pub async fn append_adjustment(&self, adjustment: &skiff_billing::Adjustment) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let applied = skiff_billing::append_adjustment(&mut tx, adjustment).await?;
        tx.commit().await?;
        Ok(applied)
    }
}

/// Locks a container row. With a tenant, only that tenant's visible
/// containers; without (worker reports), deleted ones too, so a host can
/// still report their exit and removal.
async fn lock_container(
    conn: &mut PgConnection,
    id: Uuid,
    tenant: Option<Uuid>,
) -> Result<Option<ContainerRow>> {
    Ok(sqlx::query_as::<_, ContainerRow>(&format!(
        "SELECT {CONTAINER_COLUMNS} FROM containers WHERE id = $1 \
         AND ($2::uuid IS NULL OR (tenant_id = $2 AND deleted_at IS NULL)) FOR UPDATE"
    ))
    .bind(id)
    .bind(tenant)
    .fetch_optional(conn)
    .await?)
}

/// An event of a container, as stored.
pub(super) struct NewEvent<'a> {
    pub key: &'a str,
    pub kind: &'a str,
    pub message: &'a str,
    pub at: DateTime<Utc>,
}

impl<'a> NewEvent<'a> {
    /// A worker's report of an event.
    pub fn reported(e: &'a skiff_proto::Event) -> Self {
        Self {
            key: &e.key,
            kind: &e.kind,
            message: &e.message,
            at: DateTime::from_timestamp_millis(e.at_unix_ms).unwrap_or_else(Utc::now),
        }
    }
}

async fn insert_event(
    conn: &mut PgConnection,
    id: Uuid,
    key: &str,
    kind: &str,
    message: &str,
    at: DateTime<Utc>,
) -> Result<()> {
    let event = NewEvent {
        key,
        kind,
        message,
        at,
    };
    insert_events(conn, id, &[event]).await
}

/// Inserts events in one statement, in their order (an event already
/// recorded, by its key, is left as it is).
async fn insert_events(conn: &mut PgConnection, id: Uuid, events: &[NewEvent<'_>]) -> Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    let keys: Vec<&str> = events.iter().map(|e| e.key).collect();
    let kinds: Vec<&str> = events.iter().map(|e| e.kind).collect();
    let messages: Vec<&str> = events.iter().map(|e| e.message).collect();
    let ats: Vec<DateTime<Utc>> = events.iter().map(|e| e.at).collect();
    sqlx::query(
        "INSERT INTO container_events (container_id, event_key, kind, message, at) \
         SELECT $1, e.key, e.kind, e.message, e.at \
         FROM unnest($2::text[], $3::text[], $4::text[], $5::timestamptz[]) \
           WITH ORDINALITY AS e(key, kind, message, at, n) ORDER BY e.n \
         ON CONFLICT (container_id, event_key) DO NOTHING",
    )
    .bind(id)
    .bind(&keys)
    .bind(&kinds)
    .bind(&messages)
    .bind(&ats)
    .execute(conn)
    .await?;
    Ok(())
}

/// Writes a lifecycle [`Transition`]: each column only where the transition
/// says so (`started_at` only where none is recorded: the first start wins).
async fn apply_transition(conn: &mut PgConnection, id: Uuid, t: &Transition) -> Result<()> {
    if t.is_none() {
        return Ok(());
    }
    sqlx::query(
        "UPDATE containers SET \
           state = COALESCE($2, state), \
           desired = COALESCE($3, desired), \
           reason = CASE WHEN $4 THEN $5 ELSE reason END, \
           message = CASE WHEN $6 THEN $7 ELSE message END, \
           exit_code = CASE WHEN $8 THEN $9 ELSE exit_code END, \
           started_at = COALESCE(started_at, $10), \
           finished_at = CASE WHEN $11 THEN $12 ELSE finished_at END, \
           restart_at = CASE WHEN $13::float8 IS NOT NULL THEN now() + make_interval(secs => $13) \
                             WHEN $15 THEN NULL ELSE restart_at END, \
           backoff_step = COALESCE($14, backoff_step) \
         WHERE id = $1",
    )
    .bind(id)
    .bind(t.state)
    .bind(t.desired)
    .bind(t.reason.is_some())
    .bind(t.reason.flatten())
    .bind(t.message.is_some())
    .bind(t.message.clone().flatten())
    .bind(t.exit_code.is_some())
    .bind(t.exit_code.flatten())
    .bind(t.started_at)
    .bind(t.finished_at.is_some())
    .bind(t.finished_at.flatten())
    .bind(t.restart_in.map(|(delay, _)| delay as f64))
    .bind(t.restart_in.map(|(_, step)| step))
    .bind(t.cancel_restart)
    .execute(conn)
    .await?;
    Ok(())
}

fn ms_to_time(ms: Option<i64>) -> Option<DateTime<Utc>> {
    ms.and_then(DateTime::from_timestamp_millis)
}
