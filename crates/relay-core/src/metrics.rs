//! The relay's metrics: a small fixed registry rendered as Prometheus text
//! exposition format 0.0.4. No HTTP here (core serves none); the binary serves
//! [`Metrics::render`] on `/metrics`.
//!
//! Dependency-free on purpose: the relay has a dozen series, known up front, so
//! atomics and a mutex-guarded map per labelled family are all it takes.
//!
//! The names (a contract: dashboards and alerts use them; the Grafana dashboard in
//! `deploy/grafana/` is tested against [`Metrics::render`]):
//!
//! | name | type | labels |
//! |---|---|---|
//! | `n8n_relay_events_captured_total` | counter | |
//! | `n8n_relay_events_routed_total` | counter | |
//! | `n8n_relay_deliveries_total` | counter | `event`, `outcome` = sent, retry, failed |
//! | `n8n_relay_delivery_latency_seconds` | histogram | (occurred_at to 2xx) |
//! | `n8n_relay_attempt_duration_seconds` | histogram | |
//! | `n8n_relay_queue_depth` | gauge | `status` |
//! | `n8n_relay_queue_oldest_pending_seconds` | gauge | |
//! | `n8n_relay_listener_reconnects_total` | counter | |
//! | `n8n_relay_listener_connected` | gauge | |
//! | `n8n_relay_callbacks_total` | counter | `endpoint`, `status` |
//!
//! Who records what:
//! - the router: [`Metrics::routed`] after each route statement (outbox events taken,
//!   queue rows created);
//! - the dispatcher: [`Metrics::delivery`] per attempt outcome;
//! - the listener: `listener_reconnects` and `listener_connected`;
//! - the callbacks listener: [`Metrics::callback`] per request answered;
//! - a sampler in the binary: [`Metrics::set_queue_depth`] from one GROUP BY query
//!   every few seconds (never a `COUNT(*)` per scrape).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use crate::events::EventType;
use crate::queue_admin::{QueueStatus, StatusCounts};

/// The content type of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Commit-to-delivery: from the event's `occurred_at` to n8n's 2xx. Spans retries,
/// so the buckets reach an hour.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
];
/// One HTTP attempt, bounded by `queue.timeout_seconds`.
pub const ATTEMPT_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// What became of one delivery attempt (the `outcome` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// n8n answered 2xx.
    Sent,
    /// Failed, another attempt is scheduled.
    Retry,
    /// Failed for the last time: the row is `failed`.
    Failed,
}

impl Outcome {
    pub const ALL: [Outcome; 3] = [Outcome::Sent, Outcome::Retry, Outcome::Failed];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Sent => "sent",
            Outcome::Retry => "retry",
            Outcome::Failed => "failed",
        }
    }
}

/// Every metric the relay exports. Field names follow the metric names.
pub struct Metrics {
    pub events_captured: Counter,
    pub events_routed: Counter,
    pub deliveries: CounterVec,
    pub delivery_latency: Histogram,
    pub attempt_duration: Histogram,
    pub queue_depth: GaugeVec,
    pub queue_oldest_pending: Gauge,
    pub listener_reconnects: Counter,
    pub listener_connected: Gauge,
    pub callbacks: CounterVec,
}

