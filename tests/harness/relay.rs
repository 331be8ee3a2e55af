//! The real `n8n-relay` binary, started as a child process with a clean environment.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::cluster::free_port;

/// The outgoing signing secret every relay started by the harness uses.
pub const TEST_WEBHOOK_SECRET: &str = "test-outgoing-secret";
/// The callback secret every relay started by the harness uses.
pub const TEST_N8N_SECRET: &str = "test-callback-secret";

/// Path to the `n8n-relay` binary, built from the current sources.
///
/// `cargo test --workspace` builds it already, but `cargo test -p relay-tests` does
/// not, and a stale binary makes failures that mean nothing. So the first call in a
/// test process runs `cargo build` for it (a no-op when it is fresh), in the profile
/// and target directory of the running test. `N8N_RELAY_BIN` skips all that.
pub fn binary() -> PathBuf {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        if let Ok(p) = std::env::var("N8N_RELAY_BIN") {
            return PathBuf::from(p);
        }
        // tests run from target/<profile>/deps/<test>-<hash>; the binary is one level up.
        let exe = std::env::current_exe().expect("current_exe");
        let profile_dir = exe
            .parent()
            .and_then(|p| p.parent())
            .expect("target directory")
            .to_path_buf();
        let bin = profile_dir.join("n8n-relay");
        let release = profile_dir.file_name().is_some_and(|n| n == "release");
        if let Some(target_dir) = profile_dir.parent() {
            let mut cargo = std::process::Command::new(
                std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()),
            );
            cargo
                .args(["build", "--quiet", "-p", "n8n-relay", "--bin", "n8n-relay"])
                .env("CARGO_TARGET_DIR", target_dir)
                .current_dir(env!("CARGO_MANIFEST_DIR"));
            if release {
                cargo.arg("--release");
            }
            match cargo.status() {
                Ok(status) if status.success() => {}
                Ok(status) => panic!("building n8n-relay for the tests failed ({status})"),
                Err(e) => eprintln!(
                    "note: could not run cargo to refresh n8n-relay ({e}); using {}",
                    bin.display()
                ),
            }
        }
        assert!(
            bin.is_file(),
            "{} not found: run the tests with `cargo test --workspace` or set N8N_RELAY_BIN",
            bin.display()
        );
        bin
    })
    .clone()
}

/// Builds the environment for one relay.
#[derive(Debug, Clone)]
pub struct RelayBuilder {
    pub env: BTreeMap<String, String>,
    pub args: Vec<String>,
}

impl RelayBuilder {
    /// A relay against `database_url`, delivering to `sink_url` (the n8n base URL).
    pub fn new(database_url: &str, sink_url: &str) -> RelayBuilder {
        let mut env = BTreeMap::new();
        env.insert("DATABASE_URL".into(), database_url.into());
        env.insert("N8N_BASE_URL".into(), sink_url.into());
        env.insert("N8N_WEBHOOK_BASE_URL".into(), sink_url.into());
        env.insert("WEBHOOK_SECRET".into(), TEST_WEBHOOK_SECRET.into());
        env.insert("N8N_WEBHOOK_SECRET".into(), TEST_N8N_SECRET.into());
        env.insert("WEBHOOK_RETRY_DELAYS".into(), "1,1,1".into());
        env.insert("WEBHOOK_TIMEOUT_SECONDS".into(), "5".into());
        env.insert("RELAY_QUEUE__LEASE_SECONDS".into(), "10".into());
        env.insert("WEBHOOK_QUEUE_PROCESSING_INTERVAL".into(), "1".into());
        env.insert("RELAY_DATABASE__POOL_SIZE".into(), "4".into());
        env.insert(
            "RELAY_CALLBACKS__LISTEN".into(),
            format!("127.0.0.1:{}", free_port()),
        );
        env.insert(
            "RELAY_METRICS__LISTEN".into(),
            format!("127.0.0.1:{}", free_port()),
        );
        env.insert(
            "RELAY_CONSOLE__LISTEN".into(),
            format!("127.0.0.1:{}", free_port()),
        );
        // Endpoint health reports (an extra endpoint_unhealthy event, one delivery at
        // a time to a failing URL) only where a test asks for them: the fault tests
        // count every request a failing sink gets.
        env.insert("RELAY_QUEUE__UNHEALTHY_AFTER".into(), "0".into());
        env.insert("RUST_LOG".into(), "info".into());
        RelayBuilder {
            env,
            args: vec!["run".into()],
        }
    }

    pub fn env(mut self, key: &str, value: impl ToString) -> Self {
        self.env.insert(key.into(), value.to_string());
        self
    }

