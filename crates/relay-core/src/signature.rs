//! Signing and verifying webhook requests, both directions.
//!
//! Two schemes, chosen by `security.scheme` ([`Scheme`]):
//! - `x-webhook-signature` (the contract, default): `X-Webhook-Signature-256` =
//!   lowercase hex HMAC-SHA256 over `"{timestamp}.{body}"`, with `X-Webhook-Timestamp`
//!   in unix seconds, keyed with the secret's bytes as written.
//! - `standard-webhooks` (the Standard Webhooks specification, so receivers can use its
//!   libraries): `webhook-id`, `webhook-timestamp` and `webhook-signature` =
//!   `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`, keyed with the base64
//!   decoding of a `whsec_`-prefixed secret.
//!
//! In both the timestamp is inside the MAC so a captured request cannot be replayed
//! later with a fresh timestamp. Several secrets may be active at once (rotation,
//! newest first): a request then carries one signature per secret (a comma-separated
//! list of hex in `X-Webhook-Signature-256`, space-separated `v1,` entries in
//! `webhook-signature`), and a verifier accepts a match of any entry with any secret.
//! Outgoing deliveries and incoming callbacks share this module.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

pub const HEADER_SIGNATURE: &str = "x-webhook-signature-256";
pub const HEADER_TIMESTAMP: &str = "x-webhook-timestamp";
/// The older system's header: HMAC over the body alone (see the README on why it is
/// weaker); accepted on callbacks only when `security.allow_legacy_signature` is on.
pub const HEADER_LEGACY_SIGNATURE: &str = "x-n8n-signature";

type HmacSha256 = Hmac<Sha256>;

/// Why a request's signature was refused. The text is safe to return to a client:
/// it never contains the expected signature or the secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("missing {0} header")]
    Missing(&'static str),
    #[error("{0} header is not valid: {1}")]
    Malformed(&'static str, &'static str),
    #[error("timestamp is {0} s away from now; at most {1} s is allowed")]
    Expired(u64, u64),
    #[error("signature does not match")]
    Mismatch,
    #[error("no secret is configured to verify with")]
    NoSecret,
}

fn mac(secret: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length, so this cannot fail.
    <HmacSha256 as KeyInit>::new_from_slice(secret).unwrap_or_else(|_| unreachable!())
}

/// Raw HMAC-SHA256 of `"{timestamp}.{body}"`.
pub fn sign_raw(secret: &[u8], timestamp: u64, body: &[u8]) -> [u8; 32] {
    let mut m = mac(secret);
    m.update(timestamp.to_string().as_bytes());
    m.update(b".");
    m.update(body);
    m.finalize().into_bytes().into()
}

/// Lowercase hex signature for `X-Webhook-Signature-256`.
pub fn sign(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    hex::encode(sign_raw(secret, timestamp, body))
}

/// Lowercase hex HMAC over the body alone, for the legacy header.
pub fn sign_legacy(secret: &[u8], body: &[u8]) -> String {
    let mut m = mac(secret);
    m.update(body);
    hex::encode(m.finalize().into_bytes())
}

/// Parses a signature header value: 64 hex digits, optionally prefixed `sha256=`,
/// surrounding whitespace ignored, either case.
pub fn parse_signature_header(value: &str) -> Result<[u8; 32], VerifyError> {
    let v = value.trim();
    let v = v.strip_prefix("sha256=").unwrap_or(v);
    if v.len() != 64 {
        return Err(VerifyError::Malformed(
            HEADER_SIGNATURE,
            "expected 64 hex digits, optionally prefixed sha256=",
        ));
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(v, &mut out)
        .map_err(|_| VerifyError::Malformed(HEADER_SIGNATURE, "not hexadecimal"))?;
    Ok(out)
}

/// Parses `X-Webhook-Timestamp`: unix seconds, digits only.
pub fn parse_timestamp_header(value: &str) -> Result<u64, VerifyError> {
    let v = value.trim();
    if v.is_empty() || v.len() > 12 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(VerifyError::Malformed(
            HEADER_TIMESTAMP,
            "expected unix seconds",
        ));
    }
    v.parse()
        .map_err(|_| VerifyError::Malformed(HEADER_TIMESTAMP, "expected unix seconds"))
}

