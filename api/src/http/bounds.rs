//! Bounds on every request: the token's rate ([`limit_rate`], see
//! [`crate::ratelimit`]), a timeout (`SKIFF_REQUEST_TIMEOUT_S`, answered
//! 503 `timeout` with `Retry-After`) and a limit on requests in progress
//! at once on this replica (`SKIFF_MAX_CONCURRENT_REQUESTS`; past it, 503
//! `overloaded` at once rather than a queue that grows). Streams (SSE
//! events, log follow, `wait`) are exempt from both: they are long by
//! design and bound themselves (`wait` by its `timeout_s`, at most 600 s;
//! SSE by `SKIFF_STREAM_MAX_S` and `SKIFF_STREAM_IDLE_S`; a log follow by
//! the container's exit).

use crate::error::ApiError;
use crate::AppState;
use axum::extract::{Request, State};
use axum::http::{header, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// Whether a request is one of the streams, which the request timeout and
/// the concurrency limit leave alone.
pub fn is_stream(method: &Method, path: &str, query: Option<&str>, accept: Option<&str>) -> bool {
    if method != Method::GET {
        return false;
    }
    let follows = || {
        query.is_some_and(|q| {
            q.split('&')
                .any(|pair| matches!(pair, "follow=true" | "follow=1"))
        })
    };
    let in_container = |what: &str| {
        path.strip_prefix("/v1/containers/")
            .and_then(|rest| rest.strip_suffix(what))
            .is_some_and(|id| !id.is_empty() && !id.contains('/'))
    };
    (path == "/v1/events" && accept.is_some_and(|a| a.contains("text/event-stream")))
        || in_container("/wait")
        || (in_container("/logs") && follows())
}

/// The middleware: see the module doc.
pub async fn bound(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    guard(
        &state.requests_in_progress,
        state.config.request_timeout(),
        request,
        next,
    )
    .await
}

async fn guard(permits: &Semaphore, timeout: Duration, request: Request, next: Next) -> Response {
    let stream = is_stream(
        request.method(),
        request.uri().path(),
        request.uri().query(),
        request
            .headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok()),
    );
    if stream {
        return next.run(request).await;
    }
    let Ok(_permit) = permits.try_acquire() else {
        return ApiError::Overloaded.into_response();
    };
    match tokio::time::timeout(timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::RequestTimeout(timeout.as_secs_f64()).into_response(),
    }
}

/// The SHA-256 of the request's bearer token, computed once by
/// [`limit_rate`] and reused by authentication.
#[derive(Debug, Clone)]
pub struct TokenHash(pub Vec<u8>);

