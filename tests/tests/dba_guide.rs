//! sql/README.md's worked example (triggers on a table whose columns differ from the
//! reference tables) does what the guide says.

use relay_tests::TestDb;

const GUIDE: &str = include_str!("../../sql/README.md");
const MARKER: &str = "<!-- example: customers";

/// The first ```sql block after the example's marker.
fn customers_example() -> &'static str {
    let from = GUIDE
        .find(MARKER)
        .expect("the guide marks its customers example");
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
