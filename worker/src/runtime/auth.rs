//! Registry credentials on the worker: the login a pull presents, what
//! an authorization failure says, and the proofs that let a cached image
//! of a private registry be used.
//!
//! The worker's image cache is shared by every tenant whose containers run
//! on the host. An image pulled with credentials is marked private (a
//! label on its containerd record, [`LABEL_AUTH`]); a later use of it from
//! the cache must first show the registry would serve it to that caller:
//! a manifest request with the caller's own credentials (or none). A
//! success is remembered per (image, credential) for [`PROOF_TTL`], under
//! a salted hash of the credential that lives in memory only; so a restart
//! of a container costs no registry traffic within that time, and another
//! tenant never rides on a pull it could not make itself. A registry that
//! cannot be reached past a proof's time fails the start (the image is
//! private: the worker cannot tell that the caller may still read it).
//!
//! Layers are content-addressed and shared across images: someone who
//! knows a private layer's digest and serves a manifest naming it from a
//! registry of their own gets the cached layer. That is containerd's model
//! too; tenants who need more isolation need hosts of their own.

use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
use sha2::{Digest as _, Sha256};
use skiff_core::Password;
use skiff_proto as pb;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Label of an image record pulled with credentials: its cached copy is
/// used only after the caller's own authorization was checked.
pub const LABEL_AUTH: &str = "skiff.registry-auth";
/// [`LABEL_AUTH`]'s value.
pub const AUTH_REQUIRED: &str = "required";
/// How long a successful authorization check of a cached private image
/// stands for the same credential.
pub const PROOF_TTL: Duration = Duration::from_secs(600);

/// The credential a pull presents to one registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryLogin {
    /// `host[:port]`, lower case.
    pub server: String,
    pub username: String,
    pub password: Password,
}

impl RegistryLogin {
    /// The login an assignment or a prewarm carries (None: anonymous).
    pub fn from_pb(credential: Option<&pb::RegistryCredential>) -> Option<Self> {
        credential
            .filter(|c| !c.username.is_empty() || !c.password.is_empty())
            .map(|c| Self {
                server: c.server.to_ascii_lowercase(),
                username: c.username.clone(),
                password: Password::new(c.password.clone()),
            })
    }

    /// Basic auth, which oci-client also exchanges for a bearer token when
    /// the registry answers with a `Bearer` challenge.
    pub fn registry_auth(login: Option<&Self>) -> RegistryAuth {
        match login {
            Some(l) => RegistryAuth::Basic(l.username.clone(), l.password.expose().to_owned()),
            None => RegistryAuth::Anonymous,
        }
    }

    /// `message` with the password cut out, in case a registry or a
    /// library ever echoes it.
    pub fn redact(login: Option<&Self>, message: String) -> String {
        match login {
            Some(l) if !l.password.expose().is_empty() => {
                message.replace(l.password.expose(), "<redacted>")
            }
            _ => message,
        }
    }
}

/// What an authorization failure says, or None for any other error: the
/// message starts with "unauthorized" and says whether credentials were
/// given (never which).
pub fn unauthorized_message(
    e: &OciDistributionError,
    login: Option<&RegistryLogin>,
) -> Option<String> {
    let status = match e {
        OciDistributionError::UnauthorizedError { .. } => "HTTP 401",
        OciDistributionError::AuthenticationFailure(_) => "the token server refused",
        OciDistributionError::ServerError { code: 401, .. } => "HTTP 401",
        OciDistributionError::ServerError { code: 403, .. } => "HTTP 403",
        OciDistributionError::RegistryError { envelope, .. }
            if envelope.errors.iter().any(|e| {
                matches!(
                    e.code,
                    oci_client::errors::OciErrorCode::Unauthorized
                        | oci_client::errors::OciErrorCode::Denied
                )
            }) =>
        {
            "access denied"
        }
        _ => return None,
    };
    Some(match login {
        Some(l) => format!(
            "unauthorized: registry {} refused the credentials of user {:?} ({status})",
            l.server, l.username
        ),
        None => format!(
            "unauthorized: the registry requires credentials ({status}); give \
             image_registry_credentials, or store them with PUT /v1/registry-credentials/{{server}}"
        ),
    })
}

