//! A run's liveness and readiness probes: one task per live run, started
//! by its container's supervisor and aborted when the run ends.
//!
//! Each probe waits `initial_delay_s`, then makes an attempt every
//! `period_s`, each bounded by `timeout_s`: `exec` runs the command in the
//! container (containerd Exec, so it counts against the container's
//! cgroup; exit 0 passes); `tcp_socket` connects to the port; `http_get`
//! sends `GET path` and passes on a 200 to 399 status. Connections are made
//! from inside the container's network namespace (a thread that joins it
//! with setns(2)), to its bridge address when it has a private network and
//! to 127.0.0.1 otherwise, so both network modes are probed alike and no
//! firewall rule has to let the host in. [`skiff_core::Tally`] turns the
//! results into verdicts; only changes reach the supervisor, as [`News`].

use crate::runtime::exec::ExecSpec;
use crate::runtime::Runtime;
use skiff_core::Tally;
use skiff_proto as pb;
use std::io::{Read as _, Write as _};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// The most of a probe's answer (exec output, HTTP response head) read.
const MAX_ANSWER: usize = 4096;

/// What a run's probes tell its supervisor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum News {
    /// The liveness probe failed `failure_threshold` times in a row (the
    /// last attempt's failure); its task ends after this.
    LivenessFailed(String),
    /// The readiness verdict changed: passing or not, and why.
    Readiness(bool, String),
}

/// The run a probe looks at.
#[derive(Debug, Clone)]
pub struct Target {
    pub container_id: String,
    /// Its task's init process: its network namespace is the run's.
    pub pid: u32,
    /// Its address on the bridge (private network).
    pub ip: Option<Ipv4Addr>,
}

/// A run's probes at work; dropping it stops them.
#[derive(Debug)]
pub struct Probing {
    pub generation: u64,
    task: JoinHandle<()>,
}

impl Drop for Probing {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The report of a verdict change: the run still running, with its event
/// (`LivenessProbeFailed`, `Ready`, `NotReady`) and, for readiness, `ready`.
pub fn report(container_id: &str, generation: u64, news: &News) -> pb::StatusReport {
    let mut r = super::report::report(container_id, generation, pb::ObservedState::Running);
    let (kind, message) = match news {
        News::LivenessFailed(why) => (
            "LivenessProbeFailed",
            format!("liveness probe failed: {why}; killing the process"),
        ),
        News::Readiness(true, why) => ("Ready", format!("readiness probe passed: {why}")),
        News::Readiness(false, why) => ("NotReady", format!("readiness probe failed: {why}")),
    };
    if let News::Readiness(ready, _) = news {
        r.ready = Some(*ready);
    }
    r.events
        .push(super::report::event(generation, kind, message));
    r
}

/// Starts the probes of a run (None when it has none); `news` gets each
/// verdict change, with the run's generation.
pub fn spawn<R: Runtime>(
    runtime: Arc<R>,
    target: Target,
    liveness: Option<pb::Probe>,
    readiness: Option<pb::Probe>,
    news: mpsc::UnboundedSender<(u64, News)>,
    generation: u64,
) -> Option<Probing> {
    if liveness.is_none() && readiness.is_none() {
        return None;
    }
    let task = tokio::spawn(async move {
        let live = async {
            if let Some(probe) = &liveness {
                run(&*runtime, &target, probe, Tally::new(true), |_, why| {
                    let _ = news.send((generation, News::LivenessFailed(why.to_owned())));
                    ControlFlow::Break(())
                })
                .await;
            }
        };
        let ready = async {
            if let Some(probe) = &readiness {
                run(
                    &*runtime,
                    &target,
                    probe,
                    Tally::new(false),
                    |ok, why| match news.send((generation, News::Readiness(ok, why.to_owned()))) {
                        Ok(()) => ControlFlow::Continue(()),
                        Err(_) => ControlFlow::Break(()),
                    },
                )
                .await;
            }
        };
        tokio::join!(live, ready);
    });
    Some(Probing { generation, task })
}

/// Makes an attempt every period after the initial delay; hands each
/// verdict change (and the outcome of the attempt that made it) to
/// `on_change`, until it says to stop.
async fn run<R: Runtime>(
    runtime: &R,
    target: &Target,
    probe: &pb::Probe,
    mut tally: Tally,
    mut on_change: impl FnMut(bool, &str) -> ControlFlow<()>,
) {
    let period = Duration::from_secs(u64::from(probe.period_s.max(1)));
    tokio::time::sleep(Duration::from_secs(u64::from(probe.initial_delay_s))).await;
    loop {
        let outcome = attempt(runtime, target, probe).await;
        if let Some(verdict) = tally.observe(outcome.passed, probe.failure_threshold.max(1)) {
            if on_change(verdict, &outcome.detail).is_break() {
                return;
            }
        }
        tokio::time::sleep(period).await;
    }
}

/// What one attempt found: whether it passed, and in words what it saw
/// (the container's events and readiness say it).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Attempt {
    passed: bool,
    detail: String,
}

