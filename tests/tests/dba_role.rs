//! `sql/roles.example.sql`: the relay's least-privilege role can do everything the
//! relay does, and a business writer needs nothing beyond its own table (the built-in
//! triggers run as their owner), plus EXECUTE on `webhook_emit` (through the emitters
//! group) for triggers of its own that call it.
//!
//! Roles are cluster-wide, so each test installs the script under unique role names
//! and drops them again.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use relay_tests::relay::TEST_N8N_SECRET;
use relay_tests::{wait_until, RelayBuilder, Sink, TestDb};
use tokio_postgres::{AsyncMessage, Client, NoTls};

const ROLES_SQL: &str = include_str!("../../sql/roles.example.sql");

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// The script's roles under names unique to this test, dropped at the end.
struct Roles {
    relay: String,
    emitters: String,
    /// Extra roles the test created (business writers).
    others: Vec<String>,
    db_url: String,
}

impl Roles {
    async fn install(db: &TestDb) -> Roles {
        let tag = format!(
            "{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        let roles = Roles {
            relay: format!("relay_t{tag}"),
            emitters: format!("relay_t{tag}_emitters"),
            others: Vec::new(),
            db_url: db.url.clone(),
        };
        let sql = ROLES_SQL
            .replace("n8n_relay_emitters", "\u{0}EMITTERS\u{0}")
            .replace("n8n_relay", &roles.relay)
            .replace("\u{0}EMITTERS\u{0}", &roles.emitters);
        let client = db.client().await;
        client.batch_execute(&sql).await.expect("roles script");
        client
            .batch_execute(&sql)
            .await
            .expect("roles script runs again (idempotent)");
        roles
    }

    /// A business role that may insert into `table` and nothing else; with
    /// `emitter`, also a member of the emitters group.
    /// A connection URL for the relay role. The password matters only on a server
    /// that asks for one; the test server trusts loopback.
    async fn relay_url(&self, db: &TestDb) -> String {
        db.client()
            .await
            .batch_execute(&format!(
                "ALTER ROLE {} PASSWORD 'relay-test-pw'",
                self.relay
            ))
            .await
            .expect("set the relay role's password");
        let mut url = url::Url::parse(&db.url).expect("test database URL");
        url.set_username(&self.relay).expect("username");
        url.set_password(Some("relay-test-pw")).expect("password");
        url.to_string()
    }

    async fn business_writer(&mut self, client: &Client, table: &str, emitter: bool) -> String {
        let name = format!("{}_app{}", self.relay, self.others.len());
        client
            .batch_execute(&format!(
                "CREATE ROLE {name} NOLOGIN; GRANT INSERT ON {table} TO {name};"
            ))
            .await
            .expect("create business role");
        if emitter {
            client
                .batch_execute(&format!("GRANT {} TO {name}", self.emitters))
                .await
                .expect("grant emitters");
        }
        self.others.push(name.clone());
        name
    }
}

impl Drop for Roles {
    fn drop(&mut self) {
        let mut names = self.others.clone();
        names.push(self.relay.clone());
        names.push(self.emitters.clone());
        let list = names.join(", ");
        relay_tests::db::cleanup_sql(
            &self.db_url,
            format!("DROP OWNED BY {list}; DROP ROLE IF EXISTS {list}"),
        );
    }
}

async fn as_role(db: &TestDb, role: &str) -> Client {
    let client = db.client().await;
    client
        .batch_execute(&format!("SET ROLE {role}"))
        .await
        .expect("SET ROLE");
    client
}

fn permission_denied(result: Result<u64, tokio_postgres::Error>, what: &str) {
    let err = result.expect_err(what);
    let code = err.as_db_error().map(|e| e.code().code().to_string());
    assert_eq!(code.as_deref(), Some("42501"), "{what}: {err}");
}

