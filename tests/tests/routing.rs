//! What one route statement does with a batch of events it cannot claim whole. Rows
//! inserted `pending` are claimed later with a second write each, so an event that only
//! lacks room at its endpoint for now stays in the outbox instead; but the outbox must
//! always move on, so events of a full endpoint, of an entity waiting behind its previous
//! event, or of a disabled route are still queued `pending`.

use std::time::Duration;

use relay_tests::{wait_until, RelayBuilder, Sink, TestDb};
use tokio_postgres::Client;

const A: &str = "http://127.0.0.1:9/a";
const B: &str = "http://127.0.0.1:9/b";
/// Rows one URL may hold (the relay's `queue.max_per_endpoint` × its claim-ahead).
const CAP: i32 = 4;
/// How long the relay may take to deliver.
const T: Duration = Duration::from_secs(15);

/// One route: event type, URL, whether its rows may be claimed now, ordering, scope.
struct Route(
    &'static str,
    &'static str,
    bool,
    Option<&'static str>,
    Option<&'static str>,
);

/// What the route statement returned.
#[derive(Debug)]
struct Routed {
    routed: i64,
    claimed: usize,
    picked: i64,
    left_for: Vec<String>,
}

/// Runs the relay's route statement over the first `events` events, with `held` rows
/// already held per URL and `free` slots.
async fn route(
    client: &Client,
    routes: &[Route],
    held: &[(&str, i32)],
    events: i64,
    free: i64,
) -> Routed {
    let types: Vec<&str> = routes.iter().map(|r| r.0).collect();
    let urls: Vec<&str> = routes.iter().map(|r| r.1).collect();
    let priorities: Vec<i32> = routes.iter().map(|_| 0).collect();
    let claimable: Vec<bool> = routes.iter().map(|r| r.2).collect();
    let ordering: Vec<Option<&str>> = routes.iter().map(|r| r.3).collect();
    let scopes: Vec<Option<&str>> = routes.iter().map(|r| r.4).collect();
    let max_retries: Vec<i32> = routes.iter().map(|_| 3).collect();
    let held_urls: Vec<&str> = held.iter().map(|h| h.0).collect();
    let held_rows: Vec<i32> = held.iter().map(|h| h.1).collect();
    let rows = client
        .query(
            relay_daemon::claim::ROUTE_AND_CLAIM_FIRST.as_str(),
            &[
                &types,
                &urls,
                &priorities,
                &claimable,
                &held_urls,
                &held_rows,
                &events,
                &CAP,
                &free,
                &max_retries,
                &30f64,
                &ordering,
                &scopes,
                &7i32,
            ],
        )
        .await
        .expect("route statement");
    Routed {
        routed: rows[0].get(0),
        claimed: rows
            .iter()
            .filter(|r| r.get::<_, Option<i64>>(2).is_some())
            .count(),
        picked: rows[0].get("picked"),
        left_for: rows[0].get("left_for"),
    }
}

/// Queues `n` events of `event_type`, one entity each (`entity` for all, if given).
async fn emit(client: &Client, event_type: &str, n: i64, entity: Option<i64>) {
    client
        .execute(
            "INSERT INTO webhook_events (event_type, entity_type, entity_id, payload)
             SELECT $1, 'lead', coalesce($3, g), '{}' FROM generate_series(1, $2::int8) g",
            &[&event_type, &n, &entity],
        )
        .await
        .expect("emit");
}

/// Queue rows per status for `url`, and events still in the outbox.
async fn state(client: &Client, url: &str) -> (i64, i64, i64) {
    let row = client
        .query_one(
            "SELECT count(*) FILTER (WHERE status = 'sending'),
                    count(*) FILTER (WHERE status = 'pending'),
                    (SELECT count(*) FROM webhook_events)
             FROM webhook_queue WHERE webhook_url = $1",
            &[&url],
        )
        .await
        .expect("state");
    (row.get(0), row.get(1), row.get(2))
}

