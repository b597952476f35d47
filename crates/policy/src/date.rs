//! Dates for the `Date*` operators: W3C ISO-8601 profiles and epoch seconds, to milliseconds.

/// Parses `2020-01-01`, `2020-01-01T12:00Z`, `2020-01-01T12:00:00.123+02:00`, or epoch seconds
/// (`1577836800`). Returns milliseconds since the Unix epoch.
pub fn parse_date(s: &str) -> Option<i64> {
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse::<i64>().ok()?.checked_mul(1000);
    }
    let b = s.as_bytes();
    let num = |from: usize, len: usize| -> Option<i64> {
        let part = s.get(from..from + len)?;
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    let year = num(0, 4)?;
    let (mut month, mut day) = (1, 1);
    let mut i = 4;
    if b.get(i) == Some(&b'-') {
        month = num(i + 1, 2)?;
        i += 3;
        if b.get(i) == Some(&b'-') {
            day = num(i + 1, 2)?;
            i += 3;
        }
    }
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    let (mut hour, mut minute, mut second, mut millis) = (0, 0, 0, 0);
    let mut offset_minutes = 0;
    if matches!(b.get(i), Some(b'T' | b't')) {
        hour = num(i + 1, 2)?;
        if b.get(i + 3) != Some(&b':') {
            return None;
        }
        minute = num(i + 4, 2)?;
        i += 6;
        if b.get(i) == Some(&b':') {
            second = num(i + 1, 2)?;
            i += 3;
            if b.get(i) == Some(&b'.') {
                let start = i + 1;
                let mut end = start;
                while b.get(end).is_some_and(u8::is_ascii_digit) {
                    end += 1;
                }
                if end == start {
                    return None;
                }
                // Milliseconds: the first three digits, padded.
                let frac = &s[start..end.min(start + 3)];
                millis = frac.parse::<i64>().ok()? * 10_i64.pow(3 - frac.len() as u32);
                i = end;
            }
        }
        if hour > 23 || minute > 59 || second > 60 {
            return None;
        }
        match b.get(i) {
            Some(b'Z' | b'z') => i += 1,
            Some(&sign @ (b'+' | b'-')) => {
                let oh = num(i + 1, 2)?;
                if b.get(i + 3) != Some(&b':') {
                    return None;
                }
                let om = num(i + 4, 2)?;
                offset_minutes = (oh * 60 + om) * if sign == b'+' { 1 } else { -1 };
                i += 6;
            }
            // No designator: UTC.
            _ => {}
        }
    }
    if i != b.len() {
        return None;
    }
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset_minutes * 60;
    Some(seconds * 1000 + millis)
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Formats milliseconds since the epoch as `2020-01-01T00:00:00Z` (for traces and wire output).
pub fn format_date(millis: i64) -> String {
    let mut out = String::with_capacity(20);
    format_date_into(millis, &mut out);
    out
}

/// [`format_date`], appended to `out` (an answer being written needs no string of its own).
pub fn format_date_into(millis: i64, target: &mut String) {
    use std::fmt::Write as _;
    let secs = millis.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Inverse of days_from_civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let (hh, mm, ss) = (rem / 3600, rem % 3600 / 60, rem % 60);
    if !(0..=9999).contains(&y) {
        let _ = write!(target, "{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}Z");
        return;
    }
    // Written digit by digit: this runs several times per STS request, and `format!` with
    // padding costs more than the calendar arithmetic.
    let mut out = *b"0000-00-00T00:00:00Z";
    let put = |out: &mut [u8; 20], at: usize, width: usize, mut v: i64| {
        for i in (at..at + width).rev() {
            out[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(&mut out, 0, 4, y);
    put(&mut out, 5, 2, m);
    put(&mut out, 8, 2, d);
    put(&mut out, 11, 2, hh);
    put(&mut out, 14, 2, mm);
    put(&mut out, 17, 2, ss);
    target.extend(out.iter().map(|&b| char::from(b)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_and_epoch_forms() {
        assert_eq!(parse_date("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_date("1577836800"), Some(1_577_836_800_000));
        assert_eq!(parse_date("2020-01-01"), Some(1_577_836_800_000));
        assert_eq!(parse_date("2020-01"), Some(1_577_836_800_000));
        assert_eq!(parse_date("2020-01-01T00:00Z"), Some(1_577_836_800_000));
        assert_eq!(
            parse_date("2020-01-01T02:00:00.5+02:00"),
            Some(1_577_836_800_500)
        );
        assert_eq!(
            parse_date("2019-12-31T23:00:00-01:00"),
            Some(1_577_836_800_000)
        );
        assert_eq!(parse_date("2020-02-30"), None);
        assert_eq!(parse_date("2020-01-01T25:00Z"), None);
        assert_eq!(parse_date("yesterday"), None);
        assert_eq!(parse_date("2020-01-01Tx"), None);
    }

    #[test]
    fn format_round_trips() {
        for s in [
            "2020-01-01T00:00:00Z",
            "1999-12-31T23:59:59Z",
            "2024-02-29T12:34:56Z",
        ] {
            assert_eq!(format_date(parse_date(s).unwrap()), s);
        }
        assert_eq!(format_date(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_date(1_700_000_000_999), "2023-11-14T22:13:20Z");
        assert_eq!(format_date(-1000), "1969-12-31T23:59:59Z");
        assert_eq!(format_date(253_402_300_799_000), "9999-12-31T23:59:59Z");
        assert_eq!(format_date(253_402_300_800_000), "10000-01-01T00:00:00Z");
    }
}
