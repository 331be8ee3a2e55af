//! The operator console of `n8n-relay run` over real HTTP: login, sessions and roles,
//! CSRF, escaping of hostile payloads, filters and pages, actions that go through the
//! queue library and say so in the history. (The same, driven in a real browser:
//! tests/browser/.)

use std::collections::HashMap;
use std::time::Duration;

use relay_tests::{wait_until, Relay, RelayBuilder, Sink, TestDb};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const T: Duration = Duration::from_secs(20);
const OPERATOR: &str = "operator-token-for-the-tests-0123";
const READER: &str = "read-only-token-for-the-tests-0123";

struct Reply {
    status: u16,
    headers: HashMap<String, Vec<String>>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .and_then(|v| v.first())
            .map(String::as_str)
    }
}

/// One request on a fresh connection, addressed as a browser on this machine would.
async fn http(
    addr: &str,
    method: &str,
    path: &str,
    cookie: Option<&str>,
    form: Option<&str>,
) -> Reply {
    http_as(addr, addr, method, path, cookie, form).await
}

/// One request with `host` as its Host header.
async fn http_as(
    host: &str,
    addr: &str,
    method: &str,
    path: &str,
    cookie: Option<&str>,
    form: Option<&str>,
) -> Reply {
    let mut stream = TcpStream::connect(addr)
        .await
        .expect("connect to the console");
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    if let Some(c) = cookie {
        request.push_str(&format!("Cookie: {c}\r\n"));
    }
    if let Some(body) = form {
        request.push_str(&format!(
            "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    request.push_str("\r\n");
    if let Some(body) = form {
        request.push_str(body);
    }
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(15), stream.read_to_end(&mut raw))
        .await
        .expect("answered in time")
        .expect("read");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("a response");
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let mut headers: HashMap<String, Vec<String>> = HashMap::new();
    for line in lines {
        if let Some((k, v)) = line.split_once(':') {
            headers
                .entry(k.trim().to_ascii_lowercase())
                .or_default()
                .push(v.trim().to_string());
        }
    }
    // Chunked bodies: good enough to search in.
    Reply {
        status,
        headers,
        body: body.to_string(),
    }
}

fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// Logs in with `token`: the session cookie pair (`name=value`).
async fn login(addr: &str, token: &str) -> String {
    let r = http(
        addr,
        "POST",
        "/login",
        None,
        Some(&format!("token={}", enc(token))),
    )
    .await;
    assert_eq!(r.status, 303, "{}", r.body);
    let cookie = r
        .header("set-cookie")
        .expect("a session cookie")
        .to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );
    cookie.split(';').next().expect("pair").to_string()
}

/// The CSRF token in a page's forms.
fn csrf(page: &str) -> String {
    let at = page
        .find("name=\"csrf\" value=\"")
        .expect("a form with a CSRF token")
        + 19;
    page[at..at + 64].to_string()
}

async fn console(db: &TestDb, sink: &Sink, extra: &[(&str, &str)]) -> (Relay, String) {
    let mut builder = RelayBuilder::new(&db.url, &sink.url())
        .env("RELAY_CONSOLE__TOKEN", OPERATOR)
        .env("RELAY_CONSOLE__READ_ONLY_TOKEN", READER);
    for (k, v) in extra {
        builder = builder.env(k, v);
    }
    listening(builder).await
}

/// The relay `builder` makes, once its console takes connections, and the console's
/// address.
async fn listening(builder: RelayBuilder) -> (Relay, String) {
    let relay = builder.spawn();
    let addr = relay.builder.console_addr();
    wait_until("the console listens", T, || async {
        TcpStream::connect(&addr).await.ok().map(|_| ())
    })
    .await;
    (relay, addr)
}

/// A failed row whose payload and error are hostile HTML: `(id)`.
async fn hostile_failed_row(db: &TestDb) -> i64 {
    db.client()
        .await
        .query_one(
            "INSERT INTO webhook_queue (webhook_id, event_id, event_type, entity_type, entity_id,
                 webhook_url, payload, status, retry_count, max_retries, last_error)
             VALUES (gen_random_uuid(), (SELECT coalesce(max(event_id), 400000) + 1 FROM webhook_queue), 'lead_scraped', 'lead', 7,
                 'http://127.0.0.1:9/webhook/lead-scraped',
                 jsonb_build_object('business_name', '<script>alert(\"xss\")</script>'),
                 'failed', 3, 3, '<img src=x onerror=alert(1)> HTTP 500')
             RETURNING id",
            &[],
        )
        .await
        .expect("insert a failed row")
        .get(0)
}

