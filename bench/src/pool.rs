//! The pool scenario: a burst of short containers through the queue of a
//! pool of hosts at their honest capacity (each worker offers its share of
//! the machine, as `SKIFF_LOCAL_WORKERS=3 deploy/local/up.sh` sets it), against
//! raw `ctr run --rm` at the same total concurrency: as many at once as the
//! pool has slots. Reports containers/s and how placement spread them.

use crate::progress;
use crate::report::Row;
use crate::scenarios::{Ctx, Outcome};
use anyhow::{bail, Result};
use serde_json::json;
use skiff_core::ContainerState;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// Namespace of the raw pool baseline.
pub const NS_POOL: &str = "skiff-bench-pool";
/// The short container: exits at once with 0.
pub const SHORT: &[&str] = &["true"];
pub const CPU: f64 = 0.1;
pub const MEMORY_MIB: u64 = 64;
const WAIT_S: u64 = 600;

/// The pool's ready hosts (as "id cpu/memory" lines) and how many short
/// containers (0.1 vCPU, 64 MiB) fit on them at once: its slots.
pub async fn pool_slots(ctx: &Ctx, admin_token: &str) -> Result<(Vec<String>, usize)> {
    let hosts: Vec<_> = ctx
        .api
        .hosts(admin_token)
        .await?
        .into_iter()
        .filter(|h| h.state == "ready")
        .collect();
    if hosts.is_empty() {
        bail!("no ready host in GET /v1/hosts");
    }
    let slots: usize = hosts
        .iter()
        .map(|h| {
            ((h.cpu * 1000.0 + 0.5) as i64 / (CPU * 1000.0) as i64)
                .min(h.memory_mib / MEMORY_MIB as i64)
                .max(0) as usize
        })
        .sum();
    let capacity = hosts
        .iter()
        .map(|h| format!("{} {} vCPU/{} MiB", h.id, h.cpu, h.memory_mib))
        .collect();
    Ok((capacity, slots))
}

/// What the `ctr run --rm` baseline isolates its containers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Baseline {
    /// `ctr`'s defaults: no seccomp filter, no limits (the baseline).
    Raw,
    /// What the platform gives each short container as well: the default
    /// seccomp filter, its memory limit and its CPU quota.
    Isolated,
}

impl Baseline {
    /// The `ctr run` flags of this baseline.
    pub fn flags(self) -> Vec<String> {
        match self {
            Baseline::Raw => Vec::new(),
            Baseline::Isolated => vec![
                "--seccomp".to_owned(),
                "--memory-limit".to_owned(),
                (MEMORY_MIB * 1024 * 1024).to_string(),
                "--cpus".to_owned(),
                CPU.to_string(),
            ],
        }
    }

    /// How a report names it.
    pub fn label(self) -> &'static str {
        match self {
            Baseline::Raw => "ctr run --rm",
            Baseline::Isolated => "ctr run --rm --seccomp with the limits",
        }
    }
}

/// Raw: `n` short containers with `ctr run --rm`, `slots` at a time, on
/// one containerd (the machine is the same; containerd instances share
/// it), the image in place before the clock starts. Containers/s.
pub async fn ctr_rm_rate(ctx: &Ctx, n: usize, slots: usize, baseline: Baseline) -> Result<f64> {
    let _ = ctx.ctr.clean_namespace(NS_POOL).await;
    ctx.ctr.pull(NS_POOL, &ctx.image).await?;
    let sem = Arc::new(Semaphore::new(slots.max(1)));
    let t0 = Instant::now();
    let mut set = JoinSet::new();
    for _ in 0..n {
        let (ctr, sem, image) = (ctx.ctr.clone(), sem.clone(), ctx.image.clone());
        let flags = baseline.flags();
        set.spawn(async move {
            let _permit = sem.acquire_owned().await.expect("semaphore");
            let id = format!("pool-{}", uuid::Uuid::new_v4().simple());
            let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
            ctr.run_to_exit(NS_POOL, &flags, &image, &id, SHORT).await
        });
    }
    let mut raw_error = None;
    while let Some(r) = set.join_next().await {
        if let Err(e) = r? {
            raw_error = raw_error.or(Some(e));
        }
    }
    let raw_wall = t0.elapsed().as_secs_f64();
    let _ = ctx.ctr.clean_namespace(NS_POOL).await;
    if let Some(e) = raw_error {
        return Err(e.context(format!("raw baseline ({})", baseline.label())));
    }
    let raw_rate = n as f64 / raw_wall;
    progress(&format!(
        "{}: {n} done in {raw_wall:.2} s ({raw_rate:.1}/s), {slots} at a time",
        baseline.label()
    ));
    Ok(raw_rate)
}

