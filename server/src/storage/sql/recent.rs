//! The newest room events, kept in memory as they commit, so that the
//! questions an incremental sync asks about the last few stream positions
//! (which rooms have news, their new events, the state before them, new
//! unread messages) need no database query.
//!
//! A woken long-poll asked the database five times about events committed
//! a moment earlier, and every query paid a hand-off to a connection's
//! thread and a page cache the commit had made stale: most of a delivery's
//! time on the server (spec-notes/sync.md).
//!
//! The window holds every event this process committed above its *floor*:
//! events enter in commit order right after their commit, before their
//! positions can be published, and leaving raises the floor to the position
//! that left. So a question about a range above the floor is answered
//! exactly, and any other goes to the database. At start the window covers
//! nothing; the first event sets the floor just below itself, above every
//! event a previous process stored.

use std::collections::{HashSet, VecDeque};

use ruma::{EventId, OwnedRoomId, OwnedUserId, RoomId, UserId};

use crate::storage::{StoredEvent, StreamPosition};

/// Events kept at most: a long-polling client is rarely more than a few
/// behind; one that is reads the database.
const MAX_EVENTS: usize = 256;
/// Bytes of event JSON kept at most.
const MAX_JSON_BYTES: usize = 128 * 1024;

/// A committed event with what the window's questions look at.
#[derive(Debug, Clone)]
pub struct RecentEvent {
    /// The event as stored.
    pub event: StoredEvent,
    /// Its type.
    pub event_type: String,
    /// Its sender.
    pub sender: OwnedUserId,
}

/// The window of recent events.
#[derive(Debug, Default)]
pub struct RecentEvents {
    /// In commit order, which is nearly but not exactly position order.
    events: VecDeque<RecentEvent>,
    json_bytes: usize,
    /// Every event committed with a position above it is in the window;
    /// `None` until the first event.
    floor: Option<StreamPosition>,
}

impl RecentEvents {
    /// Adds an event that was just committed (before its position is published).
    pub fn record(&mut self, event: RecentEvent) {
        let floor = self
            .floor
            .get_or_insert(StreamPosition(event.event.position.0 - 1));
        if event.event.position <= *floor {
            // Committed late under a position the window already gave up:
            // questions about it go to the database anyway.
            return;
        }
        self.json_bytes += event.event.json.len();
        self.events.push_back(event);
        while self.events.len() > MAX_EVENTS || self.json_bytes > MAX_JSON_BYTES {
            let Some(oldest) = self.events.pop_front() else {
                break;
            };
            self.json_bytes -= oldest.event.json.len();
            if let Some(floor) = &mut self.floor {
                *floor = (*floor).max(oldest.event.position);
            }
        }
    }

    /// Replaces a kept event's JSON with its redacted form.
    pub fn redact(&mut self, event_id: &EventId, json: &str) {
        if let Some(kept) = self
            .events
            .iter_mut()
            .find(|e| e.event.event_id == event_id)
        {
            self.json_bytes = self.json_bytes - kept.event.json.len() + json.len();
            json.clone_into(&mut kept.event.json);
        }
    }

    /// Whether every event in `(after, …]` is known here.
    fn covers(&self, after: StreamPosition) -> bool {
        self.floor.is_some_and(|floor| after >= floor)
    }

    fn in_range(
        &self,
        after: StreamPosition,
        upto: StreamPosition,
    ) -> impl Iterator<Item = &RecentEvent> {
        self.events
            .iter()
            .filter(move |e| e.event.position > after && e.event.position <= upto)
    }

    /// The rooms with events in `(after, upto]`, when the window covers it.
    pub fn rooms_with_events(
        &self,
        after: StreamPosition,
        upto: StreamPosition,
    ) -> Option<Vec<OwnedRoomId>> {
        if !self.covers(after) {
            return None;
        }
        let rooms: HashSet<&OwnedRoomId> = self
            .in_range(after, upto)
            .map(|e| &e.event.room_id)
            .collect();
        Some(rooms.into_iter().cloned().collect())
    }

