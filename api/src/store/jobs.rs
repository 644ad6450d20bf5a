//! Jobs and their tasks. A job's tasks are rows made in one set-based
//! insert; the scheduler drives each unfinished job ([`Store::drive_job`]):
//! settles attempts whose container finished (a success, a retry, or a
//! task out of retries), starts attempts for waiting tasks while fewer than
//! `parallelism` run, and sets the job's state, all in one transaction
//! holding the job's row (any replica may drive; `SKIP LOCKED`). The row is
//! held `FOR NO KEY UPDATE`: its task containers' updates take `KEY SHARE`
//! on it for their foreign key and must not wait for the driver.

use super::containers::{insert_row, Acted, Created};
use super::idempotency::{self, Idem, StoredResponse};
use super::limits::stop_for_limit;
use super::quotas::Amounts;
use super::{Result, Store};
use crate::model::NewContainer;
use chrono::{DateTime, Utc};
use skiff_core::{JobState, Reason};
use sqlx::types::Json;
use std::collections::BTreeMap;
use uuid::Uuid;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct JobRow {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub name: String,
    pub template: Json<serde_json::Value>,
    pub tasks: Option<Json<serde_json::Value>>,
    pub count: i32,
    pub parallelism: i32,
    pub max_retries: i32,
    pub labels: Json<BTreeMap<String, String>>,
    pub state: JobState,
    pub timeout_s: Option<i32>,
    pub reason: Option<Reason>,
    /// The most all its task containers together may cost (micro-units).
    pub max_cost: Option<i64>,
    pub notify_url: Option<String>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// The template's `secure_env` and secret volume files, sealed (the
    /// template holds neither: [`crate::jobs::take_secrets`]).
    pub secure_env_kid: Option<String>,
    pub secure_env_sealed: Option<Vec<u8>>,
}

impl JobRow {
    /// Its template's secrets, opened with the keyring.
    pub fn secrets(
        &self,
        keyring: &crate::secrets::Keyring,
    ) -> Result<crate::secrets::Secrets, crate::secrets::SecretError> {
        keyring.open_secrets(
            self.secure_env_kid.as_deref(),
            self.secure_env_sealed.as_deref(),
            &crate::secrets::job_row(self.id),
        )
    }
}

const JOB_COLUMNS: &str = "id, tenant_id, name, template, tasks, count, parallelism, max_retries, \
    labels, state, timeout_s, reason, max_cost, notify_url, created_at, started_at, finished_at, \
    secure_env_kid, secure_env_sealed";

/// Tasks of a job by state.
#[derive(Debug, Clone, Default, sqlx::FromRow)]
pub struct TaskCounts {
    pub waiting: i64,
    pub active: i64,
    pub succeeded: i64,
    pub failed: i64,
    pub cancelled: i64,
}

impl Store {
    /// Stores a job and its `count` tasks (one statement for the tasks),
    /// or, for an idempotency key already used, returns that request's
    /// response; `render` makes the response, stored with the key in the
    /// same transaction.
    pub async fn insert_job(
        &self,
        job: &JobRow,
        secrets: &crate::secrets::Secrets,
        idem: Option<&Idem>,
        quota: &Amounts,
        render: impl FnOnce(&JobRow) -> StoredResponse,
    ) -> Result<Created<JobRow>> {
        let _turn = self.admissions.enter(job.tenant_id).await;
        let mut tx = self.pool.begin().await?;
        if let Some(early) = idempotency::claim_for(&mut tx, job.tenant_id, idem).await? {
            return Ok(early.into());
        }
        let ask = Amounts {
            jobs: 1,
            ..Amounts::default()
        };
        super::quotas::admit(&mut tx, job.tenant_id, quota, &ask).await?;
        let sealed = self
            .keyring
            .seal_secrets(secrets, &crate::secrets::job_row(job.id));
        let result = sqlx::query_as::<_, JobRow>(&format!(
            "INSERT INTO jobs (id, tenant_id, name, template, tasks, count, parallelism, max_retries, labels, \
             timeout_s, max_cost, notify_url, secure_env_kid, secure_env_sealed) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) \
             RETURNING {JOB_COLUMNS}"
        ))
        .bind(job.id)
        .bind(job.tenant_id)
        .bind(&job.name)
        .bind(&job.template)
        .bind(&job.tasks)
        .bind(job.count)
        .bind(job.parallelism)
        .bind(job.max_retries)
        .bind(&job.labels)
        .bind(job.timeout_s)
        .bind(job.max_cost)
        .bind(&job.notify_url)
        .bind(sealed.as_ref().map(|s| &s.kid))
        .bind(sealed.as_ref().map(|s| &s.bytes))
        .fetch_one(&mut *tx)
        .await;
        let row = match result {
            Err(sqlx::Error::Database(db)) if db.constraint() == Some("jobs_tenant_name") => {
                return Err(super::StoreError::NameTaken(job.name.clone()));
            }
            other => other?,
        };
        sqlx::query(
            "INSERT INTO job_tasks (job_id, index) SELECT $1, g FROM generate_series(0, $2 - 1) g",
        )
        .bind(job.id)
        .bind(job.count)
        .execute(&mut *tx)
        .await?;
        let response = render(&row);
        if let Some(idem) = idem {
            idempotency::record(&mut tx, job.tenant_id, idem, &response).await?;
        }
        tx.commit().await?;
        Ok(Created::New(Box::new(row), response))
    }

