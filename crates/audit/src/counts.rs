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

/// Every stored counter.
pub fn read_counts(store: &Store) -> Result<BTreeMap<CountKey, u64>, AuditError> {
    let mut out = BTreeMap::new();
    for entry in store.scan_prefix(COUNT_PREFIX) {
        let (key, value) = entry?;
        let corrupt = |reason: &str| AuditError::Corrupt {
            key: hex::encode(&key),
            reason: reason.to_string(),
        };
        let count_key = CountKey::decode(&key).ok_or_else(|| corrupt("bad counter key"))?;
        let value: [u8; 8] = value
            .as_slice()
            .try_into()
            .map_err(|_| corrupt("counter value is not 8 bytes"))?;
        out.insert(count_key, u64::from_be_bytes(value));
    }
    Ok(out)
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
