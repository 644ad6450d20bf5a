//! Who is calling: every call on the workers' endpoint but `Join` is made
//! as the host its verified client certificate names, and only while that
//! certificate is one this control plane issued, unexpired and unrevoked,
//! of a host that is not revoked. The host's id never comes from a message.

use crate::store::trust::Standing;
use crate::AppState;
use skiff_proto::tls::incoming::TlsConnInfo;
use skiff_proto::tls::{PeerCert, Role};
use std::sync::Arc;
use std::time::SystemTime;
use tonic::{Request, Status};

/// The authenticated caller of a call.
#[derive(Debug, Clone)]
pub struct CallingHost {
    pub id: String,
    pub cert: Arc<PeerCert>,
}

/// Why a call's credential is refused, and the status the caller gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    NoCertificate,
    NotAHost,
    Expired,
    Revoked,
    NotIssued,
}

impl Refusal {
    pub const ALL: [Refusal; 5] = [
        Refusal::NoCertificate,
        Refusal::NotAHost,
        Refusal::Expired,
        Refusal::Revoked,
        Refusal::NotIssued,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::NoCertificate => "no_certificate",
            Refusal::NotAHost => "not_a_host",
            Refusal::Expired => "expired",
            Refusal::Revoked => "revoked",
            Refusal::NotIssued => "not_issued",
        }
    }

    pub fn status(self) -> Status {
        match self {
            Refusal::NoCertificate => Status::unauthenticated(
                "a host certificate is required: join with a join token first",
            ),
            Refusal::NotAHost => {
                Status::permission_denied("the certificate is not a host's certificate")
            }
            Refusal::Expired => Status::unauthenticated("the host certificate has expired"),
            Refusal::Revoked => Status::permission_denied("host revoked"),
            Refusal::NotIssued => {
                Status::unauthenticated("the host certificate was not issued by this control plane")
            }
        }
    }
}

/// The decision for a peer certificate (None: none presented) and its
/// standing in the store (asked only when the certificate names a host).
pub fn judge(
    peer: Option<&PeerCert>,
    standing: Option<Standing>,
    now: SystemTime,
) -> Result<String, Refusal> {
    let peer = peer.ok_or(Refusal::NoCertificate)?;
    let Role::Host(id) = &peer.role else {
        return Err(Refusal::NotAHost);
    };
    if peer.not_after <= now {
        return Err(Refusal::Expired);
    }
    match standing {
        Some(Standing::Valid) => Ok(id.clone()),
        Some(Standing::Revoked) => Err(Refusal::Revoked),
        Some(Standing::Unknown) | None => Err(Refusal::NotIssued),
    }
}

/// The calling host, or the refusal (counted and logged).
pub async fn calling_host<T>(
    state: &AppState,
    request: &Request<T>,
) -> Result<CallingHost, Status> {
    let peer = TlsConnInfo::of(request);
    let standing = match peer.as_deref() {
        Some(PeerCert {
            role: Role::Host(id),
            serial,
            ..
        }) => Some(state.store.certificate_standing(id, serial).await?),
        _ => None,
    };
    match judge(peer.as_deref(), standing, SystemTime::now()) {
        Ok(id) => Ok(CallingHost {
            id,
            cert: peer.expect("judged a present certificate"),
        }),
        Err(refusal) => {
            let remote = request
                .extensions()
                .get::<TlsConnInfo>()
                .and_then(|info| info.remote);
            tracing::warn!(target: "skiff::audit", reason = refusal.as_str(), ?remote,
                role = ?peer.as_deref().map(|p| &p.role), "worker call refused");
            state
                .metrics
                .calls_refused
                .with_label_values(&[refusal.as_str()])
                .inc();
            Err(refusal.status())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_call_counts_only_with_a_current_issued_unrevoked_host_certificate() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let cert = |role: Role, left_s: i64| PeerCert {
            role,
            serial: "01".into(),
            not_before: SystemTime::UNIX_EPOCH,
            not_after: if left_s >= 0 {
                now + Duration::from_secs(left_s as u64)
            } else {
                now - Duration::from_secs((-left_s) as u64)
            },
        };
        let host = cert(Role::Host("h1".into()), 60);
        type Case<'a> = (
            Option<&'a PeerCert>,
            Option<Standing>,
            Result<&'a str, Refusal>,
        );
        let cases: &[Case] = &[
            (Some(&host), Some(Standing::Valid), Ok("h1")),
            (None, None, Err(Refusal::NoCertificate)),
            (Some(&host), Some(Standing::Revoked), Err(Refusal::Revoked)),
            (
                Some(&host),
                Some(Standing::Unknown),
                Err(Refusal::NotIssued),
            ),
            (Some(&host), None, Err(Refusal::NotIssued)),
        ];
        for (peer, standing, want) in cases {
            let got = judge(*peer, *standing, now);
            assert_eq!(
                got.as_deref().map_err(|r| *r),
                *want,
                "{peer:?} {standing:?}"
            );
        }
        let cp = cert(Role::ControlPlane, 60);
        assert_eq!(
            judge(Some(&cp), Some(Standing::Valid), now),
            Err(Refusal::NotAHost)
        );
        // Expired while the connection stayed open (TLS checked it only at
        // the handshake).
        let old = cert(Role::Host("h1".into()), -1);
        assert_eq!(
            judge(Some(&old), Some(Standing::Valid), now),
            Err(Refusal::Expired)
        );
    }
}
