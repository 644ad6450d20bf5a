//! Quotas: an admin sets a tenant's (`PUT /v1/admin/tenants/{id}/quota`,
//! omitted fields kept); a tenant reads its own limits and use
//! (`GET /v1/quota`). Admission past a quota is a 403 `quota-exceeded`
//! problem naming it (see [`crate::store::quotas`]).

use super::problems::NotFound;
use super::{json, Admin, JsonBody, Tenant};
use crate::error::ApiError;
use crate::store::quotas::{QuotaChange, TenantQuota};
use crate::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use utoipa::ToSchema;
use uuid::Uuid;

/// A tenant's limits, or a change of them (`PUT`: omitted fields keep
/// their value).
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QuotaLimits {
    /// vCPU of its live containers (0 to 100000, in steps of 0.001).
    #[schema(minimum = 0, maximum = 100000)]
    pub max_vcpu: Option<f64>,
    #[schema(minimum = 0, maximum = 1000000000)]
    pub max_memory_mib: Option<i64>,
    /// Live containers: not finished, or with a restart due (job tasks
    /// included).
    #[schema(minimum = 0, maximum = 1000000000)]
    pub max_containers: Option<i64>,
    /// Containers waiting for capacity.
    #[schema(minimum = 0, maximum = 1000000000)]
    pub max_pending: Option<i64>,
    /// Unfinished jobs.
    #[schema(minimum = 0, maximum = 1000000000)]
    pub max_jobs: Option<i64>,
    /// Containers placed a second on average (0 to 100000), up to
    /// `SKIFF_QUOTA_START_BURST_S` seconds' worth at once; past it they
    /// wait in the queue. Starts cost hosts CPU outside any container, so
    /// this keeps one tenant's churn of short containers from slowing
    /// everyone's starts.
    #[schema(minimum = 0, maximum = 100000)]
    pub max_starts_per_s: Option<f64>,
}

/// What a tenant uses now, counted as its quota counts.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct QuotaUse {
    pub vcpu: f64,
    pub memory_mib: i64,
    pub containers: i64,
    pub pending: i64,
    pub jobs: i64,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct QuotaView {
    pub limits: QuotaLimits,
    #[serde(rename = "use")]
    pub use_: QuotaUse,
}

const MAX_COUNT: i64 = 1_000_000_000;

fn view(quota: TenantQuota) -> QuotaView {
    let TenantQuota {
        limits,
        use_,
        max_starts_per_s,
    } = quota;
    QuotaView {
        limits: QuotaLimits {
            max_vcpu: Some(limits.vcpu_millis as f64 / 1000.0),
            max_memory_mib: Some(limits.memory_mib),
            max_containers: Some(limits.containers),
            max_pending: Some(limits.pending),
            max_jobs: Some(limits.jobs),
            max_starts_per_s: Some(max_starts_per_s),
        },
        use_: QuotaUse {
            vcpu: use_.vcpu_millis as f64 / 1000.0,
            memory_mib: use_.memory_mib,
            containers: use_.containers,
            pending: use_.pending,
            jobs: use_.jobs,
        },
    }
}

/// Checks a change; its values in the store's units.
fn change(body: &QuotaLimits) -> Result<QuotaChange, ApiError> {
    let count = |field: &str, v: Option<i64>| match v {
        Some(n) if !(0..=MAX_COUNT).contains(&n) => Err(ApiError::invalid(
            field,
            format!("must be 0 to {MAX_COUNT}"),
        )),
        other => Ok(other),
    };
    let max_vcpu_millis = match body.max_vcpu {
        Some(v) if !(v.is_finite() && (0.0..=100_000.0).contains(&v)) => {
            return Err(ApiError::invalid("max_vcpu", "must be 0 to 100000"));
        }
        Some(v) => Some((v * 1000.0).round() as i64),
        None => None,
    };
    if let Some(v) = body.max_starts_per_s {
        if !(v.is_finite() && (0.0..=100_000.0).contains(&v)) {
            return Err(ApiError::invalid("max_starts_per_s", "must be 0 to 100000"));
        }
    }
    Ok(QuotaChange {
        max_vcpu_millis,
        max_memory_mib: count("max_memory_mib", body.max_memory_mib)?,
        max_containers: count("max_containers", body.max_containers)?,
        max_pending: count("max_pending", body.max_pending)?,
        max_jobs: count("max_jobs", body.max_jobs)?,
        max_starts_per_s: body.max_starts_per_s,
    })
}

/// Set a tenant's quota (admin token). Answers the tenant's quota now.
#[utoipa::path(put, path = "/v1/admin/tenants/{id}/quota", tag = "admin", params(("id" = Uuid, Path)),
    request_body = QuotaLimits,
    responses((status = 200, body = QuotaView), NotFound),
    security(("bearer" = [])))]
pub async fn set(
    State(state): State<Arc<AppState>>,
    _admin: Admin,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<QuotaLimits>,
) -> Result<Response, ApiError> {
    let tenant = Uuid::parse_str(&id).map_err(|_| ApiError::NotFound("tenant"))?;
    let change = change(&body)?;
    if !state.store.set_quota(tenant, &change).await? {
        return Err(ApiError::NotFound("tenant"));
    }
    tracing::info!(target: "skiff::audit", %tenant, ?change, "tenant quota set");
    let quota = state
        .store
        .quota(
            tenant,
            &state.config.quota_defaults(),
            state.config.quota_max_starts_per_s,
        )
        .await?;
    Ok(json(StatusCode::OK, view(quota)))
}

/// The tenant's own quota: its limits and its use.
#[utoipa::path(get, path = "/v1/quota", tag = "quota",
    responses((status = 200, body = QuotaView)), security(("bearer" = [])))]
pub async fn get(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
) -> Result<Response, ApiError> {
    let quota = state
        .store
        .quota(
            tenant,
            &state.config.quota_defaults(),
            state.config.quota_max_starts_per_s,
        )
        .await?;
    Ok(json(StatusCode::OK, view(quota)))
}
