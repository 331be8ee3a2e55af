//! What the pages read, beside `relay_core::queue_admin`: the queue filtered and
//! paged by key (fast at a million rows: each page is one index range), the incoming
//! callbacks, what an ordered row waits for. Every statement is a constant; filters
//! are parameters, never text spliced into SQL.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use relay_core::events::EventType;
pub use relay_core::queue_admin::{ordering, OrderingState};
use relay_core::queue_admin::{FailedFilter, QueueStatus};
use tokio_postgres::Client;

/// Rows per page.
pub const PAGE: i64 = 50;

/// A filter or cursor the page cannot use: answered 400, naming the field.
#[derive(Debug, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct BadFilter {
    pub field: &'static str,
    pub problem: String,
}

fn bad(field: &'static str, problem: impl Into<String>) -> BadFilter {
    BadFilter {
        field,
        problem: problem.into(),
    }
}

/// How the queue page is sorted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Sort {
    /// Newest first.
    #[default]
    Time,
    /// Highest priority first, then newest.
    Priority,
}

/// The queue page's filters, as the query string gives them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueueFilter {
    pub status: Option<String>,
    pub event: Option<String>,
    pub url: Option<String>,
    /// Ids are per table: with it, `entity_id` is one entity (lead 7, not video 7 too).
    pub entity_type: Option<String>,
    pub entity_id: Option<i64>,
    /// Unix seconds, inclusive.
    pub since: Option<i64>,
    /// Unix seconds, exclusive.
    pub until: Option<i64>,
    /// Text in `last_error`.
    pub text: Option<String>,
    pub sort: Sort,
    /// The last row of the previous page: `(priority, id)`.
    pub after: Option<(i32, i64)>,
}

impl QueueFilter {
    /// From `key=value` pairs; an empty value means "any".
    pub fn parse<'a>(pairs: impl Iterator<Item = (&'a str, &'a str)>) -> Result<Self, BadFilter> {
        let mut f = QueueFilter::default();
        for (key, value) in pairs {
            let value = value.trim();
            if value.is_empty() {
                continue;
            }
            match key {
                "status" => {
                    QueueStatus::parse(value).ok_or_else(|| {
                        bad("status", format!("unknown status {value:?}; known: pending, sending, sent, failed, cancelled"))
                    })?;
                    f.status = Some(value.to_string());
                }
                "event" => {
                    EventType::parse(value)
                        .ok_or_else(|| bad("event", format!("unknown event type {value:?}")))?;
                    f.event = Some(value.to_string());
                }
                "url" => {
                    if value.len() > 2048 {
                        return Err(bad("url", "longer than 2048 characters"));
                    }
                    f.url = Some(value.to_string());
                }
                "entity_type" => {
                    if value.chars().count() > 64 {
                        return Err(bad("entity_type", "longer than 64 characters"));
                    }
                    f.entity_type = Some(value.to_string());
                }
                "entity_id" => {
                    f.entity_id = Some(value.parse().map_err(|_| {
                        bad("entity_id", format!("{value:?} is not a whole number"))
                    })?)
                }
                "since" => f.since = Some(parse_time("since", value)?),
                "until" => f.until = Some(parse_time("until", value)?),
                "q" => {
                    if value.chars().count() > 200 {
                        return Err(bad("q", "longer than 200 characters"));
                    }
                    f.text = Some(value.to_string());
                }
                "sort" => {
                    f.sort = match value {
                        "time" => Sort::Time,
                        "priority" => Sort::Priority,
                        _ => return Err(bad("sort", format!("{value:?}: use time or priority"))),
                    }
                }
                "after" => {
                    let (p, id) = value
                        .split_once(':')
                        .ok_or_else(|| bad("after", "not a page cursor"))?;
                    let p = p.parse().map_err(|_| bad("after", "not a page cursor"))?;
                    let id = id.parse().map_err(|_| bad("after", "not a page cursor"))?;
                    f.after = Some((p, id));
                }
                // Unknown keys (a csrf field, a confirmation) are not filters.
                _ => {}
            }
        }
        if let (Some(s), Some(u)) = (f.since, f.until) {
            if s >= u {
                return Err(bad("until", "must be after since"));
            }
        }
        Ok(f)
    }

    /// The same filter as query-string pairs (without the cursor), for links.
    pub fn pairs(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        let mut put = |k: &'static str, v: Option<String>| {
            if let Some(v) = v {
                out.push((k, v));
            }
        };
        put("status", self.status.clone());
        put("event", self.event.clone());
        put("url", self.url.clone());
        put("entity_type", self.entity_type.clone());
        put("entity_id", self.entity_id.map(|v| v.to_string()));
        put("since", self.since.map(format_unix));
        put("until", self.until.map(format_unix));
        put("q", self.text.clone());
        if self.sort == Sort::Priority {
            out.push(("sort", "priority".into()));
        }
        out
    }

    /// This filter as the database is asked it: a URL typed as the pages show it,
    /// without a route's `user:password@`, stands for that route's URL, which queue
    /// rows hold with its credentials (the pages and their links keep it as typed,
    /// so no password travels in a query string).
    pub fn for_query<'a>(&self, route_urls: impl Iterator<Item = &'a str>) -> QueueFilter {
        let mut asked = self.clone();
        if let Some(typed) = &self.url {
            if let Some(url) = relay_core::config::url_standing_for(typed, route_urls) {
                asked.url = Some(url.to_string());
            }
        }
        asked
    }

    /// The failed rows this filter selects, for a bulk retry.
    pub fn failed(&self) -> FailedFilter {
        FailedFilter {
            event: self.event.clone(),
            url: self.url.clone(),
            entity_type: self.entity_type.clone(),
            entity_id: self.entity_id,
            since: self.since.map(to_system_time),
            until: self.until.map(to_system_time),
            error_text: self.text.clone(),
            failed_by: None,
        }
    }
}

