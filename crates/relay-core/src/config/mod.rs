//! Configuration: built-in defaults < TOML file < `.env` in the working directory <
//! process environment, merged with figment.
//!
//! Two spellings reach the same keys from the environment: `RELAY_SECTION__KEY`
//! (`RELAY_QUEUE__WORKERS=32`) and the older system's names (`DATABASE_URL`,
//! `N8N_*`, `WEBHOOK_*`), so a migrating operator keeps their `.env`. Every value is
//! checked once, at load, and an invalid one is reported with the key that holds it.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

use crate::events::EventType;
use crate::signature::Scheme;

mod load;
mod secret;
#[cfg(test)]
// figment::Jail's closures return figment's own (large) error type.
#[allow(clippy::result_large_err)]
mod tests;
mod validate;

pub use load::{Loaded, Sources};
pub use secret::{
    redact_url_password, url_password_hidden, url_standing_for, url_without_userinfo, Secret,
    REDACTED,
};

/// A switch as the older backend took it in settings and request bodies: `true`,
/// `yes`, `on`, `1` and their opposites, in any case and with spaces around.
pub fn switch_word(text: &str) -> Option<bool> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" | "1" => Some(true),
        "false" | "no" | "off" | "0" => Some(false),
        _ => None,
    }
}

/// The config file used when `--config` is not given, if it exists.
pub const DEFAULT_CONFIG_PATH: &str = "config/relay.toml";

/// The older system's environment names and the key each one sets.
pub const SEED_ENV_KEYS: &[(&str, &str)] = &[
    ("DATABASE_URL", "database.url"),
    ("N8N_ENABLED", "n8n.enabled"),
    ("N8N_BASE_URL", "n8n.base_url"),
    ("N8N_WEBHOOK_BASE_URL", "n8n.webhook_base_url"),
    ("N8N_API_KEY", "n8n.api_key"),
    ("WEBHOOK_SECRET", "security.webhook_secret"),
    ("N8N_WEBHOOK_SECRET", "security.n8n_webhook_secret"),
    ("WEBHOOK_QUEUE_ENABLED", "queue.enabled"),
    ("WEBHOOK_QUEUE_BATCH_SIZE", "queue.batch_size"),
    (
        "WEBHOOK_QUEUE_PROCESSING_INTERVAL",
        "queue.processing_interval_seconds",
    ),
    ("WEBHOOK_MAX_RETRIES", "queue.max_retries"),
    ("WEBHOOK_RETRY_DELAYS", "queue.retry_delays"),
    ("WEBHOOK_TIMEOUT_SECONDS", "queue.timeout_seconds"),
    // The `_FILE` convention of container images: the secret is read from the file.
    ("WEBHOOK_SECRET_FILE", "security.webhook_secret_file"),
    (
        "N8N_WEBHOOK_SECRET_FILE",
        "security.n8n_webhook_secret_file",
    ),
    ("N8N_API_KEY_FILE", "n8n.api_key_file"),
];

