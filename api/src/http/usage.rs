//! Usage and billing routes: a tenant's reports and chain verification, and
//! the admin's cross-tenant reports and rate card. The rules themselves
//! (what is billed, splitting, pricing) live in `skiff-billing`.

use super::problems::{InvalidRequest, NotFound};
use super::schemas;
use super::{json, Admin, JsonBody, Tenant};
use crate::error::ApiError;
use crate::AppState;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;
use uuid::Uuid;

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageQuery {
    /// Start of the window (RFC 3339, inclusive).
    pub from: Option<String>,
    /// End of the window (RFC 3339, exclusive); at most 366 days after `from`.
    pub to: Option<String>,
    /// `container`, `job` (the job a task container belongs to, keyed by
    /// job id: `label:skiff.job`), `group` (the container group, keyed by
    /// group id: `label:skiff.group`), `label:<key>`, `hour` or `day`
    /// (admins also `tenant`).
    pub group_by: Option<String>,
}

/// A grouping of a tenant's report (an admin's adds `tenant`).
const GROUP_BY_PATTERN: &str = r"^(container|job|group|hour|day|label:[A-Za-z0-9._/-]{1,63})$";
const ADMIN_GROUP_BY_PATTERN: &str =
    r"^(container|job|group|hour|day|tenant|label:[A-Za-z0-9._/-]{1,63})$";

/// [`UsageQuery`]'s parameters, with `group_by` as `pattern` allows.
fn usage_params(group_by_pattern: &str) -> Vec<utoipa::openapi::path::Parameter> {
    let instant = || {
        schemas::string()
            .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                utoipa::openapi::KnownFormat::DateTime,
            )))
            .build()
    };
    vec![
        schemas::query(
            "from",
            "Start of the window (RFC 3339, a whole second, inclusive).",
            instant(),
            true,
        ),
        schemas::query(
            "to",
            "End of the window (RFC 3339, a whole second, exclusive): after `from`, \
             at most 366 days after it.",
            instant(),
            true,
        ),
        schemas::query(
            "group_by",
            "`container` (the default), `job` (the job a task container belongs to, \
             keyed by job id: `label:skiff.job`), `group` (the container group, keyed \
             by group id: `label:skiff.group`), `label:<key>`, `hour` or `day` \
             (admins also `tenant`).",
            schemas::string().pattern(Some(group_by_pattern)).build(),
            false,
        ),
    ]
}

/// The query of `GET /v1/usage`.
pub struct TenantUsageParams;

impl utoipa::IntoParams for TenantUsageParams {
    fn into_params(
        _: impl Fn() -> Option<utoipa::openapi::path::ParameterIn>,
    ) -> Vec<utoipa::openapi::path::Parameter> {
        usage_params(GROUP_BY_PATTERN)
    }
}

/// The query of `GET /v1/admin/usage`.
pub struct AdminUsageParams;

impl utoipa::IntoParams for AdminUsageParams {
    fn into_params(
        _: impl Fn() -> Option<utoipa::openapi::path::ParameterIn>,
    ) -> Vec<utoipa::openapi::path::Parameter> {
        usage_params(ADMIN_GROUP_BY_PATTERN)
    }
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
    if q.group_by.as_deref() == Some("group") {
        // A group's members carry its id as a label.
        q.group_by = Some(format!("label:{}", crate::groups::GROUP_LABEL));
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
#[utoipa::path(get, path = "/v1/usage", tag = "usage", params(TenantUsageParams),
    responses((status = 200, description = "report: {items: [{key, vcpu_seconds, gib_seconds, billed_seconds, cost}], total}",
            content((Object = "application/json"), (String = "text/csv"))),
        InvalidRequest),
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
#[utoipa::path(get, path = "/v1/admin/usage", tag = "admin", params(AdminUsageParams),
    responses((status = 200, description = "report across tenants",
            content((Object = "application/json"), (String = "text/csv"))),
        InvalidRequest),
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
#[into_params(parameter_in = Query)]
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
#[utoipa::path(get, path = "/v1/usage/verify", tag = "usage", params(VerifyQuery),
    responses((status = 200, description = "verification result", body = Object), InvalidRequest),
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
    let result = if verification.ok { "ok" } else { "broken" };
    state
        .metrics
        .chain_verifications
        .with_label_values(&[result])
        .inc();
    if !verification.ok {
        tracing::error!(%tenant, first_broken = ?verification.first_broken, "usage chain verification found a break");
    }
    Ok(json(StatusCode::OK, verification))
}

/// The rate card: prices per vCPU-second and per GiB-second, each effective from a date.
#[utoipa::path(get, path = "/v1/admin/rates", tag = "admin",
    responses((status = 200, description = "rate cards, oldest first", body = Object)),
    security(("bearer" = [])))]
