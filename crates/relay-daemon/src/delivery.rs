//! One HTTP attempt: build the signed request for a claimed row, send it over the
//! pooled keep-alive client, and report what happened. Deciding what the result means
//! (sent, retry, failed) is [`crate::outcome`]'s job.
//!
//! Request (the contract): `POST`, `Content-Type: application/json`, the envelope body
//! (identical on every attempt: the row's webhook_id, the stored payload, and
//! occurred_at rendered by Postgres), and `X-Webhook-Id`, `X-Webhook-Event`,
//! `X-Webhook-Attempt`, and the signature headers of `security.scheme` (by default
//! `X-Webhook-Timestamp` + `X-Webhook-Signature-256`, HMAC-SHA256 over
//! `"{timestamp}.{body}"`; see `relay_core::signature`), plus `X-N8N-API-KEY` and the
//! static auth header when configured, and `Authorization: Basic` for a URL with
//! `user:password@`. Signature and credentials are marked sensitive and never logged.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONTENT_TYPE, RETRY_AFTER, USER_AGENT};
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use relay_core::events::Envelope;
use relay_core::{signature, Config};

use crate::error::{describe_chain, DaemonError};
use crate::shared::Job;

/// `Authorization: Basic ...` for a URL that carries `user:password@` (n8n's Webhook
/// node with Basic Auth): the HTTP client sends only the URL's host and path, so
/// without this the credentials a route's URL holds would never reach n8n. The two
/// parts are percent-decoded, as a browser does; marked sensitive, never logged.
fn basic_auth(uri: &http::Uri) -> Option<HeaderValue> {
    use base64::Engine as _;
    let (userinfo, _host) = uri.authority()?.as_str().rsplit_once('@')?;
    let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
    let decode = |part: &str| percent_encoding::percent_decode_str(part).collect::<Vec<u8>>();
    let mut pair = decode(user);
    pair.push(b':');
    pair.extend(decode(password));
    let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
    let mut value = HeaderValue::from_str(&format!("Basic {encoded}")).ok()?;
    value.set_sensitive(true);
    Some(value)
}

/// Kept of a response body for `webhook_logs.response_body`.
pub(crate) const RESPONSE_BODY_KEEP: usize = 2048;
/// Read (and discarded) past the kept part so the connection can be reused; a larger
/// body closes the connection instead.
const RESPONSE_BODY_DRAIN: usize = 64 * 1024;

const HEADER_ID: &str = "x-webhook-id";
const HEADER_EVENT: &str = "x-webhook-event";
const HEADER_ATTEMPT: &str = "x-webhook-attempt";
const HEADER_API_KEY: &str = "x-n8n-api-key";
/// Kept of a redirect's `Location` for `last_error`.
const LOCATION_KEEP: usize = 512;
/// An answer header that refuses an event for good: no further attempt.
const HEADER_ABORT: &str = "x-webhook-abort";

/// What one attempt produced.
#[derive(Debug, Clone)]
pub(crate) struct Attempt {
    /// The HTTP status, when a response arrived.
    pub(crate) status: Option<u16>,
    /// Why the attempt failed (non-2xx, timeout, connection error); `None` on success.
    pub(crate) error: Option<String>,
    /// The start of the response body, for the log.
    pub(crate) body: Option<String>,
    pub(crate) duration: Duration,
    /// The server's `Retry-After`, when it sent one with a failure.
    pub(crate) retry_after: Option<Duration>,
    /// n8n's `X-Webhook-Abort` with a failure (its value, or the body's start when
    /// the value is just `true`): the event is refused for good, no retry.
    pub(crate) abort: Option<String>,
}

impl Attempt {
    pub(crate) fn succeeded(&self) -> bool {
        self.error.is_none()
    }
}

type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Sends deliveries. Cheap to clone: the connection pool is shared.
#[derive(Clone)]
pub(crate) struct Deliverer {
    client: HttpClient,
    keys: signature::Keys,
    api_key: Option<HeaderValue>,
    auth: Option<(HeaderName, HeaderValue)>,
}

