//! What a pool's start-up takes from its surroundings: the variables
//! test.sh exports, where the skiff binaries were built, and free loopback
//! ports.
//!
//! Layout:
//! - [`TestEnv`]: the variables test.sh exports.
//! - [`binary_dir`]: where `skiff-api` and `skiff-worker` are.
//! - [`free_port`]: a free loopback port.

use anyhow::{anyhow, bail, Result};
use std::path::{Path, PathBuf};

/// The variables test.sh exports.
pub(crate) struct TestEnv {
    pub(super) database_url: String,
    pub(super) registry: String,
    pub(super) image: String,
    pub(super) state_dir: String,
    /// `SKIFF_TEST_PG_SOCKET_DIR`, when test.sh exports it.
    pub(super) pg_socket_dir: Option<String>,
    /// `SKIFF_TEST_DEPLOY_LIB`, else this checkout's deploy/local/lib.sh.
    pub(super) deploy_lib: PathBuf,
}

impl TestEnv {
    pub(crate) fn from_env() -> Result<TestEnv> {
        let names = [
            "SKIFF_TEST_DATABASE_URL",
            "SKIFF_TEST_REGISTRY",
            "SKIFF_TEST_IMAGE",
            "SKIFF_TEST_STATE_DIR",
        ];
        let var = |n: &str| std::env::var(n).ok().filter(|v| !v.is_empty());
        let missing: Vec<&str> = names.iter().copied().filter(|n| var(n).is_none()).collect();
        if !missing.is_empty() {
            bail!(
                "{} not set: the end-to-end tests need the real services; run them with \
                 deploy/local/test.sh (which starts PostgreSQL and the registry and exports these)",
                missing.join(", ")
            );
        }
        let deploy_lib = var("SKIFF_TEST_DEPLOY_LIB")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/local/lib.sh")
            });
        Ok(TestEnv {
            database_url: var("SKIFF_TEST_DATABASE_URL").unwrap_or_default(),
            registry: var("SKIFF_TEST_REGISTRY").unwrap_or_default(),
            image: var("SKIFF_TEST_IMAGE").unwrap_or_default(),
            state_dir: var("SKIFF_TEST_STATE_DIR").unwrap_or_default(),
            pg_socket_dir: var("SKIFF_TEST_PG_SOCKET_DIR"),
            deploy_lib,
        })
    }
}

/// Where `skiff-api` and `skiff-worker` are: `SKIFF_E2E_BIN_DIR`, else the
/// profile directory this test binary runs from (`<target>/debug/deps/..`),
/// which also follows `CARGO_TARGET_DIR`.
pub(crate) fn binary_dir() -> Result<PathBuf> {
    if let Ok(dir) = std::env::var("SKIFF_E2E_BIN_DIR") {
        return Ok(PathBuf::from(dir));
    }
    let exe = std::env::current_exe()?;
    exe.parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .ok_or_else(|| anyhow!("cannot locate the target dir from {}", exe.display()))
}

/// A free loopback port (bound then released; the race is acceptable here).
pub(crate) fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}
