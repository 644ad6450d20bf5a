//! Database tests of the metering SQL. They run when SKIFF_TEST_DATABASE_URL
//! names a PostgreSQL superuser URL (deploy/local/test.sh sets it): each test
//! creates a fresh database, runs every migration, and inserts its own tenant
//! and container rows. Without the variable each test fails (saying so): a
//! test that lacks its database has proved nothing.

use anyhow::{Context, Result};
use chrono::{DateTime, Duration, DurationRound, TimeZone, Utc};
use skiff_billing::rules::{cost_numerator, micros_from_numerator};
use skiff_billing::*;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{Connection, PgConnection};
use std::collections::BTreeMap;
use uuid::Uuid;

struct TestDb {
    pool: PgPool,
    admin_url: String,
    name: String,
}

impl TestDb {
    /// A fresh database with all migrations and the default rate; an error
    /// when SKIFF_TEST_DATABASE_URL is unset.
    async fn new(test: &str) -> Result<Self> {
        let admin_url = std::env::var("SKIFF_TEST_DATABASE_URL").with_context(|| {
            format!(
                "{test}: set SKIFF_TEST_DATABASE_URL to a PostgreSQL superuser URL \
                 (deploy/local/test.sh does)"
            )
        })?;
        let name = format!("skiff_billing_{}", Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(&admin_url)
            .await
            .context("admin connect")?;
        sqlx::query(&format!("CREATE DATABASE \"{name}\""))
            .execute(&mut admin)
            .await?;
        admin.close().await?;
        let url = with_database(&admin_url, &name);
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .connect(&url)
            .await?;
        sqlx::migrate!("../migrations").run(&pool).await?;
        ensure_default_rate(&mut *pool.acquire().await?, DEFAULT_RATE).await?;
        Ok(Self {
            pool,
            admin_url,
            name,
        })
    }

    async fn conn(&self) -> Result<sqlx::pool::PoolConnection<sqlx::Postgres>> {
        Ok(self.pool.acquire().await?)
    }

    async fn tenant(&self) -> Result<Uuid> {
        let id = Uuid::new_v4();
        sqlx::query("INSERT INTO tenants (id, name) VALUES ($1, $2)")
            .bind(id)
            .bind(format!("t-{}", &id.simple().to_string()[..8]))
            .execute(&self.pool)
            .await?;
        Ok(id)
    }

    async fn container(
        &self,
        tenant: Uuid,
        name: &str,
        labels: &[(&str, &str)],
    ) -> Result<RunFacts> {
        let id = Uuid::new_v4();
        let labels: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        sqlx::query(
            "INSERT INTO containers (id, tenant_id, name, image, cpu_millis, memory_mib,
                                     restart_policy, stop_timeout_s, labels)
             VALUES ($1, $2, $3, 'busybox', 500, 256, 'never', 10, $4)",
        )
        .bind(id)
        .bind(tenant)
        .bind(name)
        .bind(sqlx::types::Json(&labels))
        .execute(&self.pool)
        .await?;
        Ok(RunFacts {
            tenant_id: tenant,
            container_id: id,
            container_name: name.into(),
            generation: 1,
            host_id: "host-a".into(),
            cpu_millis: 500,
            memory_mib: 256,
            labels,
            started_at: hours_ago(3),
        })
    }

    async fn drop(self) -> Result<()> {
        self.pool.close().await;
        let mut admin = PgConnection::connect(&self.admin_url).await?;
        sqlx::query(&format!("DROP DATABASE \"{}\" WITH (FORCE)", self.name))
            .execute(&mut admin)
            .await?;
        Ok(())
    }
}

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

/// A whole hour `n` hours back, plus 0.4 s past 20 minutes: clear of hour
/// boundaries unless a test wants one.
fn hours_ago(n: i64) -> DateTime<Utc> {
    let hour = Utc::now().duration_trunc(Duration::hours(1)).unwrap();
    hour - Duration::hours(n) + Duration::milliseconds(20 * 60_000 + 400)
}

