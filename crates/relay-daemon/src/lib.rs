//! The relay daemon: outbox → router → queue → dispatcher → n8n.
//!
//! - [`listener`]: the dedicated LISTEN connection, reconnecting with backoff;
//! - [`wakeup`]: how the relay sleeps without missing an event (and why writers only
//!   notify when it is idle);
//! - [`claim`] with [`router`]: the route and claim statements, one place;
//! - `outbox_ids`: outbox events whose ids the queue holds for others (the outbox's
//!   ids started again), given new ones before the route skips them;
//! - [`dispatcher`] and [`delivery`]: the bounded worker pool and the signed request;
//!   `pace`: how far ahead the dispatcher may hold rows for each URL;
//! - [`outcome`]: what an attempt means, written down in batches;
//! - [`sweeper`]: expired leases, the safety sweep, retention;
//! - [`liveness`]: the rows of relays that are gone, back within seconds;
//! - `pump`: the loop tying them together;
//! - `shared`: what the stages hand each other (`Job`, `Wake`, `Slot`, ...), the one
//!   module every stage may use.
//!
//! Imports follow the data, never back (doc links aside); what flows the other way
//! (a `Wake` from the listener or the outcome writer) goes through a channel:
//!
//! ```text
//! pump ──▶ wakeup ──▶ router                  listener ··Wake··▶ pump
//!  ├─────▶ claim ───▶ router, outbox_ids      outcome  ··Wake··▶ pump
//!  └─────▶ dispatcher ──▶ delivery, pace      liveness ··Wake··▶ pump
//!              └────────▶ outcome ──▶ delivery (Attempt)
//! sweeper ──▶ claim                    every module ──▶ shared, db, error
//! ```
//!
//! The statements the claim and the wake-up run are whole `.sql` files in
//! `crates/relay-daemon/sql/`; the ordering check they share is the SQL function
//! `webhook_order_gate` (sql/001_webhook_tables.sql), inlined by the planner.
//!
//! The guarantee: an event committed to `webhook_events` is delivered at least once
//! (with the same `X-Webhook-Id` and body on every attempt) or ends `failed` with its
//! `last_error`, whatever happens to notifications, connections or the relay process.
//! A row is delivered twice only if its relay sent it and then died (its rows come
//! back as soon as its last database session has been gone for [`liveness::GRACE`]),
//! lost every session for that long, or stalled past `queue.lease_seconds`.

mod batch;
pub mod claim;
mod db;
mod delivery;
mod dispatcher;
mod error;
mod health;
pub mod listener;
pub mod liveness;
mod outbox_ids;
pub mod outcome;
mod pace;
mod pump;
mod router;
mod shared;
mod steering;
mod streak;
mod sweeper;
pub mod wakeup;

use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use deadpool_postgres::Pool;
use relay_core::db::Marker;
use relay_core::Config;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

pub use error::DaemonError;

/// Whether `config` lets the relay deliver: `run` and `check-config` ask before
/// anything starts. Without a signing secret every delivery was signed with an empty
/// key (which anyone can forge) and nothing said so; a relay that only queues (n8n or
/// the queue disabled) signs nothing, so it may start without one.
pub fn check(config: &Config) -> Result<(), DaemonError> {
    if config.delivery_enabled() && config.security.signing_secrets().is_empty() {
        return Err(DaemonError::Setup(
            "security.webhook_secret (WEBHOOK_SECRET) is not set: deliveries would be signed \
             with an empty key, which anyone can forge; set it (openssl rand -hex 32) and the \
             same secret in n8n, or set n8n.enabled = false to queue without delivering"
                .into(),
        ));
    }
    Ok(())
}

