//! The relay's logs: `log.format = "json"` writes one JSON object per line with the
//! delivery span on it, `RUST_LOG` beats `log.level`, and no secret ever reaches the
//! log (or the tables), even at debug level with failing deliveries.

use std::time::Duration;

use relay_tests::{wait_until, Relay, RelayBuilder, Reply, Sink, TestDb};

const T: Duration = Duration::from_secs(20);

async fn emit_lead(db: &TestDb) {
    db.client()
        .await
        .query_one(
            "SELECT webhook_emit('lead_scraped', 'lead', 7, '{\"business_name\": \"Acme Inc\"}')",
            &[],
        )
        .await
        .expect("webhook_emit");
}

/// Waits until the relay answers `/readyz`, so it has logged its start-up.
async fn wait_ready(relay: &Relay) {
    let addr = relay.builder.metrics_addr();
    wait_until("the relay is ready", T, || async {
        let mut stream = tokio::net::TcpStream::connect(&addr).await.ok()?;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        stream
            .write_all(b"GET /readyz HTTP/1.1\r\nHost: r\r\nConnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut reply = String::new();
        stream.read_to_string(&mut reply).await.ok()?;
        reply.starts_with("HTTP/1.1 200").then_some(())
    })
    .await;
}

#[tokio::test]
async fn json_format_writes_one_object_per_line_with_the_delivery_span() {
    let db = TestDb::migrated().await;
    let sink = Sink::first_attempt(Reply::status(503)).await;
    let mut relay = RelayBuilder::new(&db.url, &sink.url())
        .env("RELAY_LOG__FORMAT", "json")
        .env("RUST_LOG", "info,relay_daemon=debug")
        .spawn();
    emit_lead(&db).await;
    let got = sink.wait_for(2, T).await;
    let webhook_id = got[0].webhook_id();
    assert_eq!(relay.terminate(T).await, Some(0));

    let log = relay.log();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(lines.len() >= 3, "{log}");
    for line in &lines {
        for key in ["timestamp", "level", "target"] {
            assert!(line.get(key).is_some(), "{key} missing: {line}");
        }
        assert!(line.is_object());
    }
    assert!(
        lines.iter().any(|l| l["message"] == "relay started"),
        "{log}"
    );
    let retry = lines
        .iter()
        .find(|l| l["message"] == "delivery failed; will retry")
        .unwrap_or_else(|| panic!("no retry line:\n{log}"));
    assert_eq!(retry["level"], "WARN");
    assert_eq!(retry["span"]["name"], "delivery");
    assert_eq!(retry["span"]["webhook_id"], webhook_id.as_str());
    assert_eq!(retry["span"]["event"], "lead_scraped");
    assert_eq!(retry["span"]["attempt"], 1);
    // What leads from the line to `queue show`, and numbers a log store can compare
    // (they were the strings "3" and "1.93s").
    let queue_id = db
        .count("SELECT id FROM webhook_queue WHERE event_type = 'lead_scraped'")
        .await;
    assert_eq!(retry["span"]["queue_id"], queue_id, "{retry}");
    assert!(
        retry["span"]["url"]
            .as_str()
            .is_some_and(|u| u.starts_with("http")),
        "{retry}"
    );
    assert!(retry["ms"].is_u64(), "{retry}");
    assert!(retry["retry_in_seconds"].is_f64(), "{retry}");
    let delivered = lines
        .iter()
        .find(|l| l["message"] == "delivered")
        .unwrap_or_else(|| panic!("no delivered line:\n{log}"));
    assert_eq!(delivered["span"]["attempt"], 2);
}

#[tokio::test]
async fn rust_log_wins_over_log_level() {
    let db = TestDb::migrated().await;
    let sink = Sink::start().await;
    // log.level = warn alone hides the start-up line...
    let mut quiet = RelayBuilder::new(&db.url, &sink.url())
        .without_env("RUST_LOG")
        .env("RELAY_LOG__LEVEL", "warn")
        .spawn();
    wait_ready(&quiet).await;
    assert_eq!(quiet.terminate(T).await, Some(0));
    assert!(!quiet.log().contains("relay started"), "{}", quiet.log());

    // ...and RUST_LOG=info brings it back.
    let mut loud = RelayBuilder::new(&db.url, &sink.url())
        .env("RUST_LOG", "info")
        .env("RELAY_LOG__LEVEL", "warn")
        .spawn();
    wait_ready(&loud).await;
    assert_eq!(loud.terminate(T).await, Some(0));
    assert!(loud.log().contains("relay started"), "{}", loud.log());
}

#[tokio::test]
async fn no_secret_reaches_the_log_or_the_tables() {
    const SECRETS: [&str; 5] = [
        "whsec-Distinct-1a2b3c",
        "n8nsec-Distinct-4d5e6f",
        "apikey-Distinct-7g8h9i",
        "authval-Distinct-0j1k2l",
        "dbpass-Distinct-3m4n5o",
    ];
    let db = TestDb::migrated().await;
    // The shared server trusts loopback, so any password is accepted: it only has to
    // travel through the relay's configuration.
    let mut url = url::Url::parse(&db.url).expect("url");
    url.set_password(Some(SECRETS[4])).expect("password");
    // A route's basic-auth password: the queue row keeps it (it is what is sent
    // to), nothing else may show it. The driver logged it with every statement's
    // parameters at debug level, the HTTP client's pool with the connection's key, and
    // every webhook_logs row stored it.
    const URL_PASSWORD: &str = "urlpass-Distinct-6p7q8r";
    let sink = Sink::first_attempt(Reply::status(500)).await;
    let with_credentials =
        sink.url()
            .replacen("http://", &format!("http://n8n-user:{URL_PASSWORD}@"), 1);
    for format in ["human", "json"] {
        let mut relay = RelayBuilder::new(url.as_str(), &with_credentials)
            .env("WEBHOOK_SECRET", SECRETS[0])
            .env("N8N_WEBHOOK_SECRET", SECRETS[1])
            .env("N8N_API_KEY", SECRETS[2])
            .env("RELAY_N8N__AUTH_HEADER_NAME", "X-Relay-Auth")
            .env("RELAY_N8N__AUTH_HEADER_VALUE", SECRETS[3])
            .env("RELAY_LOG__FORMAT", format)
            .env("RUST_LOG", "debug")
            .spawn();
        let before = sink.count();
        emit_lead(&db).await;
        let got = sink.wait_for(before + 2, T).await;
        assert_eq!(got[before].header("x-n8n-api-key"), Some(SECRETS[2]));
        assert_eq!(got[before].header("x-relay-auth"), Some(SECRETS[3]));
        assert_eq!(relay.terminate(T).await, Some(0));

        let log = relay.log();
        assert!(
            log.contains("delivery failed"),
            "debug log has the failure: {log}"
        );
        let signatures: Vec<String> = got
            .iter()
            .filter_map(|r| r.header("x-webhook-signature-256").map(str::to_string))
            .collect();
        for secret in SECRETS
            .iter()
            .chain([&URL_PASSWORD])
            .map(|s| s.to_string())
            .chain(signatures)
        {
            assert!(
                !log.contains(&secret),
                "{format} log contains {secret:?}:\n{log}"
            );
        }
    }
    let client = db.client().await;
    for table in ["webhook_queue", "webhook_logs", "webhook_retry_history"] {
        let rows = client
            .query(&format!("SELECT row_to_json(t)::text FROM {table} t"), &[])
            .await
            .expect("read table");
        assert!(!rows.is_empty(), "{table} has rows");
        for row in rows {
            let text: String = row.get(0);
            for secret in SECRETS {
                assert!(!text.contains(secret), "{table} holds {secret}: {text}");
            }
            if table != "webhook_queue" {
                assert!(!text.contains(URL_PASSWORD), "{table}: {text}");
            }
        }
    }
}

/// A database the relay cannot reach: each part says why once, in the server's words,
/// and its retries after that are at debug level, where they were a warning each (over
/// 40 lines a minute, the cause said only by one of them).
#[tokio::test]
async fn a_database_that_cannot_be_reached_is_said_once_with_the_servers_reason() {
    let db = TestDb::empty().await;
    let sink = Sink::start().await;
    let missing = db.url.replace(&db.name, "relay_no_such_database");
    let relay = RelayBuilder::new(&missing, &sink.url())
        .env("RELAY_LOG__FORMAT", "json")
        .env("RUST_LOG", "info,relay_daemon=debug")
        .spawn();
    let retries = |log: &str, level: &str, message: &str| {
        log.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|l| l["level"] == level && l["message"] == message)
            .map(|l| l["error"].as_str().unwrap_or_default().to_string())
            .collect::<Vec<String>>()
    };
    const LISTENER: &str = "listener could not connect; trying again";
    const PUMP: &str = "database error; backing off";
    wait_until(
        "several retries of the listener and the pump",
        T,
        || async {
            let log = relay.log();
            (retries(&log, "DEBUG", LISTENER).len() >= 3 && retries(&log, "DEBUG", PUMP).len() >= 3)
                .then_some(())
        },
    )
    .await;
    let log = relay.log();
    for message in [LISTENER, PUMP] {
        let warned = retries(&log, "WARN", message);
        assert_eq!(warned.len(), 1, "{message}: {warned:?}\n{log}");
        assert!(
            warned[0].contains("database \"relay_no_such_database\" does not exist"),
            "{message} gives the server's reason: {warned:?}"
        );
    }
}

