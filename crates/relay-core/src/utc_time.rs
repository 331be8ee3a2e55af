//! A time as an operator types it into the CLI (`queue retry --since`) or the console's
//! filters. One parser for both, so the same text means the same instant in each: a
//! time without a zone is UTC, the zone every command and page shows times in, whatever
//! the database server's `TimeZone` is.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// The forms accepted, for error messages.
pub const FORMS: &str = "2025-11-04T12:00:00Z, 2025-11-04T12:00 (UTC), 2025-11-04 or \
                         2025-11-04T14:00:00+02:00";

/// Unix seconds of `text`: `2025-11-04`, `2025-11-04T12:00`, `2025-11-04T12:00:00` (a
/// space may stand for the `T`, seconds may carry a fraction, which is dropped), each
/// clock form optionally followed by `Z` or an offset `+02:00`. Without a zone, UTC.
/// `None` for anything else, or a year outside 1970 to 9999.
pub fn parse_unix(text: &str) -> Option<i64> {
    let text = text.trim();
    let (date, clock) = match text.split_once(['T', 't', ' ']) {
        None => (text, "00:00:00Z"),
        Some((date, clock)) => (date, clock),
    };
    // The zone: a trailing Z, or an offset after the clock (the clock has no sign).
    let (clock, zone) = if let Some(bare) = clock.strip_suffix(['Z', 'z']) {
        (bare, "Z")
    } else if let Some(at) = clock.find(['+', '-']) {
        clock.split_at(at)
    } else {
        (clock, "Z")
    };
    let seconds = if clock.len() == 5 { ":00" } else { "" };
    let full = format!("{date}T{clock}{seconds}{zone}");
    let at = OffsetDateTime::parse(&full, &Rfc3339).ok()?;
    if !(1970..=9999).contains(&at.year()) {
        return None;
    }
    Some(at.unix_timestamp())
}

/// [`parse_unix`] as a `SystemTime`.
pub fn parse(text: &str) -> Option<SystemTime> {
    let unix = u64::try_from(parse_unix(text)?).ok()?;
    Some(UNIX_EPOCH + Duration::from_secs(unix))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOV_4_NOON: i64 = 1_762_257_600;

    #[test]
    fn a_time_without_a_zone_is_utc() {
        for text in [
            "2025-11-04T12:00:00Z",
            "2025-11-04T12:00:00",
            "2025-11-04T12:00",
            "2025-11-04 12:00",
            "2025-11-04 12:00:00z",
            " 2025-11-04T12:00:00.750Z ",
        ] {
            assert_eq!(parse_unix(text), Some(NOV_4_NOON), "{text}");
        }
        assert_eq!(parse_unix("2025-11-04"), Some(NOV_4_NOON - 12 * 3600));
    }

    #[test]
    fn an_offset_is_honoured() {
        assert_eq!(parse_unix("2025-11-04T14:00:00+02:00"), Some(NOV_4_NOON));
        assert_eq!(parse_unix("2025-11-04T14:00+02:00"), Some(NOV_4_NOON));
        assert_eq!(parse_unix("2025-11-04 02:30-09:30"), Some(NOV_4_NOON));
    }

    #[test]
    fn anything_else_is_refused() {
        for text in [
            "",
            "yesterday",
            "epoch",
            "infinity",
            "2025-13-01",
            "2025-02-30",
            "2025-11-04T25:00",
            "2025-11-04T12",
            "2025-11-04T12:00:00+2",
            "2025-11-04T12:00:00+02:00Z",
            "1969-12-31",
            "10000-01-01",
            "2025-11-04T12:00:00Z trailing",
            "04/11/2025",
        ] {
            assert_eq!(parse_unix(text), None, "{text:?}");
        }
    }

    #[test]
    fn system_time_matches_unix_seconds() {
        assert_eq!(
            parse("2025-11-04T12:00:00Z"),
            Some(UNIX_EPOCH + Duration::from_secs(1_762_257_600))
        );
    }
}
