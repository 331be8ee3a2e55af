//! Operators' view of the delivery queue: the library behind `n8n-relay queue ...`.
//!
//! Every change here is a single guarded statement (`... WHERE id = $1 AND status IN
//! (...)`), so it cannot race the dispatcher into a double send: a row the dispatcher
//! has claimed is `sending` and every action below refuses it. Timestamps leave the
//! database as ISO-8601 UTC text so the CLI needs no date library.

use std::time::SystemTime;

use serde::Serialize;
use tokio_postgres::{Client, Row};

use crate::events::EventType;

/// A queue row's status, as the `webhook_queue_status_check` constraint spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueStatus {
    Pending,
    Sending,
    Sent,
    Failed,
    Cancelled,
}

impl QueueStatus {
    pub const ALL: [QueueStatus; 5] = [
        QueueStatus::Pending,
        QueueStatus::Sending,
        QueueStatus::Sent,
        QueueStatus::Failed,
        QueueStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            QueueStatus::Pending => "pending",
            QueueStatus::Sending => "sending",
            QueueStatus::Sent => "sent",
            QueueStatus::Failed => "failed",
            QueueStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(name: &str) -> Option<QueueStatus> {
        QueueStatus::ALL
            .iter()
            .copied()
            .find(|s| s.as_str() == name)
    }
}

impl std::fmt::Display for QueueStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum QueueAdminError {
    #[error("no queue row with id {0}")]
    UnknownId(i64),
    #[error("no queue row with webhook id {0} (the X-Webhook-Id of its deliveries)")]
    UnknownWebhookId(String),
    #[error(
        "queue row {0} is in flight (status sending): a delivery attempt is running; \
         try again once it has finished"
    )]
    InFlight(i64),
    #[error(
        "queue row {0} is pending and due already: nothing to retry (if it does not go \
         out, `n8n-relay queue show {0}` says what it waits for)"
    )]
    DueAlready(i64),
    #[error("queue row {id} is {status}; only {allowed} rows can be {action}")]
    WrongStatus {
        id: i64,
        status: String,
        action: &'static str,
        allowed: &'static str,
    },
    #[error("unknown status {0:?}; known: pending, sending, sent, failed, cancelled")]
    BadStatus(String),
    #[error("unknown event type {0:?}; known: {known}", known = EventType::names().join(", "))]
    BadEvent(String),
    #[error(
        "--since {0:?} is not a time: use {forms}, or an age like 30m, 6h, 2d",
        forms = crate::utc_time::FORMS
    )]
    BadTime(String),
    #[error("--limit must be between 1 and {max}, got {0}", max = MAX_LIST_LIMIT)]
    BadLimit(i64),
    #[error("--url {0:?} is not an http:// or https:// URL")]
    BadUrl(String),
    #[error("say what: exactly one of --event EVENT, --url URL or --all")]
    BadScope,
    #[error("{0} is not paused (n8n-relay queue paused lists the pauses)")]
    NotPaused(String),
    #[error("reason: {0} characters; at most {max}", max = crate::pause::REASON_MAX)]
    ReasonTooLong(usize),
    #[error("database error: {}", crate::db::describe_pg(.0))]
    Db(#[from] tokio_postgres::Error),
    /// A cleanup that removed `done` (each batch committed) and then failed.
    #[error(
        "cleanup stopped part way, after removing {} queue rows, {} logs, {} retry history \
         rows, {} outbox events and {} workflow runs: {cause}",
        done.queue_rows, done.logs, done.retry_history, done.events, done.workflow_runs
    )]
    CleanupIncomplete {
        done: Box<CleanupReport>,
        #[source]
        cause: Box<QueueAdminError>,
    },
}

impl QueueAdminError {
    /// The operator typed something invalid (as opposed to asking for something the
    /// queue cannot do right now, or the database failing).
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            QueueAdminError::BadStatus(_)
                | QueueAdminError::BadEvent(_)
                | QueueAdminError::BadTime(_)
                | QueueAdminError::BadLimit(_)
                | QueueAdminError::BadUrl(_)
                | QueueAdminError::BadScope
                | QueueAdminError::ReasonTooLong(_)
        )
    }
}

pub type Result<T> = std::result::Result<T, QueueAdminError>;

/// Row counts per status. Every key is always present, 0 included: scripts written
/// for the older system read these exact keys.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct StatusCounts {
    pub pending: i64,
    pub sending: i64,
    pub sent: i64,
    pub failed: i64,
    pub cancelled: i64,
    pub total: i64,
}

impl StatusCounts {
    fn add(&mut self, status: &str, n: i64) {
        match QueueStatus::parse(status) {
            Some(QueueStatus::Pending) => self.pending += n,
            Some(QueueStatus::Sending) => self.sending += n,
            Some(QueueStatus::Sent) => self.sent += n,
            Some(QueueStatus::Failed) => self.failed += n,
            Some(QueueStatus::Cancelled) => self.cancelled += n,
            None => {}
        }
        self.total += n;
    }

