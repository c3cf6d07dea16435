//! The write path of rooms: events are checked against the authorization
//! rules and persisted here, one room at a time.
//!
//! Each room's current state ([`RoomState`]) lives in memory (loaded on
//! first use), so the authorization checks of a new event touch no storage.
//! A per-room lock orders the events of a room. Local events queue for it
//! ([`send_queue`]): whoever holds it takes every send queued for the room,
//! builds them as one chain on the state ([`local`]), hands the chain to the
//! group-commit writer ([`event_writer`]) and keeps the lock until the chain
//! is committed. Stream positions are published in order once committed, so
//! a reader that has seen position `n` has seen every event at or below `n`
//! (spec-notes/write-path.md).
//!
//! Moving the state past an authorized event and writing it
//! ([`event_writer::PendingEvent::advance`]) is shared by every kind of
//! event; only building and vouching for an event is local.

mod dag;
mod event_writer;
mod import;
mod local;
mod remote;
mod resident;
mod send_queue;

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use ruma::{
    EventId, MilliSecondsSinceUnixEpoch, OwnedRoomId, OwnedUserId, RoomId, RoomVersionId, UInt,
};
use tracing::debug;

#[cfg(test)]
pub(crate) use self::remote::tests as remote_tests;
use self::{
    event_writer::{EventWriter, PendingEvent},
    send_queue::{RoomSlot, interested_users},
};
pub use self::{
    import::JoinedState,
    local::{LocalEvent, Transaction, transaction_key},
    remote::{Rejection, RemoteEventError, RemoteOutcome},
};
pub use super::rooms::state::{RoomState, membership};
use super::{
    ServiceError,
    committed::{CommittedEvents, CommittedFeed},
    notifier::Notifier,
    room_slots::RoomSlots,
    rooms::{pdu::Pdu, state::Head, version::RoomVersion},
    server_keys::ServerKeys,
    stream::{Kind, Stream},
};
use crate::storage::{ChainOutcome, EventStatus, Storage, StorageError, StreamPosition};

/// Tries at creating a room before giving up on finding a free id.
const MAX_CREATE_ATTEMPTS: u32 = 16;

/// How many of a user's past membership changes [`RoomEvents::last_departure`]
/// looks through (leave, ban, unban, ... after their last join).
const MAX_MEMBERSHIP_WALK: usize = 16;

/// Builds, authorizes and persists room events.
#[derive(Debug)]
pub struct RoomEvents {
    storage: Arc<dyn Storage>,
    keys: Arc<ServerKeys>,
    notifier: Arc<Notifier>,
    rooms: RoomSlots<RoomSlot>,
    /// Each known room's version, which never changes: syncs ask for it
    /// while a send holds the room's lock.
    versions: Mutex<HashMap<OwnedRoomId, RoomVersion>>,
    stream: Arc<Stream>,
    writer: EventWriter,
    committed: CommittedFeed,
    last_create_ts: AtomicU64,
}

impl RoomEvents {
    /// Builds the service and starts its event writer (on the current tokio
    /// runtime). About `cached_rooms` rooms keep their state in memory;
    /// every committed chain of sent events goes to `committed`.
    pub fn new(
        storage: Arc<dyn Storage>,
        keys: Arc<ServerKeys>,
        notifier: Arc<Notifier>,
        stream: Arc<Stream>,
        cached_rooms: usize,
        committed: CommittedFeed,
    ) -> Self {
        Self {
            writer: EventWriter::start(storage.clone()),
            storage,
            keys,
            notifier,
            rooms: RoomSlots::new(cached_rooms),
            versions: Mutex::new(HashMap::new()),
            stream,
            committed,
            last_create_ts: AtomicU64::new(0),
        }
    }

    /// The last committed stream position: every event at or below it is readable.
    pub fn current_position(&self) -> StreamPosition {
        self.stream.current()
    }

    /// Waits, at most `limit`, until push rules have been evaluated for
    /// every event at or below the published position; returns whether
    /// they have.
    pub async fn push_evaluated(&self, limit: std::time::Duration) -> bool {
        self.committed.caught_up(limit).await
    }

