//! `GET /v1/events`: the tenant's event log (every event and every change
//! of state of its containers) in commit order, after a resumable cursor.
//! A JSON page `{"items": [...], "next": cursor}`, or with `Accept:
//! text/event-stream` a Server-Sent Events stream that follows the log;
//! each event's SSE id is its cursor, so a client that reconnects with
//! `Last-Event-ID` (or `since`) loses nothing and sees nothing twice.

use super::containers::label_filter;
use super::problems::InvalidRequest;
use super::schemas;
use super::{json, Tenant};
use crate::error::ApiError;
use crate::store::events::{Cursor, EventFilter, LoggedEvent};
use crate::AppState;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use skiff_core::{ContainerState, Reason};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

const MAX_PAGE: i64 = 1000;
/// How often a stream looks again when nothing woke it.
const STREAM_POLL: Duration = Duration::from_secs(1);

/// One entry of the log.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EventItem {
    /// Resume after this event with `since=<cursor>`.
    #[schema(value_type = schemas::EventCursor)]
    pub cursor: String,
    pub container_id: Uuid,
    /// `state` for a change of state, else the event's kind (Scheduled,
    /// Pulling, Started, Exited, Killing, DeadlineExceeded, ...).
    #[serde(rename = "type")]
    pub type_: String,
    #[schema(value_type = Option<schemas::ContainerStateName>)]
    pub state: Option<ContainerState>,
    #[schema(value_type = Option<schemas::ReasonName>)]
    pub reason: Option<Reason>,
    pub message: String,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EventPage {
    pub items: Vec<EventItem>,
    /// The cursor to ask from next (the last item's, or the one asked from).
    #[schema(value_type = schemas::EventCursor)]
    pub next: String,
}

fn item(e: LoggedEvent) -> EventItem {
    EventItem {
        cursor: e.cursor().to_string(),
        container_id: e.container_id,
        type_: e.type_,
        state: e.state,
        reason: e.reason,
        message: e.message,
        at: e.at,
    }
}

/// The query of `GET /v1/events`, read as pairs (`label` repeats).
pub struct EventsQuery;

impl utoipa::IntoParams for EventsQuery {
    fn into_params(
        _: impl Fn() -> Option<utoipa::openapi::path::ParameterIn>,
    ) -> Vec<utoipa::openapi::path::Parameter> {
        use utoipa::PartialSchema as _;
        let cursor = schemas::EventCursor::schema;
        // (The `Last-Event-ID` header is described in the operation's
        // text, not as a parameter: a cursor holds a `-`, and schemathesis
        // makes header values of letters and digits only, so it would send
        // a "valid" one that is not a cursor.)
        vec![
            schemas::query("since", "Only events after this cursor.", cursor(), false),
            schemas::query(
                "container",
                "Only this container's events.",
                schemas::uuid().build(),
                false,
            ),
            schemas::query(
                "job",
                "Only the events of this job's task containers.",
                schemas::uuid().build(),
                false,
            ),
            schemas::query(
                "type",
                "Only events of this type: `state`, an event kind, or `removed`.",
                schemas::string()
                    .pattern(Some(schemas::NO_NUL_PATTERN))
                    .build(),
                false,
            ),
            schemas::label_filter(),
            schemas::limit(),
        ]
    }
}

