//! The write path of rooms: local events are built, signed, checked against
//! the authorization rules and persisted here, one room at a time.
//!
//! Each room's current state lives in memory (loaded on first use), so the
//! authorization checks of a new event touch no storage. A per-room lock
//! orders the events of a room: whoever holds it takes every send queued for
//! the room, builds them as one chain on the state, hands the chain to the
//! group-commit writer and keeps the lock until the chain is committed.
//! Stream positions are published in order once committed, so a reader that
//! has seen position `n` has seen every event at or below `n`
//! (spec-notes/write-path.md).

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use myelin_crypto::{NewPdu, V1EventIds, build_pdu};
use rand::{Rng, distributions::Alphanumeric};
use ruma::{
    CanonicalJsonObject, EventId, MilliSecondsSinceUnixEpoch, OwnedDeviceId, OwnedEventId,
    OwnedRoomId, OwnedUserId, RoomId, RoomVersionId, UInt, UserId,
    events::{StateEventType, TimelineEventType, room::power_levels::UserPowerLevel},
};
use serde::Deserialize;
use tokio::sync::oneshot;
use tracing::debug;

use super::{
    ServiceError,
    committed::{CommittedEvents, CommittedFeed},
    event_writer::{EventWriter, PendingEvent},
    notifier::Notifier,
    room_slots::RoomSlots,
    rooms::{
        auth::{
            auth_events_for, check_auth, is_redaction_allowed, redact_power_level, user_power_level,
        },
        e2e_policy::{self, PolicyError},
        local_rules::{self, LocalRuleError, Requirement},
        pdu::{Pdu, PduError},
        version::RoomVersion,
    },
    server_keys::ServerKeys,
    stream::{Kind, Reservation, Stream},
};
use crate::storage::{
    ChainOutcome, NewStateGroup, StateEntry, Storage, StorageError, StreamPosition,
};

/// Tries at creating a room before giving up on finding a free id.
const MAX_CREATE_ATTEMPTS: u32 = 16;

/// How many of a user's past membership changes [`RoomEvents::last_departure`]
/// looks through (leave, ban, unban, ... after their last join).
const MAX_MEMBERSHIP_WALK: usize = 16;

/// The shortest delta chain after which a state group is written as a full
/// snapshot (see [`max_delta_chain`]).
const MIN_STATE_DELTA_CHAIN: usize = 64;

/// An event a local user asks to add to a room.
#[derive(Debug, Clone)]
pub struct LocalEvent {
    /// Who sends it.
    pub sender: OwnedUserId,
    /// Its type.
    pub event_type: TimelineEventType,
    /// Its state key, for state events.
    pub state_key: Option<String>,
    /// Its content, exactly as the client wrote it (opaque to the server
    /// except where the authorization rules or redaction read it).
    pub content: CanonicalJsonObject,
    /// For `m.room.redaction`: the event to redact.
    pub redacts: Option<OwnedEventId>,
    /// The client transaction that sends it, for idempotent retries.
    pub transaction: Option<Transaction>,
}

/// A client transaction: the spec scopes its id to the device and the
/// request path.
#[derive(Debug, Clone)]
pub struct Transaction {
    /// The sending device.
    pub device_id: OwnedDeviceId,
    /// The id scoped to its endpoint (see [`transaction_key`]).
    pub key: String,
    /// The id as the client sent it.
    pub txn_id: String,
}

/// A room's state as of its latest event.
#[derive(Debug, Clone)]
pub struct RoomState {
    /// The room version.
    pub version: RoomVersion,
    /// `(type, state key)` to the event holding it; changed only through
    /// [`RoomState::put`], which keeps `members` in step.
    pub state: HashMap<(StateEventType, String), Pdu>,
    /// Each member's membership by user id, sorted: what sends (who to
    /// wake), syncs (counts and heroes) and receipts ask of a room at every
    /// turn, without parsing every member event each time.
    members: BTreeMap<String, String>,
    /// The forward extremities: whole events, since room versions 1 and 2
    /// cite them with their reference hashes.
    extremities: Vec<Pdu>,
    depth: i64,
    state_group: i64,
    chain_length: i32,
}

impl RoomState {
    /// The state event in one slot.
    pub fn get(&self, event_type: &StateEventType, state_key: &str) -> Option<&Pdu> {
        self.state.get(&(event_type.clone(), state_key.to_owned()))
    }

