//! `skiff events [-f] [--container X] [--since CURSOR]`: the tenant's event
//! log, a page as a table, or followed live over Server-Sent Events (one
//! line per event; a JSON object per line with `-o json`).

use super::Ctx;
use crate::args::EventsArgs;
use crate::client::Fetched;
use crate::output::{self, or_dash, print_value, Format};
use crate::sse::Decoder;
use crate::Error;
use futures::StreamExt;
use reqwest::Method;
use skiff_api::http::events::{EventItem, EventPage};

pub async fn events(ctx: &Ctx, args: EventsArgs) -> Result<i32, Error> {
    let mut query: Vec<(&str, String)> = Vec::new();
    if let Some(container) = &args.container {
        query.push(("container", ctx.client.resolve(container).await?));
    }
    if let Some(since) = &args.since {
        query.push(("since", since.clone()));
    }
    if args.follow {
        return follow(ctx, &query).await;
    }
    query.push(("limit", "1000".into()));
    let page: Fetched<EventPage> = ctx.client.get("/v1/events", &query).await?;
    if matches!(ctx.format, Format::Json | Format::Yaml) {
        print_value(ctx.format, &page.raw)?;
        return Ok(0);
    }
    let rows = page.typed.items.iter().map(row).collect();
    crate::outln!(
        "{}",
        output::rows(
            ctx.format,
            &["at", "container", "type", "state", "reason", "message"],
            rows
        )?
    );
    Ok(0)
}

fn row(e: &EventItem) -> Vec<String> {
    vec![
        e.at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        e.container_id.to_string(),
        e.type_.clone(),
        or_dash(e.state),
        or_dash(e.reason),
        e.message.clone(),
    ]
}

/// Follows the stream until the server closes it or Ctrl-C.
async fn follow(ctx: &Ctx, query: &[(&str, String)]) -> Result<i32, Error> {
    let path = "/v1/events";
    let request = ctx
        .client
        .request(Method::GET, path)
        .query(query)
        .header(reqwest::header::ACCEPT, "text/event-stream");
    let response = ctx.client.send(path, request).await?;
    let mut stream = response.bytes_stream();
    let mut decoder = Decoder::default();
    let reading = async {
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|source| Error::Transport {
                what: "reading the event stream of",
                url: ctx.client.url(path),
                source,
            })?;
            for event in decoder.push(&String::from_utf8_lossy(&chunk)) {
                print_event(ctx.format, &event.data)?;
            }
        }
        Ok::<_, Error>(())
    };
    tokio::select! {
        read = reading => read?,
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(0)
}

fn print_event(format: Format, data: &str) -> Result<(), Error> {
    if format == Format::Json {
        crate::outln!("{data}");
        return Ok(());
    }
    let item: EventItem = serde_json::from_str(data).map_err(|source| Error::Decode {
        url: "the event stream".into(),
        source,
    })?;
    crate::outln!("{}", row(&item).join("  "));
    Ok(())
}
