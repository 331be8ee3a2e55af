//! Row versions written per delivered event: the counters of `pg_stat_user_tables` for
//! the relay's tables, read before the relay starts and after its sessions have ended.
//!
//! Every row version costs a heap tuple, an entry in each index it must enter and its
//! WAL, so this count is where the database's work per event starts (the speed issue's
//! "count them per event"). A session publishes its counters at most once a second
//! while it works and at once when it exits, so they are read only after every
//! session of the relay has gone; the benchmark's own session (which queued the
//! backlog) is made to publish first.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use serde_json::{json, Value};

/// The tables a delivery writes.
const COUNTERS: &str = "SELECT relname::text, n_tup_ins, n_tup_upd, n_tup_hot_upd, n_tup_del
    FROM pg_stat_user_tables
    WHERE relname IN ('webhook_events', 'webhook_queue', 'webhook_logs', 'webhook_retry_history')";
/// Makes this session publish its counters when it next goes idle (PostgreSQL 15 and
/// later), which is before it reads the next statement.
const PUBLISH_OWN: &str = "SELECT pg_stat_force_next_flush()";
const SESSIONS_LEFT: &str =
    "SELECT pid || ' ' || coalesce(application_name, '') || ' ' || coalesce(state, '')
    FROM pg_stat_activity WHERE pid = ANY ($1)";

/// What one table's counters said.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Counts {
    inserted: i64,
    updated: i64,
    hot_updated: i64,
    deleted: i64,
}

/// The counters of the relay's tables at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot(BTreeMap<String, Counts>);

/// The counters now, with everything this session wrote before included.
pub async fn snapshot(client: &tokio_postgres::Client) -> Result<Snapshot> {
    client.execute(PUBLISH_OWN, &[]).await?;
    let mut tables = BTreeMap::new();
    for row in client.query(COUNTERS, &[]).await? {
        tables.insert(
            row.try_get(0)?,
            Counts {
                inserted: row.try_get(1)?,
                updated: row.try_get(2)?,
                hot_updated: row.try_get(3)?,
                deleted: row.try_get(4)?,
            },
        );
    }
    Ok(Snapshot(tables))
}

/// Waits until the sessions `pids` (the relay's, stopped) have ended, and with them
/// published their counters.
pub async fn wait_ended(client: &tokio_postgres::Client, pids: &[i32]) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let left: Vec<String> = client
            .query(SESSIONS_LEFT, &[&pids])
            .await?
            .iter()
            .map(|row| row.get(0))
            .collect();
        if left.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "the relay's database sessions {} were still there 15 s after it stopped",
                left.join(", ")
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Row versions per event between two snapshots.
pub struct PerEvent {
    /// Inserted, updated and deleted rows of every table, per event.
    pub total: f64,
    /// Updates that entered no index (HOT), of all updates.
    pub hot_share: Option<f64>,
    /// Each table's counts per event, for the JSON.
    pub tables: Value,
    /// One line for a person: `table ins/upd (hot)/del`.
    pub summary: String,
}

pub fn per_event(before: &Snapshot, after: &Snapshot, events: u64) -> PerEvent {
    let n = events.max(1) as f64;
    let mut total = 0i64;
    let (mut updates, mut hot) = (0i64, 0i64);
    let mut tables = serde_json::Map::new();
    let mut parts = Vec::new();
    for (table, now) in &after.0 {
        let was = before.0.get(table).copied().unwrap_or_default();
        let d = Counts {
            inserted: now.inserted - was.inserted,
            updated: now.updated - was.updated,
            hot_updated: now.hot_updated - was.hot_updated,
            deleted: now.deleted - was.deleted,
        };
        total += d.inserted + d.updated + d.deleted;
        updates += d.updated;
        hot += d.hot_updated;
        let per = |x: i64| x as f64 / n;
        tables.insert(
            table.clone(),
            json!({
                "inserted": per(d.inserted),
                "updated": per(d.updated),
                "hot_updated": per(d.hot_updated),
                "deleted": per(d.deleted),
            }),
        );
        if d != Counts::default() {
            parts.push(format!(
                "{table} {:.2} ins / {:.2} upd ({:.2} HOT) / {:.2} del",
                per(d.inserted),
                per(d.updated),
                per(d.hot_updated),
                per(d.deleted)
            ));
        }
    }
    PerEvent {
        total: total as f64 / n,
        hot_share: (updates > 0).then(|| hot as f64 / updates as f64),
        tables: Value::Object(tables),
        summary: parts.join("; "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(rows: &[(&str, [i64; 4])]) -> Snapshot {
        Snapshot(
            rows.iter()
                .map(|(t, [i, u, h, d])| {
                    (
                        t.to_string(),
                        Counts {
                            inserted: *i,
                            updated: *u,
                            hot_updated: *h,
                            deleted: *d,
                        },
                    )
                })
                .collect(),
        )
    }

    #[test]
    fn counts_what_the_drain_wrote_per_event_and_the_hot_share_of_updates() {
        // The backlog's outbox inserts happened before: only the drain's writes count.
        let before = snap(&[
            ("webhook_events", [100, 0, 0, 0]),
            ("webhook_queue", [0, 0, 0, 0]),
        ]);
        let after = snap(&[
            ("webhook_events", [100, 0, 0, 100]),
            ("webhook_queue", [100, 100, 25, 0]),
            ("webhook_logs", [100, 0, 0, 0]),
        ]);
        let p = per_event(&before, &after, 100);
        assert_eq!(p.total, 4.0);
        assert_eq!(p.hot_share, Some(0.25));
        assert_eq!(p.tables["webhook_queue"]["updated"], 1.0);
        assert_eq!(p.tables["webhook_logs"]["inserted"], 1.0);
        assert!(p
            .summary
            .contains("webhook_events 0.00 ins / 0.00 upd (0.00 HOT) / 1.00 del"));
    }

    #[test]
    fn no_updates_means_no_hot_share() {
        let after = snap(&[("webhook_logs", [10, 0, 0, 0])]);
        let p = per_event(&Snapshot::default(), &after, 10);
        assert_eq!(p.hot_share, None);
        assert_eq!(p.total, 1.0);
        assert!(!p.summary.contains("webhook_events"));
    }
}
