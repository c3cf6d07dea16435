//! History visibility: which room events a user may read.
//!
//! <https://spec.matrix.org/v1.16/client-server-api/#history-visibility>:
//! the `m.room.history_visibility` and the user's membership in the state at
//! the event decide, with `shared` opening an event to whoever joined after it.

use std::collections::{HashMap, HashSet};

use ruma::{OwnedRoomId, OwnedUserId, UserId};
use serde::Deserialize;

use crate::{
    service::{ServiceError, room_events::membership, rooms::pdu::Pdu},
    storage::{Storage, StoredEvent, StreamPosition},
};

/// Decides visibility for one user, caching what each state group says.
pub struct Visibility<'a> {
    storage: &'a dyn Storage,
    user_id: &'a UserId,
    by_group: HashMap<i64, (String, Option<String>)>,
    last_join: HashMap<OwnedRoomId, Option<StreamPosition>>,
    ignored: Option<HashSet<OwnedUserId>>,
}

/// Most membership events walked back to find the user's last join.
const MAX_MEMBERSHIP_WALK: usize = 64;

impl<'a> Visibility<'a> {
    /// A visibility check for `user_id`.
    pub fn new(storage: &'a dyn Storage, user_id: &'a UserId) -> Self {
        Self {
            storage,
            user_id,
            by_group: HashMap::new(),
            last_join: HashMap::new(),
            ignored: None,
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
        // "The client will no longer receive events sent by that user, with
        // the exception of state events" (spec, Ignoring Users).
        if pdu.state_key().is_none() && self.is_ignored(pdu.sender()).await? {
            return Ok(false);
        }
        // Users always see what concerns their own membership.
        if pdu.state_key() == Some(self.user_id.as_str())
            && pdu.kind().to_string() == "m.room.member"
        {
            return Ok(true);
        }
        let (visibility, membership) = self.at_group(event.state_group, pdu).await?;
        if self
            .allows(&visibility, membership.as_deref(), event, pdu, joined_now)
            .await?
        {
            return Ok(true);
        }
        // "For m.room.history_visibility events themselves, the user should
        // be allowed to see the event if the history_visibility before or
        // after the event would allow them to see it."
        if pdu.kind().to_string() == "m.room.history_visibility"
            && pdu.state_key() == Some("")
            && let Some(group) = self
                .storage
                .state_group_before(pdu.room_id(), event.position)
                .await?
        {
            let (before, membership) = self.at_group(group, pdu).await?;
            return self
                .allows(&before, membership.as_deref(), event, pdu, joined_now)
                .await;
        }
        Ok(false)
    }

    /// Whether the user ignores `sender` (`m.ignored_user_list`).
    ///
    /// # Errors
    /// Storage failures.
    pub async fn is_ignored(&mut self, sender: &UserId) -> Result<bool, ServiceError> {
        if self.ignored.is_none() {
            #[derive(Deserialize)]
            struct Content {
                #[serde(default)]
                ignored_users: HashMap<OwnedUserId, serde::de::IgnoredAny>,
            }
            let content = self
                .storage
                .account_data(self.user_id, None, "m.ignored_user_list")
                .await?;
            let ignored = content
                .and_then(|json| serde_json::from_str::<Content>(&json).ok())
                .map(|c| c.ignored_users.into_keys().collect())
                .unwrap_or_default();
            self.ignored = Some(ignored);
        }
        Ok(self
            .ignored
            .as_ref()
            .is_some_and(|ignored| ignored.contains(sender)))
    }

    /// The spec's rules, given the setting and the user's membership in the
    /// state at the event.
    async fn allows(
        &mut self,
        visibility: &str,
        membership: Option<&str>,
        event: &StoredEvent,
        pdu: &Pdu,
        joined_now: bool,
    ) -> Result<bool, ServiceError> {
        Ok(match visibility {
            "world_readable" => true,
            _ if membership == Some("join") => true,
            "invited" => membership == Some("invite"),
            "joined" => false,
            // `shared`, and any value not understood: allowed if the user
            // joined the room at any point after the event. A user joined
            // now did (the event came before that join, or the membership
            // at it would be `join`).
            _ => {
                joined_now
                    || self
                        .last_join(pdu)
                        .await?
                        .is_some_and(|joined| joined > event.position)
            }
        })
    }

    /// Where the user last joined the event's room, walking back through
    /// their membership events from the room's latest state.
    async fn last_join(&mut self, pdu: &Pdu) -> Result<Option<StreamPosition>, ServiceError> {
        let room_id = pdu.room_id();
        if let Some(found) = self.last_join.get(room_id) {
            return Ok(*found);
        }
        let mut before = StreamPosition(i64::MAX);
        let mut found = None;
        for _ in 0..MAX_MEMBERSHIP_WALK {
            let Some(group) = self.storage.state_group_before(room_id, before).await? else {
                break;
            };
            let Some(id) = self
                .storage
                .state_group_entry(group, "m.room.member", self.user_id.as_str())
                .await?
            else {
                break;
            };
            let Some(stored) = self.storage.event(&id).await? else {
                break;
            };
            let Ok(member) =
                Pdu::from_storage(pdu.room_version(), stored.event_id.clone(), stored.json)
            else {
                break;
            };
            if membership(&member).as_deref() == Some("join") {
                found = Some(stored.position);
                break;
            }
            before = stored.position;
        }
        self.last_join.insert(room_id.to_owned(), found);
        Ok(found)
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