    pub fn get(&self, status: QueueStatus) -> i64 {
        match status {
            QueueStatus::Pending => self.pending,
            QueueStatus::Sending => self.sending,
            QueueStatus::Sent => self.sent,
            QueueStatus::Failed => self.failed,
            QueueStatus::Cancelled => self.cancelled,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventStats {
    pub event_type: String,
    #[serde(flatten)]
    pub counts: StatusCounts,
    pub due_now: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stats {
    #[serde(flatten)]
    pub counts: StatusCounts,
    /// Seconds since the oldest pending row was created; `None` when nothing is pending.
    pub oldest_pending_age_seconds: Option<f64>,
    /// Pending rows whose next attempt is due (the backlog the workers face now),
    /// but not those a pause holds.
    pub due_now: i64,
    /// Pending rows held by a run-time pause (`queue pause`), not counted as due.
    pub held_by_pauses: i64,
    /// Events committed to the outbox (`webhook_events`) and not yet routed into the
    /// queue: with the relay stopped, what it will deliver once it starts, and what an
    /// uninstall would drop.
    pub not_yet_routed: i64,
    /// URLs whose last `queue.unhealthy_after` attempts all failed.
    pub unhealthy_endpoints: Vec<UnhealthyEndpoint>,
    /// Filled by [`stats`] with `by_event`, sorted by event type.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub by_event: Vec<EventStats>,
}

/// An endpoint reported unhealthy (`webhook_endpoints`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UnhealthyEndpoint {
    pub url: String,
    pub consecutive_failures: i32,
    pub last_error: Option<String>,
    /// RFC 3339 UTC.
    pub since: String,
}

const UNHEALTHY: &str = concat!(
    "SELECT url, consecutive_failures, last_error, ",
    crate::utc_text!("changed_at"),
    " FROM webhook_endpoints WHERE NOT healthy ORDER BY changed_at"
);

/// One `webhook_queue` row as operators see it (the payload only in [`Detail`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QueueRow {
    pub id: i64,
    pub webhook_id: String,
    pub event_id: Option<i64>,
    pub event_type: String,
    pub entity_type: Option<String>,
    pub entity_id: Option<i64>,
    pub webhook_url: String,
    pub priority: i32,
    pub status: String,
    pub retry_count: i32,
    pub max_retries: i32,
    pub next_attempt_at: String,
    pub last_error: Option<String>,
    pub last_response_status: Option<i32>,
    pub occurred_at: String,
    pub sent_at: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    /// Pending and not yet due (a retry delay, a `Retry-After`, parked): `queue retry`
    /// makes it due now.
    pub waiting: bool,
}

/// One `webhook_retry_history` entry: a delivery attempt, or an operator's note.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Attempt {
    pub attempt: i32,
    pub response_status: Option<i32>,
    pub error_message: Option<String>,
    pub duration_ms: Option<i32>,
    pub next_attempt_at: Option<String>,
    pub note: Option<String>,
    pub created_at: String,
}

/// One `webhook_logs` entry for a queue row.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LogEntry {
    pub id: i64,
    pub direction: String,
    pub attempt: Option<i32>,
    pub response_status: Option<i32>,
    pub duration_ms: Option<i32>,
    pub error_message: Option<String>,
    pub created_at: String,
    /// The start of n8n's answer (200 characters at most).
    pub response_excerpt: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Detail {
    #[serde(flatten)]
    pub row: QueueRow,
    pub payload: serde_json::Value,
    pub attempts: Vec<Attempt>,
    /// Newest first, at most [`SHOW_LOG_LIMIT`].
    pub logs: Vec<LogEntry>,
}

#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub status: Option<String>,
    pub event: Option<String>,
    pub limit: i64,
}

pub const MAX_LIST_LIMIT: i64 = 10_000;
pub const SHOW_LOG_LIMIT: i64 = 20;
/// Rows deleted per statement (= per transaction) by [`cleanup`]: small enough that
/// no lock is held for long, large enough to be quick.
pub const CLEANUP_BATCH: i64 = 1000;

/// Expands to the column list every [`QueueRow`] query selects (a macro so the
/// queries stay `const` strings).
macro_rules! row_columns {
    () => {
        concat!(
            "q.id, q.webhook_id::text, q.event_id, q.event_type, q.entity_type, q.entity_id,
             q.webhook_url, q.priority, q.status, q.retry_count, q.max_retries, ",
            crate::utc_text!("q.next_attempt_at"),
            ", q.last_error, q.last_response_status, ",
            crate::utc_text!("q.occurred_at"),
            ", ",
            crate::utc_text!("q.sent_at"),
            ", ",
            crate::utc_text!("q.created_at"),
            ", ",
            crate::utc_text!("q.updated_at"),
            ", q.status = 'pending' AND q.next_attempt_at > now()"
        )
    };
}

/// Due now leaves out the pending rows a pause holds, which are counted apart in the
/// same pass: the pauses, a handful of rows, are read once into arrays, not probed
/// per queue row.
const STATS: &str = "
    WITH paused AS (
        SELECT coalesce(bool_or(scope = 'all'), false) AS everything,
               coalesce(array_agg(target) FILTER (WHERE scope = 'event'), '{}') AS events,
               coalesce(array_agg(target) FILTER (WHERE scope = 'url'), '{}') AS urls
        FROM webhook_pauses
    ), rows AS (
        SELECT q.event_type, q.status, q.next_attempt_at, q.created_at,
               (p.everything OR q.event_type = ANY (p.events)
                OR q.webhook_url = ANY (p.urls)) AS held
        FROM webhook_queue q CROSS JOIN paused p
    )
    SELECT event_type, status, count(*)::bigint,
           (count(*) FILTER (WHERE status = 'pending' AND next_attempt_at <= now()
                             AND NOT held))::bigint,
           extract(epoch FROM now() - min(created_at) FILTER (WHERE status = 'pending'))::float8,
           (count(*) FILTER (WHERE status = 'pending' AND held))::bigint
    FROM rows
    GROUP BY event_type, status";

/// The outbox holds only events not yet routed (routing deletes them; `routed_at` is
/// set only by versions before that, whose routed rows `migrate` removes).
const NOT_YET_ROUTED: &str = "SELECT count(*)::bigint FROM webhook_events WHERE routed_at IS NULL";

/// Per status: rows, the oldest one's age, and (for pending rows) how late the one
/// due longest ago is: a row waiting out a retry delay or parked is not late. Times
/// written by hand as `-infinity` are left out (an infinite interval is an error, and
/// it stopped every gauge).
const DEPTH: &str = "
    SELECT status, count(*)::bigint,
           extract(epoch FROM now() - min(created_at) FILTER (WHERE isfinite(created_at)))::float8,
           extract(epoch FROM now() - min(next_attempt_at)
                   FILTER (WHERE next_attempt_at <= now() AND isfinite(next_attempt_at)))::float8
    FROM webhook_queue
    GROUP BY status";

