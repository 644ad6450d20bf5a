//! The control plane's replicas this worker may dial. Every replica serves
//! the whole pool (they share only PostgreSQL), so a session may use any of
//! them: the worker stays with one while it works and moves to the next
//! when a session fails, so one replica's restart cannot silence the host
//! for longer than a reconnect. Reports follow the session's replica.

use super::AgentError;
use async_trait::async_trait;
use skiff_proto as pb;
use skiff_proto::control_plane_client::ControlPlaneClient;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};

use super::report::ReportSink;

/// A client of the control plane at `addr` that connects on first use (and
/// reconnects by itself), so a control plane that is down at the worker's
/// start delays nothing but the session.
pub fn control_plane_client(addr: &str) -> Result<ControlPlaneClient<Channel>, AgentError> {
    let endpoint = Endpoint::from_shared(addr.to_owned())
        .map_err(|source| AgentError::Endpoint {
            addr: addr.to_owned(),
            source,
        })?
        .connect_timeout(Duration::from_secs(3))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_while_idle(true);
    Ok(ControlPlaneClient::new(endpoint.connect_lazy()))
}

/// The replicas, in the order configured, and the one in use.
pub struct ControlPlanes {
    replicas: Vec<(String, ControlPlaneClient<Channel>)>,
    current: AtomicUsize,
}

impl ControlPlanes {
    /// At least one address; each a URL such as `http://10.0.0.1:8081`.
    pub fn new(addrs: &[String]) -> Result<Self, AgentError> {
        let replicas = addrs
            .iter()
            .map(|addr| Ok((addr.clone(), control_plane_client(addr)?)))
            .collect::<Result<Vec<_>, AgentError>>()?;
        if replicas.is_empty() {
            return Err(AgentError::NoControlPlane);
        }
        Ok(Self {
            replicas,
            current: AtomicUsize::new(0),
        })
    }

    fn index(&self) -> usize {
        self.current.load(Ordering::Acquire) % self.replicas.len()
    }

    /// The replica in use and its address.
    pub fn current(&self) -> (&str, ControlPlaneClient<Channel>) {
        let (addr, client) = &self.replicas[self.index()];
        (addr, client.clone())
    }

    /// After a failed session: the next replica (the same one when there is
    /// only one).
    pub fn rotate(&self) {
        if self.replicas.len() > 1 {
            let next = self.current.fetch_add(1, Ordering::AcqRel) + 1;
            tracing::info!(control_plane = %self.replicas[next % self.replicas.len()].0,
                "trying the next control plane replica");
        }
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

    // connect_lazy needs a runtime even though nothing is dialed.
    #[tokio::test]
    async fn rotates_through_the_replicas_and_stays_on_a_single_one() {
        let addrs = ["http://127.0.0.1:1", "http://127.0.0.1:2"].map(String::from);
        let planes = ControlPlanes::new(&addrs).unwrap();
        assert_eq!(planes.current().0, addrs[0]);
        planes.rotate();
        assert_eq!(planes.current().0, addrs[1]);
        planes.rotate();
        assert_eq!(planes.current().0, addrs[0]);
        let single = ControlPlanes::new(&addrs[..1]).unwrap();
        single.rotate();
        assert_eq!(single.current().0, addrs[0]);
        assert!(matches!(
            ControlPlanes::new(&[]),
            Err(AgentError::NoControlPlane)
        ));
        assert!(ControlPlanes::new(&["not a url".to_owned()]).is_err());
    }
}
