//! Fault suite: Postgres itself goes away under the relay. Each test runs a private
//! cluster of its own (never the shared server): a fast-mode restart mid-stream, and
//! a failover from a primary to its promoted streaming replica.
//!
//! The truth for "committed" is the database after the fact (`SELECT id FROM leads`):
//! a writer whose connection died mid-statement does not know whether it committed.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use relay_tests::{
    wait_until, PrivateCluster, RelayBuilder, Sink, StopMode, TestDb, WriterPlan, Writers,
};

const T: Duration = Duration::from_secs(60);

async fn lead_ids(url: &str) -> HashSet<i64> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);
    client
        .query("SELECT id FROM leads", &[])
        .await
        .expect("leads")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

fn delivered_leads(sink: &Sink) -> HashSet<i64> {
    sink.requests()
        .iter()
        .map(|r| r.json()["entity_id"].as_i64().expect("entity_id"))
        .collect()
}

/// Commits one lead at `url` (retrying while the server comes up) and returns how long
/// it took from that commit until the sink received it.
async fn marker_latency(url: &str, sink: &Sink) -> Duration {
    let id: i64 = wait_until("a marker lead commits", T, || async {
        let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .ok()?;
        tokio::spawn(conn);
        client
            .query_one(
                "INSERT INTO leads (business_name) VALUES ('marker') RETURNING id",
                &[],
            )
            .await
            .ok()
            .map(|r| r.get(0))
    })
    .await;
    let committed = Instant::now();
    wait_until("the marker lead is delivered", T, || async {
        delivered_leads(sink).contains(&id).then_some(())
    })
    .await;
    committed.elapsed()
}