/// The process-wide registry that the daemon, the callbacks listener and `/metrics`
/// share.
pub fn global() -> &'static Metrics {
    static GLOBAL: OnceLock<Metrics> = OnceLock::new();
    GLOBAL.get_or_init(Metrics::new)
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let m = Metrics {
            events_captured: Counter::new(
                "n8n_relay_events_captured_total",
                "Outbox events (webhook_events) taken up by the router.",
            ),
            events_routed: Counter::new(
                "n8n_relay_events_routed_total",
                "webhook_queue rows created from outbox events (one per event and target).",
            ),
            deliveries: CounterVec::new(
                "n8n_relay_deliveries_total",
                "Delivery attempts by event and outcome: sent (2xx), retry (failed, \
                 rescheduled) or failed (retries exhausted).",
                &["event", "outcome"],
            ),
            delivery_latency: Histogram::new(
                "n8n_relay_delivery_latency_seconds",
                "From the event's occurred_at (the business change) to n8n's 2xx.",
                LATENCY_BUCKETS,
            ),
            attempt_duration: Histogram::new(
                "n8n_relay_attempt_duration_seconds",
                "Duration of one HTTP delivery attempt, whatever its outcome.",
                ATTEMPT_BUCKETS,
            ),
            queue_depth: GaugeVec::new(
                "n8n_relay_queue_depth",
                "webhook_queue rows by status, sampled every few seconds.",
                &["status"],
            ),
            queue_oldest_pending: Gauge::new(
                "n8n_relay_queue_oldest_pending_seconds",
                "Age of the oldest pending webhook_queue row (0 when none), sampled.",
            ),
            listener_reconnects: Counter::new(
                "n8n_relay_listener_reconnects_total",
                "Times the LISTEN connection was re-established after a loss.",
            ),
            listener_connected: Gauge::new(
                "n8n_relay_listener_connected",
                "1 while the LISTEN connection is up, else 0.",
            ),
            callbacks: CounterVec::new(
                "n8n_relay_callbacks_total",
                "Callback requests from n8n by endpoint and HTTP status answered.",
                &["endpoint", "status"],
            ),
        };
        // Series that exist from the start, so rate() sees their first increment.
        for event in EventType::ALL {
            for outcome in Outcome::ALL {
                m.deliveries.inc_by(&[event.as_str(), outcome.as_str()], 0);
            }
        }
        m.set_queue_depth(&StatusCounts::default(), None);
        m
    }

    /// One route statement's work: outbox events taken, queue rows created.
    pub fn routed(&self, events: u64, queue_rows: u64) {
        self.events_captured.inc_by(events);
        self.events_routed.inc_by(queue_rows);
    }

    /// One attempt's outcome and duration; `latency` (from `occurred_at`) when sent.
    pub fn delivery(
        &self,
        event: &str,
        outcome: Outcome,
        attempt: Duration,
        latency: Option<Duration>,
    ) {
        self.deliveries.inc(&[event, outcome.as_str()]);
        self.attempt_duration.observe(attempt.as_secs_f64());
        if let Some(latency) = latency {
            self.delivery_latency.observe(latency.as_secs_f64());
        }
    }

    /// One callback answered. `endpoint` is the path's last segment
    /// (`demo-approval`), never anything the caller can make up.
    pub fn callback(&self, endpoint: &str, status: u16) {
        self.callbacks.inc(&[endpoint, &status.to_string()]);
    }

    /// Every status is set, 0 included, so a drained status reads 0 rather than
    /// keeping its last value.
    pub fn set_queue_depth(&self, counts: &StatusCounts, oldest_pending_seconds: Option<f64>) {
        for status in QueueStatus::ALL {
            self.queue_depth
                .set(&[status.as_str()], counts.get(status) as f64);
        }
        self.queue_oldest_pending
            .set(oldest_pending_seconds.unwrap_or(0.0));
    }

    pub fn set_listener_connected(&self, connected: bool) {
        self.listener_connected
            .set(if connected { 1.0 } else { 0.0 });
    }

    /// Prometheus text exposition format 0.0.4.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        self.events_captured.render(&mut out);
        self.events_routed.render(&mut out);
        self.deliveries.render(&mut out);
        self.delivery_latency.render(&mut out);
        self.attempt_duration.render(&mut out);
        self.queue_depth.render(&mut out);
        self.queue_oldest_pending.render(&mut out);
        self.listener_reconnects.render(&mut out);
        self.listener_connected.render(&mut out);
        self.callbacks.render(&mut out);
        out
    }
}

/// Time elapsed since `timestamp`, an RFC 3339 UTC time as Postgres renders it
/// (`2025-11-04T12:00:00.123456Z`): how commit-to-delivery latency is measured from
/// a row's `occurred_at`. `None` if it does not parse or lies in the future.
pub fn elapsed_since(timestamp: &str) -> Option<Duration> {
    let then = unix_seconds(timestamp)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_secs_f64();
    let elapsed = now - then;
    (elapsed >= 0.0).then(|| Duration::from_secs_f64(elapsed))
}

