//! `n8n-relay queue ...`

use relay_core::Config;

use crate::cli::QueueCommand;
use crate::error::CmdResult;

pub async fn run(_config: &Config, _cmd: QueueCommand) -> CmdResult {
    Err(anyhow::anyhow!("n8n-relay queue is not built yet").into())
}
