//! `GET /rooms/{roomId}/context/{eventId}` (client-server-api, "Getting
//! events for a room"): the event, half the limit before and half after,
//! tokens that continue pagination exactly where the context stops, the
//! state at the last event, filters, lazy-loaded members and visibility.

use myelin_tests::{Backend, TestServer, assert_error, backend_tests};
use reqwest::{Method, StatusCode, Url};
use serde_json::{Value, json};

use crate::{
    rooms_support::{create_room, enc, invite, join, room_url, send, send_text},
    sync_support::{bodies, chunk, ids, messages_ok, set_history_visibility},
};

backend_tests!(
    context_splits_the_limit_and_its_tokens_continue_pagination,
    context_state_filters_and_lazy_members,
    context_hides_what_history_visibility_hides,
    context_rejects_bad_input,
);

/// `GET /rooms/{roomId}/context/{eventId}` with these query parameters.
async fn context(
    server: &TestServer,
    token: &str,
    room_id: &str,
    event_id: &str,
    params: &[(&str, &str)],
) -> (StatusCode, Value) {
    let base = room_url(server, room_id, &format!("/context/{}", enc(event_id)));
    let url = Url::parse_with_params(&base, params).expect("context URL");
    server
        .request(Method::GET, url.as_str(), Some(token), None)
        .await
}

async fn context_ok(
    server: &TestServer,
    token: &str,
    room_id: &str,
    event_id: &str,
    params: &[(&str, &str)],
) -> Value {
    let (status, answer) = context(server, token, room_id, event_id, params).await;
    assert_eq!(status, StatusCode::OK, "context {params:?}: {answer}");
    answer
}

#[track_caller]
fn events<'a>(answer: &'a Value, key: &str) -> &'a Vec<Value> {
    answer[key]
        .as_array()
        .unwrap_or_else(|| panic!("no {key} in {answer}"))
}

#[track_caller]
fn token<'a>(answer: &'a Value, key: &str) -> &'a str {
    answer[key]
        .as_str()
        .unwrap_or_else(|| panic!("no {key} token in {answer}"))
}

async fn context_splits_the_limit_and_its_tokens_continue_pagination(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let room = create_room(&server, &alice.token, json!({ "preset": "private_chat" })).await;
    let mut sent = Vec::new();
    for index in 0..10 {
        sent.push(send_text(&server, &alice.token, &room, &format!("m{index}")).await);
    }

    let answer = context_ok(&server, &alice.token, &room, &sent[5], &[("limit", "5")]).await;
    assert_eq!(answer["event"]["event_id"], sent[5], "{answer}");
    assert_eq!(answer["event"]["content"]["body"], "m5");
    // limit 5: two before (newest first), three after (oldest first).
    assert_eq!(
        ids(events(&answer, "events_before")),
        vec![sent[4].clone(), sent[3].clone()]
    );
    assert_eq!(ids(events(&answer, "events_after")), sent[6..9].to_vec());

    // `start` continues backwards right before events_before ...
    let back = messages_ok(
        &server,
        &alice.token,
        &room,
        &[
            ("from", token(&answer, "start")),
            ("dir", "b"),
            ("limit", "3"),
        ],
    )
    .await;
    assert_eq!(
        ids(chunk(&back)),
        vec![sent[2].clone(), sent[1].clone(), sent[0].clone()]
    );
    // ... and `end` forwards right after events_after, to the newest event.
    let forward = messages_ok(
        &server,
        &alice.token,
        &room,
        &[
            ("from", token(&answer, "end")),
            ("dir", "f"),
            ("limit", "10"),
        ],
    )
    .await;
    assert_eq!(ids(chunk(&forward)), vec![sent[9].clone()]);

    // An event sent after the context was read is reached from its `end`
    // too: the last event's context ends where the stream was.
    let last = context_ok(&server, &alice.token, &room, &sent[9], &[("limit", "4")]).await;
    assert!(events(&last, "events_after").is_empty(), "{last}");
    let later = send_text(&server, &alice.token, &room, "later").await;
    let forward = messages_ok(
        &server,
        &alice.token,
        &room,
        &[("from", token(&last, "end")), ("dir", "f")],
    )
    .await;
    assert_eq!(ids(chunk(&forward)), vec![later]);

    // limit 0: the event alone; its tokens still continue on both sides.
    let alone = context_ok(&server, &alice.token, &room, &sent[5], &[("limit", "0")]).await;
    assert!(
        events(&alone, "events_before").is_empty() && events(&alone, "events_after").is_empty()
    );
    let back = messages_ok(
        &server,
        &alice.token,
        &room,
        &[
            ("from", token(&alone, "start")),
            ("dir", "b"),
            ("limit", "1"),
        ],
    )
    .await;
    assert_eq!(ids(chunk(&back)), vec![sent[4].clone()]);
    let forward = messages_ok(
        &server,
        &alice.token,
        &room,
        &[("from", token(&alone, "end")), ("dir", "f"), ("limit", "1")],
    )
    .await;
    assert_eq!(ids(chunk(&forward)), vec![sent[6].clone()]);

    // The default limit is 10: five before, five after.
    let default = context_ok(&server, &alice.token, &room, &sent[5], &[]).await;
    assert_eq!(events(&default, "events_before").len(), 5, "{default}");
    assert_eq!(ids(events(&default, "events_after"))[..4], sent[6..10]);
}

