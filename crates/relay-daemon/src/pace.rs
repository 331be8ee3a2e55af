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
use std::time::{Duration, Instant};

use crate::shared::AHEAD;

/// The most rows held per request slot of a URL, for endpoints that answer fast.
pub(crate) const DEEP: usize = 16;

/// The share of the lease a row claimed ahead may spend waiting for its request.
const WAIT_SHARE: u32 = 4;

/// Each URL's recent request duration: a moving average over about the last eight
/// attempts, so one slow answer moves it a little and a slowdown within seconds. A
/// failed attempt counts as at least slow enough for the base depth: holding more
/// rows for an endpoint that fails helps nothing. A URL not attempted for a lease is
/// forgotten (its route may be gone) and starts again from the base depth.
#[derive(Debug)]
pub(crate) struct Pace {
    lease: Duration,
    per_url: HashMap<String, (Duration, Instant)>,
}

impl Pace {
    /// Depths for rows claimed with this `lease` (`queue.lease_seconds`).
    pub(crate) fn new(lease: Duration) -> Pace {
        Pace {
            lease,
            per_url: HashMap::new(),
        }
    }

    /// One finished attempt to `url` that took `took` (a timeout with its full length),
    /// and whether it delivered.
    pub(crate) fn observe(&mut self, url: &str, took: Duration, delivered: bool) {
        let took = if delivered {
            took
        } else {
            took.max(self.slow())
        };
        let now = Instant::now();
        match self.per_url.get_mut(url) {
            Some((mean, seen)) if now.duration_since(*seen) < self.lease => {
                *mean = (*mean * 7 + took) / 8;
                *seen = now;
            }
            _ => {
                self.per_url
                    .retain(|_, (_, seen)| now.duration_since(*seen) < self.lease);
                self.per_url.insert(url.to_string(), (took, now));
            }
        }
    }

    /// Rows `url` may hold per request slot: how many waves of its requests fit in a
    /// quarter of the lease, plus the one in flight, within [`AHEAD`]..=[`DEEP`].
    pub(crate) fn depth(&self, url: &str) -> usize {
        self.per_url
            .get(url)
            .map_or(AHEAD, |entry| self.depth_of(entry))
    }

    /// The URLs held deeper than [`AHEAD`], with their depth.
    pub(crate) fn deeper(&self) -> impl Iterator<Item = (&str, usize)> {
        self.per_url
            .iter()
            .map(|(url, entry)| (url.as_str(), self.depth_of(entry)))
            .filter(|(_, depth)| *depth > AHEAD)
    }

    /// The depth an entry gives: the base once it is a lease old.
    fn depth_of(&self, (mean, seen): &(Duration, Instant)) -> usize {
        if seen.elapsed() < self.lease {
            depth_at(*mean, self.lease)
        } else {
            AHEAD
        }
    }

    /// A duration that gives the base depth: what a failed attempt counts as at least.
    fn slow(&self) -> Duration {
        let waves = u32::try_from(AHEAD - 1).unwrap_or(u32::MAX);
        self.lease / WAIT_SHARE / waves
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
        assert_eq!(Pace::new(LEASE).depth("http://n8n/a"), AHEAD);
    }

    #[test]
    fn a_fast_endpoint_is_held_deep() {
        let mut pace = Pace::new(LEASE);
        pace.observe("http://n8n/a", Duration::from_millis(2), true);
        assert_eq!(pace.depth("http://n8n/a"), DEEP);
        assert_eq!(pace.depth("http://n8n/b"), AHEAD, "per URL");
        assert_eq!(
            pace.deeper().collect::<Vec<_>>(),
            vec![("http://n8n/a", DEEP)]
        );
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
        let mut pace = Pace::new(LEASE);
        for _ in 0..50 {
            pace.observe("u", Duration::from_millis(1), true);
        }
        assert_eq!(pace.depth("u"), DEEP);
        let mut attempts = 0;
        while pace.depth("u") > AHEAD {
            pace.observe("u", Duration::from_secs(30), false);
            attempts += 1;
        }
        assert!(attempts <= 8, "{attempts} timeouts before the depth fell");
    }

    #[test]
    fn an_endpoint_that_fails_fast_is_not_held_deeper() {
        let mut pace = Pace::new(LEASE);
        pace.observe("refused", Duration::from_micros(300), false);
        assert_eq!(pace.depth("refused"), AHEAD);
        assert_eq!(pace.deeper().count(), 0);
    }

    #[test]
    fn a_url_not_attempted_for_a_lease_is_forgotten() {
        let lease = Duration::from_millis(20);
        let mut pace = Pace::new(lease);
        pace.observe("gone", Duration::from_micros(10), true);
        assert_eq!(pace.depth("gone"), DEEP);
        // A lease goes by: the entry is aged by one rather than waited out.
        let seen = &mut pace.per_url.get_mut("gone").expect("an entry").1;
        *seen = seen.checked_sub(lease).expect("a clock older than a lease");
        assert_eq!(pace.depth("gone"), AHEAD);
        assert_eq!(pace.deeper().count(), 0);
        pace.observe("other", Duration::from_micros(10), true);
        assert_eq!(pace.per_url.len(), 1, "stale entries are dropped");
    }
}
