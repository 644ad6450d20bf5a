//! Per-token rate limits: a token bucket (GCRA, `governor`) per token and
//! per kind of request, reads (`GET`, `HEAD`) apart from writes (the rest),
//! so a tenant polling hard can still act and one creating hard can still
//! read. A request past its bucket is answered 429 with `Retry-After`;
//! every limited response carries `RateLimit-Limit`, `RateLimit-Remaining`
//! and `RateLimit-Reset` (seconds until the bucket is full again).
//!
//! A read costs what it asks for ([`read_cost`]): one for a single
//! object, more for a page of a list (one per [`ROWS_PER_CELL`] rows), so
//! a token paging through lists of a thousand cannot take the CPU that the
//! same count of single reads would not.
//!
//! The buckets live in each replica's memory: with N replicas behind a
//! balancer, set `SKIFF_RATE_LIMIT_REPLICAS=N` and each replica enforces
//! 1/N of the configured rate and burst, so a token spread over the
//! replicas gets the configured figures for the whole control plane (a
//! client pinned to one replica gets 1/N). Nothing is shared through
//! PostgreSQL: a limit checked per request must not cost a round trip.

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use std::num::NonZeroU32;
use std::time::Duration;

/// A token's key: the SHA-256 of the token (tokens are not kept).
pub type Key = Vec<u8>;

type Limiter =
    RateLimiter<Key, DefaultKeyedStateStore<Key>, DefaultClock, StateInformationMiddleware>;

/// The rate and burst of one kind of request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    pub per_second: f64,
    pub burst: u32,
}

impl Bucket {
    /// This replica's share of a bucket the control plane's `replicas` share.
    pub fn share(self, replicas: u32) -> Bucket {
        let n = f64::from(replicas.max(1));
        Bucket {
            per_second: self.per_second / n,
            burst: ((f64::from(self.burst) / n).floor() as u32).max(1),
        }
    }

    fn quota(self) -> Quota {
        let per_cell = Duration::from_secs_f64(1.0 / self.per_second.max(0.001));
        Quota::with_period(per_cell)
            .expect("a positive period")
            .allow_burst(NonZeroU32::new(self.burst.max(1)).expect("at least 1"))
    }
}

/// What a check decided, with what the headers say.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Verdict {
    Allowed {
        limit: u32,
        remaining: u32,
        /// Seconds until the bucket is full again.
        reset_s: u64,
    },
    Limited {
        limit: u32,
        /// Seconds until one more request is allowed (at least 1).
        retry_after_s: u64,
    },
}

pub struct RateLimits {
    reads: Limiter,
    writes: Limiter,
    read: Bucket,
    write: Bucket,
    clock: DefaultClock,
}

impl RateLimits {
    pub fn new(read: Bucket, write: Bucket) -> Self {
        Self {
            reads: RateLimiter::keyed(read.quota()).with_middleware(),
            writes: RateLimiter::keyed(write.quota()).with_middleware(),
            read,
            write,
            clock: DefaultClock::default(),
        }
    }

    /// Takes `cost` cells of the token's bucket for this kind of request
    /// (a cost past the burst is taken as the whole burst).
    pub fn check(&self, key: &Key, write: bool, cost: u32) -> Verdict {
        let (limiter, bucket) = if write {
            (&self.writes, self.write)
        } else {
            (&self.reads, self.read)
        };
        let cost = NonZeroU32::new(cost.clamp(1, bucket.burst.max(1))).expect("at least 1");
        // A cost within the burst is never refused as too large for it.
        match limiter
            .check_key_n(key, cost)
            .unwrap_or_else(|_| limiter.check_key(key))
        {
            Ok(state) => {
                let remaining = state.remaining_burst_capacity();
                let missing = bucket.burst.saturating_sub(remaining);
                Verdict::Allowed {
                    limit: bucket.burst,
                    remaining,
                    reset_s: (f64::from(missing) / bucket.per_second).ceil() as u64,
                }
            }
            Err(not_until) => Verdict::Limited {
                limit: bucket.burst,
                retry_after_s: not_until
                    .wait_time_from(self.clock.now())
                    .as_secs_f64()
                    .ceil()
                    .max(1.0) as u64,
            },
        }
    }

