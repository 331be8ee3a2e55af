//! Tracing setup: human or JSON lines on stderr, `RUST_LOG` over `log.level`.

use std::sync::atomic::{AtomicBool, Ordering};

use relay_core::config::{LogConfig, LogFormat};
use tracing_subscriber::EnvFilter;

/// The database driver logs every statement and its parameters at debug level (route
/// URLs with their `user:password@` among them): those of its modules are kept at
/// info unless a directive names the driver. Only those: its notices and warnings
/// come from another module, at the level asked for.
const QUIET_DRIVER: &str =
    "tokio_postgres::query=info,tokio_postgres::prepare=info,tokio_postgres::simple_query=info";

/// Whether `log.level` is a level or filter: an invalid one was ignored, the relay
/// logging at info without a word, where every other invalid setting stops it.
pub fn check(config: &LogConfig) -> Result<(), relay_core::ConfigError> {
    EnvFilter::try_new(&config.level).map(|_| ()).map_err(|e| {
        relay_core::ConfigError::Invalid(format!(
            "log.level: {:?} is not a level (error, warn, info, debug, trace) or a filter \
             such as info,relay_daemon=debug ({e})",
            config.level
        ))
    })
}

pub fn init(config: &LogConfig) {
    let quiet = |directives: &str| {
        if directives.contains("tokio_postgres") {
            directives.to_string()
        } else {
            format!("{directives},{QUIET_DRIVER}")
        }
    };
    let filter = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .and_then(|v| EnvFilter::try_new(quiet(&v)).ok())
        .or_else(|| EnvFilter::try_new(quiet(&config.level)).ok())
        .unwrap_or_else(|| EnvFilter::new(quiet("info")));
    // Colours only for a terminal: a file or journald got the escape codes.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let result = match config.format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Human => builder.try_init(),
    };
    match result {
        Ok(()) => JSON.store(config.format == LogFormat::Json, Ordering::Relaxed),
        Err(e) => eprintln!("warning: logging already initialised: {e}"),
    }
}

/// Set once the log writes JSON.
static JSON: AtomicBool = AtomicBool::new(false);

/// Says why the process stops, as the last line on stderr: a JSON object where the
/// log is JSON (a collector that parses each line dropped the one that said why the
/// relay exited), else `error: ...`.
pub fn fatal(message: &str) {
    // A filter that drops errors (RUST_LOG=off) must not drop this too.
    if JSON.load(Ordering::Relaxed) && tracing::enabled!(tracing::Level::ERROR) {
        tracing::error!(error = message, "n8n-relay stopped");
    } else {
        eprintln!("error: {message}");
    }
}