    /// A user's membership (`join`, `invite`, `leave`, `ban`, `knock`), if any.
    pub fn membership_of(&self, user_id: &str) -> Option<&str> {
        self.members.get(user_id).map(String::as_str)
    }

    /// Whether `m.room.history_visibility` is `world_readable`.
    pub fn is_world_readable(&self) -> bool {
        #[derive(Deserialize)]
        struct Visibility {
            history_visibility: String,
        }
        self.get(&StateEventType::RoomHistoryVisibility, "")
            .and_then(|pdu| serde_json::from_str::<Visibility>(pdu.content().get()).ok())
            .is_some_and(|v| v.history_visibility == "world_readable")
    }

    /// Every user with a membership event and that membership, by user id.
    pub fn members(&self) -> impl Iterator<Item = (&str, &str)> {
        self.members
            .iter()
            .map(|(user, membership)| (user.as_str(), membership.as_str()))
    }

    /// The users whose membership is one of `memberships`, by user id.
    pub fn members_in<'a>(
        &'a self,
        memberships: &'a [&str],
    ) -> impl Iterator<Item = &'a UserId> + 'a {
        self.members()
            .filter(|(_, membership)| memberships.contains(membership))
            .filter_map(|(user, _)| <&UserId>::try_from(user).ok())
    }

    /// A state whose slots hold `events`.
    fn new(version: RoomVersion, events: impl IntoIterator<Item = Pdu>) -> Self {
        let mut state = Self {
            version,
            state: HashMap::new(),
            members: BTreeMap::new(),
            extremities: Vec::new(),
            depth: 0,
            state_group: 0,
            chain_length: 0,
        };
        for pdu in events {
            state.put(pdu);
        }
        state
    }

    /// Puts a state event in its slot.
    fn put(&mut self, pdu: Pdu) {
        let Some(key) = pdu.state_map_key() else {
            return;
        };
        if key.0 == StateEventType::RoomMember {
            match membership(&pdu) {
                Some(membership) => self.members.insert(key.1.clone(), membership),
                None => self.members.remove(&key.1),
            };
        }
        self.state.insert(key, pdu);
    }

    fn event_by_id(&self, event_id: &EventId) -> Option<Pdu> {
        self.state
            .values()
            .find(|pdu| pdu.event_id() == event_id)
            .cloned()
    }
}

/// A room's current state (loaded on first use) behind the lock that
/// orders its events, and the sends waiting for that lock.
#[derive(Debug, Default)]
struct RoomSlot {
    state: tokio::sync::Mutex<Option<RoomState>>,
    queue: Mutex<Vec<QueuedSend>>,
}

/// A send waiting for its room's lock.
#[derive(Debug)]
struct QueuedSend {
    event: LocalEvent,
    answer: oneshot::Sender<Result<OwnedEventId, ServiceError>>,
}

/// What became of one queued send while its chain was built.
enum Prepared {
    /// Built and authorized; waits in the chain.
    New(Box<PendingEvent>, Reservation),
    /// A retry of a transaction already in this chain, or a state event
    /// the chain already holds, at this index.
    InChain(usize),
    /// A state event identical to the committed current one: answered
    /// with that event, and nothing is written.
    Unchanged(OwnedEventId),
}

/// A chain entry: the events' ids (kept for the answers) and who waits for it.
struct Link {
    event_id: OwnedEventId,
    position: StreamPosition,
    senders: Vec<QueuedSend>,
}

