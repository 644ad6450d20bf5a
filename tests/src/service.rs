//! Child processes whose life is tied to the test process.
//!
//! Statics are never dropped, so the harness cannot kill its children from a
//! destructor, and `PR_SET_PDEATHSIG` would need unsafe code. Each service is
//! therefore started under a tiny `sh` wrapper whose stdin is a pipe held by
//! this test process: when the test process exits (normally, by panic or by
//! SIGKILL) the kernel closes the pipe, the wrapper's watchdog reads EOF and
//! runs the service's stop command (SIGTERM, then SIGKILL, for skiff's own
//! binaries; a lib.sh function for containerd and PostgreSQL, which
//! `deploy/local/lib.sh` starts as daemons of their own).
//!
//! Layout:
//! - [`Service`]: a skiff binary (api or worker) under the wrapper, with
//!   SIGKILL and respawn for fault tests.
//! - [`Reaper`]: a watchdog without a service of its own, which runs a
//!   shell command when the test process goes away.
//! - [`lib_sh`]: runs a function of `deploy/local/lib.sh`.

use anyhow::{bail, Context, Result};
use std::io::Write as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The wrapper that ties a service's life to this test process. `$1` is the
/// pid file, the rest is the service command line.
const WRAPPER: &str = r#"
pidfile=$1; shift
exec 3<&0
"$@" 3<&- </dev/null &
svc=$!
echo "$svc" > "$pidfile"
( read -r _ <&3; kill -TERM "$svc" 2>/dev/null; sleep 5; kill -KILL "$svc" 2>/dev/null ) &
watchdog=$!
exec 3<&-
wait "$svc"
rc=$?
kill "$watchdog" 2>/dev/null
exit "$rc"
"#;

/// A skiff binary under the watchdog wrapper, and how to start it again.
pub(crate) struct Service {
    pub name: String,
    /// The command line (the binary, possibly behind `ip netns exec <ns>`).
    command: Vec<String>,
    env: Vec<(String, String)>,
    wrapper: Child,
    pid_file: PathBuf,
    pub log_file: PathBuf,
}

impl Service {
    /// Starts `command` under the wrapper with `env` (and no other `SKIFF_*`
    /// variable from the caller's environment), appending its output to
    /// `<dir>/<name>.log`; its pid goes to `<dir>/<name>.pid`.
    pub fn spawn(
        name: &str,
        command: Vec<String>,
        env: Vec<(String, String)>,
        dir: &Path,
    ) -> Result<Service> {
        let wrapper = start_wrapper(name, &command, &env, dir)?;
        let mut service = Service {
            name: name.to_string(),
            command,
            env,
            wrapper,
            pid_file: dir.join(format!("{name}.pid")),
            log_file: dir.join(format!("{name}.log")),
        };
        service.wait_for_pid()?;
        Ok(service)
    }

    fn wait_for_pid(&mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.pid().is_err() {
            if Instant::now() > deadline {
                bail!("{} wrapper wrote no pid file", self.name);
            }
            if let Some(exit) = self.wrapper.try_wait()? {
                bail!(
                    "{} exited at once ({exit}): {}",
                    self.name,
                    tail(&self.log_file, 30)
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    /// The command line and environment it was started with.
    pub fn command_and_env(&self) -> (&[String], &[(String, String)]) {
        (&self.command, &self.env)
    }

    /// The service's own pid (not the wrapper's).
    pub fn pid(&self) -> Result<i32> {
        let text = std::fs::read_to_string(&self.pid_file)?;
        text.trim()
            .parse()
            .with_context(|| format!("pid file {} holds {text:?}", self.pid_file.display()))
    }

    /// `Some(status)` once the service has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.wrapper.try_wait().ok().flatten()
    }

    /// Sends SIGKILL to the service and waits for the wrapper to see it die.
    pub fn kill9(&mut self) -> Result<()> {
        let pid = self.pid()?;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .with_context(|| format!("SIGKILL {} pid {pid}", self.name))?;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match self.wrapper.try_wait()? {
                Some(_) => break,
                None if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
                None => bail!("{} wrapper did not exit after SIGKILL", self.name),
            }
        }
        let _ = std::fs::remove_file(&self.pid_file);
        Ok(())
    }

    /// Starts the service again with the same command line and environment
    /// (after [`Service::kill9`]).
    pub fn respawn(&mut self) -> Result<()> {
        if self.exited().is_none() {
            bail!("{} is still running: kill it first", self.name);
        }
        let dir = self
            .pid_file
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        self.wrapper = start_wrapper(&self.name, &self.command, &self.env, &dir)?;
        self.wait_for_pid()
    }
}

fn start_wrapper(
    name: &str,
    command: &[String],
    env: &[(String, String)],
    dir: &Path,
) -> Result<Child> {
    let log_file = dir.join(format!("{name}.log"));
    let pid_file = dir.join(format!("{name}.pid"));
    let _ = std::fs::remove_file(&pid_file);
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_file)
        .with_context(|| format!("opening {}", log_file.display()))?;
    writeln!(log, "=== skiff-e2e: starting {}", command.join(" "))?;
    let mut process = Command::new("sh");
    process
        .arg("-c")
        .arg(WRAPPER)
        .arg("skiff-e2e-wrapper")
        .arg(&pid_file)
        .args(command)
        .stdin(Stdio::piped())
        .stdout(Stdio::from(log.try_clone()?))
        .stderr(Stdio::from(log));
    for (key, _) in std::env::vars() {
        if key.starts_with("SKIFF_") || key == "DATABASE_URL" {
            process.env_remove(key);
        }
    }
    process.envs(env.iter().map(|(k, v)| (k, v)));
    process
        .spawn()
        .with_context(|| format!("spawning {}", command.join(" ")))
}

/// A watchdog that runs `script` (bash) when the test process exits: the
/// cleanup of what lib.sh starts as daemons (containerd, PostgreSQL), which
/// the [`Service`] wrapper cannot own. Kept alive by holding its stdin.
pub(crate) struct Reaper {
    _child: Child,
}

impl Reaper {
    pub fn spawn(script: String, log_file: &Path) -> Result<Reaper> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_file)
            .with_context(|| format!("opening {}", log_file.display()))?;
        let child = Command::new("bash")
            .arg("-c")
            .arg(format!("read -r _; {script}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            // Its own session: a Ctrl-C of the test run must not kill the
            // cleanup before it has run.
            .process_group(0)
            .spawn()
            .context("spawning a reaper")?;
        Ok(Reaper { _child: child })
    }
}

/// Runs `source <lib.sh>; <script>` with bash and returns its stdout; fails
/// with its stderr.
pub(crate) async fn lib_sh(lib: &Path, script: &str) -> Result<String> {
    let output = tokio::process::Command::new("bash")
        .arg("-c")
        .arg(format!(
            "set -euo pipefail; source {}; {script}",
            quote(lib)
        ))
        .env_remove("DATABASE_URL")
        .stdin(Stdio::null())
        .output()
        .await
        .with_context(|| format!("running lib.sh: {script}"))?;
    if !output.status.success() {
        bail!(
            "lib.sh `{script}` failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// A path quoted for bash.
pub(crate) fn quote(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', r"'\''"))
}

/// The last `n` lines of a file.
pub(crate) fn tail(file: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
