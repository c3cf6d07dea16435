//! Per-room state the machine needs: encryption settings and membership.
//!
//! **E2E-only**: once a room is encrypted it stays encrypted. A later
//! `m.room.encryption` with another algorithm, or one that lengthens the
//! rotation periods, is refused (the stricter settings are kept) and
//! reported as [`DeviceWarning::EncryptionChangeRefused`]. Rotation periods
//! are held to 1..=10,000 messages and at least an hour, as other clients
//! do: a period of 0 would make the room impossible to send to.
//!
//! **Who may read new messages**: joined members, and invited members unless
//! the history visibility is `joined` (an invitee then reads nothing until
//! they join).
//!
//! **Our own membership**: who invited us and when we joined are kept, for
//! deciding whose shared history we accept (see `history`).

use std::collections::BTreeMap;

use myelin_crypto::megolm::MEGOLM_ALGORITHM;
use ruma::{OwnedRoomId, OwnedUserId, RoomId, UserId};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{DeviceWarning, Membership, OlmMachine, RoomUpdate};

pub(super) const RECORD_KIND: &str = "room";

/// Rotation defaults from the spec's `m.room.encryption`.
const DEFAULT_ROTATION_MS: u64 = 7 * 24 * 60 * 60 * 1000;
const DEFAULT_ROTATION_MSGS: u64 = 100;
/// The bounds other clients hold rotation settings to: a room's state can
/// make sessions short-lived, but not so short that nothing can be sent
/// (a period of 0 would expire every session at birth), nor so long that
/// one session covers a room's whole history.
const MIN_ROTATION_MS: u64 = 60 * 60 * 1000;
const MIN_ROTATION_MSGS: u64 = 1;
const MAX_ROTATION_MSGS: u64 = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct EncryptionSettings {
    pub(super) rotation_period_ms: u64,
    pub(super) rotation_period_msgs: u64,
}

