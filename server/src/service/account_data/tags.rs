//! Room tags. They live in the room's `m.tag` account data (which sync
//! delivers like any other); the tag endpoints edit one tag of it at a time.

use ruma::{RoomId, UserId};
use serde_json::{Map, Value, json};

use super::AccountData;
use crate::service::ServiceError;

/// The room account data type holding a room's tags.
pub const TAGS_TYPE: &str = "m.tag";

/// Longest tag name accepted. The spec sets none; this is its limit for
/// ids, ample for `m.favourite` and `u.`-prefixed user tags.
const MAX_TAG_BYTES: usize = 255;

/// A room's tags: tag name to the tag's content (`order`, and whatever else
/// the client put there).
pub type Tags = Map<String, Value>;

impl AccountData {
    /// The tags the user gave the room.
    ///
    /// # Errors
    /// `Forbidden` for another user's tags; storage failures.
    pub async fn tags(
        &self,
        caller: &UserId,
        user_id: &UserId,
        room_id: &RoomId,
    ) -> Result<Tags, ServiceError> {
        check_owner(caller, user_id)?;
        self.stored_tags(user_id, room_id).await
    }

    /// Adds a tag to the room, or replaces its content.
    ///
    /// # Errors
    /// `Forbidden` for another user's tags, or a new entry past the
    /// account's cap; `InvalidParam` for an overlong tag name, an `order`
    /// that is not a number, or tags past the account data size limit.
    pub async fn set_tag(
        &self,
        caller: &UserId,
        user_id: &UserId,
        room_id: &RoomId,
        tag: &str,
        content: Map<String, Value>,
    ) -> Result<(), ServiceError> {
        check_owner(caller, user_id)?;
        if tag.is_empty() || tag.len() > MAX_TAG_BYTES {
            return Err(ServiceError::InvalidParam(format!(
                "a tag is 1 to {MAX_TAG_BYTES} bytes"
            )));
        }
        if content.get("order").is_some_and(|order| !order.is_number()) {
            return Err(ServiceError::InvalidParam(
                "a tag's order must be a number".to_owned(),
            ));
        }
        self.edit_tags(user_id, room_id, |tags| {
            tags.insert(tag.to_owned(), Value::Object(content));
        })
        .await
    }

    /// Removes a tag from the room; removing one it does not have succeeds.
    ///
    /// # Errors
    /// `Forbidden` for another user's tags; storage failures.
    pub async fn delete_tag(
        &self,
        caller: &UserId,
        user_id: &UserId,
        room_id: &RoomId,
        tag: &str,
    ) -> Result<(), ServiceError> {
        check_owner(caller, user_id)?;
        self.edit_tags(user_id, room_id, |tags| {
            tags.remove(tag);
        })
        .await
    }

    async fn edit_tags(
        &self,
        user_id: &UserId,
        room_id: &RoomId,
        edit: impl FnOnce(&mut Tags),
    ) -> Result<(), ServiceError> {
        let _serialised = self.lock_account(user_id).await;
        let mut tags = self.stored_tags(user_id, room_id).await?;
        edit(&mut tags);
        let content = json!({ "tags": tags }).to_string();
        self.store(user_id, Some(room_id), TAGS_TYPE, &content)
            .await
    }

    /// The stored tags; an `m.tag` a client wrote by hand without a `tags`
    /// object counts as none.
    async fn stored_tags(&self, user_id: &UserId, room_id: &RoomId) -> Result<Tags, ServiceError> {
        let stored = self
            .storage
            .account_data(user_id, Some(room_id), TAGS_TYPE)
            .await?;
        let tags = stored
            .and_then(|text| serde_json::from_str::<Value>(&text).ok())
            .and_then(|mut value| match value.get_mut("tags").map(Value::take) {
                Some(Value::Object(tags)) => Some(tags),
                _ => None,
            });
        Ok(tags.unwrap_or_default())
    }
}

fn check_owner(caller: &UserId, user_id: &UserId) -> Result<(), ServiceError> {
    if caller == user_id {
        Ok(())
    } else {
        Err(ServiceError::Forbidden(
            "you may only use your own tags".to_owned(),
        ))
    }
}