pub async fn rates(
    State(state): State<Arc<AppState>>,
    _admin: Admin,
) -> Result<Response, ApiError> {
    let mut conn = state.store.conn().await?;
    let items = skiff_billing::rates(&mut conn).await?;
    Ok(json(StatusCode::OK, serde_json::json!({ "items": items })))
}

/// Body of `POST /v1/admin/rates`, and a card of `GET /v1/admin/rates`:
/// the wire shape of `skiff_billing::RateCard` (which the handler reads;
/// a unit test holds the two together).
#[derive(utoipa::ToSchema)]
#[schema(as = RateCard)]
#[allow(dead_code)] // a description of the wire, never built
pub struct RateCardSchema {
    /// When the prices take effect: a whole UTC hour, not in the past.
    effective_from: chrono::DateTime<chrono::Utc>,
    /// Nano-units per vCPU-second.
    #[schema(minimum = 0, maximum = 1_000_000_000)]
    nano_per_vcpu_second: i64,
    /// Nano-units per GiB-second.
    #[schema(minimum = 0, maximum = 1_000_000_000)]
    nano_per_gib_second: i64,
}

/// Adds a rate effective from a future whole UTC hour.
#[utoipa::path(post, path = "/v1/admin/rates", tag = "admin", request_body = RateCardSchema,
    responses((status = 201, description = "the rate card added", body = RateCardSchema),
        (status = 409, description = "a rate card already takes effect at that hour",
            body = crate::error::Problem, content_type = "application/problem+json")),
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
    /// Idempotency key: an id already applied changes nothing (1 to 128
    /// bytes, without NUL).
    #[schema(min_length = 1, max_length = 128, pattern = r"^[^\u0000]*$")]
    pub adjustment_id: String,
    pub container_id: Uuid,
    /// Where the correction sits in time (a whole second, RFC 3339).
    pub start_at: chrono::DateTime<chrono::Utc>,
    /// Seconds to add (negative to credit), at the container's size.
    #[schema(minimum = -9223372036854775808_i64, maximum = 9223372036854775807_i64)]
    pub seconds: i64,
    /// Why; kept in the hash-chained ledger for auditors (not blank, without
    /// NUL).
    #[schema(pattern = r"^[^\u0000]*[^\s\u0000][^\u0000]*$")]
    pub note: String,
}

/// Appends an adjustment record (usage records are never edited: corrections
/// are new records in the tenant's hash chain).
#[utoipa::path(post, path = "/v1/admin/adjustments", tag = "admin", request_body = CreateAdjustment,
    responses((status = 201, description = "{\"applied\": true|false}", body = Object), NotFound),
    security(("bearer" = [])))]
pub async fn add_adjustment(
    State(state): State<Arc<AppState>>,
    _admin: Admin,
    JsonBody(body): JsonBody<CreateAdjustment>,
) -> Result<Response, ApiError> {
    if body.adjustment_id.is_empty()
        || body.adjustment_id.len() > 128
        || body.adjustment_id.contains('\0')
    {
        return Err(ApiError::invalid(
            "adjustment_id",
            "must be 1 to 128 bytes, without NUL",
        ));
    }
    if body.note.trim().is_empty() || body.note.contains('\0') {
        return Err(ApiError::invalid(
            "note",
            "say why the bill is corrected (without NUL)",
        ));
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

#[cfg(test)]
mod tests {
    use super::*;
    use utoipa::openapi::{RefOr, Schema};
    use utoipa::PartialSchema;

    #[test]
    fn the_rate_card_schema_names_the_rate_cards_fields() {
        let card = skiff_billing::RateCard {
            effective_from: chrono::Utc::now(),
            nano_per_vcpu_second: 1,
            nano_per_gib_second: 1,
        };
        let json = serde_json::to_value(card).unwrap();
        let mut fields: Vec<&String> = json.as_object().unwrap().keys().collect();
        fields.sort();
        let RefOr::T(Schema::Object(schema)) = RateCardSchema::schema() else {
            panic!("RateCard's schema is not an object")
        };
        let documented: Vec<&String> = schema.properties.keys().collect();
        assert_eq!(fields, documented);
        let max = skiff_billing::rules::MAX_NANO_RATE;
        assert!(serde_json::to_string(&schema)
            .unwrap()
            .contains(&max.to_string()));
    }
}
