//! The E2E-only room policy (`spec-notes/e2e-only-rooms.md`): creation,
//! every refusal, the encrypted flow that must keep working, and plain
//! rooms that must stay untouched.

use myelin_tests::{Backend, TestServer, assert_error, backend_tests};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::{
    rooms_support::{
        create_room, event_id, invite, join, joined_rooms, put_state, room_url, send,
        state_content, try_create_room,
    },
    sync_support::{chunk, initial_sync, messages_ok, timeline},
};

backend_tests!(
    creation_orders_encryption_before_the_policy,
    a_policy_without_encryption_is_refused_at_creation,
    ciphertext_flows_and_plaintext_is_refused,
    redactions_pass_only_without_a_reason,
    the_policy_and_encryption_cannot_be_weakened,
    plain_rooms_stay_usable_by_plain_clients,
    an_encrypted_room_can_adopt_the_policy_later,
    invitees_see_the_policy_before_joining,
);

const POLICY: &str = "org.myelin.room.policy";
const MEGOLM: &str = "m.megolm.v1.aes-sha2";
const E2E_REQUIRED: &str = "ORG.MYELIN_E2E_REQUIRED";

fn policy_state() -> Value {
    json!({ "type": POLICY, "state_key": "", "content": { "e2e_required": true } })
}

fn encryption_state() -> Value {
    json!({ "type": "m.room.encryption", "state_key": "", "content": { "algorithm": MEGOLM } })
}

/// A Megolm ciphertext as a client would send it (the server cannot tell).
fn ciphertext(n: u32) -> Value {
    json!({
        "algorithm": MEGOLM,
        "ciphertext": format!("AwgAEnACgAkLmt{n}"),
        "device_id": "ALICEDEVICE",
        "sender_key": "sender+key",
        "session_id": "session/id",
    })
}

/// An E2E-only room created by `token`, with the policy listed first.
async fn e2e_only_room(server: &TestServer, token: &str) -> String {
    create_room(
        server,
        token,
        json!({ "preset": "private_chat", "initial_state": [policy_state(), encryption_state()] }),
    )
    .await
}

/// `PUT /rooms/{room}/redact/{event}/{txn}`.
async fn redact(
    server: &TestServer,
    token: &str,
    room_id: &str,
    target: &str,
    txn: &str,
    body: Value,
) -> (StatusCode, Value) {
    let url = room_url(
        server,
        room_id,
        &format!("/redact/{}/{txn}", crate::rooms_support::enc(target)),
    );
    server
        .request(Method::PUT, url, Some(token), Some(body))
        .await
}

