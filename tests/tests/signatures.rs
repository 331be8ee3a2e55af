//! Signature schemes and secret rotation, end to end: what a receiver sees on the
//! wire is checked with an independent HMAC implementation (hmac + sha2 + base64 in
//! this file), not with the relay's own signing code.

use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use bytes::Bytes;
use hmac::{Hmac, KeyInit, Mac};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use relay_tests::{wait_until, Relay, RelayBuilder, Sink, SinkRequest, TestDb};
use serde_json::json;
use sha2::Sha256;

const WAIT: Duration = Duration::from_secs(15);
const OUT_SECRET: &str = "whsec_cmVsYXktdG8tbjhuIHN0YW5kYXJkIGtleSAzMiBieQ==";
const IN_SECRET: &str = "whsec_bjhuLXRvLXJlbGF5IHN0YW5kYXJkIGtleSAzMiBieQ==";

fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

/// Standard Webhooks, written out from the specification: `v1,` + base64 of
/// HMAC-SHA256 over `"{id}.{timestamp}.{body}"`, keyed by the base64 after `whsec_`.
fn standard_signature(secret: &str, id: &str, timestamp: &str, body: &[u8]) -> String {
    let key = BASE64
        .decode(secret.strip_prefix("whsec_").expect("whsec_ secret"))
        .expect("base64 secret");
    let mut message = format!("{id}.{timestamp}.").into_bytes();
    message.extend_from_slice(body);
    format!("v1,{}", BASE64.encode(hmac_sha256(&key, &message)))
}

fn standard_relay(db: &TestDb, sink_url: &str) -> RelayBuilder {
    RelayBuilder::new(&db.url, sink_url)
        .env("RELAY_SECURITY__SCHEME", "standard-webhooks")
        .env("WEBHOOK_SECRET", OUT_SECRET)
        .env("N8N_WEBHOOK_SECRET", IN_SECRET)
}

async fn insert_lead(db: &TestDb) -> i64 {
    db.client()
        .await
        .query_one(
            "INSERT INTO leads (business_name) VALUES ('Acme Inc') RETURNING id",
            &[],
        )
        .await
        .expect("insert lead")
        .get(0)
}

async fn webhook_id_of_the_only_row(db: &TestDb) -> String {
    db.client()
        .await
        .query_one("SELECT webhook_id::text FROM webhook_queue", &[])
        .await
        .expect("one queue row")
        .get(0)
}

fn header<'r>(req: &'r SinkRequest, name: &str) -> &'r str {
    req.header(name)
        .unwrap_or_else(|| panic!("{name} missing: {:?}", req.headers))
}

#[tokio::test]
async fn standard_webhooks_deliveries_verify_with_an_independent_implementation() {
    let db = TestDb::migrated().await;
    let sink = Sink::start().await;
    let _relay = standard_relay(&db, &sink.url()).spawn();
    insert_lead(&db).await;

    let got = sink.wait_for(1, WAIT).await;
    let req = &got[0];
    let id = header(req, "webhook-id");
    let timestamp = header(req, "webhook-timestamp");
    assert_eq!(
        id,
        webhook_id_of_the_only_row(&db).await,
        "the queue row's webhook_id"
    );
    assert_eq!(req.json()["id"], id, "the body's id is the message id");
    assert_eq!(req.header("x-webhook-id"), Some(id), "X-Webhook-Id stays");
    let sent_at: u64 = timestamp.parse().expect("unix seconds");
    assert!(relay_core::signature::unix_now().abs_diff(sent_at) < 60);
    assert_eq!(
        header(req, "webhook-signature"),
        standard_signature(OUT_SECRET, id, timestamp, &req.body)
    );
    assert_eq!(req.header("x-webhook-signature-256"), None);
    assert_eq!(req.header("x-webhook-timestamp"), None);
}

/// A callback listener (`n8n-relay callbacks`) with the given configuration.
async fn listener(builder: RelayBuilder) -> (Relay, String) {
    let addr = builder.callbacks_addr();
    let relay = builder.args(["callbacks"]).spawn();
    let a = addr.clone();
    wait_until("the callback listener accepts connections", WAIT, || {
        let a = a.clone();
        async move { tokio::net::TcpStream::connect(&a).await.ok().map(|_| ()) }
    })
    .await;
    (relay, addr)
}

/// POSTs `body` to a callback endpoint with `headers`; the status.
async fn post(addr: &str, endpoint: &str, headers: &[(&str, String)], body: &[u8]) -> u16 {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut request = http::Request::post(format!("http://{addr}/api/v1/webhooks/n8n/{endpoint}"))
        .header("content-type", "application/json");
    for (name, value) in headers {
        request = request.header(*name, value.as_str());
    }
    let response = client
        .request(
            request
                .body(Full::new(Bytes::copy_from_slice(body)))
                .expect("request"),
        )
        .await
        .expect("a response");
    let status = response.status().as_u16();
    let _ = response.into_body().collect().await;
    status
}

