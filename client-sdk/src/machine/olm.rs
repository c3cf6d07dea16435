//! Olm sessions: claiming keys, encrypting to devices, decrypting to-device
//! events.
//!
//! **Session choice** ([spec]): to encrypt, use the session with the device
//! that most recently decrypted a message (or, failing that, the newest).
//! To decrypt a pre-key message, use the session it was built on if we have
//! it (if that session cannot decrypt it, it is a replay and dropped: the
//! fallback key would otherwise open a second session on it), else create
//! an inbound session from it; a normal message is tried
//! against each session with the sender's key, most recently used first.
//!
//! **Payload checks**: after decryption, the payload's `sender` must be the
//! event's sender, `recipient` and `recipient_keys.ed25519` must be us, and
//! `keys.ed25519` must be the ed25519 key of the device that owns the Olm
//! sender key, when we know that device. A device we do not know yet is
//! queried; what it sent is accepted but carries
//! [`super::VerificationState::UnknownDevice`] until the query lands.
//!
//! **Sender device keys** ([MSC4147]): every payload we send carries our
//! signed device keys as `sender_device_keys`. One that arrives with them
//! is refused ([`ToDeviceRejection`], counted in
//! [`OlmMachine::rejected_to_device_counts`]) unless they are self-signed,
//! filed under the sender, name the Olm session's curve25519 key and the
//! payload's `keys.ed25519`, and, for a device keys/query told us of, are
//! that device's. Room keys remember them, so events of a device that
//! keys/query does not list can still be attributed to it (`inbound`).
//!
//! [MSC4147]: https://github.com/matrix-org/matrix-spec-proposals/pull/4147
//!
//! **Wedged sessions**: a normal message that no session decrypts means the
//! sender's session state and ours diverged. We claim a fresh key for that
//! device, start a new session and send it an `m.dummy` so that its next
//! message to us uses the new session. At most once an hour per device.
//!
//! [spec]: https://spec.matrix.org/v1.16/client-server-api/#molmv1curve25519-aes-sha2

use std::collections::{BTreeMap, BTreeSet};

use myelin_crypto::{
    PickleError, PickleKey,
    olm::{
        Curve25519PublicKey, Ed25519PublicKey, OLM_ALGORITHM, OlmError, OlmMessage,
        SIGNED_CURVE25519, Session,
    },
    verify_json_signature,
};
use ruma::{OwnedUserId, UserId};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use zeroize::Zeroizing;

use super::{
    Device, DeviceKey, InFlight, MachineError, OlmMachine, OutgoingRequest, Request, SyncOutput,
    devices::parse_device_keys, history::ROOM_KEY_BUNDLE_EVENT,
};

pub(super) const RECORD_KIND: &str = "olm";

/// A new session for a wedged device is started at most this often.
const UNWEDGE_INTERVAL_MS: u64 = 60 * 60 * 1000;
/// Sessions kept per device. A fallback key lets anyone open any number of
/// sessions; beyond this many, the least recently used is dropped.
const MAX_SESSIONS_PER_DEVICE: usize = 16;
/// A device a claim returned no key for is not claimed again for this long.
const CLAIM_RETRY_MS: u64 = 60 * 60 * 1000;

pub(super) struct StoredSession {
    session: Session,
    /// The session's id, kept: vodozemac hashes the keys to compute it.
    session_id: String,
    sender_key: String,
    created_ms: u64,
    last_used_ms: u64,
    /// Order of creation, to break ties between sessions used at the same
    /// millisecond.
    serial: u64,
}

/// A persisted Olm session.
#[derive(Serialize, Deserialize)]
pub(super) struct OlmSessionRecord {
    sender_key: String,
    session_id: String,
    pickle: String,
    created_ms: u64,
    last_used_ms: u64,
    serial: u64,
}

