//! The `/sync` answer, parsed leniently into a [`SyncUpdate`].
//!
//! Only `next_batch` is required; every section may be missing, and a
//! malformed event or room id is dropped rather than failing the sync (a
//! sync that fails on one bad event would be retried forever).

use std::collections::BTreeMap;

use ruma::{OwnedRoomId, OwnedUserId};
use serde::Deserialize;
use serde_json::Value;

use crate::events::{RoomEvent, StrippedStateEvent, ToDeviceEvent, parse_each};
use crate::machine::{DecryptedRoomEvent, DeviceWarning, ReceivedSecret, UnableToDecrypt};

/// Everything one sync delivered.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SyncUpdate {
    /// The token the next sync starts from (saved with this update).
    pub next_batch: String,
    /// Whether this was an initial sync (no `since` token).
    pub is_initial: bool,
    /// Rooms we are joined to, with their new events.
    pub joined: Vec<JoinedRoomUpdate>,
    /// Rooms we were invited to.
    pub invited: Vec<InvitedRoomUpdate>,
    /// Rooms we left (or were kicked or banned from).
    pub left: Vec<LeftRoomUpdate>,
    /// To-device events for this device, in order.
    pub to_device: Vec<ToDeviceEvent>,
    /// Users whose device lists changed or who no longer share a room with
    /// us.
    pub device_lists: DeviceListChanges,
    /// `device_one_time_keys_count`, by algorithm.
    pub one_time_keys_count: BTreeMap<String, u64>,
    /// `device_unused_fallback_key_types`, if the server sent it.
    pub unused_fallback_key_types: Option<Vec<String>>,
    /// Global account data events.
    pub account_data: Vec<Value>,
    /// The `m.room.encrypted` timeline events of this update that
    /// decrypted, then events of earlier updates (or of
    /// [`Client::decrypt_event`](crate::Client::decrypt_event)) whose key
    /// arrived in this one, or was fetched from the key backup after the
    /// previous sync (when this device holds the backup's key).
    pub decrypted: Vec<DecryptedRoomEvent>,
    /// The `m.room.encrypted` timeline events of this update that did not
    /// decrypt, with their room and why. Those whose key may still arrive
    /// are kept and show up in a later update's `decrypted`.
    pub undecryptable: Vec<(OwnedRoomId, UnableToDecrypt)>,
    /// Problems the crypto machine found with other users' keys (a changed
    /// identity, refused device keys), for the application to show.
    pub device_warnings: Vec<DeviceWarning>,
    /// Secrets our other devices sent at [`Client::request_secrets`](crate::Client::request_secrets)'s
    /// request (cross-signing keys imported; the backup's recovery key).
    pub secrets: Vec<ReceivedSecret>,
}

impl SyncUpdate {
    /// Whether the sync delivered nothing but a new token.
    pub fn is_empty(&self) -> bool {
        self.joined.is_empty()
            && self.invited.is_empty()
            && self.left.is_empty()
            && self.to_device.is_empty()
            && self.device_lists.changed.is_empty()
            && self.device_lists.left.is_empty()
            && self.account_data.is_empty()
            && self.decrypted.is_empty()
            && self.device_warnings.is_empty()
            && self.secrets.is_empty()
    }

    /// Every timeline event of joined rooms, with its room.
    pub fn timeline_events(&self) -> impl Iterator<Item = (&OwnedRoomId, &RoomEvent)> {
        self.joined.iter().flat_map(|room| {
            room.timeline
                .iter()
                .map(move |event| (&room.room_id, event))
        })
    }
}

/// New events in a joined room.
#[derive(Debug, Clone, PartialEq)]
pub struct JoinedRoomUpdate {
    /// The room.
    pub room_id: OwnedRoomId,
    /// New timeline events, oldest first.
    pub timeline: Vec<RoomEvent>,
    /// State from before the timeline (all of it on an initial sync or
    /// after a gap).
    pub state: Vec<RoomEvent>,
    /// Whether events between the last sync and this timeline were left
    /// out (paginate from `prev_batch` to fetch them).
    pub limited: bool,
    /// The token to paginate backwards from the start of `timeline`.
    pub prev_batch: Option<String>,
    /// Ephemeral events: `m.typing`, `m.receipt`.
    pub ephemeral: Vec<Value>,
    /// Room account data events.
    pub account_data: Vec<Value>,
}

