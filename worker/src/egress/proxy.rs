//! The egress proxy every registry connection of the worker goes through
//! (the pull clients are configured with it as their HTTP and HTTPS proxy),
//! on a loopback port of its own.
//!
//! For each connection it is asked for (`CONNECT host:port` for HTTPS, an
//! absolute-form request for plain HTTP) it resolves the host, checks the
//! policy against every address ([`EgressPolicy::check`]) and connects to
//! those addresses only: a redirect to another host is another connection
//! and is checked again, and a name that resolves differently later cannot
//! slip past the check. A refusal answers 403 with the refusal's text, and
//! is logged.

use super::{EgressPolicy, Scheme};
use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, warn};

type Body = BoxBody<Bytes, hyper::Error>;

/// How long a connection to a registry may take to establish.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Most addresses of one name tried in turn.
const MAX_ADDRS_TRIED: usize = 3;
/// How long a client may take to send a request's head.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// A tunnel or forwarded request with no byte either way for this long is
/// closed (a registry that accepts and then stays silent holds nothing).
const IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// Most connections through the proxy at once; more wait to be accepted.
const MAX_CONNECTIONS: usize = 256;

/// A running proxy; stopped when dropped.
pub struct EgressProxy {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for EgressProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl EgressProxy {
    /// Starts the proxy on a free loopback port.
    pub async fn start(policy: Arc<EgressPolicy>) -> std::io::Result<Self> {
        let listener = TcpListener::bind((IpAddr::from([127, 0, 0, 1]), 0)).await?;
        let addr = listener.local_addr()?;
        let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
        let task = tokio::spawn(async move {
            loop {
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    return;
                };
                let (stream, _) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        warn!(error = %e, "egress proxy: accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let policy = policy.clone();
                tokio::spawn(async move {
                    let _slot = slot;
                    let service = hyper::service::service_fn(move |req| {
                        let policy = policy.clone();
                        async move { Ok::<_, hyper::Error>(handle(req, &policy).await) }
                    });
                    if let Err(e) = hyper::server::conn::http1::Builder::new()
                        .timer(hyper_util::rt::TokioTimer::new())
                        .header_read_timeout(HEADER_TIMEOUT)
                        .serve_connection(TokioIo::new(stream), service)
                        .with_upgrades()
                        .await
                    {
                        debug!(error = %e, "egress proxy: connection ended");
                    }
                });
            }
        });
        Ok(Self { addr, task })
    }

    /// `http://127.0.0.1:<port>`, for the clients' proxy settings.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

fn text(status: StatusCode, message: String) -> Response<Body> {
    let mut response = Response::new(
        Full::new(Bytes::from(message))
            .map_err(|e| match e {})
            .boxed(),
    );
    *response.status_mut() = status;
    response
}

/// Resolves `host:port`, checks every address, and connects to one of them.
async fn connect(
    policy: &EgressPolicy,
    host: &str,
    port: u16,
    scheme: Scheme,
) -> Result<TcpStream, Response<Body>> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<SocketAddr> = match tokio::net::lookup_host((bare, port)).await {
        Ok(addrs) => addrs.collect(),
        Err(_) => Vec::new(),
    };
    let ips: Vec<IpAddr> = addrs.iter().map(|a| a.ip()).collect();
    if let Err(refusal) = policy.check(bare, port, scheme, &ips) {
        warn!(%refusal, "egress proxy: connection refused");
        return Err(text(StatusCode::FORBIDDEN, refusal.to_string()));
    }
    let mut last = None;
    for addr in addrs.into_iter().take(MAX_ADDRS_TRIED) {
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => return Ok(stream),
            Ok(Err(e)) => last = Some(e.to_string()),
            Err(_) => last = Some(format!("no connection within {CONNECT_TIMEOUT:?}")),
        }
    }
    Err(text(
        StatusCode::BAD_GATEWAY,
        format!("connecting to {host}:{port}: {}", last.unwrap_or_default()),
    ))
}