#[tokio::test]
async fn a_business_writer_needs_only_insert_on_its_table_and_the_emitters_group() {
    let db = TestDb::migrated().await;
    let mut roles = Roles::install(&db).await;
    let admin = db.client().await;
    let writer = roles.business_writer(&admin, "leads", true).await;

    let app = as_role(&db, &writer).await;
    app.execute("INSERT INTO leads (business_name) VALUES ('Acme Inc')", &[])
        .await
        .expect("a writer with INSERT and the emitters group records a lead");
    let event: String = admin
        .query_one("SELECT event_type FROM webhook_events", &[])
        .await
        .expect("event")
        .get(0);
    assert_eq!(event, "lead_scraped");

    // Nothing else: the outbox and the wake-up stay out of the writer's reach.
    permission_denied(
        app.execute("SELECT 1 FROM webhook_events", &[]).await,
        "reading the outbox",
    );
    permission_denied(
        app.execute(
            "INSERT INTO webhook_events (event_type, entity_type) VALUES ('lead_scraped', 'lead')",
            &[],
        )
        .await,
        "writing the outbox directly",
    );
    permission_denied(
        app.execute("SELECT setval('webhook_relay_wakeup', 1)", &[])
            .await,
        "arming the wake-up",
    );
}

#[tokio::test]
async fn a_writer_outside_the_emitters_group_emits_through_the_triggers_but_cannot_call_webhook_emit(
) {
    let db = TestDb::migrated().await;
    let mut roles = Roles::install(&db).await;
    let admin = db.client().await;
    let outsider = roles.business_writer(&admin, "leads", false).await;

    // The built-in triggers run as their owner: a role that may write the table may
    // record its events, and its business write never fails on the relay's grants.
    let app = as_role(&db, &outsider).await;
    app.execute("INSERT INTO leads (business_name) VALUES ('Acme Inc')", &[])
        .await
        .expect("a writer outside the group still writes leads");
    assert_eq!(db.count("SELECT count(*) FROM leads").await, 1);
    assert_eq!(
        db.count("SELECT count(*) FROM webhook_events WHERE event_type = 'lead_scraped'")
            .await,
        1
    );

    // webhook_emit itself (ad-hoc events, a DBA's own triggers) is for the group only.
    let err = app
        .execute(
            "SELECT webhook_emit('lead_qualified', 'lead', 1, '{}')",
            &[],
        )
        .await
        .expect_err("webhook_emit is not executable by PUBLIC after the roles script");
    assert!(
        err.as_db_error()
            .is_some_and(|e| e.message().contains("webhook_emit")),
        "{err}"
    );

    // Nor may it attach the built-in trigger functions to a table of its own: they
    // write the outbox as their owner, so that would emit any event with any data.
    app.batch_execute("CREATE TEMP TABLE forged (id bigint, status text)")
        .await
        .expect("a temporary table of its own");
    for function in ["webhook_leads_emit", "webhook_asset_emit"] {
        permission_denied(
            app.execute(
                &format!(
                    "CREATE TRIGGER forge AFTER INSERT ON forged \
                     FOR EACH ROW EXECUTE FUNCTION {function}()"
                ),
                &[],
            )
            .await,
            &format!("attaching {function}() to a table of its own"),
        );
    }
    assert_eq!(db.count("SELECT count(*) FROM webhook_events").await, 1);
}

/// Installed without 004 (tables with a `status` of their own meaning, sql/README) and
/// with a `demo_sites` that has no review columns: the roles script stopped on the
/// missing trigger functions or columns, before its REVOKE, so webhook_emit() stayed
/// executable by every role. It runs through, twice, and the revoke holds.
#[tokio::test]
async fn the_roles_script_without_the_built_in_triggers_or_review_columns_still_keeps_webhook_emit_to_its_group(
) {
    let db = TestDb::empty().await;
    let admin = db.client().await;
    admin
        .batch_execute(
            "CREATE TABLE demo_sites (id bigint PRIMARY KEY, lead_id bigint, status text)",
        )
        .await
        .expect("a demo_sites of its own");
    for script in relay_core::schema::SCRIPTS
        .iter()
        .filter(|s| ["001_webhook_tables.sql", "002_webhook_emit.sql"].contains(&s.name))
    {
        admin.batch_execute(script.sql).await.expect(script.name);
    }
    let mut roles = Roles::install(&db).await;
    let outsider = roles.business_writer(&admin, "demo_sites", false).await;
    permission_denied(
        as_role(&db, &outsider)
            .await
            .execute(
                "SELECT webhook_emit('lead_qualified', 'lead', 1, '{}')",
                &[],
            )
            .await,
        "webhook_emit by a role outside the group",
    );
    let may_review: bool = admin
        .query_one(
            "SELECT has_column_privilege($1, 'demo_sites', 'status', 'UPDATE')",
            &[&roles.relay],
        )
        .await
        .expect("privilege")
        .get(0);
    assert!(
        may_review,
        "the relay may update the review columns there are"
    );
}

