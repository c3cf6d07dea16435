//! More rooms than the server keeps in memory: a user in many rooms (or a
//! client naming many room ids) cannot grow the room-state cache past its
//! bound, and rooms dropped from it come back from storage unchanged.

use myelin_tests::{Backend, TestServer, backend_tests};
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::{
    rooms_support::{create_room, invite, join, room_url, send},
    sync_support::{bodies, chunk},
};

backend_tests!(rooms_beyond_the_cache_reload_from_storage);

const CACHED: usize = 2;

async fn rooms_beyond_the_cache_reload_from_storage(backend: Backend) {
    let server = TestServer::start_with(backend, |config| config.max_cached_rooms = CACHED).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let mut rooms = Vec::new();
    for _ in 0..3 * CACHED {
        rooms.push(create_room(&server, &alice.token, json!({ "preset": "private_chat" })).await);
    }
    // Every room at once, several sends each: more rooms in use than the
    // cache holds, so slots are dropped and reloaded while others write.
    let sends = rooms.iter().enumerate().flat_map(|(r, room)| {
        let server = &server;
        let token = alice.token.clone();
        (0..3).map(move |n| {
            let room = room.clone();
            let token = token.clone();
            async move {
                send(
                    server,
                    &token,
                    &room,
                    "m.room.message",
                    &format!("t{r}-{n}"),
                    json!({ "msgtype": "m.text", "body": format!("{r}-{n}") }),
                )
                .await
            }
        })
    });
    for (status, answer) in myelin_tests::join_all(sends).await {
        assert_eq!(status, StatusCode::OK, "{answer}");
    }
    // The first room, long dropped from the cache, still knows its members
    // and power levels: an invite and a join pass the rules.
    invite(&server, &alice.token, &rooms[0], &bob.user_id).await;
    join(&server, &bob.token, &rooms[0]).await;
    for (r, room) in rooms.iter().enumerate() {
        let (status, page) = server
            .request(
                Method::GET,
                room_url(&server, room, "/messages?dir=f&limit=50"),
                Some(&alice.token),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let mut sent = bodies(chunk(&page));
        sent.sort();
        let expected: Vec<String> = (0..3).map(|n| format!("{r}-{n}")).collect();
        assert_eq!(sent, expected, "room {r}");
    }
}
