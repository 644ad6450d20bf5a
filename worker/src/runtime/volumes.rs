//! A container's volumes on its host: where each lives, setting it up
//! before a run, the OCI mounts that bind it in, and removing it with the
//! container.
//!
//! Every volume is a directory `<root>/<key>/<name>` (root:
//! `<state_dir>/volumes`; key: the container's id, or for a member of a
//! sandbox the sandbox's id, its volumes being the whole group's), kept
//! across the container's runs:
//! - `empty_dir` `memory`: a tmpfs of `size_mib` (its pages are charged to
//!   the memory cgroup of whoever writes them: the container's);
//! - `empty_dir` `disk`: an ext4 filesystem of `size_mib` in a sparse file
//!   `<root>/<id>/<name>.img`, loop-mounted (so a full volume is ENOSPC in
//!   the container, never a full host disk);
//! - `secret`: a tmpfs (never the host's disk) holding the files, mode
//!   0400 owned by the container's user, rewritten before every run.
//!
//! Both empty_dir kinds are mode 1777, so any user of the image can write.
//! Secret volumes are always mounted read-only. A sandbox's volumes are
//! prepared by the member that sets the sandbox up (again when it is set
//! up anew: [`prepare`] leaves a mounted volume as it is), so its secret
//! files are owned by that member's user: members running as other
//! non-root users cannot read them. The decisions (which
//! mounts, which mount options) are pure functions with tests beside them;
//! the mounting is done with `mount(2)` and, for the loop device and the
//! filesystem, util-linux `mount` and e2fsprogs `mkfs.ext4`.

use super::RuntimeError;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use tracing::{debug, warn};

/// One volume of a container, as its worker sets it up.
#[derive(Clone, PartialEq, Eq)]
pub struct Volume {
    pub name: String,
    pub kind: VolumeKind,
}

#[derive(Clone, PartialEq, Eq)]
pub enum VolumeKind {
    EmptyDir {
        size_mib: u32,
        memory: bool,
    },
    /// Relative path -> content. Never logged.
    Secret {
        files: BTreeMap<String, Vec<u8>>,
    },
}

impl std::fmt::Debug for Volume {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("Volume");
        d.field("name", &self.name);
        match &self.kind {
            VolumeKind::EmptyDir { size_mib, memory } => {
                d.field("size_mib", size_mib).field("memory", memory)
            }
            VolumeKind::Secret { files } => {
                d.field("secret_files", &files.keys().collect::<Vec<_>>())
            }
        };
        d.finish()
    }
}

/// Where a run mounts one of its container's volumes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub volume: String,
    pub path: String,
    pub read_only: bool,
}

/// The directory of volume `name` of container `id`.
pub fn dir(root: &Path, id: &str, name: &str) -> PathBuf {
    root.join(id).join(name)
}

/// The OCI mounts that bind `mounts` in (volumes already in place under
/// `root`); mounts of an undeclared volume are left out (the control plane
/// refuses them). Secret volumes are read-only whatever the mount says.
pub fn oci_mounts(root: &Path, id: &str, volumes: &[Volume], mounts: &[Mount]) -> Vec<Value> {
    mounts
        .iter()
        .filter_map(|m| {
            let v = volumes.iter().find(|v| v.name == m.volume)?;
            let secret = matches!(v.kind, VolumeKind::Secret { .. });
            let mut options = vec!["rbind", "rprivate", "nosuid", "nodev"];
            if secret {
                options.push("noexec");
            }
            if m.read_only || secret {
                options.push("ro");
            }
            Some(json!({
                "destination": m.path,
                "type": "bind",
                "source": dir(root, id, &v.name),
                "options": options,
            }))
        })
        .collect()
}

/// mount(2) data for a volume's tmpfs.
fn tmpfs_options(kind: &VolumeKind) -> String {
    match kind {
        VolumeKind::EmptyDir { size_mib, .. } => format!("size={size_mib}m,mode=1777"),
        VolumeKind::Secret { files } => {
            // Room for the files, each rounded up to a page, plus a page
            // per directory level and some slack.
            let pages: usize = files.values().map(|b| b.len().div_ceil(4096).max(1)).sum();
            let bytes = (pages + files.len() * 8 + 16) * 4096;
            format!("size={bytes},mode=0755,nr_inodes={}", files.len() * 9 + 16)
        }
    }
}

