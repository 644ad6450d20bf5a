//! Quotas: an admin sets a tenant's; admission past one is a 403
//! `quota-exceeded` naming it, with its limit and the use; `GET /v1/quota`
//! shows both; a job's tasks wait for room instead of failing; another
//! tenant is served meanwhile; a tenant's starts are paced by its start
//! rate while another tenant's are not.

use reqwest::Method;
use serde_json::{json, Value};
use skiff_e2e::{limit, secs, Platform, Tenant};
use std::time::Duration;

async fn set_quota(platform: &Platform, t: &Tenant, body: &Value) -> Value {
    let reply = platform
        .admin(
            Method::PUT,
            &format!("/v1/admin/tenants/{}/quota", t.id),
            Some(body),
        )
        .await
        .unwrap();
    assert_eq!(reply.status, 200, "{reply:?}");
    reply.json()
}

/// An admin's quota change with `field` at -1: 400 naming it.
async fn refused_as_bad(platform: &Platform, t: &Tenant, field: &str) {
    let bad = platform
        .admin(
            Method::PUT,
            &format!("/v1/admin/tenants/{}/quota", t.id),
            Some(&json!({ field: -1 })),
        )
        .await
        .unwrap();
    assert_eq!(bad.status, 400, "{bad:?}");
    assert_eq!(bad.problem()["field"], field);
}

async fn quota(t: &Tenant) -> Value {
    let reply = t.call(Method::GET, "/v1/quota", None).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    reply.json()
}

fn assert_refused(reply: &skiff_e2e::Reply, field: &str, limit: Value, use_: Value) {
    assert_eq!(reply.status, 403, "{reply:?}");
    let problem = reply.problem();
    assert!(
        problem["type"]
            .as_str()
            .unwrap()
            .ends_with("/quota-exceeded"),
        "{problem}"
    );
    assert_eq!(problem["field"], field, "{problem}");
    assert_eq!(problem["limit"], limit, "{problem}");
    assert_eq!(problem["use"], use_, "{problem}");
}

#[tokio::test]
async fn admission_past_a_quota_is_refused_naming_it_and_the_quota_shows_limits_and_use() {
    limit(secs(120), async {
        let platform = Platform::get().await;
        let t = platform.new_tenant().await;
        let other = t.another().await;
        let shown = set_quota(
            platform,
            &t,
            &json!({"max_vcpu": 0.3, "max_containers": 2, "max_jobs": 1}),
        )
        .await;
        assert_eq!(shown["limits"]["max_vcpu"], 0.3, "{shown}");
        assert_eq!(shown["limits"]["max_containers"], 2, "{shown}");

        // Within the quota: accepted (the positive control).
        let first = t.create_id(&platform.sleeper(0.2)).await;
        let q = quota(&t).await;
        assert_eq!(q["use"]["vcpu"], 0.2, "{q}");
        assert_eq!(q["use"]["containers"], 1, "{q}");
        assert_eq!(q["limits"]["max_jobs"], 1, "{q}");
        assert!(q["limits"]["max_pending"].as_i64().unwrap() > 0, "{q}");

        // Past max_vcpu: refused, nothing created.
        let refused = t.create(&platform.sleeper(0.2)).await;
        assert_refused(&refused, "max_vcpu", json!(0.3), json!(0.2));
        assert_eq!(quota(&t).await["use"]["containers"], 1);
        // Another tenant is not held by this one's quota.
        other.create_id(&platform.sleeper(0.2)).await;

        // Raise one limit (the others keep theirs); then max_containers binds.
        let shown = set_quota(platform, &t, &json!({"max_vcpu": 10})).await;
        assert_eq!(shown["limits"]["max_containers"], 2, "{shown}");
        t.create_id(&platform.sleeper(0.2)).await;
        let refused = t.create(&platform.sleeper(0.2)).await;
        assert_refused(&refused, "max_containers", json!(2), json!(2));
        // A finished container no longer counts.
        t.delete(&first).await;
        t.create_id(&platform.sleeper(0.2)).await;

        // Jobs: one unfinished at a time.
        let mut template = platform.spec(&["sleep", "600"]);
        template["stop_timeout_s"] = json!(1);
        template["cpu"] = json!(0.1);
        let job = json!({"template": template, "count": 1});
        set_quota(platform, &t, &json!({"max_containers": 10})).await;
        let created = t.call(Method::POST, "/v1/jobs", Some(&job)).await;
        assert_eq!(created.status, 201, "{created:?}");
        let refused = t.call(Method::POST, "/v1/jobs", Some(&job)).await;
        assert_refused(&refused, "max_jobs", json!(1), json!(1));
        let job_id = created.json()["id"].as_str().unwrap().to_owned();
        let gone = t
            .call(Method::DELETE, &format!("/v1/jobs/{job_id}"), None)
            .await;
        assert_eq!(gone.status, 204, "{gone:?}");

        // Refusals of the admin route itself.
        let by_tenant = t
            .call(
                Method::PUT,
                &format!("/v1/admin/tenants/{}/quota", t.id),
                Some(&json!({"max_jobs": 100})),
            )
            .await;
        assert_eq!(by_tenant.status, 403, "{by_tenant:?}");
        refused_as_bad(platform, &t, "max_pending").await;
        let unknown = platform
            .admin(
                Method::PUT,
                "/v1/admin/tenants/00000000-0000-0000-0000-000000000000/quota",
                Some(&json!({"max_jobs": 1})),
            )
            .await
            .unwrap();
        assert_eq!(unknown.status, 404, "{unknown:?}");
    })
    .await
}

