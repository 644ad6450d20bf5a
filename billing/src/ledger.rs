//! The metering SQL: runs (`metering_runs`), report dedup (`meter_reports`)
//! and appends to the hash-chained ledger (`usage_records`,
//! `usage_chain_heads`), plus chain verification against the database.
//!
//! Every function takes `&mut PgConnection` so the API can call it inside its
//! own transaction (`&mut *tx`); none commits. The worker reports facts
//! (started at, confirmed running at, ended at) and this module turns them
//! into newly billed whole seconds with [`crate::rules`].
//!
//! Locking order, the same everywhere so appends cannot deadlock one another:
//! the `meter_reports` key (inserted first), then `metering_runs` rows (in
//! `(tenant_id, container_id, generation)` order when several), then the
//! tenant's `usage_chain_heads` row (`FOR UPDATE`), which serialises a
//! tenant's appends so `seq` and `prev_hash` follow one another. A caller
//! that meters several runs in one transaction should do so in that order.

use crate::chain::{ChainVerifier, RecordKind, UsageRecord, Verification, GENESIS};
use crate::error::BillingError;
use crate::rates::{rate_at, rates, RateCard};
use crate::rules::{
    run_origin, truncate_to_micros, truncate_to_millis, RunMeter, UsageInterval, SECONDS_PER_HOUR,
};
use chrono::{DateTime, Utc};
use skiff_core::FieldError;
use sqlx::types::Json;
use sqlx::PgConnection;
use std::collections::BTreeMap;
use uuid::Uuid;

/// What the control plane knows about a run when it starts (or when a close
/// arrives for a run never opened).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunFacts {
    pub tenant_id: Uuid,
    pub container_id: Uuid,
    pub container_name: String,
    pub generation: i64,
    pub host_id: String,
    pub cpu_millis: i32,
    pub memory_mib: i32,
    pub labels: BTreeMap<String, String>,
    /// containerd's task start time.
    pub started_at: DateTime<Utc>,
}

/// Measured by the worker from the container's cgroup; reported, not billed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MeasuredUsage {
    pub cpu_usage_ns: u64,
    pub peak_memory_bytes: u64,
}

/// A correction: `seconds` (negative for a credit) of a run's size, laid out
/// from `start_at` (a whole second) and split at UTC hours like usage. Priced
/// by the rate card in force at each piece, like usage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Adjustment {
    /// Caller-chosen idempotency key: the same id is applied once.
    pub adjustment_id: String,
    pub tenant_id: Uuid,
    pub container_id: Uuid,
    pub generation: i64,
    pub container_name: String,
    pub labels: BTreeMap<String, String>,
    pub start_at: DateTime<Utc>,
    pub seconds: i64,
    pub cpu_millis: i32,
    pub memory_mib: i32,
    /// Why (shown to auditors; hashed with the record).
    pub note: String,
}

/// Longest adjustment, in seconds (31 days): bounds the records one call writes.
const MAX_ADJUSTMENT_SECONDS: i64 = 31 * 24 * 3600;

#[derive(Debug, sqlx::FromRow)]
struct RunRow {
    container_id: Uuid,
    generation: i64,
    tenant_id: Uuid,
    container_name: String,
    labels: Json<BTreeMap<String, String>>,
    cpu_millis: i32,
    memory_mib: i32,
    started_at: DateTime<Utc>,
    last_seen_at: DateTime<Utc>,
    ended_at: Option<DateTime<Utc>>,
    billed_seconds_so_far: i64,
}

impl RunRow {
    fn meter(&self) -> RunMeter {
        RunMeter {
            started_at: self.started_at,
            billed_so_far: self.billed_seconds_so_far,
        }
    }
}

const RUN_COLUMNS: &str = "container_id, generation, tenant_id, container_name, labels, \
     cpu_millis, memory_mib, started_at, last_seen_at, ended_at, billed_seconds_so_far";

fn validate_facts(f: &RunFacts) -> Result<(), FieldError> {
    if f.container_name.is_empty() {
        return Err(FieldError::new("container_name", "must not be empty"));
    }
    if f.host_id.is_empty() {
        return Err(FieldError::new("host_id", "must not be empty"));
    }
    if !(1..=1_000_000).contains(&f.cpu_millis) {
        return Err(FieldError::new(
            "cpu_millis",
            "must be between 1 and 1000000",
        ));
    }
    if !(1..=2_097_152).contains(&f.memory_mib) {
        return Err(FieldError::new(
            "memory_mib",
            "must be between 1 and 2097152",
        ));
    }
    if f.generation < 0 {
        return Err(FieldError::new("generation", "must not be negative"));
    }
    Ok(())
}

