//! Where records are stored: a commit group's records as a few values
//! instead of one key each ([ADR 0019](../../../docs/adr/0019-records-by-group.md)).
//!
//! A value's key is [`GROUP_PREFIX`] and its first record's index (8 bytes,
//! big-endian). The value is the number of records (4 bytes, big-endian),
//! then each record's encoding, preceded by its length (4 bytes,
//! big-endian). A value is closed once it holds [`GROUP_BYTES`], so that a
//! reader of one record never copies much more, and a leaf of sled's tree
//! stays well under the size sled writes as a file of its own.
//!
//! Logs of earlier builds keep a key per record ([`RECORD_PREFIX`]); those
//! are still read, and come before any value of records.

use truc_store::{Store, WriteBatch};

use crate::{AuditError, GROUP_PREFIX, RECORD_PREFIX};

/// A value of records is closed once its records take this many bytes.
pub(crate) const GROUP_BYTES: usize = 4096;

/// One stored record: its index, the key it is stored under (for errors)
/// and its bytes, which its leaf hash is of.
#[derive(Debug, Clone)]
pub(crate) struct StoredRecord {
    pub(crate) index: u64,
    pub(crate) key: Vec<u8>,
    pub(crate) bytes: Vec<u8>,
}

/// The key of record `index` in a log of an earlier build.
pub(crate) fn record_key(index: u64) -> Vec<u8> {
    let mut key = RECORD_PREFIX.to_vec();
    key.extend_from_slice(&index.to_be_bytes());
    key
}

fn group_key(first: u64) -> Vec<u8> {
    let mut key = GROUP_PREFIX.to_vec();
    key.extend_from_slice(&first.to_be_bytes());
    key
}

fn index_in(prefix: &[u8], key: &[u8]) -> Option<u64> {
    let tail = key.strip_prefix(prefix)?;
    Some(u64::from_be_bytes(tail.try_into().ok()?))
}

/// Records being put into a batch, one after the other.
#[derive(Default)]
pub(crate) struct GroupWriter {
    first: u64,
    count: u32,
    value: Vec<u8>,
}

impl GroupWriter {
    /// Adds record `index` (the one after the last added, if any).
    pub(crate) fn push(&mut self, batch: &mut WriteBatch, index: u64, bytes: &[u8]) {
        if self.count == 0 {
            self.first = index;
            self.value.clear();
            self.value.extend_from_slice(&[0; 4]);
        }
        let len = u32::try_from(bytes.len()).expect("a record is far below 4 GiB");
        self.value.extend_from_slice(&len.to_be_bytes());
        self.value.extend_from_slice(bytes);
        self.count += 1;
        if self.value.len() >= GROUP_BYTES {
            self.finish(batch);
        }
    }

    /// Puts the value so far into `batch`.
    pub(crate) fn finish(&mut self, batch: &mut WriteBatch) {
        if self.count == 0 {
            return;
        }
        self.value[..4].copy_from_slice(&self.count.to_be_bytes());
        batch.insert(group_key(self.first), &self.value);
        self.count = 0;
    }
}

/// The records of one stored value, checked to be framed as written.
fn decode_group(key: &[u8], value: &[u8]) -> Result<(u64, Vec<Vec<u8>>), AuditError> {
    let corrupt = |reason: String| AuditError::Corrupt {
        key: hex::encode(key),
        reason,
    };
    let first =
        index_in(GROUP_PREFIX, key).ok_or_else(|| corrupt("not a key of records".into()))?;
    let take4 = |at: usize| -> Option<u32> {
        Some(u32::from_be_bytes(value.get(at..at + 4)?.try_into().ok()?))
    };
    let count = take4(0)
        .filter(|n| *n > 0)
        .ok_or_else(|| corrupt("a value of records without records".into()))?;
    if first.checked_add(u64::from(count)).is_none() {
        return Err(corrupt("records beyond the largest index".into()));
    }
    let mut records = Vec::with_capacity(count.min(4096) as usize);
    let mut at = 4;
    for n in 0..count {
        let bytes = take4(at)
            .and_then(|len| value.get(at + 4..(at + 4).checked_add(len as usize)?))
            .ok_or_else(|| corrupt(format!("record {n} of {count} runs past the value's end")))?;
        at += 4 + bytes.len();
        records.push(bytes.to_vec());
    }
    if at != value.len() {
        return Err(corrupt(format!(
            "{} bytes after the value's {count} records",
            value.len() - at
        )));
    }
    Ok((first, records))
}

