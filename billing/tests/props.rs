//! Property tests of the pure billing rules: hour splitting, rounding, the
//! checkpoint/close progression, pricing, and the hash chain.

use chrono::{DateTime, TimeZone, Utc};
use proptest::prelude::*;
use skiff_billing::chain::{ChainVerifier, RecordKind, UsageRecord, GENESIS};
use skiff_billing::rules::{
    billed_seconds, cost_numerator, micros_from_numerator, run_billed_seconds, Rate, RunMeter,
    UsageInterval, COST_DIVISOR, SECONDS_PER_HOUR,
};
use std::collections::BTreeMap;
use uuid::Uuid;

fn at_ms(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).unwrap()
}

/// Epoch milliseconds between 2000 and 2100.
fn epoch_ms() -> impl Strategy<Value = i64> {
    946_684_800_000i64..4_102_444_800_000i64
}

proptest! {
    #[test]
    fn hour_pieces_are_within_one_hour_contiguous_and_complete(
        start in -10_000_000_000i64..10_000_000_000, len in 0i64..400_000
    ) {
        let whole = UsageInterval::new(start, start + len);
        let pieces = whole.split_at_hours();
        prop_assert_eq!(pieces.iter().map(UsageInterval::seconds).sum::<i64>(), len);
        let mut cursor = start;
        for p in &pieces {
            prop_assert_eq!(p.start_s, cursor);
            prop_assert!(p.end_s > p.start_s);
            prop_assert_eq!(p.start_s.div_euclid(SECONDS_PER_HOUR), (p.end_s - 1).div_euclid(SECONDS_PER_HOUR));
            cursor = p.end_s;
        }
        prop_assert_eq!(cursor, start + len.max(0));
        // Only the first and the last piece may be partial hours.
        for p in pieces.iter().skip(1).take(pieces.len().saturating_sub(2)) {
            prop_assert_eq!(p.seconds(), SECONDS_PER_HOUR);
        }
    }

    #[test]
    fn rounding_is_ceil_with_a_one_second_minimum(run_ms in 0u64..10_000_000_000) {
        let b = billed_seconds(run_ms);
        prop_assert!(b >= 1);
        prop_assert!(b * 1000 >= run_ms);
        prop_assert!(b == 1 || (b - 1) * 1000 < run_ms);
    }

    #[test]
    fn any_checkpoints_then_close_bill_exactly_the_run(
        start in epoch_ms(),
        run_ms in 0i64..20_000_000,
        // Checkpoint times as fractions of the run, in any order, with repeats.
        marks in proptest::collection::vec(0u32..=1000, 0..40),
        resend in any::<bool>(),
    ) {
        let started = at_ms(start);
        let ended = at_ms(start + run_ms);
        let mut meter = RunMeter::new(started);
        let mut pieces = Vec::new();
        let mut marks = marks;
        if resend {
            // A worker restart re-sends what it sent before.
            let again = marks.clone();
            marks.extend(again);
        }
        for m in &marks {
            let t = at_ms(start + run_ms * i64::from(*m) / 1000);
            pieces.extend(meter.checkpoint(t));
        }
        pieces.extend(meter.close(ended));
        // A late duplicate close or checkpoint bills nothing more.
        prop_assert!(meter.close(ended).is_empty());
        prop_assert!(meter.checkpoint(ended).is_empty());

        let billed = run_billed_seconds(started, ended);
        prop_assert_eq!(meter.billed_so_far, billed);
        prop_assert_eq!(pieces.iter().map(UsageInterval::seconds).sum::<i64>(), billed);
        // No gap and no overlap: the pieces tile [origin, origin + billed).
        let mut cursor = meter.origin();
        for p in &pieces {
            prop_assert_eq!(p.start_s, cursor);
            prop_assert_eq!(p.start_s.div_euclid(3600), (p.end_s - 1).div_euclid(3600));
            cursor = p.end_s;
        }
        prop_assert_eq!(cursor, meter.origin() + billed);
    }

    #[test]
    fn windows_of_a_partition_add_up_to_the_seconds(
        start in 0i64..1_000_000, len in 1i64..3600,
        mut cuts in proptest::collection::vec(0i64..1_010_000, 0..10),
    ) {
        let i = UsageInterval::new(start, start + len);
        cuts.push(-1);
        cuts.push(2_000_000);
        cuts.sort_unstable();
        let sum: i64 = cuts.windows(2).map(|w| i.overlap(w[0], w[1])).sum();
        prop_assert_eq!(sum, len);
    }

    #[test]
    fn pricing_is_exact_additive_and_monotonic(
        a in 0i64..3600, b in 0i64..3600,
        cpu in 1i32..64_000, mem in 1i32..262_144,
        vr in 0i64..1_000_000, gr in 0i64..1_000_000,
    ) {
        let rate = Rate { nano_per_vcpu_second: vr, nano_per_gib_second: gr };
        let na = cost_numerator(a, cpu, mem, rate);
        let nb = cost_numerator(b, cpu, mem, rate);
        prop_assert_eq!(na + nb, cost_numerator(a + b, cpu, mem, rate));
        prop_assert!(cost_numerator(a + 1, cpu, mem, rate) >= na);
        prop_assert!(cost_numerator(a, cpu + 1, mem, rate) >= na);
        prop_assert!(cost_numerator(a, cpu, mem + 1, rate) >= na);
        let more = Rate { nano_per_vcpu_second: vr + 1, nano_per_gib_second: gr + 1 };
        prop_assert!(cost_numerator(a, cpu, mem, more) >= na);
        // Rounded once, half-up, within half a micro-unit of the exact value.
        let m = i128::from(micros_from_numerator(na));
        prop_assert!((2 * (m * COST_DIVISOR - na)).abs() <= COST_DIVISOR);
        prop_assert!(micros_from_numerator(na + nb) >= micros_from_numerator(na));
        // A credit that mirrors a charge costs exactly its negation.
        prop_assert_eq!(micros_from_numerator(-na), -micros_from_numerator(na));
    }

    #[test]
    fn any_modified_field_breaks_the_chain(n in 1i64..12, pick in any::<prop::sample::Index>(), field in 0usize..19) {
        let records = chain(n);
        let i = pick.index(records.len());
        let mut tampered = records.clone();
        modify(&mut tampered[i], field);
        prop_assert_ne!(&tampered[i], &records[i]);
        let head = Some((n, records.last().unwrap().hash));
        let mut v = ChainVerifier::new();
        tampered.iter().for_each(|r| v.push(r));
        let v = v.finish(head);
        prop_assert!(!v.ok);
        let broken = v.first_broken.unwrap();
        // The break shows at the modified record (or at the head for the
        // last record's hash, which the head row pins).
        let at_record = broken.record_id.as_deref() == Some(tampered[i].record_id.as_str());
        prop_assert!(at_record || (field == 18 && i + 1 == records.len()),
            "field {} of seq {} broke at {:?}", field, records[i].seq, broken);

        let mut intact = ChainVerifier::new();
        records.iter().for_each(|r| intact.push(r));
        prop_assert!(intact.finish(head).ok);
    }
}

