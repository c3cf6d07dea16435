//! [State resolution]: the room state where the DAG forks and joins again.
//!
//! When an event has several `prev_events` whose states differ (federation
//! makes this routine), the state before it is the resolution of those
//! states. From room version 2 the algorithm is ruma's
//! ([`ruma::state_res::resolve`]): v2 for room versions 2 to 11, [v2.1] for
//! version 12, which starts the iterative auth checks from an empty state and
//! adds the *conflicted state subgraph* to the full conflicted set. ruma
//! leaves computing that subgraph to the caller; [`resolve_state`] does it
//! from the events it can fetch. ruma has no [v1] (room version 1): [`v1`]
//! is Myelin's own.
//!
//! Nothing here verifies signatures or authorises the fork tips: every event
//! `fetch_event` returns must already have passed the checks on receipt
//! (see [`super::auth`]); events it cannot find are left out, as the spec
//! asks for events a server could not verify.
//!
//! [State resolution]: https://spec.matrix.org/v1.16/rooms/v2/#state-resolution
//! [v2.1]: https://spec.matrix.org/v1.16/rooms/v12/#state-resolution
//! [v1]: https://spec.matrix.org/v1.16/rooms/v1/#state-resolution

use std::collections::{HashMap, HashSet};

use ruma::{
    EventId, OwnedEventId,
    state_res::{self, utils::event_id_set::EventIdSet},
};

pub use ruma::state_res::StateMap;

use super::{
    pdu::Pdu,
    version::{RoomVersion, StateResolution},
};

mod v1;

/// Why state could not be resolved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ResolveError {
    /// An event the algorithm needs (a state event of a fork, or one in an
    /// auth chain) is not available.
    #[error("event {0} is needed for state resolution but is missing")]
    MissingEvent(OwnedEventId),

    /// The caller passed a different number of auth chains than state sets.
    #[error("{auth_chains} auth chains for {state_sets} state sets")]
    AuthChainCount {
        /// How many state sets were passed.
        state_sets: usize,
        /// How many auth chains were passed.
        auth_chains: usize,
    },

    /// ruma refused to resolve (an auth event it needed was malformed, or a
    /// state event has no state key).
    #[error("state resolution failed: {0}")]
    Algorithm(String),
}

/// Resolves the states of several forks of a room into one.
///
/// - `state_sets`: the state at each fork, one [`StateMap`] per fork
///   (`(event type, state key)` to event id).
/// - `auth_chains`: for each state set, in the same order, the union of the
///   auth chains of its events ([`auth_chain`] computes one). State
///   resolution v1 (room version 1) does not use them.
/// - `fetch_event`: looks up any event of the room by id.
///
/// Returns the resolved state. With a single state set, or sets that agree,
/// it is that state.
///
/// # Errors
///
/// [`ResolveError::AuthChainCount`] if the two lists differ in length,
/// [`ResolveError::MissingEvent`] if a power event's auth events cannot be
/// found, and [`ResolveError::Algorithm`] for other failures inside ruma.
pub fn resolve_state(
    version: RoomVersion,
    state_sets: &[StateMap<OwnedEventId>],
    auth_chains: Vec<HashSet<OwnedEventId>>,
    fetch_event: impl Fn(&EventId) -> Option<Pdu>,
) -> Result<StateMap<OwnedEventId>, ResolveError> {
    if auth_chains.len() != state_sets.len() {
        return Err(ResolveError::AuthChainCount {
            state_sets: state_sets.len(),
            auth_chains: auth_chains.len(),
        });
    }
    if version.state_resolution() == StateResolution::V1 {
        return v1::resolve(version, state_sets, fetch_event);
    }
    let rules = version.rules();
    let state_res_rules = rules.state_res.v2_rules().ok_or_else(|| {
        ResolveError::Algorithm(format!("room version {version} has no v2 state resolution"))
    })?;
    let auth_chains = auth_chains
        .into_iter()
        .map(|chain| chain.into_iter().collect::<EventIdSet<_>>())
        .collect();

    state_res::resolve(
        &rules.authorization,
        state_res_rules,
        state_sets.iter(),
        auth_chains,
        &fetch_event,
        |conflicted| {
            let conflicted = conflicted.values().flatten().map(|id| &**id);
            Some(conflicted_state_subgraph(conflicted, &fetch_event))
        },
    )
    .map_err(|error| match error {
        state_res::Error::NotFound(event_id) => ResolveError::MissingEvent(event_id),
        other => ResolveError::Algorithm(other.to_string()),
    })
}

