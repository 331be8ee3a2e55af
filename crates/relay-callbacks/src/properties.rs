//! Property tests (proptest) for what parses untrusted input: the signature headers
//! (`relay_core::signature`'s parsers and verify, through this crate's `Verifier`)
//! and the payload decoders. Bounded case counts keep them in `cargo test`; raise
//! them with `PROPTEST_CASES=100000 cargo test -p relay-callbacks properties`.

use http::{HeaderMap, HeaderValue};
use proptest::prelude::*;
use relay_core::signature::{
    self, parse_signature_header, parse_timestamp_header, VerifyError, HEADER_LEGACY_SIGNATURE,
    HEADER_SIGNATURE, HEADER_TIMESTAMP,
};
use serde_json::{json, Value};

use crate::payload::{decode, Callback, PayloadError};
use crate::routes::Endpoint;
use crate::verify::tests::{signed_headers, verifier};
use crate::verify::SignatureError;

const POSTS: [Endpoint; 6] = [
    Endpoint::DemoApproval,
    Endpoint::VideoApproval,
    Endpoint::WorkflowCompleted,
    Endpoint::WorkflowStatus,
    Endpoint::ErrorNotification,
    Endpoint::TestTrigger,
];

fn config() -> ProptestConfig {
    // PROPTEST_CASES in the environment overrides this.
    ProptestConfig::with_cases(256)
}