impl JoinedRoomUpdate {
    /// The state changes in this update: the state block, then the state
    /// events of the timeline, in order.
    pub fn state_changes(&self) -> impl Iterator<Item = &RoomEvent> {
        self.state
            .iter()
            .chain(self.timeline.iter().filter(|event| event.is_state()))
    }

    /// The users typing now, if this update carried an `m.typing` event.
    pub fn typing(&self) -> Option<Vec<OwnedUserId>> {
        let typing = self
            .ephemeral
            .iter()
            .find(|event| event.get("type").and_then(Value::as_str) == Some("m.typing"))?;
        Some(
            typing
                .pointer("/content/user_ids")
                .and_then(Value::as_array)
                .map(|ids| {
                    ids.iter()
                        .filter_map(|id| OwnedUserId::try_from(id.as_str()?).ok())
                        .collect()
                })
                .unwrap_or_default(),
        )
    }

    /// `m.receipt` content: event id → receipt type → user → receipt.
    pub fn receipts(&self) -> impl Iterator<Item = &Value> {
        self.ephemeral
            .iter()
            .filter(|event| event.get("type").and_then(Value::as_str) == Some("m.receipt"))
            .filter_map(|event| event.get("content"))
    }
}

/// An invite.
#[derive(Debug, Clone, PartialEq)]
pub struct InvitedRoomUpdate {
    /// The room.
    pub room_id: OwnedRoomId,
    /// What the room shows of itself to invitees (name, our invite event).
    pub invite_state: Vec<StrippedStateEvent>,
}

/// A room we left.
#[derive(Debug, Clone, PartialEq)]
pub struct LeftRoomUpdate {
    /// The room.
    pub room_id: OwnedRoomId,
    /// Timeline events up to our leave.
    pub timeline: Vec<RoomEvent>,
    /// State before the timeline.
    pub state: Vec<RoomEvent>,
}

/// `device_lists` of a sync.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct DeviceListChanges {
    /// Users whose devices or keys changed.
    #[serde(default, deserialize_with = "lenient_user_ids")]
    pub changed: Vec<OwnedUserId>,
    /// Users we no longer share an encrypted room with.
    #[serde(default, deserialize_with = "lenient_user_ids")]
    pub left: Vec<OwnedUserId>,
}

fn lenient_user_ids<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<OwnedUserId>, D::Error> {
    let values = Vec::<Value>::deserialize(deserializer)?;
    Ok(values
        .iter()
        .filter_map(|value| OwnedUserId::try_from(value.as_str()?).ok())
        .collect())
}

/// The wire shape of `/sync`, as far as the SDK reads it.
#[derive(Debug, Deserialize)]
pub(crate) struct SyncResponse {
    next_batch: String,
    #[serde(default)]
    rooms: Rooms,
    #[serde(default)]
    to_device: EventList,
    #[serde(default)]
    device_lists: DeviceListChanges,
    #[serde(default)]
    device_one_time_keys_count: BTreeMap<String, u64>,
    #[serde(default)]
    device_unused_fallback_key_types: Option<Vec<String>>,
    #[serde(default)]
    account_data: EventList,
}

#[derive(Debug, Default, Deserialize)]
struct Rooms {
    #[serde(default)]
    join: BTreeMap<String, JoinedRoom>,
    #[serde(default)]
    invite: BTreeMap<String, InvitedRoom>,
    #[serde(default)]
    leave: BTreeMap<String, LeftRoom>,
}

#[derive(Debug, Default, Deserialize)]
struct EventList {
    #[serde(default)]
    events: Vec<Value>,
}

