//! Steering delivery while it runs: a retry policy per route (schedule, retries,
//! timeout, final statuses), n8n refusing an event for good with `X-Webhook-Abort`,
//! pause and resume at run time, rate limits per URL, endpoint health.

use std::time::Duration;

use relay_tests::{wait_until, RelayBuilder, Reply, Sink, SinkRequest, TestDb};

const T: Duration = Duration::from_secs(30);

async fn emit(db: &TestDb, event: &str, entities: std::ops::RangeInclusive<i64>) {
    db.client()
        .await
        .execute(
            "SELECT webhook_emit($1, 'lead', e, jsonb_build_object('seq', e))
             FROM generate_series($2::int8, $3::int8) e",
            &[&event, entities.start(), entities.end()],
        )
        .await
        .expect("webhook_emit");
}

fn event_of(r: &SinkRequest) -> String {
    r.header("x-webhook-event").unwrap_or_default().to_string()
}

type Row = (String, i32, i32, String);

/// `(status, retry_count, max_retries, last_error)` of the one row of `event`, once
/// it is routed.
async fn try_row_of(db: &TestDb, event: &str) -> Option<Row> {
    let row = db
        .client()
        .await
        .query_opt(
            "SELECT status, retry_count, max_retries, coalesce(last_error, '')
             FROM webhook_queue WHERE event_type = $1",
            &[&event],
        )
        .await
        .expect("queue row")?;
    Some((row.get(0), row.get(1), row.get(2), row.get(3)))
}

async fn row_of(db: &TestDb, event: &str) -> Row {
    try_row_of(db, event).await.expect("the event is routed")
}

async fn wait_status(db: &TestDb, event: &str, status: &str) {
    wait_until(&format!("{event} {status}"), T, || async {
        try_row_of(db, event)
            .await
            .filter(|r| r.0 == status)
            .map(|_| ())
    })
    .await;
}

async fn wait_failed(db: &TestDb, event: &str) {
    wait_status(db, event, "failed").await;
}

