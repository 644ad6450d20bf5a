//! The six scenarios. Each measures the platform and its raw baseline in
//! the same run, on the same containerd, and returns table rows plus details.

use crate::api::{Api, Container};
use crate::cold;
use crate::ctr::{Ctr, NS_CTR};
use crate::machine;
use crate::progress;
use crate::report::Row;
use crate::stats::{median_of, summarize, Summary};
use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use skiff_core::{CpuMillis, MemoryMib};
use skiff_worker::runtime::containerd::{ContainerdConfig, ContainerdRuntime};
use skiff_worker::runtime::{RunSpec, Runtime};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// Namespace of the worker-library baseline (no control plane).
pub const NS_RAW: &str = "skiff-bench-raw";
pub const SLEEP: &[&str] = &["sleep", "3600"];
const WAIT_S: u64 = 120;

/// Everything the scenarios share.
pub struct Ctx {
    pub api: Api,
    pub ctr: Ctr,
    pub image: String,
    pub registry: String,
    pub run_id: String,
    pub repo_root: PathBuf,
    pub state_dir: PathBuf,
    pub socket: PathBuf,
    /// The local worker's containerd namespace (skiff-local).
    pub namespace: String,
    pub work: PathBuf,
    pub worker_pid: Option<u32>,
    pub samples: usize,
    pub burst: usize,
    pub in_flight: usize,
    pub raw_parallel: usize,
    pub connections: usize,
    pub read_seconds: u64,
    pub extra_layers: Vec<u64>,
    pub cold_samples: usize,
    /// The first worker's capacity as it declares it, printed beside the
    /// figures of scenarios that may oversubscribe the machine (burst,
    /// memory, teardown: sleeping containers use no cpu).
    pub declared: String,
}

pub struct Outcome {
    pub rows: Vec<Row>,
    pub details: Value,
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

pub fn summary_json(s: &Summary) -> Value {
    json!({"n": s.n, "p50": s.p50, "p99": s.p99, "min": s.min, "max": s.max, "mean": s.mean})
}

impl Ctx {
    /// The worker library on the same containerd, in its own namespace.
    /// With `seccomp` false the containers run unconfined (a diagnostic:
    /// `ctr run` applies no seccomp profile either).
    async fn worker_lib(&self, seccomp: bool) -> Result<ContainerdRuntime> {
        let mut config = ContainerdConfig::new(&self.socket, NS_RAW, self.work.join("raw-state"));
        // The bench's registry, as the local stack's workers name it.
        config.egress.plain_http = vec![self
            .registry
            .parse()
            .with_context(|| format!("registry {}", self.registry))?];
        if !seccomp || config.seccomp_profile.as_ref().is_some_and(|p| !p.exists()) {
            config.seccomp_profile = None;
        }
        ContainerdRuntime::connect(config)
            .await
            .context("connecting the worker library to containerd")
    }

    /// POST + wait until running; (container, end-to-end ms).
    async fn platform_start(&self, image: &str) -> Result<(Container, f64)> {
        let t = Instant::now();
        let c = self.api.create(image, SLEEP, &self.run_id).await?;
        let w = self.api.wait_running(&c.id.to_string(), WAIT_S).await?;
        Ok((w, ms(t.elapsed())))
    }

