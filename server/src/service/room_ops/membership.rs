//! Membership changes: join, invite, leave, kick, ban, unban and forget.

use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, OwnedRoomId, OwnedServerName, RoomId, RoomOrAliasId,
    ServerName, UserId, events::StateEventType,
};

use tracing::warn;

use super::{RoomOps, state_event, upgrade::predecessor, with_reason};
use crate::service::{
    ServiceError,
    federation::membership::MembershipKind,
    room_events::RoomState,
    rooms::{auth::user_power_level, local_rules},
};

impl RoomOps {
    /// Joins a room by id or alias; returns the room id. `content` is the
    /// client's part of the member event (`reason`, a per-room display
    /// name, its own keys); the server sets `membership` and the
    /// restricted-join authoriser, and fills in the profile where the
    /// client gave none.
    ///
    /// For a `restricted` room the user may join through membership of an
    /// allowed room: the join then names a local member with the power to
    /// invite as its authoriser, as the spec's restricted-join rules require.
    ///
    /// # Errors
    /// `NotFound` for an unknown room or alias; `Forbidden` when the
    /// authorization rules refuse (not invited, banned, ...).
    pub async fn join(
        &self,
        user_id: &UserId,
        target: &RoomOrAliasId,
        via: &[OwnedServerName],
        content: CanonicalJsonObject,
    ) -> Result<OwnedRoomId, ServiceError> {
        let room_id = match self.locate(target, via).await? {
            Located::Here(room_id) => room_id,
            Located::Elsewhere(room_id, servers) => {
                // Guest access is the room's to grant and its residents'
                // to judge, who cannot tell a guest from anyone else.
                if self.is_guest(user_id).await? {
                    return Err(ServiceError::GuestAccessForbidden);
                }
                let mut extra = content;
                extra.remove("join_authorised_via_users_server");
                let content = self.member_content(user_id, "join", extra).await?;
                self.remote
                    .join_or_knock(user_id, &room_id, servers, content, MembershipKind::Join)
                    .await?;
                return Ok(room_id);
            }
        };
        let state = self.room_state(&room_id).await?;
        if self.is_guest(user_id).await? && !lets_guests_join(&state) {
            return Err(ServiceError::GuestAccessForbidden);
        }
        let mut extra = content;
        // Only this server may vouch for a restricted join.
        extra.remove("join_authorised_via_users_server");
        let membership = state.membership_of(user_id.as_str());
        if !matches!(membership, Some("join" | "invite"))
            && let Some(authoriser) = restricted_join_authoriser(&state, &self.server_name)
        {
            extra.insert(
                "join_authorised_via_users_server".to_owned(),
                CanonicalJsonValue::String(authoriser),
            );
        }
        let content = self.member_content(user_id, "join", extra).await?;
        self.events
            .send(
                &room_id,
                state_event(user_id, "m.room.member", user_id.as_str(), content),
            )
            .await?;
        if membership != Some("join")
            && let Some(old_room) = predecessor(&state)
        {
            self.carry_push_rules(user_id, &old_room, &room_id).await;
        }
        Ok(room_id)
    }

    /// Asks to join a room whose join rule allows knocking; returns the room id.
    ///
    /// # Errors
    /// `NotFound` for an unknown room or alias; `Forbidden` when the rules
    /// refuse (the room does not allow knocking, the user is banned, ...).
    pub async fn knock(
        &self,
        user_id: &UserId,
        target: &RoomOrAliasId,
        via: &[OwnedServerName],
        reason: Option<String>,
    ) -> Result<OwnedRoomId, ServiceError> {
        let room_id = match self.locate(target, via).await? {
            Located::Here(room_id) => room_id,
            Located::Elsewhere(room_id, servers) => {
                let content = self
                    .member_content(user_id, "knock", with_reason(reason))
                    .await?;
                self.remote
                    .join_or_knock(user_id, &room_id, servers, content, MembershipKind::Knock)
                    .await?;
                return Ok(room_id);
            }
        };
        self.set_membership(user_id, &room_id, user_id, "knock", reason)
            .await?;
        Ok(room_id)
    }

    /// Whether the account is a guest's.
    async fn is_guest(&self, user_id: &UserId) -> Result<bool, ServiceError> {
        Ok(self
            .storage
            .account(user_id)
            .await?
            .is_some_and(|account| account.is_guest))
    }

