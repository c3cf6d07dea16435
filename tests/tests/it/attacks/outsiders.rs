//! An outsider with an account probes rooms it is not in: every answer must
//! be the same whether the room exists or not, and whether the user it
//! names is in the room or not. A banned user who never joined reads
//! nothing.

use myelin_tests::{Account, Backend, TestServer, backend_tests};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::{
    rooms_support::{create_room, enc, invite, join, membership, room_url, send_text},
    sync_support::{initial_sync, next_batch, sync_since},
};

backend_tests!(
    a_non_member_cannot_tell_a_room_exists,
    a_non_member_cannot_tell_who_is_in_a_room,
    a_user_banned_before_joining_reads_nothing,
    a_new_member_sees_no_receipts_from_before_joining,
    profile_lookups_follow_the_configured_limits,
);

/// One request of the probe: method, path after `/rooms/{room}`, body.
type Probe = (Method, String, Option<Value>);

/// Every room endpoint a non-member might probe with.
fn probes(target_user: &str, event_id: &str) -> Vec<Probe> {
    let event = enc(event_id);
    let user = enc(target_user);
    let message = json!({ "msgtype": "m.text", "body": "probe" });
    vec![
        (
            Method::PUT,
            "/send/m.room.message/p1".to_owned(),
            Some(message),
        ),
        (
            Method::PUT,
            "/state/m.room.topic/".to_owned(),
            Some(json!({ "topic": "t" })),
        ),
        (Method::PUT, format!("/redact/{event}/p2"), Some(json!({}))),
        (
            Method::POST,
            "/invite".to_owned(),
            Some(json!({ "user_id": target_user })),
        ),
        (
            Method::POST,
            "/kick".to_owned(),
            Some(json!({ "user_id": target_user })),
        ),
        (
            Method::POST,
            "/ban".to_owned(),
            Some(json!({ "user_id": target_user })),
        ),
        (
            Method::POST,
            "/unban".to_owned(),
            Some(json!({ "user_id": target_user })),
        ),
        (Method::POST, "/leave".to_owned(), Some(json!({}))),
        (
            Method::POST,
            format!("/receipt/m.read/{event}"),
            Some(json!({})),
        ),
        (
            Method::POST,
            "/read_markers".to_owned(),
            Some(json!({ "m.fully_read": event_id })),
        ),
        (Method::GET, "/messages?dir=b".to_owned(), None),
        (Method::GET, "/state".to_owned(), None),
        (Method::GET, "/state/m.room.create/".to_owned(), None),
        (Method::GET, format!("/state/m.room.member/{user}"), None),
        (Method::GET, "/members".to_owned(), None),
        (Method::GET, "/joined_members".to_owned(), None),
        (Method::GET, format!("/event/{event}"), None),
        (Method::GET, format!("/context/{event}"), None),
    ]
}

async fn probe(
    server: &TestServer,
    outsider: &Account,
    room: &str,
    probe: &Probe,
) -> (StatusCode, Value) {
    let (method, rest, body) = probe;
    server
        .request(
            method.clone(),
            room_url(server, room, rest),
            Some(&outsider.token),
            body.clone(),
        )
        .await
}

/// A room id of the same shape as `room` that names no room.
fn unknown_room_like(room: &str) -> String {
    let mut id: Vec<char> = room.chars().collect();
    id[1] = if id[1] == 'A' { 'B' } else { 'A' };
    id.into_iter().collect()
}

async fn a_non_member_cannot_tell_a_room_exists(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let mallory = server.register("mallory").await;
    let room = create_room(&server, &alice.token, json!({ "preset": "private_chat" })).await;
    invite(&server, &alice.token, &room, &bob.user_id).await;
    join(&server, &bob.token, &room).await;
    let message = send_text(&server, &alice.token, &room, "secret").await;
    let unknown = unknown_room_like(&room);

    for request in probes(&bob.user_id, &message) {
        let existing = probe(&server, &mallory, &room, &request).await;
        let missing = probe(&server, &mallory, &unknown, &request).await;
        assert_eq!(
            existing, missing,
            "{} {} tells an existing room from none",
            request.0, request.1
        );
        assert!(
            existing.0.is_client_error(),
            "{} {} must be refused: {existing:?}",
            request.0,
            request.1
        );
    }
}

async fn a_non_member_cannot_tell_who_is_in_a_room(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let dave = server.register("dave").await;
    let mallory = server.register("mallory").await;
    let room = create_room(&server, &alice.token, json!({ "preset": "private_chat" })).await;
    invite(&server, &alice.token, &room, &bob.user_id).await;
    join(&server, &bob.token, &room).await;
    let message = send_text(&server, &alice.token, &room, "secret").await;

    for (member, stranger) in probes(&bob.user_id, &message)
        .into_iter()
        .zip(probes(&dave.user_id, &message))
    {
        let about_member = probe(&server, &mallory, &room, &member).await;
        let about_stranger = probe(&server, &mallory, &room, &stranger).await;
        assert_eq!(
            about_member, about_stranger,
            "{} {} tells a member from a stranger",
            member.0, member.1
        );
    }
}

