//! Offline verification of a log and its counters.

use std::collections::BTreeMap;

use truc_store::Store;

use crate::{
    AuditError, CountKey, RECORD_PREFIX, RECORD_VERSION,
    log::{count_key_of_record, decode_record, index_of_key},
    read_counts, sha256,
};

/// The first thing found wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    /// The record at `position` (counted from 0 in key order) is broken.
    Record {
        /// Position of the record in the log.
        position: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// A counter differs from the count of records.
    Count {
        /// The counter.
        key: CountKey,
        /// The stored value.
        stored: u64,
        /// What the records add up to.
        recomputed: u64,
    },
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::Record { position, reason } => write!(f, "record {position}: {reason}"),
            Problem::Count {
                key,
                stored,
                recomputed,
            } => write!(
                f,
                "counter {} {} → {} {} {} {}: stored {stored}, records say {recomputed}",
                key.day, key.client, key.provider, key.service, key.kind, key.outcome
            ),
        }
    }
}

/// What [`verify`] found.
#[derive(Clone, Debug)]
pub struct VerifyReport {
    /// Records checked (up to the first broken one).
    pub records: u64,
    /// Hash of the last good record.
    pub head_hash: Option<[u8; 32]>,
    /// Counts recomputed from the records.
    pub counts: BTreeMap<CountKey, u64>,
    /// The first problem, if any.
    pub problem: Option<Problem>,
}

impl VerifyReport {
    /// True when the chain and the counters are intact.
    pub fn is_ok(&self) -> bool {
        self.problem.is_none()
    }
}

