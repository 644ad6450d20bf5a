//! The container lifecycle as pure decisions: given what a container is
//! (state, desired state, policy, counters) and what just happened (a worker
//! observation, a user's request, its host's loss), what it becomes. No I/O:
//! the store loads the facts, calls these functions, and writes the
//! [`Transition`] in the same transaction. Table tests sit at the bottom.

use chrono::{DateTime, Duration, Utc};
use skiff_core::{ContainerState, DesiredState, Reason, RestartPolicy};

/// A run that lasted at least this long resets the restart back-off.
pub const BACKOFF_RESET_AFTER: Duration = Duration::minutes(10);
/// The longest back-off between two runs.
pub const BACKOFF_MAX_SECS: i64 = 300;

/// The facts about a container that its lifecycle depends on.
#[derive(Debug, Clone, PartialEq)]
pub struct Facts {
    pub state: ContainerState,
    pub desired: DesiredState,
    pub restart_policy: RestartPolicy,
    pub max_restarts: Option<i32>,
    pub restart_count: i32,
    pub backoff_step: i32,
    /// Waiting out restart back-off (`restart_at` is set).
    pub in_backoff: bool,
    /// Placed on a host (`host_id` is set).
    pub placed: bool,
    pub started_at: Option<DateTime<Utc>>,
    pub memory_mib: i32,
    /// The current reason; a stop the platform made for a limit
    /// ([`Reason::DeadlineExceeded`], [`Reason::BudgetExceeded`]) ends in
    /// `failed` with it rather than `stopped`.
    pub reason: Option<Reason>,
}

impl Facts {
    fn may_restart(&self) -> bool {
        self.max_restarts.is_none_or(|max| self.restart_count < max)
    }
}

/// What a worker saw of the current generation.
#[derive(Debug, Clone, PartialEq)]
pub enum Observation {
    Pulling,
    Starting,
    Stopping,
    Running {
        started_at: Option<DateTime<Utc>>,
    },
    /// The run ended; `exit_code` is None when nothing ran (a stop came first).
    Exited {
        exit_code: Option<i32>,
        /// What ended it, when not the process itself: the kernel's OOM
        /// killer (`OOMKilled`) or its host for a failed liveness probe
        /// (`LivenessProbeFailed`).
        killed_by: Option<Reason>,
        started_at: Option<DateTime<Utc>>,
        finished_at: DateTime<Utc>,
    },
    Failed {
        reason: Reason,
        message: String,
    },
}

/// Column updates: `None` leaves a column as it is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Transition {
    pub state: Option<ContainerState>,
    pub desired: Option<DesiredState>,
    pub reason: Option<Option<Reason>>,
    pub message: Option<Option<String>>,
    pub exit_code: Option<Option<i32>>,
    /// Written only where no start is recorded yet: the first report wins.
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<Option<DateTime<Utc>>>,
    /// Back-off: the next run is due after this many seconds, at this step.
    pub restart_in: Option<(i64, i32)>,
    /// Clears a pending back-off.
    pub cancel_restart: bool,
}

impl Transition {
    pub fn is_none(&self) -> bool {
        *self == Self::default()
    }
}

/// What a worker's observation of the current generation means.
pub fn observe(c: &Facts, observation: &Observation, now: DateTime<Utc>) -> Transition {
    use ContainerState as S;
    let terminal = c.state.is_terminal();
    match observation {
        // A late progress report must not revive a finished container.
        _ if terminal && !matches!(observation, Observation::Exited { .. }) => {
            Transition::default()
        }
        Observation::Pulling | Observation::Starting => {
            // Progress only moves forward; a stop in flight stays "stopping".
            if !matches!(c.state, S::Pending | S::Scheduled | S::Pulling) {
                return Transition::default();
            }
            let state = if *observation == Observation::Pulling {
                S::Pulling
            } else {
                S::Starting
            };
            Transition {
                state: Some(state),
                ..Default::default()
            }
        }
        Observation::Stopping => Transition {
            state: Some(S::Stopping),
            ..Default::default()
        },
        Observation::Running { started_at } => {
            // A stop requested while the task was starting keeps it "stopping".
            let running = c.desired == DesiredState::Running;
            Transition {
                state: Some(if running { S::Running } else { S::Stopping }),
                reason: running.then_some(None),
                message: running.then_some(None),
                exit_code: Some(None),
                started_at: Some(started_at.unwrap_or(now)),
                finished_at: Some(None),
                ..Default::default()
            }
        }
        Observation::Exited {
            exit_code,
            killed_by,
            started_at,
            finished_at,
        } => exited(c, *exit_code, *killed_by, *started_at, *finished_at),
        // A failed run is final for this generation: a back-off pending
        // from an earlier exit is cancelled (its capacity is released).
        Observation::Failed { reason, message } => Transition {
            state: Some(S::Failed),
            reason: Some(Some(*reason)),
            message: Some(Some(message.clone())),
            finished_at: Some(Some(now)),
            cancel_restart: true,
            ..Default::default()
        },
    }
}