/// Events still in the outbox, and the oldest one's age. Under load the backlog waits
/// here (the router takes up as many events as workers are free), so a count alone is
/// not a fault; with nothing routed for minutes it is (a relay that cannot route
/// looks idle on every queue gauge).
const UNROUTED: &str = "
    SELECT count(*)::bigint,
           extract(epoch FROM now() - min(occurred_at) FILTER (WHERE isfinite(occurred_at)))::float8
    FROM webhook_events WHERE routed_at IS NULL";

const LIST: &str = concat!(
    "SELECT ",
    row_columns!(),
    " FROM webhook_queue q
    WHERE ($1::text IS NULL OR q.status = $1)
      AND ($2::text IS NULL OR q.event_type = $2)
    ORDER BY q.id DESC
    LIMIT $3"
);

const SHOW_ROW: &str = concat!(
    "SELECT ",
    row_columns!(),
    ", q.payload::text FROM webhook_queue q WHERE q.id = $1"
);

const SHOW_ATTEMPTS: &str = concat!(
    "SELECT attempt, response_status, error_message, duration_ms, ",
    crate::utc_text!("next_attempt_at"),
    ", note, ",
    crate::utc_text!("created_at"),
    " FROM webhook_retry_history
    WHERE webhook_queue_id = $1
    ORDER BY id"
);

const SHOW_LOGS: &str = concat!(
    "SELECT id, direction, attempt, response_status, duration_ms, error_message, ",
    crate::utc_text!("created_at"),
    ", left(response_body, 200)
    FROM webhook_logs
    WHERE webhook_queue_id = $1
    ORDER BY id DESC
    LIMIT $2"
);

const STATUS_OF: &str = "SELECT status FROM webhook_queue WHERE id = $1";

/// Failed rows back to pending, due now, with a fresh retry budget. The old
/// `last_error` stays (it is why the row failed); the reset itself is recorded in
/// the history with the attempt count it replaced.
const RETRY_FAILED: &str = "
    WITH picked AS (
        SELECT id, retry_count FROM webhook_queue
        WHERE status = 'failed'
          AND ($1::bigint IS NULL OR id = $1)
          AND ($2::text IS NULL OR event_type = $2)
          AND ($3::timestamptz IS NULL OR created_at >= $3)
          AND ($5::text IS NULL OR webhook_url = $5)
          AND ($6::bigint IS NULL OR entity_id = $6)
          AND ($7::timestamptz IS NULL OR created_at < $7)
          AND ($8::text IS NULL OR strpos(lower(last_error), lower($8)) > 0)
          AND ($9::timestamptz IS NULL OR updated_at <= $9)
          AND ($10::text IS NULL OR entity_type = $10)
        FOR UPDATE
    ), reset AS (
        UPDATE webhook_queue q
        SET status = 'pending', retry_count = 0, next_attempt_at = now(),
            lease_expires_at = NULL, updated_at = now()
        FROM picked
        WHERE q.id = picked.id
        RETURNING q.id
    ), noted AS (
        INSERT INTO webhook_retry_history (webhook_queue_id, attempt, next_attempt_at, note)
        SELECT id, retry_count, now(), $4 FROM picked
    )
    SELECT id FROM reset ORDER BY id";

/// A pending row not yet due (a retry waiting out its delay or a `Retry-After`, a row
/// parked with `next_attempt_at = 'infinity'`), due now: the operator says not to wait.
/// Its retry count stays (it has not failed for good); the history records when it
/// was due.
const RETRY_WAITING: &str = "
    WITH picked AS (
        SELECT id, retry_count, next_attempt_at FROM webhook_queue
        WHERE id = $1 AND status = 'pending' AND next_attempt_at > now()
        FOR UPDATE
    ), reset AS (
        UPDATE webhook_queue q
        SET next_attempt_at = now(), updated_at = now()
        FROM picked
        WHERE q.id = picked.id
        RETURNING q.id
    ), noted AS (
        INSERT INTO webhook_retry_history (webhook_queue_id, attempt, next_attempt_at, note)
        SELECT id, least(retry_count, 2147483646) + 1, now(),
               $2 || ' (it was due ' || CASE WHEN isfinite(next_attempt_at)
                   THEN 'at ' || to_char(next_attempt_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')
                   ELSE 'never: parked' END || ')'
        FROM picked
    )
    SELECT id FROM reset";

const CANCEL: &str = "
    WITH picked AS (
        SELECT id, retry_count, status FROM webhook_queue
        WHERE id = $1 AND status IN ('pending', 'failed')
        FOR UPDATE
    ), cancelled AS (
        UPDATE webhook_queue q
        SET status = 'cancelled', lease_expires_at = NULL, updated_at = now()
        FROM picked
        WHERE q.id = picked.id
        RETURNING q.id
    ), noted AS (
        INSERT INTO webhook_retry_history (webhook_queue_id, attempt, note)
        SELECT id, retry_count, $2 FROM picked
    )
    SELECT picked.status FROM picked JOIN cancelled USING (id)";

const RESOLVE_AGE: &str = "SELECT now() - make_interval(secs => $1::float8)";

/// Stats, optionally broken down by event type; one GROUP BY over the queue, which
/// counts the rows pauses hold too.
pub async fn stats(client: &Client, by_event: bool) -> Result<Stats> {
    let rows = client.query(STATS, &[]).await?;
    let mut stats = Stats {
        counts: StatusCounts::default(),
        oldest_pending_age_seconds: None,
        due_now: 0,
        held_by_pauses: 0,
        not_yet_routed: client.query_one(NOT_YET_ROUTED, &[]).await?.get(0),
        unhealthy_endpoints: client
            .query(UNHEALTHY, &[])
            .await?
            .iter()
            .map(|r| UnhealthyEndpoint {
                url: r.get(0),
                consecutive_failures: r.get(1),
                last_error: r.get(2),
                since: r.get(3),
            })
            .collect(),
        by_event: Vec::new(),
    };
    let mut events: std::collections::BTreeMap<String, EventStats> = Default::default();
    for row in rows {
        let event: String = row.get(0);
        let status: String = row.get(1);
        let n: i64 = row.get(2);
        let due: i64 = row.get(3);
        let age: Option<f64> = row.get(4);
        stats.counts.add(&status, n);
        stats.due_now += due;
        stats.held_by_pauses += row.get::<_, i64>(5);
        if let Some(age) = age {
            let oldest = stats.oldest_pending_age_seconds.get_or_insert(age);
            *oldest = oldest.max(age);
        }
        if by_event {
            let entry = events.entry(event.clone()).or_insert_with(|| EventStats {
                event_type: event,
                counts: StatusCounts::default(),
                due_now: 0,
            });
            entry.counts.add(&status, n);
            entry.due_now += due;
        }
    }
    stats.by_event = events.into_values().collect();
    Ok(stats)
}

/// What the queue gauges show: see [`depth`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Depth {
    pub counts: StatusCounts,
    /// Age of the oldest pending row, seconds.
    pub oldest_pending: Option<f64>,
    /// How long ago the pending row due longest ago became due, seconds.
    pub oldest_due: Option<f64>,
    /// Events in the outbox not yet routed, and the oldest one's age.
    pub unrouted: i64,
    pub oldest_unrouted: Option<f64>,
}

