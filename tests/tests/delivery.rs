//! Delivery end to end: a business write becomes one signed POST with the contract's
//! headers and body, for every event type and every SQL path.

use std::time::Duration;

use relay_tests::{wait_until, RelayBuilder, Sink, SinkRequest, TestDb};

const T: Duration = Duration::from_secs(15);
/// One `lead_scraped` event for the lead `$1`, with an empty payload.
const EMIT_LEAD: &str = "SELECT webhook_emit('lead_scraped', 'lead', $1, '{}')";

#[tokio::test]
async fn a_lead_insert_becomes_one_signed_lead_scraped_post() {
    let db = TestDb::migrated().await;
    let sink = Sink::start().await;
    let _relay = RelayBuilder::new(&db.url, &sink.url())
        .env("N8N_API_KEY", "test-api-key")
        .spawn();
    let client = db.client().await;
    let lead_id: i64 = client
        .query_one(
            "INSERT INTO leads (business_name, category, location, score)
             VALUES ('Acme Inc', 'web design', 'San Francisco', 0.85) RETURNING id",
            &[],
        )
        .await
        .unwrap()
        .get(0);

    let got = sink.wait_for(1, T).await;
    let req = &got[0];
    assert_eq!(req.method, "POST");
    assert_eq!(req.path, "/webhook/lead-scraped");
    assert_eq!(req.header("content-type"), Some("application/json"));
    assert_eq!(req.header("x-webhook-event"), Some("lead_scraped"));
    assert_eq!(req.header("x-webhook-attempt"), Some("1"));
    assert_eq!(req.header("x-n8n-api-key"), Some("test-api-key"));
    let ts = req.verify_signature();
    assert_eq!(
        req.header("x-webhook-timestamp"),
        Some(ts.to_string().as_str())
    );
    let sig = req.header("x-webhook-signature-256").unwrap();
    assert!(
        sig.len() == 64 && sig.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f')),
        "lowercase hex: {sig}"
    );

    let queue = client
        .query_one(
            "SELECT webhook_id::text, status, entity_id FROM webhook_queue",
            &[],
        )
        .await
        .unwrap();
    let webhook_id: String = queue.get(0);
    assert_eq!(req.header("x-webhook-id"), Some(webhook_id.as_str()));

    let body = req.json();
    let keys: Vec<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut expected = vec![
        "data",
        "entity_id",
        "entity_type",
        "event",
        "id",
        "occurred_at",
    ];
    expected.sort_unstable();
    let mut keys_sorted = keys.clone();
    keys_sorted.sort_unstable();
    assert_eq!(keys_sorted, expected, "exactly the contract's fields");
    assert_eq!(body["id"], webhook_id.as_str());
    assert_eq!(body["event"], "lead_scraped");
    assert_eq!(body["entity_type"], "lead");
    assert_eq!(body["entity_id"], lead_id);
    assert_eq!(body["data"]["lead_id"], lead_id);
    assert_eq!(body["data"]["business_name"], "Acme Inc");
    assert_eq!(body["data"]["location"], "San Francisco");
    let occurred = body["occurred_at"].as_str().unwrap();
    assert!(
        occurred.len() == "2025-11-04T12:00:00.000000Z".len()
            && occurred.ends_with('Z')
            && occurred.as_bytes()[10] == b'T',
        "RFC 3339 UTC: {occurred}"
    );

    wait_until("the row is sent", T, || async {
        let row = db
            .client()
            .await
            .query_one(
                "SELECT status, sent_at IS NOT NULL, lease_expires_at IS NULL FROM webhook_queue",
                &[],
            )
            .await
            .unwrap();
        (row.get::<_, String>(0) == "sent" && row.get::<_, bool>(1) && row.get::<_, bool>(2))
            .then_some(())
    })
    .await;
    let log = client
        .query_one(
            "SELECT direction, event_type, response_status, attempt, webhook_url,
                    duration_ms IS NOT NULL, error_message IS NULL
             FROM webhook_logs",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(log.get::<_, String>(0), "outgoing");
    assert_eq!(log.get::<_, String>(1), "lead_scraped");
    assert_eq!(log.get::<_, Option<i32>>(2), Some(200));
    assert_eq!(log.get::<_, Option<i32>>(3), Some(1));
    assert_eq!(
        log.get::<_, String>(4),
        format!("{}/webhook/lead-scraped", sink.url())
    );
    assert!(log.get::<_, bool>(5) && log.get::<_, bool>(6));
    assert_eq!(sink.count(), 1, "exactly one POST");
    assert_eq!(
        db.count("SELECT count(*) FROM webhook_events WHERE routed_at IS NULL")
            .await,
        0
    );
}

/// Requests keyed by event name, each checked against its path, header and signature.
fn by_event(
    requests: &[SinkRequest],
) -> std::collections::BTreeMap<String, Vec<serde_json::Value>> {
    let mut map = std::collections::BTreeMap::<String, Vec<serde_json::Value>>::new();
    for r in requests {
        let body = r.json();
        let event = body["event"].as_str().expect("event name").to_string();
        assert_eq!(r.header("x-webhook-event"), Some(event.as_str()));
        assert_eq!(r.path, format!("/webhook/{}", event.replace('_', "-")));
        r.verify_signature();
        map.entry(event).or_default().push(body);
    }
    map
}

/// n8n's Webhook node with Basic Auth: the route's URL carries `user:password@`, and the
/// HTTP client sends only host and path, so the credentials never arrived (every
/// delivery got 401 and ended failed). They go as `Authorization: Basic`, and replace
/// a static `Authorization` header meant for every route.
#[tokio::test]
async fn a_url_with_basic_auth_credentials_sends_them_to_n8n() {
    let db = TestDb::migrated().await;
    let sink = Sink::start().await;
    let with_credentials = sink
        .url()
        .replacen("http://", "http://n8n-user:p%40ss%3Aword@", 1);
    let _relay = RelayBuilder::new(&db.url, &with_credentials)
        .env("RELAY_N8N__AUTH_HEADER_NAME", "Authorization")
        .env("RELAY_N8N__AUTH_HEADER_VALUE", "Bearer for-every-route")
        .spawn();
    db.client()
        .await
        .execute(EMIT_LEAD, &[&1_i64])
        .await
        .expect("emit");
    let got = sink.wait_for(1, T).await;
    // base64("n8n-user:p@ss:word"): percent-decoded, as a browser sends them.
    assert_eq!(
        got[0].header("authorization"),
        Some("Basic bjhuLXVzZXI6cEBzczp3b3Jk")
    );
    assert_eq!(got[0].path, "/webhook/lead-scraped");
}

#[tokio::test]
async fn every_event_type_is_produced_by_its_sql_path() {
    let db = TestDb::migrated().await;
    let sink = Sink::start().await;
    let _relay = RelayBuilder::new(&db.url, &sink.url()).spawn();
    let client = db.client().await;
    client
        .batch_execute(
            "INSERT INTO leads (id, business_name) VALUES (1, 'Acme Inc'), (2, 'Bolt LLC');
             UPDATE leads SET status = 'qualified' WHERE id = 1;
             UPDATE leads SET outreach_status = 'sent', outreach_subject = 'Hello' WHERE id = 1;
             UPDATE leads SET status = 'responded', response_message = 'Yes please' WHERE id = 1;
             UPDATE leads SET outreach_status = 'failed', outreach_error = 'bounced' WHERE id = 2;
             INSERT INTO demo_sites (id, lead_id) VALUES (10, 1), (11, 2);
             UPDATE demo_sites SET status = 'pending_approval' WHERE id = 10;
             UPDATE demo_sites SET status = 'approved' WHERE id = 10;
             UPDATE demo_sites SET status = 'failed', error_message = 'build broke' WHERE id = 11;
             INSERT INTO videos (id, lead_id, demo_site_id) VALUES (20, 1, 10), (21, 2, 11);
             UPDATE videos SET status = 'pending_approval' WHERE id = 20;
             UPDATE videos SET status = 'completed', url = 'https://v.example/20' WHERE id = 20;
             UPDATE videos SET status = 'failed', error_message = 'render failed' WHERE id = 21;
             SELECT webhook_emit('workflow_error', 'workflow', NULL,
                                 '{\"workflow_id\": \"pipeline\", \"error_message\": \"boom\"}');",
        )
        .await
        .unwrap();

    let got = sink.wait_for(13, T).await;
    let events = by_event(&got);
    let names: Vec<&str> = events.keys().map(String::as_str).collect();
    assert_eq!(
        names.len(),
        11,
        "all eleven business event types: {names:?}"
    );
    let one = |name: &str| -> &serde_json::Value {
        let list = &events[name];
        assert_eq!(list.len(), 1, "{name}: {list:?}");
        &list[0]
    };
    assert_eq!(events["lead_scraped"].len(), 2);
    assert_eq!(one("lead_qualified")["data"]["status"], "qualified");
    assert_eq!(one("lead_qualified")["entity_type"], "lead");
    assert_eq!(one("email_sent")["data"]["subject"], "Hello");
    assert_eq!(one("lead_responded")["data"]["message"], "Yes please");
    assert_eq!(one("email_failed")["data"]["error"], "bounced");
    assert_eq!(one("email_failed")["entity_id"], 2);
    assert_eq!(one("demo_completed")["data"]["demo_site_id"], 10);
    assert_eq!(one("demo_completed")["entity_type"], "demo_site");
    assert_eq!(one("demo_failed")["data"]["error"], "build broke");
    assert_eq!(one("video_completed")["data"]["video_id"], 20);
    assert_eq!(
        one("video_completed")["data"]["url"],
        "https://v.example/20"
    );
    assert_eq!(one("video_failed")["data"]["error"], "render failed");
    let approvals = &events["approval_requested"];
    assert_eq!(approvals.len(), 2);
    let mut kinds: Vec<&str> = approvals
        .iter()
        .map(|a| a["data"]["approval_type"].as_str().unwrap())
        .collect();
    kinds.sort_unstable();
    assert_eq!(kinds, ["demo", "video"]);
    let error = one("workflow_error");
    assert_eq!(error["entity_type"], "workflow");
    assert_eq!(error["entity_id"], serde_json::Value::Null);
    assert_eq!(error["data"]["error_message"], "boom");
    assert_eq!(sink.count(), 13);
}

#[tokio::test]
async fn a_thousand_leads_from_eight_concurrent_writers_are_a_thousand_distinct_deliveries() {
    let db = TestDb::migrated().await;
    let sink = Sink::start().await;
    // A long safety interval: every event must arrive through the wake-up protocol or
    // the busy polling, not through the sweep.
    let _relay = RelayBuilder::new(&db.url, &sink.url())
        .env("WEBHOOK_QUEUE_PROCESSING_INTERVAL", 60)
        .spawn();
    db.insert_leads_concurrently(8, 125).await;
    let got = sink.wait_for_distinct(1000, Duration::from_secs(60)).await;
    let names: std::collections::HashSet<String> = got
        .iter()
        .map(|r| {
            r.json()["data"]["business_name"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(names.len(), 1000, "every lead once");
    wait_until("every row is sent", T, || async {
        (db.count("SELECT count(*) FROM webhook_queue WHERE status = 'sent'")
            .await
            == 1000)
            .then_some(())
    })
    .await;
    assert_eq!(sink.count(), 1000, "no event delivered twice");
    assert_eq!(db.count("SELECT count(*) FROM webhook_queue").await, 1000);
    assert_eq!(
        db.count("SELECT count(*) FROM webhook_events").await,
        0,
        "routed events leave the outbox"
    );
}

#[tokio::test]
async fn a_row_too_big_for_a_notify_payload_still_becomes_an_event_and_is_delivered() {
    let db = TestDb::migrated().await;
    let sink = Sink::start().await;
    let _relay = RelayBuilder::new(&db.url, &sink.url()).spawn();
    let big = "x".repeat(20_000);
    db.client()
        .await
        .execute("INSERT INTO leads (business_name) VALUES ($1)", &[&big])
        .await
        .expect("a big row commits");
    let got = sink.wait_for(1, T).await;
    assert!(got[0].body.len() > 20_000);
    assert_eq!(got[0].json()["data"]["business_name"], big.as_str());
    got[0].verify_signature();
}

#[tokio::test]
async fn the_guides_monitoring_and_troubleshooting_sql_runs_unchanged() {
    let db = TestDb::migrated().await;
    // lead_qualified always fails; everything else succeeds.
    let sink = Sink::with(|r| {
        if r.path.ends_with("lead-qualified") {
            relay_tests::Reply::status(500)
        } else {
            relay_tests::Reply::ok()
        }
    })
    .await;
    let _relay = RelayBuilder::new(&db.url, &sink.url())
        .env("WEBHOOK_MAX_RETRIES", 0)
        .spawn();
    let client = db.client().await;
    client
        .batch_execute(
            "INSERT INTO leads (id, business_name) VALUES (1, 'Acme Inc');
             UPDATE leads SET status = 'qualified' WHERE id = 1;",
        )
        .await
        .unwrap();
    wait_until("one sent, one failed", T, || async {
        (db.count("SELECT count(*) FROM webhook_queue WHERE status IN ('sent', 'failed')")
            .await
            == 2)
            .then_some(())
    })
    .await;

    // Verbatim from the guide's Monitoring section.
    let status = client
        .query(
            "SELECT
    status,
    COUNT(*) as count,
    AVG(retry_count) as avg_retries,
    MAX(retry_count) as max_retries
FROM webhook_queue
GROUP BY status;",
            &[],
        )
        .await
        .expect("Check Webhook Queue Status");
    assert_eq!(status.len(), 2);
    let activity = client
        .query(
            "SELECT
    direction,
    event_type,
    response_status,
    COUNT(*) as count,
    AVG(duration_ms) as avg_duration_ms,
    MAX(duration_ms) as max_duration_ms
FROM webhook_logs
WHERE created_at > NOW() - INTERVAL '24 hours'
GROUP BY direction, event_type, response_status
ORDER BY count DESC;",
            &[],
        )
        .await
        .expect("Recent Webhook Activity");
    assert_eq!(activity.len(), 2);
    let failed = client
        .query(
            "SELECT
    wq.*,
    COUNT(wrh.id) as retry_attempts
FROM webhook_queue wq
LEFT JOIN webhook_retry_history wrh ON wq.id = wrh.webhook_queue_id
WHERE wq.status = 'failed'
GROUP BY wq.id
ORDER BY wq.created_at DESC
LIMIT 20;",
            &[],
        )
        .await
        .expect("Failed Webhooks");
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].get::<_, String>("event_type"), "lead_qualified");
    assert_eq!(failed[0].get::<_, i64>("retry_attempts"), 1);

    // Verbatim from the guide's Troubleshooting section.
    let stuck = client
        .query(
            "-- Check stuck webhooks
SELECT * FROM webhook_queue
WHERE status = 'sending'
  AND updated_at < NOW() - INTERVAL '5 minutes';",
            &[],
        )
        .await
        .expect("Check stuck webhooks");
    assert!(stuck.is_empty());
    let problems = client
        .query(
            "-- Identify problematic webhooks
SELECT
    event_type,
    webhook_url,
    COUNT(*) as failure_count,
    MAX(last_error) as common_error
FROM webhook_queue
WHERE status = 'failed'
  AND retry_count >= max_retries
GROUP BY event_type, webhook_url
ORDER BY failure_count DESC;",
            &[],
        )
        .await
        .expect("Identify problematic webhooks");
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].get::<_, String>("common_error"), "HTTP 500");
}

