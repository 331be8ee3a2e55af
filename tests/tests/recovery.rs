//! Nothing is lost: events written while the relay is stopped, a killed listener or
//! pool connection, two relays on one database, paused delivery and a graceful stop.
//! A relay killed mid-delivery: liveness.rs.

use std::time::Duration;

use relay_tests::{wait_until, Relay, RelayBuilder, Reply, Sink, TestDb};

const T: Duration = Duration::from_secs(20);

async fn insert_leads(db: &TestDb, n: i64) {
    db.client()
        .await
        .execute(
            "INSERT INTO leads (business_name) SELECT 'lead ' || i FROM generate_series(1, $1::int8) i",
            &[&n],
        )
        .await
        .expect("insert leads");
}

async fn count_status(db: &TestDb, status: &str) -> i64 {
    db.count(&format!(
        "SELECT count(*) FROM webhook_queue WHERE status = '{status}'"
    ))
    .await
}

async fn wait_for_status(db: &TestDb, status: &'static str, n: i64) {
    wait_until(&format!("{n} rows {status}"), T, || async {
        (count_status(db, status).await == n).then_some(())
    })
    .await;
}

/// The pid of the relay's LISTEN connection to this test's database.
async fn listener_pid(db: &TestDb) -> Option<i32> {
    db.listener_pid().await
}

async fn stop(relay: &mut Relay) {
    assert_eq!(
        relay.terminate(Duration::from_secs(15)).await,
        Some(0),
        "a graceful stop exits 0\n{}",
        relay.log()
    );
}

#[tokio::test]
async fn events_committed_while_the_relay_is_stopped_are_delivered_after_it_starts() {
    let db = TestDb::migrated().await;
    let sink = Sink::start().await;
    insert_leads(&db, 5).await;
    let _relay = RelayBuilder::new(&db.url, &sink.url())
        .env("WEBHOOK_QUEUE_PROCESSING_INTERVAL", 60)
        .spawn();
    sink.wait_for_distinct(5, T).await;
    wait_for_status(&db, "sent", 5).await;
    assert_eq!(sink.count(), 5);
}

#[tokio::test]
async fn a_killed_listener_reconnects_and_events_sent_meanwhile_are_delivered() {
    let db = TestDb::migrated().await;
    let sink = Sink::start().await;
    // No safety sweep within the test: delivery must come from the reconnect's
    // catch-up and from notifications.
    let relay = RelayBuilder::new(&db.url, &sink.url())
        .env("WEBHOOK_QUEUE_PROCESSING_INTERVAL", 60)
        .spawn();
    let first = wait_until("the relay listens", T, || listener_pid(&db)).await;
    insert_leads(&db, 1).await;
    sink.wait_for(1, T).await;

    // Kill the listener and, for good measure, every other connection of the relay.
    let admin = db.client().await;
    admin
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = $1 AND application_name LIKE 'n8n-relay%'",
            &[&db.name],
        )
        .await
        .expect("terminate the relay's backends");
    // Written while the listener may be down: only the catch-up can find it.
    insert_leads(&db, 1).await;
    let second = wait_until("the listener is back", T, || async {
        listener_pid(&db).await.filter(|pid| *pid != first)
    })
    .await;
    assert_ne!(first, second);
    sink.wait_for_distinct(2, T).await;

    // And the new connection receives notifications again.
    insert_leads(&db, 1).await;
    sink.wait_for_distinct(3, Duration::from_secs(5)).await;
    wait_for_status(&db, "sent", 3).await;
    assert!(
        relay.log().contains("listener reconnected"),
        "{}",
        relay.log()
    );
}

#[tokio::test]
async fn two_relays_on_one_database_deliver_every_event_once() {
    let db = TestDb::migrated().await;
    let sink = Sink::with(|_| Reply::ok().after(Duration::from_millis(2))).await;
    let builder = RelayBuilder::new(&db.url, &sink.url()).env("RELAY_QUEUE__WORKERS", 4);
    let _a = builder.spawn();
    let _b = builder.spawn();
    db.insert_leads_concurrently(4, 100).await;
    sink.wait_for_distinct(400, Duration::from_secs(60)).await;
    wait_for_status(&db, "sent", 400).await;
    assert_eq!(sink.count(), 400, "none twice");
    assert_eq!(db.count("SELECT count(*) FROM webhook_queue").await, 400);
}

