//! Answers about a log: tree heads, inclusion and consistency proofs,
//! records by index or transaction id.

use std::collections::HashMap;

use truc_proto::v1::SignedTreeHead;

use crate::{
    AuditError, AuditRecord, HEAD_PREFIX, LogReader,
    log::{decode_head, decode_record, head_key, read_node, tx_key},
    merkle::{self, Hash, ProofError},
};

/// A question the log cannot answer as asked.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// Sizes or indexes beyond the log, or in the wrong order.
    #[error("{0}")]
    OutOfRange(String),
    /// No such record or head.
    #[error("{0}")]
    NotFound(String),
    /// The store failed or holds bad data.
    #[error(transparent)]
    Audit(#[from] AuditError),
}

impl From<ProofError<AuditError>> for QueryError {
    fn from(e: ProofError<AuditError>) -> Self {
        match e {
            ProofError::OutOfRange => QueryError::OutOfRange("index out of range".into()),
            ProofError::Source(e) => QueryError::Audit(e),
        }
    }
}

/// The audit paths of leaves `first..size` in the tree of `size` leaves,
/// one per leaf, for the group of records just appended at `first`: `fresh`
/// holds the complete subtrees the group completed (by level and index),
/// `stored` reads the others. The ranges the paths share (the upper levels,
/// and the older subtrees on the left) are computed or read once.
pub(crate) fn group_paths<E>(
    first: u64,
    size: u64,
    fresh: &HashMap<(u8, u64), Hash>,
    stored: &mut impl FnMut(u8, u64) -> Result<Hash, E>,
) -> Result<Vec<Vec<Hash>>, ProofError<E>> {
    let mut known: HashMap<(u64, u64), Hash> = HashMap::new();
    let mut read: HashMap<(u8, u64), Hash> = HashMap::new();
    let mut subtree = |start: u64, end: u64| -> Result<Hash, E> {
        if let Some(h) = known.get(&(start, end)) {
            return Ok(*h);
        }
        let mut hashes = Vec::new();
        for tile in merkle::tiles(start, end) {
            let h = match fresh.get(&tile).or_else(|| read.get(&tile)) {
                Some(h) => *h,
                None => {
                    let h = stored(tile.0, tile.1)?;
                    read.insert(tile, h);
                    h
                }
            };
            hashes.push(h);
        }
        let h = merkle::combine_tiles(&hashes).unwrap_or_else(merkle::empty_root);
        known.insert((start, end), h);
        Ok(h)
    };
    (first..size)
        .map(|index| merkle::inclusion_path(index, size, &mut subtree))
        .collect()
}

impl LogReader {
    /// MTH of leaves `start..end`, from the stored complete subtrees.
    pub fn subtree(&self, start: u64, end: u64) -> Result<Hash, AuditError> {
        let hashes = merkle::tiles(start, end)
            .into_iter()
            .map(|(level, index)| read_node(&self.store, level, index))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(merkle::combine_tiles(&hashes).unwrap_or_else(merkle::empty_root))
    }

    /// The root of the tree of `size` leaves.
    pub fn root(&self, size: u64) -> Result<Hash, QueryError> {
        self.check_size(size)?;
        if size == 0 {
            return Ok(merkle::empty_root());
        }
        Ok(self.subtree(0, size)?)
    }

    fn check_size(&self, size: u64) -> Result<(), QueryError> {
        let committed = self.size();
        if size > committed {
            return Err(QueryError::OutOfRange(format!(
                "tree size {size} is beyond the log's {committed} records"
            )));
        }
        Ok(())
    }

    /// The head signed at exactly `size` (0: the latest).
    pub fn tree_head(&self, size: u64) -> Result<SignedTreeHead, QueryError> {
        if size == 0 {
            return self
                .latest_head()
                .ok_or_else(|| QueryError::NotFound("no tree head signed yet".into()));
        }
        self.check_size(size)?;
        let key = head_key(size);
        match self.store.get(&key).map_err(AuditError::from)? {
            Some(v) => Ok(decode_head(&key, &v)?),
            None => Err(QueryError::NotFound(format!(
                "no tree head was signed at size {size}"
            ))),
        }
    }

    /// Every stored tree head, by size.
    pub fn tree_heads(&self) -> Result<Vec<SignedTreeHead>, AuditError> {
        self.store
            .scan_prefix(HEAD_PREFIX)
            .map(|e| {
                let (k, v) = e?;
                decode_head(&k, &v)
            })
            .collect()
    }