/// The guide's two queries of failed rows, and a failed page as the console asks
/// for it, on a queue of 50,000 delivered rows and 5 failed ones: each reads a few
/// pages, where each read the whole queue (a table scan of delivered history that
/// only grows until retention: 0.9 s at 1.2 million rows).
#[tokio::test]
async fn the_failed_rows_queries_read_the_failed_rows_not_the_whole_queue() {
    let db = TestDb::migrated().await;
    let client = db.client().await;
    client
        .batch_execute(
            "INSERT INTO webhook_queue (webhook_id, event_id, event_type, entity_type,
                 entity_id, webhook_url, payload, status, retry_count, max_retries, last_error)
             SELECT md5(g::text)::uuid, g, 'lead_scraped', 'lead', g,
                    'http://127.0.0.1:9/hook', '{\"id\": 1}',
                    CASE WHEN g % 10000 = 0 THEN 'failed' ELSE 'sent' END,
                    CASE WHEN g % 10000 = 0 THEN 3 ELSE 0 END, 3,
                    CASE WHEN g % 10000 = 0 THEN 'HTTP 500' END
             FROM generate_series(1, 50000) g",
        )
        .await
        .expect("a delivered day with five failures");
    client
        .batch_execute("VACUUM ANALYZE webhook_queue")
        .await
        .expect("vacuum");
    let table_pages = db
        .count("SELECT relpages::int8 FROM pg_class WHERE relname = 'webhook_queue'")
        .await;
    assert!(table_pages > 500, "{table_pages}");
    for (what, query, rows) in [
        (
            "Failed Webhooks",
            "SELECT wq.*, COUNT(wrh.id) as retry_attempts
             FROM webhook_queue wq
             LEFT JOIN webhook_retry_history wrh ON wq.id = wrh.webhook_queue_id
             WHERE wq.status = 'failed'
             GROUP BY wq.id
             ORDER BY wq.created_at DESC
             LIMIT 20",
            5,
        ),
        (
            "Identify problematic webhooks",
            "SELECT event_type, webhook_url, COUNT(*) as failure_count,
                    MAX(last_error) as common_error
             FROM webhook_queue
             WHERE status = 'failed' AND retry_count >= max_retries
             GROUP BY event_type, webhook_url
             ORDER BY failure_count DESC",
            1,
        ),
        (
            "the console's failed page",
            "SELECT id, last_error FROM webhook_queue
             WHERE status = 'failed' ORDER BY id DESC LIMIT 51",
            5,
        ),
    ] {
        let explained: serde_json::Value = client
            .query_one(
                &format!("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {query}"),
                &[],
            )
            .await
            .expect(what)
            .get(0);
        let plan = &explained[0]["Plan"];
        let pages = plan["Shared Hit Blocks"].as_i64().unwrap_or(0)
            + plan["Shared Read Blocks"].as_i64().unwrap_or(0);
        assert_eq!(plan["Actual Rows"].as_i64(), Some(rows), "{what}: {plan}");
        assert!(
            pages < 50,
            "{what} read {pages} pages of a {table_pages}-page queue: {plan}"
        );
    }
}