    /// The users joined to a room now (none for an unknown room), from its
    /// cached state.
    ///
    /// # Errors
    /// Storage failures while loading the state.
    pub async fn joined_members(&self, room_id: &RoomId) -> Result<Vec<OwnedUserId>, ServiceError> {
        Ok(self
            .read_state(room_id, |state| {
                state.members_in(&["join"]).map(ToOwned::to_owned).collect()
            })
            .await?
            .unwrap_or_default())
    }

    /// Whether anything of `kind` may have been written to the stream after
    /// `since` (see [`Stream::changed_since`]).
    pub fn changed_since(&self, kind: Kind, since: StreamPosition) -> bool {
        self.stream.changed_since(kind, since)
    }

    /// Creates a room with its `m.room.create` event and returns its id.
    ///
    /// For room versions before 12 the id is `room_id`; from 12 on it is
    /// derived from the create event and `room_id` must be `None`.
    ///
    /// # Errors
    /// `Forbidden` when the create event fails the authorization rules.
    pub async fn create_room(
        &self,
        version: RoomVersion,
        room_id: Option<OwnedRoomId>,
        create: LocalEvent,
    ) -> Result<OwnedRoomId, ServiceError> {
        let empty = RoomState::empty(version);
        // From version 12 the room id is the create event's hash: two rooms
        // created by one user in the same millisecond with the same content
        // would get one id. The later one moves its timestamp on and tries
        // again (the spec leaves the timestamp to the server).
        for _ in 0..MAX_CREATE_ATTEMPTS {
            let ts = self.next_create_ts();
            let pdu = self.build(&empty, room_id.clone(), &create, ts)?;
            let new_room_id = pdu.room_id().to_owned();
            let slot = self.slot(&new_room_id);
            let mut guard = slot.state.lock().await;
            if guard.is_some() {
                continue;
            }
            let mut state = empty.clone();
            let reservation = self.stream.reserve();
            let position = reservation.position();
            let mut pending = PendingEvent::advance(&mut state, pdu, None, position)?;
            pending.creates_room_version = Some(version.id().to_string());
            let interested = interested_users(&state, &[&pending]);
            let written = self.writer.write(vec![pending]).await;
            drop(reservation);
            match written? {
                ChainOutcome { written: 1, .. } => {
                    self.stream.published(position).await;
                    *guard = Some(state);
                    self.notifier.wake(interested.iter().map(|user| &**user));
                    return Ok(new_room_id);
                }
                ChainOutcome {
                    error: Some(StorageError::Conflict(_)),
                    ..
                } => continue,
                ChainOutcome { error, .. } => {
                    return Err(error.map_or_else(
                        || ServiceError::Internal("the create event was not written".to_owned()),
                        ServiceError::Storage,
                    ));
                }
            }
        }
        Err(ServiceError::Internal(
            "no free room id after several attempts".to_owned(),
        ))
    }

    /// Writes one event that comes outside the local send queue (from
    /// another server, or the first of a room joined through one) and,
    /// once committed, hands it to the push evaluator; the caller
    /// publishes its position.
    ///
    /// # Errors
    /// When it was not written.
    async fn write_one(&self, pending: PendingEvent) -> Result<(), ServiceError> {
        let position = pending.position;
        let is_membership = pending.membership.is_some();
        let fed = (position, pending.pdu.clone());
        let room_id = pending.pdu.room_id().to_owned();
        let written = self.writer.write(vec![pending]).await;
        if is_membership {
            self.stream.mark(Kind::Membership, position);
        }
        match written? {
            ChainOutcome { written: 1, .. } => {
                self.committed.committed(CommittedEvents {
                    room_id,
                    events: vec![fed],
                });
                Ok(())
            }
            ChainOutcome { error, .. } => Err(error.map_or_else(
                || ServiceError::Internal("the event was not written".to_owned()),
                ServiceError::Storage,
            )),
        }
    }

