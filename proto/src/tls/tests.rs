//! Handshakes between real rustls ends over loopback: who gets in, with
//! which alert the others are refused, and what a request learns.

use super::connect::channel;
use super::incoming::{incoming, TlsConnInfo};
use super::pki::{create_authority, key_and_request, Authority};
use super::*;
use crate::worker_agent_client::WorkerAgentClient;
use crate::worker_agent_server::{WorkerAgent, WorkerAgentServer};
use crate::{ExecRequest, ExecResponse, LogChunk, LogsRequest};
use std::pin::Pin;
use tokio_stream::Stream;

const DAY: Duration = Duration::from_secs(86_400);

/// A CA with a name of its own (two CAs of one name are told apart only by
/// their signatures: the alert is then DecryptError, not UnknownCA).
fn authority() -> Authority {
    let name = format!("test CA {}", hex::encode(rand::random::<[u8; 4]>()));
    let ca = create_authority(&name, DAY).unwrap();
    Authority::load(&ca.cert_pem, &ca.key_pem).unwrap()
}

fn credential(ca: &Authority, role: &Role, lifetime: Duration) -> Arc<Credentials> {
    let (key_pem, csr) = key_and_request().unwrap();
    let issued = ca.issue_for_request(&csr, role, lifetime).unwrap();
    Credentials::new(Credential::from_pem(&issued.cert_pem, &key_pem).unwrap())
}

/// Answers with the role the server saw, as text.
struct Echo;

#[tonic::async_trait]
impl WorkerAgent for Echo {
    type ReadLogsStream = Pin<Box<dyn Stream<Item = Result<LogChunk, tonic::Status>> + Send>>;

    async fn read_logs(
        &self,
        request: tonic::Request<LogsRequest>,
    ) -> Result<tonic::Response<Self::ReadLogsStream>, tonic::Status> {
        let peer = TlsConnInfo::of(&request);
        let seen = match request.get_ref().container_id.as_str() {
            "serial" => peer.map(|p| p.serial.clone()).unwrap_or_default(),
            _ => format!("{:?}", peer.map(|p| p.role.clone())),
        };
        let chunk = LogChunk {
            data: seen.into_bytes(),
        };
        Ok(tonic::Response::new(Box::pin(tokio_stream::iter([Ok(
            chunk,
        )]))))
    }

    async fn exec(
        &self,
        _request: tonic::Request<ExecRequest>,
    ) -> Result<tonic::Response<ExecResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("not in this test"))
    }

    type AttachStream =
        Pin<Box<dyn Stream<Item = Result<crate::AttachOutput, tonic::Status>> + Send>>;

    async fn attach(
        &self,
        _request: tonic::Request<tonic::Streaming<crate::AttachInput>>,
    ) -> Result<tonic::Response<Self::AttachStream>, tonic::Status> {
        Err(tonic::Status::unimplemented("not in this test"))
    }

    async fn pull(
        &self,
        _request: tonic::Request<crate::PullRequest>,
    ) -> Result<tonic::Response<crate::PullResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("not in this test"))
    }
}

async fn serve(ca: &Authority, own: Arc<Credentials>, clients: ClientCerts) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = server_config(ca.trust(), own, clients).unwrap();
    let incoming = incoming(listener, config, |_| {});
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(WorkerAgentServer::new(Echo))
            .serve_with_incoming(incoming),
    );
    format!("https://{addr}")
}

async fn call(
    addr: &str,
    trust: &Authority,
    own: Option<Arc<Credentials>>,
    name: &str,
) -> Result<String, String> {
    let config = client_config(trust.trust(), own).unwrap();
    ask(&channel(addr, config, name, DAY).unwrap(), "role").await
}

/// One call on `channel`: `what` is "role" or "serial" (of the peer as the
/// server saw it).
async fn ask(channel: &tonic::transport::Channel, what: &str) -> Result<String, String> {
    let mut client = WorkerAgentClient::new(channel.clone());
    let result = async {
        let request = LogsRequest {
            container_id: what.to_owned(),
            ..Default::default()
        };
        let mut stream = client.read_logs(request).await?.into_inner();
        let chunk = stream.message().await?.unwrap_or_default();
        Ok::<_, tonic::Status>(String::from_utf8(chunk.data).unwrap())
    }
    .await;
    result.map_err(|status| {
        // The alert is in the source chain of the status.
        let mut text = format!("{status}");
        let mut source: Option<&dyn std::error::Error> = std::error::Error::source(&status);
        while let Some(err) = source {
            text.push_str(&format!(": {err}"));
            source = err.source();
        }
        text
    })
}

#[tokio::test]
async fn only_a_current_certificate_of_our_ca_gets_in_and_the_alert_says_why() {
    let ca = authority();
    let server = credential(&ca, &Role::Host("h1".into()), DAY);
    let addr = serve(&ca, server, ClientCerts::Required).await;
    let host_name = names::host_dns_name("h1");

    // Positive control: the control plane's certificate.
    let cp = credential(&ca, &Role::ControlPlane, DAY);
    let seen = call(&addr, &ca, Some(cp.clone()), &host_name).await;
    assert_eq!(seen.as_deref(), Ok("Some(ControlPlane)"));

    let other = authority();
    let foreign = credential(&other, &Role::ControlPlane, DAY);
    let err = call(&addr, &ca, Some(foreign), &host_name)
        .await
        .unwrap_err();
    assert!(err.contains("UnknownCA"), "{err}");

    let expired = {
        let (key_pem, csr) = key_and_request().unwrap();
        // Issued already expired: valid from a minute ago for no time at all
        // would still be current, so issue for 1 s and wait it out.
        let issued = ca
            .issue_for_request(&csr, &Role::ControlPlane, Duration::from_secs(1))
            .unwrap();
        Credentials::new(Credential::from_pem(&issued.cert_pem, &key_pem).unwrap())
    };
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let err = call(&addr, &ca, Some(expired), &host_name)
        .await
        .unwrap_err();
    assert!(err.contains("CertificateExpired"), "{err}");

    let err = call(&addr, &ca, None, &host_name).await.unwrap_err();
    assert!(err.contains("CertificateRequired"), "{err}");

    // The same credential again: nothing above broke the server.
    assert_eq!(
        call(&addr, &ca, Some(cp.clone()), &host_name)
            .await
            .as_deref(),
        Ok("Some(ControlPlane)")
    );
    // The client checks the server's name: h1's server is not h2.
    let err = call(&addr, &ca, Some(cp), &names::host_dns_name("h2"))
        .await
        .unwrap_err();
    assert!(err.contains("NotValidForName"), "{err}");
}

