//! `n8n-relay console`: the operator console alone (whatever `console.enabled` says;
//! that key only decides whether `run` serves it too).

use std::sync::Arc;

use relay_core::Config;

use crate::error::{CmdResult, Failure};

pub async fn run(config: Config) -> CmdResult {
    // Signals first, as in `run`.
    let shutdown = tokio_util::sync::CancellationToken::new();
    tokio::spawn(super::cancel_on_signal(shutdown.clone()));
    // Served whatever console.enabled says, so checked whatever it says.
    config.validate_console().map_err(Failure::usage)?;
    super::check_database(&config, &shutdown).await?;
    let pool = super::console_pool(&config)?;
    let listener = super::bind_console(&config).await?;
    relay_console::serve(Arc::new(config), pool, listener, shutdown).await;
    Ok(())
}
