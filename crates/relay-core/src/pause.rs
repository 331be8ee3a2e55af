//! Run-time pauses: delivery held per event type, per URL, or altogether, persisted
//! in `webhook_pauses` so that every relay on the database obeys them and a restart
//! keeps them. Held events stay `pending` in the queue, in order; nothing is dropped.
//! The CLI (`n8n-relay queue pause|resume|paused`) and the relay use this module; a
//! change wakes every relay at once through a `control` notification on the relay's
//! channel, and relays re-read the table at least every second anyway.

use serde::Serialize;
use tokio_postgres::Client;

use crate::events::EventType;
use crate::queue_admin::{QueueAdminError, Result};

/// The NOTIFY payload that tells relays to re-read their controls (event ids are
/// numbers, so it cannot be mistaken for one).
pub const CONTROL_PAYLOAD: &str = "control";

/// Every pause, for a relay: `(scope, target)`.
pub const LOAD: &str = "SELECT scope, target FROM webhook_pauses";

const PAUSE: &str = "INSERT INTO webhook_pauses (scope, target, reason, paused_by)
    VALUES ($1, $2, $3, $4)
    ON CONFLICT (scope, target) DO UPDATE
        SET reason = EXCLUDED.reason, paused_by = EXCLUDED.paused_by, paused_at = now()";

const RESUME: &str = "DELETE FROM webhook_pauses WHERE scope = $1 AND target = $2";

const NOTIFY: &str = "SELECT pg_notify($1, $2)";

/// The pauses with how many pending rows each holds (a row held by two pauses counts
/// for both).
const LIST: &str = concat!(
    "SELECT p.scope, p.target, p.reason, p.paused_by, ",
    crate::utc_text!("p.paused_at"),
    ",
        (SELECT count(*) FROM webhook_queue q
         WHERE q.status = 'pending'
           AND CASE p.scope WHEN 'all' THEN true
                            WHEN 'event' THEN q.event_type = p.target
                            ELSE q.webhook_url = p.target END)
    FROM webhook_pauses p
    ORDER BY p.paused_at, p.scope, p.target"
);

/// Pending rows that a pause holds now. The uncorrelated `EXISTS` first makes it free
/// when nothing is paused (the queue is not read at all).
const HELD: &str = "SELECT count(*) FROM webhook_queue q
    WHERE EXISTS (SELECT 1 FROM webhook_pauses)
      AND q.status = 'pending'
      AND EXISTS (SELECT 1 FROM webhook_pauses p
                  WHERE p.scope = 'all'
                     OR (p.scope = 'event' AND p.target = q.event_type)
                     OR (p.scope = 'url' AND p.target = q.webhook_url))";

/// Pending rows held by pauses now (0 when nothing is paused, without reading the
/// queue).
pub async fn held(client: &Client) -> std::result::Result<i64, tokio_postgres::Error> {
    client.query_one(HELD, &[]).await?.try_get(0)
}

/// What is paused.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// Every delivery.
    All,
    /// One event type's route.
    Event(String),
    /// Every route to one URL.
    Url(String),
}

impl Scope {
    /// From the CLI's flags; the event type and URL are checked.
    pub fn parse(all: bool, event: Option<&str>, url: Option<&str>) -> Result<Scope> {
        match (all, event, url) {
            (true, None, None) => Ok(Scope::All),
            (false, Some(e), None) => match EventType::parse(e) {
                Some(e) => Ok(Scope::Event(e.as_str().to_string())),
                None => Err(QueueAdminError::BadEvent(e.to_string())),
            },
            (false, None, Some(u)) => match url::Url::parse(u) {
                Ok(parsed) if matches!(parsed.scheme(), "http" | "https") => {
                    Ok(Scope::Url(u.to_string()))
                }
                _ => Err(QueueAdminError::BadUrl(u.to_string())),
            },
            _ => Err(QueueAdminError::BadScope),
        }
    }

    /// From a `webhook_pauses` row; `None` for a scope this relay does not know.
    pub fn from_row(scope: &str, target: &str) -> Option<Scope> {
        match scope {
            "all" => Some(Scope::All),
            "event" => Some(Scope::Event(target.to_string())),
            "url" => Some(Scope::Url(target.to_string())),
            _ => None,
        }
    }

    fn columns(&self) -> (&'static str, &str) {
        match self {
            Scope::All => ("all", ""),
            Scope::Event(e) => ("event", e),
            Scope::Url(u) => ("url", u),
        }
    }
}

