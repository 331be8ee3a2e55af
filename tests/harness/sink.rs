//! The fake n8n: a real hyper HTTP/1.1 server on loopback that records every request
//! and answers as the test tells it to.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::Notify;

/// One request as the sink received it.
#[derive(Debug, Clone)]
pub struct SinkRequest {
    pub method: String,
    pub path: String,
    /// Header names lower-cased.
    pub headers: HashMap<String, String>,
    pub body: Bytes,
    pub received_at: Instant,
    pub received_wall: SystemTime,
    /// 1-based count of requests this sink had seen with the same `X-Webhook-Id`.
    pub nth_for_id: usize,
}

impl SinkRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("sink request body is JSON")
    }
    pub fn webhook_id(&self) -> String {
        self.header("x-webhook-id").unwrap_or_default().to_string()
    }
    /// Checks `X-Webhook-Signature-256` over `"{timestamp}.{body}"` with the secret the
    /// harness gives every relay; returns the timestamp. Panics when it does not verify.
    pub fn verify_signature(&self) -> u64 {
        relay_core::signature::verify(
            crate::relay::TEST_WEBHOOK_SECRET.as_bytes(),
            self.header("x-webhook-timestamp"),
            self.header("x-webhook-signature-256"),
            &self.body,
            relay_core::signature::unix_now(),
            300,
        )
        .unwrap_or_else(|e| panic!("signature does not verify: {e}"))
    }
}

/// How the sink answers one request.
#[derive(Debug, Clone)]
pub enum Reply {
    /// A status (and headers), after an optional delay.
    Status {
        status: u16,
        headers: Vec<(String, String)>,
        delay: Duration,
    },
    /// A status with this JSON body (in place of `{"ok":true}`).
    Body(u16, String),
    /// Never answer (the relay must time out).
    Hang,
    /// Close the connection without a response.
    Drop,
    /// Send the status line and headers announcing a body, then close the connection
    /// partway through it.
    Truncated(u16),
    /// Send the status line, headers and the body's first bytes, then nothing more,
    /// never ending (an answer streamed slower than the relay's timeout).
    Stalled(u16),
}

impl Reply {
    pub fn ok() -> Reply {
        Reply::status(200)
    }
    pub fn status(status: u16) -> Reply {
        Reply::Status {
            status,
            headers: Vec::new(),
            delay: Duration::ZERO,
        }
    }
    pub fn with_header(self, name: &str, value: &str) -> Reply {
        match self {
            Reply::Status {
                status,
                mut headers,
                delay,
            } => {
                headers.push((name.to_string(), value.to_string()));
                Reply::Status {
                    status,
                    headers,
                    delay,
                }
            }
            other => other,
        }
    }
    pub fn after(self, d: Duration) -> Reply {
        match self {
            Reply::Status {
                status, headers, ..
            } => Reply::Status {
                status,
                headers,
                delay: d,
            },
            other => other,
        }
    }
}

type Behaviour = Arc<dyn Fn(&SinkRequest) -> Reply + Send + Sync>;

struct State {
    requests: Mutex<Vec<SinkRequest>>,
    per_id: Mutex<HashMap<String, usize>>,
    behaviour: Mutex<Behaviour>,
    arrived: Notify,
}

/// A running sink; stops when dropped.
pub struct Sink {
    pub addr: SocketAddr,
    state: Arc<State>,
    /// Accepts connections and owns their tasks: aborting it closes everything.
    task: tokio::task::JoinHandle<()>,
    /// Set for an HTTPS sink.
    tls: Option<tokio_rustls::TlsAcceptor>,
}

impl Sink {
    /// A sink that answers 200 to everything.
    pub async fn start() -> Sink {
        Sink::with(|_| Reply::ok()).await
    }

    /// A sink whose answer is decided per request.
    pub async fn with(f: impl Fn(&SinkRequest) -> Reply + Send + Sync + 'static) -> Sink {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind sink");
        Sink::on(listener, f)
    }

    /// A sink that answers `first` to the first attempt of every webhook (by
    /// `X-Webhook-Id`) and 200 to every later one.
    pub async fn first_attempt(first: Reply) -> Sink {
        Sink::with(move |r| {
            if r.nth_for_id == 1 {
                first.clone()
            } else {
                Reply::ok()
            }
        })
        .await
    }

