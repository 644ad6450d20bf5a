//! A pool's hosts: one containerd each (lib.sh's `start_containerd`, in a
//! containerd namespace of the pool's own), the test image pulled into
//! every one, and a `skiff-worker` each.
//!
//! Layout:
//! - [`HostDir`]: a host's directory and containerd, before its worker.
//! - [`start_hosts_containerd`]: starts every host's containerd.
//! - [`pull_test_image`]: pulls the test image into every host.
//! - [`start_workers`]: spawns every host's worker.

use super::env::free_port;
use super::{PoolRun, PoolSpec, Programs};
use crate::host::Host;
use crate::netns::Partition;
use crate::platform::{ApiReplica, Timers, HOST_CPU_MILLIS, HOST_LABEL, HOST_MEMORY_MIB};
use crate::service::{lib_sh, quote, Reaper, Service};
use crate::trust::CaFiles;
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// A host's private-network settings. Every worker on the machine needs a
/// bridge, subnet and host-port range of its own (other pools, other runs);
/// the bridge also names its nftables tables and namespaces.
fn next_host_net(dir: &Path) -> crate::host::HostNet {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    static BASE: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    let base = *BASE.get_or_init(|| uuid::Uuid::new_v4().as_u128() as u32);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    // test.sh removes what a killed run leaves under this prefix.
    let prefix = std::env::var("SKIFF_TEST_BRIDGE_PREFIX").unwrap_or_else(|_| "skb".into());
    let second = 100 + base % 100;
    let third = n % 256;
    // 50 ports a host below the ephemeral range (32768-): 255 slots.
    let slot = (base / 100 + n) % 255;
    let first_port = 20000 + slot * 50;
    crate::host::HostNet {
        bridge: format!("{prefix}{:04x}{n}", base % 0x10000),
        subnet: format!("10.{second}.{third}.0/24"),
        gateway: format!("10.{second}.{third}.1"),
        port_range: (first_port as u16, (first_port + 49) as u16),
        run_dir: dir
            .join("net")
            .join(format!("{prefix}{:04x}{n}", base % 0x10000)),
    }
}

/// A host whose containerd runs and whose worker does not yet.
pub(super) struct HostDir {
    /// `<run_dir>/hosts/h<n>`.
    dir: PathBuf,
    containerd_dir: PathBuf,
    /// containerd's socket, as lib.sh's `start_containerd` printed it.
    socket: String,
    /// The containerd namespace of this host's containers.
    namespace: String,
    net: crate::host::HostNet,
}

/// Starts one containerd per host (arming each one's cleanup: its tasks and
/// containers deleted, then containerd stopped).
pub(super) async fn start_hosts_containerd(
    spec: &PoolSpec,
    programs: &Programs,
    run: &PoolRun,
    partition: Option<&Partition>,
    reapers: &mut Vec<Reaper>,
) -> Result<Vec<HostDir>> {
    let lib = &programs.lib;
    let mut host_dirs = Vec::new();
    for h in 1..=spec.hosts {
        let dir = run.run_dir.join("hosts").join(format!("h{h}"));
        let containerd_dir = dir.join("containerd");
        let socket = lib_sh(
            lib,
            &format!("start_containerd {} 2>/dev/null", quote(&containerd_dir)),
        )
        .await
        .with_context(|| format!("starting containerd of h{h}"))?
        .trim()
        .to_string();
        let namespace = format!("skiff-e2e-{}-{}-h{h}", run.short, spec.name);
        let net = next_host_net(&dir);
        // The partitioned host's worker (the last) has its bridge in its namespace.
        let nsenter = match partition.filter(|_| h == spec.hosts) {
            Some(p) => format!("nsenter --net=/run/netns/{} -- ", p.host_netns),
            None => String::new(),
        };
        reapers.push(Reaper::spawn(
            format!(
                "source {lib}; SKIFF_DELETE_CONTAINERS=1 containerd_kill_tasks {dir} {namespace}; \
                 {nsenter}env SKIFF_NETWORK_BRIDGE={bridge} SKIFF_NETWORK_SUBNET={subnet} \
                   SKIFF_NETWORK_RUN_DIR={net_dir} {worker} --teardown-network; \
                 for ns in /run/netns/{bridge}-*; do [ -e \"$ns\" ] && ip netns del \"${{ns##*/}}\"; done; \
                 stop_containerd {dir}",
                lib = quote(lib),
                dir = quote(&containerd_dir),
                bridge = net.bridge,
                subnet = net.subnet,
                net_dir = quote(&dir.join("net")),
                worker = quote(&programs.worker_bin),
            ),
            &dir.join("reaper.log"),
        )?);
        host_dirs.push(HostDir {
            dir,
            containerd_dir,
            socket,
            namespace,
            net,
        });
    }
    Ok(host_dirs)
}

