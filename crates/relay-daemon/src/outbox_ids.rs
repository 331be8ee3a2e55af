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
//! moment the identity moves, and only events already in the outbox are locked; routes
//! wait while the renumbering runs ([`ONE_AT_A_TIME`]). Order holds among the
//! renumbered events and after the ones below them. It does not hold for an event
//! written while the renumbering runs, nor for one another relay routed, under its old
//! id, between this relay's failed first try and the renumbering: either may go out
//! before an older event of its entity that is renumbered. Nor can it hold between new
//! events on ids below the queue's that no queue row holds (they are not renumbered) and
//! unfinished queue rows of their entity from before the restart, whose ids are larger:
//! the ordering check compares ids. Moving the identity at the cutover avoids all three.
//!
//! The route's second run leaves in the outbox any event still on a taken id (one this
//! relay could not renumber, or committed since): it never skips one. And a relay that
//! starts with the identity behind the queue (the ids started again while it was
//! stopped) moves it at once ([`catch_up_at_start`]), before events land on taken ids.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use deadpool_postgres::Object;

use crate::db::Db;
use crate::error::DaemonError;

/// The largest event id in the queue (a backward step in
/// `webhook_queue_event_target_key`).
const QUEUE_TOP: &str = "SELECT max(event_id) FROM webhook_queue";

/// Moves the outbox identity to `$2` past `$1` (the [`QUEUE_TOP`]) unless the next id
/// it hands out is past it already (`pg_sequence_last_value` is NULL until the first,
/// which is then the sequence's start); returns the new position (no row when it did
/// not move, or when this role may not read the sequence). The margin makes sure no
/// insert that took an id between the read and the `setval` is handed the same id
/// again. Reading the sequence takes `SELECT` on it, setting it `UPDATE`
/// (sql/roles.example.sql grants both); the `CASE` checks the first, because from
/// Postgres 18 on `pg_sequence_last_value` answers NULL rather than fail without it.
const ADVANCE_IDENTITY: &str = "SELECT setval(s.seq, $1::int8 + $2::int8)
    FROM (SELECT pg_get_serial_sequence('webhook_events', 'id')::regclass AS seq) s
    WHERE CASE WHEN has_sequence_privilege(s.seq, 'SELECT')
               THEN $1::int8 > coalesce(pg_sequence_last_value(s.seq), 0) END";

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
    WHERE id = ANY (ARRAY(SELECT m.id FROM moving m))
    RETURNING id";

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
    /// Events on ids the queue holds that wait in the outbox, because the identity is
    /// behind the queue's ids and this role may not move it.
    pub(crate) held: bool,
}

/// How often the error about held events is logged.
const SAY_HELD_EVERY: Duration = Duration::from_secs(60);

/// When the error about held events was last logged.
static HELD_SAID: Mutex<Option<Instant>> = Mutex::new(None);

/// How long after events were held the routes run as written, without a first try or
/// a renumbering: tried at every pass, the renumbering would hold every relay's routes
/// (its lock) while it read the outbox, only to be rolled back, and use up ids.
const HOLD_FOR: Duration = Duration::from_secs(5);

/// When this relay last held events.
static HELD_AT: Mutex<Option<Instant>> = Mutex::new(None);

/// Whether events were held less than [`HOLD_FOR`] ago: the route then runs its
/// statement as written (which leaves them in the outbox) straight away.
pub(crate) fn holding() -> bool {
    HELD_AT
        .lock()
        .is_ok_and(|at| at.is_some_and(|at| at.elapsed() < HOLD_FOR))
}

/// One relay at a time moves the outbox identity and renumbers, and no route runs
/// meanwhile (a transaction-scoped advisory lock, which every route statement's
/// transaction takes shared: [`ROUTES_GO_ON`]; the relays' markers use the key space
/// before it, see `relay_core::db::marker::HOLD_MARKER`). Two `setval`s each reading
/// the sequence before the other wrote it could move it back over ids already handed
/// out; and a route running beside the renumbering could take, from the rows it has
/// not locked yet, an entity's later event under its old id while the earlier ones
/// get new, larger ids: the ordering check would then let the later one go first.
const ONE_AT_A_TIME: &str = "SELECT pg_advisory_xact_lock(1849193082, 1)";

/// Taken by each route statement's transaction: waits while a renumbering runs (and a
/// renumbering waits for the routes running), see [`ONE_AT_A_TIME`]. Shared, so routes
/// never wait for each other; no WAL, one trip to the lock manager per route (20-30
/// events): drains with and without it are the same within noise (bench README). A
/// route waits at most `lock_timeout` (`crate::claim`'s `ROUTE_BEGIN`), then fails and
/// is tried again after the backoff, so that a long renumbering never keeps a route
/// running on the server after the relay gave up on it.
pub(crate) const ROUTES_GO_ON: &str = "SELECT pg_advisory_xact_lock_shared(1849193082, 1)";

