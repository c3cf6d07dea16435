//! Rooms shared with other servers: the outliers a join brings, and the
//! membership events of local users in rooms this server does not hold
//! (spec-notes/federation.md, "Joins, invites, leaves").

use async_trait::async_trait;
use ruma::{EventId, OwnedEventId, RoomId, UserId};

use super::{NewStateGroup, StorageError, StreamPosition};

/// An event known outside a room's timeline (from a `send_join` answer).
#[derive(Debug)]
pub struct Outlier<'a> {
    /// Its id.
    pub event_id: &'a EventId,
    /// Its depth in the DAG.
    pub depth: i64,
    /// Its canonical JSON.
    pub json: &'a str,
}

/// What a join over federation brings before its own event: the state
/// before the join and its auth chain, as outliers, and that state as a
/// group; written in one transaction.
#[derive(Debug)]
pub struct ImportedState<'a> {
    /// The room.
    pub room_id: &'a RoomId,
    /// The state and auth chain events (those already stored are skipped).
    pub outliers: &'a [Outlier<'a>],
    /// The id of the group holding the state before the join.
    pub state_group: i64,
    /// That group (a snapshot).
    pub group: &'a NewStateGroup,
    /// The memberships of that state (the joining user's aside), recorded
    /// at `position`, the join's: who shares the room is then known as
    /// soon as the join is.
    pub memberships: &'a [(&'a UserId, &'a str, &'a EventId)],
    /// The join's stream position.
    pub position: StreamPosition,
}

/// A local user's membership event in a room this server does not hold:
/// an invite from another server, or the leave that rejected it.
#[derive(Debug)]
pub struct OutOfRoomMembership<'a> {
    /// Where the membership change is in the stream.
    pub position: StreamPosition,
    /// The event's id.
    pub event_id: &'a EventId,
    /// The room.
    pub room_id: &'a RoomId,
    /// The local user.
    pub user_id: &'a UserId,
    /// `invite` or `leave`.
    pub membership: &'a str,
    /// The room's version.
    pub room_version: &'a str,
    /// The event's canonical JSON.
    pub json: &'a str,
    /// The stripped state that came with an invite, a JSON array.
    pub stripped_state: &'a str,
}

/// A stored [`OutOfRoomMembership`].
#[derive(Debug, Clone)]
pub struct StoredOutOfRoomMembership {
    /// The event's id.
    pub event_id: OwnedEventId,
    /// The room's version.
    pub room_version: String,
    /// The event's canonical JSON.
    pub json: String,
    /// The stripped state, a JSON array.
    pub stripped_state: String,
}

/// What joins, invites and leaves over federation persist.
#[async_trait]
pub trait RemoteRoomStore: Send + Sync {
    /// Writes the outliers, state group and memberships of a join over
    /// federation, in one transaction; the group is the room's state
    /// before its first event from then on.
    async fn store_imported_state(&self, state: &ImportedState<'_>) -> Result<(), StorageError>;

    /// Records a membership event of a room this server does not hold,
    /// with the membership change, in one transaction.
    ///
    /// # Errors
    /// [`StorageError::Conflict`] when the event is stored already.
    async fn store_out_of_room_membership(
        &self,
        membership: &OutOfRoomMembership<'_>,
    ) -> Result<(), StorageError>;

    /// A stored out-of-room membership event.
    async fn out_of_room_membership(
        &self,
        event_id: &EventId,
    ) -> Result<Option<StoredOutOfRoomMembership>, StorageError>;
}