    /// Forgets the buckets of tokens that are full again (they would
    /// allow a full burst anyway): the maps stay as large as the tokens
    /// active within a refill time.
    pub fn prune(&self) {
        for limiter in [&self.reads, &self.writes] {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }
}

/// Rows of a list page that cost one more cell.
pub const ROWS_PER_CELL: u32 = 20;

/// What a read of `path?query` costs: 1, or for a list (a path ending in
/// a collection) one cell per [`ROWS_PER_CELL`] rows of the page it asks.
pub fn read_cost(path: &str, query: Option<&str>) -> u32 {
    const LISTS: [&str; 6] = [
        "containers",
        "jobs",
        "tasks",
        "events",
        "hosts",
        "deliveries",
    ];
    let last = path.trim_end_matches('/').rsplit('/').next().unwrap_or("");
    if !LISTS.contains(&last) {
        return 1;
    }
    let page = query
        .unwrap_or("")
        .split('&')
        .find_map(|kv| kv.strip_prefix("limit="))
        .and_then(|v| v.parse::<u32>().ok())
        .unwrap_or(crate::http::DEFAULT_PAGE as u32);
    page.div_ceil(ROWS_PER_CELL).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_costs_one_cell_or_one_per_twenty_rows_of_the_page_it_asks() {
        let cases = [
            ("/v1/containers/0000", None, 1),
            ("/v1/containers/0000/logs", Some("tail=10"), 1),
            ("/v1/quota", None, 1),
            ("/v1/containers", None, 5), // the default page, 100
            ("/v1/containers", Some("limit=1"), 1),
            ("/v1/containers", Some("label=a%3Db&limit=1000"), 50),
            ("/v1/containers", Some("limit=21"), 2),
            ("/v1/containers", Some("limit=junk"), 5), // refused later anyway
            ("/v1/jobs/0000/tasks", Some("limit=40"), 2),
            ("/v1/events", Some("after=9"), 5),
        ];
        for (path, query, want) in cases {
            assert_eq!(read_cost(path, query), want, "{path}?{query:?}");
        }
        // A cost past the burst takes the whole burst (never refused for good).
        let limits = RateLimits::new(
            Bucket {
                per_second: 1.0,
                burst: 10,
            },
            Bucket {
                per_second: 1.0,
                burst: 1,
            },
        );
        let key = b"k".to_vec();
        assert!(matches!(
            limits.check(&key, false, 50),
            Verdict::Allowed { remaining: 0, .. }
        ));
        assert!(matches!(
            limits.check(&key, false, 1),
            Verdict::Limited { .. }
        ));
    }

    #[test]
    fn a_burst_is_allowed_then_limited_with_a_retry_after_and_tokens_are_apart() {
        let limits = RateLimits::new(
            Bucket {
                per_second: 1.0,
                burst: 3,
            },
            Bucket {
                per_second: 0.5,
                burst: 2,
            },
        );
        let (a, b) = (b"a".to_vec(), b"b".to_vec());
        let remaining: Vec<Verdict> = (0..3).map(|_| limits.check(&a, false, 1)).collect();
        assert!(
            matches!(
                remaining[0],
                Verdict::Allowed {
                    limit: 3,
                    remaining: 2,
                    ..
                }
            ),
            "{remaining:?}"
        );
        assert!(
            matches!(
                remaining[2],
                Verdict::Allowed {
                    remaining: 0,
                    reset_s: 3,
                    ..
                }
            ),
            "{remaining:?}"
        );
        assert!(
            matches!(
                limits.check(&a, false, 1),
                Verdict::Limited {
                    limit: 3,
                    retry_after_s: 1
                }
            ),
            "the fourth read"
        );
        // Writes have their own bucket, and another token its own.
        assert!(matches!(
            limits.check(&a, true, 1),
            Verdict::Allowed {
                limit: 2,
                remaining: 1,
                ..
            }
        ));
        assert!(matches!(
            limits.check(&a, true, 1),
            Verdict::Allowed { remaining: 0, .. }
        ));
        assert!(matches!(
            limits.check(&a, true, 1),
            Verdict::Limited {
                retry_after_s: 2,
                ..
            }
        ));
        assert!(matches!(
            limits.check(&b, false, 1),
            Verdict::Allowed { remaining: 2, .. }
        ));
    }

    #[test]
    fn each_replica_takes_its_share() {
        let b = Bucket {
            per_second: 100.0,
            burst: 500,
        };
        assert_eq!(b.share(1), b);
        assert_eq!(
            b.share(4),
            Bucket {
                per_second: 25.0,
                burst: 125
            }
        );
        assert_eq!(
            Bucket {
                per_second: 1.0,
                burst: 1
            }
            .share(3)
            .burst,
            1
        );
    }
}
