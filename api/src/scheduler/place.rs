//! Placement as a pure function: pending requests and the hosts' free
//! capacity in, placements and the reasons the rest must wait out. No I/O;
//! the store loads the input under a lock and commits the output.
//!
//! Rules, in order:
//! 1. Only a host whose free cpu and memory both cover the request, that
//!    carries every label of `placement.host_labels`, and, for `network:
//!    private`, that offers a network with the request's host ports free
//!    ([`super::ports::assign_ports`]): ports count as a resource. Never
//!    oversubscribed: each placement (its cpu, memory and host ports) is
//!    subtracted before the next.
//! 2. Among those, the host the container ran on before (its logs are
//!    there), then a host that already holds the image (no pull), then the
//!    policy: `binpack` takes the fullest host, `spread` the emptiest.
//!    Ties go to the smaller host id, so a decision is reproducible.
//! 3. Requests are taken round-robin across tenants, oldest first within a
//!    tenant ([`fair_order`]): every tenant's oldest, then every tenant's
//!    second oldest, and so on; at equal depth the tenant placed least
//!    recently goes first, so the rotation carries over from one round to
//!    the next. FIFO within a tenant: once one of a tenant's requests waits,
//!    its later ones wait this round too.
//! 4. A tenant's starts are paced by its start rate
//!    ([`super::pace`]): past its tokens, its requests wait
//!    ([`Wait::StartRate`]) before they get here.

use super::ports::{self, NetworkMisfit, PortRange, UsedPorts};
use chrono::{DateTime, Utc};
use skiff_core::{NetworkMode, PlacementPolicy, PortRequest, Protocol, PublishedPort};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use uuid::Uuid;

/// A container waiting for a host.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingRequest {
    pub id: Uuid,
    pub tenant: Uuid,
    pub cpu_millis: i64,
    pub memory_mib: i64,
    pub image: String,
    pub host_labels: BTreeMap<String, String>,
    pub prefer_host: Option<String>,
    pub network: NetworkMode,
    /// Ports to publish (`network: private` only).
    pub ports: Vec<PortRequest>,
    /// Only this host (the rest of its container group runs there).
    pub require_host: Option<String>,
}

/// A placeable host (ready, heartbeating) and what it has left.
#[derive(Debug, Clone, PartialEq)]
pub struct HostCapacity {
    pub id: String,
    pub cpu_millis: i64,
    pub memory_mib: i64,
    pub free_cpu_millis: i64,
    pub free_memory_mib: i64,
    /// Image references held (pulled and unpacked).
    pub images: BTreeSet<String>,
    pub labels: BTreeMap<String, String>,
    /// The range it publishes ports from; None: it offers no network.
    pub network: Option<PortRange>,
    /// Host ports its containers holding capacity use.
    pub used_ports: UsedPorts,
}

impl HostCapacity {
    /// The host ports `r` gets here if it fits now (room, labels, network,
    /// ports); None: it does not fit.
    pub fn fit(&self, r: &PendingRequest) -> Option<Vec<PublishedPort>> {
        if !(self.has_room(r) && self.eligible(r)) {
            return None;
        }
        ports::ports_on(self.network, &self.used_ports, r.network, &r.ports)
    }

    fn has_room(&self, r: &PendingRequest) -> bool {
        self.free_cpu_millis >= r.cpu_millis && self.free_memory_mib >= r.memory_mib
    }

    /// Whether it offers what `network` needs (a private one: a network).
    fn offers(&self, network: NetworkMode) -> bool {
        network == NetworkMode::None || self.network.is_some()
    }

    /// It carries `r`'s labels and is the host `r` must go to, if any.
    fn eligible(&self, r: &PendingRequest) -> bool {
        self.matches(&r.host_labels) && r.require_host.as_ref().is_none_or(|h| *h == self.id)
    }

    pub fn matches(&self, wanted: &BTreeMap<String, String>) -> bool {
        wanted.iter().all(|(k, v)| self.labels.get(k) == Some(v))
    }

