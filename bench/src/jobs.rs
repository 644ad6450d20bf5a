//! The job scenario: one `POST /v1/jobs` of `n` short tasks (`true`) with
//! as many at once as the pool has slots (its honest capacity), timed for
//! the POST's answer and for tasks/s until the job is done; against raw
//! `ctr run --rm` of `n` containers at the same concurrency, and against
//! the same `ctr` runs isolated as the platform isolates a task (seccomp,
//! memory limit, CPU quota). Each side starts on a quiet machine (the
//! job's deletion done, say).

use crate::pool::{ctr_rm_rate, pool_slots, Baseline, SHORT};
use crate::progress;
use crate::report::Row;
use crate::scenarios::{Ctx, Outcome};
use anyhow::{bail, Result};
use serde_json::json;
use skiff_core::JobState;
use std::time::{Duration, Instant};

/// How often the job is read while it runs (the wall clock's resolution).
const POLL: Duration = Duration::from_millis(100);
const WAIT: Duration = Duration::from_secs(1800);
/// The most tasks a job may have.
const MAX_TASKS: usize = 10_000;
/// Each side starts on a quiet machine: at most this share of its CPU
/// busy over one window (the stack idles well below it) ...
const QUIET: f64 = 0.15;
const QUIET_WINDOW: Duration = Duration::from_secs(2);
/// ... looked for this long at most (then the side starts anyway, and
/// the details say so).
const QUIET_GIVE_UP: Duration = Duration::from_secs(180);

/// The machine's busy CPU time since `since` (from
/// [`crate::machine::busy_cpu_s`]) per task, in ms: everything that ran,
/// the stack's processes, containerd, shims, runc and the kernel alike.
fn cpu_per_task(since: Option<f64>, n: usize) -> f64 {
    match (since, crate::machine::busy_cpu_s()) {
        (Some(a), Some(b)) => (b - a) * 1000.0 / n as f64,
        _ => f64::NAN,
    }
}

/// Waits for a quiet machine before `side`, saying how long it took.
async fn settle(side: &str) -> serde_json::Value {
    let t = Instant::now();
    let (busy, quiet) = crate::machine::settle(QUIET, QUIET_WINDOW, QUIET_GIVE_UP).await;
    let waited = t.elapsed().as_secs_f64();
    progress(&format!(
        "job: before {side}: {}% CPU busy after {waited:.0} s{}",
        (busy * 100.0).round(),
        if quiet {
            ""
        } else {
            " (not quiet: started anyway)"
        }
    ));
    json!({ "busy": busy, "quiet": quiet, "waited_s": waited })
}

