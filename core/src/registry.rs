//! Credentials for private image registries: what a tenant hands over for
//! a pull (`server`, `username`, `password`), checked, and a password type
//! that never prints and never serializes.
//!
//! A credential applies to an image when its `server` is the image
//! reference's registry host (`host[:port]`, compared case-insensitively:
//! servers are kept in lower case).

use crate::image::is_registry_host;
use crate::{FieldError, ImageRef};

/// Longest `server` (a registry `host[:port]`).
pub const MAX_SERVER_LEN: usize = 255;
/// Longest `username`.
pub const MAX_USERNAME_LEN: usize = 255;
/// Longest `password` (characters): room for a cloud key file as password.
pub const MAX_PASSWORD_LEN: usize = 8192;
/// Most credentials in one request.
pub const MAX_REQUEST_CREDENTIALS: usize = 16;

/// The JSON Schema pattern of a `username`: no `:` (basic auth splits on
/// it) and no control characters.
pub const USERNAME_PATTERN: &str = r"^[^:\u0000-\u001f\u007f]+$";

/// A registry password (or token). Its `Debug` is redacted and it has no
/// `Serialize`: it leaves only as a basic-auth header on a pull.
#[derive(Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct Password(String);

impl Password {
    pub fn new(password: impl Into<String>) -> Self {
        Self(password.into())
    }

    /// The plain text, for the one place that needs it (sealing, a pull).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// One registry credential, as a request gives it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryCredential {
    pub server: String,
    pub username: String,
    pub password: Password,
}

/// A `server`, checked and in its stored spelling (lower case); `field`
/// names it in the error.
pub fn normalize_server(field: &str, server: &str) -> Result<String, FieldError> {
    if server.is_empty() || server.len() > MAX_SERVER_LEN || !is_registry_host(server) {
        return Err(FieldError::new(
            field,
            "must be a registry host[:port] as an image reference names it (e.g. registry.example.com or 127.0.0.1:5000), at most 255 characters",
        ));
    }
    Ok(server.to_ascii_lowercase())
}

/// A `username`: 1 to 255 characters, no `:` and no control characters.
pub fn check_username(field: &str, username: &str) -> Result<(), FieldError> {
    let n = username.chars().count();
    // (C0 and DEL, as USERNAME_PATTERN: not C1, which `is_control` counts)
    let bad = |c: char| c == ':' || c < ' ' || c == '\u{7f}';
    if n == 0 || n > MAX_USERNAME_LEN || username.chars().any(bad) {
        return Err(FieldError::new(
            field,
            "must be 1 to 255 characters, without ':' or control characters",
        ));
    }
    Ok(())
}

/// A `password`: 1 to 8192 characters.
pub fn check_password(field: &str, password: &Password) -> Result<(), FieldError> {
    let n = password.0.chars().count();
    if n == 0 || n > MAX_PASSWORD_LEN {
        return Err(FieldError::new(field, "must be 1 to 8192 characters"));
    }
    Ok(())
}

impl RegistryCredential {
    /// Checks every field (named under `at`, e.g.
    /// `image_registry_credentials[0]`) and lower-cases `server`.
    pub fn checked(mut self, at: &str) -> Result<Self, FieldError> {
        self.server = normalize_server(&format!("{at}.server"), &self.server)?;
        check_username(&format!("{at}.username"), &self.username)?;
        check_password(&format!("{at}.password"), &self.password)?;
        Ok(self)
    }
}

/// The registry host whose credential an image needs (lower case), or
/// None when the reference does not parse.
pub fn registry_of(image: &str) -> Option<String> {
    ImageRef::parse(image)
        .ok()
        .map(|r| r.registry.to_ascii_lowercase())
}

