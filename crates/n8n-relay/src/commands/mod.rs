//! One module per subcommand.

pub mod callbacks;
pub mod check_config;
pub mod emit;
pub mod migrate;
pub mod queue;
pub mod run;
pub mod sign;

use anyhow::Context;
use relay_core::Config;

/// A short-lived single connection for CLI commands.
pub async fn connect(config: &Config) -> anyhow::Result<tokio_postgres::Client> {
    let pg = relay_core::db::pg_config(&config.database, "n8n-relay-cli")?;
    let (client, connection) = pg
        .connect(tokio_postgres::NoTls)
        .await
        .context("could not connect to the database (database.url)")?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!("database connection closed: {e}");
        }
    });
    Ok(client)
}
