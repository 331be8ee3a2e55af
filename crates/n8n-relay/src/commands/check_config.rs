//! `n8n-relay check-config`: the effective configuration, secrets redacted, with the
//! layer that set each key (and, for the environment, the variable; for a secret
//! read from a file, the file and what named it).

use relay_core::config::{Loaded, SEED_ENV_KEYS};

use crate::cli::CheckConfigArgs;
use crate::error::{CmdResult, Failure};

/// Values longer than this push the source column out instead of widening it.
const MAX_VALUE_WIDTH: usize = 48;

pub fn run(loaded: &Loaded, args: &CheckConfigArgs) -> CmdResult {
    // What `run` refuses at start besides the configuration's own checks: a relay
    // that could not sign, a callback listener that could verify nothing. A
    // configuration said valid here starts.
    let refused = match relay_daemon::check(&loaded.config) {
        Err(e) => Some(anyhow::Error::new(e)),
        Ok(()) if loaded.config.callbacks.enabled => relay_callbacks::check(&loaded.config)
            .err()
            .map(anyhow::Error::new),
        Ok(()) => None,
    };
    if let Some(e) = refused {
        if args.json {
            let out = serde_json::json!({"valid": false, "error": e.to_string()});
            super::write_stdout(&format!("{out}\n"))?;
        }
        return Err(Failure::usage(e));
    }
    let redacted = loaded.config.redacted();
    let mut values = Vec::new();
    flatten("", &redacted, &mut values);
    if args.json {
        let keys: serde_json::Map<String, serde_json::Value> = values
            .into_iter()
            .map(|(key, value)| {
                let (layer, variable) = source(loaded, &key);
                let mut entry = serde_json::json!({"value": value, "source": layer});
                if let Some(variable) = variable {
                    entry["variable"] = variable.into();
                }
                (key, entry)
            })
            .collect();
        let secrets: serde_json::Map<String, serde_json::Value> = active_secrets(loaded)
            .into_iter()
            .map(|(direction, list)| {
                let list = list
                    .into_iter()
                    .map(|(key, sha256)| serde_json::json!({"key": key, "sha256": sha256}))
                    .collect();
                (direction.to_string(), serde_json::Value::Array(list))
            })
            .collect();
        let now = std::time::SystemTime::now();
        let certificates: Vec<serde_json::Value> = loaded
            .config
            .certificates()
            .iter()
            .map(|c| {
                let dates = c.validity.as_ref();
                serde_json::json!({
                    "key": c.setting,
                    "file": c.path.display().to_string(),
                    "not_before": dates.map(|d| d.starts()),
                    "not_after": dates.map(|d| d.expires()),
                    "state": dates.map(|d| d.state(now)),
                    "problem": c.problem(now),
                })
            })
            .collect();
        let out = serde_json::json!({
            "valid": true, "config": redacted, "keys": keys, "active_secrets": secrets,
            "certificates": certificates, "warnings": loaded.config.warnings(),
        });
        let json = serde_json::to_string_pretty(&out).unwrap_or_default();
        return super::write_stdout(&format!("{json}\n"));
    }
    let rows: Vec<(String, String, String)> = values
        .into_iter()
        .map(|(key, value)| {
            let shown = match value {
                serde_json::Value::String(s) if s.is_empty() => "\"\"".to_string(),
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            };
            let source = match source(loaded, &key) {
                (layer, Some(variable)) => format!("{layer} ({variable})"),
                (layer, None) => layer,
            };
            (key, shown, source)
        })
        .collect();
    let key_width = rows.iter().map(|(k, _, _)| k.len()).max().unwrap_or(0);
    let value_width = rows
        .iter()
        .map(|(_, v, _)| v.chars().count())
        .filter(|w| *w <= MAX_VALUE_WIDTH)
        .max()
        .unwrap_or(0);
    use std::fmt::Write as _;
    let mut text = String::new();
    let _ = writeln!(
        text,
        "{:<key_width$}  {:<value_width$}  source",
        "key", "value"
    );
    for (key, value, source) in &rows {
        let _ = writeln!(text, "{key:<key_width$}  {value:<value_width$}  {source}");
    }
    text.push_str(
        "\nactive secrets, newest first (first 8 hex digits of the secret's SHA-256, \
         compare with `printf %s \"$SECRET\" | sha256sum`):\n",
    );
    for (direction, list) in active_secrets(loaded) {
        if list.is_empty() {
            let _ = writeln!(text, "  {direction:<9}  (none)");
        }
        for (i, (key, sha256)) in list.iter().enumerate() {
            let label = if i == 0 { direction } else { "" };
            let _ = writeln!(text, "  {label:<9}  {}. {sha256}  {key}", i + 1);
        }
    }
    let certificates = loaded.config.certificates();
    if !certificates.is_empty() {
        let now = std::time::SystemTime::now();
        text.push_str("\ncertificates the relay presents:\n");
        let width = certificates
            .iter()
            .map(|c| c.setting.len())
            .max()
            .unwrap_or(0);
        for c in &certificates {
            let state = c
                .validity
                .as_ref()
                .map_or_else(|| "dates unreadable".to_string(), |d| d.state(now));
            let _ = writeln!(
                text,
                "  {:<width$}  {}  {state}",
                c.setting,
                c.path.display()
            );
        }
        for problem in certificates.iter().filter_map(|c| c.problem(now)) {
            let _ = writeln!(text, "warning: {problem}");
        }
    }
    for warning in loaded.config.warnings() {
        let _ = writeln!(text, "\nwarning: {warning}");
    }
    text.push_str("\nconfiguration is valid\n");
    super::write_stdout(&text)
}