#[tokio::test]
async fn an_optional_client_certificate_lets_anonymous_clients_in_without_a_peer() {
    let ca = authority();
    let server = credential(&ca, &Role::ControlPlane, DAY);
    let addr = serve(&ca, server, ClientCerts::Optional).await;
    assert_eq!(
        call(&addr, &ca, None, CONTROL_PLANE_NAME).await.as_deref(),
        Ok("None")
    );
    let host = credential(&ca, &Role::Host("h1".into()), DAY);
    assert_eq!(
        call(&addr, &ca, Some(host), CONTROL_PLANE_NAME)
            .await
            .as_deref(),
        Ok("Some(Host(\"h1\"))")
    );
}

#[tokio::test]
async fn a_renewed_credential_is_used_from_the_next_handshake() {
    let ca = authority();
    let server = credential(&ca, &Role::Host("h1".into()), DAY);
    let before = server.current().cert.serial;
    let addr = serve(&ca, server.clone(), ClientCerts::Required).await;
    let cp = credential(&ca, &Role::ControlPlane, DAY);
    let name = names::host_dns_name("h1");
    assert!(call(&addr, &ca, Some(cp.clone()), &name).await.is_ok());
    let renewed = credential(&ca, &Role::Host("h1".into()), DAY);
    server.replace(renewed.current());
    assert_ne!(server.current().cert.serial, before);
    assert!(call(&addr, &ca, Some(cp), &name).await.is_ok());
}

#[test]
fn issued_certificates_read_back_as_issued_and_ignore_the_requested_names() {
    let ca = authority();
    let (_, csr) = key_and_request().unwrap();
    let issued = ca
        .issue_for_request(&csr, &Role::Host("w-2".into()), DAY)
        .unwrap();
    let der = pki::parse_certs(&issued.cert_pem).unwrap();
    let peer = peer_cert(&der[0]).unwrap();
    assert_eq!(peer.role, Role::Host("w-2".into()));
    assert_eq!(peer.serial, issued.serial);
    assert_eq!(peer.not_after, issued.not_after);
    assert!(ca
        .issue_for_request(
            "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
            &Role::ControlPlane,
            DAY
        )
        .is_err());
}

#[test]
fn a_bundle_signs_with_the_certificate_matching_the_key_and_trusts_all() {
    let old = create_authority("old", DAY).unwrap();
    let new = create_authority("new", DAY).unwrap();
    let bundle = format!("{}{}", new.cert_pem, old.cert_pem);
    let ca = Authority::load(&bundle, &old.key_pem).unwrap();
    assert_eq!(ca.trust().len(), 2);
    let unrelated = create_authority("x", DAY).unwrap();
    assert!(matches!(
        Authority::load(&new.cert_pem, &unrelated.key_pem),
        Err(TlsError::KeyNotInBundle)
    ));
}

#[test]
fn a_credential_is_renewed_half_way_through_its_validity() {
    let ca = authority();
    for lifetime in [Duration::from_secs(20), DAY] {
        let cred = credential(&ca, &Role::ControlPlane, lifetime).current();
        let period = cred
            .cert
            .not_after
            .duration_since(cred.cert.not_before)
            .unwrap();
        assert_eq!(cred.cert.renew_at(), cred.cert.not_before + period / 2);
        // Backdating never eats the renewal margin: at least 40% of the
        // lifetime is left at renewal.
        let left = cred
            .cert
            .not_after
            .duration_since(cred.cert.renew_at())
            .unwrap();
        assert!(left >= lifetime * 2 / 5, "{left:?} of {lifetime:?}");
    }
}

#[tokio::test]
async fn a_renewed_client_credential_is_seen_on_the_next_connection_not_resumed() {
    let ca = authority();
    let addr = serve(
        &ca,
        credential(&ca, &Role::Host("h1".into()), DAY),
        ClientCerts::Required,
    )
    .await;
    let cp = credential(&ca, &Role::ControlPlane, DAY);
    let config = client_config(ca.trust(), Some(cp.clone())).unwrap();
    let name = names::host_dns_name("h1");
    let first = ask(
        &channel(&addr, config.clone(), &name, DAY).unwrap(),
        "serial",
    )
    .await;
    assert_eq!(first, Ok(cp.current().cert.serial));
    cp.replace(credential(&ca, &Role::ControlPlane, DAY).current());
    // A new channel (a new connection) with the same client config: a
    // resumed session would still show the first certificate.
    let second = ask(&channel(&addr, config, &name, DAY).unwrap(), "serial").await;
    assert_eq!(second, Ok(cp.current().cert.serial));
    assert_ne!(first, second);
}
