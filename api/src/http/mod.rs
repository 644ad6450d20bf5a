//! The REST API: routing, authentication, request-body parsing and the
//! cross-cutting pieces (health, metrics, OpenAPI).
//!
//! Layout:
//! - [`bounds`]: the request timeout and the limit of requests in progress.
//! - [`containers`]: the tenant's container routes.
//! - [`console`]: the web console's embedded assets at `/console`.
//! - [`jobs`]: a tenant's jobs (create, get, list, tasks, cancel, delete).
//! - [`groups`]: a tenant's container groups (create, get, list, stop/start/restart, delete).
//! - [`events`]: the tenant's event log, as pages or a live SSE stream.
//! - [`tenants`]: admin routes for tenants.
//! - [`quotas`]: a tenant's quota (admin sets, tenant reads).
//! - [`idempotency`]: the `Idempotency-Key` header.
//! - [`hosts`]: admin routes for the pool's hosts (list, drain, undrain, revoke).
//! - [`join_tokens`]: admin routes for the tokens hosts join with.
//! - [`webhooks`]: the tenant's webhook secret, a container's or a job's deliveries.
//! - [`usage`]: usage reports, ledger verification, rate card.
//! - [`registry_credentials`]: a tenant's stored registry credentials.
//! - [`images`]: prewarming images onto hosts, and what each host holds.
//! - [`openapi`]: the OpenAPI 3 document, generated from the handlers;
//!   [`problems`], its error answers; [`schemas`], the schemas and
//!   parameters it spells out by hand.

pub mod bounds;
pub mod console;
pub mod containers;
pub mod events;
pub mod groups;
pub mod hosts;
pub mod idempotency;
pub mod images;
pub mod jobs;
pub mod join_tokens;
pub mod openapi;
pub mod problems;
pub mod quotas;
pub mod registry_credentials;
pub mod schemas;
mod strict;
pub mod tenants;
pub mod usage;
pub mod webhooks;

/// The page of a list route whose request names no `limit` (the rate
/// limiter charges a list by it too).
pub const DEFAULT_PAGE: i64 = 100;

use crate::error::ApiError;
use crate::AppState;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, delete, get, post, put};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Instant;
use uuid::Uuid;

/// Bodies larger than this are refused with 413.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/tenants", post(tenants::create))
        .route(
            "/v1/containers",
            post(containers::create).get(containers::list),
        )
        .route(
            "/v1/containers/{id}",
            get(containers::get).delete(containers::delete),
        )
        .route("/v1/containers/{id}/stop", post(containers::stop))
        .route("/v1/containers/{id}/start", post(containers::start))
        .route("/v1/containers/{id}/restart", post(containers::restart))
        .route("/v1/containers/{id}/logs", get(containers::logs))
        .route(
            "/v1/containers/{id}/exec",
            post(containers::exec).get(containers::attach),
        )
        .route("/v1/containers/{id}/events", get(containers::events))
        .route("/v1/containers/{id}/wait", get(containers::wait))
        .route("/v1/containers/{id}/deliveries", get(webhooks::deliveries))
        .route("/v1/webhook-secret", post(webhooks::rotate_secret))
        .route("/v1/events", get(events::list))
        .route("/v1/groups", post(groups::create).get(groups::list))
        .route("/v1/groups/{id}", get(groups::get).delete(groups::delete))
        .route("/v1/groups/{id}/stop", post(groups::stop))
        .route("/v1/groups/{id}/start", post(groups::start))
        .route("/v1/groups/{id}/restart", post(groups::restart))
        .route("/v1/jobs", post(jobs::create).get(jobs::list))
        .route("/v1/jobs/{id}", get(jobs::get).delete(jobs::delete))
        .route("/v1/jobs/{id}/tasks", get(jobs::tasks))
        .route("/v1/jobs/{id}/cancel", post(jobs::cancel))
        .route("/v1/jobs/{id}/deliveries", get(webhooks::job_deliveries))
        .route("/v1/hosts", get(hosts::list))
        .route("/v1/hosts/{id}", delete(hosts::revoke))
        .route("/v1/hosts/{id}/drain", post(hosts::drain))
        .route("/v1/hosts/{id}/undrain", post(hosts::undrain))
        .route("/v1/quota", get(quotas::get))
        .route("/v1/admin/tenants/{id}/quota", put(quotas::set))
        .route("/v1/usage", get(usage::tenant_report))
        .route("/v1/usage/verify", get(usage::verify))
        .route("/v1/admin/usage", get(usage::admin_report))
        .route("/v1/admin/rates", get(usage::rates).post(usage::add_rate))
        .route("/v1/admin/adjustments", post(usage::add_adjustment))
        .route(
            "/v1/admin/join-tokens",
            post(join_tokens::create).get(join_tokens::list),
        )
        .route("/v1/admin/join-tokens/{id}", delete(join_tokens::revoke))
        .route("/v1/registry-credentials", get(registry_credentials::list))
        .route(
            "/v1/registry-credentials/{server}",
            put(registry_credentials::put).delete(registry_credentials::delete),
        )
        .route("/v1/images", get(images::list))
        .route("/v1/images/prewarm", post(images::prewarm))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi::document))
        // Azure Container Instances' ARM API (not in the OpenAPI document:
        // its contract is Microsoft's).
        .route("/aci/{*rest}", any(crate::aci::routes::handle))
        .merge(console::routes::<Arc<AppState>>())
        .fallback(|| async { ApiError::NotFound("route") })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(middleware::from_fn_with_state(state.clone(), bounds::bound))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            bounds::limit_rate,
        ))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn(crate::aci::arm::arm_errors))
        .with_state(state)
}

