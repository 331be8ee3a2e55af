//! The load: business writers (one single-row INSERT per transaction, at full speed
//! or paced) and an HTTP client for the sink's own ceiling.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio_postgres::types::ToSql;

use crate::db::connect;

/// Where the writers insert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    /// The example business table, with the relay's triggers.
    Leads,
    /// `LIKE leads INCLUDING ALL`: the same table without triggers.
    LeadsBare,
    /// `leads`, arming the relay's wake-up in the same statement, so every
    /// transaction's trigger sends a NOTIFY: the cost the wake-up protocol avoids.
    LeadsNotifyEach,
    /// A two-column table: Postgres's single-row commit rate.
    CommitProbe,
}

const INSERT_LEAD: &str = "INSERT INTO leads (business_name, category, location, email, website)
    VALUES ($1, 'software', 'Berlin', $2, 'https://example.com') RETURNING id";
const INSERT_LEAD_BARE: &str =
    "INSERT INTO leads_bare (business_name, category, location, email, website)
    VALUES ($1, 'software', 'Berlin', $2, 'https://example.com') RETURNING id";
const INSERT_LEAD_NOTIFY_EACH: &str =
    "INSERT INTO leads (business_name, category, location, email, website)
    SELECT $1, 'software', 'Berlin', $2, 'https://example.com'
    FROM (SELECT setval('webhook_relay_wakeup', 1)) AS armed RETURNING id";
const INSERT_COMMIT_PROBE: &str = "INSERT INTO bench_commit (v) VALUES (1) RETURNING id";

/// Bytes of WAL written so far in the cluster. Cluster-wide: others' writes count
/// too, so measure large amounts or take the least of several tries.
pub const WAL_POSITION: &str = "SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '0/0')::float8";

/// The same into the table without triggers.
pub const INSERT_LEADS_BARE_BULK: &str = "INSERT INTO leads_bare (business_name, category, location, email, website)
    SELECT 'Bench Co ' || g, 'software', 'Berlin', 'lead' || g || '@example.com', 'https://example.com'
    FROM generate_series(1, $1::bigint) AS g";

/// Many leads in one statement (the backlog for the drain), through the triggers.
pub const INSERT_LEADS_BULK: &str = "INSERT INTO leads (business_name, category, location, email, website)
    SELECT 'Bench Co ' || g, 'software', 'Berlin', 'lead' || g || '@example.com', 'https://example.com'
    FROM generate_series(1, $1::bigint) AS g";

impl Table {
    fn insert_sql(self) -> &'static str {
        match self {
            Table::Leads => INSERT_LEAD,
            Table::LeadsBare => INSERT_LEAD_BARE,
            Table::LeadsNotifyEach => INSERT_LEAD_NOTIFY_EACH,
            Table::CommitProbe => INSERT_COMMIT_PROBE,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Table::Leads => "leads (with triggers)",
            Table::LeadsBare => "leads_bare (no triggers)",
            Table::LeadsNotifyEach => "leads (NOTIFY every transaction)",
            Table::CommitProbe => "bench_commit",
        }
    }
}

/// One writer's connection, its statement prepared.
struct Writer {
    client: tokio_postgres::Client,
    statement: tokio_postgres::Statement,
    table: Table,
    n: u64,
}

impl Writer {
    async fn connect(url: &str, table: Table) -> Result<Writer> {
        let client = connect(url).await?;
        let statement = client
            .prepare(table.insert_sql())
            .await
            .with_context(|| format!("preparing the INSERT into {}", table.label()))?;
        Ok(Writer {
            client,
            statement,
            table,
            n: 0,
        })
    }

    /// One INSERT in its own transaction (autocommit): returns once committed.
    async fn insert(&mut self) -> Result<i64> {
        self.n += 1;
        let row = if self.table == Table::CommitProbe {
            self.client.query_one(&self.statement, &[]).await?
        } else {
            let name = format!("Bench Co {}", self.n);
            let email = format!("lead{}@example.com", self.n);
            let params: [&(dyn ToSql + Sync); 2] = [&name, &email];
            self.client.query_one(&self.statement, &params).await?
        };
        Ok(row.get(0))
    }
}

/// What a full-speed run achieved.
#[derive(Debug, Clone, Copy)]
pub struct Throughput {
    pub rows: u64,
    pub elapsed: Duration,
}

