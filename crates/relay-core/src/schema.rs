//! The SQL install scripts, embedded, and `migrate`, which applies them.
//!
//! The files in `sql/` are the single source: DBAs run them with psql, `migrate`
//! runs the same bytes. Each script is idempotent, so `migrate` applies any script
//! whose content it has not applied before (new, or changed by an upgrade) and
//! records name and checksum in `relay_schema_migrations`.

use sha2::{Digest, Sha256};
use tokio_postgres::Client;

use crate::db::DbError;

pub struct Script {
    pub name: &'static str,
    pub sql: &'static str,
    /// Only with `--example-tables`.
    pub example_only: bool,
}

pub const SCRIPTS: &[Script] = &[
    Script {
        name: "001_webhook_tables.sql",
        sql: include_str!("../../../sql/001_webhook_tables.sql"),
        example_only: false,
    },
    Script {
        name: "002_webhook_emit.sql",
        sql: include_str!("../../../sql/002_webhook_emit.sql"),
        example_only: false,
    },
    Script {
        name: "003_example_tables.sql",
        sql: include_str!("../../../sql/003_example_tables.sql"),
        example_only: true,
    },
    Script {
        name: "004_triggers.sql",
        sql: include_str!("../../../sql/004_triggers.sql"),
        example_only: false,
    },
];

pub const UNINSTALL_SQL: &str = include_str!("../../../sql/uninstall.sql");

/// The relay's tables, as `001_webhook_tables.sql` creates them.
pub const TABLES: &[&str] = &[
    "webhook_events",
    "webhook_queue",
    "webhook_logs",
    "webhook_retry_history",
    "workflow_runs",
    "webhook_callback_receipts",
    "webhook_pauses",
    "webhook_rate_budget",
    "webhook_endpoints",
];

/// Which of `$1` the session's search_path does not find. A catalog lookup: it takes
/// no lock on a table, so it answers while the queue is locked by a long statement.
const MISSING_TABLES: &str =
    "SELECT coalesce(array_agg(t ORDER BY t) FILTER (WHERE to_regclass(t) IS NULL), '{}')
    FROM unnest($1::text[]) t";

/// The relay's tables that this session cannot find (none once `migrate` ran): a
/// probe's answer for a database that answers but cannot be worked with.
pub async fn missing_tables(client: &Client) -> Result<Vec<String>, tokio_postgres::Error> {
    let row = client.query_one(MISSING_TABLES, &[&TABLES]).await?;
    row.try_get(0)
}

/// Serialises concurrent `migrate` runs (two relays starting at once).
const MIGRATE_LOCK_KEY: i64 = 0x6e38_6e72_656c_6179; // "n8nrelay"

const CREATE_MIGRATIONS: &str = "CREATE TABLE IF NOT EXISTS relay_schema_migrations (
    name       text PRIMARY KEY,
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)";
const SELECT_APPLIED: &str = "SELECT checksum FROM relay_schema_migrations WHERE name = $1";
const RECORD_APPLIED: &str = "INSERT INTO relay_schema_migrations (name, checksum) VALUES ($1, $2)
    ON CONFLICT (name) DO UPDATE SET checksum = EXCLUDED.checksum, applied_at = now()";

/// What `migrate` did with one script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub name: &'static str,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// New, or changed since it was last applied.
    Applied,
    /// The same content was applied before.
    UpToDate,
    /// The triggers' script, unchanged, run again: a business table it attaches to
    /// has no trigger of that name (created after the relay's tables, or the trigger
    /// dropped since).
    Rechecked,
}

impl Outcome {
    pub fn describe(self) -> &'static str {
        match self {
            Outcome::Applied => "applied",
            Outcome::UpToDate => "up to date",
            Outcome::Rechecked => "run again: a table had no trigger",
        }
    }
}

/// The script that attaches the triggers, only to tables that exist: a DBA creates
/// their tables before or after the relay's, so `migrate` runs it again, unchanged,
/// when one of them has no trigger of the name it gives. Not otherwise: a trigger a
/// DBA disabled stays so, and an unchanged script takes no lock.
const TRIGGERS: &str = "004_triggers.sql";

/// The tables `004_triggers.sql` attaches to, the trigger it names on each, and the
/// column it needs there (without it the script skips the table, with a notice).
const ATTACHED: &[(&str, &str, &str)] = &[
    ("leads", "webhook_leads_insert", ""),
    ("leads", "webhook_leads_update", ""),
    ("demo_sites", "webhook_demo_sites_change", "status"),
    ("videos", "webhook_videos_change", "status"),
];

