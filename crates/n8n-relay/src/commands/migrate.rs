//! `n8n-relay migrate`

use anyhow::Context;
use relay_core::Config;

use crate::cli::MigrateArgs;
use crate::error::CmdResult;

pub async fn run(config: &Config, args: &MigrateArgs) -> CmdResult {
    let mut client = super::connect(config).await?;
    let applied = relay_core::schema::migrate(&mut client, args.example_tables)
        .await
        .context("migration failed")?;
    let text: String = applied
        .iter()
        .map(|a| {
            format!(
                "{:<26} {}\n",
                a.name,
                if a.ran { "applied" } else { "up to date" }
            )
        })
        .collect();
    super::write_stdout(&text)
}
