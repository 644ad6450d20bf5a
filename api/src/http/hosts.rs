//! Admin routes for the pool's hosts: list them with their state and
//! allocation, drain and undrain, revoke.

use super::problems::NotFound;
use super::{json, Admin};
use crate::error::ApiError;
use crate::store::hosts::HostStatus;
use crate::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use utoipa::ToSchema;

/// A host of the pool.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct HostView {
    pub id: String,
    /// `ready` (takes new containers), `draining` (keeps what runs, takes
    /// nothing new), `lost` (silent, or back but not yet fenced) or
    /// `revoked` (its credential revoked: refused on every call, for good).
    pub state: String,
    /// Capacity in vCPUs.
    pub cpu: f64,
    pub memory_mib: i64,
    /// vCPUs reserved by its unfinished containers.
    pub allocated_cpu: f64,
    pub allocated_memory_mib: i64,
    /// Containers running on it.
    pub running: i64,
    /// Digests of the images it holds.
    pub images: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub last_heartbeat_at: DateTime<Utc>,
    pub containerd_version: String,
    /// What it offers `network: private` containers; null: no network
    /// (they are never placed on it).
    pub network: Option<HostNetworkView>,
    /// Where its worker serves Prometheus metrics; null: nowhere.
    pub metrics_url: Option<String>,
}

/// A host's network offer, as its worker registered it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HostNetworkView {
    /// The range host ports are published from, inclusive.
    pub port_range_start: u16,
    pub port_range_end: u16,
    /// The address published ports answer on.
    pub host_ip: String,
    /// The bridge subnet containers get their addresses from (CIDR).
    pub subnet: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct HostList {
    pub items: Vec<HostView>,
}

fn view(h: HostStatus) -> HostView {
    let mut images: Vec<String> = h.images.0.iter().map(|i| i.digest.clone()).collect();
    images.sort();
    images.dedup();
    let network = match (h.port_range_start, h.port_range_end, &h.host_ip, &h.subnet) {
        (Some(start), Some(end), Some(host_ip), Some(subnet)) => Some(HostNetworkView {
            port_range_start: u16::try_from(start).unwrap_or_default(),
            port_range_end: u16::try_from(end).unwrap_or_default(),
            host_ip: host_ip.clone(),
            subnet: subnet.clone(),
        }),
        _ => None,
    };
    HostView {
        network,
        state: h.state().as_str().to_owned(),
        id: h.id,
        cpu: h.cpu_millis as f64 / 1000.0,
        memory_mib: h.memory_mib,
        allocated_cpu: h.allocated_cpu_millis as f64 / 1000.0,
        allocated_memory_mib: h.allocated_memory_mib,
        running: h.running,
        images,
        labels: h.labels.0,
        last_heartbeat_at: h.last_heartbeat_at,
        containerd_version: h.containerd_version,
        metrics_url: h.metrics_url,
    }
}

/// Every host of the pool (admin token).
#[utoipa::path(get, path = "/v1/hosts", tag = "admin",
    responses((status = 200, body = HostList)),
    security(("bearer" = [])))]
pub async fn list(State(state): State<Arc<AppState>>, _: Admin) -> Result<Response, ApiError> {
    let hosts = state
        .store
        .host_statuses(state.config.host_lost_after(), None)
        .await?;
    Ok(json(
        StatusCode::OK,
        HostList {
            items: hosts.into_iter().map(view).collect(),
        },
    ))
}

async fn set_draining(state: &AppState, id: &str, draining: bool) -> Result<Response, ApiError> {
    if !state.store.set_draining(id, draining).await? {
        return Err(ApiError::NotFound("host"));
    }
    tracing::info!(host = id, draining, "host drain changed");
    let host = state
        .store
        .host_statuses(state.config.host_lost_after(), Some(id))
        .await?
        .pop()
        .ok_or(ApiError::NotFound("host"))?;
    Ok(json(StatusCode::OK, view(host)))
}

/// Stop placing new containers on the host; running ones stay (admin token).
#[utoipa::path(post, path = "/v1/hosts/{id}/drain", tag = "admin", params(("id" = String, Path)),
    responses((status = 200, body = HostView), NotFound),
    security(("bearer" = [])))]
pub async fn drain(
    State(state): State<Arc<AppState>>,
    _: Admin,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    set_draining(&state, &id, true).await
}

/// Take new containers on the host again (admin token).
#[utoipa::path(post, path = "/v1/hosts/{id}/undrain", tag = "admin", params(("id" = String, Path)),
    responses((status = 200, body = HostView), NotFound),
    security(("bearer" = [])))]
pub async fn undrain(
    State(state): State<Arc<AppState>>,
    _: Admin,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    set_draining(&state, &id, false).await
}

/// Revoke a host (admin token): every call it makes is refused from now
/// on and its open streams end; its containers are handled as a lost
/// host's (failed, or placed elsewhere as their restart policy says). The
/// host id is never given out again: the host must join anew, as a new host.
#[utoipa::path(delete, path = "/v1/hosts/{id}", tag = "admin", params(("id" = String, Path)),
    responses((status = 200, body = HostView, description = "revoked: the host as it is now"),
        (status = 204, description = "revoked: a host that joined but never registered"), NotFound),
    security(("bearer" = [])))]
pub async fn revoke(
    State(state): State<Arc<AppState>>,
    _: Admin,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let lost = state
        .store
        .revoke_host(&id)
        .await?
        .ok_or(ApiError::NotFound("host"))?;
    tracing::warn!(target: "skiff::audit", host = %id, failed = lost.failed.len(),
        replaced = lost.replaced.len(), runs_closed = lost.runs_closed, "host revoked");
    // A host that joined but never registered has no row to show.
    match state
        .store
        .host_statuses(state.config.host_lost_after(), Some(&id))
        .await?
        .pop()
    {
        Some(host) => Ok(json(StatusCode::OK, view(host))),
        None => Ok(StatusCode::NO_CONTENT.into_response()),
    }
}
