//! The API server's configuration: flags, with `SKIFF_*` environment
//! variables. Every timer is here, so tests can run with short ones and
//! assert against the configuration rather than the wall clock.

use clap::Parser;
use skiff_core::PlacementPolicy;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "skiff-api",
    about = "skiff control plane: REST API, scheduler, worker gRPC endpoint",
    after_help = "Create the worker channel's CA first: skiff-api ca init --dir DIR\n\
Make the secrets keyring: skiff-api secrets new-key --id ID > FILE (then SKIFF_SECRETS_KEYRING_FILE=FILE)"
)]
pub struct ApiConfig {
    /// Address of the REST API.
    #[arg(long, env = "SKIFF_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Address of the gRPC endpoint that workers dial.
    #[arg(long, env = "SKIFF_GRPC_LISTEN", default_value = "127.0.0.1:8081")]
    pub grpc_listen: SocketAddr,

    /// PostgreSQL URL; migrations run at start. Every replica of the API
    /// uses the same database and nothing else to coordinate.
    #[arg(long, env = "SKIFF_DATABASE_URL")]
    pub database_url: String,

    /// Token for admin routes (tenants, hosts, rates, adjustments).
    #[arg(long, env = "SKIFF_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: String,

    /// How often workers heartbeat (seconds; told to them at registration).
    #[arg(long, env = "SKIFF_HEARTBEAT_INTERVAL_S", default_value_t = 2.0)]
    pub heartbeat_interval_s: f64,

    /// A host silent for this long is lost: its containers fail with
    /// HostLost or, when their restart policy says so, run elsewhere.
    #[arg(long, env = "SKIFF_HOST_LOST_AFTER_S", default_value_t = 10.0)]
    pub host_lost_after_s: f64,

    /// The scheduler's fallback period: it also runs at once on every
    /// wake-up (a new container, freed capacity, a new host).
    #[arg(long, env = "SKIFF_SCHEDULER_TICK_S", default_value_t = 1.0)]
    pub scheduler_tick_s: f64,

    /// Among hosts that fit (after image locality): `binpack` fills the
    /// fullest host, `spread` the emptiest.
    #[arg(long, env = "SKIFF_PLACEMENT", default_value = "binpack")]
    pub placement: PlacementPolicy,

    /// Default `max_pending_s` of a request: how long it may wait for
    /// capacity before it fails with NoCapacity.
    #[arg(long, env = "SKIFF_MAX_PENDING_S", default_value_t = 600)]
    pub max_pending_s: u32,

    /// How long a request waits for a database connection before it is
    /// answered 503 (while PostgreSQL is down or overloaded).
    #[arg(long, env = "SKIFF_DB_ACQUIRE_TIMEOUT_S", default_value_t = 2.0)]
    pub db_acquire_timeout_s: f64,

    /// How long assignment changes are kept for workers to resume from;
    /// one that was away longer gets a snapshot.
    #[arg(long, env = "SKIFF_ASSIGNMENT_LOG_KEEP_S", default_value_t = 3600.0)]
    pub assignment_log_keep_s: f64,

    /// How far a worker's clock may be from the database's: a report's
    /// start may be this much before its placement, its times this much in
    /// the future, and no more (further is refused as a forgery).
    #[arg(long, env = "SKIFF_REPORT_CLOCK_SKEW_S", default_value_t = 5.0)]
    pub report_clock_skew_s: f64,

