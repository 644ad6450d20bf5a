//! The one handler under `/aci/{*rest}`: it parses the ARM path
//! ([`super::path`], literal segments in any case, which axum's routes
//! cannot do), authenticates the tenant, checks `api-version` and the
//! subscription, and calls the operation. Every error leaves in ARM's
//! shape ([`ArmError`]).

use super::arm::{self, check_api_version, with_async_operation, ArmError, API_VERSIONS};
use super::exec::{self, ExecBody, Kind};
use super::image_check::{self, CheckedRegistries, Verdict};
use super::model::Page;
use super::path::{self, Action, ArmPath, ContainerOp, GroupRef};
use super::translate::{parse_body, to_create_group};
use super::view::{self, operation_status, OpStatus};
use crate::error::ApiError;
use crate::groups::{self, GroupAction, GroupCreated, GroupFilter, GroupView};
use crate::http::{containers::log_stream, idempotency, json, Tenant};
use crate::AppState;
use axum::body::Bytes;
use axum::extract::ws::{rejection::WebSocketUpgradeRejection, WebSocketUpgrade};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use std::collections::HashMap;
use std::sync::Arc;
use uuid::Uuid;

/// Largest page of a list; the default.
const MAX_PAGE: i64 = 100;
/// Most log bytes one `logs` answer carries (the newest).
const MAX_LOG_BYTES: usize = 4 * 1024 * 1024;

/// What every ARM call has: the tenant, its query and where it came from.
struct Call<'a> {
    state: &'a Arc<AppState>,
    tenant: Uuid,
    query: HashMap<String, String>,
    api_version: String,
    /// `scheme://host/aci`, the base of every URL handed back.
    base: String,
}

impl Call<'_> {
    fn async_operation(&self, subscription: &str, group: Uuid, kind: &str) -> String {
        let op = format!("{group}.{kind}.{}", chrono::Utc::now().timestamp_millis());
        format!(
            "{}{}?api-version={}",
            self.base,
            path::operation_path(subscription, &op),
            self.api_version
        )
    }
}

#[allow(clippy::too_many_arguments)]
pub async fn handle(
    State(state): State<Arc<AppState>>,
    Path(rest): Path<String>,
    method: Method,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    tenant: Result<Tenant, ApiError>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    body: Bytes,
) -> Response {
    let Some(route) = path::parse(&rest) else {
        return ArmError::new(
            StatusCode::NOT_FOUND,
            "InvalidResourceType",
            format!("No route for '/{rest}' under the ACI API."),
        )
        .into_response();
    };
    // The socket of an exec: no bearer token, the password authenticates.
    if let ArmPath::ExecSession { id } = &route {
        return match upgrade {
            Ok(upgrade) => {
                let id = Uuid::parse_str(id).ok();
                upgrade.on_upgrade(move |socket| exec::serve(state, id, socket))
            }
            Err(e) => ArmError::invalid(
                "Upgrade",
                format!("a WebSocket upgrade is required: {}", e.body_text()),
            )
            .into_response(),
        };
    }
    match dispatch(
        &state,
        route,
        method,
        &headers,
        raw.as_deref(),
        tenant,
        body,
    )
    .await
    {
        Ok(response) => response,
        Err(e) => e.into_response(),
    }
}