/// A configuration that could not be loaded. The message names the key (or file) at
/// fault; the binary maps every variant to exit code 2.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl ConfigError {
    fn invalid(key: &str, message: impl fmt::Display) -> Self {
        ConfigError::Invalid(format!("{key}: {message}"))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub database: DatabaseConfig,
    pub n8n: N8nConfig,
    pub security: SecurityConfig,
    pub queue: QueueConfig,
    pub callbacks: CallbacksConfig,
    pub metrics: MetricsConfig,
    pub console: ConsoleConfig,
    pub log: LogConfig,
    /// Per-event overrides; events without an entry use the default route.
    pub routes: BTreeMap<String, RouteConfig>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// libpq-style URL or key=value string; multi-host with target_session_attrs works.
    pub url: Secret,
    /// Connections for queries (the LISTEN connection is extra).
    pub pool_size: usize,
    pub connect_timeout_seconds: u64,
    /// Upper bound on any one query, so a wedged database surfaces as an error.
    pub statement_timeout_seconds: u64,
    /// libpq's TLS settings, for URLs that do not carry them (a URL that does must
    /// agree): `sslmode` (default `prefer`), `sslrootcert` (a PEM file or `system`),
    /// `sslcert` / `sslkey` (a client certificate). See [`crate::db::tls`].
    pub sslmode: String,
    pub sslrootcert: String,
    pub sslcert: String,
    pub sslkey: String,
    /// A file holding the password alone (a container secret), for URLs without one.
    pub password_file: String,
    /// A libpq password file (`host:port:database:user:password` lines), for URLs
    /// without a password; the URL's `passfile` parameter is the same.
    pub passfile: String,
    /// Read from `password_file` at load; never serialised, never shown.
    #[serde(skip)]
    pub password: Secret,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct N8nConfig {
    /// Delivery is paused (events wait in the queue) when false.
    pub enabled: bool,
    pub base_url: String,
    /// Where relative route URLs are joined; empty means `base_url`.
    pub webhook_base_url: String,
    /// Sent as `X-N8N-API-KEY` when set.
    pub api_key: Secret,
    /// A static header for n8n's Header Auth credential (name and value), when set.
    pub auth_header_name: String,
    pub auth_header_value: Secret,
    /// Files the two secrets above may be read from instead (`N8N_API_KEY_FILE`).
    pub api_key_file: String,
    pub auth_header_value_file: String,
    /// A PEM file of CA certificates trusted for https:// n8n URLs beside the
    /// built-in (Mozilla) roots: a self-hosted n8n behind an internal CA.
    pub ca_file: String,
    /// A client certificate (PEM chain) and its key, for an n8n behind mutual TLS.
    pub client_cert: String,
    pub client_key: String,
    /// Deliveries per second to this n8n at most, all URLs and all relays together;
    /// 0 for no limit.
    pub max_per_second: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SecurityConfig {
    /// Which headers carry signatures, both directions: the contract's
    /// `x-webhook-signature` or `standard-webhooks`.
    pub scheme: Scheme,
    /// Signs outgoing deliveries (`X-Webhook-Signature-256`).
    pub webhook_secret: Secret,
    /// Rotation: further signing secrets, newest first, placed before
    /// `webhook_secret`. Every active secret signs every delivery.
    #[serde(deserialize_with = "secret::de_secrets")]
    pub webhook_secrets: Vec<Secret>,
    /// Verifies n8n's callbacks.
    pub n8n_webhook_secret: Secret,
    /// Rotation: further callback secrets, newest first, placed before
    /// `n8n_webhook_secret`. A callback signed with any of them is accepted.
    #[serde(deserialize_with = "secret::de_secrets")]
    pub n8n_webhook_secrets: Vec<Secret>,
    /// Files the two single secrets may be read from instead (`WEBHOOK_SECRET_FILE`,
    /// `N8N_WEBHOOK_SECRET_FILE`).
    pub webhook_secret_file: String,
    pub n8n_webhook_secret_file: String,
    /// Oldest (or furthest in the future) a signed callback may be.
    pub max_age_seconds: u64,
    /// Accept the older `X-N8N-Signature` (body only, no timestamp) on callbacks.
    pub allow_legacy_signature: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    /// Delivery is paused (events still captured and queued) when false.
    pub enabled: bool,
    /// Deliveries in flight at once.
    pub workers: usize,
    /// Rows claimed or routed per statement.
    pub batch_size: usize,
    /// Safety sweep: how often the outbox and queue are checked without a wake-up.
    pub processing_interval_seconds: u64,
    /// Retries after the first attempt; the row is `failed` after the last.
    pub max_retries: u32,
    /// Seconds before retry 1, 2, ...; the last repeats. Also "5,30,300".
    #[serde(deserialize_with = "de_delays")]
    pub retry_delays: Vec<u64>,
    /// Cut for one delivery attempt.
    pub timeout_seconds: u64,
    /// HTTP statuses that fail a delivery at once (no retry), e.g. [400, 401, 404,
    /// 410, 422]; empty by default: every non-2xx retries.
    pub final_statuses: Vec<u16>,
    /// A URL whose last this many attempts all failed is reported unhealthy (log,
    /// metric, `queue stats`, an `endpoint_unhealthy` event); 0 turns that off.
    pub unhealthy_after: u32,
    /// How long a claimed row stays `sending` before another relay may take it.
    pub lease_seconds: u64,
    /// Longest `Retry-After` honoured.
    pub max_retry_after_seconds: u64,
    /// On SIGTERM: how long in-flight deliveries may finish before being released.
    pub shutdown_grace_seconds: u64,
    /// Concurrent deliveries to one URL, so a slow endpoint cannot take every worker.
    pub max_per_endpoint: usize,
    /// Sent, cancelled rows and their logs older than this are removed by the sweeper;
    /// 0 keeps them forever.
    pub retention_days: u64,
    /// The default for routes without their own `ordering`: `none`, `entity` (one
    /// entity's deliveries to one URL go out one at a time, in commit order) or
    /// `lifecycle` (the same across every route ordered so).
    pub ordering: DeliveryOrder,
    /// The default for ordered routes without their own `on_failure`.
    pub on_failure: OnFailure,
}

/// Whether a route's deliveries are ordered per entity.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryOrder {
    /// Deliveries go out as workers are free, concurrently and in any order.
    #[default]
    None,
    /// Per (target URL, entity_type, entity_id): one at a time, in commit order.
    Entity,
    /// As `Entity`, and across every route ordered `lifecycle`: an entity's event to
    /// one workflow waits until its earlier events to the others got their 2xx.
    Lifecycle,
}

/// What an ordered entity does when one of its deliveries fails for good.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OnFailure {
    /// The later deliveries go on; the failed row stays `failed` with a note saying so.
    #[default]
    Skip,
    /// The later deliveries wait until an operator retries or cancels the failed row.
    Block,
}