#[tokio::test]
async fn pausing_with_either_switch_loses_nothing_and_flows_when_enabled() {
    let db = TestDb::migrated().await;
    let sink = Sink::start().await;
    let builder = RelayBuilder::new(&db.url, &sink.url());
    let mut pending = 0;
    for switch in ["N8N_ENABLED", "WEBHOOK_QUEUE_ENABLED"] {
        let mut paused = builder.clone().env(switch, "false").spawn();
        insert_leads(&db, 3).await;
        pending += 3;
        // Routed into the queue, not sent.
        wait_for_status(&db, "pending", pending).await;
        assert_eq!(
            db.count("SELECT count(*) FROM webhook_events WHERE routed_at IS NULL")
                .await,
            0
        );
        stop(&mut paused).await;
        assert_eq!(sink.count(), 0, "nothing sent while {switch}=false");
    }

    let _relay = builder.spawn();
    sink.wait_for_distinct(6, T).await;
    wait_for_status(&db, "sent", 6).await;
}

#[tokio::test]
async fn a_disabled_route_holds_its_events_until_it_is_enabled() {
    let db = TestDb::migrated().await;
    let sink = Sink::start().await;
    let builder = RelayBuilder::new(&db.url, &sink.url());
    let mut relay = builder
        .clone()
        .env("RELAY_ROUTES__LEAD_QUALIFIED__ENABLED", "false")
        .spawn();
    db.client()
        .await
        .batch_execute(
            "INSERT INTO leads (id, business_name) VALUES (1, 'Acme Inc');
             UPDATE leads SET status = 'qualified' WHERE id = 1;",
        )
        .await
        .expect("lead");
    let got = sink.wait_for(1, T).await;
    assert_eq!(got[0].header("x-webhook-event"), Some("lead_scraped"));
    wait_for_status(&db, "pending", 1).await;
    stop(&mut relay).await;
    assert_eq!(sink.count(), 1, "the held event was not sent");

    let _relay = builder.spawn();
    let got = sink.wait_for(2, T).await;
    assert_eq!(got[1].header("x-webhook-event"), Some("lead_qualified"));
}

#[tokio::test]
async fn with_a_backlog_higher_priority_goes_first() {
    let db = TestDb::migrated().await;
    let sink = Sink::start().await;
    let builder = RelayBuilder::new(&db.url, &sink.url())
        .env("RELAY_ROUTES__DEMO_FAILED__PRIORITY", 10)
        .env("RELAY_ROUTES__LEAD_QUALIFIED__PRIORITY", 5)
        .env("RELAY_QUEUE__WORKERS", 1);
    let mut paused = builder.clone().env("N8N_ENABLED", "false").spawn();
    // Oldest first: lead_scraped (0), then lead_qualified (5), then demo_failed (10).
    db.client()
        .await
        .batch_execute(
            "INSERT INTO leads (id) VALUES (1), (2), (3);
             UPDATE leads SET status = 'qualified';
             INSERT INTO demo_sites (lead_id, status) VALUES (1, 'failed'), (2, 'failed'), (3, 'failed');",
        )
        .await
        .expect("backlog");
    wait_for_status(&db, "pending", 9).await;
    stop(&mut paused).await;

    let _relay = builder.spawn();
    let got = sink.wait_for(9, T).await;
    let order: Vec<(String, i64)> = got
        .iter()
        .map(|r| {
            let body = r.json();
            (
                body["event"].as_str().unwrap_or_default().to_string(),
                body["data"]["lead_id"].as_i64().unwrap_or_default(),
            )
        })
        .collect();
    let expected: Vec<(String, i64)> = ["demo_failed", "lead_qualified", "lead_scraped"]
        .iter()
        .flat_map(|e| (1..=3).map(move |id| (e.to_string(), id)))
        .collect();
    assert_eq!(order, expected, "by priority, then age");
}

