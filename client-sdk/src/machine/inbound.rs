//! Inbound Megolm sessions and room event decryption.
//!
//! Sessions are stored by (room id, sender curve25519 key, session id): a
//! key received for one room never decrypts another room's events, and a
//! session id claimed under someone else's sender key finds nothing.
//!
//! Each session remembers which event id each message index decrypted as.
//! The same index under a different event id is a replay (a server or
//! member re-sending old ciphertext as a new event) and is refused.
//!
//! An event is attributed to its `sender` only if the device that owns the
//! session's sender key belongs to that sender and its ed25519 key is the
//! one the session's `m.room_key` payload claimed. A device keys/query does
//! not list (deleted since, or not fetched yet) is judged by the MSC4147
//! `sender_device_keys` its `m.room_key` carried, when the sender's current
//! self-signing key signed them: the owner vouches for the device as a
//! listed device would be vouched for.
//!
//! Events that fail for want of a key are kept and decrypted the moment the
//! key arrives ([`super::SyncOutput::late_decryptions`]).

use std::collections::BTreeMap;

use myelin_crypto::{
    PickleError, PickleKey,
    megolm::{InboundGroupSession, MEGOLM_ALGORITHM, MegolmError, SessionKey},
    olm::{Curve25519PublicKey, Ed25519PublicKey},
};
use ruma::{OwnedRoomId, OwnedUserId, RoomId, UserId};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{
    DecryptedRoomEvent, LocalTrust, OlmMachine, SyncOutput, UnableToDecrypt, UtdCause,
    VerificationState, events::event_id, history::SHARED_HISTORY_FIELD, identities::is_signed_by,
    olm::DecryptedOlm,
};

pub(super) const RECORD_KIND: &str = "inbound";
/// Withheld notices that arrived in the clear: hints only.
pub(super) const WITHHELD_RECORD: &str = "withheld";
/// Withheld notices from the session's own device over Olm, or from a
/// room key bundle.
pub(super) const CONFIRMED_WITHHELD_RECORD: &str = "withheld_confirmed";

/// At most this many undecryptable events and withheld notices are kept:
/// both can be made up by the server in any number.
const MAX_KEPT: usize = 10_000;
pub(super) const UTD_RECORD_KIND: &str = "utd";

/// Names one inbound session.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub(super) struct SessionKeyId {
    pub(super) room_id: OwnedRoomId,
    pub(super) sender_key: String,
    pub(super) session_id: String,
}

impl SessionKeyId {
    /// Reads `room_id`, `sender_key` and `session_id` from a to-device
    /// content (withheld notices, key requests, forwarded keys, bundle and
    /// backup entries); `None` unless the room id parses and
    /// [`SessionKeyId::new`] takes the rest.
    pub(super) fn from_json(object: Option<&Value>) -> Option<Self> {
        let field = |name: &str| object?.get(name)?.as_str();
        Self::new(
            <&RoomId>::try_from(field("room_id")?).ok()?,
            field("sender_key")?,
            field("session_id")?,
        )
    }

    /// A session id whose sender key is a curve25519 key and whose session
    /// id an ed25519 key (what a Megolm session id is), both in unpadded
    /// base64; `None` for anything else. Fixed-length keys are what make the
    /// record keys built from these parts (`inbound/{room}/{key}/{session}`)
    /// unambiguous: a `/` in the room id, or in a made-up "key", cannot make
    /// two sessions share a record and overwrite each other.
    pub(super) fn new(room_id: &RoomId, sender_key: &str, session_id: &str) -> Option<Self> {
        Curve25519PublicKey::from_base64(sender_key).ok()?;
        Ed25519PublicKey::from_base64(session_id).ok()?;
        Some(Self {
            room_id: room_id.to_owned(),
            sender_key: sender_key.to_owned(),
            session_id: session_id.to_owned(),
        })
    }
}