pub async fn job_burst(ctx: &Ctx, n: usize, admin_token: &str) -> Result<Outcome> {
    let (capacity, slots) = pool_slots(ctx, admin_token).await?;
    progress(&format!(
        "job: {n} tasks, parallelism {slots} (the slots of {} hosts: {})",
        capacity.len(),
        capacity.join(", ")
    ));
    let settled_platform = settle("the platform's job").await;
    let cpu0 = crate::machine::busy_cpu_s();
    let t0 = Instant::now();
    let job = ctx
        .api
        .create_job(&ctx.image, SHORT, &ctx.run_id, n, slots)
        .await?;
    let post_ms = t0.elapsed().as_secs_f64() * 1000.0;
    let id = job.id.to_string();
    progress(&format!("job: POST answered in {post_ms:.1} ms"));
    let done = loop {
        let job = ctx.api.job(&id).await?;
        if job.state.is_terminal() {
            break job;
        }
        if t0.elapsed() > WAIT {
            bail!("job {id} not done within {WAIT:?}: {:?}", job.tasks);
        }
        tokio::time::sleep(POLL).await;
    };
    let wall = t0.elapsed().as_secs_f64();
    let platform_cpu = cpu_per_task(cpu0, n);
    let status = ctx.api.delete_job(&id).await?;
    if status.as_u16() != 204 {
        progress(&format!("job: DELETE {id} -> {status}"));
    }
    if done.state != JobState::Succeeded || done.tasks.succeeded != n as i64 {
        bail!(
            "job {id} ended {:?} ({:?}), tasks {:?}, failed indices {:?}",
            done.state,
            done.reason,
            done.tasks,
            done.failed_indices
        );
    }
    let rate = n as f64 / wall;
    progress(&format!("job: {n} tasks done in {wall:.2} s ({rate:.1}/s)"));
    // The deleted job's containers are removed in the background: not
    // while ctr runs.
    let settled_ctr = settle("ctr run --rm").await;
    let cpu0 = crate::machine::busy_cpu_s();
    let raw_rate = ctr_rm_rate(ctx, n, slots, Baseline::Raw).await?;
    let ctr_cpu = cpu_per_task(cpu0, n);
    // The same runs with what the platform isolates each task with: how
    // much of a task's cost is that isolation rather than the platform.
    let isolated = Baseline::Isolated;
    let settled_isolated = settle(isolated.label()).await;
    let cpu0 = crate::machine::busy_cpu_s();
    let isolated_rate = ctr_rm_rate(ctx, n, slots, isolated).await?;
    let isolated_cpu = cpu_per_task(cpu0, n);
    progress(&format!(
        "job: machine CPU per task: platform {platform_cpu:.1} ms, ctr run --rm {ctr_cpu:.1} ms, {} {isolated_cpu:.1} ms",
        isolated.label()
    ));

    // The largest job there is: its POST answers as fast (the tasks are
    // one set-based insert); deleted at once.
    let t1 = Instant::now();
    let big = ctx
        .api
        .create_job(&ctx.image, SHORT, &ctx.run_id, MAX_TASKS, 1)
        .await?;
    let big_post_ms = t1.elapsed().as_secs_f64() * 1000.0;
    let status = ctx.api.delete_job(&big.id.to_string()).await?;
    if status.as_u16() != 204 {
        progress(&format!("job: DELETE {} -> {status}", big.id));
    }
    progress(&format!(
        "job: POST of {MAX_TASKS} tasks answered in {big_post_ms:.1} ms"
    ));
    let rows = vec![
        Row::alone(
            &format!("job of {n} tasks: POST /v1/jobs answered"),
            "ms",
            post_ms,
        )
        .value_target(200.0, true),
        Row::alone(
            &format!("job of {MAX_TASKS} tasks: POST /v1/jobs answered"),
            "ms",
            big_post_ms,
        )
        .value_target(1000.0, true),
        Row::vs_raw(
            &format!(
                "job of {n} tasks: done, parallelism {slots} ({} hosts)",
                capacity.len()
            ),
            "tasks/s",
            rate,
            &format!("ctr run --rm, {slots} at a time"),
            raw_rate,
        )
        .ratio_target(1.2, false),
        // Both sides saturate the CPU: the rate is what a task costs.
        Row::vs_raw(
            &format!("job of {n} tasks: machine CPU per task (all processes)"),
            "ms",
            platform_cpu,
            "ctr run --rm",
            ctr_cpu,
        ),
        Row::vs_raw(
            &format!("job of {n} tasks: done, against ctr with the platform's isolation"),
            "tasks/s",
            rate,
            &format!("{}, {slots} at a time", isolated.label()),
            isolated_rate,
        ),
        Row::vs_raw(
            &format!(
                "job of {n} tasks: machine CPU per task, against ctr with the platform's isolation"
            ),
            "ms",
            platform_cpu,
            isolated.label(),
            isolated_cpu,
        ),
    ];
    Ok(Outcome {
        rows,
        details: json!({
            "tasks": n, "parallelism": slots, "hosts": capacity,
            "post_ms": post_ms, "post_ms_max_tasks": big_post_ms, "platform_wall_s": wall, "platform_rate": rate,
            "ctr_rate": raw_rate,
            "ctr_isolated": { "flags": isolated.flags(), "rate": isolated_rate },
            "settled": { "platform": settled_platform, "ctr": settled_ctr, "ctr_isolated": settled_isolated },
            "cpu_ms_per_task": { "platform": platform_cpu, "ctr": ctr_cpu, "ctr_isolated": isolated_cpu },
        }),
    })
}
