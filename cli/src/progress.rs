//! The phases of a starting container, as `skiff run` shows them: queued,
//! pulling (with bytes while the object carries `pull`), created,
//! started, each with the time the container object carries (`timings`).
//! [`phases`] is the pure part; [`Display`] draws it: on a terminal a
//! spinner on the current phase with each finished one printed above it,
//! elsewhere one plain line per finished phase. Everything goes to stderr,
//! so stdout carries only the container's logs.

use crate::output::bytes;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use skiff_api::model::ContainerView;
use skiff_core::ContainerState;
use std::time::Duration;

/// One phase: its name, whether it is over, and how long it took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Phase {
    pub name: &'static str,
    pub done: bool,
    pub ms: Option<i64>,
}

/// Pull progress while the object carries `pull: {bytes_done,
/// bytes_total}` (null before the host reports, and from servers that
/// predate it): done, and the total when known.
pub fn pull_bytes(view: &ContainerView) -> Option<(u64, Option<u64>)> {
    let pull = view.pull?;
    let done = u64::try_from(pull.bytes_done).ok()?;
    Some((
        done,
        u64::try_from(pull.bytes_total).ok().filter(|t| *t > 0),
    ))
}

/// The four phases of a container's (latest) start, from its object.
pub fn phases(view: &ContainerView) -> [Phase; 4] {
    let t = view.timings;
    let past_queue = view.state != ContainerState::Pending;
    let started = matches!(
        view.state,
        ContainerState::Running | ContainerState::Stopping
    ) || t.start_ms.is_some();
    [
        Phase {
            name: "queued",
            done: past_queue || t.queued_ms.is_some(),
            ms: t.queued_ms,
        },
        Phase {
            name: "pulling",
            done: t.pull_ms.is_some() || t.create_ms.is_some() || started,
            ms: t.pull_ms,
        },
        Phase {
            name: "created",
            done: t.create_ms.is_some() || started,
            ms: t.create_ms,
        },
        Phase {
            name: "started",
            done: started,
            ms: t.start_ms,
        },
    ]
}

/// The line of a finished phase, e.g. `✔ pulling   340 ms`.
pub fn done_line(phase: &Phase) -> String {
    match phase.ms {
        Some(ms) => format!("✔ {:<8} {ms} ms", phase.name),
        None => format!("✔ {}", phase.name),
    }
}

/// The live display of one `skiff run`.
pub struct Display {
    bar: Option<ProgressBar>,
    shown: usize,
}

impl Display {
    /// A spinner when stderr is a terminal, else plain lines.
    pub fn new() -> Self {
        let bar = console::Term::stderr().is_term().then(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template("{spinner} {msg} {elapsed}")
                    .expect("a valid template"),
            );
            bar.enable_steady_tick(Duration::from_millis(100));
            bar
        });
        Self { bar, shown: 0 }
    }

    /// Shows what changed since the last call.
    pub fn update(&mut self, view: &ContainerView) {
        let phases = phases(view);
        while self.shown < phases.len() && phases[self.shown].done {
            self.line(&done_line(&phases[self.shown]));
            self.shown += 1;
        }
        if let (Some(bar), Some(current)) = (&self.bar, phases.get(self.shown)) {
            let mut msg = current.name.to_string();
            if current.name == "queued" {
                if let Some(m) = &view.message {
                    msg.push_str(&format!(" ({m})"));
                }
            }
            if let Some((done, total)) = pull_bytes(view).filter(|_| current.name == "pulling") {
                msg.push_str(&format!(" {}", bytes(done)));
                if let Some(total) = total {
                    msg.push_str(&format!(" / {}", bytes(total)));
                }
            }
            bar.set_message(msg);
        }
    }

    fn line(&self, text: &str) {
        match &self.bar {
            Some(bar) => bar.println(text),
            None => eprintln!("{text}"),
        }
    }

    /// Removes the spinner (before logs are streamed, or on an error).
    pub fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

impl Default for Display {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Display {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    /// A container object as the API sends it, in `state` with `timings`.
    fn view(state: &str, timings: Value) -> ContainerView {
        let mut object: Value = serde_json::from_str(
            r#"{
            "id": "0190a0b0-0000-7000-8000-000000000000", "name": "c", "image": "i",
            "image_digest": null, "command": [], "env": {}, "secure_env_keys": [],
            "cpu": 0.5, "memory_mib": 256, "restart_policy": "never", "max_restarts": null,
            "stop_timeout_s": 10, "timeout_s": null, "max_cost": null, "notify_url": null,
            "labels": {}, "max_pending_s": 600, "placement": {}, "network": "private",
            "network_group": null, "read_only_rootfs": false, "volumes": [], "mounts": [],
            "liveness_probe": null, "readiness_probe": null, "ready": false, "ip": null,
            "ports": [], "reason": null, "message": null, "exit_code": null,
            "restart_count": 0, "host_id": null, "created_at": "2026-01-01T00:00:00Z",
            "started_at": null, "finished_at": null,
            "usage": {"billed_seconds": 0, "vcpu_seconds": 0.0, "gib_seconds": 0.0, "cost": 0}
        }"#,
        )
        .unwrap();
        object["state"] = json!(state);
        object["timings"] = timings;
        serde_json::from_value(object).unwrap()
    }

    fn done(v: &ContainerView) -> Vec<&'static str> {
        phases(v)
            .iter()
            .filter(|p| p.done)
            .map(|p| p.name)
            .collect()
    }

    #[test]
    fn phases_follow_the_state_and_timings() {
        assert!(done(&view("pending", json!({}))).is_empty());
        assert_eq!(done(&view("pulling", json!({"queued_ms": 12}))), ["queued"]);
        let starting = view(
            "starting",
            json!({"queued_ms": 12, "pull_ms": 340, "create_ms": 45}),
        );
        assert_eq!(done(&starting), ["queued", "pulling", "created"]);
        assert_eq!(done_line(&phases(&starting)[1]), "✔ pulling  340 ms");
        let running = view(
            "running",
            json!({"queued_ms": 12, "pull_ms": 0, "create_ms": 45, "start_ms": 30}),
        );
        assert_eq!(done(&running).len(), 4);
        // A finished container that never started (a failed pull) is not
        // shown as started.
        assert_eq!(done(&view("failed", json!({"queued_ms": 3}))), ["queued"]);
    }

    #[test]
    fn pull_bytes_are_read_when_present_and_absent_is_fine() {
        let mut v = view("pulling", json!({"queued_ms": 1}));
        assert_eq!(pull_bytes(&v), None);
        v.pull = serde_json::from_value(json!({"bytes_done": 5, "bytes_total": 10})).unwrap();
        assert_eq!(pull_bytes(&v), Some((5, Some(10))));
        v.pull = serde_json::from_value(json!({"bytes_done": 5, "bytes_total": 0})).unwrap();
        assert_eq!(pull_bytes(&v), Some((5, None)));
    }
}
