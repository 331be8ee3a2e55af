//! `n8n-relay migrate`

use anyhow::Context;
use relay_core::Config;

use crate::cli::MigrateArgs;
use crate::error::CmdResult;

pub async fn run(config: &Config, args: &MigrateArgs) -> CmdResult {
    let (mut client, mut notices) = super::connect_noting(config).await?;
    let applied = relay_core::schema::migrate(&mut client, args.example_tables)
        .await
        .context("migration failed")?;
    // What the scripts say themselves (a business table without its trigger, and
    // why); not Postgres's own "already exists, skipping" of every idempotent line.
    // The driver has handed over every notice sent before the last answer.
    while let Ok(notice) = notices.try_recv() {
        if notice.starts_with("n8n-relay:") {
            eprintln!("note: {notice}");
        }
    }
    let text: String = applied
        .iter()
        .map(|a| format!("{:<26} {}\n", a.name, a.outcome.describe()))
        .collect();
    super::write_stdout(&text)
}
