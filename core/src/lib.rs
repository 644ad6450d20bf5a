//! skiff-core: the domain vocabulary every part of skiff shares.
//!
//! It owns what a container *is* (its lifecycle states and failure reasons)
//! and what valid input looks like (cpu, memory, names, image references,
//! environment). It does no I/O and pulls in no runtime, so the API, the
//! worker and the billing code can all depend on it.
//!
//! Layout:
//! - [`state`]: container states, restart policies, machine-readable reasons.
//! - [`resources`]: `CpuMillis` and `MemoryMib`, parsed and bounded.
//! - [`names`]: container names and POSIX environment keys.
//! - [`image`]: image references per the distribution grammar.
//! - [`labels`]: the one rule for container, host and placement labels.
//! - [`network`]: network modes, groups and published ports.
//! - [`probes`]: liveness and readiness probes and when they fail.
//! - [`volumes`]: empty_dir and secret volumes, and where they are mounted.
//! - [`groups`]: container groups: their members' rules and the group's state.

pub mod groups;
pub mod image;
pub mod labels;
pub mod names;
pub mod network;
pub mod probes;
pub mod registry;
pub mod resources;
pub mod state;
pub mod volumes;

pub use groups::{group_state, GroupState, MemberFacts, MAX_MEMBERS};
pub use image::{image_pattern, ImageRef};
pub use labels::{check_label, is_label_key, validate_labels, MAX_LABELS};
pub use names::{validate_env, ContainerName, EnvError, SecretEnv};
pub use network::{
    validate_network, NetworkMode, PortRequest, Protocol, PublishedPort, MAX_PORTS,
    NETWORK_GROUP_PATTERN,
};
pub use probes::{Probe, Tally};
pub use registry::{Password, RegistryCredential};
pub use resources::{CpuMillis, MemoryMib};
pub use state::{
    ContainerState, DesiredState, HostState, JobState, PlacementPolicy, Reason, RestartPolicy,
};
pub use volumes::{
    validate_volumes, EmptyDir, Medium, SecretFiles, SecretPaths, VolumeMount, VolumeSource,
};

/// A validation failure that names the offending input field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    pub field: String,
    pub message: String,
    pub kind: FieldErrorKind,
}

/// What is wrong: the field itself, or how it goes with the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FieldErrorKind {
    /// Out of its own rules (a range, a pattern): the API's 400.
    #[default]
    Invalid,
    /// Well-formed, but it does not go with other fields of the request
    /// (e.g. ports with `network: none`): the API's 422.
    Unprocessable,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
            kind: FieldErrorKind::Invalid,
        }
    }

    /// A field that does not go with the rest of the request.
    pub fn unprocessable(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            kind: FieldErrorKind::Unprocessable,
            ..Self::new(field, message)
        }
    }
}
