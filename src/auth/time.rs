//! RFC 3339 timestamps (key expiry) to and from `SystemTime`, without a date crate: the
//! grammar is small, and keys only need UTC instants.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Parses an RFC 3339 timestamp with an offset (`2027-01-01T00:00:00Z`,
/// `2027-01-01T01:00:00+01:00`, fractions of a second allowed; `t`/`z` and a space instead of `T`
/// too). A timestamp without an offset is refused: it names no instant.
///
/// ```
/// use chatgate::auth::{format_rfc3339, parse_rfc3339};
/// let t = parse_rfc3339("2027-01-01T01:00:00+01:00").unwrap();
/// assert_eq!(format_rfc3339(t), "2027-01-01T00:00:00Z");
/// assert!(parse_rfc3339("2027-01-01T00:00:00").is_err());
/// ```
///
/// # Errors
/// A description of what is wrong (the text is a date, never a secret, and is included).
pub fn parse_rfc3339(text: &str) -> Result<SystemTime, String> {
    let bad = |why: &str| format!("invalid RFC 3339 timestamp {text:?}: {why}");
    let b = text.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        let s = b.get(r)?;
        if !s.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(s).ok()?.parse().ok()
    };
    let shape = "expected YYYY-MM-DDTHH:MM:SS and an offset (Z or +HH:MM)";
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[13] != b':' || b[16] != b':' {
        return Err(bad(shape));
    }
    if !matches!(b[10], b'T' | b't' | b' ') {
        return Err(bad(shape));
    }
    let (Some(year), Some(month), Some(day), Some(hour), Some(minute), Some(second)) = (
        num(0..4),
        num(5..7),
        num(8..10),
        num(11..13),
        num(14..16),
        num(17..19),
    ) else {
        return Err(bad(shape));
    };
    let mut i = 19;
    let mut nanos: u64 = 0;
    if b[i] == b'.' {
        let start = i + 1;
        i = start;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return Err(bad("a '.' must be followed by digits"));
        }
        for (k, d) in b[start..i].iter().take(9).enumerate() {
            nanos += u64::from(d - b'0') * 10u64.pow(8 - k as u32);
        }
    }
    let offset_secs: i64 = match b.get(i..) {
        Some([b'Z' | b'z']) => 0,
        Some([sign @ (b'+' | b'-'), _, _, b':', _, _]) => {
            let (Some(h), Some(m)) = (num(i + 1..i + 3), num(i + 4..i + 6)) else {
                return Err(bad(shape));
            };
            if h > 23 || m > 59 {
                return Err(bad("offset out of range"));
            }
            let s = i64::from(h * 3600 + m * 60);
            if *sign == b'+' { s } else { -s }
        }
        _ => return Err(bad(shape)),
    };
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return Err(bad("no such date"));
    }
    // 60: a leap second, which RFC 3339 allows; counted as the next second's start.
    if hour > 23 || minute > 59 || second > 60 {
        return Err(bad("no such time"));
    }
    let days = days_from_civil(i64::from(year), month, day);
    let secs = days * 86_400 + i64::from(hour * 3600 + minute * 60 + second) - offset_secs;
    let since = u64::try_from(secs).map_err(|_| bad("before 1970"))?;
    Ok(UNIX_EPOCH + Duration::from_secs(since) + Duration::from_nanos(nanos))
}

/// Formats an instant as RFC 3339 in UTC, whole seconds (`2027-01-01T00:00:00Z`); instants
/// before 1970 are shown as the epoch.
pub fn format_rfc3339(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = i64::try_from(secs / 86_400).unwrap_or(i64::MAX);
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

fn is_leap(y: u32) -> bool {
    y.is_multiple_of(4) && (!y.is_multiple_of(100) || y.is_multiple_of(400))
}

fn days_in_month(y: u32, m: u32) -> u32 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's `days_from_civil`).
pub(crate) fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date (year, month, day) of days since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`).
pub(crate) fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn round_trips_and_offsets() {
        let t = parse_rfc3339("2027-01-01T00:00:00Z").unwrap();
        assert_eq!(
            t.duration_since(UNIX_EPOCH).unwrap().as_secs(),
            1_798_761_600
        );
        assert_eq!(format_rfc3339(t), "2027-01-01T00:00:00Z");
        assert_eq!(
            parse_rfc3339("2026-12-31T19:00:00-05:00").unwrap(),
            t,
            "offsets are applied"
        );
        let frac = parse_rfc3339("2024-02-29T12:34:56.5z").unwrap();
        assert_eq!(format_rfc3339(frac), "2024-02-29T12:34:56Z");
        assert_eq!(
            format_rfc3339(parse_rfc3339("1970-01-01 00:00:00Z").unwrap()),
            "1970-01-01T00:00:00Z"
        );
    }

    #[test]
    fn refuses_what_is_not_an_instant() {
        for bad in [
            "",
            "2027-01-01",
            "2027-01-01T00:00:00",
            "2027-13-01T00:00:00Z",
            "2023-02-29T00:00:00Z",
            "2027-01-01T24:00:00Z",
            "2027-01-01T00:00:00+2:00",
            "2027-01-01T00:00:00.Z",
            "1969-12-31T23:59:59Z",
            "２０２７-01-01T00:00:00Z",
        ] {
            assert!(parse_rfc3339(bad).is_err(), "{bad:?} accepted");
        }
    }
}