    /// Share of the host left free after placing `r`, cpu and memory
    /// weighed alike, in parts per million (integers keep ties exact).
    fn free_after_ppm(&self, r: &PendingRequest) -> i64 {
        let share = |free: i64, total: i64| {
            if total <= 0 {
                0
            } else {
                free * 1_000_000 / total
            }
        };
        share(self.free_cpu_millis - r.cpu_millis, self.cpu_millis)
            + share(self.free_memory_mib - r.memory_mib, self.memory_mib)
    }
}

/// Why a request was not placed this round.
#[derive(Debug, Clone, PartialEq)]
pub enum Wait {
    /// No placeable host has room for it now.
    NoRoom,
    /// No placeable host carries the requested labels.
    NoMatchingHost,
    /// An older request of the same tenant waits (FIFO within a tenant).
    BehindOlder,
    /// The tenant's start rate is spent for now (starts per second).
    StartRate { per_s: f64 },
    /// `network: private`, and no placeable host with its labels offers a
    /// network.
    NoNetwork,
    /// Hosts with room offer a network, but not the host ports it asks
    /// for: `taken` is a fixed host port none of them has free (None: not
    /// enough free ports for its dynamic ones).
    NoHostPort { taken: Option<(u16, Protocol)> },
}

/// A container placed on a host, with the host ports it got there.
#[derive(Debug, Clone, PartialEq)]
pub struct Placement {
    pub container: Uuid,
    pub host: String,
    pub ports: Vec<PublishedPort>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Decision {
    /// In placement order.
    pub placements: Vec<Placement>,
    pub waiting: Vec<(Uuid, Wait)>,
}

/// Orders requests (given oldest first) round-robin across tenants: every
/// tenant's oldest, then every tenant's second oldest, and so on; at equal
/// depth, the tenant whose last placement is oldest (`last_placed`; never
/// placed comes first) goes first. A tenant with a thousand queued delays
/// another's single request by at most one placement.
pub fn fair_order(
    oldest_first: Vec<PendingRequest>,
    last_placed: &HashMap<Uuid, DateTime<Utc>>,
) -> Vec<PendingRequest> {
    let mut rank: HashMap<Uuid, usize> = HashMap::new();
    let mut keyed: Vec<_> = oldest_first
        .into_iter()
        .enumerate()
        .map(|(age, r)| {
            let n = rank.entry(r.tenant).or_default();
            *n += 1;
            ((*n, last_placed.get(&r.tenant).copied(), age), r)
        })
        .collect();
    // None (never placed) sorts before any time.
    keyed.sort_by_key(|(key, _)| *key);
    keyed.into_iter().map(|(_, r)| r).collect()
}

/// Places `requests` (in the order to consider them, see [`fair_order`]).
pub fn place(
    requests: &[PendingRequest],
    mut hosts: Vec<HostCapacity>,
    policy: PlacementPolicy,
) -> Decision {
    hosts.sort_by(|a, b| a.id.cmp(&b.id));
    let mut decision = Decision::default();
    let mut blocked: HashSet<Uuid> = HashSet::new();
    for r in requests {
        if blocked.contains(&r.tenant) {
            decision.waiting.push((r.id, Wait::BehindOlder));
            continue;
        }
        let Some((index, ports)) = choose(r, &hosts, policy) else {
            decision.waiting.push((r.id, why_waiting(r, &hosts)));
            blocked.insert(r.tenant);
            continue;
        };
        let host = &mut hosts[index];
        host.free_cpu_millis -= r.cpu_millis;
        host.free_memory_mib -= r.memory_mib;
        host.used_ports
            .extend(ports.iter().map(|p| (p.host_port, p.protocol)));
        // The image is not counted as held until the host reports it: a
        // burst of one new image must not pull spread onto a single host.
        decision.placements.push(Placement {
            container: r.id,
            host: host.id.clone(),
            ports,
        });
    }
    decision
}

/// Why no host takes `r` now.
fn why_waiting(r: &PendingRequest, hosts: &[HostCapacity]) -> Wait {
    let matching: Vec<&HostCapacity> = hosts.iter().filter(|h| h.eligible(r)).collect();
    if matching.is_empty() {
        return Wait::NoMatchingHost;
    }
    if !matching.iter().any(|h| h.offers(r.network)) {
        return Wait::NoNetwork;
    }
    // Hosts with room and a network: then the ports are what is missing.
    let roomy: Vec<&&HostCapacity> = matching
        .iter()
        .filter(|h| h.has_room(r) && h.offers(r.network))
        .collect();
    if roomy.is_empty() {
        return Wait::NoRoom;
    }
    let taken = r.ports.iter().find_map(|p| {
        let key = (p.host_port?, p.protocol);
        let free_somewhere = roomy.iter().any(|h| {
            h.network.is_some_and(|range| range.contains(key.0)) && !h.used_ports.contains(&key)
        });
        (!free_somewhere).then_some(key)
    });
    Wait::NoHostPort { taken }
}

/// The host `r` goes to, and the host ports it gets there.
fn choose(
    r: &PendingRequest,
    hosts: &[HostCapacity],
    policy: PlacementPolicy,
) -> Option<(usize, Vec<PublishedPort>)> {
    hosts
        .iter()
        .enumerate()
        .filter_map(|(i, h)| Some((i, h, h.fit(r)?)))
        // min_by_key keeps the first of equals: hosts are sorted by id.
        .min_by_key(|(_, h, _)| {
            let preferred = r.prefer_host.as_deref() == Some(h.id.as_str());
            let has_image = h.images.contains(&r.image);
            let free_after = h.free_after_ppm(r);
            let policy_key = match policy {
                PlacementPolicy::Binpack => free_after,
                PlacementPolicy::Spread => -free_after,
            };
            (!preferred, !has_image, policy_key)
        })
        .map(|(i, _, ports)| (i, ports))
}

/// The largest request any of `hosts` could ever take (its whole capacity),
/// among hosts carrying `labels`: (cpu millis, memory MiB). None when no
/// host matches (then the request queues: such a host may register).
pub fn largest_fit(
    hosts: &[HostCapacity],
    labels: &BTreeMap<String, String>,
) -> Option<(i64, i64)> {
    let matching: Vec<&HostCapacity> = hosts.iter().filter(|h| h.matches(labels)).collect();
    if matching.is_empty() {
        return None;
    }
    Some((
        matching.iter().map(|h| h.cpu_millis).max().unwrap_or(0),
        matching.iter().map(|h| h.memory_mib).max().unwrap_or(0),
    ))
}

/// Why none of `hosts` carrying `labels` could ever give a request of
/// `network` with `ports` its network (see [`ports::network_misfit`]); None
/// when one could, or when no host carries the labels (then the request
/// queues: such a host may register).
pub fn network_misfit(
    hosts: &[HostCapacity],
    labels: &BTreeMap<String, String>,
    network: NetworkMode,
    ports: &[PortRequest],
) -> Option<NetworkMisfit> {
    let offers: Vec<Option<PortRange>> = hosts
        .iter()
        .filter(|h| h.matches(labels))
        .map(|h| h.network)
        .collect();
    ports::network_misfit(&offers, network, ports)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Uuid = Uuid::from_u128(0xa);
    const B: Uuid = Uuid::from_u128(0xb);

    fn req(n: u128, tenant: Uuid, cpu: i64, mem: i64) -> PendingRequest {
        PendingRequest {
            id: Uuid::from_u128(n),
            tenant,
            cpu_millis: cpu,
            memory_mib: mem,
            image: "r/img:1".into(),
            host_labels: BTreeMap::new(),
            prefer_host: None,
            network: NetworkMode::None,
            ports: Vec::new(),
            require_host: None,
        }
    }

    fn host(id: &str, free_cpu: i64, free_mem: i64) -> HostCapacity {
        HostCapacity {
            id: id.into(),
            cpu_millis: 4000,
            memory_mib: 4096,
            free_cpu_millis: free_cpu,
            free_memory_mib: free_mem,
            images: BTreeSet::new(),
            labels: BTreeMap::new(),
            network: None,
            used_ports: UsedPorts::new(),
        }
    }

    fn hosts_of(decision: &Decision) -> Vec<&str> {
        decision
            .placements
            .iter()
            .map(|p| p.host.as_str())
            .collect()
    }

    /// (container, host) of each placement, in order.
    fn pairs(decision: &Decision) -> Vec<(Uuid, String)> {
        decision
            .placements
            .iter()
            .map(|p| (p.container, p.host.clone()))
            .collect()
    }

    #[test]
    fn policy_table() {
        // (case, hosts, policy, requests, expected hosts in order)
        type Row<'a> = (
            &'a str,
            Vec<HostCapacity>,
            PlacementPolicy,
            Vec<PendingRequest>,
            Vec<&'a str>,
        );
        let rows: Vec<Row> = vec![
            (
                "binpack fills the fullest host that fits",
                vec![
                    host("h1", 4000, 4096),
                    host("h2", 1000, 1024),
                    host("h3", 2000, 2048),
                ],
                PlacementPolicy::Binpack,
                vec![req(1, A, 500, 256), req(2, A, 500, 256)],
                vec!["h2", "h2"],
            ),
            (
                "a group's member goes only where the rest of its group runs",
                vec![host("h1", 4000, 4096), host("h2", 1000, 1024)],
                PlacementPolicy::Binpack,
                vec![PendingRequest {
                    require_host: Some("h1".into()),
                    ..req(1, A, 500, 256)
                }],
                vec!["h1"],
            ),
            (
                "spread takes the emptiest",
                vec![
                    host("h1", 2000, 2048),
                    host("h2", 2600, 2600),
                    host("h3", 2500, 2500),
                ],
                PlacementPolicy::Spread,
                vec![
                    req(1, A, 500, 256),
                    req(2, A, 500, 256),
                    req(3, A, 500, 256),
                ],
                vec!["h2", "h3", "h2"],
            ),
            (
                "spread over equal hosts goes round",
                vec![
                    host("h1", 4000, 4096),
                    host("h2", 4000, 4096),
                    host("h3", 4000, 4096),
                ],
                PlacementPolicy::Spread,
                vec![
                    req(1, A, 1000, 1024),
                    req(2, A, 1000, 1024),
                    req(3, A, 1000, 1024),
                ],
                vec!["h1", "h2", "h3"],
            ),
            (
                "binpack over equal hosts stays on the first",
                vec![host("h1", 4000, 4096), host("h2", 4000, 4096)],
                PlacementPolicy::Binpack,
                vec![req(1, A, 1000, 1024), req(2, A, 1000, 1024)],
                vec!["h1", "h1"],
            ),
            (
                "memory counts as much as cpu",
                vec![host("h1", 4000, 100), host("h2", 500, 4096)],
                PlacementPolicy::Binpack,
                vec![req(1, A, 400, 200)],
                vec!["h2"],
            ),
        ];
        for (case, hosts, policy, requests, want) in rows {
            let d = place(&requests, hosts, policy);
            assert_eq!(hosts_of(&d), want, "{case}: {d:?}");
        }
    }