/// Olm sessions by the other device's curve25519 key.
#[derive(Default)]
pub(super) struct OlmSessions {
    by_key: BTreeMap<String, Vec<StoredSession>>,
    next_serial: u64,
    /// Sessions changed since the last [`OlmSessions::take_changed`], by
    /// (sender key, session id). They are pickled there, once each however
    /// often they were used in between: pickling encrypts a session's whole
    /// state, and a session created from a claimed key and used at once to
    /// share a room key would otherwise be pickled twice.
    changed: BTreeSet<(String, String)>,
}

impl OlmSessions {
    pub(super) fn insert_record(
        &mut self,
        record: OlmSessionRecord,
        key: &PickleKey,
    ) -> Result<(), PickleError> {
        let session = Session::from_pickle(&record.pickle, key)?;
        self.next_serial = self.next_serial.max(record.serial + 1);
        self.by_key
            .entry(record.sender_key.clone())
            .or_default()
            .push(StoredSession {
                session,
                session_id: record.session_id,
                sender_key: record.sender_key,
                created_ms: record.created_ms,
                last_used_ms: record.last_used_ms,
                serial: record.serial,
            });
        Ok(())
    }

    pub(super) fn has_session(&self, curve25519: &str) -> bool {
        self.by_key.get(curve25519).is_some_and(|s| !s.is_empty())
    }

    /// Adds a session, marked changed; if the device then has more than
    /// [`MAX_SESSIONS_PER_DEVICE`], drops the least recently used one and
    /// returns its session id.
    fn insert(&mut self, sender_key: &str, session: Session, now_ms: u64) -> Option<String> {
        let serial = self.next_serial;
        self.next_serial += 1;
        let session_id = session.session_id();
        self.mark_changed(sender_key, session_id.clone());
        let sessions = self.by_key.entry(sender_key.to_owned()).or_default();
        sessions.push(StoredSession {
            session,
            session_id,
            sender_key: sender_key.to_owned(),
            created_ms: now_ms,
            last_used_ms: now_ms,
            serial,
        });
        if sessions.len() <= MAX_SESSIONS_PER_DEVICE {
            return None;
        }
        let (oldest, _) = sessions
            .iter()
            .enumerate()
            .min_by_key(|(_, s)| (s.last_used_ms, s.serial))?;
        let evicted = sessions.remove(oldest).session_id;
        self.changed
            .remove(&(sender_key.to_owned(), evicted.clone()));
        Some(evicted)
    }

    /// Encrypts with the session to use for `sender_key` (the most recently
    /// used one), or `None` without a session.
    fn encrypt(
        &mut self,
        sender_key: &str,
        plaintext: &[u8],
    ) -> Option<Result<OlmMessage, OlmError>> {
        let stored = self
            .by_key
            .get_mut(sender_key)?
            .iter_mut()
            .max_by_key(|s| (s.last_used_ms, s.serial))?;
        let message = stored.session.encrypt(plaintext);
        let session_id = stored.session_id.clone();
        self.mark_changed(sender_key, session_id);
        Some(message)
    }

    /// Notes that a session's state changed, to be saved at the next
    /// [`OlmSessions::take_changed`].
    fn mark_changed(&mut self, sender_key: &str, session_id: String) {
        self.changed.insert((sender_key.to_owned(), session_id));
    }

    /// The records of the sessions changed since the last call.
    pub(super) fn take_changed(&mut self, key: &PickleKey) -> Vec<OlmSessionRecord> {
        std::mem::take(&mut self.changed)
            .into_iter()
            .filter_map(|(sender_key, session_id)| {
                self.by_key
                    .get(&sender_key)?
                    .iter()
                    .find(|s| s.session_id == session_id)
                    .map(|s| s.record(key))
            })
            .collect()
    }

    /// Sessions with `sender_key`, most recently used first.
    fn ordered(&mut self, sender_key: &str) -> Vec<&mut StoredSession> {
        let mut sessions: Vec<_> = self
            .by_key
            .get_mut(sender_key)
            .into_iter()
            .flatten()
            .collect();
        sessions.sort_by_key(|s| std::cmp::Reverse((s.last_used_ms, s.serial)));
        sessions
    }
}

