//! The device-list stream: who changed their devices or keys, and when,
//! and the room memberships that decide who must hear of it.

use async_trait::async_trait;
use ruma::{OwnedRoomId, OwnedUserId, RoomId, UserId};

use super::{StorageError, StreamPosition};

/// A change to `user_id`'s devices, device keys or cross-signing keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceListChange {
    /// Whose keys changed.
    pub user_id: OwnedUserId,
    /// `None` when everyone who shares a room with `user_id` must hear of
    /// it; else the only user who may (their own private signature).
    pub viewer: Option<OwnedUserId>,
}

impl DeviceListChange {
    /// A change everyone sharing a room with `user_id` hears of.
    pub fn public(user_id: &UserId) -> Self {
        Self {
            user_id: user_id.to_owned(),
            viewer: None,
        }
    }
}

/// What the device-list service persists and reads.
#[async_trait]
pub trait DeviceListStore: Send + Sync {
    /// Records changes at a stream position.
    async fn record_device_list_changes(
        &self,
        changes: &[DeviceListChange],
        position: StreamPosition,
    ) -> Result<(), StorageError>;

    /// The users with changes in `(after, upto]` that `viewer` may hear of,
    /// each with whether the change is private to `viewer`.
    async fn device_list_changes(
        &self,
        viewer: &UserId,
        after: StreamPosition,
        upto: StreamPosition,
    ) -> Result<Vec<(OwnedUserId, bool)>, StorageError>;

    /// The room's joined members as of a stream position.
    async fn joined_members_at(
        &self,
        room_id: &RoomId,
        at: StreamPosition,
    ) -> Result<Vec<OwnedUserId>, StorageError>;

    /// The rooms whose membership changed in `(after, upto]`.
    async fn rooms_with_membership_changes(
        &self,
        after: StreamPosition,
        upto: StreamPosition,
    ) -> Result<Vec<OwnedRoomId>, StorageError>;
}
