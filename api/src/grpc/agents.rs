//! The client for the workers' `WorkerAgent` endpoints (logs): mutual TLS
//! with this replica's certificate, verifying that the agent dialed is the
//! host it should be (its certificate names that host), whatever answers at
//! the address.

use skiff_proto as pb;
use skiff_proto::tls::names::host_dns_name;
use skiff_proto::tls::{connect, Credentials};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::transport::Channel;
use tonic::Status;

/// Clients for the workers' agent endpoints, one channel per host and
/// address, made again once this replica's certificate was renewed (a
/// connection keeps the certificate of its handshake, and agents refuse an
/// expired one).
pub struct AgentClients {
    config: Arc<rustls::ClientConfig>,
    own: Arc<Credentials>,
    channels: Mutex<HashMap<(String, String), (String, Channel)>>,
}

impl AgentClients {
    /// `config` presents `own`.
    pub fn new(config: Arc<rustls::ClientConfig>, own: Arc<Credentials>) -> Self {
        Self {
            config,
            own,
            channels: Mutex::default(),
        }
    }

    /// A client of `host`'s agent at `addr` (as the host registered it).
    pub fn client(
        &self,
        host: &str,
        addr: &str,
    ) -> Result<pb::worker_agent_client::WorkerAgentClient<Channel>, Status> {
        let serial = self.own.current().cert.serial;
        let mut channels = self.channels.lock().expect("agent clients lock");
        let key = (host.to_owned(), addr.to_owned());
        let channel = match channels.get(&key) {
            Some((made_with, channel)) if *made_with == serial => channel.clone(),
            _ => {
                let channel = connect::channel(
                    addr,
                    self.config.clone(),
                    &host_dns_name(host),
                    Duration::from_secs(3),
                )
                .map_err(|e| Status::internal(format!("agent of host {host}: {e}")))?;
                channels.insert(key, (serial, channel.clone()));
                channel
            }
        };
        Ok(pb::worker_agent_client::WorkerAgentClient::new(channel))
    }
}
