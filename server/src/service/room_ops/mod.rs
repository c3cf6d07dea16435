//! What clients do with rooms: create them, change membership, send events
//! and state, redact, read state and members, and manage aliases and the
//! public directory. Every write goes through [`RoomEvents`], so the
//! authorization rules decide what is allowed.

mod create;
mod directory;
mod membership;
mod profile;
mod reads;
mod send;
mod upgrade;

use std::sync::Arc;

use ruma::{CanonicalJsonObject, CanonicalJsonValue, OwnedServerName, UserId};

use super::{
    ServiceError,
    federation::membership::RemoteMembership,
    profile::Profiles,
    push_rules::PushRules,
    room_events::{LocalEvent, RoomEvents},
    rooms::version::RoomVersion,
};
use crate::storage::Storage;

pub use create::{CreateRoom, InitialState, Preset};
pub use directory::PublicRoom;
pub use membership::restricted_join_authoriser;

/// Client-facing room operations.
#[derive(Debug)]
pub struct RoomOps {
    events: Arc<RoomEvents>,
    remote: Arc<RemoteMembership>,
    storage: Arc<dyn Storage>,
    profiles: Arc<Profiles>,
    push_rules: Arc<PushRules>,
    server_name: OwnedServerName,
    default_version: RoomVersion,
    create_room_events: usize,
}

impl RoomOps {
    /// Builds the service.
    ///
    /// `create_room_events` caps what one `createRoom` may add beyond the
    /// preset's events (`initial_state` entries plus invites).
    #[allow(
        clippy::too_many_arguments,
        reason = "the services a room operation may need, each passed once"
    )]
    pub fn new(
        events: Arc<RoomEvents>,
        remote: Arc<RemoteMembership>,
        storage: Arc<dyn Storage>,
        profiles: Arc<Profiles>,
        push_rules: Arc<PushRules>,
        server_name: OwnedServerName,
        default_version: RoomVersion,
        create_room_events: usize,
    ) -> Self {
        Self {
            events,
            remote,
            storage,
            profiles,
            push_rules,
            server_name,
            default_version,
            create_room_events,
        }
    }

    /// The version of rooms created without one named.
    pub fn default_room_version(&self) -> RoomVersion {
        self.default_version
    }

    /// A membership event's content for `user_id`, with their profile as
    /// clients expect to find it in the room.
    async fn member_content(
        &self,
        user_id: &UserId,
        membership: &str,
        extra: CanonicalJsonObject,
    ) -> Result<CanonicalJsonObject, ServiceError> {
        let mut content = extra;
        content.insert(
            "membership".to_owned(),
            CanonicalJsonValue::String(membership.to_owned()),
        );
        if membership == "join"
            && let Ok(profile) = self.profiles.get(user_id).await
        {
            for (key, value) in [
                ("displayname", profile.displayname),
                ("avatar_url", profile.avatar_url),
            ] {
                if let Some(value) = value {
                    // A per-room name or avatar the client chose stands.
                    content
                        .entry(key.to_owned())
                        .or_insert(CanonicalJsonValue::String(value));
                }
            }
        }
        Ok(content)
    }
}

/// Refuses identifiers with NUL characters, which no database text column
/// (PostgreSQL's least of all) can hold.
fn check_text(what: &str, value: &str) -> Result<(), ServiceError> {
    if value.contains('\0') {
        return Err(ServiceError::InvalidParam(format!(
            "{what} must not contain NUL characters"
        )));
    }
    Ok(())
}

/// A state event sent by `sender`.
fn state_event(
    sender: &UserId,
    event_type: &str,
    state_key: &str,
    content: CanonicalJsonObject,
) -> LocalEvent {
    LocalEvent {
        sender: sender.to_owned(),
        event_type: event_type.into(),
        state_key: Some(state_key.to_owned()),
        content,
        redacts: None,
        transaction: None,
    }
}

/// Builds a canonical JSON object from `serde_json` (for contents the server writes).
fn object(value: serde_json::Value) -> CanonicalJsonObject {
    match CanonicalJsonValue::try_from(value) {
        Ok(CanonicalJsonValue::Object(object)) => object,
        // Only called with object literals of strings, integers and booleans.
        _ => CanonicalJsonObject::new(),
    }
}

/// An optional `reason` for membership changes and redactions.
fn with_reason(reason: Option<String>) -> CanonicalJsonObject {
    let mut content = CanonicalJsonObject::new();
    if let Some(reason) = reason {
        content.insert("reason".to_owned(), CanonicalJsonValue::String(reason));
    }
    content
}
