//! Checking a resident server's answer to `send_join` before anything of
//! it is stored: the answer decides the whole of this server's view of
//! the room, so one event that does not hold fails the join.
//!
//! The events have passed [`check_pdu`](crate::service::federation::pdu_check::check_pdu)
//! (format, signatures, content hash) already. Here: every event is of the
//! room; the state holds one `m.room.create` of the room's version and one
//! event per slot; every event is allowed by its own auth events (the
//! create event first, then each event after the events it cites); the
//! join is allowed by its auth events and by the state before it.

use std::collections::{HashMap, HashSet};

use ruma::{OwnedEventId, RoomId, events::TimelineEventType};
use serde::Deserialize;

use crate::service::{
    room_events::JoinedState,
    rooms::{
        auth::{check_auth, check_auth_events},
        pdu::Pdu,
    },
};

/// Why a `send_join` answer was refused.
#[derive(Debug, thiserror::Error)]
pub enum AnswerError {
    /// An event of another room.
    #[error("event {0} is of another room")]
    WrongRoom(OwnedEventId),
    /// The state has no `m.room.create` event.
    #[error("the state has no m.room.create event")]
    NoCreateEvent,
    /// The create event names another room version than the answer.
    #[error("the room's create event is of room version {0}")]
    WrongVersion(String),
    /// A state event that is not one, holds a NUL character in its type or
    /// state key, or shares its slot with another.
    #[error("event {0} is not a state event or shares its slot")]
    BadState(OwnedEventId),
    /// An event fails the authorization rules against its auth events (or
    /// cites events the answer lacks).
    #[error("event {event} fails the authorization rules: {reason}")]
    Unauthorized {
        /// The event.
        event: OwnedEventId,
        /// The rule that failed.
        reason: String,
    },
}

/// Checks the state and auth chain a resident answered with, and `join`
/// (this server's join, or the resident's signed copy of it) against them.
///
/// # Errors
/// [`AnswerError`]: nothing of the answer may be kept.
pub fn check_join_answer(
    room_id: &RoomId,
    join: Pdu,
    state: Vec<Pdu>,
    auth_chain: Vec<Pdu>,
) -> Result<JoinedState, AnswerError> {
    let version = join.room_version();
    let mut events = HashMap::new();
    for pdu in state.iter().chain(&auth_chain) {
        if pdu.room_id() != room_id || pdu.room_version() != version {
            return Err(AnswerError::WrongRoom(pdu.event_id().to_owned()));
        }
        events.insert(pdu.event_id().to_owned(), pdu.clone());
    }
    let create = state
        .iter()
        .find(|pdu| *pdu.kind() == TimelineEventType::RoomCreate && pdu.state_key() == Some(""))
        .ok_or(AnswerError::NoCreateEvent)?;
    let named = create_version(create);
    if named != version.id().as_str() {
        return Err(AnswerError::WrongVersion(named));
    }
    let mut slots = HashMap::new();
    for pdu in &state {
        // No database text column can hold a NUL character.
        let key = pdu
            .state_map_key()
            .filter(|(kind, key)| !kind.to_string().contains('\0') && !key.contains('\0'))
            .ok_or_else(|| AnswerError::BadState(pdu.event_id().to_owned()))?;
        if slots.insert(key, pdu.clone()).is_some() {
            return Err(AnswerError::BadState(pdu.event_id().to_owned()));
        }
    }
    let accepted = authorize(&events, create)?;
    check_auth(
        version,
        &join,
        |id| accepted.get(id).cloned(),
        |kind, key| slots.get(&(kind.clone(), key.to_owned())).cloned(),
    )
    .map_err(|error| AnswerError::Unauthorized {
        event: join.event_id().to_owned(),
        reason: error.to_string(),
    })?;
    let in_state: HashSet<OwnedEventId> = state.iter().map(|p| p.event_id().to_owned()).collect();
    let auth_chain = auth_chain
        .into_iter()
        .filter(|pdu| !in_state.contains(pdu.event_id()))
        .collect();
    Ok(JoinedState {
        state,
        auth_chain,
        join,
    })
}

