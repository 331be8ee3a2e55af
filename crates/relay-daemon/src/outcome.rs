//! What an attempt means, and writing it down. Every outcome of every delivery passes
//! through this module: [`judge`] decides (sent, retry later, failed for good) and the
//! recorder task writes it. The one place to count deliveries.
//!
//! The recorder batches: whatever outcomes have arrived within a moment (longer while
//! they come one at a time, see QUIET_GATHER) are written with a single
//! statement (one round trip), which updates the queue rows and appends
//! `webhook_logs` (every attempt) and `webhook_retry_history` (every failed attempt).
//! Neither the signature nor any secret is ever written. A row's slot is freed only
//! once its outcome is stored, so the rows this relay holds in `sending` stay bounded
//! (see [`crate::dispatcher`]) and a database outage stops new claims instead of
//! piling up unrecorded results.

use std::sync::Arc;
use std::time::Duration;

use relay_core::metrics::{self, Outcome};
use relay_core::retry::{RetryDecision, RetrySchedule};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

use crate::db::Db;
use crate::delivery::Attempt;
use crate::error::DaemonError;
use crate::shared::{Job, Slot, Wake};

/// Outcomes written per statement at most.
const MAX_BATCH: usize = 512;
/// How long the first outcome of a batch waits for others.
const GATHER: Duration = Duration::from_millis(2);
/// When fewer than QUIET_ROWS outcomes came within GATHER (events arrive one at a
/// time), the batch waits on for more, up to QUIET_GATHER after its first or until
/// QUIET_ROWS are in. Each statement has a fixed cost in Postgres far above a row's
/// (at 200 events/s each outcome was written alone: about half a millisecond of
/// execution for one row). Bounded in rows, the wait holds at most QUIET_ROWS more
/// slots, so a busy relay's batches are what they were. Not when a row of the batch
/// is ordered: its entity's next event waits for this write.
const QUIET_GATHER: Duration = Duration::from_millis(20);
const QUIET_ROWS: usize = 8;
/// Batches written at once, each on its own pooled connection.
const WRITERS: usize = 2;

/// The queue update only applies while the row still carries this relay's lease
/// (see [`crate::claim`]); the ids it did not apply to are returned.
///
/// It commits asynchronously (`synchronous_commit` off for this statement only), as
/// route and claim do: a row's slot waits for this write, so a WAL flush here would
/// pace the claims. The `set_config` sits in a one-row `FROM` so that it runs whatever
/// the plan: joined to the rows not applied (normally none), it ran only while the
/// planner put it on the outer side of the join. With the relay's own plans the
/// outcome write was seen waiting for WAL syncs (`n8n-relay-bench --profile`:
/// `IO:WALSync` in this statement at 200 events/s), and a statement of that shape with
/// the join the other way round synced on every commit (`pg_stat_wal.wal_sync`).
///
/// The rows are found by primary key, and the `sending` test is a `CASE` so that no
/// index can serve it: statistics taken before a drain (nothing sending yet) made
/// `status = 'sending'` look like a handful of rows, and the update read them all from
/// `webhook_queue_lease_idx`, whose dead entries (every row delivered since the last
/// vacuum passed through `sending`) it visited on every batch: 5,600 heap pages per
/// outcome batch halfway through a 100,000-event drain, about a third of the CPU
/// Postgres spent on the drain (`perf`).
///
/// An outcome lost to a Postgres crash leaves its row `sending`; the lease expires and
/// it is delivered again with the same `X-Webhook-Id`, which at-least-once allows.
pub const RECORD: &str = "WITH o AS (
    SELECT * FROM unnest(
        $1::int8[], $2::int8[], $3::text[], $4::int4[], $5::float8[], $6::text[],
        $7::int4[], $8::int4[], $9::int4[], $10::text[], $11::text[], $12::text[],
        $13::text[]
    ) AS o(id, token, status, retry_count, delay_seconds, error, response_status,
           attempt, duration_ms, response_body, event_type, webhook_url, note)
),
queue AS (
    UPDATE webhook_queue q SET
        status = o.status,
        retry_count = o.retry_count,
        next_attempt_at = CASE WHEN o.status = 'pending'
                               THEN now() + make_interval(secs => o.delay_seconds)
                               ELSE q.next_attempt_at END,
        last_error = coalesce(o.error, q.last_error),
        last_response_status = o.response_status,
        sent_at = CASE WHEN o.status = 'sent' THEN now() ELSE q.sent_at END,
        lease_expires_at = NULL,
        claimed_by = NULL,
        updated_at = now()
    FROM o
    WHERE q.id = ANY (ARRAY(SELECT o.id FROM o)) AND q.id = o.id
      AND CASE WHEN q.status = 'sending' THEN true END
      AND (extract(epoch FROM q.lease_expires_at) * 1000000)::int8 = o.token
    RETURNING q.id
),
logs AS (
    INSERT INTO webhook_logs (direction, event_type, webhook_queue_id, webhook_url, attempt,
                              response_status, response_body, duration_ms, error_message,
                              outcome)
    SELECT 'outgoing', o.event_type, o.id, o.webhook_url, o.attempt, o.response_status,
           o.response_body, o.duration_ms, o.error,
           CASE o.status WHEN 'pending' THEN 'retry' ELSE o.status END
    FROM o
),
history AS (
    INSERT INTO webhook_retry_history (webhook_queue_id, attempt, response_status,
                                       error_message, duration_ms, next_attempt_at, note)
    SELECT o.id, o.attempt, o.response_status, o.error, o.duration_ms,
           CASE WHEN o.status = 'pending'
                THEN now() + make_interval(secs => o.delay_seconds) END,
           o.note
    FROM o
    -- a row deleted meanwhile (queue cleanup) has no history to keep
    WHERE o.status <> 'sent' AND EXISTS (SELECT 1 FROM webhook_queue q WHERE q.id = o.id)
)
SELECT ARRAY(SELECT o.id FROM o WHERE o.id NOT IN (SELECT id FROM queue)), s.async_commit
FROM (SELECT set_config('synchronous_commit', 'off', true) AS async_commit) s";

