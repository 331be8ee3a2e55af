//! Fault suite: SIGTERM under load. The relay stops claiming, lets deliveries in
//! flight finish within `queue.shutdown_grace_seconds`, gives the rest back to the
//! queue, records every outcome and exits 0. A restart loses nothing and re-sends only
//! what was given back.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use relay_tests::proxy::{upstream_of, Proxy};
use relay_tests::{wait_until, RelayBuilder, Reply, Sink, TestDb, WriterPlan, Writers};

const T: Duration = Duration::from_secs(60);
const WORKERS: usize = 8;

async fn count(db: &TestDb, sql: &str) -> i64 {
    db.count(sql).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_finishes_what_is_in_flight_and_a_restart_sends_the_rest_once() {
    let db = TestDb::migrated().await;
    let sink = Sink::with(|_| Reply::ok().after(Duration::from_millis(50))).await;
    let builder = RelayBuilder::new(&db.url, &sink.url())
        .env("RELAY_QUEUE__WORKERS", WORKERS)
        .env("RELAY_QUEUE__SHUTDOWN_GRACE_SECONDS", 10)
        .env("RELAY_QUEUE__LEASE_SECONDS", 60);
    let mut relay = builder.spawn();
    let writers = Writers::spawn(
        &db.url,
        WriterPlan {
            writers: 2,
            each: 500,
            pace: Duration::from_millis(1),
            ride_out_outages: false,
        },
    );
    sink.wait_for(150, T).await;

    let asked = Instant::now();
    assert_eq!(
        relay.terminate(Duration::from_secs(15)).await,
        Some(0),
        "a graceful stop exits 0"
    );
    let took = asked.elapsed();
    let at_exit = sink.count();
    writers.finish(T).await;
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM webhook_queue WHERE status = 'sending'"
        )
        .await,
        0,
        "nothing left in flight: every delivery finished and was recorded"
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM webhook_queue WHERE status = 'sent'"
        )
        .await,
        at_exit as i64,
        "every request that reached n8n is recorded as sent"
    );
    assert!(
        took < Duration::from_secs(5),
        "in-flight deliveries take 50 ms; the stop took {took:?}"
    );
    assert_eq!(
        sink.count(),
        at_exit,
        "nothing is sent after the relay exited"
    );

    let _relay = builder.spawn();
    sink.wait_for_distinct(1000, T).await;
    db.wait_for_queue_status("sent", 1000, T).await;
    assert_eq!(
        sink.count(),
        1000,
        "a clean stop means no duplicates: {:?}",
        sink.duplicates()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_gives_back_deliveries_that_outlast_the_grace_and_only_those_are_resent() {
    let db = TestDb::migrated().await;
    // Answers take 4 s, longer than the 1 s grace period, until the relay is stopped.
    let sink = Sink::with(|_| Reply::ok().after(Duration::from_secs(4))).await;
    let builder = RelayBuilder::new(&db.url, &sink.url())
        .env("RELAY_QUEUE__WORKERS", WORKERS)
        .env("RELAY_QUEUE__SHUTDOWN_GRACE_SECONDS", 1)
        .env("RELAY_QUEUE__LEASE_SECONDS", 60)
        .env("WEBHOOK_TIMEOUT_SECONDS", 30);
    let mut relay = builder.spawn();
    db.insert_leads_concurrently(2, 50).await;
    let in_flight: HashSet<String> = sink
        .wait_for(WORKERS, T)
        .await
        .iter()
        .map(|r| r.webhook_id())
        .collect();

    assert_eq!(relay.terminate(Duration::from_secs(10)).await, Some(0));
    sink.set_behaviour(|_| Reply::ok());
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM webhook_queue WHERE status = 'sending'"
        )
        .await,
        0,
        "given back, not left to a lease that runs for a minute"
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM webhook_queue WHERE status = 'pending'"
        )
        .await
            + count(
                &db,
                "SELECT count(*) FROM webhook_events WHERE routed_at IS NULL"
            )
            .await,
        100,
        "every event waits, queued or still in the outbox"
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM webhook_queue WHERE retry_count > 0"
        )
        .await,
        0,
        "a release does not count as a retry"
    );
    let seen_before_restart: HashSet<String> = sink.distinct_ids();
    assert_eq!(
        seen_before_restart, in_flight,
        "nothing new was claimed after SIGTERM"
    );

    let _relay = builder.spawn();
    sink.wait_for_distinct(100, T).await;
    db.wait_for_queue_status("sent", 100, T).await;
    let dups = sink.duplicates();
    let resent: HashSet<String> = dups.keys().cloned().collect();
    assert_eq!(
        resent, in_flight,
        "exactly the rows in flight at SIGTERM were sent again"
    );
    assert!(dups.values().all(|n| *n == 2));
    for r in sink
        .requests()
        .iter()
        .filter(|r| resent.contains(&r.webhook_id()))
    {
        assert_eq!(
            r.header("x-webhook-attempt"),
            Some("1"),
            "a release is not a failed attempt"
        );
    }
}

