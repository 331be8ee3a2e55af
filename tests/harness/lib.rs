//! The end-to-end harness: a real Postgres (a fresh database per test), a recording
//! HTTP sink that stands in for n8n (a real hyper server on loopback), and the real
//! `n8n-relay` binary.
//!
//! Postgres is found in this order: `DATABASE_URL` (any database on the server; the
//! harness creates its own next to it), a server on 127.0.0.1:5432 as user postgres,
//! else a private cluster started from `initdb`/`postgres` on PATH or under
//! `/usr/lib/postgresql/*/bin` (as the postgres user when running as root). When none
//! of these works the test fails and says what to install.

pub mod certs;
pub mod cluster;
pub mod db;
pub mod load;
pub mod proxy;
pub mod relay;
pub mod sink;

pub use cluster::{PrivateCluster, StopMode};
pub use db::TestDb;
pub use load::{WriterPlan, Writers};
pub use relay::{ProcStats, Relay, RelayBuilder};
pub use sink::{Reply, Sink, SinkRequest};

use std::time::{Duration, Instant};

/// Polls `check` until it returns `Some`, or panics with `what` after `timeout`.
/// The way to wait for a condition: never a fixed sleep.
pub async fn wait_until<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(5);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}
