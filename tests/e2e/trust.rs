//! The worker channel's trust, from outside: every call of both endpoints
//! needs a current certificate of the pool's CA (and the right one), and a
//! host's credential acts for that host only. (A credential's life, from
//! join to revocation and renewal: `credentials`.)
//!
//! Every refusal sits beside its positive control (the valid credential on
//! the same call) and asserts the specific gRPC status or TLS alert.

use serde_json::{json, Value};
use skiff_e2e::trust::{foreign_ca, mint, status_text};
use skiff_e2e::{eventually, limit, secs, Host, Platform, HOST_LABEL};
use skiff_proto as pb;
use skiff_proto::tls::{Credentials, Role};
use std::sync::Arc;
use std::time::Duration;
use tonic::Code;

/// What a refused call must show.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Refused {
    Status(Code),
    /// A TLS alert, as rustls names it (in the transport error's sources).
    Alert(&'static str),
}

pub(crate) fn check(call: &str, result: Result<(), tonic::Status>, want: Refused) {
    let status = match result {
        Ok(()) => panic!("{call}: accepted, but should be refused with {want:?}"),
        Err(status) => status,
    };
    let text = status_text(&status);
    match want {
        Refused::Status(code) => assert_eq!(status.code(), code, "{call}: {text}"),
        Refused::Alert(alert) => assert!(
            text.contains(&format!("received fatal alert: {alert}")),
            "{call}: want the TLS alert {alert}, got: {text}"
        ),
    }
}

/// Every call of the workers' endpoint but Join, each as harmless as it can
/// be (they are only made with credentials that must be refused).
pub(crate) async fn every_control_plane_call(
    platform: &Platform,
    own: Option<Arc<Credentials>>,
) -> Vec<(&'static str, Result<(), tonic::Status>)> {
    let mut client = platform.control_plane_client(own);
    let unknown = uuid::Uuid::new_v4().to_string();
    vec![
        (
            "Renew",
            client
                .renew(pb::RenewRequest {
                    csr_pem: skiff_proto::tls::pki::key_and_request().unwrap().1,
                })
                .await
                .map(|_| ()),
        ),
        (
            "Register",
            client
                .register(pb::RegisterRequest {
                    agent_addr: "127.0.0.1:9".into(),
                    ..Default::default()
                })
                .await
                .map(|_| ()),
        ),
        (
            "Heartbeat",
            client
                .heartbeat(pb::HeartbeatRequest::default())
                .await
                .map(|_| ()),
        ),
        (
            "WatchAssignments",
            first_step(&mut client).await.map(|_| ()),
        ),
        (
            "ReportStatus",
            client
                .report_status(pb::StatusReport {
                    container_id: unknown.clone(),
                    generation: 1,
                    ..Default::default()
                })
                .await
                .map(|_| ()),
        ),
        (
            "ReportUsage",
            client
                .report_usage(pb::UsageCheckpoint {
                    report_id: format!("{unknown}:1:0"),
                    container_id: unknown,
                    generation: 1,
                    observed_at_unix_ms: chrono::Utc::now().timestamp_millis(),
                    ..Default::default()
                })
                .await
                .map(|_| ()),
        ),
    ]
}

type ControlPlaneClient = pb::control_plane_client::ControlPlaneClient<tonic::transport::Channel>;

/// Opens an assignment stream and reads its first message (a snapshot).
async fn first_step(
    client: &mut ControlPlaneClient,
) -> Result<pb::AssignmentUpdate, tonic::Status> {
    let mut stream = client
        .watch_assignments(pb::WatchRequest { from_revision: 0 })
        .await?
        .into_inner();
    stream
        .message()
        .await?
        .ok_or_else(|| tonic::Status::aborted("the stream ended without a message"))
}

/// The containers in a host's snapshot, read with `own`.
async fn snapshot_ids(platform: &Platform, own: Arc<Credentials>) -> Vec<String> {
    let mut client = platform.control_plane_client(Some(own));
    let mut stream = client
        .watch_assignments(pb::WatchRequest { from_revision: 0 })
        .await
        .expect("watch with the host's own credential")
        .into_inner();
    let mut ids = Vec::new();
    loop {
        let step = stream.message().await.expect("a step").expect("a message");
        assert!(step.snapshot);
        ids.extend(step.assignments.into_iter().map(|a| a.container_id));
        if !step.more {
            return ids;
        }
    }
}

pub(crate) async fn agent_addr(platform: &Platform, host: &Host) -> String {
    let pool = sqlx::PgPool::connect(&platform.database_url).await.unwrap();
    sqlx::query_scalar("SELECT agent_addr FROM hosts WHERE id = $1")
        .bind(&host.id)
        .fetch_one(&pool)
        .await
        .unwrap()
}

