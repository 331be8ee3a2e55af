//! Scenario 6, backlog drain with per-entity ordering: the drain of scenario 3 again
//! with `queue.ordering = "entity"` (per URL) and `"lifecycle"` (across routes), each
//! held against the same drain unordered, on two backlogs: one event per lead (what
//! the ordering check costs when nothing has to wait), and 20 changes per entity
//! (where each entity's changes go one at a time).

use std::time::SystemTime;

use anyhow::{Context, Result};
use serde_json::json;

use crate::bench::Bench;
use crate::load::INSERT_LEADS_BULK;
use crate::report::{fmt_num, Figure, Report, Target};

pub const NAME: &str = "6 backlog drain, ordered";
/// Ordered throughput must stay within 20 % of unordered per URL, within 30 % across
/// routes (its check also probes the entity's rows to every other URL).
const TARGET_RATIO: f64 = 0.8;
const TARGET_RATIO_LIFECYCLE: f64 = 0.7;
/// Changes per entity in the second backlog.
const CHANGES_PER_ENTITY: u64 = 20;
/// The two ordering modes, with their targets.
const MODES: [(&str, f64); 2] = [
    ("entity", TARGET_RATIO),
    ("lifecycle", TARGET_RATIO_LIFECYCLE),
];
/// Events per fill statement, as in scenario 3.
const CHUNK: u64 = 10_000;

/// `lead_qualified` changes spread round-robin over the entities, so each entity's
/// changes are interleaved with the others' in commit order, as real updates are.
/// $1 the chunk size; entity ids repeat every `entities` (see [`entity_changes`]).
fn entity_changes(entities: u64) -> String {
    format!(
        "SELECT webhook_emit('lead_qualified', 'lead', (g % {entities}) + 1, \
         jsonb_build_object('change', g)) FROM generate_series(1, $1::bigint) AS g"
    )
}

/// Events per backlog at most: four drains of a full run's 100,000 would not finish
/// at today's drain rate.
const MAX_EVENTS: u64 = 10_000;

pub async fn run(bench: &mut Bench<'_>, report: &mut Report) -> Result<()> {
    let n = bench.sizes.backlog.min(MAX_EVENTS);
    let entities = (n / CHANGES_PER_ENTITY).max(1);
    let changes = entity_changes(entities);
    let mut details = serde_json::Map::new();
    for (backlog, fill) in [
        ("one event per lead", INSERT_LEADS_BULK),
        ("20 changes per entity", changes.as_str()),
    ] {
        let (off, _) = drain(bench, report, NAME, n, fill, &[]).await?;
        let mut modes = serde_json::Map::new();
        for (mode, target) in MODES {
            let env = [("RELAY_QUEUE__ORDERING", mode)];
            let (on, repeats) = drain(bench, report, NAME, n, fill, &env).await?;
            report.figures.push(
                Figure::new(
                    NAME,
                    format!(
                        "{} queued events, {backlog}, ordering = {mode}",
                        fmt_num(n as f64)
                    ),
                    on,
                    "events/s",
                )
                .baseline("the same drain unordered", off)
                .target(Target::ratio_at_least(target)),
            );
            modes.insert(
                mode.into(),
                json!({
                    "ordered_events_per_second": on,
                    "ratio": on / off.max(1e-9),
                    "ordered_repeated_deliveries": repeats,
                }),
            );
        }
        bench.stop_relay().await;
        details.insert(
            backlog.into(),
            json!({
                "events": n,
                "entities": if fill == INSERT_LEADS_BULK { n } else { entities },
                "unordered_events_per_second": off,
                "ordered": modes,
            }),
        );
    }
    report
        .details
        .insert(NAME.into(), serde_json::Value::Object(details));
    Ok(())
}

/// With the relay stopped, queues `n` events with `fill` (a statement taking the chunk
/// size as $1), starts the relay with `env` added to its settings, and waits for all
/// `n` at the sink: events/s from the relay's start to the last arrival, and how many
/// deliveries were repeats. The relay is left running.
pub(crate) async fn drain(
    bench: &mut Bench<'_>,
    report: &mut Report,
    name: &str,
    n: u64,
    fill: &str,
    env: &[(&str, &str)],
) -> Result<(f64, u64)> {
    bench.stop_relay().await;
    bench.sink.take();
    let client = bench.db.client().await?;
    for start in (0..n).step_by(CHUNK as usize) {
        let chunk = CHUNK.min(n - start) as i64;
        client
            .execute(fill, &[&chunk])
            .await
            .context("queueing the backlog")?;
    }
    client
        .batch_execute("VACUUM ANALYZE webhook_events")
        .await?;
    for (k, v) in env {
        bench.spec.env.insert(k.to_string(), v.to_string());
    }
    let started = SystemTime::now();
    let relay = bench.relay().await.map(|_| ());
    for (k, _) in env {
        bench.spec.env.remove(*k);
    }
    relay?;
    let sampler = bench.profiler().await?;
    bench.wait_delivered(n).await?;
    bench.wait_recorded().await?;
    report.profile(name, sampler).await?;
    let repeats = bench.sink.requests().saturating_sub(n);
    let last = bench.sink.take().values().max().copied().unwrap_or(started);
    let took = last.duration_since(started).unwrap_or_default();
    Ok((n as f64 / took.as_secs_f64().max(1e-9), repeats))
}
