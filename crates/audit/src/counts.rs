//! Counter keys and reading the counters back.

use std::collections::BTreeMap;

use truc_store::Store;

use crate::{
    AuditError, AuditRecord, COUNT_PREFIX,
    sketch::{Sketch, get_varint, put_varint},
};

/// One counter: a day (in the log's time zone) and the parties, service, kind and outcome of the
/// transactions it counts.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CountKey {
    /// `YYYY-MM-DD`, in the log's time zone.
    pub day: String,
    /// Client agency code.
    pub client: String,
    /// Provider agency code.
    pub provider: String,
    /// Service id.
    pub service: String,
    /// Transaction kind (`call`).
    pub kind: String,
    /// gRPC code name of the outcome.
    pub outcome: String,
}

/// Longest field of a counter key, in bytes. A longer value (the network
/// edge refuses them, but the storage layer must hold whatever reaches it)
/// is cut at the last character boundary at or below this length, the same
/// way when counting and when recomputing the counters from the records, so
/// that verification stays exact; values that share such a prefix share a
/// counter.
pub const KEY_FIELD_MAX: usize = 256;

/// `s` cut to at most `max` bytes on a character boundary.
pub(crate) fn cap(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

impl CountKey {
    /// A key with every field cut to [`KEY_FIELD_MAX`] bytes.
    pub fn new(
        day: &str,
        client: &str,
        provider: &str,
        service: &str,
        kind: &str,
        outcome: &str,
    ) -> CountKey {
        let c = |s: &str| cap(s, KEY_FIELD_MAX).to_string();
        CountKey {
            day: c(day),
            client: c(client),
            provider: c(provider),
            service: c(service),
            kind: c(kind),
            outcome: c(outcome),
        }
    }

    /// The counter a committed record counts in, its day cut in `zone`:
    /// the key the writer counted it under.
    pub fn of_record(r: &AuditRecord, zone: &crate::Zone) -> CountKey {
        CountKey::new(
            &zone.day(r.finished_unix_ms),
            &r.client_agency,
            &r.provider_agency,
            &r.service,
            &r.kind,
            &r.outcome,
        )
    }

    /// This key as it is stored: every field cut to [`KEY_FIELD_MAX`] bytes.
    pub fn bounded(&self) -> CountKey {
        let [day, client, provider, service, kind, outcome] = self.fields();
        CountKey::new(day, client, provider, service, kind, outcome)
    }

    /// The store key: the prefix, then each field (cut to
    /// [`KEY_FIELD_MAX`]) with its length as two big-endian bytes, so that no
    /// value (however odd) can be confused with a separator. The day comes
    /// first and is always 10 bytes, so the counters of a range of days are
    /// one range of keys. Total: any key encodes, and decodes back to
    /// [`CountKey::bounded`].
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut key = COUNT_PREFIX.to_vec();
        for field in self.fields() {
            put_field(&mut key, field);
        }
        key
    }

    fn fields(&self) -> [&str; 6] {
        [
            &self.day,
            &self.client,
            &self.provider,
            &self.service,
            &self.kind,
            &self.outcome,
        ]
    }

    /// The key stored as `key`, bounded. Also reads the keys of earlier
    /// builds, which cut a field to 65 535 bytes, possibly inside a
    /// character: only the first [`KEY_FIELD_MAX`] bytes are kept, so such a
    /// key reads as the bounded key of its value.
    pub(crate) fn decode(key: &[u8]) -> Option<CountKey> {
        let mut rest = key.strip_prefix(COUNT_PREFIX)?;
        let mut fields = Vec::with_capacity(6);
        for _ in 0..6 {
            let (len, tail) = rest.split_first_chunk::<2>()?;
            let len = usize::from(u16::from_be_bytes(*len));
            let value = tail.get(..len)?;
            fields.push(bounded_utf8(value)?);
            rest = &tail[len..];
        }
        if !rest.is_empty() {
            return None;
        }
        let [day, client, provider, service, kind, outcome] = fields.try_into().ok()?;
        Some(CountKey {
            day,
            client,
            provider,
            service,
            kind,
            outcome,
        })
    }
}

