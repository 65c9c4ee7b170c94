//! What witnessing the hub's log leaves in the stores: on the hub, the
//! cosignatures nodes returned (a few per node); on a node, the latest hub
//! head it verified and the evidence of any contradiction it found. The
//! node's task that fills them lives in the node crate; offline checks read
//! them from here.

use prost::Message;
use truc_proto::v1::{Cosignature, SignedTreeHead, WitnessEvidence};
use truc_store::{Store, WriteBatch};

use crate::AuditError;

/// Key prefix of cosignatures on the hub: name, 0x00, big-endian tree size.
const COSIGNATURE_PREFIX: &[u8] = b"audit/w/";
/// Cosignatures kept per witness on the hub (its latest, by tree size).
pub const KEEP_PER_WITNESS: usize = 16;

/// The node's latest verified head of the hub's log (of any replica: the
/// one verified last; kept for readers of one log).
const LATEST_KEY: &[u8] = b"witness/latest";
/// Key prefix of the latest verified head of each log (hub replica),
/// followed by the log's origin.
const LATEST_OF_PREFIX: &[u8] = b"witness/latest/";
/// Key prefix of the node's evidence, followed by a big-endian sequence.
const EVIDENCE_PREFIX: &[u8] = b"witness/evidence/";
/// Evidence entries a node keeps: the first conflicts are the ones that
/// matter, and a hostile hub must not fill the node's disk.
pub const MAX_EVIDENCE: usize = 16;

fn corrupt(key: &[u8], what: &str, e: prost::DecodeError) -> AuditError {
    AuditError::Corrupt {
        key: hex::encode(key),
        reason: format!("undecodable {what}: {e}"),
    }
}

fn cosignature_key(name: &str, size: u64) -> Vec<u8> {
    let mut key = witness_prefix(name);
    key.extend_from_slice(&size.to_be_bytes());
    key
}

fn witness_prefix(name: &str) -> Vec<u8> {
    let mut key = COSIGNATURE_PREFIX.to_vec();
    key.extend_from_slice(name.as_bytes());
    key.push(0);
    key
}

/// Stores a (checked) cosignature of the head of `size` when it is of a
/// larger head than the witness's latest stored one (a witness cosigns ever
/// larger heads; anything else is dropped, so a node can cause at most one
/// write per head the hub signs), dropping its oldest beyond
/// [`KEEP_PER_WITNESS`]. True when stored; durable when it returns.
pub fn store_cosignature(store: &Store, size: u64, c: &Cosignature) -> Result<bool, AuditError> {
    let prefix = witness_prefix(&c.name);
    let mut kept: Vec<Vec<u8>> = Vec::new();
    for entry in store.scan_prefix(&prefix) {
        kept.push(entry?.0);
    }
    let key = cosignature_key(&c.name, size);
    // Keys sort by size (big-endian after the name's prefix).
    if kept.last().is_some_and(|last| *last >= key) {
        return Ok(false);
    }
    let mut batch = WriteBatch::default();
    batch.insert(&key, c.encode_to_vec());
    kept.push(key);
    let excess = kept.len().saturating_sub(KEEP_PER_WITNESS);
    for k in kept.iter().take(excess) {
        batch.remove(k);
    }
    store.apply(batch)?;
    store.flush()?;
    Ok(true)
}

/// The stored cosignatures of the head of `size` by the witnesses `names`.
pub fn cosignatures_of<'a>(
    store: &Store,
    size: u64,
    names: impl IntoIterator<Item = &'a str>,
) -> Result<Vec<Cosignature>, AuditError> {
    let mut out = Vec::new();
    for name in names {
        let key = cosignature_key(name, size);
        if let Some(v) = store.get(&key)? {
            out.push(
                Cosignature::decode(v.as_slice()).map_err(|e| corrupt(&key, "cosignature", e))?,
            );
        }
    }
    Ok(out)
}

/// Number of cosignatures stored by `name` (for tests of the bound).
pub fn cosignature_count(store: &Store, name: &str) -> usize {
    store.scan_prefix(&witness_prefix(name)).count()
}

/// The latest head the node verified, if any.
pub fn latest(store: &Store) -> Result<Option<SignedTreeHead>, AuditError> {
    match store.get(LATEST_KEY)? {
        Some(v) => Ok(Some(
            SignedTreeHead::decode(v.as_slice())
                .map_err(|e| corrupt(LATEST_KEY, "witnessed head", e))?,
        )),
        None => Ok(None),
    }
}

fn latest_of_key(origin: &str) -> Vec<u8> {
    let mut key = LATEST_OF_PREFIX.to_vec();
    key.extend_from_slice(origin.as_bytes());
    key
}

/// The latest head the node verified of the log `origin` (one hub
/// replica's), if any; a head stored by an earlier build, which kept one
/// log, counts for its origin.
pub fn latest_of(store: &Store, origin: &str) -> Result<Option<SignedTreeHead>, AuditError> {
    let key = latest_of_key(origin);
    match store.get(&key)? {
        Some(v) => Ok(Some(
            SignedTreeHead::decode(v.as_slice()).map_err(|e| corrupt(&key, "witnessed head", e))?,
        )),
        None => Ok(latest(store)?.filter(|h| h.origin == origin)),
    }
}

