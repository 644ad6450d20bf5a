//! Reporting to the control plane: status reports delivered in order and
//! retried until acknowledged (the control plane stores them idempotently),
//! meter checkpoints sent once, and the builders of both messages.
//!
//! Delivery goes through [`ReportSink`], so the agent's tests record reports
//! instead of dialing a control plane. Each container has its own
//! [`Outbox`]; fencing a container cancels it, so none of its queued reports
//! reach the control plane afterwards.

use async_trait::async_trait;
use backon::{ExponentialBuilder, Retryable};
use skiff_proto as pb;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Retries of an undelivered status report: soon at first, then every
/// couple of seconds while the control plane is away.
const REPORT_BACKOFF: ExponentialBuilder = ExponentialBuilder::new()
    .with_min_delay(Duration::from_millis(100))
    .with_max_delay(Duration::from_secs(2))
    .with_jitter()
    .without_max_times();

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// The control plane refused a report as impossible (not a failure to
/// deliver it): final, never retried.
fn is_refusal(status: &tonic::Status) -> bool {
    status.code() == tonic::Code::InvalidArgument
}

/// Where reports go: the control plane's `ReportStatus` and `ReportUsage`.
#[async_trait]
pub trait ReportSink: Send + Sync + 'static {
    async fn status(&self, report: pb::StatusReport) -> Result<(), tonic::Status>;
    async fn usage(&self, checkpoint: pb::UsageCheckpoint) -> Result<(), tonic::Status>;
}

/// A back-off sleeper for backon that wakes early when `token` is
/// cancelled, so no retry delay holds up shutdown or fencing.
pub(crate) fn cancellable_sleep(
    token: CancellationToken,
) -> impl Fn(Duration) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync + 'static
{
    move |delay| {
        let token = token.clone();
        Box::pin(async move {
            tokio::select! {
                _ = token.cancelled() => {}
                _ = tokio::time::sleep(delay) => {}
            }
        })
    }
}

/// Sends this host's reports. Cheap to clone.
#[derive(Clone)]
pub struct Reporter {
    sink: Arc<dyn ReportSink>,
}

impl Reporter {
    pub fn new(sink: Arc<dyn ReportSink>) -> Self {
        Self { sink }
    }

    /// Meter checkpoints are sent once: the next one, a few seconds later,
    /// supersedes a lost one, and the run's end is reported reliably anyway.
    pub async fn checkpoint(&self, checkpoint: pb::UsageCheckpoint) {
        if let Err(status) = self.sink.usage(checkpoint).await {
            tracing::debug!(%status, "meter checkpoint not delivered");
        }
    }

    /// Sends `report` until the control plane acknowledges it, or `cancel`
    /// fires (shutdown, or the container was fenced: it is another host's now).
    pub(super) async fn send(&self, report: pb::StatusReport, cancel: &CancellationToken) {
        let attempt = || {
            let report = report.clone();
            async {
                // Checked before every attempt: a cancel that arrives during
                // the back-off must not be followed by one more delivery.
                if cancel.is_cancelled() {
                    return Err(tonic::Status::cancelled("report withdrawn"));
                }
                self.sink.status(report).await
            }
        };
        let result = attempt
            .retry(REPORT_BACKOFF)
            .sleep(cancellable_sleep(cancel.clone()))
            // A refusal is the control plane's final word (the report claims
            // what cannot be, e.g. a container another host holds now):
            // sending it again would change nothing.
            .when(|status| !cancel.is_cancelled() && !is_refusal(status))
            .notify(|status, delay| {
                tracing::warn!(container = %report.container_id, %status, ?delay,
                    "report not delivered; retrying");
            })
            .await;
        if let Err(status) = &result {
            if is_refusal(status) {
                tracing::error!(container = %report.container_id, %status,
                    "report refused by the control plane; dropped");
            }
        }
    }
}

/// One container's reports waiting for delivery, sent in order by a task of
/// their own: the supervisor never waits for the control plane (the facts
/// are already recorded in containerd, and waiting would put a database
/// round trip on the start path).
pub struct Outbox {
    queue: mpsc::UnboundedSender<pb::StatusReport>,
    cancel: CancellationToken,
}

impl Outbox {
    /// Starts the delivery task; it ends when `cancel` fires or the outbox
    /// is dropped and everything queued has been delivered.
    pub fn spawn(
        reporter: Reporter,
        cancel: CancellationToken,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (queue, mut queued) = mpsc::unbounded_channel::<pb::StatusReport>();
        let token = cancel.clone();
        let delivery = tokio::spawn(async move {
            loop {
                let report = tokio::select! {
                    biased;
                    _ = token.cancelled() => return,
                    report = queued.recv() => match report {
                        Some(report) => report,
                        None => return,
                    },
                };
                reporter.send(report, &token).await;
            }
        });
        (Self { queue, cancel }, delivery)
    }

    /// Queues `report`; dropped once the container's outbox is cancelled.
    pub fn push(&self, report: pb::StatusReport) {
        if !self.cancel.is_cancelled() {
            let _ = self.queue.send(report);
        }
    }
}

pub fn event(generation: u64, kind: &str, message: impl Into<String>) -> pb::Event {
    pb::Event {
        key: format!("{generation}:{}", kind.to_ascii_lowercase()),
        kind: kind.to_owned(),
        message: message.into(),
        at_unix_ms: now_ms(),
    }
}

pub fn report(id: &str, generation: u64, state: pb::ObservedState) -> pb::StatusReport {
    pb::StatusReport {
        container_id: id.to_owned(),
        generation,
        state: state as i32,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Answers every status report with `code`, counting the calls.
    struct Answering {
        code: tonic::Code,
        calls: AtomicUsize,
    }

    #[async_trait]
    impl ReportSink for Answering {
        async fn status(&self, _: pb::StatusReport) -> Result<(), tonic::Status> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            // An unavailable control plane comes back on the third try.
            if self.code == tonic::Code::Unavailable && n >= 2 {
                return Ok(());
            }
            Err(tonic::Status::new(self.code, "no"))
        }

        async fn usage(&self, _: pb::UsageCheckpoint) -> Result<(), tonic::Status> {
            Ok(())
        }
    }

    async fn attempts(code: tonic::Code) -> usize {
        let sink = Arc::new(Answering {
            code,
            calls: AtomicUsize::new(0),
        });
        let reporter = Reporter::new(sink.clone());
        reporter
            .send(pb::StatusReport::default(), &CancellationToken::new())
            .await;
        sink.calls.load(Ordering::SeqCst)
    }

    #[tokio::test]
    async fn a_refused_report_is_dropped_and_an_undelivered_one_retried() {
        assert_eq!(attempts(tonic::Code::InvalidArgument).await, 1);
        assert_eq!(attempts(tonic::Code::Unavailable).await, 3);
    }
}
