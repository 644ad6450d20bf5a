//! The REST API's JSON shapes, and the validation that turns a request body
//! into a [`NewContainer`] the store can keep.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use skiff_core::{
    validate_env, validate_labels, validate_network, validate_volumes, ContainerName,
    ContainerState, CpuMillis, EmptyDir, FieldError, ImageRef, Medium, MemoryMib, NetworkMode,
    PortRequest, Probe, Protocol, Reason, RestartPolicy, SecretEnv, SecretFiles, SecretPaths,
    VolumeMount, VolumeSource,
};
use std::collections::BTreeMap;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::http::schemas;

pub const DEFAULT_STOP_TIMEOUT_S: u32 = 10;
const MAX_STOP_TIMEOUT_S: u32 = 3600;
/// The longest `timeout_s` (7 days).
const MAX_TIMEOUT_S: u32 = 604_800;
/// The largest `max_cost` (micro-units).
const MAX_COST: i64 = 1_000_000_000_000_000;
const MAX_COMMAND_BYTES: usize = 64 * 1024;

/// A `command`: arguments without NUL, at most 64 KiB in all.
pub fn validate_command(command: &[String]) -> Result<(), FieldError> {
    if command.iter().any(|arg| arg.contains('\0')) {
        return Err(FieldError::new(
            "command",
            "arguments must not contain NUL bytes",
        ));
    }
    if command.iter().map(String::len).sum::<usize>() > MAX_COMMAND_BYTES {
        return Err(FieldError::new(
            "command",
            "must be at most 64 KiB in total",
        ));
    }
    Ok(())
}

/// `POST /v1/containers/{id}/exec`: a process to run in the running container.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecRequest {
    /// argv (the container's PATH applies): at least one argument, without
    /// NUL, at most 65536 bytes in all.
    #[schema(min_items = 1, schema_with = schemas::exec_command)]
    pub command: Vec<String>,
    /// Merged over the container's environment.
    #[schema(schema_with = schemas::env_map)]
    pub env: Option<BTreeMap<String, String>>,
    /// SIGKILLed past this many seconds (default 30, at most 3600);
    /// `timed_out` says so.
    #[schema(minimum = 1, maximum = 3600)]
    pub timeout_s: Option<u32>,
}

/// How an exec went. Output is UTF-8 (invalid bytes replaced); each stream
/// keeps its first 1 MiB.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ExecResult {
    /// The process's exit code (128 + signal when it was killed).
    pub exit_code: i32,
    pub stdout: String,
    pub stderr: String,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    /// It ran past `timeout_s` and was SIGKILLed.
    pub timed_out: bool,
}
const MAX_PENDING_S: u32 = 86_400;

/// A `timeout_s` (of a container or a job) is 1 s to 7 days.
pub fn check_timeout_s(timeout_s: u32) -> Result<(), FieldError> {
    if !(1..=MAX_TIMEOUT_S).contains(&timeout_s) {
        return Err(FieldError::new(
            "timeout_s",
            "must be 1 to 604800 seconds (7 days)",
        ));
    }
    Ok(())
}

/// A `max_cost` (of a container or a job) is 1 to 10^15 micro-units.
pub fn check_max_cost(max_cost: i64) -> Result<(), FieldError> {
    if !(1..=MAX_COST).contains(&max_cost) {
        return Err(FieldError::new("max_cost", "must be 1 to 10^15"));
    }
    Ok(())
}

