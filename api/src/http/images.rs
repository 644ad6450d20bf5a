//! Images on hosts: `POST /v1/images/prewarm` (a tenant's token) pulls an
//! image onto some ready hosts ahead of use, with the tenant's registry
//! credential for it (the request's own, else the stored one), and answers
//! with each host's digest or error; `GET /v1/images` (admin token) lists,
//! per host, the images it holds (as its heartbeats report them).
//! Placement already prefers hosts holding a container's image.

use super::problems::InvalidRequest;
use super::{json, schemas, Admin, JsonBody, Tenant};
use crate::error::ApiError;
use crate::store::hosts::HostStatus;
use crate::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use skiff_core::{HostState, ImageRef, RegistryCredential};
use skiff_proto as pb;
use std::sync::Arc;
use std::time::Duration;
use utoipa::ToSchema;

/// The most hosts one prewarm may ask for.
const MAX_HOSTS: u32 = 1000;

/// Body of `POST /v1/images/prewarm`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Prewarm {
    #[schema(schema_with = schemas::image)]
    pub image: String,
    /// How many ready hosts should hold it (1 to 1000, default 1): hosts
    /// that already hold it first, then the others by id; fewer when the
    /// pool has fewer ready hosts.
    #[schema(minimum = 1, maximum = 1000)]
    pub hosts: Option<u32>,
    #[schema(schema_with = super::registry_credentials::request_credentials_schema)]
    pub image_registry_credentials: Option<Vec<RegistryCredential>>,
}

/// One host's outcome.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PrewarmHost {
    pub host_id: String,
    /// The manifest digest it holds now; absent on failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Whether anything was fetched (false: it held the image already).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fetched: Option<bool>,
    /// Why it does not hold the image (e.g. `unauthorized: ...`), or that
    /// its pull was still going when this answer was due (it carries on).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PrewarmResult {
    pub image: String,
    /// One per host asked (empty when no host is ready).
    pub hosts: Vec<PrewarmHost>,
}

/// An image a host holds.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct HeldImageView {
    /// The reference it was pulled as.
    pub reference: String,
    /// Its manifest digest (`sha256:...`).
    pub digest: String,
}

/// What one host holds.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct HostImages {
    pub host_id: String,
    /// `ready`, `draining`, `lost` or `revoked`.
    pub state: String,
    pub images: Vec<HeldImageView>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct HostImageList {
    pub items: Vec<HostImages>,
}

/// The ready hosts to pull `image` onto: up to `n`, those that hold it
/// first, then by id.
fn pick_hosts(hosts: &[HostStatus], image: &str, n: usize) -> Vec<String> {
    let mut ready: Vec<(bool, &str)> = hosts
        .iter()
        .filter(|h| h.state() == HostState::Ready)
        .map(|h| {
            let holds = h.images.0.iter().any(|i| i.reference == image);
            (!holds, h.id.as_str())
        })
        .collect();
    ready.sort();
    ready
        .into_iter()
        .take(n)
        .map(|(_, id)| id.to_owned())
        .collect()
}

/// Pull an image onto ready hosts ahead of use.
#[utoipa::path(post, path = "/v1/images/prewarm", tag = "images", request_body = Prewarm,
    responses((status = 200, body = PrewarmResult), InvalidRequest, super::problems::Unprocessable),
    security(("bearer" = [])))]
pub async fn prewarm(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    JsonBody(body): JsonBody<Prewarm>,
) -> Result<Response, ApiError> {
    let image = ImageRef::parse(&body.image)?;
    let n = body.hosts.unwrap_or(1);
    if !(1..=MAX_HOSTS).contains(&n) {
        return Err(ApiError::invalid("hosts", "must be 1 to 1000"));
    }
    let given = skiff_core::registry::pick_for_image(
        "image_registry_credentials",
        &body.image,
        body.image_registry_credentials.unwrap_or_default(),
    )?;
    let server = image.registry.to_ascii_lowercase();
    let credential = match given {
        Some(c) => Some(pb::RegistryCredential {
            server: c.server,
            username: c.username,
            password: c.password.expose().to_owned(),
        }),
        None => {
            state
                .store
                .stored_registry_credential(tenant, &server)
                .await?
        }
    };
    let hosts = state
        .store
        .host_statuses(state.config.host_lost_after(), None)
        .await?;
    let picked = pick_hosts(&hosts, &body.image, n as usize);
    // Answer within the request timeout; a pull still going carries on.
    let deadline = state
        .config
        .request_timeout()
        .saturating_sub(Duration::from_secs(2))
        .max(Duration::from_secs(1));
    let pulls = picked.into_iter().map(|host_id| {
        let state = state.clone();
        let request = pb::PullRequest {
            image: body.image.clone(),
            registry_credential: credential.clone(),
        };
        async move { pull_on(&state, host_id, request, deadline).await }
    });
    let results = futures::future::join_all(pulls).await;
    tracing::info!(%tenant, image = %body.image, hosts = results.len(),
        held = results.iter().filter(|r| r.digest.is_some()).count(), "prewarm");
    Ok(json(
        StatusCode::OK,
        PrewarmResult {
            image: body.image,
            hosts: results,
        },
    ))
}

