//! Pulls images from an OCI registry into containerd and unpacks them.
//!
//! containerd 1.6 has no Transfer service, so the client does the pull (as
//! the Go client's `Pull` does): fetch manifest, config and layers with
//! `oci-client`, write them into containerd's content store, unpack each
//! layer into an overlayfs snapshot named by its chain ID, and point the
//! image record at the manifest. All of it runs under a lease so garbage
//! collection cannot take half-written content; once the image record exists,
//! GC labels keep everything alive:
//! image -> manifest (`gc.ref.content.config`, `gc.ref.content.l.<i>`)
//! -> config (`gc.ref.snapshot.overlayfs` = top chain ID) -> parent snapshots.
//!
//! An image whose record, manifest, config and top snapshot are all present
//! is resolved from containerd alone: no registry traffic, so a registry
//! outage does not stop restarts of containers whose image is cached.
//! An image pulled with credentials is the exception: its cached copy is
//! handed to a caller only once the registry would serve it that caller's
//! own credentials (`login`: the clients, refusals and that check).
//! The documents read (index, manifest, config) are oci-spec's types, and
//! the checks made of them are pure functions in `manifest`. The layers'
//! fetch and unpack are in `unpack`, the content store, snapshot and lease
//! calls in `store`.

use super::auth::{self, Proofs, RegistryLogin};
use super::containerd::Conn;
use super::{ImageInfo, RuntimeError};
use crate::egress::proxy::EgressProxy;
use crate::egress::{EgressPolicy, Scheme};
use containerd_client::services::v1::snapshots::{
    CommitSnapshotRequest, PrepareSnapshotRequest, RemoveSnapshotRequest, StatSnapshotRequest,
    UsageRequest as SnapshotUsageRequest,
};
use containerd_client::services::v1::{
    content_client::ContentClient, diff_client::DiffClient, images_client::ImagesClient,
    leases_client::LeasesClient, snapshots::snapshots_client::SnapshotsClient,
    CreateRequest as CreateLeaseRequest,
};
use containerd_client::services::v1::{
    AbortRequest, ApplyRequest, CreateImageRequest, DeleteRequest as DeleteLeaseRequest,
    GetImageRequest, Image, InfoRequest, ReadContentRequest, UpdateImageRequest, WriteAction,
    WriteContentRequest,
};
use containerd_client::types::Descriptor;
use futures::{StreamExt, TryStreamExt};
use oci_client::client::ClientProtocol;
use oci_client::errors::OciDistributionError;
use oci_client::{Client as RegistryClient, Reference};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tonic::Code;
use tracing::{debug, info, instrument};

mod error;
mod login;
mod manifest;
mod store;
mod unpack;
pub use error::PullError;
use login::{pull_message, registry_client};
pub use manifest::chain_ids;
use manifest::{
    digest_of, is_index, media_type_of, parse_config, parse_manifest, pick_platform, sha256_digest,
    ACCEPTED_MANIFESTS,
};
use oci_spec::image::Descriptor as Desc;
use oci_spec::image::{ImageConfiguration, ImageManifest};

pub const SNAPSHOTTER: &str = "overlayfs";

/// Content.Write message size: well under containerd's 16 MiB gRPC limit,
/// large enough that per-message overhead does not matter.
const WRITE_CHUNK: usize = 1 << 20;
/// Layers fetched at once per image.
const PARALLEL_LAYERS: usize = 3;

/// Pulls and unpacks images; one per runtime, shared by all callers.
pub struct Puller {
    conn: Conn,
    egress: Arc<EgressPolicy>,
    /// Plain HTTP, for registries the egress policy names so only.
    http: RegistryClient,
    https: RegistryClient,
    /// Both clients connect through it (kept alive with the puller).
    proxy: EgressProxy,
    /// One async mutex per image name, so concurrent ensure_image calls for
    /// the same image wait for one pull instead of racing each other.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Images resolved before, by canonical name: a start of one needs
    /// only its top snapshot checked, not the image record, manifest and
    /// config read again (three containerd calls, under the image's lock).
    /// A present image is never re-resolved against the registry anyway;
    /// [`Puller::forget`] drops one the image GC removes.
    resolved: Mutex<HashMap<String, ImageInfo>>,
    /// Images (canonical names) pulled with credentials: their cached copy
    /// is used only after the caller's own authorization (see [`auth`]).
    private: Mutex<HashSet<String>>,
    proofs: Proofs,
    /// Pulls under way, by canonical name: layer bytes fetched and in all.
    progress: Mutex<HashMap<String, Arc<Progress>>>,
}