#[tokio::test]
async fn events_an_endpoint_with_room_cannot_take_yet_stay_in_the_outbox() {
    let db = TestDb::migrated().await;
    let client = db.client().await;
    emit(&client, "lead_created", 10, None).await;
    let routes = [Route("lead_created", A, true, None, None)];

    let first = route(&client, &routes, &[], 10, 10).await;
    assert_eq!(
        (first.routed, first.claimed, first.picked),
        (CAP as i64, CAP as usize, 10),
        "{first:?}"
    );
    assert_eq!(first.left_for, vec![A.to_string()]);
    assert_eq!(
        state(&client, A).await,
        (CAP as i64, 0, 6),
        "(sending, pending, outbox): the six that did not fit stayed in the outbox"
    );

    // Room again: the next pass takes them, still in event order, still one write each.
    let second = route(&client, &routes, &[(A, 1)], 10, 10).await;
    assert_eq!((second.routed, second.claimed), (3, 3), "{second:?}");
    let claimed: Vec<i64> = client
        .query("SELECT event_id FROM webhook_queue ORDER BY event_id", &[])
        .await
        .expect("claimed")
        .iter()
        .map(|r| r.get(0))
        .collect();
    let first_ids: i64 = client
        .query_one("SELECT min(id) FROM webhook_events", &[])
        .await
        .expect("outbox")
        .get(0);
    assert!(
        claimed.iter().all(|id| *id < first_ids),
        "an event was claimed before an older one: {claimed:?}, outbox from {first_ids}"
    );
    assert_eq!(state(&client, A).await, (7, 0, 3));
}

/// A fast endpoint may hold more than the one cap the statement is given: the relay
/// counts it as holding that much less, below zero while it holds little
/// (`crates/relay-daemon/src/pace.rs`). The statement must take that room.
#[tokio::test]
async fn an_endpoint_counted_below_zero_takes_more_than_the_cap() {
    let db = TestDb::migrated().await;
    let client = db.client().await;
    emit(&client, "lead_created", 10, None).await;
    let routes = [Route("lead_created", A, true, None, None)];

    let routed = route(&client, &routes, &[(A, -CAP)], 10, 10).await;
    assert_eq!(
        (routed.routed, routed.claimed),
        (2 * CAP as i64, 2 * CAP as usize),
        "{routed:?}"
    );
    assert_eq!(state(&client, A).await, (2 * CAP as i64, 0, 2));
}

#[tokio::test]
async fn a_full_endpoints_events_are_queued_pending_so_the_outbox_moves_on() {
    let db = TestDb::migrated().await;
    let client = db.client().await;
    emit(&client, "lead_created", 10, None).await;
    emit(&client, "lead_scraped", 3, None).await;
    let routes = [
        Route("lead_created", A, true, None, None),
        Route("lead_scraped", B, true, None, None),
    ];

    // A is at its cap (a slow or dead endpoint): its events go to the queue, pending.
    let first = route(&client, &routes, &[(A, CAP)], 10, 10).await;
    assert_eq!((first.routed, first.claimed), (10, 0), "{first:?}");
    assert!(first.left_for.is_empty(), "{first:?}");
    assert_eq!(state(&client, A).await, (0, 10, 3));

    // So the next pass reaches B's events behind them.
    let second = route(&client, &routes, &[(A, CAP)], 10, 10).await;
    assert_eq!((second.routed, second.claimed), (3, 3), "{second:?}");
    assert_eq!(state(&client, B).await, (3, 0, 0));
}

#[tokio::test]
async fn an_event_waiting_behind_its_entitys_previous_one_is_queued_pending() {
    let db = TestDb::migrated().await;
    let client = db.client().await;
    // Two changes of one lead, ordered: the second may only go once the first is done.
    emit(&client, "lead_qualified", 2, Some(7)).await;
    let routes = [Route("lead_qualified", A, true, Some("block"), None)];

    let routed = route(&client, &routes, &[], 10, 10).await;
    assert_eq!((routed.routed, routed.claimed), (2, 1), "{routed:?}");
    assert!(routed.left_for.is_empty(), "{routed:?}");
    assert_eq!(
        state(&client, A).await,
        (1, 1, 0),
        "(sending, pending, outbox): the second change waits in the queue"
    );
}