#[tokio::test]
async fn run_with_an_invalid_config_exits_2_naming_the_key() {
    let db = TestDb::empty().await;
    for (var, value, key) in [
        ("RELAY_QUEUE__WORKERS", "0", "queue.workers"),
        ("WEBHOOK_RETRY_DELAYS", "5,soon", "queue.retry_delays"),
        (
            "RELAY_ROUTES__LEAD_SCRAPED__URL",
            "ftp://x/y",
            "routes.lead_scraped.url",
        ),
    ] {
        let out = RelayBuilder::new(&db.url, "http://127.0.0.1:9")
            .env(var, value)
            .output()
            .await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{var}={value}: {stderr}");
        assert!(
            stderr.contains(key),
            "{var}={value} should name {key}: {stderr}"
        );
    }
}

/// Without WEBHOOK_SECRET every delivery went out signed with an empty key (which
/// anyone can forge) and nothing said so. `run` and `check-config` refuse it, naming
/// the key; a relay that only queues (n8n disabled) signs nothing and starts.
#[tokio::test]
async fn without_a_signing_secret_run_and_check_config_refuse_to_deliver() {
    let db = TestDb::migrated().await;
    let builder = RelayBuilder::new(&db.url, "http://127.0.0.1:9").without_env("WEBHOOK_SECRET");
    for command in [vec!["check-config"], vec!["run"]] {
        let out = tokio::time::timeout(T, builder.clone().args(command.clone()).output())
            .await
            .expect("it stops at once");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{command:?}: {stderr}");
        assert!(
            stderr.contains("security.webhook_secret (WEBHOOK_SECRET) is not set"),
            "{command:?}: {stderr}"
        );
    }
    let queuing = builder.clone().env("N8N_ENABLED", "false");
    let out = queuing.clone().args(["check-config"]).output().await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let mut relay = queuing.spawn();
    wait_until("the relay runs, queuing", T, || async {
        relay.log().contains("relay started").then_some(())
    })
    .await;
    assert!(relay.is_running(), "{}", relay.log());
}

