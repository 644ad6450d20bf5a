//! `Idempotency-Key` on container creation: concurrent retries create one
//! container, a retry after an API restart still finds it, and the same key
//! for another request is refused (each refusal beside its control).

use reqwest::Method;
use serde_json::{json, Value};
use skiff_e2e::{limit, secs, unique, Platform, Reply, Tenant};

fn labelled(platform: &Platform, key: &str) -> Value {
    let mut spec = platform.spec(&["sleep", "1"]);
    spec["labels"] = json!({ "idem": key });
    spec
}

async fn create(t: &Tenant, spec: &Value, key: &str) -> Reply {
    t.call_with_key(Method::POST, "/v1/containers", Some(spec), Some(key))
        .await
}

fn replayed(reply: &Reply) -> bool {
    reply
        .headers
        .get("idempotent-replayed")
        .is_some_and(|v| v == "true")
}

async fn labelled_count(t: &Tenant, key: &str) -> usize {
    let label = format!("idem={key}");
    t.list(&[("label", label.as_str())]).await["items"]
        .as_array()
        .map_or(0, Vec::len)
}

#[tokio::test]
async fn one_key_sent_twenty_times_at_once_creates_one_container() {
    limit(secs(90), async {
        let platform = Platform::get().await;
        let t = platform.new_tenant().await;
        let key = unique("idem");
        let spec = labelled(platform, &key);
        let replies = futures::future::join_all((0..20).map(|_| create(&t, &spec, &key))).await;
        let first = &replies[0];
        assert_eq!(first.status, 201, "{first:?}");
        let id = first.json()["id"].clone();
        for reply in &replies {
            assert_eq!(reply.status, 201, "{reply:?}");
            assert_eq!(
                reply.json()["id"],
                id,
                "every retry gets the same container"
            );
        }
        assert_eq!(
            replies.iter().filter(|r| !replayed(r)).count(),
            1,
            "one request created it, the others were replays"
        );
        assert_eq!(labelled_count(&t, &key).await, 1);

        // The same key for another body: 422 naming the header.
        let mut other = spec.clone();
        other["command"] = json!(["sleep", "2"]);
        let reused = create(&t, &other, &key).await;
        assert_eq!(reused.status, 422, "{reused:?}");
        assert_eq!(reused.problem()["field"], "Idempotency-Key");
        // The control: a new key for that body creates a new container.
        let fresh = create(&t, &other, &unique("idem")).await;
        assert_eq!(fresh.status, 201, "{fresh:?}");
        assert_ne!(fresh.json()["id"], id);
        // Keys are per tenant: another tenant's same key is its own.
        let u = t.another().await;
        let theirs = create(&u, &spec, &key).await;
        assert_eq!(theirs.status, 201, "{theirs:?}");
        assert!(!replayed(&theirs));
        // A malformed key is named.
        let bad = create(&t, &spec, "has space").await;
        assert_eq!(bad.status, 400, "{bad:?}");
        assert_eq!(bad.problem()["field"], "Idempotency-Key");
    })
    .await
}

#[tokio::test]
async fn a_retry_after_the_api_restarts_gets_the_same_container() {
    limit(secs(90), async {
        // The hostless pool: its one replica can be restarted, and the
        // container only queues.
        let platform = Platform::hostless().await;
        let t = platform.new_exclusive_tenant().await;
        let key = unique("idem");
        let spec = labelled(platform, &key);
        let created = create(&t, &spec, &key).await;
        assert_eq!(created.status, 201, "{created:?}");
        assert!(!replayed(&created));

        platform.kill_api(1);
        platform.respawn_api(1).await;

        let retried = create(&t, &spec, &key).await;
        assert_eq!(retried.status, 201, "{retried:?}");
        assert!(replayed(&retried), "{retried:?}");
        assert_eq!(retried.json()["id"], created.json()["id"]);
        assert_eq!(labelled_count(&t, &key).await, 1);
        t.delete(created.json()["id"].as_str().unwrap()).await;
    })
    .await
}

