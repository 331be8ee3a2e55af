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
            REDACTED
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
            ROTATION_KEYS[0],
            &self.webhook_secrets,
            "security.webhook_secret",
            &self.webhook_secret,
        )
    }

    /// The secrets a callback may be signed with, newest first, with the key naming each.
    pub fn callback_secrets(&self) -> Vec<(String, &Secret)> {
        active(
            ROTATION_KEYS[1],
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

/// The rotation lists, whose values the environment and `.env` give as text.
pub(super) const ROTATION_KEYS: [&str; 2] =
    ["security.webhook_secrets", "security.n8n_webhook_secrets"];

/// A rotation list as an environment variable or `.env` line writes it: a JSON list of
/// quoted secrets (`["new", "old"]`), or one secret as written. Never read as figment
/// reads other values, which turns `007` into 7 and `["new", 0123]` into "123", and
/// never split on commas. `None` when it starts like a list and is not one; the caller
/// names the key, never the value.
pub(super) fn rotation_list(raw: &str) -> Option<Vec<String>> {
    if !raw.trim_start().starts_with('[') {
        return Some(vec![raw.to_string()]);
    }
    let items: Vec<serde_json::Value> = serde_json::from_str(raw).ok()?;
    items
        .into_iter()
        .map(|item| match item {
            serde_json::Value::String(s) => Some(s),
            // Digits as JSON writes them (no leading zero, no sign, no exponent).
            serde_json::Value::Number(n) => n.as_u64().map(|n| n.to_string()),
            _ => None,
        })
        .collect()
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

/// What stands in for a secret's value wherever one is shown.
pub const REDACTED: &str = "(redacted)";

/// A webhook URL without its `user:password@`, as logs, metrics, events and the
/// console show it: n8n basic-auth credentials may ride in a route's URL, and so may a
/// token in its query (a proxy in front of n8n that takes `?token=`): the value of a
/// query parameter whose name says it is a credential is hidden too.
pub fn url_without_userinfo(url: &str) -> String {
    let bare = match split_userinfo(url) {
        Some((scheme, _, after)) => format!("{scheme}://{after}"),
        None => url.to_string(),
    };
    query_credentials_hidden(&bare)
}

/// Whether a query parameter's name says it carries a credential: one of its words
/// (split at `_`, `-`, `.`) is `token`, `key`, `secret`, `password`, `sig`, ... .
fn names_a_credential(name: &str) -> bool {
    const WORDS: &[&str] = &[
        "token",
        "key",
        "apikey",
        "secret",
        "password",
        "passwd",
        "pwd",
        "pass",
        "auth",
        "sig",
        "signature",
        "credential",
        "credentials",
        "accesstoken",
        "authtoken",
    ];
    let name = percent_encoding::percent_decode_str(name)
        .decode_utf8_lossy()
        .to_ascii_lowercase();
    name.split(['_', '-', '.'])
        .any(|word| WORDS.contains(&word))
}

/// `url` with the value of every query parameter [`names_a_credential`] hidden.
fn query_credentials_hidden(url: &str) -> String {
    let Some((before, rest)) = url.split_once('?') else {
        return url.to_string();
    };
    let (query, fragment) = match rest.split_once('#') {
        Some((q, f)) => (q, Some(f)),
        None => (rest, None),
    };
    let query = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((k, _)) if names_a_credential(k) => format!("{k}={REDACTED}"),
            _ => pair.to_string(),
        })
        .collect::<Vec<_>>()
        .join("&");
    match fragment {
        Some(f) => format!("{before}?{query}#{f}"),
        None => format!("{before}?{query}"),
    }
}

/// The one of `urls` that `typed` names: itself, or the only one that is `typed`
/// once credentials are taken out of both. Every command and page shows URLs without
/// their `user:password@`, and queue rows and pauses hold them with it: a URL typed as
/// shown stands for the route URL it was shown for.
pub fn url_standing_for<'a>(typed: &str, urls: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let shown = url_without_userinfo(typed);
    let mut same: Vec<&str> = Vec::new();
    for url in urls {
        if url == typed {
            return Some(url);
        }
        if url_without_userinfo(url) == shown && !same.contains(&url) {
            same.push(url);
        }
    }
    match same.as_slice() {
        [one] => Some(one),
        _ => None,
    }
}

