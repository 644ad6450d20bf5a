//! The tenant's container routes. A tenant sees only its own containers:
//! another tenant's id is indistinguishable from one that never existed.
//!
//! - this module: create, get, list, and the views they answer with.
//! - [`actions`]: stop, start, restart (idempotent with a key), delete.
//! - [`observe`]: wait, events, logs.
//! - [`exec`]: a process run in the running container.

mod actions;
mod exec;
mod observe;

pub use actions::*;
pub use exec::*;
pub use observe::*;

use super::problems::{Conflict, InvalidRequest, NotFound, QuotaExceeded, Unprocessable};
use super::{idempotency, json, parse_json, JsonBytes, Tenant};
use crate::error::ApiError;
use crate::model::{
    ContainerList, ContainerView, CreateContainer, NewContainer, PlacementRequest, PortView,
    PullView, Timings, UsageView,
};
use crate::scheduler::place;
use crate::scheduler::ports::NetworkMisfit;
use crate::store::{ContainerRow, ListFilter};
use crate::AppState;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use skiff_core::{ContainerState, NetworkMode, PublishedPort};
use std::collections::BTreeMap;
use std::sync::Arc;
use uuid::Uuid;

const MAX_PAGE: i64 = 1000;

/// Renders rows with their usage so far (one query for all of them).
pub(crate) async fn views(
    state: &AppState,
    rows: Vec<ContainerRow>,
) -> Result<Vec<ContainerView>, ApiError> {
    let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
    let mut conn = state.store.conn().await?;
    let usage = skiff_billing::container_usage(&mut conn, &ids).await?;
    drop(conn);
    let truncated = state.store.truncated_logs(&ids).await?;
    // The address published ports answer on: their host's, read now.
    let mut publishing: Vec<String> = rows
        .iter()
        .filter(|r| r.holds_capacity() && !r.host_ports.0.is_empty())
        .filter_map(|r| r.host_id.clone())
        .collect();
    publishing.sort();
    publishing.dedup();
    let host_ips = state.store.host_ips(&publishing).await?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let u = usage.get(&row.id).map(UsageView::from).unwrap_or_default();
            let logs_truncated = truncated.contains(&row.id);
            let host_ip = row.host_id.as_ref().and_then(|h| host_ips.get(h)).cloned();
            let mut view = view(row, u);
            for port in view.ports.iter_mut().filter(|p| p.host_port.is_some()) {
                port.host_ip = host_ip.clone();
            }
            ContainerView {
                logs_truncated,
                ..view
            }
        })
        .collect())
}

/// A container as the API shows it now (None: no such container).
pub(crate) async fn current_view(
    state: &AppState,
    tenant: Uuid,
    id: Uuid,
) -> Result<Option<ContainerView>, ApiError> {
    match state.store.get_container(tenant, id).await? {
        Some(row) => Ok(Some(view_one(state, row).await?)),
        None => Ok(None),
    }
}

pub(super) async fn view_one(
    state: &AppState,
    row: ContainerRow,
) -> Result<ContainerView, ApiError> {
    Ok(views(state, vec![row])
        .await?
        .pop()
        .expect("one row in, one view out"))
}

/// A container's published ports as shown: with the host ports of its
/// placement while it holds capacity there (none while pending or once
/// finished: they are free again). `host_ip` is left for the caller.
fn port_views(row: &ContainerRow) -> Vec<PortView> {
    let assigned: &[PublishedPort] = if row.holds_capacity() {
        &row.host_ports.0
    } else {
        &[]
    };
    row.ports
        .0
        .iter()
        .map(|asked| PortView {
            port: asked.port,
            protocol: asked.protocol,
            host_port: assigned
                .iter()
                .find(|p| (p.port, p.protocol) == (asked.port, asked.protocol))
                .map(|p| p.host_port),
            host_ip: None,
        })
        .collect()
}

