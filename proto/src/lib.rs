//! skiff-proto: the generated gRPC code for `proto/worker.proto`, the only
//! channel between the control plane (`api`) and a host agent (`worker`).
//!
//! The `.proto` file documents the contract: level-triggered assignment sets
//! from the control plane, idempotent status reports from the worker.
//! [`tls`] is how the two ends authenticate each other (mutual TLS).

pub mod tls;

// Generated code does not follow our lints.
#[allow(missing_docs, clippy::all)]
pub mod v1 {
    tonic::include_proto!("skiff.worker.v1");
}

pub use v1::*;

impl std::fmt::Debug for v1::ContainerSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContainerSpec")
            .field("image", &self.image)
            .field("command", &self.command)
            .field("env", &self.env)
            .field(
                "secure_env_keys",
                &self.secure_env.keys().collect::<Vec<_>>(),
            )
            .field("cpu_millis", &self.cpu_millis)
            .field("memory_mib", &self.memory_mib)
            .field("hostname", &self.hostname)
            .field("network", &self.network())
            .field("network_key", &self.network_key)
            .field("ports", &self.ports)
            .field("read_only_rootfs", &self.read_only_rootfs)
            .field("volumes", &self.volumes)
            .field("mounts", &self.mounts)
            .field("registry_credential", &self.registry_credential)
            .finish()
    }
}

/// Paths only: the contents are secret.
impl std::fmt::Debug for v1::SecretVolume {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretVolume")
            .field("files", &self.files.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl std::fmt::Debug for v1::RegistryCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryCredential")
            .field("server", &self.server)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

#[cfg(test)]
mod redaction {
    #[test]
    fn registry_passwords_never_print() {
        let credential = super::RegistryCredential {
            server: "r.example".into(),
            username: "bob".into(),
            password: "hunter2".into(),
        };
        let spec = super::ContainerSpec {
            registry_credential: Some(credential.clone()),
            ..Default::default()
        };
        let pull = super::PullRequest {
            image: "r.example/a".into(),
            registry_credential: Some(credential),
        };
        for shown in [format!("{spec:?}"), format!("{pull:?}")] {
            assert!(
                shown.contains("bob") && !shown.contains("hunter2"),
                "{shown}"
            );
        }
    }
}
