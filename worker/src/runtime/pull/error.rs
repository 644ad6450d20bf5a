//! [`PullError`]: why a pull, or a look at a stored image, failed, typed by
//! where it failed. Its text is what a container's `ImagePullFailed`
//! message says after "pulling image <reference>: ".

/// Why a pull failed.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    /// The reference does not parse.
    #[error("invalid image reference: {0}")]
    Reference(#[from] oci_client::ParseError),
    /// The registry refused or failed, or the way to it did: its words,
    /// made short, with what was being fetched.
    #[error("{0}")]
    Registry(String),
    /// The registry's name does not resolve.
    #[error("resolving registry {host}: {source}")]
    Resolve {
        host: String,
        #[source]
        source: std::io::Error,
    },
    /// The egress policy forbids the registry.
    #[error(transparent)]
    Egress(#[from] crate::egress::Refusal),
    /// A containerd call failed.
    #[error("containerd {op}: {}: {}", .source.code(), .source.message())]
    Containerd {
        op: &'static str,
        #[source]
        source: tonic::Status,
    },
    /// containerd's content store did not take a blob as it was sent.
    #[error("{0}")]
    Store(String),
    /// The image's documents are not an image this host can run.
    #[error("{0}")]
    Image(String),
}

impl PullError {
    /// containerd's `op` failed with `source`.
    pub(super) fn containerd(op: &'static str, source: tonic::Status) -> Self {
        Self::Containerd { op, source }
    }
}
