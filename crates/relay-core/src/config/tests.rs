//! The configuration's tests: every layer, every older name, every refusal.

use super::load::key_for;
use super::*;
use figment::providers::{Format, Toml};
use figment::{Figment, Jail};

fn load_in_jail() -> Result<Config, ConfigError> {
    Config::load(&Sources::standard(None)).map(|l| l.config)
}

#[test]
fn defaults_are_valid_and_documented_routes_follow_the_event_name() {
    Jail::expect_with(|_jail| {
        let config = load_in_jail().expect("defaults load");
        let routes = config.routes();
        assert_eq!(routes.len(), 12);
        let scraped = routes
            .iter()
            .find(|r| r.event == EventType::LeadScraped)
            .expect("route");
        assert_eq!(scraped.url, "http://localhost:5678/webhook/lead-scraped");
        Ok(())
    });
}

#[test]
fn layers_apply_in_order_file_then_dotenv_then_environment() {
    Jail::expect_with(|jail| {
        jail.create_dir("config")?;
        jail.create_file(
            "config/relay.toml",
            "[queue]\nworkers = 4\nbatch_size = 7\nmax_retries = 9\n",
        )?;
        jail.create_file(".env", "RELAY_QUEUE__BATCH_SIZE=8\nWEBHOOK_MAX_RETRIES=5\n")?;
        jail.set_env("WEBHOOK_MAX_RETRIES", "6");
        let loaded = Config::load(&Sources::standard(None)).expect("load");
        assert_eq!(loaded.config.queue.workers, 4, "file beats default");
        assert_eq!(loaded.config.queue.batch_size, 8, ".env beats file");
        assert_eq!(loaded.config.queue.max_retries, 6, "environment beats .env");
        assert!(loaded.source_of("queue.workers").contains("TOML"));
        assert_eq!(loaded.source_of("queue.timeout_seconds"), "default");
        assert!(loaded.source_of("queue.batch_size").contains(".env"));
        assert!(loaded
            .source_of("queue.max_retries")
            .contains("environment"));
        Ok(())
    });
}

/// The older system's settings were read by a Python backend, which took `True`, `0`,
/// `yes`; figment alone takes only `true` and `false`, and the relay refused to start
/// (exit 2, and systemd does not restart it).
#[test]
fn switches_take_the_spellings_the_older_system_took() {
    for (on, off) in [("True", "False"), ("1", "0"), ("yes", "no"), ("ON", "off")] {
        Jail::expect_with(|jail| {
            jail.set_env("N8N_ENABLED", off);
            jail.create_file(".env", &format!("WEBHOOK_QUEUE_ENABLED={on}\n"))?;
            jail.set_env("RELAY_ROUTES__LEAD_SCRAPED__ENABLED", off);
            let c = load_in_jail().expect("load");
            assert!(!c.n8n.enabled, "{off}");
            assert!(c.queue.enabled, "{on}");
            let scraped = c
                .routes()
                .into_iter()
                .find(|r| r.event == EventType::LeadScraped)
                .expect("the route");
            assert!(!scraped.enabled, "a route's switch too: {off}");
            Ok(())
        });
    }
    let msg = error_in_jail(|jail| {
        jail.set_env("N8N_ENABLED", "maybe");
        Ok(())
    });
    assert!(msg.contains("n8n.enabled"), "{msg}");
}

#[test]
fn text_values_are_taken_as_written_however_they_look() {
    Jail::expect_with(|jail| {
        // figment's Env alone would read these as 7, true and an array.
        jail.set_env("WEBHOOK_SECRET", "007");
        jail.set_env("N8N_WEBHOOK_SECRET", "true");
        jail.create_file(".env", "N8N_API_KEY=\"[1, 2]\"\nRELAY_LOG__LEVEL=1.50\n")?;
        jail.set_env("RELAY_ROUTES__LEAD_SCRAPED__URL", "/webhook/0042");
        jail.set_env("RELAY_QUEUE__WORKERS", "007");
        let c = load_in_jail().expect("load");
        assert_eq!(c.security.webhook_secret.expose(), "007");
        assert_eq!(c.security.n8n_webhook_secret.expose(), "true");
        assert_eq!(c.n8n.api_key.expose(), "[1, 2]");
        assert_eq!(c.log.level, "1.50");
        let scraped = c
            .routes()
            .into_iter()
            .find(|r| r.event == EventType::LeadScraped);
        assert!(scraped.is_some_and(|r| r.url.ends_with("/webhook/0042")));
        assert_eq!(c.queue.workers, 7, "numbers stay numbers");
        Ok(())
    });
}