/// Rows per status, the oldest pending row's age and how late the most overdue one
/// is, and the outbox's unrouted events, for the queue gauges: one GROUP BY over the
/// queue and one count of the outbox.
pub async fn depth(client: &Client) -> Result<Depth> {
    let mut depth = Depth::default();
    for row in client.query(DEPTH, &[]).await? {
        let status: &str = row.get(0);
        depth.counts.add(status, row.get(1));
        if status == QueueStatus::Pending.as_str() {
            depth.oldest_pending = row.get(2);
            depth.oldest_due = row.get(3);
        }
    }
    let outbox = client.query_one(UNROUTED, &[]).await?;
    depth.unrouted = outbox.get(0);
    depth.oldest_unrouted = outbox.get(1);
    Ok(depth)
}

/// Newest rows first, filtered by status and event type (both checked by name).
pub async fn list(client: &Client, filter: &ListFilter) -> Result<Vec<QueueRow>> {
    let status = filter.status.as_deref().map(check_status).transpose()?;
    let event = filter.event.as_deref().map(check_event).transpose()?;
    if !(1..=MAX_LIST_LIMIT).contains(&filter.limit) {
        return Err(QueueAdminError::BadLimit(filter.limit));
    }
    let rows = client
        .query(
            LIST,
            &[
                &status.map(QueueStatus::as_str),
                &event.map(EventType::as_str),
                &filter.limit,
            ],
        )
        .await?;
    Ok(rows.iter().map(queue_row).collect())
}

/// A queue row as an operator names it: by its id, or by the webhook id its deliveries
/// carry (`X-Webhook-Id`, in n8n's execution data and the relay's log), which is what
/// one has in hand from n8n's side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RowRef {
    Id(i64),
    WebhookId(String),
}

impl std::str::FromStr for RowRef {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<RowRef, String> {
        let text = text.trim();
        if let Ok(id) = text.parse::<i64>() {
            return Ok(RowRef::Id(id));
        }
        let uuid = text.len() == 36
            && text.char_indices().all(|(i, c)| match i {
                8 | 13 | 18 | 23 => c == '-',
                _ => c.is_ascii_hexdigit(),
            });
        if uuid {
            Ok(RowRef::WebhookId(text.to_ascii_lowercase()))
        } else {
            Err(format!(
                "{text:?} is neither a queue row id (a number) nor a webhook id (a UUID, \
                 the X-Webhook-Id of a delivery)"
            ))
        }
    }
}

/// No index on `webhook_id` (every delivered event would pay for one), so looking a
/// row up by it reads the queue: for an operator's one look, not for scripts in a loop.
const ID_OF_WEBHOOK: &str = "SELECT id FROM webhook_queue WHERE webhook_id = $1::text::uuid";

/// The id of the row `row` names.
pub async fn row_id(client: &Client, row: &RowRef) -> Result<i64> {
    match row {
        RowRef::Id(id) => Ok(*id),
        RowRef::WebhookId(w) => client
            .query_opt(ID_OF_WEBHOOK, &[w])
            .await?
            .map(|r| r.get(0))
            .ok_or_else(|| QueueAdminError::UnknownWebhookId(w.clone())),
    }
}

/// One row with its payload, its history (attempts and operator notes, oldest
/// first) and its most recent log entries.
pub async fn show(client: &Client, id: i64) -> Result<Detail> {
    let row = client
        .query_opt(SHOW_ROW, &[&id])
        .await?
        .ok_or(QueueAdminError::UnknownId(id))?;
    let attempts = client
        .query(SHOW_ATTEMPTS, &[&id])
        .await?
        .iter()
        .map(|r| Attempt {
            attempt: r.get(0),
            response_status: r.get(1),
            error_message: r.get(2),
            duration_ms: r.get(3),
            next_attempt_at: r.get(4),
            note: r.get(5),
            created_at: r.get(6),
        })
        .collect();
    let logs = client
        .query(SHOW_LOGS, &[&id, &SHOW_LOG_LIMIT])
        .await?
        .iter()
        .map(|r| LogEntry {
            id: r.get(0),
            direction: r.get(1),
            attempt: r.get(2),
            response_status: r.get(3),
            duration_ms: r.get(4),
            error_message: r.get(5),
            created_at: r.get(6),
            response_excerpt: r.get(7),
        })
        .collect();
    Ok(Detail {
        payload: payload_for_display(row.get(19)),
        row: queue_row(&row),
        attempts,
        logs,
    })
}

/// The stored payload as JSON, or, when it is JSON that serde_json cannot hold
/// (nesting past 128 levels, a number beyond f64), its text as a string: showing a
/// row must never fail because of what a writer put in it.
fn payload_for_display(text: String) -> serde_json::Value {
    serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text))
}

