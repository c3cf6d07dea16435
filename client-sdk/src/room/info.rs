//! [`RoomInfo`]: what the client knows about a room, folded from the
//! state events that syncs deliver and kept in the store.

use std::collections::BTreeMap;

use ruma::{OwnedRoomId, OwnedUserId};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The E2E-only room policy's state event type (issue 5; `{"e2e_required": true}`, state key "").
pub const POLICY_EVENT_TYPE: &str = "org.myelin.room.policy";
/// The Megolm algorithm every encrypted room uses.
pub const MEGOLM_ALGORITHM: &str = "m.megolm.v1.aes-sha2";

/// A user's membership in a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Membership {
    /// Joined.
    Join,
    /// Invited.
    Invite,
    /// Left, kicked, or never there.
    Leave,
    /// Banned.
    Ban,
    /// Knocking.
    Knock,
}

impl Membership {
    fn parse(value: Option<&str>) -> Option<Self> {
        serde_json::from_value(Value::String(value?.to_owned())).ok()
    }
}

/// One member of a room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Their membership.
    pub membership: Membership,
    /// Their display name in this room, if they set one.
    pub display_name: Option<String>,
}

/// What the client knows about one room.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoomInfo {
    /// The room.
    pub room_id: OwnedRoomId,
    /// Our own membership.
    pub membership: Membership,
    /// `m.room.name`.
    pub name: Option<String>,
    /// `m.room.topic`.
    pub topic: Option<String>,
    /// Members by user id, from `m.room.member` events (on an invite, only
    /// those the stripped state shows).
    pub members: BTreeMap<OwnedUserId, Member>,
    /// `m.room.encryption`'s content once the room is encrypted. Never
    /// cleared: a later event cannot switch encryption off (the spec's
    /// rule, and the defence against a server that forges one).
    pub encryption: Option<Value>,
    /// Whether the room carries Myelin's E2E-only policy
    /// (`org.myelin.room.policy` with `"e2e_required": true`). Like
    /// encryption, the client never downgrades it.
    pub is_e2e_required: bool,
    /// The token to paginate backwards from the oldest event the last
    /// sync showed.
    pub prev_batch: Option<String>,
}

impl RoomInfo {
    /// A room we know nothing about yet.
    pub fn new(room_id: OwnedRoomId, membership: Membership) -> Self {
        Self {
            room_id,
            membership,
            name: None,
            topic: None,
            members: BTreeMap::new(),
            encryption: None,
            is_e2e_required: false,
            prev_batch: None,
        }
    }

    /// Whether messages in this room must be encrypted.
    pub fn is_encrypted(&self) -> bool {
        self.encryption.is_some()
    }

    /// Takes on `other`'s encryption and E2E-only policy where this copy
    /// lacks them. Security only rises: two copies of one room built
    /// apart (by a sync and by the room's creation, say) keep both.
    pub(crate) fn raise_security_to(&mut self, other: &RoomInfo) {
        if self.encryption.is_none() {
            self.encryption.clone_from(&other.encryption);
        }
        self.is_e2e_required |= other.is_e2e_required;
    }

    /// The ids of the joined members.
    pub fn joined_members(&self) -> Vec<OwnedUserId> {
        self.members
            .iter()
            .filter(|(_, member)| member.membership == Membership::Join)
            .map(|(user_id, _)| user_id.clone())
            .collect()
    }

    /// Folds one state event into what we know. Unknown types and
    /// malformed content are ignored.
    pub(crate) fn apply_state(
        &mut self,
        own_user_id: &OwnedUserId,
        event_type: &str,
        state_key: &str,
        content: &Value,
    ) {
        let text = |field: &str| {
            content
                .get(field)
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        match event_type {
            "m.room.name" if state_key.is_empty() => {
                self.name = text("name").filter(|n| !n.is_empty())
            }
            "m.room.topic" if state_key.is_empty() => {
                self.topic = text("topic").filter(|t| !t.is_empty())
            }
            "m.room.encryption"
                if state_key.is_empty()
                    && content.get("algorithm").and_then(Value::as_str).is_some() =>
            {
                self.encryption = Some(content.clone());
            }
            POLICY_EVENT_TYPE
                if state_key.is_empty()
                    && content.get("e2e_required").and_then(Value::as_bool) == Some(true) =>
            {
                self.is_e2e_required = true;
            }
            "m.room.member" => {
                let Ok(user_id) = OwnedUserId::try_from(state_key) else {
                    return;
                };
                let Some(membership) =
                    Membership::parse(content.get("membership").and_then(Value::as_str))
                else {
                    return;
                };
                if &user_id == own_user_id {
                    self.membership = membership;
                }
                self.members.insert(
                    user_id,
                    Member {
                        membership,
                        display_name: text("displayname"),
                    },
                );
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use ruma::{owned_room_id, owned_user_id};
    use serde_json::json;

    use super::{Membership, RoomInfo};

    #[test]
    fn encryption_and_policy_are_never_downgraded() {
        let me = owned_user_id!("@me:x");
        let mut room = RoomInfo::new(owned_room_id!("!r:x"), Membership::Join);
        room.apply_state(
            &me,
            "m.room.encryption",
            "",
            &json!({"algorithm": "m.megolm.v1.aes-sha2"}),
        );
        room.apply_state(
            &me,
            "org.myelin.room.policy",
            "",
            &json!({"e2e_required": true}),
        );
        room.apply_state(&me, "m.room.encryption", "", &json!({}));
        room.apply_state(
            &me,
            "org.myelin.room.policy",
            "",
            &json!({"e2e_required": false}),
        );
        assert!(room.is_encrypted());
        assert!(room.is_e2e_required);
    }

    #[test]
    fn members_and_own_membership_follow_member_events() {
        let me = owned_user_id!("@me:x");
        let mut room = RoomInfo::new(owned_room_id!("!r:x"), Membership::Invite);
        room.apply_state(
            &me,
            "m.room.member",
            "@me:x",
            &json!({"membership": "join", "displayname": "Me"}),
        );
        room.apply_state(
            &me,
            "m.room.member",
            "@you:x",
            &json!({"membership": "invite"}),
        );
        room.apply_state(
            &me,
            "m.room.member",
            "not-a-user",
            &json!({"membership": "join"}),
        );
        room.apply_state(&me, "m.room.member", "@odd:x", &json!({"membership": 5}));
        room.apply_state(&me, "m.room.name", "", &json!({"name": "Lobby"}));
        assert_eq!(room.membership, Membership::Join);
        assert_eq!(room.joined_members(), vec![me.clone()]);
        assert_eq!(room.members.len(), 2);
        assert_eq!(room.members[&me].display_name.as_deref(), Some("Me"));
        assert_eq!(room.name.as_deref(), Some("Lobby"));
    }
}