fn validate_report_id(report_id: &str) -> Result<(), FieldError> {
    if report_id.is_empty() || report_id.len() > 256 {
        return Err(FieldError::new("report_id", "must be 1 to 256 bytes"));
    }
    Ok(())
}

/// Never bill the future: a worker clock ahead of ours is clamped to now.
fn not_after_now(t: DateTime<Utc>) -> DateTime<Utc> {
    t.min(Utc::now())
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Records a run's start. Idempotent: a run already known (open or closed)
/// is left as it is.
pub async fn open_run(conn: &mut PgConnection, facts: &RunFacts) -> Result<(), BillingError> {
    validate_facts(facts)?;
    let started_at = truncate_to_millis(facts.started_at);
    sqlx::query(
        "INSERT INTO metering_runs (container_id, generation, tenant_id, container_name, labels,
                                    host_id, cpu_millis, memory_mib, started_at, last_seen_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)
         ON CONFLICT (container_id, generation) DO NOTHING",
    )
    .bind(facts.container_id)
    .bind(facts.generation)
    .bind(facts.tenant_id)
    .bind(&facts.container_name)
    .bind(Json(&facts.labels))
    .bind(&facts.host_id)
    .bind(facts.cpu_millis)
    .bind(facts.memory_mib)
    .bind(started_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// Claims a worker report id; false if it was applied before.
async fn claim_report(conn: &mut PgConnection, report_id: &str) -> Result<bool, BillingError> {
    validate_report_id(report_id)?;
    let n = sqlx::query("INSERT INTO meter_reports (report_id) VALUES ($1) ON CONFLICT DO NOTHING")
        .bind(report_id)
        .execute(conn)
        .await?
        .rows_affected();
    Ok(n == 1)
}

/// Forgets report ids received longer than `keep` ago (a repeat of one
/// after that changes nothing either: a checkpoint never bills below its
/// run's billed seconds so far, and a closed run stays closed). The ids
/// forgotten.
pub async fn forget_meter_reports(
    conn: &mut PgConnection,
    keep: std::time::Duration,
) -> Result<u64, BillingError> {
    Ok(sqlx::query(
        "DELETE FROM meter_reports WHERE received_at < now() - make_interval(secs => $1)",
    )
    .bind(keep.as_secs_f64())
    .execute(conn)
    .await?
    .rows_affected())
}

async fn lock_run(
    conn: &mut PgConnection,
    container_id: Uuid,
    generation: i64,
) -> Result<Option<RunRow>, BillingError> {
    Ok(sqlx::query_as::<_, RunRow>(&format!(
        "SELECT {RUN_COLUMNS} FROM metering_runs
          WHERE container_id = $1 AND generation = $2 FOR UPDATE"
    ))
    .bind(container_id)
    .bind(generation)
    .fetch_optional(conn)
    .await?)
}

/// A worker's confirmation that the run was running at `observed_at`: bills
/// the whole seconds observed so far that were not billed yet. Returns false
/// (and changes nothing) for a repeated `report_id` or an unknown or closed
/// run.
pub async fn checkpoint(
    conn: &mut PgConnection,
    report_id: &str,
    container_id: Uuid,
    generation: i64,
    observed_at: DateTime<Utc>,
    usage: Option<MeasuredUsage>,
) -> Result<bool, BillingError> {
    if !claim_report(conn, report_id).await? {
        return Ok(false);
    }
    let Some(run) = lock_run(conn, container_id, generation).await? else {
        return Ok(false);
    };
    if run.ended_at.is_some() {
        return Ok(false);
    }
    let observed_at = truncate_to_millis(not_after_now(observed_at));
    let mut meter = run.meter();
    let pieces = meter.checkpoint(observed_at);
    let cards = rates(conn).await?;
    append_usage(conn, &cards, &run, pieces).await?;
    let total = meter.billed_so_far;
    sqlx::query(
        "UPDATE metering_runs
            SET last_seen_at = greatest(last_seen_at, $3),
                billed_seconds_so_far = $4,
                cpu_usage_ns = coalesce($5, cpu_usage_ns),
                peak_memory_bytes = greatest(peak_memory_bytes, $6)
          WHERE container_id = $1 AND generation = $2",
    )
    .bind(container_id)
    .bind(generation)
    .bind(observed_at)
    .bind(total)
    .bind(usage.map(|u| to_i64(u.cpu_usage_ns)))
    .bind(usage.map(|u| to_i64(u.peak_memory_bytes)))
    .execute(conn)
    .await?;
    Ok(true)
}

/// The run ended at `ended_at` (containerd's exit time, or the kill of a
/// stop request): bills the remaining seconds up to the run's billed
/// seconds (rounded up, minimum 1). Opens the run first if it was never
/// opened. Returns false (and changes nothing) for a repeated `report_id` or
/// a run already closed.
pub async fn close_run(
    conn: &mut PgConnection,
    report_id: &str,
    facts: &RunFacts,
    ended_at: DateTime<Utc>,
    reason: &str,
) -> Result<bool, BillingError> {
    if reason.is_empty() || reason.len() > 64 {
        return Err(FieldError::new("reason", "must be 1 to 64 bytes").into());
    }
    if !claim_report(conn, report_id).await? {
        return Ok(false);
    }
    open_run(conn, facts).await?;
    let run = lock_run(conn, facts.container_id, facts.generation)
        .await?
        .ok_or_else(|| {
            BillingError::corrupt(
                "metering_runs",
                format!("{}:{}", facts.container_id, facts.generation),
                "missing right after insert",
            )
        })?;
    if run.ended_at.is_some() {
        return Ok(false);
    }
    let ended_at = truncate_to_millis(not_after_now(ended_at));
    let cards = rates(conn).await?;
    finish_run(conn, &cards, &run, ended_at, reason).await?;
    Ok(true)
}

/// The host is lost: closes each of its open runs at the last time a
/// checkpoint saw it running (never billing time nobody observed; still the
/// one-second minimum). Returns how many runs it closed.
pub async fn close_runs_of_host(
    conn: &mut PgConnection,
    host_id: &str,
) -> Result<u64, BillingError> {
    let runs = sqlx::query_as::<_, RunRow>(&format!(
        "SELECT {RUN_COLUMNS} FROM metering_runs
          WHERE host_id = $1 AND ended_at IS NULL
          ORDER BY tenant_id, container_id, generation FOR UPDATE"
    ))
    .bind(host_id)
    .fetch_all(&mut *conn)
    .await?;
    if runs.is_empty() {
        return Ok(0);
    }
    let cards = rates(conn).await?;
    for run in &runs {
        finish_run(conn, &cards, run, run.last_seen_at, "host_lost").await?;
    }
    Ok(runs.len() as u64)
}

async fn finish_run(
    conn: &mut PgConnection,
    cards: &[RateCard],
    run: &RunRow,
    ended_at: DateTime<Utc>,
    reason: &str,
) -> Result<(), BillingError> {
    // A close earlier than a checkpoint (clock trouble) never un-bills.
    let mut meter = run.meter();
    let pieces = meter.close(ended_at);
    append_usage(conn, cards, run, pieces).await?;
    let total = meter.billed_so_far;
    sqlx::query(
        "UPDATE metering_runs
            SET ended_at = $3, close_reason = $4, billed_seconds_so_far = $5
          WHERE container_id = $1 AND generation = $2",
    )
    .bind(run.container_id)
    .bind(run.generation)
    .bind(ended_at)
    .bind(reason)
    .bind(total)
    .execute(conn)
    .await?;
    Ok(())
}

/// Appends usage records for newly billed pieces of a run.
async fn append_usage(
    conn: &mut PgConnection,
    cards: &[RateCard],
    run: &RunRow,
    pieces: Vec<UsageInterval>,
) -> Result<(), BillingError> {
    if pieces.is_empty() {
        return Ok(());
    }
    let origin = run_origin(run.started_at);
    let records = pieces.into_iter().map(|p| Piece {
        record_id: format!(
            "{}:{}:{}:usage",
            run.container_id,
            run.generation,
            p.start_s - origin
        ),
        interval: p,
        seconds: p.seconds(),
    });
    let template = Template {
        tenant_id: run.tenant_id,
        kind: RecordKind::Usage,
        container_id: run.container_id,
        generation: run.generation,
        container_name: &run.container_name,
        labels: &run.labels.0,
        cpu_millis: run.cpu_millis,
        memory_mib: run.memory_mib,
        note: None,
    };
    append(conn, cards, &template, records).await
}

/// Appends an adjustment (admin correction). Returns false if an adjustment
/// with the same `adjustment_id` was applied before.
pub async fn append_adjustment(
    conn: &mut PgConnection,
    adj: &Adjustment,
) -> Result<bool, BillingError> {
    if adj.adjustment_id.is_empty() || adj.adjustment_id.len() > 128 {
        return Err(FieldError::new("adjustment_id", "must be 1 to 128 bytes").into());
    }
    if adj.seconds == 0 || adj.seconds.abs() > MAX_ADJUSTMENT_SECONDS {
        return Err(FieldError::new(
            "seconds",
            format!("must be non-zero and at most {MAX_ADJUSTMENT_SECONDS} in magnitude"),
        )
        .into());
    }
    if adj.start_at.timestamp_subsec_nanos() != 0 {
        return Err(FieldError::new("start_at", "must be a whole second").into());
    }
    validate_facts(&RunFacts {
        tenant_id: adj.tenant_id,
        container_id: adj.container_id,
        container_name: adj.container_name.clone(),
        generation: adj.generation,
        host_id: "-".into(),
        cpu_millis: adj.cpu_millis,
        memory_mib: adj.memory_mib,
        labels: BTreeMap::new(),
        started_at: adj.start_at,
    })?;
    // Claimed in meter_reports like a worker report: the same id applies once.
    if !claim_report(conn, &format!("adjustment:{}", adj.adjustment_id)).await? {
        return Ok(false);
    }
    let start = adj.start_at.timestamp();
    let sign = adj.seconds.signum();
    let pieces = UsageInterval::new(start, start + adj.seconds.abs()).split_at_hours();
    let records = pieces.into_iter().map(|p| Piece {
        record_id: format!("adj:{}:{}", adj.adjustment_id, p.start_s - start),
        interval: p,
        seconds: sign * p.seconds(),
    });
    let template = Template {
        tenant_id: adj.tenant_id,
        kind: RecordKind::Adjustment,
        container_id: adj.container_id,
        generation: adj.generation,
        container_name: &adj.container_name,
        labels: &adj.labels,
        cpu_millis: adj.cpu_millis,
        memory_mib: adj.memory_mib,
        note: Some(&adj.note),
    };
    let cards = rates(conn).await?;
    append(conn, &cards, &template, records).await?;
    Ok(true)
}

/// The fields shared by all records of one append.
struct Template<'a> {
    tenant_id: Uuid,
    kind: RecordKind,
    container_id: Uuid,
    generation: i64,
    container_name: &'a str,
    labels: &'a BTreeMap<String, String>,
    cpu_millis: i32,
    memory_mib: i32,
    note: Option<&'a str>,
}

/// One record to write: an interval within one hour.
struct Piece {
    record_id: String,
    interval: UsageInterval,
    seconds: i64,
}

/// Locks the tenant's chain head, creating it on the first append.
async fn lock_head(
    conn: &mut PgConnection,
    tenant_id: Uuid,
) -> Result<(i64, [u8; 32]), BillingError> {
    let select =
        "SELECT last_seq, last_hash FROM usage_chain_heads WHERE tenant_id = $1 FOR UPDATE";
    let mut row: Option<(i64, Vec<u8>)> = sqlx::query_as(select)
        .bind(tenant_id)
        .fetch_optional(&mut *conn)
        .await?;
    if row.is_none() {
        sqlx::query(
            "INSERT INTO usage_chain_heads (tenant_id, last_seq, last_hash) VALUES ($1, 0, $2)
             ON CONFLICT (tenant_id) DO NOTHING",
        )
        .bind(tenant_id)
        .bind(GENESIS.as_slice())
        .execute(&mut *conn)
        .await?;
        row = sqlx::query_as(select)
            .bind(tenant_id)
            .fetch_optional(&mut *conn)
            .await?;
    }
    let (seq, hash) =
        row.ok_or_else(|| BillingError::corrupt("usage_chain_heads", tenant_id, "missing"))?;
    Ok((seq, hash32("usage_chain_heads", tenant_id, &hash)?))
}

fn hash32(table: &'static str, key: impl ToString, bytes: &[u8]) -> Result<[u8; 32], BillingError> {
    bytes
        .try_into()
        .map_err(|_| BillingError::corrupt(table, key, format!("hash of {} bytes", bytes.len())))
}

async fn append(
    conn: &mut PgConnection,
    cards: &[RateCard],
    t: &Template<'_>,
    pieces: impl Iterator<Item = Piece>,
) -> Result<(), BillingError> {
    let (mut seq, mut prev_hash) = lock_head(conn, t.tenant_id).await?;
    let recorded_at = truncate_to_micros(Utc::now());
    let mut usage_seconds = 0i64;
    for p in pieces {
        let rate = rate_at(cards, p.interval.start_s).ok_or(BillingError::NoRate {
            at: DateTime::from_timestamp(p.interval.start_s, 0).unwrap_or_default(),
        })?;
        seq += 1;
        let record = UsageRecord {
            tenant_id: t.tenant_id,
            seq,
            record_id: p.record_id,
            kind: t.kind,
            container_id: t.container_id,
            generation: t.generation,
            container_name: t.container_name.to_owned(),
            labels: t.labels.clone(),
            start_s: p.interval.start_s,
            end_s: p.interval.end_s,
            // Pieces lie within one hour, so this cannot truncate.
            seconds: p.seconds as i32,
            cpu_millis: t.cpu_millis,
            memory_mib: t.memory_mib,
            nano_per_vcpu_second: rate.nano_per_vcpu_second,
            nano_per_gib_second: rate.nano_per_gib_second,
            note: t.note.map(str::to_owned),
            recorded_at_us: recorded_at.timestamp_micros(),
            prev_hash,
            hash: [0; 32],
        }
        .seal();
        insert_record(conn, &record, recorded_at).await?;
        if t.kind == RecordKind::Usage {
            usage_seconds += p.seconds;
        }
        prev_hash = record.hash;
    }
    sqlx::query(
        "UPDATE usage_chain_heads
            SET last_seq = $2, last_hash = $3, usage_seconds = usage_seconds + $4
          WHERE tenant_id = $1",
    )
    .bind(t.tenant_id)
    .bind(seq)
    .bind(prev_hash.as_slice())
    .bind(usage_seconds)
    .execute(conn)
    .await?;
    Ok(())
}

async fn insert_record(
    conn: &mut PgConnection,
    r: &UsageRecord,
    recorded_at: DateTime<Utc>,
) -> Result<(), BillingError> {
    // The record and its hour's rollup row in one statement (one round trip).
    sqlx::query(
        "WITH r AS (
            INSERT INTO usage_records (tenant_id, seq, record_id, kind, container_id, generation,
                                       container_name, labels, start_at, end_at, seconds,
                                       cpu_millis, memory_mib, nano_per_vcpu_second,
                                       nano_per_gib_second, note, prev_hash, hash, recorded_at)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11,
                    $12, $13, $14, $15, $16, $17, $18, $19)
            RETURNING *)
         INSERT INTO usage_hourly AS h (tenant_id, hour_start, container_id, labels,
                                        container_name, records, seconds, milli_vcpu_seconds,
                                        mib_seconds, cpu_cost, mem_cost)
         SELECT tenant_id, $20, container_id, labels, container_name, 1, seconds,
                seconds::bigint * cpu_millis, seconds::bigint * memory_mib,
                seconds::numeric * cpu_millis * nano_per_vcpu_second,
                seconds::numeric * memory_mib * nano_per_gib_second
           FROM r
         ON CONFLICT (tenant_id, hour_start, container_id, labels) DO UPDATE
            SET records = h.records + 1,
                seconds = h.seconds + excluded.seconds,
                milli_vcpu_seconds = h.milli_vcpu_seconds + excluded.milli_vcpu_seconds,
                mib_seconds = h.mib_seconds + excluded.mib_seconds,
                cpu_cost = h.cpu_cost + excluded.cpu_cost,
                mem_cost = h.mem_cost + excluded.mem_cost",
    )
    .bind(r.tenant_id)
    .bind(r.seq)
    .bind(&r.record_id)
    .bind(r.kind.as_str())
    .bind(r.container_id)
    .bind(r.generation)
    .bind(&r.container_name)
    .bind(Json(&r.labels))
    .bind(DateTime::from_timestamp(r.start_s, 0))
    .bind(DateTime::from_timestamp(r.end_s, 0))
    .bind(r.seconds)
    .bind(r.cpu_millis)
    .bind(r.memory_mib)
    .bind(r.nano_per_vcpu_second)
    .bind(r.nano_per_gib_second)
    .bind(r.note.as_deref())
    .bind(r.prev_hash.as_slice())
    .bind(r.hash.as_slice())
    .bind(recorded_at)
    .bind(DateTime::from_timestamp(
        r.start_s - r.start_s.rem_euclid(SECONDS_PER_HOUR),
        0,
    ))
    .execute(conn)
    .await?;
    Ok(())
}

