//! Container groups (see [`skiff_core::groups`]): the operations both the
//! native API (`/v1/groups`, [`crate::http::groups`]) and the ACI layer
//! ([`crate::aci`]) call: create, read, list, stop/start/restart, delete.
//! A tenant sees only its own groups: another tenant's id or name is
//! indistinguishable from one that never existed.
//!
//! A group's members are ordinary containers (state, logs, events, exec,
//! metering and usage reports by `label:skiff.group` work on them as on
//! any container); what is the group's is its placement (all members on
//! one host, [`crate::scheduler::place`] places them as one request), its
//! network namespace and volumes (the worker's sandbox, keyed by the group
//! id) and its lifecycle (members are acted on together, never one alone).
//!
//! Layout: [`model`] (request, validation, view); the SQL is in
//! [`crate::store::groups`].

pub mod model;

pub use model::*;

use crate::error::ApiError;
use crate::http::containers::{admit_shape, Shape};
use crate::lifecycle::Action;
use crate::model::ContainerView;
use crate::store::containers::{Acted, Created};
use crate::store::groups::{GroupListFilter, GroupRow, GroupWithMembers};
use crate::store::idempotency::{Idem, StoredResponse};
use crate::store::ContainerRow;
use crate::AppState;
use skiff_core::{group_state, MemberFacts, NetworkMode};
use std::collections::BTreeMap;
use uuid::Uuid;

/// What can be asked of a whole group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupAction {
    /// Every member stops (SIGTERM, then SIGKILL past its stop timeout).
    Stop,
    /// A stopped or finished group runs again: every member queued
    /// together for one host (the one it ran on first, when it has room).
    Start,
    /// Every member's run is stopped and started again on the same host.
    Restart,
}

/// Filters for listing a tenant's groups.
#[derive(Debug, Default, Clone)]
pub struct GroupFilter {
    /// Only this namespace (case-insensitive); None: all.
    pub namespace: Option<String>,
    /// The previous page's last id.
    pub after: Option<Uuid>,
    pub limit: i64,
}

/// What a create did (as a container's: see
/// [`crate::http::idempotency::answer_created`]).
pub type GroupCreated = Created<GroupView>;

/// Creates a group (validated: [`CreateGroup::validate`]) with its members
/// `pending`, in one transaction with the tenant's quota check (the sum of
/// its members) and the idempotency key. `render` makes the response
/// stored with the key. Refuses at once (409/422 like a container) what no
/// live host could ever take as a whole. A name taken in the namespace:
/// [`ApiError::Conflict`] on `name`.
pub async fn create(
    state: &AppState,
    tenant: Uuid,
    new: NewGroup,
    idem: Option<&Idem>,
    render: impl FnOnce(&GroupView) -> StoredResponse,
) -> Result<GroupCreated, ApiError> {
    let first = new.members.first().expect("validated: at least one member");
    admit_shape(
        state,
        &Shape {
            host_labels: &first.host_labels,
            cpu_millis: new.members.iter().map(|m| i64::from(m.cpu.millis())).sum(),
            memory_mib: new.members.iter().map(|m| i64::from(m.memory.mib())).sum(),
            network: NetworkMode::Private,
            ports: &first.ports,
            what: "the group's containers in all",
        },
    )
    .await?;
    let created = state
        .store
        .insert_group(tenant, &new, idem, &state.config.quota_defaults(), |g| {
            render(&view_new(g))
        })
        .await?;
    Ok(match created {
        Created::New(g, response) => {
            tracing::info!(group = %g.group.id, tenant = %tenant, members = g.members.len(),
                "container group created");
            Created::New(Box::new(view_new(&g)), response)
        }
        Created::Replay(r) => Created::Replay(r),
        Created::InFlight => Created::InFlight,
        Created::KeyReused => Created::KeyReused,
    })
}

