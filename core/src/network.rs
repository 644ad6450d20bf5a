//! A container's network: its mode, the group of containers it may reach,
//! and the ports it publishes on its host; and the rules a request's
//! network fields follow.
//!
//! `private` gives a container its own network namespace with an address
//! on its host's bridge; `none` leaves it loopback only. A private
//! container reaches only containers of its own tenant that name the same
//! `network_group` (none: no other container at all). Its published ports
//! get host ports from its host's range, assigned by the control plane when
//! it is placed ([`PublishedPort`]).

use crate::FieldError;
use once_cell::sync::Lazy;
use regex::Regex;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

/// At most this many published ports on one container.
pub const MAX_PORTS: usize = 16;

/// A `network_group` is a DNS label: lowercase letters, digits and '-',
/// starting and ending with a letter or digit, 1 to 63 characters.
pub const NETWORK_GROUP_PATTERN: &str = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$";

static NETWORK_GROUP: Lazy<Regex> = Lazy::new(|| Regex::new(NETWORK_GROUP_PATTERN).unwrap());

/// A DNS label ([`NETWORK_GROUP_PATTERN`]): network groups, volume and group names.
pub fn is_dns_label(s: &str) -> bool {
    NETWORK_GROUP.is_match(s)
}

/// How a container is networked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(
    feature = "sqlx",
    derive(sqlx::Type),
    sqlx(type_name = "network_mode", rename_all = "snake_case")
)]
pub enum NetworkMode {
    /// Loopback only.
    None,
    /// Its own network namespace with an address on its host's bridge.
    #[default]
    Private,
}

impl NetworkMode {
    pub const ALL: [NetworkMode; 2] = [Self::None, Self::Private];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Private => "private",
        }
    }
}

impl fmt::Display for NetworkMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The transport protocol of a published port.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
}

impl Protocol {
    pub const ALL: [Protocol; 2] = [Self::Tcp, Self::Udp];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Protocol {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| format!("unknown protocol {s:?} (tcp or udp)"))
    }
}

/// A port a container asks to publish: its own `port`, and the host port
/// to publish it on (`host_port`), or any free one of its host's range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortRequest {
    pub port: u16,
    #[serde(default)]
    pub protocol: Protocol,
    #[serde(default)]
    pub host_port: Option<u16>,
}

/// A published port with its host port assigned (on the container's
/// current host, while it holds capacity there).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PublishedPort {
    pub port: u16,
    pub protocol: Protocol,
    pub host_port: u16,
}

