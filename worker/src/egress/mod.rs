//! Egress policy for the fetches a tenant directs: which registry hosts and
//! addresses the worker may reach when it pulls an image, and which of them
//! over plain HTTP.
//!
//! The decision is a pure function ([`EgressPolicy::check`]) of the target
//! (host, port, scheme) and every address its name resolves to, table-tested
//! below. It is enforced in two places: before a pull (so a refused pull
//! fails with a message naming the policy), and by the egress proxy
//! ([`proxy`]) every registry connection goes through, which checks each
//! connection (redirects to other hosts included) against the addresses it
//! then connects to, so a name that resolves differently the second time
//! (DNS rebinding) gains nothing.
//!
//! The rules, in order:
//! 1. a target matching the operator's deny list (a host, `host:port`, or a
//!    network containing one of its addresses) is refused;
//! 2. a target named in the allow list (host or `host:port`), or one whose
//!    addresses all lie in allowed networks, is allowed;
//! 3. with a non-empty allow list, anything else is refused;
//! 4. addresses no registry of a tenant's should live at (loopback,
//!    link-local with the cloud metadata endpoints, unspecified, multicast,
//!    broadcast, and the metadata addresses of AWS's IPv6 and Alibaba) are
//!    refused unless rule 2 allowed them.
//!
//! Plain HTTP is allowed only to registries named in the plain-HTTP list
//! (which also allows them by name, as rule 2).

pub mod proxy;

use ipnet::IpNet;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// One entry of an allow or deny list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    /// A host name or address, any port.
    Host(String),
    /// A host name or address with one port.
    HostPort(String, u16),
    /// Every address in a network.
    Net(IpNet),
}

impl FromStr for Rule {
    type Err = RuleError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.is_empty() {
            return Err(RuleError(s.to_owned()));
        }
        if s.contains('/') {
            return s
                .parse::<IpNet>()
                .map(|net| Rule::Net(canonical_net(net)))
                .map_err(|_| RuleError(s.to_owned()));
        }
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(Rule::Host(ip.to_canonical().to_string()));
        }
        // host:port, or [v6]:port
        if let Some((host, port)) = s.rsplit_once(':') {
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let port = port.parse().map_err(|_| RuleError(s.to_owned()))?;
            if valid_host(host) {
                return Ok(Rule::HostPort(normal_host(host), port));
            }
            return Err(RuleError(s.to_owned()));
        }
        if valid_host(s) {
            Ok(Rule::Host(normal_host(s)))
        } else {
            Err(RuleError(s.to_owned()))
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rule::Host(h) => write!(f, "{h}"),
            Rule::HostPort(h, p) if h.contains(':') => write!(f, "[{h}]:{p}"),
            Rule::HostPort(h, p) => write!(f, "{h}:{p}"),
            Rule::Net(n) => write!(f, "{n}"),
        }
    }
}

/// An entry that is neither a host, a `host:port` nor a network.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a host, host:port or network (CIDR)")]
pub struct RuleError(String);

impl Rule {
    fn names(&self, host: &str, port: u16) -> bool {
        match self {
            Rule::Host(h) => *h == host,
            Rule::HostPort(h, p) => *h == host && *p == port,
            Rule::Net(_) => false,
        }
    }

    fn contains(&self, addr: IpAddr) -> bool {
        match self {
            Rule::Net(net) => net.contains(&addr),
            // An address written as a host rule.
            Rule::Host(h) => h.parse::<IpAddr>().is_ok_and(|ip| ip == addr),
            Rule::HostPort(..) => false,
        }
    }
}

/// How a registry is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Https,
    Http,
}

/// Why a fetch was refused; its `Display` names the setting to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("{target} is refused by the egress policy: it matches {rule} in SKIFF_REGISTRY_DENY")]
    Denied { target: String, rule: String },
    #[error("{target} is refused by the egress policy: it is not in SKIFF_REGISTRY_ALLOW")]
    NotAllowed { target: String },
    #[error("{target} is refused by the egress policy: it resolves to {addr}, a {kind} address, refused unless SKIFF_REGISTRY_ALLOW names it")]
    Reserved {
        target: String,
        addr: IpAddr,
        kind: &'static str,
    },
    #[error("{target} is refused by the egress policy: plain HTTP only to registries in SKIFF_INSECURE_REGISTRIES")]
    PlainHttp { target: String },
    #[error("{target} is refused by the egress policy: its name resolves to no address")]
    Unresolved { target: String },
}