    /// Hosts a `notify_url` may name (exact host names or IPs, comma
    /// separated; `*` for any). Empty: webhooks are refused.
    #[arg(
        long,
        env = "SKIFF_WEBHOOK_ALLOWED_HOSTS",
        default_value = "",
        value_delimiter = ','
    )]
    pub webhook_allowed_hosts: Vec<String>,

    /// First retry of a failed webhook after this long, doubling each time.
    #[arg(long, env = "SKIFF_WEBHOOK_RETRY_BASE_S", default_value_t = 5.0)]
    pub webhook_retry_base_s: f64,

    /// Longest wait between two attempts of a webhook.
    #[arg(long, env = "SKIFF_WEBHOOK_RETRY_MAX_S", default_value_t = 600.0)]
    pub webhook_retry_max_s: f64,

    /// A webhook not delivered within this long is given up.
    #[arg(long, env = "SKIFF_WEBHOOK_GIVE_UP_S", default_value_t = 86_400.0)]
    pub webhook_give_up_s: f64,

    /// How often each replica looks for webhooks to send.
    #[arg(long, env = "SKIFF_WEBHOOK_POLL_S", default_value_t = 1.0)]
    pub webhook_poll_s: f64,

    /// A tenant's default quota (an admin may set its own with
    /// `PUT /v1/admin/tenants/{id}/quota`): vCPU of its live containers.
    #[arg(long, env = "SKIFF_QUOTA_MAX_VCPU", default_value_t = 64.0)]
    pub quota_max_vcpu: f64,

    /// Default quota: MiB of memory of a tenant's live containers.
    #[arg(long, env = "SKIFF_QUOTA_MAX_MEMORY_MIB", default_value_t = 262_144)]
    pub quota_max_memory_mib: i64,

    /// Default quota: a tenant's live containers (not finished, or with a
    /// restart due; job tasks included).
    #[arg(long, env = "SKIFF_QUOTA_MAX_CONTAINERS", default_value_t = 1000)]
    pub quota_max_containers: i64,

    /// Default quota: a tenant's containers waiting for capacity.
    #[arg(long, env = "SKIFF_QUOTA_MAX_PENDING", default_value_t = 1000)]
    pub quota_max_pending: i64,

    /// Default quota: a tenant's unfinished jobs.
    #[arg(long, env = "SKIFF_QUOTA_MAX_JOBS", default_value_t = 100)]
    pub quota_max_jobs: i64,

    /// Default quota: containers of a tenant placed a second on average
    /// (past it they wait in the queue; container starts cost hosts CPU
    /// outside any container's cgroup).
    #[arg(long, env = "SKIFF_QUOTA_MAX_STARTS_PER_S", default_value_t = 50.0)]
    pub quota_max_starts_per_s: f64,

    /// A tenant may start this many seconds' worth of its start rate at
    /// once (at least one start).
    #[arg(long, env = "SKIFF_QUOTA_START_BURST_S", default_value_t = 5.0)]
    pub quota_start_burst_s: f64,

    /// Requests per second a token may sustain on reads (GET, HEAD), for
    /// the whole control plane (see SKIFF_RATE_LIMIT_REPLICAS).
    #[arg(long, env = "SKIFF_RATE_READ_PER_S", default_value_t = 200.0)]
    pub rate_read_per_s: f64,

    /// Reads a token may send at once before the rate applies.
    #[arg(long, env = "SKIFF_RATE_READ_BURST", default_value_t = 1000)]
    pub rate_read_burst: u32,

    /// Requests per second a token may sustain on writes (all but GET, HEAD).
    #[arg(long, env = "SKIFF_RATE_WRITE_PER_S", default_value_t = 20.0)]
    pub rate_write_per_s: f64,

    /// Writes a token may send at once before the rate applies.
    #[arg(long, env = "SKIFF_RATE_WRITE_BURST", default_value_t = 100)]
    pub rate_write_burst: u32,

    /// A rate-limited request is answered after this long at most (the
    /// wait it is told in Retry-After, capped): a client ignoring it
    /// cannot make the server spend its CPU refusing it. 0: at once.
    #[arg(long, env = "SKIFF_RATE_LIMIT_DELAY_S", default_value_t = 1.0)]
    pub rate_limit_delay_s: f64,

    /// API replicas sharing the rate limits: each enforces its 1/N share
    /// of every rate and burst (buckets are per replica, in memory).
    #[arg(long, env = "SKIFF_RATE_LIMIT_REPLICAS", default_value_t = 1)]
    pub rate_limit_replicas: u32,

    /// Longest a request may take (streams excepted: SSE, log follow,
    /// `wait`); past it, 503 `timeout`.
    #[arg(long, env = "SKIFF_REQUEST_TIMEOUT_S", default_value_t = 30.0)]
    pub request_timeout_s: f64,

    /// Requests in progress at once on this replica (streams excepted);
    /// past it, 503 `overloaded` at once.
    #[arg(long, env = "SKIFF_MAX_CONCURRENT_REQUESTS", default_value_t = 1024)]
    pub max_concurrent_requests: usize,

    /// Longest an SSE event stream stays open; the client reconnects with
    /// `Last-Event-ID` and loses nothing.
    #[arg(long, env = "SKIFF_STREAM_MAX_S", default_value_t = 3600.0)]
    pub stream_max_s: f64,

    /// An SSE stream whose client takes no event for this long is closed.
    #[arg(long, env = "SKIFF_STREAM_IDLE_S", default_value_t = 60.0)]
    pub stream_idle_s: f64,

    /// How long a worker report's id is kept to de-duplicate repeats (an
    /// older repeat changes nothing either; see the billing crate).
    #[arg(long, env = "SKIFF_METER_REPORT_KEEP_S", default_value_t = 86_400.0)]
    pub meter_report_keep_s: f64,

    /// A host lost this long ago, with nothing live on it, is forgotten
    /// (revoked hosts are kept).
    #[arg(long, env = "SKIFF_LOST_HOST_KEEP_S", default_value_t = 604_800.0)]
    pub lost_host_keep_s: f64,

    /// A container deleted this long ago (and removed from its host) is
    /// purged: its row, events and meter runs (the usage ledger stays).
    #[arg(long, env = "SKIFF_DELETED_KEEP_S", default_value_t = 604_800.0)]
    pub deleted_keep_s: f64,

    /// How long the tenant event log (`GET /v1/events`) keeps an event.
    #[arg(long, env = "SKIFF_EVENT_LOG_KEEP_S", default_value_t = 2_592_000.0)]
    pub event_log_keep_s: f64,

    /// A tenant may verify its usage ledger at most once in this long.
    #[arg(long, env = "SKIFF_VERIFY_MIN_INTERVAL_S", default_value_t = 10.0)]
    pub verify_min_interval_s: f64,

    /// How long an `Idempotency-Key` and its response are kept.
    #[arg(long, env = "SKIFF_IDEMPOTENCY_KEEP_S", default_value_t = 86_400.0)]
    pub idempotency_keep_s: f64,

    /// Default price per vCPU-second in nano-units (used when the rate card is empty).
    #[arg(long, env = "SKIFF_PRICE_VCPU_SECOND_NANO", default_value_t = 11_300)]
    pub price_vcpu_second_nano: i64,

    /// Default price per GiB-second in nano-units (used when the rate card is empty).
    #[arg(long, env = "SKIFF_PRICE_GIB_SECOND_NANO", default_value_t = 1_240)]
    pub price_gib_second_nano: i64,

    /// The worker channel's CA certificate (PEM; several during a rotation:
    /// all are trusted, the one matching SKIFF_CA_KEY signs). Made by
    /// `skiff-api ca init`.
    #[arg(long, env = "SKIFF_CA_CERT")]
    pub ca_cert: PathBuf,

    /// The CA's private key (PEM, mode 0600: refused if group or others
    /// may read it).
    #[arg(long, env = "SKIFF_CA_KEY")]
    pub ca_key: PathBuf,

    /// The keyring that seals secrets at rest.
    #[command(flatten)]
    pub secrets: SecretsConfig,

    /// Lifetime of the certificates issued to hosts (and of each replica's
    /// own); they are renewed after half of it.
    #[arg(long, env = "SKIFF_HOST_CERT_LIFETIME_S", default_value_t = 2_592_000)]
    pub host_cert_lifetime_s: u64,

    /// Certificate chain (PEM) for TLS on the REST API; with SKIFF_TLS_KEY.
    /// Without both, the REST API is plain HTTP (keep it on loopback).
    #[arg(long, env = "SKIFF_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,

    /// Private key (PEM) for TLS on the REST API.
    #[arg(long, env = "SKIFF_TLS_KEY")]
    pub tls_key: Option<PathBuf>,

    /// Maximum PostgreSQL connections.
    #[arg(long, env = "SKIFF_DB_MAX_CONNECTIONS", default_value_t = 16)]
    pub db_max_connections: u32,

    /// Registries whose images the ACI layer checks when a container group
    /// is created (a manifest request with the request's credentials, so
    /// that an image the registry refuses is answered `InaccessibleImage`
    /// at once): `host[:port]` over HTTPS, `http://host[:port]` over plain
    /// HTTP, comma-separated. Name only registries the workers pull from:
    /// the API server reaches them itself. Empty: no check (a bad image
    /// fails at its pull).
    #[arg(
        long,
        env = "SKIFF_ACI_CHECK_REGISTRIES",
        default_value = "",
        value_delimiter = ','
    )]
    pub aci_check_registries: Vec<String>,
}

