//! edXML timestamps, `yyyy/MM/dd HH:mm:ss` in Vietnam time (UTC+07:00).

/// Vietnam's offset from UTC in seconds (no daylight saving).
const OFFSET_SECS: i64 = 7 * 3600;

/// Days since 1970-01-01 of a civil date (proleptic Gregorian).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Milliseconds since the Unix epoch of `yyyy/MM/dd HH:mm:ss` read in
/// Vietnam time; `None` if not a real date and time at or after the epoch.
pub fn parse_timestamp(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() != 19 || b[10] != b' ' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    if !truc_doc::is_valid_date(&s[..10]) {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        b[r].iter().try_fold(0i64, |acc, &c| {
            c.is_ascii_digit().then(|| acc * 10 + i64::from(c - b'0'))
        })
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if h > 23 || mi > 59 || se > 59 {
        return None;
    }
    let secs = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + se - OFFSET_SECS;
    u64::try_from(secs).ok().map(|s| s * 1000)
}

/// `unix_ms` as `yyyy/MM/dd HH:mm:ss` in Vietnam time (milliseconds dropped).
pub fn format_timestamp(unix_ms: u64) -> String {
    let secs = i64::try_from(unix_ms / 1000).unwrap_or(i64::MAX / 2) + OFFSET_SECS;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}/{m:02}/{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vietnam_time_both_ways() {
        // 2026-12-01 00:05:27 UTC is 07:05:27 in Hà Nội.
        let ms = 1_796_083_527_000;
        assert_eq!(format_timestamp(ms), "2026/12/01 07:05:27");
        assert_eq!(parse_timestamp("2026/12/01 07:05:27"), Some(ms));
        assert_eq!(
            parse_timestamp("2024/02/29 23:59:59")
                .map(format_timestamp)
                .as_deref(),
            Some("2024/02/29 23:59:59")
        );
    }

    #[test]
    fn refuses_what_is_not_a_time() {
        for s in [
            "2026/02/30 10:00:00",
            "2026/12/01 24:00:00",
            "2026/12/01T07:05:27",
            "2026/12/01",
            "1970/01/01 06:59:59",
            "2026/12/01 07:05:2x",
        ] {
            assert_eq!(parse_timestamp(s), None, "{s}");
        }
    }
}
