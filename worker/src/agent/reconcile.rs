//! The reconcile decision: given a container's assignment, what its
//! supervisor knows and the state of its task in containerd, the one next
//! [`Step`] towards the assignment. A pure function, so every case has a row
//! in the table test below; the supervisor does the I/O.
//!
//! Steps are level-triggered: deciding again after any step (or after a
//! worker restart) gives the step still missing, never a repeated effect the
//! control plane could mistake for a new fact.

use crate::runtime::TaskStatus;
use skiff_proto as pb;

/// What the supervisor knows of its container beyond containerd's task.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Known {
    /// Generation of the run last started (containerd label).
    pub started_generation: u64,
    /// Generation of the last recorded exit, if any.
    pub last_exit_generation: Option<u64>,
    /// A generation whose start failed for good (pull or create error).
    pub failed_generation: Option<u64>,
    /// The last (generation, state) reported, so a steady state is not re-sent.
    pub last_sent: Option<(u64, pb::ObservedState)>,
    /// Whether this supervisor already had its chance to re-send the last
    /// run's exit (see [`Step::ResendExit`]).
    pub resent_last_exit: bool,
}

/// The next thing a supervisor does for its container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The task has stopped: record its exit in containerd's labels, delete
    /// the task and report the exit, whatever is desired. Decide again.
    Finish,
    /// First look of a new supervisor (the worker restarted) at a container
    /// with no live task: re-send the last run's exit, whose report may have
    /// been queued when the worker died. Decide again.
    ResendExit,
    /// A live task is in the way (stop, delete, or a newer generation was
    /// asked for): SIGTERM, SIGKILL after the stop timeout. Decide again.
    Stop,
    /// Remove every trace from the host and report Removed; the supervisor ends.
    Remove,
    /// The assigned generation was stopped before it ever ran: report it
    /// Exited so the control plane settles it.
    ReportNeverRan,
    /// Pull, create and start the assigned generation (replacing a task
    /// that was created but never started).
    Start,
    /// The assigned generation is running: report Running first if that was
    /// not reported yet (re-adopted after a restart), then a meter checkpoint.
    Running { report: bool },
    /// The assigned generation has exited: report the recorded exit.
    ReportExit,
    /// Labelled as started, yet neither task nor recorded exit: the task
    /// vanished (host or containerd restart, crash mid-start). Running it
    /// again under the same generation would hide that and bill unseen
    /// time, so the run fails with TaskLost.
    FailTaskLost,
    /// Nothing to do until the assignment, the task or the clock changes.
    Wait,
}

/// The next step for `assignment` (desired state and generation), given
/// the status of the container's task (`None`: no task) and what the
/// supervisor knows. An unspecified desired state is treated as Stopped.
pub fn decide(
    desired: pb::DesiredState,
    generation: u64,
    task: Option<TaskStatus>,
    known: &Known,
) -> Step {
    let live = task.is_some_and(TaskStatus::is_live);
    // Created but never started (the worker died between create and start).
    let never_started = task == Some(TaskStatus::Created);

    if task == Some(TaskStatus::Stopped) {
        return Step::Finish;
    }
    if !known.resent_last_exit
        && !live
        && known.last_exit_generation == Some(known.started_generation)
    {
        return Step::ResendExit;
    }
    let sent = |state| known.last_sent == Some((generation, state));

    match desired {
        pb::DesiredState::Deleted if live => Step::Stop,
        pb::DesiredState::Deleted => Step::Remove,
        pb::DesiredState::Stopped | pb::DesiredState::Unspecified => {
            if live {
                Step::Stop
            } else if known.started_generation < generation && !sent(pb::ObservedState::Exited) {
                Step::ReportNeverRan
            } else {
                Step::Wait
            }
        }
        pb::DesiredState::Running if known.started_generation == generation => {
            if never_started {
                // runtime.start replaces a Created task.
                Step::Start
            } else if live {
                Step::Running {
                    report: !sent(pb::ObservedState::Running),
                }
            } else if known.last_exit_generation == Some(generation) {
                if sent(pb::ObservedState::Exited) {
                    Step::Wait
                } else {
                    Step::ReportExit
                }
            } else if known.failed_generation != Some(generation) {
                Step::FailTaskLost
            } else {
                Step::Wait
            }
        }
        // Another generation is assigned than the one last started.
        pb::DesiredState::Running => {
            if live {
                // An older run is still going: a restart was asked for.
                Step::Stop
            } else if known.failed_generation == Some(generation) {
                Step::Wait
            } else {
                Step::Start
            }
        }
    }
}

/// Whether taking `step` uses up the supervisor's one chance to re-send the
/// last exit: every first look does, except at a stopped task, which is
/// finished (and its exit reported) first.
pub fn consumes_resend(step: Step) -> bool {
    step != Step::Finish
}

#[cfg(test)]
mod tests {
    use super::*;
    use pb::DesiredState::{Deleted, Running, Stopped, Unspecified};
    use pb::ObservedState as Sent;
    use TaskStatus::{Created, Paused, Running as TaskRunning, Stopped as TaskStopped};

    /// What a supervisor past its first look knows of a container whose run
    /// `started` began (no exit, nothing reported).
    fn started(generation: u64) -> Known {
        Known {
            started_generation: generation,
            resent_last_exit: true,
            ..Known::default()
        }
    }

