//! Everything the control plane keeps in PostgreSQL: tenants and their
//! tokens, hosts, containers (desired and observed state), and events.
//!
//! The container state machine lives here, in [`Store::apply_report`]: the
//! worker reports facts (a task of generation N exited with code 3) and this
//! module decides what they mean (failed, or a restart after back-off).
//! Every change is one transaction, so an acknowledged request or report is
//! never half-applied.

use crate::model::NewContainer;
use chrono::{DateTime, Duration as ChronoDuration, Utc};
use skiff_core::{ContainerState, Reason, RestartPolicy};
use skiff_proto as pb;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::types::Json;
use sqlx::{Postgres, Transaction};
use std::collections::BTreeMap;
use std::time::Duration;
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("a container named {0:?} already exists")]
    NameTaken(String),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("corrupt row: {0}")]
    Corrupt(String),
    #[error("metering: {0}")]
    Billing(#[from] skiff_billing::BillingError),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A run that lasted at least this long resets the restart back-off.
const BACKOFF_RESET_AFTER: ChronoDuration = ChronoDuration::minutes(10);
const BACKOFF_MAX_SECS: i64 = 300;

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
    pub secure_env: Json<skiff_core::SecretEnv>,
    pub cpu_millis: i32,
    pub memory_mib: i32,
    pub restart_policy: String,
    pub max_restarts: Option<i32>,
    pub stop_timeout_s: i32,
    pub labels: Json<BTreeMap<String, String>>,
    pub desired: String,
    pub generation: i64,
    pub restart_at: Option<DateTime<Utc>>,
    pub state: String,
    pub reason: Option<String>,
    pub message: Option<String>,
    pub exit_code: Option<i32>,
    pub restart_count: i32,
    pub backoff_step: i32,
    pub host_id: Option<String>,
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
}

impl ContainerRow {
    pub fn state(&self) -> ContainerState {
        self.state.parse().unwrap_or(ContainerState::Failed)
    }

    pub fn restart_policy(&self) -> RestartPolicy {
        self.restart_policy.parse().unwrap_or_default()
    }
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EventRow {
    pub kind: String,
    pub message: String,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct HostRow {
    pub id: String,
    pub agent_addr: String,
    pub cpu_millis: i32,
    pub memory_mib: i64,
    pub last_heartbeat_at: DateTime<Utc>,
}

/// Filters for listing a tenant's containers.
#[derive(Debug, Default, Clone)]
pub struct ListFilter {
    pub states: Vec<ContainerState>,
    pub labels: BTreeMap<String, String>,
    pub after: Option<Uuid>,
    pub limit: i64,
}

/// What a worker report changed, for waking waiters and recording metrics.
#[derive(Debug, Clone)]
pub struct ReportOutcome {
    pub container_id: Uuid,
    pub state: ContainerState,
    /// Phase durations newly known from this report (for metrics).
    pub timings: Option<pb::Timings>,
    pub queued_ms: Option<i64>,
}

/// A user's request to change a container's lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Stop,
    Start,
    Restart,
    Delete,
}

const CONTAINER_COLUMNS: &str = "id, tenant_id, name, image, image_digest, command, env, secure_env, \
    cpu_millis, memory_mib, restart_policy, max_restarts, stop_timeout_s, labels, desired, generation, \
    restart_at, state, reason, message, exit_code, restart_count, backoff_step, host_id, created_at, \
    scheduled_at, started_at, finished_at, queued_ms, pull_ms, create_ms, start_ms, deleted_at, removed_at";

/// A new run of a container (start or restart): the next generation, on
/// the same host if it is alive ($2: seconds since its last heartbeat that
/// still count as alive), else back to the scheduler. A task still running
/// is stopped first by the worker ("stopping").
const NEW_RUN_SQL: &str =
    "UPDATE containers SET desired = 'running', generation = generation + 1, \
     restart_at = NULL, backoff_step = 0, \
     host_id = CASE WHEN EXISTS (SELECT 1 FROM hosts h WHERE h.id = containers.host_id \
         AND h.last_heartbeat_at > now() - make_interval(secs => $2)) THEN host_id END, \
     state = CASE WHEN NOT EXISTS (SELECT 1 FROM hosts h WHERE h.id = containers.host_id \
         AND h.last_heartbeat_at > now() - make_interval(secs => $2)) THEN 'pending' \
       WHEN state IN ('running', 'stopping') THEN 'stopping' ELSE 'scheduled' END, \
     reason = NULL, message = NULL, exit_code = NULL, started_at = NULL, finished_at = NULL \
     WHERE id = $1";

#[derive(Clone)]
pub struct Store {
    pool: PgPool,
}

impl Store {
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            // sqlx pings a pooled connection before every use by default: a
            // second round trip on every query. A broken connection fails
            // its query instead, and the pool replaces it.
            .test_before_acquire(false)
            .acquire_timeout(Duration::from_secs(10))
            .connect(url)
            .await?;
        sqlx::migrate!("../migrations").run(&pool).await?;
        Ok(Self { pool })
    }

    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    // ---- tenants ----

