//! Finding a Postgres server for the tests, or starting a private one.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
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

/// The fallback cluster of this test process (when no server was found); stopped when
/// the process exits.
static FALLBACK: OnceLock<std::sync::Mutex<Option<PrivateCluster>>> = OnceLock::new();

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
    let cluster = PrivateCluster::start()?;
    let server = cluster.server();
    let _ = FALLBACK
        .get_or_init(|| std::sync::Mutex::new(None))
        .lock()
        .map(|mut g| *g = Some(cluster));
    Ok(server)
}

const MISSING: &str = "No Postgres for the tests: nothing at DATABASE_URL, nothing listening on \
127.0.0.1:5432, and no initdb/postgres binaries on PATH or under /usr/lib/postgresql/*/bin. \
Install PostgreSQL (e.g. `apt-get install postgresql`), start it \
(`pg_ctlcluster --skip-systemctl-redirect 15 main start`), or set DATABASE_URL.";

/// The role of a [`PrivateCluster::start_with_tls`] cluster that logs in with a
/// client certificate only.
pub const CERT_USER: &str = "relay_cert";
/// The role of a [`PrivateCluster::start_with_tls`] cluster that logs in with a
/// password ([`PASSWORD`], scram-sha-256).
pub const PASSWORD_USER: &str = "relay_pw";
pub const PASSWORD: &str = "pw-only-in-a-file";

/// How [`PrivateCluster::stop`] shuts the server down (`pg_ctl stop -m`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMode {
    /// Disconnects clients, writes a checkpoint: a clean stop.
    Fast,
    /// Like a crash: no checkpoint, recovery on the next start.
    Immediate,
}

/// A Postgres cluster of the test's own, on a free loopback port, for scenarios that
/// stop, restart or fail over the server (never done to the shared one). Runs as the
/// `postgres` user when the tests run as root. Stopped and deleted when dropped.
pub struct PrivateCluster {
    dir: PathBuf,
    data: PathBuf,
    port: u16,
    root: bool,
}

impl PrivateCluster {
    /// `initdb` a new cluster and start it.
    pub fn start() -> Result<PrivateCluster, String> {
        let cluster = PrivateCluster::initialized()?;
        cluster.start_again()?;
        Ok(cluster)
    }

    /// A new cluster, `initdb`-ed and configured, not started.
    fn initialized() -> Result<PrivateCluster, String> {
        let initdb = find_pg_bin("initdb").ok_or(MISSING)?;
        let cluster = PrivateCluster::empty_dir()?;
        let data = cluster.data_s();
        cluster.run(
            &initdb,
            &["-D", &data, "-U", "postgres", "-A", "trust", "--no-sync"],
        )?;
        cluster.configure()?;
        Ok(cluster)
    }

    /// A cluster that accepts TLS connections only (`hostssl` lines alone in
    /// `pg_hba.conf`), presenting `server` and trusting `ca` for client certificates:
    /// `postgres` logs in over TLS without a password, the role `CERT_USER` only with
    /// a client certificate (`cert` authentication).
    pub fn start_with_tls(
        ca: &Path,
        server: &crate::certs::CertFiles,
    ) -> Result<PrivateCluster, String> {
        let cluster = PrivateCluster::initialized()?;
        for (from, to, mode) in [
            (server.cert.as_path(), "server.crt", 0o644),
            (server.key.as_path(), "server.key", 0o600),
            (ca, "root.crt", 0o644),
        ] {
            let dest = cluster.data.join(to);
            std::fs::copy(from, &dest).map_err(|e| format!("copying {}: {e}", from.display()))?;
            std::fs::set_permissions(&dest, std::os::unix::fs::PermissionsExt::from_mode(mode))
                .map_err(|e| format!("chmod {}: {e}", dest.display()))?;
            if cluster.root {
                let status = Command::new("chown")
                    .arg("postgres")
                    .arg(&dest)
                    .status()
                    .map_err(|e| format!("chown: {e}"))?;
                if !status.success() {
                    return Err(format!("could not chown {} to postgres", dest.display()));
                }
            }
        }
        let mut conf = std::fs::OpenOptions::new()
            .append(true)
            .open(cluster.data.join("postgresql.conf"))
            .map_err(|e| format!("postgresql.conf: {e}"))?;
        std::io::Write::write_all(
            &mut conf,
            b"ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\nssl_ca_file = 'root.crt'\n",
        )
        .map_err(|e| format!("postgresql.conf: {e}"))?;
        std::fs::write(
            cluster.data.join("pg_hba.conf"),
            format!(
                "local all all trust\nhostssl all {CERT_USER} 127.0.0.1/32 cert\n\
hostssl all {PASSWORD_USER} 127.0.0.1/32 scram-sha-256\nhostssl all all 127.0.0.1/32 trust\n"
            ),
        )
        .map_err(|e| format!("pg_hba.conf: {e}"))?;
        cluster.start_again()?;
        let psql = find_pg_bin("psql").ok_or(MISSING)?;
        let port = cluster.port.to_string();
        let socket = cluster.dir.to_string_lossy().to_string();
        cluster.run(
            &psql,
            &[
                "-h",
                &socket,
                "-p",
                &port,
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-c",
                &format!(
                    "CREATE ROLE {CERT_USER} LOGIN SUPERUSER; \
                     CREATE ROLE {PASSWORD_USER} LOGIN SUPERUSER PASSWORD '{PASSWORD}'"
                ),
            ],
        )?;
        Ok(cluster)
    }

