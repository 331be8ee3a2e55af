//! The wake-up protocol: how the relay goes to sleep without missing an event, while
//! busy writers never pay for a NOTIFY.
//!
//! A NOTIFY per outbox row would serialise every notifying commit in the cluster
//! (design.md, "The one rule"). So a writer (`webhook_emit`, a built-in trigger) notifies only when the relay has
//! *armed* the sequence `webhook_relay_wakeup` (1 = armed): the first writer that sees
//! it armed disarms it and sends one NOTIFY carrying the event id; every other writer
//! just inserts its outbox row. While the relay has work it never arms: the flag
//! stays 0 and the relay keeps polling the outbox, so a busy stream of writers costs
//! one small INSERT each and nothing else.
//!
//! When a pass finds nothing to do, the relay runs, as separate statements (pipelined
//! on one connection: one network round trip, but the server runs them one after the
//! other, each in its own implicit transaction and so with its own snapshot):
//!
//! 1. `setval('webhook_relay_wakeup', 1)`: arm. Sequences are not transactional, so
//!    every writer sees the flag from this moment on, whatever its snapshot. (Skipped
//!    when the flag is already 1; committed without waiting for a WAL flush, since
//!    `setval` writes WAL and a lost arm only means a poll.)
//! 2. Is any other backend holding `RowExclusiveLock` on `webhook_events`? (Asked only
//!    when some transaction with a transaction id is in progress at all:
//!    [`WRITERS_IN_FLIGHT`] says why that is enough.)
//! 3. Then, in a later statement and so a newer snapshot: is any event unrouted?
//!
//! Why this closes the gap. A writer inserts its outbox row *before* it reads the flag,
//! and the INSERT takes `RowExclusiveLock` on `webhook_events`, held until the
//! writer's transaction ends. Take a writer that read the flag before step 1 (it saw
//! 0 and will not notify). When step 2 runs, after step 1, that writer either
//! - has finished: Postgres marks a transaction committed before it releases its
//!   locks, so the commit precedes step 2 and is visible to step 3's snapshot, which
//!   finds the event; or
//! - still holds its lock: step 2 sees it, and the relay re-checks after a short
//!   pause (every millisecond for a while, since a writer usually commits within a
//!   disk sync, then doubling to 50 ms) until no other backend holds the lock and no
//!   event is waiting. A notification ends the pause early: a writer that reads the
//!   flag while the relay waits is exactly the one that notifies.
//!
//! A writer that reads the flag after step 1 sees it armed and notifies (unless its
//! session declined to, below). Either way
//! the relay cannot sleep on a committed, unrouted event. (Step 2 is conservative:
//! any holder, a business writer that has not reached its flag check or an unrelated
//! one, only makes the relay look again.)
//!
//! The one case left to the periodic safety sweep: a writer that saw the flag armed,
//! disarmed it and then rolled back. Its NOTIFY is never delivered, the flag stays 0,
//! and a later writer's event waits for the sweep (`queue.processing_interval_seconds`)
//! or the next wake-up for another reason; the settle after that pass finds the flag
//! disarmed and arms it again. With several relays, one more: a relay that finds the
//! flag still armed (its settle then only looks) leaves the writers that read it
//! disarmed to the relay that armed it again, whose step 2 waits for them; if that
//! relay stops before such a writer commits, the writer's event waits for the sweep
//! too. A writer whose session declined notifying (`n8n_relay.notify = off`, for
//! two-phase commit, which Postgres refuses after a NOTIFY) leaves the flag armed and
//! its event to the next writer's notification or the sweep. And a writer that took
//! the flag and holds its transaction open (a prepared transaction left uncommitted,
//! say) keeps every relay checking again every 50 ms until it ends. It is delayed,
//! never lost. The same holds
//! for a NOTIFY sent while the listener was reconnecting; the listener asks for a
//! full catch-up after every (re)connect.
//!
//! Due retries need no writer: step 3 also reports when the earliest pending row is
//! due, and the relay sleeps until then, so a 1 s retry delay is honoured within
//! about 1 s rather than at the next sweep.

use std::time::Duration;

use crate::db::{query_planned_once, Db};
use crate::error::DaemonError;
use crate::router::RouteTable;
use crate::shared::EndpointLoad;

/// Step 1.
pub const ARM: &str = "SELECT set_config('synchronous_commit', 'off', true),
    CASE WHEN last_value = 1 THEN 1 ELSE setval('webhook_relay_wakeup', 1) END
    FROM webhook_relay_wakeup";