/// Builds, authorizes and persists local events.
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
        let empty = RoomState::new(version, []);
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
            let mut pending = advance(&mut state, pdu, &create, None, position)?;
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

    /// Adds a local event to an existing room and returns its id. A retried
    /// transaction returns the event the first attempt created.
    ///
    /// # Errors
    /// `NotFound` for an unknown room; `Forbidden` when the event fails the
    /// authorization rules or redacts what the sender may not.
    pub async fn send(
        self: &Arc<Self>,
        room_id: &RoomId,
        event: LocalEvent,
    ) -> Result<OwnedEventId, ServiceError> {
        // A retried transaction is not looked up first (a query on every
        // send for a rare case): if its first attempt was committed, the
        // retry fails on the transaction's uniqueness, or on the rules if the
        // room changed since, and is answered with the stored event then.
        let slot = self.slot(room_id);
        let (answer, sent) = oneshot::channel();
        lock(&slot.queue).push(QueuedSend { event, answer });
        // The work runs in a task of its own: the chain it builds may carry
        // other clients' events, which a client hanging up must not abandon.
        tokio::spawn(self.clone().send_queued(room_id.to_owned(), slot));
        sent.await
            .map_err(|_| ServiceError::Internal("the send was abandoned".to_owned()))?
    }

    /// Takes the room's lock and sends whatever is queued for the room as
    /// one chain. Every queued send has such a task, so nothing waits
    /// unseen; a task that finds the queue empty was beaten to it.
    async fn send_queued(self: Arc<Self>, room_id: OwnedRoomId, slot: Arc<RoomSlot>) {
        let mut guard = slot.state.lock().await;
        let mut queued = std::mem::take(&mut *lock(&slot.queue));
        // Each round settles at least one send, so the retries run out.
        while !queued.is_empty() {
            queued = self.send_chain(&room_id, &mut guard, queued).await;
        }
    }

    /// Builds the queued sends on the room's state, one after the other,
    /// and writes them in one commit. Answers every send, except those
    /// built on an event that failed to be written: those are returned, to
    /// be built again on the state as stored.
    async fn send_chain(
        &self,
        room_id: &RoomId,
        guard: &mut Option<RoomState>,
        queued: Vec<QueuedSend>,
    ) -> Vec<QueuedSend> {
        let state = match self.loaded(room_id, guard).await {
            Ok(state) => state,
            // Local users write only to rooms they are in; an unknown room is
            // one nobody is in, answered alike so it reveals nothing.
            Err(ServiceError::NotFound(_)) => {
                for send in queued {
                    let _ = send.answer.send(Err(ServiceError::not_in_room()));
                }
                return Vec::new();
            }
            Err(error) => {
                for send in queued {
                    let _ = send.answer.send(Err(error_for_each(&error)));
                }
                return Vec::new();
            }
        };
        let mut chain = Vec::new();
        let mut links: Vec<Link> = Vec::new();
        let mut reservations = Vec::new();
        for send in queued {
            match self.prepare(room_id, state, &send.event, &chain).await {
                Ok(Prepared::New(pending, reservation)) => {
                    links.push(Link {
                        event_id: pending.pdu.event_id().to_owned(),
                        position: pending.position,
                        senders: vec![send],
                    });
                    chain.push(*pending);
                    reservations.push(reservation);
                }
                Ok(Prepared::InChain(index)) => links[index].senders.push(send),
                Ok(Prepared::Unchanged(event_id)) => {
                    let _ = send.answer.send(Ok(event_id));
                }
                Err(error) => {
                    let answer = match self.previous_transaction(&send.event).await {
                        Ok(Some(existing)) => Ok(existing),
                        _ => Err(error),
                    };
                    let _ = send.answer.send(answer);
                }
            }
        }
        if chain.is_empty() {
            return Vec::new();
        }
        let interested = interested_users(state, &chain.iter().collect::<Vec<_>>());
        let last_membership = chain
            .iter()
            .filter(|pending| pending.membership.is_some())
            .map(|pending| pending.position)
            .max();
        // Kept for the feed (a `Pdu` is a shared pointer, so this is cheap).
        let pdus: Vec<_> = chain
            .iter()
            .map(|pending| (pending.position, pending.pdu.clone()))
            .collect();
        let written = self.writer.write(chain).await;
        if let Some(position) = last_membership {
            self.stream.mark(Kind::Membership, position);
        }
        // What was committed goes to the push evaluator before its positions
        // are released, so a sync that reads them can wait for their
        // evaluation (spec-notes/push.md).
        if let Ok(ChainOutcome { written, .. }) = &written
            && *written > 0
        {
            self.committed.committed(CommittedEvents {
                room_id: room_id.to_owned(),
                events: pdus.into_iter().take(*written).collect(),
            });
        }
        // Released on every path: a position left reserved would hold back
        // every later one.
        drop(reservations);
        let ChainOutcome { written, error } = match written {
            Ok(outcome) => outcome,
            Err(error) => {
                // The state moved past events that were not written.
                *guard = None;
                for send in links.into_iter().flat_map(|link| link.senders) {
                    let _ = send.answer.send(Err(error_for_each(&error)));
                }
                return Vec::new();
            }
        };
        let mut links = links.into_iter();
        let committed: Vec<Link> = links.by_ref().take(written).collect();
        let mut retry = Vec::new();
        if let Some(error) = error {
            *guard = None;
            if let Some(failed) = links.next() {
                let answer = self.answer_for_failed(&failed, error).await;
                let mut senders = failed.senders.into_iter();
                let first = senders.next();
                for send in senders {
                    let _ = send
                        .answer
                        .send(answer.as_ref().cloned().map_err(error_for_each));
                }
                if let Some(first) = first {
                    let _ = first.answer.send(answer);
                }
            }
            retry = links.flat_map(|link| link.senders).collect();
        }
        if let Some(last) = committed.last() {
            self.stream.published(last.position).await;
            self.notifier.wake(interested.iter().map(|user| &**user));
        }
        for link in committed {
            for send in link.senders {
                let _ = send.answer.send(Ok(link.event_id.clone()));
            }
        }
        retry
    }

    /// The answer to the sends of an event that failed to be written: the
    /// first attempt's event when it was a retry of a committed
    /// transaction, else the failure.
    async fn answer_for_failed(
        &self,
        failed: &Link,
        error: StorageError,
    ) -> Result<OwnedEventId, ServiceError> {
        if matches!(error, StorageError::Conflict("transaction id"))
            && let Some(send) = failed.senders.first()
            && let Some(existing) = self.previous_transaction(&send.event).await?
        {
            return Ok(existing);
        }
        Err(ServiceError::Storage(error))
    }

    /// Builds one queued send on `state` (which already holds the chain
    /// before it) and moves `state` past it.
    async fn prepare(
        &self,
        room_id: &RoomId,
        state: &mut RoomState,
        event: &LocalEvent,
        chain: &[PendingEvent],
    ) -> Result<Prepared, ServiceError> {
        if let Some(transaction) = &event.transaction {
            let same = |pending: &PendingEvent| {
                *pending.pdu.sender() == *event.sender
                    && pending.transaction.as_ref().is_some_and(|t| {
                        t.device_id == transaction.device_id && t.key == transaction.key
                    })
            };
            if let Some(index) = chain.iter().position(same) {
                return Ok(Prepared::InChain(index));
            }
            // A retry that passed the check in `send` while the first
            // attempt was being committed in an earlier chain fails on the
            // transaction's uniqueness; `send_chain` answers it then.
        }
        local_rules::check_shape(&event.event_type, event.state_key.as_deref())
            .map_err(local_rule_error)?;
        if !local_rules::may_act_in(
            state.membership_of(event.sender.as_str()),
            &event.sender,
            &event.event_type,
            event.state_key.as_deref(),
            &event.content,
        ) {
            return Err(ServiceError::not_in_room());
        }
        if let Some(current) = unchanged_state(state, event) {
            return Ok(
                match chain.iter().position(|p| p.pdu.event_id() == current) {
                    Some(index) => Prepared::InChain(index),
                    None => Prepared::Unchanged(current.to_owned()),
                },
            );
        }
        let pdu = self.build(
            state,
            Some(room_id.to_owned()),
            event,
            MilliSecondsSinceUnixEpoch::now(),
        )?;
        // Every rule is decided on the event about to be written, whichever
        // route asked for it.
        self.check_local_rules(state, &pdu).await?;
        check_e2e_policy(state, &pdu)?;
        let redaction = match pdu.redacts() {
            Some(target) if *pdu.kind() == TimelineEventType::RoomRedaction => {
                Some(self.redaction_of(state, &pdu, target).await?)
            }
            _ => None,
        };
        let reservation = self.stream.reserve();
        let pending = advance(state, pdu, event, redaction, reservation.position())?;
        Ok(Prepared::New(Box::new(pending), reservation))
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
        let stored = self
            .storage
            .event(event_id)
            .await?
            .ok_or_else(|| ServiceError::NotFound("no such event".to_owned()))?;
        Pdu::from_storage(version, stored.event_id, stored.json)
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

    async fn previous_transaction(
        &self,
        event: &LocalEvent,
    ) -> Result<Option<OwnedEventId>, ServiceError> {
        let Some(transaction) = &event.transaction else {
            return Ok(None);
        };
        Ok(self
            .storage
            .transaction_event(&event.sender, &transaction.device_id, &transaction.key)
            .await?)
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
            let state = RoomState {
                extremities,
                depth: head.depth,
                state_group: head.state_group,
                chain_length: head.chain_length,
                ..RoomState::new(version, events)
            };
            debug!(%room_id, entries = state.state.len(), "loaded room state");
            *slot = Some(state);
        }
        slot.as_mut()
            .ok_or_else(|| ServiceError::Internal("room state vanished".to_owned()))
    }

    /// Builds and signs the event on top of `state`, then checks it.
    fn build(
        &self,
        state: &RoomState,
        room_id: Option<OwnedRoomId>,
        event: &LocalEvent,
        origin_server_ts: MilliSecondsSinceUnixEpoch,
    ) -> Result<Pdu, ServiceError> {
        let version = state.version;
        let depth = UInt::try_from(state.depth + 1)
            .map_err(|_| ServiceError::Internal("room depth overflow".to_owned()))?;
        let mut new = NewPdu {
            room_id,
            sender: event.sender.clone(),
            event_type: event.event_type.clone(),
            state_key: event.state_key.clone(),
            content: event.content.clone(),
            prev_events: state
                .extremities
                .iter()
                .map(|pdu| pdu.event_id().to_owned())
                .collect(),
            auth_events: Vec::new(),
            depth,
            origin_server_ts,
            redacts: event.redacts.clone(),
            v1_ids: None,
        };
        new.auth_events = auth_events_for(version, &new, |kind, key| {
            state.get(kind, key).map(|pdu| pdu.event_id().to_owned())
        })
        .map_err(|e| ServiceError::Forbidden(e.to_string()))?;
        if version.has_origin_chosen_event_ids() {
            new.v1_ids = Some(self.v1_ids(state, &new)?);
        }
        let signed = build_pdu(
            new,
            self.keys.server_name(),
            self.keys.current(),
            &version.id(),
        )
        .map_err(|e| match e {
            myelin_crypto::EventError::TooLarge => ServiceError::EventTooLarge,
            other => ServiceError::InvalidParam(format!("cannot build the event: {other}")),
        })?;
        let pdu = Pdu::from_signed(version, signed).map_err(|e| match e {
            PduError::TooLarge { .. } => ServiceError::EventTooLarge,
            other => ServiceError::InvalidParam(format!("invalid event: {other}")),
        })?;
        check_auth(
            version,
            &pdu,
            |id| state.event_by_id(id),
            |kind, key| state.get(kind, key).cloned(),
        )
        .map_err(|e| ServiceError::Forbidden(e.to_string()))?;
        Ok(pdu)
    }

    /// For room versions 1 and 2: a fresh `$opaque:server` id for `new`, and
    /// the reference hash of each event it cites (extremities and auth
    /// events, all in memory).
    fn v1_ids(&self, state: &RoomState, new: &NewPdu) -> Result<V1EventIds, ServiceError> {
        let opaque: String = rand::thread_rng()
            .sample_iter(&Alphanumeric)
            .take(24)
            .map(char::from)
            .collect();
        let event_id = OwnedEventId::try_from(format!("${opaque}:{}", self.keys.server_name()))
            .map_err(|e| ServiceError::Internal(format!("generated event id is invalid: {e}")))?;
        let room_version = state.version.id();
        let mut reference_hashes = HashMap::new();
        let cited = state.extremities.iter().cloned().chain(
            new.auth_events
                .iter()
                .filter_map(|id| state.event_by_id(id)),
        );
        for pdu in cited {
            let hash = myelin_crypto::reference_hash(&room_version, pdu.as_object())
                .map_err(|e| ServiceError::Internal(format!("cannot hash a cited event: {e}")))?;
            reference_hashes.insert(pdu.event_id().to_owned(), hash);
        }
        Ok(V1EventIds {
            event_id,
            reference_hashes,
        })
    }

    /// This server's own rules for events its users ask it to sign
    /// ([`local_rules`]), with what they leave to look up: the joining
    /// user's rooms for a restricted join, the invitee's account.
    async fn check_local_rules(&self, state: &RoomState, pdu: &Pdu) -> Result<(), ServiceError> {
        let join_rules = state.get(&StateEventType::RoomJoinRules, "");
        let requirement = local_rules::check(
            pdu,
            self.keys.server_name(),
            |user| state.membership_of(user),
            join_rules,
        )
        .map_err(local_rule_error)?;
        match requirement {
            Requirement::None => Ok(()),
            Requirement::MemberOfOneOf { user, rooms } => {
                let memberships = self.storage.memberships_of(&user, None).await?;
                let allowed = memberships
                    .iter()
                    .any(|m| m.membership == "join" && rooms.contains(&m.room_id));
                if allowed {
                    Ok(())
                } else {
                    Err(ServiceError::Forbidden(
                        "this room admits only members of the rooms its join rules name".to_owned(),
                    ))
                }
            }
            Requirement::ExistingUser(user) => self.check_invitee(&user).await,
        }
    }

    /// Whether `user` can be invited: a user of this server with an
    /// account (users elsewhere need federation, which is not there yet).
    ///
    /// # Errors
    /// `InvalidParam` for a remote user, `NotFound` for an unknown one.
    pub async fn check_invitee(&self, user: &UserId) -> Result<(), ServiceError> {
        if user.server_name() != self.keys.server_name() {
            return Err(ServiceError::InvalidParam(
                "users on other servers are not reachable yet (no federation)".to_owned(),
            ));
        }
        match self.storage.account(user).await? {
            Some(_) => Ok(()),
            None => Err(ServiceError::NotFound("no such user".to_owned())),
        }
    }

    /// The redacted form of a redaction's target, if the sender may redact it.
    async fn redaction_of(
        &self,
        state: &RoomState,
        redaction: &Pdu,
        target: &EventId,
    ) -> Result<(OwnedEventId, String), ServiceError> {
        let original = self.pdu(state.version, target).await?;
        if original.room_id() != redaction.room_id() {
            return Err(ServiceError::NotFound(
                "no such event in this room".to_owned(),
            ));
        }
        let lookup = |kind: &StateEventType, key: &str| state.get(kind, key).cloned();
        let allowed = is_redaction_allowed(state.version, redaction, &original, lookup)
            .map_err(|e| ServiceError::Forbidden(e.to_string()))?;
        // The Client-Server API is stricter than the federation rule: redacting
        // someone else's event needs the `redact` power level even on this server.
        let allowed = allowed
            && (original.sender() == redaction.sender()
                || may_redact_others(state.version, redaction.sender(), lookup)?);
        if !allowed {
            return Err(ServiceError::Forbidden(
                "you may not redact this event".to_owned(),
            ));
        }
        let rules = state.version.rules().redaction.clone();
        let redacted = ruma::canonical_json::redact(original.as_object().clone(), &rules, None)
            .map_err(|e| ServiceError::Internal(format!("redaction failed: {e}")))?;
        Ok((
            original.event_id().to_owned(),
            myelin_crypto::to_canonical_string(&redacted),
        ))
    }
}

