//! The control plane's background loop: places pending containers on hosts,
//! starts restarts whose back-off has passed, and fails the containers of
//! hosts that stopped heartbeating.
//!
//! It runs at once when woken (a new container, a new host) and otherwise
//! every second, so a lost wake-up costs a second, never a container.

use crate::AppState;
use chrono::Utc;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const TICK: Duration = Duration::from_secs(1);

pub async fn run(state: Arc<AppState>, shutdown: CancellationToken) {
    let booted = std::time::Instant::now();
    loop {
        // A host's silence only means something once this control plane has
        // been up long enough to hear from it: after an outage longer than
        // the timeout, every host would otherwise look lost at boot.
        let judge_hosts = booted.elapsed() >= state.config.host_lost_after();
        if let Err(err) = pass(&state, judge_hosts).await {
            tracing::warn!(error = %err, "scheduler pass failed; retrying");
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = state.hub.scheduler_woken() => {}
            _ = tokio::time::sleep(TICK) => {}
        }
    }
}

async fn pass(state: &AppState, judge_hosts: bool) -> Result<(), crate::store::StoreError> {
    let lost_after = chrono::Duration::from_std(state.config.host_lost_after())
        .unwrap_or(chrono::Duration::seconds(30));
    let cutoff = Utc::now() - lost_after;
    for host in state.store.place_pending(cutoff).await? {
        state.hub.host_changed(&host);
    }
    for host in state.store.start_due_restarts().await? {
        state.hub.host_changed(&host);
    }
    if !judge_hosts {
        return Ok(());
    }
    for id in state.store.fail_lost_hosts(cutoff).await? {
        tracing::warn!(container = %id, "container failed: its host was lost");
        state.hub.container_changed(id);
    }
    let closed = state.store.close_runs_of_lost_hosts(cutoff).await?;
    if closed > 0 {
        tracing::warn!(
            runs = closed,
            "closed the meter runs of lost hosts at their last checkpoint"
        );
    }
    Ok(())
}
