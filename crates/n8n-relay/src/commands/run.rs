//! `n8n-relay run`

use relay_core::Config;

use crate::error::CmdResult;

pub async fn run(_config: Config) -> CmdResult {
    Err(anyhow::anyhow!("n8n-relay run is not built yet").into())
}
