//! The claim queries, all in one place: routing fresh events (and claiming the first
//! of them in the same statement), claiming due queue rows, giving rows back.
//!
//! A claimed row is `sending` with `lease_expires_at` set; whoever holds the lease
//! delivers it. Both claims use `FOR UPDATE SKIP LOCKED`, so two relays on one
//! database never take the same row, and enqueue is idempotent through the unique
//! `(event_id, webhook_url)`. The lease's exact microsecond value doubles as a claim
//! token: an outcome or a release only applies while the row still carries the lease
//! it was claimed with, so a relay whose lease expired (and whose row another relay
//! took over) cannot overwrite the newer attempt.
//!
//! Route and claim commit asynchronously (`synchronous_commit` off for their own
//! transaction only): waiting for the WAL flush would add a disk sync, often several
//! milliseconds, between a business commit and its delivery. It is safe because these
//! statements only move the relay's own bookkeeping. If the *server* crashes before
//! the flush, the event is still in the outbox (the business transaction committed
//! durably) and is routed again; its queue row gets the same `webhook_id`, derived from
//! the event and the target, so a delivery that already went out is repeated with the
//! same `X-Webhook-Id`, which is what at-least-once with an idempotency key allows. A
//! lost claim just leaves the row pending. Outcomes commit asynchronously too
//! (`crate::outcome`).

//!
//! Per-entity ordering (routes with `ordering = "entity"`, rows with `ordering` set):
//! an ordered row is claimable only while it is the earliest unfinished event of its
//! entity to its URL, or under `lifecycle` to any lifecycle route: the SQL function
//! `webhook_order_gate` (sql/001_webhook_tables.sql), which the planner inlines into
//! each statement that calls it. Both claims apply the check in the same statement
//! and snapshot as the `SKIP LOCKED` pick, so two relays cannot take consecutive rows
//! of one entity: while row N is `sending` (or, uncommitted, being claimed: still
//! `pending` in every other snapshot) row N+1 fails the check everywhere, and an event
//! that another relay is still routing is unrouted in the outbox, which the check
//! also sees. Event ids are commit order for one entity: its triggers run under the
//! business row's lock, so a later change of the entity gets a later id.
//!
//! Each statement is written out whole in its own file under `crates/relay-daemon/sql/`,
//! as it runs (the route statements first without their `ON CONFLICT` line and their
//! `NOT EXISTS` condition on taken ids: [`ROUTE_AND_CLAIM_FIRST`] and its siblings,
//! `first_try` says why): copy it into psql to `EXPLAIN` it. The route statements and
//! the due claim run planned once, with index scans only: to see the plan the relay runs, `PREPARE`
//! one and `EXPLAIN EXECUTE` it after the statements of [`PLAN_ONCE_BY_INDEX`].

use std::sync::LazyLock;
use std::time::Duration;

use tokio_postgres::types::ToSql;

use crate::db::{query_in_transaction, Db};
use crate::error::DaemonError;
use crate::router::RouteTable;
use crate::shared::{EndpointLoad, Job, AHEAD};

/// Route a batch of events and claim the first `free` resulting rows, in one statement:
/// the common case (an idle relay woken for one event) reaches the HTTP request after
/// a single round trip. Routing moves an event: its queue rows are inserted and the
/// outbox row deleted in the same statement (a delete writes a few bytes of WAL where
/// marking it routed rewrote the whole row, and the outbox stays as small as its
/// backlog).
///
/// $1..$4 the route table (event, url, priority, claimable), $5/$6 rows held per url,
/// $7 how many events, $8 per-endpoint cap (rows held per URL), $9 free slots,
/// $10 the routes' max_retries, $11 lease seconds, $12 the routes' ordering (NULL, skip, block: of
/// one ordered entity only its first event in the batch to a URL, or to any lifecycle
/// route, may be claimed, and only if nothing earlier of it is unfinished), $13 their
/// ordering scope (NULL or lifecycle), $14 this relay's marker
/// (`relay_core::db::Marker`), recorded on the rows it claims. Events of a type the
/// relay has no route for (only possible by writing the outbox directly, bypassing
/// webhook_emit) are left unrouted, not dropped.
///
/// An event whose every row could go now but for the room left at its endpoint in
/// this batch stays in the outbox, untouched, for the next pass: routed, it would be
/// inserted `pending` and claimed later with a second write (40 % of the rows of a
/// drain to one URL were). Only an endpoint with room at the start of the statement
/// leaves events behind; the events of a full one are queued `pending` as before, so
/// that the outbox moves on to other endpoints' events behind them (a dead endpoint
/// never holds up the others). Events held for another reason (their entity's
/// previous row is unfinished, their route is disabled) are queued `pending` too.
///
/// Returns on every row the number of events routed and of queue rows created, with
/// the claimed rows' columns (one all-NULL row when nothing was claimed), then how
/// many events were looked at and the URLs of those left in the outbox. The
/// `webhook_id` is an md5 of event id, occurred_at and URL: stable if the event is
/// ever routed again. The job columns (`job_from_row`) are the same in both claims; `occurred_at` is
/// rendered by Postgres as RFC 3339 UTC so the body is byte-identical on every
/// attempt.
pub const ROUTE_AND_CLAIM: &str = include_str!("../sql/route_and_claim.sql");

