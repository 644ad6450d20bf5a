//! Reads a file of an image's root filesystem straight from the layer
//! directories of one of its snapshots, without mounting anything.
//!
//! containerd's overlayfs snapshotter describes a snapshot as either a bind
//! mount of one directory (a single layer) or an overlay mount whose
//! `lowerdir=a:b:c` lists the layers top first, with `upperdir` (the
//! container's writable layer, if any) above them. As overlayfs does, the
//! topmost layer that has the path wins, and a whiteout (a character device
//! 0/0 of that name) or a non-directory where a parent directory should be
//! hides the layers below. Opaque directories (an xattr) are not looked at:
//! a layer that replaces all of /etc still ships its own passwd and group.
//!
//! Symbolic links are refused, not followed: in the layer directory they
//! would resolve against the host's root, not the image's.

use containerd_client::types::Mount;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

/// The largest file read: /etc/passwd of a real image is a few KiB; an
/// image cannot make the worker hold more than this in memory.
pub const MAX_FILE_BYTES: u64 = 4 << 20;

/// Why a file of the image cannot be read; `path` is the image's own
/// (e.g. `/etc/passwd`): the host's layer directories are never shown.
#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error("its root filesystem is a {kinds:?} mount, not overlay or bind")]
    UnsupportedMount { kinds: Vec<String> },
    #[error("its {path} is a symbolic link, which is not followed")]
    Symlink { path: String },
    #[error("its {path} is not a regular file")]
    NotAFile { path: String },
    #[error("its {path} is larger than {MAX_FILE_BYTES} bytes")]
    TooLarge { path: String },
    #[error("reading its {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: io::Error,
    },
}

/// What one layer has at a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Entry {
    Absent,
    Dir,
    File,
    Whiteout,
    Symlink,
    /// A device, fifo or socket.
    Other,
}

/// The layer directories of `mounts`, top first.
pub fn layers(mounts: &[Mount]) -> Result<Vec<PathBuf>, RootfsError> {
    let unsupported = || RootfsError::UnsupportedMount {
        kinds: mounts.iter().map(|m| m.r#type.clone()).collect(),
    };
    let [mount] = mounts else {
        return Err(unsupported());
    };
    match mount.r#type.as_str() {
        "bind" | "rbind" => Ok(vec![PathBuf::from(&mount.source)]),
        "overlay" => {
            let option = |key: &str| mount.options.iter().find_map(|o| o.strip_prefix(key));
            let upper = option("upperdir=").map(PathBuf::from);
            let lower = option("lowerdir=").ok_or_else(unsupported)?;
            let lower = lower
                .split(':')
                .filter(|d| !d.is_empty())
                .map(PathBuf::from);
            Ok(upper.into_iter().chain(lower).collect())
        }
        _ => Err(unsupported()),
    }
}

/// The text of `path` (absolute in the image, e.g. `/etc/passwd`) in the
/// tree `mounts` describe; `None` when it is absent or whited out.
pub fn read(mounts: &[Mount], path: &str) -> Result<Option<String>, RootfsError> {
    let Some(found) = locate(&layers(mounts)?, path, probe)? else {
        return Ok(None);
    };
    let read_err = |source| RootfsError::Read {
        path: path.to_owned(),
        source,
    };
    let mut bytes = Vec::new();
    std::fs::File::open(found)
        .map_err(read_err)?
        .take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(RootfsError::TooLarge {
            path: path.to_owned(),
        });
    }
    Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
}

/// Which layer's copy of `path` the merged tree shows, by asking `probe`
/// about each component in each layer (top first); `None`: it shows none.
fn locate(
    layers: &[PathBuf],
    path: &str,
    probe: impl Fn(&Path) -> io::Result<Entry>,
) -> Result<Option<PathBuf>, RootfsError> {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    'layers: for layer in layers {
        let mut at = layer.clone();
        for (i, part) in parts.iter().enumerate() {
            at.push(part);
            let last = i + 1 == parts.len();
            let entry = probe(&at).map_err(|source| RootfsError::Read {
                path: path.to_owned(),
                source,
            })?;
            match (entry, last) {
                (Entry::Absent, _) => continue 'layers,
                (Entry::Whiteout, _) => return Ok(None),
                (Entry::Symlink, _) => {
                    return Err(RootfsError::Symlink {
                        path: format!("/{}", parts[..=i].join("/")),
                    })
                }
                (Entry::Dir, false) => {}
                // A file where a directory should be: nothing below it.
                (_, false) => return Ok(None),
                (Entry::File, true) => return Ok(Some(at)),
                (_, true) => {
                    return Err(RootfsError::NotAFile {
                        path: path.to_owned(),
                    })
                }
            }
        }
    }
    Ok(None)
}