/// The tenant's events in commit order (JSON page, or SSE with `Accept:
/// text/event-stream`). Filters: `container=<id>`, `job=<id>`, `type=`, `label=k=v`
/// (repeatable); `since=<cursor>`; `limit` (JSON, 1 to 1000). A
/// `Last-Event-ID: <cursor>` header (a reconnecting event stream's) wins
/// over `since`.
#[utoipa::path(get, path = "/v1/events", tag = "events", params(EventsQuery),
    responses((status = 200, description = "a page of the log, or (with `Accept: text/event-stream`) \
            the log as Server-Sent Events: each event's id is its cursor, its type the item's `type`, \
            its data the item as JSON",
            content((EventPage = "application/json"), (String = "text/event-stream"))),
        InvalidRequest),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    headers: HeaderMap,
    query: Result<Query<Vec<(String, String)>>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::invalid("query", e.body_text()))?;
    let mut filter = EventFilter::default();
    let mut since = None;
    let mut limit = super::DEFAULT_PAGE;
    for (key, value) in query {
        match key.as_str() {
            "since" => since = Some(parse_cursor("since", &value)?),
            "container" => {
                filter.container = Some(
                    Uuid::parse_str(&value)
                        .map_err(|_| ApiError::invalid("container", "not a container id"))?,
                )
            }
            "job" => {
                filter.job = Some(
                    Uuid::parse_str(&value)
                        .map_err(|_| ApiError::invalid("job", "not a job id"))?,
                )
            }
            "type" => {
                // (PostgreSQL's text cannot hold a NUL: it would fail the query)
                if value.contains('\0') {
                    return Err(ApiError::invalid("type", "must not contain NUL"));
                }
                filter.type_ = Some(value)
            }
            "label" => {
                let (k, v) = label_filter(&value)?;
                filter.labels.insert(k, v);
            }
            "limit" => {
                limit = value
                    .parse::<i64>()
                    .ok()
                    .filter(|n| (1..=MAX_PAGE).contains(n))
                    .ok_or_else(|| ApiError::invalid("limit", "must be 1 to 1000"))?
            }
            other => return Err(ApiError::invalid(other, "unknown query parameter")),
        }
    }
    let wants_stream = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"));
    // Last-Event-ID (a reconnecting EventSource) wins over `since`.
    if let Some(last) = headers.get("last-event-id") {
        let last = last
            .to_str()
            .map_err(|_| ApiError::invalid("Last-Event-ID", "not a cursor from this API"))?;
        since = Some(parse_cursor("Last-Event-ID", last)?);
    }
    if wants_stream {
        return Ok(stream(state, tenant, filter, since.unwrap_or_default()).into_response());
    }
    let after = since.unwrap_or_default();
    let items: Vec<EventItem> = state
        .store
        .events_after(tenant, after, &filter, limit)
        .await?
        .into_iter()
        .map(item)
        .collect();
    let next = items
        .last()
        .map_or_else(|| after.to_string(), |i| i.cursor.clone());
    Ok(json(StatusCode::OK, EventPage { items, next }))
}

fn parse_cursor(field: &str, value: &str) -> Result<Cursor, ApiError> {
    Cursor::parse(value).ok_or_else(|| ApiError::invalid(field, "not a cursor from this API"))
}

/// Follows the log from `after` until the client goes away or the server
/// shuts down.
fn stream(
    state: Arc<AppState>,
    tenant: Uuid,
    filter: EventFilter,
    mut after: Cursor,
) -> Sse<impl futures::Stream<Item = Result<Event, Infallible>>> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Event>(64);
    tokio::spawn(async move {
        let mut changes = state.hub.watch_containers();
        // Bounded: at most SKIFF_STREAM_MAX_S open (the client reconnects
        // with Last-Event-ID and loses nothing), and a client that takes no
        // event for SKIFF_STREAM_IDLE_S is let go.
        let ends = tokio::time::Instant::now() + state.config.stream_max();
        let idle = state.config.stream_idle();
        loop {
            if tokio::time::Instant::now() >= ends {
                return;
            }
            let page = match state
                .store
                .events_after(tenant, after, &filter, MAX_PAGE)
                .await
            {
                Ok(page) => page,
                Err(err) => {
                    tracing::warn!(error = %err, "event stream: reading the log failed; retrying");
                    Vec::new()
                }
            };
            let full = page.len() as i64 == MAX_PAGE;
            for event in page {
                after = event.cursor();
                let item = item(event);
                let sse = Event::default()
                    .id(item.cursor.clone())
                    .event(item.type_.clone())
                    .json_data(&item)
                    .expect("an event serialises");
                match tokio::time::timeout(idle, tx.send(sse)).await {
                    Ok(Ok(())) => {}
                    // The client went away, or stopped reading.
                    Ok(Err(_)) | Err(_) => return,
                }
            }
            if full {
                continue;
            }
            tokio::select! {
                _ = tx.closed() => return,
                _ = state.shutdown.cancelled() => return,
                _ = tokio::time::sleep_until(ends) => return,
                _ = changes.recv() => {}
                _ = tokio::time::sleep(STREAM_POLL) => {}
            }
        }
    });
    let events = tokio_stream::wrappers::ReceiverStream::new(rx);
    Sse::new(futures::StreamExt::map(events, Ok)).keep_alive(KeepAlive::default())
}