async fn demo_awaiting_approval(db: &TestDb) -> i64 {
    let lead = insert_lead(db).await;
    db.client()
        .await
        .query_one(
            "INSERT INTO demo_sites (lead_id, status, url)
             VALUES ($1, 'pending_approval', 'https://demo.example') RETURNING id",
            &[&lead],
        )
        .await
        .expect("insert demo")
        .get(0)
}

async fn approval_status(db: &TestDb, demo: i64) -> Option<String> {
    db.client()
        .await
        .query_one(
            "SELECT approval_status FROM demo_sites WHERE id = $1",
            &[&demo],
        )
        .await
        .expect("demo row")
        .get(0)
}

fn standard_headers(secret: &str, id: &str, body: &[u8]) -> Vec<(&'static str, String)> {
    let timestamp = relay_core::signature::unix_now().to_string();
    vec![
        ("webhook-id", id.to_string()),
        (
            "webhook-signature",
            standard_signature(secret, id, &timestamp, body),
        ),
        ("webhook-timestamp", timestamp),
    ]
}

#[tokio::test]
async fn standard_webhooks_callbacks_are_accepted_and_a_tampered_one_is_refused() {
    let db = TestDb::migrated().await;
    let (_relay, addr) = listener(standard_relay(&db, "http://127.0.0.1:9")).await;
    let demo = demo_awaiting_approval(&db).await;
    let before = approval_status(&db, demo).await;

    let rejected = json!({"demo_id": demo, "approved": false}).to_string();
    let approved = json!({"demo_id": demo, "approved": true}).to_string();
    // Signed for one body, sent with another.
    let headers = standard_headers(IN_SECRET, "msg_tampered", rejected.as_bytes());
    assert_eq!(
        post(&addr, "demo-approval", &headers, approved.as_bytes()).await,
        401
    );
    // Signed with the outgoing secret, which is not n8n's.
    let headers = standard_headers(OUT_SECRET, "msg_wrong_key", approved.as_bytes());
    assert_eq!(
        post(&addr, "demo-approval", &headers, approved.as_bytes()).await,
        401
    );
    // The contract's headers are not what this listener is configured for.
    let ts = relay_core::signature::unix_now();
    let contract = vec![
        ("x-webhook-timestamp", ts.to_string()),
        (
            "x-webhook-signature-256",
            relay_core::signature::sign(IN_SECRET.as_bytes(), ts, approved.as_bytes()),
        ),
    ];
    assert_eq!(
        post(&addr, "demo-approval", &contract, approved.as_bytes()).await,
        401
    );
    assert_eq!(
        approval_status(&db, demo).await,
        before,
        "refusals change nothing"
    );

    let headers = standard_headers(IN_SECRET, "msg_approval_1", approved.as_bytes());
    assert_eq!(
        post(&addr, "demo-approval", &headers, approved.as_bytes()).await,
        200
    );
    assert_eq!(
        approval_status(&db, demo).await.as_deref(),
        Some("approved")
    );
    // The same message again is answered from its receipt, not applied twice.
    assert_eq!(
        post(&addr, "demo-approval", &headers, approved.as_bytes()).await,
        200
    );
    let receipts = db
        .count("SELECT count(*) FROM webhook_callback_receipts")
        .await;
    assert_eq!(receipts, 1, "one receipt for one message");
}

/// The contract's `X-Webhook-Signature-256`, written out: lowercase hex HMAC-SHA256 over
/// `"{timestamp}.{body}"` keyed with the secret's bytes.
fn contract_signature(secret: &str, timestamp: &str, body: &[u8]) -> String {
    let mut message = format!("{timestamp}.").into_bytes();
    message.extend_from_slice(body);
    hex::encode(hmac_sha256(secret.as_bytes(), &message))
}

