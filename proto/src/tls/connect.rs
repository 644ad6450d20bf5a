//! A tonic channel over TLS to `host:port`, verifying that the server's
//! certificate names `server_name` (not the address dialed: a worker dials
//! the control plane at any address and expects [`super::CONTROL_PLANE_NAME`];
//! the control plane dials a host's agent and expects that host's name).

use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint, Uri};

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("{addr:?} is not a host:port or URL with one: {reason}")]
    Address { addr: String, reason: String },
    #[error("{0:?} is not a valid server name")]
    ServerName(String),
}

/// The `host:port` of `addr`, which may be a URL (`https://10.0.0.1:8081`).
pub fn authority(addr: &str) -> Result<String, ConnectError> {
    let bad = |reason: String| ConnectError::Address {
        addr: addr.to_owned(),
        reason,
    };
    let uri: Uri = if addr.contains("://") {
        addr.parse()
            .map_err(|e: tonic::codegen::http::uri::InvalidUri| bad(e.to_string()))?
    } else {
        format!("tls://{addr}")
            .parse()
            .map_err(|e: tonic::codegen::http::uri::InvalidUri| bad(e.to_string()))?
    };
    match uri.scheme_str() {
        Some("https" | "tls") => {}
        other => {
            return Err(bad(format!(
                "scheme {other:?}: the worker channel is always TLS (https://)"
            )))
        }
    }
    let authority = uri.authority().ok_or_else(|| bad("no host".into()))?;
    if authority.port_u16().is_none() {
        return Err(bad("no port".into()));
    }
    Ok(authority.as_str().to_owned())
}

/// A channel that connects on first use (and reconnects by itself).
pub fn channel(
    addr: &str,
    config: Arc<ClientConfig>,
    server_name: &str,
    connect_timeout: Duration,
) -> Result<Channel, ConnectError> {
    let authority = authority(addr)?;
    let name = ServerName::try_from(server_name.to_owned())
        .map_err(|_| ConnectError::ServerName(server_name.to_owned()))?;
    // The scheme is for tonic only: the connector below does the TLS.
    let endpoint = Endpoint::from_shared(format!("http://{authority}"))
        .map_err(|e| ConnectError::Address {
            addr: addr.to_owned(),
            reason: e.to_string(),
        })?
        .connect_timeout(connect_timeout)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_while_idle(true);
    let connector = TlsConnector::from(config);
    let connect = tower::service_fn(move |_: Uri| {
        let (connector, name, authority) = (connector.clone(), name.clone(), authority.clone());
        async move {
            let tcp = TcpStream::connect(authority.as_str()).await?;
            tcp.set_nodelay(true)?;
            let tls = connector.connect(name, tcp).await?;
            Ok::<_, std::io::Error>(TokioIo::new(tls))
        }
    });
    Ok(endpoint.connect_with_connector_lazy(connect))
}
