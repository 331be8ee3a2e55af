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

pub use config::{Config, ConfigError, Secret};
pub use events::EventType;
