//! A party's own certificate and key, replaceable while in use: servers and
//! clients built on [`Credentials`] pick up a renewed certificate on their
//! next handshake, with no restart and no reconnect of what is open.

use super::{peer_cert, TlsError};
use rustls::client::ResolvesClientCert;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::SignatureScheme;
use std::sync::{Arc, RwLock};

/// One certificate and its key, as PEM and as rustls uses them.
#[derive(Clone)]
pub struct Credential {
    pub cert_pem: String,
    pub key_pem: String,
    /// What the certificate says (its role, serial, validity).
    pub cert: super::PeerCert,
    key: Arc<CertifiedKey>,
}

impl Credential {
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, TlsError> {
        let certs = super::pki::parse_certs(cert_pem)?;
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|e| TlsError::Pem(e.to_string()))?;
        let signing = rustls::crypto::ring::sign::any_supported_type(&key)?;
        let parsed = peer_cert(&certs[0])?;
        let key = Arc::new(CertifiedKey::new(certs, signing));
        key.keys_match()?;
        Ok(Self {
            cert_pem: cert_pem.to_owned(),
            key_pem: key_pem.to_owned(),
            cert: parsed,
            key,
        })
    }

    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.key.cert[0]
    }
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("cert", &self.cert)
            .finish_non_exhaustive()
    }
}

/// The credential in use, swapped atomically on renewal.
#[derive(Debug)]
pub struct Credentials(RwLock<Credential>);

impl Credentials {
    pub fn new(credential: Credential) -> Arc<Self> {
        Arc::new(Self(RwLock::new(credential)))
    }

    pub fn current(&self) -> Credential {
        self.0.read().expect("credentials lock").clone()
    }

    pub fn replace(&self, credential: Credential) {
        *self.0.write().expect("credentials lock") = credential;
    }

    fn key(&self) -> Arc<CertifiedKey> {
        self.0.read().expect("credentials lock").key.clone()
    }
}

impl ResolvesServerCert for Credentials {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.key())
    }
}

impl ResolvesClientCert for Credentials {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.key())
    }

    fn has_certs(&self) -> bool {
        true
    }
}
