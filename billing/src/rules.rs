//! The billing rule as pure integer arithmetic: no I/O, no clocks.
//!
//! Owns how a run's time becomes billed seconds (rounding up, one-second
//! minimum, checkpoints billing only whole observed seconds), how a stretch of
//! billed seconds is cut at UTC hour boundaries, and how quantities and rate
//! cards become money (integer micro-units, rounded once per group).
//!
//! The whole-second grid: a run that started at `started_at` owns the
//! seconds `[origin, origin + billed)` where `origin = floor(started_at)` in
//! epoch seconds. Placing every run on that grid is what makes any split of
//! time into windows add up to the run's billed seconds exactly.

use chrono::{DateTime, Utc};
use skiff_core::FieldError;

/// Seconds in one hour; usage records never cross a multiple of it.
pub const SECONDS_PER_HOUR: i64 = 3600;

/// `cost_micros = numerator / COST_DIVISOR` where
/// `numerator = seconds * (cpu_millis * nano_per_vcpu_second * 1024
///                        + memory_mib * nano_per_gib_second * 1000)`:
/// 1000 (milli-vCPU) * 1024 (MiB per GiB) * 1000 (nano per micro).
pub const COST_DIVISOR: i128 = 1000 * 1024 * 1000;

/// Upper bound of a rate (nano-units per unit-second), also enforced by the
/// schema: it keeps every per-record product inside PostgreSQL's bigint.
pub const MAX_NANO_RATE: i64 = 1_000_000_000;

/// Billed whole seconds for a run that lasted `run_ms` milliseconds:
/// rounded up, minimum one second.
pub fn billed_seconds(run_ms: u64) -> u64 {
    run_ms.div_ceil(1000).max(1)
}

/// `t` truncated to the millisecond: the precision runs are stored at.
pub fn truncate_to_millis(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(t.timestamp_millis()).unwrap_or(t)
}

/// `t` truncated to the microsecond: PostgreSQL's timestamptz precision.
pub fn truncate_to_micros(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t)
}

/// Epoch second of the run's first billed second: `floor(started_at)`.
pub fn run_origin(started_at: DateTime<Utc>) -> i64 {
    // chrono keeps sub-second nanos non-negative, so this is a floor.
    started_at.timestamp()
}

/// Billed seconds of a run that started at `started_at` and ended at
/// `ended_at` (both taken at millisecond precision). An end before the start
/// (clock skew) still bills the one-second minimum.
pub fn run_billed_seconds(started_at: DateTime<Utc>, ended_at: DateTime<Utc>) -> i64 {
    let ms = ended_at.timestamp_millis() - started_at.timestamp_millis();
    billed_seconds(ms.max(0) as u64) as i64
}

/// Whole seconds a checkpoint at `observed_at` proves: the run was running
/// for at least `floor((observed_at - started_at) / 1 s)` seconds. Never more
/// than [`run_billed_seconds`] for any end at or after `observed_at`.
pub fn observed_seconds(started_at: DateTime<Utc>, observed_at: DateTime<Utc>) -> i64 {
    let ms = observed_at.timestamp_millis() - started_at.timestamp_millis();
    ms.max(0) / 1000
}

/// A half-open interval `[start_s, end_s)` of whole epoch seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsageInterval {
    pub start_s: i64,
    pub end_s: i64,
}

impl UsageInterval {
    pub fn new(start_s: i64, end_s: i64) -> Self {
        Self { start_s, end_s }
    }

    /// The seconds `[from, to)` of a run whose grid starts at `origin`.
    pub fn of_run(origin: i64, from: i64, to: i64) -> Self {
        Self::new(origin + from, origin + to)
    }

    pub fn seconds(&self) -> i64 {
        (self.end_s - self.start_s).max(0)
    }

    pub fn is_empty(&self) -> bool {
        self.end_s <= self.start_s
    }

