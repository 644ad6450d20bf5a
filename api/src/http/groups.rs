//! The tenant's container group routes (`/v1/groups`): create (idempotent
//! with a key), get, list (by namespace, paginated), stop/start/restart
//! (idempotent with a key) and delete. The work is [`crate::groups`]'s;
//! here are the HTTP shapes. A member's own logs, events, exec and wait
//! are the container routes' (its id is in the group's `containers`).

use super::idempotency::{self, Settled};
use super::problems::{Conflict, InvalidRequest, NotFound, QuotaExceeded, Unprocessable};
use super::schemas::IdempotencyKey;
use super::{json, parse_json, JsonBytes, Tenant};
use crate::error::ApiError;
use crate::groups::{self, CreateGroup, GroupAction, GroupFilter, GroupList, GroupView};
use crate::AppState;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use std::sync::Arc;
use uuid::Uuid;

fn parse_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::NotFound("container group"))
}

/// Run a container group: its containers are placed on one host together
/// and share a network namespace (localhost), address, published ports
/// and volumes. Returns 201 once durably stored.
#[utoipa::path(post, path = "/v1/groups", tag = "groups", request_body = CreateGroup, params(IdempotencyKey),
    responses((status = 201, body = GroupView), InvalidRequest, QuotaExceeded, Conflict, Unprocessable),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    headers: HeaderMap,
    body: JsonBytes,
) -> Result<Response, ApiError> {
    let idem = idempotency::from_request(&headers, &Method::POST, "/v1/groups", &body.0)?;
    let body: CreateGroup = parse_json(&body.0)?;
    let new = body.validate(state.config.max_pending_s)?;
    let created = groups::create(&state, tenant, new, idem.as_ref(), |view| {
        idempotency::stored_json(StatusCode::CREATED, view)
    })
    .await?;
    idempotency::answer_created(&state, tenant, idem.as_ref(), created, |_| {}).await
}

/// One container group.
#[utoipa::path(get, path = "/v1/groups/{id}", tag = "groups", params(("id" = Uuid, Path)),
    responses((status = 200, body = GroupView), NotFound), security(("bearer" = [])))]
pub async fn get(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let group = groups::get(&state, tenant, id)
        .await?
        .ok_or(ApiError::NotFound("container group"))?;
    Ok(json(StatusCode::OK, group))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct GroupQuery {
    /// Only this namespace (case-insensitive).
    #[param(
        pattern = r"^[-A-Za-z0-9_.()]{0,89}[-A-Za-z0-9_()]$",
        min_length = 1,
        max_length = 90
    )]
    pub namespace: Option<String>,
    /// Most items on the page (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
    /// The previous page's `next`.
    #[param(value_type = Option<Uuid>)]
    pub cursor: Option<String>,
}

/// The tenant's container groups, oldest first (`namespace`, `limit`, `cursor`).
#[utoipa::path(get, path = "/v1/groups", tag = "groups", params(GroupQuery),
    responses((status = 200, body = GroupList), InvalidRequest), security(("bearer" = [])))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    query: Result<Query<GroupQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::invalid("query", e.body_text()))?;
    let limit = query.limit.unwrap_or(super::DEFAULT_PAGE);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid("limit", "must be 1 to 1000"));
    }
    let after = match &query.cursor {
        Some(c) => Some(
            Uuid::parse_str(c)
                .map_err(|_| ApiError::invalid("cursor", "not a cursor from this API"))?,
        ),
        None => None,
    };
    if let Some(ns) = &query.namespace {
        crate::groups::check_namespace(ns)?;
    }
    let filter = GroupFilter {
        namespace: query.namespace,
        after,
        limit,
    };
    let items = groups::list(&state, tenant, &filter).await?;
    let next = (items.len() as i64 == limit)
        .then(|| items.last().map(|g| g.id.to_string()))
        .flatten();
    Ok(json(StatusCode::OK, GroupList { items, next }))
}

async fn act(
    state: &AppState,
    tenant: Uuid,
    raw_id: &str,
    action: GroupAction,
    verb: &str,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let id = parse_id(raw_id)?;
    let path = format!("/v1/groups/{id}/{verb}");
    let idem = idempotency::from_request(headers, &Method::POST, &path, b"")?;
    let acted = groups::act_keyed(state, tenant, id, action, idem.as_ref()).await?;
    let view = match idempotency::settle(state, tenant, idem.as_ref(), acted).await? {
        Settled::Done(view) => view.ok_or(ApiError::NotFound("container group"))?,
        Settled::Answer(response) => return Ok(response),
        Settled::Lost => groups::get(state, tenant, id)
            .await?
            .ok_or(ApiError::NotFound("container group"))?,
    };
    let response = idempotency::stored_json(StatusCode::ACCEPTED, &view);
    if let Some(idem) = &idem {
        state.store.record_response(tenant, idem, &response).await?;
    }
    Ok(idempotency::respond(response, false))
}

/// Stop every container of the group (idempotent with a key).
#[utoipa::path(post, path = "/v1/groups/{id}/stop", tag = "groups", params(("id" = Uuid, Path), IdempotencyKey),
    responses((status = 202, body = GroupView), InvalidRequest, NotFound, Unprocessable), security(("bearer" = [])))]
pub async fn stop(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    act(&state, tenant, &id, GroupAction::Stop, "stop", &headers).await
}

/// Start a stopped or finished group again: its containers are placed
/// together (on their old host when it has room).
#[utoipa::path(post, path = "/v1/groups/{id}/start", tag = "groups", params(("id" = Uuid, Path), IdempotencyKey),
    responses((status = 202, body = GroupView), InvalidRequest, NotFound, QuotaExceeded, Unprocessable), security(("bearer" = [])))]
pub async fn start(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    act(&state, tenant, &id, GroupAction::Start, "start", &headers).await
}

/// Restart every container of the group on its host.
#[utoipa::path(post, path = "/v1/groups/{id}/restart", tag = "groups", params(("id" = Uuid, Path), IdempotencyKey),
    responses((status = 202, body = GroupView), InvalidRequest, NotFound, QuotaExceeded, Unprocessable), security(("bearer" = [])))]
pub async fn restart(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    act(
        &state,
        tenant,
        &id,
        GroupAction::Restart,
        "restart",
        &headers,
    )
    .await
}

/// Delete the group: its containers stop and are removed from their host.
/// 204. Their usage stays in the reports.
#[utoipa::path(delete, path = "/v1/groups/{id}", tag = "groups", params(("id" = Uuid, Path)),
    responses((status = 204, description = "deleted"), NotFound), security(("bearer" = [])))]
pub async fn delete(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    groups::delete(&state, tenant, id)
        .await?
        .ok_or(ApiError::NotFound("container group"))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