#[tokio::test]
async fn a_retried_restart_with_its_key_restarts_once() {
    limit(secs(120), async {
        let platform = Platform::get().await;
        let t = platform.new_tenant().await;
        let id = t.create_id(&platform.sleeper(0.1)).await;
        t.wait(&id, "running", 60).await;
        let key = unique("restart");
        let path = format!("/v1/containers/{id}/restart");
        let replies = futures::future::join_all(
            (0..5).map(|_| t.call_with_key(Method::POST, &path, None, Some(&key))),
        )
        .await;
        for reply in &replies {
            assert_eq!(reply.status, 202, "{reply:?}");
            assert_eq!(
                reply.text, replies[0].text,
                "every retry gets the first answer"
            );
        }
        assert_eq!(replies.iter().filter(|r| !replayed(r)).count(), 1);
        // (restart_count counts restarts by policy; a requested one shows
        // as a Restarting event and a new start.)
        t.wait(&id, "running", 60).await;
        assert_eq!(
            t.count_events(&id, "Restarting").await,
            1,
            "one restart: {}",
            t.diag(&id).await
        );

        // The key names that request: stopping with it is refused...
        let stop_path = format!("/v1/containers/{id}/stop");
        let reused = t
            .call_with_key(Method::POST, &stop_path, None, Some(&key))
            .await;
        assert_eq!(reused.status, 422, "{reused:?}");
        assert_eq!(reused.problem()["field"], "Idempotency-Key");
        // ... and a new key restarts again (the control).
        let again = t
            .call_with_key(Method::POST, &path, None, Some(&unique("restart")))
            .await;
        assert_eq!(again.status, 202, "{again:?}");
        t.wait(&id, "running", 60).await;
        assert_eq!(
            t.count_events(&id, "Restarting").await,
            2,
            "{}",
            t.diag(&id).await
        );
        t.delete(&id).await;
    })
    .await
}

#[tokio::test]
async fn a_job_and_its_cancel_retried_with_their_keys_happen_once() {
    limit(secs(90), async {
        let platform = Platform::get().await;
        let t = platform.new_tenant().await;
        let key = unique("job");
        let mut template = platform.spec(&["sleep", "600"]);
        template["stop_timeout_s"] = json!(1);
        let body = json!({"template": template, "count": 3, "parallelism": 1});
        let replies = futures::future::join_all(
            (0..5).map(|_| t.call_with_key(Method::POST, "/v1/jobs", Some(&body), Some(&key))),
        )
        .await;
        let id = replies[0].json()["id"].as_str().unwrap().to_owned();
        for reply in &replies {
            assert_eq!(reply.status, 201, "{reply:?}");
            assert_eq!(reply.json()["id"], id.as_str());
        }
        assert_eq!(replies.iter().filter(|r| !replayed(r)).count(), 1);
        let jobs = t.call(Method::GET, "/v1/jobs", None).await.json();
        assert_eq!(jobs["items"].as_array().unwrap().len(), 1, "{jobs}");

        let cancel_key = unique("cancel");
        let path = format!("/v1/jobs/{id}/cancel");
        let first = t
            .call_with_key(Method::POST, &path, None, Some(&cancel_key))
            .await;
        let again = t
            .call_with_key(Method::POST, &path, None, Some(&cancel_key))
            .await;
        assert_eq!(first.status, 202, "{first:?}");
        assert_eq!((again.status, &again.text), (first.status, &first.text));
        assert!(!replayed(&first) && replayed(&again));
        // The job's key names the job's request: reused for a cancel, 422.
        let reused = t.call_with_key(Method::POST, &path, None, Some(&key)).await;
        assert_eq!(reused.status, 422, "{reused:?}");
        let deleted = t
            .call(Method::DELETE, &format!("/v1/jobs/{id}"), None)
            .await;
        assert_eq!(deleted.status, 204, "{deleted:?}");
    })
    .await
}