pub(super) struct InboundEntry {
    pub(super) key_id: SessionKeyId,
    session: InboundGroupSession,
    /// The user whose Olm session delivered the key; `None` for a
    /// forwarded key, which our own device relayed.
    sender: Option<OwnedUserId>,
    /// Whether the key came by forwarding rather than from the session's
    /// creator.
    forwarded: bool,
    /// The ed25519 key the `m.room_key` payload claimed for its device.
    claimed_ed25519: String,
    /// The session's creator agreed that future members may get it
    /// (MSC4268 `shared_history`).
    shared_history: bool,
    /// The user whose room key bundle gave us the session, if it came so.
    shared_by: Option<OwnedUserId>,
    /// The checked MSC4147 `sender_device_keys` the creator's `m.room_key`
    /// carried: who the device is when keys/query does not list it.
    sender_device_keys: Option<Map<String, Value>>,
    /// Message index -> the event id it decrypted as.
    seen: BTreeMap<u32, String>,
}

#[derive(Serialize, Deserialize)]
pub(super) struct InboundRecord {
    key_id: SessionKeyId,
    pickle: String,
    sender: Option<OwnedUserId>,
    #[serde(default)]
    forwarded: bool,
    claimed_ed25519: String,
    #[serde(default)]
    shared_history: bool,
    #[serde(default)]
    shared_by: Option<OwnedUserId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sender_device_keys: Option<Map<String, Value>>,
}

/// One decrypted message index and the event it belonged to. One record
/// each, so decrypting never rewrites the session or a growing list.
#[derive(Serialize, Deserialize)]
pub(super) struct ReplayRecord {
    key_id: SessionKeyId,
    index: u32,
    event_id: String,
}

pub(super) const REPLAY_RECORD_KIND: &str = "replay";

impl ReplayRecord {
    pub(super) fn key_id(&self) -> &SessionKeyId {
        &self.key_id
    }
}

impl InboundEntry {
    pub(super) fn new(
        key_id: SessionKeyId,
        session: InboundGroupSession,
        sender: Option<OwnedUserId>,
        claimed_ed25519: String,
    ) -> Self {
        Self {
            key_id,
            session,
            forwarded: sender.is_none(),
            sender,
            claimed_ed25519,
            shared_history: false,
            shared_by: None,
            sender_device_keys: None,
            seen: BTreeMap::new(),
        }
    }

    /// Keeps the checked `sender_device_keys` of the `m.room_key` payload.
    pub(super) fn with_sender_device_keys(mut self, keys: Option<Map<String, Value>>) -> Self {
        self.sender_device_keys = keys;
        self
    }

    /// The checked MSC4147 device keys of the session's creator, if its
    /// room key carried them.
    pub(super) fn sender_device_keys(&self) -> Option<&Map<String, Value>> {
        self.sender_device_keys.as_ref()
    }

    /// Sets the session's `shared_history` flag.
    pub(super) fn with_shared_history(mut self, shared_history: bool) -> Self {
        self.shared_history = shared_history;
        self
    }

    /// Marks the session as received in `user`'s room key bundle.
    pub(super) fn shared_by(mut self, user: &UserId) -> Self {
        self.shared_by = Some(user.to_owned());
        self
    }

    /// Whether the session may go into a room key bundle.
    pub(super) fn is_history_shared(&self) -> bool {
        self.shared_history
    }

    pub(super) fn add_replay_record(&mut self, record: ReplayRecord) {
        self.seen.insert(record.index, record.event_id);
    }

    /// The session from its first known index, for forwarding.
    pub(super) fn export(&self) -> myelin_crypto::megolm::ExportedSessionKey {
        self.session.export_at_first_known_index()
    }

    /// The first message index the session can decrypt.
    pub(super) fn first_known_index(&self) -> u32 {
        self.session.first_known_index()
    }

    /// Whether the key came from someone other than the session's creator.
    pub(super) fn is_forwarded(&self) -> bool {
        self.forwarded
    }

    /// The ed25519 key the session's creator claimed.
    pub(super) fn claimed_ed25519(&self) -> &str {
        &self.claimed_ed25519
    }

    pub(super) fn from_record(record: InboundRecord, key: &PickleKey) -> Result<Self, PickleError> {
        Ok(Self {
            session: InboundGroupSession::from_pickle(&record.pickle, key)?,
            key_id: record.key_id,
            sender: record.sender,
            forwarded: record.forwarded,
            claimed_ed25519: record.claimed_ed25519,
            shared_history: record.shared_history,
            shared_by: record.shared_by,
            sender_device_keys: record.sender_device_keys,
            seen: BTreeMap::new(),
        })
    }

