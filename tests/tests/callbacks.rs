//! The callback listener (`n8n-relay callbacks`), driven over real HTTP against a
//! real database: each endpoint changes exactly what it should, every refusal
//! changes nothing, replays are answered once, slow or oversized clients are cut off.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use relay_core::signature;
use relay_tests::relay::TEST_N8N_SECRET;
use relay_tests::{wait_until, Relay, RelayBuilder, Sink, TestDb};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const N8N: &str = "/api/v1/webhooks/n8n";
const WAIT: Duration = Duration::from_secs(10);

/// A callback listener on its own database.
struct Listener {
    db: TestDb,
    relay: Relay,
    addr: String,
}

impl Listener {
    async fn start() -> Listener {
        Listener::start_with(|b| b).await
    }

    async fn start_with(configure: impl FnOnce(RelayBuilder) -> RelayBuilder) -> Listener {
        let db = TestDb::migrated().await;
        // Nothing is delivered by `callbacks`; the n8n URL only shows up in health.
        let builder =
            configure(RelayBuilder::new(&db.url, "http://127.0.0.1:9").args(["callbacks"]));
        Listener::spawn(db, builder).await
    }

    async fn spawn(db: TestDb, builder: RelayBuilder) -> Listener {
        let addr = builder.callbacks_addr();
        let relay = builder.spawn();
        let a = addr.clone();
        wait_until("the callback listener accepts connections", WAIT, || {
            let a = a.clone();
            async move { TcpStream::connect(&a).await.ok().map(|_| ()) }
        })
        .await;
        Listener { db, relay, addr }
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, String)],
        body: &[u8],
    ) -> Answer {
        send(&self.addr, method, path, headers, body).await
    }

    /// A POST signed now with the listener's secret.
    async fn post(&self, endpoint: &str, body: &Value) -> Answer {
        let body = body.to_string().into_bytes();
        let headers = signed(&body, signature::unix_now());
        self.send("POST", &format!("{N8N}/{endpoint}"), &headers, &body)
            .await
    }

    async fn query(&self, sql: &str) -> Vec<tokio_postgres::Row> {
        self.db
            .client()
            .await
            .query(sql, &[])
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    async fn json(&self, sql: &str) -> Value {
        let rows = self.query(sql).await;
        rows.first()
            .map(|r| r.get::<_, Option<Value>>(0).unwrap_or(Value::Null))
            .unwrap_or(Value::Null)
    }

    /// Everything a callback may change, as JSON, to compare before and after.
    async fn snapshot(&self) -> Value {
        let mut all = serde_json::Map::new();
        for table in [
            "leads",
            "demo_sites",
            "videos",
            "workflow_runs",
            "webhook_events",
            "webhook_callback_receipts",
            "webhook_queue",
        ] {
            let rows = self
                .json(&format!(
                    "SELECT coalesce(jsonb_agg(t ORDER BY t), '[]') FROM {table} t"
                ))
                .await;
            all.insert(table.into(), rows);
        }
        Value::Object(all)
    }

    async fn wait_for_logs(&self, n: i64) {
        let db = &self.db;
        wait_until(
            &format!("{n} incoming webhook_logs rows"),
            WAIT,
            || async move {
                let count = db
                    .count("SELECT count(*) FROM webhook_logs WHERE direction = 'incoming'")
                    .await;
                (count >= n).then_some(())
            },
        )
        .await;
    }

    /// A lead with one demo site and one video awaiting approval: (lead, demo, video).
    async fn lead_with_assets(&self) -> (i64, i64, i64) {
        let row = &self
            .query(
                "WITH l AS (INSERT INTO leads (business_name) VALUES ('Acme Inc') RETURNING id), \
                 d AS (INSERT INTO demo_sites (lead_id, status, url) \
                       SELECT id, 'pending_approval', 'https://demo.example' FROM l RETURNING id, lead_id), \
                 v AS (INSERT INTO videos (lead_id, demo_site_id, status) \
                       SELECT lead_id, id, 'pending_approval' FROM d RETURNING id) \
                 SELECT (SELECT id FROM l), (SELECT id FROM d), (SELECT id FROM v)",
            )
            .await[0];
        (row.get(0), row.get(1), row.get(2))
    }

    async fn events(&self, event: &str) -> i64 {
        self.db
            .count(&format!(
                "SELECT count(*) FROM webhook_events WHERE event_type = '{event}'"
            ))
            .await
    }
}

#[derive(Debug)]
struct Answer {
    status: u16,
    headers: http::HeaderMap,
    body: Bytes,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "answer is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    /// A refusal: the status, `{"error", "detail"}`, and the detail mentions `needle`.
    fn assert_refused(&self, status: u16, needle: &str) {
        let body = self.json();
        assert_eq!(self.status, status, "{body}");
        assert!(body["error"].is_string(), "{body}");
        let detail = body["detail"].as_str().unwrap_or_default();
        assert!(
            detail.to_lowercase().contains(&needle.to_lowercase()),
            "detail {detail:?} should mention {needle:?}"
        );
    }
}

fn signed(body: &[u8], timestamp: u64) -> Vec<(&'static str, String)> {
    vec![
        ("content-type", "application/json".into()),
        ("x-webhook-timestamp", timestamp.to_string()),
        (
            "x-webhook-signature-256",
            signature::sign(TEST_N8N_SECRET.as_bytes(), timestamp, body),
        ),
    ]
}

async fn send(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> Answer {
    let stream = TcpStream::connect(addr)
        .await
        .expect("connect to the listener");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let mut request = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr);
    for (k, v) in headers {
        request = request.header(*k, v.as_str());
    }
    let request = request
        .body(Full::new(Bytes::copy_from_slice(body)))
        .expect("request");
    let response = tokio::time::timeout(WAIT, sender.send_request(request))
        .await
        .expect("an answer in time")
        .expect("a response");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("response body")
        .to_bytes();
    Answer {
        status,
        headers,
        body,
    }
}

/// Reads from a raw connection until the server closes it or `within` passes.
async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> Option<String> {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(String::from_utf8_lossy(&seen).into_owned()),
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
            Err(_) => return None,
        }
    }
}

/// An n8n expression inside quotes sends `"demo_id": "456"` and `"approved": "true"`;
/// the backend this replaces took them, and they were a 400 here.
#[tokio::test]
async fn an_approval_with_its_id_and_decision_as_text_is_applied() {
    let l = Listener::start().await;
    let (_lead, demo, _video) = l.lead_with_assets().await;
    let answer = l
        .post(
            "demo-approval",
            &json!({"demo_id": demo.to_string(), "approved": "true"}),
        )
        .await;
    assert_eq!(answer.status, 200, "{:?}", answer.json());
    assert_eq!(answer.json()["demo_id"], demo);
    assert_eq!(
        l.json(&format!(
            "SELECT to_jsonb(status) FROM demo_sites WHERE id = {demo}"
        ))
        .await,
        "approved"
    );
}

