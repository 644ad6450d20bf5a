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
use crate::store::idempotency::{Idem, StoredResponse};
use crate::AppState;
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

/// What a create did.
pub enum GroupCreated {
    New(Box<GroupView>, StoredResponse),
    /// The idempotency key's earlier answer (see [`crate::http::idempotency`]).
    Replay(StoredResponse),
    InFlight,
    KeyReused,
}

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
    let _ = (state, tenant, new, idem, render);
    todo!()
}

/// The group now (None: no such group for this tenant).
pub async fn get(state: &AppState, tenant: Uuid, id: Uuid) -> Result<Option<GroupView>, ApiError> {
    let _ = (state, tenant, id);
    todo!()
}

/// The group named `name` in `namespace` (case-insensitive), if any.
pub async fn find(
    state: &AppState,
    tenant: Uuid,
    namespace: &str,
    name: &str,
) -> Result<Option<GroupView>, ApiError> {
    let _ = (state, tenant, namespace, name);
    todo!()
}

/// A page of the tenant's groups, oldest first.
pub async fn list(
    state: &AppState,
    tenant: Uuid,
    filter: &GroupFilter,
) -> Result<Vec<GroupView>, ApiError> {
    let _ = (state, tenant, filter);
    todo!()
}

/// Applies `action` to every member together (None: no such group).
pub async fn act(
    state: &AppState,
    tenant: Uuid,
    id: Uuid,
    action: GroupAction,
) -> Result<Option<GroupView>, ApiError> {
    let _ = (state, tenant, id, action);
    todo!()
}

/// Deletes the group: every member stops and is removed from its host; the
/// group is gone from reads at once (None: no such group). Its usage stays
/// in the reports.
pub async fn delete(state: &AppState, tenant: Uuid, id: Uuid) -> Result<Option<GroupView>, ApiError> {
    let _ = (state, tenant, id);
    todo!()
}
