//! The write path of rooms: local events are built, signed, checked against
//! the authorization rules and persisted here, one room at a time.
//!
//! Each room's current state lives in memory (loaded on first use), so the
//! authorization checks of a new event touch no storage. A per-room lock
//! orders the events of a room; a server-wide lock hands out stream
//! positions in commit order, so a reader that has seen position `n` has seen
//! every event at or below `n`.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use myelin_crypto::{NewPdu, build_pdu};
use ruma::{
    CanonicalJsonObject, EventId, MilliSecondsSinceUnixEpoch, OwnedDeviceId, OwnedEventId,
    OwnedRoomId, OwnedUserId, RoomId, RoomVersionId, UInt,
    events::{StateEventType, TimelineEventType, room::power_levels::UserPowerLevel},
};
use serde::Deserialize;
use tracing::debug;

use super::{
    ServiceError,
    notifier::Notifier,
    rooms::{
        auth::{
            auth_events_for, check_auth, is_redaction_allowed, redact_power_level, user_power_level,
        },
        e2e_policy::{self, PolicyError},
        pdu::{Pdu, PduError},
        version::RoomVersion,
    },
    server_keys::ServerKeys,
    stream::Stream,
};
use crate::storage::{
    NewEvent, NewStateGroup, NewTransaction, StateEntry, Storage, StorageError, StreamPosition,
};

/// Tries at creating a room before giving up on finding a free id.
const MAX_CREATE_ATTEMPTS: u32 = 16;

/// Past this many deltas a state group is written as a full snapshot, which
/// bounds the work of reading any state back.
const MAX_STATE_DELTA_CHAIN: i32 = 64;

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
    /// `(type, state key)` to the event holding it.
    pub state: HashMap<(StateEventType, String), Pdu>,
    extremities: Vec<OwnedEventId>,
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
    pub fn membership_of(&self, user_id: &str) -> Option<String> {
        membership(self.get(&StateEventType::RoomMember, user_id)?)
    }

    fn event_by_id(&self, event_id: &EventId) -> Option<Pdu> {
        self.state
            .values()
            .find(|pdu| pdu.event_id() == event_id)
            .cloned()
    }
}

type RoomSlot = Arc<tokio::sync::Mutex<Option<RoomState>>>;

/// Builds, authorizes and persists local events.
#[derive(Debug)]
pub struct RoomEvents {
    storage: Arc<dyn Storage>,
    keys: Arc<ServerKeys>,
    notifier: Arc<Notifier>,
    rooms: Mutex<HashMap<OwnedRoomId, RoomSlot>>,
    stream: Arc<Stream>,
    last_create_ts: AtomicU64,
}

impl RoomEvents {
    /// Builds the service.
    pub fn new(
        storage: Arc<dyn Storage>,
        keys: Arc<ServerKeys>,
        notifier: Arc<Notifier>,
        stream: Arc<Stream>,
    ) -> Self {
        Self {
            storage,
            keys,
            notifier,
            rooms: Mutex::new(HashMap::new()),
            stream,
            last_create_ts: AtomicU64::new(0),
        }
    }

