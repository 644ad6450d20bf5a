//! What a worker may claim, as pure checks: the times in a report bill
//! money, so a report that puts a run's start before its placement, a time
//! in the future, an end before the start, or that speaks for a container
//! another host holds, is refused (and counted) instead of billed. The
//! worker treats a refusal as final.
//!
//! `skew` allows for clocks of different machines: a worker's clock may be
//! that far from the database's either way.

use chrono::{DateTime, Duration, Utc};

/// Why a report was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the report is from a host that does not hold this container")]
    NotThisHost,
    #[error("the run's start is before the run was placed")]
    StartBeforePlacement,
    #[error("a time in the report lies in the future")]
    InTheFuture,
    #[error("the run's end is before its start")]
    EndBeforeStart,
}

impl Refusal {
    pub const ALL: [Refusal; 4] = [
        Self::NotThisHost,
        Self::StartBeforePlacement,
        Self::InTheFuture,
        Self::EndBeforeStart,
    ];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotThisHost => "not_this_host",
            Self::StartBeforePlacement => "start_before_placement",
            Self::InTheFuture => "in_the_future",
            Self::EndBeforeStart => "end_before_start",
        }
    }
}

/// The facts a status report is checked against.
#[derive(Debug, Clone)]
pub struct Claim<'a> {
    /// The host the report says it is from, and the host holding the container.
    pub reporting_host: &'a str,
    pub holding_host: Option<&'a str>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// When the run was placed: the current run's placement, or for an
    /// older run, the container's creation (nothing ran before it).
    pub placed_at: DateTime<Utc>,
}

pub fn check_report(c: &Claim, now: DateTime<Utc>, skew: Duration) -> Result<(), Refusal> {
    if c.holding_host != Some(c.reporting_host) {
        return Err(Refusal::NotThisHost);
    }
    let latest = now + skew;
    if c.started_at.is_some_and(|s| s > latest) || c.finished_at.is_some_and(|f| f > latest) {
        return Err(Refusal::InTheFuture);
    }
    if c.started_at.is_some_and(|s| s < c.placed_at - skew) {
        return Err(Refusal::StartBeforePlacement);
    }
    if let (Some(s), Some(f)) = (c.started_at, c.finished_at) {
        if f < s {
            return Err(Refusal::EndBeforeStart);
        }
    }
    Ok(())
}

/// A meter checkpoint: only from the host its run is metered on, and not
/// from the future.
pub fn check_checkpoint(
    reporting_host: &str,
    run_host: &str,
    observed_at: DateTime<Utc>,
    now: DateTime<Utc>,
    skew: Duration,
) -> Result<(), Refusal> {
    if reporting_host != run_host {
        return Err(Refusal::NotThisHost);
    }
    if observed_at > now + skew {
        return Err(Refusal::InTheFuture);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }

    #[test]
    fn report_table() {
        let skew = Duration::seconds(5);
        let now = t(100);
        let ok = Claim {
            reporting_host: "h1",
            holding_host: Some("h1"),
            started_at: Some(t(50)),
            finished_at: Some(t(60)),
            placed_at: t(49),
        };
        let rows: Vec<(&str, Claim, Result<(), Refusal>)> = vec![
            ("an honest run", ok.clone(), Ok(())),
            (
                "no times at all (progress)",
                Claim {
                    started_at: None,
                    finished_at: None,
                    ..ok.clone()
                },
                Ok(()),
            ),
            (
                "within the skew of its placement",
                Claim {
                    started_at: Some(t(45)),
                    ..ok.clone()
                },
                Ok(()),
            ),
            (
                "started long before placement",
                Claim {
                    started_at: Some(t(10)),
                    ..ok.clone()
                },
                Err(Refusal::StartBeforePlacement),
            ),
            (
                "a start in the future",
                Claim {
                    started_at: Some(t(200)),
                    finished_at: None,
                    ..ok.clone()
                },
                Err(Refusal::InTheFuture),
            ),
            (
                "an end in the future",
                Claim {
                    finished_at: Some(t(200)),
                    ..ok.clone()
                },
                Err(Refusal::InTheFuture),
            ),
            (
                "just within the future skew",
                Claim {
                    finished_at: Some(t(104)),
                    ..ok.clone()
                },
                Ok(()),
            ),
            (
                "an end before the start",
                Claim {
                    finished_at: Some(t(40)),
                    ..ok.clone()
                },
                Err(Refusal::EndBeforeStart),
            ),
            (
                "another host's container",
                Claim {
                    reporting_host: "h2",
                    ..ok.clone()
                },
                Err(Refusal::NotThisHost),
            ),
            (
                "a container no host holds",
                Claim {
                    holding_host: None,
                    ..ok.clone()
                },
                Err(Refusal::NotThisHost),
            ),
        ];
        for (case, claim, want) in rows {
            assert_eq!(check_report(&claim, now, skew), want, "{case}");
        }
    }

    #[test]
    fn checkpoint_table() {
        let skew = Duration::seconds(5);
        assert_eq!(check_checkpoint("h1", "h1", t(99), t(100), skew), Ok(()));
        assert_eq!(check_checkpoint("h1", "h1", t(104), t(100), skew), Ok(()));
        assert_eq!(
            check_checkpoint("h1", "h1", t(200), t(100), skew),
            Err(Refusal::InTheFuture)
        );
        assert_eq!(
            check_checkpoint("h2", "h1", t(99), t(100), skew),
            Err(Refusal::NotThisHost)
        );
    }
}
