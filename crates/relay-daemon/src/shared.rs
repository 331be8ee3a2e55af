//! What the stages of the daemon hand each other, in one small module every stage
//! may use, so the stages themselves only depend along the flow (listener → wakeup →
//! pump → claim → dispatcher → delivery → outcome).

use tokio::sync::OwnedSemaphorePermit;

/// Rows a relay may hold per worker, and per URL per `max_per_endpoint`: in flight,
/// claimed ahead, or (for slots) waiting for the outcome write. The base: a URL that
/// answers fast may hold more (`crate::pace`).
pub(crate) const AHEAD: usize = 4;

/// A claimed row's place among the rows this relay holds in `sending`, kept until its
/// outcome is stored.
pub(crate) struct Slot {
    _permit: OwnedSemaphorePermit,
}

impl Slot {
    pub(crate) fn new(permit: OwnedSemaphorePermit) -> Slot {
        Slot { _permit: permit }
    }
}

/// Why the pump should look again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wake {
    /// A writer's NOTIFY.
    Notified,
    /// The listener (re)connected: notifications may have been missed.
    Reconnected,
    /// Outcomes were stored: slots are free, retries may be scheduled.
    Recorded,
    /// A worker ran out of claimed rows it may start: claim more.
    Freed,
    /// The periodic safety sweep.
    Sweep,
    /// Pauses changed (`n8n-relay queue pause|resume`): read them again.
    Control,
    /// Rows of a relay that is gone, or whose lease expired, are back in the queue:
    /// claim due rows before routing more, so they do not wait behind a backlog.
    Released,
}

/// One claimed queue row: everything needed to deliver it and record the outcome.
#[derive(Debug, Clone)]
pub(crate) struct Job {
    pub(crate) id: i64,
    pub(crate) webhook_id: String,
    pub(crate) event_type: String,
    pub(crate) entity_type: Option<String>,
    pub(crate) entity_id: Option<i64>,
    pub(crate) url: String,
    /// The jsonb payload as Postgres prints it: never parsed (see `Envelope`).
    pub(crate) payload: String,
    pub(crate) priority: i32,
    pub(crate) retry_count: i32,
    pub(crate) max_retries: i32,
    pub(crate) occurred_at: String,
    pub(crate) lease_token: i64,
    /// `occurred_at` as unix seconds, for commit-to-delivery latency.
    pub(crate) occurred_at_unix: f64,
    /// Per-entity ordering: `skip` or `block` (what a final failure means), or none.
    pub(crate) ordering: Option<String>,
    /// Ordered across routes too (`ordering_scope = 'lifecycle'`).
    pub(crate) lifecycle: bool,
}

impl Job {
    /// 1-based attempt number, sent as `X-Webhook-Attempt`.
    pub(crate) fn attempt(&self) -> i32 {
        self.retry_count.saturating_add(1)
    }
}

