//! The reads of a room's DAG other servers make: an event, the state
//! before an event and its auth chain, an event's auth chain, backfill and
//! the events between two points (`/get_missing_events`).
//!
//! Who may read: a server the room's ACL allows and that is in the room,
//! that is, one of its users is joined in the room's current state, or the
//! room is `world_readable`. Anyone else gets 403 whether the room exists
//! or not; an unknown event of a room the server may read is 404. Rejected
//! events are never served; soft-failed ones are (they are in the DAG).

use std::collections::{BinaryHeap, HashSet};

use ruma::{EventId, OwnedEventId, RoomId, ServerName, UInt};
use serde::Deserialize;

use super::{Inbound, acl_allows};
use crate::{
    service::{ServiceError, room_events::RoomState, rooms::pdu::Pdu},
    storage::{DagEvent, EventStatus},
};

/// Most events one `/backfill` answers.
pub const MAX_BACKFILL: usize = 100;

/// `limit` of `/get_missing_events` when none is given, and its cap.
const DEFAULT_MISSING_EVENTS: usize = 10;
const MAX_MISSING_EVENTS: usize = 20;

/// Most events named in `v`, `earliest_events` or `latest_events`.
const MAX_START_EVENTS: usize = 100;

/// Most events a DAG walk looks at, served or not.
const MAX_WALK: usize = 1_000;

/// The state before an event and the auth chain of that state.
#[derive(Debug)]
pub struct StateAt {
    /// The state events.
    pub state: Vec<DagEvent>,
    /// Their auth chain.
    pub auth_chain: Vec<DagEvent>,
}

/// A `/backfill` request.
#[derive(Debug)]
pub struct Backfill {
    /// The events to start from (`v`).
    pub from: Vec<OwnedEventId>,
    /// Most events to return.
    pub limit: usize,
}

/// A `/get_missing_events` request body.
#[derive(Debug, Deserialize)]
pub struct MissingEventsRequest {
    /// Events the asking server has: the walk stops there.
    #[serde(default)]
    pub earliest_events: Vec<OwnedEventId>,
    /// Events whose ancestors are asked for.
    pub latest_events: Vec<OwnedEventId>,
    /// Most events to return.
    pub limit: Option<UInt>,
    /// Events below this depth are not returned.
    #[serde(default)]
    pub min_depth: UInt,
}

impl Inbound {
    /// `/event/{eventId}`: the event, for a server that may read its room.
    ///
    /// # Errors
    /// `NotFound` for an unknown or rejected event; `Forbidden` when the
    /// origin may not read the room.
    pub async fn event_for_server(
        &self,
        origin: &ServerName,
        event_id: &EventId,
    ) -> Result<DagEvent, ServiceError> {
        let event = self.served_event(event_id).await?;
        self.check_reader(origin, &event.room_id).await?;
        Ok(event)
    }

    /// `/state/{roomId}` and `/state_ids/{roomId}`: the state before
    /// `event_id` and its auth chain.
    ///
    /// # Errors
    /// As [`Self::event_for_server`]; also `NotFound` for an event of
    /// another room.
    pub async fn state_for_server(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        event_id: &EventId,
    ) -> Result<StateAt, ServiceError> {
        self.check_reader(origin, room_id).await?;
        let event = self.room_event(room_id, event_id).await?;
        let events = &self.services.events;
        let mut state = Vec::new();
        for id in events.state_ids_before(&event).await? {
            if let Some(stored) = self.storage.dag_event(&id).await? {
                state.push(stored);
            }
        }
        let state_ids: Vec<OwnedEventId> = state.iter().map(|e| e.event_id.clone()).collect();
        let auth_chain = events.auth_chain(&state_ids).await?;
        Ok(StateAt { state, auth_chain })
    }

    /// `/event_auth/{roomId}/{eventId}`: the event's auth chain.
    ///
    /// # Errors
    /// As [`Self::state_for_server`].
    pub async fn event_auth_for_server(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        event_id: &EventId,
    ) -> Result<Vec<DagEvent>, ServiceError> {
        self.check_reader(origin, room_id).await?;
        let event = self.room_event(room_id, event_id).await?;
        self.services.events.auth_chain(&[event.event_id]).await
    }

    /// `/backfill/{roomId}`: the `from` events and those before them,
    /// following `prev_events`, deepest first, at most `limit`
    /// (capped at [`MAX_BACKFILL`]).
    ///
    /// # Errors
    /// `Forbidden` when the origin may not read the room.
    pub async fn backfill_for_server(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        request: Backfill,
    ) -> Result<Vec<DagEvent>, ServiceError> {
        self.check_reader(origin, room_id).await?;
        let limit = request.limit.clamp(1, MAX_BACKFILL);
        let mut queue = BinaryHeap::new();
        let mut seen = HashSet::new();
        for id in request.from.into_iter().take(MAX_START_EVENTS) {
            if seen.insert(id.clone()) {
                self.enqueue(room_id, &id, &mut queue).await?;
            }
        }
        let mut served = Vec::new();
        let mut walked = 0;
        while let Some(next) = queue.pop() {
            walked += 1;
            if served.len() == limit || walked > MAX_WALK {
                break;
            }
            for prev in &next.prev_events {
                if seen.insert(prev.clone()) {
                    self.enqueue(room_id, prev, &mut queue).await?;
                }
            }
            served.push(next.event);
        }
        Ok(served)
    }

