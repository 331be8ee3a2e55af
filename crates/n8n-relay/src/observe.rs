//! `/metrics`, `/healthz` and `/readyz` on `metrics.listen`, and the sampler that
//! keeps the queue gauges current.
//!
//! - `/metrics`: [`relay_core::metrics`] as Prometheus text. A scrape never touches the
//!   database: the queue gauges come from one GROUP BY every [`SAMPLE_INTERVAL`], or
//!   less often when that count is slow ([`next_sample_in`]).
//! - `/healthz`: 200 while the process serves HTTP (a liveness probe).
//! - `/readyz`: 200 only when the database answers within [`READY_TIMEOUT`] and has
//!   the relay's tables, and the LISTEN connection is up; else 503 with a JSON reason.
//!
//! It has a pool of its own (two connections, one the queue count may hold), so a
//! probe is never stuck behind busy delivery workers or a slow count, and never takes
//! a connection from them.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use deadpool_postgres::Pool;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use relay_core::{metrics, Config};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// How often the queue gauges are refreshed, at most.
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(5);
/// The share of Postgres's time the queue count may take, at most: 1 / this. The count
/// reads every row of `webhook_queue`, and delivered rows stay until retention removes
/// them; at a million rows it takes about 0.3 s, which every 5 s would keep Postgres
/// 6 % busy while the relay itself is idle.
const SAMPLE_SHARE: u32 = 200;
/// Longest a count may take before it is given up (the gauges keep their values).
const SAMPLE_TIMEOUT: Duration = Duration::from_secs(30);

/// The gauges are never older than this while counts succeed.
const SAMPLE_LONGEST_WAIT: Duration = Duration::from_secs(600);

/// When to count again after a count that took `took`: [`SAMPLE_INTERVAL`], or
/// [`SAMPLE_SHARE`] times as long as the count took if that is later, but not later
/// than [`SAMPLE_LONGEST_WAIT`].
fn next_sample_in(took: Duration) -> Duration {
    took.saturating_mul(SAMPLE_SHARE)
        .clamp(SAMPLE_INTERVAL, SAMPLE_LONGEST_WAIT)
}

/// When to count again after a count that succeeded in `took`, the one before it in
/// `before` (`None`: this was the first). One slow count does not set the pace, two in
/// a row do: the first count also loads a new backend's catalog caches and plans its
/// statements, and any count may meet a busy moment of the host (on a loaded test
/// machine one such count put the next 20 s and more away).
fn next_after(before: Option<Duration>, took: Duration) -> Duration {
    match before {
        Some(before) => next_sample_in(took.min(before)),
        None => SAMPLE_INTERVAL,
    }
}

/// How a queue count ended, for [`next_wait`].
enum Sampled {
    Took(Duration),
    Failed,
    TimedOut,
}

/// How the counts have gone: the last one that ended, and how many in a row were
/// given up.
#[derive(Debug, Default)]
struct Counting {
    before: Option<Duration>,
    given_up: u32,
}

/// When to count again, given how this count ended. A count given up at
/// [`SAMPLE_TIMEOUT`] says nothing of the table's size (a lock, a hung link, a busy
/// moment), so it sets no pace: the next try is [`SAMPLE_INTERVAL`] away, doubling
/// with each one given up in a row (a count that always needs longer still runs at
/// most every [`SAMPLE_LONGEST_WAIT`]). A timeout used to put the next count ten
/// minutes away, the gauges frozen that long after the database answered again.
fn next_wait(counting: &mut Counting, sampled: Sampled) -> Duration {
    match sampled {
        Sampled::Took(took) => {
            counting.given_up = 0;
            next_after(counting.before.replace(took), took)
        }
        Sampled::TimedOut => {
            let doublings = counting.given_up.min(16);
            counting.given_up += 1;
            SAMPLE_INTERVAL
                .saturating_mul(1 << doublings)
                .min(SAMPLE_LONGEST_WAIT)
        }
        Sampled::Failed => SAMPLE_INTERVAL,
    }
}

/// How long `/readyz` waits for the database.
pub const READY_TIMEOUT: Duration = Duration::from_secs(1);

/// What `/readyz` requires besides the database.
#[derive(Debug, Clone, Copy)]
pub struct Readiness {
    /// `run` listens for notifications; a relay without its listener is not ready.
    pub require_listener: bool,
}