pub async fn pool_burst(ctx: &Ctx, n: usize, admin_token: &str) -> Result<Outcome> {
    let (capacity, slots) = pool_slots(ctx, admin_token).await?;
    progress(&format!(
        "pool: {n} short containers through the queue of {} hosts ({}), {slots} slots",
        capacity.len(),
        capacity.join(", ")
    ));

    // The platform: every POST at once (in_flight at a time), each waited
    // for to its exit. The queue holds what does not fit.
    let sem = Arc::new(Semaphore::new(ctx.in_flight));
    let t0 = Instant::now();
    let mut set = JoinSet::new();
    for _ in 0..n {
        let (api, sem, image, run_id) = (
            ctx.api.clone(),
            sem.clone(),
            ctx.image.clone(),
            ctx.run_id.clone(),
        );
        set.spawn(async move {
            let permit = sem.acquire_owned().await.expect("semaphore");
            let c = api
                .create_sized(&image, SHORT, &run_id, CPU, MEMORY_MIB)
                .await?;
            drop(permit);
            let done = api.wait_exited(&c.id.to_string(), WAIT_S).await?;
            anyhow::Ok((done, t0.elapsed()))
        });
    }
    let mut per_host: BTreeMap<String, usize> = BTreeMap::new();
    let (mut ids, mut failures, mut last) = (Vec::new(), Vec::new(), Duration::ZERO);
    while let Some(r) = set.join_next().await {
        match r? {
            Ok((c, at)) => {
                last = last.max(at);
                if c.state != ContainerState::Succeeded {
                    failures.push(format!(
                        "{} ended {} ({}: {})",
                        c.id,
                        c.state,
                        c.reason.map_or("-", |r| r.as_str()),
                        c.message.as_deref().unwrap_or("-")
                    ));
                }
                *per_host
                    .entry(c.host_id.clone().unwrap_or_else(|| "(none)".into()))
                    .or_default() += 1;
                ids.push(c.id.to_string());
            }
            Err(e) => failures.push(format!("{e:#}")),
        }
    }
    let wall = last.as_secs_f64();
    let _ = crate::scenarios::platform_teardown(ctx, &ids).await;
    if !failures.is_empty() {
        bail!(
            "{} of {n} pool containers did not succeed; first: {}",
            failures.len(),
            failures[0]
        );
    }
    let rate = n as f64 / wall;
    progress(&format!(
        "pool: platform {n} done in {wall:.2} s ({rate:.1}/s), per host {per_host:?}"
    ));

    let raw_rate = ctr_rm_rate(ctx, n, slots, Baseline::Raw).await?;

    let spread: Vec<String> = per_host.iter().map(|(h, c)| format!("{h} {c}")).collect();
    let rows = vec![
        Row::vs_raw(
            &format!(
                "pool: {n} short containers through the queue, {} hosts, {slots} slots",
                capacity.len()
            ),
            "containers/s",
            rate,
            &format!("ctr run --rm, {slots} at a time"),
            raw_rate,
        )
        .ratio_target(1.0, false),
        Row::alone(
            &format!("pool: placements per host ({})", spread.join(", ")),
            "on the busiest host",
            per_host.values().copied().max().unwrap_or(0) as f64,
        ),
    ];
    Ok(Outcome {
        rows,
        details: json!({
            "containers": n, "slots": slots, "hosts": capacity,
            "platform_wall_s": wall, "platform_rate": rate,
            "ctr_rate": raw_rate,
            "placements_per_host": per_host,
        }),
    })
}