fn ms(n: i64) -> Duration {
    Duration::milliseconds(n)
}

async fn usage(conn: &mut PgConnection, id: Uuid) -> Result<UsageTotals> {
    Ok(container_usage(conn, &[id]).await?[&id])
}

async fn record_count(conn: &mut PgConnection, tenant: Uuid) -> Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT count(*) FROM usage_records WHERE tenant_id = $1")
            .bind(tenant)
            .fetch_one(conn)
            .await?,
    )
}

macro_rules! test_db {
    ($name:expr) => {
        TestDb::new($name).await?
    };
}

#[tokio::test]
async fn a_run_bills_rounded_up_seconds_once_whatever_is_resent() -> Result<()> {
    let db = test_db!("a_run_bills_rounded_up_seconds_once_whatever_is_resent");
    let tenant = db.tenant().await?;
    let facts = db.container(tenant, "web", &[]).await?;
    let (id, t0) = (facts.container_id, facts.started_at);
    let mut c = db.conn().await?;

    open_run(&mut c, &facts).await?;
    open_run(&mut c, &facts).await?; // idempotent
    assert_eq!(open_runs(&mut c).await?, 1);

    // Confirmed running 3.5 s in: 3 whole seconds billed.
    assert!(checkpoint(&mut c, "cp-1", id, 1, t0 + ms(3_500), None).await?);
    assert_eq!(usage(&mut c, id).await?.billed_seconds, 3);
    // The same report again (reconnect): nothing changes.
    assert!(!checkpoint(&mut c, "cp-1", id, 1, t0 + ms(3_500), None).await?);
    // A worker restart re-sends an older fact under a new id: nothing new.
    assert!(checkpoint(&mut c, "cp-1-again", id, 1, t0 + ms(2_000), None).await?);
    assert_eq!(usage(&mut c, id).await?.billed_seconds, 3);
    assert_eq!(record_count(&mut c, tenant).await?, 1);
    let usage_measured = MeasuredUsage {
        cpu_usage_ns: 1_200_000_000,
        peak_memory_bytes: 50 << 20,
    };
    assert!(checkpoint(&mut c, "cp-2", id, 1, t0 + ms(4_100), Some(usage_measured)).await?);
    assert_eq!(usage(&mut c, id).await?.billed_seconds, 4);

    // Exit 5.2 s in: 6 s billed in total, the run's last second included.
    assert!(close_run(&mut c, "exit-1", &facts, t0 + ms(5_200), "exited").await?);
    assert!(!close_run(&mut c, "exit-1", &facts, t0 + ms(5_200), "exited").await?);
    assert!(!close_run(&mut c, "exit-1-other", &facts, t0 + ms(9_000), "exited").await?);
    assert!(!checkpoint(&mut c, "cp-late", id, 1, t0 + ms(60_000), None).await?);
    assert_eq!(open_runs(&mut c).await?, 0);

    let u = usage(&mut c, id).await?;
    assert_eq!(u.billed_seconds, 6);
    assert_eq!(u.milli_vcpu_seconds, 6 * 500);
    assert_eq!(u.mib_seconds, 6 * 256);
    assert_eq!(
        u.cost_micros,
        micros_from_numerator(cost_numerator(6, 500, 256, DEFAULT_RATE))
    );
    assert_eq!(metered_seconds_total(&mut c).await?, 6);

    let (cpu_ns, billed, reason): (Option<i64>, i64, Option<String>) = sqlx::query_as(
        "SELECT cpu_usage_ns, billed_seconds_so_far, close_reason FROM metering_runs
          WHERE container_id = $1",
    )
    .bind(id)
    .fetch_one(&mut *c)
    .await?;
    assert_eq!(
        (cpu_ns, billed, reason.as_deref()),
        (Some(1_200_000_000), 6, Some("exited"))
    );

    let v = verify_chain(&mut c, tenant).await?;
    assert!(v.ok, "{v:?}");
    assert_eq!(v.records, 3);

    // A restart is a new run (generation 2), billed on its own.
    let gen2 = RunFacts {
        generation: 2,
        started_at: t0 + ms(10_000),
        ..facts.clone()
    };
    assert!(close_run(&mut c, "exit-2", &gen2, gen2.started_at + ms(300), "exited").await?);
    assert_eq!(usage(&mut c, id).await?.billed_seconds, 7);
    drop(c);
    db.drop().await
}

