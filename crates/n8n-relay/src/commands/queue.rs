//! `n8n-relay queue ...`: the queue library in `relay_core::queue_admin`, rendered as
//! an aligned table for people or, with `--json`, as one JSON document whose keys
//! scripts may rely on.

use relay_core::pause::{self, Scope};
use relay_core::queue_admin::{
    self, CleanupOptions, CleanupReport, Detail, ListFilter, QueueAdminError, QueueRow,
    QueueStatus, Stats, StatusCounts,
};
use relay_core::Config;
use serde_json::json;

use crate::cli::{PauseScope, QueueCommand};
use crate::error::{CmdResult, Failure};

pub async fn run(config: &Config, cmd: QueueCommand) -> CmdResult {
    // What can be checked without the database is checked first.
    let checked = match &cmd {
        QueueCommand::List { status, event, .. } => {
            queue_admin::check_filters(status.as_deref(), event.as_deref(), None)
        }
        QueueCommand::Retry { event, since, .. } => {
            queue_admin::check_filters(None, event.as_deref(), since.as_deref())
        }
        QueueCommand::Pause { what, reason, .. } => {
            scope_of(what).and_then(|_| pause::check_reason(reason.as_deref()))
        }
        QueueCommand::Resume { what, .. } => scope_of(what).map(|_| ()),
        _ => Ok(()),
    };
    checked.map_err(failure)?;
    let client = super::connect(config).await?;
    let out = match cmd {
        QueueCommand::Stats { by_event, json } => {
            let stats = queue_admin::stats(&client, by_event)
                .await
                .map_err(failure)?;
            if json {
                to_json(&stats_json(&stats, by_event))
            } else {
                render_stats(&stats, by_event)
            }
        }
        QueueCommand::List {
            status,
            event,
            limit,
            json,
        } => {
            let filter = ListFilter {
                status,
                event,
                limit,
            };
            let rows = queue_admin::list(&client, &filter).await.map_err(failure)?;
            if json {
                to_json(&json!({ "rows": rows, "count": rows.len() }))
            } else {
                render_list(&rows)
            }
        }
        QueueCommand::Show { id, json } => {
            let id = queue_admin::row_id(&client, &id).await.map_err(failure)?;
            let detail = queue_admin::show(&client, id).await.map_err(failure)?;
            let waits = waits_for(&client, config, &detail).await?;
            if json {
                let mut shown = serde_json::to_value(&detail).unwrap_or_default();
                if let Some(object) = shown.as_object_mut() {
                    object.insert("ordering".into(), json!(waits.ordering));
                    object.insert("held_by_pause".into(), json!(waits.pause));
                    object.insert("switched_off".into(), json!(waits.switched_off));
                }
                to_json(&shown)
            } else {
                render_detail(&detail, &waits)
            }
        }
        QueueCommand::Retry {
            id,
            all_failed,
            event,
            since,
            json,
        } => {
            let ids = match id {
                Some(id) if !all_failed => {
                    queue_admin::retry(&client, id, &noted("retry"))
                        .await
                        .map_err(failure)?;
                    vec![id]
                }
                _ => queue_admin::retry_all_failed(
                    &client,
                    event.as_deref(),
                    since.as_deref(),
                    &noted("retry"),
                )
                .await
                .map_err(failure)?,
            };
            if json {
                to_json(&json!({ "retried": ids, "count": ids.len() }))
            } else if ids.is_empty() {
                "no failed rows matched; nothing retried\n".to_string()
            } else {
                format!(
                    "retried {} failed row{} (now pending, due now, retry_count reset to 0): {}\n",
                    ids.len(),
                    if ids.len() == 1 { "" } else { "s" },
                    join_ids(&ids)
                )
            }
        }
        QueueCommand::Cancel { id, json } => {
            let previous = queue_admin::cancel(&client, id, &noted("cancel"))
                .await
                .map_err(failure)?;
            if json {
                to_json(&json!({
                    "id": id,
                    "status": QueueStatus::Cancelled,
                    "previous_status": previous,
                }))
            } else {
                format!("queue row {id}: {previous} -> cancelled\n")
            }
        }
        QueueCommand::Pause { what, reason, json } => {
            let scope = route_url(config, scope_of(&what).map_err(failure)?);
            pause::pause(&client, &scope, reason.as_deref(), &who())
                .await
                .map_err(failure)?;
            if json {
                to_json(&json!({ "paused": scope.to_string(), "reason": reason }))
            } else {
                format!("paused {scope}: its events wait in the queue until `queue resume`\n")
            }
        }
        QueueCommand::Resume { what, json } => {
            let mut scope = scope_of(&what).map_err(failure)?;
            if let Scope::Url(typed) = &scope {
                scope = paused_url(&client, typed).await.map_err(failure)?;
            }
            pause::resume(&client, &scope).await.map_err(failure)?;
            if json {
                to_json(&json!({ "resumed": scope.to_string() }))
            } else {
                format!("resumed {scope}\n")
            }
        }
        QueueCommand::Paused { json } => {
            let pauses = pause::list(&client).await.map_err(failure)?;
            if json {
                to_json(&json!({ "pauses": pauses, "count": pauses.len() }))
            } else if pauses.is_empty() {
                "nothing is paused\n".to_string()
            } else {
                let mut table = Table::new(&["scope", "target", "since", "by", "held", "reason"]);
                for p in &pauses {
                    table.row(vec![
                        p.scope.clone(),
                        relay_core::config::url_without_userinfo(&p.target),
                        p.paused_at.clone(),
                        p.paused_by.clone(),
                        p.held.to_string(),
                        p.reason.clone().unwrap_or_default(),
                    ]);
                }
                table.render()
            }
        }
        QueueCommand::Cleanup {
            days,
            dry_run,
            include_failed,
            json,
        } => {
            let options = CleanupOptions {
                days,
                dry_run,
                include_failed,
            };
            let report = queue_admin::cleanup(&client, options)
                .await
                .map_err(failure)?;
            if json {
                let mut value = json!(report);
                value["days"] = json!(days);
                value["statuses"] = json!(cleanup_statuses(include_failed));
                to_json(&value)
            } else {
                render_cleanup(&report, options)
            }
        }
    };
    super::write_stdout(&out)
}

