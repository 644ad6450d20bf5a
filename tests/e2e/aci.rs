//! Azure Container Instances compatibility: Microsoft's own Python SDK
//! (`azure-mgmt-containerinstance`, pinned in deploy/local/lib.sh and
//! installed by test.sh into `.skiff/venv`, `SKIFF_TEST_PYTHON`) against
//! the pool's `/aci`, one scenario of `aci_sdk.py` a test: a group's life
//! (create and its poller, get, both lists and their pages, logs, stop,
//! start, restart, tags, delete), every refusal with its ARM code beside a
//! positive control, another tenant's group not found, two members talking
//! over localhost, secure values never returned, and exec and attach
//! through their WebSocket (spoken here, with the password the SDK got).
//! A test without the SDK fails, never skips.

use crate::tenant;
use futures::{SinkExt, StreamExt};
use reqwest::Method;
use serde_json::Value;
use skiff_e2e::{limit, secs, Tenant};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

/// The venv's python with the SDK; panics (never skips) without it.
fn python() -> PathBuf {
    let path = std::env::var_os("SKIFF_TEST_PYTHON").unwrap_or_else(|| {
        panic!(
            "SKIFF_TEST_PYTHON is not set: run the tests with deploy/local/test.sh, which \
             installs Microsoft's ACI SDK into .skiff/venv"
        )
    });
    let path = PathBuf::from(path);
    assert!(
        path.is_file(),
        "SKIFF_TEST_PYTHON={} does not exist",
        path.display()
    );
    path
}

/// Runs `aci_sdk.py SCENARIO` as tenant `t` (and `other`, when given);
/// panics with its output unless it succeeds within `within`. Answers the
/// JSON of its last line.
async fn scenario(t: &Tenant, name: &str, other: Option<&Tenant>, within: Duration) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("e2e/aci_sdk.py");
    let mut command = tokio::process::Command::new(python());
    command
        .arg(&script)
        .arg(name)
        .env("SKIFF_ACI_URL", format!("{}/aci", t.api_url))
        .env("SKIFF_ACI_SUBSCRIPTION", &t.id)
        .env("SKIFF_TOKEN", &t.token)
        .env("SKIFF_IMAGE", t.platform.image())
        .env("PYTHONUNBUFFERED", "1")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    for var in [
        "SKIFF_TEST_AUTH_REGISTRY",
        "SKIFF_TEST_AUTH_REGISTRY_USER",
        "SKIFF_TEST_AUTH_REGISTRY_PASSWORD",
    ] {
        if let Ok(v) = std::env::var(var) {
            command.env(var.replace("SKIFF_TEST_", "SKIFF_"), v);
        }
    }
    if let Some(o) = other {
        command
            .env("SKIFF_OTHER_TOKEN", &o.token)
            .env("SKIFF_OTHER_SUBSCRIPTION", &o.id);
    }
    let output = match tokio::time::timeout(within, command.output()).await {
        Ok(output) => output.unwrap_or_else(|e| panic!("running {}: {e}", script.display())),
        Err(_) => panic!(
            "aci_sdk.py {name} did not finish within {within:?}\n{}",
            t.platform.logs_dump()
        ),
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "aci_sdk.py {name}: {}\n--- stdout\n{stdout}\n--- stderr\n{stderr}\n{}",
        output.status,
        t.platform.logs_dump()
    );
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last)
        .unwrap_or_else(|e| panic!("aci_sdk.py {name}: its last line is not JSON ({e}): {stdout}"))
}

#[tokio::test]
async fn aci_sdk_drives_a_group_through_its_life() {
    limit(secs(480), async {
        let t = tenant().await;
        scenario(&t, "lifecycle", None, secs(450)).await;
        // Metered like containers, and reported by the group's label.
        let now = chrono::Utc::now().timestamp();
        let from = chrono::DateTime::from_timestamp(now - 3600, 0).unwrap();
        let to = chrono::DateTime::from_timestamp(now + 3600, 0).unwrap();
        let path = format!(
            "/v1/usage?from={}&to={}&group_by=label:skiff.group",
            from.to_rfc3339().replace('+', "%2B"),
            to.to_rfc3339().replace('+', "%2B")
        );
        let usage = t.call(Method::GET, &path, None).await;
        assert_eq!(usage.status, 200, "{usage:?}");
        let body = usage.json();
        let items = body["items"]
            .as_array()
            .unwrap_or_else(|| panic!("a usage report: {body}"));
        assert!(
            items.iter().any(|r| {
                uuid::Uuid::parse_str(r["key"].as_str().unwrap_or_default()).is_ok()
                    && r["billed_seconds"].as_i64().unwrap_or(0) > 0
            }),
            "a group's id as the key, with billed seconds: {body}"
        );
    })
    .await
}