#[tokio::test]
async fn without_a_login_every_page_sends_you_to_it_and_a_wrong_token_is_refused_slowly() {
    let db = TestDb::migrated().await;
    let sink = Sink::start().await;
    let (relay, addr) = console(&db, &sink, &[]).await;

    for path in ["/", "/queue", "/row/1", "/callbacks"] {
        let r = http(&addr, "GET", path, None, None).await;
        assert_eq!(
            (r.status, r.header("location")),
            (303, Some("/login")),
            "{path}"
        );
    }
    let r = http(&addr, "POST", "/row/1/retry", None, Some("csrf=x")).await;
    assert_eq!(r.status, 401);
    let r = http(&addr, "GET", "/login", None, None).await;
    assert_eq!(r.status, 200);
    let csp = r.header("content-security-policy").unwrap_or_default();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );

    let started = std::time::Instant::now();
    let r = http(&addr, "POST", "/login", None, Some("token=not-the-token")).await;
    assert_eq!(r.status, 401);
    assert!(r.header("set-cookie").is_none());
    assert!(
        started.elapsed() >= Duration::from_millis(450),
        "a failed login is slowed down"
    );
    wait_until("the failure logged without the token", T, || async {
        relay.log().contains("console login failed").then_some(())
    })
    .await;
    assert!(!relay.log().contains("not-the-token"));
    // A forged session cookie is no session.
    let r = http(&addr, "GET", "/", Some("n8n_relay_console=forged"), None).await;
    assert_eq!(r.status, 303);
}

#[tokio::test]
async fn an_operator_finds_a_failed_row_by_its_error_retries_it_and_the_history_names_the_console()
{
    let db = TestDb::migrated().await;
    let sink = Sink::start().await;
    let (_relay, addr) = console(&db, &sink, &[]).await;
    let id = hostile_failed_row(&db).await;
    let cookie = login(&addr, OPERATOR).await;

    let page = http(
        &addr,
        "GET",
        "/queue?status=failed&q=HTTP+500",
        Some(&cookie),
        None,
    )
    .await;
    assert_eq!(page.status, 200);
    assert!(
        page.body.contains(&format!("href=\"/row/{id}\"")),
        "{}",
        page.body
    );
    assert!(
        !page.body.contains("<img src=x"),
        "the error text is escaped"
    );
    let none = http(
        &addr,
        "GET",
        "/queue?status=failed&q=timed+out",
        Some(&cookie),
        None,
    )
    .await;
    assert!(!none.body.contains(&format!("href=\"/row/{id}\"")));

    let row = http(&addr, "GET", &format!("/row/{id}"), Some(&cookie), None).await;
    assert_eq!(row.status, 200);
    assert!(
        !row.body.contains("<script>alert"),
        "the payload is escaped"
    );
    assert!(row.body.contains("&lt;script&gt;alert"), "{}", row.body);
    let token = csrf(&row.body);

    // Without the CSRF token: refused, nothing changes.
    let r = http(
        &addr,
        "POST",
        &format!("/row/{id}/retry"),
        Some(&cookie),
        Some("x=1"),
    )
    .await;
    assert_eq!(r.status, 403);
    assert_eq!(
        db.count(&format!(
            "SELECT count(*) FROM webhook_queue WHERE id = {id} AND status = 'failed'"
        ))
        .await,
        1
    );

    let r = http(
        &addr,
        "POST",
        &format!("/row/{id}/retry"),
        Some(&cookie),
        Some(&format!("csrf={token}")),
    )
    .await;
    assert_eq!(
        (r.status, r.header("location")),
        (303, Some(format!("/row/{id}?done=retried").as_str()))
    );
    wait_until("the retried row delivered", T, || async {
        (db.count(&format!(
            "SELECT count(*) FROM webhook_queue WHERE id = {id} AND status <> 'failed'"
        ))
        .await
            == 1)
            .then_some(())
    })
    .await;
    let note: String = db
        .client()
        .await
        .query_one(
            "SELECT note FROM webhook_retry_history WHERE webhook_queue_id = $1 AND note LIKE 'manual retry%'",
            &[&id],
        )
        .await
        .expect("a history note")
        .get(0);
    assert!(note.contains("console, operator from 127.0.0.1"), "{note}");
}

