//! Replay protection. The first answer to a signed request is kept (by a hash of
//! timestamp (and Standard Webhooks message id) and body) in the same transaction as
//! the change it made; an identical request inside the signature window gets that
//! answer back and changes nothing. A request re-signed with a new timestamp is a new
//! request. The signature does not cover the path, so the endpoint is not part of the
//! key: the same signed request sent to another endpoint (an error report posted as
//! `workflow-completed`, which reads a missing status as success) is refused.
//!
//! Concurrent identical requests are safe: the second one's INSERT waits on the
//! first one's uncommitted receipt row, then sees it and replays.

use std::time::Duration;

use deadpool_postgres::{Pool, Transaction};
use http::StatusCode;
use tokio_util::sync::CancellationToken;

use crate::response::{Refusal, Reply};

const CLAIM: &str = "INSERT INTO webhook_callback_receipts \
    (request_hash, endpoint, response_status, response_body) VALUES ($1, $2, 0, '') \
    ON CONFLICT (request_hash) DO NOTHING";
const STORED: &str = "SELECT response_status, response_body, endpoint \
    FROM webhook_callback_receipts WHERE request_hash = $1";
const RECORD: &str = "UPDATE webhook_callback_receipts \
    SET response_status = $2, response_body = $3 WHERE request_hash = $1";
const CLEAN: &str = "DELETE FROM webhook_callback_receipts \
    WHERE created_at < now() - make_interval(secs => $1)";

pub enum Claim {
    /// First time seen: apply it, then [`record`] the answer.
    New,
    /// Seen before: the stored answer.
    Replay(Reply),
}

/// Claims `key` inside `tx`, or finds the answer already given for it.
pub async fn claim(tx: &Transaction<'_>, key: &str, endpoint: &str) -> Result<Claim, Refusal> {
    // The loop only repeats if the receipt was cleaned between the two statements,
    // which cleaning's margin (twice the signature window) rules out in practice.
    for _ in 0..2 {
        if tx.execute(CLAIM, &[&key, &endpoint]).await? == 1 {
            return Ok(Claim::New);
        }
        if let Some(row) = tx.query_opt(STORED, &[&key]).await? {
            let status: i32 = row.get(0);
            let body: String = row.get(1);
            let first: String = row.get(2);
            if first != endpoint {
                return Err(Refusal::unauthorized(format!(
                    "this signed request was already sent to {first}; a signature is good \
                     for one endpoint"
                )));
            }
            let status = u16::try_from(status)
                .ok()
                .and_then(|s| StatusCode::from_u16(s).ok())
                .unwrap_or(StatusCode::OK);
            return Ok(Claim::Replay(Reply::replayed(status, body)));
        }
    }
    Err(Refusal::internal("could not claim the request receipt"))
}

/// Stores the answer under the claimed key, in the same transaction as the change.
pub async fn record(tx: &Transaction<'_>, key: &str, reply: &Reply) -> Result<(), Refusal> {
    let status = i32::from(reply.status.as_u16());
    tx.execute(RECORD, &[&key, &status, &reply.body_text()])
        .await?;
    Ok(())
}

/// How long a receipt must live: a request is accepted while its timestamp is
/// within `max_age` of now, in either direction, so an identical copy can arrive up
/// to `2 × max_age` after the first was accepted.
pub fn retention(max_age_seconds: u64) -> Duration {
    Duration::from_secs(max_age_seconds.saturating_mul(2).saturating_add(1))
}

/// Deletes expired receipts now and then, until `shutdown`.
pub async fn clean_periodically(pool: Pool, max_age_seconds: u64, shutdown: CancellationToken) {
    let keep = retention(max_age_seconds).as_secs_f64();
    let every = Duration::from_secs((max_age_seconds / 2).clamp(1, 60));
    loop {
        match pool.get().await {
            Ok(client) => match client.execute(CLEAN, &[&keep]).await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(removed = n, "expired callback receipts removed"),
                Err(e) => tracing::warn!(error = %e, "could not remove expired callback receipts"),
            },
            Err(e) => {
                tracing::debug!(error = %e, "receipt cleanup skipped: no database connection")
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receipts_outlive_a_request_signed_at_the_edge_of_the_window() {
        // Accepted at t with timestamp t + 300; still valid until t + 600.
        assert!(retention(300) > Duration::from_secs(600));
    }
}
