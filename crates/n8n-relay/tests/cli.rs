//! The binary's command line, checked without a database. (This file also makes
//! `cargo test --workspace` build the `n8n-relay` binary that tests/ drives.)

use std::process::Command;

fn relay() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_n8n-relay"));
    c.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .current_dir(std::env::temp_dir());
    c
}

#[test]
fn help_lists_every_contract_subcommand() {
    let out = relay().arg("--help").output().expect("run");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for sub in [
        "run",
        "callbacks",
        "migrate",
        "check-config",
        "queue",
        "emit",
        "sign",
    ] {
        assert!(text.contains(sub), "--help lacks {sub}:\n{text}");
    }
}

#[test]
fn bad_usage_exits_2() {
    let out = relay().arg("no-such-command").output().expect("run");
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn invalid_config_exits_2_and_names_the_key() {
    let out = relay()
        .arg("check-config")
        .env("RELAY_QUEUE__WORKERS", "0")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("queue.workers"), "{err}");
}

/// `run` refuses to start a callback listener that could verify nothing; a
/// configuration check that said "valid" for it sent operators to a relay that exits 2.
#[test]
fn check_config_refuses_what_run_refuses_a_callback_listener_without_its_secret() {
    let out = relay()
        .args(["check-config", "--json"])
        .env("WEBHOOK_SECRET", "s3cr3t-value-of-some-length")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("N8N_WEBHOOK_SECRET"), "{err}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(report["valid"], false, "{report}");

    let out = relay()
        .args(["check-config"])
        .env("WEBHOOK_SECRET", "s3cr3t-value-of-some-length")
        .env("RELAY_CALLBACKS__ENABLED", "false")
        .output()
        .expect("run");
    assert_eq!(
        out.status.code(),
        Some(0),
        "without the listener it needs no secret: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn check_config_redacts_secrets() {
    let out = relay()
        .args(["check-config", "--json"])
        .env("WEBHOOK_SECRET", "s3cr3t-value")
        .env("N8N_WEBHOOK_SECRET", "n8n-s3cr3t-value")
        .env("DATABASE_URL", "postgres://u:pa55word@127.0.0.1/db")
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("s3cr3t-value"), "{text}");
    assert!(!text.contains("pa55word"), "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).expect("json");
    assert_eq!(
        v["keys"]["security.webhook_secret"]["source"],
        "environment"
    );
}

/// `n8n-relay sign ARGS` with `body` on stdin; its standard output.
fn sign(args: &[&str], body: &[u8]) -> String {
    use std::io::Write;
    let mut child = relay()
        .arg("sign")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(body)
        .expect("write");
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn sign_prints_headers_that_verify() {
    let text = sign(
        &["--secret", "k", "--timestamp", "1700000000"],
        br#"{"demo_id":1}"#,
    );
    let expected = relay_core::signature::sign(b"k", 1_700_000_000, br#"{"demo_id":1}"#);
    assert!(text.contains("X-Webhook-Timestamp: 1700000000"), "{text}");
    assert!(
        text.contains(&format!("X-Webhook-Signature-256: {expected}")),
        "{text}"
    );
}

#[test]
fn sign_standard_webhooks_reproduces_the_specifications_example() {
    let text = sign(
        &[
            "--scheme",
            "standard-webhooks",
            "--secret",
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "--id",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            "--timestamp",
            "1614265330",
        ],
        br#"{"test": 2432232314}"#,
    );
    assert_eq!(
        text,
        "webhook-id: msg_p5jXN8AQM9LWM0D4loKWxJek\nwebhook-timestamp: 1614265330\n\
         webhook-signature: v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=\n"
    );
}
