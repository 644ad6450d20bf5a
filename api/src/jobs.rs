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
use crate::secrets::Secrets;
use crate::store::jobs::JobRow;
use crate::AppState;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use skiff_core::{FieldError, Reason};
use std::collections::BTreeMap;
use uuid::Uuid;

pub const JOB_LABEL: &str = "skiff.job";
pub const TASK_INDEX_LABEL: &str = "skiff.task-index";

/// What one task changes of the template.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskOverride {
    /// Merged over the template's env.
    #[schema(schema_with = crate::http::schemas::env_map)]
    pub env: Option<BTreeMap<String, String>>,
    /// Replaces the template's command.
    #[schema(schema_with = crate::http::schemas::command)]
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

/// Takes a job template's secrets out of it (`secure_env`, and the
/// contents of its secret volumes, left empty) to be sealed apart from the
/// stored template. Contents that are not base64 stay, for validation to
/// name.
pub fn take_secrets(template: &mut CreateContainer) -> Secrets {
    use base64::Engine as _;
    let mut secrets = Secrets {
        env: template.secure_env.take().unwrap_or_default(),
        ..Secrets::default()
    };
    for v in template.volumes.iter_mut().flatten() {
        let Some(secret) = v.secret.as_mut() else {
            continue;
        };
        let files = secrets.files.0.entry(v.name.clone()).or_default();
        for (path, content) in secret.files.iter_mut() {
            let b64 = base64::engine::general_purpose::STANDARD;
            if let Ok(bytes) = b64.decode(content.as_bytes()) {
                files.insert(path.clone(), bytes);
                content.clear();
            }
        }
    }
    secrets.files.0.retain(|_, files| !files.is_empty());
    secrets
}

/// Puts back what [`take_secrets`] took.
fn restore_secrets(template: &mut CreateContainer, secrets: &Secrets) {
    use base64::Engine as _;
    if !secrets.env.0.is_empty() {
        template.secure_env = Some(secrets.env.clone());
    }
    for v in template.volumes.iter_mut().flatten() {
        let (Some(secret), Some(files)) = (v.secret.as_mut(), secrets.files.0.get(&v.name)) else {
            continue;
        };
        for (path, bytes) in files {
            let b64 = base64::engine::general_purpose::STANDARD;
            secret.files.insert(path.clone(), b64.encode(bytes));
        }
    }
}

