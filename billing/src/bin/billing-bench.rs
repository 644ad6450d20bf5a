//! `billing-bench`: loads a million usage records for one tenant into a
//! fresh database and times the monthly report (`group_by=container`) and
//! `group_by=day` (median of 5 after one warm-up run each) beside a plain
//! `SELECT count(*)` over the same rows (the floor), as a table and JSON.
//! It also times the container report computed from the records alone
//! (`report_from_records`, no hourly rollup) and checks both agree.
//!
//! The records have the real shape (every column, one UTC hour at most,
//! labels, stamped rates, 32-byte hashes) and are loaded with one
//! `INSERT ... SELECT generate_series` for speed. Their hashes are filler,
//! so the chain does not verify: verification is not what is timed here.
//!
//! Layout of the data: 200 containers, each running one stretch of 50,000 s
//! (5,000 records of 10 s, the checkpoint cadence), the stretches spread over
//! the month and starting 30 min before it, so both month boundaries clip.

use anyhow::{Context, Result};
use chrono::{DateTime, TimeZone, Utc};
use clap::Parser;
use skiff_billing::{report, report_from_records, ReportQuery};
use sqlx::{Connection, PgConnection};
use std::time::{Duration, Instant};
use uuid::Uuid;

#[derive(Parser)]
#[command(
    name = "billing-bench",
    about = "time billing reports over a million usage records"
)]
struct Args {
    /// A PostgreSQL superuser URL; the bench creates (and drops) its own database.
    #[arg(long, env = "SKIFF_TEST_DATABASE_URL")]
    database_url: String,
    /// Records per container; 200 containers.
    #[arg(long, default_value_t = 5000)]
    records_per_container: i64,
    /// Timed runs per query (the median is reported).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Keep the database afterwards (prints its name).
    #[arg(long)]
    keep: bool,
    /// Print EXPLAIN (ANALYZE, BUFFERS) of the report query.
    #[arg(long)]
    explain: bool,
}

const CONTAINERS: i64 = 200;
const RECORD_SECONDS: i64 = 10;

fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let base = match base[scheme_end..].rfind('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{db}?{q}"),
        None => format!("{base}/{db}"),
    }
}

async fn load(
    conn: &mut PgConnection,
    tenant: Uuid,
    month: DateTime<Utc>,
    per: i64,
) -> Result<i64> {
    sqlx::query("INSERT INTO tenants (id, name) VALUES ($1, 'bench')")
        .bind(tenant)
        .execute(&mut *conn)
        .await?;
    // Stretch k starts at month - 1800 s + k * (month length / 200).
    let spacing = 30 * 86_400 / CONTAINERS;
    let n = CONTAINERS * per;
    sqlx::query(
        "INSERT INTO usage_records (tenant_id, seq, record_id, kind, container_id, generation,
                                    container_name, labels, start_at, end_at, seconds,
                                    cpu_millis, memory_mib, nano_per_vcpu_second,
                                    nano_per_gib_second, note, prev_hash, hash, recorded_at)
         SELECT $1, i + 1,
                cid::text || ':1:' || (j * $5) || ':usage', 'usage', cid, 1,
                'c' || k, jsonb_build_object('team', 't' || (k % 5)),
                st, st + make_interval(secs => $5), $5,
                250 * (1 + k % 4), 256 * (1 + k % 8), 11300, 1240, NULL,
                decode(md5(i::text) || md5((i + 1)::text), 'hex'),
                decode(md5((i + 1)::text) || md5((i + 2)::text), 'hex'),
                st + make_interval(secs => $5 + 1)
           FROM generate_series(0, $3 - 1) AS i,
                LATERAL (SELECT i / $4 AS k, i % $4 AS j) kj,
                LATERAL (SELECT md5('bench-container-' || k)::uuid AS cid,
                                $2::timestamptz - interval '1800 s'
                                  + make_interval(secs => k * $6 + j * $5) AS st) x",
    )
    .bind(tenant)
    .bind(month)
    .bind(n)
    .bind(per)
    .bind(RECORD_SECONDS as f64)
    .bind(spacing as f64)
    .execute(&mut *conn)
    .await
    .context("loading usage records")?;
    sqlx::query(
        "INSERT INTO usage_chain_heads (tenant_id, last_seq, last_hash, usage_seconds)
         VALUES ($1, $2, decode(md5('x') || md5('y'), 'hex'), $2 * $3)",
    )
    .bind(tenant)
    .bind(n)
    .bind(RECORD_SECONDS)
    .execute(&mut *conn)
    .await?;
    // The hourly rollup the ledger maintains on every append, built here in
    // one statement from the loaded records.
    sqlx::query(
        "INSERT INTO usage_hourly (tenant_id, hour_start, container_id, labels, container_name,
                                   records, seconds, milli_vcpu_seconds, mib_seconds,
                                   cpu_cost, mem_cost)
         SELECT tenant_id, date_trunc('hour', start_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC',
                container_id, labels, min(container_name), count(*), sum(seconds),
                sum(seconds::bigint * cpu_millis), sum(seconds::bigint * memory_mib),
                sum(seconds::numeric * cpu_millis * nano_per_vcpu_second),
                sum(seconds::numeric * memory_mib * nano_per_gib_second)
           FROM usage_records GROUP BY 1, 2, 3, 4",
    )
    .execute(&mut *conn)
    .await
    .context("building the hourly rollup")?;
    sqlx::query("VACUUM (ANALYZE) usage_records, usage_hourly")
        .execute(&mut *conn)
        .await?;
    Ok(n)
}