/// Sets up the volumes of key `id` (a container's, or its sandbox's)
/// before a run: empty_dirs once (their data stays across runs; one
/// already mounted is left as it is), secrets every time (written afresh,
/// owned by `uid`:`gid`, the user its process runs as).
pub async fn prepare(
    root: &Path,
    id: &str,
    volumes: &[Volume],
    uid: u32,
    gid: u32,
) -> Result<(), RuntimeError> {
    if volumes.is_empty() {
        return Ok(());
    }
    let io = |op: &'static str| {
        let id = id.to_owned();
        move |source| RuntimeError::Io { op, id, source }
    };
    for v in volumes {
        let target = dir(root, id, &v.name);
        tokio::fs::create_dir_all(&target)
            .await
            .map_err(io("creating a volume directory"))?;
        let mounted = is_mount_point(&target).map_err(io("inspecting a volume"))?;
        match &v.kind {
            VolumeKind::EmptyDir { memory: true, .. } | VolumeKind::Secret { .. } => {
                if !mounted {
                    mount_tmpfs(&target, &tmpfs_options(&v.kind))
                        .map_err(io("mounting a volume's tmpfs"))?;
                }
            }
            VolumeKind::EmptyDir {
                size_mib,
                memory: false,
            } => {
                if !mounted {
                    let image = root.join(id).join(format!("{}.img", v.name));
                    mount_disk(&image, &target, *size_mib).await.map_err(|e| {
                        RuntimeError::Spec {
                            id: id.to_owned(),
                            message: format!("volume {}: {e}", v.name),
                        }
                    })?;
                }
            }
        }
        match &v.kind {
            VolumeKind::EmptyDir { .. } => {
                std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o1777))
                    .map_err(io("opening a volume to every user"))?;
            }
            VolumeKind::Secret { files } => {
                write_secret(&target, files, uid, gid).map_err(io("writing a secret volume"))?
            }
        }
        debug!(container = %id, volume = ?v, "volume ready");
    }
    Ok(())
}

/// Writes a secret volume's files afresh: what is there goes first, then
/// every file (mode 0400, owned by uid:gid) and its directories (0755).
fn write_secret(
    target: &Path,
    files: &BTreeMap<String, Vec<u8>>,
    uid: u32,
    gid: u32,
) -> std::io::Result<()> {
    for entry in std::fs::read_dir(target)? {
        let path = entry?.path();
        if path.is_dir() {
            std::fs::remove_dir_all(&path)?;
        } else {
            std::fs::remove_file(&path)?;
        }
    }
    for (rel, content) in files {
        let path = target.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o400)
            .open(&path)?;
        std::io::Write::write_all(&mut f, content)?;
        std::os::unix::fs::fchown(&f, Some(uid), Some(gid))?;
    }
    Ok(())
}

fn is_mount_point(path: &Path) -> std::io::Result<bool> {
    let parent = path.parent().unwrap_or(path);
    Ok(std::fs::metadata(path)?.dev() != std::fs::metadata(parent)?.dev())
}

fn mount_tmpfs(target: &Path, data: &str) -> std::io::Result<()> {
    use nix::mount::{mount, MsFlags};
    mount(
        Some("tmpfs"),
        target,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(data),
    )
    .map_err(std::io::Error::from)
}

