//! A PUT body ([`GroupBody`]) into skiff's [`CreateGroup`], as a pure
//! function ([`to_create_group`]) with its table tests. What ARM has and
//! skiff's group does not keep (the location, the resources as given with
//! their limits, the address type, tags that are no labels) travels in two
//! annotations ([`LOCATION_KEY`], [`EXTRAS_KEY`]) that [`super::view`]
//! reads back. Requests size a member (and are what is metered); limits
//! are checked (never above the requests, as ACI has it) and echoed.

use super::arm::ArmError;
use super::model::{
    Amounts, ContainerBody, CredentialBody, GroupBody, Port, ProbeBody, Resources, VolumeBody,
};
use crate::groups::{CreateGroup, GroupMember};
use crate::http::parse_json;
use crate::model::{
    EmptyDirRequest, MountRequest, RestartPolicyName, SecretVolumeRequest, VolumeRequest,
};
use serde::{Deserialize, Serialize};
use skiff_core::probes::{ExecAction, HttpGetAction};
use skiff_core::{Password, PortRequest, Probe, Protocol, RegistryCredential, SecretEnv};
use std::collections::BTreeMap;

/// The annotation holding the group's `location` (any value, echoed).
pub const LOCATION_KEY: &str = "aci.location";
/// The annotation holding [`Extras`] as JSON.
pub const EXTRAS_KEY: &str = "aci.extras";

/// What an ARM read shows that skiff's group does not keep by itself.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Extras {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_address_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_name_label: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sku: Option<String>,
    /// Each container's `resources` as given, by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub resources: BTreeMap<String, Resources>,
    /// Tags that do not fit skiff's label rules (else they are labels).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<BTreeMap<String, String>>,
}

/// Reads a PUT body; a field of the wrong type is named.
pub fn parse_body(bytes: &[u8]) -> Result<GroupBody, ArmError> {
    parse_json::<GroupBody>(bytes).map_err(|e| match e {
        crate::error::ApiError::Invalid { field, detail } => {
            ArmError::invalid(field.clone(), format!("{field}: {detail}"))
        }
        other => other.into(),
    })
}

fn unsupported(target: &str, what: &str) -> ArmError {
    ArmError::invalid(
        target,
        format!("{target}: {what} are not supported by skiff"),
    )
}

fn protocol(target: &str, p: Option<&str>) -> Result<Protocol, ArmError> {
    match p {
        None => Ok(Protocol::Tcp),
        Some(p) if p.eq_ignore_ascii_case("tcp") => Ok(Protocol::Tcp),
        Some(p) if p.eq_ignore_ascii_case("udp") => Ok(Protocol::Udp),
        Some(p) => Err(ArmError::invalid(
            target,
            format!("{target}: protocol must be TCP or UDP, not {p:?}"),
        )),
    }
}

fn ports(target: &str, ports: &[Port]) -> Result<Vec<PortRequest>, ArmError> {
    ports
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let t = format!("{target}[{i}]");
            let port = u16::try_from(p.port)
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| {
                    ArmError::invalid(format!("{t}.port"), format!("{t}.port must be 1 to 65535"))
                })?;
            Ok(PortRequest {
                port,
                protocol: protocol(&format!("{t}.protocol"), p.protocol.as_deref())?,
                host_port: None,
            })
        })
        .collect()
}

fn seconds(target: &str, v: Option<i64>, default: u32) -> Result<u32, ArmError> {
    match v {
        None => Ok(default),
        Some(v) => u32::try_from(v)
            .map_err(|_| ArmError::invalid(target, format!("{target} must not be negative"))),
    }
}

