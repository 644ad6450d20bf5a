//! Admin routes: creating tenants and their tokens.

use super::{hash_token, json, new_token, Admin, JsonBody};
use crate::error::ApiError;
use crate::model::{CreateTenant, TenantCreated};
use crate::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use std::sync::Arc;

/// Create a tenant and its API token (admin token required).
#[utoipa::path(post, path = "/v1/tenants", tag = "admin", request_body = CreateTenant,
    responses((status = 201, body = TenantCreated)),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<Arc<AppState>>,
    _admin: Admin,
    JsonBody(body): JsonBody<CreateTenant>,
) -> Result<Response, ApiError> {
    let name = body.name.trim();
    if name.is_empty() || name.len() > 128 || name.contains('\0') {
        return Err(ApiError::invalid(
            "name",
            "must be 1 to 128 bytes (leading and trailing blanks aside), without NUL",
        ));
    }
    let token = new_token("skt_");
    let id = state.store.create_tenant(name, &hash_token(&token)).await?;
    tracing::info!(tenant = %id, "tenant created");
    Ok(json(
        StatusCode::CREATED,
        TenantCreated {
            id,
            name: name.to_owned(),
            token,
        },
    ))
}
