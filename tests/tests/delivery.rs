//! Delivery end to end: a business write becomes one signed POST with the contract's
//! headers and body, for every event type and every SQL path.

use std::time::Duration;

use relay_tests::relay::TEST_WEBHOOK_SECRET;
use relay_tests::{wait_until, RelayBuilder, Sink, SinkRequest, TestDb};

const T: Duration = Duration::from_secs(15);

fn verify_signature(req: &SinkRequest) -> u64 {
    relay_core::signature::verify(
        TEST_WEBHOOK_SECRET.as_bytes(),
        req.header("x-webhook-timestamp"),
        req.header("x-webhook-signature-256"),
        &req.body,
        relay_core::signature::unix_now(),
        300,
    )
    .unwrap_or_else(|e| panic!("signature does not verify: {e}"))
}

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
    let ts = verify_signature(req);
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
