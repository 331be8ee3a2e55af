//! The benchmark's own database: created fresh on the given server, migrated with the
//! relay's schema, dropped at the end whatever happened in between.

use std::path::Path;

use anyhow::{bail, Context, Result};
use tokio_postgres::Client;

/// A bare copy of `leads`: same columns, defaults and indexes, no triggers. The
/// baseline that the trigger cost is measured against.
const CREATE_LEADS_BARE: &str = "CREATE TABLE leads_bare (LIKE leads INCLUDING ALL)";

/// The smallest table a single-row commit can go into: Postgres's own ceiling.
const CREATE_COMMIT_PROBE: &str = "CREATE TABLE bench_commit (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    v  integer NOT NULL
)";

pub struct BenchDb {
    pub name: String,
    /// The server's URL as given (its maintenance database).
    server_url: String,
    /// The benchmark database's URL.
    pub url: String,
}

/// `url` with its database replaced by `name`. libpq URLs and key=value strings both
/// take a later `dbname` over an earlier one, so appending it is enough.
fn with_dbname(url: &str, name: &str) -> String {
    if url.contains("://") {
        let sep = if url.contains('?') { '&' } else { '?' };
        format!("{url}{sep}dbname={name}")
    } else {
        format!("{url} dbname={name}")
    }
}

/// What the benchmark's own sessions are called in `pg_stat_activity`. Not starting
/// with `n8n-relay`: that prefix is how `crate::profile` finds the relay's sessions,
/// and until 2026-12-06 this name had it, so the drain counted as the relay's work the
/// session that had queued the backlog through the triggers (bench README, "Fifth
/// round").
const APPLICATION_NAME: &str = "bench";

/// A connection with the relay's own connector, so a URL asking for TLS
/// (`sslmode`, `sslrootcert`, ...) means what it means to the relay.
pub async fn connect(url: &str) -> Result<Client> {
    let mut database = relay_core::Config::default().database;
    database.url = relay_core::Secret::new(url);
    // Seeding a backlog or vacuuming it is one long statement.
    database.statement_timeout_seconds = 3600;
    let connector = relay_core::db::Connector::new(&database, APPLICATION_NAME)
        .with_context(|| format!("connecting to Postgres ({})", redact(url)))?;
    let (client, conn) = connector
        .connect()
        .await
        .with_context(|| format!("connecting to Postgres ({})", redact(url)))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// The URL without a password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(s), Some(at)) if at > s => {
            let userinfo = &url[s + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// `BINARY migrate --example-tables` on `url`, set up as the relay under test is.
async fn migrate_with(binary: &Path, url: &str) -> Result<()> {
    let out = crate::relay::command(binary, &std::env::temp_dir())
        .args(["migrate", "--example-tables"])
        .env("DATABASE_URL", url)
        .output()
        .await
        .with_context(|| format!("running {} migrate", binary.display()))?;
    if !out.status.success() {
        bail!(
            "{} migrate --example-tables failed ({}): {}",
            binary.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

impl BenchDb {
    /// Creates `bench_<pid>` and applies the relay's schema with the example tables:
    /// this bench's own, or with `migrated_by`, that relay binary's (`n8n-relay migrate
    /// --example-tables`), so that a build measured beside this one runs on its schema.
    pub async fn create(server_url: &str, migrated_by: Option<&Path>) -> Result<BenchDb> {
        let name = format!("bench_{}", std::process::id());
        let admin = connect(server_url).await?;
        admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .await
            .with_context(|| format!("dropping a leftover {name}"))?;
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .with_context(|| format!("CREATE DATABASE {name}"))?;
        let db = BenchDb {
            url: with_dbname(server_url, &name),
            name,
            server_url: server_url.to_string(),
        };
        if let Err(e) = db.prepare(migrated_by).await {
            db.drop_database().await;
            return Err(e);
        }
        Ok(db)
    }

    async fn prepare(&self, migrated_by: Option<&Path>) -> Result<()> {
        let mut client = connect(&self.url).await?;
        match migrated_by {
            None => {
                relay_core::schema::migrate(&mut client, true)
                    .await
                    .context("applying the relay's schema")?;
            }
            Some(binary) => migrate_with(binary, &self.url).await?,
        }
        client
            .batch_execute(&format!("{CREATE_LEADS_BARE}; {CREATE_COMMIT_PROBE}"))
            .await
            .context("creating the baseline tables")?;
        Ok(())
    }

    pub async fn client(&self) -> Result<Client> {
        connect(&self.url).await
    }

    /// Drops the database, disconnecting anyone still on it. Best effort: it reports
    /// a failure on stderr rather than hiding the benchmark's own result.
    pub async fn drop_database(&self) {
        let result = async {
            let admin = connect(&self.server_url).await?;
            admin
                .batch_execute(&format!(
                    "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                    self.name
                ))
                .await?;
            anyhow::Ok(())
        }
        .await;
        if let Err(e) = result {
            eprintln!(
                "warning: could not drop database {}: {e:#}; drop it by hand",
                self.name
            );
        }
    }
}

/// One server setting, as `SHOW` prints it.
pub async fn setting(client: &Client, name: &str) -> Result<String> {
    let row = client
        .query_one("SELECT current_setting($1)", &[&name])
        .await?;
    Ok(row.get(0))
}

/// Postgres's `server_version`, e.g. "15.20 (Debian 15.20-0+deb12u1)".
pub async fn server_version(client: &Client) -> Result<String> {
    let row = client.query_one("SHOW server_version", &[]).await?;
    Ok(row.get(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dbname_is_appended_to_urls_and_key_value_strings() {
        assert_eq!(
            with_dbname("postgres://u@h:5432/postgres", "b"),
            "postgres://u@h:5432/postgres?dbname=b"
        );
        assert_eq!(
            with_dbname("postgres://u@h/postgres?sslmode=disable", "b"),
            "postgres://u@h/postgres?sslmode=disable&dbname=b"
        );
        assert_eq!(
            with_dbname("host=h user=u dbname=postgres", "b"),
            "host=h user=u dbname=postgres dbname=b"
        );
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
    }
}