/// The event id of a room's current state event.
async fn state_event_id(server: &TestServer, token: &str, room_id: &str, kind: &str) -> String {
    let (status, events) = server
        .request(
            Method::GET,
            room_url(server, room_id, "/state"),
            Some(token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{events}");
    events
        .as_array()
        .expect("state array")
        .iter()
        .find(|event| event["type"] == kind && event["state_key"] == "")
        .and_then(|event| event["event_id"].as_str())
        .unwrap_or_else(|| panic!("no {kind} in {events}"))
        .to_owned()
}

async fn creation_orders_encryption_before_the_policy(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let room = e2e_only_room(&server, &alice.token).await;
    assert_eq!(
        state_content(&server, &alice.token, &room, POLICY, "").await,
        json!({ "e2e_required": true })
    );
    let answer = initial_sync(&server, &alice.token, 50).await;
    let kinds: Vec<&str> = timeline(&answer, "join", &room)
        .iter()
        .filter_map(|event| event["type"].as_str())
        .filter(|kind| [POLICY, "m.room.encryption"].contains(kind))
        .collect();
    assert_eq!(kinds, vec!["m.room.encryption", POLICY], "{answer}");
}

async fn a_policy_without_encryption_is_refused_at_creation(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let answer = try_create_room(
        &server,
        &alice.token,
        json!({ "initial_state": [policy_state()] }),
    )
    .await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    let other_algorithm = json!({
        "initial_state": [
            policy_state(),
            { "type": "m.room.encryption", "state_key": "", "content": { "algorithm": "m.none" } },
        ]
    });
    let answer = try_create_room(&server, &alice.token, other_algorithm).await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    assert_eq!(
        joined_rooms(&server, &alice.token).await,
        Vec::<String>::new()
    );
}

async fn ciphertext_flows_and_plaintext_is_refused(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = e2e_only_room(&server, &alice.token).await;
    // Membership is state: invites and joins work as anywhere.
    invite(&server, &alice.token, &room, &bob.user_id).await;
    join(&server, &bob.token, &room).await;

    let sent = send(
        &server,
        &alice.token,
        &room,
        "m.room.encrypted",
        "c1",
        ciphertext(1),
    )
    .await;
    assert_eq!(sent.0, StatusCode::OK, "{}", sent.1);
    let encrypted_id = event_id(&sent.1);

    let refused = [
        (
            "m.room.message",
            json!({ "msgtype": "m.text", "body": "plain secret" }),
        ),
        (
            "m.reaction",
            json!({ "m.relates_to": { "rel_type": "m.annotation", "event_id": encrypted_id, "key": "👍" } }),
        ),
        (
            "m.sticker",
            json!({ "body": "sticker", "url": "mxc://x/y", "info": {} }),
        ),
        ("com.example.custom", json!({ "data": "plain" })),
        (
            "m.room.encrypted",
            json!({ "algorithm": "m.olm.v1.curve25519-aes-sha2", "ciphertext": {} }),
        ),
        ("m.room.encrypted", json!({ "body": "not even pretending" })),
    ];
    for (n, (kind, content)) in refused.into_iter().enumerate() {
        let answer = send(&server, &bob.token, &room, kind, &format!("p{n}"), content).await;
        assert_error(&answer, StatusCode::FORBIDDEN, E2E_REQUIRED);
    }

    let answer = initial_sync(&server, &bob.token, 50).await;
    let events = timeline(&answer, "join", &room);
    let messages: Vec<&Value> = events
        .iter()
        .filter(|event| event.get("state_key").is_none())
        .collect();
    assert_eq!(messages.len(), 1, "only the ciphertext: {answer}");
    assert_eq!(messages[0]["event_id"], encrypted_id);
    assert_eq!(messages[0]["content"], ciphertext(1));
    let history = messages_ok(
        &server,
        &bob.token,
        &room,
        &[("dir", "b"), ("limit", "100")],
    )
    .await;
    assert!(
        !history.to_string().contains("plain secret"),
        "plaintext served: {history}"
    );
    let stored = server
        .count_rows("SELECT COUNT(*) FROM events WHERE json LIKE '%plain secret%'")
        .await;
    assert_eq!(stored, 0, "plaintext reached storage");
    assert!(
        chunk(&history)
            .iter()
            .filter(|event| event.get("state_key").is_none())
            .all(|event| event["type"] == "m.room.encrypted"),
        "{history}"
    );
}

async fn redactions_pass_only_without_a_reason(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let room = e2e_only_room(&server, &alice.token).await;
    let first = event_id(
        &send(
            &server,
            &alice.token,
            &room,
            "m.room.encrypted",
            "c1",
            ciphertext(1),
        )
        .await
        .1,
    );
    let second = event_id(
        &send(
            &server,
            &alice.token,
            &room,
            "m.room.encrypted",
            "c2",
            ciphertext(2),
        )
        .await
        .1,
    );

    let with_reason = redact(
        &server,
        &alice.token,
        &room,
        &first,
        "r1",
        json!({ "reason": "typo in plaintext" }),
    )
    .await;
    assert_error(&with_reason, StatusCode::FORBIDDEN, E2E_REQUIRED);
    let through_send = send(
        &server,
        &alice.token,
        &room,
        "m.room.redaction",
        "r2",
        json!({ "redacts": first, "reason": "also plaintext" }),
    )
    .await;
    assert_error(&through_send, StatusCode::FORBIDDEN, E2E_REQUIRED);

    let plain = redact(&server, &alice.token, &room, &first, "r3", json!({})).await;
    assert_eq!(plain.0, StatusCode::OK, "{}", plain.1);
    let through_send = send(
        &server,
        &alice.token,
        &room,
        "m.room.redaction",
        "r4",
        json!({ "redacts": second }),
    )
    .await;
    assert_eq!(through_send.0, StatusCode::OK, "{}", through_send.1);
}

async fn the_policy_and_encryption_cannot_be_weakened(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let room = e2e_only_room(&server, &alice.token).await;
    for content in [
        json!({ "e2e_required": false }),
        json!({}),
        json!({ "e2e_required": "yes" }),
        json!({ "e2e_required": true, "except": "reactions" }),
    ] {
        let answer = put_state(&server, &alice.token, &room, POLICY, "", content.clone()).await;
        assert_error(&answer, StatusCode::FORBIDDEN, E2E_REQUIRED);
    }
    let side_policy = put_state(
        &server,
        &alice.token,
        &room,
        POLICY,
        "other",
        json!({ "e2e_required": true }),
    )
    .await;
    assert_error(&side_policy, StatusCode::FORBIDDEN, E2E_REQUIRED);
    for content in [
        json!({}),
        json!({ "algorithm": "m.none" }),
        json!({ "algorithm": null }),
    ] {
        let answer = put_state(
            &server,
            &alice.token,
            &room,
            "m.room.encryption",
            "",
            content,
        )
        .await;
        assert_error(&answer, StatusCode::FORBIDDEN, E2E_REQUIRED);
    }
    for kind in [POLICY, "m.room.encryption"] {
        let target = state_event_id(&server, &alice.token, &room, kind).await;
        let answer = redact(
            &server,
            &alice.token,
            &room,
            &target,
            &format!("x{kind}"),
            json!({}),
        )
        .await;
        assert_error(&answer, StatusCode::FORBIDDEN, E2E_REQUIRED);
    }

    // What does not weaken anything still works.
    let rotation = json!({ "algorithm": MEGOLM, "rotation_period_msgs": 50 });
    let answer = put_state(
        &server,
        &alice.token,
        &room,
        "m.room.encryption",
        "",
        rotation.clone(),
    )
    .await;
    assert_eq!(answer.0, StatusCode::OK, "{}", answer.1);
    let answer = put_state(
        &server,
        &alice.token,
        &room,
        POLICY,
        "",
        json!({ "e2e_required": true }),
    )
    .await;
    assert_eq!(answer.0, StatusCode::OK, "{}", answer.1);
    let answer = put_state(
        &server,
        &alice.token,
        &room,
        "m.room.name",
        "",
        json!({ "name": "Still encrypted" }),
    )
    .await;
    assert_eq!(answer.0, StatusCode::OK, "{}", answer.1);

    assert_eq!(
        state_content(&server, &alice.token, &room, POLICY, "").await,
        json!({ "e2e_required": true })
    );
    assert_eq!(
        state_content(&server, &alice.token, &room, "m.room.encryption", "").await,
        rotation
    );
    let plain = send(
        &server,
        &alice.token,
        &room,
        "m.room.message",
        "after",
        json!({ "body": "x" }),
    )
    .await;
    assert_error(&plain, StatusCode::FORBIDDEN, E2E_REQUIRED);
}

async fn plain_rooms_stay_usable_by_plain_clients(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = create_room(&server, &alice.token, json!({ "preset": "public_chat" })).await;
    join(&server, &bob.token, &room).await;
    let text = json!({ "msgtype": "m.text", "body": "hello in plain JSON" });
    let sent = send(
        &server,
        &alice.token,
        &room,
        "m.room.message",
        "m1",
        text.clone(),
    )
    .await;
    assert_eq!(sent.0, StatusCode::OK, "{}", sent.1);
    let message = event_id(&sent.1);
    let reaction =
        json!({ "m.relates_to": { "rel_type": "m.annotation", "event_id": message, "key": "👍" } });
    let reacted = send(&server, &bob.token, &room, "m.reaction", "m2", reaction).await;
    assert_eq!(reacted.0, StatusCode::OK, "{}", reacted.1);
    let redacted = redact(
        &server,
        &bob.token,
        &room,
        &event_id(&reacted.1),
        "m3",
        json!({ "reason": "oops" }),
    )
    .await;
    assert_eq!(redacted.0, StatusCode::OK, "{}", redacted.1);
    let topic = put_state(
        &server,
        &alice.token,
        &room,
        "m.room.topic",
        "",
        json!({ "topic": "plain" }),
    )
    .await;
    assert_eq!(topic.0, StatusCode::OK, "{}", topic.1);

    let answer = initial_sync(&server, &bob.token, 50).await;
    let received: Vec<&Value> = timeline(&answer, "join", &room)
        .iter()
        .filter(|event| event["type"] == "m.room.message")
        .collect();
    assert_eq!(received.len(), 1, "{answer}");
    assert_eq!(received[0]["content"], text);
    // The same storage probe the E2E-only test relies on finds plaintext here.
    let stored = server
        .count_rows("SELECT COUNT(*) FROM events WHERE json LIKE '%hello in plain JSON%'")
        .await;
    assert_eq!(stored, 1);

    // A policy event that would not enable the policy is refused, not stored.
    for (state_key, content) in [
        ("", json!({ "e2e_required": false })),
        ("x", json!({ "e2e_required": true })),
    ] {
        let answer = put_state(&server, &alice.token, &room, POLICY, state_key, content).await;
        assert_error(&answer, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    }
    // Without encryption the room cannot adopt the policy.
    let adopt = put_state(
        &server,
        &alice.token,
        &room,
        POLICY,
        "",
        json!({ "e2e_required": true }),
    )
    .await;
    assert_error(&adopt, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    let still_plain = send(&server, &alice.token, &room, "m.room.message", "m4", text).await;
    assert_eq!(still_plain.0, StatusCode::OK, "{}", still_plain.1);
}

async fn an_encrypted_room_can_adopt_the_policy_later(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let room = create_room(
        &server,
        &alice.token,
        json!({ "initial_state": [encryption_state()] }),
    )
    .await;
    let before = send(
        &server,
        &alice.token,
        &room,
        "m.room.message",
        "b1",
        json!({ "body": "legacy client" }),
    )
    .await;
    assert_eq!(
        before.0,
        StatusCode::OK,
        "encryption alone is advice: {}",
        before.1
    );
    let adopt = put_state(
        &server,
        &alice.token,
        &room,
        POLICY,
        "",
        json!({ "e2e_required": true }),
    )
    .await;
    assert_eq!(adopt.0, StatusCode::OK, "{}", adopt.1);
    let after = send(
        &server,
        &alice.token,
        &room,
        "m.room.message",
        "b2",
        json!({ "body": "legacy client" }),
    )
    .await;
    assert_error(&after, StatusCode::FORBIDDEN, E2E_REQUIRED);
    let encrypted = send(
        &server,
        &alice.token,
        &room,
        "m.room.encrypted",
        "b3",
        ciphertext(3),
    )
    .await;
    assert_eq!(encrypted.0, StatusCode::OK, "{}", encrypted.1);
}

async fn invitees_see_the_policy_before_joining(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = e2e_only_room(&server, &alice.token).await;
    invite(&server, &alice.token, &room, &bob.user_id).await;

    let synced = initial_sync(&server, &bob.token, 5).await;
    let stripped = synced["rooms"]["invite"][&room]["invite_state"]["events"]
        .as_array()
        .unwrap_or_else(|| panic!("no invite_state for {room} in {synced}"));
    let of_type = |kind: &str| stripped.iter().find(|e| e["type"] == kind);
    let policy = of_type(POLICY).unwrap_or_else(|| panic!("no policy in {stripped:?}"));
    assert_eq!(policy["content"], json!({ "e2e_required": true }));
    assert_eq!(policy["state_key"], "");
    let encryption = of_type("m.room.encryption").expect("m.room.encryption in invite_state");
    assert_eq!(encryption["content"]["algorithm"], MEGOLM);
}
