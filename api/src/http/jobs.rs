//! A tenant's jobs: create (one request, tasks stored in one insert), get
//! (state, task counts, failed indices, usage), list, tasks (the task
//! containers), cancel.

use super::problems::{Conflict, InvalidRequest, NotFound, QuotaExceeded, Unprocessable};
use super::schemas::IdempotencyKey;
use super::{idempotency, json, parse_json, JsonBytes, Tenant};
use crate::error::ApiError;
use crate::jobs::{task_container, task_name, TaskOverride, JOB_LABEL};
use crate::model::{ContainerList, CreateContainer, UsageView};
use crate::store::containers::Created;
use crate::store::jobs::JobRow;
use crate::store::ListFilter;
use crate::AppState;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use skiff_core::{ContainerName, JobState};
use sqlx::types::Json;
use std::collections::BTreeMap;
use std::sync::Arc;
use utoipa::ToSchema;
use uuid::Uuid;

const MAX_TASKS: i32 = 10_000;
const MAX_RETRIES: i32 = 10;

/// Body of `POST /v1/jobs`.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateJob {
    /// `[a-z0-9-]`, unique within the tenant; default `job-` and the last
    /// 12 characters of its id. Tasks are named `<name>-<index>` (then
    /// `<name>-<index>-a<attempt>`), and those names must be container
    /// names too (at most 63 characters).
    #[schema(pattern = "^[a-z0-9-]{1,63}$")]
    pub name: Option<String>,
    /// The container request every task starts from (without
    /// `notify_url`: a job notifies as a whole).
    #[schema(schema_with = job_template)]
    pub template: CreateContainer,
    /// Tasks, 1 to 10000, with indices 0..count-1.
    #[schema(minimum = 1, maximum = 10000)]
    pub count: i32,
    /// Most tasks running at once (default: count).
    #[schema(minimum = 1, maximum = 2147483647)]
    pub parallelism: Option<i32>,
    /// New attempts of a failed task, 0 to 10 (default 0).
    #[schema(minimum = 0, maximum = 10)]
    pub max_retries: Option<i32>,
    /// Per-index overrides of the template (exactly `count` entries).
    pub tasks: Option<Vec<TaskOverride>>,
    #[schema(schema_with = super::schemas::labels_map)]
    pub labels: Option<BTreeMap<String, String>>,
    /// Longest the whole job may run, from its first task's start (1 to
    /// 604800 s): past it, it fails with `DeadlineExceeded` and its running
    /// tasks are stopped. (A template's `timeout_s` bounds each task.)
    #[schema(minimum = 1, maximum = 604800)]
    pub timeout_s: Option<u32>,
    /// The most all its tasks together may cost (micro-units, as usage
    /// reports show `cost`): checked at each meter checkpoint of a task;
    /// once reached, the job fails with `BudgetExceeded` and its running
    /// tasks are stopped (so the overshoot is at most one checkpoint
    /// interval of its running tasks). A template's `max_cost` bounds each
    /// task. 1 to 10^15.
    #[schema(minimum = 1, maximum = 1_000_000_000_000_000_i64)]
    pub max_cost: Option<i64>,
    /// Receives the final job (a signed POST) when it reaches a terminal
    /// state; see `POST /v1/webhook-secret`. As a container's `notify_url`.
    #[schema(pattern = r"^(https?://[^\u0000]*)?$")]
    pub notify_url: Option<String>,
}

/// A job's `template`: the schema of `CreateContainer` without
/// `notify_url`, which a job's tasks do not take.
fn job_template() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
    use utoipa::openapi::{RefOr, Schema};
    let mut schema = <CreateContainer as utoipa::PartialSchema>::schema();
    if let RefOr::T(Schema::Object(object)) = &mut schema {
        object.properties.remove("notify_url");
        object.description = Some(
            "The container request every task starts from (a container's body \
             without `notify_url`)."
                .into(),
        );
    }
    schema
}

#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
pub struct TaskCountsView {
    pub waiting: i64,
    pub active: i64,
    pub succeeded: i64,
    pub failed: i64,
    pub cancelled: i64,
}

