//! Fault suite: several relays on one database under load. Nothing is lost, nothing
//! is sent twice (no lease expires here), and every relay does part of the work. Each
//! relay is told apart at the sink by its own static auth header
//! (`n8n.auth_header_name` / `auth_header_value`), a contract feature.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use relay_tests::{RelayBuilder, Reply, Sink, TestDb, WriterPlan, Writers};

const EVENTS: usize = 3_000;

async fn relays_share_the_load_without_loss_or_double_sends(relays: usize) {
    let db = TestDb::migrated().await;
    let sink = Sink::with(|_| Reply::ok().after(Duration::from_millis(2))).await;
    let base = RelayBuilder::new(&db.url, &sink.url())
        .env("RELAY_QUEUE__WORKERS", 4)
        .env("RELAY_DATABASE__POOL_SIZE", 3)
        .env("RELAY_N8N__AUTH_HEADER_NAME", "X-Relay");
    let running: Vec<_> = (0..relays)
        .map(|i| {
            base.clone()
                .env("RELAY_N8N__AUTH_HEADER_VALUE", format!("relay-{i}"))
                .spawn()
        })
        .collect();
    let started = Instant::now();
    Writers::spawn(
        &db.url,
        WriterPlan {
            writers: 4,
            each: EVENTS / 4,
            pace: Duration::ZERO,
            ride_out_outages: false,
        },
    )
    .finish(Duration::from_secs(120))
    .await;
    sink.wait_for_distinct(EVENTS, Duration::from_secs(120))
        .await;
    db.wait_for_queue_status("sent", EVENTS as i64, Duration::from_secs(30))
        .await;

    let mut per_relay: BTreeMap<String, usize> = BTreeMap::new();
    for r in sink.requests() {
        *per_relay
            .entry(r.header("x-relay").unwrap_or("none").to_string())
            .or_default() += 1;
    }
    eprintln!(
        "{relays} relays, {EVENTS} events in {:?}: {per_relay:?}",
        started.elapsed()
    );
    for relay in &running {
        assert!(
            !relay.log().contains("leases expired"),
            "no lease expired, so nothing may be sent twice\n{}",
            relay.log()
        );
    }
    assert!(
        sink.duplicates().is_empty(),
        "sent twice: {:?}",
        sink.duplicates()
    );
    assert_eq!(sink.count(), EVENTS);
    assert_eq!(
        db.count("SELECT count(*) FROM webhook_queue").await,
        EVENTS as i64,
        "enqueued once whichever relay routed it"
    );
    for i in 0..relays {
        let did = per_relay.get(&format!("relay-{i}")).copied().unwrap_or(0);
        assert!(did > 0, "relay-{i} delivered nothing: {per_relay:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_relays_under_load_lose_nothing_send_nothing_twice_and_share_the_work() {
    relays_share_the_load_without_loss_or_double_sends(2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_relays_under_load_lose_nothing_send_nothing_twice_and_share_the_work() {
    relays_share_the_load_without_loss_or_double_sends(3).await;
}
