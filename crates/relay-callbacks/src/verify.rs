//! Who may call: a request must carry a valid signature made with
//! `security.n8n_webhook_secret`. The scheme and the constant-time comparison are
//! `relay_core::signature`, the same code that signs outgoing deliveries; this module
//! only decides which headers to look at and names the request for replay detection.

use http::HeaderMap;
use relay_core::config::SecurityConfig;
use relay_core::signature::{
    self, VerifyError, HEADER_LEGACY_SIGNATURE, HEADER_SIGNATURE, HEADER_TIMESTAMP,
};
use sha2::{Digest, Sha256};

/// Why a signature was refused. Safe to send back: never the expected signature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("{0}")]
    Invalid(#[from] VerifyError),
    #[error(
        "{HEADER_LEGACY_SIGNATURE} (body-only signature) is not accepted; send {HEADER_TIMESTAMP} \
and {HEADER_SIGNATURE}, or enable security.allow_legacy_signature"
    )]
    LegacyDisabled,
}

/// A request whose signature checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Names this exact request (endpoint, timestamp, signature, body) for the
    /// receipts table. A hash, so no signature is stored.
    pub receipt_key: String,
}

pub struct Verifier {
    secret: relay_core::Secret,
    max_age: u64,
    allow_legacy: bool,
}

impl Verifier {
    pub fn new(security: &SecurityConfig) -> Verifier {
        Verifier {
            secret: security.n8n_webhook_secret.clone(),
            max_age: security.max_age_seconds,
            allow_legacy: security.allow_legacy_signature,
        }
    }

    /// Checks the request's signature at time `now` (unix seconds).
    ///
    /// The current scheme is used whenever either of its headers is present, so a
    /// request cannot fall back to the weaker legacy check by sending a broken
    /// timestamp alongside `X-N8N-Signature`.
    pub fn check(
        &self,
        endpoint: &str,
        headers: &HeaderMap,
        body: &[u8],
        now: u64,
    ) -> Result<Verified, SignatureError> {
        let secret = self.secret.expose().as_bytes();
        let timestamp = header_text(headers, HEADER_TIMESTAMP);
        let sig = header_text(headers, HEADER_SIGNATURE);
        let legacy = header_text(headers, HEADER_LEGACY_SIGNATURE);
        if timestamp.is_none() && sig.is_none() {
            if let Some(legacy) = legacy {
                if !self.allow_legacy {
                    return Err(SignatureError::LegacyDisabled);
                }
                signature::verify_legacy(secret, legacy, body)?;
                let mac = signature::parse_signature_header(legacy)?;
                return Ok(Verified {
                    receipt_key: receipt_key(endpoint, "legacy", &mac, body),
                });
            }
        }
        let ts = signature::verify(secret, timestamp, sig, body, now, self.max_age)?;
        // verify() parsed it already; parse again for the bytes (cannot fail now).
        let mac = signature::parse_signature_header(sig.unwrap_or_default())?;
        Ok(Verified {
            receipt_key: receipt_key(endpoint, &ts.to_string(), &mac, body),
        })
    }
}

/// A header's text; a value that is not visible ASCII reads as empty, which the
/// parsers refuse as malformed.
fn header_text<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).map(|v| v.to_str().unwrap_or(""))
}

/// SHA-256 over the parts that make a request identical, each length-delimited so
/// no two different requests can collide by moving bytes between fields.
fn receipt_key(endpoint: &str, timestamp: &str, mac: &[u8; 32], body: &[u8]) -> String {
    let mut h = Sha256::new();
    for part in [endpoint.as_bytes(), timestamp.as_bytes(), mac, body] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    hex::encode(h.finalize())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use http::HeaderValue;

    pub fn verifier(allow_legacy: bool) -> Verifier {
        Verifier {
            secret: relay_core::Secret::new("k"),
            max_age: 300,
            allow_legacy,
        }
    }

    pub fn signed_headers(timestamp: u64, body: &[u8]) -> HeaderMap {
        let mut h = HeaderMap::new();
        let sig = signature::sign(b"k", timestamp, body);
        h.insert(HEADER_TIMESTAMP, HeaderValue::from(timestamp));
        h.insert(
            HEADER_SIGNATURE,
            HeaderValue::from_str(&format!("sha256={sig}")).expect("header"),
        );
        h
    }

    #[test]
    fn a_signed_request_passes_and_gets_a_stable_receipt_key() {
        let body = br#"{"demo_id":1,"approved":true}"#;
        let v = verifier(false);
        let a = v
            .check("/p", &signed_headers(1000, body), body, 1000)
            .expect("ok");
        let b = v
            .check("/p", &signed_headers(1000, body), body, 1100)
            .expect("ok");
        assert_eq!(a, b, "same request, same key");
        let other_endpoint = v
            .check("/q", &signed_headers(1000, body), body, 1000)
            .expect("ok");
        assert_ne!(a, other_endpoint);
        let re_signed = v
            .check("/p", &signed_headers(1001, body), body, 1000)
            .expect("ok");
        assert_ne!(a, re_signed, "a new timestamp makes a new request");
    }

    #[test]
    fn missing_and_expired_signatures_are_refused() {
        let v = verifier(false);
        let body = b"{}";
        assert_eq!(
            v.check("/p", &HeaderMap::new(), body, 1000),
            Err(SignatureError::Invalid(VerifyError::Missing(
                HEADER_SIGNATURE
            )))
        );
        assert!(matches!(
            v.check("/p", &signed_headers(1000, body), body, 1301),
            Err(SignatureError::Invalid(VerifyError::Expired(301, 300)))
        ));
    }

    #[test]
    fn the_legacy_header_works_only_when_enabled_and_never_as_a_fallback() {
        let body = b"{\"a\":1}";
        let mut h = HeaderMap::new();
        h.insert(
            HEADER_LEGACY_SIGNATURE,
            HeaderValue::from_str(&signature::sign_legacy(b"k", body)).expect("header"),
        );
        assert_eq!(
            verifier(false).check("/p", &h, body, 1000),
            Err(SignatureError::LegacyDisabled)
        );
        assert!(verifier(true).check("/p", &h, body, 1000).is_ok());
        h.insert(HEADER_TIMESTAMP, HeaderValue::from_static("1"));
        assert!(
            verifier(true).check("/p", &h, body, 1000).is_err(),
            "a present timestamp selects the current scheme"
        );
    }

    #[test]
    fn without_a_secret_nothing_passes() {
        let v = Verifier {
            secret: relay_core::Secret::default(),
            max_age: 300,
            allow_legacy: true,
        };
        let body = b"{}";
        assert_eq!(
            v.check("/p", &signed_headers(1000, body), body, 1000),
            Err(SignatureError::Invalid(VerifyError::NoSecret))
        );
    }
}
