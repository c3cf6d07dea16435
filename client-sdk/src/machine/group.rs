//! Outbound Megolm sessions: one per encrypted room, shared over Olm with
//! every device that may read, rotated on schedule and on departures.
//!
//! [`OlmMachine::share_room_key`] decides, every time it is called, who
//! must hold the room's current key:
//!
//! 1. the readers of the room (see `rooms`) and our own user;
//! 2. all their known devices but ours, minus blacklisted ones and, under
//!    "only verified", unverified ones (those get `m.room_key.withheld`);
//! 3. if the current session was ever shared with a device that is not in
//!    that set any more (a member left, a device was deleted, a device was
//!    blacklisted), or it reached `rotation_period_msgs` messages or
//!    `rotation_period_ms` age, or the history visibility moved between
//!    shared (`shared`, `world_readable`) and not (its MSC4268
//!    `shared_history` flag would lie), it is discarded and a new one
//!    started: the excluded device cannot decrypt anything sent from now on.
//!
//! Before sharing, device lists of readers must be up to date (a keys/query
//! is returned first; a reader whose server's keys/query keeps failing is
//! not waited for, see `query_backoff`) and every recipient needs an Olm
//! session (a keys/claim is returned first). The sharing itself is one
//! `sendToDevice` request with one Olm message per device.

use std::collections::{BTreeMap, BTreeSet};

use myelin_crypto::{
    PickleError, PickleKey,
    megolm::{InboundGroupSession, MEGOLM_ALGORITHM, OutboundGroupSession},
};
use ruma::{OwnedRoomId, OwnedUserId, RoomId};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::{
    Device, DeviceKey, InFlight, LocalTrust, MachineError, OlmMachine, OutgoingRequest, Request,
    history::SHARED_HISTORY_FIELD,
    inbound::{InboundEntry, SessionKeyId},
    rooms::RoomState,
};

pub(super) const RECORD_KIND: &str = "outbound";

/// A room's current outbound session and whom it went to.
pub(super) struct OutboundEntry {
    pub(super) room_id: OwnedRoomId,
    session: OutboundGroupSession,
    created_ms: u64,
    /// (user, device) -> curve25519 key it was shared with.
    shared_with: BTreeMap<DeviceKey, String>,
    /// (user, device) -> withheld code already sent for this session.
    withheld_from: BTreeMap<DeviceKey, String>,
    /// Something happened that may have excluded a device the session
    /// reached (a departure, a deleted or distrusted device): it must not
    /// encrypt again until a share has checked.
    must_recheck: bool,
    /// Started while history was shared: future members may get it
    /// (MSC4268 `shared_history`, sent in `m.room_key`).
    shared_history: bool,
}

/// The session itself: saved after every message, so it stays small.
#[derive(Serialize, Deserialize)]
pub(super) struct OutboundRecord {
    room_id: OwnedRoomId,
    pickle: String,
    created_ms: u64,
    #[serde(default)]
    shared_history: bool,
}

/// Whom the session reached: saved when sharing changes it, so that a
/// message in a room of a thousand devices does not rewrite the list.
#[derive(Serialize, Deserialize)]
pub(super) struct SharesRecord {
    room_id: OwnedRoomId,
    shared_with: Vec<(DeviceKey, String)>,
    withheld_from: Vec<(DeviceKey, String)>,
    #[serde(default)]
    must_recheck: bool,
}

pub(super) const SHARES_RECORD_KIND: &str = "outbound_shares";

impl SharesRecord {
    pub(super) fn room_id(&self) -> &RoomId {
        &self.room_id
    }
}

impl OutboundEntry {
    pub(super) fn from_record(
        record: OutboundRecord,
        key: &PickleKey,
    ) -> Result<Self, PickleError> {
        Ok(Self {
            session: OutboundGroupSession::from_pickle(&record.pickle, key)?,
            room_id: record.room_id,
            created_ms: record.created_ms,
            shared_with: BTreeMap::new(),
            withheld_from: BTreeMap::new(),
            must_recheck: false,
            shared_history: record.shared_history,
        })
    }