impl Deliverer {
    pub(crate) fn new(config: &Config) -> Result<Deliverer, DaemonError> {
        // Connecting is part of an attempt, whose cut is per route: the longest.
        let timeout = config
            .routes()
            .iter()
            .map(|r| r.retry.timeout)
            .max()
            .unwrap_or_else(|| config.timeout());
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(timeout));
        http.set_keepalive(Some(Duration::from_secs(30)));
        // The built-in roots plus n8n.ca_file, and a client certificate for mTLS.
        let tls = config
            .n8n_tls()
            .map_err(|e| DaemonError::Setup(e.to_string()))?;
        let https = HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(config.queue.max_per_endpoint)
            .build(https);

        let api_key = if config.n8n.api_key.is_empty() {
            None
        } else {
            Some(sensitive(config.n8n.api_key.expose(), "n8n.api_key")?)
        };
        let auth = if config.n8n.auth_header_name.is_empty() {
            None
        } else {
            let name = HeaderName::from_bytes(config.n8n.auth_header_name.as_bytes())
                .map_err(|e| DaemonError::Setup(format!("n8n.auth_header_name: {e}")))?;
            let value = sensitive(
                config.n8n.auth_header_value.expose(),
                "n8n.auth_header_value",
            )?;
            Some((name, value))
        };
        Ok(Deliverer {
            client,
            keys: config
                .security
                .signing_keys()
                .map_err(|e| DaemonError::Setup(e.to_string()))?,
            api_key,
            auth,
        })
    }

    /// The exact body for a row; the same bytes on every attempt.
    pub(crate) fn body(job: &Job) -> Vec<u8> {
        Envelope {
            id: &job.webhook_id,
            event: &job.event_type,
            occurred_at: &job.occurred_at,
            entity_type: job.entity_type.as_deref().unwrap_or_default(),
            entity_id: job.entity_id,
            data: &job.payload,
        }
        .to_bytes()
    }

    /// One attempt, cut at `timeout` (the route's `timeout_seconds`: connect, send,
    /// and the answer's status line and headers). The answer's body is read for the
    /// log in what is left of it: a status that arrived in time is the attempt's
    /// outcome, whatever the body does after it (n8n streaming its answer slowly was
    /// a timeout, and a delivered event was sent again).
    pub(crate) async fn deliver(&self, job: &Job, timeout: Duration) -> Attempt {
        let started = Instant::now();
        let deadline = tokio::time::Instant::from_std(started) + timeout;
        let request = match self.request(job) {
            Ok(r) => r,
            Err(e) => return failed(started, e),
        };
        let response = match tokio::time::timeout_at(deadline, self.send(request)).await {
            Ok(Ok(response)) => response,
            Ok(Err(e)) => return failed(started, e),
            Err(_) => return failed(started, format!("timed out after {} s", timeout.as_secs())),
        };
        let answer = Self::answer(response, deadline).await;
        let status = answer.status;
        let ok = (200..300).contains(&status);
        let abort = answer.abort.filter(|_| !ok).map(|value| {
            if value.eq_ignore_ascii_case("true") && !answer.body.is_empty() {
                format!("true ({})", answer.body)
            } else {
                value
            }
        });
        Attempt {
            status: Some(status),
            error: (!ok).then(|| match (&abort, &answer.location) {
                (Some(reason), _) => format!("HTTP {status}, aborted: {reason}"),
                // Only a 2xx is a delivery, so a redirect is a failure; where it
                // pointed is what the operator needs to fix the route.
                (None, Some(to)) if (300..400).contains(&status) => format!(
                    "HTTP {status}: redirects are not followed; it points to {to} \
                     (give the route that URL)"
                ),
                (None, _) => match what_the_body_says(&answer.body) {
                    Some(said) => format!("HTTP {status}: {said}"),
                    None => format!("HTTP {status}"),
                },
            }),
            body: Some(answer.body),
            duration: started.elapsed(),
            retry_after: if ok { None } else { answer.retry_after },
            abort,
        }
    }

    fn request(&self, job: &Job) -> Result<Request<Full<Bytes>>, String> {
        let invalid = |e: http::uri::InvalidUri| format!("webhook_url is not a valid URL: {e}");
        let written: http::Uri = job.url.parse().map_err(invalid)?;
        // The route's credentials travel in `Authorization` only: the URI the client
        // is given (which its connection pool logs at debug level) has none.
        let credentials = basic_auth(&written);
        let uri: http::Uri = if credentials.is_some() {
            relay_core::config::url_without_userinfo(&job.url)
                .parse()
                .map_err(invalid)?
        } else {
            written
        };
        let body = Self::body(job);
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        let mut builder = Request::builder()
            .method(Method::POST)
            .uri(uri)
            .header(CONTENT_TYPE, "application/json")
            .header(USER_AGENT, concat!("n8n-relay/", env!("CARGO_PKG_VERSION")))
            .header(HEADER_ID, job.webhook_id.as_str())
            .header(HEADER_EVENT, job.event_type.as_str())
            .header(HEADER_ATTEMPT, job.attempt());
        for (name, value) in self.keys.sign_headers(&job.webhook_id, timestamp, &body) {
            let mut value = HeaderValue::from_str(&value).map_err(|e| e.to_string())?;
            value.set_sensitive(
                name == signature::HEADER_SIGNATURE || name == signature::HEADER_STANDARD_SIGNATURE,
            );
            builder = builder.header(name, value);
        }
        if let Some(key) = &self.api_key {
            builder = builder.header(HEADER_API_KEY, key.clone());
        }
        if let Some((name, value)) = &self.auth {
            builder = builder.header(name.clone(), value.clone());
        }
        let mut request = builder
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| format!("could not build the request: {e}"))?;
        // The route's own credentials are its URL's business: they replace a static
        // `Authorization` header meant for every route.
        if let Some(credentials) = credentials {
            request
                .headers_mut()
                .insert(http::header::AUTHORIZATION, credentials);
        }
        Ok(request)
    }

    async fn send(
        &self,
        request: Request<Full<Bytes>>,
    ) -> Result<http::Response<hyper::body::Incoming>, String> {
        let size = hyper::body::Body::size_hint(request.body()).exact();
        self.client
            .request(request)
            .await
            .map_err(|e| connection_error(&describe_chain(&e), size))
    }

    /// The status and headers that arrived, and the start of the body read until
    /// `deadline`.
    async fn answer(
        response: http::Response<hyper::body::Incoming>,
        deadline: tokio::time::Instant,
    ) -> Answer {
        let status = response.status().as_u16();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| relay_core::retry::parse_retry_after(v, now))
            // `0`, or a date already past: no wait asked for, so none is taken as asked
            // (the schedule holds, and the URL gets no cool-down).
            .filter(|after| !after.is_zero());
        let location = response
            .headers()
            .get(http::header::LOCATION)
            .map(|v| relay_core::config::url_without_userinfo(&truncate_text(v.as_bytes())))
            .map(|to| to.chars().take(LOCATION_KEEP).collect());
        let abort = response
            .headers()
            .get(HEADER_ABORT)
            .map(|v| truncate_text(v.as_bytes()))
            .filter(|v| !v.is_empty() && !v.eq_ignore_ascii_case("false"));
        let mut body = response.into_body();
        let mut kept = Vec::new();
        let mut read = 0usize;
        // The status is what counts; a body cut short (by the peer or the deadline)
        // is only a log detail.
        let _ = tokio::time::timeout_at(deadline, async {
            while read <= RESPONSE_BODY_DRAIN {
                match body.frame().await {
                    Some(Ok(frame)) => {
                        if let Some(data) = frame.data_ref() {
                            read += data.len();
                            let room = RESPONSE_BODY_KEEP.saturating_sub(kept.len());
                            kept.extend_from_slice(&data[..data.len().min(room)]);
                        }
                    }
                    Some(Err(_)) | None => break,
                }
            }
        })
        .await;
        Answer {
            status,
            retry_after,
            abort,
            location,
            body: truncate_text(&kept),
        }
    }
}