/// Reads a container's logs from a host's agent, presenting `own`.
pub(crate) async fn read_logs(
    platform: &Platform,
    host: &Host,
    addr: &str,
    own: Option<Arc<Credentials>>,
    container: &str,
) -> Result<String, tonic::Status> {
    let mut client = host.agent_client(platform, own, addr);
    let mut stream = client
        .read_logs(pb::LogsRequest {
            container_id: container.to_owned(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let mut out = Vec::new();
    while let Some(chunk) = stream.message().await? {
        out.extend(chunk.data);
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

fn pinned(platform: &Platform, host: &Host, command: &[&str]) -> Value {
    let mut spec = platform.spec(command);
    spec["placement"] = json!({ "host_labels": { HOST_LABEL: host.name } });
    spec
}

#[tokio::test]
async fn every_call_of_both_endpoints_needs_a_current_certificate_of_the_pools_ca() {
    limit(secs(120), async {
        let platform = Platform::get().await;
        let t = platform.new_tenant().await;
        let host = &platform.hosts[0];
        let id = t
            .create_id(&pinned(platform, host, &["echo", "mtls-control"]))
            .await;
        t.wait_exited_in(&id, "succeeded").await;
        let addr = agent_addr(platform, host).await;
        let ca = platform.authority();
        let control_plane = mint(&ca, &Role::ControlPlane, Duration::from_secs(600));
        let foreign = mint(
            &foreign_ca(),
            &Role::Host(host.id.clone()),
            Duration::from_secs(600),
        );
        let expired = mint(&ca, &Role::Host(host.id.clone()), Duration::from_secs(1));
        let expired_cp = mint(&ca, &Role::ControlPlane, Duration::from_secs(1));

        // Positive controls: the host's own credential on the harmless
        // calls, the control plane's on the agent.
        let own = host.credential();
        let mut client = platform.control_plane_client(Some(own.clone()));
        first_step(&mut client)
            .await
            .expect("the host's own credential watches");
        client
            .report_status(pb::StatusReport {
                container_id: uuid::Uuid::new_v4().to_string(),
                generation: 1,
                ..Default::default()
            })
            .await
            .expect("the host's own credential reports");
        let logs = read_logs(platform, host, &addr, Some(control_plane.clone()), &id).await;
        assert_eq!(
            logs.map_err(|s| status_text(&s)).as_deref(),
            Ok("mtls-control\n"),
            "the control plane's credential reads logs from the agent"
        );

        // Wait out the short-lived ones.
        tokio::time::sleep(Duration::from_millis(2100)).await;
        // (what, credential on the control plane, its refusal, on the agent, its refusal)
        type Case = (
            &'static str,
            Option<Arc<Credentials>>,
            Refused,
            Option<Arc<Credentials>>,
            Refused,
        );
        let cases: [Case; 3] = [
            (
                "no certificate",
                None,
                Refused::Status(Code::Unauthenticated),
                None,
                Refused::Alert("CertificateRequired"),
            ),
            (
                "another CA's certificate",
                Some(foreign.clone()),
                Refused::Alert("UnknownCA"),
                Some(foreign),
                Refused::Alert("UnknownCA"),
            ),
            (
                "an expired certificate",
                Some(expired),
                Refused::Alert("CertificateExpired"),
                Some(expired_cp),
                Refused::Alert("CertificateExpired"),
            ),
        ];
        for (what, own, want, agent_own, agent_want) in cases {
            for (call, result) in every_control_plane_call(platform, own).await {
                check(&format!("{call} with {what}"), result, want);
            }
            let logs = read_logs(platform, host, &addr, agent_own, &id)
                .await
                .map(|_| ());
            check(&format!("ReadLogs with {what}"), logs, agent_want);
        }
        let metrics = reqwest::get(format!("{}/metrics", platform.api_url))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            metrics.contains("skiff_worker_tls_handshakes_refused_total{reason=\"expired\"}")
                && metrics.contains("skiff_worker_calls_refused_total{reason=\"no_certificate\"}"),
            "refusals are counted:\n{metrics}"
        );
        // And nothing above hurt the valid credential.
        first_step(&mut platform.control_plane_client(Some(own)))
            .await
            .expect("the host's own credential still watches");
    })
    .await
}

#[tokio::test]
async fn a_hosts_credential_watches_and_reads_for_that_host_only() {
    limit(secs(120), async {
        let platform = Platform::get().await;
        let t = platform.new_tenant().await;
        let (a, b) = (&platform.hosts[0], &platform.hosts[1]);
        let id = t
            .create_id(&pinned(platform, a, &["sh", "-c", "echo on-a; sleep 600"]))
            .await;
        t.wait(&id, "running", 60).await;
        // Watching takes no host id: each credential sees its own host's set.
        let seen_by_a = snapshot_ids(platform, a.credential()).await;
        assert!(seen_by_a.contains(&id), "{id} not in {seen_by_a:?}");
        let seen_by_b = snapshot_ids(platform, b.credential()).await;
        assert!(!seen_by_b.contains(&id), "host b saw host a's {id}");

        // Logs: the control plane's credential reads them from a's agent;
        // b's credential, from the same CA, is refused.
        let addr = agent_addr(platform, a).await;
        let control_plane = mint(
            &platform.authority(),
            &Role::ControlPlane,
            Duration::from_secs(600),
        );
        let logs = eventually("the echo in the logs", Duration::from_secs(30), || async {
            let logs = read_logs(platform, a, &addr, Some(control_plane.clone()), &id).await;
            logs.ok().filter(|l| l.contains("on-a"))
        })
        .await;
        assert_eq!(logs, "on-a\n");
        let refused = read_logs(platform, a, &addr, Some(b.credential()), &id)
            .await
            .map(|_| ());
        check(
            "ReadLogs with another host's credential",
            refused,
            Refused::Status(Code::PermissionDenied),
        );
        // An agent is dialed by name: a's address does not pass for b.
        let wrong = read_logs(platform, b, &addr, Some(control_plane), &id)
            .await
            .map(|_| ());
        let text = wrong
            .map_err(|s| status_text(&s))
            .expect_err("a's agent is not b's");
        assert!(text.contains("NotValidForName"), "{text}");
        t.delete(&id).await;
    })
    .await
}
