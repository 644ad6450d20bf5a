//! Jobs: what a task's container is (pure, table-tested), and the driver
//! the scheduler runs each pass (I/O through [`crate::store::jobs`]).
//!
//! Task `i`'s attempt `a` (1 for the first) is the job's template with the
//! task's overrides (`env` merged over the template's, `command` replacing
//! it), named `<job>-<i>` (`<job>-<i>-a<a>` after the first), labelled
//! `skiff.job=<job id>` and `skiff.task-index=<i>` (over the template's and
//! the job's labels), with `SKIFF_JOB_ID`, `SKIFF_TASK_INDEX`,
//! `SKIFF_TASK_COUNT` and `SKIFF_TASK_ATTEMPT` in its environment.

use crate::model::{CreateContainer, NewContainer, TaskOf};
use crate::store::jobs::JobRow;
use crate::AppState;
use serde::{Deserialize, Serialize};
use skiff_core::FieldError;
use std::collections::BTreeMap;
use uuid::Uuid;

pub const JOB_LABEL: &str = "skiff.job";
pub const TASK_INDEX_LABEL: &str = "skiff.task-index";

/// What one task changes of the template.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskOverride {
    /// Merged over the template's env.
    pub env: Option<BTreeMap<String, String>>,
    /// Replaces the template's command.
    pub command: Option<Vec<String>>,
}

/// The name of a task's attempt.
pub fn task_name(job: &str, index: i32, attempt: i32) -> String {
    if attempt <= 1 {
        format!("{job}-{index}")
    } else {
        format!("{job}-{index}-a{attempt}")
    }
}

/// The container request of attempt `attempt` of task `index`.
#[allow(clippy::too_many_arguments)]
pub fn task_request(
    template: &CreateContainer,
    task: Option<&TaskOverride>,
    job_id: Uuid,
    job_name: &str,
    job_labels: &BTreeMap<String, String>,
    count: i32,
    index: i32,
    attempt: i32,
) -> CreateContainer {
    let mut c = template.clone();
    c.name = Some(task_name(job_name, index, attempt));
    let mut env = c.env.take().unwrap_or_default();
    if let Some(task) = task {
        env.extend(task.env.clone().unwrap_or_default());
        if let Some(command) = &task.command {
            c.command = Some(command.clone());
        }
    }
    env.insert("SKIFF_JOB_ID".into(), job_id.to_string());
    env.insert("SKIFF_TASK_INDEX".into(), index.to_string());
    env.insert("SKIFF_TASK_COUNT".into(), count.to_string());
    env.insert("SKIFF_TASK_ATTEMPT".into(), attempt.to_string());
    c.env = Some(env);
    let mut labels = c.labels.take().unwrap_or_default();
    labels.extend(job_labels.clone());
    labels.insert(JOB_LABEL.into(), job_id.to_string());
    labels.insert(TASK_INDEX_LABEL.into(), index.to_string());
    c.labels = Some(labels);
    c
}

/// The validated container of a task's attempt.
pub fn task_container(
    job: &JobRow,
    default_max_pending_s: u32,
    index: i32,
    attempt: i32,
) -> Result<NewContainer, FieldError> {
    let template: CreateContainer = serde_json::from_value(job.template.0.clone())
        .map_err(|e| FieldError::new("template", e.to_string()))?;
    let overrides: Option<Vec<TaskOverride>> = match &job.tasks {
        Some(tasks) => Some(
            serde_json::from_value(tasks.0.clone())
                .map_err(|e| FieldError::new("tasks", e.to_string()))?,
        ),
        None => None,
    };
    let task = overrides
        .as_ref()
        .and_then(|tasks| tasks.get(usize::try_from(index).unwrap_or(usize::MAX)));
    let request = task_request(
        &template,
        task,
        job.id,
        &job.name,
        &job.labels.0,
        job.count,
        index,
        attempt,
    );
    let mut new = request.validate(default_max_pending_s)?;
    new.task = Some(TaskOf {
        job: job.id,
        index,
        attempt,
    });
    Ok(new)
}

/// One driver pass over every unfinished job. A job that cannot be
/// driven is logged and left for the next pass: it never holds up the
/// others, nor the rest of the scheduler's pass.
pub async fn drive(state: &AppState) -> Result<(), crate::store::StoreError> {
    let max_pending = state.config.max_pending_s;
    for id in state.store.unfinished_jobs().await? {
        let driven = state
            .store
            .drive_job(id, |job, index, attempt| {
                task_container(job, max_pending, index, attempt)
            })
            .await;
        match driven {
            Ok(Some(job_state)) if job_state.is_terminal() => {
                tracing::info!(job = %id, state = ?job_state, "job finished");
            }
            Ok(_) => {}
            Err(err) if err.is_unavailable() => return Err(err),
            Err(err) => tracing::error!(job = %id, error = %err, "driving the job failed"),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template() -> CreateContainer {
        serde_json::from_value(serde_json::json!({
            "image": "img", "cpu": 0.1, "memory_mib": 64,
            "command": ["echo", "t"], "env": {"A": "1", "B": "2"}, "labels": {"team": "x"}
        }))
        .unwrap()
    }

    #[test]
    fn a_task_is_the_template_with_its_overrides_names_labels_and_env() {
        let job = Uuid::now_v7();
        let labels = BTreeMap::from([("run".to_owned(), "7".to_owned())]);
        let task = TaskOverride {
            env: Some(BTreeMap::from([("B".into(), "over".into())])),
            command: Some(vec!["echo".into(), "mine".into()]),
        };
        // (override, index, attempt, name, command, B)
        let cases = [
            (None, 0, 1, "j-0", "t", "2"),
            (Some(&task), 3, 1, "j-3", "mine", "over"),
            (Some(&task), 3, 2, "j-3-a2", "mine", "over"),
        ];
        for (over, index, attempt, name, word, b) in cases {
            let c = task_request(&template(), over, job, "j", &labels, 10, index, attempt);
            assert_eq!(c.name.as_deref(), Some(name));
            assert_eq!(c.command.as_ref().unwrap()[1], word);
            let env = c.env.unwrap();
            assert_eq!(env["A"], "1");
            assert_eq!(env["B"], b);
            assert_eq!(env["SKIFF_TASK_INDEX"], index.to_string());
            assert_eq!(env["SKIFF_TASK_COUNT"], "10");
            assert_eq!(env["SKIFF_TASK_ATTEMPT"], attempt.to_string());
            assert_eq!(env["SKIFF_JOB_ID"], job.to_string());
            let labels = c.labels.unwrap();
            assert_eq!(labels["team"], "x");
            assert_eq!(labels["run"], "7");
            assert_eq!(labels[JOB_LABEL], job.to_string());
            assert_eq!(labels[TASK_INDEX_LABEL], index.to_string());
        }
    }
}
