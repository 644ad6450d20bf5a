//! The error answers of the OpenAPI document: every one is an
//! `application/problem+json` body (the [`Problem`] schema; see
//! [`crate::error`]).
//!
//! - The ones a handler gives itself are types to name in its
//!   `#[utoipa::path(responses(...))]`: [`InvalidRequest`], [`NotFound`],
//!   [`Conflict`], [`Unprocessable`], [`QuotaExceeded`], [`WaitTimedOut`].
//! - The ones that come from extractors and middleware, whatever the
//!   handler, are added by [`common`] to every operation they apply to:
//!   401 (an operation with a security requirement: no token, or an
//!   unknown one), 403 (tag `admin`: a tenant's token), 400 and 413 (an
//!   operation with a request body: not JSON, or past 1 MiB), 429 (the
//!   token's rate limit) and 503 (this replica's limits, the request
//!   timeout, the database), each once, as a shared response component.

use crate::error::Problem;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::Operation;
use utoipa::openapi::schema::{Object, Ref, Type};
use utoipa::openapi::{Content, OpenApi, RefOr, Response, ResponseBuilder};
use utoipa::IntoResponses;

/// The media type of every error answer.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// Invalid input: `field` names the query parameter, header or body field
/// at fault.
#[derive(IntoResponses)]
#[response(status = 400, content_type = "application/problem+json")]
pub struct InvalidRequest(pub Problem);

/// No such resource for this token (another tenant's id answers the same,
/// and so does an id that is not a UUID).
#[derive(IntoResponses)]
#[response(status = 404, content_type = "application/problem+json")]
pub struct NotFound(pub Problem);

/// The name is taken (`field`: `name`).
#[derive(IntoResponses)]
#[response(status = 409, content_type = "application/problem+json")]
pub struct Conflict(pub Problem);

/// Well-formed but refused as a whole: an `Idempotency-Key` already used
/// for a different request (`idempotency-key-reused`), no host that could
/// ever take the request (`no-host-fits`: `field` names the resource,
/// e.g. `cpu`, `network` or `ports[1].host_port`, with `max` when it is a
/// number), or the parts of a request that do not fit together
/// (`unprocessable`: e.g. `ports` with `network: none`, or the same port
/// twice, `field` naming the one at fault).
#[derive(IntoResponses)]
#[response(status = 422, content_type = "application/problem+json")]
pub struct Unprocessable(pub Problem);

/// Past one of the tenant's quotas (`quota-exceeded`: `field` names the
/// quota, with its `limit` and the tenant's `use`); nothing was done.
#[derive(IntoResponses)]
#[response(status = 403, content_type = "application/problem+json")]
pub struct QuotaExceeded(pub Problem);

/// The container did not reach the state within `timeout_s`.
#[derive(IntoResponses)]
#[response(status = 408, content_type = "application/problem+json")]
pub struct WaitTimedOut(pub Problem);

/// The shared responses [`common`] adds: (status, component name,
/// description, headers the answer carries).
const COMMON: [(&str, &str, &str, &[&str]); 6] = [
    (
        "400",
        "InvalidRequest",
        "Invalid input: a body that is not JSON of the documented shape, or a \
         parameter, header or body field (named by `field`) out of its range.",
        &[],
    ),
    (
        "401",
        "Unauthorized",
        "No bearer token, or one this API does not know.",
        &[],
    ),
    (
        "403",
        "AdminOnly",
        "A tenant's token on an admin route.",
        &[],
    ),
    (
        "413",
        "PayloadTooLarge",
        "The request body is larger than 1 MiB.",
        &[],
    ),
    (
        "429",
        "RateLimited",
        "The token's bucket for this kind of request (reads or writes) is \
         empty: retry after `Retry-After` seconds.",
        &[
            "Retry-After",
            "RateLimit-Limit",
            "RateLimit-Remaining",
            "RateLimit-Reset",
        ],
    ),
    (
        "503",
        "Unavailable",
        "This replica is at its limit of requests in progress (`overloaded`), \
         the request passed the server's request timeout (`timeout`; it may \
         still have been applied: retry with its `Idempotency-Key`), or the \
         database is unavailable (`unavailable`): retry after `Retry-After` \
         seconds.",
        &["Retry-After"],
    ),
];

/// A problem+json response with `description` and integer `headers`.
fn problem_response(description: &str, headers: &[&str]) -> Response {
    let mut response = ResponseBuilder::new().description(description).content(
        PROBLEM_JSON,
        Content::new(Some(Ref::from_schema_name("Problem"))),
    );
    for name in headers {
        response = response.header(
            *name,
            HeaderBuilder::new()
                .schema(Object::with_type(Type::Integer))
                .build(),
        );
    }
    response.build()
}

/// Adds the answers of extractors and middleware (see the module doc) to
/// every operation of `openapi` they apply to, where the handler did not
/// document that status itself.
pub fn common(openapi: &mut OpenApi) {
    let components = openapi.components.get_or_insert_with(Default::default);
    for (_, name, description, headers) in COMMON {
        components.responses.insert(
            name.to_owned(),
            problem_response(description, headers).into(),
        );
    }
    for item in openapi.paths.paths.values_mut() {
        for operation in super::openapi::item_operations(item) {
            add_common(operation);
        }
    }
}

fn add_common(operation: &mut Operation) {
    let secured = operation.security.as_ref().is_some_and(|s| !s.is_empty());
    let admin = operation
        .tags
        .as_ref()
        .is_some_and(|tags| tags.iter().any(|t| t == "admin"));
    let body = operation.request_body.is_some();
    for (status, name, _, _) in COMMON {
        let applies = match status {
            "400" | "413" => body,
            "401" => secured,
            "403" => admin,
            _ => true,
        };
        if applies {
            operation
                .responses
                .responses
                .entry(status.to_owned())
                .or_insert_with(|| RefOr::Ref(Ref::from_response_name(name)));
        }
    }
}
