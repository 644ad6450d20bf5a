//! The control plane's replicas this worker may dial. Every replica serves
//! the whole pool (they share only PostgreSQL), so a session may use any of
//! them: the worker stays with one while it works and moves to the next
//! when a session fails, so one replica's restart cannot silence the host
//! for longer than a reconnect. Reports follow the session's replica.
//!
//! Every channel is mutual TLS: the worker verifies the replica's
//! certificate names the control plane, and presents its own host
//! certificate. After a renewal, [`ControlPlanes::reconnect`] makes new
//! channels so that calls go out with the new certificate (the control
//! plane refuses an expired one even on a connection made while it was
//! valid).

use super::AgentError;
use async_trait::async_trait;
use skiff_proto as pb;
use skiff_proto::control_plane_client::ControlPlaneClient;
use skiff_proto::tls::{connect, CONTROL_PLANE_NAME};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tonic::transport::Channel;

use super::report::ReportSink;

/// A client of the control plane at `addr` that connects on first use (and
/// reconnects by itself), so a control plane that is down at the worker's
/// start delays nothing but the session.
pub fn control_plane_client(
    addr: &str,
    tls: Arc<rustls::ClientConfig>,
) -> Result<ControlPlaneClient<Channel>, AgentError> {
    let channel = connect::channel(addr, tls, CONTROL_PLANE_NAME, Duration::from_secs(3))?;
    Ok(ControlPlaneClient::new(channel))
}

/// The replicas, in the order configured, and the one in use.
pub struct ControlPlanes {
    addrs: Vec<String>,
    tls: Arc<rustls::ClientConfig>,
    clients: RwLock<Vec<ControlPlaneClient<Channel>>>,
    current: AtomicUsize,
    /// Bumped by every [`ControlPlanes::reconnect`].
    generation: tokio::sync::watch::Sender<u64>,
}

impl ControlPlanes {
    /// At least one address; each a URL such as `https://10.0.0.1:8081`.
    pub fn new(addrs: &[String], tls: Arc<rustls::ClientConfig>) -> Result<Self, AgentError> {
        if addrs.is_empty() {
            return Err(AgentError::NoControlPlane);
        }
        let clients = Self::connect(addrs, &tls)?;
        Ok(Self {
            addrs: addrs.to_vec(),
            tls,
            clients: RwLock::new(clients),
            current: AtomicUsize::new(0),
            generation: tokio::sync::watch::Sender::new(0),
        })
    }

    fn connect(
        addrs: &[String],
        tls: &Arc<rustls::ClientConfig>,
    ) -> Result<Vec<ControlPlaneClient<Channel>>, AgentError> {
        addrs
            .iter()
            .map(|addr| control_plane_client(addr, tls.clone()))
            .collect()
    }

    fn index(&self) -> usize {
        self.current.load(Ordering::Acquire) % self.addrs.len()
    }

    /// The replica in use and its address.
    pub fn current(&self) -> (&str, ControlPlaneClient<Channel>) {
        let i = self.index();
        let client = self.clients.read().expect("control plane clients lock")[i].clone();
        (&self.addrs[i], client)
    }

    /// After a failed session: the next replica (the same one when there is
    /// only one).
    pub fn rotate(&self) {
        if self.addrs.len() > 1 {
            let next = self.current.fetch_add(1, Ordering::AcqRel) + 1;
            tracing::info!(control_plane = %self.addrs[next % self.addrs.len()],
                "trying the next control plane replica");
        }
    }

    /// New channels to every replica (new TLS handshakes, with the
    /// credential in use now). Calls under way finish on the old ones.
    pub fn reconnect(&self) -> Result<(), AgentError> {
        let clients = Self::connect(&self.addrs, &self.tls)?;
        *self.clients.write().expect("control plane clients lock") = clients;
        self.generation.send_modify(|g| *g += 1);
        Ok(())
    }

    /// Changes at every [`ControlPlanes::reconnect`]: a session on an older
    /// channel should end and start again on a new one.
    pub fn reconnected(&self) -> tokio::sync::watch::Receiver<u64> {
        self.generation.subscribe()
    }
}

#[async_trait]
impl ReportSink for ControlPlanes {
    async fn status(&self, report: pb::StatusReport) -> Result<(), tonic::Status> {
        self.current().1.report_status(report).await.map(|_| ())
    }

    async fn usage(&self, checkpoint: pb::UsageCheckpoint) -> Result<(), tonic::Status> {
        self.current().1.report_usage(checkpoint).await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tls() -> Arc<rustls::ClientConfig> {
        let ca = skiff_proto::tls::pki::create_authority("t", Duration::from_secs(60)).unwrap();
        let trust = skiff_proto::tls::pki::parse_certs(&ca.cert_pem).unwrap();
        skiff_proto::tls::client_config(&trust, None).unwrap()
    }

    // connect_lazy needs a runtime even though nothing is dialed.
    #[tokio::test]
    async fn rotates_through_the_replicas_and_stays_on_a_single_one() {
        let addrs = ["https://127.0.0.1:1", "https://127.0.0.1:2"].map(String::from);
        let planes = ControlPlanes::new(&addrs, tls()).unwrap();
        assert_eq!(planes.current().0, addrs[0]);
        planes.rotate();
        assert_eq!(planes.current().0, addrs[1]);
        planes.reconnect().unwrap();
        assert_eq!(
            planes.current().0,
            addrs[1],
            "a reconnect keeps the replica"
        );
        planes.rotate();
        assert_eq!(planes.current().0, addrs[0]);
        let single = ControlPlanes::new(&addrs[..1], tls()).unwrap();
        single.rotate();
        assert_eq!(single.current().0, addrs[0]);
        assert!(matches!(
            ControlPlanes::new(&[], tls()),
            Err(AgentError::NoControlPlane)
        ));
        assert!(ControlPlanes::new(&["not a url".to_owned()], tls()).is_err());
        assert!(
            ControlPlanes::new(&["http://127.0.0.1:1".to_owned()], tls()).is_err(),
            "plain http is refused: the channel is always TLS"
        );
    }
}
