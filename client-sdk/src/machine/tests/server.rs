//! A tiny in-memory stand-in for a homeserver's E2EE endpoints, and a
//! client wrapper that drives a machine against it event by event.
//!
//! The server is deliberately dumb and honest by default; tests that need a
//! malicious server reach into its maps and change what it serves.

use std::collections::{BTreeMap, BTreeSet};

use myelin_crypto::PickleKey;
use serde_json::{Map, Value, json};

use crate::machine::{
    Changes, CryptoStore, DecryptedRoomEvent, MemoryStore, OlmMachine, OutgoingRequest, Request,
    RoomUpdate, SyncChanges, SyncOutput, UnableToDecrypt,
};

pub(super) type DeviceKey = (String, String);

#[derive(Default)]
pub(super) struct FakeServer {
    pub(super) device_keys: BTreeMap<String, BTreeMap<String, Value>>,
    pub(super) one_time_keys: BTreeMap<DeviceKey, BTreeMap<String, Value>>,
    /// Unused fallback key per device; `used` once claimed.
    pub(super) fallback_keys: BTreeMap<DeviceKey, (String, Value, bool)>,
    pub(super) inboxes: BTreeMap<DeviceKey, Vec<Value>>,
    /// Users each device should hear about in `device_lists.changed`.
    pub(super) changed: BTreeMap<DeviceKey, BTreeSet<String>>,
    /// Cross-signing keys by user, then `master_key`, `self_signing_key`
    /// or `user_signing_key`, as uploaded (signatures merged in).
    pub(super) cross_signing: BTreeMap<String, BTreeMap<String, Value>>,
    /// Key backup versions as created (`version` is the position + 1).
    pub(super) backup_versions: Vec<Value>,
    /// Backed-up sessions by version, then room, then session id.
    pub(super) backup_keys: BTreeMap<String, BTreeMap<String, Map<String, Value>>>,
    /// How many backup upload requests arrived.
    pub(super) backup_uploads: usize,
    /// How many backup key fetches arrived.
    pub(super) backup_fetches: usize,
    /// Backup versions deleted, in order.
    pub(super) deleted_backup_versions: Vec<String>,
    next_event: u64,
}

impl FakeServer {
    pub(super) fn handle(&mut self, user: &str, device: &str, request: &OutgoingRequest) -> Value {
        match &request.request {
            Request::KeysUpload { body } => self.upload(user, device, body),
            Request::KeysQuery { body } => self.query(user, body),
            Request::SigningKeysUpload { body } => {
                let keys = self.cross_signing.entry(user.to_owned()).or_default();
                for (name, key) in body.as_object().unwrap() {
                    keys.insert(name.clone(), key.clone());
                }
                self.notify_change(user);
                json!({})
            }
            Request::SignaturesUpload { body } => {
                for (target, signed) in body.as_object().unwrap() {
                    for (key_id, object) in signed.as_object().unwrap() {
                        let stored = match self
                            .device_keys
                            .get_mut(target)
                            .and_then(|d| d.get_mut(key_id))
                        {
                            Some(device) => device,
                            None => self
                                .cross_signing
                                .get_mut(target)
                                .and_then(|k| k.get_mut("master_key"))
                                .unwrap(),
                        };
                        merge_signatures(stored, object);
                    }
                    self.notify_change(target);
                }
                json!({"failures": {}})
            }
            Request::KeysClaim { body } => self.claim(body),
            Request::BackupVersionCreate { body } => {
                let version = (self.backup_versions.len() + 1).to_string();
                let mut info = body.clone();
                info["version"] = json!(version);
                self.backup_versions.push(info);
                json!({"version": version})
            }
            Request::BackupKeysUpload { version, body } => {
                self.backup_uploads += 1;
                let stored = self.backup_keys.entry(version.clone()).or_default();
                for (room, sessions) in body["rooms"].as_object().unwrap() {
                    let room = stored.entry(room.clone()).or_default();
                    for (id, data) in sessions["sessions"].as_object().unwrap() {
                        room.insert(id.clone(), data.clone());
                    }
                }
                json!({"count": stored.values().map(Map::len).sum::<usize>(), "etag": "1"})
            }
            Request::BackupKeysFetch {
                version,
                room_id,
                session_id,
            } => {
                self.backup_fetches += 1;
                let room = self
                    .backup_keys
                    .get(version)
                    .and_then(|rooms| rooms.get(room_id.as_str()))
                    .cloned()
                    .unwrap_or_default();
                match session_id {
                    Some(session_id) => room.get(session_id).cloned().unwrap_or(Value::Null),
                    None => json!({"sessions": room}),
                }
            }
            Request::BackupVersionDelete { version } => {
                self.deleted_backup_versions.push(version.clone());
                self.backup_keys.remove(version);
                json!({})
            }
            Request::ToDevice {
                event_type, body, ..
            } => {
                for (to_user, devices) in body["messages"].as_object().unwrap() {
                    for (to_device, content) in devices.as_object().unwrap() {
                        let targets: Vec<String> = if to_device == "*" {
                            self.device_keys
                                .get(to_user)
                                .map(|d| d.keys().cloned().collect())
                                .unwrap_or_default()
                        } else {
                            vec![to_device.clone()]
                        };
                        for target in targets {
                            self.inboxes
                                .entry((to_user.clone(), target))
                                .or_default()
                                .push(
                                    json!({"type": event_type, "sender": user, "content": content}),
                                );
                        }
                    }
                }
                json!({})
            }
        }
    }