impl Attempt {
    fn passed(detail: String) -> Self {
        Self {
            passed: true,
            detail,
        }
    }

    fn failed(detail: String) -> Self {
        Self {
            passed: false,
            detail,
        }
    }
}

/// One attempt of the probe's action.
async fn attempt<R: Runtime>(runtime: &R, target: &Target, probe: &pb::Probe) -> Attempt {
    use pb::probe::Action;
    let timeout = Duration::from_secs(u64::from(probe.timeout_s.max(1)));
    match &probe.action {
        Some(Action::Exec(exec)) => {
            let spec = ExecSpec {
                command: exec.command.clone(),
                env: Default::default(),
                timeout,
                max_output_bytes: MAX_ANSWER,
            };
            let out = match runtime.exec(&target.container_id, &spec).await {
                Ok(out) => out,
                Err(e) => return Attempt::failed(format!("exec {:?}: {e}", exec.command)),
            };
            if out.timed_out {
                Attempt::failed(format!(
                    "exec {:?} timed out after {timeout:?}",
                    exec.command
                ))
            } else if out.exit_code != 0 {
                let stderr = String::from_utf8_lossy(&out.stderr);
                Attempt::failed(format!(
                    "exec {:?} exited with code {}: {}",
                    exec.command,
                    out.exit_code,
                    stderr.trim()
                ))
            } else {
                Attempt::passed(format!("exec {:?} exited with code 0", exec.command))
            }
        }
        Some(Action::TcpSocket(tcp)) => {
            let Some(addr) = address(target, tcp.port) else {
                return Attempt::failed(format!("port {} is out of range", tcp.port));
            };
            match in_netns(target.pid, move || {
                TcpStream::connect_timeout(&addr, timeout).map(|_| ())
            })
            .await
            {
                Ok(()) => Attempt::passed(format!("connected to {addr}")),
                Err(e) => Attempt::failed(format!("connecting to {addr}: {e}")),
            }
        }
        Some(Action::HttpGet(http)) => {
            let Some(addr) = address(target, http.port) else {
                return Attempt::failed(format!("port {} is out of range", http.port));
            };
            let path = http.path.clone();
            let head = match in_netns(target.pid, move || http_get(addr, &path, timeout)).await {
                Ok(head) => head,
                Err(e) => return Attempt::failed(format!("GET http://{addr}{}: {e}", http.path)),
            };
            match status_of(&head) {
                Some(code) if (200..400).contains(&code) => {
                    Attempt::passed(format!("GET http://{addr}{} answered {code}", http.path))
                }
                Some(code) => {
                    Attempt::failed(format!("GET http://{addr}{} answered {code}", http.path))
                }
                None => Attempt::failed(format!(
                    "GET http://{addr}{}: not an HTTP answer",
                    http.path
                )),
            }
        }
        None => Attempt::failed("the probe has no action".into()),
    }
}