    async fn platform_delete(&self, id: &str) -> Result<()> {
        self.api.delete(id).await
    }
}

fn run_spec(id: &str, image_ref: &str, image: skiff_worker::runtime::ImageInfo) -> RunSpec {
    RunSpec {
        id: id.to_owned(),
        image_ref: image_ref.to_owned(),
        image,
        command: SLEEP.iter().map(|s| (*s).to_owned()).collect(),
        env: BTreeMap::new(),
        secure_env: Default::default(),
        cpu: CpuMillis::from_millis(100),
        memory: MemoryMib::from_mib(64),
        hostname: id.chars().take(12).collect(),
        network: skiff_worker::runtime::NetworkSpec::None,
        read_only_rootfs: false,
        volumes: Vec::new(),
        mounts: Vec::new(),
        sandbox: None,
    }
}

fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Scenario 1, start latency with a cached image: platform vs `ctr run -d`
/// vs the worker library, samples interleaved so drifting machine load hits
/// all three.
pub async fn start_latency(ctx: &Ctx) -> Result<Outcome> {
    let n = ctx.samples;
    progress(&format!("start latency: warming up (image {})", ctx.image));
    ctx.ctr.pull(NS_CTR, &ctx.image).await?;
    let rt = ctx.worker_lib(true).await?;
    let rt_unconfined = ctx.worker_lib(false).await?;
    rt.ensure_image(&ctx.image).await?;
    // warm-up (untimed): the worker's image cache, shims' binaries, ...
    let (c, _) = ctx.platform_start(&ctx.image).await?;
    ctx.platform_delete(&c.id.to_string()).await?;
    let id = format!("bench-{}", uuid::Uuid::new_v4().simple());
    ctx.ctr.run_detached(NS_CTR, &ctx.image, &id, SLEEP).await?;
    ctx.ctr.remove(NS_CTR, &id).await?;

    let (mut plat, mut raw_ctr, mut lib, mut lib_unconfined) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut timings = Vec::new();
    for i in 0..n {
        if i % 10 == 0 {
            progress(&format!("start latency: sample {}/{n}", i + 1));
        }
        let (c, e2e) = ctx.platform_start(&ctx.image).await?;
        plat.push(e2e);
        timings.push(c.timings);
        ctx.platform_delete(&c.id.to_string()).await?;

        let id = format!("bench-{}", uuid::Uuid::new_v4().simple());
        let t = Instant::now();
        ctx.ctr.run_detached(NS_CTR, &ctx.image, &id, SLEEP).await?;
        raw_ctr.push(ms(t.elapsed()));
        ctx.ctr.remove(NS_CTR, &id).await?;

        let id = new_id();
        let t = Instant::now();
        let info = rt.ensure_image(&ctx.image).await?;
        let spec = run_spec(&id, &ctx.image, info);
        rt.create(&spec).await?;
        rt.start(&spec, 1).await?;
        lib.push(ms(t.elapsed()));
        rt.remove(&id).await?;

        let id = new_id();
        let t = Instant::now();
        let info = rt_unconfined.ensure_image(&ctx.image).await?;
        let spec = run_spec(&id, &ctx.image, info);
        rt_unconfined.create(&spec).await?;
        rt_unconfined.start(&spec, 1).await?;
        lib_unconfined.push(ms(t.elapsed()));
        rt_unconfined.remove(&id).await?;
    }
    let lu = summarize(&lib_unconfined);
    let (p, c, l) = (summarize(&plat), summarize(&raw_ctr), summarize(&lib));
    let med = |f: fn(&crate::api::Timings) -> Option<i64>| median_of(timings.iter().map(f));
    let queued = med(|t| t.queued_ms);
    let pull = med(|t| t.pull_ms);
    let create = med(|t| t.create_ms);
    let start = med(|t| t.start_ms);
    let phases: f64 = [queued, pull, create, start].iter().flatten().sum();
    progress(&format!(
        "start latency: platform p50 {:.1} ms; timings medians: queued {:?} pull {:?} create {:?} start {:?} ms; outside the phases {:.1} ms",
        p.p50, queued, pull, create, start, p.p50 - phases
    ));
    let rows = vec![
        Row::vs_raw("start, cached image: p50", "ms", p.p50, "ctr run -d", c.p50)
            .ratio_target(1.0, true),
        Row::vs_raw("start, cached image: p99", "ms", p.p99, "ctr run -d", c.p99)
            .value_target(250.0, true),
        Row::vs_raw(
            "start, cached image: p50 vs worker library (control-plane overhead)",
            "ms",
            p.p50,
            "worker lib",
            l.p50,
        ),
        Row::vs_raw(
            "start, cached image: p99 vs worker library",
            "ms",
            p.p99,
            "worker lib",
            l.p99,
        ),
        Row::vs_raw(
            "start, cached image: p50 vs worker library without seccomp (diagnostic)",
            "ms",
            p.p50,
            "worker lib, unconfined",
            lu.p50,
        ),
    ];
    let details = json!({
        "samples": n,
        "platform_ms": summary_json(&p),
        "ctr_run_ms": summary_json(&c),
        "worker_library_ms": summary_json(&l),
        "worker_library_no_seccomp_ms": summary_json(&lu),
        "timings_median_ms": {"queued_ms": queued, "pull_ms": pull, "create_ms": create, "start_ms": start},
        "timings_p99_ms": {
            "queued_ms": summarize(&timings.iter().filter_map(|t| t.queued_ms).map(|v| v as f64).collect::<Vec<_>>()).p99,
            "create_ms": summarize(&timings.iter().filter_map(|t| t.create_ms).map(|v| v as f64).collect::<Vec<_>>()).p99,
            "start_ms": summarize(&timings.iter().filter_map(|t| t.start_ms).map(|v| v as f64).collect::<Vec<_>>()).p99,
        },
        "platform_p50_outside_phases_ms": p.p50 - phases,
    });
    Ok(Outcome { rows, details })
}

/// Starts `n` platform containers, `in_flight` POSTs at a time, each then
/// waited for; (ids, wall seconds until the last one runs, failures).
pub async fn platform_burst(ctx: &Ctx, n: usize) -> Result<(Vec<String>, f64, Vec<String>)> {
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
            let c = api.create(&image, SLEEP, &run_id).await?;
            drop(permit);
            api.wait_running(&c.id.to_string(), WAIT_S).await?;
            anyhow::Ok((c.id.to_string(), t0.elapsed()))
        });
    }
    let (mut ids, mut errors, mut last) = (Vec::new(), Vec::new(), Duration::ZERO);
    while let Some(r) = set.join_next().await {
        match r? {
            Ok((id, at)) => {
                ids.push(id);
                last = last.max(at);
            }
            Err(e) => errors.push(format!("{e:#}")),
        }
    }
    Ok((ids, last.as_secs_f64(), errors))
}

