//! Fault suite: the business write is never blocked. A listener that stops reading
//! holds Postgres's cluster-wide notification queue; once that queue is full every
//! NOTIFY, and so every business INSERT that sends one, fails. The wake-up protocol
//! (crates/relay-daemon/src/wakeup.rs) keeps notifications rare: writers notify only
//! while the relay is idle and armed, the first one disarms. So with the relay frozen
//! (SIGSTOP: its LISTEN connection stops draining) or slowed by n8n, a write burst
//! sends almost no notifications, `pg_notification_queue_usage()` stays near zero
//! and every INSERT commits.
//!
//! Each test runs a private cluster: the notification queue is shared by the whole
//! cluster, and a frozen listener must not hold up the shared server's.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use relay_tests::{PrivateCluster, RelayBuilder, Reply, Sink, TestDb, WriterPlan, Writers};
use tokio_postgres::AsyncMessage;

const T: Duration = Duration::from_secs(60);

/// A LISTEN connection of the test's own on the relay's channel, counting what writers
/// send. It drains promptly, so it never holds the queue itself.
async fn listen_and_count(url: &str) -> Arc<AtomicU64> {
    let (client, mut conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    let seen = Arc::new(AtomicU64::new(0));
    let counter = seen.clone();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let driver = async {
            loop {
                match std::future::poll_fn(|cx| conn.poll_message(cx)).await {
                    Some(Ok(AsyncMessage::Notification(_))) => {
                        counter.fetch_add(1, Ordering::SeqCst);
                    }
                    Some(Ok(_)) => {}
                    _ => break,
                }
            }
        };
        let listen = async {
            client
                .batch_execute("LISTEN n8n_relay")
                .await
                .expect("LISTEN");
            let _ = ready_tx.send(());
            std::future::pending::<()>().await;
        };
        tokio::select! {
            () = driver => {}
            () = listen => {}
        }
    });
    ready_rx.await.expect("listening");
    seen
}

/// The highest `pg_notification_queue_usage()` seen while `work` runs.
async fn peak_queue_usage<F: std::future::Future<Output = ()>>(url: &str, work: F) -> f64 {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);
    let sample = || async {
        client
            .query_one("SELECT pg_notification_queue_usage()", &[])
            .await
            .expect("queue usage")
            .get::<_, f64>(0)
    };
    let mut peak = sample().await;
    tokio::pin!(work);
    loop {
        tokio::select! {
            () = &mut work => break,
            () = tokio::time::sleep(Duration::from_millis(50)) => {
                peak = peak.max(sample().await);
            }
        }
    }
    peak.max(sample().await)
}

