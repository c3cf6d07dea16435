//! History visibility on every read path (sync timelines, `/messages`,
//! `/event`), after the spec's "Room History Visibility" rules
//! (client-server-api, "Server behaviour"):
//!
//! 1. `world_readable`: allow;
//! 2. the user's membership at the event was `join`: allow;
//! 3. `shared`, and the user joined the room at any point after the event: allow;
//! 4. `invited`, and the user's membership at the event was `invite`: allow;
//! 5. otherwise deny; an unknown value counts as `shared`, and a
//!    `m.room.history_visibility` event is visible if the setting before
//!    *or* after it allows.

use myelin_tests::{Account, Backend, TestServer, assert_error, backend_tests};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::{
    rooms_support::{create_room, event_id, invite, join, membership, put_state, send_text},
    sync_support::{
        bodies, chunk, get_event, initial_sync, messages, messages_ok, next_batch, section_rooms,
        set_history_visibility, sync_ok, sync_since, timeline,
    },
};

backend_tests!(
    world_readable_history,
    shared_history,
    invited_history,
    joined_history,
    invited_history_hides_what_was_sent_while_away,
    history_visibility_changes_are_visible_before_or_after,
    unknown_history_visibility_counts_as_shared,
    strangers_read_only_the_world_readable_part,
    invitees_read_from_their_invite_under_invited,
    redacted_events_are_served_redacted,
    forgotten_rooms_history_is_gone,
    ignored_users_events_are_left_out,
);

async fn world_readable_history(backend: Backend) {
    check_visibility(
        backend,
        "world_readable",
        &["m1", "m2", "m3"],
        &["m1", "m2", "m3", "m4"],
    )
    .await;
}

async fn shared_history(backend: Backend) {
    // Rule 3: bob joined after m1 and m2, so they stay readable after he
    // leaves; m4 came after he left and he never joined again.
    check_visibility(backend, "shared", &["m1", "m2", "m3"], &["m1", "m2", "m3"]).await;
}

async fn invited_history(backend: Backend) {
    check_visibility(backend, "invited", &["m2", "m3"], &["m2", "m3"]).await;
}

async fn joined_history(backend: Backend) {
    check_visibility(backend, "joined", &["m3"], &["m3"]).await;
}

/// Alice sends m1, invites bob, sends m2; bob joins; alice sends m3
/// (`while_joined` is what bob may read now); bob leaves; alice sends m4
/// (`after_leaving` is what bob may read now). Each read path must agree,
/// and a stranger may read only a world-readable room.
async fn check_visibility(
    backend: Backend,
    setting: &str,
    while_joined: &[&str],
    after_leaving: &[&str],
) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let room = create_room(&server, &alice.token, json!({ "preset": "public_chat" })).await;
    set_history_visibility(&server, &alice.token, &room, setting).await;
    let mut sent = Vec::new();
    sent.push(send_text(&server, &alice.token, &room, "m1").await);
    invite(&server, &alice.token, &room, &bob.user_id).await;
    sent.push(send_text(&server, &alice.token, &room, "m2").await);
    join(&server, &bob.token, &room).await;
    sent.push(send_text(&server, &alice.token, &room, "m3").await);

    let context = format!("{setting}, bob joined");
    let synced = initial_sync(&server, &bob.token, 50).await;
    assert_eq!(
        bodies(timeline(&synced, "join", &room)),
        while_joined,
        "{context}: sync"
    );
    let since = next_batch(&synced);
    assert_eq!(
        readable(&server, &bob, &room).await,
        while_joined,
        "{context}: /messages"
    );
    check_events(&server, &bob, &room, &sent, while_joined, &context).await;

    let left = membership(&server, &bob.token, &room, "leave", json!({})).await;
    assert_eq!(left.0, StatusCode::OK, "{}", left.1);
    sent.push(send_text(&server, &alice.token, &room, "m4").await);

    let context = format!("{setting}, bob left");
    // The incremental sync ends the timeline at the leave.
    let synced = sync_since(&server, &bob.token, &since).await;
    assert_eq!(
        section_rooms(&synced, "leave"),
        vec![room.clone()],
        "{context}: {synced}"
    );
    let events = timeline(&synced, "leave", &room);
    assert_eq!(
        bodies(events),
        Vec::<String>::new(),
        "{context}: incremental sync"
    );
    assert_eq!(
        events.last().expect("leave")["content"]["membership"],
        "leave"
    );
    // An initial sync with include_leave: everything up to the leave he may read.
    let filter = json!({ "room": { "include_leave": true, "timeline": { "limit": 50 } } });
    let synced = sync_ok(&server, &bob.token, &[("filter", &filter.to_string())]).await;
    let up_to_leave: Vec<&str> = after_leaving
        .iter()
        .copied()
        .filter(|b| *b != "m4")
        .collect();
    assert_eq!(
        bodies(timeline(&synced, "leave", &room)),
        up_to_leave,
        "{context}: initial sync with include_leave"
    );
    assert_eq!(
        readable(&server, &bob, &room).await,
        after_leaving,
        "{context}: /messages"
    );
    check_events(&server, &bob, &room, &sent, after_leaving, &context).await;

    // A stranger.
    let context = format!("{setting}, stranger");
    let answer = messages(
        &server,
        &carol.token,
        &room,
        &[("dir", "b"), ("limit", "50")],
    )
    .await;
    let synced = sync_ok(&server, &carol.token, &[]).await;
    for section in ["join", "invite", "leave"] {
        assert_eq!(
            section_rooms(&synced, section),
            Vec::<String>::new(),
            "{context}: sync"
        );
    }
    if setting == "world_readable" {
        assert_eq!(answer.0, StatusCode::OK, "{context}: {}", answer.1);
        let mut seen = bodies(chunk(&answer.1));
        seen.reverse();
        assert_eq!(seen, ["m1", "m2", "m3", "m4"], "{context}: /messages");
        check_events(
            &server,
            &carol,
            &room,
            &sent,
            &["m1", "m2", "m3", "m4"],
            &context,
        )
        .await;
    } else {
        assert_error(&answer, StatusCode::FORBIDDEN, "M_FORBIDDEN");
        check_events(&server, &carol, &room, &sent, &[], &context).await;
    }
}

