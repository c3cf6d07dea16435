//! Rooms created and written concurrently.

use myelin_tests::{Backend, TestServer, backend_tests};
use reqwest::{Method, StatusCode};
use serde_json::json;

backend_tests!(concurrent_room_creation_gets_distinct_rooms);

/// In room version 12 the room id is the create event's hash, so two rooms
/// created by one user in one millisecond must still differ.
async fn concurrent_room_creation_gets_distinct_rooms(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let creations = (0..20).map(|_| {
        server.request(
            Method::POST,
            server.v3("/createRoom"),
            Some(&alice.token),
            Some(json!({ "preset": "public_chat" })),
        )
    });
    let answers = myelin_tests::join_all(creations).await;
    let mut ids: Vec<String> = answers
        .into_iter()
        .map(|(status, answer)| {
            assert_eq!(status, StatusCode::OK, "{answer}");
            answer["room_id"].as_str().unwrap().to_owned()
        })
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 20, "every creation made its own room");
    let (_, joined) = server
        .request(
            Method::GET,
            server.v3("/joined_rooms"),
            Some(&alice.token),
            None,
        )
        .await;
    assert_eq!(joined["joined_rooms"].as_array().map(Vec::len), Some(20));
}
