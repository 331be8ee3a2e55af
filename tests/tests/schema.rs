//! The install scripts: idempotent, and what the older system's SQL expects exists.

use relay_tests::TestDb;

#[tokio::test]
async fn migrate_twice_is_a_no_op_the_second_time() {
    let db = TestDb::migrated().await;
    let mut client = db.client().await;
    let again = relay_core::schema::migrate(&mut client, true)
        .await
        .expect("second migrate");
    assert!(again.iter().all(|a| !a.ran), "{again:?}");
}

#[tokio::test]
async fn unknown_event_type_is_refused_with_a_clear_error() {
    let db = TestDb::migrated().await;
    let client = db.client().await;
    let err = client
        .query_one("SELECT webhook_emit('lead_scrapped', 'lead', 1, '{}')", &[])
        .await
        .expect_err("must refuse");
    let text = err
        .as_db_error()
        .map(|e| e.message().to_string())
        .unwrap_or_default();
    assert!(
        text.contains("unknown event type \"lead_scrapped\""),
        "{text}"
    );
    assert_eq!(db.count("SELECT count(*) FROM webhook_events").await, 0);
}

#[tokio::test]
async fn triggers_never_block_writes_to_tables_missing_the_columns_they_read() {
    let db = TestDb::empty().await;
    let mut client = db.client().await;
    client
        .batch_execute(
            "CREATE TABLE leads (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, name text);
             CREATE TABLE videos (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY);",
        )
        .await
        .expect("own tables");
    relay_core::schema::migrate(&mut client, false)
        .await
        .expect("migrate next to own tables");
    client
        .batch_execute(
            "INSERT INTO leads (name) VALUES ('no status column');
             UPDATE leads SET name = 'still fine';
             INSERT INTO videos DEFAULT VALUES;",
        )
        .await
        .expect("business writes succeed");
    let row = client
        .query_one("SELECT event_type, entity_id FROM webhook_events", &[])
        .await
        .expect("one event");
    assert_eq!(row.get::<_, String>(0), "lead_scraped");
    assert_eq!(row.get::<_, Option<i64>>(1), Some(1));
}

#[tokio::test]
async fn a_table_without_an_id_column_still_records_its_events_with_a_null_id() {
    let db = TestDb::migrated().await;
    let client = db.client().await;
    client
        .batch_execute(
            "CREATE TABLE prospects (email text PRIMARY KEY, status text);
             CREATE TRIGGER prospects_emit AFTER INSERT ON prospects
                 FOR EACH ROW EXECUTE FUNCTION webhook_leads_emit();
             CREATE TABLE mockups (slug text PRIMARY KEY, status text);
             CREATE TRIGGER mockups_emit AFTER INSERT ON mockups
                 FOR EACH ROW EXECUTE FUNCTION webhook_asset_emit();
             INSERT INTO prospects VALUES ('a@example.com', 'new');
             INSERT INTO mockups VALUES ('landing', 'completed');",
        )
        .await
        .expect("business writes to tables keyed otherwise succeed");
    let rows = client
        .query(
            "SELECT event_type, entity_id, payload FROM webhook_events ORDER BY id",
            &[],
        )
        .await
        .expect("events");
    let events: Vec<(String, Option<i64>, serde_json::Value)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[0].0, "lead_scraped");
    assert_eq!(events[0].1, None);
    assert_eq!(events[0].2["email"], "a@example.com");
    let null = serde_json::Value::Null;
    assert_eq!(events[0].2.get("lead_id"), Some(&null), "{:?}", events[0].2);
    assert_eq!(events[1].0, "demo_completed");
    assert_eq!(events[1].1, None);
    assert_eq!(events[1].2["slug"], "landing");
    assert_eq!(
        events[1].2.get("demo_site_id"),
        Some(&null),
        "{:?}",
        events[1].2
    );
}
