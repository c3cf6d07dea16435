//! Per-user data: account data, read receipts and presence (which sync),
//! and pushers.

use async_trait::async_trait;
use ruma::{DeviceId, OwnedRoomId, OwnedUserId, RoomId, UserId};

use super::{StorageError, StreamPosition};

/// An account data entry: global when `room_id` is `None`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountDataEntry {
    /// The room it belongs to, if any.
    pub room_id: Option<OwnedRoomId>,
    /// Its type.
    pub data_type: String,
    /// Its content, verbatim JSON.
    pub content: String,
}

/// A read receipt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// The room.
    pub room_id: OwnedRoomId,
    /// `m.read` or `m.read.private`.
    pub receipt_type: String,
    /// The reader.
    pub user_id: String,
    /// The thread, empty for the main timeline and unthreaded receipts.
    pub thread_id: String,
    /// The event read up to.
    pub event_id: String,
    /// When, in milliseconds since the epoch.
    pub ts: i64,
}

/// A user's presence as they last set it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceState {
    /// `online`, `unavailable` or `offline`.
    pub presence: String,
    /// Their status message, if any.
    pub status_msg: Option<String>,
    /// When they were last active, in milliseconds since the epoch.
    pub last_active_ts: i64,
}

/// A pusher to store: who set it, its key, and its JSON as clients read it.
#[derive(Debug, Clone, Copy)]
pub struct NewPusher<'a> {
    /// The account.
    pub user_id: &'a UserId,
    /// The device that set it; the pusher goes with the device.
    pub device_id: &'a DeviceId,
    /// The application it notifies.
    pub app_id: &'a str,
    /// The application's key for the device to notify.
    pub pushkey: &'a str,
    /// The pusher as `GET /pushers` returns it.
    pub json: &'a str,
}

/// What the account data and receipt services persist.
#[async_trait]
pub trait UserDataStore: Send + Sync {
    /// Sets an account data entry at a stream position.
    async fn set_account_data(
        &self,
        user_id: &UserId,
        room_id: Option<&RoomId>,
        data_type: &str,
        content: &str,
        position: StreamPosition,
    ) -> Result<(), StorageError>;

    /// How many account data entries (global and per room) the user has.
    async fn account_data_count(&self, user_id: &UserId) -> Result<u64, StorageError>;

    /// One account data entry's content.
    async fn account_data(
        &self,
        user_id: &UserId,
        room_id: Option<&RoomId>,
        data_type: &str,
    ) -> Result<Option<String>, StorageError>;

    /// The user's account data written in `(after, upto]`.
    async fn account_data_changes(
        &self,
        user_id: &UserId,
        after: StreamPosition,
        upto: StreamPosition,
    ) -> Result<Vec<AccountDataEntry>, StorageError>;

    /// Records a receipt at a stream position, replacing the user's previous one.
    async fn set_receipt(
        &self,
        receipt: &Receipt,
        position: StreamPosition,
    ) -> Result<(), StorageError>;

    /// The receipts of a room written in `(after, upto]`.
    async fn receipts_between(
        &self,
        room_id: &RoomId,
        after: StreamPosition,
        upto: StreamPosition,
    ) -> Result<Vec<Receipt>, StorageError>;

    /// How many counted events others sent up to `upto` after the event
    /// the user's latest read receipt (public or private) in the main
    /// timeline points at (all of them without such a receipt). One query:
    /// sync asks it for every room.
    async fn count_unread(
        &self,
        room_id: &RoomId,
        user_id: &UserId,
        upto: StreamPosition,
    ) -> Result<u64, StorageError>;

    /// Adds a pusher, or replaces the user's pusher with the same app id
    /// and pushkey; unless `append`, other users' pushers with that app id
    /// and pushkey are removed. One transaction.
    async fn set_pusher(&self, pusher: NewPusher<'_>, append: bool) -> Result<(), StorageError>;

    /// Removes the user's pusher with this app id and pushkey, if any.
    async fn delete_pusher(
        &self,
        user_id: &UserId,
        app_id: &str,
        pushkey: &str,
    ) -> Result<(), StorageError>;

    /// The user's pushers (as JSON), oldest first.
    async fn pushers(&self, user_id: &UserId) -> Result<Vec<String>, StorageError>;

    /// Records a user's presence at a stream position.
    async fn set_presence(
        &self,
        user_id: &UserId,
        state: &PresenceState,
        position: StreamPosition,
    ) -> Result<(), StorageError>;

    /// A user's presence, if they ever set it.
    async fn presence(&self, user_id: &UserId) -> Result<Option<PresenceState>, StorageError>;

    /// Presence set after `after` and at or before `upto`, latest first, at
    /// most `limit`.
    async fn presence_changes(
        &self,
        after: StreamPosition,
        upto: StreamPosition,
        limit: u32,
    ) -> Result<Vec<(OwnedUserId, PresenceState)>, StorageError>;
}
