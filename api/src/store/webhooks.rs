//! Webhook deliveries: queued by a trigger when a container or a job with
//! a `notify_url` reaches a terminal state; claimed by any replica with
//! `SKIP LOCKED` and a lease (a replica that dies mid-send leaves the row to
//! be claimed again: at least once); the outcome recorded with the next
//! attempt's time. And the tenant's signing secret.

use super::{Result, Store};
use chrono::{DateTime, Utc};
use std::time::Duration;
use uuid::Uuid;

/// Where a delivery is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type, serde::Serialize, serde::Deserialize)]
#[sqlx(type_name = "delivery_state", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    Pending,
    Delivered,
    GaveUp,
}

/// What a delivery reports on: a container's run, or a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject {
    Container(Uuid),
    Job(Uuid),
}

/// A delivery due now, claimed for one attempt.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DueDelivery {
    pub id: i64,
    pub tenant_id: Uuid,
    pub container_id: Option<Uuid>,
    pub job_id: Option<Uuid>,
    pub url: String,
    pub body: Option<Vec<u8>>,
    pub attempts: i32,
    pub created_at: DateTime<Utc>,
    pub secret: Option<String>,
}

/// A delivery as its log shows it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DeliveryRow {
    pub id: i64,
    /// The container's run it reports (None for a job's delivery).
    pub generation: Option<i64>,
    pub url: String,
    pub state: DeliveryState,
    pub attempts: i32,
    pub last_status: Option<i32>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
}

impl Store {
    pub async fn set_webhook_secret(&self, tenant: Uuid, secret: &str) -> Result<()> {
        sqlx::query("UPDATE tenants SET webhook_secret = $2 WHERE id = $1")
            .bind(tenant)
            .bind(secret)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn has_webhook_secret(&self, tenant: Uuid) -> Result<bool> {
        Ok(
            sqlx::query_scalar("SELECT webhook_secret IS NOT NULL FROM tenants WHERE id = $1")
                .bind(tenant)
                .fetch_optional(&self.pool)
                .await?
                .unwrap_or(false),
        )
    }

    /// Claims up to `limit` due deliveries for one attempt each: their next
    /// attempt moves `lease` ahead (if this replica dies, another sends).
    pub async fn claim_deliveries(&self, lease: Duration, limit: i64) -> Result<Vec<DueDelivery>> {
        let mut tx = self.pool.begin().await?;
        let due: Vec<DueDelivery> = sqlx::query_as(
            "WITH due AS (SELECT id FROM webhook_deliveries \
                 WHERE state = 'pending' AND next_attempt_at <= now() \
                 ORDER BY next_attempt_at, id LIMIT $2 FOR UPDATE SKIP LOCKED) \
             UPDATE webhook_deliveries d SET attempts = d.attempts + 1, \
                 next_attempt_at = now() + make_interval(secs => $1) \
             FROM due, tenants t WHERE d.id = due.id AND t.id = d.tenant_id \
             RETURNING d.id, d.tenant_id, d.container_id, d.job_id, d.url, d.body, d.attempts, d.created_at, \
                 t.webhook_secret AS secret",
        )
        .bind(lease.as_secs_f64())
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(due)
    }

    /// Keeps the first rendering of a delivery's body (later attempts send it).
    pub async fn save_delivery_body(&self, id: i64, body: &[u8]) -> Result<Vec<u8>> {
        Ok(sqlx::query_scalar(
            "UPDATE webhook_deliveries SET body = COALESCE(body, $2) WHERE id = $1 RETURNING body",
        )
        .bind(id)
        .bind(body)
        .fetch_one(&self.pool)
        .await?)
    }

    pub async fn delivery_succeeded(&self, id: i64, status: u16) -> Result<()> {
        sqlx::query(
            "UPDATE webhook_deliveries SET state = 'delivered', last_status = $2, last_error = NULL, \
               delivered_at = now() WHERE id = $1",
        )
        .bind(id)
        .bind(i32::from(status))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A failed attempt: again after `retry_in`, or never (`None`: gave up).
    pub async fn delivery_failed(
        &self,
        id: i64,
        status: Option<u16>,
        error: &str,
        retry_in: Option<Duration>,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE webhook_deliveries SET last_status = $2, last_error = $3, \
               state = CASE WHEN $4::float8 IS NULL THEN 'gave_up'::delivery_state ELSE state END, \
               next_attempt_at = now() + make_interval(secs => COALESCE($4, 0)) WHERE id = $1",
        )
        .bind(id)
        .bind(status.map(i32::from))
        .bind(error)
        .bind(retry_in.map(|d| d.as_secs_f64()))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A container's or a job's deliveries, oldest first.
    pub async fn deliveries(&self, tenant: Uuid, subject: Subject) -> Result<Vec<DeliveryRow>> {
        let (container, job) = match subject {
            Subject::Container(id) => (Some(id), None),
            Subject::Job(id) => (None, Some(id)),
        };
        Ok(sqlx::query_as(
            "SELECT id, generation, url, state, attempts, last_status, last_error, \
               created_at, delivered_at FROM webhook_deliveries \
             WHERE tenant_id = $1 AND (container_id = $2 OR job_id = $3) ORDER BY id",
        )
        .bind(tenant)
        .bind(container)
        .bind(job)
        .fetch_all(&self.pool)
        .await?)
    }
}
