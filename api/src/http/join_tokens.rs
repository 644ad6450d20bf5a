//! Admin routes for join tokens: create (the secret is shown once), list,
//! revoke. A worker spends one use of a token to join the pool.

use super::problems::NotFound;
use super::{hash_token, json, new_token, Admin, JsonBody};
use crate::error::ApiError;
use crate::store::trust::JoinTokenRow;
use crate::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use utoipa::ToSchema;
use uuid::Uuid;

const MAX_EXPIRES_IN_S: i64 = 365 * 86_400;
const MAX_USES: i32 = 10_000;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateJoinToken {
    /// Seconds until the token expires (1 to a year; default 3600).
    #[schema(minimum = 1, maximum = 31536000)]
    pub expires_in_s: Option<i64>,
    /// How many hosts may join with it (1 to 10000; default 1).
    #[schema(minimum = 1, maximum = 10000)]
    pub uses: Option<i32>,
    /// At most 256 bytes (UTF-8), without NUL.
    #[schema(max_length = 256, pattern = r"^[^\u0000]*$")]
    pub description: Option<String>,
}

/// A join token. `token` is set only in the answer to its creation.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct JoinTokenView {
    pub id: Uuid,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    pub description: String,
    /// `active`, `expired`, `used_up` or `revoked`.
    pub state: String,
    pub max_uses: i32,
    pub uses: i32,
    pub expires_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct JoinTokenList {
    pub items: Vec<JoinTokenView>,
}

fn view(row: JoinTokenRow, token: Option<String>, now: DateTime<Utc>) -> JoinTokenView {
    let state = if row.revoked_at.is_some() {
        "revoked"
    } else if row.expires_at <= now {
        "expired"
    } else if row.uses >= row.max_uses {
        "used_up"
    } else {
        "active"
    };
    JoinTokenView {
        id: row.id,
        token,
        description: row.description,
        state: state.to_owned(),
        max_uses: row.max_uses,
        uses: row.uses,
        expires_at: row.expires_at,
        created_at: row.created_at,
        revoked_at: row.revoked_at,
    }
}

/// Create a join token (admin token). The secret is in this answer only.
#[utoipa::path(post, path = "/v1/admin/join-tokens", tag = "admin", request_body = CreateJoinToken,
    responses((status = 201, body = JoinTokenView)),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<Arc<AppState>>,
    _: Admin,
    JsonBody(body): JsonBody<CreateJoinToken>,
) -> Result<Response, ApiError> {
    let expires_in_s = body.expires_in_s.unwrap_or(3600);
    if !(1..=MAX_EXPIRES_IN_S).contains(&expires_in_s) {
        return Err(ApiError::invalid(
            "expires_in_s",
            format!("must be 1 to {MAX_EXPIRES_IN_S} seconds"),
        ));
    }
    let uses = body.uses.unwrap_or(1);
    if !(1..=MAX_USES).contains(&uses) {
        return Err(ApiError::invalid(
            "uses",
            format!("must be 1 to {MAX_USES}"),
        ));
    }
    let description = body.description.unwrap_or_default();
    if description.len() > 256 || description.contains('\0') {
        return Err(ApiError::invalid(
            "description",
            "must be at most 256 bytes, without NUL",
        ));
    }
    let token = new_token("skj_");
    let row = state
        .store
        .create_join_token(&hash_token(&token), &description, uses, expires_in_s)
        .await?;
    tracing::info!(target: "skiff::audit", token = %row.id, uses, expires_in_s, "join token created");
    Ok(json(
        StatusCode::CREATED,
        view(row, Some(token), Utc::now()),
    ))
}

/// Every join token, without their secrets (admin token).
#[utoipa::path(get, path = "/v1/admin/join-tokens", tag = "admin",
    responses((status = 200, body = JoinTokenList)), security(("bearer" = [])))]
pub async fn list(State(state): State<Arc<AppState>>, _: Admin) -> Result<Response, ApiError> {
    let now = Utc::now();
    let items = state
        .store
        .join_tokens()
        .await?
        .into_iter()
        .map(|row| view(row, None, now))
        .collect();
    Ok(json(StatusCode::OK, JoinTokenList { items }))
}

/// Revoke a join token: no host can join with it any more (admin token).
/// Hosts that joined with it keep their certificates.
#[utoipa::path(delete, path = "/v1/admin/join-tokens/{id}", tag = "admin", params(("id" = Uuid, Path)),
    responses((status = 200, body = JoinTokenView), NotFound),
    security(("bearer" = [])))]
pub async fn revoke(
    State(state): State<Arc<AppState>>,
    _: Admin,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = Uuid::parse_str(&id).map_err(|_| ApiError::NotFound("join token"))?;
    let row = state
        .store
        .revoke_join_token(id)
        .await?
        .ok_or(ApiError::NotFound("join token"))?;
    tracing::info!(target: "skiff::audit", token = %row.id, "join token revoked");
    Ok(json(StatusCode::OK, view(row, None, Utc::now())))
}
