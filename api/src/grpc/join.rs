//! Joining and renewing: a worker with a join token and no certificate
//! gets a host identity of its own and a certificate for the key it made;
//! a host renews its certificate over the authenticated channel before it
//! expires. Both are audit-logged (target `skiff::audit`).

use super::auth::CallingHost;
use crate::store::trust::TokenRefusal;
use crate::AppState;
use chrono::{DateTime, Utc};
use skiff_proto as pb;
use skiff_proto::tls::incoming::TlsConnInfo;
use skiff_proto::tls::names::host_label;
use skiff_proto::tls::pki::{Issued, SigningRequest};
use skiff_proto::tls::Role;
use tonic::{Request, Status};

fn utc(at: std::time::SystemTime) -> DateTime<Utc> {
    DateTime::<Utc>::from(at)
}

/// A certificate for `host` to the key of `csr`, of the configured lifetime.
fn sign(state: &AppState, csr: &SigningRequest, host: &str) -> Result<Issued, Status> {
    state
        .trust
        .authority
        .issue_for(csr, &Role::Host(host.to_owned()), state.trust.lifetime)
        .map_err(|err| {
            tracing::error!(error = %err, "signing a host certificate failed");
            Status::internal("signing the host certificate failed")
        })
}

pub async fn join(
    state: &AppState,
    request: Request<pb::JoinRequest>,
) -> Result<pb::JoinResponse, Status> {
    let remote = request
        .extensions()
        .get::<TlsConnInfo>()
        .and_then(|info| info.remote);
    let req = request.into_inner();
    let label = host_label(&req.requested_name);
    // The request is checked before the token is touched: a bad one burns
    // no use.
    let csr = SigningRequest::parse(&req.csr_pem).map_err(|err| {
        tracing::warn!(target: "skiff::audit", ?remote, requested = %req.requested_name,
            error = %err, "join refused: bad certificate signing request");
        Status::invalid_argument(format!("csr_pem: {err}"))
    })?;
    let token_hash = crate::http::hash_token(&req.token);
    let joining = match state
        .store
        .begin_join(&token_hash, &label, &req.requested_name)
        .await?
    {
        Ok(joining) => joining,
        Err(refusal) => {
            tracing::warn!(target: "skiff::audit", ?remote, requested = %req.requested_name,
                reason = refusal.as_str(), "join refused: {}", refusal.describe());
            state
                .metrics
                .joins
                .with_label_values(&[refusal.as_str()])
                .inc();
            return Err(match refusal {
                TokenRefusal::Unknown => {
                    Status::unauthenticated(format!("join refused: {}", refusal.describe()))
                }
                _ => Status::permission_denied(format!("join refused: {}", refusal.describe())),
            });
        }
    };
    let host_id = joining.host_id.clone();
    let token_id = joining.token_id;
    let issued = sign(state, &csr, &host_id)?;
    state
        .store
        .finish_join(joining, &issued.serial, utc(issued.not_after))
        .await?;
    state.metrics.joins.with_label_values(&["joined"]).inc();
    tracing::info!(target: "skiff::audit", host = %host_id, requested = %req.requested_name,
        token = %token_id, serial = %issued.serial, ?remote, "host joined");
    Ok(pb::JoinResponse {
        host_id,
        certificate_pem: issued.cert_pem,
    })
}

pub async fn renew(
    state: &AppState,
    host: &CallingHost,
    req: pb::RenewRequest,
) -> Result<pb::RenewResponse, Status> {
    let csr = SigningRequest::parse(&req.csr_pem)
        .map_err(|err| Status::invalid_argument(format!("csr_pem: {err}")))?;
    let issued = sign(state, &csr, &host.id)?;
    state
        .store
        .record_certificate(&host.id, &issued.serial, utc(issued.not_after))
        .await?;
    tracing::info!(target: "skiff::audit", host = %host.id, old_serial = %host.cert.serial,
        serial = %issued.serial, "host certificate renewed");
    Ok(pb::RenewResponse {
        certificate_pem: issued.cert_pem,
    })
}
