//! The worker's configuration: flags, with `SKIFF_*` environment variables.
//! Values that need checking (labels, intervals) are parsed into validated
//! types here, so a bad setting stops the worker at start with a message
//! naming it.

use clap::Parser;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "skiff-worker",
    about = "skiff host agent: runs assigned containers through containerd"
)]
pub struct WorkerConfig {
    /// gRPC address of the control plane, `https://host:port` (the channel
    /// is always mutual TLS); several replicas comma-separated (the worker
    /// stays on one and moves to the next when it fails).
    #[arg(
        long,
        env = "SKIFF_CONTROL_PLANE",
        default_value = "https://127.0.0.1:8081",
        value_delimiter = ','
    )]
    pub control_plane: Vec<String>,

    /// Where this worker serves logs to the control plane.
    #[arg(long, env = "SKIFF_AGENT_LISTEN", default_value = "127.0.0.1:8082")]
    pub agent_listen: SocketAddr,

    /// The address the control plane dials for logs (default: the listen
    /// address, or, when that is unspecified such as 0.0.0.0, the address of
    /// the interface that reaches the control plane). Never unspecified.
    #[arg(long, env = "SKIFF_AGENT_ADVERTISE")]
    pub agent_advertise: Option<SocketAddr>,

    /// The host name to ask for when joining (default: the hostname). The
    /// control plane makes it a DNS label and unique; the id it grants is
    /// in the host certificate and stays the host's id from then on.
    #[arg(long, env = "SKIFF_HOST_ID")]
    pub host_id: Option<String>,

    /// The control plane's CA certificate(s), PEM: the control plane is
    /// trusted only with a certificate from one of them.
    #[arg(long, env = "SKIFF_CA_CERT", default_value = "/etc/skiff/ca.crt")]
    pub ca_cert: PathBuf,

    /// A join token (POST /v1/admin/join-tokens), needed only while this
    /// host has no certificate in its state dir (the first start, or after
    /// its certificate expired unrenewed).
    #[arg(long, env = "SKIFF_JOIN_TOKEN", hide_env_values = true)]
    pub join_token: Option<String>,

    #[arg(
        long,
        env = "SKIFF_CONTAINERD_SOCKET",
        default_value = "/run/containerd/containerd.sock"
    )]
    pub containerd_socket: PathBuf,

    /// containerd namespace holding this worker's containers.
    #[arg(long, env = "SKIFF_CONTAINERD_NAMESPACE", default_value = "skiff")]
    pub containerd_namespace: String,

    /// Logs, the host's key and certificate (`identity/`), other host state.
    #[arg(long, env = "SKIFF_STATE_DIR", default_value = "/var/lib/skiff-worker")]
    pub state_dir: PathBuf,

    /// Allocatable cpu in milli-vCPUs (default: all cores). May exceed the
    /// machine's cores when the operator knows its containers mostly sleep.
    #[arg(long, env = "SKIFF_CPU_MILLIS")]
    pub cpu_millis: Option<u32>,

    /// Allocatable memory in MiB (default: total memory less 1 GiB for the host).
    #[arg(long, env = "SKIFF_MEMORY_MIB")]
    pub memory_mib: Option<u64>,

    /// Most processes (threads included) one container may have at once
    /// (its cgroup's pids.max): a fork bomb stops there.
    #[arg(long, env = "SKIFF_PIDS_LIMIT", default_value_t = 4096,
          value_parser = clap::value_parser!(i64).range(1..))]
    pub pids_limit: i64,

    /// Registries reached over plain HTTP (host or host:port),
    /// comma-separated; naming one also allows it (loopback included).
    /// None by default: every pull is HTTPS.
    #[arg(long, env = "SKIFF_INSECURE_REGISTRIES", value_delimiter = ',')]
    pub insecure_registries: Vec<String>,

    /// Registries a pull may reach: hosts, host:port or networks (CIDR),
    /// comma-separated. Empty: any registry not denied and not at a
    /// loopback, link-local (cloud metadata) or other reserved address.
    #[arg(long, env = "SKIFF_REGISTRY_ALLOW", value_delimiter = ',')]
    pub registry_allow: Vec<String>,

    /// Registries a pull may never reach: hosts, host:port or networks
    /// (CIDR), comma-separated; wins over SKIFF_REGISTRY_ALLOW.
    #[arg(long, env = "SKIFF_REGISTRY_DENY", value_delimiter = ',')]
    pub registry_deny: Vec<String>,

    #[arg(
        long,
        env = "SKIFF_SECCOMP_PROFILE",
        default_value = "/usr/share/containers/seccomp.json"
    )]
    pub seccomp_profile: PathBuf,

    /// Let containers make 32-bit (x86, x32) syscalls, as Docker does. Off by
    /// default: a smaller attack surface and a faster seccomp set-up.
    #[arg(long, env = "SKIFF_SECCOMP_COMPAT_ARCHES", default_value_t = false)]
    pub seccomp_compat_arches: bool,

    /// Container creations+starts in flight at once (default: 4 per core).
    /// More only adds contention: each one spawns a shim and runc.
    #[arg(long, env = "SKIFF_MAX_CONCURRENT_STARTS")]
    pub max_concurrent_starts: Option<usize>,

    /// Images stored on the host may take this many bytes (their blobs in
    /// containerd's content store, each once; 0: no budget). Past it,
    /// unused images idle for SKIFF_IMAGE_MIN_IDLE_S are removed, least
    /// recently used first, until the rest fit.
    #[arg(long, env = "SKIFF_IMAGE_DISK_BUDGET_BYTES", default_value_t = 20 * 1024 * 1024 * 1024)]
    pub image_disk_budget_bytes: u64,

    /// How often the image budget is checked.
    #[arg(long, env = "SKIFF_IMAGE_GC_INTERVAL_S", default_value_t = 60.0)]
    pub image_gc_interval_s: f64,

    /// An image a container started from less than this long ago is kept
    /// (it may be about to be used again).
    #[arg(long, env = "SKIFF_IMAGE_MIN_IDLE_S", default_value_t = 600.0)]
    pub image_min_idle_s: f64,

    /// A container's log is kept under this many bytes (0: no cap): past it
    /// by a quarter, the newest bytes are kept behind a marker line saying
    /// how much older output was dropped.
    #[arg(long, env = "SKIFF_LOG_MAX_BYTES", default_value_t = 10 * 1024 * 1024)]
    pub log_max_bytes: u64,

    /// All containers' logs on this host are kept under this many bytes (0:
    /// no budget): past it, finished containers' logs are cut to their
    /// newest output, least recently written first (running ones are
    /// bounded by SKIFF_LOG_MAX_BYTES each).
    #[arg(long, env = "SKIFF_HOST_LOG_BUDGET_BYTES", default_value_t = 2 * 1024 * 1024 * 1024)]
    pub host_log_budget_bytes: u64,

    /// How often the host's logs are measured against the budget.
    #[arg(long, env = "SKIFF_LOG_GC_INTERVAL_S", default_value_t = 30.0)]
    pub log_gc_interval_s: f64,

    /// The skiff-logger binary the shim runs to write logs (default: beside skiff-worker).
    #[arg(long, env = "SKIFF_LOGGER")]
    pub logger: Option<PathBuf>,

    /// Parent cgroup of every container (default: /skiff/<namespace>).
    #[arg(long, env = "SKIFF_CGROUP_PARENT")]
    pub cgroup_parent: Option<String>,

    /// Seconds between re-checks of a running container, each of which
    /// sends a meter checkpoint. The control plane expects one at least
    /// every 10 s, so at most 10.
    #[arg(
        long,
        env = "SKIFF_CHECKPOINT_INTERVAL_S",
        default_value = "5",
        value_parser = CheckpointInterval::parse
    )]
    pub checkpoint_interval_s: CheckpointInterval,

    /// Operator labels of this host, `key=value` pairs separated by commas;
    /// containers whose placement names host labels land only on hosts with them.
    #[arg(long, env = "SKIFF_HOST_LABELS", default_value = "", value_parser = HostLabels::parse)]
    pub host_labels: HostLabels,

    /// Where to serve Prometheus metrics (GET /metrics); none when unset.
    #[arg(long, env = "SKIFF_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,

    /// Offer containers private networks (`network: private`): CNI
    /// plugins, a bridge, the worker's nftables tables. Off: only
    /// `network: none` containers are placed here.
    #[arg(long, env = "SKIFF_NETWORK_ENABLED", default_value_t = true,
          action = clap::ArgAction::Set)]
    pub network_enabled: bool,

    /// The bridge containers attach to (at most 15 characters). It also
    /// names the CNI network, the nftables tables (`skiff_<bridge>`) and
    /// the network namespaces (`<bridge>-<container id>`): every worker on
    /// one machine needs its own.
    #[arg(long, env = "SKIFF_NETWORK_BRIDGE", default_value = "skiff0")]
    pub network_bridge: String,

    /// The bridge's subnet; containers get addresses from it (the first is
    /// the bridge's own, the gateway).
    #[arg(long, env = "SKIFF_NETWORK_SUBNET", default_value = "10.213.0.0/22")]
    pub network_subnet: ipnet::Ipv4Net,

    /// Where the CNI plugins are (Debian's containernetworking-plugins).
    #[arg(long, env = "SKIFF_CNI_PLUGIN_DIR", default_value = "/usr/lib/cni")]
    pub cni_plugin_dir: PathBuf,

    /// Network state (leases, saved results, hosts files), per bridge
    /// under it. Keep it on a tmpfs (/run): a reboot then resets it with
    /// the namespaces and rules it describes.
    #[arg(
        long,
        env = "SKIFF_NETWORK_RUN_DIR",
        default_value = "/run/skiff-worker/net"
    )]
    pub network_run_dir: PathBuf,

    /// Host ports published container ports are given from, `first-last`.
    /// Reserve the range for skiff: the worker holds each published port
    /// bound, and refuses one another process holds.
    #[arg(long, env = "SKIFF_PORT_RANGE", default_value = "20000-29999",
          value_parser = parse_port_range)]
    pub port_range: (u16, u16),

    /// The host address published ports answer on (0.0.0.0: every address).
    /// Loopback by default: nothing is exposed beyond the host unless the
    /// operator says so.
    #[arg(long, env = "SKIFF_PORT_HOST_IP", default_value = "127.0.0.1")]
    pub port_host_ip: std::net::IpAddr,

    /// Outbound NAT from containers to public addresses through the host's
    /// uplink. Off: containers reach nothing outside their host's bridge.
    #[arg(long, env = "SKIFF_EGRESS_NAT", default_value_t = false,
          action = clap::ArgAction::Set)]
    pub egress_nat: bool,

    /// Tear down every container network of SKIFF_NETWORK_BRIDGE (namespaces,
    /// leases, port rules, the worker's nftables tables, the bridge), then
    /// exit: for decommissioning a host. Running containers lose their network.
    #[arg(long)]
    pub teardown_network: bool,

    /// How long a new run waits for a host port that a finished run on this
    /// host is still releasing.
    #[arg(long, env = "SKIFF_PORT_WAIT_S", default_value_t = 10.0)]
    pub port_wait_s: f64,

    /// How often a pulling container's download progress is reported
    /// (milliseconds; only when it moved).
    #[arg(long, env = "SKIFF_PULL_PROGRESS_MS", default_value_t = 500)]
    pub pull_progress_ms: u64,
}