/// Body of `POST /v1/containers` (and a job's template).
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateContainer {
    /// Unique within the tenant, `[a-z0-9-]{1,63}`; generated when absent.
    #[schema(pattern = "^[a-z0-9-]{1,63}$")]
    pub name: Option<String>,
    #[schema(schema_with = schemas::image)]
    pub image: String,
    #[schema(schema_with = schemas::command)]
    pub command: Option<Vec<String>>,
    /// Environment variables, returned by the API.
    #[schema(schema_with = schemas::env_map)]
    pub env: Option<BTreeMap<String, String>>,
    /// Environment variables that are never returned or logged.
    #[schema(schema_with = schemas::env_map)]
    pub secure_env: Option<SecretEnv>,
    /// vCPUs, 0.1 to 4 in steps of 0.01.
    #[schema(minimum = 0.1, maximum = 4, multiple_of = 0.01)]
    pub cpu: f64,
    /// Memory limit in MiB, 64 to 16384.
    #[schema(minimum = 64, maximum = 16384)]
    pub memory_mib: u64,
    pub restart_policy: Option<RestartPolicyName>,
    /// Most restarts the policy may make; unlimited when absent.
    #[schema(maximum = 4294967295_u32)]
    pub max_restarts: Option<u32>,
    /// Seconds between SIGTERM and SIGKILL on stop (default 10, at most
    /// 3600).
    #[schema(maximum = 3600)]
    pub stop_timeout_s: Option<u32>,
    /// Longest a run may last (1 to 604800 s): past it, it is stopped and
    /// ends `failed` with `DeadlineExceeded`. No limit when absent.
    #[schema(minimum = 1, maximum = 604800)]
    pub timeout_s: Option<u32>,
    /// Most it may cost, in the unit of `usage.cost` (micro-units, 1 to
    /// 10^15): once its metered cost reaches it (checked at every meter
    /// checkpoint), it is stopped and ends `failed` with `BudgetExceeded`.
    #[schema(minimum = 1, maximum = 1_000_000_000_000_000_i64)]
    pub max_cost: Option<i64>,
    /// Where to POST the final object when a run ends (signed; see
    /// `POST /v1/webhook-secret`): an http(s) URL to a host the server
    /// allows (`SKIFF_WEBHOOK_ALLOWED_HOSTS`); empty for none.
    #[schema(pattern = r"^(https?://[^\u0000]*)?$")]
    pub notify_url: Option<String>,
    #[schema(schema_with = schemas::labels_map)]
    pub labels: Option<BTreeMap<String, String>>,
    /// Seconds the container may wait for a host with room before it fails
    /// with `NoCapacity` (1 to 86400; default from the server's config).
    #[schema(minimum = 1, maximum = 86400)]
    pub max_pending_s: Option<u32>,
    pub placement: Option<PlacementRequest>,
    /// `private` (default): its own network namespace with an address on
    /// its host's bridge, placed only on hosts that offer a network; `none`:
    /// loopback only.
    #[schema(value_type = Option<schemas::NetworkModeName>)]
    pub network: Option<NetworkMode>,
    /// `network: private` only: containers of this tenant naming the same
    /// group reach each other; without one, it reaches no other container.
    /// A DNS label: 1 to 63 of a-z, 0-9 and '-', starting and ending with a
    /// letter or digit.
    #[schema(pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", max_length = 63)]
    pub network_group: Option<String>,
    /// Mount its root filesystem read-only (default false); `/tmp` stays
    /// a writable tmpfs.
    pub read_only_rootfs: Option<bool>,
    /// `network: private` only: ports to publish on its host (at most 16),
    /// each (port, protocol) once and each (host_port, protocol) once.
    #[schema(schema_with = schemas::port_requests)]
    pub ports: Option<Vec<PortRequest>>,
    /// Volumes it may mount (at most 16): scratch space (`empty_dir`) or
    /// files handed over as secret (`secret`).
    #[schema(max_items = 16)]
    pub volumes: Option<Vec<VolumeRequest>>,
    /// Where it mounts its volumes (at most 16), each path once.
    #[schema(max_items = 16)]
    pub mounts: Option<Vec<MountRequest>>,
    /// Checked by its host while it runs: failing `failure_threshold` times
    /// in a row kills the process, and the run ends with
    /// `LivenessProbeFailed` (restarted per its restart policy).
    pub liveness_probe: Option<Probe>,
    /// Checked by its host while it runs: `ready` on the object is true
    /// from its first pass until `failure_threshold` failures in a row.
    pub readiness_probe: Option<Probe>,
    /// Never serialized (a job's stored template cannot hold one): see
    /// [`crate::http::registry_credentials`].
    #[serde(skip_serializing)]
    #[schema(schema_with = crate::http::registry_credentials::request_credentials_schema)]
    pub image_registry_credentials: Option<Vec<skiff_core::RegistryCredential>>,
}

/// One volume: exactly one of `empty_dir` and `secret`.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VolumeRequest {
    /// A DNS label, unique among the container's volumes.
    #[schema(pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", max_length = 63)]
    pub name: String,
    pub empty_dir: Option<EmptyDirRequest>,
    pub secret: Option<SecretVolumeRequest>,
}

