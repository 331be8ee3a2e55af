//! Outbox ids that the queue already holds for other events.
//!
//! A queue row keeps its event's outbox id (`event_id`), and `(event_id, webhook_url)`
//! is unique: that is what makes routing an event twice harmless. But an outbox whose
//! identity started again (`TRUNCATE webhook_events RESTART IDENTITY`; a
//! logical-replication cutover, which copies rows and not sequences; the business
//! schema restored without the queue) hands new events ids that queue rows kept for
//! `queue.retention_days` hold for older events. Routed as they are, such events would
//! be taken for ones already queued, skipped, and deleted from the outbox: lost.
//!
//! [`move_off_taken_ids`] is what the route does when its insert meets the unique key
//! (`crate::claim`). When an outbox event has an id the queue holds for another event,
//! it moves the outbox identity past the largest event id in the queue, then gives new
//! ids to the outbox's events from that one up, in id order, so that they keep their
//! order among themselves and after the ones below. An event is the one a queue row
//! was made for when it has that row's `occurred_at` too (copied into the row, and into
//! its `X-Webhook-Id`): such an event, put back into the outbox after it was routed,
//! keeps its id, and the route skips it as before.
//!
//! The business write is not waited on: new events take ids past the queue's from the
//! moment the identity moves, and only events already in the outbox are locked. An
//! event written while the move runs may be routed before an older event of its
//! entity that the move renumbers; after the move the order holds again.

use deadpool_postgres::Object;

use crate::error::DaemonError;

/// Moves the outbox identity to `$1` past the largest event id of the queue, unless it
/// is past it already; returns the new position (no row when it did not move). The
/// margin makes sure no insert that took an id between the read and the `setval` is
/// handed the same id again. Reading and setting the sequence takes `SELECT` and
/// `UPDATE` on it (sql/roles.example.sql grants them).
const ADVANCE_IDENTITY: &str = "SELECT setval(s.seq, q.top + $1)
    FROM (SELECT pg_get_serial_sequence('webhook_events', 'id')::regclass AS seq) s,
         (SELECT max(event_id) AS top FROM webhook_queue) q
    WHERE q.top >= coalesce(pg_sequence_last_value(s.seq), 0)";

/// The first outbox event whose id the queue holds for another event (a row of that
/// id with another `occurred_at`), if any: one probe of
/// `webhook_queue_event_target_key` per outbox row.
const FIRST_TAKEN: &str = "SELECT min(e.id) FROM webhook_events e
    WHERE EXISTS (SELECT 1 FROM webhook_queue q
                  WHERE q.event_id = e.id AND q.occurred_at <> e.occurred_at)";

/// New ids for the outbox events from `$1` (the [`FIRST_TAKEN`]) up, except those
/// already queued. `SET id = DEFAULT` takes each from the identity as the scan hands
/// the row over; [`move_off_taken_ids`] has the planner walk the primary key (`= ANY`
/// of an array there visits the ids in ascending order), so the new ids follow the old
/// ones' order. Every new id is past every existing one, so no row is moved twice.
const RENUMBER: &str = "WITH moving AS (
        SELECT e.id FROM webhook_events e
        WHERE e.id >= $1
          AND NOT EXISTS (SELECT 1 FROM webhook_queue q
                          WHERE q.event_id = e.id AND q.occurred_at = e.occurred_at)
        ORDER BY e.id
        FOR UPDATE
    )
    UPDATE webhook_events SET id = DEFAULT
    WHERE id = ANY (ARRAY(SELECT m.id FROM moving m))";

/// Index scans only for [`RENUMBER`], this transaction alone.
const BY_PRIMARY_KEY: &str = "SET LOCAL enable_seqscan = off; SET LOCAL enable_bitmapscan = off";

/// How far past the queue's largest event id the identity moves.
const MARGIN: i64 = 1_000;

/// What [`move_off_taken_ids`] did.
#[derive(Debug, Default)]
pub(crate) struct Moved {
    /// Where it set the outbox identity, if it had to.
    pub(crate) identity: Option<i64>,
    /// Events given a new id.
    pub(crate) events: u64,
}

/// See the module documentation. Nothing to do (and no privilege on the identity
/// needed) when the outbox's only events with ids in the queue are the queue's own.
/// The renumbering is one transaction: rolled back whole if the route's time limit cuts
/// it off, and done again at the next route.
pub(crate) async fn move_off_taken_ids(client: &mut Object) -> Result<Moved, DaemonError> {
    let mut moved = Moved::default();
    let Some(first) = client
        .query_one(FIRST_TAKEN, &[])
        .await?
        .try_get::<_, Option<i64>>(0)?
    else {
        return Ok(moved);
    };
    let advanced = client
        .query_opt(ADVANCE_IDENTITY, &[&MARGIN])
        .await
        .inspect_err(|e| {
            if e.code() == Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE) {
                tracing::error!(
                    "outbox events have ids the queue holds for other events (the outbox's \
                     ids started again), and this role may not move the outbox's identity \
                     past them: grant it SELECT and UPDATE on the sequence \
                     pg_get_serial_sequence('webhook_events', 'id') names \
                     (sql/roles.example.sql does); the events wait in the outbox until then"
                );
            }
        })?;
    if let Some(row) = advanced {
        moved.identity = Some(row.try_get(0)?);
    }
    let tx = client.transaction().await?;
    tx.batch_execute(BY_PRIMARY_KEY).await?;
    moved.events = tx.execute(RENUMBER, &[&first]).await?;
    tx.commit().await?;
    Ok(moved)
}