/// How far one pull's layer downloads are.
#[derive(Debug, Default)]
struct Progress {
    done: std::sync::atomic::AtomicU64,
    total: std::sync::atomic::AtomicU64,
}

impl Progress {
    fn add(&self, bytes: u64) {
        self.done
            .fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A pull's [`Progress`], listed under its image's name while it lasts
/// (dropped, however the pull ends, it is listed no more).
struct Tracked<'a> {
    pulls: &'a Mutex<HashMap<String, Arc<Progress>>>,
    name: String,
    progress: Arc<Progress>,
}

impl<'a> Tracked<'a> {
    fn start(pulls: &'a Mutex<HashMap<String, Arc<Progress>>>, name: &str, total: u64) -> Self {
        let progress = Arc::new(Progress::default());
        progress
            .total
            .store(total, std::sync::atomic::Ordering::Relaxed);
        pulls
            .lock()
            .expect("progress map")
            .insert(name.to_owned(), progress.clone());
        Self {
            pulls,
            name: name.to_owned(),
            progress,
        }
    }
}

impl Drop for Tracked<'_> {
    fn drop(&mut self) {
        self.pulls.lock().expect("progress map").remove(&self.name);
    }
}

/// Manifest and config of an image, parsed.
struct Resolved {
    manifest_digest: String,
    manifest_media_type: String,
    manifest_bytes: Vec<u8>,
    manifest: ImageManifest,
    config_bytes: Vec<u8>,
    config: ImageConfiguration,
    chain_ids: Vec<String>,
}

/// A registry error as a short message ("manifest unknown") rather than
/// oci-client's debug-ish rendering with URLs and envelopes.
fn registry_message(e: &OciDistributionError) -> String {
    match e {
        OciDistributionError::RegistryError { envelope, .. } => envelope
            .errors
            .iter()
            .map(|e| {
                if e.message.is_empty() {
                    format!("{:?}", e.code)
                } else {
                    e.message.clone()
                }
            })
            .collect::<Vec<_>>()
            .join("; "),
        OciDistributionError::ServerError { code, message, .. } => {
            format!("registry returned HTTP {code}: {message}")
        }
        OciDistributionError::UnauthorizedError { .. } => "registry denied access".to_owned(),
        // Transport errors hide the useful part ("Connection refused") in
        // their source chain.
        other => {
            let mut message = other.to_string();
            let mut source = std::error::Error::source(other);
            while let Some(cause) = source {
                let text = cause.to_string();
                if !message.contains(&text) {
                    message = format!("{message}: {text}");
                }
                source = cause.source();
            }
            message
        }
    }
}

impl Puller {
    /// A puller whose registry traffic goes through an egress proxy of its
    /// own, enforcing `egress` on every connection.
    pub(crate) async fn new(conn: Conn, egress: EgressPolicy) -> std::io::Result<Self> {
        let egress = Arc::new(egress);
        let proxy = EgressProxy::start(egress.clone()).await?;
        Ok(Self {
            conn,
            http: registry_client(ClientProtocol::Http, proxy.url()),
            https: registry_client(ClientProtocol::Https, proxy.url()),
            egress,
            proxy,
            locks: Mutex::new(HashMap::new()),
            resolved: Mutex::new(HashMap::new()),
            private: Mutex::new(HashSet::new()),
            proofs: Proofs::default(),
            progress: Mutex::new(HashMap::new()),
        })
    }