    fn record(&self, key: &PickleKey) -> InboundRecord {
        InboundRecord {
            key_id: self.key_id.clone(),
            pickle: self.session.pickle(key),
            sender: self.sender.clone(),
            forwarded: self.forwarded,
            claimed_ed25519: self.claimed_ed25519.clone(),
            shared_history: self.shared_history,
            shared_by: self.shared_by.clone(),
            sender_device_keys: self.sender_device_keys.clone(),
        }
    }
}

impl OlmMachine {
    /// Decrypts an `m.room.encrypted` timeline event of `room_id`.
    ///
    /// # Errors
    ///
    /// [`UnableToDecrypt`] with its [`UtdCause`]. Events that may still
    /// decrypt later ([`UtdCause::MissingRoomKey`],
    /// [`UtdCause::SentBeforeWeJoined`], [`UtdCause::Withheld`]) are kept.
    pub fn decrypt_room_event(
        &mut self,
        room_id: &RoomId,
        event: &Value,
    ) -> Result<DecryptedRoomEvent, UnableToDecrypt> {
        self.decrypt_in_room(room_id, event)
    }

    /// [`OlmMachine::decrypt_room_event`] for a room id the machine holds.
    fn decrypt_in_room(
        &mut self,
        room_id: &RoomId,
        event: &Value,
    ) -> Result<DecryptedRoomEvent, UnableToDecrypt> {
        let id = event_id(event).unwrap_or_default().to_owned();
        match self.try_decrypt(room_id, event, &id) {
            Ok(decrypted) => {
                if self.pending_utd.remove(&id).is_some() {
                    self.changes.delete(format!("{UTD_RECORD_KIND}/{id}"));
                }
                Ok(decrypted)
            }
            Err(cause) => {
                let is_new = !self.pending_utd.contains_key(&id);
                if is_new {
                    *self.utd_counts.entry(cause.name()).or_default() += 1;
                }
                let may_arrive = matches!(
                    cause,
                    UtdCause::MissingRoomKey
                        | UtdCause::SentBeforeWeJoined
                        | UtdCause::Withheld { .. }
                        | UtdCause::WithheldUnconfirmed { .. }
                );
                if may_arrive && is_new && !id.is_empty() && self.pending_utd.len() < MAX_KEPT {
                    self.pending_utd
                        .insert(id.clone(), (room_id.to_owned(), event.clone()));
                    self.put(format!("{UTD_RECORD_KIND}/{id}"), &(room_id, event));
                    if !matches!(cause, UtdCause::Withheld { .. })
                        && let Some(key_id) = session_key_id(room_id, event)
                    {
                        self.request_room_key(&key_id);
                    }
                }
                Err(UnableToDecrypt {
                    event_id: id,
                    cause,
                })
            }
        }
    }

