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
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Format, Serialized, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::events::EventType;
use crate::signature::{Keys, Scheme};

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

/// A secret: `Debug` never shows it. It serialises in clear only because figment's
/// default layer is built by serialising [`Config::default`]; anything shown to a
/// person goes through [`Config::redacted`].
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// The first 8 hex digits of the secret's SHA-256: enough to tell which secret is
    /// active (compare with `printf %s "$SECRET" | sha256sum`), never the secret.
    pub fn fingerprint(&self) -> String {
        use sha2::Digest as _;
        let digest = sha2::Sha256::digest(self.0.as_bytes());
        hex::encode(&digest[..4])
    }
    /// How a secret is shown: set or not, never its value.
    pub fn redacted(&self) -> &'static str {
        if self.0.is_empty() {
            "(not set)"
        } else {
            "(redacted)"
        }
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.redacted())
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
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
    #[serde(deserialize_with = "de_secrets")]
    pub webhook_secrets: Vec<Secret>,
    /// Verifies n8n's callbacks.
    pub n8n_webhook_secret: Secret,
    /// Rotation: further callback secrets, newest first, placed before
    /// `n8n_webhook_secret`. A callback signed with any of them is accepted.
    #[serde(deserialize_with = "de_secrets")]
    pub n8n_webhook_secrets: Vec<Secret>,
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
    /// The default for routes without their own `ordering`: `none`, or `entity` (one
    /// entity's deliveries to one URL go out one at a time, in commit order).
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
}

/// Where one event type goes, after defaults are applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub event: EventType,
    pub url: String,
    pub priority: i32,
    pub enabled: bool,
    /// `Some(on_failure)` when deliveries are ordered per entity.
    pub ordered: Option<OnFailure>,
}

impl SecurityConfig {
    /// The secrets that sign deliveries, newest first, with the key naming each.
    pub fn signing_secrets(&self) -> Vec<(String, &Secret)> {
        active(
            "security.webhook_secrets",
            &self.webhook_secrets,
            "security.webhook_secret",
            &self.webhook_secret,
        )
    }

    /// The secrets a callback may be signed with, newest first, with the key naming each.
    pub fn callback_secrets(&self) -> Vec<(String, &Secret)> {
        active(
            "security.n8n_webhook_secrets",
            &self.n8n_webhook_secrets,
            "security.n8n_webhook_secret",
            &self.n8n_webhook_secret,
        )
    }

    /// HMAC keys for signing deliveries under `scheme`.
    pub fn signing_keys(&self) -> Result<Keys, ConfigError> {
        keys(self.scheme, &self.signing_secrets())
    }

    /// HMAC keys for verifying callbacks under `scheme`.
    pub fn callback_keys(&self) -> Result<Keys, ConfigError> {
        keys(self.scheme, &self.callback_secrets())
    }
}

/// The list (newest first), then the single key; unset secrets and repeats dropped,
/// keeping the first (newest) place of each. Each comes with the key that holds it.
fn active<'a>(
    list_key: &str,
    list: &'a [Secret],
    single_key: &str,
    single: &'a Secret,
) -> Vec<(String, &'a Secret)> {
    let listed = list
        .iter()
        .enumerate()
        .map(|(i, s)| (format!("{list_key}[{i}]"), s));
    let mut out: Vec<(String, &Secret)> = Vec::new();
    for (key, secret) in listed.chain([(single_key.to_string(), single)]) {
        if !secret.is_empty() && !out.iter().any(|(_, s)| *s == secret) {
            out.push((key, secret));
        }
    }
    out
}

fn keys(scheme: Scheme, secrets: &[(String, &Secret)]) -> Result<Keys, ConfigError> {
    Keys::new(scheme, secrets.iter().map(|(_, s)| s.expose())).map_err(|(i, e)| {
        let key = secrets
            .get(i)
            .map(|(k, _)| k.as_str())
            .unwrap_or("security");
        ConfigError::invalid(key, format!("{e} (security.scheme = {})", scheme.as_str()))
    })
}