/// `first-last`, both 1..=65535, first <= last.
fn parse_port_range(value: &str) -> Result<(u16, u16), ConfigError> {
    let error = |problem| ConfigError::PortRange {
        value: value.to_owned(),
        problem,
    };
    let (a, b) = value
        .split_once('-')
        .ok_or_else(|| error("expected first-last, e.g. 20000-29999"))?;
    let port = |s: &str| {
        s.trim()
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| error("ports are 1 to 65535"))
    };
    let (a, b) = (port(a)?, port(b)?);
    if a > b {
        return Err(error("the first port is past the last"));
    }
    Ok((a, b))
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("checkpoint interval {value:?}: {problem}")]
    CheckpointInterval {
        value: String,
        problem: &'static str,
    },
    #[error("host label {entry:?}: {problem}")]
    HostLabel {
        entry: String,
        problem: &'static str,
    },
    #[error("port range {value:?}: {problem}")]
    PortRange {
        value: String,
        problem: &'static str,
    },
    #[error("host labels: at most {}", skiff_core::MAX_LABELS)]
    TooManyHostLabels,
    #[error("{setting}: {source}")]
    Registry {
        setting: &'static str,
        source: crate::egress::RuleError,
    },
}

/// The running-container re-check and meter checkpoint interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CheckpointInterval(Duration);

