//! A tenant's containers: create (idempotent with a key), read, list,
//! events, and lifecycle requests (stop, start, restart, delete) decided
//! by [`crate::lifecycle`].

use super::idempotency::{self, Early, Idem, StoredResponse};
use super::quotas::{AdmissionTurn, Amounts};
use super::{
    apply_transition, insert_event, lock_container, ContainerRow, Result, Store, StoreError,
    CONTAINER_COLUMNS,
};
use crate::lifecycle::{self, Action, NewRunTarget, Request};
use crate::model::NewContainer;
use chrono::{DateTime, Utc};
use skiff_core::{ContainerState, PublishedPort};
use sqlx::types::Json;
use std::collections::BTreeMap;
use std::time::Duration;
use uuid::Uuid;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EventRow {
    pub kind: String,
    pub message: String,
    pub at: DateTime<Utc>,
}

/// Filters for listing a tenant's containers.
#[derive(Debug, Default, Clone)]
pub struct ListFilter {
    pub states: Vec<ContainerState>,
    pub labels: BTreeMap<String, String>,
    pub after: Option<Uuid>,
    pub limit: i64,
}

/// Inserts a container row in the caller's transaction.
pub(super) async fn insert_row(
    conn: &mut sqlx::PgConnection,
    tenant: Uuid,
    c: &NewContainer,
    keyring: &crate::secrets::Keyring,
) -> Result<ContainerRow> {
    let secrets = crate::secrets::Secrets {
        env: c.secure_env.clone(),
        files: c.secret_files.clone(),
    };
    let sealed = keyring.seal_secrets(&secrets, &crate::secrets::container_row(c.id));
    let result = sqlx::query_as::<_, ContainerRow>(&format!(
        "INSERT INTO containers (id, tenant_id, name, image, command, env, secure_env_keys, \
         secure_env_kid, secure_env_sealed, cpu_millis, \
         memory_mib, restart_policy, max_restarts, stop_timeout_s, labels, max_pending_s, host_labels, \
         timeout_s, max_cost, notify_url, job_id, task_index, task_attempt, network, network_group, \
         ports, read_only_rootfs, volumes, mounts, liveness_probe, readiness_probe, group_id, pending_since) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, \
         $19, $20, $21, $22, $23, $24, $25, $26, $27, $28, $29, $30, $31, $32, now()) \
         RETURNING {CONTAINER_COLUMNS}"
    ))
    .bind(c.id)
    .bind(tenant)
    .bind(&c.name)
    .bind(&c.image)
    .bind(Json(&c.command))
    .bind(Json(&c.env))
    .bind(c.secure_env.0.keys().collect::<Vec<_>>())
    .bind(sealed.as_ref().map(|s| &s.kid))
    .bind(sealed.as_ref().map(|s| &s.bytes))
    .bind(c.cpu.millis() as i32)
    .bind(c.memory.mib() as i32)
    .bind(c.restart_policy)
    .bind(c.max_restarts.map(|n| n.min(i32::MAX as u32) as i32))
    .bind(c.stop_timeout_s as i32)
    .bind(Json(&c.labels))
    .bind(c.max_pending_s as i32)
    .bind(Json(&c.host_labels))
    .bind(c.timeout_s.map(|t| t as i32))
    .bind(c.max_cost)
    .bind(&c.notify_url)
    .bind(c.task.map(|t| t.job))
    .bind(c.task.map(|t| t.index))
    .bind(c.task.map(|t| t.attempt))
    .bind(c.network)
    .bind(&c.network_group)
    .bind(Json(&c.ports))
    .bind(c.read_only_rootfs)
    .bind(Json(&c.volumes))
    .bind(Json(&c.mounts))
    .bind(c.liveness_probe.as_ref().map(Json))
    .bind(c.readiness_probe.as_ref().map(Json))
    .bind(c.group)
    .fetch_one(&mut *conn)
    .await;
    let row = match result {
        Err(sqlx::Error::Database(db)) if db.constraint() == Some("containers_tenant_name") => {
            Err(StoreError::NameTaken(c.name.clone()))
        }
        other => Ok(other?),
    }?;
    if let Some(credential) = &c.registry_credential {
        super::registry_credentials::insert_for_container(conn, c.id, credential, keyring).await?;
    }
    Ok(row)
}