/// Step 2: writers that may have read the flag before it was armed.
///
/// Asked of the statement's snapshot first: when no transaction with a transaction id
/// is in progress in the cluster, no writer that read the flag disarmed can be. A
/// writer's outbox INSERT takes its transaction id before the row is written, and it
/// reads the flag after that. One that read it disarmed did so before the `setval`
/// that armed it, which takes a transaction id of its own, larger, in a transaction
/// committed before this statement: so the snapshot's horizon (`xmax`, past the latest
/// transaction completed) is past the writer's id, and the writer is in the snapshot's
/// list unless it has finished (and step 3, later, sees its event). The `setval` is
/// step 1 of this relay, or of another relay whose own step 2 follows it (step 1
/// skips it when the flag is armed already). Only when some transaction is in progress
/// is `pg_locks` read, which gathers every lock in the cluster (predicate locks too)
/// to answer: about 50 µs a call, at every settle. The `CASE` keeps that order (its
/// subqueries run only when the branch reaches them). `IS DISTINCT FROM`: a prepared
/// transaction's locks have no pid, and a writer that prepared after reading the flag
/// disarmed is a writer in flight until it commits.
pub const WRITERS_IN_FLIGHT: &str = "SELECT CASE
    WHEN NOT EXISTS (SELECT 1 FROM pg_snapshot_xip(pg_current_snapshot())) THEN false
    ELSE EXISTS (
        SELECT 1 FROM pg_locks
        WHERE locktype = 'relation' AND relation = 'webhook_events'::regclass
          AND mode = 'RowExclusiveLock' AND granted
          AND pid IS DISTINCT FROM pg_backend_pid())
    END";

/// Step 3, in a newer snapshot: unrouted events of a known type, and how long until
/// the earliest claimable pending row is due ($2 = delivering; $3 held event types;
/// $4 endpoints at their cap). Seconds, negative when already due, NULL when none.
/// An ordered row waiting behind its entity's earlier one is not claimable: the relay
/// sleeps until that one's retry is due (or an outcome wakes it), instead of polling.
///
/// Pending rows are read in due order and the first claimable one answers, so the
/// check stops at the first row whatever the backlog (the `OFFSET 0` keeps the
/// ordering check out of the scan, as in `claim::CLAIM_DUE`). The `CASE`s keep a
/// generic plan's estimates sane on a one-type, one-URL queue, where `<> ALL ($n)`
/// with an unknown `$n` is estimated to match nothing (see `claim::CLAIM_DUE`).
/// `retry_count >= 0` (always true) is the predicate of `webhook_queue_next_due_idx`,
/// which only this statement may use (001_webhook_tables.sql says why).
///
/// It runs planned once, by index (`crate::db::PLAN_ONCE_BY_INDEX`), as the route and
/// the claim do: planned while the queue was empty (a new install, the bench's fresh
/// database) and kept until an ANALYZE, the plan read the whole queue for its pending
/// rows, delivered history and all; at 200 events/s, with 2,000 rows delivered, that
/// made it the costliest statement per event (0.13 ms a call, 2.8 calls per event).
pub const WORK_WAITING: &str = include_str!("../sql/work_waiting.sql");

/// What the relay should do after arming. Each answer says when the earliest
/// claimable pending row is due (`Some(ZERO)` when one is due now, `None` when there
/// is none), which tells the pump whether its next pass needs a due claim.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Settled {
    /// Events are waiting: make another pass.
    Work { next_due: Option<Duration> },
    /// Other backends hold the outbox lock: check again after a short pause (or at a
    /// notification), not before `next_due` if that comes first.
    Writers { next_due: Option<Duration> },
    /// Nothing to do: sleep until a wake-up, or until the next retry is due.
    Idle { next_due: Option<Duration> },
}

impl Settled {
    /// When the earliest claimable pending row is due, whatever the answer.
    pub(crate) fn next_due(self) -> Option<Duration> {
        match self {
            Settled::Work { next_due }
            | Settled::Writers { next_due }
            | Settled::Idle { next_due } => next_due,
        }
    }
}