/// Scratch space that lives as long as the container (kept across its
/// restarts); writes past `size_mib` fail (ENOSPC).
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmptyDirRequest {
    /// MiB, at least 1. `memory`: at most `memory_mib` (the default), as
    /// its pages count against the container's memory; `disk`: at most
    /// 65536, default 1024.
    #[schema(minimum = 1, maximum = 65536)]
    pub size_mib: Option<u32>,
    /// `disk` (default) or `memory` (a tmpfs).
    pub medium: Option<skiff_core::Medium>,
}

/// Files handed over as secret: sealed at rest, never returned, mounted
/// read-only, each file mode 0400 owned by the container's user, on a
/// tmpfs.
#[derive(Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretVolumeRequest {
    /// Relative path (components of A-Z, a-z, 0-9, '.', '_', '-'; at most
    /// 8 levels) to its content in base64. At most 64 files and 1 MiB in
    /// all the container's secret volumes.
    #[schema(value_type = BTreeMap<String, String>)]
    pub files: BTreeMap<String, String>,
}

impl std::fmt::Debug for SecretVolumeRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretVolumeRequest")
            .field("files", &self.files.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Where the container mounts one of its volumes.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MountRequest {
    /// The name of one of its `volumes`.
    pub volume: String,
    /// An absolute, normalised path other than `/` and not under /proc,
    /// /sys or /dev.
    #[schema(pattern = "^/[^\\u0000]+$", max_length = 4096)]
    pub path: String,
    /// Mount it read-only (default false; secret volumes always are).
    pub read_only: Option<bool>,
}

/// Constraints on where a container may run.
#[derive(Debug, Clone, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlacementRequest {
    /// Only hosts carrying every one of these labels.
    #[schema(schema_with = schemas::labels_map)]
    pub host_labels: Option<BTreeMap<String, String>>,
}

/// `never`, `on_failure` or `always`.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RestartPolicyName {
    Never,
    OnFailure,
    Always,
}

impl From<RestartPolicyName> for RestartPolicy {
    fn from(p: RestartPolicyName) -> Self {
        match p {
            RestartPolicyName::Never => RestartPolicy::Never,
            RestartPolicyName::OnFailure => RestartPolicy::OnFailure,
            RestartPolicyName::Always => RestartPolicy::Always,
        }
    }
}

/// A validated create request.
#[derive(Debug, Clone)]
pub struct NewContainer {
    pub id: Uuid,
    pub name: String,
    pub image: String,
    pub command: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub secure_env: SecretEnv,
    pub cpu: CpuMillis,
    pub memory: MemoryMib,
    pub restart_policy: RestartPolicy,
    pub max_restarts: Option<u32>,
    pub stop_timeout_s: u32,
    pub timeout_s: Option<u32>,
    pub max_cost: Option<i64>,
    pub notify_url: Option<String>,
    /// Set on a job's task containers.
    pub task: Option<TaskOf>,
    /// Set on a container group's members.
    pub group: Option<Uuid>,
    pub labels: BTreeMap<String, String>,
    pub max_pending_s: u32,
    pub host_labels: BTreeMap<String, String>,
    pub network: NetworkMode,
    pub network_group: Option<String>,
    pub ports: Vec<PortRequest>,
    pub read_only_rootfs: bool,
    pub volumes: Vec<VolumeSource>,
    /// The contents of its secret volumes (sealed at rest, never shown).
    pub secret_files: SecretFiles,
    pub mounts: Vec<VolumeMount>,
    pub liveness_probe: Option<Probe>,
    pub readiness_probe: Option<Probe>,
    /// The request's credential for the image's registry.
    pub registry_credential: Option<skiff_core::RegistryCredential>,
}

/// Which job task a container is an attempt of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskOf {
    pub job: Uuid,
    pub index: i32,
    /// 1 for the first attempt.
    pub attempt: i32,
}