/// See the module documentation. One transaction, which another relay's waits for:
/// rolled back whole if the route's time limit cuts it off, and done again at the next
/// route. Nothing to do (and no privilege on the identity needed) when the outbox's
/// only events with ids in the queue are the queue's own. When this role may not move
/// the identity, the renumbering goes ahead only if the identity is past the queue's
/// ids already (its owner moved it); otherwise the events wait in the outbox.
pub(crate) async fn move_off_taken_ids(client: &mut Object) -> Result<Moved, DaemonError> {
    let mut moved = Moved::default();
    let mut tx = client.transaction().await?;
    tx.batch_execute(ONE_AT_A_TIME).await?;
    let Some(first) = id_or_none(&tx, FIRST_TAKEN).await? else {
        return Ok(moved);
    };
    let top = id_or_none(&tx, QUEUE_TOP).await?.unwrap_or(0);
    let advance = tx.savepoint("advance_identity").await?;
    match advance.query_opt(ADVANCE_IDENTITY, &[&top, &MARGIN]).await {
        Ok(row) => {
            moved.identity = row.map(|r| r.try_get(0)).transpose()?;
            advance.commit().await?;
        }
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE) => {
            advance.rollback().await?;
        }
        Err(e) => return Err(e.into()),
    }
    tx.batch_execute(BY_PRIMARY_KEY).await?;
    let renumbered = tx.query(RENUMBER, &[&first]).await?;
    let mut lowest = i64::MAX;
    for row in &renumbered {
        lowest = lowest.min(row.try_get(0)?);
    }
    if lowest <= top {
        tx.rollback().await?;
        moved.held = true;
        held();
        return Ok(moved);
    }
    tx.commit().await?;
    moved.events = u64::try_from(renumbered.len()).unwrap_or(u64::MAX);
    Ok(moved)
}

/// At start: an outbox identity that would hand out an id the queue holds means the
/// outbox's ids started again while the relay was stopped (a cutover, a restore).
/// Moved now, before the business writes events on ids the queue holds, those events
/// need no renumbering and keep their order against the queue's rows from before.
/// Quiet when the relay cannot look (no privilege on the sequence, no database yet: the
/// route finds taken ids anyway).
pub(crate) async fn catch_up_at_start(db: &Db) {
    let moved = db
        .bounded("comparing the outbox identity with the queue", async {
            let mut client = db.client().await?;
            let tx = client.transaction().await?;
            tx.batch_execute(ONE_AT_A_TIME).await?;
            let Some(top) = id_or_none(&tx, QUEUE_TOP).await? else {
                return Ok(None);
            };
            let moved = tx.query_opt(ADVANCE_IDENTITY, &[&top, &MARGIN]).await?;
            tx.commit().await?;
            Ok(moved.map(|row| row.try_get::<_, i64>(0)).transpose()?)
        })
        .await;
    match moved {
        Ok(Some(to)) => tracing::warn!(
            identity_moved_to = to,
            "the outbox's identity was behind the queue's event ids (its ids started again \
             while the relay was stopped): moved past them, so that new events are not \
             taken for ones already queued"
        ),
        Ok(None) => tracing::debug!(
            "the outbox identity is past the queue's event ids, or this role may not read it"
        ),
        Err(e) => {
            tracing::debug!(error = %e, "the outbox identity was not compared with the queue at start")
        }
    }
}

/// The one id (or none) a statement without parameters answers.
async fn id_or_none(
    tx: &deadpool_postgres::Transaction<'_>,
    statement: &str,
) -> Result<Option<i64>, DaemonError> {
    Ok(tx.query_one(statement, &[]).await?.try_get(0)?)
}

/// Events were held: [`holding`] for the next [`HOLD_FOR`], and the error about it,
/// at most every [`SAY_HELD_EVERY`].
fn held() {
    let now = Instant::now();
    if let Ok(mut at) = HELD_AT.lock() {
        *at = Some(now);
    }
    let Ok(mut said) = HELD_SAID.lock() else {
        return;
    };
    if said.is_some_and(|at| now.duration_since(at) < SAY_HELD_EVERY) {
        return;
    }
    *said = Some(now);
    tracing::error!(
        "outbox events have ids the queue holds for other events (the outbox's ids started \
         again), and this role may not move the outbox's identity past the queue's ids: \
         grant it SELECT and UPDATE on the sequence pg_get_serial_sequence('webhook_events', \
         'id') names (sql/roles.example.sql does), or have the tables' owner move it; \
         those events wait in the outbox until then, the others go on"
    );
}
