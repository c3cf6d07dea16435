//! `GET`/`PUT /presence/{userId}/status` (client-server-api, "Presence"):
//! set by the user, shown to those who share a room with them and to
//! nobody else, and turned off entirely by `[presence] enabled = false`.

use myelin_tests::{Backend, TestServer, assert_error, backend_tests};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::{
    rooms_support::{create_room, invite, join},
    sync_support::{initial_sync, next_batch, sync_ok, sync_since},
};

backend_tests!(
    presence_is_shown_to_room_mates_only,
    presence_changes_are_checked,
    presence_can_be_turned_off,
    presence_changes_reach_room_mates_in_sync,
    sync_sets_presence_as_set_presence_says,
    sync_sets_no_presence_when_presence_is_off,
);

fn status_url(server: &TestServer, user_id: &str) -> String {
    server.v3(&format!("/presence/{user_id}/status"))
}

async fn put(server: &TestServer, token: &str, user_id: &str, body: Value) -> (StatusCode, Value) {
    let url = status_url(server, user_id);
    server
        .request(Method::PUT, url, Some(token), Some(body))
        .await
}

async fn get(server: &TestServer, token: &str, user_id: &str) -> (StatusCode, Value) {
    server
        .request(Method::GET, status_url(server, user_id), Some(token), None)
        .await
}

async fn presence_is_shown_to_room_mates_only(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let room = create_room(&server, &alice.token, json!({})).await;
    invite(&server, &alice.token, &room, &bob.user_id).await;
    join(&server, &bob.token, &room).await;

    // Never set: offline.
    let (status, answer) = get(&server, &bob.token, &alice.user_id).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer["presence"], "offline", "{answer}");

    let body = json!({ "presence": "online", "status_msg": "making tea" });
    assert_eq!(
        put(&server, &alice.token, &alice.user_id, body).await.0,
        StatusCode::OK
    );
    for viewer in [&alice, &bob] {
        let (status, answer) = get(&server, &viewer.token, &alice.user_id).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        assert_eq!(answer["presence"], "online");
        assert_eq!(answer["status_msg"], "making tea");
        assert_eq!(answer["currently_active"], true);
        let ago = answer["last_active_ago"].as_u64().expect("last_active_ago");
        assert!(ago < 60_000, "{answer}");
    }

    let body = json!({ "presence": "unavailable" });
    assert_eq!(
        put(&server, &alice.token, &alice.user_id, body).await.0,
        StatusCode::OK
    );
    let (_, answer) = get(&server, &bob.token, &alice.user_id).await;
    assert_eq!(answer["presence"], "unavailable");
    assert_eq!(answer["currently_active"], false);
    assert_eq!(answer.get("status_msg"), None, "{answer}");

    // Carol shares no room with alice: she learns as much as about nobody.
    let hidden = get(&server, &carol.token, &alice.user_id).await;
    assert_error(&hidden, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    let nobody = get(&server, &carol.token, &server.user_id("nobody")).await;
    assert_eq!(nobody, hidden);
}

