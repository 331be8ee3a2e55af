//! The request bodies, typed. Unknown fields are allowed (n8n adds its own); the
//! fields a callback needs must be present with the right type, and a refusal names
//! the field at fault.

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::response::Refusal;
use crate::routes::Endpoint;

/// Why a body was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    #[error("the body is not valid JSON: {0}")]
    Malformed(String),
    #[error("{message}")]
    Field { field: String, message: String },
}

impl From<PayloadError> for Refusal {
    fn from(e: PayloadError) -> Self {
        match &e {
            PayloadError::Malformed(_) => Refusal::malformed_json(e.to_string()),
            PayloadError::Field { field, .. } => {
                Refusal::invalid_field(field.clone(), e.to_string())
            }
        }
    }
}

fn field_error(field: &str, message: impl std::fmt::Display) -> PayloadError {
    PayloadError::Field {
        field: field.to_string(),
        message: format!("{field}: {message}"),
    }
}

/// A decision on a demo site or a video.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approval {
    pub id: i64,
    pub approved: bool,
    pub reviewer: Option<String>,
    pub notes: Option<String>,
}

#[derive(Deserialize)]
struct DemoApprovalBody {
    #[serde(deserialize_with = "lax::int")]
    demo_id: i64,
    #[serde(deserialize_with = "lax::switch")]
    approved: bool,
    reviewer: Option<String>,
    notes: Option<String>,
}

#[derive(Deserialize)]
struct VideoApprovalBody {
    #[serde(deserialize_with = "lax::int")]
    video_id: i64,
    #[serde(deserialize_with = "lax::switch")]
    approved: bool,
    reviewer: Option<String>,
    notes: Option<String>,
}

/// A workflow run's state, as n8n reports it. A progress report may come without an
/// `execution_id` (the guide's example has only `workflow_id` and `current_step`): it
/// is acknowledged and logged, and records no run; a completion needs one.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct WorkflowUpdate {
    #[serde(deserialize_with = "lax::text")]
    pub workflow_id: String,
    #[serde(default, deserialize_with = "lax::opt_text")]
    pub execution_id: Option<String>,
    pub status: Option<String>,
    pub current_step: Option<String>,
    #[serde(default, deserialize_with = "lax::opt_int")]
    pub duration_ms: Option<i64>,
    #[serde(default, deserialize_with = "lax::opt_int")]
    pub lead_id: Option<i64>,
}

/// A workflow that failed. Only `error` is required: n8n's Error Trigger has no
/// execution id when the failure happened before an execution was saved, and an
/// alert must not be lost for that. Without an execution id no run is recorded,
/// but the event is still emitted. `error` may be text or n8n's error object.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkflowError {
    pub workflow_id: Option<String>,
    pub execution_id: Option<String>,
    pub current_step: Option<String>,
    pub duration_ms: Option<i64>,
    pub lead_id: Option<i64>,
    /// One line for `workflow_runs.error_message`.
    pub message: String,
}

#[derive(Deserialize)]
struct WorkflowErrorBody {
    #[serde(default, deserialize_with = "lax::opt_text")]
    workflow_id: Option<String>,
    #[serde(default, deserialize_with = "lax::opt_text")]
    execution_id: Option<String>,
    current_step: Option<String>,
    #[serde(default, deserialize_with = "lax::opt_int")]
    duration_ms: Option<i64>,
    #[serde(default, deserialize_with = "lax::opt_int")]
    lead_id: Option<i64>,
}

/// The guide's `POST /api/v1/test/trigger-webhook`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct TestTrigger {
    pub event_type: String,
    #[serde(default, deserialize_with = "lax::opt_int")]
    pub lead_id: Option<i64>,
    #[serde(default)]
    pub data: Map<String, Value>,
}

/// A decoded request, ready to apply. Workflow callbacks keep the whole request,
/// which is stored as `workflow_runs.payload` and travels in `workflow_error`.
#[derive(Debug, Clone, PartialEq)]
pub enum Callback {
    DemoApproval(Approval),
    VideoApproval(Approval),
    WorkflowCompleted(WorkflowUpdate, Value),
    WorkflowStatus(WorkflowUpdate, Value),
    ErrorNotification(WorkflowError, Value),
    TestTrigger(TestTrigger),
}

