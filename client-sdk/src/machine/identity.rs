//! Device identity: the Olm account and `/keys/upload`.
//!
//! A new device uploads its device keys signed by its own ed25519 key, a
//! full set of signed one-time keys and a signed fallback key. After that,
//! each sync's `device_one_time_keys_count` tops the one-time keys back up to
//! the account's maximum, and `device_unused_fallback_key_types` lacking
//! `signed_curve25519` (the fallback key was used) triggers a new fallback
//! key ([spec]).
//!
//! [spec]: https://spec.matrix.org/v1.16/client-server-api/#one-time-and-fallback-keys

use myelin_crypto::{
    megolm::MEGOLM_ALGORITHM,
    olm::{Curve25519PublicKey, OLM_ALGORITHM, SIGNED_CURVE25519},
};
use ruma::{DeviceId, OwnedDeviceId, OwnedUserId, UserId};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::{OlmMachine, SyncChanges};

pub(super) const ACCOUNT_RECORD: &str = "account";
pub(super) const SETTINGS_RECORD: &str = "settings";

/// The account record: the pickled account and what the server knows of it.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct AccountMeta {
    pub(super) user_id: OwnedUserId,
    pub(super) device_id: OwnedDeviceId,
    /// The encrypted account pickle.
    pub(super) pickle: String,
    /// Whether the server acknowledged our device keys.
    pub(super) device_keys_published: bool,
    /// The server's count of our unclaimed one-time keys, once known.
    pub(super) server_otk_count: Option<u64>,
    /// Whether a fresh fallback key must be uploaded.
    pub(super) fallback_needed: bool,
    /// The counter behind request ids and to-device transaction ids; kept
    /// so ids never repeat across restarts.
    pub(super) next_request: u64,
    /// The latest time the caller passed in, for answers that carry none.
    #[serde(default)]
    pub(super) last_now_ms: u64,
    /// The signatures keys/query serves on our device keys (our own, and
    /// our self-signing key's once this device is cross-signed), added to
    /// the `sender_device_keys` we send.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) served_signatures: Option<Map<String, Value>>,
}

impl AccountMeta {
    pub(super) fn new(user_id: &UserId, device_id: &DeviceId) -> Self {
        Self {
            user_id: user_id.to_owned(),
            device_id: device_id.to_owned(),
            pickle: String::new(),
            device_keys_published: false,
            server_otk_count: None,
            fallback_needed: true,
            next_request: 0,
            last_now_ms: 0,
            served_signatures: None,
        }
    }
}

impl OlmMachine {
    /// This device's keys as uploaded: `device_keys` signed per the spec.
    pub fn device_keys(&self) -> Value {
        let keys = self.account.identity_keys();
        let mut object = json!({
            "user_id": self.user_id,
            "device_id": self.device_id,
            "algorithms": [OLM_ALGORITHM, MEGOLM_ALGORITHM],
            "keys": {
                format!("curve25519:{}", self.device_id): keys.curve25519.to_base64(),
                format!("ed25519:{}", self.device_id): keys.ed25519.to_base64(),
            },
        });
        self.sign(&mut object);
        object
    }

    /// Our device keys for the MSC4147 `sender_device_keys` of every Olm
    /// payload we send: [`OlmMachine::device_keys`] with the signatures
    /// the server serves on them, so that a recipient who has not (or no
    /// longer) got this device from keys/query can still see that our
    /// self-signing key vouches for it. A signature the server made up
    /// fails the recipient's check and vouches for nothing.
    pub(super) fn sender_device_keys(&self) -> Value {
        let mut keys = self.device_keys();
        if let Some(served) = &self.meta.served_signatures {
            for (signer, signatures) in served {
                let (Some(ours), Some(signatures)) =
                    (keys["signatures"].as_object_mut(), signatures.as_object())
                else {
                    continue;
                };
                let entry = ours.entry(signer.clone()).or_insert_with(|| json!({}));
                for (key_id, signature) in signatures {
                    if entry.get(key_id).is_none() {
                        entry[key_id] = signature.clone();
                    }
                }
            }
        }
        keys
    }

    /// Keeps the signatures keys/query served on our own device keys (the
    /// caller checked the keys are ours).
    pub(super) fn keep_served_signatures(&mut self, served: &Value) {
        let signatures = served.get("signatures").and_then(Value::as_object);
        if signatures.is_some() && signatures != self.meta.served_signatures.as_ref() {
            self.meta.served_signatures = signatures.cloned();
            self.save_account();
        }
    }

