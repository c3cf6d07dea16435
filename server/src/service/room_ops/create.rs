//! `POST /createRoom`: the create event, the creator's join, power levels,
//! the preset's rules, initial state, name, topic and invites, in the order
//! the spec gives.

use rand::{Rng, distributions::Alphanumeric};
use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, OwnedRoomAliasId, OwnedRoomId, OwnedUserId,
    RoomAliasId, UserId,
};
use serde_json::json;
use tracing::info;

use super::{RoomOps, object, state_event};
use crate::service::{
    ServiceError,
    room_events::parse_version,
    rooms::{e2e_policy::POLICY_EVENT_TYPE, version::RoomVersion},
};

/// The spec's room presets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    /// Invite-only, history shared with members.
    PrivateChat,
    /// Invite-only, and every invitee gets the creator's power.
    TrustedPrivateChat,
    /// Anyone may join.
    PublicChat,
}

/// A state event for `initial_state`.
#[derive(Debug, Clone)]
pub struct InitialState {
    /// Its type.
    pub event_type: String,
    /// Its state key.
    pub state_key: String,
    /// Its content.
    pub content: CanonicalJsonObject,
}

/// A `POST /createRoom` request.
#[derive(Debug, Clone, Default)]
pub struct CreateRoom {
    /// The preset; from `visibility` when absent.
    pub preset: Option<Preset>,
    /// Publish the room in the directory.
    pub is_public: bool,
    /// The room version; the server's default when absent.
    pub room_version: Option<String>,
    /// `m.room.name`.
    pub name: Option<String>,
    /// `m.room.topic`.
    pub topic: Option<String>,
    /// Users to invite.
    pub invite: Vec<OwnedUserId>,
    /// Extra state events, sent after the preset's.
    pub initial_state: Vec<InitialState>,
    /// Keys that replace the default power levels' keys.
    pub power_level_content_override: Option<CanonicalJsonObject>,
    /// Extra keys for the create event's content.
    pub creation_content: Option<CanonicalJsonObject>,
    /// Mark the invites as direct chats.
    pub is_direct: bool,
    /// Local part of an alias to create (`#name:server`).
    pub room_alias_name: Option<String>,
}

