//! The relay prepares its claim statements once, so Postgres soon plans them
//! generically (without the parameters' values). A generic plan that reads the whole
//! queue and sorts it costs a claim 100 ms at 100,000 rows instead of a fraction of a
//! millisecond; these tests hold the plans to the indexes, with plans forced generic
//! over a large one-type backlog (where the estimates are at their worst).

use relay_tests::TestDb;

const BACKLOG: i64 = 50_000;

/// A backlog of one event type to one URL, all pending and due.
const PENDING_BACKLOG: &str = "INSERT INTO webhook_queue (
        webhook_id, event_id, event_type, entity_type, entity_id, webhook_url, payload,
        priority, status, max_retries)
    SELECT md5(g::text)::uuid, g, 'lead_created', 'lead', g, 'http://127.0.0.1:9/hook',
           '{\"lead\": {\"id\": 1}}', 0, 'pending', 3
    FROM generate_series(1, $1::int8) g";

/// The same backlog, unrouted.
const OUTBOX_BACKLOG: &str = "INSERT INTO webhook_events (event_type, entity_type, entity_id,
                                                           payload)
    SELECT 'lead_created', 'lead', g, '{\"lead\": {\"id\": 1}}'
    FROM generate_series(1, $1::int8) g";

/// Rows delivered before a backlog (event ids below the backlog's).
const DELIVERED_BEFORE: &str = "INSERT INTO webhook_queue (
        webhook_id, event_id, event_type, entity_type, entity_id, webhook_url, payload,
        priority, status, max_retries)
    SELECT md5((-g)::text)::uuid, -g, 'lead_created', 'lead', g, 'http://127.0.0.1:9/hook',
           '{\"lead\": {\"id\": 1}}', 0, 'sent', 3
    FROM generate_series(1, 5000) g";

/// Rows out for delivery, as the lease index sees a drain: every row the relay has
/// claimed since the last vacuum has an entry there (dead once delivered, but the
/// planner cannot tell, and a scan visits them all).
const SENDING_BACKLOG: &str = "INSERT INTO webhook_queue (
        webhook_id, event_id, event_type, entity_type, entity_id, webhook_url, payload,
        priority, status, max_retries, lease_expires_at)
    SELECT md5(g::text)::uuid, g, 'lead_created', 'lead', g, 'http://127.0.0.1:9/hook',
           '{\"lead\": {\"id\": 1}}', 0, 'sending', 3, now() + interval '30 seconds'
    FROM generate_series(1, $1::int8) g";

/// A queue as it looks after a busy day: most rows delivered (they stay until
/// retention), a few pending or being sent.
const DELIVERED_DAY: &str = "INSERT INTO webhook_queue (
        webhook_id, event_id, event_type, entity_type, entity_id, webhook_url, payload,
        priority, status, max_retries, lease_expires_at)
    SELECT md5(g::text)::uuid, g, 'lead_created', 'lead', g, 'http://127.0.0.1:9/hook',
           '{\"lead\": {\"id\": 1}}', 0,
           CASE WHEN g % 1000 = 0 THEN 'pending' WHEN g % 1000 = 1 THEN 'sending'
                ELSE 'sent' END, 3,
           CASE WHEN g % 1000 = 1 THEN now() + interval '30 seconds' END
    FROM generate_series(1, $1::int8) g";

/// When the table's statistics were taken.
#[derive(Clone, Copy, PartialEq)]
enum Statistics {
    /// After the fill, as autovacuum would leave them.
    Fresh,
    /// Before it, when the queue held only delivered rows: the backlog arrived since
    /// (an outage, faster than autovacuum's next ANALYZE).
    FromBeforeTheBacklog,
    /// Of an empty database, and the plan made then and kept while the backlog
    /// arrived: the relay's route statements keep their first generic plan until an
    /// ANALYZE of one of their tables invalidates it.
    PlannedWhenEmpty,
}