impl CheckpointInterval {
    /// Shorter than this would only load containerd and the control plane.
    const MIN_S: f64 = 0.05;
    /// The control plane closes a run at its last checkpoint when the task
    /// vanishes, and expects one at least this often.
    const MAX_S: f64 = 10.0;

    pub fn parse(value: &str) -> Result<Self, ConfigError> {
        let error = |problem| ConfigError::CheckpointInterval {
            value: value.to_owned(),
            problem,
        };
        let seconds: f64 = value
            .trim()
            .parse()
            .map_err(|_| error("not a number of seconds"))?;
        if !(Self::MIN_S..=Self::MAX_S).contains(&seconds) {
            return Err(error("must be between 0.05 and 10 seconds"));
        }
        Ok(Self(Duration::from_secs_f64(seconds)))
    }

    pub fn get(self) -> Duration {
        self.0
    }
}

/// Validated operator labels of this host. Keys and values follow the rules
/// the API applies to container labels, so every label a host has can be
/// asked for in a placement.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostLabels(BTreeMap<String, String>);

impl HostLabels {
    /// Parses `k=v,k2=v2`; blanks around entries are ignored, an empty
    /// string is no labels.
    pub fn parse(value: &str) -> Result<Self, ConfigError> {
        let mut labels = BTreeMap::new();
        for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let error = |problem| ConfigError::HostLabel {
                entry: entry.to_owned(),
                problem,
            };
            let (key, label_value) = entry
                .split_once('=')
                .ok_or_else(|| error("not key=value"))?;
            let key = key.trim();
            skiff_core::check_label(key, label_value).map_err(error)?;
            if labels
                .insert(key.to_owned(), label_value.to_owned())
                .is_some()
            {
                return Err(error("key given twice"));
            }
        }
        if labels.len() > skiff_core::MAX_LABELS {
            return Err(ConfigError::TooManyHostLabels);
        }
        Ok(Self(labels))
    }

    pub fn as_map(&self) -> &BTreeMap<String, String> {
        &self.0
    }
}

