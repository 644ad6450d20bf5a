//! The agent's `Pull`: an image pulled onto the host ahead of use (`POST
//! /v1/images/prewarm`), with the registry login the control plane
//! resolved, under the same rules as a container's pull (the egress
//! policy; a cached private image only after the caller's authorization).
//! The pull runs on its own task: a caller that stops waiting (its request
//! timed out) does not stop it, and the image then shows in the host's
//! next heartbeat.

use crate::runtime::auth::RegistryLogin;
use crate::runtime::Runtime;
use skiff_proto as pb;
use std::sync::Arc;
use tonic::{Response, Status};

/// Serves one `Pull`.
pub async fn serve<R: Runtime>(
    runtime: Arc<R>,
    request: pb::PullRequest,
) -> Result<Response<pb::PullResponse>, Status> {
    if request.image.is_empty() {
        return Err(Status::invalid_argument("image is empty"));
    }
    let pull = tokio::spawn(async move {
        let login = RegistryLogin::from_pb(request.registry_credential.as_ref());
        let pulled = runtime
            .ensure_image_with(&request.image, login.as_ref())
            .await;
        match &pulled {
            Ok(info) => {
                tracing::info!(image = %request.image, digest = %info.digest, fetched = info.fetched, "image prewarmed")
            }
            Err(err) => tracing::warn!(image = %request.image, error = %err, "prewarm failed"),
        }
        pulled
    });
    match pull.await {
        Ok(Ok(info)) => Ok(Response::new(pb::PullResponse {
            digest: info.digest,
            fetched: info.fetched,
        })),
        Ok(Err(err)) => Err(Status::aborted(err.to_string())),
        Err(join) => Err(Status::internal(format!("the pull ended early: {join}"))),
    }
}
