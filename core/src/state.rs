//! Container lifecycle states, desired states, restart policies, failure
//! reasons, host states and the placement policy: the enums every side
//! carries end to end. With the `sqlx` feature they map to PostgreSQL enum
//! types of the same names (see the migrations), so no state is ever
//! compared as text.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Where a container is in its life. `Succeeded`, `Failed` and `Stopped` are
/// terminal until someone asks for a new run (`start`/`restart`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(
    feature = "sqlx",
    derive(sqlx::Type),
    sqlx(type_name = "container_state", rename_all = "snake_case")
)]
pub enum ContainerState {
    /// Durably stored, not yet placed on a host.
    Pending,
    /// Placed on a host; the worker has not reported progress yet.
    Scheduled,
    Pulling,
    Starting,
    Running,
    Stopping,
    Succeeded,
    Failed,
    Stopped,
}

impl ContainerState {
    pub const ALL: [ContainerState; 9] = [
        Self::Pending,
        Self::Scheduled,
        Self::Pulling,
        Self::Starting,
        Self::Running,
        Self::Stopping,
        Self::Succeeded,
        Self::Failed,
        Self::Stopped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Scheduled => "scheduled",
            Self::Pulling => "pulling",
            Self::Starting => "starting",
            Self::Running => "running",
            Self::Stopping => "stopping",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Stopped => "stopped",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Stopped)
    }
}

impl fmt::Display for ContainerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ContainerState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| format!("unknown state {s:?}"))
    }
}

/// What the user wants of a container; the worker converges on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(
    feature = "sqlx",
    derive(sqlx::Type),
    sqlx(type_name = "desired_state", rename_all = "snake_case")
)]
pub enum DesiredState {
    /// A task of the current generation should run (or have run to its exit).
    Running,
    /// No task should run; the container and its logs stay.
    Stopped,
    /// Stop, then remove every trace from the host.
    Deleted,
}

/// What happens when a container's process exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(
    feature = "sqlx",
    derive(sqlx::Type),
    sqlx(type_name = "restart_policy", rename_all = "snake_case")
)]
pub enum RestartPolicy {
    #[default]
    Never,
    OnFailure,
    Always,
}

impl RestartPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Never => "never",
            Self::OnFailure => "on_failure",
            Self::Always => "always",
        }
    }

    /// Whether an exit with `exit_code` calls for another run under this policy.
    /// A stop the user asked for never does; the caller checks that first.
    pub fn restarts_after(self, exit_code: i32) -> bool {
        match self {
            Self::Never => false,
            Self::OnFailure => exit_code != 0,
            Self::Always => true,
        }
    }

    /// Whether losing the host (a failure with no exit code) calls for a
    /// new run elsewhere.
    pub fn restarts_after_host_loss(self) -> bool {
        !matches!(self, Self::Never)
    }
}

impl FromStr for RestartPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "never" => Ok(Self::Never),
            "on_failure" => Ok(Self::OnFailure),
            "always" => Ok(Self::Always),
            other => Err(format!("unknown restart policy {other:?}")),
        }
    }
}