    /// A streaming replica of this cluster (`pg_basebackup -R`), started on a port of
    /// its own. It follows the primary until [`PrivateCluster::promote`].
    pub fn replica(&self) -> Result<PrivateCluster, String> {
        let basebackup = find_pg_bin("pg_basebackup").ok_or(MISSING)?;
        let replica = PrivateCluster::empty_dir()?;
        let port = self.port.to_string();
        let data = replica.data_s();
        replica.run(
            &basebackup,
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "postgres",
                "-D",
                &data,
                "-R",
                "-X",
                "stream",
                "-c",
                "fast",
                "--no-sync",
            ],
        )?;
        replica.configure()?;
        replica.start_again()?;
        Ok(replica)
    }

    fn empty_dir() -> Result<PrivateCluster, String> {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "n8n-relay-pg-{}-{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let root = is_root();
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
        Ok(PrivateCluster {
            data: dir.join("data"),
            dir,
            port: free_port(),
            root,
        })
    }

    /// Port, socket directory and test settings, appended so they win over what
    /// initdb or a base backup wrote. Prepared transactions are allowed (the shared
    /// server allows none) for the two-phase writers' test.
    fn configure(&self) -> Result<(), String> {
        let settings = format!(
            "\n# n8n-relay test cluster\nport = {}\nlisten_addresses = '127.0.0.1'\n\
unix_socket_directories = '{}'\nfsync = off\nmax_connections = 60\n\
wal_level = replica\nmax_wal_senders = 4\nhot_standby = on\n\
max_prepared_transactions = 4\n",
            self.port,
            self.dir.display()
        );
        let conf = self.data.join("postgresql.conf");
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&conf)
            .map_err(|e| format!("opening {}: {e}", conf.display()))?;
        std::io::Write::write_all(&mut file, settings.as_bytes())
            .map_err(|e| format!("writing {}: {e}", conf.display()))
    }

    fn data_s(&self) -> String {
        self.data.to_string_lossy().to_string()
    }

    fn run(&self, program: &Path, args: &[&str]) -> Result<(), String> {
        let out = as_postgres_user(program, args, self.root)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("running {}: {e}", program.display()))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{} {} failed: {}{}",
                program.display(),
                args.join(" "),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    fn pg_ctl(&self, args: &[&str]) -> Result<(), String> {
        let pg_ctl = find_pg_bin("pg_ctl").ok_or(MISSING)?;
        let data = self.data_s();
        let mut all = vec!["-D", data.as_str()];
        all.extend_from_slice(args);
        self.run(&pg_ctl, &all)
    }

    /// Starts the (stopped) server and waits until it accepts connections.
    pub fn start_again(&self) -> Result<(), String> {
        let log = self.dir.join("postgres.log").to_string_lossy().to_string();
        self.pg_ctl(&["-l", &log, "-w", "-t", "60", "start"])?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if Instant::now() > deadline {
                return Err(format!(
                    "the private Postgres cluster on port {} did not start within 30 s",
                    self.port
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Stops the server (`pg_ctl stop -m fast|immediate`) and waits until it is down.
    pub fn stop(&self, mode: StopMode) -> Result<(), String> {
        let mode = match mode {
            StopMode::Fast => "fast",
            StopMode::Immediate => "immediate",
        };
        self.pg_ctl(&["-m", mode, "-w", "-t", "60", "stop"])
    }

    /// A fast stop and a start on the same port.
    pub fn restart(&self) -> Result<(), String> {
        self.stop(StopMode::Fast)?;
        self.start_again()
    }

    /// Promotes a replica to primary and waits until it accepts writes.
    pub fn promote(&self) -> Result<(), String> {
        self.pg_ctl(&["-w", "-t", "60", "promote"])
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory of its Unix socket (`.s.PGSQL.<port>`).
    pub fn socket_dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// `host:port`, e.g. for a proxy in front of it.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn server(&self) -> Server {
        self.server_with("")
    }

    /// The server with libpq parameters for every URL, e.g.
    /// `sslmode=verify-full&sslrootcert=/tmp/ca.pem`.
    pub fn server_with(&self, params: &str) -> Server {
        let query = if params.is_empty() {
            String::new()
        } else {
            format!("?{params}")
        };
        server_from_url(&format!(
            "postgres://postgres@127.0.0.1:{}/postgres{query}",
            self.port
        ))
    }

    /// The server's log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("postgres.log")).unwrap_or_default()
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        let _ = self.stop(StopMode::Immediate);
        if std::thread::panicking() {
            eprintln!(
                "---- postgres log ({}) ----\n{}",
                self.dir.display(),
                self.log()
            );
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A TCP port nothing listens on right now, for a server a test starts.
///
/// Taken below the kernel's ephemeral range (32768-60999 by default), each port once
/// per test process: a port from that range (what binding port 0 gives) is free only
/// until some outgoing connection takes it as its local port, which once left a relay
/// unable to bind its metrics port in a busy test run.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    // Test processes run one after another, and a restarted one should not retry the
    // ports its predecessor may still hold in TIME_WAIT: start where the pid says.
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::process::id().wrapping_mul(7_919) % SPAN,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..SPAN {
        let port = FIRST + NEXT.fetch_add(1, Ordering::SeqCst) % SPAN;
        let Ok(port) = u16::try_from(port) else {
            continue;
        };
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
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