    pub fn without_env(mut self, key: &str) -> Self {
        self.env.remove(key);
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> Self {
        self.args = args.into_iter().map(Into::into).collect();
        self
    }

    pub fn callbacks_addr(&self) -> String {
        self.env
            .get("RELAY_CALLBACKS__LISTEN")
            .cloned()
            .unwrap_or_default()
    }

    pub fn console_addr(&self) -> String {
        self.env
            .get("RELAY_CONSOLE__LISTEN")
            .cloned()
            .unwrap_or_default()
    }

    pub fn metrics_addr(&self) -> String {
        self.env
            .get("RELAY_METRICS__LISTEN")
            .cloned()
            .unwrap_or_default()
    }

    fn command(&self, workdir: &std::path::Path) -> Command {
        let mut cmd = Command::new(binary());
        cmd.args(&self.args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(&self.env)
            .current_dir(workdir)
            .stdin(Stdio::null());
        cmd
    }

    /// Runs the binary to completion (for CLI subcommands).
    pub async fn output(&self) -> std::process::Output {
        let dir = scratch_dir();
        let out = self
            .command(&dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .await
            .expect("run n8n-relay");
        let _ = std::fs::remove_dir_all(&dir);
        out
    }

    /// Starts the relay in the background. A second relay from the same builder (or
    /// a clone) gets listen ports of its own: the ports are test plumbing, and two
    /// relays on one port would leave the second one dead at start.
    pub fn spawn(&self) -> Relay {
        let builder = self.with_free_listen_ports();
        let held = hold_ports(&builder);
        let dir = scratch_dir();
        let log_path = dir.join("relay.log");
        let log = std::fs::File::create(&log_path).expect("relay log file");
        let log2 = log.try_clone().expect("relay log file");
        let child = builder
            .command(&dir)
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2))
            .kill_on_drop(true)
            .spawn()
            .expect("spawn n8n-relay");
        Relay {
            child: Some(child),
            dir,
            log_path,
            builder,
            held,
        }
    }

    /// This builder, with fresh callback and metrics ports if a running relay of
    /// this test process holds either of its ports.
    fn with_free_listen_ports(&self) -> RelayBuilder {
        let live = LIVE_PORTS.lock().unwrap_or_else(PoisonError::into_inner);
        let taken = LISTEN_KEYS
            .iter()
            .any(|k| self.env.get(*k).is_some_and(|a| live.contains(a)));
        let mut builder = self.clone();
        if taken {
            for key in LISTEN_KEYS {
                builder
                    .env
                    .insert(key.into(), format!("127.0.0.1:{}", free_port()));
            }
        }
        builder
    }
}

const LISTEN_KEYS: [&str; 3] = [
    "RELAY_CALLBACKS__LISTEN",
    "RELAY_METRICS__LISTEN",
    "RELAY_CONSOLE__LISTEN",
];

/// Listen addresses of the relays this test process is running.
static LIVE_PORTS: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

fn hold_ports(builder: &RelayBuilder) -> Vec<String> {
    let held: Vec<String> = LISTEN_KEYS
        .iter()
        .filter_map(|k| builder.env.get(*k).cloned())
        .collect();
    let mut live = LIVE_PORTS.lock().unwrap_or_else(PoisonError::into_inner);
    live.extend(held.iter().cloned());
    held
}

fn release_ports(held: &mut Vec<String>) {
    let mut live = LIVE_PORTS.lock().unwrap_or_else(PoisonError::into_inner);
    for addr in held.drain(..) {
        live.remove(&addr);
    }
}

fn scratch_dir() -> PathBuf {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "n8n-relay-test-{}-{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
    ));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// What /proc says about a relay process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStats {
    pub threads: u64,
    pub rss_kib: u64,
}

/// A running relay process. Killed when dropped.
pub struct Relay {
    child: Option<Child>,
    dir: PathBuf,
    log_path: PathBuf,
    /// The configuration it runs with (listen ports included).
    pub builder: RelayBuilder,
    /// Listen addresses it holds, released when it is stopped.
    held: Vec<String>,
}

impl Relay {
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(|c| c.id())
    }

    /// Everything the relay logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// SIGKILL, no chance to clean up.
    pub async fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
        release_ports(&mut self.held);
    }

    /// SIGTERM, then wait for exit (up to `timeout`); returns the exit code.
    pub async fn terminate(&mut self, timeout: Duration) -> Option<i32> {
        let mut child = self.child.take()?;
        release_ports(&mut self.held);
        if let Some(pid) = child.id() {
            let _ = std::process::Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status();
        }
        match tokio::time::timeout(timeout, child.wait()).await {
            Ok(Ok(status)) => status.code(),
            _ => {
                let _ = child.start_kill();
                let _ = child.wait().await;
                panic!(
                    "relay did not exit within {timeout:?} of SIGTERM\n{}",
                    self.log()
                );
            }
        }
    }

    /// Sends a signal by name (`STOP`, `CONT`, `TERM`, ...) with kill(1).
    pub fn signal(&self, name: &str) {
        let pid = self.pid().expect("the relay is running");
        let status = std::process::Command::new("kill")
            .arg(format!("-{name}"))
            .arg(pid.to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} {pid}");
    }

    /// Threads and resident memory of the relay process, from /proc.
    pub fn proc_stats(&self) -> Option<ProcStats> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        let field = |name: &str| -> Option<u64> {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        };
        Some(ProcStats {
            threads: field("Threads:")?,
            rss_kib: field("VmRSS:")?,
        })
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Starts the same configuration again (after a kill or terminate).
    pub fn restart(&mut self) {
        let again = self.builder.spawn();
        *self = again;
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
        release_ports(&mut self.held);
        if std::thread::panicking() {
            eprintln!(
                "---- relay log ({}) ----\n{}",
                self.log_path.display(),
                self.log()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
