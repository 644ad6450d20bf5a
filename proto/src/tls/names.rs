//! Who a certificate names. Every certificate the control plane's CA issues
//! names exactly one party as a DNS name in its subject alternative names:
//! the control plane ([`CONTROL_PLANE_NAME`]), or one host
//! (`<host id>.host.skiff`). Host ids are therefore DNS labels; a name a
//! worker asks for is made into one by [`host_label`].

/// The name every control-plane replica's certificate carries, and the
/// name workers verify when they dial it (whatever address they dial).
pub const CONTROL_PLANE_NAME: &str = "control-plane.skiff";
const HOST_SUFFIX: &str = ".host.skiff";
/// Longest host label a worker may ask for; the CA may add `-<n>` to make
/// it unique within the 63 bytes of a DNS label.
pub const MAX_REQUESTED_LABEL: usize = 50;

/// What a verified certificate says its holder is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    ControlPlane,
    Host(String),
}

impl Role {
    /// The DNS name a certificate for this role carries.
    pub fn dns_name(&self) -> String {
        match self {
            Role::ControlPlane => CONTROL_PLANE_NAME.to_owned(),
            Role::Host(id) => host_dns_name(id),
        }
    }

    /// The role named by a certificate's DNS name, if it is one of ours.
    pub fn from_dns_name(name: &str) -> Option<Role> {
        if name == CONTROL_PLANE_NAME {
            return Some(Role::ControlPlane);
        }
        let id = name.strip_suffix(HOST_SUFFIX)?;
        is_host_label(id).then(|| Role::Host(id.to_owned()))
    }
}

/// The DNS name in a host's certificate, and the one the control plane
/// verifies when it dials that host's agent.
pub fn host_dns_name(host: &str) -> String {
    format!("{host}{HOST_SUFFIX}")
}

/// A valid host id: one lowercase DNS label.
pub fn is_host_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// The host label for a requested name (`SKIFF_HOST_ID` or the hostname):
/// lowercased, anything outside `[a-z0-9-]` made a `-`, runs of `-` and
/// leading or trailing ones dropped, cut to [`MAX_REQUESTED_LABEL`];
/// `host` when nothing is left.
pub fn host_label(requested: &str) -> String {
    let mut out = String::new();
    for c in requested.chars() {
        let c = c.to_ascii_lowercase();
        let c = if c.is_ascii_lowercase() || c.is_ascii_digit() {
            c
        } else {
            '-'
        };
        if c == '-' && (out.is_empty() || out.ends_with('-')) {
            continue;
        }
        out.push(c);
    }
    out.truncate(MAX_REQUESTED_LABEL);
    let out = out.trim_end_matches('-');
    if out.is_empty() {
        "host".to_owned()
    } else {
        out.to_owned()
    }
}

/// The `n`th candidate for a requested label: the label itself, then
/// `label-2`, `label-3`, ...
pub fn candidate(label: &str, n: u32) -> String {
    if n <= 1 {
        label.to_owned()
    } else {
        format!("{label}-{n}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requested_names_become_host_labels() {
        let long = "a".repeat(80);
        let cases: &[(&str, &str)] = &[
            ("host-1", "host-1"),
            ("Node_7.example.com", "node-7-example-com"),
            ("--x--y--", "x-y"),
            ("", "host"),
            ("ünïcode", "n-code"),
            ("...", "host"),
            (&long, &long[..MAX_REQUESTED_LABEL]),
        ];
        for (requested, want) in cases {
            let got = host_label(requested);
            assert_eq!(&got, want, "{requested:?}");
            assert!(is_host_label(&got), "{got:?} is a label");
            assert!(is_host_label(&candidate(&got, 99)), "with a suffix too");
        }
    }

    #[test]
    fn roles_round_trip_through_their_dns_names_and_nothing_else_is_a_role() {
        for role in [Role::ControlPlane, Role::Host("host-1".into())] {
            assert_eq!(Role::from_dns_name(&role.dns_name()), Some(role));
        }
        for name in [
            "host-1",
            "x.host.skiff.evil",
            ".host.skiff",
            "Host-1.host.skiff",
            "a.b.host.skiff",
            "control-plane.skiff.",
            "localhost",
        ] {
            assert_eq!(Role::from_dns_name(name), None, "{name}");
        }
    }

    #[test]
    fn candidates_count_from_the_label_itself() {
        assert_eq!(candidate("w", 1), "w");
        assert_eq!(candidate("w", 2), "w-2");
    }
}
