//! skiff-bench: measures the local skiff platform against raw containerd
//! (`ctr`, and the worker's own containerd-client path without the control
//! plane) in the same run, and prints platform figure, raw figure and ratio.
//!
//! See `--help` and the README's "Performance" section.

mod api;
mod cold;
mod ctr;
mod jobs;
mod machine;
mod netstart;
mod noisy;
mod pool;
mod report;
mod scenarios;
mod soak;
mod stats;

use anyhow::{bail, Context, Result};
use api::Api;
use clap::{Parser, ValueEnum};
use ctr::{Ctr, NS_CTR};
use report::{Report, Row};
use scenarios::{Ctx, NS_RAW};
use serde_json::json;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// start latency with a cached image (network none, as `ctr run -d`)
    Start,
    /// start latency on a private network, with and without a published
    /// port, vs `ctr run -d --cni` with the same CNI chain
    StartNet,
    /// 200 containers posted at once -> all running
    Burst,
    /// worker RSS with the burst's containers sleeping
    Memory,
    /// delete the burst's containers
    Teardown,
    /// cold pull of a fresh ~50 MB multi-layer image
    Cold,
    /// GET /v1/containers/{id} under load
    Reads,
    /// a burst of short containers through the queue of the whole pool
    /// (every ready host at its own capacity) vs `ctr run --rm`
    Pool,
    /// one job of many short tasks, parallelism = the pool's slots, vs
    /// `ctr run --rm` at that concurrency
    Job,
    /// tenant B's start latency while tenant A floods the API
    Noisy,
    /// short containers started and deleted for minutes; growth of tables,
    /// RSS, open files and disk (not in the default set: it takes 10 min)
    Soak,
}

/// Benchmarks the local skiff platform against raw containerd on the same
/// machine. Uses the stack of `deploy/local/up.sh` (reads .skiff/local.env).
#[derive(Debug, Parser)]
#[command(name = "skiff-bench", version)]
struct Args {
    /// A short smoke run: few samples, a small burst, a short read load.
    #[arg(long)]
    quick: bool,
    /// The env file deploy/local/up.sh writes.
    #[arg(long, default_value_os_t = default_env_file())]
    env_file: PathBuf,
    /// If the platform is not up: start `deploy/local/up.sh` in the
    /// background (with SKIFF_CPU_MILLIS=40000 unless set), wait for it,
    /// and stop it at the end.
    #[arg(long)]
    start_platform: bool,
    /// Where to write the JSON results.
    #[arg(long, default_value_os_t = default_out())]
    out: PathBuf,
    /// Scenarios to run, comma-separated.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "start,start-net,burst,memory,teardown,cold,reads,pool,job,noisy"
    )]
    scenarios: Vec<Scenario>,
    /// Samples of the start-latency scenario [default: 50, quick: 5].
    #[arg(long)]
    samples: Option<usize>,
    /// Containers in the burst, memory and teardown scenarios [default: 200, quick: 20].
    #[arg(long)]
    burst: Option<usize>,
    /// Short containers of the pool scenario [default: 300, quick: 30].
    #[arg(long)]
    pool_burst: Option<usize>,
    /// Seconds tenant A floods in the noisy-neighbour scenario [default: 30, quick: 10].
    #[arg(long)]
    noisy_seconds: Option<u64>,
    /// Seconds of the soak scenario [default: 600, quick: 60].
    #[arg(long)]
    soak_seconds: Option<u64>,
    /// Clients of the soak scenario, each starting one container at a time.
    #[arg(long, default_value_t = 50)]
    soak_clients: usize,
    /// Tasks of the job scenario [default: 1000, quick: 50].
    #[arg(long)]
    job_tasks: Option<usize>,
    /// Concurrent API requests in burst and teardown.
    #[arg(long, default_value_t = 32)]
    in_flight: usize,
    /// Concurrent `ctr` processes of the raw burst and teardown.
    #[arg(long, default_value_t = 8)]
    raw_parallel: usize,
    /// Connections of the API-read load.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Duration of the API-read load in seconds [default: 10, quick: 3].
    #[arg(long)]
    read_seconds: Option<u64>,
    /// Extra layers (MiB each) of the cold-pull image, on top of busybox.
    #[arg(long, value_delimiter = ',', default_value = "10,20,20")]
    extra_layers: Vec<u64>,
    /// Cold pulls measured (two fresh images each) [default: 3, quick: 1].
    #[arg(long)]
    cold_samples: Option<usize>,
    /// The image of every scenario but the cold pull [default: SKIFF_SAMPLE_IMAGE].
    #[arg(long)]
    image: Option<String>,
    /// containerd's CLI.
    #[arg(long, default_value = "ctr")]
    ctr: String,
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn default_env_file() -> PathBuf {
    repo_root().join(".skiff/local.env")
}

