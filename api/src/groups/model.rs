//! A container group's request and view: what `POST /v1/groups` takes (and
//! the ACI layer builds), its validation into one [`NewContainer`] per
//! member, and the object the API shows.

use crate::http::schemas;
use crate::model::{
    ContainerView, CreateContainer, MountRequest, NewContainer, PlacementRequest, PortView,
    RestartPolicyName, VolumeRequest,
};
use serde::{Deserialize, Serialize};
use skiff_core::{
    FieldError, GroupState, NetworkMode, PortRequest, Probe, RegistryCredential, RestartPolicy,
    SecretEnv, VolumeSource,
};
use std::collections::BTreeMap;
use utoipa::ToSchema;
use uuid::Uuid;

/// The label every member carries: its group's id.
pub const GROUP_LABEL: &str = "skiff.group";
/// The label every member carries: its name within the group.
pub const MEMBER_LABEL: &str = "skiff.group-member";
/// The namespace of a group created without one.
pub const DEFAULT_NAMESPACE: &str = "default";
/// At most this many annotations, of at most this many bytes in all.
pub const MAX_ANNOTATIONS: usize = 16;
pub const MAX_ANNOTATION_BYTES: usize = 4096;
/// A group's own labels: every member carries two more of the server's.
pub const MAX_GROUP_LABELS: usize = skiff_core::MAX_LABELS - 2;

/// Body of `POST /v1/groups`: containers placed on one host together,
/// sharing one network namespace (localhost), address, published ports
/// and volumes.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateGroup {
    /// Unique within the tenant's namespace, a DNS label; generated when absent.
    #[schema(pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", max_length = 63)]
    pub name: Option<String>,
    /// A namespace inside the tenant (ACI's resource group): 1 to 90 of
    /// letters, digits, '_', '-', '.', '(' and ')', not ending in '.';
    /// compared case-insensitively. Default `default`.
    #[schema(
        pattern = r"^[-A-Za-z0-9_.()]{0,89}[-A-Za-z0-9_()]$",
        min_length = 1,
        max_length = 90
    )]
    pub namespace: Option<String>,
    /// 1 to 10 containers, each name once.
    #[schema(min_items = 1, max_items = 10)]
    pub containers: Vec<GroupMember>,
    /// Every member's restart policy (default `always`).
    pub restart_policy: Option<RestartPolicyName>,
    /// Ports the group publishes on its host (its members share them).
    #[schema(schema_with = schemas::port_requests)]
    pub ports: Option<Vec<PortRequest>>,
    /// Volumes its members may mount (shared by them).
    #[schema(max_items = 16)]
    pub volumes: Option<Vec<VolumeRequest>>,
    #[schema(schema_with = schemas::group_labels_map)]
    pub labels: Option<BTreeMap<String, String>>,
    /// Free-form strings kept and returned unchanged (at most 16, 4 KiB in all).
    #[schema(schema_with = schemas::annotations)]
    pub annotations: Option<BTreeMap<String, String>>,
    /// Groups (and containers) of this tenant naming the same network
    /// group reach each other.
    #[schema(pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", max_length = 63)]
    pub network_group: Option<String>,
    #[schema(minimum = 1, maximum = 86400)]
    pub max_pending_s: Option<u32>,
    pub placement: Option<PlacementRequest>,
    /// Never serialized: see [`crate::http::registry_credentials`].
    #[serde(skip_serializing)]
    #[schema(schema_with = crate::http::registry_credentials::request_credentials_schema)]
    pub image_registry_credentials: Option<Vec<RegistryCredential>>,
}

