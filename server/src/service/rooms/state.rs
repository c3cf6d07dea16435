//! A room's current state, and the state groups that record it.
//!
//! [`RoomState`] is what the write path keeps in memory per room: the
//! state event in each slot, an index of memberships, the forward
//! extremities, and where the room stands in its state groups. Moving it
//! past an authorized event ([`RoomState::advance`]) also says which state
//! group the event lands in and, for a state event, the group to write: a
//! one-entry delta on the current group, or a full snapshot when the delta
//! chain has grown as long as the state is large (see [`max_delta_chain`]).
//!
//! Pure like the rest of [`super`]: the caller loads and persists.

use std::collections::{BTreeMap, HashMap};

use ruma::{EventId, OwnedEventId, UserId, events::StateEventType, state_res::StateMap};
use serde::Deserialize;

use super::{pdu::Pdu, version::RoomVersion};
use crate::storage::{NewStateGroup, StateEntry};

/// The shortest delta chain after which a state group is written as a full
/// snapshot (see [`max_delta_chain`]).
const MIN_STATE_DELTA_CHAIN: usize = 64;

/// A room's state as of its latest event.
#[derive(Debug, Clone)]
pub struct RoomState {
    /// The room version.
    pub version: RoomVersion,
    /// `(type, state key)` to the event holding it; changed only through
    /// [`RoomState::put`], which keeps `members` in step.
    slots: HashMap<(StateEventType, String), Pdu>,
    /// Each member's membership by user id, sorted: what sends (who to
    /// wake), syncs (counts and heroes) and receipts ask of a room at every
    /// turn, without parsing every member event each time.
    members: BTreeMap<String, String>,
    /// The forward extremities: whole events, since room versions 1 and 2
    /// cite them with their reference hashes.
    extremities: Vec<Pdu>,
    depth: i64,
    /// `None` for a state no group records yet (the resolution of several
    /// states before an event from another server).
    state_group: Option<i64>,
    chain_length: i32,
}

/// Where the room stands in the DAG and in its state groups, as storage
/// records it (the room's head).
#[derive(Debug, Clone)]
pub struct Head {
    /// The forward extremities.
    pub extremities: Vec<Pdu>,
    /// The greatest depth of the room's events.
    pub depth: i64,
    /// The state group of the current state.
    pub state_group: i64,
    /// How many deltas that group follows since the last snapshot.
    pub chain_length: i32,
}

/// What an event moved the room's state groups to.
#[derive(Debug)]
pub struct StateGroupChange {
    /// The group holding the state after the event.
    pub state_group: i64,
    /// The group to write with it (for a state event).
    pub new_group: Option<NewStateGroup>,
}

impl RoomState {
    /// A new room's state (no events yet).
    pub fn empty(version: RoomVersion) -> Self {
        Self::with_head(
            version,
            [],
            Head {
                extremities: Vec::new(),
                depth: 0,
                state_group: 0,
                chain_length: 0,
            },
        )
    }

    /// The state holding `events`, at `head`.
    pub fn with_head(
        version: RoomVersion,
        events: impl IntoIterator<Item = Pdu>,
        head: Head,
    ) -> Self {
        let mut state = Self {
            version,
            slots: HashMap::new(),
            members: BTreeMap::new(),
            extremities: head.extremities,
            depth: head.depth,
            state_group: Some(head.state_group),
            chain_length: head.chain_length,
        };
        for pdu in events {
            state.put(pdu);
        }
        state
    }

    /// The state before an event that does not follow the room's current
    /// state (an event from another server): `events`, recorded in
    /// `state_group` when it is the state after one stored event, or in no
    /// group yet when it is a resolution of several. `extremities` and
    /// `depth` are the room's, so that advancing past the event says what
    /// they become. The next state group written from it is a snapshot.
    pub fn before_event(
        version: RoomVersion,
        events: impl IntoIterator<Item = Pdu>,
        extremities: Vec<Pdu>,
        depth: i64,
        state_group: Option<i64>,
    ) -> Self {
        let mut state = Self::with_head(
            version,
            events,
            Head {
                extremities,
                depth,
                state_group: 0,
                // Its delta chain is unknown here: snapshot next.
                chain_length: i32::MAX,
            },
        );
        state.state_group = state_group;
        state
    }