#[tokio::test]
async fn a_jobs_tasks_wait_for_room_within_the_quota_and_all_succeed() {
    limit(secs(120), async {
        let platform = Platform::get().await;
        let t = platform.new_tenant().await;
        set_quota(platform, &t, &json!({"max_containers": 1})).await;
        let mut template = platform.sh("sleep 0.5");
        template["cpu"] = json!(0.1);
        template["memory_mib"] = json!(64);
        let created = t
            .call(
                Method::POST,
                "/v1/jobs",
                Some(&json!({"template": template, "count": 4, "parallelism": 4})),
            )
            .await;
        assert_eq!(created.status, 201, "{created:?}");
        let id = created.json()["id"].as_str().unwrap().to_owned();
        // Sampled from the outside until the job is done.
        let mut most = 0;
        let done = loop {
            let job = t
                .call(Method::GET, &format!("/v1/jobs/{id}"), None)
                .await
                .json();
            most = most.max(quota(&t).await["use"]["containers"].as_i64().unwrap());
            if job["state"] != "running" && job["state"] != "pending" {
                break job;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(done["state"], "succeeded", "{done}");
        assert_eq!(done["tasks"]["succeeded"], 4, "{done}");
        assert!(most <= 1, "{most} live containers under a quota of 1");
    })
    .await
}

#[tokio::test]
async fn past_its_start_rate_a_tenants_containers_wait_in_the_queue_and_others_start() {
    limit(secs(120), async {
        let platform = Platform::get().await;
        let t = platform.new_tenant().await;
        let other = t.another().await;
        // One start per 100 s, a burst of one: the first goes, the next
        // wait far longer than this test looks.
        let shown = set_quota(platform, &t, &json!({"max_starts_per_s": 0.01})).await;
        assert_eq!(shown["limits"]["max_starts_per_s"], 0.01, "{shown}");
        let first = t.create_id(&platform.sleeper(0.1)).await;
        let second = t.create_id(&platform.sleeper(0.1)).await;
        let third = t.create_id(&platform.sleeper(0.1)).await;
        t.wait(&first, "running", 60).await;
        // Another tenant, with the operator's default rate, is not held.
        let theirs = other.create_id(&platform.sleeper(0.1)).await;
        other.wait(&theirs, "running", 60).await;
        for id in [&second, &third] {
            let waiting = t
                .poll_until(id, 30, "the start-rate message", |o| {
                    o["message"]
                        .as_str()
                        .is_some_and(|m| m.contains("start rate"))
                })
                .await;
            assert_eq!(waiting["state"], "pending", "{waiting}");
            assert_eq!(waiting["reason"], "WaitingForCapacity", "{waiting}");
        }
        // Raised, the queue drains: both start.
        set_quota(platform, &t, &json!({"max_starts_per_s": 100})).await;
        t.wait(&second, "running", 60).await;
        t.wait(&third, "running", 60).await;
        refused_as_bad(platform, &t, "max_starts_per_s").await;
        for id in [&first, &second, &third] {
            t.delete(id).await;
        }
        other.delete(&theirs).await;
    })
    .await
}