/// [`ROUTE_AND_CLAIM`] for the common case, when every queue row of every event it
/// picks will be claimed: the relay uses it only while no route is ordered, every
/// route is claimable now, every route URL has room for `route` more rows, and the free
/// slots take `route` events times the most routes one event type has. Then there is nothing
/// to choose (no ordering check, no cap, no priority among the rows, nothing left in
/// the outbox), and the statement is the pick, the outbox delete and the queue insert
/// alone. When Postgres still planned every route anew at every run, this one cost a
/// quarter of the planning (0.2 against 0.75-0.9 ms, `pg_stat_statements`) and about
/// half the execution (0.46 against 0.86 ms for 18 events, `EXPLAIN ANALYZE`): Postgres
/// CPU per event of a release drain of 100,000 fell from 97-99 to 75 µs. Now each is
/// planned once ([`PLAN_ONCE_BY_INDEX`]), and the execution is what this one saves.
/// Its result has the columns of [`ROUTE_AND_CLAIM`] in the same order, and the same
/// `webhook_id` for an event and URL.
///
/// $1..$4 the route table (event, url, priority, max_retries), $5 how many events, $6
/// lease seconds, $7 this relay's marker.
pub const ROUTE_ALL_CLAIMED: &str = include_str!("../sql/route_all_claimed.sql");

/// [`ROUTE_AND_CLAIM`] for ordered routes when every endpoint has room for the whole
/// batch: every route claimable, every route URL with room for `route` more rows, and
/// free slots for `route` events times the most routes one event type has. Each row the
/// ordering check lets go now is claimed, every other row is queued `pending`, and every
/// event picked leaves the outbox: what the full statement does when no cap bites,
/// without its per-endpoint cap, priority choice and events left in the outbox. A third
/// less to run (0.64 against 0.96 ms for 18 events), and, while every run was planned,
/// to plan (0.67 against 1.0 ms).
///
/// $1..$6 the route table (event, url, priority, max_retries, ordering, scope), $7 how
/// many events, $8 lease seconds, $9 this relay's marker.
pub const ROUTE_ORDERED_WITH_ROOM: &str = include_str!("../sql/route_ordered_with_room.sql");

/// The clause of the route statements that makes enqueue idempotent, as they spell it.
const ON_CONFLICT: &str = "\n    ON CONFLICT (event_id, webhook_url) DO NOTHING";

/// The condition of the route statements that leaves in the outbox an event on an id the
/// queue holds for another event (as `crate::outbox_ids` tells them apart), as they
/// spell it: so that `ON CONFLICT DO NOTHING` skips only events already queued.
const NOT_TAKEN: &str = "
      AND NOT EXISTS (SELECT 1 FROM webhook_queue q
                      WHERE q.event_id = e.id AND q.occurred_at <> e.occurred_at)";

