//! The console's HTTP side: one hyper service, the routes, access checks in one place
//! ([`Console::respond`]), and the headers every answer carries.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use deadpool_postgres::Pool;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use maud::Markup;
use relay_core::config::Route;
use relay_core::pause::{self, Scope};
use relay_core::queue_admin::{self, CleanupOptions, FailedFilter, QueueAdminError};
use relay_core::{Config, EventType};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::auth::{self, Auth, Role, Session};
use crate::data::{self, BadFilter, CallbackFilter, QueueFilter};
use crate::pages::{self, Ctx};
use crate::sampler;

/// Scripts and styles from this origin only (no inline script, whatever a payload
/// holds), no frames, forms post only here.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; \
    base-uri 'none'";
/// A form body larger than this is refused.
const MAX_FORM: usize = 64 * 1024;
/// Connections served at once.
const MAX_CONNECTIONS: usize = 64;
/// Headers must arrive within this.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection (keep-alive included) lasts at most this.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(300);
/// A form's body must arrive within this. Bounded only by the connection's lifetime,
/// 64 connections trickling a login form a byte at a time kept every operator out for
/// five minutes, without a token.
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);
const CSS: &str = include_str!("../assets/console.css");
const JS: &str = include_str!("../assets/console.js");

struct Console {
    pool: Pool,
    auth: Auth,
    snapshot: sampler::Shared,
    routes: Vec<Route>,
    /// The known event types, for the queue page's filter.
    events: Vec<&'static str>,
}

/// Serves the console on `listener` until `shutdown`.
pub async fn serve(
    config: Arc<Config>,
    pool: Pool,
    listener: TcpListener,
    shutdown: CancellationToken,
) {
    let console = Arc::new(Console {
        pool: pool.clone(),
        auth: Auth::new(
            config.console.token.expose(),
            config.console.read_only_token.expose(),
        ),
        snapshot: sampler::spawn(pool, shutdown.clone()),
        routes: config.routes(),
        events: EventType::names(),
    });
    if let Ok(addr) = listener.local_addr() {
        if console.auth.open() {
            warn!(%addr, "console ready without console.token: anyone on this machine can use it");
        } else {
            info!(%addr, "console ready");
        }
    }
    // A client that never finishes its headers is cut off, and only so many
    // connections are served at once: the console shares the relay's process. HTTP/1
    // only: a browser never speaks cleartext HTTP/2, and telling the two apart reads
    // the connection's first bytes with no timeout, so a client that sent nothing held
    // one of the 64 places until CONNECTION_LIFETIME; HTTP/1's header timeout runs
    // from the accept.
    let mut builder = Builder::new(TokioExecutor::new()).http1_only();
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    warn!(error = %e, "console could not accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            // Full: this one is closed at once rather than queued.
            drop(stream);
            continue;
        };
        let console = console.clone();
        let service = service_fn(move |request| {
            let console = console.clone();
            async move { Ok::<_, Infallible>(console.respond(peer, request).await) }
        });
        let connection = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            // Whole requests are bounded too, not only their headers.
            let _ = tokio::time::timeout(CONNECTION_LIFETIME, connection).await;
            drop(slot);
        });
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), graceful.shutdown()).await;
}

/// A finished answer, before the common headers.
struct Answer {
    status: StatusCode,
    body: Bytes,
    content_type: &'static str,
    headers: Vec<(header::HeaderName, String)>,
}

impl Answer {
    fn page(status: StatusCode, markup: Markup) -> Answer {
        Answer {
            status,
            body: Bytes::from(markup.into_string()),
            content_type: "text/html; charset=utf-8",
            headers: Vec::new(),
        }
    }

    fn redirect(to: &str) -> Answer {
        Answer {
            status: StatusCode::SEE_OTHER,
            body: Bytes::new(),
            content_type: "text/plain; charset=utf-8",
            headers: vec![(header::LOCATION, to.to_string())],
        }
    }

