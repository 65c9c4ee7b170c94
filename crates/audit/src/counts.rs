//! Counter keys and reading the counters back.

use std::collections::BTreeMap;

use truc_store::Store;

use crate::{AuditError, COUNT_PREFIX};

/// One counter: a day (UTC) and the parties, service, kind and outcome of the
/// transactions it counts.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CountKey {
    /// `YYYY-MM-DD`, UTC.
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

impl CountKey {
    /// The store key: the prefix, then each field length-prefixed, so that no
    /// value (however odd) can be confused with a separator.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut key = COUNT_PREFIX.to_vec();
        for field in self.fields() {
            let len = u16::try_from(field.len()).unwrap_or(u16::MAX);
            key.extend_from_slice(&len.to_be_bytes());
            key.extend_from_slice(&field.as_bytes()[..usize::from(len)]);
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

    pub(crate) fn decode(key: &[u8]) -> Option<CountKey> {
        let mut rest = key.strip_prefix(COUNT_PREFIX)?;
        let mut fields = Vec::with_capacity(6);
        for _ in 0..6 {
            let (len, tail) = rest.split_first_chunk::<2>()?;
            let len = usize::from(u16::from_be_bytes(*len));
            let value = tail.get(..len)?;
            fields.push(String::from_utf8(value.to_vec()).ok()?);
            rest = &tail[len..];
        }
        if !rest.is_empty() {
            return None;
        }
        let mut it = fields.into_iter();
        Some(CountKey {
            day: it.next()?,
            client: it.next()?,
            provider: it.next()?,
            service: it.next()?,
            kind: it.next()?,
            outcome: it.next()?,
        })
    }
}

/// Every stored counter's transaction count.
pub fn read_counts(store: &Store) -> Result<BTreeMap<CountKey, u64>, AuditError> {
    Ok(read_stats(store)?
        .into_iter()
        .map(|(k, s)| (k, s.count))
        .collect())
}

/// The UTC day (`YYYY-MM-DD`) of a time in milliseconds since the Unix epoch.
pub fn day_of(unix_ms: u64) -> String {
    // Civil-from-days (H. Hinnant's algorithm), proleptic Gregorian calendar.
    let days = i64::try_from(unix_ms / 86_400_000).unwrap_or(i64::MAX / 2);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_are_utc_calendar_days() {
        assert_eq!(day_of(0), "1970-01-01");
        assert_eq!(day_of(86_399_999), "1970-01-01");
        assert_eq!(day_of(86_400_000), "1970-01-02");
        // 2024-02-29T12:00:00Z
        assert_eq!(day_of(1_709_208_000_000), "2024-02-29");
        // 2026-11-28T23:59:59Z
        assert_eq!(day_of(1_795_910_399_000), "2026-11-28");
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
}

/// Latency buckets: bucket `i` counts latencies below 2^(i+1) µs (the last
/// one everything slower), from 2 µs to about 4.5 minutes.
pub const LATENCY_BUCKETS: usize = 28;

/// What one counter holds: how many transactions, their payload bytes, and
/// a histogram of their latencies.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Transactions.
    pub count: u64,
    /// Request payload bytes.
    pub request_bytes: u64,
    /// Response payload bytes.
    pub response_bytes: u64,
    /// Latency histogram (see [`LATENCY_BUCKETS`]).
    pub latency: [u64; LATENCY_BUCKETS],
}

impl Stats {
    /// One transaction.
    pub fn one(request_bytes: u64, response_bytes: u64, latency_us: u64) -> Stats {
        let mut s = Stats {
            count: 1,
            request_bytes,
            response_bytes,
            latency: [0; LATENCY_BUCKETS],
        };
        s.latency[bucket(latency_us)] = 1;
        s
    }

    /// Adds `other` in.
    pub fn add(&mut self, other: &Stats) {
        self.count += other.count;
        self.request_bytes += other.request_bytes;
        self.response_bytes += other.response_bytes;
        for (a, b) in self.latency.iter_mut().zip(other.latency.iter()) {
            *a += b;
        }
    }

