//! `PUT /rooms/{roomId}/redact/{eventId}/{txnId}` and redactions sent with
//! `/send`: who may redact (the `m.room.redaction` level for one's own
//! events, plus `redact` for others'), idempotency, and the redaction
//! algorithm's effect on state served afterwards.

use myelin_tests::{Backend, TestServer, assert_error, backend_tests};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::rooms_support::{
    create_room, enc, event_id, join, membership, put_state, room_url, send, send_text,
    state_content,
};

backend_tests!(
    senders_redact_their_own_events,
    redacting_others_needs_the_redact_level,
    redacted_state_keeps_only_what_the_algorithm_keeps,
    unknown_and_foreign_events_are_not_found,
    redactions_sent_with_send_apply_in_every_version,
    redacted_messages_lose_their_content,
);

async fn redact(
    server: &TestServer,
    token: &str,
    room: &str,
    target: &str,
    txn: &str,
    body: Value,
) -> (StatusCode, Value) {
    server
        .request(
            Method::PUT,
            room_url(
                server,
                room,
                &format!("/redact/{}/{}", enc(target), enc(txn)),
            ),
            Some(token),
            Some(body),
        )
        .await
}

async fn senders_redact_their_own_events(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = create_room(
        &server,
        &alice.token,
        json!({ "preset": "public_chat", "room_version": "11" }),
    )
    .await;
    join(&server, &bob.token, &room).await;
    let message = send_text(&server, &bob.token, &room, "oops").await;
    let first = redact(
        &server,
        &bob.token,
        &room,
        &message,
        "r1",
        json!({ "reason": "typo" }),
    )
    .await;
    assert_eq!(first.0, StatusCode::OK, "{}", first.1);
    let redaction = event_id(&first.1);
    assert_ne!(redaction, message);
    assert_eq!(first.1, json!({ "event_id": redaction }));
    // Retried transaction: the same redaction.
    let retry = redact(&server, &bob.token, &room, &message, "r1", json!({})).await;
    assert_eq!(retry, first);
    // Redacting again with a new transaction is allowed (idempotent effect).
    let again = redact(&server, &bob.token, &room, &message, "r2", json!({})).await;
    assert_eq!(again.0, StatusCode::OK, "{}", again.1);
    // An empty body is fine too (the reason is optional).
    let other = send_text(&server, &bob.token, &room, "two").await;
    let answer = redact(&server, &bob.token, &room, &other, "r3", json!({})).await;
    assert_eq!(answer.0, StatusCode::OK, "{}", answer.1);

    // After leaving, bob is no longer a member and cannot redact.
    let third = send_text(&server, &bob.token, &room, "three").await;
    let left = membership(&server, &bob.token, &room, "leave", json!({})).await;
    assert_eq!(left.0, StatusCode::OK);
    let answer = redact(&server, &bob.token, &room, &third, "r4", json!({})).await;
    assert_error(&answer, StatusCode::FORBIDDEN, "M_FORBIDDEN");
}

