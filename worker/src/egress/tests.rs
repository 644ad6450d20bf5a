//! The egress policy's decisions, table-tested; rules as the operator
//! writes them.

use super::*;

fn rules(list: &[&str]) -> Vec<Rule> {
    parse_rules(&list.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
}

fn ips(list: &[&str]) -> Vec<IpAddr> {
    list.iter().map(|s| s.parse().unwrap()).collect()
}

#[test]
fn rules_parse_hosts_ports_and_networks() {
    let cases: &[(&str, Result<Rule, ()>)] = &[
        (
            "registry.example.com",
            Ok(Rule::Host("registry.example.com".into())),
        ),
        (
            "Registry.Example.COM.",
            Ok(Rule::Host("registry.example.com".into())),
        ),
        (
            "127.0.0.1:5001",
            Ok(Rule::HostPort("127.0.0.1".into(), 5001)),
        ),
        ("[::1]:5000", Ok(Rule::HostPort("::1".into(), 5000))),
        ("::1", Ok(Rule::Host("::1".into()))),
        ("10.0.0.0/8", Ok(Rule::Net("10.0.0.0/8".parse().unwrap()))),
        ("fd00::/8", Ok(Rule::Net("fd00::/8".parse().unwrap()))),
        (
            "::ffff:10.0.0.0/104",
            Ok(Rule::Net("10.0.0.0/8".parse().unwrap())),
        ),
        ("::ffff:10.0.0.5", Ok(Rule::Host("10.0.0.5".into()))),
        ("10.0.0.0/33", Err(())),
        ("host:port", Err(())),
        ("bad host", Err(())),
        ("", Err(())),
    ];
    for (text, want) in cases {
        let got = text.parse::<Rule>().map_err(|_| ());
        assert_eq!(&got, want, "{text}");
    }
    assert_eq!(rules(&[" a ", "", "b:1"]).len(), 2);
}

#[test]
fn the_policy_decides_by_deny_then_allow_then_reserved_addresses() {
    use Scheme::{Http, Https};
    let open = EgressPolicy::default();
    let local = EgressPolicy {
        plain_http: rules(&["127.0.0.1:5001"]),
        deny: rules(&["blocked.example", "203.0.113.0/24"]),
        ..Default::default()
    };
    let strict = EgressPolicy {
        allow: rules(&["registry.corp", "10.20.0.0/16"]),
        deny: rules(&["10.20.9.0/24"]),
        ..Default::default()
    };
    let pinned_loopback = EgressPolicy {
        allow: rules(&["169.254.0.0/16", "localhost"]),
        ..Default::default()
    };
    type Case<'a> = (
        &'a str,
        &'a EgressPolicy,
        &'a str,
        u16,
        Scheme,
        &'a [&'a str],
        &'a str,
    );
    #[rustfmt::skip]
    let cases: &[Case] = &[
        // (what, policy, host, port, scheme, resolves to, expected: "ok" or a word of the refusal)
        ("public https", &open, "ghcr.io", 443, Https, &["140.82.113.33"], "ok"),
        ("private network by default", &open, "reg.lan", 443, Https, &["10.1.2.3"], "ok"),
        ("metadata by name", &open, "metadata.google.internal", 80, Https, &["169.254.169.254"], "link-local"),
        ("metadata literal", &open, "169.254.169.254", 443, Https, &["169.254.169.254"], "link-local"),
        ("v4-mapped metadata", &open, "x", 443, Https, &["::ffff:169.254.169.254"], "link-local"),
        ("aws v6 metadata", &open, "x", 443, Https, &["fd00:ec2::254"], "cloud metadata"),
        ("alibaba metadata", &open, "x", 443, Https, &["100.100.100.200"], "cloud metadata"),
        ("azure wireserver", &open, "x", 443, Https, &["168.63.129.16"], "cloud metadata"),
        ("loopback by default", &open, "localhost", 5000, Https, &["127.0.0.1"], "loopback"),
        ("v6 loopback", &open, "x", 443, Https, &["::1"], "loopback"),
        ("one bad address of many", &open, "x", 443, Https, &["140.82.113.33", "127.0.0.1"], "loopback"),
        ("unspecified", &open, "x", 443, Https, &["0.0.0.0"], "unspecified"),
        ("plain http by default", &open, "ghcr.io", 80, Http, &["140.82.113.33"], "SKIFF_INSECURE_REGISTRIES"),
        ("no address", &open, "nowhere", 443, Https, &[], "no address"),
        ("named plain http registry", &local, "127.0.0.1", 5001, Http, &["127.0.0.1"], "ok"),
        ("its https too", &local, "127.0.0.1", 5001, Https, &["127.0.0.1"], "ok"),
        ("another loopback port", &local, "127.0.0.1", 5002, Http, &["127.0.0.1"], "SKIFF_INSECURE_REGISTRIES"),
        ("another loopback port, https", &local, "127.0.0.1", 5002, Https, &["127.0.0.1"], "loopback"),
        ("denied name", &local, "BLOCKED.example.", 443, Https, &["140.82.113.33"], "SKIFF_REGISTRY_DENY"),
        ("denied network", &local, "x", 443, Https, &["203.0.113.9"], "203.0.113.0/24"),
        ("allowed name", &strict, "registry.corp", 443, Https, &["192.0.2.1"], "ok"),
        ("allowed network", &strict, "mirror", 443, Https, &["10.20.1.1"], "ok"),
        ("deny inside allow", &strict, "mirror", 443, Https, &["10.20.9.1"], "SKIFF_REGISTRY_DENY"),
        ("outside the allow list", &strict, "ghcr.io", 443, Https, &["140.82.113.33"], "SKIFF_REGISTRY_ALLOW"),
        ("partly outside", &strict, "mirror", 443, Https, &["10.20.1.1", "140.82.113.33"], "SKIFF_REGISTRY_ALLOW"),
        ("operator allows link-local", &pinned_loopback, "x", 443, Https, &["169.254.1.1"], "ok"),
        ("operator allows localhost by name", &pinned_loopback, "localhost", 5000, Https, &["127.0.0.1"], "ok"),
    ];
    for (what, policy, host, port, scheme, addrs, want) in cases {
        let got = policy.check(host, *port, *scheme, &ips(addrs));
        match (got, *want) {
            (Ok(()), "ok") => {}
            (Err(refusal), word) if word != "ok" => {
                let text = refusal.to_string();
                assert!(text.contains(word), "{what}: {text}");
                assert!(text.contains("egress policy"), "{what}: {text}");
            }
            (got, want) => panic!("{what}: got {got:?}, want {want}"),
        }
    }
}

#[test]
fn plain_http_is_for_named_registries_only() {
    let policy = EgressPolicy {
        plain_http: rules(&["127.0.0.1:5001", "reg.lan"]),
        ..Default::default()
    };
    assert!(policy.plain_http_for("127.0.0.1", 5001));
    assert!(!policy.plain_http_for("127.0.0.1", 5000));
    assert!(policy.plain_http_for("REG.lan", 80));
    assert!(!policy.plain_http_for("ghcr.io", 443));
}
