//! An assignment step as stream messages: split under a size bound so
//! that no message breaks tonic's 4 MiB limit, only the last ending the step.

use super::assignment;
use crate::secrets::Keyring;
use crate::store::assignments::AssignmentStep;
use prost::Message as _;
use skiff_proto as pb;

/// Largest encoded size of one stream message: tonic refuses messages over
/// 4 MiB by default, and a container spec can be a few hundred KiB.
const MAX_MESSAGE_BYTES: usize = 1024 * 1024;

/// Splits a step into messages under [`MAX_MESSAGE_BYTES`]; all but the
/// last have `more` set. A step with nothing in it is one empty message (it
/// still carries the revision).
pub fn messages(step: &AssignmentStep, keyring: &Keyring) -> Vec<pb::AssignmentUpdate> {
    let assignments = step
        .assignments
        .iter()
        .map(|row| {
            let mut a = assignment(row, keyring);
            super::registry::attach(&mut a, row, &step.credentials, keyring);
            a
        })
        .collect();
    let removed = step.removed.iter().map(|id| id.to_string()).collect();
    chunk(
        step.revision,
        step.snapshot,
        assignments,
        removed,
        MAX_MESSAGE_BYTES,
    )
}

fn chunk(
    revision: u64,
    snapshot: bool,
    assignments: Vec<pb::Assignment>,
    removed: Vec<String>,
    max_bytes: usize,
) -> Vec<pb::AssignmentUpdate> {
    let new = |assignments: Vec<pb::Assignment>, removed: Vec<String>| pb::AssignmentUpdate {
        revision,
        snapshot,
        more: true,
        assignments,
        removed,
    };
    let mut out = Vec::new();
    let mut batch = Vec::new();
    let mut size = 0;
    for a in assignments {
        let len = a.encoded_len();
        if !batch.is_empty() && size + len > max_bytes {
            out.push(new(std::mem::take(&mut batch), Vec::new()));
            size = 0;
        }
        size += len;
        batch.push(a);
    }
    out.push(new(batch, removed));
    if let Some(last) = out.last_mut() {
        last.more = false;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn big(n: usize) -> pb::Assignment {
        pb::Assignment {
            container_id: format!("c{n}"),
            spec: Some(pb::ContainerSpec {
                env: [("BLOB".to_owned(), "x".repeat(190 * 1024))].into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn large_steps_are_split_under_the_message_limit_and_keep_everything() {
        // ~32 specs of ~190 KiB: 6 MiB in one message would break tonic's 4 MiB.
        let all: Vec<_> = (0..32).map(big).collect();
        let messages = chunk(7, true, all, vec!["gone".into()], MAX_MESSAGE_BYTES);
        assert!(messages.len() >= 6, "{} messages", messages.len());
        for (i, m) in messages.iter().enumerate() {
            assert!(m.encoded_len() < 4 * 1024 * 1024);
            assert!(m.encoded_len() <= MAX_MESSAGE_BYTES + 1024);
            assert_eq!(
                m.more,
                i + 1 < messages.len(),
                "only the last ends the step"
            );
            assert!((m.revision, m.snapshot) == (7, true));
        }
        let ids: Vec<_> = messages
            .iter()
            .flat_map(|m| m.assignments.iter().map(|a| a.container_id.clone()))
            .collect();
        assert_eq!(ids, (0..32).map(|n| format!("c{n}")).collect::<Vec<_>>());
        assert_eq!(messages.last().unwrap().removed, vec!["gone".to_owned()]);
    }

    #[test]
    fn an_empty_step_is_one_message_carrying_its_revision() {
        let messages = chunk(9, false, Vec::new(), Vec::new(), MAX_MESSAGE_BYTES);
        assert_eq!(messages.len(), 1);
        assert!(!messages[0].more && messages[0].revision == 9);
    }
}
