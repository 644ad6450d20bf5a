//! Escape probes run inside a container with `skiff-probe` (the sample
//! image's /usr/local/bin/skiff-probe, deploy/local/probe.c), each beside
//! its control: ptrace of another user's process, raw sockets, loading a
//! kernel module (seccomp answers EPERM where this kernel would say ENOSYS)
//! and user namespaces are refused while the same calls go through on the
//! host; a fork bomb stops at pids.max while the API keeps answering; /tmp
//! is a tmpfs charged to the container's memory, never the host's disk.

use reqwest::StatusCode;
use serde_json::json;
use skiff_e2e::{limit, secs, PIDS_LIMIT};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// Runs the probe on the host (as the test runs: root), its one-line answer.
fn on_host(probe: &str) -> String {
    let path = std::env::var("SKIFF_TEST_PROBE")
        .expect("SKIFF_TEST_PROBE: run these tests with deploy/local/test.sh");
    let out = std::process::Command::new(&path)
        .arg(probe)
        .output()
        .unwrap_or_else(|e| panic!("{path} {probe}: {e}"));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[tokio::test]
async fn ptrace_raw_sockets_modules_and_user_namespaces_are_refused_where_the_host_allows_them() {
    limit(secs(60), async {
        // Controls: on the host these get past the sandbox's checks (the
        // module calls reach the kernel, which answers for itself: ENOSYS
        // without module support, or a complaint about the empty image).
        for probe in ["ptrace-own", "ptrace-other-uid", "raw-socket", "userns"] {
            assert_eq!(on_host(probe), "ok", "{probe} on the host");
        }
        for probe in ["init-module", "finit-module"] {
            let host = on_host(probe);
            assert!(
                host.starts_with("errno=") && host != "errno=EPERM",
                "{probe} on the host: {host}"
            );
        }

        let t = crate::tenant().await;
        let id = t
            .create_id(&t.platform.sh(
                "for p in ptrace-own ptrace-other-uid raw-socket init-module finit-module userns; \
                 do echo \"$p=$(skiff-probe $p)\"; done",
            ))
            .await;
        t.wait_exited_in(&id, "succeeded").await;
        let logs = t.logs(&id).await;
        let got: BTreeMap<&str, &str> = logs.lines().filter_map(|l| l.split_once('=')).collect();
        let want = BTreeMap::from([
            // The container's own processes stay debuggable (the control).
            ("ptrace-own", "ok"),
            // No CAP_SYS_PTRACE: not another user's process.
            ("ptrace-other-uid", "errno=EPERM"),
            // No CAP_NET_RAW.
            ("raw-socket", "errno=EPERM"),
            // seccomp, before the kernel could say ENOSYS.
            ("init-module", "errno=EPERM"),
            ("finit-module", "errno=EPERM"),
            ("userns", "errno=EPERM"),
        ]);
        assert_eq!(got, want, "{logs}");
    })
    .await
}

/// The container's cgroup directory of one controller on this host (v1:
/// `/sys/fs/cgroup/<controller>/skiff/<ns>/<id>`; v2: one tree).
fn cgroup_dir(controller: &str, namespace: &str, id: &str) -> PathBuf {
    let v1 = PathBuf::from(format!(
        "/sys/fs/cgroup/{controller}/skiff/{namespace}/{id}"
    ));
    if v1.exists() {
        v1
    } else {
        PathBuf::from(format!("/sys/fs/cgroup/skiff/{namespace}/{id}"))
    }
}

fn read_number(path: &std::path::Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The `max` count of pids.events: how often a fork was refused.
fn pids_refused(dir: &std::path::Path) -> Option<u64> {
    std::fs::read_to_string(dir.join("pids.events"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("max "))?
        .trim()
        .parse()
        .ok()
}

#[tokio::test]
async fn a_fork_bomb_stops_at_pids_max_while_the_platform_keeps_answering() {
    limit(secs(120), async {
        let t = crate::tenant().await;
        let mut spec = t.platform.sh("b() { b | b & }; b; sleep 3600");
        spec["memory_mib"] = json!(512);
        spec["stop_timeout_s"] = json!(1);
        let id = t.create_id(&spec).await;
        t.wait(&id, "running", 60).await;
        let host = t.host_of(&id).await;
        let dir = cgroup_dir("pids", &host.namespace, &id);
        let client = reqwest::Client::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let mut peak = 0;
        loop {
            let max = read_number(&dir.join("pids.max"));
            let current = read_number(&dir.join("pids.current")).unwrap_or(0);
            assert_eq!(max, Some(PIDS_LIMIT), "pids.max in {}", dir.display());
            assert!(
                current <= PIDS_LIMIT,
                "pids.current {current} past pids.max"
            );
            peak = peak.max(current);
            let health = client
                .get(format!("{}/healthz", t.platform.api_url))
                .timeout(Duration::from_secs(5))
                .send()
                .await
                .expect("the API answers during the fork bomb");
            assert_eq!(health.status(), StatusCode::OK);
            // Done once the kernel refused forks at the limit.
            if pids_refused(&dir).unwrap_or(0) > 0 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the bomb never reached pids.max ({PIDS_LIMIT}; peak {peak}): {}",
                t.diag(&id).await
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(peak <= PIDS_LIMIT);
        // The platform still controls it: stopped (every process killed).
        t.stop(&id).await;
        t.wait_exited_in(&id, "stopped").await;
        t.delete(&id).await;
    })
    .await
}

#[tokio::test]
async fn tmp_is_a_tmpfs_charged_to_the_containers_memory() {
    limit(secs(90), async {
        let t = crate::tenant().await;
        let mut spec = t.platform.sh(
            "grep ' /tmp ' /proc/mounts; \
             m() { cat /sys/fs/cgroup/memory/memory.usage_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.current; }; \
             before=$(m); dd if=/dev/zero of=/tmp/a bs=1M count=24 2>/dev/null; after=$(m); \
             echo grew_mib=$(( (after - before) / 1048576 )); \
             dd if=/dev/zero of=/tmp/b bs=1M count=200 2>&1 | tail -n 1; echo fill=$?",
        );
        spec["memory_mib"] = json!(64);
        let id = t.create_id(&spec).await;
        let done = t.wait_terminal(&id, Duration::from_secs(60)).await;
        let logs = t.logs(&id).await;
        // A tmpfs as large as the memory limit...
        assert!(
            logs.lines()
                .any(|l| l.starts_with("tmpfs /tmp tmpfs ") && l.contains("size=65536k")),
            "{logs}"
        );
        // ... whose pages count as the container's memory (the control:
        // writing 24 MiB there grew its cgroup's usage by about that much) ...
        let grew: u64 = logs
            .lines()
            .find_map(|l| l.strip_prefix("grew_mib="))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no grew_mib= in {logs:?}"));
        assert!(grew >= 20, "{logs}");
        // ... so filling it stops at the container's limit: the write fails
        // (no space on the 64 MiB tmpfs) or the container is OOM-killed.
        let oom = done["reason"] == "OOMKilled";
        let refused = logs.contains("No space left on device") || logs.contains("fill=137");
        assert!(oom || refused, "{done}\n{logs}");
    })
    .await
}
