//! Published host ports, held. The portmap plugin only writes DNAT rules:
//! it reserves nothing, so a host process on the same port would be
//! silently shadowed. The worker binds each published port (without
//! listening: DNAT happens before local delivery, so the socket never sees
//! a packet) for as long as the container has it, so nobody else can take
//! it, and a port someone else holds is refused before it is published.
//!
//! The control plane assigns host ports; a port it hands to a new run may
//! still be held by a run that just ended here and is being torn down (the
//! exit is reported before the network is). Such a claim waits for the
//! release instead of racing the old DNAT rules.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::Notify;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PortError {
    #[error("host port {port}/{} on {ip} is in use by another process on this host: {source}", protocol.as_str())]
    InUse {
        ip: IpAddr,
        port: u16,
        protocol: Protocol,
        #[source]
        source: std::io::Error,
    },
    #[error("host port {port}/{} is still held by container {holder} after {waited:?}", protocol.as_str())]
    StillHeld {
        port: u16,
        protocol: Protocol,
        holder: String,
        waited: Duration,
    },
}

/// A bound socket keeping a port.
#[derive(Debug)]
enum Held {
    Tcp(#[allow(dead_code)] tokio::net::TcpSocket),
    Udp(#[allow(dead_code)] std::net::UdpSocket),
}

/// The ports this worker's containers hold.
#[derive(Debug)]
pub struct Ports {
    ip: IpAddr,
    held: Mutex<HashMap<(u16, Protocol), (String, Held)>>,
    released: Notify,
}

impl Ports {
    /// Ports published on `ip` (0.0.0.0: every address of the host).
    pub fn new(ip: IpAddr) -> Self {
        Self {
            ip,
            held: Mutex::new(HashMap::new()),
            released: Notify::new(),
        }
    }

    /// Takes `wanted` for container `id`, waiting up to `wait` for ports
    /// another container of ours still holds. All or none.
    pub async fn claim(
        &self,
        id: &str,
        wanted: &[(u16, Protocol)],
        wait: Duration,
    ) -> Result<(), PortError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let notified = self.released.notified();
            match self.try_claim(id, wanted) {
                Ok(()) => return Ok(()),
                Err(Busy::Foreign(e)) => return Err(e),
                Err(Busy::Ours {
                    port,
                    protocol,
                    holder,
                }) => {
                    if tokio::time::timeout_at(deadline, notified).await.is_err() {
                        return Err(PortError::StillHeld {
                            port,
                            protocol,
                            holder,
                            waited: wait,
                        });
                    }
                }
            }
        }
    }

    fn try_claim(&self, id: &str, wanted: &[(u16, Protocol)]) -> Result<(), Busy> {
        let mut held = self.held.lock().expect("ports lock");
        for key in wanted {
            if let Some((holder, _)) = held.get(key) {
                if holder != id {
                    return Err(Busy::Ours {
                        port: key.0,
                        protocol: key.1,
                        holder: holder.clone(),
                    });
                }
            }
        }
        let mut taken = Vec::new();
        for &(port, protocol) in wanted {
            if held.contains_key(&(port, protocol)) {
                continue;
            }
            match bind(self.ip, port, protocol) {
                Ok(socket) => {
                    held.insert((port, protocol), (id.to_owned(), socket));
                    taken.push((port, protocol));
                }
                Err(source) => {
                    for key in taken {
                        held.remove(&key);
                    }
                    return Err(Busy::Foreign(PortError::InUse {
                        ip: self.ip,
                        port,
                        protocol,
                        source,
                    }));
                }
            }
        }
        Ok(())
    }

    /// Releases every port `id` holds.
    pub fn release(&self, id: &str) {
        let mut held = self.held.lock().expect("ports lock");
        let before = held.len();
        held.retain(|_, (holder, _)| holder != id);
        if held.len() != before {
            self.released.notify_waiters();
        }
    }

    /// Ports held now, for tests and metrics.
    pub fn held(&self) -> Vec<(u16, Protocol, String)> {
        let held = self.held.lock().expect("ports lock");
        let mut v: Vec<_> = held
            .iter()
            .map(|((p, proto), (id, _))| (*p, *proto, id.clone()))
            .collect();
        v.sort();
        v
    }
}

enum Busy {
    Foreign(PortError),
    Ours {
        port: u16,
        protocol: Protocol,
        holder: String,
    },
}

fn bind(ip: IpAddr, port: u16, protocol: Protocol) -> std::io::Result<Held> {
    let addr = SocketAddr::new(ip, port);
    match protocol {
        Protocol::Tcp => {
            let socket = if ip.is_ipv4() {
                tokio::net::TcpSocket::new_v4()?
            } else {
                tokio::net::TcpSocket::new_v6()?
            };
            // Never share: a host process binding the port must fail.
            socket.set_reuseaddr(false)?;
            socket.bind(addr)?;
            Ok(Held::Tcp(socket))
        }
        Protocol::Udp => Ok(Held::Udp(std::net::UdpSocket::bind(addr)?)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    #[tokio::test]
    async fn a_held_port_refuses_others_until_released() {
        let ports = Ports::new("127.0.0.1".parse().unwrap());
        let p = free_port();
        ports
            .claim("a", &[(p, Protocol::Tcp)], Duration::ZERO)
            .await
            .unwrap();
        // Nobody else binds it while held (the point of holding it).
        assert!(std::net::TcpListener::bind(("127.0.0.1", p)).is_err());
        // The same container claiming again is fine.
        ports
            .claim("a", &[(p, Protocol::Tcp)], Duration::ZERO)
            .await
            .unwrap();
        // Another container waits, then gives up.
        let err = ports
            .claim("b", &[(p, Protocol::Tcp)], Duration::from_millis(20))
            .await
            .unwrap_err();
        assert!(matches!(err, PortError::StillHeld { .. }), "{err}");
        ports.release("a");
        assert!(ports.held().is_empty());
        ports
            .claim("b", &[(p, Protocol::Tcp)], Duration::ZERO)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_waiting_claim_takes_the_port_when_it_is_released() {
        let ports = Arc::new(Ports::new("127.0.0.1".parse().unwrap()));
        let p = free_port();
        ports
            .claim("a", &[(p, Protocol::Udp)], Duration::ZERO)
            .await
            .unwrap();
        let waiter = {
            let ports = ports.clone();
            tokio::spawn(async move {
                ports
                    .claim("b", &[(p, Protocol::Udp)], Duration::from_secs(30))
                    .await
            })
        };
        tokio::task::yield_now().await;
        ports.release("a");
        waiter.await.unwrap().unwrap();
        assert_eq!(ports.held(), vec![(p, Protocol::Udp, "b".to_owned())]);
    }

    #[tokio::test]
    async fn a_port_a_host_process_holds_is_refused_at_once_and_nothing_is_kept() {
        let ports = Ports::new("127.0.0.1".parse().unwrap());
        let foreign = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let taken = foreign.local_addr().unwrap().port();
        let free = free_port();
        let err = ports
            .claim(
                "a",
                &[(free, Protocol::Tcp), (taken, Protocol::Tcp)],
                Duration::from_secs(30),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(err, PortError::InUse { port, .. } if port == taken),
            "{err}"
        );
        // All or none: the free one was let go again.
        assert!(ports.held().is_empty());
    }
}