impl OnFailure {
    /// As stored in `webhook_queue.ordering`.
    pub fn as_str(self) -> &'static str {
        match self {
            OnFailure::Skip => "skip",
            OnFailure::Block => "block",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CallbacksConfig {
    pub enabled: bool,
    pub listen: SocketAddr,
    pub max_body_bytes: usize,
    pub header_read_timeout_seconds: u64,
    pub request_timeout_seconds: u64,
    pub max_connections: usize,
    /// The older system's `POST /api/v1/test/trigger-webhook` (signed like callbacks).
    pub test_endpoint_enabled: bool,
    /// Serve HTTPS with this certificate chain and key (PEM), both or neither;
    /// re-read on SIGHUP, so a renewed certificate needs no restart.
    pub tls_cert: String,
    pub tls_key: String,
}

/// The operator console (`n8n-relay console`, and `run` when enabled).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ConsoleConfig {
    pub enabled: bool,
    pub listen: SocketAddr,
    /// Logs in as operator (views and actions). Required unless `listen` is loopback.
    pub token: Secret,
    /// Logs in read-only (views, no actions).
    pub read_only_token: Secret,
    /// The two tokens read from files instead.
    pub token_file: String,
    pub read_only_token_file: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    pub enabled: bool,
    pub listen: SocketAddr,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A tracing filter; `RUST_LOG` wins when set.
    pub level: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Absolute, or relative to `n8n.webhook_base_url`.
    pub url: Option<String>,
    pub priority: Option<i32>,
    /// A disabled route holds its events in the queue until it is enabled again.
    pub enabled: Option<bool>,
    /// Per-entity ordering; default `queue.ordering`.
    pub ordering: Option<DeliveryOrder>,
    /// For ordered routes; default `queue.on_failure`.
    pub on_failure: Option<OnFailure>,
    /// This route's retry schedule; default `queue.retry_delays`.
    #[serde(default, deserialize_with = "de_some_delays")]
    pub retry_delays: Option<Vec<u64>>,
    /// Default `queue.max_retries`.
    pub max_retries: Option<u32>,
    /// Default `queue.timeout_seconds`.
    pub timeout_seconds: Option<u64>,
    /// HTTP statuses that fail a delivery at once, without a retry; default
    /// `queue.final_statuses`.
    pub final_statuses: Option<Vec<u16>>,
    /// Deliveries per second to this route's URL at most, for all relays on the
    /// database together; none by default.
    pub max_per_second: Option<f64>,
}

/// How one route retries, after defaults are applied.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Seconds before retry 1, 2, ...; the last repeats.
    pub delays: Vec<u64>,
    pub max_retries: u32,
    pub timeout: Duration,
    /// Statuses that fail at once.
    pub final_statuses: Vec<u16>,
}

