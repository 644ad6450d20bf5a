//! The agent's handling of the assignment stream and fencing, against the
//! in-memory [`FakeRuntime`] and a sink that records reports: no network,
//! no containerd. Every assertion is on state reached when `apply_update`
//! returns, so nothing depends on timing.

use super::*;
use crate::runtime::fake::{Call, FakeRuntime};
use crate::runtime::TaskStatus;
use async_trait::async_trait;
use std::sync::Mutex as StdMutex;

const A: &str = "00000000-0000-4000-8000-00000000000a";
const B: &str = "00000000-0000-4000-8000-00000000000b";
const C: &str = "00000000-0000-4000-8000-00000000000c";

/// A client TLS config for control planes that are never dialed.
fn never_dialed_tls() -> Arc<rustls::ClientConfig> {
    let ca = skiff_proto::tls::pki::create_authority("t", Duration::from_secs(60)).unwrap();
    let trust = skiff_proto::tls::pki::parse_certs(&ca.cert_pem).unwrap();
    skiff_proto::tls::client_config(&trust, None).unwrap()
}

/// Records what would have reached the control plane.
#[derive(Default)]
struct RecordingSink {
    reports: StdMutex<Vec<pb::StatusReport>>,
    arrived: tokio::sync::Notify,
}

#[async_trait]
impl ReportSink for RecordingSink {
    async fn status(&self, report: pb::StatusReport) -> Result<(), tonic::Status> {
        self.reports.lock().unwrap().push(report);
        self.arrived.notify_waiters();
        Ok(())
    }

    async fn usage(&self, _checkpoint: pb::UsageCheckpoint) -> Result<(), tonic::Status> {
        Ok(())
    }
}

impl RecordingSink {
    fn states_of(&self, id: &str) -> Vec<pb::ObservedState> {
        self.reports
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.container_id == id)
            .map(|r| pb::ObservedState::try_from(r.state).unwrap_or_default())
            .collect()
    }

    /// Waits until a report of `id` passes `check`; returns it.
    async fn wait_report(
        &self,
        id: &str,
        check: impl Fn(&pb::StatusReport) -> bool,
    ) -> pb::StatusReport {
        let reported = async {
            loop {
                let arrived = self.arrived.notified();
                let found = self
                    .reports
                    .lock()
                    .unwrap()
                    .iter()
                    .find(|r| r.container_id == id && check(r))
                    .cloned();
                if let Some(found) = found {
                    return found;
                }
                arrived.await;
            }
        };
        tokio::time::timeout(Duration::from_secs(30), reported)
            .await
            .unwrap_or_else(|_| panic!("{id}: no such report: {:?}", self.states_of(id)))
    }

    /// Waits until `id` has been reported in `state`. The timeout only
    /// keeps a broken agent from hanging the test run.
    async fn wait_for(&self, id: &str, state: pb::ObservedState) {
        let reported = async {
            loop {
                let arrived = self.arrived.notified();
                if self.states_of(id).contains(&state) {
                    return;
                }
                arrived.await;
            }
        };
        tokio::time::timeout(Duration::from_secs(30), reported)
            .await
            .unwrap_or_else(|_| panic!("{id} never reported {state:?}: {:?}", self.states_of(id)));
    }
}