/// A migrating user's `demo_sites` without a `reviewer` column: the answer names the
/// column, where it said only "the relay's log has the reason" to the workflow builder.
#[tokio::test]
async fn an_approval_the_tables_cannot_take_is_refused_naming_what_is_missing() {
    let l = Listener::start().await;
    let (_lead, demo, _video) = l.lead_with_assets().await;
    l.query("ALTER TABLE demo_sites DROP COLUMN reviewer").await;
    let answer = l
        .post("demo-approval", &json!({"demo_id": demo, "approved": true}))
        .await;
    assert_eq!(answer.status, 500, "{:?}", answer.json());
    assert_eq!(answer.json()["error"], "internal_error");
    let detail = answer.json()["detail"].as_str().unwrap_or("").to_string();
    assert!(detail.contains("\"reviewer\""), "{detail}");
    assert_eq!(
        l.json(&format!(
            "SELECT to_jsonb(status) FROM demo_sites WHERE id = {demo}"
        ))
        .await,
        "pending_approval",
        "nothing changed"
    );
}

/// A business trigger's own RAISE under one of those codes is not Postgres naming a
/// column: its text, which may hold anything, stays in the relay's log.
#[tokio::test]
async fn a_business_triggers_own_refusal_is_not_echoed_to_n8n() {
    let l = Listener::start().await;
    let (_lead, demo, _video) = l.lead_with_assets().await;
    l.db.client()
        .await
        .batch_execute(
            "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN RAISE EXCEPTION 'card 4111-1111 on file' USING ERRCODE = '42501'; END $$;
             CREATE TRIGGER refuse BEFORE UPDATE ON demo_sites
                 FOR EACH ROW EXECUTE FUNCTION refuse();",
        )
        .await
        .expect("a business trigger that refuses");
    let answer = l
        .post("demo-approval", &json!({"demo_id": demo, "approved": true}))
        .await;
    assert_eq!(answer.status, 500, "{:?}", answer.json());
    let detail = answer.json()["detail"].as_str().unwrap_or("").to_string();
    assert!(!detail.contains("4111"), "{detail}");
}

#[tokio::test]
async fn demo_approval_updates_the_row_emits_demo_completed_and_answers_like_the_guide() {
    let l = Listener::start().await;
    let (lead, demo, _video) = l.lead_with_assets().await;
    let untouched = l
        .json(&format!(
            "SELECT to_jsonb(v) FROM videos v WHERE lead_id = {lead}"
        ))
        .await;
    let before = l.events("demo_completed").await;

    let answer = l
        .post(
            "demo-approval",
            &json!({"demo_id": demo, "approved": true, "reviewer": "admin@example.com",
                    "notes": "Looks great, proceed with video", "n8n_extra": {"run": 1}}),
        )
        .await;

    assert_eq!(answer.status, 200, "{:?}", answer.json());
    assert_eq!(
        answer.json(),
        json!({"status": "approved", "demo_id": demo, "lead_id": lead, "action": "continue",
               "next_step": "video_generation",
               "message": "Demo approved, triggering video generation"})
    );
    let row = l
        .json(&format!(
            "SELECT jsonb_build_object('approval_status', approval_status, 'status', status, \
             'reviewer', reviewer, 'review_notes', review_notes, \
             'reviewed', reviewed_at IS NOT NULL, 'touched', updated_at > created_at) \
             FROM demo_sites WHERE id = {demo}"
        ))
        .await;
    assert_eq!(
        row,
        json!({"approval_status": "approved", "status": "approved", "reviewer": "admin@example.com",
               "review_notes": "Looks great, proceed with video", "reviewed": true, "touched": true})
    );
    assert_eq!(
        l.events("demo_completed").await,
        before + 1,
        "the trigger emitted"
    );
    let event = l
        .json("SELECT to_jsonb(e) FROM webhook_events e WHERE event_type = 'demo_completed'")
        .await;
    assert_eq!(event["entity_id"], json!(demo));
    assert_eq!(
        event["payload"]["review_notes"],
        "Looks great, proceed with video"
    );
    assert_eq!(
        l.json(&format!(
            "SELECT to_jsonb(v) FROM videos v WHERE lead_id = {lead}"
        ))
        .await,
        untouched,
        "the video is not touched"
    );
    l.wait_for_logs(1).await;
    let log = l
        .json("SELECT to_jsonb(w) FROM webhook_logs w WHERE direction = 'incoming'")
        .await;
    assert_eq!(log["event_type"], "demo-approval");
    assert_eq!(log["endpoint"], format!("{N8N}/demo-approval"));
    assert_eq!(log["response_status"], 200);
    assert!(log["duration_ms"].is_number());
    assert_eq!(log["error_message"], Value::Null);
}

#[tokio::test]
async fn a_rejection_stops_the_pipeline_and_emits_nothing() {
    let l = Listener::start().await;
    let (lead, demo, _) = l.lead_with_assets().await;
    let before = l.db.count("SELECT count(*) FROM webhook_events").await;
    let answer = l
        .post(
            "demo-approval",
            &json!({"demo_id": demo, "approved": false}),
        )
        .await;
    assert_eq!(
        answer.json(),
        json!({"status": "rejected", "demo_id": demo, "lead_id": lead, "action": "stop",
               "next_step": null, "message": "Demo rejected, stopping the pipeline"})
    );
    let row = l
        .json(&format!(
            "SELECT jsonb_build_object('a', approval_status, 's', status, 'r', reviewer) \
             FROM demo_sites WHERE id = {demo}"
        ))
        .await;
    assert_eq!(row, json!({"a": "rejected", "s": "rejected", "r": null}));
    assert_eq!(
        l.db.count("SELECT count(*) FROM webhook_events").await,
        before,
        "rejected emits nothing"
    );
}

#[tokio::test]
async fn video_approval_updates_the_video_and_emits_video_completed() {
    let l = Listener::start().await;
    let (lead, _, video) = l.lead_with_assets().await;
    let answer = l
        .post(
            "video-approval",
            &json!({"video_id": video, "approved": true, "reviewer": "admin@example.com",
                    "notes": "Perfect, send the email"}),
        )
        .await;
    assert_eq!(
        answer.json(),
        json!({"status": "approved", "video_id": video, "lead_id": lead, "action": "continue",
               "next_step": "email_outreach",
               "message": "Video approved, triggering email outreach"})
    );
    assert_eq!(
        l.json(&format!(
            "SELECT to_jsonb(array[status, approval_status, review_notes]) FROM videos WHERE id = {video}"
        ))
        .await,
        json!(["approved", "approved", "Perfect, send the email"])
    );
    assert_eq!(l.events("video_completed").await, 1);
}

