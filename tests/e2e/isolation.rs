//! What a container can see and use: cgroup limits, OOM kills, its network
//! namespace, its process sandbox, other tenants, and secrets.

use crate::tenant;
use reqwest::{Method, StatusCode};
use serde_json::json;
use skiff_e2e::{id_of, unique};
use skiff_e2e::{limit, secs};

/// Prints `quota=`, `period=` and `memory=` lines from the container's own
/// cgroup on either layout: v2 (its cgroup namespace's root, with
/// `cgroup.controllers`, `cpu.max` = "QUOTA PERIOD", `memory.max`) or v1
/// (one directory per controller).
const PRINT_CGROUP_LIMITS: &str = "cg=/sys/fs/cgroup; \
    if [ -f $cg/cgroup.controllers ]; then \
      read quota period <$cg/cpu.max; echo quota=$quota; echo period=$period; \
      echo memory=$(cat $cg/memory.max); \
    else \
      echo quota=$(cat $cg/cpu/cpu.cfs_quota_us); \
      echo period=$(cat $cg/cpu/cpu.cfs_period_us); \
      echo memory=$(cat $cg/memory/memory.limit_in_bytes); \
    fi";

/// Prints `cgroupfs=writable` or `cgroupfs=read-only`: whether a cgroup can
/// be made in the container's own (v2) or memory (v1) cgroup. mkdir, not a
/// file: cgroupfs refuses new files even when writable.
const PROBE_CGROUPFS_WRITABLE: &str = "cg=/sys/fs/cgroup; \
    [ -f $cg/cgroup.controllers ] || cg=$cg/memory; \
    if mkdir $cg/probe 2>/dev/null; \
    then rmdir $cg/probe; echo cgroupfs=writable; else echo cgroupfs=read-only; fi";

#[tokio::test]
async fn cgroup_cpu_and_memory_limits_are_applied() {
    limit(secs(60), async {
        let t = tenant().await;
        let mut spec = t.platform.sh(PRINT_CGROUP_LIMITS);
        spec["cpu"] = json!(0.5);
        spec["memory_mib"] = json!(256);
        let id = t.create_id(&spec).await;
        t.wait_exited_in(&id, "succeeded").await;
        let logs = t.logs(&id).await;
        let lines: Vec<&str> = logs.lines().collect();
        for expected in ["quota=50000", "period=100000", "memory=268435456"] {
            assert!(
                lines.contains(&expected),
                "{expected} in the container's own cgroup: {logs:?}\n{}",
                t.diag(&id).await
            );
        }
    })
    .await
}

#[tokio::test]
async fn memory_hog_is_oom_killed() {
    limit(secs(90), async {
        let t = tenant().await;
        let mut spec = t.platform.sh("x=a; while true; do x=\"$x$x\"; done");
        spec["memory_mib"] = json!(64);
        let id = t.create_id(&spec).await;
        let done = t.wait_exited_in(&id, "failed").await;
        assert_eq!(done["reason"], "OOMKilled", "{}", t.diag(&id).await);
    })
    .await
}

/// Devices every new network namespace gets when their kernel modules are
/// loaded: not a way out, so not a failure.
const FALLBACK_TUNNELS: &[&str] = &[
    "sit0", "tunl0", "ip6tnl0", "ip6gre0", "gre0", "gretap0", "erspan0", "ip_vti0", "ip6_vti0",
];

