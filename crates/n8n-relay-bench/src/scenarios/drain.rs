//! Scenario 3, backlog drain: with the relay stopped, a bulk INSERT into `leads` queues
//! events through the real triggers; then the relay starts and the clock runs until the
//! sink has every one of them.

use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result};
use serde_json::json;

use crate::bench::Bench;
use crate::load::{INSERT_LEADS_BULK, WAL_POSITION};
use crate::profile::{cpu_of, relay_backends};
use crate::report::{fmt_num, Figure, Report, Target};
use crate::rows;
use crate::wal;

pub const NAME: &str = "3 backlog drain";
const TARGET_PER_SECOND: f64 = 8_000.0;
/// Postgres's share of a delivered event (the speed issue's targets).
const TARGET_PG_CPU_PER_EVENT_US: f64 = 75.0;
const TARGET_WAL_PER_EVENT: f64 = 1_200.0;
/// Rows per bulk statement, so one transaction does not hold the whole backlog.
const CHUNK: u64 = 10_000;
const WAL_LSN: &str = "SELECT pg_current_wal_insert_lsn()::text";

pub async fn run(bench: &mut Bench<'_>, report: &mut Report) -> Result<()> {
    let n = bench.sizes.backlog;
    bench.stop_relay().await;
    bench.sink.take();
    let client = bench.db.client().await?;
    let fill_start = Instant::now();
    let mut queued = 0u64;
    while queued < n {
        let chunk = CHUNK.min(n - queued) as i64;
        client
            .execute(INSERT_LEADS_BULK, &[&chunk])
            .await
            .context("queueing the backlog")?;
        queued += chunk as u64;
    }
    let fill = fill_start.elapsed();
    // Settle what the inserts left behind (autovacuum, dirty buffers) a little, as an
    // operator's relay would meet a backlog after an outage.
    bench.vacuum().await?;

    let rows_before = rows::snapshot(&client).await;
    let wal_before: f64 = client.query_one(WAL_POSITION, &[]).await?.get(0);
    let lsn_before: String = client.query_one(WAL_LSN, &[]).await?.get(0);
    let started = SystemTime::now();
    bench.relay().await?;
    let sampler = bench.profiler().await?;
    bench.wait_delivered(n).await?;
    bench.wait_recorded().await?;
    let wal_after: f64 = client.query_one(WAL_POSITION, &[]).await?.get(0);
    let lsn_after: String = client.query_one(WAL_LSN, &[]).await?.get(0);
    let wal_per_event = (wal_after - wal_before) / n as f64;
    // What the drain made Postgres do: the CPU of every backend of the relay, which
    // started with the drain (its pool and LISTEN connections), read before it stops.
    let backends = relay_backends(&client).await?;
    let backends_cpu: Duration = cpu_of(backends.iter().copied()).values().sum();
    let relay_cpu = bench.relay.as_ref().map(|r| r.cpu_time()).transpose()?;
    report.profile(NAME, sampler).await?;
    let repeats = bench.sink.requests().saturating_sub(n);
    let arrivals = bench.sink.take();
    let first = arrivals.values().min().copied().unwrap_or(started);
    let last = arrivals.values().max().copied().unwrap_or(started);
    let from_start = last.duration_since(started).unwrap_or_default();
    let first_to_last = last.duration_since(first).unwrap_or_default();
    let rate = n as f64 / from_start.as_secs_f64().max(1e-9);
    let mut figure = Figure::new(
        NAME,
        format!("{} queued events drained", fmt_num(n as f64)),
        rate,
        "events/s",
    )
    .target(Target::value_at_least(TARGET_PER_SECOND));
    if let Some(ceiling) = bench.limits.sink_ceiling {
        figure = figure.baseline("sink ceiling", ceiling);
    }
    report.figures.push(figure);
    report.figures.push(
        Figure::new(
            NAME,
            "WAL the relay writes per event (route, claim, outcome, log)",
            wal_per_event,
            "bytes",
        )
        .target(Target::value_at_most(TARGET_WAL_PER_EVENT)),
    );
    report.figures.push(
        Figure::new(
            NAME,
            // Not the count in the name: builds compared side by side may differ.
            "Postgres CPU per delivered event (the relay's backends)",
            backends_cpu.as_secs_f64() * 1e6 / n as f64,
            "µs",
        )
        .target(Target::value_at_most(TARGET_PG_CPU_PER_EVENT_US)),
    );
    if let Some(cpu) = relay_cpu {
        report.figures.push(Figure::new(
            NAME,
            "relay process CPU per delivered event",
            cpu.as_secs_f64() * 1e6 / n as f64,
            "µs",
        ));
    }
    // Read at once, before a checkpoint recycles the segments.
    let wal_kinds = match wal::per_event(&client, &lsn_before, &lsn_after, n).await {
        Ok(kinds) => {
            eprintln!(
                "bench: {NAME}: WAL records per event: {}",
                wal::summary(&kinds)
            );
            Some(kinds)
        }
        Err(e) => {
            eprintln!("bench: {NAME}: no WAL records by kind ({e:#})");
            None
        }
    };
    let memory = bench.relay.as_ref().map(|r| r.memory_kib()).transpose()?;
    if let Some((_, peak)) = memory {
        report.figures.push(Figure::new(
            NAME,
            "relay peak RSS after the drain",
            peak as f64 / 1024.0,
            "MiB",
        ));
    }
    // The relay's sessions publish their last counters as they end.
    bench.stop_relay().await;
    let rows = match rows_before {
        Ok(before) => {
            rows::wait_ended(&client, &backends).await?;
            let after = rows::snapshot(&client).await?;
            Some(rows::per_event(&before, &after, n))
        }
        Err(e) => {
            eprintln!("bench: {NAME}: no row counts ({e:#}; they need PostgreSQL 15 or later)");
            None
        }
    };
    if let Some(rows) = &rows {
        eprintln!("bench: {NAME}: rows written per event: {}", rows.summary);
        report.figures.push(Figure::new(
            NAME,
            "rows written per event (inserted + updated + deleted)",
            rows.total,
            "rows",
        ));
        if let Some(share) = rows.hot_share {
            report.figures.push(Figure::new(
                NAME,
                "updates that entered no index (HOT)",
                share * 100.0,
                "%",
            ));
        }
    }
    report.details.insert(
        NAME.into(),
        json!({
            "events": n,
            "repeated_deliveries": repeats,
            "wal_bytes_per_event": wal_per_event,
            // For `pg_waldump --stats=record --start A --end B` on the server.
            "wal_lsn_range": [lsn_before, lsn_after],
            "queue_fill_seconds": fill.as_secs_f64(),
            "relay_start_to_last_seconds": from_start.as_secs_f64(),
            "first_to_last_seconds": first_to_last.as_secs_f64(),
            "relay_start_to_first_ms": first.duration_since(started).unwrap_or_default().as_secs_f64() * 1000.0,
            "relay_peak_rss_kib": memory.map(|m| m.1),
            "relay_backends": backends.len(),
            "rows_written_per_event": rows.as_ref().map(|r| r.tables.clone()),
            "wal_records_per_event": wal_kinds.as_deref().map(wal::to_json),
        }),
    );
    Ok(())
}
