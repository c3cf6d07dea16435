//! What the outbound federation sender persists: each destination's
//! cursor in the stream of local events, the EDUs waiting for it, and how
//! far local events were looked through for destinations
//! (spec-notes/federation-sender.md).

use async_trait::async_trait;
use ruma::{OwnedRoomId, OwnedServerName, OwnedUserId, ServerName, UserId};

use super::{StorageError, StreamPosition};

/// An accepted event as the sender reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingEvent {
    /// Its place in the stream.
    pub position: StreamPosition,
    /// Its room.
    pub room_id: OwnedRoomId,
    /// Who sent it.
    pub sender: OwnedUserId,
    /// Its type.
    pub event_type: String,
    /// Its state key, for a state event.
    pub state_key: Option<String>,
    /// Its PDU JSON, as stored.
    pub json: String,
}

/// An EDU waiting for its destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundEdu {
    /// Its place in the destination's queue.
    pub id: i64,
    /// The EDU's JSON text.
    pub json: String,
}

/// The outbound federation sender's storage.
#[async_trait]
pub trait OutboundStore: Send + Sync {
    /// Every destination with a cursor or waiting EDUs, with its cursor.
    async fn outbound_destinations(
        &self,
    ) -> Result<Vec<(OwnedServerName, Option<StreamPosition>)>, StorageError>;

    /// The position of the last local event `destination` is done with;
    /// `None` until a local event first concerned it.
    async fn outbound_cursor(
        &self,
        destination: &ServerName,
    ) -> Result<Option<StreamPosition>, StorageError>;

    /// How far local events were looked through for destinations.
    async fn outbound_scan_position(&self) -> Result<Option<StreamPosition>, StorageError>;

    /// In one transaction: gives each of `new_destinations` its cursor
    /// (leaving destinations that have one as they are), and records that
    /// events up to `scanned` were looked through.
    async fn record_outbound_scan(
        &self,
        new_destinations: &[(OwnedServerName, StreamPosition)],
        scanned: StreamPosition,
    ) -> Result<(), StorageError>;

    /// The accepted events in `(after, upto]` whose sender is probably of
    /// `server_name`, and every membership event, oldest first, at most
    /// `limit`. The sender is matched by its suffix: the caller checks each
    /// sender's server exactly.
    async fn events_to_send(
        &self,
        server_name: &ServerName,
        after: StreamPosition,
        upto: StreamPosition,
        limit: u32,
    ) -> Result<Vec<OutgoingEvent>, StorageError>;

    /// Queues EDUs, each for its destination, in one transaction; an EDU
    /// for a destination that has `max_per_destination` waiting is not
    /// queued. Returns the destinations that were full.
    async fn queue_outbound_edus(
        &self,
        edus: &[(OwnedServerName, String)],
        max_per_destination: u64,
    ) -> Result<Vec<OwnedServerName>, StorageError>;

    /// The oldest EDUs waiting for `destination`, at most `limit`.
    async fn outbound_edus(
        &self,
        destination: &ServerName,
        limit: u32,
    ) -> Result<Vec<OutboundEdu>, StorageError>;

    /// The position of `user_id`'s last public device-list change before
    /// `position`: the `prev_id` of the `m.device_list_update` made at
    /// `position`.
    async fn device_list_change_before(
        &self,
        user_id: &UserId,
        position: StreamPosition,
    ) -> Result<Option<StreamPosition>, StorageError>;

    /// `destination` acknowledged a transaction, in one transaction: its
    /// cursor moves to `cursor` (when given) and its EDUs up to `edus_upto`
    /// are deleted (when given).
    async fn acknowledge_outbound(
        &self,
        destination: &ServerName,
        cursor: Option<StreamPosition>,
        edus_upto: Option<i64>,
    ) -> Result<(), StorageError>;
}
