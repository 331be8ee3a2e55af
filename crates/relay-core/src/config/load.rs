//! Loading: the built-in defaults, the TOML file, `.env` and the environment, merged
//! in that order with figment; the older system's names mapped onto keys.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::providers::{Format, Serialized, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};

use super::*;

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
        let mut config: Config = figment.extract().map_err(|e| describe_figment_error(&e))?;
        crate::secrets::load(&mut config)?;
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
pub(super) struct EnvMap {
    name: &'static str,
    source: String,
    vars: Vec<(String, String)>,
}

impl EnvMap {
    fn new(name: &'static str, source: String, vars: Vec<(String, String)>) -> Self {
        EnvMap { name, source, vars }
    }

    pub(super) fn key_for(var: &str) -> Option<String> {
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
        "database.sslmode",
        "database.sslrootcert",
        "database.sslcert",
        "database.sslkey",
        "database.passfile",
        "n8n.client_cert",
        "n8n.client_key",
        "callbacks.tls_cert",
        "callbacks.tls_key",
    ];
    if TEXT_KEYS.contains(&key) || key.ends_with(".url") || key.ends_with("_file") {
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

impl Default for Config {
    fn default() -> Self {
        Config {
            database: DatabaseConfig {
                url: Secret::new("postgres://postgres@127.0.0.1:5432/postgres"),
                pool_size: 8,
                connect_timeout_seconds: 5,
                statement_timeout_seconds: 30,
                sslmode: String::new(),
                sslrootcert: String::new(),
                sslcert: String::new(),
                sslkey: String::new(),
                password_file: String::new(),
                passfile: String::new(),
                password: Secret::default(),
            },
            n8n: N8nConfig {
                enabled: true,
                base_url: "http://localhost:5678".into(),
                webhook_base_url: String::new(),
                api_key: Secret::default(),
                auth_header_name: String::new(),
                auth_header_value: Secret::default(),
                api_key_file: String::new(),
                auth_header_value_file: String::new(),
                ca_file: String::new(),
                client_cert: String::new(),
                client_key: String::new(),
            },
            security: SecurityConfig {
                scheme: Scheme::default(),
                webhook_secret: Secret::default(),
                webhook_secrets: Vec::new(),
                n8n_webhook_secret: Secret::default(),
                n8n_webhook_secrets: Vec::new(),
                webhook_secret_file: String::new(),
                n8n_webhook_secret_file: String::new(),
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
                tls_cert: String::new(),
                tls_key: String::new(),
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
