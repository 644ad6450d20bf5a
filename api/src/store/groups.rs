//! A tenant's container groups: the group row and its members (containers
//! rows with `group_id`), created in one transaction, read together, and
//! acted on together (every member in one transaction, decided per member
//! by [`crate::lifecycle`], with new runs always queued so the members are
//! placed together: [`crate::scheduler::groups`]).

use super::containers::{act_locked, insert_row, Acted, Created, GroupRun};
use super::idempotency::{self, Idem, StoredResponse};
use super::quotas::Amounts;
use super::{ContainerRow, Result, Store, StoreError, CONTAINER_COLUMNS};
use crate::groups::NewGroup;
use crate::lifecycle::Action;
use chrono::{DateTime, Utc};
use skiff_core::RestartPolicy;
use sqlx::types::Json;
use sqlx::PgConnection;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;
use uuid::Uuid;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct GroupRow {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub namespace: String,
    pub name: String,
    pub restart_policy: RestartPolicy,
    pub labels: Json<BTreeMap<String, String>>,
    pub annotations: Json<BTreeMap<String, String>>,
    /// The request as stored (no secret values): see [`crate::groups::NewGroup::spec`].
    pub spec: Json<serde_json::Value>,
    pub created_at: DateTime<Utc>,
}

const GROUP_COLUMNS: &str =
    "id, tenant_id, namespace, name, restart_policy, labels, annotations, spec, created_at";

/// A group and its members (in the request's order).
#[derive(Debug, Clone)]
pub struct GroupWithMembers {
    pub group: GroupRow,
    pub members: Vec<ContainerRow>,
}

/// Filters for listing a tenant's groups.
#[derive(Debug, Default, Clone)]
pub struct GroupListFilter {
    pub namespace: Option<String>,
    pub after: Option<Uuid>,
    pub limit: i64,
}

async fn members_of(conn: &mut PgConnection, groups: &[GroupRow]) -> Result<Vec<GroupWithMembers>> {
    let ids: Vec<Uuid> = groups.iter().map(|g| g.id).collect();
    // Members' ids are v7 uuids made in the request's order.
    let rows: Vec<ContainerRow> = sqlx::query_as(&format!(
        "SELECT {CONTAINER_COLUMNS} FROM containers WHERE group_id = ANY($1) \
         ORDER BY group_id, id"
    ))
    .bind(&ids)
    .fetch_all(&mut *conn)
    .await?;
    let mut by_group: HashMap<Uuid, Vec<ContainerRow>> = HashMap::new();
    for row in rows {
        if let Some(g) = row.group_id {
            by_group.entry(g).or_default().push(row);
        }
    }
    Ok(groups
        .iter()
        .map(|g| GroupWithMembers {
            members: by_group.remove(&g.id).unwrap_or_default(),
            group: g.clone(),
        })
        .collect())
}

/// Locks the group's row for a change of the group. `FOR NO KEY UPDATE`,
/// not `FOR UPDATE`: a member's row written twice in one transaction (a
/// host's report) re-checks its foreign key to the group `FOR KEY SHARE`,
/// which `FOR UPDATE` blocks; a request holding the group while it waits
/// for that member's row would deadlock with the report.
async fn lock_group(conn: &mut PgConnection, tenant: Uuid, id: Uuid) -> Result<Option<GroupRow>> {
    Ok(sqlx::query_as(&format!(
        "SELECT {GROUP_COLUMNS} FROM container_groups \
         WHERE id = $1 AND tenant_id = $2 AND deleted_at IS NULL FOR NO KEY UPDATE"
    ))
    .bind(id)
    .bind(tenant)
    .fetch_optional(&mut *conn)
    .await?)
}

