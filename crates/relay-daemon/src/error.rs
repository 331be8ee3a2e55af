//! The daemon's error type. Only setup failures leave [`crate::run`]; everything that
//! happens while running (a database restart, a refused connection) is logged and
//! retried, so these errors mostly travel inside the crate.

use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The daemon could not be built from the configuration.
    #[error("relay setup: {0}")]
    Setup(String),
    #[error("database: {}", describe_pg(.0))]
    Db(#[from] tokio_postgres::Error),
    /// The database did not answer (relay_core::db::DbError::Unavailable).
    #[error("database: {0}")]
    Unavailable(String),
    #[error("database pool: {}", describe_pool(.0))]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("{0} did not finish within {1:?}")]
    Timeout(&'static str, Duration),
    /// A route or due claim that ran out of time, by the relay's bound on it or the
    /// server's `statement_timeout`: its batch is too heavy (`crate::batch`).
    #[error("{0} ran out of time (a batch of very large events?): {1}")]
    BatchTooSlow(&'static str, Box<DaemonError>),
}

impl DaemonError {
    /// `self`, from the route or due claim `what`, as [`DaemonError::BatchTooSlow`]
    /// when that statement itself ran out of time (not, say, the wait for a
    /// connection before it).
    pub(crate) fn batch_outran(self, what: &'static str) -> DaemonError {
        let slow = match &self {
            DaemonError::Timeout(bound, _) => *bound == what,
            DaemonError::Db(e) => {
                e.code() == Some(&tokio_postgres::error::SqlState::QUERY_CANCELED)
            }
            _ => false,
        };
        if slow {
            DaemonError::BatchTooSlow(what, Box::new(self))
        } else {
            self
        }
    }

    /// The relay's tables are missing: `n8n-relay migrate` has not been run.
    pub(crate) fn is_missing_schema(&self) -> bool {
        let code = match self {
            DaemonError::Db(e) => e.code(),
            DaemonError::Pool(deadpool_postgres::PoolError::Backend(e)) => e.code(),
            _ => None,
        };
        matches!(
            code,
            Some(c) if *c == tokio_postgres::error::SqlState::UNDEFINED_TABLE
                || *c == tokio_postgres::error::SqlState::UNDEFINED_FUNCTION
                || *c == tokio_postgres::error::SqlState::UNDEFINED_OBJECT
        )
    }
}

impl From<relay_core::db::DbError> for DaemonError {
    fn from(e: relay_core::db::DbError) -> Self {
        match e {
            // What the server said (a database that does not exist, a refused login),
            // not "relay setup": it is retried like any database error.
            relay_core::db::DbError::Query(e) => DaemonError::Db(e),
            relay_core::db::DbError::Unavailable(why) => DaemonError::Unavailable(why),
            other => DaemonError::Setup(other.to_string()),
        }
    }
}

pub(crate) use relay_core::db::{describe_chain, describe_pg, describe_pool};