#[tokio::test]
async fn a_business_write_wakes_the_idle_relay_role_with_no_extra_grants() {
    let db = TestDb::migrated().await;
    let mut roles = Roles::install(&db).await;
    let admin = db.client().await;
    let writer = roles.business_writer(&admin, "leads", true).await;

    // The relay's listener: its own connection, as the relay role.
    let (listener, mut conn) = tokio_postgres::connect(&db.url, NoTls)
        .await
        .expect("listener");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut messages = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
    tokio::spawn(async move {
        while let Some(Ok(message)) = messages.next().await {
            if let AsyncMessage::Notification(n) = message {
                let _ = tx.send(n.payload().to_string());
            }
        }
    });
    listener
        .batch_execute(&format!(
            "SET ROLE {}; LISTEN n8n_relay; SELECT setval('webhook_relay_wakeup', 1);",
            roles.relay
        ))
        .await
        .expect("the relay role listens and arms the wake-up");

    let app = as_role(&db, &writer).await;
    app.execute("INSERT INTO leads (business_name) VALUES ('Acme Inc')", &[])
        .await
        .expect("insert");
    let id: i64 = admin
        .query_one("SELECT id FROM webhook_events", &[])
        .await
        .expect("event")
        .get(0);
    let payload = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("a notification within 10 s")
        .expect("listener alive");
    assert_eq!(payload, id.to_string());
    let flag: i64 = listener
        .query_one("SELECT last_value FROM webhook_relay_wakeup", &[])
        .await
        .expect("the relay role reads the flag")
        .get(0);
    assert_eq!(flag, 0, "the writer disarmed the wake-up");
}