/// Takes a request of the API (`/v1/...`) with a bearer token from that
/// token's bucket ([`crate::ratelimit`]): 429 when it is empty, the
/// `RateLimit-*` headers on the answer otherwise. Requests without a token
/// are refused by authentication, not counted here.
pub async fn limit_rate(
    State(state): State<Arc<AppState>>,
    mut request: Request,
    next: Next,
) -> Response {
    let token = super::bearer(request.headers());
    // The ACI layer's calls are the tenant's requests too.
    let path = request.uri().path();
    let limited = path.starts_with("/v1/") || path.starts_with("/aci/");
    let (Some(token), true) = (token, limited) else {
        return next.run(request).await;
    };
    let write = !matches!(
        *request.method(),
        axum::http::Method::GET | axum::http::Method::HEAD
    );
    let hash = super::hash_token(token);
    let cost = if write {
        1
    } else {
        crate::ratelimit::read_cost(request.uri().path(), request.uri().query())
    };
    let verdict = state.rate_limits.check(&hash, write, cost);
    request.extensions_mut().insert(TokenHash(hash));
    match verdict {
        crate::ratelimit::Verdict::Limited {
            limit,
            retry_after_s,
        } => {
            // Held before it is answered (the wait it is told, at most
            // SKIFF_RATE_LIMIT_DELAY_S): a client that ignores Retry-After
            // gets one answer per connection per delay, not thousands a
            // second that starve everyone else of the CPU to refuse them.
            let delay = state
                .config
                .rate_limit_delay()
                .min(std::time::Duration::from_secs(retry_after_s));
            tokio::time::sleep(delay).await;
            ApiError::RateLimited {
                limit,
                retry_after_s,
            }
            .into_response()
        }
        crate::ratelimit::Verdict::Allowed {
            limit,
            remaining,
            reset_s,
        } => {
            let mut response = next.run(request).await;
            let headers = response.headers_mut();
            headers.insert("ratelimit-limit", limit.into());
            headers.insert("ratelimit-remaining", remaining.into());
            headers.insert("ratelimit-reset", reset_s.into());
            response
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::routing::get;
    use axum::Router;
    use tower::ServiceExt as _;

    /// A router whose handlers take 300 ms, behind the guard with a 50 ms
    /// timeout and `permits` requests at once.
    fn slow_router(permits: usize) -> Router {
        let permits = Arc::new(Semaphore::new(permits));
        let slow = || async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            "done"
        };
        Router::new()
            .route("/v1/containers", get(slow))
            .route("/v1/events", get(slow))
            .layer(axum::middleware::from_fn(move |request, next| {
                let permits = permits.clone();
                async move { guard(&permits, Duration::from_millis(50), request, next).await }
            }))
    }

    fn get_request(path: &str, accept: &str) -> Request {
        Request::builder()
            .uri(path)
            .header(header::ACCEPT, accept)
            .body(Body::empty())
            .unwrap()
    }

    #[tokio::test]
    async fn a_slow_request_times_out_with_a_problem_and_a_stream_does_not() {
        let router = slow_router(10);
        let late = router
            .clone()
            .oneshot(get_request("/v1/containers", "application/json"))
            .await
            .unwrap();
        assert_eq!(late.status(), 503);
        assert_eq!(late.headers()["content-type"], "application/problem+json");
        let body = axum::body::to_bytes(late.into_body(), 1 << 16)
            .await
            .unwrap();
        let problem: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert!(
            problem["type"].as_str().unwrap().ends_with("/timeout"),
            "{problem}"
        );
        // The same handler as a stream runs to its end.
        let stream = router
            .oneshot(get_request("/v1/events", "text/event-stream"))
            .await
            .unwrap();
        assert_eq!(stream.status(), 200);
    }

    #[tokio::test]
    async fn past_the_limit_of_requests_in_progress_the_next_is_refused_at_once() {
        let router = slow_router(1);
        let first = tokio::spawn(
            router
                .clone()
                .oneshot(get_request("/v1/events", "application/json")),
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        let second = router
            .oneshot(get_request("/v1/events", "application/json"))
            .await
            .unwrap();
        assert_eq!(second.status(), 503);
        let body = axum::body::to_bytes(second.into_body(), 1 << 16)
            .await
            .unwrap();
        let problem: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert!(
            problem["type"].as_str().unwrap().ends_with("/overloaded"),
            "{problem}"
        );
        // The first one held the only permit, and timed out in turn.
        assert_eq!(first.await.unwrap().unwrap().status(), 503);
    }

    #[test]
    fn only_the_streams_are_streams() {
        let sse = Some("text/event-stream");
        let json = Some("application/json");
        let id = "/v1/containers/0190f7a2-0000-7000-8000-000000000000";
        let logs = format!("{id}/logs");
        let wait = format!("{id}/wait");
        // (method, path, query, accept, stream?)
        type Case<'a> = (Method, &'a str, Option<&'a str>, Option<&'a str>, bool);
        let cases: [Case; 12] = [
            (Method::GET, "/v1/events", None, sse, true),
            (Method::GET, "/v1/events", Some("since=1-2"), json, false),
            (Method::GET, "/v1/events", None, None, false),
            (Method::POST, "/v1/events", None, sse, false),
            (Method::GET, &wait, Some("for=exited"), None, true),
            (Method::GET, &logs, Some("follow=true"), None, true),
            (Method::GET, &logs, Some("tail=10&follow=1"), None, true),
            (Method::GET, &logs, Some("follow=false"), None, false),
            (Method::GET, &logs, None, None, false),
            (Method::GET, id, None, sse, false),
            (Method::GET, "/v1/containers/wait", None, None, false),
            (Method::GET, "/v1/containers/a/b/wait", None, None, false),
        ];
        for (method, path, query, accept, want) in cases {
            assert_eq!(
                is_stream(&method, path, query, accept),
                want,
                "{method} {path}?{query:?} {accept:?}"
            );
        }
    }
}
