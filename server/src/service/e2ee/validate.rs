//! Checks on the key objects clients upload: shape, ids and signatures.
//!
//! Pure functions over the uploaded JSON text. Each returns what storage
//! needs (the identity keys, the public key) alongside the text itself,
//! which is stored and served unchanged.

use base64::{Engine, engine::general_purpose::STANDARD_NO_PAD};
use myelin_crypto::{parse_canonical_object, verify_signature_by};
use ruma::{CanonicalJsonObject, CanonicalJsonValue, DeviceId, UserId};

use crate::{
    service::ServiceError,
    storage::{CrossSigningKey, CrossSigningKeyType, DeviceKeys, OneTimeKey},
};

/// Length of an ed25519 or curve25519 public key in bytes.
const PUBLIC_KEY_BYTES: usize = 32;

/// Checks a device's `DeviceKeys` object: it names this user and device,
/// lists algorithms, carries the device's ed25519 and curve25519 keys, and
/// is signed by that ed25519 key.
///
/// # Errors
/// `BadJson` for a wrong shape (a field of the wrong type), `InvalidParam`
/// naming what else is wrong.
pub fn check_device_keys(
    json: &str,
    user_id: &UserId,
    device_id: &DeviceId,
) -> Result<DeviceKeys, ServiceError> {
    let object = parse_object(json, "device_keys")?;
    // The shape first, then what the values say.
    for field in ["user_id", "device_id"] {
        if object
            .get(field)
            .is_some_and(|value| value.as_str().is_none())
        {
            return Err(malformed(format!("device_keys.{field} must be a string")));
        }
    }
    let algorithms = object
        .get("algorithms")
        .and_then(CanonicalJsonValue::as_array)
        .ok_or_else(|| malformed("device_keys.algorithms must be a list"))?;
    if !algorithms.iter().all(|a| a.as_str().is_some()) {
        return Err(malformed("device_keys.algorithms must be strings"));
    }
    let keys = object
        .get("keys")
        .and_then(CanonicalJsonValue::as_object)
        .ok_or_else(|| malformed("device_keys.keys must be an object"))?;
    if !keys.values().all(|key| key.as_str().is_some()) {
        return Err(malformed("device_keys.keys must map key ids to strings"));
    }
    if string_field(&object, "user_id") != Some(user_id.as_str()) {
        return Err(invalid("device_keys.user_id is not your user id"));
    }
    if string_field(&object, "device_id") != Some(device_id.as_str()) {
        return Err(invalid(
            "device_keys.device_id is not the device of your access token",
        ));
    }
    if algorithms.is_empty() {
        return Err(invalid("device_keys.algorithms must not be empty"));
    }
    let key = |algorithm: &str| -> Result<String, ServiceError> {
        let key_id = format!("{algorithm}:{device_id}");
        let key = keys
            .get(&key_id)
            .and_then(CanonicalJsonValue::as_str)
            .ok_or_else(|| invalid(format!("device_keys.keys has no {key_id}")))?;
        check_public_key(key)?;
        Ok(key.to_owned())
    };
    let ed25519_key = key("ed25519")?;
    let curve25519_key = key("curve25519")?;
    check_signature(
        &object,
        user_id,
        &format!("ed25519:{device_id}"),
        &ed25519_key,
    )
    .map_err(|_| invalid("device_keys is not signed by the device's ed25519 key"))?;
    Ok(DeviceKeys {
        ed25519_key,
        curve25519_key,
        json: json.to_owned(),
    })
}