/// Moves `state` past an authorized event and says what to write for it.
fn advance(
    state: &mut RoomState,
    pdu: Pdu,
    event: &LocalEvent,
    redaction: Option<(OwnedEventId, String)>,
    position: StreamPosition,
) -> Result<PendingEvent, ServiceError> {
    // Everything that can fail comes before the first change to `state`.
    let redacted_slot = match &redaction {
        Some((target, json)) => state
            .state
            .values()
            .any(|p| p.event_id() == &**target)
            .then(|| {
                Pdu::from_storage(state.version, target.clone(), json.clone())
                    .map_err(|e| ServiceError::Internal(format!("redacted event is invalid: {e}")))
            })
            .transpose()?,
        None => None,
    };
    let mut pending = PendingEvent::new(position, pdu.clone(), state.state_group);
    if let Some(key) = pdu.state_map_key() {
        let group = next_state_group(state, &key, pdu.event_id());
        pending.state_group = position.0;
        state.state_group = position.0;
        state.chain_length = group.chain_length;
        pending.new_state_group = Some(group);
    }
    if *pdu.kind() == TimelineEventType::RoomMember {
        let target = pdu
            .state_key()
            .and_then(|key| ruma::UserId::parse(key).ok());
        pending.membership = target.zip(membership(&pdu));
    }
    if *pdu.kind() == TimelineEventType::RoomJoinRules && pdu.state_key() == Some("") {
        pending.join_rule = Some(join_rule(&pdu).unwrap_or_default());
    }
    pending.transaction.clone_from(&event.transaction);
    pending.redaction = redaction;
    state.extremities = vec![pdu.clone()];
    state.depth = i64::from(pdu.depth());
    if let Some(redacted) = redacted_slot {
        state.put(redacted);
    }
    state.put(pdu);
    Ok(pending)
}

