//! Secrets from files (the `_FILE` convention of container images): the relay signs
//! and verifies with what the files hold, `check-config` says which file set each
//! secret and never its value, and a file others can read stops it at start.

use std::os::unix::fs::PermissionsExt as _;
use std::time::Duration;

use relay_tests::certs::write_private;
use relay_tests::{RelayBuilder, Sink, TestDb};

const T: Duration = Duration::from_secs(20);

fn secret_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("n8n-relay-secrets-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    dir
}

#[tokio::test]
async fn the_relay_signs_with_the_secret_its_file_holds_and_check_config_names_the_file() {
    let dir = secret_dir("sign");
    let outgoing = dir.join("webhook_secret");
    let callback = dir.join("n8n_webhook_secret");
    write_private(&outgoing, "outgoing-from-a-file\n");
    write_private(&callback, "callback-from-a-file\n");
    let db = TestDb::migrated().await;
    let sink = Sink::start().await;
    let builder = RelayBuilder::new(&db.url, &sink.url())
        .without_env("WEBHOOK_SECRET")
        .without_env("N8N_WEBHOOK_SECRET")
        .env("WEBHOOK_SECRET_FILE", outgoing.display())
        .env("N8N_WEBHOOK_SECRET_FILE", callback.display());

    let shown = builder.clone().args(["check-config"]).output().await;
    let stdout = String::from_utf8_lossy(&shown.stdout).to_string();
    assert!(shown.status.success(), "{stdout}");
    let line = stdout
        .lines()
        .find(|l| l.starts_with("security.webhook_secret "))
        .unwrap_or_default();
    assert!(
        line.contains("(redacted)")
            && line.contains(&format!("file {}", outgoing.display()))
            && line.contains("WEBHOOK_SECRET_FILE"),
        "{stdout}"
    );
    assert!(!stdout.contains("outgoing-from-a-file") && !stdout.contains("callback-from-a-file"));

    let relay = builder.spawn();
    db.insert_lead().await;
    let got = sink.wait_for(1, T).await;
    let ts: u64 = got[0]
        .header("x-webhook-timestamp")
        .and_then(|t| t.parse().ok())
        .expect("timestamp");
    assert_eq!(
        got[0].header("x-webhook-signature-256"),
        Some(relay_core::signature::sign(b"outgoing-from-a-file", ts, &got[0].body).as_str()),
        "signed with the file's secret, its newline stripped"
    );
    assert!(!relay.log().contains("from-a-file"), "{}", relay.log());
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_secret_file_others_can_read_stops_the_relay_at_start_naming_the_key() {
    let dir = secret_dir("open");
    let open = dir.join("webhook_secret");
    std::fs::write(&open, "world-readable").expect("write");
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let db = TestDb::migrated().await;
    let out = RelayBuilder::new(&db.url, "http://127.0.0.1:9")
        .without_env("WEBHOOK_SECRET")
        .env("WEBHOOK_SECRET_FILE", open.display())
        .output()
        .await;
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("security.webhook_secret_file") && stderr.contains("readable by others"),
        "{stderr}"
    );
    assert!(!stderr.contains("world-readable"), "{stderr}");

    let missing = RelayBuilder::new(&db.url, "http://127.0.0.1:9")
        .without_env("N8N_WEBHOOK_SECRET")
        .env("N8N_WEBHOOK_SECRET_FILE", dir.join("absent").display())
        .output()
        .await;
    let stderr = String::from_utf8_lossy(&missing.stderr).to_string();
    assert_eq!(missing.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("security.n8n_webhook_secret_file"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn check_config_never_shows_a_database_password_and_names_the_file_that_holds_one() {
    let dir = secret_dir("dbpass");
    let file = dir.join("db-password");
    write_private(&file, "db-pass-from-a-file\n");
    let sink = Sink::start().await;
    let show = |builder: RelayBuilder| async move {
        let out = builder.args(["check-config"]).output().await;
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(out.status.success(), "{stdout}");
        stdout
    };

    // In the URL, in every form libpq takes: a multi-host URL (which URL parsers
    // refuse), a query parameter, a quoted key=value pair.
    for url in [
        "postgres://relay:url-secret@h1:5432,h2:5433/app?target_session_attrs=read-write",
        "postgres://relay@db/app?password=url-secret",
        "host=db user=relay password='url secret' dbname=app",
    ] {
        let stdout = show(RelayBuilder::new(url, &sink.url())).await;
        assert!(
            !stdout.contains("url-secret") && !stdout.contains("url secret"),
            "{stdout}"
        );
        assert!(stdout.contains("(redacted)"), "{stdout}");
    }

    // From database.password_file: a row of its own, redacted, naming the file.
    let stdout = show(
        RelayBuilder::new("postgres://relay@db/app", &sink.url())
            .env("RELAY_DATABASE__PASSWORD_FILE", file.display()),
    )
    .await;
    let line = stdout
        .lines()
        .find(|l| l.starts_with("database.password "))
        .unwrap_or_default();
    assert!(
        line.contains("(redacted)")
            && line.contains(&format!("file {}", file.display()))
            && line.contains("RELAY_DATABASE__PASSWORD_FILE"),
        "{stdout}"
    );
    assert!(!stdout.contains("db-pass-from-a-file"), "{stdout}");
    let _ = std::fs::remove_dir_all(&dir);
}
