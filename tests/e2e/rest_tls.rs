//! TLS on the public REST API: a replica started with `SKIFF_TLS_CERT` and
//! `SKIFF_TLS_KEY` serves HTTPS (and nothing in plain HTTP), and one whose
//! key others may read does not start.

use skiff_e2e::{eventually, limit, secs, Platform};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Duration;

/// A self-signed certificate for 127.0.0.1, written with its key (`mode`).
fn server_certificate(dir: &PathBuf, mode: u32) -> (PathBuf, PathBuf, reqwest::Certificate) {
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    std::fs::create_dir_all(dir).unwrap();
    let (cert, key) = (dir.join("rest.crt"), dir.join("rest.key"));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(mode)).unwrap();
    let trusted = reqwest::Certificate::from_pem(certified.cert.pem().as_bytes()).unwrap();
    (cert, key, trusted)
}

#[tokio::test]
async fn the_rest_api_serves_tls_when_given_a_certificate() {
    limit(secs(120), async {
        let platform = Platform::trust().await;
        let t = platform.new_tenant().await;
        let dir = platform
            .run_dir
            .join(format!("rest-tls-{}", uuid::Uuid::new_v4().simple()));
        let (cert, key, trusted) = server_certificate(&dir, 0o600);
        let mut api = platform.extra_api(
            "api-rest-tls",
            &[
                ("SKIFF_TLS_CERT", cert.display().to_string()),
                ("SKIFF_TLS_KEY", key.display().to_string()),
            ],
        );
        let https = reqwest::Client::builder()
            .add_root_certificate(trusted)
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        let base = format!("https://{}", api.address);
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            assert!(api.exited().is_none(), "the replica exited:\n{}", api.log());
            let ready = https.get(format!("{base}/readyz")).send().await;
            if ready.is_ok_and(|r| r.status() == 200) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "not ready:\n{}",
                api.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // A tenant's call over HTTPS.
        let listed = https
            .get(format!("{base}/v1/containers"))
            .bearer_auth(&t.token)
            .send()
            .await
            .unwrap();
        assert_eq!(listed.status(), 200);
        // Plain HTTP to the same port is not served.
        let plain = reqwest::Client::new()
            .get(format!("http://{}/healthz", api.address))
            .timeout(Duration::from_secs(5))
            .send()
            .await;
        assert!(
            plain.map(|r| r.status() != 200).unwrap_or(true),
            "plain HTTP served"
        );
        // A client that does not trust the certificate is refused.
        let untrusting = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap()
            .get(format!("{base}/healthz"))
            .send()
            .await;
        let err = untrusting.expect_err("an unknown certificate is not trusted");
        assert!(format!("{err:?}").contains("UnknownIssuer"), "{err:?}");

        // A key others may read: the replica refuses to start.
        let (cert, key, _) = server_certificate(&dir.join("open"), 0o644);
        let mut open = platform.extra_api(
            "api-rest-tls-open-key",
            &[
                ("SKIFF_TLS_CERT", cert.display().to_string()),
                ("SKIFF_TLS_KEY", key.display().to_string()),
            ],
        );
        let status = eventually(
            "the replica with an open key to exit",
            Duration::from_secs(30),
            || {
                let exited = open.exited();
                async move { exited }
            },
        )
        .await;
        assert!(!status.success());
        let log = open.log();
        assert!(
            log.contains("mode 644") && log.contains("must be 0600"),
            "{log}"
        );
    })
    .await
}
