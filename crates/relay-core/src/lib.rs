//! n8n-relay core: what the daemon, the callback listener and the CLI share.
//! Nothing here serves HTTP.

pub mod config;
pub mod db;
pub mod events;
pub mod metrics;
pub mod pause;
pub mod queue_admin;
pub mod retry;
pub mod schema;
pub mod secrets;
pub mod signature;
pub mod tls;
pub mod utc_time;

pub use config::{Config, ConfigError, Secret};

/// A timestamp column as operators read it, `2025-11-04T12:00:00Z` in UTC, for the
/// constant SQL of the CLI and the console (`concat!` it in). `infinity` and
/// `-infinity`, which `to_char` turns into NULL and a DBA may write by hand, are shown
/// as such instead; a NULL stays NULL.
#[macro_export]
macro_rules! utc_text {
    ($column:literal) => {
        concat!(
            "coalesce(to_char(",
            $column,
            " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), ",
            $column,
            "::text)"
        )
    };
}
pub use events::EventType;
