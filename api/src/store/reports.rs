//! Worker reports: status reports run through the lifecycle
//! ([`crate::lifecycle::observe`]) and the meter in one transaction, and
//! meter checkpoints. Reports are facts keyed by (container, generation):
//! applying one twice changes nothing.

use super::{
    apply_transition, insert_events, lock_container, ms_to_time, ContainerRow, NewEvent, Result,
    Store, StoreError,
};
use crate::lifecycle::{self, Observation};
use crate::report_bounds::{self, Claim};
use chrono::{DateTime, Utc};
use skiff_core::{ContainerState, NetworkMode, Reason};
use skiff_proto as pb;
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

/// What a worker report changed, for metrics.
#[derive(Debug, Clone)]
pub struct ReportOutcome {
    pub container_id: Uuid,
    pub state: ContainerState,
    /// Phase durations newly known from this report (for metrics).
    pub timings: Option<pb::Timings>,
    pub queued_ms: Option<i64>,
}

impl Store {
    /// Applies one worker report. Reports of another generation, or from a
    /// host the container is no longer on, only add their events (and close
    /// their meter run). Returns None when the container is unknown.
    ///
    /// A report that claims what cannot be (see [`crate::report_bounds`])
    /// is refused: nothing of it is applied.
    pub async fn apply_report(
        &self,
        host: &str,
        report: &pb::StatusReport,
        skew: chrono::Duration,
    ) -> Result<Option<ReportOutcome>> {
        let id = Uuid::parse_str(&report.container_id)
            .map_err(|e| StoreError::Corrupt(format!("report container id: {e}")))?;
        let mut tx = self.pool.begin().await?;
        let Some(row) = lock_container(&mut tx, id, None).await? else {
            return Ok(None);
        };
        let current = report.generation == row.generation as u64;
        // An older run is answered for by the host that ran it (the
        // container may have moved since).
        let holding_host = if current {
            row.host_id.clone()
        } else {
            sqlx::query_scalar::<_, String>(
                "SELECT host_id FROM metering_runs WHERE container_id = $1 AND generation = $2",
            )
            .bind(id)
            .bind(report.generation as i64)
            .fetch_optional(&mut *tx)
            .await?
            .or_else(|| row.host_id.clone())
        };
        report_bounds::check_report(
            &Claim {
                reporting_host: host,
                holding_host: holding_host.as_deref(),
                started_at: ms_to_time(report.started_at_unix_ms),
                finished_at: ms_to_time(report.finished_at_unix_ms),
                placed_at: if current {
                    row.scheduled_at.unwrap_or(row.created_at)
                } else {
                    row.created_at
                },
            },
            Utc::now(),
            skew,
        )?;
        let events: Vec<NewEvent> = report.events.iter().map(NewEvent::reported).collect();
        insert_events(&mut tx, id, &events).await?;
        let observed =
            pb::ObservedState::try_from(report.state).unwrap_or(pb::ObservedState::Unspecified);
        let current_generation = report.generation == row.generation as u64;
        meter_observation(&mut tx, &row, host, report, observed).await?;
        let mut timings = None;
        let mut state = row.state;
        if observed == pb::ObservedState::Removed {
            sqlx::query(
                // Its secrets go with it: nothing will start it again.
                "UPDATE containers SET removed_at = now(), secure_env_kid = NULL, \
                 secure_env_sealed = NULL, ip = NULL WHERE id = $1 AND desired = 'deleted'",
            )
            .bind(id)
            .execute(&mut *tx)
            .await?;
        } else if current_generation && row.host_id.as_deref() == Some(host) {
            timings = report.timings;
            if let Some(observation) = observation(report, observed) {
                let transition = lifecycle::observe(&row.facts(), &observation, Utc::now());
                apply_transition(&mut tx, id, &transition).await?;
                state = transition.state.unwrap_or(state);
            }
            record_facts(&mut tx, id, report, observed).await?;
            record_ip(&mut tx, &row, report, observed).await?;
            record_ready(&mut tx, &row, report, observed).await?;
            record_pull(&mut tx, &row, report, observed).await?;
        }
        tx.commit().await?;
        Ok(Some(ReportOutcome {
            container_id: id,
            state,
            timings,
            queued_ms: row.queued_ms,
        }))
    }

    /// Forgets worker report ids older than `keep` (see
    /// [`skiff_billing::forget_meter_reports`]).
    pub async fn forget_meter_reports(&self, keep: std::time::Duration) -> Result<u64> {
        let mut conn = self.pool.acquire().await?;
        Ok(skiff_billing::forget_meter_reports(&mut conn, keep).await?)
    }

