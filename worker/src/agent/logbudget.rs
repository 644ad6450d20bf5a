//! The host's log budget (`SKIFF_HOST_LOG_BUDGET_BYTES`): every container's
//! log is already capped per run (`SKIFF_LOG_MAX_BYTES`), but finished
//! containers keep theirs until they are deleted, so a tenant that runs
//! many chatty containers and never deletes them could still fill the
//! disk. Past the budget, finished containers' logs are cut to their newest
//! bytes, the least recently written first ([`to_trim`], pure,
//! table-tested): first down to a floor each, then, only if that is not
//! enough, to nothing. A log being written (its container runs) is never
//! cut here; it is bounded by its cap. Each cut is reported as a
//! `LogTruncated` event, so the container object says its log was
//! truncated. [`enforce`] measures and cuts every `SKIFF_LOG_GC_INTERVAL_S`.

use super::report::{event, report, ReportSink, Reporter};
use crate::logcap::{self, Trimmed};
use crate::runtime::Runtime;
use skiff_proto as pb;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// What is kept of each finished log before any is cut further.
pub const FLOOR_BYTES: u64 = 64 * 1024;

/// One container's log on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogFile {
    pub id: String,
    pub bytes: u64,
    pub modified_ms: i64,
    /// A writer holds it (the container runs): never cut.
    pub active: bool,
}

/// The cuts that bring the logs within `budget`: (container, bytes to
/// keep), the least recently written finished logs first, each down to
/// `floor` before any goes below it; no more than needed.
pub fn to_trim(logs: &[LogFile], budget: u64, floor: u64) -> Vec<(String, u64)> {
    let mut total: u64 = logs.iter().map(|l| l.bytes).sum();
    if total <= budget {
        return Vec::new();
    }
    let mut finished: Vec<&LogFile> = logs.iter().filter(|l| !l.active).collect();
    finished.sort_by(|a, b| (a.modified_ms, &a.id).cmp(&(b.modified_ms, &b.id)));
    let mut keep: Vec<u64> = finished.iter().map(|l| l.bytes).collect();
    for target in [floor, 0] {
        for k in keep.iter_mut() {
            if total <= budget {
                break;
            }
            let cut = k.saturating_sub(target).min(total - budget);
            *k -= cut;
            total -= cut;
        }
    }
    finished
        .iter()
        .zip(keep)
        .filter(|(l, k)| *k < l.bytes)
        .map(|(l, k)| (l.id.clone(), k))
        .collect()
}

/// The logs in `dir` (`<id>.log`), with whether a writer holds each.
fn measure(dir: &Path) -> std::io::Result<Vec<LogFile>> {
    let mut logs = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let Some(id) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".log"))
        else {
            continue;
        };
        let Ok(meta) = entry.metadata() else { continue };
        let modified_ms = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_millis() as i64);
        logs.push(LogFile {
            id: id.to_owned(),
            bytes: meta.len(),
            modified_ms,
            active: logcap::is_active(&path)?,
        });
    }
    Ok(logs)
}

/// Cuts finished containers' logs past `budget` every `interval` until
/// `cancel`, reporting each cut to `sink`; counts its passes in `passes`.
pub async fn enforce<R: Runtime>(
    runtime: Arc<R>,
    sink: Arc<dyn ReportSink>,
    budget: u64,
    interval: Duration,
    passes: prometheus::IntCounter,
    cancel: CancellationToken,
) {
    tracing::info!(
        budget,
        ?interval,
        "log budget: keeping the host's logs under it"
    );
    let reporter = Reporter::new(sink);
    let Some(dir) = runtime.log_path("x").parent().map(Path::to_owned) else {
        return;
    };
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        pass(&*runtime, &reporter, &dir, budget, &cancel).await;
        passes.inc();
    }
}

/// One pass: measures the logs in `dir` and cuts what is past `budget`.
async fn pass<R: Runtime>(
    runtime: &R,
    reporter: &Reporter,
    dir: &Path,
    budget: u64,
    cancel: &CancellationToken,
) {
    let scan = dir.to_owned();
    let logs = match tokio::task::spawn_blocking(move || measure(&scan)).await {
        Ok(Ok(logs)) => logs,
        Ok(Err(err)) => {
            tracing::warn!(error = %err, "log budget: reading the logs failed");
            return;
        }
        Err(_) => return,
    };
    let plan = to_trim(&logs, budget, FLOOR_BYTES);
    if plan.is_empty() {
        return;
    }
    // The run each cut belongs to (the event is about its log).
    let generations: HashMap<String, u64> = match runtime.list().await {
        Ok(all) => all.into_iter().map(|c| (c.id, c.generation)).collect(),
        Err(err) => {
            tracing::warn!(error = %err, "log budget: listing containers failed");
            return;
        }
    };
    for (id, keep) in plan {
        let path = runtime.log_path(&id);
        let cut = tokio::task::spawn_blocking(move || logcap::trim(&path, keep)).await;
        let dropped = match cut {
            Ok(Ok(Trimmed::Cut { dropped })) => dropped,
            Ok(Ok(_)) => continue,
            Ok(Err(err)) => {
                tracing::warn!(container = %id, error = %err, "log budget: cutting a log failed");
                continue;
            }
            Err(_) => continue,
        };
        tracing::info!(container = %id, keep, dropped, "log budget: cut a finished container's log");
        let Some(&generation) = generations.get(&id) else {
            continue;
        };
        let mut r = report(&id, generation, pb::ObservedState::Unspecified);
        let mut e = event(
            generation,
            "LogTruncated",
            format!(
                "the host's log budget cut this finished container's log: older \
                 output was dropped ({dropped} bytes so far), the newest {keep} bytes kept"
            ),
        );
        e.key = format!("{generation}:logbudget:{dropped}");
        r.events.push(e);
        let reporter = reporter.clone();
        let cancel = cancel.clone();
        tokio::spawn(async move { reporter.send(r, &cancel).await });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(id: &str, bytes: u64, modified_ms: i64, active: bool) -> LogFile {
        LogFile {
            id: id.into(),
            bytes,
            modified_ms,
            active,
        }
    }

    #[test]
    fn finished_logs_are_cut_oldest_first_to_the_floor_then_further_only_if_needed() {
        type Case = (&'static str, Vec<LogFile>, u64, Vec<(&'static str, u64)>);
        let cases: Vec<Case> = vec![
            (
                "within the budget: nothing",
                vec![log("a", 500, 1, false), log("b", 400, 2, false)],
                1000,
                vec![],
            ),
            (
                "the oldest is cut only as far as needed",
                vec![log("a", 500, 1, false), log("b", 400, 2, false)],
                800,
                vec![("a", 400)],
            ),
            (
                "down to the floor, then the next oldest",
                vec![log("b", 500, 2, false), log("a", 500, 1, false)],
                400,
                vec![("a", 100), ("b", 300)],
            ),
            (
                "every finished log at the floor is not enough: the oldest go below it",
                vec![log("a", 500, 1, false), log("b", 500, 2, false)],
                150,
                vec![("a", 50), ("b", 100)],
            ),
            (
                "a running container's log is never cut, even past the budget",
                vec![log("run", 5000, 0, true), log("a", 500, 1, false)],
                1000,
                vec![("a", 0)],
            ),
        ];
        for (name, logs, budget, want) in cases {
            let got = to_trim(&logs, budget, 100);
            let want: Vec<(String, u64)> = want.into_iter().map(|(i, k)| (i.into(), k)).collect();
            assert_eq!(got, want, "{name}");
        }
    }
}
