//! ContainerdRuntime against a real containerd and registry.
//!
//! Runs only when `SKIFF_TEST_CONTAINERD_SOCKET` (a containerd gRPC socket)
//! and `SKIFF_TEST_IMAGE` (a busybox-like image reachable over plain HTTP on
//! loopback, e.g. `127.0.0.1:5099/busybox:1`) are set (deploy/local/test.sh
//! sets them); without them it fails, saying so. `SKIFF_TEST_NAMESPACE` overrides the containerd namespace
//! (default `skiff-rt-test`; containers in it are removed first, so give it
//! one no one else uses). Every container gets a fresh uuid and is
//! removed at the end. Timings are printed; run with `--nocapture`.

use skiff_core::{CpuMillis, MemoryMib};
use skiff_worker::runtime::containerd::{ContainerdConfig, ContainerdRuntime};
use skiff_worker::runtime::{
    ExitRecord, ImageInfo, NetworkSpec, RunSpec, Runtime, RuntimeError, TaskEvent, TaskStatus,
};
use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

struct Env {
    socket: String,
    image: String,
    namespace: String,
    /// The test registry (`127.0.0.1:<port>`), reached over plain HTTP.
    registry: String,
}

/// The test's containerd and image; a test without them fails (it would
/// prove nothing).
fn env() -> Env {
    let need = |key: &str| {
        std::env::var(key).unwrap_or_else(|_| {
            panic!("{key} is not set: run these tests with deploy/local/test.sh")
        })
    };
    Env {
        socket: need("SKIFF_TEST_CONTAINERD_SOCKET"),
        image: need("SKIFF_TEST_IMAGE"),
        registry: need("SKIFF_TEST_REGISTRY"),
        namespace: std::env::var("SKIFF_TEST_NAMESPACE")
            .unwrap_or_else(|_| "skiff-rt-test".to_owned()),
    }
}

fn run_spec(image_ref: &str, image: &ImageInfo, command: &[&str], memory_mib: u64) -> RunSpec {
    RunSpec {
        id: uuid::Uuid::new_v4().to_string(),
        image_ref: image_ref.to_owned(),
        image: image.clone(),
        command: command.iter().map(|s| s.to_string()).collect(),
        env: BTreeMap::from([("GREETING".to_owned(), "hello".to_owned())]),
        secure_env: skiff_core::SecretEnv(BTreeMap::from([(
            "SECRET_TOKEN".to_owned(),
            "s3cret".to_owned(),
        )])),
        cpu: CpuMillis::parse(0.5).unwrap(),
        memory: MemoryMib::parse(memory_mib).unwrap(),
        hostname: "rt-test".to_owned(),
        network: NetworkSpec::None,
        read_only_rootfs: false,
        volumes: Vec::new(),
        mounts: Vec::new(),
        sandbox: None,
    }
}

/// Reads events until `id`'s main task exits; returns its exit code and
/// whether an OomKilled event for it was seen on the way.
async fn wait_exit(events: &mut mpsc::Receiver<TaskEvent>, id: &str) -> (i32, bool) {
    let mut oom = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let event = tokio::time::timeout(left, events.recv())
            .await
            .unwrap_or_else(|_| panic!("no exit event for {id} within 30s"))
            .expect("event stream closed");
        match event {
            TaskEvent::OomKilled { id: oid } => {
                oom.insert(oid);
            }
            TaskEvent::Exited {
                id: eid, exit_code, ..
            } if eid == id => {
                return (exit_code, oom.contains(id));
            }
            TaskEvent::Exited { .. } => {}
        }
    }
}

/// A runtime's config in `namespace`: the test registry over plain HTTP
/// (the only registry its egress policy names), cgroups under
/// /skiff-rt-test.
fn config(env: &Env, namespace: &str, state_dir: &std::path::Path) -> ContainerdConfig {
    let mut config = ContainerdConfig::new(&env.socket, namespace, state_dir);
    config.cgroup_parent = format!("/skiff-rt-test/{namespace}");
    config.egress.plain_http = vec![env.registry.parse().unwrap()];
    config
}

fn read_log(rt: &ContainerdRuntime, id: &str) -> String {
    std::fs::read_to_string(rt.log_path(id)).unwrap_or_default()
}

