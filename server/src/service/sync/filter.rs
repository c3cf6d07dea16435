//! Sync filters (spec-notes/sync.md, "Filters").
//!
//! <https://spec.matrix.org/v1.16/client-server-api/#filtering>: unknown
//! fields are ignored, as the spec allows for fields a server does not support.

use std::collections::HashSet;

use ruma::{OwnedRoomId, OwnedUserId, RoomId, UserId};
use serde::Deserialize;

/// Default number of timeline events per room.
pub const DEFAULT_TIMELINE_LIMIT: u32 = 10;
/// Most timeline events per room a client may ask for.
pub const MAX_TIMELINE_LIMIT: u32 = 500;

/// A sync filter.
///
/// Every field the spec defines is parsed with its type, so a filter with
/// a wrong type anywhere is refused (`M_BAD_JSON`), as Synapse's schema
/// check does; fields this server does not apply are still type-checked.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Filter {
    /// Only these fields of the room events returned (dotted paths,
    /// [`super::event_fields`]).
    #[serde(default)]
    pub event_fields: Option<Vec<String>>,
    /// The format of the events returned.
    #[serde(default)]
    pub event_format: EventFormat,
    /// Presence events (`m.presence`, sent by the user they describe).
    #[serde(default)]
    pub presence: EventFilter,
    /// Global account data (sent by the user).
    #[serde(default)]
    pub account_data: EventFilter,
    /// Filters on rooms.
    #[serde(default)]
    pub room: RoomFilter,
}

/// `event_format`: how events are shaped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventFormat {
    /// The client-server format.
    #[default]
    Client,
    /// The PDU as servers exchange it.
    Federation,
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
    pub state: EventFilter,
    /// Receipts (`m.receipt`, each user's receipts sent by that user) and
    /// typing (`m.typing`, which has no sender).
    #[serde(default)]
    pub ephemeral: EventFilter,
    /// Room account data (sent by the user).
    #[serde(default)]
    pub account_data: EventFilter,
}

/// A filter on room events (the spec's `RoomEventFilter`, which is also
/// its `StateFilter`).
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
    /// Only these rooms (applied to ephemeral events and room account
    /// data; for the timeline and state the room filter's `rooms` applies).
    #[serde(default)]
    pub rooms: Option<HashSet<OwnedRoomId>>,
    /// Never these rooms (as `rooms`).
    #[serde(default)]
    pub not_rooms: HashSet<OwnedRoomId>,
    /// Only events with (or without) a `url` (type-checked, not applied).
    #[serde(default)]
    pub contains_url: Option<bool>,
    /// Send only the members needed to show the events returned.
    #[serde(default)]
    pub lazy_load_members: bool,
    /// With `lazy_load_members`: send those members again even when this
    /// client was sent them before.
    #[serde(default)]
    pub include_redundant_members: bool,
    /// Per-thread unread counts (type-checked, not applied).
    #[serde(default)]
    pub unread_thread_notifications: bool,
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
    /// The timeline limit, defaulted and capped; 0 asks for no events.
    pub fn limit(&self) -> u32 {
        self.limit
            .unwrap_or(DEFAULT_TIMELINE_LIMIT)
            .min(MAX_TIMELINE_LIMIT)
    }

    /// The limit the client gave, for the kinds that have no default one
    /// (presence, account data, ephemeral events).
    pub fn given_limit(&self) -> Option<usize> {
        self.limit
            .map(|limit| usize::try_from(limit).unwrap_or(usize::MAX))
    }

    /// Whether the filter lets events of this room through (`rooms`,
    /// `not_rooms`).
    pub fn allows_room(&self, room_id: &RoomId) -> bool {
        self.rooms
            .as_ref()
            .is_none_or(|rooms| rooms.contains(room_id))
            && !self.not_rooms.contains(room_id)
    }

    /// Keeps the events `allows` lets through (the filter's own test,
    /// given how to read an event's type and sender), at most the filter's
    /// limit of them (the first ones).
    pub fn retain_limited<T>(&self, events: &mut Vec<T>, allows: impl Fn(&Self, &T) -> bool) {
        events.retain(|event| allows(self, event));
        if let Some(limit) = self.given_limit() {
            events.truncate(limit);
        }
    }

    /// Whether lazy-loading may leave out members this client was sent
    /// before.
    pub fn omits_redundant_members(&self) -> bool {
        self.lazy_load_members && !self.include_redundant_members
    }

    /// Whether an event type passes.
    pub fn allows_type(&self, kind: &str) -> bool {
        allows(self.types.as_deref(), &self.not_types, kind)
    }

    /// Whether an event of this type from this sender passes.
    pub fn allows_event(&self, kind: &str, sender: &UserId) -> bool {
        self.allows_type(kind) && self.allows_sender(sender)
    }

    /// Whether events from this sender pass.
    pub fn allows_sender(&self, sender: &UserId) -> bool {
        self.senders
            .as_ref()
            .is_none_or(|senders| senders.contains(sender))
            && !self.not_senders.contains(sender)
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

    #[test]
    fn wrong_types_anywhere_are_refused() {
        for json in [
            r#"{"room":{"state":{"lazy_load_members":"true"}}}"#,
            r#"{"room":{"state":{"lazy_load_members":1}}}"#,
            r#"{"room":{"timeline":{"include_redundant_members":"yes"}}}"#,
            r#"{"room":{"timeline":{"limit":-1}}}"#,
            r#"{"room":{"timeline":{"contains_url":"no"}}}"#,
            r#"{"room":{"ephemeral":{"types":"m.typing"}}}"#,
            r#"{"room":{"include_leave":null}}"#,
            r#"{"event_format":"xml"}"#,
            r#"{"event_fields":"content"}"#,
            r#"{"presence":{"not_types":[1]}}"#,
            r#"{"room":[]}"#,
        ] {
            assert!(
                serde_json::from_str::<Filter>(json).is_err(),
                "{json} parsed"
            );
        }
        let filter: Filter = serde_json::from_str(
            r#"{"event_format":"federation","room":{"timeline":{"limit":0},"state":{"lazy_load_members":true,"include_redundant_members":false}},"org.example.unknown":1}"#,
        )
        .unwrap();
        assert_eq!(filter.event_format, EventFormat::Federation);
        assert_eq!(filter.room.timeline.limit(), 0);
        assert!(filter.room.state.omits_redundant_members());
    }
}
