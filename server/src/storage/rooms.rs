//! Rooms: accepted events, state snapshots, memberships, transaction ids,
//! aliases and the public directory.

use async_trait::async_trait;
use ruma::{DeviceId, EventId, OwnedEventId, OwnedRoomId, RoomAliasId, RoomId, UserId};

use super::StorageError;

/// A position in the server-wide order of accepted events; sync tokens and
/// pagination are made of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StreamPosition(pub i64);

/// A room this server knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomRecord {
    /// Its id.
    pub room_id: OwnedRoomId,
    /// Its version, as the create event names it.
    pub room_version: String,
    /// Whether it is listed in the public room directory.
    pub is_public: bool,
}

/// One `(type, state key) -> event` entry of a room state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateEntry {
    /// The event type.
    pub event_type: String,
    /// The state key.
    pub state_key: String,
    /// The event holding that slot.
    pub event_id: OwnedEventId,
}

/// A state snapshot written with an event: the entries that changed since
/// `prev_group`, or the whole state when `prev_group` is `None`.
#[derive(Debug, Clone)]
pub struct NewStateGroup {
    /// The group the entries are a delta against.
    pub prev_group: Option<i64>,
    /// How many deltas lie between this group and a full snapshot.
    pub chain_length: i32,
    /// The changed (or all) entries.
    pub entries: Vec<StateEntry>,
}

/// An accepted event and everything that changes with it; written in one transaction.
#[derive(Debug)]
pub struct NewEvent<'a> {
    /// Its place in the stream.
    pub position: StreamPosition,
    /// Its id.
    pub event_id: &'a EventId,
    /// Its room.
    pub room_id: &'a RoomId,
    /// Set for an `m.room.create` event: the version of the room it creates.
    pub creates_room_version: Option<&'a str>,
    /// Its type.
    pub event_type: &'a str,
    /// Its state key, for state events.
    pub state_key: Option<&'a str>,
    /// Its sender.
    pub sender: &'a UserId,
    /// Its depth in the DAG.
    pub depth: i64,
    /// Its canonical JSON.
    pub json: &'a str,
    /// The state group holding the room state after it.
    pub state_group: i64,
    /// A state group to create with it (when it is a state event).
    pub new_state_group: Option<&'a NewStateGroup>,
    /// The room's forward extremities once it is accepted.
    pub forward_extremities: &'a [OwnedEventId],
    /// The room's current state after it, when that is not the state after
    /// the event itself (an event from another server that forked the DAG:
    /// the resolution of both forks): the group's id and the group to write.
    pub room_state: Option<(i64, &'a NewStateGroup)>,
    /// For an `m.room.member` event: the target and the new membership.
    pub membership: Option<(&'a UserId, &'a str)>,
    /// For the room's `m.room.join_rules` event: its rule.
    pub join_rule: Option<&'a str>,
    /// The client transaction that sent it, for idempotent retries.
    pub transaction: Option<NewTransaction<'a>>,
    /// For an applied redaction: the redacted event and its redacted JSON.
    pub redaction: Option<(&'a EventId, &'a str)>,
}

/// What became of one chain in [`RoomStore::append_event_chains`].
#[derive(Debug)]
pub struct ChainOutcome {
    /// How many of its events, from the first, were written.
    pub written: usize,
    /// Why the next event was not (the ones after it were not tried).
    pub error: Option<StorageError>,
}

impl ChainOutcome {
    /// The outcomes of `chains` all written whole.
    pub fn all_written(chains: &[Vec<NewEvent<'_>>]) -> Vec<Self> {
        chains
            .iter()
            .map(|chain| Self {
                written: chain.len(),
                error: None,
            })
            .collect()
    }
}

/// A client transaction that produced an event.
#[derive(Debug, Clone, Copy)]
pub struct NewTransaction<'a> {
    /// The sender.
    pub user_id: &'a UserId,
    /// The sending device.
    pub device_id: &'a DeviceId,
    /// The transaction id scoped to its endpoint path: what retries match on.
    pub key: &'a str,
    /// The client's transaction id as sent, echoed to the sending device.
    pub txn_id: &'a str,
}

/// A user's membership in a room as of some stream position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    /// The room.
    pub room_id: OwnedRoomId,
    /// `join`, `invite`, `leave`, `ban` or `knock`.
    pub membership: String,
    /// The membership event.
    pub event_id: OwnedEventId,
    /// Where that event is in the stream.
    pub position: StreamPosition,
}