/// The message bodies a user reads with `/messages` from the newest event
/// back, oldest first.
async fn readable(server: &TestServer, user: &Account, room: &str) -> Vec<String> {
    let page = messages_ok(server, &user.token, room, &[("dir", "b"), ("limit", "100")]).await;
    assert!(page.get("end").is_none(), "one page holds it all: {page}");
    let mut seen = bodies(chunk(&page));
    seen.reverse();
    seen
}

/// `/event` answers 200 for the readable messages `m1`.. and 404 for the rest.
async fn check_events(
    server: &TestServer,
    user: &Account,
    room: &str,
    sent: &[String],
    readable: &[&str],
    context: &str,
) {
    for (index, id) in sent.iter().enumerate() {
        let body = format!("m{}", index + 1);
        let answer = get_event(server, &user.token, room, id).await;
        if readable.contains(&body.as_str()) {
            assert_eq!(
                answer.0,
                StatusCode::OK,
                "{context}: /event {body}: {}",
                answer.1
            );
            assert_eq!(answer.1["event_id"], id.as_str());
            assert_eq!(answer.1["content"]["body"], body.as_str());
            assert_eq!(answer.1["room_id"], room);
        } else {
            assert_error(&answer, StatusCode::NOT_FOUND, "M_NOT_FOUND");
        }
    }
}

/// Under `invited`, what is sent while the user has left is hidden for
/// good, even after they join again: their membership at it was `leave`.
async fn invited_history_hides_what_was_sent_while_away(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = create_room(&server, &alice.token, json!({ "preset": "public_chat" })).await;
    set_history_visibility(&server, &alice.token, &room, "invited").await;
    join(&server, &bob.token, &room).await;
    send_text(&server, &alice.token, &room, "while joined").await;
    let left = membership(&server, &bob.token, &room, "leave", json!({})).await;
    assert_eq!(left.0, StatusCode::OK, "{}", left.1);
    let away = send_text(&server, &alice.token, &room, "while away").await;
    join(&server, &bob.token, &room).await;
    send_text(&server, &alice.token, &room, "back").await;

    assert_eq!(
        readable(&server, &bob, &room).await,
        ["while joined", "back"]
    );
    let synced = initial_sync(&server, &bob.token, 50).await;
    assert_eq!(
        bodies(timeline(&synced, "join", &room)),
        ["while joined", "back"]
    );
    let answer = get_event(&server, &bob.token, &room, &away).await;
    assert_error(&answer, StatusCode::NOT_FOUND, "M_NOT_FOUND");
}

