//! The accept loop and its limits: at most `callbacks.max_connections` connections
//! at once (further clients wait in the kernel's backlog), request headers within
//! `callbacks.header_read_timeout_seconds`, and bodies within
//! `callbacks.request_timeout_seconds`. On shutdown it stops accepting, lets
//! in-flight requests finish (bounded by the request timeout), and waits for their
//! log rows.
//!
//! hyper's header timeout only runs once HTTP/1 parsing has started, and the auto
//! builder first sniffs for the HTTP/2 preface with no timeout at all, so a client
//! that connects and sends nothing (or one byte) would hold a slot forever. Each
//! connection therefore also has an idle guard: with no request in progress for
//! the header timeout, it is closed.
//!
//! The header timeout alone still lets slow-drip (slowloris) clients that open more
//! connections than the cap keep every slot taken, reconnecting as they are cut off,
//! so that n8n's callbacks wait in the backlog for up to the header timeout. So when
//! every slot is taken and a new client arrives, the connection that has gone
//! longest without a request in progress (one still dripping its headers, or an idle
//! keep-alive) is closed to make room; connections with a request in progress are
//! never closed for this.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use deadpool_postgres::Pool;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use relay_core::Config;
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore};
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::verify::Verifier;
use crate::{log, receipts, routes, CallbackError};

/// At shutdown, how long requests in flight may take to finish (n8n retries one cut
/// short: every callback is idempotent).
const STOP_REQUESTS: Duration = Duration::from_secs(10);
/// With every connection taken, how often one more is asked to close while the next
/// one waits for its place.
const MAKE_ROOM_EVERY: Duration = Duration::from_millis(100);
/// How long after its last request ended a connection is taken to have written its
/// answer: asked to close before then, it closes through hyper's graceful shutdown
/// (at most [`IDLE_CLOSE`]), after it at once.
const ANSWER_WRITTEN: Duration = Duration::from_millis(200);
/// How long a connection that has just answered may take to close once asked.
const IDLE_CLOSE: Duration = Duration::from_secs(1);
/// How long past `callbacks.request_timeout_seconds` a connection with a request in
/// progress may take to close once asked.
const BUSY_CLOSE_EXTRA: Duration = Duration::from_secs(10);
/// At shutdown, how long the `webhook_logs` rows of those requests may take to write.
const STOP_LOGS: Duration = Duration::from_secs(5);

/// What every request handler shares.
pub struct State {
    pub config: Arc<Config>,
    pub pool: Pool,
    pub verifier: Verifier,
    /// Request bodies held at once (see [`crate::body::BODIES_AT_ONCE`]).
    pub bodies: crate::body::Budget,
    logs: log::Writer,
    /// The health endpoint found the database unreachable last time: it warns once
    /// per outage, since anyone who can reach it may ask as often as they like.
    pub(crate) health_failing: std::sync::atomic::AtomicBool,
    /// The health endpoint's last look at the database, and when.
    pub(crate) health_seen: tokio::sync::Mutex<Option<(std::time::Instant, serde_json::Value)>>,
}

