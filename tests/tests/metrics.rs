//! `/metrics`, `/healthz` and `/readyz` of `n8n-relay run`: the exposition parses as
//! Prometheus text, its counters move with real deliveries, readiness follows the
//! database (cut with a TCP proxy in front of Postgres, never by stopping the shared
//! server), and the Grafana dashboard only queries names the relay exports.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use relay_tests::proxy::{upstream_of, Proxy};
use relay_tests::{wait_until, RelayBuilder, Reply, Sink, TestDb};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const T: Duration = Duration::from_secs(20);

// ---- a tiny HTTP client and Prometheus text parser -------------------------------

struct HttpReply {
    status: u16,
    headers: HashMap<String, String>,
    body: String,
}

/// One request over a fresh connection; `None` if nothing listens (yet).
async fn http(addr: &str, method: &str, path: &str) -> Option<HttpReply> {
    let mut stream = TcpStream::connect(addr).await.ok()?;
    let request = format!("{method} {path} HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut raw))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let mut lines = head.lines();
    let status = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Some(HttpReply {
        status,
        headers,
        body: body.to_string(),
    })
}

async fn get(addr: &str, path: &str) -> Option<HttpReply> {
    http(addr, "GET", path).await
}

#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

#[derive(Debug, Default)]
struct Exposition {
    samples: Vec<Sample>,
    /// Family name -> type.
    types: BTreeMap<String, String>,
}

impl Exposition {
    /// The value of the one sample with this name and these labels (0 if absent).
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .find(|s| {
                s.name == name
                    && s.labels.len() == labels.len()
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(v))
            })
            .map(|s| s.value)
            .unwrap_or(0.0)
    }

    /// Every name a query may use: families, and a histogram's series names.
    fn names(&self) -> BTreeSet<String> {
        let mut names = BTreeSet::new();
        for (family, kind) in &self.types {
            names.insert(family.clone());
            if kind == "histogram" || kind == "summary" {
                for suffix in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{family}{suffix}"));
                }
            }
        }
        names
    }
}

/// Parses with a real Prometheus text-format parser (openmetrics-parser, which
/// conforms to the exposition test suites), then flattens every family into samples
/// named as a query names them (a histogram's `_bucket` with `le`, `_sum`, `_count`).
fn parse_exposition(text: &str) -> Result<Exposition, String> {
    use openmetrics_parser::{MetricNumber, PrometheusValue};
    let parsed =
        openmetrics_parser::prometheus::parse_prometheus(text).map_err(|e| e.to_string())?;
    let mut out = Exposition::default();
    for (name, family) in &parsed.families {
        out.types
            .insert(name.clone(), family.family_type.to_string());
        for sample in family.iter_samples() {
            let labels: BTreeMap<String, String> = sample
                .get_labelset()
                .map_err(|e| e.to_string())?
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let mut push = |suffix: &str, extra: Option<(&str, String)>, value: f64| {
                let mut labels = labels.clone();
                if let Some((k, v)) = extra {
                    labels.insert(k.to_string(), v);
                }
                out.samples.push(Sample {
                    name: format!("{name}{suffix}"),
                    labels,
                    value,
                });
            };
            match &sample.value {
                PrometheusValue::Counter(c) => push("", None, c.value.as_f64()),
                PrometheusValue::Gauge(n) | PrometheusValue::Unknown(n) => {
                    push("", None, n.as_f64())
                }
                PrometheusValue::Histogram(h) => {
                    for b in &h.buckets {
                        let le = if b.upper_bound.is_infinite() {
                            "+Inf".to_string()
                        } else {
                            b.upper_bound.to_string()
                        };
                        push("_bucket", Some(("le", le)), b.count.as_f64());
                    }
                    push(
                        "_sum",
                        None,
                        h.sum.as_ref().map_or(0.0, MetricNumber::as_f64),
                    );
                    push("_count", None, h.count.unwrap_or(0) as f64);
                }
                PrometheusValue::Summary(_) => return Err(format!("{name}: unexpected summary")),
            }
        }
    }
    Ok(out)
}

