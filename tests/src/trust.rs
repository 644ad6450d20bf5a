//! Credentials for tests that speak the worker channel themselves: a host's
//! own (read from its worker's state dir), ones minted with the pool's CA
//! (expired, the control plane's) or with another CA, and clients of both
//! endpoints made with any of them, or with none.

use crate::{Host, Platform};
use skiff_proto as pb;
use skiff_proto::tls::{self, connect, pki, Credential, Credentials, Role};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tonic::transport::Channel;

/// The pool's CA files (`skiff-api ca init`).
#[derive(Debug, Clone)]
pub struct CaFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl CaFiles {
    pub fn authority(&self) -> pki::Authority {
        let read = |p: &PathBuf| std::fs::read_to_string(p).expect("reading the pool's CA");
        pki::Authority::load(&read(&self.cert), &read(&self.key)).expect("loading the pool's CA")
    }
}

/// A credential for `role` from `ca`, valid for `lifetime`.
pub fn mint(ca: &pki::Authority, role: &Role, lifetime: Duration) -> Arc<Credentials> {
    let (issued, key) = ca.issue_with_new_key(role, lifetime).expect("issuing");
    Credentials::new(Credential::from_pem(&issued.cert_pem, &key).expect("credential"))
}

/// A CA that is not the pool's.
pub fn foreign_ca() -> pki::Authority {
    let name = format!("e2e foreign CA {}", uuid::Uuid::new_v4().simple());
    let ca = pki::create_authority(&name, Duration::from_secs(3600)).expect("a CA");
    pki::Authority::load(&ca.cert_pem, &ca.key_pem).expect("loading it")
}

/// The whole chain of a status: the TLS alert is in its sources.
pub fn status_text(status: &tonic::Status) -> String {
    let mut text = format!("{status}");
    let mut source = std::error::Error::source(status);
    while let Some(err) = source {
        text.push_str(&format!(": {err}"));
        source = err.source();
    }
    text
}

impl Host {
    /// The certificate and key this host's worker keeps in its state dir.
    pub fn credential(&self) -> Arc<Credentials> {
        let pem = std::fs::read_to_string(self.state_dir.join("identity/host.pem"))
            .expect("reading the worker's host.pem");
        Credentials::new(Credential::from_pem(&pem, &pem).expect("the worker's credential"))
    }

    /// A client of this host's agent endpoint (logs) presenting `own`.
    pub fn agent_client(
        &self,
        platform: &Platform,
        own: Option<Arc<Credentials>>,
        agent_addr: &str,
    ) -> pb::worker_agent_client::WorkerAgentClient<Channel> {
        let trust = pki::parse_certs(&std::fs::read_to_string(&platform.ca.cert).unwrap()).unwrap();
        let config = tls::client_config(&trust, own).unwrap();
        let channel = connect::channel(
            &format!("https://{agent_addr}"),
            config,
            &tls::names::host_dns_name(&self.id),
            Duration::from_secs(3),
        )
        .unwrap();
        pb::worker_agent_client::WorkerAgentClient::new(channel)
    }
}

impl Platform {
    pub fn authority(&self) -> pki::Authority {
        self.ca.authority()
    }

    /// A client of replica 1's workers' endpoint presenting `own` (none:
    /// an anonymous TLS client, as a joining worker is), trusting `trust`
    /// (default: the pool's CA).
    pub fn control_plane_client(
        &self,
        own: Option<Arc<Credentials>>,
    ) -> pb::control_plane_client::ControlPlaneClient<Channel> {
        let trust = pki::parse_certs(&std::fs::read_to_string(&self.ca.cert).unwrap()).unwrap();
        let config = tls::client_config(&trust, own).unwrap();
        let channel = connect::channel(
            &self.grpc_url,
            config,
            tls::CONTROL_PLANE_NAME,
            Duration::from_secs(3),
        )
        .unwrap();
        pb::control_plane_client::ControlPlaneClient::new(channel)
    }
}

/// How a worker process run by [`Platform::run_joining_worker`] ended.
#[derive(Debug)]
pub struct WorkerRun {
    pub status: std::process::ExitStatus,
    /// Its stdout and stderr.
    pub output: String,
    /// Its state dir (where a joined worker keeps `identity/host.pem`).
    pub state_dir: PathBuf,
}

impl Platform {
    /// Runs a `skiff-worker` that must join with `token` (a fresh state
    /// dir) and has no containerd: it ends right after its join, refused
    /// (the error says why) or granted (then failing on containerd).
    pub async fn run_joining_worker(&self, token: &str, name: &str) -> WorkerRun {
        let bin = crate::startup::binary_dir()
            .expect("the binaries")
            .join("skiff-worker");
        let state_dir = self
            .run_dir
            .join(format!("joining-{name}-{}", uuid::Uuid::new_v4().simple()));
        let mut command = tokio::process::Command::new(bin);
        for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("SKIFF_")) {
            command.env_remove(key);
        }
        command
            .env("SKIFF_CONTROL_PLANE", &self.grpc_url)
            .env("SKIFF_CA_CERT", &self.ca.cert)
            .env("SKIFF_JOIN_TOKEN", token)
            .env("SKIFF_HOST_ID", name)
            .env("SKIFF_STATE_DIR", &state_dir)
            .env("SKIFF_AGENT_LISTEN", "127.0.0.1:0")
            .env(
                "SKIFF_CONTAINERD_SOCKET",
                state_dir.join("no-containerd.sock"),
            )
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .kill_on_drop(true);
        let out = tokio::time::timeout(Duration::from_secs(60), command.output())
            .await
            .expect("the joining worker ended within 60 s")
            .expect("running skiff-worker");
        WorkerRun {
            status: out.status,
            output: format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
            state_dir,
        }
    }

    /// Creates a join token through the admin API; returns (id, secret).
    pub async fn join_token(&self, uses: u32, expires_in_s: u32) -> (String, String) {
        let reply = self
            .admin(
                reqwest::Method::POST,
                "/v1/admin/join-tokens",
                Some(&serde_json::json!({"uses": uses, "expires_in_s": expires_in_s})),
            )
            .await
            .expect("POST /v1/admin/join-tokens");
        assert_eq!(reply.status, 201, "{reply:?}");
        let body = reply.json();
        (
            body["id"].as_str().unwrap().to_owned(),
            body["token"].as_str().unwrap().to_owned(),
        )
    }

    /// The text of every API replica's log (audit lines included).
    pub fn api_logs(&self) -> String {
        self.apis
            .iter()
            .filter_map(|api| api.service.lock().ok().map(|s| s.log_file.clone()))
            .map(|f| std::fs::read_to_string(f).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }
}
