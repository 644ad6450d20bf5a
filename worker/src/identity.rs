//! This host's identity: the key it made and the certificate the control
//! plane's CA issued for it, kept together in `<state dir>/identity/host.pem`
//! (mode 0600, replaced atomically: never a key without its certificate).
//!
//! At the first start (no certificate yet) the worker joins: it makes a key
//! and a signing request and trades them, with a join token, for a
//! certificate naming the host id the control plane granted. From then on
//! it uses that certificate, and renews it over the authenticated channel
//! half-way through its validity ([`renew`]), swapping it in while servers
//! and clients run.

use crate::agent::{AgentError, ControlPlanes};
use crate::config::WorkerConfig;
use crate::metrics::WorkerMetrics;
use backon::{ExponentialBuilder, Retryable};
use rustls::pki_types::CertificateDer;
use skiff_proto as pb;
use skiff_proto::control_plane_client::ControlPlaneClient;
use skiff_proto::tls::{
    self, connect, Credential, Credentials, Role, TlsError, CONTROL_PLANE_NAME,
};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio_util::sync::CancellationToken;

/// How long a join keeps trying while no control plane answers.
const JOIN_PATIENCE: Duration = Duration::from_secs(120);

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}: {source}")]
    Tls {
        what: &'static str,
        #[source]
        source: TlsError,
    },
    #[error(
        "no host certificate in {dir} and no join token: set SKIFF_JOIN_TOKEN \
         (an admin creates one with POST /v1/admin/join-tokens)"
    )]
    NoCredential { dir: PathBuf },
    #[error(
        "the host certificate in {dir} expired at {expired:?} and there is no join token to join \
         again with: set SKIFF_JOIN_TOKEN"
    )]
    Expired { dir: PathBuf, expired: SystemTime },
    #[error("the certificate in {dir} is not a host certificate")]
    NotAHost { dir: PathBuf },
    #[error("join refused by the control plane: {0}")]
    JoinRefused(String),
    #[error("no control plane answered the join within {patience:?}: {last}")]
    Unreachable { patience: Duration, last: String },
    #[error(transparent)]
    Agent(#[from] AgentError),
}

fn tls_err(what: &'static str) -> impl Fn(TlsError) -> IdentityError {
    move |source| IdentityError::Tls { what, source }
}

/// Who this host is and what it trusts.
pub struct Identity {
    pub host_id: String,
    pub credentials: Arc<Credentials>,
    pub trust: Vec<CertificateDer<'static>>,
    dir: PathBuf,
}

impl Identity {
    /// The identity kept in the state dir, or a new one from a join.
    pub async fn establish(config: &WorkerConfig) -> Result<Self, IdentityError> {
        let ca = read(&config.ca_cert)?;
        let trust = tls::pki::parse_certs(&ca).map_err(tls_err("SKIFF_CA_CERT"))?;
        let dir = config.state_dir.join("identity");
        let credential = match load(&dir)? {
            Some(credential) if credential.cert.not_after > SystemTime::now() => credential,
            found => {
                let Some(token) = config.join_token.as_deref() else {
                    return Err(match found {
                        Some(old) => IdentityError::Expired {
                            dir,
                            expired: old.cert.not_after,
                        },
                        None => IdentityError::NoCredential { dir },
                    });
                };
                if found.is_some() {
                    tracing::warn!("the host certificate expired unrenewed: joining again");
                }
                let credential =
                    join(&config.control_plane, &trust, token, &config.host_id()).await?;
                save(&dir, &credential)?;
                credential
            }
        };
        let Role::Host(host_id) = credential.cert.role.clone() else {
            return Err(IdentityError::NotAHost { dir });
        };
        tracing::info!(host = %host_id, serial = %credential.cert.serial,
            not_after = ?credential.cert.not_after, "host identity");
        Ok(Self {
            host_id,
            credentials: Credentials::new(credential),
            trust,
            dir,
        })
    }

    /// Dialing the control plane: verifies it, presents this host.
    pub fn client_config(&self) -> Result<Arc<rustls::ClientConfig>, IdentityError> {
        tls::client_config(&self.trust, Some(self.credentials.clone()))
            .map_err(tls_err("client TLS"))
    }

    /// The agent endpoint: only the control plane's certificate gets in.
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, IdentityError> {
        tls::server_config(
            &self.trust,
            self.credentials.clone(),
            tls::ClientCerts::Required,
        )
        .map_err(tls_err("agent TLS"))
    }
}

