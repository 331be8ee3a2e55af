//! A run of the same failure, as the log tells it: a warning when it starts, a
//! reminder at most once a [`REMIND_EVERY`], and a line when it ends. A database
//! outage failed every retry of the listener, the pump and the sweeper with a warning
//! each: over 40 lines a minute, in which the one that said what went wrong was lost.

use std::time::Duration;

use std::time::Instant;

/// How often a failure that goes on is said again.
pub(crate) const REMIND_EVERY: Duration = Duration::from_secs(60);

#[derive(Debug, Default)]
pub(crate) struct Streak {
    since: Option<Instant>,
    warned: Option<Instant>,
    failures: u32,
    /// What the last failure was (its log message): a different one is said at once
    /// (the database came back without the relay's tables: "run migrate").
    what: &'static str,
}

/// How a failure is to be logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Say {
    /// The first of a run, or a reminder: a warning.
    Warn,
    /// One of many: at debug level.
    Quietly,
}

impl Streak {
    /// Counts a failure, `what` being how it is logged.
    pub(crate) fn failed(&mut self, what: &'static str) -> Say {
        self.failed_at(Instant::now(), what)
    }

    /// A success: the run that ended, if any, as (failures, how long since the first).
    pub(crate) fn ended(&mut self) -> Option<(u32, Duration)> {
        self.ended_at(Instant::now())
    }

    fn failed_at(&mut self, now: Instant, what: &'static str) -> Say {
        self.since.get_or_insert(now);
        self.failures = self.failures.saturating_add(1);
        let same = std::mem::replace(&mut self.what, what) == what;
        match self.warned {
            Some(at) if same && now.saturating_duration_since(at) < REMIND_EVERY => Say::Quietly,
            _ => {
                self.warned = Some(now);
                Say::Warn
            }
        }
    }

    fn ended_at(&mut self, now: Instant) -> Option<(u32, Duration)> {
        let since = self.since.take()?;
        let failures = std::mem::take(&mut self.failures);
        self.warned = None;
        self.what = "";
        Some((failures, now.saturating_duration_since(since)))
    }
}

/// The ids of a batch of rows for a log line: the first few and how many more, not
/// hundreds of them.
pub(crate) fn some_ids(ids: &[i64]) -> String {
    const SHOWN: usize = 10;
    let head: Vec<String> = ids.iter().take(SHOWN).map(i64::to_string).collect();
    match ids.len().checked_sub(SHOWN) {
        Some(more) if more > 0 => format!("{} and {more} more", head.join(", ")),
        _ => head.join(", "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_of_failures_warns_at_its_start_and_once_a_minute_and_reports_its_end() {
        let start = Instant::now();
        let at = |s: u64| start + Duration::from_secs(s);
        let mut streak = Streak::default();
        assert_eq!(streak.ended_at(at(0)), None, "no run, nothing ended");
        const DOWN: &str = "database error; backing off";
        assert_eq!(streak.failed_at(at(0), DOWN), Say::Warn);
        for i in 1..12 {
            assert_eq!(streak.failed_at(at(5 * i), DOWN), Say::Quietly);
        }
        assert_eq!(
            streak.failed_at(at(60), DOWN),
            Say::Warn,
            "a reminder after a minute"
        );
        assert_eq!(streak.ended_at(at(61)), Some((13, Duration::from_secs(61))));
        assert_eq!(
            streak.failed_at(at(62), DOWN),
            Say::Warn,
            "the next run warns at once"
        );
    }

    #[test]
    fn a_different_failure_in_a_run_is_said_at_once() {
        let start = Instant::now();
        let at = |s: u64| start + Duration::from_secs(s);
        let mut streak = Streak::default();
        assert_eq!(streak.failed_at(at(0), "database error"), Say::Warn);
        assert_eq!(streak.failed_at(at(5), "database error"), Say::Quietly);
        assert_eq!(streak.failed_at(at(10), "tables missing"), Say::Warn);
        assert_eq!(streak.failed_at(at(15), "tables missing"), Say::Quietly);
    }

    #[test]
    fn a_log_line_names_the_first_ten_ids_and_counts_the_rest() {
        assert_eq!(some_ids(&[]), "");
        assert_eq!(some_ids(&[1, 2]), "1, 2");
        let many: Vec<i64> = (1..=512).collect();
        assert_eq!(
            some_ids(&many),
            "1, 2, 3, 4, 5, 6, 7, 8, 9, 10 and 502 more"
        );
    }
}
