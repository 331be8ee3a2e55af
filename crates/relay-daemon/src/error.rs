//! The daemon's error type. Only setup failures leave [`crate::run`]; everything that
//! happens while running (a database restart, a refused connection) is logged and
//! retried, so these errors mostly travel inside the crate.

use std::fmt::Write as _;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The daemon could not be built from the configuration.
    #[error("relay setup: {0}")]
    Setup(String),
    #[error("database: {}", describe_pg(.0))]
    Db(#[from] tokio_postgres::Error),
    #[error("database pool: {}", describe_chain(.0))]
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
        DaemonError::Setup(e.to_string())
    }
}

/// tokio-postgres prints only "db error"; the server's message is what an operator
/// needs. Server messages never carry our secrets (they are not sent as SQL text).
pub(crate) fn describe_pg(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {} ({})", db.severity(), db.message(), db.code().code()),
        None => describe_chain(e),
    }
}

/// An error and its sources on one line.
pub(crate) fn describe_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let _ = write!(text, ": {s}");
        source = s.source();
    }
    text
}