/// A setting that would only break later.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    #[error("SKIFF_ADMIN_TOKEN must be at least 16 characters")]
    AdminTokenTooShort,
    #[error("{name} must be a positive number of seconds, not {value}")]
    NotPositive { name: &'static str, value: f64 },
    #[error(
        "SKIFF_HOST_LOST_AFTER_S ({lost_after}) must be at least twice \
         SKIFF_HEARTBEAT_INTERVAL_S ({heartbeat}): one late heartbeat must not lose a host"
    )]
    LostAfterTooShort { lost_after: f64, heartbeat: f64 },
    #[error("SKIFF_MAX_PENDING_S must be 1 to 86400, not {0}")]
    MaxPending(u32),
    #[error("SKIFF_HOST_CERT_LIFETIME_S must be 10 to 31536000 (a year), not {0}")]
    CertLifetime(u64),
    #[error("SKIFF_TLS_CERT and SKIFF_TLS_KEY go together: set both or neither")]
    TlsHalf,
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.max(0.0))
}

impl ApiConfig {
    pub fn host_lost_after(&self) -> Duration {
        secs(self.host_lost_after_s)
    }

    pub fn heartbeat_interval(&self) -> Duration {
        secs(self.heartbeat_interval_s)
    }

    pub fn scheduler_tick(&self) -> Duration {
        secs(self.scheduler_tick_s)
    }