/// A route statement as the relay runs it first: without [`ON_CONFLICT`] and
/// [`NOT_TAKEN`].
///
/// `ON CONFLICT` makes each queue row a speculative insertion: the unique key is
/// searched before the row is written, the row carries a speculative token, and a
/// second WAL record confirms it. Counted under valgrind, inserting queue rows in
/// batches of 30 took 88,000 instructions a row with the clause and 75,000 without,
/// and each row logs 48 bytes more. A conflict cannot happen in the normal course: the
/// statement that queues an event deletes it from the outbox, after locking it
/// (`SKIP LOCKED`), so no two statements queue one event. Only an event put back into
/// the outbox after it was routed (a restore, an insert with `OVERRIDING SYSTEM VALUE`)
/// conflicts. Then the plain insert fails on the key, its transaction is rolled back
/// with everything the statement did, and [`route_and_claim`] runs the statement again
/// as written, with `ON CONFLICT DO NOTHING`: the rows already queued are left as
/// they are and the event leaves the outbox. New events meet the key too when the
/// outbox's ids started again (`TRUNCATE ... RESTART IDENTITY`, a logical-replication
/// cutover, which does not carry sequences) while the queue still holds rows with those
/// ids; skipped, they would be lost. So before the second run `crate::outbox_ids`
/// gives them new ids, and the second run leaves any it could not renumber (or that
/// were committed since) in the outbox ([`NOT_TAKEN`]). Either way the relay logs a
/// warning naming the key. The first try needs no such condition: such an event makes
/// it fail.
fn first_try(statement: &str) -> String {
    statement
        .replacen(ON_CONFLICT, "", 1)
        .replacen(NOT_TAKEN, "", 1)
}

/// [`ROUTE_AND_CLAIM`] as the relay runs it first: without its `ON CONFLICT` and
/// [`NOT_TAKEN`], which it falls back to only when a queue row is already there
/// (`first_try` says why).
pub static ROUTE_AND_CLAIM_FIRST: LazyLock<String> = LazyLock::new(|| first_try(ROUTE_AND_CLAIM));
/// [`ROUTE_ALL_CLAIMED`] as the relay runs it first.
pub static ROUTE_ALL_CLAIMED_FIRST: LazyLock<String> =
    LazyLock::new(|| first_try(ROUTE_ALL_CLAIMED));
/// [`ROUTE_ORDERED_WITH_ROOM`] as the relay runs it first.
pub static ROUTE_ORDERED_WITH_ROOM_FIRST: LazyLock<String> =
    LazyLock::new(|| first_try(ROUTE_ORDERED_WITH_ROOM));

/// The plain insert of [`first_try`] meeting a unique key of the queue: what it names,
/// for the log. Any unique key, not only `webhook_queue_event_target_key` by name: an
/// index rebuilt under another name still serves `ON CONFLICT (event_id,
/// webhook_url)`, and a fallback missed would stop the outbox at that event for good.
/// A conflict on another key fails the written statement too, as it always did.
fn unique_key_met(err: &tokio_postgres::Error) -> Option<String> {
    let e = err.as_db_error()?;
    (*e.code() == tokio_postgres::error::SqlState::UNIQUE_VIOLATION
        && e.table() == Some("webhook_queue"))
    .then(|| e.detail().unwrap_or(e.message()).to_string())
}

/// How the route statements and the due claim run (planned once, by index); public so
/// that the plan tests plan them as the relay does.
pub use crate::db::{query_planned_once, PLAN_ONCE_BY_INDEX};

/// How a route statement's transaction opens: planned once, by index, and waiting
/// while `crate::outbox_ids` renumbers events, for two seconds at most (set with the
/// other two, in the statement before the wait).
static ROUTE_BEGIN: LazyLock<String> = LazyLock::new(|| {
    format!(
        "{PLAN_ONCE_BY_INDEX}, set_config('lock_timeout', '2s', true); {}",
        crate::outbox_ids::ROUTES_GO_ON
    )
});

