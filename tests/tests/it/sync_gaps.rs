//! Gaps in `/sync` timelines: what `limited` and `prev_batch` say, and that
//! state which changed where the client saw no events (cut by the limit,
//! hidden while the user was away, filtered out) reaches it in `state`.

use myelin_tests::{Backend, TestServer, backend_tests};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::{
    rooms_support::{create_room, join, membership, put_state, send_text},
    sync_support::{
        bodies, chunk, initial_sync, messages_ok, next_batch, set_history_visibility, state,
        state_keys, sync_ok, sync_since, sync_since_limit, timeline,
    },
};

backend_tests!(
    state_changed_while_away_arrives_after_a_rejoin,
    state_filtered_out_of_the_timeline_arrives_in_state,
    a_limited_sync_sends_the_state_changed_in_the_gap_only,
    a_newly_joined_room_is_limited_when_earlier_events_exist,
    every_timeline_has_a_prev_batch,
    timeline_limit_zero_returns_no_events,
    a_filtered_timeline_is_limited_only_when_something_was_cut,
    events_hidden_from_the_user_do_not_make_a_timeline_limited,
);

fn room_timeline<'a>(answer: &'a Value, room_id: &str) -> &'a Value {
    &answer["rooms"]["join"][room_id]["timeline"]
}

/// The content of the room's `type` state event in `state` or the
/// timeline, the later one winning, as a client applies them.
fn latest_state_content(answer: &Value, room_id: &str, kind: &str) -> Option<Value> {
    state(answer, "join", room_id)
        .iter()
        .chain(timeline(answer, "join", room_id))
        .rfind(|e| e["type"] == kind && e["state_key"] == "")
        .map(|e| e["content"].clone())
}