/// Waits until every lead in the database at `url` reached the sink.
async fn wait_all_delivered(url: &str, sink: &Sink) -> usize {
    let leads = lead_ids(url).await;
    wait_until("every committed lead delivered", T, || async {
        delivered_leads(sink).is_superset(&leads).then_some(())
    })
    .await;
    leads.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fast_postgres_restart_mid_stream_loses_nothing_and_deliveries_resume_within_seconds() {
    let cluster = PrivateCluster::start().expect("private cluster");
    let db = TestDb::migrated_on(&cluster.server()).await;
    let sink = Sink::start().await;
    let mut relay = RelayBuilder::new(&db.url, &sink.url())
        .env("RELAY_DATABASE__CONNECT_TIMEOUT_SECONDS", 2)
        // No safety sweep inside the test: catching up must come from the reconnect.
        .env("WEBHOOK_QUEUE_PROCESSING_INTERVAL", 60)
        .spawn();
    let writers = Writers::spawn(
        &db.url,
        WriterPlan {
            writers: 3,
            each: 400,
            pace: Duration::from_millis(5),
            ride_out_outages: true,
        },
    );
    sink.wait_for(200, T).await;

    cluster.restart().expect("restart postgres");
    let resumed = marker_latency(&db.url, &sink).await;
    eprintln!("first event after the restart delivered in {resumed:?}");
    writers.finish(T).await;

    let n = wait_all_delivered(&db.url, &sink).await;
    assert!(n >= 600, "the writers committed most leads: {n}");
    assert!(
        resumed < Duration::from_secs(10),
        "an event committed once Postgres was back took {resumed:?}"
    );
    assert!(
        relay.is_running(),
        "a database restart never ends the relay"
    );
    let log = relay.log();
    assert!(log.contains("listener reconnected"), "{log}");

    // LISTEN works again: an idle relay is woken by a single new event at once.
    db.wait_armed(T).await;
    let before = sink.count();
    db.client()
        .await
        .execute("INSERT INTO leads (business_name) VALUES ('after')", &[])
        .await
        .expect("insert");
    sink.wait_for(before + 1, Duration::from_secs(5)).await;
    // Its outcome is written just after the response.
    wait_until(
        "every row recorded sent",
        Duration::from_secs(5),
        || async {
            (db.count("SELECT count(*) FROM webhook_queue WHERE status <> 'sent'")
                .await
                == 0)
                .then_some(())
        },
    )
    .await;
    assert!(relay.is_running());
    relay.terminate(Duration::from_secs(15)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_crash_mid_stream_loses_no_committed_event_and_resends_keep_their_webhook_id() {
    let cluster = PrivateCluster::start().expect("private cluster");
    let db = TestDb::migrated_on(&cluster.server()).await;
    let sink = Sink::start().await;
    let mut relay = RelayBuilder::new(&db.url, &sink.url())
        .env("RELAY_DATABASE__CONNECT_TIMEOUT_SECONDS", 2)
        .env("RELAY_QUEUE__LEASE_SECONDS", 6)
        .spawn();
    let writers = Writers::spawn(
        &db.url,
        WriterPlan {
            writers: 3,
            each: 400,
            pace: Duration::from_millis(5),
            ride_out_outages: true,
        },
    );
    sink.wait_for(200, T).await;

    // No checkpoint, no goodbye: what was not flushed to the WAL is gone, as in a
    // server crash (the relay's own route and claim commit asynchronously).
    cluster.stop(StopMode::Immediate).expect("crash postgres");
    cluster.start_again().expect("start postgres");
    let resumed = marker_latency(&db.url, &sink).await;
    eprintln!("first event after the crash delivered in {resumed:?}");
    writers.finish(T).await;

    let n = wait_all_delivered(&db.url, &sink).await;
    assert!(n >= 600, "the writers committed most leads: {n}");
    wait_until("every queue row sent", T, || async {
        let left = db
            .count("SELECT count(*) FROM webhook_queue WHERE status <> 'sent'")
            .await;
        (left == 0).then_some(())
    })
    .await;
    // A re-send after the crash is the same webhook: same id, same body.
    let dups = sink.duplicates();
    eprintln!(
        "{} webhooks sent more than once after the crash",
        dups.len()
    );
    let ids = sink.distinct_ids().len() as i64;
    assert_eq!(
        ids,
        db.count("SELECT count(*) FROM webhook_queue").await,
        "one X-Webhook-Id per queue row, whether or not its routing survived the crash"
    );
    assert!(
        relay.is_running(),
        "a crash of Postgres never ends the relay"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_failover_to_the_promoted_replica_every_event_committed_on_it_is_delivered() {
    let primary = PrivateCluster::start().expect("primary");
    let db = TestDb::migrated_on(&primary.server()).await;
    let replica = primary.replica().expect("streaming replica");
    let url = format!(
        "postgres://postgres@127.0.0.1:{},127.0.0.1:{}/{}?target_session_attrs=read-write",
        primary.port(),
        replica.port(),
        db.name
    );
    let new_primary_url = format!(
        "postgres://postgres@127.0.0.1:{}/{}",
        replica.port(),
        db.name
    );
    let sink = Sink::start().await;
    let mut relay = RelayBuilder::new(&url, &sink.url())
        .env("RELAY_DATABASE__CONNECT_TIMEOUT_SECONDS", 2)
        .env("WEBHOOK_QUEUE_PROCESSING_INTERVAL", 60)
        .spawn();
    // The writers use the same multi-host URL, as the application would.
    let writers = Writers::spawn(
        &url,
        WriterPlan {
            writers: 3,
            each: 300,
            pace: Duration::from_millis(10),
            ride_out_outages: true,
        },
    );
    sink.wait_for(150, T).await;

    primary.stop(StopMode::Fast).expect("stop the primary");
    replica.promote().expect("promote the replica");
    let resumed = marker_latency(&new_primary_url, &sink).await;
    eprintln!("first event on the new primary delivered in {resumed:?}");
    writers.finish(T).await;

    let n = wait_all_delivered(&new_primary_url, &sink).await;
    assert!(n >= 450, "leads committed across the failover: {n}");
    let after: i64 = {
        let (client, conn) = tokio_postgres::connect(&new_primary_url, tokio_postgres::NoTls)
            .await
            .expect("connect to the new primary");
        tokio::spawn(conn);
        client
            .query_one(
                "SELECT count(*) FROM webhook_queue WHERE status <> 'sent'",
                &[],
            )
            .await
            .expect("queue")
            .get(0)
    };
    assert_eq!(after, 0, "every row on the new primary ends sent");
    assert!(
        resumed < Duration::from_secs(15),
        "an event committed on the new primary took {resumed:?}"
    );
    assert!(relay.is_running(), "a failover never ends the relay");
    relay.terminate(Duration::from_secs(15)).await;
}
