//! Completion webhooks: a loopback receiver gets the final object, signed
//! with the tenant's secret; one that fails twice gets it on the third try,
//! even with the API replica SIGKILLed after the first failure; the
//! delivery log says so; bad destinations are refused beside an accepted
//! one.

use hmac::{Hmac, Mac};
use reqwest::Method;
use serde_json::{json, Value};
use sha2::Sha256;
use skiff_e2e::{eventually, limit, secs, Platform};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Debug, Clone)]
struct Received {
    headers: HashMap<String, String>,
    body: Vec<u8>,
    answered: u16,
}

/// A bare HTTP/1.1 receiver on loopback that answers 500 to its first
/// `fail_first` requests and 200 after.
async fn receiver(fail_first: usize) -> (String, Arc<Mutex<Vec<Received>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let got: Arc<Mutex<Vec<Received>>> = Arc::default();
    let log = got.clone();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let mut buffer = Vec::new();
                let mut chunk = [0u8; 4096];
                let head_end = loop {
                    let n = conn.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buffer.extend_from_slice(&chunk[..n]);
                    if let Some(i) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                        break i + 4;
                    }
                };
                let head = String::from_utf8_lossy(&buffer[..head_end]).to_string();
                let headers: HashMap<String, String> = head
                    .lines()
                    .skip(1)
                    .filter_map(|l| l.split_once(':'))
                    .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
                    .collect();
                let length: usize = headers
                    .get("content-length")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                while buffer.len() < head_end + length {
                    let n = conn.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    buffer.extend_from_slice(&chunk[..n]);
                }
                let body = buffer[head_end..].to_vec();
                let answered = {
                    let mut log = log.lock().unwrap();
                    let answered = if log.len() < fail_first { 500 } else { 200 };
                    log.push(Received {
                        headers,
                        body,
                        answered,
                    });
                    answered
                };
                let reply = format!(
                    "HTTP/1.1 {answered} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                );
                let _ = conn.write_all(reply.as_bytes()).await;
            });
        }
    });
    (url, got)
}

/// Checks `Skiff-Signature: t=..,v1=..` against HMAC-SHA256("<t>.<body>").
fn signed_by(secret: &str, received: &Received) -> bool {
    let Some(header) = received.headers.get("skiff-signature") else {
        return false;
    };
    let parts: HashMap<&str, &str> = header
        .split(',')
        .filter_map(|p| p.split_once('='))
        .collect();
    let (Some(t), Some(v1)) = (parts.get("t"), parts.get("v1")) else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(&received.body);
    hex::encode(mac.finalize().into_bytes()) == *v1
}

