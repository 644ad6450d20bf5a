//! ACI's exec and attach sessions (`aci_exec_sessions`): minted with a
//! password kept as its SHA-256 only, consumed by the first socket that
//! names the session (any replica may serve it), expired past their time.

use super::{Result, Store};
use sqlx::types::Json;
use std::time::Duration;
use uuid::Uuid;

/// What a session runs: an exec'd process, or the container's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum SessionKind {
    Exec,
    Attach,
}

/// A new session, as minted.
#[derive(Debug)]
pub struct NewSession<'a> {
    pub id: Uuid,
    pub tenant: Uuid,
    pub container: Uuid,
    pub kind: SessionKind,
    pub command: &'a [String],
    pub cols: Option<i32>,
    pub rows: Option<i32>,
    pub password_sha256: Vec<u8>,
    pub ttl: Duration,
}

/// A session as claimed.
#[derive(Debug, sqlx::FromRow)]
pub struct Session {
    pub tenant_id: Uuid,
    pub container_id: Uuid,
    pub kind: SessionKind,
    pub command: Json<Vec<String>>,
    pub cols: Option<i32>,
    pub rows: Option<i32>,
    pub password_sha256: Vec<u8>,
}

impl Store {
    /// Stores a new session (and forgets the expired ones).
    pub async fn insert_exec_session(&self, s: &NewSession<'_>) -> Result<()> {
        sqlx::query("DELETE FROM aci_exec_sessions WHERE expires_at < now()")
            .execute(&self.pool)
            .await?;
        sqlx::query(
            "INSERT INTO aci_exec_sessions \
             (id, tenant_id, container_id, kind, command, cols, rows, password_sha256, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, now() + make_interval(secs => $9))",
        )
        .bind(s.id)
        .bind(s.tenant)
        .bind(s.container)
        .bind(s.kind)
        .bind(Json(s.command))
        .bind(s.cols)
        .bind(s.rows)
        .bind(&s.password_sha256)
        .bind(s.ttl.as_secs_f64())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Consumes session `id` (single use, whatever the password): None
    /// when there is no such unexpired session.
    pub async fn claim_exec_session(&self, id: Uuid) -> Result<Option<Session>> {
        Ok(sqlx::query_as(
            "DELETE FROM aci_exec_sessions WHERE id = $1 AND expires_at > now() \
             RETURNING tenant_id, container_id, kind, command, cols, rows, password_sha256",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?)
    }
}