/// Decodes the body for `endpoint`. Health has no body and never gets here.
pub fn decode(endpoint: Endpoint, body: &[u8]) -> Result<Callback, PayloadError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| PayloadError::Malformed(e.to_string()))?;
    if !value.is_object() {
        return Err(PayloadError::Malformed(format!(
            "expected a JSON object, got {}",
            kind(&value)
        )));
    }
    match endpoint {
        Endpoint::DemoApproval => {
            let b: DemoApprovalBody = typed(&value)?;
            approval(b.demo_id, b.approved, b.reviewer, b.notes).map(Callback::DemoApproval)
        }
        Endpoint::VideoApproval => {
            let b: VideoApprovalBody = typed(&value)?;
            approval(b.video_id, b.approved, b.reviewer, b.notes).map(Callback::VideoApproval)
        }
        _ => stored_whole(endpoint, value),
    }
}

fn approval(
    id: i64,
    approved: bool,
    reviewer: Option<String>,
    notes: Option<String>,
) -> Result<Approval, PayloadError> {
    for (field, text) in [("reviewer", &reviewer), ("notes", &notes)] {
        if text.as_deref().is_some_and(|t| t.contains('\0')) {
            return Err(nul_error(field));
        }
    }
    Ok(Approval {
        id,
        approved,
        reviewer,
        notes,
    })
}

/// Postgres text and jsonb cannot hold U+0000; refused here, named, instead of
/// failing the transaction.
fn nul_error(field: &str) -> PayloadError {
    field_error(field, "text must not contain the NUL character (\\u0000)")
}

/// The callbacks whose whole body is stored (workflow runs) or emitted (events).
fn stored_whole(endpoint: Endpoint, value: Value) -> Result<Callback, PayloadError> {
    if let Some(path) = nul_path(&value) {
        return Err(nul_error(path.trim_start_matches('.')));
    }
    match endpoint {
        Endpoint::WorkflowCompleted => Ok(Callback::WorkflowCompleted(run(&value, true)?, value)),
        Endpoint::WorkflowStatus => Ok(Callback::WorkflowStatus(run(&value, false)?, value)),
        Endpoint::ErrorNotification => {
            let b: WorkflowErrorBody = typed(&value)?;
            for (field, id) in [
                ("workflow_id", &b.workflow_id),
                ("execution_id", &b.execution_id),
            ] {
                if let Some(id) = id {
                    id_length(field, id)?;
                }
            }
            let message = error_message(value.get("error"))?;
            let present = |id: Option<String>| id.filter(|t| !t.trim().is_empty());
            Ok(Callback::ErrorNotification(
                WorkflowError {
                    workflow_id: present(b.workflow_id),
                    execution_id: present(b.execution_id),
                    current_step: b.current_step,
                    duration_ms: b.duration_ms,
                    lead_id: b.lead_id,
                    message,
                },
                value,
            ))
        }
        Endpoint::TestTrigger => {
            let t: TestTrigger = typed(&value)?;
            if relay_core::EventType::parse(&t.event_type).is_none() {
                return Err(field_error(
                    "event_type",
                    format!(
                        "unknown event type {:?}; known: {}",
                        t.event_type,
                        relay_core::EventType::names().join(", ")
                    ),
                ));
            }
            Ok(Callback::TestTrigger(t))
        }
        Endpoint::DemoApproval | Endpoint::VideoApproval | Endpoint::Health => Err(
            PayloadError::Malformed(format!("{} takes no such body", endpoint.path())),
        ),
    }
}

/// The longest workflow or execution id taken: n8n's are a few dozen bytes, and
/// `workflow_runs` keys runs by execution id in a btree, whose entries Postgres caps
/// near 2.7 KB (a longer one failed the statement: a 500 for the sender's mistake).
const MAX_ID_BYTES: usize = 255;

