//! The worker's `WorkerAgent` gRPC service: serves a container's log file
//! (stdout and stderr of every run, appended by containerd's shim) to the
//! control plane, from any point, optionally following new output; and
//! runs a process in a running container for it (exec, bounded in time
//! and output: [`crate::runtime::exec`]; interactive: [`crate::attach`]);
//! and pulls an image ahead of use ([`crate::prewarm`]).

use crate::runtime::{Runtime, TaskStatus};
use skiff_proto as pb;
use skiff_proto::worker_agent_server::WorkerAgent;
use std::io::SeekFrom;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_stream::Stream;

/// Lets a call through only from the control plane's certificate (the
/// handshake already required one from the CA; a host's certificate is from
/// the CA too, and must not read another host's logs).
#[allow(clippy::result_large_err)]
pub fn only_the_control_plane(
    request: tonic::Request<()>,
) -> Result<tonic::Request<()>, tonic::Status> {
    use skiff_proto::tls::{incoming::TlsConnInfo, Role};
    let peer = TlsConnInfo::of(&request);
    if peer
        .as_ref()
        .is_some_and(|p| p.not_after <= std::time::SystemTime::now())
    {
        // Checked at the handshake; a connection may outlive it.
        return Err(tonic::Status::unauthenticated(
            "the certificate has expired",
        ));
    }
    match peer.map(|peer| peer.role.clone()) {
        Some(Role::ControlPlane) => Ok(request),
        Some(Role::Host(host)) => {
            tracing::warn!(%host, "log read refused: a host's certificate, not the control plane's");
            Err(tonic::Status::permission_denied(
                "only the control plane may read logs from this agent",
            ))
        }
        None => Err(tonic::Status::unauthenticated(
            "a client certificate is required",
        )),
    }
}
use tonic::{Request, Response, Status};

const CHUNK: usize = 64 * 1024;
/// The most output an exec may return, per stream.
const EXEC_MAX_OUTPUT: u64 = 1024 * 1024;
/// The longest an exec may run.
const EXEC_MAX_TIMEOUT_S: u32 = 3600;
const FOLLOW_POLL: Duration = Duration::from_millis(200);

pub struct LogService<R: Runtime> {
    runtime: Arc<R>,
}

impl<R: Runtime> LogService<R> {
    pub fn new(runtime: Arc<R>) -> Self {
        Self { runtime }
    }
}

type LogStream = Pin<Box<dyn Stream<Item = Result<pb::LogChunk, Status>> + Send>>;

/// Byte offset where the last `lines` lines of the file start.
async fn tail_offset(file: &mut tokio::fs::File, len: u64, lines: u32) -> std::io::Result<u64> {
    let mut newlines_seen = 0u32;
    let mut end = len;
    let mut buf = vec![0u8; CHUNK];
    while end > 0 {
        let start = end.saturating_sub(CHUNK as u64);
        let n = (end - start) as usize;
        file.seek(SeekFrom::Start(start)).await?;
        file.read_exact(&mut buf[..n]).await?;
        for i in (0..n).rev() {
            // A newline that ends the file does not start another line.
            if buf[i] == b'\n' && start + i as u64 != len - 1 {
                newlines_seen += 1;
                if newlines_seen == lines {
                    return Ok(start + i as u64 + 1);
                }
            }
        }
        end = start;
    }
    Ok(0)
}

#[tonic::async_trait]
impl<R: Runtime> WorkerAgent for LogService<R> {
    type ReadLogsStream = LogStream;
    type AttachStream = crate::attach::AttachStream;

    async fn attach(
        &self,
        request: Request<tonic::Streaming<pb::AttachInput>>,
    ) -> Result<Response<Self::AttachStream>, Status> {
        crate::attach::serve(self.runtime.clone(), request).await
    }

    async fn pull(
        &self,
        request: Request<pb::PullRequest>,
    ) -> Result<Response<pb::PullResponse>, Status> {
        crate::prewarm::serve(self.runtime.clone(), request.into_inner()).await
    }