impl EncryptionSettings {
    /// The settings within the bounds above.
    pub(super) fn clamped(self) -> Self {
        Self {
            rotation_period_ms: self.rotation_period_ms.max(MIN_ROTATION_MS),
            rotation_period_msgs: self
                .rotation_period_msgs
                .clamp(MIN_ROTATION_MSGS, MAX_ROTATION_MSGS),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct RoomState {
    pub(super) room_id: OwnedRoomId,
    pub(super) encryption: Option<EncryptionSettings>,
    pub(super) history_visibility: Option<String>,
    pub(super) members: BTreeMap<OwnedUserId, Membership>,
    /// Share keys only with verified devices in this room.
    pub(super) only_verified: bool,
    /// Who invited us, while we are invited or joined after an invite.
    #[serde(default)]
    pub(super) inviter: Option<OwnedUserId>,
    /// When we joined (the caller's clock at the sync that showed it).
    #[serde(default)]
    pub(super) joined_ms: Option<u64>,
    /// Hand the room's shareable history to users we invite (MSC4268);
    /// off unless the user opts in.
    #[serde(default)]
    pub(super) share_history_on_invite: bool,
}

impl RoomState {
    /// A room we know nothing of yet: not encrypted, no members.
    fn new(room_id: &RoomId) -> Self {
        Self {
            room_id: room_id.to_owned(),
            encryption: None,
            history_visibility: None,
            members: BTreeMap::new(),
            only_verified: false,
            inviter: None,
            joined_ms: None,
            share_history_on_invite: false,
        }
    }

    /// The users who may read the next message.
    pub(super) fn readers(&self) -> Vec<OwnedUserId> {
        let invitees_read = self.history_visibility.as_deref() != Some("joined");
        self.members
            .iter()
            .filter(|(_, m)| {
                **m == Membership::Join || (invitees_read && **m == Membership::Invite)
            })
            .map(|(user, _)| user.clone())
            .collect()
    }

    /// Whether messages sent now may be shown to future members: the
    /// `shared_history` flag (MSC4268) of a session started now.
    pub(super) fn is_history_shared(&self) -> bool {
        matches!(
            self.history_visibility.as_deref(),
            Some("shared" | "world_readable")
        )
    }
}

impl OlmMachine {
    /// Whether the machine knows `room_id` as encrypted.
    pub fn is_room_encrypted(&self, room_id: &RoomId) -> bool {
        self.rooms
            .get(room_id)
            .is_some_and(|r| r.encryption.is_some())
    }

    /// Shares keys in `room_id` only with verified devices (`true`), or
    /// with every device not blacklisted (`false`). Excluded devices get an
    /// `m.room_key.withheld` with code `m.unverified`.
    pub fn set_only_verified(&mut self, room_id: &RoomId, only_verified: bool) {
        let room = self.room_mut(room_id);
        room.only_verified = only_verified;
        self.save_room(room_id);
        self.recheck_outbound(Some(room_id));
    }

    /// The same as [`OlmMachine::set_only_verified`], for every room.
    pub fn set_only_verified_globally(&mut self, only_verified: bool) {
        self.only_verified_globally = only_verified;
        self.recheck_outbound(None);
        self.put(super::identity::SETTINGS_RECORD.to_owned(), &only_verified);
    }

    pub(super) fn receive_room_update(&mut self, update: &RoomUpdate) {
        let room_id = &update.room_id;
        if let Some(content) = &update.encryption {
            self.receive_encryption(room_id, content);
        }
        if let Some(visibility) = &update.history_visibility {
            self.room_mut(room_id).history_visibility = Some(visibility.clone());
        }
        let may_exclude = update.history_visibility.is_some()
            || update.members.iter().any(|(_, m)| *m != Membership::Join);
        if may_exclude {
            self.recheck_outbound(Some(room_id));
        }
        for (user, membership) in &update.members {
            if *user == self.user_id {
                self.receive_own_membership(room_id, *membership, update.inviter.as_deref());
            }
            self.room_mut(room_id)
                .members
                .insert(user.clone(), *membership);
        }
        if self.is_room_encrypted(room_id) {
            // Everyone who may read an encrypted room is tracked, including
            // members from before the room turned encrypted.
            let readers = self
                .rooms
                .get(room_id)
                .map(|r| r.readers())
                .unwrap_or_default();
            for user in readers {
                if self.devices.track(&user) {
                    self.save_user_devices(&user);
                }
            }
        }
        self.save_room(room_id);
    }

    /// Remembers who invited us and when we joined, which decides whose
    /// shared history we accept (see `history`).
    fn receive_own_membership(
        &mut self,
        room_id: &RoomId,
        membership: Membership,
        inviter: Option<&UserId>,
    ) {
        let now_ms = self.meta.last_now_ms;
        let own = self.user_id.clone();
        let room = self.room_mut(room_id);
        let previous = room.members.get(&own).copied();
        match membership {
            Membership::Invite => {
                // The same invite seen again without its sender (a timeline
                // replayed after our join) keeps what the first sighting said.
                if inviter.is_some() || previous != Some(Membership::Invite) {
                    room.inviter = inviter.map(UserId::to_owned);
                }
                room.joined_ms = None;
            }
            Membership::Join if previous != Some(Membership::Join) => {
                room.joined_ms = Some(now_ms);
            }
            Membership::Join => {}
            Membership::Leave => {
                room.inviter = None;
                room.joined_ms = None;
                self.forget_room_key_bundles(room_id);
            }
        }
    }

    fn receive_encryption(&mut self, room_id: &RoomId, content: &Value) {
        let algorithm = content.get("algorithm").and_then(Value::as_str);
        let proposed = EncryptionSettings {
            rotation_period_ms: content
                .get("rotation_period_ms")
                .and_then(Value::as_u64)
                .unwrap_or(DEFAULT_ROTATION_MS),
            rotation_period_msgs: content
                .get("rotation_period_msgs")
                .and_then(Value::as_u64)
                .unwrap_or(DEFAULT_ROTATION_MSGS),
        }
        .clamped();
        let room = self.room_mut(room_id);
        match (room.encryption, algorithm == Some(MEGOLM_ALGORITHM)) {
            (None, true) => room.encryption = Some(proposed),
            (None, false) => {} // an algorithm we do not speak: not encrypted for us
            (Some(current), true) => {
                let stricter = EncryptionSettings {
                    rotation_period_ms: current.rotation_period_ms.min(proposed.rotation_period_ms),
                    rotation_period_msgs: current
                        .rotation_period_msgs
                        .min(proposed.rotation_period_msgs),
                };
                room.encryption = Some(stricter);
                if stricter != proposed {
                    self.refuse_encryption_change(room_id);
                }
            }
            (Some(_), false) => self.refuse_encryption_change(room_id),
        }
    }

    fn refuse_encryption_change(&mut self, room_id: &RoomId) {
        self.warnings.push(DeviceWarning::EncryptionChangeRefused {
            room_id: room_id.to_owned(),
        });
    }

    pub(super) fn room_mut(&mut self, room_id: &RoomId) -> &mut RoomState {
        self.rooms
            .entry(room_id.to_owned())
            .or_insert_with(|| RoomState::new(room_id))
    }

    pub(super) fn save_room(&mut self, room_id: &RoomId) {
        if let Some(room) = self.rooms.get(room_id).cloned() {
            self.put(format!("{RECORD_KIND}/{room_id}"), &room);
        }
    }
}
