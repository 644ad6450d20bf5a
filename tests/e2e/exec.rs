//! `POST /v1/containers/{id}/exec`: a process in a running container, its
//! output and exit code; bounded in time and output; in the container's
//! cgroup; another tenant's container is not found; a container that is
//! not running refuses.

use crate::tenant;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use skiff_e2e::{limit, secs, Tenant};

#[tokio::test]
async fn exec_runs_in_the_container_and_passes_its_output_and_exit_code() {
    limit(secs(120), async {
        let t = tenant().await;
        let mut spec = t.platform.sh("echo main; exec sleep 600");
        spec["name"] = json!("exec-target");
        spec["env"] = json!({ "FROM_CONTAINER": "c1" });
        let id = t.create_id(&spec).await;
        t.wait(&id, "running", 60).await;

        let (status, out) = t.exec(&id, json!({ "command": ["cat", "/etc/hostname"] })).await;
        assert_eq!(status, StatusCode::OK, "{out}");
        assert_eq!(out["stdout"], "exec-target\n", "{out}");
        assert_eq!(out["exit_code"], 0, "{out}");
        assert_eq!(out["timed_out"], false, "{out}");

        // Exit codes, both streams, the container's environment with the
        // request's over it.
        let (_, out) = t.exec(&id,
            json!({
                "command": ["sh", "-c", "echo out $FROM_CONTAINER $EXTRA; echo err >&2; exit 3"],
                "env": { "EXTRA": "x2" },
            }),
        )
        .await;
        assert_eq!(out["exit_code"], 3, "{out}");
        assert_eq!(out["stdout"], "out c1 x2\n", "{out}");
        assert_eq!(out["stderr"], "err\n", "{out}");

        // It runs in the container's cgroup (its limits apply) and PID
        // namespace (pid 1 is the container's process).
        let (_, out) = t.exec(&id,
            json!({ "command": ["sh", "-c", "cat /proc/self/cgroup; echo ---; cat /proc/1/cgroup; cat /proc/1/cmdline"] }),
        )
        .await;
        let text = out["stdout"].as_str().unwrap();
        let (own, first) = text.split_once("---\n").expect("two parts");
        assert!(first.starts_with(own), "same cgroup as pid 1: {text}");
        assert!(text.contains("sleep"), "pid 1 is the container's: {text}");

        // A program that is not there: 127 and the runtime's word, as a shell.
        let (status, out) = t.exec(&id, json!({ "command": ["no-such-program"] })).await;
        assert_eq!(status, StatusCode::OK, "{out}");
        assert_eq!(out["exit_code"], 127, "{out}");
        assert!(out["stderr"].as_str().unwrap().contains("not found"), "{out}");

        // Bounded: past timeout_s it is SIGKILLed; output past 1 MiB dropped.
        let (_, out) = t.exec(&id, json!({ "command": ["sleep", "100"], "timeout_s": 1 })).await;
        assert_eq!(out["timed_out"], true, "{out}");
        assert_eq!(out["exit_code"], 137, "{out}");
        let (_, out) = t.exec(&id,
            json!({ "command": ["sh", "-c", "head -c 3000000 /dev/zero | tr '\\\\0' a"] }),
        )
        .await;
        assert_eq!(out["stdout_truncated"], true, "{}", out["stderr"]);
        assert_eq!(out["stdout"].as_str().map(str::len), Some(1024 * 1024));

        // Bad input names its field; another tenant's container does not
        // exist for it.
        let (status, problem) = t.exec(&id, json!({ "command": [] })).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
        assert_eq!(problem["field"], "command", "{problem}");
        let (status, problem) = t.exec(&id, json!({ "command": ["true"], "timeout_s": 0 })).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
        assert_eq!(problem["field"], "timeout_s", "{problem}");
        let other = t.another().await;
        let (status, _) = other.exec(&id, json!({ "command": ["true"] })).await;
        assert_eq!(status, StatusCode::NOT_FOUND);

        // Not running: refused, naming the state.
        t.stop(&id).await;
        t.wait(&id, "exited", 60).await;
        let (status, problem) = t.exec(&id, json!({ "command": ["true"] })).await;
        assert_eq!(status, StatusCode::CONFLICT, "{problem}");
        assert_eq!(problem["field"], "state", "{problem}");
        assert_eq!(t.logs(&id).await, "main\n", "exec output never reaches the log");
    })
    .await
}