fn probe(target: &str, p: &ProbeBody) -> Result<Probe, ArmError> {
    if p.success_threshold.is_some_and(|n| n != 1) {
        return Err(ArmError::invalid(
            format!("{target}.successThreshold"),
            format!("{target}.successThreshold must be 1 (skiff passes a probe on one success)"),
        ));
    }
    let http_get = match &p.http_get {
        None => None,
        Some(h) => {
            if h.scheme
                .as_deref()
                .is_some_and(|s| !s.eq_ignore_ascii_case("http"))
            {
                return Err(unsupported(
                    &format!("{target}.httpGet.scheme"),
                    "HTTPS probes",
                ));
            }
            if h.http_headers.as_ref().is_some_and(|v| !v.is_empty()) {
                return Err(unsupported(
                    &format!("{target}.httpGet.httpHeaders"),
                    "probe headers",
                ));
            }
            Some(HttpGetAction {
                port: u32::try_from(h.port).unwrap_or(0),
                path: h.path.clone().unwrap_or_else(|| "/".into()),
            })
        }
    };
    Ok(Probe {
        exec: p.exec.as_ref().map(|e| ExecAction {
            command: e.command.clone(),
        }),
        http_get,
        tcp_socket: None,
        initial_delay_s: seconds(
            &format!("{target}.initialDelaySeconds"),
            p.initial_delay_seconds,
            0,
        )?,
        period_s: seconds(&format!("{target}.periodSeconds"), p.period_seconds, 10)?,
        timeout_s: seconds(&format!("{target}.timeoutSeconds"), p.timeout_seconds, 1)?,
        failure_threshold: seconds(
            &format!("{target}.failureThreshold"),
            p.failure_threshold,
            3,
        )?,
    })
}

fn amounts(target: &str, a: Option<&Amounts>) -> Result<(f64, f64), ArmError> {
    let a = a.ok_or_else(|| ArmError::invalid(target, format!("{target} is required")))?;
    if a.gpu.is_some() {
        return Err(unsupported(&format!("{target}.gpu"), "GPUs"));
    }
    let cpu = a.cpu.ok_or_else(|| {
        ArmError::invalid(format!("{target}.cpu"), format!("{target}.cpu is required"))
    })?;
    let gb = a.memory_in_gb.ok_or_else(|| {
        ArmError::invalid(
            format!("{target}.memoryInGB"),
            format!("{target}.memoryInGB is required"),
        )
    })?;
    Ok((cpu, gb))
}

fn member(i: usize, c: &ContainerBody) -> Result<GroupMember, ArmError> {
    let t = format!("properties.containers[{i}].properties");
    let p = &c.properties;
    if p.security_context.is_some() {
        return Err(unsupported(
            &format!("{t}.securityContext"),
            "security contexts",
        ));
    }
    let (cpu, gb) = amounts(
        &format!("{t}.resources.requests"),
        p.resources.requests.as_ref(),
    )?;
    if p.resources.limits.is_some() {
        let (lcpu, lgb) = amounts(
            &format!("{t}.resources.limits"),
            p.resources.limits.as_ref(),
        )?;
        if lcpu > cpu || lgb > gb {
            return Err(ArmError::invalid(
                format!("{t}.resources.limits"),
                format!("{t}.resources.limits must not exceed the requests"),
            ));
        }
    }
    if !(gb.is_finite() && gb > 0.0) {
        return Err(ArmError::invalid(
            format!("{t}.resources.requests.memoryInGB"),
            format!("{t}.resources.requests.memoryInGB must be a positive number"),
        ));
    }
    let mut env = BTreeMap::new();
    let mut secure = BTreeMap::new();
    for (j, e) in p.environment_variables.iter().flatten().enumerate() {
        let target = format!("{t}.environmentVariables[{j}]");
        if env.contains_key(&e.name) || secure.contains_key(&e.name) {
            return Err(ArmError::invalid(
                target,
                format!("{:?} is set twice", e.name),
            ));
        }
        match (&e.value, &e.secure_value) {
            (Some(_), Some(_)) => {
                return Err(ArmError::invalid(
                    target.clone(),
                    format!("{target}: give value or secureValue, not both"),
                ))
            }
            (_, Some(s)) => {
                secure.insert(e.name.clone(), s.clone());
            }
            (v, None) => {
                env.insert(e.name.clone(), v.clone().unwrap_or_default());
            }
        }
    }
    Ok(GroupMember {
        name: c.name.clone(),
        image: p.image.clone(),
        command: p.command.clone().filter(|c| !c.is_empty()),
        env: (!env.is_empty()).then_some(env),
        secure_env: (!secure.is_empty()).then_some(SecretEnv(secure)),
        cpu,
        memory_mib: (gb * 1024.0).round() as u64,
        ports: match &p.ports {
            Some(list) if !list.is_empty() => Some(ports(&format!("{t}.ports"), list)?),
            _ => None,
        },
        mounts: p.volume_mounts.as_ref().filter(|m| !m.is_empty()).map(|m| {
            m.iter()
                .map(|m| MountRequest {
                    volume: m.name.clone(),
                    path: m.mount_path.clone(),
                    read_only: m.read_only,
                })
                .collect()
        }),
        liveness_probe: p
            .liveness_probe
            .as_ref()
            .map(|x| probe(&format!("{t}.livenessProbe"), x))
            .transpose()?,
        readiness_probe: p
            .readiness_probe
            .as_ref()
            .map(|x| probe(&format!("{t}.readinessProbe"), x))
            .transpose()?,
    })
}