#[test]
fn seed_names_of_the_older_system_keep_working() {
    Jail::expect_with(|jail| {
        jail.set_env("DATABASE_URL", "postgres://u:p@db:5432/leads");
        jail.set_env("N8N_ENABLED", "false");
        jail.set_env("N8N_WEBHOOK_BASE_URL", "http://n8n:5678/");
        jail.set_env("WEBHOOK_SECRET", "12345");
        jail.set_env("N8N_WEBHOOK_SECRET", "s2");
        jail.set_env("WEBHOOK_QUEUE_ENABLED", "true");
        jail.set_env("WEBHOOK_QUEUE_BATCH_SIZE", "10");
        jail.set_env("WEBHOOK_QUEUE_PROCESSING_INTERVAL", "2");
        jail.set_env("WEBHOOK_RETRY_DELAYS", "1, 2,3");
        jail.set_env("WEBHOOK_TIMEOUT_SECONDS", "9");
        let c = load_in_jail().expect("load");
        assert_eq!(c.database.url.expose(), "postgres://u:p@db:5432/leads");
        assert!(!c.n8n.enabled);
        assert!(!c.delivery_enabled());
        assert_eq!(c.security.webhook_secret.expose(), "12345");
        assert_eq!(c.queue.batch_size, 10);
        assert_eq!(c.queue.processing_interval_seconds, 2);
        assert_eq!(c.queue.retry_delays, vec![1, 2, 3]);
        assert_eq!(c.queue.timeout_seconds, 9);
        assert_eq!(c.routes()[0].url, "http://n8n:5678/webhook/lead-scraped");
        Ok(())
    });
}

#[test]
fn relay_prefixed_names_win_over_seed_names() {
    Jail::expect_with(|jail| {
        jail.set_env("WEBHOOK_MAX_RETRIES", "2");
        jail.set_env("RELAY_QUEUE__MAX_RETRIES", "7");
        jail.set_env("RELAY_CALLBACKS__LISTEN", "127.0.0.1:18000");
        let c = load_in_jail().expect("load");
        assert_eq!(c.queue.max_retries, 7);
        assert_eq!(c.callbacks.listen.port(), 18000);
        Ok(())
    });
}

#[test]
fn routes_override_url_priority_and_enabled() {
    Jail::expect_with(|jail| {
        jail.create_dir("config")?;
        jail.create_file(
            "config/relay.toml",
            r#"
[n8n]
webhook_base_url = "http://hooks:5678"
[routes.demo_failed]
url = "/webhook/alerts"
priority = 10
[routes.lead_scraped]
url = "https://other.example/x"
enabled = false
"#,
        )?;
        let c = load_in_jail().expect("load");
        let routes = c.routes();
        let failed = routes
            .iter()
            .find(|r| r.event == EventType::DemoFailed)
            .expect("r");
        assert_eq!(failed.url, "http://hooks:5678/webhook/alerts");
        assert_eq!(failed.priority, 10);
        let scraped = routes
            .iter()
            .find(|r| r.event == EventType::LeadScraped)
            .expect("r");
        assert_eq!(scraped.url, "https://other.example/x");
        assert!(!scraped.enabled);
        Ok(())
    });
}

#[test]
fn lifecycle_ordering_orders_across_routes_and_implies_per_entity_ordering() {
    Jail::expect_with(|jail| {
        jail.create_dir("config")?;
        jail.create_file(
            "config/relay.toml",
            r#"
[queue]
ordering = "lifecycle"
[routes.workflow_error]
ordering = "none"
[routes.lead_qualified]
ordering = "entity"
on_failure = "block"
"#,
        )?;
        let c = load_in_jail().expect("load");
        let route = |e: EventType| {
            c.routes()
                .into_iter()
                .find(|r| r.event == e)
                .expect("route")
        };
        let scraped = route(EventType::LeadScraped);
        assert!(scraped.lifecycle);
        assert_eq!(scraped.ordered, Some(OnFailure::Skip));
        let qualified = route(EventType::LeadQualified);
        assert!(!qualified.lifecycle, "entity stays per URL");
        assert_eq!(qualified.ordered, Some(OnFailure::Block));
        let error = route(EventType::WorkflowError);
        assert!(!error.lifecycle);
        assert_eq!(error.ordered, None);
        Ok(())
    });
    let msg = error_in_jail(|jail| {
        jail.set_env("RELAY_ROUTES__LEAD_SCRAPED__ORDERING", "lifecycles");
        Ok(())
    });
    assert!(msg.contains("routes.lead_scraped.ordering"), "{msg}");
}