    /// The registry `host[:port]` split, with the port its scheme implies.
    fn registry_target(&self, registry: &str) -> (String, u16, Scheme) {
        let (host, port) = if let Some(v6) = registry.strip_prefix('[') {
            // [v6] or [v6]:port
            match v6.split_once(']') {
                Some((h, rest)) => (h, rest.strip_prefix(':').and_then(|p| p.parse().ok())),
                None => (v6, None),
            }
        } else {
            match registry.rsplit_once(':') {
                Some((h, p)) => (h, p.parse().ok()),
                None => (registry, None),
            }
        };
        let plain = self.egress.plain_http_for(host, port.unwrap_or(80));
        let (scheme, default_port) = if plain {
            (Scheme::Http, 80)
        } else {
            (Scheme::Https, 443)
        };
        (host.to_owned(), port.unwrap_or(default_port), scheme)
    }

    fn registry_client(&self, registry: &str) -> &RegistryClient {
        match self.registry_target(registry).2 {
            Scheme::Http => &self.http,
            Scheme::Https => &self.https,
        }
    }

    /// Refuses a pull the egress policy forbids before any connection, with
    /// the policy's words (the proxy enforces the same on every connection).
    async fn check_egress(&self, registry: &str) -> Result<(), PullError> {
        let (host, port, scheme) = self.registry_target(registry);
        let looked_up = tokio::net::lookup_host((host.as_str(), port)).await;
        match looked_up {
            Ok(addrs) => {
                let ips: Vec<std::net::IpAddr> = addrs.map(|a| a.ip()).collect();
                self.egress.check(&host, port, scheme, &ips)
            }
            // A name denied as such is refused as such; otherwise the
            // resolver's own error says more than "no address".
            Err(e) => match self.egress.check(&host, port, scheme, &[]) {
                Err(crate::egress::Refusal::Unresolved { .. }) | Ok(()) => {
                    return Err(PullError::Resolve {
                        host: host.clone(),
                        source: e,
                    })
                }
                refused => refused,
            },
        }
        .map_err(PullError::from)
    }

    /// The name an image's record has in containerd for `reference` (its
    /// canonical spelling), or `reference` itself if it does not parse.
    pub fn record_name(reference: &str) -> String {
        reference
            .parse::<Reference>()
            .map(|r| r.whole())
            .unwrap_or_else(|_| reference.to_owned())
    }

    /// How far a pull of `reference` under way is: (layer bytes fetched,
    /// of all its layers); None when none is.
    pub fn progress(&self, reference: &str) -> Option<(u64, u64)> {
        use std::sync::atomic::Ordering::Relaxed;
        let name = reference.parse::<Reference>().ok()?.whole();
        let progress = self
            .progress
            .lock()
            .expect("progress map")
            .get(&name)?
            .clone();
        Some((progress.done.load(Relaxed), progress.total.load(Relaxed)))
    }

    /// Makes sure the image is present and unpacked, pulling it with
    /// `login` (None: anonymously) if not; a cached image that was pulled
    /// with credentials is used only once `login` is shown to read it.
    #[instrument(skip_all, fields(image = %reference))]
    pub async fn ensure_image(
        &self,
        reference: &str,
        login: Option<&RegistryLogin>,
    ) -> Result<ImageInfo, RuntimeError> {
        let err = |source: PullError| RuntimeError::Pull {
            image: reference.to_owned(),
            source,
        };
        let parsed: Reference = reference
            .parse()
            .map_err(|e| err(PullError::Reference(e)))?;
        // The canonical name (docker.io/library/x:latest for "x") keys the
        // lock and the image record, so spellings of one image share both.
        let name = parsed.whole();
        if let Some(info) = self.cached(&name).await.map_err(err)? {
            self.authorize(&parsed, &name, login).await.map_err(err)?;
            return Ok(info);
        }

        let lock = {
            let mut locks = self.locks.lock().expect("image lock map poisoned");
            locks.entry(name.clone()).or_default().clone()
        };
        let result = {
            let _guard = lock.lock().await;
            self.ensure_locked(&parsed, &name, login).await.map_err(err)
        };
        // Forget the mutex when nobody else holds or waits for it.
        let mut locks = self.locks.lock().expect("image lock map poisoned");
        if Arc::strong_count(&lock) == 2 {
            locks.remove(&name);
        }
        result
    }

    /// Whether `reference` was resolved before (and not forgotten since):
    /// from memory only, see [`super::Runtime::image_known`].
    pub fn known(&self, reference: &str) -> bool {
        reference.parse::<Reference>().is_ok_and(|r| {
            self.resolved
                .lock()
                .expect("resolved images lock")
                .contains_key(&r.whole())
        })
    }

