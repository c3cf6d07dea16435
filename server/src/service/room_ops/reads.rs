//! Reading a room's state and members, as far as the reader may see them.

use std::collections::BTreeMap;

use ruma::{OwnedRoomId, RoomId, UserId, events::StateEventType};
use serde::Deserialize;

use super::RoomOps;
use crate::{
    service::{ServiceError, rooms::pdu::Pdu},
    storage::StreamPosition,
};

/// A joined member's profile in a room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinedMember {
    /// `displayname` from the member event.
    pub display_name: Option<String>,
    /// `avatar_url` from the member event.
    pub avatar_url: Option<String>,
}

impl RoomOps {
    /// The room state the user may see: the current state while joined (or
    /// when history is world-readable), the state when they left otherwise.
    ///
    /// # Errors
    /// `Forbidden` for a user who was never in the room (or forgot it), and
    /// for an unknown room, which nobody was ever in.
    pub async fn visible_state(
        &self,
        user_id: &UserId,
        room_id: &RoomId,
    ) -> Result<Vec<Pdu>, ServiceError> {
        let state = self.readable_room_state(room_id).await?;
        let member = state.get(&StateEventType::RoomMember, user_id.as_str());
        let membership = state.membership_of(user_id.as_str());
        if membership == Some("join") || state.is_world_readable() {
            return Ok(state.into_events().collect());
        }
        match (membership, member) {
            // "After this API is called, however, a user will no longer be
            // able to retrieve history for this room" (spec, `/forget`).
            (Some("leave" | "ban"), Some(member))
                if !self.has_forgotten(user_id, room_id).await? =>
            {
                // The state as it was when they left; a user who never
                // joined (banned or rejecting an invite first) sees nothing.
                match self.events.last_departure(member, &["join"]).await? {
                    Some(departure) => self.events.state_after(departure.event_id()).await,
                    None => Err(ServiceError::not_in_room()),
                }
            }
            _ => Err(ServiceError::not_in_room()),
        }
    }

    /// One state event's content, as the user may see it.
    ///
    /// # Errors
    /// As for [`RoomOps::visible_state`]; `NotFound` when the slot is empty.
    pub async fn state_event(
        &self,
        user_id: &UserId,
        room_id: &RoomId,
        event_type: &str,
        state_key: &str,
    ) -> Result<Pdu, ServiceError> {
        self.visible_state(user_id, room_id)
            .await?
            .into_iter()
            .find(|pdu| pdu.kind().to_string() == event_type && pdu.state_key() == Some(state_key))
            .ok_or_else(|| ServiceError::NotFound("no such state event".to_owned()))
    }

    /// The member events the user may see.
    ///
    /// # Errors
    /// As for [`RoomOps::visible_state`].
    pub async fn members(
        &self,
        user_id: &UserId,
        room_id: &RoomId,
        at: Option<StreamPosition>,
    ) -> Result<Vec<Pdu>, ServiceError> {
        let visible = self.visible_state(user_id, room_id).await?;
        let joined = self
            .room_state(room_id)
            .await?
            .membership_of(user_id.as_str())
            == Some("join");
        // Members may look at any point in the room's history; a user who
        // left sees no further than their departure.
        let state = match at {
            Some(at) if joined => self.state_at(room_id, at).await?,
            _ => visible,
        };
        let mut members: Vec<Pdu> = state
            .into_iter()
            .filter(|pdu| pdu.kind().to_string() == "m.room.member")
            .collect();
        members.sort_by(|a, b| a.state_key().cmp(&b.state_key()));
        Ok(members)
    }

    /// The state after the room's last event at or before `at`.
    async fn state_at(
        &self,
        room_id: &RoomId,
        at: StreamPosition,
    ) -> Result<Vec<Pdu>, ServiceError> {
        let Some(group) = self
            .storage
            .state_group_before(room_id, StreamPosition(at.0.saturating_add(1)))
            .await?
        else {
            return Ok(Vec::new());
        };
        let version = self.events.room_version(room_id).await?;
        let mut pdus = Vec::new();
        for entry in self.storage.state_group_entries(group).await? {
            pdus.push(self.events.pdu(version, &entry.event_id).await?);
        }
        Ok(pdus)
    }

    /// The joined members and their profiles; only for members.
    ///
    /// # Errors
    /// `Forbidden` unless the user is joined.
    pub async fn joined_members(
        &self,
        user_id: &UserId,
        room_id: &RoomId,
    ) -> Result<BTreeMap<String, JoinedMember>, ServiceError> {
        #[derive(Deserialize)]
        struct Member {
            displayname: Option<String>,
            avatar_url: Option<String>,
        }
        let state = self.readable_room_state(room_id).await?;
        if state.membership_of(user_id.as_str()) != Some("join") {
            return Err(ServiceError::not_in_room());
        }
        Ok(state
            .members_in(&["join"])
            .filter_map(|user| {
                let pdu = state.get(&StateEventType::RoomMember, user.as_str())?;
                let member: Member = serde_json::from_str(pdu.content().get()).ok()?;
                Some((
                    user.to_string(),
                    JoinedMember {
                        display_name: member.displayname,
                        avatar_url: member.avatar_url,
                    },
                ))
            })
            .collect())
    }

    /// The current state of a room for a read: an unknown room is one the
    /// user was never in, which the spec answers with 403, and which does
    /// not reveal whether the room exists.
    pub(super) async fn readable_room_state(
        &self,
        room_id: &RoomId,
    ) -> Result<crate::service::room_events::RoomState, ServiceError> {
        match self.room_state(room_id).await {
            Err(ServiceError::NotFound(_)) => Err(ServiceError::not_in_room()),
            other => other,
        }
    }

    /// Whether the user has forgotten the room (forgotten rooms drop out of
    /// the user's memberships until they join again).
    async fn has_forgotten(
        &self,
        user_id: &UserId,
        room_id: &RoomId,
    ) -> Result<bool, ServiceError> {
        Ok(!self
            .storage
            .memberships_of(user_id, None)
            .await?
            .iter()
            .any(|m| m.room_id == room_id))
    }

    /// The rooms the user is joined to.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn joined_rooms(&self, user_id: &UserId) -> Result<Vec<OwnedRoomId>, ServiceError> {
        Ok(self
            .storage
            .memberships_of(user_id, None)
            .await?
            .into_iter()
            .filter(|m| m.membership == "join")
            .map(|m| m.room_id)
            .collect())
    }
}