#[test]
fn ordering_is_opt_in_per_route_with_a_global_default() {
    Jail::expect_with(|jail| {
        jail.create_dir("config")?;
        jail.create_file(
            "config/relay.toml",
            r#"
[routes.lead_qualified]
ordering = "entity"
[routes.lead_responded]
ordering = "entity"
on_failure = "block"
"#,
        )?;
        let c = load_in_jail().expect("load");
        let ordered = |e: EventType| {
            c.routes()
                .into_iter()
                .find(|r| r.event == e)
                .expect("route")
                .ordered
        };
        assert_eq!(ordered(EventType::LeadScraped), None, "off by default");
        assert_eq!(ordered(EventType::LeadQualified), Some(OnFailure::Skip));
        assert_eq!(ordered(EventType::LeadResponded), Some(OnFailure::Block));
        jail.set_env("RELAY_QUEUE__ORDERING", "entity");
        jail.set_env("RELAY_QUEUE__ON_FAILURE", "block");
        let c = load_in_jail().expect("load");
        assert!(c
            .routes()
            .iter()
            .all(|r| r.ordered == Some(OnFailure::Block) || r.event == EventType::LeadQualified));
        Ok(())
    });
    for (var, value, key) in [
        ("RELAY_QUEUE__ORDERING", "fifo", "queue.ordering"),
        ("RELAY_QUEUE__ON_FAILURE", "retry", "queue.on_failure"),
    ] {
        let msg = error_in_jail(|jail| {
            jail.set_env(var, value);
            Ok(())
        });
        assert!(msg.contains(key), "{msg}");
    }
}

fn error_in_jail(setup: impl FnOnce(&mut Jail) -> figment::error::Result<()>) -> String {
    let mut message = String::new();
    Jail::expect_with(|jail| {
        setup(jail)?;
        message = match load_in_jail() {
            Ok(_) => String::from("loaded"),
            Err(e) => e.to_string(),
        };
        Ok(())
    });
    message
}

#[test]
fn invalid_values_name_their_key() {
    let cases: Vec<(&str, &str, &str)> = vec![
        ("RELAY_QUEUE__WORKERS", "0", "queue.workers"),
        ("RELAY_QUEUE__WORKERS", "many", "queue.workers"),
        ("WEBHOOK_RETRY_DELAYS", "5,soon", "queue.retry_delays"),
        ("N8N_BASE_URL", "ftp://x", "n8n.base_url"),
        ("DATABASE_URL", "not a url at all", "database.url"),
        ("RELAY_CALLBACKS__LISTEN", "nowhere", "callbacks.listen"),
        ("WEBHOOK_TIMEOUT_SECONDS", "500", "queue.lease_seconds"),
        ("RELAY_LOG__FORMAT", "xml", "log.format"),
        ("N8N_API_KEY", "key-with\nnewline", "n8n.api_key"),
        // Durations a clock or a Postgres interval cannot hold: refused at load, not
        // an overflow in a delivery or a cleanup later.
        (
            "RELAY_QUEUE__LEASE_SECONDS",
            "18446744073709551615",
            "queue.lease_seconds",
        ),
        (
            "RELAY_CALLBACKS__REQUEST_TIMEOUT_SECONDS",
            "9223372036854775807",
            "callbacks.request_timeout_seconds",
        ),
        (
            "RELAY_DATABASE__STATEMENT_TIMEOUT_SECONDS",
            "2147484",
            "database.statement_timeout_seconds",
        ),
        (
            "RELAY_QUEUE__MAX_RETRY_AFTER_SECONDS",
            "99999999999",
            "queue.max_retry_after_seconds",
        ),
        (
            "WEBHOOK_RETRY_DELAYS",
            "5,99999999999",
            "queue.retry_delays",
        ),
        (
            "RELAY_QUEUE__RETENTION_DAYS",
            "36501",
            "queue.retention_days",
        ),
    ];
    for (var, value, key) in cases {
        let msg = error_in_jail(|jail| {
            jail.set_env(var, value);
            Ok(())
        });
        assert!(
            msg.contains(key),
            "{var}={value}: {msg:?} should name {key}"
        );
    }
}

#[test]
fn standard_webhooks_needs_whsec_secrets_and_names_the_key_at_fault() {
    let good = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let standard = |jail: &mut Jail| {
        jail.set_env("RELAY_SECURITY__SCHEME", "standard-webhooks");
    };
    let cases: Vec<(&str, &str, &str)> = vec![
        ("WEBHOOK_SECRET", "plain-secret", "security.webhook_secret"),
        ("WEBHOOK_SECRET", "whsec_***", "security.webhook_secret"),
        (
            "N8N_WEBHOOK_SECRET",
            "whsec_c2hvcnQ=",
            "security.n8n_webhook_secret",
        ),
        (
            "RELAY_SECURITY__ALLOW_LEGACY_SIGNATURE",
            "true",
            "security.allow_legacy_signature",
        ),
    ];
    for (var, value, key) in cases {
        let msg = error_in_jail(|jail| {
            standard(jail);
            jail.set_env("WEBHOOK_SECRET", good);
            jail.set_env("N8N_WEBHOOK_SECRET", good);
            jail.set_env(var, value);
            Ok(())
        });
        assert!(
            msg.contains(key),
            "{var}={value}: {msg:?} should name {key}"
        );
        assert!(
            !msg.contains(value) || value == "true",
            "{msg:?} shows the secret"
        );
    }
    let msg = error_in_jail(|jail| {
        standard(jail);
        Ok(())
    });
    assert!(msg.contains("security.webhook_secret"), "{msg}");
    let msg = error_in_jail(|jail| {
        jail.set_env("RELAY_SECURITY__SCHEME", "svix");
        Ok(())
    });
    assert!(msg.contains("security.scheme"), "{msg}");
    Jail::expect_with(|jail| {
        standard(jail);
        jail.set_env("WEBHOOK_SECRET", good);
        let c = load_in_jail().expect("a whsec_ secret loads");
        assert_eq!(c.security.scheme, Scheme::StandardWebhooks);
        assert!(!c.security.signing_keys().expect("keys").is_empty());
        Ok(())
    });
}

