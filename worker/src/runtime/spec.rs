//! Builds the complete OCI runtime spec (config.json) for one container.
//!
//! containerd adds no defaults on the server side (the Go client does that),
//! so everything runc needs is here: process, mounts, namespaces, cgroup
//! resources, masked paths and seccomp. The values follow Docker's defaults
//! (moby `oci/defaults.go` and `daemon/oci_linux.go`), minus NET_RAW.
//!
//! The spec is plain `serde_json` rather than the `oci-spec` builders: it
//! reads like the config.json it becomes, and a unit test checks that it
//! parses as `oci_spec::runtime::Spec`. It holds secure env values: never log it.
//!
//! Layout:
//! - [`user`]: the image's `User` (names or numbers) resolved against its
//!   /etc/passwd and /etc/group.
//! - [`rootfs`]: reads those files from the layer directories of a
//!   snapshot, without mounting it.

pub mod rootfs;
pub mod user;

use super::{RunSpec, RuntimeError};
use serde_json::{json, Value};
use user::ProcessUser;

/// Docker's default capability set without CAP_NET_RAW (no raw sockets:
/// ping spoofing and ARP tricks are not something tenants need).
pub const DEFAULT_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
pub const CPU_PERIOD_US: u64 = 100_000;
/// The open-files limit containers get, unless the host cannot grant it
/// (see [`SpecOptions::nofile_limit`]).
pub const NOFILE_LIMIT: u64 = 1_048_576;

const MASKED_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Host-level settings that are the same for every container.
#[derive(Debug, Clone)]
pub struct SpecOptions {
    /// Parent cgroup path, e.g. `/skiff/<namespace>`; the container's is `<parent>/<id>`.
    pub cgroup_parent: String,
    pub pids_limit: i64,
    /// The resolved OCI `linux.seccomp` object; `None` runs unconfined.
    pub seccomp: Option<Value>,
    /// Whether swap is accounted (v1 memory.memsw.*, v2 memory.swap.max).
    /// Without it runc fails to write a memory+swap limit, so it is left out.
    pub swap_accounting: bool,
    /// A cgroup namespace of its own, for cgroup v2 hosts: runc mounts a
    /// fresh cgroup2 at /sys/fs/cgroup, which shows the root of the
    /// container's cgroup namespace; without one that is the host's whole
    /// tree (every container's cgroup). On v1 runc bind-mounts the
    /// container's own cgroups, as Docker's default (host namespace) does.
    pub cgroup_namespace: bool,
    /// RLIMIT_NOFILE (soft and hard). Raising a hard limit above the one
    /// runc inherits needs CAP_SYS_RESOURCE, which some hosts (sandboxed
    /// VMs) withhold even from root; runc then fails with EPERM. So this is
    /// [`NOFILE_LIMIT`] capped at the host's hard limit.
    pub nofile_limit: u64,
    /// Where containers' volumes live ([`super::volumes`]).
    pub volumes_root: std::path::PathBuf,
}

/// Where a private network's pieces are, for a container that has one.
#[derive(Debug, Clone)]
pub struct NetPaths {
    /// The named network namespace the worker sets up before each run.
    pub netns: std::path::PathBuf,
    /// Generated files bound over /etc/hosts and /etc/hostname.
    pub hosts: std::path::PathBuf,
    pub hostname: std::path::PathBuf,
}

