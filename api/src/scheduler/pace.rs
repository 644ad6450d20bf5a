//! Pacing tenants' starts, as pure functions: a tenant's start rate is a
//! token bucket ([`StartRate`]) whose state the placement round keeps in
//! the tenant's row; [`within_start_rate`] splits a round's requests into
//! those their tenants' tokens allow and those that wait. Container starts
//! cost a host CPU outside any container's cgroup (shim, runc), so one
//! tenant's churn of short containers must not slow every other tenant's
//! starts.

use super::place::{PendingRequest, Wait};
use std::collections::HashMap;
use uuid::Uuid;

/// A tenant's start rate: `per_s` starts a second on average, up to
/// `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StartRate {
    pub per_s: f64,
    pub burst: f64,
}

impl StartRate {
    /// `per_s`, with a burst of `burst_s` seconds' worth (at least one start).
    pub fn new(per_s: f64, burst_s: f64) -> Self {
        let per_s = per_s.max(0.0);
        Self {
            per_s,
            burst: (per_s * burst_s).max(1.0),
        }
    }

    /// The tokens of a bucket that held `tokens` `elapsed_s` ago (None:
    /// never used, full).
    pub fn refill(&self, tokens: Option<f64>, elapsed_s: f64) -> f64 {
        match tokens {
            None => self.burst,
            Some(t) => (t + self.per_s * elapsed_s.max(0.0)).min(self.burst),
        }
    }
}

/// Splits `requests` (in placement order) into those their tenants'
/// tokens (`tokens`, with each tenant's rate) allow, one whole token each,
/// and the rest, which wait for the rate (with why). A tenant not in
/// `tokens` is not paced.
pub fn within_start_rate(
    requests: Vec<PendingRequest>,
    tokens: &HashMap<Uuid, (f64, StartRate)>,
) -> (Vec<PendingRequest>, Vec<(PendingRequest, Wait)>) {
    let mut left: HashMap<Uuid, f64> = tokens.iter().map(|(t, (n, _))| (*t, *n)).collect();
    let mut allowed = Vec::new();
    let mut waiting = Vec::new();
    for r in requests {
        match left.get_mut(&r.tenant) {
            Some(n) if *n < 1.0 => {
                let per_s = tokens[&r.tenant].1.per_s;
                waiting.push((r, Wait::StartRate { per_s }));
            }
            Some(n) => {
                *n -= 1.0;
                allowed.push(r);
            }
            None => allowed.push(r),
        }
    }
    (allowed, waiting)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    const A: Uuid = Uuid::from_u128(0xa);
    const B: Uuid = Uuid::from_u128(0xb);

    fn req(n: u128, tenant: Uuid) -> PendingRequest {
        PendingRequest {
            id: Uuid::from_u128(n),
            tenant,
            cpu_millis: 100,
            memory_mib: 64,
            image: "r/img:1".into(),
            host_labels: BTreeMap::new(),
            prefer_host: None,
            network: skiff_core::NetworkMode::None,
            ports: Vec::new(),
            require_host: None,
        }
    }

    #[test]
    fn a_tenants_starts_are_paced_by_its_tokens_and_other_tenants_are_not() {
        let rate = StartRate::new(2.0, 5.0);
        assert_eq!(rate.burst, 10.0);
        assert_eq!(StartRate::new(0.05, 5.0).burst, 1.0, "at least one start");
        // (tokens held, seconds since, tokens now)
        for (held, elapsed, want) in [
            (None, 0.0, 10.0),       // never used: full
            (Some(0.0), 1.5, 3.0),   // refills at the rate
            (Some(9.0), 60.0, 10.0), // up to the burst
            (Some(0.5), -3.0, 0.5),  // a clock step back takes nothing
        ] {
            assert_eq!(rate.refill(held, elapsed), want, "{held:?} {elapsed}");
        }
        // A holds 2.5 tokens: its first two requests go, the rest wait; B
        // (not paced) and C (3 tokens, 1 request) all go.
        const C: Uuid = Uuid::from_u128(0xc);
        let requests = vec![
            req(1, A),
            req(2, B),
            req(3, A),
            req(4, A),
            req(5, C),
            req(6, A),
        ];
        let tokens = HashMap::from([(A, (2.5, rate)), (C, (3.0, rate))]);
        let (allowed, waiting) = within_start_rate(requests, &tokens);
        let ids: Vec<u128> = allowed.iter().map(|r| r.id.as_u128()).collect();
        assert_eq!(ids, vec![1, 2, 3, 5]);
        let wait = Wait::StartRate { per_s: 2.0 };
        let waiting: Vec<(Uuid, Wait)> = waiting.into_iter().map(|(r, w)| (r.id, w)).collect();
        assert_eq!(
            waiting,
            vec![
                (Uuid::from_u128(4), wait.clone()),
                (Uuid::from_u128(6), wait)
            ]
        );
    }
}
