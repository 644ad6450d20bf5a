//! The raw baseline through containerd's own CLI, `ctr`, on the same
//! containerd as the platform, in the benchmark's own namespaces.

use anyhow::{bail, Context, Result};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::process::Command;

/// Namespace of the `ctr run -d` baseline.
pub const NS_CTR: &str = "skiff-bench-ctr";
/// Longest any single ctr invocation may take.
const CTR_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Debug, Clone)]
pub struct Ctr {
    pub bin: String,
    pub socket: PathBuf,
}

impl Ctr {
    /// Runs `ctr --address <socket> -n <ns> <args>`; its stdout, or an error
    /// with its stderr.
    pub async fn run(&self, ns: &str, args: &[&str]) -> Result<String> {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--address")
            .arg(&self.socket)
            .arg("-n")
            .arg(ns)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let out = tokio::time::timeout(CTR_TIMEOUT, cmd.output())
            .await
            .with_context(|| format!("ctr {} timed out", args.join(" ")))?
            .with_context(|| format!("running {}", self.bin))?;
        if !out.status.success() {
            bail!(
                "ctr -n {ns} {} failed ({}): {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// containerd's (server) version.
    pub async fn server_version(&self) -> Result<String> {
        let out = self.run("default", &["version"]).await?;
        // "Server:\n  Version:  1.6.20~ds1\n  Revision: ..."
        let server = out.split("Server:").nth(1).unwrap_or(&out);
        Ok(server
            .lines()
            .find_map(|l| l.trim().strip_prefix("Version:"))
            .map(|v| v.trim().to_owned())
            .unwrap_or_else(|| "unknown".to_owned()))
    }

    pub async fn pull(&self, ns: &str, image: &str) -> Result<()> {
        self.run(ns, &["images", "pull", "--plain-http", image])
            .await
            .map(drop)
    }

    /// `ctr run -d --snapshotter overlayfs <image> <id> <command...>`.
    pub async fn run_detached(
        &self,
        ns: &str,
        image: &str,
        id: &str,
        command: &[&str],
    ) -> Result<()> {
        self.run_container(ns, &["-d"], image, id, command).await
    }

    /// `ctr run --rm <flags...> ...`: runs to the exit, then removes the
    /// container (the raw pool baseline; `flags` add isolation, as
    /// [`crate::pool::Baseline`] says).
    pub async fn run_to_exit(
        &self,
        ns: &str,
        flags: &[&str],
        image: &str,
        id: &str,
        command: &[&str],
    ) -> Result<()> {
        let mode: Vec<&str> = std::iter::once("--rm")
            .chain(flags.iter().copied())
            .collect();
        self.run_container(ns, &mode, image, id, command).await
    }

    async fn run_container(
        &self,
        ns: &str,
        mode: &[&str],
        image: &str,
        id: &str,
        command: &[&str],
    ) -> Result<()> {
        let mut args = vec!["run"];
        args.extend_from_slice(mode);
        args.extend_from_slice(&["--snapshotter", "overlayfs", image, id]);
        args.extend_from_slice(command);
        self.run(ns, &args).await.map(drop)
    }

    /// Raw teardown of one container: `ctr tasks delete -f` (SIGKILL, wait
    /// for the exit, delete the task) and `ctr containers delete` (container
    /// and its snapshot). A task must be deleted before its container.
    pub async fn remove(&self, ns: &str, id: &str) -> Result<()> {
        if let Err(e) = self.run(ns, &["tasks", "delete", "-f", id]).await {
            if !e.to_string().contains("not found") {
                return Err(e);
            }
        }
        self.run(ns, &["containers", "delete", id]).await.map(drop)
    }

    /// Removes every task and container of `ns` (leftovers of an
    /// interrupted run). Images stay.
    pub async fn clean_namespace(&self, ns: &str) -> Result<usize> {
        let tasks = self
            .run(ns, &["tasks", "ls", "-q"])
            .await
            .unwrap_or_default();
        for t in tasks.split_whitespace() {
            let _ = self.run(ns, &["tasks", "delete", "-f", t]).await;
        }
        let containers = self.run(ns, &["containers", "ls", "-q"]).await?;
        let mut n = 0;
        for c in containers.split_whitespace() {
            self.run(ns, &["containers", "delete", c]).await?;
            n += 1;
        }
        Ok(n)
    }

    /// Deletes an image record and waits for containerd's garbage
    /// collection (its content and snapshots go when nothing else uses them).
    pub async fn remove_image(&self, ns: &str, image: &str) -> Result<()> {
        match self.run(ns, &["images", "rm", "--sync", image]).await {
            Err(e) if !e.to_string().contains("not found") => Err(e),
            _ => Ok(()),
        }
    }

    /// Removes a namespace the benchmark created (must be empty).
    pub async fn remove_namespace(&self, ns: &str) -> Result<()> {
        self.run("default", &["namespaces", "rm", ns])
            .await
            .map(drop)
    }
}
