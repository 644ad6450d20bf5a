//! Running a process in a tenant's running container: `POST
//! /v1/containers/{id}/exec` (the API checks the tenant, the state and the
//! request, then has the container's host run it, the agent's `Exec`, in
//! the container's namespaces and cgroup, and answers with its output and
//! exit code; bounded: `timeout_s`, SIGKILL past it, and 1 MiB a stream),
//! and `GET` on the same path upgraded to a WebSocket for an interactive
//! one (the agent's `Attach` stream, bridged frame by frame).

use super::load;
use super::observe::agent_of;
use crate::error::ApiError;
use crate::http::problems::{Conflict, InvalidRequest, NotFound};
use crate::http::{json, parse_json, JsonBytes, Tenant};
use crate::model::{validate_command, ExecRequest, ExecResult};
use crate::AppState;
use axum::extract::ws::{
    rejection::WebSocketUpgradeRejection, Message, WebSocket, WebSocketUpgrade,
};
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use skiff_core::{validate_env, ContainerState};
use skiff_proto as pb;
use std::sync::Arc;
use std::time::Duration;

const DEFAULT_TIMEOUT_S: u32 = 30;
const MAX_TIMEOUT_S: u32 = 3600;
/// Output kept per stream.
const MAX_OUTPUT_BYTES: u64 = 1024 * 1024;

/// Run a process in the running container and answer with its exit code
/// and output (stdout and stderr, the first 1 MiB of each). It runs as the
/// container's process does (user, capabilities, environment) and counts
/// against the container's limits. 409 unless the container is running.
#[utoipa::path(post, path = "/v1/containers/{id}/exec", tag = "containers",
    params(("id" = Uuid, Path)), request_body = ExecRequest,
    responses((status = 200, body = ExecResult), InvalidRequest, NotFound, Conflict),
    security(("bearer" = [])))]
pub async fn exec(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
    body: JsonBytes,
) -> Result<Response, ApiError> {
    let row = load(&state, tenant, &id).await?;
    let req: ExecRequest = parse_json(&body.0)?;
    if req.command.is_empty() {
        return Err(ApiError::invalid("command", "must name a program"));
    }
    validate_command(&req.command)?;
    let env = req.env.unwrap_or_default();
    validate_env([("env", &env)])?;
    let timeout_s = req.timeout_s.unwrap_or(DEFAULT_TIMEOUT_S);
    if !(1..=MAX_TIMEOUT_S).contains(&timeout_s) {
        return Err(ApiError::invalid(
            "timeout_s",
            format!("must be between 1 and {MAX_TIMEOUT_S} seconds"),
        ));
    }
    let host_id = running_host(&row)?;
    let mut client = agent_of(&state, host_id).await?;
    let mut request = tonic::Request::new(pb::ExecRequest {
        container_id: row.id.to_string(),
        command: req.command,
        env: env.into_iter().collect(),
        timeout_s,
        max_output_bytes: MAX_OUTPUT_BYTES,
    });
    // The agent SIGKILLs it at timeout_s; this bounds the call itself.
    request.set_timeout(Duration::from_secs(u64::from(timeout_s) + 15));
    let out = client
        .exec(request)
        .await
        .map_err(|status| agent_refused(host_id, &row.id, status))?
        .into_inner();
    tracing::info!(container = %row.id, exit_code = out.exit_code, timed_out = out.timed_out, "exec ran");
    Ok(json(
        StatusCode::OK,
        ExecResult {
            exit_code: out.exit_code,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            stdout_truncated: out.stdout_truncated,
            stderr_truncated: out.stderr_truncated,
            timed_out: out.timed_out,
        },
    ))
}

/// What `GET /v1/containers/{id}/exec` takes in its query (documented
/// here; parsed by [`attach_query`], as `command` repeats).
#[derive(Debug, Default, PartialEq, Eq, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AttachQuery {
    /// The process's argv, one `command=` per argument, in order.
    #[param(min_items = 1)]
    pub command: Vec<String>,
    /// A pseudo-terminal (stdout and stderr are one stream then).
    pub tty: Option<bool>,
    /// The terminal's size to start with.
    #[param(minimum = 1, maximum = 10000)]
    pub cols: Option<u32>,
    #[param(minimum = 1, maximum = 10000)]
    pub rows: Option<u32>,
}