/// Every stored record from `from` on, in the order of their keys: those of
/// an earlier build's keys first, then those of the values of records. A
/// value that cannot be read is one error, where its records would be.
pub(crate) fn scan(
    store: &Store,
    from: u64,
) -> impl Iterator<Item = Result<StoredRecord, AuditError>> + use<> {
    let single = store
        .scan_range(&record_key(from), &end_of(RECORD_PREFIX))
        .map(|entry| {
            let (key, bytes) = entry?;
            let index = index_in(RECORD_PREFIX, &key).ok_or_else(|| AuditError::Corrupt {
                key: hex::encode(&key),
                reason: "not a record key".into(),
            })?;
            Ok(StoredRecord { index, key, bytes })
        });
    // The value that holds `from` starts at or before it; if the store
    // cannot say which, every value is read and those before are skipped.
    let start = match group_at(store, from) {
        Ok(Some((key, _))) => key,
        Ok(None) => group_key(from),
        Err(_) => GROUP_PREFIX.to_vec(),
    };
    let grouped = store
        .scan_range(&start, &end_of(GROUP_PREFIX))
        .flat_map(|entry| -> Vec<Result<StoredRecord, AuditError>> {
            let (key, value) = match entry {
                Ok(e) => e,
                Err(e) => return vec![Err(e.into())],
            };
            match decode_group(&key, &value) {
                Ok((first, records)) => (first..)
                    .zip(records)
                    .map(|(index, bytes)| {
                        Ok(StoredRecord {
                            index,
                            key: key.clone(),
                            bytes,
                        })
                    })
                    .collect(),
                Err(e) => vec![Err(e)],
            }
        })
        .filter(move |r| r.as_ref().map_or(true, |r| r.index >= from));
    single.chain(grouped)
}

/// The least key above every key that starts with `prefix`.
fn end_of(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    end
}

/// The last value of records whose first index is at most `index`.
fn group_at(store: &Store, index: u64) -> Result<Option<truc_store::Entry>, AuditError> {
    let mut upper = group_key(index);
    // The least key above the index's own is it followed by a zero byte.
    upper.push(0);
    Ok(store
        .scan_range(GROUP_PREFIX, &upper)
        .next_back()
        .transpose()?)
}

/// Record `index` as stored, if the log holds it.
pub(crate) fn read(store: &Store, index: u64) -> Result<Option<StoredRecord>, AuditError> {
    if let Some((key, value)) = group_at(store, index)? {
        let (first, mut records) = decode_group(&key, &value)?;
        if let Some(at) = usize::try_from(index - first)
            .ok()
            .filter(|at| *at < records.len())
        {
            return Ok(Some(StoredRecord {
                index,
                key,
                bytes: records.swap_remove(at),
            }));
        }
    }
    let key = record_key(index);
    Ok(store
        .get(&key)?
        .map(|bytes| StoredRecord { index, key, bytes }))
}

/// The number of records the log holds: one past the last stored index.
pub(crate) fn stored_size(store: &Store) -> Result<u64, AuditError> {
    if let Some((key, value)) = store.last_with_prefix(GROUP_PREFIX)? {
        let (first, records) = decode_group(&key, &value)?;
        return Ok(first + records.len() as u64);
    }
    Ok(match store.last_with_prefix(RECORD_PREFIX)? {
        Some((key, _)) => index_in(RECORD_PREFIX, &key).map_or(0, |i| i + 1),
        None => 0,
    })
}

/// Puts `records` into `batch` as the log's stored records from index 0
/// on, in place of every record stored before (the tamper tools; a writer
/// only adds).
pub(crate) fn replace_all(
    store: &Store,
    batch: &mut WriteBatch,
    records: &[Vec<u8>],
) -> Result<(), AuditError> {
    for prefix in [RECORD_PREFIX, GROUP_PREFIX] {
        for entry in store.scan_prefix(prefix) {
            batch.remove(entry?.0);
        }
    }
    let mut writer = GroupWriter::default();
    for (index, bytes) in (0u64..).zip(records) {
        writer.push(batch, index, bytes);
    }
    writer.finish(batch);
    Ok(())
}