/// Claim due rows by priority, then age. $1 how many, $2 held event types, $3/$4 rows
/// held per url, $5 per-URL cap, $6 lease seconds, $7 the known event types, $8 this
/// relay's marker. Returns the job columns (one all-NULL row when nothing was claimed).
///
/// The URLs with pending rows come from a loose index scan of
/// `webhook_queue_url_claim_idx`, one probe per distinct URL (a handful), so it costs
/// the same with 10 or 100,000 rows pending. Each URL with room is asked for its own best rows (a lookup in
/// `webhook_queue_url_claim_idx` that stops at its room), and the best of those are
/// taken: an endpoint at its cap is never scanned, so one slow endpoint with a large
/// backlog costs the others nothing, and cannot keep them from being claimed.
/// Rows picked by a URL beyond `$1` stay locked until the statement ends, unclaimed.
///
/// An ordered row waits behind its entity's earlier unfinished ones (`webhook_order_gate`),
/// whether this relay's routes are ordered or the row was left by another relay or an
/// earlier configuration. The check runs on each URL's rows as the scan hands them
/// over in claim order (the `OFFSET 0` keeps the planner from moving it into the
/// scan): with the check inside a LIMITed scan, a planner short of statistics (a queue
/// just filled by a backlog) sorts every due row after checking each one, hundreds of
/// milliseconds per claim. Rows the check turns down are locked until the statement
/// ends and not claimed; they never use up the room, so an entity held behind a failed
/// row never holds back the others.
///
/// The held-types filter is spelled as a `CASE` for the planner's sake. The statement
/// is prepared once, and Postgres soon plans it generically, without `$2`; it then
/// estimates `event_type <> ALL ($2)` on a queue of one event type (a backlog) as
/// matching no row, and prefers reading the whole queue and sorting it (spilling to
/// disk at 100,000 rows: 100 ms per claim, a drain at a third of its rate) to the index
/// that hands rows over in claim order. A `CASE` gets a neutral estimate, and a custom
/// plan with the usual `$2 = '{}'` folds it away (tests/tests/claim_plans.rs).
///
/// The `set_config` is the one-row side of the final join so that it runs even when
/// nothing is claimed: rows the ordering check turned down were still locked (a
/// write), and joined to an empty `claimed` it may never run, leaving that commit to
/// wait for a disk sync.
pub const CLAIM_DUE: &str = include_str!("../sql/claim_due.sql");

/// Give rows back untouched (shutdown after the grace period; rows withdrawn by a
/// pause or a 429/503 cool-down before they went out): pending again, each due in its
/// own number of seconds, retry_count unchanged. $1 ids, $2 their claim tokens, $3
/// their waits: one statement for rows of several due times (a stop gives back rows
/// of several cooling URLs at once). By primary key, never through the lease index,
/// as `crate::outcome::RECORD` explains.
pub const RELEASE: &str = "UPDATE webhook_queue q
    SET status = 'pending', lease_expires_at = NULL, claimed_by = NULL,
        next_attempt_at = greatest(q.next_attempt_at, now() + make_interval(secs => r.wait)),
        updated_at = now()
    FROM unnest($1::int8[], $2::int8[], $3::float8[]) AS r(id, token, wait)
    WHERE q.id = ANY ($1::int8[]) AND q.id = r.id
      AND CASE WHEN q.status = 'sending' THEN true END
      AND (extract(epoch FROM q.lease_expires_at) * 1000000)::int8 = r.token";

/// Rows whose relay stalled (or died before markers, `crate::liveness`, existed)
/// mid-delivery: their lease ran out, so they go back to the queue, each with a
/// history note. The guide's "stuck in sending" heals itself.
pub(crate) const RELEASE_EXPIRED_LEASES: &str = "WITH released AS (
        UPDATE webhook_queue q
        SET status = 'pending', lease_expires_at = NULL, claimed_by = NULL, updated_at = now()
        FROM webhook_queue old
        WHERE q.status = 'sending' AND q.lease_expires_at < now() AND old.id = q.id
        RETURNING q.id, q.retry_count, old.claimed_by
    ),
    noted AS (
        INSERT INTO webhook_retry_history (webhook_queue_id, attempt, note)
        -- least(): a retry_count set by hand to the integer maximum must not fail
        -- the release of every other row.
        SELECT r.id, least(r.retry_count, 2147483646) + 1,
               'returned to the queue: its lease expired (relay '
               || coalesce(r.claimed_by::text, 'unknown') || ' stopped moving or lost its link)'
        FROM released r
    )
    SELECT r.id FROM released r ORDER BY r.id";

/// The claim settings that come from configuration, and the relay's marker.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClaimLimits {
    /// Rows one URL may hold claimed (ready or in flight): `queue.max_per_endpoint`
    /// in flight and more ready behind them (see [`AHEAD`]). One cap for every URL:
    /// a URL held deeper for its pace is counted as holding less (`crate::pace`).
    pub(crate) per_endpoint: i32,
    pub(crate) lease: Duration,
    /// Recorded on every row claimed (`claimed_by`), see [`crate::liveness`].
    pub(crate) marker: i32,
}