fn put_field(key: &mut Vec<u8>, field: &str) {
    let field = cap(field, KEY_FIELD_MAX);
    // KEY_FIELD_MAX < 2^16.
    key.extend_from_slice(&(field.len() as u16).to_be_bytes());
    key.extend_from_slice(field.as_bytes());
}

/// The first [`KEY_FIELD_MAX`] bytes of `value` as text, cut on a character
/// boundary; None if they are not UTF-8 (beyond a character cut at the end).
fn bounded_utf8(value: &[u8]) -> Option<String> {
    let long = value.len() > KEY_FIELD_MAX;
    let head = &value[..value.len().min(KEY_FIELD_MAX)];
    match std::str::from_utf8(head) {
        Ok(s) => Some(s.to_string()),
        // Only a character cut by the bound itself may be incomplete.
        Err(e) if long && e.error_len().is_none() => std::str::from_utf8(&head[..e.valid_up_to()])
            .ok()
            .map(str::to_string),
        Err(_) => None,
    }
}

/// The keys `[start, end)` holding the counters of the days `from..=to`
/// (`YYYY-MM-DD`; empty: unbounded).
fn day_range(from: &str, to: &str) -> (Vec<u8>, Vec<u8>) {
    let mut start = COUNT_PREFIX.to_vec();
    if !from.is_empty() {
        put_field(&mut start, from);
    }
    let mut end = COUNT_PREFIX.to_vec();
    if !to.is_empty() {
        put_field(&mut end, to);
    }
    (start, successor(end))
}

/// The least key greater than every key starting with `prefix`.
pub(crate) fn successor(mut prefix: Vec<u8>) -> Vec<u8> {
    while let Some(last) = prefix.pop() {
        if last < u8::MAX {
            prefix.push(last + 1);
            return prefix;
        }
    }
    // Only an all-0xFF prefix: nothing is greater; an empty end means empty.
    Vec::new()
}

/// A stored entry that could not be read, skipped by the reader.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unreadable {
    /// Hex of the key (of its first 64 bytes when longer).
    pub key: String,
    /// What is wrong.
    pub reason: String,
}

impl Unreadable {
    pub(crate) fn new(key: &[u8], reason: impl Into<String>) -> Unreadable {
        let shown = &key[..key.len().min(64)];
        let mut hex = hex::encode(shown);
        if key.len() > 64 {
            hex.push_str(&format!("… ({} bytes)", key.len()));
        }
        Unreadable {
            key: hex,
            reason: reason.into(),
        }
    }
}

impl std::fmt::Display for Unreadable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} at key {}", self.reason, self.key)
    }
}

static UNREADABLE_SKIPPED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Stored entries that a reader of this process skipped because they could
/// not be decoded (each read that skips one counts it again).
pub fn unreadable_skipped() -> u64 {
    UNREADABLE_SKIPPED.load(std::sync::atomic::Ordering::Relaxed)
}

/// Logs and counts entries skipped by a reader serving `what`.
pub fn note_unreadable(what: &str, entries: &[Unreadable]) {
    if entries.is_empty() {
        return;
    }
    UNREADABLE_SKIPPED.fetch_add(entries.len() as u64, std::sync::atomic::Ordering::Relaxed);
    // A handful is enough to find them; the count says how many.
    for e in entries.iter().take(5) {
        tracing::error!(entry = %e, "skipped an unreadable stored entry while reading {what}");
    }
    if entries.len() > 5 {
        tracing::error!(
            count = entries.len(),
            "skipped unreadable stored entries while reading {what}"
        );
    }
}

/// The counters read back, and the stored entries that could not be.
#[derive(Clone, Debug, Default)]
pub struct Counters {
    /// Statistics per counter (stored keys that read as the same bounded
    /// key are added up).
    pub stats: BTreeMap<CountKey, Stats>,
    /// Entries skipped because their key or value does not decode.
    pub unreadable: Vec<Unreadable>,
    /// Stored entries read.
    pub scanned: u64,
    /// Entries in the format of an earlier build, without a latency sketch
    /// (opening the log rewrites them; until then their latencies are
    /// power-of-two upper bounds).
    pub earlier_format: u64,
}