/// The latest verified head of every log the node witnesses, by origin.
pub fn latest_heads(store: &Store) -> Result<Vec<SignedTreeHead>, AuditError> {
    let mut heads = Vec::new();
    for entry in store.scan_prefix(LATEST_OF_PREFIX) {
        let (k, v) = entry?;
        heads.push(
            SignedTreeHead::decode(v.as_slice()).map_err(|e| corrupt(&k, "witnessed head", e))?,
        );
    }
    if let Some(old) = latest(store)? {
        if !heads.iter().any(|h| h.origin == old.origin) {
            heads.push(old);
        }
    }
    Ok(heads)
}

/// Keeps `head` (with its cosignatures) as the latest verified of its log
/// (and as the latest of any); durable when it returns.
pub fn set_latest(store: &Store, head: &SignedTreeHead) -> Result<(), AuditError> {
    let bytes = head.encode_to_vec();
    let mut batch = WriteBatch::default();
    batch.insert(LATEST_KEY, bytes.clone());
    batch.insert(latest_of_key(&head.origin), bytes);
    store.apply(batch)?;
    store.flush()?;
    Ok(())
}

/// Keeps evidence of a contradiction (up to [`MAX_EVIDENCE`] entries);
/// durable when it returns. False when the store is full of evidence already.
pub fn add_evidence(store: &Store, evidence: &WitnessEvidence) -> Result<bool, AuditError> {
    let n = store.scan_prefix(EVIDENCE_PREFIX).count();
    if n >= MAX_EVIDENCE {
        return Ok(false);
    }
    let next = match store.last_with_prefix(EVIDENCE_PREFIX)? {
        Some((k, _)) => k
            .strip_prefix(EVIDENCE_PREFIX)
            .and_then(|t| <[u8; 8]>::try_from(t).ok())
            .map_or(0, |t| u64::from_be_bytes(t) + 1),
        None => 0,
    };
    let mut key = EVIDENCE_PREFIX.to_vec();
    key.extend_from_slice(&next.to_be_bytes());
    store.insert(&key, evidence.encode_to_vec())?;
    store.flush()?;
    Ok(true)
}

/// Every piece of evidence the node keeps, oldest first.
pub fn evidence(store: &Store) -> Result<Vec<WitnessEvidence>, AuditError> {
    store
        .scan_prefix(EVIDENCE_PREFIX)
        .map(|e| {
            let (k, v) = e?;
            WitnessEvidence::decode(v.as_slice()).map_err(|e| corrupt(&k, "witness evidence", e))
        })
        .collect()
}

/// What a hub's log says about one head a witness kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WitnessedCheck {
    /// The head's tree size.
    pub size: u64,
    /// None: the hub's records give the same root; otherwise why not.
    pub problem: Option<String>,
}