/// Who may see the chain's events: everyone in the room after them
/// (joined, invited, knocking), and whoever a membership change concerns
/// (a kicked user must learn of it).
fn interested_users(state: &RoomState, chain: &[&PendingEvent]) -> Vec<ruma::OwnedUserId> {
    let members = state
        .members_in(&["join", "invite", "knock"])
        .map(ToOwned::to_owned);
    let targets = chain.iter().filter_map(|pending| {
        pending
            .membership
            .as_ref()
            .map(|(target, _)| target.clone())
    });
    members.chain(targets).collect()
}

/// One failure told to every send of a batch (service errors are not `Clone`).
fn error_for_each(error: &ServiceError) -> ServiceError {
    match error {
        ServiceError::NotFound(message) => ServiceError::NotFound(message.clone()),
        other => ServiceError::Internal(other.to_string()),
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned lock only means a panic elsewhere; what it guards is still whole.
    mutex.lock().unwrap_or_else(|poison| poison.into_inner())
}

/// The current state event that `event` would repeat: same slot, same
/// sender, same content. Clients resend state they already set (a join
/// while joined, a topic set twice); the spec's reference server answers
/// with the existing event rather than grow the room, and so does this one.
fn unchanged_state<'s>(state: &'s RoomState, event: &LocalEvent) -> Option<&'s EventId> {
    let state_key = event.state_key.as_deref()?;
    let current = state.get(
        &StateEventType::from(event.event_type.to_string()),
        state_key,
    )?;
    let same_content = matches!(
        current.as_object().get("content"),
        Some(ruma::CanonicalJsonValue::Object(content)) if *content == event.content
    );
    (current.sender() == event.sender && same_content).then(|| current.event_id())
}