    /// The room's current state where the DAG forked: `events`, the
    /// resolution of the forks' states, recorded in a new group numbered
    /// `state_group`, which is returned to be written (a snapshot).
    pub fn resolved(
        version: RoomVersion,
        events: impl IntoIterator<Item = Pdu>,
        extremities: Vec<Pdu>,
        depth: i64,
        state_group: i64,
    ) -> (Self, NewStateGroup) {
        let state = Self::with_head(
            version,
            events,
            Head {
                extremities,
                depth,
                state_group,
                chain_length: 0,
            },
        );
        let snapshot = state.snapshot();
        (state, snapshot)
    }

    /// The state event in one slot.
    pub fn get(&self, event_type: &StateEventType, state_key: &str) -> Option<&Pdu> {
        self.slots.get(&(event_type.clone(), state_key.to_owned()))
    }

    /// How many slots are filled.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether no slot is filled (a room being created).
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Every state event.
    pub fn events(&self) -> impl Iterator<Item = &Pdu> {
        self.slots.values()
    }

    /// Every state event, taken out.
    pub fn into_events(self) -> impl Iterator<Item = Pdu> {
        self.slots.into_values()
    }

    /// The state event with this id, if it is current.
    pub fn event_by_id(&self, event_id: &EventId) -> Option<&Pdu> {
        self.slots.values().find(|pdu| pdu.event_id() == event_id)
    }

    /// The forward extremities.
    pub fn extremities(&self) -> &[Pdu] {
        &self.extremities
    }

    /// The greatest depth of the room's events.
    pub fn depth(&self) -> i64 {
        self.depth
    }

    /// The state group that records this state (`None` for a resolved
    /// state not recorded yet).
    pub fn state_group(&self) -> Option<i64> {
        self.state_group
    }