#[derive(sqlx::FromRow)]
struct RecordRow {
    tenant_id: Uuid,
    seq: i64,
    record_id: String,
    kind: String,
    container_id: Uuid,
    generation: i64,
    container_name: String,
    labels: Json<BTreeMap<String, String>>,
    start_s: i64,
    end_s: i64,
    seconds: i32,
    cpu_millis: i32,
    memory_mib: i32,
    nano_per_vcpu_second: i64,
    nano_per_gib_second: i64,
    note: Option<String>,
    prev_hash: Vec<u8>,
    hash: Vec<u8>,
    recorded_at: DateTime<Utc>,
}

impl RecordRow {
    fn into_record(self) -> Result<UsageRecord, BillingError> {
        let key = format!("{}:{}", self.tenant_id, self.seq);
        Ok(UsageRecord {
            kind: RecordKind::parse(&self.kind).ok_or_else(|| {
                BillingError::corrupt("usage_records", &key, format!("kind {:?}", self.kind))
            })?,
            prev_hash: hash32("usage_records", &key, &self.prev_hash)?,
            hash: hash32("usage_records", &key, &self.hash)?,
            tenant_id: self.tenant_id,
            seq: self.seq,
            record_id: self.record_id,
            container_id: self.container_id,
            generation: self.generation,
            container_name: self.container_name,
            labels: self.labels.0,
            start_s: self.start_s,
            end_s: self.end_s,
            seconds: self.seconds,
            cpu_millis: self.cpu_millis,
            memory_mib: self.memory_mib,
            nano_per_vcpu_second: self.nano_per_vcpu_second,
            nano_per_gib_second: self.nano_per_gib_second,
            note: self.note,
            recorded_at_us: self.recorded_at.timestamp_micros(),
        })
    }
}