/// Serves callbacks on `listener` until `shutdown` is cancelled, then drains.
///
/// Refuses to start without `security.n8n_webhook_secret` (see [`crate::check`]).
/// A database that is down is not a reason to stop: requests get 503 and the
/// health endpoint says why, until it is back.
pub async fn serve(
    config: Arc<Config>,
    pool: Pool,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), CallbackError> {
    crate::check(&config)?;
    let limits = config.callbacks.clone();
    let tasks = TaskTracker::new();
    let logs_done = CancellationToken::new();
    let state = Arc::new(State {
        verifier: Verifier::new(&config.security)?,
        bodies: crate::body::Budget::new(config.callbacks.max_body_bytes),
        config: config.clone(),
        pool: pool.clone(),
        logs: log::Writer::start(pool.clone(), &tasks, logs_done.clone()),
        health_failing: std::sync::atomic::AtomicBool::new(false),
        health_seen: tokio::sync::Mutex::new(None),
    });
    tasks.spawn(receipts::clean_periodically(
        pool,
        config.security.max_age_seconds,
        shutdown.clone(),
    ));

    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(limits.header_read_timeout_seconds));
    // One request at a time per connection, as HTTP/1.1 has it: hyper's default of 200
    // streams let one connection read 200 bodies at once.
    builder
        .http2()
        .max_concurrent_streams(1)
        .timer(TokioTimer::new())
        .keep_alive_interval(Duration::from_secs(limits.header_read_timeout_seconds))
        .keep_alive_timeout(Duration::from_secs(limits.header_read_timeout_seconds));

    let tls = match crate::tls::acceptor(&limits)? {
        Some((acceptor, certificates)) => {
            crate::tls::watch(certificates, &tasks, shutdown.clone());
            Some(acceptor)
        }
        None => None,
    };
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let open = Arc::new(OpenConnections::default());
    let handshakes = Arc::new(FailedHandshakes::default());
    // Every connection's task: at the stop, each finishes its request in progress.
    let connections = TaskTracker::new();
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, https = tls.is_some(), "callback listener ready");
    }
    loop {
        let stream = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: pause instead of spinning.
                    tracing::warn!(error = %e, "callback listener could not accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            // Every place taken: ask one connection after another to close until one
            // does, so that connections kept busy with cheap requests (which a single
            // ask passed over) cannot keep this one, and n8n behind it, waiting.
            Err(_) => {
                let waited = loop {
                    if open.make_room() {
                        tracing::debug!(
                        "callbacks.max_connections reached: closing the connection idle or busy longest"
                    );
                    }
                    tokio::select! {
                        _ = shutdown.cancelled() => break None,
                        slot = slots.clone().acquire_owned() => match slot {
                            Ok(slot) => break Some(slot),
                            Err(_) => break None, // the semaphore is never closed
                        },
                        () = tokio::time::sleep(MAKE_ROOM_EVERY) => {}
                    }
                };
                match waited {
                    Some(slot) => slot,
                    None => break,
                }
            }
        };
        let state = state.clone();
        let activity = Arc::new(Activity::new());
        let (id, evict) = open.add(activity.clone());
        let seen = activity.clone();
        let service = service_fn(move |request| {
            let state = state.clone();
            let busy = seen.begin();
            async move {
                let response = respond(&state, request).await;
                drop(busy);
                Ok::<_, Infallible>(response)
            }
        });
        let idle_limit = Duration::from_secs(limits.header_read_timeout_seconds);
        // A request's body has request_timeout to arrive; its answer then takes what
        // its statements take, bounded by their own timeouts.
        let busy_close = Duration::from_secs(limits.request_timeout_seconds) + BUSY_CLOSE_EXTRA;
        let open = open.clone();
        let builder = builder.clone();
        let stop = shutdown.clone();
        let tls = tls.clone();
        let handshakes = handshakes.clone();
        connections.spawn(async move {
            // The TLS handshake counts as idle time: bounded like a client that
            // sends nothing, and the first to go when room is needed.
            let io = match tls {
                None => Either::Left(stream),
                Some(acceptor) => {
                    // An n8n left on http:// sends its request in plain text: answered
                    // in plain HTTP, saying why, where a TLS alert read as "HTTP/0.9"
                    // or garbage on the other side.
                    let mut first = [0u8; 1];
                    let peeked = tokio::select! {
                        done = tokio::time::timeout(idle_limit, stream.peek(&mut first)) => done.ok(),
                        () = evict.notified() => None,
                        () = stop.cancelled() => None,
                    };
                    if matches!(peeked, Some(Ok(1))) && first[0].is_ascii_uppercase() {
                        tracing::info!("plain HTTP on the HTTPS callback listener: answered 400");
                        refuse_plain_http(stream).await;
                        open.remove(id);
                        return;
                    }
                    let handshake = tokio::select! {
                        done = tokio::time::timeout(idle_limit, acceptor.accept(stream)) => done.ok(),
                        () = evict.notified() => None,
                        () = stop.cancelled() => None,
                    };
                    match handshake {
                        Some(Ok(tls_stream)) => Either::Right(tls_stream),
                        Some(Err(e)) => {
                            handshakes.failed(&e);
                            open.remove(id);
                            return;
                        }
                        None => {
                            open.remove(id);
                            return;
                        }
                    }
                }
            };
            let connection = builder
                .serve_connection(TokioIo::new(io), service)
                .into_owned();
            tokio::pin!(connection);
            // Once asked to close (to make room, or by the stop), the request in
            // progress is answered and the connection then ends: through hyper's
            // graceful shutdown, so an answer not yet written (in_flight drops when
            // the handler returns, before its bytes are sent) is not cut off; with a
            // deadline of its own, short for a connection with nothing in progress.
            let mut close_by: Option<tokio::time::Instant> = None;
            loop {
                tokio::select! {
                    ended = connection.as_mut() => {
                        if let Err(e) = ended {
                            tracing::debug!(error = %e, "callback connection ended with an error");
                        }
                        break;
                    }
                    _ = activity.idle_for(idle_limit), if close_by.is_none() => {
                        tracing::debug!("closing an idle callback connection");
                        break;
                    }
                    () = evict.notified(), if close_by.is_none() => {
                        let busy = activity.in_flight.load(Ordering::SeqCst) > 0;
                        // Nothing in progress for a while (a client dripping its
                        // headers, an idle keep-alive): closed at once, as hyper's
                        // graceful shutdown would wait for a half-sent head.
                        if !busy && activity.last_change().elapsed() >= ANSWER_WRITTEN {
                            break;
                        }
                        connection.as_mut().graceful_shutdown();
                        close_by = Some(tokio::time::Instant::now() + if busy { busy_close } else { IDLE_CLOSE });
                    }
                    () = stop.cancelled(), if close_by.is_none() => {
                        connection.as_mut().graceful_shutdown();
                        close_by = Some(tokio::time::Instant::now() + busy_close);
                    }
                    () = tokio::time::sleep_until(close_by.unwrap_or_else(tokio::time::Instant::now)), if close_by.is_some() => {
                        tracing::debug!("a callback connection asked to close did not: closed");
                        break;
                    }
                }
            }
            open.remove(id);
            drop(slot);
        });
    }
    drop(listener);

    // Open requests may finish, within the relay's whole stop (README: at most the
    // grace + 15 s), so a database that stopped answering cannot hold it past the
    // service manager's kill: each part waited out the request timeout (30 s) before.
    let grace = Duration::from_secs(limits.request_timeout_seconds).min(STOP_REQUESTS);
    connections.close();
    if tokio::time::timeout(grace, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!("callback connections still open after {grace:?}; closing them");
    }
    // Every connection is done: the log writer writes what is queued and ends.
    logs_done.cancel();
    tasks.close();
    if tokio::time::timeout(STOP_LOGS, tasks.wait()).await.is_err() {
        tracing::warn!("some webhook_logs rows were not written before shutdown");
    }
    tracing::info!("callback listener stopped");
    Ok(())
}

