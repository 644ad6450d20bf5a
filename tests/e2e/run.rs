//! A container's life from create to exit: states, exit codes, reasons,
//! logs, events and timings.

use crate::tenant;
use serde_json::{json, Value};
use skiff_e2e::{id_of, push_user_image, registry_digest, unique};
use skiff_e2e::{limit, secs};
use std::time::Duration;

/// The kinds of a container's events, in order.
fn kinds(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["kind"].as_str().unwrap_or("?").to_string())
        .collect()
}

#[tokio::test]
async fn echo_succeeds_with_output_events_and_timings() {
    limit(secs(60), async {
        let t = tenant().await;
        let name = unique("echo");
        let mut spec = t.platform.sh("echo \"$GREETING\"; echo to-stderr >&2");
        spec["name"] = json!(name);
        spec["env"] = json!({ "GREETING": "hello-from-skiff" });
        spec["labels"] = json!({ "suite": "e2e" });
        let created = t.create_ok(&spec).await;
        let id = id_of(&created);

        // The stored object echoes the request, with defaults filled in.
        assert_eq!(created["name"], name.as_str(), "{created}");
        assert_eq!(created["image"], t.platform.image(), "{created}");
        assert_eq!(created["cpu"], 0.5, "{created}");
        assert_eq!(created["memory_mib"], 128, "{created}");
        assert_eq!(created["restart_policy"], "never", "{created}");
        assert_eq!(created["stop_timeout_s"], 10, "{created}");
        assert_eq!(created["restart_count"], 0, "{created}");
        assert_eq!(created["labels"], json!({ "suite": "e2e" }), "{created}");
        assert_eq!(created["env"]["GREETING"], "hello-from-skiff", "{created}");
        assert!(created["created_at"].is_string(), "{created}");
        assert!(
            matches!(created["state"].as_str(), Some("pending" | "scheduled")),
            "a new container is pending or scheduled: {created}"
        );

        let done = t.wait_exited_in(&id, "succeeded").await;
        let diag = t.diag(&id).await;
        assert_eq!(done["exit_code"], 0, "{diag}");
        assert_eq!(done["reason"], "Completed", "{diag}");
        assert_eq!(done["restart_count"], 0, "{diag}");
        assert!(
            t.platform
                .hosts
                .iter()
                .any(|h| done["host_id"] == h.id.as_str()),
            "host_id names a host of the pool: {diag}"
        );
        for key in ["created_at", "started_at", "finished_at"] {
            assert!(done[key].is_string(), "{key} missing: {diag}");
        }
        for key in ["queued_ms", "pull_ms", "create_ms", "start_ms"] {
            assert!(
                done["timings"][key].is_u64(),
                "timings.{key} missing: {diag}"
            );
        }
        assert_eq!(
            done["image_digest"].as_str(),
            Some(registry_digest(t.platform.image()).await.as_str()),
            "image_digest is the registry's digest: {diag}"
        );

        let logs = t.logs(&id).await;
        assert!(
            logs.contains("hello-from-skiff\n"),
            "stdout in logs: {logs:?}\n{diag}"
        );
        assert!(
            logs.contains("to-stderr\n"),
            "stderr in logs: {logs:?}\n{diag}"
        );

        let events = t.events(&id).await;
        for event in &events {
            assert!(
                event["kind"].is_string() && event["at"].is_string(),
                "event shape {event}"
            );
            assert!(event.get("message").is_some(), "event shape {event}");
        }
        let kinds = kinds(&events);
        let position = |kind: &str| {
            kinds
                .iter()
                .position(|k| k == kind)
                .unwrap_or_else(|| panic!("no {kind} event in {kinds:?}\n{diag}"))
        };
        // A start of an image the host already has reports no `pulling`
        // of its own; its Pulling event still comes first, with the next report.
        assert!(
            position("Pulling") < position("Pulled")
                && position("Pulled") < position("Started")
                && position("Started") < position("Exited"),
            "events in order Pulling, Pulled, Started, Exited: {kinds:?}"
        );
    })
    .await
}