    /// The leaf hash and audit path of leaf `index` in the tree of `size`.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<(Hash, Vec<Hash>), QueryError> {
        self.check_size(size)?;
        if index >= size {
            return Err(QueryError::OutOfRange(format!(
                "leaf {index} is not in a tree of size {size}"
            )));
        }
        let leaf = read_node(&self.store, 0, index)?;
        let path = merkle::inclusion_path(index, size, &mut |a, b| self.subtree(a, b))?;
        Ok((leaf, path))
    }

    /// The proof that the tree of `old` leaves is a prefix of the tree of `new`.
    pub fn consistency_proof(&self, old: u64, new: u64) -> Result<Vec<Hash>, QueryError> {
        self.check_size(new)?;
        if old == 0 || old > new {
            return Err(QueryError::OutOfRange(format!(
                "no consistency proof from size {old} to size {new}: need 0 < from <= to"
            )));
        }
        Ok(merkle::consistency_path(old, new, &mut |a, b| {
            self.subtree(a, b)
        })?)
    }

    /// The leaf index of the record of a transaction.
    pub fn index_of(&self, transaction_id: &str) -> Result<Option<u64>, AuditError> {
        if !self.may_hold_id(transaction_id.as_bytes()) {
            return Ok(None);
        }
        let key = tx_key(transaction_id);
        Ok(self
            .store
            .get(&key)?
            .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
            .map(u64::from_be_bytes)
            .filter(|i| *i < self.size()))
    }

    /// The latest `n` records, newest first; a record that does not decode
    /// is skipped (logged and counted), not an error for the others.
    pub fn recent(&self, n: usize) -> Result<Vec<(u64, AuditRecord)>, AuditError> {
        let size = self.size();
        let mut out = Vec::with_capacity(n.min(1024));
        let mut unreadable = Vec::new();
        // One pass over the values that hold them, not a read per record.
        for stored in crate::records::scan(&self.store, size.saturating_sub(n as u64)) {
            let decoded = stored.and_then(|r| {
                let record = decode_record(&r.key, &r.bytes)?;
                Ok((r.index, record))
            });
            match decoded {
                Ok((i, _)) if i >= size => break,
                Ok(record) => out.push(record),
                Err(AuditError::Corrupt { key, reason }) => {
                    unreadable.push(crate::Unreadable { key, reason });
                }
                Err(e) => return Err(e),
            }
        }
        out.reverse();
        crate::note_unreadable("recent records", &unreadable);
        Ok(out)
    }

    /// The stored bytes and the decoded record at `index`.
    pub fn record(&self, index: u64) -> Result<Option<(Vec<u8>, AuditRecord)>, AuditError> {
        if index >= self.size() {
            return Ok(None);
        }
        match crate::records::read(&self.store, index)? {
            Some(r) => {
                let record = decode_record(&r.key, &r.bytes)?;
                Ok(Some((r.bytes, record)))
            }
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::merkle::{Frontier, leaf_hash, root_from_leaf_hashes};

    /// For every tree of up to 40 leaves and every group ending it, the
    /// group's paths are the RFC 9162 paths, reading from the store only
    /// nodes completed before the group, each at most once, and those nodes
    /// are all in the frontier the writer held before the group.
    #[test]
    fn a_groups_paths_are_the_rfc_paths_and_need_only_the_frontier_before_it() {
        let leaves: Vec<Hash> = (0u64..40).map(|i| leaf_hash(&i.to_be_bytes())).collect();
        for size in 1..=40u64 {
            for first in 0..size {
                let mut frontier = Frontier::new();
                let (mut old, mut fresh) = (HashMap::new(), HashMap::new());
                for (i, leaf) in leaves[..size as usize].iter().enumerate() {
                    let into = if (i as u64) < first {
                        &mut old
                    } else {
                        &mut fresh
                    };
                    for (level, at, hash) in frontier.push(*leaf) {
                        into.insert((level, at), hash);
                    }
                }
                // A node the store cannot give fails the paths, whole.
                if first > 0 {
                    let failed = group_paths(first, size, &fresh, &mut |_, _| Err("unreadable"));
                    assert!(matches!(failed, Err(ProofError::Source("unreadable"))));
                }
                let mut reads = Vec::new();
                let paths = group_paths(first, size, &fresh, &mut |level, at| {
                    reads.push((level, at));
                    old.get(&(level, at)).copied().ok_or("not stored")
                })
                .expect("paths");
                let mut distinct = reads.clone();
                distinct.sort_unstable();
                distinct.dedup();
                assert_eq!(distinct.len(), reads.len(), "{first}..{size}: read twice");
                // The older nodes read are all in the frontier of `first`
                // leaves, which the writer holds: it need read none.
                let mut before = Frontier::new();
                for leaf in &leaves[..first as usize] {
                    before.push(*leaf);
                }
                let held: HashMap<(u8, u64), Hash> =
                    before.subtrees().map(|(l, at, h)| ((l, at), h)).collect();
                assert_eq!(held.len() as u32, first.count_ones());
                let from_frontier = group_paths(first, size, &fresh, &mut |level, at| {
                    held.get(&(level, at)).copied().ok_or("not in the frontier")
                })
                .expect("paths from the frontier");
                assert_eq!(from_frontier, paths, "{first}..{size}");
                assert_eq!(paths.len() as u64, size - first);
                for (index, path) in (first..).zip(&paths) {
                    let want = merkle::inclusion_path::<()>(index, size, &mut |a, b| {
                        Ok(root_from_leaf_hashes(&leaves[a as usize..b as usize]))
                    })
                    .expect("reference");
                    assert_eq!(path, &want, "leaf {index} of {size}, group from {first}");
                }
            }
        }
    }
}