#[tokio::test]
async fn a_lost_host_closes_runs_at_their_last_checkpoint() -> Result<()> {
    let db = test_db!("a_lost_host_closes_runs_at_their_last_checkpoint");
    let tenant = db.tenant().await?;
    let a = db.container(tenant, "a", &[]).await?;
    let b = db.container(tenant, "b", &[]).await?;
    let other = RunFacts {
        host_id: "host-b".into(),
        ..db.container(tenant, "c", &[]).await?
    };
    let mut c = db.conn().await?;
    for f in [&a, &b, &other] {
        open_run(&mut c, f).await?;
    }
    assert!(
        checkpoint(
            &mut c,
            "a-1",
            a.container_id,
            1,
            a.started_at + ms(7_900),
            None
        )
        .await?
    );

    assert_eq!(close_runs_of_host(&mut c, "host-a").await?, 2);
    assert_eq!(close_runs_of_host(&mut c, "host-a").await?, 0);
    // a: observed for 7.9 s -> 8 s; b: never observed after its start -> 1 s.
    assert_eq!(usage(&mut c, a.container_id).await?.billed_seconds, 8);
    assert_eq!(usage(&mut c, b.container_id).await?.billed_seconds, 1);
    assert_eq!(usage(&mut c, other.container_id).await?.billed_seconds, 0);
    assert_eq!(open_runs(&mut c).await?, 1);
    // The late exit report of a closed run changes nothing.
    assert!(!close_run(&mut c, "a-exit", &a, a.started_at + ms(60_000), "exited").await?);
    assert_eq!(usage(&mut c, a.container_id).await?.billed_seconds, 8);
    assert!(verify_chain(&mut c, tenant).await?.ok);
    drop(c);
    db.drop().await
}

