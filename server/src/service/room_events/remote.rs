//! Events from other servers: the [checks on receipt] that come after the
//! signatures and the content hash, made under the room's lock (the one
//! local sends take, so a room's local and remote events are ordered),
//! then the same writer as local events.
//!
//! 4. The event against its own `auth_events`: reject on failure.
//! 5. Against the state before it (the state after its one prev event, or
//!    the resolution of the states after each): reject on failure.
//! 6. Against the room's current state: soft-fail on failure.
//!
//! Then Myelin's E2E-only policy, against the current state: an event that
//! breaks it (plaintext, or weakening the policy or the encryption) is
//! withheld as a soft-failed one is.
//!
//! An accepted event gets a stream position and is written by the
//! [`EventWriter`](super::event_writer::EventWriter), so sync, the notifier
//! and push evaluation take it as they take a local one. It replaces the
//! forward extremities it cites; when it does not cite them all (the DAG
//! forked), the room's current state becomes the resolution of the current
//! state and the state after it. Soft-failed and rejected events are kept,
//! withheld: no stream position, so no client read can return them, and
//! never an extremity. See spec-notes/remote-events.md.
//!
//! [checks on receipt]: https://spec.matrix.org/v1.16/server-server-api/#checks-performed-on-receipt-of-a-pdu

use std::collections::{HashMap, HashSet};

use ruma::{
    EventId, OwnedEventId,
    events::{StateEventType, TimelineEventType},
};
use tracing::debug;

use super::{RoomEvents, event_writer::PendingEvent, send_queue::interested_users};
use crate::{
    service::{
        ServiceError,
        rooms::{
            auth::{AuthError, check_auth_events, check_state, is_redaction_allowed},
            e2e_policy::{self, PolicyError},
            pdu::Pdu,
            resolve::{StateMap, auth_chain, resolve_state},
            state::RoomState,
            version::RoomVersion,
        },
    },
    storage::{DagEvent, EventStatus, NewStateGroup, StorageError, WithheldEvent},
};

/// What became of an event from another server.
#[derive(Debug)]
pub enum RemoteOutcome {
    /// In the room's timeline, served to clients.
    Accepted,
    /// Allowed where it was sent but not by the room's current state:
    /// kept for the DAG, never served to clients, not an extremity.
    SoftFailed(AuthError),
    /// Fails the authorization rules: kept only to be recognised again.
    Rejected(Rejection),
    /// Allowed by the rules but not by the room's E2E-only policy
    /// (`org.myelin.room.policy`): kept for the DAG like a soft-failed
    /// event, never served to clients, not an extremity.
    PolicyWithheld(PolicyError),
    /// Stored before (the same event again), with this status.
    AlreadyStored(EventStatus),
}

/// Why an event from another server was rejected.
#[derive(Debug)]
pub enum Rejection {
    /// It fails the rules against its own `auth_events` (one of which may
    /// be rejected itself, or not a state event of its room).
    AuthEvents(AuthError),
    /// It fails the rules against the state before it.
    StateBefore(AuthError),
    /// A prev event belongs to another room.
    PrevEventElsewhere(OwnedEventId),
}