    #[test]
    fn never_oversubscribes() {
        let requests: Vec<_> = (0..10).map(|n| req(n, A, 1000, 512)).collect();
        let d = place(
            &requests,
            vec![host("h1", 2500, 4096), host("h2", 1000, 4096)],
            PlacementPolicy::Binpack,
        );
        assert_eq!(d.placements.len(), 3, "{d:?}");
        assert_eq!(hosts_of(&d), vec!["h2", "h1", "h1"]);
        assert_eq!(d.waiting[0].1, Wait::NoRoom);
        assert!(d.waiting[1..].iter().all(|(_, w)| *w == Wait::BehindOlder));
    }

    #[test]
    fn image_locality_beats_the_policy_and_the_previous_host_beats_both() {
        let mut with_image = host("h3", 4000, 4096);
        with_image.images.insert("r/img:1".into());
        let hosts = vec![host("h1", 1000, 1024), host("h2", 4000, 4096), with_image];
        let d = place(
            &[req(1, A, 500, 256)],
            hosts.clone(),
            PlacementPolicy::Binpack,
        );
        assert_eq!(hosts_of(&d), vec!["h3"]);
        let mut other_image = req(2, A, 500, 256);
        other_image.image = "r/other:1".into();
        let d = place(&[other_image], hosts.clone(), PlacementPolicy::Binpack);
        assert_eq!(hosts_of(&d), vec!["h1"], "no host holds it: policy decides");
        let mut back_home = req(3, A, 500, 256);
        back_home.prefer_host = Some("h2".into());
        let d = place(&[back_home], hosts, PlacementPolicy::Binpack);
        assert_eq!(hosts_of(&d), vec!["h2"]);
    }

