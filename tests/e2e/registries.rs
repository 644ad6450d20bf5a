//! Private registries: the test registries behind basic auth (htpasswd)
//! and behind bearer tokens (the distribution spec's token flow) hold the
//! sample image. The right credentials pull it and the container runs;
//! wrong ones, or none, fail it with `ImagePullFailed` and a message that
//! says unauthorized, on a host that has the image cached too (a cached
//! private image is used only after the caller's own authorization).
//! A tenant's stored credential is used when the request gives none, and a
//! request's own overrides it; stored ones are write-only and per tenant.
//! Prewarm puts the image on a host, which `GET /v1/images` (admin only)
//! then lists. No password ever appears in an answer or a service log.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use skiff_e2e::registry::AuthRegistry;
use skiff_e2e::{eventually, id_of, limit, secs, Tenant, HOST_LABEL};
use std::time::Duration;

/// A container of the private image that prints `word`.
fn private_spec(t: &Tenant, registry: &AuthRegistry, word: &str) -> Value {
    let mut spec = t.platform.spec(&["echo", word]);
    spec["image"] = json!(registry.image());
    spec
}

/// Asserts that no answer of `t` about container `id` (object, events, the
/// event log) nor any service log holds one of `secrets`.
async fn assert_never_shown(t: &Tenant, id: &str, secrets: &[&str]) {
    let mut answers = vec![
        t.call(Method::GET, &format!("/v1/containers/{id}"), None)
            .await
            .text,
        t.call(Method::GET, &format!("/v1/containers/{id}/events"), None)
            .await
            .text,
        t.call(Method::GET, &format!("/v1/events?container={id}"), None)
            .await
            .text,
        t.call(Method::GET, "/v1/registry-credentials", None)
            .await
            .text,
    ];
    answers.push(t.platform.service_logs());
    for secret in secrets {
        for text in &answers {
            assert!(
                !text.contains(secret),
                "a password was shown: {}",
                text.lines()
                    .filter(|l| l.contains(secret))
                    .collect::<Vec<_>>()
                    .join("\n")
                    .replace(secret, "<the password>")
            );
        }
    }
}

/// Waits for `id` to fail for want of authorization.
async fn assert_unauthorized(t: &Tenant, id: &str) -> Value {
    let done = t.wait_exited_in(id, "failed").await;
    let diag = t.diag(id).await;
    assert_eq!(done["reason"], "ImagePullFailed", "{diag}");
    let message = done["message"].as_str().unwrap_or_default();
    assert!(message.contains("unauthorized"), "{diag}");
    done
}

#[tokio::test]
async fn right_credentials_pull_a_private_image_and_wrong_or_none_are_unauthorized() {
    limit(secs(180), async {
        let t = crate::tenant().await;
        let registry = AuthRegistry::get();

        // Control: the right credentials pull it and it runs.
        let mut spec = private_spec(&t, &registry, "private-ok");
        spec["image_registry_credentials"] = registry.credentials();
        let ok = t.create_id(&spec).await;
        let done = t.wait_exited_in(&ok, "succeeded").await;
        assert!(t.logs(&ok).await.contains("private-ok"), "{done}");
        let host = t.host_of(&ok).await;

        // On the host that now holds the image: without credentials, and
        // with wrong ones, the cached copy is not handed out.
        let wrong = format!("wrong-{}", uuid::Uuid::new_v4().simple());
        let mut failed = Vec::new();
        for credentials in [None, Some(registry.credentials_with(&wrong))] {
            let mut spec = private_spec(&t, &registry, "never");
            spec["placement"] = json!({ "host_labels": { HOST_LABEL: host.name } });
            if let Some(c) = credentials {
                spec["image_registry_credentials"] = c;
            }
            let id = t.create_id(&spec).await;
            let done = assert_unauthorized(&t, &id).await;
            assert!(done["started_at"].is_null(), "{done}");
            failed.push(id);
        }
        // Elsewhere too (any host, cached or not).
        let mut spec = private_spec(&t, &registry, "never");
        spec["image_registry_credentials"] = registry.credentials_with(&wrong);
        let elsewhere = t.create_id(&spec).await;
        assert_unauthorized(&t, &elsewhere).await;
        failed.push(elsewhere);

        for id in [ok].iter().chain(&failed) {
            assert_never_shown(&t, id, &[&registry.password, &wrong]).await;
        }
    })
    .await
}

