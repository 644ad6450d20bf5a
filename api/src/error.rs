//! The one HTTP error type: every failure leaves as `application/problem+json`
//! (RFC 9457) with `type`, `title`, `status`, `detail` and, for bad input, the
//! `field` at fault. 5xx bodies stay generic; the cause goes to the log.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use skiff_core::FieldError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{field}: {detail}")]
    Invalid { field: String, detail: String },
    #[error("missing or invalid bearer token")]
    Unauthorized,
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{detail}")]
    Conflict {
        field: Option<String>,
        detail: String,
    },
    /// No host could ever take the request: `field` names the resource,
    /// `max` the largest value any host offers (when it is a number).
    #[error("{detail}")]
    NoHostFits {
        field: String,
        max: Option<serde_json::Value>,
        detail: String,
    },
    /// No live host could ever give the request its network (a private
    /// network, a host port outside every host's range, that many ports):
    /// 409, the host ports being the resource in conflict.
    #[error("{detail}")]
    NoHostOffers {
        field: String,
        max: Option<serde_json::Value>,
        detail: String,
    },
    /// Well-formed, but not acceptable as a whole (e.g. `tasks` of the
    /// wrong length).
    #[error("{field}: {detail}")]
    Unprocessable { field: String, detail: String },
    /// An `Idempotency-Key` already used for a different request.
    #[error("this Idempotency-Key was used for a different request (method, path or body); use a new key")]
    IdempotencyKeyReused,
    #[error("the admin token is required")]
    Forbidden,
    /// The token's bucket for this kind of request is empty.
    #[error("too many requests with this token; retry after {retry_after_s} s")]
    RateLimited { limit: u32, retry_after_s: u64 },
    /// Admission past one of the tenant's quotas.
    #[error("{0}")]
    QuotaExceeded(crate::store::quotas::Exceeded),
    #[error("method not allowed on this route")]
    MethodNotAllowed,
    #[error("request body larger than 1 MiB")]
    PayloadTooLarge,
    #[error("{0}")]
    Timeout(String),
    /// The request took longer than the server's request timeout.
    #[error("the request did not finish within the server's request timeout of {0} s; retry")]
    RequestTimeout(f64),
    /// This replica has as many requests in progress as it takes.
    #[error(
        "this replica is at its limit of requests in progress; retry after the time in Retry-After"
    )]
    Overloaded,
    #[error("{0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

/// (Deserialize: clients in this workspace, e.g. the CLI, read it with
/// this very type.)
#[derive(Debug, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Problem {
    #[serde(rename = "type")]
    pub type_: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// With `no-host-fits`: the largest value any host offers for `field`
    /// (when that is a number: not for `network` or a host port).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<f64>)]
    pub max: Option<serde_json::Value>,
    /// With `quota-exceeded`: the quota's limit (vCPU for `max_vcpu`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<f64>)]
    pub limit: Option<serde_json::Value>,
    /// With `quota-exceeded`: the tenant's use before this request.
    #[serde(rename = "use", skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<f64>)]
    pub use_: Option<serde_json::Value>,
}

/// Seconds a client should wait before retrying a 503.
pub const RETRY_AFTER_S: u32 = 2;

impl ApiError {
    pub fn invalid(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            detail: detail.into(),
        }
    }

    pub fn internal(err: impl std::fmt::Display) -> Self {
        Self::Internal(err.to_string())
    }

    fn parts(&self) -> (StatusCode, &'static str, &'static str) {
        match self {
            Self::Invalid { .. } => (
                StatusCode::BAD_REQUEST,
                "invalid-request",
                "Invalid request",
            ),
            Self::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized", "Unauthorized"),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "not-found", "Not found"),
            Self::Conflict { .. } => (StatusCode::CONFLICT, "conflict", "Conflict"),
            Self::NoHostFits { .. } => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "no-host-fits",
                "No host can run a container this large",
            ),
            Self::NoHostOffers { .. } => (
                StatusCode::CONFLICT,
                "no-host-offers",
                "No host offers this network",
            ),
            Self::Unprocessable { .. } => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "unprocessable",
                "Unprocessable request",
            ),
            Self::IdempotencyKeyReused => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency-key-reused",
                "Idempotency key reused",
            ),
            Self::Forbidden => (StatusCode::FORBIDDEN, "forbidden", "Forbidden"),
            Self::RateLimited { .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate-limited",
                "Too many requests",
            ),
            Self::QuotaExceeded(_) => (StatusCode::FORBIDDEN, "quota-exceeded", "Quota exceeded"),
            Self::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "Method not allowed",
            ),
            Self::PayloadTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload-too-large",
                "Payload too large",
            ),
            Self::Timeout(_) => (StatusCode::REQUEST_TIMEOUT, "timeout", "Timed out"),
            Self::RequestTimeout(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "timeout",
                "Request timed out",
            ),
            Self::Overloaded => (StatusCode::SERVICE_UNAVAILABLE, "overloaded", "Overloaded"),
            Self::Unavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "Service unavailable",
            ),
            Self::Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "Internal server error",
            ),
        }
    }

    pub fn to_problem(&self) -> Problem {
        let (status, slug, title) = self.parts();
        let (detail, field) = match self {
            Self::Invalid { field, detail } => (detail.clone(), Some(field.clone())),
            Self::Conflict { field, detail } => (detail.clone(), field.clone()),
            Self::NoHostFits { field, detail, .. } | Self::NoHostOffers { field, detail, .. } => {
                (detail.clone(), Some(field.clone()))
            }
            Self::IdempotencyKeyReused => (self.to_string(), Some("Idempotency-Key".to_owned())),
            Self::Unprocessable { field, detail } => (detail.clone(), Some(field.clone())),
            Self::QuotaExceeded(e) => (
                format!(
                    "this request would take the tenant past its {} quota",
                    e.quota.as_str()
                ),
                Some(e.quota.as_str().to_owned()),
            ),
            Self::Internal(_) => ("the server failed; the error was logged".into(), None),
            other => (other.to_string(), None),
        };
        let max = match self {
            Self::NoHostFits { max, .. } | Self::NoHostOffers { max, .. } => max.clone(),
            _ => None,
        };
        let (limit, use_) = match self {
            Self::QuotaExceeded(e) => (
                Some(quota_value(e.quota, e.limit)),
                Some(quota_value(e.quota, e.use_)),
            ),
            _ => (None, None),
        };
        Problem {
            type_: format!("https://skiff.dev/problems/{slug}"),
            title: title.into(),
            status: status.as_u16(),
            detail,
            field,
            max,
            limit,
            use_,
        }
    }
}