    /// `(type, state key)` to event id, as state resolution takes it.
    pub fn state_map(&self) -> StateMap<OwnedEventId> {
        self.slots
            .iter()
            .map(|(slot, pdu)| (slot.clone(), pdu.event_id().to_owned()))
            .collect()
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

    /// The state events that describe the room to someone invited to it
    /// or knocking on it (its stripped state): what names and describes
    /// it, and the membership of `sender` (the inviter; a knock is its own
    /// sender's, left out by the caller).
    pub fn describing_events<'s>(&'s self, sender: &UserId) -> impl Iterator<Item = &'s Pdu> + 's {
        let described = [
            StateEventType::RoomCreate,
            StateEventType::RoomJoinRules,
            StateEventType::RoomName,
            StateEventType::RoomAvatar,
            StateEventType::RoomCanonicalAlias,
            StateEventType::RoomEncryption,
            // An invitee's client can tell an E2E-only room before
            // joining it (spec-notes/e2e-only-rooms.md).
            StateEventType::from(super::e2e_policy::POLICY_EVENT_TYPE),
            StateEventType::RoomTopic,
        ]
        .into_iter()
        .filter_map(|kind| self.get(&kind, ""));
        described.chain(self.get(&StateEventType::RoomMember, sender.as_str()))
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

    /// Moves the state past an authorized event. A state event fills its
    /// slot and gets a new state group, numbered `new_group_id` (as does
    /// any event on a state no group records yet); `redacted` is the
    /// redacted form of a current state event the event redacts, which
    /// takes its place. The event replaces the extremities it cites (a
    /// local event cites them all, and is left alone).
    pub fn advance(
        &mut self,
        pdu: &Pdu,
        redacted: Option<Pdu>,
        new_group_id: i64,
    ) -> StateGroupChange {
        let key = pdu.state_map_key();
        let new_group = match (&key, self.state_group) {
            (Some(key), _) => Some(self.next_state_group(key, pdu.event_id())),
            (None, None) => Some(self.snapshot()),
            (None, Some(_)) => None,
        };
        let state_group = match (&new_group, self.state_group) {
            (None, Some(current)) => current,
            _ => new_group_id,
        };
        if let Some(group) = &new_group {
            self.chain_length = group.chain_length;
        }
        self.state_group = Some(state_group);
        let cited = pdu.prev_events();
        self.extremities
            .retain(|extremity| !cited.iter().any(|id| id == extremity.event_id()));
        self.extremities.push(pdu.clone());
        self.depth = self.depth.max(i64::from(pdu.depth()));
        if let Some(redacted) = redacted {
            self.put(redacted);
        }
        self.put(pdu.clone());
        StateGroupChange {
            state_group,
            new_group,
        }
    }

    /// A full snapshot of this state, as a state group.
    pub fn snapshot(&self) -> NewStateGroup {
        NewStateGroup {
            prev_group: None,
            chain_length: 0,
            entries: self
                .slots
                .iter()
                .map(|(slot, pdu)| state_entry(slot, pdu.event_id()))
                .collect(),
        }
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
        self.slots.insert(key, pdu);
    }

    /// The state group written with a state event in slot `key`: a
    /// one-entry delta on the current group, or a full snapshot when the
    /// room is new or the delta chain is at its limit.
    fn next_state_group(
        &self,
        key: &(StateEventType, String),
        event_id: &EventId,
    ) -> NewStateGroup {
        let chain_length = usize::try_from(self.chain_length).unwrap_or(usize::MAX);
        match self.state_group {
            Some(prev_group)
                if !self.slots.is_empty() && chain_length < max_delta_chain(self.slots.len()) =>
            {
                NewStateGroup {
                    prev_group: Some(prev_group),
                    chain_length: self.chain_length + 1,
                    entries: vec![state_entry(key, event_id)],
                }
            }
            _ => {
                let mut entries: Vec<StateEntry> = self
                    .slots
                    .iter()
                    .filter(|(slot, _)| *slot != key)
                    .map(|(slot, pdu)| state_entry(slot, pdu.event_id()))
                    .collect();
                entries.push(state_entry(key, event_id));
                NewStateGroup {
                    prev_group: None,
                    chain_length: 0,
                    entries,
                }
            }
        }
    }
}

fn state_entry((kind, state_key): &(StateEventType, String), event_id: &EventId) -> StateEntry {
    StateEntry {
        event_type: kind.to_string(),
        state_key: state_key.clone(),
        event_id: event_id.to_owned(),
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
pub fn join_rule(pdu: &Pdu) -> Option<String> {
    #[derive(Deserialize)]
    struct Content {
        join_rule: String,
    }
    serde_json::from_str::<Content>(pdu.content().get())
        .ok()
        .map(|c| c.join_rule)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::rooms::testing::{legacy_room_id, new_pdu, pdu, user};

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
        let mut state = RoomState::empty(version);
        for event in [member("carol", "invite"), member("alice", "join"), topic] {
            state.put(event);
        }
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

    #[test]
    fn a_state_event_starts_a_delta_group_and_a_message_stays_in_it() {
        let version = RoomVersion::V10;
        let alice = user("alice");
        let event = |kind: &str, state_key: Option<&str>| {
            pdu(
                version,
                new_pdu(
                    Some(legacy_room_id()),
                    &alice,
                    kind,
                    state_key,
                    serde_json::json!({ "membership": "join", "body": "b" }),
                ),
            )
        };
        let mut state = RoomState::empty(version);
        let first = state.advance(&event("m.room.member", Some(alice.as_str())), None, 7);
        let snapshot = first.new_group.expect("a state event writes a group");
        assert_eq!(
            (first.state_group, snapshot.prev_group),
            (7, None),
            "a new room snapshots"
        );
        let message = state.advance(&event("m.room.message", None), None, 8);
        assert_eq!(
            message.state_group, 7,
            "a message stays in the group before it"
        );
        assert!(message.new_group.is_none());
        let topic = state.advance(&event("m.room.topic", Some("")), None, 9);
        let delta = topic.new_group.expect("a state event writes a group");
        assert_eq!(
            (topic.state_group, delta.prev_group, delta.entries.len()),
            (9, Some(7), 1)
        );
        assert_eq!(state.state_group(), Some(9));
        // These events cite no prev_events, so each leaves the others.
        assert_eq!(state.extremities().len(), 3);
    }
}
