//! Scenario 1, trigger cost: the business INSERT rate into `leads` with the relay's
//! triggers against the same table without them, relay running. With and without
//! alternate in short rounds (the machine is shared and noisy) and the medians are
//! compared. Before each with-triggers round the relay has delivered everything, so
//! each round starts from an idle relay.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use anyhow::Result;
use serde_json::json;

use crate::bench::{writers_label, Bench, WRITERS};
use crate::load::{self, Table};
use crate::report::{Figure, Report, Target};
use crate::stats::median;

pub const NAME: &str = "1 trigger cost";
const TARGET_RATIO_AT_16: f64 = 0.75;

pub async fn run(bench: &mut Bench<'_>, report: &mut Report) -> Result<()> {
    let sizes = bench.sizes;
    bench.relay().await?;
    bench.sink.take();
    let mut events = 0u64;
    let mut details = serde_json::Map::new();
    for writers in WRITERS {
        let (mut with, mut without) = (Vec::new(), Vec::new());
        for round in 0..sizes.rounds {
            // Alternate which goes first, so a drift in the machine's load does not
            // always favour the same side.
            let order = if round % 2 == 0 {
                [Table::Leads, Table::LeadsBare]
            } else {
                [Table::LeadsBare, Table::Leads]
            };
            for table in order {
                bench.relay().await?;
                let t = load::full_speed(
                    &bench.db.url,
                    table,
                    writers,
                    sizes.round,
                    Arc::new(AtomicU64::new(0)),
                )
                .await?;
                if table == Table::Leads {
                    with.push(t.per_second());
                    events += t.rows;
                    bench.wait_delivered(events).await?;
                } else {
                    without.push(t.per_second());
                }
            }
        }
        let (w, wo) = (median(&with), median(&without));
        let mut figure = Figure::new(
            NAME,
            format!("INSERT rate with triggers, {}", writers_label(writers)),
            w,
            "rows/s",
        )
        .baseline("without triggers", wo);
        if writers == 16 {
            figure = figure.target(Target::ratio_at_least(TARGET_RATIO_AT_16));
        }
        report.figures.push(figure);
        details.insert(
            writers.to_string(),
            json!({"with_triggers": with, "without_triggers": without}),
        );
    }
    bench.sink.take();
    report.details.insert(
        NAME.into(),
        json!({"rounds_rows_per_second": details, "events_delivered": events}),
    );
    Ok(())
}
