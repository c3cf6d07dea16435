//! Devices whose machines talk through an in-memory homeserver, driven only
//! through the machine's public API, as an application would drive them.

use std::collections::BTreeMap;

use myelin_crypto::{PickleKey, megolm::MEGOLM_ALGORITHM};
use myelin_sdk::machine::{
    Changes, Membership, OlmMachine, OutgoingRequest, Request, RoomUpdate, SyncChanges,
};
use ruma::RoomId;
use serde_json::{Map, Value, json};

pub const ROOM: &str = "!bench:example.org";
pub const ALICE: &str = "@alice:example.org";
/// The default rotation period: a share this much later starts a new
/// Megolm session and sends it to every device again.
pub const WEEK_MS: u64 = 7 * 24 * 60 * 60 * 1000;

/// [`ROOM`], typed.
pub fn room_id() -> &'static RoomId {
    <&RoomId>::try_from(ROOM).expect("a valid room id")
}

pub fn pickle_key() -> PickleKey {
    PickleKey::from_bytes([7; 32])
}

/// The room's state: encrypted, rotating by time only (so that a long
/// benchmark never hits the message count), with `members` joined.
pub fn room(members: &[String]) -> RoomUpdate {
    RoomUpdate {
        room_id: ROOM.try_into().expect("a valid room id"),
        encryption: Some(json!({
            "algorithm": MEGOLM_ALGORITHM,
            "rotation_period_msgs": u32::MAX,
        })),
        history_visibility: Some("shared".to_owned()),
        members: members
            .iter()
            .map(|user| {
                (
                    user.as_str().try_into().expect("a valid user id"),
                    Membership::Join,
                )
            })
            .collect(),
        inviter: None,
    }
}

/// The E2EE endpoints of a homeserver, honest and minimal.
///
/// A claim hands out each device's first one-time key and keeps it, as a
/// server does with a fallback key: every benchmark iteration starts a
/// fresh sender, which may claim the same key again.
#[derive(Default)]
pub struct Server {
    device_keys: BTreeMap<String, Map<String, Value>>,
    one_time_keys: BTreeMap<(String, String), (String, Value)>,
    inboxes: BTreeMap<(String, String), Vec<Value>>,
}

impl Server {
    /// The server's answer to `request` from `user`'s `device`.
    pub fn handle(&mut self, user: &str, device: &str, request: &OutgoingRequest) -> Value {
        match &request.request {
            Request::KeysUpload { body } => {
                if let Some(keys) = body.get("device_keys") {
                    self.device_keys
                        .entry(user.to_owned())
                        .or_default()
                        .insert(device.to_owned(), keys.clone());
                }
                let first_key = body["one_time_keys"]
                    .as_object()
                    .and_then(|k| k.iter().next());
                if let Some((id, key)) = first_key {
                    self.one_time_keys.insert(
                        (user.to_owned(), device.to_owned()),
                        (id.clone(), key.clone()),
                    );
                }
                json!({"one_time_key_counts": {"signed_curve25519": 50}})
            }
            Request::KeysQuery { body } => {
                let users = body["device_keys"].as_object().into_iter().flatten();
                let device_keys: Map<String, Value> = users
                    .map(|(user, _)| {
                        let devices = self.device_keys.get(user).cloned().unwrap_or_default();
                        (user.clone(), Value::Object(devices))
                    })
                    .collect();
                json!({"device_keys": device_keys, "failures": {}})
            }
            Request::KeysClaim { body } => {
                let mut claimed: Map<String, Value> = Map::new();
                let wanted = body["one_time_keys"].as_object().into_iter().flatten();
                for (user, devices) in wanted {
                    for device in devices.as_object().into_iter().flatten().map(|(d, _)| d) {
                        if let Some((id, key)) =
                            self.one_time_keys.get(&(user.clone(), device.clone()))
                        {
                            let entry = claimed.entry(user.clone()).or_insert_with(|| json!({}));
                            entry[device] = json!({ id: key });
                        }
                    }
                }
                json!({"one_time_keys": claimed, "failures": {}})
            }
            Request::ToDevice {
                event_type, body, ..
            } => {
                let messages = body["messages"].as_object().into_iter().flatten();
                for (to_user, devices) in messages {
                    for (to_device, content) in devices.as_object().into_iter().flatten() {
                        self.inboxes
                            .entry((to_user.clone(), to_device.clone()))
                            .or_default()
                            .push(json!({"type": event_type, "sender": user, "content": content}));
                    }
                }
                json!({})
            }
            // The benchmarks never bootstrap cross-signing or back keys up.
            Request::SigningKeysUpload { .. }
            | Request::SignaturesUpload { .. }
            | Request::BackupVersionCreate { .. }
            | Request::BackupKeysUpload { .. }
            | Request::BackupKeysFetch { .. }
            | Request::BackupVersionDelete { .. } => json!({}),
        }
    }