pub fn view(row: ContainerRow, usage: UsageView) -> ContainerView {
    let ports = port_views(&row);
    let task_up = matches!(
        row.state,
        ContainerState::Running | ContainerState::Stopping
    );
    let ip = row
        .ip
        .filter(|_| task_up && row.network == NetworkMode::Private);
    ContainerView {
        network: row.network,
        network_group: row.network_group,
        read_only_rootfs: row.read_only_rootfs,
        volumes: row.volumes.0,
        mounts: row.mounts.0,
        pull: match (row.state, row.pull_bytes_done, row.pull_bytes_total) {
            (ContainerState::Pulling, Some(bytes_done), Some(bytes_total)) => Some(PullView {
                bytes_done,
                bytes_total,
            }),
            _ => None,
        },
        ready: row.state == ContainerState::Running && (row.readiness_probe.is_none() || row.ready),
        liveness_probe: row.liveness_probe.map(|p| p.0),
        readiness_probe: row.readiness_probe.map(|p| p.0),
        ip,
        ports,
        id: row.id,
        name: row.name,
        image: row.image,
        image_digest: row.image_digest,
        command: row.command.0,
        env: row.env.0,
        secure_env_keys: row.secure_env_keys,
        cpu: f64::from(row.cpu_millis) / 1000.0,
        memory_mib: row.memory_mib as u32,
        restart_policy: row.restart_policy,
        max_restarts: row.max_restarts.map(|n| n as u32),
        stop_timeout_s: row.stop_timeout_s as u32,
        timeout_s: row.timeout_s.map(|t| t as u32),
        max_cost: row.max_cost,
        notify_url: row.notify_url,
        labels: row.labels.0,
        max_pending_s: row.max_pending_s as u32,
        placement: PlacementRequest {
            host_labels: (!row.host_labels.0.is_empty()).then_some(row.host_labels.0),
        },
        state: row.state,
        reason: row.reason,
        message: row.message,
        exit_code: row.exit_code,
        restart_count: row.restart_count,
        host_id: row.host_id,
        created_at: row.created_at,
        started_at: row.started_at,
        finished_at: row.finished_at,
        timings: Timings {
            queued_ms: row.queued_ms,
            pull_ms: row.pull_ms,
            create_ms: row.create_ms,
            start_ms: row.start_ms,
        },
        usage,
        logs_truncated: false,
    }
}

/// The query of `GET /v1/containers`, read as pairs (`state` and `label`
/// repeat).
pub struct ListQuery;

impl utoipa::IntoParams for ListQuery {
    fn into_params(
        _: impl Fn() -> Option<utoipa::openapi::path::ParameterIn>,
    ) -> Vec<utoipa::openapi::path::Parameter> {
        use super::schemas;
        use utoipa::PartialSchema as _;
        vec![
            schemas::repeated_query(
                "state",
                "Only containers in this state (repeatable: any of them).",
                schemas::ContainerStateName::schema(),
            ),
            schemas::label_filter(),
            schemas::limit(),
            schemas::query(
                "cursor",
                "The previous page's `next`.",
                schemas::uuid().build(),
                false,
            ),
        ]
    }
}

/// A `label=key=value` query filter.
pub(crate) fn label_filter(value: &str) -> Result<(String, String), ApiError> {
    let (k, v) = value
        .split_once('=')
        .ok_or_else(|| ApiError::invalid("label", "must be key=value"))?;
    if v.contains('\0') || !skiff_core::is_label_key(k) {
        return Err(ApiError::invalid(
            "label",
            "key: 1 to 63 of letters, digits and -_./; value without NUL",
        ));
    }
    Ok((k.to_owned(), v.to_owned()))
}

pub(super) fn parse_id(raw: &str) -> Result<Uuid, ApiError> {
    // A malformed id cannot name any container: the same 404 as a missing one.
    Uuid::parse_str(raw).map_err(|_| ApiError::NotFound("container"))
}

pub(crate) async fn load(
    state: &AppState,
    tenant: Uuid,
    raw_id: &str,
) -> Result<ContainerRow, ApiError> {
    let id = parse_id(raw_id)?;
    state
        .store
        .get_container(tenant, id)
        .await?
        .ok_or(ApiError::NotFound("container"))
}

/// Run a container. Returns 201 once the request is durably stored.
#[utoipa::path(post, path = "/v1/containers", tag = "containers", request_body = CreateContainer,
    responses((status = 201, body = ContainerView), InvalidRequest, QuotaExceeded, Conflict, Unprocessable),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    headers: HeaderMap,
    body: JsonBytes,
) -> Result<Response, ApiError> {
    let idem = idempotency::from_request(&headers, &Method::POST, "/v1/containers", &body.0)?;
    let body: CreateContainer = parse_json(&body.0)?;
    let new = body.validate(state.config.max_pending_s)?;
    if let Some(url) = &new.notify_url {
        check_notify_url(&state, tenant, url).await?;
    }
    admit(&state, &new).await?;
    let render = |row: &ContainerRow| {
        idempotency::stored_json(
            StatusCode::CREATED,
            &view(row.clone(), UsageView::default()),
        )
    };
    let created = state
        .store
        .insert_container(
            tenant,
            &new,
            idem.as_ref(),
            &state.config.quota_defaults(),
            render,
        )
        .await?;
    idempotency::answer_created(&state, tenant, idem.as_ref(), created, |row| {
        tracing::info!(container = %row.id, tenant = %tenant, image = %row.image, "container created");
    })
    .await
}