/// How much of a refusal's reason goes into `last_error` (the whole body is in
/// `webhook_logs.response_body`).
const REASON_KEEP: usize = 200;

/// The reason a refusing endpoint gave, for `last_error`: n8n's own errors
/// (`{"code":404,"message":"The requested webhook ... is not registered."}`), the
/// n8n-relay trigger node's (`{"error":"invalid or expired signature","detail":...}`),
/// or a short text body. Not an HTML page, nor JSON without such a field. Without it a
/// wrong secret, a wrong scheme, a clock off by minutes and an inactive workflow all
/// read "HTTP 401" or "HTTP 404" wherever an operator looks first.
fn what_the_body_says(body: &str) -> Option<String> {
    let body = body.trim();
    let said = if body.starts_with('{') {
        let value: serde_json::Value = serde_json::from_str(body).ok()?;
        let text = |key: &str| value.get(key).and_then(|v| v.as_str()).map(str::trim);
        match (text("message"), text("error"), text("detail")) {
            (Some(message), _, _) if !message.is_empty() => message.to_string(),
            (_, Some(error), Some(detail)) if !error.is_empty() && !detail.is_empty() => {
                format!("{error}: {detail}")
            }
            (_, Some(error), _) if !error.is_empty() => error.to_string(),
            _ => return None,
        }
    } else if body.is_empty() || body.starts_with('<') {
        return None;
    } else {
        body.lines().next().unwrap_or_default().to_string()
    };
    // One line of text: no control characters (an escape sequence in a stored error
    // would drive the terminal of whoever prints it).
    let said: String = said
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let said = said.split_whitespace().collect::<Vec<_>>().join(" ");
    if said.is_empty() {
        return None;
    }
    Some(match said.char_indices().nth(REASON_KEEP) {
        Some((cut, _)) => format!("{}...", &said[..cut]),
        None => said,
    })
}