/// `n` raw `ctr run -d`, `raw_parallel` at a time; (ids, wall seconds).
pub async fn ctr_burst(ctx: &Ctx, n: usize) -> Result<(Vec<String>, f64)> {
    let sem = Arc::new(Semaphore::new(ctx.raw_parallel));
    let t0 = Instant::now();
    let mut set = JoinSet::new();
    for _ in 0..n {
        let (ctr, sem, image) = (ctx.ctr.clone(), sem.clone(), ctx.image.clone());
        set.spawn(async move {
            let _permit = sem.acquire_owned().await.expect("semaphore");
            let id = format!("bench-{}", uuid::Uuid::new_v4().simple());
            ctr.run_detached(NS_CTR, &image, &id, SLEEP).await?;
            anyhow::Ok(id)
        });
    }
    let mut ids = Vec::new();
    let mut first_err = None;
    while let Some(r) = set.join_next().await {
        match r? {
            Ok(id) => ids.push(id),
            Err(e) => first_err = first_err.or(Some(e)),
        }
    }
    let wall = t0.elapsed().as_secs_f64();
    if let Some(e) = first_err {
        for id in &ids {
            let _ = ctx.ctr.remove(NS_CTR, id).await;
        }
        return Err(e.context("raw burst"));
    }
    Ok((ids, wall))
}

/// Deletes platform containers, `in_flight` at a time; (wall s, non-204s).
pub async fn platform_teardown(ctx: &Ctx, ids: &[String]) -> Result<(f64, Vec<String>)> {
    let sem = Arc::new(Semaphore::new(ctx.in_flight));
    let t0 = Instant::now();
    let mut set = JoinSet::new();
    for id in ids {
        let (api, sem, id) = (ctx.api.clone(), sem.clone(), id.clone());
        set.spawn(async move {
            let _permit = sem.acquire_owned().await.expect("semaphore");
            api.delete(&id).await
        });
    }
    let mut errors = Vec::new();
    while let Some(r) = set.join_next().await {
        if let Err(e) = r? {
            errors.push(format!("{e:#}"));
        }
    }
    // Done when the hosts have stopped and removed them, not when the
    // DELETEs were answered (a running one is answered 202 at once).
    if let Err(e) = ctx
        .api
        .wait_removed(&ctx.run_id, ids, Duration::from_secs(600))
        .await
    {
        errors.push(format!("{e:#}"));
    }
    Ok((t0.elapsed().as_secs_f64(), errors))
}

/// Raw teardown, `raw_parallel` at a time; wall seconds.
pub async fn ctr_teardown(ctx: &Ctx, ids: &[String]) -> Result<f64> {
    let sem = Arc::new(Semaphore::new(ctx.raw_parallel));
    let t0 = Instant::now();
    let mut set = JoinSet::new();
    for id in ids {
        let (ctr, sem, id) = (ctx.ctr.clone(), sem.clone(), id.clone());
        set.spawn(async move {
            let _permit = sem.acquire_owned().await.expect("semaphore");
            ctr.remove(NS_CTR, &id).await
        });
    }
    let mut first_err = None;
    while let Some(r) = set.join_next().await {
        if let Err(e) = r? {
            first_err = first_err.or(Some(e));
        }
    }
    let wall = t0.elapsed().as_secs_f64();
    match first_err {
        Some(e) => Err(e.context("raw teardown")),
        None => Ok(wall),
    }
}

