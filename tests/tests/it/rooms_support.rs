//! Small helpers shared by the room test files: raw Client-Server calls,
//! each returning the status and JSON answer so tests can assert either.

use myelin_tests::TestServer;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// Percent-encodes a path segment (room aliases start with `#`, state keys
/// may hold anything).
pub fn enc(segment: &str) -> String {
    let mut out = String::new();
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// `/_matrix/client/v3/rooms/{room_id}{rest}`.
pub fn room_url(server: &TestServer, room_id: &str, rest: &str) -> String {
    server.v3(&format!("/rooms/{}{rest}", enc(room_id)))
}

/// `POST /createRoom`, which must succeed; returns the room id.
pub async fn create_room(server: &TestServer, token: &str, body: Value) -> String {
    let answer = try_create_room(server, token, body).await;
    assert_eq!(answer.0, StatusCode::OK, "createRoom: {}", answer.1);
    answer.1["room_id"].as_str().expect("room_id").to_owned()
}

/// `POST /createRoom`.
pub async fn try_create_room(server: &TestServer, token: &str, body: Value) -> (StatusCode, Value) {
    server
        .request(
            Method::POST,
            server.v3("/createRoom"),
            Some(token),
            Some(body),
        )
        .await
}

/// `POST /rooms/{room_id}/{action}` (join, leave, forget, invite, kick, ban, unban).
pub async fn membership(
    server: &TestServer,
    token: &str,
    room_id: &str,
    action: &str,
    body: Value,
) -> (StatusCode, Value) {
    server
        .request(
            Method::POST,
            room_url(server, room_id, &format!("/{action}")),
            Some(token),
            Some(body),
        )
        .await
}

/// `POST /rooms/{room_id}/join`, which must succeed.
pub async fn join(server: &TestServer, token: &str, room_id: &str) {
    let answer = membership(server, token, room_id, "join", json!({})).await;
    assert_eq!(answer.0, StatusCode::OK, "join: {}", answer.1);
    assert_eq!(answer.1, json!({ "room_id": room_id }));
}

/// `POST /rooms/{room_id}/invite`, which must succeed.
pub async fn invite(server: &TestServer, token: &str, room_id: &str, user_id: &str) {
    let answer = membership(
        server,
        token,
        room_id,
        "invite",
        json!({ "user_id": user_id }),
    )
    .await;
    assert_eq!(answer, (StatusCode::OK, json!({})), "invite {user_id}");
}

/// `PUT /rooms/{room_id}/send/{event_type}/{txn_id}`.
pub async fn send(
    server: &TestServer,
    token: &str,
    room_id: &str,
    event_type: &str,
    txn_id: &str,
    content: Value,
) -> (StatusCode, Value) {
    server
        .request(
            Method::PUT,
            room_url(
                server,
                room_id,
                &format!("/send/{}/{}", enc(event_type), enc(txn_id)),
            ),
            Some(token),
            Some(content),
        )
        .await
}

/// Sends an `m.room.message`, which must succeed; returns its event id.
pub async fn send_text(server: &TestServer, token: &str, room_id: &str, body: &str) -> String {
    let txn = myelin_tests::random_suffix();
    let answer = send(
        server,
        token,
        room_id,
        "m.room.message",
        &txn,
        json!({ "msgtype": "m.text", "body": body }),
    )
    .await;
    assert_eq!(answer.0, StatusCode::OK, "send: {}", answer.1);
    event_id(&answer.1)
}

/// `PUT /rooms/{room_id}/state/{event_type}/{state_key}`.
pub async fn put_state(
    server: &TestServer,
    token: &str,
    room_id: &str,
    event_type: &str,
    state_key: &str,
    content: Value,
) -> (StatusCode, Value) {
    server
        .request(
            Method::PUT,
            room_url(
                server,
                room_id,
                &format!("/state/{}/{}", enc(event_type), enc(state_key)),
            ),
            Some(token),
            Some(content),
        )
        .await
}

/// `GET /rooms/{room_id}/state/{event_type}/{state_key}`.
pub async fn get_state(
    server: &TestServer,
    token: &str,
    room_id: &str,
    event_type: &str,
    state_key: &str,
) -> (StatusCode, Value) {
    server
        .request(
            Method::GET,
            room_url(
                server,
                room_id,
                &format!("/state/{}/{}", enc(event_type), enc(state_key)),
            ),
            Some(token),
            None,
        )
        .await
}

/// The content of a state event the caller may read, which must exist.
pub async fn state_content(
    server: &TestServer,
    token: &str,
    room_id: &str,
    event_type: &str,
    state_key: &str,
) -> Value {
    let (status, content) = get_state(server, token, room_id, event_type, state_key).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "{event_type}/{state_key}: {content}"
    );
    content
}

/// `GET /rooms/{room_id}/{what}` (state, members, joined_members, aliases).
pub async fn get_room(
    server: &TestServer,
    token: &str,
    room_id: &str,
    what: &str,
) -> (StatusCode, Value) {
    server
        .request(
            Method::GET,
            room_url(server, room_id, &format!("/{what}")),
            Some(token),
            None,
        )
        .await
}

/// `GET /joined_rooms`, sorted.
pub async fn joined_rooms(server: &TestServer, token: &str) -> Vec<String> {
    let (status, answer) = server
        .request(Method::GET, server.v3("/joined_rooms"), Some(token), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let mut rooms: Vec<String> = answer["joined_rooms"]
        .as_array()
        .expect("joined_rooms array")
        .iter()
        .map(|r| r.as_str().expect("room id").to_owned())
        .collect();
    rooms.sort();
    rooms
}

/// The `event_id` of a send answer.
#[track_caller]
pub fn event_id(answer: &Value) -> String {
    answer["event_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no event_id in {answer}"))
        .to_owned()
}

/// The state events of a `GET /state` answer, keyed `type|state_key`.
pub fn state_map(events: &Value) -> std::collections::BTreeMap<String, Value> {
    events
        .as_array()
        .unwrap_or_else(|| panic!("state is not an array: {events}"))
        .iter()
        .map(|e| {
            (
                format!(
                    "{}|{}",
                    e["type"].as_str().expect("type"),
                    e["state_key"].as_str().expect("state_key")
                ),
                e.clone(),
            )
        })
        .collect()
}
