//! Which endpoint a request is for, and the order of checks on the way to it:
//! path and method, content type, size, signature, JSON, then the database.

use std::time::Instant;

use http::{Method, Request};
use hyper::body::Incoming;

use crate::handlers;
use crate::payload;
use crate::response::{Refusal, Reply};
use crate::server::State;

const N8N_PREFIX: &str = "/api/v1/webhooks/n8n/";

/// The endpoints, with the older system's paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    DemoApproval,
    VideoApproval,
    WorkflowCompleted,
    WorkflowStatus,
    ErrorNotification,
    Health,
    /// The guide's manual trigger; only when `callbacks.test_endpoint_enabled`.
    TestTrigger,
}

impl Endpoint {
    pub const ALL: [Endpoint; 7] = [
        Endpoint::DemoApproval,
        Endpoint::VideoApproval,
        Endpoint::WorkflowCompleted,
        Endpoint::WorkflowStatus,
        Endpoint::ErrorNotification,
        Endpoint::Health,
        Endpoint::TestTrigger,
    ];

    pub fn path(self) -> &'static str {
        match self {
            Endpoint::DemoApproval => "/api/v1/webhooks/n8n/demo-approval",
            Endpoint::VideoApproval => "/api/v1/webhooks/n8n/video-approval",
            Endpoint::WorkflowCompleted => "/api/v1/webhooks/n8n/workflow-completed",
            Endpoint::WorkflowStatus => "/api/v1/webhooks/n8n/workflow-status",
            Endpoint::ErrorNotification => "/api/v1/webhooks/n8n/error-notification",
            Endpoint::Health => "/api/v1/webhooks/n8n/health",
            Endpoint::TestTrigger => "/api/v1/test/trigger-webhook",
        }
    }

    /// The name in `webhook_logs.event_type`, so the guide's activity query
    /// (grouped by direction and event_type) tells the endpoints apart.
    pub fn name(self) -> &'static str {
        match self {
            Endpoint::TestTrigger => "test-trigger-webhook",
            other => other
                .path()
                .strip_prefix(N8N_PREFIX)
                .unwrap_or_else(|| other.path()),
        }
    }

    fn allow(self) -> &'static str {
        match self {
            Endpoint::Health => "GET",
            _ => "POST",
        }
    }

    fn method(self) -> Method {
        match self {
            Endpoint::Health => Method::GET,
            _ => Method::POST,
        }
    }
}

/// The endpoint for `path`, or 404 (unknown, or the test endpoint while disabled)
/// or 405 (known path, wrong method).
pub fn resolve(method: &Method, path: &str, test_enabled: bool) -> Result<Endpoint, Refusal> {
    let endpoint = Endpoint::ALL
        .into_iter()
        .find(|e| e.path() == path)
        .filter(|e| *e != Endpoint::TestTrigger || test_enabled)
        .ok_or_else(|| Refusal::not_found(format!("no endpoint at {}", shorten(path))))?;
    if *method != endpoint.method() {
        return Err(Refusal::method_not_allowed(method, endpoint.allow()));
    }
    Ok(endpoint)
}

/// A request path (or header text) as it may be logged or echoed: bounded length,
/// and every byte that is not visible ASCII percent-encoded, so that a path of
/// bidirectional overrides or look-alike letters cannot dress up a log line or the
/// console's page (hyper takes UTF-8 in a path; it refuses control bytes).
pub fn shorten(path: &str) -> String {
    const MAX: usize = 200;
    let mut out = String::with_capacity(path.len().min(MAX + 3));
    for c in path.chars() {
        let mut buf = [0u8; 4];
        let shown = if c.is_ascii_graphic() || c == ' ' {
            c.encode_utf8(&mut buf).to_string()
        } else {
            c.encode_utf8(&mut buf)
                .bytes()
                .map(|b| format!("%{b:02X}"))
                .collect()
        };
        if out.len() + shown.len() > MAX {
            out.push_str("...");
            break;
        }
        out.push_str(&shown);
    }
    out
}

/// One request through every check. Returns the endpoint (once known) for the log.
pub async fn handle(
    state: &State,
    request: Request<Incoming>,
    started: Instant,
) -> (Option<Endpoint>, Reply) {
    let endpoint = match resolve(
        request.method(),
        request.uri().path(),
        state.config.callbacks.test_endpoint_enabled,
    ) {
        Ok(endpoint) => endpoint,
        Err(refusal) => return (None, refusal.into_reply()),
    };
    let reply = match signed(state, endpoint, request, started).await {
        Ok(reply) => reply,
        Err(refusal) => refusal.into_reply(),
    };
    (Some(endpoint), reply)
}

async fn signed(
    state: &State,
    endpoint: Endpoint,
    request: Request<Incoming>,
    started: Instant,
) -> Result<Reply, Refusal> {
    if endpoint == Endpoint::Health {
        return Ok(handlers::health::answer(state).await);
    }
    let (parts, body) = request.into_parts();
    crate::body::require_json(&parts.headers)?;
    let limits = &state.config.callbacks;
    // Held until the answer: its bytes count against the listener's budget till then.
    let (bytes, _held) = crate::body::read(
        &parts.headers,
        body,
        limits.max_body_bytes,
        &state.bodies,
        started + std::time::Duration::from_secs(limits.request_timeout_seconds),
        limits.request_timeout_seconds,
    )
    .await?;
    let verified = state
        .verifier
        .check(
            endpoint.path(),
            &parts.headers,
            &bytes,
            relay_core::signature::unix_now(),
        )
        .map_err(|e| Refusal::unauthorized(e.to_string()))?;
    let callback = payload::decode(endpoint, &bytes)?;
    handlers::apply(state, endpoint, &verified, callback).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;

    #[test]
    fn known_paths_resolve_and_others_are_404() {
        for e in Endpoint::ALL {
            assert_eq!(resolve(&e.method(), e.path(), true), Ok(e));
        }
        let miss = resolve(&Method::POST, "/api/v1/webhooks/n8n/demo-approvals", true)
            .expect_err("unknown");
        assert_eq!(miss.status, StatusCode::NOT_FOUND);
    }

    #[test]
    fn the_test_endpoint_is_404_unless_enabled() {
        let off = resolve(&Method::POST, Endpoint::TestTrigger.path(), false).expect_err("off");
        assert_eq!(off.status, StatusCode::NOT_FOUND);
    }

    #[test]
    fn wrong_method_is_405_with_allow() {
        let e = resolve(&Method::GET, Endpoint::DemoApproval.path(), false).expect_err("405");
        assert_eq!(e.status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(e.allow, Some("POST"));
        let e = resolve(&Method::POST, Endpoint::Health.path(), false).expect_err("405");
        assert_eq!(e.allow, Some("GET"));
    }

    #[test]
    fn names_are_the_last_path_segment() {
        assert_eq!(Endpoint::DemoApproval.name(), "demo-approval");
        assert_eq!(Endpoint::TestTrigger.name(), "test-trigger-webhook");
    }

    #[test]
    fn long_paths_are_shortened_and_what_is_not_ascii_is_encoded() {
        let long = "é".repeat(300);
        let short = shorten(&long);
        assert!(short.len() <= 203);
        assert!(short.starts_with("%C3%A9%C3%A9"), "{short}");
        assert!(short.ends_with("..."));
        assert_eq!(shorten("/caf\u{e9}\u{202e}-rtl"), "/caf%C3%A9%E2%80%AE-rtl");
        assert_eq!(
            shorten("/webhooks/n8n/demo-approval"),
            "/webhooks/n8n/demo-approval"
        );
    }
}
