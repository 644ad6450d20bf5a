//! Host ports as a resource, pure: which host ports a container's published
//! ports get on a host ([`assign_ports`]), and whether any host could ever
//! give a request its network ([`network_misfit`], for admission).
//!
//! A host offering a network publishes from one inclusive range of ports.
//! A (host port, protocol) pair is used by at most one container holding
//! capacity on the host; 8080/tcp and 8080/udp are two pairs. The control
//! plane assigns them when a container claims capacity (a placement, a new
//! run on its old host), under the placement lock, so two containers never
//! get the same pair.

use skiff_core::{NetworkMode, PortRequest, Protocol, PublishedPort};
use std::collections::{BTreeMap, BTreeSet};

/// A host's range of publishable ports, inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    pub start: u16,
    pub end: u16,
}

impl PortRange {
    pub fn contains(&self, port: u16) -> bool {
        (self.start..=self.end).contains(&port)
    }

    /// How many ports it holds (per protocol).
    pub fn len(&self) -> usize {
        usize::from(self.end.saturating_sub(self.start)) + usize::from(self.start <= self.end)
    }

    pub fn is_empty(&self) -> bool {
        self.start > self.end
    }
}

impl std::fmt::Display for PortRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.start, self.end)
    }
}

/// The (host port, protocol) pairs in use on a host.
pub type UsedPorts = BTreeSet<(u16, Protocol)>;

/// The host ports `requested` get in `range`, with `used` taken (in the
/// order requested); None when they cannot all have one. A fixed
/// `host_port` is honoured if it lies in the range and is free; the others
/// take the lowest free ports of the range, past the fixed ones and each
/// other.
pub fn assign_ports(
    requested: &[PortRequest],
    range: PortRange,
    used: &UsedPorts,
) -> Option<Vec<PublishedPort>> {
    let mut taken = used.clone();
    // Fixed ones first: a dynamic pick must never take a port the same
    // request names.
    for fixed in requested
        .iter()
        .filter_map(|r| Some((r.host_port?, r.protocol)))
    {
        if !range.contains(fixed.0) || !taken.insert(fixed) {
            return None;
        }
    }
    let mut next: BTreeMap<Protocol, u16> = BTreeMap::new();
    requested
        .iter()
        .map(|r| {
            let host_port = match r.host_port {
                Some(fixed) => fixed,
                None => {
                    let from = next.entry(r.protocol).or_insert(range.start);
                    let free = (*from..=range.end).find(|p| !taken.contains(&(*p, r.protocol)))?;
                    taken.insert((free, r.protocol));
                    *from = free;
                    free
                }
            };
            Some(PublishedPort {
                port: r.port,
                protocol: r.protocol,
                host_port,
            })
        })
        .collect()
}

/// The host ports a request of `network` with `ports` gets on a host that
/// offers `offer` (None: no network) with `used` taken; None when the host
/// cannot take it. `network: none` fits any host and publishes nothing.
pub fn ports_on(
    offer: Option<PortRange>,
    used: &UsedPorts,
    network: NetworkMode,
    ports: &[PortRequest],
) -> Option<Vec<PublishedPort>> {
    match network {
        NetworkMode::None => Some(Vec::new()),
        NetworkMode::Private => assign_ports(ports, offer?, used),
    }
}

/// Why no host could ever give a request its network, the first reason
/// that applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetworkMisfit {
    /// `network: private`, and no host offers a network.
    NoNetwork,
    /// `ports[index]` names a host port outside every host's range.
    HostPortOutOfRange {
        index: usize,
        host_port: u16,
        ranges: Vec<PortRange>,
    },
    /// More ports of one protocol than the largest range holds (`max`).
    TooManyPorts { max: usize },
    /// Each port fits some host's range, but no single host's.
    NoSingleHost,
}

