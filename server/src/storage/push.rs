//! Push actions: what each user's push rules made of the events they were
//! sent, kept for the notification counts of sync and for
//! `GET /notifications` (spec-notes/push.md).

use async_trait::async_trait;
use ruma::{OwnedEventId, OwnedRoomId, RoomId, UserId};

use super::{StorageError, StreamPosition};

/// The notifying actions one user's rules gave one event.
#[derive(Debug, Clone)]
pub struct NewPushAction<'a> {
    /// Whose rules.
    pub user_id: &'a UserId,
    /// The event's room.
    pub room_id: &'a RoomId,
    /// The event.
    pub event_id: &'a ruma::EventId,
    /// The event's position on the stream.
    pub position: StreamPosition,
    /// The actions, a JSON array.
    pub actions: &'a str,
    /// Whether the actions set the `highlight` tweak.
    pub is_highlight: bool,
    /// When the event was evaluated, in milliseconds since the epoch.
    pub ts: i64,
}

/// A user's notification and highlight counts in one room.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NotificationCounts {
    /// Notifying events after the read receipt.
    pub notifications: u64,
    /// Of those, the ones that highlight.
    pub highlights: u64,
}

/// One event that notified a user, as `GET /notifications` lists it.
#[derive(Debug, Clone)]
pub struct Notification {
    /// The event's room.
    pub room_id: OwnedRoomId,
    /// The event.
    pub event_id: OwnedEventId,
    /// The event's position on the stream (the paging token).
    pub position: StreamPosition,
    /// The actions, a JSON array.
    pub actions: String,
    /// Whether the user's read receipt in the room is at or past it.
    pub is_read: bool,
    /// When it was evaluated, in milliseconds since the epoch.
    pub ts: i64,
}

/// Push actions storage.
#[async_trait]
pub trait PushStore {
    /// Stores the notifying actions of one evaluation. One transaction.
    async fn add_push_actions(&self, actions: &[NewPushAction<'_>]) -> Result<(), StorageError>;

    /// The user's counts in a room: notifying events up to `upto` after the
    /// event their latest read receipt (public or private) in the main
    /// timeline points at.
    async fn notification_counts(
        &self,
        room_id: &RoomId,
        user_id: &UserId,
        upto: StreamPosition,
    ) -> Result<NotificationCounts, StorageError>;

    /// Unread notifying events of the user across every room (the badge a
    /// push gateway shows).
    async fn unread_notification_total(&self, user_id: &UserId) -> Result<u64, StorageError>;

    /// Up to `limit` events that notified the user, newest first, before
    /// `before` (from the newest without it); only highlights when
    /// `only_highlights`.
    async fn notifications(
        &self,
        user_id: &UserId,
        before: Option<StreamPosition>,
        limit: usize,
        only_highlights: bool,
    ) -> Result<Vec<Notification>, StorageError>;

    /// Deletes up to `batch` rows that no count or page needs any more:
    /// those at or before their user's read receipt in the room that were
    /// evaluated before `read_before_ts`, and those past the newest
    /// `keep_per_user` of their user. Returns how many went; fewer than
    /// `batch` means none is left.
    async fn prune_push_actions(
        &self,
        read_before_ts: i64,
        keep_per_user: u32,
        batch: u32,
    ) -> Result<u64, StorageError>;

    /// The user's pushers with the time each was set, in milliseconds since
    /// the epoch (the gateway's `pushkey_ts`).
    async fn pushers_with_ts(&self, user_id: &UserId) -> Result<Vec<(String, i64)>, StorageError>;
}
