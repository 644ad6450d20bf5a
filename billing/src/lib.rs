//! skiff-billing: metering rules and billing reports.
//!
//! Billing arrives with issue 3 (per-second runs, rate cards, hash-chained
//! usage records). Until then this crate only fixes the billing rule every
//! other part must respect: a run is billed from containerd's task start to
//! its exit, rounded up to a whole second, minimum one second.

/// Billed whole seconds for a run that lasted `run_ms` milliseconds.
pub fn billed_seconds(run_ms: u64) -> u64 {
    run_ms.div_ceil(1000).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_up_with_a_one_second_minimum() {
        assert_eq!(billed_seconds(0), 1);
        assert_eq!(billed_seconds(1), 1);
        assert_eq!(billed_seconds(1000), 1);
        assert_eq!(billed_seconds(1001), 2);
        assert_eq!(billed_seconds(5_400), 6);
    }
}
