//! Connections: one pool for queries, and a [`Connector`] for the dedicated LISTEN
//! connection (pooled connections cannot LISTEN reliably) and the CLI. Both speak
//! TLS as libpq's settings say ([`tls`]) and find passwords in files ([`pgpass`]).

use std::time::Duration;

use deadpool_postgres::{
    Hook, HookError, Manager, ManagerConfig, Pool, RecyclingMethod, Runtime, Timeouts,
};
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::Socket;
use tokio_postgres_rustls::MakeRustlsConnect;

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

pub mod drivers;
pub mod marker;
pub mod pgpass;
pub mod tls;

pub use marker::Marker;
pub use tls::{SslMode, TlsSettings};

/// The stream of a connection made by a [`Connector`].
pub type PgStream = <MakeRustlsConnect as MakeTlsConnect<Socket>>::Stream;
/// A connection made by a [`Connector`], for the caller to drive.
pub type PgConnection = tokio_postgres::Connection<Socket, PgStream>;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database.url: {0}")]
    BadUrl(String),
    /// Settings that cannot work, found before or while connecting: TLS refused or
    /// a certificate that fails a check, a CA, key or password file that cannot be
    /// used. A configuration error (exit 2), never retried into a silent fallback.
    #[error("{0}")]
    Setup(String),
    #[error("could not build the connection pool: {0}")]
    Pool(String),
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("database error: {}", describe_pg(.0))]
    Query(#[from] tokio_postgres::Error),
}

/// tokio-postgres prints only "db error"; the server's message is what an operator
/// needs. Server messages never carry our secrets (they are not sent as SQL text), and
/// the DETAIL that may quote a row is left out.
pub fn describe_pg(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut text = format!("{}: {} ({})", db.severity(), db.message(), db.code().code());
            // What the server says to do about it (the install scripts' refusals), on
            // the same line. Not a DETAIL: it may quote a row ("Failing row contains
            // ..."), payloads and URLs with credentials among them.
            if let Some(hint) = db.hint() {
                text.push_str(&format!("; hint: {hint}"));
            }
            text
        }
        None => describe_chain(e),
    }
}

/// A pool's failure to hand out a connection: for one it could not open, what the
/// server or the network said.
pub fn describe_pool(e: &deadpool_postgres::PoolError) -> String {
    match e {
        deadpool_postgres::PoolError::Backend(e) => {
            format!("could not open a connection: {}", describe_pg(e))
        }
        other => describe_chain(other),
    }
}

/// An error and its sources on one line, each said once (tokio-postgres's errors
/// repeat their source in their own text), without "db error", tokio-postgres's own
/// word for an error the server sent, whose message a link before it
/// ([`describe_pg`]) or after it says.
pub fn describe_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let said = s.to_string();
        // A server error's own text ("ERROR: ...\nHINT: ...") is said by describe_pg
        // already, in other words: its first line is enough to know it.
        let first_line = said.lines().next().unwrap_or_default();
        if !text.contains(first_line) && said != "db error" {
            text.push_str(": ");
            text.push_str(&said);
        }
        source = s.source();
    }
    text
}

impl From<deadpool_postgres::PoolError> for DbError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        DbError::Unavailable(e.to_string())
    }
}

/// Whether this session is encrypted (readable by any role).
const SESSION_ENCRYPTED: &str = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()";

/// libpq's environment variables for where and how to connect. tokio-postgres reads
/// none of them; a deployment that set `PGSSLMODE=verify-full` for the older backend
/// would connect with this relay's default (`prefer`) without a word.
const LIBPQ_VARIABLES: &[&str] = &[
    "PGHOST",
    "PGHOSTADDR",
    "PGPORT",
    "PGDATABASE",
    "PGUSER",
    "PGPASSWORD",
    "PGPASSFILE",
    "PGSSLMODE",
    "PGSSLROOTCERT",
    "PGSSLCERT",
    "PGSSLKEY",
    "PGSSLCRL",
    "PGTARGETSESSIONATTRS",
    "PGCONNECT_TIMEOUT",
];

/// The libpq variables set in this process's environment, which the relay does not
/// read (`run` warns about them at start).
pub fn libpq_variables_set() -> Vec<&'static str> {
    LIBPQ_VARIABLES
        .iter()
        .copied()
        .filter(|name| std::env::var_os(name).is_some())
        .collect()
}

/// Everything needed to open connections to the configured database: the
/// tokio-postgres config with the relay's settings and the TLS connector libpq's
/// parameters call for. Built once; every connection the relay makes (pool, LISTEN,
/// CLI, bench) goes through one.
#[derive(Clone)]
pub struct Connector {
    config: tokio_postgres::Config,
    tls: MakeRustlsConnect,
    settings: TlsSettings,
    /// How long [`Connector::connect`] may take in all: `connect_timeout` bounds the
    /// TCP connect only, and a server (or a proxy in front of it) that accepts and
    /// then never answers the start-up would hold a connect for good; the statement
    /// timeout is added for that.
    limit: Duration,
}