/// Checks every event against its own auth events, each after the events
/// it cites (a walk of the auth DAG; a cycle leaves an event citing one
/// not yet allowed, which fails it). Returns the events, all allowed.
fn authorize(
    events: &HashMap<OwnedEventId, Pdu>,
    create: &Pdu,
) -> Result<HashMap<OwnedEventId, Pdu>, AnswerError> {
    let mut accepted: HashMap<OwnedEventId, Pdu> = HashMap::new();
    let mut visited: HashSet<OwnedEventId> = HashSet::new();
    // The create event first: from version 12 events read it without citing it.
    let starts = std::iter::once(create.event_id()).chain(events.keys().map(|id| &**id));
    for start in starts {
        let mut stack = vec![(start.to_owned(), false)];
        while let Some((id, expanded)) = stack.pop() {
            if accepted.contains_key(&id) {
                continue;
            }
            let Some(pdu) = events.get(&id) else {
                continue;
            };
            if expanded {
                check_auth_events(pdu.room_version(), pdu, |cited| {
                    accepted.get(cited).cloned()
                })
                .map_err(|error| AnswerError::Unauthorized {
                    event: id.clone(),
                    reason: error.to_string(),
                })?;
                accepted.insert(id, pdu.clone());
            } else if visited.insert(id.clone()) {
                stack.push((id, true));
                for cited in pdu.auth_events() {
                    if !visited.contains(cited) {
                        stack.push((cited.clone(), false));
                    }
                }
            }
        }
    }
    Ok(accepted)
}

/// The room version a create event names (`1` when it names none).
fn create_version(create: &Pdu) -> String {
    #[derive(Deserialize)]
    struct Content {
        room_version: Option<String>,
    }
    serde_json::from_str::<Content>(create.content().get())
        .ok()
        .and_then(|content| content.room_version)
        .unwrap_or_else(|| "1".to_owned())
}

#[cfg(test)]
mod tests {
    use ruma::events::StateEventType;
    use serde_json::json;

    use super::*;
    use crate::service::rooms::{
        testing::{TestRoom, assert_matches, legacy_room_id, new_pdu, pdu, user},
        version::RoomVersion,
    };

    /// A room on the resident, the state before dave's join, its auth
    /// chain, and the join.
    fn answer(version: RoomVersion) -> (TestRoom, Vec<Pdu>, Vec<Pdu>, Pdu) {
        let mut room = TestRoom::standard(version);
        room.ok("alice", "m.room.name", Some(""), json!({ "name": "Lobby" }));
        let state: Vec<Pdu> = room
            .state
            .values()
            .map(|id| room.events[id].clone())
            .collect();
        let auth_chain: Vec<Pdu> = room.events.values().cloned().collect();
        let join = room.build(
            "dave",
            "m.room.member",
            Some(user("dave").as_str()),
            json!({ "membership": "join" }),
        );
        (room, state, auth_chain, join)
    }

    const VERSIONS: [RoomVersion; 2] = [RoomVersion::V10, RoomVersion::V12];

    #[test]
    fn a_whole_answer_is_taken() {
        for version in VERSIONS {
            let (room, state, auth_chain, join) = answer(version);
            let joined =
                check_join_answer(&room.room_id(), join.clone(), state.clone(), auth_chain)
                    .unwrap_or_else(|e| panic!("{version}: {e}"));
            assert_eq!(joined.state.len(), state.len());
            assert_eq!(joined.join.event_id(), join.event_id());
            assert!(
                joined
                    .auth_chain
                    .iter()
                    .all(|pdu| !state.iter().any(|s| s.event_id() == pdu.event_id())),
                "state events are not repeated as auth chain"
            );
        }
    }

