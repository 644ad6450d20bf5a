//! The limits the platform enforces on a run: its deadline (`timeout_s`).
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
            let (generation, timeout_s): (i64, i32) = sqlx::query_as(
                "UPDATE containers SET desired = 'stopped', state = 'stopping', reason = $2, \
                   message = 'ran longer than its timeout_s of ' || timeout_s || ' s', restart_at = NULL \
                 WHERE id = $1 RETURNING generation, timeout_s",
            )
            .bind(id)
            .bind(Reason::DeadlineExceeded)
            .fetch_one(&mut *tx)
            .await?;
            insert_event(
                &mut tx,
                id,
                &format!("deadline-{generation}"),
                Reason::DeadlineExceeded.as_str(),
                &format!("ran longer than its timeout_s of {timeout_s} s: stopping it"),
                Utc::now(),
            )
            .await?;
            stopped.push(id);
        }
        tx.commit().await?;
        Ok(stopped)
    }
}