/// Every delivery leaves a dead row; without autovacuum the claim slows down as they
/// pile up, and nothing said why. The relay says so once, at start, naming the tables.
#[tokio::test]
async fn a_relay_whose_tables_autovacuum_skips_says_so_at_start() {
    let db = TestDb::migrated().await;
    db.client()
        .await
        .batch_execute("ALTER TABLE webhook_logs SET (autovacuum_enabled = false)")
        .await
        .expect("autovacuum off for one table");
    let sink = Sink::start().await;
    let relay = RelayBuilder::new(&db.url, &sink.url()).spawn();
    let line = wait_until("the autovacuum warning", T, || async {
        relay
            .log()
            .lines()
            .find(|l| l.contains("autovacuum does not clean these tables"))
            .map(str::to_string)
    })
    .await;
    assert!(
        line.contains("WARN") && line.contains("webhook_logs"),
        "{line}"
    );
}

/// A log that is not a terminal (a file, journald, `docker logs`) carries no colour
/// codes: every line had them (`\x1b[2m...\x1b[32m INFO`), in files and in journald.
#[tokio::test]
async fn a_log_that_is_not_a_terminal_has_no_colour_codes() {
    let db = TestDb::migrated().await;
    let relay = RelayBuilder::new(&db.url, "http://127.0.0.1:9").spawn();
    wait_ready(&relay).await;
    let log = relay.log();
    assert!(log.contains("relay started"), "{log}");
    assert!(!log.contains('\u{1b}'), "{log:?}");
}