/// The older backend's `.env` carries `N8N_API_KEY` "for authenticated requests", an
/// n8n API key; the relay sends it with every delivery, where n8n stores it in each
/// execution. Kept (it is the contract's header), but said at start and by
/// `check-config`.
#[tokio::test]
async fn an_n8n_api_key_is_warned_of_at_start_and_by_check_config() {
    let db = TestDb::migrated().await;
    let builder = RelayBuilder::new(&db.url, "http://127.0.0.1:9")
        .env("N8N_API_KEY", "n8n_api_0123456789abcdef");
    let out = builder.clone().args(["check-config"]).output().await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        stdout.contains("warning: n8n.api_key (N8N_API_KEY) is sent as X-N8N-API-KEY"),
        "{stdout}"
    );
    assert!(!stdout.contains("n8n_api_0123456789abcdef"), "{stdout}");
    let relay = builder.spawn();
    wait_until("the warning at start", T, || async {
        relay
            .log()
            .contains("never to an n8n API key")
            .then_some(())
    })
    .await;
    assert!(!relay.log().contains("n8n_api_0123456789abcdef"));
}

/// Outcomes that come one at a time are written together: a statement costs Postgres
/// far more than a row does (at 200 events/s each outcome was once written alone).
/// Events 5 ms apart, past the 2 ms every outcome batch waits, are recorded by fewer
/// statements than there are events; the log rows one statement writes share its
/// transaction's `created_at`.
#[tokio::test]
async fn outcomes_arriving_one_at_a_time_are_recorded_together() {
    const EVENTS: i64 = 12;
    let db = TestDb::migrated().await;
    let sink = Sink::start().await;
    let _relay = RelayBuilder::new(&db.url, &sink.url()).spawn();
    let client = db.client().await;
    client
        .execute(EMIT_LEAD, &[&0i64])
        .await
        .expect("first event");
    sink.wait_for(1, T).await;

    for lead in 1..=EVENTS {
        client.execute(EMIT_LEAD, &[&lead]).await.expect("event");
        // The pace of the writes, not a wait for the relay.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    sink.wait_for(1 + EVENTS as usize, T).await;
    db.wait_for_queue_status("sent", 1 + EVENTS, T).await;
    let statements = db
        .count(
            "SELECT count(DISTINCT l.created_at) FROM webhook_logs l
             JOIN webhook_queue q ON q.id = l.webhook_queue_id
             WHERE l.direction = 'outgoing' AND q.entity_id > 0",
        )
        .await;
    assert!(
        statements <= EVENTS / 2,
        "{EVENTS} outcomes 5 ms apart were written by {statements} statements"
    );
}

/// A steady trickle costs the database one route per event, no due claim, and two
/// looks for work (the settle when its delivery ends, which arms the wake-up, and a
/// look at its outcome), not a due claim and four or five looks besides. Each due
/// claim reads `webhook_queue_url_claim_idx` and each look
/// `webhook_queue_next_due_idx`, which no other statement of an idle relay reads, so
/// their index scans count them (the statistics are written as the relay's sessions
/// end). Events one at a time, each delivered before the next; the safety sweep (every
/// second here) and the start add a few. Before: 12 due claims and 57 looks for these
/// 12 events; now 1-2 and 24.
#[tokio::test]
async fn a_trickle_of_events_takes_no_due_claims_and_two_looks_per_event() {
    const EVENTS: i64 = 12;
    let db = TestDb::migrated().await;
    let sink = Sink::start().await;
    let mut relay = RelayBuilder::new(&db.url, &sink.url()).spawn();
    let client = db.client().await;
    for lead in 1..=EVENTS {
        client.execute(EMIT_LEAD, &[&lead]).await.expect("event");
        db.wait_for_queue_status("sent", lead, T).await;
    }
    relay.terminate(T).await;
    let relays = "SELECT count(*) FROM pg_stat_activity
                  WHERE datname = current_database() AND application_name LIKE 'n8n-relay%'";
    wait_until("the relay's sessions to end", T, || async {
        (db.count(relays).await == 0).then_some(())
    })
    .await;
    let scans = |index: &'static str| {
        let db = &db;
        async move {
            db.count(&format!(
                "SELECT idx_scan FROM pg_stat_user_indexes WHERE indexrelname = '{index}'"
            ))
            .await
        }
    };
    let claims = scans("webhook_queue_url_claim_idx").await;
    let looks = scans("webhook_queue_next_due_idx").await;
    assert!(
        claims <= EVENTS / 3 && looks <= EVENTS * 2 + 4,
        "{EVENTS} events one at a time took {claims} due claims and {looks} looks for work"
    );
}

