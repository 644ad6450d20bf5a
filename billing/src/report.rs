//! Billing reports over the ledger: query validation ([`ReportQuery`]),
//! the grouped report SQL, CSV rendering, and per-container totals.
//!
//! A report sums the usage records overlapping `[from, to)`, each clipped
//! exactly to the window: a record contributes the seconds of
//! `[start_at, end_at)` inside the window (with its sign, for adjustments).
//! `from` and `to` must be whole seconds, so every window of a partition
//! gets whole seconds and the windows add up to the total to the second.
//! Whole hours of a window are read from the hourly rollup (`usage_hourly`,
//! upserted with every record), the partial hours at its edges from the
//! records; [`report_from_records`] recomputes from the records alone.
//! Quantities are summed as integers; money is summed as an exact numerator
//! and divided and rounded once per row (and once for the total, so item
//! costs may differ from the total by their rounding: under 1 micro-unit
//! per item).
//!
//! Display values `vcpu_seconds` and `gib_seconds` are JSON numbers (f64)
//! computed from the exact integers at the edge; the integers
//! `milli_vcpu_seconds` and `mib_seconds` are in the JSON too, and CSV
//! renders exact decimals.

use crate::error::BillingError;
use crate::rules::{exact_decimal, micros_from_numerator, numerator_from_parts, SECONDS_PER_HOUR};
use chrono::{DateTime, Duration, Utc};
use serde::ser::{Serialize, SerializeStruct, Serializer};
use skiff_core::FieldError;
use sqlx::PgConnection;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use uuid::Uuid;

/// Longest report window.
pub const MAX_WINDOW_DAYS: i64 = 366;

/// Exact usage totals of a container or a report row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UsageTotals {
    pub billed_seconds: i64,
    pub milli_vcpu_seconds: i64,
    pub mib_seconds: i64,
    /// Integer micro-units of the currency.
    pub cost_micros: i64,
}

impl UsageTotals {
    /// vCPU-seconds for display (`milli_vcpu_seconds / 1000`).
    pub fn vcpu_seconds(&self) -> f64 {
        self.milli_vcpu_seconds as f64 / 1000.0
    }

    /// GiB-seconds for display (`mib_seconds / 1024`).
    pub fn gib_seconds(&self) -> f64 {
        self.mib_seconds as f64 / 1024.0
    }

    fn serialize_fields<S: SerializeStruct>(&self, s: &mut S) -> Result<(), S::Error> {
        s.serialize_field("billed_seconds", &self.billed_seconds)?;
        s.serialize_field("vcpu_seconds", &self.vcpu_seconds())?;
        s.serialize_field("gib_seconds", &self.gib_seconds())?;
        s.serialize_field("cost", &self.cost_micros)?;
        s.serialize_field("milli_vcpu_seconds", &self.milli_vcpu_seconds)?;
        s.serialize_field("mib_seconds", &self.mib_seconds)
    }
}

/// JSON: `{"billed_seconds", "vcpu_seconds", "gib_seconds", "cost"
/// (micro-units), "milli_vcpu_seconds", "mib_seconds"}`.
impl Serialize for UsageTotals {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut s = serializer.serialize_struct("UsageTotals", 6)?;
        self.serialize_fields(&mut s)?;
        s.end()
    }
}

/// How a report groups its rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupBy {
    /// Key: container id; `name` carries the container name.
    Container,
    /// Key: the value of this label (`""` for records without it).
    Label(String),
    /// Key: the UTC hour, `2026-11-25T13:00:00Z`.
    Hour,
    /// Key: the UTC day, `2026-11-25`.
    Day,
    /// Key: tenant id (admin only).
    Tenant,
}