/// How Postgres plans `statement` (parameter `types`) generically, executed with
/// `args`, in a fresh database whose `table` holds `BACKLOG` rows made by `fill`.
async fn generic_plan(fill: &str, table: &str, statement: &str, types: &str, args: &str) -> String {
    plan(fill, table, Statistics::Fresh, statement, types, args).await
}

/// The settings `statement` is planned under: as the relay runs it where it runs it
/// with `claim::query_planned_once`, any other generic and otherwise as set.
fn generic_planning(statement: &str) -> &'static str {
    let planned_once = [
        relay_daemon::claim::ROUTE_AND_CLAIM_FIRST.as_str(),
        relay_daemon::claim::ROUTE_ALL_CLAIMED_FIRST.as_str(),
        relay_daemon::claim::ROUTE_ORDERED_WITH_ROOM_FIRST.as_str(),
        relay_daemon::claim::CLAIM_DUE,
        relay_daemon::liveness::ABSENT_MARKERS,
        relay_daemon::wakeup::WORK_WAITING,
    ];
    if planned_once.contains(&statement) {
        relay_daemon::claim::PLAN_ONCE_BY_INDEX
    } else {
        "BEGIN; SET LOCAL plan_cache_mode = force_generic_plan"
    }
}

async fn plan(
    fill: &str,
    table: &str,
    statistics: Statistics,
    statement: &str,
    types: &str,
    args: &str,
) -> String {
    let db = TestDb::migrated().await;
    let client = db.client().await;
    let analyze = format!("VACUUM ANALYZE {table}");
    let in_parens = |list: &str| {
        if list.is_empty() {
            String::new()
        } else {
            format!("({list})")
        }
    };
    let explain = format!("EXPLAIN EXECUTE statement{}", in_parens(args));
    let explain = || async {
        client
            .batch_execute(generic_planning(statement))
            .await
            .expect("planning settings");
        let rows = client.query(&explain, &[]).await.expect("explain");
        client.batch_execute("COMMIT").await.expect("commit");
        rows
    };
    client
        .batch_execute(&format!(
            "SET jit = off; PREPARE statement{} AS {statement}",
            in_parens(types)
        ))
        .await
        .expect("prepare");
    if statistics == Statistics::PlannedWhenEmpty {
        client
            .batch_execute("VACUUM ANALYZE webhook_events, webhook_queue")
            .await
            .expect("analyze the empty tables");
        explain().await;
    }
    if statistics == Statistics::FromBeforeTheBacklog {
        client
            .batch_execute(DELIVERED_BEFORE)
            .await
            .expect("delivered rows");
        client
            .batch_execute(&analyze)
            .await
            .unwrap_or_else(|e| panic!("analyzing {table}: {e}"));
    }
    client
        .execute(fill, &[&BACKLOG])
        .await
        .unwrap_or_else(|e| panic!("filling {table}: {e}"));
    if statistics == Statistics::Fresh {
        client
            .batch_execute(&analyze)
            .await
            .unwrap_or_else(|e| panic!("analyzing {table}: {e}"));
    }
    let rows = explain().await;
    rows.iter()
        .map(|r| r.get::<_, String>(0))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The ordering check (`webhook_order_gate`, sql/001_webhook_tables.sql) is inlined
/// into `plan`: its probes are the order indexes, not a function call per row.
fn assert_ordering_gate_inlined(plan: &str) {
    assert!(
        !plan.contains("webhook_order_gate") && !plan.contains("Function Scan on g"),
        "webhook_order_gate is called, not inlined:\n{plan}"
    );
    for index in [
        "webhook_queue_entity_order_idx",
        "webhook_queue_lifecycle_order_idx",
    ] {
        assert!(
            plan.contains(index),
            "the ordering check does not probe {index}:\n{plan}"
        );
    }
}

/// The due claim's plan over a pending backlog, with statistics taken at `statistics`,
/// held to taking rows from `webhook_queue_url_claim_idx` in claim order: never the
/// whole queue, never every pending row through the idle check's index.
async fn assert_due_claim_walks_the_url_index(statistics: Statistics) {
    let plan = plan(
        PENDING_BACKLOG,
        "webhook_queue",
        statistics,
        relay_daemon::claim::CLAIM_DUE,
        "int8, text[], text[], int4[], int4, float8, text[], int4",
        "64, '{}', '{}', '{}', 64, 30, '{lead_created}', 7",
    )
    .await;
    assert!(
        !plan.contains("webhook_queue_next_due_idx") && !plan.contains("Seq Scan on webhook_queue"),
        "the due claim reads every pending row:\n{plan}"
    );
    assert!(
        plan.contains("Index Scan using webhook_queue_url_claim_idx"),
        "the due claim does not take rows from the URL index in claim order:\n{plan}"
    );
    assert_ordering_gate_inlined(&plan);
}

#[tokio::test]
async fn due_claim_walks_the_url_index_even_when_planned_generically() {
    assert_due_claim_walks_the_url_index(Statistics::Fresh).await;
}

#[tokio::test]
async fn due_claim_walks_the_url_index_when_statistics_predate_the_backlog() {
    assert_due_claim_walks_the_url_index(Statistics::FromBeforeTheBacklog).await;
}

#[tokio::test]
async fn due_claim_planned_on_an_empty_database_still_walks_the_url_index() {
    assert_due_claim_walks_the_url_index(Statistics::PlannedWhenEmpty).await;
}

/// A route statement as these tests run it (as the relay runs it first, without its
/// `ON CONFLICT`): its parameter types, arguments, and whether it runs the ordering
/// check.
struct Route {
    statement: &'static std::sync::LazyLock<String>,
    types: &'static str,
    args: &'static str,
    ordered: bool,
}

static FULL_ROUTE: Route = Route {
    statement: &relay_daemon::claim::ROUTE_AND_CLAIM_FIRST,
    types: "text[], text[], int4[], bool[], text[], int4[], int8, int4, int8, int4[], float8, \
            text[], text[], int4",
    args: "'{lead_created}', '{http://127.0.0.1:9/hook}', '{0}', '{t}', '{}', '{}', 128, 64, \
           128, '{3}', 30, '{NULL}', '{NULL}', 7",
    ordered: true,
};
static LEAN_ROUTE: Route = Route {
    statement: &relay_daemon::claim::ROUTE_ALL_CLAIMED_FIRST,
    types: "text[], text[], int4[], int4[], int8, float8, int4",
    args: "'{lead_created}', '{http://127.0.0.1:9/hook}', '{0}', '{3}', 128, 30, 7",
    ordered: false,
};
static ORDERED_ROUTE: Route = Route {
    statement: &relay_daemon::claim::ROUTE_ORDERED_WITH_ROOM_FIRST,
    types: "text[], text[], int4[], int4[], text[], text[], int8, float8, int4",
    args: "'{lead_created}', '{http://127.0.0.1:9/hook}', '{0}', '{3}', '{skip}', '{NULL}', 128, \
           30, 7",
    ordered: true,
};

/// The generic plan of `route` over a one-type outbox backlog (statistics taken at
/// `statistics`), held to taking the oldest events from the outbox's key (never
/// reading it whole), with the ordering check inlined where it has one.
async fn assert_route_takes_the_oldest_events(statistics: Statistics, route: &Route) {
    let plan = plan(
        OUTBOX_BACKLOG,
        "webhook_events",
        statistics,
        route.statement.as_str(),
        route.types,
        route.args,
    )
    .await;
    assert!(
        !plan.contains("Seq Scan on webhook_events") && !plan.contains("Seq Scan on webhook_queue"),
        "routing reads the whole outbox or queue:\n{plan}"
    );
    assert!(
        plan.contains("Index Scan using webhook_events_pkey on webhook_events e"),
        "routing does not take events from the outbox key in order:\n{plan}"
    );
    if route.ordered {
        assert_ordering_gate_inlined(&plan);
    }
}

#[tokio::test]
async fn route_takes_the_oldest_events_from_the_outbox_key_even_when_planned_generically() {
    assert_route_takes_the_oldest_events(Statistics::Fresh, &FULL_ROUTE).await;
}

#[tokio::test]
async fn lean_route_takes_the_oldest_events_from_the_outbox_key_even_when_planned_generically() {
    assert_route_takes_the_oldest_events(Statistics::Fresh, &LEAN_ROUTE).await;
}

#[tokio::test]
async fn ordered_route_with_room_takes_the_oldest_events_and_inlines_the_ordering_check() {
    assert_route_takes_the_oldest_events(Statistics::Fresh, &ORDERED_ROUTE).await;
}

/// The relay runs its route statements with the plan made at their first run
/// (`claim::route_and_claim`), which for a relay started on a quiet database is a plan
/// of empty tables. It must still be the plan for a backlog.
#[tokio::test]
async fn route_plans_made_on_an_empty_database_still_take_a_backlog_by_the_outbox_key() {
    for route in [&FULL_ROUTE, &LEAN_ROUTE, &ORDERED_ROUTE] {
        assert_route_takes_the_oldest_events(Statistics::PlannedWhenEmpty, route).await;
    }
}

async fn assert_idle_check_finds_the_next_due_row_by_index(statistics: Statistics) {
    let plan = plan(
        DELIVERED_DAY,
        "webhook_queue",
        statistics,
        relay_daemon::wakeup::WORK_WAITING,
        "text[], bool, text[], text[]",
        "'{lead_created}', true, '{}', '{}'",
    )
    .await;
    assert!(
        !plan.contains("Seq Scan on webhook_queue"),
        "the idle check reads the whole queue:\n{plan}"
    );
    assert!(
        !plan.contains("Aggregate"),
        "the idle check reads every pending row for the earliest:\n{plan}"
    );
    assert!(
        plan.contains("webhook_queue_next_due_idx"),
        "the idle check does not read pending rows in due order:\n{plan}"
    );
    assert_ordering_gate_inlined(&plan);
}

#[tokio::test]
async fn idle_check_finds_the_next_due_row_by_index_even_when_planned_generically() {
    assert_idle_check_finds_the_next_due_row_by_index(Statistics::Fresh).await;
}

/// A relay started on a new install plans its idle check while the queue is empty,
/// and keeps that plan while the queue fills with delivered rows until an ANALYZE:
/// read whole, that queue cost each idle check more than routing the event did.
#[tokio::test]
async fn idle_check_planned_on_an_empty_database_still_finds_the_next_due_row_by_index() {
    assert_idle_check_finds_the_next_due_row_by_index(Statistics::PlannedWhenEmpty).await;
}

/// `statement` (one of those that finish a claimed row) planned generically over a
/// queue filled by `fill`, with statistics taken at `statistics`: held to finding its
/// rows by primary key, never by reading the whole queue or every row the lease index
/// lists.
async fn assert_updates_claimed_rows_by_key(
    fill: &str,
    statistics: Statistics,
    statement: &str,
    types: &str,
    args: &str,
) {
    let plan = plan(fill, "webhook_queue", statistics, statement, types, args).await;
    assert!(
        !plan.contains("Seq Scan on webhook_queue") && !plan.contains("webhook_queue_lease_idx"),
        "finishing claimed rows reads more of the queue than those rows:\n{plan}"
    );
    assert!(
        plan.contains("Index Scan using webhook_queue_pkey on webhook_queue q"),
        "finishing claimed rows does not find them by key:\n{plan}"
    );
}

const RECORD_TYPES: &str = "int8[], int8[], text[], int4[], float8[], text[], int4[], int4[], \
                            int4[], text[], text[], text[], text[]";
const RECORD_ARGS: &str = "'{1}', '{1}', '{sent}', '{0}', '{0}', '{NULL}', '{200}', '{1}', '{3}', \
                           '{NULL}', '{lead_created}', '{http://127.0.0.1:9/hook}', '{NULL}'";

#[tokio::test]
async fn outcomes_update_their_rows_by_key_even_when_planned_generically() {
    assert_updates_claimed_rows_by_key(
        DELIVERED_DAY,
        Statistics::Fresh,
        relay_daemon::outcome::RECORD,
        RECORD_TYPES,
        RECORD_ARGS,
    )
    .await;
}

#[tokio::test]
async fn outcomes_update_their_rows_by_key_when_statistics_predate_the_drain() {
    assert_updates_claimed_rows_by_key(
        SENDING_BACKLOG,
        Statistics::FromBeforeTheBacklog,
        relay_daemon::outcome::RECORD,
        RECORD_TYPES,
        RECORD_ARGS,
    )
    .await;
}

#[tokio::test]
async fn rows_given_back_at_shutdown_are_found_by_key_when_statistics_predate_the_drain() {
    assert_updates_claimed_rows_by_key(
        SENDING_BACKLOG,
        Statistics::FromBeforeTheBacklog,
        relay_daemon::claim::RELEASE,
        "int8[], int8[], float8[]",
        "'{1}', '{1}', '{0}'",
    )
    .await;
}

/// Postgres would plan every route statement anew at every run (planning took 40-85 %
/// as long as running it); the relay runs them with the plan made at their first run,
/// which the tests above hold to the outbox's key.
#[tokio::test]
async fn route_statements_are_planned_once_not_at_every_run() {
    const RUNS: i64 = 8;
    let db = TestDb::migrated().await;
    let client = db.client().await;
    client
        .execute(OUTBOX_BACKLOG, &[&(RUNS * 4)])
        .await
        .expect("fill the outbox");
    let statement = client
        .prepare(relay_daemon::claim::ROUTE_ALL_CLAIMED_FIRST.as_str())
        .await
        .expect("prepare");
    let events: Vec<String> = vec!["lead_created".into()];
    let urls: Vec<String> = vec!["http://127.0.0.1:9/hook".into()];
    let (priorities, max_retries): (Vec<i32>, Vec<i32>) = (vec![0], vec![3]);
    let (batch, lease, marker) = (4_i64, 30.0_f64, 7_i32);
    for _ in 0..RUNS {
        relay_daemon::claim::query_planned_once(
            &client,
            &statement,
            &[
                &events,
                &urls,
                &priorities,
                &max_retries,
                &batch,
                &lease,
                &marker,
            ],
        )
        .await
        .expect("route");
    }
    assert_eq!(
        db.count("SELECT count(*) FROM webhook_events").await,
        0,
        "every event routed"
    );
    let plans = client
        .query_one(
            "SELECT generic_plans, custom_plans FROM pg_prepared_statements
             WHERE statement = $1",
            &[&relay_daemon::claim::ROUTE_ALL_CLAIMED_FIRST.as_str()],
        )
        .await
        .expect("the statement's plans");
    let (generic, custom): (i64, i64) = (plans.get(0), plans.get(1));
    assert_eq!(
        (generic, custom),
        (RUNS, 0),
        "the route statement was planned at every run"
    );
    client
        .batch_execute("SELECT 1")
        .await
        .expect("the connection is out of the route's transaction");
    let in_transaction: String = client
        .query_one("SELECT current_setting('plan_cache_mode')", &[])
        .await
        .expect("setting")
        .get(0);
    assert_eq!(
        in_transaction, "auto",
        "the generic plans are the route's alone"
    );
}

/// The liveness check (every 500 ms) reads the `sending` rows by the lease index even
/// when the statistics were taken while every row was `sending` (a drain just begun):
/// never the whole queue, delivered history included.
#[tokio::test]
async fn liveness_check_reads_the_sending_rows_by_index_whatever_the_statistics() {
    let plan = generic_plan(
        SENDING_BACKLOG,
        "webhook_queue",
        relay_daemon::liveness::ABSENT_MARKERS,
        "int4",
        "7",
    )
    .await;
    assert!(
        !plan.contains("Seq Scan on webhook_queue"),
        "the liveness check reads the whole queue:\n{plan}"
    );
    assert!(
        plan.contains("Index Scan using webhook_queue_lease_idx")
            || plan.contains("Index Only Scan using webhook_queue_lease_idx"),
        "the liveness check does not walk the lease index (a bitmap scan would visit the \
         dead entries of delivered rows at every check):\n{plan}"
    );
}