    /// A timestamp for a create event: the clock, but past every create
    /// timestamp this process has handed out, so no two are alike.
    fn next_create_ts(&self) -> MilliSecondsSinceUnixEpoch {
        let now = u64::from(MilliSecondsSinceUnixEpoch::now().0);
        let previous = self
            .last_create_ts
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |last| {
                Some(now.max(last + 1))
            })
            .unwrap_or(now);
        let ts = now.max(previous + 1);
        MilliSecondsSinceUnixEpoch(UInt::new_saturating(ts))
    }

    /// A copy of the room's current state, or `None` for an unknown room.
    ///
    /// # Errors
    /// Storage failures while loading it.
    pub async fn current_state(&self, room_id: &RoomId) -> Result<Option<RoomState>, ServiceError> {
        self.read_state(room_id, RoomState::clone).await
    }

    /// What `read` makes of the room's current state (without copying
    /// it), or `None` for an unknown room.
    ///
    /// # Errors
    /// Storage failures while loading it.
    pub async fn read_state<T>(
        &self,
        room_id: &RoomId,
        read: impl FnOnce(&RoomState) -> T,
    ) -> Result<Option<T>, ServiceError> {
        let slot = self.slot(room_id);
        let mut guard = slot.state.lock().await;
        match self.loaded(room_id, &mut guard).await {
            Ok(state) => Ok(Some(read(state))),
            Err(ServiceError::NotFound(_)) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// The room state right after `event_id` (for a user who has since left).
    ///
    /// # Errors
    /// `NotFound` when the event is unknown.
    pub async fn state_after(&self, event_id: &EventId) -> Result<Vec<Pdu>, ServiceError> {
        let stored = self
            .storage
            .event(event_id)
            .await?
            .ok_or_else(|| ServiceError::NotFound("no such event".to_owned()))?;
        let version = self.room_version(&stored.room_id).await?;
        let entries = self.storage.state_group_entries(stored.state_group).await?;
        let mut pdus = Vec::with_capacity(entries.len());
        for entry in entries {
            pdus.push(self.pdu(version, &entry.event_id).await?);
        }
        Ok(pdus)
    }

    /// The member event that ended `member`'s owner's last stay in the
    /// room with one of the memberships `stays` (`join`, or also `invite`):
    /// `member` itself when they had one just before it, else the same
    /// question asked of their member event before it. `None` when they
    /// never had one (a user banned before ever joining), or not within the
    /// last [`MAX_MEMBERSHIP_WALK`] changes of their membership.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn last_departure(
        &self,
        member: &Pdu,
        stays: &[&str],
    ) -> Result<Option<Pdu>, ServiceError> {
        let Some(user) = member.state_key() else {
            return Ok(None);
        };
        let version = member.room_version();
        let mut current = member.clone();
        for _ in 0..MAX_MEMBERSHIP_WALK {
            // Local rooms are a line: the state before an event is the state
            // after its one prev event.
            let Some(prev) = current.prev_events().first() else {
                return Ok(None);
            };
            let Some(stored) = self.storage.event(prev).await? else {
                return Ok(None);
            };
            let entries = self.storage.state_group_entries(stored.state_group).await?;
            let Some(entry) = entries
                .into_iter()
                .find(|e| e.event_type == "m.room.member" && e.state_key == user)
            else {
                return Ok(None);
            };
            let before = self.pdu(version, &entry.event_id).await?;
            match membership(&before).as_deref() {
                Some(stay) if stays.contains(&stay) => return Ok(Some(current)),
                Some("leave" | "ban") => current = before,
                _ => return Ok(None),
            }
        }
        Ok(None)
    }

    /// One stored event.
    ///
    /// # Errors
    /// `NotFound` when it is unknown.
    pub async fn pdu(&self, version: RoomVersion, event_id: &EventId) -> Result<Pdu, ServiceError> {
        let (event_id, json) = match self.storage.event(event_id).await? {
            Some(stored) => (stored.event_id, stored.json),
            // A room joined over federation has state from before the
            // join: outliers, outside the timeline.
            None => match self.storage.dag_event(event_id).await? {
                Some(outlier) if outlier.status == EventStatus::Outlier => {
                    (outlier.event_id, outlier.json)
                }
                _ => return Err(ServiceError::NotFound("no such event".to_owned())),
            },
        };
        Pdu::from_storage(version, event_id.clone(), json)
            .map_err(|e| ServiceError::Internal(format!("stored event {event_id} is invalid: {e}")))
    }

    /// The version of a known room.
    ///
    /// # Errors
    /// `NotFound` for an unknown room.
    pub async fn room_version(&self, room_id: &RoomId) -> Result<RoomVersion, ServiceError> {
        if let Some(version) = lock(&self.versions).get(room_id) {
            return Ok(*version);
        }
        let record = self
            .storage
            .room(room_id)
            .await?
            .ok_or_else(|| ServiceError::NotFound("no such room".to_owned()))?;
        let version = parse_version(&record.room_version)?;
        lock(&self.versions).insert(room_id.to_owned(), version);
        Ok(version)
    }

    fn slot(&self, room_id: &RoomId) -> Arc<RoomSlot> {
        self.rooms.get(room_id)
    }

    /// The room's state, loading it from storage on first use.
    async fn loaded<'a>(
        &self,
        room_id: &RoomId,
        slot: &'a mut Option<RoomState>,
    ) -> Result<&'a mut RoomState, ServiceError> {
        if slot.is_none() {
            let version = match self.room_version(room_id).await {
                Ok(version) => version,
                Err(error) => {
                    // Clients can name any room id: an unknown one must not
                    // leave an entry behind, or probing would grow the map
                    // without bound.
                    self.rooms.remove(room_id);
                    return Err(error);
                }
            };
            let head = self
                .storage
                .room_head(room_id)
                .await?
                .ok_or_else(|| ServiceError::NotFound("no such room".to_owned()))?;
            let mut events = Vec::new();
            for entry in self.storage.state_group_entries(head.state_group).await? {
                events.push(self.pdu(version, &entry.event_id).await?);
            }
            let mut extremities = Vec::new();
            for event_id in &head.forward_extremities {
                extremities.push(self.pdu(version, event_id).await?);
            }
            let head = Head {
                extremities,
                depth: head.depth,
                state_group: head.state_group,
                chain_length: head.chain_length,
            };
            let state = RoomState::with_head(version, events, head);
            debug!(%room_id, entries = state.len(), "loaded room state");
            *slot = Some(state);
        }
        slot.as_mut()
            .ok_or_else(|| ServiceError::Internal("room state vanished".to_owned()))
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned lock only means a panic elsewhere; what it guards is still whole.
    mutex.lock().unwrap_or_else(|poison| poison.into_inner())
}

