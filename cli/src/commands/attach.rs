//! `skiff exec -i [-t] ID -- CMD`: an interactive exec over the API's
//! WebSocket (`GET /v1/containers/{id}/exec?command=...&tty=...`). Stdin
//! goes out as binary frames (its end as `{"close_stdin": true}`), what the
//! process writes comes back as binary frames, the exit code last as
//! `{"exit_code": N}`. With `-t` the local terminal is put in raw mode for
//! the session (restored when it ends) and its size follows SIGWINCH.

use crate::client::{problem, Client};
use crate::Error;
use futures::{SinkExt, StreamExt};
use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg, Termios};
use serde_json::{json, Value};
use std::io::IsTerminal;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::signal::unix::{signal, SignalKind};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

/// The local terminal in raw mode while this lives.
struct RawMode(Termios);

impl RawMode {
    fn enable() -> Option<Self> {
        let saved = tcgetattr(std::io::stdin()).ok()?;
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        tcsetattr(std::io::stdin(), SetArg::TCSANOW, &raw).ok()?;
        Some(Self(saved))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = tcsetattr(std::io::stdin(), SetArg::TCSANOW, &self.0);
    }
}

/// The terminal's size as the API takes it, when stdout is one.
fn size() -> Option<(u16, u16)> {
    let (rows, cols) = console::Term::stdout().size_checked()?;
    Some((cols, rows))
}

/// Runs the session; returns the process's exit code.
pub async fn interactive(
    client: &Client,
    id: &str,
    command: &[String],
    stdin: bool,
    tty: bool,
) -> Result<i32, Error> {
    if tty && stdin && !std::io::stdin().is_terminal() {
        return Err(Error::flag(
            "-t",
            "set",
            "the input is not a terminal (drop -t, or run skiff in one)",
        ));
    }
    let mut query: Vec<(&str, String)> = command.iter().map(|c| ("command", c.clone())).collect();
    query.push(("tty", tty.to_string()));
    if let Some((cols, rows)) = size().filter(|_| tty) {
        query.push(("cols", cols.to_string()));
        query.push(("rows", rows.to_string()));
    }
    let url = client.websocket_url(&format!("/v1/containers/{id}/exec"), &query);
    let failed = |source| Error::WebSocket {
        url: url.clone(),
        source: Box::new(source),
    };
    let mut request = url.as_str().into_client_request().map_err(failed)?;
    let bearer = format!("Bearer {}", client.token());
    if let Ok(value) = bearer.parse() {
        request.headers_mut().insert("authorization", value);
    }
    let (ws, _) = match tokio_tungstenite::connect_async(request).await {
        Ok(ok) => ok,
        // A refusal before the upgrade is the API's problem+json.
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            let status = response.status().as_u16();
            return Err(problem(status, &response.into_body().unwrap_or_default()));
        }
        Err(e) => return Err(failed(e)),
    };
    let (mut sink, mut frames) = ws.split();
    let _raw = if tty && stdin {
        RawMode::enable()
    } else {
        None
    };
    let mut winch = signal(SignalKind::window_change()).ok();
    let mut input = tokio::io::stdin();
    let mut output = tokio::io::stdout();
    let mut buf = vec![0u8; 4096];
    let mut stdin_open = stdin;
    if !stdin {
        let _ = sink
            .send(Message::Text(
                json!({"close_stdin": true}).to_string().into(),
            ))
            .await;
    }
    let mut exit_code = None;
    loop {
        tokio::select! {
            read = input.read(&mut buf), if stdin_open => {
                let message = match read {
                    Ok(n) if n > 0 => Message::Binary(buf[..n].to_vec().into()),
                    _ => {
                        stdin_open = false;
                        Message::Text(json!({"close_stdin": true}).to_string().into())
                    }
                };
                sink.send(message).await.map_err(failed)?;
            }
            _ = async { winch.as_mut().expect("guarded").recv().await }, if tty && winch.is_some() => {
                if let Some((cols, rows)) = size() {
                    let resize = json!({"resize": {"cols": cols, "rows": rows}});
                    sink.send(Message::Text(resize.to_string().into())).await.map_err(failed)?;
                }
            }
            frame = frames.next() => match frame {
                None | Some(Ok(Message::Close(_))) => break,
                Some(Err(e)) => return Err(failed(e)),
                Some(Ok(Message::Binary(bytes))) => {
                    let written = output.write_all(&bytes).await.and(output.flush().await);
                    written.map_err(|e| Error::Output(e.to_string()))?;
                }
                Some(Ok(Message::Text(text))) => {
                    let said: Value = serde_json::from_str(text.as_str()).unwrap_or_default();
                    if let Some(code) = said["exit_code"].as_i64() {
                        exit_code = i32::try_from(code).ok();
                    }
                }
                Some(Ok(_)) => {}
            }
        }
    }
    exit_code.ok_or_else(|| Error::Output("the session ended without an exit code".into()))
}
