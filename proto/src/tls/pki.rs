//! The control plane's certificate authority and the keys and requests
//! around it: creating a CA (an explicit operator step, `skiff-api ca
//! init`), issuing a certificate for a [`Role`] to a public key proven by a
//! certificate signing request, and the key + request a worker makes.
//!
//! Keys are ECDSA P-256. A certificate names its holder only through the
//! DNS name of its role; whatever names a request asks for are ignored.

use super::names::Role;
use super::TlsError;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use std::time::{Duration, SystemTime};

/// Certificates are valid from a little before they are issued (a minute,
/// or a tenth of a short lifetime), so that a peer whose clock is slightly
/// behind accepts them.
fn backdate(lifetime: Duration) -> Duration {
    (lifetime / 10).min(Duration::from_secs(60))
}

/// A newly created CA, as PEM.
pub struct NewAuthority {
    pub cert_pem: String,
    pub key_pem: String,
}

/// Creates a CA certificate and key (valid `lifetime`).
pub fn create_authority(common_name: &str, lifetime: Duration) -> Result<NewAuthority, TlsError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    params.distinguished_name = name(common_name);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.serial_number = Some(serial());
    let now = SystemTime::now();
    params.not_before = (now - backdate(lifetime)).into();
    params.not_after = (now + lifetime).into();
    let cert = params.self_signed(&key)?;
    Ok(NewAuthority {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// A certificate the CA issued.
#[derive(Debug, Clone)]
pub struct Issued {
    pub cert_pem: String,
    /// Lowercase hex, as [`super::PeerCert::serial`] reads it back.
    pub serial: String,
    pub not_after: SystemTime,
}

/// The CA as the control plane holds it: the signing certificate and key,
/// and every CA certificate it trusts (the signing one, plus older ones
/// kept while a rotation is under way).
pub struct Authority {
    issuer: Issuer<'static, KeyPair>,
    trust: Vec<CertificateDer<'static>>,
    trust_pem: String,
}

impl Authority {
    /// `bundle_pem`: one or more CA certificates; the one whose public key
    /// is `key_pem`'s signs, all of them are trusted.
    pub fn load(bundle_pem: &str, key_pem: &str) -> Result<Self, TlsError> {
        let key = KeyPair::from_pem(key_pem)?;
        let trust = parse_certs(bundle_pem)?;
        let signing = trust
            .iter()
            .find(|der| {
                x509_parser::parse_x509_certificate(der)
                    .map(|(_, cert)| {
                        cert.public_key().subject_public_key.data == key.public_key_raw()
                    })
                    .unwrap_or(false)
            })
            .ok_or(TlsError::KeyNotInBundle)?
            .clone();
        let issuer = Issuer::from_ca_cert_der(&signing, key)?;
        Ok(Self {
            issuer,
            trust,
            trust_pem: bundle_pem.to_owned(),
        })
    }

    /// The CA certificates peers are verified against.
    pub fn trust(&self) -> &[CertificateDer<'static>] {
        &self.trust
    }

    pub fn trust_pem(&self) -> &str {
        &self.trust_pem
    }

    /// A certificate for `role` to the key that signed `csr_pem` (whose
    /// signature is checked), valid for `lifetime`.
    pub fn issue_for_request(
        &self,
        csr_pem: &str,
        role: &Role,
        lifetime: Duration,
    ) -> Result<Issued, TlsError> {
        self.issue_for(&SigningRequest::parse(csr_pem)?, role, lifetime)
    }

    /// A certificate for `role` to the key of a checked request.
    pub fn issue_for(
        &self,
        request: &SigningRequest,
        role: &Role,
        lifetime: Duration,
    ) -> Result<Issued, TlsError> {
        self.issue(&request.0.public_key, role, lifetime)
    }

    /// A certificate for `role` to `key`, valid for `lifetime`: usable as
    /// both a TLS client and server certificate.
    pub fn issue(
        &self,
        key: &impl rcgen::PublicKeyData,
        role: &Role,
        lifetime: Duration,
    ) -> Result<Issued, TlsError> {
        let dns = role.dns_name();
        let mut params = CertificateParams::default();
        params.distinguished_name = name(&dns);
        params.subject_alt_names = vec![SanType::DnsName(dns.as_str().try_into()?)];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        let serial = serial();
        let serial_hex = hex::encode(serial.to_bytes());
        params.serial_number = Some(serial);
        let now = SystemTime::now();
        let not_after = now + lifetime;
        params.not_before = (now - backdate(lifetime)).into();
        params.not_after = not_after.into();
        let cert = params.signed_by(key, &self.issuer)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            serial: serial_hex,
            // X.509 times have whole seconds.
            not_after: SystemTime::UNIX_EPOCH
                + Duration::from_secs(
                    not_after
                        .duration_since(SystemTime::UNIX_EPOCH)
                        .unwrap_or_default()
                        .as_secs(),
                ),
        })
    }

    /// A fresh key and a certificate for it (how a control-plane replica
    /// gets its own credential).
    pub fn issue_with_new_key(
        &self,
        role: &Role,
        lifetime: Duration,
    ) -> Result<(Issued, String), TlsError> {
        let key = KeyPair::generate()?;
        let issued = self.issue(&key, role, lifetime)?;
        Ok((issued, key.serialize_pem()))
    }
}

/// A certificate signing request whose signature has been checked (it
/// proves the requester holds the key).
pub struct SigningRequest(CertificateSigningRequestParams);

impl SigningRequest {
    pub fn parse(csr_pem: &str) -> Result<Self, TlsError> {
        if csr_pem.len() > 16 * 1024 {
            return Err(TlsError::BadRequest("larger than 16 KiB".into()));
        }
        CertificateSigningRequestParams::from_pem(csr_pem)
            .map(Self)
            .map_err(|e| TlsError::BadRequest(e.to_string()))
    }
}

/// A new private key (PEM) and a signing request for it (PEM). The request
/// names nothing: the CA decides the name.
pub fn key_and_request() -> Result<(String, String), TlsError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    let csr = params.serialize_request(&key)?.pem()?;
    Ok((key.serialize_pem(), csr))
}

/// Every certificate in a PEM bundle (at least one).
pub fn parse_certs(pem: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem(e.to_string()))?;
    if certs.is_empty() {
        return Err(TlsError::Pem("no certificate in it".into()));
    }
    Ok(certs)
}

fn name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "skiff");
    dn.push(DnType::CommonName, common_name);
    dn
}

/// 16 random bytes, positive (the top bit clear) and not starting with a
/// zero byte, so that DER keeps all 16 and the hex is stable.
fn serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] = (bytes[0] & 0x7f).max(1);
    SerialNumber::from_slice(&bytes)
}