/// The pages show a route's URL without its `user:password@`; filtering by the URL
/// as shown matched nothing (rows hold it with the credentials), so the only way was
/// the password in the query string, and a bulk retry by URL counted 0.
#[tokio::test]
async fn a_url_filter_typed_as_shown_finds_the_rows_of_a_route_with_credentials() {
    const ROUTE: &str = "http://n8n-user:s3cret@127.0.0.1:9/webhook/lead-scraped";
    const SHOWN: &str = "http://127.0.0.1:9/webhook/lead-scraped";
    let db = TestDb::migrated().await;
    let sink = Sink::start().await;
    let (_relay, addr) = console(&db, &sink, &[("RELAY_ROUTES__LEAD_SCRAPED__URL", ROUTE)]).await;
    let id = hostile_failed_row(&db).await;
    db.client()
        .await
        .execute(
            "UPDATE webhook_queue SET webhook_url = $2 WHERE id = $1",
            &[&id, &ROUTE],
        )
        .await
        .expect("the route's URL");
    let cookie = login(&addr, OPERATOR).await;
    let page = http(
        &addr,
        "GET",
        &format!("/queue?status=failed&url={}", enc(SHOWN)),
        Some(&cookie),
        None,
    )
    .await;
    assert_eq!(page.status, 200);
    assert!(
        page.body.contains(&format!("href=\"/row/{id}\"")),
        "{}",
        page.body
    );
    assert!(!page.body.contains("s3cret"), "{}", page.body);
    // The bulk retry's confirmation counts it too.
    let csrf = csrf(&page.body);
    let confirm = http(
        &addr,
        "POST",
        "/queue/retry-failed",
        Some(&cookie),
        Some(&format!("csrf={csrf}&url={}", enc(SHOWN))),
    )
    .await;
    assert_eq!(confirm.status, 200, "{}", confirm.body);
    assert!(!confirm.body.contains("s3cret"), "{}", confirm.body);
    assert!(
        confirm.body.contains("id=\"confirm-count\">1<"),
        "counted it: {}",
        confirm.body
    );
}

#[tokio::test]
async fn a_read_only_login_sees_every_page_but_no_action_and_a_forged_post_gets_403() {
    let db = TestDb::migrated().await;
    let sink = Sink::start().await;
    let (_relay, addr) = console(&db, &sink, &[]).await;
    let id = hostile_failed_row(&db).await;
    let cookie = login(&addr, READER).await;

    for path in [
        "/".to_string(),
        "/queue".into(),
        format!("/row/{id}"),
        "/callbacks".into(),
    ] {
        let page = http(&addr, "GET", &path, Some(&cookie), None).await;
        assert_eq!(page.status, 200, "{path}");
        assert!(
            !page.body.contains("/retry\"") && !page.body.contains("/cancel\""),
            "{path}"
        );
        assert!(!page.body.contains("action=\"/pause\""), "{path}");
    }
    // It still has a CSRF token (for logging out): a POST with it is refused by role.
    let page = http(&addr, "GET", "/", Some(&cookie), None).await;
    let token = csrf(&page.body);
    for action in [
        format!("/row/{id}/retry"),
        format!("/row/{id}/cancel"),
        "/pause".into(),
        "/cleanup".into(),
    ] {
        let r = http(
            &addr,
            "POST",
            &action,
            Some(&cookie),
            Some(&format!("csrf={token}&days=1&scope=all")),
        )
        .await;
        assert_eq!(r.status, 403, "{action}");
    }
    assert_eq!(db.count("SELECT count(*) FROM webhook_pauses").await, 0);
    assert_eq!(
        db.count(&format!(
            "SELECT count(*) FROM webhook_queue WHERE id = {id} AND status = 'failed'"
        ))
        .await,
        1
    );
}

#[tokio::test]
async fn the_overview_shows_what_the_database_holds_and_bad_filters_name_their_field() {
    let db = TestDb::migrated().await;
    let sink = Sink::start().await;
    let (_relay, addr) = console(&db, &sink, &[]).await;
    db.client()
        .await
        .execute(
            "SELECT webhook_emit('lead_scraped', 'lead', e, '{}'::jsonb) FROM generate_series(1, 12) e",
            &[],
        )
        .await
        .expect("emit");
    db.wait_for_queue_status("sent", 12, T).await;
    let cookie = login(&addr, OPERATOR).await;
    let page = wait_until("the overview counts 12 sent", T, || async {
        let page = http(&addr, "GET", "/", Some(&cookie), None).await;
        page.body.contains("id=\"count-sent\">12<").then_some(page)
    })
    .await;
    assert!(page.body.contains("<svg"), "the chart");
    assert!(page.body.contains("id=\"count-failed\">0<"));
    assert!(page.body.contains("lead_scraped"));

    for (query, field) in [
        ("status=lost", "status"),
        ("event=lead_scrapped", "event"),
        ("entity_id=seven", "entity_id"),
        ("since=yesterday", "since"),
        ("sort=random", "sort"),
        ("after=12", "after"),
    ] {
        let r = http(
            &addr,
            "GET",
            &format!("/queue?{query}"),
            Some(&cookie),
            None,
        )
        .await;
        assert_eq!(r.status, 400, "{query}");
        assert!(r.body.contains(&format!("{field}:")), "{query}: {}", r.body);
    }
    let r = http(&addr, "GET", "/row/987654", Some(&cookie), None).await;
    assert_eq!(r.status, 404);

    // A relay (every session holding its marker) is listed.
    assert!(
        !page.body.contains("id=\"no-relay\"") && page.body.contains("<th>sessions</th>"),
        "{}",
        page.body
    );

    // Pages of 50 by key: 120 rows of mixed priority, followed page by page, come
    // each once and in the order asked for.
    let client = db.client().await;
    client
        .execute(
            "SELECT webhook_emit('lead_scraped', 'lead', e, '{}'::jsonb) FROM generate_series(13, 120) e",
            &[],
        )
        .await
        .expect("emit");
    db.wait_for_queue_status("sent", 120, T).await;
    client
        .execute("UPDATE webhook_queue SET priority = id % 3", &[])
        .await
        .expect("mixed priorities");
    for (sort, order) in [("time", "id DESC"), ("priority", "priority DESC, id DESC")] {
        let expected: Vec<i64> = client
            .query(
                &format!("SELECT id FROM webhook_queue ORDER BY {order}"),
                &[],
            )
            .await
            .expect("ids")
            .iter()
            .map(|r| r.get(0))
            .collect();
        let mut seen = Vec::new();
        let mut next = Some(format!("/queue?sort={sort}"));
        let mut pages = 0;
        while let Some(path) = next.take() {
            let r = http(&addr, "GET", &path, Some(&cookie), None).await;
            assert_eq!(r.status, 200, "{path}");
            pages += 1;
            seen.extend(r.body.split("href=\"/row/").skip(1).map(|rest| {
                rest[..rest.find('"').expect("end of link")]
                    .parse::<i64>()
                    .expect("a row id")
            }));
            next = r
                .body
                .split_once("class=\"next\" href=\"")
                .map(|(_, rest)| {
                    rest[..rest.find('"').expect("end of link")].replace("&amp;", "&")
                });
        }
        assert_eq!(seen, expected, "sort={sort}");
        assert_eq!(pages, 3, "sort={sort}: 50 + 50 + 20");
    }
    let r = http(&addr, "GET", "/queue?after=0:1", Some(&cookie), None).await;
    assert!(r.body.contains("No row matches."));
}