/// `2025-11-04T12:00:00Z`, `2025-11-04T12:00` (UTC, as a browser's datetime-local
/// sends it) or `2025-11-04`: Unix seconds.
fn parse_time(field: &'static str, text: &str) -> Result<i64, BadFilter> {
    relay_core::utc_time::parse_unix(text).ok_or_else(|| {
        bad(
            field,
            format!(
                "{text:?} is not a time: use {}",
                relay_core::utc_time::FORMS
            ),
        )
    })
}

fn to_system_time(unix: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(u64::try_from(unix).unwrap_or(0))
}

/// Unix seconds as `2025-11-04T12:00:00Z`.
pub fn format_unix(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|at| {
            at.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("@{unix}"))
}

/// One row of the queue page.
#[derive(Debug, Clone)]
pub struct Listed {
    pub id: i64,
    pub event_type: String,
    pub entity: String,
    pub url: String,
    pub priority: i32,
    pub status: String,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub created_at: String,
}

/// Both sorts walk an index range: by id (the primary key) or by (priority, id),
/// each from the cursor on. The filters are checked on the rows the range hands
/// over; `$10` is the page size plus one (to know whether a next page exists), `$11`
/// the entity type.
const LIST: &str = concat!(
    "SELECT q.id, q.event_type, coalesce(q.entity_type, ''),
        coalesce(q.entity_id::text, ''), q.webhook_url, q.priority, q.status,
        q.retry_count + CASE WHEN q.status = 'sent' OR q.status = 'failed' THEN 1 ELSE 0 END,
        q.last_error, ",
    relay_core::utc_text!("q.created_at"),
    "
    FROM webhook_queue q
    WHERE ($1::text IS NULL OR q.status = $1)
      AND ($2::text IS NULL OR q.event_type = $2)
      AND ($3::text IS NULL OR q.webhook_url = $3)
      AND ($4::int8 IS NULL OR q.entity_id = $4)
      AND ($5::float8 IS NULL OR q.created_at >= to_timestamp($5))
      AND ($6::float8 IS NULL OR q.created_at < to_timestamp($6))
      AND ($7::text IS NULL OR strpos(lower(q.last_error), lower($7)) > 0)
      AND ($8::int8 IS NULL OR q.id < $8)
      -- $9, the priority cursor, only counts when sorted by priority.
      AND ($9::int4 IS NULL OR true)
      AND ($11::text IS NULL OR q.entity_type = $11)
    ORDER BY q.id DESC
    LIMIT $10"
);

