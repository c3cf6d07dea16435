//! MSC3814 dehydrated devices, sans I/O: building a fresh dehydrated device
//! (its account encrypted with the dehydration key, its keys signed by it
//! and by our self-signing key when we hold it), and opening one to take
//! the room keys other devices sent it.
//!
//! The dehydrated device's account never becomes this device's: it only
//! decrypts the pre-key messages that were waiting for it, and the room
//! keys they carry are imported as forwarded keys (attributed to the
//! dehydrated device's word, not to the sender's device identity). See
//! `spec-notes/dehydrated-devices.md`.

use std::collections::BTreeMap;

use myelin_crypto::{
    megolm::{InboundGroupSession, MEGOLM_ALGORITHM, SessionKey},
    olm::{
        Account, Curve25519PublicKey, DehydratedAccount, DehydrationError, OLM_ALGORITHM,
        OlmMessage, Session,
    },
};
use rand::{Rng, RngCore, distributions::Uniform};
use ruma::{
    OwnedDeviceId, OwnedUserId, UserId,
    serde::{Base64, base64::Standard},
};
use serde_json::{Map, Value, json};
use zeroize::Zeroizing;

use super::{KeyImport, OlmMachine, cross_signing::CrossSigningError};

/// The secret storage name of the dehydration key.
pub const DEHYDRATION_SECRET: &str = "org.matrix.msc3814";

/// The `algorithm` of `device_data`: vodozemac's encrypted account.
pub const DEHYDRATION_ALGORITHM: &str = "m.dehydration.v1.olm";

/// One-time keys a dehydrated device publishes: each sender's first
/// message takes one, and the fallback key serves when they run out.
const ONE_TIME_KEYS: usize = 50;

/// The display name of the devices made here.
const DISPLAY_NAME: &str = "Dehydrated device";

/// The 32-byte key that encrypts dehydrated devices' accounts, kept in
/// secret storage as unpadded base64. `Debug` is redacted.
pub struct DehydrationKey(Zeroizing<[u8; 32]>);

impl DehydrationKey {
    /// A fresh random key.
    pub fn random() -> Self {
        let mut key = Zeroizing::new([0u8; 32]);
        rand::thread_rng().fill_bytes(key.as_mut());
        Self(key)
    }

    /// The key from its secret storage form.
    ///
    /// # Errors
    /// [`DeviceDehydrationError::MalformedKey`] when the secret is not 32
    /// bytes of base64.
    pub fn from_secret(secret: &str) -> Result<Self, DeviceDehydrationError> {
        let malformed = |_| DeviceDehydrationError::MalformedKey;
        let bytes = Zeroizing::new(
            Base64::<Standard>::parse(secret)
                .map_err(malformed)?
                .into_inner(),
        );
        let key: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| DeviceDehydrationError::MalformedKey)?;
        Ok(Self(Zeroizing::new(key)))
    }

    /// The key in its secret storage form.
    pub fn to_secret(&self) -> Zeroizing<String> {
        Zeroizing::new(Base64::<Standard, _>::new(self.0.as_slice()).encode())
    }
}

impl std::fmt::Debug for DehydrationKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DehydrationKey").finish_non_exhaustive()
    }
}

/// Why a dehydrated device could not be made or opened. No variant
/// carries key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeviceDehydrationError {
    /// The dehydration key in secret storage is not 32 bytes of base64.
    #[error("the dehydration key in secret storage is malformed")]
    MalformedKey,
    /// `device_data` is not of the algorithm this SDK writes.
    #[error("the dehydrated device's data is of an unsupported algorithm")]
    UnsupportedData,
    /// The account did not encrypt, or did not decrypt (a wrong key, data
    /// damaged or replaced).
    #[error(transparent)]
    Account(#[from] DehydrationError),
}

/// A dehydrated device ready to upload: the body of
/// `PUT /dehydrated_device`.
#[derive(Debug)]
pub struct NewDehydratedDevice {
    /// Its device id.
    pub device_id: OwnedDeviceId,
    /// The request body.
    pub body: Value,
}

