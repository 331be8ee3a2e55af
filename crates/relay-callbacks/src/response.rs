//! What the listener answers. Accepted requests get the guide's JSON bodies; every
//! refusal is `{"error": "<code>", "detail": "<what was wrong>"}` (plus `"field"`
//! when one request field is at fault), so n8n's error branch can show the reason.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::Full;
use serde_json::{json, Value};

/// Marks an answer replayed from a receipt: nothing was changed this time.
pub const HEADER_REPLAY: &str = "x-webhook-replay";

/// One answer, with what `webhook_logs` needs to know about it.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    pub body: Bytes,
    /// The body is a stored first answer to an identical request.
    pub replay: bool,
    /// `Allow` header value for 405.
    pub allow: Option<&'static str>,
    /// Why the request was refused; `None` when accepted.
    pub error: Option<String>,
    /// The database could not be reached, so the log row goes to tracing only.
    pub database_down: bool,
}

impl Reply {
    pub fn json(status: StatusCode, value: &Value) -> Reply {
        Reply {
            status,
            body: Bytes::from(value.to_string()),
            replay: false,
            allow: None,
            error: None,
            database_down: false,
        }
    }

    /// The stored first answer to an identical request.
    pub fn replayed(status: StatusCode, body: String) -> Reply {
        Reply {
            replay: true,
            ..Reply::json(status, &Value::Null)
        }
        .with_body(body)
    }

    fn with_body(mut self, body: String) -> Reply {
        self.body = Bytes::from(body);
        self
    }

    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn into_response(self) -> Response<Full<Bytes>> {
        let mut response = Response::new(Full::new(self.body));
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if self.replay {
            headers.insert(HEADER_REPLAY, HeaderValue::from_static("true"));
        }
        if let Some(allow) = self.allow {
            headers.insert(header::ALLOW, HeaderValue::from_static(allow));
        }
        response
    }
}

/// A request the listener will not apply. Nothing has changed when one is returned:
/// the transaction (if any) is dropped, which rolls it back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: StatusCode,
    pub error: &'static str,
    pub detail: String,
    pub field: Option<String>,
    pub allow: Option<&'static str>,
    /// The database cannot take the request's log row either (it is down or refusing
    /// connections): the process log has it instead. A 503 for a database that is up
    /// but timed out or hit a conflict is logged like any other answer.
    pub database_down: bool,
}

/// The longest `detail` a refusal carries: it often quotes the request (a method, a
/// value of the wrong type), and it goes into the answer, the process log and a
/// `webhook_logs` row, which an unsigned request must not be able to make large.
pub const MAX_DETAIL: usize = 512;

/// `text` cut to at most `max` bytes on a character boundary, marked when cut.
pub fn bounded(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push_str("...");
    }
    text
}

impl Refusal {
    fn new(status: StatusCode, error: &'static str, detail: impl Into<String>) -> Refusal {
        Refusal {
            status,
            error,
            detail: bounded(detail.into(), MAX_DETAIL),
            field: None,
            allow: None,
            database_down: false,
        }
    }

    pub fn not_found(detail: impl Into<String>) -> Refusal {
        Refusal::new(StatusCode::NOT_FOUND, "not_found", detail)
    }

    pub fn method_not_allowed(method: &http::Method, allow: &'static str) -> Refusal {
        Refusal {
            allow: Some(allow),
            ..Refusal::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                format!("{method} is not allowed here; use {allow}"),
            )
        }
    }

    pub fn unsupported_media_type(detail: impl Into<String>) -> Refusal {
        Refusal::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            detail,
        )
    }

    pub fn too_large(limit: usize) -> Refusal {
        Refusal::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the body is larger than callbacks.max_body_bytes ({limit} bytes)"),
        )
    }

    pub fn timeout(seconds: u64) -> Refusal {
        Refusal::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            format!(
                "the body did not arrive within callbacks.request_timeout_seconds ({seconds} s)"
            ),
        )
    }

    pub fn bad_body(detail: impl Into<String>) -> Refusal {
        Refusal::new(StatusCode::BAD_REQUEST, "bad_request", detail)
    }

    pub fn unauthorized(detail: impl Into<String>) -> Refusal {
        Refusal::new(StatusCode::UNAUTHORIZED, "unauthorized", detail)
    }

    pub fn malformed_json(detail: impl Into<String>) -> Refusal {
        Refusal::new(StatusCode::BAD_REQUEST, "malformed_json", detail)
    }

    pub fn invalid_field(field: impl Into<String>, detail: impl Into<String>) -> Refusal {
        Refusal {
            field: Some(bounded(field.into(), 128)),
            ..Refusal::new(StatusCode::BAD_REQUEST, "invalid_payload", detail)
        }
    }

    pub fn invalid_value(detail: impl Into<String>) -> Refusal {
        Refusal::new(StatusCode::BAD_REQUEST, "invalid_payload", detail)
    }

    /// The database is down or refusing connections: 503, and no log row.
    pub fn unavailable(detail: impl Into<String>) -> Refusal {
        Refusal {
            database_down: true,
            ..Refusal::retry_later(detail)
        }
    }

    /// The database is up but could not finish the change now (a statement timeout, a
    /// serialization failure, a deadlock): 503 so n8n retries, and logged.
    pub fn retry_later(detail: impl Into<String>) -> Refusal {
        Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "database_unavailable",
            detail,
        )
    }

    /// More requests at once than the listener takes (every body it may hold is
    /// being read): 503, so n8n retries.
    pub fn busy(detail: impl Into<String>) -> Refusal {
        Refusal::new(StatusCode::SERVICE_UNAVAILABLE, "busy", detail)
    }

    pub fn internal(detail: impl Into<String>) -> Refusal {
        Refusal::new(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", detail)
    }

    pub fn into_reply(self) -> Reply {
        let mut body = json!({"error": self.error, "detail": self.detail});
        if let (Some(field), Some(map)) = (&self.field, body.as_object_mut()) {
            map.insert("field".into(), Value::from(field.clone()));
        }
        Reply {
            allow: self.allow,
            error: Some(format!("{}: {}", self.error, self.detail)),
            database_down: self.database_down,
            ..Reply::json(self.status, &body)
        }
    }
}