/// The bound socket: binding first lets `run` fail at once, naming the key, when the
/// port is taken.
pub struct Server {
    listener: TcpListener,
    state: Arc<State>,
}

struct State {
    pool: Pool,
    readiness: Readiness,
}

pub async fn bind(config: &Config, readiness: Readiness) -> anyhow::Result<Server> {
    let addr = config.metrics.listen;
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("metrics.listen: cannot listen on {addr}"))?;
    // Two: one for the queue count, which may take seconds on a large queue or wait
    // behind a lock, one for `/readyz`, which must answer within READY_TIMEOUT.
    let pool = relay_core::db::pool_sized(&config.database, "n8n-relay-observe", 2)
        .context("database.url: could not set up the metrics pool")?;
    Ok(Server {
        listener,
        state: Arc::new(State { pool, readiness }),
    })
}

impl Server {
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    /// Serves until `shutdown`, then lets open requests finish (briefly).
    pub async fn serve(self, shutdown: CancellationToken) {
        if let Some(addr) = self.local_addr() {
            info!(listen = %addr, "serving /metrics, /healthz, /readyz");
        }
        let sampler = tokio::spawn(sample(self.state.pool.clone(), shutdown.clone()));
        let graceful = GracefulShutdown::new();
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(Duration::from_secs(10));
        loop {
            let (stream, peer) = tokio::select! {
                () = shutdown.cancelled() => break,
                accepted = self.listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: pause, do not spin.
                        warn!(error = %e, "metrics listener: accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let state = self.state.clone();
            let service = service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(route(&state, &req).await) }
            });
            let conn = http.serve_connection(TokioIo::new(stream), service);
            let conn = graceful.watch(conn);
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    debug!(%peer, error = %e, "metrics connection ended");
                }
            });
        }
        sampler.abort();
        let _ = tokio::time::timeout(Duration::from_secs(2), graceful.shutdown()).await;
    }
}

async fn route(state: &State, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut resp = plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        resp.headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
        return resp;
    }
    match req.uri().path() {
        "/metrics" => {
            let mut resp = Response::new(Full::new(Bytes::from(metrics::global().render())));
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static(metrics::CONTENT_TYPE),
            );
            resp
        }
        "/healthz" => plain(StatusCode::OK, "ok\n"),
        "/readyz" => ready(state).await,
        _ => plain(
            StatusCode::NOT_FOUND,
            "not found: try /metrics, /healthz or /readyz\n",
        ),
    }
}

async fn ready(state: &State) -> Response<Full<Bytes>> {
    let database = match tokio::time::timeout(READY_TIMEOUT, ping(&state.pool)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("database: {e}")),
        Err(_) => Err(format!(
            "database: no answer within {} ms",
            READY_TIMEOUT.as_millis()
        )),
    };
    let listener = metrics::global().listener_connected();
    let mut reasons = Vec::new();
    if let Err(reason) = &database {
        reasons.push(reason.clone());
    }
    if state.readiness.require_listener && !listener {
        reasons.push("listener: the LISTEN connection is down".to_string());
    }
    let (status, body) = if reasons.is_empty() {
        (
            StatusCode::OK,
            serde_json::json!({"status": "ready", "database": true, "listener": listener}),
        )
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({
                "status": "not ready",
                "reason": reasons.join("; "),
                "database": database.is_ok(),
                "listener": listener,
            }),
        )
    };
    let mut resp = Response::new(Full::new(Bytes::from(format!("{body}\n"))));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    resp
}

/// The database answers and has the relay's tables: a relay started before `migrate`
/// can deliver nothing and take no callback, so it is not ready.
async fn ping(pool: &Pool) -> anyhow::Result<()> {
    let client = pool.get().await.context("no connection")?;
    let missing = relay_core::schema::missing_tables(&client)
        .await
        .context("no answer")?;
    if !missing.is_empty() {
        anyhow::bail!(
            "the relay's tables are missing ({}): run `n8n-relay migrate`",
            missing.join(", ")
        );
    }
    Ok(())
}