/// Records read per round trip while verifying.
const VERIFY_BATCH: i64 = 5000;

/// Verifies a tenant's chain: every record in `seq` order, its link to the
/// previous one and its hash, then the head row. Reads the head first and
/// checks the records up to it, so appends running meanwhile do not count as
/// breaks.
pub async fn verify_chain(
    conn: &mut PgConnection,
    tenant: Uuid,
) -> Result<Verification, BillingError> {
    let (verification, _) = verify_from(conn, tenant, ChainVerifier::new()).await?;
    Ok(verification)
}

/// Verifies only what was appended since the last intact prefix this
/// function found (kept in `usage_chain_verified`): the new records, linked
/// onto the prefix's last hash, then the head. An intact result moves the
/// prefix up. The cost is the new records, not the chain's length; what it
/// cannot see is an old record altered later (a full [`verify_chain`] does).
/// With `full`, every record is read again (and the prefix set from that).
/// Refused with [`BillingError::TooSoon`] within `min_interval` of the
/// tenant's last verification.
pub async fn verify_chain_incremental(
    conn: &mut PgConnection,
    tenant: Uuid,
    full: bool,
    min_interval: std::time::Duration,
) -> Result<Verification, BillingError> {
    use sqlx::Connection as _;
    let mut tx = conn.begin().await?;
    let prefix: Option<(i64, Vec<u8>, f64)> = sqlx::query_as(
        "SELECT seq, hash, extract(epoch FROM now() - verified_at)::float8 \
           FROM usage_chain_verified WHERE tenant_id = $1 FOR UPDATE",
    )
    .bind(tenant)
    .fetch_optional(&mut *tx)
    .await?;
    let verifier = match &prefix {
        Some((_, _, since)) if *since < min_interval.as_secs_f64() => {
            return Err(BillingError::TooSoon {
                retry_after_s: (min_interval.as_secs_f64() - since).ceil().max(1.0) as u64,
            });
        }
        Some((seq, hash, _)) if !full => {
            ChainVerifier::resume(*seq, hash32("usage_chain_verified", tenant, hash)?)
        }
        _ => ChainVerifier::new(),
    };
    let (verification, last) = verify_from(&mut tx, tenant, verifier).await?;
    let (seq, hash) = match (verification.ok, &prefix) {
        (true, _) => (last.0, last.1.to_vec()),
        // Broken: the prefix stays where it was (only its time moves); a
        // full verification that finds a break forgets it.
        (false, Some((seq, hash, _))) if !full => (*seq, hash.clone()),
        (false, _) => (0, GENESIS.to_vec()),
    };
    sqlx::query(
        "INSERT INTO usage_chain_verified (tenant_id, seq, hash) VALUES ($1, $2, $3) \
         ON CONFLICT (tenant_id) DO UPDATE SET seq = $2, hash = $3, verified_at = now()",
    )
    .bind(tenant)
    .bind(seq)
    .bind(hash)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(verification)
}