    fn with(mut self, name: header::HeaderName, value: String) -> Answer {
        self.headers.push((name, value));
        self
    }

    fn into_response(self) -> Response<Full<Bytes>> {
        let mut response = Response::new(Full::new(self.body));
        *response.status_mut() = self.status;
        let h = response.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(self.content_type),
        );
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        );
        h.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        h.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        for (name, value) in self.headers {
            if let Ok(value) = HeaderValue::from_str(&value) {
                h.append(name, value);
            }
        }
        response
    }
}

fn error_page(status: StatusCode, text: &str, ctx: Option<&Ctx>) -> Answer {
    let title = status.canonical_reason().unwrap_or("Error");
    Answer::page(status, pages::message(title, text, ctx))
}

/// The query string's (or a form's) pairs.
fn pairs(text: &str) -> Vec<(String, String)> {
    url::form_urlencoded::parse(text.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn borrowed(pairs: &[(String, String)]) -> impl Iterator<Item = (&str, &str)> {
    pairs.iter().map(|(k, v)| (k.as_str(), v.as_str()))
}

fn field<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

impl Console {
    /// What a pause form's `scope` stands for, in words, from this console's own lists
    /// (never the query's text): `every delivery`, `event lead_scraped`, `URL ...`.
    fn scope_named(&self, scope: &str) -> Option<String> {
        match scope.split_once(':') {
            None if scope == "all" => Some("every delivery".into()),
            Some(("event", e)) => self
                .events
                .iter()
                .find(|name| **name == e)
                .map(|name| format!("event {name}")),
            Some(("url", n)) => {
                let urls = pages::route_urls(&self.routes);
                let url = n.parse::<usize>().ok().and_then(|n| urls.get(n).copied())?;
                Some(format!(
                    "URL {}",
                    relay_core::config::url_without_userinfo(url)
                ))
            }
            _ => None,
        }
    }

    async fn respond(&self, peer: SocketAddr, request: Request<Incoming>) -> Response<Full<Bytes>> {
        let answer = self.route(peer.ip(), request).await;
        answer.into_response()
    }

    async fn route(&self, ip: IpAddr, request: Request<Incoming>) -> Answer {
        let method = request.method().clone();
        let path = request.uri().path().to_string();
        let query = request.uri().query().unwrap_or_default().to_string();
        let secure = request
            .headers()
            .get("x-forwarded-proto")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"));

        match (&method, path.as_str()) {
            (&Method::GET, "/static/console.css") => {
                return Answer {
                    status: StatusCode::OK,
                    body: Bytes::from_static(CSS.as_bytes()),
                    content_type: "text/css; charset=utf-8",
                    headers: Vec::new(),
                }
            }
            (&Method::GET, "/static/console.js") => {
                return Answer {
                    status: StatusCode::OK,
                    body: Bytes::from_static(JS.as_bytes()),
                    content_type: "text/javascript; charset=utf-8",
                    headers: Vec::new(),
                }
            }
            _ => {}
        }

        // Without a token, the console trusts the machine it runs on, and only that:
        // a browser that reached it by another name (DNS rebinding) or through a
        // proxy is refused, and so is a page of another site that asks it from the
        // operator's browser (it would get a session of its own).
        if self.auth.open() {
            if !local_request(&request) {
                warn!(client = %ip, "console without console.token refused a request by another host name or through a proxy");
                return error_page(
                    StatusCode::FORBIDDEN,
                    "Without console.token this console only answers http://127.0.0.1 or http://localhost on this machine; set console.token to reach it otherwise (through a proxy too).",
                    None,
                );
            }
            if asked_by_another_site(&request) {
                warn!(client = %ip, "console without console.token refused a request another site's page made");
                return error_page(
                    StatusCode::FORBIDDEN,
                    "Another site's page asked this console for something; only a link you follow opens it.",
                    None,
                );
            }
        }
        // Who is asking: the session of the cookie; with no token configured
        // (loopback only), a new operator session for anyone without one.
        let cookie = request
            .headers()
            .get(header::COOKIE)
            .and_then(|v| v.to_str().ok())
            .and_then(auth::session_id)
            .map(str::to_string);
        let mut session = cookie.as_deref().and_then(|id| self.auth.session(id));
        let mut set_cookie = None;
        // Not for the overview's refresh: a page whose session is gone (the relay
        // restarted) must load again, for forms with the new session's CSRF token.
        if session.is_none() && self.auth.open() && path != "/overview/live" {
            if let Some(id) = self.auth.start(Role::Operator) {
                session = self.auth.session(&id);
                set_cookie = Some(auth::cookie(&id, secure));
            }
        }

        let form = if method == Method::POST {
            match read_form(request).await {
                Ok(form) => form,
                Err(answer) => return answer,
            }
        } else {
            Vec::new()
        };

        if path == "/login" {
            return self
                .login(ip, &method, &form, session.is_some(), secure)
                .await;
        }
        let Some(session) = session else {
            return if method == Method::GET {
                Answer::redirect("/login")
            } else {
                error_page(StatusCode::UNAUTHORIZED, "Log in first.", None)
            };
        };
        let ctx = Ctx {
            role: session.role,
            csrf: session.csrf.clone(),
            can_log_out: !self.auth.open(),
        };
        let mut answer = if method == Method::POST {
            self.act(ip, &path, &form, &session, &ctx, cookie.as_deref())
                .await
        } else if method == Method::GET {
            self.view(&path, &query, &ctx).await
        } else {
            error_page(
                StatusCode::METHOD_NOT_ALLOWED,
                "Only GET and POST.",
                Some(&ctx),
            )
            .with(header::ALLOW, "GET, POST".into())
        };
        if let Some(c) = set_cookie {
            answer = answer.with(header::SET_COOKIE, c);
        }
        answer
    }

    async fn login(
        &self,
        ip: IpAddr,
        method: &Method,
        form: &[(String, String)],
        logged_in: bool,
        secure: bool,
    ) -> Answer {
        if self.auth.open() || (logged_in && method == Method::GET) {
            return Answer::redirect("/");
        }
        if method != Method::POST {
            return Answer::page(StatusCode::OK, pages::login(None));
        }
        let token = field(form, "token").unwrap_or_default();
        match self.auth.check(token) {
            Some(role) => {
                self.auth.succeeded(ip);
                let Some(id) = self.auth.start(role) else {
                    return error_page(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "No randomness for a session id.",
                        None,
                    );
                };
                info!(client = %ip, role = role.name(), "console login");
                Answer::redirect("/").with(header::SET_COOKIE, auth::cookie(&id, secure))
            }
            None => {
                let wait = self.auth.failed(ip);
                warn!(client = %ip, wait = ?wait, "console login failed: wrong token");
                tokio::time::sleep(wait).await;
                Answer::page(
                    StatusCode::UNAUTHORIZED,
                    pages::login(Some("That token is not valid.")),
                )
            }
        }
    }

    async fn view(&self, path: &str, query: &str, ctx: &Ctx) -> Answer {
        let q = pairs(query);
        match path {
            "/" => {
                let snap = self.snapshot.view();
                let flash = field(&q, "done").and_then(flash_text).map(|text| {
                    match field(&q, "scope").and_then(|s| self.scope_named(s)) {
                        // Resuming "all" lifts that pause alone.
                        Some(_)
                            if field(&q, "scope") == Some("all")
                                && field(&q, "done") == Some("resumed") =>
                        {
                            "Lifted the pause of every delivery; pauses of an event or a URL \
                             stay (under Pauses)."
                                .to_string()
                        }
                        Some(scope) => format!("{} {scope}.", text.trim_end_matches('.')),
                        None => text,
                    }
                });
                Answer::page(
                    StatusCode::OK,
                    pages::overview(ctx, &snap, &self.routes, flash.as_deref()),
                )
            }
            "/overview/live" => {
                let snap = self.snapshot.view();
                Answer::page(StatusCode::OK, pages::overview_live(&snap, &self.routes))
            }
            "/queue" => {
                let filter = match QueueFilter::parse(borrowed(&q)) {
                    Ok(f) => f,
                    Err(e) => return bad_filter(&e, ctx),
                };
                let flash = field(&q, "done").and_then(flash_text);
                match self.client().await {
                    Ok(client) => match data::list(&client, &filter.for_query(self.route_urls()))
                        .await
                    {
                        Ok((rows, next)) => Answer::page(
                            StatusCode::OK,
                            pages::queue(ctx, &filter, &rows, next, flash.as_deref(), &self.events),
                        ),
                        Err(e) => db_failed(&e, ctx),
                    },
                    Err(e) => db_error(&e, ctx),
                }
            }
            "/callbacks" => {
                let filter = match CallbackFilter::parse(borrowed(&q)) {
                    Ok(f) => f,
                    Err(e) => return bad_filter(&e, ctx),
                };
                match self.client().await {
                    Ok(client) => match data::callbacks(&client, &filter).await {
                        Ok((rows, next)) => Answer::page(
                            StatusCode::OK,
                            pages::callbacks(ctx, &filter, &rows, next),
                        ),
                        Err(e) => db_failed(&e, ctx),
                    },
                    Err(e) => db_error(&e, ctx),
                }
            }
            _ => match path.strip_prefix("/row/").map(str::parse::<i64>) {
                Some(Ok(id)) => self.row(id, field(&q, "done"), ctx).await,
                Some(Err(_)) => error_page(StatusCode::BAD_REQUEST, "id: not a row id", Some(ctx)),
                None => error_page(StatusCode::NOT_FOUND, "No such page.", Some(ctx)),
            },
        }
    }

    async fn row(&self, id: i64, done: Option<&str>, ctx: &Ctx) -> Answer {
        let client = match self.client().await {
            Ok(c) => c,
            Err(e) => return db_error(&e, ctx),
        };
        match queue_admin::show(&client, id).await {
            Ok(detail) => match data::ordering(&client, id).await {
                Ok(ordering) => {
                    let flash = done.and_then(flash_text);
                    Answer::page(
                        StatusCode::OK,
                        pages::row(ctx, &detail, &ordering, flash.as_deref()),
                    )
                }
                Err(e) => db_failed(&e, ctx),
            },
            Err(QueueAdminError::UnknownId(_)) => error_page(
                StatusCode::NOT_FOUND,
                &format!("No queue row with id {id}."),
                Some(ctx),
            ),
            Err(e) => db_failed(&e, ctx),
        }
    }

    /// Every POST: the CSRF token first, then the role, then the action.
    async fn act(
        &self,
        ip: IpAddr,
        path: &str,
        form: &[(String, String)],
        session: &Session,
        ctx: &Ctx,
        session_id: Option<&str>,
    ) -> Answer {
        let csrf_ok = field(form, "csrf").is_some_and(|t| auth::same(t, &session.csrf));
        if !csrf_ok {
            warn!(client = %ip, path, "console: a form without its CSRF token was refused");
            return error_page(
                StatusCode::FORBIDDEN,
                "This form is stale or forged (CSRF token missing or wrong): reload the page.",
                Some(ctx),
            );
        }
        if path == "/logout" {
            if let Some(id) = session_id {
                self.auth.end(id);
            }
            return Answer::redirect("/login").with(header::SET_COOKIE, auth::expired_cookie());
        }
        if session.role != Role::Operator {
            warn!(client = %ip, path, "console: an action by a read-only session was refused");
            return error_page(
                StatusCode::FORBIDDEN,
                "Read-only: this login may look, not act.",
                Some(ctx),
            );
        }
        let client = match self.client().await {
            Ok(c) => c,
            Err(e) => return db_error(&e, ctx),
        };
        let by = format!("console, operator from {ip}");
        let note = |action: &str| format!("manual {action} ({by})");
        if let Some(rest) = path.strip_prefix("/row/") {
            let (id, action) = rest.split_once('/').unwrap_or((rest, ""));
            let Ok(id) = id.parse::<i64>() else {
                return error_page(StatusCode::BAD_REQUEST, "id: not a row id", Some(ctx));
            };
            let result = match action {
                "retry" => queue_admin::retry(&client, id, &note("retry"))
                    .await
                    .map(|()| "retried"),
                "cancel" => queue_admin::cancel(&client, id, &note("cancel"))
                    .await
                    .map(|_| "cancelled"),
                _ => return error_page(StatusCode::NOT_FOUND, "No such action.", Some(ctx)),
            };
            return match result {
                Ok(done) => {
                    info!(client = %ip, id, action = done, "console action");
                    Answer::redirect(&format!("/row/{id}?done={done}"))
                }
                Err(QueueAdminError::UnknownId(_)) => error_page(
                    StatusCode::NOT_FOUND,
                    &format!("No queue row with id {id}."),
                    Some(ctx),
                ),
                Err(
                    e @ (QueueAdminError::InFlight(_)
                    | QueueAdminError::WrongStatus { .. }
                    | QueueAdminError::DueAlready(_)),
                ) => error_page(StatusCode::CONFLICT, &e.to_string(), Some(ctx)),
                Err(e) => db_failed(&e, ctx),
            };
        }
        match path {
            "/queue/retry-failed" => {
                let mut filter = match QueueFilter::parse(borrowed(form)) {
                    Ok(f) => f,
                    Err(e) => return bad_filter(&e, ctx),
                };
                filter.status = Some("failed".into());
                filter.after = None;
                if field(form, "confirm") != Some("yes") {
                    return match queue_admin::count_failed_matching(
                        &client,
                        &filter.for_query(self.route_urls()).failed(),
                    )
                    .await
                    {
                        Ok((n, as_of)) => Answer::page(
                            StatusCode::OK,
                            pages::confirm_retry(ctx, &filter, n, unix_micros(as_of)),
                        ),
                        Err(e) => db_failed(&e, ctx),
                    };
                }
                // The rows the confirmation counted, not those that failed since.
                let Some(failed_by) = field(form, "failed_by")
                    .and_then(|t| t.parse::<u64>().ok())
                    .map(|us| std::time::UNIX_EPOCH + Duration::from_micros(us))
                else {
                    return error_page(
                        StatusCode::BAD_REQUEST,
                        "failed_by: the confirmation's time is missing; ask again",
                        Some(ctx),
                    );
                };
                let failed = FailedFilter {
                    failed_by: Some(failed_by),
                    ..filter.for_query(self.route_urls()).failed()
                };
                match queue_admin::retry_failed_matching(&client, &failed, &note("retry")).await {
                    Ok(ids) => {
                        info!(client = %ip, rows = ids.len(), filter = ?filter.pairs(),
                            "console action: retry failed rows");
                        // Back to the same filter (what is still failing among those),
                        // where it dropped all but the status.
                        Answer::redirect(&format!(
                            "{}&done=bulk-retried-{}",
                            pages::link(&filter, None),
                            ids.len()
                        ))
                    }
                    Err(e) => db_failed(&e, ctx),
                }
            }
            "/cleanup" => {
                let days = match field(form, "days").map(str::trim).map(str::parse::<u32>) {
                    Some(Ok(d)) if (1..=36_500).contains(&d) => d,
                    _ => {
                        return error_page(
                            StatusCode::BAD_REQUEST,
                            "days: a whole number of days, from 1 to 36500",
                            Some(ctx),
                        )
                    }
                };
                let options = CleanupOptions {
                    days,
                    dry_run: field(form, "dry_run") == Some("1"),
                    include_failed: false,
                };
                match queue_admin::cleanup(&client, options).await {
                    Ok(report) => {
                        info!(client = %ip, days, dry_run = options.dry_run, "console action: cleanup");
                        let verb = if options.dry_run {
                            "would delete"
                        } else {
                            "deleted"
                        };
                        let text = format!(
                            "Cleanup of rows older than {days} days: {verb} {} queue rows, {} \
                             logs, {} retry history rows, {} outbox events and {} workflow runs.",
                            report.queue_rows,
                            report.logs,
                            report.retry_history,
                            report.events,
                            report.workflow_runs
                        );
                        Answer::page(StatusCode::OK, pages::notice("Cleanup", &text, Some(ctx)))
                    }
                    Err(e) => db_failed(&e, ctx),
                }
            }
            "/pause" => {
                let urls = pages::route_urls(&self.routes);
                let resume = match field(form, "do") {
                    Some("pause") => false,
                    Some("resume") => true,
                    other => {
                        return error_page(
                            StatusCode::BAD_REQUEST,
                            &format!(
                                "do: {:?} is not an action here; pause or resume",
                                other.unwrap_or_default()
                            ),
                            Some(ctx),
                        )
                    }
                };
                // The form's own values; anything else is not a scope of this console.
                let unknown = || {
                    format!(
                        "scope: {:?} is not one of this console's: all, event:NAME or url:N \
                         (a route's URL by its place in the list)",
                        field(form, "scope").unwrap_or_default()
                    )
                };
                let scope = match field(form, "scope").unwrap_or_default().split_once(':') {
                    None if field(form, "scope") == Some("all") => Scope::parse(true, None, None),
                    Some(("event", e)) => Scope::parse(false, Some(e), None),
                    Some(("url", n)) => match n.parse::<usize>().ok().and_then(|n| urls.get(n)) {
                        Some(u) => Scope::parse(false, None, Some(u)),
                        None => return error_page(StatusCode::BAD_REQUEST, &unknown(), Some(ctx)),
                    },
                    _ => return error_page(StatusCode::BAD_REQUEST, &unknown(), Some(ctx)),
                };
                let scope = match scope {
                    Ok(s) => s,
                    Err(e) => {
                        return error_page(
                            StatusCode::BAD_REQUEST,
                            &format!("scope: {e}"),
                            Some(ctx),
                        )
                    }
                };
                let reason = field(form, "reason")
                    .map(str::trim)
                    .filter(|r| !r.is_empty());
                let result = if resume {
                    pause::resume(&client, &scope).await
                } else {
                    pause::pause(&client, &scope, reason, &by).await
                };
                // Back to the pool before the wait for a sample: the sampler needs one
                // of the console's two connections.
                drop(client);
                match result {
                    Ok(()) => {
                        info!(client = %ip, %scope, "console action: pause or resume");
                        self.snapshot.refreshed(REFRESH_AFTER_ACTION).await;
                        // The form's scope as sent (all, event:NAME, url:N), which the
                        // overview names again from its own lists.
                        let sent = field(form, "scope").unwrap_or_default();
                        Answer::redirect(&format!(
                            "/?done={}&scope={}",
                            if resume { "resumed" } else { "paused" },
                            url::form_urlencoded::byte_serialize(sent.as_bytes())
                                .collect::<String>()
                        ))
                    }
                    Err(e @ QueueAdminError::NotPaused(_)) => {
                        error_page(StatusCode::CONFLICT, &e.to_string(), Some(ctx))
                    }
                    Err(e @ QueueAdminError::ReasonTooLong(_)) => {
                        error_page(StatusCode::BAD_REQUEST, &e.to_string(), Some(ctx))
                    }
                    Err(e) => db_failed(&e, ctx),
                }
            }
            _ => error_page(StatusCode::NOT_FOUND, "No such action.", Some(ctx)),
        }
    }

    fn route_urls(&self) -> impl Iterator<Item = &str> {
        self.routes.iter().map(|r| r.url.as_str())
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, String> {
        self.pool
            .get()
            .await
            .map_err(|e| relay_core::db::describe_pool(&e))
    }
}

/// A request addressed to this machine by a loopback name, not forwarded. A proxy
/// says so with a forwarding header or `Via`; nginx's `proxy_pass` by default sends
/// neither and names the loopback address it passes to, but speaks HTTP/1.0 to it,
/// which no browser does.
fn local_request<B>(request: &Request<B>) -> bool {
    if request.version() < http::Version::HTTP_11 {
        return false;
    }
    let headers = request.headers();
    if headers.keys().any(|k| {
        let k = k.as_str();
        k.starts_with("x-forwarded-") || k == "forwarded" || k == "x-real-ip" || k == "via"
    }) {
        return false;
    }
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    matches!(
        name.to_ascii_lowercase().as_str(),
        "127.0.0.1" | "localhost" | "::1"
    )
}

/// A request the browser made for a page of another site (a `fetch`, an image, a
/// form): its `Sec-Fetch-Site` says so. A link followed or an address typed
/// (`navigate`, GET) is let through, as it is a person's choice; clients that send no
/// such header (curl, older browsers) are not judged by it.
fn asked_by_another_site<B>(request: &Request<B>) -> bool {
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    };
    let foreign = matches!(header("sec-fetch-site"), "cross-site" | "same-site");
    let followed = request.method() == Method::GET && header("sec-fetch-mode") == "navigate";
    foreign && !followed
}

/// How long a pause or resume waits for the overview's next sample before it
/// redirects there, so the page shows what the action did.
const REFRESH_AFTER_ACTION: Duration = Duration::from_secs(2);

/// Fixed texts for the `done=` of a redirect: never the query's own text.
fn flash_text(done: &str) -> Option<String> {
    match done {
        "retried" => Some("Due now: the row is pending and goes out at the next claim.".into()),
        "cancelled" => Some("Cancelled.".into()),
        "paused" => Some("Paused.".into()),
        "resumed" => Some("Resumed.".into()),
        _ => done
            .strip_prefix("bulk-retried-")
            .and_then(|n| n.parse::<u64>().ok())
            .map(|n| format!("Retried {n} failed row(s): pending again, due now.")),
    }
}

fn bad_filter(e: &BadFilter, ctx: &Ctx) -> Answer {
    error_page(StatusCode::BAD_REQUEST, &e.to_string(), Some(ctx))
}

/// [`db_error`] for an error of the database's, said with its whole chain (the
/// server's own message: "db error" alone otherwise).
fn db_failed(e: &(dyn std::error::Error + 'static), ctx: &Ctx) -> Answer {
    db_error(&relay_core::db::describe_chain(e), ctx)
}

fn db_error(detail: &str, ctx: &Ctx) -> Answer {
    warn!(error = detail, "console: database error");
    error_page(
        StatusCode::SERVICE_UNAVAILABLE,
        "The database did not answer; try again.",
        Some(ctx),
    )
}

/// A POST body as form pairs: urlencoded only, at most [`MAX_FORM`] bytes.
async fn read_form(request: Request<Incoming>) -> Result<Vec<(String, String)>, Answer> {
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    if !content_type.starts_with("application/x-www-form-urlencoded") {
        return Err(error_page(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Forms only (application/x-www-form-urlencoded).",
            None,
        ));
    }
    let read = tokio::time::timeout(
        BODY_READ_TIMEOUT,
        Limited::new(request.into_body(), MAX_FORM).collect(),
    )
    .await
    .map_err(|_| {
        error_page(
            StatusCode::REQUEST_TIMEOUT,
            "The form did not arrive in time.",
            None,
        )
    })?;
    let body = read
        .map_err(|_| {
            error_page(
                StatusCode::PAYLOAD_TOO_LARGE,
                "The form is too large.",
                None,
            )
        })?
        .to_bytes();
    let text = std::str::from_utf8(&body)
        .map_err(|_| error_page(StatusCode::BAD_REQUEST, "The form is not UTF-8.", None))?;
    let mut seen: HashMap<String, usize> = HashMap::new();
    let pairs = pairs(text);
    for (k, _) in &pairs {
        *seen.entry(k.clone()).or_insert(0) += 1;
    }
    if seen.get("csrf").is_some_and(|n| *n > 1) {
        return Err(error_page(
            StatusCode::BAD_REQUEST,
            "csrf: given twice",
            None,
        ));
    }
    Ok(pairs)
}

/// A database time as whole microseconds since the epoch, for a form to carry.
fn unix_micros(at: std::time::SystemTime) -> u64 {
    at.duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_forbids_inline_script_and_framing() {
        assert!(CSP.contains("script-src 'self'") && !CSP.contains("unsafe-inline"));
        assert!(CSP.contains("frame-ancestors 'none'"));
        assert!(!JS.contains("innerHTML = '") && !JS.contains("eval("));
    }

    /// A GET of `/` with these headers, as HTTP/1.1 unless `version` says otherwise.
    fn request(version: http::Version, pairs: &[(&str, &str)]) -> Request<()> {
        let mut r = Request::builder().uri("/").version(version);
        for (k, v) in pairs {
            r = r.header(*k, *v);
        }
        r.body(()).expect("request")
    }

    fn get(pairs: &[(&str, &str)]) -> Request<()> {
        request(http::Version::HTTP_11, pairs)
    }

    #[test]
    fn without_a_token_only_loopback_names_unforwarded_are_local() {
        for host in [
            "127.0.0.1:9188",
            "localhost:9188",
            "[::1]:9188",
            "LOCALHOST",
        ] {
            assert!(local_request(&get(&[("host", host)])), "{host}");
        }
        for host in [
            "evil.example:9188",
            "127.0.0.1.evil.example",
            "10.0.0.5:9188",
        ] {
            assert!(!local_request(&get(&[("host", host)])), "{host}");
        }
        assert!(!local_request(&get(&[])), "no Host");
        for forwarded in ["x-forwarded-for", "forwarded", "x-real-ip", "via"] {
            assert!(
                !local_request(&get(&[("host", "127.0.0.1"), (forwarded, "1.2.3.4")])),
                "{forwarded}"
            );
        }
        // nginx's proxy_pass as it comes: the upstream's address as Host, no
        // forwarding header, HTTP/1.0.
        assert!(!local_request(&request(
            http::Version::HTTP_10,
            &[("host", "127.0.0.1:9188"), ("connection", "close")]
        )));
    }

    #[test]
    fn another_sites_page_cannot_ask_but_a_link_followed_opens_it() {
        for site in ["cross-site", "same-site"] {
            for mode in ["no-cors", "cors"] {
                let r = get(&[("sec-fetch-site", site), ("sec-fetch-mode", mode)]);
                assert!(asked_by_another_site(&r), "{site} {mode}");
            }
            let followed = get(&[("sec-fetch-site", site), ("sec-fetch-mode", "navigate")]);
            assert!(!asked_by_another_site(&followed), "{site} link");
            let mut posted = followed;
            *posted.method_mut() = Method::POST;
            assert!(asked_by_another_site(&posted), "{site} form post");
        }
        for own in [
            get(&[
                ("sec-fetch-site", "same-origin"),
                ("sec-fetch-mode", "cors"),
            ]),
            get(&[("sec-fetch-site", "none"), ("sec-fetch-mode", "navigate")]),
            get(&[]),
        ] {
            assert!(!asked_by_another_site(&own));
        }
    }

    #[test]
    fn flash_messages_are_fixed_texts() {
        assert!(flash_text("retried").is_some());
        assert_eq!(
            flash_text("bulk-retried-3").as_deref(),
            Some("Retried 3 failed row(s): pending again, due now.")
        );
        assert_eq!(flash_text("<script>"), None);
        assert_eq!(flash_text("bulk-retried-<b>"), None);
    }
}