#[tokio::test]
async fn retry_all_failed_asks_with_a_count_first_and_cleanup_runs_dry() {
    let db = TestDb::migrated().await;
    let sink = Sink::start().await;
    let (_relay, addr) = console(&db, &sink, &[("RELAY_QUEUE__ENABLED", "false")]).await;
    for _ in 0..3 {
        hostile_failed_row(&db).await;
    }
    let cookie = login(&addr, OPERATOR).await;
    let page = http(&addr, "GET", "/queue?status=failed", Some(&cookie), None).await;
    let token = csrf(&page.body);

    // Ids are per table: video 7 is not lead 7, and a filter naming the type keeps it
    // out of the page and out of a bulk retry (the entity id alone took both).
    db.client()
        .await
        .execute(
            "UPDATE webhook_queue SET entity_type = 'video' WHERE id = (SELECT min(id) FROM webhook_queue)",
            &[],
        )
        .await
        .expect("one row about video 7");
    let leads = http(
        &addr,
        "GET",
        "/queue?status=failed&entity_type=lead&entity_id=7",
        Some(&cookie),
        None,
    )
    .await;
    assert_eq!(
        leads.body.matches("href=\"/row/").count(),
        2,
        "{}",
        leads.body
    );
    let ask = http(
        &addr,
        "POST",
        "/queue/retry-failed",
        Some(&cookie),
        Some(&format!(
            "csrf={token}&status=failed&entity_type=lead&entity_id=7"
        )),
    )
    .await;
    assert!(ask.body.contains("id=\"confirm-count\">2<"), "{}", ask.body);

    let ask = http(
        &addr,
        "POST",
        "/queue/retry-failed",
        Some(&cookie),
        Some(&format!("csrf={token}&status=failed")),
    )
    .await;
    assert_eq!(ask.status, 200);
    assert!(ask.body.contains("id=\"confirm-count\">3<"), "{}", ask.body);
    // The question names the filter it will act on, as applied.
    assert!(
        ask.body
            .contains("<ul id=\"confirm-filter\"><li>status = failed</li></ul>"),
        "{}",
        ask.body
    );
    assert_eq!(
        db.count("SELECT count(*) FROM webhook_queue WHERE status = 'failed'")
            .await,
        3,
        "asked, not done"
    );

    // The confirmation carries its count's time: a row that fails while the operator
    // decides is not retried with the three that were counted.
    let failed_by = ask
        .body
        .split("name=\"failed_by\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_default()
        .to_string();
    assert!(failed_by.parse::<u64>().is_ok(), "{}", ask.body);
    let unconfirmed = http(
        &addr,
        "POST",
        "/queue/retry-failed",
        Some(&cookie),
        Some(&format!("csrf={token}&status=failed&confirm=yes")),
    )
    .await;
    assert_eq!(unconfirmed.status, 400, "a confirmation without its time");
    hostile_failed_row(&db).await;
    let done = http(
        &addr,
        "POST",
        "/queue/retry-failed",
        Some(&cookie),
        Some(&format!(
            "csrf={token}&status=failed&confirm=yes&failed_by={failed_by}"
        )),
    )
    .await;
    assert_eq!(done.status, 303);
    assert_eq!(
        db.count("SELECT count(*) FROM webhook_queue WHERE status = 'pending'")
            .await,
        3
    );
    assert_eq!(
        db.count("SELECT count(*) FROM webhook_queue WHERE status = 'failed'")
            .await,
        1,
        "the row that failed after the count is left for another decision"
    );
    // Back to the list under the same filter (it dropped all but the status).
    let narrowed = http(
        &addr,
        "POST",
        "/queue/retry-failed",
        Some(&cookie),
        Some(&format!(
            "csrf={token}&status=failed&q=no-such-error&confirm=yes&failed_by={failed_by}"
        )),
    )
    .await;
    assert_eq!(narrowed.status, 303);
    assert_eq!(
        narrowed.header("location"),
        Some("/queue?status=failed&q=no-such-error&done=bulk-retried-0")
    );

    let dry = http(
        &addr,
        "POST",
        "/cleanup",
        Some(&cookie),
        Some(&format!("csrf={token}&days=1&dry_run=1")),
    )
    .await;
    assert_eq!(dry.status, 200);
    assert!(
        dry.body
            .contains("would delete 0 queue rows, 0 logs, 0 retry history rows")
            && !dry.body.contains("dry_run"),
        "said in words, not as JSON: {}",
        dry.body
    );
    let bad = http(
        &addr,
        "POST",
        "/cleanup",
        Some(&cookie),
        Some(&format!("csrf={token}&days=zero")),
    )
    .await;
    assert_eq!(bad.status, 400);
    assert!(bad.body.contains("days:"));

    // Pause and resume from the overview go through the same table as the CLI.
    let r = http(
        &addr,
        "POST",
        "/pause",
        Some(&cookie),
        Some(&format!(
            "csrf={token}&scope=event:lead_scraped&reason=maintenance&do=pause"
        )),
    )
    .await;
    assert_eq!(r.status, 303);
    let by: String = db
        .client()
        .await
        .query_one(
            "SELECT paused_by || ' / ' || reason FROM webhook_pauses",
            &[],
        )
        .await
        .expect("paused")
        .get(0);
    assert!(
        by.starts_with("console, operator from ") && by.ends_with("maintenance"),
        "{by}"
    );
    // The overview it leads to shows the pause at once, not the sample from before it.
    let location = r.header("location").unwrap_or_default().to_string();
    assert_eq!(location, "/?done=paused&scope=event%3Alead_scraped");
    let after = http(&addr, "GET", &location, Some(&cookie), None).await;
    // The notice names what was paused (it said "Paused." whatever it was).
    assert!(
        after.body.contains("Paused event lead_scraped.") && after.body.contains("maintenance"),
        "{}",
        after.body
    );
    // A scope the console does not know is not echoed.
    let forged = http(
        &addr,
        "GET",
        "/?done=paused&scope=event%3A%3Cb%3Eyou%20were%20hacked",
        Some(&cookie),
        None,
    )
    .await;
    assert!(
        forged.body.contains("Paused.") && !forged.body.contains("hacked"),
        "{}",
        forged.body
    );
    assert!(!after.body.contains("Nothing is paused."), "{}", after.body);
    let r = http(
        &addr,
        "POST",
        "/pause",
        Some(&cookie),
        Some(&format!("csrf={token}&scope=event:lead_scraped&do=resume")),
    )
    .await;
    assert_eq!(r.status, 303);
    assert_eq!(db.count("SELECT count(*) FROM webhook_pauses").await, 0);
    // A URL is offered by its position among the routes' URLs, never by its text.
    let overview = http(&addr, "GET", "/", Some(&cookie), None).await;
    assert!(
        overview.body.contains("value=\"url:0\""),
        "{}",
        overview.body
    );
    let r = http(
        &addr,
        "POST",
        "/pause",
        Some(&cookie),
        Some(&format!("csrf={token}&scope=url:0&do=pause")),
    )
    .await;
    assert_eq!(r.status, 303);
    assert_eq!(
        db.count("SELECT count(*) FROM webhook_pauses WHERE scope = 'url' AND target LIKE 'http%'")
            .await,
        1
    );
    let r = http(
        &addr,
        "POST",
        "/pause",
        Some(&cookie),
        Some(&format!("csrf={token}&scope=url:0&do=resume")),
    )
    .await;
    assert_eq!(r.status, 303);
    let resumed = http(
        &addr,
        "GET",
        r.header("location").unwrap_or_default(),
        Some(&cookie),
        None,
    )
    .await;
    assert!(
        resumed.body.contains("Resumed URL http"),
        "{}",
        resumed.body
    );
    // The form starts on no scope: a click on Pause alone stopped every delivery.
    assert!(
        overview
            .body
            .contains("<select name=\"scope\" required><option value=\"\" disabled selected>"),
        "{}",
        overview.body
    );
    // Resuming "all" lifts that pause alone, and says so: "Resumed every delivery."
    // stood beside an event's pause still holding its rows.
    for (scope, action) in [
        ("all", "pause"),
        ("event:lead_scraped", "pause"),
        ("all", "resume"),
    ] {
        let r = http(
            &addr,
            "POST",
            "/pause",
            Some(&cookie),
            Some(&format!("csrf={token}&scope={}&do={action}", enc(scope))),
        )
        .await;
        assert_eq!(r.status, 303, "{scope} {action}: {}", r.body);
        if action == "resume" {
            let page = http(
                &addr,
                "GET",
                r.header("location").unwrap_or_default(),
                Some(&cookie),
                None,
            )
            .await;
            assert!(
                page.body.contains(
                    "Lifted the pause of every delivery; pauses of an event or a URL stay"
                ),
                "{}",
                page.body
            );
        }
    }
    assert_eq!(
        db.count("SELECT count(*) FROM webhook_pauses WHERE scope = 'event'")
            .await,
        1,
        "the event's pause stays"
    );
    let r = http(
        &addr,
        "POST",
        "/pause",
        Some(&cookie),
        Some(&format!("csrf={token}&scope=event:lead_scraped&do=resume")),
    )
    .await;
    assert_eq!(r.status, 303);
    for scope in ["url:99", "url:x", "url:http://elsewhere/", "nonsense", ""] {
        let r = http(
            &addr,
            "POST",
            "/pause",
            Some(&cookie),
            Some(&format!("csrf={token}&scope={}&do=pause", enc(scope))),
        )
        .await;
        assert_eq!(r.status, 400, "{scope}");
        assert!(
            r.body.contains("not one of this console") && !r.body.contains("--event"),
            "{scope}: names the console's scopes, not the CLI's flags: {}",
            r.body
        );
    }
    // An action other than pause or resume is refused, and pauses nothing.
    for action in ["do=frobnicate", "do=", ""] {
        let r = http(
            &addr,
            "POST",
            "/pause",
            Some(&cookie),
            Some(&format!("csrf={token}&scope=event:lead_scraped&{action}")),
        )
        .await;
        assert_eq!(r.status, 400, "{action}: {}", r.body);
    }
    assert_eq!(db.count("SELECT count(*) FROM webhook_pauses").await, 0);
    let r = http(
        &addr,
        "POST",
        "/logout",
        Some(&cookie),
        Some(&format!("csrf={token}")),
    )
    .await;
    assert_eq!(r.status, 303);
    let r = http(&addr, "GET", "/", Some(&cookie), None).await;
    assert_eq!(r.status, 303, "logged out");
}

#[tokio::test]
async fn a_console_on_a_public_address_without_a_token_refuses_to_start() {
    let db = TestDb::migrated().await;
    let sink = Sink::start().await;
    for (env, named) in [
        (
            vec![("RELAY_CONSOLE__LISTEN", "0.0.0.0:0")],
            "console.token",
        ),
        (vec![("RELAY_CONSOLE__TOKEN", "short")], "console.token"),
        (
            vec![("RELAY_CONSOLE__READ_ONLY_TOKEN", READER)],
            "console.read_only_token",
        ),
    ] {
        let mut builder = RelayBuilder::new(&db.url, &sink.url());
        for (k, v) in &env {
            builder = builder.env(k, v);
        }
        let out = builder.output().await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{env:?}: {stderr}");
        assert!(stderr.contains(named), "{env:?}: {stderr}");
    }
    // `n8n-relay console` serves whatever console.enabled says: checked all the same.
    let out = RelayBuilder::new(&db.url, &sink.url())
        .env("RELAY_CONSOLE__ENABLED", "false")
        .env("RELAY_CONSOLE__LISTEN", "0.0.0.0:0")
        .args(["console"])
        .output()
        .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("console.token"), "{stderr}");
}

