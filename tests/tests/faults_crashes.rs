//! Fault suite: the relay process dies (kill -9) again and again while events stream
//! in. Every event is delivered at least once; the only duplicates are rows that were
//! in flight when the relay died, and a duplicate is the same webhook (same
//! `X-Webhook-Id`, same body).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use relay_tests::{wait_until, RelayBuilder, Reply, Sink, TestDb, WriterPlan, Writers};

const EVENTS: usize = 5_000;
const WORKERS: usize = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_kill_9_while_5000_events_stream_in_loses_nothing_and_resends_only_rows_in_flight()
{
    let db = TestDb::migrated().await;
    // A little latency keeps rows in flight at the moment of each kill.
    let sink = Sink::with(|_| Reply::ok().after(Duration::from_millis(3))).await;
    let builder = RelayBuilder::new(&db.url, &sink.url())
        .env("RELAY_QUEUE__WORKERS", WORKERS)
        .env("RELAY_QUEUE__MAX_PER_ENDPOINT", WORKERS)
        .env("WEBHOOK_TIMEOUT_SECONDS", 2)
        .env("RELAY_QUEUE__LEASE_SECONDS", 3);
    let mut relay = builder.spawn();
    let writers = Writers::spawn(
        &db.url,
        WriterPlan {
            writers: 4,
            each: EVENTS / 4,
            pace: Duration::from_millis(2),
            ride_out_outages: false,
        },
    );

    // Kill the relay every few hundred deliveries, while the writers are still going
    // and afterwards, until most of the stream is through.
    let mut kills = 0;
    let started = Instant::now();
    while sink.distinct_ids().len() < EVENTS * 9 / 10 && kills < 12 {
        let before = sink.count();
        wait_until(
            "deliveries between kills",
            Duration::from_secs(60),
            || async { (sink.count() >= before + 350).then_some(()) },
        )
        .await;
        relay.kill9().await;
        kills += 1;
        relay.restart();
    }
    writers.finish(Duration::from_secs(120)).await;
    assert!(kills >= 5, "only {kills} kills: the stream was too short");

    sink.wait_for_distinct(EVENTS, Duration::from_secs(120))
        .await;
    db.wait_for_queue_status("sent", EVENTS as i64, Duration::from_secs(30))
        .await;
    eprintln!(
        "{EVENTS} events, {kills} kills, {} requests in {:?}",
        sink.count(),
        started.elapsed()
    );

    // Every committed lead reached n8n.
    let leads: HashSet<i64> = db
        .client()
        .await
        .query("SELECT id FROM leads", &[])
        .await
        .expect("leads")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(leads.len(), EVENTS);
    let delivered: HashSet<i64> = sink
        .requests()
        .iter()
        .map(|r| r.json()["entity_id"].as_i64().expect("entity_id"))
        .collect();
    assert_eq!(delivered, leads, "every committed lead delivered");
    assert_eq!(
        db.count("SELECT count(*) FROM webhook_queue").await,
        EVENTS as i64,
        "one queue row per event: restarts never enqueue twice"
    );

    // Duplicates: same id, same body (checked by `duplicates`), and no more than the
    // rows a relay can hold at each kill (in flight, claimed ahead, or sent and
    // waiting for their outcome write): four per worker, up to sixteen while an
    // endpoint answers fast, as this sink does (crates/relay-daemon/src/pace.rs).
    let dups = sink.duplicates();
    let extra: usize = dups.values().map(|n| n - 1).sum();
    assert_eq!(sink.count(), EVENTS + extra);
    assert!(
        dups.len() <= kills * 16 * WORKERS,
        "{} webhooks re-sent after {kills} kills of a relay with {WORKERS} workers",
        dups.len()
    );
    assert!(relay.is_running());
}
