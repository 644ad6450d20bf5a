//! The usage ledger's hash chain, as pure code: a record's canonical
//! encoding, its hash, and the incremental verifier.
//!
//! `hash = sha256(canonical(record))` where the canonical encoding is a JSON
//! object with a fixed field order (serde keeps declaration order), labels as
//! a sorted map, timestamps as integers (epoch seconds; `recorded_at` in epoch
//! microseconds, PostgreSQL's precision) and `prev_hash` as lowercase hex. A
//! tenant's first record has the all-zero [`GENESIS`] as `prev_hash`.
//!
//! The chain proves that no record was altered, removed or reordered since
//! it was written; together with the head row (`usage_chain_heads`), that no
//! trailing record was removed either. Without a secret key it cannot stop
//! someone with write access from rewriting the whole chain: publishing the
//! head hash to the tenant (e.g. on each statement) is what pins it.

use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use uuid::Uuid;

/// `prev_hash` of a tenant's first record.
pub const GENESIS: [u8; 32] = [0; 32];

/// Version tag inside every encoding, so the format can evolve.
const ENCODING_VERSION: &str = "skiff.usage.v1";

/// Whether a record meters a run or corrects earlier records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordKind {
    Usage,
    Adjustment,
}

impl RecordKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RecordKind::Usage => "usage",
            RecordKind::Adjustment => "adjustment",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "usage" => Some(RecordKind::Usage),
            "adjustment" => Some(RecordKind::Adjustment),
            _ => None,
        }
    }
}

/// One usage record with every field the hash covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRecord {
    pub tenant_id: Uuid,
    pub seq: i64,
    pub record_id: String,
    pub kind: RecordKind,
    pub container_id: Uuid,
    pub generation: i64,
    pub container_name: String,
    pub labels: BTreeMap<String, String>,
    /// Epoch seconds, `[start_s, end_s)`.
    pub start_s: i64,
    pub end_s: i64,
    pub seconds: i32,
    pub cpu_millis: i32,
    pub memory_mib: i32,
    pub nano_per_vcpu_second: i64,
    pub nano_per_gib_second: i64,
    pub note: Option<String>,
    /// Epoch microseconds.
    pub recorded_at_us: i64,
    pub prev_hash: [u8; 32],
    pub hash: [u8; 32],
}

#[derive(Serialize)]
struct Canonical<'a> {
    v: &'static str,
    tenant_id: &'a Uuid,
    seq: i64,
    record_id: &'a str,
    kind: RecordKind,
    container_id: &'a Uuid,
    generation: i64,
    container_name: &'a str,
    labels: &'a BTreeMap<String, String>,
    start_s: i64,
    end_s: i64,
    seconds: i32,
    cpu_millis: i32,
    memory_mib: i32,
    nano_per_vcpu_second: i64,
    nano_per_gib_second: i64,
    note: Option<&'a str>,
    recorded_at_us: i64,
    prev_hash: String,
}

impl UsageRecord {
    /// The bytes the hash is taken over: every field except `hash`.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let c = Canonical {
            v: ENCODING_VERSION,
            tenant_id: &self.tenant_id,
            seq: self.seq,
            record_id: &self.record_id,
            kind: self.kind,
            container_id: &self.container_id,
            generation: self.generation,
            container_name: &self.container_name,
            labels: &self.labels,
            start_s: self.start_s,
            end_s: self.end_s,
            seconds: self.seconds,
            cpu_millis: self.cpu_millis,
            memory_mib: self.memory_mib,
            nano_per_vcpu_second: self.nano_per_vcpu_second,
            nano_per_gib_second: self.nano_per_gib_second,
            note: self.note.as_deref(),
            recorded_at_us: self.recorded_at_us,
            prev_hash: hex::encode(self.prev_hash),
        };
        // Serialising plain strings, integers and a string map cannot fail.
        serde_json::to_vec(&c).expect("canonical encoding")
    }

    /// The hash this record should carry.
    pub fn compute_hash(&self) -> [u8; 32] {
        Sha256::digest(self.canonical_bytes()).into()
    }

    /// Sets `hash` from the other fields (when appending).
    pub fn seal(mut self) -> Self {
        self.hash = self.compute_hash();
        self
    }
}

/// The first record that breaks a chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BrokenRecord {
    pub seq: i64,
    /// None when the break is a record missing at the end of the chain.
    pub record_id: Option<String>,
    pub reason: String,
}

/// Result of verifying one tenant's chain. JSON:
/// `{"ok": true, "records": N}` or
/// `{"ok": false, "records": N, "first_broken": {"seq", "record_id", "reason"}}`
/// where `records` counts the records read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verification {
    pub ok: bool,
    /// Records read by this verification.
    pub records: i64,
    /// Records before them already found intact by an earlier (incremental)
    /// verification, and not read again; 0 for a full one.
    pub verified_before: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_broken: Option<BrokenRecord>,
}

/// Checks records pushed in `seq` order; remembers the first break.
#[derive(Debug)]
pub struct ChainVerifier {
    expected_seq: i64,
    prev_hash: [u8; 32],
    records: i64,
    verified_before: i64,
    broken: Option<BrokenRecord>,
}

impl Default for ChainVerifier {
    fn default() -> Self {
        Self::new()
    }
}

impl ChainVerifier {
    pub fn new() -> Self {
        Self {
            expected_seq: 1,
            prev_hash: GENESIS,
            records: 0,
            verified_before: 0,
            broken: None,
        }
    }

