//! The party index of a hub's log: for each agency, the indexes of the
//! records where it is client or provider, so that a listing filtered by
//! agency (or limited to what a node may see) reads only those records.
//!
//! Keys: the prefix, the agency (cut like a counter field, with its length
//! as two big-endian bytes), then the index of the first record of a run (8
//! bytes, big-endian), so one agency's records are one range of keys in log
//! order. A key's value holds the run's further indexes, each as its gap
//! from the one before (a LEB128 varint, at least 1); an empty value is a
//! run of one record, which is what earlier builds wrote for every record.
//! The writer makes one run per agency per commit group, in the same batch
//! as the records: two keys per record cost sled more than the record itself
//! ([ADR 0017](../../../docs/adr/0017-fewer-keys-per-record.md)). A log written
//! before the index existed is indexed once, when it is opened; a marker key
//! records that it was, so a crash during that pass redoes it.

use std::{collections::BTreeMap, iter::Peekable};

use truc_store::{Store, WriteBatch};

use crate::{
    AuditError, AuditRecord, PARTY_PREFIX,
    counts::{KEY_FIELD_MAX, Unreadable, cap, successor},
    log::decode_record,
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

/// The parties a record between `client` and `provider` is indexed under:
/// each distinct, non-empty one, as key prefixes.
pub(crate) fn parties(client: &str, provider: &str) -> Vec<Vec<u8>> {
    let mut prefixes = Vec::with_capacity(2);
    for agency in [client, provider] {
        if agency.is_empty() {
            continue;
        }
        let prefix = agency_prefix(agency);
        if !prefixes.contains(&prefix) {
            prefixes.push(prefix);
        }
    }
    prefixes
}

/// The index keys of a record between `client` and `provider` at `index`,
/// each a run of one (one per distinct, non-empty party).
pub(crate) fn party_keys(client: &str, provider: &str, index: u64) -> Vec<Vec<u8>> {
    parties(client, provider)
        .into_iter()
        .map(|mut key| {
            key.extend_from_slice(&index.to_be_bytes());
            key
        })
        .collect()
}

/// The party index entries of one commit group, one run per agency.
#[derive(Default)]
pub(crate) struct Runs(BTreeMap<Vec<u8>, Vec<u64>>);

impl Runs {
    /// Adds the record at `index`; indexes must be added in ascending order.
    pub(crate) fn add(&mut self, client: &str, provider: &str, index: u64) {
        for prefix in parties(client, provider) {
            self.0.entry(prefix).or_default().push(index);
        }
    }

    /// Puts one key per agency into `batch`.
    pub(crate) fn write(self, batch: &mut WriteBatch) {
        for (mut key, indexes) in self.0 {
            let Some((&first, rest)) = indexes.split_first() else {
                continue;
            };
            key.extend_from_slice(&first.to_be_bytes());
            let mut value = Vec::with_capacity(rest.len() * 2);
            let mut prev = first;
            for &i in rest {
                prost::encoding::encode_varint(i - prev, &mut value);
                prev = i;
            }
            batch.insert(key, value);
        }
    }
}

/// The record indexes of one stored run: its key's after the agency prefix
/// (`skip` bytes), then the gaps of its value.
fn decode_run(key: &[u8], value: &[u8], skip: usize) -> Result<Vec<u64>, Unreadable> {
    let first = key
        .get(skip..)
        .and_then(|t| <[u8; 8]>::try_from(t).ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| Unreadable::new(key, "malformed party index key"))?;
    let mut indexes = vec![first];
    let mut rest = value;
    let mut prev = first;
    while !rest.is_empty() {
        let next = prost::encoding::decode_varint(&mut rest)
            .ok()
            .filter(|gap| *gap > 0)
            .and_then(|gap| prev.checked_add(gap))
            .ok_or_else(|| Unreadable::new(key, "malformed party index run"))?;
        indexes.push(next);
        prev = next;
    }
    Ok(indexes)
}

/// The key of the run of `prefix`'s agency that can hold `index`: the
/// greatest of its keys at or below `index` (none if every run starts after).
fn run_at(store: &Store, prefix: &[u8], index: u64) -> Result<Option<Vec<u8>>, AuditError> {
    let mut at = [prefix, &index.to_be_bytes()].concat();
    // The least key above `at` is `at` followed by a zero byte.
    at.push(0);
    match store.scan_range(prefix, &at).next_back() {
        Some(entry) => Ok(Some(entry?.0)),
        None => Ok(None),
    }
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
    for entry in crate::records::scan(store, 0) {
        let record = match entry {
            Ok(r) => decode_record(&r.key, &r.bytes).map(|record| (r.index, record)),
            Err(e) => Err(e),
        };
        match record {
            Ok((i, r)) => {
                for k in party_keys(&r.client_agency, &r.provider_agency, i) {
                    batch.insert(k, []);
                }
                indexed += 1;
            }
            Err(AuditError::Corrupt { key, reason }) => {
                unreadable.push(Unreadable { key, reason });
            }
            Err(e) => return Err(e),
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
/// ascending, from the party index (only its runs are read, not the
/// records).
pub fn records_of(store: &Store, agency: &str, from: u64, end: u64) -> Indexes {
    let prefix = agency_prefix(agency);
    let skip = prefix.len();
    // A run that starts before `from` may hold indexes from it on.
    let start = match run_at(store, &prefix, from) {
        Ok(Some(key)) if key.len() == skip + 8 => key,
        Ok(_) => [prefix.as_slice(), &from.to_be_bytes()].concat(),
        Err(e) => return Box::new(std::iter::once(Err(e))),
    };
    let stop = if end == u64::MAX {
        successor(prefix.clone())
    } else {
        [prefix.as_slice(), &end.to_be_bytes()].concat()
    };
    Box::new(
        store
            .scan_range(&start, &stop)
            .flat_map(move |e| -> Vec<Result<u64, AuditError>> {
                match e {
                    Err(e) => vec![Err(e.into())],
                    Ok((key, value)) => match decode_run(&key, &value, skip) {
                        Ok(run) => run
                            .into_iter()
                            .filter(|i| (from..end).contains(i))
                            .map(Ok)
                            .collect(),
                        Err(unreadable) => {
                            crate::counts::note_unreadable("the party index", &[unreadable]);
                            Vec::new()
                        }
                    },
                }
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
    for prefix in parties(&record.client_agency, &record.provider_agency) {
        let Some(key) = run_at(store, &prefix, index)? else {
            return Ok(false);
        };
        let value = store.get(&key)?.unwrap_or_default();
        match decode_run(&key, &value, prefix.len()) {
            Ok(run) if run.binary_search(&index).is_ok() => {}
            _ => return Ok(false),
        }
    }
    Ok(true)
}

/// Entries in the party index: the records of every run, a run that does
/// not decode counting as one.
pub(crate) fn party_entries(store: &Store) -> Result<u64, AuditError> {
    let mut n = 0;
    for e in store.scan_prefix(PARTY_PREFIX) {
        let (_, value) = e?;
        // Whatever the agency prefix, a run's value counts its further records.
        let mut rest = value.as_slice();
        n += 1;
        while !rest.is_empty() && prost::encoding::decode_varint(&mut rest).is_ok() {
            n += 1;
        }
    }
    Ok(n)
}

/// Takes the entry of the record at `index` out of `agency`'s run, as a
/// tampered index would (for the verifier's tests).
#[cfg(test)]
pub(crate) fn drop_entry(store: &Store, agency: &str, index: u64) {
    let prefix = agency_prefix(agency);
    let key = run_at(store, &prefix, index).expect("read").expect("a run");
    let value = store.get(&key).expect("read").unwrap_or_default();
    let run = decode_run(&key, &value, prefix.len()).expect("run");
    let mut batch = WriteBatch::default();
    batch.remove(&key);
    let mut runs = Runs::default();
    for i in run.into_iter().filter(|i| *i != index) {
        runs.add(agency, "", i);
    }
    runs.write(&mut batch);
    store.apply(batch).expect("tamper");
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
        // Records 0..20 as earlier builds indexed them, a key each; the
        // rest in runs of commit groups of 7, as the writer does now.
        let mut runs = Runs::default();
        for i in 0..50u64 {
            let (client, provider) = if i % 10 == 0 {
                ("000.00.00.H37", "000.00.00.G22")
            } else {
                ("000.00.00.A01", "000.00.00.A01")
            };
            if i < 20 {
                for k in party_keys(client, provider, i) {
                    batch.insert(k, []);
                }
                continue;
            }
            runs.add(client, provider, i);
            if i % 7 == 6 {
                std::mem::take(&mut runs).write(&mut batch);
            }
        }
        runs.write(&mut batch);
        // An agency whose code extends another's is not mixed in.
        batch.insert(&party_keys("000.00.00.H37X", "", 3)[0], []);
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
        // From and to the middle of runs (21..=27 is one run, 28..=34 the next).
        assert_eq!(
            ids(records_of(&store, "000.00.00.A01", 23, 30)),
            [23, 24, 25, 26, 27, 28, 29]
        );
        assert_eq!(ids(records_of(&store, "000.00.00.A01", 49, u64::MAX)), [49]);
        assert_eq!(party_entries(&store).expect("count"), 5 * 2 + 45 + 2);
        let record = |client: &str| AuditRecord {
            client_agency: client.into(),
            provider_agency: client.into(),
            ..AuditRecord::default()
        };
        assert!(is_indexed(&store, &record("000.00.00.A01"), 25).expect("read"));
        assert!(!is_indexed(&store, &record("000.00.00.A01"), 30 + 20).expect("read"));
        assert!(!is_indexed(&store, &record("000.00.00.H37"), 25).expect("read"));
    }

    #[test]
    fn a_run_that_does_not_decode_is_skipped_and_counted_once() {
        let dir = tempfile::tempdir().expect("dir");
        let store = Store::open(dir.path()).expect("store");
        let mut batch = WriteBatch::default();
        let mut runs = Runs::default();
        for i in [3, 4, 9] {
            runs.add("000.00.00.G22", "", i);
        }
        runs.write(&mut batch);
        // A gap of 0 would repeat an index; a varint cut short is no gap.
        let mut bad = party_keys("000.00.00.G22", "", 20).remove(0);
        batch.insert(&bad, [1, 0]);
        bad = party_keys("000.00.00.G22", "", 30).remove(0);
        batch.insert(&bad, [0x80]);
        store.apply(batch).expect("apply");
        let before = crate::counts::unreadable_skipped();
        assert_eq!(
            ids(records_of(&store, "000.00.00.G22", 0, u64::MAX)),
            [3, 4, 9]
        );
        assert!(crate::counts::unreadable_skipped() >= before + 2);
        assert_eq!(party_entries(&store).expect("count"), 3 + 3 + 1);
    }
}