/// Machine-readable reasons attached to a container's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(
    feature = "sqlx",
    derive(sqlx::Type),
    sqlx(type_name = "container_reason")
)]
pub enum Reason {
    /// The process exited with a non-zero code.
    Error,
    /// The process exited with code 0.
    Completed,
    /// The image could not be resolved or fetched.
    ImagePullFailed,
    /// containerd refused to create or start the container.
    StartFailed,
    /// The kernel's OOM killer ended the process.
    OOMKilled,
    /// The host stopped heartbeating; the container's fate is unknown.
    HostLost,
    /// The run's task vanished from containerd without an exit (a host or
    /// containerd restart, or a worker crash in the middle of a start).
    TaskLost,
    /// Stopped because a user asked.
    StopRequested,
    /// Waiting out restart back-off before the next run.
    BackOff,
    /// Pending: no ready host has room for the container yet; it is placed
    /// as soon as one has.
    WaitingForCapacity,
    /// Terminal: it waited `max_pending_s` and no host had room.
    NoCapacity,
    /// Stopped by the platform: the run exceeded its `timeout_s`.
    DeadlineExceeded,
    /// Stopped by the platform: its metered cost reached its `max_cost`.
    BudgetExceeded,
    /// Killed by its host: its liveness probe failed `failure_threshold`
    /// times in a row.
    LivenessProbeFailed,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Error => "Error",
            Self::Completed => "Completed",
            Self::ImagePullFailed => "ImagePullFailed",
            Self::StartFailed => "StartFailed",
            Self::OOMKilled => "OOMKilled",
            Self::HostLost => "HostLost",
            Self::TaskLost => "TaskLost",
            Self::StopRequested => "StopRequested",
            Self::BackOff => "BackOff",
            Self::WaitingForCapacity => "WaitingForCapacity",
            Self::NoCapacity => "NoCapacity",
            Self::DeadlineExceeded => "DeadlineExceeded",
            Self::BudgetExceeded => "BudgetExceeded",
            Self::LivenessProbeFailed => "LivenessProbeFailed",
        }
    }

    pub const ALL: [Reason; 14] = [
        Self::Error,
        Self::Completed,
        Self::ImagePullFailed,
        Self::StartFailed,
        Self::OOMKilled,
        Self::HostLost,
        Self::TaskLost,
        Self::StopRequested,
        Self::BackOff,
        Self::WaitingForCapacity,
        Self::NoCapacity,
        Self::DeadlineExceeded,
        Self::BudgetExceeded,
        Self::LivenessProbeFailed,
    ];
}

impl FromStr for Reason {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("unknown reason {s:?}"))
    }
}

/// A job's state: `pending` until its first task starts, `running`, then
/// `succeeded` (every index succeeded), `failed` (some index ran out of
/// retries) or `cancelled`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(
    feature = "sqlx",
    derive(sqlx::Type),
    sqlx(type_name = "job_state", rename_all = "snake_case")
)]
pub enum JobState {
    Pending,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl JobState {
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }
}

/// A host as placement sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HostState {
    /// Heartbeating and taking new containers.
    Ready,
    /// Heartbeating; keeps what runs but takes nothing new (an operator drain).
    Draining,
    /// Silent for longer than the lost-after timeout, or back but not yet
    /// fenced: takes nothing new; its containers were failed or moved.
    Lost,
    /// Its credential was revoked by an operator: every call it makes is
    /// refused, its containers were handled as a lost host's, and it never
    /// takes work again (a new join makes a new host).
    Revoked,
}

impl HostState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ready => "ready",
            Self::Draining => "draining",
            Self::Lost => "lost",
            Self::Revoked => "revoked",
        }
    }
}

/// How placement chooses among hosts that fit, after image locality.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlacementPolicy {
    /// The fullest host that fits: keeps whole hosts free for big requests.
    #[default]
    Binpack,
    /// The emptiest host: spreads load and failure.
    Spread,
}

impl FromStr for PlacementPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "binpack" => Ok(Self::Binpack),
            "spread" => Ok(Self::Spread),
            other => Err(format!(
                "unknown placement policy {other:?} (binpack or spread)"
            )),
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_through_strings() {
        for state in ContainerState::ALL {
            assert_eq!(state.as_str().parse::<ContainerState>(), Ok(state));
        }
        assert!("bogus".parse::<ContainerState>().is_err());
    }

    #[test]
    fn reasons_round_trip_through_strings() {
        for reason in Reason::ALL {
            assert_eq!(reason.as_str().parse::<Reason>(), Ok(reason));
        }
        assert!("Bogus".parse::<Reason>().is_err());
    }

    #[test]
    fn restart_policy_decisions() {
        assert!(!RestartPolicy::Never.restarts_after(1));
        assert!(RestartPolicy::OnFailure.restarts_after(3));
        assert!(!RestartPolicy::OnFailure.restarts_after(0));
        assert!(RestartPolicy::Always.restarts_after(0));
    }
}