#[test]
fn rotation_lists_come_before_the_single_secret_newest_first() {
    Jail::expect_with(|jail| {
        jail.create_dir("config")?;
        jail.create_file(
            "config/relay.toml",
            "[security]\nwebhook_secrets = [\"newest\", \"newer\", \"old\"]\n",
        )?;
        jail.set_env("WEBHOOK_SECRET", "old");
        jail.set_env("N8N_WEBHOOK_SECRET", "cb-old");
        jail.set_env("RELAY_SECURITY__N8N_WEBHOOK_SECRETS", "[\"cb-new\", 12345]");
        let c = load_in_jail().expect("load");
        let shown = |v: Vec<(String, &Secret)>| -> Vec<(String, String)> {
            v.into_iter()
                .map(|(k, s)| (k, s.expose().to_string()))
                .collect()
        };
        assert_eq!(
            shown(c.security.signing_secrets()),
            vec![
                ("security.webhook_secrets[0]".into(), "newest".into()),
                ("security.webhook_secrets[1]".into(), "newer".into()),
                ("security.webhook_secrets[2]".into(), "old".into()),
            ],
            "a repeat keeps its newest place"
        );
        assert_eq!(
            shown(c.security.callback_secrets()),
            vec![
                ("security.n8n_webhook_secrets[0]".into(), "cb-new".into()),
                ("security.n8n_webhook_secrets[1]".into(), "12345".into()),
                ("security.n8n_webhook_secret".into(), "cb-old".into()),
            ]
        );
        let json = c.redacted().to_string();
        for secret in ["newest", "newer", "cb-new", "12345"] {
            assert!(!json.contains(secret), "{json}");
        }
        // A single string is one secret; a comma is part of it.
        jail.set_env("RELAY_SECURITY__WEBHOOK_SECRETS", "a,b");
        let c = load_in_jail().expect("load");
        assert_eq!(c.security.webhook_secrets, vec![Secret::new("a,b")]);
        // Digits stay as written (figment's reading made 007 the number 7).
        jail.set_env("RELAY_SECURITY__WEBHOOK_SECRETS", "007");
        let c = load_in_jail().expect("load");
        assert_eq!(c.security.webhook_secrets, vec![Secret::new("007")]);
        // In .env, single quotes keep the list's own quotes.
        jail.clear_env();
        jail.set_env("WEBHOOK_SECRET", "old");
        jail.set_env("N8N_WEBHOOK_SECRET", "cb-old");
        jail.create_file(
            ".env",
            "RELAY_SECURITY__N8N_WEBHOOK_SECRETS='[\"a,b\", \"old\"]'\n",
        )?;
        let c = load_in_jail().expect("load");
        assert_eq!(
            c.security.n8n_webhook_secrets,
            vec![Secret::new("a,b"), Secret::new("old")]
        );
        Ok(())
    });
    // What used to become other secrets than those written is refused, naming the
    // key and never the value: a number with a leading zero ("123"), and a .env list
    // whose quotes dotenv took away (three secrets a, b and old).
    for (setup, key) in [
        ("env", "security.webhook_secrets"),
        (".env", "security.n8n_webhook_secrets"),
    ] {
        let msg = error_in_jail(|jail| {
            if setup == "env" {
                jail.set_env("RELAY_SECURITY__WEBHOOK_SECRETS", "[\"s3cret-new\", 0123]");
            } else {
                jail.create_file(
                    ".env",
                    "RELAY_SECURITY__N8N_WEBHOOK_SECRETS=[\"s3cret,b\",\"old\"]\n",
                )?;
            }
            Ok(())
        });
        assert!(msg.contains(key), "{setup}: {msg}");
        assert!(msg.contains("single quotes"), "{setup}: {msg}");
        assert!(!msg.contains("s3cret"), "{setup}: {msg}");
    }
    let msg = error_in_jail(|jail| {
        jail.set_env("RELAY_SECURITY__SCHEME", "standard-webhooks");
        jail.set_env("WEBHOOK_SECRET", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        jail.set_env(
            "RELAY_SECURITY__WEBHOOK_SECRETS",
            "[\"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\", \"plain\"]",
        );
        Ok(())
    });
    assert!(msg.contains("security.webhook_secrets[1]"), "{msg}");
    assert_eq!(Secret::new("k").fingerprint().len(), 8);
}

#[test]
fn unknown_keys_and_routes_are_refused() {
    let msg = error_in_jail(|jail| {
        jail.create_dir("config")?;
        jail.create_file("config/relay.toml", "[queue]\nwrokers = 3\n")?;
        Ok(())
    });
    assert!(msg.contains("wrokers"), "{msg}");
    let msg = error_in_jail(|jail| {
        jail.create_dir("config")?;
        jail.create_file(
            "config/relay.toml",
            "[routes.lead_scrapped]\npriority = 1\n",
        )?;
        Ok(())
    });
    assert!(msg.contains("routes.lead_scrapped"), "{msg}");
}

#[test]
fn secrets_never_print() {
    Jail::expect_with(|jail| {
        // Every secret the configuration holds, each with its own marker.
        let secrets = [
            ("WEBHOOK_SECRET", "hunter2-secret"),
            ("DATABASE_URL", "postgres://u:pw-secret@h/db"),
            (
                "RELAY_SECURITY__N8N_WEBHOOK_SECRET",
                "callback-secret-value",
            ),
            ("RELAY_N8N__API_KEY", "api-key-secret-value"),
            ("RELAY_N8N__AUTH_HEADER_NAME", "X-Auth"),
            ("RELAY_N8N__AUTH_HEADER_VALUE", "auth-header-secret"),
            ("RELAY_CONSOLE__TOKEN", "console-operator-secret"),
            ("RELAY_CONSOLE__READ_ONLY_TOKEN", "console-reader-secret"),
        ];
        for (key, value) in secrets {
            jail.set_env(key, value);
        }
        let c = load_in_jail().expect("load");
        assert_eq!(c.console.token.expose(), "console-operator-secret");
        let debug = format!("{c:?}");
        let json = c.redacted().to_string();
        assert!(json.contains("(redacted)"));
        for text in [debug, json] {
            for marker in [
                "hunter2",
                "pw-secret",
                "callback-secret",
                "api-key-secret",
                "auth-header-secret",
                "console-operator-secret",
                "console-reader-secret",
            ] {
                assert!(!text.contains(marker), "{marker} shown: {text}");
            }
        }
        Ok(())
    });
}

/// A file in the jail's directory with the mode secret files need.
fn private_file(jail: &mut Jail, name: &str, content: &str) -> figment::error::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    jail.create_file(name, content)?;
    std::fs::set_permissions(
        jail.directory().join(name),
        std::fs::Permissions::from_mode(0o600),
    )
    .map_err(|e| figment::Error::from(e.to_string()))
}

