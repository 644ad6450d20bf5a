//! Container groups in placement, pure: a group's pending members are one
//! request to [`super::place`] (the sum of their cpu and memory, the
//! group's published ports, the first member's image, labels and
//! preference), so they land on one host or wait together; and the
//! decision is spread back onto every member. A member pending while
//! others of its group hold a host (a finished member started again beside
//! running ones) may go only to that host ([`PendingRequest::require_host`])
//! and shares the host ports the group holds there.

use super::place::{Decision, PendingRequest, Placement};
use skiff_core::PublishedPort;
use std::collections::HashMap;
use uuid::Uuid;

/// A pending container and the group it belongs to, if any.
#[derive(Debug, Clone)]
pub struct PendingMember {
    pub request: PendingRequest,
    pub group: Option<Uuid>,
}

/// Where the running part of a group is: its host and the host ports its
/// members hold there.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupHome {
    pub host: String,
    pub ports: Vec<PublishedPort>,
}

/// The requests to place, and how to spread the decision back.
#[derive(Debug, Default)]
pub struct Gathered {
    /// In the order given (a group at its first member's place).
    pub requests: Vec<PendingRequest>,
    /// A group's request id (its first member's) -> every pending member.
    members: HashMap<Uuid, Vec<Uuid>>,
    /// A group's request pinned to its home -> the host ports held there.
    home_ports: HashMap<Uuid, Vec<PublishedPort>>,
}

/// Folds each group's pending members into one request (see the module
/// doc); lone containers pass as they are.
pub fn gather(pending: Vec<PendingMember>, homes: &HashMap<Uuid, GroupHome>) -> Gathered {
    let mut out = Gathered::default();
    let mut index_of: HashMap<Uuid, usize> = HashMap::new();
    for PendingMember { request, group } in pending {
        let Some(group) = group else {
            out.requests.push(request);
            continue;
        };
        if let Some(&i) = index_of.get(&group) {
            let whole = &mut out.requests[i];
            whole.cpu_millis += request.cpu_millis;
            whole.memory_mib += request.memory_mib;
            out.members
                .get_mut(&whole.id)
                .expect("a gathered group has members")
                .push(request.id);
            continue;
        }
        let mut whole = request;
        if let Some(home) = homes.get(&group) {
            whole.require_host = Some(home.host.clone());
            // Its ports are the group's, already held there.
            whole.ports = Vec::new();
            out.home_ports.insert(whole.id, home.ports.clone());
        }
        out.members.insert(whole.id, vec![whole.id]);
        index_of.insert(group, out.requests.len());
        out.requests.push(whole);
    }
    out
}

impl Gathered {
    /// The containers a gathered request stands for.
    pub fn members_of(&self, id: Uuid) -> Vec<Uuid> {
        self.members.get(&id).cloned().unwrap_or_else(|| vec![id])
    }

