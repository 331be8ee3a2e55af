//! The null sink: an HTTP/1.1 server on loopback that answers 200 at once and records,
//! per `X-Webhook-Id`, the wall-clock time the request arrived. Wall clock because
//! latency is measured from a commit stamped elsewhere (the writer, or the database's
//! `clock_timestamp()`); all of them read this machine's clock.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::Notify;

#[derive(Default)]
struct State {
    /// First arrival of each webhook id.
    first_arrival: Mutex<HashMap<String, SystemTime>>,
    /// Every request, repeats included.
    requests: AtomicU64,
    arrived: Notify,
}

pub struct Sink {
    pub addr: SocketAddr,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl Sink {
    pub async fn start() -> Result<Sink> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State::default());
        let st = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let st = st.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| handle(st.clone(), req));
                    let _ = http1::Builder::new()
                        .keep_alive(true)
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(Sink { addr, state, task })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Distinct webhook ids received so far.
    pub fn distinct(&self) -> usize {
        self.state
            .first_arrival
            .lock()
            .map(|m| m.len())
            .unwrap_or(0)
    }

    /// Requests received so far, repeats included.
    pub fn requests(&self) -> u64 {
        self.state.requests.load(Ordering::Relaxed)
    }

    /// Empties the record (between scenarios) and returns what it held.
    pub fn take(&self) -> HashMap<String, SystemTime> {
        self.state.requests.store(0, Ordering::Relaxed);
        self.state
            .first_arrival
            .lock()
            .map(|mut m| std::mem::take(&mut *m))
            .unwrap_or_default()
    }

    /// Waits until `n` distinct ids arrived. The error says how many did: those
    /// missing are events the relay lost or could not deliver in time.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let notified = self.state.arrived.notified();
            let got = self.distinct();
            if got >= n {
                return Ok(());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!("the sink received {got} of {n} events within {timeout:?}: events lost or stuck");
            }
            let _ = tokio::time::timeout(left.min(Duration::from_millis(100)), notified).await;
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handle(
    state: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let arrived = SystemTime::now();
    let id = req
        .headers()
        .get("x-webhook-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    // Read the body so the connection stays reusable.
    let _ = req.into_body().collect().await;
    state.requests.fetch_add(1, Ordering::Relaxed);
    if let Some(id) = id {
        if let Ok(mut map) = state.first_arrival.lock() {
            map.entry(id).or_insert(arrived);
        }
        state.arrived.notify_waiters();
    }
    Ok(Response::new(Full::new(Bytes::from_static(
        b"{\"ok\":true}",
    ))))
}