/// The history notes of the row of `event`, oldest first.
async fn notes_of(db: &TestDb, event: &str) -> Vec<String> {
    db.client()
        .await
        .query(
            "SELECT coalesce(h.note, '') FROM webhook_retry_history h
             JOIN webhook_queue q ON q.id = h.webhook_queue_id
             WHERE q.event_type = $1 ORDER BY h.id",
            &[&event],
        )
        .await
        .expect("history")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[tokio::test]
async fn a_route_retries_on_its_own_schedule_and_the_others_keep_the_queues() {
    let db = TestDb::migrated().await;
    let sink = Sink::with(|r| {
        if event_of(r) == "lead_scraped" {
            Reply::status(500)
        } else {
            Reply::ok()
        }
    })
    .await;
    let _relay = RelayBuilder::new(&db.url, &sink.url())
        .env("WEBHOOK_RETRY_DELAYS", "60")
        .env("WEBHOOK_MAX_RETRIES", 5)
        .env("RELAY_ROUTES__LEAD_SCRAPED__RETRY_DELAYS", "1,2")
        .env("RELAY_ROUTES__LEAD_SCRAPED__MAX_RETRIES", 2)
        .spawn();
    emit(&db, "lead_scraped", 1..=1).await;
    emit(&db, "lead_qualified", 1..=1).await;
    wait_failed(&db, "lead_scraped").await;

    let attempts: Vec<SinkRequest> = sink
        .requests()
        .into_iter()
        .filter(|r| event_of(r) == "lead_scraped")
        .collect();
    assert_eq!(
        attempts.len(),
        3,
        "the first attempt and max_retries = 2 retries"
    );
    let gaps: Vec<f64> = attempts
        .windows(2)
        .map(|w| (w[1].received_at - w[0].received_at).as_secs_f64())
        .collect();
    // 1 s then 2 s, each within ±20 % jitter (plus a little for the round trips).
    assert!((0.75..1.7).contains(&gaps[0]), "{gaps:?}");
    assert!((1.55..2.9).contains(&gaps[1]), "{gaps:?}");
    let (_, retries, max, _) = row_of(&db, "lead_scraped").await;
    assert_eq!((retries, max), (2, 2));
    wait_status(&db, "lead_qualified", "sent").await;
    let (_, _, max, _) = row_of(&db, "lead_qualified").await;
    assert_eq!(max, 5, "the queue's max_retries");
}

#[tokio::test]
async fn a_final_status_fails_at_once_and_others_still_retry() {
    let db = TestDb::migrated().await;
    let sink = Sink::with(|r| match event_of(r).as_str() {
        "lead_scraped" => Reply::status(410),
        "lead_qualified" if r.nth_for_id == 1 => Reply::status(404),
        "lead_responded" => Reply::Hang,
        _ => Reply::ok(),
    })
    .await;
    let _relay = RelayBuilder::new(&db.url, &sink.url())
        .env("RELAY_QUEUE__FINAL_STATUSES", "[410, 422]")
        .env("RELAY_ROUTES__LEAD_RESPONDED__TIMEOUT_SECONDS", 1)
        .env("RELAY_ROUTES__LEAD_RESPONDED__MAX_RETRIES", 0)
        .spawn();
    emit(&db, "lead_scraped", 1..=1).await;
    emit(&db, "lead_qualified", 1..=1).await;
    emit(&db, "lead_responded", 1..=1).await;
    wait_failed(&db, "lead_scraped").await;
    // The route's own cut (the queue's is 5 s here).
    wait_failed(&db, "lead_responded").await;
    assert_eq!(row_of(&db, "lead_responded").await.3, "timed out after 1 s");
    wait_status(&db, "lead_qualified", "sent").await;

    let scraped = sink
        .requests()
        .iter()
        .filter(|r| event_of(r) == "lead_scraped")
        .count();
    assert_eq!(scraped, 1, "410 is final: no retry");
    let (_, retries, _, error) = row_of(&db, "lead_scraped").await;
    assert_eq!((retries, error.as_str()), (0, "HTTP 410"));
    let notes = notes_of(&db, "lead_scraped").await;
    assert!(
        notes
            .iter()
            .any(|n| n.contains("failed at once") && n.contains("HTTP 410 is a final status")),
        "{notes:?}"
    );
    assert_eq!(row_of(&db, "lead_qualified").await.1, 1, "404 was retried");
}

#[tokio::test]
async fn an_abort_answer_refuses_the_event_for_good_with_its_reason() {
    let db = TestDb::migrated().await;
    let sink = Sink::with(|r| match event_of(r).as_str() {
        "lead_scraped" => Reply::status(409).with_header("X-Webhook-Abort", "lead was merged"),
        // An abort header on a 2xx changes nothing: the delivery succeeded.
        _ => Reply::ok().with_header("X-Webhook-Abort", "true"),
    })
    .await;
    let _relay = RelayBuilder::new(&db.url, &sink.url()).spawn();
    emit(&db, "lead_scraped", 1..=1).await;
    emit(&db, "lead_qualified", 1..=1).await;
    wait_failed(&db, "lead_scraped").await;

    assert_eq!(
        sink.requests()
            .iter()
            .filter(|r| event_of(r) == "lead_scraped")
            .count(),
        1,
        "no retry after an abort"
    );
    let (_, retries, max, error) = row_of(&db, "lead_scraped").await;
    assert_eq!((retries, max), (0, 3), "retries were left, none used");
    assert!(error.contains("aborted: lead was merged"), "{error}");
    let notes = notes_of(&db, "lead_scraped").await;
    assert!(
        notes
            .iter()
            .any(|n| n.contains("X-Webhook-Abort: lead was merged")),
        "{notes:?}"
    );
    db.wait_for_queue_status("sent", 1, T).await;
}

#[tokio::test]
async fn an_invalid_route_policy_is_refused_at_start_naming_the_key() {
    let db = TestDb::migrated().await;
    let sink = Sink::start().await;
    for (key, value, named) in [
        (
            "RELAY_ROUTES__LEAD_SCRAPED__TIMEOUT_SECONDS",
            "500",
            "routes.lead_scraped.timeout_seconds",
        ),
        (
            "RELAY_ROUTES__LEAD_SCRAPED__FINAL_STATUSES",
            "[200]",
            "routes.lead_scraped.final_statuses",
        ),
        (
            "RELAY_ROUTES__LEAD_SCRAPED__MAX_PER_SECOND",
            "0",
            "routes.lead_scraped.max_per_second",
        ),
        ("RELAY_N8N__MAX_PER_SECOND", "-1", "n8n.max_per_second"),
    ] {
        let out = RelayBuilder::new(&db.url, &sink.url())
            .env(key, value)
            .output()
            .await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{key}={value}: {stderr}");
        assert!(stderr.contains(named), "{key}={value}: {stderr}");
    }
}

// ---- Pause and resume ------------------------------------------------------------

/// `n8n-relay queue ARGS` with `builder`'s configuration; stdout, exit code 0 asserted.
async fn cli(builder: &RelayBuilder, args: &[&str]) -> String {
    let out = builder.clone().args(args.to_vec()).output().await;
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{args:?}: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn count_of(sink: &Sink, event: &str) -> usize {
    sink.requests()
        .iter()
        .filter(|r| event_of(r) == event)
        .count()
}

#[tokio::test]
async fn a_paused_route_holds_its_events_across_relays_and_a_restart_and_resume_delivers_them_in_order(
) {
    let db = TestDb::migrated().await;
    let sink = Sink::start().await;
    let builder = RelayBuilder::new(&db.url, &sink.url())
        .env("RELAY_ROUTES__LEAD_QUALIFIED__ORDERING", "entity");
    let mut first = builder.spawn();
    let _second = builder.spawn();
    wait_until("both relays listen", T, || async {
        (db.count(
            "SELECT count(*) FROM pg_stat_activity
                   WHERE datname = current_database() AND application_name = 'n8n-relay-listener'",
        )
        .await
            == 2)
            .then_some(())
    })
    .await;
    let shown = cli(
        &builder,
        &[
            "queue",
            "pause",
            "--event",
            "lead_qualified",
            "--reason",
            "n8n upgrade",
        ],
    )
    .await;
    assert!(shown.contains("paused event lead_qualified"), "{shown}");

    // 1,000 events flow: 500 to a paused route, 500 to another.
    for change in 1..=10i64 {
        db.client()
            .await
            .execute(
                "SELECT webhook_emit('lead_qualified', 'lead', e, jsonb_build_object('seq', $1::int8))
                 FROM generate_series(1, 50) e",
                &[&change],
            )
            .await
            .expect("emit");
    }
    emit(&db, "lead_scraped", 1..=500).await;
    wait_until("every lead_scraped delivered", T, || async {
        (count_of(&sink, "lead_scraped") >= 500).then_some(())
    })
    .await;
    assert_eq!(
        count_of(&sink, "lead_qualified"),
        0,
        "the paused route sent nothing"
    );

    let paused: serde_json::Value =
        serde_json::from_str(&cli(&builder, &["queue", "paused", "--json"]).await).expect("json");
    assert_eq!(paused["count"], 1, "{paused}");
    let pause = &paused["pauses"][0];
    assert_eq!(
        (
            pause["scope"].as_str(),
            pause["target"].as_str(),
            pause["held"].as_i64()
        ),
        (Some("event"), Some("lead_qualified"), Some(500)),
        "{paused}"
    );
    assert_eq!(pause["reason"], "n8n upgrade");
    assert!(pause["paused_by"]
        .as_str()
        .is_some_and(|b| b.starts_with("cli ")));
    let stats: serde_json::Value =
        serde_json::from_str(&cli(&builder, &["queue", "stats", "--json"]).await).expect("json");
    assert_eq!(stats["held_by_pauses"], 500, "{stats}");
    assert_eq!(
        stats["due_now"], 0,
        "rows a pause holds are not due: nothing will go out: {stats}"
    );

    // A restarted relay reads the pause from the database.
    assert_eq!(first.terminate(T).await, Some(0));
    first.restart();
    emit(&db, "lead_scraped", 501..=510).await;
    wait_until("the restarted relays keep delivering", T, || async {
        (count_of(&sink, "lead_scraped") >= 510).then_some(())
    })
    .await;
    assert_eq!(
        count_of(&sink, "lead_qualified"),
        0,
        "still paused after a restart"
    );

    cli(&builder, &["queue", "resume", "--event", "lead_qualified"]).await;
    // Committed and notified once the command returns.
    let resumed_at = std::time::Instant::now();
    let first_arrival = wait_until("the first held event after resume", T, || async {
        sink.requests()
            .iter()
            .find(|r| event_of(r) == "lead_qualified")
            .map(|r| r.received_at)
    })
    .await;
    eprintln!(
        "first held event {:?} after the resume",
        first_arrival.saturating_duration_since(resumed_at)
    );
    assert!(
        first_arrival.saturating_duration_since(resumed_at) < Duration::from_secs(1),
        "the relays obeyed the resume only after {:?}",
        first_arrival.saturating_duration_since(resumed_at)
    );
    wait_until("every held event delivered", T, || async {
        (count_of(&sink, "lead_qualified") >= 500).then_some(())
    })
    .await;
    // Held, never reordered: each lead's changes arrive 1..10.
    let mut by_lead: std::collections::BTreeMap<i64, Vec<i64>> = Default::default();
    let mut requests = sink.requests();
    requests.sort_by_key(|r| r.received_at);
    for r in requests.iter().filter(|r| event_of(r) == "lead_qualified") {
        let body = r.json();
        by_lead
            .entry(body["entity_id"].as_i64().expect("entity"))
            .or_default()
            .push(body["data"]["seq"].as_i64().expect("seq"));
    }
    assert_eq!(by_lead.len(), 50);
    for (lead, seqs) in by_lead {
        assert_eq!(seqs, (1..=10).collect::<Vec<_>>(), "lead {lead}");
    }
    assert!(cli(&builder, &["queue", "paused"])
        .await
        .contains("nothing is paused"));
}

#[tokio::test]
async fn pause_and_resume_refuse_what_they_cannot_mean() {
    let db = TestDb::migrated().await;
    let sink = Sink::start().await;
    let builder = RelayBuilder::new(&db.url, &sink.url());
    for (args, code, says) in [
        (
            vec!["queue", "pause", "--event", "lead_scrapped"],
            2,
            "unknown event type",
        ),
        (
            vec!["queue", "pause", "--url", "ftp://n8n/x"],
            2,
            "not an http",
        ),
        (vec!["queue", "pause"], 2, "required"),
        (
            vec!["queue", "pause", "--all", "--event", "lead_scraped"],
            2,
            "cannot be used",
        ),
        (
            vec!["queue", "resume", "--event", "lead_scraped"],
            1,
            "is not paused",
        ),
    ] {
        let out = builder.clone().args(args.clone()).output().await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
    assert_eq!(
        db.count("SELECT count(*) FROM webhook_pauses").await,
        0,
        "nothing was paused"
    );
}

#[tokio::test]
async fn pausing_everything_holds_every_route_and_a_url_pause_holds_that_url() {
    let db = TestDb::migrated().await;
    let sink = Sink::start().await;
    let builder = RelayBuilder::new(&db.url, &sink.url());
    let _relay = builder.spawn();
    // Listening, so the pause's notification reaches it before the events do.
    wait_until("the relay listens", T, || db.listener_pid()).await;
    cli(&builder, &["queue", "pause", "--all"]).await;
    let scraped_url = format!("{}/webhook/lead-scraped", sink.url());
    cli(&builder, &["queue", "pause", "--url", &scraped_url]).await;
    emit(&db, "lead_scraped", 1..=5).await;
    emit(&db, "lead_qualified", 1..=5).await;
    wait_until("all ten queued, pending", T, || async {
        (db.count("SELECT count(*) FROM webhook_queue WHERE status = 'pending'")
            .await
            == 10)
            .then_some(())
    })
    .await;
    assert_eq!(sink.count(), 0);

    // Everything resumed; the URL pause still holds lead_scraped.
    cli(&builder, &["queue", "resume", "--all"]).await;
    wait_until("lead_qualified delivered", T, || async {
        (count_of(&sink, "lead_qualified") == 5).then_some(())
    })
    .await;
    assert_eq!(count_of(&sink, "lead_scraped"), 0);
    cli(&builder, &["queue", "resume", "--url", &scraped_url]).await;
    db.wait_for_queue_status("sent", 10, T).await;
}

// ---- Rate limits -------------------------------------------------------------------

/// The most requests of `event` the sink saw in any window of `width`.
fn busiest_window(sink: &Sink, event: &str, width: Duration) -> usize {
    let mut at: Vec<std::time::Instant> = sink
        .requests()
        .iter()
        .filter(|r| event_of(r) == event)
        .map(|r| r.received_at)
        .collect();
    at.sort();
    let mut most = 0;
    let mut start = 0;
    for end in 0..at.len() {
        while at[end] - at[start] >= width {
            start += 1;
        }
        most = most.max(end - start + 1);
    }
    most
}

#[tokio::test]
async fn a_rate_limited_route_stays_under_its_limit_with_two_relays_and_the_others_run_free() {
    const LIMIT: usize = 100;
    let db = TestDb::migrated().await;
    let sink = Sink::start().await;
    let builder = RelayBuilder::new(&db.url, &sink.url())
        .env("RELAY_ROUTES__LEAD_SCRAPED__MAX_PER_SECOND", LIMIT);
    let _relays: Vec<_> = (0..2).map(|_| builder.spawn()).collect();
    let started = std::time::Instant::now();
    emit(&db, "lead_scraped", 1..=600).await;
    emit(&db, "lead_qualified", 1..=300).await;

    wait_until("the unlimited route delivered", T, || async {
        (count_of(&sink, "lead_qualified") >= 300).then_some(())
    })
    .await;
    let free_took = started.elapsed();
    wait_until(
        "the limited route delivered",
        Duration::from_secs(60),
        || async { (count_of(&sink, "lead_scraped") >= 600).then_some(()) },
    )
    .await;
    let limited_took = started.elapsed();
    let busiest = busiest_window(&sink, "lead_scraped", Duration::from_secs(1));
    eprintln!(
        "limited: 600 in {limited_took:?}, busiest second {busiest}; unlimited: 300 in {free_took:?}"
    );
    assert!(
        busiest <= LIMIT * 11 / 10,
        "{busiest} deliveries in one second, limit {LIMIT}"
    );
    assert!(
        limited_took >= Duration::from_millis(5_300),
        "600 at {LIMIT}/s took only {limited_took:?}"
    );
    assert!(
        free_took < limited_took / 2,
        "the unlimited route waited for the limited one: {free_took:?} of {limited_took:?}"
    );
}

// ---- n8n pushing back, endpoint health ----------------------------------------------

#[tokio::test]
async fn a_429_with_retry_after_slows_the_whole_url_down_not_only_its_row() {
    let db = TestDb::migrated().await;
    // Entity 1's first request gets a slow 429 Retry-After: 2, every other one 200.
    // The 20 rows are queued before it answers, so rows claimed ahead of the refusal
    // are waiting in the relay when it comes: they must wait too.
    let sink = Sink::with(|r| {
        if r.json()["entity_id"] == 1 && r.nth_for_id == 1 {
            Reply::status(429)
                .with_header("Retry-After", "2")
                .after(Duration::from_millis(300))
        } else {
            Reply::ok().after(Duration::from_millis(20))
        }
    })
    .await;
    let _relay = RelayBuilder::new(&db.url, &sink.url())
        .env("RELAY_QUEUE__MAX_PER_ENDPOINT", 1)
        .spawn();
    emit(&db, "lead_scraped", 1..=20).await;
    db.wait_for_queue_status("sent", 20, T).await;

    let requests = sink.requests();
    let refused = requests
        .iter()
        .find(|r| r.json()["entity_id"] == 1)
        .expect("entity 1 was refused first")
        .received_at
        + Duration::from_millis(300);
    let soon_after = requests
        .iter()
        .filter(|r| {
            r.received_at > refused && r.received_at - refused < Duration::from_millis(1800)
        })
        .count();
    assert_eq!(
        soon_after, 0,
        "the URL was asked to wait 2 s, yet got {soon_after} requests meanwhile"
    );
}

#[tokio::test]
async fn an_endpoint_that_keeps_failing_is_reported_once_and_its_rows_wait_never_dropped() {
    let db = TestDb::migrated().await;
    let sink = Sink::with(|r| {
        if event_of(r) == "lead_scraped" {
            Reply::status(502)
        } else {
            Reply::ok()
        }
    })
    .await;
    let builder = RelayBuilder::new(&db.url, &sink.url())
        .env("RELAY_QUEUE__UNHEALTHY_AFTER", 3)
        .env("WEBHOOK_MAX_RETRIES", 50)
        .env("WEBHOOK_RETRY_DELAYS", "1");
    let relay = builder.spawn();
    emit(&db, "lead_scraped", 1..=3).await;

    // Reported: the event, routed like any other, to its own workflow.
    let report = wait_until("an endpoint_unhealthy delivery", T, || async {
        sink.requests()
            .into_iter()
            .find(|r| event_of(r) == "endpoint_unhealthy")
    })
    .await;
    let body = report.json();
    let scraped_url = format!("{}/webhook/lead-scraped", sink.url());
    assert_eq!(report.path, "/webhook/endpoint-unhealthy");
    assert_eq!(body["data"]["url"], scraped_url.as_str(), "{body}");
    assert!(
        body["data"]["consecutive_failures"].as_i64() >= Some(3),
        "{body}"
    );
    assert_eq!(body["data"]["last_error"], "HTTP 502", "{body}");
    let stats: serde_json::Value =
        serde_json::from_str(&cli(&builder, &["queue", "stats", "--json"]).await).expect("json");
    assert_eq!(
        stats["unhealthy_endpoints"][0]["url"],
        scraped_url.as_str(),
        "{stats}"
    );

    // Failing on, it is not reported again; its rows are retried, never dropped.
    wait_until("more failed attempts", T, || async {
        (count_of(&sink, "lead_scraped") >= 8).then_some(())
    })
    .await;
    assert_eq!(count_of(&sink, "endpoint_unhealthy"), 1, "reported once");
    assert_eq!(
        db.count("SELECT count(*) FROM webhook_queue WHERE event_type = 'lead_scraped' AND status = 'failed'")
            .await,
        0
    );

    // n8n recovers: every row is delivered and the endpoint is healthy again.
    sink.set_behaviour(|_| Reply::ok());
    wait_until("every lead_scraped sent", T, || async {
        (db.count("SELECT count(*) FROM webhook_queue WHERE event_type = 'lead_scraped' AND status = 'sent'")
            .await
            == 3)
            .then_some(())
    })
    .await;
    wait_until("healthy again", T, || async {
        (db.count("SELECT count(*) FROM webhook_endpoints WHERE healthy")
            .await
            == 1)
            .then_some(())
    })
    .await;
    let log = relay.log();
    assert_eq!(log.matches("endpoint unhealthy").count(), 1, "{log}");
    assert!(log.contains("endpoint healthy again"), "{log}");
}

#[tokio::test]
async fn a_pause_takes_back_rows_already_claimed_only_what_is_in_flight_finishes() {
    let db = TestDb::migrated().await;
    // Slow, two at a time: the relay holds several rows claimed ahead of its workers.
    let sink = Sink::with(|_| Reply::ok().after(Duration::from_millis(300))).await;
    let builder = RelayBuilder::new(&db.url, &sink.url())
        .env("RELAY_QUEUE__WORKERS", 2)
        .env("RELAY_QUEUE__MAX_PER_ENDPOINT", 2);
    let _relay = builder.spawn();
    emit(&db, "lead_scraped", 1..=40).await;
    sink.wait_for(2, T).await;
    cli(&builder, &["queue", "pause", "--event", "lead_scraped"]).await;
    let at_pause = sink.count();
    wait_until("nothing left sending", T, || async {
        (db.count("SELECT count(*) FROM webhook_queue WHERE status = 'sending'")
            .await
            == 0)
            .then_some(())
    })
    .await;
    assert!(
        sink.count() <= at_pause + 2,
        "{} requests after the pause, only the 2 in flight may finish",
        sink.count() - at_pause
    );
    let pending = db
        .count("SELECT count(*) FROM webhook_queue WHERE status = 'pending'")
        .await;
    assert_eq!(
        pending as usize + sink.count(),
        40,
        "the rest wait, pending"
    );
    cli(&builder, &["queue", "resume", "--event", "lead_scraped"]).await;
    db.wait_for_queue_status("sent", 40, T).await;
}