/// What a finished attempt means for its row.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Verdict {
    Sent,
    /// Pending again after `delay`, with `retry_count` retries done.
    Retry {
        delay: Duration,
        retry_count: i32,
    },
    /// No retries left: `failed`, `last_error` kept.
    Failed,
    /// Failed at once, whatever retries were left: the route counts the answer's
    /// status as final, or n8n sent `X-Webhook-Abort` (the attempt holds why).
    Refused,
}

impl Verdict {
    fn status(self) -> &'static str {
        match self {
            Verdict::Sent => "sent",
            Verdict::Retry { .. } => "pending",
            Verdict::Failed | Verdict::Refused => "failed",
        }
    }
}

/// How one route retries: its schedule (with jitter), the statuses that end a row at
/// once, and the cut for one attempt.
#[derive(Debug, Clone)]
pub(crate) struct Policy {
    pub(crate) schedule: RetrySchedule,
    pub(crate) final_statuses: Vec<u16>,
    pub(crate) timeout: Duration,
}

/// Every route's [`Policy`], by event type; rows of an event type without a route
/// (left by an earlier configuration) follow the queue's.
#[derive(Debug, Clone)]
pub(crate) struct Policies {
    by_event: std::collections::HashMap<String, Policy>,
    default: Policy,
}

impl Policies {
    pub(crate) fn new(config: &relay_core::Config) -> Policies {
        let max_retry_after = config.queue.max_retry_after_seconds;
        let by_event = config
            .routes()
            .into_iter()
            .map(|r| {
                let policy = Policy {
                    schedule: RetrySchedule::new(r.retry.delays, max_retry_after),
                    final_statuses: r.retry.final_statuses,
                    timeout: r.retry.timeout,
                };
                (r.event.as_str().to_string(), policy)
            })
            .collect();
        Policies {
            by_event,
            default: Policy {
                schedule: RetrySchedule::new(config.queue.retry_delays.clone(), max_retry_after),
                final_statuses: config.queue.final_statuses.clone(),
                timeout: config.timeout(),
            },
        }
    }

    pub(crate) fn of(&self, event_type: &str) -> &Policy {
        self.by_event.get(event_type).unwrap_or(&self.default)
    }
}

/// Any 2xx is success. An abort answer, or a status the route counts as final, fails
/// the row at once. Anything else, a timeout or a connection error follows the retry
/// schedule (a server's `Retry-After` replaces the scheduled delay).
pub(crate) fn judge(job: &Job, attempt: &Attempt, policy: &Policy) -> Verdict {
    if attempt.succeeded() {
        return Verdict::Sent;
    }
    let final_status = attempt
        .status
        .is_some_and(|s| policy.final_statuses.contains(&s));
    if attempt.abort.is_some() || final_status {
        return Verdict::Refused;
    }
    match policy
        .schedule
        .after_failure(job.retry_count, job.max_retries, attempt.retry_after)
    {
        RetryDecision::RetryIn(delay, retry_count) => Verdict::Retry { delay, retry_count },
        RetryDecision::GiveUp => Verdict::Failed,
    }
}