fn default_out() -> PathBuf {
    repo_root().join("bench/results/latest.json")
}

fn read_env_file(path: &Path) -> Result<HashMap<String, String>> {
    let text = std::fs::read_to_string(path)?;
    Ok(text
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect())
}

/// A timestamped progress line on stderr (the table goes to stdout).
pub(crate) fn progress(msg: &str) {
    eprintln!(
        "[skiff-bench {}] {msg}",
        chrono::Local::now().format("%H:%M:%S")
    );
}

/// The platform's env, once its API answers /readyz.
async fn platform_env(env_file: &Path) -> Option<HashMap<String, String>> {
    let env = read_env_file(env_file).ok()?;
    let api = Api::new(env.get("SKIFF_API")?, env.get("SKIFF_TOKEN")?).ok()?;
    api.ready().await.then_some(env)
}

/// up.sh started by us (stopped at the end).
struct Started(std::process::Child);

impl Started {
    fn stop(mut self) {
        progress("stopping the deploy/local/up.sh this benchmark started");
        let pid = self.0.id().to_string();
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status();
        for _ in 0..600 {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        progress("up.sh did not stop within 60 s; left running");
    }
}

async fn ensure_platform(args: &Args) -> Result<(HashMap<String, String>, Option<Started>)> {
    if let Some(env) = platform_env(&args.env_file).await {
        return Ok((env, None));
    }
    if !args.start_platform {
        bail!(
            "the local platform is not running ({} missing, or its API does not answer /readyz).\n\
             Start it in another terminal, with room for the burst and release binaries:\n\
             \n    SKIFF_CPU_MILLIS=40000 deploy/local/up.sh\n\n\
             then run skiff-bench again (or pass --start-platform to have it started and stopped here).",
            args.env_file.display()
        );
    }
    let root = repo_root();
    let log = std::env::temp_dir().join("skiff-bench-up.log");
    progress(&format!(
        "starting deploy/local/up.sh in the background (log: {}); the first build takes minutes",
        log.display()
    ));
    let file = std::fs::File::create(&log)?;
    let mut cmd = std::process::Command::new(root.join("deploy/local/up.sh"));
    cmd.current_dir(&root)
        .stdin(std::process::Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file);
    if std::env::var_os("SKIFF_CPU_MILLIS").is_none() {
        cmd.env("SKIFF_CPU_MILLIS", "40000");
    }
    let started = std::time::SystemTime::now();
    let mut child = Started(cmd.spawn().context("starting deploy/local/up.sh")?);
    let deadline = Instant::now() + Duration::from_secs(45 * 60);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.0.try_wait() {
            bail!(
                "deploy/local/up.sh exited ({status}); see {}",
                log.display()
            );
        }
        let fresh = std::fs::metadata(&args.env_file)
            .and_then(|m| m.modified())
            .is_ok_and(|m| m >= started);
        if fresh {
            if let Some(env) = platform_env(&args.env_file).await {
                return Ok((env, Some(child)));
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    child.stop();
    bail!(
        "the platform did not come up within 45 minutes (log: {})",
        log.display()
    )
}

/// Deletes every platform container of this run and everything in the
/// benchmark's own containerd namespaces.
async fn cleanup(ctx: &Ctx) {
    match ctx.api.list_run(&ctx.run_id).await {
        Ok(left) if !left.is_empty() => {
            progress(&format!(
                "cleanup: deleting {} platform containers of this run",
                left.len()
            ));
            let ids: Vec<String> = left.into_iter().map(|c| c.id.to_string()).collect();
            if let Err(e) = scenarios::platform_teardown(ctx, &ids).await {
                progress(&format!("cleanup: {e:#}"));
            }
        }
        Ok(_) => {}
        Err(e) => progress(&format!("cleanup: listing this run's containers: {e:#}")),
    }
    for ns in [NS_CTR, NS_RAW] {
        match ctx.ctr.clean_namespace(ns).await {
            Ok(0) => {}
            Ok(n) => progress(&format!(
                "cleanup: removed {n} containers from namespace {ns}"
            )),
            Err(e) => progress(&format!("cleanup of namespace {ns}: {e:#}")),
        }
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match bench().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("skiff-bench: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn bench() -> Result<()> {
    let args = Args::parse();
    let (env, started) = ensure_platform(&args).await?;
    let result = tokio::select! {
        r = run(&args, &env) => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted (this run's containers were left; the next run cleans the raw namespaces)")),
    };
    if let Some(s) = started {
        s.stop();
    }
    result
}

fn host_capacity(worker_pid: Option<u32>, cores: usize, memory_mib: u64) -> (u64, u64) {
    let env_num = |k: &str| {
        worker_pid
            .and_then(|p| machine::env_of(p, k))
            .and_then(|v| v.parse::<u64>().ok())
    };
    let cpu = env_num("SKIFF_CPU_MILLIS").unwrap_or(cores as u64 * 1000);
    let mem = env_num("SKIFF_MEMORY_MIB").unwrap_or(memory_mib.saturating_sub(1024));
    (cpu, mem)
}

async fn run(args: &Args, env: &HashMap<String, String>) -> Result<()> {
    let get = |k: &str| {
        env.get(k)
            .cloned()
            .with_context(|| format!("{k} missing from {}", args.env_file.display()))
    };
    let q = args.quick;
    let image = match &args.image {
        Some(i) => i.clone(),
        None => get("SKIFF_SAMPLE_IMAGE")?,
    };
    let registry = image
        .split('/')
        .next()
        .unwrap_or("127.0.0.1:5050")
        .to_owned();
    let state_dir = machine::state_dir(&args.env_file);
    let worker_pid = machine::find_worker(&state_dir);
    let run_id = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
    let work = std::env::temp_dir().join(format!("skiff-bench-{run_id}"));
    std::fs::create_dir_all(&work)?;
    let ctr = Ctr {
        bin: args.ctr.clone(),
        socket: PathBuf::from(get("SKIFF_CONTAINERD_SOCKET")?),
    };
    let containerd_version = ctr.server_version().await.context("ctr version")?;
    let mut machine = machine::Machine::probe(containerd_version, worker_pid);
    let started_at = chrono::Utc::now();
    let mut notes = Vec::new();
    if machine.worker_build != "release" {
        let n = format!(
            "the worker is a {} build: figures are only meaningful with release builds (deploy/local/up.sh without SKIFF_LOCAL_PROFILE=dev)",
            machine.worker_build
        );
        progress(&n);
        notes.push(n);
    }

    let mut burst = args.burst.unwrap_or(if q { 20 } else { 200 });
    let (cpu_cap, mem_cap) = host_capacity(worker_pid, machine.cores, machine.memory_mib);
    let fit = ((cpu_cap / 100).saturating_sub(2)).min((mem_cap / 64).saturating_sub(2)) as usize;
    let population_wanted = [Scenario::Burst, Scenario::Memory, Scenario::Teardown]
        .iter()
        .any(|s| args.scenarios.contains(s));
    if population_wanted && burst > fit {
        let n = format!(
            "the local worker offers {cpu_cap} millicpu and {mem_cap} MiB: {burst} containers of 0.1 cpu / 64 MiB need {} millicpu and {} MiB. \
             Running the burst with {fit}. For the full figure restart the stack with more allocatable cpu \
             (sleeping containers use none): stop up.sh, then `SKIFF_CPU_MILLIS={} deploy/local/up.sh`",
            burst * 100 + 200,
            burst * 64 + 128,
            (burst as u64 * 100 + 200).div_ceil(1000) * 1000 * 2
        );
        progress(&n);
        notes.push(n);
        burst = fit;
    }

    let ctx = Ctx {
        api: Api::new(&get("SKIFF_API")?, &get("SKIFF_TOKEN")?)?,
        ctr,
        image,
        registry,
        run_id: run_id.clone(),
        repo_root: repo_root(),
        state_dir,
        socket: PathBuf::from(get("SKIFF_CONTAINERD_SOCKET")?),
        namespace: env
            .get("SKIFF_CONTAINERD_NAMESPACE")
            .cloned()
            .unwrap_or_else(|| "skiff-local".to_owned()),
        work: work.clone(),
        worker_pid,
        samples: args.samples.unwrap_or(if q { 5 } else { 50 }),
        burst,
        in_flight: args.in_flight.max(1),
        raw_parallel: args.raw_parallel.max(1),
        connections: args.connections.max(1),
        read_seconds: args.read_seconds.unwrap_or(if q { 3 } else { 10 }),
        extra_layers: args.extra_layers.clone(),
        cold_samples: args.cold_samples.unwrap_or(if q { 1 } else { 3 }).max(1),
        declared: format!(
            "worker declares {} vCPU / {} MiB",
            cpu_cap as f64 / 1000.0,
            mem_cap
        ),
    };
    progress(&format!(
        "run {run_id}: {} cores, {} MiB, kernel {}, containerd {}, worker {} (pid {:?}), load {:.2}",
        machine.cores,
        machine.memory_mib,
        machine.kernel,
        machine.containerd,
        machine.worker_build,
        worker_pid,
        machine.loadavg_start
    ));
    // leftovers of an interrupted earlier run in our own namespaces
    for ns in [NS_CTR, NS_RAW] {
        let _ = ctx.ctr.clean_namespace(ns).await;
    }
    let idle_rss = worker_pid.and_then(machine::rss_kib);

    let mut rows: Vec<Row> = Vec::new();
    let mut details = serde_json::Map::new();
    let mut errors = Vec::new();
    let want = |s: Scenario| args.scenarios.contains(&s);
    let mut record = |name: &str, r: Result<scenarios::Outcome>, rows: &mut Vec<Row>| match r {
        Ok(o) => {
            rows.extend(o.rows);
            details.insert(name.to_owned(), o.details);
        }
        Err(e) => {
            let msg = format!("{name}: {e:#}");
            progress(&format!("FAILED {msg}"));
            errors.push(msg);
        }
    };

    if want(Scenario::Start) {
        let r = scenarios::start_latency(&ctx).await;
        record("start", r, &mut rows);
    }
    if want(Scenario::StartNet) {
        let r = netstart::start_latency_network(&ctx).await;
        record("start-net", r, &mut rows);
    }

    // burst -> memory -> teardown share one population of containers
    if want(Scenario::Burst) || want(Scenario::Memory) || want(Scenario::Teardown) {
        let r = population(
            &ctx,
            want(Scenario::Burst),
            want(Scenario::Memory),
            want(Scenario::Teardown),
            idle_rss,
        )
        .await;
        match r {
            Ok(outcomes) => {
                for (name, o) in outcomes {
                    record(name, Ok(o), &mut rows);
                }
            }
            Err(e) => record("burst/memory/teardown", Err(e), &mut rows),
        }
        cleanup(&ctx).await;
    }

    if want(Scenario::Cold) {
        let r = scenarios::cold_pull(&ctx).await;
        record("cold", r, &mut rows);
    }
    if want(Scenario::Reads) {
        let r = scenarios::api_reads(&ctx, &get("SKIFF_ADMIN_TOKEN")?).await;
        record("reads", r, &mut rows);
    }
    if want(Scenario::Pool) {
        let n = args.pool_burst.unwrap_or(if q { 30 } else { 300 });
        let r = pool::pool_burst(&ctx, n, &get("SKIFF_ADMIN_TOKEN")?).await;
        record("pool", r, &mut rows);
    }
    if want(Scenario::Job) {
        let n = args.job_tasks.unwrap_or(if q { 50 } else { 1000 });
        let r = jobs::job_burst(&ctx, n, &get("SKIFF_ADMIN_TOKEN")?).await;
        record("job", r, &mut rows);
    }
    if want(Scenario::Noisy) {
        let seconds = args.noisy_seconds.unwrap_or(if q { 10 } else { 30 });
        let samples = ctx.samples.min(30);
        let r = noisy::noisy_neighbour(&ctx, samples, seconds, &get("SKIFF_ADMIN_TOKEN")?).await;
        record("noisy", r, &mut rows);
    }
    if want(Scenario::Soak) {
        let seconds = args.soak_seconds.unwrap_or(if q { 60 } else { 600 });
        let r = soak::soak(
            &ctx,
            args.soak_clients,
            seconds,
            &get("SKIFF_DATABASE_URL")?,
        )
        .await;
        record("soak", r, &mut rows);
    }
    cleanup(&ctx).await;
    let _ = std::fs::remove_dir_all(&work);

    machine.loadavg_end = machine::loadavg();
    let report = Report {
        run_id,
        command: std::env::args().collect::<Vec<_>>().join(" "),
        started_at: started_at.to_rfc3339(),
        finished_at: chrono::Utc::now().to_rfc3339(),
        quick: q,
        machine: machine.clone(),
        rows: rows.clone(),
        details,
        notes,
        errors: errors.clone(),
    };
    if let Some(dir) = args.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&args.out, serde_json::to_string_pretty(&report)? + "\n")
        .with_context(|| format!("writing {}", args.out.display()))?;

    println!(
        "\nskiff-bench {} on {} cores / {} MiB, {} ({}), kernel {}, containerd {}, worker build {}, load {:.2} -> {:.2}\n",
        if q { "--quick" } else { "(full)" },
        machine.cores,
        machine.memory_mib,
        machine.cpu_model,
        machine.os,
        machine.kernel,
        machine.containerd,
        machine.worker_build,
        machine.loadavg_start,
        machine.loadavg_end
    );
    print!("{}", report::table(&rows));
    if let Some(t) = report
        .details
        .get("start")
        .and_then(|d| d.get("timings_median_ms"))
    {
        println!("\nstart, cached image: medians of the platform's timings (ms): {t}");
        if let Some(o) = report.details["start"]
            .get("platform_p50_outside_phases_ms")
            .and_then(serde_json::Value::as_f64)
        {
            println!("  p50 end to end minus those phases (API, scheduling, notification, state report, wait): {o:.1} ms");
        }
    }
    for n in &report.notes {
        println!("note: {n}");
    }
    println!("\nJSON: {}", args.out.display());
    if !errors.is_empty() {
        for e in &errors {
            println!("error: {e}");
        }
        bail!("{} scenario(s) failed", errors.len());
    }
    Ok(())
}

/// Burst (timed or not), memory with the population sleeping, teardown;
/// then the raw burst and teardown with `ctr`.
async fn population(
    ctx: &Ctx,
    burst: bool,
    memory: bool,
    teardown: bool,
    idle_rss: Option<u64>,
) -> Result<Vec<(&'static str, scenarios::Outcome)>> {
    let n = ctx.burst;
    let mut out = Vec::new();
    progress(&format!(
        "burst: {n} containers, {} POSTs in flight",
        ctx.in_flight
    ));
    let before = ctx.worker_pid.and_then(machine::rss_kib);
    let (ids, wall, failures) = scenarios::platform_burst(ctx, n).await?;
    if !failures.is_empty() {
        bail!(
            "{} of {n} burst containers did not run; first: {}",
            failures.len(),
            failures[0]
        );
    }
    let plat_rate = n as f64 / wall;
    progress(&format!(
        "burst: platform {n} running in {wall:.2} s ({plat_rate:.1}/s)"
    ));
    if memory {
        out.push((
            "memory",
            scenarios::memory(ctx, ids.len(), before, idle_rss)?,
        ));
    }
    let (td_wall, td_errors) = scenarios::platform_teardown(ctx, &ids).await?;
    if !td_errors.is_empty() {
        bail!(
            "{} of {n} deletes failed; first: {}",
            td_errors.len(),
            td_errors[0]
        );
    }
    progress(&format!("teardown: platform deleted {n} in {td_wall:.2} s"));

    progress(&format!(
        "burst: raw, {n} ctr run -d, {} at a time",
        ctx.raw_parallel
    ));
    let (raw_ids, raw_wall) = scenarios::ctr_burst(ctx, n).await?;
    let raw_rate = n as f64 / raw_wall;
    progress(&format!(
        "burst: ctr {n} running in {raw_wall:.2} s ({raw_rate:.1}/s)"
    ));
    let raw_td = scenarios::ctr_teardown(ctx, &raw_ids).await?;
    progress(&format!("teardown: ctr removed {n} in {raw_td:.2} s"));

    if burst {
        out.push((
            "burst",
            scenarios::Outcome {
                rows: vec![Row::vs_raw(
                    &format!("burst: {n} posted -> all running ({})", ctx.declared),
                    "containers/s",
                    plat_rate,
                    &format!("ctr run -d, {} parallel", ctx.raw_parallel),
                    raw_rate,
                )
                .ratio_target(1.0, false)],
                details: json!({
                    "containers": n, "in_flight": ctx.in_flight, "raw_parallel": ctx.raw_parallel,
                    "platform_wall_s": wall, "platform_rate": plat_rate,
                    "ctr_wall_s": raw_wall, "ctr_rate": raw_rate,
                }),
            },
        ));
    }
    if teardown {
        out.push((
            "teardown",
            scenarios::Outcome {
                rows: vec![Row::vs_raw(
                    &format!("teardown: delete {n} ({})", ctx.declared),
                    "s",
                    td_wall,
                    &format!(
                        "ctr tasks delete -f + containers delete, {} parallel",
                        ctx.raw_parallel
                    ),
                    raw_td,
                )
                .ratio_target(1.2, true)],
                details: json!({
                    "containers": n, "in_flight": ctx.in_flight, "raw_parallel": ctx.raw_parallel,
                    "platform_wall_s": td_wall, "ctr_wall_s": raw_td,
                }),
            },
        ));
    }
    Ok(out)
}