impl StoredSession {
    fn record(&self, key: &PickleKey) -> OlmSessionRecord {
        OlmSessionRecord {
            sender_key: self.sender_key.clone(),
            session_id: self.session_id.clone(),
            pickle: self.session.pickle(key),
            created_ms: self.created_ms,
            last_used_ms: self.last_used_ms,
            serial: self.serial,
        }
    }
}

/// A to-device event that decrypted and passed the payload checks. Its
/// JSON (a room key, a forwarded key, a bundle's file key) is wiped on drop.
pub(super) struct DecryptedOlm {
    pub(super) sender: OwnedUserId,
    pub(super) sender_key: String,
    pub(super) claimed_ed25519: String,
    /// The payload's checked MSC4147 `sender_device_keys`, if it had them.
    pub(super) sender_device_keys: Option<Map<String, Value>>,
    pub(super) event_type: String,
    pub(super) content: Value,
    pub(super) payload: Value,
}

impl Drop for DecryptedOlm {
    fn drop(&mut self) {
        super::zeroize_json(&mut self.content);
        super::zeroize_json(&mut self.payload);
    }
}

/// Why a to-device event was dropped. A to-device event has no
/// timeline slot to mark, so the application sees only the counts
/// ([`OlmMachine::rejected_to_device_counts`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ToDeviceRejection {
    /// The event's `sender` is missing or not a user id: it names nobody
    /// whose devices or sessions it could concern.
    InvalidSender,
    /// No ciphertext for this device's key.
    NotForUs,
    /// Not a well-formed Olm event or payload.
    Malformed,
    /// No session decrypted it, and it opened none.
    Undecryptable,
    /// The payload's `sender`, `recipient` or `recipient_keys` are not the
    /// event's, or its `keys.ed25519` is not the known device's.
    PayloadMismatch,
    /// A pre-key message an existing session was built on, again.
    Replay,
    /// The MSC4147 `sender_device_keys` are malformed, not self-signed, not
    /// filed under the sender, or name other keys than the Olm session's
    /// curve25519 key and the payload's `keys.ed25519`.
    InvalidSenderDeviceKeys,
    /// The `sender_device_keys` are valid but are not what keys/query told
    /// us of that device (another device id for the session's key, or
    /// other keys under the device id).
    SenderDeviceKeysMismatch,
}

impl ToDeviceRejection {
    /// A stable name, for counters.
    pub fn name(self) -> &'static str {
        match self {
            Self::InvalidSender => "invalid_sender",
            Self::NotForUs => "not_for_us",
            Self::Malformed => "malformed",
            Self::Undecryptable => "undecryptable",
            Self::PayloadMismatch => "payload_mismatch",
            Self::Replay => "replay",
            Self::InvalidSenderDeviceKeys => "invalid_sender_device_keys",
            Self::SenderDeviceKeysMismatch => "sender_device_keys_mismatch",
        }
    }
}

impl OlmMachine {
    /// Builds the `/keys/claim` request for `devices`, if any.
    pub(super) fn claim_request(&mut self, devices: Vec<DeviceKey>) -> Option<OutgoingRequest> {
        if devices.is_empty() {
            return None;
        }
        let mut body: Map<String, Value> = Map::new();
        for (user, device) in &devices {
            let entry = body.entry(user.as_str()).or_insert_with(|| json!({}));
            entry[device.as_str()] = json!(SIGNED_CURVE25519);
        }
        let body = json!({"one_time_keys": body, "timeout": 10_000});
        Some(self.issue(InFlight::Claim(devices), |_| Request::KeysClaim { body }))
    }

    /// Devices marked wedged whose fresh session has not been claimed yet.
    pub(super) fn wedged_devices_needing_claim(&self) -> Vec<DeviceKey> {
        let wanted = self.wedged.iter().filter(|(_, done)| **done == 0);
        self.not_being_claimed(wanted.map(|(device, _)| device.clone()))
    }