#[tokio::test]
async fn on_loopback_without_a_token_there_is_no_login_but_forms_still_need_their_csrf_token() {
    let db = TestDb::migrated().await;
    let sink = Sink::start().await;
    let relay = RelayBuilder::new(&db.url, &sink.url()).spawn();
    let addr = relay.builder.console_addr();
    let page = wait_until("the console answers", T, || async {
        let stream = TcpStream::connect(&addr).await.ok()?;
        drop(stream);
        Some(http(&addr, "GET", "/", None, None).await)
    })
    .await;
    assert_eq!(page.status, 200);
    let cookie = page
        .header("set-cookie")
        .expect("a session")
        .split(';')
        .next()
        .expect("pair")
        .to_string();
    let id = hostile_failed_row(&db).await;
    let r = http(
        &addr,
        "POST",
        &format!("/row/{id}/cancel"),
        Some(&cookie),
        Some("csrf=guess"),
    )
    .await;
    assert_eq!(r.status, 403, "a cross-site form cannot act");
    let token = csrf(&page.body);
    let r = http(
        &addr,
        "POST",
        &format!("/row/{id}/cancel"),
        Some(&cookie),
        Some(&format!("csrf={token}")),
    )
    .await;
    assert_eq!(r.status, 303);
    assert!(relay.log().contains("without console.token"));

    // A page that reached it by another name (DNS rebinding) or a proxy gets nothing.
    let rebound = http_as("evil.example:9188", &addr, "GET", "/", None, None).await;
    assert_eq!(rebound.status, 403);
    assert!(rebound.header("set-cookie").is_none() && !rebound.body.contains("name=\"csrf\""));
    // nginx's plain proxy_pass: the console's own address as Host, no forwarding
    // header, but HTTP/1.0, which no browser speaks.
    let proxied = raw(
        &addr,
        &format!("GET / HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n"),
    )
    .await;
    assert!(
        proxied.starts_with("HTTP/1.0 403") || proxied.starts_with("HTTP/1.1 403"),
        "{proxied}"
    );
    assert!(
        !proxied.to_ascii_lowercase().contains("set-cookie"),
        "{proxied}"
    );
    // Another site's page asking from the operator's browser gets no session either;
    // a link followed from it opens the console.
    let fetched = raw(
        &addr,
        &format!(
            "GET /queue HTTP/1.1\r\nHost: {addr}\r\nSec-Fetch-Site: cross-site\r\n\
             Sec-Fetch-Mode: no-cors\r\nConnection: close\r\n\r\n"
        ),
    )
    .await;
    assert!(fetched.starts_with("HTTP/1.1 403"), "{fetched}");
    assert!(
        !fetched.to_ascii_lowercase().contains("set-cookie"),
        "{fetched}"
    );
    let followed = raw(
        &addr,
        &format!(
            "GET / HTTP/1.1\r\nHost: {addr}\r\nSec-Fetch-Site: cross-site\r\n\
             Sec-Fetch-Mode: navigate\r\nConnection: close\r\n\r\n"
        ),
    )
    .await;
    assert!(followed.starts_with("HTTP/1.1 200"), "{followed}");
}