/// Trades a join token and a new key's signing request for a certificate,
/// trying each replica until one answers. A refusal is final.
async fn join(
    addrs: &[String],
    trust: &[CertificateDer<'static>],
    token: &str,
    requested: &str,
) -> Result<Credential, IdentityError> {
    let (key_pem, csr_pem) = tls::pki::key_and_request().map_err(tls_err("making a key"))?;
    let config = tls::client_config(trust, None).map_err(tls_err("client TLS"))?;
    let request = pb::JoinRequest {
        token: token.to_owned(),
        requested_name: requested.to_owned(),
        csr_pem,
    };
    // Each round tries every replica once; only "nobody answered" is
    // retried (with back-off, for JOIN_PATIENCE): a refusal is final.
    let round = || async {
        let mut last = String::new();
        for addr in addrs {
            let channel = connect::channel(
                addr,
                config.clone(),
                CONTROL_PLANE_NAME,
                Duration::from_secs(3),
            )
            .map_err(AgentError::from)?;
            match ControlPlaneClient::new(channel).join(request.clone()).await {
                Ok(response) => {
                    let response = response.into_inner();
                    let credential = Credential::from_pem(&response.certificate_pem, &key_pem)
                        .map_err(tls_err("the certificate granted"))?;
                    tracing::info!(host = %response.host_id, control_plane = %addr, "joined the pool");
                    return Ok(credential);
                }
                Err(status)
                    if matches!(
                        status.code(),
                        tonic::Code::PermissionDenied
                            | tonic::Code::Unauthenticated
                            | tonic::Code::InvalidArgument
                    ) =>
                {
                    return Err(IdentityError::JoinRefused(status.message().to_owned()));
                }
                Err(status) => {
                    tracing::warn!(control_plane = %addr, %status, "join failed; trying again");
                    last = format!("{addr}: {status}");
                }
            }
        }
        Err(IdentityError::Unreachable {
            patience: JOIN_PATIENCE,
            last,
        })
    };
    round
        .retry(
            ExponentialBuilder::default()
                .with_min_delay(Duration::from_millis(200))
                .with_max_delay(Duration::from_secs(5))
                .with_total_delay(Some(JOIN_PATIENCE))
                .without_max_times(),
        )
        .when(|err| matches!(err, IdentityError::Unreachable { .. }))
        .await
}

/// Renews the certificate half-way through its validity, until `cancel`:
/// a new key each time, the files replaced, the credential swapped in, and
/// new channels to the control plane.
pub async fn renew(
    identity: Arc<Identity>,
    control: Arc<ControlPlanes>,
    metrics: Arc<WorkerMetrics>,
    cancel: CancellationToken,
) {
    let mut delay = Duration::from_secs(1);
    loop {
        let current = identity.credentials.current();
        metrics.set_certificate_expiry(current.cert.not_after);
        let wait = current.cert.renew_in();
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        match renew_once(&identity, &control).await {
            Ok(renewed) => {
                tracing::info!(serial = %renewed.cert.serial, not_after = ?renewed.cert.not_after,
                    "host certificate renewed");
                delay = Duration::from_secs(1);
            }
            Err(err) => {
                tracing::warn!(error = %err, expires = ?current.cert.not_after,
                    "renewing the host certificate failed; trying again");
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(Duration::from_secs(30));
            }
        }
    }
}

async fn renew_once(
    identity: &Identity,
    control: &ControlPlanes,
) -> Result<Credential, IdentityError> {
    let (key_pem, csr_pem) = tls::pki::key_and_request().map_err(tls_err("making a key"))?;
    let response = control
        .current()
        .1
        .renew(pb::RenewRequest { csr_pem })
        .await
        .map_err(|status| IdentityError::JoinRefused(format!("renewal: {status}")))?
        .into_inner();
    let credential = Credential::from_pem(&response.certificate_pem, &key_pem)
        .map_err(tls_err("the renewed certificate"))?;
    if credential.cert.role != Role::Host(identity.host_id.clone()) {
        return Err(IdentityError::NotAHost {
            dir: identity.dir.clone(),
        });
    }
    save(&identity.dir, &credential)?;
    identity.credentials.replace(credential.clone());
    control.reconnect()?;
    Ok(credential)
}

const FILE: &str = "host.pem";

fn read(path: &Path) -> Result<String, IdentityError> {
    std::fs::read_to_string(path).map_err(|source| IdentityError::Io {
        path: path.to_owned(),
        source,
    })
}

/// The kept credential, if there is one.
fn load(dir: &Path) -> Result<Option<Credential>, IdentityError> {
    let path = dir.join(FILE);
    if !path.exists() {
        return Ok(None);
    }
    // One file, certificate then key: each parser takes its own sections.
    let pem = read(&path)?;
    Credential::from_pem(&pem, &pem)
        .map(Some)
        .map_err(tls_err("the kept host certificate"))
}

/// Writes certificate and key to one file (0600) through a temporary file
/// renamed over the old one.
fn save(dir: &Path, credential: &Credential) -> Result<(), IdentityError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| IdentityError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let path = dir.join(FILE);
    let tmp = dir.join(format!(".{FILE}.tmp"));
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io(&tmp))?;
    let contents = format!("{}{}", credential.cert_pem, credential.key_pem);
    file.write_all(contents.as_bytes()).map_err(io(&tmp))?;
    file.sync_all().map_err(io(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(io(&path))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saved_credential_loads_back_from_one_private_file() {
        use std::os::unix::fs::PermissionsExt;
        let ca = tls::pki::create_authority("t", Duration::from_secs(600)).unwrap();
        let ca = tls::pki::Authority::load(&ca.cert_pem, &ca.key_pem).unwrap();
        let (issued, key) = ca
            .issue_with_new_key(&Role::Host("h1".into()), Duration::from_secs(600))
            .unwrap();
        let credential = Credential::from_pem(&issued.cert_pem, &key).unwrap();
        let dir = std::env::temp_dir().join(format!("skiff-identity-{}", uuid::Uuid::new_v4()));
        assert!(load(&dir).unwrap().is_none());
        save(&dir, &credential).unwrap();
        save(&dir, &credential).unwrap();
        let loaded = load(&dir).unwrap().unwrap();
        assert_eq!(loaded.cert, credential.cert);
        let mode = std::fs::metadata(dir.join(FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
