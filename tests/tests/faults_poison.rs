//! Fault suite: poison data. Huge rows, odd text, NULLs where values were expected,
//! payloads at the edge of what JSON libraries hold, and route URLs that cannot work:
//! each becomes an event delivered intact, or a row that ends with a clear error, and
//! the queue keeps moving past it.

use std::time::Duration;

use relay_tests::{wait_until, RelayBuilder, Sink, TestDb};
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(30);

async fn emit(db: &TestDb, event: &str, entity_id: i64, data: &str) {
    db.client()
        .await
        .execute(
            "SELECT webhook_emit($1, 'lead', $2, $3::text::jsonb)",
            &[&event, &entity_id, &data],
        )
        .await
        .unwrap_or_else(|e| panic!("webhook_emit {event} {data:.80}: {e}"));
}

async fn insert_lead(db: &TestDb, name: &str) -> i64 {
    db.client()
        .await
        .query_one(
            "INSERT INTO leads (business_name) VALUES ($1) RETURNING id",
            &[&name],
        )
        .await
        .expect("insert lead")
        .get(0)
}

async fn wait_settled(db: &TestDb, rows: i64) {
    wait_until(&format!("{rows} queue rows sent or failed"), T, || async {
        let done = db
            .count("SELECT count(*) FROM webhook_queue WHERE status IN ('sent', 'failed')")
            .await;
        (done == rows).then_some(())
    })
    .await;
}

#[tokio::test]
async fn odd_text_and_nulls_arrive_byte_for_byte() {
    let db = TestDb::migrated().await;
    let sink = Sink::start().await;
    let _relay = RelayBuilder::new(&db.url, &sink.url()).spawn();
    let odd = [
        "emoji 🚀👩‍👩‍👧‍👦 and flags 🇩🇪",
        "control \u{1}\u{7}\u{8}\t\n\r\u{1b}[31m\u{1f}\u{7f} chars",
        "quotes \" ' ` and \\ backslashes \\\\ \\u0000 literally",
        "right-to-left \u{202e}txet\u{202c} and zero\u{200b}width",
        "combining e\u{301} and lone surrogate-free astral 𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
        "line\u{2028}separator and \u{feff}bom",
        "",
    ];
    let client = db.client().await;
    let mut ids = Vec::new();
    for name in odd {
        ids.push(insert_lead(&db, name).await);
    }
    // NULLs everywhere the trigger reads a value.
    let null_id: i64 = client
        .query_one(
            "INSERT INTO leads (business_name, category, location, email, score)
             VALUES (NULL, NULL, NULL, NULL, NULL) RETURNING id",
            &[],
        )
        .await
        .expect("null lead")
        .get(0);
    // NULL data and a NULL entity id through webhook_emit itself.
    client
        .execute(
            "SELECT webhook_emit('workflow_error', 'workflow', NULL, NULL)",
            &[],
        )
        .await
        .expect("emit with NULLs");

    let got = sink.wait_for(odd.len() + 2, T).await;
    for (name, id) in odd.iter().zip(&ids) {
        let req = got
            .iter()
            .find(|r| r.json()["entity_id"] == *id)
            .unwrap_or_else(|| panic!("lead {id} delivered"));
        req.verify_signature();
        assert_eq!(req.json()["data"]["business_name"], *name, "lead {id}");
    }
    let null_lead = got
        .iter()
        .find(|r| r.json()["entity_id"] == null_id)
        .expect("the all-NULL lead is delivered");
    assert_eq!(null_lead.json()["data"]["business_name"], Value::Null);
    let error = got
        .iter()
        .find(|r| r.json()["event"] == "workflow_error")
        .expect("workflow_error delivered");
    assert_eq!(error.json()["entity_id"], Value::Null);
    assert_eq!(error.json()["data"], json!({}));
    wait_settled(&db, odd.len() as i64 + 2).await;
    assert_eq!(
        db.count("SELECT count(*) FROM webhook_queue WHERE status = 'sent'")
            .await,
        odd.len() as i64 + 2
    );
}

#[tokio::test]
async fn an_8_mb_row_is_delivered_and_rows_behind_it_keep_moving() {
    let db = TestDb::migrated().await;
    let sink = Sink::start().await;
    let _relay = RelayBuilder::new(&db.url, &sink.url()).spawn();
    let huge = "ü".repeat(4 * 1024 * 1024);
    let big = insert_lead(&db, &huge).await;
    for i in 0..20 {
        insert_lead(&db, &format!("small {i}")).await;
    }
    let got = sink.wait_for(21, T).await;
    let req = got
        .iter()
        .find(|r| r.json()["entity_id"] == big)
        .expect("the huge lead is delivered");
    assert!(req.body.len() > 8 * 1024 * 1024);
    assert_eq!(req.json()["data"]["business_name"].as_str(), Some(&*huge));
    req.verify_signature();
    wait_settled(&db, 21).await;
}