/// Scenario 5, worker memory (containers running now), plus shims and containerd for context.
/// `before_kib`: the worker's RSS just before the containers were started;
/// `run_start_kib`: when the benchmark started.
pub fn memory(
    ctx: &Ctx,
    running: usize,
    before_kib: Option<u64>,
    run_start_kib: Option<u64>,
) -> Result<Outcome> {
    let pid = ctx
        .worker_pid
        .context("skiff-worker process of the local stack not found")?;
    let rss = machine::rss_kib(pid).context("reading the worker's VmRSS")?;
    let (shims, shim_kib) = machine::shims(&ctx.namespace);
    let containerd_kib = machine::pid_file(&ctx.state_dir.join("containerd/containerd.pid"))
        .and_then(machine::rss_kib);
    let mb = |kib: u64| kib as f64 / 1024.0;
    progress(&format!(
        "memory: worker {:.1} MB RSS with {running} containers ({:?} MB before them); {shims} shims {:.0} MB; containerd {:?} MB",
        mb(rss),
        before_kib.map(mb),
        mb(shim_kib),
        containerd_kib.map(mb)
    ));
    let rows = vec![Row::alone(
        &format!(
            "worker RSS, {running} sleeping containers ({})",
            ctx.declared
        ),
        "MB",
        mb(rss),
    )
    .value_target(50.0, true)];
    let details = json!({
        "containers": running,
        "worker_pid": pid,
        "worker_rss_mb": mb(rss),
        "worker_rss_before_burst_mb": before_kib.map(mb),
        "worker_rss_at_run_start_mb": run_start_kib.map(mb),
        "shims": shims,
        "shims_rss_total_mb": mb(shim_kib),
        "containerd_rss_mb": containerd_kib.map(mb),
    });
    Ok(Outcome { rows, details })
}

