//! What each callback changes. Every change runs in one transaction with its replay
//! receipt: it all commits, or (on any refusal) none of it does.

pub mod approval;
pub mod health;
pub mod test_trigger;
pub mod workflow;

use crate::payload::Callback;
use crate::receipts::{self, Claim};
use crate::response::{Refusal, Reply};
use crate::routes::Endpoint;
use crate::server::State;
use crate::verify::Verified;

/// Applies a verified, decoded callback, or replays the answer to an identical one.
pub async fn apply(
    state: &State,
    endpoint: Endpoint,
    verified: &Verified,
    callback: Callback,
) -> Result<Reply, Refusal> {
    let mut client = state.pool.get().await?;
    let tx = client.transaction().await?;
    if let Claim::Replay(reply) =
        receipts::claim(&tx, &verified.receipt_key, endpoint.path()).await?
    {
        tx.rollback().await?;
        return Ok(reply);
    }
    let reply = match callback {
        Callback::DemoApproval(a) => approval::apply(&tx, approval::Asset::Demo, &a).await?,
        Callback::VideoApproval(a) => approval::apply(&tx, approval::Asset::Video, &a).await?,
        Callback::WorkflowCompleted(run, body) => {
            workflow::report(&tx, workflow::Report::Completed, &run, &body).await?
        }
        Callback::WorkflowStatus(run, body) => {
            workflow::report(&tx, workflow::Report::Status, &run, &body).await?
        }
        Callback::ErrorNotification(err, body) => workflow::error(&tx, &err, body).await?,
        Callback::TestTrigger(t) => test_trigger::apply(&tx, t).await?,
    };
    receipts::record(&tx, &verified.receipt_key, &reply).await?;
    tx.commit().await?;
    Ok(reply)
}

/// The event id a `SELECT webhook_emit(...)` returned. NULL only when something the
/// relay does not own dropped the outbox row (a DBA's `BEFORE INSERT` trigger on
/// `webhook_events` returning NULL): a clear 500 rather than a reply that says queued.
fn emitted_id(row: &tokio_postgres::Row) -> Result<i64, Refusal> {
    row.try_get::<_, Option<i64>>(0)?.ok_or_else(|| {
        Refusal::internal(
            "webhook_emit() returned no event id: a trigger on webhook_events dropped the row",
        )
    })
}
