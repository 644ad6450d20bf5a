//! Hosts: registration, heartbeats (with the images they hold and the
//! assignment revision they have applied), drain, and loss.
//!
//! A host's lifecycle: `ready` once registered and heartbeating; `draining`
//! when an operator says so (keeps what runs, takes nothing new); `lost`
//! when silent for the lost-after timeout. Losing a host fails its
//! unfinished containers with `HostLost`, or queues a new run elsewhere when
//! their restart policy says so, and closes their meter runs at the last
//! checkpoint that saw them. A lost host that comes back stays `lost` until
//! its worker reports an applied revision past the loss (it has fenced
//! everything moved away); only then does it take work again.
//!
//! A host's identity is the one its certificate names (checked by the gRPC
//! layer before any call reaches this module); `revoked` is final
//! ([`super::trust`]).

use super::{
    insert_event, ContainerRow, Result, Store, ALLOCATION_BY_HOST, CONTAINER_COLUMNS, HOST_ALIVE,
    TERMINAL_STATES,
};
use crate::lifecycle::{self, HostLoss};
use chrono::{DateTime, Utc};
use skiff_core::{ContainerState, HostState};
use skiff_proto as pb;
use sqlx::types::Json;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;
use uuid::Uuid;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct HostRow {
    pub id: String,
    pub agent_addr: String,
    pub cpu_millis: i32,
    pub memory_mib: i64,
    pub last_heartbeat_at: DateTime<Utc>,
    pub revoked: bool,
}

/// A host as `GET /v1/hosts` shows it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct HostStatus {
    pub id: String,
    pub cpu_millis: i64,
    pub memory_mib: i64,
    pub allocated_cpu_millis: i64,
    pub allocated_memory_mib: i64,
    pub running: i64,
    pub images: Json<Vec<HeldImage>>,
    pub labels: Json<BTreeMap<String, String>>,
    pub last_heartbeat_at: DateTime<Utc>,
    pub draining: bool,
    pub lost: bool,
    pub revoked: bool,
    pub containerd_version: String,
    pub port_range_start: Option<i32>,
    pub port_range_end: Option<i32>,
    pub host_ip: Option<String>,
    pub subnet: Option<String>,
    /// Where its worker serves Prometheus metrics.
    pub metrics_url: Option<String>,
}

/// What a host offers `network: private` containers, as registered
/// (validated by the gRPC layer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkOffer {
    pub port_range_start: u16,
    pub port_range_end: u16,
    pub host_ip: std::net::IpAddr,
    /// CIDR.
    pub subnet: String,
}