    /// The interval cut at every UTC hour boundary: pieces in order, each
    /// within one hour, contiguous, together exactly `self`.
    pub fn split_at_hours(&self) -> Vec<UsageInterval> {
        let mut pieces = Vec::new();
        let mut start = self.start_s;
        while start < self.end_s {
            let next_hour = (start.div_euclid(SECONDS_PER_HOUR) + 1) * SECONDS_PER_HOUR;
            let end = next_hour.min(self.end_s);
            pieces.push(UsageInterval::new(start, end));
            start = end;
        }
        pieces
    }

    /// Seconds of `self` inside the window `[from_s, to_s)`.
    pub fn overlap(&self, from_s: i64, to_s: i64) -> i64 {
        (self.end_s.min(to_s) - self.start_s.max(from_s)).max(0)
    }
}

/// A run's billing progress: the pure core of checkpoint and close. Each
/// step returns the newly billed seconds as intervals cut at UTC hours
/// (empty when nothing new is billed); `billed_so_far` never decreases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunMeter {
    pub started_at: DateTime<Utc>,
    pub billed_so_far: i64,
}

impl RunMeter {
    pub fn new(started_at: DateTime<Utc>) -> Self {
        Self {
            started_at,
            billed_so_far: 0,
        }
    }

    /// Epoch second of the run's first billed second.
    pub fn origin(&self) -> i64 {
        run_origin(self.started_at)
    }

    /// The run was confirmed running at `observed_at`.
    pub fn checkpoint(&mut self, observed_at: DateTime<Utc>) -> Vec<UsageInterval> {
        self.advance_to(observed_seconds(self.started_at, observed_at))
    }

    /// The run ended at `ended_at`.
    pub fn close(&mut self, ended_at: DateTime<Utc>) -> Vec<UsageInterval> {
        self.advance_to(run_billed_seconds(self.started_at, ended_at))
    }

    fn advance_to(&mut self, total: i64) -> Vec<UsageInterval> {
        if total <= self.billed_so_far {
            return Vec::new();
        }
        let pieces =
            UsageInterval::of_run(self.origin(), self.billed_so_far, total).split_at_hours();
        self.billed_so_far = total;
        pieces
    }
}

/// Prices in nano-units (1e-9 of the currency) per vCPU-second and per
/// GiB-second, as stamped on a usage record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub nano_per_vcpu_second: i64,
    pub nano_per_gib_second: i64,
}

impl Rate {
    /// Validates both prices (field names as in the rate card API).
    pub fn validate(&self) -> Result<(), FieldError> {
        for (field, v) in [
            ("nano_per_vcpu_second", self.nano_per_vcpu_second),
            ("nano_per_gib_second", self.nano_per_gib_second),
        ] {
            if !(0..=MAX_NANO_RATE).contains(&v) {
                return Err(FieldError::new(
                    field,
                    format!("must be between 0 and {MAX_NANO_RATE} nano-units, got {v}"),
                ));
            }
        }
        Ok(())
    }
}

/// Cost numerator (see [`COST_DIVISOR`]) of `seconds` at the given size and
/// rate. Exact; negative for negative (adjustment) seconds.
pub fn cost_numerator(seconds: i64, cpu_millis: i32, memory_mib: i32, rate: Rate) -> i128 {
    let cpu = i128::from(cpu_millis) * i128::from(rate.nano_per_vcpu_second) * 1024;
    let mem = i128::from(memory_mib) * i128::from(rate.nano_per_gib_second) * 1000;
    i128::from(seconds) * (cpu + mem)
}

/// Combines the two partial sums a report query returns,
/// `sum(seconds * cpu_millis * nano_per_vcpu_second)` and
/// `sum(seconds * memory_mib * nano_per_gib_second)`, into a numerator.
pub fn numerator_from_parts(cpu_part: i128, mem_part: i128) -> i128 {
    cpu_part * 1024 + mem_part * 1000
}

/// Micro-units for a summed numerator: divided once and rounded half-up
/// (half away from zero, so a credit that mirrors a charge costs exactly its
/// negation). Saturates at the i64 range, far beyond any real bill.
pub fn micros_from_numerator(numerator: i128) -> i64 {
    let half = COST_DIVISOR / 2;
    let q = if numerator >= 0 {
        (numerator + half) / COST_DIVISOR
    } else {
        -((-numerator + half) / COST_DIVISOR)
    };
    q.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
}