async fn context_state_filters_and_lazy_members(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let room = create_room(
        &server,
        &alice.token,
        json!({ "preset": "public_chat", "name": "before" }),
    )
    .await;
    join(&server, &bob.token, &room).await;
    join(&server, &carol.token, &room).await;
    let first = send_text(&server, &alice.token, &room, "one").await;
    let reacted = send(
        &server,
        &bob.token,
        &room,
        "m.reaction",
        "reaction",
        json!({ "m.relates_to": { "rel_type": "m.annotation", "event_id": first, "key": "+" } }),
    )
    .await;
    assert_eq!(reacted.0, StatusCode::OK, "{}", reacted.1);
    let reaction = crate::rooms_support::event_id(&reacted.1);
    let second = send_text(&server, &bob.token, &room, "two").await;
    let third = send_text(&server, &alice.token, &room, "three").await;

    // The state is the room's at the last event returned: the name set
    // after it is not in it.
    let answer = context_ok(&server, &carol.token, &room, &second, &[("limit", "2")]).await;
    assert_eq!(ids(events(&answer, "events_after")), vec![third.clone()]);
    let renamed = crate::rooms_support::put_state(
        &server,
        &alice.token,
        &room,
        "m.room.name",
        "",
        json!({ "name": "after" }),
    )
    .await;
    assert_eq!(renamed.0, StatusCode::OK, "{}", renamed.1);
    let answer = context_ok(&server, &carol.token, &room, &second, &[("limit", "2")]).await;
    let state = events(&answer, "state");
    let name = state
        .iter()
        .find(|e| e["type"] == "m.room.name")
        .unwrap_or_else(|| panic!("no name in {state:?}"));
    assert_eq!(name["content"]["name"], "before");
    let members: Vec<&str> = state
        .iter()
        .filter(|e| e["type"] == "m.room.member")
        .filter_map(|e| e["state_key"].as_str())
        .collect();
    assert_eq!(
        members.len(),
        3,
        "every member without lazy loading: {members:?}"
    );

    // A type filter applies to the events around, not to the event asked for.
    let filter = json!({ "types": ["m.room.message"] }).to_string();
    let answer = context_ok(
        &server,
        &carol.token,
        &room,
        &reaction,
        &[("limit", "2"), ("filter", &filter)],
    )
    .await;
    assert_eq!(answer["event"]["event_id"], reaction);
    assert_eq!(bodies(events(&answer, "events_before")), vec!["one"]);
    assert_eq!(bodies(events(&answer, "events_after")), vec!["two"]);

    // Lazy-loaded members: the senders of the returned events only (not
    // carol, who sent nothing), and all other state.
    let filter = json!({ "lazy_load_members": true }).to_string();
    let answer = context_ok(
        &server,
        &carol.token,
        &room,
        &second,
        &[("limit", "2"), ("filter", &filter)],
    )
    .await;
    let state = events(&answer, "state");
    let mut members: Vec<&str> = state
        .iter()
        .filter(|e| e["type"] == "m.room.member")
        .filter_map(|e| e["state_key"].as_str())
        .collect();
    members.sort_unstable();
    let mut expected = vec![alice.user_id.as_str(), bob.user_id.as_str()];
    expected.sort_unstable();
    assert_eq!(members, expected);
    assert!(
        state.iter().any(|e| e["type"] == "m.room.create"),
        "{state:?}"
    );
}

async fn context_hides_what_history_visibility_hides(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let eve = server.register("eve").await;
    let room = create_room(&server, &alice.token, json!({ "preset": "private_chat" })).await;
    set_history_visibility(&server, &alice.token, &room, "joined").await;
    let hidden = send_text(&server, &alice.token, &room, "before bob").await;
    invite(&server, &alice.token, &room, &bob.user_id).await;
    join(&server, &bob.token, &room).await;
    let seen = send_text(&server, &alice.token, &room, "after bob").await;

    // Bob may read what came after his join; the earlier message is left
    // out of events_before, and asking for it directly is a 404.
    let answer = context_ok(&server, &bob.token, &room, &seen, &[("limit", "20")]).await;
    let before = events(&answer, "events_before");
    assert!(!ids(before).contains(&hidden), "{before:?}");
    assert!(!bodies(before).contains(&"before bob".to_owned()));
    let refused = context(&server, &bob.token, &room, &hidden, &[]).await;
    assert_error(&refused, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    // Someone outside the room is refused (403, as for /messages) before
    // anything is looked up: the same answer for an unknown event or room.
    let outsider = context(&server, &eve.token, &room, &seen, &[]).await;
    assert_error(&outsider, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let unknown = context(&server, &eve.token, &room, "$nosuchevent", &[]).await;
    assert_eq!(unknown, outsider);
    let unknown_room = context(&server, &eve.token, "!nosuchroom:localhost", &seen, &[]).await;
    assert_eq!(unknown_room, outsider);
}

async fn context_rejects_bad_input(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let room = create_room(&server, &alice.token, json!({ "preset": "private_chat" })).await;
    let other = create_room(&server, &alice.token, json!({ "preset": "private_chat" })).await;
    let event = send_text(&server, &alice.token, &room, "hello").await;

    let wrong_room = context(&server, &alice.token, &other, &event, &[]).await;
    assert_error(&wrong_room, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    let unknown = context(&server, &alice.token, &room, "$nosuchevent", &[]).await;
    assert_error(&unknown, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    let bad_limit = context(&server, &alice.token, &room, &event, &[("limit", "ten")]).await;
    assert_error(&bad_limit, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    let bad_filter = context(
        &server,
        &alice.token,
        &room,
        &event,
        &[("filter", "{not json")],
    )
    .await;
    assert_eq!(bad_filter.0, StatusCode::BAD_REQUEST, "{}", bad_filter.1);
    assert!(bad_filter.1["errcode"].is_string(), "{}", bad_filter.1);
    let url = room_url(&server, &room, &format!("/context/{}", enc(&event)));
    let anonymous = server.request(Method::GET, url, None, None).await;
    assert_error(&anonymous, StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN");
}