async fn respond(state: &State, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let started = Instant::now();
    let method = request.method().to_string();
    let path = routes::shorten(request.uri().path());
    let (endpoint, reply) = routes::handle(state, request, started).await;
    log::record(
        &state.logs,
        log::Entry {
            method,
            path,
            endpoint,
            duration: started.elapsed(),
        },
        &reply,
    );
    reply.into_response()
}

/// A connection's activity, and how to ask it to close.
type Entry = (Arc<Activity>, Arc<Notify>);

/// The connections being served, so that one can be closed to make room.
#[derive(Default)]
struct OpenConnections {
    next_id: AtomicU64,
    by_id: std::sync::Mutex<HashMap<u64, Entry>>,
}

impl OpenConnections {
    fn add(&self, activity: Arc<Activity>) -> (u64, Arc<Notify>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let evict = Arc::new(Notify::new());
        self.lock().insert(id, (activity, evict.clone()));
        (id, evict)
    }

    fn remove(&self, id: u64) {
        self.lock().remove(&id);
    }

    /// Asks one connection to close: the one that has gone longest without a request
    /// in progress, or, when every one has a request in progress, the one busy the
    /// longest (it closes once that request is answered), unless one asked before is
    /// still finishing its request: one waiting client closes one busy connection at
    /// a time, not one every tenth of a second. Each is asked once; false when none
    /// was asked.
    fn make_room(&self) -> bool {
        let open = self.lock();
        let busy = |a: &Activity| a.in_flight.load(Ordering::SeqCst) > 0;
        let pick = open
            .values()
            .filter(|(activity, _)| !activity.asked.load(Ordering::SeqCst))
            .min_by_key(|(activity, _)| (busy(activity), activity.last_change()));
        let finishing = open
            .values()
            .any(|(activity, _)| activity.asked.load(Ordering::SeqCst) && busy(activity));
        match pick {
            Some((activity, _)) if busy(activity) && finishing => false,
            Some((activity, evict)) => {
                activity.asked.store(true, Ordering::SeqCst);
                evict.notify_one();
                true
            }
            None => false,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Entry>> {
        self.by_id
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// When a connection last started or finished a request, and whether one is in
/// progress now.
struct Activity {
    opened: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds after `opened`.
    last_change_ms: AtomicU64,
    /// Asked to close to make room.
    asked: std::sync::atomic::AtomicBool,
}

/// Marks a request in progress until dropped (also when the request is cancelled).
struct Busy(Arc<Activity>);

impl Activity {
    fn new() -> Activity {
        Activity {
            opened: Instant::now(),
            in_flight: AtomicUsize::new(0),
            last_change_ms: AtomicU64::new(0),
            asked: std::sync::atomic::AtomicBool::new(false),
        }
    }

    fn last_change(&self) -> Instant {
        self.opened + Duration::from_millis(self.last_change_ms.load(Ordering::Relaxed))
    }

    fn touch(&self) {
        let ms = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_change_ms.store(ms, Ordering::Relaxed);
    }

    fn begin(self: &Arc<Self>) -> Busy {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        self.touch();
        Busy(self.clone())
    }

    /// Completes once no request has been in progress for `limit`.
    async fn idle_for(&self, limit: Duration) {
        loop {
            if self.in_flight.load(Ordering::SeqCst) > 0 {
                tokio::time::sleep(limit).await;
                continue;
            }
            let deadline = self.last_change() + limit;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline.into()).await;
        }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Failed TLS handshakes, as the log tells them: n8n refusing an expired certificate or
/// one without its intermediate fails every callback this way, which at debug level
/// alone nobody saw; a scanner's garbage must not flood the log either.
#[derive(Default)]
struct FailedHandshakes(crate::summed::Summed);

impl FailedHandshakes {
    fn failed(&self, e: &std::io::Error) {
        match self.0.say() {
            Some(since) => tracing::warn!(
                error = %e,
                failed_since_last = since,
                "callback TLS handshake failed (a client that does not trust the certificate, \
                 or one not speaking TLS); later ones are summed once a minute"
            ),
            None => tracing::debug!(error = %e, "callback TLS handshake failed"),
        }
    }
}

/// The answer to a plain-HTTP request on the HTTPS listener: a 400 in the relay's
/// JSON error shape, naming the fix, then the connection closes.
async fn refuse_plain_http(mut stream: tokio::net::TcpStream) {
    use tokio::io::AsyncWriteExt;
    let body = r#"{"error":"this port speaks HTTPS","detail":"send the callback to https:// (in n8n: the n8n-relay credential's Callback Base URL, or N8N_RELAY_CALLBACK_BASE_URL for the templates)"}"#;
    let answer = format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        let _ = stream.write_all(answer.as_bytes()).await;
        let _ = stream.shutdown().await;
        // Read what the client sent: closed with its request unread, the socket
        // would reset the connection and the answer could be lost.
        let mut sink = [0u8; 4096];
        let mut left: usize = 64 * 1024;
        while left > 0 {
            match tokio::io::AsyncReadExt::read(&mut stream, &mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_is_made_idle_connection_first_and_one_busy_connection_at_a_time() {
        let open = OpenConnections::default();
        let busy: Vec<Arc<Activity>> = (0..3).map(|_| Arc::new(Activity::new())).collect();
        let _requests: Vec<Busy> = busy.iter().map(|a| a.begin()).collect();
        let idle = Arc::new(Activity::new());
        for a in busy.iter().chain([&idle]) {
            open.add(a.clone());
        }
        assert!(open.make_room(), "the idle one");
        assert!(idle.asked.load(Ordering::SeqCst));
        assert!(open.make_room(), "then one busy one");
        assert_eq!(
            busy.iter()
                .filter(|a| a.asked.load(Ordering::SeqCst))
                .count(),
            1
        );
        assert!(
            !open.make_room(),
            "no second busy one while the first is finishing its request"
        );
    }
}