/// Checks a one-time or fallback key: `<algorithm>:<id>` naming it, and
/// either an unsigned key (a string, as the spec still allows for plain
/// `curve25519`) or a key object signed by the device (`signed_*`
/// algorithms must be signed objects).
///
/// # Errors
/// `InvalidParam` naming the key.
pub fn check_one_time_key(
    key_id: &str,
    json: &str,
    user_id: &UserId,
    device_id: &DeviceId,
    device_ed25519_key: Option<&str>,
) -> Result<OneTimeKey, ServiceError> {
    let algorithm = match key_id.split_once(':') {
        Some((algorithm, name)) if !algorithm.is_empty() && !name.is_empty() => algorithm,
        _ => return Err(invalid(format!("{key_id:?} is not <algorithm>:<key id>"))),
    };
    let value: serde_json::Value = serde_json::from_str(json)
        .map_err(|_| malformed(format!("one-time key {key_id} is not JSON")))?;
    match value {
        serde_json::Value::String(key) if !algorithm.starts_with("signed_") => {
            check_public_key(&key)?;
        }
        serde_json::Value::Object(_) => {
            let object = parse_object(json, key_id)?;
            let key = string_field(&object, "key")
                .ok_or_else(|| invalid(format!("one-time key {key_id} has no key")))?;
            check_public_key(key)?;
            let signing_key = device_ed25519_key.ok_or_else(|| {
                invalid("upload the device keys before signed one-time or fallback keys")
            })?;
            check_signature(
                &object,
                user_id,
                &format!("ed25519:{device_id}"),
                signing_key,
            )
            .map_err(|_| invalid(format!("one-time key {key_id} has a bad signature")))?;
        }
        serde_json::Value::String(_) => {
            return Err(invalid(format!(
                "one-time key {key_id} must be a signed key object"
            )));
        }
        _ => {
            return Err(malformed(format!(
                "one-time key {key_id} must be a key or a signed key object"
            )));
        }
    }
    Ok(OneTimeKey {
        key_id: key_id.to_owned(),
        algorithm: algorithm.to_owned(),
        json: json.to_owned(),
    })
}

/// Checks a cross-signing key's own fields: its user, its usage, and one
/// ed25519 key whose id names it. Signatures are checked by the caller,
/// which knows which master key must have signed.
///
/// # Errors
/// `InvalidParam` naming what is wrong.
pub fn check_cross_signing_key(
    json: &str,
    user_id: &UserId,
    key_type: CrossSigningKeyType,
) -> Result<(CrossSigningKey, CanonicalJsonObject), ServiceError> {
    let what = key_type.usage();
    let object = parse_object(json, what)?;
    if string_field(&object, "user_id") != Some(user_id.as_str()) {
        return Err(invalid(format!("the {what} key's user_id is not yours")));
    }
    let has_usage = object
        .get("usage")
        .and_then(CanonicalJsonValue::as_array)
        .is_some_and(|usage| usage.iter().any(|u| u.as_str() == Some(what)));
    if !has_usage {
        return Err(invalid(format!(
            "the {what} key's usage must include {what}"
        )));
    }
    let keys = object
        .get("keys")
        .and_then(CanonicalJsonValue::as_object)
        .filter(|keys| keys.len() == 1)
        .ok_or_else(|| invalid(format!("the {what} key must hold exactly one key")))?;
    let (key_id, key) = keys
        .iter()
        .next()
        .ok_or_else(|| invalid(format!("the {what} key must hold exactly one key")))?;
    let public_key = key
        .as_str()
        .filter(|key| key_id.strip_prefix("ed25519:") == Some(*key))
        .ok_or_else(|| invalid(format!("the {what} key's id must be ed25519:<its key>")))?;
    check_public_key(public_key)?;
    let key = CrossSigningKey {
        key_type,
        public_key: public_key.to_owned(),
        json: json.to_owned(),
    };
    Ok((key, object))
}

/// Checks `signatures.<user_id>.ed25519:<public_key>` on `object` against
/// `public_key`.
///
/// # Errors
/// `InvalidSignature` when it is missing or does not verify.
pub fn check_signed_by(
    object: &CanonicalJsonObject,
    user_id: &UserId,
    public_key: &str,
    what: &str,
) -> Result<(), ServiceError> {
    check_signature(
        object,
        user_id,
        &format!("ed25519:{public_key}"),
        public_key,
    )
    .map_err(|_| ServiceError::InvalidSignature(format!("{what} does not verify")))
}

/// Whether two key objects are the same once `signatures` and `unsigned`,
/// which are outside what is signed, are left out.
pub fn same_signed_content(a: &CanonicalJsonObject, b: &CanonicalJsonObject) -> bool {
    let signed = |object: &CanonicalJsonObject| {
        let mut object = object.clone();
        object.remove("signatures");
        object.remove("unsigned");
        object
    };
    signed(a) == signed(b)
}

/// Parses key JSON into a canonical object.
///
/// # Errors
/// `InvalidParam` when it is not a JSON object canonical JSON can carry.
pub fn parse_object(json: &str, what: &str) -> Result<CanonicalJsonObject, ServiceError> {
    parse_canonical_object(json).map_err(|_| malformed(format!("{what} must be a JSON object")))
}