    /// Those of `devices` that no claim in flight asks for already.
    pub(super) fn not_being_claimed(
        &self,
        devices: impl IntoIterator<Item = DeviceKey>,
    ) -> Vec<DeviceKey> {
        let claiming: Vec<&DeviceKey> = self
            .in_flight
            .values()
            .filter_map(|r| match r {
                InFlight::Claim(devices) => Some(devices),
                _ => None,
            })
            .flatten()
            .collect();
        devices
            .into_iter()
            .filter(|d| !claiming.contains(&d))
            .collect()
    }

    pub(super) fn receive_claim_response(
        &mut self,
        devices: &[DeviceKey],
        response: &Value,
    ) -> Result<(), &'static str> {
        let keys = response
            .get("one_time_keys")
            .and_then(Value::as_object)
            .ok_or("missing one_time_keys")?;
        let now_ms = self.now_hint();
        for (user_id, device_id) in devices {
            let claimed = keys
                .get(user_id.as_str())
                .and_then(|d| d.get(device_id.as_str()))
                .and_then(Value::as_object)
                .and_then(|k| k.values().next());
            let Some(device) = self.devices.device(user_id, device_id).cloned() else {
                continue;
            };
            let session = claimed.and_then(|key| self.session_from_claimed_key(&device, key));
            let wedged_key = (user_id.clone(), device_id.clone());
            match session {
                Some(session) => {
                    self.claim_failures.remove(&wedged_key);
                    self.add_olm_session(&device.curve25519, session, now_ms);
                    self.answer_waiting_secret_requests(&device);
                    if let Some(when) = self.wedged.get_mut(&wedged_key) {
                        *when = now_ms.max(1);
                        self.queue_dummy(&device);
                    }
                }
                None => {
                    self.claim_failures.insert(wedged_key, now_ms);
                }
            }
        }
        Ok(())
    }

    /// Verifies a claimed key's signature by the device and opens a session.
    fn session_from_claimed_key(&self, device: &Device, key: &Value) -> Option<Session> {
        let object = key.as_object()?;
        let signing_key = Ed25519PublicKey::from_base64(&device.ed25519).ok()?;
        verify_json_signature(
            &signing_key,
            device.user_id.as_str(),
            &format!("ed25519:{}", device.device_id),
            object,
        )
        .ok()?;
        let one_time_key = Curve25519PublicKey::from_base64(object.get("key")?.as_str()?).ok()?;
        let identity_key = Curve25519PublicKey::from_base64(&device.curve25519).ok()?;
        self.account
            .create_outbound_session(identity_key, one_time_key)
            .ok()
    }

    fn queue_dummy(&mut self, device: &Device) {
        self.queue_olm_to_device(device, "m.dummy", json!({}));
    }

    /// Queues `content` as an Olm-encrypted `event_type` to one device,
    /// wiping the plaintext after. Without an Olm session with the device
    /// there is no safe channel and nothing is sent.
    pub(super) fn queue_olm_to_device(
        &mut self,
        device: &Device,
        event_type: &str,
        mut content: Value,
    ) {
        let encrypted = self.encrypt_for_device(device, event_type, &content);
        super::zeroize_json(&mut content);
        let Ok(encrypted) = encrypted else {
            return;
        };
        let body =
            json!({"messages": {device.user_id.as_str(): {device.device_id.as_str(): encrypted}}});
        let request = self.issue(InFlight::ToDevice, |txn_id| Request::ToDevice {
            event_type: "m.room.encrypted".to_owned(),
            txn_id: txn_id.to_owned(),
            body,
        });
        self.queued.push(request);
    }

    /// Whether a decrypted Olm event comes from one of our own devices
    /// that the user verified.
    pub(super) fn is_from_own_verified_device(&self, olm: &DecryptedOlm) -> bool {
        olm.sender == self.user_id
            && self
                .devices
                .device_by_curve(&olm.sender_key)
                .is_some_and(|d| d.user_id == self.user_id && self.devices.is_verified(d))
    }

    /// The device a plaintext request event names as asking
    /// (`requesting_device_id`), when the request is an `action: request`
    /// from our own user and that device is another of ours the user
    /// verified.
    pub(super) fn requesting_own_verified_device(&self, event: &Value) -> Option<Device> {
        let content = event.get("content");
        let field = |name: &str| content.and_then(|c| c.get(name)).and_then(Value::as_str);
        if event.get("sender").and_then(Value::as_str) != Some(self.user_id.as_str())
            || field("action") != Some("request")
        {
            return None;
        }
        field("requesting_device_id")
            .filter(|d| *d != self.device_id)
            .and_then(|d| self.devices.device(&self.user_id, d.into()))
            .filter(|d| self.devices.is_verified(d))
            .cloned()
    }

    /// Whether a device was claimed for recently without getting a key.
    pub(super) fn claim_failed_recently(&self, device: &DeviceKey, now_ms: u64) -> bool {
        self.claim_failures
            .get(device)
            .is_some_and(|when| now_ms.saturating_sub(*when) < CLAIM_RETRY_MS)
    }

    pub(super) fn has_olm_session(&self, device: &Device) -> bool {
        self.olm_sessions.has_session(&device.curve25519)
    }

    /// Olm-encrypts an event for one device: the `m.room.encrypted`
    /// to-device content, payload fields per spec.
    pub(super) fn encrypt_for_device(
        &mut self,
        device: &Device,
        event_type: &str,
        content: &Value,
    ) -> Result<Value, MachineError> {
        let payload = self.olm_payload(event_type, content);
        self.olm_encrypt(device, &payload.for_device(device))
    }

    /// The payload of an event from this device, for any number of
    /// recipients.
    pub(super) fn olm_payload(&self, event_type: &str, content: &Value) -> OlmPayload {
        let ours = self.account.identity_keys();
        OlmPayload::new(&json!({
            "type": event_type,
            "content": content,
            "sender": self.user_id,
            "sender_device": self.device_id,
            "keys": {"ed25519": ours.ed25519.to_base64()},
            "sender_device_keys": self.sender_device_keys(),
        }))
    }

    /// How many to-device events were dropped, by
    /// [`ToDeviceRejection::name`]: encrypted ones that failed to decrypt
    /// or to pass the payload checks, and any whose sender is not a user id.
    pub fn rejected_to_device_counts(&self) -> &BTreeMap<&'static str, u64> {
        &self.to_device_rejections
    }

    /// Olm-encrypts a serialised payload for one device, with the session
    /// used last.
    pub(super) fn olm_encrypt(
        &mut self,
        device: &Device,
        plaintext: &[u8],
    ) -> Result<Value, MachineError> {
        let Some(message) = self.olm_sessions.encrypt(&device.curve25519, plaintext) else {
            return Err(MachineError::NoOlmSession {
                user_id: device.user_id.clone(),
                device_id: device.device_id.clone(),
            });
        };
        // OlmMessage serialises as the spec's `{"type": 0|1, "body": base64}`.
        let message = serde_json::to_value(message?).unwrap_or_default();
        Ok(json!({
            "algorithm": OLM_ALGORITHM,
            "sender_key": self.account.identity_keys().curve25519.to_base64(),
            "ciphertext": {device.curve25519.clone(): message},
        }))
    }

    /// Handles one to-device event from a sync.
    pub(super) fn receive_to_device(
        &mut self,
        event: &Value,
        now_ms: u64,
        output: &mut SyncOutput,
    ) {
        // The sender is the server's word (or the embedder's): parsed here
        // once, so no handler below meets a sender that is not a user id.
        let Some(sender) = event
            .get("sender")
            .and_then(Value::as_str)
            .and_then(|sender| UserId::parse(sender).ok())
        else {
            self.count_rejection(ToDeviceRejection::InvalidSender);
            return;
        };
        let event_type = event
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_default();
        match event_type {
            "m.room.encrypted" => {
                let mut decrypted = match self.decrypt_to_device(&sender, event, now_ms) {
                    Ok(decrypted) => decrypted,
                    Err(rejection) => {
                        self.count_rejection(rejection);
                        return;
                    }
                };
                match decrypted.event_type.as_str() {
                    "m.room_key" => self.receive_room_key(&decrypted, output),
                    "m.forwarded_room_key" => self.receive_forwarded_room_key(&decrypted, output),
                    "m.secret.send" => self.receive_secret_send(&decrypted, output),
                    ROOM_KEY_BUNDLE_EVENT => self.receive_room_key_bundle(&decrypted, now_ms),
                    "m.room_key.withheld" => self.receive_olm_withheld(&decrypted),
                    "m.dummy" => {}
                    _ => output
                        .to_device
                        .push(std::mem::take(&mut decrypted.payload)),
                }
            }
            "m.room_key.withheld" => self.receive_withheld(event),
            "m.room_key_request" => self.receive_key_request(event),
            "m.secret.request" => self.receive_secret_request(event),
            t if t.starts_with("m.key.verification.") => {
                self.receive_verification_event(event, now_ms);
            }
            // Room keys and secrets are only ever accepted inside Olm: a
            // plaintext one could come from anyone, the server included.
            "m.room_key" | "m.forwarded_room_key" | "m.secret.send" | ROOM_KEY_BUNDLE_EVENT => {}
            _ => output.to_device.push(event.clone()),
        }
    }

    fn count_rejection(&mut self, rejection: ToDeviceRejection) {
        *self
            .to_device_rejections
            .entry(rejection.name())
            .or_default() += 1;
    }

    /// Decrypts an `m.room.encrypted` to-device event from `sender` (its
    /// parsed `sender` field) and checks the payload.
    pub(super) fn decrypt_to_device(
        &mut self,
        sender: &UserId,
        event: &Value,
        now_ms: u64,
    ) -> Result<DecryptedOlm, ToDeviceRejection> {
        use ToDeviceRejection::*;
        let content = event.get("content").ok_or(Malformed)?;
        if content.get("algorithm").and_then(Value::as_str) != Some(OLM_ALGORITHM) {
            return Err(Malformed);
        }
        let sender_key = content
            .get("sender_key")
            .and_then(Value::as_str)
            .ok_or(Malformed)?
            .to_owned();
        let ours = self.account.identity_keys();
        let ciphertext = content
            .get("ciphertext")
            .and_then(|c| c.get(ours.curve25519.to_base64()))
            .ok_or(NotForUs)?;
        let message: OlmMessage =
            serde_json::from_value(ciphertext.clone()).map_err(|_| Malformed)?;
        let plaintext = self.olm_decrypt(sender, &sender_key, &message, now_ms)?;
        let payload: Value = serde_json::from_slice(&plaintext).map_err(|_| Malformed)?;
        self.check_payload(sender, &sender_key, payload)
    }

    fn olm_decrypt(
        &mut self,
        sender: &UserId,
        sender_key: &str,
        message: &OlmMessage,
        now_ms: u64,
    ) -> Result<Zeroizing<Vec<u8>>, ToDeviceRejection> {
        let mut decrypted = None;
        let mut built_on_it = false;
        for stored in self.olm_sessions.ordered(sender_key) {
            if let OlmMessage::PreKey(pre_key) = message {
                if !stored.session.matches(pre_key) {
                    continue;
                }
                built_on_it = true;
            }
            if let Ok(plaintext) = stored.session.decrypt(message).map(Zeroizing::new) {
                stored.last_used_ms = now_ms;
                decrypted = Some((plaintext, stored.session_id.clone()));
                break;
            }
        }
        if let Some((plaintext, session_id)) = decrypted {
            self.olm_sessions.mark_changed(sender_key, session_id);
            return Ok(plaintext);
        }
        match message {
            // A session was built on this very pre-key message and cannot
            // decrypt it again: its message key is used up, so this is a
            // replay. With a fallback key (never used up) a new inbound
            // session would otherwise take it in a second time.
            OlmMessage::PreKey(_) if built_on_it => Err(ToDeviceRejection::Replay),
            OlmMessage::PreKey(pre_key) => {
                let identity_key = Curve25519PublicKey::from_base64(sender_key)
                    .map_err(|_| ToDeviceRejection::Malformed)?;
                let (session, plaintext) = self
                    .account
                    .create_inbound_session(identity_key, pre_key)
                    .map_err(|_| ToDeviceRejection::Undecryptable)?;
                // The one-time key is gone from the account: save both in
                // the same change set.
                self.save_account();
                self.add_olm_session(sender_key, session, now_ms);
                Ok(Zeroizing::new(plaintext))
            }
            OlmMessage::Normal(_) => {
                self.mark_wedged(sender, sender_key, now_ms);
                Err(ToDeviceRejection::Undecryptable)
            }
        }
    }

    fn mark_wedged(&mut self, sender: &UserId, sender_key: &str, now_ms: u64) {
        let Some(device) = self.devices.device_by_curve(sender_key) else {
            return;
        };
        if device.user_id != sender {
            return;
        }
        let key = (device.user_id.clone(), device.device_id.clone());
        let recently = self
            .wedged
            .get(&key)
            .is_some_and(|when| *when != 0 && now_ms.saturating_sub(*when) < UNWEDGE_INTERVAL_MS);
        if !recently {
            // 0 = a fresh session is wanted; the claim answer sets the time.
            self.wedged.insert(key, 0);
        }
    }

    fn check_payload(
        &mut self,
        sender: &UserId,
        sender_key: &str,
        payload: Value,
    ) -> Result<DecryptedOlm, ToDeviceRejection> {
        use ToDeviceRejection::*;
        let field = |name: &str| payload.get(name).and_then(Value::as_str);
        let ours = self.account.identity_keys();
        if field("sender") != Some(sender.as_str())
            || field("recipient") != Some(self.user_id.as_str())
            || payload
                .get("recipient_keys")
                .and_then(|k| k.get("ed25519"))
                .and_then(Value::as_str)
                != Some(ours.ed25519.to_base64().as_str())
        {
            return Err(PayloadMismatch);
        }
        let claimed_ed25519 = payload
            .get("keys")
            .and_then(|k| k.get("ed25519"))
            .and_then(Value::as_str)
            .ok_or(Malformed)?
            .to_owned();
        let sender_device_keys = match payload.get("sender_device_keys") {
            None | Some(Value::Null) => None,
            Some(keys) => Some(check_sender_device_keys(
                sender,
                sender_key,
                &claimed_ed25519,
                field("sender_device"),
                keys,
            )?),
        };
        let announced = sender_device_keys.as_ref().map(|(device, _)| device);
        match self.devices.device_by_curve(sender_key) {
            Some(device) if device.user_id != *sender || device.ed25519 != claimed_ed25519 => {
                return Err(PayloadMismatch);
            }
            Some(device) if announced.is_some_and(|a| a.device_id != device.device_id) => {
                return Err(SenderDeviceKeysMismatch);
            }
            Some(_) => {}
            None if announced
                .and_then(|a| self.devices.device(sender, &a.device_id))
                .is_some() =>
            {
                // The device id is known with another curve25519 key.
                return Err(SenderDeviceKeysMismatch);
            }
            None => {
                // Unknown device: learn it, and judge what it sent when we do.
                if !self.devices.track(sender) {
                    self.devices.mark_changed(sender);
                }
                self.save_user_devices(sender);
            }
        }
        let event_type = field("type").ok_or(Malformed)?.to_owned();
        let content = payload.get("content").cloned().ok_or(Malformed)?;
        Ok(DecryptedOlm {
            sender: sender.to_owned(),
            sender_key: sender_key.to_owned(),
            claimed_ed25519,
            sender_device_keys: sender_device_keys.map(|(_, object)| object),
            event_type,
            content,
            payload,
        })
    }

    /// Stores a new session (and forgets the one it pushed out, if any).
    fn add_olm_session(&mut self, sender_key: &str, session: Session, now_ms: u64) {
        if let Some(evicted) = self.olm_sessions.insert(sender_key, session, now_ms) {
            self.changes.delete(olm_record_key(sender_key, &evicted));
        }
    }

    /// Adds the records of the Olm sessions that changed to the change set.
    pub(super) fn save_changed_olm_sessions(&mut self) {
        for record in self.olm_sessions.take_changed(&self.pickle_key) {
            let key = olm_record_key(&record.sender_key, &record.session_id);
            self.put_pickled(key, &record, record.pickle.len());
        }
    }

    /// The latest `now_ms` the machine was given; claims have no clock of
    /// their own and use it to timestamp sessions.
    pub(super) fn now_hint(&self) -> u64 {
        self.meta.last_now_ms
    }
}