/// Whether some host of `offers` (each one's network, None: none) could
/// ever give the request its network, when nothing else runs there; the
/// reason when none could. With no hosts at all there is nothing to judge
/// (a host may register): None.
pub fn network_misfit(
    offers: &[Option<PortRange>],
    network: NetworkMode,
    ports: &[PortRequest],
) -> Option<NetworkMisfit> {
    let empty = UsedPorts::new();
    if offers.is_empty()
        || offers
            .iter()
            .any(|offer| ports_on(*offer, &empty, network, ports).is_some())
    {
        return None;
    }
    let ranges: Vec<PortRange> = offers.iter().flatten().copied().collect();
    if ranges.is_empty() {
        return Some(NetworkMisfit::NoNetwork);
    }
    for (index, r) in ports.iter().enumerate() {
        if let Some(host_port) = r.host_port {
            if !ranges.iter().any(|range| range.contains(host_port)) {
                return Some(NetworkMisfit::HostPortOutOfRange {
                    index,
                    host_port,
                    ranges,
                });
            }
        }
    }
    let max = ranges.iter().map(PortRange::len).max().unwrap_or(0);
    let most = Protocol::ALL
        .iter()
        .map(|p| ports.iter().filter(|r| r.protocol == *p).count())
        .max()
        .unwrap_or(0);
    if most > max {
        return Some(NetworkMisfit::TooManyPorts { max });
    }
    Some(NetworkMisfit::NoSingleHost)
}

#[cfg(test)]
mod tests {
    use super::*;
    use Protocol::{Tcp, Udp};

    /// A dynamic port (any host port).
    fn any(port: u16, protocol: Protocol) -> PortRequest {
        PortRequest {
            port,
            protocol,
            host_port: None,
        }
    }

    /// A port on a fixed host port.
    fn fixed(port: u16, protocol: Protocol, host_port: u16) -> PortRequest {
        PortRequest {
            host_port: Some(host_port),
            ..any(port, protocol)
        }
    }

    fn range(start: u16, end: u16) -> PortRange {
        PortRange { start, end }
    }