#[tokio::test]
async fn windows_split_runs_exactly_and_add_up_to_the_total() -> Result<()> {
    let db = test_db!("windows_split_runs_exactly_and_add_up_to_the_total");
    let tenant = db.tenant().await?;
    let hour = Utc::now().duration_trunc(Duration::hours(1)).unwrap() - Duration::hours(2);
    // Starts 30.4 s before an hour, runs 95.2 s: 96 s on [hour-31, hour+65).
    let web = RunFacts {
        started_at: hour - ms(30_400),
        ..db.container(tenant, "web", &[("team", "blue")]).await?
    };
    let job = RunFacts {
        started_at: hour + ms(100_000),
        cpu_millis: 1000,
        memory_mib: 1024,
        ..db.container(tenant, "job", &[("team", "red")]).await?
    };
    let mut c = db.conn().await?;
    open_run(&mut c, &web).await?;
    checkpoint(
        &mut c,
        "w-1",
        web.container_id,
        1,
        web.started_at + ms(20_000),
        None,
    )
    .await?;
    checkpoint(
        &mut c,
        "w-2",
        web.container_id,
        1,
        web.started_at + ms(50_000),
        None,
    )
    .await?;
    close_run(&mut c, "w-x", &web, web.started_at + ms(95_200), "exited").await?;
    close_run(&mut c, "j-x", &job, job.started_at + ms(10_000), "stopped").await?;

    let q = |from: DateTime<Utc>, to: DateTime<Utc>, g: &str| {
        ReportQuery::from_parts(Some(tenant), from, to, Some(g), false).unwrap()
    };
    let wide = report(
        &mut c,
        &q(hour - Duration::hours(1), hour + Duration::hours(1), "hour"),
    )
    .await?;
    let hours: Vec<(&str, i64)> = wide
        .items
        .iter()
        .map(|r| (r.key.as_str(), r.billed_seconds()))
        .collect();
    let before = (hour - Duration::hours(1))
        .format("%Y-%m-%dT%H:00:00Z")
        .to_string();
    let at = hour.format("%Y-%m-%dT%H:00:00Z").to_string();
    assert_eq!(hours, vec![(before.as_str(), 31), (at.as_str(), 65 + 10)]);
    assert_eq!(wide.total.billed_seconds(), 96 + 10);

    let by_container = report(
        &mut c,
        &q(
            hour - Duration::hours(1),
            hour + Duration::hours(1),
            "container",
        ),
    )
    .await?;
    let rows: Vec<(Option<&str>, i64)> = by_container
        .items
        .iter()
        .map(|r| (r.name.as_deref(), r.billed_seconds()))
        .collect();
    assert_eq!(rows, vec![(Some("job"), 10), (Some("web"), 96)]);
    assert_eq!(
        by_container.total,
        ReportRow {
            key: "total".into(),
            ..wide.total.clone()
        }
    );
    let job_row = &by_container.items[0];
    assert_eq!(job_row.totals.milli_vcpu_seconds, 10_000);
    assert_eq!(job_row.gib_seconds(), 10.0);

    // Any partition into windows adds up to the total, to the second and
    // (in quantities) exactly.
    let cuts = [-3_600i64, -31, -10, -1, 0, 1, 64, 65, 99, 100, 105, 3_600];
    let mut sum = UsageTotals::default();
    for w in cuts.windows(2) {
        let r = report(
            &mut c,
            &q(
                hour + Duration::seconds(w[0]),
                hour + Duration::seconds(w[1]),
                "container",
            ),
        )
        .await?;
        sum.billed_seconds += r.total.totals.billed_seconds;
        sum.milli_vcpu_seconds += r.total.totals.milli_vcpu_seconds;
        sum.mib_seconds += r.total.totals.mib_seconds;
    }
    assert_eq!(sum.billed_seconds, 106);
    assert_eq!(sum.milli_vcpu_seconds, wide.total.totals.milli_vcpu_seconds);
    assert_eq!(sum.mib_seconds, wide.total.totals.mib_seconds);
    // The rollup path (whole hours) and the records-only path agree on any
    // window, aligned to hours or not.
    for (a, b) in [
        (-7200, 7200),
        (-3600, 0),
        (-31, 3600),
        (-3599, 3601),
        (0, 86_400),
        (-86_400, 1),
    ] {
        for g in ["container", "hour", "day", "label:team"] {
            let w = q(hour + Duration::seconds(a), hour + Duration::seconds(b), g);
            assert_eq!(
                report(&mut c, &w).await?,
                report_from_records(&mut c, &w).await?,
                "{a}..{b} by {g}"
            );
        }
    }
    let narrow = report(
        &mut c,
        &q(
            hour - Duration::seconds(10),
            hour + Duration::seconds(10),
            "container",
        ),
    )
    .await?;
    assert_eq!(narrow.total.billed_seconds(), 20);

    let by_label = report(
        &mut c,
        &q(
            hour - Duration::hours(1),
            hour + Duration::hours(1),
            "label:team",
        ),
    )
    .await?;
    let labels: Vec<(&str, i64)> = by_label
        .items
        .iter()
        .map(|r| (r.key.as_str(), r.billed_seconds()))
        .collect();
    assert_eq!(labels, vec![("blue", 96), ("red", 10)]);
    let by_day = report(
        &mut c,
        &q(hour - Duration::days(2), hour + Duration::days(1), "day"),
    )
    .await?;
    assert_eq!(by_day.total.billed_seconds(), 106);
    assert!(by_day.items.iter().all(|r| r.key.len() == 10));

    // The admin view across tenants sees the same, keyed by tenant.
    let admin = ReportQuery::from_parts(
        None,
        hour - Duration::hours(1),
        hour + Duration::hours(1),
        Some("tenant"),
        true,
    )?;
    let all = report(&mut c, &admin).await?;
    assert_eq!(all.items.len(), 1);
    assert_eq!(all.items[0].key, tenant.to_string());
    assert_eq!(all.total.billed_seconds(), 106);

    let csv = report_csv(&by_container);
    assert!(
        csv.starts_with("key,name,billed_seconds,vcpu_seconds,gib_seconds,cost\n"),
        "{csv}"
    );
    assert!(csv.contains(",web,96,48,24,"), "{csv}");
    drop(c);
    db.drop().await
}