impl From<deadpool_postgres::PoolError> for Refusal {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        Refusal::unavailable(format!("could not get a database connection: {e}"))
    }
}

/// SQLSTATEs of a schema that lacks what the relay writes: undefined column, table or
/// function, and a privilege missing. Postgres's own messages for these name objects,
/// never values.
const SCHEMA_MISFITS: [&str; 4] = ["42703", "42P01", "42883", "42501"];
/// The routine of a PL/pgSQL `RAISE`: a business trigger's own text under one of those
/// codes may say anything, and stays in the relay's log.
const PLPGSQL_RAISE: &str = "exec_stmt_raise";

impl From<tokio_postgres::Error> for Refusal {
    /// Connection trouble, timeouts and conflicts are 503 (n8n should retry later);
    /// a value Postgres refuses is the request's fault (400); anything else is ours.
    fn from(e: tokio_postgres::Error) -> Self {
        let Some(db) = e.as_db_error() else {
            return Refusal::unavailable(format!("database connection failed: {e}"));
        };
        let code = db.code().code();
        // Connection failures, resources exhausted, an operator's shutdown.
        let down = code.starts_with("08") || code.starts_with("53") || code.starts_with("57P");
        // The database answered, but not this time: a statement timeout or a cancel
        // (57014), a serialization failure or a deadlock.
        let busy = code.starts_with("57") || code == "40001" || code == "40P01";
        if down {
            Refusal::unavailable(format!("database unavailable: {}", db.message()))
        } else if busy {
            Refusal::retry_later(format!("database unavailable: {}", db.message()))
        } else if code.starts_with("22") {
            Refusal::invalid_value(format!("the database refused a value: {}", db.message()))
        } else if SCHEMA_MISFITS.contains(&code) && db.routine() != Some(PLPGSQL_RAISE) {
            // A column, table or grant the DBA must add: Postgres's message names it,
            // and the caller, whose signature checked out, is the one who must know.
            tracing::error!(sqlstate = code, error = %db, "callback query failed");
            Refusal::internal(format!(
                "the database's tables or grants do not fit the relay: {}",
                db.message()
            ))
        } else {
            tracing::error!(sqlstate = code, error = %db, "callback query failed");
            Refusal::internal("the database refused the change; the relay's log has the reason")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_json_with_error_and_detail_and_name_the_field() {
        let reply = Refusal::invalid_field("demo_id", "demo_id: expected an integer").into_reply();
        assert_eq!(reply.status, StatusCode::BAD_REQUEST);
        let body: Value = serde_json::from_slice(&reply.body).expect("json");
        assert_eq!(body["error"], "invalid_payload");
        assert_eq!(body["field"], "demo_id");
        assert!(body["detail"].as_str().unwrap_or("").contains("demo_id"));
        assert!(reply.error.is_some());
    }

    #[test]
    fn method_not_allowed_carries_the_allow_header() {
        let response = Refusal::method_not_allowed(&http::Method::GET, "POST")
            .into_reply()
            .into_response();
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(
            response.headers().get(header::ALLOW).map(|v| v.as_bytes()),
            Some(&b"POST"[..])
        );
    }

    #[test]
    fn a_replayed_answer_is_marked() {
        let response = Reply::replayed(StatusCode::OK, "{\"a\":1}".into()).into_response();
        assert_eq!(
            response.headers().get(HEADER_REPLAY).map(|v| v.as_bytes()),
            Some(&b"true"[..])
        );
    }
}