#[test]
fn secrets_come_from_files_named_by_any_layer() {
    Jail::expect_with(|jail| {
        private_file(jail, "outgoing", "from-file-out\n")?;
        private_file(jail, "callback", "from-file-cb\r\n")?;
        private_file(jail, "api", "from-file-api")?;
        private_file(jail, "pgpw", "pg-from-file\n")?;
        jail.create_dir("config")?;
        jail.create_file(
            "config/relay.toml",
            "[database]\npassword_file = \"pgpw\"\n",
        )?;
        jail.create_file(".env", "N8N_WEBHOOK_SECRET_FILE=callback\n")?;
        jail.set_env("WEBHOOK_SECRET_FILE", "outgoing");
        jail.set_env("RELAY_N8N__API_KEY_FILE", "api");
        let c = load_in_jail().expect("load");
        assert_eq!(c.security.webhook_secret.expose(), "from-file-out");
        assert_eq!(c.security.n8n_webhook_secret.expose(), "from-file-cb");
        assert_eq!(c.n8n.api_key.expose(), "from-file-api");
        assert_eq!(c.database.password.expose(), "pg-from-file");
        let shown = format!("{c:?} {}", c.redacted());
        for secret in [
            "from-file-out",
            "from-file-cb",
            "from-file-api",
            "pg-from-file",
        ] {
            assert!(!shown.contains(secret), "{shown}");
        }
        Ok(())
    });
}