#[tokio::test]
async fn the_relay_role_can_run_the_relays_statements_and_nothing_more() {
    let db = TestDb::migrated().await;
    let mut roles = Roles::install(&db).await;
    let admin = db.client().await;
    // Identity values, so later inserts by other roles do not collide.
    let lead_id: i64 = admin
        .query_one(
            "WITH lead AS (INSERT INTO leads (business_name) VALUES ('Acme Inc') RETURNING id),
                  demo AS (INSERT INTO demo_sites (lead_id, status)
                           SELECT id, 'pending_approval' FROM lead RETURNING id, lead_id)
             INSERT INTO videos (lead_id, demo_site_id, status)
             SELECT lead_id, id, 'pending_approval' FROM demo RETURNING lead_id",
            &[],
        )
        .await
        .expect("business rows")
        .get(0);
    let relay = as_role(&db, &roles.relay).await;

    // Router: claim events, enqueue one row per target, take them out of the outbox.
    let routed = relay
        .execute(
            "WITH claimed AS (
                 SELECT id, event_type, entity_type, entity_id, payload, occurred_at
                 FROM webhook_events WHERE routed_at IS NULL
                 ORDER BY id LIMIT 100 FOR UPDATE SKIP LOCKED),
             queued AS (
                 INSERT INTO webhook_queue (event_id, event_type, entity_type, entity_id,
                                            webhook_url, payload, occurred_at)
                 SELECT id, event_type, entity_type, entity_id,
                        'http://127.0.0.1:5678/webhook/x', payload, occurred_at FROM claimed
                 ON CONFLICT (event_id, webhook_url) DO NOTHING)
             DELETE FROM webhook_events e USING claimed WHERE e.id = claimed.id",
            &[],
        )
        .await
        .expect("route");
    assert_eq!(routed, 3, "lead_scraped and two approval_requested");

    // Dispatcher: claim by priority with a lease, record the outcome and history.
    let claimed = relay
        .query(
            "UPDATE webhook_queue SET status = 'sending',
                    lease_expires_at = now() + interval '120 seconds', updated_at = now()
             WHERE id IN (SELECT id FROM webhook_queue
                          WHERE status = 'pending' AND next_attempt_at <= now()
                          ORDER BY priority DESC, id LIMIT 10 FOR UPDATE SKIP LOCKED)
             RETURNING id",
            &[],
        )
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 3);
    let first: i64 = claimed[0].get(0);
    relay
        .batch_execute(&format!(
            "UPDATE webhook_queue SET status = 'sent', sent_at = now(), lease_expires_at = NULL
                 WHERE id = {first};
             INSERT INTO webhook_logs (direction, event_type, webhook_queue_id, response_status,
                                       duration_ms)
                 VALUES ('outgoing', 'lead_scraped', {first}, 200, 12);
             INSERT INTO webhook_retry_history (webhook_queue_id, attempt, response_status)
                 VALUES ({first}, 1, 200);
             UPDATE webhook_queue SET status = 'pending', lease_expires_at = NULL
                 WHERE status = 'sending' AND lease_expires_at < now() + interval '1 hour';"
        ))
        .await
        .expect("record outcome, release leases");

    // Callbacks: replay receipts, workflow runs, approvals (which fire the triggers as
    // the relay role), an error notification.
    relay
        .batch_execute(
            "INSERT INTO webhook_callback_receipts (request_hash, endpoint, response_status,
                                                   response_body)
                 VALUES ('abc', 'demo-approval', 200, '{}') ON CONFLICT DO NOTHING;
             SELECT response_body FROM webhook_callback_receipts WHERE request_hash = 'abc';
             INSERT INTO workflow_runs (execution_id, workflow_id, status)
                 VALUES ('exec_1', 'pipeline', 'running')
                 ON CONFLICT (execution_id) DO UPDATE SET status = EXCLUDED.status,
                                                          updated_at = now();
             INSERT INTO workflow_runs (execution_id, workflow_id, status)
                 VALUES ('exec_1', 'pipeline', 'success')
                 ON CONFLICT (execution_id) DO UPDATE SET status = EXCLUDED.status,
                                                          updated_at = now();
             INSERT INTO webhook_logs (direction, endpoint, response_status)
                 VALUES ('incoming', '/api/v1/webhooks/n8n/demo-approval', 200);
             SELECT webhook_emit('workflow_error', 'workflow', NULL,
                                 '{\"workflow_name\": \"x\", \"error\": \"boom\"}');",
        )
        .await
        .expect("callback statements");
    let lead: i64 = relay
        .query_one(
            "UPDATE demo_sites SET status = 'approved', approval_status = 'approved',
                    reviewer = 'admin@example.com', review_notes = 'ok', reviewed_at = now(),
                    updated_at = now()
             WHERE lead_id = $1 RETURNING lead_id",
            &[&lead_id],
        )
        .await
        .expect("demo approval")
        .get(0);
    assert_eq!(lead, lead_id);
    relay
        .execute(
            "UPDATE videos SET status = 'rejected', approval_status = 'rejected',
                    reviewed_at = now(), updated_at = now() WHERE lead_id = $1",
            &[&lead_id],
        )
        .await
        .expect("video rejection");
    let events: Vec<String> = admin
        .query(
            "SELECT event_type FROM webhook_events WHERE routed_at IS NULL ORDER BY id",
            &[],
        )
        .await
        .expect("events")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(events, ["workflow_error", "demo_completed"]);

    // The hand-over check: a writer's open transaction shows in pg_locks without
    // pg_read_all_stats.
    let writer = roles.business_writer(&admin, "leads", true).await;
    let mut app = as_role(&db, &writer).await;
    let open = app.transaction().await.expect("begin");
    open.execute("INSERT INTO leads (business_name) VALUES ('Open Txn')", &[])
        .await
        .expect("insert in an open transaction");
    let holders: i64 = relay
        .query_one(
            "SELECT count(*) FROM pg_locks
             WHERE relation = 'webhook_events'::regclass AND pid <> pg_backend_pid()",
            &[],
        )
        .await
        .expect("pg_locks")
        .get(0);
    assert!(holders >= 1, "the relay role sees the writer's lock");
    open.rollback().await.expect("rollback");

    // Retention and `queue cleanup`.
    relay
        .batch_execute(
            "DELETE FROM webhook_retry_history WHERE created_at < now() - interval '30 days';
             DELETE FROM webhook_logs WHERE created_at < now() - interval '30 days';
             DELETE FROM webhook_queue WHERE status IN ('sent', 'cancelled')
                 AND created_at < now() - interval '30 days';
             DELETE FROM webhook_events WHERE routed_at < now() - interval '30 days';
             DELETE FROM webhook_callback_receipts WHERE created_at < now() - interval '1 hour';
             SELECT count(*) FROM relay_schema_migrations;",
        )
        .await
        .expect("retention");

    // And nothing more.
    permission_denied(
        relay
            .execute("INSERT INTO leads (business_name) VALUES ('x')", &[])
            .await,
        "writing business rows",
    );
    permission_denied(
        relay
            .execute("UPDATE demo_sites SET lead_id = lead_id + 1", &[])
            .await,
        "changing columns outside the review",
    );
    permission_denied(
        relay.execute("DROP TABLE webhook_queue", &[]).await,
        "dropping the queue",
    );
    permission_denied(
        relay.execute("CREATE TABLE public.x (id int)", &[]).await,
        "creating tables",
    );
}

