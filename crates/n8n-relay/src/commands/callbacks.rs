//! `n8n-relay callbacks`: the callback listener alone (whatever `callbacks.enabled`
//! says; that key only decides whether `run` serves it too).

use std::sync::Arc;

use anyhow::Context;
use relay_core::Config;

use crate::error::{CmdResult, Failure};

pub async fn run(config: Config) -> CmdResult {
    // Signals first, as in `run`.
    let shutdown = tokio_util::sync::CancellationToken::new();
    tokio::spawn(super::cancel_on_signal(shutdown.clone()));
    relay_callbacks::check(&config).map_err(Failure::usage)?;
    super::check_database(&config, &shutdown).await?;
    let pool = relay_core::db::pool(&config.database, "n8n-relay-callbacks")
        .context("could not set up the database pool")?;
    let listener = super::bind_callbacks(&config).await?;
    relay_callbacks::serve(Arc::new(config), pool, listener, shutdown)
        .await
        .map_err(Failure::usage)
}
