//! Loading: the built-in defaults, the TOML file, `.env` and the environment, merged
//! in that order with figment; the older system's names mapped onto keys.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
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
                    let message = if path.is_dir() {
                        "a directory, not a file (given with --config: name the TOML file)"
                    } else {
                        "not found (given with --config)"
                    };
                    return Err(ConfigError::File {
                        path: path.clone(),
                        message: message.into(),
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
                let pairs = mapped(|key_of| {
                    vars.iter()
                        .filter_map(move |(n, v)| Some((key_of(n)?, v.clone())))
                        .collect::<Vec<_>>()
                });
                let layer = Layer::new(".env file", Some(path.display().to_string()), pairs);
                figment = figment.merge(layer);
            }
        }
        let pairs = mapped(|key_of| {
            Env::raw()
                .filter_map(move |name| key_of(name.as_str()).map(Into::into))
                .iter()
                .map(|(key, value)| (key.to_string(), value))
                .collect::<Vec<_>>()
        });
        Ok(figment.merge(Layer::new("environment", None, pairs)))
    }
}

/// The `(key, value)` pairs of one set of variables, keyed by `pairs(key_of)`: the
/// older names first, then `RELAY_SECTION__KEY`, so the `RELAY_` spelling of the same
/// key wins.
fn mapped<I>(pairs: impl Fn(fn(&str) -> Option<String>) -> I) -> Vec<(String, String)>
where
    I: IntoIterator<Item = (String, String)>,
{
    pairs(seed_key)
        .into_iter()
        .chain(pairs(relay_key))
        .collect()
}

/// An older name's key, from the table.
fn seed_key(name: &str) -> Option<String> {
    SEED_ENV_KEYS
        .iter()
        .find(|(seed, _)| *seed == name)
        .map(|(_, key)| (*key).to_string())
}

/// `RELAY_SECTION__KEY` → `section.key`.
fn relay_key(name: &str) -> Option<String> {
    let rest = name.strip_prefix("RELAY_").filter(|r| !r.is_empty())?;
    Some(rest.to_ascii_lowercase().replace("__", "."))
}

/// The key a variable sets, if any.
#[cfg(test)]
pub(super) fn key_for(name: &str) -> Option<String> {
    seed_key(name).or_else(|| relay_key(name))
}

/// One layer of environment-style variables (the process environment, or a `.env`
/// file), named for `check-config`. Values are read as figment's `Env` reads them
/// (`5` a number, `true` a boolean, `[1, 2]` an array), except where the built-in
/// default is text (URLs, secrets, paths, names): there the value is taken as
/// written, since `Env` would read the secret `007` as the number 7; the rotation
/// lists likewise (see `secret::rotation_list`); and a switch also takes `True`,
/// `yes`, `on`, `1` and their opposites in any case.
struct Layer {
    metadata: Metadata,
    pairs: Vec<(String, String)>,
}

impl Layer {
    fn new(name: &'static str, source: Option<String>, pairs: Vec<(String, String)>) -> Layer {
        let metadata = Metadata::named(name);
        Layer {
            metadata: match source {
                Some(source) => metadata.source(source),
                None => metadata,
            },
            pairs,
        }
    }
}