fn local_rule_error(error: LocalRuleError) -> ServiceError {
    match error {
        LocalRuleError::NotClientWritable(reason) => ServiceError::Forbidden(reason.to_owned()),
        LocalRuleError::RemoteAuthoriser => ServiceError::Forbidden(error.to_string()),
    }
}

/// Myelin's E2E-only policy, checked here, on the built event and under
/// the room lock, so that every local write (send, state, redact,
/// membership, initial state) meets it against the state the event will
/// land on.
fn check_e2e_policy(state: &RoomState, pdu: &Pdu) -> Result<(), ServiceError> {
    let proposed = e2e_policy::Proposed::of(pdu);
    e2e_policy::check(proposed, |kind, key| state.get(kind, key)).map_err(|e| match e {
        PolicyError::E2eRequired(reason) => ServiceError::E2eRequired(reason.to_owned()),
        PolicyError::InvalidPolicy(reason) => ServiceError::InvalidParam(reason.to_owned()),
    })
}

/// The state group written with a state event: a one-entry delta on the
/// current group, or a full snapshot when the room is new or the delta chain
/// is at its limit.
fn next_state_group(
    state: &RoomState,
    key: &(StateEventType, String),
    event_id: &EventId,
) -> NewStateGroup {
    let entry = |(kind, state_key): &(StateEventType, String), event_id: &EventId| StateEntry {
        event_type: kind.to_string(),
        state_key: state_key.clone(),
        event_id: event_id.to_owned(),
    };
    let chain_length = usize::try_from(state.chain_length).unwrap_or(usize::MAX);
    if state.state.is_empty() || chain_length >= max_delta_chain(state.state.len()) {
        let mut entries: Vec<StateEntry> = state
            .state
            .iter()
            .filter(|(slot, _)| *slot != key)
            .map(|(slot, pdu)| entry(slot, pdu.event_id()))
            .collect();
        entries.push(entry(key, event_id));
        NewStateGroup {
            prev_group: None,
            chain_length: 0,
            entries,
        }
    } else {
        NewStateGroup {
            prev_group: Some(state.state_group),
            chain_length: state.chain_length + 1,
            entries: vec![entry(key, event_id)],
        }
    }
}

