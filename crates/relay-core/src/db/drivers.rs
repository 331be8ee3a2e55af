//! The tasks that drive database connections, and how they end.
//!
//! A session whose client goes away without the protocol's Terminate message is one
//! Postgres counts as abandoned and logs ("could not receive data from client:
//! Connection reset by peer"): a line per connection at every relay restart and every
//! CLI command, which a DBA reads as a network fault. A connection sends Terminate
//! once its client is dropped, but only while its task still runs. So every driver
//! runs here, where [`close`] can wait for them before the process exits, and a pooled
//! connection's driver is not aborted with its client (deadpool aborts the task it is
//! handed) but given [`GOODBYE`] to say it.

use std::future::Future;
use std::sync::LazyLock;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::task::TaskTracker;

static DRIVERS: LazyLock<TaskTracker> = LazyLock::new(TaskTracker::new);

/// How long a connection whose client is gone may take to finish what it was asked
/// and say goodbye. A server that does not answer in that time gets the socket closed.
pub const GOODBYE: Duration = Duration::from_secs(5);

/// Runs a connection's driver where [`close`] will wait for it.
pub fn spawn<F>(driver: F) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    DRIVERS.spawn(driver)
}

/// Runs a pooled connection's driver, returning the handle to give the pool. The pool
/// aborts that handle when it drops the client; the driver then has [`GOODBYE`] to
/// send Terminate (which it does once the client is gone) before it is dropped too.
pub fn spawn_pooled<F>(connection: F) -> JoinHandle<()>
where
    F: Future<Output = Result<(), tokio_postgres::Error>> + Send + 'static,
{
    let (held, released) = tokio::sync::oneshot::channel::<()>();
    DRIVERS.spawn(async move {
        let mut connection = std::pin::pin!(connection);
        let ended = tokio::select! {
            ended = &mut connection => ended,
            _ = released => match tokio::time::timeout(GOODBYE, &mut connection).await {
                Ok(ended) => ended,
                Err(_) => return,
            },
        };
        if let Err(e) = ended {
            tracing::debug!(error = %e, "pooled database connection ended");
        }
    });
    tokio::spawn(async move {
        let _held = held;
        std::future::pending::<()>().await
    })
}

/// Waits, at most `limit`, for every connection to end: called once, as the process
/// stops, after its clients and pools are dropped.
pub async fn close(limit: Duration) {
    DRIVERS.close();
    let _ = tokio::time::timeout(limit, DRIVERS.wait()).await;
}