impl Scope {
    /// Whether this pause holds a row of `event` to `url`.
    pub fn holds(&self, event: &str, url: &str) -> bool {
        match self {
            Scope::All => true,
            Scope::Event(e) => e == event,
            Scope::Url(u) => u == url,
        }
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scope::All => write!(f, "all delivery"),
            Scope::Event(e) => write!(f, "event {e}"),
            // Logged and printed: never a URL's credentials.
            Scope::Url(u) => write!(f, "url {}", crate::config::url_without_userinfo(u)),
        }
    }
}

/// One pause, as `queue paused` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Pause {
    pub scope: String,
    pub target: String,
    pub reason: Option<String>,
    pub paused_by: String,
    pub paused_at: String,
    /// Pending rows it holds now.
    pub held: i64,
}

/// Pauses `scope` (or updates the reason of an existing pause) and wakes the relays.
/// The longest pause reason: a line for `queue paused` and the console, which shows it
/// on every refresh (the console's form said 200; the server took 60,000).
pub const REASON_MAX: usize = 200;

pub async fn pause(client: &Client, scope: &Scope, reason: Option<&str>, by: &str) -> Result<()> {
    check_reason(reason)?;
    let (kind, target) = scope.columns();
    client
        .execute(PAUSE, &[&kind, &target, &reason, &by])
        .await?;
    notify(client).await
}

/// Lifts the pause of `scope` and wakes the relays; an error if it was not paused.
pub async fn resume(client: &Client, scope: &Scope) -> Result<()> {
    let (kind, target) = scope.columns();
    if client.execute(RESUME, &[&kind, &target]).await? == 0 {
        return Err(QueueAdminError::NotPaused(scope.to_string()));
    }
    notify(client).await
}

/// Every pause, oldest first, with what it holds.
pub async fn list(client: &Client) -> Result<Vec<Pause>> {
    Ok(client
        .query(LIST, &[])
        .await?
        .iter()
        .map(|r| Pause {
            scope: r.get(0),
            target: r.get(1),
            reason: r.get(2),
            paused_by: r.get(3),
            paused_at: r.get(4),
            held: r.get(5),
        })
        .collect())
}

/// Every pause as a relay needs it.
pub async fn load(client: &Client) -> std::result::Result<Vec<Scope>, tokio_postgres::Error> {
    Ok(client
        .query(LOAD, &[])
        .await?
        .iter()
        .filter_map(|r| Scope::from_row(r.get(0), r.get(1)))
        .collect())
}

async fn notify(client: &Client) -> Result<()> {
    client
        .execute(NOTIFY, &[&crate::db::NOTIFY_CHANNEL, &CONTROL_PAYLOAD])
        .await?;
    Ok(())
}

/// A reason of at most [`REASON_MAX`] characters; checked before anything is asked of
/// the database.
pub fn check_reason(reason: Option<&str>) -> Result<()> {
    match reason.map(|r| r.chars().count()) {
        Some(n) if n > REASON_MAX => Err(QueueAdminError::ReasonTooLong(n)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_come_from_exactly_one_flag_and_are_checked() {
        assert_eq!(Scope::parse(true, None, None).ok(), Some(Scope::All));
        assert_eq!(
            Scope::parse(false, Some("lead_scraped"), None).ok(),
            Some(Scope::Event("lead_scraped".into()))
        );
        assert!(matches!(
            Scope::parse(false, Some("lead_scrapped"), None),
            Err(QueueAdminError::BadEvent(_))
        ));
        assert!(matches!(
            Scope::parse(false, None, Some("ftp://x")),
            Err(QueueAdminError::BadUrl(_))
        ));
        assert!(matches!(
            Scope::parse(true, Some("lead_scraped"), None),
            Err(QueueAdminError::BadScope)
        ));
        assert!(matches!(
            Scope::parse(false, None, None),
            Err(QueueAdminError::BadScope)
        ));
        assert_eq!(
            Scope::from_row("url", "http://n8n/x"),
            Some(Scope::Url("http://n8n/x".into()))
        );
        assert_eq!(Scope::from_row("tenant", "x"), None);
    }

    #[test]
    fn a_url_scope_is_shown_without_its_credentials() {
        let scope = Scope::Url("https://relay:s3cret@n8n/webhook/x".into());
        assert_eq!(scope.to_string(), "url https://n8n/webhook/x");
    }
}