    /// How many events failed to decrypt, by [`UtdCause::name`]. Each event
    /// counts once, however often it is retried. Also counts, under
    /// `shared_with_stale_device_lists`, room keys shared while a reader's
    /// device list could not be refreshed (their server's keys/query
    /// failing): devices they added meanwhile will report a missing key.
    pub fn utd_counts(&self) -> &BTreeMap<&'static str, u64> {
        &self.utd_counts
    }

    /// How many events are kept waiting for their key.
    pub fn pending_utd_count(&self) -> usize {
        self.pending_utd.len()
    }

    pub(super) fn receive_room_key(&mut self, olm: &DecryptedOlm, output: &mut SyncOutput) {
        let field = |name: &str| olm.content.get(name).and_then(Value::as_str);
        if field("algorithm") != Some(MEGOLM_ALGORITHM) {
            return;
        }
        let (Some(room_id), Some(session_id), Some(session_key)) = (
            field("room_id").and_then(|id| <&RoomId>::try_from(id).ok()),
            field("session_id"),
            field("session_key"),
        ) else {
            return;
        };
        let Ok(key) = SessionKey::from_base64(session_key) else {
            return;
        };
        let key_id = SessionKeyId {
            room_id: room_id.to_owned(),
            sender_key: olm.sender_key.clone(),
            session_id: session_id.to_owned(),
        };
        let shared_history = olm.content.get(SHARED_HISTORY_FIELD) == Some(&Value::Bool(true));
        let entry = InboundEntry::new(
            key_id,
            InboundGroupSession::new(&key),
            Some(olm.sender.clone()),
            olm.claimed_ed25519.clone(),
        )
        .with_shared_history(shared_history)
        .with_sender_device_keys(olm.sender_device_keys.clone());
        self.accept_inbound(entry, output);
    }

    /// Stores a session that arrived by to-device or in a room key bundle,
    /// then decrypts the events that waited for it. Returns whether
    /// anything changed.
    ///
    /// A session whose id is not the one it was announced under is refused.
    /// If we already hold the session, the two copies are merged only if
    /// they are the same ratchet (the earlier one advances to exactly the
    /// later one's first key; anything else is a forgery under a known id):
    /// the merged session reaches as far back as either copy and keeps the
    /// better provenance, a key from its creator's own Olm session over a
    /// forwarded or shared one. So a bundle extends what Alice sent us
    /// without turning it into "shared by", and Alice's own key upgrades a
    /// session a bundle gave us. A copy that adds neither is ignored.
    pub(super) fn accept_inbound(&mut self, entry: InboundEntry, output: &mut SyncOutput) -> bool {
        if entry.session.session_id() != entry.key_id.session_id {
            return false; // the payload lies about which session this is
        }
        let key_id = entry.key_id.clone();
        match self.inbound.get_mut(&key_id) {
            None => self.store_inbound(entry),
            Some(existing) => {
                if !merge_into(existing, entry) {
                    return false;
                }
                let record = existing.record(&self.pickle_key);
                self.put(inbound_key(&key_id), &record);
            }
        }
        // A new or improved session is (again) due for the key backup.
        self.forget_backed_up(&key_id);
        self.retry_pending(&key_id, output);
        true
    }

    /// Records a withheld code for a session we have no key for, from a
    /// source already checked (an Olm-encrypted notice from the session's
    /// device, or a room key bundle).
    pub(super) fn record_withheld(&mut self, key_id: SessionKeyId, code: &str) {
        if self.inbound.contains_key(&key_id) || self.withheld.len() >= MAX_KEPT {
            return;
        }
        if self.withheld_hints.remove(&key_id).is_some() {
            self.changes
                .delete(format!("{WITHHELD_RECORD}/{}", inbound_key(&key_id)));
        }
        let record = (key_id.clone(), code.to_owned());
        self.put(
            format!("{CONFIRMED_WITHHELD_RECORD}/{}", inbound_key(&key_id)),
            &record,
        );
        self.withheld.insert(key_id, code.to_owned());
    }

    /// Records an `m.room_key.withheld` that came in the clear, as a hint
    /// ([`UtdCause::WithheldUnconfirmed`]): the to-device `sender` is the
    /// server's word, so the notice could be the server dressing up a key
    /// it dropped. Notices not even claiming to come from the session's
    /// owner are ignored.
    pub(super) fn receive_withheld(&mut self, event: &Value) {
        let content = event.get("content");
        let (Some(sender), Some(key_id), Some(code)) = (
            event
                .get("sender")
                .and_then(Value::as_str)
                .and_then(|sender| <&UserId>::try_from(sender).ok()),
            SessionKeyId::from_json(content),
            content.and_then(|c| c.get("code")).and_then(Value::as_str),
        ) else {
            return;
        };
        let from_sender = self
            .devices
            .device_by_curve(&key_id.sender_key)
            .is_some_and(|d| d.user_id == sender);
        if !from_sender
            || self.inbound.contains_key(&key_id)
            || self.withheld.contains_key(&key_id)
            || self.withheld_hints.len() >= MAX_KEPT
        {
            return;
        }
        let record = (key_id.clone(), code.to_owned());
        self.put(
            format!("{WITHHELD_RECORD}/{}", inbound_key(&key_id)),
            &record,
        );
        self.withheld_hints.insert(key_id, code.to_owned());
    }

    /// Records an `m.room_key.withheld` that came inside Olm. It counts
    /// only for sessions of the very device whose Olm session carried it.
    pub(super) fn receive_olm_withheld(&mut self, olm: &DecryptedOlm) {
        let key_id = SessionKeyId::from_json(Some(&olm.content));
        let code = olm.content.get("code").and_then(Value::as_str);
        if let (Some(key_id), Some(code)) = (key_id, code)
            && key_id.sender_key == olm.sender_key
        {
            self.record_withheld(key_id, code);
        }
    }

    pub(super) fn store_inbound(&mut self, entry: InboundEntry) {
        let record = entry.record(&self.pickle_key);
        self.put(inbound_key(&entry.key_id), &record);
        self.inbound.insert(entry.key_id.clone(), entry);
    }

    fn retry_pending(&mut self, key_id: &SessionKeyId, output: &mut SyncOutput) {
        let waiting: Vec<(OwnedRoomId, Value)> = self
            .pending_utd
            .values()
            .filter(|(room_id, event)| *room_id == key_id.room_id && names_session(event, key_id))
            .cloned()
            .collect();
        for (room_id, event) in waiting {
            if let Ok(decrypted) = self.decrypt_in_room(&room_id, &event) {
                output.late_decryptions.push(decrypted);
            }
        }
    }

    fn try_decrypt(
        &mut self,
        room_id: &RoomId,
        event: &Value,
        id: &str,
    ) -> Result<DecryptedRoomEvent, UtdCause> {
        let sender = event
            .get("sender")
            .and_then(Value::as_str)
            .and_then(|sender| <&UserId>::try_from(sender).ok())
            .ok_or(UtdCause::Malformed)?;
        let content = event.get("content").ok_or(UtdCause::Malformed)?;
        let field = |name: &str| content.get(name).and_then(Value::as_str);
        if field("algorithm") != Some(MEGOLM_ALGORITHM) || id.is_empty() {
            return Err(UtdCause::Malformed);
        }
        let (Some(sender_key), Some(session_id), Some(ciphertext)) = (
            field("sender_key"),
            field("session_id"),
            field("ciphertext"),
        ) else {
            return Err(UtdCause::Malformed);
        };
        let key_id = SessionKeyId {
            room_id: room_id.to_owned(),
            sender_key: sender_key.to_owned(),
            session_id: session_id.to_owned(),
        };
        let verification = self.attribute(&key_id, sender)?;
        let Some(entry) = self.inbound.get_mut(&key_id) else {
            return Err(
                match (self.withheld.get(&key_id), self.withheld_hints.get(&key_id)) {
                    (Some(code), _) => UtdCause::Withheld { code: code.clone() },
                    (None, Some(code)) => UtdCause::WithheldUnconfirmed { code: code.clone() },
                    (None, None) => UtdCause::MissingRoomKey,
                },
            );
        };
        let (forwarded, shared_by) = (entry.forwarded, entry.shared_by.clone());
        let (plaintext, index) = entry.session.decrypt(ciphertext).map_err(|e| match e {
            MegolmError::UnknownMessageIndex { .. } => UtdCause::SentBeforeWeJoined,
            MegolmError::MalformedMessage { .. } => UtdCause::Malformed,
            _ => UtdCause::Unauthentic,
        })?;
        match entry.seen.get(&index) {
            Some(seen) if seen != id => return Err(UtdCause::Replay),
            Some(_) => {}
            None => {
                entry.seen.insert(index, id.to_owned());
                let record = ReplayRecord {
                    key_id: key_id.clone(),
                    index,
                    event_id: id.to_owned(),
                };
                let key = format!("{REPLAY_RECORD_KIND}/{}/{index}", inbound_key(&key_id));
                self.put(key, &record);
            }
        }
        let mut plaintext: Value =
            serde_json::from_slice(&plaintext).map_err(|_| UtdCause::Malformed)?;
        if plaintext.get("room_id").and_then(Value::as_str) != Some(room_id.as_str()) {
            return Err(UtdCause::WrongRoom);
        }
        let event_type = plaintext
            .get("type")
            .and_then(Value::as_str)
            .ok_or(UtdCause::Malformed)?
            .to_owned();
        let sender_device = self
            .devices
            .device_by_curve(sender_key)
            .map(|d| d.device_id.clone())
            .or_else(|| (sender_key == self.own_curve()).then(|| self.device_id.clone()))
            .or_else(|| {
                let announced = self.inbound.get(&key_id)?.sender_device_keys.as_ref()?;
                Some(announced.get("device_id")?.as_str()?.into())
            });
        Ok(DecryptedRoomEvent {
            event_id: id.to_owned(),
            room_id: room_id.to_owned(),
            sender: sender.to_owned(),
            sender_device,
            sender_key: sender_key.to_owned(),
            verification,
            event_type,
            content: plaintext
                .get_mut("content")
                .map(Value::take)
                .unwrap_or(Value::Null),
            message_index: index,
            forwarded,
            shared_by,
        })
    }

    /// Checks that `sender` owns the session (and the device behind its
    /// sender key) and returns how far the event can be trusted: as far as
    /// that device, if the key came from the device's own Olm session;
    /// [`VerificationState::AuthenticityNotGuaranteed`] if it was handed on.
    fn attribute(
        &self,
        key_id: &SessionKeyId,
        sender: &UserId,
    ) -> Result<VerificationState, UtdCause> {
        let state = self.attribute_device(key_id, sender)?;
        let handed_on = self
            .inbound
            .get(key_id)
            .is_some_and(InboundEntry::is_forwarded);
        Ok(match state {
            VerificationState::Verified
            | VerificationState::Unverified
            | VerificationState::UnknownDevice
                if handed_on =>
            {
                VerificationState::AuthenticityNotGuaranteed
            }
            state => state,
        })
    }

    /// Checks that `sender` owns the session (and the device behind its
    /// sender key) and returns how far that device is trusted.
    fn attribute_device(
        &self,
        key_id: &SessionKeyId,
        sender: &UserId,
    ) -> Result<VerificationState, UtdCause> {
        if let Some(entry) = self.inbound.get(key_id)
            && entry.sender.as_deref().is_some_and(|s| s != sender)
        {
            return Err(UtdCause::SenderMismatch);
        }
        if key_id.sender_key == self.own_curve() {
            return if sender == self.user_id {
                Ok(VerificationState::Verified)
            } else {
                Err(UtdCause::SenderMismatch)
            };
        }
        let Some(device) = self.devices.device_by_curve(&key_id.sender_key) else {
            if let Some(state) = self.attribute_announced_device(key_id, sender) {
                return Ok(state);
            }
            // Unknown is only believable while the sender's device list may
            // be stale; once it is fresh, a key none of their devices has is
            // not theirs.
            return if self.devices.is_outdated(sender) {
                Ok(VerificationState::UnknownDevice)
            } else {
                Err(UtdCause::SenderMismatch)
            };
        };
        if device.user_id != sender {
            return Err(UtdCause::SenderMismatch);
        }
        if let Some(entry) = self.inbound.get(key_id)
            && entry.claimed_ed25519 != device.ed25519
        {
            return Err(UtdCause::SenderMismatch);
        }
        Ok(match device.trust {
            LocalTrust::Blacklisted => VerificationState::Blacklisted,
            _ if self.devices.is_verified(device) => VerificationState::Verified,
            _ => VerificationState::Unverified,
        })
    }

    /// How far a device keys/query does not list is trusted, judged by the
    /// `sender_device_keys` its room key carried (checked on receipt: self-
    /// signed, the session's sender key, the payload's ed25519 key): `None`
    /// unless `sender`'s current self-signing key signed them. Then the
    /// device is theirs as surely as a listed, cross-signed one, and
    /// verified when their identity is.
    fn attribute_announced_device(
        &self,
        key_id: &SessionKeyId,
        sender: &UserId,
    ) -> Option<VerificationState> {
        let entry = self.inbound.get(key_id)?;
        let announced = entry.sender_device_keys.as_ref()?;
        if entry.sender.as_deref() != Some(sender)
            || announced.get("user_id").and_then(Value::as_str) != Some(sender.as_str())
        {
            return None;
        }
        let identity = self.devices.user_record(sender)?.identity.as_ref()?;
        let self_signing = identity.self_signing.as_deref()?;
        if !is_signed_by(announced, sender, self_signing) {
            return None;
        }
        Some(if self.devices.verified_users.contains(sender) {
            VerificationState::Verified
        } else {
            VerificationState::Unverified
        })
    }

    pub(super) fn own_curve(&self) -> String {
        self.account.identity_keys().curve25519.to_base64()
    }
}