/// The full runtime spec for `run` as JSON, its process running as `user`
/// (the image's, resolved: see [`user`]); `net`: its private network
/// (None: a network namespace of its own with loopback only).
pub fn build(
    run: &RunSpec,
    opts: &SpecOptions,
    user: &ProcessUser,
    net: Option<&NetPaths>,
) -> Result<Value, RuntimeError> {
    let spec_err = |message: String| RuntimeError::Spec {
        id: run.id.clone(),
        message,
    };

    let args = if run.command.is_empty() {
        let d = &run.image.defaults;
        d.entrypoint.iter().chain(d.cmd.iter()).cloned().collect()
    } else {
        run.command.clone()
    };
    if args.is_empty() {
        return Err(spec_err(
            "no command: the request has none and the image has neither entrypoint nor cmd".into(),
        ));
    }

    let cwd = run
        .image
        .defaults
        .working_dir
        .clone()
        .filter(|d| d.starts_with('/'))
        .unwrap_or_else(|| "/".to_owned());

    let caps = DEFAULT_CAPABILITIES;
    // The resources are OCI's v1-shaped fields on either layout: on a v2
    // host runc converts them (shares -> cpu.weight, quota and period ->
    // cpu.max, limit -> memory.max, pids -> pids.max, devices -> eBPF).
    let quota = run.cpu.cfs_quota_us(CPU_PERIOD_US);
    // Docker's conversion of CPUs to relative weight: 1 vCPU = 1024 shares.
    let shares = (u64::from(run.cpu.millis()) * 1024 / 1000).max(2);
    let memory_bytes = run.memory.bytes();

    let mut memory = json!({ "limit": memory_bytes });
    if opts.swap_accounting {
        // memory+swap equal to memory: the container gets no swap at all
        // (on v2 runc writes the difference, 0, to memory.swap.max).
        memory["swap"] = json!(memory_bytes);
    }

    let mut linux = json!({
        "cgroupsPath": format!("{}/{}", opts.cgroup_parent.trim_end_matches('/'), run.id),
        "resources": {
            "devices": allowed_devices(),
            "memory": memory,
            "cpu": { "shares": shares, "quota": quota, "period": CPU_PERIOD_US },
            "pids": { "limit": opts.pids_limit },
        },
        // A new network namespace without a path: runc creates it and brings
        // up loopback only; with a private network, the worker's named one.
        // Never the host's network.
        "namespaces": [
            { "type": "pid" },
            { "type": "ipc" },
            { "type": "uts" },
            { "type": "mount" },
            { "type": "network" },
        ],
        "maskedPaths": MASKED_PATHS,
        "readonlyPaths": READONLY_PATHS,
    });
    if opts.cgroup_namespace {
        linux["namespaces"]
            .as_array_mut()
            .expect("namespaces is an array")
            .push(json!({ "type": "cgroup" }));
    }
    if let Some(seccomp) = &opts.seccomp {
        linux["seccomp"] = seccomp.clone();
    }
    let mut mounts = default_mounts(run.memory.bytes().max(0) as u64);
    mounts
        .as_array_mut()
        .expect("mounts is an array")
        .extend(super::volumes::oci_mounts(
            &opts.volumes_root,
            run.sandbox_key(),
            &run.volumes,
            &run.mounts,
        ));
    if let Some(net) = net {
        for ns in linux["namespaces"]
            .as_array_mut()
            .expect("namespaces is an array")
        {
            if ns["type"] == "network" {
                ns["path"] = json!(net.netns);
            }
        }
        let list = mounts.as_array_mut().expect("mounts is an array");
        for (dest, source) in [("/etc/hosts", &net.hosts), ("/etc/hostname", &net.hostname)] {
            list.push(
                json!({ "destination": dest, "type": "bind", "source": source,
                              "options": ["rbind", "rprivate", "ro"] }),
            );
        }
    }

    Ok(json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {
                "uid": user.uid,
                "gid": user.gid,
                "additionalGids": user.additional_gids,
            },
            "args": args,
            "env": merged_env(run),
            "cwd": cwd,
            "capabilities": {
                "bounding": caps,
                "effective": caps,
                "permitted": caps,
            },
            "rlimits": [
                { "type": "RLIMIT_NOFILE", "hard": opts.nofile_limit, "soft": opts.nofile_limit },
            ],
            "noNewPrivileges": true,
        },
        "root": { "path": "rootfs", "readonly": run.read_only_rootfs },
        "hostname": run.hostname,
        "mounts": mounts,
        "linux": linux,
    }))
}

