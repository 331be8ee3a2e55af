//! `n8n-relay emit`: an event by hand, through the same SQL function as triggers.

use anyhow::Context;
use relay_core::{Config, EventType};

use crate::cli::EmitArgs;
use crate::error::{CmdResult, Failure};

const EMIT: &str = "SELECT webhook_emit($1, $2, $3, $4)";

/// The longest entity type `emit` takes (the built-in triggers use `lead`, `demo_site`,
/// `video`; the older backend's names are as short).
const ENTITY_TYPE_MAX: usize = 64;

pub async fn run(config: &Config, args: &EmitArgs) -> CmdResult {
    if EventType::parse(&args.event).is_none() {
        return Err(Failure::usage(anyhow::anyhow!(
            "unknown event type {:?}; known: {}",
            args.event,
            EventType::names().join(", ")
        )));
    }
    // A blank type is as empty as '' (which webhook_emit refuses): the body would
    // carry it, and the ordering keys on it.
    if args.entity_type.trim().is_empty() {
        return Err(Failure::usage(anyhow::anyhow!(
            "--entity-type must not be blank"
        )));
    }
    // A name, not a document: the queue's tables and the console print it in a column.
    if args.entity_type.chars().count() > ENTITY_TYPE_MAX {
        return Err(Failure::usage(anyhow::anyhow!(
            "--entity-type is {} characters long; at most {ENTITY_TYPE_MAX}",
            args.entity_type.chars().count()
        )));
    }
    let data: serde_json::Value = serde_json::from_str(&args.data)
        .map_err(|e| Failure::usage(anyhow::anyhow!("--data is not valid JSON: {e}")))?;
    if !data.is_object() {
        return Err(Failure::usage(anyhow::anyhow!(
            "--data must be a JSON object"
        )));
    }
    let client = super::connect(config).await?;
    let row = client
        .query_one(
            EMIT,
            &[&args.event, &args.entity_type, &args.entity_id, &data],
        )
        .await
        .map_err(|e| {
            // What webhook_emit or the outbox refuses (an empty entity type, a NUL
            // character jsonb cannot hold) is the arguments' fault: exit 2.
            let bad_input = e
                .code()
                .is_some_and(|c| c.code().starts_with("22") || c.code() == "23502");
            let e = anyhow::Error::new(e).context("webhook_emit refused the event");
            if bad_input {
                Failure::usage(e)
            } else {
                Failure::Runtime(e)
            }
        })?;
    // NULL only if a trigger of someone else's on webhook_events dropped the row.
    let id: i64 = row
        .try_get::<_, Option<i64>>(0)
        .context("reading webhook_emit's event id")?
        .context(
            "webhook_emit() returned no event id: a trigger on webhook_events dropped the row",
        )?;
    super::write_stdout(&format!("{id}\n"))
}
