//! Each host's assignment set, revisioned. A trigger records every change
//! of a container's assignment to a host in `assignment_changes` (see the
//! pool migration); a host's stream sends a snapshot once, then only what
//! changed.
//!
//! The revision is a watermark: the snapshot's `xmin`, below which every
//! transaction has finished. A step reads the changes of transactions in
//! `[from, upto)`, so a change is delivered exactly once in order of
//! completion, even when a transaction with a lower id commits after one
//! with a higher id (a plain sequence would skip it). Each step reads in one
//! REPEATABLE READ snapshot, so the rows it sends match its watermark.

use super::registry_credentials::{self, StepCredentials};
use super::{ContainerRow, Result, Store, StoreError, CONTAINER_COLUMNS};
use sqlx::PgConnection;
use std::collections::HashSet;
use std::time::Duration;
use uuid::Uuid;

/// One step of a host's assignment stream.
#[derive(Debug, Clone)]
pub struct AssignmentStep {
    /// The watermark this step brings the host to.
    pub revision: u64,
    /// `assignments` is the complete set.
    pub snapshot: bool,
    pub assignments: Vec<ContainerRow>,
    /// Containers no longer assigned to the host (deltas only).
    pub removed: Vec<Uuid>,
    /// Changes exist that finished transactions cannot show yet (an older
    /// transaction is still open): read again shortly.
    pub pending: bool,
    /// The registry credentials its containers meant to run may pull with
    /// (read in the same snapshot), still sealed.
    pub credentials: StepCredentials,
}

/// The registry credentials `rows` may need: those of containers meant to
/// run, whose image names a registry.
async fn credentials_of(conn: &mut PgConnection, rows: &[ContainerRow]) -> Result<StepCredentials> {
    let wanted: Vec<_> = rows
        .iter()
        .filter(|r| r.desired == skiff_core::DesiredState::Running)
        .filter_map(|r| {
            skiff_core::registry::registry_of(&r.image).map(|server| (r.id, r.tenant_id, server))
        })
        .collect();
    registry_credentials::load_for(conn, &wanted).await
}

async fn begin_snapshot(conn: &mut PgConnection) -> Result<u64> {
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *conn)
        .await?;
    let upto: String = sqlx::query_scalar("SELECT pg_snapshot_xmin(pg_current_snapshot())::text")
        .fetch_one(&mut *conn)
        .await?;
    parse_revision(&upto)
}

fn parse_revision(text: &str) -> Result<u64> {
    text.parse()
        .map_err(|e| StoreError::Corrupt(format!("revision {text:?}: {e}")))
}

impl Store {
    /// The host's complete set: every container placed there that still has
    /// something on the host.
    pub async fn assignment_snapshot(&self, host_id: &str) -> Result<AssignmentStep> {
        let mut tx = self.pool.begin().await?;
        let revision = begin_snapshot(&mut tx).await?;
        let assignments = sqlx::query_as::<_, ContainerRow>(&format!(
            "SELECT {CONTAINER_COLUMNS} FROM containers WHERE host_id = $1 AND removed_at IS NULL ORDER BY id"
        ))
        .bind(host_id)
        .fetch_all(&mut *tx)
        .await?;
        let credentials = credentials_of(&mut tx, &assignments).await?;
        tx.commit().await?;
        Ok(AssignmentStep {
            revision,
            snapshot: true,
            assignments,
            removed: Vec::new(),
            pending: false,
            credentials,
        })
    }

    /// What changed for the host since revision `from`; None when the
    /// changes since then are no longer kept (the host needs a snapshot).
    pub async fn assignment_delta(
        &self,
        host_id: &str,
        from: u64,
    ) -> Result<Option<AssignmentStep>> {
        let mut tx = self.pool.begin().await?;
        let upto = begin_snapshot(&mut tx).await?;
        let pruned_below: String =
            sqlx::query_scalar("SELECT pruned_below::text FROM assignment_log")
                .fetch_one(&mut *tx)
                .await?;
        if from == 0 || from <= parse_revision(&pruned_below)? || from > upto {
            return Ok(None);
        }
        let from = from.min(upto);
        // The changes since `from`, and whether any is at or past `upto`
        // (pending: written by a transaction this snapshot cannot see yet),
        // in one range scan of the (host_id, xid) index. (A separate
        // EXISTS for the pending ones got a generic plan that scanned the
        // whole table: 1.5 ms a call under load.)
        let rows: Vec<(Uuid, bool)> = sqlx::query_as(
            "SELECT container_id, xid >= $3::text::xid8 FROM assignment_changes \
             WHERE host_id = $1 AND xid >= $2::text::xid8 ORDER BY host_id, xid",
        )
        .bind(host_id)
        .bind(from.to_string())
        .bind(upto.to_string())
        .fetch_all(&mut *tx)
        .await?;
        let pending = rows.iter().any(|(_, past)| *past);
        let changed: Vec<Uuid> = rows
            .into_iter()
            .filter(|(_, past)| !past)
            .map(|(id, _)| id)
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let assignments = if changed.is_empty() {
            Vec::new()
        } else {
            sqlx::query_as::<_, ContainerRow>(&format!(
                "SELECT {CONTAINER_COLUMNS} FROM containers \
                 WHERE id = ANY($1) AND host_id = $2 AND removed_at IS NULL ORDER BY id"
            ))
            .bind(&changed)
            .bind(host_id)
            .fetch_all(&mut *tx)
            .await?
        };
        let credentials = credentials_of(&mut tx, &assignments).await?;
        tx.commit().await?;
        let kept: HashSet<Uuid> = assignments.iter().map(|r| r.id).collect();
        let removed = changed
            .into_iter()
            .filter(|id| !kept.contains(id))
            .collect();
        Ok(Some(AssignmentStep {
            revision: upto,
            snapshot: false,
            assignments,
            removed,
            pending,
            credentials,
        }))
    }

    /// Forgets changes older than `keep`; a host resuming from before them
    /// gets a snapshot instead.
    pub async fn prune_assignment_changes(&self, keep: Duration) -> Result<u64> {
        let mut tx = self.pool.begin().await?;
        let (deleted, max_xid): (i64, Option<String>) = sqlx::query_as(
            "WITH gone AS (DELETE FROM assignment_changes WHERE at < now() - make_interval(secs => $1) \
                           RETURNING xid) \
             SELECT count(*), max(xid::text::numeric)::text FROM gone",
        )
        .bind(keep.as_secs_f64())
        .fetch_one(&mut *tx)
        .await?;
        if let Some(max_xid) = max_xid {
            sqlx::query(
                "UPDATE assignment_log SET pruned_below = GREATEST(pruned_below, $1::text::xid8)",
            )
            .bind(max_xid)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(deleted as u64)
    }
}