/// A `m.room.history_visibility` event is visible when the setting before
/// or after it allows: a later joiner sees the switch from `shared` to
/// `joined`, but not the messages under `joined`.
async fn history_visibility_changes_are_visible_before_or_after(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = create_room(&server, &alice.token, json!({ "preset": "public_chat" })).await;
    send_text(&server, &alice.token, &room, "shared").await;
    let (status, answer) = put_state(
        &server,
        &alice.token,
        &room,
        "m.room.history_visibility",
        "",
        json!({ "history_visibility": "joined" }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let change = event_id(&answer);
    send_text(&server, &alice.token, &room, "joined only").await;
    join(&server, &bob.token, &room).await;

    let page = messages_ok(
        &server,
        &bob.token,
        &room,
        &[("dir", "b"), ("limit", "100")],
    )
    .await;
    let ids: Vec<&str> = chunk(&page)
        .iter()
        .map(|e| e["event_id"].as_str().expect("id"))
        .collect();
    assert!(
        ids.contains(&change.as_str()),
        "the change to joined is visible: {page}"
    );
    assert_eq!(bodies(chunk(&page)), ["shared"], "{page}");
    let answer = get_event(&server, &bob.token, &room, &change).await;
    assert_eq!(answer.0, StatusCode::OK, "{}", answer.1);
    let synced = initial_sync(&server, &bob.token, 50).await;
    let events: &Vec<Value> = timeline(&synced, "join", &room);
    assert!(
        events.iter().any(|e| e["event_id"] == change.as_str()),
        "sync shows the change: {events:?}"
    );
}

/// "If the value is not understood, the visibility is assumed to be shared."
async fn unknown_history_visibility_counts_as_shared(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = create_room(&server, &alice.token, json!({ "preset": "public_chat" })).await;
    set_history_visibility(&server, &alice.token, &room, "org.example.custom").await;
    send_text(&server, &alice.token, &room, "before bob").await;
    join(&server, &bob.token, &room).await;
    assert_eq!(readable(&server, &bob, &room).await, ["before bob"]);
    let synced = initial_sync(&server, &bob.token, 50).await;
    assert_eq!(bodies(timeline(&synced, "join", &room)), ["before bob"]);
}

/// A stranger reads a world-readable room's events from while it was
/// world-readable, not those from before under `shared`; `/event` agrees.
async fn strangers_read_only_the_world_readable_part(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let carol = server.register("carol").await;
    let room = create_room(&server, &alice.token, json!({ "preset": "public_chat" })).await;
    let hidden = send_text(&server, &alice.token, &room, "shared only").await;
    set_history_visibility(&server, &alice.token, &room, "world_readable").await;
    let open = send_text(&server, &alice.token, &room, "for everyone").await;
    assert_eq!(readable(&server, &carol, &room).await, ["for everyone"]);
    let answer = get_event(&server, &carol.token, &room, &hidden).await;
    assert_error(&answer, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    let (status, event) = get_event(&server, &carol.token, &room, &open).await;
    assert_eq!(status, StatusCode::OK, "{event}");
    assert_eq!(event["content"]["body"], "for everyone");
    // Closing the room again shuts the stranger out of /messages.
    set_history_visibility(&server, &alice.token, &room, "joined").await;
    let answer = messages(&server, &carol.token, &room, &[("dir", "b")]).await;
    assert_error(&answer, StatusCode::FORBIDDEN, "M_FORBIDDEN");
}

/// Rule 4: under `invited`, an invitee who has not joined yet reads what
/// was sent since the invite; under `joined` they read nothing.
async fn invitees_read_from_their_invite_under_invited(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    for (setting, expected) in [("invited", vec!["after invite"]), ("joined", vec![])] {
        let room = create_room(&server, &alice.token, json!({ "preset": "private_chat" })).await;
        set_history_visibility(&server, &alice.token, &room, setting).await;
        send_text(&server, &alice.token, &room, "before invite").await;
        invite(&server, &alice.token, &room, &bob.user_id).await;
        let after = send_text(&server, &alice.token, &room, "after invite").await;
        assert_eq!(readable(&server, &bob, &room).await, expected, "{setting}");
        let answer = get_event(&server, &bob.token, &room, &after).await;
        if setting == "invited" {
            assert_eq!(answer.0, StatusCode::OK, "{}", answer.1);
        } else {
            assert_error(&answer, StatusCode::NOT_FOUND, "M_NOT_FOUND");
        }
    }
}

/// Redacted events reach every read path redacted.
async fn redacted_events_are_served_redacted(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = create_room(&server, &alice.token, json!({ "preset": "public_chat" })).await;
    join(&server, &bob.token, &room).await;
    let since = next_batch(&sync_ok(&server, &bob.token, &[]).await);
    let secret = send_text(&server, &alice.token, &room, "oops").await;
    let (status, answer) = crate::rooms_support::send(
        &server,
        &alice.token,
        &room,
        "m.room.redaction",
        "redact-1",
        json!({ "redacts": secret, "reason": "typo" }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let synced = sync_since(&server, &bob.token, &since).await;
    let events = timeline(&synced, "join", &room);
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[0]["event_id"], secret.as_str());
    assert_eq!(
        events[0]["content"],
        json!({}),
        "redacted in sync: {}",
        events[0]
    );
    assert_eq!(events[1]["type"], "m.room.redaction");
    let page = messages_ok(&server, &bob.token, &room, &[("dir", "b"), ("limit", "2")]).await;
    assert_eq!(chunk(&page)[1]["event_id"], secret.as_str());
    assert_eq!(
        chunk(&page)[1]["content"],
        json!({}),
        "redacted in /messages"
    );
    let (status, event) = get_event(&server, &bob.token, &room, &secret).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(event["content"], json!({}), "redacted in /event");
}

/// "After this API is called, however, a user will no longer be able to
/// retrieve history for this room" (`POST /rooms/{roomId}/forget`).
async fn forgotten_rooms_history_is_gone(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = create_room(&server, &alice.token, json!({ "preset": "public_chat" })).await;
    join(&server, &bob.token, &room).await;
    let seen = send_text(&server, &alice.token, &room, "seen").await;
    let left = membership(&server, &bob.token, &room, "leave", json!({})).await;
    assert_eq!(left.0, StatusCode::OK, "{}", left.1);
    assert_eq!(readable(&server, &bob, &room).await, ["seen"]);
    let forgot = membership(&server, &bob.token, &room, "forget", json!({})).await;
    assert_eq!(forgot.0, StatusCode::OK, "{}", forgot.1);

    let answer = messages(&server, &bob.token, &room, &[("dir", "b")]).await;
    assert_error(&answer, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let answer = get_event(&server, &bob.token, &room, &seen).await;
    assert_error(&answer, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    let filter = json!({ "room": { "include_leave": true } }).to_string();
    let synced = sync_ok(&server, &bob.token, &[("filter", &filter)]).await;
    assert_eq!(
        section_rooms(&synced, "leave"),
        Vec::<String>::new(),
        "{synced}"
    );

    // Joining again brings the room back.
    join(&server, &bob.token, &room).await;
    assert_eq!(readable(&server, &bob, &room).await, ["seen"]);
}

/// Ignoring users (client-server-api, "Ignoring Users"): "the client will
/// no longer receive events sent by that user, with the exception of state
/// events", and invites from them are suppressed, on sync and /messages.
async fn ignored_users_events_are_left_out(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let room = create_room(
        &server,
        &alice.token,
        json!({ "preset": "public_chat", "power_level_content_override": { "state_default": 0 } }),
    )
    .await;
    join(&server, &bob.token, &room).await;
    join(&server, &carol.token, &room).await;
    let url = server.v3(&format!(
        "/user/{}/account_data/m.ignored_user_list",
        carol.user_id
    ));
    let (status, answer) = server
        .request(
            reqwest::Method::PUT,
            url,
            Some(&carol.token),
            Some(json!({ "ignored_users": { bob.user_id.clone(): {} } })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let since = next_batch(&sync_ok(&server, &carol.token, &[]).await);

    let hidden = send_text(&server, &bob.token, &room, "from bob").await;
    let (status, topic) = put_state(
        &server,
        &bob.token,
        &room,
        "m.room.topic",
        "",
        json!({ "topic": "bob's topic" }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{topic}");
    let shown = send_text(&server, &alice.token, &room, "from alice").await;
    let synced = sync_since(&server, &carol.token, &since).await;
    let events = timeline(&synced, "join", &room);
    let seen: Vec<&str> = events
        .iter()
        .map(|e| e["event_id"].as_str().expect("id"))
        .collect();
    assert_eq!(
        seen,
        [event_id(&topic).as_str(), shown.as_str()],
        "{synced}"
    );
    let page = messages_ok(
        &server,
        &carol.token,
        &room,
        &[("dir", "b"), ("limit", "3")],
    )
    .await;
    assert!(
        chunk(&page)
            .iter()
            .all(|e| e["event_id"] != hidden.as_str()),
        "{page}"
    );
    assert_eq!(bodies(chunk(&page)), ["from alice"], "{page}");
    // Others still see bob.
    let page = messages_ok(
        &server,
        &alice.token,
        &room,
        &[("dir", "b"), ("limit", "3")],
    )
    .await;
    assert_eq!(bodies(chunk(&page)), ["from alice", "from bob"]);

    // Bob's invites do not reach carol.
    let since = next_batch(&synced);
    let bobs_room = create_room(&server, &bob.token, json!({})).await;
    invite(&server, &bob.token, &bobs_room, &carol.user_id).await;
    let synced = sync_since(&server, &carol.token, &since).await;
    assert_eq!(
        section_rooms(&synced, "invite"),
        Vec::<String>::new(),
        "{synced}"
    );
    let synced = sync_ok(&server, &carol.token, &[]).await;
    assert_eq!(
        section_rooms(&synced, "invite"),
        Vec::<String>::new(),
        "{synced}"
    );
}
