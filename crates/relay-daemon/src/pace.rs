//! How fast each endpoint answers, and so how far ahead of its requests the relay may
//! claim for it.
//!
//! Every row claimed ahead waits in the dispatcher's ready buffer until one of the
//! URL's `max_per_endpoint` requests frees up. A deeper buffer makes the claims and the
//! outcome writes bigger, and each row cheaper to move: side by side on 2 cores, a
//! 100,000-event drain to one fast endpoint ran 1.55 × as fast holding 16 rows per
//! request slot as holding 8, with 0.68 of the Postgres CPU and 0.70 of the relay's per
//! event (n8n-relay-bench, three interleaved rounds). But a row that waits longer than
//! its lease allows is never sent: it expires in the buffer and returns to the queue.
//! So the depth follows the endpoint's pace: [`AHEAD`] rows per request slot while
//! the pace is unknown or slow, up to [`DEEP`] while the rows that deep would still
//! start within a quarter of the lease.

use std::collections::HashMap;
use std::time::Duration;

use crate::shared::AHEAD;

/// The most rows held per request slot of a URL, for endpoints that answer fast.
pub(crate) const DEEP: usize = 16;

/// The share of the lease a row claimed ahead may spend waiting for its request.
const WAIT_SHARE: u32 = 4;

/// Each URL's recent request duration: a moving average over about the last eight
/// attempts, so one slow answer moves it a little and a slowdown within seconds.
#[derive(Debug, Default)]
pub(crate) struct Pace {
    per_url: HashMap<String, Duration>,
}

impl Pace {
    /// One finished attempt to `url` that took `took` (answered or not: a timeout
    /// counts with its full length).
    pub(crate) fn observe(&mut self, url: &str, took: Duration) {
        match self.per_url.get_mut(url) {
            Some(mean) => *mean = (*mean * 7 + took) / 8,
            None => {
                self.per_url.insert(url.to_string(), took);
            }
        }
    }

    /// Rows `url` may hold per request slot: how many waves of its requests fit in a
    /// quarter of `lease`, plus the one in flight, within [`AHEAD`]..=[`DEEP`].
    pub(crate) fn depth(&self, url: &str, lease: Duration) -> usize {
        self.per_url
            .get(url)
            .map_or(AHEAD, |mean| depth_at(*mean, lease))
    }

    /// The URLs with a known pace.
    pub(crate) fn urls(&self) -> impl Iterator<Item = &str> {
        self.per_url.keys().map(String::as_str)
    }
}

/// [`Pace::depth`] for an endpoint answering in `mean`.
fn depth_at(mean: Duration, lease: Duration) -> usize {
    let budget = lease / WAIT_SHARE;
    let mean = mean.max(Duration::from_micros(1));
    let waves = budget.as_micros() / mean.as_micros();
    usize::try_from(waves.saturating_add(1))
        .unwrap_or(DEEP)
        .clamp(AHEAD, DEEP)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_secs(120);

    #[test]
    fn an_endpoint_never_seen_is_held_at_the_base_depth() {
        assert_eq!(Pace::default().depth("http://n8n/a", LEASE), AHEAD);
    }

    #[test]
    fn a_fast_endpoint_is_held_deep() {
        let mut pace = Pace::default();
        pace.observe("http://n8n/a", Duration::from_millis(2));
        assert_eq!(pace.depth("http://n8n/a", LEASE), DEEP);
        assert_eq!(pace.depth("http://n8n/b", LEASE), AHEAD, "per URL");
    }

    #[test]
    fn rows_held_deep_still_start_within_a_quarter_of_the_lease() {
        for ms in [1, 100, 1_000, 2_000, 3_000, 5_000, 10_000, 30_000, 120_000] {
            let mean = Duration::from_millis(ms);
            let depth = depth_at(mean, LEASE);
            assert!((AHEAD..=DEEP).contains(&depth), "{ms} ms: {depth}");
            // The last row held waits for the waves of requests before it.
            if depth > AHEAD {
                let wait = mean * u32::try_from(depth - 1).unwrap_or(u32::MAX);
                assert!(wait <= LEASE / 4, "{ms} ms: depth {depth} waits {wait:?}");
            }
        }
        assert_eq!(depth_at(Duration::from_secs(2), LEASE), DEEP);
        assert_eq!(depth_at(Duration::from_secs(5), LEASE), 7);
        assert_eq!(depth_at(Duration::from_secs(10), LEASE), AHEAD);
    }

    #[test]
    fn a_slowdown_brings_the_depth_back_within_a_few_attempts() {
        let mut pace = Pace::default();
        for _ in 0..50 {
            pace.observe("u", Duration::from_millis(1));
        }
        assert_eq!(pace.depth("u", LEASE), DEEP);
        let mut attempts = 0;
        while pace.depth("u", LEASE) > AHEAD {
            pace.observe("u", Duration::from_secs(30));
            attempts += 1;
        }
        assert!(attempts <= 8, "{attempts} timeouts before the depth fell");
    }
}
