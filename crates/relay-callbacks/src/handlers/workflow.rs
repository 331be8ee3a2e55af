//! Workflow runs, keyed by n8n's execution id. Each report upserts the run; fields a
//! report leaves out keep their earlier value. An error report also emits
//! `workflow_error` through `webhook_emit`, so an alerting workflow hears of it (even
//! when it has no execution id to record a run under).

use deadpool_postgres::Transaction;
use http::StatusCode;
use serde_json::{json, Value};

use crate::payload::{WorkflowError, WorkflowUpdate};
use crate::response::{Refusal, Reply};

/// A report that arrives after the run ended (n8n retried a progress report, or they
/// crossed on the way) changes nothing: a run whose status is final (n8n's `success`,
/// `error`, `canceled`, `crashed`) is not set back to a running one. A final report
/// still replaces an earlier final one.
const UPSERT_RUN: &str = "INSERT INTO workflow_runs AS r \
    (execution_id, workflow_id, status, current_step, duration_ms, lead_id, error_message, payload) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
    ON CONFLICT (execution_id) DO UPDATE SET \
        workflow_id = COALESCE(EXCLUDED.workflow_id, r.workflow_id), \
        status = EXCLUDED.status, \
        current_step = COALESCE(EXCLUDED.current_step, r.current_step), \
        duration_ms = COALESCE(EXCLUDED.duration_ms, r.duration_ms), \
        lead_id = COALESCE(EXCLUDED.lead_id, r.lead_id), \
        error_message = COALESCE(EXCLUDED.error_message, r.error_message), \
        payload = EXCLUDED.payload, \
        updated_at = now() \
    WHERE coalesce(r.status, '') NOT IN ('success', 'error', 'canceled', 'crashed') \
       OR EXCLUDED.status IN ('success', 'error', 'canceled', 'crashed')";
const EMIT_WORKFLOW_ERROR: &str = "SELECT webhook_emit('workflow_error', 'workflow', $1, $2)";
/// Whether this execution's error is on record already, its row locked till commit.
const ERROR_RECORDED: &str = "SELECT 1 FROM workflow_runs \
    WHERE execution_id = $1 AND status = 'error' AND error_message = $2 FOR UPDATE";

/// A progress report; what a missing `status` means depends on which one it is.
#[derive(Debug, Clone, Copy)]
pub enum Report {
    Status,
    Completed,
}

impl Report {
    fn default_status(self) -> &'static str {
        match self {
            Report::Status => "running",
            Report::Completed => "success",
        }
    }
    fn message(self) -> &'static str {
        match self {
            Report::Status => "Workflow status updated",
            Report::Completed => "Workflow completion logged successfully",
        }
    }
}

pub async fn report(
    tx: &Transaction<'_>,
    kind: Report,
    run: &WorkflowUpdate,
    body: &Value,
) -> Result<Reply, Refusal> {
    let Some(execution_id) = &run.execution_id else {
        // Only a progress report gets here without one (payload::run): nothing to
        // key a run by; the request is in webhook_logs like every other.
        return Ok(received(
            Some(&run.workflow_id),
            None,
            "Workflow status received; no execution_id, so no run was recorded",
            None,
        ));
    };
    let row = Run {
        execution_id,
        workflow_id: Some(&run.workflow_id),
        status: run.status.as_deref().unwrap_or(kind.default_status()),
        current_step: run.current_step.as_deref(),
        duration_ms: run.duration_ms,
        lead_id: run.lead_id,
        error_message: None,
    };
    upsert(tx, &row, body).await?;
    Ok(received(
        Some(&run.workflow_id),
        Some(execution_id),
        kind.message(),
        None,
    ))
}

pub async fn error(
    tx: &Transaction<'_>,
    err: &WorkflowError,
    body: Value,
) -> Result<Reply, Refusal> {
    if let Some(execution_id) = &err.execution_id {
        // The same error of the same execution again: a client that signs its retry
        // anew (the n8n node does, on Retry On Fail) is not a replay the receipts can
        // tell, and the alerting workflow must not hear of one failure twice.
        if tx
            .query_opt(ERROR_RECORDED, &[execution_id, &err.message])
            .await?
            .is_some()
        {
            return Ok(received(
                err.workflow_id.as_deref(),
                Some(execution_id),
                "Workflow error already recorded for this execution; no new event",
                None,
            ));
        }
        let row = Run {
            execution_id,
            workflow_id: err.workflow_id.as_deref(),
            status: "error",
            current_step: err.current_step.as_deref(),
            duration_ms: err.duration_ms,
            lead_id: err.lead_id,
            error_message: Some(&err.message),
        };
        upsert(tx, &row, &body).await?;
    }
    let mut data = body;
    if let Some(map) = data.as_object_mut() {
        map.insert("error_message".into(), err.message.clone().into());
    }
    let event_id = super::emitted_id(
        &tx.query_one(EMIT_WORKFLOW_ERROR, &[&err.lead_id, &data])
            .await?,
    )?;
    let message = if err.execution_id.is_some() {
        "Workflow error recorded, workflow_error event emitted"
    } else {
        "No execution_id, so no run recorded; workflow_error event emitted"
    };
    Ok(received(
        err.workflow_id.as_deref(),
        err.execution_id.as_deref(),
        message,
        Some(event_id),
    ))
}

/// One `workflow_runs` row as a report sets it.
struct Run<'a> {
    execution_id: &'a str,
    workflow_id: Option<&'a str>,
    status: &'a str,
    current_step: Option<&'a str>,
    duration_ms: Option<i64>,
    lead_id: Option<i64>,
    error_message: Option<&'a str>,
}

async fn upsert(tx: &Transaction<'_>, run: &Run<'_>, body: &Value) -> Result<(), Refusal> {
    tx.execute(
        UPSERT_RUN,
        &[
            &run.execution_id,
            &run.workflow_id,
            &run.status,
            &run.current_step,
            &run.duration_ms,
            &run.lead_id,
            &run.error_message,
            body,
        ],
    )
    .await?;
    Ok(())
}

fn received(
    workflow_id: Option<&str>,
    execution_id: Option<&str>,
    message: &str,
    event_id: Option<i64>,
) -> Reply {
    let mut body = json!({
        "status": "received",
        "workflow_id": workflow_id,
        "execution_id": execution_id,
        "message": message,
    });
    if let (Some(id), Some(map)) = (event_id, body.as_object_mut()) {
        map.insert("event_id".into(), id.into());
    }
    Reply::json(StatusCode::OK, &body)
}