    /// A sink on a listener the test bound (e.g. to restart on the same port).
    pub fn on(
        listener: TcpListener,
        f: impl Fn(&SinkRequest) -> Reply + Send + Sync + 'static,
    ) -> Sink {
        let addr = listener.local_addr().expect("sink addr");
        let state = Arc::new(State {
            requests: Mutex::new(Vec::new()),
            per_id: Mutex::new(HashMap::new()),
            behaviour: Mutex::new(Arc::new(f)),
            arrived: Notify::new(),
        });
        let task = serve(listener, state.clone(), None);
        Sink {
            addr,
            state,
            task,
            tls: None,
        }
    }

    /// An HTTPS sink answering 200, presenting `server`; with `client_ca`, it asks
    /// for a client certificate signed by that CA and refuses the handshake without.
    pub async fn https(
        server: &crate::certs::CertFiles,
        client_ca: Option<&std::path::Path>,
    ) -> Sink {
        let chain = relay_core::tls::load_certs("sink cert", &server.cert).expect("sink cert");
        let key = relay_core::tls::load_key("sink key", &server.key).expect("sink key");
        let builder = rustls::ServerConfig::builder_with_provider(relay_core::tls::provider())
            .with_safe_default_protocol_versions()
            .expect("protocol versions");
        let builder = match client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let roots = relay_core::tls::root_store("sink client CA", ca).expect("client CA");
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    relay_core::tls::provider(),
                )
                .build()
                .expect("client verifier");
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder
            .with_single_cert(chain, key)
            .expect("sink TLS config");
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let mut sink = Sink::with(|_| Reply::ok()).await;
        sink.task.abort();
        let _ = (&mut sink.task).await;
        let listener = TcpListener::bind(sink.addr).await.expect("rebind the sink");
        sink.task = serve(listener, sink.state.clone(), Some(acceptor.clone()));
        sink.tls = Some(acceptor);
        sink
    }

    /// Closes the port and every open connection: deliveries now fail with
    /// "connection refused" until [`Sink::resume`]. What was recorded is kept.
    pub fn stop(&mut self) {
        self.task.abort();
    }

    /// Listens again on the same address after [`Sink::stop`].
    pub async fn resume(&mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
        let listener = TcpListener::bind(self.addr)
            .await
            .expect("rebind the sink on its old port");
        self.task = serve(listener, self.state.clone(), self.tls.clone());
    }

    /// Base URL, e.g. `http://127.0.0.1:40123` (`https://` for an HTTPS sink).
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// Changes how the sink answers from now on.
    pub fn set_behaviour(&self, f: impl Fn(&SinkRequest) -> Reply + Send + Sync + 'static) {
        if let Ok(mut b) = self.state.behaviour.lock() {
            *b = Arc::new(f);
        }
    }

    pub fn requests(&self) -> Vec<SinkRequest> {
        self.state
            .requests
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default()
    }

    pub fn count(&self) -> usize {
        self.state.requests.lock().map(|r| r.len()).unwrap_or(0)
    }

    /// Distinct `X-Webhook-Id`s received.
    pub fn distinct_ids(&self) -> std::collections::HashSet<String> {
        self.requests().iter().map(|r| r.webhook_id()).collect()
    }

    /// Webhook ids received more than once, with how many times. Panics if two
    /// requests for one id differ in body or event: a re-sent webhook must be the
    /// same webhook.
    pub fn duplicates(&self) -> std::collections::BTreeMap<String, usize> {
        let mut by_id: HashMap<String, Vec<SinkRequest>> = HashMap::new();
        for r in self.requests() {
            by_id.entry(r.webhook_id()).or_default().push(r);
        }
        let mut dups = std::collections::BTreeMap::new();
        for (id, reqs) in by_id {
            if reqs.len() < 2 {
                continue;
            }
            for r in &reqs[1..] {
                assert_eq!(
                    r.body, reqs[0].body,
                    "webhook {id} re-sent with another body"
                );
                assert_eq!(
                    r.header("x-webhook-event"),
                    reqs[0].header("x-webhook-event"),
                    "webhook {id} re-sent as another event"
                );
            }
            dups.insert(id, reqs.len());
        }
        dups
    }

    /// Waits until at least `n` requests arrived, or panics after `timeout`.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<SinkRequest> {
        let deadline = Instant::now() + timeout;
        loop {
            let notified = self.state.arrived.notified();
            let got = self.requests();
            if got.len() >= n {
                return got;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                panic!(
                    "sink: timed out after {timeout:?} with {} of {n} requests",
                    got.len()
                );
            }
            let _ = tokio::time::timeout(left.min(Duration::from_millis(200)), notified).await;
        }
    }

    /// Waits until `n` distinct webhook ids arrived.
    pub async fn wait_for_distinct(&self, n: usize, timeout: Duration) -> Vec<SinkRequest> {
        let deadline = Instant::now() + timeout;
        loop {
            let notified = self.state.arrived.notified();
            let got = self.requests();
            let distinct: std::collections::HashSet<String> =
                got.iter().map(|r| r.webhook_id()).collect();
            if distinct.len() >= n {
                return got;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                panic!(
                    "sink: timed out after {timeout:?} with {} of {n} distinct webhook ids",
                    distinct.len()
                );
            }
            let _ = tokio::time::timeout(left.min(Duration::from_millis(200)), notified).await;
        }
    }
}