/// How many deltas a state group of a room with `entries` state entries
/// may follow before a snapshot: as many as the state has entries (and at
/// least [`MIN_STATE_DELTA_CHAIN`]). A snapshot writes one row per entry;
/// taking one only after as many one-row deltas keeps the rows written per
/// state event at about two however large the state grows, where a fixed
/// interval grows them with the state (a 2,000-member room snapshotting
/// every 64 events wrote about 30 rows per event, quadratic in all).
/// Reading a group back follows at most that many deltas plus one
/// snapshot: about twice the state's size, the size of the answer.
fn max_delta_chain(entries: usize) -> usize {
    entries.max(MIN_STATE_DELTA_CHAIN)
}

/// Whether `user_id` reaches the room's `redact` power level.
fn may_redact_others(
    version: RoomVersion,
    user_id: &ruma::UserId,
    state: impl Fn(&StateEventType, &str) -> Option<Pdu>,
) -> Result<bool, ServiceError> {
    let forbidden = |e: super::rooms::auth::AuthError| ServiceError::Forbidden(e.to_string());
    let level = redact_power_level(version, &state).map_err(forbidden)?;
    Ok(user_power_level(version, user_id, state).map_err(forbidden)? >= UserPowerLevel::Int(level))
}

/// The key a client transaction is remembered under. The spec scopes a
/// transaction id to the device and the request path, so the same id sent
/// to another room or endpoint is a new request.
pub fn transaction_key(endpoint: &str, room_id: &RoomId, detail: &str, txn_id: &str) -> String {
    // Room ids hold no `/`; the detail is length-prefixed, so no two
    // different requests share a key.
    format!("{endpoint}/{room_id}/{}:{detail}/{txn_id}", detail.len())
}

