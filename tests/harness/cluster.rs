//! Finding a Postgres server for the tests, or starting a private one.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// A server the tests may create databases on: a libpq URL to its `postgres` database.
#[derive(Debug, Clone)]
pub struct Server {
    /// URL of the maintenance database (used to CREATE/DROP test databases).
    pub admin_url: String,
    /// Base without the database name: `postgres://user@host:port`.
    pub base: String,
    /// Query string to keep (e.g. `?host=/tmp/...`), including the `?`, or empty.
    pub query: String,
}

impl Server {
    /// The URL of database `name` on this server.
    pub fn url_for(&self, name: &str) -> String {
        format!("{}/{}{}", self.base, name, self.query)
    }
}

static SERVER: OnceLock<Server> = OnceLock::new();

/// The server for this test process (found once).
pub fn server() -> &'static Server {
    SERVER.get_or_init(|| match find_server() {
        Ok(server) => server,
        Err(message) => panic!("{message}"),
    })
}

fn find_server() -> Result<Server, String> {
    if let Ok(url) = std::env::var("DATABASE_URL") {
        if !url.trim().is_empty() {
            return Ok(server_from_url(&url));
        }
    }
    if TcpStream::connect_timeout(
        &"127.0.0.1:5432".parse().map_err(|_| "addr")?,
        Duration::from_secs(2),
    )
    .is_ok()
    {
        return Ok(server_from_url(
            "postgres://postgres@127.0.0.1:5432/postgres",
        ));
    }
    start_private_cluster()
}

fn server_from_url(url: &str) -> Server {
    // postgres://user@host:port/db?params -> base, db, query
    let (without_query, query) = match url.split_once('?') {
        Some((a, q)) => (a.to_string(), format!("?{q}")),
        None => (url.to_string(), String::new()),
    };
    let scheme_end = without_query.find("://").map(|i| i + 3).unwrap_or(0);
    let base = match without_query[scheme_end..].find('/') {
        Some(slash) => without_query[..scheme_end + slash].to_string(),
        None => without_query.clone(),
    };
    Server {
        admin_url: format!("{base}/postgres{query}"),
        base,
        query,
    }
}

fn find_pg_bin(name: &str) -> Option<PathBuf> {
    if let Ok(path) = std::env::var("PATH") {
        for dir in std::env::split_paths(&path) {
            let p = dir.join(name);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin").join(name)))
        .filter(|p| p.is_file())
        .collect();
    versions.sort();
    versions.pop()
}

/// The private cluster's postmaster; stopped when the test process exits.
struct Private {
    _child: Child,
}

static PRIVATE: OnceLock<std::sync::Mutex<Option<Private>>> = OnceLock::new();

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn as_postgres_user(program: &Path, args: &[&str], root: bool) -> Command {
    if root {
        let mut c = Command::new("runuser");
        c.arg("-u")
            .arg("postgres")
            .arg("--")
            .arg(program)
            .args(args);
        c
    } else {
        let mut c = Command::new(program);
        c.args(args);
        c
    }
}

fn start_private_cluster() -> Result<Server, String> {
    let help = "No Postgres for the tests: nothing at DATABASE_URL, nothing listening on \
127.0.0.1:5432, and no initdb/postgres binaries on PATH or under /usr/lib/postgresql/*/bin. \
Install PostgreSQL (e.g. `apt-get install postgresql`), start it \
(`pg_ctlcluster --skip-systemctl-redirect 15 main start`), or set DATABASE_URL.";
    let initdb = find_pg_bin("initdb").ok_or(help)?;
    let postgres = find_pg_bin("postgres").ok_or(help)?;
    let root = is_root();
    let dir = std::env::temp_dir().join(format!("n8n-relay-pg-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    if root {
        let status = Command::new("chown")
            .arg("-R")
            .arg("postgres")
            .arg(&dir)
            .status()
            .map_err(|e| format!("chown: {e}"))?;
        if !status.success() {
            return Err(format!(
                "could not chown {} to postgres (is there a postgres user?)",
                dir.display()
            ));
        }
    }
    let data = dir.join("data");
    let data_s = data.to_string_lossy().to_string();
    let out = as_postgres_user(
        &initdb,
        &["-D", &data_s, "-U", "postgres", "-A", "trust", "--no-sync"],
        root,
    )
    .stdout(Stdio::null())
    .output()
    .map_err(|e| format!("running initdb: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let port = free_port();
    let port_s = port.to_string();
    let sock = dir.to_string_lossy().to_string();
    let child = as_postgres_user(
        &postgres,
        &[
            "-D",
            &data_s,
            "-p",
            &port_s,
            "-k",
            &sock,
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "fsync=off",
            "-c",
            "max_connections=200",
        ],
        root,
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .map_err(|e| format!("starting postgres: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            return Err("the private Postgres cluster did not start within 30 s".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = PRIVATE
        .get_or_init(|| std::sync::Mutex::new(None))
        .lock()
        .map(|mut g| *g = Some(Private { _child: child }));
    Ok(server_from_url(&format!(
        "postgres://postgres@127.0.0.1:{port}/postgres"
    )))
}

/// A TCP port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_urls_into_server_and_database() {
        let s = server_from_url("postgres://u:p@h:5433/app?sslmode=disable");
        assert_eq!(s.base, "postgres://u:p@h:5433");
        assert_eq!(s.url_for("x"), "postgres://u:p@h:5433/x?sslmode=disable");
        assert_eq!(
            s.admin_url,
            "postgres://u:p@h:5433/postgres?sslmode=disable"
        );
    }
}