fn scope_of(what: &PauseScope) -> Result<Scope, QueueAdminError> {
    Scope::parse(what.all, what.event.as_deref(), what.url.as_deref())
}

/// A pause matches a route's URL exactly, credentials included, and every command
/// shows URLs without their `user:password@`. So a URL typed as shown stands for the
/// one route URL it is without its credentials; one typed otherwise is kept as typed
/// (it may still hold rows queued for it under an earlier configuration).
fn route_url(config: &Config, scope: Scope) -> Scope {
    let Scope::Url(typed) = &scope else {
        return scope;
    };
    let routes = config.routes();
    match relay_core::config::url_standing_for(typed, routes.iter().map(|r| r.url.as_str())) {
        Some(url) => Scope::Url(url.to_string()),
        None => {
            eprintln!(
                "note: no configured route sends to {}; the pause holds only rows queued for it",
                relay_core::config::url_without_userinfo(typed)
            );
            scope
        }
    }
}

/// The paused URL `typed` stands for (as `queue paused` shows it), else `typed`.
async fn paused_url(
    client: &tokio_postgres::Client,
    typed: &str,
) -> Result<Scope, QueueAdminError> {
    let pauses = pause::list(client).await?;
    let paused = pauses
        .iter()
        .filter(|p| p.scope == "url")
        .map(|p| p.target.as_str());
    Ok(Scope::Url(
        relay_core::config::url_standing_for(typed, paused)
            .unwrap_or(typed)
            .to_string(),
    ))
}

/// The history note of a retry or cancel, naming who ran it as a pause does.
fn noted(action: &str) -> String {
    format!("manual {action} ({})", who())
}

/// Who paused, for `queue paused`, or retried or cancelled a row: the CLI, the OS
/// user and the host.
fn who() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    format!("cli {user}@{host}")
}

/// Bad flags or values exit 2; a refused action, an unknown id or a database error 1.
fn failure(e: QueueAdminError) -> Failure {
    if e.is_bad_input() {
        Failure::Usage(e.into())
    } else {
        Failure::Runtime(e.into())
    }
}

