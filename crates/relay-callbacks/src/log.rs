//! The audit trail: one `webhook_logs` row (direction `incoming`) per request,
//! accepted or refused, and a tracing line. Neither ever holds a header, so no
//! signature or secret can end up there.
//!
//! Rows are written after the answer is sent, off the request path, so logging
//! never delays n8n; the listener waits for pending writes when it shuts down. When
//! the database is down the row would fail too, so only the tracing line remains.

use std::time::Duration;

use deadpool_postgres::Pool;
use tokio_util::task::TaskTracker;

use crate::response::Reply;
use crate::routes::Endpoint;

const INSERT_LOG: &str = "INSERT INTO webhook_logs \
    (direction, event_type, endpoint, response_status, response_body, duration_ms, error_message) \
    VALUES ('incoming', $1, $2, $3, $4, $5, $6)";

/// Longest response body kept in a log row.
const MAX_LOGGED_BODY: usize = 4_096;

pub struct Entry {
    pub method: String,
    /// The request path (bounded), whatever it was.
    pub path: String,
    pub endpoint: Option<Endpoint>,
    pub duration: Duration,
}

pub fn record(tasks: &TaskTracker, pool: &Pool, entry: Entry, reply: &Reply) {
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
    } else {
        tracing::warn!(
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
    let pool = pool.clone();
    let error = reply.error.clone();
    let mut body = reply.body_text();
    if body.len() > MAX_LOGGED_BODY {
        let mut end = MAX_LOGGED_BODY;
        while !body.is_char_boundary(end) {
            end -= 1;
        }
        body.truncate(end);
    }
    tasks.spawn(async move {
        let write = async {
            let client = pool.get().await.map_err(|e| e.to_string())?;
            client
                .execute(
                    INSERT_LOG,
                    &[
                        &name,
                        &entry.path,
                        &i32::from(status),
                        &body,
                        &duration_ms,
                        &error,
                    ],
                )
                .await
                .map_err(|e| e.to_string())
        };
        if let Err(e) = write.await {
            tracing::warn!(error = %e, endpoint = %entry.path, status, "could not write the webhook_logs row");
        }
    });
}