#[tokio::test]
async fn a_signed_webhook_reaches_a_failing_receiver_on_its_third_try_across_a_replica_kill() {
    limit(secs(150), async {
        let platform = Platform::get().await;
        let t = platform.new_exclusive_tenant().await;
        let secret = t.call(Method::POST, "/v1/webhook-secret", None).await;
        assert_eq!(secret.status, 201, "{secret:?}");
        let secret = secret.json()["secret"].as_str().unwrap().to_owned();

        let (url, got) = receiver(2).await;
        // Refused destinations, beside the accepted one below.
        for (bad, why) in [
            ("ftp://127.0.0.1/hook", "not http"),
            ("http://skiff.invalid/hook", "not an allowed host"),
        ] {
            let mut spec = platform.spec(&["echo", "x"]);
            spec["notify_url"] = json!(bad);
            let reply = t.create(&spec).await;
            assert_eq!(reply.status, 400, "{why}: {reply:?}");
            assert_eq!(reply.problem()["field"], "notify_url", "{why}");
        }
        let mut spec = platform.spec(&["echo", "done"]);
        spec["notify_url"] = json!(url);
        let id = t.create_id(&spec).await;
        t.wait_exited_in(&id, "succeeded").await;

        eventually(
            "the first (failed) attempt",
            Duration::from_secs(30),
            || async { (!got.lock().unwrap().is_empty()).then_some(()) },
        )
        .await;
        platform.kill_api(1);
        let delivered = eventually(
            "a delivery answered 200",
            Duration::from_secs(60),
            || async {
                let log = got.lock().unwrap().clone();
                log.iter().any(|r| r.answered == 200).then_some(log)
            },
        )
        .await;
        platform.respawn_api(1).await;

        assert_eq!(delivered.len(), 3, "two failures, then the success");
        for received in &delivered {
            assert!(signed_by(&secret, received), "bad signature: {received:?}");
            assert_eq!(
                received.body, delivered[0].body,
                "every attempt sends the same object"
            );
            assert_eq!(
                received.headers.get("skiff-delivery"),
                delivered[0].headers.get("skiff-delivery")
            );
        }
        assert!(
            !signed_by("whsec_wrong", &delivered[0]),
            "the check can fail"
        );
        let object: Value = serde_json::from_slice(&delivered[0].body).unwrap();
        assert_eq!(object["id"], id.as_str());
        assert_eq!(object["state"], "succeeded");

        // One delivery per terminal state: nothing more comes.
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(got.lock().unwrap().len(), 3);
        let log = t
            .call(
                Method::GET,
                &format!("/v1/containers/{id}/deliveries"),
                None,
            )
            .await;
        assert_eq!(log.status, 200, "{log:?}");
        let items = log.json()["items"].as_array().unwrap().clone();
        assert_eq!(items.len(), 1, "{items:?}");
        assert_eq!(items[0]["state"], "delivered");
        assert_eq!(items[0]["attempts"], 3);
        assert_eq!(items[0]["last_status"], 200);
    })
    .await
}

#[tokio::test]
async fn a_job_sends_one_signed_delivery_of_its_final_object() {
    limit(secs(120), async {
        let platform = Platform::get().await;
        let t = platform.new_tenant().await;
        let (url, got) = receiver(0).await;
        let mut template = platform.spec(&["true"]);
        template["cpu"] = json!(0.1);
        template["memory_mib"] = json!(64);
        let body = json!({"template": template, "count": 3, "notify_url": url});
        // Refused before the tenant has a secret to sign with; accepted after.
        let unsigned = t.call(Method::POST, "/v1/jobs", Some(&body)).await;
        assert_eq!(unsigned.status, 400, "{unsigned:?}");
        assert_eq!(unsigned.problem()["field"], "notify_url");
        let secret = t.call(Method::POST, "/v1/webhook-secret", None).await;
        assert_eq!(secret.status, 201, "{secret:?}");
        let secret = secret.json()["secret"].as_str().unwrap().to_owned();
        let created = t.call(Method::POST, "/v1/jobs", Some(&body)).await;
        assert_eq!(created.status, 201, "{created:?}");
        let job = created.json();
        assert_eq!(job["notify_url"], url.as_str());
        let id = job["id"].as_str().unwrap().to_owned();

        let received = eventually("the job's delivery", Duration::from_secs(60), || async {
            got.lock().unwrap().first().cloned()
        })
        .await;
        assert!(signed_by(&secret, &received), "bad signature: {received:?}");
        let object: Value = serde_json::from_slice(&received.body).unwrap();
        assert_eq!(object["id"], id.as_str());
        assert_eq!(object["state"], "succeeded", "{object}");
        assert_eq!(object["tasks"]["succeeded"], 3, "{object}");

        let log = eventually("the delivery logged", Duration::from_secs(30), || async {
            let log = t
                .call(Method::GET, &format!("/v1/jobs/{id}/deliveries"), None)
                .await;
            assert_eq!(log.status, 200, "{log:?}");
            let items = log.json()["items"].as_array().unwrap().clone();
            (items.first().map(|d| d["state"] == "delivered") == Some(true)).then_some(items)
        })
        .await;
        assert_eq!(log.len(), 1, "{log:?}");
        assert_eq!(log[0]["attempts"], 1);
        assert!(log[0].get("run").is_none(), "{log:?}");
        // One delivery per terminal state: nothing more comes.
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(got.lock().unwrap().len(), 1);
    })
    .await
}
