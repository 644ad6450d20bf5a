//! Prometheus metrics of the control plane: API latency and the phases of
//! a container's start (queue, pull, create, start), so operators see the
//! same figures the benchmark prints; and, set from PostgreSQL at each
//! scrape, the pool's capacity and allocation per host, the queue, and the
//! meter's checkpoint lag (`deploy/grafana/` charts and alerts on them).
//!
//! Every family is exported from the start: labelled ones get their known
//! label values at zero, so a dashboard or an alert never meets a missing
//! series before the first event (per-host families appear with the hosts).

use prometheus::{
    Encoder, Gauge, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
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
    /// Per host (set at each scrape): capacity, what its unfinished
    /// containers reserve, containers running, and 1 while it is alive.
    pub host_cpu_millis: IntGaugeVec,
    pub host_allocated_cpu_millis: IntGaugeVec,
    pub host_memory_mib: IntGaugeVec,
    pub host_allocated_memory_mib: IntGaugeVec,
    pub host_running: IntGaugeVec,
    pub host_up: IntGaugeVec,
    /// Containers waiting for a host (set at each scrape).
    pub pending: IntGauge,
    /// Seconds since the oldest open meter run's last checkpoint (set at
    /// each scrape; 0 with none open).
    pub checkpoint_lag: Gauge,
    /// Usage-chain verifications served, by result (`ok`, `broken`).
    pub chain_verifications: IntCounterVec,
}

/// The scheduler's steps, as [`Metrics::scheduler_step`] labels them.
pub const SCHEDULER_STEPS: [&str; 6] =
    ["expire", "deadlines", "jobs", "hosts", "place", "restarts"];
/// A container's start phases, as [`Metrics::phase_duration`] labels them.
pub const PHASES: [&str; 4] = ["queue", "pull", "create", "start"];

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
        let gauge = |name: &str, help: &str| {
            IntGaugeVec::new(Opts::new(name, help), &["host"]).expect("valid metric")
        };
        let host_cpu_millis = gauge(
            "skiff_host_cpu_millis",
            "A host's cpu capacity (millicores)",
        );
        let host_allocated_cpu_millis = gauge(
            "skiff_host_allocated_cpu_millis",
            "Millicores a host's unfinished containers reserve",
        );
        let host_memory_mib = gauge("skiff_host_memory_mib", "A host's memory capacity (MiB)");
        let host_allocated_memory_mib = gauge(
            "skiff_host_allocated_memory_mib",
            "MiB a host's unfinished containers reserve",
        );
        let host_running = gauge(
            "skiff_host_running_containers",
            "Containers running on a host",
        );
        let host_up = gauge(
            "skiff_host_up",
            "1 while a host heartbeats, 0 once it is lost",
        );
        let pending = IntGauge::new("skiff_pending_containers", "Containers waiting for a host")
            .expect("valid metric");
        let checkpoint_lag = Gauge::new(
            "skiff_meter_checkpoint_lag_seconds",
            "Seconds since the oldest open meter run's last checkpoint",
        )
        .expect("valid metric");
        let chain_verifications = counter(
            "skiff_usage_chain_verifications_total",
            "Usage-chain verifications served, by result",
            "result",
        );
        // Known label values at zero, so every series exists from the start.
        for phase in PHASES {
            phase_duration.with_label_values(&[phase]);
        }
        for step in SCHEDULER_STEPS {
            scheduler_step.with_label_values(&[step]);
        }
        for state in (1..=7).filter_map(|i| skiff_proto::ObservedState::try_from(i).ok()) {
            reports.with_label_values(&[state.as_str_name()]);
        }
        for result in ["applied", "duplicate_or_closed"] {
            checkpoints.with_label_values(&[result]);
        }
        for kind in ["snapshot", "delta"] {
            assignments_sent.with_label_values(&[kind]);
        }
        for refusal in crate::report_bounds::Refusal::ALL {
            reports_refused.with_label_values(&[refusal.as_str()]);
        }
        for refusal in crate::grpc::auth::Refusal::ALL {
            calls_refused.with_label_values(&[refusal.as_str()]);
        }
        for reason in ["timeout", "no_role"] {
            handshakes_refused.with_label_values(&[reason]);
        }
        joins.with_label_values(&["joined"]);
        for result in ["ok", "broken"] {
            chain_verifications.with_label_values(&[result]);
        }
        http_duration.with_label_values(&["GET", "/metrics", "200"]);
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
            Box::new(host_cpu_millis.clone()),
            Box::new(host_allocated_cpu_millis.clone()),
            Box::new(host_memory_mib.clone()),
            Box::new(host_allocated_memory_mib.clone()),
            Box::new(host_running.clone()),
            Box::new(host_up.clone()),
            Box::new(pending.clone()),
            Box::new(checkpoint_lag.clone()),
            Box::new(chain_verifications.clone()),
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
            host_cpu_millis,
            host_allocated_cpu_millis,
            host_memory_mib,
            host_allocated_memory_mib,
            host_running,
            host_up,
            pending,
            checkpoint_lag,
            chain_verifications,
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

    /// Sets the per-host families to `hosts` (hosts gone since drop out).
    pub fn set_hosts(&self, hosts: &[crate::store::hosts::HostStatus]) {
        for family in [
            &self.host_cpu_millis,
            &self.host_allocated_cpu_millis,
            &self.host_memory_mib,
            &self.host_allocated_memory_mib,
            &self.host_running,
            &self.host_up,
        ] {
            family.reset();
        }
        for h in hosts {
            let host = [h.id.as_str()];
            self.host_cpu_millis
                .with_label_values(&host)
                .set(h.cpu_millis);
            self.host_allocated_cpu_millis
                .with_label_values(&host)
                .set(h.allocated_cpu_millis);
            self.host_memory_mib
                .with_label_values(&host)
                .set(h.memory_mib);
            self.host_allocated_memory_mib
                .with_label_values(&host)
                .set(h.allocated_memory_mib);
            self.host_running.with_label_values(&host).set(h.running);
            self.host_up
                .with_label_values(&host)
                .set(i64::from(!h.lost && !h.revoked));
        }
    }

    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}