    pub fn db_acquire_timeout(&self) -> Duration {
        secs(self.db_acquire_timeout_s)
    }

    pub fn assignment_log_keep(&self) -> Duration {
        secs(self.assignment_log_keep_s)
    }

    /// Whether a `notify_url` may name `host`.
    pub fn webhook_host_allowed(&self, host: &str) -> bool {
        self.webhook_allowed_hosts
            .iter()
            .map(|h| h.trim())
            .any(|h| h == "*" || (!h.is_empty() && h.eq_ignore_ascii_case(host)))
    }

    pub fn idempotency_keep(&self) -> Duration {
        secs(self.idempotency_keep_s)
    }

    pub fn report_clock_skew(&self) -> chrono::Duration {
        chrono::Duration::milliseconds((self.report_clock_skew_s.max(0.0) * 1000.0) as i64)
    }

    pub fn deleted_keep(&self) -> Duration {
        secs(self.deleted_keep_s)
    }

    pub fn event_log_keep(&self) -> Duration {
        secs(self.event_log_keep_s)
    }

    pub fn lost_host_keep(&self) -> Duration {
        secs(self.lost_host_keep_s)
    }

    pub fn meter_report_keep(&self) -> Duration {
        secs(self.meter_report_keep_s)
    }

    pub fn verify_min_interval(&self) -> Duration {
        secs(self.verify_min_interval_s)
    }

    pub fn request_timeout(&self) -> Duration {
        secs(self.request_timeout_s)
    }

