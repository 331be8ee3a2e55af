//! Failed deliveries: retried on the schedule (or the server's Retry-After), recorded
//! in webhook_logs and webhook_retry_history, and `failed` with last_error at the end.

use std::time::Duration;

use relay_tests::{wait_until, RelayBuilder, Reply, Sink, TestDb};

const T: Duration = Duration::from_secs(20);

async fn insert_lead(db: &TestDb) {
    db.client()
        .await
        .execute("INSERT INTO leads (business_name) VALUES ('Acme Inc')", &[])
        .await
        .expect("insert a lead");
}

async fn wait_for_status(db: &TestDb, status: &'static str) {
    wait_until(&format!("the row is {status}"), T, || async {
        (db.count(&format!(
            "SELECT count(*) FROM webhook_queue WHERE status = '{status}'"
        ))
        .await
            == 1)
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_500_then_200_is_sent_on_the_second_attempt_with_the_failure_in_retry_history() {
    let db = TestDb::migrated().await;
    let sink = Sink::first_attempt(Reply::status(500)).await;
    let _relay = RelayBuilder::new(&db.url, &sink.url()).spawn();
    insert_lead(&db).await;
    let got = sink.wait_for(2, T).await;
    wait_for_status(&db, "sent").await;

    assert_eq!(
        got[0].webhook_id(),
        got[1].webhook_id(),
        "same idempotency key"
    );
    assert_eq!(
        got[0].body, got[1].body,
        "the body is stable across retries"
    );
    assert_eq!(got[0].header("x-webhook-attempt"), Some("1"));
    assert_eq!(got[1].header("x-webhook-attempt"), Some("2"));
    for r in &got {
        r.verify_signature();
    }
    let gap = got[1].received_at - got[0].received_at;
    // 1 s within the schedule's ±20 % jitter (relay_core::retry::JITTER).
    assert!(
        gap >= Duration::from_millis(750),
        "retry delay of 1 s kept: {gap:?}"
    );

    let client = db.client().await;
    let row = client
        .query_one(
            "SELECT retry_count, last_response_status FROM webhook_queue",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 1);
    assert_eq!(row.get::<_, Option<i32>>(1), Some(200));
    let history = client
        .query(
            "SELECT attempt, response_status, error_message, next_attempt_at IS NOT NULL
             FROM webhook_retry_history",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(history.len(), 1, "one failed attempt");
    assert_eq!(history[0].get::<_, i32>(0), 1);
    assert_eq!(history[0].get::<_, Option<i32>>(1), Some(500));
    assert_eq!(
        history[0].get::<_, Option<String>>(2).as_deref(),
        Some("HTTP 500")
    );
    assert!(history[0].get::<_, bool>(3));
    let logs = client
        .query(
            "SELECT attempt, response_status FROM webhook_logs ORDER BY id",
            &[],
        )
        .await
        .unwrap();
    let logs: Vec<(Option<i32>, Option<i32>)> = logs.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(logs, [(Some(1), Some(500)), (Some(2), Some(200))]);
}

#[tokio::test]
async fn always_500_ends_failed_after_max_retries_with_last_error() {
    let db = TestDb::migrated().await;
    let sink = Sink::with(|_| Reply::status(500)).await;
    let _relay = RelayBuilder::new(&db.url, &sink.url())
        .env("WEBHOOK_MAX_RETRIES", 2)
        .spawn();
    insert_lead(&db).await;
    wait_for_status(&db, "failed").await;

    assert_eq!(sink.count(), 3, "the first attempt and two retries");
    let row = db
        .client()
        .await
        .query_one(
            "SELECT retry_count, max_retries, last_error, last_response_status,
                    lease_expires_at IS NULL
             FROM webhook_queue",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 2);
    assert_eq!(row.get::<_, i32>(1), 2);
    assert_eq!(row.get::<_, Option<String>>(2).as_deref(), Some("HTTP 500"));
    assert_eq!(row.get::<_, Option<i32>>(3), Some(500));
    assert!(row.get::<_, bool>(4));
    assert_eq!(
        db.count("SELECT count(*) FROM webhook_retry_history WHERE response_status = 500")
            .await,
        3
    );
    assert_eq!(
        db.count(
            "SELECT count(*) FROM webhook_retry_history
             WHERE attempt = 3 AND next_attempt_at IS NULL AND note LIKE 'failed after 3%'"
        )
        .await,
        1,
        "the last attempt says the row gave up"
    );
}

#[tokio::test]
async fn a_hanging_sink_is_cut_at_the_timeout_and_retried() {
    let db = TestDb::migrated().await;
    let sink = Sink::first_attempt(Reply::Hang).await;
    let _relay = RelayBuilder::new(&db.url, &sink.url())
        .env("WEBHOOK_TIMEOUT_SECONDS", 1)
        .env("RELAY_QUEUE__LEASE_SECONDS", 5)
        .spawn();
    insert_lead(&db).await;
    let got = sink.wait_for(2, T).await;
    wait_for_status(&db, "sent").await;

    // 1 s timeout, then the 1 s retry delay (±20 % jitter).
    let gap = got[1].received_at - got[0].received_at;
    assert!(
        gap >= Duration::from_millis(1700) && gap < Duration::from_secs(5),
        "cut at the timeout, then retried: {gap:?}"
    );
    let history = db
        .client()
        .await
        .query_one(
            "SELECT error_message, response_status, duration_ms FROM webhook_retry_history",
            &[],
        )
        .await
        .unwrap();
    let error: String = history.get(0);
    assert!(error.contains("timed out after 1 s"), "{error}");
    assert_eq!(history.get::<_, Option<i32>>(1), None);
    let ms: i32 = history.get(2);
    assert!((900..3000).contains(&ms), "{ms} ms");
}

#[tokio::test]
async fn retry_after_from_the_server_replaces_the_scheduled_delay() {
    let db = TestDb::migrated().await;
    let sink = Sink::first_attempt(Reply::status(503).with_header("Retry-After", "2")).await;
    // The schedule alone would wait a minute.
    let _relay = RelayBuilder::new(&db.url, &sink.url())
        .env("WEBHOOK_RETRY_DELAYS", 60)
        .spawn();
    insert_lead(&db).await;
    let got = sink.wait_for(2, T).await;
    let gap = got[1].received_at - got[0].received_at;
    assert!(
        gap >= Duration::from_millis(1900) && gap < Duration::from_secs(5),
        "retried after Retry-After's 2 s: {gap:?}"
    );
    wait_for_status(&db, "sent").await;
    assert_eq!(
        db.count("SELECT count(*) FROM webhook_retry_history WHERE note LIKE '%Retry-After%'")
            .await,
        1
    );
}

/// A `Retry-After: 0` (a proxy's answer; a date already past reads the same) replaced
/// the schedule: every retry went within a second and the row was failed before n8n
/// could recover.
#[tokio::test]
async fn a_retry_after_of_zero_leaves_the_schedule_in_force() {
    let db = TestDb::migrated().await;
    let sink = Sink::first_attempt(Reply::status(503).with_header("Retry-After", "0")).await;
    let _relay = RelayBuilder::new(&db.url, &sink.url())
        .env("WEBHOOK_RETRY_DELAYS", 2)
        .spawn();
    insert_lead(&db).await;
    let got = sink.wait_for(2, T).await;
    let gap = got[1].received_at - got[0].received_at;
    assert!(
        gap >= Duration::from_millis(1500),
        "retried on the schedule's 2 s (±20 %), not at once: {gap:?}"
    );
    wait_for_status(&db, "sent").await;
}

#[tokio::test]
async fn a_connection_refused_is_retried_like_any_failure() {
    let db = TestDb::migrated().await;
    // Nothing listens on port 9 of loopback.
    let _relay = RelayBuilder::new(&db.url, "http://127.0.0.1:9")
        .env("WEBHOOK_MAX_RETRIES", 1)
        .spawn();
    insert_lead(&db).await;
    wait_for_status(&db, "failed").await;
    let error: String = db
        .client()
        .await
        .query_one("SELECT last_error FROM webhook_queue", &[])
        .await
        .unwrap()
        .get(0);
    assert!(error.contains("connection error"), "{error}");
    assert_eq!(
        db.count("SELECT count(*) FROM webhook_retry_history").await,
        2
    );
}

/// An endpoint that says why it refuses: the n8n-relay trigger node (a wrong secret
/// or scheme, a clock minutes off) and n8n itself (a workflow not active) answer with
/// a reason, and `last_error` and the history carry it, where both read "HTTP 401" or
/// "HTTP 404" and the reason sat only in `webhook_logs.response_body`.
#[tokio::test]
async fn a_refusal_with_a_reason_puts_the_reason_in_last_error() {
    let db = TestDb::migrated().await;
    let sink = Sink::with(|r| {
        if r.path.ends_with("lead-scraped") {
            Reply::Body(
                401,
                r#"{"error":"invalid or expired signature","detail":"missing x-webhook-signature-256 header"}"#
                    .into(),
            )
        } else {
            Reply::Body(
                404,
                r#"{"code":404,"message":"The requested webhook \"POST lead-qualified\" is not registered.","hint":"activate the workflow"}"#
                    .into(),
            )
        }
    })
    .await;
    let _relay = RelayBuilder::new(&db.url, &sink.url())
        .env("WEBHOOK_MAX_RETRIES", 0)
        .spawn();
    db.client()
        .await
        .batch_execute(
            "INSERT INTO leads (id, business_name, status) VALUES (1, 'Acme Inc', 'qualified')",
        )
        .await
        .expect("a lead inserted qualified");
    wait_until("both failed", T, || async {
        (db.count("SELECT count(*) FROM webhook_queue WHERE status = 'failed'")
            .await
            == 2)
            .then_some(())
    })
    .await;
    let errors: Vec<(String, String)> = db
        .client()
        .await
        .query(
            "SELECT q.event_type, q.last_error FROM webhook_queue q ORDER BY q.event_type",
            &[],
        )
        .await
        .expect("rows")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        errors,
        [
            (
                "lead_qualified".to_string(),
                "HTTP 404: The requested webhook \"POST lead-qualified\" is not registered."
                    .to_string()
            ),
            (
                "lead_scraped".to_string(),
                "HTTP 401: invalid or expired signature: missing x-webhook-signature-256 header"
                    .to_string()
            ),
        ]
    );
    assert_eq!(
        db.count(
            "SELECT count(*) FROM webhook_retry_history WHERE error_message LIKE 'HTTP 40_: %'"
        )
        .await,
        2,
        "the history says it too"
    );
}
