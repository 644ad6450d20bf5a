//! Per-tenant quotas: each limit is the admin's (`tenant_quotas`) or the
//! operator's default; a tenant's use is counted from its live containers
//! (not deleted, and not finished unless a restart is due) and unfinished
//! jobs. Admission ([`admit`]) runs in the caller's transaction holding the
//! tenant's admission lock (a transaction advisory lock), so concurrent
//! creates on any replica cannot both take the last unit. The decision itself ([`check`], [`task_room`]) is
//! pure and table-tested.

use super::{Result, Store, StoreError};
use serde::Serialize;
use std::sync::Arc;
use uuid::Uuid;

/// A tenant's limits (or its use): vCPU in millis, memory in MiB, counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, sqlx::FromRow)]
pub struct Amounts {
    pub vcpu_millis: i64,
    pub memory_mib: i64,
    pub containers: i64,
    pub pending: i64,
    pub jobs: i64,
}

/// The quota an admission would pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Quota {
    MaxVcpu,
    MaxMemoryMib,
    MaxContainers,
    MaxPending,
    MaxJobs,
}

impl Quota {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MaxVcpu => "max_vcpu",
            Self::MaxMemoryMib => "max_memory_mib",
            Self::MaxContainers => "max_containers",
            Self::MaxPending => "max_pending",
            Self::MaxJobs => "max_jobs",
        }
    }
}

/// An admission refused: the quota, its limit and the use before it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} {limit} reached (in use: {use_})", quota.as_str())]
pub struct Exceeded {
    pub quota: Quota,
    /// In the quota's unit (millis for `max_vcpu`).
    pub limit: i64,
    pub use_: i64,
}

/// Whether `ask` fits beside `use_` within `limits`; the first quota it
/// would pass otherwise.
pub fn check(limits: &Amounts, use_: &Amounts, ask: &Amounts) -> std::result::Result<(), Exceeded> {
    let quotas = [
        (
            Quota::MaxVcpu,
            limits.vcpu_millis,
            use_.vcpu_millis,
            ask.vcpu_millis,
        ),
        (
            Quota::MaxMemoryMib,
            limits.memory_mib,
            use_.memory_mib,
            ask.memory_mib,
        ),
        (
            Quota::MaxContainers,
            limits.containers,
            use_.containers,
            ask.containers,
        ),
        (Quota::MaxPending, limits.pending, use_.pending, ask.pending),
        (Quota::MaxJobs, limits.jobs, use_.jobs, ask.jobs),
    ];
    for (quota, limit, used, more) in quotas {
        if more > 0 && used + more > limit {
            return Err(Exceeded {
                quota,
                limit,
                use_: used,
            });
        }
    }
    Ok(())
}

/// How many more tasks of `vcpu_millis` and `memory_mib` each (each a new
/// pending container) fit within the limits now: a job's tasks wait for
/// room instead of failing.
pub fn task_room(limits: &Amounts, use_: &Amounts, vcpu_millis: i64, memory_mib: i64) -> i64 {
    let left = |limit: i64, used: i64| (limit - used).max(0);
    let per = |left: i64, each: i64| if each > 0 { left / each } else { i64::MAX };
    [
        per(left(limits.vcpu_millis, use_.vcpu_millis), vcpu_millis),
        per(left(limits.memory_mib, use_.memory_mib), memory_mib),
        left(limits.containers, use_.containers),
        left(limits.pending, use_.pending),
    ]
    .into_iter()
    .min()
    .unwrap_or(0)
}

/// A tenant's own limits as stored, or an admin's change of them: `None`
/// is the default (stored) or keeps the value (a change).
#[derive(Debug, Clone, Default, sqlx::FromRow)]
pub struct QuotaChange {
    pub max_vcpu_millis: Option<i64>,
    pub max_memory_mib: Option<i64>,
    pub max_containers: Option<i64>,
    pub max_pending: Option<i64>,
    pub max_jobs: Option<i64>,
    /// Placements a second (see [`crate::scheduler::pace::StartRate`]).
    pub max_starts_per_s: Option<f64>,
}

/// A tenant's quota as shown: its limits and use, and its start rate
/// (its own, or the operator's default).
#[derive(Debug, Clone, Copy)]
pub struct TenantQuota {
    pub limits: Amounts,
    pub use_: Amounts,
    pub max_starts_per_s: f64,
}

/// Admissions of one tenant on this replica queue here, before they take
/// a database connection: they are serialized by the tenant's advisory
/// lock anyway, and a burst of creates waiting for it inside transactions
/// would hold the whole connection pool (the rest answering 503). Only the
/// queue is local; the lock that orders admissions across replicas is
/// PostgreSQL's.
#[derive(Default)]
pub struct AdmissionQueue(
    std::sync::Mutex<std::collections::HashMap<Uuid, Arc<tokio::sync::Mutex<()>>>>,
);