impl CreateContainer {
    /// `default_max_pending_s`: the server's `SKIFF_MAX_PENDING_S`.
    pub fn validate(self, default_max_pending_s: u32) -> Result<NewContainer, FieldError> {
        let id = Uuid::now_v7();
        let name = match self.name {
            Some(name) => ContainerName::parse(&name)?.into_string(),
            // The tail of a v7 uuid is random, so generated names rarely clash.
            None => format!("c-{}", &id.simple().to_string()[20..]),
        };
        ImageRef::parse(&self.image)?;
        let cpu = CpuMillis::parse(self.cpu)?;
        let memory = MemoryMib::parse(self.memory_mib)?;
        let command = self.command.unwrap_or_default();
        validate_command(&command)?;
        let env = self.env.unwrap_or_default();
        let secure_env = self.secure_env.unwrap_or_default();
        validate_env([("env", &env), ("secure_env", &secure_env.0)])?;
        if let Some(key) = env.keys().find(|k| secure_env.0.contains_key(*k)) {
            return Err(FieldError::new(
                format!("secure_env.{key}"),
                "is also set in env; set it in one place",
            ));
        }
        let stop_timeout_s = self.stop_timeout_s.unwrap_or(DEFAULT_STOP_TIMEOUT_S);
        if stop_timeout_s > MAX_STOP_TIMEOUT_S {
            return Err(FieldError::new(
                "stop_timeout_s",
                "must be at most 3600 seconds",
            ));
        }
        if let Some(timeout_s) = self.timeout_s {
            check_timeout_s(timeout_s)?;
        }
        if let Some(max_cost) = self.max_cost {
            check_max_cost(max_cost)?;
        }
        let labels = self.labels.unwrap_or_default();
        validate_labels("labels", &labels)?;
        let max_pending_s = self.max_pending_s.unwrap_or(default_max_pending_s);
        if !(1..=MAX_PENDING_S).contains(&max_pending_s) {
            return Err(FieldError::new(
                "max_pending_s",
                "must be 1 to 86400 seconds",
            ));
        }
        let host_labels = self
            .placement
            .and_then(|p| p.host_labels)
            .unwrap_or_default();
        validate_labels("placement.host_labels", &host_labels)?;
        let network = self.network.unwrap_or_default();
        let ports = self.ports.unwrap_or_default();
        validate_network(network, self.network_group.as_deref(), &ports)?;
        let (volumes, secret_files) = volume_sources(self.volumes.unwrap_or_default(), memory)?;
        let mut mounts: Vec<VolumeMount> = self
            .mounts
            .unwrap_or_default()
            .into_iter()
            .map(|m| VolumeMount {
                volume: m.volume,
                path: m.path,
                read_only: m.read_only.unwrap_or(false),
            })
            .collect();
        validate_volumes(&volumes, &secret_files, &mounts, memory.mib().into())?;
        for (field, probe) in [
            ("liveness_probe", &self.liveness_probe),
            ("readiness_probe", &self.readiness_probe),
        ] {
            if let Some(probe) = probe {
                probe.validate(field)?;
                if let Some(exec) = &probe.exec {
                    validate_command(&exec.command).map_err(|mut e| {
                        e.field = format!("{field}.exec.command");
                        e
                    })?;
                }
            }
        }
        // A secret is always mounted read-only; the object says so.
        for m in &mut mounts {
            m.read_only |= volumes
                .iter()
                .any(|v| v.name == m.volume && v.secret.is_some());
        }
        let registry_credential = skiff_core::registry::pick_for_image(
            "image_registry_credentials",
            &self.image,
            self.image_registry_credentials.unwrap_or_default(),
        )?;
        Ok(NewContainer {
            id,
            name,
            image: self.image,
            command,
            env,
            secure_env,
            cpu,
            memory,
            restart_policy: self.restart_policy.map(Into::into).unwrap_or_default(),
            max_restarts: self.max_restarts,
            stop_timeout_s,
            timeout_s: self.timeout_s,
            max_cost: self.max_cost,
            notify_url: self.notify_url.filter(|u| !u.is_empty()),
            task: None,
            group: None,
            labels,
            max_pending_s,
            host_labels,
            network,
            network_group: self.network_group,
            ports,
            read_only_rootfs: self.read_only_rootfs.unwrap_or(false),
            volumes,
            secret_files,
            mounts,
            liveness_probe: self.liveness_probe,
            readiness_probe: self.readiness_probe,
            registry_credential,
        })
    }
}