/// The auth chain of `event_ids`: every event reachable from them by
/// following `auth_events`, not counting the starting events themselves
/// (unless one is in another's chain).
///
/// # Errors
///
/// [`ResolveError::MissingEvent`] if a starting event or an event on the
/// way cannot be fetched: auth chains must be complete.
pub fn auth_chain<'a>(
    event_ids: impl IntoIterator<Item = &'a OwnedEventId>,
    fetch_event: impl Fn(&EventId) -> Option<Pdu>,
) -> Result<HashSet<OwnedEventId>, ResolveError> {
    let mut chain = HashSet::new();
    let mut stack = Vec::new();
    for event_id in event_ids {
        let event =
            fetch_event(event_id).ok_or_else(|| ResolveError::MissingEvent(event_id.clone()))?;
        stack.extend(event.auth_events().iter().cloned());
    }
    while let Some(event_id) = stack.pop() {
        if chain.contains(&event_id) {
            continue;
        }
        let event =
            fetch_event(&event_id).ok_or_else(|| ResolveError::MissingEvent(event_id.clone()))?;
        stack.extend(event.auth_events().iter().cloned());
        chain.insert(event_id);
    }
    Ok(chain)
}

/// The [conflicted state subgraph] (state resolution v2.1): the events on
/// some `auth_events` path from one conflicted event to another, endpoints
/// included.
///
/// Computed as the conflicted events plus every event that is reachable from
/// a conflicted event and from which a conflicted event is reachable. Events
/// that cannot be fetched are left out.
///
/// [conflicted state subgraph]: https://spec.matrix.org/v1.16/rooms/v12/#definitions
fn conflicted_state_subgraph<'a>(
    conflicted: impl Iterator<Item = &'a EventId>,
    fetch_event: impl Fn(&EventId) -> Option<Pdu>,
) -> EventIdSet<OwnedEventId> {
    let conflicted: HashSet<OwnedEventId> = conflicted.map(ToOwned::to_owned).collect();

    // Every event reachable from a conflicted one, with its auth events.
    let mut auth_edges: HashMap<OwnedEventId, Vec<OwnedEventId>> = HashMap::new();
    let mut stack: Vec<OwnedEventId> = conflicted.iter().cloned().collect();
    while let Some(event_id) = stack.pop() {
        if auth_edges.contains_key(&event_id) {
            continue;
        }
        let auth_events = fetch_event(&event_id)
            .map(|event| event.auth_events().to_vec())
            .unwrap_or_default();
        stack.extend(auth_events.iter().cloned());
        auth_edges.insert(event_id, auth_events);
    }

    // Whether a conflicted event is reachable from each event (by at least
    // one edge), computed children first with an explicit stack: the auth
    // DAG can be deep.
    let mut reaches_conflicted: HashMap<OwnedEventId, bool> = HashMap::new();
    for start in auth_edges.keys() {
        let mut stack = vec![(start.clone(), false)];
        while let Some((event_id, children_done)) = stack.pop() {
            if reaches_conflicted.contains_key(&event_id) {
                continue;
            }
            let children = auth_edges
                .get(&event_id)
                .map(Vec::as_slice)
                .unwrap_or_default();
            if children_done {
                let reaches = children.iter().any(|child| {
                    conflicted.contains(child) || reaches_conflicted.get(child) == Some(&true)
                });
                reaches_conflicted.insert(event_id, reaches);
            } else {
                stack.push((event_id.clone(), true));
                stack.extend(
                    children
                        .iter()
                        .filter(|child| !reaches_conflicted.contains_key(*child))
                        .map(|child| (child.clone(), false)),
                );
            }
        }
    }

    // Reachable from a conflicted event: every non-conflicted key of
    // `auth_edges`, and the conflicted events some other conflicted event
    // reaches (kept anyway: they are endpoints and in the full conflicted set).
    auth_edges
        .into_keys()
        .filter(|event_id| {
            conflicted.contains(event_id) || reaches_conflicted.get(event_id) == Some(&true)
        })
        .collect()
}

#[cfg(test)]
mod tests;
