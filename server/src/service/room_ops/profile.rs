//! Profile changes, carried into the member event of every room the user
//! is joined to, as clients expect to find them there.

use ruma::{CanonicalJsonObject, CanonicalJsonValue, UserId, events::StateEventType};
use tracing::debug;

use super::{RoomOps, state_event};
use crate::{service::ServiceError, storage::ProfileField};

impl RoomOps {
    /// Sets or clears one field of the caller's own profile, then sends a
    /// member event with the new value into each room they are joined to.
    ///
    /// # Errors
    /// As [`crate::service::profile::Profiles::set`]. A room that refuses
    /// the new member event is skipped, not an error: the profile changed.
    pub async fn set_profile_field(
        &self,
        caller: &UserId,
        target: &UserId,
        field: ProfileField,
        value: Option<&str>,
    ) -> Result<(), ServiceError> {
        self.profiles.set(caller, target, field, value).await?;
        let key = match field {
            ProfileField::Displayname => "displayname",
            ProfileField::AvatarUrl => "avatar_url",
        };
        for room_id in self.joined_rooms(caller).await? {
            let current = self
                .events
                .read_state(&room_id, |state| {
                    state
                        .get(&StateEventType::RoomMember, caller.as_str())
                        .and_then(|pdu| match pdu.as_object().get("content") {
                            Some(CanonicalJsonValue::Object(content)) => Some(content.clone()),
                            _ => None,
                        })
                })
                .await?
                .flatten();
            let Some(content) = current else {
                continue;
            };
            let content = with_profile_field(content, key, value);
            let member = state_event(caller, "m.room.member", caller.as_str(), content);
            if let Err(error) = self.events.send(&room_id, member).await {
                debug!(%room_id, %error, "member event not updated with the new profile");
            }
        }
        Ok(())
    }
}

/// A join's member content with `key` set to `value` (removed when empty).
/// The restricted-join authoriser is dropped: it vouched for the join, and
/// this event is not one.
fn with_profile_field(
    mut content: CanonicalJsonObject,
    key: &str,
    value: Option<&str>,
) -> CanonicalJsonObject {
    content.remove("join_authorised_via_users_server");
    match value.filter(|value| !value.is_empty()) {
        Some(value) => {
            content.insert(key.to_owned(), CanonicalJsonValue::String(value.to_owned()));
        }
        None => {
            content.remove(key);
        }
    }
    content
}