/// Parses a stored or requested room version.
///
/// # Errors
/// `UnsupportedRoomVersion` for versions this server does not implement.
pub fn parse_version(version: &str) -> Result<RoomVersion, ServiceError> {
    let id = RoomVersionId::try_from(version)
        .map_err(|_| ServiceError::UnsupportedRoomVersion(version.to_owned()))?;
    RoomVersion::try_from(&id).map_err(|_| ServiceError::UnsupportedRoomVersion(version.to_owned()))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use ruma::{room_id, server_name};

    use super::*;
    use crate::{config::DatabaseLocation, storage};

    #[tokio::test]
    async fn unknown_rooms_leave_no_entry_behind() {
        let dir = tempfile::tempdir().unwrap();
        let storage = storage::open(&DatabaseLocation::Sqlite(dir.path().join("db")))
            .await
            .unwrap();
        let keys = ServerKeys::load_or_generate(storage.clone(), server_name!("x").to_owned())
            .await
            .unwrap();
        let events = RoomEvents::new(
            storage,
            Arc::new(keys),
            Arc::new(Notifier::default()),
            Arc::new(Stream::new(StreamPosition(0))),
            16,
            CommittedFeed::new().0,
        );
        for room in [room_id!("!probe1:x"), room_id!("!probe2:x")] {
            assert!(events.current_state(room).await.unwrap().is_none());
            assert!(matches!(
                events.room_version(room).await,
                Err(ServiceError::NotFound(_))
            ));
        }
        assert!(
            events.rooms.is_empty(),
            "probing unknown rooms must not grow the map"
        );
    }
}