/// Verifies a request signed with the contract scheme and one secret; the signature
/// header may list several signatures (a sender mid-rotation).
///
/// `now` is passed in so tests and fuzzing are deterministic. A timestamp further
/// than `max_age` seconds in the past *or* future is refused.
pub fn verify(
    secret: &[u8],
    timestamp_header: Option<&str>,
    signature_header: Option<&str>,
    body: &[u8],
    now: u64,
    max_age: u64,
) -> Result<u64, VerifyError> {
    let keys = Keys {
        scheme: Scheme::XWebhookSignature,
        keys: if secret.is_empty() {
            Vec::new()
        } else {
            vec![secret.to_vec()]
        },
    };
    let header = |name: &str| match name {
        HEADER_TIMESTAMP => timestamp_header,
        HEADER_SIGNATURE => signature_header,
        _ => None,
    };
    keys.verify(header, body, now, max_age).map(|s| s.timestamp)
}

/// Verifies the legacy body-only signature (no timestamp, so no replay window).
pub fn verify_legacy(
    secret: &[u8],
    signature_header: &str,
    body: &[u8],
) -> Result<(), VerifyError> {
    if secret.is_empty() {
        return Err(VerifyError::NoSecret);
    }
    let given = parse_signature_header(signature_header)
        .map_err(|_| VerifyError::Malformed(HEADER_LEGACY_SIGNATURE, "expected 64 hex digits"))?;
    let mut m = mac(secret);
    m.update(body);
    let expected: [u8; 32] = m.finalize().into_bytes().into();
    if bool::from(expected.ct_eq(&given)) {
        Ok(())
    } else {
        Err(VerifyError::Mismatch)
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Standard Webhooks: the message id header (the queue row's `webhook_id`).
pub const HEADER_STANDARD_ID: &str = "webhook-id";
/// Standard Webhooks: unix seconds of this attempt.
pub const HEADER_STANDARD_TIMESTAMP: &str = "webhook-timestamp";
/// Standard Webhooks: space-separated `v1,<base64>` signatures.
pub const HEADER_STANDARD_SIGNATURE: &str = "webhook-signature";
/// How Standard Webhooks marks a symmetric secret.
pub const STANDARD_SECRET_PREFIX: &str = "whsec_";
/// The specification's bounds on a symmetric secret: 24 to 64 bytes once decoded.
const STANDARD_SECRET_BYTES: std::ops::RangeInclusive<usize> = 24..=64;
/// Longest `webhook-id` accepted on a callback.
const MAX_ID_LEN: usize = 256;

/// Which headers carry the signature, in both directions (`security.scheme`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scheme {
    /// The contract's `X-Webhook-Timestamp` + `X-Webhook-Signature-256`.
    #[default]
    XWebhookSignature,
    /// `webhook-id`, `webhook-timestamp`, `webhook-signature` as the Standard Webhooks
    /// specification defines them.
    StandardWebhooks,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::XWebhookSignature => "x-webhook-signature",
            Scheme::StandardWebhooks => "standard-webhooks",
        }
    }
}

/// Why a configured secret cannot be used under a scheme. Never contains the secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("standard-webhooks needs a secret that starts with {STANDARD_SECRET_PREFIX}")]
    MissingPrefix,
    #[error("the part after {STANDARD_SECRET_PREFIX} is not valid base64")]
    NotBase64,
    #[error("decodes to {0} bytes; the Standard Webhooks specification wants 24 to 64")]
    Length(usize),
}

/// The HMAC key a configured secret stands for under `scheme`.
pub fn key_for(scheme: Scheme, secret: &str) -> Result<Vec<u8>, KeyError> {
    match scheme {
        Scheme::XWebhookSignature => Ok(secret.as_bytes().to_vec()),
        Scheme::StandardWebhooks => {
            use base64::Engine as _;
            let encoded = secret
                .strip_prefix(STANDARD_SECRET_PREFIX)
                .ok_or(KeyError::MissingPrefix)?;
            let key = base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .map_err(|_| KeyError::NotBase64)?;
            if STANDARD_SECRET_BYTES.contains(&key.len()) {
                Ok(key)
            } else {
                Err(KeyError::Length(key.len()))
            }
        }
    }
}

/// Standard Webhooks `v1,<base64>` signature of `"{id}.{timestamp}.{body}"`.
pub fn sign_standard(key: &[u8], id: &str, timestamp: u64, body: &[u8]) -> String {
    use base64::Engine as _;
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(standard_raw(key, id, timestamp, body))
    )
}