    pub(super) fn add_shares(&mut self, record: SharesRecord) {
        self.shared_with.extend(record.shared_with);
        self.withheld_from.extend(record.withheld_from);
        self.must_recheck |= record.must_recheck;
    }

    fn record(&self, key: &PickleKey) -> OutboundRecord {
        OutboundRecord {
            room_id: self.room_id.clone(),
            pickle: self.session.pickle(key),
            created_ms: self.created_ms,
            shared_history: self.shared_history,
        }
    }

    fn shares_record(&self) -> SharesRecord {
        let pairs = |map: &BTreeMap<DeviceKey, String>| {
            map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
        };
        SharesRecord {
            room_id: self.room_id.clone(),
            shared_with: pairs(&self.shared_with),
            withheld_from: pairs(&self.withheld_from),
            must_recheck: self.must_recheck,
        }
    }

    fn is_expired(&self, rotation_ms: u64, rotation_msgs: u64, now_ms: u64) -> bool {
        u64::from(self.session.message_index()) >= rotation_msgs
            || now_ms.saturating_sub(self.created_ms) >= rotation_ms
    }
}

/// What Megolm encrypts: the event without its envelope. Borrowed, so the
/// content is serialised where it lies instead of copied into a new value.
#[derive(Serialize)]
struct MegolmPayload<'a> {
    #[serde(rename = "type")]
    event_type: &'a str,
    content: &'a Value,
    room_id: &'a RoomId,
}

