//! Device lists: who must learn that a user's devices or keys changed.
//!
//! A change takes a position on the server-wide stream, so a sync token
//! covers it like any event, and wakes exactly the users who share a room
//! with the changed user (and the user). What a sync reports is derived from
//! the stream and the membership history between two positions; see
//! spec-notes/device-keys.md for why.

use std::{collections::BTreeSet, future::Future, sync::Arc};

use ruma::{DeviceId, OwnedDeviceId, OwnedRoomId, OwnedUserId, UserId};

use crate::{
    service::{
        ServiceError,
        federation::sender::{FederationSender, edus::DeviceChange},
        notifier::Notifier,
        stream::{Kind, Stream},
    },
    storage::{DeviceListChange, Storage, StreamPosition},
};

/// `device_lists` in a sync, and the answer of `GET /keys/changes`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceListUpdate {
    /// Users whose devices or keys changed, or who newly share a room.
    pub changed: BTreeSet<OwnedUserId>,
    /// Users who no longer share any room.
    pub left: BTreeSet<OwnedUserId>,
}

impl DeviceListUpdate {
    /// Whether there is nothing to report.
    pub fn is_empty(&self) -> bool {
        self.changed.is_empty() && self.left.is_empty()
    }
}

/// The device-list service.
#[derive(Debug)]
pub struct DeviceLists {
    storage: Arc<dyn Storage>,
    stream: Arc<Stream>,
    notifier: Arc<Notifier>,
    /// Tells other servers of local users' changes.
    outbound: FederationSender,
    /// Widest range of stream positions whose changes are read.
    window: u64,
}

impl DeviceLists {
    /// Builds the service; changes are read over at most `window` stream
    /// positions (see [`Self::changes_in_rooms`]); other servers hear of
    /// local users' changes through `outbound`.
    pub fn new(
        storage: Arc<dyn Storage>,
        stream: Arc<Stream>,
        notifier: Arc<Notifier>,
        outbound: FederationSender,
        window: u64,
    ) -> Self {
        Self {
            storage,
            stream,
            notifier,
            outbound,
            window,
        }
    }

    /// The last committed stream position.
    pub fn position(&self) -> StreamPosition {
        self.stream.current()
    }

    /// Records that these users' devices changed (a login, a deleted device).
    ///
    /// # Errors
    /// Storage failures.
    pub async fn record(&self, changes: &[DeviceListChange]) -> Result<(), ServiceError> {
        let storage = &self.storage;
        self.publish(changes, |position| async move {
            Ok(storage
                .record_device_list_changes(changes, position)
                .await?)
        })
        .await
    }