impl Provider for Layer {
    fn metadata(&self) -> Metadata {
        self.metadata.clone()
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let defaults = Figment::from(Serialized::defaults(Config::default()));
        let mut layer = Figment::new();
        for (key, raw) in &self.pairs {
            let text = key.starts_with("routes.") && key.ends_with(".url")
                || matches!(defaults.find_value(key), Ok(Value::String(..)));
            let value = if super::secret::ROTATION_KEYS.contains(&key.as_str()) {
                let Some(list) = super::secret::rotation_list(raw) else {
                    let mut e = figment::Error::from(String::from(
                        "expected one secret, or a JSON list of quoted secrets, newest \
                         first, like [\"new\", \"old\"] (in .env, inside single quotes: \
                         '[\"new\", \"old\"]'); the value is not shown",
                    ));
                    e.path = key.split('.').map(String::from).collect();
                    e.metadata = Some(self.metadata.clone());
                    return Err(e);
                };
                Value::from(list)
            } else if matches!(defaults.find_value(key), Ok(Value::Bool(..)))
                || key.starts_with("routes.") && key.ends_with(".enabled")
            {
                // As the older system's settings read them: True, yes, on, 1 ...
                switch_word(raw).map_or_else(|| Value::from(raw.clone()), Value::from)
            } else if text {
                Value::from(raw.clone())
            } else {
                raw.parse().unwrap_or_else(|_| Value::from(raw.clone()))
            };
            layer = layer.merge(Serialized::global(key, value));
        }
        // Serialized again, the values lose the tags of the pieces they were merged
        // from, so figment tags them with this layer's metadata.
        let merged: Dict = layer.extract()?;
        let dict = Value::serialize(merged)?.into_dict().unwrap_or_default();
        Ok(Profile::Default.collect(dict))
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
    let what = match &e.kind {
        // A TOML syntax error quotes its source line, and the line may set a secret:
        // only its position and its reason (the quoted lines are the ones with '|').
        figment::error::Kind::Message(message) if message.starts_with("TOML parse error") => {
            message
                .lines()
                .filter(|l| !is_quoted_source(l))
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect::<Vec<_>>()
                .join(": ")
        }
        // The value found is quoted too: a secret set as a number, say.
        figment::error::Kind::InvalidType(_, expected)
        | figment::error::Kind::InvalidValue(_, expected)
            if holds_secret(&key) =>
        {
            format!("invalid value (expected {expected}); the value is not shown")
        }
        other => other.to_string(),
    };
    ConfigError::invalid(&key, format!("{what}{source}"))
}

/// A line of a TOML error's source snippet: `  |`, `3 | key = "..."`, `  |   ^`.
fn is_quoted_source(line: &str) -> bool {
    line.trim_start()
        .trim_start_matches(|c: char| c.is_ascii_digit())
        .trim_start()
        .starts_with('|')
}

/// Keys whose values are never shown in a message.
fn holds_secret(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    key == "database.url"
        || [
            "secret",
            "token",
            "password",
            "api_key",
            "auth_header_value",
        ]
        .iter()
        .any(|word| key.contains(word))
}

fn read_dotenv(path: &Path) -> Result<Vec<(String, String)>, ConfigError> {
    let file_error = |e: dotenvy::Error| ConfigError::File {
        path: path.to_path_buf(),
        message: describe_dotenv_error(&e, std::fs::read_to_string(path).ok().as_deref()),
    };
    let iter = dotenvy::from_path_iter(path).map_err(file_error)?;
    iter.map(|item| item.map_err(file_error)).collect()
}

/// dotenvy's parse error quotes the line (or what is left of it), which may set a
/// secret: the variable's name and the line's number where `text` (the file) shows
/// them, never its value. A value with a space in it is the usual cause
/// (`WEBHOOK_RETRY_DELAYS=5, 30, 300`, which the older backend's loader took).
fn describe_dotenv_error(e: &dotenvy::Error, text: Option<&str>) -> String {
    match e {
        dotenvy::Error::LineParse(fragment, at) => {
            let found = text.and_then(|text| {
                let wanted = fragment.trim();
                text.lines()
                    .enumerate()
                    .find(|(_, l)| !wanted.is_empty() && l.contains(wanted))
            });
            let line = found.map_or(fragment.as_str(), |(_, l)| l);
            let number = found
                .map(|(n, _)| format!(" (line {})", n + 1))
                .unwrap_or_default();
            let spaced = line.split_once('=').is_some_and(|(_, v)| {
                let v = v.trim();
                !v.starts_with(['"', '\'']) && v.contains(char::is_whitespace)
            });
            let quote = if spaced {
                ": a value with spaces needs quotes (NAME=\"a b\")"
            } else {
                ""
            };
            let name = line
                .split_once('=')
                .map(|(name, _)| name.trim().trim_start_matches("export ").trim())
                .filter(|name| {
                    !name.is_empty()
                        && name
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
                });
            match name {
                Some(name) => format!(
                    "the line setting {name}{number} cannot be parsed (at character {at}){quote}; its value is not shown"
                ),
                None => format!(
                    "a line{number} cannot be parsed (at character {at}){quote}; it is not shown, since it may hold a secret"
                ),
            }
        }
        other => other.to_string(),
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
                max_per_second: 0.0,
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
                final_statuses: Vec::new(),
                unhealthy_after: 10,
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
            console: ConsoleConfig {
                enabled: true,
                listen: SocketAddr::from(([127, 0, 0, 1], 9188)),
                token: Secret::default(),
                read_only_token: Secret::default(),
                token_file: String::new(),
                read_only_token_file: String::new(),
            },
            log: LogConfig {
                format: LogFormat::Human,
                level: "info".into(),
            },
            routes: BTreeMap::new(),
        }
    }
}