    /// Where the room a room id or alias names is: here, or only on other
    /// servers (with the servers to go through: `via`, then those an
    /// alias's directory names).
    async fn locate(
        &self,
        target: &RoomOrAliasId,
        via: &[OwnedServerName],
    ) -> Result<Located, ServiceError> {
        match self.resolve_room(target).await {
            Ok(room_id) => Ok(Located::Here(room_id)),
            Err(ServiceError::NotFound(_)) => {
                let (room_id, servers) = self.remote.resolve(target).await?;
                if self.storage.room(&room_id).await?.is_some() {
                    // Another server's alias of a room this server holds.
                    return Ok(Located::Here(room_id));
                }
                let mut through = via.to_vec();
                through.extend(servers);
                Ok(Located::Elsewhere(room_id, through))
            }
            Err(error) => Err(error),
        }
    }

    /// Invites `target` to the room.
    ///
    /// # Errors
    /// `NotFound` for an unknown room or local user; `Forbidden` from the
    /// rules (or the invitee's server).
    pub async fn invite(
        &self,
        sender: &UserId,
        room_id: &RoomId,
        target: &UserId,
        reason: Option<String>,
    ) -> Result<(), ServiceError> {
        if target.server_name() != self.server_name {
            let content = self
                .member_content(target, "invite", with_reason(reason))
                .await?;
            let event = state_event(sender, "m.room.member", target.as_str(), content);
            return self.remote.invite(room_id, event).await;
        }
        self.set_membership(sender, room_id, target, "invite", reason)
            .await
    }

    /// Leaves a room (or rejects an invite, or withdraws a knock).
    ///
    /// # Errors
    /// `NotFound` for an unknown room; `Forbidden` when not in it.
    pub async fn leave(
        &self,
        user_id: &UserId,
        room_id: &RoomId,
        reason: Option<String>,
    ) -> Result<(), ServiceError> {
        if self.storage.room(room_id).await?.is_none() {
            // An invite from, or a knock on, a room held only elsewhere.
            let content = self
                .member_content(user_id, "leave", with_reason(reason))
                .await?;
            return self
                .remote
                .leave_out_of_room(user_id, room_id, content)
                .await;
        }
        self.set_membership(user_id, room_id, user_id, "leave", reason)
            .await
    }

    /// Takes a deactivated user out of every room: leaves those joined,
    /// rejects invites, withdraws knocks.
    ///
    /// # Errors
    /// Storage failures. A room that refuses the leave is skipped (and
    /// logged): the others are still left.
    pub async fn leave_every_room(&self, user_id: &UserId) -> Result<(), ServiceError> {
        let rooms = self.storage.memberships_of(user_id, None).await?;
        for room in rooms {
            if !matches!(room.membership.as_str(), "join" | "invite" | "knock") {
                continue;
            }
            if let Err(error) = self.leave(user_id, &room.room_id, None).await {
                warn!(room_id = %room.room_id, %error, "a deactivated user could not leave");
            }
        }
        Ok(())
    }

    /// Kicks `target` out of the room.
    ///
    /// # Errors
    /// `Forbidden` without the kick power or when `target` is not in the room.
    pub async fn kick(
        &self,
        sender: &UserId,
        room_id: &RoomId,
        target: &UserId,
        reason: Option<String>,
    ) -> Result<(), ServiceError> {
        let state = self.member_view(sender, room_id).await?;
        if !matches!(
            state.membership_of(target.as_str()),
            Some("join" | "invite" | "knock")
        ) {
            return Err(ServiceError::Forbidden(
                "the user is not in the room".to_owned(),
            ));
        }
        self.set_membership(sender, room_id, target, "leave", reason)
            .await
    }

    /// Bans `target` from the room.
    ///
    /// # Errors
    /// `Forbidden` without the ban power.
    pub async fn ban(
        &self,
        sender: &UserId,
        room_id: &RoomId,
        target: &UserId,
        reason: Option<String>,
    ) -> Result<(), ServiceError> {
        self.set_membership(sender, room_id, target, "ban", reason)
            .await
    }

