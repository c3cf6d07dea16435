//! Helpers shared by the sync, history-visibility and pagination tests:
//! raw `GET /sync` and `GET /rooms/{roomId}/messages` calls and readers for
//! their answers.

use myelin_tests::TestServer;
use reqwest::{Method, StatusCode, Url};
use serde_json::{Value, json};

use crate::rooms_support::room_url;

/// `GET /sync` with these query parameters.
pub async fn sync(
    server: &TestServer,
    token: &str,
    params: &[(&str, &str)],
) -> (StatusCode, Value) {
    let url = Url::parse_with_params(&server.v3("/sync"), params).expect("sync URL");
    server
        .request(Method::GET, url.as_str(), Some(token), None)
        .await
}

/// `GET /sync`, which must succeed.
pub async fn sync_ok(server: &TestServer, token: &str, params: &[(&str, &str)]) -> Value {
    let (status, answer) = sync(server, token, params).await;
    assert_eq!(status, StatusCode::OK, "sync {params:?}: {answer}");
    assert!(answer["next_batch"].is_string(), "next_batch in {answer}");
    answer
}

/// An initial sync with a timeline limit; returns the answer.
pub async fn initial_sync(server: &TestServer, token: &str, limit: u32) -> Value {
    let filter = json!({ "room": { "timeline": { "limit": limit } } }).to_string();
    sync_ok(server, token, &[("filter", &filter)]).await
}

/// An incremental sync from `since` that does not wait.
pub async fn sync_since(server: &TestServer, token: &str, since: &str) -> Value {
    sync_ok(server, token, &[("since", since), ("timeout", "0")]).await
}

/// An incremental sync from `since` with a timeline limit, not waiting.
pub async fn sync_since_limit(server: &TestServer, token: &str, since: &str, limit: u32) -> Value {
    let filter = json!({ "room": { "timeline": { "limit": limit } } }).to_string();
    sync_ok(
        server,
        token,
        &[("since", since), ("timeout", "0"), ("filter", &filter)],
    )
    .await
}

/// The `next_batch` of a sync answer.
#[track_caller]
pub fn next_batch(answer: &Value) -> String {
    answer["next_batch"]
        .as_str()
        .unwrap_or_else(|| panic!("no next_batch in {answer}"))
        .to_owned()
}

/// The ids of the rooms in one section (`join`, `invite`, `leave`), sorted.
pub fn section_rooms(answer: &Value, section: &str) -> Vec<String> {
    let mut rooms: Vec<String> = answer["rooms"][section]
        .as_object()
        .map(|rooms| rooms.keys().cloned().collect())
        .unwrap_or_default();
    rooms.sort();
    rooms
}

/// The timeline events of a room in a section, oldest first.
#[track_caller]
pub fn timeline<'a>(answer: &'a Value, section: &str, room_id: &str) -> &'a Vec<Value> {
    answer["rooms"][section][room_id]["timeline"]["events"]
        .as_array()
        .unwrap_or_else(|| panic!("no {section} timeline for {room_id} in {answer}"))
}

/// The state events of a room in a section.
#[track_caller]
pub fn state<'a>(answer: &'a Value, section: &str, room_id: &str) -> &'a Vec<Value> {
    answer["rooms"][section][room_id]["state"]["events"]
        .as_array()
        .unwrap_or_else(|| panic!("no {section} state for {room_id} in {answer}"))
}

/// The event ids of a list of events.
pub fn ids(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["event_id"].as_str().expect("event_id").to_owned())
        .collect()
}

/// The `body` of each `m.room.message` in a list of events, in order.
pub fn bodies(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["type"] == "m.room.message")
        .map(|e| e["content"]["body"].as_str().expect("body").to_owned())
        .collect()
}

/// `type|state_key` of each state event, sorted.
pub fn state_keys(events: &[Value]) -> Vec<String> {
    let mut keys: Vec<String> = events
        .iter()
        .map(|e| {
            format!(
                "{}|{}",
                e["type"].as_str().expect("type"),
                e["state_key"].as_str().expect("state_key")
            )
        })
        .collect();
    keys.sort();
    keys
}

/// `GET /rooms/{roomId}/messages` with these query parameters.
pub async fn messages(
    server: &TestServer,
    token: &str,
    room_id: &str,
    params: &[(&str, &str)],
) -> (StatusCode, Value) {
    let url = Url::parse_with_params(&room_url(server, room_id, "/messages"), params)
        .expect("messages URL");
    server
        .request(Method::GET, url.as_str(), Some(token), None)
        .await
}

/// `GET /rooms/{roomId}/messages`, which must succeed.
pub async fn messages_ok(
    server: &TestServer,
    token: &str,
    room_id: &str,
    params: &[(&str, &str)],
) -> Value {
    let (status, answer) = messages(server, token, room_id, params).await;
    assert_eq!(status, StatusCode::OK, "messages {params:?}: {answer}");
    assert!(answer["chunk"].is_array(), "chunk in {answer}");
    answer
}

/// The chunk of a `/messages` answer.
#[track_caller]
pub fn chunk(answer: &Value) -> &Vec<Value> {
    answer["chunk"]
        .as_array()
        .unwrap_or_else(|| panic!("no chunk in {answer}"))
}

/// `GET /rooms/{roomId}/event/{eventId}`.
pub async fn get_event(
    server: &TestServer,
    token: &str,
    room_id: &str,
    event_id: &str,
) -> (StatusCode, Value) {
    let url = room_url(
        server,
        room_id,
        &format!("/event/{}", crate::rooms_support::enc(event_id)),
    );
    server.request(Method::GET, url, Some(token), None).await
}

/// Sets the room's `m.room.history_visibility`, which must succeed.
pub async fn set_history_visibility(server: &TestServer, token: &str, room_id: &str, value: &str) {
    let (status, answer) = crate::rooms_support::put_state(
        server,
        token,
        room_id,
        "m.room.history_visibility",
        "",
        json!({ "history_visibility": value }),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "history_visibility {value}: {answer}"
    );
}
