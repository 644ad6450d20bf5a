//! Names a caller chooses: container names and environment variable keys.

use crate::FieldError;
use once_cell::sync::Lazy;
use regex::Regex;
use std::collections::BTreeMap;

static CONTAINER_NAME: Lazy<Regex> = Lazy::new(|| Regex::new(r"^[a-z0-9-]{1,63}$").unwrap());
static POSIX_ENV_KEY: Lazy<Regex> = Lazy::new(|| Regex::new(r"^[A-Za-z_][A-Za-z0-9_]*$").unwrap());

/// Total size of a request's environment (keys, values, and `=` separators).
pub const MAX_ENV_BYTES: usize = 64 * 1024;

/// Environment values that must never be shown: `Debug` prints the keys
/// only, so a stray `{:?}` in a log line cannot leak them. Serializes as the
/// plain map (for storage and for the worker).
#[derive(Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct SecretEnv(pub BTreeMap<String, String>);

impl std::fmt::Debug for SecretEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.0.keys().map(|k| (k, "<redacted>")))
            .finish()
    }
}

/// A container name, unique within its tenant: `[a-z0-9-]{1,63}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ContainerName(String);

impl ContainerName {
    pub fn parse(name: &str) -> Result<Self, FieldError> {
        if CONTAINER_NAME.is_match(name) {
            Ok(Self(name.to_owned()))
        } else {
            Err(FieldError::new(
                "name",
                "must be 1 to 63 characters of a-z, 0-9 and '-'",
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvError {
    #[error("key {0:?} is not a POSIX environment variable name")]
    BadKey(String),
    #[error("value of {0:?} contains a NUL byte")]
    NulInValue(String),
    #[error("environment is {0} bytes; the limit is 65536")]
    TooLarge(usize),
}

/// Checks the environment maps of a request (`env` and `secure_env` together
/// count towards one size limit, as they end up in one process environment).
pub fn validate_env<'a>(
    maps: impl IntoIterator<Item = (&'a str, &'a BTreeMap<String, String>)>,
) -> Result<(), FieldError> {
    let mut total = 0usize;
    for (field, map) in maps {
        for (key, value) in map {
            if !POSIX_ENV_KEY.is_match(key) {
                return Err(FieldError::new(
                    format!("{field}.{key}"),
                    EnvError::BadKey(key.clone()).to_string(),
                ));
            }
            if value.contains('\0') {
                return Err(FieldError::new(
                    format!("{field}.{key}"),
                    EnvError::NulInValue(key.clone()).to_string(),
                ));
            }
            total += key.len() + value.len() + 2;
        }
        if total > MAX_ENV_BYTES {
            return Err(FieldError::new(
                field,
                EnvError::TooLarge(total).to_string(),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_env_debug_shows_keys_only() {
        let secret = SecretEnv([("TOKEN".into(), "s3cret".into())].into());
        let shown = format!("{secret:?}");
        assert!(
            shown.contains("TOKEN") && !shown.contains("s3cret"),
            "{shown}"
        );
        assert_eq!(
            serde_json::to_string(&secret).unwrap(),
            r#"{"TOKEN":"s3cret"}"#
        );
    }

    #[test]
    fn container_names() {
        assert!(ContainerName::parse("web-1").is_ok());
        assert!(ContainerName::parse(&"a".repeat(63)).is_ok());
        for bad in ["", "Web", "a_b", "a.b", &"a".repeat(64)] {
            assert_eq!(ContainerName::parse(bad).unwrap_err().field, "name");
        }
    }

    #[test]
    fn env_keys_and_size() {
        let ok: BTreeMap<_, _> = [("PATH".into(), "/bin".into()), ("_x1".into(), "".into())].into();
        assert!(validate_env([("env", &ok)]).is_ok());
        let bad: BTreeMap<_, _> = [("1ABC".into(), "x".into())].into();
        assert_eq!(validate_env([("env", &bad)]).unwrap_err().field, "env.1ABC");
        let dash: BTreeMap<_, _> = [("A-B".into(), "x".into())].into();
        assert!(validate_env([("env", &dash)]).is_err());
        let big: BTreeMap<_, _> = [("BIG".into(), "x".repeat(70_000))].into();
        assert_eq!(validate_env([("env", &big)]).unwrap_err().field, "env");
    }

    #[test]
    fn secure_env_counts_towards_the_limit() {
        let half: BTreeMap<_, _> = [("A".into(), "x".repeat(40_000))].into();
        let other: BTreeMap<_, _> = [("B".into(), "x".repeat(40_000))].into();
        let err = validate_env([("env", &half), ("secure_env", &other)]).unwrap_err();
        assert_eq!(err.field, "secure_env");
    }
}
