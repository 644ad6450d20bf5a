//! Jobs: parallelism is never exceeded and every index succeeds once;
//! per-task overrides reach their index; retries make new attempts and a
//! job out of retries fails naming its indices; cancel stops what runs and
//! starts nothing more; a job's own deadline and budget fail it with their
//! reasons. Refusals sit beside accepted jobs.

use reqwest::Method;
use serde_json::{json, Value};
use skiff_e2e::{eventually, limit, secs, Platform, Tenant};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

async fn create_job(t: &Tenant, body: &Value) -> Value {
    let reply = t.call(Method::POST, "/v1/jobs", Some(body)).await;
    assert_eq!(reply.status, 201, "{reply:?}");
    reply.json()
}

/// Deletes a job and its task containers; afterwards it is gone.
async fn delete_job(t: &Tenant, id: &str) {
    let reply = t
        .call(Method::DELETE, &format!("/v1/jobs/{id}"), None)
        .await;
    assert_eq!(reply.status, 204, "{reply:?}");
    let gone = t.call(Method::GET, &format!("/v1/jobs/{id}"), None).await;
    assert_eq!(gone.status, 404, "{gone:?}");
}

async fn job(t: &Tenant, id: &str) -> Value {
    let reply = t.call(Method::GET, &format!("/v1/jobs/{id}"), None).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    reply.json()
}

async fn wait_job(t: &Tenant, id: &str, state: &str, within: Duration) -> Value {
    eventually(&format!("job {id} {state}"), within, || async {
        let j = job(t, id).await;
        (j["state"] == state).then_some(j)
    })
    .await
}

/// Every task container of a job (all attempts).
async fn tasks(t: &Tenant, id: &str) -> Vec<Value> {
    let reply = t
        .call(
            Method::GET,
            &format!("/v1/jobs/{id}/tasks?limit=1000"),
            None,
        )
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    reply.json()["items"].as_array().unwrap().clone()
}

fn unfinished(c: &Value) -> bool {
    !matches!(
        c["state"].as_str(),
        Some("succeeded" | "failed" | "stopped")
    )
}

