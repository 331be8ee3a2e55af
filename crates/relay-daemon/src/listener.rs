//! The LISTEN connection: one dedicated tokio-postgres connection (pooled ones cannot
//! LISTEN), driven with `poll_message`, because the connection's plain `Future`
//! discards notifications.
//!
//! It always drains: a driver task reads every message as it arrives and forwards a
//! wake-up with `try_send`, dropping it when the pump already has wake-ups queued.
//! Postgres's notification queue is shared by the cluster and fills if a listener
//! stops reading, at which point NOTIFY (and the business write doing it) fails.
//!
//! A lost connection is re-established with exponential backoff, and every (re)connect
//! asks the pump for a full catch-up: notifications sent while nobody listened are
//! gone, the outbox is not. TCP keepalives (from `relay_core::db::Connector`) make a
//! silently dead link fail instead of hanging, and a liveness query every
//! [`relay_core::db::LIVENESS_INTERVAL`] catches a link that is dead beyond a local
//! proxy, where keepalives are answered by the proxy.

use std::future::poll_fn;
use std::time::Duration;

use relay_core::config::DatabaseConfig;
use relay_core::db::{Marker, NOTIFY_CHANNEL};
use relay_core::metrics;
use tokio::sync::mpsc;
use tokio_postgres::AsyncMessage;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::db::unless_stopped;
use crate::error::{describe_pg, DaemonError};
use crate::shared::Wake;
use crate::streak::{Say, Streak};

/// Shown in `pg_stat_activity.application_name` for the LISTEN connection (unless
/// the database URL sets its own application_name).
pub const APPLICATION_NAME: &str = "n8n-relay-listener";

pub(crate) async fn run(
    db: DatabaseConfig,
    marker: Marker,
    wake: mpsc::Sender<Wake>,
    shutdown: CancellationToken,
) {
    let mut backoff = crate::db_backoff();
    let mut connected_before = false;
    let mut failing = Streak::default();
    loop {
        // Connecting, setting up and each liveness check wait on the server; a stop
        // waits for none of them (crate::db::unless_stopped). Dropped, the session's
        // driver still says goodbye (relay_core::db::drivers).
        let session = session(
            &db,
            marker,
            &wake,
            &shutdown,
            connected_before,
            &mut failing,
        );
        let Some(ended) = unless_stopped(&shutdown, Duration::ZERO, session).await else {
            metrics::global().set_listener_connected(false);
            return;
        };
        metrics::global().set_listener_connected(false);
        match ended {
            Ok(()) => return,
            Err((established, e)) => {
                if established {
                    connected_before = true;
                    backoff = crate::db_backoff();
                }
                if shutdown.is_cancelled() {
                    return;
                }
                let delay = backoff.next().unwrap_or(Duration::from_secs(10));
                let what = if established {
                    "listener connection lost; reconnecting"
                } else if connected_before {
                    "listener could not reconnect; trying again"
                } else {
                    "listener could not connect; trying again"
                };
                match failing.failed(what) {
                    Say::Warn => {
                        warn!(error = %e, retry_in_seconds = delay.as_secs_f64(), "{what}")
                    }
                    Say::Quietly => {
                        debug!(error = %e, retry_in_seconds = delay.as_secs_f64(), "{what}")
                    }
                }
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

/// One connection's life. `Ok` only on shutdown; `Err((established, e))` when the
/// connection failed, `established` telling whether LISTEN had succeeded.
async fn session(
    db: &DatabaseConfig,
    marker: Marker,
    wake: &mpsc::Sender<Wake>,
    shutdown: &CancellationToken,
    reconnect: bool,
    failing: &mut Streak,
) -> Result<(), (bool, String)> {
    let failed = |e: DaemonError| (false, e.to_string());
    // Built per connection, so TLS files and a libpq passfile are read again on reconnect
    // (database.password_file is read once, with the configuration).
    let pg = relay_core::db::Connector::new(db, APPLICATION_NAME).map_err(|e| failed(e.into()))?;
    // Connecting is bounded by the connector itself; the setup after it by this.
    let limit = Duration::from_secs(db.connect_timeout_seconds + db.statement_timeout_seconds);
    let (client, mut connection) = pg.connect().await.map_err(|e| failed(e.into()))?;

    let forward = wake.clone();
    let mut driver = relay_core::db::drivers::spawn(async move {
        loop {
            match poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(n))) => {
                    debug!(payload = n.payload(), "notification");
                    let wake = if n.payload() == relay_core::pause::CONTROL_PAYLOAD {
                        Wake::Control
                    } else {
                        Wake::Notified
                    };
                    let _ = forward.try_send(wake);
                }
                Some(Ok(AsyncMessage::Notice(notice))) => {
                    debug!(
                        message = notice.message(),
                        "notice on the listener connection"
                    );
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return describe_pg(&e),
                None => return "connection closed by the server".to_string(),
            }
        }
    });

    let listen = format!("LISTEN {NOTIFY_CHANNEL}");
    // The marker too: this session is the relay's longest-lived one (crate::liveness).
    // LISTEN last, so pg_stat_activity shows this session by its LISTEN.
    let setup = async {
        if !marker.hold(&client).await? {
            warn!(%marker, "could not take this relay's marker lock; \
                its rows fall back to the lease if it dies");
        }
        client.batch_execute(&listen).await?;
        Ok::<(), tokio_postgres::Error>(())
    };
    match tokio::time::timeout(limit, setup).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            driver.abort();
            return Err(failed(e.into()));
        }
        Err(_) => {
            driver.abort();
            return Err(failed(DaemonError::Timeout("LISTEN", limit)));
        }
    }
    metrics::global().set_listener_connected(true);
    let outage = failing.ended();
    let (failed_tries, down_for) = outage.map_or((0, None), |(n, d)| (n, Some(d)));
    if reconnect {
        metrics::global().listener_reconnected();
        info!(
            channel = NOTIFY_CHANNEL,
            failed_tries,
            down_for_seconds = down_for.map_or(0.0, |d| d.as_secs_f64()),
            "listener reconnected; catching up on the outbox"
        );
    } else if outage.is_some() {
        info!(
            channel = NOTIFY_CHANNEL,
            failed_tries,
            down_for_seconds = down_for.map_or(0.0, |d| d.as_secs_f64()),
            "listening for notifications"
        );
    } else {
        info!(channel = NOTIFY_CHANNEL, "listening for notifications");
    }
    let _ = wake.try_send(Wake::Reconnected);

    let answer_within = Duration::from_secs(db.connect_timeout_seconds);
    let mut liveness = tokio::time::interval(relay_core::db::LIVENESS_INTERVAL);
    liveness.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    liveness.tick().await;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => {
                // Without its client the connection says goodbye and ends, so
                // Postgres does not count the session as abandoned.
                drop(client);
                if tokio::time::timeout(relay_core::db::drivers::GOODBYE, &mut driver)
                    .await
                    .is_err()
                {
                    driver.abort();
                }
                return Ok(());
            }
            ended = &mut driver => {
                let reason = ended.unwrap_or_else(|e| format!("listener task ended: {e}"));
                return Err((true, reason));
            }
            _ = liveness.tick() => {
                // A link can die without a FIN or RST reaching us (see
                // relay_core::db::LIVENESS_INTERVAL): ask the server for an answer.
                match tokio::time::timeout(answer_within, client.simple_query("")).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => {
                        driver.abort();
                        return Err((true, describe_pg(&e)));
                    }
                    Err(_) => {
                        driver.abort();
                        return Err((
                            true,
                            format!("no answer to a liveness check within {answer_within:?}"),
                        ));
                    }
                }
            }
        }
    }
}