/// A job as the API shows it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct JobView {
    pub id: Uuid,
    pub name: String,
    /// pending, running, succeeded, failed, cancelled.
    #[schema(value_type = String)]
    pub state: JobState,
    /// Why it failed, when the platform decided it (`DeadlineExceeded`).
    #[schema(value_type = Option<String>)]
    pub reason: Option<skiff_core::Reason>,
    pub timeout_s: Option<i32>,
    pub max_cost: Option<i64>,
    pub notify_url: Option<String>,
    pub count: i32,
    pub parallelism: i32,
    pub max_retries: i32,
    pub tasks: TaskCountsView,
    /// Indices that ran out of retries.
    pub failed_indices: Vec<i32>,
    pub labels: BTreeMap<String, String>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// What every task container has been billed, added up.
    pub usage: UsageView,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct JobList {
    pub items: Vec<JobView>,
    pub next: Option<String>,
}

async fn view(state: &AppState, job: JobRow) -> Result<JobView, ApiError> {
    let counts = state.store.task_counts(job.id).await?;
    let failed_indices = state.store.failed_indices(job.id).await?;
    let mut conn = state.store.conn().await?;
    let total = skiff_billing::job_usage(&mut conn, &[job.id])
        .await?
        .remove(&job.id)
        .unwrap_or_default();
    Ok(job_view(
        job,
        TaskCountsView {
            waiting: counts.waiting,
            active: counts.active,
            succeeded: counts.succeeded,
            failed: counts.failed,
            cancelled: counts.cancelled,
        },
        failed_indices,
        UsageView::from(&total),
    ))
}

/// A job as shown, from its row and what is read beside it.
fn job_view(
    job: JobRow,
    tasks: TaskCountsView,
    failed_indices: Vec<i32>,
    usage: UsageView,
) -> JobView {
    JobView {
        id: job.id,
        name: job.name,
        state: job.state,
        reason: job.reason,
        timeout_s: job.timeout_s,
        max_cost: job.max_cost,
        notify_url: job.notify_url,
        count: job.count,
        parallelism: job.parallelism,
        max_retries: job.max_retries,
        tasks,
        failed_indices,
        labels: job.labels.0,
        created_at: job.created_at,
        started_at: job.started_at,
        finished_at: job.finished_at,
        usage,
    }
}

