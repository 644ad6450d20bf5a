//! A skiff group ([`GroupView`]) as ACI reports it ([`resource`]), and the
//! state rules as pure functions with table tests: the group's
//! `provisioningState` and `instanceView.state`, each container's
//! `currentState`/`previousState`, and a long-running operation's status.
//! Secure values are never in the answer: skiff's view holds only their
//! names.

use super::model::*;
use super::path::group_id;
use super::translate::{Extras, EXTRAS_KEY, LOCATION_KEY};
use crate::groups::{GroupView, MemberView, GROUP_LABEL, MEMBER_LABEL};
use crate::model::ContainerView;
use crate::store::containers::EventRow;
use chrono::{DateTime, SecondsFormat, Utc};
use skiff_core::{ContainerState, GroupState, Protocol, RestartPolicy};
use std::collections::{BTreeMap, HashMap};
use uuid::Uuid;

pub const RESOURCE_TYPE: &str = "Microsoft.ContainerInstance/containerGroups";

fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Whether any member of the group has had a run start.
fn ever_started(g: &GroupView) -> bool {
    g.containers
        .iter()
        .any(|m| m.container.started_at.is_some() || m.container.restart_count > 0)
}

/// `properties.provisioningState`: `Creating` while the group waits for
/// its first start, `Failed` when it failed before any member ran,
/// `Succeeded` otherwise (a group that ran and then failed was
/// provisioned: its `instanceView.state` says `Failed`).
pub fn provisioning_state(g: &GroupView) -> &'static str {
    match g.state {
        GroupState::Pending => "Creating",
        GroupState::Failed if !ever_started(g) => "Failed",
        _ => "Succeeded",
    }
}

/// `properties.instanceView.state`.
pub fn instance_state(state: GroupState) -> &'static str {
    match state {
        GroupState::Pending => "Pending",
        GroupState::Running => "Running",
        GroupState::Succeeded => "Succeeded",
        GroupState::Failed => "Failed",
        GroupState::Stopped => "Stopped",
    }
}

/// A container's `currentState` and (after a restart) `previousState`.
pub fn container_states(c: &ContainerView) -> (ContainerStateOut, Option<ContainerStateOut>) {
    use ContainerState as S;
    let reason = c.reason.map(|r| r.as_str().to_owned());
    let current = match c.state {
        S::Pending | S::Scheduled | S::Pulling | S::Starting => ContainerStateOut {
            state: "Waiting",
            start_time: None,
            exit_code: None,
            finish_time: None,
            detail_status: reason
                .clone()
                .unwrap_or_else(|| c.state.as_str().to_owned()),
        },
        S::Running | S::Stopping => ContainerStateOut {
            state: "Running",
            start_time: c.started_at.map(time),
            exit_code: None,
            finish_time: None,
            detail_status: String::new(),
        },
        S::Succeeded | S::Failed | S::Stopped => ContainerStateOut {
            state: "Terminated",
            start_time: c.started_at.map(time),
            exit_code: c.exit_code,
            finish_time: c.finished_at.map(time),
            detail_status: reason.clone().unwrap_or_default(),
        },
    };
    let previous =
        (c.restart_count > 0 && current.state != "Terminated").then(|| ContainerStateOut {
            state: "Terminated",
            start_time: None,
            exit_code: c.exit_code,
            finish_time: c.finished_at.map(time),
            detail_status: reason.unwrap_or_default(),
        });
    (current, previous)
}

/// A long-running operation's `status`, from its group now (None: the
/// group is gone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpStatus {
    InProgress,
    Succeeded,
    Failed { code: &'static str, message: String },
    Canceled,
}

impl OpStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::InProgress => "InProgress",
            Self::Succeeded => "Succeeded",
            Self::Failed { .. } => "Failed",
            Self::Canceled => "Canceled",
        }
    }
}

pub fn operation_status(g: Option<&GroupView>) -> OpStatus {
    let Some(g) = g else {
        return OpStatus::Canceled;
    };
    match provisioning_state(g) {
        "Creating" => OpStatus::InProgress,
        "Failed" => {
            let failed = g
                .containers
                .iter()
                .find(|m| m.container.state == ContainerState::Failed);
            let (code, message) = match failed {
                Some(m) => {
                    let c = &m.container;
                    let code = match c.reason {
                        Some(skiff_core::Reason::ImagePullFailed) => "InaccessibleImage",
                        Some(skiff_core::Reason::NoCapacity) => "ResourceUnavailable",
                        _ => "ContainerGroupFailed",
                    };
                    let why = c
                        .message
                        .clone()
                        .or(c.reason.map(|r| r.as_str().to_owned()));
                    (
                        code,
                        format!(
                            "Container '{}' failed: {}",
                            m.name,
                            why.unwrap_or_else(|| "no reason given".into())
                        ),
                    )
                }
                None => ("ContainerGroupFailed", "The container group failed.".into()),
            };
            OpStatus::Failed { code, message }
        }
        _ => OpStatus::Succeeded,
    }
}

fn port_out(port: u16, protocol: Protocol) -> Port {
    Port {
        protocol: Some(protocol.as_str().to_ascii_uppercase()),
        port: i64::from(port),
    }
}

fn probe_out(p: &skiff_core::Probe) -> ProbeBody {
    ProbeBody {
        exec: p.exec.as_ref().map(|e| ProbeExec {
            command: e.command.clone(),
        }),
        http_get: p.http_get.as_ref().map(|h| HttpGet {
            path: Some(h.path.clone()),
            port: i64::from(h.port),
            scheme: Some("http".into()),
            http_headers: None,
        }),
        initial_delay_seconds: Some(i64::from(p.initial_delay_s)),
        period_seconds: Some(i64::from(p.period_s)),
        failure_threshold: Some(i64::from(p.failure_threshold)),
        success_threshold: Some(1),
        timeout_seconds: Some(i64::from(p.timeout_s)),
    }
}

