//! The control plane's side of the worker channel's trust: the CA it loads
//! (created beforehand by `skiff-api ca init`, never implicitly), this
//! replica's own certificate (issued to itself from the CA at start and
//! renewed at half-life), and the TLS configurations of the workers'
//! endpoint and of the client that dials the agents.

use crate::config::ApiConfig;
use rustls::pki_types::CertificateDer;
use skiff_proto::tls::{
    self, pki::Authority, ClientCerts, Credential, Credentials, Role, TlsError,
};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error(
        "reading the CA at {path}: {source} (create one with `skiff-api ca init --dir DIR` \
         and set SKIFF_CA_CERT and SKIFF_CA_KEY)"
    )]
    CaMissing {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path} is readable by group or others (mode {mode:o}); a private key must be 0600: chmod 600 {path}"
    )]
    KeyMode { path: PathBuf, mode: u32 },
    #[error("{path} already exists: refusing to overwrite a CA (see README, rotating the CA)")]
    Exists { path: PathBuf },
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// What the control plane trusts and presents.
pub struct Trust {
    pub authority: Authority,
    /// This replica's own certificate (role: the control plane).
    pub own: Arc<Credentials>,
    pub lifetime: Duration,
}

impl Trust {
    /// Loads the CA from the configured paths and issues this replica its
    /// own certificate.
    pub fn load(config: &ApiConfig) -> Result<Self, TrustError> {
        let ca_missing = |err: TrustError| match err {
            TrustError::Read { path, source } => TrustError::CaMissing { path, source },
            other => other,
        };
        let bundle = read(&config.ca_cert).map_err(ca_missing)?;
        check_private(&config.ca_key).map_err(ca_missing)?;
        let key = read(&config.ca_key).map_err(ca_missing)?;
        let authority = Authority::load(&bundle, &key)?;
        let lifetime = config.host_cert_lifetime();
        let own = Credentials::new(own_credential(&authority, lifetime)?);
        Ok(Self {
            authority,
            own,
            lifetime,
        })
    }

    pub fn trusted(&self) -> &[CertificateDer<'static>] {
        self.authority.trust()
    }

    /// The workers' endpoint: a client certificate is optional in the
    /// handshake (`Join` is made without one); every other call requires it.
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        tls::server_config(self.trusted(), self.own.clone(), ClientCerts::Optional)
    }

    /// Dialing an agent: presents this replica's certificate.
    pub fn agent_client_config(&self) -> Result<Arc<rustls::ClientConfig>, TlsError> {
        tls::client_config(self.trusted(), Some(self.own.clone()))
    }

    /// Renews this replica's own certificate at half its lifetime, until
    /// `cancel`.
    pub async fn renew_own(self: Arc<Self>, cancel: CancellationToken) {
        loop {
            let wait = self.own.current().cert.renew_in();
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            match own_credential(&self.authority, self.lifetime) {
                Ok(credential) => {
                    tracing::info!(serial = %credential.cert.serial, "control plane certificate renewed");
                    self.own.replace(credential);
                }
                Err(err) => {
                    tracing::error!(error = %err, "renewing the control plane's certificate failed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }
}

/// TLS for the public REST API from a certificate chain and key (PEM
/// files): no client certificates; HTTP/2 and HTTP/1.1.
pub fn rest_tls_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TrustError> {
    use rustls::pki_types::pem::PemObject;
    let chain = tls::pki::parse_certs(&read(cert)?)?;
    check_private(key)?;
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(read(key)?.as_bytes())
        .map_err(|e| TlsError::Pem(e.to_string()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::from)?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(TlsError::from)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn own_credential(authority: &Authority, lifetime: Duration) -> Result<Credential, TlsError> {
    let (issued, key_pem) = authority.issue_with_new_key(&Role::ControlPlane, lifetime)?;
    Credential::from_pem(&issued.cert_pem, &key_pem)
}

fn read(path: &Path) -> Result<String, TrustError> {
    std::fs::read_to_string(path).map_err(|source| TrustError::Read {
        path: path.to_owned(),
        source,
    })
}

fn check_private(path: &Path) -> Result<(), TrustError> {
    let mode = std::fs::metadata(path)
        .map_err(|source| TrustError::Read {
            path: path.to_owned(),
            source,
        })?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(TrustError::KeyMode {
            path: path.to_owned(),
            mode: mode & 0o777,
        });
    }
    Ok(())
}

/// `skiff-api ca init`: writes `ca.crt` and `ca.key` (0600) into `dir`,
/// refusing to overwrite either. Returns their paths.
pub fn init_ca(dir: &Path, lifetime: Duration) -> Result<(PathBuf, PathBuf), TrustError> {
    let (cert_path, key_path) = (dir.join("ca.crt"), dir.join("ca.key"));
    for path in [&cert_path, &key_path] {
        if path.exists() {
            return Err(TrustError::Exists { path: path.clone() });
        }
    }
    std::fs::create_dir_all(dir).map_err(|source| TrustError::Write {
        path: dir.to_owned(),
        source,
    })?;
    // A name of its own, so that another installation's CA is told apart
    // by name (UnknownCA), not only by a failing signature.
    let name = format!(
        "skiff worker channel CA {}",
        hex::encode(rand::random::<[u8; 6]>())
    );
    let ca = tls::pki::create_authority(&name, lifetime)?;
    write_new(&key_path, &ca.key_pem, 0o600)?;
    write_new(&cert_path, &ca.cert_pem, 0o644)?;
    Ok((cert_path, key_path))
}

fn write_new(path: &Path, contents: &str, mode: u32) -> Result<(), TrustError> {
    use std::io::Write;
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(path)?;
        file.write_all(contents.as_bytes())?;
        file.sync_all()
    };
    write().map_err(|source| TrustError::Write {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_init_writes_a_private_key_and_refuses_to_overwrite() {
        let dir = std::env::temp_dir().join(format!("skiff-ca-{}", uuid::Uuid::new_v4()));
        let (cert, key) = init_ca(&dir, Duration::from_secs(86_400)).unwrap();
        let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(check_private(&key).is_ok());
        Authority::load(&read(&cert).unwrap(), &read(&key).unwrap()).unwrap();
        assert!(matches!(
            init_ca(&dir, Duration::from_secs(86_400)),
            Err(TrustError::Exists { .. })
        ));
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(matches!(
            check_private(&key),
            Err(TrustError::KeyMode { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
