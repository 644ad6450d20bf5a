//! The soak scenario: `loops` clients each start a short container, wait
//! for its exit and delete it, again and again, for `seconds`; every 30 s
//! (a tenth of the run in a short one) the sampler reads PostgreSQL's
//! table sizes, the worker's and the API's RSS and open files, and the
//! disk use of the stack's state directory. Reports each figure's slope
//! (per hour, least squares): flat is the target.

use crate::machine;
use crate::progress;
use crate::report::Row;
use crate::scenarios::{Ctx, Outcome};
use anyhow::{bail, Context, Result};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One sample: seconds since the start, and each figure by name.
type Sample = (f64, BTreeMap<String, f64>);

/// Least-squares slope of `ys` over `xs` (0 with fewer than two points).
fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if points.len() < 2 {
        return 0.0;
    }
    let (mx, my) = (
        points.iter().map(|p| p.0).sum::<f64>() / n,
        points.iter().map(|p| p.1).sum::<f64>() / n,
    );
    let var: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    if var == 0.0 {
        return 0.0;
    }
    points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum::<f64>() / var
}

fn open_files(pid: u32) -> Option<f64> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()
        .map(|d| d.count() as f64)
}

/// Bytes under `dir` (files only; a racing removal is skipped).
fn disk_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => stack.push(e.path()),
                Ok(m) if m.is_file() => total += m.len(),
                _ => {}
            }
        }
    }
    total
}

async fn table_sizes(database_url: &str) -> Result<BTreeMap<String, f64>> {
    let out = tokio::process::Command::new("psql")
        .arg(database_url)
        .args([
            "-At",
            "-F",
            "\t",
            "-c",
            "SELECT relname, pg_total_relation_size(relid) FROM pg_stat_user_tables",
        ])
        .output()
        .await
        .context("running psql")?;
    if !out.status.success() {
        bail!("psql: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .filter_map(|(t, n)| Some((format!("pg {t} (MB)"), n.trim().parse::<f64>().ok()? / 1e6)))
        .collect())
}

async fn sample(
    ctx: &Ctx,
    database_url: &str,
    api_pid: Option<u32>,
) -> Result<BTreeMap<String, f64>> {
    let mut figures = table_sizes(database_url).await?;
    if let Some(pid) = ctx.worker_pid {
        figures.insert(
            "worker RSS (MB)".into(),
            machine::rss_kib(pid).unwrap_or(0) as f64 / 1024.0,
        );
        figures.insert("worker open files".into(), open_files(pid).unwrap_or(0.0));
    }
    if let Some(pid) = api_pid {
        figures.insert(
            "API RSS (MB)".into(),
            machine::rss_kib(pid).unwrap_or(0) as f64 / 1024.0,
        );
        figures.insert("API open files".into(), open_files(pid).unwrap_or(0.0));
    }
    figures.insert(
        "state dir disk (MB)".into(),
        disk_bytes(&ctx.state_dir) as f64 / 1e6,
    );
    Ok(figures)
}

pub async fn soak(ctx: &Ctx, loops: usize, seconds: u64, database_url: &str) -> Result<Outcome> {
    let api_pid = machine::pid_file(&ctx.state_dir.join("api.pid"));
    let every = Duration::from_secs(30).min(Duration::from_secs((seconds / 10).max(1)));
    progress(&format!(
        "soak: {loops} clients starting and deleting short containers for {seconds} s, sampling every {every:?}"
    ));
    let stop = Arc::new(AtomicBool::new(false));
    let (done, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..loops {
        let (api, stop, done, failed, image, run) = (
            ctx.api.clone(),
            stop.clone(),
            done.clone(),
            failed.clone(),
            ctx.image.clone(),
            ctx.run_id.clone(),
        );
        clients.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let ran = async {
                    let c = api
                        .create(&image, &["sh", "-c", "echo soak; sleep 0.2"], &run)
                        .await?;
                    let id = c.id.to_string();
                    api.wait_exited(&id, 600).await?;
                    api.delete(&id).await
                };
                match ran.await {
                    Ok(()) => done.fetch_add(1, Ordering::Relaxed),
                    Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        });
    }
    let started = Instant::now();
    let mut samples: Vec<Sample> = Vec::new();
    while started.elapsed() < Duration::from_secs(seconds) {
        samples.push((
            started.elapsed().as_secs_f64(),
            sample(ctx, database_url, api_pid).await?,
        ));
        tokio::time::sleep(every).await;
    }
    stop.store(true, Ordering::Relaxed);
    while clients.join_next().await.is_some() {}
    samples.push((
        started.elapsed().as_secs_f64(),
        sample(ctx, database_url, api_pid).await?,
    ));
    let (done, failed) = (done.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    progress(&format!(
        "soak: {done} containers ran and were deleted, {failed} failed"
    ));

    let mut names: Vec<String> = samples
        .iter()
        .flat_map(|(_, f)| f.keys().cloned())
        .collect();
    names.sort();
    names.dedup();
    let mut rows = vec![Row::alone(
        &format!("soak: containers run and deleted in {seconds} s ({failed} failed)"),
        "containers",
        done as f64,
    )];
    let mut slopes = BTreeMap::new();
    for name in &names {
        let points: Vec<(f64, f64)> = samples
            .iter()
            .filter_map(|(t, f)| f.get(name).map(|v| (*t, *v)))
            .collect();
        let per_hour = slope(&points) * 3600.0;
        let (first, last) = (
            points.first().map_or(0.0, |p| p.1),
            points.last().map_or(0.0, |p| p.1),
        );
        slopes.insert(
            name.clone(),
            json!({"first": first, "last": last, "slope_per_hour": per_hour}),
        );
        // Only what moves is worth a row; every slope is in the JSON.
        if (last - first).abs() > f64::EPSILON {
            rows.push(Row::alone(
                &format!("soak: {name}: {first:.1} -> {last:.1}"),
                "per hour",
                per_hour,
            ));
        }
    }
    Ok(Outcome {
        rows,
        details: json!({
            "loops": loops, "seconds": seconds, "containers": done, "failed": failed,
            "samples": samples.len(), "series": slopes,
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::slope;

    #[test]
    fn the_slope_is_the_least_squares_one() {
        assert_eq!(slope(&[]), 0.0);
        assert_eq!(slope(&[(1.0, 5.0)]), 0.0);
        assert!((slope(&[(0.0, 1.0), (1.0, 3.0), (2.0, 5.0)]) - 2.0).abs() < 1e-9);
        assert_eq!(slope(&[(0.0, 4.0), (1.0, 4.0), (2.0, 4.0)]), 0.0);
    }
}
