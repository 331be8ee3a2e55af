//! Steering delivery while it runs: a retry policy per route (schedule, retries,
//! timeout, final statuses), n8n refusing an event for good with `X-Webhook-Abort`,
//! pause and resume at run time, rate limits per URL, endpoint health.

use std::time::Duration;

use relay_tests::{wait_until, RelayBuilder, Reply, Sink, SinkRequest, TestDb};

const T: Duration = Duration::from_secs(30);

async fn emit(db: &TestDb, event: &str, entities: std::ops::RangeInclusive<i64>) {
    db.client()
        .await
        .execute(
            "SELECT webhook_emit($1, 'lead', e, jsonb_build_object('seq', e))
             FROM generate_series($2::int8, $3::int8) e",
            &[&event, entities.start(), entities.end()],
        )
        .await
        .expect("webhook_emit");
}

fn event_of(r: &SinkRequest) -> String {
    r.header("x-webhook-event").unwrap_or_default().to_string()
}

type Row = (String, i32, i32, String);

/// `(status, retry_count, max_retries, last_error)` of the one row of `event`, once
/// it is routed.
async fn try_row_of(db: &TestDb, event: &str) -> Option<Row> {
    let row = db
        .client()
        .await
        .query_opt(
            "SELECT status, retry_count, max_retries, coalesce(last_error, '')
             FROM webhook_queue WHERE event_type = $1",
            &[&event],
        )
        .await
        .expect("queue row")?;
    Some((row.get(0), row.get(1), row.get(2), row.get(3)))
}

async fn row_of(db: &TestDb, event: &str) -> Row {
    try_row_of(db, event).await.expect("the event is routed")
}

async fn wait_status(db: &TestDb, event: &str, status: &str) {
    wait_until(&format!("{event} {status}"), T, || async {
        try_row_of(db, event)
            .await
            .filter(|r| r.0 == status)
            .map(|_| ())
    })
    .await;
}

async fn wait_failed(db: &TestDb, event: &str) {
    wait_status(db, event, "failed").await;
}

