//! The request body: JSON only, and never more than `callbacks.max_body_bytes` read,
//! nor read for longer than `callbacks.request_timeout_seconds`, nor more bodies held
//! at once than [`BODIES_AT_ONCE`] of the largest size.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http::{header, HeaderMap};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::response::Refusal;

/// How many bodies of `callbacks.max_body_bytes` may be held in memory at once, all
/// connections together, beyond the first [`FREE_KIB`] of each. Bodies are read whole
/// before their signature is checked, so without a bound anyone who can reach the port
/// could hold `max_connections` of them (256 MiB with the defaults), or, over HTTP/2,
/// as many per connection as it opens streams: past it a body is refused with 503 as
/// its bytes arrive.
pub const BODIES_AT_ONCE: usize = 32;

/// The first KiB of every body, which the budget does not count: n8n's callbacks are a
/// few KiB each, so clients holding the budget with large bodies never turn them
/// away, and these parts are bounded by `max_connections` (16 MiB with the defaults).
pub const FREE_KIB: usize = 64;

/// The bytes of request bodies held at once, counted in KiB.
#[derive(Clone)]
pub struct Budget(Arc<Semaphore>);

impl Budget {
    pub fn new(max_body_bytes: usize) -> Budget {
        let kib = kib(max_body_bytes)
            .saturating_sub(FREE_KIB)
            .saturating_mul(BODIES_AT_ONCE)
            .min(Semaphore::MAX_PERMITS);
        Budget(Arc::new(Semaphore::new(kib)))
    }
}

/// A body's share of the [`Budget`], given back when dropped (when its request is
/// answered).
pub struct Held {
    _share: OwnedSemaphorePermit,
}

fn kib(bytes: usize) -> usize {
    bytes.div_ceil(1024)
}

/// 415 unless the Content-Type is `application/json` or `application/*+json`
/// (parameters such as `charset` allowed).
pub fn require_json(headers: &HeaderMap) -> Result<(), Refusal> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Err(Refusal::unsupported_media_type(
            "Content-Type is missing; send application/json",
        ));
    };
    let text = value.to_str().unwrap_or("");
    let essence = text
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let json = essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"));
    if json {
        Ok(())
    } else {
        Err(Refusal::unsupported_media_type(format!(
            "Content-Type {:?} is not JSON; send application/json",
            crate::routes::shorten(text)
        )))
    }
}

/// Reads the whole body, holding its bytes' share of `budget` until the [`Held`] it
/// returns is dropped. A declared Content-Length over the limit is refused before a
/// byte is read; a body without one (chunked) is cut off as soon as it passes the
/// limit. The deadline covers the whole read, so a client trickling bytes is cut off
/// too.
pub async fn read(
    headers: &HeaderMap,
    body: Incoming,
    limit: usize,
    budget: &Budget,
    deadline: std::time::Instant,
    timeout_seconds: u64,
) -> Result<(Bytes, Held), Refusal> {
    if let Some(length) = headers.get(header::CONTENT_LENGTH) {
        let declared = length
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .ok_or_else(|| Refusal::bad_body("Content-Length is not a number"))?;
        if declared > limit as u64 {
            return Err(Refusal::too_large(limit));
        }
    }
    let mut held = budget
        .0
        .clone()
        .try_acquire_many_owned(0)
        .map_err(|_| Refusal::internal("the body budget is closed"))?;
    let mut body = Limited::new(body, limit);
    let reading = async {
        let mut data = BytesMut::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    Refusal::too_large(limit)
                } else {
                    Refusal::bad_body(format!("the body could not be read: {e}"))
                }
            })?;
            let Ok(chunk) = frame.into_data() else {
                continue;
            };
            let short = kib(data.len() + chunk.len())
                .saturating_sub(FREE_KIB)
                .saturating_sub(held.num_permits());
            if short > 0 {
                let more = u32::try_from(short)
                    .ok()
                    .and_then(|n| budget.0.clone().try_acquire_many_owned(n).ok())
                    .ok_or_else(|| {
                        Refusal::busy(
                            "too many request bodies are being read at once; try again shortly",
                        )
                    })?;
                held.merge(more);
            }
            data.extend_from_slice(&chunk);
        }
        Ok(data.freeze())
    };
    match tokio::time::timeout_at(Instant::from_std(deadline), reading).await {
        Err(_) => Err(Refusal::timeout(timeout_seconds)),
        Ok(read) => read.map(|bytes| (bytes, Held { _share: held })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn with_type(value: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(value));
        h
    }

    #[test]
    fn json_content_types_pass_and_others_are_415() {
        for ok in [
            "application/json",
            "application/json; charset=utf-8",
            "Application/JSON",
            "application/vnd.n8n+json",
        ] {
            assert!(require_json(&with_type(ok)).is_ok(), "{ok}");
        }
        for bad in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "json",
            "",
        ] {
            let e = require_json(&with_type(bad)).expect_err(bad);
            assert_eq!(e.status, http::StatusCode::UNSUPPORTED_MEDIA_TYPE);
        }
        assert!(require_json(&HeaderMap::new()).is_err());
    }
}
