//! The install scripts: idempotent, and what the older system's SQL expects exists.

use relay_tests::TestDb;

const T: std::time::Duration = std::time::Duration::from_secs(20);

#[tokio::test]
async fn migrate_twice_is_a_no_op_the_second_time() {
    let db = TestDb::migrated().await;
    let mut client = db.client().await;
    let again = relay_core::schema::migrate(&mut client, true)
        .await
        .expect("second migrate");
    use relay_core::schema::Outcome;
    assert!(
        again.iter().all(|a| a.outcome != Outcome::Applied),
        "{again:?}"
    );
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
             INSERT INTO mockups VALUES ('landing', 'completed');
             CREATE TABLE accounts (lead_id bigint PRIMARY KEY, status text);
             CREATE TRIGGER accounts_emit AFTER INSERT ON accounts
                 FOR EACH ROW EXECUTE FUNCTION webhook_leads_emit();
             INSERT INTO accounts VALUES (42, 'new');",
        )
        .await
        .expect("business writes to tables keyed otherwise succeed");
    let events = outbox(&client).await;
    assert_eq!(events.len(), 3, "{events:?}");
    // A table keyed on a lead_id of its own keeps it (it was overwritten with null).
    assert_eq!(events[2].2["lead_id"], 42, "{:?}", events[2].2);
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

/// The events' entity_id is the row's `id`: a table whose id is a uuid or text would
/// fail every business write the trigger fires for ("invalid input syntax for type
/// bigint"), so no trigger is attached to it, and its writes go through.
#[tokio::test]
async fn tables_whose_id_is_not_an_integer_get_no_trigger_and_keep_taking_writes() {
    let db = TestDb::empty().await;
    let mut client = db.client().await;
    client
        .batch_execute(
            "CREATE TABLE leads (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), status text);
             CREATE TABLE videos (id text PRIMARY KEY, status text);
             CREATE DOMAIN site_key AS bigint CHECK (VALUE > 0);
             CREATE TABLE demo_sites (id site_key PRIMARY KEY, status text);",
        )
        .await
        .expect("own tables");
    relay_core::schema::migrate(&mut client, false)
        .await
        .expect("migrate next to own tables");
    client
        .batch_execute(
            "INSERT INTO leads (status) VALUES ('qualified');
             INSERT INTO videos VALUES ('intro', 'completed');
             INSERT INTO demo_sites VALUES (7, 'completed');",
        )
        .await
        .expect("business writes succeed");
    // The tables left without a trigger on purpose are not taken for missing ones:
    // `migrate` does not run the script again at every start for them.
    let again = relay_core::schema::migrate(&mut client, false)
        .await
        .expect("migrate again");
    assert!(
        again
            .iter()
            .all(|a| a.outcome == relay_core::schema::Outcome::UpToDate),
        "{again:?}"
    );
    let attached: Vec<String> = client
        .query(
            "SELECT tgrelid::regclass::text FROM pg_trigger WHERE NOT tgisinternal ORDER BY 1",
            &[],
        )
        .await
        .expect("triggers")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        attached,
        ["demo_sites"],
        "only the table with an integer id (a domain over bigint)"
    );
    let events = outbox(&client).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].1, Some(7));

    // An id of numeric(12, 0), as tables moved over from Oracle have, is an integer.
    client
        .batch_execute(
            "DROP TABLE videos; CREATE TABLE videos (id numeric(12, 0) PRIMARY KEY, status text)",
        )
        .await
        .expect("videos keyed by numeric");
    relay_core::schema::migrate(&mut client, false)
        .await
        .expect("migrate attaches it");
    client
        .batch_execute("INSERT INTO videos VALUES (123456789012, 'completed')")
        .await
        .expect("a write to it");
    let events = outbox(&client).await;
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[1].1, Some(123_456_789_012));
}