#[tokio::test]
async fn network_namespace_has_only_loopback() {
    limit(secs(60), async {
        let t = tenant().await;
        // The API listens on the host's loopback: a container must not reach
        // it. The control: wget fetches from a server on the container's own
        // loopback. (busybox 1.35's wget crashes parsing `-T`: `timeout`
        // bounds it instead.)
        let script = format!(
            "cat /proc/net/dev; \
             mkdir -p /tmp/www && echo own-loopback-ok > /tmp/www/index.html && \
             httpd -p 127.0.0.1:8080 -h /tmp/www && \
             timeout 3 wget -q -O- http://127.0.0.1:8080/index.html; \
             if timeout 3 wget -q -O /dev/null http://127.0.0.1:{}/healthz 2>&1; \
             then echo host-api=reached; else echo host-api=unreachable; fi",
            t.platform.api_port
        );
        let mut spec = t.platform.sh(&script);
        spec["network"] = json!("none");
        let id = t.create_id(&spec).await;
        t.wait_exited_in(&id, "succeeded").await;
        let logs = t.logs(&id).await;
        let interfaces: Vec<&str> = logs
            .lines()
            .filter_map(|line| line.split_once(':'))
            // /proc/net/dev's rows: a name, then counters.
            .filter(|(_, counters)| {
                counters
                    .trim_start()
                    .starts_with(|c: char| c.is_ascii_digit())
            })
            .map(|(name, _)| name.trim())
            .filter(|name| !name.contains('=') && !name.is_empty())
            .collect();
        assert!(interfaces.contains(&"lo"), "loopback present: {logs}");
        let others: Vec<&&str> = interfaces
            .iter()
            .filter(|name| **name != "lo" && !FALLBACK_TUNNELS.contains(name))
            .collect();
        assert!(
            others.is_empty(),
            "interfaces besides lo: {others:?}\n{logs}"
        );
        assert!(logs.contains("own-loopback-ok"), "the control: {logs}");
        assert!(
            logs.contains("host-api=unreachable") && logs.contains("Connection refused"),
            "{logs}\n{}",
            t.diag(&id).await
        );
    })
    .await
}

#[tokio::test]
async fn process_runs_sandboxed() {
    limit(secs(60), async {
        let t = tenant().await;
        let id = t
            .create_id(&t.platform.sh(&format!(
                "echo pid=$$; echo hostname=$(hostname); \
                 grep -E '^(NoNewPrivs|Seccomp|CapEff|CapBnd):' /proc/self/status; \
                 {PROBE_CGROUPFS_WRITABLE}"
            )))
            .await;
        t.wait_exited_in(&id, "succeeded").await;
        let logs = t.logs(&id).await;
        let value = |key: &str| {
            logs.lines()
                .find_map(|line| {
                    let (k, v) = line.split_once(['=', ':'])?;
                    (k == key).then(|| v.trim().to_string())
                })
                .unwrap_or_else(|| panic!("no {key} in {logs:?}"))
        };
        assert_eq!(value("pid"), "1", "own PID namespace: {logs}");
        let host_name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        assert_ne!(value("hostname"), host_name.trim(), "own hostname: {logs}");
        assert_eq!(value("NoNewPrivs"), "1", "{logs}");
        assert_eq!(value("Seccomp"), "2", "a seccomp filter: {logs}");
        // Docker's default set (CHOWN, DAC_OVERRIDE, FOWNER, FSETID, KILL,
        // SETGID, SETUID, SETPCAP, NET_BIND_SERVICE, SYS_CHROOT, MKNOD,
        // AUDIT_WRITE, SETFCAP) without NET_RAW (bit 13).
        let docker_minus_net_raw = 0xa804_05fb_u64;
        for key in ["CapEff", "CapBnd"] {
            let caps = u64::from_str_radix(&value(key), 16).expect("hex capabilities");
            assert_eq!(caps, docker_minus_net_raw, "{key} {caps:#x}: {logs}");
        }
        assert_eq!(value("cgroupfs"), "read-only", "{logs}");
    })
    .await
}

#[tokio::test]
async fn a_container_cannot_create_a_user_namespace() {
    limit(secs(60), async {
        // The control: the kernel lets this host's processes create one, so
        // a refusal inside the container is skiff's seccomp filter.
        let host = std::process::Command::new("unshare")
            .args(["-U", "-r", "true"])
            .status()
            .expect("unshare(1) on the host");
        assert!(
            host.success(),
            "the host cannot create a user namespace either"
        );
        let t = tenant().await;
        let id = t
            .create_id(&t.platform.sh("unshare -U -r id 2>&1; echo userns=$?; \
                 echo forked=$(echo yes); unshare -n true 2>&1; echo netns=$?"))
            .await;
        t.wait_exited_in(&id, "succeeded").await;
        let logs = t.logs(&id).await;
        assert!(logs.contains("Operation not permitted"), "{logs}");
        assert!(logs.contains("userns=1"), "{logs}");
        assert!(
            !logs.contains("uid=0(root) gid=0(root) groups=0(root)\nuserns=0"),
            "{logs}"
        );
        // Forking (clone without CLONE_NEWUSER) still works.
        assert!(logs.contains("forked=yes"), "{logs}");
        // Other namespaces stay refused for lack of CAP_SYS_ADMIN.
        assert!(logs.contains("netns=1"), "{logs}");
    })
    .await
}