    pub fn stream_max(&self) -> Duration {
        secs(self.stream_max_s)
    }

    pub fn stream_idle(&self) -> Duration {
        secs(self.stream_idle_s)
    }

    pub fn rate_limit_delay(&self) -> Duration {
        Duration::from_secs_f64(self.rate_limit_delay_s.max(0.0))
    }

    /// This replica's share of the read bucket.
    pub fn read_bucket(&self) -> crate::ratelimit::Bucket {
        crate::ratelimit::Bucket {
            per_second: self.rate_read_per_s,
            burst: self.rate_read_burst,
        }
        .share(self.rate_limit_replicas)
    }

    /// This replica's share of the write bucket.
    pub fn write_bucket(&self) -> crate::ratelimit::Bucket {
        crate::ratelimit::Bucket {
            per_second: self.rate_write_per_s,
            burst: self.rate_write_burst,
        }
        .share(self.rate_limit_replicas)
    }

    /// The quota of a tenant without its own.
    pub fn quota_defaults(&self) -> crate::store::quotas::Amounts {
        crate::store::quotas::Amounts {
            vcpu_millis: (self.quota_max_vcpu * 1000.0).round() as i64,
            memory_mib: self.quota_max_memory_mib,
            containers: self.quota_max_containers,
            pending: self.quota_max_pending,
            jobs: self.quota_max_jobs,
        }
    }

    /// How tenants' starts are paced (see `SKIFF_QUOTA_MAX_STARTS_PER_S`).
    pub fn start_pacing(&self) -> crate::store::placement::StartPacing {
        crate::store::placement::StartPacing {
            default_per_s: self.quota_max_starts_per_s.max(0.0),
            burst_s: self.quota_start_burst_s.max(0.0),
        }
    }