async fn redacting_others_needs_the_redact_level(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let room = create_room(
        &server,
        &alice.token,
        json!({
            "preset": "public_chat",
            "room_version": "11",
            "power_level_content_override": {
                "users": { alice.user_id.clone(): 100, carol.user_id.clone(): 50 },
                "redact": 50,
            },
        }),
    )
    .await;
    join(&server, &bob.token, &room).await;
    join(&server, &carol.token, &room).await;
    let alices = send_text(&server, &alice.token, &room, "alice's").await;
    let bobs = send_text(&server, &bob.token, &room, "bob's").await;
    // Bob (0) may not redact alice's message.
    let answer = redact(&server, &bob.token, &room, &alices, "r1", json!({})).await;
    assert_error(&answer, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    // Carol (50 = redact) may redact bob's, and alice's.
    let answer = redact(&server, &carol.token, &room, &bobs, "r1", json!({})).await;
    assert_eq!(answer.0, StatusCode::OK, "{}", answer.1);
    let answer = redact(&server, &carol.token, &room, &alices, "r2", json!({})).await;
    assert_eq!(answer.0, StatusCode::OK, "{}", answer.1);

    // A state event of alice's: bob may not redact it either.
    let (_, topic) = put_state(
        &server,
        &alice.token,
        &room,
        "m.room.topic",
        "",
        json!({ "topic": "keep" }),
    )
    .await;
    let answer = redact(
        &server,
        &bob.token,
        &room,
        &event_id(&topic),
        "r2",
        json!({}),
    )
    .await;
    assert_error(&answer, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    assert_eq!(
        state_content(&server, &alice.token, &room, "m.room.topic", "").await,
        json!({ "topic": "keep" })
    );

    // Raising the m.room.redaction level stops even own redactions.
    let mut levels = state_content(&server, &alice.token, &room, "m.room.power_levels", "").await;
    levels["events"]["m.room.redaction"] = json!(10);
    let (status, _) = put_state(
        &server,
        &alice.token,
        &room,
        "m.room.power_levels",
        "",
        levels,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let own = send_text(&server, &bob.token, &room, "mine").await;
    let answer = redact(&server, &bob.token, &room, &own, "r3", json!({})).await;
    assert_error(&answer, StatusCode::FORBIDDEN, "M_FORBIDDEN");
}

async fn redacted_state_keeps_only_what_the_algorithm_keeps(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let t = &alice.token;
    // A display name, for member events to carry something redaction drops.
    let (status, _) = server
        .request(
            Method::PUT,
            server.v3(&format!("/profile/{}/displayname", enc(&alice.user_id))),
            Some(t),
            Some(json!({ "displayname": "Alice" })),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    for version in ["10", "11", "12"] {
        let room = create_room(&server, t, json!({ "room_version": version })).await;
        let cases = [
            // Custom and topic content goes entirely.
            (
                "org.example.secret",
                json!({ "secret": "s3cr3t", "n": 1 }),
                json!({}),
            ),
            (
                "m.room.topic",
                json!({ "topic": "private plans" }),
                json!({}),
            ),
            // join_rules keeps join_rule (and allow from v8).
            (
                "m.room.join_rules",
                json!({ "join_rule": "invite", "extra": "x" }),
                json!({ "join_rule": "invite" }),
            ),
            // history_visibility keeps history_visibility.
            (
                "m.room.history_visibility",
                json!({ "history_visibility": "joined", "extra": "x" }),
                json!({ "history_visibility": "joined" }),
            ),
        ];
        for (kind, content, kept) in cases {
            let (status, answer) = put_state(&server, t, &room, kind, "", content).await;
            assert_eq!(status, StatusCode::OK, "v{version} {kind}: {answer}");
            let target = event_id(&answer);
            let answer = redact(&server, t, &room, &target, kind, json!({})).await;
            assert_eq!(answer.0, StatusCode::OK, "v{version} {kind}: {}", answer.1);
            assert_eq!(
                state_content(&server, t, &room, kind, "").await,
                kept,
                "v{version} {kind}"
            );
            // The full state listing agrees, and the slot keeps its event id.
            let (status, event) = server
                .request(
                    Method::GET,
                    room_url(&server, &room, &format!("/state/{kind}/?format=event")),
                    Some(t),
                    None,
                )
                .await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(event["event_id"], target);
            assert_eq!(event["content"], kept);
        }
        // Power levels keep what authorization needs (v11 adds `invite`).
        let mut levels = state_content(&server, t, &room, "m.room.power_levels", "").await;
        let kept_levels = levels.clone();
        levels["org.example.extra"] = json!("dropped");
        let (status, answer) =
            put_state(&server, t, &room, "m.room.power_levels", "", levels).await;
        assert_eq!(status, StatusCode::OK, "v{version}: {answer}");
        let answer = redact(&server, t, &room, &event_id(&answer), "pl", json!({})).await;
        assert_eq!(answer.0, StatusCode::OK, "v{version}: {}", answer.1);
        let mut expected = kept_levels.clone();
        if version == "10" {
            expected.as_object_mut().unwrap().remove("invite");
        }
        assert_eq!(
            state_content(&server, t, &room, "m.room.power_levels", "").await,
            expected,
            "v{version}"
        );
        // Member events keep their membership.
        let member = state_content(&server, t, &room, "m.room.member", &alice.user_id).await;
        assert_eq!(
            member,
            json!({ "membership": "join", "displayname": "Alice" })
        );
        let (_, event) = server
            .request(
                Method::GET,
                room_url(
                    &server,
                    &room,
                    &format!("/state/m.room.member/{}?format=event", enc(&alice.user_id)),
                ),
                Some(t),
                None,
            )
            .await;
        let target = event["event_id"].as_str().unwrap().to_owned();
        let answer = redact(&server, t, &room, &target, "member", json!({})).await;
        assert_eq!(answer.0, StatusCode::OK, "v{version}: {}", answer.1);
        assert_eq!(
            state_content(&server, t, &room, "m.room.member", &alice.user_id).await,
            json!({ "membership": "join" }),
            "v{version}"
        );
        // The redacted topic does not leak through the state listing either.
        let (_, all) = crate::rooms_support::get_room(&server, t, &room, "state").await;
        assert!(
            !all.to_string().contains("private plans"),
            "v{version}: {all}"
        );
        assert!(!all.to_string().contains("s3cr3t"), "v{version}: {all}");
    }
}

async fn unknown_and_foreign_events_are_not_found(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let t = &alice.token;
    let room = create_room(&server, t, json!({ "room_version": "11" })).await;
    let other = create_room(&server, t, json!({ "room_version": "11" })).await;
    let answer = redact(
        &server,
        t,
        &room,
        "$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "r1",
        json!({}),
    )
    .await;
    assert_error(&answer, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    // An event of another room cannot be redacted through this one.
    let elsewhere = send_text(&server, t, &other, "elsewhere").await;
    let answer = redact(&server, t, &room, &elsewhere, "r2", json!({})).await;
    assert_error(&answer, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    // A malformed event id.
    let answer = redact(&server, t, &room, "not-an-event", "r3", json!({})).await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
}

async fn redactions_sent_with_send_apply_in_every_version(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let t = &alice.token;
    // "Homeservers MUST allow clients to send m.room.redaction events with
    // this endpoint for all room versions. In rooms with a version older
    // than 11 they MUST move the redacts property inside the content to the
    // top level of the event."
    for version in ["10", "11", "12"] {
        let room = create_room(&server, t, json!({ "room_version": version })).await;
        let (_, answer) = put_state(
            &server,
            t,
            &room,
            "org.example.secret",
            "",
            json!({ "secret": "x" }),
        )
        .await;
        let target = event_id(&answer);
        let answer = send(
            &server,
            t,
            &room,
            "m.room.redaction",
            "r1",
            json!({ "redacts": target, "reason": "cleanup" }),
        )
        .await;
        assert_eq!(answer.0, StatusCode::OK, "v{version}: {}", answer.1);
        assert_eq!(
            state_content(&server, t, &room, "org.example.secret", "").await,
            json!({}),
            "v{version}"
        );
    }
}

async fn redacted_messages_lose_their_content(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let t = &alice.token;
    let room = create_room(&server, t, json!({ "room_version": "11" })).await;
    let secret = send_text(&server, t, &room, "the secret plan").await;
    let kept = send_text(&server, t, &room, "harmless").await;
    let answer = redact(
        &server,
        t,
        &room,
        &secret,
        "r1",
        json!({ "reason": "leak" }),
    )
    .await;
    assert_eq!(answer.0, StatusCode::OK, "{}", answer.1);
    let redaction = event_id(&answer.1);

    let (status, page) = server
        .request(
            Method::GET,
            room_url(&server, &room, "/messages?dir=b&limit=50"),
            Some(t),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(!page.to_string().contains("the secret plan"), "{page}");
    let events = page["chunk"].as_array().expect("chunk");
    let find = |id: &str| {
        events
            .iter()
            .find(|e| e["event_id"] == id)
            .unwrap_or_else(|| panic!("{id} not in {page}"))
    };
    assert_eq!(find(&secret)["content"], json!({}));
    assert_eq!(find(&secret)["type"], "m.room.message");
    assert_eq!(find(&kept)["content"]["body"], "harmless");
    let redaction_event = find(&redaction);
    assert_eq!(redaction_event["type"], "m.room.redaction");
    // From v11 on, `redacts` is in the content.
    assert_eq!(redaction_event["content"]["redacts"], secret);
    assert_eq!(redaction_event["content"]["reason"], "leak");
}
