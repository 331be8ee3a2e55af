//! What every scenario shares: the database, the sink, the relay (started when a
//! scenario needs it) and the run's settings.

use std::time::Duration;

use anyhow::Result;

use crate::db::BenchDb;
use crate::profile::Sampler;
use crate::relay::{Relay, RelaySpec};
use crate::sink::Sink;

/// How long each part runs: the full figures, or `--quick` (every code path, briefly).
#[derive(Debug, Clone, Copy)]
pub struct Sizes {
    pub quick: bool,
    /// Alternating rounds behind each median.
    pub rounds: usize,
    /// One round of a full-speed rate measurement.
    pub round: Duration,
    /// Scenario 2: writers at full speed.
    pub keep_up: Duration,
    /// Scenario 3: events queued before the relay starts.
    pub backlog: u64,
    /// Scenario 4: the steady run.
    pub steady: Duration,
    /// Scenario 5: the steady run sampled for memory, then the idle window for CPU.
    pub footprint_load: Duration,
    pub idle: Duration,
    /// Samples of the latency floor.
    pub floor_samples: usize,
}

impl Sizes {
    pub fn new(quick: bool) -> Sizes {
        if quick {
            Sizes {
                quick,
                rounds: 1,
                round: Duration::from_millis(300),
                keep_up: Duration::from_secs(3),
                backlog: 5_000,
                steady: Duration::from_secs(2),
                footprint_load: Duration::from_secs(1),
                idle: Duration::from_secs(2),
                floor_samples: 100,
            }
        } else {
            Sizes {
                quick,
                rounds: 5,
                round: Duration::from_secs(2),
                keep_up: Duration::from_secs(30),
                backlog: 100_000,
                steady: Duration::from_secs(30),
                footprint_load: Duration::from_secs(10),
                idle: Duration::from_secs(10),
                floor_samples: 2_000,
            }
        }
    }
}

const NOT_SENT: &str = "SELECT
    (SELECT count(*) FROM webhook_queue WHERE status <> 'sent'),
    (SELECT count(*) FROM webhook_events WHERE routed_at IS NULL)";

/// What autovacuum would do for the relay's churning tables. Run between scenarios
/// always, and every [`JANITOR_EVERY`] during them when the server has autovacuum off:
/// without it every claim re-reads the dead index entries of rows already sent, and
/// the planner keeps statistics from before the last burst.
pub const VACUUM_RELAY_TABLES: &str =
    "VACUUM (ANALYZE) webhook_events, webhook_queue, webhook_logs";
pub const JANITOR_EVERY: Duration = Duration::from_secs(30);

/// Writer counts for the commit rate and the trigger cost.
pub const WRITERS: [usize; 3] = [1, 4, 16];
/// "1 writer", "16 writers".
pub fn writers_label(n: usize) -> String {
    if n == 1 {
        "1 writer".into()
    } else {
        format!("{n} writers")
    }
}

/// Scenario 2's writers: the trigger cost's headline count.
pub const KEEP_UP_WRITERS: usize = 16;
/// Scenario 4's and 5's steady rate.
pub const STEADY_PER_SECOND: u32 = 200;

/// The limits measured first, which later figures are held against.
#[derive(Debug, Default, Clone)]
pub struct Limits {
    pub sink_ceiling: Option<f64>,
    /// (writers, commits/s)
    pub commit_rate: Vec<(usize, f64)>,
    /// Sorted samples of one DB round trip + one POST, ms.
    pub floor_ms: Vec<f64>,
}

pub struct Bench<'a> {
    pub db: &'a BenchDb,
    pub sink: Sink,
    pub spec: RelaySpec,
    pub relay: Option<Relay>,
    pub sizes: Sizes,
    pub limits: Limits,
    /// `--profile`: sample what the relay's backends do during each scenario.
    pub profile: bool,
}

impl Bench<'_> {
    /// The running relay, started if it is not.
    pub async fn relay(&mut self) -> Result<&mut Relay> {
        if self.relay.is_none() {
            self.relay = Some(self.spec.spawn()?);
            // Give it a moment to connect and LISTEN, so the first events are not
            // measured against its start-up.
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        match self.relay.as_mut() {
            Some(r) => {
                r.check_running()?;
                Ok(r)
            }
            None => anyhow::bail!("the relay is not running"),
        }
    }

    /// Starts sampling the relay's backends when `--profile` is on.
    pub async fn profiler(&mut self) -> Result<Option<Sampler>> {
        if !self.profile {
            return Ok(None);
        }
        let pid = self.relay().await?.pid;
        Ok(Some(Sampler::start(&self.db.url, pid).await?))
    }

    pub async fn vacuum(&self) -> Result<()> {
        self.db
            .client()
            .await?
            .batch_execute(VACUUM_RELAY_TABLES)
            .await?;
        Ok(())
    }

    pub async fn stop_relay(&mut self) {
        if let Some(relay) = self.relay.take() {
            relay.stop(Duration::from_secs(15)).await;
        }
    }

    /// How long to wait for `n` events before calling them lost: generous, since a
    /// debug build on a busy machine is slow, but bounded.
    pub fn delivery_timeout(n: u64) -> Duration {
        Duration::from_secs(60) + Duration::from_millis(n.saturating_mul(10))
    }

    /// Waits until the relay has recorded every queue row as sent (outcomes are
    /// written just after the sink answers). Anything else left is a failure.
    pub async fn wait_recorded(&self) -> Result<()> {
        let client = self.db.client().await?;
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let row = client.query_one(NOT_SENT, &[]).await?;
            let (unsent, unrouted): (i64, i64) = (row.get(0), row.get(1));
            if unsent == 0 && unrouted == 0 {
                return Ok(());
            }
            if std::time::Instant::now() >= deadline {
                anyhow::bail!(
                    "{unsent} queue rows not recorded as sent and {unrouted} events unrouted \
                     30 s after the sink had every event"
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until the sink has `n` distinct events, failing with the relay's log
    /// when they do not come.
    pub async fn wait_delivered(&mut self, n: u64) -> Result<()> {
        let timeout = Self::delivery_timeout(n);
        if let Err(e) = self.sink.wait_for(n as usize, timeout).await {
            let log = self
                .relay
                .as_ref()
                .map(|r| r.log_tail())
                .unwrap_or_default();
            anyhow::bail!("{e:#}\nrelay log (last lines):\n{log}");
        }
        Ok(())
    }
}
