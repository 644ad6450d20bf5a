//! A ~50 MB multi-layer image that no containerd namespace has seen.
//!
//! deploy/local/build-image.sh builds the busybox base layer (and pushes it).
//! Its layers are deterministic, and containerd skips content it already has
//! (the worker checks Content.Info; the content store is shared by all
//! namespaces), so a fresh tag would not be cold. So each image gets its own
//! bytes: build-image.sh runs on a copy of busybox with a random suffix
//! (an ELF runs the same with trailing bytes), and the extra layers (one
//! file of pseudo-random, incompressible bytes each) are built here from a
//! per-image seed, then config and manifest are pushed with the same
//! registry calls build-image.sh makes.

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::process::Command;

const MT_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const MT_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

#[derive(Debug, Clone)]
pub struct ColdImage {
    pub reference: String,
    /// Compressed bytes of all layers.
    pub bytes: u64,
    pub layers: usize,
}

fn sha256_hex(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// xorshift64*: fast, and gzip finds nothing to compress in its output.
fn fill_random(buf: &mut [u8], mut seed: u64) {
    seed |= 1;
    for chunk in buf.chunks_mut(8) {
        seed ^= seed >> 12;
        seed ^= seed << 25;
        seed ^= seed >> 27;
        let v = seed.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
        chunk.copy_from_slice(&v[..chunk.len()]);
    }
}

async fn run(cmd: &mut Command, what: &str) -> Result<Vec<u8>> {
    cmd.kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(300), cmd.output())
        .await
        .with_context(|| format!("{what} timed out"))?
        .with_context(|| format!("running {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out.stdout)
}

struct Registry {
    http: reqwest::Client,
    base: String,
}

impl Registry {
    async fn push_blob(&self, repo: &str, digest: &str, data: Vec<u8>) -> Result<()> {
        let head = self
            .http
            .head(format!("{}/v2/{repo}/blobs/{digest}", self.base))
            .send()
            .await?;
        if head.status().is_success() {
            return Ok(());
        }
        let start = self
            .http
            .post(format!("{}/v2/{repo}/blobs/uploads/", self.base))
            .send()
            .await?;
        if !start.status().is_success() {
            bail!("starting an upload to {repo}: {}", start.status());
        }
        let location = start
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .context("no Location in the upload response")?
            .to_owned();
        let mut url = if location.starts_with("http") {
            location
        } else {
            format!("{}{location}", self.base)
        };
        url.push(if url.contains('?') { '&' } else { '?' });
        url.push_str(&format!("digest={}", digest.replace(':', "%3A")));
        let put = self
            .http
            .put(url)
            .header("content-type", "application/octet-stream")
            .body(data)
            .send()
            .await?;
        if !put.status().is_success() {
            bail!("uploading {digest} to {repo}: {}", put.status());
        }
        Ok(())
    }
}

/// Builds and pushes `<registry>/skiff-bench/cold-<nonce>:v1` with the base
/// layer plus one layer per entry of `extra_mib`.
pub async fn build(
    repo_root: &Path,
    registry: &str,
    extra_mib: &[u64],
    work: &Path,
) -> Result<ColdImage> {
    let nonce = uuid::Uuid::new_v4().simple().to_string();
    let dir = work.join(format!("cold-{nonce}"));
    std::fs::create_dir_all(&dir)?;
    let result = build_in(repo_root, registry, extra_mib, &dir, &nonce).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn build_in(
    repo_root: &Path,
    registry: &str,
    extra_mib: &[u64],
    dir: &Path,
    nonce: &str,
) -> Result<ColdImage> {
    let repo = format!("skiff-bench/cold-{nonce}");
    // a busybox of its own: the base layer's digest is new too
    let mut busybox = std::fs::read("/bin/busybox").context("/bin/busybox (busybox-static)")?;
    busybox.extend_from_slice(format!("\nskiff-bench {nonce}\n").as_bytes());
    let bb_path = dir.join("busybox");
    std::fs::write(&bb_path, &busybox)?;
    run(Command::new("chmod").arg("0755").arg(&bb_path), "chmod").await?;
    let work = dir.join("work");
    run(
        Command::new("bash")
            .arg(repo_root.join("deploy/local/build-image.sh"))
            .arg(registry)
            .arg(format!("{repo}:base"))
            .arg("--work")
            .arg(&work)
            .env("BUSYBOX", &bb_path),
        "deploy/local/build-image.sh",
    )
    .await?;
    let mut config: Value = serde_json::from_slice(&std::fs::read(work.join("config.json"))?)?;
    let mut manifest: Value = serde_json::from_slice(&std::fs::read(work.join("manifest.json"))?)?;

    let reg = Registry {
        http: reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(120))
            .build()?,
        base: format!("http://{registry}"),
    };
    let seed0 = u64::from_str_radix(&nonce[..16], 16).unwrap_or(42);
    for (i, &mib) in extra_mib.iter().enumerate() {
        let n = i + 1;
        let src: PathBuf = dir.join(format!("extra-{n}"));
        std::fs::create_dir_all(src.join("data"))?;
        let mut data = vec![0u8; (mib as usize) << 20];
        fill_random(
            &mut data,
            seed0.wrapping_add(n as u64 * 0x9E37_79B9_7F4A_7C15),
        );
        std::fs::write(src.join(format!("data/layer-{n}.bin")), &data)?;
        drop(data);
        let tar = dir.join(format!("extra-{n}.tar"));
        run(
            Command::new("tar")
                .args(["--create", "--file"])
                .arg(&tar)
                .arg("--directory")
                .arg(&src)
                .args([
                    "--sort=name",
                    "--format=gnu",
                    "--mtime=@0",
                    "--owner=0",
                    "--group=0",
                    "--numeric-owner",
                    ".",
                ]),
            "tar",
        )
        .await?;
        std::fs::remove_dir_all(&src)?;
        let diff_id = sha256_hex(&std::fs::read(&tar)?);
        let gz = run(
            Command::new("gzip").args(["-n", "-1", "-c"]).arg(&tar),
            "gzip",
        )
        .await?;
        std::fs::remove_file(&tar)?;
        let digest = sha256_hex(&gz);
        let size = gz.len();
        reg.push_blob(&repo, &digest, gz).await?;
        config["rootfs"]["diff_ids"]
            .as_array_mut()
            .context("config without rootfs.diff_ids")?
            .push(json!(diff_id));
        if let Some(h) = config["history"].as_array_mut() {
            h.push(json!({"created": "1970-01-01T00:00:00Z", "created_by": format!("skiff-bench layer {n} ({mib} MiB)")}));
        }
        manifest["layers"]
            .as_array_mut()
            .context("manifest without layers")?
            .push(json!({"mediaType": MT_LAYER, "digest": digest, "size": size}));
    }
    let config_bytes = serde_json::to_vec(&config)?;
    let config_digest = sha256_hex(&config_bytes);
    manifest["config"]["digest"] = json!(config_digest);
    manifest["config"]["size"] = json!(config_bytes.len());
    reg.push_blob(&repo, &config_digest, config_bytes).await?;
    let manifest_bytes = serde_json::to_vec(&manifest)?;
    let put = reg
        .http
        .put(format!("{}/v2/{repo}/manifests/v1", reg.base))
        .header("content-type", MT_MANIFEST)
        .body(manifest_bytes)
        .send()
        .await?;
    if !put.status().is_success() {
        bail!("pushing the manifest of {repo}:v1: {}", put.status());
    }
    let layers = manifest["layers"].as_array().map_or(0, Vec::len);
    let bytes = manifest["layers"]
        .as_array()
        .map(|l| l.iter().filter_map(|d| d["size"].as_u64()).sum())
        .unwrap_or(0);
    Ok(ColdImage {
        reference: format!("{registry}/{repo}:v1"),
        bytes,
        layers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_bytes_differ_by_seed() {
        let (mut a, mut b) = (vec![0u8; 64], vec![0u8; 64]);
        fill_random(&mut a, 1);
        fill_random(&mut b, 2);
        assert_ne!(a, b);
        assert!(a.iter().any(|&x| x != 0));
    }
}
