//! What an assignment's container spec asks for, in the runtime's types:
//! its volumes, its sandbox (checked: it names namespaces and files) and
//! its network. Pure functions, with their tests beside them.

use crate::runtime::volumes::{Volume, VolumeKind};
use crate::runtime::NetworkSpec;
use skiff_proto as pb;

/// One volume of an assignment (one without a source, from a newer control
/// plane, is left out).
pub(crate) fn volume_of(v: pb::Volume) -> Option<Volume> {
    let kind = match v.source? {
        pb::volume::Source::EmptyDir(d) => VolumeKind::EmptyDir {
            size_mib: d.size_mib,
            memory: d.memory,
        },
        pb::volume::Source::Secret(s) => VolumeKind::Secret {
            files: s.files.into_iter().collect(),
        },
    };
    Some(Volume { name: v.name, kind })
}

/// Why an assignment's sandbox is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SandboxRefusal {
    /// It names namespaces and directories: a plain id, never a path.
    #[error("sandbox {0:?} is not a sandbox id (1 to 64 hex digits and dashes)")]
    NotAnId(String),
    /// Members share one network namespace, so each has a private network.
    #[error("sandbox {0}: its members share a private network, and this one has none")]
    NoPrivateNetwork(String),
}

/// The sandbox (container group) of the assignment: None for an ordinary
/// container; a member's must be a plain id and have a private network
/// (members share one network namespace).
pub(crate) fn sandbox_of(spec: &pb::ContainerSpec) -> Result<Option<String>, SandboxRefusal> {
    if spec.sandbox.is_empty() {
        return Ok(None);
    }
    if !crate::runtime::sandbox::valid_key(&spec.sandbox) {
        return Err(SandboxRefusal::NotAnId(
            spec.sandbox.chars().take(72).collect(),
        ));
    }
    if spec.network() != pb::NetworkMode::Private {
        return Err(SandboxRefusal::NoPrivateNetwork(spec.sandbox.clone()));
    }
    Ok(Some(spec.sandbox.clone()))
}

/// The run's network from its assignment: a control plane that predates
/// networks sends none (NONE).
pub(crate) fn network_of(spec: &pb::ContainerSpec) -> NetworkSpec {
    match spec.network() {
        pb::NetworkMode::Private => NetworkSpec::Private(crate::net::Request {
            group: Some(spec.network_key.clone()).filter(|k| !k.is_empty()),
            ports: spec
                .ports
                .iter()
                .filter_map(|p| {
                    Some(crate::net::Published {
                        container_port: u16::try_from(p.container_port).ok()?,
                        protocol: match p.protocol() {
                            pb::Protocol::Udp => crate::net::ports::Protocol::Udp,
                            _ => crate::net::ports::Protocol::Tcp,
                        },
                        host_port: u16::try_from(p.host_port).ok()?,
                    })
                })
                .collect(),
        }),
        pb::NetworkMode::None | pb::NetworkMode::Unspecified => NetworkSpec::None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_of_the_assignment() {
        let mut spec = pb::ContainerSpec::default();
        assert_eq!(network_of(&spec), NetworkSpec::None, "older control plane");
        spec.set_network(pb::NetworkMode::Private);
        spec.network_key = "ab12".into();
        spec.ports = vec![pb::PortMapping {
            container_port: 80,
            protocol: pb::Protocol::Udp as i32,
            host_port: 20001,
        }];
        assert_eq!(
            network_of(&spec),
            NetworkSpec::Private(crate::net::Request {
                group: Some("ab12".into()),
                ports: vec![crate::net::Published {
                    container_port: 80,
                    protocol: crate::net::ports::Protocol::Udp,
                    host_port: 20001,
                }],
            })
        );
        spec.network_key.clear();
        spec.ports.clear();
        assert_eq!(
            network_of(&spec),
            NetworkSpec::Private(crate::net::Request::default())
        );
    }

    #[test]
    fn sandbox_of_the_assignment() {
        let mut spec = pb::ContainerSpec::default();
        assert_eq!(sandbox_of(&spec), Ok(None), "an ordinary container");
        spec.sandbox = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0".into();
        assert_eq!(
            sandbox_of(&spec),
            Err(SandboxRefusal::NoPrivateNetwork(spec.sandbox.clone()))
        );
        spec.set_network(pb::NetworkMode::Private);
        assert_eq!(sandbox_of(&spec), Ok(Some(spec.sandbox.clone())));
        for bad in ["../../etc", "a/b", "-rf", "x y"] {
            spec.sandbox = bad.into();
            assert_eq!(
                sandbox_of(&spec),
                Err(SandboxRefusal::NotAnId(bad.into())),
                "{bad}"
            );
        }
    }
}
