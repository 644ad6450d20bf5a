//! Lifecycle requests on a container: stop, start and restart (each
//! idempotent with an `Idempotency-Key`), and delete.

use super::{parse_id, view_one};
use crate::error::ApiError;
use crate::http::idempotency::{self, Settled};
use crate::http::problems::{Conflict, InvalidRequest, NotFound, QuotaExceeded, Unprocessable};
use crate::http::schemas::IdempotencyKey;
use crate::http::Tenant;
use crate::lifecycle::Action;
use crate::model::ContainerView;
use crate::store::containers::Acted;
use crate::store::idempotency::Idem;
use crate::store::ContainerRow;
use crate::AppState;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use skiff_core::ContainerState;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;
use uuid::Uuid;

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
            &state.config.quota_defaults(),
        )
        .await?;
    let row = match idempotency::settle(state, tenant, idem.as_ref(), acted).await? {
        Settled::Done(row) => *row.ok_or(ApiError::NotFound("container"))?,
        Settled::Answer(response) => return Ok(response),
        Settled::Lost => {
            // Applied, but its answer was lost (the replica went away):
            // answer with the container as it is now.
            let row = state
                .store
                .get_container(tenant, id)
                .await?
                .ok_or(ApiError::NotFound("container"))?;
            return answer(state, tenant, idem.as_ref(), row, true).await;
        }
    };
    // The host's stream, the scheduler and waiters on every replica are
    // woken by the database's NOTIFY triggers.
    tracing::info!(container = %id, ?action, "lifecycle request");
    answer(state, tenant, idem.as_ref(), row, false).await
}

/// The 202 with the container, recorded for the key if there is one.
async fn answer(
    state: &AppState,
    tenant: Uuid,
    idem: Option<&Idem>,
    row: ContainerRow,
    replayed: bool,
) -> Result<Response, ApiError> {
    let response = idempotency::stored_json(StatusCode::ACCEPTED, &view_one(state, row).await?);
    if let Some(idem) = idem {
        state.store.record_response(tenant, idem, &response).await?;
    }
    Ok(idempotency::respond(response, replayed))
}

/// Stop: SIGTERM, then SIGKILL after `stop_timeout_s`. Ends `stopped`.
/// 409 for a container group's member (act on the group).
#[utoipa::path(post, path = "/v1/containers/{id}/stop", tag = "containers",
    params(("id" = Uuid, Path), IdempotencyKey),
    responses((status = 202, body = ContainerView), InvalidRequest, NotFound, Conflict, Unprocessable),
    security(("bearer" = [])))]
pub async fn stop(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    act(&state, tenant, &id, Action::Stop, &headers).await
}

/// Start a new run of a stopped or finished container (no-op if it runs).
/// 409 for a container group's member (act on the group).
#[utoipa::path(post, path = "/v1/containers/{id}/start", tag = "containers",
    params(("id" = Uuid, Path), IdempotencyKey),
    responses((status = 202, body = ContainerView), InvalidRequest, QuotaExceeded, NotFound, Conflict, Unprocessable),
    security(("bearer" = [])))]
pub async fn start(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    act(&state, tenant, &id, Action::Start, &headers).await
}

/// Stop the current run (if any) and start a new one. 409 for a container
/// group's member (act on the group).
#[utoipa::path(post, path = "/v1/containers/{id}/restart", tag = "containers",
    params(("id" = Uuid, Path), IdempotencyKey),
    responses((status = 202, body = ContainerView), InvalidRequest, QuotaExceeded, NotFound, Conflict, Unprocessable),
    security(("bearer" = [])))]
pub async fn restart(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    act(&state, tenant, &id, Action::Restart, &headers).await
}

/// Delete. A running (or starting, or queued) container answers 202 at
/// once with the object in `stopping`: the host stops it (SIGTERM, SIGKILL
/// after `stop_timeout_s`) and removes its runtime state and logs, and the
/// tenant's event log gets `type=removed` when that is done. A finished one
/// answers 204 once its host confirms the removal (bounded: the deletion is
/// durable either way).
#[utoipa::path(delete, path = "/v1/containers/{id}", tag = "containers", params(("id" = Uuid, Path)),
    responses((status = 202, body = ContainerView, description = "a live container: stopping, then removed"),
        (status = 204, description = "a finished container: removed"), NotFound, Conflict),
    security(("bearer" = [])))]
pub async fn delete(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    Path(raw): Path<String>,
) -> Result<Response, ApiError> {
    let id = parse_id(&raw)?;
    let live = state
        .store
        .get_container(tenant, id)
        .await?
        .is_some_and(|row| !row.state.is_terminal());
    let mut changes = state.hub.watch_containers();
    let row = match state
        .store
        .request(
            tenant,
            id,
            Action::Delete,
            state.config.host_lost_after(),
            None,
            &state.config.quota_defaults(),
        )
        .await?
    {
        Acted::Done(Some(row)) => *row,
        _ => return Err(ApiError::NotFound("container")),
    };
    tracing::info!(container = %id, live, "delete requested");
    if live && row.removed_at.is_none() {
        let mut view = view_one(&state, row).await?;
        view.state = ContainerState::Stopping;
        return Ok(crate::http::json(StatusCode::ACCEPTED, view));
    }
    let deadline = tokio::time::Instant::now() + FINISHED_REMOVAL_WAIT;
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

/// How long deleting a finished container waits for its host to confirm
/// the removal (no stop is involved: normally well under a second).
const FINISHED_REMOVAL_WAIT: Duration = Duration::from_secs(10);

pub(super) async fn next_change(changes: &mut tokio::sync::broadcast::Receiver<Uuid>, id: Uuid) {
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
