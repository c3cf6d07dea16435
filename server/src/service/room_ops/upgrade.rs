//! `POST /rooms/{roomId}/upgrade`: a replacement room of a newer version
//! that carries the old room's settings, its local aliases and directory
//! listing, and a tombstone in the old room pointing at it, in the order
//! the spec's "Room upgrades" server behaviour gives.

use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, OwnedRoomId, OwnedUserId, RoomAliasId, RoomId, UserId,
    events::StateEventType,
};
use serde_json::json;
use tracing::info;

use super::{
    CreateRoom, InitialState, Preset, RoomOps, directory::may_set_state, object, state_event,
};
use crate::service::{
    ServiceError,
    room_events::{RoomState, parse_version},
    rooms::{e2e_policy::POLICY_EVENT_TYPE, version::RoomVersion},
};

/// State copied into the replacement room: the spec's recommended list
/// (power levels go separately, as the new room's initial levels) and
/// Myelin's E2E-only policy, which must never be lost to an upgrade.
const CARRIED_STATE: &[&str] = &[
    "m.room.server_acl",
    "m.room.encryption",
    "m.room.name",
    "m.room.avatar",
    "m.room.topic",
    "m.room.guest_access",
    "m.room.history_visibility",
    "m.room.join_rules",
    POLICY_EVENT_TYPE,
];

/// The power level the old room's `events_default` and `invite` are raised
/// to (at least), so that only moderators still talk or invite there.
const RETIRED_ROOM_LEVEL: i64 = 50;

impl RoomOps {
    /// Replaces `room_id` with a new room of `new_version`; returns the
    /// new room's id.
    ///
    /// # Errors
    /// `Forbidden` (as for outsiders) unless the caller is joined;
    /// `Forbidden` without the power to send `m.room.tombstone`;
    /// `UnsupportedRoomVersion`; whatever creating the room refuses.
    pub async fn upgrade_room(
        &self,
        user_id: &UserId,
        room_id: &RoomId,
        new_version: &str,
        additional_creators: Vec<OwnedUserId>,
    ) -> Result<OwnedRoomId, ServiceError> {
        let version = parse_version(new_version)?;
        let old = self.member_view(user_id, room_id).await?;
        if !may_set_state(&old, user_id, "m.room.tombstone") {
            return Err(ServiceError::Forbidden(
                "you may not upgrade this room".to_owned(),
            ));
        }
        let request = replacement_request(&old, room_id, user_id, version, additional_creators);
        let is_public = self.is_public(room_id).await?;
        let new_room = self.create_room(user_id, request).await?;
        // Members who join later get theirs when they do (`join`).
        self.carry_push_rules(user_id, room_id, &new_room).await;
        self.move_aliases(user_id, room_id, &new_room, &old).await?;
        if is_public {
            self.storage.set_room_public(&new_room, true).await?;
            self.storage.set_room_public(room_id, false).await?;
        }
        let tombstone = object(json!({
            "body": "This room has been replaced",
            "replacement_room": new_room,
        }));
        self.events
            .send(
                room_id,
                state_event(user_id, "m.room.tombstone", "", tombstone),
            )
            .await?;
        if let Some(levels) = retired_power_levels(&old) {
            // Best effort, as the spec asks ("if possible"): the upgrade is done.
            if let Err(error) = self
                .events
                .send(
                    room_id,
                    state_event(user_id, "m.room.power_levels", "", levels),
                )
                .await
            {
                tracing::debug!(%room_id, %error, "old room's power levels not restricted");
            }
        }
        info!(old = %room_id, new = %new_room, %version, "room upgraded");
        Ok(new_room)
    }

    /// Gives the user's push rules for `old_room` to its replacement, as
    /// Synapse does when a member reaches the new room. Best effort: the
    /// join or upgrade has happened, and a rule set at its size limit only
    /// means the user sets the new room's rules by hand.
    pub(super) async fn carry_push_rules(
        &self,
        user_id: &UserId,
        old_room: &RoomId,
        new_room: &RoomId,
    ) {
        if let Err(error) = self
            .push_rules
            .copy_room_rules(user_id, old_room, new_room)
            .await
        {
            tracing::debug!(%old_room, %new_room, %error, "push rules not carried over");
        }
    }

    /// Points the old room's local aliases at the new room, which takes
    /// over its canonical alias; the old room's is cleared.
    async fn move_aliases(
        &self,
        user_id: &UserId,
        old_room: &RoomId,
        new_room: &RoomId,
        old: &RoomState,
    ) -> Result<(), ServiceError> {
        for alias in self.storage.room_aliases(old_room).await? {
            let Ok(alias) = <&RoomAliasId>::try_from(alias.as_str()) else {
                continue;
            };
            let creator = self
                .storage
                .alias(alias)
                .await?
                .map(|(_, creator)| creator)
                .and_then(|creator| OwnedUserId::try_from(creator).ok())
                .unwrap_or_else(|| user_id.to_owned());
            self.storage.delete_alias(alias).await?;
            self.storage.create_alias(alias, new_room, &creator).await?;
        }
        let Some(canonical) = content_of(old, "m.room.canonical_alias") else {
            return Ok(());
        };
        if canonical.is_empty() {
            return Ok(());
        }
        self.events
            .send(
                new_room,
                state_event(user_id, "m.room.canonical_alias", "", canonical),
            )
            .await?;
        self.events
            .send(
                old_room,
                state_event(
                    user_id,
                    "m.room.canonical_alias",
                    "",
                    CanonicalJsonObject::new(),
                ),
            )
            .await?;
        Ok(())
    }
}

