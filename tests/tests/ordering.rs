//! Per-entity ordering (`ordering = "entity"`): one entity's deliveries to one URL go
//! out one at a time in commit order, with several relays, a slow sink and failed
//! attempts; `on_failure` decides what a final failure means for the later ones.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use relay_tests::{wait_until, RelayBuilder, Reply, Sink, SinkRequest, TestDb};

const WAIT: Duration = Duration::from_secs(60);
/// How long the sink takes to answer every request.
const SLOW: Duration = Duration::from_millis(15);

/// `(entity_id, seq)` of a request made by [`emit`].
fn entity_seq(req: &SinkRequest) -> (i64, i64) {
    let body = req.json();
    (
        body["entity_id"].as_i64().expect("entity_id"),
        body["data"]["seq"].as_i64().expect("seq"),
    )
}

/// One transaction: change number `seq` of each entity in `entities`.
async fn emit(db: &TestDb, entities: std::ops::RangeInclusive<i64>, seq: i64) {
    db.client()
        .await
        .execute(
            "SELECT webhook_emit('lead_qualified', 'lead', e, jsonb_build_object('seq', $3::int8))
             FROM generate_series($1::int8, $2::int8) e",
            &[entities.start(), entities.end(), &seq],
        )
        .await
        .expect("webhook_emit");
}

fn ordered_relay(db: &TestDb, sink: &Sink) -> RelayBuilder {
    RelayBuilder::new(&db.url, &sink.url())
        .env("RELAY_ROUTES__LEAD_QUALIFIED__ORDERING", "entity")
        .env("WEBHOOK_QUEUE_BATCH_SIZE", "10")
}

/// Each entity's requests in arrival order, as (seq, answered 2xx, arrived, answer due).
type Timeline = Vec<(i64, bool, std::time::Instant)>;

fn timelines(sink: &Sink, succeeded: impl Fn(&SinkRequest) -> bool) -> BTreeMap<i64, Timeline> {
    let mut by_entity: BTreeMap<i64, Timeline> = BTreeMap::new();
    let mut requests = sink.requests();
    requests.sort_by_key(|r| r.received_at);
    for r in &requests {
        let (entity, seq) = entity_seq(r);
        by_entity
            .entry(entity)
            .or_default()
            .push((seq, succeeded(r), r.received_at));
    }
    by_entity
}

/// One at a time and in order: every request of an entity arrives after the previous
/// one was answered, repeats the previous change until that change succeeded, and
/// moves on only to the next change (past a failed one only if it is in `skipped`).
fn assert_one_at_a_time_in_order(entity: i64, timeline: &Timeline, skipped: &[i64]) {
    for pair in timeline.windows(2) {
        let ((prev_seq, prev_ok, prev_at), (seq, _, at)) = (pair[0], pair[1]);
        assert!(
            at >= prev_at + SLOW,
            "entity {entity}: seq {seq} arrived while seq {prev_seq} was still in flight"
        );
        if seq != prev_seq {
            assert!(
                seq == prev_seq + 1 && (prev_ok || skipped.contains(&prev_seq)),
                "entity {entity}: seq {seq} after seq {prev_seq} (answered ok: {prev_ok})"
            );
        }
    }
}

/// Waits for the 1000 changes of 50 entities × 20 to be `sent`, then checks each
/// entity's arrivals: one at a time, in order, first successes 1..20 (`fails` tells
/// which requests were answered with a failure).
async fn assert_fifty_times_twenty_in_order(
    db: &TestDb,
    sink: &Sink,
    fails: impl Fn(&SinkRequest) -> bool,
) {
    wait_until("all 1000 changes delivered", WAIT, || async {
        (sink.distinct_ids().len() >= 1000
            && db
                .count("SELECT count(*) FROM webhook_queue WHERE status <> 'sent'")
                .await
                == 0)
            .then_some(())
    })
    .await;
    let timelines = timelines(sink, fails_not(fails));
    assert_eq!(timelines.len(), 50);
    for (entity, timeline) in &timelines {
        assert_one_at_a_time_in_order(*entity, timeline, &[]);
        let firsts: Vec<i64> = timeline.iter().filter(|t| t.1).map(|t| t.0).collect();
        assert_eq!(firsts, (1..=20).collect::<Vec<_>>(), "entity {entity}");
    }
}

fn fails_not(fails: impl Fn(&SinkRequest) -> bool) -> impl Fn(&SinkRequest) -> bool {
    move |r| !fails(r)
}

