//! Endpoint health: a URL whose last `queue.unhealthy_after` attempts all failed is
//! unhealthy until one succeeds. The dispatcher counts ([`Tracker`]); a change is
//! logged once by this relay, shown by the `n8n_relay_endpoint_unhealthy` gauge, and
//! written to `webhook_endpoints` by [`spawn`]'s task, which emits one
//! `endpoint_unhealthy` event for the database (the first relay to record the change
//! wins; the others find it recorded). While unhealthy, a URL gets one delivery at a
//! time (the dispatcher's load says so); its rows keep their retry schedule and are
//! never dropped.

use std::collections::{HashMap, HashSet};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use relay_core::config::url_without_userinfo;

use crate::db::Db;

/// Marks `$1` unhealthy after `$2` failures (the last `$3`), and emits
/// `endpoint_unhealthy` if that is a change for the database.
pub const MARK_UNHEALTHY: &str = "WITH changed AS (
        INSERT INTO webhook_endpoints AS e (url, healthy, consecutive_failures, last_error)
        VALUES ($1, false, $2, $3)
        ON CONFLICT (url) DO UPDATE
            SET healthy = false, consecutive_failures = EXCLUDED.consecutive_failures,
                last_error = EXCLUDED.last_error, changed_at = now()
            WHERE e.healthy
        RETURNING e.url
    )
    SELECT webhook_emit('endpoint_unhealthy', 'endpoint', NULL,
                        jsonb_build_object('url', $1::text, 'consecutive_failures', $2::int4,
                                           'last_error', $3::text))
    FROM changed";

/// Marks `$1` healthy again.
pub const MARK_HEALTHY: &str = "UPDATE webhook_endpoints
    SET healthy = true, consecutive_failures = 0, changed_at = now()
    WHERE url = $1 AND NOT healthy";

/// A URL changed state, as this relay saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Change {
    Unhealthy {
        url: String,
        failures: u32,
        last_error: String,
    },
    Healthy {
        url: String,
        /// This relay had seen it unhealthy (else: its first success since start,
        /// which clears a mark another relay, or this one before a restart, left).
        was_unhealthy: bool,
    },
}

/// Consecutive failures per URL.
#[derive(Debug, Default)]
pub(crate) struct Tracker {
    /// 0: never unhealthy.
    after: u32,
    failures: HashMap<String, u32>,
    unhealthy: HashSet<String>,
    /// URLs that succeeded since start.
    seen_ok: HashSet<String>,
}

impl Tracker {
    pub(crate) fn new(after: u32) -> Tracker {
        Tracker {
            after,
            ..Tracker::default()
        }
    }

    pub(crate) fn is_unhealthy(&self, url: &str) -> bool {
        self.unhealthy.contains(url)
    }

    pub(crate) fn unhealthy(&self) -> impl Iterator<Item = &String> {
        self.unhealthy.iter()
    }

    /// One attempt's outcome; a change of state, if it made one.
    pub(crate) fn observe(&mut self, url: &str, error: Option<&str>) -> Option<Change> {
        if self.after == 0 {
            return None;
        }
        match error {
            None => {
                self.failures.remove(url);
                let was_unhealthy = self.unhealthy.remove(url);
                // On the delivery path: allocate only for a URL's first success.
                let first = !self.seen_ok.contains(url) && self.seen_ok.insert(url.to_string());
                (was_unhealthy || first).then(|| Change::Healthy {
                    url: url.to_string(),
                    was_unhealthy,
                })
            }
            Some(error) => {
                let n = self.failures.entry(url.to_string()).or_insert(0);
                *n = n.saturating_add(1);
                (*n >= self.after && self.unhealthy.insert(url.to_string())).then(|| {
                    Change::Unhealthy {
                        url: url.to_string(),
                        failures: *n,
                        last_error: error.to_string(),
                    }
                })
            }
        }
    }
}

/// Reports and records changes until every sender is dropped.
pub(crate) fn spawn(db: Db) -> (mpsc::UnboundedSender<Change>, JoinHandle<()>) {
    let (tx, mut rx) = mpsc::unbounded_channel::<Change>();
    let task = tokio::spawn(async move {
        while let Some(change) = rx.recv().await {
            let (statement, url) = match &change {
                Change::Unhealthy {
                    url,
                    failures,
                    last_error,
                } => {
                    warn!(url = %url_without_userinfo(url), failures, last_error = %last_error,
                        "endpoint unhealthy: its last attempts all failed; one delivery at a time until one succeeds");
                    (MARK_UNHEALTHY, url)
                }
                Change::Healthy { url, was_unhealthy } => {
                    if *was_unhealthy {
                        info!(url = %url_without_userinfo(url), "endpoint healthy again");
                    }
                    (MARK_HEALTHY, url)
                }
            };
            relay_core::metrics::global().set_endpoint_unhealthy(
                &url_without_userinfo(url),
                matches!(change, Change::Unhealthy { .. }),
            );
            let written = db
                .bounded("recording endpoint health", async {
                    let client = db.client().await?;
                    let shown_url = url_without_userinfo(url);
                    match &change {
                        Change::Unhealthy {
                            failures,
                            last_error,
                            ..
                        } => {
                            let failures = i32::try_from(*failures).unwrap_or(i32::MAX);
                            client
                                .query(statement, &[&shown_url, &failures, last_error])
                                .await?;
                        }
                        Change::Healthy { .. } => {
                            client.execute(statement, &[&shown_url]).await?;
                        }
                    }
                    Ok(())
                })
                .await;
            if let Err(e) = written {
                warn!(error = %e, "could not record an endpoint's health change");
            }
        }
    });
    (tx, task)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn n_failures_in_a_row_make_a_url_unhealthy_once_and_a_success_heals_it() {
        let mut t = Tracker::new(3);
        assert_eq!(t.observe("u", Some("HTTP 500")), None);
        assert_eq!(
            t.observe("u", None),
            Some(Change::Healthy {
                url: "u".into(),
                was_unhealthy: false
            }),
            "the first success since start clears any mark left in the database"
        );
        assert_eq!(t.observe("u", None), None, "once");
        assert_eq!(t.observe("u", Some("HTTP 500")), None);
        assert_eq!(t.observe("u", Some("HTTP 500")), None);
        assert_eq!(
            t.observe("u", Some("HTTP 502")),
            Some(Change::Unhealthy {
                url: "u".into(),
                failures: 3,
                last_error: "HTTP 502".into()
            })
        );
        assert!(t.is_unhealthy("u"));
        assert_eq!(t.observe("u", Some("HTTP 502")), None, "reported once");
        assert_eq!(
            t.observe("u", None),
            Some(Change::Healthy {
                url: "u".into(),
                was_unhealthy: true
            })
        );
        assert!(!t.is_unhealthy("u"));
        let mut off = Tracker::new(0);
        for _ in 0..100 {
            assert_eq!(off.observe("u", Some("x")), None);
        }
    }
}
