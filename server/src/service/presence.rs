//! Presence (`GET`/`PUT /presence/{userId}/status`): whether a user is
//! online, away or offline, with an optional status message. A user's
//! presence is shown to themselves and to users who share a room with
//! them; to anyone else it is as unknown as a user that does not exist.
//! Sync carries the changes of the syncing user's room mates (and their
//! own). `[presence] enabled = false` turns it off for privacy: changes are
//! accepted and dropped, and everyone reads as `offline`.

use std::{sync::Arc, time::Duration};

use ruma::UserId;

use super::{
    ServiceError,
    notifier::Notifier,
    profile::share_a_room,
    room_events::RoomEvents,
    stream::{Kind, Stream},
};
use crate::storage::{Millis, PresenceState, Storage};

/// Longest status message accepted, in characters.
const MAX_STATUS_MSG_CHARS: usize = 1024;
/// How recently an online user must have been active to count as
/// `currently_active`.
const CURRENTLY_ACTIVE: Duration = Duration::from_secs(5 * 60);

/// How often a syncing online user's activity is written again: well
/// inside [`CURRENTLY_ACTIVE`], so they never read as inactive while they
/// sync, and rarely enough that syncs do not write on every call.
const ACTIVITY_REFRESH: Duration = Duration::from_secs(60);

/// A sync's `set_presence` parameter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SetPresence {
    /// Mark the user online (the default).
    #[default]
    Online,
    /// Leave the user's presence alone.
    Offline,
    /// Mark the user idle.
    Unavailable,
}

/// What a presence read shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceView {
    /// `online`, `unavailable` or `offline`.
    pub presence: String,
    /// The status message, if any.
    pub status_msg: Option<String>,
    /// Milliseconds since the user was last active, when known.
    pub last_active_ago: Option<u64>,
    /// Whether the user is online and was active lately.
    pub currently_active: bool,
}

impl PresenceView {
    /// How a stored presence reads at `now_ms`.
    pub fn of(state: PresenceState, now_ms: i64) -> Self {
        let ago = u64::try_from(now_ms.saturating_sub(state.last_active_ts)).unwrap_or(0);
        Self {
            currently_active: state.presence == "online"
                && Duration::from_millis(ago) < CURRENTLY_ACTIVE,
            presence: state.presence,
            status_msg: state.status_msg,
            last_active_ago: Some(ago),
        }
    }

    fn offline() -> Self {
        Self {
            presence: "offline".to_owned(),
            status_msg: None,
            last_active_ago: None,
            currently_active: false,
        }
    }
}

/// Users' presence.
#[derive(Debug)]
pub struct Presence {
    storage: Arc<dyn Storage>,
    stream: Arc<Stream>,
    events: Arc<RoomEvents>,
    notifier: Arc<Notifier>,
    enabled: bool,
}

impl Presence {
    /// Builds the service; with `enabled` false, presence is off.
    pub fn new(
        storage: Arc<dyn Storage>,
        stream: Arc<Stream>,
        events: Arc<RoomEvents>,
        notifier: Arc<Notifier>,
        enabled: bool,
    ) -> Self {
        Self {
            storage,
            stream,
            events,
            notifier,
            enabled,
        }
    }

    /// Sets the caller's own presence.
    ///
    /// # Errors
    /// `Forbidden` for another user; `InvalidParam` for an unknown state or
    /// an overlong status message.
    pub async fn set(
        &self,
        caller: &UserId,
        user_id: &UserId,
        presence: &str,
        status_msg: Option<String>,
    ) -> Result<(), ServiceError> {
        if caller != user_id {
            return Err(ServiceError::Forbidden(
                "you may only set your own presence".to_owned(),
            ));
        }
        if !matches!(presence, "online" | "unavailable" | "offline") {
            return Err(ServiceError::InvalidParam(
                "presence is online, unavailable or offline".to_owned(),
            ));
        }
        if status_msg
            .as_ref()
            .is_some_and(|msg| msg.chars().count() > MAX_STATUS_MSG_CHARS || msg.contains('\0'))
        {
            return Err(ServiceError::InvalidParam(format!(
                "status_msg is at most {MAX_STATUS_MSG_CHARS} characters"
            )));
        }
        if !self.enabled {
            return Ok(());
        }
        self.store(
            user_id,
            PresenceState {
                presence: presence.to_owned(),
                status_msg,
                last_active_ts: Millis::now().0,
            },
        )
        .await
    }

    /// What a sync's `set_presence` does: `online` (a sync without the
    /// parameter) and `unavailable` mark the syncing user so, keeping
    /// their status message; `offline` leaves their presence as it is.
    /// Nothing is written while the stored presence already says so, except
    /// that an online user's activity is refreshed every
    /// [`ACTIVITY_REFRESH`], so a syncing user stays `currently_active`.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn sync_presence(
        &self,
        user_id: &UserId,
        set_presence: SetPresence,
    ) -> Result<(), ServiceError> {
        let presence = match set_presence {
            SetPresence::Offline => return Ok(()),
            _ if !self.enabled => return Ok(()),
            SetPresence::Online => "online",
            SetPresence::Unavailable => "unavailable",
        };
        let now = Millis::now().0;
        let stored = self.storage.presence(user_id).await?;
        let is_current = stored.as_ref().is_some_and(|state| {
            let age = u64::try_from(now.saturating_sub(state.last_active_ts)).unwrap_or(0);
            state.presence == presence
                && (presence != "online" || Duration::from_millis(age) < ACTIVITY_REFRESH)
        });
        if is_current {
            return Ok(());
        }
        let status_msg = stored.and_then(|state| state.status_msg);
        self.store(
            user_id,
            PresenceState {
                presence: presence.to_owned(),
                status_msg,
                last_active_ts: now,
            },
        )
        .await
    }

    /// Stores the user's new presence and wakes the syncs that carry it.
    async fn store(&self, user_id: &UserId, state: PresenceState) -> Result<(), ServiceError> {
        let storage = &self.storage;
        let state = &state;
        self.stream
            .append(Kind::Presence, |position| async move {
                Ok(storage.set_presence(user_id, state, position).await?)
            })
            .await?;
        // Wake the long-polling syncs that carry the change.
        let mut mates = vec![user_id.to_owned()];
        for membership in self.storage.memberships_of(user_id, None).await?.iter() {
            if membership.membership != "join" {
                continue;
            }
            mates.extend(self.events.joined_members(&membership.room_id).await?);
        }
        mates.sort();
        mates.dedup();
        self.notifier.wake(mates.iter().map(|user| &**user));
        Ok(())
    }

    /// A user's presence as `viewer` may see it.
    ///
    /// # Errors
    /// `NotFound` for a user the viewer shares no room with (the same as
    /// for one that does not exist).
    pub async fn get(
        &self,
        viewer: &UserId,
        user_id: &UserId,
    ) -> Result<PresenceView, ServiceError> {
        if !self.enabled {
            return Ok(PresenceView::offline());
        }
        if viewer != user_id && !share_a_room(self.storage.as_ref(), viewer, user_id).await? {
            return Err(ServiceError::NotFound(
                "no presence for this user".to_owned(),
            ));
        }
        Ok(match self.storage.presence(user_id).await? {
            Some(state) => PresenceView::of(state, Millis::now().0),
            None => PresenceView::offline(),
        })
    }
}