#[tokio::test]
async fn escape_probes_are_refused_with_their_errors() {
    limit(secs(60), async {
        let t = tenant().await;
        // Each probe prints its output and `<name>=<exit code>`.
        let id = t
            .create_id(&t.platform.sh(
                "mkdir -p /tmp/m; mount -t tmpfs none /tmp/m 2>&1; echo mount=$?; \
                 date -s '2000-01-01 00:00:00' 2>&1; echo clock=$?; echo year=$(date +%Y); \
                 echo h 2>&1 > /proc/sysrq-trigger; echo sysrq=$?; \
                 [ \"$(ls /proc/1/root)\" = \"$(ls /)\" ]; echo same_root=$?; \
                 echo fine; echo control=$?",
            ))
            .await;
        t.wait_exited_in(&id, "succeeded").await;
        let logs = t.logs(&id).await;
        let code = |name: &str| -> i32 {
            logs.lines()
                .find_map(|l| l.strip_prefix(&format!("{name}=")))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or_else(|| panic!("no {name}= in {logs:?}"))
        };
        // The shell ran its commands (the control).
        assert_eq!(code("control"), 0, "{logs}");
        // mount(2): no CAP_SYS_ADMIN.
        assert_ne!(code("mount"), 0, "{logs}");
        assert!(
            logs.contains("permission denied") || logs.contains("Operation not permitted"),
            "{logs}"
        );
        // settimeofday(2): no CAP_SYS_TIME (busybox's date says so but
        // exits 0); the clock did not move.
        assert!(
            logs.contains("can't set date: Operation not permitted"),
            "{logs}"
        );
        assert!(code("year") >= 2026, "{logs}");
        // /proc/sysrq-trigger is masked and read-only.
        assert_ne!(code("sysrq"), 0, "{logs}");
        // /proc/1/root is the container's own root (PID 1 is its process).
        assert_eq!(code("same_root"), 0, "{logs}");
    })
    .await
}

#[tokio::test]
async fn tenants_see_only_their_own_containers() {
    limit(secs(90), async {
        let a = tenant().await;
        let b = a.another().await;
        let name = unique("shared-name");
        let mut spec = a.platform.spec(&["sleep", "300"]);
        spec["name"] = json!(name);
        spec["stop_timeout_s"] = json!(1);
        let a_id = a.create_id(&spec).await;
        a.wait(&a_id, "running", 60).await;

        let path = format!("/v1/containers/{a_id}");
        let attempts = [
            (Method::GET, path.clone()),
            (Method::DELETE, path.clone()),
            (Method::POST, format!("{path}/stop")),
            (Method::POST, format!("{path}/start")),
            (Method::POST, format!("{path}/restart")),
            (Method::GET, format!("{path}/logs")),
            (Method::GET, format!("{path}/events")),
            (Method::GET, format!("{path}/wait?for=exited&timeout_s=1")),
        ];
        for (method, route) in attempts {
            let reply = b.call(method.clone(), &route, None).await;
            assert_eq!(
                reply.status,
                StatusCode::NOT_FOUND,
                "tenant B {method} {route}: {reply:?}"
            );
            reply.problem();
        }

        // The same name is free in another tenant.
        let b_id = b.create_id(&spec).await;
        let ids = |list: serde_json::Value| -> Vec<String> {
            list["items"]
                .as_array()
                .expect("items")
                .iter()
                .map(id_of)
                .collect()
        };
        assert_eq!(ids(a.list(&[]).await), vec![a_id.clone()]);
        assert_eq!(ids(b.list(&[]).await), vec![b_id.clone()]);

        // B's delete and stop did nothing to A's container.
        let still = a.get(&a_id).await;
        assert_eq!(still["state"], "running", "{}", a.diag(&a_id).await);
        assert_eq!(still["restart_count"], 0, "{still}");

        // No token, or a wrong one: 401 problem.
        let anonymous = a
            .client
            .get(format!("{}{path}", a.platform.api_url))
            .send()
            .await
            .expect("request");
        assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
        let wrong = a
            .client
            .get(format!("{}/v1/containers", a.platform.api_url))
            .bearer_auth("not-a-token")
            .send()
            .await
            .expect("request");
        assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
        let content_type = wrong.headers()[reqwest::header::CONTENT_TYPE]
            .to_str()
            .unwrap_or("");
        assert!(
            content_type.starts_with("application/problem+json"),
            "{content_type}"
        );

        a.delete(&a_id).await;
        b.delete(&b_id).await;
    })
    .await
}