impl ClaimLimits {
    pub(crate) fn new(config: &relay_core::Config, marker: relay_core::db::Marker) -> ClaimLimits {
        ClaimLimits {
            per_endpoint: i32::try_from(config.queue.max_per_endpoint.saturating_mul(AHEAD))
                .unwrap_or(i32::MAX),
            lease: Duration::from_secs(config.queue.lease_seconds),
            marker: marker.get(),
        }
    }
}

/// The result of one route statement.
#[derive(Default)]
pub(crate) struct Routed {
    /// Events looked at: as many as asked for means more may wait in the outbox.
    pub(crate) picked: i64,
    /// Events moved from the outbox into the queue.
    pub(crate) events: i64,
    /// The URLs of the events left in the outbox for want of room (see
    /// [`ROUTE_AND_CLAIM`]).
    pub(crate) left_for: Vec<String>,
    /// Queue rows created for them (one per event and target).
    pub(crate) enqueued: i64,
    /// Rows claimed straight away, to be delivered now.
    pub(crate) jobs: Vec<Job>,
}

/// Routes up to `route` events, claiming up to `free` of the rows made.
pub(crate) async fn route_and_claim(
    db: &Db,
    routes: &RouteTable,
    load: &EndpointLoad,
    limits: ClaimLimits,
    route: i64,
    free: usize,
) -> Result<Routed, DaemonError> {
    let lease = limits.lease.as_secs_f64();
    let free = i64::try_from(free).unwrap_or(i64::MAX);
    let room = room_for_all(routes, load, limits.per_endpoint, route, free);
    let ordered = routes.ordering.iter().any(Option::is_some);
    // Each statement as written (idempotent) and as first tried (`first_try`).
    let (written, first, params): (&str, &str, Vec<&(dyn ToSql + Sync)>) = if room && ordered {
        (
            ROUTE_ORDERED_WITH_ROOM,
            &ROUTE_ORDERED_WITH_ROOM_FIRST,
            vec![
                &routes.events,
                &routes.urls,
                &routes.priorities,
                &routes.max_retries,
                &routes.ordering,
                &routes.scopes,
                &route,
                &lease,
                &limits.marker,
            ],
        )
    } else if room {
        (
            ROUTE_ALL_CLAIMED,
            &ROUTE_ALL_CLAIMED_FIRST,
            vec![
                &routes.events,
                &routes.urls,
                &routes.priorities,
                &routes.max_retries,
                &route,
                &lease,
                &limits.marker,
            ],
        )
    } else {
        (
            ROUTE_AND_CLAIM,
            &ROUTE_AND_CLAIM_FIRST,
            vec![
                &routes.events,
                &routes.urls,
                &routes.priorities,
                &routes.claimable,
                &load.urls,
                &load.in_flight,
                &route,
                &limits.per_endpoint,
                &free,
                &routes.max_retries,
                &lease,
                &routes.ordering,
                &routes.scopes,
                &limits.marker,
            ],
        )
    };
    db.bounded("routing events", async {
        let mut client = db.client().await?;
        // While events on taken ids wait for the identity to move, no first try: it
        // would meet them again. The statement as written leaves them in the outbox and
        // routes the others.
        if !crate::outbox_ids::holding() {
            let statement = client.prepare_cached(first).await?;
            // Both tries share the one time limit: a fallback cut off by it is retried
            // at the next pass, like any failed route.
            let err = match query_in_transaction(&client, &ROUTE_BEGIN, &statement, &params).await {
                Ok(rows) => return routed_from(&rows),
                Err(e) => e,
            };
            let Some(key) = unique_key_met(&err) else {
                return Err(err.into());
            };
            let moved = crate::outbox_ids::move_off_taken_ids(&mut client).await?;
            // Of held events `outbox_ids` says so itself, at most once a minute.
            if !moved.held {
                tracing::warn!(
                    %key,
                    renumbered = moved.events,
                    identity_moved_to = ?moved.identity,
                    "events in the outbox have ids that already have queue rows: those put \
                     back after they were routed leave it without a new row; those on ids \
                     the queue holds for older events (the outbox's ids started again) were \
                     renumbered past the queue's"
                );
            }
        }
        let statement = client.prepare_cached(written).await?;
        let rows = query_in_transaction(&client, &ROUTE_BEGIN, &statement, &params).await?;
        routed_from(&rows)
    })
    .await
    .map_err(|e| e.batch_outran("routing events"))
}