/// Parses the attach query: `command` repeated, `tty`, `cols`, `rows`;
/// anything else, or a bad value, is a 400 naming it.
pub fn attach_query(raw: Option<&str>) -> Result<AttachQuery, ApiError> {
    let mut q = AttachQuery::default();
    let number = |key: &str, value: &str| {
        value
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=10_000).contains(n))
            .ok_or_else(|| ApiError::invalid(key, "must be a whole number from 1 to 10000"))
    };
    for (key, value) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        match key.as_ref() {
            "command" => q.command.push(value.into_owned()),
            "tty" => {
                q.tty = Some(match value.as_ref() {
                    "true" | "1" => true,
                    "false" | "0" => false,
                    _ => return Err(ApiError::invalid("tty", "must be true or false")),
                })
            }
            "cols" => q.cols = Some(number("cols", &value)?),
            "rows" => q.rows = Some(number("rows", &value)?),
            other => {
                return Err(ApiError::invalid(
                    other,
                    "unknown query parameter (command, tty, cols, rows)",
                ))
            }
        }
    }
    if q.command.is_empty() {
        return Err(ApiError::invalid("command", "must name a program"));
    }
    validate_command(&q.command)?;
    Ok(q)
}

/// An interactive process in the running container, over a WebSocket:
/// binary frames from the client are its stdin, binary frames from the
/// server what it writes; a text frame `{"resize": {"cols", "rows"}}`
/// resizes its terminal, `{"close_stdin": true}` ends its input; when it
/// exits the server sends `{"exit_code": N}` and closes. The process is
/// SIGKILLed when the client goes away. 409 unless the container is running.
#[utoipa::path(get, path = "/v1/containers/{id}/exec", tag = "containers",
    params(("id" = Uuid, Path), AttachQuery),
    responses((status = 101, description = "Switching Protocols: the WebSocket session"),
        InvalidRequest, NotFound, Conflict),
    security(("bearer" = [])))]
