//! Scenario 7, what a rate limit costs when it is not reached: scenario 3's drain with
//! `routes.lead_scraped.max_per_second` set far above what the relay can deliver,
//! against the same drain without a limit, interleaved (off, on, off, on) so that both
//! see the same machine; medians. The limit's cost is the token grants (one short
//! statement per hundredth of a second's worth of the limit) and the per-pass
//! bookkeeping.

use anyhow::Result;
use serde_json::json;

use crate::bench::Bench;
use crate::load::INSERT_LEADS_BULK;
use crate::report::{fmt_num, Figure, Report, Target};
use crate::scenarios::drain_ordered::drain;
use crate::stats::median;

pub const NAME: &str = "7 backlog drain, rate limit not reached";
/// The limit may cost at most 5 % of the drain.
const TARGET_RATIO: f64 = 0.95;
/// Far above any drain rate on these machines.
const LIMIT: &str = "100000";
const LIMITED: &[(&str, &str)] = &[("RELAY_ROUTES__LEAD_SCRAPED__MAX_PER_SECOND", LIMIT)];
/// Events per drain at most (four drains).
const MAX_EVENTS: u64 = 10_000;

pub async fn run(bench: &mut Bench<'_>, report: &mut Report) -> Result<()> {
    let n = bench.sizes.backlog.min(MAX_EVENTS);
    let (mut off, mut on) = (Vec::new(), Vec::new());
    for _ in 0..2 {
        off.push(
            drain(bench, report, NAME, n, INSERT_LEADS_BULK, &[])
                .await?
                .0,
        );
        on.push(
            drain(bench, report, NAME, n, INSERT_LEADS_BULK, LIMITED)
                .await?
                .0,
        );
    }
    bench.stop_relay().await;
    let (off_median, on_median) = (median(&off), median(&on));
    report.figures.push(
        Figure::new(
            NAME,
            format!(
                "{} queued events, max_per_second = {LIMIT} on their route (median of 2)",
                fmt_num(n as f64)
            ),
            on_median,
            "events/s",
        )
        .baseline("the same drain without a limit", off_median)
        .target(Target::ratio_at_least(TARGET_RATIO)),
    );
    report.details.insert(
        NAME.into(),
        json!({
            "events": n,
            "limit_per_second": LIMIT,
            "unlimited_events_per_second": off,
            "limited_events_per_second": on,
            "ratio": on_median / off_median.max(1e-9),
        }),
    );
    Ok(())
}
