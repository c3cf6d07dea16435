//! Reads of a room's DAG for other servers: the state before an event and
//! the auth chain of a set of events, whatever their status (soft-failed
//! events are part of the DAG).

use std::collections::HashSet;

use ruma::OwnedEventId;

use super::{RoomEvents, remote::dag_pdu};
use crate::{
    service::ServiceError,
    storage::{DagEvent, EventStatus},
};

/// Most events an auth chain read walks: a room's auth chain grows with
/// its membership changes, and a request must not walk without end.
const MAX_AUTH_CHAIN: usize = 20_000;

impl RoomEvents {
    /// The room state before `event`, as event ids: the state after its
    /// one prev event, or the resolution of the states after each (for a
    /// state event, the state it replaced, not itself); none for the
    /// create event.
    ///
    /// # Errors
    /// `Internal` when a prev event is not stored; storage failures.
    pub async fn state_ids_before(
        &self,
        event: &DagEvent,
    ) -> Result<Vec<OwnedEventId>, ServiceError> {
        let version = self.room_version(&event.room_id).await?;
        let pdu = dag_pdu(version, event.clone())?;
        let mut prev_events = Vec::with_capacity(pdu.prev_events().len());
        for id in pdu.prev_events() {
            let prev =
                self.storage.dag_event(id).await?.ok_or_else(|| {
                    ServiceError::Internal(format!("prev event {id} is not stored"))
                })?;
            prev_events.push(prev);
        }
        match prev_events.as_slice() {
            [] => Ok(Vec::new()),
            [prev] => Ok(self
                .storage
                .state_group_entries(prev.state_group)
                .await?
                .into_iter()
                .map(|entry| entry.event_id)
                .collect()),
            _ => {
                let current = self
                    .current_state(&event.room_id)
                    .await?
                    .ok_or_else(|| ServiceError::NotFound("no such room".to_owned()))?;
                let before = self
                    .state_before(&current, &prev_events)
                    .await
                    .map_err(|error| ServiceError::Internal(error.to_string()))?;
                Ok(before.state_map().into_values().collect())
            }
        }
    }

    /// Every event reachable from `start` through `auth_events`, `start`
    /// itself not included unless reachable; rejected events are left out
    /// (they are never served), and so are events not stored.
    ///
    /// # Errors
    /// `TooLarge` past [`MAX_AUTH_CHAIN`] events; storage failures.
    pub async fn auth_chain(&self, start: &[OwnedEventId]) -> Result<Vec<DagEvent>, ServiceError> {
        let mut queue: Vec<OwnedEventId> = Vec::new();
        let mut seen: HashSet<OwnedEventId> = HashSet::new();
        for id in start {
            if let Some(event) = self.storage.dag_event(id).await? {
                let version = self.room_version(&event.room_id).await?;
                for auth in dag_pdu(version, event)?.auth_events() {
                    if seen.insert(auth.clone()) {
                        queue.push(auth.clone());
                    }
                }
            }
        }
        let mut chain = Vec::new();
        while let Some(id) = queue.pop() {
            if seen.len() > MAX_AUTH_CHAIN {
                return Err(ServiceError::TooLarge(
                    "the auth chain is too long to serve".to_owned(),
                ));
            }
            let Some(event) = self.storage.dag_event(&id).await? else {
                continue;
            };
            if event.status == EventStatus::Rejected {
                continue;
            }
            let version = self.room_version(&event.room_id).await?;
            for auth in dag_pdu(version, event.clone())?.auth_events() {
                if seen.insert(auth.clone()) {
                    queue.push(auth.clone());
                }
            }
            chain.push(event);
        }
        Ok(chain)
    }
}
