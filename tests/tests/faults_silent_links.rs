//! Fault suite: links to Postgres that die quietly. The listener's backend terminated
//! by an operator; and every connection going silent without a FIN or RST (a TCP
//! proxy between relay and Postgres stops forwarding, as a dropped NAT entry or a
//! stuck sidecar proxy would). The relay notices, reconnects, and delivers what was
//! written meanwhile. The safety sweep is set to a minute so only the relay's own
//! detection can deliver within the test's bounds.

use std::time::{Duration, Instant};

use relay_tests::proxy::{upstream_of, Proxy};
use relay_tests::{wait_until, RelayBuilder, Sink, TestDb};

const T: Duration = Duration::from_secs(20);

async fn insert_lead(db: &TestDb) {
    db.client()
        .await
        .execute("INSERT INTO leads (business_name) VALUES ('x')", &[])
        .await
        .expect("insert lead");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminated_listener_backend_is_replaced_and_wake_ups_reach_the_new_one() {
    let db = TestDb::migrated().await;
    let sink = Sink::start().await;
    let relay = RelayBuilder::new(&db.url, &sink.url())
        .env("WEBHOOK_QUEUE_PROCESSING_INTERVAL", 60)
        .spawn();
    let first = wait_until("the relay listens", T, || db.listener_pid()).await;
    for round in 1..=3 {
        let old = db.listener_pid().await.expect("listening");
        db.client()
            .await
            .execute("SELECT pg_terminate_backend($1)", &[&old])
            .await
            .expect("terminate the listener");
        // Written while the listener may be down: found by the reconnect's catch-up.
        insert_lead(&db).await;
        wait_until("a new listener backend", T, || async {
            db.listener_pid().await.filter(|pid| *pid != old)
        })
        .await;
        sink.wait_for_distinct(2 * round - 1, T).await;
        // And once idle again, a single write wakes it through the new connection.
        db.wait_armed(T).await;
        let woke = Instant::now();
        insert_lead(&db).await;
        sink.wait_for_distinct(2 * round, Duration::from_secs(5))
            .await;
        assert!(woke.elapsed() < Duration::from_secs(5));
    }
    assert_ne!(db.listener_pid().await, Some(first));
    // Logged just after the LISTEN that made the new backend visible.
    wait_until("the reconnect logged", T, || async {
        relay.log().contains("listener reconnected").then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_that_goes_silent_without_a_fin_is_noticed_and_replaced() {
    let db = TestDb::migrated().await;
    let sink = Sink::start().await;
    let proxy = Proxy::start(upstream_of(&db.url)).await;
    let relay = RelayBuilder::new(&proxy.url_via(&db.url), &sink.url())
        .env("WEBHOOK_QUEUE_PROCESSING_INTERVAL", 60)
        .env("RELAY_DATABASE__CONNECT_TIMEOUT_SECONDS", 2)
        .env("RELAY_DATABASE__STATEMENT_TIMEOUT_SECONDS", 3)
        .spawn();
    let first = wait_until("the relay listens", T, || db.listener_pid()).await;
    insert_lead(&db).await;
    sink.wait_for(1, T).await;
    db.wait_armed(T).await;

    // Every open link goes quiet; new connections still get through.
    proxy.blackhole();
    let silent = Instant::now();
    insert_lead(&db).await;
    insert_lead(&db).await;
    sink.wait_for_distinct(3, Duration::from_secs(45)).await;
    let noticed = silent.elapsed();
    eprintln!("delivered {noticed:?} after the link went silent");
    wait_until("a new LISTEN connection", T, || async {
        db.listener_pid().await.filter(|pid| *pid != first)
    })
    .await;
    assert!(silent.elapsed() < Duration::from_secs(30));
    // Logged just after the LISTEN that made the new backend visible.
    wait_until("the reconnect logged", T, || async {
        relay.log().contains("listener reconnected").then_some(())
    })
    .await;

    // Fully back: an idle relay is woken by one write at once.
    db.wait_armed(T).await;
    let woke = Instant::now();
    insert_lead(&db).await;
    sink.wait_for_distinct(4, Duration::from_secs(5)).await;
    assert!(woke.elapsed() < Duration::from_secs(5));
    db.wait_for_queue_status("sent", 4, T).await;
}
