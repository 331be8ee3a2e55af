//! The older system's manual trigger, `POST /api/v1/test/trigger-webhook`: an event
//! for a lead, through `webhook_emit` like a trigger's. Off unless
//! `callbacks.test_endpoint_enabled`, and signed like every other callback.

use deadpool_postgres::Transaction;
use http::StatusCode;
use serde_json::{json, Value};

use crate::payload::TestTrigger;
use crate::response::{Refusal, Reply};

const EMIT: &str = "SELECT webhook_emit($1, 'lead', $2, $3)";

pub async fn apply(tx: &Transaction<'_>, t: TestTrigger) -> Result<Reply, Refusal> {
    let mut data = t.data;
    if let Some(lead_id) = t.lead_id {
        data.entry("lead_id").or_insert(lead_id.into());
    }
    let data = Value::Object(data);
    let event_id = super::emitted_id(
        &tx.query_one(EMIT, &[&t.event_type, &t.lead_id, &data])
            .await?,
    )?;
    Ok(Reply::json(
        StatusCode::OK,
        &json!({
            "status": "queued",
            "event_id": event_id,
            "event_type": t.event_type,
            "lead_id": t.lead_id,
            "message": "Event recorded; the relay delivers it like any other",
        }),
    ))
}