#[tokio::test]
async fn workflow_reports_upsert_one_run_per_execution_id() {
    let l = Listener::start().await;
    let status = json!({"workflow_id": "lead-processing-pipeline", "execution_id": "exec_123",
                        "lead_id": 123, "current_step": "scrape", "extra": [1, 2]});
    let answer = l.post("workflow-status", &status).await;
    assert_eq!(
        answer.json(),
        json!({"status": "received", "workflow_id": "lead-processing-pipeline",
               "execution_id": "exec_123", "message": "Workflow status updated"})
    );
    let run = l
        .json("SELECT to_jsonb(r) FROM workflow_runs r WHERE execution_id = 'exec_123'")
        .await;
    assert_eq!(run["status"], "running");
    assert_eq!(run["current_step"], "scrape");
    assert_eq!(run["payload"], status, "the whole request is kept");

    let completed = json!({"workflow_id": "lead-processing-pipeline", "execution_id": "exec_123",
                           "lead_id": 123, "status": "success", "duration_ms": 45000});
    let answer = l.post("workflow-completed", &completed).await;
    assert_eq!(
        answer.json(),
        json!({"status": "received", "workflow_id": "lead-processing-pipeline",
               "execution_id": "exec_123", "message": "Workflow completion logged successfully"})
    );
    assert_eq!(l.db.count("SELECT count(*) FROM workflow_runs").await, 1);
    let run = l
        .json("SELECT to_jsonb(r) FROM workflow_runs r WHERE execution_id = 'exec_123'")
        .await;
    assert_eq!(run["status"], "success");
    assert_eq!(run["duration_ms"], 45000);
    assert_eq!(run["lead_id"], 123);
    assert_eq!(
        run["current_step"], "scrape",
        "kept from the earlier report"
    );
    assert_eq!(run["payload"], completed);
    assert_eq!(
        l.db.count("SELECT count(*) FROM webhook_events").await,
        0,
        "status reports emit nothing"
    );

    // A progress report that arrives after the completion (n8n retried it) is
    // acknowledged and changes nothing: the run stays ended.
    let late = json!({"workflow_id": "lead-processing-pipeline", "execution_id": "exec_123",
                      "current_step": "scrape", "status": "running"});
    assert_eq!(l.post("workflow-status", &late).await.status, 200);
    let run = l
        .json("SELECT to_jsonb(r) FROM workflow_runs r WHERE execution_id = 'exec_123'")
        .await;
    assert_eq!(run["status"], "success");
    assert_eq!(run["payload"], completed);
}

#[tokio::test]
async fn an_error_notification_records_the_error_and_emits_workflow_error() {
    let l = Listener::start().await;
    let body = json!({"workflow_id": "demo-deployment", "execution_id": "exec_9", "lead_id": 77,
                      "error": {"message": "Vercel said no", "stack": "at deploy()"},
                      "workflow_name": "Demo Deployment"});
    let answer = l.post("error-notification", &body).await;
    assert_eq!(answer.status, 200, "{}", answer.json());
    let reply = answer.json();
    assert_eq!(reply["status"], "received");
    assert_eq!(reply["execution_id"], "exec_9");
    let run = l
        .json("SELECT to_jsonb(r) FROM workflow_runs r WHERE execution_id = 'exec_9'")
        .await;
    assert_eq!(run["status"], "error");
    assert_eq!(run["error_message"], "Vercel said no");
    assert_eq!(run["lead_id"], 77);
    let event = l
        .json("SELECT to_jsonb(e) FROM webhook_events e WHERE event_type = 'workflow_error'")
        .await;
    assert_eq!(event["id"], reply["event_id"]);
    assert_eq!(event["entity_type"], "workflow");
    assert_eq!(event["entity_id"], 77);
    assert_eq!(event["payload"]["workflow_id"], "demo-deployment");
    assert_eq!(event["payload"]["execution_id"], "exec_9");
    assert_eq!(event["payload"]["error_message"], "Vercel said no");
    assert_eq!(event["payload"]["workflow_name"], "Demo Deployment");

    // The same report signed anew at another second (n8n's Retry On Fail after a lost
    // answer): not a replay the receipts know, yet the failure is announced once.
    let bytes = body.to_string().into_bytes();
    let headers = signed(&bytes, signature::unix_now() - 5);
    let again = l
        .send(
            "POST",
            &format!("{N8N}/error-notification"),
            &headers,
            &bytes,
        )
        .await;
    assert_eq!(again.status, 200);
    assert!(again.json().get("event_id").is_none(), "{}", again.json());
    assert_eq!(
        l.db.count("SELECT count(*) FROM webhook_events WHERE event_type = 'workflow_error'")
            .await,
        1
    );
}