/// The `signatures.<user>.<key id>` strings of an object, flattened.
pub fn signatures_of(object: &CanonicalJsonObject) -> Vec<(String, String, String)> {
    let Some(signatures) = object
        .get("signatures")
        .and_then(CanonicalJsonValue::as_object)
    else {
        return Vec::new();
    };
    signatures
        .iter()
        .filter_map(|(signer, by_key)| Some((signer, by_key.as_object()?)))
        .flat_map(|(signer, by_key)| {
            by_key.iter().filter_map(move |(key_id, signature)| {
                Some((
                    signer.clone(),
                    key_id.clone(),
                    signature.as_str()?.to_owned(),
                ))
            })
        })
        .collect()
}

fn check_signature(
    object: &CanonicalJsonObject,
    user_id: &UserId,
    key_id: &str,
    public_key: &str,
) -> Result<(), myelin_crypto::SignatureError> {
    verify_signature_by(object, user_id.as_str(), key_id, public_key)
}

fn check_public_key(key: &str) -> Result<(), ServiceError> {
    match STANDARD_NO_PAD.decode(key) {
        Ok(bytes) if bytes.len() == PUBLIC_KEY_BYTES => Ok(()),
        _ => Err(invalid("a public key must be 32 bytes of unpadded base64")),
    }
}

fn string_field<'a>(object: &'a CanonicalJsonObject, name: &str) -> Option<&'a str> {
    object.get(name).and_then(CanonicalJsonValue::as_str)
}

fn invalid(message: impl Into<String>) -> ServiceError {
    ServiceError::InvalidParam(message.into())
}

fn malformed(message: impl Into<String>) -> ServiceError {
    ServiceError::BadJson(message.into())
}

#[cfg(test)]
mod tests {
    use ruma::{device_id, user_id};
    use serde_json::json;

    use super::*;

    /// 32 bytes of unpadded base64 (the spec appendix's public test key).
    const KEY: &str = "XGX0JRS2Af3be3knz2fBiRbApjm2Dh61gXDJA8kcJNI";

    fn message(result: Result<impl std::fmt::Debug, ServiceError>) -> String {
        match result {
            Err(ServiceError::InvalidParam(message)) => message,
            other => panic!("expected InvalidParam, got {other:?}"),
        }
    }

    fn malformed_message(result: Result<impl std::fmt::Debug, ServiceError>) -> String {
        match result {
            Err(ServiceError::BadJson(message)) => message,
            other => panic!("expected BadJson, got {other:?}"),
        }
    }

    fn device_keys(overrides: serde_json::Value) -> String {
        let mut keys = json!({
            "user_id": "@alice:x",
            "device_id": "DEV",
            "algorithms": ["m.olm.v1.curve25519-aes-sha2"],
            "keys": { "ed25519:DEV": KEY, "curve25519:DEV": KEY },
        });
        if let (Some(keys), Some(overrides)) = (keys.as_object_mut(), overrides.as_object()) {
            keys.extend(overrides.clone());
        }
        keys.to_string()
    }

    #[test]
    fn device_keys_are_checked_field_by_field_before_the_signature() {
        let check =
            |json: String| check_device_keys(&json, user_id!("@alice:x"), device_id!("DEV"));
        let cases = [
            (json!({ "user_id": "@bob:x" }), "user_id"),
            (json!({ "device_id": "OTHER" }), "device_id"),
            (json!({ "algorithms": [] }), "algorithms"),
            (json!({ "keys": { "curve25519:DEV": KEY } }), "ed25519:DEV"),
            (json!({ "keys": { "ed25519:DEV": KEY } }), "curve25519:DEV"),
            (
                json!({ "keys": { "ed25519:DEV": "AAAA", "curve25519:DEV": KEY } }),
                "32 bytes",
            ),
            (json!({}), "not signed"),
        ];
        for (overrides, expected) in cases {
            let message = message(check(device_keys(overrides.clone())));
            assert!(message.contains(expected), "{overrides}: {message}");
        }
        // A wrong shape is malformed JSON, whatever else is wrong.
        let malformed = [
            (json!({ "algorithms": [1] }), "algorithms"),
            (
                json!({ "algorithms": "m.olm.v1.curve25519-aes-sha2" }),
                "algorithms",
            ),
            (json!({ "keys": "none" }), "keys"),
            (json!({ "keys": { "ed25519:DEV": 5 } }), "keys"),
            (json!({ "user_id": 5 }), "user_id"),
            (json!({ "user_id": "@bob:x", "device_id": [] }), "device_id"),
        ];
        for (overrides, expected) in malformed {
            let message = malformed_message(check(device_keys(overrides.clone())));
            assert!(message.contains(expected), "{overrides}: {message}");
        }
        assert!(malformed_message(check("[]".to_owned())).contains("JSON object"));
        // Floats are not canonical JSON, so nothing signed can hold them.
        let float = device_keys(json!({ "x": 1.5 }));
        assert!(malformed_message(check(float)).contains("JSON object"));
    }