fn standard_raw(key: &[u8], id: &str, timestamp: u64, body: &[u8]) -> [u8; 32] {
    let mut m = mac(key);
    m.update(id.as_bytes());
    m.update(b".");
    m.update(timestamp.to_string().as_bytes());
    m.update(b".");
    m.update(body);
    m.finalize().into_bytes().into()
}

/// What a verified request was signed with: its timestamp and, under Standard
/// Webhooks, its message id. Together with the body they name the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    pub timestamp: u64,
    pub id: Option<String>,
}

/// The active secrets of one direction under one scheme, newest first, as HMAC keys.
/// `Debug` never shows them.
#[derive(Clone)]
pub struct Keys {
    scheme: Scheme,
    keys: Vec<Vec<u8>>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Keys({}, {} secret(s))",
            self.scheme.as_str(),
            self.keys.len()
        )
    }
}

impl Keys {
    /// Keys for `secrets` (newest first; empty ones are skipped). Fails on the index
    /// of the first secret the scheme cannot use.
    pub fn new<'s>(
        scheme: Scheme,
        secrets: impl IntoIterator<Item = &'s str>,
    ) -> Result<Keys, (usize, KeyError)> {
        let mut keys = Vec::new();
        for (i, secret) in secrets.into_iter().enumerate() {
            if secret.is_empty() {
                continue;
            }
            keys.push(key_for(scheme, secret).map_err(|e| (i, e))?);
        }
        Ok(Keys { scheme, keys })
    }

    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The signature headers of an outgoing request, `(lowercase name, value)`; the
    /// caller adds them marked sensitive. `X-Webhook-Signature-256` lists one hex
    /// signature per secret, comma-separated; `webhook-signature` one `v1,` entry per
    /// secret, space-separated. Without a secret the contract scheme signs with an empty
    /// key, as it always did; Standard Webhooks (validated to have one) sends none.
    pub fn sign_headers(
        &self,
        id: &str,
        timestamp: u64,
        body: &[u8],
    ) -> Vec<(&'static str, String)> {
        match self.scheme {
            Scheme::XWebhookSignature => {
                let signatures: Vec<String> = if self.keys.is_empty() {
                    vec![sign(b"", timestamp, body)]
                } else {
                    self.keys.iter().map(|k| sign(k, timestamp, body)).collect()
                };
                vec![
                    (HEADER_TIMESTAMP, timestamp.to_string()),
                    (HEADER_SIGNATURE, signatures.join(",")),
                ]
            }
            Scheme::StandardWebhooks => {
                let signatures: Vec<String> = self
                    .keys
                    .iter()
                    .map(|k| sign_standard(k, id, timestamp, body))
                    .collect();
                vec![
                    (HEADER_STANDARD_ID, id.to_string()),
                    (HEADER_STANDARD_TIMESTAMP, timestamp.to_string()),
                    (HEADER_STANDARD_SIGNATURE, signatures.join(" ")),
                ]
            }
        }
    }

    /// Verifies a request signed under this scheme with any of the keys; `header`
    /// looks a header up by lowercase name. A timestamp further than `max_age` seconds
    /// from `now`, in either direction, is refused.
    pub fn verify<'h>(
        &self,
        header: impl Fn(&str) -> Option<&'h str>,
        body: &[u8],
        now: u64,
        max_age: u64,
    ) -> Result<Signed, VerifyError> {
        if self.keys.is_empty() {
            return Err(VerifyError::NoSecret);
        }
        match self.scheme {
            Scheme::XWebhookSignature => {
                let sig = header(HEADER_SIGNATURE).ok_or(VerifyError::Missing(HEADER_SIGNATURE))?;
                let ts = header(HEADER_TIMESTAMP).ok_or(VerifyError::Missing(HEADER_TIMESTAMP))?;
                let given = sig
                    .split(',')
                    .map(parse_signature_header)
                    .collect::<Result<Vec<_>, _>>()?;
                let timestamp = fresh(parse_timestamp_header(ts)?, now, max_age)?;
                let expected = self.keys.iter().map(|k| sign_raw(k, timestamp, body));
                any_match(expected, &given)?;
                Ok(Signed {
                    timestamp,
                    id: None,
                })
            }
            Scheme::StandardWebhooks => {
                let id = header(HEADER_STANDARD_ID)
                    .ok_or(VerifyError::Missing(HEADER_STANDARD_ID))?
                    .trim();
                if id.is_empty() || id.len() > MAX_ID_LEN {
                    return Err(VerifyError::Malformed(
                        HEADER_STANDARD_ID,
                        "expected 1 to 256 characters",
                    ));
                }
                let sig = header(HEADER_STANDARD_SIGNATURE)
                    .ok_or(VerifyError::Missing(HEADER_STANDARD_SIGNATURE))?;
                let ts = header(HEADER_STANDARD_TIMESTAMP)
                    .ok_or(VerifyError::Missing(HEADER_STANDARD_TIMESTAMP))?;
                let given = parse_standard_signatures(sig)?;
                let timestamp = parse_timestamp_header(ts).map_err(|_| {
                    VerifyError::Malformed(HEADER_STANDARD_TIMESTAMP, "expected unix seconds")
                })?;
                let timestamp = fresh(timestamp, now, max_age)?;
                let expected = self
                    .keys
                    .iter()
                    .map(|k| standard_raw(k, id, timestamp, body));
                any_match(expected, &given)?;
                Ok(Signed {
                    timestamp,
                    id: Some(id.to_string()),
                })
            }
        }
    }

    /// Verifies the legacy body-only signature against any of the keys.
    pub fn verify_legacy(&self, signature_header: &str, body: &[u8]) -> Result<(), VerifyError> {
        let mut last = VerifyError::NoSecret;
        for key in &self.keys {
            match verify_legacy(key, signature_header, body) {
                Ok(()) => return Ok(()),
                Err(e) => last = e,
            }
        }
        Err(last)
    }
}

