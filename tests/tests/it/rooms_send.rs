//! `PUT /rooms/{roomId}/send/{eventType}/{txnId}`: event ids, transaction
//! idempotency (client-server-api "Transaction identifiers": scoped to the
//! device and the request path), who may send, canonical JSON content
//! ("Canonical JSON" appendix: no floats, integers within ±(2^53 − 1)), the
//! 65536-byte PDU limit ("Size limits"), and content served as stored.

use myelin_tests::{Backend, TestServer, assert_error, backend_tests};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::rooms_support::{create_room, event_id, join, membership, room_url, send, send_text};

backend_tests!(
    send_returns_an_event_id_once_per_transaction,
    only_members_may_send,
    sending_to_unknown_rooms_fails,
    events_default_and_per_type_levels_apply,
    content_is_served_as_canonical_json_of_what_was_sent,
    non_canonical_numbers_are_bad_json,
    malformed_bodies_are_rejected,
    concurrent_retries_create_one_event,
    message_content_is_served_as_sent_in_messages,
    transactions_belong_to_the_device_not_the_token,
    events_over_the_size_limit_are_too_large,
);

/// Sends a raw body with `token` and returns the status and raw answer text.
pub async fn raw(
    server: &TestServer,
    method: Method,
    url: String,
    token: &str,
    body: &str,
) -> (StatusCode, String) {
    let mut request = server.client.request(method, url).bearer_auth(token);
    if !body.is_empty() {
        request = request
            .header("content-type", "application/json")
            .body(body.to_owned());
    }
    let response = request.send().await.expect("request reaches the server");
    let status = response.status();
    (status, response.text().await.expect("body"))
}

async fn send_returns_an_event_id_once_per_transaction(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let phone = server.login("alice", Some("PHONE")).await;
    let room = create_room(&server, &alice.token, json!({ "room_version": "11" })).await;
    let other = create_room(&server, &alice.token, json!({ "room_version": "11" })).await;
    let content = json!({ "msgtype": "m.text", "body": "hello" });

    let first = send(
        &server,
        &alice.token,
        &room,
        "m.room.message",
        "t1",
        content.clone(),
    )
    .await;
    assert_eq!(first.0, StatusCode::OK, "{}", first.1);
    let first_id = event_id(&first.1);
    assert!(first_id.starts_with('$'), "{first_id}");
    assert_eq!(first.1, json!({ "event_id": first_id }));

    // A retry from the same device returns the same event, even with another body.
    let retry = send(
        &server,
        &alice.token,
        &room,
        "m.room.message",
        "t1",
        json!({ "body": "x" }),
    )
    .await;
    assert_eq!(retry, (StatusCode::OK, json!({ "event_id": first_id })));
    // Another device with the same transaction id sends a new event.
    let from_phone = send(
        &server,
        &phone.token,
        &room,
        "m.room.message",
        "t1",
        content.clone(),
    )
    .await;
    assert_eq!(from_phone.0, StatusCode::OK);
    assert_ne!(event_id(&from_phone.1), first_id);
    // Another transaction id is another event.
    let second = send(
        &server,
        &alice.token,
        &room,
        "m.room.message",
        "t2",
        content.clone(),
    )
    .await;
    assert_ne!(event_id(&second.1), first_id);
    // The scope is the request path: another room or event type is another event.
    let elsewhere = send(
        &server,
        &alice.token,
        &other,
        "m.room.message",
        "t1",
        content.clone(),
    )
    .await;
    assert_eq!(elsewhere.0, StatusCode::OK, "{}", elsewhere.1);
    assert_ne!(event_id(&elsewhere.1), first_id);
    let other_type = send(
        &server,
        &alice.token,
        &room,
        "org.example.ping",
        "t1",
        json!({}),
    )
    .await;
    assert_eq!(other_type.0, StatusCode::OK, "{}", other_type.1);
    assert_ne!(event_id(&other_type.1), first_id);

    // Transaction ids with URL-special characters round-trip.
    let odd = "a b/c?d#e%f";
    let a = send(
        &server,
        &alice.token,
        &room,
        "m.room.message",
        odd,
        content.clone(),
    )
    .await;
    let b = send(
        &server,
        &alice.token,
        &room,
        "m.room.message",
        odd,
        content.clone(),
    )
    .await;
    assert_eq!(a.0, StatusCode::OK, "{}", a.1);
    assert_eq!(a, b);
}