async fn dispatch(
    state: &Arc<AppState>,
    route: ArmPath,
    method: Method,
    headers: &HeaderMap,
    raw: Option<&str>,
    tenant: Result<Tenant, ApiError>,
    body: Bytes,
) -> Result<Response, ArmError> {
    let Tenant(tenant) = tenant?;
    let query: HashMap<String, String> = form_urlencoded::parse(raw.unwrap_or("").as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let versions: &[&str] = match route {
        ArmPath::Subscriptions | ArmPath::Subscription { .. } => &arm::SUBSCRIPTION_API_VERSIONS,
        _ => &API_VERSIONS,
    };
    let api_version =
        check_api_version(query.get("api-version").map(String::as_str), versions)?.to_owned();
    let base = format!(
        "{}/aci",
        arm::origin(headers, state.config.tls_cert.is_some())
    );
    let call = Call {
        state,
        tenant,
        query,
        api_version,
        base,
    };
    let sub = tenant.to_string();
    let check_sub = |s: &str| -> Result<(), ArmError> {
        if Uuid::parse_str(s).ok() == Some(tenant) {
            Ok(())
        } else {
            Err(ArmError::new(
                StatusCode::NOT_FOUND,
                "SubscriptionNotFound",
                format!("The subscription '{s}' could not be found."),
            ))
        }
    };
    let subscription = serde_json::json!({
        "id": format!("/subscriptions/{sub}"),
        "subscriptionId": sub,
        "tenantId": sub,
        "displayName": format!("skiff tenant {sub}"),
        "state": "Enabled",
    });
    match (method, route) {
        (Method::GET, ArmPath::Subscriptions) => Ok(json(
            StatusCode::OK,
            serde_json::json!({ "value": [subscription] }),
        )),
        (Method::GET, ArmPath::Subscription { subscription: s }) => {
            check_sub(&s)?;
            Ok(json(StatusCode::OK, subscription))
        }
        (
            Method::GET,
            ArmPath::List {
                subscription,
                resource_group,
            },
        ) => {
            check_sub(&subscription)?;
            list(&call, &subscription, resource_group).await
        }
        (Method::GET, ArmPath::Operation { subscription, id }) => {
            check_sub(&subscription)?;
            operation(&call, &subscription, &id).await
        }
        (method, ArmPath::Group(g)) => {
            check_sub(&g.subscription)?;
            match method {
                Method::PUT => put(&call, &g, &body).await,
                Method::GET => get(&call, &g).await,
                Method::DELETE => delete(&call, &g).await,
                Method::PATCH => super::tags::patch(&call_parts(&call), &g, &body).await,
                _ => Err(ApiError::MethodNotAllowed.into()),
            }
        }
        (Method::POST, ArmPath::GroupAction(g, action)) => {
            check_sub(&g.subscription)?;
            act(&call, &g, action).await
        }
        (
            method,
            ArmPath::Container {
                group,
                container,
                op,
            },
        ) => {
            check_sub(&group.subscription)?;
            match (method, op) {
                (Method::GET, ContainerOp::Logs) => logs(&call, &group, &container).await,
                (Method::POST, ContainerOp::Exec) => {
                    session(&call, &group, &container, Kind::Exec, &body).await
                }
                (Method::POST, ContainerOp::Attach) => {
                    session(&call, &group, &container, Kind::Attach, &body).await
                }
                _ => Err(ApiError::MethodNotAllowed.into()),
            }
        }
        _ => Err(ApiError::MethodNotAllowed.into()),
    }
}

/// What [`super::tags`] needs of a call.
pub struct CallParts<'a> {
    pub state: &'a Arc<AppState>,
    pub tenant: Uuid,
}

fn call_parts<'a>(call: &Call<'a>) -> CallParts<'a> {
    CallParts {
        state: call.state,
        tenant: call.tenant,
    }
}

/// The group `g` names (a name compares in lower case, as skiff keeps it).
pub async fn find(state: &AppState, tenant: Uuid, g: &GroupRef) -> Result<GroupView, ArmError> {
    groups::find(
        state,
        tenant,
        &g.resource_group,
        &g.name.to_ascii_lowercase(),
    )
    .await?
    .ok_or_else(|| ArmError::not_found("containerGroups", &g.name, &g.resource_group))
}

/// Each member's events, by container id.
async fn member_events(
    state: &AppState,
    g: &GroupView,
) -> Result<HashMap<Uuid, Vec<crate::store::containers::EventRow>>, ArmError> {
    let ids: Vec<Uuid> = g.containers.iter().map(|m| m.container.id).collect();
    Ok(state.store.events_of(&ids).await.map_err(ApiError::from)?)
}

pub async fn render(
    state: &AppState,
    subscription: &str,
    g: &GroupView,
) -> Result<serde_json::Value, ArmError> {
    let events = member_events(state, g).await?;
    serde_json::to_value(view::resource(subscription, g, &events))
        .map_err(|e| ApiError::internal(e).into())
}

async fn get(call: &Call<'_>, g: &GroupRef) -> Result<Response, ArmError> {
    let group = find(call.state, call.tenant, g).await?;
    Ok(json(
        StatusCode::OK,
        render(call.state, &g.subscription, &group).await?,
    ))
}

async fn list(
    call: &Call<'_>,
    subscription: &str,
    resource_group: Option<String>,
) -> Result<Response, ArmError> {
    let top = match call.query.get("$top") {
        None => MAX_PAGE,
        Some(t) => t
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=MAX_PAGE).contains(n))
            .ok_or_else(|| ArmError::invalid("$top", format!("$top must be 1 to {MAX_PAGE}")))?,
    };
    let after = match call.query.get("$skipToken") {
        None => None,
        Some(t) => Some(Uuid::parse_str(t).map_err(|_| {
            ArmError::invalid("$skipToken", "$skipToken is not one this server handed out")
        })?),
    };
    let filter = GroupFilter {
        namespace: resource_group.clone(),
        after,
        limit: top + 1,
    };
    let mut page = groups::list(call.state, call.tenant, &filter).await?;
    let more = page.len() as i64 > top;
    page.truncate(top as usize);
    let next_link = match (more, page.last()) {
        (true, Some(last)) => {
            let path = match &resource_group {
                Some(rg) => format!("/subscriptions/{subscription}/resourceGroups/{rg}/providers/Microsoft.ContainerInstance/containerGroups"),
                None => format!("/subscriptions/{subscription}/providers/Microsoft.ContainerInstance/containerGroups"),
            };
            Some(format!(
                "{}{path}?api-version={}&$top={top}&$skipToken={}",
                call.base, call.api_version, last.id
            ))
        }
        _ => None,
    };
    let none = HashMap::new();
    let value = page
        .iter()
        .map(|g| view::resource(subscription, g, &none))
        .collect();
    Ok(json(StatusCode::OK, Page { value, next_link }))
}

