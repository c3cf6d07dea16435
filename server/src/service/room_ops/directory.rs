//! Room aliases and the public room directory.

use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, OwnedRoomId, RoomAliasId, RoomId, UserId,
    events::StateEventType,
};
use serde::Deserialize;

use super::{RoomOps, state_event};
use crate::{
    service::{
        ServiceError,
        room_events::RoomState,
        rooms::{auth::user_power_level, pdu::Pdu},
    },
    storage::StorageError,
};

/// A room as the public directory lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicRoom {
    /// Its id.
    pub room_id: OwnedRoomId,
    /// `m.room.name`.
    pub name: Option<String>,
    /// `m.room.topic`.
    pub topic: Option<String>,
    /// `m.room.canonical_alias`.
    pub canonical_alias: Option<String>,
    /// `m.room.avatar`.
    pub avatar_url: Option<String>,
    /// The join rule.
    pub join_rule: Option<String>,
    /// How many users are joined.
    pub num_joined_members: u64,
    /// Whether anyone may read its history.
    pub world_readable: bool,
    /// Whether guests may join.
    pub guest_can_join: bool,
    /// The `type` of its create event (`m.space`, ...), if any.
    pub room_type: Option<String>,
}

impl RoomOps {
    /// Points a local alias at a room the user is joined to.
    ///
    /// # Errors
    /// `InvalidParam` for another server's alias; `Forbidden` when not
    /// joined; `AliasInUse` when taken.
    pub async fn create_alias(
        &self,
        user_id: &UserId,
        alias: &RoomAliasId,
        room_id: &RoomId,
    ) -> Result<(), ServiceError> {
        self.require_local_alias(alias)?;
        let state = self.room_state(room_id).await?;
        if state.membership_of(user_id.as_str()) != Some("join") {
            return Err(ServiceError::Forbidden(
                "only members may add aliases to a room".to_owned(),
            ));
        }
        match self.storage.create_alias(alias, room_id, user_id).await {
            Err(StorageError::Conflict(_)) => Err(ServiceError::AliasInUse),
            other => Ok(other?),
        }
    }

    /// The room an alias points at.
    ///
    /// # Errors
    /// `NotFound` for an unknown alias.
    pub async fn resolve_alias(&self, alias: &RoomAliasId) -> Result<OwnedRoomId, ServiceError> {
        Ok(self
            .storage
            .alias(alias)
            .await?
            .ok_or_else(|| ServiceError::NotFound("no such room alias".to_owned()))?
            .0)
    }

    /// Removes an alias: its creator may, and so may anyone with the power
    /// to set the room's canonical alias.
    ///
    /// # Errors
    /// `NotFound` for an unknown alias; `Forbidden` for anyone else.
    pub async fn delete_alias(
        &self,
        user_id: &UserId,
        alias: &RoomAliasId,
    ) -> Result<(), ServiceError> {
        let (room_id, creator) = self
            .storage
            .alias(alias)
            .await?
            .ok_or_else(|| ServiceError::NotFound("no such room alias".to_owned()))?;
        let state = self.room_state(&room_id).await?;
        let may_set_canonical = may_set_state(&state, user_id, "m.room.canonical_alias");
        if creator != user_id.as_str() && !may_set_canonical {
            return Err(ServiceError::Forbidden(
                "you may not remove this alias".to_owned(),
            ));
        }
        self.storage.delete_alias(alias).await?;
        // The room should not advertise an alias that no longer resolves;
        // the spec asks servers to drop it from the canonical alias event
        // when the remover may send that event.
        if may_set_canonical
            && let Some(content) = state
                .get(&StateEventType::RoomCanonicalAlias, "")
                .and_then(|pdu| without_alias(pdu, alias))
        {
            self.events
                .send(
                    &room_id,
                    state_event(user_id, "m.room.canonical_alias", "", content),
                )
                .await?;
        }
        Ok(())
    }

    /// The local aliases of a room the user may see.
    ///
    /// # Errors
    /// `Forbidden` unless the user is joined or the room is world-readable
    /// (an unknown room included).
    pub async fn room_aliases(
        &self,
        user_id: &UserId,
        room_id: &RoomId,
    ) -> Result<Vec<String>, ServiceError> {
        let state = self.readable_room_state(room_id).await?;
        if state.membership_of(user_id.as_str()) != Some("join") && !state.is_world_readable() {
            return Err(ServiceError::not_in_room());
        }
        Ok(self.storage.room_aliases(room_id).await?)
    }

    /// Whether the room is listed in the directory.
    ///
    /// # Errors
    /// `NotFound` for an unknown room.
    pub async fn is_public(&self, room_id: &RoomId) -> Result<bool, ServiceError> {
        Ok(self
            .storage
            .room(room_id)
            .await?
            .ok_or_else(|| ServiceError::NotFound("no such room".to_owned()))?
            .is_public)
    }