impl Default for Config {
    fn default() -> Self {
        Config {
            database: DatabaseConfig {
                url: Secret::new("postgres://postgres@127.0.0.1:5432/postgres"),
                pool_size: 8,
                connect_timeout_seconds: 5,
                statement_timeout_seconds: 30,
            },
            n8n: N8nConfig {
                enabled: true,
                base_url: "http://localhost:5678".into(),
                webhook_base_url: String::new(),
                api_key: Secret::default(),
                auth_header_name: String::new(),
                auth_header_value: Secret::default(),
            },
            security: SecurityConfig {
                scheme: Scheme::default(),
                webhook_secret: Secret::default(),
                webhook_secrets: Vec::new(),
                n8n_webhook_secret: Secret::default(),
                n8n_webhook_secrets: Vec::new(),
                max_age_seconds: 300,
                allow_legacy_signature: false,
            },
            queue: QueueConfig {
                enabled: true,
                workers: 32,
                batch_size: 100,
                processing_interval_seconds: 5,
                max_retries: 3,
                retry_delays: vec![5, 30, 300],
                timeout_seconds: 30,
                lease_seconds: 120,
                max_retry_after_seconds: 3600,
                shutdown_grace_seconds: 10,
                max_per_endpoint: 16,
                retention_days: 0,
                ordering: DeliveryOrder::None,
                on_failure: OnFailure::Skip,
            },
            callbacks: CallbacksConfig {
                enabled: true,
                listen: SocketAddr::from(([127, 0, 0, 1], 8000)),
                max_body_bytes: 1024 * 1024,
                header_read_timeout_seconds: 10,
                request_timeout_seconds: 30,
                max_connections: 256,
                test_endpoint_enabled: false,
            },
            metrics: MetricsConfig {
                enabled: true,
                listen: SocketAddr::from(([127, 0, 0, 1], 9187)),
            },
            log: LogConfig {
                format: LogFormat::Human,
                level: "info".into(),
            },
            routes: BTreeMap::new(),
        }
    }
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

/// Accepts a list of secrets or a single one (a string, or digits).
fn de_secrets<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Secret>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum One {
        Text(String),
        Digits(u64),
    }
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Secrets {
        List(Vec<One>),
        One(One),
    }
    let text = |one: One| match one {
        One::Text(s) => Secret(s),
        One::Digits(n) => Secret(n.to_string()),
    };
    match Secrets::deserialize(d) {
        Ok(Secrets::List(v)) => Ok(v.into_iter().map(text).collect()),
        Ok(Secrets::One(one)) => Ok(vec![text(one)]),
        // The value is a secret: say what was expected, never what was found.
        Err(_) => Err(serde::de::Error::custom(
            "expected a list of secrets, newest first, like [\"new\", \"old\"]",
        )),
    }
}

/// Where the layers come from. Tests point these at temporary files and maps.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// An explicit `--config`; it must exist.
    pub config_file: Option<PathBuf>,
    /// The `.env` file to read, if it exists (normally `./.env`).
    pub dotenv: Option<PathBuf>,
}

impl Sources {
    /// The usual sources: `--config` if given (else `config/relay.toml` when present),
    /// and `./.env`.
    pub fn standard(config_file: Option<PathBuf>) -> Self {
        Sources {
            config_file,
            dotenv: Some(PathBuf::from(".env")),
        }
    }
}

/// The merged layers, kept so `check-config` can say which layer set each key.
pub struct Loaded {
    pub config: Config,
    pub figment: Figment,
}

impl Loaded {
    /// Which layer set `key` (dotted, e.g. `queue.workers`).
    pub fn source_of(&self, key: &str) -> String {
        match self.figment.find_metadata(key) {
            // The built-in layer is `Serialized::defaults(Config::default())`, which
            // figment names after the type and the line that built it.
            Some(meta) if meta.name != std::any::type_name::<Config>() => describe_metadata(meta),
            _ => "default".to_string(),
        }
    }
}

fn describe_metadata(meta: &Metadata) -> String {
    match &meta.source {
        Some(source) => format!("{} ({source})", meta.name),
        None => meta.name.to_string(),
    }
}

impl Config {
    /// Loads and validates the configuration from the standard layers.
    pub fn load(sources: &Sources) -> Result<Loaded, ConfigError> {
        let figment = Self::figment(sources)?;
        let config: Config = figment.extract().map_err(|e| describe_figment_error(&e))?;
        config.validate()?;
        Ok(Loaded { config, figment })
    }

