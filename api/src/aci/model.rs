//! The ARM shapes of a container group (Microsoft.ContainerInstance,
//! api-version 2023-05-01 and its neighbours), as far as skiff maps them:
//! what a PUT body may hold ([`GroupBody`]) and what a read answers
//! ([`GroupResource`]). Fields skiff has no counterpart for are named here
//! so that a request using them is refused by name (see
//! [`super::translate`]); any other unknown field is ignored, as ARM
//! ignores read-only fields sent back.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// A PUT body.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupBody {
    pub location: Option<String>,
    pub tags: Option<BTreeMap<String, String>>,
    pub identity: Option<Value>,
    pub zones: Option<Vec<String>>,
    pub properties: Option<GroupProperties>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupProperties {
    pub containers: Option<Vec<ContainerBody>>,
    pub image_registry_credentials: Option<Vec<CredentialBody>>,
    pub restart_policy: Option<String>,
    pub ip_address: Option<IpAddress>,
    pub os_type: Option<String>,
    pub volumes: Option<Vec<VolumeBody>>,
    pub sku: Option<String>,
    pub init_containers: Option<Vec<Value>>,
    pub subnet_ids: Option<Vec<Value>>,
    pub dns_config: Option<Value>,
    pub diagnostics: Option<Value>,
    pub encryption_properties: Option<Value>,
    pub extensions: Option<Vec<Value>>,
    pub confidential_compute_properties: Option<Value>,
    pub priority: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerBody {
    pub name: String,
    pub properties: ContainerProperties,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerProperties {
    pub image: String,
    pub command: Option<Vec<String>>,
    pub ports: Option<Vec<Port>>,
    pub environment_variables: Option<Vec<EnvVar>>,
    pub resources: Resources,
    pub volume_mounts: Option<Vec<VolumeMount>>,
    pub liveness_probe: Option<ProbeBody>,
    pub readiness_probe: Option<ProbeBody>,
    pub security_context: Option<Value>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Port {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    pub port: i64,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EnvVar {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Write-only: never serialized back.
    #[serde(skip_serializing)]
    pub secure_value: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Resources {
    pub requests: Option<Amounts>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limits: Option<Amounts>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Amounts {
    #[serde(rename = "memoryInGB", skip_serializing_if = "Option::is_none")]
    pub memory_in_gb: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gpu: Option<Value>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VolumeMount {
    pub name: String,
    pub mount_path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_only: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ProbeBody {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exec: Option<ProbeExec>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_get: Option<HttpGet>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initial_delay_seconds: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub period_seconds: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_threshold: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub success_threshold: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<i64>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct ProbeExec {
    pub command: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HttpGet {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    pub port: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_headers: Option<Vec<Value>>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct IpAddress {
    pub ports: Option<Vec<Port>>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    /// Read-only: the host's address while the group holds its ports.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns_name_label: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeBody {
    pub name: String,
    pub azure_file: Option<Value>,
    pub empty_dir: Option<Value>,
    pub secret: Option<BTreeMap<String, String>>,
    pub git_repo: Option<Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CredentialBody {
    pub server: String,
    pub username: Option<String>,
    pub password: Option<String>,
    pub identity: Option<String>,
    pub identity_url: Option<String>,
}

/// A container group as a read answers it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupResource {
    pub id: String,
    pub name: String,
    #[serde(rename = "type")]
    pub type_: &'static str,
    pub location: String,
    pub tags: BTreeMap<String, String>,
    pub properties: GroupOut,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupOut {
    pub provisioning_state: &'static str,
    pub containers: Vec<ContainerOut>,
    pub restart_policy: &'static str,
    pub os_type: &'static str,
    pub sku: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip_address: Option<IpAddress>,
    pub volumes: Vec<VolumeOut>,
    pub instance_view: GroupInstanceView,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeOut {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub empty_dir: Option<Value>,
    /// The file names only: contents are never returned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupInstanceView {
    pub state: &'static str,
    pub events: Vec<Event>,
}

#[derive(Debug, Serialize)]
pub struct ContainerOut {
    pub name: String,
    pub properties: ContainerPropertiesOut,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerPropertiesOut {
    pub image: String,
    pub command: Vec<String>,
    pub ports: Vec<Port>,
    pub environment_variables: Vec<EnvVar>,
    pub resources: Resources,
    pub volume_mounts: Vec<VolumeMount>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub liveness_probe: Option<ProbeBody>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub readiness_probe: Option<ProbeBody>,
    pub instance_view: ContainerInstanceView,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerInstanceView {
    pub restart_count: i32,
    pub current_state: ContainerStateOut,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_state: Option<ContainerStateOut>,
    pub events: Vec<Event>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerStateOut {
    /// Waiting, Running or Terminated.
    pub state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finish_time: Option<String>,
    pub detail_status: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    pub count: i32,
    pub first_timestamp: String,
    pub last_timestamp: String,
    pub name: String,
    pub message: String,
    #[serde(rename = "type")]
    pub type_: &'static str,
}

/// A page of a list.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Page<T> {
    pub value: Vec<T>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_link: Option<String>,
}