struct Harness {
    agent: Arc<Agent<FakeRuntime>>,
    runtime: Arc<FakeRuntime>,
    sink: Arc<RecordingSink>,
    metrics: Arc<WorkerMetrics>,
    shutdown: CancellationToken,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// An agent over `runtime` that has adopted what the runtime holds (as at
/// a worker start) and routes its task events, but has no session.
async fn harness(runtime: Arc<FakeRuntime>) -> Harness {
    let sink = Arc::new(RecordingSink::default());
    let metrics = Arc::new(WorkerMetrics::default());
    let shutdown = CancellationToken::new();
    let agent = Agent::new(
        runtime.clone(),
        HostInfo {
            host_id: "host-1".to_owned(),
            hostname: "host-1".to_owned(),
            agent_addr: "127.0.0.1:1".to_owned(),
            cpu_millis: 2000,
            memory_mib: 1024,
            labels: BTreeMap::new(),
            network: None,
            metrics_url: String::new(),
        },
        AgentSettings {
            max_concurrent_starts: 2,
            checkpoint_interval: Duration::from_secs(5),
            pull_progress_interval: Duration::from_millis(10),
        },
        // Never dialed: these tests drive apply_update directly.
        Arc::new(
            ControlPlanes::new(&["https://127.0.0.1:1".to_owned()], never_dialed_tls()).unwrap(),
        ),
        sink.clone(),
        metrics.clone(),
        shutdown.clone(),
    );
    agent.adopt().await.unwrap();
    tokio::spawn(agent.clone().route_events());
    Harness {
        agent,
        runtime,
        sink,
        metrics,
        shutdown,
    }
}

fn running(id: &str, generation: u64) -> pb::Assignment {
    pb::Assignment {
        container_id: id.to_owned(),
        desired: pb::DesiredState::Running as i32,
        generation,
        spec: Some(pb::ContainerSpec {
            image: "registry.test/busybox:1".to_owned(),
            ..Default::default()
        }),
        stop_timeout_s: 10,
    }
}

fn snapshot(revision: u64, assignments: Vec<pb::Assignment>) -> pb::AssignmentUpdate {
    pb::AssignmentUpdate {
        revision,
        snapshot: true,
        more: false,
        assignments,
        removed: vec![],
    }
}

fn delta(
    revision: u64,
    assignments: Vec<pb::Assignment>,
    removed: &[&str],
) -> pb::AssignmentUpdate {
    pb::AssignmentUpdate {
        revision,
        snapshot: false,
        more: false,
        assignments,
        removed: removed.iter().map(|id| id.to_string()).collect(),
    }
}

fn removals(runtime: &FakeRuntime) -> Vec<String> {
    runtime
        .calls()
        .into_iter()
        .filter_map(|call| match call {
            Call::Remove(id) => Some(id),
            _ => None,
        })
        .collect()
}

async fn supervised(agent: &Agent<FakeRuntime>, id: &str) -> bool {
    agent.supervisors.lock().await.contains_key(id)
}

#[tokio::test]
async fn a_snapshot_fences_unlisted_containers_and_keeps_listed_ones() {
    let runtime = FakeRuntime::new();
    runtime
        .with_running(A, 1)
        .with_running(B, 1)
        .with_running(C, 2);
    let h = harness(runtime).await;

    h.agent
        .apply_update(snapshot(5, vec![running(A, 1)]))
        .await
        .unwrap();

    let mut removed = removals(&h.runtime);
    removed.sort();
    assert_eq!(removed, [B, C]);
    for id in [B, C] {
        assert!(!h.runtime.exists(id), "{id} still in containerd");
        assert!(
            h.runtime.calls().contains(&Call::Kill(id.to_owned(), 9)),
            "{id} not SIGKILLed"
        );
    }
    assert_eq!(h.runtime.task_status(A), Some(TaskStatus::Running));
    assert!(supervised(&h.agent, A).await);
    assert_eq!(h.agent.applied_revision(), 5);
    assert_eq!(h.metrics.fenced.get(), 2);
    assert_eq!(h.metrics.applied_revision.get(), 5);
    assert_eq!(h.metrics.assignments_received.get(), 1);
}

/// Applies a fencing step and requires it to finish well before the abort
/// that fencing falls back on (`SUPERVISOR_EXIT_WAIT`): a supervisor that
/// ignores its cancellation would otherwise pass these tests, only slowly.
async fn fence_promptly<R: Runtime>(agent: &Arc<Agent<R>>, update: pb::AssignmentUpdate) {
    tokio::time::timeout(SUPERVISOR_EXIT_WAIT / 2, agent.apply_update(update))
        .await
        .expect("fencing stopped the supervisor by cancelling it, not by the abort fallback")
        .unwrap();
}

#[tokio::test]
async fn a_delta_fences_its_removed_containers_without_reporting_them() {
    let runtime = FakeRuntime::new();
    runtime.with_running(A, 1).with_running(B, 1);
    let h = harness(runtime).await;
    h.agent
        .apply_update(snapshot(1, vec![running(A, 1), running(B, 1)]))
        .await
        .unwrap();
    assert!(supervised(&h.agent, B).await);

    fence_promptly(&h.agent, delta(2, vec![], &[B])).await;

    assert_eq!(removals(&h.runtime), [B]);
    assert!(!h.runtime.exists(B));
    assert!(!supervised(&h.agent, B).await);
    assert_eq!(h.runtime.task_status(A), Some(TaskStatus::Running));
    // B's supervisor and outbox were stopped before the kill: whatever it
    // reported before (its re-adopted run), nothing of the kill or removal.
    for state in h.sink.states_of(B) {
        assert_eq!(state, pb::ObservedState::Running, "B reported {state:?}");
    }
    assert_eq!(h.agent.applied_revision(), 2);
    assert_eq!(h.metrics.fenced.get(), 1);
}

#[tokio::test]
async fn a_delta_hands_assignments_to_supervisors_and_fences_only_what_it_removes() {
    let runtime = FakeRuntime::new();
    runtime.with_running(A, 1).with_running(B, 1);
    let h = harness(runtime).await;
    h.agent
        .apply_update(snapshot(1, vec![running(A, 1), running(B, 1)]))
        .await
        .unwrap();

    // C is new; B is listed as removed but also assigned in the same step,
    // so it stays; an id this host never had is nothing to fence.
    h.agent
        .apply_update(delta(2, vec![running(C, 1), running(B, 1)], &[B, "gone"]))
        .await
        .unwrap();

    assert!(removals(&h.runtime).is_empty());
    assert!(supervised(&h.agent, C).await);
    assert!(h.runtime.exists(B));
    assert_eq!(h.agent.applied_revision(), 2);
    assert_eq!(h.metrics.fenced.get(), 0);
}

#[tokio::test]
async fn chunked_steps_apply_only_when_complete() {
    let runtime = FakeRuntime::new();
    runtime.with_running(A, 1).with_running(B, 1);
    let h = harness(runtime).await;

    let mut first = snapshot(3, vec![running(A, 1)]);
    first.more = true;
    h.agent.apply_update(first).await.unwrap();
    // Half a snapshot: B is not in it yet, but nothing may be concluded.
    assert!(removals(&h.runtime).is_empty());
    assert!(!supervised(&h.agent, A).await, "a partial step was applied");
    assert_eq!(h.agent.applied_revision(), 0);

    h.agent.apply_update(snapshot(3, vec![])).await.unwrap();
    assert_eq!(removals(&h.runtime), [B]);
    assert!(supervised(&h.agent, A).await);
    assert!(h.runtime.exists(A));
    assert_eq!(h.agent.applied_revision(), 3);
    assert_eq!(h.metrics.assignments_received.get(), 1);
}

#[tokio::test]
async fn a_partial_step_of_a_broken_stream_is_never_completed() {
    let runtime = FakeRuntime::new();
    runtime.with_running(A, 1).with_running(B, 1);
    let h = harness(runtime).await;

    let mut first = snapshot(3, vec![running(A, 1)]);
    first.more = true;
    h.agent.apply_update(first).await.unwrap();
    // The stream broke; a new session starts its steps afresh.
    h.agent.stream.lock().await.reset();
    h.agent
        .apply_update(snapshot(4, vec![running(B, 1)]))
        .await
        .unwrap();

    // Without the reset, A's chunk would have joined (and a mixed step failed).
    assert_eq!(removals(&h.runtime), [A]);
    assert_eq!(h.agent.applied_revision(), 4);
}

#[tokio::test]
async fn nothing_is_fenced_before_a_snapshot() {
    let runtime = FakeRuntime::new();
    runtime.with_running(A, 1).with_running(B, 1);
    let h = harness(runtime).await;
    // A worker start adopts; it kills nothing.
    assert!(removals(&h.runtime).is_empty());

    h.agent
        .apply_update(delta(4, vec![running(A, 1)], &[B]))
        .await
        .unwrap();

    assert!(removals(&h.runtime).is_empty());
    assert_eq!(h.runtime.task_status(B), Some(TaskStatus::Running));
    assert!(supervised(&h.agent, A).await, "assignments still apply");
    // Unreached, so the next stream asks for a snapshot.
    assert_eq!(h.agent.applied_revision(), 0);

    // The snapshot that follows fences.
    h.agent
        .apply_update(snapshot(4, vec![running(A, 1)]))
        .await
        .unwrap();
    assert_eq!(removals(&h.runtime), [B]);
    assert_eq!(h.agent.applied_revision(), 4);
}

#[tokio::test]
async fn applied_revision_advances_only_after_fencing() {
    let runtime = FakeRuntime::new();
    runtime.with_running(A, 1).with_running(B, 1);
    let h = harness(runtime).await;
    h.agent
        .apply_update(snapshot(1, vec![running(A, 1), running(B, 1)]))
        .await
        .unwrap();

    let gate = h.runtime.hold_removals();
    let applying = tokio::spawn({
        let agent = h.agent.clone();
        async move { agent.apply_update(delta(2, vec![], &[B])).await }
    });
    h.runtime.removal_started.notified().await;
    // The fence is under way (B's removal is held): revision 2 is not reached.
    assert_eq!(h.agent.applied_revision(), 1);
    assert_eq!(h.metrics.applied_revision.get(), 1);
    assert!(h.runtime.exists(B));

    gate.add_permits(1);
    applying.await.unwrap().unwrap();
    assert!(!h.runtime.exists(B));
    assert_eq!(h.agent.applied_revision(), 2);
    assert_eq!(h.metrics.applied_revision.get(), 2);
}

#[tokio::test]
async fn a_failed_fence_leaves_the_revision_unreached() {
    let runtime = FakeRuntime::new();
    runtime.with_running(A, 1).with_running(B, 1);
    let h = harness(runtime).await;
    h.runtime.fail_removals(true);

    let failed = h.agent.apply_update(snapshot(7, vec![running(A, 1)])).await;

    assert!(
        matches!(&failed, Err(ApplyError::Fence { id, .. }) if id == B),
        "{failed:?}"
    );
    assert_eq!(h.agent.applied_revision(), 0);
    assert_eq!(h.metrics.fenced.get(), 0);

    // The control plane sends the step again on the next stream.
    h.runtime.fail_removals(false);
    h.agent
        .apply_update(snapshot(7, vec![running(A, 1)]))
        .await
        .unwrap();
    assert!(!h.runtime.exists(B));
    assert_eq!(h.agent.applied_revision(), 7);
}

#[tokio::test]
async fn a_delta_older_than_the_applied_revision_is_ignored() {
    let runtime = FakeRuntime::new();
    runtime.with_running(A, 1).with_running(B, 1);
    let h = harness(runtime).await;
    h.agent
        .apply_update(snapshot(5, vec![running(A, 1), running(B, 1)]))
        .await
        .unwrap();

    h.agent.apply_update(delta(4, vec![], &[B])).await.unwrap();
    assert!(removals(&h.runtime).is_empty());
    assert_eq!(h.agent.applied_revision(), 5);

    // A resumed stream opens with an (empty) delta of the revision applied.
    h.agent.apply_update(delta(5, vec![], &[])).await.unwrap();
    assert_eq!(h.agent.applied_revision(), 5);
}

#[tokio::test]
async fn a_mixed_step_ends_the_session_without_applying() {
    let runtime = FakeRuntime::new();
    runtime.with_running(A, 1).with_running(B, 1);
    let h = harness(runtime).await;
    let mut first = snapshot(3, vec![running(A, 1)]);
    first.more = true;
    h.agent.apply_update(first).await.unwrap();

    let mixed = h.agent.apply_update(snapshot(4, vec![])).await;

    assert!(matches!(
        mixed,
        Err(ApplyError::Stream(StepError::MixedStep { .. }))
    ));
    assert!(removals(&h.runtime).is_empty());
    assert_eq!(h.agent.applied_revision(), 0);
}

#[tokio::test]
async fn the_inventory_counts_live_tasks_and_lists_images() {
    let runtime = FakeRuntime::new();
    runtime
        .with_running(A, 1)
        .with_running(B, 1)
        .with_image("registry.test/busybox:1", "sha256:abc");
    let h = harness(runtime).await;
    h.runtime.kill(B, 9).await.unwrap();

    let (images, running) = h.agent.inventory().await;

    assert_eq!(running, Some(1));
    assert_eq!(
        images,
        Some(vec![pb::HeldImage {
            reference: "registry.test/busybox:1".to_owned(),
            digest: "sha256:abc".to_owned(),
        }])
    );
}

fn stopped(id: &str, generation: u64) -> pb::Assignment {
    pb::Assignment {
        desired: pb::DesiredState::Stopped as i32,
        ..running(id, generation)
    }
}

#[tokio::test]
async fn a_container_fenced_while_pulling_is_never_created() {
    let runtime = FakeRuntime::new();
    let pulls = runtime.hold_pulls();
    let h = harness(runtime).await;
    h.agent
        .apply_update(snapshot(1, vec![running(C, 1)]))
        .await
        .unwrap();
    h.runtime.pull_started.notified().await;

    fence_promptly(&h.agent, delta(2, vec![], &[C])).await;
    // The supervisor has ended (fencing waited for it): releasing the pull
    // now cannot lead to a create.
    pulls.add_permits(1);

    assert!(!supervised(&h.agent, C).await);
    assert!(!h
        .runtime
        .calls()
        .iter()
        .any(|call| matches!(call, Call::Create(_) | Call::Start(..))));
    for state in h.sink.states_of(C) {
        assert_eq!(state, pb::ObservedState::Pulling, "C reported {state:?}");
    }
    assert_eq!(h.agent.applied_revision(), 2);
}

#[tokio::test]
async fn a_start_superseded_by_a_stop_during_the_pull_never_runs() {
    let runtime = FakeRuntime::new();
    let pulls = runtime.hold_pulls();
    let h = harness(runtime).await;
    h.agent
        .apply_update(snapshot(1, vec![running(C, 1)]))
        .await
        .unwrap();
    h.runtime.pull_started.notified().await;

    h.agent
        .apply_update(delta(2, vec![stopped(C, 1)], &[]))
        .await
        .unwrap();
    pulls.add_permits(1);

    // The run never started: it is reported exited so the control plane settles it.
    h.sink.wait_for(C, pb::ObservedState::Exited).await;
    assert!(!h
        .runtime
        .calls()
        .iter()
        .any(|call| matches!(call, Call::Create(_) | Call::Start(..))));
    assert!(!h.sink.states_of(C).contains(&pb::ObservedState::Running));
}

#[tokio::test]
async fn an_assigned_container_is_started_and_reported_running() {
    let h = harness(FakeRuntime::new()).await;

    h.agent
        .apply_update(snapshot(1, vec![running(C, 1)]))
        .await
        .unwrap();

    h.sink.wait_for(C, pb::ObservedState::Running).await;
    assert_eq!(h.runtime.task_status(C), Some(TaskStatus::Running));
    assert!(h.runtime.calls().contains(&Call::Start(C.to_owned(), 1)));
    assert_eq!(
        h.sink.states_of(C),
        [
            pb::ObservedState::Pulling,
            pb::ObservedState::Starting,
            pb::ObservedState::Running
        ]
    );
}

#[tokio::test]
async fn a_sandbox_member_is_created_in_its_sandbox() {
    let h = harness(FakeRuntime::new()).await;
    let sandbox = "5a4d0000-0000-4000-8000-000000000001";
    let mut a = running(C, 1);
    let spec = a.spec.as_mut().unwrap();
    spec.set_network(pb::NetworkMode::Private);
    spec.sandbox = sandbox.into();

    h.agent
        .apply_update(snapshot(1, vec![a, running(B, 1)]))
        .await
        .unwrap();

    h.sink.wait_for(C, pb::ObservedState::Running).await;
    h.sink.wait_for(B, pb::ObservedState::Running).await;
    assert_eq!(h.runtime.sandbox_of(C).as_deref(), Some(sandbox));
    assert_eq!(h.runtime.sandbox_of(B), None, "an ordinary container");
}

#[tokio::test]
async fn a_member_of_a_malformed_sandbox_fails_to_start_before_its_pull() {
    let h = harness(FakeRuntime::new()).await;
    let mut a = running(C, 1);
    let spec = a.spec.as_mut().unwrap();
    spec.set_network(pb::NetworkMode::Private);
    spec.sandbox = "../../run/netns".into();

    h.agent.apply_update(snapshot(1, vec![a])).await.unwrap();

    let failed = h
        .sink
        .wait_report(C, |r| r.state == pb::ObservedState::Failed as i32)
        .await;
    assert_eq!(failed.reason, "StartFailed");
    assert!(
        failed.message.contains("is not a sandbox id"),
        "{}",
        failed.message
    );
    assert!(h.runtime.calls().is_empty(), "{:?}", h.runtime.calls());
}

/// A run of `A` (re-adopted, running) with these probes.
fn probed(liveness: Option<pb::Probe>, readiness: Option<pb::Probe>) -> pb::Assignment {
    let mut a = running(A, 1);
    let spec = a.spec.as_mut().unwrap();
    spec.liveness_probe = liveness;
    spec.readiness_probe = readiness;
    a
}

fn exec_probe() -> pb::Probe {
    pb::Probe {
        action: Some(pb::probe::Action::Exec(pb::ExecAction {
            command: vec!["check".into()],
        })),
        period_s: 1,
        timeout_s: 1,
        failure_threshold: 1,
        ..Default::default()
    }
}

fn has_event(r: &pb::StatusReport, kind: &str) -> bool {
    r.events.iter().any(|e| e.kind == kind)
}

#[tokio::test]
async fn a_failing_liveness_probe_kills_the_run_and_its_exit_says_why() {
    let runtime = FakeRuntime::new();
    runtime.with_running(A, 1).exec_exits_with(1);
    let h = harness(runtime).await;
    h.agent
        .apply_update(snapshot(1, vec![probed(Some(exec_probe()), None)]))
        .await
        .unwrap();
    let failed = h
        .sink
        .wait_report(A, |r| has_event(r, "LivenessProbeFailed"))
        .await;
    assert!(failed.events[0].message.contains("exited with code 1"));
    let exited = h
        .sink
        .wait_report(A, |r| r.state == pb::ObservedState::Exited as i32)
        .await;
    assert_eq!(exited.reason, "LivenessProbeFailed");
    assert_eq!(exited.exit_code, Some(137));
    assert!(h.runtime.calls().contains(&Call::Kill(A.to_owned(), 9)));
}

#[tokio::test]
async fn a_passing_readiness_probe_makes_the_run_ready_and_liveness_leaves_it_be() {
    let runtime = FakeRuntime::new();
    runtime.with_running(A, 1).exec_exits_with(0);
    let h = harness(runtime).await;
    h.agent
        .apply_update(snapshot(
            1,
            vec![probed(Some(exec_probe()), Some(exec_probe()))],
        ))
        .await
        .unwrap();
    let ready = h.sink.wait_report(A, |r| r.ready == Some(true)).await;
    assert!(has_event(&ready, "Ready"));
    // Re-adopted with a readiness probe: reported not ready until it passed.
    let first = h.sink.wait_report(A, |_| true).await;
    assert_eq!(first.ready, Some(false));
    assert!(!h
        .runtime
        .calls()
        .iter()
        .any(|c| matches!(c, Call::Kill(..))));
    assert_eq!(h.runtime.task_status(A), Some(TaskStatus::Running));
}

#[tokio::test]
async fn a_pull_under_way_reports_its_progress_as_it_moves() {
    let runtime = FakeRuntime::new();
    let pulls = runtime.hold_pulls();
    runtime.pull_progress_is(Some((1, 10)));
    let h = harness(runtime).await;
    h.agent
        .apply_update(snapshot(1, vec![running(C, 1)]))
        .await
        .unwrap();
    let first = h.sink.wait_report(C, |r| r.pull.is_some()).await;
    assert_eq!(first.state, pb::ObservedState::Pulling as i32);
    assert_eq!(
        first.pull.map(|p| (p.bytes_done, p.bytes_total)),
        Some((1, 10))
    );
    h.runtime.pull_progress_is(Some((10, 10)));
    h.sink
        .wait_report(C, |r| r.pull.is_some_and(|p| p.bytes_done == 10))
        .await;
    pulls.add_permits(1);
    h.sink.wait_for(C, pb::ObservedState::Running).await;
    // Reported only when it moved: once at 1, once at 10.
    let reported = h
        .sink
        .reports
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.container_id == C && r.pull.is_some())
        .count();
    assert_eq!(reported, 2);
}

#[tokio::test]
async fn a_start_of_a_known_image_reports_no_pulling_of_its_own() {
    for known in [true, false] {
        let runtime = FakeRuntime::new();
        runtime.image_known_is(known);
        let h = harness(runtime).await;
        h.agent
            .apply_update(snapshot(1, vec![running(C, 1)]))
            .await
            .unwrap();
        h.sink.wait_for(C, pb::ObservedState::Running).await;
        let reports: Vec<_> = h
            .sink
            .reports
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.container_id == C)
            .cloned()
            .collect();
        let states: Vec<_> = reports.iter().map(|r| r.state).collect();
        let pulling = pb::ObservedState::Pulling as i32;
        assert_eq!(
            states.contains(&pulling),
            !known,
            "known {known}: {states:?}"
        );
        // Either way the Pulling event is reported once, before Pulled.
        let kinds: Vec<_> = reports
            .iter()
            .flat_map(|r| r.events.iter().map(|e| e.kind.as_str()))
            .collect();
        let at = |k: &str| kinds.iter().position(|x| *x == k);
        assert!(at("Pulling") < at("Pulled"), "known {known}: {kinds:?}");
        assert_eq!(kinds.iter().filter(|k| **k == "Pulling").count(), 1);
    }
}
