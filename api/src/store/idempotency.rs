//! Idempotency keys: a request made with an `Idempotency-Key` stores its
//! response in the same transaction as what it created, so the key and its
//! effect commit together or not at all (a crash in between leaves
//! neither). The key's row is inserted first: a concurrent request with the
//! same key blocks on it in PostgreSQL until the first commits, then reads
//! the stored response (or, if the first rolled back, goes ahead itself).

use super::{Result, Store};
use sqlx::PgConnection;
use std::time::Duration;
use uuid::Uuid;

/// A request's key and what it asks (method, path and canonical body).
#[derive(Debug, Clone)]
pub struct Idem {
    pub key: String,
    pub fingerprint: Vec<u8>,
}

/// A response kept for a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    pub status: u16,
    pub content_type: String,
    pub body: Vec<u8>,
}

/// What a key's claim found.
#[derive(Debug)]
pub enum Claim {
    /// The key is new: go ahead, and [`record`] the response in the same
    /// transaction.
    New,
    /// The same request was made before: its response.
    Replay(StoredResponse),
    /// The same request was made and applied, and its response is not
    /// recorded yet (a lifecycle request records it after its commit).
    InFlight,
    /// The key was used for a different request.
    Mismatch,
}

/// Claims `idem` for `tenant` in the caller's transaction (waiting for a
/// concurrent transaction holding the same key to end).
pub(super) async fn claim(conn: &mut PgConnection, tenant: Uuid, idem: &Idem) -> Result<Claim> {
    let inserted = sqlx::query(
        "INSERT INTO idempotency_keys (tenant_id, key, fingerprint, status, content_type, body) \
         VALUES ($1, $2, $3, 0, '', '') ON CONFLICT (tenant_id, key) DO NOTHING",
    )
    .bind(tenant)
    .bind(&idem.key)
    .bind(&idem.fingerprint)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if inserted == 1 {
        return Ok(Claim::New);
    }
    let (fingerprint, status, content_type, body): (Vec<u8>, i16, String, Vec<u8>) =
        sqlx::query_as(
            "SELECT fingerprint, status, content_type, body FROM idempotency_keys \
             WHERE tenant_id = $1 AND key = $2",
        )
        .bind(tenant)
        .bind(&idem.key)
        .fetch_one(&mut *conn)
        .await?;
    if fingerprint != idem.fingerprint {
        return Ok(Claim::Mismatch);
    }
    if status == 0 {
        return Ok(Claim::InFlight);
    }
    Ok(Claim::Replay(StoredResponse {
        status: status as u16,
        content_type,
        body,
    }))
}

/// Why a keyed request must not run: what to answer instead.
#[derive(Debug)]
pub enum Early {
    Replay(StoredResponse),
    InFlight,
    KeyReused,
}

/// Claims `idem`, if there is one, in the caller's transaction; `Some`
/// when the request must not run (see [`claim`]).
pub(super) async fn claim_for(
    conn: &mut PgConnection,
    tenant: Uuid,
    idem: Option<&Idem>,
) -> Result<Option<Early>> {
    let Some(idem) = idem else {
        return Ok(None);
    };
    Ok(match claim(conn, tenant, idem).await? {
        Claim::New => None,
        Claim::Replay(response) => Some(Early::Replay(response)),
        Claim::InFlight => Some(Early::InFlight),
        Claim::Mismatch => Some(Early::KeyReused),
    })
}

/// Stores the response of a claimed key.
pub(super) async fn record(
    conn: &mut PgConnection,
    tenant: Uuid,
    idem: &Idem,
    response: &StoredResponse,
) -> Result<()> {
    sqlx::query(
        "UPDATE idempotency_keys SET status = $3, content_type = $4, body = $5 \
         WHERE tenant_id = $1 AND key = $2",
    )
    .bind(tenant)
    .bind(&idem.key)
    .bind(response.status as i16)
    .bind(&response.content_type)
    .bind(&response.body)
    .execute(conn)
    .await?;
    Ok(())
}

impl Store {
    /// Records the response of a key claimed by a committed request.
    pub async fn record_response(
        &self,
        tenant: Uuid,
        idem: &Idem,
        response: &StoredResponse,
    ) -> Result<()> {
        let mut conn = self.pool.acquire().await?;
        record(&mut conn, tenant, idem, response).await
    }

    /// The response recorded for a key, once there is one.
    pub async fn recorded_response(
        &self,
        tenant: Uuid,
        key: &str,
    ) -> Result<Option<StoredResponse>> {
        let row: Option<(i16, String, Vec<u8>)> = sqlx::query_as(
            "SELECT status, content_type, body FROM idempotency_keys \
             WHERE tenant_id = $1 AND key = $2 AND status <> 0",
        )
        .bind(tenant)
        .bind(key)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|(status, content_type, body)| StoredResponse {
            status: status as u16,
            content_type,
            body,
        }))
    }

    /// Forgets keys older than `keep` (24 h by default).
    pub async fn forget_idempotency_keys(&self, keep: Duration) -> Result<u64> {
        Ok(sqlx::query(
            "DELETE FROM idempotency_keys WHERE created_at < now() - make_interval(secs => $1)",
        )
        .bind(keep.as_secs_f64())
        .execute(&self.pool)
        .await?
        .rows_affected())
    }
}