fn event_type(kind: &str) -> &'static str {
    const WARNINGS: [&str; 6] = ["Fail", "BackOff", "Kill", "OOM", "Lost", "Unhealthy"];
    if WARNINGS.iter().any(|w| kind.contains(w)) {
        "Warning"
    } else {
        "Normal"
    }
}

fn events_out(rows: &[EventRow]) -> Vec<Event> {
    rows.iter()
        .map(|e| Event {
            count: 1,
            first_timestamp: time(e.at),
            last_timestamp: time(e.at),
            name: e.kind.clone(),
            message: e.message.clone(),
            type_: event_type(&e.kind),
        })
        .collect()
}

fn container_out(m: &MemberView, extras: &Extras, events: &[EventRow]) -> ContainerOut {
    let c = &m.container;
    let (current, previous) = container_states(c);
    let mut env: Vec<EnvVar> = c
        .env
        .iter()
        .map(|(k, v)| EnvVar {
            name: k.clone(),
            value: Some(v.clone()),
            secure_value: None,
        })
        .collect();
    env.extend(c.secure_env_keys.iter().map(|k| EnvVar {
        name: k.clone(),
        value: None,
        secure_value: None,
    }));
    let resources = extras.resources.get(&m.name).cloned().unwrap_or(Resources {
        requests: Some(Amounts {
            memory_in_gb: Some(f64::from(c.memory_mib) / 1024.0),
            cpu: Some(c.cpu),
            gpu: None,
        }),
        limits: None,
    });
    ContainerOut {
        name: m.name.clone(),
        properties: ContainerPropertiesOut {
            image: c.image.clone(),
            command: c.command.clone(),
            ports: m
                .ports
                .iter()
                .map(|p| port_out(p.port, p.protocol))
                .collect(),
            environment_variables: env,
            resources,
            volume_mounts: c
                .mounts
                .iter()
                .map(|v| VolumeMount {
                    name: v.volume.clone(),
                    mount_path: v.path.clone(),
                    read_only: Some(v.read_only),
                })
                .collect(),
            liveness_probe: c.liveness_probe.as_ref().map(probe_out),
            readiness_probe: c.readiness_probe.as_ref().map(probe_out),
            instance_view: ContainerInstanceView {
                restart_count: c.restart_count,
                current_state: current,
                previous_state: previous,
                events: events_out(events),
            },
        },
    }
}

/// The group as an ARM resource of `subscription`; `events` holds each
/// member container's events by id.
pub fn resource(
    subscription: &str,
    g: &GroupView,
    events: &HashMap<Uuid, Vec<EventRow>>,
) -> GroupResource {
    let extras: Extras = g
        .annotations
        .get(EXTRAS_KEY)
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or_default();
    let tags = extras.tags.clone().unwrap_or_else(|| {
        g.labels
            .iter()
            .filter(|(k, _)| k.as_str() != GROUP_LABEL && k.as_str() != MEMBER_LABEL)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    });
    let no_events = Vec::new();
    let containers: Vec<ContainerOut> = g
        .containers
        .iter()
        .map(|m| {
            container_out(
                m,
                &extras,
                events.get(&m.container.id).unwrap_or(&no_events),
            )
        })
        .collect();
    let mut group_events: Vec<(DateTime<Utc>, Event)> = g
        .containers
        .iter()
        .flat_map(|m| {
            events
                .get(&m.container.id)
                .unwrap_or(&no_events)
                .iter()
                .map(move |e| (e.at, m.name.as_str(), e))
        })
        .map(|(at, name, e)| {
            let mut out = events_out(std::slice::from_ref(e)).remove(0);
            out.message = format!("container {name}: {}", out.message);
            (at, out)
        })
        .collect();
    group_events.sort_by_key(|(at, _)| *at);
    let ip_address = (!g.ports.is_empty() || extras.ip_address_type.is_some()).then(|| IpAddress {
        ports: Some(
            g.ports
                .iter()
                .map(|p| port_out(p.port, p.protocol))
                .collect(),
        ),
        type_: Some(
            extras
                .ip_address_type
                .clone()
                .unwrap_or_else(|| "Public".into()),
        ),
        ip: g.ports.iter().find_map(|p| p.host_ip.clone()),
        dns_name_label: extras.dns_name_label.clone(),
    });
    GroupResource {
        id: group_id(subscription, &g.namespace, &g.name),
        name: g.name.clone(),
        type_: RESOURCE_TYPE,
        location: g
            .annotations
            .get(LOCATION_KEY)
            .cloned()
            .unwrap_or_else(|| "local".into()),
        tags,
        properties: GroupOut {
            provisioning_state: provisioning_state(g),
            containers,
            restart_policy: match g.restart_policy {
                RestartPolicy::Always => "Always",
                RestartPolicy::OnFailure => "OnFailure",
                RestartPolicy::Never => "Never",
            },
            os_type: "Linux",
            sku: extras.sku.unwrap_or_else(|| "Standard".into()),
            ip_address,
            volumes: g
                .volumes
                .iter()
                .map(|v| VolumeOut {
                    name: v.name.clone(),
                    empty_dir: v.empty_dir.as_ref().map(|_| serde_json::json!({})),
                    secret: v.secret.as_ref().map(|_| BTreeMap::new()),
                })
                .collect(),
            instance_view: GroupInstanceView {
                state: instance_state(g.state),
                events: group_events.into_iter().map(|(_, e)| e).collect(),
            },
        },
    }
}

#[cfg(test)]
#[path = "view_tests.rs"]
mod tests;
