//! A process run in a running container, as `ctr tasks exec` does it:
//! containerd's `Tasks.Exec` with the container's own process settings
//! (user, capabilities, no_new_privs, rlimits, environment; seccomp and
//! the cgroup come with the task), its argv and extra environment
//! replaced, and stdout and stderr through two FIFOs the worker reads.
//! It ends at its exit or is SIGKILLed at its timeout; each stream keeps
//! its first `max_output_bytes` and the rest is read and dropped, so a
//! chatty process never blocks on a full pipe nor fills memory. The
//! interactive form (stdin, a terminal, output as it comes) is in
//! `interactive`.

mod interactive;

use super::containerd::{containerd_err, ContainerdRuntime};
use super::RuntimeError;
use containerd_client::services::v1::{
    DeleteProcessRequest, ExecProcessRequest, GetContainerRequest, KillRequest, StartRequest,
    WaitRequest,
};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tonic::Code;

/// The step whose failure means the process could not be started.
const START_EXEC: &str = "Tasks.Start (exec)";
const PROCESS_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Process";
const SIGKILL: u32 = 9;
/// How long a SIGKILLed exec may take to be reaped.
const KILL_GRACE: Duration = Duration::from_secs(10);

/// What to run.
#[derive(Debug, Clone)]
pub struct ExecSpec {
    pub command: Vec<String>,
    /// Merged over the container's environment.
    pub env: BTreeMap<String, String>,
    pub timeout: Duration,
    pub max_output_bytes: usize,
}

/// How it went.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecOutput {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    /// The exit status (128 + signal when killed).
    pub exit_code: i32,
    pub timed_out: bool,
}

/// An interactive exec.
#[derive(Debug, Clone)]
pub struct AttachSpec {
    pub command: Vec<String>,
    pub env: BTreeMap<String, String>,
    /// A pseudo-terminal: stdout and stderr are one stream.
    pub tty: bool,
    /// The terminal's (cols, rows) to start with.
    pub size: Option<(u32, u32)>,
}

/// What the caller of an interactive exec sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttachIn {
    Stdin(Vec<u8>),
    Resize { cols: u32, rows: u32 },
    CloseStdin,
}