/// Which failed rows a bulk retry takes (every field optional; all must match).
#[derive(Debug, Clone, Default)]
pub struct FailedFilter {
    pub event: Option<String>,
    pub url: Option<String>,
    /// With `entity_id`, one entity: ids are per table, so lead 7 and video 7 differ.
    pub entity_type: Option<String>,
    pub entity_id: Option<i64>,
    pub since: Option<SystemTime>,
    pub until: Option<SystemTime>,
    /// Text in `last_error` (case-insensitive, taken literally).
    pub error_text: Option<String>,
    /// Only rows already failed at this moment (last changed at or before it): what a
    /// confirmation counted, not rows that failed while the operator was deciding.
    pub failed_by: Option<SystemTime>,
}

/// Puts one failed row back to pending, due now, with a fresh retry budget; or makes a
/// pending row that is not yet due (waiting out a retry delay, parked) due now. A row
/// in flight, due already, sent or cancelled is refused. `note` goes into
/// `webhook_retry_history`, and says who did it (`manual retry (cli ops@db1)`,
/// `manual retry (console ...)`).
pub async fn retry(client: &Client, id: i64, note: &str) -> Result<()> {
    let none = FailedFilter::default();
    let which = Some(id);
    let reset = client
        .query(RETRY_FAILED, &retry_params(&which, &none, &note))
        .await?;
    if !reset.is_empty() {
        return Ok(());
    }
    if !client.query(RETRY_WAITING, &[&id, &note]).await?.is_empty() {
        return Ok(());
    }
    match refusal(
        client,
        id,
        "retried",
        "failed or waiting (pending, not yet due)",
    )
    .await
    {
        QueueAdminError::WrongStatus { status, .. } if status == QueueStatus::Pending.as_str() => {
            Err(QueueAdminError::DueAlready(id))
        }
        other => Err(other),
    }
}

/// Puts every failed row (of one event type, created since a time) back to pending,
/// each with `note` in its history. Returns the ids reset, ascending.
pub async fn retry_all_failed(
    client: &Client,
    event: Option<&str>,
    since: Option<&str>,
    note: &str,
) -> Result<Vec<i64>> {
    let event = event.map(check_event).transpose()?;
    let since = match since {
        Some(text) => Some(resolve_since(client, text).await?),
        None => None,
    };
    let filter = FailedFilter {
        event: event.map(|e| e.as_str().to_string()),
        since,
        ..FailedFilter::default()
    };
    retry_failed_matching(client, &filter, note).await
}

/// Every failed row `filter` selects, back to pending; the ids reset, ascending.
pub async fn retry_failed_matching(
    client: &Client,
    filter: &FailedFilter,
    note: &str,
) -> Result<Vec<i64>> {
    if let Some(event) = &filter.event {
        check_event(event)?;
    }
    let rows = client
        .query(RETRY_FAILED, &retry_params(&None, filter, &note))
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// How many failed rows `filter` selects (for a confirmation before a bulk retry), and
/// the database's time of the count: give it back as [`FailedFilter::failed_by`] so the
/// retry takes those rows and none that failed since.
pub async fn count_failed_matching(
    client: &Client,
    filter: &FailedFilter,
) -> Result<(i64, SystemTime)> {
    const COUNT: &str = "SELECT count(*), statement_timestamp() FROM webhook_queue
        WHERE status = 'failed'
          AND ($1::text IS NULL OR event_type = $1)
          AND ($2::timestamptz IS NULL OR created_at >= $2)
          AND ($3::text IS NULL OR webhook_url = $3)
          AND ($4::bigint IS NULL OR entity_id = $4)
          AND ($5::timestamptz IS NULL OR created_at < $5)
          AND ($6::text IS NULL OR strpos(lower(last_error), lower($6)) > 0)
          AND ($7::text IS NULL OR entity_type = $7)
          AND updated_at <= statement_timestamp()";
    let row = client
        .query_one(
            COUNT,
            &[
                &filter.event,
                &filter.since,
                &filter.url,
                &filter.entity_id,
                &filter.until,
                &filter.error_text,
                &filter.entity_type,
            ],
        )
        .await?;
    Ok((row.get(0), row.get(1)))
}

fn retry_params<'a>(
    id: &'a Option<i64>,
    filter: &'a FailedFilter,
    note: &'a &'a str,
) -> [&'a (dyn tokio_postgres::types::ToSql + Sync); 10] {
    [
        id,
        &filter.event,
        &filter.since,
        note,
        &filter.url,
        &filter.entity_id,
        &filter.until,
        &filter.error_text,
        &filter.failed_by,
        &filter.entity_type,
    ]
}

/// Cancels a pending or failed row and returns the status it had; `sending`,
/// `sent` and `cancelled` are refused. `note` as for [`retry`].
pub async fn cancel(client: &Client, id: i64, note: &str) -> Result<String> {
    match client.query_opt(CANCEL, &[&id, &note]).await? {
        Some(row) => Ok(row.get(0)),
        None => Err(refusal(client, id, "cancelled", "pending or failed").await),
    }
}

/// One row's ordering, in one statement: its setting and scope, whether the relay's
/// own gate (`webhook_order_gate()`, the function the claims call, so the page cannot
/// drift from them) lets it go, and the earliest unfinished earlier row of its entity
/// that holds it (to its URL or, under `lifecycle`, to any lifecycle route). `$2` is
/// the routed event types, as the relay passes them.
const ORDERING: &str = "SELECT q.ordering, q.ordering_scope,
        (SELECT g.clear FROM webhook_order_gate(q.webhook_url, q.entity_type, q.entity_id,
                                                q.event_id, q.ordering_scope, $2::text[]) g),
        w.id, w.event_type, w.status, w.webhook_url
    FROM webhook_queue q
    LEFT JOIN LATERAL (
        SELECT o.id, o.event_type, o.status, o.webhook_url
        FROM webhook_queue o
        WHERE o.entity_type = q.entity_type AND o.entity_id = q.entity_id
          AND o.event_id < q.event_id AND o.ordering IS NOT NULL
          AND (o.webhook_url = q.webhook_url
               OR (q.ordering_scope = 'lifecycle' AND o.ordering_scope = 'lifecycle'))
          AND (o.status IN ('pending', 'sending') OR (o.status = 'failed' AND o.ordering = 'block'))
        ORDER BY o.event_id
        LIMIT 1) w ON q.ordering IS NOT NULL
    WHERE q.id = $1";