/// Pulls `image` into every host's containerd, all at once.
///
/// Every host holds the test image before its worker starts, so image
/// locality does not steer the first placements to whichever host happened
/// to pull first (a partitioned host cannot reach the registry at all).
pub(super) async fn pull_test_image(image: &str, host_dirs: &[HostDir]) -> Result<()> {
    let pulls = host_dirs.iter().map(|host| {
        let image = image.to_string();
        let socket = host.socket.clone();
        let namespace = host.namespace.clone();
        async move {
            let output = tokio::process::Command::new("timeout")
                .args(["120", "ctr", "--address", &socket, "-n", &namespace])
                .args(["images", "pull", "--plain-http", &image])
                .output()
                .await?;
            if !output.status.success() {
                bail!(
                    "ctr images pull {image} into {namespace}: {}",
                    String::from_utf8_lossy(&output.stderr)
                );
            }
            Ok(())
        }
    });
    for pulled in futures::future::join_all(pulls).await {
        pulled?;
    }
    Ok(())
}

/// Spawns one worker per host (the last one inside the host's network
/// namespace in a partitioned pool); does not wait for them to register.
#[allow(clippy::too_many_arguments)]
pub(super) fn start_workers(
    spec: &PoolSpec,
    run: &PoolRun,
    programs: &Programs,
    host_dirs: Vec<HostDir>,
    apis: &[ApiReplica],
    partition: Option<&Partition>,
    timers: &Timers,
    ca: &CaFiles,
    join_token: &str,
    registry: &str,
) -> Result<Vec<Host>> {
    let mut hosts = Vec::new();
    for (i, host_dir) in host_dirs.into_iter().enumerate() {
        let HostDir {
            dir,
            containerd_dir,
            socket,
            namespace,
            net,
        } = host_dir;
        let name = format!("h{}", i + 1);
        let in_netns = partition.filter(|_| i + 1 == spec.hosts);
        // Workers spread over the replicas; the partitioned host talks
        // to the partitioned replica.
        let api = if in_netns.is_some() {
            apis.last().expect("a replica")
        } else {
            &apis[i % apis.iter().filter(|a| a.netns.is_none()).count()]
        };
        let ip = if in_netns.is_some() {
            crate::netns::HOST_IP
        } else {
            "127.0.0.1"
        };
        let labels: BTreeMap<String, String> = [
            (HOST_LABEL.to_string(), name.clone()),
            (
                "tier".to_string(),
                if i == 0 { "gold" } else { "silver" }.to_string(),
            ),
        ]
        .into();
        let metrics_addr = format!("{}:{}", "127.0.0.1", free_port()?);
        let id = format!("e2e-{}-{}-{name}", run.run_id, spec.name);
        // Every reachable replica, this host's own first: a worker moves
        // to the next when its replica fails (the partitioned host
        // reaches only the replica beside it).
        let control_planes = if in_netns.is_some() {
            api.grpc_url.clone()
        } else {
            let reachable: Vec<&ApiReplica> = apis.iter().filter(|a| a.netns.is_none()).collect();
            let n = reachable.len();
            (0..n)
                .map(|k| reachable[(i + k) % n].grpc_url.clone())
                .collect::<Vec<_>>()
                .join(",")
        };
        let agent_listen = format!(
            "{}:{}",
            if spec.agent_listen_any && in_netns.is_none() {
                "0.0.0.0"
            } else {
                ip
            },
            free_port()?
        );
        let env_vars = vec![
            ("SKIFF_CONTROL_PLANE".to_string(), control_planes),
            ("SKIFF_AGENT_LISTEN".into(), agent_listen.clone()),
            ("SKIFF_HOST_ID".into(), id.clone()),
            ("SKIFF_CA_CERT".into(), ca.cert.display().to_string()),
            ("SKIFF_JOIN_TOKEN".into(), join_token.to_owned()),
            ("SKIFF_CONTAINERD_SOCKET".into(), socket.clone()),
            ("SKIFF_CONTAINERD_NAMESPACE".into(), namespace.clone()),
            // The test registries over plain HTTP (the one with auth
            // too), and the egress tests' stubs; a deny list for those tests.
            (
                "SKIFF_INSECURE_REGISTRIES".into(),
                format!(
                    "{registry},{}{}",
                    crate::platform::REDIRECTING_REGISTRY_HOST,
                    crate::registry::AuthRegistry::from_env()
                        .map(|r| format!(",{}", r.insecure()))
                        .unwrap_or_default()
                ),
            ),
            (
                "SKIFF_REGISTRY_DENY".into(),
                format!(
                    "{},{}",
                    crate::platform::DENIED_REGISTRY,
                    crate::platform::DENIED_REGISTRY_NET
                ),
            ),
            (
                "SKIFF_STATE_DIR".into(),
                dir.join("worker").display().to_string(),
            ),
            ("SKIFF_CPU_MILLIS".into(), HOST_CPU_MILLIS.to_string()),
            (
                "SKIFF_PIDS_LIMIT".into(),
                crate::platform::PIDS_LIMIT.to_string(),
            ),
            ("SKIFF_MEMORY_MIB".into(), HOST_MEMORY_MIB.to_string()),
            (
                "SKIFF_HOST_LABELS".into(),
                labels
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            (
                "SKIFF_CHECKPOINT_INTERVAL_S".into(),
                timers.checkpoint_interval_s.to_string(),
            ),
            ("SKIFF_METRICS_LISTEN".into(), metrics_addr.clone()),
            (
                "SKIFF_LOG_MAX_BYTES".into(),
                crate::platform::LOG_MAX_BYTES.to_string(),
            ),
            (
                "SKIFF_IMAGE_DISK_BUDGET_BYTES".into(),
                // 0: no budget (the default, 20 GiB, would do the same here).
                spec.image_budget.unwrap_or(0).to_string(),
            ),
            (
                "SKIFF_HOST_LOG_BUDGET_BYTES".into(),
                spec.log_budget.unwrap_or(0).to_string(),
            ),
            (
                "SKIFF_LOG_GC_INTERVAL_S".into(),
                crate::platform::LOG_GC_INTERVAL_S.to_string(),
            ),
            (
                "SKIFF_IMAGE_GC_INTERVAL_S".into(),
                crate::platform::IMAGE_GC_INTERVAL_S.to_string(),
            ),
            (
                "SKIFF_IMAGE_MIN_IDLE_S".into(),
                crate::platform::IMAGE_MIN_IDLE_S.to_string(),
            ),
            ("SKIFF_NETWORK_BRIDGE".into(), net.bridge.clone()),
            ("SKIFF_NETWORK_SUBNET".into(), net.subnet.clone()),
            (
                "SKIFF_NETWORK_RUN_DIR".into(),
                dir.join("net").display().to_string(),
            ),
            (
                "SKIFF_PORT_RANGE".into(),
                format!("{}-{}", net.port_range.0, net.port_range.1),
            ),
            ("SKIFF_PORT_HOST_IP".into(), "127.0.0.1".into()),
            ("SKIFF_EGRESS_NAT".into(), "false".into()),
            ("RUST_LOG".into(), "info".into()),
            ("NO_COLOR".into(), "1".into()),
            (
                "SKIFF_E2E_RUN_DIR".into(),
                run.run_dir.display().to_string(),
            ),
        ];
        let mut command = Vec::new();
        if let Some(p) = in_netns {
            // Its network namespace only: `ip netns exec` would also give it a
            // mount namespace with a fresh /sys, without the cgroup
            // hierarchies the worker meters through (and refuses to start
            // without).
            command.extend([
                "nsenter".to_string(),
                format!("--net=/run/netns/{}", p.host_netns),
                "--".to_string(),
            ]);
        }
        command.push(programs.worker_bin.display().to_string());
        let worker = Service::spawn("worker", command, env_vars, &dir)?;
        hosts.push(Host {
            name,
            id,
            labels,
            cpu_millis: HOST_CPU_MILLIS,
            memory_mib: HOST_MEMORY_MIB,
            namespace,
            containerd_dir,
            containerd_socket: socket,
            metrics_addr,
            netns: in_netns.map(|p| p.host_netns.clone()),
            net,
            agent_listen,
            worker: Mutex::new(worker),
            state_dir: dir.join("worker"),
            lib: programs.lib.clone(),
        });
    }
    Ok(hosts)
}