/// Bodies from this size on are named in a connection error: a server that refuses
/// a large body (n8n's `N8N_PAYLOAD_SIZE_MAX`, 16 MB by default) often closes the
/// connection while it is being written, and "Broken pipe" alone does not say why.
const LARGE_BODY: u64 = 1024 * 1024;

fn connection_error(chain: &str, body_size: Option<u64>) -> String {
    // rustls names this by its variant; an operator needs what to do about it. A
    // self-signed certificate made with OpenSSL 3's defaults (`openssl req -x509`) is
    // a CA certificate, which rustls refuses as a server's own, ca_file or not (curl
    // and OpenSSL accept it, so a check with curl passes).
    if chain.contains("CaUsedAsEndEntity") {
        return format!(
            "connection error: n8n's certificate is a CA certificate (basicConstraints \
             CA:TRUE), which the relay's TLS library (rustls) refuses as a server's own, \
             even listed in n8n.ca_file, though curl accepts it; reissue it with -addext \
             basicConstraints=critical,CA:FALSE, or sign it with a CA and put that CA in \
             n8n.ca_file ({chain})"
        );
    }
    match body_size {
        Some(size) if size >= LARGE_BODY => format!(
            "connection error with a {:.1} MB body (a receiver that refuses large bodies \
             may close the connection while it is sent): {chain}",
            size as f64 / 1_048_576.0
        ),
        _ => format!("connection error: {chain}"),
    }
}

/// What came back from n8n.
struct Answer {
    status: u16,
    retry_after: Option<Duration>,
    abort: Option<String>,
    /// A redirect's target, without credentials, cut at [`LOCATION_KEEP`] characters.
    location: Option<String>,
    body: String,
}

fn failed(started: Instant, error: String) -> Attempt {
    Attempt {
        status: None,
        error: Some(error),
        body: None,
        duration: started.elapsed(),
        retry_after: None,
        abort: None,
    }
}

fn sensitive(value: &str, key: &str) -> Result<HeaderValue, DaemonError> {
    let mut v = HeaderValue::from_str(value)
        .map_err(|_| DaemonError::Setup(format!("{key}: not a valid HTTP header value")))?;
    v.set_sensitive(true);
    Ok(v)
}