#[tokio::test]
async fn every_refusal_has_its_status_and_changes_nothing() {
    let l = Listener::start_with(|b| b.env("RELAY_CALLBACKS__MAX_BODY_BYTES", 2048)).await;
    let (_, demo, _) = l.lead_with_assets().await;
    let before = l.snapshot().await;
    let now = signature::unix_now();
    let good = json!({"demo_id": demo, "approved": true})
        .to_string()
        .into_bytes();
    let approval = format!("{N8N}/demo-approval");
    let signed_now = |body: &[u8]| signed(body, now);
    let without =
        |headers: Vec<(&'static str, String)>, name: &str| -> Vec<(&'static str, String)> {
            headers.into_iter().filter(|(k, _)| *k != name).collect()
        };
    let with = |mut headers: Vec<(&'static str, String)>, name: &'static str, value: &str| {
        headers.retain(|(k, _)| *k != name);
        headers.push((name, value.to_string()));
        headers
    };
    let big = format!(
        "{{\"demo_id\":{demo},\"approved\":true,\"notes\":\"{}\"}}",
        "x".repeat(4000)
    )
    .into_bytes();
    // Digits as text are an id (the older backend took them); words are not.
    let mistyped = json!({"demo_id": format!("demo {demo}"), "approved": true})
        .to_string()
        .into_bytes();
    let missing = json!({"approved": true}).to_string().into_bytes();
    let unknown = json!({"demo_id": demo + 1000, "approved": true})
        .to_string()
        .into_bytes();
    let malformed = b"{\"demo_id\": 1, \"approved\": tru".to_vec();

    type Case = (
        &'static str,
        String,
        String,
        Vec<(&'static str, String)>,
        Vec<u8>,
        u16,
        &'static str,
    );
    let cases: Vec<Case> = vec![
        (
            "unknown path",
            "POST".into(),
            format!("{N8N}/demo-aproval"),
            signed_now(&good),
            good.clone(),
            404,
            "no endpoint",
        ),
        (
            "wrong method",
            "GET".into(),
            approval.clone(),
            vec![],
            vec![],
            405,
            "POST",
        ),
        (
            "no content type",
            "POST".into(),
            approval.clone(),
            without(signed_now(&good), "content-type"),
            good.clone(),
            415,
            "Content-Type",
        ),
        (
            "form content type",
            "POST".into(),
            approval.clone(),
            with(
                signed_now(&good),
                "content-type",
                "application/x-www-form-urlencoded",
            ),
            good.clone(),
            415,
            "not JSON",
        ),
        (
            "too large",
            "POST".into(),
            approval.clone(),
            signed_now(&big),
            big.clone(),
            413,
            "max_body_bytes",
        ),
        (
            "unsigned",
            "POST".into(),
            approval.clone(),
            without(
                without(signed_now(&good), "x-webhook-signature-256"),
                "x-webhook-timestamp",
            ),
            good.clone(),
            401,
            "missing",
        ),
        (
            "signature for another body",
            "POST".into(),
            approval.clone(),
            signed_now(&unknown),
            good.clone(),
            401,
            "does not match",
        ),
        (
            "wrong secret",
            "POST".into(),
            approval.clone(),
            with(
                signed_now(&good),
                "x-webhook-signature-256",
                &signature::sign(b"other", now, &good),
            ),
            good.clone(),
            401,
            "does not match",
        ),
        (
            "expired",
            "POST".into(),
            approval.clone(),
            signed(&good, now - 301),
            good.clone(),
            401,
            "at most 300",
        ),
        (
            "from the future",
            "POST".into(),
            approval.clone(),
            // Not now + 301: the cases go out one after another, and a second gone by
            // since `now` made that 300 s ahead, which is allowed (the boundary itself is
            // verify.rs's unit test).
            signed(&good, now + 360),
            good.clone(),
            401,
            "at most 300",
        ),
        (
            "malformed signature",
            "POST".into(),
            approval.clone(),
            with(signed_now(&good), "x-webhook-signature-256", "sha256=zz"),
            good.clone(),
            401,
            "not valid",
        ),
        (
            "legacy while disabled",
            "POST".into(),
            approval.clone(),
            vec![
                ("content-type", "application/json".into()),
                (
                    "x-n8n-signature",
                    signature::sign_legacy(TEST_N8N_SECRET.as_bytes(), &good),
                ),
            ],
            good.clone(),
            401,
            "allow_legacy_signature",
        ),
        (
            "malformed JSON",
            "POST".into(),
            approval.clone(),
            signed_now(&malformed),
            malformed.clone(),
            400,
            "not valid JSON",
        ),
        (
            "missing field",
            "POST".into(),
            approval.clone(),
            signed_now(&missing),
            missing.clone(),
            400,
            "demo_id",
        ),
        (
            "mistyped field",
            "POST".into(),
            approval.clone(),
            signed_now(&mistyped),
            mistyped.clone(),
            400,
            "demo_id",
        ),
        (
            "unknown demo",
            "POST".into(),
            approval.clone(),
            signed_now(&unknown),
            unknown.clone(),
            404,
            "demo_sites",
        ),
        (
            "test endpoint while disabled",
            "POST".into(),
            "/api/v1/test/trigger-webhook".into(),
            signed_now(&good),
            good.clone(),
            404,
            "no endpoint",
        ),
        (
            "health by POST",
            "POST".into(),
            format!("{N8N}/health"),
            signed_now(&good),
            good.clone(),
            405,
            "GET",
        ),
    ];
    let count = cases.len() as i64;
    for (what, method, path, headers, body, status, needle) in cases {
        let answer = l.send(&method, &path, &headers, &body).await;
        assert_eq!(
            answer.status,
            status,
            "{what}: {}",
            String::from_utf8_lossy(&answer.body)
        );
        answer.assert_refused(status, needle);
        if status == 405 {
            assert!(answer.header("allow").is_some(), "{what}: Allow header");
        }
        if what == "mistyped field" || what == "missing field" {
            assert_eq!(answer.json()["field"], "demo_id", "{what}");
        }
    }
    assert_eq!(l.snapshot().await, before, "no refusal changed a row");
    l.wait_for_logs(count).await;
    let logged = l
        .json(
            "SELECT jsonb_agg(response_status ORDER BY id) FROM webhook_logs \
             WHERE direction = 'incoming' AND error_message IS NOT NULL",
        )
        .await;
    assert_eq!(
        logged.as_array().map(Vec::len),
        Some(count as usize),
        "{logged}"
    );
    let sig = signature::sign(TEST_N8N_SECRET.as_bytes(), now, &good);
    let leaked =
        l.db.count(&format!(
            "SELECT count(*) FROM webhook_logs w WHERE to_jsonb(w)::text LIKE '%{sig}%' \
             OR to_jsonb(w)::text LIKE '%{TEST_N8N_SECRET}%'"
        ))
        .await;
    assert_eq!(leaked, 0, "no signature or secret in webhook_logs");
    assert!(
        !l.relay.log().contains(&sig),
        "no signature in the process log"
    );
}

#[tokio::test]
async fn an_identical_request_inside_the_window_is_applied_once_and_answered_the_same() {
    let l = Listener::start().await;
    let (_, demo, _) = l.lead_with_assets().await;
    let body = json!({"demo_id": demo, "approved": true, "reviewer": "first"})
        .to_string()
        .into_bytes();
    let ts = signature::unix_now();
    let path = format!("{N8N}/demo-approval");
    let first = l.send("POST", &path, &signed(&body, ts), &body).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.header("x-webhook-replay"), None);
    // Someone changes the row in between: a replay must not undo it.
    l.query(&format!(
        "UPDATE demo_sites SET reviewer = 'changed later' WHERE id = {demo}"
    ))
    .await;
    let after_first = l.snapshot().await;

    let second = l.send("POST", &path, &signed(&body, ts), &body).await;
    assert_eq!(second.status, 200);
    assert_eq!(second.header("x-webhook-replay"), Some("true"));
    assert_eq!(second.body, first.body, "the same answer");
    assert_eq!(
        l.snapshot().await,
        after_first,
        "the replay changed nothing"
    );
    assert_eq!(l.events("demo_completed").await, 1);

    // The same body signed again with a new timestamp is a new request.
    let third = l.send("POST", &path, &signed(&body, ts + 1), &body).await;
    assert_eq!(third.status, 200);
    assert_eq!(third.header("x-webhook-replay"), None);
    assert_eq!(
        l.json(&format!(
            "SELECT to_jsonb(reviewer) FROM demo_sites WHERE id = {demo}"
        ))
        .await,
        json!("first")
    );
    assert_eq!(
        l.db.count("SELECT count(*) FROM webhook_callback_receipts")
            .await,
        2
    );
}

/// The signature covers the timestamp and the body, not the path: a captured error
/// report posted again as `workflow-completed` (which reads a missing status as
/// success) set the failed run to success inside the window. It is refused, and the
/// run stays as the report left it.
#[tokio::test]
async fn a_signed_request_sent_again_to_another_endpoint_is_refused_and_changes_nothing() {
    let l = Listener::start().await;
    let body = json!({"workflow_id": "wf1", "execution_id": "ex-777", "error": "SMTP down"})
        .to_string()
        .into_bytes();
    let headers = signed(&body, signature::unix_now());
    let reported = l
        .send(
            "POST",
            &format!("{N8N}/error-notification"),
            &headers,
            &body,
        )
        .await;
    assert_eq!(reported.status, 200, "{:?}", reported.body);
    for other in ["workflow-completed", "workflow-status"] {
        let again = l
            .send("POST", &format!("{N8N}/{other}"), &headers, &body)
            .await;
        again.assert_refused(401, "already sent to");
        assert!(
            again.json()["detail"]
                .as_str()
                .is_some_and(|d| d.contains("error-notification")),
            "{other}: {}",
            again.json()
        );
    }
    assert_eq!(
        l.json("SELECT to_jsonb(status) FROM workflow_runs WHERE execution_id = 'ex-777'")
            .await,
        json!("error"),
        "the failed run is still failed"
    );
    assert_eq!(l.events("workflow_error").await, 1);
}

#[tokio::test]
async fn concurrent_identical_requests_apply_once() {
    let l = Listener::start().await;
    let body = json!({"workflow_id": "w", "execution_id": "e", "error": "boom"})
        .to_string()
        .into_bytes();
    let headers = signed(&body, signature::unix_now());
    let path = format!("{N8N}/error-notification");
    let answers =
        futures_util::future::join_all((0..4).map(|_| l.send("POST", &path, &headers, &body)))
            .await;
    assert!(answers.iter().all(|a| a.status == 200), "{answers:?}");
    assert_eq!(
        answers
            .iter()
            .filter(|a| a.header("x-webhook-replay").is_none())
            .count(),
        1
    );
    assert!(answers.iter().all(|a| a.body == answers[0].body));
    assert_eq!(l.events("workflow_error").await, 1);
}

#[tokio::test]
async fn a_refusal_quoting_a_huge_request_is_answered_and_logged_in_bounded_size() {
    let l = Listener::start().await;
    // Unsigned: a method of 100 KB (hyper takes it; the 405 quotes it).
    let method = "X".repeat(100_000);
    let answer = l
        .send(&method, &format!("{N8N}/demo-approval"), &[], b"")
        .await;
    assert_eq!(answer.status, 405);
    assert!(answer.body.len() < 2_000, "{} bytes", answer.body.len());
    // Signed: a value of the wrong type, 200 KB long (serde quotes it).
    let huge = "9".repeat(200_000);
    let answer = l
        .post("demo-approval", &json!({"demo_id": huge, "approved": true}))
        .await;
    assert_eq!(answer.status, 400);
    assert!(answer.body.len() < 2_000, "{} bytes", answer.body.len());
    l.wait_for_logs(2).await;
    let longest: i64 =
        l.db.count(
            "SELECT coalesce(max(greatest(length(error_message), length(response_body))), 0)::int8
             FROM webhook_logs WHERE direction = 'incoming'",
        )
        .await;
    assert!(longest < 2_000, "a log row holds {longest} bytes");
}

#[tokio::test]
async fn a_callback_that_times_out_behind_a_locked_row_is_answered_503_and_logged() {
    let l = Listener::start_with(|b| b.env("RELAY_DATABASE__STATEMENT_TIMEOUT_SECONDS", 1)).await;
    let (_, demo, _) = l.lead_with_assets().await;
    // Another transaction holds the demo's row longer than a statement may wait.
    let mut locker = l.db.client().await;
    let tx = locker.transaction().await.expect("begin");
    tx.execute(
        "SELECT 1 FROM demo_sites WHERE id = $1 FOR UPDATE",
        &[&demo],
    )
    .await
    .expect("lock the row");
    let before = l.snapshot().await;
    let answer = l
        .post("demo-approval", &json!({"demo_id": demo, "approved": true}))
        .await;
    assert_eq!(answer.status, 503, "{:?}", answer.body);
    assert_eq!(l.snapshot().await, before, "nothing applied");
    tx.rollback().await.expect("release the row");
    // The database was up: the refusal is on record like any other answer.
    wait_until("the 503 in webhook_logs", WAIT, || async {
        let n =
            l.db.count(
                "SELECT count(*) FROM webhook_logs
                 WHERE direction = 'incoming' AND response_status = 503
                   AND error_message LIKE '%statement timeout%'",
            )
            .await;
        (n == 1).then_some(())
    })
    .await;
}

#[tokio::test]
async fn sql_looking_text_in_notes_is_stored_verbatim() {
    let l = Listener::start().await;
    let (_, demo, _) = l.lead_with_assets().await;
    let notes = "'); DROP TABLE demo_sites; -- \" $1 \\x00 %s ${{reviewer}} 😀";
    let reviewer = "Robert'); DELETE FROM leads;--";
    let answer = l
        .post(
            "demo-approval",
            &json!({"demo_id": demo, "approved": false, "notes": notes, "reviewer": reviewer}),
        )
        .await;
    assert_eq!(answer.status, 200);
    assert_eq!(
        l.json(&format!(
            "SELECT to_jsonb(array[review_notes, reviewer]) FROM demo_sites WHERE id = {demo}"
        ))
        .await,
        json!([notes, reviewer])
    );
    assert_eq!(l.db.count("SELECT count(*) FROM leads").await, 1);
}

#[tokio::test]
async fn health_answers_the_guides_body_with_the_database_state() {
    let l = Listener::start().await;
    let answer = l.send("GET", &format!("{N8N}/health"), &[], b"").await;
    assert_eq!(answer.status, 200);
    let body = answer.json();
    assert_eq!(body["status"], "healthy");
    assert_eq!(body["service"], "webhook-responses");
    assert_eq!(body["database"]["reachable"], true);
    assert_eq!(
        body["webhook_config"],
        json!({"enabled": true, "base_url": "http://127.0.0.1:9", "security_enabled": true})
    );
    let ts = body["timestamp"].as_str().unwrap_or_default();
    assert_eq!(ts.len(), 20, "{ts}");
    assert!(ts.ends_with('Z'));
}

#[tokio::test]
async fn health_shows_the_n8n_url_without_its_credentials() {
    // Health is answered to anyone, unsigned; n8n's basic auth may ride in its URL.
    let l = Listener::start_with(|b| b.env("N8N_BASE_URL", "http://n8n:s3cret@127.0.0.1:9")).await;
    let answer = l.send("GET", &format!("{N8N}/health"), &[], b"").await;
    assert_eq!(answer.status, 200);
    assert_eq!(
        answer.json()["webhook_config"]["base_url"],
        "http://127.0.0.1:9"
    );
    // The answer is logged too (webhook_logs.response_body): without the password.
    let logged = wait_until("the health answer in webhook_logs", WAIT, || async {
        let rows =
            l.db.client()
                .await
                .query(
                    "SELECT response_body FROM webhook_logs WHERE response_body LIKE '%base_url%'",
                    &[],
                )
                .await
                .ok()?;
        rows.first().map(|r| r.get::<_, String>(0))
    })
    .await;
    assert!(!logged.contains("s3cret"), "{logged}");
}

/// The health endpoint is unsigned; it quoted the driver's message, which names the
/// database and the role (and why a login failed) to whoever can reach the listener.
#[tokio::test]
async fn health_says_the_database_refused_without_naming_the_database_or_role() {
    let db = TestDb::empty().await;
    let missing = format!("{}_missing_db", db.name);
    let url = match db.url.rsplit_once('/') {
        Some((server, _)) => format!("{server}/{missing}"),
        None => panic!("a database URL: {}", db.url),
    };
    let builder = RelayBuilder::new(&url, "http://127.0.0.1:9")
        .args(["callbacks"])
        .env("RELAY_DATABASE__CONNECT_TIMEOUT_SECONDS", 1);
    let l = Listener::spawn(db, builder).await;
    let health = l.send("GET", &format!("{N8N}/health"), &[], b"").await;
    assert_eq!(health.status, 503);
    let body = health.json();
    assert_eq!(
        body["database"]["error"], "the database refused the relay's connection",
        "{body}"
    );
    assert!(!body.to_string().contains(&missing), "{body}");
}

#[tokio::test]
async fn with_the_database_down_health_and_callbacks_answer_503() {
    let db = TestDb::empty().await;
    let closed = format!(
        "postgres://postgres@127.0.0.1:{}/nowhere",
        relay_tests::cluster::free_port()
    );
    let builder = RelayBuilder::new(&closed, "http://127.0.0.1:9")
        .args(["callbacks"])
        .env("RELAY_DATABASE__CONNECT_TIMEOUT_SECONDS", 1);
    let l = Listener::spawn(db, builder).await;
    let health = l.send("GET", &format!("{N8N}/health"), &[], b"").await;
    assert_eq!(health.status, 503);
    let body = health.json();
    assert_eq!(body["status"], "unhealthy");
    assert_eq!(body["database"]["reachable"], false);
    assert!(body["database"]["error"].is_string());

    let answer = l
        .post("demo-approval", &json!({"demo_id": 1, "approved": true}))
        .await;
    answer.assert_refused(503, "database");
    // Checks that need no database still answer with their own status.
    let unsigned = l
        .send(
            "POST",
            &format!("{N8N}/demo-approval"),
            &[("content-type", "application/json".into())],
            b"{}",
        )
        .await;
    assert_eq!(unsigned.status, 401);
}

#[tokio::test]
async fn without_a_callback_secret_the_listener_refuses_to_start() {
    let db = TestDb::migrated().await;
    let out = RelayBuilder::new(&db.url, "http://127.0.0.1:9")
        .args(["callbacks"])
        .without_env("N8N_WEBHOOK_SECRET")
        .output()
        .await;
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("security.n8n_webhook_secret"), "{stderr}");
}

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_disconnected() {
    let l =
        Listener::start_with(|b| b.env("RELAY_CALLBACKS__HEADER_READ_TIMEOUT_SECONDS", 1)).await;
    let mut stream = TcpStream::connect(&l.addr).await.expect("connect");
    stream
        .write_all(b"POST /api/v1/webhooks/n8n/demo-approval HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .expect("write");
    let started = Instant::now();
    let closed = read_until_closed(&mut stream, Duration::from_secs(8)).await;
    assert!(
        closed.is_some(),
        "the listener kept a slowloris connection open"
    );
    assert!(started.elapsed() >= Duration::from_millis(500));

    // An idle keep-alive connection is cut the same way.
    let mut idle = TcpStream::connect(&l.addr).await.expect("connect");
    assert!(read_until_closed(&mut idle, Duration::from_secs(8))
        .await
        .is_some());
}

#[tokio::test]
async fn a_trickled_body_gets_408_and_changes_nothing() {
    let l = Listener::start_with(|b| b.env("RELAY_CALLBACKS__REQUEST_TIMEOUT_SECONDS", 1)).await;
    let (_, demo, _) = l.lead_with_assets().await;
    let before = l.snapshot().await;
    let body = json!({"demo_id": demo, "approved": true}).to_string();
    let head = format!(
        "POST {N8N}/demo-approval HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    );
    let mut stream = TcpStream::connect(&l.addr).await.expect("connect");
    stream.write_all(head.as_bytes()).await.expect("write");
    stream
        .write_all(&body.as_bytes()[..5])
        .await
        .expect("write");
    let seen = read_until_closed(&mut stream, Duration::from_secs(8))
        .await
        .expect("an answer and a close");
    assert!(seen.starts_with("HTTP/1.1 408"), "{seen}");
    assert_eq!(l.snapshot().await, before);
}

#[tokio::test]
async fn an_oversized_body_is_refused_before_it_is_read() {
    let l = Listener::start_with(|b| b.env("RELAY_CALLBACKS__MAX_BODY_BYTES", 1024)).await;
    // Declared too large: answered without sending a byte of the body.
    let mut stream = TcpStream::connect(&l.addr).await.expect("connect");
    let head = format!(
        "POST {N8N}/demo-approval HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n",
        50 * 1024 * 1024
    );
    stream.write_all(head.as_bytes()).await.expect("write");
    let seen = read_until_closed(&mut stream, Duration::from_secs(5))
        .await
        .expect("an answer");
    assert!(seen.starts_with("HTTP/1.1 413"), "{seen}");
    assert!(seen.contains("max_body_bytes"), "{seen}");

    // Chunked, no length: cut off once past the limit, the rest never sent.
    let mut stream = TcpStream::connect(&l.addr).await.expect("connect");
    let head = format!(
        "POST {N8N}/demo-approval HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.expect("write");
    let chunk = "x".repeat(2000);
    stream
        .write_all(format!("{:x}\r\n{chunk}\r\n", chunk.len()).as_bytes())
        .await
        .expect("write");
    let seen = read_until_closed(&mut stream, Duration::from_secs(5))
        .await
        .expect("an answer");
    assert!(seen.starts_with("HTTP/1.1 413"), "{seen}");
}

/// A connection with a request in progress: the listener has asked for its 2-byte
/// body (100 Continue) and waits for it.
async fn request_in_progress(addr: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(
            format!(
                "POST {N8N}/workflow-status HTTP/1.1\r\nHost: x\r\n\
                 Content-Type: application/json\r\nContent-Length: 2\r\n\
                 Expect: 100-continue\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .expect("write");
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(WAIT, stream.read(&mut buf))
        .await
        .expect("100 Continue in time")
        .expect("read");
    assert!(buf[..n].starts_with(b"HTTP/1.1 100"), "{:?}", &buf[..n]);
    stream
}

#[tokio::test]
async fn connections_beyond_the_cap_wait_for_a_request_in_progress() {
    let l = Listener::start_with(|b| b.env("RELAY_CALLBACKS__MAX_CONNECTIONS", 1)).await;
    // A request in progress holds the one slot.
    let holder = request_in_progress(&l.addr).await;

    let addr = l.addr.clone();
    let health = format!("{N8N}/health");
    let waiting = tokio::spawn(async move { send(&addr, "GET", &health, &[], b"").await });
    tokio::time::sleep(Duration::from_millis(500)).await; // a negative check: nothing may happen
    assert!(
        !waiting.is_finished(),
        "a second connection was served beyond the cap"
    );
    drop(holder);
    let answer = tokio::time::timeout(WAIT, waiting)
        .await
        .expect("served once the slot is free")
        .expect("task");
    assert_eq!(answer.status, 200);
}

#[tokio::test]
async fn at_the_cap_an_idle_connection_is_closed_to_make_room() {
    let l = Listener::start_with(|b| b.env("RELAY_CALLBACKS__MAX_CONNECTIONS", 1)).await;
    // Connected, never finishing its headers (a slow-drip client), or simply idle.
    let mut idle = TcpStream::connect(&l.addr).await.expect("connect");
    idle.write_all(b"POST /api/v1/webhooks/n8n/health HTTP/1.1\r\nHost: x\r\nX-Slow: a")
        .await
        .expect("write");
    let started = Instant::now();
    let answer = send(&l.addr, "GET", &format!("{N8N}/health"), &[], b"").await;
    assert_eq!(answer.status, 200);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "served without waiting for the header timeout: {:?}",
        started.elapsed()
    );
    assert!(
        read_until_closed(&mut idle, WAIT).await.is_some(),
        "the idle connection was closed"
    );
}

/// At the cap with every connection busy, the one busy longest is asked to close: it
/// answers its request and then closes, and the connection waiting gets its place.
/// (It was asked once, passed over while busy, and the waiting connection stayed
/// behind the busy one's keep-alive until its idle timeout: connections kept busy
/// with cheap requests locked n8n out for as long as they kept at it.)
#[tokio::test]
async fn at_the_cap_a_busy_connection_is_closed_after_its_request_to_make_room() {
    let l = Listener::start_with(|b| {
        b.env("RELAY_CALLBACKS__MAX_CONNECTIONS", 1)
            .env("RELAY_CALLBACKS__HEADER_READ_TIMEOUT_SECONDS", 60)
    })
    .await;
    let mut busy = request_in_progress(&l.addr).await;

    let addr = l.addr.clone();
    let health = format!("{N8N}/health");
    let waiting = tokio::spawn(async move { send(&addr, "GET", &health, &[], b"").await });
    // The busy connection's request ends (unsigned: 401); it is not kept alive for
    // the next one, and the waiting connection is served well before the 60 s the
    // busy one could otherwise idle.
    busy.write_all(b"{}").await.expect("the body");
    let answered = read_until_closed(&mut busy, WAIT)
        .await
        .expect("answered, then closed");
    assert!(answered.starts_with("HTTP/1.1 401"), "{answered}");
    let answer = tokio::time::timeout(WAIT, waiting)
        .await
        .expect("served once the busy connection closed")
        .expect("task");
    assert_eq!(answer.status, 200);
}

/// Bodies are read whole before their signature is checked: unsigned clients each
/// sending most of a body could hold `max_connections` of them in memory (and over
/// HTTP/2, 200 per connection). Beyond the first 64 KiB of each, at most 32 bodies of
/// the largest size are held at once: past that, a body is refused with 503 as its
/// bytes arrive, while a callback of a few KiB is still served; once those clients
/// are gone, large bodies are taken again.
#[tokio::test]
async fn request_bodies_held_at_once_are_bounded_and_past_that_refused_503() {
    let l = Listener::start_with(|b| {
        b.env("RELAY_CALLBACKS__MAX_CONNECTIONS", 64)
            .env("RELAY_CALLBACKS__MAX_BODY_BYTES", 128 * 1024)
    })
    .await;
    let mut clients = Vec::new();
    for _ in 0..40 {
        let mut stream = TcpStream::connect(&l.addr).await.expect("connect");
        // A refused client's socket may be reset under it: what matters is the count.
        let _ = stream
            .write_all(
                format!(
                    "POST {N8N}/workflow-status HTTP/1.1\r\nHost: x\r\n\
                     Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{}",
                    128 * 1024,
                    " ".repeat(127 * 1024)
                )
                .as_bytes(),
            )
            .await;
        clients.push(stream);
    }
    let db = &l.db;
    wait_until(
        "the bodies past the budget are refused with 503",
        WAIT,
        || async move {
            let refused = db
                .count(
                    "SELECT count(*) FROM webhook_logs \
                 WHERE direction = 'incoming' AND response_status = 503",
                )
                .await;
            (refused >= 8).then_some(())
        },
    )
    .await;
    // A callback of a few KiB does not compete with them.
    let answer = l
        .post(
            "workflow-status",
            &json!({"workflow_id": "w", "execution_id": "e"}),
        )
        .await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    drop(clients);
    let big = json!({"workflow_id": "w", "execution_id": "e", "padding": " ".repeat(100 * 1024)});
    wait_until("a large body is taken once they are gone", WAIT, || async {
        let answer = l.post("workflow-status", &big).await;
        (answer.status == 200).then_some(())
    })
    .await;
}

#[tokio::test]
async fn receipts_are_removed_after_the_signature_window() {
    let l = Listener::start_with(|b| b.env("RELAY_SECURITY__MAX_AGE_SECONDS", 1)).await;
    let answer = l
        .post(
            "workflow-status",
            &json!({"workflow_id": "w", "execution_id": "e"}),
        )
        .await;
    assert_eq!(answer.status, 200);
    assert_eq!(
        l.db.count("SELECT count(*) FROM webhook_callback_receipts")
            .await,
        1
    );
    let db = &l.db;
    wait_until("the expired receipt is removed", WAIT, || async move {
        (db.count("SELECT count(*) FROM webhook_callback_receipts")
            .await
            == 0)
            .then_some(())
    })
    .await;
    assert_eq!(l.db.count("SELECT count(*) FROM workflow_runs").await, 1);
}

#[tokio::test]
async fn the_legacy_signature_works_only_when_enabled() {
    let l = Listener::start_with(|b| b.env("RELAY_SECURITY__ALLOW_LEGACY_SIGNATURE", true)).await;
    let (_, demo, _) = l.lead_with_assets().await;
    let body = json!({"demo_id": demo, "approved": true})
        .to_string()
        .into_bytes();
    let legacy = signature::sign_legacy(TEST_N8N_SECRET.as_bytes(), &body);
    let headers = vec![
        ("content-type", "application/json".to_string()),
        ("x-n8n-signature", legacy),
    ];
    let answer = l
        .send("POST", &format!("{N8N}/demo-approval"), &headers, &body)
        .await;
    assert_eq!(answer.status, 200, "{}", answer.json());
    let tampered = json!({"demo_id": demo, "approved": false})
        .to_string()
        .into_bytes();
    let answer = l
        .send("POST", &format!("{N8N}/demo-approval"), &headers, &tampered)
        .await;
    answer.assert_refused(401, "does not match");
}

#[tokio::test]
async fn the_test_endpoint_emits_an_event_when_enabled() {
    let l = Listener::start_with(|b| b.env("RELAY_CALLBACKS__TEST_ENDPOINT_ENABLED", true)).await;
    let body = json!({"event_type": "lead_scraped", "lead_id": 123, "data": {"name": "Test Lead"}})
        .to_string()
        .into_bytes();
    let path = "/api/v1/test/trigger-webhook";
    let answer = l
        .send("POST", path, &signed(&body, signature::unix_now()), &body)
        .await;
    assert_eq!(answer.status, 200, "{}", answer.json());
    assert_eq!(answer.json()["status"], "queued");
    let event = l
        .json("SELECT to_jsonb(e) FROM webhook_events e WHERE event_type = 'lead_scraped'")
        .await;
    assert_eq!(event["entity_id"], 123);
    assert_eq!(
        event["payload"],
        json!({"name": "Test Lead", "lead_id": 123})
    );
    // Signed like the rest.
    let answer = l
        .send(
            "POST",
            path,
            &[("content-type", "application/json".into())],
            &body,
        )
        .await;
    answer.assert_refused(401, "missing");
    let unknown = json!({"event_type": "lead_scrapped", "lead_id": 1})
        .to_string()
        .into_bytes();
    let answer = l
        .send(
            "POST",
            path,
            &signed(&unknown, signature::unix_now()),
            &unknown,
        )
        .await;
    answer.assert_refused(400, "unknown event type");
}

#[tokio::test]
async fn sigterm_stops_the_listener_cleanly() {
    let mut l = Listener::start().await;
    let answer = l
        .post(
            "workflow-status",
            &json!({"workflow_id": "w", "execution_id": "e"}),
        )
        .await;
    assert_eq!(answer.status, 200);
    assert_eq!(l.relay.terminate(WAIT).await, Some(0), "{}", l.relay.log());
    assert_eq!(
        l.db.count("SELECT count(*) FROM webhook_logs WHERE direction = 'incoming'")
            .await,
        1,
        "the log row was written before exit"
    );
}

#[tokio::test]
async fn a_signed_demo_approval_reaches_n8n_as_demo_completed_through_run() {
    let sink = Sink::start().await;
    let db = TestDb::migrated().await;
    let builder = RelayBuilder::new(&db.url, &sink.url());
    let l = Listener::spawn(db, builder).await;
    let (lead, demo, _) = l.lead_with_assets().await;
    let answer = l
        .post(
            "demo-approval",
            &json!({"demo_id": demo, "approved": true, "notes": "ship it"}),
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.json());
    let delivered = wait_until("demo_completed reaches the sink", WAIT, || async {
        sink.requests()
            .into_iter()
            .find(|r| r.path == "/webhook/demo-completed")
    })
    .await;
    let body = delivered.json();
    assert_eq!(body["event"], "demo_completed");
    assert_eq!(body["entity_id"], demo);
    assert_eq!(body["data"]["demo_site_id"], demo);
    assert_eq!(body["data"]["lead_id"], lead);
    assert_eq!(body["data"]["status"], "approved");
    assert_eq!(body["data"]["review_notes"], "ship it");
}

#[tokio::test]
async fn run_without_a_callback_secret_refuses_to_start_and_names_the_way_out() {
    let db = TestDb::migrated().await;
    let out = RelayBuilder::new(&db.url, "http://127.0.0.1:9")
        .without_env("N8N_WEBHOOK_SECRET")
        .output()
        .await;
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("security.n8n_webhook_secret"), "{stderr}");
    assert!(stderr.contains("callbacks.enabled"), "{stderr}");
}

/// The guide's workflow-status example has only `workflow_id` and `current_step`; it
/// got 400 "execution_id: missing field".
#[tokio::test]
async fn a_status_report_without_an_execution_id_is_received_and_records_no_run() {
    let l = Listener::start().await;
    let body = json!({"workflow_id": "lead-processing-pipeline", "current_step": "scrape"});
    let answer = l.post("workflow-status", &body).await;
    assert_eq!(answer.status, 200, "{}", answer.json());
    assert_eq!(answer.json()["execution_id"], Value::Null);
    assert_eq!(answer.json()["workflow_id"], "lead-processing-pipeline");
    assert_eq!(l.db.count("SELECT count(*) FROM workflow_runs").await, 0);
    l.wait_for_logs(1).await;
    assert_eq!(
        l.db.count(
            "SELECT count(*) FROM webhook_logs WHERE direction = 'incoming' \
             AND event_type = 'workflow-status' AND response_status = 200"
        )
        .await,
        1
    );
    // A completion still needs one: it is what the run is recorded under.
    let answer = l.post("workflow-completed", &body).await;
    assert_eq!(answer.status, 400);
    assert_eq!(answer.json()["field"], "execution_id");
}

#[tokio::test]
async fn an_error_without_an_execution_id_still_emits_workflow_error() {
    let l = Listener::start().await;
    // What n8n's Error Trigger sends when the failure came before a saved execution.
    let body = json!({"workflow_id": "", "execution_id": null, "error": "trigger failed",
                      "workflow_name": "Lead Intake"});
    let answer = l.post("error-notification", &body).await;
    assert_eq!(answer.status, 200, "{}", answer.json());
    assert_eq!(answer.json()["execution_id"], Value::Null);
    assert_eq!(l.db.count("SELECT count(*) FROM workflow_runs").await, 0);
    let event = l
        .json("SELECT to_jsonb(e) FROM webhook_events e WHERE event_type = 'workflow_error'")
        .await;
    assert_eq!(event["entity_id"], Value::Null);
    assert_eq!(event["payload"]["error_message"], "trigger failed");
    assert_eq!(event["payload"]["workflow_name"], "Lead Intake");
}
