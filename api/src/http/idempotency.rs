//! The `Idempotency-Key` header: a request sent again with the same key
//! (a client's retry) gets the first one's response and changes nothing.
//! Keys are per tenant; a key names one request (method, path and JSON
//! body, compared as canonical JSON), so the same key with another body is
//! 422. Stored in PostgreSQL with what the request created
//! ([`crate::store::idempotency`]) and kept `SKIFF_IDEMPOTENCY_KEEP_S`.

use crate::error::ApiError;
use crate::store::containers::{Acted, Created};
use crate::store::idempotency::{Idem, StoredResponse};
use crate::AppState;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use std::time::Duration;
use uuid::Uuid;

pub const HEADER: &str = "idempotency-key";
const MAX_KEY_LEN: usize = 255;

/// The request's key, if it has one, with its fingerprint.
pub fn from_request(
    headers: &HeaderMap,
    method: &Method,
    path: &str,
    body: &[u8],
) -> Result<Option<Idem>, ApiError> {
    let Some(value) = headers.get(HEADER) else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .ok()
        .filter(|k| {
            !k.is_empty() && k.len() <= MAX_KEY_LEN && k.bytes().all(|b| b.is_ascii_graphic())
        })
        .ok_or_else(|| {
            ApiError::invalid(
                "Idempotency-Key",
                format!("must be 1 to {MAX_KEY_LEN} visible ASCII characters"),
            )
        })?;
    Ok(Some(Idem {
        key: key.to_owned(),
        fingerprint: fingerprint(method, path, body),
    }))
}

/// sha256 over the method, the path and the body as canonical JSON (keys
/// sorted, no insignificant whitespace), so a retry that re-serialises the
/// same request still matches; a body that is not JSON counts as its bytes.
/// The values of every `secure_env`, and the file contents of every secret
/// volume, are left out (their keys and paths count), and so is every
/// `password` (of `image_registry_credentials`): an unsalted hash of a
/// short secret stored beside its key would give it away.
pub fn fingerprint(method: &Method, path: &str, body: &[u8]) -> Vec<u8> {
    let canonical = serde_json::from_slice::<serde_json::Value>(body)
        .map(|mut v| {
            blank_secrets(&mut v);
            v.to_string().into_bytes()
        })
        .unwrap_or_else(|_| body.to_vec());
    let mut hash = Sha256::new();
    hash.update(method.as_str());
    hash.update([0]);
    hash.update(path);
    hash.update([0]);
    hash.update(canonical);
    hash.finalize().to_vec()
}

/// Blanks the values of every `secure_env` object, of every `files`
/// object of a `secret` object, and every `password`, inside `value`.
fn blank_secrets(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, inner) in map.iter_mut() {
                match inner {
                    serde_json::Value::Object(secrets) if key == "secure_env" => {
                        secrets
                            .values_mut()
                            .for_each(|v| *v = serde_json::Value::Null);
                    }
                    serde_json::Value::Object(secret) if key == "secret" => {
                        if let Some(serde_json::Value::Object(files)) = secret.get_mut("files") {
                            files
                                .values_mut()
                                .for_each(|v| *v = serde_json::Value::Null);
                        }
                    }
                    serde_json::Value::String(_) if key == "password" => {
                        *inner = serde_json::Value::Null;
                    }
                    _ => blank_secrets(inner),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(blank_secrets),
        _ => {}
    }
}

/// How long a retry waits for the response of its key's request, applied
/// but not yet answered, before it answers for itself.
const IN_FLIGHT_WAIT: Duration = Duration::from_secs(10);

