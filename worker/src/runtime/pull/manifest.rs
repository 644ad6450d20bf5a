//! The documents a pull reads (image index, manifest, config) as
//! `oci-spec`'s types, and what skiff checks of them: the platform picked
//! from an index, the manifest kinds accepted, a config that matches its
//! digest and lists one diff ID per layer; the defaults a container takes
//! from its image; layer chain IDs. Pure, with tests beside them.

use super::PullError;
use crate::runtime::ImageDefaults;
use containerd_client::types::Descriptor as ContainerdDescriptor;
use oci_spec::image::{Arch, Descriptor, ImageConfiguration, ImageIndex, ImageManifest, Os};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;

pub(super) const MEDIA_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub(super) const MEDIA_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub(super) const MEDIA_DOCKER_MANIFEST: &str =
    "application/vnd.docker.distribution.manifest.v2+json";
pub(super) const MEDIA_DOCKER_LIST: &str =
    "application/vnd.docker.distribution.manifest.list.v2+json";
/// What a pull asks the registry for.
pub(super) const ACCEPTED_MANIFESTS: &[&str] = &[
    MEDIA_OCI_MANIFEST,
    MEDIA_OCI_INDEX,
    MEDIA_DOCKER_MANIFEST,
    MEDIA_DOCKER_LIST,
];

/// A descriptor's digest as containerd and registries spell it.
pub(super) fn digest_of(d: &Descriptor) -> String {
    d.digest().to_string()
}

/// A layer's descriptor for containerd's diff service.
pub(super) fn to_containerd(d: &Descriptor) -> ContainerdDescriptor {
    ContainerdDescriptor {
        media_type: d.media_type().to_string(),
        digest: digest_of(d),
        size: i64::try_from(d.size()).unwrap_or(i64::MAX),
        annotations: HashMap::new(),
    }
}

/// The media type a document says it is (an index without one is told by
/// its `manifests`; anything else is taken for an OCI manifest).
pub(super) fn media_type_of(bytes: &[u8]) -> String {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Probe {
        #[serde(default)]
        media_type: Option<String>,
        #[serde(default)]
        manifests: Option<serde_json::Value>,
    }
    match serde_json::from_slice::<Probe>(bytes) {
        Ok(Probe {
            media_type: Some(m),
            ..
        }) => m,
        Ok(Probe {
            manifests: Some(_), ..
        }) => MEDIA_OCI_INDEX.to_owned(),
        _ => MEDIA_OCI_MANIFEST.to_owned(),
    }
}

pub(super) fn is_index(media_type: &str, bytes: &[u8]) -> bool {
    media_type == MEDIA_OCI_INDEX
        || media_type == MEDIA_DOCKER_LIST
        || media_type_of(bytes) == MEDIA_OCI_INDEX
}

/// The linux/amd64 entry of an image index.
pub(super) fn pick_platform(bytes: &[u8]) -> Result<Descriptor, PullError> {
    let index: ImageIndex = serde_json::from_slice(bytes)
        .map_err(|e| PullError::Image(format!("parsing image index: {e}")))?;
    index
        .manifests()
        .iter()
        .find(|m| {
            m.platform()
                .as_ref()
                .is_some_and(|p| *p.os() == Os::Linux && *p.architecture() == Arch::Amd64)
        })
        .cloned()
        .ok_or_else(|| PullError::Image("image index has no linux/amd64 manifest".to_owned()))
}

pub(super) fn parse_manifest(bytes: &[u8]) -> Result<ImageManifest, PullError> {
    let manifest: ImageManifest = serde_json::from_slice(bytes)
        .map_err(|e| PullError::Image(format!("parsing manifest: {e}")))?;
    if manifest.schema_version() != 2 {
        return Err(PullError::Image(format!(
            "unsupported manifest schema version {}",
            manifest.schema_version()
        )));
    }
    if let Some(m) = manifest.media_type() {
        let m = m.to_string();
        if m != MEDIA_OCI_MANIFEST && m != MEDIA_DOCKER_MANIFEST {
            return Err(PullError::Image(format!(
                "unsupported manifest media type {m}"
            )));
        }
    }
    Ok(manifest)
}