/// An invalid `log.level` stops every command naming it, where it was ignored and the
/// relay logged at info without a word.
#[tokio::test]
async fn an_invalid_log_level_is_named_and_stops_the_relay() {
    let db = TestDb::migrated().await;
    let out = RelayBuilder::new(&db.url, "http://127.0.0.1:9")
        .env("RELAY_LOG__LEVEL", "bogus[[")
        .args(["check-config"])
        .output()
        .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("log.level: \"bogus[[\" is not a level"),
        "{stderr}"
    );
}

/// A relay that cannot start under `log.format = "json"` says why as a JSON line, as
/// the rest of its log: a collector that parses each line dropped the plain
/// `error: ...` that was the only word on why it exited.
#[tokio::test]
async fn a_relay_that_cannot_start_says_why_in_its_log_format() {
    let db = TestDb::migrated().await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a port to take");
    let addr = taken.local_addr().expect("address").to_string();
    let out = RelayBuilder::new(&db.url, "http://127.0.0.1:9")
        .env("RELAY_LOG__FORMAT", "json")
        .env("RELAY_CALLBACKS__LISTEN", &addr)
        .output()
        .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    let line: serde_json::Value = serde_json::from_str(last)
        .unwrap_or_else(|e| panic!("the last line is not JSON ({e}): {last}"));
    assert_eq!(line["level"], "ERROR", "{line}");
    let error = line["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("callbacks.listen") && error.contains(&addr),
        "{line}"
    );
}
