//! Offline verification of a log: its records, Merkle tree, signed tree
//! heads, receipts and counters.

use std::collections::BTreeMap;

use truc_store::Store;

use crate::{
    AuditError, CHUNK_PREFIX, CountKey, Counters, HEAD_PREFIX, NODE_PREFIX, RECORD_VERSION, Stats,
    Unreadable,
    log::{NodeChunk, NodeReader, decode_head, decode_record},
    merkle::{Frontier, Hash, leaf_hash},
    read_stats,
    sth::{root_of, verify_tree_head},
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
    /// A signed tree head does not match the records, or its signature fails.
    TreeHead {
        /// The head's tree size.
        size: u64,
        /// What is wrong.
        reason: String,
    },
    /// A node's record holds a hub receipt that does not verify.
    Receipt {
        /// Position of the record.
        position: u64,
        /// What is wrong.
        reason: String,
    },
    /// A stored entry (a statistics counter, a tree head) does not decode.
    Unreadable {
        /// Which entry, and what is wrong.
        entry: Unreadable,
    },
    /// The party index does not match the records.
    Index {
        /// What is wrong.
        reason: String,
    },
    /// Counters stored by an earlier build, without latency sketches: the
    /// log has not been opened by this build yet (which rewrites them).
    EarlierFormat {
        /// How many.
        counters: u64,
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
            Problem::TreeHead { size, reason } => write!(f, "tree head of size {size}: {reason}"),
            Problem::Receipt { position, reason } => {
                write!(f, "receipt in record {position}: {reason}")
            }
            Problem::Unreadable { entry } => write!(f, "unreadable stored entry: {entry}"),
            Problem::Index { reason } => write!(f, "party index: {reason}"),
            Problem::EarlierFormat { counters } => write!(
                f,
                "{counters} statistics counters are in an earlier build's format (power-of-two latency buckets); start the hub (or node) once with this build, which recomputes them from the log, then verify again"
            ),
            Problem::Count {
                key,
                stored,
                recomputed,
            } => write!(
                f,
                "statistics {} {} → {} {} {} {}: stored {stored} transactions (with their bytes and latencies), records say {recomputed}",
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
    /// Merkle root of the records checked.
    pub root: Hash,
    /// Signed tree heads whose root was checked against the records.
    pub tree_heads: u64,
    /// Whether head and receipt signatures were checked (a public key was given).
    pub signatures_checked: bool,
    /// Hub receipts found in records (on a node's log).
    pub receipts: u64,
    /// Statistics recomputed from the records.
    pub stats: BTreeMap<CountKey, Stats>,
    /// Counts recomputed from the records.
    pub counts: BTreeMap<CountKey, u64>,
    /// Stored entries that do not decode (the first is the problem, unless
    /// an earlier one was found); everything else was still checked.
    pub unreadable: Vec<Unreadable>,
    /// The first problem, if any.
    pub problem: Option<Problem>,
}

impl VerifyReport {
    /// True when nothing was found wrong.
    pub fn is_ok(&self) -> bool {
        self.problem.is_none()
    }
}

/// Recomputes the log from its records and checks everything stored against
/// it: record positions, versions and chain; every stored Merkle tree node;
/// every signed tree head's root (and, with the hub's `public_key`, its
/// signature); on a node, the hub receipts; and the counters. Stops at the
/// first problem. An unreadable store is an error, not a report.
pub fn verify(store: &Store, public_key: Option<&[u8]>) -> Result<VerifyReport, AuditError> {
    let mut report = VerifyReport {
        records: 0,
        root: crate::merkle::empty_root(),
        tree_heads: 0,
        signatures_checked: public_key.is_some(),
        receipts: 0,
        stats: BTreeMap::new(),
        counts: BTreeMap::new(),
        unreadable: Vec::new(),
        problem: None,
    };
    let zone = crate::stored_zone(store)?.unwrap_or_default();
    // A head that does not decode is a problem found, not a failure to check.
    let mut heads = Vec::new();
    for entry in store.scan_prefix(HEAD_PREFIX) {
        let (key, value) = entry?;
        match decode_head(&key, &value) {
            Ok(h) => heads.push(h),
            Err(e) => report.unreadable.push(Unreadable::new(&key, e.to_string())),
        }
    }
    let indexed = crate::index::has_party_index(store)?;
    let mut index_entries = 0u64;
    let mut heads = heads.into_iter().peekable();
    let mut frontier = Frontier::new();
    // Only logs that sign heads (the hub's) keep a tree; a node's is a chain.
    let has_tree = store.scan_prefix(CHUNK_PREFIX).next().is_some()
        || store.scan_prefix(NODE_PREFIX).next().is_some()
        || heads.peek().is_some();
    let mut nodes = NodeReader::default();
    let mut prev = [0u8; 32];
    for (position, entry) in (0u64..).zip(crate::records::scan(store, 0)) {
        let broken = |reason: String| Some(Problem::Record { position, reason });
        let stored = match entry {
            Ok(r) => r,
            Err(AuditError::Corrupt { key, reason }) => {
                report.problem = broken(format!(
                    "the records stored under key {key} cannot be read ({reason})"
                ));
                return Ok(report);
            }
            Err(e) => return Err(e),
        };
        if stored.index != position {
            report.problem = broken(format!(
                "stored as index {} under key {} where index {position} was expected (a record is missing or out of place)",
                stored.index,
                hex::encode(&stored.key)
            ));
            return Ok(report);
        }
        let (key, value) = (stored.key, stored.bytes);
        let record = match decode_record(&key, &value) {
            Ok(r) => r,
            Err(e) => {
                report.problem = broken(e.to_string());
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
                "previous-hash {} does not match the leaf hash {} of record {} (the previous record was changed, removed or reordered)",
                hex::encode(&record.prev_hash),
                hex::encode(prev),
                position.wrapping_sub(1)
            ))
        } else {
            None
        };
        if let Some(reason) = problem {
            report.problem = broken(reason);
            return Ok(report);
        }
        let leaf = leaf_hash(&value);
        for (level, index, hash) in frontier.push(leaf) {
            if !has_tree {
                break;
            }
            let wrong = match nodes.get(store, level, index) {
                Ok(Some(stored)) if stored == hash => continue,
                Ok(Some(_)) => "does not match".to_string(),
                Ok(None) => "is missing for".to_string(),
                Err(AuditError::Corrupt { reason, .. }) => {
                    format!("cannot be read ({reason}) to check")
                }
                Err(e) => return Err(e),
            };
            report.problem = broken(format!(
                "the stored Merkle tree node (level {level}, index {index}) {wrong} the records (a record was changed, or the tree was)"
            ));
            return Ok(report);
        }
        // What a receipt says of itself needs no key: its transaction, and
        // (when it carries the hub's record) its leaf hash.
        if let Some(receipt) = &record.receipt {
            let reason = if receipt.transaction_id != record.transaction_id {
                Some(format!(
                    "the receipt is for transaction {:?}",
                    receipt.transaction_id
                ))
            } else if !receipt.record.is_empty()
                && receipt.leaf_hash.as_ref() != leaf_hash(&receipt.record)
            {
                Some("its leaf hash is not the hash of the hub's record it carries".to_string())
            } else {
                None
            };
            if let Some(reason) = reason {
                report.problem = Some(Problem::Receipt { position, reason });
                return Ok(report);
            }
        }
        if let (Some(receipt), Some(key)) = (&record.receipt, public_key) {
            report.receipts += 1;
            let reason = match &receipt.tree_head {
                None => Some("no tree head".to_string()),
                Some(head) => match verify_tree_head(head, key) {
                    Err(e) => Some(e.to_string()),
                    Ok(()) if head.tree_size <= receipt.record_index => Some(format!(
                        "tree head of size {} cannot include leaf {}",
                        head.tree_size, receipt.record_index
                    )),
                    Ok(()) => None,
                },
            };
            if let Some(reason) = reason {
                report.problem = Some(Problem::Receipt { position, reason });
                return Ok(report);
            }
        }
        if indexed {
            if !crate::index::is_indexed(store, &record, position)? {
                report.problem = broken(
                    "its party index entries are missing (listings by agency would not show it)"
                        .into(),
                );
                return Ok(report);
            }
            index_entries +=
                crate::index::parties(&record.client_agency, &record.provider_agency).len() as u64;
        }
        prev = leaf;
        report.records += 1;
        report.root = frontier.root();
        let key = CountKey::of_record(&record, &zone);
        report
            .stats
            .entry(key.clone())
            .or_default()
            .add(&Stats::of_record(&record));
        *report.counts.entry(key).or_default() += 1;
        while let Some(head) = heads.next_if(|h| h.tree_size == frontier.size()) {
            if let Some(problem) = check_head(&head, &report.root, public_key) {
                report.problem = Some(problem);
                return Ok(report);
            }
            report.tree_heads += 1;
        }
    }
    if let Some(head) = heads.next() {
        report.problem = Some(Problem::TreeHead {
            size: head.tree_size,
            reason: format!(
                "signed for {} records but the log holds {}: records were removed from its end, or a head is out of place",
                head.tree_size, report.records
            ),
        });
        return Ok(report);
    }
    // After the heads: a log cut at its end is better named by the head
    // it no longer meets than by the chunks it outlives.
    if let Some((position, reason)) = NodeChunk::layout_problem(store, report.records)? {
        report.problem = Some(Problem::Record { position, reason });
        return Ok(report);
    }
    if indexed {
        let stored = crate::index::party_entries(store)?;
        if stored != index_entries {
            report.problem = Some(Problem::Index {
                reason: format!(
                    "{stored} entries where the records make {index_entries} (entries were added or removed)"
                ),
            });
            return Ok(report);
        }
    }
    let Counters {
        stats: stored,
        unreadable,
        earlier_format,
        ..
    } = read_stats(store)?;
    report.unreadable.extend(unreadable);
    if let Some(entry) = report.unreadable.first() {
        // A counter that cannot be read would also show as a difference.
        report.problem = Some(Problem::Unreadable {
            entry: entry.clone(),
        });
        return Ok(report);
    }
    if earlier_format > 0 {
        report.problem = Some(Problem::EarlierFormat {
            counters: earlier_format,
        });
        return Ok(report);
    }
    let keys: std::collections::BTreeSet<&CountKey> =
        stored.keys().chain(report.stats.keys()).collect();
    let none = Stats::default();
    for key in keys {
        let s = stored.get(key).unwrap_or(&none);
        let r = report.stats.get(key).unwrap_or(&none);
        if s != r {
            report.problem = Some(Problem::Count {
                key: key.clone(),
                stored: s.count,
                recomputed: r.count,
            });
            break;
        }
    }
    Ok(report)
}

fn check_head(
    head: &truc_proto::v1::SignedTreeHead,
    root: &Hash,
    public_key: Option<&[u8]>,
) -> Option<Problem> {
    let problem = |reason: String| {
        Some(Problem::TreeHead {
            size: head.tree_size,
            reason,
        })
    };
    if root_of(head).as_ref() != Some(root) {
        return problem(format!(
            "signed root {} differs from the records' root {}",
            hex::encode(&head.root_hash),
            hex::encode(root)
        ));
    }
    if let Some(key) = public_key {
        if let Err(e) = verify_tree_head(head, key) {
            return problem(e.to_string());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AuditLog, LogReader, Options, Transaction, sha256, sth::Signer};

    fn tx(i: u64, outcome: &str) -> Transaction {
        Transaction {
            transaction_id: format!("{i:032x}"),
            kind: crate::Kind::Call,
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
            receipt_verified: false,
            caller: "lgsp-langson".into(),
            ..Transaction::default()
        }
    }

    fn signer() -> (Signer, Vec<u8>) {
        let s = Signer::generate().expect("key");
        let public = s.public_key();
        (s, public)
    }

    struct Filled {
        _dir: tempfile::TempDir,
        store: Store,
        key: Vec<u8>,
    }

    async fn filled(n: u64) -> Filled {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path()).expect("open");
        let (signer, key) = signer();
        let log =
            AuditLog::open(store.clone(), "hub", Options::default(), Some(signer)).expect("log");
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
            let appended = t.await.expect("join").expect("append");
            let head = appended.tree_head.expect("signed head");
            assert!(
                head.tree_size > appended.index,
                "the head includes the record"
            );
            indexes.push(appended.index);
        }
        indexes.sort_unstable();
        assert_eq!(
            indexes,
            (0..n).collect::<Vec<_>>(),
            "no gaps, no duplicates"
        );
        log.close().await;
        Filled {
            _dir: dir,
            store,
            key,
        }
    }

    #[tokio::test]
    async fn a_last_commit_cut_short_is_completed_from_its_journal_at_open() {
        let f = filled(40).await;
        // The last commit wrote the greatest head and value of records.
        let head = f.store.last_with_prefix(crate::HEAD_PREFIX).expect("read");
        let group = f.store.last_with_prefix(crate::GROUP_PREFIX).expect("read");
        let (Some((head, _)), Some((group, _))) = (head, group) else {
            panic!("a filled log has heads and records");
        };
        // As if a crash had come after the commit's journal and before
        // these two of its writes.
        let mut lost = truc_store::WriteBatch::default();
        lost.remove(&head);
        lost.remove(&group);
        f.store.apply(lost).expect("remove");
        f.store.flush().expect("flush");
        let Filled {
            _dir: dir,
            store,
            key,
        } = f;
        drop(store);
        let store = Store::open(dir.path()).expect("reopen");
        let report = verify(&store, Some(&key)).expect("verify");
        assert!(report.problem.is_none(), "{:?}", report.problem);
        assert_eq!(LogReader::offline(store).expect("reader").size(), 40);
    }

    fn problem(f: &Filled) -> Option<Problem> {
        verify(&f.store, Some(&f.key)).expect("verify").problem
    }

    /// Asserts that verifying `f` finds a problem that matches the pattern.
    macro_rules! assert_problem {
        ($f:expr, $($pattern:tt)+) => {{
            let found = problem(&$f);
            assert!(matches!(&found, $($pattern)+), "{found:?}");
        }};
    }

    /// Edits the stored records behind the log's back.
    fn edit(f: &Filled, e: impl FnOnce(&mut Vec<Vec<u8>>)) {
        crate::tamper::edit_stored_records(&f.store, e).expect("tamper");
    }

    /// Removes `key` from the store behind the log's back.
    fn remove(f: &Filled, key: impl AsRef<[u8]>) {
        let mut batch = truc_store::WriteBatch::default();
        batch.remove(key);
        f.store.apply(batch).expect("tamper");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_node_receipt_for_another_transaction_or_with_a_wrong_leaf_hash_is_found() {
        let hub_dir = tempfile::tempdir().expect("temp dir");
        let (signer, key) = signer();
        let hub = AuditLog::open(
            Store::open(hub_dir.path()).expect("open"),
            "hub",
            Options::default(),
            Some(signer),
        )
        .expect("log");
        let appended = hub.append(tx(1, "OK")).await.expect("append");
        let receipt = crate::Receipt {
            transaction_id: format!("{:032x}", 1),
            record_index: appended.index,
            leaf_hash: bytes::Bytes::copy_from_slice(&appended.leaf_hash),
            recorded_unix_ms: 1,
            tree_head: appended.tree_head.clone(),
            record: appended.record.clone(),
            inclusion: None,
        };
        hub.close().await;
        let mut other_tx = receipt.clone();
        other_tx.transaction_id = format!("{:032x}", 2);
        let mut wrong_leaf = receipt.clone();
        wrong_leaf.leaf_hash = bytes::Bytes::from(vec![0; 32]);
        for (receipt, expected) in [
            (receipt, None),
            (other_tx, Some("for transaction")),
            (wrong_leaf, Some("leaf hash")),
        ] {
            let dir = tempfile::tempdir().expect("temp dir");
            let store = Store::open(dir.path()).expect("open");
            let node = AuditLog::open(store.clone(), "lgsp-langson", Options::default(), None)
                .expect("log");
            let mut t = tx(1, "OK");
            t.receipt = Some(receipt);
            node.append(t).await.expect("append");
            node.close().await;
            // Without the hub's key too: these need none.
            for public_key in [Some(key.as_slice()), None] {
                let found = verify(&store, public_key).expect("verify").problem;
                match (expected, &found) {
                    (None, None) => {}
                    (
                        Some(text),
                        Some(Problem::Receipt {
                            position: 0,
                            reason,
                        }),
                    ) => {
                        assert!(reason.contains(text), "{reason}");
                    }
                    _ => panic!("expected {expected:?}, found {found:?}"),
                }
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_appends_verify_and_counts_match() {
        let f = filled(200).await;
        let report = verify(&f.store, Some(&f.key)).expect("verify");
        assert!(report.is_ok(), "{:?}", report.problem);
        assert_eq!(report.records, 200);
        assert!(report.tree_heads >= 1);
        let counts = crate::read_counts(&f.store).expect("counts");
        assert_eq!(counts, report.counts);
        let not_found: u64 = counts
            .iter()
            .filter(|(k, _)| k.outcome == "NOT_FOUND")
            .map(|(_, v)| v)
            .sum();
        assert_eq!(not_found, 67);
        // The last head covers everything and its root is the records' root.
        let reader = LogReader::offline(f.store.clone()).expect("reader");
        let head = reader.tree_head(0).expect("latest head");
        assert_eq!(head.tree_size, 200);
        assert_eq!(head.root_hash.as_ref(), report.root);
    }

    #[tokio::test]
    async fn reopened_log_continues_the_tree() {
        let f = filled(5).await;
        let (signer, key) = signer();
        let log =
            AuditLog::open(f.store.clone(), "hub", Options::default(), Some(signer)).expect("log");
        let appended = log.append(tx(99, "OK")).await.expect("append");
        assert_eq!(appended.index, 5);
        log.close().await;
        // Heads signed by two keys: the old ones fail with the new key alone.
        let report = verify(&f.store, None).expect("verify");
        assert!(report.is_ok(), "{:?}", report.problem);
        assert_eq!(report.records, 6);
        assert!(matches!(
            verify(&f.store, Some(&key)).expect("verify").problem,
            Some(Problem::TreeHead { .. })
        ));
    }

    #[tokio::test]
    async fn a_log_with_heads_of_an_earlier_build_verifies_and_grows() {
        use prost::Message;
        let seeded = || {
            let key = ring::signature::Ed25519KeyPair::from_seed_unchecked(&[8; 32]).expect("seed");
            Signer::new(key)
        };
        let dir = tempfile::tempdir().expect("dir");
        let store = Store::open(dir.path()).expect("store");
        let key = seeded().public_key();
        let log =
            AuditLog::open(store.clone(), "hub", Options::default(), Some(seeded())).expect("log");
        for i in 0..3 {
            log.append(tx(i, "OK")).await.expect("append");
        }
        log.close().await;
        drop(log);
        // Make the stored heads what an earlier build wrote: no origin,
        // signed over the truc-sth-v1 bytes.
        let heads = LogReader::offline(store.clone())
            .expect("reader")
            .tree_heads()
            .expect("heads");
        for h in &heads {
            let root: [u8; 32] = h.root_hash.as_ref().try_into().expect("root");
            let old = seeded().sign_legacy(h.tree_size, &root, h.timestamp_unix_ms);
            store
                .insert(crate::log::head_key(h.tree_size), old.encode_to_vec())
                .expect("insert");
        }
        let log =
            AuditLog::open(store.clone(), "hub", Options::default(), Some(seeded())).expect("log");
        log.append(tx(3, "OK")).await.expect("append");
        log.close().await;
        let heads = LogReader::offline(store.clone())
            .expect("reader")
            .tree_heads()
            .expect("heads");
        let origins: Vec<&str> = heads.iter().map(|h| h.origin.as_str()).collect();
        assert_eq!(origins, ["", "", "", crate::sth::DEFAULT_ORIGIN]);
        let report = verify(&store, Some(&key)).expect("verify");
        assert!(report.is_ok(), "{:?}", report.problem);
        assert_eq!(report.tree_heads, 4);
    }

    #[tokio::test]
    async fn flipped_byte_is_reported_at_its_record() {
        for position in [4, 9] {
            let f = filled(10).await;
            edit(&f, |records| {
                let value = &mut records[position as usize];
                // Flip a byte of the transaction id: still decodes, hashes differently.
                let pos = value
                    .windows(4)
                    .position(|w| w == b"0000")
                    .expect("tx id bytes");
                value[pos] ^= 0x01;
            });
            assert_problem!(f, Some(Problem::Record { position: p, .. }) if *p == position);
        }
    }

    #[tokio::test]
    async fn removed_record_is_reported_at_its_position() {
        let f = filled(10).await;
        edit(&f, |records| {
            records.remove(3);
        });
        assert_problem!(f, Some(Problem::Record { position: 3, .. }));
    }

    #[tokio::test]
    async fn truncated_log_is_reported_by_its_tree_heads() {
        let f = filled(10).await;
        edit(&f, |records| {
            records.remove(9);
        });
        assert_problem!(f, Some(Problem::TreeHead { size: 10, .. }));
    }

    #[tokio::test]
    async fn reordered_records_are_reported() {
        let f = filled(10).await;
        edit(&f, |records| records.swap(6, 7));
        assert_problem!(f, Some(Problem::Record { position: 6, .. }));
    }

    /// The first index of each stored value of records, in order.
    fn values(f: &Filled) -> Vec<(Vec<u8>, u64)> {
        f.store
            .scan_prefix(crate::GROUP_PREFIX)
            .map(|e| {
                let (key, _) = e.expect("read");
                let first = u64::from_be_bytes(key[key.len() - 8..].try_into().expect("8 bytes"));
                (key, first)
            })
            .collect()
    }

    #[tokio::test]
    async fn a_removed_or_unreadable_value_of_records_is_reported_where_it_starts() {
        for unreadable in [false, true] {
            let f = filled(40).await;
            let values = values(&f);
            assert!(values.len() >= 3, "40 records take several values");
            let (key, first) = values[1].clone();
            if unreadable {
                f.store.insert(&key, [0, 0, 0, 9, 1]).expect("tamper");
            } else {
                remove(&f, &key);
            }
            assert_problem!(f, Some(Problem::Record { position, .. }) if *position == first);
        }
    }

    #[tokio::test]
    async fn a_log_of_a_key_per_record_verifies_and_grows() {
        let f = filled(10).await;
        crate::records::as_earlier_builds(&f.store);
        assert!(values(&f).is_empty());
        let report = verify(&f.store, None).expect("verify");
        assert!(report.is_ok(), "{:?}", report.problem);
        assert_eq!(report.records, 10);
        let log = AuditLog::open(f.store.clone(), "hub", Options::default(), Some(signer().0))
            .expect("reopen");
        for i in 10..13 {
            let appended = log.append(tx(i, "OK")).await.expect("append");
            assert_eq!(appended.index, i);
        }
        log.close().await;
        drop(log);
        assert_eq!(
            values(&f).first().map(|v| v.1),
            Some(10),
            "the new records in values after the old keys"
        );
        let report = verify(&f.store, None).expect("verify");
        assert!(report.is_ok(), "{:?}", report.problem);
        assert_eq!(report.records, 13);
        let reader = LogReader::offline(f.store.clone()).expect("reader");
        assert_eq!(reader.size(), 13);
        for i in [0, 9, 10, 12] {
            let (_, record) = reader.record(i).expect("read").expect("stored");
            assert_eq!(record.index, i);
        }
    }

    #[tokio::test]
    async fn changed_counter_is_reported() {
        let f = filled(4).await;
        let (key, _) = f
            .store
            .scan_prefix(crate::COUNT_PREFIX)
            .next()
            .expect("a counter")
            .expect("read");
        let mut forged = Stats {
            count: 1000,
            ..Stats::default()
        };
        forged.latency.add_n(5, 1000);
        f.store.insert(&key, forged.encode()).expect("tamper");
        assert_problem!(f, Some(Problem::Count { stored: 1000, .. }));
    }

    /// Power-of-two buckets as an earlier build stored them.
    fn earlier_format(s: &Stats) -> Vec<u8> {
        let mut out = vec![0xFE];
        for v in [s.count, s.request_bytes, s.response_bytes, 1, 5] {
            prost::encoding::encode_varint(v, &mut out);
        }
        prost::encoding::encode_varint(s.count, &mut out);
        out
    }

    #[tokio::test]
    async fn counters_of_an_earlier_build_are_named_then_migrated_when_the_log_opens() {
        let f = filled(9).await;
        let good = read_stats(&f.store).expect("read").stats;
        // Rewrite every counter as the earlier build stored it, one of them
        // with a wrong count (the records win).
        let mut batch = truc_store::WriteBatch::default();
        for (i, (k, s)) in good.iter().enumerate() {
            let mut old = s.clone();
            if i == 0 {
                old.count += 5;
            }
            batch.insert(k.encode(), earlier_format(&old));
        }
        f.store.apply(batch).expect("rewrite");
        let n = good.len() as u64;
        assert!(n >= 2);
        assert_problem!(f, Some(Problem::EarlierFormat { counters }) if *counters == n);
        let text = problem(&f).map(|p| p.to_string()).unwrap_or_default();
        assert!(text.contains("start the hub"), "{text}");

        let (signer, _) = signer();
        let log =
            AuditLog::open(f.store.clone(), "hub", Options::default(), Some(signer)).expect("log");
        log.close().await;
        assert_eq!(problem(&f), None);
        let migrated = read_stats(&f.store).expect("read");
        assert_eq!(migrated.earlier_format, 0);
        assert_eq!(
            migrated.stats, good,
            "the records' statistics, sketches and all"
        );
        // Opening again finds nothing to do.
        assert_eq!(
            crate::counts::migrate_earlier_formats(&f.store, &crate::Zone::default())
                .expect("migrate"),
            0
        );
    }

    #[tokio::test]
    async fn an_80_kb_status_code_verifies_and_reads_back() {
        let f = filled(3).await;
        let (signer, key) = signer();
        let log =
            AuditLog::open(f.store.clone(), "hub", Options::default(), Some(signer)).expect("log");
        // 2-byte characters: the old 65 535-byte cut fell inside one.
        let huge = "é".repeat(40_000);
        log.append(tx(50, &huge)).await.expect("append");
        log.append(tx(51, &huge)).await.expect("append");
        log.close().await;
        let report = verify(&f.store, None).expect("verify");
        assert!(report.is_ok(), "{:?}", report.problem);
        assert_eq!(report.records, 5);
        let stored = read_stats(&f.store).expect("stats");
        assert!(stored.unreadable.is_empty());
        assert_eq!(stored.stats, report.stats);
        let bounded = stored
            .stats
            .iter()
            .find(|(k, _)| k.outcome.len() > 100)
            .expect("the long outcome's counter");
        assert_eq!(bounded.1.count, 2);
        assert!(huge.starts_with(&bounded.0.outcome));
        drop(key);
    }

    #[tokio::test]
    async fn records_with_and_without_why_fields_verify_in_one_log() {
        // Records without them, as written before the fields existed (an
        // empty proto3 field is not encoded: their bytes are the old ones).
        let f = filled(3).await;
        let (before, _) = crate::read_records(&f.store, 0)
            .next()
            .expect("a record")
            .expect("readable");
        assert!(before.purpose.is_empty() && !before.end_user_hashed);
        let log = AuditLog::open(f.store.clone(), "hub", Options::default(), Some(signer().0))
            .expect("log");
        log.append(Transaction {
            purpose: "giải quyết thủ tục hành chính".into(),
            end_user: "ab".repeat(32),
            end_user_hashed: true,
            case: "HS-2026/1".into(),
            ..tx(60, "OK")
        })
        .await
        .expect("append");
        log.close().await;
        let report = verify(&f.store, None).expect("verify");
        assert!(report.is_ok(), "{:?}", report.problem);
        assert_eq!(report.records, 4);
        let (last, _) = crate::read_records(&f.store, 3)
            .next()
            .expect("the new record")
            .expect("readable");
        assert_eq!(
            (
                last.purpose.as_str(),
                last.case.as_str(),
                last.end_user_hashed
            ),
            ("giải quyết thủ tục hành chính", "HS-2026/1", true)
        );
    }

    #[tokio::test]
    async fn a_bad_counter_or_head_is_a_problem_found_not_a_failure() {
        let f = filled(6).await;
        let good = read_stats(&f.store).expect("stats").stats;
        // A counter whose key is not UTF-8, next to the good ones.
        let mut bad = crate::COUNT_PREFIX.to_vec();
        bad.extend_from_slice(&[0, 10]);
        bad.extend_from_slice(&[0xFF; 10]);
        f.store
            .insert(&bad, Stats::one(1, 1, 1).encode())
            .expect("tamper");
        let report = verify(&f.store, Some(&f.key)).expect("verify, not an error");
        assert_eq!(report.records, 6, "every record still checked");
        assert_eq!(report.stats, good, "the good counters still add up");
        assert_eq!(report.unreadable.len(), 1);
        assert!(
            matches!(&report.problem, Some(Problem::Unreadable { entry }) if entry.reason.contains("statistics key")),
            "{:?}",
            report.problem
        );
        let counters = read_stats(&f.store).expect("reads");
        assert_eq!(counters.stats, good);
        assert_eq!(counters.unreadable.len(), 1);

        // A tree head that does not decode.
        let g = filled(4).await;
        g.store
            .insert(crate::log::head_key(2), b"\xFF\xFF\xFF")
            .expect("tamper");
        let report = verify(&g.store, Some(&g.key)).expect("verify, not an error");
        assert_eq!(report.records, 4);
        assert!(
            matches!(&report.problem, Some(Problem::Unreadable { entry }) if entry.reason.contains("tree head")),
            "{:?}",
            report.problem
        );
    }

    #[tokio::test]
    async fn the_latest_records_skip_one_that_does_not_decode() {
        let f = filled(5).await;
        edit(&f, |records| records[3] = vec![0xFF; 5]);
        let reader = LogReader::offline(f.store.clone()).expect("reader");
        let recent: Vec<u64> = reader
            .recent(10)
            .expect("the others")
            .iter()
            .map(|r| r.0)
            .collect();
        assert_eq!(recent, [4, 2, 1, 0]);
        assert!(matches!(
            verify(&f.store, None).expect("verify").problem,
            Some(Problem::Record { position: 3, .. })
        ));
    }

    #[tokio::test]
    async fn a_changed_or_cut_merkle_chunk_is_reported() {
        for cut in [false, true] {
            let f = filled(8).await;
            let (key, mut value) = f
                .store
                .scan_prefix(CHUNK_PREFIX)
                .next()
                .expect("a chunk")
                .expect("read");
            if cut {
                value.truncate(value.len() - 1);
            } else {
                // The first leaf's hash, just after the leaf count.
                value[4] ^= 1;
            }
            f.store.insert(&key, &value).expect("tamper");
            let expected = if cut {
                "cannot be read"
            } else {
                "does not match"
            };
            assert_problem!(f, Some(Problem::Record { reason, .. }) if reason.contains(expected));
        }
    }

    #[tokio::test]
    async fn a_merkle_chunk_added_beside_the_tree_is_reported() {
        // A log's chunks: their keys and values, in order.
        let chunks = |f: &Filled| -> Vec<_> {
            f.store
                .scan_prefix(CHUNK_PREFIX)
                .map(|e| e.expect("read"))
                .collect()
        };
        let f = filled(8).await;
        let key_at = |leaf: u64| {
            let mut k = CHUNK_PREFIX.to_vec();
            k.extend_from_slice(&leaf.to_be_bytes());
            k
        };
        // One more leaf's nodes after the log's end: leaf 8 completes
        // one node (level 0), so the chunk is well formed.
        let mut beyond = 1u32.to_be_bytes().to_vec();
        beyond.extend_from_slice(&[9u8; 32]);
        f.store.insert(key_at(8), &beyond).expect("tamper");
        assert_problem!(f, Some(Problem::Record { reason, .. }) if reason.contains("end at leaf 9 where the log holds 8"));
        // Bytes that are no chunk at all, past the end, where no record's
        // node is read from them.
        f.store.insert(key_at(8), b"\x00\x00").expect("tamper");
        assert_problem!(f, Some(Problem::Record { position: 8, reason }) if reason.contains("cannot be read"));

        // The true nodes of leaves 2..8, stored again as one chunk from
        // leaf 2: every node the verifier reads still matches the records,
        // but the chunk overlaps the one holding leaves 0 and 1.
        let g = filled(8).await;
        // First the tree as one chunk, as a writer with one group would
        // have left it: that verifies.
        let stored = chunks(&g);
        let all: Vec<u8> = stored.iter().flat_map(|(_, v)| v[4..].to_vec()).collect();
        for (key, _) in &stored {
            remove(&g, key);
        }
        let mut one = 8u32.to_be_bytes().to_vec();
        one.extend_from_slice(&all);
        g.store.insert(key_at(0), &one).expect("rewrite");
        assert_eq!(problem(&g), None);
        // Leaves 0 and 1 complete three nodes (levels 0, 0 and 1).
        let mut shadow = 6u32.to_be_bytes().to_vec();
        shadow.extend_from_slice(&all[3 * 32..]);
        g.store.insert(key_at(2), &shadow).expect("tamper");
        assert_problem!(g, Some(Problem::Record { position: 2, reason }) if reason.contains("overlap"));
    }

    #[tokio::test]
    async fn the_party_index_is_checked_against_the_records() {
        let f = filled(8).await;
        crate::index::drop_entry(&f.store, "000.00.00.G22", 5);
        assert_problem!(f, Some(Problem::Record { position: 5, reason }) if reason.contains("party index"));
        let g = filled(8).await;
        // An entry that would show record 3 to another agency.
        let forged = crate::index::party_keys("000.00.00.A99", "", 3);
        g.store.insert(&forged[0], []).expect("tamper");
        assert_problem!(g, Some(Problem::Index { .. }));
    }

    #[tokio::test]
    async fn a_log_from_before_the_party_index_is_indexed_at_open() {
        let f = filled(12).await;
        // What an older build left: no party index, no marker.
        let mut batch = truc_store::WriteBatch::default();
        for e in f.store.scan_prefix(crate::PARTY_PREFIX) {
            batch.remove(e.expect("entry").0);
        }
        batch.remove(crate::index::PARTY_INDEX_KEY);
        f.store.apply(batch).expect("strip");
        assert!(!crate::index::has_party_index(&f.store).expect("marker"));
        assert!(verify(&f.store, Some(&f.key)).expect("verify").is_ok());
        let (signer, _) = signer();
        let log =
            AuditLog::open(f.store.clone(), "hub", Options::default(), Some(signer)).expect("log");
        assert!(crate::index::has_party_index(&f.store).expect("marker"));
        let all: Vec<u64> = crate::index::records_of(&f.store, "000.00.00.G22", 0, u64::MAX)
            .map(|r| r.expect("index"))
            .collect();
        assert_eq!(all, (0..12).collect::<Vec<_>>());
        log.append(tx(40, "OK")).await.expect("append");
        log.close().await;
        let report = verify(&f.store, None).expect("verify");
        assert!(report.is_ok(), "{:?}", report.problem);
        assert_eq!(
            crate::index::records_of(&f.store, "000.00.00.H37", 10, u64::MAX).count(),
            3
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_read_between_commits_and_its_subscription_see_each_record_once() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path()).expect("open");
        let (signer, _) = signer();
        let log = AuditLog::open(store, "hub", Options::default(), Some(signer)).expect("log");
        let mut tasks = Vec::new();
        for i in 0..300 {
            let log = log.clone();
            tasks.push(tokio::spawn(async move { log.append(tx(i, "OK")).await }));
        }
        let (seen, mut rx) = log
            .read_and_subscribe(|store| {
                let counters = read_stats(store).expect("stats");
                counters.stats.values().map(|s| s.count).sum::<u64>()
            })
            .await
            .expect("read");
        for t in tasks {
            t.await.expect("join").expect("append");
        }
        let mut later = Vec::new();
        while let Ok(r) = rx.try_recv() {
            later.push(r.0);
        }
        assert_eq!(
            seen + later.len() as u64,
            300,
            "read {seen}, then {later:?}"
        );
        assert_eq!(later, (seen..300).collect::<Vec<_>>());
        log.close().await;
    }

    #[tokio::test]
    async fn proofs_from_the_store_verify() {
        let f = filled(37).await;
        let reader = LogReader::offline(f.store.clone()).expect("reader");
        let root = reader.root(37).expect("root");
        for index in [0, 1, 17, 36] {
            let (leaf, path) = reader.inclusion_proof(index, 37).expect("proof");
            assert!(crate::merkle::verify_inclusion(
                &leaf, index, 37, &path, &root
            ));
        }
        for old in [1, 8, 20, 37] {
            let old_root = reader.root(old).expect("old root");
            let path = reader.consistency_proof(old, 37).expect("proof");
            assert!(crate::merkle::verify_consistency(
                old, 37, &old_root, &root, &path
            ));
        }
        assert!(reader.inclusion_proof(37, 37).is_err());
        assert!(reader.consistency_proof(5, 38).is_err());
        let index = reader.index_of(&format!("{:032x}", 12)).expect("index");
        let (bytes, record) = reader
            .record(index.expect("found"))
            .expect("read")
            .expect("record");
        assert_eq!(record.transaction_id, format!("{:032x}", 12));
        assert_eq!(
            leaf_hash(&bytes),
            reader.inclusion_proof(record.index, 37).expect("proof").0
        );
    }
}