    pub fn host_cert_lifetime(&self) -> Duration {
        Duration::from_secs(self.host_cert_lifetime_s)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.admin_token.len() < 16 {
            return Err(ConfigError::AdminTokenTooShort);
        }
        for (name, value) in [
            ("SKIFF_HEARTBEAT_INTERVAL_S", self.heartbeat_interval_s),
            ("SKIFF_HOST_LOST_AFTER_S", self.host_lost_after_s),
            ("SKIFF_SCHEDULER_TICK_S", self.scheduler_tick_s),
            ("SKIFF_DB_ACQUIRE_TIMEOUT_S", self.db_acquire_timeout_s),
            ("SKIFF_ASSIGNMENT_LOG_KEEP_S", self.assignment_log_keep_s),
            ("SKIFF_REPORT_CLOCK_SKEW_S", self.report_clock_skew_s),
            ("SKIFF_IDEMPOTENCY_KEEP_S", self.idempotency_keep_s),
            ("SKIFF_WEBHOOK_RETRY_BASE_S", self.webhook_retry_base_s),
            ("SKIFF_WEBHOOK_RETRY_MAX_S", self.webhook_retry_max_s),
            ("SKIFF_WEBHOOK_GIVE_UP_S", self.webhook_give_up_s),
            ("SKIFF_WEBHOOK_POLL_S", self.webhook_poll_s),
            ("SKIFF_RATE_READ_PER_S", self.rate_read_per_s),
            ("SKIFF_REQUEST_TIMEOUT_S", self.request_timeout_s),
            ("SKIFF_STREAM_MAX_S", self.stream_max_s),
            ("SKIFF_STREAM_IDLE_S", self.stream_idle_s),
            ("SKIFF_RATE_WRITE_PER_S", self.rate_write_per_s),
            ("SKIFF_QUOTA_MAX_STARTS_PER_S", self.quota_max_starts_per_s),
            ("SKIFF_QUOTA_START_BURST_S", self.quota_start_burst_s),
        ] {
            if !(value.is_finite() && value > 0.0) {
                return Err(ConfigError::NotPositive { name, value });
            }
        }
        if self.host_lost_after_s < 2.0 * self.heartbeat_interval_s {
            return Err(ConfigError::LostAfterTooShort {
                lost_after: self.host_lost_after_s,
                heartbeat: self.heartbeat_interval_s,
            });
        }
        if !(1..=86_400).contains(&self.max_pending_s) {
            return Err(ConfigError::MaxPending(self.max_pending_s));
        }
        if !(10..=31_536_000).contains(&self.host_cert_lifetime_s) {
            return Err(ConfigError::CertLifetime(self.host_cert_lifetime_s));
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err(ConfigError::TlsHalf);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(args: &[&str]) -> ApiConfig {
        let mut argv = vec![
            "skiff-api",
            "--database-url",
            "postgres://x",
            "--admin-token",
            "0123456789abcdef",
            "--ca-cert",
            "ca.crt",
            "--ca-key",
            "ca.key",
        ];
        argv.extend_from_slice(args);
        ApiConfig::try_parse_from(argv).unwrap()
    }

    #[test]
    fn defaults_are_valid_and_documented_values() {
        let c = config(&[]);
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(c.heartbeat_interval(), Duration::from_secs(2));
        assert_eq!(c.host_lost_after(), Duration::from_secs(10));
        assert_eq!(c.placement, PlacementPolicy::Binpack);
        assert_eq!(c.max_pending_s, 600);
        assert_eq!(c.host_cert_lifetime(), Duration::from_secs(30 * 86_400));
    }

    #[test]
    fn bad_timers_are_refused() {
        let c = config(&["--heartbeat-interval-s", "2", "--host-lost-after-s", "3"]);
        assert!(matches!(
            c.validate(),
            Err(ConfigError::LostAfterTooShort { .. })
        ));
        let c = config(&["--scheduler-tick-s", "0"]);
        assert!(matches!(c.validate(), Err(ConfigError::NotPositive { .. })));
        let c = config(&["--heartbeat-interval-s", "0.5", "--host-lost-after-s", "3"]);
        assert_eq!(c.validate(), Ok(()), "short test timers are fine");
        assert!(ApiConfig::try_parse_from([
            "skiff-api",
            "--database-url",
            "x",
            "--admin-token",
            "0123456789abcdef",
            "--ca-cert",
            "ca.crt",
            "--ca-key",
            "ca.key",
            "--placement",
            "random"
        ])
        .is_err());
        let c = config(&["--host-cert-lifetime-s", "5"]);
        assert_eq!(c.validate(), Err(ConfigError::CertLifetime(5)));
        let c = config(&["--tls-cert", "x.pem"]);
        assert_eq!(c.validate(), Err(ConfigError::TlsHalf));
    }
}

/// Where the keyring that seals secrets at rest comes from (one of the two
/// is required): see [`crate::secrets`] for its format.
#[derive(Debug, Clone, clap::Args)]
pub struct SecretsConfig {
    /// A file of `<key id>:<base64 of 32 random bytes>` lines (mode 0600);
    /// the first line's key seals new secrets, the others only open older
    /// ones. Make a line with `skiff-api secrets new-key --id ID`.
    #[arg(long, env = "SKIFF_SECRETS_KEYRING_FILE")]
    pub secrets_keyring_file: Option<PathBuf>,

    /// The keyring's text itself, instead of a file.
    #[arg(long, env = "SKIFF_SECRETS_KEYRING", hide_env_values = true)]
    pub secrets_keyring: Option<KeyringText>,
}

impl SecretsConfig {
    pub fn keyring(&self) -> Result<crate::secrets::Keyring, crate::secrets::SecretError> {
        crate::secrets::Keyring::load(
            self.secrets_keyring_file.as_deref(),
            self.secrets_keyring.as_ref().map(|t| t.0.as_str()),
        )
    }
}

/// A keyring given inline: never shown by `Debug`.
#[derive(Clone)]
pub struct KeyringText(zeroize::Zeroizing<String>);

impl std::str::FromStr for KeyringText {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(zeroize::Zeroizing::new(s.to_owned())))
    }
}

impl std::fmt::Debug for KeyringText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}