    #[test]
    fn host_labels_restrict_and_explain() {
        let mut gpu = host("h2", 4000, 4096);
        gpu.labels.insert("zone".into(), "b".into());
        let hosts = vec![host("h1", 4000, 4096), gpu];
        let mut wants_b = req(1, A, 500, 256);
        wants_b.host_labels.insert("zone".into(), "b".into());
        let mut wants_c = req(2, B, 500, 256);
        wants_c.host_labels.insert("zone".into(), "c".into());
        let d = place(&[wants_b, wants_c], hosts, PlacementPolicy::Binpack);
        assert_eq!(hosts_of(&d), vec!["h2"]);
        assert_eq!(d.waiting, vec![(Uuid::from_u128(2), Wait::NoMatchingHost)]);
    }

    #[test]
    fn a_group_member_waits_for_room_on_its_groups_host_only() {
        let hosts = vec![host("h1", 1000, 1024), host("h2", 4000, 4096)];
        let pinned = PendingRequest {
            require_host: Some("h1".into()),
            ..req(1, A, 2000, 256)
        };
        let d = place(
            std::slice::from_ref(&pinned),
            hosts.clone(),
            PlacementPolicy::Spread,
        );
        assert!(
            d.placements.is_empty(),
            "h2 has room but is not its group's host"
        );
        assert_eq!(d.waiting, vec![(Uuid::from_u128(1), Wait::NoRoom)]);
        let free = PendingRequest {
            require_host: None,
            ..pinned
        };
        let d = place(&[free], hosts, PlacementPolicy::Spread);
        assert_eq!(
            hosts_of(&d),
            vec!["h2"],
            "control: unpinned, it fits elsewhere"
        );
    }

