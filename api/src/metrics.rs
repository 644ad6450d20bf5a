//! Prometheus metrics of the control plane: API latency and the phases of
//! a container's start (queue, pull, create, start), so operators see the
//! same figures the benchmark prints.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    pub http_duration: HistogramVec,
    pub phase_duration: HistogramVec,
    pub reports: IntCounterVec,
    pub checkpoints: IntCounterVec,
    /// Set from PostgreSQL at each scrape (the meter's state lives there).
    pub open_runs: IntGauge,
    /// Counter semantics (it only grows); a gauge type because it is set
    /// from the ledger's running total rather than incremented here.
    pub metered_seconds: IntGauge,
    /// Containers placed on a host by this replica's scheduler.
    pub placements: IntCounter,
    /// Hosts this replica judged lost.
    pub hosts_lost: IntCounter,
    /// Assignments sent to workers (one per container in a snapshot or delta).
    pub assignments_sent: IntCounterVec,
    /// Worker reports refused as impossible (see `report_bounds`), by reason.
    pub reports_refused: IntCounterVec,
    /// Calls on the workers' endpoint refused for their credential, by reason.
    pub calls_refused: IntCounterVec,
    /// TLS handshakes on the workers' endpoint refused, by reason.
    pub handshakes_refused: IntCounterVec,
    /// Joins, by outcome (`joined`, or why the token was refused).
    pub joins: IntCounterVec,
    /// Time each step of a scheduler pass took (`expire`, `deadlines`,
    /// `jobs`, `hosts`, `place`, `restarts`).
    pub scheduler_step: HistogramVec,
}

impl Default for Metrics {
    fn default() -> Self {
        let registry = Registry::new();
        let http_duration = HistogramVec::new(
            HistogramOpts::new(
                "skiff_api_request_duration_seconds",
                "REST API request latency",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
            ]),
            &["method", "route", "status"],
        )
        .expect("valid metric");
        let phase_duration = HistogramVec::new(
            HistogramOpts::new(
                "skiff_container_phase_seconds",
                "Time a container spent in each start phase",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
            &["phase"],
        )
        .expect("valid metric");
        let reports = IntCounterVec::new(
            Opts::new(
                "skiff_worker_reports_total",
                "Status reports received from workers",
            ),
            &["state"],
        )
        .expect("valid metric");
        let checkpoints = IntCounterVec::new(
            Opts::new(
                "skiff_meter_checkpoints_total",
                "Meter checkpoints received from workers, by outcome",
            ),
            &["result"],
        )
        .expect("valid metric");
        let open_runs =
            IntGauge::new("skiff_meter_open_runs", "Runs being metered now").expect("valid metric");
        let metered_seconds = IntGauge::new(
            "skiff_metered_seconds_total",
            "Billed container seconds recorded in the usage ledger",
        )
        .expect("valid metric");
        let placements = IntCounter::new(
            "skiff_placements_total",
            "Containers placed on a host by this replica",
        )
        .expect("valid metric");
        let hosts_lost = IntCounter::new(
            "skiff_hosts_lost_total",
            "Hosts judged lost by this replica",
        )
        .expect("valid metric");
        let assignments_sent = IntCounterVec::new(
            Opts::new(
                "skiff_assignments_sent_total",
                "Assignments sent to workers, by kind of step",
            ),
            &["kind"],
        )
        .expect("valid metric");
        let reports_refused = IntCounterVec::new(
            Opts::new(
                "skiff_reports_refused_total",
                "Worker reports refused as impossible, by reason",
            ),
            &["reason"],
        )
        .expect("valid metric");
        let counter = |name: &str, help: &str, label: &str| {
            IntCounterVec::new(Opts::new(name, help), &[label]).expect("valid metric")
        };
        let calls_refused = counter(
            "skiff_worker_calls_refused_total",
            "Calls on the workers' endpoint refused for their credential, by reason",
            "reason",
        );
        let handshakes_refused = counter(
            "skiff_worker_tls_handshakes_refused_total",
            "TLS handshakes on the workers' endpoint refused, by reason",
            "reason",
        );
        let joins = counter(
            "skiff_host_joins_total",
            "Host joins, by outcome",
            "outcome",
        );
        let scheduler_step = HistogramVec::new(
            HistogramOpts::new(
                "skiff_scheduler_step_seconds",
                "Time each step of a scheduler pass took",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ]),
            &["step"],
        )
        .expect("valid metric");
        for collector in [
            Box::new(http_duration.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(scheduler_step.clone()),
            Box::new(phase_duration.clone()),
            Box::new(reports.clone()),
            Box::new(checkpoints.clone()),
            Box::new(open_runs.clone()),
            Box::new(metered_seconds.clone()),
            Box::new(placements.clone()),
            Box::new(hosts_lost.clone()),
            Box::new(assignments_sent.clone()),
            Box::new(reports_refused.clone()),
            Box::new(calls_refused.clone()),
            Box::new(handshakes_refused.clone()),
            Box::new(joins.clone()),
        ] {
            registry.register(collector).expect("unique metric");
        }
        Self {
            registry,
            http_duration,
            phase_duration,
            reports,
            checkpoints,
            open_runs,
            metered_seconds,
            placements,
            hosts_lost,
            assignments_sent,
            reports_refused,
            calls_refused,
            handshakes_refused,
            joins,
            scheduler_step,
        }
    }
}

impl Metrics {
    pub fn observe_phase_ms(&self, phase: &str, ms: i64) {
        if ms >= 0 {
            self.phase_duration
                .with_label_values(&[phase])
                .observe(ms as f64 / 1000.0);
        }
    }

    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}