/// Refreshes the queue gauges until cancelled. A failed sample keeps the last values;
/// `n8n_relay_queue_sampled_timestamp_seconds` says how old they are, `/readyz`
/// reports the database, and the first failure of a streak is logged as a warning.
async fn sample(pool: Pool, shutdown: CancellationToken) {
    let mut counting = Counting::default();
    let mut failing = false;
    loop {
        let result = async {
            let client = pool.get().await.context("no connection")?;
            // The count's own time, not the wait for the connection (a readiness
            // probe may hold it) nor its creation.
            let started = tokio::time::Instant::now();
            let depth = relay_core::queue_admin::depth(&client)
                .await
                .context("queue depth")?;
            let held = relay_core::pause::held(&client)
                .await
                .context("rows held by pauses")?;
            anyhow::Ok((depth, held, started.elapsed()))
        };
        let sampled = match tokio::time::timeout(SAMPLE_TIMEOUT, result).await {
            Ok(Ok((depth, held, took))) => {
                metrics::global().set_queue_depth(&depth);
                metrics::global().set_held(held);
                if std::mem::take(&mut failing) {
                    info!("the queue gauges are current again");
                }
                Sampled::Took(took)
            }
            Ok(Err(e)) => {
                if std::mem::replace(&mut failing, true) {
                    debug!(error = %crate::error::describe(&e), "queue depth sample failed");
                } else {
                    warn!(error = %crate::error::describe(&e), "queue depth sample failed: the queue gauges keep their last values until one succeeds");
                }
                Sampled::Failed
            }
            Err(_) => {
                failing = true;
                warn!(
                    timeout_seconds = SAMPLE_TIMEOUT.as_secs(),
                    "counting webhook_queue for the queue gauges took too long (a very \
                     large table: `n8n-relay queue cleanup` removes old delivered rows; \
                     or an unresponsive database)"
                );
                Sampled::TimedOut
            }
        };
        let wait = next_wait(&mut counting, sampled);
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
    }
}

fn plain(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slow_queue_count_is_repeated_less_often_so_it_stays_a_small_share() {
        assert_eq!(next_sample_in(Duration::from_millis(2)), SAMPLE_INTERVAL);
        assert_eq!(
            next_sample_in(Duration::from_millis(300)),
            Duration::from_secs(60),
            "a million-row count (0.3 s) every minute: 0.5 % of Postgres's time"
        );
        assert_eq!(next_sample_in(SAMPLE_TIMEOUT), SAMPLE_LONGEST_WAIT);
    }

    #[test]
    fn counts_given_up_set_no_pace_and_are_tried_again_sooner_than_ten_minutes() {
        let mut counting = Counting {
            before: Some(Duration::from_millis(2)),
            given_up: 0,
        };
        // A lock held for a few minutes: 5, 10, 20, 40 s between tries, then a
        // count that goes through is back at the usual pace.
        let waits: Vec<Duration> = (0..4)
            .map(|_| next_wait(&mut counting, Sampled::TimedOut))
            .collect();
        assert_eq!(
            waits,
            [5, 10, 20, 40].map(Duration::from_secs),
            "never the ten minutes a slow table earns"
        );
        assert_eq!(next_wait(&mut counting, Sampled::Failed), SAMPLE_INTERVAL);
        assert_eq!(
            next_wait(&mut counting, Sampled::Took(Duration::from_millis(2))),
            SAMPLE_INTERVAL
        );
        assert_eq!(
            next_wait(&mut counting, Sampled::TimedOut),
            SAMPLE_INTERVAL,
            "the streak starts again"
        );
        // A count that never finishes is still tried at most every ten minutes.
        for _ in 0..20 {
            next_wait(&mut counting, Sampled::TimedOut);
        }
        assert_eq!(
            next_wait(&mut counting, Sampled::TimedOut),
            SAMPLE_LONGEST_WAIT
        );
    }

    #[test]
    fn one_slow_count_does_not_set_the_pace_two_in_a_row_do() {
        let slow = Duration::from_millis(300);
        let quick = Duration::from_millis(2);
        assert_eq!(next_after(None, slow), SAMPLE_INTERVAL, "the first count");
        assert_eq!(next_after(Some(quick), slow), SAMPLE_INTERVAL);
        assert_eq!(next_after(Some(slow), quick), SAMPLE_INTERVAL);
        assert_eq!(next_after(Some(slow), slow), Duration::from_secs(60));
    }
}
