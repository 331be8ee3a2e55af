//! The rows of a relay that is gone, back in the queue within seconds.
//!
//! Every session of a relay holds its [`Marker`] (a shared advisory lock), and every
//! row it claims records the marker in `claimed_by`. Each relay looks, every
//! [`TICK`], for rows `sending` under a marker that no session holds; once a marker
//! has been missing for [`GRACE`] without a break, its rows go back to `pending`, due
//! now, with a history note. That is the crashed relay's (kill -9, OOM, a lost node)
//! in-flight, claimed-ahead and answered-but-unrecorded rows, seconds after its death
//! instead of `queue.lease_seconds` later.
//!
//! What keeps a live relay's rows its own:
//! - the lock is shared and taken by the LISTEN connection and by each pooled
//!   connection, so a relay that lost one connection still holds it, and the
//!   liveness check itself reconnects the pool (and so retakes the marker) every
//!   [`TICK`] after Postgres comes back;
//! - [`GRACE`] covers the moment between losing every session and reconnecting;
//! - a stalled relay (SIGSTOP) keeps its sessions: its rows wait for the lease, which
//!   stays the backstop for a relay that is alive but not moving.
//!
//! A relay with no session left for longer than [`GRACE`] (a partition, a Postgres
//! restart it could not reconnect after) cannot record outcomes; its rows are taken
//! back, and a delivery it still had in flight may arrive twice (same `X-Webhook-Id`),
//! as it would after an expired lease. Its late outcome is refused by the claim
//! token, as before. The rows it had claimed and not started are not started when it
//! reconnects: a confirmation after such a gap counts a lapse
//! (`crate::shared::Confirmed`), and a row claimed before the last lapse goes back to
//! the queue, its claim token keeping that from touching a row another relay took.

use std::collections::HashMap;
use std::time::Duration;

use relay_core::db::Marker;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::db::{unless_stopped, Db};
use crate::error::DaemonError;
use crate::shared::{Confirmed, Wake};

/// How often each relay looks for markers that are gone.
pub const TICK: Duration = Duration::from_millis(500);

/// How long a marker must be missing, seen at every tick, before its rows are taken
/// back: longer than a relay needs to reconnect one connection.
pub const GRACE: Duration = Duration::from_secs(2);

/// Markers of other relays holding `sending` rows that no session holds now. $1 this
/// relay's marker. Reads the `sending` rows only (a few per relay), and `pg_locks`
/// only for rows found.
pub const ABSENT_MARKERS: &str = "SELECT DISTINCT q.claimed_by
    FROM webhook_queue q
    WHERE q.status = 'sending' AND q.claimed_by <> $1
      AND NOT EXISTS (SELECT 1 FROM pg_locks l
          WHERE l.locktype = 'advisory' AND l.classid = 1849193081::oid
            AND l.objid = q.claimed_by::oid AND l.objsubid = 2 AND l.granted)";

/// The rows of relays that are gone back to `pending`, due now, retry count
/// unchanged, each with a history note; the ids. $1 the markers, checked again here
/// in case one came back since it was seen missing.
pub const RELEASE_ABSENT: &str = "WITH released AS (
        UPDATE webhook_queue q
        SET status = 'pending', lease_expires_at = NULL, claimed_by = NULL, updated_at = now()
        FROM webhook_queue old
        WHERE q.status = 'sending' AND q.claimed_by = ANY ($1::int4[]) AND old.id = q.id
          AND NOT EXISTS (SELECT 1 FROM pg_locks l
              WHERE l.locktype = 'advisory' AND l.classid = 1849193081::oid
                AND l.objid = q.claimed_by::oid AND l.objsubid = 2 AND l.granted)
        RETURNING q.id, q.retry_count, old.claimed_by
    ),
    noted AS (
        INSERT INTO webhook_retry_history (webhook_queue_id, attempt, note)
        -- least(): a retry_count set by hand to the integer maximum must not fail
        -- the release of every other row.
        SELECT r.id, least(r.retry_count, 2147483646) + 1,
               'returned to the queue: relay ' || r.claimed_by
               || ' that held it is gone (no database session holds its marker)'
        FROM released r
    )
    SELECT r.id FROM released r ORDER BY r.id";