    /// An image resolved before whose top snapshot is still there.
    async fn cached(&self, name: &str) -> Result<Option<ImageInfo>, PullError> {
        let known = self
            .resolved
            .lock()
            .expect("resolved images lock")
            .get(name)
            .cloned();
        let Some(info) = known else {
            return Ok(None);
        };
        if self.snapshot_exists(&info.top_chain_id).await? {
            return Ok(Some(info));
        }
        self.forget(name);
        Ok(None)
    }

    /// Drops what is known of image `name` (canonical): it was removed.
    pub fn forget(&self, name: &str) {
        self.resolved
            .lock()
            .expect("resolved images lock")
            .remove(name);
        self.private
            .lock()
            .expect("private images lock")
            .remove(name);
        self.proofs.forget(name);
    }

    fn remember(&self, name: &str, info: &ImageInfo) {
        self.resolved.lock().expect("resolved images lock").insert(
            name.to_owned(),
            ImageInfo {
                fetched: false,
                ..info.clone()
            },
        );
    }

    async fn ensure_locked(
        &self,
        parsed: &Reference,
        name: &str,
        login: Option<&RegistryLogin>,
    ) -> Result<ImageInfo, PullError> {
        let started = Instant::now();
        if let Some(info) = self.cached(name).await? {
            self.authorize(parsed, name, login).await?;
            return Ok(info);
        }
        if let Some(info) = self.resolve_cached(name).await? {
            self.authorize(parsed, name, login).await?;
            debug!(
                elapsed_ms = started.elapsed().as_millis() as u64,
                "image cached"
            );
            self.remember(name, &info);
            return Ok(info);
        }
        let info = self.pull(parsed, name, login).await?;
        if login.is_some() {
            self.private
                .lock()
                .expect("private images lock")
                .insert(name.to_owned());
            self.proofs.record(name, login, Instant::now());
        }
        self.remember(name, &info);
        info!(
            digest = %info.digest,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "image pulled"
        );
        Ok(info)
    }

    /// Resolves the image from containerd alone. `None` when something is
    /// missing that only the registry can provide.
    async fn resolve_cached(&self, name: &str) -> Result<Option<ImageInfo>, PullError> {
        let mut images = ImagesClient::new(self.conn.channel.clone());
        let image = match images
            .get(self.conn.req(GetImageRequest {
                name: name.to_owned(),
            }))
            .await
        {
            Ok(r) => r.into_inner().image,
            Err(s) if s.code() == Code::NotFound => return Ok(None),
            Err(s) => return Err(PullError::containerd("Images.Get", s)),
        };
        // Pulled with credentials (by this worker or one before it).
        if image
            .as_ref()
            .and_then(|i| i.labels.get(auth::LABEL_AUTH))
            .is_some_and(|v| v == auth::AUTH_REQUIRED)
        {
            self.private
                .lock()
                .expect("private images lock")
                .insert(name.to_owned());
        }
        let Some(target) = image.and_then(|i| i.target) else {
            return Ok(None);
        };
        let Some(mut manifest_bytes) = self.read_content(&target.digest).await? else {
            return Ok(None);
        };
        let mut manifest_digest = target.digest.clone();
        let mut manifest_media_type = target.media_type.clone();
        // Records written by other clients (ctr) may point at an index.
        if is_index(&target.media_type, &manifest_bytes) {
            let entry = pick_platform(&manifest_bytes)?;
            let Some(bytes) = self.read_content(&digest_of(&entry)).await? else {
                return Ok(None);
            };
            manifest_bytes = bytes;
            manifest_digest = digest_of(&entry);
            manifest_media_type = entry.media_type().to_string();
        }
        let manifest = parse_manifest(&manifest_bytes)?;
        let Some(config_bytes) = self.read_content(&digest_of(manifest.config())).await? else {
            return Ok(None);
        };
        let config = parse_config(&config_bytes, &manifest)?;
        let chain_ids = chain_ids(config.rootfs().diff_ids());
        let resolved = Resolved {
            manifest_digest,
            manifest_media_type,
            manifest_bytes,
            manifest,
            config_bytes,
            config,
            chain_ids,
        };

        let top = resolved.chain_ids.last().cloned().unwrap_or_default();
        if !self.snapshot_exists(&top).await? {
            // Unpack from the content store if every layer blob is there
            // (e.g. snapshots were pruned); otherwise fall back to a pull.
            for layer in resolved.manifest.layers() {
                if !self.content_exists(&digest_of(layer)).await? {
                    return Ok(None);
                }
            }
            let lease = self.create_lease().await?;
            let unpacked = self.unpack(&lease, &resolved).await;
            self.delete_lease(&lease).await;
            unpacked?;
        }
        Ok(Some(ImageInfo {
            digest: resolved.manifest_digest,
            top_chain_id: top,
            defaults: manifest::defaults(&resolved.config),
            fetched: false,
        }))
    }

