//! Secrets in the configuration: a type that never shows itself, and the active
//! signing and callback secrets of a rotation, newest first. (Reading them from files
//! is [`crate::secrets`].)

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{ConfigError, SecurityConfig};
use crate::signature::{Keys, Scheme};

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

/// Accepts a list of secrets or a single one (a string, or digits).
pub(super) fn de_secrets<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Secret>, D::Error> {
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