async fn scrape(addr: &str) -> Option<Exposition> {
    let reply = get(addr, "/metrics").await?;
    assert_eq!(reply.status, 200);
    Some(parse_exposition(&reply.body).unwrap_or_else(|e| panic!("{e}\n{}", reply.body)))
}

// ---- the tests --------------------------------------------------------------------

async fn emit(db: &TestDb, event: &str, n: i64) {
    let client = db.client().await;
    for id in 1..=n {
        client
            .query_one(
                "SELECT webhook_emit($1, 'lead', $2, '{}'::jsonb)",
                &[&event, &id],
            )
            .await
            .expect("webhook_emit");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_as_prometheus_text_and_count_deliveries() {
    let db = TestDb::migrated().await;
    let sink = Sink::start().await;
    let relay = RelayBuilder::new(&db.url, &sink.url()).spawn();
    let addr = relay.builder.metrics_addr();

    let before = wait_until("/metrics answers", T, || scrape(&addr)).await;
    let sent = [("event", "lead_scraped"), ("outcome", "sent")];
    assert_eq!(before.value("n8n_relay_deliveries_total", &sent), 0.0);
    assert!(
        before
            .samples
            .iter()
            .any(|s| s.name == "n8n_relay_deliveries_total"
                && s.labels
                    == BTreeMap::from([
                        ("event".to_string(), "video_failed".to_string()),
                        ("outcome".to_string(), "retry".to_string())
                    ])),
        "every event/outcome series exists from the start"
    );
    let reply = get(&addr, "/metrics").await.expect("metrics");
    assert_eq!(
        reply.headers.get("content-type").map(String::as_str),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );

    emit(&db, "lead_scraped", 3).await;
    sink.wait_for(3, T).await;
    let after = wait_until("the deliveries show in /metrics", T, || async {
        let m = scrape(&addr).await?;
        (m.value("n8n_relay_deliveries_total", &sent) == 3.0).then_some(m)
    })
    .await;
    assert_eq!(after.value("n8n_relay_events_captured_total", &[]), 3.0);
    assert_eq!(after.value("n8n_relay_events_routed_total", &[]), 3.0);
    assert_eq!(
        after.value("n8n_relay_delivery_latency_seconds_count", &[]),
        3.0
    );
    assert_eq!(
        after.value("n8n_relay_attempt_duration_seconds_count", &[]),
        3.0
    );
    assert_eq!(
        after.value(
            "n8n_relay_attempt_duration_seconds_bucket",
            &[("le", "+Inf")]
        ),
        3.0
    );
    let latency_sum = after.value("n8n_relay_delivery_latency_seconds_sum", &[]);
    assert!(latency_sum > 0.0 && latency_sum < 60.0, "{latency_sum}");
    assert_eq!(after.value("n8n_relay_listener_connected", &[]), 1.0);
    assert_eq!(
        after.value(
            "n8n_relay_deliveries_total",
            &[("event", "lead_scraped"), ("outcome", "retry")]
        ),
        0.0
    );

    // The queue gauges come from the periodic sample, not from the scrape.
    wait_until("queue depth shows the sent rows", T, || async {
        let m = scrape(&addr).await?;
        (m.value("n8n_relay_queue_depth", &[("status", "sent")]) == 3.0
            && m.value("n8n_relay_queue_depth", &[("status", "pending")]) == 0.0)
            .then_some(())
    })
    .await;

    let health = get(&addr, "/healthz").await.expect("healthz");
    assert_eq!((health.status, health.body.as_str()), (200, "ok\n"));
    assert_eq!(get(&addr, "/nope").await.expect("404").status, 404);
    let post = http(&addr, "POST", "/metrics").await.expect("405");
    assert_eq!(post.status, 405);
    assert_eq!(
        post.headers.get("allow").map(String::as_str),
        Some("GET, HEAD")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_attempts_count_as_retry_then_failed() {
    let db = TestDb::migrated().await;
    let sink = Sink::with(|_| Reply::status(500)).await;
    let relay = RelayBuilder::new(&db.url, &sink.url())
        .env("WEBHOOK_MAX_RETRIES", 1)
        .env("WEBHOOK_RETRY_DELAYS", "1")
        .spawn();
    let addr = relay.builder.metrics_addr();
    emit(&db, "demo_failed", 1).await;

    let m = wait_until("a retry and a final failure in /metrics", T, || async {
        let m = scrape(&addr).await?;
        (m.value(
            "n8n_relay_deliveries_total",
            &[("event", "demo_failed"), ("outcome", "failed")],
        ) == 1.0)
            .then_some(m)
    })
    .await;
    let demo = |outcome| [("event", "demo_failed"), ("outcome", outcome)];
    assert_eq!(m.value("n8n_relay_deliveries_total", &demo("retry")), 1.0);
    assert_eq!(m.value("n8n_relay_deliveries_total", &demo("sent")), 0.0);
    assert_eq!(
        m.value("n8n_relay_attempt_duration_seconds_count", &[]),
        2.0
    );
    assert_eq!(
        m.value("n8n_relay_delivery_latency_seconds_count", &[]),
        0.0,
        "latency counts deliveries only"
    );
    assert_eq!(sink.count(), 2);
    wait_until("queue depth shows the failed row", T, || async {
        let m = scrape(&addr).await?;
        (m.value("n8n_relay_queue_depth", &[("status", "failed")]) == 1.0).then_some(())
    })
    .await;
}

/// A relay that cannot route (here the queue refuses every insert, as a revoked grant
/// or a schema older than the binary would) showed an empty, idle queue on every
/// gauge: the events waiting in the outbox, and how long the oldest has, are gauges
/// of their own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_the_relay_cannot_route_show_in_the_outbox_gauges() {
    let db = TestDb::migrated().await;
    db.client()
        .await
        .batch_execute(
            "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN RAISE EXCEPTION 'permission denied for table webhook_queue'
                 USING ERRCODE = 'insufficient_privilege'; END $$;
             CREATE TRIGGER refuse BEFORE INSERT ON webhook_queue
                 FOR EACH ROW EXECUTE FUNCTION refuse();",
        )
        .await
        .expect("a queue that refuses rows");
    let sink = Sink::start().await;
    let relay = RelayBuilder::new(&db.url, &sink.url()).spawn();
    let addr = relay.builder.metrics_addr();
    emit(&db, "lead_scraped", 2).await;
    // A time written by hand as -infinity (an infinite interval is an error, and it
    // stopped every gauge).
    db.client()
        .await
        .execute(
            "INSERT INTO webhook_events (event_type, entity_type, entity_id, payload, occurred_at)
             VALUES ('lead_scraped', 'lead', 9, '{}', '-infinity')",
            &[],
        )
        .await
        .expect("an event of -infinity");
    let m = wait_until("three unrouted events in /metrics", T, || async {
        let m = scrape(&addr).await?;
        (m.value("n8n_relay_outbox_unrouted", &[]) == 3.0).then_some(m)
    })
    .await;
    assert!(m.value("n8n_relay_outbox_oldest_unrouted_seconds", &[]) >= 0.0);
    assert_eq!(
        m.value("n8n_relay_queue_depth", &[("status", "pending")]),
        0.0
    );
    assert!(
        m.value("n8n_relay_queue_sampled_timestamp_seconds", &[]) > 1.7e9,
        "sampled"
    );
}

/// Rows that are due and not going out make `n8n_relay_queue_oldest_due_seconds` grow
/// (here a relay with delivery switched off queues and sends nothing); a row waiting
/// out its retry delay would not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_due_row_that_is_not_sent_shows_how_late_it_is() {
    let db = TestDb::migrated().await;
    let sink = Sink::start().await;
    let relay = RelayBuilder::new(&db.url, &sink.url())
        .env("N8N_ENABLED", "false")
        .spawn();
    let addr = relay.builder.metrics_addr();
    emit(&db, "lead_scraped", 1).await;
    wait_until("the queued row is late in /metrics", T, || async {
        let m = scrape(&addr).await?;
        (m.value("n8n_relay_queue_depth", &[("status", "pending")]) == 1.0
            && m.value("n8n_relay_queue_oldest_due_seconds", &[]) > 0.0)
            .then_some(())
    })
    .await;
    db.client()
        .await
        .execute(
            "UPDATE webhook_queue SET next_attempt_at = now() + interval '1 hour'",
            &[],
        )
        .await
        .expect("a retry delay");
    wait_until("a row waiting out its delay is not late", T, || async {
        let m = scrape(&addr).await?;
        (m.value("n8n_relay_queue_oldest_due_seconds", &[]) == 0.0).then_some(())
    })
    .await;
}

/// `/readyz` and the queue count shared one connection: a count that took more than
/// the probe's second (a large queue, a lock) made a healthy relay unready, and
/// Kubernetes took it out of its Service, callbacks and all.
#[tokio::test]
async fn readyz_answers_while_the_queue_count_is_slow() {
    let db = TestDb::migrated().await;
    let sink = Sink::start().await;
    let relay = RelayBuilder::new(&db.url, &sink.url()).spawn();
    let addr = relay.builder.metrics_addr();
    wait_until("/readyz 200", T, || async {
        let r = get(&addr, "/readyz").await?;
        (r.status == 200).then_some(())
    })
    .await;
    // The next count waits behind this lock, holding the sampler's connection.
    let mut blocker = db.client().await;
    let tx = blocker.transaction().await.expect("begin");
    tx.batch_execute("LOCK TABLE webhook_queue IN ACCESS EXCLUSIVE MODE")
        .await
        .expect("lock the queue");
    let watcher = db.client().await;
    wait_until("the queue count waiting for the lock", T, || async {
        let waiting: i64 = watcher
            .query_one(
                "SELECT count(*) FROM pg_stat_activity
                  WHERE application_name = 'n8n-relay-observe' AND wait_event_type = 'Lock'",
                &[],
            )
            .await
            .ok()?
            .get(0);
        (waiting > 0).then_some(())
    })
    .await;
    let ready = get(&addr, "/readyz").await.expect("an answer");
    tx.rollback().await.expect("release");
    assert_eq!(ready.status, 200, "{}", ready.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_turns_503_while_postgres_is_unreachable_and_200_when_it_is_back() {
    let db = TestDb::migrated().await;
    let sink = Sink::start().await;
    let proxy = Proxy::start(upstream_of(&db.url)).await;
    let relay = RelayBuilder::new(&proxy.url_via(&db.url), &sink.url())
        .env("RELAY_DATABASE__CONNECT_TIMEOUT_SECONDS", 2)
        .spawn();
    let addr = relay.builder.metrics_addr();

    let ready = wait_until("/readyz 200", T, || async {
        let r = get(&addr, "/readyz").await?;
        (r.status == 200).then_some(r)
    })
    .await;
    let body: serde_json::Value = serde_json::from_str(&ready.body).expect("readyz JSON");
    assert_eq!(body["status"], "ready");

    proxy.cut();
    let down = wait_until("/readyz 503 once the database is cut off", T, || async {
        let r = get(&addr, "/readyz").await?;
        (r.status == 503).then_some(r)
    })
    .await;
    assert_eq!(
        down.headers.get("content-type").map(String::as_str),
        Some("application/json")
    );
    let body: serde_json::Value = serde_json::from_str(&down.body).expect("readyz JSON");
    assert_eq!(body["status"], "not ready");
    assert_eq!(body["database"], false);
    assert!(
        body["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("database"),
        "{body}"
    );
    // Alive all the same: a liveness probe must not restart a relay waiting for its
    // database.
    assert_eq!(get(&addr, "/healthz").await.expect("healthz").status, 200);
    // The listener notices its own connection's end on its own schedule (a TLS
    // session's reader may see the cut a moment after a new connection is refused).
    wait_until(
        "listener_connected 0 while the database is away",
        T,
        || async {
            let m = scrape(&addr).await?;
            (m.value("n8n_relay_listener_connected", &[]) == 0.0).then_some(())
        },
    )
    .await;

    proxy.restore();
    wait_until("/readyz 200 again", Duration::from_secs(40), || async {
        let r = get(&addr, "/readyz").await?;
        (r.status == 200).then_some(())
    })
    .await;
    let m = scrape(&addr).await.expect("metrics");
    assert!(m.value("n8n_relay_listener_reconnects_total", &[]) >= 1.0);
    assert_eq!(m.value("n8n_relay_listener_connected", &[]), 1.0);

    // And it delivers again.
    emit(&db, "lead_scraped", 1).await;
    sink.wait_for(1, T).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callbacks_count_by_endpoint_and_status() {
    let db = TestDb::migrated().await;
    let sink = Sink::start().await;
    let relay = RelayBuilder::new(&db.url, &sink.url()).spawn();
    let metrics = relay.builder.metrics_addr();
    let callbacks = relay.builder.callbacks_addr();
    wait_until("the callback listener answers", T, || async {
        let r = get(&callbacks, "/api/v1/webhooks/n8n/health").await?;
        (r.status == 200).then_some(())
    })
    .await;
    // No body, no content type, no signature: refused (415, checked first).
    let unsigned = http(&callbacks, "POST", "/api/v1/webhooks/n8n/demo-approval")
        .await
        .expect("demo-approval");
    assert_eq!(unsigned.status, 415);
    let unknown = get(&callbacks, "/api/v1/webhooks/n8n/whatever")
        .await
        .expect("404");
    assert_eq!(unknown.status, 404);

    let m = wait_until("the callbacks show in /metrics", T, || async {
        let m = scrape(&metrics).await?;
        let refused = [("endpoint", "demo-approval"), ("status", "415")];
        (m.value("n8n_relay_callbacks_total", &refused) == 1.0).then_some(m)
    })
    .await;
    assert!(
        m.value(
            "n8n_relay_callbacks_total",
            &[("endpoint", "health"), ("status", "200")]
        ) >= 1.0
    );
    assert_eq!(
        m.value(
            "n8n_relay_callbacks_total",
            &[("endpoint", "unknown"), ("status", "404")]
        ),
        1.0,
        "an unknown path is one label value, not the path"
    );
    assert!(!m
        .samples
        .iter()
        .any(|s| s.labels.values().any(|v| v.contains("whatever"))));
}

#[tokio::test]
async fn metrics_disabled_serves_nothing_and_a_taken_port_fails_start_up_naming_the_key() {
    let db = TestDb::migrated().await;
    let sink = Sink::start().await;
    let relay = RelayBuilder::new(&db.url, &sink.url())
        .env("RELAY_METRICS__ENABLED", "false")
        .spawn();
    wait_until("the relay has started", T, || async {
        relay.log().contains("relay started").then_some(())
    })
    .await;
    // Delivering proves it is fully up; the metrics port is still closed.
    emit(&db, "lead_scraped", 1).await;
    sink.wait_for(1, T).await;
    assert!(TcpStream::connect(relay.builder.metrics_addr())
        .await
        .is_err());

    let taken = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let clash = Mutex::new(
        RelayBuilder::new(&db.url, &sink.url())
            .env("RELAY_METRICS__LISTEN", &addr)
            .spawn(),
    );
    wait_until("the relay exits", T, || {
        let running = clash.lock().expect("relay").is_running();
        async move { (!running).then_some(()) }
    })
    .await;
    let log = clash.lock().expect("relay").log();
    assert!(
        log.contains(&format!("metrics.listen: cannot listen on {addr}")),
        "{log}"
    );
}

#[test]
fn every_metric_the_dashboard_queries_is_exported() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/grafana/n8n-relay-dashboard.json");
    let text = std::fs::read_to_string(&path).expect("dashboard file");
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("dashboard is JSON");
    // A labelled family has no series (and so no HELP or TYPE) until its first
    // observation, as with any Prometheus client: record one callback.
    let metrics = relay_core::metrics::Metrics::new();
    metrics.callback("demo-approval", 200);
    metrics.set_endpoint_unhealthy("http://n8n.test/webhook/x", true);
    let registry = parse_exposition(&metrics.render()).expect("the registry renders valid text");
    let exported = registry.names();

    let mut exprs = Vec::new();
    collect_exprs(&dashboard, &mut exprs);
    assert!(exprs.len() >= 10, "{exprs:?}");
    let mut used = BTreeSet::new();
    for expr in &exprs {
        for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':')) {
            if word.starts_with("n8n_relay_") {
                used.insert(word.to_string());
            }
        }
    }
    let unknown: Vec<&String> = used.difference(&exported).collect();
    assert!(
        unknown.is_empty(),
        "dashboard queries unknown metrics: {unknown:?}"
    );
    // Every family the relay exports has a panel.
    let families: BTreeSet<&str> = used
        .iter()
        .map(|n| {
            ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| n.strip_suffix(s).filter(|b| exported.contains(*b)))
                .unwrap_or(n)
        })
        .collect();
    for family in registry.types.keys() {
        assert!(families.contains(family.as_str()), "no panel uses {family}");
    }
    let titles: Vec<&str> = dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .filter_map(|p| p["title"].as_str())
        .collect();
    for wanted in [
        "Delivery rate by outcome",
        "Commit-to-delivery latency",
        "Queue depth by status",
        "Listener reconnects",
        "Callbacks by endpoint and status",
    ] {
        assert!(titles.contains(&wanted), "{titles:?}");
    }
    assert!(
        exprs.iter().any(|e| e.contains("histogram_quantile(0.99")
            && e.contains("n8n_relay_delivery_latency_seconds_bucket")),
        "p99 latency"
    );
}

fn collect_exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr", serde_json::Value::String(s)) => out.push(s.clone()),
                    _ => collect_exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|i| collect_exprs(i, out)),
        _ => {}
    }
}

