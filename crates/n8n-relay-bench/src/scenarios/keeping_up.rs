//! Scenario 2, keeping up: writers insert at full speed while the relay delivers. The
//! backlog (committed minus delivered) is sampled over time: it may hold steady at a
//! few batches' worth, but must not grow.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::json;

use crate::bench::{Bench, KEEP_UP_WRITERS};
use crate::load::{self, Table};
use crate::report::{Figure, Report, Target};
use crate::stats::slope;

pub const NAME: &str = "2 keeping up";
/// The second speed issue's target (the first one's was 0.95).
const TARGET_RATIO: f64 = 0.98;
/// Growth over the second half, as a share of the insert rate, that still counts as
/// "not growing" (noise of a few batches).
const GROWTH_TOLERANCE: f64 = 0.02;

pub async fn run(bench: &mut Bench<'_>, report: &mut Report) -> Result<()> {
    let duration = bench.sizes.keep_up;
    let sample_every = if bench.sizes.quick {
        Duration::from_millis(250)
    } else {
        Duration::from_secs(1)
    };
    bench.relay().await?;
    bench.sink.take();
    let sampler = bench.profiler().await?;
    let committed = Arc::new(AtomicU64::new(0));
    let writers = tokio::spawn({
        let (url, committed) = (bench.db.url.clone(), committed.clone());
        async move { load::full_speed(&url, Table::Leads, KEEP_UP_WRITERS, duration, committed).await }
    });
    // Sample until the writers stop: (seconds, committed, delivered, backlog).
    let start = Instant::now();
    let mut samples: Vec<(f64, u64, u64, i64)> = Vec::new();
    let mut ticks = tokio::time::interval(sample_every);
    while !writers.is_finished() {
        ticks.tick().await;
        let c = committed.load(Ordering::Relaxed);
        let d = bench.sink.distinct() as u64;
        samples.push((start.elapsed().as_secs_f64(), c, d, c as i64 - d as i64));
    }
    let throughput = writers.await.context("writer task")??;
    report.profile(NAME, sampler).await?;
    let delivered_in_window = bench.sink.distinct() as u64;
    let window = throughput.elapsed.as_secs_f64();
    let drain_start = Instant::now();
    bench.wait_delivered(throughput.rows).await?;
    let catch_up = drain_start.elapsed();
    bench.sink.take();

    let insert_rate = throughput.rows as f64 / window;
    let delivered_rate = delivered_in_window.min(throughput.rows) as f64 / window;
    let second_half: Vec<(f64, f64)> = samples
        .iter()
        .filter(|s| s.0 >= window / 2.0)
        .map(|s| (s.0, s.3 as f64))
        .collect();
    let growth = slope(&second_half);
    let backlog_end = samples.last().map(|s| s.3).unwrap_or(0);
    let backlog_max = samples.iter().map(|s| s.3).max().unwrap_or(0);

    report.figures.push(
        Figure::new(
            NAME,
            format!("delivered rate, {KEEP_UP_WRITERS} writers at full speed"),
            delivered_rate,
            "events/s",
        )
        .baseline("insert rate", insert_rate)
        .target(Target::ratio_at_least(TARGET_RATIO)),
    );
    report.figures.push(
        Figure::new(NAME, "backlog growth, second half", growth, "events/s")
            .baseline("insert rate", insert_rate)
            .target(Target::ratio_at_most(GROWTH_TOLERANCE)),
    );
    report.figures.push(Figure::new(
        NAME,
        "backlog, most during the run",
        backlog_max as f64,
        "events",
    ));
    report.details.insert(
        NAME.into(),
        json!({
            "writers": KEEP_UP_WRITERS,
            "seconds": window,
            "inserted": throughput.rows,
            "delivered_in_window": delivered_in_window,
            "backlog_end": backlog_end,
            "backlog_max": backlog_max,
            "catch_up_seconds": catch_up.as_secs_f64(),
            "samples": samples
                .iter()
                .map(|s| json!({"t": s.0, "committed": s.1, "delivered": s.2, "backlog": s.3}))
                .collect::<Vec<_>>(),
        }),
    );
    Ok(())
}