    /// A room's events in `(after, upto]` as `RoomStore::room_events`
    /// answers, when the window knows the answer: it covers the range, or
    /// (newest first) holds at least `limit` of the room's events in it.
    pub fn room_events(
        &self,
        room_id: &RoomId,
        after: StreamPosition,
        upto: StreamPosition,
        limit: u32,
        newest_first: bool,
    ) -> Option<Vec<StoredEvent>> {
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        let floor = self.floor?;
        let mut found: Vec<&StoredEvent> = self
            .in_range(after.max(floor), upto)
            .filter(|e| e.event.room_id == room_id)
            .map(|e| &e.event)
            .collect();
        let known = self.covers(after) || (newest_first && found.len() >= limit);
        if !known {
            return None;
        }
        found.sort_unstable_by_key(|event| event.position);
        if newest_first {
            found.reverse();
        }
        Some(found.into_iter().take(limit).cloned().collect())
    }

    /// The state group after the room's last event before `position`,
    /// when that event is in the window.
    pub fn state_group_before(&self, room_id: &RoomId, position: StreamPosition) -> Option<i64> {
        let floor = self.floor?;
        self.in_range(floor, StreamPosition(position.0 - 1))
            .filter(|e| e.event.room_id == room_id)
            .max_by_key(|e| e.event.position)
            .map(|e| e.event.state_group)
    }

    /// How many events in `(after, upto]` of the room, of a type in
    /// `types`, others than `user_id` sent, when the window covers the range.
    pub fn count_from_others(
        &self,
        room_id: &RoomId,
        user_id: &UserId,
        types: &[&str],
        after: StreamPosition,
        upto: StreamPosition,
    ) -> Option<u64> {
        if !self.covers(after) {
            return None;
        }
        let count = self
            .in_range(after, upto)
            .filter(|e| {
                e.event.room_id == room_id
                    && e.sender != user_id
                    && types.contains(&e.event_type.as_str())
            })
            .count();
        Some(count as u64)
    }
}

#[cfg(test)]
mod tests {
    use ruma::{owned_event_id, owned_room_id, owned_user_id, room_id};

    use super::*;

    fn event(position: i64, room: &str, sender: &str, json_len: usize) -> RecentEvent {
        RecentEvent {
            event: StoredEvent {
                position: StreamPosition(position),
                event_id: format!("$e{position}").try_into().expect("event id"),
                room_id: room.try_into().expect("room id"),
                json: "x".repeat(json_len),
                state_group: position * 10,
            },
            event_type: "m.room.message".to_owned(),
            sender: sender.try_into().expect("user id"),
        }
    }

    fn positions(events: &[StoredEvent]) -> Vec<i64> {
        events.iter().map(|e| e.position.0).collect()
    }

    #[test]
    fn an_empty_window_knows_nothing() {
        let window = RecentEvents::default();
        let (zero, ten) = (StreamPosition(0), StreamPosition(10));
        assert!(window.rooms_with_events(zero, ten).is_none());
        assert!(
            window
                .room_events(room_id!("!a:x"), zero, ten, 5, true)
                .is_none()
        );
        assert!(window.state_group_before(room_id!("!a:x"), ten).is_none());
    }

    #[test]
    fn ranges_above_the_floor_are_answered_and_below_it_are_not() {
        let mut window = RecentEvents::default();
        for position in [5, 7, 6] {
            window.record(event(position, "!a:x", "@u:x", 10));
        }
        window.record(event(8, "!b:x", "@u:x", 10));
        let mut rooms = window
            .rooms_with_events(StreamPosition(4), StreamPosition(8))
            .expect("covered");
        rooms.sort();
        assert_eq!(rooms, [owned_room_id!("!a:x"), owned_room_id!("!b:x")]);
        assert_eq!(
            window.rooms_with_events(StreamPosition(7), StreamPosition(7)),
            Some(vec![])
        );
        // Position 4 and below were stored before the window began.
        assert!(
            window
                .rooms_with_events(StreamPosition(3), StreamPosition(8))
                .is_none()
        );
        let a = room_id!("!a:x");
        let newest = window.room_events(a, StreamPosition(4), StreamPosition(8), 2, true);
        assert_eq!(positions(&newest.expect("covered")), [7, 6]);
        let oldest = window.room_events(a, StreamPosition(4), StreamPosition(6), 10, false);
        assert_eq!(positions(&oldest.expect("covered")), [5, 6]);
    }