/// A place at the head of a tenant's admission queue.
pub struct AdmissionTurn {
    queue: Arc<AdmissionQueue>,
    tenant: Uuid,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl AdmissionQueue {
    pub async fn enter(self: &Arc<Self>, tenant: Uuid) -> AdmissionTurn {
        let lock = self
            .0
            .lock()
            .expect("admission queue lock")
            .entry(tenant)
            .or_default()
            .clone();
        let guard = lock.lock_owned().await;
        AdmissionTurn {
            queue: self.clone(),
            tenant,
            guard: Some(guard),
        }
    }
}

impl Drop for AdmissionTurn {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut map = self.queue.0.lock().expect("admission queue lock");
        // Forget the tenant's mutex when no one holds or waits for it.
        if map
            .get(&self.tenant)
            .is_some_and(|m| Arc::strong_count(m) == 1)
        {
            map.remove(&self.tenant);
        }
    }
}

/// The first key of admission locks (`pg_advisory_xact_lock(class, hash
/// of the tenant)`), apart from the placement lock's single key.
const QUOTA_LOCK_CLASS: i32 = 0x5155_4f54; // "QUOT"

/// The live containers of a tenant, as counted against its quota.
const LIVE: &str = "tenant_id = $1 AND deleted_at IS NULL \
    AND (state NOT IN ('succeeded', 'failed', 'stopped') OR restart_at IS NOT NULL)";

/// A tenant's use now (in the caller's transaction).
pub(super) async fn tenant_use(conn: &mut sqlx::PgConnection, tenant: Uuid) -> Result<Amounts> {
    Ok(sqlx::query_as::<_, Amounts>(&format!(
        "SELECT coalesce(sum(cpu_millis), 0)::bigint AS vcpu_millis, \
           coalesce(sum(memory_mib), 0)::bigint AS memory_mib, \
           count(*) AS containers, count(*) FILTER (WHERE state = 'pending') AS pending, \
           (SELECT count(*) FROM jobs WHERE tenant_id = $1 AND deleted_at IS NULL \
              AND state IN ('pending', 'running')) AS jobs \
         FROM containers WHERE {LIVE}"
    ))
    .bind(tenant)
    .fetch_one(conn)
    .await?)
}

/// A tenant's limits: its own where set, `defaults` elsewhere.
pub(super) async fn tenant_limits(
    conn: &mut sqlx::PgConnection,
    tenant: Uuid,
    defaults: &Amounts,
) -> Result<Amounts> {
    Ok(limits_of(&own_quota(conn, tenant).await?, defaults))
}

/// The tenant's own limits as stored (all `None` when it has none).
async fn own_quota(conn: &mut sqlx::PgConnection, tenant: Uuid) -> Result<QuotaChange> {
    let own: Option<QuotaChange> = sqlx::query_as(
        "SELECT max_vcpu_millis, max_memory_mib, max_containers, max_pending, max_jobs, \
           max_starts_per_s FROM tenant_quotas WHERE tenant_id = $1",
    )
    .bind(tenant)
    .fetch_optional(conn)
    .await?;
    Ok(own.unwrap_or_default())
}

/// `own` limits where set, `defaults` elsewhere.
fn limits_of(own: &QuotaChange, defaults: &Amounts) -> Amounts {
    Amounts {
        vcpu_millis: own.max_vcpu_millis.unwrap_or(defaults.vcpu_millis),
        memory_mib: own.max_memory_mib.unwrap_or(defaults.memory_mib),
        containers: own.max_containers.unwrap_or(defaults.containers),
        pending: own.max_pending.unwrap_or(defaults.pending),
        jobs: own.max_jobs.unwrap_or(defaults.jobs),
    }
}

/// The tenant's admission lock alone, until the transaction ends (taken
/// again by [`admit`] at no cost). Whoever may admit after taking other
/// locks takes it first: always before the placement lock and row locks,
/// so no two transactions hold them in opposite orders.
pub(super) async fn lock_admissions(conn: &mut sqlx::PgConnection, tenant: Uuid) -> Result<()> {
    sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
        .bind(QUOTA_LOCK_CLASS)
        .bind(tenant.to_string())
        .execute(conn)
        .await?;
    Ok(())
}

/// Takes the tenant's admission lock (one admission of the tenant at a
/// time, on any replica) and reads its limits and use. An advisory lock,
/// not the tenant's row: row locks there deadlocked against placement
/// (which updates the row) and against foreign-key checks of rows that
/// reference the tenant, while the admission waited on their transactions.
pub(super) async fn lock_quota(
    conn: &mut sqlx::PgConnection,
    tenant: Uuid,
    defaults: &Amounts,
) -> Result<(Amounts, Amounts)> {
    lock_admissions(conn, tenant).await?;
    let limits = tenant_limits(&mut *conn, tenant, defaults).await?;
    let use_ = tenant_use(&mut *conn, tenant).await?;
    Ok((limits, use_))
}

/// Admits `ask` for the tenant, or refuses it with the quota it would pass.
pub(super) async fn admit(
    conn: &mut sqlx::PgConnection,
    tenant: Uuid,
    defaults: &Amounts,
    ask: &Amounts,
) -> Result<()> {
    let (limits, use_) = lock_quota(conn, tenant, defaults).await?;
    check(&limits, &use_, ask).map_err(StoreError::QuotaExceeded)
}