/// A stop the platform made because a limit was reached, if the current
/// stop is one.
fn limit_stop(c: &Facts) -> Option<Reason> {
    c.reason
        .filter(|r| matches!(r, Reason::DeadlineExceeded | Reason::BudgetExceeded))
}

/// How a stopped run ends: `failed` with the limit that stopped it, or
/// `stopped` at a user's request.
fn stop_outcome(c: &Facts) -> (ContainerState, Reason) {
    match limit_stop(c) {
        Some(limit) => (ContainerState::Failed, limit),
        None => (ContainerState::Stopped, Reason::StopRequested),
    }
}

fn exited(
    c: &Facts,
    exit_code: Option<i32>,
    killed_by: Option<Reason>,
    started_at: Option<DateTime<Utc>>,
    finished_at: DateTime<Utc>,
) -> Transition {
    use ContainerState as S;
    let Some(code) = exit_code else {
        // Nothing ran for this generation (a stop arrived first).
        if c.state.is_terminal() {
            return Transition::default();
        }
        let (state, reason) = stop_outcome(c);
        return Transition {
            state: Some(state),
            reason: Some(Some(reason)),
            finished_at: Some(Some(finished_at)),
            ..Default::default()
        };
    };
    if c.state.is_terminal() || c.in_backoff {
        // Already settled, or already waiting out back-off for this exit (a
        // repeated report): keep the first outcome and its timer.
        return Transition::default();
    }
    let started_at = started_at.or(c.started_at);
    let base = Transition {
        exit_code: Some(Some(code)),
        started_at,
        finished_at: Some(Some(finished_at)),
        ..Default::default()
    };
    if c.desired != DesiredState::Running {
        let (state, reason) = stop_outcome(c);
        return Transition {
            state: Some(state),
            reason: Some(Some(reason)),
            // A limit's message (set when it stopped the run) stays.
            message: limit_stop(c).is_none().then_some(None),
            ..base
        };
    }
    let exit_reason = match killed_by {
        Some(reason) => reason,
        None if code == 0 => Reason::Completed,
        None => Reason::Error,
    };
    if c.restart_policy.restarts_after(code) && c.may_restart() {
        let ran_long = started_at.is_some_and(|s| finished_at - s >= BACKOFF_RESET_AFTER);
        let step = if ran_long { 0 } else { c.backoff_step };
        let delay = (1i64 << step.clamp(0, 9)).min(BACKOFF_MAX_SECS);
        return Transition {
            state: Some(S::Starting),
            reason: Some(Some(Reason::BackOff)),
            message: Some(Some(format!(
                "exited with code {code} ({exit_reason}); restarting in {delay} s"
            ))),
            restart_in: Some((delay, step + 1)),
            ..base
        };
    }
    let (state, message) = if killed_by == Some(Reason::OOMKilled) {
        (
            S::Failed,
            format!(
                "the process exceeded its memory limit of {} MiB and was killed",
                c.memory_mib
            ),
        )
    } else if killed_by == Some(Reason::LivenessProbeFailed) {
        (
            S::Failed,
            format!("its liveness probe failed and its host killed it (exit code {code})"),
        )
    } else if code == 0 {
        (S::Succeeded, format!("exited with code {code}"))
    } else {
        (S::Failed, format!("exited with code {code}"))
    };
    Transition {
        state: Some(state),
        reason: Some(Some(exit_reason)),
        message: Some(Some(message)),
        ..base
    }
}

/// A user's request to change a container's lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Stop,
    Start,
    Restart,
    Delete,
}

impl Action {
    /// As in the route (`/v1/containers/{id}/stop`).
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Stop => "stop",
            Action::Start => "start",
            Action::Restart => "restart",
            Action::Delete => "delete",
        }
    }
}

/// What a user's request does to a container.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// Nothing to do (e.g. start of a running container).
    Nothing,
    /// Write this transition.
    Update(Transition),
    /// A new run (next generation): see [`new_run_target`] for where.
    NewRun,
    /// Mark deleted; the host removes every trace.
    Delete,
}

