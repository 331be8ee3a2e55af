//! `n8n-relay sign`: headers for a body on stdin, for curl tests.

use std::io::Read;

use anyhow::Context;
use relay_core::config::{Config, Sources};
use relay_core::signature;

use crate::cli::SignArgs;
use crate::error::{CmdResult, Failure};

pub fn run(sources: &Sources, args: &SignArgs) -> CmdResult {
    let secret = match &args.secret {
        Some(s) => s.clone(),
        None => {
            let loaded = Config::load(sources)?;
            loaded
                .config
                .security
                .n8n_webhook_secret
                .expose()
                .to_string()
        }
    };
    if secret.is_empty() {
        return Err(Failure::usage(anyhow::anyhow!(
            "no secret: pass --secret or set security.n8n_webhook_secret (N8N_WEBHOOK_SECRET)"
        )));
    }
    let mut body = Vec::new();
    std::io::stdin()
        .read_to_end(&mut body)
        .context("could not read the body from stdin")?;
    let timestamp = args.timestamp.unwrap_or_else(signature::unix_now);
    let sig = signature::sign(secret.as_bytes(), timestamp, &body);
    println!("X-Webhook-Timestamp: {timestamp}");
    println!("X-Webhook-Signature-256: {sig}");
    Ok(())
}