/// A webhook URL with its password (or a lone token in the user's place) hidden and
/// its user kept, as `check-config` shows it: `https://n8n:(redacted)@host/...`.
pub fn url_password_hidden(url: &str) -> String {
    let shown = match split_userinfo(url) {
        Some((scheme, userinfo, after)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:{REDACTED}@{after}"),
            None => format!("{scheme}://{REDACTED}@{after}"),
        },
        None => url.to_string(),
    };
    query_credentials_hidden(&shown)
}

/// `scheme://userinfo@rest` as its three parts, when there is a userinfo: the last
/// '@' before the authority ends (at the first '/', '?' or '#').
fn split_userinfo(url: &str) -> Option<(&str, &str, &str)> {
    let (scheme, rest) = url.split_once("://")?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (userinfo, host) = rest[..end].rsplit_once('@')?;
    // The host starts where the authority's last '@' ends.
    Some((scheme, userinfo, &rest[end - host.len()..]))
}

/// `s` with the value of every `password` parameter after its first `?` hidden.
fn redact_params(s: &str) -> String {
    let Some((before, query)) = s.split_once('?') else {
        return s.to_string();
    };
    let query = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((k, _))
                if percent_encoding::percent_decode_str(k)
                    .decode_utf8_lossy()
                    .eq_ignore_ascii_case("password") =>
            {
                format!("{k}={REDACTED}")
            }
            _ => pair.to_string(),
        })
        .collect::<Vec<_>>()
        .join("&");
    format!("{before}?{query}")
}

/// A database URL with every password hidden, in either of libpq's forms:
/// `postgres://user:pw@h1,h2/db?password=pw` -> `postgres://user:(redacted)@h1,h2/db?password=(redacted)`,
/// `host=db password='a b'` -> `host=db password=(redacted)`. Written by hand rather
/// than with a URL parser, because a multi-host URL is not a URL to one, and a URL
/// that fails to parse must not be shown as it is.
pub fn redact_url_password(url: &str) -> String {
    let trimmed = url.trim();
    if let Some((scheme, rest)) = trimmed.split_once("://") {
        // Read as the driver (tokio-postgres) reads it, so that whatever it would use
        // as a password is what is hidden: the credentials run to the first '@'
        // anywhere (a '/' or '?' in an unencoded password included), and a parameter's
        // name is percent-decoded (`pass%77ord=` sets the password too).
        // An '@' in a parameter of a URL without credentials makes the driver misread
        // it; the parameters are redacted on both sides of it all the same.
        let (credentials, after) = match rest.split_once('@') {
            Some((userinfo, after)) => match userinfo.split_once(':') {
                Some((user, _)) => (format!("{}:{REDACTED}@", redact_params(user)), after),
                None => (format!("{}@", redact_params(userinfo)), after),
            },
            None => (String::new(), rest),
        };
        return format!("{scheme}://{credentials}{}", redact_params(after));
    }
    // key=value pairs; a value may be 'quoted', with backslash escapes.
    let mut out = String::with_capacity(trimmed.len());
    let mut chars = trimmed.chars().peekable();
    while let Some(c) = chars.next() {
        out.push(c);
        if c != '=' {
            continue;
        }
        let key = out[..out.len() - 1].trim_end();
        // The last word before the '=' (split on any whitespace, a multi-byte one too).
        let name = key.rsplit(char::is_whitespace).next().unwrap_or_default();
        let hide = name.eq_ignore_ascii_case("password");
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'\'') {
            value.push('\'');
            chars.next();
            while let Some(v) = chars.next() {
                value.push(v);
                if v == '\\' {
                    if let Some(escaped) = chars.next() {
                        value.push(escaped);
                    }
                } else if v == '\'' {
                    break;
                }
            }
        } else {
            while let Some(v) = chars.next_if(|v| !v.is_whitespace()) {
                value.push(v);
            }
        }
        out.push_str(if hide { REDACTED } else { &value });
    }
    out
}
