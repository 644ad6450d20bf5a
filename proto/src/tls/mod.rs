//! How the two ends of the worker channel trust each other: mutual TLS with
//! certificates from the control plane's own CA.
//!
//! - [`names`]: what a certificate names (the control plane, or one host).
//! - [`pki`]: the CA, issuing certificates, a worker's key and request.
//! - [`credentials`]: a party's own certificate, renewable while in use.
//! - [`incoming`]: a TLS listener for tonic whose connections carry the
//!   verified peer ([`PeerCert`]) into every request's extensions.
//! - [`connect`]: a tonic channel over TLS that verifies the server's name.
//!
//! The crypto provider is *ring*, named explicitly: rustls has two compiled
//! in (through other crates), and would otherwise refuse to pick one.

pub mod connect;
pub mod credentials;
pub mod incoming;
pub mod names;
pub mod pki;

pub use credentials::{Credential, Credentials};
pub use names::{Role, CONTROL_PLANE_NAME};

use rustls::pki_types::CertificateDer;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    #[error("TLS: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("client verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    #[error("PEM: {0}")]
    Pem(String),
    #[error("certificate signing request: {0}")]
    BadRequest(String),
    #[error("the CA key matches no certificate in the CA bundle")]
    KeyNotInBundle,
    #[error("certificate does not parse: {0}")]
    Parse(String),
    #[error("certificate names no skiff role (control plane or host)")]
    NoRole,
}

pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

const ALPN_H2: &[u8] = b"h2";

fn roots(trust: &[CertificateDer<'static>]) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in trust {
        roots.add(cert.clone())?;
    }
    Ok(Arc::new(roots))
}

/// Whether a server lets clients without a certificate finish the
/// handshake (the control plane does, for `Join` only; each other call
/// checks for a peer certificate itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientCerts {
    Required,
    Optional,
}

/// A server that presents `own` and verifies client certificates (chain
/// to `trust`, validity period, client-auth usage) during the handshake.
pub fn server_config(
    trust: &[CertificateDer<'static>],
    own: Arc<Credentials>,
    clients: ClientCerts,
) -> Result<Arc<ServerConfig>, TlsError> {
    let verifier = WebPkiClientVerifier::builder_with_provider(roots(trust)?, provider());
    let verifier = match clients {
        ClientCerts::Required => verifier,
        ClientCerts::Optional => verifier.allow_unauthenticated(),
    }
    .build()?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(own);
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    // No session resumption: a resumed session carries the client
    // certificate of its first handshake, so a renewed (or expired)
    // certificate would not be seen. Every connection does a full handshake.
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

/// A client that verifies servers against `trust` and presents `own`, if any.
pub fn client_config(
    trust: &[CertificateDer<'static>],
    own: Option<Arc<Credentials>>,
) -> Result<Arc<ClientConfig>, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots(trust)?);
    let mut config = match own {
        Some(own) => builder.with_client_cert_resolver(own),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    // See server_config: every connection presents the credential in use now.
    config.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(config))
}

/// What the control plane reads from a verified peer certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerCert {
    pub role: Role,
    /// Lowercase hex of the serial number.
    pub serial: String,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

impl PeerCert {
    /// When a holder should renew: half-way through the validity period.
    pub fn renew_at(&self) -> SystemTime {
        let period = self
            .not_after
            .duration_since(self.not_before)
            .unwrap_or_default();
        self.not_before + period / 2
    }

    /// How long from now until [`PeerCert::renew_at`] (zero when past).
    pub fn renew_in(&self) -> Duration {
        self.renew_at()
            .duration_since(SystemTime::now())
            .unwrap_or_default()
    }
}

/// Reads a certificate's role (from its one skiff DNS name), serial and
/// expiry. Call it only on a certificate the TLS layer has verified.
pub fn peer_cert(der: &CertificateDer<'_>) -> Result<PeerCert, TlsError> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(der).map_err(|e| TlsError::Parse(e.to_string()))?;
    let mut roles = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(dns) = name {
                if let Some(role) = Role::from_dns_name(dns) {
                    roles.push(role);
                }
            }
        }
    }
    // Exactly one: a certificate naming two parties is not one of ours.
    let role = match <[Role; 1]>::try_from(roles) {
        Ok([role]) => role,
        Err(_) => return Err(TlsError::NoRole),
    };
    let time = |t: i64| SystemTime::UNIX_EPOCH + Duration::from_secs(t.max(0) as u64);
    Ok(PeerCert {
        role,
        serial: hex::encode(cert.raw_serial()),
        not_before: time(cert.validity().not_before.timestamp()),
        not_after: time(cert.validity().not_after.timestamp()),
    })
}

#[cfg(test)]
mod tests;