    /// Applies a meter checkpoint; false for a duplicate or an unknown run.
    /// Refused from a host the run is not metered on, or from the future.
    pub async fn apply_checkpoint(
        &self,
        host: &str,
        c: &pb::UsageCheckpoint,
        skew: chrono::Duration,
    ) -> Result<bool> {
        let id = Uuid::parse_str(&c.container_id)
            .map_err(|e| StoreError::Corrupt(format!("checkpoint container id: {e}")))?;
        let observed_at = DateTime::from_timestamp_millis(c.observed_at_unix_ms)
            .ok_or_else(|| StoreError::Corrupt("checkpoint time out of range".into()))?;
        // The run's host, and whether its container or its job has a budget
        // to check (most have none: then the checkpoint costs no further
        // query).
        let run: Option<(String, bool, bool)> = sqlx::query_as(
            "SELECT r.host_id, c.max_cost IS NOT NULL, coalesce(j.max_cost IS NOT NULL, false) \
             FROM metering_runs r JOIN containers c ON c.id = r.container_id \
             LEFT JOIN jobs j ON j.id = c.job_id \
             WHERE r.container_id = $1 AND r.generation = $2",
        )
        .bind(id)
        .bind(c.generation as i64)
        .fetch_optional(&self.pool)
        .await?;
        let budgeted = run.as_ref().is_some_and(|r| r.1);
        let job_budgeted = run.as_ref().is_some_and(|r| r.2);
        if let Some((run_host, ..)) = &run {
            report_bounds::check_checkpoint(host, run_host, observed_at, Utc::now(), skew)?;
        }
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
        if applied && budgeted && self.enforce_budget(id).await? {
            tracing::info!(container = %id, "metered cost reached max_cost: stopping it");
        }
        if applied && job_budgeted {
            // The scheduler's pass over the job checks the job's budget.
            self.notify_scheduler().await?;
        }
        Ok(applied)
    }
}

/// The lifecycle's view of a report about the current generation.
fn observation(report: &pb::StatusReport, observed: pb::ObservedState) -> Option<Observation> {
    use pb::ObservedState as O;
    Some(match observed {
        O::Pulling => Observation::Pulling,
        O::Starting => Observation::Starting,
        O::Stopping => Observation::Stopping,
        O::Running => Observation::Running {
            started_at: ms_to_time(report.started_at_unix_ms),
        },
        O::Exited => Observation::Exited {
            exit_code: report.exit_code,
            killed_by: match report.reason.parse() {
                Ok(r @ (Reason::OOMKilled | Reason::LivenessProbeFailed)) => Some(r),
                _ => None,
            },
            started_at: ms_to_time(report.started_at_unix_ms),
            finished_at: ms_to_time(report.finished_at_unix_ms).unwrap_or_else(Utc::now),
        },
        O::Failed => Observation::Failed {
            // An unknown reason from a newer worker still fails the run.
            reason: report.reason.parse().unwrap_or(Reason::StartFailed),
            message: report.message.clone(),
        },
        O::Removed | O::Unspecified => return None,
    })
}