#[tokio::test]
async fn a_tampered_or_removed_record_breaks_the_chain() -> Result<()> {
    let db = test_db!("a_tampered_or_removed_record_breaks_the_chain");
    let tenant = db.tenant().await?;
    let f = db.container(tenant, "web", &[]).await?;
    let mut c = db.conn().await?;
    open_run(&mut c, &f).await?;
    for (i, s) in [2_000, 4_000, 6_000, 8_000].into_iter().enumerate() {
        checkpoint(
            &mut c,
            &format!("cp-{i}"),
            f.container_id,
            1,
            f.started_at + ms(s),
            None,
        )
        .await?;
    }
    close_run(&mut c, "x", &f, f.started_at + ms(9_500), "exited").await?;
    let v = verify_chain(&mut c, tenant).await?;
    assert_eq!((v.ok, v.records), (true, 5));

    let (record_id,): (String,) =
        sqlx::query_as("UPDATE usage_records SET seconds = seconds + 1 WHERE tenant_id = $1 AND seq = 3 RETURNING record_id")
            .bind(tenant)
            .fetch_one(&mut *c)
            .await?;
    let v = verify_chain(&mut c, tenant).await?;
    assert!(!v.ok);
    let broken = v.first_broken.clone().unwrap();
    assert_eq!(
        (broken.seq, broken.record_id.as_deref()),
        (3, Some(record_id.as_str()))
    );
    let json = serde_json::to_value(&v)?;
    assert_eq!(json["ok"], false);
    assert_eq!(json["first_broken"]["seq"], 3);
    sqlx::query("UPDATE usage_records SET seconds = seconds - 1 WHERE tenant_id = $1 AND seq = 3")
        .bind(tenant)
        .execute(&mut *c)
        .await?;
    assert!(verify_chain(&mut c, tenant).await?.ok);

    // Removing the last record shows at the head.
    sqlx::query("DELETE FROM usage_records WHERE tenant_id = $1 AND seq = 5")
        .bind(tenant)
        .execute(&mut *c)
        .await?;
    let v = verify_chain(&mut c, tenant).await?;
    assert!(!v.ok);
    assert_eq!(v.first_broken.unwrap().seq, 5);
    drop(c);
    db.drop().await
}