async fn a_user_banned_before_joining_reads_nothing(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let mallory = server.register("mallory").await;
    let room = create_room(&server, &alice.token, json!({ "preset": "public_chat" })).await;
    let message = send_text(&server, &alice.token, &room, "before the ban").await;
    let (status, answer) = membership(
        &server,
        &alice.token,
        &room,
        "ban",
        json!({ "user_id": mallory.user_id }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");

    let unknown = unknown_room_like(&room);
    for request in probes(&alice.user_id, &message) {
        if request.0 != Method::GET {
            continue;
        }
        let banned = probe(&server, &mallory, &room, &request).await;
        let missing = probe(&server, &mallory, &unknown, &request).await;
        assert_eq!(
            banned, missing,
            "{} {} shows a room to a user banned before joining",
            request.0, request.1
        );
    }
}

/// The users with an `m.read` receipt in a room's ephemeral events of a
/// sync answer.
fn readers(answer: &Value, room: &str) -> Vec<String> {
    let mut users: Vec<String> = answer["rooms"]["join"][room]["ephemeral"]["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|event| event["type"] == "m.receipt")
        .flat_map(|event| {
            event["content"]
                .as_object()
                .into_iter()
                .flat_map(|by_event| by_event.values())
                .filter_map(|types| types["m.read"].as_object())
                .flat_map(|by_user| by_user.keys().cloned())
                .collect::<Vec<_>>()
        })
        .collect();
    users.sort();
    users.dedup();
    users
}

async fn read(server: &TestServer, reader: &Account, room: &str, event_id: &str) {
    let (status, answer) = server
        .request(
            Method::POST,
            room_url(server, room, &format!("/receipt/m.read/{}", enc(event_id))),
            Some(&reader.token),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
}

async fn a_new_member_sees_no_receipts_from_before_joining(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = create_room(&server, &alice.token, json!({ "preset": "public_chat" })).await;
    let before = send_text(&server, &alice.token, &room, "read before bob came").await;
    read(&server, &alice, &room, &before).await;

    join(&server, &bob.token, &room).await;
    let first = initial_sync(&server, &bob.token, 10).await;
    assert!(
        readers(&first, &room).is_empty(),
        "receipts from before the join: {:?}",
        first["rooms"]["join"][&room]["ephemeral"]
    );

    // What alice reads once bob is in, bob sees.
    let after = send_text(&server, &alice.token, &room, "read with bob there").await;
    read(&server, &alice, &room, &after).await;
    let next = sync_since(&server, &bob.token, &next_batch(&first)).await;
    assert_eq!(readers(&next, &room), [alice.user_id.clone()]);
    let again = initial_sync(&server, &bob.token, 10).await;
    assert_eq!(readers(&again, &room), [alice.user_id.clone()]);
}

/// `GET /profile/{user}` as `viewer` (no token when `None`).
async fn profile(server: &TestServer, viewer: Option<&Account>, user: &str) -> (StatusCode, Value) {
    let url = server.v3(&format!("/profile/{}", enc(user)));
    server
        .request(Method::GET, url, viewer.map(|v| v.token.as_str()), None)
        .await
}

async fn profile_lookups_follow_the_configured_limits(backend: Backend) {
    // By default a profile is shown only to requests with a token, and a
    // refusal is the same whether the user exists or not.
    let server = TestServer::start(backend.clone()).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let ghost = server.user_id("ghost");
    let anonymous = profile(&server, None, &alice.user_id).await;
    assert_eq!(anonymous.0, StatusCode::FORBIDDEN, "{anonymous:?}");
    assert_eq!(anonymous, profile(&server, None, &ghost).await);
    assert_eq!(
        profile(&server, Some(&bob), &alice.user_id).await.0,
        StatusCode::OK
    );
    assert_eq!(
        profile(&server, Some(&bob), &ghost).await.0,
        StatusCode::NOT_FOUND
    );

    // Open lookups, for servers that want them.
    let open = TestServer::start_with(backend.clone(), |config| {
        config.profile_lookup.require_auth = false;
    })
    .await;
    let carol = open.register("carol").await;
    assert_eq!(profile(&open, None, &carol.user_id).await.0, StatusCode::OK);
    assert_eq!(
        profile(&open, None, &open.user_id("ghost")).await.0,
        StatusCode::NOT_FOUND
    );

    // Only users who share a room.
    let closed = TestServer::start_with(backend, |config| {
        config.profile_lookup.shared_rooms_only = true;
    })
    .await;
    let alice = closed.register("alice").await;
    let bob = closed.register("bob").await;
    let stranger = profile(&closed, Some(&bob), &alice.user_id).await;
    assert_eq!(stranger.0, StatusCode::FORBIDDEN, "{stranger:?}");
    assert_eq!(
        stranger,
        profile(&closed, Some(&bob), &closed.user_id("ghost")).await
    );
    assert_eq!(
        profile(&closed, Some(&alice), &alice.user_id).await.0,
        StatusCode::OK
    );
    let room = create_room(&closed, &alice.token, json!({ "preset": "private_chat" })).await;
    invite(&closed, &alice.token, &room, &bob.user_id).await;
    assert_eq!(
        profile(&closed, Some(&bob), &alice.user_id).await.0,
        StatusCode::OK
    );
}
