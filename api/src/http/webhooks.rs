//! The tenant's webhook secret (`POST /v1/webhook-secret`: create or
//! rotate, shown once) and the delivery log of a container or a job.

use super::problems::NotFound;
use super::{json, new_token, Tenant};
use crate::error::ApiError;
use crate::store::webhooks::{DeliveryState, Subject};
use crate::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use utoipa::ToSchema;
use uuid::Uuid;

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct WebhookSecret {
    /// Signs every delivery from now on; never shown again.
    pub secret: String,
}

/// Create or rotate the tenant's webhook signing secret.
#[utoipa::path(post, path = "/v1/webhook-secret", tag = "webhooks",
    responses((status = 201, body = WebhookSecret)), security(("bearer" = [])))]
pub async fn rotate_secret(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
) -> Result<Response, ApiError> {
    let secret = new_token("whsec_");
    state.store.set_webhook_secret(tenant, &secret).await?;
    tracing::info!(target: "skiff::audit", %tenant, "webhook secret rotated");
    Ok(json(StatusCode::CREATED, WebhookSecret { secret }))
}

/// One delivery of a completion webhook.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DeliveryView {
    pub id: i64,
    /// The run it reports (a container's generation; absent for a job).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run: Option<i64>,
    pub url: String,
    /// `pending`, `delivered` or `gave_up`.
    #[schema(value_type = String)]
    pub state: DeliveryState,
    pub attempts: i32,
    pub last_status: Option<i32>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DeliveryList {
    pub items: Vec<DeliveryView>,
}

/// A container's webhook deliveries, oldest first.
#[utoipa::path(get, path = "/v1/containers/{id}/deliveries", tag = "webhooks", params(("id" = Uuid, Path)),
    responses((status = 200, body = DeliveryList), NotFound),
    security(("bearer" = [])))]
pub async fn deliveries(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let row = super::containers::load(&state, tenant, &id).await?;
    delivery_log(&state, tenant, Subject::Container(row.id)).await
}

/// A job's webhook deliveries (one per terminal state it reaches).
#[utoipa::path(get, path = "/v1/jobs/{id}/deliveries", tag = "webhooks", params(("id" = Uuid, Path)),
    responses((status = 200, body = DeliveryList), NotFound),
    security(("bearer" = [])))]
pub async fn job_deliveries(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let job = super::jobs::load(&state, tenant, &id).await?;
    delivery_log(&state, tenant, Subject::Job(job.id)).await
}

async fn delivery_log(
    state: &AppState,
    tenant: Uuid,
    subject: Subject,
) -> Result<Response, ApiError> {
    let items = state
        .store
        .deliveries(tenant, subject)
        .await?
        .into_iter()
        .map(|d| DeliveryView {
            id: d.id,
            run: d.generation,
            url: d.url,
            state: d.state,
            attempts: d.attempts,
            last_status: d.last_status,
            last_error: d.last_error,
            created_at: d.created_at,
            delivered_at: d.delivered_at,
        })
        .collect();
    Ok(json(StatusCode::OK, DeliveryList { items }))
}