#[tokio::test]
async fn fifty_entities_times_twenty_changes_arrive_in_order_with_three_relays_and_failing_first_attempts(
) {
    let db = TestDb::migrated().await;
    // Slow, and the first attempt of every fifth change fails.
    let fails = |r: &SinkRequest| r.nth_for_id == 1 && entity_seq(r).1 % 5 == 3;
    let sink = Sink::with(move |r| {
        if fails(r) {
            Reply::status(503).after(SLOW)
        } else {
            Reply::ok().after(SLOW)
        }
    })
    .await;
    let relays: Vec<_> = (0..3).map(|_| ordered_relay(&db, &sink).spawn()).collect();
    // Changes keep arriving while the relays deliver.
    for seq in 1..=20 {
        emit(&db, 1..=50, seq).await;
    }
    assert_fifty_times_twenty_in_order(&db, &sink, fails).await;
    assert!(
        sink.requests().iter().any(fails),
        "some first attempts failed"
    );
    drop(relays);
}

/// Entity 1's change 2 always fails; entity 2 is healthy. Returns the db, the sink and
/// the relay, with every change emitted.
async fn entity_one_change_two_fails(on_failure: &str) -> (TestDb, Sink, relay_tests::Relay) {
    let db = TestDb::migrated().await;
    let sink = Sink::with(|r| {
        if entity_seq(r) == (1, 2) {
            Reply::status(500).after(SLOW)
        } else {
            Reply::ok().after(SLOW)
        }
    })
    .await;
    let relay = ordered_relay(&db, &sink)
        .env("RELAY_ROUTES__LEAD_QUALIFIED__ON_FAILURE", on_failure)
        .env("WEBHOOK_MAX_RETRIES", "1")
        .spawn();
    for seq in 1..=4 {
        emit(&db, 1..=2, seq).await;
    }
    (db, sink, relay)
}

async fn failed_row(db: &TestDb) -> (i64, String) {
    wait_until("entity 1's change 2 has failed for good", WAIT, || async {
        let row = db
            .client()
            .await
            .query_opt(
                "SELECT q.id, h.note FROM webhook_queue q
                 JOIN webhook_retry_history h ON h.webhook_queue_id = q.id
                 WHERE q.status = 'failed' AND h.note LIKE 'failed after%'",
                &[],
            )
            .await
            .expect("query");
        row.map(|r| (r.get(0), r.get(1)))
    })
    .await
}

#[tokio::test]
async fn on_failure_skip_delivers_the_later_changes_after_the_failed_one_and_says_so() {
    let (db, sink, _relay) = entity_one_change_two_fails("skip").await;
    let (_, note) = failed_row(&db).await;
    assert!(
        note.contains("on_failure = skip")
            && note.contains("retried by hand, it arrives after them"),
        "{note}"
    );
    wait_until("every other change delivered", WAIT, || async {
        (db.count("SELECT count(*) FROM webhook_queue WHERE status = 'sent'")
            .await
            == 7)
            .then_some(())
    })
    .await;
    let timelines = timelines(&sink, |r| entity_seq(r) != (1, 2));
    assert_one_at_a_time_in_order(1, &timelines[&1], &[2]);
    let seqs: Vec<i64> = timelines[&1].iter().map(|t| t.0).collect();
    assert_eq!(
        seqs,
        vec![1, 2, 2, 3, 4],
        "change 2 tried twice, then 3 and 4"
    );
    assert_one_at_a_time_in_order(2, &timelines[&2], &[]);
}