    /// The answers of `GET /room_keys/version/{version}` and
    /// `GET /room_keys/keys?version=…`.
    pub(super) fn backup(&self, version: &str) -> (Value, Value) {
        let index: usize = version.parse().unwrap();
        let rooms: Map<String, Value> = self
            .backup_keys
            .get(version)
            .into_iter()
            .flatten()
            .map(|(room, sessions)| (room.clone(), json!({"sessions": sessions})))
            .collect();
        (
            self.backup_versions[index - 1].clone(),
            json!({"rooms": rooms}),
        )
    }

    /// Makes a room event from encrypted content.
    pub(super) fn room_event(&mut self, room_id: &str, sender: &str, content: Value) -> Value {
        self.next_event += 1;
        json!({
            "type": "m.room.encrypted",
            "event_id": format!("$event{}", self.next_event),
            "room_id": room_id,
            "sender": sender,
            "content": content,
        })
    }

    /// Deletes a device, as `DELETE /devices/{id}` would.
    pub(super) fn delete_device(&mut self, user: &str, device: &str) {
        if let Some(devices) = self.device_keys.get_mut(user) {
            devices.remove(device);
        }
        self.notify_change(user);
    }

    pub(super) fn notify_change(&mut self, user: &str) {
        let everyone: Vec<DeviceKey> = self
            .device_keys
            .iter()
            .flat_map(|(u, ds)| ds.keys().map(move |d| (u.clone(), d.clone())))
            .collect();
        for device in everyone {
            self.changed
                .entry(device)
                .or_default()
                .insert(user.to_owned());
        }
    }

    fn upload(&mut self, user: &str, device: &str, body: &Value) -> Value {
        let key = (user.to_owned(), device.to_owned());
        if let Some(keys) = body.get("device_keys") {
            self.device_keys
                .entry(user.to_owned())
                .or_default()
                .insert(device.to_owned(), keys.clone());
            self.notify_change(user);
        }
        if let Some(otks) = body.get("one_time_keys").and_then(Value::as_object) {
            let stored = self.one_time_keys.entry(key.clone()).or_default();
            for (id, value) in otks {
                stored.insert(id.clone(), value.clone());
            }
        }
        if let Some(fallback) = body.get("fallback_keys").and_then(Value::as_object)
            && let Some((id, value)) = fallback.iter().next()
        {
            self.fallback_keys
                .insert(key.clone(), (id.clone(), value.clone(), false));
        }
        json!({"one_time_key_counts": {"signed_curve25519": self.otk_count(&key)}})
    }