const LIST_BY_PRIORITY: &str = concat!(
    "SELECT q.id, q.event_type, coalesce(q.entity_type, ''),
        coalesce(q.entity_id::text, ''), q.webhook_url, q.priority, q.status,
        q.retry_count + CASE WHEN q.status = 'sent' OR q.status = 'failed' THEN 1 ELSE 0 END,
        q.last_error, ",
    relay_core::utc_text!("q.created_at"),
    "
    FROM webhook_queue q
    WHERE ($1::text IS NULL OR q.status = $1)
      AND ($2::text IS NULL OR q.event_type = $2)
      AND ($3::text IS NULL OR q.webhook_url = $3)
      AND ($4::int8 IS NULL OR q.entity_id = $4)
      AND ($5::float8 IS NULL OR q.created_at >= to_timestamp($5))
      AND ($6::float8 IS NULL OR q.created_at < to_timestamp($6))
      AND ($7::text IS NULL OR strpos(lower(q.last_error), lower($7)) > 0)
      AND ($8::int8 IS NULL OR (q.priority, q.id) < ($9::int4, $8))
      AND ($11::text IS NULL OR q.entity_type = $11)
    ORDER BY q.priority DESC, q.id DESC
    LIMIT $10"
);

/// A page of the queue and the cursor of the next one.
pub async fn list(
    client: &Client,
    f: &QueueFilter,
) -> Result<(Vec<Listed>, Option<(i32, i64)>), tokio_postgres::Error> {
    let (after_priority, after_id) = match f.after {
        Some((p, id)) => (Some(p), Some(id)),
        None => (None, None),
    };
    let since = f.since.map(|s| s as f64);
    let until = f.until.map(|s| s as f64);
    let limit = PAGE + 1;
    let statement = match f.sort {
        Sort::Time => LIST,
        Sort::Priority => LIST_BY_PRIORITY,
    };
    let rows = client
        .query(
            statement,
            &[
                &f.status,
                &f.event,
                &f.url,
                &f.entity_id,
                &since,
                &until,
                &f.text,
                &after_id,
                &after_priority,
                &limit,
                &f.entity_type,
            ],
        )
        .await?;
    let mut listed: Vec<Listed> = rows
        .iter()
        .map(|r| {
            let entity_type: String = r.get(2);
            let entity_id: String = r.get(3);
            Listed {
                id: r.get(0),
                event_type: r.get(1),
                entity: if entity_id.is_empty() {
                    entity_type
                } else {
                    format!("{entity_type} {entity_id}")
                },
                url: r.get(4),
                priority: r.get(5),
                status: r.get(6),
                attempts: r.get(7),
                last_error: r.get(8),
                created_at: r.get(9),
            }
        })
        .collect();
    let next = if listed.len() as i64 > PAGE {
        listed.truncate(PAGE as usize);
        listed.last().map(|l| (l.priority, l.id))
    } else {
        None
    };
    Ok((listed, next))
}

/// One incoming callback, as logged.
#[derive(Debug, Clone)]
pub struct Callback {
    pub id: i64,
    pub created_at: String,
    pub endpoint: String,
    pub status: Option<i32>,
    pub error: Option<String>,
    pub duration_ms: Option<i32>,
}

/// The incoming `webhook_logs`, newest first, by endpoint and answered status.
const CALLBACKS: &str = concat!(
    "SELECT id, ",
    relay_core::utc_text!("created_at"),
    ",
        coalesce(endpoint, ''), response_status, error_message, duration_ms
    FROM webhook_logs
    WHERE direction = 'incoming'
      AND ($1::text IS NULL OR endpoint = $1)
      AND ($2::int4 IS NULL OR response_status = $2)
      AND ($3::int8 IS NULL OR id < $3)
    ORDER BY id DESC
    LIMIT $4"
);

/// The callbacks page's filters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CallbackFilter {
    pub endpoint: Option<String>,
    pub status: Option<i32>,
    pub after: Option<i64>,
}

impl CallbackFilter {
    pub fn parse<'a>(pairs: impl Iterator<Item = (&'a str, &'a str)>) -> Result<Self, BadFilter> {
        let mut f = CallbackFilter::default();
        for (key, value) in pairs {
            let value = value.trim();
            if value.is_empty() {
                continue;
            }
            match key {
                "endpoint" => {
                    if value.len() > 200 {
                        return Err(bad("endpoint", "longer than 200 characters"));
                    }
                    f.endpoint = Some(value.to_string());
                }
                "status" => {
                    let status: i32 = value
                        .parse()
                        .ok()
                        .filter(|s| (100..=599).contains(s))
                        .ok_or_else(|| bad("status", format!("{value:?} is not an HTTP status")))?;
                    f.status = Some(status);
                }
                "after" => {
                    f.after = Some(
                        value
                            .parse()
                            .map_err(|_| bad("after", "not a page cursor"))?,
                    )
                }
                _ => {}
            }
        }
        Ok(f)
    }
}

