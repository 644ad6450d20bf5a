//! The worker's Prometheus metrics and the small HTTP server that exposes
//! them (GET /metrics, text format) when `SKIFF_METRICS_LISTEN` is set.
//!
//! The counters follow the assignment stream and fencing, the parts of the
//! worker an operator cannot see from the control plane's side: how much
//! it was sent, what it killed, and which revision it has applied.

use axum::http::header::CONTENT_TYPE;
use axum::routing::get;
use prometheus::{Encoder, IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder};
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// What kind of assignment step an update belongs to (the `kind` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateKind {
    Snapshot,
    Delta,
}

impl UpdateKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Snapshot => "snapshot",
            Self::Delta => "delta",
        }
    }
}

pub struct WorkerMetrics {
    registry: Registry,
    /// One per `Assignment` entry received, snapshot or delta.
    pub assignments_received: IntCounter,
    /// One per `AssignmentUpdate` message, by kind.
    assignment_updates: IntCounterVec,
    /// Containers fenced (killed and removed: assigned elsewhere now).
    pub fenced: IntCounter,
    pub applied_revision: IntGauge,
    /// When the host certificate in use expires (alert well before it).
    pub certificate_expiry: IntGauge,
    /// Passes of the host's log budget (see [`crate::agent::logbudget`]).
    pub log_budget_passes: IntCounter,
}

impl Default for WorkerMetrics {
    fn default() -> Self {
        let registry = Registry::new();
        let assignments_received = IntCounter::new(
            "skiff_worker_assignments_received_total",
            "Assignments received from the control plane (one per entry, snapshot or delta)",
        )
        .expect("valid metric");
        let assignment_updates = IntCounterVec::new(
            Opts::new(
                "skiff_worker_assignment_updates_total",
                "AssignmentUpdate messages received, by kind of step",
            ),
            &["kind"],
        )
        .expect("valid metric");
        let fenced = IntCounter::new(
            "skiff_worker_fenced_total",
            "Containers killed and removed because the control plane no longer assigns them here",
        )
        .expect("valid metric");
        let applied_revision = IntGauge::new(
            "skiff_worker_applied_revision",
            "The last assignment revision fully applied, fencing included",
        )
        .expect("valid metric");
        let certificate_expiry = IntGauge::new(
            "skiff_worker_certificate_expiry_timestamp_seconds",
            "When the host certificate in use expires (Unix time); renewed at half its lifetime",
        )
        .expect("valid metric");
        let log_budget_passes = IntCounter::new(
            "skiff_worker_log_budget_passes_total",
            "Passes of the host's log budget completed (logs measured, finished ones cut past it)",
        )
        .expect("valid metric");
        for collector in [
            Box::new(certificate_expiry.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(log_budget_passes.clone()),
            Box::new(assignments_received.clone()),
            Box::new(assignment_updates.clone()),
            Box::new(fenced.clone()),
            Box::new(applied_revision.clone()),
        ] {
            registry.register(collector).expect("unique metric");
        }
        // Both kinds show from the start, at 0, so a dashboard's rate() has a series.
        for kind in [UpdateKind::Snapshot, UpdateKind::Delta] {
            assignment_updates.with_label_values(&[kind.as_str()]);
        }
        Self {
            registry,
            assignments_received,
            assignment_updates,
            fenced,
            applied_revision,
            certificate_expiry,
            log_budget_passes,
        }
    }
}

impl WorkerMetrics {
    pub fn update_received(&self, kind: UpdateKind, assignments: usize) {
        self.assignment_updates
            .with_label_values(&[kind.as_str()])
            .inc();
        self.assignments_received.inc_by(assignments as u64);
    }

    pub fn set_certificate_expiry(&self, not_after: std::time::SystemTime) {
        let secs = not_after
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.certificate_expiry
            .set(i64::try_from(secs).unwrap_or(i64::MAX));
    }

    pub fn set_applied_revision(&self, revision: u64) {
        self.applied_revision
            .set(i64::try_from(revision).unwrap_or(i64::MAX));
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

/// Serves GET /metrics on `listener` until `shutdown` is cancelled.
pub async fn serve_metrics(
    listener: TcpListener,
    metrics: Arc<WorkerMetrics>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = axum::Router::new().route(
        "/metrics",
        get(move || {
            let metrics = metrics.clone();
            async move {
                (
                    [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
                    metrics.render(),
                )
            }
        }),
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn counters_render_in_text_format() {
        let metrics = WorkerMetrics::default();
        metrics.update_received(UpdateKind::Snapshot, 3);
        metrics.update_received(UpdateKind::Delta, 1);
        metrics.update_received(UpdateKind::Delta, 0);
        metrics.fenced.inc();
        metrics.set_applied_revision(42);
        let text = metrics.render();
        for line in [
            "skiff_worker_assignments_received_total 4",
            "skiff_worker_assignment_updates_total{kind=\"snapshot\"} 1",
            "skiff_worker_assignment_updates_total{kind=\"delta\"} 2",
            "skiff_worker_fenced_total 1",
            "skiff_worker_applied_revision 42",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line:?} missing in\n{text}"
            );
        }
    }

    #[tokio::test]
    async fn server_answers_and_stops_with_the_token() {
        let metrics = Arc::new(WorkerMetrics::default());
        metrics.set_applied_revision(7);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(serve_metrics(listener, metrics, shutdown.clone()));

        let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
        conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut response = String::new();
        conn.read_to_string(&mut response).await.unwrap();
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        assert!(
            response.contains("skiff_worker_applied_revision 7"),
            "{response}"
        );

        shutdown.cancel();
        server.await.unwrap().unwrap();
    }
}
