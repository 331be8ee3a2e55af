//! The deliveries-per-minute chart as SVG, drawn on the server: stacked bars (sent,
//! retry, failed) per minute of the last hour. No script, nothing fetched.

use maud::{html, Markup};

use crate::sampler::Outcomes;

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 160.0;
const TOP: f64 = 16.0;
const BOTTOM: f64 = 20.0;
const LEFT: f64 = 40.0;

/// `minutes`: (minute start, attempts), oldest first.
pub fn deliveries(minutes: &[(i64, Outcomes)]) -> Markup {
    let peak = minutes
        .iter()
        .map(|(_, o)| o.total())
        .max()
        .unwrap_or(0)
        .max(1);
    let n = minutes.len().max(1) as f64;
    let slot = (WIDTH - LEFT) / n;
    let bar = (slot - 1.0).max(1.0);
    let plot = HEIGHT - TOP - BOTTOM;
    let y = |v: i64| plot * v as f64 / peak as f64;
    html! {
        svg class="chart" viewBox=(format!("0 0 {WIDTH} {HEIGHT}")) role="img"
            aria-label="Delivery attempts per minute over the last hour: sent, retry, failed" {
            text class="axis" x="0" y=(TOP + 4.0) { (peak) }
            text class="axis" x="0" y=(HEIGHT - BOTTOM) { "0" }
            line class="axis" x1=(LEFT) y1=(HEIGHT - BOTTOM) x2=(WIDTH) y2=(HEIGHT - BOTTOM) {}
            @for (i, (_, o)) in minutes.iter().enumerate() {
                @let x = LEFT + i as f64 * slot;
                @let base = HEIGHT - BOTTOM;
                @let (sent, retry, failed) = (y(o.sent), y(o.retry), y(o.failed));
                @if o.sent > 0 {
                    rect class="sent" x=(fmt(x)) y=(fmt(base - sent)) width=(fmt(bar)) height=(fmt(sent)) {
                        title { (o.sent) " sent" }
                    }
                }
                @if o.retry > 0 {
                    rect class="retry" x=(fmt(x)) y=(fmt(base - sent - retry)) width=(fmt(bar)) height=(fmt(retry)) {
                        title { (o.retry) " to retry" }
                    }
                }
                @if o.failed > 0 {
                    rect class="failed" x=(fmt(x)) y=(fmt(base - sent - retry - failed)) width=(fmt(bar)) height=(fmt(failed)) {
                        title { (o.failed) " failed" }
                    }
                }
            }
            text class="axis" x=(LEFT) y=(HEIGHT - 4.0) { "60 min ago" }
            text class="axis end" x=(WIDTH) y=(HEIGHT - 4.0) { "now" }
        }
    }
}

fn fmt(v: f64) -> String {
    format!("{v:.1}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_are_stacked_in_proportion_to_the_busiest_minute() {
        let minutes = vec![
            (
                0,
                Outcomes {
                    sent: 10,
                    retry: 0,
                    failed: 0,
                },
            ),
            (
                60,
                Outcomes {
                    sent: 5,
                    retry: 3,
                    failed: 2,
                },
            ),
            (120, Outcomes::default()),
        ];
        let svg = deliveries(&minutes).into_string();
        assert_eq!(svg.matches("class=\"sent\"").count(), 2);
        assert_eq!(svg.matches("class=\"retry\"").count(), 1);
        assert_eq!(svg.matches("class=\"failed\"").count(), 1);
        assert!(
            svg.contains("height=\"124.0\""),
            "the peak fills the plot: {svg}"
        );
        assert!(svg.starts_with("<svg"));
        assert!(!svg.contains("<script"));
    }
}
