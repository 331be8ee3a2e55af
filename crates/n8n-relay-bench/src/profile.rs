//! `--profile`: where the relay's time goes, seen from Postgres. While a scenario runs,
//! the relay's backends in `pg_stat_activity` are sampled every few milliseconds;
//! each sample counts its state, wait event and statement. Many samples in
//! `idle` mean the relay is not asking; many in one statement or in `IO:WALSync`
//! point at the statement or the commit to look at. The CPU the relay process and its
//! backends used is read from /proc.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use serde_json::{json, Value};
use tokio::task::JoinHandle;

use crate::db::connect;
use crate::relay::cpu_time_of_pid;

const SAMPLE_EVERY: Duration = Duration::from_millis(5);

/// The relay's backends in this database: what each is doing right now.
const RELAY_ACTIVITY: &str = "SELECT pid,
        state || ' ' || coalesce(wait_event_type || ':' || wait_event, 'CPU'),
        left(regexp_replace(query, '\\s+', ' ', 'g'), 70)
    FROM pg_stat_activity
    WHERE datname = current_database() AND pid <> pg_backend_pid()
      AND application_name LIKE 'n8n-relay%'";

/// The relay's backends in the benchmark database, by process id (the benchmark's own
/// sessions are named apart: `crate::db`).
const RELAY_BACKENDS: &str = "SELECT pid FROM pg_stat_activity
    WHERE datname = current_database() AND application_name LIKE 'n8n-relay%'";

/// The relay's backends in the benchmark database now, by process id.
pub async fn relay_backends(client: &tokio_postgres::Client) -> Result<Vec<i32>> {
    Ok(client
        .query(RELAY_BACKENDS, &[])
        .await?
        .iter()
        .map(|row| row.get::<_, i32>(0))
        .collect())
}

/// The CPU each of these backends has used so far, from /proc (so only when the
/// benchmark runs on the database's host; a backend it cannot read is left out).
pub fn cpu_of(pids: impl IntoIterator<Item = i32>) -> HashMap<i32, Duration> {
    pids.into_iter()
        .filter_map(|pid| Some((pid, cpu_time_of_pid(u32::try_from(pid).ok()?).ok()?)))
        .collect()
}

/// What backends used between two [`cpu_of`] readings. One opened in between (the
/// relay's pool grew) counts from its start; one closed in between is missed.
pub fn cpu_between(before: &HashMap<i32, Duration>, after: &HashMap<i32, Duration>) -> Duration {
    after
        .iter()
        .map(|(pid, cpu)| cpu.saturating_sub(before.get(pid).copied().unwrap_or_default()))
        .sum()
}

/// Samples per (state, wait, statement); the backends seen; sampling rounds.
struct Samples {
    counts: HashMap<String, u64>,
    pids: HashSet<i32>,
    rounds: u64,
}

pub struct Sampler {
    stop: Arc<AtomicBool>,
    task: JoinHandle<Result<Samples>>,
    relay_pid: u32,
    relay_cpu0: Duration,
    started: Instant,
}

impl Sampler {
    pub async fn start(db_url: &str, relay_pid: u32) -> Result<Sampler> {
        let client = connect(db_url).await?;
        let statement = client.prepare(RELAY_ACTIVITY).await?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let mut s = Samples {
                counts: HashMap::new(),
                pids: HashSet::new(),
                rounds: 0,
            };
            let mut ticks = tokio::time::interval(SAMPLE_EVERY);
            while !flag.load(Ordering::Relaxed) {
                ticks.tick().await;
                s.rounds += 1;
                for row in client.query(&statement, &[]).await? {
                    s.pids.insert(row.get(0));
                    let state: Option<String> = row.get(1);
                    let query: Option<String> = row.get(2);
                    let state = state.unwrap_or_else(|| "?".into());
                    let key = if state.starts_with("idle") {
                        state
                    } else {
                        format!("{state} | {}", query.unwrap_or_default())
                    };
                    *s.counts.entry(key).or_default() += 1;
                }
            }
            anyhow::Ok(s)
        });
        Ok(Sampler {
            stop,
            task,
            relay_pid,
            relay_cpu0: cpu_time_of_pid(relay_pid).unwrap_or_default(),
            started: Instant::now(),
        })
    }

    /// Stops sampling; the profile as JSON, also printed on stderr.
    pub async fn finish(self, label: &str) -> Result<Value> {
        let wall = self.started.elapsed();
        let relay_cpu = cpu_time_of_pid(self.relay_pid).unwrap_or_default() - self.relay_cpu0;
        self.stop.store(true, Ordering::Relaxed);
        let Samples {
            counts,
            pids,
            rounds: samples,
        } = self.task.await??;
        // Backends' CPU over their whole life: they were opened for this relay run.
        let backends_cpu: Duration = cpu_of(pids.iter().copied()).values().sum();
        let mut top: Vec<(String, u64)> = counts.into_iter().collect();
        top.sort_by_key(|t| std::cmp::Reverse(t.1));
        top.truncate(15);
        let pct = |cpu: Duration| 100.0 * cpu.as_secs_f64() / wall.as_secs_f64().max(1e-9);
        eprintln!(
            "profile {label}: {:.1} s, relay CPU {:.0} % of a core, its {} backends (lifetime) {:.1} s CPU; \
             backend samples (every {} ms, {samples} rounds):",
            wall.as_secs_f64(),
            pct(relay_cpu),
            pids.len(),
            backends_cpu.as_secs_f64(),
            SAMPLE_EVERY.as_millis()
        );
        for (k, n) in &top {
            eprintln!("  {n:>6}  {k}");
        }
        Ok(json!({
            "seconds": wall.as_secs_f64(),
            "relay_cpu_percent": pct(relay_cpu),
            "backends": pids.len(),
            "backends_cpu_seconds_lifetime": backends_cpu.as_secs_f64(),
            "sample_rounds": samples,
            "samples": top.iter().map(|(k, n)| json!({"what": k, "samples": n})).collect::<Vec<_>>(),
        }))
    }
}