fn volume(i: usize, v: &VolumeBody) -> Result<VolumeRequest, ArmError> {
    let t = format!("properties.volumes[{i}]");
    if v.azure_file.is_some() {
        return Err(unsupported(
            &format!("{t}.azureFile"),
            "Azure Files volumes",
        ));
    }
    if v.git_repo.is_some() {
        return Err(unsupported(
            &format!("{t}.gitRepo"),
            "git repository volumes",
        ));
    }
    match (&v.empty_dir, &v.secret) {
        (Some(_), None) => Ok(VolumeRequest {
            name: v.name.clone(),
            empty_dir: Some(EmptyDirRequest {
                size_mib: None,
                medium: None,
            }),
            secret: None,
        }),
        (None, Some(files)) => Ok(VolumeRequest {
            name: v.name.clone(),
            empty_dir: None,
            secret: Some(SecretVolumeRequest {
                files: files.clone(),
            }),
        }),
        _ => Err(ArmError::invalid(
            t.clone(),
            format!("{t}: give exactly one of emptyDir and secret"),
        )),
    }
}

fn credential(i: usize, c: &CredentialBody) -> Result<RegistryCredential, ArmError> {
    let t = format!("properties.imageRegistryCredentials[{i}]");
    if c.identity.is_some() || c.identity_url.is_some() {
        return Err(unsupported(&format!("{t}.identity"), "managed identities"));
    }
    match (&c.username, &c.password) {
        (Some(u), Some(p)) => Ok(RegistryCredential {
            server: c.server.clone(),
            username: u.clone(),
            password: Password::new(p.clone()),
        }),
        _ => Err(ArmError::invalid(
            t.clone(),
            format!("{t}: username and password are required"),
        )),
    }
}