/// A request's volumes as stored (defaults filled in, secret contents
/// decoded apart from the rest); what [`validate_volumes`] checks next.
fn volume_sources(
    requests: Vec<VolumeRequest>,
    memory: MemoryMib,
) -> Result<(Vec<VolumeSource>, SecretFiles), FieldError> {
    use base64::Engine as _;
    let mut files = SecretFiles::default();
    let mut volumes = Vec::with_capacity(requests.len());
    for (i, v) in requests.into_iter().enumerate() {
        let empty_dir = v.empty_dir.map(|d| {
            let medium = d.medium.unwrap_or_default();
            let size_mib = d.size_mib.unwrap_or(match medium {
                Medium::Memory => memory.mib(),
                Medium::Disk => skiff_core::volumes::DEFAULT_DISK_MIB,
            });
            EmptyDir { size_mib, medium }
        });
        let secret = match v.secret {
            Some(secret) => {
                let mut decoded = BTreeMap::new();
                for (path, b64) in secret.files {
                    let bytes = base64::engine::general_purpose::STANDARD
                        .decode(b64.as_bytes())
                        .map_err(|_| {
                            FieldError::new(
                                format!("volumes[{i}].secret.files.{path}"),
                                "must be base64 (standard alphabet, padded)",
                            )
                        })?;
                    decoded.insert(path, bytes);
                }
                let paths = decoded.keys().cloned().collect();
                files.0.insert(v.name.clone(), decoded);
                Some(SecretPaths { files: paths })
            }
            None => None,
        };
        volumes.push(VolumeSource {
            name: v.name,
            empty_dir,
            secret,
        });
    }
    Ok((volumes, files))
}

/// An image pull under way.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
pub struct PullView {
    /// Layer bytes fetched so far (layers the host held count as fetched).
    pub bytes_done: i64,
    pub bytes_total: i64,
}

/// Where a container's start time went, in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, ToSchema)]
pub struct Timings {
    /// Stored until placed on a host.
    pub queued_ms: Option<i64>,
    /// Image pull on the host (0 when cached).
    pub pull_ms: Option<i64>,
    /// containerd container and snapshot creation.
    pub create_ms: Option<i64>,
    /// Task creation and start (runc).
    pub start_ms: Option<i64>,
}

/// What a container has been billed so far (all runs; see the billing rule
/// in the README: task run time only, each run rounded up to a second).
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
pub struct UsageView {
    pub billed_seconds: i64,
    pub vcpu_seconds: f64,
    pub gib_seconds: f64,
    /// Micro-units of the currency of the rate card.
    pub cost: i64,
}

impl From<&skiff_billing::UsageTotals> for UsageView {
    fn from(t: &skiff_billing::UsageTotals) -> Self {
        // Display only: the integers stay the source of truth.
        Self {
            billed_seconds: t.billed_seconds,
            vcpu_seconds: t.milli_vcpu_seconds as f64 / 1000.0,
            gib_seconds: t.mib_seconds as f64 / 1024.0,
            cost: t.cost_micros,
        }
    }
}

/// A container as the API shows it. `secure_env` is never part of it.
/// (Deserialize: clients in this workspace, e.g. the benchmark, read it
/// with this very type.)
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ContainerView {
    pub id: Uuid,
    pub name: String,
    pub image: String,
    pub image_digest: Option<String>,
    pub command: Vec<String>,
    pub env: BTreeMap<String, String>,
    /// Keys of `secure_env` (the values are never shown).
    pub secure_env_keys: Vec<String>,
    /// vCPUs.
    pub cpu: f64,
    pub memory_mib: u32,
    #[schema(value_type = RestartPolicyName)]
    pub restart_policy: RestartPolicy,
    pub max_restarts: Option<u32>,
    pub stop_timeout_s: u32,
    /// Longest a run may last; null: no limit.
    pub timeout_s: Option<u32>,
    /// Most it may cost (micro-units, as `usage.cost`); null: no limit.
    pub max_cost: Option<i64>,
    pub notify_url: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// Seconds it may wait for capacity before failing with NoCapacity.
    pub max_pending_s: u32,
    pub placement: PlacementRequest,
    /// `private` or `none`.
    #[schema(value_type = schemas::NetworkModeName)]
    pub network: NetworkMode,
    /// The group it shares a network with (null: none).
    pub network_group: Option<String>,
    /// Its root filesystem is read-only.
    pub read_only_rootfs: bool,
    /// Its volumes: sizes and secret file paths, never secret contents.
    pub volumes: Vec<VolumeSource>,
    /// Where it mounts them.
    pub mounts: Vec<VolumeMount>,
    pub liveness_probe: Option<Probe>,
    pub readiness_probe: Option<Probe>,
    /// Its run is `running` and passes its readiness probe (without one:
    /// it is `running`).
    pub ready: bool,
    /// While `pulling`: how far the image's download is (null otherwise,
    /// and until its host reports).
    pub pull: Option<PullView>,
    /// Its address on its host's bridge, while its task runs (`running`,
    /// `stopping`) with `network: private`; null otherwise.
    pub ip: Option<String>,
    /// Its published ports, with the host ports of its current placement.
    pub ports: Vec<PortView>,
    /// pending, scheduled, pulling, starting, running, stopping, succeeded, failed, stopped.
    #[schema(value_type = schemas::ContainerStateName)]
    pub state: ContainerState,
    /// Machine-readable: Completed, Error, ImagePullFailed, StartFailed, OOMKilled, HostLost,
    /// TaskLost, StopRequested, BackOff, WaitingForCapacity (pending), NoCapacity (failed).
    #[schema(value_type = Option<schemas::ReasonName>)]
    pub reason: Option<Reason>,
    pub message: Option<String>,
    pub exit_code: Option<i32>,
    pub restart_count: i32,
    /// The host of the current run (null while pending).
    pub host_id: Option<String>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub timings: Timings,
    pub usage: UsageView,
    /// A run's output passed the host's log cap: the log keeps the newest
    /// bytes behind a line saying how much older output was dropped (a
    /// `LogTruncated` event says which run).
    #[serde(default)]
    pub logs_truncated: bool,
}

