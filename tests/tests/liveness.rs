//! A crashed relay's rows come back within seconds, not after `queue.lease_seconds`:
//! every session of a relay holds its marker (a shared advisory lock) and every row it
//! claims records it, so when a relay's last session is gone any relay puts its rows
//! back (crates/relay-daemon/src/liveness.rs). A relay that is alive but stalled keeps
//! its sessions, and its rows wait for the lease as before.
//!
//! The lease is 120 s here (the default), so nothing in these tests can be explained
//! by an expired lease except where a test sets it lower on purpose.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use relay_tests::{wait_until, Relay, RelayBuilder, Reply, Sink, TestDb};

/// What the issue promises: every row a dead relay held is delivered within this
/// time of its death (or of the next relay's start).
const RECOVERY: Duration = Duration::from_secs(5);
const T: Duration = Duration::from_secs(60);

/// The marker a relay logged at start (`relay started ... marker=N`).
async fn marker_of(relay: &Relay) -> i32 {
    wait_until("the relay logs its marker", T, || async {
        strip_ansi(&relay.log()).lines().find_map(|line| {
            let rest = line.split("marker=").nth(1)?;
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
    })
    .await
}

/// The log without its colours (`ESC [ ... m`).
fn strip_ansi(log: &str) -> String {
    let mut out = String::with_capacity(log.len());
    let mut chars = log.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Ids of the rows `sending` under `marker`.
async fn held_by(db: &TestDb, marker: i32) -> BTreeSet<i64> {
    db.client()
        .await
        .query(
            "SELECT id FROM webhook_queue WHERE status = 'sending' AND claimed_by = $1",
            &[&marker],
        )
        .await
        .expect("rows held by a relay")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// Waits until every row in `ids` is `sent`; how long that took from `since`.
async fn all_sent(db: &TestDb, ids: &BTreeSet<i64>, since: Instant) -> Duration {
    let ids: Vec<i64> = ids.iter().copied().collect();
    wait_until("the dead relay's rows delivered", T, || async {
        let left = db
            .client()
            .await
            .query_one(
                "SELECT count(*) FROM webhook_queue WHERE id = ANY ($1) AND status <> 'sent'",
                &[&ids],
            )
            .await
            .expect("count")
            .get::<_, i64>(0);
        (left == 0).then_some(())
    })
    .await;
    since.elapsed()
}

/// The history notes of rows in `ids`.
async fn notes(db: &TestDb, ids: &BTreeSet<i64>) -> Vec<String> {
    let ids: Vec<i64> = ids.iter().copied().collect();
    db.client()
        .await
        .query(
            "SELECT note FROM webhook_retry_history
             WHERE webhook_queue_id = ANY ($1) AND note LIKE 'returned to the queue%'",
            &[&ids],
        )
        .await
        .expect("history")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

async fn emit(db: &TestDb, n: i64) {
    db.client()
        .await
        .execute(
            "SELECT webhook_emit('lead_scraped', 'lead', i, '{}'::jsonb)
             FROM generate_series(1, $1::int8) i",
            &[&n],
        )
        .await
        .expect("webhook_emit");
}

fn relay(db: &TestDb, sink: &Sink) -> RelayBuilder {
    RelayBuilder::new(&db.url, &sink.url())
        .env("RELAY_QUEUE__LEASE_SECONDS", 120)
        .env("WEBHOOK_TIMEOUT_SECONDS", 30)
        .env("RELAY_QUEUE__WORKERS", 4)
}

#[tokio::test]
async fn rows_of_a_relay_killed_mid_drain_are_delivered_by_the_other_within_5_s() {
    let db = TestDb::migrated().await;
    // Slow enough that both relays always hold rows in flight.
    let sink = Sink::with(|_| Reply::ok().after(Duration::from_millis(40))).await;
    let builder = relay(&db, &sink);
    let mut doomed = builder.spawn();
    let survivor = builder.spawn();
    let doomed_marker = marker_of(&doomed).await;
    let survivor_marker = marker_of(&survivor).await;
    assert_ne!(doomed_marker, survivor_marker);
    emit(&db, 600).await;

    wait_until("both relays deliver", T, || async {
        (!held_by(&db, doomed_marker).await.is_empty()
            && !held_by(&db, survivor_marker).await.is_empty())
        .then_some(())
    })
    .await;
    doomed.kill9().await;
    let killed = Instant::now();
    // Nothing releases a row for GRACE (2 s), so this is what it held when it died.
    let orphans = held_by(&db, doomed_marker).await;
    assert!(!orphans.is_empty(), "the killed relay held rows");

    let took = all_sent(&db, &orphans, killed).await;
    eprintln!(
        "{} rows of the killed relay delivered {took:?} after the kill at {:?}",
        orphans.len(),
        std::time::SystemTime::now() - took
    );
    for l in strip_ansi(&survivor.log())
        .lines()
        .filter(|l| l.contains("gone"))
    {
        eprintln!("{l}");
    }
    assert!(
        took <= RECOVERY,
        "the killed relay's rows took {took:?} (lease: 120 s)"
    );
    let notes = notes(&db, &orphans).await;
    assert_eq!(notes.len(), orphans.len(), "one history note per row");
    assert!(
        notes
            .iter()
            .all(|n| n.contains(&format!("relay {doomed_marker}")) && n.contains("is gone")),
        "{notes:?}"
    );
    assert!(
        survivor
            .log()
            .contains("relays that are gone returned to pending"),
        "{}",
        survivor.log()
    );
    db.wait_for_queue_status("sent", 600, T).await;
}

#[tokio::test]
async fn a_relay_restarted_after_kill_9_delivers_the_rows_it_held_within_5_s_of_starting() {
    let db = TestDb::migrated().await;
    // The first attempt of every webhook hangs, so the relay dies holding them all.
    let sink = Sink::first_attempt(Reply::Hang).await;
    let mut relay = relay(&db, &sink).spawn();
    let before = marker_of(&relay).await;
    emit(&db, 8).await;
    sink.wait_for(4, T).await;
    // All eight: four in flight, four claimed ahead for the same workers.
    let orphans = wait_until("the relay holds every row", T, || async {
        let held = held_by(&db, before).await;
        (held.len() == 8).then_some(held)
    })
    .await;
    relay.kill9().await;
    // n8n is fine again: only the dead relay's rows are in question now.
    sink.set_behaviour(|_| Reply::ok());

    relay.restart();
    let started = Instant::now();
    let after = marker_of(&relay).await;
    assert_ne!(before, after, "a new process, a new marker");
    let took = all_sent(&db, &orphans, started).await;
    eprintln!("rows of the previous process delivered {took:?} after the restart");
    assert!(took <= RECOVERY, "took {took:?} (lease: 120 s)");
    db.wait_for_queue_status("sent", 8, T).await;
    // The four that were in flight again, as the same attempt: a relay that died is
    // not a failed attempt of the rows it held.
    let dups = sink.duplicates();
    assert_eq!(dups.len(), 4, "{dups:?}");
    for r in sink.requests().iter().filter(|r| r.nth_for_id == 2) {
        assert_eq!(
            r.header("x-webhook-attempt"),
            Some("1"),
            "{}",
            r.webhook_id()
        );
    }
}

#[tokio::test]
async fn a_stalled_relay_keeps_its_rows_until_its_lease_expires() {
    let db = TestDb::migrated().await;
    let lease = Duration::from_secs(8);
    let sink = Sink::first_attempt(Reply::Hang).await;
    let builder = relay(&db, &sink)
        .env("RELAY_QUEUE__LEASE_SECONDS", lease.as_secs())
        .env("WEBHOOK_TIMEOUT_SECONDS", 5);
    let stalled = builder.spawn();
    let marker = marker_of(&stalled).await;
    emit(&db, 4).await;
    sink.wait_for(4, T).await;
    let held = held_by(&db, marker).await;
    assert_eq!(held.len(), 4);
    let claimed_at = Instant::now();
    stalled.signal("STOP");
    let other = builder.spawn();
    marker_of(&other).await;

    // Its sessions are alive, so its rows are its own until the lease runs out: well
    // past the time a dead relay's rows take to come back.
    wait_until("the stalled relay's rows delivered", T, || async {
        (db.count("SELECT count(*) FROM webhook_queue WHERE status = 'sent'")
            .await
            == 4)
            .then_some(())
    })
    .await;
    let took = claimed_at.elapsed();
    stalled.signal("CONT");
    assert!(
        took >= lease - Duration::from_secs(1),
        "a stalled relay lost its rows after {took:?}, before its {lease:?} lease"
    );
    let notes = notes(&db, &held).await;
    assert!(
        !notes.is_empty() && notes.iter().all(|n| n.contains("lease expired")),
        "{notes:?}"
    );
}

/// A relay cut off from Postgres (a partition) stops starting deliveries, and after
/// 2 s another relay takes its rows back and delivers them. When the link returns, the
/// rows it had claimed but not started are no longer its own: it must give them back,
/// not send them a second time. Only what it had in flight at the cut may arrive twice.
#[tokio::test]
async fn a_relay_cut_off_from_postgres_does_not_send_the_rows_another_relay_took_back() {
    let db = TestDb::migrated().await;
    let sink = Sink::with(|_| Reply::ok().after(Duration::from_secs(3))).await;
    let proxy = relay_tests::proxy::Proxy::start(relay_tests::proxy::upstream_of(&db.url)).await;
    let cut_off = relay(&db, &sink)
        .env("DATABASE_URL", proxy.url_via(&db.url))
        .env("RUST_LOG", "info,relay_daemon::dispatcher=debug")
        .spawn();
    let marker = marker_of(&cut_off).await;
    emit(&db, 40).await;
    // Its four workers wait on n8n, and it holds more rows, claimed ahead.
    wait_until("the relay to hold rows it has not started", T, || async {
        (sink.count() >= 4 && held_by(&db, marker).await.len() > 4).then_some(())
    })
    .await;
    let other = relay(&db, &sink).spawn();
    marker_of(&other).await;

    let started_before_cut = sink.count();
    proxy.cut();
    sink.set_behaviour(|_| Reply::ok());
    db.wait_for_queue_status("sent", 40, T).await;
    proxy.restore();
    wait_until(
        "the reconnected relay to give back what it had claimed",
        T,
        || async {
            strip_ansi(&cut_off.log())
                .contains("claimed before this relay lost its database sessions")
                .then_some(())
        },
    )
    .await;

    assert_eq!(sink.distinct_ids().len(), 40);
    let twice = sink.count() - 40;
    assert!(
        twice <= started_before_cut,
        "{twice} deliveries arrived twice; only the {started_before_cut} started before the cut may"
    );
}