/// Arbitrary JSON, a few levels deep.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        ".{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            prop::collection::btree_map(
                prop_oneof![
                    Just("demo_id".to_string()),
                    Just("video_id".to_string()),
                    Just("approved".to_string()),
                    Just("execution_id".to_string()),
                    Just("workflow_id".to_string()),
                    Just("error".to_string()),
                    Just("event_type".to_string()),
                    "[a-z_]{1,8}",
                ],
                inner,
                0..8
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn header_map(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (name, value) in pairs {
        if let Ok(v) = HeaderValue::from_str(value) {
            h.insert(*name, v);
        }
    }
    h
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn signature_header_parser_accepts_exactly_64_hex_digits(value in ".{0,80}") {
        let parsed = parse_signature_header(&value);
        let bare = value.trim();
        let bare = bare.strip_prefix("sha256=").unwrap_or(bare);
        let valid = bare.len() == 64 && bare.bytes().all(|b| b.is_ascii_hexdigit());
        prop_assert_eq!(parsed.is_ok(), valid, "{:?}", value);
        if let Ok(bytes) = parsed {
            prop_assert_eq!(hex::encode(bytes), bare.to_ascii_lowercase());
        }
    }

    #[test]
    fn timestamp_parser_accepts_only_short_digit_strings(value in "[0-9 a-z+-]{0,16}") {
        let parsed = parse_timestamp_header(&value);
        let t = value.trim();
        let valid = !t.is_empty() && t.len() <= 12 && t.bytes().all(|b| b.is_ascii_digit());
        prop_assert_eq!(parsed.is_ok(), valid, "{:?}", value);
        if let Ok(n) = parsed {
            prop_assert_eq!(Ok(n), t.parse::<u64>());
        }
    }

    #[test]
    fn arbitrary_headers_never_verify_and_never_panic(
        ts in prop::option::of(".{0,20}"),
        sig in prop::option::of(".{0,80}"),
        legacy in prop::option::of(".{0,80}"),
        body in prop::collection::vec(any::<u8>(), 0..64),
        allow_legacy in any::<bool>(),
    ) {
        let mut pairs = Vec::new();
        if let Some(ts) = &ts { pairs.push((HEADER_TIMESTAMP, ts.as_str())); }
        if let Some(sig) = &sig { pairs.push((HEADER_SIGNATURE, sig.as_str())); }
        if let Some(l) = &legacy { pairs.push((HEADER_LEGACY_SIGNATURE, l.as_str())); }
        let result = verifier(allow_legacy).check("/p", &header_map(&pairs), &body, 1_000_000);
        prop_assert!(result.is_err(), "random headers verified: {:?}", pairs);
    }

    #[test]
    fn a_signature_verifies_for_its_body_and_no_other(
        body in prop::collection::vec(any::<u8>(), 0..256),
        ts in 1_000u64..4_000_000_000,
        skew in -300i64..=300,
        flip in any::<prop::sample::Index>(),
    ) {
        let now = ts.saturating_add_signed(skew);
        let v = verifier(false);
        prop_assert!(v.check("/p", &signed_headers(ts, &body), &body, now).is_ok());
        if !body.is_empty() {
            let mut tampered = body.clone();
            let i = flip.index(tampered.len());
            tampered[i] ^= 0x01;
            prop_assert_eq!(
                v.check("/p", &signed_headers(ts, &body), &tampered, now),
                Err(SignatureError::Invalid(VerifyError::Mismatch))
            );
        }
        let late = ts + 301;
        prop_assert!(v.check("/p", &signed_headers(ts, &body), &body, late).is_err());
        prop_assert_eq!(signature::sign(b"k", ts, &body).len(), 64);
    }

    #[test]
    fn decoders_never_panic_on_arbitrary_bytes(
        body in prop::collection::vec(any::<u8>(), 0..256),
        which in 0usize..6,
    ) {
        let _ = decode(POSTS[which], &body);
    }

    #[test]
    fn decoders_accept_or_name_a_field_for_any_json_object(
        value in any_json(),
        which in 0usize..6,
    ) {
        let body = value.to_string();
        match decode(POSTS[which], body.as_bytes()) {
            Ok(_) => prop_assert!(value.is_object()),
            Err(PayloadError::Malformed(_)) => prop_assert!(!value.is_object()),
            Err(PayloadError::Field { field, message }) => {
                prop_assert!(value.is_object());
                prop_assert!(!field.is_empty(), "{}", message);
                prop_assert!(message.starts_with(&field), "{}", message);
            }
        }
    }

    #[test]
    fn valid_approvals_round_trip_with_any_extra_fields(
        id in any::<i64>(),
        approved in any::<bool>(),
        reviewer in prop::option::of("[^\u{0}]{0,20}"),
        notes in prop::option::of("[^\u{0}]{0,40}"),
        extra in any_json(),
    ) {
        let body = json!({"demo_id": id, "approved": approved, "reviewer": reviewer,
                          "notes": notes, "from_n8n": extra});
        let decoded = decode(Endpoint::DemoApproval, body.to_string().as_bytes());
        let Ok(Callback::DemoApproval(a)) = decoded else {
            return Err(TestCaseError::fail(format!("{decoded:?}")));
        };
        prop_assert_eq!(a.id, id);
        prop_assert_eq!(a.approved, approved);
        prop_assert_eq!(a.reviewer, reviewer);
        prop_assert_eq!(a.notes, notes);
    }

    #[test]
    fn an_id_written_as_text_is_that_id(id in any::<i64>(), pad in " {0,2}") {
        let body = json!({"demo_id": format!("{pad}{id}{pad}"), "approved": "true"});
        let decoded = decode(Endpoint::DemoApproval, body.to_string().as_bytes());
        let Ok(Callback::DemoApproval(a)) = decoded else {
            return Err(TestCaseError::fail(format!("{decoded:?}")));
        };
        prop_assert_eq!(a.id, id);
        prop_assert!(a.approved);
    }

    #[test]
    fn a_mistyped_required_field_is_named(
        wrong in prop_oneof![
            // Text that is an integer's digits is that id (`lax`); any other is not.
            ".{0,8}"
                .prop_filter("not an integer's digits", |s| s.trim().parse::<i64>().is_err())
                .prop_map(Value::from),
            any::<f64>().prop_filter("not integral", |f| f.fract() != 0.0).prop_map(|f| json!(f)),
            Just(json!([])),
            Just(json!({})),
        ],
    ) {
        let body = json!({"demo_id": wrong, "approved": true});
        let e = decode(Endpoint::DemoApproval, body.to_string().as_bytes());
        prop_assert!(
            matches!(&e, Err(PayloadError::Field { field, .. }) if field == "demo_id"),
            "{:?}", e
        );
    }
}