impl RoomOps {
    /// Creates a room for `creator`.
    ///
    /// # Errors
    /// `UnsupportedRoomVersion`, `RoomInUse` for a taken alias,
    /// `InvalidParam` for remote invitees or an E2E-only policy without
    /// `m.room.encryption`, `Forbidden` when an initial event fails the
    /// authorization rules.
    pub async fn create_room(
        &self,
        creator: &UserId,
        mut request: CreateRoom,
    ) -> Result<OwnedRoomId, ServiceError> {
        let version = match &request.room_version {
            Some(version) => parse_version(version)?,
            None => self.default_version,
        };
        let extra_events = request.initial_state.len() + request.invite.len();
        if extra_events > self.create_room_events {
            return Err(ServiceError::InvalidParam(format!(
                "initial_state and invite may add at most {} events to a new room",
                self.create_room_events
            )));
        }
        let initial_state = e2e_policy_last(std::mem::take(&mut request.initial_state))?;
        // Checked again when each invite is signed; checked first so that a
        // bad invitee does not leave a half-built room behind. Users of
        // other servers are their servers' to vouch for, when invited.
        let is_local = |invitee: &&OwnedUserId| invitee.server_name() == self.server_name;
        for invitee in request.invite.iter().filter(is_local) {
            self.events.check_invitee(invitee).await?;
        }
        let alias = match &request.room_alias_name {
            Some(name) => Some(self.free_alias(name).await?),
            None => None,
        };
        let preset = request.preset.unwrap_or(if request.is_public {
            Preset::PublicChat
        } else {
            Preset::PrivateChat
        });

        let create = state_event(
            creator,
            "m.room.create",
            "",
            create_content(version, creator, &request, preset),
        );
        let room_id = match version.is_room_id_derived_from_create_event() {
            true => None,
            false => Some(self.random_room_id()?),
        };
        let room_id = self.events.create_room(version, room_id, create).await?;
        // Claim the alias before any event names it: a concurrent request
        // for the same alias passed `free_alias` too, and only one may win.
        // The loser's room is left with its create event only: nobody is in
        // it and nothing points at it.
        if let Some(alias) = &alias {
            self.storage
                .create_alias(alias, &room_id, creator)
                .await
                .map_err(|e| match e {
                    crate::storage::StorageError::Conflict(_) => ServiceError::RoomInUse,
                    other => other.into(),
                })?;
        }

        let mut events = vec![state_event(
            creator,
            "m.room.member",
            creator.as_str(),
            self.member_content(creator, "join", CanonicalJsonObject::new())
                .await?,
        )];
        events.push(state_event(
            creator,
            "m.room.power_levels",
            "",
            power_levels(version, creator, &request, preset),
        ));
        if let Some(alias) = &alias {
            events.push(state_event(
                creator,
                "m.room.canonical_alias",
                "",
                object(json!({ "alias": alias })),
            ));
        }
        let (join_rule, guest_access) = match preset {
            Preset::PublicChat => ("public", "forbidden"),
            Preset::PrivateChat | Preset::TrustedPrivateChat => ("invite", "can_join"),
        };
        // The spec: `initial_state` takes precedence over the preset, so a
        // slot it sets gets no preset event first.
        let preset_state = [
            ("m.room.join_rules", json!({ "join_rule": join_rule })),
            (
                "m.room.history_visibility",
                json!({ "history_visibility": "shared" }),
            ),
            (
                "m.room.guest_access",
                json!({ "guest_access": guest_access }),
            ),
        ];
        for (event_type, content) in preset_state {
            let given = initial_state
                .iter()
                .any(|state| state.event_type == event_type && state.state_key.is_empty());
            if !given {
                events.push(state_event(creator, event_type, "", object(content)));
            }
        }
        for initial in initial_state {
            events.push(state_event(
                creator,
                &initial.event_type,
                &initial.state_key,
                initial.content,
            ));
        }
        if let Some(name) = request.name {
            events.push(state_event(
                creator,
                "m.room.name",
                "",
                object(json!({ "name": name })),
            ));
        }
        if let Some(topic) = request.topic {
            events.push(state_event(
                creator,
                "m.room.topic",
                "",
                object(json!({ "topic": topic })),
            ));
        }
        let mut remote_events = Vec::new();
        for invitee in &request.invite {
            let mut content = CanonicalJsonObject::new();
            if request.is_direct {
                content.insert("is_direct".to_owned(), CanonicalJsonValue::Bool(true));
            }
            let content = self.member_content(invitee, "invite", content).await?;
            let event = state_event(creator, "m.room.member", invitee.as_str(), content);
            if is_local(&invitee) {
                events.push(event);
            } else {
                remote_events.push(event);
            }
        }
        for event in events {
            if let Err(error) = self.events.send(&room_id, event).await {
                // The room is unusable: give the alias back, and take the
                // creator out so it leaves their room list (a member may
                // always leave; before the join, there is nothing to undo).
                if let Some(alias) = &alias
                    && let Err(cleanup) = self.storage.delete_alias(alias).await
                {
                    tracing::warn!(%room_id, %cleanup, "could not release the alias of a failed room");
                }
                let leave = state_event(
                    creator,
                    "m.room.member",
                    creator.as_str(),
                    object(json!({ "membership": "leave" })),
                );
                if let Err(cleanup) = self.events.send(&room_id, leave).await {
                    tracing::debug!(%room_id, %cleanup, "creator of a failed room did not leave");
                }
                return Err(error);
            }
        }
        // Through the invitees' servers, once the room is whole; a refusal
        // fails the request but leaves the room, as a failed /invite would.
        for event in remote_events {
            self.remote.invite(&room_id, event).await?;
        }
        if request.is_public {
            self.storage.set_room_public(&room_id, true).await?;
        }
        info!(%room_id, %version, "room created");
        Ok(room_id)
    }

    async fn free_alias(&self, name: &str) -> Result<OwnedRoomAliasId, ServiceError> {
        let alias = RoomAliasId::parse(format!("#{name}:{}", self.server_name))
            .map_err(|e| ServiceError::InvalidParam(format!("invalid room_alias_name: {e}")))?;
        if name.contains(':') || name.contains(char::is_whitespace) {
            return Err(ServiceError::InvalidParam(
                "room_alias_name must be a bare local part".to_owned(),
            ));
        }
        if self.storage.alias(&alias).await?.is_some() {
            return Err(ServiceError::RoomInUse);
        }
        Ok(alias)
    }

