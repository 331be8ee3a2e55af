//! Scenario 1, trigger cost: the business INSERT rate into `leads` with the relay's
//! triggers against the same table without them, relay running. With and without
//! alternate in short rounds (the machine is shared and noisy) and the medians are
//! compared. Before each with-triggers round the relay has delivered everything, so
//! each round starts from an idle relay.
//!
//! At the headline writer count two more series run with the relay frozen (SIGSTOP):
//! the triggers' own cost, apart from the relay's work competing for the same cores;
//! and the same with the wake-up armed before every row, so every transaction sends a
//! NOTIFY (what a relay without the wake-up protocol would cost). Then the WAL each
//! row writes, with and without the triggers.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use anyhow::Result;
use serde_json::json;

use crate::bench::{writers_label, Bench, WRITERS};
use crate::load::{self, Table, INSERT_LEADS_BARE_BULK, INSERT_LEADS_BULK, WAL_POSITION};
use crate::report::{Figure, Report, Target};
use crate::stats::median;

pub const NAME: &str = "1 trigger cost";
const HEADLINE_WRITERS: usize = 16;
const TARGET_RATIO: f64 = 0.75;

/// One measurement in a round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Series {
    WithTriggers,
    WithoutTriggers,
    RelayPaused,
    NotifyEach,
}

impl Series {
    fn table(self) -> Table {
        match self {
            Series::WithTriggers | Series::RelayPaused => Table::Leads,
            Series::WithoutTriggers => Table::LeadsBare,
            Series::NotifyEach => Table::LeadsNotifyEach,
        }
    }

    fn relay_frozen(self) -> bool {
        matches!(self, Series::RelayPaused | Series::NotifyEach)
    }
}

pub async fn run(bench: &mut Bench<'_>, report: &mut Report) -> Result<()> {
    let sizes = bench.sizes;
    bench.relay().await?;
    bench.sink.take();
    let mut events = 0u64;
    let mut details = serde_json::Map::new();
    for writers in WRITERS {
        let mut series = vec![Series::WithTriggers, Series::WithoutTriggers];
        if writers == HEADLINE_WRITERS {
            series.extend([Series::RelayPaused, Series::NotifyEach]);
        }
        let mut rates: HashMap<Series, Vec<f64>> = HashMap::new();
        for round in 0..sizes.rounds {
            // Rotate which goes first, so a drift in the machine's load does not
            // always favour the same side.
            series.rotate_left(usize::from(round > 0));
            for s in series.clone() {
                let relay = bench.relay().await?;
                if s.relay_frozen() {
                    relay.pause();
                }
                let table = s.table();
                let measured = load::full_speed(
                    &bench.db.url,
                    table,
                    writers,
                    sizes.round,
                    Arc::new(AtomicU64::new(0)),
                )
                .await;
                if s.relay_frozen() {
                    bench.relay().await?.resume();
                }
                let t = measured?;
                rates.entry(s).or_default().push(t.per_second());
                if table != Table::LeadsBare {
                    events += t.rows;
                    bench.wait_delivered(events).await?;
                }
            }
        }
        let rate = |s: Series| median(rates.get(&s).map(Vec::as_slice).unwrap_or_default());
        let without = rate(Series::WithoutTriggers);
        let mut figure = Figure::new(
            NAME,
            format!("INSERT rate with triggers, {}", writers_label(writers)),
            rate(Series::WithTriggers),
            "rows/s",
        )
        .baseline("without triggers", without);
        if writers == HEADLINE_WRITERS {
            figure = figure.target(Target::ratio_at_least(TARGET_RATIO));
        }
        report.figures.push(figure);
        for (s, label) in [
            (Series::RelayPaused, "same, relay frozen"),
            (Series::NotifyEach, "same, NOTIFY every transaction"),
        ] {
            if rates.contains_key(&s) {
                report.figures.push(
                    Figure::new(
                        NAME,
                        format!("{label}, {}", writers_label(writers)),
                        rate(s),
                        "rows/s",
                    )
                    .baseline("without triggers", without),
                );
            }
        }
        details.insert(
            writers.to_string(),
            json!({
                "with_triggers": rates.get(&Series::WithTriggers),
                "without_triggers": rates.get(&Series::WithoutTriggers),
                "relay_frozen": rates.get(&Series::RelayPaused),
                "notify_every_transaction": rates.get(&Series::NotifyEach),
            }),
        );
    }

    // WAL per row, relay frozen so its own writes do not count. WAL is cluster-wide
    // and others may write too: the least of three tries is the closest.
    let rows: i64 = if sizes.quick { 500 } else { 5_000 };
    let client = bench.db.client().await?;
    let mut wal = serde_json::Map::new();
    let mut per_row = HashMap::new();
    for (label, sql) in [
        ("without_triggers", INSERT_LEADS_BARE_BULK),
        ("with_triggers", INSERT_LEADS_BULK),
    ] {
        let mut tries = Vec::new();
        for _ in 0..3 {
            bench.relay().await?.pause();
            let before: f64 = client.query_one(WAL_POSITION, &[]).await?.get(0);
            let inserted = client.execute(sql, &[&rows]).await;
            let after: f64 = client.query_one(WAL_POSITION, &[]).await?.get(0);
            bench.relay().await?.resume();
            inserted?;
            tries.push((after - before) / rows as f64);
            if sql == INSERT_LEADS_BULK {
                events += rows as u64;
                bench.wait_delivered(events).await?;
            }
        }
        let least = tries.iter().copied().fold(f64::INFINITY, f64::min);
        per_row.insert(label, least);
        wal.insert(label.into(), json!(tries));
    }
    report.figures.push(
        Figure::new(
            NAME,
            "WAL per row with triggers",
            per_row["with_triggers"],
            "bytes",
        )
        .baseline("without triggers", per_row["without_triggers"]),
    );
    bench.sink.take();
    report.details.insert(
        NAME.into(),
        json!({
            "rounds_rows_per_second": details,
            "wal_bytes_per_row_tries": wal,
            "events_delivered": events,
        }),
    );
    Ok(())
}
