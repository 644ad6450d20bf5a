//! The egress policy of pulls: a tenant names the registry, the operator
//! decides what a worker may reach. Refused pulls (cloud metadata, loopback
//! not named, the deny list by name and by network) fail `ImagePullFailed`
//! with a message naming the policy, beside a pull from the named registry
//! that succeeds; and a registry the operator allows cannot redirect a pull
//! to an address the policy refuses (every connection is checked), while a
//! redirect within the allowed registry is followed.

use serde_json::json;
use skiff_e2e::{limit, push_extra_image, secs, DENIED_REGISTRY, REDIRECTING_REGISTRY_HOST};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

#[tokio::test]
async fn pulls_the_egress_policy_refuses_fail_naming_it_beside_one_it_allows() {
    limit(secs(120), async {
        let t = crate::tenant().await;
        // The control: a pull (an image no other test of this pool pushes:
        // their digests depend on the extra layer's size only, and the
        // locality test needs its 1 MiB one absent) from the registry the
        // hosts name, through the egress proxy.
        let image = push_extra_image(t.platform, "skiff/e2e-egress-ok:1", 2).await;
        let mut spec = t.platform.spec(&["echo", "pulled"]);
        spec["image"] = json!(image);
        let ok = t.create_id(&spec).await;

        let refused = [
            ("169.254.169.254/skiff/busybox:latest", "link-local"),
            ("127.0.0.1:1/skiff/busybox:latest", "loopback"),
            (
                &format!("{DENIED_REGISTRY}/skiff/busybox:latest") as &str,
                "SKIFF_REGISTRY_DENY",
            ),
            ("198.51.100.7/skiff/busybox:latest", "198.51.100.0/24"),
        ];
        let mut ids = Vec::new();
        for (image, _) in &refused {
            let mut spec = t.platform.spec(&["echo", "never"]);
            spec["image"] = json!(image);
            ids.push(t.create_id(&spec).await);
        }
        for ((image, words), id) in refused.iter().zip(&ids) {
            let done = t.wait_exited_in(id, "failed").await;
            let diag = t.diag(id).await;
            assert_eq!(done["reason"], "ImagePullFailed", "{image}: {diag}");
            let message = done["message"].as_str().unwrap_or_default();
            assert!(
                message.contains("egress policy") && message.contains(words),
                "{image}: {message}"
            );
        }
        t.wait_exited_in(&ok, "succeeded").await;
        assert_eq!(t.logs(&ok).await.trim(), "pulled");
    })
    .await
}

/// A registry stub: answers `/v2/` with 200 and every other request with a
/// redirect to `location` (or 404 when there is none), counting requests.
async fn stub(ip: &str, location: Option<String>) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind((ip, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let counter = counter.clone();
            let location = location.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let n = s.read(&mut buf).await.unwrap_or(0);
                counter.fetch_add(1, Ordering::SeqCst);
                let head = String::from_utf8_lossy(&buf[..n]);
                let reply = if head.starts_with("GET /v2/ ") {
                    "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}"
                        .to_string()
                } else if let Some(location) = location {
                    format!(
                        "HTTP/1.1 307 Temporary Redirect\r\nlocation: {location}\r\n\
                         content-length: 0\r\nconnection: close\r\n\r\n"
                    )
                } else {
                    "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                        .to_string()
                };
                let _ = s.write_all(reply.as_bytes()).await;
            });
        }
    });
    (addr, hits)
}

#[tokio::test]
async fn an_allowed_registry_cannot_redirect_a_pull_to_an_address_the_policy_refuses() {
    limit(secs(120), async {
        let t = crate::tenant().await;
        // Two loopback targets: 127.0.0.5 is named by no host's policy, a
        // second stub on the allowed address is.
        let (forbidden, forbidden_hits) = stub("127.0.0.5", None).await;
        let (allowed_target, allowed_hits) = stub(REDIRECTING_REGISTRY_HOST, None).await;
        let (to_forbidden, _) = stub(
            REDIRECTING_REGISTRY_HOST,
            Some(format!("http://{forbidden}/v2/x/manifests/1")),
        )
        .await;
        let (to_allowed, _) = stub(
            REDIRECTING_REGISTRY_HOST,
            Some(format!("http://{allowed_target}/v2/x/manifests/1")),
        )
        .await;

        let mut outcomes = Vec::new();
        for registry in [&to_allowed, &to_forbidden] {
            let mut spec = t.platform.spec(&["echo", "never"]);
            spec["image"] = json!(format!("{registry}/x:1"));
            let id = t.create_id(&spec).await;
            let done = t.wait_exited_in(&id, "failed").await;
            assert_eq!(done["reason"], "ImagePullFailed", "{}", t.diag(&id).await);
            outcomes.push(done["message"].as_str().unwrap_or_default().to_owned());
        }
        // Followed within the allowed registry (the control: the redirect
        // reached its target, which had no such manifest) ...
        assert!(allowed_hits.load(Ordering::SeqCst) >= 1, "{outcomes:?}");
        // ... and stopped before the refused address: nothing reached it.
        assert_eq!(forbidden_hits.load(Ordering::SeqCst), 0, "{outcomes:?}");
        assert!(
            t.platform
                .service_logs()
                .contains(&format!("{forbidden} is refused by the egress policy")),
            "the proxy's refusal is logged: {outcomes:?}"
        );
    })
    .await
}