#[tokio::test]
async fn aci_refusals_carry_arm_codes() {
    limit(secs(300), async {
        let t = tenant().await;
        let out = scenario(&t, "refusals", None, secs(280)).await;
        for (group, code) in [
            ("windows", "UnsupportedOsType"),
            ("missing", "InaccessibleImage"),
            ("too-big", "InvalidRequestContent"),
        ] {
            assert_eq!(out["refused"][group], code, "{out}");
        }
    })
    .await
}

#[tokio::test]
async fn aci_another_tenants_group_is_not_found() {
    limit(secs(240), async {
        let t = tenant().await;
        let other = t.another().await;
        scenario(&t, "isolation", Some(&other), secs(220)).await;
    })
    .await
}

#[tokio::test]
async fn aci_group_members_talk_over_localhost() {
    limit(secs(300), async {
        let t = tenant().await;
        scenario(&t, "localhost", None, secs(280)).await;
    })
    .await
}

#[tokio::test]
async fn aci_secure_values_are_never_returned() {
    limit(secs(240), async {
        let t = tenant().await;
        scenario(&t, "secure", None, secs(220)).await;
    })
    .await
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens a session's socket and sends its password first, as `az
/// container exec` does.
async fn open(session: &Value) -> Socket {
    let uri = session["web_socket_uri"].as_str().expect("webSocketUri");
    let (mut ws, _) = tokio_tungstenite::connect_async(uri)
        .await
        .unwrap_or_else(|e| panic!("connecting to {uri}: {e}"));
    let password = session["password"].as_str().expect("password");
    ws.send(Message::Text(password.into())).await.unwrap();
    ws
}

/// Text read until `done` holds (or the socket closes, or 30 s pass
/// without a message).
async fn read_until(ws: &mut Socket, mut done: impl FnMut(&str) -> bool) -> (String, bool) {
    let mut seen = String::new();
    while let Ok(Some(frame)) = tokio::time::timeout(secs(30), ws.next()).await {
        match frame {
            Ok(Message::Text(t)) => seen.push_str(t.as_str()),
            Ok(Message::Binary(b)) => seen.push_str(&String::from_utf8_lossy(&b)),
            Ok(Message::Close(_)) | Err(_) => return (seen, true),
            Ok(_) => {}
        }
        if done(&seen) {
            return (seen, false);
        }
    }
    (seen, false)
}

#[tokio::test]
async fn aci_exec_and_attach_through_the_websocket() {
    limit(secs(300), async {
        let t = tenant().await;
        let out = scenario(&t, "exec", None, secs(200)).await;
        let exec = &out["exec"];
        let uri = exec["web_socket_uri"].as_str().unwrap_or_default();
        assert!(
            uri.starts_with(&t.api_url.replacen("http", "ws", 1)),
            "an absolute URL under this server: {out}"
        );

        // A terminal: typed text in, the shell's output back as text. The
        // typed line holds "40+2", only the output holds "exec-42".
        let mut ws = open(exec).await;
        ws.send(Message::Text("echo exec-$((40+2))\n".into()))
            .await
            .unwrap();
        let (seen, closed) = read_until(&mut ws, |s| s.contains("exec-42")).await;
        assert!(
            seen.contains("exec-42") && !closed,
            "the shell answered: {seen:?}"
        );
        ws.send(Message::Text("exit\n".into())).await.unwrap();
        let (_, closed) = read_until(&mut ws, |_| false).await;
        assert!(closed, "the socket closes when the shell exits");

        // Single use: the same password again is refused.
        let mut again = open(exec).await;
        let (said, closed) = read_until(&mut again, |_| false).await;
        assert!(
            closed && said.contains("used"),
            "a used session is refused: {said:?}"
        );
        // Positive control beside it: a fresh session works.
        let fresh = scenario(&t, "exec", None, secs(60)).await;
        let mut ws = open(&fresh["exec"]).await;
        ws.send(Message::Text("echo fresh-$((1+1))\n".into()))
            .await
            .unwrap();
        let (seen, _) = read_until(&mut ws, |s| s.contains("fresh-2")).await;
        assert!(seen.contains("fresh-2"), "{seen:?}");
        drop(ws);

        // Attach: the container's output.
        let mut ws = open(&out["attach"]).await;
        let (seen, _) = read_until(&mut ws, |s| s.contains("attached-output")).await;
        assert!(seen.contains("attached-output"), "{seen:?}");
        drop(ws);
        scenario(&t, "cleanup", None, secs(60)).await;
    })
    .await
}