#[tokio::test]
async fn a_disabled_routes_events_are_queued_pending() {
    let db = TestDb::migrated().await;
    let client = db.client().await;
    emit(&client, "demo_failed", 5, None).await;
    let routes = [Route("demo_failed", A, false, None, None)];

    let routed = route(&client, &routes, &[], 10, 10).await;
    assert_eq!((routed.routed, routed.claimed), (5, 0), "{routed:?}");
    assert!(routed.left_for.is_empty(), "{routed:?}");
    assert_eq!(state(&client, A).await, (0, 5, 0));
}

#[tokio::test]
async fn of_one_entity_in_one_batch_only_the_first_lifecycle_event_is_claimed_whatever_its_url() {
    let db = TestDb::migrated().await;
    let client = db.client().await;
    // Lead 7 is scraped, then qualified: two routes, two URLs, one lifecycle.
    emit(&client, "lead_scraped", 1, Some(7)).await;
    emit(&client, "lead_qualified", 1, Some(7)).await;
    emit(&client, "lead_qualified", 1, Some(8)).await;
    let routes = [
        Route("lead_scraped", A, true, Some("skip"), Some("lifecycle")),
        Route("lead_qualified", B, true, Some("skip"), Some("lifecycle")),
    ];

    let routed = route(&client, &routes, &[], 10, 10).await;
    assert_eq!((routed.routed, routed.claimed), (3, 2), "{routed:?}");
    assert_eq!(
        state(&client, A).await,
        (1, 0, 0),
        "lead 7 scraped goes now"
    );
    assert_eq!(
        state(&client, B).await,
        (1, 1, 0),
        "(sending, pending, outbox): lead 8 goes, lead 7's qualification waits for its scrape"
    );
    let waiting: i64 = client
        .query_one(
            "SELECT entity_id FROM webhook_queue WHERE status = 'pending'",
            &[],
        )
        .await
        .expect("pending row")
        .get(0);
    assert_eq!(waiting, 7);
}

/// The relay queues rows with a plain INSERT first (`relay_daemon::claim::ROUTE_*_FIRST`)
/// and falls back to the statement's `ON CONFLICT DO NOTHING` only when an event was
/// queued before. Such an event (put back into the outbox after it was routed, by a
/// restore say) is neither queued nor sent again, and the events routed with it still go
/// out.
#[tokio::test]
async fn an_event_queued_before_is_not_queued_twice_and_its_batch_still_goes_out() {
    let db = TestDb::migrated().await;
    let sink = Sink::start().await;
    let client = db.client().await;
    delivered_before(&client, &sink, 1).await;
    client
        .batch_execute(
            "INSERT INTO webhook_events (id, event_type, entity_type, entity_id, payload,
                                         occurred_at)
             OVERRIDING SYSTEM VALUE
             VALUES (1, 'lead_scraped', 'lead', 1, '{}', '2026-01-01'),
                    (2, 'lead_scraped', 'lead', 2, '{}', now())",
        )
        .await
        .expect("the outbox: event 1 again (its id and time), and a new one");

    let relay = RelayBuilder::new(&db.url, &sink.url()).spawn();
    db.wait_for_queue_status("sent", 2, T).await;
    let got = sink.wait_for(1, T).await;
    assert_eq!(got.len(), 1, "only the new event is sent");
    assert_eq!(got[0].json()["entity_id"], 2);
    assert_eq!(db.count("SELECT count(*) FROM webhook_events").await, 0);
    assert_eq!(
        db.count("SELECT count(*) FROM webhook_queue WHERE event_id = 1")
            .await,
        1,
        "event 1 keeps its one row"
    );
    assert_eq!(
        db.count("SELECT count(*) FROM webhook_queue").await,
        2,
        "event 1 is not queued again under another id"
    );
    let log = without_colours(&relay.log());
    assert!(
        log.contains("already have queue rows")
            && log.contains("(event_id, webhook_url)")
            && log.contains("renumbered=0"),
        "the fallback says why, naming the key, and renumbered nothing: {log}"
    );
}

