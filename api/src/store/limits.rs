//! The limits the platform enforces on a run: its deadline (`timeout_s`)
//! and its budget (`max_cost`, checked at every meter checkpoint).
//! A run past its limit is stopped like a user's stop (SIGTERM, SIGKILL
//! after `stop_timeout_s`), with the limit as its reason, so that its exit
//! ends it `failed` with that reason ([`crate::lifecycle`]) and its meter
//! closes at the exit.

use super::{insert_event, Result, Store};
use chrono::Utc;
use skiff_core::Reason;
use uuid::Uuid;

impl Store {
    /// Stops every running container past its `timeout_s`; their ids.
    /// Rows another transaction holds are left for the next pass.
    pub async fn enforce_deadlines(&self) -> Result<Vec<Uuid>> {
        let mut tx = self.pool.begin().await?;
        let due: Vec<Uuid> = sqlx::query_scalar(
            "SELECT id FROM containers WHERE timeout_s IS NOT NULL AND desired = 'running' \
               AND state = 'running' AND deleted_at IS NULL \
               AND started_at + make_interval(secs => timeout_s) <= now() \
             ORDER BY id FOR UPDATE SKIP LOCKED",
        )
        .fetch_all(&mut *tx)
        .await?;
        let mut stopped = Vec::new();
        for id in due {
            stop_for_limit(&mut tx, id, Reason::DeadlineExceeded, None).await?;
            stopped.push(id);
        }
        tx.commit().await?;
        Ok(stopped)
    }
}

impl Store {
    /// After a checkpoint: stops the container if its metered cost has
    /// reached its `max_cost`. True when it was stopped now.
    pub async fn enforce_budget(&self, id: Uuid) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let limit: Option<i64> = sqlx::query_scalar(
            "SELECT max_cost FROM containers WHERE id = $1 AND max_cost IS NOT NULL \
               AND desired = 'running' AND state = 'running' AND deleted_at IS NULL FOR UPDATE",
        )
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(max_cost) = limit else {
            return Ok(false);
        };
        let usage = skiff_billing::container_usage(&mut tx, &[id]).await?;
        let cost = usage.get(&id).map_or(0, |u| u.cost_micros);
        if cost < max_cost {
            return Ok(false);
        }
        stop_for_limit(&mut tx, id, Reason::BudgetExceeded, None).await?;
        tx.commit().await?;
        Ok(true)
    }
}

/// Stops a locked running container for `limit`, with `why` as its
/// message (default: the container's own limit, said from its row), and
/// the limit's event once per run.
pub(super) async fn stop_for_limit(
    conn: &mut sqlx::PgConnection,
    id: Uuid,
    limit: Reason,
    why: Option<&str>,
) -> Result<()> {
    let (generation, message): (i64, String) = sqlx::query_as(
        "UPDATE containers SET desired = 'stopped', state = 'stopping', reason = $2, \
           message = COALESCE($3, CASE WHEN $2 = 'DeadlineExceeded'::container_reason \
                          THEN 'ran longer than its timeout_s of ' || timeout_s || ' s' \
                          ELSE 'its metered cost reached its max_cost of ' || max_cost END, $2::text), \
           restart_at = NULL \
         WHERE id = $1 RETURNING generation, message",
    )
    .bind(id)
    .bind(limit)
    .bind(why)
    .fetch_one(&mut *conn)
    .await?;
    insert_event(
        conn,
        id,
        &format!("{}-{generation}", limit.as_str()),
        limit.as_str(),
        &format!("{message}: stopping it"),
        Utc::now(),
    )
    .await
}