/// The group a PUT asks for, named `name` in resource group
/// `resource_group`. Refuses, naming the field, what skiff cannot do.
pub fn to_create_group(
    name: &str,
    resource_group: &str,
    body: GroupBody,
) -> Result<CreateGroup, ArmError> {
    use axum::http::StatusCode;
    let location = body
        .location
        .filter(|l| !l.trim().is_empty())
        .ok_or_else(|| {
            ArmError::new(
                StatusCode::BAD_REQUEST,
                "LocationRequired",
                "The location property is required for this definition.",
            )
        })?;
    if body.identity.is_some() {
        return Err(unsupported("identity", "managed identities"));
    }
    if body.zones.as_ref().is_some_and(|z| !z.is_empty()) {
        return Err(unsupported("zones", "availability zones"));
    }
    let p = body
        .properties
        .ok_or_else(|| ArmError::invalid("properties", "properties is required"))?;
    match p.os_type.as_deref() {
        Some(os) if os.eq_ignore_ascii_case("linux") => {}
        Some(os) if os.eq_ignore_ascii_case("windows") => {
            return Err(ArmError::new(
                StatusCode::BAD_REQUEST,
                "UnsupportedOsType",
                "properties.osType: Windows containers are not supported: skiff runs Linux containers only.",
            )
            .at("properties.osType"))
        }
        Some(os) => {
            return Err(ArmError::invalid(
                "properties.osType",
                format!("properties.osType must be Linux, not {os:?}"),
            ))
        }
        None => return Err(ArmError::invalid("properties.osType", "properties.osType is required")),
    }
    #[rustfmt::skip]
    let refused = [
        (p.init_containers.as_ref().is_some_and(|v| !v.is_empty()), "properties.initContainers", "init containers"),
        (p.subnet_ids.as_ref().is_some_and(|v| !v.is_empty()), "properties.subnetIds", "virtual network subnets"),
        (p.dns_config.is_some(), "properties.dnsConfig", "DNS configurations"),
        (p.diagnostics.is_some(), "properties.diagnostics", "Log Analytics diagnostics"),
        (p.encryption_properties.is_some(), "properties.encryptionProperties", "customer-managed keys"),
        (p.extensions.as_ref().is_some_and(|v| !v.is_empty()), "properties.extensions", "extensions"),
        (p.confidential_compute_properties.is_some(), "properties.confidentialComputeProperties", "confidential containers"),
        (p.priority.as_deref().is_some_and(|v| !v.eq_ignore_ascii_case("regular")), "properties.priority", "Spot priorities"),
    ];
    if let Some((_, target, what)) = refused.iter().find(|(bad, _, _)| *bad) {
        return Err(unsupported(target, what));
    }
    let sku = match p.sku.as_deref() {
        None => None,
        Some(s) if s.eq_ignore_ascii_case("standard") => Some("Standard".to_owned()),
        Some(s) => {
            return Err(ArmError::invalid(
                "properties.sku",
                format!("properties.sku must be Standard, not {s:?}"),
            ))
        }
    };
    let restart_policy = match p.restart_policy.as_deref() {
        None => None,
        Some(r) if r.eq_ignore_ascii_case("always") => Some(RestartPolicyName::Always),
        Some(r) if r.eq_ignore_ascii_case("onfailure") => Some(RestartPolicyName::OnFailure),
        Some(r) if r.eq_ignore_ascii_case("never") => Some(RestartPolicyName::Never),
        Some(r) => {
            return Err(ArmError::invalid(
                "properties.restartPolicy",
                format!("properties.restartPolicy must be Always, OnFailure or Never, not {r:?}"),
            ))
        }
    };
    let containers = p.containers.unwrap_or_default();
    if containers.is_empty() {
        return Err(ArmError::invalid(
            "properties.containers",
            "properties.containers must hold at least one container",
        ));
    }
    let members = containers
        .iter()
        .enumerate()
        .map(|(i, c)| member(i, c))
        .collect::<Result<Vec<_>, _>>()?;
    let mut extras = Extras {
        sku,
        resources: containers
            .iter()
            .map(|c| (c.name.clone(), c.properties.resources.clone()))
            .collect(),
        ..Extras::default()
    };
    let mut group_ports = None;
    if let Some(ip) = &p.ip_address {
        extras.ip_address_type = match ip.type_.as_deref() {
            Some(t) if t.eq_ignore_ascii_case("public") => Some("Public".into()),
            Some(t) if t.eq_ignore_ascii_case("private") => Some("Private".into()),
            Some(t) => {
                return Err(ArmError::invalid(
                    "properties.ipAddress.type",
                    format!("properties.ipAddress.type must be Public or Private, not {t:?}"),
                ))
            }
            None => Some("Public".into()),
        };
        extras.dns_name_label = ip.dns_name_label.clone();
        let published = ports(
            "properties.ipAddress.ports",
            ip.ports.as_deref().unwrap_or_default(),
        )?;
        for (i, port) in published.iter().enumerate() {
            let exposed = members
                .iter()
                .flat_map(|m| m.ports.iter().flatten())
                .any(|c| (c.port, c.protocol) == (port.port, port.protocol));
            if !exposed {
                let t = format!("properties.ipAddress.ports[{i}]");
                return Err(ArmError::invalid(
                    t.clone(),
                    format!("{t}: port {} is not among any container's ports", port.port),
                ));
            }
        }
        group_ports = (!published.is_empty()).then_some(published);
    }
    let tags = body.tags.unwrap_or_default();
    let labels = if skiff_core::validate_labels("tags", &tags).is_ok()
        && !tags.keys().any(|k| k.starts_with("skiff."))
    {
        tags
    } else {
        extras.tags = Some(tags);
        BTreeMap::new()
    };
    let volumes = p
        .volumes
        .as_ref()
        .filter(|v| !v.is_empty())
        .map(|v| {
            v.iter()
                .enumerate()
                .map(|(i, v)| volume(i, v))
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()?;
    let credentials = p
        .image_registry_credentials
        .as_ref()
        .filter(|c| !c.is_empty())
        .map(|c| {
            c.iter()
                .enumerate()
                .map(|(i, c)| credential(i, c))
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()?;
    let extras_json = serde_json::to_string(&extras).map_err(crate::error::ApiError::internal)?;
    Ok(CreateGroup {
        name: Some(name.to_owned()),
        namespace: Some(resource_group.to_owned()),
        containers: members,
        restart_policy,
        ports: group_ports,
        volumes,
        labels: (!labels.is_empty()).then_some(labels),
        annotations: Some(BTreeMap::from([
            (LOCATION_KEY.to_owned(), location),
            (EXTRAS_KEY.to_owned(), extras_json),
        ])),
        network_group: None,
        max_pending_s: None,
        placement: None,
        image_registry_credentials: credentials,
    })
}

#[cfg(test)]
#[path = "translate_tests.rs"]
mod tests;