    #[test]
    fn newest_first_pages_below_the_floor_are_answered_when_the_window_fills_them() {
        let mut window = RecentEvents::default();
        for position in 10..14 {
            window.record(event(position, "!a:x", "@u:x", 10));
        }
        let a = room_id!("!a:x");
        let page = window.room_events(a, StreamPosition(0), StreamPosition(13), 3, true);
        assert_eq!(
            positions(&page.expect("three newest are here")),
            [13, 12, 11]
        );
        assert!(
            window
                .room_events(a, StreamPosition(0), StreamPosition(13), 5, true)
                .is_none(),
            "a fifth event may be older than the window"
        );
        assert!(
            window
                .room_events(a, StreamPosition(0), StreamPosition(13), 3, false)
                .is_none(),
            "the oldest events are not here"
        );
    }

    #[test]
    fn leaving_events_raise_the_floor() {
        let mut window = RecentEvents::default();
        for position in 1..=(MAX_EVENTS as i64 + 2) {
            window.record(event(position, "!a:x", "@u:x", 1));
        }
        // Events 1 and 2 left: the window answers from position 2 on.
        assert!(
            window
                .rooms_with_events(StreamPosition(1), StreamPosition(5))
                .is_none()
        );
        assert!(
            window
                .rooms_with_events(StreamPosition(2), StreamPosition(5))
                .is_some()
        );
        // JSON bytes bound it too: a big event pushes out all the others.
        let last = MAX_EVENTS as i64 + 2;
        window.record(event(5000, "!a:x", "@u:x", MAX_JSON_BYTES));
        assert_eq!(window.events.len(), 1);
        assert!(
            window
                .rooms_with_events(StreamPosition(last), StreamPosition(5000))
                .is_some()
        );
        assert!(
            window
                .rooms_with_events(StreamPosition(last - 1), StreamPosition(5000))
                .is_none()
        );
    }

    #[test]
    fn an_event_committed_below_the_floor_is_left_out() {
        let mut window = RecentEvents::default();
        window.record(event(10, "!a:x", "@u:x", 1));
        window.record(event(8, "!b:x", "@u:x", 1));
        assert_eq!(window.events.len(), 1);
        assert!(
            window
                .rooms_with_events(StreamPosition(7), StreamPosition(10))
                .is_none()
        );
    }

    #[test]
    fn the_state_group_before_a_position_is_the_last_event_s() {
        let mut window = RecentEvents::default();
        for position in [3, 4, 6] {
            window.record(event(position, "!a:x", "@u:x", 1));
        }
        window.record(event(5, "!b:x", "@u:x", 1));
        let a = room_id!("!a:x");
        assert_eq!(window.state_group_before(a, StreamPosition(6)), Some(40));
        assert_eq!(window.state_group_before(a, StreamPosition(7)), Some(60));
        assert_eq!(
            window.state_group_before(a, StreamPosition(3)),
            None,
            "nothing before position 3 is known here"
        );
    }

    #[test]
    fn redactions_replace_kept_json() {
        let mut window = RecentEvents::default();
        window.record(event(1, "!a:x", "@u:x", 100));
        window.redact(&owned_event_id!("$e1"), "{}");
        let page = window
            .room_events(
                room_id!("!a:x"),
                StreamPosition(0),
                StreamPosition(1),
                1,
                true,
            )
            .expect("covered");
        assert_eq!(page[0].json, "{}");
        assert_eq!(window.json_bytes, 2);
    }

    #[test]
    fn counts_messages_from_others_of_the_counted_types() {
        let mut window = RecentEvents::default();
        window.record(event(1, "!a:x", "@me:x", 1));
        window.record(event(2, "!a:x", "@you:x", 1));
        window.record(event(3, "!b:x", "@you:x", 1));
        let mut state = event(4, "!a:x", "@you:x", 1);
        state.event_type = "m.room.topic".to_owned();
        window.record(state);
        window.record(event(5, "!a:x", "@you:x", 1));
        let me = owned_user_id!("@me:x");
        let count = |after, upto| {
            window.count_from_others(
                room_id!("!a:x"),
                &me,
                &["m.room.message"],
                StreamPosition(after),
                StreamPosition(upto),
            )
        };
        assert_eq!(count(0, 5), Some(2));
        assert_eq!(count(2, 4), Some(0));
        assert_eq!(count(-1, 5), None);
    }
}
