//! A PostgreSQL cluster of a pool's own (lib.sh's `start_postgres`), which a
//! test may stop and start again as the postgres user with the options it
//! ran with (faults.md's recipe).
//!
//! Layout:
//! - [`OwnPostgres`]: start, stop (`pg_ctl stop -m fast`), start again from
//!   `postmaster.opts`.

use crate::service::{lib_sh, quote};
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// A PostgreSQL cluster the harness started (own-postgres pool).
pub struct OwnPostgres {
    /// lib.sh's DIR of the cluster.
    pub dir: PathBuf,
    /// The data directory (may have moved to /var/tmp, see lib.sh).
    pub data_dir: PathBuf,
    pub port: u16,
    lib: PathBuf,
}

impl OwnPostgres {
    pub(crate) async fn start(lib: &Path, dir: &Path, port: u16) -> Result<OwnPostgres> {
        let out = lib_sh(
            lib,
            &format!(
                "start_postgres {dir} {port} >/dev/null 2>&1 || {{ echo 'start_postgres failed' >&2; exit 1; }}; \
                 pg_data_dir {dir}",
                dir = quote(dir)
            ),
        )
        .await
        .context("starting the pool's own PostgreSQL")?;
        Ok(OwnPostgres {
            dir: dir.to_path_buf(),
            data_dir: PathBuf::from(out.trim()),
            port,
            lib: lib.to_path_buf(),
        })
    }

    /// `pg_ctl stop -m fast` as the postgres user.
    pub async fn stop(&self) {
        lib_sh(
            &self.lib,
            &format!(
                "pg_ctl_as_postgres -D {} -m fast -w -t 60 stop >/dev/null",
                quote(&self.data_dir)
            ),
        )
        .await
        .unwrap_or_else(|e| panic!("stopping PostgreSQL: {e:#}"));
    }

    /// Starts the cluster again with the options it ran with
    /// (`postmaster.opts`: port, socket dir, listen address).
    pub async fn start_again(&self) {
        let opts_file = self.data_dir.join("postmaster.opts");
        let opts = std::fs::read_to_string(&opts_file)
            .unwrap_or_else(|e| panic!("{}: {e}", opts_file.display()));
        let options = postmaster_options(&opts);
        lib_sh(
            &self.lib,
            &format!(
                "cd / && setsid -w runuser -u postgres -- \"$SKIFF_PG_BIN/pg_ctl\" -D {data} \
                 -l {data}/postgres.log -w -t 60 -o {options} start >/dev/null",
                data = quote(&self.data_dir),
                options = quote(Path::new(&options)),
            ),
        )
        .await
        .unwrap_or_else(|e| panic!("starting PostgreSQL again with {options}: {e:#}"));
    }
}

/// The options of a `postmaster.opts` line, without the binary and `-D`.
fn postmaster_options(opts: &str) -> String {
    let mut tokens = Vec::new();
    let mut rest = opts.trim();
    // The binary, unquoted, then "quoted" "arguments".
    if let Some((_, after)) = rest.split_once(' ') {
        rest = after.trim();
    }
    while let Some(start) = rest.find('"') {
        let after = &rest[start + 1..];
        let Some(end) = after.find('"') else { break };
        tokens.push(after[..end].to_string());
        rest = &after[end + 1..];
    }
    let mut kept = Vec::new();
    let mut skip = false;
    for token in tokens {
        if skip {
            skip = false;
            continue;
        }
        if token == "-D" {
            skip = true;
            continue;
        }
        kept.push(format!("\"{token}\""));
    }
    kept.join(" ")
}