impl Counters {
    fn read(
        entries: impl Iterator<Item = Result<truc_store::Entry, truc_store::StoreError>>,
    ) -> Result<Counters, AuditError> {
        let mut out = Counters::default();
        for entry in entries {
            let (key, value) = entry?;
            out.scanned += 1;
            let Some(count_key) = CountKey::decode(&key) else {
                out.unreadable
                    .push(Unreadable::new(&key, "undecodable statistics key"));
                continue;
            };
            let Some((stats, format)) = Stats::decode_stored(&value) else {
                out.unreadable
                    .push(Unreadable::new(&key, "undecodable statistics value"));
                continue;
            };
            if format == Format::Earlier {
                out.earlier_format += 1;
            }
            out.stats.entry(count_key).or_default().add(&stats);
        }
        Ok(out)
    }
}

/// Every stored counter with its statistics; entries that do not decode are
/// skipped and listed.
pub fn read_stats(store: &Store) -> Result<Counters, AuditError> {
    Counters::read(store.scan_prefix(COUNT_PREFIX))
}

/// The counters of the days `from..=to` (`YYYY-MM-DD`, inclusive; empty:
/// unbounded), read with one range scan: only those days' entries are read.
pub fn read_stats_of_days(store: &Store, from: &str, to: &str) -> Result<Counters, AuditError> {
    let (start, end) = day_range(from, to);
    let mut out = Counters::read(store.scan_range(&start, &end))?;
    // Days are 10 bytes; anything else in the range is not of those days.
    out.stats.retain(|k, _| {
        (from.is_empty() || k.day.as_str() >= from) && (to.is_empty() || k.day.as_str() <= to)
    });
    Ok(out)
}