    #[test]
    fn assign_ports_table() {
        type Row<'a> = (
            &'a str,
            Vec<PortRequest>,
            PortRange,
            Vec<(u16, Protocol)>,
            Option<Vec<u16>>,
        );
        #[rustfmt::skip]
        let rows: Vec<Row> = vec![
            // (case, requested, range, used, host ports in request order; None: does not fit)
            ("nothing asked", vec![], range(20000, 20001), vec![], Some(vec![])),
            ("nothing asked, full range", vec![], range(20000, 20000), vec![(20000, Tcp)], Some(vec![])),
            ("lowest free", vec![any(80, Tcp)], range(20000, 20009), vec![], Some(vec![20000])),
            ("skips used", vec![any(80, Tcp)], range(20000, 20009), vec![(20000, Tcp), (20001, Tcp)], Some(vec![20002])),
            ("dynamic ones take consecutive ports", vec![any(80, Tcp), any(81, Tcp)], range(20000, 20009), vec![(20001, Tcp)], Some(vec![20000, 20002])),
            ("a used port of the other protocol is free", vec![any(53, Udp)], range(20000, 20009), vec![(20000, Tcp)], Some(vec![20000])),
            ("tcp and udp count apart", vec![any(53, Tcp), any(53, Udp)], range(20000, 20000), vec![], Some(vec![20000, 20000])),
            ("fixed honoured", vec![fixed(80, Tcp, 20005)], range(20000, 20009), vec![], Some(vec![20005])),
            ("fixed in use", vec![fixed(80, Tcp, 20005)], range(20000, 20009), vec![(20005, Tcp)], None),
            ("fixed in use by the other protocol", vec![fixed(80, Tcp, 20005)], range(20000, 20009), vec![(20005, Udp)], Some(vec![20005])),
            ("fixed below the range", vec![fixed(80, Tcp, 19999)], range(20000, 20009), vec![], None),
            ("fixed above the range", vec![fixed(80, Tcp, 20010)], range(20000, 20009), vec![], None),
            ("fixed at both ends", vec![fixed(80, Tcp, 20000), fixed(81, Tcp, 20009)], range(20000, 20009), vec![], Some(vec![20000, 20009])),
            ("dynamic avoids a later fixed one", vec![any(80, Tcp), fixed(81, Tcp, 20000)], range(20000, 20009), vec![], Some(vec![20001, 20000])),
            ("the same fixed port twice", vec![fixed(80, Tcp, 20000), fixed(81, Tcp, 20000)], range(20000, 20009), vec![], None),
            ("range full", vec![any(80, Tcp)], range(20000, 20001), vec![(20000, Tcp), (20001, Tcp)], None),
            ("one more than is free", vec![any(80, Tcp), any(81, Tcp)], range(20000, 20002), vec![(20000, Tcp), (20001, Tcp)], None),
            ("exactly the range", vec![any(80, Tcp), any(81, Tcp), any(82, Tcp)], range(20000, 20002), vec![], Some(vec![20000, 20001, 20002])),
            ("a fixed one and the last free port", vec![fixed(80, Tcp, 20002), any(81, Tcp)], range(20000, 20002), vec![(20000, Tcp)], Some(vec![20002, 20001])),
            ("the top of the port space", vec![any(80, Tcp), any(81, Tcp)], range(65534, 65535), vec![], Some(vec![65534, 65535])),
            ("past the top of the port space", vec![any(80, Tcp), any(81, Tcp)], range(65535, 65535), vec![], None),
        ];
        for (case, requested, range, used, want) in rows {
            let used: UsedPorts = used.into_iter().collect();
            let got = assign_ports(&requested, range, &used);
            let host_ports = got
                .as_ref()
                .map(|g| g.iter().map(|p| p.host_port).collect::<Vec<_>>());
            assert_eq!(host_ports, want, "{case}");
            if let Some(got) = got {
                for (asked, given) in requested.iter().zip(&got) {
                    assert_eq!(
                        (asked.port, asked.protocol),
                        (given.port, given.protocol),
                        "{case}"
                    );
                    assert!(
                        !used.contains(&(given.host_port, given.protocol)),
                        "{case}: a used port given out"
                    );
                }
            }
        }
    }

    #[test]
    fn ports_on_a_host_follow_its_network() {
        let used = UsedPorts::new();
        let offer = Some(range(20000, 20009));
        let web = [any(80, Tcp)];
        assert_eq!(ports_on(None, &used, NetworkMode::None, &[]), Some(vec![]));
        assert_eq!(ports_on(None, &used, NetworkMode::Private, &[]), None);
        assert_eq!(
            ports_on(offer, &used, NetworkMode::Private, &[]),
            Some(vec![])
        );
        let got = ports_on(offer, &used, NetworkMode::Private, &web).unwrap();
        assert_eq!(got[0].host_port, 20000);
    }

    #[test]
    fn network_misfit_table() {
        let a = Some(range(20000, 20009));
        let b = Some(range(30000, 30001));
        type Row<'a> = (
            &'a str,
            Vec<Option<PortRange>>,
            NetworkMode,
            Vec<PortRequest>,
            Option<NetworkMisfit>,
        );
        #[rustfmt::skip]
        let rows: Vec<Row> = vec![
            // (case, hosts' offers, network, ports, misfit)
            ("no host at all", vec![], NetworkMode::Private, vec![any(80, Tcp)], None),
            ("none fits a host without a network", vec![None], NetworkMode::None, vec![], None),
            ("private needs a network", vec![None, None], NetworkMode::Private, vec![], Some(NetworkMisfit::NoNetwork)),
            ("one host offers one", vec![None, a], NetworkMode::Private, vec![any(80, Tcp)], None),
            ("a fixed port in some range", vec![a, b], NetworkMode::Private, vec![fixed(80, Tcp, 30001)], None),
            ("a fixed port in no range", vec![a, b], NetworkMode::Private, vec![any(80, Tcp), fixed(81, Tcp, 8080)],
                Some(NetworkMisfit::HostPortOutOfRange { index: 1, host_port: 8080, ranges: vec![range(20000, 20009), range(30000, 30001)] })),
            ("more ports than the largest range", vec![b], NetworkMode::Private, vec![any(1, Tcp), any(2, Tcp), any(3, Tcp)], Some(NetworkMisfit::TooManyPorts { max: 2 })),
            ("as many as the range, per protocol", vec![b], NetworkMode::Private, vec![any(1, Tcp), any(2, Tcp), any(1, Udp), any(2, Udp)], None),
            ("fixed ports in two hosts' ranges", vec![a, b], NetworkMode::Private, vec![fixed(80, Tcp, 20000), fixed(81, Tcp, 30000)], Some(NetworkMisfit::NoSingleHost)),
        ];
        for (case, offers, network, ports, want) in rows {
            assert_eq!(network_misfit(&offers, network, &ports), want, "{case}");
        }
    }

    #[test]
    fn range_sizes() {
        assert_eq!(range(20000, 20009).len(), 10);
        assert_eq!(range(1, 65535).len(), 65535);
        assert_eq!(range(5, 5).len(), 1);
        assert!(range(6, 5).is_empty());
    }
}
