//! A container's log file under a size cap (`SKIFF_LOG_MAX_BYTES`): the
//! writer ([`CappedLog`], used by `skiff-logger`) appends, and when the file
//! passes the cap by a quarter it keeps the newest `cap` bytes behind a
//! marker line that says how many bytes were dropped so far:
//!
//! `[skiff: 123456 bytes of older output dropped]`
//!
//! The rewrite goes to a temporary file renamed over the log, so a reader
//! never sees a half-written file: a follower notices the new file (another
//! inode) and maps its position through the marker's count
//! ([`resume_offset`]), so it neither repeats nor skips what was kept.
//!
//! A writer holds an exclusive lock on `<log>.lock` for as long as it runs,
//! so the host's log budget ([`trim`]) rewrites only logs nobody writes: a
//! trim and a new run's writer never both rewrite one file.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

const PREFIX: &[u8] = b"[skiff: ";
const SUFFIX: &[u8] = b" bytes of older output dropped]\n";
/// A marker is one short line; anything longer at the start is output.
const MARKER_MAX: usize = 80;

/// The marker line for `dropped` bytes.
pub fn marker(dropped: u64) -> Vec<u8> {
    let mut line = PREFIX.to_vec();
    line.extend_from_slice(dropped.to_string().as_bytes());
    line.extend_from_slice(SUFFIX);
    line
}

/// The bytes dropped and the marker's length, if `head` (the file's first
/// bytes) starts with a marker.
pub fn parse_marker(head: &[u8]) -> Option<(u64, u64)> {
    let head = &head[..head.len().min(MARKER_MAX)];
    let rest = head.strip_prefix(PREFIX)?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    let dropped = std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()?;
    rest[digits..]
        .starts_with(SUFFIX)
        .then_some((dropped, (PREFIX.len() + digits + SUFFIX.len()) as u64))
}

/// The marker of the file at `path`: (dropped, marker length), or (0, 0).
pub fn read_marker(path: &Path) -> std::io::Result<(u64, u64)> {
    let mut head = vec![0u8; MARKER_MAX];
    let n = match File::open(path) {
        Ok(mut f) => f.read(&mut head)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => return Err(e),
    };
    Ok(parse_marker(&head[..n]).unwrap_or((0, 0)))
}

/// Where a reader that had sent everything up to logical position
/// `position` (bytes of output since the container's first, dropped ones
/// included) goes on in a rewritten file whose marker says `dropped` and is
/// `marker_len` long: just past what it sent, or at the marker when what it
/// had not sent yet was dropped too (it reads the marker, then the rest).
pub fn resume_offset(position: u64, dropped: u64, marker_len: u64) -> u64 {
    if position >= dropped {
        marker_len + (position - dropped)
    } else {
        0
    }
}

/// The logical position (see [`resume_offset`]) of file offset `offset`.
pub fn logical_position(offset: u64, dropped: u64, marker_len: u64) -> u64 {
    dropped + offset.saturating_sub(marker_len)
}

/// How long a writer waits for a log's lock.
pub const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// The lock file of the log at `path` (`<log>.lock`).
pub fn lock_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

fn open_lock(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(lock_path(path))
}

/// Rewrites the log at `path` (`len` bytes now) to its newest `keep` bytes of
/// output behind a marker counting everything dropped so far; returns that
/// count. The caller holds the log's lock.
fn rewrite(path: &Path, len: u64, keep: u64) -> std::io::Result<u64> {
    let (dropped_before, marker_len) = read_marker(path)?;
    let output = len.saturating_sub(marker_len);
    let keep = output.min(keep);
    let mut kept = vec![0u8; keep as usize];
    let mut reader = File::open(path)?;
    reader.seek(SeekFrom::Start(len - keep))?;
    reader.read_exact(&mut kept)?;
    let dropped = dropped_before + (output - keep);
    let tmp = path.with_extension("log.compacting");
    let mut next = File::create(&tmp)?;
    next.write_all(&marker(dropped))?;
    next.write_all(&kept)?;
    next.flush()?;
    drop(next);
    std::fs::rename(&tmp, path)?;
    Ok(dropped)
}