/// Checks a request's `image_registry_credentials` (`field`) and picks the
/// one for `image`'s registry: at most 16, each valid, no server twice
/// (422); those for other registries are checked and dropped.
pub fn pick_for_image(
    field: &str,
    image: &str,
    credentials: Vec<RegistryCredential>,
) -> Result<Option<RegistryCredential>, FieldError> {
    if credentials.len() > MAX_REQUEST_CREDENTIALS {
        return Err(FieldError::new(field, "at most 16 credentials"));
    }
    let registry = registry_of(image);
    let mut seen = std::collections::BTreeSet::new();
    let mut picked = None;
    for (i, credential) in credentials.into_iter().enumerate() {
        let at = format!("{field}[{i}]");
        let credential = credential.checked(&at)?;
        if !seen.insert(credential.server.clone()) {
            return Err(FieldError::unprocessable(
                format!("{at}.server"),
                "names a server an earlier credential names",
            ));
        }
        if registry.as_deref() == Some(credential.server.as_str()) {
            picked = Some(credential);
        }
    }
    Ok(picked)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FieldErrorKind;

    fn cred(server: &str, username: &str, password: &str) -> RegistryCredential {
        RegistryCredential {
            server: server.into(),
            username: username.into(),
            password: Password::new(password),
        }
    }

    #[test]
    fn passwords_never_print() {
        let c = cred("r.example", "bob", "hunter2");
        let shown = format!("{c:?}");
        assert!(
            shown.contains("bob") && !shown.contains("hunter2"),
            "{shown}"
        );
    }

    #[test]
    fn servers_are_registry_hosts_in_lower_case() {
        assert_eq!(
            normalize_server("s", "Registry.Example.COM:5000").unwrap(),
            "registry.example.com:5000"
        );
        assert_eq!(normalize_server("s", "localhost").unwrap(), "localhost");
        for bad in [
            "",
            "https://r.example",
            "r.example/path",
            "a..b",
            "-a.b",
            "r:x",
        ] {
            assert_eq!(normalize_server("s", bad).unwrap_err().field, "s", "{bad}");
        }
        assert!(normalize_server("s", &"a".repeat(256)).is_err());
    }

    #[test]
    fn usernames_and_passwords_are_bounded() {
        assert!(check_username("u", "bob").is_ok());
        for bad in ["", "a:b", "a\nb", &"u".repeat(256)] {
            assert!(check_username("u", bad).is_err(), "{bad:?}");
        }
        assert!(check_password("p", &Password::new("x")).is_ok());
        assert!(check_password("p", &Password::new("")).is_err());
        assert!(check_password("p", &Password::new("x".repeat(8193))).is_err());
    }

    #[test]
    fn the_credential_of_the_image_registry_is_picked() {
        let image = "Registry.Example:5000/team/app:1";
        let picked = pick_for_image(
            "creds",
            image,
            vec![
                cred("other.example", "a", "1"),
                cred("registry.example:5000", "b", "2"),
            ],
        )
        .unwrap()
        .unwrap();
        assert_eq!(picked.username, "b");
        // None matches: none is kept.
        let none = pick_for_image("creds", image, vec![cred("other.example", "a", "1")]);
        assert_eq!(none.unwrap(), None);
        // An image without a host is Docker Hub's.
        let hub = pick_for_image("creds", "busybox", vec![cred("docker.io", "a", "1")]);
        assert!(hub.unwrap().is_some());
    }

    #[test]
    fn bad_and_repeated_credentials_are_named() {
        let err = pick_for_image("creds", "r.example/a", vec![cred("r.example", "a:b", "1")])
            .unwrap_err();
        assert_eq!(err.field, "creds[0].username");
        let err = pick_for_image(
            "creds",
            "r.example/a",
            vec![cred("R.example", "a", "1"), cred("r.example", "b", "2")],
        )
        .unwrap_err();
        assert_eq!(
            (err.field.as_str(), err.kind),
            ("creds[1].server", FieldErrorKind::Unprocessable)
        );
        let many = (0..17)
            .map(|i| cred(&format!("r{i}.example"), "a", "1"))
            .collect();
        assert_eq!(
            pick_for_image("creds", "x", many).unwrap_err().field,
            "creds"
        );
    }
}