/// An event as stored.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    /// Its place in the stream.
    pub position: StreamPosition,
    /// Its id.
    pub event_id: OwnedEventId,
    /// Its room.
    pub room_id: OwnedRoomId,
    /// Its canonical JSON as served.
    pub json: String,
    /// The state group of the room's state after it (after a fork, the
    /// resolution of the forks rather than the state after the event alone).
    pub state_group: i64,
}

/// An event from another server kept for the room's DAG but withheld
/// from clients: it gets no stream position.
#[derive(Debug)]
pub struct WithheldEvent<'a> {
    /// Its id.
    pub event_id: &'a EventId,
    /// Its room.
    pub room_id: &'a RoomId,
    /// Rejected (it fails the authorization rules), or else soft-failed
    /// (allowed where it was sent, not by the room's current state).
    pub is_rejected: bool,
    /// Its depth in the DAG.
    pub depth: i64,
    /// Its canonical JSON.
    pub json: &'a str,
    /// The state after a soft-failed event; the state before a rejected one.
    pub state_group: i64,
    /// A state group to create with it.
    pub new_state_group: Option<&'a NewStateGroup>,
}

/// How this server took an event it stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventStatus {
    /// In the room's timeline, at a stream position.
    Accepted,
    /// Kept for the DAG, withheld from clients: allowed by the state before
    /// it but not by the room's state when it arrived.
    SoftFailed,
    /// Kept only to be recognised again: it fails the authorization rules.
    Rejected,
    /// Known outside the timeline: the state and auth chain a join over
    /// federation brought. Its `state_group` is the state before that join.
    Outlier,
}

/// Any event of a room's DAG this server stores, whatever its status.
#[derive(Debug, Clone)]
pub struct DagEvent {
    /// Its id.
    pub event_id: OwnedEventId,
    /// Its room.
    pub room_id: OwnedRoomId,
    /// Its canonical JSON.
    pub json: String,
    /// The state after it (before it, for a rejected event).
    pub state_group: i64,
    /// How it was taken.
    pub status: EventStatus,
}

/// Where a room's DAG ends.
#[derive(Debug, Clone)]
pub struct RoomHead {
    /// The events with no successor.
    pub forward_extremities: Vec<OwnedEventId>,
    /// The greatest depth in the room.
    pub depth: i64,
    /// The state group of the room's current state.
    pub state_group: i64,
    /// That group's delta chain length.
    pub chain_length: i32,
}