/// `YYYY-MM-DDTHH:MM:SS[.frac]Z` → seconds since the Unix epoch.
fn unix_seconds(timestamp: &str) -> Option<f64> {
    let (date, time) = timestamp.strip_suffix('Z')?.split_once('T')?;
    let mut d = date.splitn(3, '-');
    let year: i64 = d.next()?.parse().ok()?;
    let month: i64 = d.next()?.parse().ok()?;
    let day: i64 = d.next()?.parse().ok()?;
    let mut t = time.splitn(3, ':');
    let hour: i64 = t.next()?.parse().ok()?;
    let minute: i64 = t.next()?.parse().ok()?;
    let second: f64 = t.next()?.parse().ok()?;
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    // Days from 1970-01-01 to the civil date (Howard Hinnant's days_from_civil).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((days * 86_400 + hour * 3600 + minute * 60) as f64 + second)
}

struct Meta {
    name: &'static str,
    help: &'static str,
}

impl Meta {
    fn header(&self, kind: &str, out: &mut String) {
        let _ = writeln!(out, "# HELP {} {}", self.name, escape_help(self.help));
        let _ = writeln!(out, "# TYPE {} {kind}", self.name);
    }
}

pub struct Counter {
    meta: Meta,
    value: AtomicU64,
}

impl Counter {
    fn new(name: &'static str, help: &'static str) -> Counter {
        Counter {
            meta: Meta { name, help },
            value: AtomicU64::new(0),
        }
    }

    pub fn inc(&self) {
        self.inc_by(1);
    }

    pub fn inc_by(&self, n: u64) {
        self.value.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.value.load(Ordering::Relaxed)
    }

    fn render(&self, out: &mut String) {
        self.meta.header("counter", out);
        let _ = writeln!(out, "{} {}", self.meta.name, self.get());
    }
}

/// A counter per label-value combination.
pub struct CounterVec {
    meta: Meta,
    labels: &'static [&'static str],
    values: Mutex<BTreeMap<Vec<String>, u64>>,
}

impl CounterVec {
    fn new(name: &'static str, help: &'static str, labels: &'static [&'static str]) -> Self {
        CounterVec {
            meta: Meta { name, help },
            labels,
            values: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn inc(&self, values: &[&str]) {
        self.inc_by(values, 1);
    }

    /// `values` in the order of the family's label names.
    pub fn inc_by(&self, values: &[&str], n: u64) {
        debug_assert_eq!(values.len(), self.labels.len(), "{}", self.meta.name);
        let key: Vec<String> = values.iter().map(|v| v.to_string()).collect();
        let mut map = self.values.lock().unwrap_or_else(|p| p.into_inner());
        *map.entry(key).or_insert(0) += n;
    }

    pub fn get(&self, values: &[&str]) -> u64 {
        let key: Vec<String> = values.iter().map(|v| v.to_string()).collect();
        let map = self.values.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&key).copied().unwrap_or(0)
    }

    fn render(&self, out: &mut String) {
        self.meta.header("counter", out);
        let map = self.values.lock().unwrap_or_else(|p| p.into_inner());
        for (values, n) in map.iter() {
            let _ = writeln!(
                out,
                "{}{} {n}",
                self.meta.name,
                label_set(self.labels, values)
            );
        }
    }
}

/// A value that goes up and down, stored as f64 bits.
pub struct Gauge {
    meta: Meta,
    bits: AtomicU64,
}

impl Gauge {
    fn new(name: &'static str, help: &'static str) -> Gauge {
        Gauge {
            meta: Meta { name, help },
            bits: AtomicU64::new(0f64.to_bits()),
        }
    }

    pub fn set(&self, value: f64) {
        self.bits.store(value.to_bits(), Ordering::Relaxed);
    }

