//! Assembling the assignment stream into steps: the control plane splits a
//! large step over several `AssignmentUpdate` messages (every one but the
//! last has `more` set), and a step counts only once its last message is
//! in. A pure state machine, so a partial step can never be applied by
//! mistake; the agent resets it whenever a stream ends.

use skiff_proto as pb;

pub use crate::metrics::UpdateKind;

/// One complete step of the assignment stream.
#[derive(Debug, Clone, PartialEq)]
pub struct AssignmentStep {
    /// The revision the worker reaches by applying the step.
    pub revision: u64,
    pub kind: UpdateKind,
    /// Added or changed assignments; all of them in a snapshot.
    pub assignments: Vec<pb::Assignment>,
    /// Deltas only: containers no longer assigned to this host.
    pub removed: Vec<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StepError {
    /// The messages of one step must agree on revision and kind; anything
    /// else means the stream cannot be trusted.
    #[error(
        "assignment stream: a message of revision {got} ({got_kind:?}) continued the step of revision {expected} ({expected_kind:?})"
    )]
    MixedStep {
        expected: u64,
        expected_kind: UpdateKind,
        got: u64,
        got_kind: UpdateKind,
    },
}

/// Collects a step's messages until the last one.
#[derive(Debug, Default)]
pub struct StepAssembler {
    partial: Option<AssignmentStep>,
}

impl StepAssembler {
    /// Adds one message; returns the step once its last message is in.
    /// After an error the partial step is dropped.
    pub fn push(
        &mut self,
        update: pb::AssignmentUpdate,
    ) -> Result<Option<AssignmentStep>, StepError> {
        let kind = if update.snapshot {
            UpdateKind::Snapshot
        } else {
            UpdateKind::Delta
        };
        let step = match self.partial.take() {
            Some(mut step) => {
                if step.revision != update.revision || step.kind != kind {
                    return Err(StepError::MixedStep {
                        expected: step.revision,
                        expected_kind: step.kind,
                        got: update.revision,
                        got_kind: kind,
                    });
                }
                step.assignments.extend(update.assignments);
                step.removed.extend(update.removed);
                step
            }
            None => AssignmentStep {
                revision: update.revision,
                kind,
                assignments: update.assignments,
                removed: update.removed,
            },
        };
        if update.more {
            self.partial = Some(step);
            return Ok(None);
        }
        Ok(Some(step))
    }

    /// Forgets a partial step: the stream it came from has ended, and a new
    /// stream starts its steps afresh.
    pub fn reset(&mut self) {
        self.partial = None;
    }

    #[cfg(test)]
    pub fn is_partial(&self) -> bool {
        self.partial.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assignment(id: &str) -> pb::Assignment {
        pb::Assignment {
            container_id: id.to_owned(),
            ..Default::default()
        }
    }

    fn update(revision: u64, snapshot: bool, more: bool, ids: &[&str]) -> pb::AssignmentUpdate {
        pb::AssignmentUpdate {
            revision,
            snapshot,
            more,
            assignments: ids.iter().map(|id| assignment(id)).collect(),
            removed: vec![],
        }
    }

    #[test]
    fn a_single_message_is_a_step() {
        let mut assembler = StepAssembler::default();
        let step = assembler
            .push(update(3, true, false, &["a"]))
            .unwrap()
            .unwrap();
        assert_eq!(step.revision, 3);
        assert_eq!(step.kind, UpdateKind::Snapshot);
        assert_eq!(step.assignments, vec![assignment("a")]);
        assert!(!assembler.is_partial());
    }

    #[test]
    fn chunks_are_joined_and_complete_only_with_the_last() {
        let mut assembler = StepAssembler::default();
        assert_eq!(assembler.push(update(7, true, true, &["a"])).unwrap(), None);
        assert_eq!(assembler.push(update(7, true, true, &["b"])).unwrap(), None);
        assert!(assembler.is_partial());
        let mut last = update(7, true, false, &["c"]);
        last.removed = vec!["x".to_owned()];
        let step = assembler.push(last).unwrap().unwrap();
        let ids: Vec<_> = step
            .assignments
            .iter()
            .map(|a| a.container_id.as_str())
            .collect();
        assert_eq!(ids, ["a", "b", "c"]);
        assert_eq!(step.removed, ["x"]);
        assert!(!assembler.is_partial());
        // The next message starts a new step.
        let delta = assembler
            .push(update(8, false, false, &[]))
            .unwrap()
            .unwrap();
        assert_eq!((delta.revision, delta.kind), (8, UpdateKind::Delta));
    }

    #[test]
    fn a_step_mixing_revisions_or_kinds_is_refused() {
        let mut assembler = StepAssembler::default();
        assembler.push(update(7, true, true, &["a"])).unwrap();
        assert!(matches!(
            assembler.push(update(8, true, false, &["b"])),
            Err(StepError::MixedStep {
                expected: 7,
                got: 8,
                ..
            })
        ));
        assert!(!assembler.is_partial(), "the broken step is dropped");

        assembler.push(update(9, true, true, &["a"])).unwrap();
        assert!(matches!(
            assembler.push(update(9, false, false, &[])),
            Err(StepError::MixedStep {
                expected_kind: UpdateKind::Snapshot,
                got_kind: UpdateKind::Delta,
                ..
            })
        ));
    }

    #[test]
    fn reset_drops_a_partial_step() {
        let mut assembler = StepAssembler::default();
        assembler.push(update(7, true, true, &["a"])).unwrap();
        assembler.reset();
        let step = assembler
            .push(update(7, true, false, &["b"]))
            .unwrap()
            .unwrap();
        assert_eq!(step.assignments, vec![assignment("b")]);
    }
}
