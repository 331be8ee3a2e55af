//! The overview's numbers, sampled by one task for every viewer: opening the page (or
//! a hundred of them) adds no query. The queue counts come from one GROUP BY, taken
//! less often when it is slow (at most 1 % of the time); the deliveries per minute
//! are read incrementally from `webhook_logs` (only rows newer than the last ones
//! seen, by primary key), kept for an hour in memory. Nobody looking, nothing is
//! sampled: the task sleeps from [`IDLE_AFTER`] without a view until the next one.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use deadpool_postgres::Pool;
use relay_core::pause::Pause;
use relay_core::queue_admin::{self, Stats};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// How often the overview is refreshed at most.
pub const EVERY: Duration = Duration::from_secs(5);
/// Minutes of deliveries kept.
pub const MINUTES: i64 = 60;
/// Sampling stops this long after the last view of the overview.
pub const IDLE_AFTER: Duration = Duration::from_secs(600);

/// Outgoing attempts per minute and outcome since `$1` (exclusive id), over the last
/// hour, with the newest id seen: `(minute, outcome, event, url, count, max id)`.
const DELIVERIES: &str = "SELECT (extract(epoch FROM date_trunc('minute', created_at)))::int8,
        coalesce(outcome, CASE WHEN response_status BETWEEN 200 AND 299 THEN 'sent' ELSE 'retry' END),
        coalesce(event_type, ''), coalesce(webhook_url, ''), count(*), max(id)
    FROM webhook_logs
    WHERE direction = 'outgoing' AND id > $1 AND created_at > now() - interval '1 hour'
    GROUP BY 1, 2, 3, 4";

/// The relays on this database: one row per liveness marker (every session of a
/// relay holds it, whatever `application_name` its database URL sets), with the
/// addresses its sessions come from and how many they are. Postgres shows another
/// role's sessions without address or start (NULL) unless the console's role has
/// `pg_read_all_stats`: said so, rather than passed off as a local socket.
const RELAYS: &str =
    "SELECT string_agg(DISTINCT CASE WHEN a.backend_start IS NULL THEN 'not visible to this role'
                                  ELSE coalesce(host(a.client_addr), 'local socket') END, ', '),
        coalesce(to_char(min(a.backend_start) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),
                 'not visible to this role'),
        count(*)
    FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
    WHERE l.locktype = 'advisory' AND l.granted AND l.classid = $1::int4::oid
      AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
    GROUP BY l.objid
    ORDER BY min(a.backend_start)";

/// Attempts by outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Outcomes {
    pub sent: i64,
    pub retry: i64,
    pub failed: i64,
}

impl Outcomes {
    fn add(&mut self, outcome: &str, n: i64) {
        match outcome {
            "sent" => self.sent += n,
            "failed" => self.failed += n,
            _ => self.retry += n,
        }
    }

    pub fn total(&self) -> i64 {
        self.sent + self.retry + self.failed
    }

    /// Failed attempts (retried or final) per attempt, in percent.
    pub fn failure_rate(&self) -> f64 {
        if self.total() == 0 {
            0.0
        } else {
            (self.retry + self.failed) as f64 * 100.0 / self.total() as f64
        }
    }
}

/// What the overview shows.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// When it was taken; `None` until the first sample.
    pub taken: Option<Instant>,
    pub stats: Option<Stats>,
    pub pauses: Vec<Pause>,
    /// Per minute (Unix seconds of its start), oldest first.
    pub per_minute: Vec<(i64, Outcomes)>,
    pub per_event: Vec<(String, Outcomes)>,
    pub per_url: Vec<(String, Outcomes)>,
    /// `(addresses, connected since, sessions)` of each relay.
    pub relays: Vec<(String, String, i64)>,
    /// Why the last sample failed, if it did.
    pub error: Option<String>,
}