impl GroupBy {
    /// Parses `container`, `label:<key>`, `hour`, `day`, or (admin only)
    /// `tenant`. Errors name the field `group_by`.
    pub fn parse(s: &str, admin: bool) -> Result<Self, FieldError> {
        let err = |m: String| FieldError::new("group_by", m);
        match s {
            "container" => Ok(GroupBy::Container),
            "hour" => Ok(GroupBy::Hour),
            "day" => Ok(GroupBy::Day),
            "tenant" if admin => Ok(GroupBy::Tenant),
            "tenant" => Err(err("group_by=tenant is for administrators".into())),
            _ => match s.strip_prefix("label:") {
                Some(key) if !key.is_empty() && key.len() <= 256 => Ok(GroupBy::Label(key.into())),
                Some(_) => Err(err("label:<key> needs a key of 1 to 256 bytes".into())),
                None => Err(err(format!(
                    "unknown grouping {s:?}: expected container, label:<key>, hour, day{}",
                    if admin { " or tenant" } else { "" }
                ))),
            },
        }
    }
}

impl fmt::Display for GroupBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GroupBy::Container => f.write_str("container"),
            GroupBy::Label(k) => write!(f, "label:{k}"),
            GroupBy::Hour => f.write_str("hour"),
            GroupBy::Day => f.write_str("day"),
            GroupBy::Tenant => f.write_str("tenant"),
        }
    }
}

/// A validated report request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportQuery {
    /// None: all tenants (admin only).
    pub tenant: Option<Uuid>,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub group_by: GroupBy,
}

fn parse_instant(field: &str, v: Option<&str>) -> Result<DateTime<Utc>, FieldError> {
    let v = v
        .filter(|v| !v.is_empty())
        .ok_or_else(|| FieldError::new(field, "is required (an RFC 3339 timestamp)"))?;
    let t = DateTime::parse_from_rfc3339(v)
        .map_err(|e| FieldError::new(field, format!("not an RFC 3339 timestamp ({e}): {v:?}")))?
        .with_timezone(&Utc);
    if t.timestamp_subsec_nanos() != 0 {
        return Err(FieldError::new(
            field,
            format!("must be a whole second (no fractional part): {v:?}"),
        ));
    }
    Ok(t)
}

impl ReportQuery {
    /// Validates query parameters: `from` and `to` required, RFC 3339, whole
    /// seconds, `from < to`, at most [`MAX_WINDOW_DAYS`] apart; `group_by`
    /// defaults to `container`. A non-admin query must name its tenant.
    pub fn new(
        tenant: Option<Uuid>,
        from: Option<&str>,
        to: Option<&str>,
        group_by: Option<&str>,
        admin: bool,
    ) -> Result<Self, FieldError> {
        let from = parse_instant("from", from)?;
        let to = parse_instant("to", to)?;
        Self::from_parts(tenant, from, to, group_by, admin)
    }

    /// Like [`ReportQuery::new`] with `from` and `to` already parsed.
    pub fn from_parts(
        tenant: Option<Uuid>,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        group_by: Option<&str>,
        admin: bool,
    ) -> Result<Self, FieldError> {
        for (field, t) in [("from", from), ("to", to)] {
            if t.timestamp_subsec_nanos() != 0 {
                return Err(FieldError::new(field, "must be a whole second"));
            }
        }
        if from >= to {
            return Err(FieldError::new("to", "must be after from"));
        }
        if to - from > Duration::days(MAX_WINDOW_DAYS) {
            return Err(FieldError::new(
                "to",
                format!("the window must not exceed {MAX_WINDOW_DAYS} days"),
            ));
        }
        if tenant.is_none() && !admin {
            return Err(FieldError::new(
                "tenant",
                "a tenant's report must name the tenant",
            ));
        }
        let group_by = GroupBy::parse(group_by.unwrap_or("container"), admin)?;
        Ok(Self {
            tenant,
            from,
            to,
            group_by,
        })
    }
}

/// One row of a report. JSON: `{"key", ["name",] "billed_seconds",
/// "vcpu_seconds", "gib_seconds", "cost" (micro-units), "milli_vcpu_seconds",
/// "mib_seconds"}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportRow {
    pub key: String,
    /// The container name, for `group_by=container`.
    pub name: Option<String>,
    pub totals: UsageTotals,
}

