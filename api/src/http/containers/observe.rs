//! Watching a container: wait for a state, its events, its logs.

use super::actions::next_change;
use super::{load, parse_id, view_one};
use crate::error::ApiError;
use crate::http::problems::{InvalidRequest, NotFound, WaitTimedOut};
use crate::http::{json, Tenant};
use crate::model::{ContainerView, EventList, EventView};
use crate::AppState;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use skiff_core::ContainerState;
use skiff_proto as pb;
use std::sync::Arc;
use std::time::Duration;

const DEFAULT_WAIT_S: u64 = 30;
const MAX_WAIT_S: u64 = 600;

#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct WaitQuery {
    /// `running` (returns once running or terminal) or `exited` (once
    /// terminal; the default).
    #[serde(rename = "for")]
    #[param(rename = "for", value_type = Option<WaitFor>, inline)]
    pub for_: Option<String>,
    /// Seconds to wait, default 30, at most 600.
    #[param(maximum = 600)]
    pub timeout_s: Option<u64>,
}

/// What `wait` waits for (the handler reads it as a string, to name `for`
/// in its problem).
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "snake_case")]
pub enum WaitFor {
    Running,
    Exited,
}

/// Wait until the container runs or has exited; 408 on timeout.
#[utoipa::path(get, path = "/v1/containers/{id}/wait", tag = "containers", params(("id" = Uuid, Path), WaitQuery),
    responses((status = 200, body = ContainerView), InvalidRequest, NotFound, WaitTimedOut),
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
#[utoipa::path(get, path = "/v1/containers/{id}/events", tag = "containers", params(("id" = Uuid, Path)),
    responses((status = 200, body = EventList), NotFound), security(("bearer" = [])))]
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
#[into_params(parameter_in = Query)]
pub struct LogsQuery {
    /// Only the last N lines.
    #[param(maximum = 4294967295_u32)]
    pub tail: Option<u32>,
    /// Keep the response open and stream new output until the container exits.
    pub follow: Option<bool>,
}

/// The agent of `host_id`, dialed (the channel is shared): logs and exec.
pub(crate) async fn agent_of(
    state: &AppState,
    host_id: &str,
) -> Result<pb::worker_agent_client::WorkerAgentClient<tonic::transport::Channel>, ApiError> {
    let host = state
        .store
        .host(host_id)
        .await?
        .ok_or_else(|| ApiError::Unavailable(format!("host {host_id} is unknown")))?;
    if host.revoked {
        // Its certificate may still verify: it is not dialed again.
        return Err(ApiError::Unavailable(format!(
            "host {host_id} was revoked; it is no longer dialed"
        )));
    }
    state
        .agents
        .client(host_id, &host.agent_addr)
        .map_err(|e| ApiError::Unavailable(e.message().to_owned()))
}

/// A container's log as its host serves it: the last `tail` lines (0:
/// all), then what follows when `follow`.
pub(crate) async fn log_stream(
    state: &AppState,
    host_id: &str,
    container: uuid::Uuid,
    tail: u32,
    follow: bool,
) -> Result<tonic::Streaming<pb::LogChunk>, ApiError> {
    let mut client = agent_of(state, host_id).await?;
    Ok(client
        .read_logs(pb::LogsRequest {
            container_id: container.to_string(),
            tail_lines: tail,
            follow,
        })
        .await
        .map_err(|status| {
            tracing::warn!(%container, host = host_id, %status, "reading logs failed");
            ApiError::Unavailable(format!(
                "host {host_id} did not serve the logs: {}",
                status.message()
            ))
        })?
        .into_inner())
}

/// stdout and stderr of every run, kept after exit until the container is deleted.
#[utoipa::path(get, path = "/v1/containers/{id}/logs", tag = "containers", params(("id" = Uuid, Path), LogsQuery),
    responses((status = 200, content_type = "text/plain", body = String), InvalidRequest, NotFound),
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
    let stream = log_stream(
        &state,
        host_id,
        row.id,
        query.tail.unwrap_or(0),
        query.follow.unwrap_or(false),
    )
    .await?;
    let body = Body::from_stream(stream.map(|chunk| chunk.map(|c| c.data)));
    Ok((text_plain, body).into_response())
}