/// Opens `GET /v1/containers/{id}/exec?<query>` as a WebSocket with the
/// tenant's token.
async fn attach(
    t: &Tenant,
    id: &str,
    query: &str,
) -> Result<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    tokio_tungstenite::tungstenite::Error,
> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let url = format!(
        "{}/v1/containers/{id}/exec?{query}",
        t.platform.api_url.replacen("http", "ws", 1)
    );
    let mut request = url.into_client_request().expect("a request");
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {}", t.token).parse().expect("a header"),
    );
    tokio_tungstenite::connect_async(request)
        .await
        .map(|(ws, _)| ws)
}

#[tokio::test]
async fn an_interactive_tty_session_runs_a_shell_over_a_websocket() {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    limit(secs(120), async {
        let t = tenant().await;
        let id = t.create_id(&t.platform.sh("exec sleep 600")).await;
        t.wait(&id, "running", 60).await;

        let mut ws = attach(&t, &id, "command=sh&tty=true&cols=80&rows=24")
            .await
            .expect("the session opens");
        ws.send(Message::Text(
            r#"{"resize": {"cols": 100, "rows": 30}}"#.into(),
        ))
        .await
        .unwrap();
        // The typed line holds "40+2", only the shell's output holds "42";
        // stty size shows the resize reached the terminal.
        ws.send(Message::Binary(
            "echo $((40+2)); stty size\n".as_bytes().to_vec().into(),
        ))
        .await
        .unwrap();
        let mut seen = String::new();
        let mut exit = None;
        let mut sent_exit = false;
        while let Some(frame) = tokio::time::timeout(std::time::Duration::from_secs(30), ws.next())
            .await
            .expect("frames keep coming")
        {
            match frame.expect("a frame") {
                Message::Binary(bytes) => seen.push_str(&String::from_utf8_lossy(&bytes)),
                Message::Text(text) => {
                    let v: Value = serde_json::from_str(text.as_str()).expect("JSON");
                    exit = Some(v["exit_code"].clone());
                }
                Message::Close(_) => break,
                _ => {}
            }
            if !sent_exit && seen.contains("42\r\n") && seen.contains("30 100") {
                ws.send(Message::Binary("exit 7\n".as_bytes().to_vec().into()))
                    .await
                    .unwrap();
                sent_exit = true;
            }
        }
        assert!(seen.contains("42\r\n"), "the shell's output: {seen:?}");
        assert!(
            seen.contains("30 100"),
            "the terminal was resized: {seen:?}"
        );
        assert_eq!(exit, Some(json!(7)), "the exit code, last: {seen:?}");

        // A program that is not there: 127 and the runtime's word, as the
        // one-shot exec answers.
        let mut ws = attach(&t, &id, "command=no-such-program&tty=true")
            .await
            .expect("the session opens");
        let (mut said, mut code) = (String::new(), None);
        while let Some(frame) = tokio::time::timeout(std::time::Duration::from_secs(30), ws.next())
            .await
            .expect("frames keep coming")
        {
            match frame.expect("a frame") {
                Message::Binary(bytes) => said.push_str(&String::from_utf8_lossy(&bytes)),
                Message::Text(text) => {
                    let v: Value = serde_json::from_str(text.as_str()).expect("JSON");
                    code = Some(v["exit_code"].clone());
                }
                Message::Close(_) => break,
                _ => {}
            }
        }
        assert_eq!(code, Some(json!(127)), "{said:?}");
        assert!(said.contains("not found"), "{said:?}");

        // A client that goes away takes its process with it.
        let ws = attach(&t, &id, "command=sleep&command=313").await.unwrap();
        let find = json!({ "command": ["sh", "-c", "ps | grep -v grep | grep -q 'sleep 313'"] });
        let mut found = json!(null);
        for _ in 0..50 {
            found = t.exec(&id, find.clone()).await.1;
            if found["exit_code"] == 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert_eq!(
            found["exit_code"], 0,
            "running while attached (control): {found}"
        );
        drop(ws);
        let mut gone = false;
        for _ in 0..50 {
            let (_, found) = t.exec(&id, find.clone()).await;
            if found["exit_code"] == 1 {
                gone = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        assert!(gone, "the process outlived its session");

        // Another tenant: the container does not exist for it (no upgrade).
        let other = t.another().await;
        match attach(&other, &id, "command=sh").await {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                assert_eq!(response.status(), 404)
            }
            other => panic!("another tenant attached: {:?}", other.map(|_| ())),
        }
        // Without an upgrade: a problem naming it.
        let reply = t
            .call(
                Method::GET,
                &format!("/v1/containers/{id}/exec?command=sh"),
                None,
            )
            .await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{reply:?}");
        assert_eq!(reply.problem()["field"], "Upgrade", "{reply:?}");
    })
    .await
}