/// `KEY=value` entries: PATH default, then the image's env, the request's
/// env and the secure env, each overriding earlier entries with the same key
/// (in place, so the image's order is kept).
fn merged_env(run: &RunSpec) -> Vec<String> {
    let mut env: Vec<(String, String)> = vec![("PATH".to_owned(), DEFAULT_PATH.to_owned())];
    let mut set = |key: &str, value: &str| match env.iter_mut().find(|(k, _)| k == key) {
        Some(entry) => entry.1 = value.to_owned(),
        None => env.push((key.to_owned(), value.to_owned())),
    };
    for entry in &run.image.defaults.env {
        let (k, v) = entry.split_once('=').unwrap_or((entry, ""));
        set(k, v);
    }
    for (k, v) in &run.env {
        set(k, v);
    }
    for (k, v) in &run.secure_env.0 {
        set(k, v);
    }
    env.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
}

/// Deny all devices, then allow Docker's defaults: mknod of any char/block
/// node, and read/write on the harmless character devices.
fn allowed_devices() -> Value {
    let rwm = |major: i64, minor: Option<i64>| {
        let mut d = json!({ "allow": true, "type": "c", "major": major, "access": "rwm" });
        if let Some(minor) = minor {
            d["minor"] = json!(minor);
        }
        d
    };
    json!([
        { "allow": false, "access": "rwm" },
        { "allow": true, "type": "c", "access": "m" },
        { "allow": true, "type": "b", "access": "m" },
        rwm(1, Some(3)),   // /dev/null
        rwm(1, Some(5)),   // /dev/zero
        rwm(1, Some(7)),   // /dev/full
        rwm(1, Some(8)),   // /dev/random
        rwm(1, Some(9)),   // /dev/urandom
        rwm(5, Some(0)),   // /dev/tty
        rwm(5, Some(2)),   // /dev/ptmx
        rwm(136, None),    // /dev/pts/*
    ])
}

/// [`NOFILE_LIMIT`], or the hard open-files limit of this process if that
/// is lower and raising it is not possible. containerd and its shims run
/// under the same host limits as the worker, so this is a good proxy.
pub fn host_nofile_limit() -> u64 {
    let hard = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|limits| parse_nofile_hard(&limits));
    match hard {
        Some(hard) if hard < NOFILE_LIMIT && !can_raise_rlimits() => hard,
        _ => NOFILE_LIMIT,
    }
}

/// The hard "Max open files" value of a /proc/<pid>/limits text.
fn parse_nofile_hard(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let mut fields = line["Max open files".len()..].split_whitespace();
    let _soft = fields.next()?;
    match fields.next()? {
        "unlimited" => Some(u64::MAX),
        n => n.parse().ok(),
    }
}

/// Whether this process has CAP_SYS_RESOURCE (bit 24) in its effective set.
fn can_raise_rlimits() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
            u64::from_str_radix(hex.trim(), 16).ok()
        })
        .is_some_and(|caps| caps & (1 << 24) != 0)
}