/// Run `count` tasks of a template, at most `parallelism` at once.
#[utoipa::path(post, path = "/v1/jobs", tag = "jobs", request_body = CreateJob, params(IdempotencyKey),
    responses((status = 201, body = JobView), InvalidRequest, QuotaExceeded, Conflict, Unprocessable),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    headers: HeaderMap,
    body: JsonBytes,
) -> Result<Response, ApiError> {
    let idem = idempotency::from_request(&headers, &Method::POST, "/v1/jobs", &body.0)?;
    let body: CreateJob = parse_json(&body.0)?;
    let id = Uuid::now_v7();
    if !(1..=MAX_TASKS).contains(&body.count) {
        return Err(ApiError::invalid("count", "must be 1 to 10000"));
    }
    let parallelism = body.parallelism.unwrap_or(body.count);
    if parallelism < 1 {
        return Err(ApiError::invalid("parallelism", "must be at least 1"));
    }
    let max_retries = body.max_retries.unwrap_or(0);
    if !(0..=MAX_RETRIES).contains(&max_retries) {
        return Err(ApiError::invalid("max_retries", "must be 0 to 10"));
    }
    if let Some(tasks) = &body.tasks {
        if tasks.len() != body.count as usize {
            return Err(ApiError::Unprocessable {
                field: "tasks".into(),
                detail: format!("has {} entries; count is {}", tasks.len(), body.count),
            });
        }
    }
    let name = match body.name {
        Some(name) => ContainerName::parse(&name)?.into_string(),
        None => format!("job-{}", &id.simple().to_string()[20..]),
    };
    // The longest task name must be a container name too.
    ContainerName::parse(&task_name(&name, body.count - 1, max_retries + 1)).map_err(|_| {
        ApiError::invalid(
            "name",
            "too long for its task names (<name>-<index>-a<attempt>)",
        )
    })?;
    let labels = body.labels.unwrap_or_default();
    skiff_core::validate_labels("labels", &labels)?;
    if let Some(timeout_s) = body.timeout_s {
        crate::model::check_timeout_s(timeout_s)?;
    }
    if let Some(max_cost) = body.max_cost {
        crate::model::check_max_cost(max_cost)?;
    }
    let notify_url = body.notify_url.filter(|u| !u.is_empty());
    if let Some(url) = &notify_url {
        super::containers::check_notify_url(&state, tenant, url).await?;
    }
    if body.template.image_registry_credentials.is_some() {
        return Err(ApiError::Unprocessable {
            field: "template.image_registry_credentials".into(),
            detail: "not accepted in a job's template (it would be stored with the job); \
                     store the credential with PUT /v1/registry-credentials/{server}: \
                     the tasks' pulls use it"
                .into(),
        });
    }
    if body.template.notify_url.is_some() {
        return Err(ApiError::invalid(
            "template.notify_url",
            "not supported on a job's tasks",
        ));
    }
    // The template is stored without its secrets: they are sealed apart.
    let mut template = body.template;
    let secrets = crate::jobs::take_secrets(&mut template);
    let mut template = serde_json::to_value(&template).map_err(ApiError::internal)?;
    if let Some(fields) = template.as_object_mut() {
        fields.remove("secure_env");
    }
    let row = JobRow {
        id,
        tenant_id: tenant,
        name,
        template: Json(template),
        tasks: match &body.tasks {
            Some(tasks) => Some(Json(
                serde_json::to_value(tasks).map_err(ApiError::internal)?,
            )),
            None => None,
        },
        count: body.count,
        parallelism,
        max_retries,
        labels: Json(labels),
        state: JobState::Pending,
        timeout_s: body.timeout_s.map(|t| t as i32),
        reason: None,
        max_cost: body.max_cost,
        notify_url,
        created_at: Utc::now(),
        started_at: None,
        finished_at: None,
        secure_env_kid: None,
        secure_env_sealed: None,
    };
    // Every task's request is checked now, so none fails to start later.
    for index in 0..body.count {
        task_container(&row, &secrets, state.config.max_pending_s, index, 1).map_err(
            |mut err| {
                err.field = format!("template.{}", err.field);
                ApiError::from(err)
            },
        )?;
    }
    // A new job: every task waits, nothing is billed yet.
    let render = |job: &JobRow| {
        let waiting = TaskCountsView {
            waiting: i64::from(job.count),
            ..Default::default()
        };
        let fresh = job_view(job.clone(), waiting, Vec::new(), UsageView::default());
        idempotency::stored_json(StatusCode::CREATED, &fresh)
    };
    let created = state
        .store
        .insert_job(
            &row,
            &secrets,
            idem.as_ref(),
            &state.config.quota_defaults(),
            render,
        )
        .await?;
    let is_new = matches!(created, Created::New(..));
    let response = idempotency::answer_created(&state, tenant, idem.as_ref(), created, |job| {
        tracing::info!(job = %job.id, %tenant, count = job.count, parallelism, "job created");
    })
    .await?;
    if is_new {
        state.store.notify_scheduler().await?;
    }
    Ok(response)
}

/// A job as shown now (None: no such job, or deleted).
pub(crate) async fn current_view(
    state: &AppState,
    tenant: Uuid,
    id: Uuid,
) -> Result<Option<JobView>, ApiError> {
    match state.store.get_job(tenant, id).await? {
        Some(job) => Ok(Some(view(state, job).await?)),
        None => Ok(None),
    }
}

pub(super) async fn load(state: &AppState, tenant: Uuid, raw: &str) -> Result<JobRow, ApiError> {
    let id = Uuid::parse_str(raw).map_err(|_| ApiError::NotFound("job"))?;
    state
        .store
        .get_job(tenant, id)
        .await?
        .ok_or(ApiError::NotFound("job"))
}

/// One job.
#[utoipa::path(get, path = "/v1/jobs/{id}", tag = "jobs", params(("id" = Uuid, Path)),
    responses((status = 200, body = JobView), NotFound), security(("bearer" = [])))]
pub async fn get(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let job = load(&state, tenant, &id).await?;
    Ok(json(StatusCode::OK, view(&state, job).await?))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Most items on the page (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
    /// The previous page's `next`.
    #[param(value_type = Option<Uuid>)]
    pub cursor: Option<String>,
}

fn page(query: &PageQuery) -> Result<(i64, Option<Uuid>), ApiError> {
    let limit = query.limit.unwrap_or(super::DEFAULT_PAGE);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid("limit", "must be 1 to 1000"));
    }
    let after = match &query.cursor {
        Some(c) => Some(
            Uuid::parse_str(c)
                .map_err(|_| ApiError::invalid("cursor", "not a cursor from this API"))?,
        ),
        None => None,
    };
    Ok((limit, after))
}

