//! The outgoing event types and the body n8n receives.

use serde::Serialize;

/// The events the relay delivers: the eleven of the business pipeline, and
/// `endpoint_unhealthy`, which the relay itself emits when a URL keeps failing. The
/// SQL function `webhook_event_types()` holds the same list; a test keeps the two
/// equal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventType {
    LeadScraped,
    LeadQualified,
    DemoCompleted,
    DemoFailed,
    VideoCompleted,
    VideoFailed,
    EmailSent,
    EmailFailed,
    LeadResponded,
    ApprovalRequested,
    WorkflowError,
    EndpointUnhealthy,
}

impl EventType {
    pub const ALL: [EventType; 12] = [
        EventType::LeadScraped,
        EventType::LeadQualified,
        EventType::DemoCompleted,
        EventType::DemoFailed,
        EventType::VideoCompleted,
        EventType::VideoFailed,
        EventType::EmailSent,
        EventType::EmailFailed,
        EventType::LeadResponded,
        EventType::ApprovalRequested,
        EventType::WorkflowError,
        EventType::EndpointUnhealthy,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::LeadScraped => "lead_scraped",
            EventType::LeadQualified => "lead_qualified",
            EventType::DemoCompleted => "demo_completed",
            EventType::DemoFailed => "demo_failed",
            EventType::VideoCompleted => "video_completed",
            EventType::VideoFailed => "video_failed",
            EventType::EmailSent => "email_sent",
            EventType::EmailFailed => "email_failed",
            EventType::LeadResponded => "lead_responded",
            EventType::ApprovalRequested => "approval_requested",
            EventType::WorkflowError => "workflow_error",
            EventType::EndpointUnhealthy => "endpoint_unhealthy",
        }
    }

    pub fn parse(name: &str) -> Option<EventType> {
        EventType::ALL.iter().copied().find(|e| e.as_str() == name)
    }

    pub fn names() -> Vec<&'static str> {
        EventType::ALL.iter().map(|e| e.as_str()).collect()
    }

    /// The default webhook path segment: `lead_scraped` -> `lead-scraped`.
    pub fn default_path(self) -> String {
        self.as_str().replace('_', "-")
    }
}

impl std::fmt::Display for EventType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The request body. Field order is fixed by this struct and `data` is the stored
/// jsonb's own text, so the bytes are the same on every attempt.
///
/// `data` is spliced in as text, never parsed: Postgres accepts JSON that a parser
/// with limits refuses or rounds (nesting deeper than serde_json's 128 levels,
/// `1e400`, integers past 64 bits), and such a payload must still be delivered exactly
/// as stored rather than wedge the queue.
#[derive(Debug, Serialize)]
pub struct Envelope<'a> {
    pub id: &'a str,
    pub event: &'a str,
    pub occurred_at: &'a str,
    pub entity_type: &'a str,
    pub entity_id: Option<i64>,
    /// JSON text as Postgres prints a jsonb value (`payload::text`).
    #[serde(skip)]
    pub data: &'a str,
}

impl Envelope<'_> {
    pub fn to_bytes(&self) -> Vec<u8> {
        // Serialising these field types cannot fail.
        let mut body = serde_json::to_vec(self).unwrap_or_default();
        body.pop(); // the closing brace
        body.extend_from_slice(b",\"data\":");
        let data = self.data.trim();
        if data.is_empty() {
            body.extend_from_slice(b"null");
        } else {
            compact_json_into(data, &mut body);
        }
        body.push(b'}');
        body
    }
}

/// Copies JSON text without the whitespace between tokens (jsonb prints `{"a": 1}`);
/// strings, escapes included, are copied untouched.
fn compact_json_into(json: &str, out: &mut Vec<u8>) {
    let mut in_string = false;
    let mut escaped = false;
    for &b in json.as_bytes() {
        if in_string {
            out.push(b);
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else if b == b'"' {
            in_string = true;
            out.push(b);
        } else if !b.is_ascii_whitespace() {
            out.push(b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_round_trips_and_paths_use_dashes() {
        for e in EventType::ALL {
            assert_eq!(EventType::parse(e.as_str()), Some(e));
            assert!(!e.default_path().contains('_'));
        }
        assert_eq!(EventType::LeadScraped.default_path(), "lead-scraped");
        assert_eq!(EventType::parse("lead-scraped"), None);
    }

    #[test]
    fn envelope_has_the_contract_fields_in_order() {
        let body = Envelope {
            id: "abc",
            event: "lead_scraped",
            occurred_at: "2025-11-04T12:00:00Z",
            entity_type: "lead",
            entity_id: Some(123),
            data: r#"{"lead_id": 123, "business_name": "Acme Inc"}"#,
        }
        .to_bytes();
        assert_eq!(
            String::from_utf8(body).expect("utf8"),
            r#"{"id":"abc","event":"lead_scraped","occurred_at":"2025-11-04T12:00:00Z","entity_type":"lead","entity_id":123,"data":{"lead_id":123,"business_name":"Acme Inc"}}"#
        );
    }

    #[test]
    fn data_is_carried_as_stored_however_deep_or_large() {
        let deep = format!("{}1{}", "[".repeat(500), "]".repeat(500));
        let data = format!(
            r#"{{"a b": "x \" y: 1, z", "deep": {deep}, "huge": 1e400, "id": 123456789012345678901234567890}}"#
        );
        let body = Envelope {
            id: "abc",
            event: "lead_scraped",
            occurred_at: "2025-11-04T12:00:00Z",
            entity_type: "lead",
            entity_id: None,
            data: &data,
        }
        .to_bytes();
        let text = String::from_utf8(body).expect("utf8");
        assert!(text.ends_with(&format!(
            r#""entity_id":null,"data":{{"a b":"x \" y: 1, z","deep":{deep},"huge":1e400,"id":123456789012345678901234567890}}}}"#
        )), "{text}");
    }
}
