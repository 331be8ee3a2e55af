//! The relay under test: the real `n8n-relay run` binary as a child process, with a
//! clean environment like the end-to-end test harness gives it, and its footprint read
//! from /proc.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokio::process::{Child, Command};

/// Deliveries in flight to one URL: the relay's defaults (`queue.workers` 32,
/// `queue.max_per_endpoint` 16). Every benchmark event goes to one URL, so the
/// smaller one is the relay's concurrency, and the sink's ceiling is measured at it.
pub const WORKERS: usize = 32;
pub const MAX_PER_ENDPOINT: usize = 16;
pub const CONCURRENCY: usize = if WORKERS < MAX_PER_ENDPOINT {
    WORKERS
} else {
    MAX_PER_ENDPOINT
};

/// `n8n-relay` next to this binary (the same cargo target directory and profile).
pub fn default_binary() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the bench binary")?;
    let dir = exe.parent().context("the bench binary's directory")?;
    let bin = dir.join("n8n-relay");
    if !bin.is_file() {
        bail!(
            "{} not found: build it in the same profile first (`cargo build --bin n8n-relay`, \
             with --release for a release bench) or pass --relay-bin",
            bin.display()
        );
    }
    Ok(bin)
}

/// `binary` with nothing of this process's environment but PATH, in `dir`, with no
/// stdin: a `config/relay.toml` or `.env` where the bench was started must not reach
/// the relay, as the test harness gives it none either.
pub fn command(binary: &Path, dir: &Path) -> Command {
    let mut command = Command::new(binary);
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .current_dir(dir)
        .stdin(Stdio::null());
    command
}

fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

pub struct RelaySpec {
    /// Leave the working directory (and the relay's log in it) behind.
    pub keep_log: bool,
    pub binary: PathBuf,
    pub env: BTreeMap<String, String>,
    pub workdir: PathBuf,
}

impl RelaySpec {
    pub fn new(binary: PathBuf, database_url: &str, sink_url: &str) -> Result<RelaySpec> {
        let workdir = std::env::temp_dir().join(format!("n8n-relay-bench-{}", std::process::id()));
        std::fs::create_dir_all(&workdir)
            .with_context(|| format!("creating {}", workdir.display()))?;
        let mut env = BTreeMap::new();
        let mut set = |k: &str, v: String| {
            env.insert(k.to_string(), v);
        };
        set("DATABASE_URL", database_url.into());
        set("N8N_BASE_URL", sink_url.into());
        set("N8N_WEBHOOK_BASE_URL", sink_url.into());
        set("WEBHOOK_SECRET", "bench-outgoing-secret".into());
        set("N8N_WEBHOOK_SECRET", "bench-callback-secret".into());
        set("WEBHOOK_TIMEOUT_SECONDS", "5".into());
        set("RELAY_QUEUE__LEASE_SECONDS", "10".into());
        set("RELAY_QUEUE__WORKERS", WORKERS.to_string());
        set(
            "RELAY_QUEUE__MAX_PER_ENDPOINT",
            MAX_PER_ENDPOINT.to_string(),
        );
        set("RELAY_DATABASE__POOL_SIZE", "4".into());
        set(
            "RELAY_CALLBACKS__LISTEN",
            format!("127.0.0.1:{}", free_port()?),
        );
        set(
            "RELAY_METRICS__LISTEN",
            format!("127.0.0.1:{}", free_port()?),
        );
        // On loopback without a token: no login (scenario 8 times its pages).
        set(
            "RELAY_CONSOLE__LISTEN",
            format!("127.0.0.1:{}", free_port()?),
        );
        set("RUST_LOG", "warn".into());
        Ok(RelaySpec {
            keep_log: false,
            binary,
            env,
            workdir,
        })
    }