/// Checks a request's `network`, `network_group` and `ports` together.
/// A field out of its own rules is a plain [`FieldError`]; fields that do
/// not go together (a group or ports without `network: private`, the same
/// port twice) are [`FieldError::unprocessable`].
pub fn validate_network(
    network: NetworkMode,
    group: Option<&str>,
    ports: &[PortRequest],
) -> Result<(), FieldError> {
    if let Some(group) = group {
        if !NETWORK_GROUP.is_match(group) {
            return Err(FieldError::new(
                "network_group",
                "must be 1 to 63 characters of a-z, 0-9 and '-', starting and ending with a letter or digit",
            ));
        }
    }
    if ports.len() > MAX_PORTS {
        return Err(FieldError::new("ports", "at most 16 ports"));
    }
    for (i, p) in ports.iter().enumerate() {
        if p.port == 0 {
            return Err(FieldError::new(
                format!("ports[{i}].port"),
                "must be 1 to 65535",
            ));
        }
        if p.host_port == Some(0) {
            return Err(FieldError::new(
                format!("ports[{i}].host_port"),
                "must be 1 to 65535",
            ));
        }
    }
    if network == NetworkMode::None {
        if group.is_some() {
            return Err(FieldError::unprocessable(
                "network_group",
                "only with network: private (network none reaches no other container)",
            ));
        }
        if !ports.is_empty() {
            return Err(FieldError::unprocessable(
                "ports",
                "only with network: private (network none publishes nothing)",
            ));
        }
    }
    let mut ports_seen: HashMap<(u16, Protocol), usize> = HashMap::new();
    let mut host_ports_seen: HashMap<(u16, Protocol), usize> = HashMap::new();
    for (i, p) in ports.iter().enumerate() {
        if let Some(first) = ports_seen.insert((p.port, p.protocol), i) {
            return Err(FieldError::unprocessable(
                format!("ports[{i}].port"),
                format!(
                    "{}/{} is published by ports[{first}] already",
                    p.port, p.protocol
                ),
            ));
        }
        if let Some(host_port) = p.host_port {
            if let Some(first) = host_ports_seen.insert((host_port, p.protocol), i) {
                return Err(FieldError::unprocessable(
                    format!("ports[{i}].host_port"),
                    format!(
                        "host port {host_port}/{} is asked for by ports[{first}] already",
                        p.protocol
                    ),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FieldErrorKind::{Invalid, Unprocessable};
    use NetworkMode::{None as Off, Private};

    fn port(port: u16, protocol: Protocol, host_port: Option<u16>) -> PortRequest {
        PortRequest {
            port,
            protocol,
            host_port,
        }
    }

    #[test]
    fn network_fields_table() {
        use Protocol::{Tcp, Udp};
        let ok = None;
        // (case, network, group, ports, refusal: field and kind)
        let long = "a".repeat(64);
        let max = "a".repeat(63);
        type Row<'a> = (
            &'a str,
            NetworkMode,
            Option<&'a str>,
            Vec<PortRequest>,
            Option<(&'a str, crate::FieldErrorKind)>,
        );
        #[rustfmt::skip]
        let rows: Vec<Row> = vec![
            ("nothing asked", Private, None, vec![], ok),
            ("none, nothing asked", Off, None, vec![], ok),
            ("a group", Private, Some("web-1"), vec![], ok),
            ("a 63-character group", Private, Some(&max), vec![], ok),
            ("a 64-character group", Private, Some(&long), vec![], Some(("network_group", Invalid))),
            ("an empty group", Private, Some(""), vec![], Some(("network_group", Invalid))),
            ("upper case", Private, Some("Web"), vec![], Some(("network_group", Invalid))),
            ("a leading dash", Private, Some("-web"), vec![], Some(("network_group", Invalid))),
            ("a trailing dash", Private, Some("web-"), vec![], Some(("network_group", Invalid))),
            ("an underscore", Private, Some("a_b"), vec![], Some(("network_group", Invalid))),
            ("a group with none", Off, Some("web"), vec![], Some(("network_group", Unprocessable))),
            ("ports", Private, None, vec![port(80, Tcp, None), port(80, Udp, Some(8080))], ok),
            ("ports with none", Off, None, vec![port(80, Tcp, None)], Some(("ports", Unprocessable))),
            ("port 0", Private, None, vec![port(80, Tcp, None), port(0, Tcp, None)], Some(("ports[1].port", Invalid))),
            ("host port 0", Private, None, vec![port(80, Tcp, Some(0))], Some(("ports[0].host_port", Invalid))),
            ("16 ports", Private, None, (1..=16).map(|p| port(p, Tcp, None)).collect(), ok),
            ("17 ports", Private, None, (1..=17).map(|p| port(p, Tcp, None)).collect(), Some(("ports", Invalid))),
            ("the same port twice", Private, None, vec![port(80, Tcp, None), port(80, Tcp, Some(8080))], Some(("ports[1].port", Unprocessable))),
            ("one port over tcp and udp", Private, None, vec![port(53, Tcp, None), port(53, Udp, None)], ok),
            ("the same host port twice", Private, None, vec![port(80, Tcp, Some(8080)), port(81, Tcp, Some(8080))], Some(("ports[1].host_port", Unprocessable))),
            ("one host port over tcp and udp", Private, None, vec![port(80, Tcp, Some(8080)), port(80, Udp, Some(8080))], ok),
        ];
        for (case, network, group, ports, want) in rows {
            let got = validate_network(network, group, &ports).err();
            let got = got.as_ref().map(|e| (e.field.as_str(), e.kind));
            assert_eq!(got, want, "{case}");
        }
    }

    #[test]
    fn requests_read_with_defaults_and_nothing_unknown() {
        let p: PortRequest = serde_json::from_str(r#"{"port": 80}"#).unwrap();
        assert_eq!(p, port(80, Protocol::Tcp, None));
        let p: PortRequest =
            serde_json::from_str(r#"{"port": 53, "protocol": "udp", "host_port": 5353}"#).unwrap();
        assert_eq!(p, port(53, Protocol::Udp, Some(5353)));
        assert!(serde_json::from_str::<PortRequest>(r#"{"port": 80, "proto": "tcp"}"#).is_err());
        assert!(serde_json::from_str::<PortRequest>(r#"{"port": 70000}"#).is_err());
        assert_eq!(NetworkMode::default(), NetworkMode::Private);
        assert_eq!(
            serde_json::to_string(&NetworkMode::None).unwrap(),
            r#""none""#
        );
    }
}
