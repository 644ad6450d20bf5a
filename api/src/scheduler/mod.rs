//! The control plane's background loop: expires containers that waited too
//! long, places pending ones ([`place`], a pure function, under a database
//! lock shared by every replica), starts restarts whose back-off has
//! passed, and judges silent hosts lost.
//!
//! It runs at once when woken (a `NOTIFY` from any replica: a new
//! container, freed capacity, a new or recovered host) and otherwise every
//! `SKIFF_SCHEDULER_TICK_S`, so a lost wake-up costs a tick, never a container.
//!
//! Layout:
//! - [`place`]: placement and fair ordering, pure, with table tests.
//! - [`ports`]: host ports as a resource (assignment, admission), pure, with table tests.
//! - [`pace`]: tenants' start rates (token buckets), pure, with table tests.

pub mod pace;
pub mod place;
pub mod ports;

use crate::AppState;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How often old assignment changes, idempotency keys and expired
/// certificates are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// Deleted containers purged per prune step (the rest wait for the next).
const PURGE_BATCH: i64 = 1000;

pub async fn run(state: Arc<AppState>, shutdown: CancellationToken) {
    // Since when this replica has reached the database without a failure.
    let mut healthy_since = Instant::now();
    let mut last_prune = Instant::now();
    loop {
        // A host's silence only means something once this control plane has
        // been able to hear from it for the whole timeout: after an API
        // restart, or a database outage during which no heartbeat could be
        // recorded, every host would otherwise look lost.
        let judge_hosts = healthy_since.elapsed() >= state.config.host_lost_after();
        if let Err(err) = pass(&state, judge_hosts).await {
            if err.is_unavailable() {
                healthy_since = Instant::now();
            }
            tracing::warn!(error = %err, "scheduler pass failed; retrying");
        }
        if last_prune.elapsed() >= PRUNE_EVERY {
            last_prune = Instant::now();
            prune(&state).await;
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = state.hub.scheduler_woken() => {}
            _ = tokio::time::sleep(state.config.scheduler_tick()) => {}
        }
    }
}

/// Forgets what is past its retention; each kind on its own (one failing
/// does not stop the others).
async fn prune(state: &AppState) {
    let (store, config) = (&state.store, &state.config);
    logged(
        "old assignment changes",
        store
            .prune_assignment_changes(config.assignment_log_keep())
            .await,
    );
    logged(
        "old idempotency keys",
        store
            .forget_idempotency_keys(config.idempotency_keep())
            .await,
    );
    logged(
        "old meter report ids",
        store.forget_meter_reports(config.meter_report_keep()).await,
    );
    logged(
        "expired certificates",
        store.forget_expired_certificates().await,
    );
    logged(
        "deleted containers",
        store
            .purge_deleted(config.deleted_keep(), PURGE_BATCH)
            .await,
    );
    logged(
        "old tenant events",
        store.forget_old_events(config.event_log_keep()).await,
    );
    state.rate_limits.prune();
    match store.forget_lost_hosts(config.lost_host_keep()).await {
        Ok(gone) if !gone.is_empty() => {
            tracing::info!(hosts = ?gone, "lost hosts forgotten after their retention")
        }
        Ok(_) => {}
        Err(err) => tracing::warn!(error = %err, "forgetting lost hosts failed"),
    }
}

/// Logs one pruning's outcome.
fn logged(what: &str, outcome: Result<u64, crate::store::StoreError>) {
    match outcome {
        Ok(n) if n > 0 => tracing::debug!(forgotten = n, "{what} forgotten"),
        Ok(_) => {}
        Err(err) => tracing::warn!(error = %err, "forgetting {what} failed"),
    }
}

async fn pass(state: &AppState, judge_hosts: bool) -> Result<(), crate::store::StoreError> {
    let store = &state.store;
    let live_within = state.config.host_lost_after();
    let mut timer = StepTimer::new(state);
    for id in store.expire_pending().await? {
        tracing::info!(container = %id, "container failed: no capacity within max_pending_s");
    }
    timer.step("expire");
    for id in store.enforce_deadlines().await? {
        tracing::info!(container = %id, "run exceeded its timeout_s: stopping it");
    }
    timer.step("deadlines");
    crate::jobs::drive(state).await?;
    timer.step("jobs");
    if judge_hosts {
        for lost in store.handle_lost_hosts(live_within).await? {
            tracing::warn!(host = %lost.id, failed = lost.failed.len(), replaced = lost.replaced.len(),
                runs_closed = lost.runs_closed, "host lost: its containers failed or were queued for another host");
            state.metrics.hosts_lost.inc();
        }
        timer.step("hosts");
    }
    let round = store
        .place_pending(
            live_within,
            state.config.placement,
            state.config.start_pacing(),
        )
        .await?;
    timer.step("place");
    if round.placed > 0 || round.waiting > 0 {
        tracing::debug!(
            placed = round.placed,
            waiting = round.waiting,
            "placement round"
        );
        state.metrics.placements.inc_by(round.placed as u64);
    }
    store.start_due_restarts().await?;
    timer.step("restarts");
    Ok(())
}

/// Times the steps of a pass into `skiff_scheduler_step_seconds`.
struct StepTimer<'a> {
    state: &'a AppState,
    since: Instant,
}

impl<'a> StepTimer<'a> {
    fn new(state: &'a AppState) -> Self {
        Self {
            state,
            since: Instant::now(),
        }
    }

    fn step(&mut self, name: &str) {
        let now = Instant::now();
        self.state
            .metrics
            .scheduler_step
            .with_label_values(&[name])
            .observe((now - self.since).as_secs_f64());
        self.since = now;
    }
}