/// The `createRoom` that builds the replacement: the predecessor in the
/// create event, the old power levels, and the carried state.
fn replacement_request(
    old: &RoomState,
    old_room: &RoomId,
    upgrader: &UserId,
    version: RoomVersion,
    additional_creators: Vec<OwnedUserId>,
) -> CreateRoom {
    let mut predecessor = CanonicalJsonObject::new();
    predecessor.insert(
        "room_id".to_owned(),
        CanonicalJsonValue::String(old_room.to_string()),
    );
    let mut creation_content = CanonicalJsonObject::new();
    creation_content.insert(
        "predecessor".to_owned(),
        CanonicalJsonValue::Object(predecessor),
    );
    if version.are_creators_privileged() && !additional_creators.is_empty() {
        let creators = additional_creators
            .iter()
            .map(|creator| CanonicalJsonValue::String(creator.to_string()))
            .collect();
        creation_content.insert(
            "additional_creators".to_owned(),
            CanonicalJsonValue::Array(creators),
        );
    }
    let mut levels = content_of(old, "m.room.power_levels");
    if let Some(levels) = &mut levels {
        // Rooms before version 10 may hold levels as strings; later
        // versions take integers only, and every version takes them.
        integer_power_levels(levels);
    }
    if version.are_creators_privileged()
        && let Some(CanonicalJsonValue::Object(users)) =
            levels.as_mut().and_then(|levels| levels.get_mut("users"))
    {
        // Creators hold infinite power from version 12 and may not be listed.
        users.remove(upgrader.as_str());
        for creator in &additional_creators {
            users.remove(creator.as_str());
        }
    }
    let initial_state = CARRIED_STATE
        .iter()
        .filter_map(|kind| {
            content_of(old, kind).map(|content| InitialState {
                event_type: (*kind).to_owned(),
                state_key: String::new(),
                content,
            })
        })
        .collect();
    CreateRoom {
        preset: Some(Preset::PrivateChat),
        room_version: Some(version.id().to_string()),
        initial_state,
        power_level_content_override: levels,
        creation_content: Some(creation_content),
        ..CreateRoom::default()
    }
}

/// The old room's power levels with `events_default` and `invite` raised
/// to [`RETIRED_ROOM_LEVEL`] (and past `users_default`); `None` when they
/// already are.
fn retired_power_levels(old: &RoomState) -> Option<CanonicalJsonObject> {
    let mut levels = content_of(old, "m.room.power_levels")?;
    integer_power_levels(&mut levels);
    let level_of = |levels: &CanonicalJsonObject, key: &str, default: i64| match levels.get(key) {
        Some(CanonicalJsonValue::Integer(level)) => i64::from(*level),
        _ => default,
    };
    let users_default = level_of(&levels, "users_default", 0);
    let floor = RETIRED_ROOM_LEVEL.max(users_default.saturating_add(1));
    let mut changed = false;
    for (key, default) in [("events_default", 0), ("invite", 0)] {
        if level_of(&levels, key, default) < floor {
            let level = ruma::Int::new_saturating(floor);
            levels.insert(key.to_owned(), CanonicalJsonValue::Integer(level));
            changed = true;
        }
    }
    changed.then_some(levels)
}

/// Turns the string levels rooms before version 10 allow (`"50"`) into the
/// integers they stand for, at the top level and in `users`, `events` and
/// `notifications`. Strings that hold no integer are left for the
/// authorization rules to judge.
fn integer_power_levels(levels: &mut CanonicalJsonObject) {
    fn integer(value: &mut CanonicalJsonValue) {
        if let CanonicalJsonValue::String(text) = value
            && let Ok(level) = text.trim().parse::<ruma::Int>()
        {
            *value = CanonicalJsonValue::Integer(level);
        }
    }
    for (key, value) in levels.iter_mut() {
        match (key.as_str(), value) {
            ("users" | "events" | "notifications", CanonicalJsonValue::Object(map)) => {
                map.values_mut().for_each(integer);
            }
            (_, value) => integer(value),
        }
    }
}

/// The room a room's create event names as its `predecessor`.
pub(super) fn predecessor(state: &RoomState) -> Option<OwnedRoomId> {
    let create = content_of(state, "m.room.create")?;
    match create.get("predecessor")? {
        CanonicalJsonValue::Object(predecessor) => match predecessor.get("room_id")? {
            CanonicalJsonValue::String(room_id) => OwnedRoomId::try_from(room_id.as_str()).ok(),
            _ => None,
        },
        _ => None,
    }
}

/// The content of the state event `(kind, "")`, when there is one.
fn content_of(state: &RoomState, kind: &str) -> Option<CanonicalJsonObject> {
    let pdu = state.get(&StateEventType::from(kind), "")?;
    match serde_json::from_str::<CanonicalJsonValue>(pdu.content().get()) {
        Ok(CanonicalJsonValue::Object(content)) => Some(content),
        _ => None,
    }
}