fn to_json(value: &impl serde::Serialize) -> String {
    // Serialising these plain structs and json! values cannot fail.
    let mut value = serde_json::to_value(value).unwrap_or_default();
    without_credentials(&mut value);
    let mut text = serde_json::to_string_pretty(&value).unwrap_or_default();
    text.push('\n');
    text
}

/// Webhook URLs (`webhook_url`, a pause's `target`) without their `user:password@`,
/// wherever they sit in a command's JSON: scripts log what they read.
fn without_credentials(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                match v {
                    serde_json::Value::String(s)
                        if matches!(key.as_str(), "webhook_url" | "url" | "target") =>
                    {
                        *s = relay_core::config::url_without_userinfo(s);
                    }
                    // The event's data is shown as it was signed and sent, whatever
                    // its own columns are called.
                    _ if key == "payload" => {}
                    _ => without_credentials(v),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(without_credentials),
        _ => {}
    }
}

/// One write; a reader that went away (`queue list | head`) is not an error.
fn stats_json(stats: &Stats, by_event: bool) -> serde_json::Value {
    let mut value = json!(stats);
    if by_event {
        // Keyed by event type so scripts can index it; present even when empty.
        let events: serde_json::Map<String, serde_json::Value> = stats
            .by_event
            .iter()
            .map(|e| {
                let mut counts = json!(e.counts);
                counts["due_now"] = json!(e.due_now);
                (e.event_type.clone(), counts)
            })
            .collect();
        value["by_event"] = serde_json::Value::Object(events);
    }
    value
}

fn render_stats(stats: &Stats, by_event: bool) -> String {
    let mut out = String::new();
    if by_event {
        let mut table = Table::new(&[
            "event",
            "pending",
            "sending",
            "sent",
            "failed",
            "cancelled",
            "total",
            "due now",
        ]);
        for e in &stats.by_event {
            table.row(count_cells(&e.event_type, &e.counts, e.due_now));
        }
        table.row(count_cells("(all)", &stats.counts, stats.due_now));
        out.push_str(&table.render());
    } else {
        let mut table = Table::new(&["status", "count"]);
        for status in QueueStatus::ALL {
            table.row(vec![
                status.to_string(),
                stats.counts.get(status).to_string(),
            ]);
        }
        table.row(vec!["total".into(), stats.counts.total.to_string()]);
        out.push_str(&table.render());
    }
    out.push('\n');
    let oldest = stats
        .oldest_pending_age_seconds
        .map(format_age)
        .unwrap_or_else(|| "-".into());
    out.push_str(&format!("oldest pending  {oldest}\n"));
    out.push_str(&format!("due now         {}\n", stats.due_now));
    out.push_str(&format!("held by pauses  {}\n", stats.held_by_pauses));
    out.push_str(&format!("not yet routed  {}\n", stats.not_yet_routed));
    if !stats.unhealthy_endpoints.is_empty() {
        out.push('\n');
        let mut table = Table::new(&["unhealthy endpoint", "failures", "since", "last error"]);
        for e in &stats.unhealthy_endpoints {
            table.row(vec![
                e.url.clone(),
                e.consecutive_failures.to_string(),
                e.since.clone(),
                e.last_error.clone().unwrap_or_default(),
            ]);
        }
        out.push_str(&table.render());
    }
    out
}

fn count_cells(label: &str, c: &StatusCounts, due: i64) -> Vec<String> {
    vec![
        label.to_string(),
        c.pending.to_string(),
        c.sending.to_string(),
        c.sent.to_string(),
        c.failed.to_string(),
        c.cancelled.to_string(),
        c.total.to_string(),
        due.to_string(),
    ]
}

fn render_list(rows: &[QueueRow]) -> String {
    if rows.is_empty() {
        return "no queue rows match\n".into();
    }
    let mut table = Table::new(&[
        "id",
        "status",
        "event",
        "entity",
        "tries",
        "next attempt",
        "created",
        "last error",
    ]);
    for r in rows {
        table.row(vec![
            r.id.to_string(),
            r.status.clone(),
            r.event_type.clone(),
            entity(r),
            format!("{}/{}", r.retry_count, r.max_retries),
            next_attempt(r),
            r.created_at.clone(),
            r.last_error
                .as_deref()
                .map(|e| shorten(e, 48))
                .unwrap_or_default(),
        ]);
    }
    table.render()
}