/// Every stored counter's transaction count (unreadable entries are
/// skipped, logged and counted in [`unreadable_skipped`]).
pub fn read_counts(store: &Store) -> Result<BTreeMap<CountKey, u64>, AuditError> {
    let counters = read_stats(store)?;
    note_unreadable("counters", &counters.unreadable);
    Ok(counters
        .stats
        .into_iter()
        .map(|(k, s)| (k, s.count))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(day: &str, client: &str, outcome: &str) -> CountKey {
        CountKey::new(
            day,
            client,
            "000.00.00.G22",
            "000.00.00.G22/citizen-lookup/v1",
            "call",
            outcome,
        )
    }

    #[test]
    fn keys_round_trip_whatever_the_values() {
        let key = CountKey {
            day: "2026-11-28".into(),
            client: "000.00.00.H37".into(),
            provider: "000.00.00.G22".into(),
            service: "a|b/\u{0}c".into(),
            kind: "call".into(),
            outcome: "OK".into(),
        };
        assert_eq!(CountKey::decode(&key.encode()), Some(key.clone()));
        let mut bad = key.encode();
        bad.push(0);
        assert_eq!(CountKey::decode(&bad), None);
    }

    #[test]
    fn an_80_kb_status_code_is_counted_under_a_bounded_readable_key() {
        // 'ệ' is 3 bytes: 80 000 of them cross every bound inside a character.
        let huge = "ệ".repeat(80_000);
        let key = sample("2026-11-28", "000.00.00.H37", &huge);
        let stored = CountKey {
            outcome: huge.clone(),
            ..key.clone()
        };
        let encoded = stored.encode();
        assert!(encoded.len() < COUNT_PREFIX.len() + 6 * (2 + KEY_FIELD_MAX));
        let decoded = CountKey::decode(&encoded).expect("decodes");
        assert_eq!(decoded, key);
        assert_eq!(decoded.outcome.len(), 255, "cut on the boundary below 256");
        assert!(huge.starts_with(&decoded.outcome));
    }

    #[test]
    fn keys_of_earlier_builds_cut_inside_a_character_still_read() {
        // What the first encoding stored: the field cut at 65 535 bytes.
        // 'é' is 2 bytes: 65 535 cuts one in two.
        let huge = "é".repeat(40_000);
        let mut old = COUNT_PREFIX.to_vec();
        for f in ["2026-11-28", "A", "B", "S", "call"] {
            old.extend_from_slice(&(f.len() as u16).to_be_bytes());
            old.extend_from_slice(f.as_bytes());
        }
        old.extend_from_slice(&u16::MAX.to_be_bytes());
        old.extend_from_slice(&huge.as_bytes()[..usize::from(u16::MAX)]);
        assert!(std::str::from_utf8(&old[old.len() - 65_535..]).is_err());
        let decoded = CountKey::decode(&old).expect("decodes");
        assert_eq!(
            decoded,
            CountKey::new("2026-11-28", "A", "B", "S", "call", &huge)
        );
        // Invalid UTF-8 within the bound is still refused.
        let mut bad = sample("2026-11-28", "A", "OK").encode();
        let at = bad.len() - 1;
        bad[at] = 0xFF;
        assert_eq!(CountKey::decode(&bad), None);
    }

    fn text() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        // Anything, control characters and NULs included, sometimes huge.
        prop_oneof![
            any::<String>(),
            "[\\x00-\\x1f\\x7f|/]{0,8}",
            (any::<String>(), any::<char>(), 0usize..70_000)
                .prop_map(|(s, c, n)| s + &c.to_string().repeat(n)),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(200))]

        #[test]
        fn any_key_encodes_and_decodes_to_its_bounded_form(
            day in text(), client in text(), provider in text(),
            service in text(), kind in text(), outcome in text(),
        ) {
            let key = CountKey { day, client, provider, service, kind, outcome };
            let encoded = key.encode();
            let bounded = key.bounded();
            proptest::prop_assert_eq!(CountKey::decode(&encoded), Some(bounded.clone()));
            proptest::prop_assert_eq!(bounded.encode(), encoded.clone());
            proptest::prop_assert!(encoded.len() <= COUNT_PREFIX.len() + 6 * (2 + KEY_FIELD_MAX));
            for (full, cut) in key.fields().iter().zip(bounded.fields()) {
                proptest::prop_assert!(full.starts_with(cut));
                proptest::prop_assert!(cut.len() <= KEY_FIELD_MAX);
                if full.len() <= KEY_FIELD_MAX {
                    proptest::prop_assert_eq!(*full, cut);
                } else {
                    proptest::prop_assert!(cut.len() + 4 > KEY_FIELD_MAX);
                }
            }
        }

        #[test]
        fn counters_sort_by_day_first(
            a in 0u64..4_000_000_000_000, b in 0u64..4_000_000_000_000,
            client_a in text(), client_b in text(),
        ) {
            let (da, db) = (crate::day_of(a), crate::day_of(b));
            let ka = sample(&da, &client_a, "OK").encode();
            let kb = sample(&db, &client_b, "OK").encode();
            if da < db {
                proptest::prop_assert!(ka < kb);
            }
            if da > db {
                proptest::prop_assert!(ka > kb);
            }
        }
    }

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path()).expect("open");
        (dir, store)
    }

    #[test]
    fn a_bad_stored_counter_is_skipped_and_reported_not_fatal() {
        let (_dir, store) = store();
        let good = sample("2026-11-28", "A", "OK");
        store
            .insert(good.encode(), Stats::one(10, 20, 30).encode())
            .expect("insert");
        let other = sample("2026-11-29", "B", "OK");
        store
            .insert(other.encode(), Stats::one(1, 2, 3).encode())
            .expect("insert");
        // A key whose field is not UTF-8, and a value that does not decode.
        let mut bad_key = COUNT_PREFIX.to_vec();
        bad_key.extend_from_slice(&[0, 2, 0xC3, 0x28]);
        store
            .insert(&bad_key, Stats::one(1, 1, 1).encode())
            .expect("insert");
        let bad_value = sample("2026-11-28", "C", "OK");
        store
            .insert(bad_value.encode(), b"\xFE\x01")
            .expect("insert");

        let counters = read_stats(&store).expect("read");
        assert_eq!(counters.stats.len(), 2);
        assert_eq!(counters.stats.get(&good).map(|s| s.count), Some(1));
        assert_eq!(counters.stats.get(&other).map(|s| s.request_bytes), Some(1));
        let reasons: Vec<&str> = counters
            .unreadable
            .iter()
            .map(|u| u.reason.as_str())
            .collect();
        assert_eq!(
            reasons,
            ["undecodable statistics key", "undecodable statistics value"]
        );
        let before = unreadable_skipped();
        assert_eq!(read_counts(&store).expect("counts").len(), 2);
        assert!(unreadable_skipped() >= before + 2);
    }

    #[test]
    fn a_day_range_reads_only_the_counters_of_those_days() {
        let (_dir, store) = store();
        let day0 = 1_795_910_000_000u64;
        let mut batch = truc_store::WriteBatch::default();
        for d in 0..100u64 {
            let day = crate::day_of(day0 + d * 86_400_000);
            for client in ["A", "B", "C"] {
                let k = sample(&day, client, "OK");
                batch.insert(k.encode(), Stats::one(d, 0, 1).encode());
            }
        }
        store.apply(batch).expect("apply");
        let (from, to) = (
            crate::day_of(day0 + 40 * 86_400_000),
            crate::day_of(day0 + 42 * 86_400_000),
        );
        let counters = read_stats_of_days(&store, &from, &to).expect("read");
        assert_eq!(counters.scanned, 9, "three days of three counters");
        assert_eq!(counters.stats.len(), 9);
        assert!(counters.stats.keys().all(|k| k.day >= from && k.day <= to));
        let sum: u64 = counters.stats.values().map(|s| s.request_bytes).sum();
        assert_eq!(sum, 3 * (40 + 41 + 42));
        // Open-ended ranges.
        assert_eq!(
            read_stats_of_days(&store, &from, "").expect("read").scanned,
            180
        );
        assert_eq!(
            read_stats_of_days(&store, "", &to).expect("read").scanned,
            129
        );
        assert_eq!(
            read_stats_of_days(&store, "", "").expect("read").scanned,
            300
        );
        assert_eq!(
            read_stats_of_days(&store, &to, &from)
                .expect("read")
                .scanned,
            0
        );
    }
}