/// The tenant's jobs, oldest first (`limit`, `cursor`).
#[utoipa::path(get, path = "/v1/jobs", tag = "jobs", params(PageQuery),
    responses((status = 200, body = JobList), InvalidRequest), security(("bearer" = [])))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    query: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::invalid("query", e.body_text()))?;
    let (limit, after) = page(&query)?;
    let rows = state.store.list_jobs(tenant, after, limit).await?;
    let next = (rows.len() as i64 == limit)
        .then(|| rows.last().map(|r| r.id.to_string()))
        .flatten();
    let mut items = Vec::new();
    for row in rows {
        items.push(view(&state, row).await?);
    }
    Ok(json(StatusCode::OK, JobList { items, next }))
}

/// A job's task containers (every attempt), as container objects.
#[utoipa::path(get, path = "/v1/jobs/{id}/tasks", tag = "jobs", params(("id" = Uuid, Path), PageQuery),
    responses((status = 200, body = ContainerList), InvalidRequest, NotFound), security(("bearer" = [])))]
pub async fn tasks(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
    query: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::invalid("query", e.body_text()))?;
    let job = load(&state, tenant, &id).await?;
    let (limit, after) = page(&query)?;
    let filter = ListFilter {
        labels: BTreeMap::from([(JOB_LABEL.to_owned(), job.id.to_string())]),
        after,
        limit,
        ..Default::default()
    };
    let rows = state.store.list_containers(tenant, &filter).await?;
    let next = (rows.len() as i64 == limit)
        .then(|| rows.last().map(|r| r.id.to_string()))
        .flatten();
    let items = super::containers::views(&state, rows).await?;
    Ok(json(StatusCode::OK, ContainerList { items, next }))
}

/// Cancel: running tasks are stopped, none starts again (idempotent with
/// an `Idempotency-Key`).
#[utoipa::path(post, path = "/v1/jobs/{id}/cancel", tag = "jobs", params(("id" = Uuid, Path), IdempotencyKey),
    responses((status = 202, body = JobView), InvalidRequest, NotFound, Unprocessable), security(("bearer" = [])))]
pub async fn cancel(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let job = load(&state, tenant, &id).await?;
    let path = format!("/v1/jobs/{}/cancel", job.id);
    let idem = idempotency::from_request(&headers, &Method::POST, &path, b"")?;
    let acted = state
        .store
        .cancel_job(tenant, job.id, idem.as_ref())
        .await?;
    let running = match idempotency::settle(&state, tenant, idem.as_ref(), acted).await? {
        idempotency::Settled::Done(running) => running.ok_or(ApiError::NotFound("job"))?,
        idempotency::Settled::Answer(response) => return Ok(response),
        idempotency::Settled::Lost => Vec::new(), // applied; its answer was lost: answer from now
    };
    for container in running {
        state
            .store
            .request(
                tenant,
                container,
                crate::lifecycle::Action::Stop,
                state.config.host_lost_after(),
                None,
                &state.config.quota_defaults(),
            )
            .await?;
    }
    tracing::info!(job = %job.id, "job cancelled");
    let job = load(&state, tenant, &id).await?;
    let response = idempotency::stored_json(StatusCode::ACCEPTED, &view(&state, job).await?);
    if let Some(idem) = &idem {
        state.store.record_response(tenant, idem, &response).await?;
    }
    Ok(idempotency::respond(response, false))
}

/// Delete: cancels the job, then deletes every task container (their
/// runtime state and logs go from the hosts) and the job. 204.
#[utoipa::path(delete, path = "/v1/jobs/{id}", tag = "jobs", params(("id" = Uuid, Path)),
    responses((status = 204, description = "deleted"), NotFound), security(("bearer" = [])))]
pub async fn delete(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let job = load(&state, tenant, &id).await?;
    state.store.cancel_job(tenant, job.id, None).await?;
    for container in state.store.job_container_ids(job.id).await? {
        state
            .store
            .request(
                tenant,
                container,
                crate::lifecycle::Action::Delete,
                state.config.host_lost_after(),
                None,
                &state.config.quota_defaults(),
            )
            .await?;
    }
    state.store.mark_job_deleted(tenant, job.id).await?;
    tracing::info!(job = %job.id, "job deleted");
    Ok(axum::response::IntoResponse::into_response(
        StatusCode::NO_CONTENT,
    ))
}