/// Docker's mounts, plus `/tmp` as a tmpfs as large as the memory limit: its
/// pages are charged to the container's memory cgroup, so filling it hits
/// the container's own limit, never the host's disk.
fn default_mounts(memory_bytes: u64) -> Value {
    json!([
        // tmpcopyup: what the image has in /tmp is copied in (as Docker
        // keeps it); nr_inodes bounds the kernel memory of empty files.
        { "destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
          "options": ["nosuid", "nodev", "mode=1777", "tmpcopyup",
                      format!("size={}", memory_bytes.max(1 << 20)),
                      format!("nr_inodes={}", (memory_bytes / 4096).max(1024))] },
        { "destination": "/proc", "type": "proc", "source": "proc",
          "options": ["nosuid", "noexec", "nodev"] },
        { "destination": "/dev", "type": "tmpfs", "source": "tmpfs",
          "options": ["nosuid", "strictatime", "mode=755", "size=65536k"] },
        { "destination": "/dev/pts", "type": "devpts", "source": "devpts",
          "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"] },
        { "destination": "/dev/shm", "type": "tmpfs", "source": "shm",
          "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"] },
        { "destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
          "options": ["nosuid", "noexec", "nodev"] },
        { "destination": "/sys", "type": "sysfs", "source": "sysfs",
          "options": ["nosuid", "noexec", "nodev", "ro"] },
        { "destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
          "options": ["nosuid", "noexec", "nodev", "relatime", "ro"] },
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::{ImageDefaults, ImageInfo};
    use skiff_core::{CpuMillis, MemoryMib};
    use std::collections::BTreeMap;

    fn run_spec() -> RunSpec {
        RunSpec {
            id: "0b7c6f1e-3f0a-4c39-9a57-6f0f0c3e1a11".into(),
            image_ref: "127.0.0.1:5000/busybox:1".into(),
            image: ImageInfo {
                digest: "sha256:aa".into(),
                top_chain_id: "sha256:bb".into(),
                defaults: ImageDefaults {
                    entrypoint: vec!["/bin/sh".into(), "-c".into()],
                    cmd: vec!["echo hi".into()],
                    env: vec![
                        "PATH=/image/bin".into(),
                        "IMAGE_ONLY=1".into(),
                        "SHARED=image".into(),
                    ],
                    working_dir: Some("/app".into()),
                    user: Some("1000:1001".into()),
                },
                fetched: false,
            },
            command: vec![],
            env: BTreeMap::from([
                ("SHARED".into(), "request".into()),
                ("TOKEN".into(), "plain".into()),
            ]),
            secure_env: skiff_core::SecretEnv(BTreeMap::from([("TOKEN".into(), "s3cret".into())])),
            cpu: CpuMillis::parse(0.5).unwrap(),
            memory: MemoryMib::parse(256).unwrap(),
            hostname: "web-1".into(),
            network: crate::runtime::NetworkSpec::None,
            read_only_rootfs: false,
            volumes: Vec::new(),
            mounts: Vec::new(),
            sandbox: None,
        }
    }

    /// The spec's mount at `destination`.
    fn mount<'a>(spec: &'a Value, destination: &str) -> Option<&'a Value> {
        spec["mounts"]
            .as_array()?
            .iter()
            .find(|m| m["destination"] == destination)
    }

    fn root() -> ProcessUser {
        ProcessUser::root()
    }

    fn opts() -> SpecOptions {
        SpecOptions {
            cgroup_parent: "/skiff/test".into(),
            pids_limit: 4096,
            seccomp: None,
            swap_accounting: true,
            cgroup_namespace: false,
            nofile_limit: NOFILE_LIMIT,
            volumes_root: "/state/volumes".into(),
        }
    }

    #[test]
    fn resources_follow_the_request() {
        let s = build(&run_spec(), &opts(), &root(), None).unwrap();
        let r = &s["linux"]["resources"];
        assert_eq!(r["cpu"]["quota"], 50_000);
        assert_eq!(r["cpu"]["period"], 100_000);
        assert_eq!(r["cpu"]["shares"], 512);
        assert_eq!(r["memory"]["limit"], 268_435_456_i64);
        assert_eq!(r["memory"]["swap"], 268_435_456_i64);
        assert_eq!(r["pids"]["limit"], 4096);
        assert_eq!(r["devices"][0], json!({ "allow": false, "access": "rwm" }));
        assert_eq!(
            s["linux"]["cgroupsPath"],
            "/skiff/test/0b7c6f1e-3f0a-4c39-9a57-6f0f0c3e1a11"
        );
        let no_swap = build(
            &run_spec(),
            &SpecOptions {
                swap_accounting: false,
                ..opts()
            },
            &root(),
            None,
        )
        .unwrap();
        assert!(no_swap["linux"]["resources"]["memory"]
            .get("swap")
            .is_none());
    }

    #[test]
    fn private_network_joins_the_named_namespace_and_binds_hosts_files() {
        let net = NetPaths {
            netns: "/run/netns/skb0-c1".into(),
            hosts: "/run/skiff/net/files/c1/hosts".into(),
            hostname: "/run/skiff/net/files/c1/hostname".into(),
        };
        let s = build(&run_spec(), &opts(), &root(), Some(&net)).unwrap();
        let ns = s["linux"]["namespaces"].as_array().unwrap();
        let netns: Vec<_> = ns.iter().filter(|n| n["type"] == "network").collect();
        assert_eq!(netns.len(), 1);
        assert_eq!(netns[0]["path"], "/run/netns/skb0-c1");
        let hosts = mount(&s, "/etc/hosts").unwrap();
        assert_eq!(hosts["source"], "/run/skiff/net/files/c1/hosts");
        assert!(hosts["options"].as_array().unwrap().contains(&json!("ro")));
        assert!(mount(&s, "/etc/hostname").is_some());
        // Without one: runc's fresh namespace (no path), the image's files.
        let s = build(&run_spec(), &opts(), &root(), None).unwrap();
        assert!(s["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n.get("path").is_none()));
        assert!(mount(&s, "/etc/hosts").is_none());
    }

    #[test]
    fn the_rootfs_is_read_only_when_asked() {
        let s = build(&run_spec(), &opts(), &root(), None).unwrap();
        assert_eq!(s["root"]["readonly"], false);
        let run = RunSpec {
            read_only_rootfs: true,
            ..run_spec()
        };
        let s = build(&run, &opts(), &root(), None).unwrap();
        assert_eq!(s["root"]["readonly"], true);
        // /tmp stays writable: a tmpfs of its own.
        let tmp = mount(&s, "/tmp").unwrap();
        assert_eq!(tmp["type"], "tmpfs");
    }

    #[test]
    fn a_sandbox_member_binds_the_sandboxs_volumes_in_a_cgroup_of_its_own() {
        let run = RunSpec {
            volumes: vec![super::super::volumes::Volume {
                name: "data".into(),
                kind: super::super::volumes::VolumeKind::EmptyDir {
                    size_mib: 8,
                    memory: true,
                },
            }],
            mounts: vec![super::super::volumes::Mount {
                volume: "data".into(),
                path: "/data".into(),
                read_only: false,
            }],
            ..run_spec()
        };
        let own = build(&run, &opts(), &root(), None).unwrap();
        assert_eq!(
            mount(&own, "/data").unwrap()["source"],
            format!("/state/volumes/{}/data", run.id)
        );
        let member = RunSpec {
            sandbox: Some("5a4d".into()),
            ..run
        };
        let s = build(&member, &opts(), &root(), None).unwrap();
        assert_eq!(
            mount(&s, "/data").unwrap()["source"],
            "/state/volumes/5a4d/data"
        );
        assert_eq!(s["linux"]["cgroupsPath"], own["linux"]["cgroupsPath"]);
    }

    #[test]
    fn capabilities_lack_net_raw() {
        let s = build(&run_spec(), &opts(), &root(), None).unwrap();
        let caps = &s["process"]["capabilities"];
        for set in ["bounding", "effective", "permitted"] {
            let list: Vec<&str> = caps[set]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c.as_str().unwrap())
                .collect();
            assert!(list.contains(&"CAP_CHOWN"), "{set}");
            assert!(!list.contains(&"CAP_NET_RAW"), "{set}");
            assert!(!list.contains(&"CAP_SYS_ADMIN"), "{set}");
        }
        assert_eq!(s["process"]["noNewPrivileges"], true);
    }

    #[test]
    fn network_namespace_is_new_never_the_hosts() {
        let s = build(&run_spec(), &opts(), &root(), None).unwrap();
        let ns = s["linux"]["namespaces"].as_array().unwrap();
        let net = ns.iter().find(|n| n["type"] == "network").unwrap();
        assert!(net.get("path").is_none());
        for t in ["pid", "ipc", "uts", "mount"] {
            assert!(ns.iter().any(|n| n["type"] == t), "{t}");
        }
        // The host's cgroup namespace on v1; its own on v2.
        assert!(ns.iter().all(|n| n["type"] != "cgroup"));
        let v2 = build(
            &run_spec(),
            &SpecOptions {
                cgroup_namespace: true,
                ..opts()
            },
            &root(),
            None,
        )
        .unwrap();
        let v2_ns = v2["linux"]["namespaces"].as_array().unwrap();
        assert_eq!(v2_ns.len(), ns.len() + 1);
        assert!(v2_ns.contains(&json!({ "type": "cgroup" })));
    }

    #[test]
    fn env_layers_with_secure_env_on_top() {
        let s = build(&run_spec(), &opts(), &root(), None).unwrap();
        let env: Vec<&str> = s["process"]["env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e.as_str().unwrap())
            .collect();
        assert_eq!(
            env,
            vec![
                "PATH=/image/bin",
                "IMAGE_ONLY=1",
                "SHARED=request",
                "TOKEN=s3cret"
            ]
        );
    }

    #[test]
    fn process_comes_from_image_unless_command_given() {
        let mut run = run_spec();
        let app = ProcessUser {
            uid: 1000,
            gid: 1001,
            additional_gids: vec![1001, 27],
        };
        let s = build(&run, &opts(), &app, None).unwrap();
        assert_eq!(s["process"]["args"], json!(["/bin/sh", "-c", "echo hi"]));
        assert_eq!(s["process"]["cwd"], "/app");
        assert_eq!(
            s["process"]["user"],
            json!({ "uid": 1000, "gid": 1001, "additionalGids": [1001, 27] })
        );
        assert_eq!(s["hostname"], "web-1");
        assert_eq!(s["root"]["path"], "rootfs");

        run.command = vec!["sleep".into(), "1".into()];
        run.image.defaults.working_dir = None;
        let s = build(&run, &opts(), &root(), None).unwrap();
        assert_eq!(s["process"]["args"], json!(["sleep", "1"]));
        assert_eq!(s["process"]["cwd"], "/");
        assert_eq!(
            s["process"]["user"],
            json!({ "uid": 0, "gid": 0, "additionalGids": [0] })
        );
    }

    #[test]
    fn tmp_is_a_tmpfs_as_large_as_the_memory_limit() {
        let run = run_spec();
        let s = build(&run, &opts(), &root(), None).unwrap();
        let tmp = mount(&s, "/tmp").unwrap();
        assert_eq!(tmp["type"], "tmpfs");
        let size = format!("size={}", run.memory.bytes());
        assert!(
            tmp["options"]
                .as_array()
                .unwrap()
                .iter()
                .any(|o| *o == size.as_str()),
            "{tmp}"
        );
    }

    #[test]
    fn mounts_and_paths_match_docker_defaults() {
        let s = build(&run_spec(), &opts(), &root(), None).unwrap();
        let mounts = s["mounts"].as_array().unwrap();
        let cgroup = mount(&s, "/sys/fs/cgroup").unwrap();
        assert_eq!(
            cgroup["options"],
            json!(["nosuid", "noexec", "nodev", "relatime", "ro"])
        );
        // Docker's seven, and /tmp.
        assert_eq!(mounts.len(), 8);
        assert!(s["linux"]["maskedPaths"]
            .as_array()
            .unwrap()
            .contains(&json!("/proc/kcore")));
        assert!(s["linux"]["readonlyPaths"]
            .as_array()
            .unwrap()
            .contains(&json!("/proc/sys")));
        assert_eq!(s["process"]["rlimits"][0]["hard"], 1_048_576);
    }

    #[test]
    fn nofile_hard_limit_parses() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            1024                 20000                files\n";
        assert_eq!(parse_nofile_hard(limits), Some(20000));
        assert!(host_nofile_limit() <= NOFILE_LIMIT);
        let mut o = opts();
        o.nofile_limit = 20000;
        let s = build(&run_spec(), &o, &root(), None).unwrap();
        assert_eq!(s["process"]["rlimits"][0]["soft"], 20000);
    }

    #[test]
    fn spec_parses_as_oci_runtime_spec() {
        let mut o = opts();
        let profile_path = std::path::Path::new("/usr/share/containers/seccomp.json");
        if profile_path.exists() {
            let profile = crate::runtime::seccomp::DockerProfile::load(profile_path).unwrap();
            o.seccomp = Some(profile.resolve(
                DEFAULT_CAPABILITIES,
                None,
                crate::runtime::seccomp::ArchScope::Native,
            ));
        }
        let s = build(&run_spec(), &o, &root(), None).unwrap();
        let parsed: oci_spec::runtime::Spec = serde_json::from_value(s).unwrap();
        let linux = parsed.linux().as_ref().unwrap();
        assert_eq!(
            linux
                .resources()
                .as_ref()
                .unwrap()
                .cpu()
                .as_ref()
                .unwrap()
                .quota(),
            Some(50_000)
        );
    }
}