/// Which secrets sign deliveries and which verify callbacks, newest first, each as
/// (key, fingerprint): an operator mid-rotation sees which are live, never their text.
fn active_secrets(loaded: &Loaded) -> [(&'static str, Vec<(String, String)>); 2] {
    let security = &loaded.config.security;
    let shown = |list: Vec<(String, &relay_core::Secret)>| {
        list.into_iter()
            .map(|(key, secret)| (key, secret.fingerprint()))
            .collect()
    };
    [
        ("signing", shown(security.signing_secrets())),
        ("callbacks", shown(security.callback_secrets())),
    ]
}

/// The layer, and for the environment the variable that won: `RELAY_SECTION__KEY`
/// beats the older system's name for the same key.
fn source(loaded: &Loaded, key: &str) -> (String, Option<String>) {
    // A secret read from a file: the file, and what named it.
    if let Some(file_key) = relay_core::secrets::file_key_of(key) {
        let path = loaded
            .figment
            .extract_inner::<String>(file_key)
            .unwrap_or_default();
        if !path.is_empty() {
            let named_by = match source(loaded, file_key) {
                (layer, Some(variable)) => format!("named by {variable} in {layer}"),
                (layer, None) => format!("named by {file_key} in {layer}"),
            };
            return (format!("file {path}"), Some(named_by));
        }
    }
    let layer = loaded.source_of(key);
    if layer != "environment" {
        return (layer, None);
    }
    let relay_name = format!("RELAY_{}", key.to_ascii_uppercase().replace('.', "__"));
    if std::env::var_os(&relay_name).is_some() {
        return (layer, Some(relay_name));
    }
    let seed = SEED_ENV_KEYS
        .iter()
        .find(|(name, k)| *k == key && std::env::var_os(name).is_some())
        .map(|(name, _)| name.to_string());
    (layer, seed)
}

fn flatten(prefix: &str, value: &serde_json::Value, out: &mut Vec<(String, serde_json::Value)>) {
    match value {
        serde_json::Value::Object(map) if !map.is_empty() => {
            for (k, v) in map {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        other => out.push((prefix.to_string(), other.clone())),
    }
}
