use proptest::prelude::*;
use ruma::{CanonicalJsonValue, ServerName, serde::Base64, server_name};

use super::{PublicKeyMap, SignatureError, sign_json, verify_json, verify_signature_by};
use crate::{
    SigningKey, parse_canonical_object,
    testing::{canonical_object, object, ruma_key, spec_key},
    to_canonical_string,
};

fn domain() -> &'static ServerName {
    server_name!("domain")
}

/// The `domain` / `ed25519:1` signature in a signed object.
fn signature_of(object: &ruma::CanonicalJsonObject) -> String {
    object
        .get("signatures")
        .and_then(CanonicalJsonValue::as_object)
        .and_then(|s| s.get("domain"))
        .and_then(CanonicalJsonValue::as_object)
        .and_then(|s| s.get("ed25519:1"))
        .and_then(CanonicalJsonValue::as_str)
        .unwrap()
        .to_owned()
}

/// Signs `input` as `domain` and returns the canonical JSON.
fn signed(key: &SigningKey, input: &str) -> String {
    let mut object = object(input);
    sign_json(domain(), key, &mut object).unwrap();
    to_canonical_string(&object)
}

fn keys_for(key: &SigningKey) -> PublicKeyMap {
    let mut map = PublicKeyMap::new();
    map.entry("domain".to_owned())
        .or_default()
        .insert(key.key_id().to_string(), key.public_key());
    map
}