/// One container of a group.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupMember {
    /// Unique within the group, `[a-z0-9-]{1,63}`.
    #[schema(pattern = "^[a-z0-9-]{1,63}$")]
    pub name: String,
    #[schema(schema_with = schemas::image)]
    pub image: String,
    #[schema(schema_with = schemas::command)]
    pub command: Option<Vec<String>>,
    #[schema(schema_with = schemas::env_map)]
    pub env: Option<BTreeMap<String, String>>,
    #[schema(schema_with = schemas::env_map)]
    pub secure_env: Option<SecretEnv>,
    #[schema(minimum = 0.1, maximum = 4, multiple_of = 0.01)]
    pub cpu: f64,
    #[schema(minimum = 64, maximum = 16384)]
    pub memory_mib: u64,
    /// Ports it listens on (informational: the group's `ports` publish).
    #[schema(schema_with = schemas::port_requests)]
    pub ports: Option<Vec<PortRequest>>,
    #[schema(max_items = 16)]
    pub mounts: Option<Vec<MountRequest>>,
    pub liveness_probe: Option<Probe>,
    pub readiness_probe: Option<Probe>,
}

/// A validated group request.
#[derive(Debug, Clone)]
pub struct NewGroup {
    pub id: Uuid,
    pub name: String,
    pub namespace: String,
    pub restart_policy: RestartPolicy,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// The request as stored (secure values and credentials left out).
    pub spec: CreateGroup,
    /// One container per member, in the request's order.
    pub members: Vec<NewContainer>,
}

/// A group as the API shows it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct GroupView {
    pub id: Uuid,
    pub name: String,
    pub namespace: String,
    #[schema(value_type = String)]
    pub state: GroupState,
    #[schema(value_type = RestartPolicyName)]
    pub restart_policy: RestartPolicy,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// Its published ports, with host ports while it holds them.
    pub ports: Vec<PortView>,
    /// Its members' shared address on the host's bridge while one runs.
    pub ip: Option<String>,
    pub volumes: Vec<VolumeSource>,
    /// The host it is placed on (null while waiting).
    pub host_id: Option<String>,
    pub containers: Vec<MemberView>,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// A member of a group: its name in the group, the ports it listens on,
/// and its container.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct MemberView {
    pub name: String,
    #[schema(schema_with = schemas::port_requests)]
    pub ports: Vec<PortRequest>,
    pub container: ContainerView,
}

/// Paginated groups.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct GroupList {
    pub items: Vec<GroupView>,
    /// Cursor for the next page; absent on the last.
    pub next: Option<String>,
}

/// Fields of a member that a member's error names as `containers[i].<field>`.
const MEMBER_FIELDS: [&str; 10] = [
    "name",
    "image",
    "command",
    "env",
    "secure_env",
    "cpu",
    "memory_mib",
    "mounts",
    "liveness_probe",
    "readiness_probe",
];

fn member_field(i: usize, mut e: FieldError) -> FieldError {
    let head = e
        .field
        .split(['.', '['])
        .next()
        .unwrap_or_default()
        .to_owned();
    if MEMBER_FIELDS.contains(&head.as_str()) {
        e.field = format!("containers[{i}].{}", e.field);
    }
    e
}

/// A namespace: 1 to 90 of letters, digits, '_', '-', '.', '(' and ')',
/// not ending in '.' (ARM's resource group names).
pub fn check_namespace(ns: &str) -> Result<(), FieldError> {
    let ok = !ns.is_empty()
        && ns.len() <= 90
        && !ns.ends_with('.')
        && ns
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.()".contains(c));
    if ok {
        Ok(())
    } else {
        Err(FieldError::new(
            "namespace",
            "must be 1 to 90 of letters, digits, '_', '-', '.', '(' and ')', not ending in '.'",
        ))
    }
}

/// At most [`MAX_ANNOTATIONS`] entries and [`MAX_ANNOTATION_BYTES`] in all, no NUL.
pub fn check_annotations(a: &BTreeMap<String, String>) -> Result<(), FieldError> {
    let bytes: usize = a.iter().map(|(k, v)| k.len() + v.len()).sum();
    if a.len() > MAX_ANNOTATIONS || bytes > MAX_ANNOTATION_BYTES {
        return Err(FieldError::new(
            "annotations",
            format!("at most {MAX_ANNOTATIONS} entries and {MAX_ANNOTATION_BYTES} bytes in all"),
        ));
    }
    if a.iter().any(|(k, v)| k.contains('\0') || v.contains('\0')) {
        return Err(FieldError::new("annotations", "must not contain NUL"));
    }
    Ok(())
}