/// Merges a new copy of a session into the one we hold (see
/// [`OlmMachine::accept_inbound`]); `false`, leaving ours untouched, when
/// the new copy adds nothing or is not the same ratchet.
fn merge_into(existing: &mut InboundEntry, mut new: InboundEntry) -> bool {
    let reaches_further = new.session.first_known_index() < existing.session.first_known_index();
    let better_provenance = existing.forwarded && !new.forwarded;
    if !reaches_further && !better_provenance {
        return false;
    }
    let same_ratchet = if reaches_further {
        advances_to(&mut new.session, existing)
    } else {
        advances_to(&mut existing.session, &new)
    };
    if !same_ratchet {
        return false;
    }
    if reaches_further {
        std::mem::swap(&mut existing.session, &mut new.session);
    }
    // What was decrypted stays recorded (`seen`) for replay checks.
    if better_provenance {
        existing.sender = new.sender;
        existing.forwarded = new.forwarded;
        existing.claimed_ed25519 = new.claimed_ed25519;
        existing.shared_history = new.shared_history;
        existing.shared_by = new.shared_by;
        existing.sender_device_keys = new.sender_device_keys;
    }
    true
}

/// Whether `earlier`, advanced to `later`'s first index, is `later`
/// (compared in constant time: these are secret keys).
fn advances_to(earlier: &mut InboundGroupSession, later: &InboundEntry) -> bool {
    use subtle::ConstantTimeEq;
    earlier
        .export_at(later.session.first_known_index())
        .is_some_and(|key| {
            let (ours, theirs) = (
                zeroize::Zeroizing::new(key.to_base64()),
                zeroize::Zeroizing::new(later.export().to_base64()),
            );
            bool::from(ours.as_bytes().ct_eq(theirs.as_bytes()))
        })
}