    pub async fn get_job(&self, tenant: Uuid, id: Uuid) -> Result<Option<JobRow>> {
        Ok(sqlx::query_as::<_, JobRow>(&format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1 AND tenant_id = $2 AND deleted_at IS NULL"
        ))
        .bind(id)
        .bind(tenant)
        .fetch_optional(&self.pool)
        .await?)
    }

    pub async fn list_jobs(
        &self,
        tenant: Uuid,
        after: Option<Uuid>,
        limit: i64,
    ) -> Result<Vec<JobRow>> {
        Ok(sqlx::query_as::<_, JobRow>(&format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE tenant_id = $1 AND deleted_at IS NULL \
               AND ($2::uuid IS NULL OR id > $2) ORDER BY id LIMIT $3"
        ))
        .bind(tenant)
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn task_counts(&self, job: Uuid) -> Result<TaskCounts> {
        Ok(sqlx::query_as::<_, TaskCounts>(
            "SELECT count(*) FILTER (WHERE state = 'waiting') AS waiting, \
               count(*) FILTER (WHERE state = 'active') AS active, \
               count(*) FILTER (WHERE state = 'succeeded') AS succeeded, \
               count(*) FILTER (WHERE state = 'failed') AS failed, \
               count(*) FILTER (WHERE state = 'cancelled') AS cancelled \
             FROM job_tasks WHERE job_id = $1",
        )
        .bind(job)
        .fetch_one(&self.pool)
        .await?)
    }

    /// Indices that ran out of retries.
    pub async fn failed_indices(&self, job: Uuid) -> Result<Vec<i32>> {
        Ok(sqlx::query_scalar(
            "SELECT index FROM job_tasks WHERE job_id = $1 AND state = 'failed' ORDER BY index",
        )
        .bind(job)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Every container a job ran.
    pub async fn job_container_ids(&self, job: Uuid) -> Result<Vec<Uuid>> {
        Ok(
            sqlx::query_scalar("SELECT id FROM containers WHERE job_id = $1")
                .bind(job)
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// Jobs still to drive.
    pub async fn unfinished_jobs(&self) -> Result<Vec<Uuid>> {
        Ok(sqlx::query_scalar(
            "SELECT id FROM jobs WHERE state IN ('pending', 'running') AND deleted_at IS NULL \
             ORDER BY created_at LIMIT 1000",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// One step of a job (see the module doc). `build` makes the container
    /// of attempt `attempt` (1 for the first) of task `index`. None when the
    /// job is finished or another replica holds it.
    pub async fn drive_job(
        &self,
        id: Uuid,
        quota: &Amounts,
        build: impl Fn(
            &JobRow,
            &crate::secrets::Secrets,
            i32,
            i32,
        ) -> std::result::Result<NewContainer, skiff_core::FieldError>,
    ) -> Result<Option<JobState>> {
        let mut tx = self.pool.begin().await?;
        let job: Option<JobRow> = sqlx::query_as(&format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1 AND state IN ('pending', 'running') \
               AND deleted_at IS NULL FOR NO KEY UPDATE SKIP LOCKED"
        ))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(job) = job else {
            return Ok(None);
        };
        let cost = match job.max_cost {
            Some(_) => Some(job_cost(&mut tx, id).await?),
            None => None,
        };
        let over = crate::jobs::over_limit(&job, Utc::now(), cost);
        if let Some((reason, why)) = over {
            fail_job(&mut tx, id, reason, &why).await?;
            tx.commit().await?;
            return Ok(Some(JobState::Failed));
        }
        // Settle attempts whose container finished.
        sqlx::query(
            "UPDATE job_tasks t SET state = CASE \
                 WHEN c.state = 'succeeded' THEN 'succeeded'::task_state \
                 WHEN t.attempts <= $2 THEN 'waiting'::task_state \
                 ELSE 'failed'::task_state END \
             FROM containers c \
             WHERE t.job_id = $1 AND t.state = 'active' AND c.id = t.container_id \
               AND c.state IN ('succeeded', 'failed', 'stopped')",
        )
        .bind(id)
        .bind(job.max_retries)
        .execute(&mut *tx)
        .await?;
        let active: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM job_tasks WHERE job_id = $1 AND state = 'active'",
        )
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
        let mut free = (i64::from(job.parallelism) - active).max(0);
        // Its template's secrets, opened only when a task may start (a job
        // whose secrets do not open still meets its deadline and budget).
        let secrets = if free > 0 {
            job.secrets(&self.keyring)?
        } else {
            crate::secrets::Secrets::default()
        };
        let build = |index, attempt| build(&job, &secrets, index, attempt);
        if free > 0 {
            // Tasks start only within the tenant's quota; the rest wait.
            let (limits, use_) = super::quotas::lock_quota(&mut tx, job.tenant_id, quota).await?;
            // Every task has the template's size (overrides change env and
            // command only).
            let (cpu, memory) = build(0, 1).map_or((0, 0), |c| {
                (i64::from(c.cpu.millis()), i64::from(c.memory.mib()))
            });
            free = free.min(super::quotas::task_room(&limits, &use_, cpu, memory));
        }
        let picks: Vec<(i32, i32)> = if free > 0 {
            sqlx::query_as(
                "SELECT index, attempts FROM job_tasks WHERE job_id = $1 AND state = 'waiting' \
                 ORDER BY index LIMIT $2",
            )
            .bind(id)
            .bind(free)
            .fetch_all(&mut *tx)
            .await?
        } else {
            Vec::new()
        };
        for (index, attempts) in picks {
            let attempt = attempts + 1;
            let container = match build(index, attempt) {
                Ok(container) => container,
                Err(err) => {
                    // (Checked when the job was made; kept from looping.)
                    tracing::warn!(job = %id, index, error = %err.message, "task cannot be built");
                    sqlx::query("UPDATE job_tasks SET state = 'failed', attempts = $3 WHERE job_id = $1 AND index = $2")
                        .bind(id)
                        .bind(index)
                        .bind(attempt)
                        .execute(&mut *tx)
                        .await?;
                    continue;
                }
            };
            let row = insert_row(&mut tx, job.tenant_id, &container, &self.keyring).await?;
            sqlx::query(
                "UPDATE job_tasks SET state = 'active', attempts = $3, container_id = $4 \
                 WHERE job_id = $1 AND index = $2",
            )
            .bind(id)
            .bind(index)
            .bind(attempt)
            .bind(row.id)
            .execute(&mut *tx)
            .await?;
        }
        let (open, failed): (i64, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE state IN ('waiting', 'active')), \
               count(*) FILTER (WHERE state = 'failed') FROM job_tasks WHERE job_id = $1",
        )
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
        let state = match (open, failed) {
            (0, 0) => JobState::Succeeded,
            (0, _) => JobState::Failed,
            _ => JobState::Running,
        };
        // Written only when it changes: most passes over a running job
        // change nothing, and a transaction that writes nothing commits
        // without waiting for the WAL.
        sqlx::query(
            "UPDATE jobs SET state = $2, started_at = COALESCE(started_at, now()), \
               finished_at = CASE WHEN $3 THEN now() END \
             WHERE id = $1 AND (state <> $2 OR started_at IS NULL)",
        )
        .bind(id)
        .bind(state)
        .bind(state.is_terminal())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(state))
    }

    /// Cancels a job: no task starts again; the containers of running
    /// attempts are returned for the caller to stop. None: no such job.
    pub async fn cancel_job(
        &self,
        tenant: Uuid,
        id: Uuid,
        idem: Option<&Idem>,
    ) -> Result<Acted<Option<Vec<Uuid>>>> {
        let mut tx = self.pool.begin().await?;
        if let Some(early) = idempotency::claim_for(&mut tx, tenant, idem).await? {
            return Ok(early.into());
        }
        let state: Option<JobState> = sqlx::query_scalar(
            "SELECT state FROM jobs WHERE id = $1 AND tenant_id = $2 AND deleted_at IS NULL \
               FOR NO KEY UPDATE",
        )
        .bind(id)
        .bind(tenant)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(state) = state else {
            return Ok(Acted::Done(None));
        };
        if state.is_terminal() {
            tx.commit().await?;
            return Ok(Acted::Done(Some(Vec::new())));
        }
        let active: Vec<Uuid> = sqlx::query_scalar::<_, Uuid>(
            "SELECT container_id FROM job_tasks WHERE job_id = $1 AND state = 'active' \
               AND container_id IS NOT NULL",
        )
        .bind(id)
        .fetch_all(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE job_tasks SET state = 'cancelled' WHERE job_id = $1 AND state IN ('waiting', 'active')",
        )
        .bind(id)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE jobs SET state = 'cancelled', finished_at = now() WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Acted::Done(Some(active)))
    }

    /// Marks a cancelled or finished job deleted; its containers are the
    /// caller's to delete. False: no such job.
    pub async fn mark_job_deleted(&self, tenant: Uuid, id: Uuid) -> Result<bool> {
        Ok(sqlx::query(
            "UPDATE jobs SET deleted_at = now() WHERE id = $1 AND tenant_id = $2 AND deleted_at IS NULL",
        )
        .bind(id)
        .bind(tenant)
        .execute(&self.pool)
        .await?
        .rows_affected()
            == 1)
    }
}

/// What all of a job's task containers have been billed (micro-units),
/// from the job's running total.
async fn job_cost(conn: &mut sqlx::PgConnection, job: Uuid) -> Result<i64> {
    let usage = skiff_billing::job_usage(conn, &[job]).await?;
    Ok(usage.get(&job).map_or(0, |u| u.cost_micros))
}

/// Fails a locked job for one of its limits: its running tasks are stopped
/// with that reason (their containers end failed with it), the waiting ones
/// are cancelled, and nothing starts again.
async fn fail_job(
    conn: &mut sqlx::PgConnection,
    id: Uuid,
    reason: Reason,
    why: &str,
) -> Result<()> {
    let running: Vec<Uuid> = sqlx::query_scalar(
        "SELECT c.id FROM job_tasks t JOIN containers c ON c.id = t.container_id \
         WHERE t.job_id = $1 AND t.state = 'active' AND c.desired = 'running' \
           AND c.state NOT IN ('succeeded', 'failed', 'stopped') ORDER BY c.id FOR UPDATE OF c",
    )
    .bind(id)
    .fetch_all(&mut *conn)
    .await?;
    for container in running {
        stop_for_limit(conn, container, reason, Some(why)).await?;
    }
    sqlx::query(
        "UPDATE job_tasks SET state = CASE WHEN state = 'active' THEN 'failed'::task_state \
           ELSE 'cancelled'::task_state END WHERE job_id = $1 AND state IN ('waiting', 'active')",
    )
    .bind(id)
    .execute(&mut *conn)
    .await?;
    sqlx::query("UPDATE jobs SET state = 'failed', reason = $2, finished_at = now() WHERE id = $1")
        .bind(id)
        .bind(reason)
        .execute(&mut *conn)
        .await?;
    Ok(())
}