#[tokio::test]
async fn the_operator_commands_work_as_the_relay_role() {
    let db = TestDb::migrated().await;
    let roles = Roles::install(&db).await;
    let url = roles.relay_url(&db).await;
    db.client()
        .await
        .batch_execute(
            "INSERT INTO leads (business_name) VALUES ('Acme Inc');
             INSERT INTO webhook_queue (event_type, entity_type, entity_id, webhook_url,
                                        status, created_at, updated_at)
             VALUES ('lead_scraped', 'lead', 1, 'http://n8n.test/webhook/lead-scraped',
                     'failed', now() - interval '40 days', now() - interval '40 days'),
                    ('lead_scraped', 'lead', 2, 'http://n8n.test/webhook/lead-scraped',
                     'sent', now() - interval '40 days', now() - interval '40 days');",
        )
        .await
        .expect("rows");
    let lines = [
        "emit workflow_error --entity-type workflow --entity-id 1 --data {}",
        "queue stats --json",
        "queue list --status failed --json",
        "queue retry --all-failed --json",
        "queue cleanup --days 30 --json",
    ];
    for line in lines {
        let out = RelayBuilder::new(&url, "http://127.0.0.1:9")
            .args(line.split_whitespace())
            .output()
            .await;
        assert_eq!(
            out.status.code(),
            Some(0),
            "`n8n-relay {line}` as the relay role\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(
        db.count("SELECT count(*) FROM webhook_queue WHERE status = 'sent'")
            .await,
        0,
        "cleanup deleted the old sent row"
    );
    assert_eq!(
        db.count("SELECT count(*) FROM webhook_events WHERE event_type = 'workflow_error'")
            .await,
        1
    );
}

#[tokio::test]
async fn the_relay_delivers_a_business_write_running_as_the_least_privilege_role() {
    let db = TestDb::migrated().await;
    let mut roles = Roles::install(&db).await;
    let url = roles.relay_url(&db).await;
    let admin = db.client().await;
    let writer = roles.business_writer(&admin, "leads", true).await;
    let sink = Sink::start().await;
    // Retention on, so the sweeper's deletes run as the role too.
    let relay = RelayBuilder::new(&url, &sink.url())
        .env("RELAY_QUEUE__RETENTION_DAYS", 1)
        .spawn();

    let app = as_role(&db, &writer).await;
    app.execute("INSERT INTO leads (business_name) VALUES ('Acme Inc')", &[])
        .await
        .expect("insert as the business writer");
    let got = sink.wait_for(1, Duration::from_secs(20)).await;
    assert_eq!(got[0].json()["event"], "lead_scraped");
    wait_until(
        "the delivery recorded as sent",
        Duration::from_secs(20),
        || async {
            let sent = db
                .count("SELECT count(*) FROM webhook_queue WHERE status = 'sent'")
                .await;
            (sent == 1).then_some(())
        },
    )
    .await;
    let log = relay.log();
    assert!(!log.contains("permission denied"), "{log}");
}

/// A callback as n8n sends it: signed with the callback secret. Returns the status.
/// POSTs `body` signed at `timestamp`: the same request twice is a repeat only with
/// the same timestamp (the receipt covers it).
async fn post_signed(addr: &str, endpoint: &str, body: serde_json::Value, timestamp: u64) -> u16 {
    let body = body.to_string();
    let signature =
        relay_core::signature::sign(TEST_N8N_SECRET.as_bytes(), timestamp, body.as_bytes());
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to the callbacks listener");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let request = http::Request::post(format!("/api/v1/webhooks/n8n/{endpoint}"))
        .header("host", addr)
        .header("content-type", "application/json")
        .header("x-webhook-timestamp", timestamp.to_string())
        .header("x-webhook-signature-256", signature)
        .body(Full::new(Bytes::from(body)))
        .expect("request");
    let response = sender.send_request(request).await.expect("response");
    let status = response.status().as_u16();
    let _ = response.into_body().collect().await;
    status
}

#[tokio::test]
async fn the_callbacks_work_running_as_the_least_privilege_role() {
    let db = TestDb::migrated().await;
    let roles = Roles::install(&db).await;
    let url = roles.relay_url(&db).await;
    let admin = db.client().await;
    let demo: i64 = admin
        .query_one(
            "WITH lead AS (INSERT INTO leads (business_name) VALUES ('Acme Inc') RETURNING id)
             INSERT INTO demo_sites (lead_id, status) SELECT id, 'pending_approval' FROM lead
             RETURNING id",
            &[],
        )
        .await
        .expect("a demo awaiting approval")
        .get(0);
    let sink = Sink::start().await;
    let relay = RelayBuilder::new(&url, &sink.url()).spawn();
    let addr = relay.builder.callbacks_addr();
    wait_until(
        "the callbacks listener",
        Duration::from_secs(20),
        || async { tokio::net::TcpStream::connect(&addr).await.ok().map(|_| ()) },
    )
    .await;

    let calls = [
        (
            "workflow-status",
            serde_json::json!({"workflow_id": "w", "execution_id": "e1", "status": "running",
                               "current_step": "demo_approval"}),
        ),
        (
            "demo-approval",
            serde_json::json!({"demo_id": demo, "approved": true, "reviewer": "r", "notes": "n"}),
        ),
        (
            "workflow-completed",
            serde_json::json!({"workflow_id": "w", "execution_id": "e1", "status": "success"}),
        ),
        (
            "error-notification",
            serde_json::json!({"workflow_id": "w", "execution_id": "e2", "error": "boom"}),
        ),
    ];
    for (endpoint, body) in calls {
        let timestamp = relay_core::signature::unix_now();
        let status = post_signed(&addr, endpoint, body.clone(), timestamp).await;
        assert_eq!(status, 200, "{endpoint} as the relay role\n{}", relay.log());
        // A repeat within the window is answered from the receipt.
        let again = post_signed(&addr, endpoint, body, timestamp).await;
        assert_eq!(again, 200, "{endpoint} repeated");
    }
    let status: String = admin
        .query_one("SELECT status FROM demo_sites WHERE id = $1", &[&demo])
        .await
        .expect("demo")
        .get(0);
    assert_eq!(status, "approved");
    assert_eq!(
        db.count("SELECT count(*) FROM workflow_runs WHERE status = 'success'")
            .await,
        1
    );
    // Recorded: still in the outbox, or already routed into the queue.
    assert_eq!(
        db.count(
            "SELECT (SELECT count(*) FROM webhook_events WHERE event_type = 'workflow_error')
                  + (SELECT count(*) FROM webhook_queue WHERE event_type = 'workflow_error')"
        )
        .await,
        1
    );
    let log = relay.log();
    assert!(!log.contains("permission denied"), "{log}");
}

/// The outbox's ids started again while the queue holds rows of events 1 and 5. The
/// roles script lets the relay role move the outbox identity past them. Without that
/// grant, an event on a taken id waits in the outbox (the log says which grant is
/// missing) while the others go on; once the tables' owner moves the identity (the
/// README's command), the relay renumbers the event and delivers it.
#[tokio::test]
async fn without_the_sequence_grant_an_event_on_a_taken_id_waits_until_the_owner_moves_the_identity(
) {
    let db = TestDb::migrated().await;
    let mut roles = Roles::install(&db).await;
    let url = roles.relay_url(&db).await;
    let admin = db.client().await;
    let writer = roles.business_writer(&admin, "leads", true).await;
    let sink = Sink::start().await;
    let sequence: String = admin
        .query_one("SELECT pg_get_serial_sequence('webhook_events', 'id')", &[])
        .await
        .expect("the outbox identity's sequence")
        .get(0);
    let granted: bool = admin
        .query_one(
            "SELECT has_sequence_privilege($1, $2, 'SELECT, UPDATE')",
            &[&roles.relay, &sequence],
        )
        .await
        .expect("the role's privileges")
        .get(0);
    assert!(
        granted,
        "the roles script grants the relay the outbox identity"
    );
    admin
        .batch_execute(&format!(
            "INSERT INTO webhook_queue (event_id, event_type, entity_type, entity_id,
                                        webhook_url, status, sent_at, occurred_at)
             SELECT i, 'lead_scraped', 'lead', i, '{}/webhook/lead-scraped', 'sent', now(),
                    '2026-01-01'
             FROM unnest(ARRAY[1, 5]) i;
             TRUNCATE webhook_events RESTART IDENTITY;
             REVOKE SELECT, UPDATE ON SEQUENCE {sequence} FROM {}",
            sink.url(),
            roles.relay
        ))
        .await
        .expect("delivered rows of events 1 and 5, the outbox restarted, the grant taken back");
    let app = as_role(&db, &writer).await;
    app.batch_execute(
        "INSERT INTO leads (business_name) VALUES ('Acme Inc');
         INSERT INTO leads (business_name) VALUES ('Beta LLC');",
    )
    .await
    .expect("insert as the business writer: events 1 (taken) and 2 (free)");

    let relay = RelayBuilder::new(&url, &sink.url()).spawn();
    let got = sink.wait_for(1, Duration::from_secs(20)).await;
    assert_eq!(got[0].json()["data"]["business_name"], "Beta LLC");
    wait_until(
        "the relay to say which grant it lacks",
        Duration::from_secs(20),
        || async {
            relay
                .log()
                .contains("may not move the outbox's identity")
                .then_some(())
        },
    )
    .await;
    assert_eq!(
        sink.requests().len(),
        1,
        "the event on a taken id is not sent"
    );
    assert_eq!(
        db.count("SELECT count(*) FROM webhook_events WHERE id = 1")
            .await,
        1,
        "it waits in the outbox"
    );

    admin
        .batch_execute(&format!(
            "SELECT setval(pg_get_serial_sequence('webhook_events', 'id'),
                           (SELECT max(event_id) FROM webhook_queue) + 1000)
             WHERE (SELECT max(event_id) FROM webhook_queue) >= (SELECT last_value FROM {sequence})"
        ))
        .await
        .expect("the owner moves the identity, as the README says");
    let got = sink.wait_for(2, Duration::from_secs(30)).await;
    assert_eq!(got[1].json()["data"]["business_name"], "Acme Inc");
    assert_eq!(db.count("SELECT count(*) FROM webhook_events").await, 0);
    assert!(
        db.count("SELECT max(event_id) FROM webhook_queue").await > 1005,
        "the event was renumbered past the identity the owner set"
    );
}

