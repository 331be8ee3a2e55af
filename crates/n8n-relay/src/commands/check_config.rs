//! `n8n-relay check-config`: the effective configuration, secrets redacted, with the
//! layer that set each key.

use relay_core::config::Loaded;

use crate::cli::CheckConfigArgs;
use crate::error::CmdResult;

pub fn run(loaded: &Loaded, args: &CheckConfigArgs) -> CmdResult {
    let redacted = loaded.config.redacted();
    let mut rows = Vec::new();
    flatten("", &redacted, &mut rows);
    if args.json {
        let keys: serde_json::Map<String, serde_json::Value> = rows
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    serde_json::json!({"value": v, "source": loaded.source_of(k)}),
                )
            })
            .collect();
        let out = serde_json::json!({"valid": true, "config": redacted, "keys": keys});
        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    } else {
        let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        for (key, value) in &rows {
            let shown = match value {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            println!("{key:<width$}  {shown:<40}  {}", loaded.source_of(key));
        }
        println!("\nconfiguration is valid");
    }
    Ok(())
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