/// Sends `request` as written on a fresh connection; the whole answer.
async fn raw(addr: &str, request: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(15), stream.read_to_end(&mut answer))
        .await
        .expect("answered in time")
        .expect("read");
    String::from_utf8_lossy(&answer).into_owned()
}

/// A connection that sends nothing was let hold one of the console's 64 places for
/// five minutes (telling HTTP/1 from HTTP/2 waited for its first bytes without a
/// timeout), so 64 of them shut everyone out.
#[tokio::test]
async fn connections_that_send_nothing_are_cut_off_and_cannot_shut_the_console() {
    let db = TestDb::migrated().await;
    let sink = Sink::start().await;
    let (_relay, addr) = console(&db, &sink, &[]).await;
    let mut silent = Vec::new();
    for _ in 0..64 {
        silent.push(TcpStream::connect(&addr).await.expect("connect"));
    }
    // Each is closed by the header timeout (10 s), which frees its place.
    for mut stream in silent {
        let mut rest = Vec::new();
        tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut rest))
            .await
            .expect("a silent connection is closed within the header timeout")
            .ok();
    }
    let page = http(&addr, "GET", "/login", None, None).await;
    assert_eq!(page.status, 200);
}

/// A form body sent a byte at a time was bounded only by the connection's five
/// minutes, so 64 such logins (no token needed) kept every operator out that long.
/// The body gets 10 s, then a 408, and the place is free again.
#[tokio::test]
async fn a_form_that_trickles_in_gets_408_and_frees_its_place() {
    let db = TestDb::migrated().await;
    let sink = Sink::start().await;
    let (_relay, addr) = console(&db, &sink, &[]).await;
    let mut stream = TcpStream::connect(&addr).await.expect("connect");
    stream
        .write_all(
            format!(
                "POST /login HTTP/1.1\r\nHost: {addr}\r\nContent-Type: \
                 application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\nt"
            )
            .as_bytes(),
        )
        .await
        .expect("send the headers and one byte");
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut answer))
        .await
        .expect("answered within the body timeout, not the connection's five minutes")
        .ok();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
}

