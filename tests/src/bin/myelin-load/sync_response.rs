//! What the load tool reads out of a `/sync` answer: the next token, the
//! joined rooms, and the load markers carried by timeline events.

use anyhow::Context;
use serde_json::Value;

/// The content key that carries a load marker in a sent message.
pub const MARKER_KEY: &str = "org.myelin.load.marker";

/// The parts of a sync response the tool needs.
#[derive(Debug, Default, PartialEq)]
pub struct SyncBatch {
    /// The `next_batch` token.
    pub next_batch: String,
    /// Number of rooms under `rooms.join`.
    pub joined_rooms: usize,
    /// Timeline events over all joined rooms.
    pub timeline_events: usize,
    /// Markers found in joined rooms' timeline events, in response order.
    pub markers: Vec<String>,
}

/// Reads a sync response. Only a missing `next_batch` is an error: every
/// other part is optional in the spec, and malformed parts are skipped.
pub fn parse(body: &Value) -> anyhow::Result<SyncBatch> {
    let next_batch = body
        .get("next_batch")
        .and_then(Value::as_str)
        .context("the /sync answer has no string next_batch")?
        .to_owned();
    let mut batch = SyncBatch {
        next_batch,
        ..SyncBatch::default()
    };
    let Some(joined) = body
        .get("rooms")
        .and_then(|r| r.get("join"))
        .and_then(Value::as_object)
    else {
        return Ok(batch);
    };
    batch.joined_rooms = joined.len();
    for room in joined.values() {
        let Some(events) = room
            .get("timeline")
            .and_then(|t| t.get("events"))
            .and_then(Value::as_array)
        else {
            continue;
        };
        batch.timeline_events += events.len();
        batch.markers.extend(
            events
                .iter()
                .filter_map(|e| e.get("content")?.get(MARKER_KEY)?.as_str())
                .map(str::to_owned),
        );
    }
    Ok(batch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn empty_sync_has_only_a_token() {
        let batch = parse(&json!({"next_batch": "s72595_4483_1934"})).expect("valid");
        assert_eq!(
            batch,
            SyncBatch {
                next_batch: "s72595_4483_1934".to_owned(),
                ..SyncBatch::default()
            }
        );
    }

    #[test]
    fn missing_or_non_string_token_is_an_error() {
        assert!(parse(&json!({"rooms": {}})).is_err());
        assert!(parse(&json!({"next_batch": 7})).is_err());
        assert!(parse(&Value::Null).is_err());
        let message = parse(&json!([])).expect_err("not an object").to_string();
        assert!(message.contains("next_batch"), "{message}");
    }

    #[test]
    fn markers_come_from_joined_timelines_in_order() {
        let body = json!({
            "next_batch": "t2",
            "rooms": {
                "join": {
                    "!a:h": {
                        "timeline": {
                            "events": [
                                {"type": "m.room.message", "content": {"body": "x", MARKER_KEY: "run-1"}},
                                {"type": "m.room.member", "content": {"membership": "join"}},
                                {"type": "m.room.message", "content": {"body": "y", MARKER_KEY: "run-2"}}
                            ],
                            "limited": false,
                            "prev_batch": "p"
                        },
                        "state": {"events": []}
                    },
                    "!b:h": {"timeline": {"events": []}},
                    "!c:h": {}
                },
                "invite": {
                    "!d:h": {"timeline": {"events": [{"content": {MARKER_KEY: "not-joined"}}]}}
                }
            }
        });
        let batch = parse(&body).expect("valid");
        assert_eq!(batch.next_batch, "t2");
        assert_eq!(batch.joined_rooms, 3);
        assert_eq!(batch.timeline_events, 3);
        assert_eq!(batch.markers, ["run-1", "run-2"]);
    }

    #[test]
    fn malformed_parts_are_skipped() {
        let body = json!({
            "next_batch": "t3",
            "rooms": {
                "join": {
                    "!a:h": {"timeline": {"events": "not a list"}},
                    "!b:h": {"timeline": {"events": [
                        "not an event",
                        {"content": "not an object"},
                        {"content": {MARKER_KEY: 42}},
                        {"content": {MARKER_KEY: "ok"}}
                    ]}}
                }
            }
        });
        let batch = parse(&body).expect("valid");
        assert_eq!(batch.joined_rooms, 2);
        assert_eq!(batch.timeline_events, 4);
        assert_eq!(batch.markers, ["ok"]);
    }

    #[test]
    fn rooms_without_join_section() {
        let batch = parse(&json!({"next_batch": "t", "rooms": {"leave": {}}})).expect("valid");
        assert_eq!(batch.joined_rooms, 0);
        let batch = parse(&json!({"next_batch": "t", "rooms": {"join": []}})).expect("valid");
        assert_eq!(batch.joined_rooms, 0);
    }
}