/// A backlog whose route statements outlast the statement timeout (very large events:
/// a route carries every payload of its batch; here a DBA's trigger on the queue that
/// takes 0.1 s a row, which makes the same happen on any machine): the same batch was
/// tried again after every backoff, for good, and nothing behind it moved.
#[tokio::test]
async fn a_backlog_whose_route_outlasts_the_statement_timeout_is_routed_fewer_at_a_time() {
    const EVENTS: i64 = 24;
    let db = TestDb::migrated().await;
    let client = db.client().await;
    client
        .batch_execute(
            "CREATE FUNCTION slow_queue_row() RETURNS trigger LANGUAGE plpgsql AS
                 $$ BEGIN PERFORM pg_sleep(0.1); RETURN NEW; END $$;
             CREATE TRIGGER slow_queue_row BEFORE INSERT ON webhook_queue
                 FOR EACH ROW EXECUTE FUNCTION slow_queue_row();",
        )
        .await
        .expect("a slow queue");
    // Written before the relay starts: one backlog, routed 16 at a time (1.6 s).
    client
        .execute(
            "SELECT count(webhook_emit('lead_scraped', 'lead', g, '{}'))
               FROM generate_series(1, $1::int8) g",
            &[&EVENTS],
        )
        .await
        .expect("the backlog");
    let sink = Sink::start().await;
    let relay = RelayBuilder::new(&db.url, &sink.url())
        .env("RELAY_DATABASE__STATEMENT_TIMEOUT_SECONDS", 1)
        .spawn();
    let got = sink
        .wait_for(usize::try_from(EVENTS).expect("count"), T)
        .await;
    assert_eq!(sink.distinct_ids().len(), got.len(), "each once");
    assert!(
        relay.log().contains("taking fewer at a time"),
        "{}",
        relay.log()
    );
}

#[tokio::test]
async fn payloads_at_the_edge_of_json_are_delivered_exactly_and_never_block_the_queue() {
    let db = TestDb::migrated().await;
    let sink = Sink::start().await;
    let _relay = RelayBuilder::new(&db.url, &sink.url()).spawn();
    // Valid jsonb that general-purpose JSON parsers choke on or round: nesting deeper
    // than a recursion limit, a number beyond f64, one beyond 64-bit integers.
    let deep = format!("{}1{}", "[".repeat(300), "]".repeat(300));
    let edge = [
        format!("{{\"deep\": {deep}}}"),
        r#"{"huge": 1e400}"#.to_string(),
        r#"{"id": 123456789012345678901234567890}"#.to_string(),
        r#"{"precise": 0.1000000000000000055511151231257827}"#.to_string(),
    ];
    for (i, data) in edge.iter().enumerate() {
        emit(&db, "lead_scraped", i as i64 + 1, data).await;
    }
    for i in 0..10 {
        emit(&db, "lead_qualified", 100 + i, "{}").await;
    }
    wait_settled(&db, edge.len() as i64 + 10).await;
    let got = sink.requests();
    let behind = got
        .iter()
        .filter(|r| r.header("x-webhook-event") == Some("lead_qualified"))
        .count();
    assert_eq!(behind, 10, "the events behind the odd ones are delivered");
    for (i, data) in edge.iter().enumerate() {
        let id = i as i64 + 1;
        // What Postgres stores is the truth; the body must carry exactly that text.
        let stored: String = db
            .client()
            .await
            .query_one(
                "SELECT payload::text FROM webhook_queue WHERE entity_id = $1",
                &[&id],
            )
            .await
            .expect("stored payload")
            .get(0);
        let req = got
            .iter()
            .find(|r| {
                r.header("x-webhook-event") == Some("lead_scraped") && {
                    let body = String::from_utf8_lossy(&r.body);
                    body.contains(&format!("\"entity_id\":{id},"))
                }
            })
            .unwrap_or_else(|| panic!("event with data {data:.60} delivered"));
        let body = String::from_utf8_lossy(&req.body);
        assert!(
            body.contains(&format!("\"data\":{}", compact(&stored))),
            "the body carries the stored payload exactly\nstored: {stored:.200}\nbody: {body:.300}"
        );
    }
}

