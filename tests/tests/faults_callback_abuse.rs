//! Fault suite: abuse of the callback listener (`n8n-relay callbacks`, default limits).
//! While slow-drip (slowloris) clients hold more connections than the listener
//! allows and a flood of forged, stale, future-dated, tampered, replayed, oversized
//! and garbage requests comes in, genuine signed callbacks keep being answered
//! promptly, and nothing but the genuine ones changes a row.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use relay_core::signature;
use relay_tests::relay::TEST_N8N_SECRET;
use relay_tests::{wait_until, RelayBuilder, TestDb};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

const STATUS_PATH: &str = "/api/v1/webhooks/n8n/workflow-status";
/// More slow clients than `callbacks.max_connections` (256 by default).
const SLOW_CLIENTS: usize = 300;
const ATTACK: Duration = Duration::from_secs(8);

/// One HTTP/1.1 request on a fresh connection, `Connection: close`; the status code,
/// or None when the server closed without answering or `within` passed.
async fn request(addr: &str, raw: &[u8], within: Duration) -> Option<u16> {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.ok()?;
        stream.write_all(raw).await.ok()?;
        let mut got = Vec::new();
        let mut buf = [0u8; 2048];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    got.extend_from_slice(&buf[..n]);
                    if got.windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
            }
        }
        let text = String::from_utf8_lossy(&got);
        text.split_whitespace().nth(1)?.parse().ok()
    };
    tokio::time::timeout(within, exchange).await.ok().flatten()
}

fn http(path: &str, headers: &[(&str, String)], body: &[u8]) -> Vec<u8> {
    let mut raw = format!("POST {path} HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n");
    for (k, v) in headers {
        raw.push_str(&format!("{k}: {v}\r\n"));
    }
    raw.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut raw = raw.into_bytes();
    raw.extend_from_slice(body);
    raw
}

fn signed_headers(body: &[u8], timestamp: u64, secret: &str) -> Vec<(&'static str, String)> {
    vec![
        ("Content-Type", "application/json".into()),
        ("X-Webhook-Timestamp", timestamp.to_string()),
        (
            "X-Webhook-Signature-256",
            signature::sign(secret.as_bytes(), timestamp, body),
        ),
    ]
}

fn status_body(execution: &str) -> Vec<u8> {
    json!({"workflow_id": "abuse-test", "execution_id": execution, "current_step": "step"})
        .to_string()
        .into_bytes()
}

/// A genuine callback: signed now with the listener's secret.
fn genuine(execution: &str) -> Vec<u8> {
    let body = status_body(execution);
    http(
        STATUS_PATH,
        &signed_headers(&body, signature::unix_now(), TEST_N8N_SECRET),
        &body,
    )
}

