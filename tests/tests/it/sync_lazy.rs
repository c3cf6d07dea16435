//! Lazy-loading room members in `/sync` (Client-Server API, "Lazy-loading
//! room members"): every timeline sender's membership reaches the client
//! unless this device, syncing with this filter, was already sent it; the
//! syncing user's own membership too; nothing again without a reason,
//! unless the filter sets `include_redundant_members`.

use myelin_tests::{Backend, TestServer, backend_tests};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::{
    rooms_support::{create_room, join, put_state, send_text},
    sync_support::{bodies, next_batch, state, sync_ok, timeline},
};

backend_tests!(
    lazy_members_are_sent_once_per_device_and_filter,
    lazy_members_are_sent_again_when_they_change_or_a_token_is_retried,
    include_redundant_members_sends_them_every_time,
    gappy_lazy_syncs_send_the_senders_members_at_the_timeline_start,
);

/// A lazy-loading filter with a timeline limit.
fn lazy_filter(limit: u32, include_redundant_members: bool) -> String {
    json!({ "room": {
        "timeline": { "limit": limit },
        "state": {
            "lazy_load_members": true,
            "include_redundant_members": include_redundant_members,
        },
    } })
    .to_string()
}

/// The user ids whose `m.room.member` the room's `state` carries, sorted.
fn members_in_state(answer: &Value, room_id: &str) -> Vec<String> {
    let mut members: Vec<String> = state(answer, "join", room_id)
        .iter()
        .filter(|e| e["type"] == "m.room.member")
        .map(|e| e["state_key"].as_str().expect("state_key").to_owned())
        .collect();
    members.sort();
    members
}

/// The event id of a user's `m.room.member` in the room's `state`.
fn member_event_in_state(answer: &Value, room_id: &str, user_id: &str) -> Option<String> {
    state(answer, "join", room_id)
        .iter()
        .find(|e| e["type"] == "m.room.member" && e["state_key"] == user_id)
        .map(|e| e["event_id"].as_str().expect("event_id").to_owned())
}

async fn incremental(server: &TestServer, token: &str, since: &str, filter: &str) -> Value {
    sync_ok(
        server,
        token,
        &[("since", since), ("timeout", "0"), ("filter", filter)],
    )
    .await
}

fn sorted(mut users: Vec<&str>) -> Vec<String> {
    users.sort_unstable();
    users.into_iter().map(str::to_owned).collect()
}

async fn lazy_members_are_sent_once_per_device_and_filter(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let dave = server.register("dave").await;
    let room = create_room(&server, &alice.token, json!({ "preset": "public_chat" })).await;
    join(&server, &bob.token, &room).await;
    join(&server, &dave.token, &room).await;
    send_text(&server, &bob.token, &room, "b0").await;
    let filter = lazy_filter(1, false);
    let first = sync_ok(&server, &dave.token, &[("filter", &filter)]).await;
    assert_eq!(bodies(timeline(&first, "join", &room)), ["b0"]);
    // The sender's, and the syncing user's own, though dave sent nothing.
    assert_eq!(
        members_in_state(&first, &room),
        sorted(vec![&bob.user_id, &dave.user_id]),
        "{first}"
    );

    send_text(&server, &bob.token, &room, "b1").await;
    let second = incremental(&server, &dave.token, &next_batch(&first), &filter).await;
    assert_eq!(bodies(timeline(&second, "join", &room)), ["b1"]);
    assert_eq!(
        members_in_state(&second, &room),
        Vec::<String>::new(),
        "bob's and dave's memberships were sent already: {second}"
    );
    // A gappy sync of an unchanged sender repeats nothing either.
    for index in 0..4 {
        send_text(&server, &bob.token, &room, &format!("gap {index}")).await;
    }
    let third = incremental(&server, &dave.token, &next_batch(&second), &filter).await;
    assert_eq!(third["rooms"]["join"][&room]["timeline"]["limited"], true);
    assert_eq!(
        members_in_state(&third, &room),
        Vec::<String>::new(),
        "{third}"
    );

    // Another filter is another stream: it was never sent bob.
    send_text(&server, &bob.token, &room, "b2").await;
    let other_filter = lazy_filter(2, false);
    let other = incremental(&server, &dave.token, &next_batch(&third), &other_filter).await;
    assert_eq!(
        members_in_state(&other, &room),
        sorted(vec![&bob.user_id, &dave.user_id]),
        "{other}"
    );
    // So is another device.
    let dave_again = server.login("dave", None).await;
    let fresh = incremental(&server, &dave_again.token, &next_batch(&third), &filter).await;
    assert_eq!(
        members_in_state(&fresh, &room),
        sorted(vec![&bob.user_id, &dave.user_id]),
        "{fresh}"
    );
    // An initial sync starts the stream afresh.
    let restart = sync_ok(&server, &dave.token, &[("filter", &filter)]).await;
    assert_eq!(
        members_in_state(&restart, &room),
        sorted(vec![&bob.user_id, &dave.user_id]),
        "{restart}"
    );
}