async fn put(call: &Call<'_>, g: &GroupRef, body: &[u8]) -> Result<Response, ArmError> {
    let request = to_create_group(&g.name, &g.resource_group, parse_body(body)?)?;
    let credentials = request
        .image_registry_credentials
        .clone()
        .unwrap_or_default();
    let images: Vec<String> = request.containers.iter().map(|m| m.image.clone()).collect();
    let new = request
        .validate(call.state.config.max_pending_s)
        .map_err(ApiError::from)?;
    check_images(call, &images, &credentials).await?;
    // A PUT on an existing group that asks for something else replaces it
    // (ACI redeploys a group whose properties change): its members stop,
    // the new ones start.
    // The same request again (a client's retry) changes nothing: 200 with
    // the group as it is.
    let existing = groups::find(call.state, call.tenant, &g.resource_group, &new.name).await?;
    let status = match existing {
        Some(old) if groups::is_unchanged(call.state, call.tenant, old.id, &new).await? => {
            let body = render(call.state, &g.subscription, &old).await?;
            let op = call.async_operation(&g.subscription, old.id, "create");
            return Ok(with_async_operation(json(StatusCode::OK, body), &op));
        }
        Some(old) => {
            groups::delete(call.state, call.tenant, old.id).await?;
            StatusCode::OK
        }
        None => StatusCode::CREATED,
    };
    let render_stored = |v: &GroupView| idempotency::stored_json(StatusCode::CREATED, &v.id);
    let view = match groups::create(call.state, call.tenant, new, None, render_stored).await? {
        GroupCreated::New(view, _) => view,
        _ => return Err(ApiError::internal("a create without a key answered as a replay").into()),
    };
    tracing::info!(group = %view.id, tenant = %call.tenant, "ACI container group created");
    let body = render(call.state, &g.subscription, &view).await?;
    let op = call.async_operation(&g.subscription, view.id, "create");
    Ok(with_async_operation(json(status, body), &op))
}

async fn check_images(
    call: &Call<'_>,
    images: &[String],
    credentials: &[skiff_core::RegistryCredential],
) -> Result<(), ArmError> {
    let registries = CheckedRegistries::parse(&call.state.config.aci_check_registries);
    if registries == CheckedRegistries::default() {
        return Ok(());
    }
    for (i, image) in images.iter().enumerate() {
        let Ok(parsed) = skiff_core::ImageRef::parse(image) else {
            continue;
        };
        let server = parsed.registry.to_ascii_lowercase();
        let login = match credentials
            .iter()
            .find(|c| c.server.eq_ignore_ascii_case(&server))
        {
            Some(c) => Some((c.username.clone(), c.password.expose().to_owned())),
            None => call
                .state
                .store
                .stored_registry_credential(call.tenant, &server)
                .await
                .map_err(ApiError::from)?
                .map(|c| (c.username, c.password)),
        };
        if let Verdict::Inaccessible(why) = image_check::check(&registries, image, login).await {
            return Err(image_check::inaccessible(i, image, why));
        }
    }
    Ok(())
}

async fn delete(call: &Call<'_>, g: &GroupRef) -> Result<Response, ArmError> {
    let Some(group) = groups::find(
        call.state,
        call.tenant,
        &g.resource_group,
        &g.name.to_ascii_lowercase(),
    )
    .await?
    else {
        return Ok(StatusCode::NO_CONTENT.into_response());
    };
    let body = render(call.state, &g.subscription, &group).await?;
    groups::delete(call.state, call.tenant, group.id).await?;
    tracing::info!(group = %group.id, tenant = %call.tenant, "ACI container group deleted");
    Ok(json(StatusCode::OK, body))
}

async fn act(call: &Call<'_>, g: &GroupRef, action: Action) -> Result<Response, ArmError> {
    let group = find(call.state, call.tenant, g).await?;
    let (what, status) = match action {
        Action::Start => (GroupAction::Start, StatusCode::ACCEPTED),
        Action::Stop => (GroupAction::Stop, StatusCode::NO_CONTENT),
        Action::Restart => (GroupAction::Restart, StatusCode::NO_CONTENT),
    };
    groups::act(call.state, call.tenant, group.id, what)
        .await?
        .ok_or_else(|| ArmError::not_found("containerGroups", &g.name, &g.resource_group))?;
    let response = status.into_response();
    Ok(match action {
        Action::Start => with_async_operation(
            response,
            &call.async_operation(&g.subscription, group.id, "start"),
        ),
        _ => response,
    })
}

