//! Liveness and readiness probes: what a request may ask the worker to
//! check in a running container, how often, and when a run of results
//! turns into a verdict.
//!
//! A probe is one action (`exec` a command, `http_get` a path, open a
//! `tcp_socket`) with its timing. Its host runs it every `period_s` from
//! `initial_delay_s` after the start; an attempt that takes longer than
//! `timeout_s` fails. `failure_threshold` failures in a row make it fail
//! (liveness: the process is killed and the run ends with
//! `LivenessProbeFailed`; readiness: the container is not ready); one
//! success makes a readiness probe pass. [`Tally`] is that rule.

use crate::FieldError;
use serde::{Deserialize, Serialize};

/// A probe as requested, stored and sent to the worker (defaults filled
/// in by serde).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Probe {
    /// Runs a command in the container; exit code 0 passes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<ExecAction>,
    /// GETs a path on a port of the container; 200 to 399 passes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_get: Option<HttpGetAction>,
    /// Opens a TCP connection to a port of the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_socket: Option<TcpSocketAction>,
    /// Seconds after the start before the first attempt (0 to 3600,
    /// default 0).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(maximum = 3600))]
    pub initial_delay_s: u32,
    /// Seconds between attempts (1 to 3600, default 10).
    #[serde(default = "default_period_s")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 3600))]
    pub period_s: u32,
    /// Seconds an attempt may take (1 to 3600, default 1).
    #[serde(default = "default_timeout_s")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 3600))]
    pub timeout_s: u32,
    /// Failures in a row that make the probe fail (1 to 100, default 3).
    #[serde(default = "default_failure_threshold")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 100))]
    pub failure_threshold: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ExecAction {
    /// The program and its arguments (1 to 64 of them).
    #[cfg_attr(feature = "openapi", schema(min_items = 1, max_items = 64))]
    pub command: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct HttpGetAction {
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 65535))]
    pub port: u32,
    /// Starts with '/', at most 2048 printable ASCII characters without
    /// spaces (default `/`).
    #[serde(default = "default_path")]
    #[cfg_attr(feature = "openapi", schema(pattern = "^/[!-~]{0,2047}$"))]
    pub path: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TcpSocketAction {
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 65535))]
    pub port: u32,
}

fn default_period_s() -> u32 {
    10
}
fn default_timeout_s() -> u32 {
    1
}
fn default_failure_threshold() -> u32 {
    3
}
fn default_path() -> String {
    "/".into()
}

/// The action of a probe, once checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action<'a> {
    Exec(&'a [String]),
    HttpGet { port: u16, path: &'a str },
    TcpSocket { port: u16 },
}

impl Probe {
    /// Its one action (None when it has none or several: [`Probe::validate`]
    /// refuses those).
    pub fn action(&self) -> Option<Action<'_>> {
        match (&self.exec, &self.http_get, &self.tcp_socket) {
            (Some(e), None, None) => Some(Action::Exec(&e.command)),
            (None, Some(h), None) => Some(Action::HttpGet {
                port: u16::try_from(h.port).ok()?,
                path: &h.path,
            }),
            (None, None, Some(t)) => Some(Action::TcpSocket {
                port: u16::try_from(t.port).ok()?,
            }),
            _ => None,
        }
    }

    /// Checks it; `field` is the request's name for it (`liveness_probe`).
    /// The command's own rules (lengths) are the caller's to check.
    pub fn validate(&self, field: &str) -> Result<(), FieldError> {
        let set = [
            self.exec.is_some(),
            self.http_get.is_some(),
            self.tcp_socket.is_some(),
        ];
        if set.iter().filter(|s| **s).count() != 1 {
            return Err(FieldError::new(
                field,
                "must have exactly one of exec, http_get and tcp_socket",
            ));
        }
        let port_ok = |p: u32| (1..=65535).contains(&p);
        if let Some(e) = &self.exec {
            if e.command.is_empty() {
                return Err(FieldError::new(
                    format!("{field}.exec.command"),
                    "must name a program",
                ));
            }
        }
        if let Some(h) = &self.http_get {
            if !port_ok(h.port) {
                return Err(FieldError::new(
                    format!("{field}.http_get.port"),
                    "must be 1 to 65535",
                ));
            }
            let printable = h.path.bytes().all(|b| b.is_ascii_graphic());
            if !h.path.starts_with('/') || h.path.len() > 2048 || !printable {
                return Err(FieldError::new(
                    format!("{field}.http_get.path"),
                    "must start with '/' and be at most 2048 printable ASCII characters without spaces",
                ));
            }
        }
        if let Some(t) = &self.tcp_socket {
            if !port_ok(t.port) {
                return Err(FieldError::new(
                    format!("{field}.tcp_socket.port"),
                    "must be 1 to 65535",
                ));
            }
        }
        let ranges = [
            ("initial_delay_s", self.initial_delay_s, 0, 3600),
            ("period_s", self.period_s, 1, 3600),
            ("timeout_s", self.timeout_s, 1, 3600),
            ("failure_threshold", self.failure_threshold, 1, 100),
        ];
        for (name, value, min, max) in ranges {
            if !(min..=max).contains(&value) {
                return Err(FieldError::new(
                    format!("{field}.{name}"),
                    format!("must be {min} to {max}"),
                ));
            }
        }
        Ok(())
    }
}

