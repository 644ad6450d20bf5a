//! `skiff-logger`: the log driver containerd's shim runs for every skiff
//! container (containerd's `binary://` log URI).
//!
//! Why not the shim's own `file://` driver: in containerd 1.6, when stdout
//! and stderr go to one file, the stdout copier closes the shared file as
//! soon as stdout ends, and whatever stderr still had in its pipe is lost
//! (a process that writes to stderr last loses that output). Here each
//! stream has its own append-mode handle, so neither can cut the other off.
//!
//! The protocol: containerd passes the URI's query as `key value` arguments
//! (`file <path>`), the container's stdout pipe as fd 3, stderr as fd 4, and
//! the write end of a readiness pipe as fd 5 (one byte written there says
//! "ready"). At task deletion the shim closes its pipe ends and sends
//! SIGTERM; the logger drains both pipes to EOF and then exits, so the log is
//! complete when Tasks.Delete returns. The fds are reopened through
//! /proc/self/fd, which keeps this program free of unsafe code.
//!
//! `cap <bytes>` (from the worker's `SKIFF_LOG_MAX_BYTES`) keeps the file
//! under a size cap: the newest output behind a marker that counts what was
//! dropped ([`skiff_worker::logcap`]). Both streams go through one writer.

use skiff_worker::logcap::CappedLog;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc;
use std::sync::Arc;

/// Reads a stream's pipe to its end, handing each chunk to the writer.
fn copy_stream(
    fd: u32,
    to: mpsc::SyncSender<Vec<u8>>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let mut source = File::open(format!("/proc/self/fd/{fd}"))?;
    Ok(std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match source.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    if to.send(buf[..n].to_vec()).is_err() {
                        return;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    eprintln!("skiff-logger: reading fd {fd}: {e}");
                    return;
                }
            }
        }
    }))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(path) = args
        .windows(2)
        .find(|kv| kv[0] == "file")
        .map(|kv| kv[1].clone())
    else {
        eprintln!("usage: skiff-logger file <log path> (run by containerd's shim)");
        return ExitCode::FAILURE;
    };
    // SIGTERM means "the task is being deleted": keep draining to EOF.
    let terminated = Arc::new(AtomicBool::new(false));
    if let Err(e) = signal_hook::flag::register(signal_hook::consts::SIGTERM, terminated) {
        eprintln!("skiff-logger: cannot handle SIGTERM: {e}");
    }
    let cap: u64 = args
        .windows(2)
        .find(|kv| kv[0] == "cap")
        .and_then(|kv| kv[1].parse().ok())
        .unwrap_or(0);
    let mut log = match CappedLog::open(std::path::Path::new(&path), cap) {
        Ok(log) => log,
        Err(e) => {
            eprintln!("skiff-logger: opening {path}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (tx, rx) = mpsc::sync_channel::<Vec<u8>>(64);
    let copiers = match (copy_stream(3, tx.clone()), copy_stream(4, tx)) {
        (Ok(out), Ok(err)) => [out, err],
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("skiff-logger: opening the streams for {path}: {e}");
            return ExitCode::FAILURE;
        }
    };
    match OpenOptions::new().write(true).open("/proc/self/fd/5") {
        Ok(mut ready) => {
            let _ = ready.write_all(b"r");
        }
        Err(e) => eprintln!("skiff-logger: signalling readiness: {e}"),
    }
    // Until both streams end (their senders go with their threads).
    for chunk in rx {
        if let Err(e) = log.write(&chunk) {
            eprintln!("skiff-logger: writing the log: {e}");
        }
    }
    for copier in copiers {
        let _ = copier.join();
    }
    ExitCode::SUCCESS
}