pub(super) fn parse_config(
    bytes: &[u8],
    manifest: &ImageManifest,
) -> Result<ImageConfiguration, PullError> {
    let digest = digest_of(manifest.config());
    if sha256_digest(bytes) != digest {
        return Err(PullError::Image(format!(
            "config does not match its digest {digest}"
        )));
    }
    let config: ImageConfiguration = serde_json::from_slice(bytes)
        .map_err(|e| PullError::Image(format!("parsing image config: {e}")))?;
    let (diffs, layers) = (config.rootfs().diff_ids().len(), manifest.layers().len());
    if diffs != layers {
        return Err(PullError::Image(format!(
            "image config lists {diffs} layers, the manifest {layers}"
        )));
    }
    Ok(config)
}

/// What a container takes from its image (empty strings count as unset).
pub(super) fn defaults(config: &ImageConfiguration) -> ImageDefaults {
    let c = config.config().as_ref();
    let list = |f: fn(&oci_spec::image::Config) -> &Option<Vec<String>>| {
        c.and_then(|c| f(c).clone()).unwrap_or_default()
    };
    let text = |f: fn(&oci_spec::image::Config) -> &Option<String>| {
        c.and_then(|c| f(c).clone()).filter(|s| !s.is_empty())
    };
    ImageDefaults {
        entrypoint: list(|c| c.entrypoint()),
        cmd: list(|c| c.cmd()),
        env: list(|c| c.env()),
        working_dir: text(|c| c.working_dir()),
        user: text(|c| c.user()),
    }
}

/// chainID[0] = diffID[0]; chainID[n] = sha256("<chainID[n-1]> <diffID[n]>").
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for diff in diff_ids {
        let next = match out.last() {
            None => diff.clone(),
            Some(parent) => format!(
                "sha256:{}",
                hex::encode(Sha256::digest(format!("{parent} {diff}").as_bytes()))
            ),
        };
        out.push(next);
    }
    out
}

pub(super) fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex_of(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    #[test]
    fn chain_ids_follow_the_oci_definition() {
        let diffs = vec!["sha256:aaa".to_owned(), "sha256:bbb".to_owned()];
        let chain = chain_ids(&diffs);
        assert_eq!(chain[0], "sha256:aaa");
        assert_eq!(
            chain[1],
            format!(
                "sha256:{}",
                hex::encode(Sha256::digest(b"sha256:aaa sha256:bbb"))
            )
        );
        assert!(chain_ids(&[]).is_empty());
    }

    #[test]
    fn index_picks_linux_amd64() {
        let index = format!(
            r#"{{"schemaVersion":2,"manifests":[
            {{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{}","size":1,
             "platform":{{"architecture":"arm64","os":"linux"}}}},
            {{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{}","size":1,
             "platform":{{"architecture":"amd64","os":"linux"}}}}]}}"#,
            hex_of('a'),
            hex_of('b')
        );
        assert!(is_index("", index.as_bytes()));
        assert_eq!(
            digest_of(&pick_platform(index.as_bytes()).unwrap()),
            hex_of('b')
        );
        let none = index.replace("amd64", "s390x");
        assert!(pick_platform(none.as_bytes()).is_err());
    }

    #[test]
    fn manifests_and_configs_are_checked() {
        let config = br#"{"architecture":"amd64","os":"linux","config":{"Env":null,"Cmd":["sh"],"WorkingDir":""},"rootfs":{"type":"layers","diff_ids":["sha256:x"]}}"#;
        let manifest = |config_digest: &str, media: &str| {
            format!(
                r#"{{"schemaVersion":2,"mediaType":"{media}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config_digest}","size":1}},
                "layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{}","size":7}}]}}"#,
                hex_of('c')
            )
        };
        let good = manifest(&sha256_digest(config), MEDIA_DOCKER_MANIFEST);
        let m = parse_manifest(good.as_bytes()).unwrap();
        let c = parse_config(config, &m).unwrap();
        let d = defaults(&c);
        assert_eq!(d.cmd, vec!["sh"]);
        assert!(d.env.is_empty());
        assert_eq!(d.working_dir, None, "an empty WorkingDir is none");
        assert_eq!(to_containerd(&m.layers()[0]).size, 7);
        // A config that is not the one the manifest names.
        let other = manifest(&hex_of('d'), MEDIA_OCI_MANIFEST);
        let m = parse_manifest(other.as_bytes()).unwrap();
        assert!(
            matches!(parse_config(config, &m), Err(PullError::Image(m)) if m.contains("digest"))
        );
        // A manifest of a kind not run.
        let odd = manifest(&hex_of('d'), "application/vnd.example+json");
        assert!(parse_manifest(odd.as_bytes()).is_err());
    }
}