impl Connector {
    /// Reads every TLS and password file now, so a bad one fails here, naming it.
    pub fn new(db: &DatabaseConfig, application: &str) -> Result<Connector, DbError> {
        let split = tls::split_url(db.url.expose());
        let settings = tls::settings(&split, db)?;
        let mut config = pg_config(&split.rest, db, application)?;
        config.ssl_mode(settings.mode.wire());
        // `hostaddr` without `host`: libpq connects; tokio-postgres has no name for the
        // TLS handshake and fails every attempt against a server that offers TLS. The
        // address stands for the name, as libpq does for everything but verify-full,
        // which it refuses without a host name to check; so does this.
        if config.get_hosts().is_empty() && !config.get_hostaddrs().is_empty() {
            if settings.mode == SslMode::VerifyFull {
                return Err(DbError::Setup(
                    "database.url: sslmode=verify-full checks the server's certificate against \
                     the host name, and the URL gives only hostaddr: add host=NAME (the \
                     name the certificate carries; hostaddr still says where to connect)"
                        .into(),
                ));
            }
            for addr in config.get_hostaddrs().to_vec() {
                config.host(addr.to_string());
            }
        }
        if config.get_password().is_none() {
            if let Some(password) = password(&split, db, &config)? {
                config.password(password);
            }
        } else if !db.password.is_empty() {
            return Err(DbError::Setup(
                "database.password_file: database.url carries a password too; keep one of them"
                    .into(),
            ));
        }
        let tls = MakeRustlsConnect::new(tls::client_config(&settings)?);
        Ok(Connector {
            config,
            tls,
            settings,
            limit: Duration::from_secs(
                db.connect_timeout_seconds
                    .saturating_add(db.statement_timeout_seconds),
            ),
        })
    }

    /// One connection; a TLS refusal comes back as [`DbError::Setup`] saying which
    /// check failed.
    pub async fn connect(&self) -> Result<(tokio_postgres::Client, PgConnection), DbError> {
        match tokio::time::timeout(self.limit, self.config.connect(self.tls.clone())).await {
            Ok(connected) => connected.map_err(|e| self.explain(e)),
            Err(_) => Err(DbError::Unavailable(format!(
                "no answer within {:?} (database.connect_timeout_seconds bounds the TCP \
                 connect; a server or proxy that accepts it and then says nothing is given \
                 the statement timeout more)",
                self.limit
            ))),
        }
    }

    /// Connects once and says how: for a start-up check. Under `sslmode=prefer` a
    /// server without TLS is reached in plaintext, as libpq does; this says so once,
    /// at info level. So too when `prefer` met a server on this machine that offers
    /// TLS (Debian's default): there the encryption is a cost an operator may not know
    /// they chose.
    pub async fn check(&self) -> Result<(), DbError> {
        let (client, connection) = self.connect().await?;
        let driver = drivers::spawn(connection);
        let row = tokio::time::timeout(self.limit, client.query_opt(SESSION_ENCRYPTED, &[])).await;
        drop(client);
        let row = match row {
            Ok(row) => {
                let _ = driver.await;
                row?
            }
            Err(_) => {
                driver.abort();
                return Err(DbError::Unavailable(format!(
                    "no answer to a query within {:?}",
                    self.limit
                )));
            }
        };
        let encrypted = row.map(|r| r.get::<_, bool>(0)).unwrap_or(false);
        match (encrypted, self.settings.mode) {
            (false, SslMode::Prefer) if tls::sockets_only(&self.config) => {
                tracing::debug!("connected to Postgres over its Unix socket (no TLS there)")
            }
            (false, SslMode::Prefer) => tracing::info!(
                "connected to Postgres without TLS: the server does not offer it (sslmode=prefer); \
                 set sslmode=require or stricter to insist on encryption"
            ),
            (true, SslMode::Prefer) if tls::on_this_host(&self.config) => tracing::info!(
                "connected to Postgres on this host over TLS (sslmode=prefer); on loopback, \
                 sslmode=disable or a Unix socket spares Postgres that work (README: a \
                 Postgres on the same host; sslmode=require keeps TLS without this note)"
            ),
            (true, _) => {
                tracing::debug!(tls = %self.settings.describe(), "connected to Postgres over TLS")
            }
            (false, _) => tracing::debug!("connected to Postgres without TLS (sslmode=disable)"),
        }
        Ok(())
    }

    /// The TLS settings in force, as `sslmode=..., sslrootcert=...`.
    pub fn tls(&self) -> &TlsSettings {
        &self.settings
    }

    fn explain(&self, e: tokio_postgres::Error) -> DbError {
        let host = self
            .config
            .get_hosts()
            .first()
            .map(|h| match h {
                tokio_postgres::config::Host::Tcp(name) => name.clone(),
                #[cfg(unix)]
                tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
            })
            .unwrap_or_default();
        match tls::explain(&e, &self.settings, &host) {
            Some(message) => DbError::Setup(message),
            None => DbError::Query(e),
        }
    }
}

