//! `POST {group}/containers/{c}/exec` and `/attach` as ACI has them: the
//! answer is `{"webSocketUri", "password"}`; the client opens the socket,
//! sends the password as its first text message, and then the terminal
//! travels as text messages both ways (what `az container exec` does).
//!
//! The password is minted here, short-lived and single-use, and kept (its
//! SHA-256) in PostgreSQL (`aci_exec_sessions`): the socket may reach any
//! replica. The first connection that presents the session's id consumes
//! it, right password or not. An exec session is then bridged onto the
//! agent's `Attach` stream (a process with a pseudo-terminal, as
//! `/v1/containers/{id}/exec` does); an attach session streams the
//! container's output (its logs, followed).

use super::arm::ArmError;
use crate::http::containers::agent_of;
use crate::AppState;
use axum::extract::ws::{Message, WebSocket};
use axum::http::StatusCode;
use futures::StreamExt;
use sha2::{Digest, Sha256};
use skiff_proto as pb;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

/// How long a minted password may wait for its socket.
pub const PASSWORD_TTL: Duration = Duration::from_secs(60);
/// How long the socket may take to send the password.
const PASSWORD_WAIT: Duration = Duration::from_secs(30);

pub use crate::store::exec_sessions::SessionKind as Kind;
use crate::store::exec_sessions::{NewSession, Session};

/// The body of `POST .../exec`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecBody {
    pub command: Option<String>,
    pub terminal_size: Option<TerminalSize>,
}

#[derive(Debug, Clone, Copy, serde::Deserialize)]
pub struct TerminalSize {
    pub rows: Option<u32>,
    pub cols: Option<u32>,
}

/// ACI's `command` is one string: split on whitespace (no quoting, as
/// ACI has none).
pub fn split_command(command: &str) -> Result<Vec<String>, ArmError> {
    let argv: Vec<String> = command.split_whitespace().map(str::to_owned).collect();
    if argv.is_empty() {
        return Err(ArmError::invalid("command", "command must name a program"));
    }
    crate::model::validate_command(&argv)
        .map_err(|e| ArmError::from(crate::error::ApiError::from(e)))?;
    Ok(argv)
}

/// A new session for `container`; answers its id and password.
pub async fn mint(
    state: &AppState,
    tenant: Uuid,
    container: Uuid,
    kind: Kind,
    command: &[String],
    size: Option<TerminalSize>,
) -> Result<(Uuid, String), ArmError> {
    let id = Uuid::now_v7();
    let password = crate::http::new_token("");
    let clamp = |n: Option<u32>| n.filter(|n| (1..=10_000).contains(n)).map(|n| n as i32);
    state
        .store
        .insert_exec_session(&NewSession {
            id,
            tenant,
            container,
            kind,
            command,
            cols: clamp(size.and_then(|s| s.cols)),
            rows: clamp(size.and_then(|s| s.rows)),
            password_sha256: Sha256::digest(password.as_bytes()).to_vec(),
            ttl: PASSWORD_TTL,
        })
        .await
        .map_err(crate::error::ApiError::from)?;
    Ok((id, password))
}

/// Consumes session `id` (single use) and checks `password` against it.
async fn claim(state: &AppState, id: Uuid, password: &str) -> Option<Session> {
    let session = match state.store.claim_exec_session(id).await {
        Ok(session) => session?,
        Err(e) => {
            tracing::warn!(session = %id, error = %e, "claiming an exec session failed");
            return None;
        }
    };
    // Digests of equal length: the comparison does not depend on where
    // the passwords differ.
    let given = Sha256::digest(password.as_bytes());
    (given.as_slice() == session.password_sha256.as_slice()).then_some(session)
}

async fn close_with(socket: &mut WebSocket, text: &str) {
    let _ = socket
        .send(Message::Text(format!("{text}\r\n").into()))
        .await;
    let _ = socket.send(Message::Close(None)).await;
}