/// A `notify_url` must be http(s), to a host the operator allows, and the
/// tenant must have a webhook secret to sign with.
pub(crate) async fn check_notify_url(
    state: &AppState,
    tenant: Uuid,
    url: &str,
) -> Result<(), ApiError> {
    let parsed = reqwest::Url::parse(url)
        .map_err(|e| ApiError::invalid("notify_url", format!("not a URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(ApiError::invalid(
            "notify_url",
            "must be an http or https URL",
        ));
    }
    let host = parsed.host_str().unwrap_or_default();
    if !state.config.webhook_host_allowed(host) {
        return Err(ApiError::invalid(
            "notify_url",
            format!("host {host:?} is not among the webhook destinations this server allows"),
        ));
    }
    if !state.store.has_webhook_secret(tenant).await? {
        return Err(ApiError::invalid(
            "notify_url",
            "create a webhook secret first (POST /v1/webhook-secret): deliveries are signed",
        ));
    }
    Ok(())
}

/// Refuses at once a request bigger than every live host (ready or
/// draining) that carries its labels, or asking a network none of them
/// could ever give it; queues it when there is no such host at all (one
/// may register).
async fn admit(state: &AppState, new: &NewContainer) -> Result<(), ApiError> {
    admit_shape(
        state,
        &Shape {
            host_labels: &new.host_labels,
            cpu_millis: new.cpu.millis().into(),
            memory_mib: new.memory.mib().into(),
            network: new.network,
            ports: &new.ports,
            what: "",
        },
    )
    .await
}

/// What admission looks at: one container's, or a whole group's.
pub(crate) struct Shape<'a> {
    pub host_labels: &'a BTreeMap<String, String>,
    pub cpu_millis: i64,
    pub memory_mib: i64,
    pub network: NetworkMode,
    pub ports: &'a [skiff_core::PortRequest],
    /// Empty for a container; else how the detail names the asker (e.g.
    /// "the group's containers in all").
    pub what: &'a str,
}

/// See [`admit`]: the check on any [`Shape`].
pub(crate) async fn admit_shape(state: &AppState, new: &Shape<'_>) -> Result<(), ApiError> {
    let hosts = state
        .store
        .live_hosts(state.config.host_lost_after())
        .await?;
    let Some((max_cpu, max_memory)) = place::largest_fit(&hosts, new.host_labels) else {
        return Ok(());
    };
    let asker = if new.what.is_empty() {
        String::new()
    } else {
        format!(" ({})", new.what)
    };
    if new.cpu_millis > max_cpu {
        let max = max_cpu as f64 / 1000.0;
        return Err(ApiError::NoHostFits {
            field: "cpu".into(),
            max: Some(serde_json::json!(max)),
            detail: format!(
                "no host offers {} vCPU{asker}; the largest offers {max}",
                new.cpu_millis as f64 / 1000.0
            ),
        });
    }
    if new.memory_mib > max_memory {
        return Err(ApiError::NoHostFits {
            field: "memory_mib".into(),
            max: Some(serde_json::json!(max_memory)),
            detail: format!(
                "no host offers {} MiB{asker}; the largest offers {max_memory} MiB",
                new.memory_mib
            ),
        });
    }
    match place::network_misfit(&hosts, new.host_labels, new.network, new.ports) {
        None => Ok(()),
        Some(misfit) => Err(network_refusal(misfit)),
    }
}