impl WorkerConfig {
    /// The container network settings, when networks are offered.
    pub fn network(&self) -> Option<crate::net::NetworkConfig> {
        self.network_enabled.then(|| crate::net::NetworkConfig {
            bridge: self.network_bridge.clone(),
            subnet: self.network_subnet,
            plugin_dir: self.cni_plugin_dir.clone(),
            run_dir: self.network_run_dir.join(&self.network_bridge),
            host_ip: self.port_host_ip,
            port_range: self.port_range,
            egress_nat: self.egress_nat,
            port_wait: Duration::from_secs_f64(self.port_wait_s.max(0.0)),
        })
    }

    pub fn host_id(&self) -> String {
        self.host_id.clone().unwrap_or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_owned())
                .unwrap_or_else(|_| "localhost".into())
        })
    }

    pub fn cpu_millis(&self) -> u32 {
        self.cpu_millis.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, |n| n.get()) as u32 * 1000
        })
    }

    pub fn memory_mib(&self) -> u64 {
        self.memory_mib.unwrap_or_else(|| {
            let total_kib = std::fs::read_to_string("/proc/meminfo")
                .ok()
                .and_then(|m| {
                    m.lines()
                        .find(|l| l.starts_with("MemTotal:"))
                        .and_then(|l| l.split_whitespace().nth(1))
                        .and_then(|n| n.parse::<u64>().ok())
                })
                .unwrap_or(2 * 1024 * 1024);
            (total_kib / 1024).saturating_sub(1024)
        })
    }

    pub fn max_concurrent_starts(&self) -> usize {
        self.max_concurrent_starts
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()) * 4)
    }

    /// The egress policy of pulls, from the three registry lists.
    pub fn egress_policy(&self) -> Result<crate::egress::EgressPolicy, ConfigError> {
        let parse = |setting, list| {
            crate::egress::parse_rules(list)
                .map_err(|source| ConfigError::Registry { setting, source })
        };
        Ok(crate::egress::EgressPolicy {
            allow: parse("SKIFF_REGISTRY_ALLOW", &self.registry_allow)?,
            deny: parse("SKIFF_REGISTRY_DENY", &self.registry_deny)?,
            plain_http: parse("SKIFF_INSECURE_REGISTRIES", &self.insecure_registries)?,
        })
    }

    pub fn cgroup_parent(&self) -> String {
        self.cgroup_parent
            .clone()
            .unwrap_or_else(|| format!("/skiff/{}", self.containerd_namespace))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_labels_parse_and_validate() {
        assert_eq!(HostLabels::parse("").unwrap(), HostLabels::default());
        let labels = HostLabels::parse(" zone=a , disk=ssd,empty=").unwrap();
        assert_eq!(
            labels.as_map(),
            &BTreeMap::from([
                ("disk".to_owned(), "ssd".to_owned()),
                ("empty".to_owned(), String::new()),
                ("zone".to_owned(), "a".to_owned()),
            ])
        );
        for bad in ["zone", "=a", "zo ne=a", "zone=a,zone=b", "k=\0"] {
            assert!(
                matches!(HostLabels::parse(bad), Err(ConfigError::HostLabel { .. })),
                "{bad:?} accepted"
            );
        }
        let many: Vec<String> = (0..=skiff_core::MAX_LABELS)
            .map(|i| format!("k{i}=v"))
            .collect();
        assert_eq!(
            HostLabels::parse(&many.join(",")),
            Err(ConfigError::TooManyHostLabels)
        );
    }

    #[test]
    fn checkpoint_interval_is_bounded() {
        assert_eq!(
            CheckpointInterval::parse("5").unwrap().get(),
            Duration::from_secs(5)
        );
        assert_eq!(
            CheckpointInterval::parse("0.25").unwrap().get(),
            Duration::from_millis(250)
        );
        for bad in ["0", "-1", "10.5", "NaN", "inf", "five"] {
            assert!(CheckpointInterval::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn flags_reach_the_config() {
        let config = WorkerConfig::try_parse_from([
            "skiff-worker",
            "--checkpoint-interval-s",
            "1.5",
            "--host-labels",
            "zone=a",
            "--metrics-listen",
            "127.0.0.1:9100",
        ])
        .unwrap();
        assert_eq!(
            config.checkpoint_interval_s.get(),
            Duration::from_millis(1500)
        );
        assert_eq!(
            config.host_labels.as_map().get("zone").map(String::as_str),
            Some("a")
        );
        assert_eq!(
            config.metrics_listen,
            Some("127.0.0.1:9100".parse().unwrap())
        );
        let defaults = WorkerConfig::try_parse_from(["skiff-worker"]).unwrap();
        assert_eq!(defaults.checkpoint_interval_s.get(), Duration::from_secs(5));
        assert!(defaults.host_labels.as_map().is_empty());
        assert_eq!(defaults.metrics_listen, None);
        assert!(WorkerConfig::try_parse_from(["skiff-worker", "--host-labels", "x"]).is_err());
    }

    #[test]
    fn port_ranges() {
        assert_eq!(parse_port_range("20000-29999"), Ok((20000, 29999)));
        assert_eq!(parse_port_range(" 80 - 80 "), Ok((80, 80)));
        for bad in ["", "80", "0-10", "10-9", "1-70000", "a-b"] {
            assert!(parse_port_range(bad).is_err(), "{bad:?}");
        }
    }
}
