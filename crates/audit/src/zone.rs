//! The time zone that cuts transactions into days, and civil days from Unix
//! milliseconds.
//!
//! Zones come from the IANA database compiled into the binary (jiff's bundled
//! copy), so a host without `/usr/share/zoneinfo` cuts days the same way.

use jiff::{
    Timestamp,
    civil::Date,
    tz::{Offset, TimeZone},
};

/// A time zone: an IANA name (daylight saving included, e.g.
/// `Europe/Paris`) or a fixed offset (`+07:00`).
#[derive(Clone, Debug)]
pub struct Zone {
    /// As configured and stored: the IANA name or `±HH:MM`.
    name: String,
    tz: TimeZone,
    /// Minutes east of UTC when the zone has kept one offset since 2000
    /// (long before any log): such zones cut days alike whatever their name.
    fixed: Option<i32>,
}

impl Zone {
    /// `±HH:MM` (at most 14 hours) or an IANA zone name (`UTC`,
    /// `Asia/Ho_Chi_Minh`, `Europe/Paris`, ...).
    pub fn parse(name: &str) -> Option<Zone> {
        if let Some(minutes) = parse_offset(name) {
            return Zone::fixed(minutes);
        }
        let tz = TimeZone::get(name).ok()?;
        Some(Zone::new(name.to_string(), tz))
    }

    /// The zone `minutes` east of UTC, named `±HH:MM`; None beyond ±14 hours.
    pub fn fixed(minutes: i32) -> Option<Zone> {
        if minutes.abs() > 14 * 60 {
            return None;
        }
        let offset = Offset::from_seconds(minutes * 60).ok()?;
        Some(Zone::new(offset_name(minutes), TimeZone::fixed(offset)))
    }

    fn new(name: String, tz: TimeZone) -> Zone {
        let y2000 = Timestamp::from_second(946_684_800).unwrap_or(Timestamp::UNIX_EPOCH);
        let seconds = tz.to_offset(y2000).seconds();
        let fixed =
            (tz.following(y2000).next().is_none() && seconds % 60 == 0).then_some(seconds / 60);
        Zone { name, tz, fixed }
    }

    /// The name as configured (the IANA name or `±HH:MM`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How reports name the zone: `±HH:MM` for a zone that keeps one offset
    /// (`Asia/Ho_Chi_Minh` reads `+07:00`), otherwise its IANA name.
    pub fn label(&self) -> String {
        self.fixed.map_or_else(|| self.name.clone(), offset_name)
    }

    /// Whether the two zones cut every day since 2000 alike: the same name,
    /// or the same fixed offset (a log created as `+07:00` and a config
    /// saying `Asia/Ho_Chi_Minh`).
    pub fn cuts_like(&self, other: &Zone) -> bool {
        self.name == other.name || (self.fixed.is_some() && self.fixed == other.fixed)
    }

    fn date(&self, unix_ms: u64) -> Date {
        self.tz.to_datetime(timestamp(unix_ms)).date()
    }

    /// The local day (`YYYY-MM-DD`) of a time in milliseconds since the
    /// Unix epoch.
    pub fn day(&self, unix_ms: u64) -> String {
        format_day(self.date(unix_ms))
    }

    /// The local date and time (`YYYY-MM-DD HH:MM:SS`) of a time in
    /// milliseconds since the Unix epoch.
    pub fn local_time(&self, unix_ms: u64) -> String {
        let t = self.tz.to_datetime(timestamp(unix_ms));
        format!(
            "{} {:02}:{:02}:{:02}",
            format_day(t.date()),
            t.hour(),
            t.minute(),
            t.second()
        )
    }

    /// The local day `days` calendar days before the day of `unix_ms` (not
    /// `days` × 24 hours: a day with a daylight saving change is 23 or 25
    /// hours long).
    pub fn days_before(&self, unix_ms: u64, days: i32) -> String {
        format_day(
            self.date(unix_ms)
                .saturating_sub(jiff::Span::new().days(days)),
        )
    }
}

impl Default for Zone {
    /// `Asia/Ho_Chi_Minh` (UTC+7, no daylight saving since 1975).
    fn default() -> Zone {
        Zone::parse("Asia/Ho_Chi_Minh").unwrap_or_else(|| {
            // The bundled database always has it; a fixed +07:00 cuts alike.
            Zone::new("+07:00".into(), TimeZone::fixed(jiff::tz::offset(7)))
        })
    }
}

/// Times beyond what a civil date holds (year 9999) read as its last instant.
fn timestamp(unix_ms: u64) -> Timestamp {
    i64::try_from(unix_ms)
        .ok()
        .and_then(|ms| Timestamp::from_millisecond(ms).ok())
        .unwrap_or(Timestamp::MAX)
}

fn format_day(date: Date) -> String {
    format!("{:04}-{:02}-{:02}", date.year(), date.month(), date.day())
}

/// `+HH:MM` / `-HH:MM` as minutes east of UTC.
fn parse_offset(name: &str) -> Option<i32> {
    let (sign, rest) = match name.as_bytes().first()? {
        b'+' => (1, &name[1..]),
        b'-' => (-1, &name[1..]),
        _ => return None,
    };
    let (h, m) = rest.split_once(':')?;
    if h.len() != 2 || m.len() != 2 || !(h.bytes().chain(m.bytes())).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (h, m): (i32, i32) = (h.parse().ok()?, m.parse().ok()?);
    (h <= 14 && m < 60).then_some(sign * (h * 60 + m))
}

