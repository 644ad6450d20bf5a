//! Pull progress: while a container's image downloads, its object carries
//! `pull: {bytes_done, bytes_total}` as its host reports them; once it
//! runs, it carries none. The registry sits behind a forwarding stub on
//! the address the hosts' egress policy allows, which holds every blob
//! download after its first 64 KiB until the test lets go: the pull is
//! seen part-way whatever the machine's speed.

use serde_json::{json, Value};
use skiff_e2e::{eventually, limit, push_extra_image, secs, REDIRECTING_REGISTRY_HOST};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Bytes of a blob's body passed before the stub holds it.
const HELD_AFTER: usize = 64 * 1024;

/// Forwards each request (one per connection) to `upstream`; holds blob
/// bodies after [`HELD_AFTER`] bytes until `release` turns true.
async fn holding_stub(upstream: String, release: watch::Receiver<bool>) -> String {
    let listener = TcpListener::bind((REDIRECTING_REGISTRY_HOST, 0))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let upstream = Arc::new(upstream);
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let (upstream, release) = (upstream.clone(), release.clone());
            tokio::spawn(async move {
                let _ = forward(client, &upstream, release).await;
            });
        }
    });
    addr
}

async fn forward(
    mut client: TcpStream,
    upstream: &str,
    mut release: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut buf = [0u8; 8192];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = client.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let is_blob = text.starts_with("GET ") && text.lines().next().unwrap_or("").contains("/blobs/");
    // One request per connection: the stub never has to find where a
    // response ends.
    let request: String = text
        .trim_end()
        .lines()
        .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
        .map(|l| format!("{l}\r\n"))
        .collect::<String>()
        + "Connection: close\r\n\r\n";
    let mut server = TcpStream::connect(upstream).await?;
    server.write_all(request.as_bytes()).await?;
    let mut passed = 0usize;
    loop {
        let n = server.read(&mut buf).await?;
        if n == 0 {
            return client.shutdown().await;
        }
        client.write_all(&buf[..n]).await?;
        passed += n;
        if is_blob && passed > HELD_AFTER && !*release.borrow() {
            // Hold here until the test lets go.
            while !*release.borrow_and_update() {
                if release.changed().await.is_err() {
                    return Ok(());
                }
            }
        }
    }
}

#[tokio::test]
async fn a_pulling_container_shows_how_far_its_download_is() {
    limit(secs(120), async {
        let t = crate::tenant().await;
        // Its own image (an 8 MiB layer no other test pushes), so no host
        // holds it yet.
        let image = push_extra_image(t.platform, "skiff/e2e-pull-progress:1", 8).await;
        let (release_tx, release) = watch::channel(false);
        let stub = holding_stub(t.platform.registry().to_owned(), release).await;
        let via_stub = image.replacen(t.platform.registry(), &stub, 1);
        let mut spec = t.platform.spec(&["echo", "pulled"]);
        spec["image"] = json!(via_stub);
        let id = t.create_id(&spec).await;

        let pulling: Value = eventually("pull progress shown", secs(60), || async {
            let v = t.get(&id).await;
            (v["state"] == "pulling" && v["pull"]["bytes_done"].as_i64() > Some(0)).then_some(v)
        })
        .await;
        let (done, total) = (
            pulling["pull"]["bytes_done"].as_i64().unwrap(),
            pulling["pull"]["bytes_total"].as_i64().unwrap(),
        );
        assert!(total > 8 << 20, "all the layers: {pulling}");
        assert!(done < total, "held part-way: {pulling}");

        release_tx.send(true).unwrap();
        let view = t.wait_exited_in(&id, "succeeded").await;
        assert!(view["pull"].is_null(), "no pull once it ran: {view}");
        assert_eq!(t.logs(&id).await.trim(), "pulled");
    })
    .await
}