impl ReportRow {
    pub fn billed_seconds(&self) -> i64 {
        self.totals.billed_seconds
    }
    pub fn vcpu_seconds(&self) -> f64 {
        self.totals.vcpu_seconds()
    }
    pub fn gib_seconds(&self) -> f64 {
        self.totals.gib_seconds()
    }
    /// Micro-units.
    pub fn cost(&self) -> i64 {
        self.totals.cost_micros
    }
}

impl Serialize for ReportRow {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut s = serializer.serialize_struct("ReportRow", 8)?;
        s.serialize_field("key", &self.key)?;
        if let Some(name) = &self.name {
            s.serialize_field("name", name)?;
        }
        self.totals.serialize_fields(&mut s)?;
        s.end()
    }
}

/// A report: `{"items": [...], "total": {...}}` (total's key is "total").
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Report {
    pub items: Vec<ReportRow>,
    pub total: ReportRow,
}

#[derive(sqlx::FromRow)]
struct GroupRow {
    key: Option<String>,
    seconds: i64,
    milli: i64,
    mib: i64,
    cpu_cost: String,
    mem_cost: String,
}

fn parse_i128(what: &str, v: &str) -> Result<i128, BillingError> {
    v.parse::<i128>()
        .map_err(|e| BillingError::corrupt("usage_records", what, format!("sum {v:?}: {e}")))
}

/// Exact sums of one group, before the single rounding of its cost.
#[derive(Debug, Default, Clone, Copy)]
struct Acc {
    seconds: i64,
    milli: i64,
    mib: i64,
    numerator: i128,
}

impl Acc {
    fn add(&mut self, o: &Acc) {
        self.seconds += o.seconds;
        self.milli += o.milli;
        self.mib += o.mib;
        self.numerator += o.numerator;
    }

    fn totals(&self) -> UsageTotals {
        UsageTotals {
            billed_seconds: self.seconds,
            milli_vcpu_seconds: self.milli,
            mib_seconds: self.mib,
            cost_micros: micros_from_numerator(self.numerator),
        }
    }
}

/// Grouping expressions over `usage_records` and over `usage_hourly`, and
/// the key expression over the grouped `g` (the same for both, so groups
/// from the two sources merge by key).
struct GroupSql {
    records: &'static str,
    hourly: &'static str,
    key: &'static str,
}

fn group_sql(g: &GroupBy) -> GroupSql {
    let (records, hourly, key) = match g {
        GroupBy::Container => ("container_id", "container_id", "g::text"),
        GroupBy::Label(_) => ("labels ->> $4", "labels ->> $4", "g"),
        GroupBy::Hour => (
            "date_trunc('hour', start_at AT TIME ZONE 'UTC')",
            "hour_start AT TIME ZONE 'UTC'",
            r#"to_char(g, 'YYYY-MM-DD"T"HH24:00:00"Z"')"#,
        ),
        GroupBy::Day => (
            "date_trunc('day', start_at AT TIME ZONE 'UTC')",
            "date_trunc('day', hour_start AT TIME ZONE 'UTC')",
            "to_char(g, 'YYYY-MM-DD')",
        ),
        GroupBy::Tenant => ("tenant_id", "tenant_id", "g::text"),
    };
    GroupSql {
        records,
        hourly,
        key,
    }
}

fn tenant_filter(q: &ReportQuery) -> &'static str {
    if q.tenant.is_some() {
        "tenant_id = $1 AND"
    } else {
        "$1::uuid IS NULL AND"
    }
}