/// Where the members' new runs go: back on the group's host when it is
/// alive and has room for every finished member at once (their logs of
/// earlier runs are there), else through the queue, together.
async fn group_run(
    conn: &mut PgConnection,
    rows: &[ContainerRow],
    live_within: Duration,
) -> Result<GroupRun> {
    let Some(home) = rows.iter().find_map(|r| r.host_id.clone()) else {
        return Ok(GroupRun::Queue);
    };
    let Some(room) = super::placement::host_room(conn, &home, live_within).await? else {
        return Ok(GroupRun::Queue);
    };
    let newcomers: Vec<&ContainerRow> = rows.iter().filter(|r| r.state.is_terminal()).collect();
    let holder = rows
        .iter()
        .find(|r| r.holds_capacity() && r.host_id.as_deref() == Some(home.as_str()));
    Ok(
        match room
            .alive
            .then(|| room.room_for_group(&newcomers, holder))
            .flatten()
        {
            Some(ports) => GroupRun::Home(ports),
            None => GroupRun::Queue,
        },
    )
}

impl Store {
    /// Stores a new group with its members `pending`, with the quota check
    /// (all its members at once) and the idempotency key, in one
    /// transaction. `render` makes the response stored with the key.
    pub async fn insert_group(
        &self,
        tenant: Uuid,
        g: &NewGroup,
        idem: Option<&Idem>,
        quota: &Amounts,
        render: impl FnOnce(&GroupWithMembers) -> StoredResponse,
    ) -> Result<Created<GroupWithMembers>> {
        let _turn = self.admissions.enter(tenant).await;
        let mut tx = self.pool.begin().await?;
        if let Some(early) = idempotency::claim_for(&mut tx, tenant, idem).await? {
            return Ok(early.into());
        }
        let ask = g.members.iter().fold(Amounts::default(), |a, m| Amounts {
            vcpu_millis: a.vcpu_millis + i64::from(m.cpu.millis()),
            memory_mib: a.memory_mib + i64::from(m.memory.mib()),
            containers: a.containers + 1,
            pending: a.pending + 1,
            jobs: 0,
        });
        super::quotas::admit(&mut tx, tenant, quota, &ask).await?;
        let inserted = sqlx::query_as::<_, GroupRow>(&format!(
            "INSERT INTO container_groups (id, tenant_id, namespace, name, restart_policy, labels, \
             annotations, spec) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING {GROUP_COLUMNS}"
        ))
        .bind(g.id)
        .bind(tenant)
        .bind(&g.namespace)
        .bind(&g.name)
        .bind(g.restart_policy)
        .bind(Json(&g.labels))
        .bind(Json(&g.annotations))
        .bind(Json(&g.spec))
        .fetch_one(&mut *tx)
        .await;
        let group = match inserted {
            Err(sqlx::Error::Database(db))
                if db.constraint() == Some("container_groups_tenant_name") =>
            {
                return Err(StoreError::GroupNameTaken(g.name.clone()));
            }
            other => other?,
        };
        let mut members = Vec::with_capacity(g.members.len());
        for m in &g.members {
            let mut m = m.clone();
            m.group = Some(g.id);
            members.push(insert_row(&mut tx, tenant, &m, &self.keyring).await?);
        }
        let created = GroupWithMembers { group, members };
        let response = render(&created);
        if let Some(idem) = idem {
            idempotency::record(&mut tx, tenant, idem, &response).await?;
        }
        tx.commit().await?;
        Ok(Created::New(Box::new(created), response))
    }

    /// The group with its members (None: not this tenant's, or deleted).
    pub async fn get_group(&self, tenant: Uuid, id: Uuid) -> Result<Option<GroupWithMembers>> {
        let mut conn = self.pool.acquire().await?;
        let group: Option<GroupRow> = sqlx::query_as(&format!(
            "SELECT {GROUP_COLUMNS} FROM container_groups \
             WHERE id = $1 AND tenant_id = $2 AND deleted_at IS NULL"
        ))
        .bind(id)
        .bind(tenant)
        .fetch_optional(&mut *conn)
        .await?;
        Ok(match group {
            Some(g) => members_of(&mut conn, &[g]).await?.pop(),
            None => None,
        })
    }

