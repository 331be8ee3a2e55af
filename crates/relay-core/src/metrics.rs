//! The relay's metrics: one `prometheus-client` registry (the Prometheus project's
//! own client), rendered as Prometheus text exposition format 0.0.4. No HTTP here
//! (core serves none); the binary serves [`Metrics::render`] on `/metrics`.
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
//! | `n8n_relay_queue_oldest_due_seconds` | gauge | (how late the most overdue pending row is) |
//! | `n8n_relay_outbox_unrouted` | gauge | (events not yet routed) |
//! | `n8n_relay_outbox_oldest_unrouted_seconds` | gauge | |
//! | `n8n_relay_queue_held` | gauge | (rows held by pauses) |
//! | `n8n_relay_queue_sampled_timestamp_seconds` | gauge | (last successful sample) |
//! | `n8n_relay_endpoint_unhealthy` | gauge | `url` |
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

use std::sync::atomic::AtomicU64;
use std::sync::OnceLock;
use std::time::Duration;

use prometheus_client::encoding::{prometheus_text, EncodeLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::events::EventType;
use crate::queue_admin::{QueueStatus, StatusCounts};

/// The content type of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

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

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeliveryLabels {
    event: String,
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UrlLabel {
    url: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallbackLabels {
    endpoint: String,
    status: String,
}

type GaugeF64 = Gauge<f64, AtomicU64>;

/// Every metric the relay exports, and the registry that renders them.
pub struct Metrics {
    registry: Registry,
    events_captured: Counter,
    events_routed: Counter,
    deliveries: Family<DeliveryLabels, Counter>,
    delivery_latency: Histogram,
    attempt_duration: Histogram,
    queue_depth: Family<StatusLabel, GaugeF64>,
    queue_oldest_pending: GaugeF64,
    queue_oldest_due: GaugeF64,
    outbox_unrouted: Gauge,
    outbox_oldest_unrouted: GaugeF64,
    queue_held: Gauge,
    queue_sampled: Gauge,
    endpoint_unhealthy: Family<UrlLabel, Gauge>,
    listener_reconnects: Counter,
    listener_connected: Gauge,
    callbacks: Family<CallbackLabels, Counter>,
    callback_certificate_expiry: Gauge,
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
            registry: Registry::with_prefix("n8n_relay"),
            events_captured: Counter::default(),
            events_routed: Counter::default(),
            deliveries: Family::default(),
            delivery_latency: Histogram::new(LATENCY_BUCKETS.iter().copied()),
            attempt_duration: Histogram::new(ATTEMPT_BUCKETS.iter().copied()),
            queue_depth: Family::default(),
            queue_oldest_pending: GaugeF64::default(),
            queue_oldest_due: GaugeF64::default(),
            outbox_unrouted: Gauge::default(),
            outbox_oldest_unrouted: GaugeF64::default(),
            queue_held: Gauge::default(),
            queue_sampled: Gauge::default(),
            endpoint_unhealthy: Family::default(),
            listener_reconnects: Counter::default(),
            listener_connected: Gauge::default(),
            callbacks: Family::default(),
            callback_certificate_expiry: Gauge::default(),
        };
        m.register()
    }

    /// Registers every family under its contract name (counters get their `_total`
    /// from the client).
    fn register(mut self) -> Metrics {
        let r = &mut self.registry;
        r.register(
            "events_captured",
            "Outbox events (webhook_events) taken up by the router",
            self.events_captured.clone(),
        );
        r.register(
            "events_routed",
            "webhook_queue rows created from outbox events (one per event and target)",
            self.events_routed.clone(),
        );
        r.register(
            "deliveries",
            "Delivery attempts by event and outcome: sent (2xx), retry (failed, \
             rescheduled) or failed (retries exhausted)",
            self.deliveries.clone(),
        );
        r.register(
            "delivery_latency_seconds",
            "From the event's occurred_at (the business change) to n8n's 2xx",
            self.delivery_latency.clone(),
        );
        r.register(
            "attempt_duration_seconds",
            "Duration of one HTTP delivery attempt, whatever its outcome",
            self.attempt_duration.clone(),
        );
        r.register(
            "queue_depth",
            "webhook_queue rows by status, sampled every few seconds",
            self.queue_depth.clone(),
        );
        r.register(
            "queue_oldest_pending_seconds",
            "Age of the oldest pending webhook_queue row (0 when none), sampled",
            self.queue_oldest_pending.clone(),
        );
        r.register(
            "queue_oldest_due_seconds",
            "How long ago the pending webhook_queue row due longest ago became due (0 when \
             none is due), sampled: the relay is behind or n8n is refusing, or the row is \
             held on purpose (a pause: n8n_relay_queue_held; a disabled route or delivery; \
             an earlier event of its entity); rows waiting out a retry delay do not count",
            self.queue_oldest_due.clone(),
        );
        r.register(
            "outbox_unrouted",
            "Events in the outbox (webhook_events) not yet routed into webhook_queue, sampled: \
             a backlog waits here while every worker is busy; events waiting while \
             n8n_relay_events_routed_total stands still mean the relay cannot route (its log \
             says why)",
            self.outbox_unrouted.clone(),
        );
        r.register(
            "outbox_oldest_unrouted_seconds",
            "Age of the oldest event not yet routed (0 when none), sampled",
            self.outbox_oldest_unrouted.clone(),
        );
        r.register(
            "queue_held",
            "Pending webhook_queue rows held by a run-time pause (n8n-relay queue pause), sampled",
            self.queue_held.clone(),
        );
        r.register(
            "queue_sampled_timestamp_seconds",
            "Unix time of the last queue sample that succeeded (0 before the first): the \
             sampled gauges keep their values while the database cannot be counted",
            self.queue_sampled.clone(),
        );
        r.register(
            "endpoint_unhealthy",
            "1 while a URL's last queue.unhealthy_after attempts all failed (this relay's view), 0 once one succeeds",
            self.endpoint_unhealthy.clone(),
        );
        r.register(
            "listener_reconnects",
            "Times the LISTEN connection was re-established after a loss",
            self.listener_reconnects.clone(),
        );
        r.register(
            "listener_connected",
            "1 while the LISTEN connection is up, else 0",
            self.listener_connected.clone(),
        );
        r.register(
            "callbacks",
            "Callback requests from n8n by endpoint and HTTP status answered",
            self.callbacks.clone(),
        );
        r.register(
            "callback_certificate_expiry_timestamp_seconds",
            "Unix time at which the callback listener's certificate expires (0 without \
             HTTPS): alert on it minus time() falling under a few weeks",
            self.callback_certificate_expiry.clone(),
        );
        // Series that exist from the start, so rate() sees their first increment.
        for event in EventType::ALL {
            for outcome in Outcome::ALL {
                self.deliveries
                    .get_or_create(&DeliveryLabels {
                        event: event.as_str().to_string(),
                        outcome: outcome.as_str(),
                    })
                    .inc_by(0);
            }
        }
        // Every status reads 0 from the start; the sample time stays 0 until a count
        // succeeds (stamped here, a relay that never counted looked freshly sampled).
        self.set_counts(&StatusCounts::default());
        self
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
        self.deliveries
            .get_or_create(&DeliveryLabels {
                event: event.to_string(),
                outcome: outcome.as_str(),
            })
            .inc();
        self.attempt_duration.observe(attempt.as_secs_f64());
        if let Some(latency) = latency {
            self.delivery_latency.observe(latency.as_secs_f64());
        }
    }

    /// One callback answered. `endpoint` is the path's last segment
    /// (`demo-approval`), never anything the caller can make up.
    pub fn callback(&self, endpoint: &str, status: u16) {
        self.callbacks
            .get_or_create(&CallbackLabels {
                endpoint: endpoint.to_string(),
                status: status.to_string(),
            })
            .inc();
    }

    /// Every status is set, 0 included, so a drained status reads 0 rather than
    /// keeping its last value.
    fn set_counts(&self, counts: &StatusCounts) {
        for status in QueueStatus::ALL {
            self.queue_depth
                .get_or_create(&StatusLabel {
                    status: status.as_str(),
                })
                .set(counts.get(status) as f64);
        }
    }

    /// One successful sample of the queue and the outbox.
    pub fn set_queue_depth(&self, depth: &crate::queue_admin::Depth) {
        self.set_counts(&depth.counts);
        self.queue_oldest_pending
            .set(depth.oldest_pending.unwrap_or(0.0));
        self.queue_oldest_due.set(depth.oldest_due.unwrap_or(0.0));
        self.outbox_unrouted.set(depth.unrouted);
        self.outbox_oldest_unrouted
            .set(depth.oldest_unrouted.unwrap_or(0.0));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        self.queue_sampled.set(now);
    }

    /// A URL turned unhealthy (or healthy again).
    pub fn set_endpoint_unhealthy(&self, url: &str, unhealthy: bool) {
        self.endpoint_unhealthy
            .get_or_create(&UrlLabel {
                url: url.to_string(),
            })
            .set(i64::from(unhealthy));
    }

    /// Pending rows held by pauses.
    pub fn set_held(&self, rows: i64) {
        self.queue_held.set(rows);
    }

    /// The callback listener's certificate (as served now) expires at `not_after`.
    pub fn set_callback_certificate_expiry(&self, not_after: std::time::SystemTime) {
        let secs = not_after
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        self.callback_certificate_expiry.set(secs);
    }

    pub fn set_listener_connected(&self, connected: bool) {
        self.listener_connected.set(i64::from(connected));
    }

    pub fn listener_connected(&self) -> bool {
        self.listener_connected.get() >= 1
    }

    pub fn listener_reconnected(&self) {
        self.listener_reconnects.inc();
    }

    /// Prometheus text exposition format 0.0.4.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        // Writing into a String cannot fail.
        let _ = prometheus_text::encode(&mut out, &self.registry);
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

/// RFC 3339 (`2025-11-04T12:00:00.250000Z`) → seconds since the Unix epoch.
fn unix_seconds(timestamp: &str) -> Option<f64> {
    let at = time::OffsetDateTime::parse(timestamp, &time::format_description::well_known::Rfc3339)
        .ok()?;
    Some(at.unix_timestamp() as f64 + f64::from(at.nanosecond()) / 1e9)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_has_help_and_type_and_starts_at_zero() {
        let m = Metrics::new();
        // The families whose series only exist once observed.
        m.callback("demo-approval", 200);
        m.set_endpoint_unhealthy("http://n8n/webhook/x", true);
        let text = m.render();
        for name in [
            "n8n_relay_events_captured_total",
            "n8n_relay_events_routed_total",
            "n8n_relay_deliveries_total",
            "n8n_relay_delivery_latency_seconds",
            "n8n_relay_attempt_duration_seconds",
            "n8n_relay_queue_depth",
            "n8n_relay_queue_oldest_pending_seconds",
            "n8n_relay_queue_oldest_due_seconds",
            "n8n_relay_outbox_unrouted",
            "n8n_relay_outbox_oldest_unrouted_seconds",
            "n8n_relay_listener_reconnects_total",
            "n8n_relay_listener_connected",
            "n8n_relay_callbacks_total",
            "n8n_relay_queue_held",
            "n8n_relay_queue_sampled_timestamp_seconds",
            "n8n_relay_endpoint_unhealthy",
            "n8n_relay_callback_certificate_expiry_timestamp_seconds",
        ] {
            assert!(text.contains(&format!("# HELP {name} ")), "{name}");
            assert!(text.contains(&format!("# TYPE {name} ")), "{name}");
        }
        assert!(text
            .contains("n8n_relay_deliveries_total{event=\"lead_scraped\",outcome=\"sent\"} 0\n"));
        assert!(text.contains("n8n_relay_queue_depth{status=\"pending\"} 0.0\n"));
        assert!(text.contains("n8n_relay_listener_connected 0\n"));
        // Not sampled yet: the sample time says so (it was stamped at start, and a
        // relay that never counted looked freshly sampled).
        assert!(text.contains("n8n_relay_queue_sampled_timestamp_seconds 0\n"));
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
        m.set_queue_depth(&crate::queue_admin::Depth {
            counts,
            oldest_pending: Some(12.5),
            oldest_due: Some(3.0),
            unrouted: 7,
            oldest_unrouted: Some(40.0),
        });
        m.callback("weird\"path\\\n", 401);
        let text = m.render();
        assert!(text.contains("n8n_relay_queue_depth{status=\"pending\"} 4.0\n"));
        assert!(text.contains("n8n_relay_queue_depth{status=\"sent\"} 0.0\n"));
        assert!(text.contains("n8n_relay_queue_oldest_pending_seconds 12.5\n"));
        assert!(text.contains("n8n_relay_queue_oldest_due_seconds 3.0\n"));
        assert!(text.contains("n8n_relay_outbox_unrouted 7\n"));
        assert!(text.contains("n8n_relay_outbox_oldest_unrouted_seconds 40.0\n"));
        let sampled_at: i64 = text
            .lines()
            .find_map(|l| l.strip_prefix("n8n_relay_queue_sampled_timestamp_seconds "))
            .and_then(|v| v.parse().ok())
            .expect("the sample's time");
        assert!(sampled_at > 1_700_000_000, "{sampled_at}");
        assert!(text.contains(
            "n8n_relay_callbacks_total{endpoint=\"weird\\\"path\\\\\\n\",status=\"401\"} 1\n"
        ));
    }
}