/// The `membership` of an `m.room.member` event.
pub fn membership(pdu: &Pdu) -> Option<String> {
    #[derive(Deserialize)]
    struct Content {
        membership: String,
    }
    serde_json::from_str::<Content>(pdu.content().get())
        .ok()
        .map(|c| c.membership)
}

/// The `join_rule` of an `m.room.join_rules` event.
fn join_rule(pdu: &Pdu) -> Option<String> {
    #[derive(Deserialize)]
    struct Content {
        join_rule: String,
    }
    serde_json::from_str::<Content>(pdu.content().get())
        .ok()
        .map(|c| c.join_rule)
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

    #[test]
    fn state_rows_grow_linearly_with_state_events() {
        // A room that gains one member per state event, as a large room
        // does: the rows written per event stay constant.
        for members in [100, 1_000, 10_000] {
            let (mut rows, mut chain) = (0, 0);
            for entries in 1..=members {
                if chain >= max_delta_chain(entries) {
                    rows += entries;
                    chain = 0;
                } else {
                    rows += 1;
                    chain += 1;
                }
            }
            assert!(
                rows <= 2 * members,
                "{rows} rows for {members} state events"
            );
        }
    }

    #[test]
    fn the_member_index_follows_member_events() {
        use crate::service::rooms::testing::{legacy_room_id, new_pdu, pdu, user};
        let version = RoomVersion::V10;
        let member = |target: &str, membership: &str| {
            let sender = user(target);
            let content = serde_json::json!({ "membership": membership });
            let new = new_pdu(
                Some(legacy_room_id()),
                &sender,
                "m.room.member",
                Some(sender.as_str()),
                content,
            );
            pdu(version, new)
        };
        let topic = pdu(
            version,
            new_pdu(
                Some(legacy_room_id()),
                &user("alice"),
                "m.room.topic",
                Some(""),
                serde_json::json!({ "topic": "t" }),
            ),
        );
        let mut state = RoomState::new(
            version,
            [member("carol", "invite"), member("alice", "join"), topic],
        );
        state.put(member("bob", "join"));
        state.put(member("carol", "join"));
        state.put(member("alice", "leave"));
        assert_eq!(state.membership_of(user("alice").as_str()), Some("leave"));
        let joined: Vec<String> = state
            .members_in(&["join"])
            .map(ToString::to_string)
            .collect();
        assert_eq!(joined, [user("bob").to_string(), user("carol").to_string()]);
        assert_eq!(state.members().count(), 3, "the topic is not a member");
        // A member event without a membership leaves no entry.
        state.put(pdu(
            version,
            new_pdu(
                Some(legacy_room_id()),
                &user("bob"),
                "m.room.member",
                Some(user("bob").as_str()),
                serde_json::json!({}),
            ),
        ));
        assert_eq!(state.membership_of(user("bob").as_str()), None);
    }
}