/// What a pending row waits for besides its time: a pause, an earlier row of its
/// entity (the relay's own ordering gate answers), an earlier event still in the
/// outbox. An operator starting from a row that does not go out finds the row to
/// retry or cancel here.
struct Waits {
    ordering: queue_admin::OrderingState,
    /// The pause that holds it, as `queue paused` names it.
    pause: Option<String>,
    /// Delivery switched off in this configuration, for every route or the row's.
    switched_off: Option<String>,
}

/// Whether this configuration delivers the row at all: a pending row of a route or a
/// relay switched off is due and goes nowhere, which the row itself does not show.
fn switched_off(config: &Config, d: &Detail) -> Option<String> {
    if d.row.status != QueueStatus::Pending.as_str() {
        return None;
    }
    if !config.n8n.enabled {
        return Some("delivery, switched off (N8N_ENABLED=false, n8n.enabled)".into());
    }
    config
        .routes()
        .iter()
        .find(|r| r.event.as_str() == d.row.event_type && r.url == d.row.webhook_url && !r.enabled)
        .map(|r| {
            format!(
                "its route, switched off (routes.{}.enabled = false)",
                r.event.as_str()
            )
        })
}

async fn waits_for(
    client: &tokio_postgres::Client,
    config: &Config,
    d: &Detail,
) -> Result<Waits, Failure> {
    let ordering = queue_admin::ordering(client, d.row.id)
        .await
        .map_err(|e| failure(e.into()))?;
    let pause = if d.row.status == QueueStatus::Pending.as_str() {
        pause::load(client)
            .await
            .map_err(|e| failure(e.into()))?
            .into_iter()
            .find(|p| p.holds(&d.row.event_type, &d.row.webhook_url))
            .map(|p| p.to_string())
    } else {
        None
    };
    Ok(Waits {
        ordering,
        pause,
        switched_off: switched_off(config, d),
    })
}

fn render_detail(d: &Detail, waits: &Waits) -> String {
    let r = &d.row;
    let dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    let fields: Vec<(&str, String)> = vec![
        ("id", r.id.to_string()),
        ("webhook id", r.webhook_id.clone()),
        ("event", r.event_type.clone()),
        ("event id", dash(r.event_id.map(|v| v.to_string()))),
        ("entity", entity(r)),
        (
            "url",
            relay_core::config::url_without_userinfo(&r.webhook_url),
        ),
        ("status", r.status.clone()),
        ("priority", r.priority.to_string()),
        ("retries", format!("{} of {}", r.retry_count, r.max_retries)),
        ("next attempt", next_attempt(r)),
        ("occurred", r.occurred_at.clone()),
        ("created", r.created_at.clone()),
        ("updated", r.updated_at.clone()),
        ("sent", dash(r.sent_at.clone())),
        ("last error", dash(r.last_error.clone())),
        (
            "last response",
            dash(r.last_response_status.map(|v| v.to_string())),
        ),
    ];
    let mut fields = fields;
    let ordering = &waits.ordering;
    if let Some(how) = &ordering.ordering {
        let scope = ordering.scope.as_deref().unwrap_or("entity");
        fields.push(("ordering", format!("{scope} (on_failure = {how})")));
    }
    if r.status == QueueStatus::Pending.as_str() {
        let mut why = Vec::new();
        if let Some(off) = &waits.switched_off {
            why.push(off.clone());
        }
        if let Some(p) = &waits.pause {
            why.push(format!("the pause of {p} (`n8n-relay queue resume`)"));
        }
        if let Some(queue_admin::Blocker {
            id,
            event_type: event,
            status,
            url,
        }) = &ordering.waits_for
        {
            let how = if status == QueueStatus::Failed.as_str() {
                format!(": `n8n-relay queue retry {id}` or `queue cancel {id}` lets it go")
            } else {
                String::new()
            };
            why.push(format!(
                "row {id} ({event}, {status}, {}){how}",
                relay_core::config::url_without_userinfo(url)
            ));
        }
        if ordering.behind_outbox {
            why.push("an earlier event of its entity, still in the outbox".into());
        }
        if !why.is_empty() {
            fields.push(("waits for", why.join("; ")));
        }
    }
    let width = fields.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let mut out = String::new();
    for (key, value) in fields {
        out.push_str(&format!("{key:<width$}  {value}\n"));
    }
    out.push_str("\npayload\n");
    let payload = serde_json::to_string_pretty(&d.payload).unwrap_or_default();
    for line in payload.lines() {
        out.push_str(&format!("  {line}\n"));
    }
    out.push_str("\nattempts\n");
    if d.attempts.is_empty() {
        out.push_str("  (none yet)\n");
    } else {
        let mut table = Table::new(&["#", "at", "status", "ms", "next attempt", "error / note"]);
        for a in &d.attempts {
            let what = match (&a.error_message, &a.note) {
                (Some(e), Some(n)) => format!("{} ({n})", shorten(e, 60)),
                (Some(e), None) => shorten(e, 60),
                (None, Some(n)) => n.clone(),
                (None, None) => String::new(),
            };
            table.row(vec![
                a.attempt.to_string(),
                a.created_at.clone(),
                dash(a.response_status.map(|v| v.to_string())),
                dash(a.duration_ms.map(|v| v.to_string())),
                dash(a.next_attempt_at.clone()),
                what,
            ]);
        }
        out.push_str(&indent(&table.render()));
    }
    out.push_str(&format!(
        "\nlogs (newest first, at most {})\n",
        queue_admin::SHOW_LOG_LIMIT
    ));
    if d.logs.is_empty() {
        out.push_str("  (none)\n");
    } else {
        let mut table = Table::new(&["at", "attempt", "status", "ms", "error"]);
        for l in &d.logs {
            table.row(vec![
                l.created_at.clone(),
                dash(l.attempt.map(|v| v.to_string())),
                dash(l.response_status.map(|v| v.to_string())),
                dash(l.duration_ms.map(|v| v.to_string())),
                l.error_message
                    .as_deref()
                    .map(|e| shorten(e, 60))
                    .unwrap_or_default(),
            ]);
        }
        out.push_str(&indent(&table.render()));
    }
    out
}

