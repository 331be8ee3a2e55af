//! `n8n-relay sign`: headers for a body on stdin, for curl tests. Signs the way n8n
//! signs a callback: with the callback secrets (or `--secret`) under the scheme.

use std::io::Read;

use anyhow::Context;
use relay_core::config::{Config, Sources};
use relay_core::signature::{self, Keys, Scheme};

use crate::cli::SignArgs;
use crate::error::{CmdResult, Failure};

pub fn run(sources: &Sources, args: &SignArgs) -> CmdResult {
    let flag_scheme = match args.scheme.as_deref() {
        None => None,
        Some("x-webhook-signature") => Some(Scheme::XWebhookSignature),
        Some("standard-webhooks") => Some(Scheme::StandardWebhooks),
        Some(other) => {
            return Err(Failure::usage(anyhow::anyhow!(
                "--scheme {other:?}: expected x-webhook-signature or standard-webhooks"
            )))
        }
    };
    let keys = match &args.secret {
        Some(secret) => {
            let scheme = flag_scheme.unwrap_or_default();
            Keys::new(scheme, [secret.as_str()]).map_err(|(_, e)| {
                Failure::usage(anyhow::anyhow!(
                    "--secret: {e} (--scheme {})",
                    scheme.as_str()
                ))
            })?
        }
        None => {
            let mut security = Config::load(sources)?.config.security;
            if let Some(scheme) = flag_scheme {
                security.scheme = scheme;
            }
            security.callback_keys().map_err(Failure::usage)?
        }
    };
    if keys.is_empty() {
        return Err(Failure::usage(anyhow::anyhow!(
            "no secret: pass --secret or set security.n8n_webhook_secret (N8N_WEBHOOK_SECRET)"
        )));
    }
    // Silently unused before: the default scheme's signature covers no id.
    if args.id.is_some() && keys.scheme() != Scheme::StandardWebhooks {
        return Err(Failure::usage(anyhow::anyhow!(
            "--id: only standard-webhooks signs a webhook-id (--scheme standard-webhooks)"
        )));
    }
    let mut body = Vec::new();
    std::io::stdin()
        .read_to_end(&mut body)
        .context("could not read the body from stdin")?;
    let timestamp = args.timestamp.unwrap_or_else(signature::unix_now);
    let id = args.id.clone().unwrap_or_else(fresh_id);
    let text: String = keys
        .sign_headers(&id, timestamp, &body)
        .into_iter()
        .map(|(name, value)| format!("{}: {value}\n", display_name(name)))
        .collect();
    super::write_stdout(&text)
}

/// The contract's headers as documented (`X-Webhook-Timestamp`); Standard Webhooks'
/// lowercase, as its specification writes them.
fn display_name(name: &str) -> String {
    if !name.starts_with("x-") {
        return name.to_string();
    }
    name.split('-')
        .map(|part| match part {
            "x" => "X".to_string(),
            other => {
                let mut chars = other.chars();
                chars
                    .next()
                    .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
                    .unwrap_or_default()
            }
        })
        .collect::<Vec<_>>()
        .join("-")
}

fn fresh_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("msg_{nanos:x}")
}