#[tokio::test]
async fn a_start_of_an_image_its_host_has_goes_through_no_pulling_and_keeps_the_event() {
    limit(secs(90), async {
        let t = tenant().await;
        // The first start on a host resolves the image there ...
        let first = t.create_id(&t.platform.spec(&["true"])).await;
        let done = t.wait_exited_in(&first, "succeeded").await;
        let host = t
            .platform
            .hosts
            .iter()
            .find(|h| done["host_id"] == h.id.as_str())
            .expect("the first container's host");
        // ... so a second one there (no worker restarts meanwhile: they
        // need an exclusive tenant) reports no `pulling` state of its own.
        let mut spec = t.platform.spec(&["true"]);
        spec["placement"] = json!({ "host_labels": { skiff_e2e::HOST_LABEL: host.name } });
        let second = t.create_id(&spec).await;
        t.wait_exited_in(&second, "succeeded").await;
        let states = t
            .call(
                reqwest::Method::GET,
                &format!("/v1/events?container={second}&type=state&limit=100"),
                None,
            )
            .await
            .json();
        let states: Vec<&str> = states["items"]
            .as_array()
            .expect("a page of events")
            .iter()
            .filter_map(|e| e["state"].as_str())
            .collect();
        assert!(
            states.contains(&"starting") && states.contains(&"succeeded"),
            "its states: {states:?}"
        );
        assert!(
            !states.contains(&"pulling"),
            "no pulling of a cached image: {states:?}"
        );
        // Its Pulling event still comes first, carried by the next report.
        let kinds = kinds(&t.events(&second).await);
        let at = |kind: &str| kinds.iter().position(|k| k == kind);
        assert!(
            at("Pulling").is_some() && at("Pulling") < at("Pulled") && at("Pulled") < at("Started"),
            "events in order Pulling, Pulled, Started: {kinds:?}"
        );
    })
    .await
}

#[tokio::test]
async fn nonzero_exit_fails_with_exit_code_and_reason() {
    limit(secs(60), async {
        let t = tenant().await;
        let id = t
            .create_id(&t.platform.sh("echo about-to-fail; exit 3"))
            .await;
        let done = t.wait_exited_in(&id, "failed").await;
        let diag = t.diag(&id).await;
        assert_eq!(done["exit_code"], 3, "{diag}");
        assert_eq!(done["reason"], "Error", "{diag}");
        assert_eq!(done["restart_count"], 0, "restart_policy never: {diag}");
        assert!(t.logs(&id).await.contains("about-to-fail"), "{diag}");
    })
    .await
}

#[tokio::test]
async fn missing_image_fails_with_image_pull_failed() {
    limit(secs(60), async {
        let t = tenant().await;
        let image = format!("{}/skiff/nope:1", t.platform.registry());
        let mut spec = t.platform.spec(&["echo", "never"]);
        spec["image"] = json!(image);
        let id = t.create_id(&spec).await;
        let done = t.wait_exited_in(&id, "failed").await;
        let diag = t.diag(&id).await;
        assert_eq!(done["reason"], "ImagePullFailed", "{diag}");
        let message = done["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("skiff/nope"),
            "message names the image: {diag}"
        );
        assert!(done["image_digest"].is_null(), "{diag}");
        assert!(done["started_at"].is_null(), "never started: {diag}");
    })
    .await
}

#[tokio::test]
async fn an_image_user_name_runs_as_that_user_and_an_unknown_one_fails_to_start() {
    limit(secs(120), async {
        let t = tenant().await;
        // Two layers each: the names are looked up in the lower one's
        // /etc/passwd (root and nobody, 65534).
        let (nobody, ghost) = tokio::join!(
            push_user_image(t.platform, "skiff/e2e-user-nobody:1", "nobody"),
            push_user_image(t.platform, "skiff/e2e-user-ghost:1", "ghost"),
        );
        let mut spec = t
            .platform
            .sh("echo uid=$(id -u) gid=$(id -g) groups=$(id -G)");
        spec["image"] = json!(nobody);
        let id = t.create_id(&spec).await;
        t.wait_exited_in(&id, "succeeded").await;
        let diag = t.diag(&id).await;
        assert_eq!(
            t.logs(&id).await.trim(),
            "uid=65534 gid=65534 groups=65534",
            "{diag}"
        );

        spec["image"] = json!(ghost);
        let id = t.create_id(&spec).await;
        let done = t.wait_exited_in(&id, "failed").await;
        let diag = t.diag(&id).await;
        assert_eq!(done["reason"], "StartFailed", "{diag}");
        let message = done["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("no user \"ghost\"") && message.contains(&ghost),
            "the message names the user and the image: {diag}"
        );
        assert!(done["started_at"].is_null(), "never started: {diag}");
    })
    .await
}

