//! This server as a resident of a room: it builds membership event
//! templates for other servers' users, takes the events they sign back,
//! and takes invites of its own users to rooms held elsewhere.

use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, EventId, RoomId, ServerName, UserId,
    events::StateEventType,
};
use serde_json::Value;

use super::RemoteMembership;
use crate::service::{
    ServiceError,
    room_events::{RemoteEventError, RemoteOutcome, parse_version},
    room_ops::restricted_join_authoriser,
    rooms::{local_rules, pdu::Pdu, state::membership, version::RoomVersion},
};
use crate::storage::EventStatus;

/// Pending invites a local user may have before invites from other
/// servers are refused: each one from another server is kept, so a
/// server could otherwise grow the invitee's list without end.
const MAX_PENDING_INVITES: usize = 100;

/// Which membership a `make_*`/`send_*` pair is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MembershipKind {
    /// `make_join` / `send_join`.
    Join,
    /// `make_leave` / `send_leave`.
    Leave,
    /// `make_knock` / `send_knock`.
    Knock,
}

impl MembershipKind {
    /// The `membership` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Join => "join",
            Self::Leave => "leave",
            Self::Knock => "knock",
        }
    }
}

/// What `send_join` answers, besides the origin.
#[derive(Debug)]
pub struct SendJoinAnswer {
    /// The room state before the join.
    pub state: Vec<Pdu>,
    /// The auth chain of that state and of the join.
    pub auth_chain: Vec<Pdu>,
    /// The join with this server's signature, for a restricted join this
    /// server authorised.
    pub countersigned: Option<Pdu>,
    /// The servers of the room's joined members.
    pub servers_in_room: Vec<String>,
}

impl RemoteMembership {
    /// `make_join`, `make_leave`, `make_knock`: an unsigned membership
    /// event for `user_id`, a user of `origin`, on the room's current
    /// state, and the room's version. `versions` are those the joining
    /// server supports (`ver`), for joins and knocks.
    ///
    /// # Errors
    /// `Forbidden` for a user of another server or when the rules refuse;
    /// `NotFound` for a room this server does not hold;
    /// `IncompatibleRoomVersion` when the room's version is not in `versions`.
    pub async fn make_membership(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        user_id: &UserId,
        kind: MembershipKind,
        versions: &[String],
    ) -> Result<(RoomVersion, CanonicalJsonObject), ServiceError> {
        check_origin(origin, user_id)?;
        let version = self.events.room_version(room_id).await?;
        if kind != MembershipKind::Leave && !versions.iter().any(|v| *v == version.to_string()) {
            return Err(ServiceError::IncompatibleRoomVersion(version.to_string()));
        }
        let mut content = CanonicalJsonObject::new();
        content.insert(
            "membership".to_owned(),
            CanonicalJsonValue::String(kind.as_str().to_owned()),
        );
        if kind == MembershipKind::Join
            && let Some(authoriser) = self.join_authoriser(room_id, user_id).await?
        {
            content.insert(
                "join_authorised_via_users_server".to_owned(),
                CanonicalJsonValue::String(authoriser),
            );
        }
        self.events
            .membership_template(room_id, user_id, content)
            .await
    }

