//! n8n-relay callbacks: the signed HTTP listener through which n8n hands decisions
//! (demo and video approvals) and workflow status back to Postgres.
//!
//! A request goes through the same checks in the same order, each refusing with a
//! JSON `{"error", "detail"}` and changing nothing: path and method, content type,
//! size, signature, JSON shape, then one database transaction that applies the change
//! and keeps a receipt, so an identical signed retry gets the first answer back
//! instead of a second change. Every request, accepted or not, is written to
//! `webhook_logs` (direction `incoming`).
//!
//! `n8n-relay callbacks` serves this alone; `n8n-relay run` serves it beside the
//! relay when `callbacks.enabled`.

mod body;
mod handlers;
mod log;
mod payload;
#[cfg(test)]
mod properties;
mod receipts;
mod response;
mod routes;
mod server;
mod summed;
mod tls;
mod verify;

pub use server::serve;

/// Why the listener cannot serve.
#[derive(Debug, thiserror::Error)]
pub enum CallbackError {
    /// Without the secret every signed request would be refused, so a listener that
    /// starts anyway only hides the misconfiguration until n8n's first callback.
    #[error(
        "security.n8n_webhook_secret (N8N_WEBHOOK_SECRET) is not set: the callback listener \
cannot verify n8n's signatures; set it, or set callbacks.enabled = false to run without the listener"
    )]
    SecretNotConfigured,
    /// A callback secret the configured scheme cannot use (normally caught at load).
    #[error("{0}")]
    Secret(#[from] relay_core::ConfigError),
}

/// Whether `config` lets the listener start. `serve` checks this too; callers run it
/// first to refuse a bad configuration (exit 2) before binding or connecting.
pub fn check(config: &relay_core::Config) -> Result<(), CallbackError> {
    if config.security.callback_secrets().is_empty() {
        return Err(CallbackError::SecretNotConfigured);
    }
    config.security.callback_keys()?;
    Ok(())
}