    /// The decision on the gathered requests, per container: every member
    /// of a placed group on its host with the group's host ports; every
    /// member of a waiting group waiting for the same reason.
    pub fn spread(&self, decision: Decision) -> Decision {
        let mut out = Decision::default();
        for p in decision.placements {
            let ports = self
                .home_ports
                .get(&p.container)
                .cloned()
                .unwrap_or(p.ports);
            for id in self.members_of(p.container) {
                out.placements.push(Placement {
                    container: id,
                    host: p.host.clone(),
                    ports: ports.clone(),
                });
            }
        }
        for (id, wait) in decision.waiting {
            for member in self.members_of(id) {
                out.waiting.push((member, wait.clone()));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::place::Wait;
    use skiff_core::{NetworkMode, PortRequest, Protocol};
    use std::collections::BTreeMap;

    const T: Uuid = Uuid::from_u128(0x7);
    const G: Uuid = Uuid::from_u128(0x90);
    const H: Uuid = Uuid::from_u128(0x91);

    fn req(n: u128, cpu: i64, mem: i64) -> PendingRequest {
        PendingRequest {
            id: Uuid::from_u128(n),
            tenant: T,
            cpu_millis: cpu,
            memory_mib: mem,
            image: format!("r/img:{n}"),
            host_labels: BTreeMap::new(),
            prefer_host: None,
            network: NetworkMode::Private,
            ports: vec![PortRequest {
                port: 80,
                protocol: Protocol::Tcp,
                host_port: None,
            }],
            require_host: None,
        }
    }

    fn member(n: u128, group: Option<Uuid>) -> PendingMember {
        PendingMember {
            request: req(n, 250, 128),
            group,
        }
    }

    fn published(host_port: u16) -> Vec<PublishedPort> {
        vec![PublishedPort {
            port: 80,
            protocol: Protocol::Tcp,
            host_port,
        }]
    }

    #[test]
    fn a_groups_members_are_one_request_at_the_first_ones_place() {
        let g = gather(
            vec![
                member(1, Some(G)),
                member(2, None),
                member(3, Some(G)),
                member(4, Some(H)),
            ],
            &HashMap::new(),
        );
        let ids: Vec<u128> = g.requests.iter().map(|r| r.id.as_u128()).collect();
        assert_eq!(ids, [1, 2, 4], "the group at its first member's place");
        assert_eq!(
            (g.requests[0].cpu_millis, g.requests[0].memory_mib),
            (500, 256),
            "summed"
        );
        assert_eq!(g.requests[0].image, "r/img:1", "the first member's");
        assert_eq!(g.requests[0].ports.len(), 1, "the group's ports once");
        assert_eq!(
            (g.requests[1].cpu_millis, g.requests[2].cpu_millis),
            (250, 250)
        );
        assert!(g.requests.iter().all(|r| r.require_host.is_none()));
    }

    #[test]
    fn members_beside_a_running_part_go_to_its_host_with_its_ports() {
        let homes = HashMap::from([(
            G,
            GroupHome {
                host: "h2".into(),
                ports: published(30001),
            },
        )]);
        let g = gather(vec![member(1, Some(G)), member(2, Some(G))], &homes);
        assert_eq!(g.requests[0].require_host.as_deref(), Some("h2"));
        assert!(
            g.requests[0].ports.is_empty(),
            "held already: not asked again"
        );
        let decision = Decision {
            placements: vec![Placement {
                container: Uuid::from_u128(1),
                host: "h2".into(),
                ports: Vec::new(),
            }],
            waiting: Vec::new(),
        };
        let spread = g.spread(decision);
        assert_eq!(spread.placements.len(), 2);
        for p in &spread.placements {
            assert_eq!((p.host.as_str(), p.ports.clone()), ("h2", published(30001)));
        }
    }

    #[test]
    fn a_decision_reaches_every_member() {
        let g = gather(
            vec![
                member(1, Some(G)),
                member(2, Some(G)),
                member(3, None),
                member(4, Some(H)),
                member(5, Some(H)),
            ],
            &HashMap::new(),
        );
        let decision = Decision {
            placements: vec![
                Placement {
                    container: Uuid::from_u128(1),
                    host: "h1".into(),
                    ports: published(30000),
                },
                Placement {
                    container: Uuid::from_u128(3),
                    host: "h1".into(),
                    ports: published(30002),
                },
            ],
            waiting: vec![(Uuid::from_u128(4), Wait::NoRoom)],
        };
        let spread = g.spread(decision);
        let placed: Vec<(u128, &str, u16)> = spread
            .placements
            .iter()
            .map(|p| (p.container.as_u128(), p.host.as_str(), p.ports[0].host_port))
            .collect();
        assert_eq!(
            placed,
            [(1, "h1", 30000), (2, "h1", 30000), (3, "h1", 30002)]
        );
        let waiting: Vec<u128> = spread.waiting.iter().map(|(id, _)| id.as_u128()).collect();
        assert_eq!(waiting, [4, 5]);
    }
}