    /// `send_join`, `send_leave`, `send_knock`: takes the membership event
    /// a user of `origin` signed from a template, into the room, and says
    /// what to answer.
    ///
    /// # Errors
    /// `InvalidParam` for an event that is not `event_id` of the room;
    /// `Forbidden` for an event that is not the membership of a user of
    /// `origin`, does not verify, or is not accepted by the rules.
    pub async fn send_membership(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        event_id: &EventId,
        kind: MembershipKind,
        mut object: CanonicalJsonObject,
    ) -> Result<Pdu, ServiceError> {
        let version = self.events.room_version(room_id).await?;
        let unchecked = Pdu::from_object(version, object.clone())
            .map_err(|error| ServiceError::BadJson(error.to_string()))?;
        if unchecked.event_id() != event_id {
            return Err(ServiceError::InvalidParam(
                "the event is not the event the path names".to_owned(),
            ));
        }
        if unchecked.room_id() != room_id {
            return Err(ServiceError::InvalidParam(
                "the event is not of the room the path names".to_owned(),
            ));
        }
        check_origin(origin, unchecked.sender())?;
        let is_own_membership = *unchecked.kind() == ruma::events::TimelineEventType::RoomMember
            && unchecked.state_key() == Some(unchecked.sender().as_str())
            && membership(&unchecked).as_deref() == Some(kind.as_str());
        if !is_own_membership {
            return Err(ServiceError::Forbidden(format!(
                "not a {} of its sender",
                kind.as_str()
            )));
        }
        // A restricted join this server vouches for carries its signature,
        // which the checks below require.
        if let Some(authoriser) = authoriser_of(&unchecked)
            && authoriser.server_name() == self.server_name()
        {
            if self
                .join_authoriser(room_id, unchecked.sender())
                .await?
                .is_none()
            {
                return Err(ServiceError::Forbidden(
                    "this server does not authorise the join".to_owned(),
                ));
            }
            self.countersign(version, &mut object)?;
        }
        let pdu = self.checked(version, object).await?;
        match self.events.append_remote(pdu.clone()).await {
            Ok(RemoteOutcome::Accepted | RemoteOutcome::AlreadyStored(EventStatus::Accepted)) => {
                Ok(pdu)
            }
            Ok(outcome) => Err(ServiceError::Forbidden(format!(
                "the event is not accepted: {outcome:?}"
            ))),
            Err(RemoteEventError::UnknownRoom) => {
                Err(ServiceError::NotFound("no such room".to_owned()))
            }
            Err(RemoteEventError::MissingEvents { .. }) => Err(ServiceError::Forbidden(
                "the event cites events this server does not have".to_owned(),
            )),
            Err(RemoteEventError::WrongRoomVersion { .. }) => Err(ServiceError::InvalidParam(
                "the event is of another room version".to_owned(),
            )),
            Err(RemoteEventError::Service(error)) => Err(error),
        }
    }

