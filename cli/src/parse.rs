//! Flag values as users type them, turned into the API's fields. Pure
//! functions: the table tests below are their specification.

use crate::Error;
use skiff_api::model::RestartPolicyName;
use skiff_core::{PortRequest, Protocol};
use std::collections::BTreeMap;

/// `--memory`: MiB as a bare number, or with a suffix `m`/`mb`/`mi`/`mib`
/// (MiB) or `g`/`gb`/`gi`/`gib` (GiB, fractions allowed: `1.5g`), any case.
/// The result must be a whole number of MiB.
pub fn memory_mib(text: &str) -> Result<u64, Error> {
    let bad = |reason: &str| Error::flag("--memory", text, reason);
    let lower = text.trim().to_ascii_lowercase();
    let split = lower
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(lower.len());
    let (number, unit) = lower.split_at(split);
    let factor = match unit {
        "" | "m" | "mb" | "mi" | "mib" => 1.0,
        "g" | "gb" | "gi" | "gib" => 1024.0,
        _ => return Err(bad("the unit must be m or g (e.g. 256, 512m, 1g)")),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| bad("expected a number of MiB, or one with m or g (e.g. 512m, 1g)"))?;
    let mib = value * factor;
    if mib.fract() != 0.0 || !mib.is_finite() {
        return Err(bad("must be a whole number of MiB"));
    }
    Ok(mib as u64)
}

/// `KEY=VAL` (`-e`, `--secret-env`, `--label`). The value may be empty and
/// may hold `=`; the key may not be empty.
pub fn key_value(flag: &'static str, text: &str) -> Result<(String, String), Error> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(Error::flag(flag, text, "expected KEY=VALUE")),
    }
}

/// Every `KEY=VAL` of a repeated flag, as a map (a later key wins, as
/// `docker run -e` does); `None` when the flag was not given.
pub fn key_values(
    flag: &'static str,
    items: &[String],
) -> Result<Option<BTreeMap<String, String>>, Error> {
    if items.is_empty() {
        return Ok(None);
    }
    items
        .iter()
        .map(|item| key_value(flag, item))
        .collect::<Result<BTreeMap<_, _>, _>>()
        .map(Some)
}

/// `--port`: `PORT`, `HOST_PORT:PORT`, either with `/tcp` or `/udp`.
pub fn port(text: &str) -> Result<PortRequest, Error> {
    let bad = |reason: &str| Error::flag("--port", text, reason);
    let (ports, protocol) = match text.rsplit_once('/') {
        Some((ports, "tcp")) => (ports, Protocol::Tcp),
        Some((ports, "udp")) => (ports, Protocol::Udp),
        Some(_) => return Err(bad("the protocol must be tcp or udp")),
        None => (text, Protocol::Tcp),
    };
    let number = |s: &str| {
        s.parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| bad("ports are 1 to 65535: PORT or HOST_PORT:PORT[/tcp|/udp]"))
    };
    let (host_port, port) = match ports.split_once(':') {
        Some((host, container)) => (Some(number(host)?), number(container)?),
        None => (None, number(ports)?),
    };
    Ok(PortRequest {
        port,
        protocol,
        host_port,
    })
}

/// `--restart`: `never`, `always`, `on-failure` (or `on_failure`), and
/// `on-failure:N` for at most N restarts, as `docker run` spells them.
pub fn restart(text: &str) -> Result<(RestartPolicyName, Option<u32>), Error> {
    let bad = || {
        Error::flag(
            "--restart",
            text,
            "expected never, always, on-failure or on-failure:N",
        )
    };
    let (name, max) = match text.split_once(':') {
        Some((name, max)) => (name, Some(max.parse::<u32>().map_err(|_| bad())?)),
        None => (text, None),
    };
    let policy = match name {
        "never" | "no" => RestartPolicyName::Never,
        "always" => RestartPolicyName::Always,
        "on-failure" | "on_failure" => RestartPolicyName::OnFailure,
        _ => return Err(bad()),
    };
    if max.is_some() && !matches!(policy, RestartPolicyName::OnFailure) {
        return Err(bad());
    }
    Ok((policy, max))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_sizes() {
        #[rustfmt::skip]
        let rows = [
            ("256", Some(256)), ("512m", Some(512)), ("512M", Some(512)), ("64MiB", Some(64)),
            ("1g", Some(1024)), ("1G", Some(1024)), ("1.5g", Some(1536)), ("2gib", Some(2048)),
            ("0.1g", None), ("1.5", None), ("", None), ("m", None), ("12k", None),
            ("-5", None), ("1e3", None), ("1..2g", None),
        ];
        for (text, want) in rows {
            assert_eq!(memory_mib(text).ok(), want, "{text:?}");
        }
    }

    #[test]
    fn key_values_keep_equals_signs_and_empty_values() {
        assert_eq!(
            key_value("-e", "A=b=c").unwrap(),
            ("A".into(), "b=c".into())
        );
        assert_eq!(key_value("-e", "A=").unwrap(), ("A".into(), "".into()));
        for bad in ["A", "=x", ""] {
            let err = key_value("-e", bad).unwrap_err();
            assert!(err.to_string().contains("KEY=VALUE"), "{bad}: {err}");
        }
        let map = key_values("-e", &["A=1".into(), "B=2".into(), "A=3".into()])
            .unwrap()
            .unwrap();
        assert_eq!(map.get("A").map(String::as_str), Some("3"));
        assert_eq!(map.len(), 2);
        assert_eq!(key_values("-e", &[]).unwrap(), None);
    }

    #[test]
    fn ports() {
        let p = port("8080").unwrap();
        assert_eq!(
            (p.port, p.host_port, p.protocol),
            (8080, None, Protocol::Tcp)
        );
        let p = port("18080:80/udp").unwrap();
        assert_eq!(
            (p.port, p.host_port, p.protocol),
            (80, Some(18080), Protocol::Udp)
        );
        for bad in ["0", "70000", "a", "80/sctp", ":80", "80:", ""] {
            assert!(port(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn restart_policies() {
        assert!(matches!(
            restart("never").unwrap(),
            (RestartPolicyName::Never, None)
        ));
        assert!(matches!(
            restart("on-failure:3").unwrap(),
            (RestartPolicyName::OnFailure, Some(3))
        ));
        assert!(matches!(
            restart("always").unwrap(),
            (RestartPolicyName::Always, None)
        ));
        for bad in ["sometimes", "always:3", "on-failure:x", ""] {
            assert!(restart(bad).is_err(), "{bad}");
        }
    }
}
