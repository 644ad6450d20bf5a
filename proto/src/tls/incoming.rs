//! A TLS listener for tonic. Handshakes run concurrently (a slow or silent
//! client holds up no one) and are bounded in time; a connection is handed
//! to tonic only once its handshake, client-certificate checks included,
//! has succeeded. Each request's extensions then carry [`TlsConnInfo`]:
//! the remote address and the verified peer certificate, if the client
//! presented one.

use super::{peer_cert, PeerCert};
use rustls::ServerConfig;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::transport::server::Connected;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Set on every request that came over a [`TlsConn`].
#[derive(Debug, Clone)]
pub struct TlsConnInfo {
    pub remote: Option<SocketAddr>,
    /// None: the client presented no certificate.
    pub peer: Option<Arc<PeerCert>>,
}

impl TlsConnInfo {
    /// The verified peer of a request, if it came over TLS with a client
    /// certificate.
    pub fn of<T>(request: &tonic::Request<T>) -> Option<Arc<PeerCert>> {
        request
            .extensions()
            .get::<TlsConnInfo>()
            .and_then(|info| info.peer.clone())
    }
}

/// One accepted, handshaken connection.
pub struct TlsConn {
    stream: TlsStream<TcpStream>,
    info: TlsConnInfo,
}

impl Connected for TlsConn {
    type ConnectInfo = TlsConnInfo;

    fn connect_info(&self) -> TlsConnInfo {
        self.info.clone()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Accepts on `listener` until the returned stream is dropped. Failed
/// handshakes are logged (the client got a TLS alert saying why) and
/// counted through `on_refused`, with rustls's reason.
pub fn incoming(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    on_refused: impl Fn(&str) + Send + Sync + 'static,
) -> impl Stream<Item = Result<TlsConn, std::io::Error>> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let acceptor = TlsAcceptor::from(config);
    let on_refused = Arc::new(on_refused);
    tokio::spawn(async move {
        loop {
            let (tcp, remote) = tokio::select! {
                _ = tx.closed() => return,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(err) => {
                        // Out of file descriptors and the like: back off a little.
                        tracing::warn!(error = %err, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let _ = tcp.set_nodelay(true);
            let (tx, acceptor, on_refused) = (tx.clone(), acceptor.clone(), on_refused.clone());
            tokio::spawn(async move {
                let accept = acceptor.accept(tcp).into_fallible();
                let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, accept).await {
                    Ok(Ok(stream)) => stream,
                    Ok(Err((err, tcp))) => {
                        tracing::info!(%remote, error = %err, "TLS handshake refused");
                        on_refused(&reason(&err));
                        linger(tcp).await;
                        return;
                    }
                    Err(_) => {
                        tracing::info!(%remote, "TLS handshake timed out");
                        on_refused("timeout");
                        return;
                    }
                };
                let peer = match stream.get_ref().1.peer_certificates() {
                    Some([cert, ..]) => match peer_cert(cert) {
                        Ok(peer) => Some(Arc::new(peer)),
                        Err(err) => {
                            tracing::warn!(%remote, error = %err, "verified client certificate names no skiff role");
                            on_refused("no_role");
                            return;
                        }
                    },
                    _ => None,
                };
                let info = TlsConnInfo {
                    remote: Some(remote),
                    peer,
                };
                let _ = tx.send(Ok(TlsConn { stream, info })).await;
            });
        }
    });
    ReceiverStream::new(rx)
}

/// Closes a refused connection so that the client reads the alert: a
/// close with the client's unread data still queued (TLS 1.3 clients send
/// their request right after their certificate) would be a reset, which
/// can discard the alert before the client reads it. So: FIN after the
/// alert, then read and drop what comes until the client closes too.
async fn linger(mut tcp: TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = tcp.shutdown().await;
    let mut sink = [0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while matches!(tcp.read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await;
}

/// A short, stable label for a refused handshake (for a metric).
fn reason(err: &std::io::Error) -> String {
    let Some(tls) = err
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    else {
        return "io".to_owned();
    };
    match tls {
        rustls::Error::InvalidCertificate(cert) => match cert {
            rustls::CertificateError::Expired | rustls::CertificateError::ExpiredContext { .. } => {
                "expired"
            }
            rustls::CertificateError::UnknownIssuer => "unknown_ca",
            rustls::CertificateError::NotValidYet
            | rustls::CertificateError::NotValidYetContext { .. } => "not_yet_valid",
            _ => "bad_certificate",
        }
        .to_owned(),
        rustls::Error::NoCertificatesPresented => "no_certificate".to_owned(),
        _ => "handshake".to_owned(),
    }
}
