//! The parts of a sync filter that Myelin applies.
//!
//! <https://spec.matrix.org/v1.16/client-server-api/#filtering>: unknown
//! fields are ignored, as the spec allows for fields a server does not support.

use std::collections::HashSet;

use ruma::{OwnedRoomId, OwnedUserId, UserId};
use serde::Deserialize;

/// Default number of timeline events per room.
pub const DEFAULT_TIMELINE_LIMIT: u32 = 10;
/// Most timeline events per room a client may ask for.
pub const MAX_TIMELINE_LIMIT: u32 = 500;

/// A sync filter.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Filter {
    /// Filters on rooms.
    #[serde(default)]
    pub room: RoomFilter,
}

/// `filter.room`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RoomFilter {
    /// Only these rooms.
    pub rooms: Option<HashSet<OwnedRoomId>>,
    /// Never these rooms.
    #[serde(default)]
    pub not_rooms: HashSet<OwnedRoomId>,
    /// Also rooms the user has left (initial sync).
    #[serde(default)]
    pub include_leave: bool,
    /// The timeline.
    #[serde(default)]
    pub timeline: EventFilter,
    /// The state.
    #[serde(default)]
    pub state: StateFilter,
}

/// A filter on room events.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct EventFilter {
    /// Most events to return.
    pub limit: Option<u32>,
    /// Only these types (`*` wildcards allowed).
    pub types: Option<Vec<String>>,
    /// Never these types (`*` wildcards allowed).
    #[serde(default)]
    pub not_types: Vec<String>,
    /// Only events from these senders.
    pub senders: Option<HashSet<OwnedUserId>>,
    /// Never events from these senders.
    #[serde(default)]
    pub not_senders: HashSet<OwnedUserId>,
    /// On `/messages`: send the memberships of the chunk's senders.
    #[serde(default)]
    pub lazy_load_members: bool,
}

/// A filter on room state.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct StateFilter {
    /// Send only the members needed to show the timeline.
    #[serde(default)]
    pub lazy_load_members: bool,
    /// Only these types.
    pub types: Option<Vec<String>>,
    /// Never these types.
    #[serde(default)]
    pub not_types: Vec<String>,
}

impl RoomFilter {
    /// Whether the filter lets the room through.
    pub fn allows_room(&self, room_id: &OwnedRoomId) -> bool {
        self.rooms
            .as_ref()
            .is_none_or(|rooms| rooms.contains(room_id))
            && !self.not_rooms.contains(room_id)
    }
}

impl EventFilter {
    /// The timeline limit, defaulted and capped.
    pub fn limit(&self) -> u32 {
        self.limit
            .unwrap_or(DEFAULT_TIMELINE_LIMIT)
            .clamp(1, MAX_TIMELINE_LIMIT)
    }

    /// Whether an event type passes.
    pub fn allows_type(&self, kind: &str) -> bool {
        allows(self.types.as_deref(), &self.not_types, kind)
    }

    /// Whether an event of this type from this sender passes.
    pub fn allows_event(&self, kind: &str, sender: &UserId) -> bool {
        self.allows_type(kind)
            && self
                .senders
                .as_ref()
                .is_none_or(|senders| senders.contains(sender))
            && !self.not_senders.contains(sender)
    }
}

impl StateFilter {
    /// Whether a state event type passes.
    pub fn allows_type(&self, kind: &str) -> bool {
        allows(self.types.as_deref(), &self.not_types, kind)
    }
}

fn allows(types: Option<&[String]>, not_types: &[String], kind: &str) -> bool {
    types.is_none_or(|types| types.iter().any(|pattern| matches(pattern, kind)))
        && !not_types.iter().any(|pattern| matches(pattern, kind))
}

/// The spec's type patterns: `*` matches any run of characters.
fn matches(pattern: &str, kind: &str) -> bool {
    let mut parts = pattern.split('*');
    let Some(first) = parts.next() else {
        return pattern == kind;
    };
    let Some(mut rest) = kind.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    if parts.is_empty() {
        return rest.is_empty();
    }
    for (index, part) in parts.iter().enumerate() {
        if index == parts.len() - 1 {
            return rest.ends_with(part);
        }
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_as_the_spec_says() {
        assert!(matches("m.room.*", "m.room.message"));
        assert!(matches("*", "anything"));
        assert!(matches("m.*.message", "m.room.message"));
        assert!(!matches("m.room.*", "m.call.invite"));
        assert!(matches("m.room.message", "m.room.message"));
        assert!(!matches("m.room.message", "m.room.messages"));
    }

    #[test]
    fn types_and_not_types_combine() {
        let filter: EventFilter = serde_json::from_str(
            r#"{"types":["m.room.*"],"not_types":["m.room.member"],"limit":5000}"#,
        )
        .unwrap();
        assert!(filter.allows_type("m.room.message"));
        assert!(!filter.allows_type("m.room.member"));
        assert!(!filter.allows_type("org.example"));
        assert_eq!(filter.limit(), MAX_TIMELINE_LIMIT);
    }
}