/// What the room services persist.
#[async_trait]
pub trait RoomStore: Send + Sync {
    /// Persists chains of accepted events, each with its consequences, in
    /// one transaction (one commit: what group commit saves). A chain is one
    /// room's events in order, each built on the one before it: a chain stops
    /// at its first event that fails (that event is undone, the ones after it
    /// are not tried), and the other chains still commit. An event fails with
    /// [`StorageError::Conflict`] if its id or transaction is known, or the
    /// room it creates exists.
    ///
    /// # Errors
    /// When the transaction as a whole fails: then nothing is written.
    async fn append_event_chains(
        &self,
        chains: &[Vec<NewEvent<'_>>],
    ) -> Result<Vec<ChainOutcome>, StorageError>;

    /// Keeps a soft-failed or rejected event (and its state group).
    ///
    /// # Errors
    /// [`StorageError::Conflict`] if an event with its id is stored.
    async fn withhold_event(&self, event: &WithheldEvent<'_>) -> Result<(), StorageError>;

    /// Any stored event of a room's DAG by id, withheld ones included
    /// (never for clients: [`RoomStore::event`] serves those).
    async fn dag_event(&self, event_id: &EventId) -> Result<Option<DagEvent>, StorageError>;

    /// The room, if this server knows it.
    async fn room(&self, room_id: &RoomId) -> Result<Option<RoomRecord>, StorageError>;

    /// One event by id.
    async fn event(&self, event_id: &EventId) -> Result<Option<StoredEvent>, StorageError>;

    /// The full state of a group, following its delta chain.
    async fn state_group_entries(&self, state_group: i64) -> Result<Vec<StateEntry>, StorageError>;

    /// Where the room's DAG ends; `None` for an unknown room.
    async fn room_head(&self, room_id: &RoomId) -> Result<Option<RoomHead>, StorageError>;

    /// The greatest stream position in use (0 when there are no events).
    async fn max_stream_position(&self) -> Result<StreamPosition, StorageError>;

    /// The event a client transaction produced, if it was sent before.
    async fn transaction_event(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
        txn_key: &str,
    ) -> Result<Option<OwnedEventId>, StorageError>;

    /// The user's latest membership in each room (not forgotten), as of
    /// `at` (or now).
    async fn memberships_of(
        &self,
        user_id: &UserId,
        at: Option<StreamPosition>,
    ) -> Result<Vec<Membership>, StorageError>;

    /// Hides a room the user has left from their membership lists.
    async fn forget_room(&self, user_id: &UserId, room_id: &RoomId) -> Result<(), StorageError>;

    /// A room's events in `(after, upto]`, the newest `limit` of them when
    /// `newest_first`, else the oldest; in the order asked for.
    async fn room_events(
        &self,
        room_id: &RoomId,
        after: StreamPosition,
        upto: StreamPosition,
        limit: u32,
        newest_first: bool,
    ) -> Result<Vec<StoredEvent>, StorageError>;

    /// For each room, what `room_events(room, 0, upto, limit, true)`
    /// answers (its newest `limit` events up to `upto`), in one query; in
    /// no particular order.
    async fn latest_room_events(
        &self,
        room_ids: &[OwnedRoomId],
        upto: StreamPosition,
        limit: u32,
    ) -> Result<Vec<StoredEvent>, StorageError>;

    /// The rooms with events in `(after, upto]`.
    async fn rooms_with_events(
        &self,
        after: StreamPosition,
        upto: StreamPosition,
    ) -> Result<Vec<OwnedRoomId>, StorageError>;

    /// The state events of a room in `(after, before)`, oldest first.
    async fn state_events_between(
        &self,
        room_id: &RoomId,
        after: StreamPosition,
        before: StreamPosition,
    ) -> Result<Vec<StoredEvent>, StorageError>;

    /// The state group after the room's last event before `position`
    /// (before the first event of a room joined over federation: the state
    /// before that join).
    async fn state_group_before(
        &self,
        room_id: &RoomId,
        position: StreamPosition,
    ) -> Result<Option<i64>, StorageError>;

    /// One slot of a state group, following its delta chain.
    async fn state_group_entry(
        &self,
        state_group: i64,
        event_type: &str,
        state_key: &str,
    ) -> Result<Option<OwnedEventId>, StorageError>;

    /// The transaction ids a device sent these events with.
    async fn transaction_ids(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
        event_ids: &[OwnedEventId],
    ) -> Result<Vec<(OwnedEventId, String)>, StorageError>;

    /// Stores a sync filter and returns its id.
    async fn create_filter(&self, user_id: &UserId, json: &str) -> Result<i64, StorageError>;

    /// The id of a stored filter with exactly this JSON, if any.
    async fn filter_id_for(
        &self,
        user_id: &UserId,
        json: &str,
    ) -> Result<Option<i64>, StorageError>;

    /// How many filters a user has stored.
    async fn filter_count(&self, user_id: &UserId) -> Result<u64, StorageError>;

    /// A stored sync filter.
    async fn filter(
        &self,
        user_id: &UserId,
        filter_id: i64,
    ) -> Result<Option<String>, StorageError>;

    /// Points an alias at a room.
    ///
    /// # Errors
    /// [`StorageError::Conflict`] when the alias is taken.
    async fn create_alias(
        &self,
        alias: &RoomAliasId,
        room_id: &RoomId,
        creator: &UserId,
    ) -> Result<(), StorageError>;

    /// The room an alias points at, and who created the alias.
    async fn alias(
        &self,
        alias: &RoomAliasId,
    ) -> Result<Option<(OwnedRoomId, String)>, StorageError>;

    /// Removes an alias.
    ///
    /// # Errors
    /// [`StorageError::NotFound`] for an unknown alias.
    async fn delete_alias(&self, alias: &RoomAliasId) -> Result<(), StorageError>;

    /// Every alias of a room.
    async fn room_aliases(&self, room_id: &RoomId) -> Result<Vec<String>, StorageError>;

    /// Lists or unlists a room in the public directory.
    async fn set_room_public(&self, room_id: &RoomId, is_public: bool) -> Result<(), StorageError>;

    /// The rooms in the public directory.
    async fn public_rooms(&self) -> Result<Vec<OwnedRoomId>, StorageError>;
}