/// Why an event from another server could not be judged.
#[derive(Debug, thiserror::Error)]
pub enum RemoteEventError {
    /// The room is not known here.
    #[error("unknown room")]
    UnknownRoom,
    /// The event was parsed for another room version than the room's.
    #[error("the event is of room version {event}, the room of version {room}")]
    WrongRoomVersion {
        /// The version the event was parsed as.
        event: RoomVersion,
        /// The room's version.
        room: RoomVersion,
    },
    /// Events it cites are not stored: the receiver fetches them (from
    /// the origin) and tries again.
    #[error("{} prev events and {} auth events are missing", prev_events.len(), auth_events.len())]
    MissingEvents {
        /// Unknown `prev_events`.
        prev_events: Vec<OwnedEventId>,
        /// Unknown `auth_events`.
        auth_events: Vec<OwnedEventId>,
    },
    /// Storage or another internal failure.
    #[error(transparent)]
    Service(#[from] ServiceError),
}

impl From<StorageError> for RemoteEventError {
    fn from(error: StorageError) -> Self {
        Self::Service(ServiceError::Storage(error))
    }
}

/// The events an event cites, as stored.
struct Cited {
    prev_events: Vec<DagEvent>,
    /// Its auth events that are not rejected (a rejected one is left out,
    /// so the rules find it missing and reject the event).
    auth_events: HashMap<OwnedEventId, Pdu>,
}

impl RoomEvents {
    /// Takes an event of a known room from another server, whose format,
    /// signatures and content hash the caller has checked (steps 1 to 3 of
    /// the checks on receipt), and judges and stores it.
    ///
    /// # Errors
    /// [`RemoteEventError::MissingEvents`] when a prev or auth event is not
    /// stored (nothing is stored then), `UnknownRoom`, `WrongRoomVersion`,
    /// and storage failures.
    pub async fn append_remote(&self, pdu: Pdu) -> Result<RemoteOutcome, RemoteEventError> {
        let room_id = pdu.room_id().to_owned();
        let slot = self.slot(&room_id);
        let mut guard = slot.state.lock().await;
        let current = match self.loaded(&room_id, &mut guard).await {
            Ok(state) => state,
            Err(ServiceError::NotFound(_)) => return Err(RemoteEventError::UnknownRoom),
            Err(error) => return Err(error.into()),
        };
        let version = current.version;
        if pdu.room_version() != version {
            return Err(RemoteEventError::WrongRoomVersion {
                event: pdu.room_version(),
                room: version,
            });
        }
        if let Some(stored) = self.storage.dag_event(pdu.event_id()).await? {
            return Ok(RemoteOutcome::AlreadyStored(stored.status));
        }
        let cited = self.cited(version, &pdu).await?;
        if let Some(elsewhere) = cited.prev_events.iter().find(|p| p.room_id != room_id) {
            let rejection = Rejection::PrevEventElsewhere(elsewhere.event_id.clone());
            return self.withhold_rejected(current, None, &pdu, rejection).await;
        }

        // The state before the event: the room's current state when it
        // cites exactly the forward extremities (the current state is
        // their resolution), else computed from its prev events.
        let follows_tip = same_ids(pdu.prev_events(), current.extremities());
        let before = if follows_tip {
            None
        } else {
            Some(self.state_before(current, &cited.prev_events).await?)
        };
        let state_before = before.as_ref().unwrap_or(current);

        let fetch = |id: &EventId| {
            cited.auth_events.get(id).cloned().or_else(|| {
                // From version 12 the create event is implied, not cited.
                state_before.event_by_id(id).cloned()
            })
        };
        if let Err(error) = check_auth_events(version, &pdu, fetch) {
            return self
                .withhold_rejected(current, before, &pdu, Rejection::AuthEvents(error))
                .await;
        }
        if let Err(error) = check_state(version, &pdu, |kind, key| {
            state_before.get(kind, key).cloned()
        }) {
            return self
                .withhold_rejected(current, before, &pdu, Rejection::StateBefore(error))
                .await;
        }
        // Skipped when the state before it is the current state.
        if let Some(before) = &before
            && let Err(error) =
                check_state(version, &pdu, |kind, key| current.get(kind, key).cloned())
        {
            self.withhold_soft_failed(before.clone(), &pdu).await?;
            debug!(event_id = %pdu.event_id(), %error, "soft-failed a remote event");
            return Ok(RemoteOutcome::SoftFailed(error));
        }
        // Myelin's E2E-only policy holds whichever server an event comes
        // from: one that breaks it stays in the DAG, never reaches a client
        // here, and never changes this server's state of the room.
        if let Err(error) = e2e_policy::check(e2e_policy::Proposed::of(&pdu), |kind, key| {
            current.get(kind, key)
        }) {
            self.withhold_soft_failed(state_before.clone(), &pdu)
                .await?;
            debug!(event_id = %pdu.event_id(), %error, "withheld a remote event by the room's policy");
            return Ok(RemoteOutcome::PolicyWithheld(error));
        }
        let redaction = self.remote_redaction(state_before, &pdu).await?;

        let reservation = self.stream.reserve();
        let position = reservation.position();
        let mut group_reservation = None;
        let (pending, next) = match before {
            // Follows the tip: the current state moves past it, as past a
            // local event.
            None => (
                PendingEvent::advance(current, pdu, redaction, position)?,
                None,
            ),
            Some(mut after) => {
                let mut pending = PendingEvent::advance(&mut after, pdu, redaction, position)?;
                let cites_all = current
                    .extremities()
                    .iter()
                    .all(|e| pending.pdu.prev_events().iter().any(|p| p == e.event_id()));
                let next = if cites_all {
                    after
                } else {
                    let reservation = self.stream.reserve();
                    let (resolved, group) = self
                        .resolve_fork(current, &after, reservation.position().0)
                        .await?;
                    pending.room_state = Some((reservation.position().0, group));
                    group_reservation = Some(reservation);
                    resolved
                };
                (pending, Some(next))
            }
        };
        let interested = interested_users(next.as_ref().unwrap_or(current), &[&pending]);
        let outcome = match self.write_one(pending).await {
            Ok(()) => {
                if let Some(next) = next {
                    *guard = Some(next);
                }
                Ok(RemoteOutcome::Accepted)
            }
            Err(error) => {
                // The state moved past an event that was not written.
                *guard = None;
                Err(error)
            }
        };
        // Released on every path: a position left reserved would hold back
        // every later one.
        drop(group_reservation);
        drop(reservation);
        if matches!(outcome, Ok(RemoteOutcome::Accepted)) {
            self.stream.published(position).await;
            self.notifier.wake(interested.iter().map(|user| &**user));
        }
        Ok(outcome?)
    }