#[tokio::test]
async fn adjustments_and_rates() -> Result<()> {
    let db = test_db!("adjustments_and_rates");
    let tenant = db.tenant().await?;
    let f = db.container(tenant, "web", &[]).await?;
    let mut c = db.conn().await?;
    close_run(&mut c, "x", &f, f.started_at + ms(10_000), "exited").await?;
    assert_eq!(usage(&mut c, f.container_id).await?.billed_seconds, 10);

    let adj = Adjustment {
        adjustment_id: "refund-1".into(),
        tenant_id: tenant,
        container_id: f.container_id,
        generation: 1,
        container_name: f.container_name.clone(),
        labels: BTreeMap::new(),
        start_at: f.started_at.duration_trunc(Duration::seconds(1)).unwrap(),
        seconds: -4,
        cpu_millis: f.cpu_millis,
        memory_mib: f.memory_mib,
        note: "ticket 42: 4 s of a failed start".into(),
    };
    assert!(append_adjustment(&mut c, &adj).await?);
    assert!(!append_adjustment(&mut c, &adj).await?);
    let u = usage(&mut c, f.container_id).await?;
    assert_eq!(u.billed_seconds, 6);
    assert_eq!(
        u.cost_micros,
        micros_from_numerator(cost_numerator(6, 500, 256, DEFAULT_RATE))
    );
    assert!(verify_chain(&mut c, tenant).await?.ok);
    let bad = Adjustment {
        seconds: 0,
        ..adj.clone()
    };
    match append_adjustment(&mut c, &bad).await {
        Err(BillingError::Invalid(e)) => assert_eq!(e.field, "seconds"),
        other => panic!("expected an invalid seconds error, got {other:?}"),
    }

    // Rates: the default is there once; new cards only at a future whole hour.
    assert!(!ensure_default_rate(&mut c, DEFAULT_RATE).await?);
    assert_eq!(rates(&mut c).await?.len(), 1);
    let next_hour = Utc::now().duration_trunc(Duration::hours(1)).unwrap() + Duration::hours(1);
    let card = RateCard {
        effective_from: next_hour,
        nano_per_vcpu_second: 20_000,
        nano_per_gib_second: 2_000,
    };
    add_rate(&mut c, &card).await?;
    match add_rate(&mut c, &card).await {
        Err(BillingError::RateTaken(at)) => assert_eq!(at, next_hour),
        other => panic!("expected RateTaken, got {other:?}"),
    }
    for bad in [
        RateCard {
            effective_from: next_hour - Duration::hours(2),
            ..card
        },
        RateCard {
            effective_from: next_hour + Duration::minutes(30),
            ..card
        },
    ] {
        match add_rate(&mut c, &bad).await {
            Err(BillingError::Invalid(e)) => assert_eq!(e.field, "effective_from"),
            other => panic!("expected an effective_from error, got {other:?}"),
        }
    }
    match add_rate(
        &mut c,
        &RateCard {
            nano_per_gib_second: -1,
            effective_from: next_hour + Duration::hours(1),
            ..card
        },
    )
    .await
    {
        Err(BillingError::Invalid(e)) => assert_eq!(e.field, "nano_per_gib_second"),
        other => panic!("expected a nano_per_gib_second error, got {other:?}"),
    }
    let all = rates(&mut c).await?;
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].effective_from, Utc.timestamp_opt(0, 0).unwrap());
    drop(c);
    db.drop().await
}

#[tokio::test]
async fn concurrent_appends_keep_one_chain_per_tenant() -> Result<()> {
    let db = test_db!("concurrent_appends_keep_one_chain_per_tenant");
    let tenant = db.tenant().await?;
    let mut runs = Vec::new();
    for i in 0..4 {
        let f = db.container(tenant, &format!("c{i}"), &[]).await?;
        open_run(&mut *db.conn().await?, &f).await?;
        runs.push(f);
    }
    let tasks = runs.into_iter().map(|f| {
        let pool = db.pool.clone();
        tokio::spawn(async move {
            for s in 1..=10 {
                let mut tx = pool.begin().await?;
                let at = f.started_at + Duration::seconds(s);
                checkpoint(
                    &mut tx,
                    &format!("{}-{s}", f.container_id),
                    f.container_id,
                    1,
                    at,
                    None,
                )
                .await?;
                tx.commit().await?;
            }
            anyhow::Ok(())
        })
    });
    for t in tasks.collect::<Vec<_>>() {
        t.await??;
    }
    let mut c = db.conn().await?;
    let v = verify_chain(&mut c, tenant).await?;
    assert_eq!((v.ok, v.records), (true, 40), "{v:?}");
    drop(c);
    db.drop().await
}