#[test]
fn a_secret_file_that_cannot_be_used_names_its_key() {
    let both = error_in_jail(|jail| {
        private_file(jail, "s", "x")?;
        jail.set_env("WEBHOOK_SECRET", "inline");
        jail.set_env("WEBHOOK_SECRET_FILE", "s");
        Ok(())
    });
    assert!(
        both.contains("security.webhook_secret_file") && both.contains("not both"),
        "{both}"
    );
    let missing = error_in_jail(|jail| {
        jail.set_env("N8N_WEBHOOK_SECRET_FILE", "/nonexistent/secret");
        Ok(())
    });
    assert!(
        missing.contains("security.n8n_webhook_secret_file")
            && missing.contains("/nonexistent/secret"),
        "{missing}"
    );
    let open = error_in_jail(|jail| {
        jail.create_file("world", "readable-secret")?;
        jail.set_env("N8N_API_KEY_FILE", "world");
        Ok(())
    });
    assert!(
        open.contains("n8n.api_key_file") && open.contains("readable by others"),
        "{open}"
    );
    assert!(!open.contains("readable-secret"), "{open}");
    let empty = error_in_jail(|jail| {
        private_file(jail, "empty", "\n")?;
        jail.set_env("WEBHOOK_SECRET_FILE", "empty");
        Ok(())
    });
    assert!(empty.contains("is empty"), "{empty}");
}

#[test]
fn tls_files_that_cannot_be_used_name_key_and_file() {
    let not_pem = error_in_jail(|jail| {
        jail.create_file("ca.pem", "this is not a certificate")?;
        jail.set_env(
            "DATABASE_URL",
            "postgres://h/db?sslmode=verify-full&sslrootcert=ca.pem",
        );
        Ok(())
    });
    assert!(
        not_pem.contains("database.sslrootcert") && not_pem.contains("ca.pem"),
        "{not_pem}"
    );
    let n8n_ca = error_in_jail(|jail| {
        jail.create_file("n8n-ca.pem", "garbage")?;
        jail.set_env("RELAY_N8N__CA_FILE", "n8n-ca.pem");
        Ok(())
    });
    assert!(
        n8n_ca.contains("n8n.ca_file") && n8n_ca.contains("n8n-ca.pem"),
        "{n8n_ca}"
    );
    let half = error_in_jail(|jail| {
        jail.set_env("RELAY_CALLBACKS__TLS_CERT", "cert.pem");
        Ok(())
    });
    assert!(half.contains("callbacks.tls_cert"), "{half}");
}

/// Every key as dotted paths, from a JSON object.
fn dotted_keys(prefix: &str, v: &serde_json::Value, out: &mut Vec<String>) {
    if let serde_json::Value::Object(map) = v {
        for (k, v) in map {
            let key = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            if v.is_object() && key != "routes" {
                dotted_keys(&key, v, out);
            } else {
                out.push(key);
            }
        }
    }
}

#[test]
fn shipped_relay_toml_documents_every_key_with_its_default() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../config/relay.toml");
    let file_json: serde_json::Value = Figment::from(Toml::file_exact(path))
        .extract()
        .expect("relay.toml parses");
    let defaults = serde_json::to_value(Config::default()).expect("json");
    let mut want = Vec::new();
    dotted_keys("", &defaults, &mut want);
    let mut have = Vec::new();
    dotted_keys("", &file_json, &mut have);
    want.sort();
    have.sort();
    assert_eq!(have, want, "config/relay.toml must list every key");
    Jail::expect_with(|_jail| {
        let loaded = Config::load(&Sources {
            config_file: Some(PathBuf::from(path)),
            dotenv: None,
        })
        .expect("relay.toml loads");
        assert_eq!(
            loaded.config,
            Config::default(),
            "relay.toml shows the defaults"
        );
        Ok(())
    });
}

#[test]
fn env_example_lists_every_seed_name_and_nothing_unknown() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../config/.env.example");
    let names: Vec<String> = dotenvy::from_path_iter(path)
        .expect(".env.example")
        .map(|item| item.expect("valid line").0)
        .collect();
    for (seed, _) in SEED_ENV_KEYS {
        assert!(names.iter().any(|n| n == seed), ".env.example lacks {seed}");
    }
    for name in &names {
        assert!(key_for(name).is_some(), "{name} maps to no key");
    }
    Jail::expect_with(|jail| {
        jail.create_file(".env", &std::fs::read_to_string(path).expect("read"))?;
        load_in_jail().expect(".env.example loads as a valid configuration");
        Ok(())
    });
}

#[test]
fn a_missing_explicit_config_file_is_an_error() {
    let err = Config::load(&Sources {
        config_file: Some(PathBuf::from("/nonexistent/relay.toml")),
        dotenv: None,
    })
    .err()
    .expect("error");
    assert!(err.to_string().contains("/nonexistent/relay.toml"));
    // A directory was "not found" too.
    let err = Config::load(&Sources {
        config_file: Some(std::env::temp_dir()),
        dotenv: None,
    })
    .err()
    .expect("error");
    assert!(err.to_string().contains("a directory, not a file"), "{err}");
}