impl Store {
    /// A tenant's limits, use and start rate (`default_starts_per_s` where
    /// it has none of its own).
    pub async fn quota(
        &self,
        tenant: Uuid,
        defaults: &Amounts,
        default_starts_per_s: f64,
    ) -> Result<TenantQuota> {
        let mut conn = self.pool.acquire().await?;
        let own = own_quota(&mut conn, tenant).await?;
        let use_ = tenant_use(&mut conn, tenant).await?;
        Ok(TenantQuota {
            limits: limits_of(&own, defaults),
            use_,
            max_starts_per_s: own.max_starts_per_s.unwrap_or(default_starts_per_s),
        })
    }

    /// Changes a tenant's quota (omitted values kept). False: no such tenant.
    pub async fn set_quota(&self, tenant: Uuid, change: &QuotaChange) -> Result<bool> {
        let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM tenants WHERE id = $1")
            .bind(tenant)
            .fetch_optional(&self.pool)
            .await?;
        if exists.is_none() {
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO tenant_quotas AS q (tenant_id, max_vcpu_millis, max_memory_mib, max_containers, \
               max_pending, max_jobs, max_starts_per_s) VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (tenant_id) DO UPDATE SET \
               max_vcpu_millis = coalesce($2, q.max_vcpu_millis), \
               max_memory_mib = coalesce($3, q.max_memory_mib), \
               max_containers = coalesce($4, q.max_containers), \
               max_pending = coalesce($5, q.max_pending), \
               max_jobs = coalesce($6, q.max_jobs), \
               max_starts_per_s = coalesce($7, q.max_starts_per_s), updated_at = now()",
        )
        .bind(tenant)
        .bind(change.max_vcpu_millis)
        .bind(change.max_memory_mib)
        .bind(change.max_containers)
        .bind(change.max_pending)
        .bind(change.max_jobs)
        .bind(change.max_starts_per_s)
        .execute(&self.pool)
        .await?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn amounts(
        vcpu_millis: i64,
        memory_mib: i64,
        containers: i64,
        pending: i64,
        jobs: i64,
    ) -> Amounts {
        Amounts {
            vcpu_millis,
            memory_mib,
            containers,
            pending,
            jobs,
        }
    }

    #[test]
    fn an_admission_passes_within_every_limit_and_names_the_first_it_would_pass() {
        let limits = amounts(2000, 1024, 10, 5, 2);
        let container = |cpu, mem| amounts(cpu, mem, 1, 1, 0);
        let job = amounts(0, 0, 0, 0, 1);
        let q = |quota, limit, use_| Err(Exceeded { quota, limit, use_ });
        // (use, ask, verdict)
        let cases = [
            (amounts(0, 0, 0, 0, 0), container(500, 256), Ok(())),
            (amounts(1500, 768, 3, 0, 0), container(500, 256), Ok(())), // exactly full
            (
                amounts(1600, 0, 3, 0, 0),
                container(500, 256),
                q(Quota::MaxVcpu, 2000, 1600),
            ),
            (
                amounts(0, 900, 3, 0, 0),
                container(100, 256),
                q(Quota::MaxMemoryMib, 1024, 900),
            ),
            (
                amounts(100, 100, 10, 0, 0),
                container(100, 64),
                q(Quota::MaxContainers, 10, 10),
            ),
            (
                amounts(100, 100, 5, 5, 0),
                container(100, 64),
                q(Quota::MaxPending, 5, 5),
            ),
            (amounts(0, 0, 0, 0, 2), job, q(Quota::MaxJobs, 2, 2)),
            (amounts(2000, 1024, 10, 5, 1), job, Ok(())), // a job asks no capacity itself
            (amounts(5000, 0, 0, 0, 0), amounts(0, 0, 0, 0, 0), Ok(())), // asking nothing
        ];
        for (use_, ask, want) in cases {
            assert_eq!(check(&limits, &use_, &ask), want, "{use_:?} + {ask:?}");
        }
    }

    #[test]
    fn tasks_fit_in_what_every_limit_leaves() {
        let limits = amounts(2000, 1024, 10, 5, 2);
        // (use, task cpu, task memory, room)
        let cases = [
            (amounts(0, 0, 0, 0, 0), 100, 64, 5),    // pending bounds
            (amounts(0, 0, 0, 0, 0), 500, 64, 4),    // cpu bounds
            (amounts(0, 0, 0, 0, 0), 100, 512, 2),   // memory bounds
            (amounts(0, 0, 8, 0, 0), 100, 64, 2),    // count bounds
            (amounts(2500, 0, 0, 0, 0), 100, 64, 0), // over already (a lowered quota)
            (amounts(1900, 0, 0, 0, 0), 100, 64, 1),
        ];
        for (use_, cpu, mem, want) in cases {
            assert_eq!(
                task_room(&limits, &use_, cpu, mem),
                want,
                "{use_:?} {cpu} {mem}"
            );
        }
    }
}