/// The abusive requests, round-robin, with the status each must get (None: any
/// refusal or a closed connection).
fn abusive(n: u64, replay: &[u8]) -> (Vec<u8>, Option<u16>) {
    let now = signature::unix_now();
    let body = status_body(&format!("forged-{n}"));
    match n % 10 {
        0 => (
            http(
                STATUS_PATH,
                &signed_headers(&body, now, "not-the-secret"),
                &body,
            ),
            Some(401),
        ),
        1 => (
            http(
                STATUS_PATH,
                &signed_headers(&body, now - 3600, TEST_N8N_SECRET),
                &body,
            ),
            Some(401),
        ),
        2 => (
            http(
                STATUS_PATH,
                &signed_headers(&body, now + 3600, TEST_N8N_SECRET),
                &body,
            ),
            Some(401),
        ),
        3 => {
            // Signed, then tampered with.
            let headers = signed_headers(&body, now, TEST_N8N_SECRET);
            let tampered = status_body(&format!("tampered-{n}"));
            (http(STATUS_PATH, &headers, &tampered), Some(401))
        }
        4 => (replay.to_vec(), Some(200)),
        5 => {
            let raw = format!(
                "POST {STATUS_PATH} HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\
                 Content-Type: application/json\r\nContent-Length: 104857600\r\n\r\n{{"
            );
            (raw.into_bytes(), Some(413))
        }
        6 => (
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n".to_vec(),
            None,
        ),
        7 => (
            format!(
                "GET /{} HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n",
                "a".repeat(n as usize % 3000)
            )
            .into_bytes(),
            None,
        ),
        8 => (
            http(
                STATUS_PATH,
                &[("Content-Type", "text/plain".into())],
                b"hello",
            ),
            Some(415),
        ),
        _ => (
            http(
                STATUS_PATH,
                &signed_headers(b"{not json", now, TEST_N8N_SECRET),
                b"{not json",
            ),
            Some(400),
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_slowloris_and_a_flood_of_bad_requests_genuine_callbacks_are_answered_promptly() {
    let db = TestDb::migrated().await;
    let builder = RelayBuilder::new(&db.url, "http://127.0.0.1:9").args(["callbacks"]);
    let addr = builder.callbacks_addr();
    let mut listener = builder.spawn();
    wait_until("the listener accepts", Duration::from_secs(15), || async {
        request(&addr, &genuine("warm-up"), Duration::from_secs(5))
            .await
            .filter(|s| *s == 200)
    })
    .await;
    let replay = genuine("replayed");
    assert_eq!(
        request(&addr, &replay, Duration::from_secs(5)).await,
        Some(200)
    );

    let stop = Arc::new(AtomicBool::new(false));
    let mut attackers = JoinSet::new();
    // Slow-drip clients: a request line, then one header byte a second, reconnecting
    // whenever the listener closes them.
    let slow_open = Arc::new(AtomicU64::new(0));
    for _ in 0..SLOW_CLIENTS {
        let (addr, stop, open) = (addr.clone(), stop.clone(), slow_open.clone());
        attackers.spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let Ok(mut s) = TcpStream::connect(&addr).await else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                open.fetch_add(1, Ordering::SeqCst);
                let _ = s
                    .write_all(
                        format!("POST {STATUS_PATH} HTTP/1.1\r\nHost: relay\r\nX-Slow: ")
                            .as_bytes(),
                    )
                    .await;
                while !stop.load(Ordering::SeqCst) && s.write_all(b"a").await.is_ok() {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        });
    }
    // The flood: four clients sending bad requests back to back.
    let wrong = Arc::new(Mutex::new(Vec::new()));
    let flooded = Arc::new(AtomicU64::new(0));
    for worker in 0..4u64 {
        let (addr, stop, wrong, flooded, replay) = (
            addr.clone(),
            stop.clone(),
            wrong.clone(),
            flooded.clone(),
            replay.clone(),
        );
        attackers.spawn(async move {
            let mut n = worker;
            while !stop.load(Ordering::SeqCst) {
                let (raw, expected) = abusive(n, &replay);
                let got = request(&addr, &raw, Duration::from_secs(15)).await;
                flooded.fetch_add(1, Ordering::SeqCst);
                if let (Some(want), Some(status)) = (expected, got) {
                    if want != status {
                        wrong.lock().expect("lock").push((n % 10, status));
                    }
                }
                n += 4;
            }
        });
    }

    // Genuine callbacks, four a second, each timed.
    let started = Instant::now();
    let mut latencies = Vec::new();
    let mut answered = 0;
    let mut i = 0;
    while started.elapsed() < ATTACK {
        let sent = Instant::now();
        let status = request(
            &addr,
            &genuine(&format!("genuine-{i}")),
            Duration::from_secs(30),
        )
        .await;
        latencies.push(sent.elapsed());
        assert_eq!(
            status,
            Some(200),
            "genuine callback {i} after {:?}",
            sent.elapsed()
        );
        answered += 1;
        i += 1;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    stop.store(true, Ordering::SeqCst);
    attackers.abort_all();
    while attackers.join_next().await.is_some() {}

    latencies.sort();
    let worst = *latencies.last().expect("latencies");
    let median = latencies[latencies.len() / 2];
    eprintln!(
        "{answered} genuine callbacks: median {median:?}, worst {worst:?}; {} slow connections opened, {} bad requests sent",
        slow_open.load(Ordering::SeqCst),
        flooded.load(Ordering::SeqCst)
    );
    assert!(
        slow_open.load(Ordering::SeqCst) >= SLOW_CLIENTS as u64,
        "the slow clients got their connections"
    );
    assert!(flooded.load(Ordering::SeqCst) >= 100, "the flood ran");
    let wrong = wrong.lock().expect("lock").clone();
    assert!(
        wrong.is_empty(),
        "bad requests answered wrongly (kind, status): {wrong:?}"
    );
    // Without room-making the slow clients kept n8n waiting for the header timeout
    // (10 s), and the flood's audit rows queued ahead of n8n for the pool (seconds).
    assert!(
        worst < Duration::from_secs(2) && median < Duration::from_millis(500),
        "a genuine callback waited {worst:?} (median {median:?})"
    );

    // Only the genuine callbacks changed anything: one run each, none forged.
    let runs = db
        .count("SELECT count(*) FROM workflow_runs WHERE execution_id LIKE 'genuine-%'")
        .await;
    assert_eq!(runs, answered);
    assert_eq!(
        db.count(
            "SELECT count(*) FROM workflow_runs
             WHERE execution_id LIKE 'forged-%' OR execution_id LIKE 'tampered-%'"
        )
        .await,
        0
    );
    assert_eq!(
        db.count("SELECT count(*) FROM workflow_runs WHERE execution_id = 'replayed'")
            .await,
        1
    );
    assert!(listener.is_running(), "the listener survived");
}