/// The session an `m.room.encrypted` event of `room_id` names.
fn session_key_id(room_id: &RoomId, event: &Value) -> Option<SessionKeyId> {
    let content = event.get("content")?;
    let field = |name: &str| content.get(name).and_then(Value::as_str);
    SessionKeyId::new(room_id, field("sender_key")?, field("session_id")?)
}

fn names_session(event: &Value, key_id: &SessionKeyId) -> bool {
    let content = event.get("content");
    let field = |name: &str| content.and_then(|c| c.get(name)).and_then(Value::as_str);
    field("sender_key") == Some(key_id.sender_key.as_str())
        && field("session_id") == Some(key_id.session_id.as_str())
}

pub(super) fn inbound_key(key_id: &SessionKeyId) -> String {
    format!(
        "{RECORD_KIND}/{}/{}/{}",
        key_id.room_id, key_id.sender_key, key_id.session_id
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::{SessionKeyId, inbound_key};

    const KEY: &str = "33z9bIkULlKY8yXfHcT4lCISUIniiANt7F3dbjuPDGc";
    const SESSION: &str = "NxGJ0DvFvNXgrZLwxkUpZhZKo5bNBcyIFnVozJ28bq4";

    #[test]
    fn session_ids_whose_keys_are_not_keys_are_refused_so_record_keys_cannot_collide() {
        let named = |room: &str, sender_key: &str, session_id: &str| {
            SessionKeyId::from_json(Some(&json!({
                "room_id": room, "sender_key": sender_key, "session_id": session_id,
            })))
        };
        let real = named("!room:example.org", KEY, SESSION).unwrap();
        // The same record key from other parts: a room id and a sender key
        // that carry a `/` of their own.
        let forged = named("!room:example.org/x", &format!("y/{KEY}"), SESSION);
        assert!(forged.is_none());
        let forged = named("!room:example.org", &format!("{KEY}/a"), SESSION);
        assert!(forged.is_none());
        assert!(named("!room:example.org", KEY, "not a session id").is_none());
        assert!(inbound_key(&real).ends_with(&format!("/{KEY}/{SESSION}")));
    }
}
