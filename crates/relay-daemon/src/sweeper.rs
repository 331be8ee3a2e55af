//! Housekeeping on a timer (`queue.processing_interval_seconds`):
//! - rows left `sending` by a relay that died: their lease expired, so they go back to
//!   `pending` (the guide's "stuck in sending" case heals itself);
//! - the safety sweep of the outbox: a wake-up for the pump whatever happened to the
//!   notifications, so a lost NOTIFY delays an event by at most one interval;
//! - retention, when `queue.retention_days > 0`: sent and cancelled rows, their logs
//!   and routed outbox rows older than that are deleted, in bounded batches.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::claim;
use crate::db::Db;
use crate::error::DaemonError;
use crate::pump::Wake;

/// How often retention runs (when enabled).
const RETENTION_EVERY: Duration = Duration::from_secs(3600);
/// Rows deleted per statement, so retention never holds long locks.
const RETENTION_BATCH: i64 = 5000;

/// $1 retention days, $2 batch size. Failed and pending rows are never removed.
pub(crate) const DELETE_OLD_QUEUE_ROWS: &str = "DELETE FROM webhook_queue WHERE id IN (
    SELECT id FROM webhook_queue
    WHERE status IN ('sent', 'cancelled') AND updated_at < now() - make_interval(days => $1)
    LIMIT $2)";
pub(crate) const DELETE_OLD_LOGS: &str = "DELETE FROM webhook_logs WHERE id IN (
    SELECT id FROM webhook_logs WHERE created_at < now() - make_interval(days => $1) LIMIT $2)";
pub(crate) const DELETE_OLD_EVENTS: &str = "DELETE FROM webhook_events WHERE id IN (
    SELECT id FROM webhook_events
    WHERE routed_at IS NOT NULL AND routed_at < now() - make_interval(days => $1)
    LIMIT $2)";

pub(crate) async fn run(
    db: Db,
    interval: Duration,
    retention_days: u64,
    wake: mpsc::Sender<Wake>,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut next_retention = tokio::time::Instant::now() + interval;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        match claim::release_expired_leases(&db).await {
            Ok(ids) if !ids.is_empty() => {
                warn!(count = ids.len(), ids = ?ids, "leases expired; rows returned to pending");
            }
            Ok(_) => {}
            Err(e) => warn!(error = %e, "could not release expired leases"),
        }
        let _ = wake.try_send(Wake::Sweep);
        if retention_days > 0 && tokio::time::Instant::now() >= next_retention {
            next_retention = tokio::time::Instant::now() + RETENTION_EVERY;
            if let Err(e) = retention(&db, retention_days, &shutdown).await {
                warn!(error = %e, "retention cleanup failed; will try again");
            }
        }
    }
}

async fn retention(db: &Db, days: u64, shutdown: &CancellationToken) -> Result<(), DaemonError> {
    let days = i32::try_from(days).unwrap_or(i32::MAX);
    for (what, sql) in [
        ("queue rows", DELETE_OLD_QUEUE_ROWS),
        ("logs", DELETE_OLD_LOGS),
        ("outbox rows", DELETE_OLD_EVENTS),
    ] {
        let mut total = 0u64;
        loop {
            let deleted = db
                .bounded("retention cleanup", async {
                    let client = db.client().await?;
                    let statement = client.prepare_cached(sql).await?;
                    Ok(client
                        .execute(&statement, &[&days, &RETENTION_BATCH])
                        .await?)
                })
                .await?;
            total += deleted;
            if deleted < RETENTION_BATCH.unsigned_abs() || shutdown.is_cancelled() {
                break;
            }
        }
        if total > 0 {
            info!(deleted = total, what, days, "retention cleanup");
        }
    }
    Ok(())
}