    /// The event's prev and auth events as stored, or the typed error
    /// naming those that are not.
    async fn cited(&self, version: RoomVersion, pdu: &Pdu) -> Result<Cited, RemoteEventError> {
        let (mut prev_events, mut missing_prev) = (Vec::new(), Vec::new());
        for id in pdu.prev_events() {
            match self.storage.dag_event(id).await? {
                Some(event) => prev_events.push(event),
                None => missing_prev.push(id.clone()),
            }
        }
        let (mut auth_events, mut missing_auth) = (HashMap::new(), Vec::new());
        for id in pdu.auth_events() {
            match self.storage.dag_event(id).await? {
                Some(event) if event.status == EventStatus::Rejected => {}
                Some(event) => {
                    auth_events.insert(id.clone(), dag_pdu(version, event)?);
                }
                None => missing_auth.push(id.clone()),
            }
        }
        if missing_prev.is_empty() && missing_auth.is_empty() {
            Ok(Cited {
                prev_events,
                auth_events,
            })
        } else {
            Err(RemoteEventError::MissingEvents {
                prev_events: missing_prev,
                auth_events: missing_auth,
            })
        }
    }

    /// The state before an event that does not follow the tip: the state
    /// after its one prev event, or the resolution of the states after each.
    pub(super) async fn state_before(
        &self,
        current: &RoomState,
        prev_events: &[DagEvent],
    ) -> Result<RoomState, RemoteEventError> {
        let version = current.version;
        let (events, group) = if let [prev] = prev_events {
            (
                self.group_pdus(version, prev.state_group).await?,
                Some(prev.state_group),
            )
        } else {
            let mut states = Vec::with_capacity(prev_events.len());
            for prev in prev_events {
                let entries = self.storage.state_group_entries(prev.state_group).await?;
                states.push(
                    entries
                        .into_iter()
                        .map(|e| {
                            (
                                (StateEventType::from(e.event_type), e.state_key),
                                e.event_id,
                            )
                        })
                        .collect::<StateMap<OwnedEventId>>(),
                );
            }
            (self.resolve(version, states, None).await?, None)
        };
        Ok(RoomState::before_event(
            version,
            events,
            current.extremities().to_vec(),
            current.depth(),
            group,
        ))
    }