#[tokio::test]
async fn the_bearer_token_flow_pulls_with_the_right_credentials_only() {
    limit(secs(120), async {
        let t = crate::tenant().await;
        let registry = AuthRegistry::get();
        let server = registry.token_registry.clone();
        // Control: the token server grants a token for the right login.
        let mut spec = t.platform.spec(&["echo", "token-ok"]);
        spec["image"] = json!(registry.token_image());
        spec["image_registry_credentials"] = registry.credentials_for(&server, &registry.password);
        let ok = t.create_id(&spec).await;
        t.wait_exited_in(&ok, "succeeded").await;
        assert!(t.logs(&ok).await.contains("token-ok"));
        // A wrong password gets no token, and the pull is unauthorized.
        let wrong = format!("wrong-{}", uuid::Uuid::new_v4().simple());
        spec["image_registry_credentials"] = registry.credentials_for(&server, &wrong);
        let refused = t.create_id(&spec).await;
        assert_unauthorized(&t, &refused).await;
        for id in [&ok, &refused] {
            assert_never_shown(&t, id, &[&registry.password, &wrong]).await;
        }
    })
    .await
}

#[tokio::test]
async fn stored_credentials_are_write_only_per_tenant_and_a_request_overrides_them() {
    limit(secs(180), async {
        let t = crate::tenant().await;
        let other = t.another().await;
        let registry = AuthRegistry::get();
        let path = format!("/v1/registry-credentials/{}", registry.host);
        let body = json!({ "username": registry.user, "password": registry.password });

        let created = t.call(Method::PUT, &path, Some(&body)).await;
        assert_eq!(created.status, StatusCode::CREATED, "{created:?}");
        assert_eq!(created.json()["server"], registry.host.as_str());
        assert!(created.json().get("password").is_none(), "{created:?}");
        let replaced = t.call(Method::PUT, &path, Some(&body)).await;
        assert_eq!(replaced.status, StatusCode::OK, "{replaced:?}");
        let listed = t.call(Method::GET, "/v1/registry-credentials", None).await;
        let items = listed.json()["items"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert_eq!(items.len(), 1, "{listed:?}");
        assert_eq!(items[0]["username"], registry.user.as_str(), "{listed:?}");
        assert!(items[0].get("password").is_none(), "{listed:?}");

        // Another tenant sees none of it, cannot delete it, and its pull of
        // the private image has no credential to use.
        let theirs = other
            .call(Method::GET, "/v1/registry-credentials", None)
            .await;
        assert_eq!(theirs.json()["items"], json!([]), "{theirs:?}");
        let refused = other.call(Method::DELETE, &path, None).await;
        assert_eq!(refused.status, StatusCode::NOT_FOUND, "{refused:?}");
        let id = other
            .create_id(&private_spec(&other, &registry, "never"))
            .await;
        assert_unauthorized(&other, &id).await;

        // The stored credential pulls (no credential in the request).
        let stored = t.create_id(&private_spec(&t, &registry, "stored-ok")).await;
        t.wait_exited_in(&stored, "succeeded").await;
        assert!(t.logs(&stored).await.contains("stored-ok"));
        // A request's own credential for that server overrides it.
        let wrong = format!("wrong-{}", uuid::Uuid::new_v4().simple());
        let mut spec = private_spec(&t, &registry, "never");
        spec["image_registry_credentials"] = registry.credentials_with(&wrong);
        let overridden = t.create_id(&spec).await;
        assert_unauthorized(&t, &overridden).await;

        // Bad input names its field; a job's template refuses credentials.
        let bad = t
            .call(
                Method::PUT,
                "/v1/registry-credentials/not_a_host",
                Some(&body),
            )
            .await;
        assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{bad:?}");
        assert_eq!(bad.problem()["field"], "server");
        let bad = t
            .call(
                Method::PUT,
                &path,
                Some(&json!({ "username": "a:b", "password": "x" })),
            )
            .await;
        assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{bad:?}");
        assert_eq!(bad.problem()["field"], "username");
        let mut template = private_spec(&t, &registry, "never");
        template["image_registry_credentials"] = registry.credentials();
        let job = t
            .call(
                Method::POST,
                "/v1/jobs",
                Some(&json!({ "count": 1, "template": template })),
            )
            .await;
        assert_eq!(job.status, StatusCode::UNPROCESSABLE_ENTITY, "{job:?}");
        assert_eq!(
            job.problem()["field"],
            "template.image_registry_credentials"
        );
        // A job's tasks pull with the stored credential.
        let job = t
            .call(
                Method::POST,
                "/v1/jobs",
                Some(&json!({ "count": 1, "template": private_spec(&t, &registry, "task-ok") })),
            )
            .await;
        assert_eq!(job.status, StatusCode::CREATED, "{job:?}");
        let job_id = id_of(&job.json());
        let finished = eventually("the job finished", Duration::from_secs(90), || async {
            let j = t
                .call(Method::GET, &format!("/v1/jobs/{job_id}"), None)
                .await
                .json();
            matches!(j["state"].as_str(), Some("succeeded" | "failed")).then_some(j)
        })
        .await;
        assert_eq!(finished["state"], "succeeded", "{finished}");

        let deleted = t.call(Method::DELETE, &path, None).await;
        assert_eq!(deleted.status, StatusCode::NO_CONTENT, "{deleted:?}");
        let listed = t.call(Method::GET, "/v1/registry-credentials", None).await;
        assert_eq!(listed.json()["items"], json!([]), "{listed:?}");
        let again = t.call(Method::DELETE, &path, None).await;
        assert_eq!(again.status, StatusCode::NOT_FOUND, "{again:?}");

        for id in [&stored, &overridden] {
            assert_never_shown(&t, id, &[&registry.password, &wrong]).await;
        }
        assert_never_shown(&other, &id, &[&registry.password]).await;
    })
    .await
}

#[tokio::test]
async fn prewarm_puts_a_private_image_on_a_host_and_only_the_admin_lists_images() {
    limit(secs(180), async {
        let t = crate::tenant().await;
        let other = t.another().await;
        let registry = AuthRegistry::get();
        let body = json!({
            "image": registry.image(),
            "hosts": 1,
            "image_registry_credentials": registry.credentials(),
        });
        let warmed = t
            .call(Method::POST, "/v1/images/prewarm", Some(&body))
            .await;
        assert_eq!(warmed.status, StatusCode::OK, "{warmed:?}");
        let result = warmed.json();
        let hosts = result["hosts"].as_array().cloned().unwrap_or_default();
        assert_eq!(hosts.len(), 1, "{warmed:?}");
        let digest = hosts[0]["digest"].as_str().unwrap_or_default().to_owned();
        assert!(digest.starts_with("sha256:"), "{warmed:?}");
        let host_id = hosts[0]["host_id"].as_str().unwrap_or_default().to_owned();

        // The admin sees it on that host (from its next heartbeat).
        let image = registry.image();
        eventually(
            "the host lists the prewarmed image",
            Duration::from_secs(30),
            || {
                let (host_id, image, digest) = (&host_id, &image, &digest);
                async move {
                    let listed = t
                        .platform
                        .admin(Method::GET, "/v1/images", None)
                        .await
                        .ok()?;
                    assert_eq!(listed.status, StatusCode::OK, "{listed:?}");
                    let items = listed.json()["items"].as_array().cloned()?;
                    let host = items.iter().find(|h| h["host_id"] == host_id.as_str())?;
                    host["images"]
                        .as_array()?
                        .iter()
                        .any(|i| i["reference"] == image.as_str() && i["digest"] == digest.as_str())
                        .then_some(())
                }
            },
        )
        .await;
        // Tenants may not list hosts' images; no token is refused too.
        let refused = t.call(Method::GET, "/v1/images", None).await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN, "{refused:?}");
        let anonymous = reqwest::Client::new()
            .get(format!("{}/v1/images", t.platform.api_url))
            .send()
            .await
            .expect("GET /v1/images");
        assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);

        // Another tenant without credentials gets no digest from a host
        // that holds the image (hosts holding it are asked first): the
        // cached copy is checked against the registry with the caller's
        // credentials, here none.
        let theirs = other
            .call(
                Method::POST,
                "/v1/images/prewarm",
                Some(&json!({ "image": registry.image() })),
            )
            .await;
        assert_eq!(theirs.status, StatusCode::OK, "{theirs:?}");
        let theirs = theirs.json();
        assert!(theirs["hosts"][0]["digest"].is_null(), "{theirs}");
        let error = theirs["hosts"][0]["error"].as_str().unwrap_or_default();
        assert!(error.contains("unauthorized"), "{theirs}");
        // Bad input names its field.
        let bad = t
            .call(
                Method::POST,
                "/v1/images/prewarm",
                Some(&json!({ "image": registry.image(), "hosts": 0 })),
            )
            .await;
        assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{bad:?}");
        assert_eq!(bad.problem()["field"], "hosts");
        assert!(!t.platform.service_logs().contains(&registry.password));
        assert!(!warmed.text.contains(&registry.password));
    })
    .await
}