/// Runs one grouped query with parameters ($1 tenant, $2 from, $3 to,
/// [$4 label]) and adds its groups into `acc`.
async fn add_groups(
    conn: &mut PgConnection,
    q: &ReportQuery,
    sql: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    acc: &mut BTreeMap<String, Acc>,
) -> Result<(), BillingError> {
    let mut query = sqlx::query_as::<_, GroupRow>(sql)
        .bind(q.tenant)
        .bind(from)
        .bind(to);
    if let GroupBy::Label(label) = &q.group_by {
        query = query.bind(label);
    }
    for row in query.fetch_all(&mut *conn).await? {
        let key = row.key.unwrap_or_default();
        let numerator = numerator_from_parts(
            parse_i128(&key, &row.cpu_cost)?,
            parse_i128(&key, &row.mem_cost)?,
        );
        acc.entry(key).or_default().add(&Acc {
            seconds: row.seconds,
            milli: row.milli,
            mib: row.mib,
            numerator,
        });
    }
    Ok(())
}

/// Groups of the records overlapping `[from, to)`, each clipped exactly.
async fn add_record_groups(
    conn: &mut PgConnection,
    q: &ReportQuery,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    acc: &mut BTreeMap<String, Acc>,
) -> Result<(), BillingError> {
    let GroupSql { records, key, .. } = group_sql(&q.group_by);
    let tenant = tenant_filter(q);
    // Records lie within one UTC hour, so those overlapping [from, to)
    // start in [from - 1 h, to): a range scan of usage_records_window.
    let sql = format!(
        "SELECT {key} AS key,
                sum(s)::bigint AS seconds,
                sum(s * cpu_millis)::bigint AS milli,
                sum(s * memory_mib)::bigint AS mib,
                sum(s * cpu_millis * nano_per_vcpu_second)::text AS cpu_cost,
                sum(s * memory_mib * nano_per_gib_second)::text AS mem_cost
           FROM (SELECT {records} AS g, cpu_millis, memory_mib,
                        nano_per_vcpu_second, nano_per_gib_second,
                        CASE WHEN start_at >= $2 AND end_at <= $3 THEN seconds::bigint
                             ELSE sign(seconds)::bigint
                                  * extract(epoch FROM least(end_at, $3) - greatest(start_at, $2))::bigint
                        END AS s
                   FROM usage_records
                  WHERE {tenant} start_at >= $2 - interval '1 hour'
                    AND start_at < $3 AND end_at > $2) r
          GROUP BY g"
    );
    add_groups(conn, q, &sql, from, to, acc).await
}

/// Groups of the hourly rollup for the whole hours `[from, to)`.
async fn add_hourly_groups(
    conn: &mut PgConnection,
    q: &ReportQuery,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    acc: &mut BTreeMap<String, Acc>,
) -> Result<(), BillingError> {
    let GroupSql { hourly, key, .. } = group_sql(&q.group_by);
    let tenant = tenant_filter(q);
    let sql = format!(
        "SELECT {key} AS key,
                sum(seconds)::bigint AS seconds,
                sum(milli_vcpu_seconds)::bigint AS milli,
                sum(mib_seconds)::bigint AS mib,
                sum(cpu_cost)::text AS cpu_cost,
                sum(mem_cost)::text AS mem_cost
           FROM (SELECT {hourly} AS g, seconds, milli_vcpu_seconds, mib_seconds,
                        cpu_cost, mem_cost
                   FROM usage_hourly
                  WHERE {tenant} hour_start >= $2 AND hour_start < $3) r
          GROUP BY g"
    );
    add_groups(conn, q, &sql, from, to, acc).await
}

