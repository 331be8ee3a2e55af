//! Bounded access to the query pool. Postgres enforces `statement_timeout`, but a
//! half-open TCP link or a wedged pool would still hang an await; every query the
//! daemon runs goes through [`Db::bounded`] so nothing waits forever.

use std::future::Future;
use std::time::Duration;

use deadpool_postgres::{Object, Pool};

use crate::error::DaemonError;

#[derive(Clone)]
pub(crate) struct Db {
    pool: Pool,
    limit: Duration,
}

impl Db {
    pub(crate) fn new(pool: Pool, config: &relay_core::config::DatabaseConfig) -> Db {
        // The server cuts a statement at statement_timeout; allow for connecting too.
        let limit = Duration::from_secs(
            config.statement_timeout_seconds + config.connect_timeout_seconds + 1,
        );
        Db { pool, limit }
    }

    pub(crate) async fn client(&self) -> Result<Object, DaemonError> {
        self.bounded("getting a database connection", async {
            Ok(self.pool.get().await?)
        })
        .await
    }

    /// Runs `fut`, failing with [`DaemonError::Timeout`] after the query limit.
    pub(crate) async fn bounded<T>(
        &self,
        what: &'static str,
        fut: impl Future<Output = Result<T, DaemonError>>,
    ) -> Result<T, DaemonError> {
        match tokio::time::timeout(self.limit, fut).await {
            Ok(result) => result,
            Err(_) => Err(DaemonError::Timeout(what, self.limit)),
        }
    }
}