/// The ordering of one row.
#[derive(Debug, Default, Clone, PartialEq, Serialize)]
pub struct OrderingState {
    /// `skip` or `block` (the route's on_failure); `None` for an unordered row.
    pub ordering: Option<String>,
    pub scope: Option<String>,
    /// The earlier row it waits for.
    pub waits_for: Option<Blocker>,
    /// Held by an earlier event of its entity that is still in the outbox.
    pub behind_outbox: bool,
}

/// An earlier row of an entity that holds a later one back. Named fields, so the
/// CLI's JSON redaction finds its `url` as it does every row's.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Blocker {
    pub id: i64,
    pub event_type: String,
    pub status: String,
    pub url: String,
}

/// The gate is asked with every known event type: each has a route
/// (`Config::routes`), so these are the types the relay routes.
pub async fn ordering(
    client: &Client,
    id: i64,
) -> std::result::Result<OrderingState, tokio_postgres::Error> {
    let routed = EventType::names();
    let Some(r) = client.query_opt(ORDERING, &[&id, &routed]).await? else {
        return Ok(OrderingState::default());
    };
    let ordering: Option<String> = r.get(0);
    let clear: Option<bool> = r.get(2);
    let waits_for = r.get::<_, Option<i64>>(3).map(|id| Blocker {
        id,
        event_type: r.get(4),
        status: r.get(5),
        url: r.get(6),
    });
    Ok(OrderingState {
        behind_outbox: ordering.is_some() && clear == Some(false) && waits_for.is_none(),
        ordering,
        scope: r.get(1),
        waits_for,
    })
}

