//! Signing and verifying JSON as a device or user (ed25519 identity keys).
//!
//! The same [Signing JSON] algorithm as [`crate::signing`], but for client
//! objects: device keys (`signatures.<user_id>.ed25519:<device_id>`), signed
//! one-time and fallback keys, and anything else an Olm account signs. The
//! objects are `serde_json` maps because that is how the SDK builds its
//! requests; they are converted to canonical JSON before signing, so a float
//! anywhere is refused rather than signed ambiguously.
//!
//! [Signing JSON]: https://spec.matrix.org/v1.16/appendices/#signing-json

use ruma::CanonicalJsonValue;
use serde_json::{Map, Value};
use vodozemac::{Ed25519PublicKey, Ed25519Signature};

use crate::to_canonical_string;

/// Errors from signing or verifying a device-signed object.
///
/// Never carries the signed content or key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeviceSignatureError {
    /// No signature under `signatures.<entity>.<key_id>`.
    #[error("no signature by `{entity}` with `{key_id}`")]
    MissingSignature {
        /// The user id that should have signed.
        entity: String,
        /// The key id that should have signed (`ed25519:<device_id>`).
        key_id: String,
    },

    /// The signature is present but does not verify with the given key.
    #[error("signature by `{entity}` with `{key_id}` does not verify")]
    Invalid {
        /// The user id that signed.
        entity: String,
        /// The key id that signed.
        key_id: String,
    },

    /// The object cannot be signed or checked: a float, an integer outside
    /// canonical JSON's range, or a non-object `signatures`.
    #[error("object cannot be canonicalized: {0}")]
    Malformed(String),
}

/// Verifies the signature under `signatures.<entity>.<key_id>` on `object`
/// with `key`. Other signatures on the object are ignored.
///
/// # Errors
///
/// [`DeviceSignatureError::MissingSignature`] if there is no such signature
/// (or it is not a string of valid base64), [`DeviceSignatureError::Invalid`]
/// if it does not verify, [`DeviceSignatureError::Malformed`] if the object
/// is not canonical JSON.
pub fn verify_json_signature(
    key: &Ed25519PublicKey,
    entity: &str,
    key_id: &str,
    object: &Map<String, Value>,
) -> Result<(), DeviceSignatureError> {
    let missing = || DeviceSignatureError::MissingSignature {
        entity: entity.to_owned(),
        key_id: key_id.to_owned(),
    };
    let signature = object
        .get("signatures")
        .and_then(|s| s.get(entity))
        .and_then(|s| s.get(key_id))
        .and_then(Value::as_str)
        .ok_or_else(missing)?;
    let signature = Ed25519Signature::from_base64(signature).map_err(|_| missing())?;
    let bytes = signing_bytes(object)?;
    key.verify(bytes.as_bytes(), &signature)
        .map_err(|_| DeviceSignatureError::Invalid {
            entity: entity.to_owned(),
            key_id: key_id.to_owned(),
        })
}

/// Signs `object` with `sign` and stores the signature under
/// `signatures.<entity>.<key_id>`, keeping other signatures.
pub(crate) fn sign_json_with(
    sign: impl FnOnce(&[u8]) -> Ed25519Signature,
    entity: &str,
    key_id: &str,
    object: &mut Map<String, Value>,
) -> Result<(), DeviceSignatureError> {
    let signature = sign(signing_bytes(object)?.as_bytes());
    let signatures = object
        .entry("signatures")
        .or_insert_with(|| Value::Object(Map::new()))
        .as_object_mut()
        .ok_or_else(|| malformed("`signatures` is not an object"))?;
    let by_entity = signatures
        .entry(entity)
        .or_insert_with(|| Value::Object(Map::new()))
        .as_object_mut()
        .ok_or_else(|| malformed("`signatures.<entity>` is not an object"))?;
    by_entity.insert(key_id.to_owned(), Value::String(signature.to_base64()));
    Ok(())
}

/// The canonical JSON of `object` without `signatures` and `unsigned`.
fn signing_bytes(object: &Map<String, Value>) -> Result<String, DeviceSignatureError> {
    let mut object = object.clone();
    object.remove("signatures");
    object.remove("unsigned");
    let canonical = CanonicalJsonValue::try_from(Value::Object(object))
        .map_err(|e| malformed(&e.to_string()))?;
    match canonical {
        CanonicalJsonValue::Object(object) => Ok(to_canonical_string(&object)),
        _ => Err(malformed("not an object")),
    }
}

fn malformed(reason: &str) -> DeviceSignatureError {
    DeviceSignatureError::Malformed(reason.to_owned())
}

