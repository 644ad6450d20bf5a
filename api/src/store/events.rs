//! The tenant's event log (`tenant_events`, written by triggers): pages in
//! commit order after a cursor. A cursor is a position `(xid, id)`; only
//! rows below the oldest running transaction are read, so no row can ever
//! appear behind a position already handed out (see the migration).

use super::{Result, Store};
use chrono::{DateTime, Utc};
use skiff_core::{ContainerState, Reason};
use sqlx::types::Json;
use std::collections::BTreeMap;
use uuid::Uuid;

/// A position in the log: after it come only later commits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Cursor {
    pub xid: u64,
    pub id: i64,
}

/// A cursor as clients hold it: `"<xid>-<id>"`, each of 1 to 18 digits
/// (room for any transaction id and row id this database will ever have,
/// and never past `i64`).
pub const CURSOR_PATTERN: &str = r"^[0-9]{1,18}-[0-9]{1,18}$";

impl Cursor {
    /// `"<xid>-<id>"` ([`CURSOR_PATTERN`]), as clients hold it.
    pub fn parse(s: &str) -> Option<Cursor> {
        let (xid, id) = s.split_once('-')?;
        let number = |n: &str| (1..=18).contains(&n.len()) && n.bytes().all(|b| b.is_ascii_digit());
        if !number(xid) || !number(id) {
            return None;
        }
        Some(Cursor {
            xid: xid.parse().ok()?,
            id: id.parse().ok()?,
        })
    }
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.xid, self.id)
    }
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LoggedEvent {
    pub xid: i64,
    pub id: i64,
    pub container_id: Uuid,
    #[sqlx(rename = "type")]
    pub type_: String,
    pub state: Option<ContainerState>,
    pub reason: Option<Reason>,
    pub message: String,
    pub at: DateTime<Utc>,
}

impl LoggedEvent {
    pub fn cursor(&self) -> Cursor {
        Cursor {
            xid: self.xid as u64,
            id: self.id,
        }
    }
}

/// Which events a reader wants.
#[derive(Debug, Default, Clone)]
pub struct EventFilter {
    pub container: Option<Uuid>,
    /// Events of a job's task containers.
    pub job: Option<Uuid>,
    pub type_: Option<String>,
    pub labels: BTreeMap<String, String>,
}

impl Store {
    /// Up to `limit` events of `tenant` after `after`, oldest first.
    pub async fn events_after(
        &self,
        tenant: Uuid,
        after: Cursor,
        filter: &EventFilter,
        limit: i64,
    ) -> Result<Vec<LoggedEvent>> {
        Ok(sqlx::query_as::<_, LoggedEvent>(
            "SELECT e.xid::text::bigint AS xid, e.id, e.container_id, e.type, e.state, e.reason, \
               e.message, e.at \
             FROM tenant_events e \
             WHERE e.tenant_id = $1 \
               AND (e.xid, e.id) > ($2::text::xid8, $3) \
               AND e.xid < pg_snapshot_xmin(pg_current_snapshot()) \
               AND ($4::uuid IS NULL OR e.container_id = $4) \
               AND ($5::text IS NULL OR e.type = $5) \
               AND ($6::jsonb = '{}'::jsonb OR EXISTS (SELECT 1 FROM containers c \
                     WHERE c.id = e.container_id AND c.labels @> $6)) \
               AND ($8::uuid IS NULL OR EXISTS (SELECT 1 FROM containers c \
                     WHERE c.id = e.container_id AND c.job_id = $8)) \
             ORDER BY e.xid, e.id LIMIT $7",
        )
        .bind(tenant)
        .bind(after.xid.to_string())
        .bind(after.id)
        .bind(filter.container)
        .bind(filter.type_.as_deref())
        .bind(Json(&filter.labels))
        .bind(limit)
        .bind(filter.job)
        .fetch_all(&self.pool)
        .await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_are_two_runs_of_digits() {
        let c = Cursor::parse("12-345").unwrap();
        assert_eq!((c.xid, c.id), (12, 345));
        assert_eq!(Cursor::parse(&c.to_string()).unwrap().to_string(), "12-345");
        let longest = format!("{0}-{0}", "9".repeat(18));
        assert!(Cursor::parse(&longest).is_some());
        for bad in [
            "", "1", "1-", "-1", "1--2", "+1-2", "1-+2", "1-2-3", " 1-2", "a-1",
        ] {
            assert!(Cursor::parse(bad).is_none(), "{bad:?}");
        }
        assert!(Cursor::parse(&format!("1{longest}")).is_none());
    }
}
