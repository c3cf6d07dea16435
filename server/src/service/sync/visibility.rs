//! History visibility: which room events a user may read.
//!
//! <https://spec.matrix.org/v1.16/client-server-api/#history-visibility>:
//! the `m.room.history_visibility` and the user's membership in the state at
//! the event decide, with `shared` opening everything to current members.

use std::collections::HashMap;

use ruma::UserId;
use serde::Deserialize;

use crate::{
    service::{ServiceError, room_events::membership, rooms::pdu::Pdu},
    storage::{Storage, StoredEvent},
};

/// Decides visibility for one user, caching what each state group says.
pub struct Visibility<'a> {
    storage: &'a dyn Storage,
    user_id: &'a UserId,
    by_group: HashMap<i64, (String, Option<String>)>,
}

impl<'a> Visibility<'a> {
    /// A visibility check for `user_id`.
    pub fn new(storage: &'a dyn Storage, user_id: &'a UserId) -> Self {
        Self {
            storage,
            user_id,
            by_group: HashMap::new(),
        }
    }

    /// Whether the user may see `event`, given whether they are joined to
    /// the room now.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn can_see(
        &mut self,
        event: &StoredEvent,
        pdu: &Pdu,
        joined_now: bool,
    ) -> Result<bool, ServiceError> {
        // Users always see what concerns their own membership.
        if pdu.state_key() == Some(self.user_id.as_str())
            && pdu.kind().to_string() == "m.room.member"
        {
            return Ok(true);
        }
        let (visibility, membership) = self.at_group(event.state_group, pdu).await?;
        Ok(match visibility.as_str() {
            "world_readable" => true,
            _ if membership.as_deref() == Some("join") => true,
            "shared" => joined_now,
            "invited" => {
                membership.as_deref() == Some("invite") || joined_now && membership.is_some()
            }
            _ => false,
        })
    }

    async fn at_group(
        &mut self,
        group: i64,
        pdu: &Pdu,
    ) -> Result<(String, Option<String>), ServiceError> {
        if let Some(found) = self.by_group.get(&group) {
            return Ok(found.clone());
        }
        #[derive(Deserialize)]
        struct Content {
            history_visibility: String,
        }
        let version = pdu.room_version();
        let visibility = match self
            .storage
            .state_group_entry(group, "m.room.history_visibility", "")
            .await?
        {
            Some(id) => self.load(version, &id).await?.and_then(|pdu| {
                serde_json::from_str::<Content>(pdu.content().get())
                    .ok()
                    .map(|c| c.history_visibility)
            }),
            None => None,
        }
        // The spec's default when the room has no such event.
        .unwrap_or_else(|| "shared".to_owned());
        let membership = match self
            .storage
            .state_group_entry(group, "m.room.member", self.user_id.as_str())
            .await?
        {
            Some(id) => self.load(version, &id).await?.as_ref().and_then(membership),
            None => None,
        };
        self.by_group
            .insert(group, (visibility.clone(), membership.clone()));
        Ok((visibility, membership))
    }

    async fn load(
        &self,
        version: crate::service::rooms::version::RoomVersion,
        event_id: &ruma::EventId,
    ) -> Result<Option<Pdu>, ServiceError> {
        let Some(stored) = self.storage.event(event_id).await? else {
            return Ok(None);
        };
        Ok(Pdu::from_storage(version, stored.event_id, stored.json).ok())
    }
}
