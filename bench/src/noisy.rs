//! The noisy-neighbour scenario: tenant B's start latency alone, then while
//! tenant A (with a quota an operator would give it) floods the API with
//! reads and bursts of creates for `noisy_seconds`. Target: B's p99 during
//! the flood is at most 2x its p99 alone, and A gets the 429s, not B.

use crate::api::{Api, RUN_LABEL};
use crate::progress;
use crate::report::Row;
use crate::scenarios::{Ctx, Outcome};
use crate::stats::summarize;
use anyhow::{bail, Result};
use reqwest::{Method, StatusCode};
use serde_json::json;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Concurrent flooding loops of tenant A: readers and creators.
const READERS: usize = 16;
const CREATORS: usize = 4;

/// Where one of B's starts went (ms): the whole start, the POST's answer,
/// and the container's own timings.
#[derive(Debug, Clone, Copy, serde::Serialize)]
struct Start {
    total: f64,
    post: f64,
    queued: i64,
    pull: i64,
    create: i64,
    start: i64,
    /// From the process's start (the worker's clock) to the wait's answer
    /// (the bench's; one machine): the report's way back.
    reported: i64,
}

/// B's starts: create a sleeper, wait for it to run, delete it.
async fn starts(api: &Api, ctx: &Ctx, n: usize) -> Result<(Vec<Start>, u64)> {
    let mut samples = Vec::new();
    let mut limited = 0;
    for _ in 0..n {
        let t = Instant::now();
        let c = match api.create(&ctx.image, &["sleep", "600"], &ctx.run_id).await {
            Ok(c) => c,
            Err(e) if e.to_string().contains("429") => {
                limited += 1;
                continue;
            }
            Err(e) => return Err(e),
        };
        let post = t.elapsed().as_secs_f64() * 1000.0;
        let running = api.wait_running(&c.id.to_string(), 120).await?;
        let timings = running.timings;
        let reported = running
            .started_at
            .map_or(-1, |at| (chrono::Utc::now() - at).num_milliseconds());
        samples.push(Start {
            pull: timings.pull_ms.unwrap_or(-1),
            reported,
            total: t.elapsed().as_secs_f64() * 1000.0,
            post,
            queued: timings.queued_ms.unwrap_or(-1),
            create: timings.create_ms.unwrap_or(-1),
            start: timings.start_ms.unwrap_or(-1),
        });
        api.delete(&c.id.to_string()).await?;
    }
    Ok((samples, limited))
}

/// The slowest starts of `all`, slowest first.
fn slowest(all: &[Start], n: usize) -> Vec<Start> {
    let mut sorted = all.to_vec();
    sorted.sort_by(|a, b| b.total.total_cmp(&a.total));
    sorted.truncate(n);
    sorted
}

fn totals(all: &[Start]) -> Vec<f64> {
    all.iter().map(|s| s.total).collect()
}

pub async fn noisy_neighbour(
    ctx: &Ctx,
    samples: usize,
    seconds: u64,
    admin_token: &str,
) -> Result<Outcome> {
    let a = ctx
        .api
        .create_tenant(admin_token, &format!("noisy-{}", ctx.run_id))
        .await?;
    let b = ctx
        .api
        .create_tenant(admin_token, &format!("quiet-{}", ctx.run_id))
        .await?;
    // An operator's quota for a tenant on a small pool: a quarter of it
    // (the local pool of three hosts on this 2-core machine starts about
    // 8 containers a second: 2 a second).
    ctx.api
        .set_quota(
            admin_token,
            &a.id.to_string(),
            &json!({"max_vcpu": 0.5, "max_pending": 20, "max_starts_per_s": 2}),
        )
        .await?;
    let (api_a, api_b) = (ctx.api.as_token(&a.token), ctx.api.as_token(&b.token));

    progress(&format!("noisy: tenant B alone, {samples} starts"));
    let (alone, _) = starts(&api_b, ctx, samples).await?;
    if alone.is_empty() {
        bail!("no start of B succeeded alone");
    }

    progress(&format!(
        "noisy: tenant A floods ({READERS} readers, {CREATORS} creators) for {seconds} s while B starts"
    ));
    let stop = Arc::new(AtomicBool::new(false));
    let counts: Arc<[AtomicU64; 4]> = Arc::new(Default::default()); // ok, 429, quota 403, other
    let mut flood = tokio::task::JoinSet::new();
    for i in 0..READERS + CREATORS {
        let (api, stop, counts, image, run) = (
            api_a.clone(),
            stop.clone(),
            counts.clone(),
            ctx.image.clone(),
            ctx.run_id.clone(),
        );
        flood.spawn(async move {
            let create = json!({
                "image": image, "command": ["true"], "cpu": 0.1, "memory_mib": 64,
                "network": "none", "labels": { RUN_LABEL: run },
            });
            while !stop.load(Ordering::Relaxed) {
                let status = if i < READERS {
                    api.status_of(Method::GET, "/v1/containers?limit=100", None)
                        .await
                } else {
                    api.status_of(Method::POST, "/v1/containers", Some(&create))
                        .await
                };
                let slot = match status {
                    Ok(s) if s.is_success() => 0,
                    Ok(StatusCode::TOO_MANY_REQUESTS) => 1,
                    Ok(StatusCode::FORBIDDEN) => 2,
                    _ => 3,
                };
                counts[slot].fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    let flood_started = Instant::now();
    let mut during = Vec::new();
    let mut b_limited = 0;
    while flood_started.elapsed() < Duration::from_secs(seconds) {
        let (s, limited) = starts(&api_b, ctx, 1).await?;
        during.extend(s);
        b_limited += limited;
    }
    stop.store(true, Ordering::Relaxed);
    while flood.join_next().await.is_some() {}
    let [ok, limited, quota, other] = [0, 1, 2, 3].map(|i| counts[i].load(Ordering::Relaxed));
    let flood_s = flood_started.elapsed().as_secs_f64();
    progress(&format!(
        "noisy: A sent {} requests in {flood_s:.0} s: {ok} served, {limited} rate-limited (429), {quota} over quota (403), {other} other; B: {} starts, {b_limited} 429s",
        ok + limited + quota + other,
        during.len()
    ));
    // A's leftovers (its creates run `true`: most have exited).
    let _ = api_a
        .list_run(&ctx.run_id)
        .await
        .map(|left| async move { left });
    if during.is_empty() {
        bail!("no start of B succeeded during the flood");
    }
    let (alone_s, during_s) = (summarize(&totals(&alone)), summarize(&totals(&during)));
    let rows = vec![
        Row::vs_raw(
            &format!("noisy neighbour: B's start p99 while A floods ({flood_s:.0} s)"),
            "ms",
            during_s.p99,
            "B's start p99 alone",
            alone_s.p99,
        )
        .ratio_target(2.0, true),
        Row::alone(
            "noisy neighbour: A's requests answered 429",
            "requests",
            limited as f64,
        ),
        Row::alone(
            "noisy neighbour: B's requests answered 429",
            "requests",
            b_limited as f64,
        )
        .value_target(0.0, true),
    ];
    Ok(Outcome {
        rows,
        details: json!({
            "alone_ms": alone_s, "during_ms": during_s, "flood_s": flood_s,
            "a_served": ok, "a_rate_limited": limited, "a_over_quota": quota, "a_other": other,
            "b_rate_limited": b_limited,
            "slowest_alone": slowest(&alone, 5), "slowest_during": slowest(&during, 10),
        }),
    })
}