/// The validated container of a task's attempt.
pub fn task_container(
    job: &JobRow,
    secrets: &Secrets,
    default_max_pending_s: u32,
    index: i32,
    attempt: i32,
) -> Result<NewContainer, FieldError> {
    let mut template: CreateContainer = serde_json::from_value(job.template.0.clone())
        .map_err(|e| FieldError::new("template", e.to_string()))?;
    // The template is stored without its secrets; they are sealed beside it.
    restore_secrets(&mut template, secrets);
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

/// Whether a running job is past one of its own limits, and why: its
/// `timeout_s` from its start, or its `max_cost` (`cost`: what its task
/// containers have been billed so far, read only when it has a budget).
pub fn over_limit(job: &JobRow, now: DateTime<Utc>, cost: Option<i64>) -> Option<(Reason, String)> {
    if let (Some(timeout_s), Some(started)) = (job.timeout_s, job.started_at) {
        if now - started >= chrono::Duration::seconds(i64::from(timeout_s)) {
            return Some((
                Reason::DeadlineExceeded,
                format!("its job ran longer than the job's timeout_s of {timeout_s} s"),
            ));
        }
    }
    match (job.max_cost, cost) {
        (Some(max_cost), Some(cost)) if cost >= max_cost => Some((
            Reason::BudgetExceeded,
            format!("its job's metered cost reached the job's max_cost of {max_cost}"),
        )),
        _ => None,
    }
}

/// One driver pass over every unfinished job. A job that cannot be
/// driven is logged and left for the next pass: it never holds up the
/// others, nor the rest of the scheduler's pass.
pub async fn drive(state: &AppState) -> Result<(), crate::store::StoreError> {
    let max_pending = state.config.max_pending_s;
    let quota = state.config.quota_defaults();
    for id in state.store.unfinished_jobs().await? {
        let driven = state
            .store
            .drive_job(id, &quota, |job, secrets, index, attempt| {
                task_container(job, secrets, max_pending, index, attempt)
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

    fn job_with(template: serde_json::Value) -> JobRow {
        JobRow {
            id: Uuid::now_v7(),
            tenant_id: Uuid::now_v7(),
            name: "j".into(),
            template: sqlx::types::Json(template),
            tasks: None,
            count: 2,
            parallelism: 1,
            max_retries: 0,
            labels: sqlx::types::Json(BTreeMap::new()),
            state: skiff_core::JobState::Pending,
            timeout_s: None,
            reason: None,
            max_cost: None,
            notify_url: None,
            created_at: Utc::now(),
            started_at: None,
            finished_at: None,
            secure_env_kid: None,
            secure_env_sealed: None,
        }
    }

    #[test]
    fn a_task_container_keeps_the_templates_network() {
        use skiff_core::{NetworkMode, Protocol};
        let mut template = template();
        template.network_group = Some("web".into());
        template.ports = Some(vec![skiff_core::PortRequest {
            port: 8080,
            protocol: Protocol::Udp,
            host_port: Some(20080),
        }]);
        // As the job is stored: the template serialised.
        let job = job_with(serde_json::to_value(&template).unwrap());
        let c = task_container(&job, &Secrets::default(), 600, 1, 1).unwrap();
        assert_eq!(c.network, NetworkMode::Private);
        assert_eq!(c.network_group.as_deref(), Some("web"));
        assert_eq!(c.ports, template.ports.clone().unwrap());
        // A template stored before networks existed (the migration marks it
        // "network": "none") runs its tasks as they ran then.
        let old = job_with(serde_json::json!({
            "image": "img", "cpu": 0.1, "memory_mib": 64, "network": "none"
        }));
        let c = task_container(&old, &Secrets::default(), 600, 0, 1).unwrap();
        assert_eq!((c.network, c.ports.len()), (NetworkMode::None, 0));
        // A template with ports but no network is refused, naming the field.
        let mut bad = template.clone();
        bad.network = Some(NetworkMode::None);
        let err = task_container(
            &job_with(serde_json::to_value(&bad).unwrap()),
            &Secrets::default(),
            600,
            0,
            1,
        )
        .unwrap_err();
        assert_eq!(
            (err.field.as_str(), err.kind),
            ("network_group", skiff_core::FieldErrorKind::Unprocessable)
        );
    }

    #[test]
    fn a_job_is_over_its_deadline_from_its_start_or_over_its_budget() {
        let now = Utc::now();
        let job =
            |timeout_s: Option<i32>, started_ago: Option<i64>, max_cost: Option<i64>| JobRow {
                id: Uuid::now_v7(),
                tenant_id: Uuid::now_v7(),
                name: "j".into(),
                template: sqlx::types::Json(serde_json::json!({})),
                tasks: None,
                count: 1,
                parallelism: 1,
                max_retries: 0,
                labels: sqlx::types::Json(BTreeMap::new()),
                state: skiff_core::JobState::Running,
                timeout_s,
                reason: None,
                max_cost,
                notify_url: None,
                created_at: now,
                started_at: started_ago.map(|s| now - chrono::Duration::seconds(s)),
                finished_at: None,
                secure_env_kid: None,
                secure_env_sealed: None,
            };
        let d = Some(Reason::DeadlineExceeded);
        let b = Some(Reason::BudgetExceeded);
        // (timeout_s, started seconds ago, max_cost, cost so far, verdict)
        let cases = [
            (None, Some(100), None, None, None),
            (Some(10), None, None, None, None), // not started: no clock yet
            (Some(10), Some(9), None, None, None),
            (Some(10), Some(10), None, None, d),
            (None, Some(5), Some(100), Some(99), None),
            (None, Some(5), Some(100), Some(100), b),
            (None, Some(5), Some(100), None, None), // cost not read
            (Some(10), Some(11), Some(100), Some(500), d), // the deadline says first
            (Some(10), Some(1), Some(100), Some(500), b),
        ];
        for (timeout_s, ago, max_cost, cost, want) in cases {
            let got = over_limit(&job(timeout_s, ago, max_cost), now, cost).map(|(r, _)| r);
            assert_eq!(got, want, "{timeout_s:?} {ago:?} {max_cost:?} {cost:?}");
        }
    }
}
