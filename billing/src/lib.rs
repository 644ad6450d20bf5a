//! skiff-billing: per-second metering, the usage ledger, and billing reports.
//!
//! It owns the billing rule and everything that turns the worker's facts
//! into money. A run (container, generation) is billed from containerd's task
//! start to its exit (or the kill of a stop request), rounded up to whole
//! seconds, minimum one second. Queue, pull and create time are free. Each run
//! sits on a whole-second grid starting at `floor(started_at)`; checkpoints
//! (the worker confirming the task running at T) bill the whole seconds
//! observed so far, and the close bills the rest, so re-sent or missing
//! checkpoints never change the total. Quantities are integers
//! (milli-vCPU-seconds, MiB-seconds), prices are integer nano-units per
//! unit-second stamped on each record, and money is integer micro-units,
//! rounded once per report row. Never floats for money.
//!
//! Usage records are append-only, split at UTC hour boundaries when written,
//! and hash-chained per tenant so a tenant can verify nothing was altered or
//! removed. Corrections are adjustment records.
//!
//! The API calls the async functions with `&mut PgConnection` (pass
//! `&mut *tx` to run them inside its own transaction); the worker never links
//! this crate. Dependency direction: billing -> core only.
//!
//! Layout:
//! - [`rules`]: the billing rule as pure arithmetic (rounding, hour
//!   splitting, pricing, exact decimals).
//! - [`chain`]: the hash chain (canonical encoding, hashing, verifier); pure.
//! - [`rates`]: rate cards (validation, lookup, `rate_cards` SQL).
//! - [`ledger`]: runs, report dedup and appends to the ledger (SQL).
//! - [`report`]: report queries, CSV, per-container totals (SQL).
//! - [`error`]: the crate's error type, [`BillingError`].
//!
//! Binaries: `skiff-billing` (a tenant's monthly statement from PostgreSQL)
//! and `billing-bench` (report timings over a million records).

pub mod chain;
pub mod error;
pub mod ledger;
pub mod rates;
pub mod report;
pub mod rules;

pub use chain::{BrokenRecord, RecordKind, UsageRecord, Verification};
pub use error::BillingError;
pub use ledger::{
    append_adjustment, checkpoint, checkpoint_lag_seconds, close_run, close_runs_of_host,
    forget_meter_reports, metered_seconds_total, open_run, open_runs, verify_chain,
    verify_chain_incremental, Adjustment, MeasuredUsage, RunFacts,
};
pub use rates::{add_rate, ensure_default_rate, rates, RateCard, DEFAULT_RATE};
pub use report::{
    container_usage, job_usage, report, report_csv, report_from_records, GroupBy, Report,
    ReportQuery, ReportRow, UsageTotals,
};
pub use rules::{billed_seconds, Rate};