const BURST: WriterPlan = WriterPlan {
    writers: 8,
    each: 500,
    pace: Duration::ZERO,
    ride_out_outages: false,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_relay_frozen_a_write_burst_commits_every_insert_and_notifies_at_most_once_per_writer(
) {
    let cluster = PrivateCluster::start().expect("private cluster");
    let db = TestDb::migrated_on(&cluster.server()).await;
    let sink = Sink::start().await;
    let relay = RelayBuilder::new(&db.url, &sink.url()).spawn();
    db.wait_armed(T).await;
    relay.signal("STOP");
    let notifications = listen_and_count(&db.url).await;

    let writers = Writers::spawn(&db.url, BURST);
    let committed = writers.committed.clone();
    let peak = peak_queue_usage(&db.url, writers.finish(T)).await;
    let inserts = (BURST.writers * BURST.each) as u64;
    assert_eq!(
        committed.load(Ordering::SeqCst),
        inserts,
        "every INSERT commits"
    );
    assert_eq!(
        db.count("SELECT count(*) FROM webhook_events").await,
        inserts as i64
    );
    let sent = notifications.load(Ordering::SeqCst);
    eprintln!(
        "{inserts} inserts with the relay frozen: {sent} notifications, peak queue usage {peak}"
    );
    // The first writer to see the flag disarms it; writers that read it in the same
    // instant may notify too, at most one each.
    assert!(
        sent <= BURST.writers as u64,
        "{sent} notifications from {} writers",
        BURST.writers
    );
    assert!(peak < 0.0001, "notification queue usage peaked at {peak}");

    relay.signal("CONT");
    sink.wait_for_distinct(inserts as usize, T).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_n8n_slowing_the_relay_a_write_burst_sends_almost_no_notifications() {
    let cluster = PrivateCluster::start().expect("private cluster");
    let db = TestDb::migrated_on(&cluster.server()).await;
    let sink = Sink::with(|_| Reply::ok().after(Duration::from_millis(50))).await;
    let _relay = RelayBuilder::new(&db.url, &sink.url())
        .env("RELAY_QUEUE__WORKERS", 4)
        .spawn();
    db.wait_armed(T).await;
    let notifications = listen_and_count(&db.url).await;

    let writers = Writers::spawn(&db.url, BURST);
    let committed = writers.committed.clone();
    let peak = peak_queue_usage(&db.url, writers.finish(T)).await;
    let inserts = (BURST.writers * BURST.each) as u64;
    assert_eq!(
        committed.load(Ordering::SeqCst),
        inserts,
        "every INSERT commits"
    );
    let sent = notifications.load(Ordering::SeqCst);
    eprintln!("{inserts} inserts with a slow n8n: {sent} notifications, peak queue usage {peak}");
    assert!(
        sent * 100 <= inserts,
        "a busy relay leaves the wake-up disarmed: {sent} notifications for {inserts} inserts"
    );
    assert!(peak < 0.0001, "notification queue usage peaked at {peak}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_healthy_relay_a_write_burst_notifies_for_few_of_its_inserts() {
    let cluster = PrivateCluster::start().expect("private cluster");
    let db = TestDb::migrated_on(&cluster.server()).await;
    let sink = Sink::start().await;
    let _relay = RelayBuilder::new(&db.url, &sink.url()).spawn();
    db.wait_armed(T).await;
    let notifications = listen_and_count(&db.url).await;

    let writers = Writers::spawn(&db.url, BURST);
    let committed = writers.committed.clone();
    let peak = peak_queue_usage(&db.url, writers.finish(T)).await;
    let inserts = (BURST.writers * BURST.each) as u64;
    assert_eq!(
        committed.load(Ordering::SeqCst),
        inserts,
        "every INSERT commits"
    );
    let sent = notifications.load(Ordering::SeqCst);
    eprintln!(
        "{inserts} inserts with a healthy relay: {sent} notifications, peak queue usage {peak}"
    );
    assert!(
        sent * 10 <= inserts,
        "{sent} notifications for {inserts} inserts"
    );
    assert!(peak < 0.0001, "notification queue usage peaked at {peak}");
    sink.wait_for_distinct(inserts as usize, T).await;
}

/// The wake-up protocol's steps 1 and 2 as the relay runs them (`wakeup::ARM`, then
/// `wakeup::WRITERS_IN_FLIGHT`): whether a writer that read the flag disarmed may still
/// commit an event.
async fn arm_and_check_writers(relay: &tokio_postgres::Client) -> bool {
    use relay_daemon::wakeup::{ARM, WRITERS_IN_FLIGHT};
    relay.query_one(ARM, &[]).await.expect("arming");
    relay
        .query_one(WRITERS_IN_FLIGHT, &[])
        .await
        .expect("the writers check")
        .get::<_, bool>(0)
}

/// The writers check (wakeup.rs, step 2), run as the relay runs it, after arming:
/// it sees a writer that read the flag disarmed and has not committed, and nothing
/// else: not a transaction that holds a transaction id but has not written to the
/// outbox (the check then reads `pg_locks`), nor a writer that has committed. Without
/// the arming first (a `setval` with a transaction id of its own, committed), a
/// running writer can be past the snapshot's horizon and missing from its list.
#[tokio::test]
async fn after_arming_the_writers_check_sees_an_uncommitted_outbox_writer_and_no_other() {
    let db = TestDb::migrated().await;
    let relay = db.client().await;
    let settle = || arm_and_check_writers(&relay);
    let disarm = "SELECT setval('webhook_relay_wakeup', 0)";
    assert!(!settle().await, "nobody writes");

    let mut other = db.client().await;
    let tx = other.transaction().await.expect("begin");
    tx.query_one("SELECT txid_current()", &[])
        .await
        .expect("a transaction id");
    relay.query_one(disarm, &[]).await.expect("disarm");
    assert!(
        !settle().await,
        "a transaction that holds an id but has not written to the outbox"
    );
    relay.query_one(disarm, &[]).await.expect("disarm");
    tx.execute("SELECT webhook_emit('lead_scraped', 'lead', 1, '{}')", &[])
        .await
        .expect("an outbox row, the flag read disarmed");
    assert!(
        settle().await,
        "a writer that read the flag disarmed and has not committed"
    );
    tx.commit().await.expect("commit");
    assert!(!settle().await, "the writer committed");
}

/// Two-phase commit: Postgres refuses `PREPARE TRANSACTION` in a transaction that sent
/// a NOTIFY, so a writer that found the wake-up armed could not prepare its business
/// write. A transaction that sets `n8n_relay.notify` to off writes its event without
/// notifying and without disarming the flag (the next writer still wakes the relay),
/// prepares and commits, and the relay delivers the event from its sweep.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_phase_writer_that_declines_the_notification_prepares_and_its_event_is_delivered() {
    let cluster = PrivateCluster::start().expect("private cluster");
    let db = TestDb::migrated_on(&cluster.server()).await;
    let sink = Sink::start().await;
    let _relay = RelayBuilder::new(&db.url, &sink.url())
        .env("WEBHOOK_QUEUE_PROCESSING_INTERVAL", 1)
        .spawn();
    db.wait_armed(T).await;
    let writer = db.client().await;
    let insert = "INSERT INTO leads (business_name) VALUES ($1)";

    // As a two-phase writer meets it without the setting: the trigger notified.
    writer.batch_execute("BEGIN").await.expect("begin");
    writer
        .execute(insert, &[&"prepared without the setting"])
        .await
        .expect("insert");
    let refused = writer
        .batch_execute("PREPARE TRANSACTION 'n8n_relay_test_a'")
        .await
        .expect_err("PREPARE after the trigger's NOTIFY");
    assert!(
        refused
            .as_db_error()
            .is_some_and(|e| e.message().contains("NOTIFY")),
        "{refused:?}"
    );
    // The refused PREPARE rolled the write back; the flag it took is armed again by
    // the relay's next settle (the sweep, every second here).
    db.wait_armed(T).await;

    // In the transaction, as behind a transaction-mode pooler; any spelling of off.
    writer
        .batch_execute("BEGIN; SET LOCAL n8n_relay.notify = 'False'")
        .await
        .expect("decline notifying");
    writer
        .execute(insert, &[&"prepared with the setting"])
        .await
        .expect("insert");
    let flag: i64 = writer
        .query_one("SELECT last_value::int8 FROM webhook_relay_wakeup", &[])
        .await
        .expect("the flag")
        .get(0);
    assert_eq!(flag, 1, "the writer left the wake-up armed");
    writer
        .batch_execute("PREPARE TRANSACTION 'n8n_relay_test_b'")
        .await
        .expect("PREPARE with notifications declined");
    writer
        .batch_execute("COMMIT PREPARED 'n8n_relay_test_b'")
        .await
        .expect("COMMIT PREPARED");
    assert!(
        db.wake_up_armed().await,
        "a writer that declined notifying leaves the flag armed for the next one"
    );

    let got = sink.wait_for_distinct(1, T).await;
    assert_eq!(
        got[0].json()["data"]["business_name"],
        "prepared with the setting"
    );
    db.wait_for_queue_status("sent", 1, T).await;
    assert_eq!(
        db.count("SELECT count(*) FROM webhook_queue").await,
        1,
        "the rolled-back write left no event"
    );
}

/// The writers check counts a writer that read the flag disarmed and then prepared its
/// transaction (two-phase commit, no NOTIFY sent, so PREPARE is allowed): its outbox
/// lock is held by no backend (`pid` NULL in `pg_locks`), and until COMMIT PREPARED its
/// event is invisible, so an idle relay must keep checking. `pid <> pg_backend_pid()`
/// left it out.
#[tokio::test]
async fn the_writers_check_sees_a_prepared_outbox_writer_until_it_commits() {
    let cluster = PrivateCluster::start().expect("private cluster");
    let db = TestDb::migrated_on(&cluster.server()).await;
    let relay = db.client().await;
    let settle = || arm_and_check_writers(&relay);
    let writer = db.client().await;
    writer.batch_execute("BEGIN").await.expect("begin");
    writer
        .execute("INSERT INTO leads (business_name) VALUES ('prepared')", &[])
        .await
        .expect("an outbox row, the flag read disarmed");
    writer
        .batch_execute("PREPARE TRANSACTION 'n8n_relay_test_writer'")
        .await
        .expect("prepare");
    assert!(
        settle().await,
        "a prepared writer that read the flag disarmed"
    );
    writer
        .batch_execute("COMMIT PREPARED 'n8n_relay_test_writer'")
        .await
        .expect("commit prepared");
    assert!(!settle().await, "the prepared writer committed");
    assert_eq!(db.count("SELECT count(*) FROM webhook_events").await, 1);
}