    /// The room's state after an event that forked the DAG: the resolution
    /// of the current state and the state after the event, with the
    /// extremities and depth the event left (`after`'s), recorded in a new
    /// group numbered `group_id`.
    async fn resolve_fork(
        &self,
        current: &RoomState,
        after: &RoomState,
        group_id: i64,
    ) -> Result<(RoomState, NewStateGroup), RemoteEventError> {
        // The event itself is not stored yet.
        let newest = after.extremities().last();
        let resolved = self
            .resolve(
                current.version,
                vec![current.state_map(), after.state_map()],
                newest,
            )
            .await?;
        Ok(RoomState::resolved(
            current.version,
            resolved,
            after.extremities().to_vec(),
            after.depth(),
            group_id,
        ))
    }

    /// Resolves several states into one ([`resolve_state`]), loading every
    /// event it may read: the states' events and their auth chains, and
    /// `unstored`, an event not written yet.
    async fn resolve(
        &self,
        version: RoomVersion,
        states: Vec<StateMap<OwnedEventId>>,
        unstored: Option<&Pdu>,
    ) -> Result<Vec<Pdu>, RemoteEventError> {
        let events = self
            .auth_closure(
                version,
                states.iter().flat_map(|s| s.values().cloned()),
                unstored,
            )
            .await?;
        let fetch = |id: &EventId| events.get(id).cloned();
        let internal = |e: crate::service::rooms::resolve::ResolveError| {
            ServiceError::Internal(format!("state resolution failed: {e}"))
        };
        let auth_chains = states
            .iter()
            .map(|state| auth_chain(state.values(), fetch))
            .collect::<Result<Vec<_>, _>>()
            .map_err(internal)?;
        let resolved = resolve_state(version, &states, auth_chains, fetch).map_err(internal)?;
        Ok(resolved
            .values()
            .filter_map(|id| events.get(id).cloned())
            .collect())
    }

    /// `start` and every event reachable from them through `auth_events`,
    /// taking `unstored` as it is rather than from storage.
    pub(super) async fn auth_closure(
        &self,
        version: RoomVersion,
        start: impl Iterator<Item = OwnedEventId>,
        unstored: Option<&Pdu>,
    ) -> Result<HashMap<OwnedEventId, Pdu>, RemoteEventError> {
        let mut events = HashMap::new();
        let mut queue: Vec<OwnedEventId> = start.collect();
        let mut seen: HashSet<OwnedEventId> = queue.iter().cloned().collect();
        while let Some(id) = queue.pop() {
            let pdu = match unstored {
                Some(pdu) if pdu.event_id() == id => pdu.clone(),
                // An event that cannot be found is left out; resolution
                // says whether it needed it.
                _ => match self.storage.dag_event(&id).await? {
                    Some(stored) => dag_pdu(version, stored)?,
                    None => continue,
                },
            };
            for auth in pdu.auth_events() {
                if seen.insert(auth.clone()) {
                    queue.push(auth.clone());
                }
            }
            events.insert(id, pdu);
        }
        Ok(events)
    }

    /// The events of a stored state group.
    async fn group_pdus(
        &self,
        version: RoomVersion,
        state_group: i64,
    ) -> Result<Vec<Pdu>, RemoteEventError> {
        let mut pdus = Vec::new();
        for entry in self.storage.state_group_entries(state_group).await? {
            let stored = self
                .storage
                .dag_event(&entry.event_id)
                .await?
                .ok_or_else(|| {
                    ServiceError::Internal(format!("state event {} is not stored", entry.event_id))
                })?;
            pdus.push(dag_pdu(version, stored)?);
        }
        Ok(pdus)
    }