#[test]
fn database_passwords_are_hidden_in_every_form_of_url() {
    let cases = [
        (
            "postgres://relay:s3cret@db:5432/app",
            "postgres://relay:(redacted)@db:5432/app",
        ),
        (
            "postgresql://relay:s3cret@h1:5432,h2:5433/app?target_session_attrs=read-write",
            "postgresql://relay:(redacted)@h1:5432,h2:5433/app?target_session_attrs=read-write",
        ),
        (
            "postgres://relay@db/app?sslmode=require&password=s3cret",
            "postgres://relay@db/app?sslmode=require&password=(redacted)",
        ),
        (
            "postgres://relay:p%40ss@db/app",
            "postgres://relay:(redacted)@db/app",
        ),
        (
            "host=db user=relay password=s3cret dbname=app",
            "host=db user=relay password=(redacted) dbname=app",
        ),
        (
            "host=db password = 'se cr\\'et' dbname=app",
            "host=db password =(redacted) dbname=app",
        ),
        // A password with '/' or '?' unencoded: the driver reads the credentials to the
        // first '@' wherever it is, and so does the redaction.
        (
            "postgres://relay:ab/s3cret@db/app",
            "postgres://relay:(redacted)@db/app",
        ),
        (
            "postgres://relay:ab?s3cret@db/app",
            "postgres://relay:(redacted)@db/app",
        ),
        // No credentials, an '@' in a later parameter: the password before it is hidden.
        (
            "postgres://db/app?password=s3cret&application_name=a@b",
            "postgres://db/app?password=(redacted)&application_name=a@b",
        ),
        // A parameter name the driver percent-decodes.
        (
            "postgres://relay@db/app?pass%77ord=s3cret",
            "postgres://relay@db/app?pass%77ord=(redacted)",
        ),
        // A multi-byte space before the key (a no-break space pasted from a web page).
        (
            "host=db\u{a0}password=s3cret dbname=app",
            "host=db\u{a0}password=(redacted) dbname=app",
        ),
        ("postgres://db/app", "postgres://db/app"),
    ];
    for (url, shown) in cases {
        let redacted = redact_url_password(url);
        assert_eq!(redacted, shown, "{url}");
        assert!(
            !redacted.contains("s3cret") && !redacted.contains("se cr"),
            "{url}"
        );
    }
}

#[test]
fn webhook_urls_are_shown_without_their_credentials() {
    use super::url_without_userinfo;
    assert_eq!(
        url_without_userinfo("https://u:p@n8n:5678/webhook/x"),
        "https://n8n:5678/webhook/x"
    );
    // An @ in the path is not userinfo.
    assert_eq!(
        url_without_userinfo("http://n8n/webhook/a@b"),
        "http://n8n/webhook/a@b"
    );
    assert_eq!(url_without_userinfo("not a url"), "not a url");
    // A credential in the query, by the parameter's name; other parameters stay.
    assert_eq!(
        url_without_userinfo(
            "https://proxy.example/hook?api_key=s3cret&workflow=7&X-Auth-Token=t0k#top"
        ),
        "https://proxy.example/hook?api_key=(redacted)&workflow=7&X-Auth-Token=(redacted)#top"
    );
    assert_eq!(
        url_without_userinfo("https://u:p@n8n/webhook/x?token=abc"),
        "https://n8n/webhook/x?token=(redacted)"
    );
    // Shown twice, the same: a URL typed as shown stands for the route's.
    let shown = url_without_userinfo("https://n8n/webhook/x?token=abc");
    assert_eq!(url_without_userinfo(&shown), shown);
    assert_eq!(
        super::url_standing_for(&shown, ["https://n8n/webhook/x?token=abc"].into_iter()),
        Some("https://n8n/webhook/x?token=abc")
    );
    assert_eq!(
        url_without_userinfo("https://n8n/webhook/x?design=1&monkey=2"),
        "https://n8n/webhook/x?design=1&monkey=2"
    );
}

