//! The REST surface: bad input, listing and pagination, service endpoints.

use crate::tenant;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use skiff_e2e::{id_of, unique, Platform};
use skiff_e2e::{limit, secs};
use std::collections::BTreeSet;

/// What a bad request must name in the problem's `field`.
enum Field {
    Exactly(&'static str),
    StartsWith(&'static str),
    /// Not checked (e.g. JSON that does not parse has no field).
    Any,
}

/// A validation failure: 400 or 422 are both fine.
const VALIDATION: &[u16] = &[400, 422];

#[tokio::test]
async fn bad_input_gets_problem_json_naming_the_field() {
    limit(secs(60), async {
        let t = tenant().await;
        let valid = t.platform.spec(&["echo", "ok"]);
        let with = |key: &str, value: Value| {
            let mut spec = valid.clone();
            spec[key] = value;
            spec
        };
        let without = |key: &str| {
            let mut spec = valid.clone();
            spec.as_object_mut().expect("object").remove(key);
            spec
        };

        // A name taken in this tenant: the duplicate below must get 409.
        let taken = unique("taken");
        t.create_ok(&with("name", json!(taken))).await;

        use Field::*;
        let cases: Vec<(&str, Value, &[u16], Field)> = vec![
            (
                "unknown field",
                with("bogus", json!(1)),
                VALIDATION,
                Exactly("bogus"),
            ),
            (
                "image UPPER/x",
                with("image", json!("UPPER/x")),
                VALIDATION,
                Exactly("image"),
            ),
            (
                "image a//b",
                with("image", json!("a//b")),
                VALIDATION,
                Exactly("image"),
            ),
            (
                "image x:tag:bad",
                with("image", json!("x:tag:bad")),
                VALIDATION,
                Exactly("image"),
            ),
            (
                "image empty",
                with("image", json!("")),
                VALIDATION,
                Exactly("image"),
            ),
            (
                "cpu 0.05",
                with("cpu", json!(0.05)),
                VALIDATION,
                Exactly("cpu"),
            ),
            (
                "cpu 4.5",
                with("cpu", json!(4.5)),
                VALIDATION,
                Exactly("cpu"),
            ),
            (
                "cpu 0.125",
                with("cpu", json!(0.125)),
                VALIDATION,
                Exactly("cpu"),
            ),
            ("cpu 0", with("cpu", json!(0)), VALIDATION, Exactly("cpu")),
            (
                "memory_mib 32",
                with("memory_mib", json!(32)),
                VALIDATION,
                Exactly("memory_mib"),
            ),
            (
                "memory_mib 20000",
                with("memory_mib", json!(20000)),
                VALIDATION,
                Exactly("memory_mib"),
            ),
            (
                "name Bad_Name",
                with("name", json!("Bad_Name")),
                VALIDATION,
                Exactly("name"),
            ),
            (
                "name 64 chars",
                with("name", json!("a".repeat(64))),
                VALIDATION,
                Exactly("name"),
            ),
            (
                "name empty",
                with("name", json!("")),
                VALIDATION,
                Exactly("name"),
            ),
            (
                "duplicate name",
                with("name", json!(taken)),
                &[409],
                Exactly("name"),
            ),
            (
                "env key 1BAD",
                with("env", json!({ "1BAD": "x" })),
                VALIDATION,
                Exactly("env.1BAD"),
            ),
            (
                "env key A-B",
                with("env", json!({ "A-B": "x" })),
                VALIDATION,
                Exactly("env.A-B"),
            ),
            (
                "secure_env key 1BAD",
                with("secure_env", json!({ "1BAD": "x" })),
                VALIDATION,
                StartsWith("secure_env"),
            ),
            (
                "env over 64 KiB",
                with("env", json!({ "BIG": "x".repeat(70 * 1024) })),
                VALIDATION,
                StartsWith("env"),
            ),
            (
                "missing image",
                without("image"),
                VALIDATION,
                Exactly("image"),
            ),
            ("missing cpu", without("cpu"), VALIDATION, Exactly("cpu")),
            (
                "missing memory_mib",
                without("memory_mib"),
                VALIDATION,
                Exactly("memory_mib"),
            ),
            (
                "cpu as string",
                with("cpu", json!("half")),
                VALIDATION,
                Exactly("cpu"),
            ),
            (
                "memory_mib as string",
                with("memory_mib", json!("lots")),
                VALIDATION,
                Exactly("memory_mib"),
            ),
            (
                "memory_mib negative",
                with("memory_mib", json!(-128)),
                VALIDATION,
                Exactly("memory_mib"),
            ),
            (
                "image as number",
                with("image", json!(7)),
                VALIDATION,
                Exactly("image"),
            ),
            (
                "command as string",
                with("command", json!("echo ok")),
                VALIDATION,
                Exactly("command"),
            ),
            (
                "env as list",
                with("env", json!(["A=1"])),
                VALIDATION,
                StartsWith("env"),
            ),
            (
                "env value as number",
                with("env", json!({ "A": 1 })),
                VALIDATION,
                StartsWith("env"),
            ),
            (
                "labels as list",
                with("labels", json!(["a"])),
                VALIDATION,
                StartsWith("labels"),
            ),
            (
                "restart_policy sometimes",
                with("restart_policy", json!("sometimes")),
                VALIDATION,
                Exactly("restart_policy"),
            ),
            (
                "max_restarts as string",
                with("max_restarts", json!("two")),
                VALIDATION,
                Exactly("max_restarts"),
            ),
            ("body is a list", json!([valid.clone()]), VALIDATION, Any),
        ];

        let mut failures = Vec::new();
        for (label, body, statuses, field) in &cases {
            let reply = t.create(body).await;
            check_problem(label, &reply, statuses, field, &mut failures);
        }

        // Bodies that are not JSON, or too big.
        let raw: Vec<(&str, &str, Vec<u8>, &[u16])> = vec![
            (
                "invalid JSON",
                "application/json",
                br#"{"image": "#.to_vec(),
                VALIDATION,
            ),
            ("empty body", "application/json", Vec::new(), VALIDATION),
            (
                "body over 1 MiB",
                "application/json",
                serde_json::to_vec(&with("labels", json!({ "big": "x".repeat(1200 * 1024) })))
                    .expect("json"),
                &[413],
            ),
        ];
        for (label, content_type, body, statuses) in raw {
            let reply = t.post_raw("/v1/containers", content_type, body).await;
            check_problem(label, &reply, statuses, &Any, &mut failures);
        }

        // Lookups of ids that are not there, or not ids.
        let unknown = uuid::Uuid::new_v4();
        let reply = t
            .call(Method::GET, &format!("/v1/containers/{unknown}"), None)
            .await;
        check_problem("unknown id", &reply, &[404], &Any, &mut failures);
        let reply = t.call(Method::GET, "/v1/containers/not-a-uuid", None).await;
        check_problem("malformed id", &reply, &[400, 404], &Any, &mut failures);

        assert!(
            failures.is_empty(),
            "{} of {} bad-input cases failed:\n{}",
            failures.len(),
            cases.len() + 5,
            failures.join("\n")
        );
        // Nothing bad was stored: only the container that took the name.
        let listed = t.list(&[]).await;
        assert_eq!(
            listed["items"].as_array().map(Vec::len),
            Some(1),
            "{listed}"
        );
    })
    .await
}

/// Records why `reply` is not the problem+json a bad request must get.
fn check_problem(
    label: &str,
    reply: &skiff_e2e::Reply,
    statuses: &[u16],
    field: &Field,
    failures: &mut Vec<String>,
) {
    let mut wrong = Vec::new();
    if !statuses.contains(&reply.status.as_u16()) {
        wrong.push(format!("status {} not in {statuses:?}", reply.status));
    }
    if !reply.content_type.starts_with("application/problem+json") {
        wrong.push(format!("content type {:?}", reply.content_type));
    }
    let body = reply.json();
    if body["status"] != reply.status.as_u16() {
        wrong.push("problem `status` differs from the HTTP status".into());
    }
    for key in ["type", "title", "detail"] {
        if !body[key].is_string() {
            wrong.push(format!("no `{key}`"));
        }
    }
    let named = body["field"].as_str().unwrap_or("");
    match field {
        Field::Exactly(expected) if named != *expected => {
            wrong.push(format!("field {named:?}, expected {expected:?}"))
        }
        Field::StartsWith(prefix) if !named.starts_with(prefix) => {
            wrong.push(format!("field {named:?}, expected {prefix}..."))
        }
        _ => {}
    }
    if !wrong.is_empty() {
        let mut text = reply.text.clone();
        text.truncate(400);
        failures.push(format!("  {label}: {}; body {text}", wrong.join(", ")));
    }
}

#[tokio::test]
async fn list_filters_by_state_and_label_and_paginates() {
    limit(secs(90), async {
        let t = tenant().await;
        let labelled = |command: &[&str], labels: Value| {
            let mut spec = t.platform.spec(command);
            spec["labels"] = labels;
            spec["stop_timeout_s"] = json!(1);
            spec
        };
        let web_front = t
            .create_id(&labelled(
                &["echo", "1"],
                json!({ "app": "web", "tier": "front" }),
            ))
            .await;
        let db = t
            .create_id(&labelled(&["echo", "2"], json!({ "app": "db" })))
            .await;
        let web_sleeper = t
            .create_id(&labelled(&["sleep", "300"], json!({ "app": "web" })))
            .await;
        t.wait_exited_in(&web_front, "succeeded").await;
        t.wait_exited_in(&db, "succeeded").await;
        t.wait(&web_sleeper, "running", 60).await;

        let ids = |list: &Value| -> BTreeSet<String> {
            list["items"]
                .as_array()
                .unwrap_or_else(|| panic!("no items: {list}"))
                .iter()
                .map(id_of)
                .collect()
        };
        let set = |items: &[&String]| -> BTreeSet<String> {
            items.iter().map(|s| s.to_string()).collect()
        };

        let all = t.list(&[]).await;
        assert_eq!(ids(&all), set(&[&web_front, &db, &web_sleeper]), "{all}");
        assert!(all["next"].is_null(), "one page: {all}");
        for (query, expected) in [
            (vec![("state", "running")], set(&[&web_sleeper])),
            (vec![("state", "succeeded")], set(&[&web_front, &db])),
            (vec![("state", "failed")], set(&[])),
            (vec![("label", "app=web")], set(&[&web_front, &web_sleeper])),
            (
                vec![("label", "app=web"), ("label", "tier=front")],
                set(&[&web_front]),
            ),
            (vec![("label", "app=nope")], set(&[])),
            (vec![("state", "running"), ("label", "app=db")], set(&[])),
        ] {
            let list = t.list(&query).await;
            assert_eq!(ids(&list), expected, "GET /v1/containers {query:?}: {list}");
        }

        // limit=1 walks every container exactly once.
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..10 {
            let mut query = vec![("limit", "1".to_string())];
            if let Some(cursor) = &cursor {
                query.push(("cursor", cursor.clone()));
            }
            let query: Vec<(&str, &str)> = query.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let page = t.list(&query).await;
            let items = page["items"].as_array().expect("items");
            assert!(items.len() <= 1, "limit=1 gave {page}");
            seen.extend(items.iter().map(id_of));
            match page["next"].as_str() {
                Some(next) => cursor = Some(next.to_string()),
                None => break,
            }
        }
        let unique_seen: BTreeSet<String> = seen.iter().cloned().collect();
        assert_eq!(seen.len(), 3, "pages gave {seen:?}");
        assert_eq!(unique_seen, set(&[&web_front, &db, &web_sleeper]));

        t.delete(&web_sleeper).await;
    })
    .await
}

#[tokio::test]
async fn service_endpoints_answer() {
    limit(secs(30), async {
        let platform = Platform::get().await;
        let client = reqwest::Client::new();
        let get = |path: &str| client.get(format!("{}{path}", platform.api_url)).send();

        assert_eq!(
            get("/healthz").await.expect("healthz").status(),
            StatusCode::OK
        );
        assert_eq!(
            get("/readyz").await.expect("readyz").status(),
            StatusCode::OK
        );

        let metrics = get("/metrics").await.expect("metrics");
        assert_eq!(metrics.status(), StatusCode::OK);
        let text = metrics.text().await.expect("metrics body");
        assert!(text.contains("# TYPE "), "Prometheus text format: {text}");

        let openapi = get("/openapi.json").await.expect("openapi");
        assert_eq!(openapi.status(), StatusCode::OK);
        let document: Value = openapi.json().await.expect("openapi is JSON");
        assert!(
            document["openapi"]
                .as_str()
                .is_some_and(|v| v.starts_with('3')),
            "OpenAPI 3: {}",
            document["openapi"]
        );
        assert!(
            document["paths"]["/v1/containers"].is_object(),
            "paths: {}",
            document["paths"]
        );

        // Tenants are created with the admin token only.
        let tenants = format!("{}/v1/tenants", platform.api_url);
        let anonymous = client
            .post(&tenants)
            .json(&json!({ "name": unique("nobody") }))
            .send()
            .await
            .expect("POST /v1/tenants");
        assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
        let t = crate::tenant().await;
        let as_tenant = client
            .post(&tenants)
            .bearer_auth(&t.token)
            .json(&json!({ "name": unique("sneaky") }))
            .send()
            .await
            .expect("POST /v1/tenants");
        assert!(
            matches!(as_tenant.status().as_u16(), 401 | 403),
            "a tenant token cannot create tenants: {}",
            as_tenant.status()
        );
    })
    .await
}