/// The triggers' events, straight from the outbox: `(event_type, entity_id, payload)`
/// in the order written.
async fn outbox(client: &tokio_postgres::Client) -> Vec<(String, Option<i64>, serde_json::Value)> {
    client
        .query(
            "SELECT event_type, entity_id, payload FROM webhook_events ORDER BY id",
            &[],
        )
        .await
        .expect("events")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

#[tokio::test]
async fn updates_that_change_nothing_announced_write_no_event() {
    let db = TestDb::migrated().await;
    let client = db.client().await;
    client
        .batch_execute(
            "INSERT INTO leads (id, business_name) VALUES (1, 'Acme Inc');
             INSERT INTO demo_sites (id, lead_id) VALUES (10, 1);
             DELETE FROM webhook_events;
             SELECT setval('webhook_relay_wakeup', 1);
             UPDATE leads SET score = 0.5, business_name = 'Acme' WHERE id = 1;
             UPDATE leads SET status = 'contacted' WHERE id = 1;
             UPDATE leads SET outreach_status = 'queued' WHERE id = 1;
             UPDATE leads SET outreach_status = NULL WHERE id = 1;
             UPDATE leads SET outreach_subject = 'Hi' WHERE id = 1;
             UPDATE demo_sites SET status = 'deploying' WHERE id = 10;
             UPDATE demo_sites SET url = 'https://d.example' WHERE id = 10;",
        )
        .await
        .expect("business updates");
    assert_eq!(outbox(&client).await, vec![], "no event for these changes");
    // Nor did any of them take the wake-up an idle relay armed (and notify it).
    assert!(
        db.wake_up_armed().await,
        "a write that announces nothing left the wake-up armed"
    );

    // The same status again is no transition either.
    client
        .batch_execute(
            "UPDATE leads SET status = 'qualified' WHERE id = 1;
             UPDATE leads SET status = 'qualified', score = 0.9 WHERE id = 1;
             UPDATE demo_sites SET status = 'completed' WHERE id = 10;
             UPDATE demo_sites SET status = 'completed' WHERE id = 10;",
        )
        .await
        .expect("transitions");
    let events = outbox(&client).await;
    let names: Vec<&str> = events.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(names, ["lead_qualified", "demo_completed"]);
    assert_eq!(events[0].2["lead_id"], 1, "{:?}", events[0].2);
    assert_eq!(events[0].2["score"], 0.5, "the row as it was then");
    assert_eq!(events[1].2["demo_site_id"], 10, "{:?}", events[1].2);
}

#[tokio::test]
async fn a_lead_inserted_qualified_announces_both_events_with_its_id() {
    let db = TestDb::migrated().await;
    let client = db.client().await;
    client
        .batch_execute(
            "INSERT INTO leads (id, business_name, status) VALUES (7, 'Bolt LLC', 'qualified');
             INSERT INTO leads (id, business_name, status, outreach_status)
                 VALUES (8, 'Calm Co', 'responded', 'sent');",
        )
        .await
        .expect("business inserts");
    let events = outbox(&client).await;
    let got: Vec<(&str, Option<i64>)> = events.iter().map(|e| (e.0.as_str(), e.1)).collect();
    // An INSERT announces lead_scraped, and lead_qualified when it is; the other
    // statuses are transitions an UPDATE announces.
    assert_eq!(
        got,
        [
            ("lead_scraped", Some(7)),
            ("lead_qualified", Some(7)),
            ("lead_scraped", Some(8))
        ]
    );
    // Each payload is the row as JSON and its id again as lead_id, nothing else.
    for (_, id, payload) in &events {
        let row: serde_json::Value = client
            .query_one("SELECT to_jsonb(l) FROM leads l WHERE id = $1", &[id])
            .await
            .expect("the lead")
            .get(0);
        let mut expected = row.as_object().cloned().expect("an object");
        expected.insert("lead_id".into(), serde_json::json!(id));
        assert_eq!(payload, &serde_json::Value::Object(expected));
    }
}

/// Every object in the database's own schemas, as one sorted list: relations (with
/// their kind), functions (with their arguments), types, triggers, extensions. What an
/// uninstall must bring back to its state before the install.
async fn objects(client: &tokio_postgres::Client) -> Vec<String> {
    const OBJECTS: &str = "
        SELECT 'relation ' || c.oid::regclass::text || ' ' || c.relkind::text
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
          AND n.nspname NOT LIKE 'pg_temp%' AND n.nspname NOT LIKE 'pg_toast_temp%'
        UNION ALL
        SELECT 'function ' || p.oid::regprocedure::text
        FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
        UNION ALL
        SELECT 'type ' || t.oid::regtype::text
        FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
        WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
        UNION ALL
        SELECT 'trigger ' || tgname || ' on ' || tgrelid::regclass::text
        FROM pg_trigger WHERE NOT tgisinternal
        UNION ALL
        SELECT 'extension ' || extname FROM pg_extension
        ORDER BY 1";
    client
        .query(OBJECTS, &[])
        .await
        .expect("list the database's objects")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[tokio::test]
async fn uninstall_leaves_the_database_as_before_the_install_with_its_business_rows() {
    let db = TestDb::empty().await;
    let mut client = db.client().await;
    // The business tables exist first, with a row, as in a database the relay joins.
    let example = relay_core::schema::SCRIPTS
        .iter()
        .find(|s| s.example_only)
        .expect("the example tables script");
    client
        .batch_execute(example.sql)
        .await
        .expect("business tables");
    client
        .batch_execute("INSERT INTO leads (business_name) VALUES ('Before Install Ltd')")
        .await
        .expect("a business row");
    let before = objects(&client).await;

    relay_core::schema::migrate(&mut client, true)
        .await
        .expect("install");
    client
        .batch_execute("INSERT INTO leads (business_name) VALUES ('Installed Inc')")
        .await
        .expect("a business write through the triggers");
    assert_eq!(db.count("SELECT count(*) FROM webhook_events").await, 1);
    let installed = objects(&client).await;
    assert!(
        installed.len() > before.len() + 10,
        "the install added its tables and functions: {installed:?}"
    );

    // As a DBA runs it, and again: it is idempotent.
    for run in ["first", "second"] {
        client
            .batch_execute(relay_core::schema::UNINSTALL_SQL)
            .await
            .unwrap_or_else(|e| panic!("uninstall, {run} run: {e}"));
    }
    assert_eq!(
        objects(&client).await,
        before,
        "uninstall leaves exactly the objects that were there before the install"
    );
    // The business rows are untouched, and writes no longer need the relay's tables.
    client
        .batch_execute("INSERT INTO leads (business_name) VALUES ('After Uninstall plc')")
        .await
        .expect("a business write after the uninstall");
    assert_eq!(db.count("SELECT count(*) FROM leads").await, 3);

    // And the relay installs again over what is left.
    relay_core::schema::migrate(&mut client, true)
        .await
        .expect("install again after an uninstall");
    client
        .batch_execute("INSERT INTO leads (business_name) VALUES ('Reinstalled GmbH')")
        .await
        .expect("a business write through the reinstalled triggers");
    assert_eq!(db.count("SELECT count(*) FROM webhook_events").await, 1);
}

/// A client whose connection's notices are collected, returned once the client is
/// dropped (as psql prints them).
async fn noting_client(
    db: &TestDb,
) -> (tokio_postgres::Client, tokio::task::JoinHandle<Vec<String>>) {
    use futures_util::StreamExt;
    let (client, mut conn) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    let mut messages = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
    let notices = tokio::spawn(async move {
        let mut said = Vec::new();
        while let Some(Ok(message)) = messages.next().await {
            if let tokio_postgres::AsyncMessage::Notice(n) = message {
                said.push(n.message().to_string());
            }
        }
        said
    });
    (client, notices)
}

/// The trigger script, as `n8n-relay migrate` or psql runs it.
fn triggers_sql() -> &'static str {
    relay_core::schema::SCRIPTS
        .iter()
        .find(|s| s.name == "004_triggers.sql")
        .expect("the triggers script")
        .sql
}

/// The trigger script, its session waiting at most a second for any lock.
async fn rerun_waiting_at_most_a_second(
    installer: &tokio_postgres::Client,
) -> Result<(), tokio_postgres::Error> {
    installer.batch_execute("SET lock_timeout = '1s'").await?;
    installer.batch_execute(triggers_sql()).await
}

async fn trigger_states(client: &tokio_postgres::Client) -> Vec<(String, String)> {
    client
        .query(
            "SELECT tgname::text, tgenabled::text FROM pg_trigger WHERE NOT tgisinternal ORDER BY 1",
            &[],
        )
        .await
        .expect("triggers")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

#[tokio::test]
async fn reinstalling_the_triggers_waits_for_no_business_transaction() {
    let db = TestDb::migrated().await;
    // A business transaction in progress on leads: it wrote (RowExclusiveLock) and read.
    let mut writer = db.client().await;
    let tx = writer.transaction().await.expect("begin");
    tx.batch_execute(
        "INSERT INTO leads (business_name) VALUES ('Open Tx Ltd'); SELECT count(*) FROM leads;",
    )
    .await
    .expect("business write in progress");
    // An upgrade re-runs the script: with the triggers attached as it would attach
    // them, it takes no lock on leads (DROP TRIGGER used to wait here, blocking every
    // reader and writer queued behind it).
    let installer = db.client().await;
    rerun_waiting_at_most_a_second(&installer)
        .await
        .expect("the script re-runs beside an open business transaction");
    tx.commit().await.expect("the business write commits");
    assert_eq!(db.count("SELECT count(*) FROM webhook_events").await, 1);

    // A trigger a DBA disabled is attached again, as before, when nothing holds the
    // table, and the script says so (it did so without a word).
    installer
        .batch_execute("ALTER TABLE leads DISABLE TRIGGER webhook_leads_update")
        .await
        .expect("disable");
    let (noting, notices) = noting_client(&db).await;
    noting.batch_execute(triggers_sql()).await.expect("re-run");
    drop(noting);
    let said = notices.await.expect("notices").join("\n");
    assert!(
        said.contains("trigger webhook_leads_update on leads was disabled; it is enabled again"),
        "{said}"
    );
    assert!(
        trigger_states(&installer)
            .await
            .iter()
            .all(|(_, enabled)| enabled == "O"),
        "{:?}",
        trigger_states(&installer).await
    );
}

#[tokio::test]
async fn attaching_a_trigger_behind_a_business_transaction_gives_up_after_a_bounded_wait_and_changes_nothing(
) {
    let db = TestDb::migrated().await;
    let installer = db.client().await;
    installer
        .batch_execute("DROP TRIGGER webhook_leads_update ON leads")
        .await
        .expect("a trigger to attach");
    // Attaching a missing trigger lets readers through: no DROP TRIGGER (which locks
    // out reads even with nothing to drop), only CREATE TRIGGER.
    let mut reader = db.client().await;
    let read = reader.transaction().await.expect("begin");
    read.batch_execute("SELECT count(*) FROM leads")
        .await
        .expect("a long read in progress");
    rerun_waiting_at_most_a_second(&installer)
        .await
        .expect("attached beside an open read");
    read.commit().await.expect("the read ends");
    installer
        .batch_execute("RESET lock_timeout; DROP TRIGGER webhook_leads_update ON leads")
        .await
        .expect("detach it again");
    let before = trigger_states(&installer).await;
    let mut writer = db.client().await;
    let tx = writer.transaction().await.expect("begin");
    tx.batch_execute("INSERT INTO leads (business_name) VALUES ('Long Tx Ltd')")
        .await
        .expect("business write in progress");
    // No lock_timeout of the session's own: the script's (5 s) bounds the wait.
    let err = installer
        .batch_execute(triggers_sql())
        .await
        .expect_err("the table is held");
    let db_err = err.as_db_error().expect("a database error");
    assert_eq!(db_err.code().code(), "55P03", "{db_err:?}");
    assert!(
        db_err.message().contains("could not lock table leads")
            && db_err.message().contains("webhook_leads_update"),
        "{}",
        db_err.message()
    );
    assert_eq!(trigger_states(&installer).await, before, "nothing changed");
    tx.commit()
        .await
        .expect("the business write commits meanwhile");
    installer
        .batch_execute(triggers_sql())
        .await
        .expect("once it ends, the script attaches the trigger");
    assert_eq!(trigger_states(&installer).await.len(), before.len() + 1);
}

/// Two triggers to attach, each table behind a business transaction: the first ends
/// after 2 s, the second never. With a lock_timeout for each lock, the first table was
/// held (its writes queued) through both waits, 2 s and then the whole timeout again;
/// the script's `lock_timeout` is for all of its locks together.
#[tokio::test]
async fn attaching_several_triggers_waits_at_most_one_lock_timeout_in_all() {
    let db = TestDb::migrated().await;
    let installer = db.client().await;
    installer
        .batch_execute(
            "DROP TRIGGER webhook_demo_sites_change ON demo_sites;
             DROP TRIGGER webhook_videos_change ON videos",
        )
        .await
        .expect("two triggers to attach");
    let mut briefly = db.client().await;
    let brief = briefly.transaction().await.expect("begin");
    brief
        .batch_execute("LOCK TABLE demo_sites IN ROW EXCLUSIVE MODE")
        .await
        .expect("a business write to demo_sites in progress");
    let mut long = db.client().await;
    let held = long.transaction().await.expect("begin");
    held.batch_execute("LOCK TABLE videos IN ROW EXCLUSIVE MODE")
        .await
        .expect("a long business write to videos");
    let started = std::time::Instant::now();
    let (attached, ()) = tokio::join!(
        async {
            installer
                .batch_execute(&format!("SET lock_timeout = '3s'; {}", triggers_sql()))
                .await
        },
        async {
            // The brief transaction's own length: the scene, not a wait for a state.
            tokio::time::sleep(std::time::Duration::from_secs(2)).await;
            brief.rollback().await.expect("the brief write ends");
        }
    );
    let took = started.elapsed();
    let err = attached.expect_err("videos stays held");
    assert_eq!(
        err.as_db_error().map(|e| e.code().code()),
        Some("55P03"),
        "{err}"
    );
    assert!(
        took < std::time::Duration::from_millis(4_500),
        "gave up after {took:?}: 2 s for demo_sites and 3 s more for videos, past the 3 s lock_timeout"
    );
    held.rollback().await.expect("the long write ends");
}

/// How many of the relay's triggers are attached.
async fn webhook_triggers(db: &TestDb) -> i64 {
    db.count("SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'webhook_%'")
        .await
}

/// The relay migrated (with the example tables) into a schema of its own, `relay`, as
/// sql/README shows; the installer's session, its search_path `relay, public`.
async fn installed_in_schema_relay(db: &TestDb) -> tokio_postgres::Client {
    let mut installer = db.client().await;
    installer
        .batch_execute("CREATE SCHEMA relay; SET search_path = relay, public")
        .await
        .expect("a schema for the relay");
    relay_core::schema::migrate(&mut installer, true)
        .await
        .expect("install into the relay schema");
    installer
}

/// A DBA may keep the relay's objects in a schema of their own (installed with that
/// schema first in the search_path). The functions that write the outbox must find it
/// there, whatever the search_path of the business session that fires them.
#[tokio::test]
async fn a_relay_installed_in_a_schema_of_its_own_records_writes_from_any_search_path() {
    let db = TestDb::empty().await;
    let _installer = installed_in_schema_relay(&db).await;

    // A business session that knows nothing of that schema but the table's name.
    let app = db.client().await;
    app.batch_execute("SET search_path = public")
        .await
        .expect("search_path");
    app.execute(
        "INSERT INTO relay.leads (business_name, status) VALUES ('Acme Inc', 'qualified')",
        &[],
    )
    .await
    .expect("a business write fires the triggers installed in the relay schema");
    app.execute(
        "UPDATE relay.demo_sites SET status = 'completed' WHERE false",
        &[],
    )
    .await
    .expect("demo_sites too");
    app.query_one(
        "SELECT relay.webhook_emit('workflow_error', 'workflow', NULL, '{}')",
        &[],
    )
    .await
    .expect("webhook_emit from another search_path");
    assert_eq!(
        db.count("SELECT count(*) FROM relay.webhook_events").await,
        3,
        "lead_scraped, lead_qualified and workflow_error in the relay schema's outbox"
    );
}

/// `sql` as psql sends it without `-1`: one statement at a time, each ending with a `;`
/// at the end of a line outside `$$` quotes (comment lines between them dropped).
fn statements(sql: &str) -> Vec<String> {
    let (mut out, mut current, mut quoted) = (Vec::new(), String::new(), false);
    for line in sql.lines() {
        if !quoted && current.trim().is_empty() && line.trim_start().starts_with("--") {
            continue;
        }
        current.push_str(line);
        current.push('\n');
        if line.matches("$$").count() % 2 == 1 {
            quoted = !quoted;
        }
        if !quoted && line.trim_end().ends_with(';') {
            out.push(std::mem::take(&mut current));
        }
    }
    assert!(
        current.trim().is_empty(),
        "a statement without its end: {current}"
    );
    out
}

/// An upgrade run with psql but without `-1`, in a schema of the relay's own, while
/// business writes go on: after every single statement of the scripts that replace the
/// functions, a business write and a webhook_emit() call from another search_path still
/// find the outbox. (The functions were replaced naming `public` and pointed at their
/// schema by the statement after: a write in between failed.)
#[tokio::test]
async fn an_upgrade_without_single_transaction_in_a_schema_of_its_own_never_fails_a_business_write()
{
    let db = TestDb::empty().await;
    let installer = installed_in_schema_relay(&db).await;
    let app = db.client().await;
    app.batch_execute("SET search_path = public")
        .await
        .expect("search_path");
    let mut writes = 0;
    for name in ["002_webhook_emit.sql", "004_triggers.sql"] {
        let script = relay_core::schema::SCRIPTS
            .iter()
            .find(|s| s.name == name)
            .expect("script");
        for statement in statements(script.sql) {
            installer
                .batch_execute(&statement)
                .await
                .unwrap_or_else(|e| panic!("{name}: {statement}: {e:?}"));
            app.execute(
                "INSERT INTO relay.leads (business_name) VALUES ('Acme Inc')",
                &[],
            )
            .await
            .unwrap_or_else(|e| panic!("a business write after {statement}: {e:?}"));
            app.query_one(
                "SELECT relay.webhook_emit('workflow_error', 'workflow', NULL, '{}')",
                &[],
            )
            .await
            .unwrap_or_else(|e| panic!("webhook_emit after {statement}: {e:?}"));
            writes += 2;
        }
    }
    assert_eq!(
        db.count("SELECT count(*) FROM relay.webhook_events").await,
        writes,
        "every write's event is in the relay schema's outbox"
    );
    let path: String = installer
        .query_one("SHOW search_path", &[])
        .await
        .expect("search_path")
        .get(0);
    assert_eq!(
        path, "relay, public",
        "the installer's search_path is put back"
    );
}

/// Behind a connection pooler, the statement that sets the installer's search_path
/// and the `CREATE OR REPLACE` after it may run in different sessions: the function
/// then took that session's path (pg_temp first, where a caller's temporary table
/// could stand in for the outbox). The script gives each its fixed path after all.
#[tokio::test]
async fn a_function_replaced_in_another_session_than_its_path_still_gets_its_fixed_path() {
    let db = TestDb::empty().await;
    let _installer = installed_in_schema_relay(&db).await;
    let other = db.client().await;
    other
        .batch_execute("SET search_path = relay, public")
        .await
        .expect("a session the pooler picked");
    for name in ["002_webhook_emit.sql", "004_triggers.sql"] {
        let script = relay_core::schema::SCRIPTS
            .iter()
            .find(|s| s.name == name)
            .expect("script");
        for statement in statements(script.sql)
            .iter()
            .filter(|s| !s.contains("set_config('n8n_relay.installer_search_path'"))
        {
            other
                .batch_execute(statement)
                .await
                .unwrap_or_else(|e| panic!("{name}: {statement}: {e:?}"));
        }
    }
    let configs: Vec<String> = other
        .query(
            "SELECT array_to_string(proconfig, ';') FROM pg_proc
             WHERE proname IN ('webhook_emit', 'webhook_leads_emit', 'webhook_asset_emit')",
            &[],
        )
        .await
        .expect("proconfig")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(configs, ["search_path=relay, pg_temp"; 3]);
}

/// Uninstall run without the install's search_path found nothing to remove where it
/// looked: it took the relay's own trigger functions for functions of the user's, and
/// with the override it dropped the triggers only. It says where the relay is and
/// removes nothing; with the search_path, everything goes.
#[tokio::test]
async fn uninstall_without_the_installs_search_path_names_the_schema_and_removes_nothing() {
    let db = TestDb::empty().await;
    let installer = installed_in_schema_relay(&db).await;
    let elsewhere = db.client().await;
    // Even with the override for a false alarm, which it had needed.
    elsewhere
        .batch_execute("SET n8n_relay.uninstall_anyway = on; SET search_path = public")
        .await
        .expect("settings");
    let refused = elsewhere
        .batch_execute(relay_core::schema::UNINSTALL_SQL)
        .await
        .expect_err("refused");
    let said = refused.as_db_error().map(|e| e.message().to_string());
    assert!(
        said.as_deref().is_some_and(|m| m.contains("schema relay")),
        "{refused:?}"
    );
    assert_eq!(webhook_triggers(&db).await, 4, "no trigger was removed");
    installer
        .batch_execute(relay_core::schema::UNINSTALL_SQL)
        .await
        .expect("with the install's search_path");
    assert_eq!(
        db.count("SELECT count(*) FROM pg_class WHERE relname LIKE 'webhook%'")
            .await,
        0
    );
}

/// `migrate` before the business tables exist, then again after: the second run
/// attaches the triggers (the scripts' checksums have not changed), and the first one
/// says which tables it found no trigger for.
#[tokio::test]
async fn migrate_attaches_the_triggers_to_tables_created_after_the_first_run() {
    let db = TestDb::empty().await;
    let sink = relay_tests::Sink::start().await;
    let migrate = relay_tests::RelayBuilder::new(&db.url, &sink.url()).args(["migrate"]);
    let first = migrate.output().await;
    assert!(first.status.success(), "{first:?}");
    let said = String::from_utf8_lossy(&first.stderr);
    assert!(
        said.contains("note: n8n-relay: table leads not found"),
        "migrate says which tables got no trigger: {said}"
    );
    assert!(
        !said.contains("already exists"),
        "Postgres's own notices stay out: {said}"
    );

    let client = db.client().await;
    client
        .batch_execute(include_str!("../../sql/003_example_tables.sql"))
        .await
        .expect("the business tables, created after the relay's");
    let second = migrate.output().await;
    assert!(second.status.success(), "{second:?}");
    assert!(
        String::from_utf8_lossy(&second.stdout)
            .contains("004_triggers.sql           run again: a table had no trigger"),
        "{second:?}"
    );
    client
        .execute("INSERT INTO leads (business_name) VALUES ('Acme Inc')", &[])
        .await
        .expect("a lead");
    assert_eq!(
        db.count("SELECT count(*) FROM webhook_events WHERE event_type = 'lead_scraped'")
            .await,
        1,
        "the lead's trigger was attached by the second migrate"
    );

    // A trigger the DBA disabled on purpose stays so: with every trigger there, an
    // unchanged script is not run again.
    client
        .batch_execute("ALTER TABLE leads DISABLE TRIGGER webhook_leads_insert")
        .await
        .expect("disable");
    let third = migrate.output().await;
    assert!(
        String::from_utf8_lossy(&third.stdout).contains("004_triggers.sql           up to date\n"),
        "{third:?}"
    );
    assert_eq!(
        db.count("SELECT count(*) FROM pg_trigger WHERE tgname = 'webhook_leads_insert' AND tgenabled = 'D'")
            .await,
        1
    );
}

/// Runs `sql`, which must stop with lock_not_available (55P03) by its own lock timeout,
/// well before 30 s, instead of waiting for the lock `what` is held behind.
async fn gives_up_within_its_lock_timeout(client: &tokio_postgres::Client, sql: &str, what: &str) {
    let ran = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        client.batch_execute(sql),
    )
    .await
    .unwrap_or_else(|_| panic!("{what}: gave up waiting for the lock, not by its timeout"));
    let err = ran.expect_err(what);
    assert_eq!(
        err.as_db_error().map(|e| e.code().code()),
        Some("55P03"),
        "{what}: {err}"
    );
}

/// The session's lock_timeout, as SHOW gives it.
async fn lock_timeout(client: &tokio_postgres::Client) -> String {
    client
        .query_one("SHOW lock_timeout", &[])
        .await
        .expect("lock_timeout")
        .get(0)
}

/// Upgrading from a release that indexed unrouted events drops that index, which locks
/// the outbox. Behind a business transaction that holds it, the script must give up
/// within its lock timeout: waiting, it would queue every business write behind it.
/// The tables' script (001) does not touch the outbox at all, so it goes through, and
/// each leaves the session's lock_timeout as it found it.
#[tokio::test]
async fn upgrading_behind_an_open_business_write_gives_up_instead_of_queueing_writes() {
    let db = TestDb::migrated().await;
    let admin = db.client().await;
    admin
        .batch_execute(
            "CREATE INDEX webhook_events_unrouted_idx ON webhook_events (id) \
             WHERE routed_at IS NULL",
        )
        .await
        .expect("the index an older release had");
    let mut business = db.client().await;
    let open = business.transaction().await.expect("begin");
    open.execute("INSERT INTO leads (business_name) VALUES ('Acme Inc')", &[])
        .await
        .expect("a business write, not yet committed");

    let upgrade = db.client().await;
    let limit = std::time::Duration::from_secs(30);
    tokio::time::timeout(
        limit,
        upgrade.batch_execute(include_str!("../../sql/001_webhook_tables.sql")),
    )
    .await
    .expect("001 waits for no business transaction")
    .expect("001 runs beside an open business write");
    gives_up_within_its_lock_timeout(
        &upgrade,
        include_str!("../../sql/002_webhook_emit.sql"),
        "002, behind the open write that holds the outbox",
    )
    .await;

    open.commit().await.expect("the business write commits");
    upgrade
        .batch_execute(include_str!("../../sql/002_webhook_emit.sql"))
        .await
        .expect("run again once that transaction ended");
    assert_eq!(
        db.count("SELECT count(*) FROM pg_indexes WHERE indexname = 'webhook_events_unrouted_idx'")
            .await,
        0
    );
    assert_eq!(db.count("SELECT count(*) FROM webhook_events").await, 1);
    assert_eq!(
        lock_timeout(&upgrade).await,
        "0",
        "the session's lock_timeout is its own again after the scripts"
    );
    // A session that set its own keeps it.
    upgrade
        .batch_execute("SET lock_timeout = '3s'")
        .await
        .expect("set");
    upgrade
        .batch_execute(include_str!("../../sql/001_webhook_tables.sql"))
        .await
        .expect("001 again");
    assert_eq!(lock_timeout(&upgrade).await, "3s");
}

/// A trigger of the DBA's own that calls webhook_emit() (sql/README, "Your own
/// tables") would fail every write of its table once the function is gone: uninstall
/// refuses, naming it and its trigger, and removes nothing.
#[tokio::test]
async fn uninstall_refuses_while_a_function_of_yours_calls_webhook_emit_and_removes_nothing() {
    let db = TestDb::migrated().await;
    let client = db.client().await;
    client
        .batch_execute(
            "CREATE TABLE customers (id bigint PRIMARY KEY);
             CREATE FUNCTION customers_emit() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
                 PERFORM webhook_emit('lead_scraped', 'customer', NEW.id, '{}');
                 RETURN NULL;
             END $$;
             CREATE TRIGGER customers_webhook AFTER INSERT ON customers
                 FOR EACH ROW EXECUTE FUNCTION customers_emit();
             CREATE FUNCTION shouting_emit() RETURNS void LANGUAGE plpgsql AS $$
             BEGIN
                 PERFORM public.\"webhook_emit\"('lead_scraped', 'customer', 1, '{}');
                 PERFORM Webhook_Emit('lead_scraped', 'customer', 1, '{}');
             END $$;
             CREATE FUNCTION atomic_emit() RETURNS bigint LANGUAGE sql
             BEGIN ATOMIC
                 SELECT webhook_emit('lead_scraped', 'customer', 1, '{}');
             END;
             CREATE FUNCTION my_webhook_emit(n int) RETURNS int LANGUAGE sql AS 'SELECT n';
             CREATE FUNCTION calls_its_own() RETURNS int LANGUAGE sql
                 AS 'SELECT my_webhook_emit(1)';",
        )
        .await
        .expect("a trigger of the DBA's own");
    let err = client
        .batch_execute(relay_core::schema::UNINSTALL_SQL)
        .await
        .expect_err("uninstall refuses");
    let db_err = err.as_db_error().expect("a database error");
    assert_eq!(db_err.code().code(), "2BP01", "{err}");
    assert!(
        db_err.message().contains("customers_emit()")
            && db_err.message().contains("customers_webhook ON customers")
            && db_err.message().contains("shouting_emit()")
            && db_err.message().contains("atomic_emit()"),
        "names the functions and the trigger, however the call is spelled: {}",
        db_err.message()
    );
    assert!(
        !db_err.message().contains("calls_its_own"),
        "a function of another name ending in webhook_emit is not the relay's: {}",
        db_err.message()
    );
    assert_eq!(
        db.count("SELECT count(*) FROM pg_trigger WHERE tgname = 'webhook_leads_insert'")
            .await,
        1,
        "nothing was removed"
    );
    client
        .execute("INSERT INTO customers VALUES (1)", &[])
        .await
        .expect("the DBA's table still takes writes");

    client
        .batch_execute(
            "DROP TRIGGER customers_webhook ON customers; DROP FUNCTION customers_emit(); \
             DROP FUNCTION shouting_emit(); DROP FUNCTION atomic_emit()",
        )
        .await
        .expect("the DBA drops their own first");
    client
        .batch_execute(relay_core::schema::UNINSTALL_SQL)
        .await
        .expect("then uninstall runs");
    assert_eq!(
        lock_timeout(&client).await,
        "0",
        "the session's lock_timeout is its own again"
    );
}

/// Dropping a business table's trigger locks out its reads too: behind a long
/// transaction on it, uninstall gives up within its lock timeout instead of holding
/// up every read and write queued behind it.
#[tokio::test]
async fn uninstall_behind_a_long_business_transaction_gives_up_instead_of_blocking_reads() {
    let db = TestDb::migrated().await;
    let mut reader = db.client().await;
    let open = reader.transaction().await.expect("begin");
    open.execute("SELECT count(*) FROM leads", &[])
        .await
        .expect("a long report on leads");
    let client = db.client().await;
    gives_up_within_its_lock_timeout(
        &client,
        relay_core::schema::UNINSTALL_SQL,
        "uninstall, behind the reader of leads",
    )
    .await;
    open.rollback().await.expect("the report ends");
    assert_eq!(webhook_triggers(&db).await, 4, "nothing was removed");
    client
        .batch_execute(relay_core::schema::UNINSTALL_SQL)
        .await
        .expect("run again once the reader is done");
}

async fn backend_pid(client: &tokio_postgres::Client) -> i32 {
    client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .expect("pid")
        .get(0)
}

/// Whether the session `pid` waits for a lock.
async fn waits_for_a_lock(db: &TestDb, pid: i32) -> bool {
    db.count(&format!(
        "SELECT count(*) FROM pg_locks WHERE pid = {pid} AND NOT granted"
    ))
    .await
        > 0
}

/// Uninstall behind a reader of the relay's logs, and a business INSERT arriving
/// meanwhile: uninstall took the relay's tables first and the business tables after,
/// the INSERT its table and then (in its trigger) the outbox, and one of the two died
/// with "deadlock detected". Both go through once the reader is done.
#[tokio::test]
async fn uninstall_beside_a_business_write_never_deadlocks_with_it() {
    let db = TestDb::migrated().await;
    let mut reader = db.client().await;
    let report = reader.transaction().await.expect("begin");
    report
        .execute("SELECT count(*) FROM webhook_logs", &[])
        .await
        .expect("a report on the logs");
    let uninstaller = db.client().await;
    let writer = db.client().await;
    let (uninstall_pid, writer_pid) = (backend_pid(&uninstaller).await, backend_pid(&writer).await);
    uninstaller
        .batch_execute("SET lock_timeout = '20s'")
        .await
        .expect("time enough for the scene");
    let uninstall = uninstaller.batch_execute(relay_core::schema::UNINSTALL_SQL);
    let scene = async {
        relay_tests::wait_until("uninstall waits for the reader", T, || async {
            waits_for_a_lock(&db, uninstall_pid).await.then_some(())
        })
        .await;
        let write = writer.execute("INSERT INTO leads (business_name) VALUES ('Acme Inc')", &[]);
        let release = async {
            relay_tests::wait_until("the write waits too", T, || async {
                waits_for_a_lock(&db, writer_pid).await.then_some(())
            })
            .await;
            report.rollback().await.expect("the report ends");
        };
        tokio::join!(write, release).0
    };
    let (uninstalled, written) = tokio::join!(uninstall, scene);
    uninstalled.expect("uninstall goes through");
    written.expect("the business write goes through");
}

/// A database that still has the older backend's tables (its own webhook_queue,
/// webhook_logs, webhook_retry_history, modelled on the guide's columns): `migrate`
/// stopped on "column event_id does not exist" with nothing said about what to do. It
/// stops before changing anything, naming the tables and how to move them aside; once
/// they are renamed it installs, and the renamed tables are left as they were.
#[tokio::test]
async fn migrate_over_the_older_backends_tables_names_them_and_changes_nothing() {
    let db = TestDb::empty().await;
    let client = db.client().await;
    client
        .batch_execute(
            "CREATE TABLE webhook_queue (id serial PRIMARY KEY, event_type text, entity_type text,
                 entity_id bigint, webhook_url text, payload jsonb, priority int,
                 status text, retry_count int, max_retries int, next_attempt_at timestamptz,
                 last_error text, created_at timestamptz, updated_at timestamptz);
             CREATE TABLE webhook_logs (id serial PRIMARY KEY, direction text, event_type text,
                 webhook_url text, response_status int, duration_ms int, error_message text,
                 created_at timestamptz);
             CREATE TABLE webhook_retry_history (id serial PRIMARY KEY,
                 webhook_queue_id int REFERENCES webhook_queue (id), attempt_number int,
                 error_message text, created_at timestamptz);
             INSERT INTO webhook_queue (event_type, status) VALUES ('lead_scraped', 'pending');",
        )
        .await
        .expect("the older backend's tables");
    let migrate = relay_tests::RelayBuilder::new(&db.url, "http://127.0.0.1:9").args(["migrate"]);
    let out = migrate.output().await;
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains(
            "webhook_logs (without webhook_queue_id, endpoint, attempt, response_body); \
             webhook_queue (without webhook_id, event_id, lease_expires_at, \
             last_response_status, occurred_at, sent_at); webhook_retry_history (without \
             attempt, response_status, duration_ms, next_attempt_at, note) in schema public \
             are not n8n-relay's"
        ) && said.contains("ALTER TABLE webhook_queue RENAME TO webhook_queue_old"),
        "{said}"
    );
    assert_eq!(
        said.matches("not n8n-relay's").count(),
        1,
        "said once: {said}"
    );
    assert_eq!(
        db.count("SELECT count(*) FROM pg_class WHERE relname = 'webhook_events'")
            .await,
        0,
        "nothing was created"
    );

    client
        .batch_execute(
            "ALTER TABLE webhook_retry_history RENAME TO webhook_retry_history_old;
             ALTER TABLE webhook_logs RENAME TO webhook_logs_old;
             ALTER TABLE webhook_queue RENAME TO webhook_queue_old;",
        )
        .await
        .expect("moved aside as the message says");
    let out = migrate.output().await;
    assert!(out.status.success(), "{out:?}");
    assert_eq!(db.count("SELECT count(*) FROM webhook_queue_old").await, 1);
    assert_eq!(db.count("SELECT count(*) FROM webhook_queue").await, 0);
}