/// What one counter holds: how many transactions, their payload bytes, and
/// a sketch of their latencies.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Transactions.
    pub count: u64,
    /// Request payload bytes.
    pub request_bytes: u64,
    /// Response payload bytes.
    pub response_bytes: u64,
    /// Latency sketch (µs).
    pub latency: Sketch,
}

/// How a stored counter value was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Format {
    /// With a latency sketch: what this build writes.
    Current,
    /// By an earlier build: a bare count, or power-of-two latency buckets.
    /// Read (the buckets as their upper bounds) until [`migrate_earlier_formats`]
    /// recomputes them from the records.
    Earlier,
}

impl Stats {
    /// One transaction.
    pub fn one(request_bytes: u64, response_bytes: u64, latency_us: u64) -> Stats {
        Stats {
            count: 1,
            request_bytes,
            response_bytes,
            latency: Sketch::of(latency_us),
        }
    }

    /// The one transaction of a committed record.
    pub fn of_record(r: &AuditRecord) -> Stats {
        Stats::one(r.request_bytes, r.response_bytes, r.latency_us)
    }

    /// Adds `other` in. Sums saturate: a stored value read back, however large, never
    /// overflows (and then differs from the records, which verify reports).
    pub fn add(&mut self, other: &Stats) {
        self.count = self.count.saturating_add(other.count);
        self.request_bytes = self.request_bytes.saturating_add(other.request_bytes);
        self.response_bytes = self.response_bytes.saturating_add(other.response_bytes);
        self.latency.merge(&other.latency);
    }

    /// The latency below which a `q` share (0..=1) of transactions fall, in
    /// milliseconds, within 1% of the true value (see [`crate::sketch`]).
    /// None without transactions.
    pub fn latency_quantile_ms(&self, q: f64) -> Option<f64> {
        self.latency.quantile_us(q).map(|us| us / 1000.0)
    }

