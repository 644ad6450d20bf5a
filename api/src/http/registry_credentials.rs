//! A tenant's stored registry credentials: `GET /v1/registry-credentials`
//! (servers and usernames, never a password), `PUT
//! /v1/registry-credentials/{server}` (create or replace; the password is
//! write-only and sealed at rest) and `DELETE`. A container's pull of an
//! image from `server` uses the stored credential unless its request gave
//! one for that server (see [`crate::store::registry_credentials`]).

use super::problems::NotFound;
use super::schemas;
use super::{json, JsonBody, Tenant};
use crate::error::ApiError;
use crate::store::registry_credentials::{CredentialRow, Put};
use crate::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use skiff_core::registry::{check_password, check_username, normalize_server};
use skiff_core::Password;
use std::sync::Arc;
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::Required;
use utoipa::ToSchema;

/// Body of `PUT /v1/registry-credentials/{server}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutRegistryCredential {
    /// 1 to 255 characters, without ':' or control characters.
    #[schema(
        pattern = r"^[^:\u0000-\u001f\u007f]+$",
        min_length = 1,
        max_length = 255
    )]
    pub username: String,
    /// 1 to 8192 characters (a password or an access token). Write-only:
    /// never returned, sealed at rest.
    #[schema(value_type = String, min_length = 1, max_length = 8192, write_only)]
    pub password: Password,
}

/// A stored credential, without its password.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RegistryCredentialView {
    /// The registry `host[:port]` (lower case) whose images it pulls.
    pub server: String,
    pub username: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RegistryCredentialList {
    pub items: Vec<RegistryCredentialView>,
}

fn view(row: CredentialRow) -> RegistryCredentialView {
    RegistryCredentialView {
        server: row.server,
        username: row.username,
        created_at: row.created_at,
        updated_at: row.updated_at,
    }
}

/// The `{server}` path parameter.
pub struct ServerPath;

impl utoipa::IntoParams for ServerPath {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![server_parameter()]
    }
}

/// `{server}`: a registry `host[:port]` as an image reference names it.
pub fn server_parameter() -> Parameter {
    ParameterBuilder::new()
        .name("server")
        .parameter_in(ParameterIn::Path)
        .required(Required::True)
        .description(Some(
            "The registry `host[:port]`, as image references name it (e.g. \
             `registry.example.com` or `127.0.0.1:5000`); compared case-insensitively.",
        ))
        .schema(Some(
            schemas::string()
                .pattern(Some(skiff_core::image::registry_host_pattern()))
                .max_length(Some(skiff_core::registry::MAX_SERVER_LEN))
                .build(),
        ))
        .build()
}

/// The tenant's stored registry credentials (no passwords).
#[utoipa::path(get, path = "/v1/registry-credentials", tag = "registries",
    responses((status = 200, body = RegistryCredentialList)), security(("bearer" = [])))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
) -> Result<Response, ApiError> {
    let items = state
        .store
        .registry_credentials(tenant)
        .await?
        .into_iter()
        .map(view)
        .collect();
    Ok(json(StatusCode::OK, RegistryCredentialList { items }))
}

/// Store (201) or replace (200) the credential for a registry server. The
/// password is never returned.
#[utoipa::path(put, path = "/v1/registry-credentials/{server}", tag = "registries",
    params(ServerPath), request_body = PutRegistryCredential,
    responses((status = 201, body = RegistryCredentialView), (status = 200, body = RegistryCredentialView), NotFound),
    security(("bearer" = [])))]
pub async fn put(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    Path(server): Path<String>,
    JsonBody(body): JsonBody<PutRegistryCredential>,
) -> Result<Response, ApiError> {
    let server = normalize_server("server", &server)?;
    check_username("username", &body.username)?;
    check_password("password", &body.password)?;
    let (put, row) = state
        .store
        .put_registry_credential(tenant, &server, &body.username, &body.password)
        .await?;
    tracing::info!(target: "skiff::audit", %tenant, %server, ?put, "registry credential stored");
    let status = match put {
        Put::Created => StatusCode::CREATED,
        Put::Replaced => StatusCode::OK,
    };
    Ok(json(status, view(row)))
}

/// Delete the credential for a registry server.
#[utoipa::path(delete, path = "/v1/registry-credentials/{server}", tag = "registries",
    params(ServerPath), responses((status = 204, description = "deleted"), NotFound),
    security(("bearer" = [])))]
pub async fn delete(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    Path(server): Path<String>,
) -> Result<Response, ApiError> {
    // A server that is no registry host has no credential either.
    let server = normalize_server("server", &server)
        .map_err(|_| ApiError::NotFound("registry credential"))?;
    if !state
        .store
        .delete_registry_credential(tenant, &server)
        .await?
    {
        return Err(ApiError::NotFound("registry credential"));
    }
    tracing::info!(target: "skiff::audit", %tenant, %server, "registry credential deleted");
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The schema of a request's `image_registry_credentials`.
pub fn request_credentials_schema() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
    use utoipa::openapi::schema::{
        AdditionalProperties, ArrayBuilder, ObjectBuilder, SchemaType, Type,
    };
    let item = ObjectBuilder::new()
        .schema_type(Type::Object)
        .property(
            "server",
            schemas::string()
                .pattern(Some(skiff_core::image::registry_host_pattern()))
                .max_length(Some(skiff_core::registry::MAX_SERVER_LEN))
                .description(Some("The registry `host[:port]` it is for.")),
        )
        .property(
            "username",
            schemas::string()
                .pattern(Some(skiff_core::registry::USERNAME_PATTERN))
                .min_length(Some(1))
                .max_length(Some(skiff_core::registry::MAX_USERNAME_LEN)),
        )
        .property(
            "password",
            schemas::string()
                .min_length(Some(1))
                .max_length(Some(skiff_core::registry::MAX_PASSWORD_LEN))
                .write_only(Some(true))
                .description(Some("Never returned; sealed at rest.")),
        )
        .required("server")
        .required("username")
        .required("password")
        .additional_properties(Some(AdditionalProperties::FreeForm(false)));
    ArrayBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Array, Type::Null]))
        .items(item)
        .max_items(Some(skiff_core::registry::MAX_REQUEST_CREDENTIALS))
        .description(Some(
            "Credentials for private registries: the one whose `server` is the \
             image's registry host is used for its pulls (over the tenant's \
             stored one for that server); the others are checked and dropped. \
             Each server once. Not accepted in a job's template (store them \
             with `PUT /v1/registry-credentials/{server}` instead).",
        ))
        .into()
}