    /// For an `m.room.redaction` that applies (a stored, accepted target in
    /// the room that the sender may redact, per the state before it): the
    /// target and its redacted JSON.
    async fn remote_redaction(
        &self,
        state_before: &RoomState,
        pdu: &Pdu,
    ) -> Result<Option<(OwnedEventId, String)>, RemoteEventError> {
        let Some(target) = pdu.redacts() else {
            return Ok(None);
        };
        if *pdu.kind() != TimelineEventType::RoomRedaction {
            return Ok(None);
        }
        let Some(stored) = self.storage.dag_event(target).await? else {
            return Ok(None);
        };
        if stored.status != EventStatus::Accepted {
            return Ok(None);
        }
        let original = dag_pdu(state_before.version, stored)?;
        let lookup = |kind: &StateEventType, key: &str| state_before.get(kind, key).cloned();
        if !is_redaction_allowed(state_before.version, pdu, &original, lookup).unwrap_or(false) {
            return Ok(None);
        }
        Ok(Some(super::local::redacted_form(&original)?))
    }

    /// Keeps a rejected event, with the state before it (a rejected event
    /// changes no state) for events that cite it as a prev event.
    async fn withhold_rejected(
        &self,
        current: &RoomState,
        before: Option<RoomState>,
        pdu: &Pdu,
        rejection: Rejection,
    ) -> Result<RemoteOutcome, RemoteEventError> {
        let before = before.as_ref().unwrap_or(current);
        let reservation = self.stream.reserve();
        let (state_group, new_state_group) = match before.state_group() {
            Some(group) => (group, None),
            None => (reservation.position().0, Some(before.snapshot())),
        };
        self.withhold(pdu, true, state_group, new_state_group.as_ref())
            .await?;
        debug!(event_id = %pdu.event_id(), ?rejection, "rejected a remote event");
        Ok(RemoteOutcome::Rejected(rejection))
    }

    /// Keeps a soft-failed event, with the state after it.
    async fn withhold_soft_failed(
        &self,
        mut before: RoomState,
        pdu: &Pdu,
    ) -> Result<(), RemoteEventError> {
        // The group is numbered like any other, by a stream position; the
        // event itself takes none.
        let reservation = self.stream.reserve();
        let change = before.advance(pdu, None, reservation.position().0);
        self.withhold(pdu, false, change.state_group, change.new_group.as_ref())
            .await
    }

    async fn withhold(
        &self,
        pdu: &Pdu,
        is_rejected: bool,
        state_group: i64,
        new_state_group: Option<&NewStateGroup>,
    ) -> Result<(), RemoteEventError> {
        self.storage
            .withhold_event(&WithheldEvent {
                event_id: pdu.event_id(),
                room_id: pdu.room_id(),
                is_rejected,
                depth: i64::from(pdu.depth()),
                json: pdu.canonical_json(),
                state_group,
                new_state_group,
            })
            .await?;
        Ok(())
    }
}

/// Whether `ids` are exactly the events of `extremities`.
fn same_ids(ids: &[OwnedEventId], extremities: &[Pdu]) -> bool {
    let ids: HashSet<&EventId> = ids.iter().map(|id| &**id).collect();
    let tips: HashSet<&EventId> = extremities.iter().map(Pdu::event_id).collect();
    ids == tips
}

/// A stored event as a [`Pdu`].
pub(super) fn dag_pdu(version: RoomVersion, stored: DagEvent) -> Result<Pdu, ServiceError> {
    let event_id = stored.event_id.clone();
    Pdu::from_storage(version, stored.event_id, stored.json)
        .map_err(|e| ServiceError::Internal(format!("stored event {event_id} is invalid: {e}")))
}

#[cfg(test)]
pub(crate) mod tests;