/// Facts a report carries besides the state: image digest and phase timings.
async fn record_facts(
    tx: &mut Transaction<'_, Postgres>,
    id: Uuid,
    report: &pb::StatusReport,
    observed: pb::ObservedState,
) -> Result<()> {
    let digest = (!report.image_digest.is_empty()).then_some(report.image_digest.as_str());
    let t = report.timings.unwrap_or_default();
    let nonzero = |v: u64| (v > 0).then_some(v as i64);
    let pull_ms = match observed {
        pb::ObservedState::Starting | pb::ObservedState::Running => {
            report.timings.map(|t| t.pull_ms as i64)
        }
        _ => None,
    };
    if digest.is_none() && pull_ms.is_none() && t.create_ms == 0 && t.start_ms == 0 {
        return Ok(());
    }
    sqlx::query(
        "UPDATE containers SET image_digest = COALESCE($2, image_digest), \
         pull_ms = COALESCE($3, pull_ms), create_ms = COALESCE($4, create_ms), \
         start_ms = COALESCE($5, start_ms) WHERE id = $1",
    )
    .bind(id)
    .bind(digest)
    .bind(pull_ms)
    .bind(nonzero(t.create_ms))
    .bind(nonzero(t.start_ms))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The container's address on its host's bridge: set from a report of
/// the current run's task running (a private container; an address that
/// does not parse is ignored), cleared when that run ends.
async fn record_ip(
    tx: &mut Transaction<'_, Postgres>,
    row: &ContainerRow,
    report: &pb::StatusReport,
    observed: pb::ObservedState,
) -> Result<()> {
    let ip = match observed {
        pb::ObservedState::Running if row.network == NetworkMode::Private => {
            match report.ip.parse::<std::net::IpAddr>() {
                Ok(ip) => Some(ip.to_string()),
                Err(_) if report.ip.is_empty() => return Ok(()),
                Err(_) => {
                    tracing::debug!(container = %row.id, ip = %report.ip, "reported address ignored: not an IP address");
                    return Ok(());
                }
            }
        }
        pb::ObservedState::Exited | pb::ObservedState::Failed => None,
        _ => return Ok(()),
    };
    if ip == row.ip {
        return Ok(());
    }
    sqlx::query("UPDATE containers SET ip = $2 WHERE id = $1")
        .bind(row.id)
        .bind(ip)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// The current run's readiness: what a report of it running says (no
/// news: as it was); false as soon as it is anything but running.
async fn record_ready(
    tx: &mut Transaction<'_, Postgres>,
    row: &ContainerRow,
    report: &pb::StatusReport,
    observed: pb::ObservedState,
) -> Result<()> {
    let ready = match (observed, report.ready) {
        (pb::ObservedState::Running, Some(ready)) => ready,
        (pb::ObservedState::Running, None) => return Ok(()),
        _ => false,
    };
    if ready != row.ready {
        sqlx::query("UPDATE containers SET ready = $2 WHERE id = $1")
            .bind(row.id)
            .bind(ready)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// How far the current run's pull is: a pulling report's numbers; a
/// pulling report without them starts afresh (a new run's pull). Kept
/// after, as the object shows them only while `pulling`.
async fn record_pull(
    tx: &mut Transaction<'_, Postgres>,
    row: &ContainerRow,
    report: &pb::StatusReport,
    observed: pb::ObservedState,
) -> Result<()> {
    let (done, total) = match (observed, &report.pull) {
        (pb::ObservedState::Pulling, Some(p)) => (
            i64::try_from(p.bytes_done).unwrap_or(i64::MAX),
            i64::try_from(p.bytes_total).unwrap_or(i64::MAX),
        ),
        (pb::ObservedState::Pulling, None) if row.pull_bytes_total.is_some() => {
            // A new pull begins: nothing known of it yet.
            sqlx::query(
                "UPDATE containers SET pull_bytes_done = NULL, pull_bytes_total = NULL WHERE id = $1",
            )
            .bind(row.id)
            .execute(&mut **tx)
            .await?;
            return Ok(());
        }
        _ => return Ok(()),
    };
    sqlx::query("UPDATE containers SET pull_bytes_done = $2, pull_bytes_total = $3 WHERE id = $1")
        .bind(row.id)
        .bind(done.min(total).max(0))
        .bind(total.max(0))
        .execute(&mut **tx)
        .await?;
    Ok(())
}

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
    host: &str,
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
                let facts = run_facts(row, generation, host, started_at);
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
            let facts = run_facts(row, generation, host, started_at.unwrap_or(ended_at));
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
            let reason = if report.reason.is_empty() {
                "failed"
            } else {
                report.reason.as_str()
            };
            close_at_last_seen(tx, row, generation, host, "failed", reason).await?;
        }
        _ => {}
    }
    Ok(())
}

/// Closes run `generation` of the container, if still open, at the last
/// checkpoint that saw it running: what no one saw is not billed.
pub(super) async fn close_at_last_seen(
    conn: &mut sqlx::PgConnection,
    row: &ContainerRow,
    generation: i64,
    host_id: &str,
    why: &str,
    reason: &str,
) -> Result<()> {
    let last_seen: Option<DateTime<Utc>> = sqlx::query_scalar(
        "SELECT last_seen_at FROM metering_runs \
         WHERE container_id = $1 AND generation = $2 AND ended_at IS NULL",
    )
    .bind(row.id)
    .bind(generation)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(last_seen) = last_seen {
        let facts = run_facts(row, generation, host_id, last_seen);
        let report_id = format!("{}:{generation}:{why}", row.id);
        skiff_billing::close_run(conn, &report_id, &facts, last_seen, reason).await?;
    }
    Ok(())
}