    #[test]
    fn fifo_within_a_tenant_but_others_go_on() {
        let requests = vec![
            req(1, A, 3000, 256),
            req(2, A, 500, 256),
            req(3, B, 500, 256),
        ];
        let d = place(
            &requests,
            vec![host("h1", 1000, 4096)],
            PlacementPolicy::Binpack,
        );
        assert_eq!(pairs(&d), vec![(Uuid::from_u128(3), "h1".to_string())]);
        assert_eq!(
            d.waiting,
            vec![
                (Uuid::from_u128(1), Wait::NoRoom),
                (Uuid::from_u128(2), Wait::BehindOlder)
            ]
        );
    }

    #[test]
    fn fair_order_interleaves_tenants() {
        let mut queue: Vec<_> = (0..1000).map(|n| req(n, A, 100, 64)).collect();
        queue.push(req(5000, B, 100, 64));
        let never = HashMap::new();
        let ordered = fair_order(queue.clone(), &never);
        assert_eq!(ordered[0].id, Uuid::from_u128(0));
        assert_eq!(
            ordered[1].id,
            Uuid::from_u128(5000),
            "B's only request comes second"
        );
        // A was placed a moment ago, B never: B goes first at equal depth,
        // so one freed slot per round still reaches B in the next round.
        let a_served: HashMap<Uuid, DateTime<Utc>> =
            [(A, DateTime::from_timestamp(1_800_000_000, 0).unwrap())].into();
        let reordered = fair_order(queue, &a_served);
        assert_eq!(reordered[0].id, Uuid::from_u128(5000));
        assert_eq!(reordered[1].id, Uuid::from_u128(0));
        // One round of room: A's oldest and B's single request both go.
        let d = place(
            &ordered,
            vec![host("h1", 200, 4096)],
            PlacementPolicy::Binpack,
        );
        assert_eq!(
            d.placements.iter().map(|p| p.container).collect::<Vec<_>>(),
            vec![Uuid::from_u128(0), Uuid::from_u128(5000)]
        );
    }