/// Checks every record (version, position, chain of hashes) and that the
/// stored counters equal the counts of the records. Stops at the first broken
/// record; an undecodable store is an error, not a report.
pub fn verify(store: &Store) -> Result<VerifyReport, AuditError> {
    let mut report = VerifyReport {
        records: 0,
        head_hash: None,
        counts: BTreeMap::new(),
        problem: None,
    };
    let mut prev = [0u8; 32];
    for (position, entry) in (0u64..).zip(store.scan_prefix(RECORD_PREFIX)) {
        let (key, value) = entry?;
        let broken = |reason: String| Problem::Record { position, reason };
        if index_of_key(&key) != Some(position) {
            report.problem = Some(broken(format!(
                "stored under key {} where index {position} was expected (a record is missing or out of place)",
                hex::encode(&key)
            )));
            return Ok(report);
        }
        let record = match decode_record(&key, &value) {
            Ok(r) => r,
            Err(e) => {
                report.problem = Some(broken(e.to_string()));
                return Ok(report);
            }
        };
        let problem = if record.version != RECORD_VERSION {
            Some(format!("unknown record version {}", record.version))
        } else if record.index != position {
            Some(format!(
                "says it is record {} (records were removed or reordered)",
                record.index
            ))
        } else if record.prev_hash.as_ref() != prev {
            Some(format!(
                "previous-hash {} does not match the hash {} of record {} (the previous record was changed, removed or reordered)",
                hex::encode(&record.prev_hash),
                hex::encode(prev),
                position.wrapping_sub(1)
            ))
        } else {
            None
        };
        if let Some(reason) = problem {
            report.problem = Some(broken(reason));
            return Ok(report);
        }
        prev = sha256(&value);
        report.records += 1;
        report.head_hash = Some(prev);
        *report
            .counts
            .entry(count_key_of_record(&record))
            .or_default() += 1;
    }
    let stored = read_counts(store)?;
    let keys: std::collections::BTreeSet<&CountKey> =
        stored.keys().chain(report.counts.keys()).collect();
    for key in keys {
        let s = stored.get(key).copied().unwrap_or(0);
        let r = report.counts.get(key).copied().unwrap_or(0);
        if s != r {
            report.problem = Some(Problem::Count {
                key: key.clone(),
                stored: s,
                recomputed: r,
            });
            break;
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AuditLog, Options, Transaction, log::record_key};

    fn tx(i: u64, outcome: &str) -> Transaction {
        Transaction {
            transaction_id: format!("{i:032x}"),
            kind: "call".into(),
            client_agency: "000.00.00.H37".into(),
            provider_agency: "000.00.00.G22".into(),
            service: "000.00.00.G22/citizen-lookup/v1".into(),
            started_unix_ms: 1_795_910_000_000 + i,
            finished_unix_ms: 1_795_910_000_001 + i,
            request_bytes: 100,
            response_bytes: 10,
            request_sha256: sha256(b"req"),
            response_sha256: sha256(b"resp"),
            outcome: outcome.into(),
            latency_us: 5,
            receipt: None,
        }
    }

    async fn filled(n: u64) -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path()).expect("open");
        let log = AuditLog::open(store.clone(), "hub", Options::default()).expect("log");
        let mut tasks = Vec::new();
        for i in 0..n {
            let log = log.clone();
            let outcome = if i % 3 == 0 { "NOT_FOUND" } else { "OK" };
            tasks.push(tokio::spawn(
                async move { log.append(tx(i, outcome)).await },
            ));
        }
        let mut indexes = Vec::new();
        for t in tasks {
            indexes.push(t.await.expect("join").expect("append").index);
        }
        indexes.sort_unstable();
        assert_eq!(
            indexes,
            (0..n).collect::<Vec<_>>(),
            "no gaps, no duplicates"
        );
        (dir, store)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_appends_verify_and_counts_match() {
        let (_dir, store) = filled(200).await;
        let report = verify(&store).expect("verify");
        assert!(report.is_ok(), "{:?}", report.problem);
        assert_eq!(report.records, 200);
        let counts = read_counts(&store).expect("counts");
        assert_eq!(counts, report.counts);
        let not_found: u64 = counts
            .iter()
            .filter(|(k, _)| k.outcome == "NOT_FOUND")
            .map(|(_, v)| v)
            .sum();
        assert_eq!(not_found, 67);
    }

    #[tokio::test]
    async fn reopened_log_continues_the_chain() {
        let (dir, store) = filled(5).await;
        drop(store);
        // The writer thread holds the store until its channel closes.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let store = loop {
            match Store::open(dir.path()) {
                Ok(s) => break s,
                Err(e) if std::time::Instant::now() > deadline => panic!("reopen: {e}"),
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(5)).await,
            }
        };
        let log = AuditLog::open(store.clone(), "hub", Options::default()).expect("log");
        assert_eq!(log.append(tx(99, "OK")).await.expect("append").index, 5);
        assert!(verify(&store).expect("verify").is_ok());
    }

    #[tokio::test]
    async fn flipped_byte_is_reported_at_the_next_record() {
        let (_dir, store) = filled(10).await;
        let mut value = store.get(record_key(4)).expect("get").expect("record 4");
        // Flip a byte of the transaction id: still decodes, but hashes differently.
        let pos = value
            .windows(4)
            .position(|w| w == b"0000")
            .expect("tx id bytes");
        value[pos] ^= 0x01;
        store.insert(record_key(4), &value).expect("tamper");
        let report = verify(&store).expect("verify");
        assert!(
            matches!(&report.problem, Some(Problem::Record { position: 5, .. })),
            "{:?}",
            report.problem
        );
        assert_eq!(report.records, 5);
    }

    #[tokio::test]
    async fn removed_record_is_reported_at_its_position() {
        let (_dir, store) = filled(10).await;
        let mut batch = truc_store::WriteBatch::default();
        batch.remove(record_key(3));
        store.apply(batch).expect("tamper");
        let report = verify(&store).expect("verify");
        assert!(
            matches!(&report.problem, Some(Problem::Record { position: 3, .. })),
            "{:?}",
            report.problem
        );
    }

    #[tokio::test]
    async fn reordered_records_are_reported() {
        let (_dir, store) = filled(10).await;
        let a = store.get(record_key(6)).expect("get").expect("6");
        let b = store.get(record_key(7)).expect("get").expect("7");
        store.insert(record_key(6), &b).expect("swap");
        store.insert(record_key(7), &a).expect("swap");
        let report = verify(&store).expect("verify");
        assert!(
            matches!(&report.problem, Some(Problem::Record { position: 6, .. })),
            "{:?}",
            report.problem
        );
    }

    #[tokio::test]
    async fn changed_counter_is_reported() {
        let (_dir, store) = filled(4).await;
        let (key, _) = store
            .scan_prefix(crate::COUNT_PREFIX)
            .next()
            .expect("a counter")
            .expect("read");
        store.insert(&key, 1000u64.to_be_bytes()).expect("tamper");
        let report = verify(&store).expect("verify");
        assert!(
            matches!(&report.problem, Some(Problem::Count { stored: 1000, .. })),
            "{:?}",
            report.problem
        );
    }
}
