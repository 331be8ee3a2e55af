//! sql/README.md's worked example (triggers on a table whose columns differ from the
//! reference tables) does what the guide says.

use relay_tests::TestDb;

const GUIDE: &str = include_str!("../../sql/README.md");
const MARKER: &str = "<!-- example: customers";

/// The first ```sql block after the customers example's marker.
fn customers_example() -> &'static str {
    example(MARKER)
}

/// The first ```sql block after `marker`.
fn example(marker: &str) -> &'static str {
    let from = GUIDE.find(marker).expect("the guide marks its example");
    let rest = &GUIDE[from..];
    let start = rest
        .find("```sql\n")
        .expect("an sql block after the marker")
        + 7;
    let len = rest[start..].find("```").expect("the block ends");
    &rest[start..start + len]
}

async fn events(db: &TestDb) -> Vec<(String, String, Option<i64>, serde_json::Value)> {
    db.client()
        .await
        .query(
            "SELECT event_type, entity_type, entity_id, payload FROM webhook_events ORDER BY id",
            &[],
        )
        .await
        .expect("events")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect()
}

#[tokio::test]
async fn the_guides_customers_example_emits_on_insert_and_on_the_state_transition_only() {
    let db = TestDb::migrated().await;
    let client = db.client().await;
    let example = customers_example();
    client
        .batch_execute(example)
        .await
        .expect("example installs");
    client
        .batch_execute(example)
        .await
        .expect("example runs again (idempotent)");

    let id: i64 = client
        .query_one(
            "INSERT INTO customers (company, email) VALUES ('Acme Inc', 'a@example.com')
             RETURNING customer_no",
            &[],
        )
        .await
        .expect("insert")
        .get(0);
    client
        .execute(
            "UPDATE customers SET email = 'b@example.com' WHERE customer_no = $1",
            &[&id],
        )
        .await
        .expect("unrelated update");
    client
        .execute(
            "UPDATE customers SET state = 'qualified' WHERE customer_no = $1",
            &[&id],
        )
        .await
        .expect("qualify");
    client
        .execute(
            "UPDATE customers SET state = 'qualified', email = 'c@example.com'
             WHERE customer_no = $1",
            &[&id],
        )
        .await
        .expect("same state again");

    let got = events(&db).await;
    let names: Vec<&str> = got.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(names, ["lead_scraped", "lead_qualified"], "{got:?}");
    let (_, entity_type, entity_id, data) = &got[1];
    assert_eq!(entity_type, "customer");
    assert_eq!(*entity_id, Some(id));
    assert_eq!(data["lead_id"], id);
    assert_eq!(data["business_name"], "Acme Inc");
    assert_eq!(data["state"], "qualified");
}

#[tokio::test]
async fn the_psql_install_without_the_example_tables_skips_their_triggers() {
    let db = TestDb::empty().await;
    let client = db.client().await;
    for script in relay_core::schema::SCRIPTS
        .iter()
        .filter(|s| !s.example_only)
    {
        client
            .batch_execute(script.sql)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", script.name));
    }
    let triggers = db
        .count("SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'webhook_%'")
        .await;
    assert_eq!(triggers, 0);
    let id: i64 = client
        .query_one("SELECT webhook_emit('lead_scraped', 'lead', 7, '{}')", &[])
        .await
        .expect("webhook_emit works without business tables")
        .get(0);
    assert!(id > 0);
}

/// "Coming from the older backend": its rows still waiting are sent again, failed ones
/// with retries left among them (that backend retried them), from a `json` payload
/// column as SQLAlchemy makes it (the recipe without a cast found no webhook_emit()).
#[tokio::test]
async fn the_guides_resend_recipe_emits_what_the_older_backend_still_had_waiting() {
    let db = TestDb::migrated().await;
    let client = db.client().await;
    client
        .batch_execute(
            "CREATE TABLE webhook_queue_old (id serial PRIMARY KEY, event_type text,
                 entity_type text, entity_id bigint, payload json, status text,
                 retry_count int, max_retries int);
             INSERT INTO webhook_queue_old (event_type, entity_type, entity_id, payload, status,
                                            retry_count, max_retries) VALUES
                 ('lead_scraped', 'lead', 1, '{\"lead_id\": 1}', 'pending', 0, 3),
                 ('lead_qualified', 'lead', 2, '{\"lead_id\": 2}', 'sending', 1, 3),
                 ('email_sent', 'lead', 3, '{\"lead_id\": 3}', 'failed', 2, 3),
                 ('email_failed', 'lead', 4, '{\"lead_id\": 4}', 'failed', 3, 3),
                 ('demo_completed', NULL, 5, '{\"demo_site_id\": 5}', 'sent', 0, 3);",
        )
        .await
        .expect("the older backend's queue, renamed");
    client
        .batch_execute(example("<!-- example: resend"))
        .await
        .expect("the guide's recipe runs");
    let sent_again: Vec<(String, Option<i64>)> = events(&db)
        .await
        .into_iter()
        .map(|(event, _, id, _)| (event, id))
        .collect();
    assert_eq!(
        sent_again,
        vec![
            ("lead_scraped".to_string(), Some(1)),
            ("lead_qualified".to_string(), Some(2)),
            ("email_sent".to_string(), Some(3)),
        ],
        "pending, sending, and failed with retries left; not the exhausted or the sent"
    );
}