/// Source: matrix-org/matrix-spec, content/appendices.md, commit
/// d0ba2aaef801e0134a4e5c6054a2c2f41bb55531 ("Signing JSON" examples, key
/// `ed25519:1` from the published seed).
#[test]
fn spec_json_signing_vectors() {
    assert_eq!(
        signed(&spec_key(), "{}"),
        r#"{"signatures":{"domain":{"ed25519:1":"K8280/U9SSy9IVtjBuVeLr+HpOB4BQFWbg+UZaADMtTdGYI7Geitb76LTrr5QV/7Xg4ahLwYGYZzuHGZKM5ZAQ"}}}"#
    );
    assert_eq!(
        signed(&spec_key(), r#"{"one": 1, "two": "Two"}"#),
        r#"{"one":1,"signatures":{"domain":{"ed25519:1":"KqmLSbO39/Bzb0QIYE82zqLwsA+PDzYIpIRA2sRQ4sL53+sN6/fpNSoqE7BP7vBZhG6kYdD13EIMJpvhJI+6Bw"}},"two":"Two"}"#
    );
}

/// Source: ruma/ruma, crates/ruma-signatures/src/lib.rs (mod tests:
/// `sign_empty_json`, `sign_minimal_json`), commit
/// 0908aaa9847093ecb32bc6edf0af525f726717fd: same inputs, ruma's test key.
#[test]
fn ruma_json_signing_vectors() {
    assert_eq!(
        signed(&ruma_key(), "{}"),
        r#"{"signatures":{"domain":{"ed25519:1":"lXjsnvhVlz8t3etR+6AEJ0IT70WujeHC1CFjDDsVx0xSig1Bx7lvoi1x3j/2/GPNjQM4a2gD34UqsXFluaQEBA"}}}"#
    );
    assert_eq!(
        signed(&ruma_key(), r#"{"one": 1, "two": "Two"}"#),
        r#"{"one":1,"signatures":{"domain":{"ed25519:1":"t6Ehmh6XTDz7qNWI0QI5tNPSliWLPQP/+Fzz3LpdCS7q1k2G2/5b5Embs2j4uG3ZeivejrzqSVoBcdocRpa+AQ"}},"two":"Two"}"#
    );
}

#[test]
fn spec_vectors_verify_and_unsigned_is_not_covered() {
    let keys = keys_for(&spec_key());
    let mut vector = object(&signed(&spec_key(), r#"{"one": 1, "two": "Two"}"#));
    verify_json(&keys, &vector).unwrap();

    // `unsigned` is outside the signature by definition.
    vector.insert(
        "unsigned".to_owned(),
        CanonicalJsonValue::Object(object(r#"{"age": 5}"#)),
    );
    verify_json(&keys, &vector).unwrap();

    vector.insert(
        "two".to_owned(),
        CanonicalJsonValue::String("Three".to_owned()),
    );
    assert!(matches!(
        verify_json(&keys, &vector),
        Err(SignatureError::Invalid(_))
    ));
}

#[test]
fn one_signature_is_checked_and_others_are_ignored() {
    // The spec's vector, plus a signature from an entity nobody has keys for.
    let mut vector = object(&signed(&spec_key(), r#"{"one": 1, "two": "Two"}"#));
    let other = object(r#"{"@bob:x": {"ed25519:BOB": "AAAA"}}"#);
    if let Some(CanonicalJsonValue::Object(signatures)) = vector.get_mut("signatures") {
        signatures.extend(other);
    }
    verify_signature_by(&vector, "domain", "ed25519:1", crate::testing::SPEC_PUBLIC_KEY).unwrap();

    // The right signature checked against another key fails.
    let wrong_key = ruma_key().public_key().encode();
    assert!(matches!(
        verify_signature_by(&vector, "domain", "ed25519:1", &wrong_key),
        Err(SignatureError::Invalid(_))
    ));
    // A signature that is not there is missing, not "invalid".
    assert!(matches!(
        verify_signature_by(&vector, "domain", "ed25519:2", crate::testing::SPEC_PUBLIC_KEY),
        Err(SignatureError::MissingSignature { entity }) if entity == "domain"
    ));
    // Changing signed content breaks it.
    vector.insert("two".to_owned(), CanonicalJsonValue::String("2".to_owned()));
    assert!(matches!(
        verify_signature_by(&vector, "domain", "ed25519:1", crate::testing::SPEC_PUBLIC_KEY),
        Err(SignatureError::Invalid(_))
    ));
}

#[test]
fn signing_keeps_other_signatures() {
    let mut vector = object(r#"{"signatures": {"other.example": {"ed25519:x": "AAAA"}}}"#);
    sign_json(domain(), &spec_key(), &mut vector).unwrap();
    let signatures = vector["signatures"].as_object().unwrap();
    assert!(signatures.contains_key("other.example"));
    assert!(signatures.contains_key("domain"));
}

#[test]
fn verification_failures_are_specific() {
    let key = spec_key();
    let vector = object(&signed(&key, r#"{"one": 1}"#));

    // Signed by another key under the same key id.
    assert!(matches!(
        verify_json(&keys_for(&ruma_key()), &vector),
        Err(SignatureError::Invalid(_))
    ));

    // No keys for the signer at all.
    let err = verify_json(&PublicKeyMap::new(), &vector).unwrap_err();
    assert!(matches!(&err, SignatureError::UnknownEntity { entity } if entity == "domain"));

    // Keys for the signer, but not under the key id it used.
    let mut other_id = PublicKeyMap::new();
    other_id
        .entry("domain".to_owned())
        .or_default()
        .insert("ed25519:2".to_owned(), key.public_key());
    let err = verify_json(&other_id, &vector).unwrap_err();
    assert!(matches!(&err, SignatureError::MissingSignature { entity } if entity == "domain"));

    // Nothing signed.
    assert!(matches!(
        verify_json(&keys_for(&key), &object(r#"{"one": 1}"#)),
        Err(SignatureError::Malformed(_))
    ));

    // A signature that is not base64.
    let bad = object(r#"{"one": 1, "signatures": {"domain": {"ed25519:1": "!!"}}}"#);
    let err = verify_json(&keys_for(&key), &bad).unwrap_err();
    assert!(
        matches!(&err, SignatureError::SignatureNotBase64 { path } if path == "signatures.domain.ed25519:1"),
        "{err:?}"
    );

    // `signatures` of the wrong type, when signing.
    let mut wrong = object(r#"{"signatures": []}"#);
    assert!(matches!(
        sign_json(domain(), &key, &mut wrong),
        Err(SignatureError::Malformed(_))
    ));
}

/// Records a quirk rather than a property: unpadded base64 decoding tolerates
/// non-zero trailing bits (ruma follows matrix-org/matrix-spec#838, and the
/// spec's own seed needs it), so two signature strings that differ only in the
/// last character's unused bits are the same signature. Nothing may use a
/// signature's text as an identity; event ids never include signatures.
#[test]
fn signature_text_is_malleable_in_trailing_bits_only() {
    let key = spec_key();
    let mut vector = object("{}");
    sign_json(domain(), &key, &mut vector).unwrap();
    let signature = signature_of(&vector);
    assert!(signature.ends_with('Q')); // 0b010000: the low four bits are unused
    let altered = format!("{}R", &signature[..signature.len() - 1]);
    vector
        .get_mut("signatures")
        .and_then(CanonicalJsonValue::as_object_mut)
        .and_then(|s| s.get_mut("domain"))
        .and_then(CanonicalJsonValue::as_object_mut)
        .unwrap()
        .insert("ed25519:1".to_owned(), CanonicalJsonValue::String(altered));
    verify_json(&keys_for(&key), &vector).unwrap();
}

/// Replaces the signature of `domain` in `object` with `signature`.
fn with_signature(
    mut object: ruma::CanonicalJsonObject,
    signature: &[u8],
) -> ruma::CanonicalJsonObject {
    let encoded = Base64::<ruma::serde::base64::Standard, _>::new(signature).encode();
    let mut entity = ruma::CanonicalJsonObject::new();
    entity.insert("ed25519:1".to_owned(), CanonicalJsonValue::String(encoded));
    let mut signatures = ruma::CanonicalJsonObject::new();
    signatures.insert("domain".to_owned(), CanonicalJsonValue::Object(entity));
    object.insert(
        "signatures".to_owned(),
        CanonicalJsonValue::Object(signatures),
    );
    object
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Any single-byte change to the signed bytes (the canonical JSON without
    /// `signatures` and `unsigned`) either stops them parsing or breaks the
    /// signature.
    #[test]
    fn any_byte_flip_of_signed_bytes_fails(
        mut input in canonical_object(),
        index in any::<prop::sample::Index>(),
        mask in 1u8..,
    ) {
        input.remove("signatures");
        input.remove("unsigned");
        let key = spec_key();
        let mut signed = input.clone();
        sign_json(domain(), &key, &mut signed).unwrap();
        let signatures = signed["signatures"].clone();

        let mut bytes = to_canonical_string(&input).into_bytes();
        let at = index.index(bytes.len());
        bytes[at] ^= mask;
        let Ok(text) = String::from_utf8(bytes) else { return Ok(()) };
        let Ok(mut tampered) = parse_canonical_object(&text) else { return Ok(()) };
        let mut message = tampered.clone();
        message.remove("signatures");
        message.remove("unsigned");
        // A flip can respell the same object (`\u001f` to `\u001F`): same
        // message, so the signature rightly still holds.
        prop_assume!(message != input);
        tampered.insert("signatures".to_owned(), signatures);
        prop_assert!(verify_json(&keys_for(&key), &tampered).is_err());
    }

    /// Any single-byte change to the signature itself breaks it.
    #[test]
    fn any_byte_flip_of_signature_fails(
        mut input in canonical_object(),
        index in 0usize..64,
        mask in 1u8..,
    ) {
        input.remove("signatures");
        let key = spec_key();
        let mut signed = input;
        sign_json(domain(), &key, &mut signed).unwrap();
        let mut signature = crate::base64::decode(&signature_of(&signed)).unwrap();
        prop_assert_eq!(signature.len(), 64);
        signature[index] ^= mask;
        let tampered = with_signature(signed, &signature);
        let err = verify_json(&keys_for(&key), &tampered).unwrap_err();
        prop_assert!(matches!(err, SignatureError::Invalid(_)), "{:?}", err);
    }

    /// Signing then verifying succeeds for any object.
    #[test]
    fn sign_then_verify(mut input in canonical_object()) {
        input.remove("signatures");
        let key = spec_key();
        let mut signed = input;
        sign_json(domain(), &key, &mut signed).unwrap();
        let reparsed = parse_canonical_object(&to_canonical_string(&signed)).unwrap();
        prop_assert!(verify_json(&keys_for(&key), &reparsed).is_ok());
    }
}