fn run(value: &Value, needs_execution: bool) -> Result<WorkflowUpdate, PayloadError> {
    let run: WorkflowUpdate = typed(value)?;
    if needs_execution && run.execution_id.is_none() {
        return Err(field_error("execution_id", "missing field"));
    }
    for (field, text) in [
        ("workflow_id", Some(&run.workflow_id)),
        ("execution_id", run.execution_id.as_ref()),
    ] {
        let Some(text) = text else { continue };
        if text.trim().is_empty() {
            return Err(field_error(field, "must not be empty"));
        }
        id_length(field, text)?;
    }
    Ok(run)
}

fn id_length(field: &str, text: &str) -> Result<(), PayloadError> {
    if text.len() > MAX_ID_BYTES {
        return Err(field_error(
            field,
            format!("at most {MAX_ID_BYTES} bytes, got {}", text.len()),
        ));
    }
    Ok(())
}

fn error_message(error: Option<&Value>) -> Result<String, PayloadError> {
    match error {
        None | Some(Value::Null) => Err(field_error("error", "missing field")),
        Some(Value::String(text)) if !text.trim().is_empty() => Ok(text.clone()),
        Some(Value::Object(map)) => Ok(match map.get("message") {
            Some(Value::String(text)) => text.clone(),
            _ => Value::Object(map.clone()).to_string(),
        }),
        Some(Value::String(_)) => Err(field_error("error", "must not be empty")),
        Some(other) => Err(field_error(
            "error",
            format!("expected text or an error object, got {}", kind(other)),
        )),
    }
}

/// Deserialises with the path of the failing field in the message.
/// Ids, counts and switches as the backend this replaces took them: a JSON number or
/// boolean, or the same written as a string (`"456"`, `"true"`), which is what an n8n
/// expression inside quotes produces; that backend's models coerced them, so the
/// workflows migrating users bring send them both ways.
mod lax {
    use serde::de::{Deserializer, Error};
    use serde::Deserialize;
    use serde_json::Value;

    fn int_of<E: Error>(value: Value) -> Result<i64, E> {
        match value {
            Value::Number(n) => n
                .as_i64()
                .ok_or_else(|| E::custom(format!("expected an integer, got {n}"))),
            Value::String(text) => text.trim().parse().map_err(|_| {
                E::custom(format!(
                    "expected an integer (or its digits as text), got {:?}",
                    text.chars().take(40).collect::<String>()
                ))
            }),
            other => Err(E::custom(format!(
                "expected an integer, got {}",
                super::kind(&other)
            ))),
        }
    }

    pub fn int<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        int_of(Value::deserialize(d)?)
    }

    /// An optional number that an expression inside quotes left empty (`""`, or the
    /// words n8n renders for a missing value) is absent, as JSON null is: refusing it
    /// would lose an error report whose workflow had no lead id to give.
    pub fn opt_int<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
        match Value::deserialize(d)? {
            Value::Null => Ok(None),
            Value::String(text) if absent_word(&text) => Ok(None),
            value => int_of(value).map(Some),
        }
    }

    fn absent_word(text: &str) -> bool {
        matches!(text.trim(), "" | "null" | "undefined")
    }

    /// An id that is text, or an integer (n8n's execution ids are digits, and
    /// `{{ $execution.id }}` outside quotes sends them as a number).
    fn text_of<E: Error>(value: Value) -> Result<String, E> {
        match value {
            Value::String(text) => Ok(text),
            Value::Number(n) if n.is_i64() || n.is_u64() => Ok(n.to_string()),
            other => Err(E::custom(format!(
                "expected text or an integer, got {}",
                super::kind(&other)
            ))),
        }
    }

    pub fn text<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        text_of(Value::deserialize(d)?)
    }

    pub fn opt_text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        match Value::deserialize(d)? {
            Value::Null => Ok(None),
            value => text_of(value).map(Some),
        }
    }

    pub fn switch<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
        match Value::deserialize(d)? {
            Value::Bool(b) => Ok(b),
            Value::String(text) => relay_core::config::switch_word(&text).ok_or_else(|| {
                D::Error::custom(format!(
                    "expected true or false, got {:?}",
                    text.chars().take(40).collect::<String>()
                ))
            }),
            other => Err(D::Error::custom(format!(
                "expected true or false, got {}",
                super::kind(&other)
            ))),
        }
    }
}