async fn operation(call: &Call<'_>, subscription: &str, id: &str) -> Result<Response, ArmError> {
    let not_found = || {
        ArmError::new(
            StatusCode::NOT_FOUND,
            "OperationNotFound",
            format!("The operation '{id}' was not found."),
        )
    };
    let mut parts = id.splitn(3, '.');
    let group = parts
        .next()
        .and_then(|g| Uuid::parse_str(g).ok())
        .ok_or_else(not_found)?;
    let _kind = parts
        .next()
        .filter(|k| matches!(*k, "create" | "start"))
        .ok_or_else(not_found)?;
    let started_ms = parts
        .next()
        .and_then(|t| t.parse::<i64>().ok())
        .ok_or_else(not_found)?;
    let view = groups::get(call.state, call.tenant, group).await?;
    let status = operation_status(view.as_ref());
    let mut body = serde_json::json!({
        "id": path::operation_path(subscription, id),
        "name": id,
        "status": status.as_str(),
        "startTime": chrono::DateTime::from_timestamp_millis(started_ms).map(|t| t.to_rfc3339()),
    });
    if status != OpStatus::InProgress {
        body["endTime"] = serde_json::json!(chrono::Utc::now().to_rfc3339());
    }
    if let OpStatus::Failed { code, message } = &status {
        body["error"] = serde_json::json!({ "code": code, "message": message });
    }
    Ok(json(StatusCode::OK, body))
}

/// The member `name` of group `g`: its container view.
async fn member(
    call: &Call<'_>,
    g: &GroupRef,
    name: &str,
) -> Result<crate::model::ContainerView, ArmError> {
    let group = find(call.state, call.tenant, g).await?;
    group
        .containers
        .into_iter()
        .find(|m| m.name.eq_ignore_ascii_case(name))
        .map(|m| m.container)
        .ok_or_else(|| ArmError::not_found("containerGroups/containers", name, &g.resource_group))
}

async fn logs(call: &Call<'_>, g: &GroupRef, name: &str) -> Result<Response, ArmError> {
    let tail = match call.query.get("tail") {
        None => 0,
        Some(t) => t
            .parse::<u32>()
            .map_err(|_| ArmError::invalid("tail", "tail must be a whole number"))?,
    };
    match call.query.get("timestamps").map(String::as_str) {
        None | Some("false" | "False") => {}
        Some("true" | "True") => {
            return Err(ArmError::invalid(
                "timestamps",
                "timestamps=true is not supported: skiff's logs keep no time per line",
            ))
        }
        Some(_) => {
            return Err(ArmError::invalid(
                "timestamps",
                "timestamps must be true or false",
            ))
        }
    }
    let c = member(call, g, name).await?;
    let Some(host_id) = c.host_id.as_deref() else {
        return Ok(json(StatusCode::OK, serde_json::json!({ "content": "" })));
    };
    let mut stream = log_stream(call.state, host_id, c.id, tail, false).await?;
    let mut content = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk
            .map_err(|s| ApiError::Unavailable(format!("reading the logs: {}", s.message())))?;
        content.extend_from_slice(&chunk.data);
        if content.len() > 2 * MAX_LOG_BYTES {
            content.drain(..content.len() - MAX_LOG_BYTES);
        }
    }
    if content.len() > MAX_LOG_BYTES {
        content.drain(..content.len() - MAX_LOG_BYTES);
    }
    Ok(json(
        StatusCode::OK,
        serde_json::json!({ "content": String::from_utf8_lossy(&content) }),
    ))
}

async fn session(
    call: &Call<'_>,
    g: &GroupRef,
    name: &str,
    kind: Kind,
    body: &[u8],
) -> Result<Response, ArmError> {
    let c = member(call, g, name).await?;
    let (command, size) = match kind {
        Kind::Exec => {
            let req: ExecBody = crate::http::parse_json(body).map_err(ArmError::from)?;
            let command = exec::split_command(req.command.as_deref().unwrap_or(""))?;
            (command, req.terminal_size)
        }
        Kind::Attach => (Vec::new(), None),
    };
    if kind == Kind::Exec && c.state != skiff_core::ContainerState::Running {
        return Err(exec::not_running(name));
    }
    let (id, password) = exec::mint(call.state, call.tenant, c.id, kind, &command, size).await?;
    let ws_base = call.base.replacen("http", "ws", 1);
    Ok(json(
        StatusCode::OK,
        serde_json::json!({
            "webSocketUri": format!("{ws_base}/execSessions/{id}"),
            "password": password,
        }),
    ))
}