    async fn pull(
        &self,
        parsed: &Reference,
        name: &str,
        login: Option<&RegistryLogin>,
    ) -> Result<ImageInfo, PullError> {
        self.check_egress(parsed.resolve_registry()).await?;
        let own_client;
        let client = match login {
            Some(_) => {
                own_client = self.login_client(parsed.resolve_registry());
                &own_client
            }
            None => self.registry_client(parsed.resolve_registry()),
        };
        let auth = RegistryLogin::registry_auth(login);

        let (mut manifest_bytes, mut manifest_digest) = client
            .pull_manifest_raw(parsed, &auth, ACCEPTED_MANIFESTS)
            .await
            .map_err(|e| PullError::Registry(pull_message(&e, login)))?;
        let mut manifest_bytes_vec = manifest_bytes.to_vec();
        let mut media_type = media_type_of(&manifest_bytes_vec);
        if is_index(&media_type, &manifest_bytes_vec) {
            let entry = pick_platform(&manifest_bytes_vec)?;
            let by_digest = parsed.clone_with_digest(digest_of(&entry));
            (manifest_bytes, manifest_digest) = client
                .pull_manifest_raw(&by_digest, &auth, ACCEPTED_MANIFESTS)
                .await
                .map_err(|e| PullError::Registry(pull_message(&e, login)))?;
            manifest_bytes_vec = manifest_bytes.to_vec();
            media_type = entry.media_type().to_string();
        }
        if sha256_digest(&manifest_bytes_vec) != manifest_digest {
            return Err(PullError::Image(format!(
                "manifest digest mismatch: registry said {manifest_digest}"
            )));
        }
        let manifest = parse_manifest(&manifest_bytes_vec)?;

        let mut config_bytes = Vec::new();
        client
            .pull_blob(
                parsed,
                digest_of(manifest.config()).as_str(),
                &mut config_bytes,
            )
            .await
            .map_err(|e| {
                PullError::Registry(format!("fetching config: {}", pull_message(&e, login)))
            })?;
        let config = parse_config(&config_bytes, &manifest)?;
        let chain_ids = chain_ids(config.rootfs().diff_ids());
        let resolved = Resolved {
            manifest_digest,
            manifest_media_type: media_type,
            manifest_bytes: manifest_bytes_vec,
            manifest,
            config_bytes,
            config,
            chain_ids,
        };

        let lease = self.create_lease().await?;
        let result = self
            .store_and_unpack(client, parsed, name, &lease, &resolved, login.is_some())
            .await;
        self.delete_lease(&lease).await;
        result?;

        Ok(ImageInfo {
            digest: resolved.manifest_digest.clone(),
            top_chain_id: resolved.chain_ids.last().cloned().unwrap_or_default(),
            defaults: manifest::defaults(&resolved.config),
            fetched: true,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pull_is_listed_with_its_progress_while_it_lasts() {
        let pulls = Mutex::new(HashMap::new());
        {
            let tracked = Tracked::start(&pulls, "reg/x:1", 10);
            tracked.progress.add(4);
            let listed = pulls.lock().unwrap().get("reg/x:1").cloned().unwrap();
            use std::sync::atomic::Ordering::Relaxed;
            assert_eq!(
                (listed.done.load(Relaxed), listed.total.load(Relaxed)),
                (4, 10)
            );
        }
        assert!(pulls.lock().unwrap().is_empty(), "gone with the pull");
    }
}