#[tokio::test]
async fn with_two_secrets_a_delivery_carries_both_signatures_and_a_receiver_knowing_either_verifies(
) {
    let db = TestDb::migrated().await;
    let sink = Sink::start().await;
    let _relay = RelayBuilder::new(&db.url, &sink.url())
        .env("WEBHOOK_SECRET", "old-secret")
        .env("RELAY_SECURITY__WEBHOOK_SECRETS", r#"["new-secret"]"#)
        .spawn();
    insert_lead(&db).await;

    let req = &sink.wait_for(1, WAIT).await[0];
    let timestamp = header(req, "x-webhook-timestamp");
    let listed: Vec<&str> = header(req, "x-webhook-signature-256").split(',').collect();
    assert_eq!(
        listed,
        vec![
            contract_signature("new-secret", timestamp, &req.body),
            contract_signature("old-secret", timestamp, &req.body),
        ],
        "one signature per secret, newest first"
    );
    for secret in ["new-secret", "old-secret"] {
        relay_core::signature::verify(
            secret.as_bytes(),
            Some(timestamp),
            req.header("x-webhook-signature-256"),
            &req.body,
            relay_core::signature::unix_now(),
            300,
        )
        .unwrap_or_else(|e| panic!("a receiver knowing only {secret}: {e}"));
    }
}

#[tokio::test]
async fn standard_webhooks_with_two_secrets_sends_one_v1_entry_per_secret() {
    const NEWER: &str = "whsec_dGhlIG5ld2VyIHJlbGF5LXRvLW44biBrZXksIDMyYg==";
    let db = TestDb::migrated().await;
    let sink = Sink::start().await;
    let _relay = standard_relay(&db, &sink.url())
        .env("RELAY_SECURITY__WEBHOOK_SECRETS", format!(r#"["{NEWER}"]"#))
        .spawn();
    insert_lead(&db).await;

    let req = &sink.wait_for(1, WAIT).await[0];
    let (id, timestamp) = (header(req, "webhook-id"), header(req, "webhook-timestamp"));
    assert_eq!(
        header(req, "webhook-signature"),
        format!(
            "{} {}",
            standard_signature(NEWER, id, timestamp, &req.body),
            standard_signature(OUT_SECRET, id, timestamp, &req.body)
        )
    );
}

#[tokio::test]
async fn callbacks_signed_with_the_old_or_the_new_secret_are_both_accepted() {
    let db = TestDb::migrated().await;
    let builder = RelayBuilder::new(&db.url, "http://127.0.0.1:9")
        .env("N8N_WEBHOOK_SECRET", "cb-old")
        .env("RELAY_SECURITY__N8N_WEBHOOK_SECRETS", r#"["cb-new"]"#);
    let (_relay, addr) = listener(builder).await;
    for (secret, status) in [("cb-old", 200), ("cb-new", 200), ("cb-stranger", 401)] {
        let demo = demo_awaiting_approval(&db).await;
        let body = json!({"demo_id": demo, "approved": true}).to_string();
        let ts = relay_core::signature::unix_now().to_string();
        let headers = vec![
            (
                "x-webhook-signature-256",
                contract_signature(secret, &ts, body.as_bytes()),
            ),
            ("x-webhook-timestamp", ts),
        ];
        assert_eq!(
            post(&addr, "demo-approval", &headers, body.as_bytes()).await,
            status,
            "signed with {secret}"
        );
        let expected = (status == 200).then(|| "approved".to_string());
        assert_eq!(approval_status(&db, demo).await, expected, "{secret}");
    }
}

#[tokio::test]
async fn check_config_shows_the_active_secrets_by_fingerprint_and_never_in_clear() {
    use sha2::Digest as _;
    let fingerprint = |s: &str| hex::encode(&sha2::Sha256::digest(s.as_bytes())[..4]);
    let builder = RelayBuilder::new("postgres://postgres@127.0.0.1:9/x", "http://127.0.0.1:9")
        .env("WEBHOOK_SECRET", "Old-Signing-Secret-1")
        .env(
            "RELAY_SECURITY__WEBHOOK_SECRETS",
            r#"["New-Signing-Secret-2"]"#,
        )
        .env("N8N_WEBHOOK_SECRET", "Callback-Secret-3");
    let table = builder.clone().args(["check-config"]).output().await;
    assert!(table.status.success(), "{table:?}");
    let table = String::from_utf8(table.stdout).expect("utf8");
    let json = builder.args(["check-config", "--json"]).output().await;
    let json: serde_json::Value = serde_json::from_slice(&json.stdout).expect("JSON");

    let line = |fp: &str| {
        table
            .lines()
            .find(|l| l.contains(fp))
            .unwrap_or_else(|| panic!("{fp} not shown:\n{table}"))
            .to_string()
    };
    let new = line(&fingerprint("New-Signing-Secret-2"));
    let old = line(&fingerprint("Old-Signing-Secret-1"));
    assert!(
        new.contains("signing")
            && new.contains("1.")
            && new.contains("security.webhook_secrets[0]"),
        "{new}"
    );
    assert!(
        old.contains("2.") && old.contains("security.webhook_secret"),
        "{old}"
    );
    assert!(line(&fingerprint("Callback-Secret-3")).contains("callbacks"));
    assert_eq!(
        json["active_secrets"]["signing"],
        json!([
            {"key": "security.webhook_secrets[0]", "sha256": fingerprint("New-Signing-Secret-2")},
            {"key": "security.webhook_secret", "sha256": fingerprint("Old-Signing-Secret-1")},
        ])
    );
    for secret in [
        "Old-Signing-Secret-1",
        "New-Signing-Secret-2",
        "Callback-Secret-3",
    ] {
        assert!(
            !table.contains(secret) && !json.to_string().contains(secret),
            "{secret} shown"
        );
    }
}