/// What a route statement's rows say.
fn routed_from(rows: &[tokio_postgres::Row]) -> Result<Routed, DaemonError> {
    let mut routed = Routed {
        picked: 0,
        events: 0,
        left_for: Vec::new(),
        enqueued: 0,
        jobs: Vec::new(),
    };
    for row in rows {
        routed.events = row.try_get(0)?;
        routed.enqueued = row.try_get(1)?;
        routed.jobs.extend(job_from_row(row, 2)?);
        routed.picked = row.try_get("picked")?;
        routed.left_for = row.try_get("left_for")?;
    }
    relay_core::metrics::global().routed(
        u64::try_from(routed.events).unwrap_or(0),
        u64::try_from(routed.enqueued).unwrap_or(0),
    );
    routed
        .jobs
        .sort_by(|a, b| b.priority.cmp(&a.priority).then(a.id.cmp(&b.id)));
    Ok(routed)
}

/// Whether every route may claim now and every endpoint has room for all the rows
/// `route` events can make, so that [`ROUTE_ALL_CLAIMED`] (no route ordered) or
/// [`ROUTE_ORDERED_WITH_ROOM`] does what [`ROUTE_AND_CLAIM`] would.
fn room_for_all(routes: &RouteTable, load: &EndpointLoad, cap: i32, route: i64, free: i64) -> bool {
    let (Ok(route), Ok(free)) = (usize::try_from(route), usize::try_from(free)) else {
        return false;
    };
    route <= lean_fit(routes, load, cap, free)
}

/// The most events a route may take for [`room_for_all`] to hold: what the emptiest
/// endpoint has room for, and the free slots shared by the most routes one event can
/// have; 0 when a route may not claim now (disabled, paused) or nothing fits.
///
/// The pump routes no more than this when the last route found fewer events than it
/// asked for (a trickle): such a route nearly always takes one or two events, and
/// asked for as many as the free slots it would need the full statement, whose plan
/// (window aggregates, sorts, the cap's bookkeeping) is set up at every run for them.
pub(crate) fn lean_fit(routes: &RouteTable, load: &EndpointLoad, cap: i32, free: usize) -> usize {
    if !routes.claimable.iter().all(|c| *c) {
        return 0;
    }
    let most_routes = routes
        .events
        .iter()
        .map(|e| routes.events.iter().filter(|other| *other == e).count())
        .max()
        .unwrap_or(0);
    let room = routes
        .urls
        .iter()
        .map(|url| load.room(std::slice::from_ref(url), cap))
        .min()
        .unwrap_or(usize::MAX);
    room.min(free.checked_div(most_routes).unwrap_or(usize::MAX))
}

pub(crate) async fn claim_due(
    db: &Db,
    routes: &RouteTable,
    load: &EndpointLoad,
    limits: ClaimLimits,
    want: usize,
) -> Result<Vec<Job>, DaemonError> {
    db.bounded("claiming due rows", async {
        let client = db.client().await?;
        let statement = client.prepare_cached(CLAIM_DUE).await?;
        let want = i64::try_from(want).unwrap_or(i64::MAX);
        let rows = query_planned_once(
            &client,
            &statement,
            &[
                &want,
                &routes.held,
                &load.urls,
                &load.in_flight,
                &limits.per_endpoint,
                &limits.lease.as_secs_f64(),
                &routes.events,
                &limits.marker,
            ],
        )
        .await?;
        let mut jobs = Vec::with_capacity(rows.len());
        for row in &rows {
            jobs.extend(job_from_row(row, 0)?);
        }
        Ok(jobs)
    })
    .await
    .map_err(|e| e.batch_outran("claiming due rows"))
}