impl Throughput {
    pub fn per_second(&self) -> f64 {
        self.rows as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// `writers` connections insert into `table` as fast as they can for `duration`, all
/// starting together. `committed` counts rows as their commits return, for observers.
pub async fn full_speed(
    url: &str,
    table: Table,
    writers: usize,
    duration: Duration,
    committed: Arc<AtomicU64>,
) -> Result<Throughput> {
    let mut conns = Vec::with_capacity(writers);
    for _ in 0..writers {
        conns.push(Writer::connect(url, table).await?);
    }
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = Vec::with_capacity(writers);
    for mut w in conns {
        let committed = committed.clone();
        tasks.push(tokio::spawn(async move {
            let mut rows = 0u64;
            while Instant::now() < deadline {
                w.insert().await?;
                rows += 1;
                committed.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok(rows)
        }));
    }
    let mut rows = 0;
    for t in tasks {
        rows += t.await.context("writer task")??;
    }
    Ok(Throughput {
        rows,
        elapsed: start.elapsed(),
    })
}

/// One paced transaction: the lead's id, when its COMMIT returned (wall clock) and how
/// long the INSERT took, commit included.
#[derive(Debug, Clone, Copy)]
pub struct Commit {
    pub lead: i64,
    pub at: SystemTime,
    pub took: Duration,
}

/// One writer at `per_second` single-row transactions into `leads` for `duration`.
pub async fn paced(url: &str, per_second: u32, duration: Duration) -> Result<Vec<Commit>> {
    let mut w = Writer::connect(url, Table::Leads).await?;
    let period = Duration::from_secs_f64(1.0 / f64::from(per_second.max(1)));
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let deadline = Instant::now() + duration;
    let mut out = Vec::with_capacity((duration.as_secs_f64() * f64::from(per_second)) as usize + 1);
    while Instant::now() < deadline {
        ticks.tick().await;
        let started = Instant::now();
        let lead = w.insert().await?;
        out.push(Commit {
            lead,
            at: SystemTime::now(),
            took: started.elapsed(),
        });
    }
    Ok(out)
}

/// A body the size and shape of a relay delivery.
fn sample_body() -> Bytes {
    Bytes::from_static(
        br#"{"id":"00000000-0000-4000-8000-000000000000","event":"lead_scraped","occurred_at":"2025-11-04T12:00:00.000000Z","entity_type":"lead","entity_id":123,"data":{"id":123,"lead_id":123,"business_name":"Bench Co 123","category":"software","location":"Berlin","email":"lead123@example.com","phone":null,"website":"https://example.com","score":null,"status":"new","outreach_status":null,"outreach_subject":null,"outreach_error":null,"response_message":null,"created_at":"2025-11-04T12:00:00.000000+00:00","updated_at":"2025-11-04T12:00:00.000000+00:00"}}"#,
    )
}

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

fn http_client() -> HttpClient {
    let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(connector)
}

fn post(url: &str, id: u64, body: Bytes) -> Result<hyper::Request<Full<Bytes>>> {
    Ok(hyper::Request::post(url)
        .header("content-type", "application/json")
        .header("x-webhook-id", format!("ceiling-{id}"))
        .header("x-webhook-event", "lead_scraped")
        .header("x-webhook-attempt", "1")
        .header("x-webhook-timestamp", "1762257600")
        .header(
            "x-webhook-signature-256",
            "0000000000000000000000000000000000000000000000000000000000000000",
        )
        .body(Full::new(body))?)
}

/// The sink's ceiling: `concurrency` keep-alive connections POSTing relay-sized
/// requests for `duration`. Requests answered 2xx per second.
pub async fn http_ceiling(base: &str, concurrency: usize, duration: Duration) -> Result<f64> {
    let client = http_client();
    let url = format!("{base}/webhook/lead-scraped");
    let next = Arc::new(AtomicU64::new(0));
    let body = sample_body();
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let (client, url, next, body) = (client.clone(), url.clone(), next.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            let mut ok = 0u64;
            while Instant::now() < deadline {
                let id = next.fetch_add(1, Ordering::Relaxed);
                let resp = client.request(post(&url, id, body.clone())?).await?;
                if resp.status().is_success() {
                    ok += 1;
                }
            }
            anyhow::Ok(ok)
        }));
    }
    let mut ok = 0;
    for t in tasks {
        ok += t.await.context("client task")??;
    }
    Ok(ok as f64 / start.elapsed().as_secs_f64().max(1e-9))
}

/// The floor under commit-to-2xx latency: one Postgres round trip followed by one POST
/// to the sink, the least a relay could do per event. `samples` durations, in ms.
pub async fn floor_latency(db_url: &str, base: &str, samples: usize) -> Result<Vec<f64>> {
    let db = connect(db_url).await?;
    let probe = db.prepare("SELECT 1").await?;
    let client = http_client();
    let url = format!("{base}/webhook/lead-scraped");
    let body = sample_body();
    let mut out = Vec::with_capacity(samples);
    for i in 0..samples {
        let start = Instant::now();
        db.query_one(&probe, &[]).await?;
        let resp = client.request(post(&url, i as u64, body.clone())?).await?;
        anyhow::ensure!(
            resp.status().is_success(),
            "the sink answered {}",
            resp.status()
        );
        out.push(start.elapsed().as_secs_f64() * 1000.0);
        // Paced, not back to back, like events at a steady rate.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(out)
}