fn chain(n: i64) -> Vec<UsageRecord> {
    let mut prev = GENESIS;
    (1..=n)
        .map(|seq| {
            let r = UsageRecord {
                tenant_id: Uuid::from_u128(1),
                seq,
                record_id: format!("c:1:{}:usage", seq * 10),
                kind: RecordKind::Usage,
                container_id: Uuid::from_u128(2),
                generation: 1,
                container_name: "web".into(),
                labels: BTreeMap::from([("team".into(), "blue".into())]),
                start_s: 1_800_000_000 + seq * 10,
                end_s: 1_800_000_010 + seq * 10,
                seconds: 10,
                cpu_millis: 250,
                memory_mib: 128,
                nano_per_vcpu_second: 11_300,
                nano_per_gib_second: 1_240,
                note: None,
                recorded_at_us: 1_800_000_000_000_000 + seq,
                prev_hash: prev,
                hash: [0; 32],
            }
            .seal();
            prev = r.hash;
            r
        })
        .collect()
}

fn modify(r: &mut UsageRecord, field: usize) {
    match field {
        0 => r.tenant_id = Uuid::from_u128(99),
        1 => r.seq += 100,
        2 => r.record_id.push('x'),
        3 => r.kind = RecordKind::Adjustment,
        4 => r.container_id = Uuid::from_u128(98),
        5 => r.generation += 1,
        6 => r.container_name.push('x'),
        7 => {
            r.labels.insert("team".into(), "red".into());
        }
        8 => r.start_s -= 1,
        9 => r.end_s += 1,
        10 => r.seconds += 1,
        11 => r.cpu_millis += 1,
        12 => r.memory_mib += 1,
        13 => r.nano_per_vcpu_second -= 1,
        14 => r.nano_per_gib_second += 1,
        15 => r.note = Some(String::new()),
        16 => r.recorded_at_us += 1,
        17 => r.prev_hash[0] ^= 1,
        _ => r.hash[31] ^= 1,
    }
}
