//! Two relay builds on one host in one run (`--against`). A speed-up read from two
//! separate runs on a shared host mostly measures the neighbours: the same build has
//! drained 9,700 and 14,800 events/s an hour apart. So the rounds alternate, each
//! pair starting with the other build (against, this, this, against, ...), each round
//! in a fresh database migrated by its own build, and every figure is compared by its
//! medians.

use serde::Serialize;

use crate::report::{fmt_num, Report};
use crate::stats::median;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Build {
    This,
    Against,
}

/// `rounds` rounds of each build, pairs alternating which goes first, so that a drift
/// over the run (a neighbour starting, caches warming) weighs on both alike.
pub fn order(rounds: usize) -> Vec<Build> {
    (0..rounds)
        .flat_map(|i| {
            if i % 2 == 0 {
                [Build::Against, Build::This]
            } else {
                [Build::This, Build::Against]
            }
        })
        .collect()
}

/// One figure of both builds: every round's value, and the medians.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub scenario: &'static str,
    pub figure: String,
    pub unit: &'static str,
    pub this: Vec<f64>,
    pub against: Vec<f64>,
    /// Median of this build ÷ median of the other; None when either has no value or
    /// a median is not positive.
    pub ratio: Option<f64>,
    /// The figure's own ratio to its baseline from the same round (the trigger's
    /// share of the bare INSERT rate, say), median per build.
    pub this_of_baseline: Option<f64>,
    pub against_of_baseline: Option<f64>,
}

/// Every figure either build measured, in the order this build's rounds print them
/// (then any only the other has).
pub fn compare(this: &[Report], against: &[Report]) -> Vec<Row> {
    // Each row with its builds' baseline ratios, one sample per round.
    let mut rows: Vec<(Row, [Vec<f64>; 2])> = Vec::new();
    for (side, reports) in [this, against].into_iter().enumerate() {
        for f in reports.iter().flat_map(|r| &r.figures) {
            // Figure names are fixed per scenario (a measured count goes into the
            // details), so the same bench names a figure alike in every round.
            let at = rows
                .iter()
                .position(|(r, _)| r.scenario == f.scenario && r.figure == f.name);
            let (row, ratios) = match at {
                Some(i) => &mut rows[i],
                None => {
                    rows.push((Row::new(f.scenario, &f.name, f.unit), Default::default()));
                    rows.last_mut().expect("just pushed")
                }
            };
            [&mut row.this, &mut row.against][side].push(f.value);
            ratios[side].extend(f.ratio);
        }
    }
    rows.into_iter()
        .map(|(mut row, [tr, ar])| {
            let (t, a) = (median(&row.this), median(&row.against));
            // No ratio where a build has no value (median 0) or of signed figures (a
            // backlog's growth, say), where it reads as nonsense.
            row.ratio = (t > 0.0 && a > 0.0).then(|| t / a);
            row.this_of_baseline = (!tr.is_empty()).then(|| median(&tr));
            row.against_of_baseline = (!ar.is_empty()).then(|| median(&ar));
            row
        })
        .collect()
}

impl Row {
    fn new(scenario: &'static str, figure: &str, unit: &'static str) -> Row {
        Row {
            scenario,
            figure: figure.to_string(),
            unit,
            this: Vec::new(),
            against: Vec::new(),
            ratio: None,
            this_of_baseline: None,
            against_of_baseline: None,
        }
    }
}

/// "median unit (round / round / ...)", or "-" for no rounds.
fn cell(values: &[f64], unit: &str) -> String {
    if values.is_empty() {
        return "-".into();
    }
    let rounds: Vec<String> = values.iter().map(|v| fmt_num(*v)).collect();
    let median = format!("{} {unit}", fmt_num(median(values)));
    if values.len() == 1 {
        median.trim().to_string()
    } else {
        format!("{} ({})", median.trim(), rounds.join(" / "))
    }
}

pub fn to_table(rows: &[Row]) -> String {
    let header = [
        "scenario",
        "figure",
        "this build: median (rounds)",
        "against: median (rounds)",
        "this ÷ against",
        "of its baseline: this / against",
    ];
    let body: Vec<[String; 6]> = rows
        .iter()
        .map(|r| {
            let of_baseline = match (r.this_of_baseline, r.against_of_baseline) {
                (None, None) => "-".to_string(),
                (t, a) => format!(
                    "{} / {}",
                    t.map(fmt_num).unwrap_or_else(|| "-".into()),
                    a.map(fmt_num).unwrap_or_else(|| "-".into())
                ),
            };
            [
                r.scenario.to_string(),
                r.figure.clone(),
                cell(&r.this, r.unit),
                cell(&r.against, r.unit),
                r.ratio.map(fmt_num).unwrap_or_else(|| "-".into()),
                of_baseline,
            ]
        })
        .collect();
    crate::report::table(&header, &body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Figure;

    fn report(figures: Vec<Figure>) -> Report {
        Report {
            figures,
            ..Report::default()
        }
    }

    #[test]
    fn rounds_alternate_which_build_goes_first() {
        use Build::{Against as A, This as T};
        assert_eq!(order(1), vec![A, T]);
        assert_eq!(order(3), vec![A, T, T, A, A, T]);
    }

    #[test]
    fn figures_are_compared_by_their_medians() {
        let this = [
            report(vec![Figure::new("drain", "Postgres CPU", 60.0, "µs")]),
            report(vec![Figure::new("drain", "Postgres CPU", 90.0, "µs")]),
            report(vec![Figure::new("drain", "Postgres CPU", 70.0, "µs")]),
        ];
        let against = [
            report(vec![
                Figure::new("drain", "Postgres CPU", 140.0, "µs"),
                Figure::new("drain", "only the old build has it", 1.0, ""),
            ]),
            report(vec![Figure::new("drain", "Postgres CPU", 100.0, "µs")]),
        ];
        let rows = compare(&this, &against);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].this, vec![60.0, 90.0, 70.0]);
        assert_eq!(rows[0].against, vec![140.0, 100.0]);
        // 70 ÷ 120
        assert_eq!(rows[0].ratio, Some(70.0 / 120.0));
        assert!(rows[1].this.is_empty());
        assert_eq!(rows[1].ratio, None);
        assert!(to_table(&rows).contains("70.0 µs (60.0 / 90.0 / 70.0)"));

        let growth = |v: f64| report(vec![Figure::new("keep", "backlog growth", v, "/s")]);
        let signed = compare(&[growth(-10.0)], &[growth(-3.0)]);
        assert_eq!(signed[0].ratio, None, "no ratio of signed figures");
    }

    #[test]
    fn a_figure_held_against_its_baseline_shows_both_builds_shares() {
        let with_baseline = |v: f64| {
            report(vec![Figure::new(
                "trigger",
                "rate, 16 writers",
                v,
                "rows/s",
            )
            .baseline("bare", 1000.0)])
        };
        let rows = compare(&[with_baseline(700.0)], &[with_baseline(650.0)]);
        assert_eq!(rows[0].this_of_baseline, Some(0.7));
        assert_eq!(rows[0].against_of_baseline, Some(0.65));
        assert!(to_table(&rows).contains("0.70 / 0.65"));
    }
}
