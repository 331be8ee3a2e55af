//! Scenario 4, latency: one writer at a steady 200 events/s, one event per transaction.
//! Commit-to-2xx is the sink's arrival time minus the moment the writer's COMMIT
//! returned (both this machine's wall clock); the same from the trigger's
//! `clock_timestamp()` (`occurred_at`, stamped before the commit) is kept beside it.

use std::collections::HashMap;
use std::time::SystemTime;

use anyhow::{Context, Result};
use serde_json::json;

use crate::bench::{Bench, STEADY_PER_SECOND};
use crate::load;
use crate::report::{Figure, Report, Target};
use crate::stats::percentile;

pub const NAME: &str = "4 latency";
/// The second speed issue's targets (the first one's were 1.5 and 6 ms).
const TARGET_P50_MS: f64 = 1.0;
const TARGET_P99_MS: f64 = 3.0;

/// Which delivery belongs to which lead: the queue row's webhook id is the
/// X-Webhook-Id the sink saw.
const DELIVERIES_OF_LEADS: &str = "SELECT q.entity_id, q.webhook_id::text,
        extract(epoch FROM q.occurred_at)::float8
    FROM webhook_queue q
    WHERE q.event_type = 'lead_scraped' AND q.entity_id = ANY($1)";

fn ms_between(later: SystemTime, earlier: SystemTime) -> f64 {
    match later.duration_since(earlier) {
        Ok(d) => d.as_secs_f64() * 1000.0,
        Err(e) => -e.duration().as_secs_f64() * 1000.0,
    }
}

pub async fn run(bench: &mut Bench<'_>, report: &mut Report) -> Result<()> {
    bench.relay().await?;
    bench.sink.take();
    let sampler = bench.profiler().await?;
    let commits = load::paced(&bench.db.url, STEADY_PER_SECOND, bench.sizes.steady).await?;
    bench.wait_delivered(commits.len() as u64).await?;
    report.profile(NAME, sampler).await?;
    let arrivals = bench.sink.take();

    let ids: Vec<i64> = commits.iter().map(|c| c.lead).collect();
    let client = bench.db.client().await?;
    let rows = client
        .query(DELIVERIES_OF_LEADS, &[&ids])
        .await
        .context("matching deliveries to commits")?;
    let by_lead: HashMap<i64, (String, f64)> = rows
        .iter()
        .map(|r| {
            (
                r.get::<_, i64>(0),
                (r.get::<_, String>(1), r.get::<_, f64>(2)),
            )
        })
        .collect();
    let mut from_commit = Vec::with_capacity(commits.len());
    let mut from_occurred = Vec::with_capacity(commits.len());
    for c in &commits {
        let (lead, committed) = (&c.lead, &c.at);
        let (webhook_id, occurred) = by_lead
            .get(lead)
            .with_context(|| format!("lead {lead} has no queue row"))?;
        let arrived = arrivals
            .get(webhook_id)
            .with_context(|| format!("the sink never saw webhook {webhook_id} (lead {lead})"))?;
        from_commit.push(ms_between(*arrived, *committed));
        let occurred_at = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs_f64(*occurred);
        from_occurred.push(ms_between(*arrived, occurred_at));
    }
    from_commit.sort_by(f64::total_cmp);
    let mut insert_ms: Vec<f64> = commits
        .iter()
        .map(|c| c.took.as_secs_f64() * 1000.0)
        .collect();
    insert_ms.sort_by(f64::total_cmp);
    from_occurred.sort_by(f64::total_cmp);

    let floor = &bench.limits.floor_ms;
    for (label, p, target) in [
        ("p50", 50.0, Some(TARGET_P50_MS)),
        ("p90", 90.0, None),
        ("p99", 99.0, Some(TARGET_P99_MS)),
        ("max", 100.0, None),
    ] {
        let mut figure = Figure::new(
            NAME,
            format!("commit-to-2xx {label}, {STEADY_PER_SECOND} events/s"),
            percentile(&from_commit, p),
            "ms",
        );
        if !floor.is_empty() {
            figure = figure.baseline(format!("floor {label}"), percentile(floor, p));
        }
        if let Some(t) = target {
            figure = figure.target(Target::value_at_most(t));
        }
        report.figures.push(figure);
    }
    // The business write itself, at a pace where the relay is idle between events, so
    // (nearly) every transaction finds the wake-up armed and sends the NOTIFY.
    let mut insert = Figure::new(
        NAME,
        "business INSERT incl. commit, p50 (relay idle: NOTIFY)",
        percentile(&insert_ms, 50.0),
        "ms",
    );
    if let Some((_, rate)) = bench.limits.commit_rate.first() {
        insert = insert.baseline("bare commit, 1 writer", 1000.0 / rate.max(1e-9));
    }
    report.figures.push(insert);
    let summary = |s: &[f64]| {
        json!({
            "p50": percentile(s, 50.0),
            "p90": percentile(s, 90.0),
            "p99": percentile(s, 99.0),
            "max": percentile(s, 100.0),
            "min": s.first().copied().unwrap_or(0.0),
        })
    };
    report.details.insert(
        NAME.into(),
        json!({
            "events": commits.len(),
            "per_second": STEADY_PER_SECOND,
            "commit_to_2xx_ms": summary(&from_commit),
            "occurred_at_to_2xx_ms": summary(&from_occurred),
            "business_insert_ms": summary(&insert_ms),
        }),
    );
    Ok(())
}