/// Runs a report. Records are clipped exactly to `[from, to)`: whole hours
/// come from the hourly rollup, the partial hours at the edges from the
/// records themselves.
pub async fn report(conn: &mut PgConnection, q: &ReportQuery) -> Result<Report, BillingError> {
    let mut acc = BTreeMap::new();
    let (from_s, to_s) = (q.from.timestamp(), q.to.timestamp());
    let first_hour =
        from_s + (SECONDS_PER_HOUR - from_s.rem_euclid(SECONDS_PER_HOUR)) % SECONDS_PER_HOUR;
    let last_hour = to_s - to_s.rem_euclid(SECONDS_PER_HOUR);
    let at = |s: i64| DateTime::from_timestamp(s, 0).unwrap_or_default();
    if first_hour < last_hour {
        if from_s < first_hour {
            add_record_groups(conn, q, q.from, at(first_hour), &mut acc).await?;
        }
        add_hourly_groups(conn, q, at(first_hour), at(last_hour), &mut acc).await?;
        if last_hour < to_s {
            add_record_groups(conn, q, at(last_hour), q.to, &mut acc).await?;
        }
    } else {
        add_record_groups(conn, q, q.from, q.to, &mut acc).await?;
    }
    finish_report(conn, q, acc).await
}

/// The same report computed from the ledger's records alone (no rollup):
/// slower, for audits and for checking the rollup.
pub async fn report_from_records(
    conn: &mut PgConnection,
    q: &ReportQuery,
) -> Result<Report, BillingError> {
    let mut acc = BTreeMap::new();
    add_record_groups(conn, q, q.from, q.to, &mut acc).await?;
    finish_report(conn, q, acc).await
}

async fn finish_report(
    conn: &mut PgConnection,
    q: &ReportQuery,
    acc: BTreeMap<String, Acc>,
) -> Result<Report, BillingError> {
    let mut total = Acc::default();
    let mut items = Vec::with_capacity(acc.len());
    for (key, a) in acc {
        total.add(&a);
        items.push(ReportRow {
            key,
            name: None,
            totals: a.totals(),
        });
    }
    if q.group_by == GroupBy::Container && !items.is_empty() {
        let ids: Vec<Uuid> = items.iter().filter_map(|r| r.key.parse().ok()).collect();
        let names = container_names(conn, &ids).await?;
        for item in &mut items {
            item.name = item.key.parse().ok().and_then(|id| names.get(&id).cloned());
        }
        items.sort_by(|a, b| (&a.name, &a.key).cmp(&(&b.name, &b.key)));
    }
    Ok(Report {
        items,
        total: ReportRow {
            key: "total".into(),
            name: None,
            totals: total.totals(),
        },
    })
}

/// A name per container, from any of its records (names do not change).
async fn container_names(
    conn: &mut PgConnection,
    ids: &[Uuid],
) -> Result<HashMap<Uuid, String>, BillingError> {
    let rows: Vec<(Uuid, Option<String>)> = sqlx::query_as(
        "SELECT c.id, (SELECT u.container_name FROM usage_records u
                        WHERE u.container_id = c.id LIMIT 1)
           FROM unnest($1::uuid[]) AS c (id)",
    )
    .bind(ids)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(id, name)| Some((id, name?)))
        .collect())
}

/// A text cell as a spreadsheet should show it: one that starts with a
/// character a spreadsheet reads as a formula (`=`, `+`, `-`, `@`, a tab or
/// a carriage return) gets a leading `'`, so a label value cannot become a
/// formula in whoever opens the report (CSV injection).
fn text_cell(s: &str) -> std::borrow::Cow<'_, str> {
    if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{s}").into()
    } else {
        s.into()
    }
}

fn csv_row(out: &mut csv::Writer<Vec<u8>>, r: &ReportRow) -> csv::Result<()> {
    let t = &r.totals;
    out.write_record([
        text_cell(&r.key).as_ref(),
        text_cell(r.name.as_deref().unwrap_or("")).as_ref(),
        &t.billed_seconds.to_string(),
        &exact_decimal(t.milli_vcpu_seconds, 1000),
        &exact_decimal(t.mib_seconds, 1024),
        &t.cost_micros.to_string(),
    ])
}

