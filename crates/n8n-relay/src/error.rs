//! How a command fails: the exit code follows the kind of failure.

use std::process::ExitCode;

#[derive(Debug)]
pub enum Failure {
    /// Bad usage or invalid configuration: exit 2.
    Usage(anyhow::Error),
    /// Anything that went wrong while running: exit 1.
    Runtime(anyhow::Error),
}

impl Failure {
    pub fn usage(e: impl Into<anyhow::Error>) -> Self {
        Failure::Usage(e.into())
    }
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Failure::Usage(_) => ExitCode::from(2),
            Failure::Runtime(_) => ExitCode::from(1),
        }
    }
    pub fn error(&self) -> &anyhow::Error {
        match self {
            Failure::Usage(e) | Failure::Runtime(e) => e,
        }
    }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Runtime(e)
    }
}

impl From<relay_core::ConfigError> for Failure {
    fn from(e: relay_core::ConfigError) -> Self {
        Failure::Usage(e.into())
    }
}

pub type CmdResult = Result<(), Failure>;

/// A failure as the operator reads it: the chain of causes, each said once (a
/// database error repeats its cause in its own text, so `{:#}` said "db error: db
/// error: FATAL: ..."), and for a relay table that does not exist, where to start.
pub fn describe(e: &anyhow::Error) -> String {
    let mut text = relay_core::db::describe_chain(e.as_ref());
    let missing_table = e.chain().any(|link| {
        link.downcast_ref::<tokio_postgres::Error>()
            .and_then(tokio_postgres::Error::as_db_error)
            .is_some_and(|db| {
                // A table of the relay's, or one of its functions (`emit` calls
                // webhook_emit(), which Postgres then says does not exist, with a
                // hint about casts that leads nowhere).
                matches!(
                    *db.code(),
                    tokio_postgres::error::SqlState::UNDEFINED_TABLE
                        | tokio_postgres::error::SqlState::UNDEFINED_FUNCTION
                ) && db.message().contains("webhook_")
            })
    });
    if missing_table {
        text.push_str(
            " (the relay's schema is not installed in this database: n8n-relay migrate, or \
             the scripts in sql/ with psql)",
        );
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Says its cause in its own text and returns it as its source too, as
    /// tokio-postgres's errors do.
    #[derive(Debug)]
    struct Wraps(Inner);

    #[derive(Debug)]
    struct Inner;

    impl std::fmt::Display for Wraps {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "database error: {}", self.0)
        }
    }

    impl std::error::Error for Wraps {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    impl std::fmt::Display for Inner {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("db error: FATAL: database \"x\" does not exist")
        }
    }

    impl std::error::Error for Inner {}

    #[test]
    fn each_cause_is_said_once() {
        let e = anyhow::Error::new(Wraps(Inner)).context("could not connect to the database");
        assert_eq!(
            describe(&e),
            "could not connect to the database: database error: db error: FATAL: database \"x\" \
             does not exist"
        );
    }
}
