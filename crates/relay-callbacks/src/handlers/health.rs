//! `GET /api/v1/webhooks/n8n/health`: the guide's body plus whether the database
//! answers, 503 when it does not. Unsigned (monitors call it), and it reveals no
//! secret: `security_enabled` only says whether one is set.

use std::sync::atomic::Ordering;
use std::time::Duration;

use http::StatusCode;
use serde_json::{json, Value};

use crate::response::Reply;
use crate::server::State;

pub async fn answer(state: &State) -> Reply {
    let config = &state.config;
    let database = database(state).await;
    let healthy = database["reachable"] == Value::Bool(true);
    let body = json!({
        "status": if healthy { "healthy" } else { "unhealthy" },
        "service": "webhook-responses",
        "timestamp": rfc3339_utc(relay_core::signature::unix_now()),
        "webhook_config": {
            "enabled": config.n8n.enabled,
            // Unauthenticated: n8n's basic-auth credentials may ride in the URL.
            "base_url": relay_core::config::url_without_userinfo(&config.n8n.base_url),
            "security_enabled": !config.security.callback_secrets().is_empty(),
        },
        "database": database,
    });
    let mut reply = Reply::json(
        if healthy {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        },
        &body,
    );
    if !healthy {
        reply.error = Some("database unreachable".into());
        reply.database_down = true;
    }
    reply
}

/// How long one look at the database answers for: the endpoint is unsigned, and a
/// flood of it took a pooled connection (shared with the deliveries under `run`) and
/// a catalog query per request.
const FRESH_FOR: Duration = Duration::from_secs(1);

/// The last look at the database, at most [`FRESH_FOR`] old; requests that come while
/// a look is under way wait for it rather than start their own.
async fn database(state: &State) -> Value {
    let mut last = state.health_seen.lock().await;
    if let Some((at, seen)) = &*last {
        if at.elapsed() < FRESH_FOR {
            return seen.clone();
        }
    }
    let seen = look(state).await;
    *last = Some((std::time::Instant::now(), seen.clone()));
    seen
}

/// Whether the database answers, and if not, why in a few words. The endpoint is
/// unsigned, so the driver's own message (which names the database, the role, and
/// why a login failed) goes only to the process log, at warn level.
async fn look(state: &State) -> Value {
    let limit = Duration::from_secs(state.config.database.connect_timeout_seconds + 1);
    let probe = async {
        let client = state.pool.get().await.map_err(|e| {
            let why = match &e {
                deadpool_postgres::PoolError::Backend(pg) if pg.as_db_error().is_some() => {
                    "the database refused the relay's connection"
                }
                _ => "cannot connect to the database",
            };
            (why, e.to_string())
        })?;
        let missing = relay_core::schema::missing_tables(&client)
            .await
            .map_err(|e| ("the database did not answer", e.to_string()))?;
        if missing.is_empty() {
            Ok(())
        } else {
            Err((
                "the relay's tables are missing: run `n8n-relay migrate`",
                format!("missing: {}", missing.join(", ")),
            ))
        }
    };
    let (why, detail) = match tokio::time::timeout(limit, probe).await {
        Ok(Ok(_)) => {
            state.health_failing.store(false, Ordering::Relaxed);
            return json!({"reachable": true});
        }
        Ok(Err((why, detail))) => (why.to_string(), detail),
        Err(_) => {
            let why = format!("no answer within {limit:?}");
            (why.clone(), why)
        }
    };
    if !state.health_failing.swap(true, Ordering::Relaxed) {
        tracing::warn!(error = %detail, "health: {why}");
    }
    json!({"reachable": false, "error": why})
}

/// `2025-11-04T12:00:00Z` from unix seconds (UTC).
fn rfc3339_utc(unix: u64) -> String {
    i64::try_from(unix)
        .ok()
        .and_then(|secs| time::OffsetDateTime::from_unix_timestamp(secs).ok())
        .and_then(|at| {
            at.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".to_owned())
}

#[cfg(test)]
mod tests {
    use super::rfc3339_utc;

    #[test]
    fn formats_utc_timestamps_like_the_guide() {
        assert_eq!(rfc3339_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_utc(1_762_257_600), "2025-11-04T12:00:00Z");
        assert_eq!(rfc3339_utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339_utc(4_107_542_399), "2100-02-28T23:59:59Z");
    }
}