/// Whether a table of $1 that 004 would attach to (it has the column $3 names) lacks
/// its trigger $2. A catalog read, no lock.
const TRIGGER_MISSING: &str = "SELECT EXISTS (
    SELECT 1 FROM unnest($1::text[], $2::text[], $3::text[]) AS v(tbl, name, col)
    WHERE to_regclass(v.tbl) IS NOT NULL
      AND (v.col = '' OR EXISTS (SELECT 1 FROM pg_attribute a
                                 WHERE a.attrelid = to_regclass(v.tbl)
                                   AND a.attname = v.col AND NOT a.attisdropped))
      -- A table whose id is not an integer is left without a trigger by the script
      -- itself (its writes would fail the cast): the same test as there.
      AND NOT EXISTS (
          SELECT 1 FROM pg_attribute a JOIN pg_type ty ON ty.oid = a.atttypid,
               LATERAL (SELECT coalesce(nullif(ty.typbasetype, 0), ty.oid) AS base,
                               CASE WHEN ty.typbasetype <> 0 THEN ty.typtypmod ELSE a.atttypmod END AS m) k
          WHERE a.attrelid = to_regclass(v.tbl) AND a.attname = 'id' AND a.attnum > 0
            AND NOT a.attisdropped
            AND k.base NOT IN ('smallint'::regtype, 'integer'::regtype, 'bigint'::regtype)
            AND NOT (k.base = 'numeric'::regtype AND k.m >= 4 AND ((k.m - 4) & 65535) = 0
                     AND ((k.m - 4) >> 16) <= 18))
      AND NOT EXISTS (SELECT 1 FROM pg_trigger t
                      WHERE t.tgrelid = to_regclass(v.tbl) AND t.tgname = v.name))";

async fn trigger_missing(client: &Client) -> Result<bool, DbError> {
    let tables: Vec<&str> = ATTACHED.iter().map(|(t, _, _)| *t).collect();
    let names: Vec<&str> = ATTACHED.iter().map(|(_, n, _)| *n).collect();
    let columns: Vec<&str> = ATTACHED.iter().map(|(_, _, c)| *c).collect();
    Ok(client
        .query_one(TRIGGER_MISSING, &[&tables, &names, &columns])
        .await?
        .try_get(0)?)
}

pub fn checksum(sql: &str) -> String {
    hex::encode(Sha256::digest(sql.as_bytes()))
}

/// Applies the install scripts in order, each in its own transaction, under an
/// advisory lock. Scripts already applied with the same content are skipped.
pub async fn migrate(client: &mut Client, example_tables: bool) -> Result<Vec<Applied>, DbError> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATE_LOCK_KEY])
        .await?;
    let result = apply_all(client, example_tables).await;
    let unlock = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATE_LOCK_KEY])
        .await;
    let applied = result?;
    unlock?;
    Ok(applied)
}

async fn apply_all(client: &mut Client, example_tables: bool) -> Result<Vec<Applied>, DbError> {
    client.batch_execute(CREATE_MIGRATIONS).await?;
    let mut out = Vec::new();
    for script in SCRIPTS {
        if script.example_only && !example_tables {
            continue;
        }
        let sum = checksum(script.sql);
        let previous = client.query_opt(SELECT_APPLIED, &[&script.name]).await?;
        let same = previous
            .map(|row| row.get::<_, String>(0) == sum)
            .unwrap_or(false);
        let outcome = if !same {
            Outcome::Applied
        } else if script.name == TRIGGERS && trigger_missing(client).await? {
            Outcome::Rechecked
        } else {
            out.push(Applied {
                name: script.name,
                outcome: Outcome::UpToDate,
            });
            continue;
        };
        let tx = client.transaction().await?;
        tx.batch_execute(script.sql).await?;
        tx.execute(RECORD_APPLIED, &[&script.name, &sum]).await?;
        tx.commit().await?;
        out.push(Applied {
            name: script.name,
            outcome,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_triggers_migrate_looks_for_are_those_the_script_attaches() {
        let script = SCRIPTS
            .iter()
            .find(|s| s.name == TRIGGERS)
            .expect("the triggers script");
        for (table, trigger, column) in ATTACHED {
            assert!(
                script.sql.contains(&format!("('{table}', '{trigger}'")),
                "004 attaches {trigger} to {table}"
            );
            let needs = if column.is_empty() {
                "NULL".to_string()
            } else {
                format!("'{column}'")
            };
            let line = script
                .sql
                .lines()
                .skip_while(|l| !l.contains(&format!("('{table}', '{trigger}'")))
                .take(2)
                .collect::<String>();
            assert!(line.contains(&needs), "{trigger} needs {needs}: {line}");
        }
    }
}