async fn healthz() -> &'static str {
    "ok"
}

/// Ready when PostgreSQL answers.
async fn readyz(State(state): State<Arc<AppState>>) -> Result<&'static str, ApiError> {
    state
        .store
        .ping()
        .await
        .map_err(|e| ApiError::Unavailable(format!("database not reachable: {e}")))?;
    Ok("ready")
}

async fn metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    if let Ok(mut conn) = state.store.conn().await {
        if let Ok(n) = skiff_billing::open_runs(&mut conn).await {
            state.metrics.open_runs.set(n);
        }
        if let Ok(n) = skiff_billing::metered_seconds_total(&mut conn).await {
            state.metrics.metered_seconds.set(n);
        }
        if let Ok(lag) = skiff_billing::checkpoint_lag_seconds(&mut conn).await {
            state.metrics.checkpoint_lag.set(lag);
        }
    }
    if let Ok(hosts) = state
        .store
        .host_statuses(state.config.host_lost_after(), None)
        .await
    {
        state.metrics.set_hosts(&hosts);
    }
    if let Ok(n) = state.store.pending_count().await {
        state.metrics.pending.set(n);
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}

/// Records request latency by route template (never by raw path, which
/// would make one series per container id).
async fn observe(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".into());
    let response = next.run(request).await;
    state
        .metrics
        .http_duration
        .with_label_values(&[method.as_str(), &route, response.status().as_str()])
        .observe(started.elapsed().as_secs_f64());
    response
}

/// A new secret token: `prefix` and 32 random bytes, URL-safe base64. Only
/// its hash ([`hash_token`]) is stored.
pub fn new_token(prefix: &str) -> String {
    use base64::Engine as _;
    use rand::RngCore as _;
    let mut secret = [0u8; 32];
    rand::rng().fill_bytes(&mut secret);
    format!(
        "{prefix}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret)
    )
}

pub fn hash_token(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

pub(super) fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// The authenticated tenant of a request.
#[derive(Debug, Clone, Copy)]
pub struct Tenant(pub Uuid);

impl FromRequestParts<Arc<AppState>> for Tenant {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, ApiError> {
        let token = bearer(&parts.headers).ok_or(ApiError::Unauthorized)?;
        // Hashed once per request: the rate limiter did it first.
        let hash = match parts.extensions.get::<bounds::TokenHash>() {
            Some(bounds::TokenHash(hash)) => hash.clone(),
            None => hash_token(token),
        };
        if let Some(tenant) = state.token_cache.get(&hash) {
            return Ok(Tenant(tenant));
        }
        let tenant = state
            .store
            .tenant_for_token(&hash)
            .await?
            .ok_or(ApiError::Unauthorized)?;
        state.token_cache.insert(hash, tenant);
        Ok(Tenant(tenant))
    }
}

/// A request made with the admin token.
pub struct Admin;

impl FromRequestParts<Arc<AppState>> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, ApiError> {
        let token = bearer(&parts.headers).ok_or(ApiError::Unauthorized)?;
        // Comparing digests keeps the comparison time independent of where
        // the strings first differ.
        let hash = hash_token(token);
        if hash == state.admin_token_sha256 {
            return Ok(Admin);
        }
        // A tenant's own token is known but not enough: 403, not 401.
        if state.token_cache.get(&hash).is_some()
            || state.store.tenant_for_token(&hash).await?.is_some()
        {
            return Err(ApiError::Forbidden);
        }
        Err(ApiError::Unauthorized)
    }
}

/// A JSON body whose errors name the offending field.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let JsonBytes(bytes) = JsonBytes::from_request(req, state).await?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// A body as sent (for handlers that also need its bytes, such as an
/// idempotency key's fingerprint); parse it with [`parse_json`].
pub struct JsonBytes(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for JsonBytes {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        Bytes::from_request(req, state)
            .await
            .map(JsonBytes)
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::PayloadTooLarge
                } else {
                    ApiError::invalid("body", rejection.body_text())
                }
            })
    }
}

