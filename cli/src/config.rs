//! Where the API is and which token to send, as other cloud CLIs do it:
//! named profiles in `$XDG_CONFIG_HOME/skiff/` (`~/.config/skiff/`), chosen
//! with `--profile` or `SKIFF_PROFILE` (default `default`), overridden by
//! `SKIFF_API` and `SKIFF_TOKEN` (so `set -a; . .skiff/local.env` is enough).
//!
//! Files: `config.toml` holds each profile's API URL; the tokens live apart in
//! `credentials.toml`, created mode 0600 (rewritten through a 0600 temporary
//! file, so the token is never readable by others, even for a moment).

use crate::Error;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

pub const DEFAULT_PROFILE: &str = "default";

/// The API and token one command uses.
#[derive(Debug, Clone)]
pub struct Target {
    pub api: String,
    pub token: String,
}

/// `config.toml`: `[profiles.<name>] api = "..."`.
#[derive(Debug, Default, Serialize, Deserialize)]
struct ConfigFile {
    #[serde(default)]
    profiles: BTreeMap<String, ProfileConfig>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct ProfileConfig {
    api: Option<String>,
}

/// `credentials.toml`: `[profiles.<name>] token = "..."`.
#[derive(Debug, Default, Serialize, Deserialize)]
struct CredentialsFile {
    #[serde(default)]
    profiles: BTreeMap<String, ProfileCredentials>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct ProfileCredentials {
    token: Option<String>,
}

/// The config directory: `$XDG_CONFIG_HOME/skiff` (`~/.config/skiff`).
pub fn dir() -> Result<PathBuf, Error> {
    dirs::config_dir().map(|d| d.join("skiff")).ok_or_else(|| {
        Error::NotConfigured("no config directory: set XDG_CONFIG_HOME or HOME".into())
    })
}

fn read_toml<T: for<'de> Deserialize<'de> + Default>(path: &Path) -> Result<T, Error> {
    match std::fs::read_to_string(path) {
        Ok(text) => toml::from_str(&text).map_err(|source| Error::ConfigSyntax {
            path: path.to_owned(),
            source,
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(T::default()),
        Err(source) => Err(Error::File {
            what: "reading",
            path: path.to_owned(),
            source,
        }),
    }
}

/// Writes `text` to `path` through a temporary file of the given mode,
/// renamed over it (atomic, and never wider than `mode`).
fn write_file(path: &Path, text: &str, mode: u32) -> Result<(), Error> {
    let io = |what, source| Error::File {
        what,
        path: path.to_owned(),
        source,
    };
    let dir = path.parent().expect("config files live in a directory");
    std::fs::create_dir_all(dir).map_err(|e| io("creating the directory of", e))?;
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(|e| io("creating", e))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| io("writing", e))?;
    // The umask may have narrowed it further; never let it be wider.
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))
        .map_err(|e| io("setting the mode of", e))?;
    std::fs::rename(&tmp, path).map_err(|e| io("replacing", e))
}

/// Saves `api` and `token` as `profile` in `dir`; returns the token file.
pub fn save_profile(dir: &Path, profile: &str, api: &str, token: &str) -> Result<PathBuf, Error> {
    let config_path = dir.join("config.toml");
    let mut config: ConfigFile = read_toml(&config_path)?;
    config.profiles.entry(profile.to_owned()).or_default().api = Some(api.to_owned());
    let text = toml::to_string(&config).map_err(|e| Error::Output(e.to_string()))?;
    write_file(&config_path, &text, 0o644)?;

    let credentials_path = dir.join("credentials.toml");
    let mut credentials: CredentialsFile = read_toml(&credentials_path)?;
    credentials
        .profiles
        .entry(profile.to_owned())
        .or_default()
        .token = Some(token.to_owned());
    let text = toml::to_string(&credentials).map_err(|e| Error::Output(e.to_string()))?;
    write_file(&credentials_path, &text, 0o600)?;
    Ok(credentials_path)
}

/// What the flags and the environment say, before the profile fills gaps.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub profile: Option<String>,
    pub api: Option<String>,
    pub token: Option<String>,
}

/// The API and token: flags and environment (`SKIFF_API`, `SKIFF_TOKEN`,
/// read by clap into `overrides`) win over the profile's files in `dir`.
pub fn resolve(dir: &Path, overrides: &Overrides) -> Result<Target, Error> {
    let profile = overrides.profile.as_deref().unwrap_or(DEFAULT_PROFILE);
    let config: ConfigFile = read_toml(&dir.join("config.toml"))?;
    let credentials: CredentialsFile = read_toml(&dir.join("credentials.toml"))?;
    let api = overrides
        .api
        .clone()
        .or_else(|| config.profiles.get(profile).and_then(|p| p.api.clone()))
        .ok_or_else(|| {
            Error::NotConfigured(format!(
                "no API URL: run `skiff login --api URL` (profile {profile}), or set SKIFF_API"
            ))
        })?;
    let token = overrides
        .token
        .clone()
        .or_else(|| {
            credentials
                .profiles
                .get(profile)
                .and_then(|p| p.token.clone())
        })
        .ok_or_else(|| {
            Error::NotConfigured(format!(
                "no token: run `skiff login --api URL` (profile {profile}), or set SKIFF_TOKEN"
            ))
        })?;
    Ok(Target {
        api: api.trim_end_matches('/').to_owned(),
        token,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("skiff-cli-config-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn a_saved_profile_is_resolved_and_the_environment_wins() {
        let dir = temp_dir("resolve");
        let token_file = save_profile(&dir, "dev", "http://a:1/", "t1").unwrap();
        save_profile(&dir, "other", "http://b:2", "t2").unwrap();
        let mode = std::fs::metadata(&token_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);

        let dev = Overrides {
            profile: Some("dev".into()),
            ..Default::default()
        };
        let target = resolve(&dir, &dev).unwrap();
        assert_eq!(
            (target.api.as_str(), target.token.as_str()),
            ("http://a:1", "t1")
        );
        let env = Overrides {
            token: Some("t3".into()),
            ..dev.clone()
        };
        assert_eq!(resolve(&dir, &env).unwrap().token, "t3");
        // The default profile was never saved: the error says what to do.
        let err = resolve(&dir, &Overrides::default()).unwrap_err();
        assert!(err.to_string().contains("skiff login"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