/// A writer that disarms the wake-up and then rolls back sends no notification: the
/// next event waits for the safety sweep (every second here), as wakeup.rs says. Once
/// the relay has delivered it, it arms the wake-up again, so that the events after it
/// are notified, not left for the sweep one after another: a settle that trusts its
/// last arming must see that the flag was taken since.
#[tokio::test]
async fn a_wake_up_disarmed_by_a_rolled_back_writer_is_armed_again_after_the_next_event() {
    let db = TestDb::migrated().await;
    let sink = Sink::start().await;
    let _relay = RelayBuilder::new(&db.url, &sink.url()).spawn();
    let mut client = db.client().await;
    client
        .execute(EMIT_LEAD, &[&1i64])
        .await
        .expect("first event");
    db.wait_for_queue_status("sent", 1, T).await;
    db.wait_armed(T).await;

    let tx = client.transaction().await.expect("begin");
    tx.execute(EMIT_LEAD, &[&2i64])
        .await
        .expect("event rolled back");
    tx.rollback().await.expect("rollback");
    assert!(
        !db.wake_up_armed().await,
        "the rolled-back writer took the flag"
    );

    client
        .execute(EMIT_LEAD, &[&3i64])
        .await
        .expect("third event");
    db.wait_for_queue_status("sent", 2, T).await;
    db.wait_armed(T).await;
    let leads: Vec<i64> = sink
        .wait_for(2, T)
        .await
        .iter()
        .filter_map(|r| r.json()["entity_id"].as_i64())
        .collect();
    assert_eq!(leads, vec![1, 3]);
}

