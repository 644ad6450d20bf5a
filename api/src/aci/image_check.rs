//! The admission check of a group's images: for an image of a registry
//! the operator named (`SKIFF_ACI_CHECK_REGISTRIES`, the ones the workers
//! pull from), a manifest request with the credentials a pull would use
//! (the request's, else the tenant's stored one). A registry that answers
//! "no such manifest" or refuses the credentials makes the PUT fail at
//! once with ACI's `InaccessibleImage`; a registry that cannot be reached
//! (or answers 5xx) is no verdict: the group is accepted and its pull
//! fails later if it must. Images of registries not named are not checked:
//! the API server reaches no other registry.

use super::arm::ArmError;
use axum::http::StatusCode;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use oci_client::Reference;
use std::time::Duration;

/// The registries to check, from the configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckedRegistries {
    /// `host[:port]`, lower case.
    pub https: Vec<String>,
    pub plain_http: Vec<String>,
}

impl CheckedRegistries {
    /// Reads `host[:port]` (HTTPS) and `http://host[:port]` entries.
    pub fn parse(entries: &[String]) -> Self {
        let mut out = Self::default();
        for e in entries.iter().map(|e| e.trim()).filter(|e| !e.is_empty()) {
            let lower = e.trim_end_matches('/').to_ascii_lowercase();
            if let Some(host) = lower.strip_prefix("http://") {
                out.plain_http.push(host.to_owned());
            } else {
                out.https
                    .push(lower.strip_prefix("https://").unwrap_or(&lower).to_owned());
            }
        }
        out
    }

    fn checks(&self, registry: &str) -> bool {
        let r = registry.to_ascii_lowercase();
        self.https.contains(&r) || self.plain_http.contains(&r)
    }
}

/// What the registry said of an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// It serves the manifest to these credentials.
    Pullable,
    /// It said no: no such repository or tag, or not to these credentials.
    Inaccessible(&'static str),
    /// Not checked, or no answer that decides (unreachable, 5xx).
    Unknown,
}

/// The verdict an error of oci-client's is.
pub fn verdict_of(e: &OciDistributionError) -> Verdict {
    match e {
        OciDistributionError::UnauthorizedError { .. }
        | OciDistributionError::AuthenticationFailure(_) => {
            Verdict::Inaccessible("the registry refused the credentials")
        }
        OciDistributionError::ImageManifestNotFoundError(_) => {
            Verdict::Inaccessible("the registry has no such manifest")
        }
        OciDistributionError::ServerError { code, .. } => match code {
            401 | 403 => Verdict::Inaccessible("the registry refused the credentials"),
            404 => Verdict::Inaccessible("the registry has no such manifest"),
            _ => Verdict::Unknown,
        },
        OciDistributionError::RegistryError { envelope, .. } => {
            let codes: Vec<&OciErrorCode> = envelope.errors.iter().map(|e| &e.code).collect();
            if codes
                .iter()
                .any(|c| matches!(c, OciErrorCode::Unauthorized | OciErrorCode::Denied))
            {
                Verdict::Inaccessible("the registry refused the credentials")
            } else if codes.iter().any(|c| {
                matches!(
                    c,
                    OciErrorCode::ManifestUnknown
                        | OciErrorCode::NameUnknown
                        | OciErrorCode::NotFound
                )
            }) {
                Verdict::Inaccessible("the registry has no such manifest")
            } else {
                Verdict::Unknown
            }
        }
        _ => Verdict::Unknown,
    }
}

/// Asks the registry of `image` (when it is one to check) for its
/// manifest with `login` (user, password).
pub async fn check(
    registries: &CheckedRegistries,
    image: &str,
    login: Option<(String, String)>,
) -> Verdict {
    let Ok(reference) = image.parse::<Reference>() else {
        return Verdict::Unknown;
    };
    let registry = reference.resolve_registry().to_owned();
    if !registries.checks(&registry) {
        return Verdict::Unknown;
    }
    // A client per check: oci-client keeps the first credential it saw
    // for a registry.
    let client = oci_client::Client::new(ClientConfig {
        protocol: ClientProtocol::HttpsExcept(registries.plain_http.clone()),
        platform_resolver: Some(Box::new(oci_client::client::linux_amd64_resolver)),
        connect_timeout: Some(Duration::from_secs(5)),
        read_timeout: Some(Duration::from_secs(10)),
        ..ClientConfig::default()
    });
    let auth = match login {
        Some((user, password)) => RegistryAuth::Basic(user, password),
        None => RegistryAuth::Anonymous,
    };
    let asked = client.fetch_manifest_digest(&reference, &auth);
    match tokio::time::timeout(Duration::from_secs(20), asked).await {
        Ok(Ok(_)) => Verdict::Pullable,
        Ok(Err(e)) => {
            let v = verdict_of(&e);
            if v == Verdict::Unknown {
                tracing::info!(%image, error = %e, "image check: no verdict; the pull will tell");
            }
            v
        }
        Err(_) => Verdict::Unknown,
    }
}

/// The ARM refusal of an inaccessible image.
pub fn inaccessible(index: usize, image: &str, why: &str) -> ArmError {
    ArmError::new(
        StatusCode::BAD_REQUEST,
        "InaccessibleImage",
        format!(
            "The image '{image}' in container group is not accessible: {why}. Please check the image and registry credential."
        ),
    )
    .at(format!("properties.containers[{index}].properties.image"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registries_to_check() {
        let r = CheckedRegistries::parse(&[
            "http://127.0.0.1:5001".into(),
            " Registry.Example.com ".into(),
            "https://ghcr.io/".into(),
            "".into(),
        ]);
        assert_eq!(r.plain_http, ["127.0.0.1:5001"]);
        assert_eq!(r.https, ["registry.example.com", "ghcr.io"]);
        assert!(r.checks("REGISTRY.example.com"));
        assert!(!r.checks("docker.io"));
    }

    #[test]
    fn verdicts() {
        let server = |code| OciDistributionError::ServerError {
            code,
            url: "u".into(),
            message: "m".into(),
        };
        #[rustfmt::skip]
        let rows = [
            (server(404), true),
            (server(401), true),
            (server(500), false),
            (OciDistributionError::UnauthorizedError { url: "u".into() }, true),
            (OciDistributionError::AuthenticationFailure("no".into()), true),
            (OciDistributionError::GenericError(None), false),
        ];
        for (e, inaccessible) in rows {
            let v = verdict_of(&e);
            assert_eq!(matches!(v, Verdict::Inaccessible(_)), inaccessible, "{e:?}");
        }
    }
}