async fn only_members_may_send(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = create_room(
        &server,
        &alice.token,
        json!({ "preset": "public_chat", "room_version": "11" }),
    )
    .await;
    let content = json!({ "msgtype": "m.text", "body": "let me in" });
    let answer = send(
        &server,
        &bob.token,
        &room,
        "m.room.message",
        "t1",
        content.clone(),
    )
    .await;
    assert_error(&answer, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    join(&server, &bob.token, &room).await;
    send_text(&server, &bob.token, &room, "in").await;
    let left = membership(&server, &bob.token, &room, "leave", json!({})).await;
    assert_eq!(left.0, StatusCode::OK);
    let answer = send(
        &server,
        &bob.token,
        &room,
        "m.room.message",
        "t2",
        content.clone(),
    )
    .await;
    assert_error(&answer, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    // An invited user is not yet a member.
    let carol = server.register("carol").await;
    crate::rooms_support::invite(&server, &alice.token, &room, &carol.user_id).await;
    let answer = send(
        &server,
        &carol.token,
        &room,
        "m.room.message",
        "t1",
        content,
    )
    .await;
    assert_error(&answer, StatusCode::FORBIDDEN, "M_FORBIDDEN");
}

async fn sending_to_unknown_rooms_fails(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let answer = send(
        &server,
        &alice.token,
        "!unknown:localhost",
        "m.room.message",
        "t1",
        json!({ "body": "x" }),
    )
    .await;
    // Not a member of a room the server does not know: 404 or 403, never 2xx/500.
    match answer.0 {
        StatusCode::NOT_FOUND => assert_error(&answer, StatusCode::NOT_FOUND, "M_NOT_FOUND"),
        _ => assert_error(&answer, StatusCode::FORBIDDEN, "M_FORBIDDEN"),
    }
    let answer = send(
        &server,
        &alice.token,
        "not-a-room",
        "m.room.message",
        "t1",
        json!({}),
    )
    .await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
}

async fn events_default_and_per_type_levels_apply(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = create_room(
        &server,
        &alice.token,
        json!({
            "preset": "public_chat",
            "room_version": "11",
            "power_level_content_override": {
                "events_default": 0,
                "events": { "org.example.restricted": 50 },
            },
        }),
    )
    .await;
    join(&server, &bob.token, &room).await;
    let answer = send(
        &server,
        &bob.token,
        &room,
        "org.example.restricted",
        "t1",
        json!({}),
    )
    .await;
    assert_error(&answer, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let answer = send(
        &server,
        &bob.token,
        &room,
        "org.example.open",
        "t2",
        json!({}),
    )
    .await;
    assert_eq!(answer.0, StatusCode::OK, "{}", answer.1);
    let answer = send(
        &server,
        &alice.token,
        &room,
        "org.example.restricted",
        "t1",
        json!({}),
    )
    .await;
    assert_eq!(answer.0, StatusCode::OK, "{}", answer.1);
}

async fn content_is_served_as_canonical_json_of_what_was_sent(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let room = create_room(&server, &alice.token, json!({ "room_version": "11" })).await;
    // Unsorted keys, escaped non-ASCII, a surrogate pair, escaped slash,
    // control characters, U+2028, and nesting.
    let sent = r#"{ "z" : "caf\u00e9 \ud83d\ude00 \"q\" \\ \/", "a":[1, {"c":true,"b":null}, 0],
        "m":"\u0007\n\u001F","\u2028":"line sep", "big": 9007199254740991, "neg": -9007199254740991 }"#;
    // The same content in the spec's canonical JSON (sorted keys, shortest
    // escapes, UTF-8 as is, integers in decimal).
    let canonical = "{\"a\":[1,{\"b\":null,\"c\":true},0],\"big\":9007199254740991,\
        \"m\":\"\\u0007\\n\\u001f\",\"neg\":-9007199254740991,\
        \"z\":\"café 😀 \\\"q\\\" \\\\ /\",\"\u{2028}\":\"line sep\"}";
    let url = room_url(&server, &room, "/state/org.example.bytes/key");
    let (status, answer) = raw(&server, Method::PUT, url.clone(), &alice.token, sent).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let (status, served) = raw(&server, Method::GET, url.clone(), &alice.token, "").await;
    assert_eq!(status, StatusCode::OK, "{served}");
    assert_eq!(served, canonical);
    // The whole event carries the same bytes as its content.
    let (status, event) = raw(
        &server,
        Method::GET,
        format!("{url}?format=event"),
        &alice.token,
        "",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{event}");
    assert!(
        event.contains(&format!("\"content\":{canonical}")),
        "{event}"
    );
    // And so does the full state listing.
    let (status, state) = raw(
        &server,
        Method::GET,
        room_url(&server, &room, "/state"),
        &alice.token,
        "",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        state.contains(&format!("\"content\":{canonical}")),
        "{state}"
    );

    // Message events take the same path: the send succeeds with such content.
    let url = room_url(&server, &room, "/send/org.example.bytes/t1");
    let (status, answer) = raw(&server, Method::PUT, url, &alice.token, sent).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
}

async fn non_canonical_numbers_are_bad_json(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let room = create_room(&server, &alice.token, json!({ "room_version": "11" })).await;
    for (i, body) in [
        r#"{"n": 1.5}"#,
        r#"{"n": 1.0}"#,
        r#"{"n": 1e3}"#,
        r#"{"deep": {"list": [0, 0.25]}}"#,
        r#"{"n": 9007199254740992}"#,
        r#"{"n": -9007199254740992}"#,
    ]
    .into_iter()
    .enumerate()
    {
        for url in [
            room_url(&server, &room, &format!("/send/m.room.message/f{i}")),
            room_url(&server, &room, "/state/org.example.num/"),
        ] {
            let (status, text) = raw(&server, Method::PUT, url, &alice.token, body).await;
            let answer: Value = serde_json::from_str(&text).expect("JSON error");
            assert_error(&(status, answer), StatusCode::BAD_REQUEST, "M_BAD_JSON");
        }
    }
}

async fn events_over_the_size_limit_are_too_large(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let room = create_room(&server, &alice.token, json!({ "room_version": "11" })).await;
    // Comfortably inside the limit with the PDU's own fields.
    let fits = json!({ "body": "x".repeat(60_000) });
    let answer = send(&server, &alice.token, &room, "m.room.message", "ok", fits).await;
    assert_eq!(answer.0, StatusCode::OK, "{}", answer.1);
    // Content alone past 65536 bytes.
    for (txn, size) in [("big", 65_536), ("huge", 70_000), ("giant", 200_000)] {
        let body = json!({ "body": "x".repeat(size) });
        let answer = send(
            &server,
            &alice.token,
            &room,
            "m.room.message",
            txn,
            body.clone(),
        )
        .await;
        assert_error(&answer, StatusCode::PAYLOAD_TOO_LARGE, "M_TOO_LARGE");
        let answer = crate::rooms_support::put_state(
            &server,
            &alice.token,
            &room,
            "org.example.big",
            txn,
            body,
        )
        .await;
        assert_error(&answer, StatusCode::PAYLOAD_TOO_LARGE, "M_TOO_LARGE");
    }
    // Just over the limit once the server adds hashes, signatures and ids.
    let body = json!({ "body": "x".repeat(65_000) });
    let answer = send(&server, &alice.token, &room, "m.room.message", "edge", body).await;
    assert_error(&answer, StatusCode::PAYLOAD_TOO_LARGE, "M_TOO_LARGE");
}

async fn malformed_bodies_are_rejected(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let room = create_room(&server, &alice.token, json!({ "room_version": "11" })).await;
    let url = room_url(&server, &room, "/send/m.room.message/m1");
    for (body, errcode) in [
        ("not json", "M_NOT_JSON"),
        ("{\"body\": ", "M_NOT_JSON"),
        ("[1, 2]", "M_BAD_JSON"),
        ("\"text\"", "M_BAD_JSON"),
    ] {
        let (status, text) = raw(&server, Method::PUT, url.clone(), &alice.token, body).await;
        let answer: Value = serde_json::from_str(&text).expect("JSON error");
        assert_error(&(status, answer), StatusCode::BAD_REQUEST, errcode);
    }
    let answer = server
        .request(Method::PUT, url, None, Some(json!({})))
        .await;
    assert_error(&answer, StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN");
}

async fn concurrent_retries_create_one_event(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let room = create_room(&server, &alice.token, json!({ "room_version": "11" })).await;
    let content = json!({ "msgtype": "m.text", "body": "once" });
    let sends = (0..8).map(|_| {
        send(
            &server,
            &alice.token,
            &room,
            "m.room.message",
            "same",
            content.clone(),
        )
    });
    let answers = myelin_tests::join_all(sends).await;
    let first = &answers[0];
    assert_eq!(first.0, StatusCode::OK, "{}", first.1);
    for answer in &answers {
        assert_eq!(answer, first);
    }
    let (status, page) = server
        .request(
            Method::GET,
            room_url(&server, &room, "/messages?dir=b&limit=50"),
            Some(&alice.token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let count = page["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["content"]["body"] == "once")
        .count();
    assert_eq!(count, 1, "{page}");
}

async fn message_content_is_served_as_sent_in_messages(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let room = create_room(&server, &alice.token, json!({ "room_version": "11" })).await;
    let sent = r#"{"z":"\u00e9\ud83d\ude00","a":{"y":[true,null],"x":"\u0001"},"n":-7}"#;
    let canonical = "{\"a\":{\"x\":\"\\u0001\",\"y\":[true,null]},\"n\":-7,\"z\":\"é😀\"}";
    let url = room_url(&server, &room, "/send/org.example.opaque/b1");
    let (status, answer) = raw(&server, Method::PUT, url, &alice.token, sent).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let (status, page) = raw(
        &server,
        Method::GET,
        room_url(&server, &room, "/messages?dir=b&limit=5"),
        &alice.token,
        "",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains(&format!("\"content\":{canonical}")), "{page}");
}

async fn transactions_belong_to_the_device_not_the_token(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let first = server.login("alice", Some("LAPTOP")).await;
    let room = create_room(&server, &alice.token, json!({ "room_version": "11" })).await;
    let content = json!({ "msgtype": "m.text", "body": "hi" });
    let sent = send(
        &server,
        &first.token,
        &room,
        "m.room.message",
        "t1",
        content.clone(),
    )
    .await;
    assert_eq!(sent.0, StatusCode::OK, "{}", sent.1);
    // "The scope of a transaction ID is for a single device": a new login
    // on the same device (a new access token) retries into the same event.
    let again = server.login("alice", Some("LAPTOP")).await;
    assert_ne!(again.token, first.token);
    let retry = send(
        &server,
        &again.token,
        &room,
        "m.room.message",
        "t1",
        content.clone(),
    )
    .await;
    assert_eq!(retry, sent);
    // "... and a single HTTP request path": a redaction with the same
    // transaction id is a new event, and really redacts.
    let target = event_id(&sent.1);
    let (status, redaction) = server
        .request(
            Method::PUT,
            room_url(&server, &room, &format!("/redact/{target}/t1")),
            Some(&again.token),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{redaction}");
    assert_ne!(event_id(&redaction), target);
    let (status, page) = server
        .request(
            Method::GET,
            room_url(&server, &room, "/messages?dir=b&limit=50"),
            Some(&alice.token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let message = page["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event_id"] == target)
        .unwrap_or_else(|| panic!("{page}"));
    assert_eq!(message["content"], json!({}));
}
