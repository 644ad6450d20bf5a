//! The tenant's container routes. A tenant sees only its own containers:
//! another tenant's id is indistinguishable from one that never existed.

use super::{idempotency, json, parse_json, JsonBytes, Tenant};
use crate::error::{ApiError, Problem};
use crate::lifecycle::Action;
use crate::model::{
    ContainerList, ContainerView, CreateContainer, EventList, EventView, NewContainer,
    PlacementRequest, Timings, UsageView,
};
use crate::store::containers::{Acted, Created};
use crate::store::{ContainerRow, ListFilter};
use crate::AppState;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use skiff_core::ContainerState;
use skiff_proto as pb;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;
use uuid::Uuid;

const DEFAULT_PAGE: i64 = 100;
const MAX_PAGE: i64 = 1000;
const DEFAULT_WAIT_S: u64 = 30;
const MAX_WAIT_S: u64 = 600;

/// Renders rows with their usage so far (one query for all of them).
async fn views(state: &AppState, rows: Vec<ContainerRow>) -> Result<Vec<ContainerView>, ApiError> {
    let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
    let mut conn = state.store.conn().await?;
    let usage = skiff_billing::container_usage(&mut conn, &ids).await?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let u = usage.get(&row.id).map(UsageView::from).unwrap_or_default();
            view(row, u)
        })
        .collect())
}

async fn view_one(state: &AppState, row: ContainerRow) -> Result<ContainerView, ApiError> {
    Ok(views(state, vec![row])
        .await?
        .pop()
        .expect("one row in, one view out"))
}

pub fn view(row: ContainerRow, usage: UsageView) -> ContainerView {
    ContainerView {
        id: row.id,
        name: row.name,
        image: row.image,
        image_digest: row.image_digest,
        command: row.command.0,
        env: row.env.0,
        secure_env_keys: row.secure_env.0 .0.into_keys().collect(),
        cpu: f64::from(row.cpu_millis) / 1000.0,
        memory_mib: row.memory_mib as u32,
        restart_policy: row.restart_policy,
        max_restarts: row.max_restarts.map(|n| n as u32),
        stop_timeout_s: row.stop_timeout_s as u32,
        timeout_s: row.timeout_s.map(|t| t as u32),
        max_cost: row.max_cost,
        labels: row.labels.0,
        max_pending_s: row.max_pending_s as u32,
        placement: PlacementRequest {
            host_labels: (!row.host_labels.0.is_empty()).then_some(row.host_labels.0),
        },
        state: row.state,
        reason: row.reason,
        message: row.message,
        exit_code: row.exit_code,
        restart_count: row.restart_count,
        host_id: row.host_id,
        created_at: row.created_at,
        started_at: row.started_at,
        finished_at: row.finished_at,
        timings: Timings {
            queued_ms: row.queued_ms,
            pull_ms: row.pull_ms,
            create_ms: row.create_ms,
            start_ms: row.start_ms,
        },
        usage,
    }
}

fn parse_id(raw: &str) -> Result<Uuid, ApiError> {
    // A malformed id cannot name any container: the same 404 as a missing one.
    Uuid::parse_str(raw).map_err(|_| ApiError::NotFound("container"))
}

async fn load(state: &AppState, tenant: Uuid, raw_id: &str) -> Result<ContainerRow, ApiError> {
    let id = parse_id(raw_id)?;
    state
        .store
        .get_container(tenant, id)
        .await?
        .ok_or(ApiError::NotFound("container"))
}

/// Run a container. Returns 201 once the request is durably stored.
#[utoipa::path(post, path = "/v1/containers", request_body = CreateContainer,
    responses((status = 201, body = ContainerView), (status = 400, body = Problem),
        (status = 401, body = Problem), (status = 409, body = Problem), (status = 413, body = Problem),
        (status = 422, body = Problem, description = "no host could ever take it (`field`, `max`)"),
        (status = 503, body = Problem, description = "database unavailable; see Retry-After")),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    headers: HeaderMap,
    body: JsonBytes,
) -> Result<Response, ApiError> {
    let idem = idempotency::from_request(&headers, &Method::POST, "/v1/containers", &body.0)?;
    let body: CreateContainer = parse_json(&body.0)?;
    let new = body.validate(state.config.max_pending_s)?;
    admit(&state, &new).await?;
    let render = |row: &ContainerRow| {
        idempotency::stored_json(
            StatusCode::CREATED,
            &view(row.clone(), UsageView::default()),
        )
    };
    match state
        .store
        .insert_container(tenant, &new, idem.as_ref(), render)
        .await?
    {
        Created::New(row, response) => {
            tracing::info!(container = %row.id, tenant = %tenant, image = %row.image, "container created");
            Ok(idempotency::respond(response, false))
        }
        Created::Replay(response) => Ok(idempotency::respond(response, true)),
        Created::InFlight => {
            let key = idem.as_ref().map_or("", |i| i.key.as_str());
            match idempotency::wait_recorded(&state, tenant, key).await? {
                Some(response) => Ok(idempotency::respond(response, true)),
                None => Err(ApiError::Unavailable(
                    "a request with this Idempotency-Key is still being answered; retry".into(),
                )),
            }
        }
        Created::KeyReused => Err(ApiError::IdempotencyKeyReused),
    }
}