/// Returns rows (id, claim token) to `pending`, each group due no sooner than its
/// time, in one statement (all or nothing, within one bound); how many were still
/// ours.
pub(crate) async fn release(
    db: &Db,
    groups: &[crate::pump::Withdrawn],
) -> Result<u64, DaemonError> {
    let now = tokio::time::Instant::now();
    let (mut ids, mut tokens, mut waits) = (Vec::new(), Vec::new(), Vec::new());
    for (rows, due) in groups {
        let wait = due.saturating_duration_since(now).as_secs_f64();
        for &(id, token) in rows {
            ids.push(id);
            tokens.push(token);
            waits.push(wait);
        }
    }
    if ids.is_empty() {
        return Ok(0);
    }
    db.bounded("releasing rows", async {
        let client = db.client().await?;
        let statement = client.prepare_cached(RELEASE).await?;
        Ok(client.execute(&statement, &[&ids, &tokens, &waits]).await?)
    })
    .await
}

/// Expired leases back to `pending`; the ids released.
pub(crate) async fn release_expired_leases(db: &Db) -> Result<Vec<i64>, DaemonError> {
    db.bounded("releasing expired leases", async {
        let client = db.client().await?;
        let statement = client.prepare_cached(RELEASE_EXPIRED_LEASES).await?;
        let rows = client.query(&statement, &[]).await?;
        let ids: Result<Vec<i64>, _> = rows.iter().map(|r| r.try_get::<_, i64>(0)).collect();
        Ok(ids?)
    })
    .await
}

