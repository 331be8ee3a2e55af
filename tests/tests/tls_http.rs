//! TLS on the HTTP sides: deliveries to an n8n on https:// behind a private CA (and
//! behind mutual TLS), and the callback listener serving HTTPS with a certificate that
//! SIGHUP swaps without dropping the connections already open.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use relay_core::signature;
use relay_tests::certs::{Pki, Validity};
use relay_tests::relay::TEST_N8N_SECRET;
use relay_tests::{wait_until, RelayBuilder, Sink, TestDb};
use rustls::pki_types::{CertificateDer, ServerName};

const T: Duration = Duration::from_secs(20);

/// A relay whose callback listener serves HTTPS with `cert` and `key`, once it says
/// it is ready; and the listener's address.
async fn https_listener(
    db: &TestDb,
    cert: &std::path::Path,
    key: &std::path::Path,
) -> (relay_tests::Relay, String) {
    let builder = RelayBuilder::new(&db.url, "http://127.0.0.1:9")
        .env("RELAY_CALLBACKS__TLS_CERT", cert.display())
        .env("RELAY_CALLBACKS__TLS_KEY", key.display());
    let addr = builder.callbacks_addr();
    let relay = builder.spawn();
    wait_until("the HTTPS listener", T, || async {
        relay
            .log()
            .contains("callback listener ready")
            .then_some(())
    })
    .await;
    (relay, addr)
}

/// The first `last_error` a failed attempt writes.
async fn first_last_error(db: &TestDb) -> String {
    let client = db.client().await;
    wait_until("a failed attempt", T, || async {
        client
            .query_opt(
                "SELECT last_error FROM webhook_queue WHERE last_error IS NOT NULL",
                &[],
            )
            .await
            .expect("queue")
            .map(|r| r.get(0))
    })
    .await
}

#[tokio::test]
async fn deliveries_to_an_https_n8n_behind_a_private_ca_verify_with_its_ca_file_and_fail_without() {
    let pki = Pki::new("n8n");
    let server = pki.server("n8n", &["127.0.0.1"], Validity::Current);
    let sink = Sink::https(&server, None).await;
    let db = TestDb::migrated().await;
    let ca = pki.ca().display().to_string();

    // Without the CA: a certificate error in last_error, nothing reaches n8n.
    let relay = RelayBuilder::new(&db.url, &sink.url()).spawn();
    db.insert_lead().await;
    let error = first_last_error(&db).await;
    assert!(
        error.contains("certificate") && error.contains("UnknownIssuer"),
        "{error}"
    );
    assert_eq!(sink.count(), 0);
    drop(relay);

    // With it: delivered, over TLS, signed as always.
    let _relay = RelayBuilder::new(&db.url, &sink.url())
        .env("RELAY_N8N__CA_FILE", &ca)
        .spawn();
    let got = sink.wait_for(1, T).await;
    got[0].verify_signature();
    db.wait_for_queue_status("sent", 1, T).await;
}

#[tokio::test]
async fn an_n8n_behind_mutual_tls_gets_the_client_certificate() {
    let pki = Pki::new("mtls");
    let server = pki.server("n8n", &["127.0.0.1"], Validity::Current);
    let client_cert = pki.client("relay", "n8n-relay");
    let sink = Sink::https(&server, Some(&pki.ca())).await;
    let db = TestDb::migrated().await;
    let _relay = RelayBuilder::new(&db.url, &sink.url())
        .env("RELAY_N8N__CA_FILE", pki.ca().display())
        .env("RELAY_N8N__CLIENT_CERT", client_cert.cert.display())
        .env("RELAY_N8N__CLIENT_KEY", client_cert.key.display())
        .spawn();
    db.insert_lead().await;
    sink.wait_for(1, T).await;
    db.wait_for_queue_status("sent", 1, T).await;
}

