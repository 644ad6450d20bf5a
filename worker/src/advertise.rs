//! The address this worker tells the control plane to dial for logs. A
//! listener on an unspecified address (`0.0.0.0`, `::`) cannot be dialed
//! back as such (the API would dial itself): then the worker advertises the
//! address of the interface it reaches the control plane through, found by
//! the kernel's routing (a connected UDP socket sends nothing). Or the
//! operator says it (`SKIFF_AGENT_ADVERTISE`; the Kubernetes manifest uses
//! the pod IP). Never an unspecified address.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs, UdpSocket};

#[derive(Debug, thiserror::Error)]
pub enum AdvertiseError {
    #[error(
        "SKIFF_AGENT_ADVERTISE {0} is an unspecified address: the control plane cannot dial it"
    )]
    Unspecified(SocketAddr),
    #[error("finding the interface that reaches the control plane at {control_plane}: {source}")]
    Route {
        control_plane: String,
        #[source]
        source: std::io::Error,
    },
    #[error("control plane address {0:?} has no host:port")]
    ControlPlane(String),
}

/// The decision, given what the kernel says about the route
/// (`route_ip`, asked only when needed).
pub fn advertise_addr(
    listening: SocketAddr,
    configured: Option<SocketAddr>,
    route_ip: impl FnOnce() -> Result<IpAddr, AdvertiseError>,
) -> Result<SocketAddr, AdvertiseError> {
    if let Some(addr) = configured {
        if addr.ip().is_unspecified() {
            return Err(AdvertiseError::Unspecified(addr));
        }
        return Ok(addr);
    }
    if !listening.ip().is_unspecified() {
        return Ok(listening);
    }
    Ok(SocketAddr::new(route_ip()?, listening.port()))
}

/// The local address the kernel would use to reach `control_plane` (a URL
/// such as `http://10.0.0.1:8081`).
pub fn route_to(control_plane: &str) -> Result<IpAddr, AdvertiseError> {
    let authority = control_plane
        .split("://")
        .nth(1)
        .unwrap_or(control_plane)
        .split('/')
        .next()
        .unwrap_or_default();
    let target = authority
        .to_socket_addrs()
        .map_err(|_| AdvertiseError::ControlPlane(control_plane.to_owned()))?
        .next()
        .ok_or_else(|| AdvertiseError::ControlPlane(control_plane.to_owned()))?;
    let route = |source| AdvertiseError::Route {
        control_plane: control_plane.to_owned(),
        source,
    };
    let bind: SocketAddr = if target.is_ipv4() {
        "0.0.0.0:0".parse().expect("literal")
    } else {
        "[::]:0".parse().expect("literal")
    };
    let socket = UdpSocket::bind(bind).map_err(route)?;
    socket.connect(target).map_err(route)?;
    Ok(socket.local_addr().map_err(route)?.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn decisions() {
        let loopback = || Ok("127.0.0.1".parse().unwrap());
        let unreachable = || -> Result<IpAddr, AdvertiseError> { panic!("no route asked for") };
        // A specific listen address is dialable as it is.
        assert_eq!(
            advertise_addr(addr("10.1.2.3:8082"), None, unreachable).unwrap(),
            addr("10.1.2.3:8082")
        );
        // An unspecified one advertises the route's interface, same port.
        assert_eq!(
            advertise_addr(addr("0.0.0.0:8082"), None, loopback).unwrap(),
            addr("127.0.0.1:8082")
        );
        // The operator's word wins, but never an unspecified address.
        assert_eq!(
            advertise_addr(
                addr("0.0.0.0:8082"),
                Some(addr("10.9.9.9:18082")),
                unreachable
            )
            .unwrap(),
            addr("10.9.9.9:18082")
        );
        assert!(matches!(
            advertise_addr(
                addr("0.0.0.0:8082"),
                Some(addr("0.0.0.0:8082")),
                unreachable
            ),
            Err(AdvertiseError::Unspecified(_))
        ));
    }

    #[test]
    fn the_route_to_a_loopback_control_plane_is_loopback() {
        let ip = route_to("http://127.0.0.1:8081").unwrap();
        assert!(ip.is_loopback(), "{ip}");
        assert!(route_to("not a url").is_err());
    }
}
