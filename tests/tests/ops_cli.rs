//! The operator's command line against a real database: `queue stats|list|show|retry|
//! cancel|cleanup`, `emit` and `check-config`. Rows are inserted with SQL in every
//! status; each test checks both what the command printed (table and JSON) and what
//! it did to the rows.

use relay_tests::{RelayBuilder, TestDb};
use serde_json::Value;

/// Nothing listens here: the CLI never talks to n8n.
const NO_N8N: &str = "http://127.0.0.1:9";

struct Out {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Out {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.stdout))
    }
    fn ok(self) -> Self {
        assert_eq!(
            self.code,
            Some(0),
            "stdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        self
    }
}

/// Runs `n8n-relay` with a whitespace-separated command line.
async fn cli(db: &TestDb, line: &str) -> Out {
    cli_args(db, &line.split_whitespace().collect::<Vec<_>>()).await
}

async fn cli_args(db: &TestDb, args: &[&str]) -> Out {
    let out = RelayBuilder::new(&db.url, NO_N8N)
        .args(args.iter().copied())
        .output()
        .await;
    Out {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

const INSERT_ROW: &str = "
    INSERT INTO webhook_queue
        (event_type, entity_type, entity_id, webhook_url, payload, status, retry_count,
         max_retries, last_error, last_response_status, created_at, updated_at,
         next_attempt_at, event_id)
    VALUES ($1, 'lead', $2, 'http://n8n.test/webhook/' || $1, $3, $4, $5, 3, $6, $7,
            now() - make_interval(days => $8), now() - make_interval(days => $8),
            now() - interval '1 second', $9)
    RETURNING id";

/// A queue row as the dispatcher would have left it in `status`.
struct Row<'a> {
    event: &'a str,
    status: &'a str,
    days_old: i32,
    event_id: Option<i64>,
}

impl<'a> Row<'a> {
    fn new(event: &'a str, status: &'a str) -> Self {
        Row {
            event,
            status,
            days_old: 0,
            event_id: None,
        }
    }
    fn days_old(mut self, days: i32) -> Self {
        self.days_old = days;
        self
    }
    fn event_id(mut self, id: i64) -> Self {
        self.event_id = Some(id);
        self
    }
    async fn insert(self, client: &tokio_postgres::Client) -> i64 {
        let failed = self.status == "failed";
        let (retries, error, response) = if failed {
            (3, Some("HTTP 500 from n8n"), Some(500))
        } else {
            (0, None, None)
        };
        let payload = serde_json::json!({"lead_id": 7, "business_name": "Acme Inc"});
        client
            .query_one(
                INSERT_ROW,
                &[
                    &self.event,
                    &7_i64,
                    &payload,
                    &self.status,
                    &retries,
                    &error,
                    &response,
                    &self.days_old,
                    &self.event_id,
                ],
            )
            .await
            .expect("insert queue row")
            .get(0)
    }
}

async fn status_of(client: &tokio_postgres::Client, id: i64) -> String {
    client
        .query_one("SELECT status FROM webhook_queue WHERE id = $1", &[&id])
        .await
        .expect("row")
        .get(0)
}

async fn one_of_each(client: &tokio_postgres::Client) -> [(&'static str, i64); 5] {
    let mut ids = [("", 0); 5];
    for (i, status) in ["pending", "sending", "sent", "failed", "cancelled"]
        .into_iter()
        .enumerate()
    {
        ids[i] = (
            status,
            Row::new("lead_scraped", status).insert(client).await,
        );
    }
    ids
}

#[tokio::test]
async fn stats_on_an_empty_queue_has_every_key_at_zero() {
    let db = TestDb::migrated().await;
    let json = cli(&db, "queue stats --json").await.ok().json();
    for key in [
        "pending",
        "sending",
        "sent",
        "failed",
        "cancelled",
        "total",
        "due_now",
        "not_yet_routed",
    ] {
        assert_eq!(json[key], 0, "{key} in {json}");
    }
    assert!(json["oldest_pending_age_seconds"].is_null(), "{json}");
}

#[tokio::test]
async fn stats_counts_rows_by_status_in_table_and_json() {
    let db = TestDb::migrated().await;
    let client = db.client().await;
    one_of_each(&client).await;
    Row::new("lead_scraped", "pending")
        .days_old(1)
        .insert(&client)
        .await;
    Row::new("demo_completed", "sent").insert(&client).await;
    // Pending but not due for an hour: counted, not due.
    let later = Row::new("demo_completed", "pending").insert(&client).await;
    client
        .execute(
            "UPDATE webhook_queue SET next_attempt_at = now() + interval '1 hour' WHERE id = $1",
            &[&later],
        )
        .await
        .unwrap();

    let json = cli(&db, "queue stats --json").await.ok().json();
    assert_eq!(json["pending"], 3);
    assert_eq!(json["sending"], 1);
    assert_eq!(json["sent"], 2);
    assert_eq!(json["failed"], 1);
    assert_eq!(json["cancelled"], 1);
    assert_eq!(json["total"], 8);
    assert_eq!(json["due_now"], 2);
    let age = json["oldest_pending_age_seconds"].as_f64().expect("age");
    assert!((86_400.0..86_400.0 + 600.0).contains(&age), "{age}");
    assert!(json.get("by_event").is_none(), "{json}");

    let table = cli(&db, "queue stats").await.ok().stdout;
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines[0], "status     count", "{table}");
    assert!(lines.contains(&"pending        3"), "{table}");
    assert!(lines.contains(&"total          8"), "{table}");
    assert!(table.contains("oldest pending  1d 0h"), "{table}");
    assert!(table.contains("due now         2"), "{table}");
}

/// With the relay stopped, events wait in the outbox, not the queue; stats showed
/// all zeros, and sql/README's "check that nothing is waiting" before an uninstall
/// (which drops the outbox) passed with events still to deliver.
#[tokio::test]
async fn stats_counts_the_events_not_yet_routed() {
    let db = TestDb::migrated().await;
    let client = db.client().await;
    for lead in 1..=3_i64 {
        client
            .execute(
                "SELECT webhook_emit('lead_scraped', 'lead', $1, '{}')",
                &[&lead],
            )
            .await
            .expect("emit");
    }
    let json = cli(&db, "queue stats --json").await.ok().json();
    assert_eq!(json["not_yet_routed"], 3, "{json}");
    assert_eq!(json["total"], 0, "{json}");
    let table = cli(&db, "queue stats").await.ok().stdout;
    assert!(table.contains("not yet routed  3"), "{table}");
}

/// A row's id and `--event`/`--since` (which narrow `--all-failed` only) were taken
/// together, the flags silently ignored.
#[tokio::test]
async fn retry_of_one_row_refuses_the_all_failed_filters() {
    let db = TestDb::migrated().await;
    let client = db.client().await;
    let id = Row::new("lead_scraped", "failed").insert(&client).await;
    for flag in ["--event=demo_failed", "--since=1d"] {
        let out = cli_args(&db, &["queue", "retry", &id.to_string(), flag]).await;
        assert_eq!(out.code, Some(2), "{flag}: {}", out.stderr);
        assert_eq!(status_of(&client, id).await, "failed", "{flag}");
    }
}

#[tokio::test]
async fn stats_by_event_breaks_the_counts_down() {
    let db = TestDb::migrated().await;
    let client = db.client().await;
    Row::new("lead_scraped", "sent").insert(&client).await;
    Row::new("lead_scraped", "failed").insert(&client).await;
    Row::new("video_completed", "pending").insert(&client).await;

    let json = cli(&db, "queue stats --by-event --json").await.ok().json();
    assert_eq!(json["total"], 3);
    let lead = &json["by_event"]["lead_scraped"];
    assert_eq!(
        (
            &lead["sent"],
            &lead["failed"],
            &lead["pending"],
            &lead["total"]
        ),
        (
            &Value::from(1),
            &Value::from(1),
            &Value::from(0),
            &Value::from(2)
        ),
        "{json}"
    );
    assert_eq!(json["by_event"]["video_completed"]["due_now"], 1);

    let table = cli(&db, "queue stats --by-event").await.ok().stdout;
    let header = table.lines().next().unwrap_or_default();
    assert!(
        header.starts_with("event") && header.contains("pending") && header.ends_with("due now"),
        "{table}"
    );
    let lead_line = table
        .lines()
        .find(|l| l.starts_with("lead_scraped"))
        .unwrap_or_else(|| panic!("{table}"));
    let cells: Vec<&str> = lead_line.split_whitespace().collect();
    assert_eq!(cells, ["lead_scraped", "0", "0", "1", "1", "0", "2", "0"]);
}

#[tokio::test]
async fn list_filters_by_status_and_event_newest_first() {
    let db = TestDb::migrated().await;
    let client = db.client().await;
    let a = Row::new("lead_scraped", "failed").insert(&client).await;
    let _b = Row::new("lead_scraped", "sent").insert(&client).await;
    let c = Row::new("demo_failed", "failed").insert(&client).await;
    let d = Row::new("lead_scraped", "failed").insert(&client).await;

    let json = cli(&db, "queue list --status failed --json")
        .await
        .ok()
        .json();
    let ids: Vec<i64> = json["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, [d, c, a]);
    assert_eq!(json["count"], 3);
    let first = &json["rows"][0];
    assert_eq!(first["last_error"], "HTTP 500 from n8n");
    assert_eq!(first["webhook_url"], "http://n8n.test/webhook/lead_scraped");
    assert!(first["created_at"].as_str().unwrap().ends_with('Z'));

    let json = cli(
        &db,
        "queue list --status failed --event lead_scraped --limit 1 --json",
    )
    .await
    .ok()
    .json();
    assert_eq!(json["count"], 1);
    assert_eq!(json["rows"][0]["id"], d);

    let table = cli(&db, "queue list --event demo_failed").await.ok().stdout;
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 2, "{table}");
    assert!(lines[0].starts_with("id") && lines[0].contains("last error"));
    let cells: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(
        &cells[..5],
        [c.to_string().as_str(), "failed", "demo_failed", "lead", "7"]
    );
    assert!(lines[1].contains("3/3") && lines[1].ends_with("HTTP 500 from n8n"));

    let empty = cli(&db, "queue list --status sending").await.ok().stdout;
    assert_eq!(empty, "no queue rows match\n");
}

#[tokio::test]
async fn list_refuses_unknown_status_event_and_limit_with_exit_2() {
    let db = TestDb::migrated().await;
    for (args, named) in [
        (vec!["--status", "done"], "\"done\""),
        (vec!["--event", "lead_scrapped"], "\"lead_scrapped\""),
        (vec!["--limit", "0"], "--limit"),
    ] {
        let mut full = vec!["queue", "list"];
        full.extend(args);
        let out = cli_args(&db, &full).await;
        assert_eq!(out.code, Some(2), "{full:?}: {}", out.stderr);
        assert!(out.stderr.contains(named), "{full:?}: {}", out.stderr);
        assert!(out.stdout.is_empty());
    }
}

#[tokio::test]
async fn show_prints_the_row_its_attempts_and_its_logs() {
    let db = TestDb::migrated().await;
    let client = db.client().await;
    let id = Row::new("lead_scraped", "failed").insert(&client).await;
    client
        .batch_execute(&format!(
            "INSERT INTO webhook_retry_history
                 (webhook_queue_id, attempt, response_status, error_message, duration_ms)
             VALUES ({id}, 1, 503, 'HTTP 503 from n8n', 40),
                    ({id}, 2, NULL, 'connection refused', 2);
             INSERT INTO webhook_logs
                 (direction, event_type, webhook_queue_id, attempt, response_status,
                  duration_ms, error_message)
             VALUES ('outgoing', 'lead_scraped', {id}, 1, 503, 40, 'HTTP 503 from n8n'),
                    ('outgoing', 'lead_scraped', {id}, 2, NULL, 2, 'connection refused');"
        ))
        .await
        .unwrap();

    let json = cli(&db, &format!("queue show {id} --json"))
        .await
        .ok()
        .json();
    assert_eq!(json["id"], id);
    assert_eq!(json["status"], "failed");
    assert_eq!(json["last_error"], "HTTP 500 from n8n");
    assert_eq!(json["last_response_status"], 500);
    assert_eq!(json["payload"]["business_name"], "Acme Inc");
    let attempts = json["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2);
    assert_eq!(attempts[0]["response_status"], 503);
    assert_eq!(attempts[1]["error_message"], "connection refused");
    let logs = json["logs"].as_array().unwrap();
    assert_eq!(logs.len(), 2);
    assert_eq!(logs[0]["attempt"], 2, "newest first: {json}");

    let text = cli(&db, &format!("queue show {id}")).await.ok().stdout;
    assert!(text.contains(&format!("id             {id}\n")), "{text}");
    assert!(text.contains("last error     HTTP 500 from n8n"), "{text}");
    assert!(text.contains("last response  500"), "{text}");
    assert!(text.contains("\"business_name\": \"Acme Inc\""), "{text}");
    assert!(text.contains("connection refused"), "{text}");
}

#[tokio::test]
async fn show_list_and_paused_print_webhook_urls_without_their_credentials() {
    let db = TestDb::migrated().await;
    let client = db.client().await;
    let id = Row::new("lead_scraped", "failed").insert(&client).await;
    client
        .execute(
            "UPDATE webhook_queue SET webhook_url = 'https://n8n:s3cret@n8n.test/webhook/x' WHERE id = $1",
            &[&id],
        )
        .await
        .expect("a URL with basic-auth credentials");
    let pause = cli(
        &db,
        "queue pause --url https://n8n:s3cret@n8n.test/webhook/x",
    )
    .await;
    assert_eq!(pause.code, Some(0), "{}", pause.stderr);
    // (command, whether its output shows the URL at all)
    for (line, shows_url) in [
        (format!("queue show {id}"), true),
        (format!("queue show {id} --json"), true),
        ("queue list --status failed --json".to_string(), true),
        ("queue list --status failed".to_string(), false),
        ("queue paused --json".to_string(), true),
        ("queue paused".to_string(), true),
    ] {
        let out = cli(&db, &line).await.ok().stdout;
        assert!(!out.contains("s3cret"), "{line}: {out}");
        assert_eq!(out.contains("n8n.test"), shows_url, "{line}: {out}");
    }
    // The event's own data is shown as it was signed and sent, a `url` column included.
    client
        .execute(
            "UPDATE webhook_queue SET payload = '{\"url\": \"https://demo:p4ss@site.example/\"}' WHERE id = $1",
            &[&id],
        )
        .await
        .expect("a payload with a url of its own");
    let json = cli(&db, &format!("queue show {id} --json"))
        .await
        .ok()
        .json();
    assert_eq!(json["payload"]["url"], "https://demo:p4ss@site.example/");
}

#[tokio::test]
async fn a_route_url_typed_as_shown_pauses_and_resumes_the_route_with_its_credentials() {
    let db = TestDb::migrated().await;
    // n8n behind basic auth: every route URL carries the credentials.
    let relay = RelayBuilder::new(&db.url, "http://ops:s3cret@127.0.0.1:9");
    let run = |args: &[&str]| {
        let relay = relay.clone().args(args.iter().copied());
        async move { relay.output().await }
    };
    let shown = "http://127.0.0.1:9/webhook/lead-scraped";
    let out = run(&["queue", "pause", "--url", shown]).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Stored as the route's own URL, which is what the relay matches rows against.
    let target: String = db
        .client()
        .await
        .query_one("SELECT target FROM webhook_pauses", &[])
        .await
        .expect("one pause")
        .get(0);
    assert_eq!(target, "http://ops:s3cret@127.0.0.1:9/webhook/lead-scraped");
    let out = run(&["queue", "resume", "--url", shown]).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(db.count("SELECT count(*) FROM webhook_pauses").await, 0);
}

#[tokio::test]
async fn an_unknown_id_is_an_error_that_names_it() {
    let db = TestDb::migrated().await;
    for sub in ["show", "retry", "cancel"] {
        let out = cli(&db, &format!("queue {sub} 424242")).await;
        assert_eq!(out.code, Some(1), "{sub}: {}", out.stderr);
        assert!(
            out.stderr.contains("no queue row with id 424242"),
            "{sub}: {}",
            out.stderr
        );
    }
}

/// What on-call has in hand from n8n's side is the delivery's X-Webhook-Id (in the
/// execution's headers, and in the relay's log): `queue show` takes it for the row
/// (it said "invalid digit found in string").
#[tokio::test]
async fn show_finds_a_row_by_the_webhook_id_its_deliveries_carry() {
    let db = TestDb::migrated().await;
    let client = db.client().await;
    let id = Row::new("lead_scraped", "failed").insert(&client).await;
    let webhook_id: String = client
        .query_one(
            "SELECT webhook_id::text FROM webhook_queue WHERE id = $1",
            &[&id],
        )
        .await
        .expect("webhook id")
        .get(0);
    let json = cli(
        &db,
        &format!("queue show {} --json", webhook_id.to_uppercase()),
    )
    .await
    .ok()
    .json();
    assert_eq!(json["id"], id, "{json}");
    // A failed row has no next attempt (it showed the column's last value).
    let text = cli(&db, &format!("queue show {webhook_id}"))
        .await
        .ok()
        .stdout;
    assert!(
        text.lines()
            .any(|l| l.trim_start().starts_with("next attempt") && l.trim_end().ends_with(" -")),
        "{text}"
    );
    let out = cli(&db, "queue show 00000000-0000-0000-0000-000000000000").await;
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("no queue row with webhook id 00000000-0000-0000-0000-000000000000"),
        "{}",
        out.stderr
    );
    let out = cli(&db, "queue show row-7").await;
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(
        out.stderr.contains("neither a queue row id"),
        "{}",
        out.stderr
    );
}

/// A pending row that this configuration does not deliver (delivery or its route
/// switched off) is due and goes nowhere: `queue show` says why, where it said
/// nothing (only the start-up log did).
#[tokio::test]
async fn show_says_when_delivery_or_the_rows_route_is_switched_off() {
    let db = TestDb::migrated().await;
    let client = db.client().await;
    let id = Row::new("lead_scraped", "pending").insert(&client).await;
    client
        .execute(
            "UPDATE webhook_queue SET webhook_url = $2 WHERE id = $1",
            &[&id, &format!("{NO_N8N}/webhook/lead-scraped")],
        )
        .await
        .expect("the route's URL");
    let show = |env: (&'static str, &'static str)| {
        let url = db.url.clone();
        async move {
            let out = RelayBuilder::new(&url, NO_N8N)
                .env(env.0, env.1)
                .args(["queue", "show", &id.to_string()])
                .output()
                .await;
            String::from_utf8_lossy(&out.stdout).into_owned()
        }
    };
    let off = show(("N8N_ENABLED", "false")).await;
    assert!(
        off.lines()
            .any(|l| l.starts_with("waits for") && l.contains("delivery, switched off")),
        "{off}"
    );
    let route_off = show(("RELAY_ROUTES__LEAD_SCRAPED__ENABLED", "false")).await;
    assert!(
        route_off.lines().any(
            |l| l.starts_with("waits for") && l.contains("routes.lead_scraped.enabled = false")
        ),
        "{route_off}"
    );
    let on = show(("RELAY_LOG__LEVEL", "info")).await;
    assert!(!on.contains("switched off"), "{on}");
}

#[tokio::test]
async fn retry_puts_a_failed_row_back_to_pending_and_records_it() {
    let db = TestDb::migrated().await;
    let client = db.client().await;
    let id = Row::new("lead_scraped", "failed").insert(&client).await;
    client
        .execute(
            "UPDATE webhook_queue SET next_attempt_at = now() + interval '1 day' WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap();

    let out = cli(&db, &format!("queue retry {id}")).await.ok();
    assert!(
        out.stdout.contains("retried 1 failed row") && out.stdout.contains(&id.to_string()),
        "{}",
        out.stdout
    );
    let row = client
        .query_one(
            "SELECT status, retry_count, next_attempt_at <= now(), last_error FROM webhook_queue WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "pending");
    assert_eq!(row.get::<_, i32>(1), 0);
    assert!(row.get::<_, bool>(2), "due now");
    assert_eq!(
        row.get::<_, Option<String>>(3).as_deref(),
        Some("HTTP 500 from n8n"),
        "the reason it failed is kept"
    );
    let note = client
        .query_one(
            "SELECT attempt, note FROM webhook_retry_history WHERE webhook_queue_id = $1",
            &[&id],
        )
        .await
        .unwrap();
    assert_eq!(note.get::<_, i32>(0), 3, "the attempt count it replaced");
    let note: String = note.get(1);
    assert!(note.starts_with("manual retry (cli "), "names who: {note}");
}

#[tokio::test]
async fn retry_refuses_rows_that_have_not_failed() {
    let db = TestDb::migrated().await;
    let client = db.client().await;
    for (status, id) in one_of_each(&client).await {
        if status == "failed" {
            continue;
        }
        let out = cli(&db, &format!("queue retry {id} --json")).await;
        assert_eq!(out.code, Some(1), "{status}: {}", out.stderr);
        let expected = match status {
            "sending" => format!("queue row {id} is in flight"),
            "pending" => format!("queue row {id} is pending and due already: nothing to retry"),
            _ => format!(
                "queue row {id} is {status}; only failed or waiting (pending, not yet due) rows can be retried"
            ),
        };
        assert!(out.stderr.contains(&expected), "{status}: {}", out.stderr);
        assert_eq!(status_of(&client, id).await, status, "unchanged");
    }
    assert_eq!(
        db.count("SELECT count(*) FROM webhook_retry_history").await,
        0
    );
}

/// A row waiting out a long retry delay (a `Retry-After` of an hour), or parked with
/// `next_attempt_at = 'infinity'`, goes out now when the operator retries it: its
/// retry count stays, and its history says when it was due.
#[tokio::test]
async fn retry_makes_a_waiting_or_parked_row_due_now() {
    let db = TestDb::migrated().await;
    let client = db.client().await;
    for (due, said) in [
        ("now() + interval '1 hour'", "it was due at 20"),
        ("'infinity'", "it was due never: parked"),
    ] {
        let id: i64 = client
            .query_one(
                &format!(
                    "INSERT INTO webhook_queue (event_type, webhook_url, status, retry_count, next_attempt_at)
                     VALUES ('lead_scraped', 'http://127.0.0.1:9/webhook/lead-scraped', 'pending', 2, {due})
                     RETURNING id"
                ),
                &[],
            )
            .await
            .expect("a waiting row")
            .get(0);
        let out = cli(&db, &format!("queue retry {id}")).await;
        assert_eq!(out.code, Some(0), "{}", out.stderr);
        let row = client
            .query_one(
                "SELECT status, retry_count, next_attempt_at <= now() FROM webhook_queue WHERE id = $1",
                &[&id],
            )
            .await
            .expect("the row");
        assert_eq!(row.get::<_, String>(0), "pending");
        assert_eq!(row.get::<_, i32>(1), 2, "its retry count stays");
        assert!(row.get::<_, bool>(2), "due now");
        let note: String = client
            .query_one(
                "SELECT note FROM webhook_retry_history WHERE webhook_queue_id = $1",
                &[&id],
            )
            .await
            .expect("a history note")
            .get(0);
        assert!(
            note.starts_with("manual retry (cli ") && note.contains(said),
            "{note}"
        );
    }
}

#[tokio::test]
async fn retry_all_failed_narrows_by_event_and_since() {
    let db = TestDb::migrated().await;
    let client = db.client().await;
    let old_lead = Row::new("lead_scraped", "failed")
        .days_old(3)
        .insert(&client)
        .await;
    let new_lead = Row::new("lead_scraped", "failed").insert(&client).await;
    let demo = Row::new("demo_failed", "failed").insert(&client).await;
    let sent = Row::new("lead_scraped", "sent").insert(&client).await;

    let json = cli(
        &db,
        "queue retry --all-failed --event lead_scraped --since 1d --json",
    )
    .await
    .ok()
    .json();
    assert_eq!(json["retried"], serde_json::json!([new_lead]));
    assert_eq!(json["count"], 1);
    assert_eq!(status_of(&client, old_lead).await, "failed");
    assert_eq!(status_of(&client, demo).await, "failed");

    // An absolute time works too.
    let since: String = client
        .query_one(
            "SELECT to_char((now() - interval '5 days') AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let json = cli(
        &db,
        &format!("queue retry --all-failed --since {since} --json"),
    )
    .await
    .ok()
    .json();
    assert_eq!(json["retried"], serde_json::json!([old_lead, demo]));
    assert_eq!(status_of(&client, sent).await, "sent");

    let out = cli(&db, "queue retry --all-failed").await.ok();
    assert_eq!(out.stdout, "no failed rows matched; nothing retried\n");
}

/// The CLI shows every time in UTC, and the console reads a time typed without a zone
/// as UTC; `--since` did what the database server's `TimeZone` said, so the same text
/// selected other rows in each, hours apart.
#[tokio::test]
async fn a_since_time_without_a_zone_is_utc_whatever_the_servers_zone() {
    let db = TestDb::migrated().await;
    let client = db.client().await;
    // Ten hours behind UTC: read in that zone, the time below lies in the future.
    client
        .batch_execute(&format!(
            "ALTER DATABASE \"{}\" SET timezone = 'Pacific/Honolulu'",
            db.name
        ))
        .await
        .expect("set the database's zone");
    let three_hours_old = Row::new("lead_scraped", "failed").insert(&client).await;
    client
        .execute(
            "UPDATE webhook_queue SET created_at = now() - interval '3 hours' WHERE id = $1",
            &[&three_hours_old],
        )
        .await
        .expect("age the row");
    let four_hours_ago: String = client
        .query_one(
            "SELECT to_char((now() - interval '4 hours') AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS')",
            &[],
        )
        .await
        .expect("a time")
        .get(0);

    let json = cli(
        &db,
        &format!("queue retry --all-failed --since {four_hours_ago} --json"),
    )
    .await
    .ok()
    .json();
    assert_eq!(json["retried"], serde_json::json!([three_hours_old]));
}

#[tokio::test]
async fn retry_refuses_bad_flags_with_exit_2_and_changes_nothing() {
    let db = TestDb::migrated().await;
    let client = db.client().await;
    let id = Row::new("lead_scraped", "failed").insert(&client).await;
    for (args, named) in [
        (
            vec!["--all-failed", "--since", "yesterday-ish"],
            "\"yesterday-ish\"",
        ),
        (
            vec!["--all-failed", "--since", "2025-13-45"],
            "\"2025-13-45\"",
        ),
        (
            vec!["--all-failed", "--event", "lead_scrapped"],
            "\"lead_scrapped\"",
        ),
        // An age Postgres cannot count back (it failed as a database error, exit 1).
        (
            vec!["--all-failed", "--since", "4000000000d"],
            "\"4000000000d\"",
        ),
        (vec![], "<ID|--all-failed>"),
        (vec!["7", "--all-failed"], "--all-failed"),
    ] {
        let mut full = vec!["queue", "retry"];
        full.extend(args);
        let out = cli_args(&db, &full).await;
        assert_eq!(out.code, Some(2), "{full:?}: {}", out.stderr);
        assert!(out.stderr.contains(named), "{full:?}: {}", out.stderr);
    }
    assert_eq!(status_of(&client, id).await, "failed");
}

#[tokio::test]
async fn cancel_takes_pending_and_failed_rows_and_refuses_the_rest() {
    let db = TestDb::migrated().await;
    let client = db.client().await;
    for (status, id) in one_of_each(&client).await {
        let out = cli(&db, &format!("queue cancel {id} --json")).await;
        match status {
            "pending" | "failed" => {
                let json = out.ok().json();
                assert_eq!(json["id"], id);
                assert_eq!(json["status"], "cancelled");
                assert_eq!(json["previous_status"], status);
                assert_eq!(status_of(&client, id).await, "cancelled");
                let note: String = client
                    .query_one(
                        "SELECT note FROM webhook_retry_history WHERE webhook_queue_id = $1",
                        &[&id],
                    )
                    .await
                    .unwrap()
                    .get(0);
                assert!(note.starts_with("manual cancel (cli "), "names who: {note}");
            }
            "sending" => {
                assert_eq!(out.code, Some(1));
                assert!(
                    out.stderr
                        .contains(&format!("queue row {id} is in flight (status sending)")),
                    "{}",
                    out.stderr
                );
                assert_eq!(status_of(&client, id).await, "sending");
            }
            _ => {
                assert_eq!(out.code, Some(1));
                assert!(
                    out.stderr.contains(&format!(
                        "queue row {id} is {status}; only pending or failed rows can be cancelled"
                    )),
                    "{}",
                    out.stderr
                );
                assert_eq!(status_of(&client, id).await, status);
            }
        }
    }
    let pending = Row::new("email_sent", "pending").insert(&client).await;
    let out = cli(&db, &format!("queue cancel {pending}")).await.ok();
    assert_eq!(
        out.stdout,
        format!("queue row {pending}: pending -> cancelled\n")
    );
}

/// Old rows in every status, each with a log line and a history entry, plus outbox
/// events: routed and old, routed and new, unrouted and old.
async fn cleanup_fixture(client: &tokio_postgres::Client) -> Vec<(&'static str, i64)> {
    let mut rows = Vec::new();
    for status in ["pending", "sending", "sent", "failed", "cancelled"] {
        let event_id: i64 = client
            .query_one(
                "INSERT INTO webhook_events (event_type, entity_type, entity_id, occurred_at, routed_at)
                 VALUES ('lead_scraped', 'lead', 7, now() - interval '40 days', now() - interval '40 days')
                 RETURNING id",
                &[],
            )
            .await
            .expect("insert event")
            .get(0);
        let id = Row::new("lead_scraped", status)
            .days_old(40)
            .event_id(event_id)
            .insert(client)
            .await;
        rows.push((status, id));
    }
    // A recent sent row stays whatever happens.
    rows.push((
        "recent",
        Row::new("lead_scraped", "sent").insert(client).await,
    ));
    client
        .batch_execute(
            "INSERT INTO webhook_logs (direction, event_type, webhook_queue_id, attempt)
                 SELECT 'outgoing', event_type, id, 1 FROM webhook_queue;
             INSERT INTO webhook_retry_history (webhook_queue_id, attempt, error_message)
                 SELECT id, 1, 'HTTP 500' FROM webhook_queue;
             INSERT INTO webhook_logs (direction, endpoint, created_at) VALUES
                 ('incoming', 'demo-approval', now() - interval '40 days'),
                 ('incoming', 'demo-approval', now());
             INSERT INTO webhook_events (event_type, entity_type, occurred_at, routed_at) VALUES
                 ('lead_scraped', 'lead', now(), now()),
                 ('lead_scraped', 'lead', now() - interval '40 days', NULL);
             INSERT INTO workflow_runs (execution_id, status, updated_at) VALUES
                 ('ended-long-ago', 'success', now() - interval '40 days'),
                 ('silent-long-ago', 'running', now() - interval '40 days'),
                 ('reported-today', 'running', now());",
        )
        .await
        .expect("fixture logs, history, events and workflow runs");
    rows
}

async fn table_counts(db: &TestDb) -> [i64; 5] {
    [
        db.count("SELECT count(*) FROM webhook_queue").await,
        db.count("SELECT count(*) FROM webhook_logs").await,
        db.count("SELECT count(*) FROM webhook_retry_history").await,
        db.count("SELECT count(*) FROM webhook_events").await,
        db.count("SELECT count(*) FROM workflow_runs").await,
    ]
}

#[tokio::test]
async fn cleanup_dry_run_counts_and_deletes_nothing() {
    let db = TestDb::migrated().await;
    let client = db.client().await;
    cleanup_fixture(&client).await;
    let before = table_counts(&db).await;

    let json = cli(&db, "queue cleanup --days 30 --dry-run --json")
        .await
        .ok()
        .json();
    assert_eq!(json["dry_run"], true);
    assert_eq!(json["queue_rows"], 2, "sent + cancelled: {json}");
    assert_eq!(json["logs"], 3, "their two + one old incoming: {json}");
    assert_eq!(json["retry_history"], 2);
    assert_eq!(
        json["events"], 2,
        "the events of the sent and cancelled rows"
    );
    assert_eq!(
        json["workflow_runs"], 2,
        "not reported on for 40 days: {json}"
    );
    assert_eq!(json["statuses"], serde_json::json!(["sent", "cancelled"]));
    assert_eq!(table_counts(&db).await, before);

    let text = cli(&db, "queue cleanup --days 30 --dry-run")
        .await
        .ok()
        .stdout;
    assert!(
        text.starts_with(
            "would remove rows older than 30 days (queue statuses: sent, cancelled):\n"
        ),
        "{text}"
    );
    assert!(text.contains("  queue rows        2\n"), "{text}");
    assert_eq!(table_counts(&db).await, before);
}

#[tokio::test]
async fn cleanup_removes_old_sent_and_cancelled_rows_with_their_logs_and_keeps_failed() {
    let db = TestDb::migrated().await;
    let client = db.client().await;
    let rows = cleanup_fixture(&client).await;

    let text = cli(&db, "queue cleanup --days 30").await.ok().stdout;
    assert!(
        text.starts_with("removed rows older than 30 days"),
        "{text}"
    );
    assert!(text.contains("  queue rows        2\n"), "{text}");
    assert!(text.contains("  logs              3\n"), "{text}");
    assert!(text.contains("  retry history     2\n"), "{text}");
    assert!(text.contains("  outbox events     2\n"), "{text}");
    assert!(text.contains("  workflow runs     2\n"), "{text}");
    let runs: Vec<String> = client
        .query("SELECT execution_id FROM workflow_runs", &[])
        .await
        .expect("runs")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        runs,
        ["reported-today"],
        "runs n8n reported on within 30 days stay"
    );
    for (status, id) in &rows {
        let exists = db
            .count(&format!(
                "SELECT count(*) FROM webhook_queue WHERE id = {id}"
            ))
            .await;
        let logs = db
            .count(&format!(
                "SELECT count(*) FROM webhook_logs WHERE webhook_queue_id = {id}"
            ))
            .await;
        let gone = matches!(*status, "sent" | "cancelled");
        assert_eq!(exists, i64::from(!gone), "{status} row");
        assert_eq!(logs, i64::from(!gone), "{status} row's log");
    }
    // Unrouted and recent events stay, and so do those of rows still waiting.
    assert_eq!(db.count("SELECT count(*) FROM webhook_events").await, 5);
    assert_eq!(
        db.count("SELECT count(*) FROM webhook_logs WHERE direction = 'incoming'")
            .await,
        1
    );

    // Failed rows only with --include-failed; pending and sending never.
    let json = cli(&db, "queue cleanup --days 30 --include-failed --json")
        .await
        .ok()
        .json();
    assert_eq!(json["queue_rows"], 1);
    assert_eq!(json["dry_run"], false);
    let left: Vec<String> = client
        .query("SELECT status FROM webhook_queue ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(left, ["pending", "sending", "sent"]);
}

/// A row of last quarter retried today and delivered a minute ago is history of
/// today: cleanup counts from when a row finished, not from when it was queued.
#[tokio::test]
async fn cleanup_keeps_an_old_row_that_finished_recently_with_its_history() {
    let db = TestDb::migrated().await;
    let client = db.client().await;
    let id = Row::new("lead_scraped", "sent")
        .days_old(90)
        .insert(&client)
        .await;
    client
        .execute(
            "UPDATE webhook_queue SET updated_at = now() - interval '1 minute' WHERE id = $1",
            &[&id],
        )
        .await
        .expect("delivered a minute ago");
    let old = Row::new("lead_scraped", "sent")
        .days_old(90)
        .insert(&client)
        .await;
    let dry = cli(&db, "queue cleanup --days 30 --dry-run --json")
        .await
        .ok()
        .json();
    assert_eq!(dry["queue_rows"], 1, "{dry}");
    cli(&db, "queue cleanup --days 30").await.ok();
    assert_eq!(status_of(&client, id).await, "sent", "kept");
    assert_eq!(
        db.count(&format!(
            "SELECT count(*) FROM webhook_queue WHERE id = {old}"
        ))
        .await,
        0,
        "the row that finished 90 days ago goes"
    );
}

#[tokio::test]
async fn cleanup_deletes_in_bounded_batches() {
    let db = TestDb::migrated().await;
    let client = db.client().await;
    client
        .batch_execute(
            "INSERT INTO webhook_queue (event_type, webhook_url, status, created_at, updated_at)
             SELECT 'lead_scraped', 'http://n8n.test/' || g, 'sent', now() - interval '10 days',
                    now() - interval '10 days'
             FROM generate_series(1, 2500) g;
             INSERT INTO webhook_logs (direction, webhook_queue_id)
             SELECT 'outgoing', id FROM webhook_queue;",
        )
        .await
        .unwrap();
    let json = cli(&db, "queue cleanup --days 1 --json").await.ok().json();
    assert_eq!(json["queue_rows"], 2500);
    assert_eq!(json["logs"], 2500);
    // 1000 + 1000 + 500 queue rows, then one pass each for events, incoming logs and
    // workflow runs.
    assert_eq!(json["batches"], 6, "{json}");
    assert_eq!(table_counts(&db).await, [0, 0, 0, 0, 0]);
}

/// A cleanup whose last part fails (here a trigger refuses to delete incoming logs)
/// after the others removed rows: each batch committed, and the error says what was
/// removed before it, where it said only the error.
#[tokio::test]
async fn a_cleanup_that_fails_part_way_says_what_it_removed_before_the_error() {
    let db = TestDb::migrated().await;
    let client = db.client().await;
    cleanup_fixture(&client).await;
    client
        .batch_execute(
            "CREATE FUNCTION keep_incoming() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN RAISE EXCEPTION 'incoming logs are kept for the audit'; END $$;
             CREATE TRIGGER keep_incoming BEFORE DELETE ON webhook_logs
                 FOR EACH ROW WHEN (OLD.direction = 'incoming') EXECUTE FUNCTION keep_incoming();",
        )
        .await
        .expect("a trigger that refuses");
    let out = cli(&db, "queue cleanup --days 30").await;
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(
        out.stderr.contains(
            "cleanup stopped part way, after removing 2 queue rows, 2 logs, 2 retry history \
             rows, 2 outbox events and 2 workflow runs"
        ) && out.stderr.contains("incoming logs are kept for the audit"),
        "{}",
        out.stderr
    );
    assert_eq!(
        db.count("SELECT count(*) FROM webhook_logs WHERE direction = 'outgoing'")
            .await,
        4,
        "the two removed stay removed"
    );
}

#[tokio::test]
async fn cleanup_without_days_is_bad_usage() {
    let db = TestDb::migrated().await;
    for line in [
        "queue cleanup",
        "queue cleanup --days 0",
        "queue cleanup --days 36501",
    ] {
        let out = cli(&db, line).await;
        assert_eq!(out.code, Some(2), "{line}");
        assert!(out.stderr.contains("--days"), "{line}: {}", out.stderr);
    }
}

#[tokio::test]
async fn cleanup_including_failed_keeps_a_failed_row_that_holds_its_entitys_events() {
    let db = TestDb::migrated().await;
    let client = db.client().await;
    let blocking = Row::new("lead_scraped", "failed")
        .days_old(40)
        .insert(&client)
        .await;
    let plain = Row::new("lead_scraped", "failed")
        .days_old(40)
        .insert(&client)
        .await;
    client
        .execute(
            "UPDATE webhook_queue SET ordering = 'block' WHERE id = $1",
            &[&blocking],
        )
        .await
        .expect("ordered under block");
    let json = cli(&db, "queue cleanup --days 30 --include-failed --json")
        .await
        .ok()
        .json();
    assert_eq!(
        json["queue_rows"], 1,
        "only the row that holds nothing: {json}"
    );
    assert_eq!(
        status_of(&client, blocking).await,
        "failed",
        "still holding"
    );
    assert_eq!(
        db.count(&format!(
            "SELECT count(*) FROM webhook_queue WHERE id = {plain}"
        ))
        .await,
        0
    );
}

#[tokio::test]
async fn emit_records_an_event_through_webhook_emit() {
    let db = TestDb::migrated().await;
    let out = cli_args(
        &db,
        &[
            "emit",
            "lead_scraped",
            "--entity-type",
            "lead",
            "--entity-id",
            "123",
            "--data",
            r#"{"lead_id":123,"business_name":"Acme Inc"}"#,
        ],
    )
    .await
    .ok();
    let id: i64 = out.stdout.trim().parse().expect("emit prints the event id");
    let client = db.client().await;
    let row = client
        .query_one(
            "SELECT event_type, entity_type, entity_id, payload, routed_at IS NULL
             FROM webhook_events WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "lead_scraped");
    assert_eq!(row.get::<_, String>(1), "lead");
    assert_eq!(row.get::<_, i64>(2), 123);
    assert_eq!(row.get::<_, Value>(3)["business_name"], "Acme Inc");
    assert!(row.get::<_, bool>(4), "waits for the router like any event");
}

/// `webhook_emit` takes a NULL entity id (an entity without an integer key, as
/// sql/README says); `emit` required one.
#[tokio::test]
async fn emit_without_an_entity_id_records_an_unordered_event() {
    let db = TestDb::migrated().await;
    let out = cli(&db, "emit workflow_error --entity-type workflow")
        .await
        .ok();
    let id: i64 = out.stdout.trim().parse().expect("the event id");
    let entity: Option<i64> = db
        .client()
        .await
        .query_one("SELECT entity_id FROM webhook_events WHERE id = $1", &[&id])
        .await
        .expect("the event")
        .get(0);
    assert_eq!(entity, None);
}

#[tokio::test]
async fn emit_refuses_unknown_events_and_bad_data_and_records_nothing() {
    let db = TestDb::migrated().await;
    for (line, named) in [
        (
            "emit lead_scrapped --entity-type lead --entity-id 1",
            "\"lead_scrapped\"",
        ),
        (
            "emit lead_scraped --entity-type lead --entity-id 1 --data {not",
            "--data",
        ),
        (
            "emit lead_scraped --entity-type lead --entity-id 1 --data [1]",
            "JSON object",
        ),
        ("emit lead_scraped --entity-type lead --entity-id x", "'x'"),
    ] {
        let out = cli(&db, line).await;
        assert_eq!(out.code, Some(2), "{line}: {}", out.stderr);
        assert!(out.stderr.contains(named), "{line}: {}", out.stderr);
    }
    // An empty or blank entity type (webhook_emit refuses '' itself; a blank one got
    // through), or one of any length (it went into every table the CLI prints).
    let long = "x".repeat(65);
    for blank in ["", "   ", long.as_str()] {
        let out = cli_args(
            &db,
            &[
                "emit",
                "lead_scraped",
                "--entity-type",
                blank,
                "--entity-id",
                "1",
            ],
        )
        .await;
        assert_eq!(out.code, Some(2), "{blank:?}: {}", out.stderr);
        assert!(out.stderr.contains("--entity-type"), "{}", out.stderr);
    }
    // Refused by webhook_emit itself (a NUL character jsonb cannot hold): still the
    // arguments' fault, exit 2.
    let out = cli_args(
        &db,
        &[
            "emit",
            "lead_scraped",
            "--entity-type",
            "lead",
            "--data",
            "{\"a\": \"\\u0000\"}",
        ],
    )
    .await;
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert_eq!(db.count("SELECT count(*) FROM webhook_events").await, 0);
}

/// `check-config --json` on an invalid configuration printed nothing on stdout (the
/// message went to stderr only): a script reading its JSON got empty input.
#[test]
fn check_config_json_says_invalid_in_json_naming_the_key() {
    let out = std::process::Command::new(relay_tests::relay::binary())
        .args(["check-config", "--json"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", "postgres://relay@db.internal/app")
        .env("WEBHOOK_SECRET", "a-secret-that-must-not-show")
        .env("WEBHOOK_MAX_RETRIES", "many")
        .current_dir(std::env::temp_dir())
        .output()
        .expect("run check-config");
    assert_eq!(out.status.code(), Some(2));
    let json: Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(json["valid"], false);
    let error = json["error"].as_str().unwrap_or_default();
    assert!(error.contains("queue.max_retries"), "{json}");
    assert!(!out.stdout.windows(6).any(|w| w == b"a-secr"), "{json}");
}

/// `check-config` in a scratch working directory with a real `config/relay.toml`, a
/// `.env` and the environment: each key's value and the layer (and variable) that set
/// it, secrets redacted.
#[test]
fn check_config_names_the_layer_that_set_each_key() {
    let dir = std::env::temp_dir().join(format!("n8n-relay-check-config-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("config")).expect("scratch dir");
    std::fs::write(
        dir.join("config/relay.toml"),
        "[queue]\nworkers = 7\nbatch_size = 10\n\n[n8n]\nbase_url = \"http://n8n.internal:5678\"\n",
    )
    .expect("toml");
    std::fs::write(
        dir.join(".env"),
        "WEBHOOK_SECRET=dotenv-Secret-77\nRELAY_QUEUE__BATCH_SIZE=55\n\
         N8N_WEBHOOK_SECRET=dotenv-Secret-99\n\
         DATABASE_URL=postgres://relay:dotenv-Pw-88@db.internal:5432/app\n",
    )
    .expect(".env");
    let run = |json: bool| {
        let mut cmd = std::process::Command::new(relay_tests::relay::binary());
        cmd.arg("check-config")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RELAY_QUEUE__BATCH_SIZE", "66")
            .env("WEBHOOK_MAX_RETRIES", "9")
            .current_dir(&dir);
        if json {
            cmd.arg("--json");
        }
        let out = cmd.output().expect("run check-config");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).expect("utf8")
    };

    let json: Value = serde_json::from_str(&run(true)).expect("JSON");
    // "source" is the layer; "variable" names the environment variable when it was one.
    let key = |k: &str| {
        let entry = &json["keys"][k];
        let layer = entry["source"].as_str().unwrap_or_default();
        let source = match entry["variable"].as_str() {
            Some(var) => format!("{layer} ({var})"),
            None => layer.to_string(),
        };
        (entry["value"].clone(), Value::from(source))
    };
    assert_eq!(
        key("queue.workers"),
        (7.into(), "TOML file (config/relay.toml)".into())
    );
    assert_eq!(
        key("queue.batch_size"),
        (66.into(), "environment (RELAY_QUEUE__BATCH_SIZE)".into()),
        "environment beats .env beats the file"
    );
    assert_eq!(
        key("queue.max_retries"),
        (9.into(), "environment (WEBHOOK_MAX_RETRIES)".into())
    );
    assert_eq!(
        key("security.webhook_secret"),
        ("(redacted)".into(), ".env file (.env)".into())
    );
    assert_eq!(
        key("database.url"),
        (
            "postgres://relay:(redacted)@db.internal:5432/app".into(),
            ".env file (.env)".into()
        )
    );
    assert_eq!(key("queue.timeout_seconds"), (30.into(), "default".into()));
    assert_eq!(json["valid"], true);

    let table = run(false);
    std::fs::remove_dir_all(&dir).ok();
    for secret in ["dotenv-Secret-77", "dotenv-Pw-88"] {
        assert!(!table.contains(secret) && !json.to_string().contains(secret));
    }
    let line = |k: &str| {
        table
            .lines()
            .find(|l| l.split_whitespace().next() == Some(k))
            .unwrap_or_else(|| panic!("{k} missing:\n{table}"))
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert!(table.starts_with("key "), "{table}");
    assert_eq!(
        line("queue.workers"),
        "queue.workers 7 TOML file (config/relay.toml)"
    );
    assert_eq!(
        line("queue.batch_size"),
        "queue.batch_size 66 environment (RELAY_QUEUE__BATCH_SIZE)"
    );
    assert_eq!(
        line("n8n.webhook_base_url"),
        "n8n.webhook_base_url \"\" default"
    );
    // The source column lines up.
    let columns: std::collections::BTreeSet<usize> = table
        .lines()
        .filter(|l| l.ends_with(" default"))
        .map(|l| l.len() - "default".len())
        .collect();
    assert_eq!(columns.len(), 1, "{table}");
    assert!(table.ends_with("\nconfiguration is valid\n"));
}

#[tokio::test]
async fn output_into_a_closed_pipe_is_not_an_error() {
    let db = TestDb::migrated().await;
    let client = db.client().await;
    Row::new("lead_scraped", "sent").insert(&client).await;
    // check-config, emit and sign printed with println!, which panics (exit 101).
    for args in [
        &["queue", "list"][..],
        &["check-config"],
        &[
            "emit",
            "lead_scraped",
            "--entity-type",
            "lead",
            "--entity-id",
            "1",
        ],
        &["sign", "--secret", "abc"],
        &["migrate"],
    ] {
        let mut child = std::process::Command::new(relay_tests::relay::binary())
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DATABASE_URL", &db.url)
            .env("WEBHOOK_SECRET", "a-secret-for-check-config")
            .env("N8N_WEBHOOK_SECRET", "another-secret-for-check-config")
            .current_dir(std::env::temp_dir())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn");
        // `n8n-relay ... | head -0`: the reader is gone before the output is written.
        drop(child.stdout.take());
        let out = child.wait_with_output().expect("wait");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

/// Bad filters are bad usage (exit 2, naming them) whether or not the database can be
/// reached: they were checked only after connecting, so with Postgres down each was
/// "could not connect", exit 1. Negative numbers are named as values of their flag
/// (clap said "unexpected argument '-1' found").
#[tokio::test]
async fn bad_filters_are_named_before_the_database_is_asked() {
    for (line, named) in [
        ("queue list --status bogus", "unknown status \"bogus\""),
        ("queue list --event nope", "unknown event type \"nope\""),
        (
            "queue list --limit -1",
            "'--limit <LIMIT>': -1 is not in 1..=10000",
        ),
        ("queue pause --url ftp://x", "--url \"ftp://x\""),
        (
            "queue retry --all-failed --since garbage",
            "--since \"garbage\" is not a time",
        ),
        (
            "queue cleanup --days -1",
            "'--days <DAYS>': -1 is not in 1..=36500",
        ),
    ] {
        let out = RelayBuilder::new("postgres://postgres@127.0.0.1:1/unreachable", NO_N8N)
            .args(line.split_whitespace())
            .output()
            .await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{line}: {stderr}");
        assert!(stderr.contains(named), "{line}: {stderr}");
        assert!(!stderr.contains("could not connect"), "{line}: {stderr}");
    }
}

/// Text from outside printed by the CLI: a pause reason or an entity type of any
/// length made `queue paused` and `queue list` panic (exit 101: a padding width past
/// 65,535), for every operator until the row went; an escape sequence in n8n's answer
/// (kept in last_error) reached the terminal raw.
#[tokio::test]
async fn long_or_hostile_text_in_the_queue_prints_as_text() {
    let db = TestDb::migrated().await;
    let client = db.client().await;
    let long = "a".repeat(70_000);
    let refused = cli_args(
        &db,
        &[
            "queue",
            "pause",
            "--event",
            "demo_failed",
            "--reason",
            &long,
        ],
    )
    .await;
    assert_eq!(refused.code, Some(2), "{}", refused.stderr);
    assert!(
        refused
            .stderr
            .contains("reason: 70000 characters; at most 200"),
        "{}",
        refused.stderr
    );
    let url = format!("http://n8n.test/{long}");
    cli_args(&db, &["queue", "pause", "--url", &url]).await.ok();
    let paused = cli(&db, "queue paused").await.ok().stdout;
    assert!(
        paused.contains("http://n8n.test/aaa") && paused.contains("..."),
        "{paused}"
    );
    client
        .execute(
            "INSERT INTO webhook_queue (event_type, entity_type, entity_id, webhook_url, status,
                 last_error)
             VALUES ('lead_scraped', $1, 1, 'http://n8n.test/hook', 'failed',
                     E'HTTP 404: \\x1b]0;PWNED\\x07\\x1b[31mRED')",
            &[&long],
        )
        .await
        .expect("a row with a long entity type and a hostile error");
    let listed = cli(&db, "queue list").await.ok().stdout;
    assert!(
        !listed.contains('\u{1b}') && !listed.contains('\u{7}'),
        "{listed:?}"
    );
    assert!(listed.contains("\\u001b[31mRED"), "{listed}");
    let id = db.count("SELECT max(id) FROM webhook_queue").await;
    let shown = cli(&db, &format!("queue show {id}")).await.ok().stdout;
    assert!(!shown.contains('\u{1b}'), "{shown:?}");
}