#[tokio::test]
async fn n8n_relay_console_serves_the_console_alone() {
    let db = TestDb::migrated().await;
    let sink = Sink::start().await;
    let relay = RelayBuilder::new(&db.url, &sink.url())
        .env("RELAY_CONSOLE__TOKEN", OPERATOR)
        .args(["console"])
        .spawn();
    let addr = relay.builder.console_addr();
    let login_page = wait_until("the console alone answers", T, || async {
        TcpStream::connect(&addr).await.ok()?;
        Some(http(&addr, "GET", "/login", None, None).await)
    })
    .await;
    assert_eq!(login_page.status, 200);
    let cookie = login(&addr, OPERATOR).await;
    let page = http(&addr, "GET", "/queue", Some(&cookie), None).await;
    assert_eq!(page.status, 200);
    // Alone: no delivery, no LISTEN connection of its own, no relay to list.
    assert_eq!(db.listener_pid().await, None);
    wait_until("the overview says no relay listens", T, || async {
        let overview = http(&addr, "GET", "/", Some(&cookie), None).await;
        overview.body.contains("id=\"no-relay\"").then_some(())
    })
    .await;

    // An ordered row's page says what holds it, as the relay's own gate sees it:
    // lead 5's second event waits for its first (failed under block); lead 6's
    // queued event waits for an earlier one still in the outbox.
    let client = db.client().await;
    let ids: Vec<i64> = client
        .query(
            "INSERT INTO webhook_queue (event_id, event_type, entity_type, entity_id,
                 webhook_url, payload, status, ordering)
             VALUES (101, 'lead_scraped', 'lead', 5, 'http://127.0.0.1:9/a', '{}', 'failed', 'block'),
                    (102, 'lead_qualified', 'lead', 5, 'http://127.0.0.1:9/a', '{}', 'pending', 'block'),
                    (900000, 'lead_qualified', 'lead', 6, 'http://127.0.0.1:9/b', '{}', 'pending', 'skip'),
                    (103, 'lead_scraped', 'lead', 7, 'http://127.0.0.1:9/a', '{}', 'pending', 'skip')
             RETURNING id",
            &[],
        )
        .await
        .expect("ordered rows")
        .iter()
        .map(|r| r.get(0))
        .collect();
    client
        .execute(
            "INSERT INTO webhook_events (event_type, entity_type, entity_id) VALUES ('lead_scraped', 'lead', 6)",
            &[],
        )
        .await
        .expect("an unrouted event");
    let page = |id: i64| {
        let cookie = cookie.clone();
        let addr = addr.clone();
        async move {
            http(&addr, "GET", &format!("/row/{id}"), Some(&cookie), None)
                .await
                .body
        }
    };
    let second = page(ids[1]).await;
    assert!(
        second.contains(&format!("waits for <a href=\"/row/{}\">", ids[0])),
        "{second}"
    );
    let behind = page(ids[2]).await;
    assert!(behind.contains("still in the outbox"), "{behind}");
    // The overview counts the outbox: with no relay routing, that is the backlog.
    wait_until("the overview counts the unrouted event", T, || async {
        let overview = http(&addr, "GET", "/", Some(&cookie), None).await;
        overview.body.contains("id=\"outbox\">1<").then_some(())
    })
    .await;
    let free = page(ids[3]).await;
    assert!(
        free.contains("entity (on_failure = skip)") && !free.contains("waits for"),
        "{free}"
    );
}

