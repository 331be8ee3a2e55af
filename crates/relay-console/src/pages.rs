//! The pages, as maud templates: checked when the crate compiles, and every value
//! interpolated into them is HTML-escaped (payloads, errors and URLs come from the
//! business tables and from n8n). No inline script or style: the console's one CSS
//! and one JS file are served from `/static/`, and the Content-Security-Policy says
//! nothing else may run.

use maud::{html, Markup, DOCTYPE};
use relay_core::config::{url_without_userinfo, Route};
use relay_core::queue_admin::{Detail, QueueStatus};

use crate::auth::Role;
use crate::chart;
use crate::data::{
    format_unix, Callback, CallbackFilter, Listed, OrderingState, QueueFilter, Sort,
};
use crate::sampler::Snapshot;

/// Who is looking, and the CSRF token their forms carry.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub role: Role,
    pub csrf: String,
    /// A login exists (a token is configured): show "log out".
    pub can_log_out: bool,
}

impl Ctx {
    fn operator(&self) -> bool {
        self.role == Role::Operator
    }
}

fn layout(title: &str, ctx: Option<&Ctx>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · n8n-relay console" }
                link rel="stylesheet" href="/static/console.css";
                script src="/static/console.js" defer {}
            }
            body {
                header {
                    span class="brand" { "n8n-relay" }
                    @if let Some(ctx) = ctx {
                        nav {
                            a href="/" { "Overview" }
                            a href="/queue" { "Queue" }
                            a href="/callbacks" { "Callbacks" }
                        }
                        span class="who" { (ctx.role.name()) }
                        @if ctx.can_log_out {
                            form method="post" action="/logout" class="inline" {
                                input type="hidden" name="csrf" value=(ctx.csrf);
                                button type="submit" class="link" { "Log out" }
                            }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

fn hidden_csrf(ctx: &Ctx) -> Markup {
    html! { input type="hidden" name="csrf" value=(ctx.csrf); }
}

pub fn login(error: Option<&str>) -> Markup {
    layout(
        "Log in",
        None,
        html! {
            h1 { "Log in" }
            @if let Some(e) = error { p class="error" { (e) } }
            form method="post" action="/login" class="login" {
                label for="token" { "Token" }
                input id="token" type="password" name="token" autocomplete="current-password" required autofocus;
                button type="submit" { "Log in" }
            }
            p class="hint" { "The operator token (console.token) or the read-only token (console.read_only_token)." }
        },
    )
}

/// What an action did, in words (not an error).
pub fn notice(title: &str, text: &str, ctx: Option<&Ctx>) -> Markup {
    text_page(title, text, None, ctx)
}

pub fn message(title: &str, text: &str, ctx: Option<&Ctx>) -> Markup {
    text_page(title, text, Some("error"), ctx)
}

fn text_page(title: &str, text: &str, class: Option<&str>, ctx: Option<&Ctx>) -> Markup {
    layout(
        title,
        ctx,
        html! {
            h1 { (title) }
            p class=[class] { (text) }
            p { a href="/" { "Back to the overview" } }
        },
    )
}

fn status_class(status: &str) -> &'static str {
    match status {
        "sent" => "ok",
        "failed" => "bad",
        "sending" => "busy",
        "cancelled" => "muted",
        _ => "wait",
    }
}

fn age(seconds: f64) -> String {
    let s = seconds.max(0.0) as u64;
    match s {
        0..=59 => format!("{s} s"),
        60..=3599 => format!("{} min", s / 60),
        _ => format!("{:.1} h", s as f64 / 3600.0),
    }
}

/// The part of the overview that refreshes live (also served alone for that).
pub fn overview_live(snap: &Snapshot, routes: &[Route]) -> Markup {
    html! {
        @if let Some(e) = &snap.error { p class="error" { "Last sample failed: " (e) } }
        @if let Some(taken) = snap.taken {
            p class="hint" id="sampled" { "Sampled " (age(taken.elapsed().as_secs_f64())) " ago (every 5 s while someone looks)." }
        }
        @match &snap.stats {
            None => p { "Sampling the queue…" },
            Some(stats) => {
                section class="cards" {
                    @for status in QueueStatus::ALL {
                        a class=(format!("card {}", status_class(status.as_str())))
                            href=(format!("/queue?status={}", status.as_str())) {
                            span class="n" id=(format!("count-{}", status.as_str())) { (stats.counts.get(status)) }
                            span class="label" { (status.as_str()) }
                        }
                    }
                    div class="card" {
                        span class="n" id="due-now" { (stats.due_now) }
                        span class="label" { "due now" }
                    }
                    // Under load, and with no relay running, the backlog waits here, not
                    // in the queue: a few pending rows can stand for thousands of events.
                    div class="card" {
                        span class="n" id="outbox" { (stats.not_yet_routed) }
                        span class="label" { "in the outbox" }
                    }
                    div class="card" {
                        span class="n" { (stats.oldest_pending_age_seconds.map(age).unwrap_or_else(|| "-".into())) }
                        span class="label" { "oldest pending" }
                    }
                    div class="card" {
                        span class="n" id="held" { (stats.held_by_pauses) }
                        span class="label" { "held by pauses" }
                    }
                }
            }
        }
        section {
            h2 { "Deliveries per minute, last hour" }
            (chart::deliveries(&snap.per_minute))
            p class="legend" { span class="sent" { "sent" } " " span class="retry" { "retry" } " " span class="failed" { "failed" } }
        }
        section class="two" {
            div {
                h2 { "Failure rate by event (last hour)" }
                (rate_table("event", &snap.per_event))
            }
            div {
                h2 { "Failure rate by URL (last hour)" }
                (rate_table("url", &snap.per_url))
            }
        }
        section class="two" {
            div {
                h2 { "Relays on this database" }
                @if snap.taken.is_none() {
                    // Before the first sample, no relay is known, not absent.
                    p { "Reading the relays…" }
                } @else if snap.relays.is_empty() {
                    p class="error" id="no-relay" { "No relay is listening: nothing is being delivered." }
                } @else {
                    table { thead { tr { th { "connected from" } th { "since" } th { "sessions" } } }
                        tbody { @for (addr, since, sessions) in &snap.relays { tr { td { (addr) } td { (since) } td { (sessions) } } } } }
                }
                @if let Some(unhealthy) = snap.stats.as_ref().map(|s| &s.unhealthy_endpoints).filter(|u| !u.is_empty()) {
                    h2 { "Unhealthy endpoints" }
                    table { thead { tr { th { "URL" } th { "failures" } th { "since" } th { "last error" } } }
                        tbody { @for u in unhealthy {
                            tr { td { (url_without_userinfo(&u.url)) } td { (u.consecutive_failures) } td { (u.since) } td { (u.last_error.clone().unwrap_or_default()) } } } } }
                }
            }
            div {
                h2 { "Pauses" }
                @if snap.taken.is_none() { p { "Reading the pauses…" } }
                @else if snap.pauses.is_empty() { p { "Nothing is paused." } }
                @else {
                    table { thead { tr { th { "paused" } th { "since" } th { "by" } th { "held" } th { "reason" } } }
                        tbody { @for p in &snap.pauses { tr {
                            td { (p.scope) " " (url_without_userinfo(&p.target)) } td { (p.paused_at) } td { (p.paused_by) }
                            td { (p.held) } td { (p.reason.clone().unwrap_or_default()) } } } } }
                }
            }
        }
        section {
            h2 { "Routes" }
            table class="routes" {
                thead { tr { th { "event" } th { "URL" } th { "priority" } th { "ordering" } th { "enabled" } th { "limit/s" } } }
                tbody {
                    @for r in routes {
                        tr {
                            td { (r.event.as_str()) }
                            td class="url" { (url_without_userinfo(&r.url)) }
                            td { (r.priority) }
                            td { @if r.lifecycle { "lifecycle" } @else if r.ordered.is_some() { "entity" } @else { "none" } }
                            td { @if r.enabled { "yes" } @else { span class="bad" { "no" } } }
                            td { (r.max_per_second.map(|m| m.to_string()).unwrap_or_else(|| "-".into())) }
                        }
                    }
                }
            }
        }
    }
}

fn rate_table(what: &str, rows: &[(String, crate::sampler::Outcomes)]) -> Markup {
    html! {
        @if rows.is_empty() { p { "No deliveries in the last hour." } }
        @else {
            table {
                thead { tr { th { (what) } th { "sent" } th { "retry" } th { "failed" } th { "failure rate" } } }
                tbody {
                    @for (name, o) in rows.iter().take(20) {
                        tr {
                            td class="url" { (url_without_userinfo(name)) }
                            td { (o.sent) } td { (o.retry) } td { (o.failed) }
                            td class=(if o.failure_rate() > 0.0 { "bad" } else { "" }) { (format!("{:.1} %", o.failure_rate())) }
                        }
                    }
                }
            }
        }
    }
}

/// The routes' distinct URLs, in route order: what the pause form offers, by index.
pub(crate) fn route_urls(routes: &[Route]) -> Vec<&str> {
    let mut urls: Vec<&str> = Vec::new();
    for r in routes {
        if !urls.contains(&r.url.as_str()) {
            urls.push(&r.url);
        }
    }
    urls
}

pub fn overview(ctx: &Ctx, snap: &Snapshot, routes: &[Route], flash: Option<&str>) -> Markup {
    layout(
        "Overview",
        Some(ctx),
        html! {
            h1 { "Overview" }
            @if let Some(f) = flash { p class="flash" { (f) } }
            div id="live" data-refresh="/overview/live" { (overview_live(snap, routes)) }
            @if ctx.operator() {
                section class="actions" {
                    h2 { "Pause or resume" }
                    form method="post" action="/pause" class="inline" {
                        (hidden_csrf(ctx))
                        // Nothing chosen at first: a click on Pause must not stop
                        // every delivery because the list started there.
                        select name="scope" required {
                            option value="" disabled selected { "what to pause or resume…" }
                            option value="all" { "all delivery" }
                            @for r in routes { option value=(format!("event:{}", r.event.as_str())) { "event " (r.event.as_str()) } }
                            // By position: a URL may carry credentials the page must not hold.
                            @for (n, url) in route_urls(routes).into_iter().enumerate() { option value=(format!("url:{n}")) { "URL " (url_without_userinfo(url)) } }
                        }
                        input type="text" name="reason" placeholder="reason" maxlength="200";
                        button type="submit" name="do" value="pause" { "Pause" }
                        button type="submit" name="do" value="resume" { "Resume" }
                    }
                    h2 { "Clean up" }
                    form method="post" action="/cleanup" class="inline" {
                        (hidden_csrf(ctx))
                        label { "sent and cancelled rows, their delivery and callback logs, routed outbox events and workflow runs not reported on, older than " input type="number" name="days" min="1" value="30" required; " days" }
                        label { input type="checkbox" name="dry_run" value="1" checked; " dry run" }
                        button type="submit" { "Clean up" }
                    }
                }
            }
        },
    )
}

pub fn link(filter: &QueueFilter, after: Option<(i32, i64)>) -> String {
    let mut pairs = filter.pairs();
    if let Some((p, id)) = after {
        pairs.push(("after", format!("{p}:{id}")));
    }
    let query: String = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs.iter().map(|(k, v)| (*k, v.as_str())))
        .finish();
    format!("/queue?{query}")
}

pub fn queue(
    ctx: &Ctx,
    filter: &QueueFilter,
    rows: &[Listed],
    next: Option<(i32, i64)>,
    flash: Option<&str>,
    events: &[&str],
) -> Markup {
    let value = |v: &Option<String>| v.clone().unwrap_or_default();
    layout(
        "Queue",
        Some(ctx),
        html! {
            h1 { "Queue" }
            @if let Some(f) = flash { p class="flash" { (f) } }
            form method="get" action="/queue" class="filters" {
                select name="status" {
                    option value="" { "any status" }
                    @for s in QueueStatus::ALL {
                        option value=(s.as_str()) selected[filter.status.as_deref() == Some(s.as_str())] { (s.as_str()) }
                    }
                }
                select name="event" {
                    option value="" { "any event" }
                    @for e in events {
                        option value=(e) selected[filter.event.as_deref() == Some(*e)] { (e) }
                    }
                }
                input type="text" name="url" placeholder="URL" value=(value(&filter.url));
                input type="text" name="entity_type" placeholder="entity type" size="10" value=(value(&filter.entity_type));
                input type="text" name="entity_id" placeholder="entity id" value=(filter.entity_id.map(|v| v.to_string()).unwrap_or_default());
                input type="text" name="since" placeholder="since 2025-11-04T12:00:00Z" value=(filter.since.map(format_unix).unwrap_or_default());
                input type="text" name="until" placeholder="until" value=(filter.until.map(format_unix).unwrap_or_default());
                input type="text" name="q" placeholder="text in last error" value=(value(&filter.text));
                select name="sort" {
                    option value="time" selected[filter.sort == Sort::Time] { "newest first" }
                    option value="priority" selected[filter.sort == Sort::Priority] { "priority first" }
                }
                button type="submit" { "Filter" }
            }
            @if ctx.operator() && filter.status.as_deref() == Some("failed") {
                form method="post" action="/queue/retry-failed" class="inline" {
                    (hidden_csrf(ctx))
                    @for (k, v) in filter.pairs() { input type="hidden" name=(k) value=(v); }
                    button type="submit" { "Retry every failed row this filter selects…" }
                }
            }
            table class="queue" {
                thead { tr { th { "id" } th { "event" } th { "entity" } th { "URL" } th { "priority" } th { "status" } th { "attempts" } th { "last error" } th { "created" } } }
                tbody {
                    @for r in rows {
                        tr {
                            td { a href=(format!("/row/{}", r.id)) { (r.id) } }
                            td { (r.event_type) }
                            td { (r.entity) }
                            td class="url" { (url_without_userinfo(&r.url)) }
                            td { (r.priority) }
                            td class=(status_class(&r.status)) { (r.status) }
                            td { (r.attempts) }
                            td class="error-text" { (r.last_error.clone().unwrap_or_default()) }
                            td { (r.created_at) }
                        }
                    }
                }
            }
            @if rows.is_empty() { p { "No row matches." } }
            @if let Some(after) = next { p { a class="next" href=(link(filter, Some(after))) { "Next page →" } } }
        },
    )
}

/// `failed_by`: the count's time, posted back so the retry takes only those rows.
pub fn confirm_retry(ctx: &Ctx, filter: &QueueFilter, count: i64, failed_by: u64) -> Markup {
    layout(
        "Retry failed rows",
        Some(ctx),
        html! {
            h1 { "Retry failed rows" }
            p { "This filter selects " strong id="confirm-count" { (count) } " failed row(s). Put them all back to pending, due now, with a fresh retry budget?" }
            // What was applied, not what the filter inputs held when the button was
            // pressed: the confirmation is the place to see the difference.
            ul id="confirm-filter" {
                @for (k, v) in filter.pairs() { li { (k) " = " (v) } }
            }
            form method="post" action="/queue/retry-failed" {
                (hidden_csrf(ctx))
                @for (k, v) in filter.pairs() { input type="hidden" name=(k) value=(v); }
                input type="hidden" name="confirm" value="yes";
                input type="hidden" name="failed_by" value=(failed_by);
                button type="submit" { "Retry " (count) " row(s)" }
                " "
                a href=(link(filter, None)) { "Cancel" }
            }
        },
    )
}

pub fn row(ctx: &Ctx, detail: &Detail, ordering: &OrderingState, flash: Option<&str>) -> Markup {
    let r = &detail.row;
    let payload = serde_json::to_string_pretty(&detail.payload).unwrap_or_default();
    layout(
        &format!("Row {}", r.id),
        Some(ctx),
        html! {
            h1 { "Row " (r.id) " " span class=(status_class(&r.status)) { (r.status) } }
            @if let Some(f) = flash { p class="flash" { (f) } }
            @if ctx.operator() {
                div class="actions" {
                    @if r.status == "failed" || r.waiting {
                        form method="post" action=(format!("/row/{}/retry", r.id)) class="inline" {
                            (hidden_csrf(ctx)) button type="submit" id="retry" {
                                @if r.waiting { "Send now" } @else { "Retry" }
                            }
                        }
                    }
                    @if r.status == "failed" || r.status == "pending" {
                        // Irreversible: asked first (console.js; without script it
                        // goes at once, as a form does).
                        form method="post" action=(format!("/row/{}/cancel", r.id)) class="inline"
                            data-confirm=(format!("Cancel the delivery of row {}? It will not be sent, and a cancelled row cannot be retried.", r.id)) {
                            (hidden_csrf(ctx)) button type="submit" id="cancel" class="danger" { "Cancel delivery" }
                        }
                    }
                }
            }
            dl {
                dt { "event" } dd { (r.event_type) }
                dt { "entity" } dd { (r.entity_type.clone().unwrap_or_default()) " " (r.entity_id.map(|i| i.to_string()).unwrap_or_default()) }
                dt { "URL" } dd class="url" { (url_without_userinfo(&r.webhook_url)) }
                dt { "webhook id" } dd { (r.webhook_id) }
                dt { "priority" } dd { (r.priority) }
                dt { "retries" } dd { (r.retry_count) " of " (r.max_retries) }
                dt { "next attempt" } dd { (r.next_attempt_at) }
                dt { "last error" } dd id="last-error" class="error-text" { (r.last_error.clone().unwrap_or_default()) }
                dt { "occurred" } dd { (r.occurred_at) }
                dt { "created" } dd { (r.created_at) }
                dt { "sent" } dd { (r.sent_at.clone().unwrap_or_default()) }
                dt { "ordering" } dd {
                    @match &ordering.ordering {
                        None => "none",
                        Some(o) => {
                            (ordering.scope.clone().unwrap_or_else(|| "entity".into())) " (on_failure = " (o) ")"
                            @if let Some(relay_core::queue_admin::Blocker { id, event_type: event, status, url }) = &ordering.waits_for {
                                ": waits for " a href=(format!("/row/{id}")) { "row " (id) } " (" (event) ", " (status) ", " (url_without_userinfo(url)) ")"
                            }
                            @if ordering.behind_outbox {
                                ": waits for an earlier event of this entity, still in the outbox"
                            }
                        }
                    }
                }
            }
            h2 { "Payload" }
            pre class="payload" id="payload" { (payload) }
            h2 { "Attempts and history" }
            table {
                thead { tr { th { "attempt" } th { "at" } th { "status" } th { "duration" } th { "error" } th { "next attempt" } th { "note" } } }
                tbody {
                    @for a in &detail.attempts {
                        tr {
                            td { (a.attempt) } td { (a.created_at) }
                            td { (a.response_status.map(|s| s.to_string()).unwrap_or_default()) }
                            td { (a.duration_ms.map(|d| format!("{d} ms")).unwrap_or_default()) }
                            td class="error-text" { (a.error_message.clone().unwrap_or_default()) }
                            td { (a.next_attempt_at.clone().unwrap_or_default()) }
                            td { (a.note.clone().unwrap_or_default()) }
                        }
                    }
                }
            }
            h2 { "Requests (newest first)" }
            table {
                thead { tr { th { "attempt" } th { "at" } th { "status" } th { "duration" } th { "error" } th { "response" } } }
                tbody {
                    @for l in &detail.logs {
                        tr {
                            td { (l.attempt.map(|a| a.to_string()).unwrap_or_default()) } td { (l.created_at) }
                            td { (l.response_status.map(|s| s.to_string()).unwrap_or_default()) }
                            td { (l.duration_ms.map(|d| format!("{d} ms")).unwrap_or_default()) }
                            td class="error-text" { (l.error_message.clone().unwrap_or_default()) }
                            td class="excerpt" { (l.response_excerpt.clone().unwrap_or_default()) }
                        }
                    }
                }
            }
        },
    )
}

pub fn callbacks(
    ctx: &Ctx,
    filter: &CallbackFilter,
    rows: &[Callback],
    next: Option<i64>,
) -> Markup {
    let next_link = next.map(|after| {
        let mut pairs: Vec<(&str, String)> = vec![("after", after.to_string())];
        if let Some(e) = &filter.endpoint {
            pairs.push(("endpoint", e.clone()));
        }
        if let Some(s) = filter.status {
            pairs.push(("status", s.to_string()));
        }
        let q: String = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs.iter().map(|(k, v)| (*k, v.as_str())))
            .finish();
        format!("/callbacks?{q}")
    });
    layout(
        "Callbacks",
        Some(ctx),
        html! {
            h1 { "Callbacks from n8n" }
            form method="get" action="/callbacks" class="filters" {
                input type="text" name="endpoint" placeholder="endpoint, e.g. demo-approval" value=(filter.endpoint.clone().unwrap_or_default());
                input type="text" name="status" placeholder="answered status, e.g. 401" value=(filter.status.map(|s| s.to_string()).unwrap_or_default());
                button type="submit" { "Filter" }
            }
            table {
                thead { tr { th { "id" } th { "at" } th { "endpoint" } th { "status" } th { "duration" } th { "error" } } }
                tbody {
                    @for c in rows {
                        tr {
                            td { (c.id) } td { (c.created_at) } td { (c.endpoint) }
                            td class=(if c.status.is_some_and(|s| s >= 400) { "bad" } else { "ok" }) { (c.status.map(|s| s.to_string()).unwrap_or_default()) }
                            td { (c.duration_ms.map(|d| format!("{d} ms")).unwrap_or_default()) }
                            td class="error-text" { (c.error.clone().unwrap_or_default()) }
                        }
                    }
                }
            }
            @if rows.is_empty() { p { "No callback matches." } }
            @if let Some(href) = next_link { p { a class="next" href=(href) { "Next page →" } } }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use relay_core::queue_admin::QueueRow;

    fn ctx(role: Role) -> Ctx {
        Ctx {
            role,
            csrf: "c".repeat(64),
            can_log_out: true,
        }
    }

    fn hostile_row() -> Listed {
        Listed {
            id: 7,
            event_type: "lead_scraped".into(),
            entity: "lead 1".into(),
            url: "http://n8n/\"><script>alert(1)</script>".into(),
            priority: 0,
            status: "failed".into(),
            attempts: 4,
            last_error: Some("<img src=x onerror=alert(2)>".into()),
            created_at: "2025-11-04T12:00:00Z".into(),
        }
    }

    #[test]
    fn urls_never_show_their_credentials() {
        assert_eq!(
            url_without_userinfo("https://u:p@n8n:5678/webhook/x"),
            "https://n8n:5678/webhook/x"
        );
        let mut r = hostile_row();
        r.url = "https://user:s3cret@n8n/webhook/x".into();
        let html = queue(
            &ctx(Role::ReadOnly),
            &QueueFilter::default(),
            &[r],
            None,
            None,
            &[],
        )
        .into_string();
        assert!(!html.contains("s3cret"));
    }

    #[test]
    fn hostile_text_is_escaped_everywhere_it_is_shown() {
        let html = queue(
            &ctx(Role::Operator),
            &QueueFilter::default(),
            &[hostile_row()],
            None,
            Some("<b>flash</b>"),
            &["lead_scraped"],
        )
        .into_string();
        assert!(!html.contains("<script>alert"), "{html}");
        assert!(!html.contains("<img src=x"), "{html}");
        assert!(!html.contains("<b>flash"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(html.contains("&lt;img src=x onerror=alert(2)&gt;"));
    }

    #[test]
    fn a_read_only_viewer_sees_no_action() {
        let filter = QueueFilter {
            status: Some("failed".into()),
            ..QueueFilter::default()
        };
        let html = queue(
            &ctx(Role::ReadOnly),
            &filter,
            &[hostile_row()],
            None,
            None,
            &[],
        )
        .into_string();
        assert!(!html.contains("retry-failed"));
        let html = queue(
            &ctx(Role::Operator),
            &filter,
            &[hostile_row()],
            None,
            None,
            &[],
        )
        .into_string();
        assert!(html.contains("retry-failed") && html.contains(&"c".repeat(64)));

        let detail = Detail {
            row: QueueRow {
                id: 7,
                webhook_id: "w".into(),
                event_id: Some(1),
                event_type: "lead_scraped".into(),
                entity_type: Some("lead".into()),
                entity_id: Some(1),
                webhook_url: "http://n8n/x".into(),
                priority: 0,
                status: "failed".into(),
                retry_count: 3,
                max_retries: 3,
                next_attempt_at: String::new(),
                last_error: Some("HTTP 500".into()),
                last_response_status: Some(500),
                occurred_at: String::new(),
                sent_at: None,
                created_at: String::new(),
                updated_at: String::new(),
                waiting: false,
            },
            payload: serde_json::json!({"name": "</pre><script>alert(3)</script>"}),
            attempts: Vec::new(),
            logs: Vec::new(),
        };
        let no_order = OrderingState::default();
        let ro = row(&ctx(Role::ReadOnly), &detail, &no_order, None).into_string();
        assert!(!ro.contains("/row/7/retry") && !ro.contains("/row/7/cancel"));
        assert!(!ro.contains("<script>alert(3)"), "{ro}");
        let op = row(&ctx(Role::Operator), &detail, &no_order, None).into_string();
        assert!(op.contains("/row/7/retry") && op.contains("/row/7/cancel"));
    }
}
