//! Resource quantities a caller asks for, as validated integers.
//!
//! cpu arrives as a decimal number of vCPUs (0.5) but is kept as integer
//! milli-vCPUs from then on: money and quotas are never computed in floats.

use crate::FieldError;
use serde::{Deserialize, Serialize};

/// vCPUs in thousandths. Valid requests are 0.1..=4 vCPU in steps of 0.01.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct CpuMillis(u32);

impl CpuMillis {
    pub const MIN: u32 = 100;
    pub const MAX: u32 = 4000;

    /// Parses a request's `cpu` (vCPUs as a JSON number).
    pub fn parse(vcpus: f64) -> Result<Self, FieldError> {
        let err = |m: &str| Err(FieldError::new("cpu", m));
        if !vcpus.is_finite() {
            return err("must be a number");
        }
        // Hundredths must be whole: 0.5 and 1.25 are fine, 0.125 is not.
        let hundredths = vcpus * 100.0;
        let rounded = hundredths.round();
        if (hundredths - rounded).abs() > 1e-6 {
            return err("must be a multiple of 0.01");
        }
        let millis = rounded * 10.0;
        if millis < f64::from(Self::MIN) || millis > f64::from(Self::MAX) {
            return err("must be between 0.1 and 4 vCPU");
        }
        Ok(Self(millis as u32))
    }

    pub fn from_millis(millis: u32) -> Self {
        Self(millis)
    }

    pub fn millis(self) -> u32 {
        self.0
    }

    /// vCPUs for display only (JSON responses); never for arithmetic.
    pub fn as_vcpus(self) -> f64 {
        f64::from(self.0) / 1000.0
    }

    /// CFS quota for a 100 ms period, in microseconds.
    pub fn cfs_quota_us(self, period_us: u64) -> i64 {
        (u64::from(self.0) * period_us / 1000) as i64
    }
}

/// Memory in MiB, 64..=16384.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct MemoryMib(u32);

impl MemoryMib {
    pub const MIN: u64 = 64;
    pub const MAX: u64 = 16384;

    pub fn parse(mib: u64) -> Result<Self, FieldError> {
        if !(Self::MIN..=Self::MAX).contains(&mib) {
            return Err(FieldError::new(
                "memory_mib",
                "must be between 64 and 16384 MiB",
            ));
        }
        Ok(Self(mib as u32))
    }

    pub fn from_mib(mib: u32) -> Self {
        Self(mib)
    }

    pub fn mib(self) -> u32 {
        self.0
    }

    pub fn bytes(self) -> i64 {
        i64::from(self.0) * 1024 * 1024
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_accepts_hundredths_in_range() {
        assert_eq!(CpuMillis::parse(0.5).unwrap().millis(), 500);
        assert_eq!(CpuMillis::parse(0.1).unwrap().millis(), 100);
        assert_eq!(CpuMillis::parse(1.25).unwrap().millis(), 1250);
        assert_eq!(CpuMillis::parse(4.0).unwrap().millis(), 4000);
        assert_eq!(CpuMillis::parse(0.29).unwrap().millis(), 290);
    }

    #[test]
    fn cpu_rejects_out_of_range_and_fine_fractions() {
        for bad in [0.0, 0.09, 4.01, -1.0, 0.125, f64::NAN, f64::INFINITY] {
            let err = CpuMillis::parse(bad).unwrap_err();
            assert_eq!(err.field, "cpu", "{bad}");
        }
    }

    #[test]
    fn cfs_quota_matches_cpu() {
        assert_eq!(CpuMillis::parse(0.5).unwrap().cfs_quota_us(100_000), 50_000);
        assert_eq!(
            CpuMillis::parse(2.0).unwrap().cfs_quota_us(100_000),
            200_000
        );
    }

    #[test]
    fn memory_bounds() {
        assert!(MemoryMib::parse(64).is_ok());
        assert!(MemoryMib::parse(16384).is_ok());
        assert_eq!(MemoryMib::parse(63).unwrap_err().field, "memory_mib");
        assert!(MemoryMib::parse(16385).is_err());
        assert_eq!(MemoryMib::parse(256).unwrap().bytes(), 268_435_456);
    }
}
