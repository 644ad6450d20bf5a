//! `GET /v1/events`: the tenant's event log in commit order. The SSE stream
//! resumes from its last id without loss or duplicates (checked against the
//! JSON pages), and a reader following it while two replicas write sees
//! every event exactly once, in the log's order.

use futures::StreamExt;
use reqwest::Method;
use serde_json::Value;
use skiff_e2e::{eventually, limit, secs, Platform, Tenant};
use std::collections::BTreeSet;
use std::time::Duration;

/// Every event of the tenant, through JSON pages of `page` items.
async fn all_pages(t: &Tenant, page: usize) -> Vec<Value> {
    let mut items = Vec::new();
    let mut since: Option<String> = None;
    loop {
        let mut path = format!("/v1/events?limit={page}");
        if let Some(since) = &since {
            path.push_str(&format!("&since={since}"));
        }
        let reply = t.call(Method::GET, &path, None).await;
        assert_eq!(reply.status, 200, "{reply:?}");
        let body = reply.json();
        let got = body["items"].as_array().unwrap().clone();
        let done = got.len() < page;
        items.extend(got);
        since = Some(body["next"].as_str().unwrap().to_owned());
        if done {
            return items;
        }
    }
}

/// The log once it holds the terminal state of every one of `ids`.
async fn log_with_terminal(t: &Tenant, ids: &[String]) -> Vec<Value> {
    eventually(
        "every container's final state in the log",
        Duration::from_secs(60),
        || async {
            let items = all_pages(t, 7).await;
            let finished: BTreeSet<&str> = items
                .iter()
                .filter(|e| e["type"] == "state" && e["state"] == "succeeded")
                .filter_map(|e| e["container_id"].as_str())
                .collect();
            ids.iter()
                .all(|id| finished.contains(id.as_str()))
                .then_some(items.clone())
        },
    )
    .await
}

/// An SSE reader: events (id, data) as they arrive.
struct Sse {
    body: futures::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buffer: String,
}

impl Sse {
    async fn open(t: &Tenant, last_event_id: Option<&str>) -> Sse {
        let mut request = t
            .client
            .get(format!("{}/v1/events", t.api_url))
            .bearer_auth(&t.token)
            .header("Accept", "text/event-stream")
            .timeout(Duration::from_secs(600));
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id);
        }
        let response = request.send().await.expect("GET /v1/events (SSE)");
        assert_eq!(response.status(), 200);
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            content_type.starts_with("text/event-stream"),
            "{content_type}"
        );
        Sse {
            body: response.bytes_stream().boxed(),
            buffer: String::new(),
        }
    }

    /// The next event's data (keep-alive comments skipped).
    async fn next(&mut self) -> Value {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let (mut id, mut data) = (None, String::new());
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        id = Some(v.trim().to_owned());
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                if data.is_empty() {
                    continue; // a keep-alive
                }
                let value: Value = serde_json::from_str(&data).expect("JSON data");
                assert_eq!(
                    id.as_deref(),
                    value["cursor"].as_str(),
                    "the SSE id is the cursor"
                );
                return value;
            }
            let chunk = tokio::time::timeout(Duration::from_secs(30), self.body.next())
                .await
                .expect("an event within 30 s")
                .expect("the stream stays open")
                .expect("reading the stream");
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    /// Reads until every cursor of `want` has arrived; everything read.
    async fn read_until(&mut self, want: &BTreeSet<String>) -> Vec<Value> {
        let mut got = Vec::new();
        let mut seen = BTreeSet::new();
        while !want.is_subset(&seen) {
            let event = self.next().await;
            seen.insert(event["cursor"].as_str().unwrap().to_owned());
            got.push(event);
        }
        got
    }
}

fn cursors(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["cursor"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn the_event_stream_resumes_from_its_last_id_without_loss_or_duplicates() {
    limit(secs(120), async {
        let platform = Platform::get().await;
        let t = platform.new_tenant().await;
        let mut ids = Vec::new();
        for word in ["one", "two"] {
            let id = t.create_id(&platform.spec(&["echo", word])).await;
            t.wait_exited_in(&id, "succeeded").await;
            ids.push(id);
        }
        let log = log_with_terminal(&t, &ids).await;
        assert!(log.len() >= 10, "{log:?}");
        // Pages of different sizes agree.
        assert_eq!(
            cursors(&all_pages(&t, 1000).await)[..log.len()],
            cursors(&log)[..]
        );

        // The stream from the start, cut after half...
        let half = log.len() / 2;
        let mut sse = Sse::open(&t, None).await;
        let mut first = Vec::new();
        for _ in 0..half {
            first.push(sse.next().await);
        }
        drop(sse);
        let last = first.last().unwrap()["cursor"].as_str().unwrap().to_owned();
        // ... and again from its last id.
        let mut sse = Sse::open(&t, Some(&last)).await;
        let rest_wanted: BTreeSet<String> = cursors(&log[half..]).into_iter().collect();
        let rest = sse.read_until(&rest_wanted).await;
        let mut streamed = cursors(&first);
        streamed.extend(cursors(&rest));
        assert_eq!(
            streamed,
            cursors(&log),
            "the stream is the log: nothing lost, nothing twice"
        );

        // It follows the log live: a new container's events arrive.
        let third = t.create_id(&platform.spec(&["echo", "three"])).await;
        let live = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                let event = sse.next().await;
                if event["container_id"] == third.as_str() {
                    return event;
                }
            }
        })
        .await
        .expect("the new container's events on the stream");
        assert_eq!(live["container_id"], third.as_str());
    })
    .await
}

#[tokio::test]
async fn a_reader_sees_every_event_once_while_two_replicas_write() {
    limit(secs(150), async {
        let platform = Platform::get().await;
        let t = platform.new_tenant().await;
        assert!(platform.apis.len() >= 2);
        let mut sse = Sse::open(&t, None).await;
        let via2 = t.via(2);
        let creates = (0..16).map(|i| {
            let (t, via2) = (&t, &via2);
            async move {
                let writer = if i % 2 == 0 { t } else { via2 };
                writer
                    .create_id(&platform.spec(&["echo", &format!("w{i}")]))
                    .await
            }
        });
        let ids = futures::future::join_all(creates).await;
        for id in &ids {
            t.wait_exited_in(id, "succeeded").await;
        }
        let log = log_with_terminal(&t, &ids).await;
        let want: BTreeSet<String> = cursors(&log).into_iter().collect();
        let streamed = sse.read_until(&want).await;
        let streamed_cursors = cursors(&streamed);
        let unique: BTreeSet<&String> = streamed_cursors.iter().collect();
        assert_eq!(
            unique.len(),
            streamed_cursors.len(),
            "an event arrived twice"
        );
        assert_eq!(
            streamed_cursors[..log.len()],
            cursors(&log)[..],
            "the stream's order is the log's"
        );
    })
    .await
}
