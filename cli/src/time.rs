//! Times on the command line: RFC 3339 instants and spans back from now (`15m`), read into
//! and printed from the milliseconds since the Unix epoch that events carry.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::CliError;

const MS_PER_DAY: i64 = 86_400_000;

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * (month + if month > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The date of a day since 1970-01-01 (H. Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Milliseconds since the epoch, now.
fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
        })
}

/// An instant as RFC 3339 in UTC, to the millisecond: `2026-12-05T04:46:38.123Z`.
pub fn format_ms(ms: u64) -> String {
    let ms = i64::try_from(ms).unwrap_or(i64::MAX);
    let (days, in_day) = (ms.div_euclid(MS_PER_DAY), ms.rem_euclid(MS_PER_DAY));
    let (year, month, day) = civil_from_days(days);
    let seconds = in_day / 1000;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60,
        in_day % 1000
    )
}

fn number(text: &str, digits: usize) -> Option<i64> {
    (text.len() == digits && text.bytes().all(|b| b.is_ascii_digit()))
        .then(|| text.parse().ok())
        .flatten()
}

/// An RFC 3339 instant (`2026-12-05T04:46:38Z`, fractions and offsets allowed) or a date
/// (`2026-12-05`, midnight UTC).
fn parse_rfc3339(text: &str) -> Option<i64> {
    let (date, time) = match text.split_once(['T', 't', ' ']) {
        Some((date, time)) => (date, Some(time)),
        None => (text, None),
    };
    let mut parts = date.split('-');
    let year = number(parts.next()?, 4)?;
    let month = number(parts.next()?, 2)?;
    let day = number(parts.next()?, 2)?;
    if parts.next().is_some() || !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    let days = days_from_civil(year, month, day);
    if civil_from_days(days) != (year, month, day) {
        return None;
    }
    let Some(time) = time else {
        return Some(days * MS_PER_DAY);
    };
    let (clock, offset_ms) = if let Some(clock) = time.strip_suffix(['Z', 'z']) {
        (clock, 0)
    } else {
        let at = time.rfind(['+', '-'])?;
        let (clock, offset) = time.split_at(at);
        let sign = if offset.starts_with('-') { -1 } else { 1 };
        let (hours, minutes) = offset[1..].split_once(':')?;
        let minutes = number(hours, 2)? * 60 + number(minutes, 2)?;
        (clock, sign * minutes * 60_000)
    };
    let (clock, fraction) = clock.split_once('.').unwrap_or((clock, ""));
    let mut fields = clock.split(':');
    let hour = number(fields.next()?, 2)?;
    let minute = number(fields.next()?, 2)?;
    let second = number(fields.next()?, 2)?;
    if fields.next().is_some() || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    if !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let millis = format!("{fraction:0<3}")[..3].parse::<i64>().ok()?;
    Some(days * MS_PER_DAY + ((hour * 60 + minute) * 60 + second) * 1000 + millis - offset_ms)
}

/// A span back from now: `90s`, `15m`, `2h`, `7d`.
fn parse_ago(text: &str) -> Option<i64> {
    let unit = match text.bytes().last()? {
        b's' => 1000,
        b'm' => 60_000,
        b'h' => 3_600_000,
        b'd' => MS_PER_DAY,
        _ => return None,
    };
    let count: i64 = text[..text.len() - 1].parse().ok().filter(|n| *n >= 0)?;
    Some(now_ms() - count.checked_mul(unit)?)
}

/// An instant given as `flag`: RFC 3339, a date, or a span back from now.
pub fn parse_instant(flag: &str, text: &str) -> Result<u64, CliError> {
    let ms = parse_rfc3339(text)
        .or_else(|| parse_ago(text))
        .ok_or_else(|| {
            CliError::bad_input(format!(
                "{flag} {text:?} is not a time: give an RFC 3339 instant \
             (2026-12-05T14:30:00Z, or with an offset like +01:00), a date (2026-12-05), or a \
             span back from now (90s, 15m, 2h, 7d)"
            ))
        })?;
    // Before 1970 is before every event.
    Ok(u64::try_from(ms).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_read_and_print_in_utc() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("1970-01-02"), Some(MS_PER_DAY));
        assert_eq!(
            parse_rfc3339("2026-12-05T04:46:38.5+01:00"),
            parse_rfc3339("2026-12-05T03:46:38.500Z")
        );
        let ms = parse_instant("--since", "2024-02-29T23:59:59.999Z").unwrap();
        assert_eq!(format_ms(ms), "2024-02-29T23:59:59.999Z");
        assert_eq!(format_ms(1_764_910_000_123), "2025-12-05T04:46:40.123Z");
        for bad in [
            "2023-02-29",
            "2026-13-01",
            "2026-12-05T25:00:00Z",
            "yesterday",
            "5x",
        ] {
            assert!(parse_instant("--at-time", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn spans_count_back_from_now() {
        let before = now_ms();
        let ago = parse_ago("2h").unwrap();
        assert!((before - 7_200_000..=now_ms() - 7_200_000).contains(&ago));
        assert_eq!(parse_ago("-2h"), None);
    }
}
