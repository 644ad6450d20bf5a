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
/// ASCII, as the grammar means `\w` (Rust's `\w` is Unicode).
const TAG_RE: &str = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}";
const DIGEST_RE: &str = r"[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]{32,}";
static TAG: Lazy<Regex> = Lazy::new(|| Regex::new(&format!("^{TAG_RE}$")).unwrap());
static DIGEST: Lazy<Regex> = Lazy::new(|| Regex::new(&format!("^{DIGEST_RE}$")).unwrap());

/// What [`ImageRef::parse`] accepts, as one regular expression (for the
/// OpenAPI document): the name's length (a look-ahead, which the `regex`
/// crate has not: see [`GRAMMAR`]), then the grammar.
static PATTERN: Lazy<String> = Lazy::new(|| {
    format!(
        "^(?=.{{1,{MAX_NAME_LEN}}}(?::{TAG_RE})?(?:@[^@]*)?$){}",
        &GRAMMAR[1..]
    )
});

/// The grammar of references [`ImageRef::parse`] accepts, anchored, but for
/// the name's length: a registry host is a first component with a `.` or a
/// `:port`, or `localhost`; without one, the first path component has no
/// `.` unless it is the only one.
static GRAMMAR: Lazy<String> = Lazy::new(|| {
    let host = format!(
        "(?:{DOMAIN_COMPONENT}(?:\\.{DOMAIN_COMPONENT})+(?::[0-9]+)?|{DOMAIN_COMPONENT}:[0-9]+|localhost)"
    );
    let first = r"[a-z0-9]+(?:(?:_|__|[-]+)[a-z0-9]+)*";
    let p = PATH_COMPONENT;
    format!("^(?:{host}/{p}(?:/{p})*|{first}(?:/{p})+|{p})(?::{TAG_RE})?(?:@{DIGEST_RE})?$")
});

/// The regular expression (ECMA 262, as JSON Schema's `pattern`) of the
/// references [`ImageRef::parse`] accepts.
pub fn image_pattern() -> &'static str {
    &PATTERN
}

/// The regular expression (anchored) of a registry host, `host[:port]`,
/// as an image reference spells it.
pub fn registry_host_pattern() -> &'static str {
    DOMAIN.as_str()
}

/// Whether `host` is a registry `host[:port]` an image reference could name.
pub fn is_registry_host(host: &str) -> bool {
    DOMAIN.is_match(host)
}

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
    fn the_pattern_accepts_what_parse_accepts() {
        // The grammar part (the length look-ahead is for the OpenAPI
        // document's regex engines; its bound is MAX_NAME_LEN).
        assert!(image_pattern().starts_with("^(?=.{1,255}(?::"));
        assert!(image_pattern().ends_with(&GRAMMAR[1..]));
        let pattern = Regex::new(&GRAMMAR).unwrap();
        for reference in [
            "busybox",
            "a.b.c",
            "skiff/busybox:1",
            "127.0.0.1:5000/skiff/busybox:latest",
            "localhost/x",
            "localhost:5000",
            "localhost:5000/a/b@sha256:0123456789abcdef0123456789abcdef",
            "host:5000/repo",
            "Host.Example/x",
            "ab-c/d",
            "a__b/c",
            "",
            "A/b",
            "a_b.c/d",
            "a..b/c",
            "a:b:c",
            "a_b:5000/x",
            "x:",
            "x:\u{e9}t\u{e9}",
            "x:-tag",
            "x@sha256:short",
            "x/",
            "/x",
            "X",
        ] {
            assert_eq!(
                pattern.is_match(reference),
                ImageRef::parse(reference).is_ok(),
                "{reference:?}"
            );
        }
    }

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