/// What a new (pending) container adds to its tenant's use.
fn new_container_ask(c: &NewContainer) -> Amounts {
    Amounts {
        vcpu_millis: i64::from(c.cpu.millis()),
        memory_mib: i64::from(c.memory.mib()),
        containers: 1,
        pending: 1,
        jobs: 0,
    }
}

/// What a create (of a container, or of a job) did.
#[derive(Debug)]
pub enum Created<T = ContainerRow> {
    New(Box<T>, StoredResponse),
    /// The key's earlier request: its response, unchanged.
    Replay(StoredResponse),
    /// The key's earlier request committed; its response is not recorded yet.
    InFlight,
    /// The key was used for a different request.
    KeyReused,
}

impl<T> From<Early> for Created<T> {
    fn from(early: Early) -> Self {
        match early {
            Early::Replay(response) => Created::Replay(response),
            Early::InFlight => Created::InFlight,
            Early::KeyReused => Created::KeyReused,
        }
    }
}

/// What a lifecycle request did.
#[derive(Debug)]
pub enum Acted<T = Option<Box<ContainerRow>>> {
    /// Applied; here the container after it (None: no such container).
    /// With a key, record the response with [`Store::record_response`].
    Done(T),
    /// The key's earlier request: its response, unchanged.
    Replay(StoredResponse),
    /// The key's earlier request was applied and its response is not
    /// recorded yet (or never will be: it was interrupted).
    InFlight,
    /// The key was used for a different request.
    KeyReused,
}

impl<T> From<Early> for Acted<T> {
    fn from(early: Early) -> Self {
        match early {
            Early::Replay(response) => Acted::Replay(response),
            Early::InFlight => Acted::InFlight,
            Early::KeyReused => Acted::KeyReused,
        }
    }
}

impl Store {
    /// Stores a new container as `pending`. Returns once committed.
    /// Inserts a new container, or, for an idempotency key already used,
    /// returns what that request got. `render` makes the response, stored
    /// with the key in the same transaction.
    pub async fn insert_container(
        &self,
        tenant: Uuid,
        c: &NewContainer,
        idem: Option<&Idem>,
        quota: &Amounts,
        render: impl FnOnce(&ContainerRow) -> StoredResponse,
    ) -> Result<Created> {
        let _turn = self.admissions.enter(tenant).await;
        let mut tx = self.pool.begin().await?;
        if let Some(early) = idempotency::claim_for(&mut tx, tenant, idem).await? {
            return Ok(early.into());
        }
        super::quotas::admit(&mut tx, tenant, quota, &new_container_ask(c)).await?;
        let row = insert_row(&mut tx, tenant, c, &self.keyring).await?;
        let response = render(&row);
        if let Some(idem) = idem {
            idempotency::record(&mut tx, tenant, idem, &response).await?;
        }
        tx.commit().await?;
        Ok(Created::New(Box::new(row), response))
    }