/// The response of a key whose request committed and is still answering;
/// None when it did not record one within [`IN_FLIGHT_WAIT`] (it was
/// interrupted: the caller answers from the current state).
pub async fn wait_recorded(
    state: &AppState,
    tenant: Uuid,
    key: &str,
) -> Result<Option<StoredResponse>, ApiError> {
    let deadline = tokio::time::Instant::now() + IN_FLIGHT_WAIT;
    loop {
        if let Some(response) = state.store.recorded_response(tenant, key).await? {
            return Ok(Some(response));
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What a lifecycle request (stop, start, cancel, ...) that may have been a
/// retry comes to: see [`settle`].
pub enum Settled<T> {
    /// Applied now: answer from this.
    Done(T),
    /// The key's earlier request answered: send this.
    Answer(Response),
    /// The key's earlier request was applied and its answer is lost (its
    /// replica went away): answer from the current state.
    Lost,
}

/// Settles a lifecycle request's [`Acted`]: its result, the key's earlier
/// answer (waited for while that request is still answering), or 422 for
/// a reused key.
pub async fn settle<T>(
    state: &AppState,
    tenant: Uuid,
    idem: Option<&Idem>,
    acted: Acted<T>,
) -> Result<Settled<T>, ApiError> {
    match acted {
        Acted::Done(done) => Ok(Settled::Done(done)),
        Acted::Replay(response) => Ok(Settled::Answer(respond(response, true))),
        Acted::KeyReused => Err(ApiError::IdempotencyKeyReused),
        Acted::InFlight => {
            let key = idem.map_or("", |i| i.key.as_str());
            Ok(match wait_recorded(state, tenant, key).await? {
                Some(response) => Settled::Answer(respond(response, true)),
                None => Settled::Lost,
            })
        }
    }
}

/// The response to a create that may have been a retry: the new object's
/// (after `on_new`), the earlier request's, or 422 for a reused key.
pub async fn answer_created<T>(
    state: &AppState,
    tenant: Uuid,
    idem: Option<&Idem>,
    created: Created<T>,
    on_new: impl FnOnce(&T),
) -> Result<Response, ApiError> {
    match created {
        Created::New(object, response) => {
            on_new(&object);
            Ok(respond(response, false))
        }
        Created::Replay(response) => Ok(respond(response, true)),
        Created::InFlight => {
            let key = idem.map_or("", |i| i.key.as_str());
            match wait_recorded(state, tenant, key).await? {
                Some(response) => Ok(respond(response, true)),
                None => Err(ApiError::Unavailable(
                    "a request with this Idempotency-Key is still being answered; retry".into(),
                )),
            }
        }
        Created::KeyReused => Err(ApiError::IdempotencyKeyReused),
    }
}

/// A JSON response as it is stored with a key.
pub fn stored_json<T: serde::Serialize>(status: StatusCode, value: &T) -> StoredResponse {
    StoredResponse {
        status: status.as_u16(),
        content_type: "application/json".to_owned(),
        body: serde_json::to_vec(value).unwrap_or_default(),
    }
}

/// The response to send: a stored one says it is a replay.
pub fn respond(response: StoredResponse, replayed: bool) -> Response {
    let status = StatusCode::from_u16(response.status).unwrap_or(StatusCode::OK);
    let mut out = (status, response.body).into_response();
    if let Ok(content_type) = HeaderValue::from_str(&response.content_type) {
        out.headers_mut().insert(header::CONTENT_TYPE, content_type);
    }
    if replayed {
        out.headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_values_are_not_part_of_a_fingerprint_but_their_keys_are() {
        let of = |body: &str| fingerprint(&Method::POST, "/v1/containers", body.as_bytes());
        let creds = |p: &str| {
            of(&format!(
                r#"{{"image":"x","image_registry_credentials":[{{"server":"r","username":"u","password":"{p}"}}]}}"#
            ))
        };
        assert_eq!(creds("one"), creds("two"));
        let a = of(r#"{"image":"x","secure_env":{"TOKEN":"one"}}"#);
        assert_eq!(a, of(r#"{"image":"x","secure_env":{"TOKEN":"two"}}"#));
        assert_ne!(a, of(r#"{"image":"x","secure_env":{"OTHER":"one"}}"#));
        assert_ne!(a, of(r#"{"image":"y","secure_env":{"TOKEN":"one"}}"#));
        let files = |name: &str, content: &str| {
            of(&format!(
                r#"{{"image":"x","volumes":[{{"name":"s","secret":{{"files":{{"{name}":"{content}"}}}}}}]}}"#
            ))
        };
        assert_eq!(files("token", "b25l"), files("token", "dHdv"));
        assert_ne!(files("token", "b25l"), files("other", "b25l"));
        // A job's template too.
        let job = |v: &str| {
            fingerprint(
                &Method::POST,
                "/v1/jobs",
                format!(r#"{{"count":2,"template":{{"image":"x","secure_env":{{"K":"{v}"}}}}}}"#)
                    .as_bytes(),
            )
        };
        assert_eq!(job("one"), job("two"));
        // Plain env values still count.
        assert_ne!(
            of(r#"{"image":"x","env":{"A":"1"}}"#),
            of(r#"{"image":"x","env":{"A":"2"}}"#)
        );
    }

    #[test]
    fn the_same_request_has_the_same_fingerprint_however_it_is_serialised() {
        let a = fingerprint(
            &Method::POST,
            "/v1/containers",
            br#"{"image":"x","cpu":0.5}"#,
        );
        let b = fingerprint(
            &Method::POST,
            "/v1/containers",
            b"{ \"cpu\": 0.5,\n \"image\": \"x\" }",
        );
        assert_eq!(a, b);
        for other in [
            fingerprint(
                &Method::POST,
                "/v1/containers",
                br#"{"image":"y","cpu":0.5}"#,
            ),
            fingerprint(&Method::POST, "/v1/jobs", br#"{"image":"x","cpu":0.5}"#),
            fingerprint(
                &Method::PUT,
                "/v1/containers",
                br#"{"image":"x","cpu":0.5}"#,
            ),
        ] {
            assert_ne!(a, other);
        }
    }

    #[test]
    fn keys_are_checked() {
        let with = |key: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(HEADER, HeaderValue::from_str(key).unwrap());
            from_request(&headers, &Method::POST, "/", b"{}")
        };
        assert!(matches!(with("order-17"), Ok(Some(idem)) if idem.key == "order-17"));
        assert!(with("").is_err());
        assert!(with("has space").is_err());
        assert!(with(&"k".repeat(256)).is_err());
        assert!(matches!(
            from_request(&HeaderMap::new(), &Method::POST, "/", b"{}"),
            Ok(None)
        ));
    }
}