/// Reads the job columns starting at column `at`; `None` for the all-NULL row.
fn job_from_row(row: &tokio_postgres::Row, at: usize) -> Result<Option<Job>, DaemonError> {
    let Some(id) = row.try_get::<_, Option<i64>>(at)? else {
        return Ok(None);
    };
    Ok(Some(Job {
        id,
        webhook_id: row.try_get(at + 1)?,
        event_type: row.try_get(at + 2)?,
        entity_type: row.try_get(at + 3)?,
        entity_id: row.try_get(at + 4)?,
        url: row.try_get(at + 5)?,
        payload: row.try_get(at + 6)?,
        priority: row.try_get(at + 7)?,
        retry_count: row.try_get(at + 8)?,
        max_retries: row.try_get(at + 9)?,
        occurred_at: row.try_get(at + 10)?,
        lease_token: row.try_get(at + 11)?,
        occurred_at_unix: row.try_get(at + 12)?,
        ordering: row.try_get(at + 13)?,
        lifecycle: row.try_get::<_, Option<String>>(at + 14)?.is_some(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The job columns of a statement, whitespace folded: from `j.id` to
    /// `j.ordering_scope`.
    fn job_columns(statement: &str) -> String {
        let start = statement
            .find("j.id, j.webhook_id")
            .expect("job columns start");
        let end = statement[start..]
            .find("j.ordering_scope")
            .expect("job columns end");
        statement[start..start + end]
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// `job_from_row` reads both statements' rows by position: their job columns
    /// must stay the same list.
    #[test]
    fn every_claim_returns_the_same_job_columns() {
        assert_eq!(job_columns(ROUTE_AND_CLAIM), job_columns(CLAIM_DUE));
        assert_eq!(job_columns(ROUTE_ALL_CLAIMED), job_columns(CLAIM_DUE));
        assert_eq!(job_columns(ROUTE_ORDERED_WITH_ROOM), job_columns(CLAIM_DUE));
    }

    /// Each route statement's first try is the statement without its `ON CONFLICT`
    /// and its [`NOT_TAKEN`] condition, and nothing else: were either spelled otherwise
    /// in a file, `first_try` would leave it in, and the relay would pay for the
    /// speculative insertion, or a probe of the queue per event, again.
    #[test]
    fn every_route_is_first_tried_without_its_on_conflict_alone() {
        for (written, first) in [
            (ROUTE_AND_CLAIM, &ROUTE_AND_CLAIM_FIRST),
            (ROUTE_ALL_CLAIMED, &ROUTE_ALL_CLAIMED_FIRST),
            (ROUTE_ORDERED_WITH_ROOM, &ROUTE_ORDERED_WITH_ROOM_FIRST),
        ] {
            assert_eq!(written.matches(ON_CONFLICT).count(), 1);
            assert_eq!(written.matches(NOT_TAKEN).count(), 1);
            assert!(!first.contains("ON CONFLICT"), "{}", first.as_str());
            assert!(
                !first.contains("q.occurred_at <> e.occurred_at"),
                "{}",
                first.as_str()
            );
            assert_eq!(
                first.len() + ON_CONFLICT.len() + NOT_TAKEN.len(),
                written.len()
            );
        }
    }

    /// The text from `pattern` to the end of its line, whitespace folded.
    fn line_from(statement: &str, pattern: &str) -> String {
        let start = statement.find(pattern).expect(pattern);
        let rest = &statement[start..];
        let end = rest.find("::uuid").expect("the webhook_id expression ends");
        rest[..end].split_whitespace().collect::<Vec<_>>().join(" ")
    }

    /// Both route statements read their result the same way, and give an event and
    /// URL the same `webhook_id` (the idempotency key n8n sees), whichever routed it.
    #[test]
    fn every_route_returns_the_same_columns_and_webhook_id() {
        let tail = |s: &str| {
            s[s.rfind("n.async_commit").expect("result tail")..]
                .lines()
                .next()
                .unwrap_or_default()
                .trim()
                .to_string()
        };
        assert_eq!(tail(ROUTE_ALL_CLAIMED), tail(ROUTE_AND_CLAIM));
        assert_eq!(tail(ROUTE_ORDERED_WITH_ROOM), tail(ROUTE_AND_CLAIM));
        for route in [ROUTE_AND_CLAIM, ROUTE_ALL_CLAIMED, ROUTE_ORDERED_WITH_ROOM] {
            assert!(route.contains("SELECT n.routed, n.enqueued,"));
        }
        let id = |s: &str, alias: &str| line_from(s, "md5(").replace(alias, "x.");
        assert_eq!(
            id(ROUTE_ALL_CLAIMED, "p.").replace("r.url", "x.url"),
            id(ROUTE_AND_CLAIM, "c.")
        );
        assert_eq!(id(ROUTE_ORDERED_WITH_ROOM, "c."), id(ROUTE_AND_CLAIM, "c."));
    }

    fn table(urls: &[(&str, &str)]) -> RouteTable {
        RouteTable {
            events: urls.iter().map(|(e, _)| e.to_string()).collect(),
            urls: urls.iter().map(|(_, u)| u.to_string()).collect(),
            priorities: vec![0; urls.len()],
            claimable: vec![true; urls.len()],
            ordering: vec![None; urls.len()],
            scopes: vec![None; urls.len()],
            max_retries: vec![3; urls.len()],
            held: Vec::new(),
            delivering: true,
        }
    }

    #[test]
    fn a_lean_route_runs_only_when_every_endpoint_has_room_for_the_batch() {
        let routes = table(&[("a", "u1"), ("b", "u2")]);
        let load = EndpointLoad {
            urls: vec!["u1".into()],
            in_flight: vec![40],
            saturated: Vec::new(),
        };
        assert!(room_for_all(&routes, &load, 64, 24, 24));
        assert!(
            !room_for_all(&routes, &load, 64, 25, 64),
            "u1 has room for 24"
        );
        assert!(!room_for_all(&routes, &load, 64, 24, 23), "23 free slots");
        // The largest such batch: what a trickle's route asks for.
        assert_eq!(lean_fit(&routes, &load, 64, 64), 24, "u1 has room for 24");
        assert_eq!(lean_fit(&routes, &load, 64, 23), 23, "23 free slots");
        let full = EndpointLoad {
            urls: vec!["u1".into()],
            in_flight: vec![64],
            saturated: vec!["u1".into()],
        };
        assert_eq!(lean_fit(&routes, &full, 64, 64), 0, "u1 is at its cap");

        let mut paused = routes.clone();
        paused.claimable[0] = false;
        assert!(
            !room_for_all(&paused, &load, 64, 1, 64),
            "paused or disabled route"
        );
        assert_eq!(
            lean_fit(&paused, &load, 64, 64),
            0,
            "paused or disabled route"
        );
        let mut ordered = routes.clone();
        ordered.ordering[1] = Some("skip".into());
        assert!(
            room_for_all(&ordered, &load, 64, 24, 24),
            "ordered routes take ROUTE_ORDERED_WITH_ROOM"
        );

        // An event type with two routes makes two rows per event.
        let fan_out = table(&[("a", "u1"), ("a", "u2")]);
        assert!(room_for_all(&fan_out, &load, 64, 12, 24));
        assert!(
            !room_for_all(&fan_out, &load, 64, 13, 24),
            "26 rows, 24 slots"
        );
        assert_eq!(lean_fit(&fan_out, &load, 64, 24), 12, "two rows per event");
    }
}