/// Who gets the key and who gets a withheld notice.
pub(super) struct Recipients {
    pub(super) devices: Vec<Device>,
    pub(super) withheld: Vec<(Device, &'static str)>,
}

impl OlmMachine {
    /// Makes sure every device that may read `room_id` holds the room's
    /// current Megolm key, rotating it first if it must.
    ///
    /// Returns the requests to send first; call again after answering them,
    /// until it returns none. Then [`OlmMachine::encrypt_room_event`] works.
    ///
    /// # Errors
    ///
    /// [`MachineError::RoomNotEncrypted`] for a room with no known
    /// `m.room.encryption`; [`MachineError::VerificationViolation`] when a
    /// reader once verified changed identity, unacknowledged.
    pub fn share_room_key(
        &mut self,
        room_id: &RoomId,
        now_ms: u64,
    ) -> Result<Vec<OutgoingRequest>, MachineError> {
        self.meta.last_now_ms = self.meta.last_now_ms.max(now_ms);
        let room = self
            .rooms
            .get(room_id)
            .filter(|r| r.encryption.is_some())
            .ok_or_else(|| MachineError::RoomNotEncrypted(room_id.to_owned()))?;
        let mut users = room.readers();
        users.push(self.user_id.clone());
        users.sort();
        users.dedup();

        // 1. Up-to-date device lists for every reader.
        for user in &users {
            if self.devices.track(user) {
                self.save_user_devices(user);
            }
        }
        //    A user whose server fails keys/query is not waited for: the
        //    devices we know for them get the key (see `query_backoff`).
        let (stale, outdated): (Vec<OwnedUserId>, Vec<OwnedUserId>) = users
            .iter()
            .filter(|u| self.devices.is_outdated(u))
            .cloned()
            .partition(|u| self.query_backoff.is_backing_off(u, now_ms));
        if !outdated.is_empty() {
            return self.pending_or_new_query(outdated);
        }
        //    A verified reader whose identity changed gets nothing until
        //    the application has seen it (verification violation).
        self.check_verification_violations(&users)?;

        // 2. An Olm session with every recipient, and with every device
        //    left out, so that it can be told why inside Olm.
        let recipients = self.recipients(room_id, &users);
        let everyone: Vec<Device> = recipients
            .devices
            .iter()
            .chain(recipients.withheld.iter().map(|(device, _)| device))
            .cloned()
            .collect();
        let missing = self.devices_to_claim(&everyone, now_ms);
        if !missing.is_empty() {
            return self.pending_or_new_claim(missing);
        }

        // 3. A current session: rotate if it reached anyone it must not.
        self.rotate_if_needed(room_id, &recipients, now_ms);
        if !self.outbound.contains_key(room_id) {
            self.start_outbound_session(room_id, now_ms);
        }

        // 4. Share with whoever lacks it; withhold from the excluded.
        let mut requests = Vec::new();
        let room_keys = self.room_key_messages(room_id, &recipients.devices)?;
        if room_keys.is_some() && !stale.is_empty() {
            *self
                .utd_counts
                .entry("shared_with_stale_device_lists")
                .or_default() += 1;
        }
        requests.extend(room_keys);
        let no_olm: Vec<(Device, &'static str)> = recipients
            .devices
            .iter()
            .filter(|d| !self.has_olm_session(d))
            .map(|d| (d.clone(), "m.no_olm"))
            .collect();
        requests
            .extend(self.withheld_messages(room_id, recipients.withheld.into_iter().chain(no_olm)));
        if let Some(entry) = self.outbound.get(room_id) {
            let (record, shares) = (entry.record(&self.pickle_key), entry.shares_record());
            self.put(format!("{RECORD_KIND}/{room_id}"), &record);
            self.put(format!("{SHARES_RECORD_KIND}/{room_id}"), &shares);
        }
        Ok(requests)
    }

    /// Encrypts an event for `room_id` with its current Megolm session and
    /// returns the `m.room.encrypted` content.
    ///
    /// # Errors
    ///
    /// [`MachineError::RoomNotEncrypted`] if the room is not encrypted (the
    /// E2E-only policy never sends plaintext instead);
    /// [`MachineError::RoomKeyNotShared`] if there is no current session or
    /// it must rotate: call [`OlmMachine::share_room_key`] first;
    /// [`MachineError::VerificationViolation`] as for `share_room_key`:
    /// a message to a room with such a reader is refused as a whole, so
    /// the user sees the change before anything more is said there.
    pub fn encrypt_room_event(
        &mut self,
        room_id: &RoomId,
        event_type: &str,
        content: &Value,
        now_ms: u64,
    ) -> Result<Value, MachineError> {
        let settings = self
            .rooms
            .get(room_id)
            .and_then(|r| r.encryption)
            .ok_or_else(|| MachineError::RoomNotEncrypted(room_id.to_owned()))?;
        let mut readers = self
            .rooms
            .get(room_id)
            .map(RoomState::readers)
            .unwrap_or_default();
        readers.push(self.user_id.clone());
        self.check_verification_violations(&readers)?;
        let entry = self
            .outbound
            .get_mut(room_id)
            .filter(|e| {
                !e.must_recheck
                    && !e.is_expired(
                        settings.rotation_period_ms,
                        settings.rotation_period_msgs,
                        now_ms,
                    )
            })
            .ok_or_else(|| MachineError::RoomKeyNotShared(room_id.to_owned()))?;
        let plaintext = MegolmPayload {
            event_type,
            content,
            room_id,
        };
        let ciphertext = entry
            .session
            .encrypt(&serde_json::to_vec(&plaintext).unwrap_or_default());
        let session_id = entry.session.session_id();
        let record = entry.record(&self.pickle_key);
        // The advanced ratchet must be saved with this change set: reusing a
        // message index after a crash would repeat a keystream.
        self.put_pickled(
            format!("{RECORD_KIND}/{room_id}"),
            &record,
            record.pickle.len(),
        );
        Ok(json!({
            "algorithm": MEGOLM_ALGORITHM,
            "sender_key": self.account.identity_keys().curve25519.to_base64(),
            "ciphertext": ciphertext,
            "session_id": session_id,
            "device_id": self.device_id,
        }))
    }

    /// The id of the room's current outbound session, if any.
    pub fn outbound_session_id(&self, room_id: &RoomId) -> Option<String> {
        self.outbound.get(room_id).map(|e| e.session.session_id())
    }

    pub(super) fn recipients(&self, room_id: &RoomId, users: &[OwnedUserId]) -> Recipients {
        let only_verified =
            self.only_verified_globally || self.rooms.get(room_id).is_some_and(|r| r.only_verified);
        let mut recipients = Recipients {
            devices: Vec::new(),
            withheld: Vec::new(),
        };
        for user in users {
            for device in self.devices.devices_of(user) {
                if device.user_id == self.user_id && device.device_id == self.device_id {
                    continue;
                }
                match device.trust {
                    LocalTrust::Blacklisted => {
                        recipients.withheld.push((device.clone(), "m.blacklisted"))
                    }
                    _ if only_verified && !self.devices.is_verified(device) => {
                        recipients.withheld.push((device.clone(), "m.unverified"));
                    }
                    _ => recipients.devices.push(device.clone()),
                }
            }
        }
        recipients
    }

    fn rotate_if_needed(&mut self, room_id: &RoomId, recipients: &Recipients, now_ms: u64) {
        let Some(settings) = self.rooms.get(room_id).and_then(|r| r.encryption) else {
            return;
        };
        let Some(entry) = self.outbound.get(room_id) else {
            return;
        };
        let allowed: BTreeSet<(&str, &str, &str)> = recipients
            .devices
            .iter()
            .map(|d| {
                (
                    d.user_id.as_str(),
                    d.device_id.as_str(),
                    d.curve25519.as_str(),
                )
            })
            .collect();
        let reached_outsider = entry.shared_with.iter().any(|((user, device), curve)| {
            !allowed.contains(&(user.as_str(), device.as_str(), curve.as_str()))
        });
        let history_changed = entry.shared_history
            != self
                .rooms
                .get(room_id)
                .is_some_and(RoomState::is_history_shared);
        if reached_outsider
            || history_changed
            || entry.is_expired(
                settings.rotation_period_ms,
                settings.rotation_period_msgs,
                now_ms,
            )
        {
            self.outbound.remove(room_id);
            self.changes.delete(format!("{RECORD_KIND}/{room_id}"));
            self.changes
                .delete(format!("{SHARES_RECORD_KIND}/{room_id}"));
        } else if let Some(entry) = self.outbound.get_mut(room_id) {
            entry.must_recheck = false;
        }
    }

    /// Stops the outbound session of `room_id` (of every room, for `None`)
    /// from encrypting until the next share has checked who it reached.
    pub(super) fn recheck_outbound(&mut self, room_id: Option<&RoomId>) {
        let rooms: Vec<OwnedRoomId> = match room_id {
            Some(room_id) => vec![room_id.to_owned()],
            None => self.outbound.keys().cloned().collect(),
        };
        for room_id in rooms {
            if let Some(entry) = self.outbound.get_mut(&room_id) {
                entry.must_recheck = true;
                let shares = entry.shares_record();
                self.put(format!("{SHARES_RECORD_KIND}/{room_id}"), &shares);
            }
        }
    }

    fn start_outbound_session(&mut self, room_id: &RoomId, now_ms: u64) {
        let session = OutboundGroupSession::new();
        let shared_history = self
            .rooms
            .get(room_id)
            .is_some_and(RoomState::is_history_shared);
        // Our own inbound copy, so we can read what we send.
        let inbound = InboundGroupSession::new(&session.session_key());
        let own_key = self.account.identity_keys();
        let key_id = SessionKeyId {
            room_id: room_id.to_owned(),
            sender_key: own_key.curve25519.to_base64(),
            session_id: session.session_id(),
        };
        let entry = InboundEntry::new(
            key_id,
            inbound,
            Some(self.user_id.clone()),
            own_key.ed25519.to_base64(),
        )
        .with_shared_history(shared_history);
        self.store_inbound(entry);
        self.outbound.insert(
            room_id.to_owned(),
            OutboundEntry {
                room_id: room_id.to_owned(),
                session,
                created_ms: now_ms,
                shared_with: BTreeMap::new(),
                withheld_from: BTreeMap::new(),
                must_recheck: false,
                shared_history,
            },
        );
    }

    /// Those of `devices` we have no Olm session with and have not failed
    /// to claim a key for recently.
    pub(super) fn devices_to_claim(&self, devices: &[Device], now_ms: u64) -> Vec<DeviceKey> {
        devices
            .iter()
            .filter(|d| !self.has_olm_session(d))
            .map(|d| (d.user_id.clone(), d.device_id.clone()))
            .filter(|d| !self.claim_failed_recently(d, now_ms))
            .collect()
    }

    /// One sendToDevice request carrying `m.room_key` to every recipient
    /// with an Olm session that does not hold the current session yet.
    fn room_key_messages(
        &mut self,
        room_id: &RoomId,
        devices: &[Device],
    ) -> Result<Option<OutgoingRequest>, MachineError> {
        let Some(entry) = self.outbound.get(room_id) else {
            return Ok(None);
        };
        let session_id = entry.session.session_id();
        let content = json!({
            "algorithm": MEGOLM_ALGORITHM,
            "room_id": room_id,
            "session_id": session_id,
            "session_key": entry.session.session_key().to_base64(),
            SHARED_HISTORY_FIELD: entry.shared_history,
        });
        let targets: Vec<&Device> = devices
            .iter()
            .filter(|d| {
                !entry
                    .shared_with
                    .contains_key(&(d.user_id.clone(), d.device_id.clone()))
            })
            .filter(|d| self.has_olm_session(d))
            .collect();
        if targets.is_empty() {
            return Ok(None);
        }
        let mut content = content;
        let payload = self.olm_payload("m.room_key", &content);
        super::zeroize_json(&mut content);
        // Built as a `Map` in place: `json!` would serialise a finished map
        // into a copy, a thousand encrypted messages deep.
        let mut messages: Map<String, Value> = Map::new();
        for device in &targets {
            let encrypted = self.olm_encrypt(device, &payload.for_device(device))?;
            if let Value::Object(devices) = messages
                .entry(device.user_id.as_str())
                .or_insert_with(|| Value::Object(Map::new()))
            {
                devices.insert(device.device_id.to_string(), encrypted);
            }
        }
        let mut sent_to = Vec::with_capacity(targets.len());
        if let Some(entry) = self.outbound.get_mut(room_id) {
            for device in targets {
                let key = (device.user_id.clone(), device.device_id.clone());
                sent_to.push(key.clone());
                entry.shared_with.insert(key, device.curve25519.clone());
            }
        }
        let mut body = Map::new();
        body.insert("messages".to_owned(), Value::Object(messages));
        let body = Value::Object(body);
        let in_flight = InFlight::RoomKeys {
            room_id: room_id.to_owned(),
            session_id,
            devices: sent_to,
        };
        Ok(Some(self.issue(in_flight, |txn_id| Request::ToDevice {
            event_type: "m.room.encrypted".to_owned(),
            txn_id: txn_id.to_owned(),
            body,
        })))
    }

    /// A room key request that failed did not reach its devices: the next
    /// share sends them the session again.
    pub(super) fn room_keys_not_sent(
        &mut self,
        room_id: &RoomId,
        session_id: &str,
        devices: &[DeviceKey],
    ) {
        let Some(entry) = self.outbound.get_mut(room_id) else {
            return;
        };
        if entry.session.session_id() != session_id {
            return; // rotated since: the new session is shared afresh anyway
        }
        for device in devices {
            entry.shared_with.remove(device);
        }
        let shares = entry.shares_record();
        self.put(format!("{SHARES_RECORD_KIND}/{room_id}"), &shares);
    }

    /// `m.room_key.withheld` for the devices left out that have not been
    /// told for this session: inside Olm where there is a session (only
    /// then can the device tell the notice is ours, not the server's), in
    /// the clear otherwise (`m.no_olm`, a device with no key to claim).
    /// At most one request of each kind.
    fn withheld_messages(
        &mut self,
        room_id: &RoomId,
        excluded: impl Iterator<Item = (Device, &'static str)>,
    ) -> Vec<OutgoingRequest> {
        let sender_key = self.account.identity_keys().curve25519.to_base64();
        let Some(entry) = self.outbound.get_mut(room_id) else {
            return Vec::new();
        };
        let session_id = entry.session.session_id();
        let mut notices = Vec::new();
        for (device, code) in excluded {
            let key = (device.user_id.clone(), device.device_id.clone());
            if entry.withheld_from.get(&key).map(String::as_str) == Some(code) {
                continue;
            }
            entry.withheld_from.insert(key, code.to_owned());
            let content = json!({
                "algorithm": MEGOLM_ALGORITHM,
                "room_id": room_id,
                "session_id": session_id,
                "sender_key": sender_key,
                "code": code,
                "reason": withheld_reason(code),
            });
            notices.push((device, content));
        }
        let mut sealed: BTreeMap<OwnedUserId, Map<String, Value>> = BTreeMap::new();
        let mut in_clear: BTreeMap<OwnedUserId, Map<String, Value>> = BTreeMap::new();
        for (device, content) in notices {
            let encrypted = if self.has_olm_session(&device) {
                self.encrypt_for_device(&device, "m.room_key.withheld", &content)
                    .ok()
            } else {
                None
            };
            let (target, content) = match encrypted {
                Some(encrypted) => (&mut sealed, encrypted),
                None => (&mut in_clear, content),
            };
            target
                .entry(device.user_id.clone())
                .or_default()
                .insert(device.device_id.to_string(), content);
        }
        let mut requests = Vec::new();
        for (event_type, messages) in [
            ("m.room.encrypted", sealed),
            ("m.room_key.withheld", in_clear),
        ] {
            if messages.is_empty() {
                continue;
            }
            let body = json!({"messages": messages});
            requests.push(self.issue(InFlight::ToDevice, |txn_id| Request::ToDevice {
                event_type: event_type.to_owned(),
                txn_id: txn_id.to_owned(),
                body,
            }));
        }
        requests
    }

    /// The users whose device lists want a keys/query now: outdated, not
    /// being queried, and not on a server that is backing off.
    pub(super) fn users_to_query_now(&self) -> Vec<OwnedUserId> {
        let now_ms = self.meta.last_now_ms;
        let mut users = self.devices.users_to_query();
        users.retain(|u| !self.query_backoff.is_backing_off(u, now_ms));
        users
    }

    /// A query for those of `users` not already being queried; if all are,
    /// the caller must wait for that answer.
    pub(super) fn pending_or_new_query(
        &mut self,
        users: Vec<OwnedUserId>,
    ) -> Result<Vec<OutgoingRequest>, MachineError> {
        let to_query: Vec<OwnedUserId> = self
            .users_to_query_now()
            .into_iter()
            .filter(|u| users.contains(u))
            .collect();
        self.query_request(to_query)
            .map(|r| vec![r])
            .ok_or(MachineError::AwaitingResponse)
    }

    /// A claim for those of `devices` not already being claimed; if all
    /// are, the caller must wait for that answer.
    pub(super) fn pending_or_new_claim(
        &mut self,
        devices: Vec<DeviceKey>,
    ) -> Result<Vec<OutgoingRequest>, MachineError> {
        let to_claim = self.not_being_claimed(devices);
        self.claim_request(to_claim)
            .map(|r| vec![r])
            .ok_or(MachineError::AwaitingResponse)
    }
}

fn withheld_reason(code: &str) -> &'static str {
    match code {
        "m.blacklisted" => "The sender has blocked this device.",
        "m.unverified" => "The sender shares keys with verified devices only.",
        _ => "The sender could not establish a secure channel with this device.",
    }
}