/// An image and the salted hash of a credential (None: anonymous).
type ProofKey = (String, Option<[u8; 32]>);

/// Recent successful authorization checks of cached private images, by
/// (image, salted hash of the credential or none).
pub struct Proofs {
    salt: [u8; 32],
    seen: Mutex<HashMap<ProofKey, Instant>>,
}

impl Default for Proofs {
    fn default() -> Self {
        Self {
            salt: rand::random(),
            seen: Mutex::new(HashMap::new()),
        }
    }
}

impl Proofs {
    fn key(&self, image: &str, login: Option<&RegistryLogin>) -> ProofKey {
        let hash = login.map(|l| {
            let mut h = Sha256::new();
            h.update(self.salt);
            for part in [&l.server, &l.username, l.password.expose()] {
                h.update((part.len() as u64).to_be_bytes());
                h.update(part.as_bytes());
            }
            h.finalize().into()
        });
        (image.to_owned(), hash)
    }

    /// Whether `login` was shown to read `image` within [`PROOF_TTL`].
    pub fn fresh(&self, image: &str, login: Option<&RegistryLogin>, now: Instant) -> bool {
        let key = self.key(image, login);
        let mut seen = self.seen.lock().expect("proofs lock");
        seen.retain(|_, at| now.duration_since(*at) < PROOF_TTL);
        seen.contains_key(&key)
    }

    /// Records that `login` may read `image` (a pull or a check succeeded).
    pub fn record(&self, image: &str, login: Option<&RegistryLogin>, now: Instant) {
        let key = self.key(image, login);
        self.seen.lock().expect("proofs lock").insert(key, now);
    }

    /// Forgets every proof of `image` (it was removed).
    pub fn forget(&self, image: &str) {
        self.seen
            .lock()
            .expect("proofs lock")
            .retain(|(name, _), _| name != image);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn login(user: &str, password: &str) -> RegistryLogin {
        RegistryLogin {
            server: "r.example:5000".into(),
            username: user.into(),
            password: Password::new(password),
        }
    }

    #[test]
    fn a_proof_stands_for_its_credential_and_image_only_and_expires() {
        let proofs = Proofs::default();
        let t0 = Instant::now();
        let a = login("a", "pa");
        proofs.record("img", Some(&a), t0);
        assert!(proofs.fresh("img", Some(&a), t0));
        assert!(!proofs.fresh("img", Some(&login("a", "other")), t0));
        assert!(!proofs.fresh("img", Some(&login("b", "pa")), t0));
        assert!(!proofs.fresh("img", None, t0));
        assert!(!proofs.fresh("other", Some(&a), t0));
        assert!(!proofs.fresh("img", Some(&a), t0 + PROOF_TTL));
        proofs.record("img", None, t0);
        proofs.forget("img");
        assert!(!proofs.fresh("img", None, t0));
    }

    #[test]
    fn logins_never_print_their_password_and_messages_are_redacted() {
        let l = login("bob", "hunter2");
        assert!(!format!("{l:?}").contains("hunter2"));
        let said = RegistryLogin::redact(Some(&l), "echo hunter2 back".into());
        assert_eq!(said, "echo <redacted> back");
        let pb = pb::RegistryCredential {
            server: "R.example".into(),
            username: "bob".into(),
            password: "hunter2".into(),
        };
        let from = RegistryLogin::from_pb(Some(&pb)).unwrap();
        assert_eq!(from.server, "r.example");
        assert_eq!(
            RegistryLogin::from_pb(Some(&pb::RegistryCredential::default())),
            None
        );
    }

    #[test]
    fn authorization_failures_say_unauthorized() {
        let e = OciDistributionError::UnauthorizedError { url: "u".into() };
        let with = unauthorized_message(&e, Some(&login("bob", "hunter2"))).unwrap();
        assert!(
            with.starts_with("unauthorized") && with.contains("bob"),
            "{with}"
        );
        assert!(!with.contains("hunter2"));
        let without = unauthorized_message(&e, None).unwrap();
        assert!(without.starts_with("unauthorized") && without.contains("requires credentials"));
        let other = OciDistributionError::ServerError {
            code: 500,
            url: "u".into(),
            message: "m".into(),
        };
        assert_eq!(unauthorized_message(&other, None), None);
    }
}