    /// A keys/query answer for `requester`: the user-signing key only for
    /// their own user, as the spec says.
    fn query(&self, requester: &str, body: &Value) -> Value {
        let mut answer = json!({"device_keys": {}, "master_keys": {}, "self_signing_keys": {}, "user_signing_keys": {}, "failures": {}});
        for user in body["device_keys"].as_object().unwrap().keys() {
            let devices = self.device_keys.get(user).cloned().unwrap_or_default();
            answer["device_keys"][user] = json!(devices);
            let keys = self.cross_signing.get(user);
            for (field, name) in [
                ("master_keys", "master_key"),
                ("self_signing_keys", "self_signing_key"),
                ("user_signing_keys", "user_signing_key"),
            ] {
                if field == "user_signing_keys" && user != requester {
                    continue;
                }
                if let Some(key) = keys.and_then(|k| k.get(name)) {
                    answer[field][user] = key.clone();
                }
            }
        }
        answer
    }

    fn claim(&mut self, body: &Value) -> Value {
        let mut result: Map<String, Value> = Map::new();
        for (user, devices) in body["one_time_keys"].as_object().unwrap() {
            for device in devices.as_object().unwrap().keys() {
                let key = (user.clone(), device.clone());
                let claimed = self
                    .one_time_keys
                    .get_mut(&key)
                    .and_then(|keys| keys.pop_first())
                    .or_else(|| {
                        self.fallback_keys.get_mut(&key).map(|(id, value, used)| {
                            *used = true;
                            (id.clone(), value.clone())
                        })
                    });
                if let Some((id, value)) = claimed {
                    let entry = result.entry(user.clone()).or_insert_with(|| json!({}));
                    entry[device] = json!({ id: value });
                }
            }
        }
        json!({"one_time_keys": result, "failures": {}})
    }

    fn otk_count(&self, key: &DeviceKey) -> usize {
        self.one_time_keys.get(key).map_or(0, BTreeMap::len)
    }

    fn sync_for(&mut self, user: &str, device: &str) -> SyncChanges {
        let key = (user.to_owned(), device.to_owned());
        let unused_fallback = match self.fallback_keys.get(&key) {
            Some((_, _, false)) => vec!["signed_curve25519".to_owned()],
            _ => vec![],
        };
        SyncChanges {
            to_device_events: self.inboxes.remove(&key).unwrap_or_default(),
            changed_devices: self
                .changed
                .remove(&key)
                .unwrap_or_default()
                .iter()
                .map(|changed| super::user(changed))
                .collect(),
            is_initial: false,
            left_devices: vec![],
            one_time_key_counts: [("signed_curve25519".to_owned(), self.otk_count(&key) as u64)]
                .into(),
            unused_fallback_key_types: Some(unused_fallback),
            rooms: vec![],
            now_ms: 0,
        }
    }
}

/// A device: its machine, its store, and the clock the test controls.
pub(super) struct Client {
    pub(super) machine: OlmMachine,
    pub(super) store: MemoryStore,
    pub(super) user: String,
    pub(super) device: String,
    pub(super) now_ms: u64,
}

pub(super) fn pickle_key() -> PickleKey {
    PickleKey::from_bytes([42; 32])
}

impl Client {
    /// A new device that has uploaded its keys.
    pub(super) fn new(server: &mut FakeServer, user: &str, device: &str) -> Self {
        let mut client = Self {
            machine: OlmMachine::new(&super::user(user), device.into(), pickle_key()),
            store: MemoryStore::new(),
            user: user.to_owned(),
            device: device.to_owned(),
            now_ms: 1_000,
        };
        client.save();
        client.send_outgoing(server);
        client
    }