/// What is at `path` on disk, not following a symbolic link.
fn probe(path: &Path) -> io::Result<Entry> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Entry::Absent),
        Err(e) => return Err(e),
    };
    let kind = meta.file_type();
    Ok(if kind.is_dir() {
        Entry::Dir
    } else if kind.is_file() {
        Entry::File
    } else if kind.is_symlink() {
        Entry::Symlink
    } else if kind.is_char_device() && meta.rdev() == 0 {
        Entry::Whiteout
    } else {
        Entry::Other
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// What the layers hold: (path, entry); anything else is absent.
    type Layers = &'static [(&'static str, Entry)];

    fn mount(kind: &str, source: &str, options: &[&str]) -> Mount {
        Mount {
            r#type: kind.to_owned(),
            source: source.to_owned(),
            target: String::new(),
            options: options.iter().map(|o| o.to_string()).collect(),
        }
    }

    #[test]
    fn layers_come_from_overlay_and_bind_mounts_top_first() {
        #[rustfmt::skip]
        let cases: &[(Vec<Mount>, Option<&[&str]>)] = &[
            (vec![mount("bind", "/s/1/fs", &["ro", "rbind"])], Some(&["/s/1/fs"])),
            (vec![mount("overlay", "overlay", &["index=off", "lowerdir=/s/3/fs:/s/2/fs:/s/1/fs"])],
             Some(&["/s/3/fs", "/s/2/fs", "/s/1/fs"])),
            (vec![mount("overlay", "overlay",
                        &["index=off", "workdir=/s/9/work", "upperdir=/s/9/fs", "lowerdir=/s/2/fs:/s/1/fs"])],
             Some(&["/s/9/fs", "/s/2/fs", "/s/1/fs"])),
            (vec![mount("overlay", "overlay", &["upperdir=/s/9/fs"])], None),
            (vec![mount("erofs", "/s/1/layer.erofs", &["ro"])], None),
            (vec![], None),
            (vec![mount("bind", "/a", &[]), mount("bind", "/b", &[])], None),
        ];
        for (mounts, want) in cases {
            let got = layers(mounts);
            match want {
                Some(want) => {
                    let want: Vec<PathBuf> = want.iter().map(PathBuf::from).collect();
                    assert_eq!(got.as_ref().ok(), Some(&want), "{mounts:?}: {got:?}");
                }
                None => assert!(
                    matches!(got, Err(RootfsError::UnsupportedMount { .. })),
                    "{mounts:?}: {got:?}"
                ),
            }
        }
    }

    #[test]
    fn the_top_layer_with_the_file_wins_and_whiteouts_hide_it() {
        use Entry::*;
        // (entries of layers "up" and "low", want: which layer's file, or None)
        #[rustfmt::skip]
        let cases: &[(Layers, Option<&str>)] = &[
            (&[("low/etc", Dir), ("low/etc/passwd", File)], Some("low")),
            (&[("up/etc", Dir), ("up/etc/passwd", File), ("low/etc", Dir), ("low/etc/passwd", File)], Some("up")),
            (&[("up/etc", Dir), ("low/etc", Dir), ("low/etc/passwd", File)], Some("low")),
            (&[("up/etc", Dir), ("up/etc/passwd", Whiteout), ("low/etc", Dir), ("low/etc/passwd", File)], None),
            (&[("up/etc", Whiteout), ("low/etc", Dir), ("low/etc/passwd", File)], None),
            (&[("up/etc", File), ("low/etc", Dir), ("low/etc/passwd", File)], None),
            (&[("low/etc", Dir)], None),
            (&[], None),
        ];
        for (entries, want) in cases {
            let entries = tree(entries);
            let probe = |p: &Path| Ok(entries.get(p).copied().unwrap_or(Entry::Absent));
            let layers = [PathBuf::from("up"), PathBuf::from("low")];
            let got = locate(&layers, "/etc/passwd", probe).unwrap();
            let want = want.map(|layer| Path::new(layer).join("etc/passwd"));
            assert_eq!(got, want, "{entries:?}");
        }
    }

    /// The fake layer tree a case describes.
    fn tree(entries: Layers) -> HashMap<PathBuf, Entry> {
        entries
            .iter()
            .map(|(p, e)| (PathBuf::from(p), *e))
            .collect()
    }

    #[test]
    fn links_and_non_files_are_refused() {
        use Entry::*;
        #[rustfmt::skip]
        let cases: &[(Layers, &str)] = &[
            (&[("up/etc", Dir), ("up/etc/passwd", Symlink)], "its /etc/passwd is a symbolic link, which is not followed"),
            (&[("up/etc", Symlink)], "its /etc is a symbolic link, which is not followed"),
            (&[("up/etc", Dir), ("up/etc/passwd", Dir)], "its /etc/passwd is not a regular file"),
            (&[("up/etc", Dir), ("up/etc/passwd", Other)], "its /etc/passwd is not a regular file"),
        ];
        for (entries, want) in cases {
            let entries = tree(entries);
            let probe = |p: &Path| Ok(entries.get(p).copied().unwrap_or(Entry::Absent));
            let got = locate(&[PathBuf::from("up")], "/etc/passwd", probe);
            assert_eq!(got.map_err(|e| e.to_string()), Err(want.to_string()));
        }
    }

    #[test]
    fn files_are_read_from_layer_directories_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let (up, low) = (dir.path().join("up"), dir.path().join("low"));
        for (layer, text) in [(&up, None), (&low, Some("root:x:0:0::/:/bin/sh\n"))] {
            std::fs::create_dir_all(layer.join("etc")).unwrap();
            if let Some(text) = text {
                std::fs::write(layer.join("etc/passwd"), text).unwrap();
            }
        }
        std::os::unix::fs::symlink("/etc/shadow", up.join("etc/group")).unwrap();
        std::fs::write(up.join("etc/big"), vec![b'x'; MAX_FILE_BYTES as usize + 1]).unwrap();
        let lowerdir = format!("lowerdir={}:{}", up.display(), low.display());
        let overlay = [mount("overlay", "overlay", &[&lowerdir])];

        let passwd = read(&overlay, "/etc/passwd").unwrap();
        assert_eq!(passwd.as_deref(), Some("root:x:0:0::/:/bin/sh\n"));
        assert_eq!(read(&overlay, "/etc/nsswitch.conf").unwrap(), None);
        assert!(matches!(
            read(&overlay, "/etc/group"),
            Err(RootfsError::Symlink { .. })
        ));
        assert!(matches!(
            read(&overlay, "/etc/big"),
            Err(RootfsError::TooLarge { .. })
        ));
        let bind = [mount("bind", &up.display().to_string(), &["ro", "rbind"])];
        assert_eq!(read(&bind, "/etc/passwd").unwrap(), None);
    }
}
