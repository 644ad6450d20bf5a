//! The crate's error type: what can go wrong when metering or reporting.

use chrono::{DateTime, Utc};
use skiff_core::FieldError;

#[derive(Debug, thiserror::Error)]
pub enum BillingError {
    /// Input that fails validation; names the offending field (maps to 4xx).
    #[error("invalid input: {0}")]
    Invalid(#[from] FieldError),
    /// No rate card is in force at `at` (none added, or none effective yet):
    /// an operator error, since `ensure_default_rate` runs at start.
    #[error("no rate card is in force at {at}")]
    NoRate { at: DateTime<Utc> },
    /// A row that cannot be what this crate wrote (e.g. a hash of the wrong
    /// length, an unknown record kind).
    #[error("corrupt {table} row {key}: {detail}")]
    Corrupt {
        table: &'static str,
        key: String,
        detail: String,
    },
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// A rate card already takes effect at that hour (a conflict with the
    /// rate card, not bad input: maps to 409).
    #[error("a rate card already takes effect at {}", .0.to_rfc3339())]
    RateTaken(DateTime<Utc>),
    /// A verification asked again too soon after the last one.
    #[error("verified moments ago; again in {retry_after_s} s")]
    TooSoon { retry_after_s: u64 },
}

impl BillingError {
    pub(crate) fn corrupt(table: &'static str, key: impl ToString, detail: impl ToString) -> Self {
        BillingError::Corrupt {
            table,
            key: key.to_string(),
            detail: detail.to_string(),
        }
    }
}