/// Whether `new` asks for exactly what group `id` was created with: the
/// same stored request (namespaces compared case-insensitively) and the
/// same secret values (opened from the members' sealed rows and compared
/// here, never stored in the clear or hashed). Registry passwords are not
/// compared. False for a group that is gone.
pub async fn is_unchanged(
    state: &AppState,
    tenant: Uuid,
    id: Uuid,
    new: &NewGroup,
) -> Result<bool, ApiError> {
    let Some(old) = state.store.get_group(tenant, id).await? else {
        return Ok(false);
    };
    let lower_namespace = |mut v: serde_json::Value| {
        if let Some(ns) = v
            .get_mut("namespace")
            .and_then(|n| n.as_str().map(str::to_lowercase))
        {
            v["namespace"] = serde_json::Value::String(ns);
        }
        v
    };
    let asked = serde_json::to_value(&new.spec).map_err(|e| ApiError::Internal(e.to_string()))?;
    if lower_namespace(asked) != lower_namespace(old.group.spec.0.clone()) {
        return Ok(false);
    }
    if old.members.len() != new.members.len() {
        return Ok(false);
    }
    for (row, member) in old.members.iter().zip(&new.members) {
        let secrets = row
            .secrets(state.store.keyring())
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        if row.name != member.name
            || secrets.env != member.secure_env
            || secrets.files != member.secret_files
        {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The group now (None: no such group for this tenant).
pub async fn get(state: &AppState, tenant: Uuid, id: Uuid) -> Result<Option<GroupView>, ApiError> {
    match state.store.get_group(tenant, id).await? {
        Some(g) => Ok(Some(view(state, g).await?)),
        None => Ok(None),
    }
}

/// The group named `name` in `namespace` (case-insensitive), if any.
pub async fn find(
    state: &AppState,
    tenant: Uuid,
    namespace: &str,
    name: &str,
) -> Result<Option<GroupView>, ApiError> {
    match state.store.find_group(tenant, namespace, name).await? {
        Some(g) => Ok(Some(view(state, g).await?)),
        None => Ok(None),
    }
}

/// A page of the tenant's groups, oldest first.
pub async fn list(
    state: &AppState,
    tenant: Uuid,
    filter: &GroupFilter,
) -> Result<Vec<GroupView>, ApiError> {
    let groups = state
        .store
        .list_groups(
            tenant,
            &GroupListFilter {
                namespace: filter.namespace.clone(),
                after: filter.after,
                limit: filter.limit,
            },
        )
        .await?;
    views(state, groups).await
}

/// Replaces the group's labels (its members' too, beside the server's
/// two) and annotations, checked as a create checks them (None: no such
/// group).
pub async fn relabel(
    state: &AppState,
    tenant: Uuid,
    id: Uuid,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
) -> Result<Option<GroupView>, ApiError> {
    model::check_labels(&labels)?;
    model::check_annotations(&annotations)?;
    if !state
        .store
        .relabel_group(tenant, id, &labels, &annotations)
        .await?
    {
        return Ok(None);
    }
    get(state, tenant, id).await
}

/// Applies `action` to every member together (None: no such group).
pub async fn act(
    state: &AppState,
    tenant: Uuid,
    id: Uuid,
    action: GroupAction,
) -> Result<Option<GroupView>, ApiError> {
    match act_keyed(state, tenant, id, action, None).await? {
        Acted::Done(view) => Ok(view),
        // Without a key there is no earlier request.
        Acted::Replay(_) | Acted::InFlight | Acted::KeyReused => Err(ApiError::Internal(
            "an idempotency answer without a key".into(),
        )),
    }
}

/// [`act`] with an idempotency key (the native API's POSTs): the caller
/// records the response with [`crate::store::Store::record_response`].
pub async fn act_keyed(
    state: &AppState,
    tenant: Uuid,
    id: Uuid,
    action: GroupAction,
    idem: Option<&Idem>,
) -> Result<Acted<Option<GroupView>>, ApiError> {
    let action = match action {
        GroupAction::Stop => Action::Stop,
        GroupAction::Start => Action::Start,
        GroupAction::Restart => Action::Restart,
    };
    request(state, tenant, id, action, idem).await
}

/// Deletes the group: every member stops and is removed from its host; the
/// group is gone from reads at once (None: no such group). Its usage stays
/// in the reports.
pub async fn delete(
    state: &AppState,
    tenant: Uuid,
    id: Uuid,
) -> Result<Option<GroupView>, ApiError> {
    match request(state, tenant, id, Action::Delete, None).await? {
        Acted::Done(view) => Ok(view),
        Acted::Replay(_) | Acted::InFlight | Acted::KeyReused => Err(ApiError::Internal(
            "an idempotency answer without a key".into(),
        )),
    }
}

async fn request(
    state: &AppState,
    tenant: Uuid,
    id: Uuid,
    action: Action,
    idem: Option<&Idem>,
) -> Result<Acted<Option<GroupView>>, ApiError> {
    let done = state
        .store
        .group_request(
            tenant,
            id,
            action,
            state.config.host_lost_after(),
            idem,
            &state.config.quota_defaults(),
        )
        .await?;
    Ok(match done {
        Acted::Done(Some(g)) => {
            tracing::info!(group = %id, tenant = %tenant, action = action.as_str(), "container group request");
            Acted::Done(Some(view(state, g).await?))
        }
        Acted::Done(None) => Acted::Done(None),
        Acted::Replay(r) => Acted::Replay(r),
        Acted::InFlight => Acted::InFlight,
        Acted::KeyReused => Acted::KeyReused,
    })
}

/// A group as shown now: its members' views with their usage.
async fn view(state: &AppState, g: GroupWithMembers) -> Result<GroupView, ApiError> {
    Ok(views(state, vec![g])
        .await?
        .pop()
        .expect("one group in, one view out"))
}

/// Groups as shown now, their members' usage read in one go for all.
async fn views(
    state: &AppState,
    groups: Vec<GroupWithMembers>,
) -> Result<Vec<GroupView>, ApiError> {
    let mut sizes = Vec::with_capacity(groups.len());
    let mut heads = Vec::with_capacity(groups.len());
    let mut rows = Vec::new();
    for g in groups {
        sizes.push(g.members.len());
        heads.push((g.group, facts(&g.members)));
        rows.extend(g.members);
    }
    let mut members = crate::http::containers::views(state, rows)
        .await?
        .into_iter();
    Ok(heads
        .into_iter()
        .zip(sizes)
        .map(|((group, facts), n)| assemble(group, &facts, members.by_ref().take(n).collect()))
        .collect())
}

/// A group just created (no usage yet).
fn view_new(g: &GroupWithMembers) -> GroupView {
    let members = g
        .members
        .iter()
        .map(|r| crate::http::containers::view(r.clone(), Default::default()))
        .collect();
    assemble(g.group.clone(), &facts(&g.members), members)
}

fn facts(rows: &[ContainerRow]) -> Vec<MemberFacts> {
    rows.iter()
        .map(|r| MemberFacts {
            state: r.state,
            desired: r.desired,
            has_started: r.started_at.is_some() || r.restart_count > 0 || r.generation > 1,
        })
        .collect()
}

fn assemble(group: GroupRow, facts: &[MemberFacts], members: Vec<ContainerView>) -> GroupView {
    let spec: Option<CreateGroup> = serde_json::from_value(group.spec.0.clone()).ok();
    let listens = |name: &str| -> Vec<skiff_core::PortRequest> {
        spec.as_ref()
            .and_then(|s| s.containers.iter().find(|m| m.name == name))
            .and_then(|m| m.ports.clone())
            .unwrap_or_default()
    };
    let first = members.first();
    let running = members.iter().find(|m| m.ip.is_some());
    GroupView {
        id: group.id,
        name: group.name,
        namespace: group.namespace,
        state: group_state(facts),
        restart_policy: group.restart_policy,
        labels: group.labels.0,
        annotations: group.annotations.0,
        ports: first.map(|m| m.ports.clone()).unwrap_or_default(),
        ip: running.and_then(|m| m.ip.clone()),
        volumes: first.map(|m| m.volumes.clone()).unwrap_or_default(),
        host_id: members.iter().find_map(|m| m.host_id.clone()),
        containers: members
            .into_iter()
            .map(|c| MemberView {
                name: c.name.clone(),
                ports: listens(&c.name),
                container: c,
            })
            .collect(),
        created_at: group.created_at,
    }
}
