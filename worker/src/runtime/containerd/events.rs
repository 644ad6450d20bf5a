//! containerd's event stream, narrowed to what ends a run: the main
//! process's exit and OOM kills, in the worker's namespace.

use super::*;

/// Subscribes to task exit and OOM events in our namespace and forwards
/// those of main processes, re-subscribing with back-off when the stream
/// breaks. Ends when the receiver is dropped. Events that happen while
/// disconnected are lost; the agent's reconcile reads task state anyway.
pub(super) async fn forward(conn: Conn, namespace: String, tx: mpsc::Sender<TaskEvent>) {
    // Re-subscribing: soon at first, at most every few seconds; a
    // subscription that worked starts the back-off afresh.
    const RESUBSCRIBE: ExponentialBuilder = ExponentialBuilder::new()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(5))
        .with_jitter()
        .without_max_times();
    let mut backoff = RESUBSCRIBE.build();
    let filters = vec![
        format!(r#"topic=="/tasks/exit",namespace=="{namespace}""#),
        format!(r#"topic=="/tasks/oom",namespace=="{namespace}""#),
    ];
    loop {
        let mut client = EventsClient::new(conn.channel.clone());
        // Subscribe only returns once the first event arrives (containerd
        // sends headers lazily), so it is awaited here, in its own task.
        let subscribed = tokio::select! {
            r = client.subscribe(conn.req(SubscribeRequest { filters: filters.clone() })) => r,
            _ = tx.closed() => return,
        };
        match subscribed {
            Ok(response) => {
                backoff = RESUBSCRIBE.build();
                let mut stream = response.into_inner();
                loop {
                    let next = tokio::select! {
                        m = stream.message() => m,
                        _ = tx.closed() => return,
                    };
                    match next {
                        Ok(Some(envelope)) => {
                            if let Some(event) = decode_event(&envelope, &namespace) {
                                debug!(?event, "task event");
                                if tx.send(event).await.is_err() {
                                    return;
                                }
                            }
                        }
                        Ok(None) => {
                            warn!("containerd event stream ended; re-subscribing");
                            break;
                        }
                        Err(s) => {
                            warn!(error = %s, "containerd event stream failed; re-subscribing");
                            break;
                        }
                    }
                }
            }
            Err(s) => warn!(error = %s, "subscribing to containerd events"),
        }
        // Without a max_times the back-off never runs out.
        let delay = backoff.next().unwrap_or(Duration::from_secs(5));
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = tx.closed() => return,
        }
    }
}

/// Event `Any`s carry type URLs without a '/' (`containerd.events.TaskExit`).
fn decode_event(
    envelope: &containerd_client::types::Envelope,
    namespace: &str,
) -> Option<TaskEvent> {
    if envelope.namespace != namespace {
        return None;
    }
    let any = envelope.event.as_ref()?;
    let type_name = any.type_url.rsplit('/').next().unwrap_or_default();
    match type_name {
        "containerd.events.TaskExit" => {
            let exit = TaskExit::decode(any.value.as_slice()).ok()?;
            // Exec'd processes exit too; only the main process ends the run.
            if !exit.id.is_empty() && exit.id != exit.container_id {
                return None;
            }
            Some(TaskEvent::Exited {
                id: exit.container_id,
                exit_code: exit.exit_status as i32,
                exited_at_unix_ms: exit.exited_at.as_ref().map_or_else(now_ms, ts_ms),
            })
        }
        "containerd.events.TaskOOM" | "containerd.events.TaskOom" => {
            let oom = TaskOom::decode(any.value.as_slice()).ok()?;
            Some(TaskEvent::OomKilled {
                id: oom.container_id,
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope<M: Message>(type_url: &str, msg: &M) -> containerd_client::types::Envelope {
        containerd_client::types::Envelope {
            timestamp: None,
            namespace: "skiff-test".into(),
            topic: "/tasks/exit".into(),
            event: Some(prost_types::Any {
                type_url: type_url.into(),
                value: msg.encode_to_vec(),
            }),
        }
    }

    #[test]
    fn only_main_process_exits_are_forwarded() {
        let main = TaskExit {
            container_id: "c1".into(),
            id: "c1".into(),
            pid: 10,
            exit_status: 3,
            exited_at: Some(prost_types::Timestamp {
                seconds: 1,
                nanos: 500_000_000,
            }),
        };
        match decode_event(&envelope("containerd.events.TaskExit", &main), "skiff-test") {
            Some(TaskEvent::Exited {
                id,
                exit_code,
                exited_at_unix_ms,
            }) => {
                assert_eq!(id, "c1");
                assert_eq!(exit_code, 3);
                assert_eq!(exited_at_unix_ms, 1500);
            }
            other => panic!("unexpected {other:?}"),
        }
        let exec = TaskExit {
            id: "exec-1".into(),
            ..main.clone()
        };
        assert!(
            decode_event(&envelope("containerd.events.TaskExit", &exec), "skiff-test").is_none()
        );
        assert!(decode_event(&envelope("containerd.events.TaskExit", &main), "other").is_none());
        let oom = TaskOom {
            container_id: "c1".into(),
        };
        assert!(matches!(
            decode_event(&envelope("containerd.events.TaskOOM", &oom), "skiff-test"),
            Some(TaskEvent::OomKilled { id }) if id == "c1"
        ));
    }
}
