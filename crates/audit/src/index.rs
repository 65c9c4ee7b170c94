//! The party index of a hub's log: for each agency, the indexes of the
//! records where it is client or provider, so that a listing filtered by
//! agency (or limited to what a node may see) reads only those records.
//!
//! Keys: the prefix, the agency (cut like a counter field, with its length
//! as two big-endian bytes), then the record index (8 bytes, big-endian), so
//! one agency's records are one range of keys in log order. Values are empty.
//! Entries are written in the same batch as their record. A log written
//! before the index existed is indexed once, when it is opened; a marker key
//! records that it was, so a crash during that pass redoes it.

use std::iter::Peekable;

use truc_store::{Store, WriteBatch};

use crate::{
    AuditError, AuditRecord, PARTY_PREFIX, RECORD_PREFIX,
    counts::{KEY_FIELD_MAX, Unreadable, cap, successor},
    log::{decode_record, index_of_key},
};

/// Set once every record of the log is in the party index.
pub(crate) const PARTY_INDEX_KEY: &[u8] = b"audit/m/party-index";

/// Records indexed per batch when a log is indexed at open.
const BUILD_BATCH: usize = 4096;

fn agency_prefix(agency: &str) -> Vec<u8> {
    let agency = cap(agency, KEY_FIELD_MAX);
    let mut key = PARTY_PREFIX.to_vec();
    // KEY_FIELD_MAX < 2^16.
    key.extend_from_slice(&(agency.len() as u16).to_be_bytes());
    key.extend_from_slice(agency.as_bytes());
    key
}

fn party_key(agency: &str, index: u64) -> Vec<u8> {
    let mut key = agency_prefix(agency);
    key.extend_from_slice(&index.to_be_bytes());
    key
}