async fn handle(req: Request<Incoming>, policy: &EgressPolicy) -> Response<Body> {
    if req.method() == Method::CONNECT {
        return tunnel(req, policy).await;
    }
    forward(req, policy).await
}

/// `CONNECT host:port`: a TCP tunnel (the client speaks TLS inside it).
async fn tunnel(req: Request<Incoming>, policy: &EgressPolicy) -> Response<Body> {
    let Some((host, port)) = req
        .uri()
        .authority()
        .map(|a| (a.host().to_owned(), a.port_u16().unwrap_or(443)))
    else {
        return text(StatusCode::BAD_REQUEST, "CONNECT needs host:port".into());
    };
    let mut upstream = match connect(policy, &host, port, Scheme::Https).await {
        Ok(stream) => stream,
        Err(response) => return response,
    };
    tokio::spawn(async move {
        match hyper::upgrade::on(req).await {
            Ok(upgraded) => {
                let mut client = TokioIo::new(upgraded);
                if let Err(e) = splice(&mut client, &mut upstream, IDLE_TIMEOUT).await {
                    debug!(error = %e, %host, "egress proxy: tunnel ended");
                }
            }
            Err(e) => debug!(error = %e, "egress proxy: upgrade failed"),
        }
    });
    Response::new(Full::new(Bytes::new()).map_err(|e| match e {}).boxed())
}

/// An absolute-form plain-HTTP request: sent on a connection of its own to
/// the checked address, in origin form.
async fn forward(mut req: Request<Incoming>, policy: &EgressPolicy) -> Response<Body> {
    let uri = req.uri().clone();
    let (Some(host), Some("http")) = (uri.host(), uri.scheme_str()) else {
        return text(
            StatusCode::BAD_REQUEST,
            format!("the egress proxy forwards absolute http:// requests only, not {uri}"),
        );
    };
    let port = uri.port_u16().unwrap_or(80);
    let upstream = match connect(policy, host, port, Scheme::Http).await {
        Ok(stream) => stream,
        Err(response) => return response,
    };
    let (mut sender, connection) =
        match hyper::client::conn::http1::handshake(TokioIo::new(upstream)).await {
            Ok(pair) => pair,
            Err(e) => return text(StatusCode::BAD_GATEWAY, format!("{host}:{port}: {e}")),
        };
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            debug!(error = %e, "egress proxy: upstream connection ended");
        }
    });
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    *req.uri_mut() = path.parse().expect("a path and query is a valid URI");
    req.headers_mut().remove("proxy-authorization");
    req.headers_mut().remove("proxy-connection");
    match tokio::time::timeout(IDLE_TIMEOUT, sender.send_request(req)).await {
        Ok(Ok(response)) => response.map(|b| b.boxed()),
        Ok(Err(e)) => text(StatusCode::BAD_GATEWAY, format!("{host}:{port}: {e}")),
        Err(_) => text(
            StatusCode::GATEWAY_TIMEOUT,
            format!("{host}:{port}: no response within {IDLE_TIMEOUT:?}"),
        ),
    }
}