    /// The latency below which a `q` share (0..=1) of transactions fall, in
    /// milliseconds: the upper bound of the bucket (so an overestimate by at
    /// most a factor of two). None without transactions.
    pub fn latency_quantile_ms(&self, q: f64) -> Option<f64> {
        let total: u64 = self.latency.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = (q.clamp(0.0, 1.0) * total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, n) in self.latency.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some((1u64 << (i + 1)) as f64 / 1000.0);
            }
        }
        None
    }

    /// The stored form, compact because counters are rewritten on every
    /// commit: a marker byte, then varints for the count and byte sums, the
    /// number of non-empty latency buckets, and (bucket, count) for each.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(32);
        out.push(COMPACT);
        for v in [self.count, self.request_bytes, self.response_bytes] {
            put_varint(&mut out, v);
        }
        let used = self.latency.iter().filter(|n| **n > 0).count() as u64;
        put_varint(&mut out, used);
        for (i, n) in self.latency.iter().enumerate() {
            if *n > 0 {
                out.push(i as u8);
                put_varint(&mut out, *n);
            }
        }
        out
    }

    /// Reads the stored form; a bare 8-byte count (the first format) too.
    pub(crate) fn decode(bytes: &[u8]) -> Option<Stats> {
        if let Some(rest) = bytes.strip_prefix(&[COMPACT]) {
            let mut rest = rest;
            let mut s = Stats {
                count: get_varint(&mut rest)?,
                request_bytes: get_varint(&mut rest)?,
                response_bytes: get_varint(&mut rest)?,
                latency: [0; LATENCY_BUCKETS],
            };
            for _ in 0..get_varint(&mut rest)? {
                let (i, tail) = rest.split_first()?;
                rest = tail;
                *s.latency.get_mut(usize::from(*i))? = get_varint(&mut rest)?;
            }
            return rest.is_empty().then_some(s);
        }
        // A bare count: 8 bytes, big-endian (never starts with the marker).
        let count: [u8; 8] = bytes.try_into().ok()?;
        Some(Stats {
            count: u64::from_be_bytes(count),
            ..Stats::default()
        })
    }
}

/// First byte of the compact stats encoding (a bare count below 2^56 never
/// starts with it).
const COMPACT: u8 = 0xFE;

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(input: &mut &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (b, rest) = input.split_first()?;
        *input = rest;
        v |= u64::from(b & 0x7F) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

fn bucket(latency_us: u64) -> usize {
    // 0 and 1 µs land in bucket 0; 2^k..2^(k+1)-1 in bucket k.
    let k = 63 - latency_us.max(1).leading_zeros() as usize;
    k.min(LATENCY_BUCKETS - 1)
}

/// Every stored counter with its statistics.
pub fn read_stats(store: &Store) -> Result<BTreeMap<CountKey, Stats>, AuditError> {
    let mut out = BTreeMap::new();
    for entry in store.scan_prefix(COUNT_PREFIX) {
        let (key, value) = entry?;
        let corrupt = |reason: &str| AuditError::Corrupt {
            key: hex::encode(&key),
            reason: reason.to_string(),
        };
        let count_key = CountKey::decode(&key).ok_or_else(|| corrupt("bad counter key"))?;
        let stats = Stats::decode(&value).ok_or_else(|| corrupt("bad counter value"))?;
        out.insert(count_key, stats);
    }
    Ok(out)
}

/// A time zone as a fixed offset from UTC (Vietnam has kept UTC+7 without
/// daylight saving since 1975). Accepts `UTC`, `Asia/Ho_Chi_Minh`,
/// `Asia/Bangkok`, `Asia/Jakarta` (all fixed offsets), or `+HH:MM` / `-HH:MM`.
pub fn parse_time_zone(name: &str) -> Option<i32> {
    match name {
        "UTC" | "Etc/UTC" => Some(0),
        "Asia/Ho_Chi_Minh" | "Asia/Saigon" | "Asia/Bangkok" | "Asia/Jakarta" => Some(7 * 60),
        _ => {
            let (sign, rest) = match name.as_bytes().first()? {
                b'+' => (1, &name[1..]),
                b'-' => (-1, &name[1..]),
                _ => return None,
            };
            let (h, m) = rest.split_once(':')?;
            if h.len() != 2 || m.len() != 2 {
                return None;
            }
            let (h, m): (i32, i32) = (h.parse().ok()?, m.parse().ok()?);
            (h <= 14 && m < 60).then_some(sign * (h * 60 + m))
        }
    }
}

/// The local day (`YYYY-MM-DD`) at `offset_minutes` from UTC.
pub fn day_in(unix_ms: u64, offset_minutes: i32) -> String {
    let shifted = i128::from(unix_ms) + i128::from(offset_minutes) * 60_000;
    day_of(u64::try_from(shifted.max(0)).unwrap_or(0))
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
        // 3 µs ≤ 0.004 ms, 1500 µs ≤ 2.048 ms, 40 ms ≤ 65.536 ms.
        assert_eq!(s.latency_quantile_ms(0.3), Some(0.004));
        assert_eq!(s.latency_quantile_ms(0.5), Some(2.048));
        assert_eq!(s.latency_quantile_ms(0.99), Some(65.536));
        assert_eq!(Stats::default().latency_quantile_ms(0.5), None);
    }

    #[test]
    fn days_are_cut_in_the_time_zone() {
        let hcm = parse_time_zone("Asia/Ho_Chi_Minh").expect("zone");
        assert_eq!(hcm, 420);
        // 2026-11-28T17:30:00Z is 00:30 on the 29th in Hà Nội.
        let t = 1_795_887_000_000;
        assert_eq!(day_in(t, 0), "2026-11-28");
        assert_eq!(day_in(t, hcm), "2026-11-29");
        assert_eq!(parse_time_zone("+05:30"), Some(330));
        assert_eq!(parse_time_zone("-03:00"), Some(-180));
        assert_eq!(parse_time_zone("Mars/Olympus"), None);
        assert_eq!(parse_time_zone("+7"), None);
    }
}