    /// Records that a user deleted devices, and tells the other servers
    /// sharing a room with the user.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn devices_deleted(
        &self,
        user_id: &UserId,
        device_ids: &[OwnedDeviceId],
    ) -> Result<(), ServiceError> {
        let storage = &self.storage;
        let changes = &[DeviceListChange::public(user_id)];
        let position = self
            .publish(changes, |position| async move {
                storage
                    .record_device_list_changes(changes, position)
                    .await?;
                Ok(position)
            })
            .await?;
        for device_id in device_ids {
            self.federate_device(user_id, device_id, position, None)
                .await?;
        }
        Ok(())
    }

    /// Tells the other servers sharing a room with `user_id` that one of
    /// the user's devices changed at `position`: its new `keys`, or
    /// deleted (`None`).
    ///
    /// # Errors
    /// Storage failures.
    pub async fn federate_device(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
        position: StreamPosition,
        keys: Option<&str>,
    ) -> Result<(), ServiceError> {
        let destinations = self.room_servers(user_id, position).await?;
        let change = DeviceChange {
            user_id,
            device_id,
            position,
            keys,
        };
        self.outbound.device_list_update(change, destinations).await
    }

    /// Tells the other servers sharing a room with `user_id` of the user's
    /// new master and self-signing keys (`CrossSigningKey` JSON texts).
    ///
    /// # Errors
    /// Storage failures.
    pub async fn federate_signing_keys(
        &self,
        user_id: &UserId,
        master_key: Option<&str>,
        self_signing_key: Option<&str>,
    ) -> Result<(), ServiceError> {
        let destinations = self.room_servers(user_id, self.stream.current()).await?;
        self.outbound
            .signing_key_update(user_id, master_key, self_signing_key, destinations)
            .await
    }

    /// The servers, other than this one, of those sharing a room with
    /// `user_id` at `at`.
    async fn room_servers(
        &self,
        user_id: &UserId,
        at: StreamPosition,
    ) -> Result<std::collections::BTreeSet<ruma::OwnedServerName>, ServiceError> {
        let mates = self.room_mates(user_id, at).await?;
        Ok(self
            .outbound
            .other_servers(mates.iter().map(|mate| &**mate)))
    }

    /// Runs `write`, which must store `changes` at the position it is given
    /// together with whatever else changed, then wakes who must hear of it.
    ///
    /// # Errors
    /// What `write` fails with.
    pub async fn publish<T, F, Fut>(
        &self,
        changes: &[DeviceListChange],
        write: F,
    ) -> Result<T, ServiceError>
    where
        F: FnOnce(StreamPosition) -> Fut,
        Fut: Future<Output = Result<T, ServiceError>>,
    {
        let written = self.stream.append(Kind::DeviceList, write).await?;
        let now = self.stream.current();
        let mut woken = BTreeSet::new();
        for change in changes {
            match &change.viewer {
                Some(viewer) => {
                    woken.insert(viewer.clone());
                }
                None => {
                    woken.insert(change.user_id.clone());
                    woken.extend(self.room_mates(&change.user_id, now).await?);
                }
            }
        }
        self.notifier.wake(woken.iter().map(|user| user.as_ref()));
        Ok(written)
    }

    /// What `user_id` must learn about device lists from `(since, now]`:
    /// changes of users who share a room with them now (and their own,
    /// and private ones meant for them), users who came to share a room,
    /// and users who no longer share any.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn changes(
        &self,
        user_id: &UserId,
        since: StreamPosition,
        now: StreamPosition,
    ) -> Result<DeviceListUpdate, ServiceError> {
        let rooms_then = self.joined_rooms(user_id, since).await?;
        let rooms_now = self.joined_rooms(user_id, now).await?;
        self.changes_in_rooms(user_id, since, now, &rooms_then, &rooms_now)
            .await
    }

    /// [`Self::changes`] for a caller that has read the user's joined rooms
    /// at `since` and at `now` already (sync).
    ///
    /// From a token older than the window the changes between are not read
    /// (their number grows with the server's history, not with the user):
    /// everyone who shares a room with the user now is reported changed,
    /// which is always correct, since a client then queries their keys
    /// again; the work is bounded by the user's rooms.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn changes_in_rooms(
        &self,
        user_id: &UserId,
        since: StreamPosition,
        now: StreamPosition,
        rooms_then: &BTreeSet<OwnedRoomId>,
        rooms_now: &BTreeSet<OwnedRoomId>,
    ) -> Result<DeviceListUpdate, ServiceError> {
        if since >= now {
            return Ok(DeviceListUpdate::default());
        }
        if u64::try_from(now.0.saturating_sub(since.0)).unwrap_or(u64::MAX) > self.window {
            let shared_now = self.members_of(rooms_now, now).await?;
            let shared_then = self.members_of(rooms_then, since).await?;
            let left = shared_then
                .difference(&shared_now)
                .filter(|other| *other != user_id)
                .cloned()
                .collect();
            return Ok(DeviceListUpdate {
                changed: shared_now,
                left,
            });
        }
        let changed_users = self
            .storage
            .device_list_changes(user_id, since, now)
            .await?;
        let moved: BTreeSet<OwnedRoomId> = self
            .storage
            .rooms_with_membership_changes(since, now)
            .await?
            .into_iter()
            .filter(|room| rooms_now.contains(room) || rooms_then.contains(room))
            .collect();
        let is_sharing_unchanged = rooms_now == rooms_then && moved.is_empty();
        if changed_users.is_empty() && is_sharing_unchanged {
            return Ok(DeviceListUpdate::default());
        }
        let shared_now = self.members_of(rooms_now, now).await?;
        let shared_then = if is_sharing_unchanged {
            shared_now.clone()
        } else {
            self.members_of(rooms_then, since).await?
        };
        let mut update = DeviceListUpdate::default();
        for (changed, is_private) in changed_users {
            if is_private || changed == user_id || shared_now.contains(&changed) {
                update.changed.insert(changed);
            }
        }
        update.changed.extend(
            shared_now
                .difference(&shared_then)
                .filter(|other| *other != user_id)
                .cloned(),
        );
        update.left = shared_then
            .difference(&shared_now)
            .filter(|other| *other != user_id)
            .cloned()
            .collect();
        update.changed.retain(|user| !update.left.contains(user));
        Ok(update)
    }

    /// Everyone who shares a joined room with `user_id` at `at`, the user
    /// included when they are in any room.
    async fn room_mates(
        &self,
        user_id: &UserId,
        at: StreamPosition,
    ) -> Result<BTreeSet<OwnedUserId>, ServiceError> {
        let rooms = self.joined_rooms(user_id, at).await?;
        self.members_of(&rooms, at).await
    }

    async fn joined_rooms(
        &self,
        user_id: &UserId,
        at: StreamPosition,
    ) -> Result<BTreeSet<OwnedRoomId>, ServiceError> {
        Ok(self
            .storage
            .memberships_of(user_id, Some(at))
            .await?
            .into_iter()
            .filter(|membership| membership.membership == "join")
            .map(|membership| membership.room_id)
            .collect())
    }

    async fn members_of(
        &self,
        rooms: &BTreeSet<OwnedRoomId>,
        at: StreamPosition,
    ) -> Result<BTreeSet<OwnedUserId>, ServiceError> {
        let mut members = BTreeSet::new();
        for room_id in rooms {
            members.extend(self.storage.joined_members_at(room_id, at).await?);
        }
        Ok(members)
    }
}