/// Serves the socket of session `id`.
pub async fn serve(state: Arc<AppState>, id: Option<Uuid>, mut socket: WebSocket) {
    let password = match tokio::time::timeout(PASSWORD_WAIT, socket.recv()).await {
        Ok(Some(Ok(Message::Text(t)))) => t.as_str().trim().to_owned(),
        Ok(Some(Ok(Message::Binary(b)))) => String::from_utf8_lossy(&b).trim().to_owned(),
        _ => return close_with(&mut socket, "expected the password as the first message").await,
    };
    let Some(session) = (match id {
        Some(id) => claim(&state, id, &password).await,
        None => None,
    }) else {
        return close_with(
            &mut socket,
            "unknown, expired or used session, or a wrong password",
        )
        .await;
    };
    let container = match state
        .store
        .get_container(session.tenant_id, session.container_id)
        .await
    {
        Ok(Some(row)) => row,
        _ => return close_with(&mut socket, "the container is gone").await,
    };
    let Some(host_id) = container.host_id.clone() else {
        return close_with(&mut socket, "the container has no host").await;
    };
    let mut client = match agent_of(&state, &host_id).await {
        Ok(c) => c,
        Err(e) => return close_with(&mut socket, &e.to_string()).await,
    };
    if session.kind == Kind::Attach {
        let stream = client
            .read_logs(pb::LogsRequest {
                container_id: container.id.to_string(),
                tail_lines: 0,
                follow: true,
            })
            .await;
        let mut stream = match stream {
            Ok(s) => s.into_inner(),
            Err(status) => return close_with(&mut socket, status.message()).await,
        };
        let mut text = Utf8Carry::default();
        loop {
            tokio::select! {
                chunk = stream.next() => match chunk {
                    Some(Ok(chunk)) => {
                        let t = text.push(&chunk.data);
                        if !t.is_empty() && socket.send(Message::Text(t.into())).await.is_err() {
                            return;
                        }
                    }
                    _ => return close_with(&mut socket, "").await,
                },
                msg = socket.recv() => match msg {
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                    _ => {}
                },
            }
        }
    }
    if container.state != skiff_core::ContainerState::Running {
        return close_with(&mut socket, "the container is not running").await;
    }
    let (input, rx) = tokio::sync::mpsc::channel(64);
    let start = pb::AttachStart {
        container_id: container.id.to_string(),
        command: session.command.0,
        env: Default::default(),
        tty: true,
        size: match (session.cols, session.rows) {
            (Some(cols), Some(rows)) => Some(pb::TerminalSize {
                cols: cols as u32,
                rows: rows as u32,
            }),
            _ => None,
        },
    };
    let _ = input
        .send(pb::AttachInput {
            input: Some(pb::attach_input::Input::Start(start)),
        })
        .await;
    let mut output = match client
        .attach(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
    {
        Ok(o) => o.into_inner(),
        Err(status) => return close_with(&mut socket, status.message()).await,
    };
    tracing::info!(container = %container.id, "ACI exec session");
    let mut text = Utf8Carry::default();
    use pb::attach_output::Output;
    loop {
        tokio::select! {
            msg = socket.recv() => {
                let data = match msg {
                    Some(Ok(Message::Text(t))) => t.as_str().as_bytes().to_vec(),
                    Some(Ok(Message::Binary(b))) => b.to_vec(),
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    // Gone: dropping `input` ends the process.
                    _ => return,
                };
                let stdin = pb::AttachInput { input: Some(pb::attach_input::Input::Stdin(data)) };
                if input.send(stdin).await.is_err() {
                    return;
                }
            }
            out = output.message() => match out {
                Ok(Some(pb::AttachOutput { output: Some(Output::Data(data)) })) => {
                    let t = text.push(&data);
                    if !t.is_empty() && socket.send(Message::Text(t.into())).await.is_err() {
                        return;
                    }
                }
                Ok(Some(pb::AttachOutput { output: Some(Output::ExitCode(_)) })) | Ok(None) => {
                    let _ = socket.send(Message::Close(None)).await;
                    return;
                }
                Ok(Some(_)) => {}
                Err(status) => return close_with(&mut socket, status.message()).await,
            }
        }
    }
}

/// Bytes into text messages: a UTF-8 sequence split across two chunks is
/// held back until it is whole; invalid bytes become U+FFFD.
#[derive(Debug, Default)]
pub struct Utf8Carry(Vec<u8>);

impl Utf8Carry {
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.0.extend_from_slice(bytes);
        let valid_up_to = match std::str::from_utf8(&self.0) {
            Ok(_) => self.0.len(),
            Err(e) if e.error_len().is_none() => e.valid_up_to(),
            Err(_) => {
                let all = String::from_utf8_lossy(&self.0).into_owned();
                self.0.clear();
                return all;
            }
        };
        let rest = self.0.split_off(valid_up_to);
        String::from_utf8(std::mem::replace(&mut self.0, rest)).unwrap_or_default()
    }
}

/// 409 when the container is not running.
pub fn not_running(name: &str) -> ArmError {
    ArmError::new(
        StatusCode::CONFLICT,
        "ContainerNotRunning",
        format!("The container '{name}' is not running."),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_split_across_chunks() {
        let mut c = Utf8Carry::default();
        let e = "é".as_bytes();
        assert_eq!(c.push(b"a"), "a");
        assert_eq!(c.push(&e[..1]), "");
        assert_eq!(c.push(&e[1..]), "é");
        assert_eq!(c.push(&[0xff, b'b']), "\u{fffd}b");
    }

    #[test]
    fn commands() {
        assert_eq!(
            split_command(" /bin/sh  -c ls ").unwrap(),
            ["/bin/sh", "-c", "ls"]
        );
        assert_eq!(
            split_command("  ").unwrap_err().code,
            "InvalidRequestContent"
        );
    }
}
