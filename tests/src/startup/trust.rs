//! A pool's trust: its CA, made by `skiff-api ca init` as an operator
//! would, the keyring sealing its secrets at rest (`skiff-api secrets
//! new-key`), and the join token its workers join with (one per pool, with
//! a use per host).

use super::{PoolRun, Programs};
use crate::trust::CaFiles;
use anyhow::{bail, Context, Result};
use serde_json::json;

/// Runs `skiff-api ca init --dir <pool dir>/ca`.
pub(super) async fn init_ca(programs: &Programs, run: &PoolRun) -> Result<CaFiles> {
    let dir = run.run_dir.join("ca");
    let out = tokio::process::Command::new(&programs.api_bin)
        .args(["ca", "init", "--dir"])
        .arg(&dir)
        .output()
        .await
        .context("running skiff-api ca init")?;
    if !out.status.success() {
        bail!(
            "skiff-api ca init failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(CaFiles {
        cert: dir.join("ca.crt"),
        key: dir.join("ca.key"),
    })
}

/// Writes `<pool dir>/secrets.keyring` (mode 0600) with one key made by
/// `skiff-api secrets new-key --id <pool>-1`.
pub(super) async fn init_keyring(
    programs: &Programs,
    run: &PoolRun,
    pool: &str,
) -> Result<std::path::PathBuf> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let out = tokio::process::Command::new(&programs.api_bin)
        .args(["secrets", "new-key", "--id", &format!("{pool}-1")])
        .output()
        .await
        .context("running skiff-api secrets new-key")?;
    if !out.status.success() {
        bail!(
            "skiff-api secrets new-key failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let path = run.run_dir.join("secrets.keyring");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    std::io::Write::write_all(&mut file, &out.stdout)?;
    Ok(path)
}

/// Creates the pool's join token through the admin API.
pub(super) async fn create_join_token(
    client: &reqwest::Client,
    api_url: &str,
    admin_token: &str,
    hosts: usize,
) -> Result<String> {
    let reply = client
        .post(format!("{api_url}/v1/admin/join-tokens"))
        .bearer_auth(admin_token)
        .json(&json!({
            "uses": hosts.max(1),
            "expires_in_s": 3600,
            "description": "e2e pool",
        }))
        .send()
        .await?;
    let status = reply.status();
    let body: serde_json::Value = reply.json().await?;
    match body["token"].as_str() {
        Some(token) if status == reqwest::StatusCode::CREATED => Ok(token.to_owned()),
        _ => bail!("creating a join token: {status} {body}"),
    }
}