/// Why a guarded update touched nothing: the row is missing, in flight, or in a
/// status the action does not apply to.
async fn refusal(
    client: &Client,
    id: i64,
    action: &'static str,
    allowed: &'static str,
) -> QueueAdminError {
    match client.query_opt(STATUS_OF, &[&id]).await {
        Err(e) => e.into(),
        Ok(None) => QueueAdminError::UnknownId(id),
        Ok(Some(row)) => {
            let status: String = row.get(0);
            if status == QueueStatus::Sending.as_str() {
                QueueAdminError::InFlight(id)
            } else {
                QueueAdminError::WrongStatus {
                    id,
                    status,
                    action,
                    allowed,
                }
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct CleanupOptions {
    pub days: u32,
    pub dry_run: bool,
    pub include_failed: bool,
}

/// What [`cleanup`] removed (or, with `dry_run`, would remove).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CleanupReport {
    pub dry_run: bool,
    pub queue_rows: i64,
    pub logs: i64,
    pub retry_history: i64,
    /// Routed outbox events none of whose queue rows is still pending, sending or failed.
    pub events: i64,
    /// `workflow_runs` last reported on longer ago than the cut-off.
    pub workflow_runs: i64,
    /// Deletion statements run; each is its own short transaction.
    pub batches: i64,
}

impl CleanupReport {
    /// Rows removed (or, in a dry run, to remove) in all.
    pub fn removed(&self) -> i64 {
        self.queue_rows + self.logs + self.retry_history + self.events + self.workflow_runs
    }
}

/// The queue rows old enough to go: queued and finished (last changed) that long ago.
/// `created_at`, never later than `updated_at`, lets `webhook_queue_created_brin`
/// narrow the search.
macro_rules! cleanup_doomed {
    () => {
        "SELECT id FROM webhook_queue
         WHERE status = ANY($1::text[]) AND created_at < now() - make_interval(days => $2)
           -- Finished that long ago too: a row of last quarter retried (or given back
           -- by a relay that died) and delivered a minute ago keeps its history for as
           -- long as one delivered today. created_at narrows the search (its BRIN
           -- index); updated_at, never earlier, decides.
           AND updated_at < now() - make_interval(days => $2)
           -- A failed row under ordering 'block' holds its entity's later events until
           -- it is retried or cancelled: deleting it would release them unannounced.
           AND NOT (status = 'failed' AND ordering IS NOT DISTINCT FROM 'block')"
    };
}

/// Outbox rows old enough to go, whose queue rows are all finished (or gone).
macro_rules! cleanup_events {
    () => {
        "SELECT e.id FROM webhook_events e
         WHERE e.routed_at IS NOT NULL
           AND e.occurred_at < now() - make_interval(days => $1)
           AND NOT EXISTS (SELECT 1 FROM webhook_queue q
                           WHERE q.event_id = e.id
                             AND q.status IN ('pending', 'sending', 'failed'))"
    };
}

/// Logs that belong to no queue row (the callbacks' incoming requests).
macro_rules! cleanup_loose_logs {
    () => {
        "SELECT id FROM webhook_logs
         WHERE webhook_queue_id IS NULL AND created_at < now() - make_interval(days => $1)"
    };
}

/// Workflow runs n8n last reported on that long ago, ended or not: one still
/// `running` after it has sent nothing for the whole retention is not coming back (a
/// report after all makes it again: runs are upserted by execution id).
macro_rules! cleanup_runs {
    () => {
        "SELECT id FROM workflow_runs WHERE updated_at < now() - make_interval(days => $1)"
    };
}

const CLEANUP_COUNT_QUEUE: &str = concat!(
    "WITH doomed AS (",
    cleanup_doomed!(),
    ") SELECT (SELECT count(*) FROM doomed)::bigint,
       (SELECT count(*) FROM webhook_logs WHERE webhook_queue_id IN (SELECT id FROM doomed))::bigint,
       (SELECT count(*) FROM webhook_retry_history
         WHERE webhook_queue_id IN (SELECT id FROM doomed))::bigint"
);
const CLEANUP_COUNT_EVENTS: &str =
    concat!("SELECT count(*)::bigint FROM (", cleanup_events!(), ") e");
const CLEANUP_COUNT_LOOSE_LOGS: &str = concat!(
    "SELECT count(*)::bigint FROM (",
    cleanup_loose_logs!(),
    ") l"
);

/// One batch: queue rows with their logs and history, in one statement.
const CLEANUP_QUEUE_BATCH: &str = concat!(
    "WITH doomed AS (",
    cleanup_doomed!(),
    " LIMIT $3 FOR UPDATE SKIP LOCKED
    ), logs AS (
        DELETE FROM webhook_logs WHERE webhook_queue_id IN (SELECT id FROM doomed) RETURNING 1
    ), history AS (
        DELETE FROM webhook_retry_history WHERE webhook_queue_id IN (SELECT id FROM doomed)
        RETURNING 1
    ), queue AS (
        DELETE FROM webhook_queue WHERE id IN (SELECT id FROM doomed) RETURNING 1
    )
    SELECT (SELECT count(*) FROM queue)::bigint, (SELECT count(*) FROM logs)::bigint,
           (SELECT count(*) FROM history)::bigint"
);
const CLEANUP_EVENTS_BATCH: &str = concat!(
    "WITH doomed AS (",
    cleanup_events!(),
    " LIMIT $2 FOR UPDATE OF e SKIP LOCKED)
    , gone AS (DELETE FROM webhook_events WHERE id IN (SELECT id FROM doomed) RETURNING 1)
    SELECT count(*)::bigint FROM gone"
);
const CLEANUP_COUNT_RUNS: &str = concat!("SELECT count(*)::bigint FROM (", cleanup_runs!(), ") r");
const CLEANUP_RUNS_BATCH: &str = concat!(
    "WITH doomed AS (",
    cleanup_runs!(),
    " LIMIT $2 FOR UPDATE SKIP LOCKED)
    , gone AS (DELETE FROM workflow_runs WHERE id IN (SELECT id FROM doomed) RETURNING 1)
    SELECT count(*)::bigint FROM gone"
);
const CLEANUP_LOOSE_LOGS_BATCH: &str = concat!(
    "WITH doomed AS (",
    cleanup_loose_logs!(),
    " LIMIT $2 FOR UPDATE SKIP LOCKED)
    , gone AS (DELETE FROM webhook_logs WHERE id IN (SELECT id FROM doomed) RETURNING 1)
    SELECT count(*)::bigint FROM gone"
);

/// Deletes finished rows older than `days`: sent and cancelled queue rows (failed
/// too with `include_failed`) with their logs and retry history, routed outbox
/// events nothing still waits on, incoming logs, and workflow runs n8n last reported
/// on before then. Works in batches of
/// [`CLEANUP_BATCH`], each its own statement, so the relay keeps running alongside.
pub async fn cleanup(client: &Client, options: CleanupOptions) -> Result<CleanupReport> {
    let mut statuses = vec![QueueStatus::Sent.as_str(), QueueStatus::Cancelled.as_str()];
    if options.include_failed {
        statuses.push(QueueStatus::Failed.as_str());
    }
    let days = i32::try_from(options.days).unwrap_or(i32::MAX);
    let mut report = CleanupReport {
        dry_run: options.dry_run,
        ..CleanupReport::default()
    };
    if options.dry_run {
        let row = client
            .query_one(CLEANUP_COUNT_QUEUE, &[&statuses, &days])
            .await?;
        report.queue_rows = row.get(0);
        report.logs = row.get(1);
        report.retry_history = row.get(2);
        report.events = client
            .query_one(CLEANUP_COUNT_EVENTS, &[&days])
            .await?
            .get(0);
        report.logs += client
            .query_one(CLEANUP_COUNT_LOOSE_LOGS, &[&days])
            .await?
            .get::<_, i64>(0);
        report.workflow_runs = client.query_one(CLEANUP_COUNT_RUNS, &[&days]).await?.get(0);
        return Ok(report);
    }
    // Each part goes as far as it can: a queue whose last batch outlasts the statement
    // timeout (a very large one) must not keep the incoming logs, unsigned requests
    // among them, from being trimmed.
    let queue: Result<()> = async {
        loop {
            let row = client
                .query_one(CLEANUP_QUEUE_BATCH, &[&statuses, &days, &CLEANUP_BATCH])
                .await?;
            report.batches += 1;
            let removed: i64 = row.get(0);
            report.queue_rows += removed;
            report.logs += row.get::<_, i64>(1);
            report.retry_history += row.get::<_, i64>(2);
            if removed < CLEANUP_BATCH {
                return Ok(());
            }
        }
    }
    .await;
    // Events after queue rows: a failed row kept above keeps its event too.
    let events = delete_in_batches(
        client,
        CLEANUP_EVENTS_BATCH,
        days,
        &mut report.batches,
        &mut report.events,
    )
    .await;
    let loose = delete_in_batches(
        client,
        CLEANUP_LOOSE_LOGS_BATCH,
        days,
        &mut report.batches,
        &mut report.logs,
    )
    .await;
    let runs = delete_in_batches(
        client,
        CLEANUP_RUNS_BATCH,
        days,
        &mut report.batches,
        &mut report.workflow_runs,
    )
    .await;
    // Each batch committed on its own: what the parts that ran removed is said with the
    // first error, not lost in it.
    match queue.err().or(events.err()).or(loose.err()).or(runs.err()) {
        None => Ok(report),
        // Nothing removed (no schema, no connection): the error alone says it.
        Some(cause) if report.removed() == 0 => Err(cause),
        Some(cause) => Err(QueueAdminError::CleanupIncomplete {
            done: Box::new(report),
            cause: Box::new(cause),
        }),
    }
}

/// Runs `statement` until a batch comes back short, adding the rows each batch
/// removed to `removed` as it commits (so they count when a later batch fails).
async fn delete_in_batches(
    client: &Client,
    statement: &str,
    days: i32,
    batches: &mut i64,
    removed: &mut i64,
) -> Result<()> {
    loop {
        let batch: i64 = client
            .query_one(statement, &[&days, &CLEANUP_BATCH])
            .await?
            .get(0);
        *batches += 1;
        *removed += batch;
        if batch < CLEANUP_BATCH {
            return Ok(());
        }
    }
}

fn check_status(name: &str) -> Result<QueueStatus> {
    QueueStatus::parse(name).ok_or_else(|| QueueAdminError::BadStatus(name.to_string()))
}

/// The checks of a command's filters that need no database, run before connecting: bad
/// input is bad input (exit 2, naming it) even while the database cannot be reached,
/// where it was a connection error.
pub fn check_filters(status: Option<&str>, event: Option<&str>, since: Option<&str>) -> Result<()> {
    status.map(check_status).transpose()?;
    event.map(check_event).transpose()?;
    if let Some(text) = since {
        if parse_age_seconds(text).is_none() && crate::utc_time::parse(text).is_none() {
            return Err(QueueAdminError::BadTime(text.to_string()));
        }
    }
    Ok(())
}

fn check_event(name: &str) -> Result<EventType> {
    EventType::parse(name).ok_or_else(|| QueueAdminError::BadEvent(name.to_string()))
}

/// `--since`: an age (`30m`, `6h`, `2d`) counted back from the database's clock, or a
/// time as the console takes it (`utc_time`: without a zone, UTC, the zone every
/// command shows times in, not the database server's).
async fn resolve_since(client: &Client, text: &str) -> Result<SystemTime> {
    let bad = || QueueAdminError::BadTime(text.to_string());
    let Some(secs) = parse_age_seconds(text) else {
        return crate::utc_time::parse(text).ok_or_else(bad);
    };
    // An age Postgres cannot count back (millions of days) is bad input too.
    let row = client
        .query_one(RESOLVE_AGE, &[&secs])
        .await
        .map_err(|e| match e.code() {
            Some(code) if code.code().starts_with("22") => bad(),
            _ => e.into(),
        })?;
    Ok(row.get(0))
}

/// `90s`, `30m`, `6h`, `2d` → seconds.
fn parse_age_seconds(text: &str) -> Option<f64> {
    let text = text.trim();
    let unit = text.chars().last()?;
    let factor = match unit {
        's' => 1.0,
        'm' => 60.0,
        'h' => 3600.0,
        'd' => 86_400.0,
        _ => return None,
    };
    let number: u32 = text[..text.len() - 1].parse().ok()?;
    Some(f64::from(number) * factor)
}

fn queue_row(r: &Row) -> QueueRow {
    QueueRow {
        id: r.get(0),
        webhook_id: r.get(1),
        event_id: r.get(2),
        event_type: r.get(3),
        entity_type: r.get(4),
        entity_id: r.get(5),
        webhook_url: r.get(6),
        priority: r.get(7),
        status: r.get(8),
        retry_count: r.get(9),
        max_retries: r.get(10),
        next_attempt_at: r.get(11),
        last_error: r.get(12),
        last_response_status: r.get(13),
        occurred_at: r.get(14),
        sent_at: r.get(15),
        created_at: r.get(16),
        updated_at: r.get(17),
        waiting: r.get(18),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_is_named_by_its_id_or_its_webhook_id() {
        assert_eq!("42".parse(), Ok(RowRef::Id(42)));
        assert_eq!(
            " 3F0C9A52-6F1E-4B7A-9D2C-8E1F0A6B5C43 ".parse(),
            Ok(RowRef::WebhookId(
                "3f0c9a52-6f1e-4b7a-9d2c-8e1f0a6b5c43".into()
            ))
        );
        for bad in [
            "row-7",
            "",
            "3f0c9a52-6f1e-4b7a-9d2c-8e1f0a6b5c4",
            "3f0c9a52x6f1e-4b7a-9d2c-8e1f0a6b5c43",
        ] {
            assert!(bad.parse::<RowRef>().is_err(), "{bad}");
        }
    }

    #[test]
    fn statuses_round_trip() {
        for s in QueueStatus::ALL {
            assert_eq!(QueueStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(QueueStatus::parse("Pending"), None);
    }

    #[test]
    fn a_payload_serde_json_cannot_hold_is_shown_as_its_text() {
        assert_eq!(
            payload_for_display(r#"{"a": [1, 2]}"#.into()),
            serde_json::json!({"a": [1, 2]})
        );
        let deep = format!("{}1{}", "[".repeat(300), "]".repeat(300));
        assert_eq!(
            payload_for_display(deep.clone()),
            serde_json::Value::String(deep)
        );
        assert_eq!(
            payload_for_display(r#"{"n": 1e400}"#.into()),
            serde_json::Value::String(r#"{"n": 1e400}"#.into())
        );
    }

    #[test]
    fn ages_parse_with_units_and_reject_the_rest() {
        assert_eq!(parse_age_seconds("90s"), Some(90.0));
        assert_eq!(parse_age_seconds("30m"), Some(1800.0));
        assert_eq!(parse_age_seconds("6h"), Some(21_600.0));
        assert_eq!(parse_age_seconds("2d"), Some(172_800.0));
        assert_eq!(parse_age_seconds("2025-11-04"), None);
        assert_eq!(parse_age_seconds("h"), None);
        assert_eq!(parse_age_seconds("-1h"), None);
    }

    #[test]
    fn counts_serialise_every_key_even_when_zero() {
        let json = serde_json::to_value(StatusCounts::default()).expect("json");
        for key in ["pending", "sending", "sent", "failed", "cancelled", "total"] {
            assert_eq!(json[key], 0, "{key} missing in {json}");
        }
    }
}