/// Reads the tenant's records after `verifier`'s position up to the head
/// and checks them; the verdict, and the last record checked.
async fn verify_from(
    conn: &mut PgConnection,
    tenant: Uuid,
    mut verifier: ChainVerifier,
) -> Result<(Verification, (i64, [u8; 32])), BillingError> {
    let head: Option<(i64, Vec<u8>)> =
        sqlx::query_as("SELECT last_seq, last_hash FROM usage_chain_heads WHERE tenant_id = $1")
            .bind(tenant)
            .fetch_optional(&mut *conn)
            .await?;
    let head = match head {
        Some((seq, hash)) => Some((seq, hash32("usage_chain_heads", tenant, &hash)?)),
        None => None,
    };
    let limit_seq = head.map_or(0, |(seq, _)| seq);
    let mut after = verifier.last().0;
    loop {
        let rows = sqlx::query_as::<_, RecordRow>(
            "SELECT tenant_id, seq, record_id, kind, container_id, generation, container_name,
                    labels, extract(epoch FROM start_at)::bigint AS start_s,
                    extract(epoch FROM end_at)::bigint AS end_s, seconds, cpu_millis, memory_mib,
                    nano_per_vcpu_second, nano_per_gib_second, note, prev_hash, hash, recorded_at
               FROM usage_records
              WHERE tenant_id = $1 AND seq > $2 AND seq <= $3
              ORDER BY seq LIMIT $4",
        )
        .bind(tenant)
        .bind(after)
        .bind(limit_seq)
        .bind(VERIFY_BATCH)
        .fetch_all(&mut *conn)
        .await?;
        let n = rows.len() as i64;
        for row in rows {
            after = row.seq;
            verifier.push(&row.into_record()?);
        }
        if n < VERIFY_BATCH || verifier.is_broken() {
            break;
        }
    }
    let last = verifier.last();
    Ok((verifier.finish(head), last))
}