/// What [`trim`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trimmed {
    /// A writer holds the log (its container runs): left alone.
    Active,
    /// No log, or no more output than `keep`: nothing to drop.
    Unchanged,
    /// Cut to the newest `keep` bytes; the marker now counts `dropped`.
    Cut { dropped: u64 },
}

/// Cuts the log at `path` to its newest `keep` bytes of output, unless a
/// writer holds it. Used by the host's log budget on finished containers.
pub fn trim(path: &Path, keep: u64) -> std::io::Result<Trimmed> {
    let lock = open_lock(path)?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => return Ok(Trimmed::Active),
        Err(std::fs::TryLockError::Error(e)) => return Err(e),
    }
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Trimmed::Unchanged),
        Err(e) => return Err(e),
    };
    let len = meta.len();
    let (_, marker_len) = read_marker(path)?;
    if len.saturating_sub(marker_len) <= keep {
        return Ok(Trimmed::Unchanged);
    }
    let dropped = rewrite(path, len, keep)?;
    // The cut is not a write of the container's: the log keeps its time, so
    // the budget's order (least recently written first) stays the
    // containers' own, and a cut log does not pass for the newest one.
    OpenOptions::new()
        .write(true)
        .open(path)?
        .set_modified(meta.modified()?)?;
    Ok(Trimmed::Cut { dropped })
}

/// Whether a writer holds the log at `path` now.
pub fn is_active(path: &Path) -> std::io::Result<bool> {
    let lock = open_lock(path)?;
    match lock.try_lock() {
        Ok(()) => Ok(false),
        Err(std::fs::TryLockError::WouldBlock) => Ok(true),
        Err(std::fs::TryLockError::Error(e)) => Err(e),
    }
}

/// An append-only log file kept under `cap` bytes (plus a quarter of slack
/// between rewrites, plus the marker).
pub struct CappedLog {
    path: PathBuf,
    file: File,
    len: u64,
    cap: u64,
    /// Held (locked) while the writer lives; see [`trim`].
    _lock: File,
}

