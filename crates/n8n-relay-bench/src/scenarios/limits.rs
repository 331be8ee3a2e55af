//! The limits every figure is held against, measured in the same run before the relay
//! starts: the sink's own ceiling, Postgres's single-row commit rate, and the latency
//! floor of one database round trip plus one POST.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use anyhow::Result;
use serde_json::json;

use crate::bench::{writers_label, Bench, WRITERS};
use crate::load::{self, Table};
use crate::relay::CONCURRENCY;
use crate::report::{Figure, Report};
use crate::stats::{median, percentile};

pub const NAME: &str = "limits";

pub async fn run(bench: &mut Bench<'_>, report: &mut Report) -> Result<()> {
    let sizes = bench.sizes;
    let mut ceiling_rounds = Vec::new();
    for _ in 0..sizes.rounds {
        ceiling_rounds.push(load::http_ceiling(&bench.sink.url(), CONCURRENCY, sizes.round).await?);
    }
    bench.sink.take();
    let ceiling = median(&ceiling_rounds);
    bench.limits.sink_ceiling = Some(ceiling);
    report.figures.push(Figure::new(
        NAME,
        format!("sink ceiling, {CONCURRENCY} keep-alive connections"),
        ceiling,
        "req/s",
    ));

    let mut commit_rounds = serde_json::Map::new();
    for writers in WRITERS {
        let mut rounds = Vec::new();
        for _ in 0..sizes.rounds {
            let t = load::full_speed(
                &bench.db.url,
                Table::CommitProbe,
                writers,
                sizes.round,
                Arc::new(AtomicU64::new(0)),
            )
            .await?;
            rounds.push(t.per_second());
        }
        let rate = median(&rounds);
        bench.limits.commit_rate.push((writers, rate));
        commit_rounds.insert(writers.to_string(), json!(rounds));
        report.figures.push(Figure::new(
            NAME,
            format!("Postgres single-row commits, {}", writers_label(writers)),
            rate,
            "commits/s",
        ));
    }

    let mut floor =
        load::floor_latency(&bench.db.url, &bench.sink.url(), sizes.floor_samples).await?;
    bench.sink.take();
    floor.sort_by(f64::total_cmp);
    for p in [50.0, 99.0] {
        report.figures.push(Figure::new(
            NAME,
            format!("floor: 1 DB round trip + 1 POST, p{p}"),
            percentile(&floor, p),
            "ms",
        ));
    }
    report.details.insert(
        NAME.into(),
        json!({
            "concurrency": CONCURRENCY,
            "sink_ceiling_rounds": ceiling_rounds,
            "commit_rate_rounds": commit_rounds,
            "floor_ms": {
                "p50": percentile(&floor, 50.0),
                "p90": percentile(&floor, 90.0),
                "p99": percentile(&floor, 99.0),
                "max": floor.last().copied().unwrap_or(0.0),
                "samples": floor.len(),
            },
        }),
    );
    bench.limits.floor_ms = floor;
    Ok(())
}
