//! The parts of a sync response the machine reads, and what it hands back.

use std::collections::BTreeMap;

use ruma::{OwnedRoomId, OwnedUserId};
use serde_json::Value;

use super::{devices::DeviceWarning, events::DecryptedRoomEvent, secret_sharing::ReceivedSecret};

/// The encryption-relevant parts of one `/sync` response, plus the time.
#[derive(Debug, Default, Clone)]
pub struct SyncChanges {
    /// `to_device.events`, as received.
    pub to_device_events: Vec<Value>,
    /// `device_lists.changed`.
    pub changed_devices: Vec<OwnedUserId>,
    /// Whether this was an initial sync (no `since`). It reports no device
    /// list changes, so a change made since the machine last queried (a
    /// device added before this device's first sync) would go unseen:
    /// every tracked list is refreshed instead.
    pub is_initial: bool,
    /// `device_lists.left`.
    pub left_devices: Vec<OwnedUserId>,
    /// `device_one_time_keys_count`.
    pub one_time_key_counts: BTreeMap<String, u64>,
    /// `device_unused_fallback_key_types`; `None` when the server omitted
    /// the field (it does not support fallback keys).
    pub unused_fallback_key_types: Option<Vec<String>>,
    /// Room state that matters, per room, in timeline order.
    pub rooms: Vec<RoomUpdate>,
    /// The caller's clock, in milliseconds since the Unix epoch. The machine
    /// has no clock of its own.
    pub now_ms: u64,
}

/// State changes of one room: new encryption settings, history
/// visibility and membership.
#[derive(Debug, Clone)]
pub struct RoomUpdate {
    /// The room id.
    pub room_id: OwnedRoomId,
    /// The content of a new `m.room.encryption` state event.
    pub encryption: Option<Value>,
    /// The `history_visibility` of a new `m.room.history_visibility`.
    pub history_visibility: Option<String>,
    /// Membership changes, (user id, membership) in order. A member event
    /// whose state key is not a user id has no place here: the caller
    /// drops it when parsing.
    pub members: Vec<(OwnedUserId, Membership)>,
    /// When this update invites us: who sent the invite (the `sender` of
    /// our `m.room.member` invite event). History shared with us for the
    /// room is accepted from that user only (`history`).
    pub inviter: Option<OwnedUserId>,
}

impl RoomUpdate {
    /// An update of `room_id` that changes nothing yet.
    pub fn new(room_id: OwnedRoomId) -> Self {
        Self {
            room_id,
            encryption: None,
            history_visibility: None,
            members: Vec::new(),
            inviter: None,
        }
    }
}

/// A member's membership in a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Membership {
    /// Joined: reads everything sent while joined.
    Join,
    /// Invited: reads new messages if history visibility allows.
    Invite,
    /// Left, kicked or banned: reads nothing more.
    Leave,
}

impl Membership {
    /// Parses the `membership` of an `m.room.member` event; `knock` and
    /// unknown values read as [`Membership::Leave`] (no keys for them).
    pub fn from_event(membership: &str) -> Self {
        match membership {
            "join" => Self::Join,
            "invite" => Self::Invite,
            _ => Self::Leave,
        }
    }
}

/// What a sync handed back.
#[derive(Debug, Default)]
pub struct SyncOutput {
    /// To-device events that decrypted and are not the machine's own
    /// business (not room keys, not `m.dummy`), for the application.
    pub to_device: Vec<Value>,
    /// Room events that were undecryptable and now decrypted because their
    /// key arrived in this sync.
    pub late_decryptions: Vec<DecryptedRoomEvent>,
    /// Problems with other devices, for the application to show.
    pub warnings: Vec<DeviceWarning>,
    /// Secrets our other devices sent at our request.
    pub secrets: Vec<ReceivedSecret>,
}