/// A published port of a container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PortView {
    /// The container's port.
    pub port: u16,
    #[schema(value_type = schemas::ProtocolName)]
    pub protocol: Protocol,
    /// The host port it is published on: assigned when the container is
    /// placed, freed when it finishes (null while pending and once
    /// finished). As asked, when the request named one.
    pub host_port: Option<u16>,
    /// The address `host_port` answers on (its host's); null while no
    /// host port is assigned.
    pub host_ip: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ContainerList {
    pub items: Vec<ContainerView>,
    /// Cursor for the next page; null on the last page.
    pub next: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EventView {
    /// Pulling, Pulled, Created, Started, Exited, Killing, Restarting, Scheduled, Failed, ...
    pub kind: String,
    pub message: String,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EventList {
    pub items: Vec<EventView>,
}

/// Body of `POST /v1/tenants`.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    /// 1 to 128 bytes (UTF-8; leading and trailing blanks are trimmed),
    /// without NUL.
    #[schema(max_length = 128, pattern = r"^[^\u0000]*[^\s\u0000][^\u0000]*$")]
    pub name: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TenantCreated {
    pub id: Uuid,
    pub name: String,
    /// Bearer token for the tenant; shown only here.
    pub token: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(json: serde_json::Value) -> CreateContainer {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn minimal_request_gets_defaults() {
        let c = request(
            serde_json::json!({"image": "127.0.0.1:5000/a:1", "cpu": 0.5, "memory_mib": 256}),
        )
        .validate(600)
        .unwrap();
        assert!(c.name.starts_with("c-"));
        assert_eq!(c.max_pending_s, 600);
        assert_eq!(c.cpu.millis(), 500);
        assert_eq!(c.restart_policy, RestartPolicy::Never);
        assert_eq!(c.stop_timeout_s, 10);
    }

    #[test]
    fn the_same_key_in_env_and_secure_env_is_rejected() {
        let err = request(serde_json::json!({
            "image": "x", "cpu": 1, "memory_mib": 64,
            "env": {"A": "1"}, "secure_env": {"A": "2"}
        }))
        .validate(600)
        .unwrap_err();
        assert_eq!(err.field, "secure_env.A");
    }

    #[test]
    fn label_keys_are_checked() {
        let err = request(serde_json::json!({
            "image": "x", "cpu": 1, "memory_mib": 64, "labels": {"a b": "1"}
        }))
        .validate(600)
        .unwrap_err();
        assert_eq!(err.field, "labels.a b");
    }

    #[test]
    fn network_fields_default_to_a_private_network_without_group_or_ports() {
        let c = request(serde_json::json!({"image": "x", "cpu": 1, "memory_mib": 64}))
            .validate(600)
            .unwrap();
        assert_eq!(c.network, NetworkMode::Private);
        assert_eq!((c.network_group, c.ports), (None, vec![]));
    }

    #[test]
    fn network_fields_are_checked_and_refusals_name_their_field() {
        let with = |fields: serde_json::Value| {
            let mut body = serde_json::json!({"image": "x", "cpu": 1, "memory_mib": 64});
            for (k, v) in fields.as_object().unwrap() {
                body[k] = v.clone();
            }
            request(body).validate(600)
        };
        let (bad, clash) = (Some(400), Some(422));
        #[rustfmt::skip]
        let rows = [
            // (body fields, refusal: field and HTTP status; None: accepted)
            (serde_json::json!({"network": "none"}), None, None),
            (serde_json::json!({"network": "private", "network_group": "web"}), None, None),
            (serde_json::json!({"network_group": "web-1"}), None, None),
            (serde_json::json!({"network_group": "Web"}), Some("network_group"), bad),
            (serde_json::json!({"network_group": "web-"}), Some("network_group"), bad),
            (serde_json::json!({"network_group": ""}), Some("network_group"), bad),
            (serde_json::json!({"network": "none", "network_group": "web"}), Some("network_group"), clash),
            (serde_json::json!({"ports": [{"port": 80}, {"port": 53, "protocol": "udp", "host_port": 20053}]}), None, None),
            (serde_json::json!({"network": "none", "ports": [{"port": 80}]}), Some("ports"), clash),
            (serde_json::json!({"network": "none", "ports": []}), None, None),
            (serde_json::json!({"ports": [{"port": 0}]}), Some("ports[0].port"), bad),
            (serde_json::json!({"ports": [{"port": 80, "host_port": 0}]}), Some("ports[0].host_port"), bad),
            (serde_json::json!({"ports": [{"port": 80}, {"port": 80, "protocol": "tcp"}]}), Some("ports[1].port"), clash),
            (serde_json::json!({"ports": [{"port": 80}, {"port": 80, "protocol": "udp"}]}), None, None),
            (serde_json::json!({"ports": [{"port": 80, "host_port": 8080}, {"port": 81, "host_port": 8080}]}), Some("ports[1].host_port"), clash),
            (serde_json::json!({"ports": [{"port": 80, "host_port": 8080}, {"port": 81, "protocol": "udp", "host_port": 8080}]}), None, None),
            (serde_json::json!({"ports": (1..=16).map(|p| serde_json::json!({"port": p})).collect::<Vec<_>>()}), None, None),
            (serde_json::json!({"ports": (1..=17).map(|p| serde_json::json!({"port": p})).collect::<Vec<_>>()}), Some("ports"), bad),
        ];
        for (fields, field, status) in rows {
            match (with(fields.clone()), field) {
                (Ok(c), None) => {
                    assert_eq!(
                        c.network_group.as_deref(),
                        fields.get("network_group").and_then(|g| g.as_str())
                    );
                    assert_eq!(
                        c.ports.len(),
                        fields
                            .get("ports")
                            .map_or(0, |p| p.as_array().unwrap().len())
                    );
                }
                (Err(err), Some(field)) => {
                    assert_eq!(err.field, field, "{fields}");
                    let problem = crate::error::ApiError::from(err).to_problem();
                    assert_eq!(
                        (problem.field.as_deref(), Some(problem.status)),
                        (Some(field), status),
                        "{fields}"
                    );
                }
                (got, _) => panic!("{fields}: {got:?}"),
            }
        }
    }

    #[test]
    fn placement_and_queueing_fields_are_checked() {
        let base = serde_json::json!({"image": "x", "cpu": 1, "memory_mib": 64});
        let with = |key: &str, value: serde_json::Value| {
            let mut body = base.clone();
            body[key] = value;
            request(body).validate(600)
        };
        assert_eq!(
            with("max_pending_s", 0.into()).unwrap_err().field,
            "max_pending_s"
        );
        assert_eq!(with("max_pending_s", 30.into()).unwrap().max_pending_s, 30);
        let err = with(
            "placement",
            serde_json::json!({"host_labels": {"a b": "1"}}),
        )
        .unwrap_err();
        assert_eq!(err.field, "placement.host_labels.a b");
        let ok = with(
            "placement",
            serde_json::json!({"host_labels": {"zone": "b"}}),
        )
        .unwrap();
        assert_eq!(ok.host_labels.get("zone").map(String::as_str), Some("b"));
    }
}
