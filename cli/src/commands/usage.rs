//! `skiff usage [--from] [--to] [--group-by]`: the tenant's usage report as
//! a table (with a total line), or `-o csv` (the server's own CSV), `json`
//! or `yaml`. The window defaults to this month so far.

use super::Ctx;
use crate::args::UsageArgs;
use crate::output::{self, print_value, Format};
use crate::Error;
use chrono::{DateTime, Datelike, NaiveDate, SecondsFormat, TimeZone, Utc};
use reqwest::Method;
use serde_json::Value;

pub async fn usage(ctx: &Ctx, args: UsageArgs) -> Result<i32, Error> {
    let now = Utc::now();
    let from = match &args.from {
        Some(text) => instant("--from", text)?,
        None => month_start(now),
    };
    let to = match &args.to {
        Some(text) => instant("--to", text)?,
        // The API takes whole seconds, `to` exclusive: the next one.
        None => Utc
            .timestamp_opt(now.timestamp() + 1, 0)
            .single()
            .unwrap_or(now),
    };
    let mut query = vec![
        ("from", from.to_rfc3339_opts(SecondsFormat::Secs, true)),
        ("to", to.to_rfc3339_opts(SecondsFormat::Secs, true)),
    ];
    if let Some(group_by) = &args.group_by {
        query.push(("group_by", group_by.clone()));
    }
    let path = "/v1/usage";
    if ctx.format == Format::Csv {
        let request = ctx
            .client
            .request(Method::GET, path)
            .query(&query)
            .header(reqwest::header::ACCEPT, "text/csv");
        let response = ctx.client.send(path, request).await?;
        let text = response.text().await.map_err(|source| Error::Transport {
            what: "reading the answer of",
            url: ctx.client.url(path),
            source,
        })?;
        crate::out!("{text}");
        return Ok(0);
    }
    let report = ctx.client.get::<Value>(path, &query).await?.raw;
    if matches!(ctx.format, Format::Json | Format::Yaml) {
        print_value(ctx.format, &report)?;
        return Ok(0);
    }
    crate::outln!("{}", report_table(&report));
    Ok(0)
}

/// RFC 3339, or a bare date (midnight UTC).
fn instant(flag: &'static str, text: &str) -> Result<DateTime<Utc>, Error> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
        .ok_or_else(|| Error::flag(flag, text, "expected RFC 3339 or YYYY-MM-DD"))
}

fn month_start(now: DateTime<Utc>) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(now.year(), now.month(), 1, 0, 0, 0)
        .single()
        .unwrap_or(now)
}

/// The report's rows and its total, as columns.
fn report_table(report: &Value) -> String {
    let cells = |row: &Value, key: String| {
        vec![
            key,
            row["name"].as_str().unwrap_or("-").to_owned(),
            row["billed_seconds"].to_string(),
            row["vcpu_seconds"].to_string(),
            row["gib_seconds"].to_string(),
            row["cost"].to_string(),
        ]
    };
    let mut rows: Vec<Vec<String>> = report["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|r| cells(r, r["key"].as_str().unwrap_or("-").to_owned()))
                .collect()
        })
        .unwrap_or_default();
    rows.push(cells(&report["total"], "TOTAL".into()));
    output::table(
        &[
            "key",
            "billed_seconds",
            "vcpu_seconds",
            "gib_seconds",
            "cost",
        ],
        rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_take_dates_or_instants() {
        assert_eq!(
            instant("--from", "2026-11-01").unwrap().to_rfc3339(),
            "2026-11-01T00:00:00+00:00"
        );
        assert_eq!(
            instant("--to", "2026-11-01T12:00:00+01:00")
                .unwrap()
                .to_rfc3339(),
            "2026-11-01T11:00:00+00:00"
        );
        assert!(instant("--to", "yesterday").is_err());
        let now = instant("--to", "2026-11-27T20:00:00Z").unwrap();
        assert_eq!(month_start(now).to_rfc3339(), "2026-11-01T00:00:00+00:00");
    }

    #[test]
    fn the_table_ends_with_the_total() {
        let report = serde_json::json!({
            "items": [{"key": "c1", "name": "web", "billed_seconds": 3, "vcpu_seconds": 1.5, "gib_seconds": 0.75, "cost": 10}],
            "total": {"key": null, "billed_seconds": 3, "vcpu_seconds": 1.5, "gib_seconds": 0.75, "cost": 10}
        });
        let text = report_table(&report);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[1].starts_with("c1"), "{text}");
        assert!(lines[1].contains("web"), "{text}");
        assert!(lines[2].starts_with("TOTAL"), "{text}");
    }
}
