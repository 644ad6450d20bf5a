//! Container groups: 1..[`MAX_MEMBERS`] containers placed together on one
//! host, sharing one network namespace (they reach each other on
//! localhost, and share one address and the group's published ports) and
//! the group's volumes, started, stopped and deleted together. Each member
//! is an ordinary container underneath (its own state, logs, restarts and
//! meter); the group's state is derived from its members' ([`group_state`]).
//!
//! This module owns the rules a group request follows that are not a single
//! container's ([`validate_members`]) and the group's state, as pure
//! functions with table tests.

use crate::{ContainerState, DesiredState, FieldError};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::fmt;

/// At most this many containers in one group.
pub const MAX_MEMBERS: usize = 10;

/// A group's state, derived from its members'.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupState {
    /// Some member has not started its first run yet (waiting for a host,
    /// pulling, starting) and none failed for good.
    Pending,
    /// Every member has started; some run now.
    Running,
    /// Every member finished for good, all successfully.
    Succeeded,
    /// Some member finished for good and failed.
    Failed,
    /// Stopped on request (every member stopped or stopping).
    Stopped,
}

impl GroupState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Stopped => "stopped",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Stopped)
    }
}

impl fmt::Display for GroupState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the group's state is made from: each member's state, what is
/// asked of it, and whether it has ever started a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberFacts {
    pub state: ContainerState,
    pub desired: DesiredState,
    /// It has had a run start (a restart may be under way).
    pub has_started: bool,
}

/// The group's state from its members' (in any order). A failed member
/// fails the group; a stop asked of the members makes it stopped; all
/// finished and none failed is success; otherwise it runs once every
/// member has started, and is pending before.
pub fn group_state(members: &[MemberFacts]) -> GroupState {
    use ContainerState as S;
    if members.is_empty() {
        return GroupState::Stopped;
    }
    if members.iter().any(|m| m.state == S::Failed) {
        return GroupState::Failed;
    }
    let stop_asked = members.iter().all(|m| m.desired != DesiredState::Running);
    if stop_asked {
        return GroupState::Stopped;
    }
    if members.iter().all(|m| m.state.is_terminal()) {
        return if members.iter().any(|m| m.state == S::Stopped) {
            GroupState::Stopped
        } else {
            GroupState::Succeeded
        };
    }
    if members
        .iter()
        .all(|m| m.has_started || m.state.is_terminal())
    {
        GroupState::Running
    } else {
        GroupState::Pending
    }
}

/// The members' names: DNS labels (checked per container), at least one,
/// at most [`MAX_MEMBERS`], each once. `names[i]` is member i's.
pub fn validate_members(names: &[&str]) -> Result<(), FieldError> {
    if names.is_empty() {
        return Err(FieldError::new("containers", "at least one container"));
    }
    if names.len() > MAX_MEMBERS {
        return Err(FieldError::new(
            "containers",
            format!("at most {MAX_MEMBERS} containers in a group"),
        ));
    }
    let mut seen = HashSet::new();
    for (i, name) in names.iter().enumerate() {
        if !seen.insert(*name) {
            return Err(FieldError::new(
                format!("containers[{i}].name"),
                format!("{name:?} names another container of the group"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ContainerState as S;
    use DesiredState as D;

    fn m(state: S, desired: D, has_started: bool) -> MemberFacts {
        MemberFacts {
            state,
            desired,
            has_started,
        }
    }

    #[test]
    fn the_group_state_follows_its_members() {
        let cases: &[(&str, Vec<MemberFacts>, GroupState)] = &[
            (
                "both waiting for a host",
                vec![
                    m(S::Pending, D::Running, false),
                    m(S::Pending, D::Running, false),
                ],
                GroupState::Pending,
            ),
            (
                "one running, one still pulling",
                vec![
                    m(S::Running, D::Running, true),
                    m(S::Pulling, D::Running, false),
                ],
                GroupState::Pending,
            ),
            (
                "both running",
                vec![
                    m(S::Running, D::Running, true),
                    m(S::Running, D::Running, true),
                ],
                GroupState::Running,
            ),
            (
                "one restarting after it ran",
                vec![
                    m(S::Running, D::Running, true),
                    m(S::Starting, D::Running, true),
                ],
                GroupState::Running,
            ),
            (
                "a sidecar done, the main one running",
                vec![
                    m(S::Running, D::Running, true),
                    m(S::Succeeded, D::Running, true),
                ],
                GroupState::Running,
            ),
            (
                "all done",
                vec![
                    m(S::Succeeded, D::Running, true),
                    m(S::Succeeded, D::Running, true),
                ],
                GroupState::Succeeded,
            ),
            (
                "one failed for good",
                vec![
                    m(S::Running, D::Running, true),
                    m(S::Failed, D::Running, true),
                ],
                GroupState::Failed,
            ),
            (
                "an image that never pulled",
                vec![
                    m(S::Failed, D::Running, false),
                    m(S::Pending, D::Running, false),
                ],
                GroupState::Failed,
            ),
            (
                "stop asked, one still stopping",
                vec![
                    m(S::Stopping, D::Stopped, true),
                    m(S::Stopped, D::Stopped, true),
                ],
                GroupState::Stopped,
            ),
            (
                "stopped",
                vec![
                    m(S::Stopped, D::Stopped, true),
                    m(S::Stopped, D::Stopped, true),
                ],
                GroupState::Stopped,
            ),
            ("no members", vec![], GroupState::Stopped),
        ];
        for (what, members, want) in cases {
            assert_eq!(group_state(members), *want, "{what}");
        }
    }

    #[test]
    fn member_names_are_unique_and_bounded() {
        assert!(validate_members(&["web", "sidecar"]).is_ok(), "control");
        assert_eq!(validate_members(&[]).unwrap_err().field, "containers");
        assert_eq!(
            validate_members(&["a", "b", "a"]).unwrap_err().field,
            "containers[2].name"
        );
        let many: Vec<String> = (0..=MAX_MEMBERS).map(|i| format!("c{i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert_eq!(validate_members(&many).unwrap_err().field, "containers");
        assert!(validate_members(&many[..MAX_MEMBERS]).is_ok());
    }
}
