//! Scenario 8, the operator console at a large queue: with a million rows in
//! `webhook_queue` (20,000 with `--quick`), how long the console takes to answer its
//! overview (from the one sampler's numbers, so it should not grow with the queue),
//! the first page of failed rows, a page deep in the queue (by key), and the two
//! kinds of page no index serves (priority order, a rare filter). Times are
//! from the request's first byte to the last byte of the answer, on a fresh connection,
//! medians of 20.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::bench::Bench;
use crate::report::{fmt_num, Figure, Report, Target};
use crate::stats::{median, percentile};

pub const NAME: &str = "8 console at a large queue";
const TARGET_MS: f64 = 200.0;
const SAMPLES: usize = 20;
/// Rows per fill statement.
const CHUNK: i64 = 100_000;

/// Delivered history with some failed and cancelled rows, none the relay would send.
const FILL: &str = "INSERT INTO webhook_queue (webhook_id, event_id, event_type, entity_type,
        entity_id, webhook_url, payload, status, retry_count, max_retries, last_error,
        sent_at, created_at)
    SELECT md5('console-bench-' || g)::uuid, 10000000 + g, 'lead_scraped', 'lead', g,
           'http://127.0.0.1:9/webhook/lead-scraped', jsonb_build_object('lead_id', g),
           CASE WHEN g % 20 = 0 THEN 'failed' WHEN g % 50 = 1 THEN 'cancelled' ELSE 'sent' END,
           0, 3, CASE WHEN g % 20 = 0 THEN 'HTTP 500' END, now(),
           now() - make_interval(secs => ($2::int8 - g) / 100.0)
    FROM generate_series($1::int8 + 1, $1::int8 + $3::int8) g";

pub async fn run(bench: &mut Bench<'_>, report: &mut Report) -> Result<()> {
    let rows: i64 = if bench.sizes.quick { 20_000 } else { 1_000_000 };
    bench.stop_relay().await;
    let client = bench.db.client().await?;
    let mut done = 0;
    while done < rows {
        let n = CHUNK.min(rows - done);
        client
            .execute(FILL, &[&done, &rows, &n])
            .await
            .context("filling the queue")?;
        done += n;
    }
    client.batch_execute("VACUUM ANALYZE webhook_queue").await?;
    let addr = bench
        .spec
        .env
        .get("RELAY_CONSOLE__LISTEN")
        .cloned()
        .context("the console's address")?;
    bench.relay().await?;
    let failed = rows / 20;
    // Until the sampler has counted the queue once.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (_, body) = get(&addr, "/").await?;
        if body.contains(&format!("id=\"count-failed\">{failed}<")) {
            break;
        }
        if Instant::now() > deadline {
            bail!("the console never showed {failed} failed rows");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The cursor is a queue row id (`priority:id`): the row halfway down, newest first.
    let halfway: i64 = client
        .query_one(
            "SELECT id FROM webhook_queue ORDER BY id DESC OFFSET $1 LIMIT 1",
            &[&(rows / 2)],
        )
        .await?
        .get(0);
    let deep_cursor = format!("/queue?after=0:{halfway}");
    let mut details = serde_json::Map::new();
    for (label, path, target) in [
        ("overview", "/", Some(TARGET_MS)),
        ("first page of failed rows", "/queue?status=failed", None),
        ("a page halfway down the queue", deep_cursor.as_str(), None),
        // No index serves these (each would cost every delivered event a write):
        // what they cost is shown, not hidden.
        ("first page by priority", "/queue?sort=priority", None),
        (
            "one entity's rows (a rare filter)",
            "/queue?entity_id=7",
            None,
        ),
    ] {
        let mut ms = Vec::with_capacity(SAMPLES);
        for _ in 0..SAMPLES {
            let started = Instant::now();
            let (status, _) = get(&addr, path).await?;
            ms.push(started.elapsed().as_secs_f64() * 1000.0);
            if status != 200 {
                bail!("GET {path}: {status}");
            }
        }
        let mid = median(&ms);
        let mut sorted = ms.clone();
        sorted.sort_by(f64::total_cmp);
        let mut figure = Figure::new(
            NAME,
            format!(
                "{label} at {} queue rows, median of {SAMPLES}",
                fmt_num(rows as f64)
            ),
            mid,
            "ms",
        );
        if let Some(t) = target {
            figure = figure.target(Target::value_at_most(t));
        }
        report.figures.push(figure);
        details.insert(
            label.into(),
            json!({ "median_ms": mid, "p90_ms": percentile(&sorted, 90.0), "samples_ms": ms }),
        );
    }
    details.insert("rows".into(), json!(rows));
    report
        .details
        .insert(NAME.into(), serde_json::Value::Object(details));
    Ok(())
}

/// One GET on a fresh connection: status and body.
async fn get(addr: &str, path: &str) -> Result<(u16, String)> {
    let mut stream = TcpStream::connect(addr)
        .await
        .context("connecting to the console")?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut raw))
        .await
        .context("the console did not answer within 30 s")??;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no status line")?;
    Ok((status, text))
}
