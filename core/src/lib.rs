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

pub mod image;
pub mod labels;
pub mod names;
pub mod resources;
pub mod state;

pub use image::{image_pattern, ImageRef};
pub use labels::{check_label, is_label_key, validate_labels, MAX_LABELS};
pub use names::{validate_env, ContainerName, EnvError, SecretEnv};
pub use resources::{CpuMillis, MemoryMib};
pub use state::{
    ContainerState, DesiredState, HostState, JobState, PlacementPolicy, Reason, RestartPolicy,
};

/// A validation failure that names the offending input field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}