    /// The group named `name` in `namespace` (case-insensitive).
    pub async fn find_group(
        &self,
        tenant: Uuid,
        namespace: &str,
        name: &str,
    ) -> Result<Option<GroupWithMembers>> {
        let mut conn = self.pool.acquire().await?;
        let group: Option<GroupRow> = sqlx::query_as(&format!(
            "SELECT {GROUP_COLUMNS} FROM container_groups WHERE tenant_id = $1 \
             AND lower(namespace) = lower($2) AND name = $3 AND deleted_at IS NULL"
        ))
        .bind(tenant)
        .bind(namespace)
        .bind(name)
        .fetch_optional(&mut *conn)
        .await?;
        Ok(match group {
            Some(g) => members_of(&mut conn, &[g]).await?.pop(),
            None => None,
        })
    }

    /// A page of the tenant's groups, oldest first.
    pub async fn list_groups(
        &self,
        tenant: Uuid,
        f: &GroupListFilter,
    ) -> Result<Vec<GroupWithMembers>> {
        let mut conn = self.pool.acquire().await?;
        let groups: Vec<GroupRow> = sqlx::query_as(&format!(
            "SELECT {GROUP_COLUMNS} FROM container_groups WHERE tenant_id = $1 \
             AND deleted_at IS NULL AND ($2::text IS NULL OR lower(namespace) = lower($2)) \
             AND ($3::uuid IS NULL OR id > $3) ORDER BY id LIMIT $4"
        ))
        .bind(tenant)
        .bind(&f.namespace)
        .bind(f.after)
        .bind(f.limit)
        .fetch_all(&mut *conn)
        .await?;
        members_of(&mut conn, &groups).await
    }

    /// Replaces the group's labels and annotations (in its stored request
    /// too) and its members' labels (keeping the server's two). False: no
    /// such group.
    pub async fn relabel_group(
        &self,
        tenant: Uuid,
        id: Uuid,
        labels: &BTreeMap<String, String>,
        annotations: &BTreeMap<String, String>,
    ) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        if lock_group(&mut tx, tenant, id).await?.is_none() {
            return Ok(false);
        }
        sqlx::query(
            "UPDATE container_groups SET labels = $2, annotations = $3, \
               spec = jsonb_set(jsonb_set(spec, '{labels}', $2), '{annotations}', $3) \
             WHERE id = $1",
        )
        .bind(id)
        .bind(Json(labels))
        .bind(Json(annotations))
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE containers SET labels = $2::jsonb || jsonb_build_object( \
               'skiff.group', group_id::text, 'skiff.group-member', labels->>'skiff.group-member') \
             WHERE group_id = $1 AND deleted_at IS NULL",
        )
        .bind(id)
        .bind(Json(labels))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Applies `action` to every member of the group in one transaction
    /// (a delete removes the group too), or, for an idempotency key already
    /// used, says what that request got. `Done(None)`: no such group.
    pub async fn group_request(
        &self,
        tenant: Uuid,
        id: Uuid,
        action: Action,
        live_within: Duration,
        idem: Option<&Idem>,
        quota: &Amounts,
    ) -> Result<Acted<Option<GroupWithMembers>>> {
        let new_run = matches!(action, Action::Start | Action::Restart);
        let (mut tx, _turn) = match self.begin_request(tenant, action, idem).await? {
            Ok(begun) => begun,
            Err(early) => return Ok(early.into()),
        };
        let Some(group) = lock_group(&mut tx, tenant, id).await? else {
            return Ok(Acted::Done(None));
        };
        // Every member in one statement, in id order.
        let rows: Vec<ContainerRow> = sqlx::query_as(&format!(
            "SELECT {CONTAINER_COLUMNS} FROM containers \
             WHERE group_id = $1 AND deleted_at IS NULL ORDER BY id FOR UPDATE"
        ))
        .bind(id)
        .fetch_all(&mut *tx)
        .await?;
        let run = if new_run {
            group_run(&mut tx, &rows, live_within).await?
        } else {
            GroupRun::Queue
        };
        for row in rows {
            act_locked(&mut tx, tenant, row, action, live_within, quota, &run).await?;
        }
        if action == Action::Delete {
            sqlx::query("UPDATE container_groups SET deleted_at = now() WHERE id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        let out = members_of(&mut tx, &[group]).await?.pop();
        tx.commit().await?;
        Ok(Acted::Done(out))
    }
}