fn render_cleanup(report: &CleanupReport, options: CleanupOptions) -> String {
    let verb = if report.dry_run {
        "would remove"
    } else {
        "removed"
    };
    let mut out = format!(
        "{verb} rows older than {} day{} (queue statuses: {}):\n",
        options.days,
        if options.days == 1 { "" } else { "s" },
        cleanup_statuses(options.include_failed).join(", ")
    );
    let mut table = Table::new(&["what", "rows"]);
    table.row(vec!["queue rows".into(), report.queue_rows.to_string()]);
    table.row(vec!["logs".into(), report.logs.to_string()]);
    table.row(vec![
        "retry history".into(),
        report.retry_history.to_string(),
    ]);
    table.row(vec!["outbox events".into(), report.events.to_string()]);
    table.row(vec![
        "workflow runs".into(),
        report.workflow_runs.to_string(),
    ]);
    out.push_str(&indent(&table.render()));
    if !report.dry_run {
        out.push_str(&format!(
            "in {} batches of at most {} rows\n",
            report.batches,
            queue_admin::CLEANUP_BATCH
        ));
    }
    out
}

/// When the row goes out next: only a pending or sending row has a next attempt (a
/// failed, sent or cancelled row keeps the column's last value, which read as one).
fn next_attempt(r: &QueueRow) -> String {
    match r.status.as_str() {
        "pending" | "sending" => r.next_attempt_at.clone(),
        _ => "-".to_string(),
    }
}

fn cleanup_statuses(include_failed: bool) -> Vec<&'static str> {
    let mut statuses = vec!["sent", "cancelled"];
    if include_failed {
        statuses.push("failed");
    }
    statuses
}

fn entity(r: &QueueRow) -> String {
    match (&r.entity_type, r.entity_id) {
        (Some(t), Some(id)) => format!("{t} {id}"),
        (Some(t), None) => t.clone(),
        (None, Some(id)) => id.to_string(),
        (None, None) => "-".into(),
    }
}

