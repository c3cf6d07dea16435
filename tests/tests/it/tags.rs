//! Room tagging (client-server-api, "Room Tagging"): tags added, changed
//! and removed one at a time, kept as the room's `m.tag` account data that
//! sync delivers, and refused for other users or with a bad body.

use myelin_tests::{Backend, TestServer, assert_error, backend_tests, join_all};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::{
    rooms_support::{create_room, enc},
    sync_support::{initial_sync, next_batch, sync_since},
};

backend_tests!(
    tags_are_added_changed_listed_and_removed,
    tag_changes_reach_sync_as_room_account_data,
    concurrent_tag_edits_are_all_kept,
    tags_of_other_users_and_bad_tags_are_refused,
);

fn tags_url(server: &TestServer, user_id: &str, room_id: &str) -> String {
    server.v3(&format!(
        "/user/{}/rooms/{}/tags",
        enc(user_id),
        enc(room_id)
    ))
}

fn tag_url(server: &TestServer, user_id: &str, room_id: &str, tag: &str) -> String {
    format!("{}/{}", tags_url(server, user_id, room_id), enc(tag))
}

async fn tags(server: &TestServer, token: &str, user_id: &str, room_id: &str) -> Value {
    let (status, answer) = server
        .request(
            Method::GET,
            tags_url(server, user_id, room_id),
            Some(token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "GET tags: {answer}");
    answer["tags"].clone()
}

async fn put_tag(
    server: &TestServer,
    token: &str,
    user_id: &str,
    room_id: &str,
    tag: &str,
    body: Value,
) -> (StatusCode, Value) {
    let url = tag_url(server, user_id, room_id, tag);
    server
        .request(Method::PUT, url, Some(token), Some(body))
        .await
}

async fn delete_tag(server: &TestServer, token: &str, user_id: &str, room_id: &str, tag: &str) {
    let url = tag_url(server, user_id, room_id, tag);
    let (status, answer) = server.request(Method::DELETE, url, Some(token), None).await;
    assert_eq!(status, StatusCode::OK, "DELETE tag {tag}: {answer}");
}

async fn tags_are_added_changed_listed_and_removed(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let room = create_room(&server, &alice.token, json!({})).await;
    let (token, user) = (alice.token.as_str(), alice.user_id.as_str());
    assert_eq!(tags(&server, token, user, &room).await, json!({}));

    for (tag, body) in [
        ("m.favourite", json!({ "order": 0.25 })),
        ("u.work", json!({})),
    ] {
        let answer = put_tag(&server, token, user, &room, tag, body).await;
        assert_eq!(answer, (StatusCode::OK, json!({})));
    }
    assert_eq!(
        tags(&server, token, user, &room).await,
        json!({ "m.favourite": { "order": 0.25 }, "u.work": {} })
    );

    // Putting a tag again replaces its content.
    let answer = put_tag(
        &server,
        token,
        user,
        &room,
        "u.work",
        json!({ "order": 0.5 }),
    )
    .await;
    assert_eq!(answer.0, StatusCode::OK);
    delete_tag(&server, token, user, &room, "m.favourite").await;
    // Removing a tag the room does not have is not an error.
    delete_tag(&server, token, user, &room, "m.lowpriority").await;
    assert_eq!(
        tags(&server, token, user, &room).await,
        json!({ "u.work": { "order": 0.5 } })
    );
}

async fn tag_changes_reach_sync_as_room_account_data(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let room = create_room(&server, &alice.token, json!({})).await;
    let since = next_batch(&initial_sync(&server, &alice.token, 10).await);

    let body = json!({ "order": 0.1 });
    let answer = put_tag(
        &server,
        &alice.token,
        &alice.user_id,
        &room,
        "m.favourite",
        body,
    )
    .await;
    assert_eq!(answer.0, StatusCode::OK);
    let answer = sync_since(&server, &alice.token, &since).await;
    let events = &answer["rooms"]["join"][&room]["account_data"]["events"];
    let tag_event = events
        .as_array()
        .and_then(|events| events.iter().find(|event| event["type"] == "m.tag"))
        .unwrap_or_else(|| panic!("no m.tag in the room's account data: {answer}"));
    assert_eq!(
        tag_event["content"],
        json!({ "tags": { "m.favourite": { "order": 0.1 } } })
    );
}

async fn concurrent_tag_edits_are_all_kept(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let room = create_room(&server, &alice.token, json!({})).await;
    let names: Vec<String> = (0..12).map(|i| format!("u.tag{i}")).collect();
    let answers = join_all(
        names
            .iter()
            .map(|tag| put_tag(&server, &alice.token, &alice.user_id, &room, tag, json!({}))),
    )
    .await;
    assert!(
        answers.iter().all(|(status, _)| *status == StatusCode::OK),
        "{answers:?}"
    );
    let tags = tags(&server, &alice.token, &alice.user_id, &room).await;
    let mut kept: Vec<&String> = tags.as_object().expect("tags object").keys().collect();
    kept.sort();
    let mut expected: Vec<&String> = names.iter().collect();
    expected.sort();
    assert_eq!(kept, expected);
}

async fn tags_of_other_users_and_bad_tags_are_refused(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = create_room(&server, &alice.token, json!({})).await;
    let (token, user) = (alice.token.as_str(), alice.user_id.as_str());

    let url = tags_url(&server, user, &room);
    let read = server
        .request(Method::GET, url, Some(&bob.token), None)
        .await;
    assert_error(&read, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let write = put_tag(&server, &bob.token, user, &room, "u.mine", json!({})).await;
    assert_error(&write, StatusCode::FORBIDDEN, "M_FORBIDDEN");

    let bad_order = put_tag(
        &server,
        token,
        user,
        &room,
        "u.x",
        json!({ "order": "first" }),
    )
    .await;
    assert_error(&bad_order, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    let not_object = put_tag(&server, token, user, &room, "u.x", json!([1])).await;
    assert_error(&not_object, StatusCode::BAD_REQUEST, "M_BAD_JSON");
    let overlong = "u.".to_owned() + &"x".repeat(300);
    let answer = put_tag(&server, token, user, &room, &overlong, json!({})).await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    // Nothing refused was stored.
    assert_eq!(tags(&server, token, user, &room).await, json!({}));
}
