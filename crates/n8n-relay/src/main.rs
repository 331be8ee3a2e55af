//! `n8n-relay`: the binary only wires the crates together.

mod cli;
mod commands;
mod error;
mod logging;
mod observe;

use std::process::ExitCode;

use clap::Parser;
use relay_core::config::{Config, Sources};

use crate::cli::{Cli, Command};
use crate::error::Failure;

/// How long the process waits at its end for its database connections to close
/// cleanly (each normally takes a round trip).
const CLOSE_CONNECTIONS_WITHIN: std::time::Duration = std::time::Duration::from_secs(1);

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: could not start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let outcome = runtime.block_on(dispatch(cli));
    // Every client and pool is dropped by now: let their connections say goodbye.
    runtime.block_on(relay_core::db::drivers::close(CLOSE_CONNECTIONS_WITHIN));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            logging::fatal(&crate::error::describe(failure.error()));
            failure.exit_code()
        }
    }
}

async fn dispatch(cli: Cli) -> Result<(), Failure> {
    let sources = Sources::standard(cli.config.clone());
    // `sign --secret` works without a valid config (without `--secret` it loads the
    // config for the callback secret); everything else needs it.
    if let Command::Sign(args) = &cli.command {
        return commands::sign::run(&sources, args);
    }
    let loaded = match Config::load(&sources)
        .and_then(|loaded| logging::check(&loaded.config.log).map(|()| loaded))
    {
        Ok(loaded) => loaded,
        Err(e) => {
            // A script reading `check-config --json` gets JSON either way; the
            // message (which names the key, never a secret) is on stderr too.
            if let Command::CheckConfig(args) = &cli.command {
                if args.json {
                    let out = serde_json::json!({"valid": false, "error": e.to_string()});
                    commands::write_stdout(&format!("{out}\n"))?;
                }
            }
            return Err(e.into());
        }
    };
    match cli.command {
        Command::CheckConfig(args) => commands::check_config::run(&loaded, &args),
        Command::Run => {
            logging::init(&loaded.config.log);
            commands::run::run(loaded.config).await
        }
        Command::Callbacks => {
            logging::init(&loaded.config.log);
            commands::callbacks::run(loaded.config).await
        }
        Command::Console => {
            logging::init(&loaded.config.log);
            commands::console::run(loaded.config).await
        }
        Command::Migrate(args) => commands::migrate::run(&loaded.config, &args).await,
        Command::Queue(cmd) => commands::queue::run(&loaded.config, cmd).await,
        Command::Emit(args) => commands::emit::run(&loaded.config, &args).await,
        Command::Sign(_) => Ok(()),
    }
}