    /// `/get_missing_events/{roomId}`: the ancestors of `latest_events`
    /// (following `prev_events`) down to `earliest_events`, not below
    /// `min_depth`, at most `limit` (10 by default, capped at 20), oldest
    /// first.
    ///
    /// # Errors
    /// `Forbidden` when the origin may not read the room.
    pub async fn missing_events_for_server(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        request: MissingEventsRequest,
    ) -> Result<Vec<DagEvent>, ServiceError> {
        self.check_reader(origin, room_id).await?;
        let limit = request
            .limit
            .map_or(DEFAULT_MISSING_EVENTS, |l| {
                usize::try_from(u64::from(l)).unwrap_or(usize::MAX)
            })
            .clamp(1, MAX_MISSING_EVENTS);
        let min_depth = u64::from(request.min_depth);
        let mut seen: HashSet<OwnedEventId> = request
            .earliest_events
            .into_iter()
            .take(MAX_START_EVENTS)
            .collect();
        let mut queue = BinaryHeap::new();
        for latest in request.latest_events.into_iter().take(MAX_START_EVENTS) {
            let mut latest_only = BinaryHeap::new();
            self.enqueue(room_id, &latest, &mut latest_only).await?;
            for prev in latest_only
                .into_iter()
                .flat_map(|latest| latest.prev_events)
            {
                if seen.insert(prev.clone()) {
                    self.enqueue(room_id, &prev, &mut queue).await?;
                }
            }
        }
        let mut found = Vec::new();
        let mut walked = 0;
        while let Some(next) = queue.pop() {
            walked += 1;
            if found.len() == limit || walked > MAX_WALK {
                break;
            }
            if next.depth < min_depth {
                continue;
            }
            for prev in &next.prev_events {
                if seen.insert(prev.clone()) {
                    self.enqueue(room_id, prev, &mut queue).await?;
                }
            }
            found.push(next);
        }
        found.sort_by_key(|event| event.depth);
        Ok(found.into_iter().map(|found| found.event).collect())
    }

    /// Refuses a server the room's ACL denies or that is not in the room
    /// (no joined user, and the room not `world_readable`); an unknown
    /// room is refused the same way.
    async fn check_reader(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
    ) -> Result<(), ServiceError> {
        let may_read = self
            .room_allows(room_id, |state| may_read(state, origin))
            .await?;
        if may_read {
            Ok(())
        } else {
            Err(ServiceError::Forbidden(
                "the server is not in this room".to_owned(),
            ))
        }
    }

    /// A stored event that is not rejected.
    async fn served_event(&self, event_id: &EventId) -> Result<DagEvent, ServiceError> {
        self.storage
            .dag_event(event_id)
            .await?
            .filter(|event| event.status != EventStatus::Rejected)
            .ok_or_else(|| ServiceError::NotFound("no such event".to_owned()))
    }

    /// A served event of `room_id`.
    async fn room_event(
        &self,
        room_id: &RoomId,
        event_id: &EventId,
    ) -> Result<DagEvent, ServiceError> {
        let event = self.served_event(event_id).await?;
        if event.room_id != room_id {
            return Err(ServiceError::NotFound(
                "no such event in this room".to_owned(),
            ));
        }
        Ok(event)
    }

    /// Queues a served event of `room_id` by its depth (others are skipped).
    async fn enqueue(
        &self,
        room_id: &RoomId,
        event_id: &EventId,
        queue: &mut BinaryHeap<Deepest>,
    ) -> Result<(), ServiceError> {
        let Some(event) = self.storage.dag_event(event_id).await? else {
            return Ok(());
        };
        if event.room_id != room_id || event.status == EventStatus::Rejected {
            return Ok(());
        }
        let version = self.services.events.room_version(room_id).await?;
        let pdu = Pdu::from_storage(version, event.event_id.clone(), event.json.clone()).map_err(
            |e| ServiceError::Internal(format!("stored event {event_id} is invalid: {e}")),
        )?;
        queue.push(Deepest {
            depth: u64::from(pdu.depth()),
            prev_events: pdu.prev_events().to_vec(),
            event,
        });
        Ok(())
    }
}

/// Whether `origin` may read the room: the ACL allows it, and one of its
/// users is joined or the room is world-readable.
fn may_read(state: &RoomState, origin: &ServerName) -> bool {
    if !acl_allows(state, origin) {
        return false;
    }
    state.is_world_readable()
        || state
            .members_in(&["join"])
            .any(|user| ruma::UserId::parse(user).is_ok_and(|user| user.server_name() == origin))
}

/// An event and the prev events it cites, ordered by depth (deepest
/// first out of a [`BinaryHeap`]).
struct Deepest {
    depth: u64,
    event: DagEvent,
    prev_events: Vec<OwnedEventId>,
}

impl PartialEq for Deepest {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == std::cmp::Ordering::Equal
    }
}

impl Eq for Deepest {}

impl PartialOrd for Deepest {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Deepest {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.depth
            .cmp(&other.depth)
            .then_with(|| self.event.event_id.cmp(&other.event.event_id))
    }
}