/// The outbox's ids started again (`TRUNCATE ... RESTART IDENTITY`, a logical-replication
/// cutover) while the queue still holds delivered rows with ids 1 to 4. New events on
/// those ids are not someone else's queue rows: they get new ids past the queue's, in
/// their order, and are delivered. The outbox rows are written in descending id order,
/// so that a renumbering in the table's physical order would show.
#[tokio::test]
async fn events_on_ids_the_queue_holds_for_older_events_are_renumbered_in_order_and_delivered() {
    let db = TestDb::migrated().await;
    let sink = Sink::start().await;
    let client = db.client().await;
    delivered_before(&client, &sink, 4).await;
    client
        .batch_execute(
            "TRUNCATE webhook_events RESTART IDENTITY;
             INSERT INTO webhook_events (id, event_type, entity_type, entity_id, payload)
             OVERRIDING SYSTEM VALUE
             SELECT i, 'lead_scraped', 'lead', 7, jsonb_build_object('step', i)
             FROM generate_series(6, 1, -1) i",
        )
        .await
        .expect("six events of one entity on the restarted ids 1 to 6");

    let relay = RelayBuilder::new(&db.url, &sink.url()).spawn();
    db.wait_for_queue_status("sent", 10, T).await;
    let got = sink.wait_for(6, T).await;
    let mut steps: Vec<i64> = got
        .iter()
        .filter_map(|r| r.json()["data"]["step"].as_i64())
        .collect();
    steps.sort_unstable();
    assert_eq!(
        steps,
        vec![1, 2, 3, 4, 5, 6],
        "every new event delivered once"
    );
    let renumbered = pairs(
        &client,
        "SELECT event_id, (payload ->> 'step')::int8 FROM webhook_queue
         WHERE entity_id = 7 ORDER BY event_id",
    )
    .await;
    assert_eq!(
        renumbered.iter().map(|r| r.1).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5, 6],
        "the new ids keep the events' order: {renumbered:?}"
    );
    assert!(
        renumbered.iter().all(|r| r.0 > 4),
        "the new ids are past the queue's: {renumbered:?}"
    );
    assert_eq!(db.count("SELECT count(*) FROM webhook_events").await, 0);
    let next: i64 = client
        .query_one(
            "INSERT INTO webhook_events (event_type, entity_type, entity_id)
             VALUES ('nothing_routes_this', 'lead', 8) RETURNING id",
            &[],
        )
        .await
        .expect("a new event")
        .get(0);
    assert!(
        next > renumbered[5].0,
        "the outbox identity moved past the queue's ids: {next}"
    );
    let log = without_colours(&relay.log());
    assert!(
        log.contains("renumbered=6") && log.contains("(event_id, webhook_url)"),
        "the relay says what it did, naming the key: {log}"
    );
}

/// The log as text: its field names and values are set apart by terminal colours.
fn without_colours(log: &str) -> String {
    let mut text = String::with_capacity(log.len());
    let mut chars = log.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            chars.by_ref().find(|&d| d == 'm');
        } else {
            text.push(c);
        }
    }
    text
}