#[tokio::test]
async fn on_failure_block_holds_the_entity_until_an_operator_retries_and_never_other_entities() {
    let (db, sink, relay) = entity_one_change_two_fails("block").await;
    let (failed_id, note) = failed_row(&db).await;
    assert!(note.contains("on_failure = block"), "{note}");
    assert!(
        note.contains(&format!("queue retry|cancel {failed_id}")),
        "{note}"
    );
    wait_until("entity 2 delivered completely", WAIT, || async {
        let seqs: Vec<i64> = sink
            .requests()
            .iter()
            .map(entity_seq)
            .filter(|(e, _)| *e == 2)
            .map(|(_, s)| s)
            .collect();
        (seqs == vec![1, 2, 3, 4]).then_some(())
    })
    .await;
    // Held: entity 1's later changes stay pending while change 2 is failed. The relay
    // is idle and due rows would otherwise have gone at the next pass.
    let pending = "SELECT count(*) FROM webhook_queue WHERE status = 'pending' AND entity_id = 1";
    assert_eq!(db.count(pending).await, 2);
    assert!(sink
        .requests()
        .iter()
        .all(|r| entity_seq(r) <= (1, 2) || entity_seq(r).0 == 2));

    // An operator who starts from a held row is pointed at the failed one.
    let held: i64 = db
        .count("SELECT min(id) FROM webhook_queue WHERE status = 'pending' AND entity_id = 1")
        .await;
    let show = relay
        .builder
        .clone()
        .args(["queue", "show", &held.to_string()])
        .output()
        .await;
    let shown = String::from_utf8_lossy(&show.stdout);
    assert!(
        shown
            .lines()
            .any(|l| l.starts_with("waits for") && l.contains(&format!("row {failed_id} (")))
            && shown.contains(&format!("queue retry {failed_id}")),
        "{shown}"
    );
    let show = relay
        .builder
        .clone()
        .args(["queue", "show", &held.to_string(), "--json"])
        .output()
        .await;
    let shown: serde_json::Value = serde_json::from_slice(&show.stdout).expect("show --json");
    assert_eq!(shown["ordering"]["waits_for"]["id"], failed_id, "{shown}");
    assert!(
        shown["ordering"]["waits_for"]["url"]
            .as_str()
            .is_some_and(|u| u.starts_with("http")),
        "{shown}"
    );
    assert_eq!(
        shown["id"], held,
        "the row's own fields stay at the top: {shown}"
    );

    // The operator fixes n8n and retries the failed row: 2, then 3 and 4, in order.
    sink.set_behaviour(|_| Reply::ok().after(SLOW));
    let out = relay
        .builder
        .clone()
        .args(["queue", "retry", &failed_id.to_string()])
        .output()
        .await;
    assert!(out.status.success(), "{out:?}");
    wait_until("entity 1 delivered after the retry", WAIT, || async {
        (db.count("SELECT count(*) FROM webhook_queue WHERE status = 'sent'")
            .await
            == 8)
            .then_some(())
    })
    .await;
    let timelines = timelines(&sink, |r| r.nth_for_id > 2 || entity_seq(r) != (1, 2));
    assert_one_at_a_time_in_order(1, &timelines[&1], &[]);
    let seqs: Vec<i64> = timelines[&1].iter().map(|t| t.0).collect();
    assert_eq!(seqs, vec![1, 2, 2, 2, 3, 4]);
}

// ---- Lifecycle ordering (`ordering = "lifecycle"`): one entity's events in commit
// ---- order across every route ordered so, whatever their URLs.

/// The URL path a request came to (each event type has its own by default).
fn path_event(req: &SinkRequest) -> String {
    req.json()["event"].as_str().expect("event").to_string()
}

#[tokio::test]
async fn a_leads_lifecycle_reaches_its_workflows_in_order_when_its_first_delivery_fails() {
    let db = TestDb::migrated().await;
    // The first attempt of every lead_scraped fails: under per-URL ordering the
    // qualification and the response overtook it.
    let sink = Sink::with(|r| {
        if r.nth_for_id == 1 && path_event(r) == "lead_scraped" {
            Reply::status(500)
        } else {
            Reply::ok()
        }
    })
    .await;
    let _relay = RelayBuilder::new(&db.url, &sink.url())
        .env("RELAY_QUEUE__ORDERING", "lifecycle")
        .spawn();
    let client = db.client().await;
    for _ in 0..30 {
        let id: i64 = client
            .query_one(
                "INSERT INTO leads (business_name) VALUES ('Acme') RETURNING id",
                &[],
            )
            .await
            .expect("insert lead")
            .get(0);
        for status in ["qualified", "responded"] {
            client
                .execute(
                    "UPDATE leads SET status = $1 WHERE id = $2",
                    &[&status, &id],
                )
                .await
                .expect("update lead");
        }
    }
    db.wait_for_queue_status("sent", 90, WAIT).await;

    let mut by_lead: BTreeMap<i64, Vec<(String, bool)>> = BTreeMap::new();
    let mut requests = sink.requests();
    requests.sort_by_key(|r| r.received_at);
    for r in &requests {
        let ok = !(r.nth_for_id == 1 && path_event(r) == "lead_scraped");
        by_lead
            .entry(r.json()["entity_id"].as_i64().expect("entity_id"))
            .or_default()
            .push((path_event(r), ok));
    }
    assert_eq!(by_lead.len(), 30);
    for (lead, seen) in &by_lead {
        let expected = [
            ("lead_scraped", false),
            ("lead_scraped", true),
            ("lead_qualified", true),
            ("lead_responded", true),
        ];
        let seen: Vec<(&str, bool)> = seen.iter().map(|(e, ok)| (e.as_str(), *ok)).collect();
        assert_eq!(
            seen, expected,
            "lead {lead}: its workflows saw it out of order"
        );
    }
    // They went to three different workflows.
    let paths: BTreeSet<String> = requests.iter().map(|r| r.path.clone()).collect();
    assert_eq!(paths.len(), 3, "{paths:?}");
}