/// A row made pending behind an idle relay's back (`n8n-relay queue retry`, a row put
/// back by hand, another relay), with no wake-up of its own, goes out with the next
/// writer's event, not at the safety sweep a minute later: passes that skip work they
/// expect to find nothing must not skip it. The relay has settled (armed its wake-up)
/// before the row appears.
#[tokio::test]
async fn a_row_made_pending_without_a_wake_up_goes_out_with_the_next_event() {
    let db = TestDb::migrated().await;
    let sink = Sink::start().await;
    let _relay = RelayBuilder::new(&db.url, &sink.url())
        .env("WEBHOOK_QUEUE_PROCESSING_INTERVAL", 60)
        .spawn();
    let client = db.client().await;
    client
        .execute(EMIT_LEAD, &[&1i64])
        .await
        .expect("first event");
    db.wait_for_queue_status("sent", 1, T).await;
    db.wait_armed(T).await;

    let url = format!("{}/webhook/lead-scraped", sink.url());
    client
        .execute(
            "INSERT INTO webhook_queue (event_id, event_type, entity_type, entity_id,
                                        webhook_url, payload, status)
             VALUES (-1, 'lead_scraped', 'lead', 99, $1, '{}', 'pending')",
            &[&url],
        )
        .await
        .expect("a pending row");
    client
        .execute(EMIT_LEAD, &[&2i64])
        .await
        .expect("second event");

    let got = sink.wait_for(3, T).await;
    let mut leads: Vec<i64> = got
        .iter()
        .filter_map(|r| r.json()["entity_id"].as_i64())
        .collect();
    leads.sort_unstable();
    assert_eq!(leads, vec![1, 2, 99]);
    db.wait_for_queue_status("sent", 3, T).await;
}