/// A delivery that has run, waiting to be written down. Holds its slot.
pub(crate) struct Finished {
    pub(crate) job: Job,
    pub(crate) attempt: Attempt,
    pub(crate) verdict: Verdict,
    /// Held, not read: dropping it (after the write) frees the slot.
    pub(crate) _slot: Slot,
}

/// Hands outcomes to the recorder task.
#[derive(Clone)]
pub(crate) struct Recorder {
    tx: mpsc::UnboundedSender<Finished>,
}

impl Recorder {
    /// Never blocks or awaits: a delivery task hands over its result and ends, so a
    /// task aborted at shutdown has either recorded or not started recording. Every
    /// attempt passes here exactly once, so it is counted here.
    pub(crate) fn record(&self, finished: Finished) {
        count(&finished);
        if let Err(e) = self.tx.send(finished) {
            error!(
                queue_id = e.0.job.id,
                "outcome recorder has stopped; the row returns to pending when its lease expires"
            );
        }
    }
}

/// Every attempt counts in the metrics, whether or not its row is still ours to update.
fn count(f: &Finished) {
    let (outcome, latency) = match f.verdict {
        Verdict::Sent => (Outcome::Sent, metrics::elapsed_since(&f.job.occurred_at)),
        Verdict::Retry { .. } => (Outcome::Retry, None),
        Verdict::Failed | Verdict::Refused => (Outcome::Failed, None),
    };
    metrics::global().delivery(&f.job.event_type, outcome, f.attempt.duration, latency);
}

/// Starts the recorder. It runs until every [`Recorder`] is dropped, then writes
/// what is left and ends.
pub(crate) fn spawn(
    db: Db,
    wake: mpsc::Sender<Wake>,
    shutdown: CancellationToken,
) -> (Recorder, JoinHandle<()>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(run(db, rx, wake, shutdown));
    (Recorder { tx }, task)
}

async fn run(
    db: Db,
    mut rx: mpsc::UnboundedReceiver<Finished>,
    wake: mpsc::Sender<Wake>,
    shutdown: CancellationToken,
) {
    let writers = Arc::new(Semaphore::new(WRITERS));
    let mut tasks = JoinSet::new();
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        // Outcomes of a busy relay arrive a few at a time; one statement each would
        // spend the database's time on statement overhead (measured: the write was the
        // relay's busiest statement in a drain). So gather for a moment. A slot waits
        // that much longer, which the rows claimed ahead cover.
        let started = tokio::time::Instant::now();
        let gather = tokio::time::sleep(GATHER);
        tokio::pin!(gather);
        let mut quiet = false;
        while batch.len() < MAX_BATCH {
            tokio::select! {
                biased;
                next = rx.recv() => match next {
                    Some(f) => batch.push(f),
                    None => break,
                },
                () = &mut gather => {
                    if quiet || batch.len() >= QUIET_ROWS || batch.iter().any(ordered) {
                        break;
                    }
                    quiet = true;
                    gather.as_mut().reset(started + QUIET_GATHER);
                }
            }
            if quiet && (batch.len() >= QUIET_ROWS || batch.last().is_some_and(ordered)) {
                break;
            }
        }
        // The next batch gathers while this one is written.
        let Ok(permit) = writers.clone().acquire_owned().await else {
            break;
        };
        let (db, wake, shutdown) = (db.clone(), wake.clone(), shutdown.clone());
        tasks.spawn(async move {
            write_with_retry(&db, &batch, &shutdown).await;
            // Dropping the batch frees the slots; then the pump may claim more.
            drop(batch);
            drop(permit);
            let _ = wake.try_send(Wake::Recorded);
        });
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
}

/// Whether the entity's next event waits for this outcome to be written.
fn ordered(f: &Finished) -> bool {
    f.job.ordering.is_some() || f.job.lifecycle
}