/// Rewrites the log's stored records one key each, as earlier builds
/// stored them (tests of reading such logs).
#[cfg(test)]
pub(crate) fn as_earlier_builds(store: &Store) {
    let records: Vec<StoredRecord> = scan(store, 0).collect::<Result<_, _>>().expect("scan");
    let mut batch = WriteBatch::default();
    for entry in store.scan_prefix(GROUP_PREFIX) {
        batch.remove(entry.expect("scan").0);
    }
    for r in records {
        batch.insert(record_key(r.index), r.bytes);
    }
    store.apply(batch).expect("apply");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(i: u64) -> Vec<u8> {
        // Sizes from 0 to several hundred bytes, so that values close at
        // different counts.
        vec![i as u8; (i as usize * 37) % 700]
    }

    fn written(store: &Store, groups: &[(u64, u64)]) {
        for &(first, end) in groups {
            let mut batch = WriteBatch::default();
            let mut w = GroupWriter::default();
            for i in first..end {
                w.push(&mut batch, i, &record(i));
            }
            w.finish(&mut batch);
            store.apply(batch).expect("apply");
        }
    }

    #[test]
    fn records_read_back_one_by_one_and_in_order_from_any_index() {
        let dir = tempfile::tempdir().expect("dir");
        let store = Store::open(dir.path()).expect("open");
        assert_eq!(stored_size(&store).expect("size"), 0);
        assert!(read(&store, 0).expect("read").is_none());
        written(&store, &[(0, 1), (1, 40), (40, 41), (41, 100)]);
        assert!(
            store.scan_prefix(GROUP_PREFIX).count() < 40,
            "several records per value"
        );
        assert_eq!(stored_size(&store).expect("size"), 100);
        for i in 0..100 {
            let r = read(&store, i).expect("read").expect("stored");
            assert_eq!((r.index, r.bytes), (i, record(i)));
        }
        assert!(read(&store, 100).expect("read").is_none());
        for from in [0, 1, 17, 40, 41, 99, 100, 500] {
            let got: Vec<u64> = scan(&store, from).map(|r| r.expect("read").index).collect();
            assert_eq!(got, (from.min(100)..100).collect::<Vec<_>>(), "from {from}");
        }
    }

    #[test]
    fn a_log_of_an_earlier_build_reads_on_and_grows_in_values() {
        let dir = tempfile::tempdir().expect("dir");
        let store = Store::open(dir.path()).expect("open");
        for i in 0..5 {
            store.insert(record_key(i), record(i)).expect("insert");
        }
        assert_eq!(stored_size(&store).expect("size"), 5);
        written(&store, &[(5, 9)]);
        assert_eq!(stored_size(&store).expect("size"), 9);
        let all: Vec<(u64, Vec<u8>)> = scan(&store, 0)
            .map(|r| r.map(|r| (r.index, r.bytes)).expect("read"))
            .collect();
        assert_eq!(all, (0..9).map(|i| (i, record(i))).collect::<Vec<_>>());
        assert_eq!(
            scan(&store, 3)
                .map(|r| r.expect("read").index)
                .collect::<Vec<_>>(),
            (3..9).collect::<Vec<_>>()
        );
        assert_eq!(
            read(&store, 2).expect("read").expect("old").bytes,
            record(2)
        );
        assert_eq!(
            read(&store, 7).expect("read").expect("new").bytes,
            record(7)
        );
    }

    /// Each way a value can be cut or padded is an error where its records
    /// would be, not a panic or a short read.
    #[test]
    fn a_badly_framed_value_is_an_error_in_its_place() {
        let dir = tempfile::tempdir().expect("dir");
        let store = Store::open(dir.path()).expect("open");
        written(&store, &[(0, 3), (3, 6)]);
        let (key, good) = store
            .scan_prefix(GROUP_PREFIX)
            .next_back()
            .expect("a value")
            .expect("read");
        let mut padded = good.clone();
        padded.push(0);
        let mut huge_count = good.clone();
        huge_count[..4].copy_from_slice(&u32::MAX.to_be_bytes());
        let mut long_record = good.clone();
        long_record[4..8].copy_from_slice(&u32::MAX.to_be_bytes());
        for bad in [
            Vec::new(),
            vec![0, 0, 0, 0],
            good[..good.len() - 1].to_vec(),
            padded,
            huge_count,
            long_record,
        ] {
            store.insert(&key, &bad).expect("tamper");
            let items: Vec<_> = scan(&store, 0).collect();
            assert_eq!(items.len(), 4, "three records, then one error");
            assert!(
                matches!(&items[3], Err(AuditError::Corrupt { .. })),
                "{:?}",
                items[3]
            );
            assert!(matches!(read(&store, 4), Err(AuditError::Corrupt { .. })));
            assert!(read(&store, 1).expect("the other value").is_some());
        }
    }

    #[test]
    fn replacing_the_records_leaves_only_the_new_ones() {
        let dir = tempfile::tempdir().expect("dir");
        let store = Store::open(dir.path()).expect("open");
        store.insert(record_key(0), b"old").expect("insert");
        written(&store, &[(1, 20)]);
        let mut batch = WriteBatch::default();
        replace_all(&store, &mut batch, &[b"a".to_vec(), b"b".to_vec()]).expect("replace");
        store.apply(batch).expect("apply");
        let all: Vec<Vec<u8>> = scan(&store, 0).map(|r| r.expect("read").bytes).collect();
        assert_eq!(all, [b"a".to_vec(), b"b".to_vec()]);
        assert_eq!(stored_size(&store).expect("size"), 2);
    }
}