async fn lazy_members_are_sent_again_when_they_change_or_a_token_is_retried(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = create_room(&server, &alice.token, json!({ "preset": "public_chat" })).await;
    join(&server, &bob.token, &room).await;
    send_text(&server, &bob.token, &room, "hello").await;
    let filter = lazy_filter(1, false);
    let since = next_batch(&sync_ok(&server, &alice.token, &[("filter", &filter)]).await);
    let (status, rename) = put_state(
        &server,
        &bob.token,
        &room,
        "m.room.member",
        &bob.user_id,
        json!({ "membership": "join", "displayname": "Bobby" }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{rename}");
    let renamed = rename["event_id"].as_str().expect("event_id").to_owned();
    send_text(&server, &bob.token, &room, "as Bobby").await;
    let answer = incremental(&server, &alice.token, &since, &filter).await;
    assert_eq!(bodies(timeline(&answer, "join", &room)), ["as Bobby"]);
    assert_eq!(
        member_event_in_state(&answer, &room, &bob.user_id).as_deref(),
        Some(renamed.as_str()),
        "bob's new membership: {answer}"
    );
    // The answer got lost and the client retries its token: it still
    // lacks the new membership.
    let retried = incremental(&server, &alice.token, &since, &filter).await;
    assert_eq!(
        member_event_in_state(&retried, &room, &bob.user_id).as_deref(),
        Some(renamed.as_str()),
        "{retried}"
    );
    send_text(&server, &bob.token, &room, "again").await;
    let next = incremental(&server, &alice.token, &next_batch(&retried), &filter).await;
    assert_eq!(bodies(timeline(&next, "join", &room)), ["again"]);
    assert_eq!(
        members_in_state(&next, &room),
        Vec::<String>::new(),
        "{next}"
    );
}

async fn include_redundant_members_sends_them_every_time(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = create_room(&server, &alice.token, json!({ "preset": "public_chat" })).await;
    join(&server, &bob.token, &room).await;
    send_text(&server, &bob.token, &room, "one").await;
    let filter = lazy_filter(1, true);
    let mut since = next_batch(&sync_ok(&server, &alice.token, &[("filter", &filter)]).await);
    for body in ["two", "three"] {
        send_text(&server, &bob.token, &room, body).await;
        let answer = incremental(&server, &alice.token, &since, &filter).await;
        assert_eq!(bodies(timeline(&answer, "join", &room)), [body]);
        assert_eq!(
            members_in_state(&answer, &room),
            sorted(vec![&alice.user_id, &bob.user_id]),
            "{answer}"
        );
        since = next_batch(&answer);
    }
}

/// In a limited sync the members are those at the timeline's start, for
/// the timeline's senders only: a member who changed in the gap but sent
/// nothing in the timeline stays out.
async fn gappy_lazy_syncs_send_the_senders_members_at_the_timeline_start(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let dave = server.register("dave").await;
    let room = create_room(&server, &alice.token, json!({ "preset": "public_chat" })).await;
    join(&server, &bob.token, &room).await;
    join(&server, &dave.token, &room).await;
    let filter = lazy_filter(3, false);
    let since = next_batch(&sync_ok(&server, &dave.token, &[("filter", &filter)]).await);
    let (status, rename) = put_state(
        &server,
        &bob.token,
        &room,
        "m.room.member",
        &bob.user_id,
        json!({ "membership": "join", "displayname": "Bobby" }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{rename}");
    join(&server, &carol.token, &room).await;
    send_text(&server, &carol.token, &room, "carol was here").await;
    for index in 0..5 {
        send_text(&server, &bob.token, &room, &format!("b{index}")).await;
    }
    let answer = incremental(&server, &dave.token, &since, &filter).await;
    assert_eq!(bodies(timeline(&answer, "join", &room)), ["b2", "b3", "b4"]);
    assert_eq!(answer["rooms"]["join"][&room]["timeline"]["limited"], true);
    assert_eq!(
        members_in_state(&answer, &room),
        vec![bob.user_id.clone()],
        "{answer}"
    );
    assert_eq!(
        member_event_in_state(&answer, &room, &bob.user_id).as_deref(),
        rename["event_id"].as_str()
    );
}
