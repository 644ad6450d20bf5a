//! The worker channel's trust records: join tokens, the host identities
//! handed out at join, every certificate issued (by serial), revocation.
//!
//! A call on the worker channel counts only with a certificate issued here,
//! unexpired and unrevoked, of a host that is not revoked
//! ([`Store::certificate_standing`]); so revoking is a row update, effective
//! on the very next call of any replica.

use super::hosts::{lose_host, LossCause, LostHost};
use super::{Result, Store};
use chrono::{DateTime, Utc};
use uuid::Uuid;

/// Why a join token was not accepted (said to the worker, and logged).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenRefusal {
    Unknown,
    Expired,
    UsedUp,
    Revoked,
}

impl TokenRefusal {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenRefusal::Unknown => "unknown",
            TokenRefusal::Expired => "expired",
            TokenRefusal::UsedUp => "used_up",
            TokenRefusal::Revoked => "revoked",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            TokenRefusal::Unknown => "the join token is not known to this control plane",
            TokenRefusal::Expired => "the join token has expired",
            TokenRefusal::UsedUp => "the join token has no uses left",
            TokenRefusal::Revoked => "the join token was revoked",
        }
    }
}

/// A join token as listed (never its secret).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct JoinTokenRow {
    pub id: Uuid,
    pub description: String,
    pub max_uses: i32,
    pub uses: i32,
    pub expires_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// Whether a presented certificate may make a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    Valid,
    /// The certificate, or its host, was revoked.
    Revoked,
    /// Not issued by this control plane (or its record expired).
    Unknown,
}

/// What a join took: the token's use and a host id of its own.
#[derive(Debug)]
pub struct Joining {
    tx: sqlx::Transaction<'static, sqlx::Postgres>,
    pub host_id: String,
    pub token_id: Uuid,
}

const TOKEN_COLUMNS: &str = "id, description, max_uses, uses, expires_at, created_at, revoked_at";

impl Store {
    pub async fn create_join_token(
        &self,
        token_sha256: &[u8],
        description: &str,
        max_uses: i32,
        expires_in_s: i64,
    ) -> Result<JoinTokenRow> {
        Ok(sqlx::query_as::<_, JoinTokenRow>(&format!(
            "INSERT INTO join_tokens (id, token_sha256, description, max_uses, expires_at) \
             VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5)) RETURNING {TOKEN_COLUMNS}"
        ))
        .bind(Uuid::now_v7())
        .bind(token_sha256)
        .bind(description)
        .bind(max_uses)
        .bind(expires_in_s as f64)
        .fetch_one(&self.pool)
        .await?)
    }

    pub async fn join_tokens(&self) -> Result<Vec<JoinTokenRow>> {
        Ok(sqlx::query_as::<_, JoinTokenRow>(&format!(
            "SELECT {TOKEN_COLUMNS} FROM join_tokens ORDER BY created_at, id"
        ))
        .fetch_all(&self.pool)
        .await?)
    }