    /// Purges up to `batch` containers deleted longer than `keep` ago and
    /// removed from their host: the row, its events and deliveries (by
    /// cascade), its closed meter runs and its usage total; and deleted
    /// container groups with no member left. A container
    /// with a run still open is kept. The usage ledger is untouched. The
    /// count purged.
    pub async fn purge_deleted(&self, keep: Duration, batch: i64) -> Result<u64> {
        let mut tx = self.pool.begin().await?;
        let gone: Vec<Uuid> = sqlx::query_scalar(
            "SELECT c.id FROM containers c WHERE c.deleted_at < now() - make_interval(secs => $1) \
               AND c.removed_at IS NOT NULL \
               AND NOT EXISTS (SELECT 1 FROM metering_runs r \
                               WHERE r.container_id = c.id AND r.ended_at IS NULL) \
             ORDER BY c.deleted_at LIMIT $2 FOR UPDATE SKIP LOCKED",
        )
        .bind(keep.as_secs_f64())
        .bind(batch)
        .fetch_all(&mut *tx)
        .await?;
        if gone.is_empty() {
            return Ok(0);
        }
        sqlx::query("DELETE FROM metering_runs WHERE container_id = ANY($1)")
            .bind(&gone)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM container_usage_totals WHERE container_id = ANY($1)")
            .bind(&gone)
            .execute(&mut *tx)
            .await?;
        let purged = sqlx::query("DELETE FROM containers WHERE id = ANY($1)")
            .bind(&gone)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        // A deleted container group goes with its last member.
        sqlx::query(
            "DELETE FROM container_groups g \
              WHERE g.deleted_at < now() - make_interval(secs => $1) \
                AND NOT EXISTS (SELECT 1 FROM containers c WHERE c.group_id = g.id)",
        )
        .bind(keep.as_secs_f64())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(purged)
    }

    /// Forgets the tenant event log's entries older than `keep` (a reader
    /// resuming from an older cursor goes on from the oldest kept).
    pub async fn forget_old_events(&self, keep: Duration) -> Result<u64> {
        Ok(
            sqlx::query("DELETE FROM tenant_events WHERE at < now() - make_interval(secs => $1)")
                .bind(keep.as_secs_f64())
                .execute(&self.pool)
                .await?
                .rows_affected(),
        )
    }