/// Writes `batch`, trying again until it is written or `stop` (the stopping relay's
/// deadline, `crate::WRITE_DOWN`) comes: then it gives up where it stands, a write in
/// flight included, and the rows return to pending once the relay is gone.
async fn write_with_retry(db: &Db, batch: &[Finished], stop: &CancellationToken) {
    let mut backoff = crate::db_backoff();
    loop {
        let written = tokio::select! {
            written = write(db, batch) => written,
            () = stop.cancelled() => break,
        };
        match written {
            Ok(stale) => {
                for id in stale {
                    warn!(
                        queue_id = id,
                        "outcome not applied: the row's lease expired or it was changed meanwhile"
                    );
                }
                return;
            }
            Err(e) => {
                let delay = backoff.next().unwrap_or(Duration::from_secs(5));
                warn!(error = %e, rows = batch.len(), retry_in_seconds = delay.as_secs_f64(), "could not record outcomes; retrying");
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = stop.cancelled() => break,
                }
            }
        }
    }
    error!(
        rows = batch.len(),
        "could not record outcomes before exiting; the rows return to pending once this relay is gone"
    );
}

async fn write(db: &Db, batch: &[Finished]) -> Result<Vec<i64>, DaemonError> {
    let n = batch.len();
    let mut ids = Vec::with_capacity(n);
    let mut tokens = Vec::with_capacity(n);
    let mut statuses = Vec::with_capacity(n);
    let mut retry_counts = Vec::with_capacity(n);
    let mut delays = Vec::with_capacity(n);
    let mut errors = Vec::with_capacity(n);
    let mut response_statuses = Vec::with_capacity(n);
    let mut attempts = Vec::with_capacity(n);
    let mut durations = Vec::with_capacity(n);
    let mut bodies = Vec::with_capacity(n);
    let mut events = Vec::with_capacity(n);
    let mut urls = Vec::with_capacity(n);
    let mut notes = Vec::with_capacity(n);
    for f in batch {
        let (retry_count, delay, note) = match f.verdict {
            Verdict::Sent => (f.job.retry_count, 0.0, None),
            Verdict::Retry { delay, retry_count } => (
                retry_count,
                delay.as_secs_f64(),
                Some(format!(
                    "retry {retry_count} of {} in {} s{}",
                    f.job.max_retries,
                    delay.as_secs(),
                    if f.attempt.retry_after.is_some() {
                        " (Retry-After)"
                    } else {
                        ""
                    }
                )),
            ),
            Verdict::Failed => (
                f.job.retry_count,
                0.0,
                Some(format!(
                    "failed after {} attempts{}",
                    f.job.attempt(),
                    ordering_note(&f.job)
                )),
            ),
            Verdict::Refused => (
                f.job.retry_count,
                0.0,
                Some(format!(
                    "failed at once, no retry: {}{}",
                    refusal_reason(&f.attempt, &f.job.event_type),
                    ordering_note(&f.job)
                )),
            ),
        };
        ids.push(f.job.id);
        tokens.push(f.job.lease_token);
        statuses.push(f.verdict.status());
        retry_counts.push(retry_count);
        delays.push(delay);
        errors.push(f.attempt.error.clone());
        response_statuses.push(f.attempt.status.map(i32::from));
        attempts.push(f.job.attempt());
        durations.push(i32::try_from(f.attempt.duration.as_millis()).unwrap_or(i32::MAX));
        bodies.push(f.attempt.body.clone());
        events.push(f.job.event_type.as_str());
        // The log shows a route's URL as everything else does, without its
        // `user:password@` (the queue row keeps it: it is what is sent to).
        urls.push(if f.job.url.contains('@') {
            std::borrow::Cow::Owned(relay_core::config::url_without_userinfo(&f.job.url))
        } else {
            std::borrow::Cow::Borrowed(f.job.url.as_str())
        });
        notes.push(note);
    }
    db.bounded("recording outcomes", async {
        let client = db.client().await?;
        let statement = client.prepare_cached(RECORD).await?;
        let rows = client
            .query(
                &statement,
                &[
                    &ids,
                    &tokens,
                    &statuses,
                    &retry_counts,
                    &delays,
                    &errors,
                    &response_statuses,
                    &attempts,
                    &durations,
                    &bodies,
                    &events,
                    &urls,
                    &notes,
                ],
            )
            .await?;
        let mut stale = Vec::new();
        for row in &rows {
            stale.extend(row.try_get::<_, Vec<i64>>(0)?);
        }
        Ok(stale)
    })
    .await
}

/// Why an attempt ended its row at once, for the history.
fn refusal_reason(attempt: &Attempt, event_type: &str) -> String {
    match (&attempt.abort, attempt.status) {
        (Some(reason), _) => format!("n8n answered X-Webhook-Abort: {reason}"),
        (None, Some(status)) => format!(
            "HTTP {status} is a final status for this route \
             (routes.{event_type}.final_statuses or queue.final_statuses)"
        ),
        (None, None) => "refused".to_string(),
    }
}

