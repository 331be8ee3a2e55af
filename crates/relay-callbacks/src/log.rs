//! The audit trail: one `webhook_logs` row (direction `incoming`) per request,
//! accepted or refused, and a tracing line. Neither ever holds a header, so no
//! signature or secret can end up there.
//!
//! Rows are written after the answer is sent, off the request path, by one writer
//! task that inserts whatever has queued up in a single statement. So a flood of bad
//! requests costs one pool connection at a time, never the pool: genuine callbacks
//! do not wait behind audit rows. The queue is bounded; when a flood outruns the
//! writer, rows of refused requests are dropped (counted, and said in the log), rows
//! of accepted ones wait for room. The listener waits for the writer when it shuts
//! down. When the database is down the row would fail too, so only the tracing line
//! remains.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::response::Reply;
use crate::routes::Endpoint;
use crate::summed::Summed;

const INSERT_LOGS: &str = "INSERT INTO webhook_logs \
    (direction, event_type, endpoint, response_status, response_body, duration_ms, error_message) \
    SELECT 'incoming', * FROM unnest($1::text[], $2::text[], $3::int4[], $4::text[], \
                                     $5::int4[], $6::text[])";

/// Rows waiting for the writer at most; past this a flood's refusals are dropped.
const QUEUE: usize = 8_192;
/// Rows written per statement at most.
const BATCH: usize = 1_000;

/// Longest response body kept in a log row.
const MAX_LOGGED_BODY: usize = 4_096;

pub struct Entry {
    pub method: String,
    /// The request path (bounded), whatever it was.
    pub path: String,
    pub endpoint: Option<Endpoint>,
    pub duration: Duration,
}

/// One `webhook_logs` row.
struct Row {
    name: Option<&'static str>,
    path: String,
    status: i32,
    body: String,
    duration_ms: i32,
    error: Option<String>,
}

/// Hands rows to the writer task. Cheap to clone.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Row>,
    tasks: TaskTracker,
    dropped: Arc<AtomicU64>,
    /// Refusals in the process log (see [`Summed`]).
    refusals: Arc<Summed>,
}

impl Writer {
    /// Starts the writer on `tasks`; it writes what is queued and ends once `stop`
    /// is cancelled.
    pub fn start(pool: Pool, tasks: &TaskTracker, stop: CancellationToken) -> Writer {
        let (tx, rx) = mpsc::channel(QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        tasks.spawn(write_rows(pool, rx, stop, dropped.clone()));
        Writer {
            tx,
            tasks: tasks.clone(),
            dropped,
            refusals: Arc::default(),
        }
    }
}

pub fn record(writer: &Writer, entry: Entry, reply: &Reply) {
    let status = reply.status.as_u16();
    let duration_ms = i32::try_from(entry.duration.as_millis()).unwrap_or(i32::MAX);
    let name = entry.endpoint.map(Endpoint::name);
    // Unknown paths share one label value: the caller must not choose label values.
    relay_core::metrics::global().callback(name.unwrap_or("unknown"), status);
    if reply.status.is_success() {
        tracing::info!(
            method = %entry.method,
            endpoint = %entry.path,
            status,
            duration_ms,
            replay = reply.replay,
            "callback"
        );
    } else if let Some(since) = writer.refusals.say() {
        tracing::warn!(
            method = %entry.method,
            endpoint = %entry.path,
            status,
            duration_ms,
            error = reply.error.as_deref().unwrap_or(""),
            refused_since_last = since,
            "callback refused (the next warning, a minute on at the earliest, says how many came between; each is in webhook_logs)"
        );
    } else {
        tracing::debug!(
            method = %entry.method,
            endpoint = %entry.path,
            status,
            duration_ms,
            error = reply.error.as_deref().unwrap_or(""),
            "callback refused"
        );
    }
    if reply.database_down {
        return;
    }
    let body = crate::response::bounded(reply.body_text(), MAX_LOGGED_BODY);
    let row = Row {
        name,
        path: entry.path,
        status: i32::from(status),
        body,
        duration_ms,
        error: reply.error.clone(),
    };
    match writer.tx.try_send(row) {
        Ok(()) => {}
        Err(mpsc::error::TrySendError::Full(row))
            if reply.status.is_success() && entry.endpoint != Some(Endpoint::Health) =>
        {
            // An accepted callback is always on record: wait for room, off the
            // request path. Not a health check, which anyone may send unsigned as
            // often as they like: under a flood its rows go as refusals' do.
            let tx = writer.tx.clone();
            writer.tasks.spawn(async move {
                let _ = tx.send(row).await;
            });
        }
        Err(_) => {
            writer.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

async fn write_rows(
    pool: Pool,
    mut rx: mpsc::Receiver<Row>,
    stop: CancellationToken,
    dropped: Arc<AtomicU64>,
) {
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        let stopping = tokio::select! {
            received = rx.recv_many(&mut batch, BATCH) => received == 0,
            () = stop.cancelled() => true,
        };
        if stopping {
            // Whatever is still queued, then end.
            rx.close();
            while rx.recv_many(&mut batch, BATCH).await > 0 {
                write(&pool, &mut batch).await;
            }
            return;
        }
        let lost = dropped.swap(0, Ordering::Relaxed);
        if lost > 0 {
            tracing::warn!(
                rows = lost,
                "refused requests arrived faster than webhook_logs rows could be written; their rows were dropped"
            );
        }
        write(&pool, &mut batch).await;
    }
}

async fn write(pool: &Pool, batch: &mut Vec<Row>) {
    let rows = batch.len();
    let mut names = Vec::with_capacity(rows);
    let mut paths = Vec::with_capacity(rows);
    let mut statuses = Vec::with_capacity(rows);
    let mut bodies = Vec::with_capacity(rows);
    let mut durations = Vec::with_capacity(rows);
    let mut errors = Vec::with_capacity(rows);
    for row in batch.drain(..) {
        names.push(row.name);
        paths.push(row.path);
        statuses.push(row.status);
        bodies.push(row.body);
        durations.push(row.duration_ms);
        errors.push(row.error);
    }
    let written = async {
        let client = pool.get().await.map_err(|e| e.to_string())?;
        client
            .execute(
                INSERT_LOGS,
                &[&names, &paths, &statuses, &bodies, &durations, &errors],
            )
            .await
            .map_err(|e| e.to_string())
    };
    if let Err(e) = written.await {
        tracing::warn!(error = %e, rows, "could not write webhook_logs rows");
    }
}
