//! Who may call: a request must carry a valid signature made with one of the callback
//! secrets (`security.n8n_webhook_secret`), under `security.scheme`. The schemes and the
//! constant-time comparison are `relay_core::signature`, the same code that signs
//! outgoing deliveries; this module only adds the legacy fallback and names the request
//! for replay detection.

use http::HeaderMap;
use relay_core::config::{ConfigError, SecurityConfig};
use relay_core::signature::{
    Keys, Scheme, VerifyError, HEADER_LEGACY_SIGNATURE, HEADER_SIGNATURE, HEADER_TIMESTAMP,
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
    /// Names this exact request (message id and timestamp, body; not the endpoint,
    /// which the signature does not cover) for the receipts table. The signature is left out: with several secrets a request
    /// carries several, and a copy resent with only one of them is the same request.
    pub receipt_key: String,
}

pub struct Verifier {
    keys: Keys,
    max_age: u64,
    allow_legacy: bool,
}

impl Verifier {
    pub fn new(security: &SecurityConfig) -> Result<Verifier, ConfigError> {
        Ok(Verifier {
            keys: security.callback_keys()?,
            max_age: security.max_age_seconds,
            allow_legacy: security.allow_legacy_signature,
        })
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
        let header = |name: &str| header_text(headers, name);
        if self.keys.scheme() == Scheme::XWebhookSignature
            && header(HEADER_TIMESTAMP).is_none()
            && header(HEADER_SIGNATURE).is_none()
        {
            if let Some(legacy) = header(HEADER_LEGACY_SIGNATURE) {
                if !self.allow_legacy {
                    return Err(SignatureError::LegacyDisabled);
                }
                self.keys.verify_legacy(legacy, body)?;
                // No timestamp: the same body is the same signature for ever, so the
                // endpoint stays in its key (a status and a completion with the same
                // body would otherwise refuse each other until the receipt expires).
                return Ok(Verified {
                    receipt_key: receipt_key(&format!("legacy {endpoint}"), body),
                });
            }
        }
        let signed = self.keys.verify(header, body, now, self.max_age)?;
        let name = match signed.id {
            Some(id) => format!("{id}.{}", signed.timestamp),
            None => signed.timestamp.to_string(),
        };
        Ok(Verified {
            receipt_key: receipt_key(&name, body),
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
fn receipt_key(signed_as: &str, body: &[u8]) -> String {
    let mut h = Sha256::new();
    for part in [signed_as.as_bytes(), body] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    hex::encode(h.finalize())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use http::HeaderValue;
    use relay_core::signature;

    pub fn verifier(allow_legacy: bool) -> Verifier {
        Verifier {
            keys: Keys::new(Scheme::XWebhookSignature, ["k"]).expect("keys"),
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
    fn a_signed_request_passes_and_gets_a_stable_receipt_key_whatever_its_endpoint() {
        let body = br#"{"demo_id":1,"approved":true}"#;
        let v = verifier(false);
        let a = v
            .check("/p", &signed_headers(1000, body), body, 1000)
            .expect("ok");
        let b = v
            .check("/p", &signed_headers(1000, body), body, 1100)
            .expect("ok");
        assert_eq!(a, b, "same request, same key");
        let elsewhere = v
            .check("/q", &signed_headers(1000, body), body, 1000)
            .expect("ok");
        assert_eq!(a, elsewhere, "the signature does not cover the path");
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
            keys: Keys::new(Scheme::XWebhookSignature, [""]).expect("keys"),
            max_age: 300,
            allow_legacy: true,
        };
        let body = b"{}";
        assert_eq!(
            v.check("/p", &signed_headers(1000, body), body, 1000),
            Err(SignatureError::Invalid(VerifyError::NoSecret))
        );
    }

    const WHSEC: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    fn standard_verifier() -> Verifier {
        Verifier {
            keys: Keys::new(Scheme::StandardWebhooks, [WHSEC]).expect("keys"),
            max_age: 300,
            allow_legacy: false,
        }
    }

    fn standard_headers(id: &str, timestamp: u64, body: &[u8]) -> HeaderMap {
        let keys = Keys::new(Scheme::StandardWebhooks, [WHSEC]).expect("keys");
        let mut h = HeaderMap::new();
        for (name, value) in keys.sign_headers(id, timestamp, body) {
            h.insert(name, HeaderValue::from_str(&value).expect("header"));
        }
        h
    }

    #[test]
    fn standard_webhooks_callbacks_verify_and_are_named_by_id_timestamp_and_body() {
        let body = br#"{"demo_id":1,"approved":true}"#;
        let v = standard_verifier();
        let a = v
            .check("/p", &standard_headers("msg_1", 1000, body), body, 1000)
            .expect("ok");
        let again = v
            .check("/p", &standard_headers("msg_1", 1000, body), body, 1200)
            .expect("ok");
        assert_eq!(a, again, "an identical copy is the same request");
        let other_id = v
            .check("/p", &standard_headers("msg_2", 1000, body), body, 1000)
            .expect("ok");
        assert_ne!(a, other_id);
        assert_eq!(
            v.check("/p", &standard_headers("msg_1", 1000, body), b"{}", 1000),
            Err(SignatureError::Invalid(VerifyError::Mismatch))
        );
        assert_eq!(
            v.check("/p", &signed_headers(1000, body), body, 1000),
            Err(SignatureError::Invalid(VerifyError::Missing("webhook-id"))),
            "the X-Webhook headers are not accepted under standard-webhooks"
        );
    }
}