/// The operator's egress policy for registry fetches.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EgressPolicy {
    pub allow: Vec<Rule>,
    pub deny: Vec<Rule>,
    /// Registries reached over plain HTTP (hosts or `host:port`).
    pub plain_http: Vec<Rule>,
}

impl EgressPolicy {
    /// Whether `host:port` over `scheme`, resolving to `addrs`, may be
    /// fetched from.
    pub fn check(
        &self,
        host: &str,
        port: u16,
        scheme: Scheme,
        addrs: &[IpAddr],
    ) -> Result<(), Refusal> {
        let host = normal_host(host);
        let target = || match host.contains(':') {
            true => format!("[{host}]:{port}"),
            false => format!("{host}:{port}"),
        };
        let addrs: Vec<IpAddr> = addrs.iter().map(|a| a.to_canonical()).collect();
        if let Some(rule) = self
            .deny
            .iter()
            .find(|r| r.names(&host, port) || addrs.iter().any(|a| r.contains(*a)))
        {
            return Err(Refusal::Denied {
                target: target(),
                rule: rule.to_string(),
            });
        }
        let named_plain = self.plain_http.iter().any(|r| r.names(&host, port));
        if scheme == Scheme::Http && !named_plain {
            return Err(Refusal::PlainHttp { target: target() });
        }
        if addrs.is_empty() {
            return Err(Refusal::Unresolved { target: target() });
        }
        let allowed = named_plain
            || self.allow.iter().any(|r| r.names(&host, port))
            || addrs
                .iter()
                .all(|a| self.allow.iter().any(|r| r.contains(*a)));
        if allowed {
            return Ok(());
        }
        if !self.allow.is_empty() {
            return Err(Refusal::NotAllowed { target: target() });
        }
        match addrs
            .iter()
            .find_map(|a| reserved(*a).map(|kind| (*a, kind)))
        {
            Some((addr, kind)) => Err(Refusal::Reserved {
                target: target(),
                addr,
                kind,
            }),
            None => Ok(()),
        }
    }

    /// Whether the registry `host:port` is one reached over plain HTTP.
    pub fn plain_http_for(&self, host: &str, port: u16) -> bool {
        let host = normal_host(host);
        self.plain_http.iter().any(|r| r.names(&host, port))
    }
}

/// The kind of an address no tenant's registry should be at, if it is one.
fn reserved(addr: IpAddr) -> Option<&'static str> {
    match addr {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            if v4.is_loopback() {
                Some("loopback")
            } else if v4.is_link_local() {
                Some("link-local (cloud metadata)")
            } else if v4.is_unspecified() || o[0] == 0 {
                Some("unspecified")
            } else if v4.is_multicast() || v4.is_broadcast() {
                Some("multicast or broadcast")
            } else if o == [100, 100, 100, 200] || o == [168, 63, 129, 16] {
                // Alibaba's metadata; Azure's WireServer.
                Some("cloud metadata")
            } else {
                None
            }
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            if v6.is_loopback() {
                Some("loopback")
            } else if s[0] & 0xffc0 == 0xfe80 {
                Some("link-local (cloud metadata)")
            } else if v6.is_unspecified() {
                Some("unspecified")
            } else if v6.is_multicast() {
                Some("multicast or broadcast")
            } else if s == [0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254] {
                Some("cloud metadata")
            } else {
                None
            }
        }
    }
}

/// An IPv4-mapped IPv6 network as the IPv4 network it is (resolved
/// addresses are compared in their canonical form).
fn canonical_net(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.addr().to_ipv4_mapped() {
            Some(v4) => ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96)
                .map(IpNet::V4)
                .unwrap_or(net),
            None => net,
        },
        other => other,
    }
}

fn valid_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && (host.parse::<IpAddr>().is_ok()
            || host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-')))
}

/// Names compare without case and without a trailing dot; addresses in
/// their canonical spelling.
fn normal_host(host: &str) -> String {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    match host.parse::<IpAddr>() {
        Ok(ip) => ip.to_canonical().to_string(),
        Err(_) => host.trim_end_matches('.').to_ascii_lowercase(),
    }
}

/// Parses a comma-separated list of rules (for the configuration).
pub fn parse_rules(list: &[String]) -> Result<Vec<Rule>, RuleError> {
    list.iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .map(str::parse)
        .collect()
}

#[cfg(test)]
mod tests;