/// Parses JSON, turning serde's message into a problem naming the field.
///
/// A number with no fractional part is an integer, as JSON Schema (and so
/// the OpenAPI document) counts it: `64.0` is read as `64`, where serde
/// alone would refuse it for an integer field. A struct is read only from a
/// JSON object ([`strict`]).
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut value: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::invalid("body", format!("body is not valid JSON: {e}")))?;
    integral_numbers_as_integers(&mut value);
    serde_path_to_error::deserialize(strict::Strict(value)).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        let message = inner.to_string();
        // serde_path_to_error's path already ends in an unknown field's name;
        // a missing field is named only in the message, under its parent.
        let missing = message
            .strip_prefix("missing field `")
            .and_then(|rest| rest.split('`').next());
        let field = match (missing, path.as_str()) {
            (Some(name), "." | "") => name.to_owned(),
            (Some(name), parent) => format!("{parent}.{name}"),
            (None, "." | "" | "?") => "body".to_owned(),
            (None, path) => path.to_owned(),
        };
        let detail = if inner.is_syntax() || inner.is_eof() {
            format!("body is not valid JSON: {message}")
        } else {
            message
        };
        ApiError::invalid(field, detail)
    })
}

/// Turns every number of `value` with no fractional part (and within
/// `i64` or `u64`) into an integer.
fn integral_numbers_as_integers(value: &mut serde_json::Value) {
    use serde_json::Value;
    match value {
        Value::Number(n) if n.is_f64() => {
            let Some(f) = n.as_f64() else { return };
            if f.fract() != 0.0 {
                return;
            }
            // (i64::MAX as f64 rounds up to 2^63, which i64 cannot hold)
            if f >= i64::MIN as f64 && f < i64::MAX as f64 {
                *n = (f as i64).into();
            } else if f >= 0.0 && f < u64::MAX as f64 {
                *n = (f as u64).into();
            }
        }
        Value::Array(items) => items.iter_mut().for_each(integral_numbers_as_integers),
        Value::Object(fields) => fields.values_mut().for_each(integral_numbers_as_integers),
        _ => {}
    }
}

/// `Json` with the API's content type conventions.
pub fn json<T: serde::Serialize>(status: StatusCode, value: T) -> Response {
    (status, Json(value)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::CreateContainer;

    fn field_of(body: &str) -> String {
        match parse_json::<CreateContainer>(body.as_bytes()) {
            Err(ApiError::Invalid { field, .. }) => field,
            other => panic!("expected a field error, got {other:?}"),
        }
    }

    #[test]
    fn json_errors_name_the_field() {
        assert_eq!(
            field_of(r#"{"image":"a","cpu":1,"memory_mib":64,"bogus":1}"#),
            "bogus"
        );
        assert_eq!(field_of(r#"{"cpu":1,"memory_mib":64}"#), "image");
        assert_eq!(
            field_of(r#"{"image":"a","cpu":"x","memory_mib":64}"#),
            "cpu"
        );
        assert_eq!(
            field_of(r#"{"image":"a","cpu":1,"memory_mib":-5}"#),
            "memory_mib"
        );
        assert_eq!(
            field_of(r#"{"image":"a","cpu":1,"memory_mib":64,"env":{"A":1}}"#),
            "env.A"
        );
        assert_eq!(
            field_of(r#"{"image":"a","cpu":1,"memory_mib":64,"restart_policy":"sometimes"}"#),
            "restart_policy"
        );
        assert_eq!(field_of("{not json"), "body");
        assert_eq!(field_of(r#"["a", 1, 64]"#), "body");
        assert_eq!(
            field_of(r#"{"image":"a","cpu":1,"memory_mib":64,"placement":[null]}"#),
            "placement"
        );
    }

    #[test]
    fn json_errors_name_the_network_field() {
        let body = |fields: &str| format!(r#"{{"image":"a","cpu":1,"memory_mib":64,{fields}}}"#);
        #[rustfmt::skip]
        let rows = [
            // (fields, the field named)
            (r#""network":"host""#, "network"),
            (r#""network_group":7"#, "network_group"),
            (r#""ports":{"port":80}"#, "ports"),
            (r#""ports":[{"port":80},{"port":70000}]"#, "ports[1].port"),
            (r#""ports":[{"port":-1}]"#, "ports[0].port"),
            (r#""ports":[{"port":80,"protocol":"sctp"}]"#, "ports[0].protocol"),
            (r#""ports":[{"port":80,"host_port":65536}]"#, "ports[0].host_port"),
            (r#""ports":[{"port":80,"bogus":1}]"#, "ports[0].bogus"),
            (r#""ports":[{"protocol":"tcp"}]"#, "ports[0].port"),
            (r#""ports":[[80]]"#, "ports[0]"),
        ];
        for (fields, want) in rows {
            assert_eq!(field_of(&body(fields)), want, "{fields}");
        }
        // The same fields, well-formed, parse.
        let ok: CreateContainer = parse_json(
            body(r#""network":"private","network_group":"web","ports":[{"port":80,"protocol":"udp","host_port":20000}]"#)
                .as_bytes(),
        )
        .unwrap();
        assert_eq!(ok.ports.unwrap()[0].host_port, Some(20000));
    }

    #[test]
    fn integral_numbers_are_integers() {
        let body: CreateContainer =
            parse_json(br#"{"image":"a","cpu":1.0,"memory_mib":64.0,"max_cost":1e3}"#).unwrap();
        assert_eq!((body.memory_mib, body.max_cost), (64, Some(1000)));
        assert_eq!(
            field_of(r#"{"image":"a","cpu":1,"memory_mib":64.5}"#),
            "memory_mib"
        );
    }
}