/// A table of one of the relay's names that has the one column the install used to
/// look for, but not the others: the install went through, and every write of the
/// relay into it failed afterwards (an outcome never recorded, its delivery sent
/// again). A `workflow_runs` of the business's own was not looked at at all.
#[tokio::test]
async fn migrate_over_a_look_alike_table_names_what_it_lacks_and_changes_nothing() {
    let db = TestDb::empty().await;
    let client = db.client().await;
    client
        .batch_execute(
            "CREATE TABLE webhook_logs (id serial PRIMARY KEY, direction text, event_type text,
                 attempt int, response_status int, duration_ms int, error_message text,
                 created_at timestamptz);
             CREATE TABLE workflow_runs (id serial PRIMARY KEY, name text, started timestamptz);",
        )
        .await
        .expect("look-alike tables");
    let migrate = relay_tests::RelayBuilder::new(&db.url, "http://127.0.0.1:9").args(["migrate"]);
    let out = migrate.output().await;
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains(
            "webhook_logs (without webhook_queue_id, webhook_url, endpoint, response_body); \
             workflow_runs (without execution_id, workflow_id, status, current_step, \
             duration_ms, lead_id, error_message, payload, created_at, updated_at) in schema \
             public are not n8n-relay's"
        ),
        "{said}"
    );
    assert_eq!(
        db.count("SELECT count(*) FROM pg_class WHERE relname = 'webhook_events'")
            .await,
        0,
        "nothing was created"
    );
}