/// The history notes of the row of `event`, oldest first.
async fn notes_of(db: &TestDb, event: &str) -> Vec<String> {
    db.client()
        .await
        .query(
            "SELECT coalesce(h.note, '') FROM webhook_retry_history h
             JOIN webhook_queue q ON q.id = h.webhook_queue_id
             WHERE q.event_type = $1 ORDER BY h.id",
            &[&event],
        )
        .await
        .expect("history")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[tokio::test]
async fn a_route_retries_on_its_own_schedule_and_the_others_keep_the_queues() {
    let db = TestDb::migrated().await;
    let sink = Sink::with(|r| {
        if event_of(r) == "lead_scraped" {
            Reply::status(500)
        } else {
            Reply::ok()
        }
    })
    .await;
    let _relay = RelayBuilder::new(&db.url, &sink.url())
        .env("WEBHOOK_RETRY_DELAYS", "60")
        .env("WEBHOOK_MAX_RETRIES", 5)
        .env("RELAY_ROUTES__LEAD_SCRAPED__RETRY_DELAYS", "1,2")
        .env("RELAY_ROUTES__LEAD_SCRAPED__MAX_RETRIES", 2)
        .spawn();
    emit(&db, "lead_scraped", 1..=1).await;
    emit(&db, "lead_qualified", 1..=1).await;
    wait_failed(&db, "lead_scraped").await;

    let attempts: Vec<SinkRequest> = sink
        .requests()
        .into_iter()
        .filter(|r| event_of(r) == "lead_scraped")
        .collect();
    assert_eq!(
        attempts.len(),
        3,
        "the first attempt and max_retries = 2 retries"
    );
    let gaps: Vec<f64> = attempts
        .windows(2)
        .map(|w| (w[1].received_at - w[0].received_at).as_secs_f64())
        .collect();
    // 1 s then 2 s, each within ±20 % jitter (plus a little for the round trips).
    assert!((0.75..1.7).contains(&gaps[0]), "{gaps:?}");
    assert!((1.55..2.9).contains(&gaps[1]), "{gaps:?}");
    let (_, retries, max, _) = row_of(&db, "lead_scraped").await;
    assert_eq!((retries, max), (2, 2));
    wait_status(&db, "lead_qualified", "sent").await;
    let (_, _, max, _) = row_of(&db, "lead_qualified").await;
    assert_eq!(max, 5, "the queue's max_retries");
}

#[tokio::test]
async fn a_final_status_fails_at_once_and_others_still_retry() {
    let db = TestDb::migrated().await;
    let sink = Sink::with(|r| match event_of(r).as_str() {
        "lead_scraped" => Reply::status(410),
        "lead_qualified" if r.nth_for_id == 1 => Reply::status(404),
        "lead_responded" => Reply::Hang,
        _ => Reply::ok(),
    })
    .await;
    let _relay = RelayBuilder::new(&db.url, &sink.url())
        .env("RELAY_QUEUE__FINAL_STATUSES", "[410, 422]")
        .env("RELAY_ROUTES__LEAD_RESPONDED__TIMEOUT_SECONDS", 1)
        .env("RELAY_ROUTES__LEAD_RESPONDED__MAX_RETRIES", 0)
        .spawn();
    emit(&db, "lead_scraped", 1..=1).await;
    emit(&db, "lead_qualified", 1..=1).await;
    emit(&db, "lead_responded", 1..=1).await;
    wait_failed(&db, "lead_scraped").await;
    // The route's own cut (the queue's is 5 s here).
    wait_failed(&db, "lead_responded").await;
    assert_eq!(row_of(&db, "lead_responded").await.3, "timed out after 1 s");
    wait_status(&db, "lead_qualified", "sent").await;

    let scraped = sink
        .requests()
        .iter()
        .filter(|r| event_of(r) == "lead_scraped")
        .count();
    assert_eq!(scraped, 1, "410 is final: no retry");
    let (_, retries, _, error) = row_of(&db, "lead_scraped").await;
    assert_eq!((retries, error.as_str()), (0, "HTTP 410"));
    let notes = notes_of(&db, "lead_scraped").await;
    assert!(
        notes
            .iter()
            .any(|n| n.contains("failed at once") && n.contains("HTTP 410 is a final status")),
        "{notes:?}"
    );
    assert_eq!(row_of(&db, "lead_qualified").await.1, 1, "404 was retried");
}

#[tokio::test]
async fn an_abort_answer_refuses_the_event_for_good_with_its_reason() {
    let db = TestDb::migrated().await;
    let sink = Sink::with(|r| match event_of(r).as_str() {
        "lead_scraped" => Reply::status(409).with_header("X-Webhook-Abort", "lead was merged"),
        // An abort header on a 2xx changes nothing: the delivery succeeded.
        _ => Reply::ok().with_header("X-Webhook-Abort", "true"),
    })
    .await;
    let _relay = RelayBuilder::new(&db.url, &sink.url()).spawn();
    emit(&db, "lead_scraped", 1..=1).await;
    emit(&db, "lead_qualified", 1..=1).await;
    wait_failed(&db, "lead_scraped").await;

    assert_eq!(
        sink.requests()
            .iter()
            .filter(|r| event_of(r) == "lead_scraped")
            .count(),
        1,
        "no retry after an abort"
    );
    let (_, retries, max, error) = row_of(&db, "lead_scraped").await;
    assert_eq!((retries, max), (0, 3), "retries were left, none used");
    assert!(error.contains("aborted: lead was merged"), "{error}");
    let notes = notes_of(&db, "lead_scraped").await;
    assert!(
        notes
            .iter()
            .any(|n| n.contains("X-Webhook-Abort: lead was merged")),
        "{notes:?}"
    );
    db.wait_for_queue_status("sent", 1, T).await;
}

#[tokio::test]
async fn an_invalid_route_policy_is_refused_at_start_naming_the_key() {
    let db = TestDb::migrated().await;
    let sink = Sink::start().await;
    for (key, value, named) in [
        (
            "RELAY_ROUTES__LEAD_SCRAPED__TIMEOUT_SECONDS",
            "500",
            "routes.lead_scraped.timeout_seconds",
        ),
        (
            "RELAY_ROUTES__LEAD_SCRAPED__FINAL_STATUSES",
            "[200]",
            "routes.lead_scraped.final_statuses",
        ),
        (
            "RELAY_ROUTES__LEAD_SCRAPED__MAX_PER_SECOND",
            "0",
            "routes.lead_scraped.max_per_second",
        ),
        ("RELAY_N8N__MAX_PER_SECOND", "-1", "n8n.max_per_second"),
    ] {
        let out = RelayBuilder::new(&db.url, &sink.url())
            .env(key, value)
            .output()
            .await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{key}={value}: {stderr}");
        assert!(stderr.contains(named), "{key}={value}: {stderr}");
    }
}