#[tokio::test]
async fn logs_are_kept_after_exit_whole_and_tailed() {
    limit(secs(90), async {
        let t = tenant().await;
        // About 1.9 MB of output: no small size cliff in capture or serving.
        let pad = "x".repeat(80);
        let script = format!(
            "echo first-line; echo on-stderr >&2; i=0; \
         while [ $i -lt 20000 ]; do echo \"line-$i {pad}\"; i=$((i+1)); done; \
         echo last-line"
        );
        let id = t.create_id(&t.platform.sh(&script)).await;
        t.wait_exited_in(&id, "succeeded").await;

        let logs = t.logs(&id).await;
        let lines: Vec<&str> = logs.lines().collect();
        let summary = format!(
            "{} bytes, {} lines, first {:?}, last {:?}",
            logs.len(),
            lines.len(),
            lines.first(),
            lines.last()
        );
        // stdout and stderr are two pipes copied into one file by the shim, so
        // their relative order is not defined; stdout's own order is.
        let stdout_first = lines.iter().find(|l| **l != "on-stderr");
        assert_eq!(stdout_first, Some(&"first-line"), "{summary}");
        assert!(logs.contains("on-stderr\n"), "{summary}");
        assert_eq!(
            lines.iter().filter(|l| l.starts_with("line-")).count(),
            20000,
            "{summary}"
        );
        assert!(logs.contains(&format!("\nline-19999 {pad}\n")), "{summary}");
        assert_eq!(lines.last(), Some(&"last-line"), "{summary}");

        let tail1 = t.logs_query(&id, &[("tail", "1")]).await;
        assert_eq!(tail1.trim_end(), "last-line");
        let tail3 = t.logs_query(&id, &[("tail", "3")]).await;
        assert_eq!(
            tail3.lines().collect::<Vec<_>>(),
            vec![
                format!("line-19998 {pad}").as_str(),
                format!("line-19999 {pad}").as_str(),
                "last-line"
            ]
        );
    })
    .await
}

#[tokio::test]
async fn logs_follow_streams_until_the_container_exits() {
    limit(secs(90), async {
        let t = tenant().await;
        let id = t
            .create_id(
                &t.platform
                    .sh("for i in 1 2 3 4 5; do echo follow-$i; sleep 1; done; echo follow-end"),
            )
            .await;
        t.wait(&id, "running", 60).await;
        let response = t
            .client
            .get(format!("{}/v1/containers/{id}/logs", t.platform.api_url))
            .query(&[("follow", "true")])
            .bearer_auth(&t.token)
            .timeout(Duration::from_secs(60))
            .send()
            .await
            .expect("logs follow request");
        assert_eq!(response.status(), 200, "{}", t.diag(&id).await);
        // Ends by itself when the container exits (else the timeout fails it).
        let text = response
            .text()
            .await
            .unwrap_or_else(|e| panic!("follow stream: {e}"));
        let expected = "follow-1\nfollow-2\nfollow-3\nfollow-4\nfollow-5\nfollow-end\n";
        assert_eq!(text, expected, "{}", t.diag(&id).await);
        let done = t.wait_exited_in(&id, "succeeded").await;
        assert_eq!(done["exit_code"], 0);
    })
    .await
}

#[tokio::test]
async fn a_30_mib_log_keeps_its_newest_bytes_under_the_cap_and_says_what_it_dropped() {
    limit(secs(180), async {
        let platform = skiff_e2e::Platform::get().await;
        let t = platform.new_tenant().await;
        // seq 1 N: about 30 MiB of numbered lines, whose sum is known.
        let n: u64 = 4_000_000;
        let total: u64 = (1..=n).map(|i| i.to_string().len() as u64 + 1).sum();
        let cap = skiff_e2e::LOG_MAX_BYTES;
        assert!(
            total > 2 * cap,
            "the output ({total}) must pass the cap ({cap})"
        );
        let id = t
            .create_id(&platform.spec(&["seq", "1", &n.to_string()]))
            .await;
        // The control: a small log is whole.
        let small = t.create_id(&platform.spec(&["echo", "small"])).await;
        let done = t.wait_exited_in(&id, "succeeded").await;
        assert_eq!(done["logs_truncated"], true, "{done}");
        let small_done = t.wait_exited_in(&small, "succeeded").await;
        assert_eq!(small_done["logs_truncated"], false, "{small_done}");
        assert_eq!(t.logs(&small).await, "small\n");
        assert_eq!(t.count_events(&id, "LogTruncated").await, 1);

        let log = t.logs(&id).await;
        let (first, kept) = log.split_once('\n').expect("a marker line");
        let dropped: u64 = first
            .strip_prefix("[skiff: ")
            .and_then(|r| r.strip_suffix(" bytes of older output dropped]"))
            .and_then(|d| d.parse().ok())
            .unwrap_or_else(|| panic!("not a marker: {first:?}"));
        let kept_len = kept.len() as u64;
        assert!(
            kept_len >= cap && kept_len <= cap + cap / 4,
            "kept {kept_len} bytes for a cap of {cap}"
        );
        assert_eq!(
            dropped + kept_len,
            total,
            "every byte kept or counted as dropped"
        );
        // The newest bytes, in order: the last lines count up to n.
        let lines: Vec<&str> = kept.lines().skip(1).collect(); // the first may be cut
        assert_eq!(lines.last().copied(), Some(n.to_string().as_str()));
        let numbers: Vec<u64> = lines.iter().map(|l| l.parse().unwrap()).collect();
        assert!(
            numbers.windows(2).all(|w| w[1] == w[0] + 1),
            "the kept lines are consecutive"
        );
        t.delete(&id).await;
    })
    .await
}