/// The exec's process spec: the container's `process` with `command` as
/// its argv and `env` merged over its environment (same keys replaced in
/// place), never a terminal.
pub fn process_spec(
    container_process: &Value,
    command: &[String],
    env: &BTreeMap<String, String>,
) -> Value {
    let mut process = container_process.clone();
    process["args"] = serde_json::json!(command);
    process["terminal"] = Value::Bool(false);
    if let Some(p) = process.as_object_mut() {
        p.remove("consoleSize");
    }
    let mut merged: Vec<String> = process["env"]
        .as_array()
        .map(|e| {
            e.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    for (key, value) in env {
        let entry = format!("{key}={value}");
        match merged
            .iter_mut()
            .find(|e| e.split_once('=').map(|(k, _)| k) == Some(key.as_str()))
        {
            Some(existing) => *existing = entry,
            None => merged.push(entry),
        }
    }
    process["env"] = serde_json::json!(merged);
    process
}

/// Reads one FIFO to its end on a blocking thread: the first `max` bytes
/// kept, the rest dropped. Opening blocks until the shim opens the writing
/// end ([`unblock`] ends that wait when it never will).
fn drain(path: PathBuf, max: usize) -> tokio::task::JoinHandle<std::io::Result<(Vec<u8>, bool)>> {
    tokio::task::spawn_blocking(move || {
        let mut fifo = std::fs::File::open(&path)?;
        let mut kept = Vec::new();
        let mut truncated = false;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = fifo.read(&mut buf)?;
            if n == 0 {
                return Ok((kept, truncated));
            }
            let room = max.saturating_sub(kept.len());
            kept.extend_from_slice(&buf[..n.min(room)]);
            truncated |= n > room;
        }
    })
}

/// Opens a FIFO's writing end and closes it: a reader blocked opening it
/// returns and reads EOF.
fn unblock(path: &Path) {
    use std::os::unix::fs::OpenOptionsExt as _;
    let _ = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(path);
}

/// The exit code of a process that could not start, as shells give it:
/// 127 when the program was not found, 126 otherwise (not executable).
pub fn not_started_code(runtime_message: &str) -> i32 {
    if runtime_message.contains("not found") || runtime_message.contains("no such file") {
        127
    } else {
        126
    }
}

impl ContainerdRuntime {
    /// Starts exec process `exec_id` (a failure is a [`START_EXEC`] error:
    /// the program could not start).
    pub(super) async fn start_exec(&self, id: &str, exec_id: &str) -> Result<(), RuntimeError> {
        self.tasks()
            .start(self.conn_req(StartRequest {
                container_id: id.to_owned(),
                exec_id: exec_id.to_owned(),
            }))
            .await
            .map(|_| ())
            .map_err(containerd_err(START_EXEC, id))
    }

    /// [`super::Runtime::exec`] on containerd.
    pub(super) async fn exec_in(
        &self,
        id: &str,
        spec: &ExecSpec,
    ) -> Result<ExecOutput, RuntimeError> {
        let oci = self.container_spec(id).await?;
        let process = process_spec(&oci["process"], &spec.command, &spec.env);

        let exec_id = format!("exec-{}", uuid::Uuid::new_v4().simple());
        let dir = self.config().state_dir.join("exec").join(&exec_id);
        let io_err = |op: &'static str| {
            move |source: std::io::Error| RuntimeError::Io {
                op,
                id: id.to_owned(),
                source,
            }
        };
        std::fs::create_dir_all(&dir).map_err(io_err("creating the exec's FIFO directory"))?;
        let (out_path, err_path) = (dir.join("stdout"), dir.join("stderr"));
        for path in [&out_path, &err_path] {
            nix::unistd::mkfifo(
                path,
                nix::sys::stat::Mode::S_IRUSR | nix::sys::stat::Mode::S_IWUSR,
            )
            .map_err(|e| io_err("creating an exec FIFO")(std::io::Error::from(e)))?;
        }
        let (out, err) = (
            drain(out_path.clone(), spec.max_output_bytes),
            drain(err_path.clone(), spec.max_output_bytes),
        );
        let ran = self
            .run_exec(id, &exec_id, process, &out_path, &err_path, spec.timeout)
            .await;
        if ran.is_err() {
            // The shim may never have opened them: end the readers' wait.
            unblock(&out_path);
            unblock(&err_path);
        }
        let joined = |r: Result<std::io::Result<(Vec<u8>, bool)>, tokio::task::JoinError>| {
            r.map_err(std::io::Error::other).and_then(|r| r)
        };
        let (out, err) = (joined(out.await), joined(err.await));
        let _ = std::fs::remove_dir_all(&dir);
        let (exit_code, timed_out) = match ran {
            // The process never started (no such program, not executable):
            // the caller's mistake, answered as a shell would.
            Err(RuntimeError::Containerd { op, source, .. }) if op == START_EXEC => {
                return Ok(ExecOutput {
                    stderr: format!("{}\n", source.message()).into_bytes(),
                    exit_code: not_started_code(source.message()),
                    ..ExecOutput::default()
                });
            }
            ran => ran?,
        };
        let (stdout, stdout_truncated) = out.map_err(io_err("reading the exec's stdout"))?;
        let (stderr, stderr_truncated) = err.map_err(io_err("reading the exec's stderr"))?;
        Ok(ExecOutput {
            stdout,
            stderr,
            stdout_truncated,
            stderr_truncated,
            exit_code,
            timed_out,
        })
    }

    /// SIGKILLs an exec's process.
    async fn kill_exec(&self, id: &str, exec_id: &str) -> Result<(), tonic::Status> {
        self.tasks()
            .kill(self.conn_req(KillRequest {
                container_id: id.to_owned(),
                exec_id: exec_id.to_owned(),
                signal: SIGKILL,
                all: false,
            }))
            .await
            .map(drop)
    }

    /// The container's OCI spec as stored in containerd.
    async fn container_spec(&self, id: &str) -> Result<Value, RuntimeError> {
        let container = self
            .containers()
            .get(self.conn_req(GetContainerRequest { id: id.to_owned() }))
            .await
            .map_err(containerd_err("Containers.Get", id))?
            .into_inner()
            .container
            .and_then(|c| c.spec)
            .ok_or_else(|| RuntimeError::Spec {
                id: id.to_owned(),
                message: "the container has no spec".into(),
            })?;
        serde_json::from_slice(&container.value).map_err(|e| RuntimeError::Spec {
            id: id.to_owned(),
            message: format!("the container's spec: {e}"),
        })
    }

    /// Exec, start, wait (SIGKILL at the timeout), delete: (exit code, timed out).
    async fn run_exec(
        &self,
        id: &str,
        exec_id: &str,
        process: Value,
        stdout: &Path,
        stderr: &Path,
        timeout: Duration,
    ) -> Result<(i32, bool), RuntimeError> {
        self.tasks()
            .exec(self.conn_req(ExecProcessRequest {
                container_id: id.to_owned(),
                exec_id: exec_id.to_owned(),
                stdin: String::new(),
                stdout: stdout.display().to_string(),
                stderr: stderr.display().to_string(),
                terminal: false,
                spec: Some(prost_types::Any {
                    type_url: PROCESS_TYPE_URL.to_owned(),
                    value: serde_json::to_vec(&process).expect("JSON serializes"),
                }),
            }))
            .await
            .map_err(containerd_err("Tasks.Exec", id))?;
        let result = async {
            self.start_exec(id, exec_id).await?;
            let wait = |limit: Duration| {
                let mut tasks = self.tasks();
                let req = self.conn_req(WaitRequest {
                    container_id: id.to_owned(),
                    exec_id: exec_id.to_owned(),
                });
                async move { tokio::time::timeout(limit, tasks.wait(req)).await }
            };
            match wait(timeout).await {
                Ok(done) => {
                    let status = done.map_err(containerd_err("Tasks.Wait (exec)", id))?;
                    Ok((status.into_inner().exit_status as i32, false))
                }
                Err(_) => {
                    match self.kill_exec(id, exec_id).await {
                        Ok(_) => {}
                        Err(s) if matches!(s.code(), Code::NotFound | Code::FailedPrecondition) => {
                        }
                        Err(s) => return Err(containerd_err("Tasks.Kill (exec)", id)(s)),
                    }
                    let status = wait(KILL_GRACE)
                        .await
                        .map_err(|_| {
                            containerd_err("Tasks.Wait (exec)", id)(
                                tonic::Status::deadline_exceeded(
                                    "the exec was not reaped after SIGKILL",
                                ),
                            )
                        })?
                        .map_err(containerd_err("Tasks.Wait (exec)", id))?;
                    Ok((status.into_inner().exit_status as i32, true))
                }
            }
        }
        .await;
        match self
            .tasks()
            .delete_process(self.conn_req(DeleteProcessRequest {
                container_id: id.to_owned(),
                exec_id: exec_id.to_owned(),
            }))
            .await
        {
            Ok(_) => {}
            Err(s) if s.code() == Code::NotFound => {}
            Err(s) => {
                tracing::warn!(container_id = %id, %exec_id, status = %s, "deleting an exec process")
            }
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_process_that_cannot_start_exits_as_a_shell_says() {
        let not_found = "OCI runtime exec failed: exec failed: unable to start container process: \
            exec: \"pgrep\": executable file not found in $PATH: unknown";
        assert_eq!(not_started_code(not_found), 127);
        assert_eq!(
            not_started_code("exec: \"/etc/hosts\": permission denied"),
            126
        );
    }

    #[test]
    fn the_process_is_the_containers_with_argv_and_env_replaced() {
        let container = json!({
            "args": ["httpd", "-f"], "terminal": true, "consoleSize": {"height": 1, "width": 1},
            "env": ["PATH=/bin", "A=1", "TOKEN=s3cret"], "user": {"uid": 65534, "gid": 65534},
            "noNewPrivileges": true, "capabilities": {"bounding": ["CAP_CHOWN"]},
        });
        let env = BTreeMap::from([
            ("A".to_owned(), "2".to_owned()),
            ("B".to_owned(), "3".to_owned()),
        ]);
        let p = process_spec(&container, &["cat".into(), "/etc/hostname".into()], &env);
        assert_eq!(p["args"], json!(["cat", "/etc/hostname"]));
        assert_eq!(p["terminal"], false);
        assert!(p.get("consoleSize").is_none());
        // The container's environment (secrets too, as docker exec), the
        // request's over it in place, new keys after.
        assert_eq!(p["env"], json!(["PATH=/bin", "A=2", "TOKEN=s3cret", "B=3"]));
        // Everything that confines it is the container's.
        assert_eq!(p["user"], container["user"]);
        assert_eq!(p["noNewPrivileges"], true);
        assert_eq!(p["capabilities"], container["capabilities"]);
    }

    #[tokio::test]
    async fn a_fifo_is_read_to_its_end_keeping_the_first_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        nix::unistd::mkfifo(
            &path,
            nix::sys::stat::Mode::S_IRUSR | nix::sys::stat::Mode::S_IWUSR,
        )
        .unwrap();
        let reader = drain(path.clone(), 5);
        let writer = std::thread::spawn(move || std::fs::write(&path, b"hello world").unwrap());
        let (kept, truncated) = reader.await.unwrap().unwrap();
        writer.join().unwrap();
        assert_eq!((kept.as_slice(), truncated), (&b"hello"[..], true));

        // Nobody ever writes: unblock ends the wait with nothing read.
        let path = dir.path().join("never");
        nix::unistd::mkfifo(
            &path,
            nix::sys::stat::Mode::S_IRUSR | nix::sys::stat::Mode::S_IWUSR,
        )
        .unwrap();
        let reader = drain(path.clone(), 5);
        // The reader may not be in open() yet: retry until it returns.
        let mut waited = reader;
        let out = loop {
            unblock(&path);
            match tokio::time::timeout(Duration::from_millis(50), &mut waited).await {
                Ok(r) => break r.unwrap().unwrap(),
                Err(_) => continue,
            }
        };
        assert_eq!(out, (Vec::new(), false));
    }
}