impl OlmMachine {
    /// Builds a fresh dehydrated device for our user: a new account whose
    /// device keys, one-time keys and fallback key it signs itself, its
    /// device keys also signed by our self-signing key when we hold it (so
    /// that those who verified us trust it), encrypted with `key`.
    ///
    /// # Errors
    /// [`DeviceDehydrationError::Account`] if vodozemac cannot encrypt the
    /// account.
    pub fn new_dehydrated_device(
        &self,
        key: &DehydrationKey,
    ) -> Result<NewDehydratedDevice, DeviceDehydrationError> {
        let mut account = Account::new();
        let device_id = random_device_id();
        let user_id = self.user_id.as_str();
        let sign = |account: &Account, mut object: Value| {
            if let Some(map) = object.as_object_mut() {
                // Objects built here hold strings, booleans and arrays
                // only, so canonicalization cannot fail.
                let _ = account.sign_json(user_id, device_id.as_str(), map);
            }
            object
        };
        let identity = account.identity_keys();
        let mut device_keys = sign(
            &account,
            json!({
                "user_id": user_id,
                "device_id": device_id,
                "algorithms": [OLM_ALGORITHM, MEGOLM_ALGORITHM],
                "keys": {
                    format!("curve25519:{device_id}"): identity.curve25519.to_base64(),
                    format!("ed25519:{device_id}"): identity.ed25519.to_base64(),
                },
            }),
        );
        if let Some(map) = device_keys.as_object_mut() {
            match self.sign_with_self_signing_key(map) {
                Ok(()) | Err(CrossSigningError::NotSetUp) => {}
                Err(error) => tracing::warn!(%error, "dehydrated device not cross-signed"),
            }
        }
        account.generate_one_time_keys(ONE_TIME_KEYS.min(account.max_one_time_keys()));
        account.generate_fallback_key();
        let one_time_keys: Map<String, Value> = account
            .unpublished_one_time_keys()
            .into_iter()
            .map(|(id, otk)| (id, sign(&account, json!({ "key": otk.to_base64() }))))
            .collect();
        let fallback_keys: Map<String, Value> = account
            .unpublished_fallback_key()
            .into_iter()
            .map(|(id, otk)| {
                let key = json!({ "key": otk.to_base64(), "fallback": true });
                (id, sign(&account, key))
            })
            .collect();
        account.mark_keys_as_published();
        let data = account.to_dehydrated_device(&key.0)?;
        let body = json!({
            "device_id": device_id,
            "device_data": {
                "algorithm": DEHYDRATION_ALGORITHM,
                "device_pickle": data.ciphertext,
                "nonce": data.nonce,
            },
            "device_keys": device_keys,
            "one_time_keys": one_time_keys,
            "fallback_keys": fallback_keys,
            "initial_device_display_name": DISPLAY_NAME,
        });
        Ok(NewDehydratedDevice { device_id, body })
    }

    /// Imports the room keys a rehydrated device collected, as forwarded
    /// keys, and decrypts the events that waited for them.
    pub fn import_rehydrated_room_keys(&mut self, device: RehydratedDevice) -> KeyImport {
        let mut list = Value::Array(device.room_keys);
        let payload = Zeroizing::new(serde_json::to_vec(&list).unwrap_or_default());
        super::zeroize_json(&mut list);
        // A JSON list, built just above: never `NotAKeyList`.
        self.import_room_keys(&payload).unwrap_or_default()
    }
}

/// A dehydrated device opened with the dehydration key: it decrypts the
/// to-device messages that were sent to it and keeps the room keys.
pub struct RehydratedDevice {
    user_id: OwnedUserId,
    account: Account,
    /// Olm sessions by the sender's curve25519 key.
    sessions: BTreeMap<String, Vec<Session>>,
    /// Room keys in the key export format, ready for import.
    room_keys: Vec<Value>,
}

impl std::fmt::Debug for RehydratedDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RehydratedDevice")
            .field("user_id", &self.user_id)
            .field("room_keys", &self.room_keys.len())
            .finish_non_exhaustive()
    }
}