/// Refuses at once a request bigger than every live host (ready or
/// draining) that carries its labels; queues it when there is no such host
/// at all (one may register).
async fn admit(state: &AppState, new: &NewContainer) -> Result<(), ApiError> {
    let Some((max_cpu, max_memory)) = state
        .store
        .largest_fit(state.config.host_lost_after(), &new.host_labels)
        .await?
    else {
        return Ok(());
    };
    if i64::from(new.cpu.millis()) > max_cpu {
        let max = max_cpu as f64 / 1000.0;
        return Err(ApiError::NoHostFits {
            field: "cpu",
            max: serde_json::json!(max),
            detail: format!(
                "no host offers {} vCPU; the largest offers {max}",
                new.cpu.as_vcpus()
            ),
        });
    }
    if i64::from(new.memory.mib()) > max_memory {
        return Err(ApiError::NoHostFits {
            field: "memory_mib",
            max: serde_json::json!(max_memory),
            detail: format!(
                "no host offers {} MiB; the largest offers {max_memory} MiB",
                new.memory.mib()
            ),
        });
    }
    Ok(())
}

/// Get one container.
#[utoipa::path(get, path = "/v1/containers/{id}",
    params(("id" = Uuid, Path, description = "container id")),
    responses((status = 200, body = ContainerView), (status = 404, body = Problem)),
    security(("bearer" = [])))]
pub async fn get(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let row = load(&state, tenant, &id).await?;
    Ok(json(StatusCode::OK, view_one(&state, row).await?))
}

/// List containers: `state=` and `label=key=value` filters (repeatable),
/// `limit` (default 100, at most 1000) and `cursor` (the previous page's `next`).
#[utoipa::path(get, path = "/v1/containers",
    params(("state" = Option<String>, Query), ("label" = Option<String>, Query, description = "key=value"),
        ("limit" = Option<u32>, Query), ("cursor" = Option<String>, Query)),
    responses((status = 200, body = ContainerList), (status = 400, body = Problem)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    query: Result<Query<Vec<(String, String)>>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::invalid("query", e.body_text()))?;
    let mut filter = ListFilter {
        limit: DEFAULT_PAGE,
        ..Default::default()
    };
    let mut labels = BTreeMap::new();
    for (key, value) in query {
        match key.as_str() {
            "state" => filter.states.push(
                value
                    .parse::<ContainerState>()
                    .map_err(|e| ApiError::invalid("state", e))?,
            ),
            "label" => {
                let (k, v) = value
                    .split_once('=')
                    .ok_or_else(|| ApiError::invalid("label", "must be key=value"))?;
                if v.contains('\0') || !skiff_core::is_label_key(k) {
                    return Err(ApiError::invalid(
                        "label",
                        "key: 1 to 63 of letters, digits and -_./; value without NUL",
                    ));
                }
                labels.insert(k.to_owned(), v.to_owned());
            }
            "limit" => {
                filter.limit = value
                    .parse::<i64>()
                    .ok()
                    .filter(|n| (1..=MAX_PAGE).contains(n))
                    .ok_or_else(|| ApiError::invalid("limit", "must be 1 to 1000"))?;
            }
            "cursor" => {
                filter.after = Some(
                    Uuid::parse_str(&value)
                        .map_err(|_| ApiError::invalid("cursor", "not a cursor from this API"))?,
                )
            }
            other => return Err(ApiError::invalid(other, "unknown query parameter")),
        }
    }
    filter.labels = labels;
    let rows = state.store.list_containers(tenant, &filter).await?;
    let next = (rows.len() as i64 == filter.limit)
        .then(|| rows.last().map(|r| r.id.to_string()))
        .flatten();
    Ok(json(
        StatusCode::OK,
        ContainerList {
            items: views(&state, rows).await?,
            next,
        },
    ))
}

