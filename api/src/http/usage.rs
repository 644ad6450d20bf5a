//! Usage and billing routes: a tenant's reports and chain verification, and
//! the admin's cross-tenant reports and rate card. The rules themselves
//! (what is billed, splitting, pricing) live in `skiff-billing`.

use super::{json, Admin, JsonBody, Tenant};
use crate::error::{ApiError, Problem};
use crate::AppState;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;
use uuid::Uuid;

#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct UsageQuery {
    /// Start of the window (RFC 3339, inclusive).
    pub from: Option<String>,
    /// End of the window (RFC 3339, exclusive); at most 366 days after `from`.
    pub to: Option<String>,
    /// `container`, `job` (the job a task container belongs to, keyed by
    /// job id: `label:skiff.job`), `label:<key>`, `hour` or `day` (admins
    /// also `tenant`).
    pub group_by: Option<String>,
}

fn wants_csv(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("text/csv"))
}

async fn usage_report(
    state: &AppState,
    tenant: Option<Uuid>,
    query: Result<Query<UsageQuery>, axum::extract::rejection::QueryRejection>,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let Query(mut q) = query.map_err(|e| ApiError::invalid("query", e.body_text()))?;
    if q.group_by.as_deref() == Some("job") {
        // Task containers carry their job's id as a label.
        q.group_by = Some(format!("label:{}", crate::jobs::JOB_LABEL));
    }
    if let Some(key) = q.group_by.as_deref().and_then(|g| g.strip_prefix("label:")) {
        if !skiff_core::is_label_key(key) {
            return Err(ApiError::invalid(
                "group_by",
                "label keys are 1 to 63 characters of letters, digits and -_./",
            ));
        }
    }
    let admin = tenant.is_none();
    let query = skiff_billing::ReportQuery::new(
        tenant,
        q.from.as_deref(),
        q.to.as_deref(),
        q.group_by.as_deref(),
        admin,
    )?;
    let mut conn = state.store.conn().await?;
    let report = skiff_billing::report(&mut conn, &query).await?;
    if wants_csv(headers) {
        return Ok((
            [(header::CONTENT_TYPE, "text/csv; charset=utf-8")],
            skiff_billing::report_csv(&report),
        )
            .into_response());
    }
    Ok(json(StatusCode::OK, report))
}

/// The tenant's usage in `[from, to)`, grouped. Runs are billed per second of
/// task run time (containerd's task start to exit), each run rounded up to a
/// whole second, minimum 1 s; queueing, image pulls and container creation are
/// free. A run crossing a window boundary is split exactly there, so the
/// windows of any partition add up to the total. `cost` is in micro-units.
/// `Accept: text/csv` returns CSV.
#[utoipa::path(get, path = "/v1/usage", params(UsageQuery),
    responses((status = 200, description = "report: {items: [{key, vcpu_seconds, gib_seconds, billed_seconds, cost}], total}"),
        (status = 400, body = Problem), (status = 401, body = Problem)),
    security(("bearer" = [])))]
pub async fn tenant_report(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    headers: HeaderMap,
    query: Result<Query<UsageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    usage_report(&state, Some(tenant), query, &headers).await
}

/// The same report across all tenants (admin token); `group_by=tenant` allowed.
#[utoipa::path(get, path = "/v1/admin/usage", params(UsageQuery),
    responses((status = 200, description = "report across tenants"), (status = 400, body = Problem),
        (status = 401, body = Problem)),
    security(("bearer" = [])))]
pub async fn admin_report(
    State(state): State<Arc<AppState>>,
    _admin: Admin,
    headers: HeaderMap,
    query: Result<Query<UsageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    usage_report(&state, None, query, &headers).await
}

#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct VerifyQuery {
    /// Read every record again instead of only those since the last intact
    /// verification.
    pub full: Option<bool>,
}

/// Verifies the tenant's hash-chained usage ledger: `{"ok": true,
/// "records": N, "verified_before": M}` (N records read now, linked onto M
/// found intact before), or `ok: false` with the first record that breaks
/// the chain. Incremental: only records since the last intact verification
/// are read (`full=true` reads all). At most one per tenant every
/// `SKIFF_VERIFY_MIN_INTERVAL_S` (429 with `Retry-After` otherwise).
#[utoipa::path(get, path = "/v1/usage/verify", params(VerifyQuery),
    responses((status = 200, description = "verification result"), (status = 401, body = Problem),
        (status = 429, body = Problem)),
    security(("bearer" = [])))]