    /// Goes on after a prefix found intact before: its last record's `seq`
    /// and `hash` (the next record must link onto them).
    pub fn resume(seq: i64, hash: [u8; 32]) -> Self {
        Self {
            expected_seq: seq + 1,
            prev_hash: hash,
            verified_before: seq,
            ..Self::new()
        }
    }

    /// The last record pushed (its `seq` and hash), or the resumed prefix's.
    pub fn last(&self) -> (i64, [u8; 32]) {
        (self.expected_seq - 1, self.prev_hash)
    }

    /// Whether a break was found (later records need not be read).
    pub fn is_broken(&self) -> bool {
        self.broken.is_some()
    }

    pub fn push(&mut self, r: &UsageRecord) {
        self.records += 1;
        if self.broken.is_some() {
            return;
        }
        let reason = if r.seq != self.expected_seq {
            Some(format!(
                "sequence gap: expected seq {}, found {} (records removed or reordered)",
                self.expected_seq, r.seq
            ))
        } else if r.prev_hash != self.prev_hash {
            Some("prev_hash does not match the previous record's hash".to_owned())
        } else if r.compute_hash() != r.hash {
            Some("hash does not match the record's contents (record altered)".to_owned())
        } else {
            None
        };
        if let Some(reason) = reason {
            self.broken = Some(BrokenRecord {
                seq: r.seq,
                record_id: Some(r.record_id.clone()),
                reason,
            });
        }
        self.expected_seq = r.seq + 1;
        self.prev_hash = r.hash;
    }

    /// Final verdict. `head` is the tenant's `(last_seq, last_hash)` if it
    /// has a head row: records removed from the end of the chain show there.
    pub fn finish(self, head: Option<(i64, [u8; 32])>) -> Verification {
        let mut broken = self.broken;
        if broken.is_none() {
            let (head_seq, head_hash) = head.unwrap_or((0, GENESIS));
            let last_seq = self.expected_seq - 1;
            if head_seq != last_seq || head_hash != self.prev_hash {
                broken = Some(BrokenRecord {
                    seq: head_seq.max(last_seq + 1),
                    record_id: None,
                    reason: format!(
                        "chain head says {head_seq} records ending in hash {}, \
                         but the records end at seq {last_seq} (records removed or head altered)",
                        hex::encode(head_hash)
                    ),
                });
            }
        }
        Verification {
            ok: broken.is_none(),
            records: self.records,
            verified_before: self.verified_before,
            first_broken: broken,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn chain(n: i64) -> Vec<UsageRecord> {
        let tenant = Uuid::from_u128(7);
        let mut prev = GENESIS;
        (1..=n)
            .map(|seq| {
                let r = UsageRecord {
                    tenant_id: tenant,
                    seq,
                    record_id: format!("c:1:{seq}:usage"),
                    kind: RecordKind::Usage,
                    container_id: Uuid::from_u128(9),
                    generation: 1,
                    container_name: "web".into(),
                    labels: BTreeMap::from([("team".into(), "a".into())]),
                    start_s: seq * 10,
                    end_s: seq * 10 + 10,
                    seconds: 10,
                    cpu_millis: 500,
                    memory_mib: 256,
                    nano_per_vcpu_second: 11_300,
                    nano_per_gib_second: 1_240,
                    note: None,
                    recorded_at_us: 1_700_000_000_000_000 + seq,
                    prev_hash: prev,
                    hash: [0; 32],
                }
                .seal();
                prev = r.hash;
                r
            })
            .collect()
    }

    fn verify(records: &[UsageRecord], head: Option<(i64, [u8; 32])>) -> Verification {
        let mut v = ChainVerifier::new();
        records.iter().for_each(|r| v.push(r));
        v.finish(head)
    }

    #[test]
    fn an_intact_chain_verifies() {
        let c = chain(5);
        let head = Some((5, c[4].hash));
        assert_eq!(
            verify(&c, head),
            Verification {
                ok: true,
                records: 5,
                verified_before: 0,
                first_broken: None
            }
        );
        assert!(verify(&[], None).ok);
    }

    #[test]
    fn a_resumed_verifier_checks_only_what_follows_the_intact_prefix() {
        let c = chain(8);
        let head = Some((8, c[7].hash));
        let mut v = ChainVerifier::resume(5, c[4].hash);
        for r in &c[5..] {
            v.push(r);
        }
        assert_eq!(v.last(), (8, c[7].hash));
        let verdict = v.finish(head);
        assert!(verdict.ok, "{verdict:?}");
        assert_eq!((verdict.records, verdict.verified_before), (3, 5));
        // A new record that does not link onto the prefix's hash is a break.
        let mut wrong = ChainVerifier::resume(5, c[3].hash);
        for r in &c[5..] {
            wrong.push(r);
        }
        assert_eq!(wrong.finish(head).first_broken.unwrap().seq, 6);
        // Nothing new: intact if the head is where the prefix ends.
        let idle = ChainVerifier::resume(8, c[7].hash);
        assert!(idle.finish(head).ok);
    }

    #[test]
    fn removals_are_caught() {
        let c = chain(5);
        let head = Some((5, c[4].hash));
        let mut middle = c.clone();
        middle.remove(2);
        let v = verify(&middle, head);
        assert_eq!(v.first_broken.unwrap().seq, 4);
        let v = verify(&c[..4], head);
        assert!(!v.ok);
        assert_eq!(v.first_broken.unwrap().record_id, None);
    }

    #[test]
    fn json_shape() {
        let v = Verification {
            ok: true,
            records: 3,
            verified_before: 2,
            first_broken: None,
        };
        assert_eq!(
            serde_json::to_string(&v).unwrap(),
            r#"{"ok":true,"records":3,"verified_before":2}"#
        );
    }
}
