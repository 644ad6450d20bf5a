//! The CLI's error: what went wrong, with enough context to print one
//! useful message (`main` prints it with its chain of sources).

use skiff_api::error::Problem;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API answered with a problem+json (or another non-2xx).
    #[error("{}", problem_text(.problem))]
    Api { problem: Box<Problem> },
    /// The API could not be reached, or the connection broke.
    #[error("{what} {url}")]
    Transport {
        what: &'static str,
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// The interactive exec's WebSocket failed.
    #[error("interactive exec at {url}")]
    WebSocket {
        url: String,
        #[source]
        source: Box<tokio_tungstenite::tungstenite::Error>,
    },
    /// An answer the CLI could not read as the type it expected.
    #[error("unexpected answer from {url}")]
    Decode {
        url: String,
        #[source]
        source: serde_json::Error,
    },
    /// A bad flag value, caught before any request.
    #[error("invalid {flag} {value:?}: {reason}")]
    Flag {
        flag: &'static str,
        value: String,
        reason: String,
    },
    /// No API URL or token from flags, environment or profile.
    #[error("{0}")]
    NotConfigured(String),
    #[error("{what} {}", .path.display())]
    File {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not valid TOML", .path.display())]
    ConfigSyntax {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    /// A container name or id prefix that names none, or several.
    #[error("{0}")]
    Resolve(String),
    #[error("writing output: {0}")]
    Output(String),
}

impl Error {
    pub fn flag(flag: &'static str, value: &str, reason: impl Into<String>) -> Self {
        Self::Flag {
            flag,
            value: value.to_owned(),
            reason: reason.into(),
        }
    }

    /// The offending field of a problem, when the API named one.
    pub fn field(&self) -> Option<&str> {
        match self {
            Self::Api { problem } => problem.field.as_deref(),
            _ => None,
        }
    }
}

/// `title (status): detail`, then the field and any limit/use figures.
fn problem_text(p: &Problem) -> String {
    let mut text = format!("{} ({}): {}", p.title, p.status, p.detail);
    if let Some(field) = &p.field {
        text.push_str(&format!("\n  field: {field}"));
    }
    for (name, value) in [("limit", &p.limit), ("use", &p.use_), ("max", &p.max)] {
        if let Some(value) = value {
            text.push_str(&format!("\n  {name}: {value}"));
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_problem_prints_title_status_detail_and_field() {
        let problem: Problem = serde_json::from_value(serde_json::json!({
            "type": "https://skiff.dev/problems/invalid-request", "title": "Invalid request",
            "status": 400, "detail": "must be 0.1 to 4", "field": "cpu"
        }))
        .unwrap();
        let err = Error::Api {
            problem: Box::new(problem),
        };
        assert_eq!(
            err.to_string(),
            "Invalid request (400): must be 0.1 to 4\n  field: cpu"
        );
        assert_eq!(err.field(), Some("cpu"));
    }
}
