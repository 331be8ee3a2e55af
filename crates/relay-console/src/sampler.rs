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

/// What one sample reads of `webhook_logs`: the rows above `$1` (the highest id seen)
/// and the ids in `$2`, ids below it that were missing when it was read. Ids are drawn
/// at INSERT and seen at COMMIT, so with two outcome writers per relay (and several
/// relays) a row may become visible after a higher one was counted: it is looked for
/// again until it comes or [`MISSING_FOR`] passes (a rolled-back insert never comes).
/// One row per:
/// - `count`: outgoing attempts of a minute, outcome, event and URL (`minute`, `outcome`,
///   `event`, `url`, `n`);
/// - `found`: an id of `$2` that is there now (`id`);
/// - `missing`: an id between two rows above `$1`, or between the first of them and
///   `$1` (at the first sample: the row before it, of any age), that is not (`id`; gaps of more than [`GAP_MAX`] ids are a jump of the
///   identity, not rows in flight, and are not listed);
/// - `max`: the highest id above `$1` (`id`);
/// - `top`: the highest id there is (`id`, NULL when there is none): below `$1`, the
///   table was emptied (`TRUNCATE ... RESTART IDENTITY`) and the reading starts over.
const DELIVERIES: &str = "WITH fresh AS (
        SELECT id, direction, created_at, outcome, response_status, event_type, webhook_url
        FROM webhook_logs
        WHERE id > $1 AND created_at > now() - interval '1 hour'
        UNION ALL
        SELECT id, direction, created_at, outcome, response_status, event_type, webhook_url
        FROM webhook_logs
        WHERE id = ANY($2::int8[]) AND id <= $1 AND created_at > now() - interval '1 hour'
    ), above AS (
        SELECT id, coalesce(lag(id) OVER (ORDER BY id), nullif($1, 0),
                            (SELECT coalesce(max(w.id), 0) FROM webhook_logs w
                             WHERE w.id < (SELECT min(f.id) FROM fresh f))) AS prev
        FROM fresh WHERE id > $1
    )
    SELECT 'count', (extract(epoch FROM date_trunc('minute', created_at)))::int8,
        coalesce(outcome, CASE WHEN response_status BETWEEN 200 AND 299 THEN 'sent' ELSE 'retry' END),
        coalesce(event_type, ''), coalesce(webhook_url, ''), count(*), NULL::int8
    FROM fresh WHERE direction = 'outgoing'
    GROUP BY 2, 3, 4, 5
    UNION ALL
    SELECT 'found', NULL, NULL, NULL, NULL, NULL, id FROM fresh WHERE id <= $1
    UNION ALL
    SELECT 'missing', NULL, NULL, NULL, NULL, NULL, g
    FROM above, generate_series(above.prev + 1, above.id - 1) AS g
    WHERE above.id - above.prev - 1 BETWEEN 1 AND $3
    UNION ALL
    SELECT 'max', NULL, NULL, NULL, NULL, NULL, max(id) FROM above HAVING count(*) > 0
    UNION ALL
    SELECT 'top', NULL, NULL, NULL, NULL, NULL, (SELECT max(id) FROM webhook_logs)";

/// How long an id missing below the highest seen is looked for: far past any outcome
/// writer's transaction (its statements time out well before).
const MISSING_FOR: Duration = Duration::from_secs(600);
/// A gap wider than this is the identity moved on, not rows in flight.
const GAP_MAX: i64 = 10_000;
/// Ids looked for at most; past it the oldest are let go.
const MISSING_MAX: usize = 50_000;

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

/// One row of [`DELIVERIES`].
#[derive(Debug)]
enum Reading {
    Count {
        minute: i64,
        outcome: String,
        event: String,
        url: String,
        n: i64,
    },
    Found(i64),
    Missing(i64),
    Max(i64),
    Top(Option<i64>),
}

impl Reading {
    fn of(row: &tokio_postgres::Row) -> Result<Self, tokio_postgres::Error> {
        let id = || row.try_get::<_, i64>(6);
        Ok(match row.try_get::<_, &str>(0)? {
            "count" => Reading::Count {
                minute: row.try_get(1)?,
                outcome: row.try_get(2)?,
                event: row.try_get(3)?,
                url: row.try_get(4)?,
                n: row.try_get(5)?,
            },
            "found" => Reading::Found(id()?),
            "missing" => Reading::Missing(id()?),
            "top" => Reading::Top(row.try_get(6)?),
            _ => Reading::Max(id()?),
        })
    }
}