/// The report as CSV (the `csv` crate's quoting): a header line, one line
/// per item, then the total (key `total`). Quantities are exact decimals;
/// `cost` is in micro-units. Text cells that a spreadsheet would read as a
/// formula are escaped ([`text_cell`]).
pub fn report_csv(report: &Report) -> String {
    let mut out = csv::WriterBuilder::new()
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(Vec::new());
    let written = (|| {
        out.write_record([
            "key",
            "name",
            "billed_seconds",
            "vcpu_seconds",
            "gib_seconds",
            "cost",
        ])?;
        for r in &report.items {
            csv_row(&mut out, r)?;
        }
        csv_row(&mut out, &report.total)?;
        out.flush()?;
        csv::Result::Ok(())
    })();
    // Writing to memory fails only on a bug.
    written.expect("CSV into memory");
    let bytes = out.into_inner().expect("CSV into memory");
    String::from_utf8(bytes).expect("CSV of UTF-8 cells")
}

/// Totals so far per container (all records, adjustments included), for the
/// container object's `usage`: one row per container, kept by a trigger on
/// the ledger (constant time, however long the container has run). Every
/// requested id is in the map (zeros when it has no records).
pub async fn container_usage(
    conn: &mut PgConnection,
    container_ids: &[Uuid],
) -> Result<HashMap<Uuid, UsageTotals>, BillingError> {
    usage_totals(
        conn,
        "container_usage_totals",
        "container_id",
        container_ids,
    )
    .await
}

/// Totals so far per job (all of its task containers), from the job's own
/// running total: constant time, however many tasks it has.
pub async fn job_usage(
    conn: &mut PgConnection,
    job_ids: &[Uuid],
) -> Result<HashMap<Uuid, UsageTotals>, BillingError> {
    usage_totals(conn, "job_usage_totals", "job_id", job_ids).await
}