#[test]
fn the_parser_rejects_what_prometheus_would() {
    for bad in [
        "# TYPE x counter\nx{a=\"1\" 1\n",
        "# TYPE x counter\nx{a=1} 1\n",
        "# TYPE x counter\nx one\n",
        "# TYPE 1x counter\n",
        "# TYPE x counter\n# TYPE x gauge\nx 1\n",
        "# TYPE h histogram\nh_bucket 1\nh_sum 1\nh_count 1\n",
    ] {
        assert!(parse_exposition(bad).is_err(), "{bad:?}");
    }
    let ok = parse_exposition(
        "# HELP x a \\\\ help\n# TYPE x counter\nx{a=\"q\\\"\\n\",b=\"\"} 2 1700000000\n",
    )
    .expect("valid");
    assert_eq!(ok.samples[0].labels["a"], "q\"\n");
    assert_eq!(ok.value("x", &[("a", "q\"\n"), ("b", "")]), 2.0);
}

/// A relay started before `migrate` answers nothing but errors: Kubernetes must not
/// route n8n's callbacks to it, so it is not ready until the tables are there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_503_until_the_relays_tables_are_installed() {
    let db = TestDb::empty().await;
    let sink = Sink::start().await;
    let relay = RelayBuilder::new(&db.url, &sink.url()).spawn();
    let addr = relay.builder.metrics_addr();
    let unready = wait_until("/readyz to answer", T, || async {
        let r = get(&addr, "/readyz").await?;
        r.body.contains("tables").then_some(r)
    })
    .await;
    assert_eq!(unready.status, 503, "{}", unready.body);
    assert!(
        unready.body.contains("n8n-relay migrate") && unready.body.contains("webhook_queue"),
        "{}",
        unready.body
    );

    let mut client = db.client().await;
    relay_core::schema::migrate(&mut client, false)
        .await
        .expect("migrate");
    wait_until("/readyz 200 once migrated", T, || async {
        let r = get(&addr, "/readyz").await?;
        (r.status == 200).then_some(())
    })
    .await;
}