/// Exact decimal rendering of `n / d` where `d` has only the prime factors 2
/// and 5 (1000, 1024, 1_000_000): "12.5", "-0.0009765625", "3".
pub fn exact_decimal(n: i64, d: i64) -> String {
    debug_assert!(d > 0);
    let neg = n < 0;
    let n = i128::from(n).abs();
    let d = i128::from(d);
    let mut out = String::new();
    if neg {
        out.push('-');
    }
    out.push_str(&(n / d).to_string());
    let mut r = n % d;
    if r != 0 {
        out.push('.');
        // Terminates for d = 2^a 5^b; the bound guards against other d.
        for _ in 0..40 {
            if r == 0 {
                break;
            }
            r *= 10;
            out.push(char::from(b'0' + (r / d) as u8));
            r %= d;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(s: i64, ms: u32) -> DateTime<Utc> {
        Utc.timestamp_opt(s, ms * 1_000_000).unwrap()
    }

    #[test]
    fn rounds_up_with_a_one_second_minimum() {
        assert_eq!(billed_seconds(0), 1);
        assert_eq!(billed_seconds(1), 1);
        assert_eq!(billed_seconds(1000), 1);
        assert_eq!(billed_seconds(1001), 2);
        assert_eq!(billed_seconds(5_400), 6);
        assert_eq!(run_billed_seconds(at(10, 400), at(15, 400)), 5);
        assert_eq!(run_billed_seconds(at(10, 400), at(15, 401)), 6);
        assert_eq!(run_billed_seconds(at(10, 400), at(9, 0)), 1);
    }

    #[test]
    fn checkpoints_bill_whole_observed_seconds() {
        assert_eq!(observed_seconds(at(10, 400), at(10, 999)), 0);
        assert_eq!(observed_seconds(at(10, 400), at(11, 400)), 1);
        assert_eq!(observed_seconds(at(10, 400), at(5, 0)), 0);
        assert_eq!(run_origin(at(10, 999)), 10);
    }

    #[test]
    fn splits_at_hour_boundaries() {
        let i = UsageInterval::new(3590, 7210);
        assert_eq!(
            i.split_at_hours(),
            vec![
                UsageInterval::new(3590, 3600),
                UsageInterval::new(3600, 7200),
                UsageInterval::new(7200, 7210)
            ]
        );
        assert!(UsageInterval::new(5, 5).split_at_hours().is_empty());
        assert_eq!(i.overlap(3600, 7200), 3600);
    }

    #[test]
    fn prices_a_vcpu_hour_at_the_default_rate() {
        let rate = Rate {
            nano_per_vcpu_second: 11_300,
            nano_per_gib_second: 1_240,
        };
        // 1 vCPU for an hour: 3600 * 11_300 nano = 40_680_000 nano = 40_680 micro.
        assert_eq!(
            micros_from_numerator(cost_numerator(3600, 1000, 0, rate)),
            40_680
        );
        // 1 GiB for an hour: 3600 * 1_240 nano = 4_464 micro.
        assert_eq!(
            micros_from_numerator(cost_numerator(3600, 0, 1024, rate)),
            4_464
        );
    }

    #[test]
    fn rounds_half_away_from_zero() {
        assert_eq!(micros_from_numerator(COST_DIVISOR / 2), 1);
        assert_eq!(micros_from_numerator(COST_DIVISOR / 2 - 1), 0);
        assert_eq!(micros_from_numerator(-COST_DIVISOR / 2), -1);
        assert_eq!(micros_from_numerator(-(COST_DIVISOR / 2 - 1)), 0);
    }

    #[test]
    fn renders_exact_decimals() {
        assert_eq!(exact_decimal(12_500, 1000), "12.5");
        assert_eq!(exact_decimal(3000, 1000), "3");
        assert_eq!(exact_decimal(-1, 1024), "-0.0009765625");
        assert_eq!(exact_decimal(1_500_001, 1_000_000), "1.500001");
    }
}
