//! The agent's `Attach` RPC: an interactive exec for the control plane.
//! The first input names the process; stdin, resizes and the end of stdin
//! follow; what the process writes goes back as data, its exit code last.
//! When the caller's stream ends first, the process is SIGKILLed.

use crate::runtime::exec::{AttachIn, AttachSpec};
use crate::runtime::Runtime;
use skiff_proto as pb;
use std::pin::Pin;
use std::sync::Arc;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

pub type AttachStream = Pin<Box<dyn Stream<Item = Result<pb::AttachOutput, Status>> + Send>>;

/// An exec's failure as the control plane is told it: no running task is
/// a failed precondition (the API's 409), anything else internal.
pub fn exec_status(id: &str, e: crate::runtime::RuntimeError) -> Status {
    match e {
        crate::runtime::RuntimeError::Containerd { op, source, .. }
            if matches!(
                source.code(),
                tonic::Code::NotFound | tonic::Code::FailedPrecondition
            ) =>
        {
            Status::failed_precondition(format!(
                "the container has no running task ({op}: {})",
                source.message()
            ))
        }
        e => {
            tracing::warn!(container = %id, error = %e, "exec failed");
            Status::internal(e.to_string())
        }
    }
}

/// Serves one attach call on `runtime`.
pub async fn serve<R: Runtime>(
    runtime: Arc<R>,
    request: Request<Streaming<pb::AttachInput>>,
) -> Result<Response<AttachStream>, Status> {
    let mut inbound = request.into_inner();
    let start = match inbound.next().await {
        Some(Ok(pb::AttachInput {
            input: Some(pb::attach_input::Input::Start(start)),
        })) => start,
        Some(Err(status)) => return Err(status),
        _ => {
            return Err(Status::invalid_argument(
                "the first message must be `start`",
            ))
        }
    };
    let id = uuid::Uuid::parse_str(&start.container_id)
        .map_err(|_| Status::invalid_argument("container_id must be a uuid"))?
        .to_string();
    if start.command.is_empty() {
        return Err(Status::invalid_argument("command is empty"));
    }
    let spec = AttachSpec {
        command: start.command,
        env: start.env.into_iter().collect(),
        tty: start.tty,
        size: start.size.map(|s| (s.cols, s.rows)),
    };
    let (in_tx, in_rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        while let Some(Ok(msg)) = inbound.next().await {
            let input = match msg.input {
                Some(pb::attach_input::Input::Stdin(bytes)) => AttachIn::Stdin(bytes),
                Some(pb::attach_input::Input::Resize(size)) => AttachIn::Resize {
                    cols: size.cols,
                    rows: size.rows,
                },
                Some(pb::attach_input::Input::CloseStdin(_)) => AttachIn::CloseStdin,
                _ => continue,
            };
            if in_tx.send(input).await.is_err() {
                return;
            }
        }
        // Dropping in_tx: the caller is gone.
    });
    let (data_tx, mut data_rx) = tokio::sync::mpsc::channel::<Vec<u8>>(64);
    let (out_tx, out_rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        let run = runtime.attach(&id, &spec, in_rx, data_tx);
        tokio::pin!(run);
        let exit = loop {
            tokio::select! {
                exit = &mut run => break exit,
                Some(data) = data_rx.recv() => {
                    let _ = out_tx.send(Ok(pb::AttachOutput {
                        output: Some(pb::attach_output::Output::Data(data)),
                    })).await;
                }
            }
        };
        // What was written before the exit, then the exit.
        while let Some(data) = data_rx.recv().await {
            let _ = out_tx
                .send(Ok(pb::AttachOutput {
                    output: Some(pb::attach_output::Output::Data(data)),
                }))
                .await;
        }
        let last = match exit {
            Ok(code) => Ok(pb::AttachOutput {
                output: Some(pb::attach_output::Output::ExitCode(code)),
            }),
            Err(e) => Err(exec_status(&id, e)),
        };
        let _ = out_tx.send(last).await;
    });
    Ok(Response::new(Box::pin(
        tokio_stream::wrappers::ReceiverStream::new(out_rx),
    )))
}
