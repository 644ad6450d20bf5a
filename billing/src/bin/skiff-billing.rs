//! `skiff-billing statement`: a tenant's statement for one calendar month
//! (UTC), read from PostgreSQL directly with the same [`skiff_billing::report`]
//! the API serves, as CSV or JSON, with a header (tenant, period, totals,
//! chain head).

use anyhow::{bail, Context, Result};
use chrono::{DateTime, Datelike, NaiveDate, Utc};
use clap::{Parser, Subcommand, ValueEnum};
use skiff_billing::rules::exact_decimal;
use skiff_billing::{report, report_csv, verify_chain, ReportQuery};
use sqlx::Connection;
use uuid::Uuid;

#[derive(Parser)]
#[command(
    name = "skiff-billing",
    about = "skiff billing statements, from PostgreSQL"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print a tenant's statement for one month.
    Statement(StatementArgs),
}

#[derive(clap::Args)]
struct StatementArgs {
    #[arg(long, env = "SKIFF_DATABASE_URL")]
    database_url: String,
    #[arg(long)]
    tenant: Uuid,
    /// Calendar month in UTC, YYYY-MM.
    #[arg(long)]
    month: String,
    #[arg(long, value_enum, default_value_t = Format::Csv)]
    format: Format,
    /// container, label:<key>, hour or day.
    #[arg(long, default_value = "container")]
    group_by: String,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Csv,
    Json,
}

/// `[first instant of the month, first instant of the next)` in UTC.
fn month_window(month: &str) -> Result<(DateTime<Utc>, DateTime<Utc>)> {
    let first = NaiveDate::parse_from_str(&format!("{month}-01"), "%Y-%m-%d")
        .with_context(|| format!("--month must be YYYY-MM, got {month:?}"))?;
    let next = if first.month() == 12 {
        NaiveDate::from_ymd_opt(first.year() + 1, 1, 1)
    } else {
        NaiveDate::from_ymd_opt(first.year(), first.month() + 1, 1)
    }
    .context("month out of range")?;
    let at = |d: NaiveDate| d.and_hms_opt(0, 0, 0).map(|t| t.and_utc());
    match (at(first), at(next)) {
        (Some(a), Some(b)) => Ok((a, b)),
        _ => bail!("month out of range"),
    }
}

async fn statement(args: StatementArgs) -> Result<()> {
    let (from, to) = month_window(&args.month)?;
    let query = ReportQuery::from_parts(Some(args.tenant), from, to, Some(&args.group_by), false)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut conn = sqlx::PgConnection::connect(&args.database_url)
        .await
        .context("connecting to PostgreSQL")?;
    let tenant_name: Option<String> = sqlx::query_scalar("SELECT name FROM tenants WHERE id = $1")
        .bind(args.tenant)
        .fetch_optional(&mut conn)
        .await?;
    let Some(tenant_name) = tenant_name else {
        bail!("no tenant {}", args.tenant);
    };
    let report = report(&mut conn, &query).await?;
    let chain = verify_chain(&mut conn, args.tenant).await?;
    let head: Option<(i64, Vec<u8>)> =
        sqlx::query_as("SELECT last_seq, last_hash FROM usage_chain_heads WHERE tenant_id = $1")
            .bind(args.tenant)
            .fetch_optional(&mut conn)
            .await?;
    let (head_seq, head_hash) = head.map_or((0, String::new()), |(s, h)| (s, hex::encode(h)));
    let t = &report.total.totals;
    match args.format {
        Format::Json => {
            let doc = serde_json::json!({
                "tenant": { "id": args.tenant, "name": tenant_name },
                "period": { "month": args.month, "from": from, "to": to },
                "group_by": query.group_by.to_string(),
                "currency_unit": "micro",
                "chain": { "ok": chain.ok, "records": chain.records, "head_seq": head_seq, "head_hash": head_hash },
                "items": report.items,
                "total": report.total,
            });
            println!("{}", serde_json::to_string_pretty(&doc)?);
        }
        Format::Csv => {
            println!("# skiff statement");
            println!("# tenant: {} ({tenant_name})", args.tenant);
            println!(
                "# period: {} .. {} (month {}, UTC, end exclusive)",
                from.to_rfc3339(),
                to.to_rfc3339(),
                args.month
            );
            println!(
                "# total: {} billed seconds, {} vCPU-seconds, {} GiB-seconds, cost {} micro-units ({})",
                t.billed_seconds,
                exact_decimal(t.milli_vcpu_seconds, 1000),
                exact_decimal(t.mib_seconds, 1024),
                t.cost_micros,
                exact_decimal(t.cost_micros, 1_000_000)
            );
            println!(
                "# chain: {} ({} records, head seq {head_seq} hash {head_hash})",
                if chain.ok { "verified" } else { "BROKEN" },
                chain.records
            );
            print!("{}", report_csv(&report));
        }
    }
    if !chain.ok {
        eprintln!(
            "warning: the usage chain does not verify: {:?}",
            chain.first_broken
        );
    }
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Statement(args) => statement(args).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn month_windows() {
        let (a, b) = month_window("2026-12").unwrap();
        assert_eq!(a.to_rfc3339(), "2026-12-01T00:00:00+00:00");
        assert_eq!(b.to_rfc3339(), "2027-01-01T00:00:00+00:00");
        assert!(month_window("2026-13").is_err());
        assert!(month_window("nov").is_err());
    }
}
