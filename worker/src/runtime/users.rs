//! The user a container's process runs as, from its image's `USER`: as
//! given when it is `uid:gid`, else looked up in the image's own
//! `/etc/passwd` and `/etc/group` ([`super::spec::user`]), read from a
//! temporary view of its top snapshot ([`super::spec::rootfs`]). An
//! image's files never change, so a lookup is made once per (image digest,
//! `USER`): a burst of one image's tasks costs containerd nothing more.

use super::containerd::{containerd_err, ContainerdRuntime};
use super::pull::SNAPSHOTTER;
use super::spec::rootfs;
use super::spec::user::{ImageUser, Parsed, ProcessUser};
use super::{RunSpec, RuntimeError};
use containerd_client::services::v1::snapshots::{RemoveSnapshotRequest, ViewSnapshotRequest};
use std::collections::HashMap;
use tracing::warn;

impl ContainerdRuntime {
    /// The process user of `spec`'s container.
    pub(super) async fn process_user(&self, spec: &RunSpec) -> Result<ProcessUser, RuntimeError> {
        let id = spec.id.as_str();
        let image_err = |e: &dyn std::fmt::Display| RuntimeError::Spec {
            id: id.to_owned(),
            message: format!("image {}: {e}", spec.image_ref),
        };
        let given = spec.image.defaults.user.as_deref();
        let lookup = match ImageUser::parse(given).map_err(|e| image_err(&e))? {
            Parsed::Known(user) => return Ok(user),
            Parsed::Lookup(user) => user,
        };
        let key = (
            spec.image.digest.clone(),
            given.unwrap_or_default().to_owned(),
        );
        if let Some(user) = self.users.lock().expect("users lock").get(&key) {
            return Ok(user.clone());
        }
        // A view of the top snapshot: its mounts are the image's layer
        // directories (held by the image, not by the view). No lease: a
        // view a crash leaves behind is unreferenced, and GC takes it.
        let view = format!("skiff-user-{id}-{}", uuid::Uuid::new_v4());
        let mounts = self
            .snapshots()
            .view(self.conn_req(ViewSnapshotRequest {
                snapshotter: SNAPSHOTTER.to_owned(),
                key: view.clone(),
                parent: spec.image.top_chain_id.clone(),
                labels: HashMap::new(),
            }))
            .await
            .map_err(containerd_err("Snapshots.View", id))?
            .into_inner()
            .mounts;
        let files = rootfs::read(&mounts, "/etc/passwd")
            .and_then(|p| Ok((p, rootfs::read(&mounts, "/etc/group")?)));
        if let Err(s) = self
            .snapshots()
            .remove(self.conn_req(RemoveSnapshotRequest {
                snapshotter: SNAPSHOTTER.to_owned(),
                key: view,
            }))
            .await
        {
            warn!(error = %s, "removing the view of the image's users");
        }
        let (passwd, group) = files.map_err(|e| image_err(&e))?;
        let user = lookup
            .resolve(passwd.as_deref(), group.as_deref())
            .map_err(|e| image_err(&e))?;
        self.users
            .lock()
            .expect("users lock")
            .insert(key, user.clone());
        Ok(user)
    }
}