pub async fn attach(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let row = load(&state, tenant, &id).await?;
    let query = attach_query(raw.as_deref())?;
    let upgrade = upgrade.map_err(|e| {
        ApiError::invalid(
            "Upgrade",
            format!("a WebSocket upgrade is required: {}", e.body_text()),
        )
    })?;
    let host_id = running_host(&row)?;
    let mut client = agent_of(&state, host_id).await?;
    let (input, rx) = tokio::sync::mpsc::channel(64);
    let start = pb::AttachStart {
        container_id: row.id.to_string(),
        command: query.command,
        env: Default::default(),
        tty: query.tty.unwrap_or(false),
        size: match (query.cols, query.rows) {
            (Some(cols), Some(rows)) => Some(pb::TerminalSize { cols, rows }),
            _ => None,
        },
    };
    input
        .send(pb::AttachInput {
            input: Some(pb::attach_input::Input::Start(start)),
        })
        .await
        .expect("the receiver is here");
    let output = client
        .attach(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .map_err(|status| agent_refused(host_id, &row.id, status))?
        .into_inner();
    tracing::info!(container = %row.id, "attach session");
    Ok(upgrade.on_upgrade(move |socket| bridge(socket, input, output)))
}

/// The host of a running container; 409 naming the state otherwise.
fn running_host(row: &crate::store::ContainerRow) -> Result<&str, ApiError> {
    match (row.state, row.host_id.as_deref()) {
        (ContainerState::Running, Some(host)) => Ok(host),
        (state, _) => Err(ApiError::Conflict {
            field: Some("state".into()),
            detail: format!("the container is {}; exec needs it running", state.as_str()),
        }),
    }
}

/// An agent's refusal as the API's answer.
fn agent_refused(host_id: &str, id: &uuid::Uuid, status: tonic::Status) -> ApiError {
    match status.code() {
        // Its task ended between the check and the call.
        tonic::Code::FailedPrecondition => ApiError::Conflict {
            field: Some("state".into()),
            detail: status.message().to_owned(),
        },
        _ => {
            tracing::warn!(container = %id, host = host_id, %status, "exec failed");
            ApiError::Unavailable(format!(
                "host {host_id} did not run the exec: {}",
                status.message()
            ))
        }
    }
}

/// A text frame from the client: a resize or the end of stdin.
#[derive(Debug, serde::Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
struct Control {
    resize: Option<Size>,
    close_stdin: Option<bool>,
}

#[derive(Debug, serde::Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
struct Size {
    cols: u32,
    rows: u32,
}

/// Carries the session both ways until the process exits or the client
/// leaves (dropping `input` tells the agent to SIGKILL the process).
async fn bridge(
    mut socket: WebSocket,
    input: tokio::sync::mpsc::Sender<pb::AttachInput>,
    mut output: tonic::Streaming<pb::AttachOutput>,
) {
    use pb::attach_input::Input;
    use pb::attach_output::Output;
    loop {
        tokio::select! {
            msg = socket.recv() => {
                let send = match msg {
                    Some(Ok(Message::Binary(bytes))) => Some(Input::Stdin(bytes.to_vec())),
                    Some(Ok(Message::Text(text))) => match serde_json::from_str::<Control>(text.as_str()) {
                        Ok(Control { resize: Some(Size { cols, rows }), .. }) => {
                            Some(Input::Resize(pb::TerminalSize { cols, rows }))
                        }
                        Ok(Control { close_stdin: Some(true), .. }) => Some(Input::CloseStdin(true)),
                        _ => {
                            let _ = socket
                                .send(Message::Text(
                                    r#"{"error":"text frames are {\"resize\": {\"cols\", \"rows\"}} or {\"close_stdin\": true}"}"#.into(),
                                ))
                                .await;
                            None
                        }
                    },
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => None,
                    // Closed or broken: the process goes with the session.
                    _ => return,
                };
                if let Some(send) = send {
                    if input.send(pb::AttachInput { input: Some(send) }).await.is_err() {
                        return;
                    }
                }
            }
            out = output.message() => match out {
                Ok(Some(pb::AttachOutput { output: Some(Output::Data(data)) })) => {
                    if socket.send(Message::Binary(data.into())).await.is_err() {
                        return;
                    }
                }
                Ok(Some(pb::AttachOutput { output: Some(Output::ExitCode(code)) })) => {
                    let _ = socket
                        .send(Message::Text(serde_json::json!({ "exit_code": code }).to_string().into()))
                        .await;
                    let _ = socket.send(Message::Close(None)).await;
                    return;
                }
                Ok(Some(_)) => {}
                Ok(None) => return,
                Err(status) => {
                    let _ = socket
                        .send(Message::Text(
                            serde_json::json!({ "error": status.message() }).to_string().into(),
                        ))
                        .await;
                    let _ = socket.send(Message::Close(None)).await;
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attach_queries() {
        let ok = attach_query(Some(
            "command=sh&command=-c&command=echo%20hi&tty=true&cols=80&rows=24",
        ))
        .unwrap();
        assert_eq!(ok.command, ["sh", "-c", "echo hi"]);
        assert_eq!((ok.tty, ok.cols, ok.rows), (Some(true), Some(80), Some(24)));
        #[rustfmt::skip]
        let refused = [
            (None, "command"),
            (Some("tty=true"), "command"),
            (Some("command=sh&tty=yes"), "tty"),
            (Some("command=sh&cols=0"), "cols"),
            (Some("command=sh&rows=x"), "rows"),
            (Some("command=sh&shell=1"), "shell"),
            (Some("command=a%00b"), "command"),
        ];
        for (query, field) in refused {
            let problem = attach_query(query).unwrap_err().to_problem();
            assert_eq!(problem.status, 400, "{query:?}");
            assert_eq!(problem.field.as_deref(), Some(field), "{query:?}");
        }
    }
}
