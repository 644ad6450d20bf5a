//! A container's volumes and where it mounts them, and the rules a
//! request's `volumes` and `mounts` follow.
//!
//! Two kinds of volume exist. An `empty_dir` is scratch space that lives
//! as long as the container (kept across its restarts, gone when it is
//! deleted): `memory` is a tmpfs whose pages count against the container's
//! memory limit, `disk` a filesystem of its own on the host's disk; both
//! refuse writes past `size_mib`. A `secret` holds files the tenant hands
//! over: sealed at rest like `secure_env`, never returned, and mounted
//! read-only, each file mode 0400 owned by the container's user, on a
//! tmpfs (never on the host's disk).
//!
//! The file contents of a secret are [`SecretFiles`], whose `Debug`
//! prints paths only. What a container's object shows is
//! [`VolumeSource`]: sizes, media and file paths, no contents.

use crate::FieldError;
use once_cell::sync::Lazy;
use regex::Regex;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};

/// At most this many volumes, and this many mounts, on one container.
pub const MAX_VOLUMES: usize = 16;
/// At most this many files in one container's secret volumes together.
pub const MAX_SECRET_FILES: usize = 64;
/// At most this many bytes in one container's secret files together
/// (Kubernetes' limit for one Secret).
pub const MAX_SECRET_BYTES: usize = 1 << 20;
/// A `disk` empty_dir's size when the request gives none.
pub const DEFAULT_DISK_MIB: u32 = 1024;
/// The largest `disk` empty_dir.
pub const MAX_DISK_MIB: u32 = 65_536;
/// The smallest empty_dir (a filesystem needs some room for itself).
pub const MIN_SIZE_MIB: u32 = 1;
/// Mount paths never allowed: the kernel's and the runtime's own.
const RESERVED_PATHS: &[&str] = &["/proc", "/sys", "/dev"];
/// Files the runtime binds into every container.
const RESERVED_FILES: &[&str] = &["/etc/hosts", "/etc/hostname", "/etc/resolv.conf"];

/// A volume name is a DNS label, as `network_group` is.
pub const VOLUME_NAME_PATTERN: &str = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$";
static VOLUME_NAME: Lazy<Regex> = Lazy::new(|| Regex::new(VOLUME_NAME_PATTERN).unwrap());
/// One component of a secret file's path.
static FILE_COMPONENT: Lazy<Regex> = Lazy::new(|| Regex::new(r"^[A-Za-z0-9._-]{1,255}$").unwrap());

/// Where an empty_dir keeps its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Medium {
    /// A tmpfs: fast, counted against the container's memory limit.
    Memory,
    /// A filesystem of its own on the host's disk.
    #[default]
    Disk,
}

/// An empty_dir as stored and shown: the size is always set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct EmptyDir {
    pub size_mib: u32,
    pub medium: Medium,
}

/// A secret volume as stored and shown: its file paths, never contents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SecretPaths {
    /// Paths of its files, relative to the volume.
    pub files: Vec<String>,
}

/// One volume, as stored and shown (exactly one source is set).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", schema(as = Volume))]
pub struct VolumeSource {
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", max_length = 63)
    )]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub empty_dir: Option<EmptyDir>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<SecretPaths>,
}

/// Where a container mounts one of its volumes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct VolumeMount {
    pub volume: String,
    /// An absolute path in the container.
    pub path: String,
    #[serde(default)]
    pub read_only: bool,
}

/// The contents of a container's secret volumes: volume name -> file path
/// (relative to the volume) -> bytes. `Debug` shows names and paths only.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretFiles(pub BTreeMap<String, BTreeMap<String, Vec<u8>>>);

impl std::fmt::Debug for SecretFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(
                self.0
                    .iter()
                    .map(|(volume, files)| (volume, files.keys().collect::<Vec<_>>())),
            )
            .finish()
    }
}

