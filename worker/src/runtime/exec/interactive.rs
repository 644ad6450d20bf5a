//! An interactive exec (`ctr tasks exec -t` in spirit): stdin through a
//! FIFO the worker holds open read-write (opening never blocks; closing it
//! is the process's EOF), stdout (and stderr without a terminal) forwarded
//! as they come, terminal resizes (`Tasks.ResizePty`), and a SIGKILL when
//! the caller goes away before the process exits.

use super::{
    not_started_code, process_spec, unblock, AttachIn, AttachSpec, PROCESS_TYPE_URL, START_EXEC,
};
use crate::runtime::containerd::{containerd_err, ContainerdRuntime};
use crate::runtime::RuntimeError;
use containerd_client::services::v1::{
    CloseIoRequest, DeleteProcessRequest, ExecProcessRequest, ResizePtyRequest, WaitRequest,
};
use serde_json::Value;
use std::io::Read;
use std::path::PathBuf;

/// Forwards what one FIFO yields to `output` on a blocking thread, until
/// its end (or the receiver is gone).
fn forward(
    path: PathBuf,
    output: tokio::sync::mpsc::Sender<Vec<u8>>,
) -> tokio::task::JoinHandle<std::io::Result<()>> {
    tokio::task::spawn_blocking(move || {
        let mut fifo = std::fs::File::open(&path)?;
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = fifo.read(&mut buf)?;
            if n == 0 || output.blocking_send(buf[..n].to_vec()).is_err() {
                return Ok(());
            }
        }
    })
}

/// Whether the exec process was created (so it must be deleted): any
/// outcome but a failed `Tasks.Exec`.
fn created_ok(result: &Result<i32, RuntimeError>) -> bool {
    !matches!(
        result,
        Err(RuntimeError::Containerd {
            op: "Tasks.Exec",
            ..
        })
    )
}

