//! End-to-end tests of skiff: real PostgreSQL, containerd, registry, API and
//! worker (see `skiff_e2e` for the harness). Run them with
//! `deploy/local/test.sh`; each test makes its own tenant.
//!
//! Layout:
//! - `run`: a container's life from create to exit (exit codes, logs,
//!   events, timings, missing images).
//! - `lifecycle`: stop, start, restart, restart policies, delete.
//! - `isolation`: cgroup limits, OOM kills, network namespace, tenants,
//!   secure environment.
//! - `api`: bad input, listing and pagination, service endpoints.
//! - `billing`: per-second metering, reports, ledger verification.
//! - `worker_restart`: the worker SIGKILLed and re-adopting its containers.

mod api;
mod billing;
mod isolation;
mod lifecycle;
mod run;
mod worker_restart;

use skiff_e2e::{Platform, Tenant};

/// A fresh tenant on the shared platform, or `None` when the run skips the
/// end-to-end tests (`SKIFF_E2E_SKIP=1`).
async fn tenant() -> Option<Tenant> {
    Some(Platform::get().await?.new_tenant().await)
}