/// A GET with `Connection: close`, the whole response as text (empty when the
/// server is not up yet).
async fn get(addr: &str, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await else {
        return String::new();
    };
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).await.is_err() {
        return String::new();
    }
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response).await;
    String::from_utf8_lossy(&response).into_owned()
}

#[tokio::test]
async fn the_console_as_the_relay_role_lists_a_relay_whose_sessions_it_cannot_see_and_keeps_sampling(
) {
    let db = TestDb::migrated().await;
    let roles = Roles::install(&db).await;
    let url = roles.relay_url(&db).await;
    let sink = Sink::start().await;
    // The relay as another role (the test server's superuser): Postgres shows its
    // sessions to the relay role without their address or start time.
    let _relay = RelayBuilder::new(&db.url, &sink.url()).spawn();
    let console = RelayBuilder::new(&url, &sink.url())
        .args(["console"])
        .spawn();
    let addr = console.builder.console_addr();
    wait_until(
        "the overview lists the relay it cannot see into",
        Duration::from_secs(20),
        || async {
            let page = get(&addr, "/").await;
            page.contains("not visible to this role").then_some(())
        },
    )
    .await;
    // And the sampler lives on: a delivery shows up in the counts.
    db.insert_lead().await;
    sink.wait_for(1, Duration::from_secs(20)).await;
    wait_until(
        "the overview counts the delivery",
        Duration::from_secs(20),
        || async {
            let page = get(&addr, "/").await;
            page.contains("id=\"count-sent\">1<").then_some(())
        },
    )
    .await;
    let log = console.log();
    assert!(!log.contains("panicked"), "{log}");
}
