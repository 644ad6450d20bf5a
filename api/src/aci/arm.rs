//! Azure Resource Manager's conventions: the error body (`{"error":
//! {"code", "message", "target"?, "details"?}}`) with ACI's codes, the
//! `api-version` rule, the absolute URLs an answer hands back, and the
//! translation of skiff's own [`ApiError`] (and the problem+json answers of
//! the router's layers) into that shape.

use crate::error::ApiError;
use crate::store::quotas::Quota;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// The ACI api-versions whose shapes this layer speaks (those of
/// 2021-10-01 to 2024: the container group schema did not change in ways
/// that touch the fields mapped here).
pub const API_VERSIONS: [&str; 9] = [
    "2021-10-01",
    "2022-09-01",
    "2022-10-01-preview",
    "2023-02-01-preview",
    "2023-05-01",
    "2024-05-01-preview",
    "2024-09-01-preview",
    "2024-10-01-preview",
    "2024-11-01-preview",
];

/// Microsoft.Resources' versions, for `GET /subscriptions`.
pub const SUBSCRIPTION_API_VERSIONS: [&str; 6] = [
    "2016-06-01",
    "2019-06-01",
    "2019-11-01",
    "2020-01-01",
    "2021-01-01",
    "2022-12-01",
];

/// An ARM error answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status} {code}: {message}")]
pub struct ArmError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub target: Option<String>,
    /// Seconds for `Retry-After` (429, 503).
    pub retry_after_s: Option<u64>,
}

#[derive(Serialize)]
struct Envelope<'a> {
    error: Body_<'a>,
}

#[derive(Serialize)]
struct Body_<'a> {
    code: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    target: Option<&'a str>,
}

impl ArmError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            target: None,
            retry_after_s: None,
        }
    }

    /// 400 `InvalidRequestContent` naming `target`.
    pub fn invalid(target: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "InvalidRequestContent", message).at(target)
    }

    pub fn at(mut self, target: impl Into<String>) -> Self {
        self.target = Some(target.into());
        self
    }

    pub fn missing_api_version() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "MissingApiVersionParameter",
            "The api-version query parameter (?api-version=) is required for all requests.",
        )
    }

    pub fn not_found(kind: &str, name: &str, resource_group: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "ResourceNotFound",
            format!(
                "The Resource 'Microsoft.ContainerInstance/{kind}/{name}' under resource group \
                 '{resource_group}' was not found."
            ),
        )
    }

    pub fn body(&self) -> String {
        serde_json::to_string(&Envelope {
            error: Body_ {
                code: self.code,
                message: &self.message,
                target: self.target.as_deref(),
            },
        })
        .unwrap_or_default()
    }
}

impl IntoResponse for ArmError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
            self.body(),
        )
            .into_response();
        if let Some(s) = self.retry_after_s {
            response.headers_mut().insert(header::RETRY_AFTER, s.into());
        }
        response
    }
}

/// Checks `api-version` against `known`: missing is
/// `MissingApiVersionParameter`, unknown `InvalidApiVersionParameter`.
pub fn check_api_version<'a>(given: Option<&'a str>, known: &[&str]) -> Result<&'a str, ArmError> {
    let given = given.ok_or_else(ArmError::missing_api_version)?;
    if known.contains(&given) {
        Ok(given)
    } else {
        Err(ArmError::new(
            StatusCode::BAD_REQUEST,
            "InvalidApiVersionParameter",
            format!(
                "The api-version '{given}' is invalid. The supported versions are '{}'.",
                known.join(",")
            ),
        ))
    }
}

/// Skiff's field names as the ARM body spells them (the part after the
/// member index: `containers[1].cpu` is
/// `properties.containers[1].properties.resources.requests.cpu`).
pub fn arm_target(field: &str) -> String {
    if let Some(rest) = field.strip_prefix("containers[") {
        if let Some((index, tail)) = rest.split_once("].") {
            let (head, sep) = tail.split_at(tail.find(['.', '[']).unwrap_or(tail.len()));
            let mapped = match head {
                "cpu" => "resources.requests.cpu",
                "memory_mib" => "resources.requests.memoryInGB",
                "env" | "secure_env" => "environmentVariables",
                "mounts" => "volumeMounts",
                "liveness_probe" => "livenessProbe",
                "readiness_probe" => "readinessProbe",
                "image" => "image",
                "command" => "command",
                "ports" => "ports",
                "name" => return format!("properties.containers[{index}].name"),
                other => other,
            };
            return format!("properties.containers[{index}].properties.{mapped}{sep}");
        }
    }
    let (head, sep) = field.split_at(field.find(['.', '[']).unwrap_or(field.len()));
    let mapped = match head {
        "name" => return "name".into(),
        "namespace" => return "resourceGroupName".into(),
        "ports" => "properties.ipAddress.ports",
        "volumes" => "properties.volumes",
        "labels" => return format!("tags{sep}"),
        "annotations" => "tags",
        "restart_policy" => "properties.restartPolicy",
        "image_registry_credentials" => "properties.imageRegistryCredentials",
        "containers" => "properties.containers",
        other => other,
    };
    format!("{mapped}{sep}")
}

