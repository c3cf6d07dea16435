//! The events the SDK hands to applications, parsed leniently: an event
//! that lacks what every event must have is dropped (and logged by id
//! only), never a reason to fail a whole sync.

use ruma::{OwnedEventId, OwnedUserId};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A room event from a timeline, a state block or `/messages`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoomEvent {
    /// `event_id`.
    pub event_id: OwnedEventId,
    /// `sender`.
    pub sender: OwnedUserId,
    /// `type`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// `state_key`, for state events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_key: Option<String>,
    /// `content` (`{}` once redacted).
    #[serde(default)]
    pub content: Value,
    /// `origin_server_ts`, milliseconds since the epoch.
    #[serde(default)]
    pub origin_server_ts: u64,
    /// `unsigned` (`transaction_id` for our own events, `redacted_because`).
    #[serde(default)]
    pub unsigned: Value,
    /// Top-level `redacts` of redactions in room versions before 11.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redacts: Option<OwnedEventId>,
}

impl RoomEvent {
    /// Parses one event; `None` if it lacks an id, sender or type.
    pub fn from_json(json: Value) -> Option<Self> {
        serde_json::from_value(json).ok()
    }

    /// Whether this is a state event.
    pub fn is_state(&self) -> bool {
        self.state_key.is_some()
    }

    /// `content.body`, for messages.
    pub fn body(&self) -> Option<&str> {
        self.content.get("body").and_then(Value::as_str)
    }

    /// The event a redaction redacts: `content.redacts` (room version 11
    /// and later) or the top-level `redacts` (earlier versions).
    pub fn redacted_event_id(&self) -> Option<OwnedEventId> {
        self.content
            .get("redacts")
            .and_then(Value::as_str)
            .and_then(|id| OwnedEventId::try_from(id).ok())
            .or_else(|| self.redacts.clone())
    }

    /// `unsigned.transaction_id`: present on our own device's events.
    pub fn transaction_id(&self) -> Option<&str> {
        self.unsigned.get("transaction_id").and_then(Value::as_str)
    }
}

/// A stripped state event: what an invite shows of the room.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StrippedStateEvent {
    /// `sender`.
    pub sender: OwnedUserId,
    /// `type`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// `state_key`.
    pub state_key: String,
    /// `content`.
    #[serde(default)]
    pub content: Value,
}

/// A to-device event (`m.room.encrypted`, `m.room_key_request`, ...). Its
/// content is for the crypto layer; the SDK never logs it.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct ToDeviceEvent {
    /// `sender`.
    pub sender: OwnedUserId,
    /// `type`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// `content`.
    #[serde(default)]
    pub content: Value,
}

impl std::fmt::Debug for ToDeviceEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ToDeviceEvent")
            .field("sender", &self.sender)
            .field("event_type", &self.event_type)
            .finish_non_exhaustive()
    }
}

/// Parses each JSON value as `T`, dropping (and counting in a log line)
/// those that do not fit.
pub(crate) fn parse_each<T: serde::de::DeserializeOwned>(values: Vec<Value>, what: &str) -> Vec<T> {
    let total = values.len();
    let parsed: Vec<T> = values
        .into_iter()
        .filter_map(|value| serde_json::from_value(value).ok())
        .collect();
    if parsed.len() < total {
        tracing::warn!(
            dropped = total - parsed.len(),
            kind = what,
            "malformed events dropped"
        );
    }
    parsed
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::{RoomEvent, ToDeviceEvent, parse_each};

    #[test]
    fn malformed_events_are_dropped_not_fatal() {
        let events: Vec<RoomEvent> = parse_each(
            vec![
                json!({"event_id": "$a", "sender": "@a:x", "type": "m.room.message",
                       "content": {"body": "hi"}, "origin_server_ts": 1}),
                json!({"sender": "@a:x", "type": "m.room.message"}),
                json!({"event_id": "$b", "sender": "not a user", "type": "t"}),
                json!("garbage"),
            ],
            "timeline",
        );
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].body(), Some("hi"));
    }

    #[test]
    fn to_device_debug_hides_content() {
        let event: ToDeviceEvent = serde_json::from_value(
            json!({"sender": "@a:x", "type": "m.room.encrypted", "content": {"ciphertext": "SECRET"}}),
        )
        .unwrap();
        assert!(!format!("{event:?}").contains("SECRET"));
    }
}