/// Copies both ways until both sides are done, or nothing moved either way
/// for `idle`.
async fn splice<A, B>(a: &mut A, b: &mut B, idle: Duration) -> std::io::Result<()>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let (mut a_read, mut a_write) = tokio::io::split(a);
    let (mut b_read, mut b_write) = tokio::io::split(b);
    let (mut a_buf, mut b_buf) = (vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
    let (mut a_open, mut b_open) = (true, true);
    let stalled = || std::io::Error::new(std::io::ErrorKind::TimedOut, "idle");
    while a_open || b_open {
        tokio::select! {
            read = a_read.read(&mut a_buf), if a_open => match read? {
                0 => { a_open = false; b_write.shutdown().await?; }
                n => tokio::time::timeout(idle, b_write.write_all(&a_buf[..n])).await.map_err(|_| stalled())??,
            },
            read = b_read.read(&mut b_buf), if b_open => match read? {
                0 => { b_open = false; a_write.shutdown().await?; }
                n => tokio::time::timeout(idle, a_write.write_all(&b_buf[..n])).await.map_err(|_| stalled())??,
            },
            _ = tokio::time::sleep(idle) => return Err(stalled()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::egress::Rule;

    /// A TCP server on `ip` answering every connection with `reply`.
    async fn server(ip: [u8; 4], reply: &'static [u8]) -> SocketAddr {
        let listener = TcpListener::bind((IpAddr::from(ip), 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(reply).await;
            }
        });
        addr
    }

    /// Sends `request` to the proxy and reads until it closes (or 2 s).
    async fn ask(proxy: &EgressProxy, request: String) -> String {
        let mut s = TcpStream::connect(proxy.addr).await.unwrap();
        s.write_all(request.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut out)).await;
        String::from_utf8_lossy(&out).into_owned()
    }

    #[tokio::test]
    async fn a_splice_carries_bytes_both_ways_and_ends_when_idle() {
        let (mut a, mut a_peer) = tokio::io::duplex(1024);
        let (mut b, mut b_peer) = tokio::io::duplex(1024);
        let idle = Duration::from_millis(200);
        let spliced = tokio::spawn(async move { splice(&mut a, &mut b, idle).await });
        a_peer.write_all(b"ping").await.unwrap();
        let mut got = [0u8; 4];
        b_peer.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ping");
        b_peer.write_all(b"pong").await.unwrap();
        a_peer.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"pong");
        // Then silence: the splice gives up after `idle`, not never.
        let ended = tokio::time::timeout(Duration::from_secs(5), spliced)
            .await
            .expect("an idle splice ends")
            .unwrap();
        assert_eq!(ended.unwrap_err().kind(), std::io::ErrorKind::TimedOut);
    }

    #[tokio::test]
    async fn connections_go_only_where_the_policy_allows() {
        let allowed = server(
            [127, 0, 0, 1],
            b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello",
        )
        .await;
        let other = server(
            [127, 0, 0, 2],
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nno",
        )
        .await;
        let policy = EgressPolicy {
            plain_http: vec![Rule::HostPort("127.0.0.1".into(), allowed.port())],
            ..Default::default()
        };
        let proxy = EgressProxy::start(Arc::new(policy)).await.unwrap();

        // Plain HTTP to the named registry: forwarded (the control).
        let got = ask(
            &proxy,
            format!(
                "GET http://{allowed}/v2/ HTTP/1.1\r\nhost: {allowed}\r\nconnection: close\r\n\r\n"
            ),
        )
        .await;
        assert!(
            got.starts_with("HTTP/1.1 200") && got.ends_with("hello"),
            "{got}"
        );
        // Plain HTTP elsewhere, and a tunnel to a loopback address nobody
        // allowed: refused with the policy's words.
        let got = ask(
            &proxy,
            format!(
                "GET http://{other}/v2/ HTTP/1.1\r\nhost: {other}\r\nconnection: close\r\n\r\n"
            ),
        )
        .await;
        assert!(
            got.starts_with("HTTP/1.1 403") && got.contains("SKIFF_INSECURE_REGISTRIES"),
            "{got}"
        );
        let got = ask(
            &proxy,
            format!("CONNECT {other} HTTP/1.1\r\nhost: {other}\r\nconnection: close\r\n\r\n"),
        )
        .await;
        assert!(
            got.starts_with("HTTP/1.1 403") && got.contains("loopback"),
            "{got}"
        );
        let got = ask(
            &proxy,
            "CONNECT 169.254.169.254:443 HTTP/1.1\r\nhost: 169.254.169.254:443\r\nconnection: close\r\n\r\n".into(),
        )
        .await;
        assert!(
            got.starts_with("HTTP/1.1 403") && got.contains("link-local"),
            "{got}"
        );
        // A tunnel the policy allows carries bytes both ways.
        let got = ask(
            &proxy,
            format!("CONNECT {allowed} HTTP/1.1\r\nhost: {allowed}\r\n\r\nping"),
        )
        .await;
        assert!(
            got.starts_with("HTTP/1.1 200") && got.ends_with("hello"),
            "{got}"
        );
    }
}