/// Where the probe connects: the container's address (loopback on the
/// host network) and `port`, if it is a port.
fn address(target: &Target, port: u32) -> Option<SocketAddr> {
    let port = u16::try_from(port).ok()?;
    let ip = target.ip.unwrap_or(Ipv4Addr::LOCALHOST);
    Some(SocketAddr::new(IpAddr::V4(ip), port))
}

/// Runs `f` on a thread of its own that has joined the network namespace
/// of process `pid` (a thread is never reused after: its namespace
/// changed).
async fn in_netns<T: Send + 'static>(
    pid: u32,
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/net"))?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("skiff-probe".into())
        .spawn(move || {
            let joined = nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(std::io::Error::from);
            let _ = tx.send(joined.and_then(|()| f()));
        })?;
    rx.await
        .unwrap_or_else(|_| Err(std::io::Error::other("the probe thread ended")))
}

/// Sends `GET path` and reads the head of the answer (at most
/// [`MAX_ANSWER`] bytes), all within `timeout` per step.
fn http_get(addr: SocketAddr, path: &str, timeout: Duration) -> std::io::Result<String> {
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    // One write: a server may answer (and close) on a partial request.
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: skiff-probe\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes())?;
    let mut head = Vec::new();
    let mut buf = [0u8; 512];
    while head.len() < MAX_ANSWER && !head.windows(2).any(|w| w == b"\r\n") {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}

/// The status code of an HTTP/1.x answer's status line.
fn status_of(head: &str) -> Option<u16> {
    let line = head.lines().next()?;
    let mut parts = line.split_whitespace();
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    parts.next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        for (head, code) in [
            ("HTTP/1.1 200 OK\r\n", Some(200)),
            ("HTTP/1.0 302 Found\r\nLocation: /\r\n", Some(302)),
            ("HTTP/1.1 503 Service Unavailable\r\n", Some(503)),
            ("SSH-2.0-OpenSSH\r\n", None),
            ("", None),
            ("HTTP/1.1 abc\r\n", None),
        ] {
            assert_eq!(status_of(head), code, "{head:?}");
        }
    }

    #[tokio::test]
    async fn tcp_and_http_probes_reach_a_server_in_our_own_namespace() {
        // The test's own process stands in for a container: its namespace
        // is the host's, and 127.0.0.1 is where the server listens.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for stream in listener.incoming().take(2).flatten() {
                // Answers once the request's head is in (a bare connect
                // sends none).
                let mut stream = stream;
                let (mut head, mut buf) = (Vec::new(), [0u8; 1024]);
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                if !head.is_empty() {
                    let _ = stream.write_all(b"HTTP/1.1 204 No Content\r\n\r\n");
                }
            }
        });
        let target = Target {
            container_id: "c1".into(),
            pid: std::process::id(),
            ip: None,
        };
        let runtime = crate::runtime::fake::FakeRuntime::new();
        let probe = |action| pb::Probe {
            action: Some(action),
            period_s: 1,
            timeout_s: 1,
            failure_threshold: 1,
            ..Default::default()
        };
        let tcp = probe(pb::probe::Action::TcpSocket(pb::TcpSocketAction {
            port: port.into(),
        }));
        assert!(attempt(&*runtime, &target, &tcp).await.passed);
        let http = probe(pb::probe::Action::HttpGet(pb::HttpGetAction {
            port: port.into(),
            path: "/healthz".into(),
        }));
        let got = attempt(&*runtime, &target, &http).await;
        assert!(got.passed && got.detail.contains("204"), "{got:?}");
        // A port nobody listens on fails.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let closed_port = closed.local_addr().unwrap().port();
        drop(closed);
        let tcp = probe(pb::probe::Action::TcpSocket(pb::TcpSocketAction {
            port: closed_port.into(),
        }));
        assert!(!attempt(&*runtime, &target, &tcp).await.passed);
    }
}