    /// Rebuilds the machine from its store, as after a restart.
    pub(super) fn reload(&mut self) {
        let records = self.store.load_all().unwrap();
        self.machine = OlmMachine::load(
            &super::user(&self.user),
            self.device.as_str().into(),
            pickle_key(),
            &records,
        )
        .unwrap();
    }

    /// Saves what changed, as the async client would after each step.
    pub(super) fn save(&mut self) {
        let changes = self.machine.take_changes();
        self.store.save(changes).unwrap();
    }

    /// One sync: to-device events, device list changes, key counts, rooms.
    pub(super) fn sync(&mut self, server: &mut FakeServer, rooms: Vec<RoomUpdate>) -> SyncOutput {
        let mut changes = server.sync_for(&self.user, &self.device);
        changes.rooms = rooms;
        changes.now_ms = self.now_ms;
        let mut output = self.machine.receive_sync_changes(changes);
        self.save();
        self.send_outgoing(server);
        // Answers to the queries this sync caused can raise warnings too.
        output.warnings.extend(self.machine.take_warnings());
        output
    }

    /// Sends whatever the machine asks for, reporting each answer, until it
    /// asks for nothing more (answers can queue follow-ups).
    pub(super) fn send_outgoing(&mut self, server: &mut FakeServer) {
        for _ in 0..5 {
            let requests = self.machine.outgoing_requests();
            if requests.is_empty() {
                break;
            }
            for request in requests {
                self.answer(server, &request);
            }
            self.save();
        }
    }

    /// Deletes every Olm session from the store and reloads, as a device
    /// restored from a backup older than its sessions.
    pub(super) fn forget_olm_sessions(&mut self) {
        let mut changes = Changes::default();
        for key in self.store.load_all().unwrap().into_keys() {
            if key.starts_with("olm/") {
                changes.records.insert(key, None);
            }
        }
        self.store.save(changes).unwrap();
        self.reload();
    }

    /// Shares the room key until nothing is left to send, then encrypts.
    pub(super) fn send(&mut self, server: &mut FakeServer, room_id: &str, body: &str) -> Value {
        self.share(server, room_id);
        let content = self
            .machine
            .encrypt_room_event(
                super::room_id(room_id),
                "m.room.message",
                &json!({"msgtype": "m.text", "body": body}),
                self.now_ms,
            )
            .unwrap();
        self.save();
        server.room_event(room_id, &self.user, content)
    }

    pub(super) fn share(&mut self, server: &mut FakeServer, room_id: &str) {
        for _ in 0..10 {
            let requests = self
                .machine
                .share_room_key(super::room_id(room_id), self.now_ms)
                .unwrap();
            self.save();
            if requests.is_empty() {
                return;
            }
            for request in requests {
                self.answer(server, &request);
            }
            self.save();
        }
        panic!("sharing did not settle");
    }

    pub(super) fn decrypt(
        &mut self,
        room_id: &str,
        event: &Value,
    ) -> Result<DecryptedRoomEvent, UnableToDecrypt> {
        let result = self
            .machine
            .decrypt_room_event(super::room_id(room_id), event);
        self.save();
        result
    }

    pub(super) fn answer(&mut self, server: &mut FakeServer, request: &OutgoingRequest) {
        let response = server.handle(&self.user, &self.device, request);
        self.machine
            .mark_request_sent(&request.request_id, &response)
            .unwrap();
    }
}

/// Adds `from`'s signatures to `stored`'s, as `/keys/signatures/upload` does.
fn merge_signatures(stored: &mut Value, from: &Value) {
    for (signer, signatures) in from["signatures"].as_object().unwrap() {
        for (key_id, signature) in signatures.as_object().unwrap() {
            stored["signatures"][signer][key_id] = signature.clone();
        }
    }
}

/// The body of a decrypted `m.room.message`.
pub(super) fn body(event: &DecryptedRoomEvent) -> &str {
    event.content["body"].as_str().unwrap()
}
