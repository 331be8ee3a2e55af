//! The request body: JSON only, and never more than `callbacks.max_body_bytes` read,
//! nor read for longer than `callbacks.request_timeout_seconds`.

use bytes::Bytes;
use http::{header, HeaderMap};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use tokio::time::Instant;

use crate::response::Refusal;

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

/// Reads the whole body. A declared Content-Length over the limit is refused before
/// a byte is read; a body without one (chunked) is cut off as soon as it passes the
/// limit. The deadline covers the whole read, so a client trickling bytes is cut off
/// too.
pub async fn read(
    headers: &HeaderMap,
    body: Incoming,
    limit: usize,
    deadline: std::time::Instant,
    timeout_seconds: u64,
) -> Result<Bytes, Refusal> {
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
    let collect = Limited::new(body, limit).collect();
    match tokio::time::timeout_at(Instant::from_std(deadline), collect).await {
        Err(_) => Err(Refusal::timeout(timeout_seconds)),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(Refusal::too_large(limit)),
        Ok(Err(e)) => Err(Refusal::bad_body(format!(
            "the body could not be read: {e}"
        ))),
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