    pub async fn create_tenant(&self, name: &str, token_sha256: &[u8]) -> Result<Uuid> {
        let id = Uuid::now_v7();
        let mut tx = self.pool.begin().await?;
        sqlx::query("INSERT INTO tenants (id, name) VALUES ($1, $2)")
            .bind(id)
            .bind(name)
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO api_tokens (token_sha256, tenant_id) VALUES ($1, $2)")
            .bind(token_sha256)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(id)
    }

    pub async fn tenant_for_token(&self, token_sha256: &[u8]) -> Result<Option<Uuid>> {
        Ok(
            sqlx::query_scalar("SELECT tenant_id FROM api_tokens WHERE token_sha256 = $1")
                .bind(token_sha256)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    // ---- containers: the tenant's side ----

    /// Stores a new container as `pending`. Returns once committed.
    pub async fn insert_container(&self, tenant: Uuid, c: &NewContainer) -> Result<ContainerRow> {
        let result = sqlx::query_as::<_, ContainerRow>(&format!(
            "INSERT INTO containers (id, tenant_id, name, image, command, env, secure_env, cpu_millis, \
             memory_mib, restart_policy, max_restarts, stop_timeout_s, labels) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) RETURNING {CONTAINER_COLUMNS}"
        ))
        .bind(c.id)
        .bind(tenant)
        .bind(&c.name)
        .bind(&c.image)
        .bind(Json(&c.command))
        .bind(Json(&c.env))
        .bind(Json(&c.secure_env))
        .bind(c.cpu.millis() as i32)
        .bind(c.memory.mib() as i32)
        .bind(c.restart_policy.as_str())
        .bind(c.max_restarts.map(|n| n.min(i32::MAX as u32) as i32))
        .bind(c.stop_timeout_s as i32)
        .bind(Json(&c.labels))
        .fetch_one(&self.pool)
        .await;
        match result {
            Err(sqlx::Error::Database(db)) if db.constraint() == Some("containers_tenant_name") => {
                Err(StoreError::NameTaken(c.name.clone()))
            }
            other => Ok(other?),
        }
    }

    pub async fn get_container(&self, tenant: Uuid, id: Uuid) -> Result<Option<ContainerRow>> {
        Ok(sqlx::query_as::<_, ContainerRow>(&format!(
            "SELECT {CONTAINER_COLUMNS} FROM containers WHERE id = $1 AND tenant_id = $2 AND deleted_at IS NULL"
        ))
        .bind(id)
        .bind(tenant)
        .fetch_optional(&self.pool)
        .await?)
    }

    pub async fn list_containers(&self, tenant: Uuid, f: &ListFilter) -> Result<Vec<ContainerRow>> {
        let states: Vec<&str> = f.states.iter().map(|s| s.as_str()).collect();
        Ok(sqlx::query_as::<_, ContainerRow>(&format!(
            "SELECT {CONTAINER_COLUMNS} FROM containers \
             WHERE tenant_id = $1 AND deleted_at IS NULL \
               AND (cardinality($2::text[]) = 0 OR state = ANY($2)) \
               AND labels @> $3 \
               AND ($4::uuid IS NULL OR id > $4) \
             ORDER BY id LIMIT $5"
        ))
        .bind(tenant)
        .bind(&states)
        .bind(Json(&f.labels))
        .bind(f.after)
        .bind(f.limit)
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn events(&self, container: Uuid) -> Result<Vec<EventRow>> {
        Ok(sqlx::query_as::<_, EventRow>(
            "SELECT kind, message, at FROM container_events WHERE container_id = $1 ORDER BY at, seq",
        )
        .bind(container)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Applies a user's lifecycle request. Returns the updated row, or None
    /// when the container does not exist for this tenant.
    pub async fn request(
        &self,
        tenant: Uuid,
        id: Uuid,
        action: Action,
        live_within: Duration,
    ) -> Result<Option<ContainerRow>> {
        let mut tx = self.pool.begin().await?;
        let Some(row) = lock_container(&mut tx, id, Some(tenant)).await? else {
            return Ok(None);
        };
        let state = row.state();
        let sql = match action {
            Action::Stop => {
                if state.is_terminal() {
                    None
                } else if row.host_id.is_none() || row.restart_at.is_some() {
                    // Nothing runs: not placed yet, or waiting out back-off.
                    Some(
                        "UPDATE containers SET desired = 'stopped', restart_at = NULL, state = 'stopped', \
                         reason = 'StopRequested', message = 'stopped before it ran', finished_at = now() WHERE id = $1",
                    )
                } else {
                    Some(
                        "UPDATE containers SET desired = 'stopped', state = 'stopping', \
                         reason = 'StopRequested', message = NULL WHERE id = $1",
                    )
                }
            }
            // A stop in flight followed by start is a restart: the user's
            // latest word wins instead of being dropped.
            Action::Start if state.is_terminal() || row.desired == "stopped" => Some(NEW_RUN_SQL),
            Action::Start => None,
            Action::Restart => Some(NEW_RUN_SQL),
            Action::Delete => Some(
                "UPDATE containers SET desired = 'deleted', deleted_at = now(), restart_at = NULL, \
                 removed_at = CASE WHEN host_id IS NULL THEN now() END, \
                 state = CASE WHEN state IN ('succeeded', 'failed', 'stopped') THEN state ELSE 'stopped' END, \
                 finished_at = COALESCE(finished_at, now()) WHERE id = $1",
            ),
        };
        if let Some(sql) = sql {
            let query = sqlx::query(sql).bind(id);
            let query = if sql == NEW_RUN_SQL {
                query.bind(live_within.as_secs_f64())
            } else {
                query
            };
            query.execute(&mut *tx).await?;
            if action == Action::Restart {
                insert_event(
                    &mut tx,
                    id,
                    &format!("restart-{}", row.generation + 1),
                    "Restarting",
                    "restart requested",
                    Utc::now(),
                )
                .await?;
            }
        }
        let row = lock_container(&mut tx, id, None).await?;
        tx.commit().await?;
        Ok(row)
    }

    /// A container of any tenant, deleted ones included (admin corrections).
    pub async fn container_for_admin(&self, id: Uuid) -> Result<Option<ContainerRow>> {
        Ok(sqlx::query_as::<_, ContainerRow>(&format!(
            "SELECT {CONTAINER_COLUMNS} FROM containers WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Appends a correction to the container's tenant's ledger; false when
    /// an adjustment with this id was already applied.
    pub async fn append_adjustment(&self, adjustment: &skiff_billing::Adjustment) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let applied = skiff_billing::append_adjustment(&mut tx, adjustment).await?;
        tx.commit().await?;
        Ok(applied)
    }

    /// Whether the worker has removed a deleted container from its host.
    pub async fn is_removed(&self, id: Uuid) -> Result<bool> {
        Ok(sqlx::query_scalar::<_, bool>(
            "SELECT removed_at IS NOT NULL FROM containers WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .unwrap_or(true))
    }

    // ---- hosts ----

    pub async fn register_host(&self, req: &pb::RegisterRequest) -> Result<()> {
        sqlx::query(
            "INSERT INTO hosts (id, agent_addr, cpu_millis, memory_mib, containerd_version, hostname) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (id) DO UPDATE SET agent_addr = $2, cpu_millis = $3, memory_mib = $4, \
               containerd_version = $5, hostname = $6, last_heartbeat_at = now()",
        )
        .bind(&req.host_id)
        .bind(&req.agent_addr)
        .bind(req.cpu_millis.min(i32::MAX as u32) as i32)
        .bind(req.memory_mib.min(i64::MAX as u64) as i64)
        .bind(&req.containerd_version)
        .bind(&req.hostname)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records a heartbeat; false when the host is unknown (it must register).
    pub async fn heartbeat(&self, host_id: &str) -> Result<bool> {
        let done = sqlx::query("UPDATE hosts SET last_heartbeat_at = now() WHERE id = $1")
            .bind(host_id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn host(&self, host_id: &str) -> Result<Option<HostRow>> {
        Ok(sqlx::query_as::<_, HostRow>(
            "SELECT id, agent_addr, cpu_millis, memory_mib, last_heartbeat_at FROM hosts WHERE id = $1",
        )
        .bind(host_id)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// The complete desired set for a host: every container placed there
    /// that still has something on the host.
    pub async fn assignments(&self, host_id: &str) -> Result<Vec<ContainerRow>> {
        Ok(sqlx::query_as::<_, ContainerRow>(&format!(
            "SELECT {CONTAINER_COLUMNS} FROM containers WHERE host_id = $1 AND removed_at IS NULL ORDER BY id"
        ))
        .bind(host_id)
        .fetch_all(&self.pool)
        .await?)
    }

    // ---- scheduling ----

    /// Places pending containers on live hosts with room, oldest first.
    /// Returns the hosts that got new work.
    pub async fn place_pending(&self, live_after: DateTime<Utc>) -> Result<Vec<String>> {
        let mut tx = self.pool.begin().await?;
        // One placer at a time, so two passes never overcommit a host.
        sqlx::query("SELECT pg_advisory_xact_lock(7301)")
            .execute(&mut *tx)
            .await?;
        let pending: Vec<(Uuid, i32, i32)> = sqlx::query_as(
            "SELECT id, cpu_millis, memory_mib FROM containers \
             WHERE state = 'pending' AND desired = 'running' AND deleted_at IS NULL \
             ORDER BY created_at LIMIT 1000 FOR UPDATE SKIP LOCKED",
        )
        .fetch_all(&mut *tx)
        .await?;
        if pending.is_empty() {
            return Ok(Vec::new());
        }
        // Free capacity per live host: what it offers minus what its
        // non-terminal containers reserve.
        let mut hosts: Vec<(String, i64, i64)> = sqlx::query_as(
            "SELECT h.id, h.cpu_millis::bigint - COALESCE(SUM(c.cpu_millis), 0)::bigint, \
                    h.memory_mib - COALESCE(SUM(c.memory_mib), 0)::bigint \
             FROM hosts h LEFT JOIN containers c ON c.host_id = h.id AND c.removed_at IS NULL \
               AND c.state NOT IN ('succeeded', 'failed', 'stopped') \
             WHERE h.last_heartbeat_at > $1 GROUP BY h.id ORDER BY h.id",
        )
        .bind(live_after)
        .fetch_all(&mut *tx)
        .await?;
        let mut touched = Vec::new();
        for (id, cpu, mem) in pending {
            // Most free cpu first spreads load across hosts.
            hosts.sort_by_key(|(_, free_cpu, _)| std::cmp::Reverse(*free_cpu));
            let Some(host) = hosts.iter_mut().find(|(_, free_cpu, free_mem)| {
                *free_cpu >= i64::from(cpu) && *free_mem >= i64::from(mem)
            }) else {
                sqlx::query(
                    "UPDATE containers SET reason = 'NoCapacity', \
                     message = 'waiting for a host with enough free cpu and memory' WHERE id = $1",
                )
                .bind(id)
                .execute(&mut *tx)
                .await?;
                continue;
            };
            host.1 -= i64::from(cpu);
            host.2 -= i64::from(mem);
            sqlx::query(
                "UPDATE containers SET state = 'scheduled', host_id = $2, scheduled_at = now(), \
                 reason = NULL, message = NULL, \
                 queued_ms = (EXTRACT(EPOCH FROM (now() - created_at)) * 1000)::bigint WHERE id = $1",
            )
            .bind(id)
            .bind(&host.0)
            .execute(&mut *tx)
            .await?;
            insert_event(
                &mut tx,
                id,
                "scheduled",
                "Scheduled",
                &format!("placed on host {}", host.0),
                Utc::now(),
            )
            .await?;
            if !touched.contains(&host.0) {
                touched.push(host.0.clone());
            }
        }
        tx.commit().await?;
        Ok(touched)
    }

    /// Starts the next run of containers whose restart back-off has passed.
    /// Returns the hosts to notify.
    pub async fn start_due_restarts(&self) -> Result<Vec<String>> {
        let hosts: Vec<(Uuid, Option<String>, i64)> = sqlx::query_as(
            "UPDATE containers SET generation = generation + 1, restart_count = restart_count + 1, \
               restart_at = NULL, state = 'scheduled', reason = NULL, message = NULL, started_at = NULL, finished_at = NULL \
             WHERE restart_at <= now() AND desired = 'running' AND deleted_at IS NULL \
             RETURNING id, host_id, generation",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut touched = Vec::new();
        for (id, host, generation) in hosts {
            let mut tx = self.pool.begin().await?;
            insert_event(
                &mut tx,
                id,
                &format!("restart-{generation}"),
                "Restarting",
                "restart policy",
                Utc::now(),
            )
            .await?;
            tx.commit().await?;
            if let Some(host) = host {
                if !touched.contains(&host) {
                    touched.push(host);
                }
            }
        }
        Ok(touched)
    }

    /// Marks the containers of hosts silent since `cutoff` as failed with
    /// HostLost. Their desired state becomes stopped, so a host that comes
    /// back stops them instead of running them unseen. Returns affected ids.
    pub async fn fail_lost_hosts(&self, cutoff: DateTime<Utc>) -> Result<Vec<Uuid>> {
        Ok(sqlx::query_scalar(
            "UPDATE containers c SET state = 'failed', reason = 'HostLost', desired = 'stopped', restart_at = NULL, \
               message = 'host ' || c.host_id || ' stopped heartbeating', finished_at = now() \
             FROM hosts h WHERE c.host_id = h.id AND h.last_heartbeat_at < $1 \
               AND c.state NOT IN ('succeeded', 'failed', 'stopped') AND c.deleted_at IS NULL \
             RETURNING c.id",
        )
        .bind(cutoff)
        .fetch_all(&self.pool)
        .await?)
    }

    // ---- metering ----

    /// Applies a meter checkpoint; false for a duplicate or an unknown run.
    pub async fn apply_checkpoint(&self, c: &pb::UsageCheckpoint) -> Result<bool> {
        let id = Uuid::parse_str(&c.container_id)
            .map_err(|e| StoreError::Corrupt(format!("checkpoint container id: {e}")))?;
        let observed_at = DateTime::from_timestamp_millis(c.observed_at_unix_ms)
            .ok_or_else(|| StoreError::Corrupt("checkpoint time out of range".into()))?;
        let usage = skiff_billing::MeasuredUsage {
            cpu_usage_ns: c.cpu_usage_ns,
            peak_memory_bytes: c.peak_memory_bytes,
        };
        // The ledger's appends are several statements (claim the report id,
        // lock the run and the chain head, insert, advance both): one
        // transaction, or an interrupted checkpoint breaks the tenant's chain.
        let mut tx = self.pool.begin().await?;
        let applied = skiff_billing::checkpoint(
            &mut tx,
            &c.report_id,
            id,
            c.generation as i64,
            observed_at,
            Some(usage),
        )
        .await?;
        tx.commit().await?;
        Ok(applied)
    }

    /// Closes the open runs of hosts silent since `cutoff` at the last
    /// checkpoint that saw them running: unobserved time is never billed.
    pub async fn close_runs_of_lost_hosts(&self, cutoff: DateTime<Utc>) -> Result<u64> {
        let hosts: Vec<String> =
            sqlx::query_scalar("SELECT id FROM hosts WHERE last_heartbeat_at < $1")
                .bind(cutoff)
                .fetch_all(&self.pool)
                .await?;
        let mut closed = 0;
        for host in hosts {
            let mut tx = self.pool.begin().await?;
            closed += skiff_billing::close_runs_of_host(&mut tx, &host).await?;
            tx.commit().await?;
        }
        Ok(closed)
    }

    /// Seeds the rate card from config when it is empty.
    pub async fn ensure_default_rate(&self, rate: skiff_billing::Rate) -> Result<()> {
        let mut conn = self.pool.acquire().await?;
        skiff_billing::ensure_default_rate(&mut conn, rate).await?;
        Ok(())
    }

    /// A pooled connection, for the billing crate's queries.
    pub async fn conn(&self) -> Result<sqlx::pool::PoolConnection<Postgres>> {
        Ok(self.pool.acquire().await?)
    }

    // ---- worker reports ----

    /// Applies one worker report. Stale reports (older generation) only add
    /// their events. Returns None when the container is unknown.
    pub async fn apply_report(&self, report: &pb::StatusReport) -> Result<Option<ReportOutcome>> {
        let id = Uuid::parse_str(&report.container_id)
            .map_err(|e| StoreError::Corrupt(format!("report container id: {e}")))?;
        let mut tx = self.pool.begin().await?;
        let Some(row) = lock_container(&mut tx, id, None).await? else {
            return Ok(None);
        };
        for event in &report.events {
            let at = DateTime::from_timestamp_millis(event.at_unix_ms).unwrap_or_else(Utc::now);
            insert_event(&mut tx, id, &event.key, &event.kind, &event.message, at).await?;
        }
        let observed =
            pb::ObservedState::try_from(report.state).unwrap_or(pb::ObservedState::Unspecified);
        let current_generation = report.generation == row.generation as u64;
        meter_observation(&mut tx, &row, report, observed).await?;
        let mut timings = None;
        if observed == pb::ObservedState::Removed {
            sqlx::query(
                "UPDATE containers SET removed_at = now() WHERE id = $1 AND desired = 'deleted'",
            )
            .bind(id)
            .execute(&mut *tx)
            .await?;
        } else if current_generation && row.host_id.as_deref() == Some(report.host_id.as_str()) {
            timings = report.timings;
            apply_observation(&mut tx, &row, report, observed).await?;
        }
        let state: String = sqlx::query_scalar("SELECT state FROM containers WHERE id = $1")
            .bind(id)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(ReportOutcome {
            container_id: id,
            state: state.parse().unwrap_or(ContainerState::Failed),
            timings,
            queued_ms: row.queued_ms,
        }))
    }
}

/// Locks a container row. With a tenant, only that tenant's visible
/// containers; without (worker reports), deleted ones too, so a host can
/// still report their exit and removal.
/// The meter's view of a run, from the container row.
fn run_facts(
    row: &ContainerRow,
    generation: i64,
    host_id: &str,
    started_at: DateTime<Utc>,
) -> skiff_billing::RunFacts {
    skiff_billing::RunFacts {
        tenant_id: row.tenant_id,
        container_id: row.id,
        container_name: row.name.clone(),
        generation,
        host_id: host_id.to_owned(),
        cpu_millis: row.cpu_millis,
        memory_mib: row.memory_mib,
        labels: row.labels.0.clone(),
        started_at,
    }
}

/// Opens a run when its task is reported running and closes it when the
/// task's exit is reported, in the same transaction as the state change.
/// Exits of older generations (a restart replaced them) close their runs too.
async fn meter_observation(
    tx: &mut Transaction<'_, Postgres>,
    row: &ContainerRow,
    report: &pb::StatusReport,
    observed: pb::ObservedState,
) -> Result<()> {
    let generation = report.generation as i64;
    let started_at = ms_to_time(report.started_at_unix_ms).or(if generation == row.generation {
        row.started_at
    } else {
        None
    });
    match observed {
        pb::ObservedState::Running if generation == row.generation => {
            if let Some(started_at) = started_at {
                let facts = run_facts(row, generation, &report.host_id, started_at);
                skiff_billing::open_run(tx, &facts).await?;
            }
        }
        pb::ObservedState::Exited if report.exit_code.is_some() => {
            let ended_at = ms_to_time(report.finished_at_unix_ms).unwrap_or_else(Utc::now);
            // The meter's own record of the start, when the report lacks it
            // (e.g. the exit of an older generation re-sent by a restarted worker).
            let started_at = match started_at {
                Some(at) => Some(at),
                None => sqlx::query_scalar(
                    "SELECT started_at FROM metering_runs WHERE container_id = $1 AND generation = $2",
                )
                .bind(row.id)
                .bind(generation)
                .fetch_optional(&mut **tx)
                .await?,
            };
            // Without a known start (never opened, start unknown) there is
            // nothing observed to bill.
            let facts = run_facts(
                row,
                generation,
                &report.host_id,
                started_at.unwrap_or(ended_at),
            );
            let reason = if report.reason.is_empty() {
                "exited"
            } else {
                report.reason.as_str()
            };
            let report_id = format!("{}:{generation}:exit", row.id);
            if started_at.is_some() {
                skiff_billing::close_run(tx, &report_id, &facts, ended_at, reason).await?;
            }
        }
        pb::ObservedState::Failed => {
            // A run that was going when it failed (its task vanished) closes
            // at the last checkpoint that saw it: unseen time is not billed.
            let last_seen: Option<DateTime<Utc>> = sqlx::query_scalar(
                "SELECT last_seen_at FROM metering_runs \
                 WHERE container_id = $1 AND generation = $2 AND ended_at IS NULL",
            )
            .bind(row.id)
            .bind(generation)
            .fetch_optional(&mut **tx)
            .await?;
            if let Some(last_seen) = last_seen {
                let facts = run_facts(row, generation, &report.host_id, last_seen);
                let report_id = format!("{}:{generation}:failed", row.id);
                let reason = if report.reason.is_empty() {
                    "failed"
                } else {
                    report.reason.as_str()
                };
                skiff_billing::close_run(tx, &report_id, &facts, last_seen, reason).await?;
            }
        }
        _ => {}
    }
    Ok(())
}

async fn lock_container(
    tx: &mut Transaction<'_, Postgres>,
    id: Uuid,
    tenant: Option<Uuid>,
) -> Result<Option<ContainerRow>> {
    Ok(sqlx::query_as::<_, ContainerRow>(&format!(
        "SELECT {CONTAINER_COLUMNS} FROM containers WHERE id = $1 \
         AND ($2::uuid IS NULL OR (tenant_id = $2 AND deleted_at IS NULL)) FOR UPDATE"
    ))
    .bind(id)
    .bind(tenant)
    .fetch_optional(&mut **tx)
    .await?)
}

async fn insert_event(
    tx: &mut Transaction<'_, Postgres>,
    id: Uuid,
    key: &str,
    kind: &str,
    message: &str,
    at: DateTime<Utc>,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO container_events (container_id, event_key, kind, message, at) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (container_id, event_key) DO NOTHING",
    )
    .bind(id)
    .bind(key)
    .bind(kind)
    .bind(message)
    .bind(at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

fn ms_to_time(ms: Option<i64>) -> Option<DateTime<Utc>> {
    ms.and_then(DateTime::from_timestamp_millis)
}

/// The state machine: what a fact about the current generation means.
async fn apply_observation(
    tx: &mut Transaction<'_, Postgres>,
    row: &ContainerRow,
    report: &pb::StatusReport,
    observed: pb::ObservedState,
) -> Result<()> {
    use pb::ObservedState as O;
    let state = row.state();
    if state.is_terminal() && observed != O::Exited {
        // A late progress report must not revive a finished container.
        return Ok(());
    }
    let digest = (!report.image_digest.is_empty()).then_some(report.image_digest.as_str());
    let t = report.timings.unwrap_or_default();
    let nonzero = |v: u64| (v > 0).then_some(v as i64);
    match observed {
        O::Pulling | O::Starting | O::Stopping => {
            let next = match observed {
                O::Pulling => "pulling",
                O::Starting => "starting",
                _ => "stopping",
            };
            // Progress only moves forward; a stop in flight stays "stopping".
            let allowed = match observed {
                O::Stopping => !state.is_terminal(),
                _ => matches!(
                    state,
                    ContainerState::Pending | ContainerState::Scheduled | ContainerState::Pulling
                ),
            };
            if allowed {
                sqlx::query(
                    "UPDATE containers SET state = $2, image_digest = COALESCE($3, image_digest), \
                     pull_ms = COALESCE($4, pull_ms) WHERE id = $1",
                )
                .bind(row.id)
                .bind(next)
                .bind(digest)
                .bind(if observed == O::Starting {
                    Some(t.pull_ms as i64)
                } else {
                    None
                })
                .execute(&mut **tx)
                .await?;
            }
        }
        O::Running => {
            // A stop requested while the task was starting keeps the container "stopping".
            let next = if row.desired == "running" {
                "running"
            } else {
                "stopping"
            };
            sqlx::query(
                "UPDATE containers SET state = $2, started_at = COALESCE(started_at, $3, now()), \
                 image_digest = COALESCE($4, image_digest), pull_ms = COALESCE($5, pull_ms), \
                 create_ms = COALESCE($6, create_ms), start_ms = COALESCE($7, start_ms), \
                 exit_code = NULL, finished_at = NULL, \
                 reason = CASE WHEN $2 = 'running' THEN NULL ELSE reason END, \
                 message = CASE WHEN $2 = 'running' THEN NULL ELSE message END WHERE id = $1",
            )
            .bind(row.id)
            .bind(next)
            .bind(ms_to_time(report.started_at_unix_ms))
            .bind(digest)
            .bind(report.timings.map(|t| t.pull_ms as i64))
            .bind(nonzero(t.create_ms))
            .bind(nonzero(t.start_ms))
            .execute(&mut **tx)
            .await?;
        }
        O::Exited => apply_exit(tx, row, report).await?,
        O::Failed => {
            let reason = if report.reason.is_empty() {
                Reason::StartFailed.as_str()
            } else {
                report.reason.as_str()
            };
            sqlx::query(
                "UPDATE containers SET state = 'failed', reason = $2, message = $3, finished_at = now(), \
                 image_digest = COALESCE($4, image_digest) WHERE id = $1",
            )
            .bind(row.id)
            .bind(reason)
            .bind(&report.message)
            .bind(digest)
            .execute(&mut **tx)
            .await?;
        }
        O::Removed | O::Unspecified => {}
    }
    Ok(())
}

async fn apply_exit(
    tx: &mut Transaction<'_, Postgres>,
    row: &ContainerRow,
    report: &pb::StatusReport,
) -> Result<()> {
    let finished_at = ms_to_time(report.finished_at_unix_ms).unwrap_or_else(Utc::now);
    let started_at = ms_to_time(report.started_at_unix_ms).or(row.started_at);
    let Some(code) = report.exit_code else {
        // Nothing ran for this generation (a stop arrived first).
        sqlx::query(
            "UPDATE containers SET state = 'stopped', reason = 'StopRequested', finished_at = $2 \
             WHERE id = $1 AND state NOT IN ('succeeded', 'failed', 'stopped')",
        )
        .bind(row.id)
        .bind(finished_at)
        .execute(&mut **tx)
        .await?;
        return Ok(());
    };
    if row.state().is_terminal() || row.restart_at.is_some() {
        // Already settled, or already waiting out back-off for this exit (a
        // repeated report): keep the first outcome and its timer.
        return Ok(());
    }
    let oom = report.reason == Reason::OOMKilled.as_str();
    let exit_reason = if oom {
        Reason::OOMKilled
    } else if code == 0 {
        Reason::Completed
    } else {
        Reason::Error
    };
    if row.desired != "running" {
        sqlx::query(
            "UPDATE containers SET state = 'stopped', reason = 'StopRequested', exit_code = $2, \
             started_at = COALESCE(started_at, $3), finished_at = $4, message = NULL WHERE id = $1",
        )
        .bind(row.id)
        .bind(code)
        .bind(started_at)
        .bind(finished_at)
        .execute(&mut **tx)
        .await?;
        return Ok(());
    }
    let policy = row.restart_policy();
    let may_restart = row.max_restarts.is_none_or(|max| row.restart_count < max);
    if policy.restarts_after(code) && may_restart {
        let ran_long = started_at.is_some_and(|s| finished_at - s >= BACKOFF_RESET_AFTER);
        let step = if ran_long { 0 } else { row.backoff_step };
        let delay = (1i64 << step.min(9)).min(BACKOFF_MAX_SECS);
        sqlx::query(
            "UPDATE containers SET state = 'starting', reason = 'BackOff', exit_code = $2, \
             message = $3, started_at = COALESCE(started_at, $4), finished_at = $5, \
             restart_at = now() + make_interval(secs => $6), backoff_step = $7 WHERE id = $1",
        )
        .bind(row.id)
        .bind(code)
        .bind(format!(
            "exited with code {code} ({exit_reason}); restarting in {delay} s"
        ))
        .bind(started_at)
        .bind(finished_at)
        .bind(delay as f64)
        .bind(step + 1)
        .execute(&mut **tx)
        .await?;
        return Ok(());
    }
    let state = if code == 0 && !oom {
        "succeeded"
    } else {
        "failed"
    };
    let message = if oom {
        format!(
            "the process exceeded its memory limit of {} MiB and was killed",
            row.memory_mib
        )
    } else {
        format!("exited with code {code}")
    };
    sqlx::query(
        "UPDATE containers SET state = $2, reason = $3, exit_code = $4, message = $5, \
         started_at = COALESCE(started_at, $6), finished_at = $7 WHERE id = $1",
    )
    .bind(row.id)
    .bind(state)
    .bind(exit_reason.as_str())
    .bind(code)
    .bind(message)
    .bind(started_at)
    .bind(finished_at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