    /// `h` offering a network on `start..=end`, with `used` taken.
    fn offering(mut h: HostCapacity, start: u16, end: u16, used: &[u16]) -> HostCapacity {
        h.network = Some(PortRange { start, end });
        h.used_ports = used.iter().map(|p| (*p, Protocol::Tcp)).collect();
        h
    }

    /// A `network: private` request publishing `ports`.
    fn private(n: u128, tenant: Uuid, ports: Vec<PortRequest>) -> PendingRequest {
        PendingRequest {
            network: NetworkMode::Private,
            ports,
            ..req(n, tenant, 500, 256)
        }
    }

    /// Container port `port`/tcp on any host port, or on `host_port`.
    fn tcp(port: u16, host_port: Option<u16>) -> PortRequest {
        PortRequest {
            port,
            protocol: Protocol::Tcp,
            host_port,
        }
    }

    #[test]
    fn network_and_ports_table() {
        let h1 = || host("h1", 1000, 1024);
        let h2 = || host("h2", 4000, 4096);
        let full = || host("h1", 0, 0);
        let taken = |port| Wait::NoHostPort {
            taken: Some((port, Protocol::Tcp)),
        };
        type Row<'a> = (
            &'a str,
            Vec<HostCapacity>,
            Vec<PendingRequest>,
            Vec<(&'a str, Vec<u16>)>,
            Vec<(u128, Wait)>,
        );
        #[rustfmt::skip]
        let rows: Vec<Row> = vec![
            // (case, hosts, requests, placements (host, host ports), waiting)
            ("ports fit", vec![offering(h1(), 20000, 20009, &[])], vec![private(1, A, vec![tcp(80, None), tcp(81, Some(20003))])], vec![("h1", vec![20000, 20003])], vec![]),
            ("used ports are skipped", vec![offering(h1(), 20000, 20009, &[20000, 20001])], vec![private(1, A, vec![tcp(80, None)])], vec![("h1", vec![20002])], vec![]),
            ("ports do not fit: the range is used up", vec![offering(h1(), 20000, 20001, &[20000, 20001])], vec![private(1, A, vec![tcp(80, None)])], vec![], vec![(1, Wait::NoHostPort { taken: None })]),
            ("a fixed port in use waits", vec![offering(h1(), 20000, 20009, &[20005])], vec![private(1, A, vec![tcp(80, Some(20005))])], vec![], vec![(1, taken(20005))]),
            ("a fixed port outside the range waits", vec![offering(h1(), 20000, 20009, &[])], vec![private(1, A, vec![tcp(80, Some(8080))])], vec![], vec![(1, taken(8080))]),
            ("a fixed port twice in one round: the second waits", vec![offering(h1(), 20000, 20009, &[])], vec![private(1, A, vec![tcp(80, Some(20005))]), private(2, B, vec![tcp(80, Some(20005))])], vec![("h1", vec![20005])], vec![(2, taken(20005))]),
            ("dynamic ports in one round never repeat", vec![offering(h1(), 20000, 20009, &[])], vec![private(1, A, vec![tcp(80, None)]), private(2, B, vec![tcp(80, None)])], vec![("h1", vec![20000]), ("h1", vec![20001])], vec![]),
            ("the last free port goes once", vec![offering(h1(), 20000, 20000, &[])], vec![private(1, A, vec![tcp(80, None)]), private(2, B, vec![tcp(80, None)])], vec![("h1", vec![20000])], vec![(2, Wait::NoHostPort { taken: None })]),
            ("a fixed port taken on one host goes to another", vec![offering(h1(), 20000, 20009, &[20005]), offering(h2(), 20000, 20009, &[])], vec![private(1, A, vec![tcp(80, Some(20005))])], vec![("h2", vec![20005])], vec![]),
            ("private on a host without a network waits", vec![h1()], vec![private(1, A, vec![])], vec![], vec![(1, Wait::NoNetwork)]),
            ("private skips the fuller host without a network", vec![h1(), offering(h2(), 20000, 20009, &[])], vec![private(1, A, vec![])], vec![("h2", vec![])], vec![]),
            ("none on a host without a network still fits", vec![h1()], vec![req(1, A, 500, 256)], vec![("h1", vec![])], vec![]),
            ("none publishes nothing on a host with a network", vec![offering(h1(), 20000, 20000, &[20000])], vec![req(1, A, 500, 256)], vec![("h1", vec![])], vec![]),
            ("no room comes before ports", vec![offering(full(), 20000, 20009, &[20005])], vec![private(1, A, vec![tcp(80, Some(20005))])], vec![], vec![(1, Wait::NoRoom)]),
        ];
        for (case, hosts, requests, want, waiting) in rows {
            let d = place(&requests, hosts, PlacementPolicy::Binpack);
            let got: Vec<(&str, Vec<u16>)> = d
                .placements
                .iter()
                .map(|p| {
                    (
                        p.host.as_str(),
                        p.ports.iter().map(|p| p.host_port).collect(),
                    )
                })
                .collect();
            assert_eq!(got, want, "{case}: {d:?}");
            let waiting: Vec<(Uuid, Wait)> = waiting
                .into_iter()
                .map(|(n, w)| (Uuid::from_u128(n), w))
                .collect();
            assert_eq!(d.waiting, waiting, "{case}");
        }
    }