fn join_ids(ids: &[i64]) -> String {
    ids.iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// `75` → `1m 15s`; hours and days for older backlogs.
fn format_age(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m {}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h {}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d {}h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// One line, at most `max` characters (errors can be long response bodies).
fn shorten(text: &str, max: usize) -> String {
    let line = text.lines().next().unwrap_or_default();
    if line.chars().count() <= max && !text.contains('\n') {
        return line.to_string();
    }
    let cut: String = line.chars().take(max.saturating_sub(3)).collect();
    format!("{cut}...")
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("  {l}\n")).collect()
}

/// The widest a table cell gets: wide enough for any URL a pause or route has in
/// practice (`queue resume --url` takes it as shown), and well under the 65,535 a
/// padding width may be.
const CELL_MAX: usize = 2048;

/// Columns padded to their widest cell; numbers right-aligned.
struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    fn new(header: &[&str]) -> Table {
        Table {
            header: header.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    /// A cell longer than [`CELL_MAX`] is cut (an entity type or a URL may be any
    /// length; a width past 65,535 made the padding panic).
    fn row(&mut self, cells: Vec<String>) {
        self.rows
            .push(cells.into_iter().map(|c| shorten(&c, CELL_MAX)).collect());
    }

    fn render(&self) -> String {
        let columns = self.header.len();
        let widths: Vec<usize> = (0..columns)
            .map(|i| {
                std::iter::once(&self.header)
                    .chain(&self.rows)
                    .filter_map(|r| r.get(i))
                    .map(|c| c.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let numeric: Vec<bool> = (0..columns)
            .map(|i| {
                !self.rows.is_empty()
                    && self
                        .rows
                        .iter()
                        .filter_map(|r| r.get(i))
                        .all(|c| c.parse::<f64>().is_ok() || c == "-")
            })
            .collect();
        let mut out = String::new();
        for cells in std::iter::once(&self.header).chain(&self.rows) {
            let line: Vec<String> = (0..columns)
                .map(|i| {
                    let cell = cells.get(i).map(String::as_str).unwrap_or("");
                    let w = widths[i];
                    let pad = " ".repeat(w.saturating_sub(cell.chars().count()));
                    if numeric[i] {
                        format!("{pad}{cell}")
                    } else {
                        format!("{cell}{pad}")
                    }
                })
                .collect();
            out.push_str(line.join("  ").trim_end());
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_row_a_shown_row_waits_for_is_given_without_its_urls_credentials() {
        let ordering = queue_admin::OrderingState {
            ordering: Some("block".into()),
            scope: None,
            waits_for: Some(queue_admin::Blocker {
                id: 3,
                event_type: "lead_scraped".into(),
                status: "failed".into(),
                url: "https://relay:s3cret@n8n.example/webhook/x".into(),
            }),
            behind_outbox: false,
        };
        let mut shown = json!({ "ordering": ordering });
        without_credentials(&mut shown);
        let text = shown.to_string();
        assert!(!text.contains("s3cret"), "{text}");
        assert!(text.contains("n8n.example/webhook/x"), "{text}");
    }

    #[test]
    fn tables_align_columns_and_right_align_numbers() {
        let mut t = Table::new(&["status", "count"]);
        t.row(vec!["pending".into(), "5".into()]);
        t.row(vec!["sent".into(), "150".into()]);
        assert_eq!(
            t.render(),
            "status   count\npending      5\nsent       150\n"
        );
    }

    #[test]
    fn ages_read_naturally() {
        assert_eq!(format_age(4.4), "4s");
        assert_eq!(format_age(75.0), "1m 15s");
        assert_eq!(format_age(7300.0), "2h 1m");
        assert_eq!(format_age(90_000.0), "1d 1h");
    }

    #[test]
    fn long_errors_are_cut_to_one_line() {
        let mut table = Table::new(&["what", "n"]);
        table.row(vec!["a".repeat(70_000), "1".into()]);
        let shown = table.render();
        assert!(
            shown.lines().all(|l| l.chars().count() <= CELL_MAX + 10),
            "cut"
        );
        assert_eq!(shorten("short", 10), "short");
        assert_eq!(shorten("0123456789abc", 10), "0123456...");
        assert_eq!(shorten("line one\nline two", 40), "line one...");
    }
}