async fn presence_changes_are_checked(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let others = put(
        &server,
        &bob.token,
        &alice.user_id,
        json!({ "presence": "offline" }),
    )
    .await;
    assert_error(&others, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let unknown = put(
        &server,
        &alice.token,
        &alice.user_id,
        json!({ "presence": "busy" }),
    )
    .await;
    assert_error(&unknown, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    let body = json!({ "presence": "online", "status_msg": "x".repeat(1025) });
    let long = put(&server, &alice.token, &alice.user_id, body).await;
    assert_error(&long, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    let missing = put(&server, &alice.token, &alice.user_id, json!({})).await;
    assert_error(&missing, StatusCode::BAD_REQUEST, "M_BAD_JSON");
    let (_, answer) = get(&server, &alice.token, &alice.user_id).await;
    assert_eq!(
        answer["presence"], "offline",
        "nothing refused was kept: {answer}"
    );
}

async fn presence_can_be_turned_off(backend: Backend) {
    let server = TestServer::start_with(backend, |config| config.presence.enabled = false).await;
    let alice = server.register("alice").await;
    let body = json!({ "presence": "online", "status_msg": "here" });
    assert_eq!(
        put(&server, &alice.token, &alice.user_id, body).await.0,
        StatusCode::OK
    );
    let (status, answer) = get(&server, &alice.token, &alice.user_id).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        answer,
        json!({ "presence": "offline", "currently_active": false })
    );
    assert_eq!(server.count_rows("SELECT COUNT(*) FROM presence").await, 0);
}

/// The presence events of a sync answer, by sender.
fn presence_of(answer: &Value, user_id: &str) -> Vec<Value> {
    answer["presence"]["events"]
        .as_array()
        .unwrap_or_else(|| panic!("no presence events in {answer}"))
        .iter()
        .filter(|event| event["sender"] == user_id)
        .cloned()
        .collect()
}

async fn presence_changes_reach_room_mates_in_sync(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let room = create_room(&server, &alice.token, json!({})).await;
    invite(&server, &alice.token, &room, &bob.user_id).await;
    join(&server, &bob.token, &room).await;
    let bob_since = next_batch(&initial_sync(&server, &bob.token, 1).await);
    let carol_since = next_batch(&initial_sync(&server, &carol.token, 1).await);

    // Bob's long-poll wakes for alice's change.
    let body = json!({ "presence": "online", "status_msg": "here" });
    let started = std::time::Instant::now();
    let params = [("since", bob_since.as_str()), ("timeout", "30000")];
    let (answer, set) = tokio::join!(
        sync_ok(&server, &bob.token, &params),
        put(&server, &alice.token, &alice.user_id, body),
    );
    assert_eq!(set.0, StatusCode::OK);
    let mut answer = answer;
    if presence_of(&answer, &alice.user_id).is_empty() {
        // The long-poll returned for something else first; the change is next.
        answer = sync_since(&server, &bob.token, &next_batch(&answer)).await;
    }
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "the sync was not woken"
    );
    let events = presence_of(&answer, &alice.user_id);
    assert_eq!(events.len(), 1, "{answer}");
    assert_eq!(events[0]["type"], "m.presence");
    assert_eq!(events[0]["content"]["presence"], "online");
    assert_eq!(events[0]["content"]["status_msg"], "here");
    assert_eq!(events[0]["content"]["currently_active"], true);

    // The next sync does not repeat it; carol, who shares no room, never sees it.
    let again = sync_since(&server, &bob.token, &next_batch(&answer)).await;
    assert!(
        again["presence"]["events"]
            .as_array()
            .is_none_or(Vec::is_empty),
        "{again}"
    );
    let carol_answer = sync_since(&server, &carol.token, &carol_since).await;
    assert!(
        presence_of(&carol_answer, &alice.user_id).is_empty(),
        "{carol_answer}"
    );
    // An initial sync shows the room mates' current presence.
    let initial = initial_sync(&server, &bob.token, 1).await;
    assert_eq!(presence_of(&initial, &alice.user_id).len(), 1, "{initial}");
}

async fn sync_sets_presence_as_set_presence_says(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = create_room(&server, &alice.token, json!({})).await;
    invite(&server, &alice.token, &room, &bob.user_id).await;
    join(&server, &bob.token, &room).await;
    let status = |answer: (StatusCode, Value)| {
        assert_eq!(answer.0, StatusCode::OK, "{}", answer.1);
        answer.1["presence"].as_str().expect("presence").to_owned()
    };
    let body = json!({ "presence": "unavailable", "status_msg": "at lunch" });
    put(&server, &alice.token, &alice.user_id, body).await;

    // `offline` leaves presence alone.
    sync_ok(&server, &alice.token, &[("set_presence", "offline")]).await;
    assert_eq!(
        status(get(&server, &bob.token, &alice.user_id).await),
        "unavailable"
    );

    // A sync without the parameter marks the user online, status kept, and
    // room mates hear of it.
    let bob_since = next_batch(&initial_sync(&server, &bob.token, 1).await);
    sync_ok(&server, &alice.token, &[("timeout", "0")]).await;
    let (code, answer) = get(&server, &bob.token, &alice.user_id).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(answer["presence"], "online", "{answer}");
    assert_eq!(answer["status_msg"], "at lunch");
    assert_eq!(answer["currently_active"], true);
    let news = sync_since(&server, &bob.token, &bob_since).await;
    let events = presence_of(&news, &alice.user_id);
    assert_eq!(events.len(), 1, "{news}");
    assert_eq!(events[0]["content"]["presence"], "online");

    // `unavailable` marks the user idle; syncing again changes nothing more.
    sync_ok(&server, &alice.token, &[("set_presence", "unavailable")]).await;
    assert_eq!(
        status(get(&server, &bob.token, &alice.user_id).await),
        "unavailable"
    );
    let written = "SELECT MAX(stream_ordering) FROM presence";
    let before = server.count_rows(written).await;
    sync_ok(&server, &alice.token, &[("set_presence", "unavailable")]).await;
    assert_eq!(
        server.count_rows(written).await,
        before,
        "nothing new to write"
    );

    for wrong in ["busy", "ONLINE", "", "online\u{0}"] {
        let answer =
            crate::sync_support::sync(&server, &alice.token, &[("set_presence", wrong)]).await;
        assert_error(&answer, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    }
    assert_eq!(
        status(get(&server, &bob.token, &alice.user_id).await),
        "unavailable"
    );
}

async fn sync_sets_no_presence_when_presence_is_off(backend: Backend) {
    let server = TestServer::start_with(backend, |config| config.presence.enabled = false).await;
    let alice = server.register("alice").await;
    sync_ok(&server, &alice.token, &[("set_presence", "online")]).await;
    sync_ok(&server, &alice.token, &[("set_presence", "unavailable")]).await;
    let (_, answer) = get(&server, &alice.token, &alice.user_id).await;
    assert_eq!(answer["presence"], "offline", "{answer}");
    assert_eq!(server.count_rows("SELECT COUNT(*) FROM presence").await, 0);
}