    /// Lifts a ban.
    ///
    /// # Errors
    /// `Forbidden` when `target` is not banned or the sender lacks the power.
    pub async fn unban(
        &self,
        sender: &UserId,
        room_id: &RoomId,
        target: &UserId,
        reason: Option<String>,
    ) -> Result<(), ServiceError> {
        let state = self.member_view(sender, room_id).await?;
        if state.membership_of(target.as_str()) != Some("ban") {
            return Err(ServiceError::Forbidden("the user is not banned".to_owned()));
        }
        self.set_membership(sender, room_id, target, "leave", reason)
            .await
    }

    /// Hides a room the user has left from their lists.
    ///
    /// # Errors
    /// `InvalidParam` while the user is still joined or invited.
    pub async fn forget(&self, user_id: &UserId, room_id: &RoomId) -> Result<(), ServiceError> {
        let state = self.room_state(room_id).await?;
        if matches!(
            state.membership_of(user_id.as_str()),
            Some("join" | "invite" | "knock")
        ) {
            return Err(ServiceError::InvalidParam(
                "leave the room before forgetting it".to_owned(),
            ));
        }
        self.storage.forget_room(user_id, room_id).await?;
        Ok(())
    }

    async fn set_membership(
        &self,
        sender: &UserId,
        room_id: &RoomId,
        target: &UserId,
        membership: &str,
        reason: Option<String>,
    ) -> Result<(), ServiceError> {
        let content = self
            .member_content(target, membership, with_reason(reason))
            .await?;
        self.events
            .send(
                room_id,
                state_event(sender, "m.room.member", target.as_str(), content),
            )
            .await?;
        Ok(())
    }

    /// The current state of a known room.
    pub(super) async fn room_state(&self, room_id: &RoomId) -> Result<RoomState, ServiceError> {
        self.events
            .current_state(room_id)
            .await?
            .ok_or_else(|| ServiceError::NotFound("no such room".to_owned()))
    }

    /// The current state of a room `user_id` is joined to; anyone else is
    /// told only that they are not in it (whether it exists or not), before
    /// any check that would reveal something about its members.
    pub(super) async fn member_view(
        &self,
        user_id: &UserId,
        room_id: &RoomId,
    ) -> Result<RoomState, ServiceError> {
        let state = self.readable_room_state(room_id).await?;
        if state.membership_of(user_id.as_str()) != Some("join") {
            return Err(ServiceError::not_in_room());
        }
        Ok(state)
    }

    /// Resolves a room id or a local alias to a known room.
    pub(super) async fn resolve_room(
        &self,
        target: &RoomOrAliasId,
    ) -> Result<OwnedRoomId, ServiceError> {
        let room_id = match <&RoomId>::try_from(target) {
            Ok(room_id) => room_id.to_owned(),
            Err(alias) => {
                self.storage
                    .alias(alias)
                    .await?
                    .ok_or_else(|| ServiceError::NotFound("no such room alias".to_owned()))?
                    .0
            }
        };
        if self.storage.room(&room_id).await?.is_none() {
            return Err(ServiceError::NotFound("no such room".to_owned()));
        }
        Ok(room_id)
    }
}

/// For a restricted room: the most powerful local member, who
/// authorises the join (of a local user, or of another server's user
/// asking through `make_join`). Whether the user may join (is a member of
/// an allowed room) is decided where the event is signed.
pub fn restricted_join_authoriser(state: &RoomState, server_name: &ServerName) -> Option<String> {
    let rules = state.get(&StateEventType::RoomJoinRules, "")?;
    local_rules::allowed_rooms(rules)?;
    let lookup = |kind: &StateEventType, key: &str| state.get(kind, key).cloned();
    state
        .members_in(&["join"])
        .filter(|member| member.server_name() == server_name)
        .filter_map(|member| {
            Some((
                user_power_level(state.version, member, lookup).ok()?,
                member.to_string(),
            ))
        })
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, member)| member)
}

/// Where a room is, for a join or a knock.
enum Located {
    /// This server holds it.
    Here(OwnedRoomId),
    /// Only other servers do; these to go through.
    Elsewhere(OwnedRoomId, Vec<OwnedServerName>),
}

/// Whether the room's `m.room.guest_access` is `can_join`.
fn lets_guests_join(state: &RoomState) -> bool {
    #[derive(serde::Deserialize)]
    struct GuestAccess {
        guest_access: String,
    }
    state
        .get(&StateEventType::RoomGuestAccess, "")
        .and_then(|pdu| serde_json::from_str::<GuestAccess>(pdu.content().get()).ok())
        .is_some_and(|access| access.guest_access == "can_join")
}