/// An HTTPS connection to the callback listener trusting only `pki`'s CA: the
/// certificate it was shown, and a sender to keep using.
async fn https_connection(
    addr: &str,
    pki: &Pki,
) -> (
    CertificateDer<'static>,
    hyper::client::conn::http1::SendRequest<Full<Bytes>>,
) {
    let roots = relay_core::tls::root_store("test CA", &pki.ca()).expect("roots");
    let config = rustls::ClientConfig::builder_with_provider(relay_core::tls::provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = ServerName::try_from("127.0.0.1").expect("name");
    let tls = connector.connect(name, tcp).await.expect("TLS handshake");
    let shown = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .cloned()
        .expect("a server certificate");
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .expect("HTTP handshake");
    tokio::spawn(conn);
    (shown.into_owned(), sender)
}

/// A signed workflow-status callback on `sender`: its status code.
async fn post_status(
    sender: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    execution: &str,
) -> u16 {
    let body = format!(r#"{{"workflow_id":"wf","execution_id":"{execution}","status":"running"}}"#);
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let request = hyper::Request::post("/api/v1/webhooks/n8n/workflow-status")
        .header("host", "127.0.0.1")
        .header("content-type", "application/json")
        .header("x-webhook-timestamp", ts.to_string())
        .header(
            "x-webhook-signature-256",
            signature::sign(TEST_N8N_SECRET.as_bytes(), ts, body.as_bytes()),
        )
        .body(Full::new(Bytes::from(body)))
        .expect("request");
    sender.ready().await.expect("connection ready");
    let response = sender.send_request(request).await.expect("response");
    let status = response.status().as_u16();
    let _ = response.into_body().collect().await;
    status
}

fn der_of(path: &std::path::Path) -> CertificateDer<'static> {
    relay_core::tls::load_certs("test", path)
        .expect("cert")
        .remove(0)
}

#[tokio::test]
async fn the_callback_listener_serves_https_and_sighup_swaps_its_certificate_keeping_open_connections(
) {
    let pki = Pki::new("callbacks");
    let first = pki.server("listener-1", &["127.0.0.1"], Validity::Current);
    let live_cert = pki.dir.join("live.crt");
    let live_key = pki.dir.join("live.key");
    std::fs::copy(&first.cert, &live_cert).expect("copy cert");
    std::fs::copy(&first.key, &live_key).expect("copy key");

    let db = TestDb::migrated().await;
    let (relay, addr) = https_listener(&db, &live_cert, &live_key).await;

    let (shown, mut kept) = https_connection(&addr, &pki).await;
    assert_eq!(shown, der_of(&first.cert));
    assert_eq!(post_status(&mut kept, "exec-1").await, 200);

    // A renewal: new files in place, then SIGHUP.
    let second = pki.server("listener-2", &["127.0.0.1"], Validity::Current);
    std::fs::copy(&second.cert, &live_cert).expect("copy cert");
    std::fs::copy(&second.key, &live_key).expect("copy key");
    relay.signal("HUP");
    let renewed = der_of(&second.cert);
    wait_until("a new connection shown the new certificate", T, || async {
        let (shown, _) = https_connection(&addr, &pki).await;
        (shown == renewed).then_some(())
    })
    .await;
    assert!(
        relay.log().contains("certificate reloaded"),
        "{}",
        relay.log()
    );
    assert!(
        !relay.log().contains("the certificate in"),
        "a certificate good for a year is not warned of: {}",
        relay.log()
    );

    // The connection opened before the swap still works.
    assert_eq!(post_status(&mut kept, "exec-2").await, 200);
    let runs = db
        .count("SELECT count(*) FROM workflow_runs WHERE execution_id IN ('exec-1', 'exec-2')")
        .await;
    assert_eq!(runs, 2);

    // A broken renewal keeps the certificate in use.
    std::fs::write(&live_cert, "not a certificate").expect("write");
    relay.signal("HUP");
    wait_until("the failed reload in the log", T, || async {
        relay.log().contains("not reloaded").then_some(())
    })
    .await;
    let (shown, mut fresh) = https_connection(&addr, &pki).await;
    assert_eq!(shown, renewed);
    assert_eq!(post_status(&mut fresh, "exec-3").await, 200);
}

#[tokio::test]
async fn sighup_without_tls_leaves_the_relay_running() {
    let db = TestDb::migrated().await;
    let mut relay = RelayBuilder::new(&db.url, "http://127.0.0.1:9").spawn();
    wait_until("the listener", T, || async {
        relay
            .log()
            .contains("callback listener ready")
            .then_some(())
    })
    .await;
    relay.signal("HUP");
    wait_until("the SIGHUP in the log", T, || async {
        relay.log().contains("SIGHUP received").then_some(())
    })
    .await;
    assert!(relay.is_running(), "{}", relay.log());
}

/// A certificate and a key that are each valid but not a pair: `run` said "relay
/// started", answered ready, and never opened the callback port. Refused at start, by
/// `check-config` too, naming both files; a half-written certificate says so in words.
#[tokio::test]
async fn a_certificate_and_a_key_that_are_no_pair_stop_run_and_check_config() {
    let pki = Pki::new("mismatch");
    let one = pki.server("one", &["127.0.0.1"], Validity::Current);
    let other = pki.server("other", &["127.0.0.1"], Validity::Current);
    let db = TestDb::migrated().await;
    let builder = RelayBuilder::new(&db.url, "http://127.0.0.1:9")
        .env("RELAY_CALLBACKS__TLS_CERT", one.cert.display())
        .env("RELAY_CALLBACKS__TLS_KEY", other.key.display());
    for command in [vec!["check-config"], vec!["run"]] {
        let out = tokio::time::timeout(T, builder.clone().args(command.clone()).output())
            .await
            .expect("it stops at once");
        assert_eq!(out.status.code(), Some(2), "{command:?}: {out:?}");
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(
            said.contains("callbacks.tls_key")
                && said.contains(&other.key.display().to_string())
                && said.contains(&one.cert.display().to_string())
                && said.contains("does not go with the certificate"),
            "{command:?}: {said}"
        );
        assert!(
            !said.contains("invalid configuration: invalid configuration"),
            "{said}"
        );
    }

    let half = pki.dir.join("half.crt");
    let text = std::fs::read_to_string(&one.cert).expect("cert");
    std::fs::write(&half, &text[..text.len() / 2]).expect("half a certificate");
    let out = builder
        .clone()
        .env("RELAY_CALLBACKS__TLS_CERT", half.display())
        .env("RELAY_CALLBACKS__TLS_KEY", one.key.display())
        .args(["check-config"])
        .output()
        .await;
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("no END CERTIFICATE line") && !said.contains("[67, 69"),
        "{said}"
    );
}