/// Runs not closed yet (a Prometheus gauge).
pub async fn open_runs(conn: &mut PgConnection) -> Result<i64, BillingError> {
    Ok(
        sqlx::query_scalar("SELECT count(*) FROM metering_runs WHERE ended_at IS NULL")
            .fetch_one(conn)
            .await?,
    )
}

/// Seconds since the oldest open run's last checkpoint (0 with none open):
/// how far the meter is behind the runs it meters.
pub async fn checkpoint_lag_seconds(conn: &mut PgConnection) -> Result<f64, BillingError> {
    Ok(sqlx::query_scalar(
        "SELECT COALESCE(EXTRACT(EPOCH FROM now() - min(last_seen_at)), 0)::float8 \
         FROM metering_runs WHERE ended_at IS NULL",
    )
    .fetch_one(conn)
    .await?)
}

/// Seconds metered so far over all tenants (usage records, adjustments
/// excluded): a monotonic source for a Prometheus counter, read from the
/// per-tenant head rows (one row per tenant, not one per record).
pub async fn metered_seconds_total(conn: &mut PgConnection) -> Result<i64, BillingError> {
    Ok(
        sqlx::query_scalar("SELECT coalesce(sum(usage_seconds), 0)::bigint FROM usage_chain_heads")
            .fetch_one(conn)
            .await?,
    )
}