fn index_of(c: &Value) -> i64 {
    c["labels"]["skiff.task-index"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

fn template(platform: &Platform, command: &[&str]) -> Value {
    let mut spec = platform.spec(command);
    spec["cpu"] = json!(0.1);
    spec["memory_mib"] = json!(64);
    spec
}

/// Waits for a job stopped for one of its limits (two tasks running, two
/// waiting: `parallelism` 2 of 4): it fails with `reason`, its two running
/// tasks end `failed` with `reason`, the two others are cancelled, and no
/// task started after.
async fn assert_stopped_for(t: &Tenant, id: &str, reason: &str) -> Value {
    let failed = wait_job(t, id, "failed", Duration::from_secs(60)).await;
    assert_eq!(failed["reason"], reason, "{failed}");
    assert_eq!(failed["tasks"]["failed"], 2, "{failed}");
    assert_eq!(failed["tasks"]["cancelled"], 2, "{failed}");
    let stopped = eventually("its tasks stopped", Duration::from_secs(60), || async {
        let all = tasks(t, id).await;
        all.iter().all(|c| !unfinished(c)).then_some(all)
    })
    .await;
    assert_eq!(
        stopped.len(),
        2,
        "no task started after the job was stopped"
    );
    for c in &stopped {
        assert_eq!(
            (c["state"].as_str(), c["reason"].as_str()),
            (Some("failed"), Some(reason)),
            "{c}"
        );
    }
    failed
}

#[tokio::test]
async fn fifty_tasks_never_run_more_than_five_at_once_and_each_index_succeeds_once() {
    limit(secs(240), async {
        let platform = Platform::get().await;
        let t = platform.new_tenant().await;
        let created = create_job(
            &t,
            &json!({"template": template(platform, &["sleep", "1"]), "count": 50, "parallelism": 5}),
        )
        .await;
        let id = created["id"].as_str().unwrap().to_owned();
        assert_eq!(created["tasks"]["waiting"], 50);
        let mut most = 0;
        let deadline = std::time::Instant::now() + Duration::from_secs(200);
        let finished = loop {
            let now_running = tasks(&t, &id).await.iter().filter(|c| unfinished(c)).count();
            most = most.max(now_running);
            assert!(now_running <= 5, "{now_running} tasks at once with parallelism 5");
            let j = job(&t, &id).await;
            if j["state"] == "succeeded" {
                break j;
            }
            assert!(j["state"] == "running" || j["state"] == "pending", "{j}");
            assert!(std::time::Instant::now() < deadline, "job not done: {j}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert!(most >= 2, "the tasks ran in parallel (at most {most} seen)");
        assert_eq!(finished["tasks"]["succeeded"], 50, "{finished}");
        assert!(finished["usage"]["billed_seconds"].as_i64().unwrap() >= 50);
        // The usage report by job has this job's seconds under its id.
        let now = chrono::Utc::now();
        let hour = |h: i64| {
            let t = now + chrono::Duration::hours(h);
            t.format("%Y-%m-%dT%H:00:00Z").to_string()
        };
        let path = format!("/v1/usage?from={}&to={}&group_by=job", hour(-1), hour(2));
        let report = t.call(Method::GET, &path, None).await;
        assert_eq!(report.status, 200, "{report:?}");
        let items = report.json()["items"].clone();
        let mine = items
            .as_array()
            .and_then(|g| g.iter().find(|g| g["key"] == id.as_str()))
            .unwrap_or_else(|| panic!("no item for job {id}: {items}"))
            .clone();
        assert_eq!(
            mine["billed_seconds"], finished["usage"]["billed_seconds"],
            "{mine} vs {finished}"
        );
        let all = tasks(&t, &id).await;
        let mut succeeded: BTreeMap<i64, usize> = BTreeMap::new();
        for c in all.iter().filter(|c| c["state"] == "succeeded") {
            *succeeded.entry(index_of(c)).or_default() += 1;
        }
        assert_eq!(succeeded.len(), 50);
        assert!(succeeded.keys().copied().eq(0..50));
        assert!(succeeded.values().all(|n| *n == 1), "an index succeeded twice");
        // The container routes see them as ordinary containers.
        let labelled = t.list(&[("label", &format!("skiff.job={id}")), ("limit", "1000")]).await;
        assert_eq!(labelled["items"].as_array().unwrap().len(), all.len());
        delete_job(&t, &id).await;
        let left = t.list(&[("label", &format!("skiff.job={id}"))]).await;
        assert_eq!(left["items"].as_array().unwrap().len(), 0, "{left}");
    })
    .await
}

#[tokio::test]
async fn each_index_gets_its_overrides_and_env() {
    limit(secs(120), async {
        let platform = Platform::get().await;
        let t = platform.new_tenant().await;
        let mut spec = template(
            platform,
            &[
                "sh",
                "-c",
                "echo $WORD-$SKIFF_TASK_INDEX-of-$SKIFF_TASK_COUNT",
            ],
        );
        spec["env"] = json!({"WORD": "plain"});
        let tasks_over = json!([{"env": {"WORD": "zero"}}, {"command": ["echo", "custom"]}, {}]);
        // Refused: tasks of another length (the accepted job follows).
        let reply = t
            .call(
                Method::POST,
                "/v1/jobs",
                Some(&json!({"template": spec, "count": 2, "tasks": tasks_over})),
            )
            .await;
        assert_eq!(reply.status, 422, "{reply:?}");
        assert_eq!(reply.problem()["field"], "tasks");
        let created = create_job(
            &t,
            &json!({"name": "fan", "template": spec, "count": 3, "tasks": tasks_over}),
        )
        .await;
        let id = created["id"].as_str().unwrap().to_owned();
        wait_job(&t, &id, "succeeded", Duration::from_secs(90)).await;
        let by_name: BTreeMap<String, String> = tasks(&t, &id)
            .await
            .iter()
            .map(|c| {
                (
                    c["name"].as_str().unwrap().to_owned(),
                    c["id"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        let expect = [
            ("fan-0", "zero-0-of-3\n"),
            ("fan-1", "custom\n"),
            ("fan-2", "plain-2-of-3\n"),
        ];
        for (name, out) in expect {
            let cid = by_name
                .get(name)
                .unwrap_or_else(|| panic!("no {name} in {by_name:?}"));
            assert_eq!(t.logs(cid).await, out, "{name}");
        }
        delete_job(&t, &id).await;
    })
    .await
}

#[tokio::test]
async fn failed_tasks_are_retried_and_a_job_out_of_retries_fails_with_its_indices() {
    limit(secs(150), async {
        let platform = Platform::get().await;
        let t = platform.new_tenant().await;
        // Fails on attempts 1 and 2, succeeds on 3.
        let third = template(platform, &["sh", "-c", "[ \"$SKIFF_TASK_ATTEMPT\" -ge 3 ]"]);
        let retried = create_job(
            &t,
            &json!({"name": "third", "template": third, "count": 1, "max_retries": 2}),
        )
        .await;
        let never = template(platform, &["sh", "-c", "exit 3"]);
        let failing = create_job(
            &t,
            &json!({"template": never, "count": 2, "max_retries": 1}),
        )
        .await;

        let id = retried["id"].as_str().unwrap().to_owned();
        let done = wait_job(&t, &id, "succeeded", Duration::from_secs(120)).await;
        assert_eq!(done["tasks"]["succeeded"], 1, "{done}");
        // The event log filtered by job: only this job's containers.
        let events = t
            .call(
                Method::GET,
                &format!("/v1/events?job={id}&type=state&limit=1000"),
                None,
            )
            .await
            .json();
        let seen: BTreeSet<String> = events["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["container_id"].as_str().unwrap().to_owned())
            .collect();
        let task_ids: BTreeSet<String> = tasks(&t, &id)
            .await
            .iter()
            .map(|c| c["id"].as_str().unwrap().to_owned())
            .collect();
        assert!(
            !seen.is_empty() && seen.is_subset(&task_ids),
            "{seen:?} vs {task_ids:?}"
        );
        let names: BTreeSet<String> = tasks(&t, &id)
            .await
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(
            names,
            BTreeSet::from(["third-0".into(), "third-0-a2".into(), "third-0-a3".into()])
        );

        let id = failing["id"].as_str().unwrap().to_owned();
        let failed = wait_job(&t, &id, "failed", Duration::from_secs(120)).await;
        assert_eq!(failed["failed_indices"], json!([0, 1]), "{failed}");
        assert_eq!(tasks(&t, &id).await.len(), 4, "two attempts of each index");
        delete_job(&t, &id).await;
        delete_job(&t, retried["id"].as_str().unwrap()).await;
    })
    .await
}

#[tokio::test]
async fn cancel_stops_running_tasks_and_starts_no_more() {
    limit(secs(120), async {
        let platform = Platform::get().await;
        let t = platform.new_tenant().await;
        let mut spec = template(platform, &["sleep", "600"]);
        spec["stop_timeout_s"] = json!(1);
        let created = create_job(
            &t,
            &json!({"template": spec, "count": 20, "parallelism": 2}),
        )
        .await;
        let id = created["id"].as_str().unwrap().to_owned();
        eventually("two tasks running", Duration::from_secs(60), || async {
            let running = tasks(&t, &id)
                .await
                .iter()
                .filter(|c| c["state"] == "running")
                .count();
            (running == 2).then_some(())
        })
        .await;
        let reply = t
            .call(Method::POST, &format!("/v1/jobs/{id}/cancel"), None)
            .await;
        assert_eq!(reply.status, 202, "{reply:?}");
        assert_eq!(reply.json()["state"], "cancelled");
        assert_eq!(reply.json()["tasks"]["cancelled"], 20);
        let stopped = eventually(
            "the running tasks stopped",
            Duration::from_secs(60),
            || async {
                let all = tasks(&t, &id).await;
                all.iter().all(|c| !unfinished(c)).then_some(all)
            },
        )
        .await;
        assert_eq!(
            stopped.len(),
            2,
            "nothing was queued or started besides them"
        );
        // Several scheduler ticks later, still nothing new.
        tokio::time::sleep(Duration::from_secs_f64(
            platform.timers.scheduler_tick_s * 10.0,
        ))
        .await;
        assert_eq!(tasks(&t, &id).await.len(), 2);
        assert_eq!(job(&t, &id).await["state"], "cancelled");
        delete_job(&t, &id).await;
    })
    .await
}

#[tokio::test]
async fn a_job_past_its_timeout_fails_deadline_exceeded_and_stops_its_tasks() {
    limit(secs(120), async {
        let platform = Platform::get().await;
        let t = platform.new_tenant().await;
        let mut spec = template(platform, &["sleep", "600"]);
        spec["stop_timeout_s"] = json!(1);
        let created = create_job(
            &t,
            &json!({"template": spec, "count": 4, "parallelism": 2, "timeout_s": 2}),
        )
        .await;
        let id = created["id"].as_str().unwrap().to_owned();
        assert_stopped_for(&t, &id, "DeadlineExceeded").await;
        let bad = t
            .call(
                Method::POST,
                "/v1/jobs",
                Some(
                    &json!({"template": template(platform, &["true"]), "count": 1, "timeout_s": 0}),
                ),
            )
            .await;
        assert_eq!(bad.status, 400, "{bad:?}");
        assert_eq!(bad.problem()["field"], "timeout_s");
        delete_job(&t, &id).await;
    })
    .await
}

#[tokio::test]
async fn a_job_whose_cost_reaches_max_cost_fails_budget_exceeded_and_stops_its_tasks() {
    limit(secs(120), async {
        let platform = Platform::get().await;
        let t = platform.new_tenant().await;
        let mut spec = template(platform, &["sleep", "600"]);
        spec["stop_timeout_s"] = json!(1);
        // Two tasks of 0.1 vCPU and 64 MiB cost about two micro-units a
        // second together at the default rates: this budget lasts seconds.
        let max_cost = 6;
        let created = create_job(
            &t,
            &json!({"template": spec, "count": 4, "parallelism": 2, "max_cost": max_cost}),
        )
        .await;
        assert_eq!(created["max_cost"], max_cost);
        let id = created["id"].as_str().unwrap().to_owned();
        // The control: a job with a budget far above what it spends.
        let control = create_job(
            &t,
            &json!({"template": template(platform, &["true"]), "count": 2, "max_cost": 1_000_000}),
        )
        .await;
        let control_id = control["id"].as_str().unwrap().to_owned();

        assert_stopped_for(&t, &id, "BudgetExceeded").await;
        // Spent, and the bill stopped there: at most a checkpoint interval,
        // the stop's grace and a second of rounding past it, for each task.
        let done = job(&t, &id).await;
        let cost = done["usage"]["cost"].as_i64().unwrap();
        let billed = done["usage"]["billed_seconds"].as_i64().unwrap();
        assert!(
            cost >= max_cost,
            "stopped before its budget was spent: {done}"
        );
        let per_task_second = cost as f64 / billed as f64;
        let overshoot = 2.0 * (platform.timers.checkpoint_interval_s + 1.0 + 1.0) * per_task_second;
        assert!(
            (cost - max_cost) as f64 <= overshoot.ceil(),
            "cost {cost} for a max_cost of {max_cost}: {done}"
        );
        let control = wait_job(&t, &control_id, "succeeded", Duration::from_secs(60)).await;
        assert!(control["reason"].is_null(), "{control}");

        let bad = t
            .call(
                Method::POST,
                "/v1/jobs",
                Some(
                    &json!({"template": template(platform, &["true"]), "count": 1, "max_cost": 0}),
                ),
            )
            .await;
        assert_eq!(bad.status, 400, "{bad:?}");
        assert_eq!(bad.problem()["field"], "max_cost");
        delete_job(&t, &id).await;
        delete_job(&t, &control_id).await;
    })
    .await
}
