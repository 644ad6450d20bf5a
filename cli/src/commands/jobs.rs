//! `skiff job run|ls|get|cancel|tasks`. `job run` posts the job and shows a
//! progress bar of its tasks (done, failed, running) until it ends; its exit
//! code is 0 only when the job succeeded.

use super::containers::print_containers;
use super::run::request;
use super::Ctx;
use crate::args::JobRunArgs;
use crate::client::Fetched;
use crate::output::{self, age, or_dash, print_one, print_value, Format};
use crate::Error;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use skiff_api::http::jobs::{CreateJob, JobList, JobView};
use skiff_api::model::ContainerList;
use std::time::Duration;

const POLL: Duration = Duration::from_millis(500);

pub async fn run(ctx: &Ctx, args: JobRunArgs) -> Result<i32, Error> {
    let body = CreateJob {
        name: args.name.clone(),
        template: request(&args.container, None)?,
        count: args.count,
        parallelism: args.parallelism,
        max_retries: args.max_retries,
        tasks: None,
        labels: None,
        timeout_s: None,
        max_cost: None,
        notify_url: None,
    };
    let created: Fetched<JobView> = ctx.client.post("/v1/jobs", &body).await?;
    let id = created.typed.id.to_string();
    if args.detach {
        crate::outln!("{id}");
        return Ok(0);
    }
    eprintln!("job {id} ({} tasks)", created.typed.count);
    let bar = progress_bar(created.typed.count);
    let mut job = created.typed;
    let mut last = String::new();
    loop {
        let line = progress_line(&job);
        bar.set_position((job.tasks.succeeded + job.tasks.failed + job.tasks.cancelled) as u64);
        bar.set_message(line.clone());
        if bar.is_hidden() && line != last {
            eprintln!("{line}");
        }
        last = line;
        if job.state.is_terminal() {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = tokio::signal::ctrl_c() => {
                bar.abandon();
                eprintln!("interrupted: job {id} goes on (skiff job cancel {id})");
                return Ok(130);
            }
        }
        job = ctx
            .client
            .get::<JobView>(&format!("/v1/jobs/{id}"), &[])
            .await?
            .typed;
    }
    bar.finish();
    eprintln!("job {id} {}", job_state(job.state));
    if !job.failed_indices.is_empty() {
        eprintln!("failed tasks: {:?}", job.failed_indices);
    }
    Ok(if job.state == skiff_core::JobState::Succeeded {
        0
    } else {
        1
    })
}

/// A job's state as the API spells it (`succeeded`, ...).
fn job_state(state: skiff_core::JobState) -> String {
    serde_json::to_value(state)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("{state:?}"))
}

fn progress_bar(count: i32) -> ProgressBar {
    let bar =
        ProgressBar::with_draw_target(Some(count.max(0) as u64), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("[{bar:30}] {pos}/{len} {msg} {elapsed}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar
}

/// `3 done, 1 failed, 2 running, 4 waiting`.
pub fn progress_line(job: &JobView) -> String {
    let t = &job.tasks;
    let mut line = format!(
        "{} done, {} failed, {} running, {} waiting",
        t.succeeded, t.failed, t.active, t.waiting
    );
    if t.cancelled > 0 {
        line.push_str(&format!(", {} cancelled", t.cancelled));
    }
    line
}

pub async fn ls(ctx: &Ctx) -> Result<i32, Error> {
    let jobs = ctx.client.all_pages::<JobList>("/v1/jobs", &[]).await?;
    if matches!(ctx.format, Format::Json | Format::Yaml) {
        let raws = jobs.into_iter().map(|j| j.raw).collect();
        print_value(ctx.format, &serde_json::Value::Array(raws))?;
        return Ok(0);
    }
    let jobs: Vec<JobView> = jobs.into_iter().map(|j| j.typed).collect();
    print_jobs(ctx.format, &jobs)
}

fn print_jobs(format: Format, jobs: &[JobView]) -> Result<i32, Error> {
    let now = chrono::Utc::now();
    let rows = jobs
        .iter()
        .map(|j| {
            vec![
                j.id.to_string(),
                j.name.clone(),
                job_state(j.state),
                j.count.to_string(),
                j.tasks.succeeded.to_string(),
                j.tasks.failed.to_string(),
                j.tasks.active.to_string(),
                age(j.created_at, now),
                or_dash(j.reason),
            ]
        })
        .collect();
    crate::outln!(
        "{}",
        output::rows(
            format,
            &["id", "name", "state", "count", "done", "failed", "running", "age", "reason"],
            rows
        )?
    );
    Ok(0)
}

pub async fn get(ctx: &Ctx, job: &str) -> Result<i32, Error> {
    let view: Fetched<JobView> = ctx.client.get(&format!("/v1/jobs/{job}"), &[]).await?;
    if matches!(ctx.format, Format::Json | Format::Yaml) {
        print_value(ctx.format, &view.raw)?;
        return Ok(0);
    }
    print_jobs(ctx.format, &[view.typed])
}

pub async fn cancel(ctx: &Ctx, job: &str) -> Result<i32, Error> {
    let view: Fetched<JobView> = ctx
        .client
        .post_empty(&format!("/v1/jobs/{job}/cancel"))
        .await?;
    print_one(ctx.format, job, &view.raw)?;
    Ok(0)
}

pub async fn tasks(ctx: &Ctx, job: &str) -> Result<i32, Error> {
    let path = format!("/v1/jobs/{job}/tasks");
    let all = ctx.client.all_pages::<ContainerList>(&path, &[]).await?;
    print_containers(ctx.format, &all)
}