    /// The device's published device keys.
    pub fn device_keys(&self, user: &str, device: &str) -> &Value {
        &self.device_keys[user][device]
    }

    /// The one-time key a claim for the device returns, as published.
    pub fn one_time_key(&self, user: &str, device: &str) -> &Value {
        &self.one_time_keys[&(user.to_owned(), device.to_owned())].1
    }

    /// A sync for the device: its to-device events and the room's state.
    pub fn sync_for(&mut self, user: &str, device: &str, rooms: Vec<RoomUpdate>) -> SyncChanges {
        SyncChanges {
            to_device_events: self
                .inboxes
                .remove(&(user.to_owned(), device.to_owned()))
                .unwrap_or_default(),
            rooms,
            now_ms: 1,
            ..SyncChanges::default()
        }
    }
}

/// A device of `user`: its machine, its ids, and its clock.
pub struct Client {
    pub machine: OlmMachine,
    pub user: String,
    pub device: String,
    pub now_ms: u64,
}

impl Client {
    /// A new device that has uploaded its keys.
    pub fn new(server: &mut Server, user: &str, device: &str) -> Self {
        let mut client = Self {
            machine: OlmMachine::new(
                user.try_into().expect("a valid user id"),
                device.into(),
                pickle_key(),
            ),
            user: user.to_owned(),
            device: device.to_owned(),
            now_ms: 1,
        };
        let requests = client.machine.outgoing_requests();
        client.answer_all(server, &requests);
        client
    }

    /// Reports the server's answer to each of `requests`.
    pub fn answer_all(&mut self, server: &mut Server, requests: &[OutgoingRequest]) {
        for request in requests {
            let response = server.handle(&self.user, &self.device, request);
            self.machine
                .mark_request_sent(&request.request_id, &response)
                .expect("the machine takes the server's answer");
        }
    }

    /// One sync carrying `rooms`, then whatever requests it led to.
    pub fn sync(&mut self, server: &mut Server, rooms: Vec<RoomUpdate>) {
        let sync = server.sync_for(&self.user, &self.device, rooms);
        self.machine.receive_sync_changes(sync);
        let requests = self.machine.outgoing_requests();
        self.answer_all(server, &requests);
    }

    /// Calls `share_room_key` and answers what it asks for until it asks
    /// for nothing; the last step's requests are returned unanswered if
    /// `stop_at` says so.
    pub fn share_until(
        &mut self,
        server: &mut Server,
        stop_at: impl Fn(&Request) -> bool,
    ) -> Vec<OutgoingRequest> {
        loop {
            let requests = self
                .machine
                .share_room_key(room_id(), self.now_ms)
                .expect("the room is encrypted");
            if requests.is_empty() || requests.iter().any(|r| stop_at(&r.request)) {
                return requests;
            }
            self.answer_all(server, &requests);
        }
    }

    /// One share as the application does it: the machine's requests, sent
    /// (the server's answer to a to-device request is empty), and the
    /// changes to save before sending them.
    pub fn share_and_send(&mut self) -> (Vec<OutgoingRequest>, Changes) {
        let requests = self
            .machine
            .share_room_key(room_id(), self.now_ms)
            .expect("the room is encrypted");
        for request in &requests {
            self.machine
                .mark_request_sent(&request.request_id, &json!({}))
                .expect("in flight");
        }
        (requests, self.machine.take_changes())
    }
}

/// `count` devices, two per user, that have uploaded their keys; returns
/// their (user, device) ids.
pub fn recipients(server: &mut Server, count: usize) -> Vec<(String, String)> {
    (0..count)
        .map(|i| {
            let user = format!("@user{:04}:example.org", i / 2);
            let device = format!("DEVICE{i:04}");
            Client::new(server, &user, &device);
            (user, device)
        })
        .collect()
}

/// The distinct users of `devices`.
pub fn users_of(devices: &[(String, String)]) -> Vec<String> {
    let mut users: Vec<String> = devices.iter().map(|(user, _)| user.clone()).collect();
    users.dedup();
    users
}

/// Whether `request` is a `sendToDevice` of `m.room.encrypted` reaching
/// exactly `count` devices.
pub fn is_encrypted_to(request: &OutgoingRequest, count: usize) -> bool {
    let Request::ToDevice {
        event_type, body, ..
    } = &request.request
    else {
        return false;
    };
    let reached: usize = body["messages"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(_, devices)| devices.as_object().map_or(0, Map::len))
        .sum();
    event_type == "m.room.encrypted" && reached == count
}