impl SecretFiles {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Checks a container's volumes (decoded: `secrets` holds the files of
/// each secret volume named in `volumes`) and mounts against each other
/// and the container's memory limit. Field names are the request's.
pub fn validate_volumes(
    volumes: &[VolumeSource],
    secrets: &SecretFiles,
    mounts: &[VolumeMount],
    memory_mib: u64,
) -> Result<(), FieldError> {
    if volumes.len() > MAX_VOLUMES {
        return Err(FieldError::new("volumes", "at most 16 volumes"));
    }
    if mounts.len() > MAX_VOLUMES {
        return Err(FieldError::new("mounts", "at most 16 mounts"));
    }
    let mut names = HashSet::new();
    let (mut files, mut bytes) = (0usize, 0usize);
    for (i, v) in volumes.iter().enumerate() {
        let field = |f: &str| format!("volumes[{i}]{f}");
        if !VOLUME_NAME.is_match(&v.name) {
            return Err(FieldError::new(
                field(".name"),
                "must be a DNS label: 1 to 63 of a-z, 0-9 and '-', starting and ending with a letter or digit",
            ));
        }
        if !names.insert(v.name.as_str()) {
            return Err(FieldError::unprocessable(
                field(".name"),
                format!("volume {:?} is declared twice", v.name),
            ));
        }
        match (&v.empty_dir, &v.secret) {
            (Some(dir), None) => {
                let max = match dir.medium {
                    Medium::Disk => MAX_DISK_MIB,
                    Medium::Memory => u32::try_from(memory_mib).unwrap_or(u32::MAX),
                };
                if dir.size_mib < MIN_SIZE_MIB {
                    return Err(FieldError::new(
                        field(".empty_dir.size_mib"),
                        "must be at least 1",
                    ));
                }
                if dir.size_mib > max {
                    let why = match dir.medium {
                        Medium::Disk => format!("must be at most {MAX_DISK_MIB} MiB"),
                        Medium::Memory => format!(
                            "must be at most memory_mib ({memory_mib}): a memory volume counts against the container's memory"
                        ),
                    };
                    return Err(FieldError::unprocessable(field(".empty_dir.size_mib"), why));
                }
            }
            (None, Some(secret)) => {
                let contents = secrets.0.get(&v.name);
                for path in &secret.files {
                    check_secret_path(path).map_err(|why| {
                        FieldError::new(field(&format!(".secret.files.{path}")), why)
                    })?;
                    files += 1;
                    bytes += contents.and_then(|c| c.get(path)).map_or(0, Vec::len);
                }
                let mut sorted: Vec<&str> = secret.files.iter().map(String::as_str).collect();
                sorted.sort_unstable();
                // "a" and "a/b" cannot both be files.
                if let Some(w) = sorted
                    .windows(2)
                    .find(|w| w[1].strip_prefix(w[0]).is_some_and(|r| r.starts_with('/')))
                {
                    return Err(FieldError::unprocessable(
                        field(&format!(".secret.files.{}", w[1])),
                        format!("{:?} is a file, so it cannot be a directory", w[0]),
                    ));
                }
            }
            _ => {
                return Err(FieldError::new(
                    field(""),
                    "must have exactly one of empty_dir and secret",
                ))
            }
        }
    }
    if files > MAX_SECRET_FILES {
        return Err(FieldError::new("volumes", "at most 64 secret files in all"));
    }
    if bytes > MAX_SECRET_BYTES {
        return Err(FieldError::new(
            "volumes",
            "secret files may hold at most 1 MiB in all",
        ));
    }
    let mut paths = HashSet::new();
    for (i, m) in mounts.iter().enumerate() {
        if !names.contains(m.volume.as_str()) {
            return Err(FieldError::unprocessable(
                format!("mounts[{i}].volume"),
                format!("no volume named {:?} in volumes", m.volume),
            ));
        }
        check_mount_path(&m.path)
            .map_err(|why| FieldError::new(format!("mounts[{i}].path"), why))?;
        if !paths.insert(m.path.as_str()) {
            return Err(FieldError::unprocessable(
                format!("mounts[{i}].path"),
                format!("{} is mounted twice", m.path),
            ));
        }
    }
    Ok(())
}

/// A mount path: absolute, normalised (no `.`, `..`, empty components or
/// trailing `/`), at most 4096 bytes, not `/` and not under the kernel's or
/// runtime's own paths.
pub fn check_mount_path(path: &str) -> Result<(), &'static str> {
    if !path.starts_with('/') || path == "/" {
        return Err("must be an absolute path other than /");
    }
    if path.len() > 4096 || path.contains('\0') {
        return Err("must be at most 4096 bytes, without NUL");
    }
    if path[1..]
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err("must be normalised: no '.', '..', '//' or trailing '/'");
    }
    let under = |p: &str| path == p || path.starts_with(&format!("{p}/"));
    if RESERVED_PATHS.iter().any(|p| under(p)) || RESERVED_FILES.contains(&path) {
        return Err("must not be /proc, /sys, /dev (or under them), /etc/hosts, /etc/hostname or /etc/resolv.conf");
    }
    Ok(())
}