    /// Revokes a token; None when unknown.
    pub async fn revoke_join_token(&self, id: Uuid) -> Result<Option<JoinTokenRow>> {
        Ok(sqlx::query_as::<_, JoinTokenRow>(&format!(
            "UPDATE join_tokens SET revoked_at = COALESCE(revoked_at, now()) WHERE id = $1 \
             RETURNING {TOKEN_COLUMNS}"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Takes one use of the token and a unique host id from `label`
    /// (`label`, `label-2`, ...), in a transaction the caller finishes with
    /// [`Store::finish_join`] once it has signed the certificate: a join
    /// that fails after this burns no use.
    pub async fn begin_join(
        &self,
        token_sha256: &[u8],
        label: &str,
        requested: &str,
    ) -> Result<std::result::Result<Joining, TokenRefusal>> {
        let mut tx = self.pool.begin().await?;
        let token_id: Option<Uuid> = sqlx::query_scalar(
            "UPDATE join_tokens SET uses = uses + 1 WHERE token_sha256 = $1 AND revoked_at IS NULL \
               AND expires_at > now() AND uses < max_uses RETURNING id",
        )
        .bind(token_sha256)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(token_id) = token_id else {
            let why: Option<(bool, bool)> = sqlx::query_as(
                "SELECT revoked_at IS NOT NULL, expires_at <= now() FROM join_tokens \
                 WHERE token_sha256 = $1",
            )
            .bind(token_sha256)
            .fetch_optional(&mut *tx)
            .await?;
            return Ok(Err(match why {
                None => TokenRefusal::Unknown,
                Some((true, _)) => TokenRefusal::Revoked,
                Some((_, true)) => TokenRefusal::Expired,
                Some(_) => TokenRefusal::UsedUp,
            }));
        };
        for n in 1.. {
            let candidate = skiff_proto::tls::names::candidate(label, n);
            // A host registered before identities existed (an upgrade) has
            // no identity yet: the first join that asks for its id takes it
            // over, with its containers, as that host's worker would.
            let taken: Option<String> = sqlx::query_scalar(
                "INSERT INTO host_identities (host_id, requested_name, join_token_id) \
                 VALUES ($1, $2, $3) ON CONFLICT (host_id) DO NOTHING RETURNING host_id",
            )
            .bind(&candidate)
            .bind(requested)
            .bind(token_id)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(host_id) = taken {
                return Ok(Ok(Joining {
                    tx,
                    host_id,
                    token_id,
                }));
            }
        }
        unreachable!("the candidates never run out")
    }

    /// Records the certificate signed for a join and commits it.
    pub async fn finish_join(
        &self,
        mut joining: Joining,
        serial: &str,
        not_after: DateTime<Utc>,
    ) -> Result<()> {
        record_certificate(&mut joining.tx, &joining.host_id, serial, not_after).await?;
        joining.tx.commit().await?;
        Ok(())
    }

    /// Records a renewal's certificate.
    pub async fn record_certificate(
        &self,
        host: &str,
        serial: &str,
        not_after: DateTime<Utc>,
    ) -> Result<()> {
        let mut conn = self.pool.acquire().await?;
        record_certificate(&mut conn, host, serial, not_after).await
    }

    /// Whether `host`'s certificate `serial` may make a call now.
    pub async fn certificate_standing(&self, host: &str, serial: &str) -> Result<Standing> {
        let row: Option<(bool,)> = sqlx::query_as(
            "SELECT c.revoked_at IS NOT NULL OR i.revoked_at IS NOT NULL \
             FROM host_certs c JOIN host_identities i USING (host_id) \
             WHERE c.serial = $1 AND c.host_id = $2 AND c.not_after > now()",
        )
        .bind(serial)
        .bind(host)
        .fetch_optional(&self.pool)
        .await?;
        Ok(match row {
            Some((false,)) => Standing::Valid,
            Some((true,)) => Standing::Revoked,
            None => Standing::Unknown,
        })
    }

    /// Revokes a host: its identity, every certificate it holds, and its
    /// row (state `revoked`); its containers are handled as a lost host's.
    /// None when no such host joined or registered.
    pub async fn revoke_host(&self, host: &str) -> Result<Option<LostHost>> {
        let mut tx = self.pool.begin().await?;
        super::placement::lock_placement(&mut tx).await?;
        let identity = sqlx::query(
            "UPDATE host_identities SET revoked_at = COALESCE(revoked_at, now()) WHERE host_id = $1",
        )
        .bind(host)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        sqlx::query(
            "UPDATE host_certs SET revoked_at = COALESCE(revoked_at, now()) WHERE host_id = $1",
        )
        .bind(host)
        .execute(&mut *tx)
        .await?;
        // Lost too (and at the current revision), so nothing is placed on
        // it and nothing counts it alive, whatever else changes.
        let registered = sqlx::query(
            "UPDATE hosts SET revoked_at = COALESCE(revoked_at, now()), lost_at = COALESCE(lost_at, now()), \
               lost_revision = pg_current_xact_id()::text::bigint + 1 WHERE id = $1",
        )
        .bind(host)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if identity == 0 && registered == 0 {
            return Ok(None);
        }
        let outcome = lose_host(&mut tx, host, LossCause::Revoked).await?;
        tx.commit().await?;
        Ok(Some(outcome))
    }

    /// Forgets certificates past their expiry (a day's grace for clocks):
    /// an expired certificate fails the TLS handshake, so its record and
    /// any revocation of it no longer matter. Revocations of unexpired
    /// certificates are kept, whatever else is cleaned up.
    pub async fn forget_expired_certificates(&self) -> Result<u64> {
        Ok(
            sqlx::query("DELETE FROM host_certs WHERE not_after < now() - interval '1 day'")
                .execute(&self.pool)
                .await?
                .rows_affected(),
        )
    }
}

async fn record_certificate(
    conn: &mut sqlx::PgConnection,
    host: &str,
    serial: &str,
    not_after: DateTime<Utc>,
) -> Result<()> {
    sqlx::query("INSERT INTO host_certs (serial, host_id, not_after) VALUES ($1, $2, $3)")
        .bind(serial)
        .bind(host)
        .bind(not_after)
        .execute(conn)
        .await?;
    Ok(())
}