/// The password from `database.password_file` (read at load), else from a libpq
/// password file (`passfile` in the URL or `database.passfile`).
fn password(
    split: &tls::SplitUrl,
    db: &DatabaseConfig,
    config: &tokio_postgres::Config,
) -> Result<Option<String>, DbError> {
    if !db.password.is_empty() {
        return Ok(Some(db.password.expose().to_string()));
    }
    let (key, passfile) = match (split.get("passfile"), db.passfile.as_str()) {
        (Some(url), _) if !url.is_empty() => ("database.url passfile", url),
        (_, key) if !key.is_empty() => ("database.passfile", key),
        _ => return Ok(None),
    };
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(name)) => name.clone(),
        _ => "localhost".to_string(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let user = config.get_user().unwrap_or_default();
    let database = config.get_dbname().unwrap_or(user);
    pgpass::lookup(
        key,
        std::path::Path::new(passfile),
        &host,
        port,
        database,
        user,
    )
}

/// A tokio-postgres config with the relay's settings: connect timeout, TCP
/// keepalives (so a silently dead link is noticed), a statement timeout on every
/// query, no JIT, and an application name that shows up in `pg_stat_activity`.
fn pg_config(
    url: &str,
    db: &DatabaseConfig,
    application: &str,
) -> Result<tokio_postgres::Config, DbError> {
    let mut config: tokio_postgres::Config = url
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
    //
    // The server's keepalives too: a relay whose host dies (no FIN) leaves backends
    // that hold its liveness marker until the server notices, and its rows wait for
    // that (crate::db::Marker); with these that is about 25 s, not the OS's two hours.
    const SERVER: &str = "-c jit=off -c tcp_keepalives_idle=10 -c tcp_keepalives_interval=5 \
        -c tcp_keepalives_count=3 -c tcp_user_timeout=30000";
    let options = match config.get_options() {
        Some(existing) => format!("{SERVER} {existing} -c statement_timeout={timeout_ms}"),
        None => format!("{SERVER} -c statement_timeout={timeout_ms}"),
    };
    config.options(options);
    Ok(config)
}

/// How a pool opens each connection: with the TLS files (CA, client certificate and
/// key) and the libpq passfile read again, as the LISTEN connection does, so a
/// certificate or password rotated while the relay runs reaches the pool's next
/// connections too (they kept the files read at start, and after a restart of
/// Postgres that had taken the new ones no pooled connection could log in). A file
/// that cannot be read at that moment (a rotation half done) leaves the last good
/// reading in use, with a warning.
type PooledConnect =
    Result<(tokio_postgres::Client, tokio::task::JoinHandle<()>), tokio_postgres::Error>;

struct ReadAgain {
    db: DatabaseConfig,
    application: String,
    last: std::sync::Mutex<Connector>,
}

impl deadpool_postgres::Connect for ReadAgain {
    fn connect(
        &self,
        _pg_config: &tokio_postgres::Config,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = PooledConnect> + Send + '_>> {
        let fresh = Connector::new(&self.db, &self.application);
        let connector = {
            let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
            match fresh {
                Ok(fresh) => *last = fresh,
                Err(e) => tracing::warn!(
                    error = %e,
                    "could not read the database's TLS or password files again; connecting \
                     with those read before"
                ),
            }
            last.clone()
        };
        Box::pin(async move {
            let (client, connection) = connector.config.connect(connector.tls).await?;
            Ok((client, drivers::spawn_pooled(connection)))
        })
    }
}

/// The query pool. Waiting for a connection and creating one are both bounded, so a
/// down database is an error after a few seconds, never a hang.
pub fn pool(db: &DatabaseConfig, application: &str) -> Result<Pool, DbError> {
    pool_sized(db, application, db.pool_size)
}

pub fn pool_sized(db: &DatabaseConfig, application: &str, size: usize) -> Result<Pool, DbError> {
    build_pool(db, application, size, None)
}

/// The pool of a relay process: every connection it opens holds the relay's
/// [`Marker`] for as long as it lives.
pub fn relay_pool(db: &DatabaseConfig, application: &str, marker: Marker) -> Result<Pool, DbError> {
    build_pool(db, application, db.pool_size, Some(marker))
}

fn build_pool(
    db: &DatabaseConfig,
    application: &str,
    size: usize,
    marker: Option<Marker>,
) -> Result<Pool, DbError> {
    let connector = Connector::new(db, application)?;
    let manager = Manager::from_connect(
        connector.config.clone(),
        ReadAgain {
            db: db.clone(),
            application: application.to_string(),
            last: std::sync::Mutex::new(connector),
        },
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    let connect = Duration::from_secs(db.connect_timeout_seconds);
    let mut builder = Pool::builder(manager);
    if let Some(marker) = marker {
        builder = builder.post_create(Hook::async_fn(move |client, _| {
            Box::pin(async move {
                match tokio::time::timeout(connect, marker.hold(client)).await {
                    Ok(Ok(true)) => Ok(()),
                    Ok(Ok(false)) => {
                        tracing::warn!(%marker, "could not take this relay's marker lock; \
                            its rows fall back to the lease if it dies");
                        Ok(())
                    }
                    Ok(Err(e)) => Err(HookError::Backend(e)),
                    Err(_) => Err(HookError::message("taking the relay's marker timed out")),
                }
            })
        }));
    }
    builder
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
