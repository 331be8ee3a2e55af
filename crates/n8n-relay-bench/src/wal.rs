//! WAL records per event by kind: `pg_waldump --stats=record` over the drain's LSN range,
//! divided by the events. It tells which writes the bytes of "WAL per event" are (the
//! queue row's insert, its rewrite, each index entry), which the total alone cannot.
//!
//! It reads the server's `pg_wal` directory, so it works only where the benchmark runs
//! on the database's host with the right to read it (as root or `postgres`); anywhere
//! else the drain says why on stderr and goes on without it. Segments a checkpoint has
//! recycled since the drain began cannot be read either (`wal_keep_size` keeps them).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

const FLUSHED_TO: &str = "SELECT pg_current_wal_flush_lsn() >= $1::text::pg_lsn";
const SERVER: &str = "SELECT current_setting('data_directory'),
    current_setting('server_version_num')::int / 10000";

/// One kind of WAL record, per event.
#[derive(Debug, Clone, PartialEq)]
pub struct Kind {
    pub name: String,
    pub records: f64,
    /// Record and full-page-image bytes together.
    pub bytes: f64,
}

/// The kinds of records between `from` and `to`, per event, most bytes first.
pub async fn per_event(
    client: &tokio_postgres::Client,
    from: &str,
    to: &str,
    events: u64,
) -> Result<Vec<Kind>> {
    let row = client.query_one(SERVER, &[]).await?;
    let (data_dir, major): (String, i32) = (row.try_get(0)?, row.try_get(1)?);
    let waldump = find_waldump(major)?;
    // The range ends where the last record was inserted; pg_waldump reads files, so
    // wait until the server has written that far (asynchronous commits leave it to
    // the WAL writer, a fraction of a second later).
    let deadline = Instant::now() + Duration::from_secs(10);
    while !client
        .query_one(FLUSHED_TO, &[&to])
        .await?
        .try_get::<_, bool>(0)?
    {
        if Instant::now() > deadline {
            bail!("the server had not flushed its WAL to {to} after 10 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let output = tokio::process::Command::new(&waldump)
        .arg("-p")
        .arg(Path::new(&data_dir).join("pg_wal"))
        .args(["--stats=record", "--start", from, "--end", to])
        .output()
        .await
        .with_context(|| format!("running {}", waldump.display()))?;
    if !output.status.success() {
        bail!(
            "{} failed: {}",
            waldump.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(parse(&String::from_utf8_lossy(&output.stdout), events))
}

/// `pg_waldump` of the server's major version (Debian keeps each under
/// /usr/lib/postgresql/N/bin, off PATH), else the one on PATH.
fn find_waldump(major: i32) -> Result<PathBuf> {
    let debian = PathBuf::from(format!("/usr/lib/postgresql/{major}/bin/pg_waldump"));
    if debian.is_file() {
        return Ok(debian);
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("pg_waldump"))
        .find(|p| p.is_file())
        .with_context(|| format!("no pg_waldump at {} or on PATH", debian.display()))
}

/// The lines of `--stats=record`: `Kind N (%) record (%) fpi (%) combined (%)`.
fn parse(stats: &str, events: u64) -> Vec<Kind> {
    let n = events.max(1) as f64;
    let mut kinds: Vec<Kind> = stats
        .lines()
        .filter_map(|line| {
            // Drop the percentages in parentheses, keep the words and counts.
            let mut plain = String::new();
            let mut depth = 0;
            for c in line.chars() {
                match c {
                    '(' => depth += 1,
                    ')' => depth -= 1,
                    c if depth == 0 => plain.push(c),
                    _ => {}
                }
            }
            let fields: Vec<&str> = plain.split_whitespace().collect();
            let [name, count, _record, _fpi, combined] = fields[..] else {
                return None;
            };
            // Kinds are `Rmgr/RECORD`; the header and the total are not.
            if !name.contains('/') {
                return None;
            }
            let count: f64 = count.parse().ok()?;
            let combined: f64 = combined.parse().ok()?;
            (count > 0.0).then(|| Kind {
                name: name.to_string(),
                records: count / n,
                bytes: combined / n,
            })
        })
        .collect();
    kinds.sort_by(|a, b| b.bytes.total_cmp(&a.bytes));
    kinds
}

/// For a person: the kinds with at least a byte per event.
pub fn summary(kinds: &[Kind]) -> String {
    kinds
        .iter()
        .filter(|k| k.bytes >= 1.0)
        .map(|k| format!("{} {:.2} ({:.0} B)", k.name, k.records, k.bytes))
        .collect::<Vec<_>>()
        .join(", ")
}

/// For the JSON: every kind.
pub fn to_json(kinds: &[Kind]) -> Value {
    Value::Object(
        kinds
            .iter()
            .map(|k| {
                (
                    k.name.clone(),
                    json!({"records": k.records, "bytes": k.bytes}),
                )
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// As PostgreSQL 15's pg_waldump prints it.
    const STATS: &str = "\
WAL statistics between 0/B9BC2200 and 0/BA45F948:
Type                                           N      (%)          Record size      (%)             FPI size      (%)        Combined size      (%)
----                                           -      ---          -----------      ---             --------      ---        -------------      ---
Transaction/COMMIT                           415 (  0.71)                14110 (  0.16)                    0 (  0.00)                14110 (  0.16)
Heap/INSERT                                 9050 ( 15.40)              3680000 ( 41.00)                 2000 ( 10.00)              3682000 ( 41.00)
Btree/INSERT_LEAF                          36200 ( 61.60)              2770000 ( 31.00)                    0 (  0.00)              2770000 ( 31.00)
Heap/LOCK                                      0 (  0.00)                    0 (  0.00)                    0 (  0.00)                    0 (  0.00)
                                        --------                      --------                      --------                      --------
Total                                      45665                       6464110 [99.97%]                 2000 [0.03%]               6466110 [100%]
";

    #[test]
    fn reads_each_kind_per_event_with_its_page_images_most_bytes_first() {
        let kinds = parse(STATS, 5_000);
        let names: Vec<&str> = kinds.iter().map(|k| k.name.as_str()).collect();
        assert_eq!(
            names,
            ["Heap/INSERT", "Btree/INSERT_LEAF", "Transaction/COMMIT"]
        );
        assert_eq!(kinds[0].records, 1.81);
        assert_eq!(kinds[0].bytes, 736.4);
        assert_eq!(kinds[1].records, 7.24);
        assert_eq!(
            summary(&kinds),
            "Heap/INSERT 1.81 (736 B), Btree/INSERT_LEAF 7.24 (554 B), Transaction/COMMIT 0.08 (3 B)"
        );
        assert_eq!(to_json(&kinds)["Btree/INSERT_LEAF"]["bytes"], 554.0);
    }

    #[test]
    fn output_without_statistics_reads_as_nothing() {
        assert!(parse("pg_waldump: error: could not find file", 10).is_empty());
    }
}