/// Postgres prints jsonb with a space after `:` and `,`; the body is compact JSON.
fn compact(jsonb_text: &str) -> String {
    let mut out = String::with_capacity(jsonb_text.len());
    let mut in_string = false;
    let mut escaped = false;
    for c in jsonb_text.chars() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
            out.push(c);
        } else if c != ' ' {
            out.push(c);
        }
    }
    out
}

#[tokio::test]
async fn a_route_to_a_host_that_does_not_resolve_fails_with_a_clear_error_while_others_flow() {
    let db = TestDb::migrated().await;
    let sink = Sink::start().await;
    let _relay = RelayBuilder::new(&db.url, &sink.url())
        .env(
            "RELAY_ROUTES__LEAD_QUALIFIED__URL",
            "http://no-such-host.invalid/webhook/q",
        )
        .env("WEBHOOK_MAX_RETRIES", 1)
        .spawn();
    db.client()
        .await
        .batch_execute(
            "INSERT INTO leads (id, business_name) SELECT i, 'lead ' || i FROM generate_series(1, 5) i;
             UPDATE leads SET status = 'qualified';",
        )
        .await
        .expect("leads");
    sink.wait_for(5, T).await;
    wait_settled(&db, 10).await;
    let rows = db
        .client()
        .await
        .query(
            "SELECT status, retry_count, last_error FROM webhook_queue
             WHERE event_type = 'lead_qualified'",
            &[],
        )
        .await
        .expect("rows");
    assert_eq!(rows.len(), 5);
    for row in rows {
        assert_eq!(row.get::<_, String>(0), "failed");
        assert_eq!(row.get::<_, i32>(1), 1, "retried as configured");
        let error: String = row.get(2);
        assert!(
            error.contains("no-such-host.invalid") || error.to_lowercase().contains("dns"),
            "the error names the lookup failure: {error}"
        );
    }
    assert!(sink
        .requests()
        .iter()
        .all(|r| r.header("x-webhook-event") == Some("lead_scraped")));
}

#[tokio::test]
async fn an_invalid_route_url_is_refused_at_start_naming_the_key() {
    let db = TestDb::migrated().await;
    let sink = Sink::start().await;
    for bad in [
        "http://[::1",
        "http://exa mple.com/x",
        "ftp://example.com/x",
    ] {
        let out = RelayBuilder::new(&db.url, &sink.url())
            .env("RELAY_ROUTES__LEAD_QUALIFIED__URL", bad)
            .output()
            .await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{bad}: {stderr}");
        assert!(
            stderr.contains("routes.lead_qualified.url"),
            "{bad}: names the key: {stderr}"
        );
    }
}

#[tokio::test]
async fn a_queued_row_with_an_unusable_url_fails_with_a_clear_error_and_the_queue_moves_on() {
    let db = TestDb::migrated().await;
    let sink = Sink::start().await;
    // Rows queued under an older configuration, their URLs unusable now.
    db.client()
        .await
        .batch_execute(
            "INSERT INTO webhook_queue (event_id, event_type, entity_type, entity_id, webhook_url, payload, priority)
             VALUES (1, 'lead_scraped', 'lead', 1, 'http://[::1', '{}', 10),
                    (2, 'lead_scraped', 'lead', 2, 'not a url at all', '{}', 10);",
        )
        .await
        .expect("queue rows");
    let _relay = RelayBuilder::new(&db.url, &sink.url())
        .env("WEBHOOK_MAX_RETRIES", 1)
        .spawn();
    for i in 0..5 {
        insert_lead(&db, &format!("lead {i}")).await;
    }
    sink.wait_for(5, T).await;
    wait_settled(&db, 7).await;
    let rows = db
        .client()
        .await
        .query(
            "SELECT status, last_error, webhook_url FROM webhook_queue WHERE priority = 10",
            &[],
        )
        .await
        .expect("rows");
    for row in rows {
        let url: String = row.get(2);
        assert_eq!(row.get::<_, String>(0), "failed", "{url}");
        let error: String = row.get(1);
        assert!(
            error.contains("webhook_url") && error.contains("not a valid URL"),
            "{url}: {error}"
        );
    }
    assert_eq!(sink.count(), 5);
}

