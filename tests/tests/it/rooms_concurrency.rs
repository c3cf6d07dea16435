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
    let answers = futures_join_all(creations).await;
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

/// Runs the futures concurrently on this task and collects their outputs in order.
async fn futures_join_all<F: std::future::Future>(
    futures: impl IntoIterator<Item = F>,
) -> Vec<F::Output> {
    let mut set = Vec::new();
    for future in futures {
        set.push(Box::pin(future));
    }
    let mut outputs: Vec<Option<F::Output>> = set.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, output) in set.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    std::task::Poll::Ready(value) => *output = Some(value),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}
