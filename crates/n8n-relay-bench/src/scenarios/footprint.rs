//! Scenario 5, footprint: the relay's resident memory and CPU under a steady 200
//! events/s, with its Postgres backends' CPU per event, then its CPU while idle. An
//! idle relay waits for a notification; anything above a safety sweep now and then is
//! busy polling.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::json;

use crate::bench::{Bench, STEADY_PER_SECOND};
use crate::load;
use crate::profile::{cpu_between, cpu_of, relay_backends};
use crate::report::{Figure, Report, Target};

pub const NAME: &str = "5 footprint";
const TARGET_IDLE_CPU_PERCENT: f64 = 0.5;

fn percent_of_a_core(cpu: Duration, wall: Duration) -> f64 {
    100.0 * cpu.as_secs_f64() / wall.as_secs_f64().max(1e-9)
}

pub async fn run(bench: &mut Bench<'_>, report: &mut Report) -> Result<()> {
    let sizes = bench.sizes;
    bench.relay().await?;
    bench.sink.take();

    // The relay's Postgres backends too: what it makes the server do per event at a
    // steady rate (each event handled on its own, where a drain batches them), and
    // while idle (its queue gauges' count, the safety sweep). Listed at each reading:
    // its pool may open connections as the load comes.
    let client = bench.db.client().await?;
    let backends_cpu = || async { anyhow::Ok(cpu_of(relay_backends(&client).await?)) };

    // Under load: sample RSS once a second while a writer runs at the steady rate.
    let (cpu0, backends0, wall0) = (
        bench.relay().await?.cpu_time()?,
        backends_cpu().await?,
        Instant::now(),
    );
    let writer = tokio::spawn({
        let url = bench.db.url.clone();
        async move { load::paced(&url, STEADY_PER_SECOND, sizes.footprint_load).await }
    });
    let mut rss_kib = Vec::new();
    let mut ticks =
        tokio::time::interval(Duration::from_millis(if sizes.quick { 200 } else { 1000 }));
    while !writer.is_finished() {
        ticks.tick().await;
        rss_kib.push(bench.relay().await?.memory_kib()?.0);
    }
    let commits = writer.await.context("writer task")??;
    bench.wait_delivered(commits.len() as u64).await?;
    let (cpu_loaded, wall_loaded) = (bench.relay().await?.cpu_time()? - cpu0, wall0.elapsed());
    let backends1 = backends_cpu().await?;
    let backends_loaded = cpu_between(&backends0, &backends1);
    bench.sink.take();

    // Idle: let the last outcomes settle, then measure a quiet window.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let relay = bench.relay().await?;
    let (cpu1, backends2, wall1) = (relay.cpu_time()?, backends_cpu().await?, Instant::now());
    tokio::time::sleep(sizes.idle).await;
    let (cpu_idle, wall_idle) = (relay.cpu_time()? - cpu1, wall1.elapsed());
    let backends3 = backends_cpu().await?;
    let backends_idle = cpu_between(&backends2, &backends3);
    let (rss_idle, peak) = relay.memory_kib()?;

    let rss_max = rss_kib.iter().copied().max().unwrap_or(rss_idle);
    report.figures.push(Figure::new(
        NAME,
        format!("relay RSS at {STEADY_PER_SECOND} events/s"),
        rss_max as f64 / 1024.0,
        "MiB",
    ));
    report.figures.push(Figure::new(
        NAME,
        format!("relay CPU at {STEADY_PER_SECOND} events/s"),
        percent_of_a_core(cpu_loaded, wall_loaded),
        "% core",
    ));
    let events = commits.len().max(1) as f64;
    report.figures.push(Figure::new(
        NAME,
        format!("its Postgres backends' CPU per event at {STEADY_PER_SECOND} events/s"),
        backends_loaded.as_secs_f64() * 1e6 / events,
        "µs",
    ));
    report.figures.push(
        Figure::new(
            NAME,
            format!("relay CPU idle, {} s", sizes.idle.as_secs()),
            percent_of_a_core(cpu_idle, wall_idle),
            "% core",
        )
        .target(Target::value_at_most(TARGET_IDLE_CPU_PERCENT)),
    );
    report.figures.push(Figure::new(
        NAME,
        // The count goes into the details: builds compared side by side may differ.
        format!(
            "its Postgres backends' CPU idle, {} s",
            sizes.idle.as_secs()
        ),
        percent_of_a_core(backends_idle, wall_idle),
        "% core",
    ));
    report.details.insert(
        NAME.into(),
        json!({
            "rss_kib_samples": rss_kib,
            "rss_idle_kib": rss_idle,
            "rss_peak_kib": peak,
            "cpu_loaded_seconds": cpu_loaded.as_secs_f64(),
            "loaded_seconds": wall_loaded.as_secs_f64(),
            "cpu_idle_seconds": cpu_idle.as_secs_f64(),
            "idle_seconds": wall_idle.as_secs_f64(),
            "backends_cpu_idle_seconds": backends_idle.as_secs_f64(),
            "backends_cpu_loaded_seconds": backends_loaded.as_secs_f64(),
            "events_loaded": commits.len(),
            "relay_backends_before_load": backends0.len(),
            "relay_backends_after_load": backends1.len(),
        }),
    );
    Ok(())
}