    async fn exec(
        &self,
        request: Request<pb::ExecRequest>,
    ) -> Result<Response<pb::ExecResponse>, Status> {
        let req = request.into_inner();
        let id = uuid::Uuid::parse_str(&req.container_id)
            .map_err(|_| Status::invalid_argument("container_id must be a uuid"))?
            .to_string();
        if req.command.is_empty() {
            return Err(Status::invalid_argument("command is empty"));
        }
        let spec = crate::runtime::exec::ExecSpec {
            command: req.command,
            env: req.env.into_iter().collect(),
            timeout: Duration::from_secs(u64::from(req.timeout_s.clamp(1, EXEC_MAX_TIMEOUT_S))),
            max_output_bytes: req.max_output_bytes.min(EXEC_MAX_OUTPUT) as usize,
        };
        match self.runtime.exec(&id, &spec).await {
            Ok(out) => Ok(Response::new(pb::ExecResponse {
                stdout: out.stdout,
                stderr: out.stderr,
                exit_code: out.exit_code,
                stdout_truncated: out.stdout_truncated,
                stderr_truncated: out.stderr_truncated,
                timed_out: out.timed_out,
            })),
            Err(e) => Err(crate::attach::exec_status(&id, e)),
        }
    }

    async fn read_logs(
        &self,
        request: Request<pb::LogsRequest>,
    ) -> Result<Response<LogStream>, Status> {
        let req = request.into_inner();
        // Ids are uuids; checking keeps the path inside the logs directory.
        let id = uuid::Uuid::parse_str(&req.container_id)
            .map_err(|_| Status::invalid_argument("container_id must be a uuid"))?
            .to_string();
        let path = self.runtime.log_path(&id);
        let runtime = self.runtime.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            if let Err(status) = stream_file(&path, &id, req, runtime, &tx).await {
                let _ = tx.send(Err(status)).await;
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}

/// The log file a reader has open: where it is in it, and the file's
/// marker (see [`crate::logcap`]) to map positions across a rewrite.
struct OpenLog {
    file: tokio::fs::File,
    offset: u64,
    dropped: u64,
    marker_len: u64,
    inode: u64,
}

impl OpenLog {
    async fn open(path: &Path) -> std::io::Result<Option<Self>> {
        use std::os::unix::fs::MetadataExt as _;
        let file = match tokio::fs::File::open(path).await {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let inode = file.metadata().await?.ino();
        let (dropped, marker_len) = crate::logcap::read_marker(path)?;
        Ok(Some(Self {
            file,
            offset: 0,
            dropped,
            marker_len,
            inode,
        }))
    }

    async fn seek(&mut self, offset: u64) -> std::io::Result<()> {
        self.file.seek(SeekFrom::Start(offset)).await?;
        self.offset = offset;
        Ok(())
    }

    /// Reads what is there and sends it; false when the reader went away.
    async fn send_available(
        &mut self,
        buf: &mut [u8],
        tx: &tokio::sync::mpsc::Sender<Result<pb::LogChunk, Status>>,
    ) -> std::io::Result<bool> {
        loop {
            let n = self.file.read(buf).await?;
            if n == 0 {
                return Ok(true);
            }
            self.offset += n as u64;
            let chunk = pb::LogChunk {
                data: buf[..n].to_vec(),
            };
            if tx.send(Ok(chunk)).await.is_err() {
                return Ok(false);
            }
        }
    }

    /// The file at `path` if the log was rewritten under its cap since this
    /// one was opened (another inode), positioned just past what was sent.
    async fn rewritten(&self, path: &Path) -> std::io::Result<Option<Self>> {
        use std::os::unix::fs::MetadataExt as _;
        let now = match tokio::fs::metadata(path).await {
            Ok(meta) => meta.ino(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        if now == self.inode {
            return Ok(None);
        }
        let Some(mut next) = Self::open(path).await? else {
            return Ok(None);
        };
        let position = crate::logcap::logical_position(self.offset, self.dropped, self.marker_len);
        let offset = crate::logcap::resume_offset(position, next.dropped, next.marker_len);
        next.seek(offset).await?;
        Ok(Some(next))
    }
}

async fn stream_file<R: Runtime>(
    path: &Path,
    id: &str,
    req: pb::LogsRequest,
    runtime: Arc<R>,
    tx: &tokio::sync::mpsc::Sender<Result<pb::LogChunk, Status>>,
) -> Result<(), Status> {
    let io_err = |e: std::io::Error| Status::internal(format!("reading logs: {e}"));
    // No file yet (no output, or never started): an empty log.
    let mut log = OpenLog::open(path).await.map_err(io_err)?;
    if let Some(log) = log.as_mut() {
        let len = log.file.metadata().await.map_err(io_err)?.len();
        let mut offset = 0;
        if req.tail_lines > 0 && len > 0 {
            offset = tail_offset(&mut log.file, len, req.tail_lines)
                .await
                .map_err(io_err)?;
        }
        log.seek(offset).await.map_err(io_err)?;
    }
    let mut buf = vec![0u8; CHUNK];
    loop {
        if let Some(open) = log.as_mut() {
            if !open.send_available(&mut buf, tx).await.map_err(io_err)? {
                return Ok(()); // the reader went away
            }
        }
        if !req.follow {
            return Ok(());
        }
        let running = runtime
            .task(id)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?
            .is_some_and(|t| t.status != TaskStatus::Stopped);
        if !running {
            // One last read catches output written just before the exit.
            if let Some(open) = log.as_mut() {
                if let Some(next) = open.rewritten(path).await.map_err(io_err)? {
                    *open = next;
                }
                open.send_available(&mut buf, tx).await.map_err(io_err)?;
            }
            return Ok(());
        }
        if tx.is_closed() {
            return Ok(()); // the reader left while nothing was written
        }
        tokio::time::sleep(FOLLOW_POLL).await;
        match log.as_mut() {
            None => log = OpenLog::open(path).await.map_err(io_err)?,
            Some(open) => {
                // Rewritten under its cap: go on in the new file.
                if let Some(next) = open.rewritten(path).await.map_err(io_err)? {
                    *open = next;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn tail(content: &str, lines: u32) -> String {
        let dir = std::env::temp_dir().join(format!("skiff-tail-{}", uuid::Uuid::new_v4()));
        std::fs::write(&dir, content).unwrap();
        let mut file = tokio::fs::File::open(&dir).await.unwrap();
        let off = tail_offset(&mut file, content.len() as u64, lines)
            .await
            .unwrap();
        std::fs::remove_file(&dir).unwrap();
        content[off as usize..].to_owned()
    }

    #[tokio::test]
    async fn tails_whole_lines() {
        assert_eq!(tail("a\nb\nc\n", 1).await, "c\n");
        assert_eq!(tail("a\nb\nc\n", 2).await, "b\nc\n");
        assert_eq!(tail("a\nb\nc", 1).await, "c");
        assert_eq!(tail("a\nb\nc\n", 10).await, "a\nb\nc\n");
        let long = "x\n".repeat(100_000);
        assert_eq!(tail(&long, 3).await, "x\nx\nx\n");
    }

    #[test]
    fn only_the_control_planes_current_certificate_reads_logs() {
        use skiff_proto::tls::incoming::TlsConnInfo;
        use skiff_proto::tls::{PeerCert, Role};
        use std::time::{Duration, SystemTime};
        let request = |role: Option<Role>, left_s: i64| {
            let mut request = tonic::Request::new(());
            let now = SystemTime::now();
            request.extensions_mut().insert(TlsConnInfo {
                remote: None,
                peer: role.map(|role| {
                    std::sync::Arc::new(PeerCert {
                        role,
                        serial: "01".into(),
                        not_before: now - Duration::from_secs(3600),
                        not_after: if left_s >= 0 {
                            now + Duration::from_secs(left_s as u64)
                        } else {
                            now - Duration::from_secs((-left_s) as u64)
                        },
                    })
                }),
            });
            request
        };
        let code = |role, left_s| {
            only_the_control_plane(request(role, left_s))
                .map(|_| ())
                .map_err(|s| s.code())
        };
        assert_eq!(code(Some(Role::ControlPlane), 60), Ok(()));
        assert_eq!(
            code(Some(Role::ControlPlane), -1),
            Err(tonic::Code::Unauthenticated)
        );
        assert_eq!(
            code(Some(Role::Host("h1".into())), 60),
            Err(tonic::Code::PermissionDenied)
        );
        assert_eq!(code(None, 0), Err(tonic::Code::Unauthenticated));
    }
}