    fn figment(sources: &Sources) -> Result<Figment, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        match &sources.config_file {
            Some(path) => {
                if !path.is_file() {
                    return Err(ConfigError::File {
                        path: path.clone(),
                        message: "not found (given with --config)".into(),
                    });
                }
                figment = figment.merge(Toml::file_exact(path));
            }
            None => {
                let default = Path::new(DEFAULT_CONFIG_PATH);
                if default.is_file() {
                    figment = figment.merge(Toml::file_exact(default));
                }
            }
        }
        if let Some(path) = &sources.dotenv {
            if path.is_file() {
                let vars = read_dotenv(path)?;
                figment = figment.merge(EnvMap::new(".env file", path.display().to_string(), vars));
            }
        }
        let vars: Vec<(String, String)> = std::env::vars().collect();
        Ok(figment.merge(EnvMap::new("environment", String::new(), vars)))
    }

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
                    ordered: (ordering == DeliveryOrder::Entity)
                        .then(|| over.on_failure.unwrap_or(self.queue.on_failure)),
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
        ]
        .into_iter()
        .chain(listed)
        {
            *secret = Secret::new(secret.redacted());
        }
        serde_json::to_value(&copy).unwrap_or(serde_json::Value::Null)
    }

    /// Whether deliveries should go out now (both switches on).
    pub fn delivery_enabled(&self) -> bool {
        self.n8n.enabled && self.queue.enabled
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.queue.timeout_seconds)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let url = self.database.url.expose();
        if url.trim().is_empty() {
            return Err(ConfigError::invalid("database.url", "must not be empty"));
        }
        url.parse::<tokio_postgres::Config>().map_err(|e| {
            // The message names the key; the URL itself may carry a password.
            ConfigError::invalid("database.url", format!("not a valid Postgres URL ({e})"))
        })?;
        positive("database.pool_size", self.database.pool_size as u64)?;
        positive(
            "database.connect_timeout_seconds",
            self.database.connect_timeout_seconds,
        )?;
        positive(
            "database.statement_timeout_seconds",
            self.database.statement_timeout_seconds,
        )?;
        check_http_url("n8n.base_url", &self.n8n.base_url)?;
        if !self.n8n.webhook_base_url.is_empty() {
            check_http_url("n8n.webhook_base_url", &self.n8n.webhook_base_url)?;
        }
        if self.n8n.auth_header_name.is_empty() != self.n8n.auth_header_value.is_empty() {
            return Err(ConfigError::invalid(
                "n8n.auth_header_name",
                "auth_header_name and auth_header_value must be set together",
            ));
        }
        if !self.n8n.auth_header_name.is_empty()
            && http_header_name_invalid(&self.n8n.auth_header_name)
        {
            return Err(ConfigError::invalid(
                "n8n.auth_header_name",
                format!(
                    "{:?} is not a valid HTTP header name",
                    self.n8n.auth_header_name
                ),
            ));
        }
        for (key, value) in [
            ("n8n.api_key", &self.n8n.api_key),
            ("n8n.auth_header_value", &self.n8n.auth_header_value),
        ] {
            // Sent as a header value; the value itself is never echoed.
            if value
                .expose()
                .bytes()
                .any(|b| (b < 0x20 && b != b'\t') || b == 0x7f)
            {
                return Err(ConfigError::invalid(
                    key,
                    "contains a control character, which an HTTP header cannot carry (a stray newline?)",
                ));
            }
        }
        positive("security.max_age_seconds", self.security.max_age_seconds)?;
        self.security.signing_keys()?;
        self.security.callback_keys()?;
        if self.security.scheme == Scheme::StandardWebhooks {
            if self.security.signing_secrets().is_empty() {
                return Err(ConfigError::invalid(
                    "security.webhook_secret",
                    "security.scheme = standard-webhooks needs a whsec_ secret to sign deliveries with",
                ));
            }
            if self.security.allow_legacy_signature {
                return Err(ConfigError::invalid(
                    "security.allow_legacy_signature",
                    "the body-only X-N8N-Signature belongs to the x-webhook-signature scheme; \
turn it off with security.scheme = standard-webhooks",
                ));
            }
        }
        positive("queue.workers", self.queue.workers as u64)?;
        positive("queue.batch_size", self.queue.batch_size as u64)?;
        if self.queue.batch_size > 10_000 {
            return Err(ConfigError::invalid("queue.batch_size", "at most 10000"));
        }
        positive(
            "queue.processing_interval_seconds",
            self.queue.processing_interval_seconds,
        )?;
        if self.queue.retry_delays.is_empty() {
            return Err(ConfigError::invalid(
                "queue.retry_delays",
                "needs at least one delay (seconds), e.g. \"5,30,300\"",
            ));
        }
        positive("queue.timeout_seconds", self.queue.timeout_seconds)?;
        if self.queue.lease_seconds <= self.queue.timeout_seconds {
            return Err(ConfigError::invalid(
                "queue.lease_seconds",
                format!(
                    "must be longer than queue.timeout_seconds ({}), or a slow delivery would be taken over while still in flight",
                    self.queue.timeout_seconds
                ),
            ));
        }
        positive("queue.max_per_endpoint", self.queue.max_per_endpoint as u64)?;
        positive(
            "callbacks.max_body_bytes",
            self.callbacks.max_body_bytes as u64,
        )?;
        positive(
            "callbacks.header_read_timeout_seconds",
            self.callbacks.header_read_timeout_seconds,
        )?;
        positive(
            "callbacks.request_timeout_seconds",
            self.callbacks.request_timeout_seconds,
        )?;
        positive(
            "callbacks.max_connections",
            self.callbacks.max_connections as u64,
        )?;
        if self.log.level.trim().is_empty() {
            return Err(ConfigError::invalid("log.level", "must not be empty"));
        }
        for (name, route) in &self.routes {
            if EventType::parse(name).is_none() {
                return Err(ConfigError::invalid(
                    &format!("routes.{name}"),
                    format!(
                        "unknown event type; known: {}",
                        EventType::names().join(", ")
                    ),
                ));
            }
            if let Some(url) = &route.url {
                if url.starts_with("http://") || url.starts_with("https://") {
                    check_http_url(&format!("routes.{name}.url"), url)?;
                } else if url.contains("://") || url.trim().is_empty() {
                    return Err(ConfigError::invalid(
                        &format!("routes.{name}.url"),
                        format!("{url:?} is neither an http(s) URL nor a path"),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// `postgres://user:pw@host/db` -> `postgres://user:(redacted)@host/db`; key=value
/// strings lose their `password=` value.
pub fn redact_url_password(url: &str) -> String {
    if let Ok(mut parsed) = url::Url::parse(url) {
        if parsed.password().is_some() && parsed.set_password(Some("(redacted)")).is_ok() {
            return parsed.to_string();
        }
        if parsed.scheme().starts_with("postgres") {
            return parsed.to_string();
        }
    }
    url.split_whitespace()
        .map(|part| match part.split_once('=') {
            Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=(redacted)"),
            _ => part.to_string(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn positive(key: &str, value: u64) -> Result<(), ConfigError> {
    if value == 0 {
        Err(ConfigError::invalid(key, "must be greater than 0"))
    } else {
        Ok(())
    }
}

fn check_http_url(key: &str, value: &str) -> Result<(), ConfigError> {
    match url::Url::parse(value) {
        Ok(u) if (u.scheme() == "http" || u.scheme() == "https") && u.host().is_some() => Ok(()),
        Ok(_) => Err(ConfigError::invalid(
            key,
            format!("{value:?} must be an http:// or https:// URL with a host"),
        )),
        Err(e) => Err(ConfigError::invalid(
            key,
            format!("{value:?} is not a URL ({e})"),
        )),
    }
}

fn http_header_name_invalid(name: &str) -> bool {
    name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn describe_figment_error(e: &figment::Error) -> ConfigError {
    let key = if e.path.is_empty() {
        "configuration".to_string()
    } else {
        e.path.join(".")
    };
    let source = e
        .metadata
        .as_ref()
        .map(|m| format!(" (from {})", describe_metadata(m)))
        .unwrap_or_default();
    ConfigError::invalid(&key, format!("{}{source}", e.kind))
}

fn read_dotenv(path: &Path) -> Result<Vec<(String, String)>, ConfigError> {
    let iter = dotenvy::from_path_iter(path).map_err(|e| ConfigError::File {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    iter.map(|item| {
        item.map_err(|e| ConfigError::File {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    })
    .collect()
}

/// A set of environment-style variables (the process environment or a `.env` file)
/// mapped onto config keys: `RELAY_SECTION__KEY` and the seed names.
struct EnvMap {
    name: &'static str,
    source: String,
    vars: Vec<(String, String)>,
}

impl EnvMap {
    fn new(name: &'static str, source: String, vars: Vec<(String, String)>) -> Self {
        EnvMap { name, source, vars }
    }

    fn key_for(var: &str) -> Option<String> {
        if let Some((_, key)) = SEED_ENV_KEYS.iter().find(|(name, _)| *name == var) {
            return Some((*key).to_string());
        }
        let rest = var.strip_prefix("RELAY_")?;
        if rest.is_empty() {
            return None;
        }
        Some(rest.to_ascii_lowercase().replace("__", "."))
    }
}

impl Provider for EnvMap {
    fn metadata(&self) -> Metadata {
        let meta = Metadata::named(self.name);
        if self.source.is_empty() {
            meta
        } else {
            meta.source(self.source.clone())
        }
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let mut dict = Dict::new();
        // Seed names first so the RELAY_ spelling of the same key wins.
        let mut vars: Vec<&(String, String)> = self.vars.iter().collect();
        vars.sort_by_key(|(k, _)| k.starts_with("RELAY_"));
        for (var, raw) in vars {
            let Some(key) = Self::key_for(var) else {
                continue;
            };
            let value: Value = raw.parse().unwrap_or_else(|_| Value::from(raw.clone()));
            let value = keep_as_string(&key, raw, value);
            insert_dotted(&mut dict, &key, value);
        }
        Ok(Profile::Default.collect(dict))
    }
}

/// Secrets, URLs and other free text stay strings even if they look like numbers.
fn keep_as_string(key: &str, raw: &str, parsed: Value) -> Value {
    const TEXT_KEYS: &[&str] = &[
        "database.url",
        "n8n.base_url",
        "n8n.webhook_base_url",
        "n8n.api_key",
        "n8n.auth_header_name",
        "n8n.auth_header_value",
        "security.webhook_secret",
        "security.n8n_webhook_secret",
        "queue.retry_delays",
        "log.level",
    ];
    if TEXT_KEYS.contains(&key) || key.ends_with(".url") {
        Value::from(raw.to_string())
    } else {
        parsed
    }
}

fn insert_dotted(dict: &mut Dict, key: &str, value: Value) {
    match key.split_once('.') {
        None => {
            dict.insert(key.to_string(), value);
        }
        Some((head, rest)) => {
            let entry = dict
                .entry(head.to_string())
                .or_insert_with(|| Value::from(Dict::new()));
            if let Value::Dict(_, inner) = entry {
                insert_dotted(inner, rest, value);
            } else {
                let mut inner = Dict::new();
                insert_dotted(&mut inner, rest, value);
                *entry = Value::from(inner);
            }
        }
    }
}

#[cfg(test)]
// figment::Jail's closures return figment's own (large) error type.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;
    use figment::Jail;

    fn load_in_jail() -> Result<Config, ConfigError> {
        Config::load(&Sources::standard(None)).map(|l| l.config)
    }

    #[test]
    fn defaults_are_valid_and_documented_routes_follow_the_event_name() {
        Jail::expect_with(|_jail| {
            let config = load_in_jail().expect("defaults load");
            let routes = config.routes();
            assert_eq!(routes.len(), 11);
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
            assert!(c.routes().iter().all(
                |r| r.ordered == Some(OnFailure::Block) || r.event == EventType::LeadQualified
            ));
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
            Ok(())
        });
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
            jail.set_env("WEBHOOK_SECRET", "hunter2-secret");
            jail.set_env("DATABASE_URL", "postgres://u:pw-secret@h/db");
            let c = load_in_jail().expect("load");
            let debug = format!("{c:?}");
            let json = c.redacted().to_string();
            assert!(json.contains("(redacted)"));
            for text in [debug, json] {
                assert!(!text.contains("hunter2-secret"));
                assert!(!text.contains("pw-secret"));
            }
            Ok(())
        });
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
            assert!(EnvMap::key_for(name).is_some(), "{name} maps to no key");
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
    }
}