    /// What `send_join` answers for an accepted join: the state before it
    /// (always whole: members are never omitted) and its auth chain.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn send_join_answer(&self, join: &Pdu) -> Result<SendJoinAnswer, ServiceError> {
        let (state, auth_chain) = self.events.state_before_membership(join).await?;
        let countersigned = authoriser_of(join)
            .filter(|authoriser| authoriser.server_name() == self.server_name())
            .map(|_| join.clone());
        let mut servers_in_room: Vec<String> = self
            .events
            .joined_members(join.room_id())
            .await?
            .iter()
            .map(|member| member.server_name().to_string())
            .collect();
        servers_in_room.sort();
        servers_in_room.dedup();
        Ok(SendJoinAnswer {
            state,
            auth_chain,
            countersigned,
            servers_in_room,
        })
    }

    /// What `send_knock` answers: the stripped state that describes the
    /// room to the knocker.
    ///
    /// # Errors
    /// `NotFound` for an unknown room; storage failures.
    pub async fn knock_room_state(&self, knock: &Pdu) -> Result<Vec<Value>, ServiceError> {
        let state = self
            .events
            .current_state(knock.room_id())
            .await?
            .ok_or_else(|| ServiceError::NotFound("no such room".to_owned()))?;
        Ok(state
            .describing_events(knock.sender())
            .filter(|event| event.event_id() != knock.event_id())
            .map(super::stripped_event)
            .collect())
    }

    /// `PUT /v2/invite`: another server invites a local user. The invite
    /// is checked, signed by this server, and kept: as an event of the
    /// room when this server holds it, else with the stripped state it
    /// came with for the invitee's sync. Returns the signed event.
    ///
    /// # Errors
    /// `IncompatibleRoomVersion` for a version this server does not
    /// implement; `InvalidParam` for an event that is not `event_id` of the
    /// room; `Forbidden` for an invite that is not from a user of `origin`
    /// to a local user, that does not verify, or that the invitee refuses
    /// (they ignore its sender).
    pub async fn receive_invite(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        event_id: &EventId,
        room_version: &str,
        mut object: CanonicalJsonObject,
        invite_room_state: &[Value],
    ) -> Result<CanonicalJsonObject, ServiceError> {
        let version = parse_version(room_version)
            .map_err(|_| ServiceError::IncompatibleRoomVersion(room_version.to_owned()))?;
        let unchecked = Pdu::from_object(version, object.clone())
            .map_err(|error| ServiceError::BadJson(error.to_string()))?;
        if unchecked.event_id() != event_id || unchecked.room_id() != room_id {
            return Err(ServiceError::InvalidParam(
                "the event is not the event the path names".to_owned(),
            ));
        }
        check_origin(origin, unchecked.sender())?;
        let invitee = unchecked
            .state_key()
            .and_then(|key| <&UserId>::try_from(key).ok())
            .filter(|_| {
                *unchecked.kind() == ruma::events::TimelineEventType::RoomMember
                    && membership(&unchecked).as_deref() == Some("invite")
            })
            .ok_or_else(|| ServiceError::Forbidden("not an invite".to_owned()))?;
        if invitee.server_name() != self.server_name()
            || self.storage.account(invitee).await?.is_none()
        {
            return Err(ServiceError::Forbidden(
                "the invitee is not a user of this server".to_owned(),
            ));
        }
        if self.ignores(invitee, unchecked.sender()).await? {
            return Err(ServiceError::Forbidden("the invitee refuses".to_owned()));
        }
        let pending = self
            .storage
            .memberships_of(invitee, None)
            .await?
            .iter()
            .filter(|m| m.membership == "invite")
            .count();
        if pending >= MAX_PENDING_INVITES {
            return Err(ServiceError::Forbidden(
                "the invitee has too many pending invites".to_owned(),
            ));
        }
        self.checked(version, object.clone()).await?;
        self.countersign(version, &mut object)?;
        let signed = Pdu::from_object(version, object.clone())
            .map_err(|error| ServiceError::BadJson(error.to_string()))?;
        match self.events.room_version(room_id).await {
            Ok(_) => match self.events.append_remote(signed).await {
                Ok(RemoteOutcome::Accepted | RemoteOutcome::AlreadyStored(_)) => {}
                Ok(outcome) => {
                    return Err(ServiceError::Forbidden(format!(
                        "the invite is not accepted: {outcome:?}"
                    )));
                }
                Err(error) => {
                    return Err(ServiceError::Forbidden(format!(
                        "the invite cannot be taken: {error}"
                    )));
                }
            },
            Err(ServiceError::NotFound(_)) => {
                let stripped = super::stripped_state(invite_room_state);
                self.events
                    .record_out_of_room_membership(&signed, &stripped)
                    .await?;
            }
            Err(error) => return Err(error),
        }
        Ok(object)
    }

    /// For a restricted room: the local user who authorises `user_id`'s
    /// join, when the user is not invited or joined already and is joined
    /// to one of the rooms the join rules name.
    async fn join_authoriser(
        &self,
        room_id: &RoomId,
        user_id: &UserId,
    ) -> Result<Option<String>, ServiceError> {
        let Some(state) = self.events.current_state(room_id).await? else {
            return Ok(None);
        };
        if matches!(
            state.membership_of(user_id.as_str()),
            Some("join" | "invite")
        ) {
            return Ok(None);
        }
        let Some(allowed) = state
            .get(&StateEventType::RoomJoinRules, "")
            .and_then(local_rules::allowed_rooms)
        else {
            return Ok(None);
        };
        let memberships = self.storage.memberships_of(user_id, None).await?;
        let qualifies = memberships
            .iter()
            .any(|m| m.membership == "join" && allowed.contains(&m.room_id));
        if !qualifies {
            return Ok(None);
        }
        Ok(restricted_join_authoriser(&state, self.server_name()))
    }

    /// Whether `user_id` ignores `sender` (`m.ignored_user_list`).
    async fn ignores(&self, user_id: &UserId, sender: &UserId) -> Result<bool, ServiceError> {
        let ignored = self
            .storage
            .account_data(user_id, None, "m.ignored_user_list")
            .await?
            .and_then(|json| serde_json::from_str::<Value>(&json).ok())
            .is_some_and(|content| content["ignored_users"].get(sender.as_str()).is_some());
        Ok(ignored)
    }
}

/// Refuses a user who does not belong to the server that asks for them.
fn check_origin(origin: &ServerName, user_id: &UserId) -> Result<(), ServiceError> {
    if user_id.server_name() != origin {
        return Err(ServiceError::Forbidden(
            "the user does not belong to the requesting server".to_owned(),
        ));
    }
    Ok(())
}

/// The `join_authorised_via_users_server` of a join.
fn authoriser_of(pdu: &Pdu) -> Option<ruma::OwnedUserId> {
    #[derive(serde::Deserialize)]
    struct Content {
        join_authorised_via_users_server: Option<ruma::OwnedUserId>,
    }
    serde_json::from_str::<Content>(pdu.content().get())
        .ok()?
        .join_authorised_via_users_server
}
