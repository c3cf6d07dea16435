//! Which member events each sync stream was sent, so lazy-loading sends
//! each member once (spec: "Lazy-loading room members": the server "MAY
//! assume that clients will remember membership events they have already
//! been sent"). See spec-notes/sync.md, "Lazy-loaded members".
//!
//! A stream is one device syncing with one filter. Each member event is
//! remembered with the position of the response that carried it, and a
//! client counts as having it only when its `since` token is at or past
//! that position: a client that retries an older token (its last response
//! got lost) is sent the members again. A changed member event has another
//! id, so it is never mistaken for the one remembered.
//!
//! Per process and bounded, like Synapse's lazy-loaded members cache:
//! forgetting only costs a member event sent again.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Mutex;

use ruma::{
    DeviceId, EventId, OwnedDeviceId, OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, UserId,
};

use crate::storage::StreamPosition;

/// Most sync streams remembered; the least recently used go first.
const MAX_STREAMS: usize = 1024;
/// Most member events remembered per stream; the earliest sent go first.
const MAX_MEMBERS_PER_STREAM: usize = 256;

/// One device syncing with one filter.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StreamKey {
    user_id: OwnedUserId,
    device_id: OwnedDeviceId,
    /// A hash of how the client named the filter, so an inline filter's
    /// JSON is not kept. Two filters of one device that collide share a
    /// record, which costs that device members left out; nobody else's.
    filter: u64,
}

impl StreamKey {
    /// The stream of a device syncing with the filter `filter` names
    /// (its id, or its inline JSON).
    pub fn new(user_id: &UserId, device_id: &DeviceId, filter: &str) -> Self {
        let mut hasher = std::hash::DefaultHasher::new();
        filter.hash(&mut hasher);
        Self {
            user_id: user_id.to_owned(),
            device_id: device_id.to_owned(),
            filter: hasher.finish(),
        }
    }
}

/// The member events sent to each stream.
#[derive(Debug, Default)]
pub struct LazyMembers {
    streams: Mutex<Streams>,
}

#[derive(Debug, Default)]
struct Streams {
    by_key: HashMap<StreamKey, Stream>,
    /// Bumped on every use, to find the least recently used stream.
    clock: u64,
}

#[derive(Debug, Default)]
struct Stream {
    last_used: u64,
    /// `(room, member)` to the member event sent and the position of the
    /// response that carried it.
    sent: HashMap<(OwnedRoomId, OwnedUserId), (OwnedEventId, StreamPosition)>,
}

impl LazyMembers {
    /// Whether a client of `stream` syncing from `since` already has
    /// `event_id` as `member`'s membership in the room.
    pub fn has(
        &self,
        stream: &StreamKey,
        since: StreamPosition,
        room_id: &RoomId,
        member: &UserId,
        event_id: &EventId,
    ) -> bool {
        let streams = self.lock();
        streams
            .by_key
            .get(stream)
            .and_then(|s| s.sent.get(&(room_id.to_owned(), member.to_owned())))
            .is_some_and(|(sent, at)| sent == event_id && *at <= since)
    }

    /// Forgets what `stream` was sent: an initial sync starts afresh.
    pub fn reset(&self, stream: &StreamKey) {
        self.lock().by_key.remove(stream);
    }