    #[test]
    fn a_state_event_that_fails_its_auth_events_fails_the_join() {
        for version in VERSIONS {
            let (mut room, mut state, auth_chain, join) = answer(version);
            // charlie (power 0) sets the name: the rules refuse it, but
            // a hostile resident puts it in the state.
            let forged = room.build(
                "charlie",
                "m.room.name",
                Some(""),
                json!({ "name": "Mine" }),
            );
            state.retain(|pdu| {
                pdu.state_map_key() != Some((StateEventType::RoomName, String::new()))
            });
            state.push(forged.clone());
            let error = check_join_answer(&room.room_id(), join, state, auth_chain).unwrap_err();
            assert_matches!(error, AnswerError::Unauthorized { ref event, .. } if *event == forged.event_id(), "{version}");
        }
    }

    #[test]
    fn an_event_of_another_room_fails_the_join() {
        for version in VERSIONS {
            let (room, mut state, auth_chain, join) = answer(version);
            let elsewhere = ruma::OwnedRoomId::try_from("!elsewhere:a.test").expect("room id");
            let stray = pdu(
                version,
                new_pdu(
                    Some(elsewhere),
                    &user("mallory"),
                    "m.room.topic",
                    Some(""),
                    json!({ "topic": "x" }),
                ),
            );
            state.push(stray.clone());
            let error = check_join_answer(&room.room_id(), join, state, auth_chain).unwrap_err();
            assert_matches!(error, AnswerError::WrongRoom(ref id) if *id == stray.event_id(), "{version}");
        }
    }

    #[test]
    fn a_state_without_its_create_event_or_of_another_version_fails_the_join() {
        for version in VERSIONS {
            let (room, state, auth_chain, join) = answer(version);
            let without: Vec<Pdu> = state
                .iter()
                .filter(|pdu| *pdu.kind() != TimelineEventType::RoomCreate)
                .cloned()
                .collect();
            let error =
                check_join_answer(&room.room_id(), join.clone(), without, auth_chain.clone())
                    .unwrap_err();
            assert_matches!(error, AnswerError::NoCreateEvent, "{version}");
        }
        // A version 10 room whose create event says 11.
        let version = RoomVersion::V10;
        let creator = user("alice");
        let body = json!({ "room_version": "11", "creator": creator });
        let create = pdu(
            version,
            new_pdu(
                Some(legacy_room_id()),
                &creator,
                "m.room.create",
                Some(""),
                body,
            ),
        );
        let mut room = TestRoom::with_create(version, create.clone());
        let join = room.build(
            "alice",
            "m.room.member",
            Some(creator.as_str()),
            json!({ "membership": "join" }),
        );
        let error = check_join_answer(&room.room_id(), join, vec![create.clone()], vec![create])
            .unwrap_err();
        assert_matches!(error, AnswerError::WrongVersion(ref v) if v == "11");
    }

    #[test]
    fn a_join_the_state_refuses_fails() {
        for version in VERSIONS {
            let (mut room, state, auth_chain, _) = answer(version);
            // Someone else's join for dave: the sender must be the target.
            let join = room.build(
                "charlie",
                "m.room.member",
                Some(user("dave").as_str()),
                json!({ "membership": "join" }),
            );
            let error =
                check_join_answer(&room.room_id(), join.clone(), state, auth_chain).unwrap_err();
            assert_matches!(error, AnswerError::Unauthorized { ref event, .. } if *event == join.event_id(), "{version}");
        }
    }

    #[test]
    fn an_auth_chain_missing_a_cited_event_fails_the_join() {
        for version in VERSIONS {
            let (room, state, auth_chain, join) = answer(version);
            let power_levels = room
                .state_event(&StateEventType::RoomPowerLevels, "")
                .expect("power levels");
            let state: Vec<Pdu> = state
                .into_iter()
                .filter(|pdu| pdu.event_id() != power_levels.event_id())
                .collect();
            let auth_chain: Vec<Pdu> = auth_chain
                .into_iter()
                .filter(|pdu| pdu.event_id() != power_levels.event_id())
                .collect();
            let error = check_join_answer(&room.room_id(), join, state, auth_chain).unwrap_err();
            assert_matches!(error, AnswerError::Unauthorized { .. }, "{version}");
        }
    }
}