#[tokio::test]
async fn an_outbox_row_of_an_unknown_event_type_waits_unrouted_and_blocks_nothing() {
    let db = TestDb::migrated().await;
    let sink = Sink::start().await;
    // Written past webhook_emit (which refuses unknown names): kept, not dropped.
    db.client()
        .await
        .execute(
            "INSERT INTO webhook_events (event_type, entity_type, entity_id, payload)
             VALUES ('lead_vanished', 'lead', 1, '{}')",
            &[],
        )
        .await
        .expect("odd outbox row");
    let _relay = RelayBuilder::new(&db.url, &sink.url()).spawn();
    for i in 0..5 {
        insert_lead(&db, &format!("lead {i}")).await;
    }
    sink.wait_for(5, T).await;
    wait_settled(&db, 5).await;
    assert_eq!(
        db.count("SELECT count(*) FROM webhook_events WHERE routed_at IS NULL")
            .await,
        1,
        "the unknown event is kept for an operator"
    );
}

#[tokio::test]
async fn an_outbox_event_timed_at_infinity_is_delivered_and_the_routes_behind_it_keep_moving() {
    let db = TestDb::migrated().await;
    let sink = Sink::start().await;
    // Written past webhook_emit and the triggers (which take the clock's time): the
    // bottom of the outbox, so every route statement would pick it first.
    db.client()
        .await
        .batch_execute(
            "INSERT INTO webhook_events (event_type, entity_type, entity_id, payload, occurred_at)
             VALUES ('lead_scraped', 'lead', 901, '{\"lead_id\": 901}', 'infinity'),
                    ('lead_scraped', 'lead', 902, '{\"lead_id\": 902}', '-infinity')",
        )
        .await
        .expect("outbox rows timed at infinity");
    let _relay = RelayBuilder::new(&db.url, &sink.url()).spawn();
    for i in 0..3 {
        insert_lead(&db, &format!("lead {i}")).await;
    }
    sink.wait_for(5, T).await;
    wait_settled(&db, 5).await;
    let client = db.client().await;
    for request in sink.requests() {
        let body = request.json();
        let at = body["occurred_at"].as_str().unwrap_or_default().to_string();
        // Timed at their route: a real time of the last minutes, as n8n can parse it.
        let recent: bool = client
            .query_one(
                "SELECT $1::text::timestamptz BETWEEN now() - interval '5 minutes' AND now()",
                &[&at],
            )
            .await
            .unwrap_or_else(|e| panic!("{}: occurred_at {at:?}: {e}", body["entity_id"]))
            .get(0);
        assert!(recent, "{}: occurred_at {at:?}", body["entity_id"]);
    }
    assert_eq!(
        db.count("SELECT count(*) FROM webhook_queue WHERE NOT isfinite(occurred_at)")
            .await,
        0
    );
}

#[tokio::test]
async fn a_row_parked_at_infinity_is_never_due_and_stops_neither_the_relay_nor_the_operators_views()
{
    let db = TestDb::migrated().await;
    let sink = Sink::start().await;
    // Parked by hand, as a DBA might: pending, never due.
    let parked: i64 = db
        .client()
        .await
        .query_one(
            "INSERT INTO webhook_queue (event_id, event_type, entity_type, entity_id, webhook_url,
                                        payload, next_attempt_at)
             VALUES (900, 'lead_scraped', 'lead', 900, $1, '{}', 'infinity') RETURNING id",
            &[&format!("{}/webhook/lead-scraped", sink.url())],
        )
        .await
        .expect("a parked row")
        .get(0);
    let relay = RelayBuilder::new(&db.url, &sink.url());
    let running = relay.clone().spawn();
    for i in 0..3 {
        insert_lead(&db, &format!("lead {i}")).await;
    }
    sink.wait_for(3, T).await;
    // Idle with the parked row the earliest pending one: the idle check reads its due
    // time, and the relay goes to sleep armed (it used to fail that check for ever).
    db.wait_armed(T).await;
    insert_lead(&db, "after the park").await;
    sink.wait_for(4, T).await;
    wait_settled(&db, 4).await;
    assert_eq!(sink.count(), 4, "the parked row is never sent");
    // Not one failed check on the way: on Postgres 15 subtracting 'infinity' is an
    // error, which set the relay backing off at every idle check.
    let log = running.log();
    assert!(!log.contains("database error"), "{log}");

    for args in [
        vec!["queue".to_string(), "show".into(), parked.to_string()],
        vec![
            "queue".into(),
            "list".into(),
            "--status".into(),
            "pending".into(),
            "--json".into(),
        ],
    ] {
        let out = relay.clone().args(args.clone()).output().await;
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: {stdout} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("infinity"), "{args:?}: {stdout}");
    }
}
