//! Running a process in a tenant's running container (`POST
//! /v1/containers/{id}/exec`): the API checks the tenant, the state and the
//! request, then has the container's host run it (the agent's `Exec`, in
//! the container's namespaces and cgroup) and answers with its output and
//! exit code. Bounded: `timeout_s` (SIGKILL past it) and 1 MiB a stream.

use super::load;
use super::observe::agent_of;
use crate::error::ApiError;
use crate::http::problems::{Conflict, InvalidRequest, NotFound};
use crate::http::{json, parse_json, JsonBytes, Tenant};
use crate::model::{validate_command, ExecRequest, ExecResult};
use crate::AppState;
use axum::extract::{Path, State};
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
    let host_id = match (row.state, row.host_id.as_deref()) {
        (ContainerState::Running, Some(host)) => host,
        (state, _) => {
            return Err(ApiError::Conflict {
                field: Some("state".into()),
                detail: format!("the container is {}; exec needs it running", state.as_str()),
            })
        }
    };
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
        .map_err(|status| match status.code() {
            // Its task ended between the check and the call.
            tonic::Code::FailedPrecondition => ApiError::Conflict {
                field: Some("state".into()),
                detail: status.message().to_owned(),
            },
            _ => {
                tracing::warn!(container = %row.id, host = host_id, %status, "exec failed");
                ApiError::Unavailable(format!(
                    "host {host_id} did not run the exec: {}",
                    status.message()
                ))
            }
        })?
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