/// Checks the heads a witness kept against a hub's stored records: each
/// must be signed by the hub (when its key is given) and be the root of the
/// first `size` records, recomputed from the records themselves (never from
/// the hub's stored tree or heads, which a dishonest hub rewrites too).
pub fn check_witnessed(
    hub: &Store,
    heads: &[SignedTreeHead],
    public_key: Option<&[u8]>,
) -> Result<Vec<WitnessedCheck>, AuditError> {
    use std::collections::BTreeMap;
    let mut wanted: BTreeMap<u64, Option<crate::merkle::Hash>> =
        heads.iter().map(|h| (h.tree_size, None)).collect();
    let mut frontier = crate::merkle::Frontier::new();
    let last = wanted.keys().next_back().copied().unwrap_or(0);
    if let Some(r) = wanted.get_mut(&0) {
        *r = Some(crate::merkle::empty_root());
    }
    for entry in crate::read_records(hub, 0) {
        if frontier.size() >= last {
            break;
        }
        let (_, leaf) = entry?;
        frontier.push(leaf);
        if let Some(r) = wanted.get_mut(&frontier.size()) {
            *r = Some(frontier.root());
        }
    }
    let records = frontier.size();
    Ok(heads
        .iter()
        .map(|head| {
            let problem = if let Some(e) = public_key
                .and_then(|k| crate::sth::verify_tree_head(head, k).err())
            {
                Some(format!("the kept head is not the hub's: {e}"))
            } else {
                match wanted.get(&head.tree_size).copied().flatten() {
                    None => Some(format!(
                        "the hub's log has {records} records, fewer than the {} of a head it signed",
                        head.tree_size
                    )),
                    Some(root) if root.as_slice() != head.root_hash.as_ref() => Some(format!(
                        "the hub's first {} records give root {}, but it signed root {} for them",
                        head.tree_size,
                        hex::encode(root),
                        hex::encode(&head.root_hash)
                    )),
                    Some(_) => None,
                }
            };
            WitnessedCheck {
                size: head.tree_size,
                problem,
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cosig(name: &str, t: u64) -> Cosignature {
        Cosignature {
            name: name.into(),
            timestamp: t,
            ..Cosignature::default()
        }
    }

    #[test]
    fn cosignatures_are_bounded_per_witness() {
        let dir = tempfile::tempdir().expect("dir");
        let store = Store::open(dir.path()).expect("store");
        for size in 1..=40u64 {
            assert!(store_cosignature(&store, size, &cosig("a", size)).expect("store"));
        }
        // Only ever larger heads: older or equal ones are dropped.
        assert!(!store_cosignature(&store, 40, &cosig("a", 99)).expect("store"));
        assert!(!store_cosignature(&store, 3, &cosig("a", 99)).expect("store"));
        assert!(store_cosignature(&store, 3, &cosig("b", 1)).expect("store"));
        assert!(!store_cosignature(&store, 3, &cosig("b", 2)).expect("store"));
        assert_eq!(cosignature_count(&store, "a"), KEEP_PER_WITNESS);
        assert_eq!(cosignature_count(&store, "b"), 1);
        // The latest are kept.
        assert_eq!(
            cosignatures_of(&store, 40, ["a", "b"]).expect("read").len(),
            1
        );
        assert!(cosignatures_of(&store, 10, ["a"]).expect("read").is_empty());
        let at3 = cosignatures_of(&store, 3, ["a", "b"]).expect("read");
        assert_eq!(at3, vec![cosig("b", 1)]);
        assert_eq!(
            cosignatures_of(&store, 40, ["a"]).expect("read"),
            vec![cosig("a", 40)]
        );
        // A name that is a prefix of another does not see its entries.
        store_cosignature(&store, 40, &cosig("ab", 1)).expect("store");
        assert_eq!(cosignature_count(&store, "a"), KEEP_PER_WITNESS);
    }

    #[test]
    fn evidence_is_bounded_and_kept_in_order() {
        let dir = tempfile::tempdir().expect("dir");
        let store = Store::open(dir.path()).expect("store");
        for i in 0..(MAX_EVIDENCE as u64 + 5) {
            let e = WitnessEvidence {
                detected_unix_ms: i,
                ..WitnessEvidence::default()
            };
            assert_eq!(
                add_evidence(&store, &e).expect("add"),
                i < MAX_EVIDENCE as u64
            );
        }
        let all = evidence(&store).expect("read");
        assert_eq!(all.len(), MAX_EVIDENCE);
        assert!(
            all.iter()
                .enumerate()
                .all(|(i, e)| e.detected_unix_ms == i as u64)
        );
        assert_eq!(latest(&store).expect("read"), None);
        let head = SignedTreeHead {
            tree_size: 3,
            ..SignedTreeHead::default()
        };
        set_latest(&store, &head).expect("set");
        assert_eq!(latest(&store).expect("read"), Some(head));
    }

    #[tokio::test]
    async fn witnessed_heads_are_checked_against_the_records() {
        use crate::{AuditLog, Options, Transaction, sth::Signer};
        let signer = || {
            let key = ring::signature::Ed25519KeyPair::from_seed_unchecked(&[4; 32]).expect("seed");
            Signer::new(key).with_origin("hub.test/log")
        };
        let key = signer().public_key();
        let dir = tempfile::tempdir().expect("dir");
        let store = Store::open(dir.path()).expect("store");
        let log =
            AuditLog::open(store.clone(), "hub", Options::default(), Some(signer())).expect("log");
        let mut heads = Vec::new();
        for i in 0..5u8 {
            let tx = Transaction::call(
                &format!("{i:032x}"),
                "000.00.00.H37",
                "000.00.00.G22",
                "s",
                b"x",
                1,
            );
            heads.push(
                log.append(tx)
                    .await
                    .expect("append")
                    .tree_head
                    .expect("head"),
            );
        }
        log.close().await;
        drop(log);
        let ok = check_witnessed(&store, &heads, Some(&key)).expect("check");
        assert!(ok.iter().all(|c| c.problem.is_none()), "{ok:?}");
        // A head beyond the log, and one signed by another key.
        let beyond = signer().sign(9, &[0; 32], 1);
        let foreign = Signer::generate()
            .expect("key")
            .with_origin("hub.test/log")
            .sign(2, &[0; 32], 1);
        let found = check_witnessed(&store, &[beyond, foreign], Some(&key)).expect("check");
        assert!(
            found[0]
                .problem
                .as_deref()
                .is_some_and(|p| p.contains("fewer")),
            "{found:?}"
        );
        assert!(
            found[1]
                .problem
                .as_deref()
                .is_some_and(|p| p.contains("not the hub's")),
            "{found:?}"
        );
        // After a rewrite of record 3, heads from size 4 on no longer match.
        crate::tamper::rewrite_record(&store, 3, &signer(), |r| r.latency_us += 1)
            .expect("rewrite");
        let after = check_witnessed(&store, &heads, Some(&key)).expect("check");
        let bad: Vec<u64> = after
            .iter()
            .filter(|c| c.problem.is_some())
            .map(|c| c.size)
            .collect();
        assert_eq!(bad, [4, 5]);
    }
}