/// Rows claimed ahead for an endpoint that hangs wait behind the requests in flight,
/// and one whose lease has too little left for a request is not started. It was left
/// `sending` for its lease to run out, so a clean stop in between left it so, as if
/// the relay had crashed, until the next relay started.
#[tokio::test]
async fn rows_too_late_to_start_go_back_to_the_queue_and_a_stop_leaves_none_sending() {
    let db = TestDb::migrated().await;
    let sink = Sink::with(|_| Reply::Hang).await;
    let mut relay = RelayBuilder::new(&db.url, &sink.url())
        .env("RELAY_QUEUE__WORKERS", 2)
        .env("RELAY_QUEUE__MAX_PER_ENDPOINT", 2)
        .env("WEBHOOK_TIMEOUT_SECONDS", 3)
        .env("RELAY_QUEUE__LEASE_SECONDS", 8)
        .env("RELAY_QUEUE__SHUTDOWN_GRACE_SECONDS", 1)
        .env("WEBHOOK_RETRY_DELAYS", 60)
        .spawn();
    db.insert_leads_concurrently(1, 12).await;
    // Waves at 0 s and 3 s; at 6 s two of the lease's 8 s are left, too few for a
    // 3 s request.
    wait_until("a row too late to start", T, || async {
        relay
            .log()
            .contains("waited too long for its endpoint")
            .then_some(())
    })
    .await;
    assert_eq!(relay.terminate(Duration::from_secs(10)).await, Some(0));
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM webhook_queue WHERE status = 'sending'"
        )
        .await,
        0,
        "{}",
        relay.log()
    );
}

/// Sessions of this database that ended without the client's goodbye (Postgres logs
/// each as "could not receive data from client: Connection reset by peer").
async fn abandoned_sessions(db: &TestDb) -> i64 {
    count(
        db,
        "SELECT sessions_abandoned FROM pg_stat_database WHERE datname = current_database()",
    )
    .await
}

/// A relay restarted, or a CLI command run, must not leave a line in the Postgres log
/// for every connection it held: a DBA reads those as a network fault to chase.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_relay_and_a_cli_command_say_goodbye_to_postgres() {
    let db = TestDb::migrated().await;
    let sink = Sink::start().await;
    let builder = RelayBuilder::new(&db.url, &sink.url());
    let before = abandoned_sessions(&db).await;

    let mut relay = builder.spawn();
    db.insert_lead().await;
    sink.wait_for(1, T).await;
    db.wait_for_queue_status("sent", 1, T).await;
    assert_eq!(relay.terminate(Duration::from_secs(15)).await, Some(0));
    let stats = builder.clone().args(["queue", "stats"]).output().await;
    assert!(stats.status.success(), "queue stats: {stats:?}");

    // A backend leaves pg_stat_activity only after it has counted how its session
    // ended, so once the relay's sessions are gone the count is final.
    wait_until("the relay's and the CLI's sessions to end", T, || async {
        let left = count(
            &db,
            "SELECT count(*) FROM pg_stat_activity
              WHERE datname = current_database() AND application_name LIKE 'n8n-relay%'",
        )
        .await;
        (left == 0).then_some(())
    })
    .await;
    assert_eq!(
        abandoned_sessions(&db).await - before,
        0,
        "sessions the relay and the CLI dropped without a Terminate message"
    );
}