/// Median of `$runs` timed evaluations of `$body` after one untimed warm-up.
macro_rules! timed {
    ($runs:expr, $body:block) => {{
        let mut times = Vec::with_capacity($runs);
        for i in 0..=$runs {
            let t = Instant::now();
            $body
            if i > 0 {
                times.push(t.elapsed());
            }
        }
        times.sort();
        times[times.len() / 2]
    }};
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let args = Args::parse();
    let db = format!("skiff_billing_bench_{}", Uuid::new_v4().simple());
    let mut admin = PgConnection::connect(&args.database_url)
        .await
        .context("connecting with --database-url")?;
    sqlx::query(&format!("CREATE DATABASE \"{db}\""))
        .execute(&mut admin)
        .await?;
    let url = with_database(&args.database_url, &db);
    let result = run(&args, &url).await;
    if args.keep {
        eprintln!("kept database {db}");
    } else {
        sqlx::query(&format!("DROP DATABASE \"{db}\" WITH (FORCE)"))
            .execute(&mut admin)
            .await?;
    }
    result
}

async fn run(args: &Args, url: &str) -> Result<()> {
    let mut conn = PgConnection::connect(url).await?;
    sqlx::migrate!("../migrations").run(&mut conn).await?;
    let tenant = Uuid::new_v4();
    let month = Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap();
    let next = Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap();
    let t = Instant::now();
    let n = load(&mut conn, tenant, month, args.records_per_container).await?;
    let load_time = t.elapsed();

    let by_container =
        ReportQuery::from_parts(Some(tenant), month, next, Some("container"), false)?;
    let by_day = ReportQuery::from_parts(Some(tenant), month, next, Some("day"), false)?;
    let count_sql = "SELECT count(*) FROM usage_records
                      WHERE tenant_id = $1 AND start_at >= $2 - interval '1 hour'
                        AND start_at < $3 AND end_at > $2";

    let mut rows_in_window = 0i64;
    let floor = timed!(args.runs, {
        rows_in_window = sqlx::query_scalar(count_sql)
            .bind(tenant)
            .bind(month)
            .bind(next)
            .fetch_one(&mut conn)
            .await?;
    });
    let mut summary = (0usize, 0i64, 0i64);
    let container_time = timed!(args.runs, {
        let r = report(&mut conn, &by_container).await?;
        summary = (r.items.len(), r.total.billed_seconds(), r.total.cost());
    });
    let unaligned = ReportQuery::from_parts(
        Some(tenant),
        month + chrono::Duration::minutes(30),
        next - chrono::Duration::minutes(30),
        Some("container"),
        false,
    )?;
    let check = report_from_records(&mut conn, &unaligned).await?;
    anyhow::ensure!(
        report(&mut conn, &unaligned).await? == check,
        "unaligned: rollup and records-only reports differ"
    );
    let unaligned_rows = check.items.len();
    let unaligned_time = timed!(args.runs, {
        report(&mut conn, &unaligned).await?;
    });
    let records_only = timed!(args.runs, {
        let r = report_from_records(&mut conn, &by_container).await?;
        anyhow::ensure!(
            (r.items.len(), r.total.billed_seconds(), r.total.cost()) == summary,
            "the records-only report differs from the rollup report"
        );
    });
    let mut days = 0usize;
    let day_time = timed!(args.runs, {
        days = report(&mut conn, &by_day).await?.items.len();
    });

    if args.explain {
        let plan: Vec<String> =
            sqlx::query_scalar(&format!("EXPLAIN (ANALYZE, BUFFERS) {count_sql}"))
                .bind(tenant)
                .bind(month)
                .bind(next)
                .fetch_all(&mut conn)
                .await?;
        eprintln!("count(*) plan:\n{}", plan.join("\n"));
    }

    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "billing-bench: {n} usage records for one tenant (loaded in {:.1} s), \
         {rows_in_window} of them in November 2026",
        load_time.as_secs_f64()
    );
    println!("median of {} runs after a warm-up", args.runs);
    let table = [
        ("count(*) over the month's rows (floor)", floor, 1),
        (
            "report group_by=container (month)",
            container_time,
            summary.0,
        ),
        ("report group_by=day (month)", day_time, days),
        (
            "report group_by=container, unaligned",
            unaligned_time,
            unaligned_rows,
        ),
        (
            "report group_by=container, records only",
            records_only,
            summary.0,
        ),
    ];
    println!("{:<42} {:>10} {:>6}", "query", "median ms", "rows");
    for (name, d, rows) in table {
        println!("{name:<42} {:>10.1} {rows:>6}", ms(d));
    }
    println!(
        "total billed seconds {} (cost {} micro-units); target: report <= 200 ms",
        summary.1, summary.2
    );
    println!(
        "(reports read whole hours from the hourly rollup and partial edge hours from the \
         records, so they beat the count(*) floor; \"records only\" recomputes from the ledger; \
         \"unaligned\" is 2026-11-01T00:30:00Z .. 2026-11-30T23:30:00Z)"
    );
    let json = serde_json::json!({
        "records": n,
        "records_in_window": rows_in_window,
        "runs": args.runs,
        "load_s": load_time.as_secs_f64(),
        "count_floor_ms": ms(floor),
        "report_container_ms": ms(container_time),
        "report_day_ms": ms(day_time),
        "report_container_unaligned_ms": ms(unaligned_time),
        "report_container_records_only_ms": ms(records_only),
        "report_container_rows": summary.0,
        "report_day_rows": days,
        "total_billed_seconds": summary.1,
        "target_ms": 200,
    });
    println!("{json}");
    Ok(())
}