#[tokio::test]
async fn sigterm_lets_a_delivery_in_flight_finish_and_exits_0() {
    let db = TestDb::migrated().await;
    let sink = Sink::with(|_| Reply::ok().after(Duration::from_millis(800))).await;
    let mut relay = RelayBuilder::new(&db.url, &sink.url()).spawn();
    insert_leads(&db, 1).await;
    sink.wait_for(1, T).await;
    stop(&mut relay).await;
    assert_eq!(
        count_status(&db, "sent").await,
        1,
        "finished within the grace period"
    );
}

#[tokio::test]
async fn sigterm_releases_a_delivery_that_outlasts_the_grace_period() {
    let db = TestDb::migrated().await;
    let sink = Sink::first_attempt(Reply::Hang).await;
    let builder = RelayBuilder::new(&db.url, &sink.url())
        .env("RELAY_QUEUE__SHUTDOWN_GRACE_SECONDS", 1)
        .env("RELAY_QUEUE__LEASE_SECONDS", 60)
        .env("WEBHOOK_TIMEOUT_SECONDS", 30);
    let mut relay = builder.spawn();
    insert_leads(&db, 1).await;
    sink.wait_for(1, T).await;
    stop(&mut relay).await;
    let row = db
        .client()
        .await
        .query_one(
            "SELECT status, retry_count, lease_expires_at IS NULL FROM webhook_queue",
            &[],
        )
        .await
        .expect("row");
    assert_eq!(
        row.get::<_, String>(0),
        "pending",
        "released, not left sending"
    );
    assert_eq!(row.get::<_, i32>(1), 0, "release does not count as a retry");
    assert!(row.get::<_, bool>(2));

    // The next relay delivers it at once (no lease to wait for).
    let _relay = builder.spawn();
    let got = sink.wait_for(2, T).await;
    assert_eq!(got[1].header("x-webhook-attempt"), Some("1"));
    wait_for_status(&db, "sent", 1).await;
}

#[tokio::test]
async fn retention_removes_old_finished_rows_and_keeps_failed_and_recent_ones() {
    let db = TestDb::migrated().await;
    let client = db.client().await;
    client
        .batch_execute(
            "INSERT INTO webhook_queue (id, event_type, webhook_url, status, created_at,
                                        updated_at)
             VALUES (1, 'lead_scraped', 'http://x/a', 'sent', now() - interval '3 days',
                     now() - interval '3 days'),
                    (2, 'lead_scraped', 'http://x/a', 'cancelled', now() - interval '3 days',
                     now() - interval '3 days'),
                    (3, 'lead_scraped', 'http://x/a', 'failed', now() - interval '3 days',
                     now() - interval '3 days'),
                    (4, 'lead_scraped', 'http://x/a', 'sent', now(), now());
             INSERT INTO webhook_logs (direction, webhook_queue_id, created_at)
             VALUES ('outgoing', 1, now() - interval '3 days'),
                    ('outgoing', 3, now() - interval '3 days'),
                    ('outgoing', 4, now());",
        )
        .await
        .expect("old rows");
    let sink = Sink::start().await;
    let _relay = RelayBuilder::new(&db.url, &sink.url())
        .env("RELAY_QUEUE__RETENTION_DAYS", 1)
        .spawn();
    wait_until("old sent and cancelled rows are gone", T, || async {
        (db.count("SELECT count(*) FROM webhook_queue").await == 2).then_some(())
    })
    .await;
    let kept: Vec<i64> = client
        .query("SELECT id FROM webhook_queue ORDER BY id", &[])
        .await
        .expect("rows")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(kept, [3, 4], "failed rows and recent rows stay");
    assert_eq!(
        db.count("SELECT count(*) FROM webhook_logs").await,
        2,
        "logs go with their rows"
    );
}