async fn set_name(server: &TestServer, token: &str, room_id: &str, name: &str) {
    let (status, answer) = put_state(
        server,
        token,
        room_id,
        "m.room.name",
        "",
        json!({ "name": name }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
}

/// The user leaves and comes back between two syncs; with `joined`
/// history what happened meanwhile is hidden from the timeline, and the
/// room's new name must still arrive, however much of the timeline fits.
async fn state_changed_while_away_arrives_after_a_rejoin(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = create_room(
        &server,
        &alice.token,
        json!({ "preset": "public_chat", "name": "before" }),
    )
    .await;
    set_history_visibility(&server, &alice.token, &room, "joined").await;
    join(&server, &bob.token, &room).await;
    let since = next_batch(&sync_ok(&server, &bob.token, &[]).await);
    let (status, answer) = membership(&server, &bob.token, &room, "leave", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    set_name(&server, &alice.token, &room, "while away").await;
    send_text(&server, &alice.token, &room, "unseen").await;
    join(&server, &bob.token, &room).await;
    send_text(&server, &alice.token, &room, "welcome back").await;
    for limit in [10, 2] {
        let answer = sync_since_limit(&server, &bob.token, &since, limit).await;
        let events = timeline(&answer, "join", &room);
        assert_eq!(bodies(events), ["welcome back"], "limit {limit}: {answer}");
        assert_eq!(
            latest_state_content(&answer, &room, "m.room.name"),
            Some(json!({ "name": "while away" })),
            "limit {limit}: {answer}"
        );
        // Bob's own membership ends as a join.
        let own = state(&answer, "join", &room)
            .iter()
            .chain(events)
            .rfind(|e| e["type"] == "m.room.member" && e["state_key"] == bob.user_id.as_str())
            .map(|e| e["content"]["membership"].clone());
        assert_eq!(own, Some(json!("join")), "limit {limit}: {answer}");
        // Hidden events cut nothing; bob's leave, which he may see, is
        // cut by the smaller limit.
        assert_eq!(
            room_timeline(&answer, &room)["limited"],
            limit == 2,
            "limit {limit}: {answer}"
        );
    }
}

/// A timeline filtered to messages leaves state changes between them out;
/// they come in `state` instead.
async fn state_filtered_out_of_the_timeline_arrives_in_state(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let room = create_room(&server, &alice.token, json!({ "name": "first" })).await;
    let filter =
        json!({ "room": { "timeline": { "types": ["m.room.message"], "limit": 10 } } }).to_string();
    let since = next_batch(&sync_ok(&server, &alice.token, &[("filter", &filter)]).await);
    send_text(&server, &alice.token, &room, "one").await;
    set_name(&server, &alice.token, &room, "second").await;
    send_text(&server, &alice.token, &room, "two").await;
    let answer = sync_ok(
        &server,
        &alice.token,
        &[("since", &since), ("timeout", "0"), ("filter", &filter)],
    )
    .await;
    assert_eq!(bodies(timeline(&answer, "join", &room)), ["one", "two"]);
    assert_eq!(room_timeline(&answer, &room)["limited"], false, "{answer}");
    assert_eq!(
        latest_state_content(&answer, &room, "m.room.name"),
        Some(json!({ "name": "second" })),
        "{answer}"
    );
}

/// "Updates to the state, between the time indicated by the since
/// parameter, and the start of the timeline": what changed, not what the
/// client had.
async fn a_limited_sync_sends_the_state_changed_in_the_gap_only(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = create_room(&server, &alice.token, json!({ "preset": "public_chat" })).await;
    join(&server, &bob.token, &room).await;
    let since = next_batch(&sync_ok(&server, &bob.token, &[]).await);
    let (status, answer) = put_state(
        &server,
        &alice.token,
        &room,
        "m.room.topic",
        "",
        json!({ "topic": "new" }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    for index in 0..6 {
        send_text(&server, &alice.token, &room, &format!("m{index}")).await;
    }
    let answer = sync_since_limit(&server, &bob.token, &since, 3).await;
    assert_eq!(bodies(timeline(&answer, "join", &room)), ["m3", "m4", "m5"]);
    assert_eq!(room_timeline(&answer, &room)["limited"], true);
    assert_eq!(
        state_keys(state(&answer, "join", &room)),
        ["m.room.topic|"],
        "{answer}"
    );
    // Paginating back from prev_batch continues right before the timeline.
    let prev_batch = room_timeline(&answer, &room)["prev_batch"]
        .as_str()
        .expect("prev_batch")
        .to_owned();
    let page = messages_ok(
        &server,
        &bob.token,
        &room,
        &[("from", &prev_batch), ("dir", "b"), ("limit", "1")],
    )
    .await;
    assert_eq!(bodies(chunk(&page)), ["m2"]);
}

/// A room joined since the last sync is limited when it has events from
/// before the timeline; a room whose whole history fits is not, even when
/// part of it is hidden from the newcomer.
async fn a_newly_joined_room_is_limited_when_earlier_events_exist(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = create_room(&server, &alice.token, json!({ "preset": "public_chat" })).await;
    for index in 0..3 {
        send_text(&server, &alice.token, &room, &format!("m{index}")).await;
    }
    let since = next_batch(&sync_ok(&server, &bob.token, &[]).await);
    join(&server, &bob.token, &room).await;
    let answer = sync_since_limit(&server, &bob.token, &since, 2).await;
    let events = timeline(&answer, "join", &room);
    assert_eq!(bodies(events), ["m2"], "{answer}");
    assert_eq!(events[1]["state_key"], bob.user_id.as_str(), "{answer}");
    assert_eq!(room_timeline(&answer, &room)["limited"], true, "{answer}");

    let whole = sync_since_limit(&server, &bob.token, &since, 50).await;
    let first = timeline(&whole, "join", &room);
    assert_eq!(first[0]["type"], "m.room.create", "{whole}");
    assert_eq!(room_timeline(&whole, &room)["limited"], false, "{whole}");
    // History hidden from the newcomer is no cut.
    set_history_visibility(&server, &alice.token, &room, "joined").await;
    send_text(&server, &alice.token, &room, "hidden from carol").await;
    let carol = server.register("carol").await;
    let since = next_batch(&sync_ok(&server, &carol.token, &[]).await);
    join(&server, &carol.token, &room).await;
    let answer = sync_since_limit(&server, &carol.token, &since, 50).await;
    let events = timeline(&answer, "join", &room);
    assert_eq!(events[0]["type"], "m.room.create", "{answer}");
    assert!(
        !bodies(events).contains(&"hidden from carol".to_owned()),
        "{answer}"
    );
    assert_eq!(room_timeline(&answer, &room)["limited"], false, "{answer}");
}

/// `prev_batch` on every timeline: incremental with no events, full state.
async fn every_timeline_has_a_prev_batch(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let room = create_room(&server, &alice.token, json!({})).await;
    let newest = send_text(&server, &alice.token, &room, "newest").await;
    let since = next_batch(&sync_ok(&server, &alice.token, &[]).await);
    let full = sync_ok(
        &server,
        &alice.token,
        &[("since", &since), ("timeout", "0"), ("full_state", "true")],
    )
    .await;
    assert!(timeline(&full, "join", &room).is_empty(), "{full}");
    let prev_batch = room_timeline(&full, &room)["prev_batch"]
        .as_str()
        .unwrap_or_else(|| panic!("prev_batch in {full}"))
        .to_owned();
    let page = messages_ok(
        &server,
        &alice.token,
        &room,
        &[("from", &prev_batch), ("dir", "b"), ("limit", "1")],
    )
    .await;
    assert_eq!(page["chunk"][0]["event_id"], newest.as_str());
    // A room in an incremental sync for its receipt alone.
    let (status, answer) = server
        .request(
            reqwest::Method::POST,
            crate::rooms_support::room_url(
                &server,
                &room,
                &format!("/receipt/m.read/{}", crate::rooms_support::enc(&newest)),
            ),
            Some(&alice.token),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let answer = sync_since(&server, &alice.token, &since).await;
    assert!(timeline(&answer, "join", &room).is_empty(), "{answer}");
    assert!(
        room_timeline(&answer, &room)["prev_batch"].is_string(),
        "{answer}"
    );
}

/// `limit: 0` asks for no events: the timeline is empty and limited, and
/// `state` holds the whole state.
async fn timeline_limit_zero_returns_no_events(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let room = create_room(&server, &alice.token, json!({ "name": "zero" })).await;
    let newest = send_text(&server, &alice.token, &room, "hello").await;
    let answer = initial_sync(&server, &alice.token, 0).await;
    assert!(timeline(&answer, "join", &room).is_empty(), "{answer}");
    assert_eq!(room_timeline(&answer, &room)["limited"], true, "{answer}");
    let keys = state_keys(state(&answer, "join", &room));
    for key in ["m.room.create|", "m.room.name|", "m.room.power_levels|"] {
        assert!(keys.contains(&key.to_owned()), "{key} in {keys:?}");
    }
    let prev_batch = room_timeline(&answer, &room)["prev_batch"]
        .as_str()
        .expect("prev_batch")
        .to_owned();
    let page = messages_ok(
        &server,
        &alice.token,
        &room,
        &[("from", &prev_batch), ("dir", "b"), ("limit", "1")],
    )
    .await;
    assert_eq!(page["chunk"][0]["event_id"], newest.as_str());
    // Incremental too.
    send_text(&server, &alice.token, &room, "later").await;
    let later = sync_since_limit(&server, &alice.token, &next_batch(&answer), 0).await;
    assert!(timeline(&later, "join", &room).is_empty(), "{later}");
    assert_eq!(room_timeline(&later, &room)["limited"], true, "{later}");
}

/// `limited` means events the filter wants were cut: events the filter
/// leaves out anyway do not make a timeline limited.
async fn a_filtered_timeline_is_limited_only_when_something_was_cut(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let room = create_room(&server, &alice.token, json!({})).await;
    let filter =
        json!({ "room": { "timeline": { "types": ["m.room.message"], "limit": 3 } } }).to_string();
    for body in ["one", "two", "three"] {
        send_text(&server, &alice.token, &room, body).await;
    }
    let answer = sync_ok(&server, &alice.token, &[("filter", &filter)]).await;
    assert_eq!(
        bodies(timeline(&answer, "join", &room)),
        ["one", "two", "three"]
    );
    assert_eq!(room_timeline(&answer, &room)["limited"], false, "{answer}");
    send_text(&server, &alice.token, &room, "four").await;
    let answer = sync_ok(&server, &alice.token, &[("filter", &filter)]).await;
    assert_eq!(
        bodies(timeline(&answer, "join", &room)),
        ["two", "three", "four"]
    );
    assert_eq!(room_timeline(&answer, &room)["limited"], true, "{answer}");
}

/// An ignored user's messages are left out of the timeline, and are no gap
/// in it: a limited timeline makes clients drop what they hold and
/// paginate, and paginating would not find them either.
async fn events_hidden_from_the_user_do_not_make_a_timeline_limited(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = create_room(&server, &alice.token, json!({ "preset": "public_chat" })).await;
    join(&server, &bob.token, &room).await;
    let (status, answer) = server
        .request(
            reqwest::Method::PUT,
            server.v3(&format!(
                "/user/{}/account_data/m.ignored_user_list",
                alice.user_id
            )),
            Some(&alice.token),
            Some(json!({ "ignored_users": { bob.user_id.clone(): {} } })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let since = next_batch(&sync_ok(&server, &alice.token, &[]).await);
    for index in 0..3 {
        send_text(&server, &bob.token, &room, &format!("ignored {index}")).await;
    }
    send_text(&server, &alice.token, &room, "mine").await;
    let answer = sync_since_limit(&server, &alice.token, &since, 2).await;
    assert_eq!(bodies(timeline(&answer, "join", &room)), ["mine"]);
    assert_eq!(room_timeline(&answer, &room)["limited"], false, "{answer}");
}