/// Why a sized volume's disk could not be made or mounted.
#[derive(Debug, thiserror::Error)]
enum DiskError {
    #[error("{what} its file: {source}")]
    File {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("running {program}: {source}")]
    Spawn {
        program: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{program} failed ({status}): {stderr}")]
    Failed {
        program: &'static str,
        status: std::process::ExitStatus,
        stderr: String,
    },
}

/// A sparse file of `size_mib` made an ext4 filesystem (no reserved blocks,
/// no journal, no lost+found in the way) and loop-mounted on `target`.
async fn mount_disk(image: &Path, target: &Path, size_mib: u32) -> Result<(), DiskError> {
    if !image.exists() {
        let f = std::fs::File::create(image).map_err(|source| DiskError::File {
            what: "creating",
            source,
        })?;
        f.set_len(u64::from(size_mib) << 20)
            .map_err(|source| DiskError::File {
                what: "sizing",
                source,
            })?;
        run(
            "mkfs.ext4",
            &[
                "-q".as_ref(),
                "-F".as_ref(),
                "-m".as_ref(),
                "0".as_ref(),
                // Scratch data: no journal to write twice.
                "-O".as_ref(),
                "^has_journal".as_ref(),
                "-E".as_ref(),
                "lazy_itable_init=1,nodiscard".as_ref(),
                image.as_os_str(),
            ],
        )
        .await?;
    }
    run(
        "mount",
        &[
            "-o".as_ref(),
            "loop,nosuid,nodev".as_ref(),
            image.as_os_str(),
            target.as_os_str(),
        ],
    )
    .await?;
    let lost = target.join("lost+found");
    if lost.exists() {
        let _ = std::fs::remove_dir(lost);
    }
    Ok(())
}

async fn run(program: &'static str, args: &[&std::ffi::OsStr]) -> Result<(), DiskError> {
    let out = tokio::process::Command::new(program)
        .args(args)
        .output()
        .await
        .map_err(|source| DiskError::Spawn { program, source })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(DiskError::Failed {
            program,
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

/// Removes every volume of key `id` (a container's or a sandbox's): unmounts
/// (lazily, so a mount still held by an exiting shim does not keep it),
/// then deletes the files.
pub async fn remove(root: &Path, id: &str) -> Result<(), RuntimeError> {
    let base = root.join(id);
    let entries = match std::fs::read_dir(&base) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(RuntimeError::Io {
                op: "listing volumes",
                id: id.to_owned(),
                source,
            })
        }
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() && is_mount_point(&path).unwrap_or(false) {
            if let Err(e) = nix::mount::umount2(&path, nix::mount::MntFlags::MNT_DETACH) {
                warn!(container = %id, path = %path.display(), error = %e, "unmounting a volume");
            }
        }
    }
    tokio::fs::remove_dir_all(&base)
        .await
        .map_err(|source| RuntimeError::Io {
            op: "removing volumes",
            id: id.to_owned(),
            source,
        })
}

/// Removes the volumes of keys not in `known` (left by a container, or a
/// sandbox's last member, removed while the worker was down).
pub async fn sweep(root: &Path, known: &std::collections::HashSet<String>) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let id = entry.file_name().to_string_lossy().into_owned();
        if !known.contains(&id) {
            if let Err(e) = remove(root, &id).await {
                warn!(container = %id, error = %e, "removing leftover volumes");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(files: &[(&str, usize)]) -> VolumeKind {
        VolumeKind::Secret {
            files: files
                .iter()
                .map(|(p, n)| (p.to_string(), vec![7; *n]))
                .collect(),
        }
    }

    #[test]
    fn mounts_bind_each_volume_and_secrets_are_always_read_only() {
        let root = Path::new("/state/volumes");
        let volumes = [
            Volume {
                name: "scratch".into(),
                kind: VolumeKind::EmptyDir {
                    size_mib: 64,
                    memory: true,
                },
            },
            Volume {
                name: "creds".into(),
                kind: secret(&[("token", 3)]),
            },
        ];
        let mount = |volume: &str, path: &str, read_only| Mount {
            volume: volume.into(),
            path: path.into(),
            read_only,
        };
        let got = oci_mounts(
            root,
            "c1",
            &volumes,
            &[
                mount("scratch", "/data", false),
                mount("scratch", "/ro", true),
                mount("creds", "/etc/creds", false),
                mount("missing", "/x", false),
            ],
        );
        let options = |i: usize| got[i]["options"].as_array().unwrap().clone();
        assert_eq!(got.len(), 3);
        assert_eq!(got[0]["source"], "/state/volumes/c1/scratch");
        assert_eq!(got[0]["destination"], "/data");
        assert!(!options(0).contains(&json!("ro")));
        assert!(options(1).contains(&json!("ro")));
        assert!(options(2).contains(&json!("ro")) && options(2).contains(&json!("noexec")));
        assert_eq!(got[2]["source"], "/state/volumes/c1/creds");
    }

    #[test]
    fn tmpfs_sizes() {
        let dir = VolumeKind::EmptyDir {
            size_mib: 32,
            memory: true,
        };
        assert_eq!(tmpfs_options(&dir), "size=32m,mode=1777");
        // Two files of 1 and 5000 bytes: 1 + 2 pages, 16 per file, 16 slack.
        let s = tmpfs_options(&secret(&[("a", 1), ("b/c", 5000)]));
        assert_eq!(
            s,
            format!("size={},mode=0755,nr_inodes=34", (3 + 16 + 16) * 4096)
        );
    }

    #[test]
    fn secret_contents_never_show_in_debug() {
        let v = Volume {
            name: "creds".into(),
            kind: VolumeKind::Secret {
                files: [("token".to_string(), b"hunter2".to_vec())].into(),
            },
        };
        let shown = format!("{v:?}");
        assert!(shown.contains("token") && !shown.contains("104"), "{shown}");
    }
}