/// The accept loop; connection tasks live in its JoinSet, so aborting the loop closes
/// them too.
fn serve(
    listener: TcpListener,
    state: Arc<State>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut connections = tokio::task::JoinSet::new();
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            while connections.try_join_next().is_some() {}
            let st = state.clone();
            let tls = tls.clone();
            connections.spawn(async move {
                let service = service_fn(move |req| handle(st.clone(), req));
                let http = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                match tls {
                    None => {
                        let _ = http.serve_connection(TokioIo::new(stream), service).await;
                    }
                    Some(acceptor) => {
                        // A client that refuses the certificate never gets this far.
                        if let Ok(stream) = acceptor.accept(stream).await {
                            let _ = http.serve_connection(TokioIo::new(stream), service).await;
                        }
                    }
                }
            });
        }
    })
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A response body that yields a few bytes, waits long enough for hyper to flush the
/// head and those bytes, and then fails, which makes hyper close the connection
/// mid-response.
struct CutShort {
    sent: bool,
    pause: std::pin::Pin<Box<tokio::time::Sleep>>,
}

/// A body that sends its first bytes and then never another.
struct Stalling {
    sent: bool,
}

impl hyper::body::Body for Stalling {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, BoxError>>> {
        if self.sent {
            return std::task::Poll::Pending;
        }
        self.sent = true;
        std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(Bytes::from_static(
            b"{\"streaming\":",
        )))))
    }
}

impl CutShort {
    fn new() -> CutShort {
        CutShort {
            sent: false,
            pause: Box::pin(tokio::time::sleep(Duration::from_millis(100))),
        }
    }
}

impl hyper::body::Body for CutShort {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, BoxError>>> {
        if !self.sent {
            self.sent = true;
            return std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(Bytes::from_static(
                b"{\"partial\":",
            )))));
        }
        match self.pause.as_mut().poll(cx) {
            std::task::Poll::Pending => std::task::Poll::Pending,
            std::task::Poll::Ready(()) => {
                std::task::Poll::Ready(Some(Err("sink: cut mid-response".into())))
            }
        }
    }
}

async fn handle(
    state: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<BoxBody<Bytes, BoxError>>, BoxError> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let headers: HashMap<String, String> = parts
        .headers
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    let id = headers.get("x-webhook-id").cloned().unwrap_or_default();
    let nth_for_id = {
        let mut per = state.per_id.lock().expect("sink lock");
        let n = per.entry(id).or_insert(0);
        *n += 1;
        *n
    };
    let record = SinkRequest {
        method: parts.method.to_string(),
        path: parts.uri.path().to_string(),
        headers,
        body,
        received_at: Instant::now(),
        received_wall: SystemTime::now(),
        nth_for_id,
    };
    let behaviour = state.behaviour.lock().expect("sink lock").clone();
    let reply = behaviour(&record);
    state.requests.lock().expect("sink lock").push(record);
    state.arrived.notify_waiters();
    match reply {
        Reply::Status {
            status,
            headers,
            delay,
        } => {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            let mut resp = Response::builder().status(status);
            for (k, v) in headers {
                resp = resp.header(k, v);
            }
            Ok(resp
                .body(
                    Full::new(Bytes::from_static(b"{\"ok\":true}"))
                        .map_err(|never| match never {})
                        .boxed(),
                )
                .expect("sink response"))
        }
        Reply::Body(status, body) => Ok(Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(
                Full::new(Bytes::from(body))
                    .map_err(|never| match never {})
                    .boxed(),
            )
            .expect("sink response")),
        Reply::Hang => {
            std::future::pending::<()>().await;
            unreachable!()
        }
        Reply::Drop => Err("sink: closing the connection without a response".into()),
        Reply::Stalled(status) => Ok(Response::builder()
            .status(status)
            .header("content-length", "1000")
            .body(Stalling { sent: false }.boxed())
            .expect("sink response")),
        Reply::Truncated(status) => {
            // Content-Length promises more than the body yields before failing.
            Ok(Response::builder()
                .status(status)
                .header("content-length", "1000")
                .body(CutShort::new().boxed())
                .expect("sink response"))
        }
    }
}