    fn random_room_id(&self) -> Result<OwnedRoomId, ServiceError> {
        let localpart: String = rand::thread_rng()
            .sample_iter(&Alphanumeric)
            .take(18)
            .map(char::from)
            .collect();
        OwnedRoomId::try_from(format!("!{localpart}:{}", self.server_name))
            .map_err(|e| ServiceError::Internal(format!("generated room id: {e}")))
    }
}

/// Moves an E2E-only policy in `initial_state` after everything else there,
/// so the room's `m.room.encryption` is in place when the policy arrives
/// (the policy requires it), and refuses a policy without one: the
/// encryption settings are the client's to choose, not the server's
/// (`spec-notes/e2e-only-rooms.md`).
fn e2e_policy_last(initial_state: Vec<InitialState>) -> Result<Vec<InitialState>, ServiceError> {
    let (policy, mut rest): (Vec<_>, Vec<_>) = initial_state
        .into_iter()
        .partition(|state| state.event_type == POLICY_EVENT_TYPE);
    let has_encryption = rest
        .iter()
        .any(|state| state.event_type == "m.room.encryption" && state.state_key.is_empty());
    if !policy.is_empty() && !has_encryption {
        return Err(ServiceError::InvalidParam(
            "an E2E-only room needs m.room.encryption in initial_state".to_owned(),
        ));
    }
    rest.extend(policy);
    Ok(rest)
}

/// The create event's content: the client's `creation_content` plus what
/// the version requires. Before version 11 `content.creator` names the
/// creator; from 11 the creator is the sender, not a content field; from version 12 the trusted preset makes invitees
/// additional creators instead of giving them power level 100.
fn create_content(
    version: RoomVersion,
    creator: &UserId,
    request: &CreateRoom,
    preset: Preset,
) -> CanonicalJsonObject {
    let mut content = request.creation_content.clone().unwrap_or_default();
    content.insert(
        "room_version".to_owned(),
        CanonicalJsonValue::String(version.id().to_string()),
    );
    if version.has_creator_field() {
        content.insert(
            "creator".to_owned(),
            CanonicalJsonValue::String(creator.to_string()),
        );
    } else {
        content.remove("creator");
    }
    if version.are_creators_privileged()
        && preset == Preset::TrustedPrivateChat
        && !request.invite.is_empty()
    {
        // The spec: combine the client's `additional_creators` with the
        // invitees, without duplicates.
        let mut creators = match content.remove("additional_creators") {
            Some(CanonicalJsonValue::Array(given)) => given,
            Some(other) => vec![other],
            None => Vec::new(),
        };
        for invitee in &request.invite {
            let invitee = CanonicalJsonValue::String(invitee.to_string());
            if !creators.contains(&invitee) {
                creators.push(invitee);
            }
        }
        content.insert(
            "additional_creators".to_owned(),
            CanonicalJsonValue::Array(creators),
        );
    }
    content
}

/// The default power levels, with `power_level_content_override` applied
/// key by key. Creators of version 12 rooms have unlimited power without a
/// `users` entry (and must not have one).
fn power_levels(
    version: RoomVersion,
    creator: &UserId,
    request: &CreateRoom,
    preset: Preset,
) -> CanonicalJsonObject {
    let mut users = serde_json::Map::new();
    if !version.are_creators_privileged() {
        users.insert(creator.to_string(), json!(100));
        if preset == Preset::TrustedPrivateChat {
            for invitee in &request.invite {
                users.insert(invitee.to_string(), json!(100));
            }
        }
    }
    let mut content = object(json!({
        "users": users,
        "users_default": 0,
        "events": {
            "m.room.name": 50,
            "m.room.power_levels": 100,
            "m.room.history_visibility": 100,
            "m.room.canonical_alias": 50,
            "m.room.avatar": 50,
            "m.room.tombstone": 100,
            "m.room.server_acl": 100,
            "m.room.encryption": 100
        },
        "events_default": 0,
        "state_default": 50,
        "ban": 50,
        "kick": 50,
        "redact": 50,
        // Members of private chats may invite others; public rooms leave it to moderators.
        "invite": if preset == Preset::PublicChat { 50 } else { 0 },
    }));
    if let Some(overrides) = &request.power_level_content_override {
        for (key, value) in overrides {
            content.insert(key.clone(), value.clone());
        }
    }
    content
}