/// The index keys of a record between `client` and `provider` at `index`
/// (one per distinct, non-empty party).
pub(crate) fn party_keys(client: &str, provider: &str, index: u64) -> Vec<Vec<u8>> {
    let mut keys = Vec::with_capacity(2);
    for agency in [client, provider] {
        if agency.is_empty() {
            continue;
        }
        let key = party_key(agency, index);
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    keys
}

/// Indexes every record of a log that has no complete party index yet, in
/// one pass, then sets the marker. Records that do not decode cannot be
/// indexed: they are skipped and logged (`truc audit verify` reports them).
pub(crate) fn ensure_party_index(store: &Store) -> Result<(), AuditError> {
    if store.get(PARTY_INDEX_KEY)?.is_some() {
        return Ok(());
    }
    let mut batch = WriteBatch::default();
    let mut indexed = 0u64;
    let mut unreadable = Vec::new();
    for entry in store.scan_prefix(RECORD_PREFIX) {
        let (key, value) = entry?;
        let record = index_of_key(&key)
            .ok_or_else(|| AuditError::Corrupt {
                key: hex::encode(&key),
                reason: "not a record key".into(),
            })
            .and_then(|i| decode_record(&key, &value).map(|r| (i, r)));
        match record {
            Ok((i, r)) => {
                for k in party_keys(&r.client_agency, &r.provider_agency, i) {
                    batch.insert(k, []);
                }
                indexed += 1;
            }
            Err(e) => unreadable.push(Unreadable::new(&key, e.to_string())),
        }
        if batch.len() >= BUILD_BATCH {
            store.apply(std::mem::take(&mut batch))?;
        }
    }
    crate::counts::note_unreadable("records to index", &unreadable);
    batch.insert(PARTY_INDEX_KEY, b"1");
    store.apply(batch)?;
    store.flush()?;
    tracing::info!(records = indexed, "indexed the audit log by party");
    Ok(())
}

/// Whether the log keeps a party index.
pub fn has_party_index(store: &Store) -> Result<bool, AuditError> {
    Ok(store.get(PARTY_INDEX_KEY)?.is_some())
}

/// A stream of record indexes, ascending.
pub type Indexes = Box<dyn Iterator<Item = Result<u64, AuditError>> + Send>;

/// The indexes `from..end` of the records where `agency` is a party,
/// ascending, from the party index (only its keys are read).
pub fn records_of(store: &Store, agency: &str, from: u64, end: u64) -> Indexes {
    let prefix = agency_prefix(agency);
    let start = [prefix.as_slice(), &from.to_be_bytes()].concat();
    let stop = if end == u64::MAX {
        successor(prefix.clone())
    } else {
        [prefix.as_slice(), &end.to_be_bytes()].concat()
    };
    let skip = prefix.len();
    Box::new(
        store
            .scan_range(&start, &stop)
            .filter_map(move |e| match e {
                Err(e) => Some(Err(e.into())),
                Ok((key, _)) => match key.get(skip..).and_then(|t| <[u8; 8]>::try_from(t).ok()) {
                    Some(i) => Some(Ok(u64::from_be_bytes(i))),
                    None => {
                        crate::counts::note_unreadable(
                            "the party index",
                            &[Unreadable::new(&key, "malformed party index key")],
                        );
                        None
                    }
                },
            }),
    )
}

/// The ascending union of ascending streams, each index once.
pub fn union(streams: Vec<Indexes>) -> Indexes {
    let mut streams: Vec<Peekable<Indexes>> = streams.into_iter().map(|s| s.peekable()).collect();
    Box::new(std::iter::from_fn(move || {
        // An error ends nothing else: hand it out first.
        for s in streams.iter_mut() {
            if let Some(Err(_)) = s.peek() {
                return s.next();
            }
        }
        let least = streams
            .iter_mut()
            .filter_map(|s| match s.peek() {
                Some(Ok(i)) => Some(*i),
                _ => None,
            })
            .min()?;
        for s in streams.iter_mut() {
            if let Some(Ok(i)) = s.peek() {
                if *i == least {
                    s.next();
                }
            }
        }
        Some(Ok(least))
    }))
}

/// The ascending intersection of two ascending streams.
pub fn intersect(a: Indexes, b: Indexes) -> Indexes {
    let (mut a, mut b) = (a.peekable(), b.peekable());
    Box::new(std::iter::from_fn(move || {
        loop {
            let (x, y) = match (a.peek()?, b.peek()?) {
                (Err(_), _) => return a.next(),
                (_, Err(_)) => return b.next(),
                (Ok(x), Ok(y)) => (*x, *y),
            };
            match x.cmp(&y) {
                std::cmp::Ordering::Less => {
                    a.next();
                }
                std::cmp::Ordering::Greater => {
                    b.next();
                }
                std::cmp::Ordering::Equal => {
                    a.next();
                    b.next();
                    return Some(Ok(x));
                }
            }
        }
    }))
}

/// Whether `record` at `index` has its party index entries.
pub(crate) fn is_indexed(
    store: &Store,
    record: &AuditRecord,
    index: u64,
) -> Result<bool, AuditError> {
    for key in party_keys(&record.client_agency, &record.provider_agency, index) {
        if store.get(&key)?.is_none() {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Entries in the party index.
pub(crate) fn party_entries(store: &Store) -> Result<u64, AuditError> {
    let mut n = 0;
    for e in store.scan_prefix(PARTY_PREFIX) {
        e?;
        n += 1;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(s: Indexes) -> Vec<u64> {
        s.map(|r| r.expect("index")).collect()
    }

    fn list<const N: usize>(v: [u64; N]) -> Indexes {
        Box::new(v.into_iter().map(Ok))
    }

    #[test]
    fn union_and_intersection_keep_log_order() {
        assert_eq!(
            ids(union(vec![list([1, 4, 9]), list([2, 4, 10]), list([])])),
            [1, 2, 4, 9, 10]
        );
        assert_eq!(
            ids(intersect(list([1, 4, 9, 10]), list([2, 4, 10]))),
            [4, 10]
        );
        assert_eq!(ids(union(Vec::new())), Vec::<u64>::new());
    }

    #[test]
    fn an_agency_range_holds_only_its_records() {
        let dir = tempfile::tempdir().expect("dir");
        let store = Store::open(dir.path()).expect("store");
        let mut batch = WriteBatch::default();
        for i in 0..50u64 {
            let (client, provider) = if i % 10 == 0 {
                ("000.00.00.H37", "000.00.00.G22")
            } else {
                ("000.00.00.A01", "000.00.00.A01")
            };
            for k in party_keys(client, provider, i) {
                batch.insert(k, []);
            }
        }
        // An agency whose code extends another's is not mixed in.
        batch.insert(party_key("000.00.00.H37X", 3), []);
        // A malformed key is skipped.
        batch.insert([agency_prefix("000.00.00.H37"), vec![1]].concat(), []);
        store.apply(batch).expect("apply");
        assert_eq!(
            ids(records_of(&store, "000.00.00.H37", 0, u64::MAX)),
            [0, 10, 20, 30, 40]
        );
        assert_eq!(
            ids(records_of(&store, "000.00.00.H37", 10, 40)),
            [10, 20, 30]
        );
        assert_eq!(ids(records_of(&store, "000.00.00.A01", 0, 4)), [1, 2, 3]);
        assert_eq!(party_entries(&store).expect("count"), 5 * 2 + 45 + 2);
    }
}
