//! Rooms created and written concurrently.

use std::collections::{HashMap, HashSet};

use myelin_tests::{Backend, TestServer, backend_tests};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::{
    rooms_support::{create_room, join, send},
    stored_events::stored_rows,
};

backend_tests!(
    concurrent_room_creation_gets_distinct_rooms,
    concurrent_sends_form_one_chain_per_room
);

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

/// Sends from several members into two rooms at once (group commit writes
/// them in batches, several events of one room per commit), with retried
/// transactions and a non-member's refused sends mixed in: every member's
/// send is acknowledged once, retries get the first event, and each room's
/// stored events form one line in stream order (each cites the one before).
async fn concurrent_sends_form_one_chain_per_room(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut members = Vec::new();
    for name in ["alice", "bob", "carol", "dan"] {
        members.push(server.register(name).await);
    }
    let outsider = server.register("eve").await;
    let public = json!({ "preset": "public_chat" });
    let rooms = [
        create_room(&server, &members[0].token, public.clone()).await,
        create_room(&server, &members[0].token, public).await,
    ];
    for member in &members[1..] {
        for room in &rooms {
            join(&server, &member.token, room).await;
        }
    }
    const PER_MEMBER: usize = 12;
    let (server, rooms, outsider) = (&server, &rooms, &outsider);
    let sends = members.iter().flat_map(|member| {
        (0..PER_MEMBER).flat_map(move |i| {
            let room = &rooms[i % 2];
            let content = json!({ "msgtype": "m.text", "body": format!("{} {i}", member.user_id) });
            // Every third transaction is sent twice at once, as a retrying client would.
            let copies = if i % 3 == 0 { 2 } else { 1 };
            (0..copies).map(move |_| {
                let content = content.clone();
                async move {
                    let txn = format!("txn{i}");
                    let answer =
                        send(server, &member.token, room, "m.room.message", &txn, content).await;
                    (member.user_id.clone(), i, answer)
                }
            })
        })
    });
    let refused = rooms.iter().map(|room| async move {
        let content = json!({ "msgtype": "m.text", "body": "not a member" });
        send(
            server,
            &outsider.token,
            room,
            "m.room.message",
            "x",
            content,
        )
        .await
    });
    let (answers, refusals) = tokio::join!(
        myelin_tests::join_all(sends),
        myelin_tests::join_all(refused)
    );
    for (status, answer) in refusals {
        assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
    }
    let mut by_transaction: HashMap<(String, usize), String> = HashMap::new();
    for (sender, i, (status, answer)) in answers {
        assert_eq!(status, StatusCode::OK, "{answer}");
        let event_id = answer["event_id"].as_str().unwrap().to_owned();
        let first = by_transaction
            .entry((sender, i))
            .or_insert_with(|| event_id.clone());
        assert_eq!(
            *first, event_id,
            "a retried transaction gets the first event"
        );
    }
    assert_eq!(by_transaction.len(), members.len() * PER_MEMBER);

    let (rows, _) = stored_rows(&server.database_url()).await;
    let acknowledged: HashSet<&String> = by_transaction.values().collect();
    let mut messages = 0;
    for room in rooms {
        let mut previous: Option<(String, i64)> = None;
        for (event_id, _, json, _) in rows.iter().filter(|row| row.1 == *room) {
            let event: Value = serde_json::from_str(json).unwrap();
            let depth = event["depth"].as_i64().unwrap();
            if let Some((previous_id, previous_depth)) = &previous {
                assert_eq!(event["prev_events"], json!([previous_id]), "{event_id}");
                assert_eq!(depth, previous_depth + 1, "{event_id}");
            }
            if event["type"] == "m.room.message" {
                assert!(
                    acknowledged.contains(&event_id),
                    "stored but never acknowledged: {event_id}"
                );
                messages += 1;
            }
            previous = Some((event_id.clone(), depth));
        }
    }
    assert_eq!(
        messages,
        acknowledged.len(),
        "every acknowledged send is stored once"
    );
}