/// A log row's id is drawn at its INSERT and seen at its COMMIT: with two outcome
/// writers per relay (and several relays), a delivery's row can commit after a higher
/// one the overview has already counted. It still counts.
#[tokio::test]
async fn a_delivery_logged_after_a_later_one_was_counted_is_still_counted() {
    let db = TestDb::migrated().await;
    let sink = Sink::start().await;
    let (_relay, addr) = listening(
        RelayBuilder::new(&db.url, &sink.url())
            .env("RELAY_CONSOLE__TOKEN", OPERATOR)
            .args(["console"]),
    )
    .await;
    let cookie = login(&addr, OPERATOR).await;
    const LOG: &str =
        "INSERT INTO webhook_logs (direction, event_type, webhook_url, response_status, outcome)
        VALUES ('outgoing', $1, 'http://n8n.test/webhook/a', 200, 'sent')";
    let late = db.client().await;
    late.batch_execute("BEGIN").await.expect("begin");
    late.execute(LOG, &[&"lead_responded"])
        .await
        .expect("the lower id, not committed yet");
    db.client()
        .await
        .execute(LOG, &[&"lead_qualified"])
        .await
        .expect("the higher id, committed");
    let counts = |event: &'static str| {
        let (addr, cookie) = (addr.clone(), cookie.clone());
        async move {
            let page = http(&addr, "GET", "/", Some(&cookie), None).await;
            page.body
                .contains(&format!("{event}</td><td>1<"))
                .then_some(())
        }
    };
    wait_until("the overview counts the row committed first", T, || {
        counts("lead_qualified")
    })
    .await;
    late.batch_execute("COMMIT").await.expect("commit");
    wait_until("the overview counts the row committed last", T, || {
        counts("lead_responded")
    })
    .await;
}