    pub(super) fn receive_key_counts(&mut self, sync: &SyncChanges) {
        if let Some(count) = sync.one_time_key_counts.get(SIGNED_CURVE25519) {
            self.meta.server_otk_count = Some(*count);
        } else if !sync.one_time_key_counts.is_empty() {
            // Servers leave out algorithms with no keys left.
            self.meta.server_otk_count = Some(0);
        }
        if let Some(types) = &sync.unused_fallback_key_types
            && self.meta.device_keys_published
            && !types.iter().any(|t| t == SIGNED_CURVE25519)
        {
            self.meta.fallback_needed = true;
        }
        self.save_account();
    }

    /// The body of the next `/keys/upload`, if anything needs uploading and
    /// no upload is in flight.
    pub(super) fn keys_upload_body(&mut self) -> Option<Value> {
        if self
            .in_flight
            .values()
            .any(|r| matches!(r, super::InFlight::Upload))
        {
            return None;
        }
        let mut body = Map::new();
        if !self.meta.device_keys_published {
            body.insert("device_keys".into(), self.device_keys());
        }

        let target = self.account.max_one_time_keys() as u64;
        let on_server = self.meta.server_otk_count.unwrap_or(0);
        let unpublished = self.account.unpublished_one_time_keys().len() as u64;
        let missing = target.saturating_sub(on_server).saturating_sub(unpublished);
        if self.meta.device_keys_published && self.meta.server_otk_count.is_none() {
            // Published before, count not yet seen: wait for a sync rather
            // than flood the server with keys it may already have.
        } else if missing > 0 {
            self.account.generate_one_time_keys(missing as usize);
            self.save_account();
        }
        let one_time_keys = self.signed_keys(self.account.unpublished_one_time_keys(), false);
        if !one_time_keys.is_empty() {
            body.insert("one_time_keys".into(), Value::Object(one_time_keys));
        }

        if self.meta.fallback_needed {
            if self.account.unpublished_fallback_key().is_none() {
                self.account.generate_fallback_key();
                self.save_account();
            }
            let fallback: Vec<_> = self
                .account
                .unpublished_fallback_key()
                .into_iter()
                .collect();
            body.insert(
                "fallback_keys".into(),
                Value::Object(self.signed_keys(fallback, true)),
            );
        }
        (!body.is_empty()).then_some(Value::Object(body))
    }

    pub(super) fn receive_upload_response(&mut self, response: &Value) -> Result<(), &'static str> {
        let count = response
            .get("one_time_key_counts")
            .and_then(Value::as_object)
            .ok_or("missing one_time_key_counts")?
            .get(SIGNED_CURVE25519)
            .and_then(Value::as_u64)
            .unwrap_or(0);
        self.account.mark_keys_as_published();
        self.meta.device_keys_published = true;
        self.meta.fallback_needed = false;
        self.meta.server_otk_count = Some(count);
        self.save_account();
        Ok(())
    }

    /// Signs keys as `{"signed_curve25519:<id>": {"key": …, "signatures": …}}`,
    /// with `"fallback": true` inside the signed object for fallback keys.
    fn signed_keys(
        &self,
        keys: Vec<(String, Curve25519PublicKey)>,
        fallback: bool,
    ) -> Map<String, Value> {
        keys.into_iter()
            .map(|(id, key)| {
                let mut object = json!({"key": key.to_base64()});
                if fallback {
                    object["fallback"] = Value::Bool(true);
                }
                self.sign(&mut object);
                (id, object)
            })
            .collect()
    }

    fn sign(&self, object: &mut Value) {
        if let Some(map) = object.as_object_mut() {
            // Objects built here hold strings, booleans and arrays only, so
            // canonicalization cannot fail.
            let _ = self
                .account
                .sign_json(self.user_id.as_str(), self.device_id.as_str(), map);
        }
    }

    pub(super) fn save_account(&mut self) {
        self.meta.pickle = self.account.pickle(&self.pickle_key);
        let meta = serde_json::to_vec(&self.meta).unwrap_or_default();
        self.changes.put(ACCOUNT_RECORD.to_owned(), meta);
    }
}