async fn usage_totals(
    conn: &mut PgConnection,
    table: &'static str,
    key: &'static str,
    ids: &[Uuid],
) -> Result<HashMap<Uuid, UsageTotals>, BillingError> {
    let mut out: HashMap<Uuid, UsageTotals> =
        ids.iter().map(|id| (*id, UsageTotals::default())).collect();
    if ids.is_empty() {
        return Ok(out);
    }
    let rows: Vec<(Uuid, i64, i64, i64, String, String)> = sqlx::query_as(&format!(
        "SELECT {key}, seconds, milli_vcpu_seconds, mib_seconds, cpu_cost::text, memory_cost::text \
           FROM {table} WHERE {key} = ANY($1)"
    ))
    .bind(ids)
    .fetch_all(conn)
    .await?;
    for (id, seconds, milli, mib, cpu_cost, mem_cost) in rows {
        let key = id.to_string();
        let numerator =
            numerator_from_parts(parse_i128(&key, &cpu_cost)?, parse_i128(&key, &mem_cost)?);
        out.insert(
            id,
            UsageTotals {
                billed_seconds: seconds,
                milli_vcpu_seconds: milli,
                mib_seconds: mib,
                cost_micros: micros_from_numerator(numerator),
            },
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(from: &str, to: &str, g: Option<&str>, admin: bool) -> Result<ReportQuery, FieldError> {
        ReportQuery::new(Some(Uuid::nil()), Some(from), Some(to), g, admin)
    }

    #[test]
    fn validates_windows() {
        let ok = q("2026-11-01T00:00:00Z", "2026-12-01T00:00:00Z", None, false).unwrap();
        assert_eq!(ok.group_by, GroupBy::Container);
        let field = |r: Result<ReportQuery, FieldError>| r.unwrap_err().field;
        assert_eq!(
            field(q(
                "2026-12-01T00:00:00Z",
                "2026-11-01T00:00:00Z",
                None,
                false
            )),
            "to"
        );
        assert_eq!(
            field(q(
                "2026-11-01T00:00:00Z",
                "2026-11-01T00:00:00Z",
                None,
                false
            )),
            "to"
        );
        assert_eq!(
            field(q(
                "2025-01-01T00:00:00Z",
                "2026-11-01T00:00:00Z",
                None,
                false
            )),
            "to"
        );
        assert_eq!(
            field(q("yesterday", "2026-11-01T00:00:00Z", None, false)),
            "from"
        );
        assert_eq!(
            field(q(
                "2026-11-01T00:00:00.5Z",
                "2026-12-01T00:00:00Z",
                None,
                false
            )),
            "from"
        );
        assert_eq!(
            field(ReportQuery::new(
                Some(Uuid::nil()),
                Some("2026-11-01T00:00:00Z"),
                None,
                None,
                false
            )),
            "to"
        );
        assert_eq!(
            field(ReportQuery::new(
                None,
                Some("2026-11-01T00:00:00Z"),
                Some("2026-11-02T00:00:00Z"),
                None,
                false
            )),
            "tenant"
        );
        // 366 days is the limit, inclusive.
        assert!(q("2026-01-01T00:00:00Z", "2027-01-02T00:00:00Z", None, false).is_ok());
        assert!(q(
            "2026-01-01T00:00:00+02:00",
            "2026-01-02T00:00:00Z",
            None,
            false
        )
        .is_ok());
    }

    #[test]
    fn parses_group_by() {
        assert_eq!(GroupBy::parse("day", false), Ok(GroupBy::Day));
        assert_eq!(
            GroupBy::parse("label:team", false),
            Ok(GroupBy::Label("team".into()))
        );
        assert_eq!(GroupBy::parse("tenant", true), Ok(GroupBy::Tenant));
        for bad in ["tenant", "label:", "week", ""] {
            assert_eq!(GroupBy::parse(bad, false).unwrap_err().field, "group_by");
        }
        assert_eq!(GroupBy::Label("a".into()).to_string(), "label:a");
    }

    #[test]
    fn renders_json_and_csv() {
        let totals = UsageTotals {
            billed_seconds: 5,
            milli_vcpu_seconds: 2500,
            mib_seconds: 1280,
            cost_micros: 42,
        };
        let report = Report {
            items: vec![ReportRow {
                key: "team,a".into(),
                name: None,
                totals,
            }],
            total: ReportRow {
                key: "total".into(),
                name: None,
                totals,
            },
        };
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["items"][0]["vcpu_seconds"], 2.5);
        assert_eq!(json["items"][0]["gib_seconds"], 1.25);
        assert_eq!(json["total"]["cost"], 42);
        assert_eq!(json["total"]["billed_seconds"], 5);
        assert_eq!(
            report_csv(&report),
            "key,name,billed_seconds,vcpu_seconds,gib_seconds,cost\n\
             \"team,a\",,5,2.5,1.25,42\n\
             total,,5,2.5,1.25,42\n"
        );
    }

    #[test]
    fn csv_cells_a_spreadsheet_would_read_as_formulas_are_escaped() {
        let row = |key: &str, name: Option<&str>| ReportRow {
            key: key.into(),
            name: name.map(Into::into),
            totals: UsageTotals::default(),
        };
        // (key, name, the line written)
        let cases = [
            (
                "=HYPERLINK(\"http://x\")",
                None,
                "\"'=HYPERLINK(\"\"http://x\"\")\",,0,0,0,0",
            ),
            ("+1", Some("@SUM(A1)"), "'+1,'@SUM(A1),0,0,0,0"),
            ("-2", Some("\tx"), "'-2,'\tx,0,0,0,0"),
            ("plain", Some("a \"b\""), "plain,\"a \"\"b\"\"\",0,0,0,0"),
            ("a=b", Some("x-y"), "a=b,x-y,0,0,0,0"), // only a leading one counts
        ];
        for (key, name, want) in cases {
            let report = Report {
                items: vec![row(key, name)],
                total: row("total", None),
            };
            let csv = report_csv(&report);
            let line = csv.lines().nth(1).unwrap();
            assert_eq!(line, want, "{key:?} {name:?}");
        }
    }
}