/// A secret file's path in its volume: relative, components of
/// `[A-Za-z0-9._-]` other than `.` and `..`, at most 8 levels.
pub fn check_secret_path(path: &str) -> Result<(), &'static str> {
    let parts: Vec<&str> = path.split('/').collect();
    if parts.len() > 8
        || parts
            .iter()
            .any(|c| !FILE_COMPONENT.is_match(c) || *c == "." || *c == "..")
    {
        return Err("must be a relative path of at most 8 components of A-Z, a-z, 0-9, '.', '_' and '-' (not '.' or '..')");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn empty_dir(name: &str, size_mib: u32, medium: Medium) -> VolumeSource {
        VolumeSource {
            name: name.into(),
            empty_dir: Some(EmptyDir { size_mib, medium }),
            secret: None,
        }
    }

    fn secret(name: &str, files: &[(&str, usize)]) -> (VolumeSource, SecretFiles) {
        let v = VolumeSource {
            name: name.into(),
            empty_dir: None,
            secret: Some(SecretPaths {
                files: files.iter().map(|(p, _)| p.to_string()).collect(),
            }),
        };
        let contents = files
            .iter()
            .map(|(p, n)| (p.to_string(), vec![b'x'; *n]))
            .collect();
        (
            v,
            SecretFiles(BTreeMap::from([(name.to_string(), contents)])),
        )
    }

    fn mount(volume: &str, path: &str) -> VolumeMount {
        VolumeMount {
            volume: volume.into(),
            path: path.into(),
            read_only: false,
        }
    }

    #[test]
    fn volumes_and_mounts_are_checked_naming_the_field() {
        let scratch = empty_dir("scratch", 64, Medium::Memory);
        let (creds, files) = secret("creds", &[("token", 10), ("tls/ca.pem", 100)]);
        let ok = [scratch.clone(), creds.clone()];
        let mounts = [mount("scratch", "/scratch"), mount("creds", "/etc/creds")];
        assert_eq!(validate_volumes(&ok, &files, &mounts, 128), Ok(()));
        // No volumes at all is fine.
        assert_eq!(
            validate_volumes(&[], &SecretFiles::default(), &[], 64),
            Ok(())
        );

        let field_of = |vols: &[VolumeSource], files: &SecretFiles, mounts: &[VolumeMount]| {
            let e = validate_volumes(vols, files, mounts, 128).unwrap_err();
            (e.field, e.kind)
        };
        use crate::FieldErrorKind::{Invalid, Unprocessable};
        let cases: Vec<(
            Vec<VolumeSource>,
            Vec<VolumeMount>,
            &str,
            crate::FieldErrorKind,
        )> = vec![
            (
                vec![empty_dir("Bad_Name", 1, Medium::Disk)],
                vec![],
                "volumes[0].name",
                Invalid,
            ),
            (
                vec![scratch.clone(), scratch.clone()],
                vec![],
                "volumes[1].name",
                Unprocessable,
            ),
            (
                vec![empty_dir("a", 0, Medium::Disk)],
                vec![],
                "volumes[0].empty_dir.size_mib",
                Invalid,
            ),
            (
                vec![empty_dir("a", 129, Medium::Memory)],
                vec![],
                "volumes[0].empty_dir.size_mib",
                Unprocessable,
            ),
            (
                vec![empty_dir("a", MAX_DISK_MIB + 1, Medium::Disk)],
                vec![],
                "volumes[0].empty_dir.size_mib",
                Unprocessable,
            ),
            (
                vec![VolumeSource {
                    name: "a".into(),
                    empty_dir: None,
                    secret: None,
                }],
                vec![],
                "volumes[0]",
                Invalid,
            ),
            (
                vec![scratch.clone()],
                vec![mount("other", "/x")],
                "mounts[0].volume",
                Unprocessable,
            ),
            (
                vec![scratch.clone()],
                vec![mount("scratch", "relative")],
                "mounts[0].path",
                Invalid,
            ),
            (
                vec![scratch.clone()],
                vec![mount("scratch", "/proc/x")],
                "mounts[0].path",
                Invalid,
            ),
            (
                vec![scratch.clone()],
                vec![mount("scratch", "/a/../b")],
                "mounts[0].path",
                Invalid,
            ),
            (
                vec![scratch.clone()],
                vec![mount("scratch", "/a"), mount("scratch", "/a")],
                "mounts[1].path",
                Unprocessable,
            ),
        ];
        for (vols, mounts, field, kind) in cases {
            assert_eq!(
                field_of(&vols, &files, &mounts),
                (field.to_string(), kind),
                "{vols:?} {mounts:?}"
            );
        }
        let (bad, files) = secret("s", &[("../escape", 1)]);
        assert_eq!(
            field_of(&[bad], &files, &[]).0,
            "volumes[0].secret.files.../escape"
        );
        let (bad, files) = secret("s", &[("a", 1), ("a/b", 1)]);
        assert_eq!(
            field_of(&[bad], &files, &[]).0,
            "volumes[0].secret.files.a/b"
        );
        let (big, files) = secret("s", &[("a", MAX_SECRET_BYTES), ("b", 1)]);
        assert_eq!(field_of(&[big], &files, &[]).0, "volumes");
    }

    #[test]
    fn paths() {
        for ok in ["/data", "/etc/app/conf.d", "/tmp", "/var/run/secrets"] {
            assert_eq!(check_mount_path(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "/",
            "data",
            "/a/",
            "//a",
            "/a/./b",
            "/dev",
            "/sys/fs",
            "/etc/hosts",
            "/a\0",
        ] {
            assert!(check_mount_path(bad).is_err(), "{bad:?}");
        }
        for ok in ["token", "tls/ca.pem", ".hidden", "a_b-c.d"] {
            assert_eq!(check_secret_path(ok), Ok(()), "{ok}");
        }
        for bad in ["", "/abs", "a/../b", "..", ".", "a//b", "a b", "a/"] {
            assert!(check_secret_path(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn secret_contents_never_show_in_debug() {
        let (_, files) = secret("creds", &[("token", 4)]);
        let shown = format!("{files:?}");
        assert!(shown.contains("token") && !shown.contains("120"), "{shown}");
    }
}
