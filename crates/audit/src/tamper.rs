//! A test tool that does what a dishonest hub could do to its own stopped
//! log: edit a record, rewrite the hash chain after it, recompute the whole
//! Merkle tree, and re-sign every stored tree head with the hub's own key.
//! The result verifies on its own (`truc audit verify --data` finds nothing);
//! only a party that kept an earlier head (a witness) can tell.

use std::collections::BTreeMap;

use bytes::Bytes;
use prost::Message;
use truc_store::{Store, WriteBatch};

use crate::{
    AuditError, AuditRecord, CHUNK_PREFIX, HEAD_PREFIX,
    log::{NodeChunks, decode_head, decode_record, head_key},
    merkle::{Frontier, leaf_hash},
    sth::Signer,
};

/// Edits record `index` of a hub log with `edit` and rewrites everything
/// that depends on it, signing the new heads with `signer`. Choose a field
/// no counter depends on (a payload digest) to leave no other trace.
pub fn rewrite_record(
    store: &Store,
    index: u64,
    signer: &Signer,
    edit: impl FnOnce(&mut AuditRecord),
) -> Result<(), AuditError> {
    let mut records = Vec::new();
    for entry in crate::records::scan(store, 0) {
        let r = entry?;
        records.push((decode_record(&r.key, &r.bytes)?, r.bytes));
    }
    let Some((record, _)) = records.get_mut(usize::try_from(index).unwrap_or(usize::MAX)) else {
        return Err(AuditError::Corrupt {
            key: String::new(),
            reason: format!("no record {index} to rewrite"),
        });
    };
    edit(record);
    let mut heads = BTreeMap::new();
    for entry in store.scan_prefix(HEAD_PREFIX) {
        let (k, v) = entry?;
        let head = decode_head(&k, &v)?;
        heads.insert(head.tree_size, head);
    }
    let mut batch = WriteBatch::default();
    // The whole tree is written again, in chunks; the old chunks go.
    for entry in store.scan_prefix(CHUNK_PREFIX) {
        batch.remove(entry?.0);
    }
    let mut chunks = NodeChunks::default();
    let mut frontier = Frontier::new();
    let mut prev = [0u8; 32];
    for (i, (record, stored)) in records.iter_mut().enumerate() {
        let i = i as u64;
        if i >= index {
            record.prev_hash = Bytes::copy_from_slice(&prev);
            *stored = record.encode_to_vec();
        }
        let leaf = leaf_hash(stored);
        chunks.push(&mut batch, i, &frontier.push(leaf));
        if let Some(old) = heads.get(&frontier.size()) {
            let head = signer.sign(frontier.size(), &frontier.root(), old.timestamp_unix_ms);
            batch.insert(head_key(head.tree_size), head.encode_to_vec());
        }
        prev = leaf;
    }
    chunks.finish(&mut batch);
    let stored: Vec<Vec<u8>> = records.into_iter().map(|(_, bytes)| bytes).collect();
    crate::records::replace_all(store, &mut batch, &stored)?;
    store.apply(batch)?;
    store.flush()?;
    Ok(())
}

/// Hands the stored bytes of every record of a stopped log to `edit`,
/// which may change, drop, add or reorder them, and stores what it leaves
/// as the log's records from index 0 on, with nothing else rewritten: what
/// a careless or dishonest edit of the store leaves, for `truc audit
/// verify` to find.
pub fn edit_stored_records(
    store: &Store,
    edit: impl FnOnce(&mut Vec<Vec<u8>>),
) -> Result<(), AuditError> {
    let mut records = crate::records::scan(store, 0)
        .map(|r| r.map(|r| r.bytes))
        .collect::<Result<Vec<_>, _>>()?;
    edit(&mut records);
    let mut batch = WriteBatch::default();
    crate::records::replace_all(store, &mut batch, &records)?;
    store.apply(batch)?;
    store.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AuditLog, LogReader, Options, Transaction, sha256};

    fn signer() -> Signer {
        let key = ring::signature::Ed25519KeyPair::from_seed_unchecked(&[9; 32]).expect("seed");
        Signer::new(key).with_origin("hub.test/log")
    }

    #[tokio::test]
    async fn a_rewritten_log_verifies_alone_but_its_roots_change() {
        let dir = tempfile::tempdir().expect("dir");
        let store = Store::open(dir.path()).expect("open");
        let key = signer().public_key();
        let log =
            AuditLog::open(store.clone(), "hub", Options::default(), Some(signer())).expect("log");
        for i in 0..6u8 {
            let tx = Transaction::call(
                &format!("{i:032x}"),
                "000.00.00.H37",
                "000.00.00.G22",
                "s",
                b"x",
                1,
            );
            log.append(tx).await.expect("append");
        }
        let before = log.reader().latest_head().expect("head");
        log.close().await;
        drop(log);
        rewrite_record(&store, 2, &signer(), |r| {
            r.request_sha256 = Bytes::copy_from_slice(&sha256(b"forged"));
        })
        .expect("rewrite");
        let report = crate::verify(&store, Some(&key)).expect("verify");
        assert!(report.is_ok(), "{:?}", report.problem);
        let reader = LogReader::offline(store.clone()).expect("reader");
        let after = reader.latest_head().expect("head");
        assert_eq!(after.tree_size, before.tree_size);
        assert_ne!(after.root_hash, before.root_hash);
        assert_eq!(crate::sth::verify_tree_head(&after, &key), Ok(()));
    }
}