/// Without a successful look for this long, this relay starts no delivery: another
/// relay may take its rows back at [`GRACE`].
pub const UNCONFIRMED_AFTER: Duration = Duration::from_millis(1250);

pub(crate) async fn run(
    db: Db,
    marker: Marker,
    confirmed: Confirmed,
    wake: mpsc::Sender<Wake>,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut missing_since: HashMap<i32, Instant> = HashMap::new();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        // Neither look holds up a stop (crate::db::unless_stopped).
        let Some(looked) = unless_stopped(&shutdown, Duration::ZERO, absent(&db, marker)).await
        else {
            return;
        };
        let missing = match looked {
            Ok(missing) => {
                // A session answered, so the marker is held (every session takes it).
                let was = confirmed.get();
                confirmed.set();
                if !was {
                    let _ = wake.try_send(Wake::Freed);
                }
                missing
            }
            Err(e) => {
                // The pump and the listener report database trouble; a missed look
                // only means the markers are looked at again at the next tick.
                debug!(error = %e, "could not look for relays that are gone");
                missing_since.clear();
                continue;
            }
        };
        let now = Instant::now();
        missing_since.retain(|m, _| missing.contains(m));
        for m in missing {
            missing_since.entry(m).or_insert(now);
        }
        let gone: Vec<i32> = missing_since
            .iter()
            .filter(|(_, since)| now.duration_since(**since) >= GRACE)
            .map(|(m, _)| *m)
            .collect();
        if gone.is_empty() {
            continue;
        }
        let Some(released) = unless_stopped(&shutdown, Duration::ZERO, release(&db, &gone)).await
        else {
            return;
        };
        match released {
            Ok(ids) => {
                for m in &gone {
                    missing_since.remove(m);
                }
                if !ids.is_empty() {
                    warn!(
                        relays = ?gone,
                        count = ids.len(),
                        ids = %crate::streak::some_ids(&ids),
                        "rows held by relays that are gone returned to pending"
                    );
                    let _ = wake.try_send(Wake::Released);
                }
            }
            Err(e) => warn!(error = %e, "could not return the rows of relays that are gone"),
        }
    }
}

async fn absent(db: &Db, marker: Marker) -> Result<Vec<i32>, DaemonError> {
    db.bounded("looking for relays that are gone", async {
        let client = db.client().await?;
        let statement = client.prepare_cached(ABSENT_MARKERS).await?;
        let rows = crate::db::query_planned_once(&client, &statement, &[&marker.get()]).await?;
        let markers: Result<Vec<i32>, _> = rows.iter().map(|r| r.try_get(0)).collect();
        Ok(markers?)
    })
    .await
}

async fn release(db: &Db, markers: &[i32]) -> Result<Vec<i64>, DaemonError> {
    db.bounded("returning the rows of relays that are gone", async {
        let client = db.client().await?;
        let statement = client.prepare_cached(RELEASE_ABSENT).await?;
        let rows = client.query(&statement, &[&markers]).await?;
        let ids: Result<Vec<i64>, _> = rows.iter().map(|r| r.try_get(0)).collect();
        Ok(ids?)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_statements_look_for_the_class_markers_are_held_under() {
        let class = format!("{}::oid", relay_core::db::marker::MARKER_CLASS);
        assert!(ABSENT_MARKERS.contains(&class));
        assert!(RELEASE_ABSENT.contains(&class));
    }

    #[test]
    fn a_relay_is_only_taken_for_gone_after_more_than_a_reconnect() {
        assert!(GRACE >= TICK * 4);
        // A relay stops starting deliveries well before others may take its rows.
        assert!(UNCONFIRMED_AFTER > TICK * 2 && UNCONFIRMED_AFTER < GRACE);
    }
}