    #[test]
    fn one_time_keys_need_an_algorithm_and_signed_ones_a_signature() {
        let check = |key_id: &str, json: &str, signing_key: Option<&str>| {
            check_one_time_key(
                key_id,
                json,
                user_id!("@alice:x"),
                device_id!("DEV"),
                signing_key,
            )
        };
        let plain = format!("\"{KEY}\"");
        let key = check("curve25519:AAAA", &plain, None).expect("a plain key is allowed");
        assert_eq!(
            (key.algorithm.as_str(), key.json.as_str()),
            ("curve25519", plain.as_str())
        );
        for key_id in ["nocolon", ":AAAA", "curve25519:"] {
            assert!(
                message(check(key_id, &plain, None)).contains("<algorithm>"),
                "{key_id}"
            );
        }
        assert!(message(check("signed_curve25519:A", &plain, None)).contains("signed key object"));
        assert!(malformed_message(check("curve25519:A", "5", None)).contains("signed key object"));
        let object = json!({ "key": KEY }).to_string();
        assert!(message(check("signed_curve25519:A", &object, None)).contains("device keys"));
        assert!(
            message(check("signed_curve25519:A", &object, Some(KEY))).contains("bad signature")
        );
        assert!(message(check("signed_curve25519:A", "{}", Some(KEY))).contains("has no key"));
    }

    #[test]
    fn cross_signing_keys_name_their_one_key() {
        let key = |usage: &str, keys: serde_json::Value| {
            json!({ "user_id": "@alice:x", "usage": [usage], "keys": keys }).to_string()
        };
        let check = |json: String| {
            check_cross_signing_key(&json, user_id!("@alice:x"), CrossSigningKeyType::Master)
        };
        let (checked, _) = check(key("master", json!({ format!("ed25519:{KEY}"): KEY }))).unwrap();
        assert_eq!(checked.public_key, KEY);
        let cases = [
            (
                key("self_signing", json!({ format!("ed25519:{KEY}"): KEY })),
                "usage",
            ),
            (
                key("master", json!({ "ed25519:other": KEY })),
                "ed25519:<its key>",
            ),
            (
                key("master", json!({ format!("curve25519:{KEY}"): KEY })),
                "ed25519:<its key>",
            ),
            (key("master", json!({})), "exactly one"),
            (
                key(
                    "master",
                    json!({ format!("ed25519:{KEY}"): KEY, "ed25519:b": "b" }),
                ),
                "exactly one",
            ),
        ];
        for (json, expected) in cases {
            let message = message(check(json.clone()));
            assert!(message.contains(expected), "{json}: {message}");
        }
        let someone_else = json!({
            "user_id": "@bob:x", "usage": ["master"], "keys": { format!("ed25519:{KEY}"): KEY },
        });
        assert!(message(check(someone_else.to_string())).contains("user_id"));
    }

    #[test]
    fn signed_content_ignores_signatures_and_unsigned_only() {
        let a = parse_object(r#"{"k":1,"signatures":{"@a:x":{"ed25519:A":"s"}}}"#, "a").unwrap();
        let b = parse_object(r#"{"k":1,"unsigned":{"x":2}}"#, "b").unwrap();
        let c = parse_object(r#"{"k":2}"#, "c").unwrap();
        assert!(same_signed_content(&a, &b));
        assert!(!same_signed_content(&a, &c));
        assert_eq!(
            signatures_of(&a),
            vec![("@a:x".to_owned(), "ed25519:A".to_owned(), "s".to_owned())]
        );
    }
}