impl From<ApiError> for ArmError {
    fn from(err: ApiError) -> Self {
        use StatusCode as S;
        match err {
            ApiError::Invalid { field, detail } => {
                let target = arm_target(&field);
                ArmError::invalid(target.clone(), format!("{target}: {detail}"))
            }
            ApiError::Unprocessable { field, detail } => {
                let target = arm_target(&field);
                ArmError::invalid(target.clone(), format!("{target}: {detail}"))
            }
            ApiError::Unauthorized => ArmError::new(
                S::UNAUTHORIZED,
                "InvalidAuthenticationToken",
                "The access token is missing or invalid: pass a skiff tenant token as 'Authorization: Bearer'.",
            ),
            ApiError::Forbidden => ArmError::new(
                S::FORBIDDEN,
                "AuthorizationFailed",
                "The client does not have authorization to perform this action.",
            ),
            ApiError::NotFound(what) => {
                ArmError::new(S::NOT_FOUND, "ResourceNotFound", format!("{what} not found"))
            }
            ApiError::Conflict { field, detail } => {
                let e = ArmError::new(S::CONFLICT, "Conflict", detail);
                match field {
                    Some(f) => e.at(arm_target(&f)),
                    None => e,
                }
            }
            ApiError::NoHostFits { field, detail, .. } => ArmError::new(
                S::BAD_REQUEST,
                "ResourceRequestsNotSupported",
                detail,
            )
            .at(arm_target(&field)),
            ApiError::NoHostOffers { field, detail, .. } => {
                ArmError::new(S::BAD_REQUEST, "InvalidRequestContent", detail)
                    .at(arm_target(&field))
            }
            ApiError::IdempotencyKeyReused => {
                ArmError::new(S::CONFLICT, "Conflict", err_text(&ApiError::IdempotencyKeyReused))
            }
            ApiError::QuotaExceeded(e) => {
                let code = match e.quota {
                    Quota::MaxContainers | Quota::MaxPending | Quota::MaxJobs => {
                        "ContainerGroupQuotaReached"
                    }
                    Quota::MaxVcpu | Quota::MaxMemoryMib => "QuotaExceeded",
                };
                ArmError::new(
                    S::CONFLICT,
                    code,
                    format!(
                        "This request would take the subscription past its {} quota (limit {}, in use {}).",
                        e.quota.as_str(),
                        crate::error::quota_value(e.quota, e.limit),
                        crate::error::quota_value(e.quota, e.use_)
                    ),
                )
            }
            ApiError::RateLimited { retry_after_s, .. } => ArmError {
                retry_after_s: Some(retry_after_s),
                ..ArmError::new(
                    S::TOO_MANY_REQUESTS,
                    "TooManyRequests",
                    format!("Too many requests with this token; retry after {retry_after_s} s."),
                )
            },
            ApiError::MethodNotAllowed => ArmError::new(
                S::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                "The HTTP method is not supported on this resource.",
            ),
            ApiError::PayloadTooLarge => ArmError::new(
                S::PAYLOAD_TOO_LARGE,
                "RequestEntityTooLarge",
                "The request body is larger than 1 MiB.",
            ),
            ApiError::Timeout(m) => ArmError::new(S::REQUEST_TIMEOUT, "RequestTimeout", m),
            e @ (ApiError::RequestTimeout(_) | ApiError::Overloaded | ApiError::Unavailable(_)) => {
                ArmError {
                    retry_after_s: Some(u64::from(crate::error::RETRY_AFTER_S)),
                    ..ArmError::new(S::SERVICE_UNAVAILABLE, "ServiceUnavailable", err_text(&e))
                }
            }
            ApiError::Internal(cause) => {
                tracing::error!(%cause, "ACI request failed");
                ArmError::new(
                    S::INTERNAL_SERVER_ERROR,
                    "InternalServerError",
                    "The server failed; the error was logged.",
                )
            }
        }
    }
}

fn err_text(e: &ApiError) -> String {
    e.to_string()
}

/// The scheme and authority answers' URLs are built on: the request's
/// `X-Forwarded-Proto` (else the server's own: https when it serves TLS)
/// and `Host`.
pub fn origin(headers: &HeaderMap, tls: bool) -> String {
    let scheme = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .filter(|v| matches!(*v, "http" | "https"))
        .unwrap_or(if tls { "https" } else { "http" });
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .filter(|h| {
            !h.is_empty()
                && h.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-.:[]".contains(c))
        })
        .unwrap_or("localhost");
    format!("{scheme}://{host}")
}