/// A self-signed n8n certificate made as OpenSSL 3 makes one by default is a CA
/// certificate, which no client takes as a server's own, listed in ca_file or not.
/// last_error says that and what to do, where it said `CaUsedAsEndEntity`.
#[tokio::test]
async fn an_n8n_presenting_a_ca_certificate_as_its_own_gets_a_last_error_that_says_what_to_do() {
    let pki = Pki::new("n8n-ca-leaf");
    let server = pki.self_signed_ca_for("n8n", &["127.0.0.1"]);
    let sink = Sink::https(&server, None).await;
    let db = TestDb::migrated().await;
    let _relay = RelayBuilder::new(&db.url, &sink.url())
        .env("RELAY_N8N__CA_FILE", server.cert.display())
        .spawn();
    db.insert_lead().await;
    let error = first_last_error(&db).await;
    assert!(
        error.contains("is a CA certificate")
            && error.contains("basicConstraints=critical,CA:FALSE"),
        "{error}"
    );
    assert_eq!(sink.count(), 0);
}

/// An n8n left on http:// while the listener speaks HTTPS: a plain 400 that says so,
/// where it got a TLS alert (curl: "Received HTTP/0.9"). HTTPS on the same port
/// still works.
#[tokio::test]
async fn plain_http_on_the_https_listener_gets_a_400_that_says_to_use_https() {
    let pki = Pki::new("plain-on-tls");
    let server = pki.server("listener", &["127.0.0.1"], Validity::Current);
    let db = TestDb::migrated().await;
    let (relay, addr) = https_listener(&db, &server.cert, &server.key).await;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut plain = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    plain
        .write_all(
            b"POST /api/v1/webhooks/n8n/workflow-status HTTP/1.1\r\nHost: relay\r\n\
              Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
        )
        .await
        .expect("send");
    let mut answer = String::new();
    tokio::time::timeout(T, plain.read_to_string(&mut answer))
        .await
        .expect("an answer")
        .expect("read");
    assert!(
        answer.starts_with("HTTP/1.1 400") && answer.contains("this port speaks HTTPS"),
        "{answer}"
    );

    let (shown, mut tls) = https_connection(&addr, &pki).await;
    assert_eq!(shown, der_of(&server.cert));
    assert_eq!(post_status(&mut tls, "exec-plain").await, 200);

    // A handshake that fails (here a broken TLS record) is a warning, not only a
    // debug line: a certificate n8n does not trust fails every callback this way.
    let mut broken = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    broken
        .write_all(b"\x16\x03\x01\x00\x05hello")
        .await
        .expect("send");
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(T, broken.read_to_end(&mut rest)).await;
    wait_until("the failed handshake in the log", T, || async {
        relay
            .log()
            .lines()
            .any(|l| l.contains("WARN") && l.contains("callback TLS handshake failed"))
            .then_some(())
    })
    .await;
}

