//! Connections: one pool for queries, and a plain connection config for the
//! dedicated LISTEN connection (pooled connections cannot LISTEN reliably).

use std::time::Duration;

use deadpool_postgres::{
    Hook, HookError, Manager, ManagerConfig, Pool, RecyclingMethod, Runtime, Timeouts,
};
use tokio_postgres::NoTls;

use crate::config::DatabaseConfig;

/// The channel `webhook_emit` notifies on.
pub const NOTIFY_CHANNEL: &str = "n8n_relay";

/// TCP keepalives only prove the nearest peer is alive. Through a local proxy or
/// sidecar (pgbouncer, a cloud SQL proxy, a NAT that dropped its entry) a link can be
/// dead upstream while the socket looks healthy, and nothing ever arrives on it. So
/// the LISTEN connection asks the server for an answer this often, and gives up on
/// it after `database.connect_timeout_seconds` of silence.
pub const LIVENESS_INTERVAL: Duration = Duration::from_secs(10);

/// A pooled connection unused for longer than this is asked for an answer before it
/// is handed out (within `database.connect_timeout_seconds`, or it is dropped and
/// replaced). A query that hung past its bound leaves its connection in the pool,
/// so without this a silently dead link would be handed out again and again.
pub const POOL_CHECK_AFTER_IDLE: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database.url: {0}")]
    BadUrl(String),
    #[error("could not build the connection pool: {0}")]
    Pool(String),
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("database error: {0}")]
    Query(#[from] tokio_postgres::Error),
}

impl From<deadpool_postgres::PoolError> for DbError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        DbError::Unavailable(e.to_string())
    }
}

/// A tokio-postgres config with the relay's settings: connect timeout, TCP
/// keepalives (so a silently dead link is noticed), a statement timeout on every
/// query, no JIT, and an application name that shows up in `pg_stat_activity`.
pub fn pg_config(
    db: &DatabaseConfig,
    application: &str,
) -> Result<tokio_postgres::Config, DbError> {
    let mut config: tokio_postgres::Config = db
        .url
        .expose()
        .parse()
        .map_err(|e: tokio_postgres::Error| DbError::BadUrl(e.to_string()))?;
    if config.get_application_name().is_none() {
        config.application_name(application);
    }
    config
        .connect_timeout(Duration::from_secs(db.connect_timeout_seconds))
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(10))
        .keepalives_interval(Duration::from_secs(5))
        .keepalives_retries(3)
        .tcp_user_timeout(Duration::from_secs(30));
    let timeout_ms = db.statement_timeout_seconds.saturating_mul(1000);
    // jit off: the relay's statements are short, and a planner estimate inflated by a
    // backlog (or stale statistics) otherwise makes Postgres JIT-compile them, which
    // took 250 ms of a 1 ms claim when measured. A URL's own `options` may turn it
    // back on; the statement timeout is the configured one.
    let options = match config.get_options() {
        Some(existing) => format!("-c jit=off {existing} -c statement_timeout={timeout_ms}"),
        None => format!("-c jit=off -c statement_timeout={timeout_ms}"),
    };
    config.options(options);
    Ok(config)
}

/// The query pool. Waiting for a connection and creating one are both bounded, so a
/// down database is an error after a few seconds, never a hang.
pub fn pool(db: &DatabaseConfig, application: &str) -> Result<Pool, DbError> {
    pool_sized(db, application, db.pool_size)
}

pub fn pool_sized(db: &DatabaseConfig, application: &str, size: usize) -> Result<Pool, DbError> {
    let config = pg_config(db, application)?;
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    let connect = Duration::from_secs(db.connect_timeout_seconds);
    Pool::builder(manager)
        .pre_recycle(Hook::async_fn(move |client, metrics| {
            let idle = metrics.last_used();
            Box::pin(async move {
                if idle < POOL_CHECK_AFTER_IDLE {
                    return Ok(());
                }
                match tokio::time::timeout(connect, client.simple_query("")).await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(e)) => Err(HookError::Backend(e)),
                    Err(_) => Err(HookError::message(
                        "pooled connection did not answer a liveness check",
                    )),
                }
            })
        }))
        .max_size(size.max(1))
        .runtime(Runtime::Tokio1)
        .timeouts(Timeouts {
            wait: Some(connect),
            create: Some(connect),
            recycle: Some(connect),
        })
        .build()
        .map_err(|e| DbError::Pool(e.to_string()))
}