#[tokio::test]
async fn running_totals_match_the_ledgers_sums() -> Result<()> {
    let db = test_db!("running_totals_match_the_ledgers_sums");
    let tenant = db.tenant().await?;
    let mut ids = Vec::new();
    for i in 0..3 {
        let f = db.container(tenant, &format!("t{i}"), &[]).await?;
        open_run(&mut *db.conn().await?, &f).await?;
        let mut c = db.conn().await?;
        for s in 1..=(5 + i) {
            let at = f.started_at + Duration::seconds(s * 700); // crosses hours
            checkpoint(
                &mut c,
                &format!("{}-{s}", f.container_id),
                f.container_id,
                1,
                at,
                None,
            )
            .await?;
        }
        ids.push(f.container_id);
    }
    let mut c = db.conn().await?;
    let totals = container_usage(&mut c, &ids).await?;
    for (i, id) in ids.iter().enumerate() {
        let (seconds, milli, mib): (i64, i64, i64) = sqlx::query_as(
            "SELECT sum(seconds)::bigint, sum(seconds::bigint * cpu_millis)::bigint, \
               sum(seconds::bigint * memory_mib)::bigint FROM usage_records WHERE container_id = $1",
        )
        .bind(id)
        .fetch_one(&mut *c)
        .await?;
        let t = totals[id];
        assert_eq!(seconds, (5 + i as i64) * 700, "every checkpoint billed");
        assert_eq!(
            (t.billed_seconds, t.milli_vcpu_seconds, t.mib_seconds),
            (seconds, milli, mib)
        );
    }
    // The tenant's report over all time costs what the totals add up to.
    let sum: i64 = totals.values().map(|t| t.billed_seconds).sum();
    assert_eq!(
        sum,
        sqlx::query_scalar::<_, i64>(
            "SELECT sum(seconds)::bigint FROM usage_records WHERE tenant_id = $1"
        )
        .bind(tenant)
        .fetch_one(&mut *c)
        .await?
    );
    // Unknown ids read as zero.
    let none = container_usage(&mut c, &[Uuid::new_v4()]).await?;
    assert_eq!(none.values().next().unwrap().billed_seconds, 0);
    drop(c);
    db.drop().await
}

#[tokio::test]
async fn report_ids_forgotten_after_their_keep_bill_nothing_when_repeated() -> Result<()> {
    let db = test_db!("report_ids_forgotten_after_their_keep_bill_nothing_when_repeated");
    let tenant = db.tenant().await?;
    let facts = db.container(tenant, "web", &[]).await?;
    let (id, t0) = (facts.container_id, facts.started_at);
    let mut c = db.conn().await?;
    open_run(&mut c, &facts).await?;
    assert!(checkpoint(&mut c, "cp-1", id, 1, t0 + ms(3_500), None).await?);
    assert!(close_run(&mut c, "exit-1", &facts, t0 + ms(5_200), "exited").await?);
    let billed = usage(&mut c, id).await?.billed_seconds;
    let records = record_count(&mut c, tenant).await?;

    // Kept for a day: nothing is forgotten yet.
    let day = std::time::Duration::from_secs(86_400);
    assert_eq!(forget_meter_reports(&mut c, day).await?, 0);
    // Past their keep (0 s here): forgotten.
    assert!(forget_meter_reports(&mut c, std::time::Duration::ZERO).await? >= 2);
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM meter_reports")
        .fetch_one(&mut *c)
        .await?;
    assert_eq!(left, 0);

    // The same reports arrive again, late: the run's own state makes them
    // change nothing.
    checkpoint(&mut c, "cp-1", id, 1, t0 + ms(3_500), None).await?;
    assert!(!close_run(&mut c, "exit-1", &facts, t0 + ms(5_200), "exited").await?);
    assert_eq!(usage(&mut c, id).await?.billed_seconds, billed);
    assert_eq!(record_count(&mut c, tenant).await?, records);
    assert!(verify_chain(&mut c, tenant).await?.ok);
    drop(c);
    db.drop().await
}