#[tokio::test]
async fn secure_env_values_are_never_returned_or_logged() {
    limit(secs(90), async {
        let t = tenant().await;
        let secret = format!("s3cr3t-{}", uuid::Uuid::new_v4().simple());
        // The container proves it got the value without printing it.
        let mut spec = t.platform.sh(
            "case \"$SKIFF_SECRET\" in s3cr3t-*) echo secret-prefix-ok;; esac; \
         echo secret-length=${#SKIFF_SECRET}; echo plain=$PLAIN",
        );
        spec["name"] = json!(unique("secret"));
        spec["env"] = json!({ "PLAIN": "visible" });
        spec["secure_env"] = json!({ "SKIFF_SECRET": secret });
        spec["labels"] = json!({ "kind": "secret" });

        let mut bodies = Vec::new();
        let created = t.create(&spec).await;
        assert_eq!(created.status, StatusCode::CREATED, "{created:?}");
        let id = id_of(&created.json());
        bodies.push(("create", created.text));

        let done = t.wait_exited_in(&id, "succeeded").await;
        assert_eq!(done["env"]["PLAIN"], "visible", "{done}");
        bodies.push(("wait", done.to_string()));
        let logs = t.logs(&id).await;
        assert!(
            logs.contains("secret-prefix-ok"),
            "secret delivered: {logs:?}"
        );
        assert!(
            logs.contains(&format!("secret-length={}", secret.len())),
            "{logs:?}"
        );
        assert!(logs.contains("plain=visible"), "{logs:?}");
        bodies.push(("logs", logs));

        let container = format!("/v1/containers/{id}");
        for route in [
            container.clone(),
            format!("{container}/events"),
            "/v1/containers".to_string(),
            "/v1/containers?label=kind=secret".to_string(),
            format!("{container}/wait?for=exited&timeout_s=1"),
        ] {
            let reply = t.call(Method::GET, &route, None).await;
            assert_eq!(reply.status, StatusCode::OK, "{route}: {reply:?}");
            bodies.push(("GET", reply.text));
        }
        let started = t
            .call(Method::POST, &format!("{container}/start"), None)
            .await;
        assert_eq!(started.status, StatusCode::ACCEPTED, "{started:?}");
        bodies.push(("start", started.text));
        t.poll_until(&id, 60, "the second run to finish", |c| {
            c["state"] == "succeeded" && c["finished_at"] != done["finished_at"]
        })
        .await;

        for (route, body) in &bodies {
            assert!(
                !body.contains(&secret),
                "secret value in the {route} response: {body}"
            );
        }
        assert!(
            !t.platform.service_logs().contains(&secret),
            "secret value in the api or worker log under {}",
            t.platform.run_dir.display()
        );
    })
    .await
}

#[tokio::test]
async fn a_read_only_rootfs_refuses_writes_while_tmp_takes_them() {
    limit(secs(60), async {
        let t = tenant().await;
        let probe =
            "if touch /probe 2>/dev/null; then echo root=writable; else echo root=read-only; fi; \
                     if touch /tmp/probe; then echo tmp=writable; fi";
        let mut read_only = t.platform.sh(probe);
        read_only["read_only_rootfs"] = json!(true);
        let ro = t.create_id(&read_only).await;
        // The control: the same probe in a default container.
        let rw = t.create_id(&t.platform.sh(probe)).await;
        let ro_view = t.wait_exited_in(&ro, "succeeded").await;
        assert_eq!(ro_view["read_only_rootfs"], true, "{ro_view}");
        let rw_view = t.wait_exited_in(&rw, "succeeded").await;
        assert_eq!(rw_view["read_only_rootfs"], false, "{rw_view}");
        let (ro_logs, rw_logs) = (t.logs(&ro).await, t.logs(&rw).await);
        assert_eq!(
            ro_logs,
            "root=read-only\ntmp=writable\n",
            "{}",
            t.diag(&ro).await
        );
        assert_eq!(
            rw_logs,
            "root=writable\ntmp=writable\n",
            "{}",
            t.diag(&rw).await
        );
    })
    .await
}
