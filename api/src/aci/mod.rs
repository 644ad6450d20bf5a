//! Azure Container Instances compatibility: the ARM API of
//! `Microsoft.ContainerInstance/containerGroups` under `/aci`, so that
//! Microsoft's own clients (the `azure-mgmt-containerinstance` SDK, `az
//! container`) drive skiff unchanged, with a skiff tenant token as their
//! bearer token. A subscription is a tenant (its id), a resource group a
//! namespace inside it (created implicitly), a container group a skiff
//! group ([`crate::groups`]): every operation here is a translation onto
//! the groups service, never a second implementation of it.
//!
//! ARM's conventions are kept: `api-version` is required and checked;
//! literal path segments match in any case; PUT and start are long-running
//! operations (`Azure-AsyncOperation`, an operation resource derived from
//! the group's state, no table of its own); errors are ARM's `{"error":
//! {"code", "message", "target"}}` with ACI's codes, predictable ones 4xx
//! (Azure clients retry 5xx); every URL handed back is absolute.
//!
//! Layout:
//! - [`routes`]: the one handler under `/aci/{*rest}` and the operations.
//! - [`path`]: ARM paths, parsed case-insensitively (table-tested).
//! - [`arm`]: errors and their codes, `api-version`, LRO headers, URLs.
//! - [`model`]: the ARM shapes of a container group.
//! - [`translate`]: a PUT body into a [`crate::groups::CreateGroup`] (pure, table-tested).
//! - [`view`]: a group as ACI reports it, and the state rules (pure, table-tested).
//! - [`image_check`]: `InaccessibleImage` at admission, for the registries configured.
//! - [`exec`]: exec and attach: one-time passwords and their WebSocket.
//! - [`tags`]: PATCH of a group's tags.

pub mod arm;
pub mod exec;
pub mod image_check;
pub mod model;
pub mod path;
pub mod routes;
pub mod tags;
pub mod translate;
pub mod view;