pub fn request(c: &Facts, action: Action, now: DateTime<Utc>) -> Request {
    match action {
        Action::Stop if c.state.is_terminal() => Request::Nothing,
        // Nothing runs: not placed yet, or waiting out back-off.
        Action::Stop if !c.placed || c.in_backoff => Request::Update(Transition {
            state: Some(ContainerState::Stopped),
            desired: Some(DesiredState::Stopped),
            reason: Some(Some(Reason::StopRequested)),
            message: Some(Some("stopped before it ran".into())),
            finished_at: Some(Some(now)),
            cancel_restart: true,
            ..Default::default()
        }),
        Action::Stop => Request::Update(Transition {
            state: Some(ContainerState::Stopping),
            desired: Some(DesiredState::Stopped),
            reason: Some(Some(Reason::StopRequested)),
            message: Some(None),
            ..Default::default()
        }),
        // A stop in flight followed by start is a restart: the user's latest
        // word wins instead of being dropped.
        Action::Start if c.state.is_terminal() || c.desired == DesiredState::Stopped => {
            Request::NewRun
        }
        Action::Start => Request::Nothing,
        Action::Restart => Request::NewRun,
        Action::Delete => Request::Delete,
    }
}

/// Where a new run of a container goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NewRunTarget {
    /// Its task still runs on a live host: that host stops it and starts the
    /// next generation (its resources are already counted there).
    SameHostAfterStop,
    /// Its host is alive and still counts its resources (not started yet,
    /// or in back-off), or has room for it again: run there.
    SameHost,
    /// Back to the queue: placement finds a host (preferring the old one).
    Queue,
}

/// `host_alive`: the container's host is ready or draining and heartbeating.
/// `fits_on_host`: that host has room for it now (only asked for finished
/// containers, whose resources are no longer counted there).
pub fn new_run_target(c: &Facts, host_alive: bool, fits_on_host: bool) -> NewRunTarget {
    use ContainerState as S;
    if !c.placed || !host_alive {
        return NewRunTarget::Queue;
    }
    match c.state {
        S::Running | S::Stopping => NewRunTarget::SameHostAfterStop,
        S::Scheduled | S::Pulling | S::Starting | S::Pending => NewRunTarget::SameHost,
        S::Succeeded | S::Failed | S::Stopped if fits_on_host => NewRunTarget::SameHost,
        S::Succeeded | S::Failed | S::Stopped => NewRunTarget::Queue,
    }
}

/// What losing its host means for a container that had not finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostLoss {
    /// Fail it with HostLost: nothing will run it again.
    Fail,
    /// A new run on another host, as its restart policy asks.
    Replace,
}