/// The listener's certificate five days from expiry (its renewal stopped): rustls
/// serves it without a word, and n8n would refuse it from the sixth day on. `run` says
/// so at start, naming the file, the date and what to do; `/metrics` publishes its
/// expiry for an alert; `check-config` lists the certificate with its dates and warns.
#[tokio::test]
async fn a_callback_certificate_near_its_expiry_is_said_at_start_in_metrics_and_by_check_config() {
    let pki = Pki::new("expiring");
    let left = Duration::from_secs(5 * 86_400 + 3_600);
    let soon = pki.server("soon", &["127.0.0.1"], Validity::ExpiresIn(left));
    let path = soon.cert.display().to_string();
    let db = TestDb::migrated().await;
    let builder = RelayBuilder::new(&db.url, "http://127.0.0.1:9")
        .env("RELAY_CALLBACKS__TLS_CERT", soon.cert.display())
        .env("RELAY_CALLBACKS__TLS_KEY", soon.key.display());

    let out = builder.clone().args(["check-config"]).output().await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    let listed = text
        .lines()
        .skip_while(|l| *l != "certificates the relay presents:")
        .find(|l| l.trim_start().starts_with("callbacks.tls_cert") && l.contains(&path))
        .unwrap_or_else(|| panic!("the certificate is listed:\n{text}"));
    assert!(
        listed.contains("expires on ") && listed.ends_with("(5 days left)"),
        "{listed}"
    );
    assert!(
        text.contains(&format!(
            "warning: callbacks.tls_cert: the certificate in {path} expires on"
        )) && text.contains("renew it, then send the relay SIGHUP"),
        "{text}"
    );
    let out = builder
        .clone()
        .args(["check-config", "--json"])
        .output()
        .await;
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let listed = &json["certificates"][0];
    assert_eq!(listed["key"], "callbacks.tls_cert", "{json}");
    assert_eq!(listed["file"], path.as_str());
    assert!(listed["problem"]
        .as_str()
        .is_some_and(|p| p.contains("expires on")));

    let relay = builder.clone().spawn();
    wait_until("the warning at start", T, || async {
        let log = relay.log();
        (log.contains(&format!("the certificate in {path} expires on"))
            && log.contains("(5 days left)"))
        .then_some(())
    })
    .await;
    let expires = relay_core::tls::Validity::of(&der_of(&soon.cert))
        .expect("dates")
        .not_after
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    let metrics = http_get(&builder.metrics_addr(), "/metrics").await;
    assert!(
        metrics.contains(&format!(
            "n8n_relay_callback_certificate_expiry_timestamp_seconds {expires}\n"
        )),
        "{metrics}"
    );
}

/// The body of a plain HTTP/1.0 GET.
async fn http_get(addr: &str, path: &str) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .expect("request");
    let mut reply = String::new();
    stream.read_to_string(&mut reply).await.expect("reply");
    reply
}
