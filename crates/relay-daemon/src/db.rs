//! Bounded access to the query pool. Postgres enforces `statement_timeout`, but a
//! half-open TCP link or a wedged pool would still hang an await; every query the
//! daemon runs goes through [`Db::bounded`] so nothing waits forever, and a stopping
//! relay waits on none of them longer than [`unless_stopped`] allows.

use std::future::Future;
use std::time::Duration;

use deadpool_postgres::{Object, Pool};
use tokio_postgres::types::ToSql;
use tokio_util::sync::CancellationToken;

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

/// Runs `fut` to its end, unless `shutdown` comes and `fut` is still running
/// `patience` later: then `None`, and `fut` is dropped where it stood.
///
/// A statement already sent runs on or not in the server; what the relay does not
/// learn of it is what a crash would leave (rows claimed and never started go back
/// once the relay's sessions are gone: `crate::liveness`). Against a database that
/// has stopped answering, every part of a stopping relay waited out its statement's
/// bound one after the other: 38 s after SIGTERM, where systemd, compose and
/// Kubernetes kill at 30.
pub(crate) async fn unless_stopped<F: Future>(
    shutdown: &CancellationToken,
    patience: Duration,
    fut: F,
) -> Option<F::Output> {
    tokio::select! {
        out = fut => Some(out),
        () = async {
            shutdown.cancelled().await;
            tokio::time::sleep(patience).await;
        } => None,
    }
}

/// Opens a transaction in which a statement's plan is made once and kept
/// (`plan_cache_mode`), and made of index scans only (`enable_seqscan`), whatever the
/// statistics say when it is made. For the statements that run all the time and read
/// every table they touch by index: the route statements and the due claim
/// (`crate::claim`), and the liveness check (`crate::liveness`).
///
/// Left to choose, Postgres planned every route statement anew at every run: it costs
/// a generic plan of arrays and a LIMIT of unknown size above the custom plans, and the
/// planning (0.2 ms for the lean route, 0.6 for the ordered one, 0.75 for the full one,
/// for 30 events) took 40-85 % as long as running them. The plan kept is remade only
/// when an ANALYZE of one of its tables invalidates it. A plan kept is a plan made once,
/// though, often on an empty outbox: from the statistics of empty tables Postgres
/// plans a sequential scan of the outbox and a sort, and would go on with it through a
/// backlog of 100,000 (the outcome write's kept plan did just that with the queue;
/// bench README, "The database's share of an event"). Allowed index scans only, the
/// plan made on empty tables is the plan for a backlog (tests/tests/claim_plans.rs
/// holds it so).
///
/// The liveness check reads the `sending` rows through `webhook_queue_lease_idx`;
/// statistics taken while the queue was empty or mostly `sending` (a drain just begun)
/// made Postgres read the whole queue for them instead, every 500 ms, delivered
/// history included (18 ms a time during a drain of 100,000; 8 ms by index, where the
/// entries of rows delivered since the last check are visited once).
///
/// Not for statements that join the queue to itself or to large tables (the
/// expired-lease sweep): where Postgres would scan a table whole to hash it, it then
/// walks the whole of an index instead.
///
/// Both settings last for this transaction only. Set in one `SELECT`, not two `SET
/// LOCAL`s: each statement of the batch is parsed, run and ended on its own, and this
/// opens every route, due claim and idle check.
pub const PLAN_ONCE_BY_INDEX: &str =
    "BEGIN; SELECT set_config('plan_cache_mode', 'force_generic_plan', true), \
     set_config('enable_seqscan', 'off', true)";

/// Runs `statement` in a transaction of its own under [`PLAN_ONCE_BY_INDEX`]. One
/// round trip: the three messages are sent together at the first poll, so a timeout
/// after it cannot leave the connection inside the transaction. A failed statement
/// turns the COMMIT into a rollback.
pub async fn query_planned_once(
    client: &tokio_postgres::Client,
    statement: &tokio_postgres::Statement,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<tokio_postgres::Row>, tokio_postgres::Error> {
    query_in_transaction(client, PLAN_ONCE_BY_INDEX, statement, params).await
}

/// [`query_planned_once`] with the transaction opened by `begin` (which starts with
/// [`PLAN_ONCE_BY_INDEX`] and may take locks after it).
pub(crate) async fn query_in_transaction(
    client: &tokio_postgres::Client,
    begin: &str,
    statement: &tokio_postgres::Statement,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<tokio_postgres::Row>, tokio_postgres::Error> {
    // `biased`: polled top to bottom, so the three are queued in this order.
    let (begun, rows, committed) = tokio::join!(
        biased;
        client.batch_execute(begin),
        client.query(statement, params),
        client.batch_execute("COMMIT"),
    );
    begun?;
    let rows = rows?;
    committed?;
    Ok(rows)
}