/// What a final failure means for the rest of an ordered entity, for the history.
fn ordering_note(job: &Job) -> String {
    let entity = format!(
        "{} {}",
        job.entity_type.as_deref().unwrap_or_default(),
        job.entity_id.unwrap_or_default()
    );
    let scope = if job.lifecycle {
        "to this URL and to every lifecycle route"
    } else {
        "to this URL"
    };
    match job.ordering.as_deref() {
        Some("skip") => format!(
            "; ordered (on_failure = skip): later events of {entity} {scope} are delivered \
             without it (retried by hand, it arrives after them, out of order)"
        ),
        Some("block") => format!(
            "; ordered (on_failure = block): later events of {entity} {scope} wait until \
             this row is retried or cancelled (n8n-relay queue retry|cancel {})",
            job.id
        ),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(retry_count: i32, max_retries: i32) -> Job {
        Job {
            id: 1,
            webhook_id: "w".into(),
            event_type: "lead_scraped".into(),
            entity_type: Some("lead".into()),
            entity_id: Some(1),
            url: "http://x/".into(),
            payload: "{}".into(),
            priority: 0,
            retry_count,
            max_retries,
            occurred_at: "2025-01-01T00:00:00.000000Z".into(),
            lease_token: 0,
            occurred_at_unix: 1_735_689_600.0,
            ordering: None,
            lifecycle: false,
        }
    }

    fn attempt(status: Option<u16>, retry_after: Option<u64>) -> Attempt {
        let ok = status.is_some_and(|s| (200..300).contains(&s));
        Attempt {
            status,
            error: (!ok).then(|| "HTTP 500".to_string()),
            body: None,
            duration: Duration::from_millis(3),
            retry_after: retry_after.map(Duration::from_secs),
            abort: None,
        }
    }

    fn policy(delays: Vec<u64>, final_statuses: Vec<u16>) -> Policy {
        Policy {
            schedule: RetrySchedule::new(delays, 3600),
            final_statuses,
            timeout: Duration::from_secs(5),
        }
    }

    /// Jitter aside: the scheduled delay within ±20 %.
    fn retry_in(verdict: Verdict) -> (f64, i32) {
        match verdict {
            Verdict::Retry { delay, retry_count } => (delay.as_secs_f64(), retry_count),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn final_statuses_and_the_abort_header_fail_at_once_whatever_retries_are_left() {
        let p = policy(vec![1], vec![410, 422]);
        assert_eq!(
            judge(&job(0, 3), &attempt(Some(410), None), &p),
            Verdict::Refused
        );
        assert_eq!(
            judge(&job(0, 3), &attempt(Some(422), None), &p),
            Verdict::Refused
        );
        assert!(matches!(
            judge(&job(0, 3), &attempt(Some(404), None), &p),
            Verdict::Retry { .. }
        ));
        let mut aborted = attempt(Some(500), None);
        aborted.abort = Some("lead was deleted".into());
        assert_eq!(judge(&job(0, 3), &aborted, &p), Verdict::Refused);
        assert!(refusal_reason(&aborted, "lead_scraped").contains("lead was deleted"));
        assert!(refusal_reason(&attempt(Some(410), None), "lead_scraped")
            .contains("routes.lead_scraped.final_statuses"));
    }

    #[test]
    fn any_2xx_is_sent_and_failures_follow_the_schedule() {
        let schedule = policy(vec![1, 60], Vec::new());
        assert_eq!(
            judge(&job(0, 3), &attempt(Some(204), None), &schedule),
            Verdict::Sent
        );
        let (delay, count) = retry_in(judge(&job(1, 3), &attempt(Some(500), None), &schedule));
        assert!(
            (48.0..=72.0).contains(&delay) && count == 2,
            "{delay} {count}"
        );
        let (delay, count) = retry_in(judge(&job(0, 3), &attempt(None, None), &schedule));
        assert!(
            (0.8..=1.2).contains(&delay) && count == 1,
            "{delay} {count}"
        );
        assert_eq!(
            judge(&job(3, 3), &attempt(Some(500), None), &schedule),
            Verdict::Failed
        );
    }

    #[test]
    fn retry_after_replaces_the_scheduled_delay() {
        let schedule = policy(vec![60], Vec::new());
        assert_eq!(
            judge(&job(0, 3), &attempt(Some(429), Some(2)), &schedule),
            Verdict::Retry {
                delay: Duration::from_secs(2),
                retry_count: 1
            }
        );
    }
}