/// A probe's results in a row, and its verdict: `true` passing, `false`
/// failing. A liveness probe starts passing, a readiness probe failing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    pub passing: bool,
    failures: u32,
}

impl Tally {
    pub fn new(passing: bool) -> Self {
        Self {
            passing,
            failures: 0,
        }
    }

    /// Counts one attempt; returns the new verdict when it changes.
    pub fn observe(&mut self, ok: bool, failure_threshold: u32) -> Option<bool> {
        let before = self.passing;
        if ok {
            self.failures = 0;
            self.passing = true;
        } else {
            self.failures = self.failures.saturating_add(1);
            if self.failures >= failure_threshold {
                self.passing = false;
            }
        }
        (self.passing != before).then_some(self.passing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Probe {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn defaults_fill_in_and_one_action_is_required() {
        let p = parse(r#"{"tcp_socket": {"port": 8080}}"#);
        assert_eq!(
            (
                p.initial_delay_s,
                p.period_s,
                p.timeout_s,
                p.failure_threshold
            ),
            (0, 10, 1, 3)
        );
        assert_eq!(p.action(), Some(Action::TcpSocket { port: 8080 }));
        assert_eq!(p.validate("liveness_probe"), Ok(()));
        let h = parse(r#"{"http_get": {"port": 80}}"#);
        assert_eq!(
            h.action(),
            Some(Action::HttpGet {
                port: 80,
                path: "/"
            })
        );

        let field = |json: &str| parse(json).validate("p").unwrap_err().field;
        let cases = [
            (r#"{}"#, "p"),
            (
                r#"{"exec": {"command": ["true"]}, "tcp_socket": {"port": 1}}"#,
                "p",
            ),
            (r#"{"exec": {"command": []}}"#, "p.exec.command"),
            (r#"{"tcp_socket": {"port": 0}}"#, "p.tcp_socket.port"),
            (r#"{"http_get": {"port": 70000}}"#, "p.http_get.port"),
            (
                r#"{"http_get": {"port": 80, "path": "x"}}"#,
                "p.http_get.path",
            ),
            (
                r#"{"http_get": {"port": 80, "path": "/a b"}}"#,
                "p.http_get.path",
            ),
            (
                r#"{"http_get": {"port": 80, "path": "/a\r\nX: y"}}"#,
                "p.http_get.path",
            ),
            (
                r#"{"exec": {"command": ["true"]}, "period_s": 0}"#,
                "p.period_s",
            ),
            (
                r#"{"exec": {"command": ["true"]}, "timeout_s": 3601}"#,
                "p.timeout_s",
            ),
            (
                r#"{"exec": {"command": ["true"]}, "failure_threshold": 0}"#,
                "p.failure_threshold",
            ),
            (
                r#"{"exec": {"command": ["true"]}, "initial_delay_s": 4000}"#,
                "p.initial_delay_s",
            ),
        ];
        for (json, expected) in cases {
            assert_eq!(field(json), expected, "{json}");
        }
    }

    #[test]
    fn a_verdict_changes_after_the_threshold_of_failures_or_one_success() {
        // (results, threshold, verdict changes seen), from a passing start.
        let cases: &[(&[bool], u32, &[bool])] = &[
            (&[false, false], 3, &[]),
            (&[false, false, false], 3, &[false]),
            (&[false, true, false, false], 3, &[]),
            (&[false], 1, &[false]),
            (
                &[false, false, true, false, false],
                2,
                &[false, true, false],
            ),
        ];
        for (results, threshold, expected) in cases {
            let mut t = Tally::new(true);
            let seen: Vec<bool> = results
                .iter()
                .filter_map(|ok| t.observe(*ok, *threshold))
                .collect();
            assert_eq!(&seen, expected, "{results:?} threshold {threshold}");
        }
        // A readiness probe starts failing; one success passes it.
        let mut ready = Tally::new(false);
        assert_eq!(ready.observe(false, 3), None);
        assert_eq!(ready.observe(true, 3), Some(true));
    }
}