/// Postgres stops answering (every connection silent, new ones too) while a delivery
/// is in flight: each part of the relay waited out its statement's bound, one after
/// the other, and the stop took 38 s, where systemd, compose and Kubernetes kill at 30.
/// It now takes the grace, a bounded wait for what is left to write, and no more; the
/// row it could not record goes back once its sessions are gone, and is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_whose_database_stopped_answering_still_stops_before_it_is_killed() {
    let db = TestDb::migrated().await;
    let sink = Sink::with(|r| {
        if r.nth_for_id == 1 {
            Reply::ok().after(Duration::from_secs(3))
        } else {
            Reply::ok()
        }
    })
    .await;
    let proxy = Proxy::start(upstream_of(&db.url)).await;
    let builder = RelayBuilder::new(&proxy.url_via(&db.url), &sink.url())
        .env("RELAY_QUEUE__SHUTDOWN_GRACE_SECONDS", 1)
        .env("RELAY_DATABASE__STATEMENT_TIMEOUT_SECONDS", 30);
    let builder_callbacks_addr = builder.callbacks_addr();
    let mut relay = builder.spawn();
    wait_until("the relay listens", T, || db.listener_pid()).await;
    db.insert_lead().await;
    sink.wait_for(1, T).await;

    proxy.silence();
    // Callbacks in flight too: each waits on the silent database (the listener waited
    // out its 30 s request timeout, then 30 s more for their log rows).
    let callbacks = builder_callbacks_addr;
    let mut in_flight = Vec::new();
    for n in 0..3 {
        let body =
            format!(r#"{{"workflow_id":"w","execution_id":"quiet-{n}","status":"running"}}"#);
        let ts = relay_core::signature::unix_now();
        let signature = relay_core::signature::sign(
            relay_tests::relay::TEST_N8N_SECRET.as_bytes(),
            ts,
            body.as_bytes(),
        );
        let request = format!(
            "POST /api/v1/webhooks/n8n/workflow-status HTTP/1.1\r\nHost: {callbacks}\r\n\
             Content-Type: application/json\r\nX-Webhook-Timestamp: {ts}\r\n\
             X-Webhook-Signature-256: {signature}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let mut stream = tokio::net::TcpStream::connect(&callbacks)
            .await
            .expect("the callback listener");
        tokio::io::AsyncWriteExt::write_all(&mut stream, request.as_bytes())
            .await
            .expect("a callback sent");
        in_flight.push(stream);
    }
    let asked = Instant::now();
    assert_eq!(
        relay.terminate(Duration::from_secs(60)).await,
        Some(0),
        "a stop without the database still exits 0"
    );
    let took = asked.elapsed();
    assert!(
        took < Duration::from_secs(20),
        "grace 1 s + at most 2 s for a statement in flight + 10 s to write down + 2 s \
         for the health writer + 1 s of goodbyes; the stop took {took:?}"
    );
    drop(in_flight);
    assert!(
        relay
            .log()
            .contains("return to pending once this relay is gone"),
        "the stop says what becomes of what it could not write:\n{}",
        relay.log()
    );

    // Its sessions end with the link; the row it held is given back and delivered.
    drop(proxy);
    let _relay = RelayBuilder::new(&db.url, &sink.url()).spawn();
    db.wait_for_queue_status("sent", 1, T).await;
    assert_eq!(sink.distinct_ids().len(), 1);
}

/// n8n answers 429 with `Retry-After: 600` during a stop's grace, while the relay
/// holds more rows for that URL: they go back due when n8n asked, so the relays that
/// stay (or this one restarted) do not send them at once to an n8n that said it was
/// overloaded. Rows given back at the stop were due now.
#[tokio::test]
async fn rows_held_for_a_url_that_asked_to_slow_down_stay_cooling_across_a_stop() {
    let db = TestDb::migrated().await;
    // The answer comes late enough for the relay to claim the others meanwhile.
    let sink = Sink::with(|_| {
        Reply::status(429)
            .with_header("Retry-After", "600")
            .after(Duration::from_secs(3))
    })
    .await;
    let mut relay = RelayBuilder::new(&db.url, &sink.url())
        .env("RELAY_QUEUE__WORKERS", 1)
        .env("RELAY_QUEUE__MAX_PER_ENDPOINT", 1)
        .spawn();
    db.insert_leads_concurrently(1, 3).await;
    wait_until("all three claimed, one of them in flight", T, || async {
        let claimed = count(
            &db,
            "SELECT count(*) FROM webhook_queue WHERE status = 'sending'",
        )
        .await;
        (claimed == 3 && sink.count() == 1).then_some(())
    })
    .await;
    // Stopped while n8n has not answered yet: its 429 comes during the grace, after
    // the relay stopped claiming (and passing), and still counts for the rows it held.
    assert_eq!(relay.terminate(Duration::from_secs(20)).await, Some(0));
    assert_rows_wait_out_retry_after(&db, &relay, 3).await;
    assert_eq!(sink.count(), 1, "nothing more went to the overloaded URL");
}

/// The same, for a delivery to that URL still in flight when the grace ends: cut off,
/// it goes back due when n8n asked, not at once.
#[tokio::test]
async fn a_delivery_cut_off_at_a_stop_to_a_url_that_asked_to_slow_down_stays_cooling() {
    let db = TestDb::migrated().await;
    let answered = std::sync::atomic::AtomicUsize::new(0);
    let sink = Sink::with(move |_| {
        if answered.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
            // Late enough for the second request to go out first, early enough to
            // come within the grace.
            Reply::status(429)
                .with_header("Retry-After", "600")
                .after(Duration::from_secs(1))
        } else {
            Reply::Hang
        }
    })
    .await;
    let mut relay = RelayBuilder::new(&db.url, &sink.url())
        .env("RELAY_QUEUE__WORKERS", 2)
        .env("RELAY_QUEUE__MAX_PER_ENDPOINT", 2)
        .env("RELAY_QUEUE__SHUTDOWN_GRACE_SECONDS", 4)
        .spawn();
    db.insert_leads_concurrently(1, 2).await;
    sink.wait_for(2, T).await;
    assert_eq!(relay.terminate(Duration::from_secs(20)).await, Some(0));
    // The one answered 429 and the one cut off.
    assert_rows_wait_out_retry_after(&db, &relay, 2).await;
}

/// The stopped relay took n8n's `Retry-After: 600`, and `n` rows (all there are) wait
/// it out, pending.
async fn assert_rows_wait_out_retry_after(db: &TestDb, relay: &relay_tests::Relay, n: i64) {
    assert!(
        relay.log().contains("n8n asked to slow down"),
        "{}",
        relay.log()
    );
    assert_eq!(
        count(
            db,
            "SELECT count(*) FROM webhook_queue
             WHERE status = 'pending' AND next_attempt_at > now() + interval '500 seconds'"
        )
        .await,
        n,
        "every row the relay held waits out n8n's Retry-After: {}",
        relay.log()
    );
}