    fn exited(generation: u64) -> Known {
        Known {
            last_exit_generation: Some(generation),
            ..started(generation)
        }
    }

    /// As a new supervisor (after a worker restart) knows it.
    fn first_look(known: Known) -> Known {
        Known {
            resent_last_exit: false,
            ..known
        }
    }

    fn reported(known: Known, generation: u64, state: Sent) -> Known {
        Known {
            last_sent: Some((generation, state)),
            ..known
        }
    }

    fn failed(known: Known, generation: u64) -> Known {
        Known {
            failed_generation: Some(generation),
            ..known
        }
    }

    /// A case, the assignment (desired, generation), the task's status, what
    /// the supervisor knows, and the step expected.
    type Row = (
        &'static str,
        pb::DesiredState,
        u64,
        Option<TaskStatus>,
        Known,
        Step,
    );

    #[test]
    fn decisions() {
        let never_created = Known::default();
        let live = Step::Running { report: false };
        let readopted = Step::Running { report: true };
        #[rustfmt::skip]
        let rows: Vec<Row> = vec![
            // A stopped task is finished first, whatever is desired.
            ("stopped task, running desired", Running, 1, Some(TaskStopped), started(1), Step::Finish),
            ("stopped task, delete desired", Deleted, 1, Some(TaskStopped), started(1), Step::Finish),
            ("stopped task on the first look", Running, 1, Some(TaskStopped), first_look(started(1)), Step::Finish),
            // The first look after a restart re-sends the last exit, once.
            ("first look re-sends the last exit", Running, 1, None, first_look(exited(1)), Step::ResendExit),
            ("first look, re-send whatever is desired", Deleted, 1, None, first_look(exited(1)), Step::ResendExit),
            ("first look, exit of an older run", Running, 2, None,
                first_look(Known { last_exit_generation: Some(1), ..started(2) }), Step::FailTaskLost),
            ("first look at a live task re-sends nothing", Running, 1, Some(TaskRunning), first_look(exited(1)), readopted),
            ("later looks re-send nothing", Stopped, 1, None, exited(1), Step::Wait),
            // Deleted.
            ("delete a running container: stop first", Deleted, 1, Some(TaskRunning), started(1), Step::Stop),
            ("delete a paused container: stop first", Deleted, 1, Some(Paused), started(1), Step::Stop),
            ("delete with no task", Deleted, 1, None, exited(1), Step::Remove),
            ("delete a container never created", Deleted, 3, None, never_created.clone(), Step::Remove),
            // Stopped, and unspecified alike.
            ("stop a running task", Stopped, 1, Some(TaskRunning), started(1), Step::Stop),
            ("stop a created task", Stopped, 1, Some(Created), started(1), Step::Stop),
            ("unspecified stops too", Unspecified, 1, Some(TaskRunning), started(1), Step::Stop),
            ("stopped before it ever ran", Stopped, 2, None, exited(1), Step::ReportNeverRan),
            ("never-ran exit already reported", Stopped, 2, None, reported(exited(1), 2, Sent::Exited), Step::Wait),
            ("stopped and exited", Stopped, 1, None, exited(1), Step::Wait),
            // Running, the generation last started.
            ("created, never started: start again", Running, 1, Some(Created), started(1), Step::Start),
            ("re-adopted running task: report it", Running, 1, Some(TaskRunning), started(1), readopted),
            ("running and reported: checkpoint only", Running, 1, Some(TaskRunning), reported(started(1), 1, Sent::Running), live),
            ("paused counts as running", Running, 1, Some(Paused), reported(started(1), 1, Sent::Running), live),
            ("exited, not yet reported", Running, 1, None, exited(1), Step::ReportExit),
            ("exited and reported", Running, 1, None, reported(exited(1), 1, Sent::Exited), Step::Wait),
            ("task vanished without an exit", Running, 1, None, started(1), Step::FailTaskLost),
            ("unknown task status, no exit", Running, 1, Some(TaskStatus::Unknown), started(1), Step::FailTaskLost),
            ("vanished task already failed", Running, 1, None, failed(started(1), 1), Step::Wait),
            // Running, a generation not started yet.
            ("first run of a new container", Running, 1, None, never_created.clone(), Step::Start),
            ("restart: stop the older run first", Running, 2, Some(TaskRunning), started(1), Step::Stop),
            ("restart after the older run exited", Running, 2, None, exited(1), Step::Start),
            ("a failed start is not retried", Running, 2, None, failed(exited(1), 2), Step::Wait),
            ("an older failure does not block a new run", Running, 3, None, failed(exited(1), 2), Step::Start),
        ];
        for (case, desired, generation, task, known, expected) in rows {
            assert_eq!(
                decide(desired, generation, task, &known),
                expected,
                "{case}"
            );
        }
    }

    #[test]
    fn only_finishing_keeps_the_resend_chance() {
        assert!(!consumes_resend(Step::Finish));
        for step in [
            Step::ResendExit,
            Step::Stop,
            Step::Start,
            Step::Wait,
            Step::Remove,
        ] {
            assert!(consumes_resend(step), "{step:?}");
        }
    }
}