impl HostStatus {
    pub fn state(&self) -> HostState {
        if self.revoked {
            HostState::Revoked
        } else if self.lost {
            HostState::Lost
        } else if self.draining {
            HostState::Draining
        } else {
            HostState::Ready
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HeldImage {
    pub reference: String,
    pub digest: String,
}

/// What a heartbeat reports.
#[derive(Debug, Clone)]
pub struct Heartbeat<'a> {
    pub host_id: &'a str,
    pub applied_revision: u64,
    pub images: Vec<HeldImage>,
    pub running: u32,
}

/// A worker's metrics address as kept: an http(s) URL of at most 2048
/// bytes, else none (a worker's word is shown to operators, not trusted).
fn metrics_url(url: &str) -> Option<&str> {
    let ok = url.len() <= 2048
        && (url.starts_with("http://") || url.starts_with("https://"))
        && url.bytes().all(|b| b.is_ascii_graphic());
    ok.then_some(url)
}

/// A host judged lost by [`Store::handle_lost_hosts`].
#[derive(Debug, Clone)]
pub struct LostHost {
    pub id: String,
    pub failed: Vec<Uuid>,
    pub replaced: Vec<Uuid>,
    pub runs_closed: u64,
}

impl Store {
    /// Records a host's registration, with the network it offers (None:
    /// none; its private containers then stay where they are, and no new
    /// one is placed there).
    pub async fn register_host(
        &self,
        host: &str,
        req: &pb::RegisterRequest,
        network: Option<&NetworkOffer>,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO hosts (id, agent_addr, cpu_millis, memory_mib, containerd_version, hostname, labels, \
               port_range_start, port_range_end, host_ip, subnet, metrics_url) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
             ON CONFLICT (id) DO UPDATE SET agent_addr = $2, cpu_millis = $3, memory_mib = $4, \
               containerd_version = $5, hostname = $6, labels = $7, last_heartbeat_at = now(), \
               port_range_start = $8, port_range_end = $9, host_ip = $10, subnet = $11, \
               metrics_url = $12",
        )
        .bind(host)
        .bind(&req.agent_addr)
        .bind(req.cpu_millis.min(i32::MAX as u32) as i32)
        .bind(req.memory_mib.min(i64::MAX as u64) as i64)
        .bind(&req.containerd_version)
        .bind(&req.hostname)
        .bind(Json(req.labels.iter().collect::<BTreeMap<_, _>>()))
        .bind(network.map(|n| i32::from(n.port_range_start)))
        .bind(network.map(|n| i32::from(n.port_range_end)))
        .bind(network.map(|n| n.host_ip.to_string()))
        .bind(network.map(|n| n.subnet.as_str()))
        .bind(metrics_url(&req.metrics_url))
        .execute(&self.pool)
        .await?;
        self.notify_scheduler().await
    }

    /// The address each of `hosts` publishes ports on (hosts offering no
    /// network are left out).
    pub async fn host_ips(&self, hosts: &[String]) -> Result<HashMap<String, String>> {
        if hosts.is_empty() {
            return Ok(HashMap::new());
        }
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT id, host_ip FROM hosts WHERE id = ANY($1) AND host_ip IS NOT NULL",
        )
        .bind(hosts)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().collect())
    }

    /// Records a heartbeat; None when the host is unknown (it must
    /// register), else whether the host is placeable again after a loss.
    pub async fn heartbeat(&self, hb: &Heartbeat<'_>) -> Result<Option<bool>> {
        let recovered: Option<bool> = sqlx::query_scalar(
            "WITH before AS (SELECT id, lost_at FROM hosts WHERE id = $1 FOR UPDATE) \
             UPDATE hosts h SET last_heartbeat_at = now(), applied_revision = $2, images = $3, running = $4, \
               lost_at = CASE WHEN h.lost_revision IS NOT NULL AND $2 >= h.lost_revision THEN NULL ELSE h.lost_at END, \
               lost_revision = CASE WHEN h.lost_revision IS NOT NULL AND $2 >= h.lost_revision THEN NULL \
                                    ELSE h.lost_revision END \
             FROM before WHERE h.id = before.id \
             RETURNING before.lost_at IS NOT NULL AND h.lost_at IS NULL",
        )
        .bind(hb.host_id)
        .bind(hb.applied_revision.min(i64::MAX as u64) as i64)
        .bind(Json(&hb.images))
        .bind(hb.running as i32)
        .fetch_optional(&self.pool)
        .await?;
        if recovered == Some(true) {
            tracing::info!(
                host = hb.host_id,
                "host fenced what moved away while it was lost: ready again"
            );
            self.notify_scheduler().await?;
        }
        Ok(recovered)
    }

    pub async fn host(&self, host_id: &str) -> Result<Option<HostRow>> {
        Ok(sqlx::query_as::<_, HostRow>(
            "SELECT id, agent_addr, cpu_millis, memory_mib, last_heartbeat_at, revoked_at IS NOT NULL AS revoked \
             FROM hosts WHERE id = $1",
        )
        .bind(host_id)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Every host with its allocation; `live_within`: silence that still counts as alive.
    pub async fn host_statuses(
        &self,
        live_within: Duration,
        only: Option<&str>,
    ) -> Result<Vec<HostStatus>> {
        Ok(sqlx::query_as::<_, HostStatus>(&format!(
            "SELECT h.id, h.cpu_millis::bigint AS cpu_millis, h.memory_mib, \
               COALESCE(a.cpu, 0) AS allocated_cpu_millis, COALESCE(a.mem, 0) AS allocated_memory_mib, \
               COALESCE(a.running, 0) AS running, h.images, h.labels, h.last_heartbeat_at, h.draining, \
               NOT {HOST_ALIVE} AS lost, h.revoked_at IS NOT NULL AS revoked, h.containerd_version, \
               h.port_range_start, h.port_range_end, h.host_ip, h.subnet, h.metrics_url \
             FROM hosts h LEFT JOIN ({ALLOCATION_BY_HOST}) a ON a.host_id = h.id \
             WHERE $2::text IS NULL OR h.id = $2 ORDER BY h.id"
        ))
        .bind(live_within.as_secs_f64())
        .bind(only)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Sets or clears a host's drain; false when the host is unknown.
    pub async fn set_draining(&self, host_id: &str, draining: bool) -> Result<bool> {
        let done = sqlx::query("UPDATE hosts SET draining = $2 WHERE id = $1")
            .bind(host_id)
            .bind(draining)
            .execute(&self.pool)
            .await?;
        if !draining {
            self.notify_scheduler().await?;
        }
        Ok(done.rows_affected() == 1)
    }

    /// Judges hosts silent for `lost_after` lost: each in one transaction,
    /// its unfinished containers failed or queued again, its meter runs
    /// closed at their last checkpoint.
    pub async fn handle_lost_hosts(&self, lost_after: Duration) -> Result<Vec<LostHost>> {
        let silent: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM hosts WHERE lost_at IS NULL \
               AND last_heartbeat_at < now() - make_interval(secs => $1) ORDER BY id",
        )
        .bind(lost_after.as_secs_f64())
        .fetch_all(&self.pool)
        .await?;
        let mut lost = Vec::new();
        for host in silent {
            let mut tx = self.pool.begin().await?;
            // Placement and new runs on a host hold this lock while they
            // claim its capacity: none can put a container on this host
            // after it is judged below and before this commits.
            super::placement::lock_placement(&mut tx).await?;
            // Re-checked under the row lock: another replica may have judged
            // it, or a heartbeat arrived since.
            let marked: Option<i64> = sqlx::query_scalar(
                "UPDATE hosts SET lost_at = now(), \
                   lost_revision = pg_current_xact_id()::text::bigint + 1 \
                 WHERE id = $1 AND lost_at IS NULL \
                   AND last_heartbeat_at < now() - make_interval(secs => $2) \
                 RETURNING lost_revision",
            )
            .bind(&host)
            .bind(lost_after.as_secs_f64())
            .fetch_optional(&mut *tx)
            .await?;
            if marked.is_none() {
                continue;
            }
            let outcome = lose_host(&mut tx, &host, LossCause::Silent).await?;
            tx.commit().await?;
            lost.push(outcome);
        }
        Ok(lost)
    }

    /// Forgets hosts lost longer than `keep` ago with nothing left on them
    /// (every container there removed); revoked hosts are kept. Their ids.
    pub async fn forget_lost_hosts(&self, keep: Duration) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(
            "DELETE FROM hosts h WHERE h.lost_at < now() - make_interval(secs => $1) \
               AND h.revoked_at IS NULL \
               AND NOT EXISTS (SELECT 1 FROM containers c \
                               WHERE c.host_id = h.id AND c.removed_at IS NULL \
                                 AND c.state NOT IN ('succeeded', 'failed', 'stopped')) \
             RETURNING h.id",
        )
        .bind(keep.as_secs_f64())
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn notify_scheduler(&self) -> Result<()> {
        sqlx::query("SELECT pg_notify('skiff_scheduler', '')")
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

/// Why a host's containers are taken from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LossCause {
    /// Silent past the lost-after timeout.
    Silent,
    /// Its credential was revoked by an operator.
    Revoked,
}

impl LossCause {
    fn says(self) -> &'static str {
        match self {
            LossCause::Silent => "stopped heartbeating",
            LossCause::Revoked => "was revoked",
        }
    }
}

/// Takes a host's unfinished containers from it (failed, or queued for
/// another host as their restart policy says) and closes its meter runs at
/// their last checkpoint. The caller holds the placement lock and has
/// marked the host lost in `tx`.
pub(super) async fn lose_host(
    tx: &mut sqlx::PgConnection,
    host: &str,
    cause: LossCause,
) -> Result<LostHost> {
    // The containers first, then their meter runs: the order a
    // worker's report takes (container, then run), so the two never
    // deadlock. FOR UPDATE re-checks the conditions on rows changed
    // meanwhile (a delete, an exit, a restart elsewhere).
    let rows = sqlx::query_as::<_, ContainerRow>(&format!(
        "SELECT {CONTAINER_COLUMNS} FROM containers WHERE host_id = $1 AND deleted_at IS NULL \
           AND state NOT IN {TERMINAL_STATES} ORDER BY id FOR UPDATE"
    ))
    .bind(host)
    .fetch_all(&mut *tx)
    .await?;
    let runs_closed = skiff_billing::close_runs_of_host(tx, host).await?;
    let mut outcome = LostHost {
        id: host.to_owned(),
        failed: Vec::new(),
        replaced: Vec::new(),
        runs_closed,
    };
    for row in rows {
        let id = row.id;
        match lifecycle::on_host_lost(&row.facts()) {
            HostLoss::Fail => {
                fail_host_lost(tx, &row, host, cause).await?;
                outcome.failed.push(id);
            }
            HostLoss::Replace => {
                replace_elsewhere(tx, &row, host, cause).await?;
                outcome.replaced.push(id);
            }
        }
    }
    // Wakes the host's assignment stream: the watermark past the loss is
    // what lets it become ready again (and a revoked host's stream ends).
    sqlx::query("SELECT pg_notify('skiff_host', $1)")
        .bind(host)
        .execute(&mut *tx)
        .await?;
    Ok(outcome)
}

/// Nothing will run it again: failed, and desired stopped, so a host that
/// comes back stops its copy instead of running it unseen.
async fn fail_host_lost(
    conn: &mut sqlx::PgConnection,
    row: &ContainerRow,
    host: &str,
    cause: LossCause,
) -> Result<()> {
    sqlx::query(
        "UPDATE containers SET state = 'failed', reason = 'HostLost', desired = 'stopped', \
           restart_at = NULL, message = 'host ' || host_id || ' ' || $2, finished_at = now(), ip = NULL \
         WHERE id = $1",
    )
    .bind(row.id)
    .bind(cause.says())
    .execute(&mut *conn)
    .await?;
    host_lost_event(conn, row, host, cause, "the container failed").await
}

/// A new run, queued for another host (the lost one is not placeable).
async fn replace_elsewhere(
    conn: &mut sqlx::PgConnection,
    row: &ContainerRow,
    host: &str,
    cause: LossCause,
) -> Result<()> {
    sqlx::query(
        "UPDATE containers SET state = $2, generation = generation + 1, restart_count = restart_count + 1, \
           host_id = NULL, prefer_host_id = NULL, pending_since = now(), scheduled_at = NULL, \
           restart_at = NULL, backoff_step = 0, reason = 'HostLost', \
           message = 'host ' || host_id || ' ' || $3 || '; placing the container on another host', \
           exit_code = NULL, started_at = NULL, finished_at = NULL, host_ports = '[]', ip = NULL \
         WHERE id = $1",
    )
    .bind(row.id)
    .bind(ContainerState::Pending)
    .bind(cause.says())
    .execute(&mut *conn)
    .await?;
    host_lost_event(conn, row, host, cause, "placing a new run on another host").await
}

/// The container's `HostLost` event, once per run.
async fn host_lost_event(
    conn: &mut sqlx::PgConnection,
    row: &ContainerRow,
    host: &str,
    cause: LossCause,
    outcome: &str,
) -> Result<()> {
    insert_event(
        conn,
        row.id,
        &format!("hostlost-{}", row.generation),
        "HostLost",
        &format!("host {host} {}; {outcome}", cause.says()),
        Utc::now(),
    )
    .await
}