/// Asks one host's agent to pull.
async fn pull_on(
    state: &AppState,
    host_id: String,
    request: pb::PullRequest,
    deadline: Duration,
) -> PrewarmHost {
    let failed = |host_id: String, error: String| PrewarmHost {
        host_id,
        digest: None,
        fetched: None,
        error: Some(error),
    };
    let mut client = match super::containers::agent_of(state, &host_id).await {
        Ok(client) => client,
        Err(err) => return failed(host_id, err.to_string()),
    };
    let mut request = tonic::Request::new(request);
    request.set_timeout(deadline);
    match client.pull(request).await {
        Ok(answer) => {
            let answer = answer.into_inner();
            PrewarmHost {
                host_id,
                digest: Some(answer.digest),
                fetched: Some(answer.fetched),
                error: None,
            }
        }
        Err(status) if status.code() == tonic::Code::DeadlineExceeded => failed(
            host_id,
            format!(
                "still pulling after {} s; the pull carries on, and the host lists the image once it is in",
                deadline.as_secs()
            ),
        ),
        Err(status) => failed(host_id, status.message().to_owned()),
    }
}

/// The images every host holds (admin token).
#[utoipa::path(get, path = "/v1/images", tag = "admin",
    responses((status = 200, body = HostImageList)), security(("bearer" = [])))]
pub async fn list(State(state): State<Arc<AppState>>, _: Admin) -> Result<Response, ApiError> {
    let hosts = state
        .store
        .host_statuses(state.config.host_lost_after(), None)
        .await?;
    let items = hosts
        .into_iter()
        .map(|h| {
            let mut images: Vec<HeldImageView> = h
                .images
                .0
                .iter()
                .map(|i| HeldImageView {
                    reference: i.reference.clone(),
                    digest: i.digest.clone(),
                })
                .collect();
            images.sort_by(|a, b| a.reference.cmp(&b.reference));
            HostImages {
                state: h.state().as_str().to_owned(),
                host_id: h.id,
                images,
            }
        })
        .collect();
    Ok(json(StatusCode::OK, HostImageList { items }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::hosts::HeldImage;
    use sqlx::types::Json;

    fn host(id: &str, images: &[&str], draining: bool) -> HostStatus {
        HostStatus {
            id: id.into(),
            cpu_millis: 1000,
            memory_mib: 1024,
            allocated_cpu_millis: 0,
            allocated_memory_mib: 0,
            running: 0,
            images: Json(
                images
                    .iter()
                    .map(|r| HeldImage {
                        reference: (*r).into(),
                        digest: "sha256:x".into(),
                    })
                    .collect(),
            ),
            labels: Json(Default::default()),
            last_heartbeat_at: chrono::Utc::now(),
            draining,
            lost: false,
            revoked: false,
            containerd_version: String::new(),
            port_range_start: None,
            port_range_end: None,
            host_ip: None,
            subnet: None,
            metrics_url: None,
        }
    }

    #[test]
    fn ready_hosts_holding_the_image_come_first() {
        let hosts = [
            host("a", &[], false),
            host("b", &["r/img"], false),
            host("c", &["r/img"], true),
            host("d", &[], false),
        ];
        assert_eq!(pick_hosts(&hosts, "r/img", 1), ["b"]);
        assert_eq!(pick_hosts(&hosts, "r/img", 2), ["b", "a"]);
        assert_eq!(pick_hosts(&hosts, "r/img", 10), ["b", "a", "d"]);
        assert_eq!(pick_hosts(&hosts, "other", 2), ["a", "b"]);
        assert!(pick_hosts(&[], "r/img", 3).is_empty());
    }
}