/// The answer to a request no live host could ever give its network.
fn network_refusal(misfit: NetworkMisfit) -> ApiError {
    let (field, max, detail) = match misfit {
        NetworkMisfit::NoNetwork => (
            "network".to_owned(),
            None,
            "no host offers a private network (network: none runs on any)".to_owned(),
        ),
        NetworkMisfit::HostPortOutOfRange {
            index,
            host_port,
            ranges,
        } => {
            let ranges: Vec<String> = ranges.iter().map(ToString::to_string).collect();
            (
                format!("ports[{index}].host_port"),
                None,
                format!(
                    "no host publishes host port {host_port}; their ranges: {}",
                    ranges.join(", ")
                ),
            )
        }
        NetworkMisfit::TooManyPorts { max } => (
            "ports".to_owned(),
            Some(serde_json::json!(max)),
            format!(
                "no host publishes this many ports of one protocol; the largest range holds {max}"
            ),
        ),
        NetworkMisfit::NoSingleHost => (
            "ports".to_owned(),
            None,
            "no single host publishes all of these host ports".to_owned(),
        ),
    };
    ApiError::NoHostOffers { field, max, detail }
}

/// Get one container.
#[utoipa::path(get, path = "/v1/containers/{id}", tag = "containers",
    params(("id" = Uuid, Path, description = "container id")),
    responses((status = 200, body = ContainerView), NotFound),
    security(("bearer" = [])))]
pub async fn get(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let row = load(&state, tenant, &id).await?;
    Ok(json(StatusCode::OK, view_one(&state, row).await?))
}

/// List containers: `state=` and `label=key=value` filters (repeatable),
/// `limit` (default 100, at most 1000) and `cursor` (the previous page's `next`).
#[utoipa::path(get, path = "/v1/containers", tag = "containers", params(ListQuery),
    responses((status = 200, body = ContainerList), InvalidRequest),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    query: Result<Query<Vec<(String, String)>>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::invalid("query", e.body_text()))?;
    let mut filter = ListFilter {
        limit: super::DEFAULT_PAGE,
        ..Default::default()
    };
    let mut labels = BTreeMap::new();
    for (key, value) in query {
        match key.as_str() {
            "state" => filter.states.push(
                value
                    .parse::<ContainerState>()
                    .map_err(|e| ApiError::invalid("state", e))?,
            ),
            "label" => {
                let (k, v) = label_filter(&value)?;
                labels.insert(k, v);
            }
            "limit" => {
                filter.limit = value
                    .parse::<i64>()
                    .ok()
                    .filter(|n| (1..=MAX_PAGE).contains(n))
                    .ok_or_else(|| ApiError::invalid("limit", "must be 1 to 1000"))?;
            }
            "cursor" => {
                filter.after = Some(
                    Uuid::parse_str(&value)
                        .map_err(|_| ApiError::invalid("cursor", "not a cursor from this API"))?,
                )
            }
            other => return Err(ApiError::invalid(other, "unknown query parameter")),
        }
    }
    filter.labels = labels;
    let rows = state.store.list_containers(tenant, &filter).await?;
    let next = (rows.len() as i64 == filter.limit)
        .then(|| rows.last().map(|r| r.id.to_string()))
        .flatten();
    Ok(json(
        StatusCode::OK,
        ContainerList {
            items: views(&state, rows).await?,
            next,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::ports::PortRange;

    #[test]
    fn network_refusals_are_409_naming_the_field() {
        let ranges = vec![PortRange {
            start: 20000,
            end: 20999,
        }];
        #[rustfmt::skip]
        let rows = [
            // (misfit, field, max)
            (NetworkMisfit::NoNetwork, "network", None),
            (NetworkMisfit::HostPortOutOfRange { index: 1, host_port: 8080, ranges }, "ports[1].host_port", None),
            (NetworkMisfit::TooManyPorts { max: 1000 }, "ports", Some(serde_json::json!(1000))),
            (NetworkMisfit::NoSingleHost, "ports", None),
        ];
        for (misfit, field, max) in rows {
            let problem = network_refusal(misfit.clone()).to_problem();
            assert_eq!(problem.status, 409, "{misfit:?}");
            assert!(problem.type_.ends_with("/no-host-offers"), "{misfit:?}");
            assert_eq!(problem.field.as_deref(), Some(field), "{misfit:?}");
            assert_eq!(problem.max, max, "{misfit:?}");
        }
        let detail = network_refusal(NetworkMisfit::HostPortOutOfRange {
            index: 0,
            host_port: 80,
            ranges: vec![PortRange {
                start: 20000,
                end: 20999,
            }],
        })
        .to_problem()
        .detail;
        assert!(
            detail.contains("80") && detail.contains("20000-20999"),
            "{detail}"
        );
    }
}