    #[test]
    fn network_misfit_considers_matching_hosts_only() {
        let mut zoned = offering(host("h2", 4000, 4096), 20000, 20009, &[]);
        zoned.labels.insert("zone".into(), "b".into());
        let hosts = vec![host("h1", 4000, 4096), zoned];
        let any = BTreeMap::new();
        let zone_a: BTreeMap<_, _> = [("zone".to_string(), "a".to_string())].into();
        let web = [tcp(80, Some(20001))];
        assert_eq!(
            network_misfit(&hosts, &any, NetworkMode::Private, &web),
            None
        );
        assert_eq!(
            network_misfit(&hosts[..1], &any, NetworkMode::Private, &[]),
            Some(NetworkMisfit::NoNetwork)
        );
        assert_eq!(
            network_misfit(&hosts[..1], &any, NetworkMode::None, &[]),
            None
        );
        assert_eq!(
            network_misfit(&hosts, &zone_a, NetworkMode::Private, &web),
            None,
            "no host with the labels: it queues"
        );
    }

    #[test]
    fn largest_fit_considers_matching_hosts_only() {
        let mut big = host("h2", 0, 0);
        big.cpu_millis = 8000;
        big.memory_mib = 16384;
        big.labels.insert("size".into(), "big".into());
        let hosts = vec![host("h1", 4000, 4096), big];
        assert_eq!(largest_fit(&hosts, &BTreeMap::new()), Some((8000, 16384)));
        let small: BTreeMap<_, _> = [("size".to_string(), "small".to_string())].into();
        assert_eq!(largest_fit(&hosts, &small), None);
        assert_eq!(largest_fit(&[], &BTreeMap::new()), None);
    }
}