fn offset_name(minutes: i32) -> String {
    let sign = if minutes < 0 { '-' } else { '+' };
    let m = minutes.unsigned_abs();
    format!("{sign}{:02}:{:02}", m / 60, m % 60)
}

/// The UTC day (`YYYY-MM-DD`) of a time in milliseconds since the Unix epoch.
pub fn day_of(unix_ms: u64) -> String {
    format_day(TimeZone::UTC.to_datetime(timestamp(unix_ms)).date())
}

/// The local day (`YYYY-MM-DD`) at a fixed `offset_minutes` from UTC.
pub fn day_in(unix_ms: u64, offset_minutes: i32) -> String {
    match Zone::fixed(offset_minutes) {
        Some(zone) => zone.day(unix_ms),
        None => day_of(unix_ms),
    }
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
        // Past what a civil date holds: jiff's last instant, still ten bytes.
        assert_eq!(day_of(u64::MAX), "9999-12-30");
    }

    #[test]
    fn local_times_are_in_the_zone() {
        // 2026-11-28T23:59:59Z
        let t = 1_795_910_399_000;
        let hcm = Zone::parse("Asia/Ho_Chi_Minh").expect("zone");
        assert_eq!(hcm.local_time(t), "2026-11-29 06:59:59");
        let paris = Zone::parse("Europe/Paris").expect("zone");
        assert_eq!(paris.local_time(t), "2026-11-29 00:59:59");
        assert_eq!(
            Zone::fixed(0).expect("utc").local_time(t),
            "2026-11-28 23:59:59"
        );
    }

    #[test]
    fn days_are_cut_in_the_time_zone() {
        let hcm = Zone::parse("Asia/Ho_Chi_Minh").expect("zone");
        assert_eq!(hcm.label(), "+07:00");
        // 2026-11-28T17:30:00Z is 00:30 on the 29th in Hà Nội.
        let t = 1_795_887_000_000;
        assert_eq!(day_of(t), "2026-11-28");
        assert_eq!(hcm.day(t), "2026-11-29");
        assert_eq!(day_in(t, 420), "2026-11-29");
        assert_eq!(Zone::parse("+05:30").map(|z| z.fixed), Some(Some(330)));
        assert_eq!(
            Zone::parse("-03:00").map(|z| z.label()),
            Some("-03:00".into())
        );
        assert!(Zone::parse("Mars/Olympus").is_none());
        assert!(Zone::parse("+7").is_none());
        assert!(Zone::parse("+15:00").is_none());
        assert!(Zone::parse("+1a:00").is_none());
        assert_eq!(Zone::default().name(), "Asia/Ho_Chi_Minh");
    }

    #[test]
    fn a_dst_zone_cuts_days_at_local_midnight_on_both_sides_of_a_change() {
        let paris = Zone::parse("Europe/Paris").expect("bundled tzdb has Paris");
        assert_eq!(paris.label(), "Europe/Paris");
        // Summer time starts 2026-03-29 (02:00 CET → 03:00 CEST).
        // Winter, UTC+1: midnight of 03-28 local is 03-27T23:00Z.
        let mar27_23h = 1_774_652_400_000; // 2026-03-27T23:00:00Z
        assert_eq!(paris.day(mar27_23h - 1), "2026-03-27");
        assert_eq!(paris.day(mar27_23h), "2026-03-28");
        // Summer, UTC+2: midnight of 03-30 local is 03-29T22:00Z.
        let mar29_22h = 1_774_821_600_000; // 2026-03-29T22:00:00Z
        assert_eq!(paris.day(mar29_22h - 1), "2026-03-29");
        assert_eq!(paris.day(mar29_22h), "2026-03-30");
        // A fixed +01:00 would have cut the 30th an hour late.
        assert_eq!(day_in(mar29_22h, 60), "2026-03-29");
        // Winter again from 2026-10-25: midnight of 10-26 is 10-25T23:00Z.
        let oct25_23h = 1_792_969_200_000; // 2026-10-25T23:00:00Z
        assert_eq!(paris.day(oct25_23h - 1), "2026-10-25");
        assert_eq!(paris.day(oct25_23h), "2026-10-26");
        // Calendar days back, not 24-hour steps: 00:30 on 03-30 (summer),
        // one day before is 03-29, although 24 h before is 23:30 on 03-28.
        let mar30_0030 = mar29_22h + 30 * 60_000;
        assert_eq!(paris.days_before(mar30_0030, 1), "2026-03-29");
        assert_eq!(paris.day(mar30_0030 - 86_400_000), "2026-03-28");
    }

    #[test]
    fn zones_that_keep_one_offset_cut_alike_whatever_their_name() {
        let hcm = Zone::parse("Asia/Ho_Chi_Minh").expect("zone");
        let old = Zone::fixed(420).expect("zone");
        assert!(old.cuts_like(&hcm) && hcm.cuts_like(&old));
        assert!(Zone::parse("Asia/Bangkok").expect("zone").cuts_like(&old));
        assert!(!Zone::fixed(0).expect("utc").cuts_like(&old));
        let paris = Zone::parse("Europe/Paris").expect("zone");
        assert!(!paris.cuts_like(&Zone::fixed(60).expect("zone")));
        assert!(paris.cuts_like(&paris.clone()));
    }
}