    /// Those of `ids` whose log passed the host's cap in some run.
    pub async fn truncated_logs(&self, ids: &[Uuid]) -> Result<std::collections::HashSet<Uuid>> {
        if ids.is_empty() {
            return Ok(Default::default());
        }
        let rows: Vec<Uuid> = sqlx::query_scalar(
            "SELECT DISTINCT container_id FROM container_events \
             WHERE container_id = ANY($1) AND kind = 'LogTruncated'",
        )
        .bind(ids)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().collect())
    }

    pub async fn get_container(&self, tenant: Uuid, id: Uuid) -> Result<Option<ContainerRow>> {
        Ok(sqlx::query_as::<_, ContainerRow>(&format!(
            "SELECT {CONTAINER_COLUMNS} FROM containers WHERE id = $1 AND tenant_id = $2 AND deleted_at IS NULL"
        ))
        .bind(id)
        .bind(tenant)
        .fetch_optional(&self.pool)
        .await?)
    }

    pub async fn list_containers(&self, tenant: Uuid, f: &ListFilter) -> Result<Vec<ContainerRow>> {
        Ok(sqlx::query_as::<_, ContainerRow>(&format!(
            "SELECT {CONTAINER_COLUMNS} FROM containers \
             WHERE tenant_id = $1 AND deleted_at IS NULL \
               AND (cardinality($2::container_state[]) = 0 OR state = ANY($2)) \
               AND labels @> $3 \
               AND ($4::uuid IS NULL OR id > $4) \
             ORDER BY id LIMIT $5"
        ))
        .bind(tenant)
        .bind(&f.states)
        .bind(Json(&f.labels))
        .bind(f.after)
        .bind(f.limit)
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn events(&self, container: Uuid) -> Result<Vec<EventRow>> {
        Ok(self
            .events_of(&[container])
            .await?
            .remove(&container)
            .unwrap_or_default())
    }

    /// The events of each of `containers` (one query for all), in order.
    pub async fn events_of(
        &self,
        containers: &[Uuid],
    ) -> Result<std::collections::HashMap<Uuid, Vec<EventRow>>> {
        let rows: Vec<(Uuid, String, String, DateTime<Utc>)> = sqlx::query_as(
            "SELECT container_id, kind, message, at FROM container_events \
             WHERE container_id = ANY($1) ORDER BY container_id, at, seq",
        )
        .bind(containers)
        .fetch_all(&self.pool)
        .await?;
        let mut out: std::collections::HashMap<Uuid, Vec<EventRow>> = Default::default();
        for (id, kind, message, at) in rows {
            out.entry(id)
                .or_default()
                .push(EventRow { kind, message, at });
        }
        Ok(out)
    }

    /// A container of any tenant, deleted ones included (admin corrections).
    pub async fn container_for_admin(&self, id: Uuid) -> Result<Option<ContainerRow>> {
        Ok(sqlx::query_as::<_, ContainerRow>(&format!(
            "SELECT {CONTAINER_COLUMNS} FROM containers WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Whether the worker has removed a deleted container from its host.
    pub async fn is_removed(&self, id: Uuid) -> Result<bool> {
        Ok(sqlx::query_scalar::<_, bool>(
            "SELECT removed_at IS NOT NULL FROM containers WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .unwrap_or(true))
    }

    /// Begins a lifecycle request's transaction with what `action` needs
    /// (for a new run: this replica's admission turn, then the tenant's
    /// admission lock and the placement lock), or answers early for an
    /// idempotency key already used.
    pub(super) async fn begin_request(
        &self,
        tenant: Uuid,
        action: Action,
        idem: Option<&Idem>,
    ) -> Result<
        std::result::Result<
            (
                sqlx::Transaction<'static, sqlx::Postgres>,
                Option<AdmissionTurn>,
            ),
            Early,
        >,
    > {
        let new_run = matches!(action, Action::Start | Action::Restart);
        let turn = match new_run {
            true => Some(self.admissions.enter(tenant).await),
            false => None,
        };
        let mut tx = self.pool.begin().await?;
        if let Some(early) = idempotency::claim_for(&mut tx, tenant, idem).await? {
            return Ok(Err(early));
        }
        if new_run {
            // A new run may count against the quota again: the admission
            // lock comes first (see quotas::lock_admissions).
            super::quotas::lock_admissions(&mut tx, tenant).await?;
            // A new run may claim capacity on its old host: one placer at a time.
            super::placement::lock_placement(&mut tx).await?;
        }
        Ok(Ok((tx, turn)))
    }

    /// Applies a user's lifecycle request. Returns the updated row, or None
    /// when the container does not exist for this tenant. `live_within`: a
    /// host heard from within it is alive.
    pub async fn request(
        &self,
        tenant: Uuid,
        id: Uuid,
        action: Action,
        live_within: Duration,
        idem: Option<&Idem>,
        quota: &Amounts,
    ) -> Result<Acted> {
        let (mut tx, _turn) = match self.begin_request(tenant, action, idem).await? {
            Ok(begun) => begun,
            Err(early) => return Ok(early.into()),
        };
        let Some(row) = lock_container(&mut tx, id, Some(tenant)).await? else {
            return Ok(Acted::Done(None));
        };
        if let Some(group) = row.group_id {
            // Its group's members are placed and acted on together only.
            return Err(StoreError::GroupMember(group));
        }
        act_locked(
            &mut tx,
            tenant,
            row,
            action,
            live_within,
            quota,
            &GroupRun::Own,
        )
        .await?;
        let row = lock_container(&mut tx, id, None).await?;
        tx.commit().await?;
        Ok(Acted::Done(row.map(Box::new)))
    }
}

/// Where a new run of a container group's member goes: the group decides
/// for all its members at once (see [`super::groups`]), never one member
/// by its own room.
#[derive(Debug, Clone)]
pub(super) enum GroupRun {
    /// Not a group's member: its own host's room decides.
    Own,
    /// Back on the group's host, which has room for every member coming
    /// back; a finished member claims these host ports (the group's).
    Home(Vec<PublishedPort>),
    /// Through the queue, where the members are placed together.
    Queue,
}

/// Applies `action` to a container locked in the caller's transaction (the
/// caller took the admission and placement locks a new run needs).
pub(super) async fn act_locked(
    tx: &mut sqlx::PgConnection,
    tenant: Uuid,
    row: ContainerRow,
    action: Action,
    live_within: Duration,
    quota: &Amounts,
    group: &GroupRun,
) -> Result<()> {
    let id = row.id;
    let decision = lifecycle::request(&row.facts(), action, Utc::now());
    if matches!(decision, Request::NewRun) && row.state.is_terminal() && row.restart_at.is_none() {
        // A finished container comes back: it counts again.
        let ask = Amounts {
            vcpu_millis: i64::from(row.cpu_millis),
            memory_mib: i64::from(row.memory_mib),
            containers: 1,
            ..Amounts::default()
        };
        super::quotas::admit(&mut *tx, tenant, quota, &ask).await?;
    }
    match decision {
        Request::Nothing => {}
        Request::Update(t) => apply_transition(&mut *tx, id, &t).await?,
        Request::Delete => {
            sqlx::query(
                    "UPDATE containers SET desired = 'deleted', deleted_at = now(), restart_at = NULL, \
                     removed_at = CASE WHEN host_id IS NULL THEN now() END, \
                     state = CASE WHEN state IN ('succeeded', 'failed', 'stopped') THEN state ELSE 'stopped' END, \
                     finished_at = COALESCE(finished_at, now()) WHERE id = $1",
                )
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        Request::NewRun => {
            let host = match row.host_id.as_deref() {
                Some(host) => super::placement::host_room(tx, host, live_within).await?,
                None => None,
            };
            // The host ports a new run would get there (asked only for
            // a finished container: one that has not finished still
            // holds its own).
            let (alive, room) = host.map_or((false, None), |h| {
                let room = match group {
                    GroupRun::Own => h.room_for(&row),
                    GroupRun::Home(ports) => Some(ports.clone()),
                    GroupRun::Queue => None,
                };
                (h.alive, room)
            });
            let target = lifecycle::new_run_target(&row.facts(), alive, room.is_some());
            let (state, requeue) = match target {
                NewRunTarget::SameHostAfterStop => (ContainerState::Stopping, false),
                NewRunTarget::SameHost => (ContainerState::Scheduled, false),
                NewRunTarget::Queue => (ContainerState::Pending, true),
            };
            // A finished container claims capacity on its host again:
            // with the host ports it got there now. Otherwise it keeps
            // the ones it holds, or, queued, gets new ones when placed.
            let host_ports = match target {
                NewRunTarget::SameHost if row.state.is_terminal() => room,
                NewRunTarget::Queue => Some(Vec::new()),
                _ => None,
            };
            if requeue && !row.state.is_terminal() {
                if let Some(host) = row.host_id.as_deref() {
                    // Its host is not alive: the run there is given up
                    // (the host fences it, unreported, if it returns),
                    // billed up to the last checkpoint that saw it.
                    super::reports::close_at_last_seen(
                        &mut *tx,
                        &row,
                        row.generation,
                        host,
                        "requeued",
                        "requeued",
                    )
                    .await?;
                }
            }
            sqlx::query(
                    "UPDATE containers SET desired = 'running', generation = generation + 1, \
                     restart_at = NULL, backoff_step = 0, state = $2, \
                     reason = NULL, message = NULL, exit_code = NULL, started_at = NULL, finished_at = NULL, \
                     prefer_host_id = CASE WHEN $3 THEN host_id ELSE prefer_host_id END, \
                     host_id = CASE WHEN $3 THEN NULL ELSE host_id END, \
                     pending_since = CASE WHEN $3 THEN now() ELSE pending_since END, \
                     scheduled_at = CASE WHEN $3 THEN NULL ELSE clock_timestamp() END, \
                     host_ports = COALESCE($4, host_ports), ip = NULL \
                     WHERE id = $1",
                )
                .bind(id)
                .bind(state)
                .bind(requeue)
                .bind(host_ports.map(Json))
                .execute(&mut *tx)
                .await?;
            if action == Action::Restart {
                insert_event(
                    &mut *tx,
                    id,
                    &format!("restart-{}", row.generation + 1),
                    "Restarting",
                    "restart requested",
                    Utc::now(),
                )
                .await?;
            }
        }
    }
    Ok(())
}