/// Where one event type goes, after defaults are applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    pub event: EventType,
    pub url: String,
    pub priority: i32,
    pub enabled: bool,
    /// `Some(on_failure)` when deliveries are ordered per entity.
    pub ordered: Option<OnFailure>,
    /// Ordered across routes too (`ordering = "lifecycle"`); implies `ordered`.
    pub lifecycle: bool,
    pub retry: RetryPolicy,
    /// Deliveries per second to `url` at most (all relays together).
    pub max_per_second: Option<f64>,
}

fn de_some_delays<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u64>>, D::Error> {
    de_delays(d).map(Some)
}

/// Accepts `[5, 30, 300]`, `"5,30,300"` or a single number.
fn de_delays<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Delays {
        List(Vec<u64>),
        One(u64),
        Text(String),
    }
    match Delays::deserialize(d)? {
        Delays::List(v) => Ok(v),
        Delays::One(n) => Ok(vec![n]),
        Delays::Text(s) => s
            .split(',')
            .map(|part| {
                part.trim().parse::<u64>().map_err(|_| {
                    serde::de::Error::custom(format!(
                        "expected comma-separated whole seconds like \"5,30,300\", got {s:?}"
                    ))
                })
            })
            .collect(),
    }
}

impl Config {
    /// The route for every known event: configured override or the default path.
    pub fn routes(&self) -> Vec<Route> {
        EventType::ALL
            .iter()
            .map(|&event| {
                let over = self.routes.get(event.as_str()).cloned().unwrap_or_default();
                let url = match over.url {
                    Some(u) => self.resolve_url(&u),
                    None => self.resolve_url(&format!("/webhook/{}", event.default_path())),
                };
                let ordering = over.ordering.unwrap_or(self.queue.ordering);
                Route {
                    event,
                    url,
                    priority: over.priority.unwrap_or(0),
                    enabled: over.enabled.unwrap_or(true),
                    ordered: (ordering != DeliveryOrder::None)
                        .then(|| over.on_failure.unwrap_or(self.queue.on_failure)),
                    lifecycle: ordering == DeliveryOrder::Lifecycle,
                    retry: RetryPolicy {
                        delays: over
                            .retry_delays
                            .unwrap_or_else(|| self.queue.retry_delays.clone()),
                        max_retries: over.max_retries.unwrap_or(self.queue.max_retries),
                        timeout: Duration::from_secs(
                            over.timeout_seconds.unwrap_or(self.queue.timeout_seconds),
                        ),
                        final_statuses: over
                            .final_statuses
                            .unwrap_or_else(|| self.queue.final_statuses.clone()),
                    },
                    max_per_second: over.max_per_second,
                }
            })
            .collect()
    }

    /// Where relative URLs are joined.
    pub fn webhook_base_url(&self) -> &str {
        if self.n8n.webhook_base_url.is_empty() {
            &self.n8n.base_url
        } else {
            &self.n8n.webhook_base_url
        }
    }

    fn resolve_url(&self, url: &str) -> String {
        if url.starts_with("http://") || url.starts_with("https://") {
            return url.to_string();
        }
        let base = self.webhook_base_url().trim_end_matches('/');
        let path = url.trim_start_matches('/');
        format!("{base}/{path}")
    }

