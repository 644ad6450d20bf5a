//! Image references, validated against the distribution reference grammar
//! (github.com/distribution/reference): `[domain/]path[:tag][@digest]`.
//!
//! A reference without a domain is *valid* (it would mean Docker Hub), but
//! skiff has no route there; such images fail later with `ImagePullFailed`.

use crate::FieldError;
use once_cell::sync::Lazy;
use regex::Regex;
use std::fmt;

const DOMAIN_COMPONENT: &str = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])";
const PATH_COMPONENT: &str = r"[a-z0-9]+(?:(?:[_.]|__|[-]+)[a-z0-9]+)*";

static DOMAIN: Lazy<Regex> = Lazy::new(|| {
    Regex::new(&format!(
        r"^{DOMAIN_COMPONENT}(?:\.{DOMAIN_COMPONENT})*(?::[0-9]+)?$"
    ))
    .unwrap()
});
static PATH: Lazy<Regex> =
    Lazy::new(|| Regex::new(&format!(r"^{PATH_COMPONENT}(?:/{PATH_COMPONENT})*$")).unwrap());
static TAG: Lazy<Regex> = Lazy::new(|| Regex::new(r"^[\w][\w.-]{0,127}$").unwrap());
static DIGEST: Lazy<Regex> =
    Lazy::new(|| Regex::new(r"^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]{32,}$").unwrap());

pub const DEFAULT_REGISTRY: &str = "docker.io";
const MAX_NAME_LEN: usize = 255;

/// A parsed image reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageRef {
    /// Registry host (with port), `docker.io` when the reference names none.
    pub registry: String,
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

impl ImageRef {
    pub fn parse(reference: &str) -> Result<Self, FieldError> {
        let err = |m: &str| Err(FieldError::new("image", format!("{m}: {reference:?}")));
        if reference.is_empty() {
            return err("must not be empty");
        }
        let (rest, digest) = match reference.split_once('@') {
            Some((rest, digest)) => {
                if !DIGEST.is_match(digest) {
                    return err("invalid digest");
                }
                (rest, Some(digest.to_owned()))
            }
            None => (reference, None),
        };
        // A ':' after the last '/' starts the tag; one before it is a port.
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].find(':') {
            Some(i) => {
                let tag = &rest[last_slash + i + 1..];
                if !TAG.is_match(tag) {
                    return err("invalid tag");
                }
                (&rest[..last_slash + i], Some(tag.to_owned()))
            }
            None => (rest, None),
        };
        if name.len() > MAX_NAME_LEN {
            return err("repository name longer than 255 characters");
        }
        let (registry, path) = match name.split_once('/') {
            Some((first, path))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                if !DOMAIN.is_match(first) {
                    return err("invalid registry host");
                }
                (first.to_owned(), path)
            }
            _ => (DEFAULT_REGISTRY.to_owned(), name),
        };
        if !PATH.is_match(path) {
            return err("invalid repository name (lower-case letters, digits, separators)");
        }
        Ok(Self {
            registry,
            repository: path.to_owned(),
            tag,
            digest,
        })
    }

    /// The tag to resolve when neither tag nor digest was given.
    pub fn tag_or_latest(&self) -> &str {
        self.tag.as_deref().unwrap_or("latest")
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_local_registry_references() {
        let r = ImageRef::parse("127.0.0.1:5000/skiff/busybox:1").unwrap();
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.repository, "skiff/busybox");
        assert_eq!(r.tag.as_deref(), Some("1"));
        assert_eq!(r.to_string(), "127.0.0.1:5000/skiff/busybox:1");

        let r = ImageRef::parse("localhost/app").unwrap();
        assert_eq!(r.registry, "localhost");
        assert_eq!(r.tag_or_latest(), "latest");

        let d = format!("sha256:{}", "a".repeat(64));
        let r = ImageRef::parse(&format!("127.0.0.1:5000/app@{d}")).unwrap();
        assert_eq!(r.digest.as_deref(), Some(d.as_str()));
    }

    #[test]
    fn bare_names_default_to_docker_hub() {
        let r = ImageRef::parse("busybox").unwrap();
        assert_eq!(r.registry, "docker.io");
        assert_eq!(r.repository, "busybox");
    }

    #[test]
    fn rejects_malformed_references() {
        for bad in [
            "",
            "UPPER/case",
            "127.0.0.1:5000/Busybox",
            "a//b",
            "a:tag:extra",
            "name:",
            "-lead/x",
            "host:port/x:",
            "x@sha256:short",
            "a b",
            "127.0.0.1:5000/",
        ] {
            let err = ImageRef::parse(bad).unwrap_err();
            assert_eq!(err.field, "image", "{bad:?} should be rejected");
        }
    }
}