/// At most [`RESPONSE_BODY_KEEP`] bytes as text, cut on a character boundary.
pub(crate) fn truncate_text(bytes: &[u8]) -> String {
    let mut cut = &bytes[..bytes.len().min(RESPONSE_BODY_KEEP)];
    if let Err(e) = std::str::from_utf8(cut) {
        if e.error_len().is_none() {
            // A character split by the cut: drop its first bytes.
            cut = &cut[..e.valid_up_to()];
        }
    }
    let text = String::from_utf8_lossy(cut);
    let mut end = text.len().min(RESPONSE_BODY_KEEP);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_refusal_says_the_reason_its_body_gives() {
        let n8n = r#"{"code":404,"message":"The requested webhook \"POST lead-scraped\" is not registered.","hint":"Click the 'Execute workflow' button"}"#;
        assert_eq!(
            what_the_body_says(n8n).as_deref(),
            Some("The requested webhook \"POST lead-scraped\" is not registered.")
        );
        let node = r#"{"error":"invalid or expired signature","detail":"missing x-webhook-signature-256 header"}"#;
        assert_eq!(
            what_the_body_says(node).as_deref(),
            Some("invalid or expired signature: missing x-webhook-signature-256 header")
        );
        assert_eq!(
            what_the_body_says("Unauthorized\nmore").as_deref(),
            Some("Unauthorized")
        );
        assert_eq!(
            what_the_body_says(r#"{"message":"\u001b]0;PWNED\u0007\u001b[31mRED boom"}"#)
                .as_deref(),
            Some("]0;PWNED [31mRED boom")
        );
        for nothing in [
            "",
            "  ",
            r#"{"ok":true}"#,
            "<html><body>502</body></html>",
            "{not json",
        ] {
            assert_eq!(what_the_body_says(nothing), None, "{nothing:?}");
        }
        let long = what_the_body_says(&"é ".repeat(500)).expect("text");
        assert!(
            long.ends_with("...") && long.chars().count() == REASON_KEEP + 3,
            "{long}"
        );
    }

    use super::*;

    #[test]
    fn response_bodies_are_cut_on_a_character_boundary() {
        let long = format!("a{}", "é".repeat(RESPONSE_BODY_KEEP));
        let cut = truncate_text(long.as_bytes());
        assert_eq!(cut.len(), RESPONSE_BODY_KEEP - 1);
        assert!(cut[1..].chars().all(|c| c == 'é'), "{cut}");
        assert_eq!(truncate_text(b"short"), "short");
    }

    #[test]
    fn a_connection_error_names_a_large_body() {
        assert_eq!(
            connection_error("Broken pipe (os error 32)", Some(100)),
            "connection error: Broken pipe (os error 32)"
        );
        let large = connection_error("Broken pipe (os error 32)", Some(52 * 1024 * 1024));
        assert!(
            large.starts_with("connection error with a 52.0 MB body")
                && large.ends_with(": Broken pipe (os error 32)"),
            "{large}"
        );
    }

    #[test]
    fn a_url_with_credentials_sends_them_as_basic_auth() {
        let header = |url: &str| {
            basic_auth(&url.parse().expect("uri")).map(|v| {
                assert!(v.is_sensitive());
                v.to_str().expect("ascii").to_string()
            })
        };
        // base64("n8n:secret") and base64("n8n:p@ss:w rd")
        assert_eq!(
            header("https://n8n:secret@n8n.example/webhook/x").as_deref(),
            Some("Basic bjhuOnNlY3JldA==")
        );
        assert_eq!(
            header("http://n8n:p%40ss:w%20rd@127.0.0.1:5678/webhook/x").as_deref(),
            Some("Basic bjhuOnBAc3M6dyByZA==")
        );
        assert_eq!(
            header("http://n8n@host/x").as_deref(),
            Some("Basic bjhuOg==")
        );
        assert_eq!(header("https://n8n.example/webhook/x"), None);
        assert_eq!(header("https://n8n.example/webhook/x?to=a@b"), None);
    }
}