/// `Azure-AsyncOperation` and `Retry-After: 1` on `response`.
pub fn with_async_operation(mut response: Response, url: &str) -> Response {
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(url) {
        headers.insert("azure-asyncoperation", v);
    }
    headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// Whether a request path is the ACI layer's (`/aci/...`, any case).
fn is_aci_path(path: &str) -> bool {
    path.get(..5)
        .is_some_and(|p| p.eq_ignore_ascii_case("/aci/"))
}

/// Outermost layer: a problem+json answer to an `/aci/...` request (from
/// the rate limiter, the request bounds, the body limit) leaves in ARM's
/// error shape instead, with its status and headers.
pub async fn arm_errors(request: Request, next: Next) -> Response {
    let aci = is_aci_path(request.uri().path());
    let response = next.run(request).await;
    if !aci {
        return response;
    }
    let problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/problem+json"));
    if !problem {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, crate::http::MAX_BODY_BYTES)
        .await
        .unwrap_or_default();
    let problem: Option<crate::error::Problem> = serde_json::from_slice(&bytes).ok();
    let status = parts.status;
    let code = match status {
        StatusCode::TOO_MANY_REQUESTS => "TooManyRequests",
        StatusCode::UNAUTHORIZED => "InvalidAuthenticationToken",
        StatusCode::PAYLOAD_TOO_LARGE => "RequestEntityTooLarge",
        StatusCode::SERVICE_UNAVAILABLE => "ServiceUnavailable",
        StatusCode::NOT_FOUND => "NotFound",
        s if s.is_client_error() => "InvalidRequestContent",
        _ => "InternalServerError",
    };
    let message = problem
        .map(|p| p.detail)
        .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_owned());
    let arm = ArmError::new(status, code, message);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(arm.body()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_versions() {
        #[rustfmt::skip]
        let rows: [(Option<&str>, Result<&str, &str>); 5] = [
            (None, Err("MissingApiVersionParameter")),
            (Some("2023-05-01"), Ok("2023-05-01")),
            (Some("2021-10-01"), Ok("2021-10-01")),
            (Some("2018-10-01"), Err("InvalidApiVersionParameter")),
            (Some("latest"), Err("InvalidApiVersionParameter")),
        ];
        for (given, want) in rows {
            let got = check_api_version(given, &API_VERSIONS).map_err(|e| {
                assert_eq!(e.status, StatusCode::BAD_REQUEST);
                e.code
            });
            assert_eq!(got, want, "{given:?}");
        }
    }

    #[test]
    fn skiff_fields_become_arm_targets() {
        #[rustfmt::skip]
        let rows = [
            ("containers[1].cpu", "properties.containers[1].properties.resources.requests.cpu"),
            ("containers[0].env.A", "properties.containers[0].properties.environmentVariables.A"),
            ("containers[2].name", "properties.containers[2].name"),
            ("containers[0].mounts[1].path", "properties.containers[0].properties.volumeMounts[1].path"),
            ("ports[0].port", "properties.ipAddress.ports[0].port"),
            ("volumes[1].name", "properties.volumes[1].name"),
            ("labels.a/b", "tags.a/b"),
            ("namespace", "resourceGroupName"),
            ("name", "name"),
        ];
        for (field, want) in rows {
            assert_eq!(arm_target(field), want, "{field}");
        }
    }

    #[test]
    fn api_errors_become_arm_codes() {
        #[rustfmt::skip]
        let rows: Vec<(ApiError, u16, &str)> = vec![
            (ApiError::invalid("containers[0].cpu", "too big"), 400, "InvalidRequestContent"),
            (ApiError::Unauthorized, 401, "InvalidAuthenticationToken"),
            (ApiError::NotFound("container group"), 404, "ResourceNotFound"),
            (ApiError::Conflict { field: Some("name".into()), detail: "taken".into() }, 409, "Conflict"),
            (ApiError::NoHostFits { field: "cpu".into(), max: None, detail: "big".into() }, 400, "ResourceRequestsNotSupported"),
            (ApiError::RateLimited { limit: 1, retry_after_s: 3 }, 429, "TooManyRequests"),
            (ApiError::Unavailable("db".into()), 503, "ServiceUnavailable"),
            (ApiError::Internal("boom".into()), 500, "InternalServerError"),
        ];
        for (err, status, code) in rows {
            let text = err.to_string();
            let arm = ArmError::from(err);
            assert_eq!((arm.status.as_u16(), arm.code), (status, code), "{text}");
        }
        let arm = ArmError::from(ApiError::invalid("containers[0].cpu", "too big"));
        assert_eq!(
            arm.target.as_deref(),
            Some("properties.containers[0].properties.resources.requests.cpu")
        );
        let body: serde_json::Value = serde_json::from_str(&arm.body()).unwrap();
        assert_eq!(body["error"]["code"], "InvalidRequestContent");
        assert!(body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("too big"));
    }

    #[test]
    fn origins_come_from_the_request() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(origin(&h, false), "http://127.0.0.1:8080");
        assert_eq!(origin(&h, true), "https://127.0.0.1:8080");
        h.insert("x-forwarded-proto", "https".parse().unwrap());
        assert_eq!(origin(&h, false), "https://127.0.0.1:8080");
        h.insert(header::HOST, "evil/path".parse().unwrap());
        assert_eq!(origin(&h, false), "https://localhost");
    }
}