impl RehydratedDevice {
    /// Opens `device_data` (as `GET /dehydrated_device` returned it).
    ///
    /// # Errors
    /// [`DeviceDehydrationError::UnsupportedData`] for data of another
    /// algorithm, [`DeviceDehydrationError::Account`] for a wrong key or
    /// damaged data.
    pub fn open(
        user_id: &UserId,
        device_data: &Value,
        key: &DehydrationKey,
    ) -> Result<Self, DeviceDehydrationError> {
        let field = |name: &str| device_data.get(name).and_then(Value::as_str);
        let (Some(DEHYDRATION_ALGORITHM), Some(ciphertext), Some(nonce)) =
            (field("algorithm"), field("device_pickle"), field("nonce"))
        else {
            return Err(DeviceDehydrationError::UnsupportedData);
        };
        let data = DehydratedAccount {
            ciphertext: ciphertext.to_owned(),
            nonce: nonce.to_owned(),
        };
        Ok(Self {
            user_id: user_id.to_owned(),
            account: Account::from_dehydrated_device(&data, &key.0)?,
            sessions: BTreeMap::new(),
            room_keys: Vec::new(),
        })
    }

    /// Takes one page of the device's to-device events: keeps the room keys
    /// of the Olm messages it can decrypt and skips everything else.
    pub fn receive_events(&mut self, events: &[Value]) {
        for event in events {
            if let Some(room_key) = self.room_key(event) {
                self.room_keys.push(room_key);
            }
        }
    }

    /// How many room keys the device collected so far.
    pub fn room_key_count(&self) -> usize {
        self.room_keys.len()
    }

    /// The room key an `m.room.encrypted` event carries, as a key export
    /// entry, when it decrypts and its payload is addressed to this device.
    fn room_key(&mut self, event: &Value) -> Option<Value> {
        let sender = event.get("sender").and_then(Value::as_str)?;
        let content = event.get("content")?;
        if event.get("type").and_then(Value::as_str) != Some("m.room.encrypted")
            || content.get("algorithm").and_then(Value::as_str) != Some(OLM_ALGORITHM)
        {
            return None;
        }
        let sender_key = content.get("sender_key").and_then(Value::as_str)?;
        let ours = self.account.identity_keys();
        let message: OlmMessage = serde_json::from_value(
            content
                .get("ciphertext")?
                .get(ours.curve25519.to_base64())?
                .clone(),
        )
        .ok()?;
        let plaintext = Zeroizing::new(self.decrypt(sender_key, &message)?);
        let mut payload: Value = serde_json::from_slice(&plaintext).ok()?;
        let entry = room_key_entry(
            &payload,
            sender,
            sender_key,
            &self.user_id,
            &ours.ed25519.to_base64(),
        );
        super::zeroize_json(&mut payload);
        entry
    }

    fn decrypt(&mut self, sender_key: &str, message: &OlmMessage) -> Option<Vec<u8>> {
        let sessions = self.sessions.entry(sender_key.to_owned()).or_default();
        for session in sessions.iter_mut() {
            if let OlmMessage::PreKey(pre_key) = message
                && !session.matches(pre_key)
            {
                continue;
            }
            if let Ok(plaintext) = session.decrypt(message) {
                return Some(plaintext);
            }
        }
        let OlmMessage::PreKey(pre_key) = message else {
            return None;
        };
        let identity_key = Curve25519PublicKey::from_base64(sender_key).ok()?;
        let (session, plaintext) = self
            .account
            .create_inbound_session(identity_key, pre_key)
            .ok()?;
        sessions.push(session);
        Some(plaintext)
    }
}