/// A group's own labels: the label rules, room for the server's two, and
/// neither of those.
pub fn check_labels(labels: &BTreeMap<String, String>) -> Result<(), FieldError> {
    skiff_core::validate_labels("labels", labels)?;
    if labels.len() > MAX_GROUP_LABELS {
        return Err(FieldError::new(
            "labels",
            format!("at most {MAX_GROUP_LABELS} on a group (its containers carry two more)"),
        ));
    }
    for key in [GROUP_LABEL, MEMBER_LABEL] {
        if labels.contains_key(key) {
            return Err(FieldError::new(
                format!("labels.{key}"),
                "is set by the server on every member",
            ));
        }
    }
    Ok(())
}

impl CreateGroup {
    /// Checks the group's own rules, then each member as a container made
    /// of its fields and the group's (errors name `containers[i].<field>`
    /// for a member's own fields).
    pub fn validate(self, default_max_pending_s: u32) -> Result<NewGroup, FieldError> {
        let id = Uuid::now_v7();
        let name = match &self.name {
            Some(name) => {
                if !skiff_core::network::is_dns_label(name) {
                    return Err(FieldError::new(
                        "name",
                        "must be a DNS label: 1 to 63 of a-z, 0-9 and '-', starting and ending with a letter or digit",
                    ));
                }
                name.clone()
            }
            None => format!("g-{}", &id.simple().to_string()[20..]),
        };
        let namespace = self
            .namespace
            .clone()
            .unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned());
        check_namespace(&namespace)?;
        let names: Vec<&str> = self.containers.iter().map(|m| m.name.as_str()).collect();
        skiff_core::groups::validate_members(&names)?;
        let annotations = self.annotations.clone().unwrap_or_default();
        check_annotations(&annotations)?;
        let mut labels = self.labels.clone().unwrap_or_default();
        check_labels(&labels)?;
        let restart_policy: RestartPolicy = self
            .restart_policy
            .map(Into::into)
            .unwrap_or(RestartPolicy::Always);
        labels.insert(GROUP_LABEL.to_owned(), id.to_string());
        let mut members = Vec::with_capacity(self.containers.len());
        for (i, m) in self.containers.iter().enumerate() {
            let mut member_labels = labels.clone();
            member_labels.insert(MEMBER_LABEL.to_owned(), m.name.clone());
            for (j, p) in m.ports.iter().flatten().enumerate() {
                if p.host_port.is_some() {
                    return Err(FieldError::new(
                        format!("containers[{i}].ports[{j}].host_port"),
                        "a group's own ports publish; a container's only say what it listens on",
                    ));
                }
            }
            let c = CreateContainer {
                name: Some(m.name.clone()),
                image: m.image.clone(),
                command: m.command.clone(),
                env: m.env.clone(),
                secure_env: m.secure_env.clone(),
                cpu: m.cpu,
                memory_mib: m.memory_mib,
                restart_policy: self.restart_policy,
                max_restarts: None,
                stop_timeout_s: None,
                timeout_s: None,
                max_cost: None,
                notify_url: None,
                labels: Some(member_labels),
                max_pending_s: self.max_pending_s,
                placement: self.placement.clone(),
                network: Some(NetworkMode::Private),
                network_group: self.network_group.clone(),
                read_only_rootfs: None,
                ports: self.ports.clone(),
                volumes: self.volumes.clone(),
                mounts: m.mounts.clone(),
                liveness_probe: m.liveness_probe.clone(),
                readiness_probe: m.readiness_probe.clone(),
                image_registry_credentials: self.image_registry_credentials.clone(),
            };
            let mut new = c
                .validate(default_max_pending_s)
                .map_err(|e| member_field(i, e))?;
            new.restart_policy = restart_policy;
            members.push(new);
        }
        // Kept: the request without what must never be stored in the clear.
        let mut spec = self;
        spec.image_registry_credentials = None;
        for m in &mut spec.containers {
            if let Some(secure) = &mut m.secure_env {
                for v in secure.0.values_mut() {
                    v.clear();
                }
            }
        }
        for v in spec.volumes.iter_mut().flatten() {
            if let Some(secret) = &mut v.secret {
                for content in secret.files.values_mut() {
                    content.clear();
                }
            }
        }
        Ok(NewGroup {
            id,
            name,
            namespace,
            restart_policy,
            labels: spec.labels.clone().unwrap_or_default(),
            annotations,
            spec,
            members,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str) -> GroupMember {
        GroupMember {
            name: name.into(),
            image: "127.0.0.1:5000/skiff/busybox:latest".into(),
            command: None,
            env: None,
            secure_env: None,
            cpu: 0.25,
            memory_mib: 128,
            ports: None,
            mounts: None,
            liveness_probe: None,
            readiness_probe: None,
        }
    }

    fn group(members: Vec<GroupMember>) -> CreateGroup {
        CreateGroup {
            name: Some("web".into()),
            namespace: None,
            containers: members,
            restart_policy: None,
            ports: None,
            volumes: None,
            labels: None,
            annotations: None,
            network_group: None,
            max_pending_s: None,
            placement: None,
            image_registry_credentials: None,
        }
    }

    #[test]
    fn each_member_is_a_private_container_labelled_with_its_group() {
        let g = group(vec![member("app"), member("sidecar")])
            .validate(60)
            .expect("control: valid");
        assert_eq!(g.namespace, DEFAULT_NAMESPACE);
        assert_eq!(g.restart_policy, RestartPolicy::Always);
        assert_eq!(g.members.len(), 2);
        for (m, name) in g.members.iter().zip(["app", "sidecar"]) {
            assert_eq!(m.name, name);
            assert_eq!(m.network, NetworkMode::Private);
            assert_eq!(m.restart_policy, RestartPolicy::Always);
            assert_eq!(m.labels[GROUP_LABEL], g.id.to_string());
            assert_eq!(m.labels[MEMBER_LABEL], name);
        }
        assert!(
            !g.labels.contains_key(GROUP_LABEL),
            "the group's own labels"
        );
    }

    #[test]
    fn errors_name_the_member_or_the_group_field() {
        let mut bad = member("app");
        bad.cpu = 99.0;
        let e = group(vec![member("ok"), bad]).validate(60).unwrap_err();
        assert_eq!(e.field, "containers[1].cpu");

        let mut g = group(vec![member("app")]);
        g.ports = Some(vec![PortRequest {
            port: 0,
            protocol: Default::default(),
            host_port: None,
        }]);
        let e = g.validate(60).unwrap_err();
        assert!(e.field.starts_with("ports"), "{e:?}");

        let mut g = group(vec![member("app")]);
        g.namespace = Some("bad/ns".into());
        assert_eq!(g.validate(60).unwrap_err().field, "namespace");

        let mut g = group(vec![member("app")]);
        g.name = Some("Bad_Name".into());
        assert_eq!(g.validate(60).unwrap_err().field, "name");

        let e = group(vec![member("a"), member("a")])
            .validate(60)
            .unwrap_err();
        assert_eq!(e.field, "containers[1].name");
    }

    #[test]
    fn secure_values_are_not_kept_in_the_stored_spec() {
        let mut m = member("app");
        m.secure_env = Some(SecretEnv(BTreeMap::from([("K".into(), "hush".into())])));
        let g = group(vec![m]).validate(60).unwrap();
        assert_eq!(g.members[0].secure_env.0["K"], "hush", "the member has it");
        let stored = serde_json::to_string(&g.spec).unwrap();
        assert!(!stored.contains("hush"), "{stored}");
    }
}