    pub fn spawn(&self) -> Result<Relay> {
        let log_path = self.workdir.join("relay.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("opening {}", log_path.display()))?;
        let child = command(&self.binary, &self.workdir)
            .arg("run")
            .envs(&self.env)
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {} run", self.binary.display()))?;
        let pid = child.id().context("the relay exited at once")?;
        Ok(Relay {
            child,
            pid,
            log_path,
        })
    }
}

impl Drop for RelaySpec {
    fn drop(&mut self) {
        if self.keep_log {
            eprintln!(
                "bench: the relay's log is in {}",
                self.workdir.join("relay.log").display()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.workdir);
        }
    }
}

pub struct Relay {
    child: Child,
    pub pid: u32,
    log_path: PathBuf,
}

impl Relay {
    /// An error if the process has exited, with the end of its log.
    pub fn check_running(&mut self) -> Result<()> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => bail!("the relay exited ({status}); log:\n{}", self.log_tail()),
            Err(e) => bail!("cannot tell whether the relay runs: {e}"),
        }
    }

    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    fn signal(&self, signal: &str) {
        let _ = std::process::Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid.to_string())
            .stderr(Stdio::null())
            .status();
    }

    /// Freezes the process (SIGSTOP): its connections stay open, it does nothing.
    pub fn pause(&self) {
        self.signal("STOP");
    }

    /// SIGCONT after [`Relay::pause`].
    pub fn resume(&self) {
        self.signal("CONT");
    }

    /// SIGTERM, and SIGKILL if it has not exited within `grace`.
    pub async fn stop(mut self, grace: Duration) {
        self.resume();
        self.signal("TERM");
        if tokio::time::timeout(grace, self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.start_kill();
            let _ = self.child.wait().await;
        }
    }

    /// Resident and peak resident memory in KiB.
    pub fn memory_kib(&self) -> Result<(u64, u64)> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))?;
        let field = |name: &str| -> Option<u64> {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|n| n.parse().ok())
        };
        match (field("VmRSS:"), field("VmHWM:")) {
            (Some(rss), Some(hwm)) => Ok((rss, hwm)),
            _ => bail!("no VmRSS/VmHWM in /proc/{}/status", self.pid),
        }
    }

    /// CPU time used so far (user + system), from /proc/PID/stat.
    pub fn cpu_time(&self) -> Result<Duration> {
        cpu_time_of_pid(self.pid)
    }
}

/// CPU time (user + system) process `pid` has used so far.
pub fn cpu_time_of_pid(pid: u32) -> Result<Duration> {
    cpu_time_of(Path::new(&format!("/proc/{pid}/stat")))
}

fn cpu_time_of(stat_path: &Path) -> Result<Duration> {
    let stat = std::fs::read_to_string(stat_path)?;
    parse_cpu_time(&stat, clock_ticks())
}

/// utime and stime are fields 14 and 15; the command name (field 2) is in
/// parentheses and may hold spaces, so count from the last ')'.
fn parse_cpu_time(stat: &str, ticks_per_second: u64) -> Result<Duration> {
    let after = stat
        .rfind(')')
        .map(|i| &stat[i + 1..])
        .context("malformed /proc stat")?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // `after` starts at field 3 (state), so field N is at index N - 3.
    let ticks: u64 = match (fields.get(11), fields.get(12)) {
        (Some(u), Some(s)) => u.parse::<u64>()? + s.parse::<u64>()?,
        _ => bail!("malformed /proc stat: too few fields"),
    };
    Ok(Duration::from_secs_f64(
        ticks as f64 / ticks_per_second as f64,
    ))
}

/// The kernel's clock ticks per second (`getconf CLK_TCK`), 100 where it cannot tell.
pub fn clock_ticks() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_is_utime_plus_stime() {
        let stat = "1234 (n8n relay) S 1 1234 1234 0 -1 4194304 100 0 0 0 250 50 0 0 20 0 8 0";
        assert_eq!(
            parse_cpu_time(stat, 100).unwrap(),
            Duration::from_secs_f64(3.0)
        );
    }

    #[test]
    fn own_cpu_time_is_readable() {
        assert!(cpu_time_of(Path::new("/proc/self/stat")).is_ok());
    }
}