fn fresh(timestamp: u64, now: u64, max_age: u64) -> Result<u64, VerifyError> {
    let skew = now.abs_diff(timestamp);
    if skew > max_age {
        Err(VerifyError::Expired(skew, max_age))
    } else {
        Ok(timestamp)
    }
}

/// Whether any expected MAC equals any given one, each compared in constant time.
fn any_match(
    expected: impl Iterator<Item = [u8; 32]>,
    given: &[[u8; 32]],
) -> Result<(), VerifyError> {
    let mut matched = subtle::Choice::from(0);
    for e in expected {
        for g in given {
            matched |= e.ct_eq(g);
        }
    }
    if bool::from(matched) {
        Ok(())
    } else {
        Err(VerifyError::Mismatch)
    }
}

/// The `v1` entries of a `webhook-signature` header. Entries of other versions (`v1a`,
/// a future `v2`) are skipped as the specification's libraries do; a header without
/// any usable `v1` entry is malformed.
fn parse_standard_signatures(value: &str) -> Result<Vec<[u8; 32]>, VerifyError> {
    use base64::Engine as _;
    let mut out = Vec::new();
    for entry in value.split_ascii_whitespace() {
        let Some(("v1", encoded)) = entry.split_once(',') else {
            continue;
        };
        if let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(encoded) {
            if let Ok(mac) = <[u8; 32]>::try_from(raw.as_slice()) {
                out.push(mac);
            }
        }
    }
    if out.is_empty() {
        Err(VerifyError::Malformed(
            HEADER_STANDARD_SIGNATURE,
            "expected space-separated v1,<base64 HMAC-SHA256> entries",
        ))
    } else {
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // From: printf '1700000000.{"a":1}' | openssl dgst -sha256 -hmac secret
    const KNOWN: &str = "49f24e537407743fa4a0242bb63b94b9a47ee99cbbe071ccd8a22550ae411686";

    #[test]
    fn signs_timestamp_dot_body_as_lowercase_hex() {
        assert_eq!(sign(b"secret", 1_700_000_000, br#"{"a":1}"#), KNOWN);
    }

    #[test]
    fn verify_accepts_its_own_signature_with_or_without_prefix() {
        let body = br#"{"demo_id":1,"approved":true}"#;
        let sig = sign(b"k", 1000, body);
        assert_eq!(
            verify(b"k", Some("1000"), Some(&sig), body, 1000, 300),
            Ok(1000)
        );
        let prefixed = format!("sha256={sig}");
        assert!(verify(b"k", Some("1000"), Some(&prefixed), body, 1200, 300).is_ok());
        assert!(verify(
            b"k",
            Some("1000"),
            Some(&sig.to_uppercase()),
            body,
            1000,
            300
        )
        .is_ok());
    }

    #[test]
    fn verify_refuses_tampering_wrong_secret_and_stale_or_future_timestamps() {
        let body = b"{}";
        let sig = sign(b"k", 1000, body);
        assert_eq!(
            verify(b"k", Some("1000"), Some(&sig), b"{ }", 1000, 300),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            verify(b"other", Some("1000"), Some(&sig), body, 1000, 300),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            verify(b"k", Some("1001"), Some(&sig), body, 1000, 300),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            verify(b"k", Some("1000"), Some(&sig), body, 1301, 300),
            Err(VerifyError::Expired(301, 300))
        );
        assert_eq!(
            verify(b"k", Some("1000"), Some(&sig), body, 699, 300),
            Err(VerifyError::Expired(301, 300))
        );
        assert_eq!(
            verify(b"k", None, Some(&sig), body, 1000, 300),
            Err(VerifyError::Missing(HEADER_TIMESTAMP))
        );
        assert_eq!(
            verify(b"k", Some("1000"), None, body, 1000, 300),
            Err(VerifyError::Missing(HEADER_SIGNATURE))
        );
        assert!(matches!(
            verify(b"k", Some("-5"), Some(&sig), body, 1000, 300),
            Err(VerifyError::Malformed(..))
        ));
        assert!(matches!(
            verify(b"k", Some("1000"), Some("zz"), body, 1000, 300),
            Err(VerifyError::Malformed(..))
        ));
        assert_eq!(
            verify(b"", Some("1000"), Some(&sig), body, 1000, 300),
            Err(VerifyError::NoSecret)
        );
    }

    #[test]
    fn legacy_signature_covers_the_body_only() {
        let sig = sign_legacy(b"k", b"{}");
        assert!(verify_legacy(b"k", &sig, b"{}").is_ok());
        assert_eq!(
            verify_legacy(b"k", &sig, b"{ }"),
            Err(VerifyError::Mismatch)
        );
    }

    #[test]
    fn matches_an_independent_hmac_implementation() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        // Here the data is split as "{timestamp}.{body}" can't express it, so check
        // the legacy (body-only) path, which is plain HMAC-SHA256.
        assert_eq!(
            sign_legacy(b"Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    // The Standard Webhooks specification's published example (its libraries' sign
    // test): secret, message id, timestamp and body, and the signature they must give.
    const SPEC_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const SPEC_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const SPEC_TIMESTAMP: u64 = 1_614_265_330;
    const SPEC_BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SPEC_SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn lookup<'a>(pairs: &'a [(&'static str, String)]) -> impl Fn(&str) -> Option<&'a str> {
        move |name| {
            pairs
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.as_str())
        }
    }

    #[test]
    fn standard_webhooks_reproduces_the_specifications_example() {
        let key = key_for(Scheme::StandardWebhooks, SPEC_SECRET).expect("key");
        assert_eq!(key.len(), 24);
        assert_eq!(
            sign_standard(&key, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY),
            SPEC_SIGNATURE
        );
        let keys = Keys::new(Scheme::StandardWebhooks, [SPEC_SECRET]).expect("keys");
        let headers = keys.sign_headers(SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY);
        assert_eq!(
            headers,
            vec![
                (HEADER_STANDARD_ID, SPEC_ID.to_string()),
                (HEADER_STANDARD_TIMESTAMP, SPEC_TIMESTAMP.to_string()),
                (HEADER_STANDARD_SIGNATURE, SPEC_SIGNATURE.to_string()),
            ]
        );
        assert_eq!(
            keys.verify(lookup(&headers), SPEC_BODY, SPEC_TIMESTAMP + 10, 300),
            Ok(Signed {
                timestamp: SPEC_TIMESTAMP,
                id: Some(SPEC_ID.to_string())
            })
        );
    }

    #[test]
    fn standard_webhooks_refuses_tampering_staleness_and_missing_headers() {
        let keys = Keys::new(Scheme::StandardWebhooks, [SPEC_SECRET]).expect("keys");
        let good = keys.sign_headers(SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY);
        let now = SPEC_TIMESTAMP;
        let with = |name: &'static str, value: &str| {
            let mut h = good.clone();
            h.retain(|(n, _)| *n != name);
            h.push((name, value.to_string()));
            h
        };
        let without = |name: &'static str| {
            let mut h = good.clone();
            h.retain(|(n, _)| *n != name);
            h
        };
        assert_eq!(
            keys.verify(lookup(&good), br#"{"test": 2432232315}"#, now, 300),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            keys.verify(
                lookup(&with(HEADER_STANDARD_ID, "msg_other")),
                SPEC_BODY,
                now,
                300
            ),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            keys.verify(lookup(&good), SPEC_BODY, now + 301, 300),
            Err(VerifyError::Expired(301, 300))
        );
        for name in [
            HEADER_STANDARD_ID,
            HEADER_STANDARD_TIMESTAMP,
            HEADER_STANDARD_SIGNATURE,
        ] {
            assert_eq!(
                keys.verify(lookup(&without(name)), SPEC_BODY, now, 300),
                Err(VerifyError::Missing(name))
            );
        }
        assert!(matches!(
            keys.verify(
                lookup(&with(HEADER_STANDARD_SIGNATURE, "v2,abc")),
                SPEC_BODY,
                now,
                300
            ),
            Err(VerifyError::Malformed(..))
        ));
        // A list with one good v1 entry among others verifies, as in the spec's libraries.
        let list =
            format!("v1a,AAAA v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc= {SPEC_SIGNATURE}");
        assert!(keys
            .verify(
                lookup(&with(HEADER_STANDARD_SIGNATURE, &list)),
                SPEC_BODY,
                now,
                300
            )
            .is_ok());
    }

    #[test]
    fn standard_webhooks_secrets_must_be_whsec_base64_of_24_to_64_bytes() {
        let s = Scheme::StandardWebhooks;
        assert_eq!(
            key_for(s, "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
            Err(KeyError::MissingPrefix)
        );
        assert_eq!(key_for(s, "whsec_not base64!"), Err(KeyError::NotBase64));
        assert_eq!(key_for(s, "whsec_c2hvcnQ="), Err(KeyError::Length(5)));
        assert_eq!(
            Keys::new(s, ["", SPEC_SECRET, "plain"])
                .map(|k| k.is_empty())
                .err(),
            Some((2, KeyError::MissingPrefix))
        );
        assert_eq!(
            key_for(Scheme::XWebhookSignature, "plain"),
            Ok(b"plain".to_vec())
        );
    }

    #[test]
    fn several_secrets_sign_newest_first_and_either_one_verifies() {
        let body = br#"{"a":1}"#;
        let both = Keys::new(Scheme::XWebhookSignature, ["new", "old"]).expect("keys");
        let headers = both.sign_headers("id", 1000, body);
        let expected = format!("{},{}", sign(b"new", 1000, body), sign(b"old", 1000, body));
        assert_eq!(headers[1], (HEADER_SIGNATURE, expected));
        for single in ["new", "old"] {
            let receiver = Keys::new(Scheme::XWebhookSignature, [single]).expect("keys");
            assert!(
                receiver.verify(lookup(&headers), body, 1000, 300).is_ok(),
                "{single}"
            );
            // A sender that knows only one of them is accepted by a verifier with both.
            let alone = receiver.sign_headers("id", 1000, body);
            assert!(
                both.verify(lookup(&alone), body, 1000, 300).is_ok(),
                "{single}"
            );
        }
        let stranger = Keys::new(Scheme::XWebhookSignature, ["other"]).expect("keys");
        assert_eq!(
            stranger.verify(lookup(&headers), body, 1000, 300),
            Err(VerifyError::Mismatch)
        );

        let second = "whsec_c2Vjb25kLXNlY3JldC1vZi0yNC1ieXQh";
        let standard = Keys::new(Scheme::StandardWebhooks, [second, SPEC_SECRET]).expect("keys");
        let headers = standard.sign_headers(SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY);
        let value = &headers[2].1;
        assert!(value.ends_with(&format!(" {SPEC_SIGNATURE}")), "{value}");
        assert_eq!(value.split(' ').count(), 2);
        let old_only = Keys::new(Scheme::StandardWebhooks, [SPEC_SECRET]).expect("keys");
        assert!(old_only
            .verify(lookup(&headers), SPEC_BODY, SPEC_TIMESTAMP, 300)
            .is_ok());
    }
}