/// A quota's figure as the API shows it: vCPU (not millis) for `max_vcpu`.
pub fn quota_value(quota: crate::store::quotas::Quota, amount: i64) -> serde_json::Value {
    match quota {
        crate::store::quotas::Quota::MaxVcpu => serde_json::json!(amount as f64 / 1000.0),
        _ => serde_json::json!(amount),
    }
}

impl From<FieldError> for ApiError {
    fn from(err: FieldError) -> Self {
        match err.kind {
            skiff_core::FieldErrorKind::Invalid => Self::Invalid {
                field: err.field,
                detail: err.message,
            },
            skiff_core::FieldErrorKind::Unprocessable => Self::Unprocessable {
                field: err.field,
                detail: err.message,
            },
        }
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(err: crate::store::StoreError) -> Self {
        use crate::store::StoreError;
        if err.is_unavailable() {
            tracing::warn!(error = %err, "database unavailable");
            return Self::Unavailable(
                "the database is unavailable; retry after the time in Retry-After".into(),
            );
        }
        match err {
            StoreError::NameTaken(name) => Self::Conflict {
                field: Some("name".into()),
                detail: format!("a container named {name:?} already exists"),
            },
            StoreError::GroupNameTaken(name) => Self::Conflict {
                field: Some("name".into()),
                detail: format!("a container group named {name:?} already exists in its namespace"),
            },
            StoreError::GroupMember(group) => Self::Conflict {
                field: None,
                detail: format!(
                    "this container is a member of container group {group}: stop, start, \
                     restart or delete the group (/v1/groups/{group})"
                ),
            },
            StoreError::Database(e) => Self::Internal(e.to_string()),
            StoreError::Migrate(e) => Self::Internal(e.to_string()),
            StoreError::Corrupt(e) => Self::Internal(e),
            StoreError::Billing(skiff_billing::BillingError::Invalid(field)) => field.into(),
            StoreError::Billing(e) => Self::Internal(e.to_string()),
            // Worker reports never come through HTTP.
            StoreError::Refused(refusal) => Self::Internal(refusal.to_string()),
            StoreError::QuotaExceeded(exceeded) => Self::QuotaExceeded(exceeded),
            // Names a row and a key id, never a secret.
            StoreError::Secret(e) => Self::Internal(e.to_string()),
            StoreError::Locked(n) => Self::Internal(format!("{n} rows stayed locked")),
        }
    }
}

impl From<skiff_billing::BillingError> for ApiError {
    fn from(err: skiff_billing::BillingError) -> Self {
        match err {
            skiff_billing::BillingError::Invalid(field) => field.into(),
            skiff_billing::BillingError::RateTaken(_) => Self::Conflict {
                field: Some("effective_from".into()),
                detail: err.to_string(),
            },
            skiff_billing::BillingError::TooSoon { retry_after_s } => Self::RateLimited {
                limit: 1,
                retry_after_s,
            },
            other => crate::store::StoreError::Billing(other).into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Self::Internal(cause) = &self {
            tracing::error!(%cause, "request failed");
        }
        let problem = self.to_problem();
        let status =
            StatusCode::from_u16(problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&problem).unwrap_or_default();
        let mut response = (
            status,
            [(header::CONTENT_TYPE, "application/problem+json")],
            body,
        )
            .into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, RETRY_AFTER_S.into());
        }
        if let Self::RateLimited {
            limit,
            retry_after_s,
        } = self
        {
            let headers = response.headers_mut();
            headers.insert(header::RETRY_AFTER, retry_after_s.into());
            headers.insert("ratelimit-limit", limit.into());
            headers.insert("ratelimit-remaining", 0.into());
            headers.insert("ratelimit-reset", retry_after_s.into());
        }
        response
    }
}