    /// The stored form, compact because counters are rewritten on every
    /// commit: a marker byte, varints for the count and byte sums, then the
    /// sparse latency sketch (see [`Sketch::encode_into`]).
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(32);
        out.push(SKETCHED);
        for v in [self.count, self.request_bytes, self.response_bytes] {
            put_varint(&mut out, v);
        }
        self.latency.encode_into(&mut out);
        out
    }

    /// Reads the stored form (see [`Stats::decode_stored`]).
    pub(crate) fn decode(bytes: &[u8]) -> Option<Stats> {
        Stats::decode_stored(bytes).map(|(s, _)| s)
    }

    /// Reads the stored form, and those of earlier builds: power-of-two
    /// latency buckets (each read as its upper bound) and a bare 8-byte
    /// count. A sketched value whose latencies do not add up to its count,
    /// or that is cut short or too long, does not decode.
    pub(crate) fn decode_stored(bytes: &[u8]) -> Option<(Stats, Format)> {
        let (marker, mut rest) = bytes.split_first()?;
        let mut sums = || -> Option<[u64; 3]> {
            Some([
                get_varint(&mut rest).ok()?,
                get_varint(&mut rest).ok()?,
                get_varint(&mut rest).ok()?,
            ])
        };
        match *marker {
            SKETCHED => {
                let [count, request_bytes, response_bytes] = sums()?;
                let latency = Sketch::decode_from(&mut rest).ok()?;
                let s = Stats {
                    count,
                    request_bytes,
                    response_bytes,
                    latency,
                };
                (rest.is_empty() && s.latency.total() == count).then_some((s, Format::Current))
            }
            POWERS_OF_TWO => {
                let [count, request_bytes, response_bytes] = sums()?;
                let mut s = Stats {
                    count,
                    request_bytes,
                    response_bytes,
                    latency: Sketch::default(),
                };
                let used = get_varint(&mut rest).ok()?;
                if used > LEGACY_BUCKETS {
                    return None;
                }
                let mut seen = [false; LEGACY_BUCKETS as usize];
                for _ in 0..used {
                    let (i, tail) = rest.split_first()?;
                    rest = tail;
                    let first = seen.get_mut(usize::from(*i))?;
                    if std::mem::replace(first, true) {
                        return None;
                    }
                    let n = get_varint(&mut rest).ok()?;
                    s.latency.add_n(1u64 << (i + 1), n);
                }
                rest.is_empty().then_some((s, Format::Earlier))
            }
            _ => {
                // A bare count: 8 bytes, big-endian (below 2^56 it never
                // starts with a marker).
                let count: [u8; 8] = bytes.try_into().ok()?;
                Some((
                    Stats {
                        count: u64::from_be_bytes(count),
                        ..Stats::default()
                    },
                    Format::Earlier,
                ))
            }
        }
    }
}

/// First byte of the sketched stats encoding.
const SKETCHED: u8 = 0xFD;
/// First byte of the power-of-two histogram encoding of earlier builds.
const POWERS_OF_TWO: u8 = 0xFE;
/// Power-of-two buckets of earlier builds: bucket `i` counted latencies
/// below 2^(i+1) µs.
const LEGACY_BUCKETS: u64 = 28;

/// Rewrites, from the records, every counter an earlier build stored without
/// a latency sketch (and any other stored entry under the same bounded key),
/// in one batch, flushed. Runs once, when a log is opened, before anything is
/// written; returns how many counters were rewritten. The records are what
/// the counters are checked against, so they are the source; a counter whose
/// count or bytes differed from its records is logged.
pub(crate) fn migrate_earlier_formats(
    store: &Store,
    zone: &crate::Zone,
) -> Result<u64, AuditError> {
    let mut raw_keys: BTreeMap<CountKey, Vec<Vec<u8>>> = BTreeMap::new();
    let mut earlier: BTreeMap<CountKey, Stats> = BTreeMap::new();
    for entry in store.scan_prefix(COUNT_PREFIX) {
        let (key, value) = entry?;
        let Some(count_key) = CountKey::decode(&key) else {
            continue;
        };
        if let Some((stats, Format::Earlier)) = Stats::decode_stored(&value) {
            earlier.entry(count_key.clone()).or_default().add(&stats);
        }
        raw_keys.entry(count_key).or_default().push(key.to_vec());
    }
    if earlier.is_empty() {
        return Ok(0);
    }
    let mut recomputed: BTreeMap<CountKey, Stats> = BTreeMap::new();
    for item in crate::read_records(store, 0) {
        let (record, _) = item?;
        let key = CountKey::of_record(&record, zone);
        if earlier.contains_key(&key) {
            recomputed
                .entry(key)
                .or_default()
                .add(&Stats::of_record(&record));
        }
    }
    let mut batch = truc_store::WriteBatch::default();
    for (key, old) in &earlier {
        for raw in raw_keys.get(key).into_iter().flatten() {
            batch.remove(raw.as_slice());
        }
        let new = recomputed.remove(key).unwrap_or_default();
        if (old.count, old.request_bytes, old.response_bytes)
            != (new.count, new.request_bytes, new.response_bytes)
        {
            tracing::warn!(
                counter = ?key,
                stored = old.count,
                records = new.count,
                "a counter of an earlier build differed from its records; rewritten from the records"
            );
        }
        if new.count > 0 {
            batch.insert(key.encode(), new.encode());
        }
    }
    store.apply(batch)?;
    store.flush()?;
    let n = earlier.len() as u64;
    tracing::info!(
        counters = n,
        "statistics of an earlier build recomputed from the audit log with latency sketches"
    );
    Ok(n)
}