    pub fn get(&self) -> f64 {
        f64::from_bits(self.bits.load(Ordering::Relaxed))
    }

    fn render(&self, out: &mut String) {
        self.meta.header("gauge", out);
        let _ = writeln!(out, "{} {}", self.meta.name, number(self.get()));
    }
}

pub struct GaugeVec {
    meta: Meta,
    labels: &'static [&'static str],
    values: Mutex<BTreeMap<Vec<String>, f64>>,
}

impl GaugeVec {
    fn new(name: &'static str, help: &'static str, labels: &'static [&'static str]) -> Self {
        GaugeVec {
            meta: Meta { name, help },
            labels,
            values: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn set(&self, values: &[&str], value: f64) {
        debug_assert_eq!(values.len(), self.labels.len(), "{}", self.meta.name);
        let key: Vec<String> = values.iter().map(|v| v.to_string()).collect();
        let mut map = self.values.lock().unwrap_or_else(|p| p.into_inner());
        map.insert(key, value);
    }

    pub fn get(&self, values: &[&str]) -> Option<f64> {
        let key: Vec<String> = values.iter().map(|v| v.to_string()).collect();
        let map = self.values.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&key).copied()
    }

    fn render(&self, out: &mut String) {
        self.meta.header("gauge", out);
        let map = self.values.lock().unwrap_or_else(|p| p.into_inner());
        for (values, v) in map.iter() {
            let _ = writeln!(
                out,
                "{}{} {}",
                self.meta.name,
                label_set(self.labels, values),
                number(*v)
            );
        }
    }
}

/// Fixed buckets; counts are kept per bucket and summed cumulatively on render.
pub struct Histogram {
    meta: Meta,
    bounds: &'static [f64],
    /// One per bound, plus the +Inf bucket.
    buckets: Vec<AtomicU64>,
    sum_bits: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    fn new(name: &'static str, help: &'static str, bounds: &'static [f64]) -> Histogram {
        Histogram {
            meta: Meta { name, help },
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_bits: AtomicU64::new(0f64.to_bits()),
            count: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, value: f64) {
        let value = if value.is_finite() {
            value.max(0.0)
        } else {
            0.0
        };
        let index = self
            .bounds
            .iter()
            .position(|&b| value <= b)
            .unwrap_or(self.bounds.len());
        self.buckets[index].fetch_add(1, Ordering::Relaxed);
        let _ = self
            .sum_bits
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                Some((f64::from_bits(bits) + value).to_bits())
            });
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    fn render(&self, out: &mut String) {
        self.meta.header("histogram", out);
        let name = self.meta.name;
        let mut cumulative = 0;
        for (i, bucket) in self.buckets.iter().enumerate() {
            cumulative += bucket.load(Ordering::Relaxed);
            let le = self
                .bounds
                .get(i)
                .map(|b| number(*b))
                .unwrap_or_else(|| "+Inf".into());
            let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
        }
        let sum = f64::from_bits(self.sum_bits.load(Ordering::Relaxed));
        let _ = writeln!(out, "{name}_sum {}", number(sum));
        // The count is the +Inf bucket's, so the two always agree in one scrape.
        let _ = writeln!(out, "{name}_count {cumulative}");
    }
}

fn label_set(names: &[&str], values: &[String]) -> String {
    let pairs: Vec<String> = names
        .iter()
        .zip(values)
        .map(|(n, v)| format!("{n}=\"{}\"", escape_label(v)))
        .collect();
    if pairs.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", pairs.join(","))
    }
}

/// Label values escape backslash, double quote and newline.
fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// HELP text escapes backslash and newline.
fn escape_help(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\n', "\\n")
}

fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_has_help_and_type_and_starts_at_zero() {
        let text = Metrics::new().render();
        for name in [
            "n8n_relay_events_captured_total",
            "n8n_relay_events_routed_total",
            "n8n_relay_deliveries_total",
            "n8n_relay_delivery_latency_seconds",
            "n8n_relay_attempt_duration_seconds",
            "n8n_relay_queue_depth",
            "n8n_relay_queue_oldest_pending_seconds",
            "n8n_relay_listener_reconnects_total",
            "n8n_relay_listener_connected",
            "n8n_relay_callbacks_total",
        ] {
            assert!(text.contains(&format!("# HELP {name} ")), "{name}");
            assert!(text.contains(&format!("# TYPE {name} ")), "{name}");
        }
        assert!(text
            .contains("n8n_relay_deliveries_total{event=\"lead_scraped\",outcome=\"sent\"} 0\n"));
        assert!(text.contains("n8n_relay_queue_depth{status=\"pending\"} 0\n"));
        assert!(text.contains("n8n_relay_listener_connected 0\n"));
    }

    #[test]
    fn deliveries_count_by_event_and_outcome_and_feed_the_histograms() {
        let m = Metrics::new();
        m.delivery(
            "lead_scraped",
            Outcome::Sent,
            Duration::from_millis(20),
            Some(Duration::from_millis(300)),
        );
        m.delivery("lead_scraped", Outcome::Retry, Duration::from_secs(2), None);
        let text = m.render();
        assert!(text
            .contains("n8n_relay_deliveries_total{event=\"lead_scraped\",outcome=\"sent\"} 1\n"));
        assert!(text
            .contains("n8n_relay_deliveries_total{event=\"lead_scraped\",outcome=\"retry\"} 1\n"));
        assert!(text.contains("n8n_relay_attempt_duration_seconds_bucket{le=\"0.01\"} 0\n"));
        assert!(text.contains("n8n_relay_attempt_duration_seconds_bucket{le=\"0.025\"} 1\n"));
        assert!(text.contains("n8n_relay_attempt_duration_seconds_bucket{le=\"2.5\"} 2\n"));
        assert!(text.contains("n8n_relay_attempt_duration_seconds_bucket{le=\"+Inf\"} 2\n"));
        assert!(text.contains("n8n_relay_attempt_duration_seconds_count 2\n"));
        assert!(text.contains("n8n_relay_attempt_duration_seconds_sum 2.02\n"));
        assert!(text.contains("n8n_relay_delivery_latency_seconds_bucket{le=\"0.25\"} 0\n"));
        assert!(text.contains("n8n_relay_delivery_latency_seconds_bucket{le=\"0.5\"} 1\n"));
        assert!(text.contains("n8n_relay_delivery_latency_seconds_count 1\n"));
    }

    #[test]
    fn timestamps_parse_as_postgres_renders_them() {
        assert_eq!(unix_seconds("1970-01-01T00:00:00Z"), Some(0.0));
        assert_eq!(unix_seconds("2000-03-01T00:00:00Z"), Some(951_868_800.0));
        assert_eq!(
            unix_seconds("2025-11-04T12:00:00.250000Z"),
            Some(1_762_257_600.25)
        );
        assert_eq!(unix_seconds("2025-11-04 12:00:00"), None);
        assert_eq!(unix_seconds("2025-13-04T12:00:00Z"), None);
        assert!(elapsed_since("2020-01-01T00:00:00Z").is_some());
        assert_eq!(elapsed_since("2999-01-01T00:00:00Z"), None);
    }

    #[test]
    fn queue_depth_sets_every_status_and_label_values_are_escaped() {
        let m = Metrics::new();
        let counts = StatusCounts {
            pending: 4,
            failed: 1,
            total: 5,
            ..StatusCounts::default()
        };
        m.set_queue_depth(&counts, Some(12.5));
        m.callback("weird\"path\\\n", 401);
        let text = m.render();
        assert!(text.contains("n8n_relay_queue_depth{status=\"pending\"} 4\n"));
        assert!(text.contains("n8n_relay_queue_depth{status=\"sent\"} 0\n"));
        assert!(text.contains("n8n_relay_queue_oldest_pending_seconds 12.5\n"));
        assert!(text.contains(
            "n8n_relay_callbacks_total{endpoint=\"weird\\\"path\\\\\\n\",status=\"401\"} 1\n"
        ));
    }
}