impl ContainerdRuntime {
    /// [`super::Runtime::attach`] on containerd: the exit code.
    pub(in crate::runtime) async fn attach_in(
        &self,
        id: &str,
        spec: &AttachSpec,
        mut input: tokio::sync::mpsc::Receiver<AttachIn>,
        output: tokio::sync::mpsc::Sender<Vec<u8>>,
    ) -> Result<i32, RuntimeError> {
        let io_err = |op: &'static str| {
            move |source: std::io::Error| RuntimeError::Io {
                op,
                id: id.to_owned(),
                source,
            }
        };
        let oci = self.container_spec(id).await?;
        let mut process = process_spec(&oci["process"], &spec.command, &spec.env);
        process["terminal"] = Value::Bool(spec.tty);
        if let (true, Some((cols, rows))) = (spec.tty, spec.size) {
            process["consoleSize"] = serde_json::json!({ "width": cols, "height": rows });
        }
        let exec_id = format!("exec-{}", uuid::Uuid::new_v4().simple());
        let dir = self.config().state_dir.join("exec").join(&exec_id);
        std::fs::create_dir_all(&dir).map_err(io_err("creating the exec's FIFO directory"))?;
        let (in_path, out_path, err_path) =
            (dir.join("stdin"), dir.join("stdout"), dir.join("stderr"));
        let fifos: Vec<&PathBuf> = if spec.tty {
            vec![&in_path, &out_path]
        } else {
            vec![&in_path, &out_path, &err_path]
        };
        for path in &fifos {
            nix::unistd::mkfifo(
                *path,
                nix::sys::stat::Mode::S_IRUSR | nix::sys::stat::Mode::S_IWUSR,
            )
            .map_err(|e| io_err("creating an exec FIFO")(std::io::Error::from(e)))?;
        }
        // Read and write: opening never blocks, and closing it is stdin's end.
        let stdin = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&in_path)
            .map_err(io_err("opening the exec's stdin"))?;
        let mut stdin = Some(tokio::fs::File::from_std(stdin));
        let mut readers = vec![forward(out_path.clone(), output.clone())];
        if !spec.tty {
            readers.push(forward(err_path.clone(), output.clone()));
        }
        // Kept for the one notice the exec itself may need (see the end).
        let notice = output.clone();
        drop(output);
        let created = self
            .tasks()
            .exec(self.conn_req(ExecProcessRequest {
                container_id: id.to_owned(),
                exec_id: exec_id.clone(),
                stdin: in_path.display().to_string(),
                stdout: out_path.display().to_string(),
                stderr: if spec.tty {
                    String::new()
                } else {
                    err_path.display().to_string()
                },
                terminal: spec.tty,
                spec: Some(prost_types::Any {
                    type_url: PROCESS_TYPE_URL.to_owned(),
                    value: serde_json::to_vec(&process).expect("JSON serializes"),
                }),
            }))
            .await
            .map_err(containerd_err("Tasks.Exec", id));
        let result = match created {
            Err(e) => Err(e),
            Ok(_) => self.attach_run(id, &exec_id, &mut input, &mut stdin).await,
        };
        drop(stdin);
        if result.is_err() {
            unblock(&out_path);
            unblock(&err_path);
        }
        for reader in readers {
            let _ = reader.await;
        }
        if created_ok(&result) {
            let _ = self
                .tasks()
                .delete_process(self.conn_req(DeleteProcessRequest {
                    container_id: id.to_owned(),
                    exec_id: exec_id.clone(),
                }))
                .await;
        }
        let _ = std::fs::remove_dir_all(&dir);
        match result {
            // The process never started: answered as a shell would, the
            // runtime's word as its output (as the one-shot exec does).
            Err(RuntimeError::Containerd { op, source, .. }) if op == START_EXEC => {
                let _ = notice
                    .send(format!("{}\r\n", source.message()).into_bytes())
                    .await;
                Ok(not_started_code(source.message()))
            }
            result => result,
        }
    }

    /// Starts the exec and serves its input until it exits.
    async fn attach_run(
        &self,
        id: &str,
        exec_id: &str,
        input: &mut tokio::sync::mpsc::Receiver<AttachIn>,
        stdin: &mut Option<tokio::fs::File>,
    ) -> Result<i32, RuntimeError> {
        use tokio::io::AsyncWriteExt as _;
        self.start_exec(id, exec_id).await?;
        let mut tasks = self.tasks();
        let wait = tasks.wait(self.conn_req(WaitRequest {
            container_id: id.to_owned(),
            exec_id: exec_id.to_owned(),
        }));
        tokio::pin!(wait);
        let mut caller_gone = false;
        loop {
            tokio::select! {
                status = &mut wait => {
                    let status = status.map_err(containerd_err("Tasks.Wait (exec)", id))?;
                    return Ok(status.into_inner().exit_status as i32);
                }
                msg = input.recv(), if !caller_gone => match msg {
                    Some(AttachIn::Stdin(bytes)) => {
                        if let Some(file) = stdin.as_mut() {
                            // A process that stopped reading: its input is dropped.
                            if file.write_all(&bytes).await.is_err() {
                                *stdin = None;
                            }
                        }
                    }
                    Some(AttachIn::Resize { cols, rows }) => {
                        let _ = self
                            .tasks()
                            .resize_pty(self.conn_req(ResizePtyRequest {
                                container_id: id.to_owned(),
                                exec_id: exec_id.to_owned(),
                                width: cols,
                                height: rows,
                            }))
                            .await;
                    }
                    Some(AttachIn::CloseStdin) => {
                        // The shim holds a writer of the stdin FIFO too:
                        // only its CloseIO ends the process's input.
                        *stdin = None;
                        let _ = self
                            .tasks()
                            .close_io(self.conn_req(CloseIoRequest {
                                container_id: id.to_owned(),
                                exec_id: exec_id.to_owned(),
                                stdin: true,
                            }))
                            .await;
                    }
                    None => {
                        // The caller went away: the process goes too.
                        caller_gone = true;
                        *stdin = None;
                        let _ = self.kill_exec(id, exec_id).await;
                    }
                },
            }
        }
    }
}
