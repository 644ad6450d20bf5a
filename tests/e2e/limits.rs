//! Request limits: a token past its write bucket gets 429 with
//! `Retry-After` and `RateLimit-*` headers while another tenant (and the
//! same token's reads) are served; after the wait it is served again.

use reqwest::StatusCode;
use serde_json::Value;
use skiff_e2e::{limit, secs, ExtraApi, Platform};
use std::time::Duration;

/// Waits for an extra replica's /readyz.
async fn ready(api: &mut ExtraApi, client: &reqwest::Client) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        assert!(api.exited().is_none(), "the replica exited:\n{}", api.log());
        let ok = client
            .get(format!("http://{}/readyz", api.address))
            .send()
            .await
            .is_ok_and(|r| r.status() == StatusCode::OK);
        if ok {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not ready:\n{}",
            api.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn header(r: &reqwest::Response, name: &str) -> Option<u64> {
    r.headers().get(name)?.to_str().ok()?.parse().ok()
}

#[tokio::test]
async fn a_token_past_its_write_rate_gets_429_with_its_headers_while_others_are_served() {
    limit(secs(120), async {
        let platform = Platform::get().await;
        let noisy = platform.new_tenant().await;
        let quiet = noisy.another().await;
        let (burst, per_s) = (5u64, 1.0);
        let mut api = platform.extra_api(
            "api-rate-limits",
            &[
                ("SKIFF_RATE_WRITE_BURST", burst.to_string()),
                ("SKIFF_RATE_WRITE_PER_S", per_s.to_string()),
                ("SKIFF_RATE_READ_BURST", "50".into()),
                ("SKIFF_RATE_READ_PER_S", "10".into()),
            ],
        );
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        ready(&mut api, &client).await;
        let base = format!("http://{}", api.address);
        // A write the server refuses cheaply (an empty body): it still
        // counts against the write bucket.
        let write = |token: &str| {
            client
                .post(format!("{base}/v1/containers"))
                .bearer_auth(token)
                .header("content-type", "application/json")
                .body("{}")
                .send()
        };
        let mut statuses = Vec::new();
        let mut limited = None;
        for _ in 0..burst + 3 {
            let r = write(&noisy.token).await.unwrap();
            statuses.push(r.status().as_u16());
            if r.status() == StatusCode::TOO_MANY_REQUESTS && limited.is_none() {
                limited = Some(r);
            }
        }
        // The burst is served (here: refused for its body, 400), then 429.
        assert!(
            statuses[..burst as usize].iter().all(|s| *s == 400),
            "{statuses:?}"
        );
        assert!(statuses[burst as usize..].contains(&429), "{statuses:?}");
        let limited = limited.unwrap();
        let retry_after = header(&limited, "retry-after").expect("Retry-After");
        assert!(retry_after >= 1, "{retry_after}");
        assert_eq!(header(&limited, "ratelimit-limit"), Some(burst));
        assert_eq!(header(&limited, "ratelimit-remaining"), Some(0));
        assert_eq!(
            limited.headers()["content-type"],
            "application/problem+json"
        );
        let problem: Value = limited.json().await.unwrap();
        assert!(
            problem["type"].as_str().unwrap().ends_with("/rate-limited"),
            "{problem}"
        );
        assert_eq!(problem["status"], 429);

        // Another tenant is served meanwhile, and the noisy token's reads
        // have their own bucket.
        let other = write(&quiet.token).await.unwrap();
        assert_eq!(other.status(), 400, "another tenant's write");
        let read = client
            .get(format!("{base}/v1/containers"))
            .bearer_auth(&noisy.token)
            .send()
            .await
            .unwrap();
        assert_eq!(read.status(), 200);
        assert_eq!(header(&read, "ratelimit-limit"), Some(50));
        // A list's default page (100 rows) costs 5 reads.
        assert_eq!(header(&read, "ratelimit-remaining"), Some(45));
        assert!(header(&read, "ratelimit-reset").is_some());

        // After the wait it was told, the token is served again.
        tokio::time::sleep(Duration::from_secs(retry_after)).await;
        let again = write(&noisy.token).await.unwrap();
        assert_eq!(again.status(), 400, "served again after Retry-After");
    })
    .await
}

#[tokio::test]
async fn an_sse_stream_outlives_the_request_timeout_and_ends_at_its_own_maximum() {
    limit(secs(120), async {
        let platform = Platform::get().await;
        let t = platform.new_tenant().await;
        let request_timeout_s = 1.0;
        let mut api = platform.extra_api(
            "api-stream-bounds",
            &[
                ("SKIFF_REQUEST_TIMEOUT_S", request_timeout_s.to_string()),
                ("SKIFF_STREAM_MAX_S", "6".into()),
            ],
        );
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        ready(&mut api, &client).await;
        let id = t.create_id(&platform.sh("sleep 2; echo late")).await;
        let opened = std::time::Instant::now();
        let mut stream = client
            .get(format!("http://{}/v1/events?container={id}", api.address))
            .bearer_auth(&t.token)
            .header("accept", "text/event-stream")
            .send()
            .await
            .unwrap();
        assert_eq!(stream.status(), 200);
        let mut text = String::new();
        let mut exited_after = None;
        // Read to the end: the server closes the stream at its maximum.
        while let Some(chunk) = stream.chunk().await.unwrap() {
            text.push_str(&String::from_utf8_lossy(&chunk));
            if exited_after.is_none() && text.contains("\"state\":\"succeeded\"") {
                exited_after = Some(opened.elapsed());
            }
        }
        let exited_after = exited_after.unwrap_or_else(|| panic!("no exit on the stream:\n{text}"));
        assert!(
            exited_after.as_secs_f64() > request_timeout_s,
            "the exit came {exited_after:?} after opening, within the request timeout: \
             nothing shows the stream outlived it"
        );
        // A plain request on the same replica is bounded and served.
        let listed = client
            .get(format!("http://{}/v1/containers", api.address))
            .bearer_auth(&t.token)
            .send()
            .await
            .unwrap();
        assert_eq!(listed.status(), 200);
    })
    .await
}