/// The two int8 columns of each row `sql` answers.
async fn pairs(client: &Client, sql: &str) -> Vec<(i64, i64)> {
    client
        .query(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// Queue rows of `lead_scraped` events 1 to `events`, delivered to `sink` before (with
/// an `occurred_at` of their own, 2026-01-01).
async fn delivered_before(client: &Client, sink: &Sink, events: i64) {
    let url = format!("{}/webhook/lead-scraped", sink.url());
    client
        .execute(
            "INSERT INTO webhook_queue (event_id, event_type, entity_type, entity_id,
                                        webhook_url, status, sent_at, occurred_at)
             SELECT i, 'lead_scraped', 'lead', 100 + i, $1, 'sent', now(), '2026-01-01'
             FROM generate_series(1, $2::int8) i",
            &[&url, &events],
        )
        .await
        .expect("rows of events delivered before");
}

/// The route statements as written (the relay's second run, after the first try met
/// the unique key), each on one outbox: event 1 put back after it was queued (its
/// queue row has its `occurred_at`), event 2 on an id the queue holds for an older
/// event, event 3 new. Event 1 leaves the outbox without a second row, event 2 stays
/// in the outbox untouched (skipped, it would be lost), event 3 is queued.
#[tokio::test]
async fn written_routes_skip_events_already_queued_and_leave_events_on_taken_ids_in_the_outbox() {
    use relay_daemon::claim::{ROUTE_ALL_CLAIMED, ROUTE_AND_CLAIM, ROUTE_ORDERED_WITH_ROOM};
    let db = TestDb::migrated().await;
    let client = db.client().await;
    let (types, urls, zero, three) = (vec!["lead_created"], vec![A], vec![0i32], vec![3i32]);
    let (claimable, ordering, scope) = (vec![true], vec![Some("skip")], vec![None::<&str>]);
    let none: Vec<&str> = Vec::new();
    let (held, events, free, lease, marker) = (Vec::<i32>::new(), 10i64, 10i64, 30f64, 7i32);
    let statements: [(&str, &str, Vec<&(dyn tokio_postgres::types::ToSql + Sync)>); 3] = [
        (
            "route_and_claim.sql",
            ROUTE_AND_CLAIM,
            vec![
                &types, &urls, &zero, &claimable, &none, &held, &events, &CAP, &free, &three,
                &lease, &ordering, &scope, &marker,
            ],
        ),
        (
            "route_all_claimed.sql",
            ROUTE_ALL_CLAIMED,
            vec![&types, &urls, &zero, &three, &events, &lease, &marker],
        ),
        (
            "route_ordered_with_room.sql",
            ROUTE_ORDERED_WITH_ROOM,
            vec![
                &types, &urls, &zero, &three, &ordering, &scope, &events, &lease, &marker,
            ],
        ),
    ];
    for (name, statement, params) in statements {
        client
            .batch_execute(&format!(
                "TRUNCATE webhook_retry_history, webhook_logs, webhook_queue, webhook_events;
                 INSERT INTO webhook_events (id, event_type, entity_type, entity_id, payload,
                                             occurred_at)
                 OVERRIDING SYSTEM VALUE
                 VALUES (1, 'lead_created', 'lead', 1, '{{}}', '2026-01-01'),
                        (2, 'lead_created', 'lead', 2, '{{}}', '2026-01-02'),
                        (3, 'lead_created', 'lead', 3, '{{}}', '2026-01-03');
                 INSERT INTO webhook_queue (event_id, event_type, entity_type, entity_id,
                                            webhook_url, status, sent_at, occurred_at)
                 VALUES (1, 'lead_created', 'lead', 1, '{A}', 'sent', now(), '2026-01-01'),
                        (2, 'lead_created', 'lead', 20, '{A}', 'sent', now(), '2025-06-01');"
            ))
            .await
            .expect("the outbox and the queue");
        client
            .query(statement, &params)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let outbox: Vec<i64> = client
            .query("SELECT id FROM webhook_events ORDER BY id", &[])
            .await
            .expect("outbox")
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(
            outbox,
            vec![2],
            "{name}: only the event on a taken id stays"
        );
        let queue = pairs(
            &client,
            "SELECT event_id, entity_id FROM webhook_queue ORDER BY event_id",
        )
        .await;
        assert_eq!(
            queue,
            vec![(1, 1), (2, 20), (3, 3)],
            "{name}: one row each, event 3's new"
        );
    }
}

/// While events are renumbered (the lock `relay_daemon`'s renumbering holds, taken
/// here by hand), a route waits: routing beside it could send an entity's later event,
/// left under its old id, before the earlier ones get their new ids. Once the lock
/// goes, the event is routed and delivered.
#[tokio::test]
async fn a_route_waits_while_events_are_renumbered() {
    let db = TestDb::migrated().await;
    let sink = Sink::start().await;
    let renumbering = db.client().await;
    renumbering
        .batch_execute("BEGIN; SELECT pg_advisory_xact_lock(1849193082, 1)")
        .await
        .expect("the renumbering's lock");
    let client = db.client().await;
    emit(&client, "lead_scraped", 1, None).await;

    let _relay = RelayBuilder::new(&db.url, &sink.url()).spawn();
    wait_until("the relay's route to wait for the lock", T, || async {
        let waiting = db
            .count(
                "SELECT count(*) FROM pg_locks
                 WHERE locktype = 'advisory' AND classid = 1849193082::oid
                   AND objid = 1::oid AND NOT granted",
            )
            .await;
        (waiting > 0).then_some(())
    })
    .await;
    assert!(sink.requests().is_empty(), "nothing routed meanwhile");
    assert_eq!(db.count("SELECT count(*) FROM webhook_events").await, 1);

    renumbering.batch_execute("COMMIT").await.expect("done");
    let got = sink.wait_for(1, T).await;
    assert_eq!(got[0].json()["event"], "lead_scraped");
}

/// A route waits for a renumbering at most its `lock_timeout`, then backs off and tries
/// again, so that a long renumbering never keeps a route the relay gave up on running
/// on the server. Once the lock goes, the event is routed and delivered.
#[tokio::test]
async fn a_route_gives_up_waiting_for_a_renumbering_at_its_lock_timeout() {
    let db = TestDb::migrated().await;
    let sink = Sink::start().await;
    let client = db.client().await;
    let relay = RelayBuilder::new(&db.url, &sink.url()).spawn();
    emit(&client, "lead_scraped", 1, None).await;
    sink.wait_for(1, T).await;

    let renumbering = db.client().await;
    renumbering
        .batch_execute("BEGIN; SELECT pg_advisory_xact_lock(1849193082, 1)")
        .await
        .expect("the renumbering's lock");
    emit(&client, "lead_scraped", 1, None).await;
    wait_until("the route to give up at its lock timeout", T, || async {
        without_colours(&relay.log())
            .contains("lock timeout")
            .then_some(())
    })
    .await;
    assert_eq!(sink.requests().len(), 1, "nothing routed meanwhile");
    assert_eq!(db.count("SELECT count(*) FROM webhook_events").await, 1);

    renumbering.batch_execute("COMMIT").await.expect("done");
    let got = sink.wait_for(2, T).await;
    assert_eq!(got.len(), 2);
}

/// The outbox's ids started again while the relay was stopped, and the queue holds
/// delivered rows of events 1 to 4. The relay moves the outbox identity past them as it
/// starts, so the events written next take ids past the queue's and need no
/// renumbering; a relay started again later finds nothing to move.
#[tokio::test]
async fn an_outbox_identity_behind_the_queue_is_moved_past_it_as_the_relay_starts() {
    let db = TestDb::migrated().await;
    let sink = Sink::start().await;
    let client = db.client().await;
    delivered_before(&client, &sink, 4).await;
    client
        .batch_execute("TRUNCATE webhook_events RESTART IDENTITY")
        .await
        .expect("the outbox's ids start again");

    let relay = RelayBuilder::new(&db.url, &sink.url()).spawn();
    wait_until("the relay to move the identity", T, || async {
        without_colours(&relay.log())
            .contains("identity_moved_to=1004")
            .then_some(())
    })
    .await;
    emit(&client, "lead_scraped", 3, None).await;
    sink.wait_for(3, T).await;
    db.wait_for_queue_status("sent", 7, T).await;
    assert_eq!(
        db.count("SELECT count(*) FROM webhook_queue WHERE event_id > 1004")
            .await,
        3,
        "the new events' ids are past the queue's"
    );
    let log = relay.log();
    assert!(
        !log.contains("already have queue rows"),
        "no event met the queue's key: {log}"
    );
    drop(relay);

    let again = RelayBuilder::new(&db.url, &sink.url())
        .env("RUST_LOG", "info,relay_daemon::outbox_ids=debug")
        .spawn();
    wait_until("the second relay to compare", T, || async {
        let log = again.log();
        (log.contains("is past the queue's event ids") || log.contains("was behind")).then_some(())
    })
    .await;
    let log = again.log();
    assert!(!log.contains("was behind"), "nothing to move: {log}");
    assert_eq!(
        db.count("SELECT last_value FROM webhook_events_id_seq")
            .await,
        1007,
        "the identity stays where it was"
    );
}