#[derive(Debug, Default, Deserialize)]
struct Timeline {
    #[serde(default)]
    events: Vec<Value>,
    #[serde(default)]
    limited: bool,
    #[serde(default)]
    prev_batch: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct JoinedRoom {
    #[serde(default)]
    timeline: Timeline,
    #[serde(default)]
    state: EventList,
    #[serde(default)]
    ephemeral: EventList,
    #[serde(default)]
    account_data: EventList,
}

#[derive(Debug, Default, Deserialize)]
struct InvitedRoom {
    #[serde(default)]
    invite_state: EventList,
}

#[derive(Debug, Default, Deserialize)]
struct LeftRoom {
    #[serde(default)]
    timeline: Timeline,
    #[serde(default)]
    state: EventList,
}

impl SyncResponse {
    /// Turns the wire answer into an update, dropping what is malformed.
    pub(crate) fn into_update(self, is_initial: bool) -> SyncUpdate {
        SyncUpdate {
            next_batch: self.next_batch,
            is_initial,
            joined: rooms(self.rooms.join, |room_id, room| JoinedRoomUpdate {
                room_id,
                timeline: parse_each(room.timeline.events, "timeline"),
                state: parse_each(room.state.events, "state"),
                limited: room.timeline.limited,
                prev_batch: room.timeline.prev_batch,
                ephemeral: room.ephemeral.events,
                account_data: room.account_data.events,
            }),
            invited: rooms(self.rooms.invite, |room_id, room| InvitedRoomUpdate {
                room_id,
                invite_state: parse_each(room.invite_state.events, "invite_state"),
            }),
            left: rooms(self.rooms.leave, |room_id, room| LeftRoomUpdate {
                room_id,
                timeline: parse_each(room.timeline.events, "timeline"),
                state: parse_each(room.state.events, "state"),
            }),
            to_device: parse_each(self.to_device.events, "to_device"),
            device_lists: self.device_lists,
            one_time_keys_count: self.device_one_time_keys_count,
            unused_fallback_key_types: self.device_unused_fallback_key_types,
            account_data: self.account_data.events,
            decrypted: Vec::new(),
            undecryptable: Vec::new(),
            device_warnings: Vec::new(),
            secrets: Vec::new(),
        }
    }
}

fn rooms<R, U>(rooms: BTreeMap<String, R>, convert: impl Fn(OwnedRoomId, R) -> U) -> Vec<U> {
    rooms
        .into_iter()
        .filter_map(|(room_id, room)| Some(convert(OwnedRoomId::try_from(room_id).ok()?, room)))
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::SyncResponse;

    #[test]
    fn a_minimal_answer_parses() {
        let response: SyncResponse = serde_json::from_value(json!({"next_batch": "s1"})).unwrap();
        let update = response.into_update(true);
        assert_eq!(update.next_batch, "s1");
        assert!(update.is_empty());
    }

    #[test]
    fn sections_are_read_and_bad_room_ids_dropped() {
        let response: SyncResponse = serde_json::from_value(json!({
            "next_batch": "s2",
            "rooms": {
                "join": {
                    "!a:x": {
                        "timeline": {"events": [
                            {"event_id": "$1", "sender": "@u:x", "type": "m.room.message", "content": {"body": "hi"}},
                            {"event_id": "$2", "sender": "@u:x", "type": "m.room.topic", "state_key": "", "content": {"topic": "t"}}
                        ], "limited": true, "prev_batch": "p1"},
                        "ephemeral": {"events": [{"type": "m.typing", "content": {"user_ids": ["@u:x", "bad"]}}]}
                    },
                    "no-bang": {}
                },
                "invite": {"!b:x": {"invite_state": {"events": [
                    {"sender": "@u:x", "type": "m.room.member", "state_key": "@me:x", "content": {"membership": "invite"}}
                ]}}}
            },
            "to_device": {"events": [{"sender": "@u:x", "type": "m.dummy", "content": {}}]},
            "device_lists": {"changed": ["@u:x", 7], "left": ["@v:x"]}
        }))
        .unwrap();
        let update = response.into_update(false);
        assert_eq!(update.joined.len(), 1);
        let room = &update.joined[0];
        assert!(room.limited);
        assert_eq!(room.prev_batch.as_deref(), Some("p1"));
        assert_eq!(room.state_changes().count(), 1);
        assert_eq!(room.typing().unwrap().len(), 1);
        assert_eq!(update.invited[0].invite_state.len(), 1);
        assert_eq!(update.to_device.len(), 1);
        assert_eq!(update.device_lists.changed.len(), 1);
        assert_eq!(update.device_lists.left.len(), 1);
    }
}
