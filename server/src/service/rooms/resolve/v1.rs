//! [State resolution v1], the algorithm of room version 1.
//!
//! ruma's state-res crate implements only v2 (its documentation says v1 "is
//! not implemented"), so this is Myelin's own reading of the spec:
//!
//! 1. start from the state the sets agree on (a slot only some sets hold
//!    counts as agreed);
//! 2. for `m.room.power_levels`, then `m.room.join_rules`, then each
//!    conflicted `m.room.member` slot: order the candidates by ascending
//!    depth, then descending SHA-1 of the event id; take the first, then each
//!    following one for as long as it passes the authorization rules in the
//!    state so far;
//! 3. for every other conflicted slot, take the candidate of greatest depth
//!    (then lowest SHA-1 of the event id) that passes the authorization rules
//!    in the state so far.
//!
//! The spec does not say what step 3 does when no candidate passes; like
//! Synapse, this takes the last one tried (the least deep), so that a slot
//! every fork holds is never emptied by resolution.
//!
//! [State resolution v1]: https://spec.matrix.org/v1.16/rooms/v1/#state-resolution

use std::{
    cmp::Reverse,
    collections::{BTreeMap, HashSet},
};

use ruma::{EventId, OwnedEventId, events::StateEventType, state_res::StateMap};
use sha1::{Digest, Sha1};

use super::ResolveError;
use crate::service::rooms::{auth::check_state, pdu::Pdu, version::RoomVersion};

/// Resolves `state_sets` with the v1 algorithm, checking candidates against
/// `version`'s authorization rules.
///
/// # Errors
///
/// [`ResolveError::MissingEvent`] if a conflicted event cannot be fetched.
pub(super) fn resolve(
    version: RoomVersion,
    state_sets: &[StateMap<OwnedEventId>],
    fetch_event: impl Fn(&EventId) -> Option<Pdu>,
) -> Result<StateMap<OwnedEventId>, ResolveError> {
    let mut candidates: BTreeMap<(StateEventType, String), Vec<OwnedEventId>> = BTreeMap::new();
    for state in state_sets {
        for (key, event_id) in state {
            let ids = candidates.entry(key.clone()).or_default();
            if !ids.contains(event_id) {
                ids.push(event_id.clone());
            }
        }
    }

    let mut resolved = Resolved {
        version,
        state: StateMap::new(),
        events: Vec::new(),
    };
    let mut conflicted = BTreeMap::new();
    for (key, ids) in candidates {
        if let [event_id] = ids.as_slice() {
            resolved.state.insert(key, event_id.clone());
        } else {
            let events = ids
                .iter()
                .map(|id| fetch_event(id).ok_or_else(|| ResolveError::MissingEvent(id.clone())))
                .collect::<Result<Vec<_>, _>>()?;
            conflicted.insert(key, events);
        }
    }
    // Unconflicted state events are needed to check candidates against.
    let unconflicted: HashSet<OwnedEventId> = resolved.state.values().cloned().collect();
    resolved
        .events
        .extend(unconflicted.iter().filter_map(|id| fetch_event(id)));

    let mut auth_slots: Vec<_> = conflicted
        .keys()
        .filter(|(kind, state_key)| match kind {
            StateEventType::RoomPowerLevels | StateEventType::RoomJoinRules => state_key.is_empty(),
            StateEventType::RoomMember => true,
            _ => false,
        })
        .cloned()
        .collect();
    // Power levels first, then join rules, then members (in slot order).
    let rank = |kind: &StateEventType| match kind {
        StateEventType::RoomPowerLevels => 0,
        StateEventType::RoomJoinRules => 1,
        _ => 2,
    };
    auth_slots.sort_by_key(|(kind, _)| rank(kind));
    for key in auth_slots {
        let Some(mut events) = conflicted.remove(&key) else {
            continue;
        };
        events.sort_by_key(|pdu| (pdu.depth(), Reverse(sha1_of(pdu.event_id()))));
        let mut events = events.into_iter();
        if let Some(first) = events.next() {
            resolved.insert(first);
        }
        for pdu in events {
            if !resolved.allows(&pdu) {
                break;
            }
            resolved.insert(pdu);
        }
    }

    for (_, mut events) in conflicted {
        events.sort_by_key(|pdu| (Reverse(pdu.depth()), sha1_of(pdu.event_id())));
        let chosen = events
            .iter()
            .find(|pdu| resolved.allows(pdu))
            .or(events.last())
            .cloned();
        if let Some(pdu) = chosen {
            resolved.insert(pdu);
        }
    }
    Ok(resolved.state)
}

/// The state resolved so far, with its events to run auth checks against.
struct Resolved {
    version: RoomVersion,
    state: StateMap<OwnedEventId>,
    events: Vec<Pdu>,
}

impl Resolved {
    fn insert(&mut self, pdu: Pdu) {
        if let Some(key) = pdu.state_map_key() {
            self.state.insert(key, pdu.event_id().to_owned());
            self.events.push(pdu);
        }
    }

    /// Whether `pdu` passes the authorization rules in this state.
    fn allows(&self, pdu: &Pdu) -> bool {
        check_state(self.version, pdu, |kind, state_key| {
            let event_id = self.state.get(&(kind.clone(), state_key.to_owned()))?;
            self.events
                .iter()
                .rev()
                .find(|event| event.event_id() == event_id)
                .cloned()
        })
        .is_ok()
    }
}

fn sha1_of(event_id: &EventId) -> [u8; 20] {
    Sha1::digest(event_id.as_bytes()).into()
}