    /// The effective configuration as JSON with every secret replaced by
    /// "(redacted)" or "(not set)", and the password cut out of the database URL.
    pub fn redacted(&self) -> serde_json::Value {
        let mut copy = self.clone();
        copy.database.url = Secret::new(redact_url_password(self.database.url.expose()));
        // n8n's basic-auth credentials may ride in these.
        copy.n8n.base_url = url_password_hidden(&copy.n8n.base_url);
        copy.n8n.webhook_base_url = url_password_hidden(&copy.n8n.webhook_base_url);
        for route in copy.routes.values_mut() {
            if let Some(url) = route.url.as_mut() {
                *url = url_password_hidden(url);
            }
        }
        let listed = copy
            .security
            .webhook_secrets
            .iter_mut()
            .chain(copy.security.n8n_webhook_secrets.iter_mut());
        for secret in [
            &mut copy.n8n.api_key,
            &mut copy.n8n.auth_header_value,
            &mut copy.security.webhook_secret,
            &mut copy.security.n8n_webhook_secret,
            &mut copy.console.token,
            &mut copy.console.read_only_token,
        ]
        .into_iter()
        .chain(listed)
        {
            *secret = Secret::new(secret.redacted());
        }
        let mut shown = serde_json::to_value(&copy).unwrap_or(serde_json::Value::Null);
        // Only ever read from database.password_file (never a layer of its own), so
        // serde skips it; shown redacted where it is set.
        if !self.database.password.is_empty() {
            if let Some(db) = shown.get_mut("database").and_then(|d| d.as_object_mut()) {
                db.insert("password".into(), self.database.password.redacted().into());
            }
        }
        shown
    }

    /// Whether deliveries should go out now (both switches on).
    pub fn delivery_enabled(&self) -> bool {
        self.n8n.enabled && self.queue.enabled
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.queue.timeout_seconds)
    }

    /// Warnings about settings that are valid but that an operator should look at
    /// again: `run` logs them at start, `check-config` prints them.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !self.n8n.api_key.is_empty() {
            // The older backend's .env carries N8N_API_KEY "for authenticated
            // requests": an n8n API key, which this would hand to every workflow run.
            out.push(
                "n8n.api_key (N8N_API_KEY) is sent as X-N8N-API-KEY with every delivery, and \
                 n8n keeps request headers in its executions, where anyone who can see them \
                 reads it: set it only to a value your workflows check, never to an n8n API \
                 key (Settings > n8n API); for n8n's Header Auth credential, \
                 n8n.auth_header_name/value"
                    .to_string(),
            );
        }
        out
    }

    /// The certificates the relay presents (the callback listener's, its client
    /// certificates for n8n and Postgres), with their dates: what `check-config`
    /// reports and `run` warns of. The files were read once when the configuration was
    /// checked; a file that cannot be read now has no dates.
    pub fn certificates(&self) -> Vec<CertificateFile> {
        let mut out = Vec::new();
        if self.callbacks.enabled && !self.callbacks.tls_cert.is_empty() {
            out.push(CertificateFile::read(
                "callbacks.tls_cert",
                PathBuf::from(&self.callbacks.tls_cert),
                "then send the relay SIGHUP",
            ));
        }
        out.extend(self.client_certificates());
        out
    }

    /// The certificates the relay presents as a client (to n8n, to Postgres): the
    /// callback listener watches its own.
    pub fn client_certificates(&self) -> Vec<CertificateFile> {
        let mut out = Vec::new();
        if !self.n8n.client_cert.is_empty() {
            out.push(CertificateFile::read(
                "n8n.client_cert",
                PathBuf::from(&self.n8n.client_cert),
                "then restart the relay (it reads this file at start)",
            ));
        }
        let database = crate::db::Connector::new(&self.database, "n8n-relay");
        if let Some((cert, _)) = database.ok().and_then(|c| c.tls().client.clone()) {
            out.push(CertificateFile::read(
                "database.sslcert",
                cert,
                "nothing more: the relay reads it again at its next connection",
            ));
        }
        out
    }
}

/// A certificate the relay presents, from [`Config::certificates`].
#[derive(Debug, Clone)]
pub struct CertificateFile {
    pub setting: &'static str,
    pub path: PathBuf,
    /// What to do once the file is renewed.
    pub then: &'static str,
    /// `None` if the file could not be read.
    pub validity: Option<crate::tls::Validity>,
}

impl CertificateFile {
    fn read(setting: &'static str, path: PathBuf, then: &'static str) -> CertificateFile {
        let validity = crate::tls::validity_of_file(setting, &path);
        CertificateFile {
            setting,
            path,
            then,
            validity,
        }
    }

    /// What is wrong, or about to be, with its dates at `now`.
    pub fn problem(&self, now: std::time::SystemTime) -> Option<String> {
        self.validity
            .as_ref()?
            .problem(self.setting, &self.path, now, self.then)
    }
}