#[tokio::test]
async fn fifty_entities_times_twenty_changes_over_four_workflows_stay_in_order_with_two_relays() {
    const EVENTS: [&str; 4] = [
        "lead_scraped",
        "lead_qualified",
        "email_sent",
        "lead_responded",
    ];
    let db = TestDb::migrated().await;
    // Slow, and about 30 % of first attempts fail.
    let fails = |r: &SinkRequest| {
        let (entity, seq) = entity_seq(r);
        r.nth_for_id == 1 && (entity * 7 + seq * 13) % 10 < 3
    };
    let sink = Sink::with(move |r| {
        if fails(r) {
            Reply::status(503).after(SLOW)
        } else {
            Reply::ok().after(SLOW)
        }
    })
    .await;
    let builder = RelayBuilder::new(&db.url, &sink.url())
        .env("RELAY_QUEUE__ORDERING", "lifecycle")
        .env("WEBHOOK_QUEUE_BATCH_SIZE", "10");
    let relays: Vec<_> = (0..2).map(|_| builder.spawn()).collect();
    let client = db.client().await;
    for seq in 1..=20i64 {
        // Change `seq` of every entity goes to the workflow of its event type.
        let event = EVENTS[(seq % 4) as usize];
        client
            .execute(
                "SELECT webhook_emit($1, 'lead', e, jsonb_build_object('seq', $2::int8))
                 FROM generate_series(1, 50) e",
                &[&event, &seq],
            )
            .await
            .expect("webhook_emit");
    }
    assert_fifty_times_twenty_in_order(&db, &sink, fails).await;
    let failed_first = sink.requests().iter().filter(|r| fails(r)).count();
    assert!(
        (200..=400).contains(&failed_first),
        "{failed_first} first attempts failed, not about 30 %"
    );
    let paths: BTreeSet<String> = sink.requests().iter().map(|r| r.path.clone()).collect();
    assert_eq!(paths.len(), 4, "{paths:?}");
    drop(relays);
}

/// The outbox's ids started again (`TRUNCATE ... RESTART IDENTITY`) while the queue
/// holds delivered rows of events 1 to 600, and 50 entities × 20 changes land on ids 1
/// to 1000. Three relays start together: one renumbers the changes past the queue's ids
/// while no route runs, and every change arrives once, one at a time and in order.
#[tokio::test]
async fn changes_on_ids_the_queue_holds_arrive_in_order_with_three_relays_after_the_ids_started_again(
) {
    let db = TestDb::migrated().await;
    let sink = Sink::with(|_| Reply::ok().after(SLOW)).await;
    let client = db.client().await;
    client
        .execute(
            "INSERT INTO webhook_queue (event_id, event_type, entity_type, entity_id,
                                        webhook_url, status, sent_at, occurred_at)
             SELECT i, 'lead_qualified', 'lead', 1000 + i, $1, 'sent', now(), '2026-01-01'
             FROM generate_series(1, 600) i",
            &[&format!("{}/webhook/lead-qualified", sink.url())],
        )
        .await
        .expect("rows of events delivered before the ids started again");
    client
        .batch_execute("TRUNCATE webhook_events RESTART IDENTITY")
        .await
        .expect("the outbox's ids start again");
    for seq in 1..=20 {
        emit(&db, 1..=50, seq).await;
    }
    let relays: Vec<_> = (0..3).map(|_| ordered_relay(&db, &sink).spawn()).collect();
    assert_fifty_times_twenty_in_order(&db, &sink, |_| false).await;
    assert!(
        db.count("SELECT min(event_id) FROM webhook_queue WHERE entity_id <= 50")
            .await
            > 1000,
        "every change was renumbered, past the queue's ids and the outbox's"
    );
    drop(relays);
}
