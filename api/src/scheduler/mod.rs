//! The control plane's background loop: expires containers that waited too
//! long, places pending ones ([`place`], a pure function, under a database
//! lock shared by every replica), starts restarts whose back-off has
//! passed, and judges silent hosts lost.
//!
//! It runs at once when woken (a `NOTIFY` from any replica: a new
//! container, freed capacity, a new or recovered host; not a job's new
//! task, which the pass that made it places) and otherwise every
//! `SKIFF_SCHEDULER_TICK_S`, so a lost wake-up costs a tick, never a container.
//! What only time makes due (a queued container's `max_pending_s`, a run's
//! `timeout_s`, a silent host) is looked at once a tick, not on every
//! wake-up: under a stream of exits that would be a pass per exit.
//!
//! Layout:
//! - [`place`]: placement and fair ordering, pure, with table tests.
//! - [`ports`]: host ports as a resource (assignment, admission), pure, with table tests.
//! - [`groups`]: a container group's members placed as one request, pure, with table tests.
//! - [`pace`]: tenants' start rates (token buckets), pure, with table tests.

pub mod groups;
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
    let mut hearing = Hearing::new(Instant::now());
    let mut last_prune = Instant::now();
    let mut last_timed: Option<Instant> = None;
    loop {
        let timed = last_timed.is_none_or(|t| t.elapsed() >= state.config.scheduler_tick());
        if timed {
            last_timed = Some(Instant::now());
        }
        let judge_hosts =
            timed && hearing.may_judge(Instant::now(), state.config.host_lost_after());
        let outcome = pass(&state, timed, judge_hosts).await;
        let unavailable = outcome.as_ref().is_err_and(|e| e.is_unavailable());
        hearing.after_pass(Instant::now(), outcome.is_ok(), unavailable);
        if let Err(err) = outcome {
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

/// Whether this replica may judge hosts by their silence. A host's
/// silence only means something once this control plane has been able to
/// hear from it for the whole timeout: after an API start, or a database
/// outage during which no heartbeat could be recorded, every host would
/// otherwise look lost. Hearing starts again when the database is reached
/// after an outage: at the end of the first pass that succeeds (a pass
/// begun during the outage may have waited all through it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Hearing {
    since: Instant,
    /// The last pass found the database unavailable.
    recovering: bool,
}

impl Hearing {
    fn new(now: Instant) -> Self {
        Self {
            since: now,
            recovering: false,
        }
    }

    fn may_judge(&self, now: Instant, lost_after: std::time::Duration) -> bool {
        !self.recovering && now.duration_since(self.since) >= lost_after
    }

    fn after_pass(&mut self, now: Instant, ok: bool, unavailable: bool) {
        if unavailable {
            self.since = now;
            self.recovering = true;
        } else if ok && self.recovering {
            self.since = now;
            self.recovering = false;
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

/// One pass; `timed`: also what only time makes due (see the module doc).
async fn pass(
    state: &AppState,
    timed: bool,
    judge_hosts: bool,
) -> Result<(), crate::store::StoreError> {
    let store = &state.store;
    let live_within = state.config.host_lost_after();
    let mut timer = StepTimer::new(state);
    if timed {
        for id in store.expire_pending().await? {
            tracing::info!(container = %id, "container failed: no capacity within max_pending_s");
        }
        timer.step("expire");
        for id in store.enforce_deadlines().await? {
            tracing::info!(container = %id, "run exceeded its timeout_s: stopping it");
        }
        timer.step("deadlines");
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn hosts_are_judged_only_after_hearing_from_them_for_the_whole_timeout() {
        let lost_after = Duration::from_secs(10);
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut h = Hearing::new(t0);
        assert!(!h.may_judge(at(9), lost_after), "just started");
        assert!(h.may_judge(at(10), lost_after));
        // An outage: no judging while it lasts ...
        h.after_pass(at(20), false, true);
        assert!(!h.may_judge(at(40), lost_after));
        // ... a pass that waited through it succeeds at 45: hearing starts then.
        h.after_pass(at(45), true, false);
        assert!(!h.may_judge(at(54), lost_after));
        assert!(h.may_judge(at(55), lost_after));
        // A failure that is not an outage (a bad row, say) changes nothing.
        h.after_pass(at(60), false, false);
        assert!(h.may_judge(at(60), lost_after));
    }
}