/// The log once it holds `last` (the log driver may still be copying the
/// task's last lines when its exit event arrives), or as it is after 10 s.
async fn read_log_through(rt: &ContainerdRuntime, id: &str, last: &str) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let log = read_log(rt, id);
        if log.contains(last) || std::time::Instant::now() >= deadline {
            return log;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

fn exit_record(generation: u64, exit_code: i32, oom_killed: bool) -> ExitRecord {
    ExitRecord {
        generation,
        exit_code,
        started_at_unix_ms: 0,
        finished_at_unix_ms: 1,
        oom_killed,
        liveness_failed: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containerd_runtime_end_to_end() {
    let env = env();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let state_dir = std::env::temp_dir().join(format!("skiff-rt-test-{}", uuid::Uuid::new_v4()));
    let rt = ContainerdRuntime::connect(config(&env, &env.namespace, &state_dir))
        .await
        .expect("connect");
    println!("containerd {}", rt.version().await.unwrap());
    // The namespace is the test's own: clear what a failed earlier run left.
    for stale in rt.list().await.unwrap() {
        rt.remove(&stale.id).await.unwrap();
    }
    let mut events = rt.events();
    // Subscribe is in flight in its own task; let it reach containerd.
    tokio::time::sleep(Duration::from_millis(200)).await;

    // --- images ---
    let t = Instant::now();
    let first = rt
        .ensure_image(&env.image)
        .await
        .expect("first ensure_image");
    let first_ms = t.elapsed().as_millis();
    let t = Instant::now();
    let second = rt
        .ensure_image(&env.image)
        .await
        .expect("second ensure_image");
    let second_ms = t.elapsed().as_millis();
    println!("image {} manifest {}", env.image, first.digest);
    println!(
        "ensure_image: first {first_ms} ms (fetched={}), second {second_ms} ms (fetched={})",
        first.fetched, second.fetched
    );
    assert!(!second.fetched, "a cached image must not be fetched again");
    assert_eq!(first.digest, second.digest);
    assert_eq!(first.top_chain_id, second.top_chain_id);
    assert!(first.digest.starts_with("sha256:"));

    // The image is listed for the heartbeat under the name it was pulled as.
    let held = rt.images().await.expect("images");
    assert!(
        held.iter()
            .any(|i| i.reference == env.image && i.digest == first.digest),
        "{} not among {held:?}",
        env.image
    );

    // Concurrent calls for one image share the work and agree.
    let (a, b) = tokio::join!(rt.ensure_image(&env.image), rt.ensure_image(&env.image));
    assert_eq!(a.unwrap().digest, b.unwrap().digest);

    let registry = env.image.split('/').next().unwrap();
    let missing = format!("{registry}/skiff-rt-test-nope:1");
    match rt.ensure_image(&missing).await {
        Err(e @ RuntimeError::Pull { .. }) => {
            let msg = e.to_string();
            println!("missing image error: {msg}");
            assert!(msg.contains(&missing), "{msg}");
            assert!(msg.contains("unknown"), "{msg}");
        }
        other => panic!("expected a pull error, got {other:?}"),
    }

    // --- run, exit code, logs, generations ---
    let spec = run_spec(
        &env.image,
        &second,
        &["sh", "-c", "echo hello $GREETING; exit 3"],
        128,
    );
    let id = spec.id.clone();
    let t = Instant::now();
    rt.create(&spec).await.expect("create");
    let create_ms = t.elapsed().as_millis();
    rt.create(&spec).await.expect("create is idempotent");
    let t = Instant::now();
    let started = rt.start(&spec, 1).await.expect("start");
    let start_ms = t.elapsed().as_millis();
    println!(
        "create {create_ms} ms, start {start_ms} ms (pid {})",
        started.pid
    );
    assert!(started.pid > 0);

    let (code, _) = wait_exit(&mut events, &id).await;
    assert_eq!(code, 3);
    let task = rt
        .task(&id)
        .await
        .unwrap()
        .expect("stopped task still present");
    assert_eq!(task.status, TaskStatus::Stopped);
    assert_eq!(task.exit_code, Some(3));
    assert!(task.exited_at_unix_ms.unwrap() >= started.started_at_unix_ms - 1000);
    assert!(!rt.oom_killed(&id).await);

    rt.finish_task(&id, &exit_record(1, 3, false))
        .await
        .expect("finish_task");
    assert!(rt.task(&id).await.unwrap().is_none());
    let listed = rt.list().await.unwrap();
    let mine = listed.iter().find(|c| c.id == id).expect("listed");
    assert_eq!(mine.generation, 1);
    assert_eq!(mine.last_exit, Some(exit_record(1, 3, false)));
    assert!(mine.task.is_none());
    assert_eq!(read_log(&rt, &id).matches("hello hello").count(), 1);

    rt.start(&spec, 2).await.expect("second generation starts");
    let (code, _) = wait_exit(&mut events, &id).await;
    assert_eq!(code, 3);
    let mine = rt
        .list()
        .await
        .unwrap()
        .into_iter()
        .find(|c| c.id == id)
        .unwrap();
    assert_eq!(mine.generation, 2);
    assert_eq!(mine.task.unwrap().status, TaskStatus::Stopped);
    assert_eq!(read_log(&rt, &id).matches("hello hello").count(), 2);

    // --- the image's own entrypoint/cmd, env and working dir ---
    let defaults = run_spec(&env.image, &second, &[], 64);
    rt.create(&defaults).await.unwrap();
    rt.start(&defaults, 1).await.unwrap();
    let (code, _) = wait_exit(&mut events, &defaults.id).await;
    println!(
        "image defaults {:?} exited {code}: {:?}",
        second.defaults,
        read_log(&rt, &defaults.id)
    );
    assert_eq!(code, 0);

    // --- the image's user, by name or number, from its /etc/passwd ---
    let mut users = Vec::new();
    for (user, want) in [
        ("nobody", "uid=65534 gid=65534 groups=65534"),
        ("65534", "uid=65534 gid=65534 groups=65534"),
        ("nobody:root", "uid=65534 gid=0 groups=0"),
        ("4242", "uid=4242 gid=0 groups=0"),
    ] {
        let mut image = second.clone();
        image.defaults.user = Some(user.to_owned());
        let run = run_spec(
            &env.image,
            &image,
            &["sh", "-c", "echo uid=$(id -u) gid=$(id -g) groups=$(id -G)"],
            64,
        );
        rt.create(&run).await.expect("create as an image user");
        rt.start(&run, 1).await.unwrap();
        let (code, _) = wait_exit(&mut events, &run.id).await;
        let log = read_log_through(&rt, &run.id, "groups=").await;
        assert_eq!(code, 0, "{user}: {log}");
        assert_eq!(log.trim(), want, "{user}");
        users.push(run.id);
    }
    let mut ghost = second.clone();
    ghost.defaults.user = Some("ghost".to_owned());
    let refused = run_spec(&env.image, &ghost, &["true"], 64);
    match rt.create(&refused).await {
        Err(e @ RuntimeError::Spec { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains("\"ghost\""), "{msg}");
            assert!(msg.contains(&env.image), "{msg}");
        }
        other => panic!("an unknown user name must be refused at create: {other:?}"),
    }
    assert!(rt.list().await.unwrap().iter().all(|c| c.id != refused.id));

    // --- limits and isolation seen from inside ---
    let probe = run_spec(
        &env.image,
        &second,
        &[
            "sh",
            "-c",
            // Its own cgroup: cpu.max on v2 ("50000 100000"), cpu/ on v1.
            "if [ -f /sys/fs/cgroup/cgroup.controllers ]; \
             then read q p </sys/fs/cgroup/cpu.max; echo quota=$q; \
             else echo quota=$(cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us); fi; \
             echo nets=$(ls /sys/class/net | tr '\\n' ' '); \
             echo secret=$SECRET_TOKEN; echo host=$(hostname); \
             ping -c1 -W1 127.0.0.1 >/dev/null 2>&1 && echo raw=yes || echo raw=no",
        ],
        128,
    );
    rt.create(&probe).await.unwrap();
    rt.start(&probe, 1).await.unwrap();
    let (code, _) = wait_exit(&mut events, &probe.id).await;
    let log = read_log_through(&rt, &probe.id, "raw=").await;
    println!("probe output:\n{log}");
    assert_eq!(code, 0);
    assert!(log.contains("quota=50000"), "{log}");
    assert!(
        log.lines().any(|l| l.trim() == "nets=lo"),
        "only loopback expected: {log}"
    );
    assert!(log.contains("secret=s3cret"), "{log}");
    assert!(log.contains("host=rt-test"), "{log}");
    assert!(log.contains("raw=no"), "NET_RAW must be dropped: {log}");

    // --- OOM ---
    let hog = run_spec(
        &env.image,
        &second,
        &[
            "sh",
            "-c",
            "x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo ${#x}",
        ],
        64,
    );
    rt.create(&hog).await.unwrap();
    rt.start(&hog, 1).await.unwrap();
    let (code, oom_event) = wait_exit(&mut events, &hog.id).await;
    let oom_cgroup = rt.oom_killed(&hog.id).await;
    println!(
        "oom: exit {code}, OomKilled event {oom_event}, cgroup ({}) {oom_cgroup}",
        rt.cgroup_layout()
    );
    assert!(oom_cgroup, "the cgroup's OOM count must report the kill");
    assert_ne!(code, 0);

    // --- a running container: start refuses, remove kills ---
    let sleeper = run_spec(&env.image, &second, &["sleep", "1000"], 64);
    rt.create(&sleeper).await.unwrap();
    rt.start(&sleeper, 1).await.unwrap();
    let task = rt.task(&sleeper.id).await.unwrap().unwrap();
    assert_eq!(task.status, TaskStatus::Running);
    assert!(rt.start(&sleeper, 2).await.is_err());
    // SIGTERM would be ignored: `sleep` is PID 1 in its namespace and has no handler.
    rt.kill(&sleeper.id, 9).await.unwrap();
    let (code, _) = wait_exit(&mut events, &sleeper.id).await;
    assert_eq!(code, 137);

    // --- fencing: remove() SIGKILLs a running task, whatever it ignores ---
    let fenced = run_spec(&env.image, &second, &["sleep", "1000"], 64);
    rt.create(&fenced).await.unwrap();
    rt.start(&fenced, 1).await.unwrap();
    assert_eq!(
        rt.task(&fenced.id).await.unwrap().unwrap().status,
        TaskStatus::Running
    );
    rt.remove(&fenced.id)
        .await
        .expect("remove a running container");
    assert!(rt.task(&fenced.id).await.unwrap().is_none());
    assert!(rt.list().await.unwrap().iter().all(|c| c.id != fenced.id));

    // --- cleanup ---
    let ids = [&id, &defaults.id, &probe.id, &hog.id, &sleeper.id];
    let t = Instant::now();
    for cid in ids.iter().copied().chain(&users) {
        rt.remove(cid).await.expect("remove");
    }
    println!("remove: {} ms for {}", t.elapsed().as_millis(), ids.len());
    rt.remove(&id).await.expect("remove is idempotent");
    let left = rt.list().await.unwrap();
    for cid in ids {
        assert!(left.iter().all(|c| &c.id != cid), "{cid} still listed");
        assert!(!rt.log_path(cid).exists());
        for dir in rt.cgroup_layout().dirs(&rt.cgroup_path(cid)) {
            assert!(!dir.exists(), "{} left", dir.display());
        }
    }
    let _ = std::fs::remove_dir_all(&state_dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_with_container_records_past_grpcs_message_limit_still_lists_them() {
    let env = env();
    let namespace = format!("{}-many", env.namespace);
    let state_dir = std::env::temp_dir().join(format!("skiff-rt-many-{}", uuid::Uuid::new_v4()));
    let rt = ContainerdRuntime::connect(config(&env, &namespace, &state_dir))
        .await
        .expect("connect");
    for stale in rt.list().await.unwrap() {
        rt.remove(&stale.id).await.unwrap();
    }
    let image = rt.ensure_image(&env.image).await.expect("ensure_image");
    // Each record carries its runtime spec: 160 of 32 KiB of environment
    // make a list answer over gRPC's 4 MiB default in one message.
    let pad = "x".repeat(32 * 1024);
    let mut ids = Vec::new();
    for _ in 0..160 {
        let mut spec = run_spec(&env.image, &image, &["true"], 64);
        spec.env.insert("PAD".to_owned(), pad.clone());
        rt.create(&spec).await.expect("create");
        ids.push(spec.id);
    }
    let listed = rt.list().await.expect("listing past 4 MiB");
    assert_eq!(listed.len(), ids.len());
    for id in &ids {
        rt.remove(id).await.unwrap();
    }
    let _ = std::fs::remove_dir_all(&state_dir);
}