async fn act(
    state: &AppState,
    tenant: Uuid,
    raw_id: &str,
    action: Action,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let id = parse_id(raw_id)?;
    let path = format!("/v1/containers/{id}/{}", action.as_str());
    let idem = idempotency::from_request(headers, &Method::POST, &path, b"")?;
    let acted = state
        .store
        .request(
            tenant,
            id,
            action,
            state.config.host_lost_after(),
            idem.as_ref(),
        )
        .await?;
    let row = match acted {
        Acted::Done(row) => *row.ok_or(ApiError::NotFound("container"))?,
        Acted::Replay(response) => return Ok(idempotency::respond(response, true)),
        Acted::KeyReused => return Err(ApiError::IdempotencyKeyReused),
        Acted::InFlight => {
            let key = idem.as_ref().map_or("", |i| i.key.as_str());
            if let Some(response) = idempotency::wait_recorded(state, tenant, key).await? {
                return Ok(idempotency::respond(response, true));
            }
            // Applied, but its answer was lost (the replica went away):
            // answer with the container as it is now.
            let row = state
                .store
                .get_container(tenant, id)
                .await?
                .ok_or(ApiError::NotFound("container"))?;
            let response =
                idempotency::stored_json(StatusCode::ACCEPTED, &view_one(state, row).await?);
            if let Some(idem) = &idem {
                state.store.record_response(tenant, idem, &response).await?;
            }
            return Ok(idempotency::respond(response, true));
        }
    };
    // The host's stream, the scheduler and waiters on every replica are
    // woken by the database's NOTIFY triggers.
    tracing::info!(container = %id, ?action, "lifecycle request");
    let response = idempotency::stored_json(StatusCode::ACCEPTED, &view_one(state, row).await?);
    if let Some(idem) = &idem {
        state.store.record_response(tenant, idem, &response).await?;
    }
    Ok(idempotency::respond(response, false))
}

/// Stop: SIGTERM, then SIGKILL after `stop_timeout_s`. Ends `stopped`.
#[utoipa::path(post, path = "/v1/containers/{id}/stop", params(("id" = Uuid, Path)),
    responses((status = 202, body = ContainerView), (status = 404, body = Problem)), security(("bearer" = [])))]
pub async fn stop(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    act(&state, tenant, &id, Action::Stop, &headers).await
}

/// Start a new run of a stopped or finished container (no-op if it runs).
#[utoipa::path(post, path = "/v1/containers/{id}/start", params(("id" = Uuid, Path)),
    responses((status = 202, body = ContainerView), (status = 404, body = Problem)), security(("bearer" = [])))]
pub async fn start(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    act(&state, tenant, &id, Action::Start, &headers).await
}

/// Stop the current run (if any) and start a new one.
#[utoipa::path(post, path = "/v1/containers/{id}/restart", params(("id" = Uuid, Path)),
    responses((status = 202, body = ContainerView), (status = 404, body = Problem)), security(("bearer" = [])))]
pub async fn restart(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    act(&state, tenant, &id, Action::Restart, &headers).await
}

/// Delete: stops the container if needed and removes its runtime state and
/// logs from the host. Waits (bounded) for the host to confirm.
#[utoipa::path(delete, path = "/v1/containers/{id}", params(("id" = Uuid, Path)),
    responses((status = 204), (status = 404, body = Problem)), security(("bearer" = [])))]