/// The key export entry of an `m.room_key` Olm payload, if the payload is
/// one, from `sender`, for this user's device with `our_ed25519`.
fn room_key_entry(
    payload: &Value,
    sender: &str,
    sender_key: &str,
    user_id: &UserId,
    our_ed25519: &str,
) -> Option<Value> {
    let field = |name: &str| payload.get(name).and_then(Value::as_str);
    if field("type") != Some("m.room_key")
        || field("sender") != Some(sender)
        || field("recipient") != Some(user_id.as_str())
        || payload
            .pointer("/recipient_keys/ed25519")
            .and_then(Value::as_str)
            != Some(our_ed25519)
    {
        return None;
    }
    let claimed = payload.pointer("/keys/ed25519").and_then(Value::as_str)?;
    let content = payload.get("content")?;
    let field = |name: &str| content.get(name).and_then(Value::as_str);
    if field("algorithm") != Some(MEGOLM_ALGORITHM) {
        return None;
    }
    let key = SessionKey::from_base64(field("session_key")?).ok()?;
    let session = InboundGroupSession::new(&key);
    if Some(session.session_id().as_str()) != field("session_id") {
        return None;
    }
    Some(json!({
        "algorithm": MEGOLM_ALGORITHM,
        "room_id": field("room_id")?,
        "sender_key": sender_key,
        "session_id": session.session_id(),
        "session_key": session.export_at_first_known_index().to_base64(),
        "sender_claimed_keys": { "ed25519": claimed },
        "forwarding_curve25519_key_chain": [],
    }))
}

/// Ten capital letters, like the ids servers give logged-in devices.
fn random_device_id() -> OwnedDeviceId {
    let letters = Uniform::from(b'A'..=b'Z');
    let id: String = rand::thread_rng()
        .sample_iter(letters)
        .take(10)
        .map(char::from)
        .collect();
    id.into()
}

#[cfg(test)]
mod tests {
    use myelin_crypto::megolm::OutboundGroupSession;
    use ruma::user_id;
    use serde_json::json;

    use super::{DehydrationKey, room_key_entry};

    #[test]
    fn only_room_keys_addressed_to_the_device_by_their_sender_are_taken() {
        let outbound = OutboundGroupSession::new();
        let payload = json!({
            "type": "m.room_key",
            "sender": "@bob:example.org",
            "recipient": "@alice:example.org",
            "recipient_keys": { "ed25519": "OURS" },
            "keys": { "ed25519": "BOBS" },
            "content": {
                "algorithm": "m.megolm.v1.aes-sha2",
                "room_id": "!room:example.org",
                "session_id": outbound.session_id(),
                "session_key": outbound.session_key().to_base64(),
            },
        });
        let alice = user_id!("@alice:example.org");
        let take = |payload: &serde_json::Value, sender: &str| {
            room_key_entry(payload, sender, "BOBCURVE", alice, "OURS")
        };
        let entry = take(&payload, "@bob:example.org").expect("a room key");
        assert_eq!(entry["session_id"], outbound.session_id());
        assert_eq!(entry["sender_key"], "BOBCURVE");
        assert_eq!(entry["sender_claimed_keys"]["ed25519"], "BOBS");

        assert!(
            take(&payload, "@mallory:example.org").is_none(),
            "another sender"
        );
        let mut other = payload.clone();
        other["recipient_keys"]["ed25519"] = json!("ANOTHER");
        assert!(take(&other, "@bob:example.org").is_none(), "another device");
        let mut other = payload.clone();
        other["content"]["session_id"] = json!("not the session");
        assert!(take(&other, "@bob:example.org").is_none(), "mislabelled");
        let mut other = payload;
        other["type"] = json!("m.forwarded_room_key");
        assert!(take(&other, "@bob:example.org").is_none(), "not m.room_key");
    }

    #[test]
    fn the_key_round_trips_through_its_secret_form_only_at_32_bytes() {
        let key = DehydrationKey::random();
        let again = DehydrationKey::from_secret(&key.to_secret()).expect("32 bytes");
        assert_eq!(*again.0, *key.0);
        assert!(DehydrationKey::from_secret("c2hvcnQ").is_err());
        assert!(DehydrationKey::from_secret("not base64!").is_err());
        assert_eq!(format!("{key:?}"), "DehydrationKey { .. }");
    }
}