impl CappedLog {
    /// Opens (creates) the log at `path`, waiting for a trim of it to end;
    /// `cap` 0 means no cap. The wait is bounded ([`LOCK_WAIT`]): a lock
    /// still held then (a previous writer that has not exited) must not
    /// hold up the container's start, so the writer goes on without it.
    pub fn open(path: &Path, cap: u64) -> std::io::Result<Self> {
        let lock = open_lock(path)?;
        let waited = std::time::Instant::now();
        loop {
            match lock.try_lock() {
                Ok(()) => break,
                Err(std::fs::TryLockError::WouldBlock) if waited.elapsed() < LOCK_WAIT => {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(std::fs::TryLockError::WouldBlock) => {
                    eprintln!(
                        "skiff-logger: {} still locked; writing without the lock",
                        path.display()
                    );
                    break;
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(e),
            }
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let len = file.metadata()?.len();
        Ok(Self {
            path: path.to_owned(),
            file,
            len,
            cap,
            _lock: lock,
        })
    }

    pub fn write(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.file.write_all(data)?;
        self.len += data.len() as u64;
        if self.cap > 0 && self.len > self.cap + self.cap / 4 {
            self.compact()?;
        }
        Ok(())
    }

    /// Keeps the newest `cap` bytes of output behind an updated marker.
    fn compact(&mut self) -> std::io::Result<()> {
        rewrite(&self.path, self.len, self.cap)?;
        self.file = OpenOptions::new().append(true).open(&self.path)?;
        self.len = self.file.metadata()?.len();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_parse_back_and_output_that_looks_alike_is_not_one() {
        for dropped in [0, 7, 123_456_789] {
            let line = marker(dropped);
            assert_eq!(parse_marker(&line), Some((dropped, line.len() as u64)));
        }
        let cases: [&[u8]; 4] = [
            b"hello",
            b"[skiff: many bytes of older output dropped]\n",
            b"[skiff: 12 bytes of older output dropped]", // no newline
            b"",
        ];
        for head in cases {
            assert_eq!(
                parse_marker(head),
                None,
                "{:?}",
                String::from_utf8_lossy(head)
            );
        }
    }

    #[test]
    fn a_follower_resumes_just_past_what_it_sent() {
        // (position sent, dropped, marker length, resume at)
        let cases = [
            (0, 0, 0, 0),
            (100, 0, 0, 100),
            (1000, 600, 40, 440),
            (600, 600, 40, 40),
            (500, 600, 40, 0), // what it had not sent was dropped: the marker
        ];
        for (position, dropped, marker_len, want) in cases {
            assert_eq!(resume_offset(position, dropped, marker_len), want);
            if position >= dropped {
                assert_eq!(logical_position(want, dropped, marker_len), position);
            }
        }
    }

    #[test]
    fn the_log_keeps_the_newest_bytes_behind_a_marker_counting_the_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.log");
        let mut log = CappedLog::open(&path, 1000).unwrap();
        let mut all = Vec::new();
        for i in 0..500u32 {
            let line = format!("line {i:05}\n"); // 11 bytes
            log.write(line.as_bytes()).unwrap();
            all.extend_from_slice(line.as_bytes());
        }
        let file = std::fs::read(&path).unwrap();
        let (dropped, marker_len) = parse_marker(&file).expect("a marker");
        let kept = &file[marker_len as usize..];
        assert!(kept.len() as u64 <= 1000 + 250, "{}", kept.len());
        assert!(kept.len() >= 1000, "keeps at least the cap: {}", kept.len());
        assert_eq!(
            dropped as usize + kept.len(),
            all.len(),
            "nothing lost uncounted"
        );
        assert_eq!(kept, &all[dropped as usize..], "the newest bytes, in order");
        // A writer that starts again (the container's next run) goes on
        // counting from the marker.
        drop(log);
        let mut again = CappedLog::open(&path, 1000).unwrap();
        for _ in 0..200 {
            again.write(b"0123456789\n").unwrap();
        }
        let file = std::fs::read(&path).unwrap();
        let (dropped_now, marker_len) = parse_marker(&file).unwrap();
        assert_eq!(
            dropped_now + file.len() as u64 - marker_len,
            all.len() as u64 + 200 * 11
        );
        drop(again);
        // The host's budget cuts a log nobody writes, and counts on.
        let before = std::fs::read(&path).unwrap();
        let (dropped_before, marker_len) = parse_marker(&before).unwrap();
        let kept_before = before.len() as u64 - marker_len;
        let written = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
        File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(written)
            .unwrap();
        assert_eq!(
            trim(&path, 100).unwrap(),
            Trimmed::Cut {
                dropped: dropped_before + kept_before - 100
            }
        );
        let after = std::fs::read(&path).unwrap();
        assert!(after.ends_with(&before[before.len() - 100..]));
        assert_eq!(
            std::fs::metadata(&path).unwrap().modified().unwrap(),
            written,
            "a cut keeps the time the container last wrote"
        );
        assert_eq!(trim(&path, 100).unwrap(), Trimmed::Unchanged);
        // ... but never one a writer holds.
        let writer = CappedLog::open(&path, 1000).unwrap();
        assert!(is_active(&path).unwrap());
        assert_eq!(trim(&path, 10).unwrap(), Trimmed::Active);
        drop(writer);
        assert!(!is_active(&path).unwrap());
        // No cap: nothing is ever dropped.
        let free = dir.path().join("free.log");
        let mut uncapped = CappedLog::open(&free, 0).unwrap();
        uncapped.write(&vec![b'x'; 10_000]).unwrap();
        assert_eq!(std::fs::metadata(&free).unwrap().len(), 10_000);
    }
}