/// Per minute, per event, per URL.
#[derive(Default)]
struct Window {
    last_id: i64,
    /// Ids below `last_id` not seen yet, with when they were first missed.
    missing: BTreeMap<i64, Instant>,
    minutes: BTreeMap<i64, Outcomes>,
    by_event: BTreeMap<(i64, String), Outcomes>,
    by_url: BTreeMap<(i64, String), Outcomes>,
}

impl Window {
    /// Takes in one reading of [`DELIVERIES`].
    fn take(&mut self, readings: Vec<Reading>, now: Instant) {
        let top = readings.iter().find_map(|r| match r {
            Reading::Top(top) => Some(top.unwrap_or(0)),
            _ => None,
        });
        if top.is_some_and(|top| top < self.last_id) {
            // Emptied and numbered from 1 again: nothing above the old highest id would
            // ever be seen. What is there now is read from the start next time.
            self.last_id = 0;
            self.missing.clear();
            return;
        }
        for reading in readings {
            match reading {
                Reading::Count {
                    minute,
                    outcome,
                    event,
                    url,
                    n,
                } => self.count(minute, &outcome, event, url, n),
                Reading::Found(id) => {
                    self.missing.remove(&id);
                }
                Reading::Missing(id) => {
                    self.missing.insert(id, now);
                }
                Reading::Max(id) => self.last_id = self.last_id.max(id),
                Reading::Top(_) => {}
            }
        }
        self.missing
            .retain(|_, since| now.duration_since(*since) < MISSING_FOR);
        while self.missing.len() > MISSING_MAX {
            self.missing.pop_first();
        }
    }

    fn count(&mut self, minute: i64, outcome: &str, event: String, url: String, n: i64) {
        self.minutes.entry(minute).or_default().add(outcome, n);
        self.by_event
            .entry((minute, event))
            .or_default()
            .add(outcome, n);
        self.by_url
            .entry((minute, url))
            .or_default()
            .add(outcome, n);
    }

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
    let missing: Vec<i64> = window.missing.keys().copied().collect();
    let readings = client
        .query(DELIVERIES, &[&window.last_id, &missing, &GAP_MAX])
        .await
        .map_err(|e| relay_core::db::describe_pg(&e))?
        .iter()
        .map(Reading::of)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| relay_core::db::describe_pg(&e))?;
    window.take(readings, Instant::now());
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
    fn an_id_missed_is_looked_for_until_it_comes_or_its_time_passes() {
        let mut w = Window::default();
        let t0 = Instant::now();
        let sent = |minute| Reading::Count {
            minute,
            outcome: "sent".into(),
            event: "e".into(),
            url: "u".into(),
            n: 1,
        };
        w.take(
            vec![
                sent(60),
                Reading::Missing(7),
                Reading::Missing(8),
                Reading::Max(9),
            ],
            t0,
        );
        assert_eq!(w.last_id, 9);
        assert_eq!(w.missing.keys().copied().collect::<Vec<_>>(), vec![7, 8]);
        // 8 committed late: counted, and no longer looked for.
        w.take(
            vec![sent(60), Reading::Found(8)],
            t0 + Duration::from_secs(5),
        );
        assert_eq!(w.minutes[&60].sent, 2);
        assert_eq!(w.missing.keys().copied().collect::<Vec<_>>(), vec![7]);
        assert_eq!(w.last_id, 9, "a late row does not move the highest id");
        // 7 never comes (its insert rolled back): let go after MISSING_FOR.
        w.take(Vec::new(), t0 + MISSING_FOR);
        assert!(w.missing.is_empty());
    }

    #[test]
    fn a_table_emptied_and_numbered_again_is_read_from_the_start() {
        let mut w = Window::default();
        let t0 = Instant::now();
        w.take(
            vec![
                Reading::Max(500),
                Reading::Missing(7),
                Reading::Top(Some(500)),
            ],
            t0,
        );
        assert_eq!(w.last_id, 500);
        w.take(vec![Reading::Top(Some(3))], t0);
        assert_eq!(w.last_id, 0, "rows 1 to 3 are new: read them");
        assert!(w.missing.is_empty());
        w.take(vec![Reading::Top(None)], t0);
        assert_eq!(w.last_id, 0);
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