/// Scenario 3, cold pull of a fresh ~50 MB multi-layer image: POST ->
/// running (and the container's pull_ms) vs `ctr images pull` into a fresh
/// namespace.
pub async fn cold_pull(ctx: &Ctx) -> Result<Outcome> {
    let (mut e2e, mut pulls, mut raw) = (Vec::new(), Vec::new(), Vec::new());
    let mut size = (0, 0);
    for s in 0..ctx.cold_samples {
        progress(&format!(
            "cold pull {}/{}: building two fresh images (layers {:?} MiB + busybox)",
            s + 1,
            ctx.cold_samples,
            ctx.extra_layers
        ));
        let a = cold::build(&ctx.repo_root, &ctx.registry, &ctx.extra_layers, &ctx.work).await?;
        let b = cold::build(&ctx.repo_root, &ctx.registry, &ctx.extra_layers, &ctx.work).await?;
        size = (a.bytes, a.layers);

        let (c, t) = ctx.platform_start(&a.reference).await?;
        e2e.push(t);
        pulls.push(c.timings.pull_ms.map_or(f64::NAN, |v| v as f64));
        ctx.platform_delete(&c.id.to_string()).await?;
        // the image is the benchmark's alone: drop it from the worker's namespace
        ctx.ctr.remove_image(&ctx.namespace, &a.reference).await?;

        let ns = format!(
            "skiff-bench-pull-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let t = Instant::now();
        ctx.ctr.pull(&ns, &b.reference).await?;
        raw.push(ms(t.elapsed()));
        ctx.ctr.remove_image(&ns, &b.reference).await?;
        ctx.ctr.remove_namespace(&ns).await?;
        progress(&format!(
            "cold pull {}/{}: platform {:.0} ms (pull_ms {:?}), ctr pull {:.0} ms",
            s + 1,
            ctx.cold_samples,
            e2e[s],
            c.timings.pull_ms,
            raw[s]
        ));
    }
    let (e, p, r) = (summarize(&e2e), summarize(&pulls), summarize(&raw));
    let mb = size.0 as f64 / 1e6;
    let rows = vec![
        Row::vs_raw(
            &format!("cold pull {mb:.0} MB / {} layers: POST -> running", size.1),
            "ms",
            e.p50,
            "ctr images pull",
            r.p50,
        )
        .ratio_target(1.1, true),
        Row::vs_raw(
            "cold pull: the container's pull_ms",
            "ms",
            p.p50,
            "ctr images pull",
            r.p50,
        )
        .ratio_target(1.1, true),
    ];
    let details = json!({
        "samples": ctx.cold_samples,
        "image_bytes": size.0,
        "layers": size.1,
        "extra_layers_mib": ctx.extra_layers,
        "platform_e2e_ms": summary_json(&e),
        "platform_pull_ms": summary_json(&p),
        "ctr_pull_ms": summary_json(&r),
    });
    Ok(Outcome { rows, details })
}

/// Parses a wrk latency like `812.00us`, `4.20ms`, `1.02s` into ms.
fn wrk_ms(v: &str) -> Option<f64> {
    let v = v.trim();
    let (num, mult) = if let Some(x) = v.strip_suffix("us") {
        (x, 0.001)
    } else if let Some(x) = v.strip_suffix("ms") {
        (x, 1.0)
    } else if let Some(x) = v.strip_suffix('s') {
        (x, 1000.0)
    } else if let Some(x) = v.strip_suffix('m') {
        (x, 60_000.0)
    } else {
        (v, 1.0)
    };
    num.parse::<f64>().ok().map(|n| n * mult)
}

/// (req/s, p50 ms, p99 ms, requests, non-2xx) from wrk's --latency output.
fn parse_wrk(out: &str) -> Option<(f64, f64, f64, u64, u64)> {
    let mut rps = None;
    let (mut p50, mut p99, mut total, mut bad) = (None, None, 0, 0);
    for line in out.lines() {
        let t = line.trim();
        if let Some(v) = t.strip_prefix("Requests/sec:") {
            rps = v.trim().parse().ok();
        } else if let Some(v) = t.strip_prefix("50%") {
            p50 = wrk_ms(v);
        } else if let Some(v) = t.strip_prefix("99%") {
            p99 = wrk_ms(v);
        } else if let Some(v) = t.strip_prefix("Non-2xx or 3xx responses:") {
            bad = v.trim().parse().unwrap_or(0);
        } else if t.contains(" requests in ") {
            total = t.split_whitespace().next()?.parse().unwrap_or(0);
        }
    }
    Some((rps?, p50?, p99?, total, bad))
}

/// `(url, token)` pairs read in turn.
type Targets = Vec<(String, String)>;

/// In-process load: `connections` loops of GET for `secs`; (req/s, p50, p99, n, non-200).
async fn reqwest_load(
    ctx: &Ctx,
    targets: &Targets,
    secs: u64,
) -> Result<(f64, f64, f64, u64, u64)> {
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(ctx.connections)
        .build()?;
    let deadline = Instant::now() + Duration::from_secs(secs);
    let t0 = Instant::now();
    let mut set = JoinSet::new();
    for i in 0..ctx.connections {
        let (url, token) = targets[i % targets.len()].clone();
        let http = http.clone();
        set.spawn(async move {
            let (mut lat, mut bad) = (Vec::new(), 0u64);
            while Instant::now() < deadline {
                let t = Instant::now();
                match http.get(&url).bearer_auth(&token).send().await {
                    Ok(r) if r.status().is_success() => {
                        let _ = r.bytes().await;
                    }
                    _ => bad += 1,
                }
                lat.push(ms(t.elapsed()));
            }
            (lat, bad)
        });
    }
    let (mut lat, mut bad) = (Vec::new(), 0);
    while let Some(r) = set.join_next().await {
        let (l, b) = r?;
        lat.extend(l);
        bad += b;
    }
    let s = summarize(&lat);
    Ok((
        lat.len() as f64 / t0.elapsed().as_secs_f64(),
        s.p50,
        s.p99,
        lat.len() as u64,
        bad,
    ))
}

/// Waits for the readers' containers (each tenant's API and container id)
/// and reads them in turn: (figures, whether wrk ran).
async fn read_load(
    ctx: &Ctx,
    owned: &[(Api, String)],
) -> Result<((f64, f64, f64, u64, u64), bool)> {
    for (api, id) in owned {
        api.wait_exited(id, WAIT_S).await?;
    }
    let targets: Targets = owned
        .iter()
        .map(|(api, id)| {
            (
                format!("{}/v1/containers/{id}", api.base),
                api.token.clone(),
            )
        })
        .collect();
    let have_wrk = std::process::Command::new("wrk")
        .arg("--version")
        .output()
        .is_ok();
    let result = if have_wrk {
        progress(&format!(
            "API reads: wrk, {} connections, {} s",
            ctx.connections, ctx.read_seconds
        ));
        let script = ctx.work.join("auth.lua");
        let base = ctx.api.base.len();
        let entries: Vec<String> = targets
            .iter()
            .map(|(url, token)| format!("{{\"{}\", \"{token}\"}}", &url[base..]))
            .collect();
        std::fs::write(
            &script,
            format!(
                "local targets = {{ {} }}\nlocal i = 0\n\
                 request = function()\n  i = i % #targets + 1\n  local t = targets[i]\n  \
                 return wrk.format(\"GET\", t[1], {{[\"Authorization\"] = \"Bearer \" .. t[2]}})\nend\n",
                entries.join(", ")
            ),
        )?;
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(ctx.connections);
        let out = tokio::time::timeout(
            Duration::from_secs(ctx.read_seconds + 30),
            tokio::process::Command::new("wrk")
                .arg(format!("-t{threads}"))
                .arg(format!("-c{}", ctx.connections))
                .arg(format!("-d{}s", ctx.read_seconds))
                .args(["--latency", "--timeout", "5s", "-s"])
                .arg(&script)
                .arg(&targets[0].0)
                .kill_on_drop(true)
                .output(),
        )
        .await
        .context("wrk timed out")??;
        let _ = std::fs::remove_file(&script);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        parse_wrk(&text).with_context(|| format!("could not parse wrk's output:\n{text}"))?
    } else {
        progress("API reads: wrk not found, using an in-process reqwest load loop");
        reqwest_load(ctx, &targets, ctx.read_seconds).await?
    };
    Ok((result, have_wrk))
}

/// Scenario 4, API reads: GET /v1/containers/{id} with `connections`
/// connections. Rate limits are per token, so the load is spread over one
/// tenant per connection, each reading its own container (one that ran
/// `true` and exited: the view is the same, and a finished container holds
/// no capacity): this measures what the API serves, not one token's read
/// bucket.
pub async fn api_reads(ctx: &Ctx, admin_token: &str) -> Result<Outcome> {
    let tenants = ctx.connections.max(1);
    progress(&format!("API reads: {tenants} tenants, a container each"));
    let mut owned: Vec<(Api, String)> = Vec::new();
    let made = async {
        for i in 0..tenants {
            let tenant = ctx
                .api
                .create_tenant(admin_token, &format!("reads-{}-{i}", ctx.run_id))
                .await?;
            let api = ctx.api.as_token(&tenant.token);
            let c = api.create(&ctx.image, &["true"], &ctx.run_id).await?;
            owned.push((api, c.id.to_string()));
        }
        anyhow::Ok(())
    }
    .await;
    let result = match made {
        Ok(()) => read_load(ctx, &owned).await,
        Err(e) => Err(e),
    };
    // Each tenant's container goes, whatever happened.
    for (api, id) in &owned {
        let _ = api.delete(id).await;
    }
    let (result, have_wrk) = result?;
    let (rps, p50, p99, total, bad) = result;
    progress(&format!(
        "API reads: {rps:.0} req/s, p50 {p50:.2} ms, p99 {p99:.2} ms ({total} requests, {bad} not 2xx)"
    ));
    if bad > 0 {
        bail!("{bad} of {total} reads were not 2xx");
    }
    let label = format!("API reads, {} connections", ctx.connections);
    let rows = vec![
        Row::alone(&format!("{label}: throughput"), "req/s", rps).value_target(5000.0, false),
        Row::alone(&format!("{label}: p99"), "ms", p99).value_target(20.0, true),
    ];
    let details = json!({
        "tool": if have_wrk { "wrk" } else { "reqwest" },
        "tenants": tenants,
        "connections": ctx.connections,
        "seconds": ctx.read_seconds,
        "requests": total,
        "req_per_s": rps,
        "p50_ms": p50,
        "p99_ms": p99,
    });
    Ok(Outcome { rows, details })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_wrk() {
        let out = "Running 10s test @ http://127.0.0.1:8080/v1/containers/x
  2 threads and 64 connections
  Latency Distribution
     50%  812.00us
     75%    1.20ms
     90%    3.00ms
     99%   12.50ms
  125000 requests in 10.00s, 100.00MB read
  Non-2xx or 3xx responses: 5
Requests/sec:  12500.00
Transfer/sec:     10.00MB
";
        let (rps, p50, p99, total, bad) = parse_wrk(out).unwrap();
        assert_eq!((rps, total, bad), (12500.0, 125000, 5));
        assert!((p50 - 0.812).abs() < 1e-9);
        assert!((p99 - 12.5).abs() < 1e-9);
        assert_eq!(wrk_ms("1.02s"), Some(1020.0));
    }
}
