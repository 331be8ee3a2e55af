//! The results: one row per figure, each beside the baseline it is held against (measured
//! in the same run) and its target, printed as a table or written as JSON.

use serde::Serialize;
use serde_json::Value;

/// How a target is met.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Bound {
    AtLeast,
    AtMost,
}

/// What the target applies to: the figure itself, or the figure ÷ its baseline.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Of {
    Value,
    Ratio,
}

#[derive(Debug, Clone, Serialize)]
pub struct Target {
    pub bound: Bound,
    pub of: Of,
    pub limit: f64,
}

impl Target {
    pub fn value_at_least(limit: f64) -> Target {
        Target {
            bound: Bound::AtLeast,
            of: Of::Value,
            limit,
        }
    }
    pub fn value_at_most(limit: f64) -> Target {
        Target {
            bound: Bound::AtMost,
            of: Of::Value,
            limit,
        }
    }
    pub fn ratio_at_least(limit: f64) -> Target {
        Target {
            bound: Bound::AtLeast,
            of: Of::Ratio,
            limit,
        }
    }
    pub fn ratio_at_most(limit: f64) -> Target {
        Target {
            bound: Bound::AtMost,
            of: Of::Ratio,
            limit,
        }
    }

    fn describe(&self, unit: &str) -> String {
        let op = match self.bound {
            Bound::AtLeast => "≥",
            Bound::AtMost => "≤",
        };
        match self.of {
            Of::Value => format!("{op} {} {unit}", fmt_num(self.limit)),
            Of::Ratio => format!("ratio {op} {}", fmt_num(self.limit)),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Baseline {
    pub label: String,
    pub value: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    pub scenario: &'static str,
    pub name: String,
    pub value: f64,
    pub unit: &'static str,
    pub baseline: Option<Baseline>,
    pub ratio: Option<f64>,
    pub target: Option<Target>,
    /// None when there is no target.
    pub met: Option<bool>,
}

impl Figure {
    pub fn new(
        scenario: &'static str,
        name: impl Into<String>,
        value: f64,
        unit: &'static str,
    ) -> Figure {
        Figure {
            scenario,
            name: name.into(),
            value,
            unit,
            baseline: None,
            ratio: None,
            target: None,
            met: None,
        }
    }

    pub fn baseline(mut self, label: impl Into<String>, value: f64) -> Figure {
        self.ratio = (value != 0.0).then(|| self.value / value);
        self.baseline = Some(Baseline {
            label: label.into(),
            value,
        });
        self.judge()
    }

    pub fn target(mut self, target: Target) -> Figure {
        self.target = Some(target);
        self.judge()
    }

    fn judge(mut self) -> Figure {
        self.met = self.target.as_ref().and_then(|t| {
            let x = match t.of {
                Of::Value => Some(self.value),
                Of::Ratio => self.ratio,
            }?;
            Some(match t.bound {
                Bound::AtLeast => x >= t.limit,
                Bound::AtMost => x <= t.limit,
            })
        });
        self
    }
}

/// A scenario that could not run, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    pub scenario: &'static str,
    pub error: String,
}

#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub mode: &'static str,
    pub machine: Value,
    /// `--relay-env` settings this run used on top of the defaults.
    pub relay_env: Vec<String>,
    pub figures: Vec<Figure>,
    /// Each scenario's raw measurements (rounds, samples, settings).
    pub details: serde_json::Map<String, Value>,
    pub failures: Vec<Failure>,
}

/// Numbers as a person reads them: thousands grouped, small values with decimals.
pub fn fmt_num(x: f64) -> String {
    if !x.is_finite() {
        return x.to_string();
    }
    let a = x.abs();
    if a >= 1000.0 {
        let s = format!("{:.0}", x.abs());
        let mut out = String::new();
        for (i, c) in s.chars().enumerate() {
            if i > 0 && (s.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        if x < 0.0 {
            format!("-{out}")
        } else {
            out
        }
    } else if a >= 100.0 {
        format!("{x:.0}")
    } else if a >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

/// A plain-text table with a header row, columns as wide as their widest cell.
pub fn table<const N: usize>(header: &[&str; N], rows: &[[String; N]]) -> String {
    let mut widths = header.map(|h| h.chars().count());
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r.iter()) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: &[String]| -> String {
        let parts: Vec<String> = cells
            .iter()
            .zip(widths.iter())
            .map(|(c, w)| format!("{c:<w$}", w = *w))
            .collect();
        format!("| {} |", parts.join(" | "))
    };
    let mut out = String::new();
    out.push_str(&line(&header.map(String::from)));
    out.push('\n');
    let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    out.push_str(&format!("|-{}-|\n", rule.join("-|-")));
    for r in rows {
        out.push_str(&line(r));
        out.push('\n');
    }
    out
}

impl Report {
    /// Adds a `--profile` sample set under "profile: SCENARIO".
    pub async fn profile(
        &mut self,
        scenario: &str,
        sampler: Option<crate::profile::Sampler>,
    ) -> anyhow::Result<()> {
        if let Some(s) = sampler {
            let profile = s.finish(scenario).await?;
            self.details.insert(format!("profile: {scenario}"), profile);
        }
        Ok(())
    }

    pub fn to_table(&self) -> String {
        let header = [
            "scenario", "figure", "value", "baseline", "ratio", "target", "met",
        ];
        let mut rows: Vec<[String; 7]> = Vec::new();
        for f in &self.figures {
            rows.push([
                f.scenario.to_string(),
                f.name.clone(),
                format!("{} {}", fmt_num(f.value), f.unit)
                    .trim()
                    .to_string(),
                f.baseline
                    .as_ref()
                    .map(|b| format!("{} ({})", fmt_num(b.value), b.label))
                    .unwrap_or_else(|| "-".into()),
                f.ratio.map(fmt_num).unwrap_or_else(|| "-".into()),
                f.target
                    .as_ref()
                    .map(|t| t.describe(f.unit))
                    .unwrap_or_else(|| "-".into()),
                match f.met {
                    Some(true) => "yes".into(),
                    Some(false) => "NO".into(),
                    None => "-".into(),
                },
            ]);
        }
        let mut out = table(&header, &rows);
        for f in &self.failures {
            out.push_str(&format!("FAILED {}: {}\n", f.scenario, f.error));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratio_targets_are_judged_on_the_ratio() {
        let f = Figure::new("s", "rate", 80.0, "/s")
            .baseline("bare", 100.0)
            .target(Target::ratio_at_least(0.75));
        assert_eq!(f.ratio, Some(0.8));
        assert_eq!(f.met, Some(true));
        let g = Figure::new("s", "p99", 7.0, "ms").target(Target::value_at_most(6.0));
        assert_eq!(g.met, Some(false));
        assert_eq!(Figure::new("s", "rss", 9.0, "MiB").met, None);
    }

    #[test]
    fn numbers_are_grouped() {
        assert_eq!(fmt_num(12345.6), "12,346");
        assert_eq!(fmt_num(123.4), "123");
        assert_eq!(fmt_num(1.234), "1.23");
        assert_eq!(fmt_num(-1500.0), "-1,500");
    }

    #[test]
    fn table_has_a_row_per_figure() {
        let report = Report {
            figures: vec![
                Figure::new("s", "a", 1.0, "ms"),
                Figure::new("s", "b", 2.0, "ms"),
            ],
            ..Report::default()
        };
        assert_eq!(report.to_table().lines().count(), 4);
    }
}