/// The plaintext of an Olm-encrypted event, serialised once for all its
/// recipients: only `recipient` and `recipient_keys` differ, and they are
/// appended to the common part for each device. Wiped on drop (it may
/// carry a room key), as is each device's copy.
pub(super) struct OlmPayload {
    /// The serialised object without its closing brace.
    common: Zeroizing<Vec<u8>>,
}

impl OlmPayload {
    /// Wraps the payload's common fields (a JSON object).
    fn new(common: &Value) -> Self {
        let mut bytes = Zeroizing::new(serde_json::to_vec(common).unwrap_or_default());
        bytes.pop(); // the object's `}`: recipient fields follow
        Self { common: bytes }
    }

    /// The payload addressed to `device`.
    pub(super) fn for_device(&self, device: &Device) -> Zeroizing<Vec<u8>> {
        let mut bytes = Zeroizing::new(Vec::with_capacity(self.common.len() + 128));
        bytes.extend_from_slice(&self.common);
        bytes.extend_from_slice(br#","recipient":"#);
        // Writing a string into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *bytes, &device.user_id);
        bytes.extend_from_slice(br#","recipient_keys":{"ed25519":"#);
        let _ = serde_json::to_writer(&mut *bytes, &device.ed25519);
        bytes.extend_from_slice(b"}}");
        bytes
    }
}

/// Checks a payload's MSC4147 `sender_device_keys` against the payload
/// itself: a self-signed device keys object of `sender`'s, for the device
/// the payload names (if it names one), whose curve25519 key opened the Olm
/// session and whose ed25519 key is the payload's `keys.ed25519`. Together
/// the two keys vouch for each other: only the curve25519 key's holder
/// could put the object in the session, and only the ed25519 key's holder
/// could sign it.
pub(super) fn check_sender_device_keys(
    sender: &UserId,
    sender_key: &str,
    claimed_ed25519: &str,
    sender_device: Option<&str>,
    keys: &Value,
) -> Result<(Device, Map<String, Value>), ToDeviceRejection> {
    let invalid = ToDeviceRejection::InvalidSenderDeviceKeys;
    let object = keys.as_object().ok_or(invalid)?;
    let device_id = object
        .get("device_id")
        .and_then(Value::as_str)
        .ok_or(invalid)?;
    let device = parse_device_keys(sender, device_id.into(), keys).ok_or(invalid)?;
    if device.curve25519 != sender_key
        || device.ed25519 != claimed_ed25519
        || sender_device.is_some_and(|named| named != device_id)
    {
        return Err(invalid);
    }
    let mut object = object.clone();
    object.remove("unsigned");
    Ok((device, object))
}

fn olm_record_key(sender_key: &str, session_id: &str) -> String {
    format!("{RECORD_KIND}/{sender_key}/{session_id}")
}