fn typed<T: DeserializeOwned>(value: &Value) -> Result<T, PayloadError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        // A missing field has no path yet: its name is in serde's message.
        let field = if path == "." {
            inner
                .split('`')
                .nth(1)
                .map(str::to_string)
                .unwrap_or_default()
        } else {
            path
        };
        if inner.starts_with("missing field") {
            field_error(&field, "missing field")
        } else {
            field_error(&field, inner)
        }
    })
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The path of the first string (or key) holding U+0000, if any. Built only once one
/// is found: a path string per node made a wide body with one long key cost the key's
/// length times the node count (gigabytes copied for a 1 MB body).
fn nul_path(value: &Value) -> Option<String> {
    enum Step<'a> {
        Index(usize),
        Key(&'a str),
    }
    fn find<'a>(value: &'a Value, steps: &mut Vec<Step<'a>>) -> bool {
        let inside = |step: Step<'a>, v: &'a Value, steps: &mut Vec<Step<'a>>| {
            steps.push(step);
            let found = find(v, steps);
            if !found {
                steps.pop();
            }
            found
        };
        match value {
            Value::String(s) => s.contains('\0'),
            Value::Array(items) => items
                .iter()
                .enumerate()
                .any(|(i, v)| inside(Step::Index(i), v, steps)),
            Value::Object(map) => map
                .iter()
                .any(|(k, v)| k.contains('\0') || inside(Step::Key(k), v, steps)),
            _ => false,
        }
    }
    let mut steps = Vec::new();
    find(value, &mut steps).then(|| {
        steps
            .iter()
            .map(|step| match step {
                Step::Index(i) => format!("[{i}]"),
                Step::Key(k) => format!(".{k}"),
            })
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(e: PayloadError) -> String {
        match e {
            PayloadError::Field { field, .. } => field,
            other => panic!("expected a field error, got {other:?}"),
        }
    }

    #[test]
    fn demo_approval_decodes_with_extra_fields_allowed() {
        let body =
            br#"{"demo_id":456,"approved":true,"reviewer":"a@b","notes":"ok","n8n":{"x":1}}"#;
        assert_eq!(
            decode(Endpoint::DemoApproval, body),
            Ok(Callback::DemoApproval(Approval {
                id: 456,
                approved: true,
                reviewer: Some("a@b".into()),
                notes: Some("ok".into()),
            }))
        );
    }

    #[test]
    fn ids_longer_than_a_btree_entry_can_hold_are_refused_by_name() {
        let long = "e".repeat(3_000);
        for endpoint in [
            Endpoint::WorkflowStatus,
            Endpoint::WorkflowCompleted,
            Endpoint::ErrorNotification,
        ] {
            let body = serde_json::json!({
                "workflow_id": "w", "execution_id": long, "status": "running", "error": "boom"
            })
            .to_string();
            let e = decode(endpoint, body.as_bytes()).expect_err("too long");
            assert_eq!(field_of(e), "execution_id", "{endpoint:?}");
        }
        let ok = serde_json::json!({"workflow_id": "w", "execution_id": "e".repeat(255)});
        assert!(decode(Endpoint::WorkflowStatus, ok.to_string().as_bytes()).is_ok());
    }

    #[test]
    fn a_progress_report_may_leave_out_the_execution_a_completion_may_not() {
        let body = br#"{"workflow_id":"w","current_step":"scrape"}"#;
        let Ok(Callback::WorkflowStatus(run, _)) = decode(Endpoint::WorkflowStatus, body) else {
            panic!("decodes without an execution id");
        };
        assert_eq!(run.execution_id, None);
        let e = decode(Endpoint::WorkflowCompleted, body).expect_err("missing");
        assert_eq!(field_of(e), "execution_id");
        let e = decode(
            Endpoint::WorkflowStatus,
            br#"{"workflow_id":"w","execution_id":""}"#,
        )
        .expect_err("empty");
        assert_eq!(field_of(e), "execution_id");
    }

    #[test]
    fn missing_and_mistyped_fields_are_named() {
        let e = decode(Endpoint::DemoApproval, br#"{"approved":true}"#).expect_err("missing");
        assert_eq!(field_of(e), "demo_id");
        let e = decode(
            Endpoint::DemoApproval,
            br#"{"demo_id":"four","approved":true}"#,
        )
        .expect_err("type");
        assert_eq!(field_of(e), "demo_id");
        let e = decode(
            Endpoint::VideoApproval,
            br#"{"video_id":1,"approved":"maybe"}"#,
        )
        .expect_err("type");
        assert_eq!(field_of(e), "approved");
        let e = decode(
            Endpoint::VideoApproval,
            br#"{"video_id":1.5,"approved":true}"#,
        )
        .expect_err("type");
        assert_eq!(field_of(e), "video_id");
        let e = decode(
            Endpoint::WorkflowStatus,
            br#"{"workflow_id":"w","execution_id":"e","duration_ms":1.5}"#,
        )
        .expect_err("type");
        assert_eq!(field_of(e), "duration_ms");
        let e = decode(
            Endpoint::WorkflowCompleted,
            br#"{"workflow_id":"w","execution_id":"  "}"#,
        )
        .expect_err("empty");
        assert_eq!(field_of(e), "execution_id");
    }

    /// n8n's execution ids are digits: `"execution_id": {{ $execution.id }}` in an
    /// HTTP Request body sends a number, which was a 400 (and an error workflow's
    /// alert lost with it).
    #[test]
    fn workflow_and_execution_ids_may_come_as_integers() {
        for endpoint in [Endpoint::WorkflowStatus, Endpoint::WorkflowCompleted] {
            let body = br#"{"workflow_id":7,"execution_id":42,"status":"success"}"#;
            let run = match decode(endpoint, body) {
                Ok(Callback::WorkflowStatus(run, _) | Callback::WorkflowCompleted(run, _)) => run,
                other => panic!("{endpoint:?}: {other:?}"),
            };
            assert_eq!(run.workflow_id, "7");
            assert_eq!(run.execution_id.as_deref(), Some("42"));
        }
        let body = br#"{"workflow_id":7,"execution_id":42,"error":"boom"}"#;
        let Ok(Callback::ErrorNotification(err, _)) = decode(Endpoint::ErrorNotification, body)
        else {
            panic!("decodes");
        };
        assert_eq!(
            (err.workflow_id.as_deref(), err.execution_id.as_deref()),
            (Some("7"), Some("42"))
        );
        for bad in [r#"4.5"#, r#"true"#, r#"{"id":1}"#] {
            let body = format!(r#"{{"workflow_id":"w","execution_id":{bad}}}"#);
            let e = decode(Endpoint::WorkflowCompleted, body.as_bytes()).expect_err(bad);
            assert_eq!(field_of(e), "execution_id", "{bad}");
        }
    }

    /// What the older backend's models took, and n8n expressions in quotes send.
    #[test]
    fn ids_and_switches_may_come_as_text() {
        assert_eq!(
            decode(
                Endpoint::DemoApproval,
                br#"{"demo_id":" 456 ","approved":"True"}"#
            ),
            Ok(Callback::DemoApproval(Approval {
                id: 456,
                approved: true,
                reviewer: None,
                notes: None,
            }))
        );
        let Ok(Callback::VideoApproval(a)) = decode(
            Endpoint::VideoApproval,
            br#"{"video_id":"789","approved":"false"}"#,
        ) else {
            panic!("decodes");
        };
        assert_eq!((a.id, a.approved), (789, false));
        let Ok(Callback::WorkflowStatus(run, body)) = decode(
            Endpoint::WorkflowStatus,
            br#"{"workflow_id":"w","lead_id":"123","duration_ms":"45000"}"#,
        ) else {
            panic!("decodes");
        };
        assert_eq!((run.lead_id, run.duration_ms), (Some(123), Some(45000)));
        assert_eq!(body["lead_id"], "123", "the request is kept as sent");
    }

    /// `"lead_id": "{{ $json.lead_id }}"` on an item without one renders as `""`: an
    /// error report refused for it was an alert lost, since its workflow had failed.
    #[test]
    fn an_optional_number_left_empty_by_an_expression_is_absent() {
        for empty in [r#""""#, r#"" ""#, r#""null""#, r#""undefined""#] {
            let body = format!(r#"{{"error":"boom","lead_id":{empty},"duration_ms":{empty}}}"#);
            let Ok(Callback::ErrorNotification(err, _)) =
                decode(Endpoint::ErrorNotification, body.as_bytes())
            else {
                panic!("{empty} decodes");
            };
            assert_eq!((err.lead_id, err.duration_ms), (None, None), "{empty}");
        }
        let e = decode(
            Endpoint::ErrorNotification,
            br#"{"error":"boom","lead_id":"none"}"#,
        )
        .expect_err("a word that is no number is still refused");
        assert_eq!(field_of(e), "lead_id");
    }

    #[test]
    fn malformed_json_and_non_objects_are_malformed() {
        for body in [&b"{"[..], b"", b"[1]", b"null", b"\"x\""] {
            assert!(matches!(
                decode(Endpoint::DemoApproval, body),
                Err(PayloadError::Malformed(_))
            ));
        }
    }

    #[test]
    fn error_notification_takes_text_or_an_error_object() {
        let body =
            br#"{"workflow_id":"w","execution_id":"e","error":{"message":"boom","stack":"s"}}"#;
        let Ok(Callback::ErrorNotification(err, _)) = decode(Endpoint::ErrorNotification, body)
        else {
            panic!("decodes");
        };
        assert_eq!(err.message, "boom");
        let e = decode(
            Endpoint::ErrorNotification,
            br#"{"workflow_id":"w","execution_id":"e","error":5}"#,
        )
        .expect_err("type");
        assert_eq!(field_of(e), "error");
        let e = decode(
            Endpoint::ErrorNotification,
            br#"{"workflow_id":"w","execution_id":"e"}"#,
        )
        .expect_err("missing");
        assert_eq!(field_of(e), "error");
        // n8n's Error Trigger without a saved execution: still an alert.
        let Ok(Callback::ErrorNotification(err, _)) = decode(
            Endpoint::ErrorNotification,
            br#"{"workflow_id":"","execution_id":null,"error":"trigger failed"}"#,
        ) else {
            panic!("decodes without ids");
        };
        assert_eq!((err.workflow_id, err.execution_id), (None, None));
    }

    #[test]
    fn nul_characters_are_refused_with_their_path() {
        let e = decode(
            Endpoint::WorkflowStatus,
            br#"{"workflow_id":"w","execution_id":"e","extra":{"a":["ok","b\u0000"]}}"#,
        )
        .expect_err("nul");
        assert_eq!(field_of(e), "extra.a[1]");
    }

    #[test]
    fn nul_characters_matter_only_where_they_would_be_stored() {
        let e = decode(
            Endpoint::DemoApproval,
            br#"{"demo_id":1,"approved":true,"notes":"a\u0000b"}"#,
        )
        .expect_err("nul in notes");
        assert_eq!(field_of(e), "notes");
        assert!(decode(
            Endpoint::DemoApproval,
            br#"{"demo_id":1,"approved":true,"unused":"a\u0000b"}"#
        )
        .is_ok());
    }

    #[test]
    fn test_trigger_refuses_unknown_event_types() {
        let e = decode(
            Endpoint::TestTrigger,
            br#"{"event_type":"lead_scrapped","lead_id":1}"#,
        )
        .expect_err("unknown");
        assert_eq!(field_of(e), "event_type");
        assert!(decode(
            Endpoint::TestTrigger,
            br#"{"event_type":"lead_scraped","lead_id":1,"data":{"name":"x"}}"#
        )
        .is_ok());
    }
}