/// When this relay last saw one of its database sessions answer (the liveness check,
/// every half second): a relay that has not for a while may have lost its marker,
/// and another relay may be taking its rows back, so it starts no delivery.
#[derive(Debug, Clone)]
pub(crate) struct Confirmed {
    at: std::sync::Arc<std::sync::Mutex<Option<std::time::Instant>>>,
    within: std::time::Duration,
    /// How many times a confirmation came after a gap longer than `within`: rows
    /// claimed before such a gap may have been taken back by another relay meanwhile
    /// (its marker gone), so they are not started ([`Confirmed::lapses`]). Other
    /// relays wait `crate::liveness::GRACE` (2 s) before they take rows back; the
    /// shorter `within` (1.25 s) leaves room for a look that answered slowly, since
    /// a gap is measured between answers, not between the moments the server saw
    /// the marker.
    lapses: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Confirmed {
    pub(crate) fn new(within: std::time::Duration) -> Confirmed {
        Confirmed {
            at: std::sync::Arc::new(std::sync::Mutex::new(Some(std::time::Instant::now()))),
            within,
            lapses: std::sync::Arc::default(),
        }
    }

    /// A session answered just now: the liveness look, or a claim (every session
    /// holds the marker, so either proves it held).
    pub(crate) fn set(&self) {
        self.set_at(std::time::Instant::now());
    }

    /// A session's answer to a statement sent at `sent`: the marker was held then (not
    /// necessarily when the answer arrived, which a partition can delay).
    pub(crate) fn set_at(&self, sent: std::time::Instant) {
        let mut at = self.at.lock().unwrap_or_else(|p| p.into_inner());
        match *at {
            Some(last) if sent <= last => return,
            Some(last) if sent.duration_since(last) < self.within => {}
            _ => {
                self.lapses
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        }
        *at = Some(sent);
    }

    /// Changes whenever this relay's hold on its rows was unconfirmed for a while:
    /// a row claimed under an earlier count is given back to the queue, not started.
    pub(crate) fn lapses(&self) -> u64 {
        self.lapses.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub(crate) fn get(&self) -> bool {
        self.at
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some_and(|t| t.elapsed() < self.within)
    }
}

/// What this relay already has in flight per endpoint, for the per-endpoint cap.
#[derive(Debug, Clone, Default)]
pub(crate) struct EndpointLoad {
    pub(crate) urls: Vec<String>,
    pub(crate) in_flight: Vec<i32>,
    /// Endpoints at the cap: nothing more is claimed for them.
    pub(crate) saturated: Vec<String>,
}

impl EndpointLoad {
    /// At most `room` more rows for `url` (a pause, a rate limit): it counts as
    /// holding what it lacks of `cap`, and as saturated when `room` is 0.
    pub(crate) fn limit(&mut self, url: &str, room: usize, cap: i32) {
        let held = cap
            .saturating_sub(i32::try_from(room).unwrap_or(i32::MAX))
            .max(0);
        match self.urls.iter().position(|u| u == url) {
            Some(i) => self.in_flight[i] = self.in_flight[i].max(held),
            None => {
                self.urls.push(url.to_string());
                self.in_flight.push(held);
            }
        }
        if room == 0 && !self.saturated.iter().any(|u| u == url) {
            self.saturated.push(url.to_string());
        }
    }

    /// How many more rows `urls` can take before each holds `cap`.
    pub(crate) fn room(&self, urls: &[String], cap: i32) -> usize {
        urls.iter()
            .map(|url| {
                let held = self
                    .urls
                    .iter()
                    .zip(&self.in_flight)
                    .find(|(u, _)| *u == url)
                    .map_or(0, |(_, n)| *n);
                usize::try_from(cap.saturating_sub(held)).unwrap_or(0)
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_is_what_each_endpoint_lacks_of_its_cap_never_less_than_nothing() {
        let load = EndpointLoad {
            urls: vec!["a".into(), "b".into()],
            in_flight: vec![3, 9],
            saturated: vec!["b".into()],
        };
        let urls = |u: &[&str]| u.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(load.room(&urls(&["a"]), 8), 5);
        assert_eq!(load.room(&urls(&["b"]), 8), 0, "over its cap");
        assert_eq!(load.room(&urls(&["a", "b", "idle"]), 8), 5 + 8);
        assert_eq!(load.room(&[], 8), 0);
    }

    #[test]
    fn a_confirmation_after_a_gap_counts_a_lapse_and_an_older_one_changes_nothing() {
        let within = std::time::Duration::from_millis(1250);
        let confirmed = Confirmed::new(within);
        let start = std::time::Instant::now();
        let at = |ms: u64| start + std::time::Duration::from_millis(ms);
        confirmed.set_at(at(0));
        let before = confirmed.lapses();
        confirmed.set_at(at(500));
        confirmed.set_at(at(1000));
        assert_eq!(confirmed.lapses(), before, "answers half a second apart");
        confirmed.set_at(at(900));
        assert_eq!(
            confirmed.lapses(),
            before,
            "a claim sent before the last look"
        );
        confirmed.set_at(at(3000));
        assert_eq!(
            confirmed.lapses(),
            before + 1,
            "two seconds without an answer"
        );
    }
}
