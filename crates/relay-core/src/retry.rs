//! The delivery retry schedule. The schedule is data in the database
//! (`next_attempt_at`); this module only decides what an outcome means.

use std::time::Duration;

/// What to do with a row after an attempt that did not succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryDecision {
    /// Try again after this delay; `retry_count` becomes the given value.
    RetryIn(Duration, i32),
    /// No retries left: the row becomes `failed`.
    GiveUp,
}

/// Each scheduled delay is multiplied by a random factor in `1 ± JITTER`, so rows
/// that failed together (n8n down for a minute) do not all come back in the same
/// second. A server's `Retry-After` is honoured as given.
pub const JITTER: f64 = 0.2;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrySchedule {
    delays: Vec<u64>,
    max_retry_after: u64,
}

impl RetrySchedule {
    /// `delays` in seconds: before retry 1, 2, ...; the last one repeats.
    pub fn new(delays: Vec<u64>, max_retry_after: u64) -> Self {
        let delays = if delays.is_empty() { vec![5] } else { delays };
        RetrySchedule {
            delays,
            max_retry_after,
        }
    }

    /// The delay before retry number `retry` (1-based).
    pub fn delay_for(&self, retry: i32) -> Duration {
        let index = usize::try_from(retry.max(1) - 1).unwrap_or(0);
        let secs = self
            .delays
            .get(index)
            .or(self.delays.last())
            .copied()
            .unwrap_or(5);
        Duration::from_secs(secs)
    }

    /// After a failed attempt on a row with `retry_count` retries already done out
    /// of `max_retries`: retry (when, and the new count) or give up. A server's
    /// `Retry-After` replaces the schedule's delay, capped at `max_retry_after` (one
    /// that asks for no wait at all never gets here: the delivery takes it for none).
    pub fn after_failure(
        &self,
        retry_count: i32,
        max_retries: i32,
        retry_after: Option<Duration>,
    ) -> RetryDecision {
        if retry_count >= max_retries {
            return RetryDecision::GiveUp;
        }
        let next = retry_count + 1;
        let delay = match retry_after {
            Some(d) => d.min(Duration::from_secs(self.max_retry_after)),
            None => jittered(self.delay_for(next), fastrand::f64()),
        };
        RetryDecision::RetryIn(delay, next)
    }
}

/// `delay` scaled by `1 - JITTER + 2 * JITTER * unit` (`unit` in [0, 1)).
fn jittered(delay: Duration, unit: f64) -> Duration {
    delay.mul_f64(1.0 - JITTER + 2.0 * JITTER * unit.clamp(0.0, 1.0))
}

/// Parses a `Retry-After` header: delay-seconds or an HTTP date.
pub fn parse_retry_after(value: &str, now_unix: u64) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate_to_unix(v)?;
    Some(Duration::from_secs(when.saturating_sub(now_unix)))
}

/// IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), the form RFC 9110 requires senders
/// to use; the obsolete forms are not accepted.
fn httpdate_to_unix(v: &str) -> Option<u64> {
    let parts: Vec<&str> = v.split_whitespace().collect();
    if parts.len() != 6 || parts[5] != "GMT" {
        return None;
    }
    let day: u64 = parts[1].parse().ok()?;
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|m| *m == parts[2])? as u64
        + 1;
    let year: u64 = parts[3].parse().ok()?;
    let hms: Vec<u64> = parts[4]
        .split(':')
        .map(|p| p.parse().ok())
        .collect::<Option<Vec<u64>>>()?;
    // An HTTP date's year has four digits; outside 1970..=9999 the arithmetic below
    // would underflow (year 0 in January) or overflow (a huge year).
    if hms.len() != 3 || hms[0] > 23 || hms[1] > 59 || hms[2] > 60 || day == 0 || day > 31 {
        return None;
    }
    if !(1970..=9999).contains(&year) {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm).
    let (y, m) = if month <= 2 {
        (year - 1, month + 9)
    } else {
        (year, month - 3)
    };
    let era = y / 400;
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = (era * 146_097 + doe).checked_sub(719_468)?;
    Some(days * 86_400 + hms[0] * 3600 + hms[1] * 60 + hms[2])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The delay of a retry, checked to be the scheduled one within the jitter.
    fn within_jitter(decision: RetryDecision, secs: u64, count: i32) {
        let RetryDecision::RetryIn(delay, n) = decision else {
            panic!("{decision:?}: expected a retry");
        };
        assert_eq!(n, count);
        let (lo, hi) = (secs as f64 * (1.0 - JITTER), secs as f64 * (1.0 + JITTER));
        assert!(
            (lo..=hi).contains(&delay.as_secs_f64()),
            "{delay:?} not in {lo}..{hi}"
        );
    }

    #[test]
    fn follows_the_configured_delays_within_the_jitter_then_gives_up() {
        let s = RetrySchedule::new(vec![5, 30, 300], 3600);
        for _ in 0..100 {
            within_jitter(s.after_failure(0, 3, None), 5, 1);
            within_jitter(s.after_failure(1, 3, None), 30, 2);
            within_jitter(s.after_failure(2, 3, None), 300, 3);
        }
        assert_eq!(s.after_failure(3, 3, None), RetryDecision::GiveUp);
        assert_eq!(s.after_failure(0, 0, None), RetryDecision::GiveUp);
    }

    #[test]
    fn jitter_spreads_a_delay_over_plus_minus_a_fifth() {
        let d = Duration::from_secs(100);
        assert_eq!(jittered(d, 0.0), Duration::from_secs(80));
        assert_eq!(jittered(d, 0.5), Duration::from_secs(100));
        assert_eq!(jittered(d, 1.0), Duration::from_secs(120));
        let spread: Vec<u128> = (0..50)
            .map(|_| jittered(d, fastrand::f64()).as_millis())
            .collect();
        assert!(spread.iter().any(|&ms| ms != spread[0]), "{spread:?}");
    }

    #[test]
    fn the_last_delay_repeats() {
        let s = RetrySchedule::new(vec![1, 2], 3600);
        assert_eq!(s.delay_for(5), Duration::from_secs(2));
    }

    #[test]
    fn retry_after_replaces_the_schedule_but_is_capped() {
        let s = RetrySchedule::new(vec![5], 60);
        assert_eq!(
            s.after_failure(0, 3, Some(Duration::from_secs(2))),
            RetryDecision::RetryIn(Duration::from_secs(2), 1)
        );
        assert_eq!(
            s.after_failure(0, 3, Some(Duration::from_secs(9999))),
            RetryDecision::RetryIn(Duration::from_secs(60), 1)
        );
    }

    #[test]
    fn parses_retry_after_seconds_and_dates() {
        assert_eq!(parse_retry_after("7", 0), Some(Duration::from_secs(7)));
        // 784111777 = Sun, 06 Nov 1994 08:49:37 GMT
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", 784_111_770),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", 784_111_790),
            Some(Duration::from_secs(0))
        );
        assert_eq!(parse_retry_after("soon", 0), None);
        assert_eq!(parse_retry_after("-3", 0), None);
    }

    /// An endpoint's header is untrusted: a date whose year the day count cannot hold
    /// is no date (year 0 in January underflowed, a huge year overflowed).
    #[test]
    fn a_retry_after_date_outside_four_digit_years_is_ignored() {
        for year in ["0000", "0001", "1969", "10000", "18446744073709551615"] {
            for month in ["Jan", "Feb", "Dec"] {
                let header = format!("Thu, 01 {month} {year} 00:00:00 GMT");
                assert_eq!(parse_retry_after(&header, 0), None, "{header}");
            }
        }
        assert_eq!(
            parse_retry_after("Fri, 31 Dec 9999 23:59:59 GMT", 0),
            Some(Duration::from_secs(253_402_300_799))
        );
    }
}