#[test]
fn a_config_file_that_cannot_be_parsed_is_named_without_its_secret() {
    // A TOML syntax error on a secret's line (toml quotes the line in its message).
    let msg = error_in_jail(|jail| {
        jail.create_dir("config")?;
        jail.create_file(
            "config/relay.toml",
            "[security]\nwebhook_secret = \"s3cret-in-toml\n",
        )?;
        Ok(())
    });
    assert!(msg.contains("line 2"), "{msg}");
    assert!(!msg.contains("s3cret"), "{msg}");
    // A secret given as a number: the type error quotes the value it found.
    let msg = error_in_jail(|jail| {
        jail.create_dir("config")?;
        jail.create_file("config/relay.toml", "[console]\ntoken = 1234567890123456\n")?;
        Ok(())
    });
    assert!(msg.contains("console.token"), "{msg}");
    assert!(!msg.contains("1234567890123456"), "{msg}");
    // A .env line dotenvy cannot parse: named by its variable, never shown.
    let msg = error_in_jail(|jail| {
        jail.create_file(".env", "N8N_API_KEY='s3cret-in-dotenv\n")?;
        Ok(())
    });
    assert!(msg.contains("N8N_API_KEY"), "{msg}");
    assert!(!msg.contains("s3cret"), "{msg}");
    let msg = error_in_jail(|jail| {
        jail.create_file(".env", "s3cret pasted alone\n")?;
        Ok(())
    });
    assert!(msg.contains(".env"), "{msg}");
    assert!(!msg.contains("s3cret"), "{msg}");
    // A value with spaces, unquoted (the older backend's loader took it): the line,
    // its variable and what to do, where it said "a line cannot be parsed".
    let msg = error_in_jail(|jail| {
        jail.create_file(
            ".env",
            "WEBHOOK_MAX_RETRIES=3\nWEBHOOK_RETRY_DELAYS=5, 30, 300\n",
        )?;
        Ok(())
    });
    assert!(
        msg.contains("the line setting WEBHOOK_RETRY_DELAYS (line 2) cannot be parsed")
            && msg.contains("a value with spaces needs quotes"),
        "{msg}"
    );
    assert!(!msg.contains("30, 300"), "{msg}");
}

/// A timeout raised past the lease names both settings and what to do, where it named
/// only the lease, which a migrating user never set.
#[test]
fn a_timeout_at_or_over_the_lease_names_both_settings() {
    let msg = error_in_jail(|jail| {
        jail.set_env("WEBHOOK_TIMEOUT_SECONDS", "120");
        Ok(())
    });
    assert!(
        msg.contains("queue.lease_seconds: is 120 s and must be longer than queue.timeout_seconds (WEBHOOK_TIMEOUT_SECONDS, 120 s)")
            && msg.contains("RELAY_QUEUE__LEASE_SECONDS"),
        "{msg}"
    );
}

#[test]
fn webhook_urls_are_checked_and_shown_without_their_password() {
    use super::url_password_hidden;
    assert_eq!(
        url_password_hidden("https://n8n:pw@n8n.example:5678/webhook/x"),
        "https://n8n:(redacted)@n8n.example:5678/webhook/x"
    );
    assert_eq!(
        url_password_hidden("https://token@n8n.example/x"),
        "https://(redacted)@n8n.example/x"
    );
    assert_eq!(url_password_hidden("/webhook/x"), "/webhook/x");
    // An '@' after the authority is not userinfo.
    assert_eq!(
        url_without_userinfo("https://n8n.example?to=a@b"),
        "https://n8n.example?to=a@b"
    );
    // check-config's view.
    Jail::expect_with(|jail| {
        jail.set_env("N8N_BASE_URL", "https://n8n:s3cret@n8n.example");
        jail.set_env(
            "RELAY_ROUTES__LEAD_SCRAPED__URL",
            "https://tok3n@other.example/hook",
        );
        let shown = load_in_jail().expect("loads").redacted().to_string();
        assert!(
            !shown.contains("s3cret") && !shown.contains("tok3n"),
            "{shown}"
        );
        assert!(
            shown.contains("https://n8n:(redacted)@n8n.example"),
            "{shown}"
        );
        Ok(())
    });
    // A URL refused at load is named without its password, whatever the password
    // holds (a '?', '/' or '@' makes the URL unparseable and its parts unknowable).
    for url in [
        "https://n8n:s3cret@n8n.example:99999",
        "https://n8n:pa?s3cret@n8n.example",
        "https://n8n:pa/s3cret@n8n.example:99999",
        "https://n8n:p@s3cret@n8n.example:99999",
        "ftp://n8n:s3cret@n8n.example",
    ] {
        let msg = error_in_jail(|jail| {
            jail.set_env("N8N_BASE_URL", url);
            Ok(())
        });
        assert!(msg.contains("n8n.base_url"), "{url}: {msg}");
        assert!(!msg.contains("s3cret"), "{url}: {msg}");
    }
    // A message of our own that holds a '|' keeps it (only TOML's quoted source goes).
    let msg = error_in_jail(|jail| {
        jail.set_env("WEBHOOK_RETRY_DELAYS", "5|30");
        Ok(())
    });
    assert!(
        msg.contains("queue.retry_delays") && msg.len() > 40,
        "{msg}"
    );
}

/// A console token of sixteen spaces, or one character sixteen times, passed the length
/// check; any login could then be guessed.
#[test]
fn a_guessable_console_token_is_refused() {
    for token in ["                ", "aaaaaaaaaaaaaaaa"] {
        let msg = error_in_jail(|jail| {
            jail.set_env("RELAY_CONSOLE__TOKEN", token);
            Ok(())
        });
        assert!(msg.contains("console.token: guessable"), "{msg}");
        assert!(
            !msg.contains("aaaaaaaaaaaaaaaa"),
            "the token is not shown: {msg}"
        );
    }
}
