//! The registry side of a pull with credentials: the clients oci-client
//! pulls through, what a refused pull says, and the check that a cached
//! private image may be handed to this caller (see [`super::auth`]).

use super::auth::{self, RegistryLogin};
use super::{registry_message, PullError, Puller};
use crate::egress::Scheme;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::{Client as RegistryClient, Reference};
use std::time::Instant;
use tracing::debug;

/// oci-client's clients for one protocol, through the egress proxy at `proxy`.
pub(super) fn registry_client(protocol: ClientProtocol, proxy: String) -> RegistryClient {
    RegistryClient::new(ClientConfig {
        protocol,
        // Pick linux/amd64 from image indexes: that is what the hosts run.
        platform_resolver: Some(Box::new(oci_client::client::linux_amd64_resolver)),
        connect_timeout: Some(std::time::Duration::from_secs(10)),
        read_timeout: Some(std::time::Duration::from_secs(60)),
        // Every connection, redirects included (and no system proxy).
        https_proxy: Some(proxy.clone()),
        http_proxy: Some(proxy),
        ..ClientConfig::default()
    })
}

/// A registry error as the pull reports it: an authorization failure says
/// "unauthorized"; never the password.
pub(super) fn pull_message(e: &OciDistributionError, login: Option<&RegistryLogin>) -> String {
    let message = auth::unauthorized_message(e, login).unwrap_or_else(|| registry_message(e));
    RegistryLogin::redact(login, message)
}

impl Puller {
    /// A client of its own for a pull with credentials: oci-client keeps
    /// the first credential (and its tokens) a client saw for a registry,
    /// so a shared one would pull for one tenant with another's.
    pub(super) fn login_client(&self, registry: &str) -> RegistryClient {
        let protocol = match self.registry_target(registry).2 {
            Scheme::Http => ClientProtocol::Http,
            Scheme::Https => ClientProtocol::Https,
        };
        registry_client(protocol, self.proxy.url())
    }

    /// Whether `login` may read the cached private image `parsed` (named
    /// `name`): a manifest request with it, unless one succeeded within
    /// [`auth::PROOF_TTL`]. Public images pass at once.
    pub(super) async fn authorize(
        &self,
        parsed: &Reference,
        name: &str,
        login: Option<&RegistryLogin>,
    ) -> Result<(), PullError> {
        if !self
            .private
            .lock()
            .expect("private images lock")
            .contains(name)
        {
            return Ok(());
        }
        let now = Instant::now();
        if self.proofs.fresh(name, login, now) {
            return Ok(());
        }
        self.check_egress(parsed.resolve_registry()).await?;
        let client = self.login_client(parsed.resolve_registry());
        client
            .fetch_manifest_digest(parsed, &RegistryLogin::registry_auth(login))
            .await
            .map_err(|e| PullError::Registry(pull_message(&e, login)))?;
        self.proofs.record(name, login, now);
        debug!("cached private image: the caller's authorization checked");
        Ok(())
    }
}