/// Runs the relay until `shutdown` is cancelled, then stops claiming, lets in-flight
/// deliveries finish for `queue.shutdown_grace_seconds`, gives the rest back to the
/// queue and writes every outcome it has. Database trouble while running is logged and
/// retried, never returned: the only errors are setup errors.
pub async fn run(
    config: Arc<Config>,
    pool: Pool,
    marker: Marker,
    shutdown: CancellationToken,
) -> Result<(), DaemonError> {
    let db = db::Db::new(pool, &config.database);
    let deliverer = delivery::Deliverer::new(&config)?;
    let steering = steering::Steering::new(&config);
    let routes = steering.routes();
    let (wake_tx, wake_rx) = mpsc::channel(64);
    // The recorder outlives the pump: it must still write what the last deliveries did.
    let recorder_stop = CancellationToken::new();
    let (recorder, recorder_task) =
        outcome::spawn(db.clone(), wake_tx.clone(), recorder_stop.clone());
    let listener_task = tokio::spawn(listener::run(
        config.database.clone(),
        marker,
        wake_tx.clone(),
        shutdown.clone(),
    ));
    let confirmed = shared::Confirmed::new(liveness::UNCONFIRMED_AFTER);
    let liveness_task = tokio::spawn(liveness::run(
        db.clone(),
        marker,
        confirmed.clone(),
        wake_tx.clone(),
        shutdown.clone(),
    ));
    let sweeper_task = tokio::spawn(sweeper::run(
        db.clone(),
        Duration::from_secs(config.queue.processing_interval_seconds),
        config.queue.retention_days,
        wake_tx.clone(),
        shutdown.clone(),
    ));

    if !routes.delivering {
        warn!("delivery is paused (n8n.enabled or queue.enabled is false): events are queued, not sent");
    }
    if !routes.held.is_empty() {
        info!(events = ?routes.held, "routes disabled: their events are queued, not sent");
    }
    let (health_tx, health_task) = health::spawn(db.clone());
    let dispatcher =
        dispatcher::Dispatcher::new(&config, deliverer, recorder, health_tx, confirmed, wake_tx);
    let pump = pump::Pump {
        db: db.clone(),
        routes,
        limits: claim::ClaimLimits::new(&config, marker),
        batch: batch::BatchSize::new(i64::try_from(config.queue.batch_size).unwrap_or(i64::MAX)),
        dispatcher,
        last_due_claim: tokio::time::Instant::now(),
        left: None,
        due_first: false,
        steering,
        unreleased: Vec::new(),
        exhausted: false,
        trickle: false,
        none_due_until: None,
        ask_first: false,
        armed: false,
    };
    outbox_ids::catch_up_at_start(&db).await;
    let (dispatcher, mut unfinished) = pump.run(wake_rx, &shutdown).await;

    info!("shutting down: no new claims");
    // Rows held for a URL that asked to slow down (429/503 with Retry-After) go back
    // due when it asked, as a pass gives them back: due now, the relays that stay
    // would send them at once to an n8n that said it was overloaded.
    let grace = Duration::from_secs(config.queue.shutdown_grace_seconds);
    unfinished.extend(dispatcher.drain(grace).await);
    let rows: usize = unfinished.iter().map(|(rows, _)| rows.len()).sum();
    // What is left to write down gets WRITE_DOWN in all, however the database answers:
    // the outcomes all of it (a delivery n8n took that is not recorded is sent again),
    // the rows given back at most RELEASE_PATIENCE of it, in parallel (rows not given
    // back only wait until this relay is gone).
    let write_down_until = tokio::time::Instant::now() + WRITE_DOWN;
    if rows > 0 {
        let released =
            tokio::time::timeout(RELEASE_PATIENCE, claim::release(&db, &unfinished)).await;
        match released {
            Ok(Ok(n)) => info!(
                released = n,
                "deliveries still in flight were returned to the queue"
            ),
            Ok(Err(e)) => error!(error = %e, rows,
                "could not release rows; they return to pending once this relay is gone"),
            Err(_) => error!(rows, within = ?RELEASE_PATIENCE,
                "the database did not answer the release in time (it may still take effect); \
                 rows it did not take return to pending once this relay is gone"),
        }
    }
    // Every Recorder handle is gone now (dispatcher and tasks dropped): the recorder
    // writes what it holds and ends, or stops where it stands at the deadline.
    let stop_at = tokio::spawn({
        let stop = recorder_stop.clone();
        async move {
            tokio::time::sleep_until(write_down_until).await;
            stop.cancel();
        }
    });
    let _ = recorder_task.await;
    stop_at.abort();
    let _ = listener_task.await;
    let _ = sweeper_task.await;
    let _ = liveness_task.await;
    // Its senders went with the dispatcher; a health change still being written may
    // take a moment, no more.
    let _ = tokio::time::timeout(Duration::from_secs(2), health_task).await;
    info!("relay stopped");
    Ok(())
}

/// Backoff for database reconnects and retried statements: 100 ms doubling to 5 s,
/// with jitter so several relays do not retry in step. backon's jitter adds up to the
/// delay itself, so the exponential part stops at half the cap (it stopped at the cap,
/// and waits reached 10 s: deliveries resumed seconds after Postgres was back).
pub(crate) fn db_backoff() -> impl Iterator<Item = Duration> {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos().into())
        .unwrap_or(0u64);
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(DB_BACKOFF_CAP / 2)
        .without_max_times()
        .with_jitter()
        .with_jitter_seed(seed ^ u64::from(std::process::id()))
        .build()
        .map(|delay| delay.min(DB_BACKOFF_CAP))
}

/// How long a stopping relay may take, after the deliveries' grace, to write down what
/// is left: the rows it gives back and the outcomes it holds. Milliseconds against a
/// database that answers; against one that does not, the end of the wait, so that a
/// stop takes at most `queue.shutdown_grace_seconds` + [`STOP_PATIENCE`] + this + the
/// health writer's 2 s + the sessions' goodbye (1 s): 25 s with the defaults, under
/// the 30 s after which systemd (`TimeoutStopSec`), compose and Kubernetes kill the
/// process. What is not written is what a crash would leave: the rows go back once
/// the relay's sessions are gone (`crate::liveness`).
pub(crate) const WRITE_DOWN: Duration = Duration::from_secs(10);

/// How long, of [`WRITE_DOWN`], a stopping relay waits for the database to take back
/// the rows it has not finished. Shorter than the outcomes' wait: a row not given back
/// only waits for this relay to be gone, where an outcome not written is a delivery
/// sent again.
pub(crate) const RELEASE_PATIENCE: Duration = Duration::from_secs(3);

/// How long the pump's statement in flight at SIGTERM may run on before the pump stops
/// without its answer (`db::unless_stopped`).
pub(crate) const STOP_PATIENCE: Duration = Duration::from_secs(2);

/// The longest wait between two tries of the database.
pub(crate) const DB_BACKOFF_CAP: Duration = Duration::from_secs(5);

#[cfg(test)]
mod backoff_tests {
    use super::*;

    #[test]
    fn database_backoff_never_waits_longer_than_its_cap_and_reaches_it() {
        let delays: Vec<Duration> = db_backoff().take(200).collect();
        assert!(delays.iter().all(|d| *d <= DB_BACKOFF_CAP), "{delays:?}");
        assert!(delays[0] < Duration::from_millis(250), "{delays:?}");
        assert!(
            delays[20..].iter().all(|d| *d >= DB_BACKOFF_CAP / 2),
            "{delays:?}"
        );
    }
}