pub async fn verify(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    query: Result<Query<VerifyQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::invalid("query", e.body_text()))?;
    let mut conn = state.store.conn().await?;
    let verification = skiff_billing::verify_chain_incremental(
        &mut conn,
        tenant,
        query.full.unwrap_or(false),
        state.config.verify_min_interval(),
    )
    .await?;
    Ok(json(StatusCode::OK, verification))
}

/// The rate card: prices per vCPU-second and per GiB-second, each effective from a date.
#[utoipa::path(get, path = "/v1/admin/rates",
    responses((status = 200, description = "rate cards, oldest first"), (status = 401, body = Problem)),
    security(("bearer" = [])))]
pub async fn rates(
    State(state): State<Arc<AppState>>,
    _admin: Admin,
) -> Result<Response, ApiError> {
    let mut conn = state.store.conn().await?;
    let items = skiff_billing::rates(&mut conn).await?;
    Ok(json(StatusCode::OK, serde_json::json!({ "items": items })))
}

/// Adds a rate effective from a future whole UTC hour.
#[utoipa::path(post, path = "/v1/admin/rates",
    responses((status = 201, description = "the rate card added"), (status = 400, body = Problem),
        (status = 401, body = Problem)),
    security(("bearer" = [])))]
pub async fn add_rate(
    State(state): State<Arc<AppState>>,
    _admin: Admin,
    JsonBody(rate): JsonBody<skiff_billing::RateCard>,
) -> Result<Response, ApiError> {
    let mut conn = state.store.conn().await?;
    skiff_billing::add_rate(&mut conn, &rate).await?;
    Ok(json(StatusCode::CREATED, rate))
}

/// Body of `POST /v1/admin/adjustments`: a correction to a container's bill.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAdjustment {
    /// Idempotency key: an id already applied changes nothing.
    pub adjustment_id: String,
    pub container_id: Uuid,
    /// Where the correction sits in time (a whole second, RFC 3339).
    pub start_at: chrono::DateTime<chrono::Utc>,
    /// Seconds to add (negative to credit), at the container's size.
    pub seconds: i64,
    /// Why; kept in the hash-chained ledger for auditors.
    pub note: String,
}

/// Appends an adjustment record (usage records are never edited: corrections
/// are new records in the tenant's hash chain).
#[utoipa::path(post, path = "/v1/admin/adjustments", request_body = CreateAdjustment,
    responses((status = 201, description = "{\"applied\": true|false}"), (status = 400, body = Problem),
        (status = 401, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
pub async fn add_adjustment(
    State(state): State<Arc<AppState>>,
    _admin: Admin,
    JsonBody(body): JsonBody<CreateAdjustment>,
) -> Result<Response, ApiError> {
    if body.adjustment_id.is_empty() || body.adjustment_id.len() > 128 {
        return Err(ApiError::invalid(
            "adjustment_id",
            "must be 1 to 128 characters",
        ));
    }
    if body.note.trim().is_empty() {
        return Err(ApiError::invalid("note", "say why the bill is corrected"));
    }
    let row = state
        .store
        .container_for_admin(body.container_id)
        .await?
        .ok_or(ApiError::NotFound("container"))?;
    let adjustment = skiff_billing::Adjustment {
        adjustment_id: body.adjustment_id,
        tenant_id: row.tenant_id,
        container_id: row.id,
        generation: row.generation,
        container_name: row.name,
        labels: row.labels.0,
        start_at: body.start_at,
        seconds: body.seconds,
        cpu_millis: row.cpu_millis,
        memory_mib: row.memory_mib,
        note: body.note,
    };
    let applied = state.store.append_adjustment(&adjustment).await?;
    tracing::info!(container = %row.id, applied, "billing adjustment");
    Ok(json(
        StatusCode::CREATED,
        serde_json::json!({ "applied": applied }),
    ))
}