pub fn on_host_lost(c: &Facts) -> HostLoss {
    if c.desired == DesiredState::Running
        && c.restart_policy.restarts_after_host_loss()
        && c.may_restart()
    {
        HostLoss::Replace
    } else {
        HostLoss::Fail
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ContainerState as S;

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }

    fn facts(state: ContainerState) -> Facts {
        Facts {
            state,
            desired: DesiredState::Running,
            restart_policy: RestartPolicy::Never,
            max_restarts: None,
            restart_count: 0,
            backoff_step: 0,
            in_backoff: false,
            placed: true,
            started_at: None,
            memory_mib: 128,
            reason: None,
        }
    }

    fn exit(code: Option<i32>, oom: bool) -> Observation {
        killed(code, oom.then_some(Reason::OOMKilled))
    }

    fn killed(code: Option<i32>, killed_by: Option<Reason>) -> Observation {
        Observation::Exited {
            exit_code: code,
            killed_by,
            started_at: Some(t(0)),
            finished_at: t(5),
        }
    }

    #[test]
    fn observations_table() {
        let always = Facts {
            restart_policy: RestartPolicy::Always,
            ..facts(S::Running)
        };
        let on_failure = Facts {
            restart_policy: RestartPolicy::OnFailure,
            ..facts(S::Running)
        };
        let stopping = Facts {
            desired: DesiredState::Stopped,
            ..facts(S::Stopping)
        };
        let capped = Facts {
            max_restarts: Some(2),
            restart_count: 2,
            ..always.clone()
        };
        let in_backoff = Facts {
            in_backoff: true,
            ..always.clone()
        };
        let stepped = Facts {
            backoff_step: 3,
            ..always.clone()
        };
        // (case, facts, observation, expected state (None: unchanged), expected reason)
        type Row<'a> = (
            &'a str,
            Facts,
            Observation,
            Option<S>,
            Option<Option<Reason>>,
        );
        let rows: Vec<Row> = vec![
            (
                "pull starts",
                facts(S::Scheduled),
                Observation::Pulling,
                Some(S::Pulling),
                None,
            ),
            (
                "starting after pull",
                facts(S::Pulling),
                Observation::Starting,
                Some(S::Starting),
                None,
            ),
            (
                "progress never goes back",
                facts(S::Running),
                Observation::Pulling,
                None,
                None,
            ),
            (
                "late progress never revives",
                facts(S::Succeeded),
                Observation::Starting,
                None,
                None,
            ),
            (
                "running",
                facts(S::Starting),
                Observation::Running {
                    started_at: Some(t(0)),
                },
                Some(S::Running),
                Some(None),
            ),
            (
                "running while a stop is asked",
                stopping.clone(),
                Observation::Running { started_at: None },
                Some(S::Stopping),
                None,
            ),
            (
                "a finished container is not revived by running",
                facts(S::Failed),
                Observation::Running { started_at: None },
                None,
                None,
            ),
            (
                "exit 0 never",
                facts(S::Running),
                exit(Some(0), false),
                Some(S::Succeeded),
                Some(Some(Reason::Completed)),
            ),
            (
                "exit 3 never",
                facts(S::Running),
                exit(Some(3), false),
                Some(S::Failed),
                Some(Some(Reason::Error)),
            ),
            (
                "oom",
                facts(S::Running),
                exit(Some(137), true),
                Some(S::Failed),
                Some(Some(Reason::OOMKilled)),
            ),
            (
                "liveness never",
                facts(S::Running),
                killed(Some(137), Some(Reason::LivenessProbeFailed)),
                Some(S::Failed),
                Some(Some(Reason::LivenessProbeFailed)),
            ),
            (
                "liveness on_failure",
                on_failure.clone(),
                killed(Some(137), Some(Reason::LivenessProbeFailed)),
                Some(S::Starting),
                Some(Some(Reason::BackOff)),
            ),
            (
                "exit 0 on_failure",
                on_failure.clone(),
                exit(Some(0), false),
                Some(S::Succeeded),
                Some(Some(Reason::Completed)),
            ),
            (
                "exit 1 on_failure",
                on_failure,
                exit(Some(1), false),
                Some(S::Starting),
                Some(Some(Reason::BackOff)),
            ),
            (
                "exit 0 always",
                always.clone(),
                exit(Some(0), false),
                Some(S::Starting),
                Some(Some(Reason::BackOff)),
            ),
            (
                "restarts used up",
                capped,
                exit(Some(1), false),
                Some(S::Failed),
                Some(Some(Reason::Error)),
            ),
            (
                "repeated exit in back-off",
                in_backoff,
                exit(Some(1), false),
                None,
                None,
            ),
            (
                "repeated exit after settling",
                facts(S::Failed),
                exit(Some(1), false),
                None,
                None,
            ),
            (
                "exit after a stop",
                stopping.clone(),
                exit(Some(143), false),
                Some(S::Stopped),
                Some(Some(Reason::StopRequested)),
            ),
            (
                "nothing ran before the stop",
                stopping.clone(),
                exit(None, false),
                Some(S::Stopped),
                Some(Some(Reason::StopRequested)),
            ),
            (
                "exit after a stop for the deadline",
                Facts {
                    reason: Some(Reason::DeadlineExceeded),
                    ..stopping.clone()
                },
                exit(Some(137), false),
                Some(S::Failed),
                Some(Some(Reason::DeadlineExceeded)),
            ),
            (
                "exit after a stop for the budget, even with a restart policy",
                Facts {
                    reason: Some(Reason::BudgetExceeded),
                    restart_policy: RestartPolicy::Always,
                    ..stopping.clone()
                },
                exit(Some(143), false),
                Some(S::Failed),
                Some(Some(Reason::BudgetExceeded)),
            ),
            (
                "nothing ran before a stop for the deadline",
                Facts {
                    reason: Some(Reason::DeadlineExceeded),
                    ..stopping
                },
                exit(None, false),
                Some(S::Failed),
                Some(Some(Reason::DeadlineExceeded)),
            ),
            (
                "failed pull",
                facts(S::Pulling),
                Observation::Failed {
                    reason: Reason::ImagePullFailed,
                    message: "no".into(),
                },
                Some(S::Failed),
                Some(Some(Reason::ImagePullFailed)),
            ),
            (
                "back-off grows",
                stepped,
                exit(Some(1), false),
                Some(S::Starting),
                Some(Some(Reason::BackOff)),
            ),
        ];
        for (case, c, observation, state, reason) in rows {
            let got = observe(&c, &observation, t(10));
            assert_eq!(got.state, state, "{case}: state in {got:?}");
            if let Some(reason) = reason {
                assert_eq!(got.reason, Some(reason), "{case}: reason in {got:?}");
            }
        }
    }

    #[test]
    fn back_off_doubles_caps_and_resets_after_a_long_run() {
        let mut c = Facts {
            restart_policy: RestartPolicy::Always,
            ..facts(S::Running)
        };
        let delays: Vec<i64> = [0, 1, 2, 8, 9, 20]
            .iter()
            .map(|&step| {
                c.backoff_step = step;
                observe(&c, &exit(Some(1), false), t(10))
                    .restart_in
                    .unwrap()
                    .0
            })
            .collect();
        assert_eq!(delays, vec![1, 2, 4, 256, 300, 300]);
        c.backoff_step = 6;
        let long = Observation::Exited {
            exit_code: Some(1),
            killed_by: None,
            started_at: Some(t(0)),
            finished_at: t(0) + BACKOFF_RESET_AFTER,
        };
        assert_eq!(observe(&c, &long, t(10)).restart_in, Some((1, 1)));
    }

    #[test]
    fn requests_table() {
        let unplaced = Facts {
            placed: false,
            ..facts(S::Pending)
        };
        let stopping = Facts {
            desired: DesiredState::Stopped,
            ..facts(S::Stopping)
        };
        let rows = [
            (
                "stop a finished one",
                facts(S::Succeeded),
                Action::Stop,
                "nothing",
            ),
            ("stop before placement", unplaced, Action::Stop, "stopped"),
            (
                "stop a running one",
                facts(S::Running),
                Action::Stop,
                "stopping",
            ),
            (
                "start a running one",
                facts(S::Running),
                Action::Start,
                "nothing",
            ),
            (
                "start a finished one",
                facts(S::Failed),
                Action::Start,
                "new run",
            ),
            ("start during a stop", stopping, Action::Start, "new run"),
            ("restart", facts(S::Running), Action::Restart, "new run"),
            ("delete", facts(S::Running), Action::Delete, "delete"),
        ];
        for (case, c, action, want) in rows {
            let got = match request(&c, action, t(0)) {
                Request::Nothing => "nothing",
                Request::NewRun => "new run",
                Request::Delete => "delete",
                Request::Update(t) if t.state == Some(S::Stopped) => "stopped",
                Request::Update(t) if t.state == Some(S::Stopping) => "stopping",
                Request::Update(other) => panic!("{case}: unexpected {other:?}"),
            };
            assert_eq!(got, want, "{case}");
        }
    }

    #[test]
    fn new_run_targets() {
        use NewRunTarget::*;
        let rows = [
            (S::Running, true, false, SameHostAfterStop),
            (S::Stopping, true, false, SameHostAfterStop),
            (S::Starting, true, false, SameHost),
            (S::Succeeded, true, true, SameHost),
            (S::Failed, true, false, Queue),
            (S::Running, false, true, Queue),
        ];
        for (state, alive, fits, want) in rows {
            assert_eq!(
                new_run_target(&facts(state), alive, fits),
                want,
                "{state} alive={alive} fits={fits}"
            );
        }
        let unplaced = Facts {
            placed: false,
            ..facts(S::Stopped)
        };
        assert_eq!(new_run_target(&unplaced, true, true), Queue);
    }

    #[test]
    fn host_loss_follows_the_restart_policy() {
        let rows = [
            (
                RestartPolicy::Never,
                DesiredState::Running,
                None,
                HostLoss::Fail,
            ),
            (
                RestartPolicy::OnFailure,
                DesiredState::Running,
                None,
                HostLoss::Replace,
            ),
            (
                RestartPolicy::Always,
                DesiredState::Running,
                None,
                HostLoss::Replace,
            ),
            (
                RestartPolicy::Always,
                DesiredState::Stopped,
                None,
                HostLoss::Fail,
            ),
            (
                RestartPolicy::Always,
                DesiredState::Running,
                Some(0),
                HostLoss::Fail,
            ),
        ];
        for (policy, desired, max, want) in rows {
            let c = Facts {
                restart_policy: policy,
                desired,
                max_restarts: max,
                ..facts(S::Running)
            };
            assert_eq!(on_host_lost(&c), want, "{policy:?} {desired:?} {max:?}");
        }
    }
}