pub async fn callbacks(
    client: &Client,
    f: &CallbackFilter,
) -> Result<(Vec<Callback>, Option<i64>), tokio_postgres::Error> {
    let rows = client
        .query(CALLBACKS, &[&f.endpoint, &f.status, &f.after, &(PAGE + 1)])
        .await?;
    let mut out: Vec<Callback> = rows
        .iter()
        .map(|r| Callback {
            id: r.get(0),
            created_at: r.get(1),
            endpoint: r.get(2),
            status: r.get(3),
            error: r.get(4),
            duration_ms: r.get(5),
        })
        .collect();
    let next = if out.len() as i64 > PAGE {
        out.truncate(PAGE as usize);
        out.last().map(|c| c.id)
    } else {
        None
    };
    Ok((out, next))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(q: &str) -> Result<QueueFilter, BadFilter> {
        QueueFilter::parse(url::form_urlencoded::parse(q.as_bytes()).map(|(k, v)| {
            // Leaked only in tests, to hand out &str of the decoded pairs.
            (
                &*Box::leak(k.into_owned().into_boxed_str()),
                &*Box::leak(v.into_owned().into_boxed_str()),
            )
        }))
    }

    #[test]
    fn filters_parse_and_bad_ones_name_their_field() {
        let f = parse("status=failed&event=lead_scraped&entity_type=lead&entity_id=7&since=2025-11-04&q=HTTP+500&sort=priority&after=5:99")
            .expect("valid");
        assert_eq!(f.status.as_deref(), Some("failed"));
        assert_eq!(
            (f.entity_type.as_deref(), f.entity_id),
            (Some("lead"), Some(7))
        );
        assert_eq!(
            f.failed().entity_type.as_deref(),
            Some("lead"),
            "a bulk retry keeps it"
        );
        assert_eq!(f.since, Some(1_762_214_400));
        assert_eq!(f.text.as_deref(), Some("HTTP 500"));
        assert_eq!((f.sort, f.after), (Sort::Priority, Some((5, 99))));
        for (q, field) in [
            ("status=lost", "status"),
            ("event=lead_scrapped", "event"),
            ("entity_id=seven", "entity_id"),
            (&*format!("entity_type={}", "x".repeat(65)), "entity_type"),
            ("since=yesterday", "since"),
            ("since=2025-13-01", "since"),
            ("since=2025-11-05&until=2025-11-04", "until"),
            ("sort=random", "sort"),
            ("after=5", "after"),
        ] {
            assert_eq!(parse(q).map(|_| ()).map_err(|e| e.field), Err(field), "{q}");
        }
        assert_eq!(
            parse("status=&event=").expect("empty is any"),
            QueueFilter::default()
        );
    }

    #[test]
    fn times_round_trip_as_utc() {
        assert_eq!(format_unix(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_unix(1_762_257_600), "2025-11-04T12:00:00Z");
        assert_eq!(
            parse_time("since", "2025-11-04T12:00:00Z").ok(),
            Some(1_762_257_600)
        );
        assert_eq!(
            parse_time("since", "2025-11-04T12:00").ok(),
            Some(1_762_257_600)
        );
        assert_eq!(parse_time("since", "2025-11-04").ok(), Some(1_762_214_400));
        // A day the calendar does not have is refused, not rolled into March.
        assert!(parse_time("since", "2025-02-30").is_err());
        assert!(parse_time("since", "1969-12-31").is_err());
        let f = parse("since=2025-11-04T12:00:00Z&status=sent").expect("valid");
        assert!(f
            .pairs()
            .contains(&("since", "2025-11-04T12:00:00Z".into())));
    }

    #[test]
    fn callback_filters_check_the_status() {
        let parse = |q: &str| {
            CallbackFilter::parse(url::form_urlencoded::parse(q.as_bytes()).map(|(k, v)| {
                (
                    &*Box::leak(k.into_owned().into_boxed_str()),
                    &*Box::leak(v.into_owned().into_boxed_str()),
                )
            }))
        };
        assert_eq!(parse("status=401").expect("valid").status, Some(401));
        assert_eq!(
            parse("status=4011").map(|_| ()).map_err(|e| e.field),
            Err("status")
        );
        assert_eq!(
            parse("after=x").map(|_| ()).map_err(|e| e.field),
            Err("after")
        );
    }
}