/// The snapshot, and how a viewer wakes the sampler.
#[derive(Clone, Default)]
pub struct Shared {
    snapshot: Arc<RwLock<Snapshot>>,
    viewed: Arc<std::sync::Mutex<Option<Instant>>>,
    wake: Arc<tokio::sync::Notify>,
    /// Told after every sample, for [`Shared::refreshed`].
    sampled: Arc<tokio::sync::Notify>,
}

impl Shared {
    /// The latest snapshot; counts as a view (the sampler wakes if it slept).
    pub fn view(&self) -> Snapshot {
        let was_idle = {
            let mut viewed = self.viewed.lock().unwrap_or_else(|p| p.into_inner());
            let idle = viewed.is_none_or(|t| t.elapsed() >= IDLE_AFTER);
            *viewed = Some(Instant::now());
            idle
        };
        if was_idle {
            self.wake.notify_one();
        }
        self.snapshot
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Has the sampler look again now and waits for that sample, at most `within`:
    /// after an action (a pause), the overview it redirects to shows its effect, not
    /// the sample from before it.
    pub async fn refreshed(&self, within: Duration) {
        let asked = Instant::now();
        self.wake.notify_one();
        let fresh = async {
            loop {
                let next = self.sampled.notified();
                tokio::pin!(next);
                next.as_mut().enable();
                let taken = self
                    .snapshot
                    .read()
                    .unwrap_or_else(|p| p.into_inner())
                    .taken;
                if taken.is_some_and(|t| t > asked) {
                    return;
                }
                next.await;
            }
        };
        let _ = tokio::time::timeout(within, fresh).await;
    }

    fn watched(&self) -> bool {
        self.viewed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some_and(|t| t.elapsed() < IDLE_AFTER)
    }
}

/// Per minute, per event, per URL.
#[derive(Default)]
struct Window {
    last_id: i64,
    minutes: BTreeMap<i64, Outcomes>,
    by_event: BTreeMap<(i64, String), Outcomes>,
    by_url: BTreeMap<(i64, String), Outcomes>,
}

impl Window {
    fn trim(&mut self, now_minute: i64) {
        let oldest = now_minute - (MINUTES - 1) * 60;
        self.minutes.retain(|m, _| *m >= oldest);
        self.by_event.retain(|(m, _), _| *m >= oldest);
        self.by_url.retain(|(m, _), _| *m >= oldest);
    }

    fn totals(map: &BTreeMap<(i64, String), Outcomes>) -> Vec<(String, Outcomes)> {
        let mut sums: HashMap<&str, Outcomes> = HashMap::new();
        for ((_, name), o) in map {
            let s = sums.entry(name.as_str()).or_default();
            s.sent += o.sent;
            s.retry += o.retry;
            s.failed += o.failed;
        }
        let mut out: Vec<(String, Outcomes)> =
            sums.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        out.sort_by(|a, b| b.1.total().cmp(&a.1.total()).then(a.0.cmp(&b.0)));
        out
    }
}

/// Starts the sampler; the snapshot fills within a moment.
pub fn spawn(pool: Pool, shutdown: CancellationToken) -> Shared {
    let shared = Shared::default();
    let out = shared.clone();
    tokio::spawn(async move {
        let mut window = Window::default();
        loop {
            if !shared.watched() {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = shared.wake.notified() => {}
                }
            }
            let started = Instant::now();
            let result =
                tokio::time::timeout(Duration::from_secs(60), sample(&pool, &mut window)).await;
            let took = started.elapsed();
            {
                let mut snap = shared.snapshot.write().unwrap_or_else(|p| p.into_inner());
                match result {
                    Ok(Ok(mut next)) => {
                        // When it began: what it shows is the database as of then,
                        // and a sample begun before an action does not count as one
                        // taken after it (Shared::refreshed).
                        next.taken = Some(started);
                        *snap = next;
                    }
                    Ok(Err(e)) => {
                        // Said once per cause: the page shows it while it lasts.
                        if snap.error.as_deref() != Some(e.as_str()) {
                            warn!(error = %e, "console overview sample failed");
                        } else {
                            debug!(error = %e, "console overview sample failed");
                        }
                        snap.error = Some(e);
                    }
                    Err(_) => snap.error = Some("sampling the queue took over a minute".into()),
                }
            }
            shared.sampled.notify_waiters();
            // Keep the database at most 1 % busy with this, however large the queue.
            let pause = EVERY.max(took * 100).min(Duration::from_secs(600));
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(pause) => {}
                // An action asked for a fresh look (Shared::refreshed).
                () = shared.wake.notified() => {}
            }
        }
    });
    out
}