pub async fn delete(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    Path(raw): Path<String>,
) -> Result<Response, ApiError> {
    let id = parse_id(&raw)?;
    let mut changes = state.hub.watch_containers();
    let row = match state
        .store
        .request(
            tenant,
            id,
            Action::Delete,
            state.config.host_lost_after(),
            None,
        )
        .await?
    {
        Acted::Done(Some(row)) => *row,
        _ => return Err(ApiError::NotFound("container")),
    };
    tracing::info!(container = %id, "delete requested");
    let deadline =
        tokio::time::Instant::now() + Duration::from_secs(row.stop_timeout_s as u64 + 15);
    while !state.store.is_removed(id).await? {
        match tokio::time::timeout_at(deadline, next_change(&mut changes, id)).await {
            Ok(()) => {}
            Err(_) => {
                // The deletion is durable; the host converges when it can.
                tracing::warn!(container = %id, "host has not confirmed removal yet");
                break;
            }
        }
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn next_change(changes: &mut tokio::sync::broadcast::Receiver<Uuid>, id: Uuid) {
    loop {
        match changes.recv().await {
            // nil: notifications may have been missed, look again.
            Ok(changed) if changed == id || changed.is_nil() => return,
            Ok(_) => {}
            // Missed some: re-read to be safe.
            Err(RecvError::Lagged(_)) => return,
            Err(RecvError::Closed) => std::future::pending::<()>().await,
        }
    }
}

#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct WaitQuery {
    /// `running` (returns once running or terminal) or `exited` (once terminal).
    #[serde(rename = "for")]
    pub for_: Option<String>,
    /// Seconds to wait, default 30, at most 600.
    pub timeout_s: Option<u64>,
}

/// Wait until the container runs or has exited; 408 on timeout.
#[utoipa::path(get, path = "/v1/containers/{id}/wait", params(("id" = Uuid, Path), WaitQuery),
    responses((status = 200, body = ContainerView), (status = 408, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
pub async fn wait(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    Path(raw): Path<String>,
    query: Result<Query<WaitQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::invalid("query", e.body_text()))?;
    let want_running = match query.for_.as_deref() {
        None | Some("exited") => false,
        Some("running") => true,
        Some(_) => return Err(ApiError::invalid("for", "must be running or exited")),
    };
    let timeout_s = query.timeout_s.unwrap_or(DEFAULT_WAIT_S);
    if timeout_s > MAX_WAIT_S {
        return Err(ApiError::invalid("timeout_s", "must be at most 600"));
    }
    let id = parse_id(&raw)?;
    let mut changes = state.hub.watch_containers();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout_s);
    loop {
        let row = load(&state, tenant, &raw).await?;
        let s = row.state;
        if s.is_terminal() || (want_running && s == ContainerState::Running) {
            return Ok(json(StatusCode::OK, view_one(&state, row).await?));
        }
        // Also re-check every few seconds in case a wake-up was missed.
        let tick = tokio::time::Instant::now() + Duration::from_secs(2);
        if tokio::time::Instant::now() >= deadline {
            return Err(ApiError::Timeout(format!(
                "container is still {s} after {timeout_s} s"
            )));
        }
        let _ = tokio::time::timeout_at(tick.min(deadline), next_change(&mut changes, id)).await;
    }
}

/// The container's events, oldest first.
#[utoipa::path(get, path = "/v1/containers/{id}/events", params(("id" = Uuid, Path)),
    responses((status = 200, body = EventList), (status = 404, body = Problem)), security(("bearer" = [])))]
pub async fn events(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let row = load(&state, tenant, &id).await?;
    let items = state
        .store
        .events(row.id)
        .await?
        .into_iter()
        .map(|e| EventView {
            kind: e.kind,
            message: e.message,
            at: e.at,
        })
        .collect();
    Ok(json(StatusCode::OK, EventList { items }))
}

#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct LogsQuery {
    /// Only the last N lines.
    pub tail: Option<u32>,
    /// Keep the response open and stream new output until the container exits.
    pub follow: Option<bool>,
}

/// stdout and stderr of every run, kept after exit until the container is deleted.
#[utoipa::path(get, path = "/v1/containers/{id}/logs", params(("id" = Uuid, Path), LogsQuery),
    responses((status = 200, content_type = "text/plain", body = String), (status = 404, body = Problem),
        (status = 503, body = Problem)),
    security(("bearer" = [])))]
pub async fn logs(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
    query: Result<Query<LogsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::invalid("query", e.body_text()))?;
    let row = load(&state, tenant, &id).await?;
    let text_plain = [(header::CONTENT_TYPE, "text/plain; charset=utf-8")];
    let Some(host_id) = row.host_id.as_deref() else {
        return Ok((text_plain, "").into_response());
    };
    let host = state
        .store
        .host(host_id)
        .await?
        .ok_or_else(|| ApiError::Unavailable(format!("host {host_id} is unknown")))?;
    if host.revoked {
        // Its certificate may still verify: it is not dialed again.
        return Err(ApiError::Unavailable(format!(
            "host {host_id} was revoked; its logs are no longer read"
        )));
    }
    let mut client = state
        .agents
        .client(host_id, &host.agent_addr)
        .map_err(|e| ApiError::Unavailable(e.message().to_owned()))?;
    let stream = client
        .read_logs(pb::LogsRequest {
            container_id: row.id.to_string(),
            tail_lines: query.tail.unwrap_or(0),
            follow: query.follow.unwrap_or(false),
        })
        .await
        .map_err(|status| {
            tracing::warn!(container = %row.id, host = host_id, %status, "reading logs failed");
            ApiError::Unavailable(format!(
                "host {host_id} did not serve the logs: {}",
                status.message()
            ))
        })?
        .into_inner();
    let body = Body::from_stream(stream.map(|chunk| chunk.map(|c| c.data)));
    Ok((text_plain, body).into_response())
}