    /// The last committed stream position: every event at or below it is readable.
    pub fn current_position(&self) -> StreamPosition {
        self.stream.current()
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
        let empty = RoomState {
            version,
            state: HashMap::new(),
            extremities: Vec::new(),
            depth: 0,
            state_group: 0,
            chain_length: 0,
        };
        // From version 12 the room id is the create event's hash: two rooms
        // created by one user in the same millisecond with the same content
        // would get one id. The later one moves its timestamp on and tries
        // again (the spec leaves the timestamp to the server).
        for _ in 0..MAX_CREATE_ATTEMPTS {
            let ts = self.next_create_ts();
            let pdu = self.build(&empty, room_id.clone(), &create, ts)?;
            let new_room_id = pdu.room_id().to_owned();
            let slot = self.slot(&new_room_id);
            let mut guard = slot.lock().await;
            if guard.is_some() {
                continue;
            }
            let mut state = empty.clone();
            match self
                .commit(&mut state, pdu, &create, Some(&version.id()))
                .await
            {
                Ok(()) => {
                    *guard = Some(state);
                    return Ok(new_room_id);
                }
                Err(ServiceError::Storage(StorageError::Conflict(_))) => continue,
                Err(error) => return Err(error),
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
        &self,
        room_id: &RoomId,
        event: LocalEvent,
    ) -> Result<OwnedEventId, ServiceError> {
        if let Some(existing) = self.previous_transaction(&event).await? {
            return Ok(existing);
        }
        let slot = self.slot(room_id);
        let mut guard = slot.lock().await;
        // Checked again under the room lock: a concurrent retry may have won.
        if let Some(existing) = self.previous_transaction(&event).await? {
            return Ok(existing);
        }
        let state = self.loaded(room_id, &mut guard).await?;
        check_e2e_policy(state, &event)?;
        let pdu = self.build(
            state,
            Some(room_id.to_owned()),
            &event,
            MilliSecondsSinceUnixEpoch::now(),
        )?;
        let event_id = pdu.event_id().to_owned();
        self.commit(state, pdu, &event, None).await?;
        Ok(event_id)
    }

    /// A copy of the room's current state, or `None` for an unknown room.
    ///
    /// # Errors
    /// Storage failures while loading it.
    pub async fn current_state(&self, room_id: &RoomId) -> Result<Option<RoomState>, ServiceError> {
        let slot = self.slot(room_id);
        let mut guard = slot.lock().await;
        match self.loaded(room_id, &mut guard).await {
            Ok(state) => Ok(Some(state.clone())),
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
        // A loaded room knows its version; ask storage only otherwise.
        if let Some(slot) = self.rooms_map().get(room_id).cloned()
            && let Ok(slot) = slot.try_lock()
            && let Some(state) = slot.as_ref()
        {
            return Ok(state.version);
        }
        let record = self
            .storage
            .room(room_id)
            .await?
            .ok_or_else(|| ServiceError::NotFound("no such room".to_owned()))?;
        parse_version(&record.room_version)
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

    fn slot(&self, room_id: &RoomId) -> RoomSlot {
        self.rooms_map()
            .entry(room_id.to_owned())
            .or_default()
            .clone()
    }

    fn rooms_map(&self) -> std::sync::MutexGuard<'_, HashMap<OwnedRoomId, RoomSlot>> {
        // A poisoned map only means a panic elsewhere; its entries are still whole.
        self.rooms
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
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
                    self.rooms_map().remove(room_id);
                    return Err(error);
                }
            };
            let head = self
                .storage
                .room_head(room_id)
                .await?
                .ok_or_else(|| ServiceError::NotFound("no such room".to_owned()))?;
            let mut state = HashMap::new();
            for entry in self.storage.state_group_entries(head.state_group).await? {
                let pdu = self.pdu(version, &entry.event_id).await?;
                if let Some(key) = pdu.state_map_key() {
                    state.insert(key, pdu);
                }
            }
            debug!(%room_id, entries = state.len(), "loaded room state");
            *slot = Some(RoomState {
                version,
                state,
                extremities: head.forward_extremities,
                depth: head.depth,
                state_group: head.state_group,
                chain_length: head.chain_length,
            });
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
            prev_events: state.extremities.clone(),
            auth_events: Vec::new(),
            depth,
            origin_server_ts,
            redacts: event.redacts.clone(),
        };
        new.auth_events = auth_events_for(version, &new, |kind, key| {
            state.get(kind, key).map(|pdu| pdu.event_id().to_owned())
        })
        .map_err(|e| ServiceError::Forbidden(e.to_string()))?;
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

    /// Persists an authorized event and moves `state` past it.
    async fn commit(
        &self,
        state: &mut RoomState,
        pdu: Pdu,
        event: &LocalEvent,
        creates_room: Option<&RoomVersionId>,
    ) -> Result<(), ServiceError> {
        let redaction = match pdu.redacts() {
            Some(target) if *pdu.kind() == TimelineEventType::RoomRedaction => {
                Some(self.redaction_of(state, &pdu, target).await?)
            }
            _ => None,
        };
        let membership_target = (*pdu.kind() == TimelineEventType::RoomMember)
            .then(|| {
                pdu.state_key()
                    .and_then(|key| ruma::UserId::parse(key).ok())
            })
            .flatten();
        let new_membership = membership_target.as_ref().and_then(|_| membership(&pdu));
        let version_id = creates_room.map(RoomVersionId::as_str);
        let extremities = vec![pdu.event_id().to_owned()];
        let transaction = event.transaction.as_ref().map(|t| NewTransaction {
            user_id: &event.sender,
            device_id: &t.device_id,
            key: &t.key,
            txn_id: &t.txn_id,
        });

        let depth = i64::from(pdu.depth());
        let event_type = pdu.kind().to_string();
        let storage = &self.storage;
        // The write borrows what it needs; the state is updated after it commits.
        let (pdu_ref, current, extremities_ref, redaction_ref) =
            (&pdu, &*state, &extremities, &redaction);
        let (target_ref, membership_ref) = (&membership_target, &new_membership);
        let event_type = event_type.as_str();
        let (state_group, chain_length) = self
            .stream
            .append(|position| async move {
                let (state_group, new_state_group) = match pdu_ref.state_map_key() {
                    Some(key) => (
                        position.0,
                        Some(next_state_group(current, &key, pdu_ref.event_id())),
                    ),
                    None => (current.state_group, None),
                };
                let chain_length = new_state_group.as_ref().map(|group| group.chain_length);
                storage
                    .append_event(&NewEvent {
                        position,
                        event_id: pdu_ref.event_id(),
                        room_id: pdu_ref.room_id(),
                        creates_room_version: version_id,
                        event_type,
                        state_key: pdu_ref.state_key(),
                        sender: pdu_ref.sender(),
                        depth,
                        json: pdu_ref.canonical_json(),
                        state_group,
                        new_state_group,
                        forward_extremities: extremities_ref,
                        membership: target_ref.as_deref().zip(membership_ref.as_deref()),
                        transaction,
                        redaction: redaction_ref
                            .as_ref()
                            .map(|(target, json)| (target.as_ref(), json.as_str())),
                    })
                    .await?;
                Ok((state_group, chain_length))
            })
            .await?;

        state.extremities = extremities;
        state.depth = depth;
        if let Some(chain_length) = chain_length {
            state.state_group = state_group;
            state.chain_length = chain_length;
        }
        if let Some((target, json)) = redaction
            && let Some(slot) = state
                .state
                .iter()
                .find(|(_, p)| p.event_id() == target)
                .map(|(k, _)| k.clone())
        {
            let redacted = Pdu::from_storage(state.version, target, json)
                .map_err(|e| ServiceError::Internal(format!("redacted event is invalid: {e}")))?;
            state.state.insert(slot, redacted);
        }
        if let Some(key) = pdu.state_map_key() {
            state.state.insert(key, pdu);
        }
        // Everyone in the room, and whoever a membership change concerns
        // (a kicked user must learn of it), may see this event.
        let members = state.state.iter().filter_map(|((kind, key), member)| {
            let interested = *kind == StateEventType::RoomMember
                && matches!(
                    membership(member).as_deref(),
                    Some("join" | "invite" | "knock")
                );
            interested
                .then(|| <&ruma::UserId>::try_from(key.as_str()).ok())
                .flatten()
        });
        self.notifier
            .wake(members.chain(membership_target.as_deref()));
        Ok(())
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

/// Myelin's E2E-only policy, checked here, under the room lock, so that
/// every local write (send, state, redact, membership, initial state) meets
/// it against the state the event will land on.
fn check_e2e_policy(state: &RoomState, event: &LocalEvent) -> Result<(), ServiceError> {
    let proposed = e2e_policy::Proposed {
        event_type: &event.event_type,
        state_key: event.state_key.as_deref(),
        content: &event.content,
        redacts: event.redacts.as_deref(),
    };
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
    if state.state.is_empty() || state.chain_length >= MAX_STATE_DELTA_CHAIN {
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
        );
        for room in [room_id!("!probe1:x"), room_id!("!probe2:x")] {
            assert!(events.current_state(room).await.unwrap().is_none());
            assert!(matches!(
                events.room_version(room).await,
                Err(ServiceError::NotFound(_))
            ));
        }
        assert!(
            events.rooms_map().is_empty(),
            "probing unknown rooms must not grow the map"
        );
    }
}