#[cfg(test)]
mod view_tests {
    use super::*;

    #[test]
    fn a_view_wakes_an_idle_sampler_and_keeps_it_going() {
        let shared = Shared::default();
        assert!(!shared.watched(), "nobody looked yet");
        let _ = shared.view();
        assert!(shared.watched());
    }
}

async fn sample(pool: &Pool, window: &mut Window) -> Result<Snapshot, String> {
    let client = pool
        .get()
        .await
        .map_err(|e| format!("no connection: {}", relay_core::db::describe_pool(&e)))?;
    let stats = queue_admin::stats(&client, false)
        .await
        .map_err(|e| e.to_string())?;
    let pauses = relay_core::pause::list(&client)
        .await
        .map_err(|e| e.to_string())?;
    for row in client
        .query(DELIVERIES, &[&window.last_id])
        .await
        .map_err(|e| relay_core::db::describe_pg(&e))?
    {
        let minute: i64 = row.get(0);
        let outcome: String = row.get(1);
        let event: String = row.get(2);
        let url: String = row.get(3);
        let n: i64 = row.get(4);
        let max: i64 = row.get(5);
        window.last_id = window.last_id.max(max);
        window.minutes.entry(minute).or_default().add(&outcome, n);
        window
            .by_event
            .entry((minute, event))
            .or_default()
            .add(&outcome, n);
        window
            .by_url
            .entry((minute, url))
            .or_default()
            .add(&outcome, n);
    }
    let now = i64::try_from(relay_core::signature::unix_now()).unwrap_or(0);
    let now_minute = now - now % 60;
    window.trim(now_minute);
    let per_minute = (0..MINUTES)
        .map(|i| {
            let m = now_minute - (MINUTES - 1 - i) * 60;
            (m, window.minutes.get(&m).copied().unwrap_or_default())
        })
        .collect();
    let relays = client
        .query(RELAYS, &[&relay_core::db::marker::MARKER_CLASS])
        .await
        .map_err(|e| relay_core::db::describe_pg(&e))?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    Ok(Snapshot {
        taken: None,
        stats: Some(stats),
        pauses,
        per_minute,
        per_event: Window::totals(&window.by_event),
        per_url: Window::totals(&window.by_url),
        relays,
        error: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_count_and_rate_failures() {
        let mut o = Outcomes::default();
        o.add("sent", 3);
        o.add("retry", 1);
        o.add("failed", 0);
        assert_eq!(o.total(), 4);
        assert!((o.failure_rate() - 25.0).abs() < 1e-9);
        assert_eq!(Outcomes::default().failure_rate(), 0.0);
    }

    #[test]
    fn the_window_keeps_an_hour_and_sums_by_name() {
        let mut w = Window::default();
        let now = 1_000_000 * 60;
        for (m, name) in [(now, "a"), (now - 60, "a"), (now - 3600, "b")] {
            w.minutes.entry(m).or_default().add("sent", 1);
            w.by_event
                .entry((m, name.to_string()))
                .or_default()
                .add("sent", 1);
        }
        w.trim(now);
        assert_eq!(w.minutes.len(), 2, "the minute an hour ago is gone");
        let totals = Window::totals(&w.by_event);
        assert_eq!(
            totals,
            vec![(
                "a".to_string(),
                Outcomes {
                    sent: 2,
                    retry: 0,
                    failed: 0
                }
            )]
        );
    }
}