    /// Remembers that the response ending at `position` carried these
    /// member events (`(member, event id)`) of the room.
    pub fn record<'a>(
        &self,
        stream: &StreamKey,
        position: StreamPosition,
        room_id: &RoomId,
        members: impl IntoIterator<Item = (&'a UserId, &'a EventId)>,
    ) {
        let mut members = members.into_iter().peekable();
        if members.peek().is_none() {
            return;
        }
        let mut streams = self.lock();
        streams.clock += 1;
        let clock = streams.clock;
        if !streams.by_key.contains_key(stream) && streams.by_key.len() >= MAX_STREAMS {
            evict_least_recently_used(&mut streams.by_key);
        }
        let entry = streams.by_key.entry(stream.clone()).or_default();
        entry.last_used = clock;
        for (member, event_id) in members {
            entry.sent.insert(
                (room_id.to_owned(), member.to_owned()),
                (event_id.to_owned(), position),
            );
        }
        if entry.sent.len() > MAX_MEMBERS_PER_STREAM {
            keep_latest_sent(&mut entry.sent, MAX_MEMBERS_PER_STREAM / 2);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Streams> {
        // A panic while holding the lock leaves a map that is still
        // consistent (every write is one insert or remove).
        self.streams
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Drops the least recently used half of the streams (in one pass, so a
/// full map is not scanned on every new stream).
fn evict_least_recently_used(streams: &mut HashMap<StreamKey, Stream>) {
    let mut uses: Vec<u64> = streams.values().map(|s| s.last_used).collect();
    uses.sort_unstable();
    let cutoff = uses[uses.len() / 2];
    streams.retain(|_, stream| stream.last_used > cutoff);
}

/// Keeps the `keep` members sent most recently.
fn keep_latest_sent(
    sent: &mut HashMap<(OwnedRoomId, OwnedUserId), (OwnedEventId, StreamPosition)>,
    keep: usize,
) {
    let mut positions: Vec<StreamPosition> = sent.values().map(|(_, at)| *at).collect();
    positions.sort_unstable_by(|a, b| b.cmp(a));
    let cutoff = positions[keep.min(positions.len() - 1)];
    sent.retain(|_, (_, at)| *at > cutoff);
}

#[cfg(test)]
mod tests {
    use ruma::{owned_event_id, owned_room_id, owned_user_id};

    use super::*;

    fn stream(device: &str) -> StreamKey {
        StreamKey::new(
            &owned_user_id!("@reader:x"),
            <&DeviceId>::from(device),
            "{}",
        )
    }

    #[test]
    fn a_member_counts_as_sent_from_the_response_that_carried_it() {
        let members = LazyMembers::default();
        let room = owned_room_id!("!r:x");
        let bob = owned_user_id!("@bob:x");
        let join = owned_event_id!("$join");
        members.record(&stream("A"), StreamPosition(10), &room, [(&*bob, &*join)]);
        assert!(members.has(&stream("A"), StreamPosition(10), &room, &bob, &join));
        // A retried older token did not see that response.
        assert!(!members.has(&stream("A"), StreamPosition(9), &room, &bob, &join));
        // Another device, another event, another room: not sent.
        assert!(!members.has(&stream("B"), StreamPosition(10), &room, &bob, &join));
        let rename = owned_event_id!("$rename");
        assert!(!members.has(&stream("A"), StreamPosition(11), &room, &bob, &rename));
        let other = owned_room_id!("!o:x");
        assert!(!members.has(&stream("A"), StreamPosition(11), &other, &bob, &join));
        members.reset(&stream("A"));
        assert!(!members.has(&stream("A"), StreamPosition(10), &room, &bob, &join));
    }

    #[test]
    fn streams_and_members_stay_bounded() {
        let members = LazyMembers::default();
        let room = owned_room_id!("!r:x");
        let event = owned_event_id!("$e");
        for index in 0..MAX_MEMBERS_PER_STREAM * 3 {
            let member = OwnedUserId::try_from(format!("@m{index}:x")).unwrap();
            members.record(
                &stream("A"),
                StreamPosition(index as i64),
                &room,
                [(&*member, &*event)],
            );
        }
        let newest =
            OwnedUserId::try_from(format!("@m{}:x", MAX_MEMBERS_PER_STREAM * 3 - 1)).unwrap();
        assert!(members.has(
            &stream("A"),
            StreamPosition(i64::MAX),
            &room,
            &newest,
            &event
        ));
        for index in 0..MAX_STREAMS * 2 {
            members.record(
                &stream(&format!("D{index}")),
                StreamPosition(1),
                &room,
                [(&*newest, &*event)],
            );
        }
        let streams = members.lock();
        assert!(streams.by_key.len() <= MAX_STREAMS);
        assert!(
            streams
                .by_key
                .values()
                .all(|stream| stream.sent.len() <= MAX_MEMBERS_PER_STREAM)
        );
    }
}