#[cfg(test)]
mod tests {
    use serde_json::{Map, Value, json};
    use vodozemac::Ed25519SecretKey;

    use super::{DeviceSignatureError, sign_json_with, verify_json_signature};
    use crate::testing::SPEC_SEED;

    fn spec_secret() -> Ed25519SecretKey {
        let seed: [u8; 32] = crate::base64::decode(SPEC_SEED)
            .unwrap()
            .try_into()
            .unwrap();
        Ed25519SecretKey::from_slice(&seed)
    }

    fn map(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    /// Source: matrix-org/matrix-spec, content/appendices.md, commit
    /// d0ba2aaef801e0134a4e5c6054a2c2f41bb55531 ("Signing JSON"): the same
    /// algorithm signs device keys, so the published signatures must come out
    /// byte for byte with the published seed.
    #[test]
    fn spec_json_signing_vectors() {
        let secret = spec_secret();
        let mut empty = Map::new();
        sign_json_with(|b| secret.sign(b), "domain", "ed25519:1", &mut empty).unwrap();
        assert_eq!(
            Value::Object(empty),
            json!({"signatures": {"domain": {"ed25519:1": "K8280/U9SSy9IVtjBuVeLr+HpOB4BQFWbg+UZaADMtTdGYI7Geitb76LTrr5QV/7Xg4ahLwYGYZzuHGZKM5ZAQ"}}})
        );
        let mut two = map(json!({"two": "Two", "one": 1}));
        sign_json_with(|b| secret.sign(b), "domain", "ed25519:1", &mut two).unwrap();
        assert_eq!(
            two["signatures"]["domain"]["ed25519:1"],
            "KqmLSbO39/Bzb0QIYE82zqLwsA+PDzYIpIRA2sRQ4sL53+sN6/fpNSoqE7BP7vBZhG6kYdD13EIMJpvhJI+6Bw"
        );
        verify_json_signature(&secret.public_key(), "domain", "ed25519:1", &two).unwrap();
    }

    #[test]
    fn unsigned_is_excluded_but_content_is_covered() {
        let secret = spec_secret();
        let key = secret.public_key();
        let mut object = map(json!({"device_id": "D", "keys": {"curve25519:D": "abc"}}));
        sign_json_with(|b| secret.sign(b), "@a:x", "ed25519:D", &mut object).unwrap();
        object.insert("unsigned".into(), json!({"device_display_name": "phone"}));
        verify_json_signature(&key, "@a:x", "ed25519:D", &object).unwrap();

        object["keys"]["curve25519:D"] = json!("abd");
        assert!(matches!(
            verify_json_signature(&key, "@a:x", "ed25519:D", &object),
            Err(DeviceSignatureError::Invalid { .. })
        ));
    }

    #[test]
    fn missing_signature_is_named() {
        let key = spec_secret().public_key();
        let object = map(json!({"a": 1}));
        assert!(matches!(
            verify_json_signature(&key, "@a:x", "ed25519:D", &object),
            Err(DeviceSignatureError::MissingSignature { .. })
        ));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        /// Any object signs and verifies, and any single-byte flip of its
        /// signature breaks it.
        #[test]
        fn any_signature_byte_flip_fails(
            input in crate::testing::canonical_object(),
            index in 0usize..64,
            mask in 1u8..,
        ) {
            let secret = spec_secret();
            let value = serde_json::to_value(ruma::CanonicalJsonValue::Object(input)).unwrap();
            let mut object = map(value);
            object.remove("signatures");
            sign_json_with(|b| secret.sign(b), "@a:x", "ed25519:D", &mut object).unwrap();
            verify_json_signature(&secret.public_key(), "@a:x", "ed25519:D", &object).unwrap();

            let signature = object["signatures"]["@a:x"]["ed25519:D"].as_str().unwrap();
            let mut bytes = crate::base64::decode(signature).unwrap();
            bytes[index] ^= mask;
            object["signatures"]["@a:x"]["ed25519:D"] = Value::String(crate::base64::encode(&bytes));
            proptest::prop_assert!(
                verify_json_signature(&secret.public_key(), "@a:x", "ed25519:D", &object).is_err()
            );
        }
    }

    #[test]
    fn floats_are_refused() {
        let secret = spec_secret();
        let mut object = map(json!({"a": 1.5}));
        assert!(matches!(
            sign_json_with(|b| secret.sign(b), "@a:x", "ed25519:D", &mut object),
            Err(DeviceSignatureError::Malformed(_))
        ));
    }
}