#[cfg(test)]
mod stats_tests {
    use super::*;

    #[test]
    fn stats_round_trip_add_and_quantiles() {
        let mut s = Stats::one(100, 10, 1500);
        s.add(&Stats::one(50, 5, 3));
        s.add(&Stats::one(0, 0, 40_000));
        assert_eq!(s.count, 3);
        assert_eq!(s.request_bytes, 150);
        assert_eq!(Stats::decode(&s.encode()), Some(s.clone()));
        assert_eq!(Stats::decode(&7u64.to_be_bytes()).map(|s| s.count), Some(7));
        assert_eq!(Stats::decode(&[0; 12]), None);
        assert!(s.encode().len() < 24, "compact: {}", s.encode().len());
        let big = Stats::one(u64::MAX, 1 << 40, 300_000_000_000);
        assert_eq!(Stats::decode(&big.encode()), Some(big));
        let mut truncated = s.encode();
        truncated.pop();
        assert_eq!(Stats::decode(&truncated), None);
        let mut long = s.encode();
        long.push(0);
        assert_eq!(Stats::decode(&long), None);
        // Within 1% of 3 µs, 1.5 ms and 40 ms.
        let near = |got: Option<f64>, want: f64| {
            let got = got.expect("a value");
            assert!((got - want).abs() <= want * 0.01, "{got} for {want}");
        };
        near(s.latency_quantile_ms(0.3), 0.003);
        near(s.latency_quantile_ms(0.5), 1.5);
        near(s.latency_quantile_ms(0.99), 40.0);
        assert_eq!(Stats::default().latency_quantile_ms(0.5), None);
    }

    #[test]
    fn a_sketch_that_does_not_add_up_to_the_count_does_not_decode() {
        let mut s = Stats::one(1, 2, 3);
        s.count = 2;
        assert_eq!(Stats::decode(&s.encode()), None);
        // A hostile bucket count in a store record: refused, no allocation.
        let mut b = vec![SKETCHED, 1, 0, 0, 0];
        put_varint(&mut b, u64::MAX);
        assert_eq!(Stats::decode(&b), None);
    }

    #[test]
    fn the_stored_stats_of_earlier_builds_still_decode() {
        // Written by an earlier build: marker, count 300, request 0,
        // response 2^35, one power-of-two bucket (10: below 2048 µs) of 300.
        let stored = [
            0xFE, 0xAC, 0x02, 0x00, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01, 0x01, 0x0A, 0xAC, 0x02,
        ];
        let (s, format) = Stats::decode_stored(&stored).expect("decodes");
        assert_eq!(format, Format::Earlier);
        assert_eq!(
            (s.count, s.request_bytes, s.response_bytes),
            (300, 0, 1 << 35)
        );
        assert_eq!(s.latency.total(), 300);
        let p50 = s.latency_quantile_ms(0.5).expect("p50");
        assert!((p50 - 2.048).abs() < 0.03, "{p50}");
        // A bucket beyond the old layout, or twice, does not decode.
        let mut bad = stored;
        bad[11] = 28;
        assert_eq!(Stats::decode(&bad), None);
        let twice = [0xFE, 2, 0, 0, 2, 3, 1, 3, 1];
        assert_eq!(Stats::decode(&twice), None);
        // A bare count of the first format.
        let (s, format) = Stats::decode_stored(&9u64.to_be_bytes()).expect("bare");
        assert_eq!((s.count, format), (9, Format::Earlier));
        // What this build writes.
        let now = Stats::one(1, 2, 3).encode();
        assert_eq!(now[0], SKETCHED);
        assert_eq!(
            Stats::decode_stored(&now).map(|(_, f)| f),
            Some(Format::Current)
        );
    }
}