    /// Lists or unlists a room; needs membership and the power to set
    /// `m.room.canonical_alias`.
    ///
    /// # Errors
    /// `NotFound` for an unknown room; `Forbidden` without the power.
    pub async fn set_public(
        &self,
        user_id: &UserId,
        room_id: &RoomId,
        is_public: bool,
    ) -> Result<(), ServiceError> {
        let state = self.room_state(room_id).await?;
        // Only a member acts for a room: a moderator who left keeps their
        // power level entry, not their say (Synapse checks the same).
        if state.membership_of(user_id.as_str()) != Some("join")
            || !may_set_state(&state, user_id, "m.room.canonical_alias")
        {
            return Err(ServiceError::Forbidden(
                "you may not change this room's visibility".to_owned(),
            ));
        }
        self.storage.set_room_public(room_id, is_public).await?;
        Ok(())
    }

    /// The public rooms matching `search` (case-insensitive, in name, topic
    /// and alias), most members first.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn public_rooms(
        &self,
        search: Option<&str>,
    ) -> Result<Vec<PublicRoom>, ServiceError> {
        let needle = search.map(str::to_lowercase).filter(|s| !s.is_empty());
        let mut rooms = Vec::new();
        for room_id in self.storage.public_rooms().await? {
            let Some(state) = self.events.current_state(&room_id).await? else {
                continue;
            };
            let room = public_room(room_id, &state);
            let matches = needle.as_deref().is_none_or(|needle| {
                [&room.name, &room.topic, &room.canonical_alias]
                    .into_iter()
                    .flatten()
                    .any(|text| text.to_lowercase().contains(needle))
            });
            if matches {
                rooms.push(room);
            }
        }
        rooms.sort_by(|a, b| {
            b.num_joined_members
                .cmp(&a.num_joined_members)
                .then(a.room_id.cmp(&b.room_id))
        });
        Ok(rooms)
    }

    fn require_local_alias(&self, alias: &RoomAliasId) -> Result<(), ServiceError> {
        if alias.server_name() == self.server_name {
            Ok(())
        } else {
            Err(ServiceError::InvalidParam(
                "aliases on other servers cannot be managed here".to_owned(),
            ))
        }
    }
}

fn public_room(room_id: OwnedRoomId, state: &RoomState) -> PublicRoom {
    let text = |kind: StateEventType, field: &str| {
        let pdu = state.get(&kind, "")?;
        let content: serde_json::Value = serde_json::from_str(pdu.content().get()).ok()?;
        content.get(field)?.as_str().map(str::to_owned)
    };
    PublicRoom {
        name: text(StateEventType::RoomName, "name"),
        room_type: text(StateEventType::RoomCreate, "type"),
        topic: text(StateEventType::RoomTopic, "topic"),
        canonical_alias: text(StateEventType::RoomCanonicalAlias, "alias"),
        avatar_url: text(StateEventType::RoomAvatar, "url"),
        join_rule: text(StateEventType::RoomJoinRules, "join_rule"),
        guest_can_join: text(StateEventType::RoomGuestAccess, "guest_access").as_deref()
            == Some("can_join"),
        world_readable: state.is_world_readable(),
        num_joined_members: state.members_in(&["join"]).count() as u64,
        room_id,
    }
}

/// Whether `user_id` has the power level to send the state event `event_type`.
/// An `m.room.canonical_alias` content with `alias` taken out of `alias`
/// and `alt_aliases`, or `None` when it does not name it.
fn without_alias(canonical: &Pdu, alias: &RoomAliasId) -> Option<CanonicalJsonObject> {
    let Some(CanonicalJsonValue::Object(content)) = canonical.as_object().get("content") else {
        return None;
    };
    let is_alias = |value: &CanonicalJsonValue| matches!(value, CanonicalJsonValue::String(named) if named == alias.as_str());
    let mut content = content.clone();
    let mut named = content.get("alias").is_some_and(is_alias);
    if named {
        content.remove("alias");
    }
    if let Some(CanonicalJsonValue::Array(alternatives)) = content.get_mut("alt_aliases") {
        let before = alternatives.len();
        alternatives.retain(|value| !is_alias(value));
        named |= alternatives.len() != before;
    }
    named.then_some(content)
}

pub(super) fn may_set_state(state: &RoomState, user_id: &UserId, event_type: &str) -> bool {
    #[derive(Deserialize, Default)]
    struct Levels {
        #[serde(default)]
        events: std::collections::BTreeMap<String, i64>,
        state_default: Option<i64>,
    }
    let levels: Levels = state
        .get(&StateEventType::RoomPowerLevels, "")
        .and_then(|pdu| serde_json::from_str(pdu.content().get()).ok())
        .unwrap_or_default();
    let required = levels
        .events
        .get(event_type)
        .copied()
        .or(levels.state_default)
        .unwrap_or(50);
    let lookup = |kind: &StateEventType, key: &str| state.get(kind, key).cloned();
    match user_power_level(state.version, user_id, lookup) {
        Ok(ruma::events::room::power_levels::UserPowerLevel::Infinite) => true,
        Ok(ruma::events::room::power_levels::UserPowerLevel::Int(level)) => {
            i64::from(level) >= required
        }
        Ok(_) | Err(_) => false,
    }
}
