//! The relay's bookkeeping (routing, claiming, recording outcomes) commits without
//! waiting for the WAL to reach the disk: every one of those statements sits between a
//! business commit and its delivery, or holds a delivery slot, and a disk sync each
//! would pace the relay at the disk's rate. Nothing is lost by it (the claim and
//! outcome modules say why). `pg_stat_wal.wal_sync` counts the syncs; this file holds
//! one test so nothing else in its process writes WAL meanwhile.

use relay_tests::TestDb;
use tokio_postgres::types::ToSql;
use tokio_postgres::Client;

const STATEMENTS: i64 = 100;
/// Syncs the WAL writer may do on its own while the statements run (it wakes every
/// 200 ms); a statement that commits synchronously adds one each, 100 in all.
const BACKGROUND_SYNCS: i64 = 20;

async fn wal_syncs(client: &Client) -> i64 {
    // This session's own counters reach pg_stat_wal when it next goes idle.
    client
        .batch_execute("SELECT pg_stat_force_next_flush()")
        .await
        .expect("flush statistics");
    client
        .query_one("SELECT wal_sync FROM pg_stat_wal", &[])
        .await
        .expect("pg_stat_wal")
        .get(0)
}

/// WAL syncs while route or due-claim statement `sql`, prepared and run as the relay
/// runs it (in a transaction of its own that keeps its plan), runs `STATEMENTS` times
/// with `params`.
async fn syncs_repeating(client: &Client, sql: &str, params: &[&(dyn ToSql + Sync)]) -> i64 {
    let statement = client.prepare(sql).await.expect("prepare");
    let before = wal_syncs(client).await;
    for _ in 0..STATEMENTS {
        relay_daemon::claim::query_planned_once(client, &statement, params)
            .await
            .expect("statement");
    }
    wal_syncs(client).await - before
}

/// `STATEMENTS` events in the outbox, one per entity.
async fn fill_outbox(client: &Client) {
    client
        .execute(
            "INSERT INTO webhook_events (event_type, entity_type, entity_id, payload)
             SELECT 'lead_created', 'lead', g, '{}' FROM generate_series(1, $1::int8) g",
            &[&STATEMENTS],
        )
        .await
        .expect("fill the outbox");
}

/// WAL syncs while route statement `sql` routes a fresh outbox of `STATEMENTS` events,
/// one per statement; every event must leave the outbox.
async fn syncs_routing_the_outbox(
    db: &TestDb,
    client: &Client,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> i64 {
    fill_outbox(client).await;
    let syncs = syncs_repeating(client, sql, params).await;
    assert_eq!(
        db.count("SELECT count(*) FROM webhook_events").await,
        0,
        "every event routed"
    );
    syncs
}

#[tokio::test]
async fn routing_claiming_and_recording_outcomes_never_wait_for_a_disk_sync() {
    let db = TestDb::migrated().await;
    let client = db.client().await;
    let urls: Vec<String> = vec!["http://127.0.0.1:9/hook".into()];
    let events: Vec<String> = vec!["lead_created".into()];
    let none: Vec<String> = Vec::new();
    let no_load: Vec<i32> = Vec::new();

    // A queue with a day's delivered rows, as the planner will see it in production.
    client
        .execute(
            "INSERT INTO webhook_queue (webhook_id, event_id, event_type, entity_type,
                                        entity_id, webhook_url, payload, status, max_retries)
             SELECT md5(g::text)::uuid, -g, 'lead_created', 'lead', g, $1, '{}', 'sent', 3
             FROM generate_series(1, 20000) g",
            &[&urls[0]],
        )
        .await
        .expect("delivered rows");
    client
        .batch_execute("VACUUM ANALYZE webhook_queue")
        .await
        .expect("analyze");

    // Route one event per statement, each claimed at once.
    fill_outbox(&client).await;
    let routing = syncs_repeating(
        &client,
        relay_daemon::claim::ROUTE_AND_CLAIM_FIRST.as_str(),
        &[
            &events,
            &urls,
            &vec![0i32],
            &vec![true],
            &none,
            &no_load,
            &1i64,
            &64i32,
            &1i64,
            &vec![3i32],
            &30f64,
            &vec![None::<String>],
            &vec![None::<String>],
            &7i32,
        ],
    )
    .await;

    // Record each claimed row's outcome, one per statement.
    let claimed: Vec<(i64, i64)> = client
        .query(
            "SELECT id, (extract(epoch FROM lease_expires_at) * 1000000)::int8
             FROM webhook_queue WHERE status = 'sending' ORDER BY id",
            &[],
        )
        .await
        .expect("claimed rows")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        claimed.len() as i64,
        STATEMENTS,
        "every event routed and claimed"
    );
    let record = client
        .prepare(relay_daemon::outcome::RECORD)
        .await
        .expect("prepare record");
    let before = wal_syncs(&client).await;
    for (id, token) in &claimed {
        let row = client
            .query_one(
                &record,
                &[
                    &vec![*id],
                    &vec![*token],
                    &vec!["sent"],
                    &vec![0i32],
                    &vec![0f64],
                    &vec![None::<String>],
                    &vec![Some(200i32)],
                    &vec![1i32],
                    &vec![3i32],
                    &vec![None::<String>],
                    &vec!["lead_created"],
                    &vec![urls[0].as_str()],
                    &vec![None::<String>],
                ],
            )
            .await
            .expect("record");
        let stale: Vec<i64> = row.get(0);
        assert!(stale.is_empty(), "row {id} was ours: {stale:?}");
    }
    let recording = wal_syncs(&client).await - before;

    // Claim due rows one per statement.
    client
        .execute(
            "UPDATE webhook_queue SET status = 'pending', lease_expires_at = NULL
             WHERE event_id > 0",
            &[],
        )
        .await
        .expect("back to pending");
    let claiming = syncs_repeating(
        &client,
        relay_daemon::claim::CLAIM_DUE,
        &[
            &1i64, &none, &none, &no_load, &64i32, &30f64, &events, &7i32,
        ],
    )
    .await;
    assert_eq!(
        db.count("SELECT count(*) FROM webhook_queue WHERE status = 'sending'")
            .await,
        STATEMENTS,
        "every due row claimed"
    );

    // The lean route (every row claimed at once), one event per statement.
    let lean_routing = syncs_routing_the_outbox(
        &db,
        &client,
        relay_daemon::claim::ROUTE_ALL_CLAIMED_FIRST.as_str(),
        &[
            &events,
            &urls,
            &vec![0i32],
            &vec![3i32],
            &1i64,
            &30f64,
            &7i32,
        ],
    )
    .await;

    // Ordered routes with room, one event per statement.
    let ordered_routing = syncs_routing_the_outbox(
        &db,
        &client,
        relay_daemon::claim::ROUTE_ORDERED_WITH_ROOM_FIRST.as_str(),
        &[
            &events,
            &urls,
            &vec![0i32],
            &vec![3i32],
            &vec![Some("skip")],
            &vec![None::<String>],
            &1i64,
            &30f64,
            &7i32,
        ],
    )
    .await;

    for (what, syncs) in [
        ("routing", routing),
        ("routing ordered events with room", ordered_routing),
        ("routing, every row claimed", lean_routing),
        ("recording outcomes", recording),
        ("claiming due rows", claiming),
    ] {
        assert!(
            syncs < BACKGROUND_SYNCS,
            "{what}: {syncs} WAL syncs for {STATEMENTS} statements"
        );
    }
}
