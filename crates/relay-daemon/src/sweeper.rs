//! Housekeeping on a timer (`queue.processing_interval_seconds`):
//! - rows left `sending` by a relay that died: their lease expired, so they go back to
//!   `pending` (the guide's "stuck in sending" case heals itself);
//! - the safety sweep of the outbox: a wake-up for the pump whatever happened to the
//!   notifications, so a lost NOTIFY delays an event by at most one interval;
//! - retention, when `queue.retention_days > 0`: what `n8n-relay queue cleanup --days N`
//!   removes (sent and cancelled rows with their logs and history, routed outbox rows
//!   nothing waits on), through the same code, hourly, in its own task so lease
//!   releases never wait for it;
//! - once, at the first sweep the database answers: a warning when autovacuum will
//!   not clean the relay's tables.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use relay_core::queue_admin::{self, CleanupOptions};

use crate::claim;
use crate::db::{unless_stopped, Db};
use crate::shared::Wake;
use crate::streak::{Say, Streak};

/// How often retention runs (when enabled).
const RETENTION_EVERY: Duration = Duration::from_secs(3600);

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
    let mut retention_task: Option<tokio::task::JoinHandle<()>> = None;
    let mut failing = Streak::default();
    let mut autovacuum_checked = false;
    loop {
        // Neither the wait nor the look holds up a stop (crate::db::unless_stopped).
        let looked = async {
            tick.tick().await;
            if !autovacuum_checked {
                autovacuum_checked = warn_without_autovacuum(&db).await;
            }
            claim::release_expired_leases(&db).await
        };
        let Some(released) = unless_stopped(&shutdown, Duration::ZERO, looked).await else {
            break;
        };
        if released.is_ok() {
            failing.ended();
        }
        let wake_with = match released {
            Ok(ids) if !ids.is_empty() => {
                warn!(
                    count = ids.len(),
                    ids = %crate::streak::some_ids(&ids),
                    "leases expired; rows returned to pending"
                );
                Wake::Released
            }
            Ok(_) => Wake::Sweep,
            Err(e) => {
                match failing.failed("could not release expired leases") {
                    Say::Warn => warn!(error = %e, "could not release expired leases"),
                    Say::Quietly => debug!(error = %e, "could not release expired leases"),
                }
                Wake::Sweep
            }
        };
        let _ = wake.try_send(wake_with);
        let idle = retention_task.as_ref().is_none_or(|t| t.is_finished());
        if retention_days > 0 && idle && tokio::time::Instant::now() >= next_retention {
            next_retention = tokio::time::Instant::now() + RETENTION_EVERY;
            retention_task = Some(tokio::spawn(retention(db.clone(), retention_days)));
        }
    }
    if let Some(task) = retention_task {
        task.abort();
    }
}

/// The relay's tables whose dead rows no autovacuum removes: off for the server, or
/// for the table (`autovacuum_enabled`, however it was spelled: Postgres keeps the
/// option as typed, `f`, `OFF`, `fals`).
const WITHOUT_AUTOVACUUM: &str = "SELECT string_agg(c.relname, ', ' ORDER BY c.relname)
    FROM pg_class c
    WHERE c.oid = ANY (ARRAY[to_regclass('webhook_queue'), to_regclass('webhook_events'),
                             to_regclass('webhook_logs')]::oid[])
      AND (NOT current_setting('autovacuum')::bool
           OR EXISTS (SELECT 1 FROM pg_options_to_table(c.reloptions) o
                      WHERE o.option_name = 'autovacuum_enabled'
                        AND NOT o.option_value::bool))";

/// Says once, at the first sweep the database answers, whether autovacuum will clean
/// the relay's tables: every delivery leaves a dead row, and without a vacuum the
/// claim steps over all of them (sql/README: 16 deliveries a second after 230,000).
/// Nothing said so before a relay had slowed down. Whether it could look.
async fn warn_without_autovacuum(db: &Db) -> bool {
    let found = db
        .bounded("checking autovacuum", async {
            let client = db.client().await?;
            let row = client.query_one(WITHOUT_AUTOVACUUM, &[]).await?;
            Ok(row.try_get::<_, Option<String>>(0)?)
        })
        .await;
    match found {
        Ok(Some(tables)) => warn!(
            tables = %tables,
            "autovacuum does not clean these tables (off for the server or the table): \
             deliveries slow down as dead rows pile up; turn it on, or VACUUM them \
             regularly (sql/README.md, the relay's own tables)"
        ),
        Ok(None) => {}
        Err(e) => {
            debug!(error = %e, "could not check autovacuum yet");
            return false;
        }
    }
    true
}

async fn retention(db: Db, days: u64) {
    let options = CleanupOptions {
        days: u32::try_from(days).unwrap_or(u32::MAX),
        dry_run: false,
        include_failed: false,
    };
    let client = match db.client().await {
        Ok(c) => c,
        Err(e) => {
            warn!(error = %e, "retention cleanup could not start; will try again");
            return;
        }
    };
    // Each batch is its own statement, bounded by statement_timeout.
    match queue_admin::cleanup(&client, options).await {
        Ok(report) if report.removed() > 0 => info!(
            days,
            queue_rows = report.queue_rows,
            logs = report.logs,
            retry_history = report.retry_history,
            events = report.events,
            workflow_runs = report.workflow_runs,
            "retention cleanup"
        ),
        Ok(_) => {}
        Err(e) => warn!(error = %e, "retention cleanup failed; will try again"),
    }
}