/// Step 3 alone, without arming: is there anything for a pass to take now? Events
/// waiting, or a claimable pending row due; and when the earliest claimable pending
/// row is due (as in [`Settled`]). One statement where an empty pass is two
/// transactions of a dozen statements, the route's plan set up at each run; the pump
/// asks it before a pass that follows one which found the outbox and the queue empty.
pub(crate) async fn work_now(
    db: &Db,
    routes: &RouteTable,
    load: &EndpointLoad,
) -> Result<(bool, Option<Duration>), DaemonError> {
    let look = look(db, routes, load).await?;
    Ok((
        look.events || look.next_due.is_some_and(|d| d.is_zero()),
        look.next_due,
    ))
}

/// [`WORK_WAITING`]'s answer.
struct Look {
    events: bool,
    next_due: Option<Duration>,
    /// The wake-up is armed.
    armed: bool,
}

impl Look {
    /// What a settle ends in, given whether step 2 saw writers in flight.
    fn settled(&self, writers: bool) -> Settled {
        let next_due = self.next_due;
        if self.events {
            Settled::Work { next_due }
        } else if writers {
            Settled::Writers { next_due }
        } else {
            Settled::Idle { next_due }
        }
    }
}

/// Step 3 on its own.
async fn look(db: &Db, routes: &RouteTable, load: &EndpointLoad) -> Result<Look, DaemonError> {
    let client = db.client().await?;
    db.bounded("looking for work", async {
        let work = client.prepare_cached(WORK_WAITING).await?;
        let rows = query_planned_once(&client, &work, &work_params(routes, load)).await?;
        Ok(work_of(rows.first())?)
    })
    .await
}

/// [`WORK_WAITING`]'s parameters.
fn work_params<'a>(
    routes: &'a RouteTable,
    load: &'a EndpointLoad,
) -> [&'a (dyn tokio_postgres::types::ToSql + Sync); 4] {
    [
        &routes.events,
        &routes.delivering,
        &routes.held,
        &load.saturated,
    ]
}

/// [`WORK_WAITING`]'s answer: whether events wait, in how many seconds the earliest
/// claimable pending row is due (the query says it in seconds, negative when due), and
/// whether the wake-up is armed. Its one row missing (it never is) counts as events
/// waiting and the wake-up disarmed: a pass finds out.
fn work_of(row: Option<&tokio_postgres::Row>) -> Result<Look, tokio_postgres::Error> {
    let Some(row) = row else {
        return Ok(Look {
            events: true,
            next_due: None,
            armed: false,
        });
    };
    let secs: Option<f64> = row.try_get(1)?;
    Ok(Look {
        events: row.try_get(0)?,
        // A value no Duration holds (infinite, or centuries away) is never due.
        next_due: secs.and_then(|secs| Duration::try_from_secs_f64(secs.max(0.0)).ok()),
        armed: row.try_get::<_, Option<bool>>(2)? == Some(true),
    })
}

/// Steps 1 to 3, once. The caller pauses and calls again on [`Settled::Writers`].
///
/// `armed`: this relay's last settle ended idle and no notification has come since.
/// Then step 3 runs first, alone, and reads the flag too: still armed, steps 1 and 2
/// need not run again. Every arming of the flag is a relay's step 1, followed by its
/// step 2, which waited for the writers that had read it disarmed before; every writer
/// since has read it armed, and so has not disarmed it. Step 3 alone finds what an
/// outcome made claimable (a retry, an entity's next row, an endpoint with room again).
/// Found disarmed (a writer's notification not here yet, or never coming: that writer
/// rolled back, or holds its transaction open, or the wake-up was dropped), the
/// settle runs whole, as without `armed`.
pub(crate) async fn settle(
    db: &Db,
    routes: &RouteTable,
    load: &EndpointLoad,
    armed: bool,
) -> Result<Settled, DaemonError> {
    if armed {
        let look = look(db, routes, load).await?;
        if look.armed {
            return Ok(look.settled(false));
        }
    }
    let client = db.client().await?;
    let (look, writers) = db
        .bounded("arming the wake-up", async {
            let arm = client.prepare_cached(ARM).await?;
            let writers = client.prepare_cached(WRITERS_IN_FLIGHT).await?;
            let work = client.prepare_cached(WORK_WAITING).await?;
            let params = work_params(routes, load);
            // try_join3 first polls them in this order, which is the order tokio-postgres
            // sends them in, and so the order the server runs them in.
            let (_, writers, work) = futures_util::future::try_join3(
                client.query_one(&arm, &[]),
                client.query_one(&writers, &[]),
                query_planned_once(&client, &work, &params),
            )
            .await?;
            Ok((work_of(work.first())?, writers.try_get::<_, bool>(0)?))
        })
        .await?;
    Ok(look.settled(writers))
}
