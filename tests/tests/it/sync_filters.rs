//! The sync filter's sections beyond the room timeline and state:
//! `presence`, `account_data`, `room.account_data`, `room.ephemeral`, and
//! `event_fields` (spec-notes/sync.md, "Filters").

use myelin_tests::{Account, Backend, TestServer, backend_tests};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::{
    rooms_support::{create_room, enc, invite, join, room_url, send, send_text},
    sync_support::{sync_ok, timeline},
};

backend_tests!(
    presence_filter_applies,
    account_data_filters_apply,
    ephemeral_filter_applies,
    event_fields_select_the_fields_of_room_events,
);

/// An initial sync with this inline filter.
async fn sync_with(server: &TestServer, account: &Account, filter: Value) -> Value {
    let filter = filter.to_string();
    sync_ok(
        server,
        &account.token,
        &[("filter", &filter), ("set_presence", "offline")],
    )
    .await
}

/// The `type`s of a section's events, or of the field `key` of each.
fn values(events: &Value, key: &str) -> Vec<String> {
    events["events"]
        .as_array()
        .unwrap_or_else(|| panic!("no events in {events}"))
        .iter()
        .map(|event| event[key].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// The sorted types of a joined room's `section` (none when it is absent).
fn room_types(answer: &Value, room: &str, section: &str) -> Vec<String> {
    let events = &answer["rooms"]["join"][room][section];
    let mut kinds = if events.is_null() {
        Vec::new()
    } else {
        values(events, "type")
    };
    kinds.sort();
    kinds
}

async fn ok(answer: (StatusCode, Value)) {
    assert_eq!(answer.0, StatusCode::OK, "{}", answer.1);
}

async fn two_members(server: &TestServer) -> (Account, Account, String) {
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = create_room(server, &alice.token, json!({})).await;
    invite(server, &alice.token, &room, &bob.user_id).await;
    join(server, &bob.token, &room).await;
    (alice, bob, room)
}

async fn presence_filter_applies(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (alice, bob, _room) = two_members(&server).await;
    for account in [&alice, &bob] {
        let url = server.v3(&format!("/presence/{}/status", account.user_id));
        let body = json!({ "presence": "online" });
        ok(server
            .request(Method::PUT, url, Some(&account.token), Some(body))
            .await)
        .await;
    }
    let everyone = sync_with(&server, &alice, json!({})).await;
    let mut senders = values(&everyone["presence"], "sender");
    senders.sort();
    assert_eq!(senders, [alice.user_id.clone(), bob.user_id.clone()]);

    let only_bob = sync_with(
        &server,
        &alice,
        json!({ "presence": { "senders": [bob.user_id] } }),
    )
    .await;
    assert_eq!(
        values(&only_bob["presence"], "sender"),
        [bob.user_id.clone()]
    );
    let not_bob = sync_with(
        &server,
        &alice,
        json!({ "presence": { "not_senders": [bob.user_id] } }),
    )
    .await;
    assert_eq!(
        values(&not_bob["presence"], "sender"),
        [alice.user_id.clone()]
    );
    let one = sync_with(&server, &alice, json!({ "presence": { "limit": 1 } })).await;
    assert_eq!(values(&one["presence"], "sender").len(), 1, "{one}");
    for none in [json!({ "types": [] }), json!({ "not_types": ["m.*"] })] {
        let answer = sync_with(&server, &alice, json!({ "presence": none })).await;
        assert!(values(&answer["presence"], "type").is_empty(), "{answer}");
    }
}

async fn account_data_filters_apply(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let first = create_room(&server, &alice.token, json!({})).await;
    let second = create_room(&server, &alice.token, json!({})).await;
    let user = enc(&alice.user_id);
    for kind in ["org.example.a", "org.example.b"] {
        let url = server.v3(&format!("/user/{user}/account_data/{kind}"));
        ok(server
            .request(
                Method::PUT,
                url,
                Some(&alice.token),
                Some(json!({ "k": kind })),
            )
            .await)
        .await;
        for room in [&first, &second] {
            let url = server.v3(&format!(
                "/user/{user}/rooms/{}/account_data/{kind}",
                enc(room)
            ));
            let body = json!({ "k": kind });
            ok(server
                .request(Method::PUT, url, Some(&alice.token), Some(body))
                .await)
            .await;
        }
    }
    let global = |answer: &Value| {
        let mut kinds = values(&answer["account_data"], "type");
        kinds.sort();
        kinds
    };
    let in_room = |answer: &Value, room: &str| room_types(answer, room, "account_data");
    let both = ["org.example.a", "org.example.b"];
    let all = sync_with(&server, &alice, json!({})).await;
    assert_eq!(global(&all), both);
    assert_eq!(in_room(&all, &first), both);

    let filtered = sync_with(
        &server,
        &alice,
        json!({
            "account_data": { "types": ["org.example.*"], "not_types": ["org.example.b"] },
            "room": { "account_data": { "not_rooms": [second], "types": ["org.example.b"] } },
        }),
    )
    .await;
    assert_eq!(global(&filtered), ["org.example.a"]);
    assert_eq!(in_room(&filtered, &first), ["org.example.b"]);
    assert!(in_room(&filtered, &second).is_empty(), "{filtered}");

    let limited = sync_with(
        &server,
        &alice,
        json!({
            "account_data": { "limit": 1, "types": ["org.example.*"] },
            "room": { "account_data": { "rooms": [second], "limit": 1 } },
        }),
    )
    .await;
    assert_eq!(global(&limited).len(), 1, "{limited}");
    assert_eq!(in_room(&limited, &second).len(), 1, "{limited}");
    assert!(in_room(&limited, &first).is_empty(), "{limited}");
    // Not the account's own sender: nothing.
    let others = sync_with(
        &server,
        &alice,
        json!({ "account_data": { "senders": ["@someone:localhost"] } }),
    )
    .await;
    assert!(global(&others).is_empty(), "{others}");
}

async fn ephemeral_filter_applies(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (alice, bob, room) = two_members(&server).await;
    let other = create_room(&server, &alice.token, json!({})).await;
    invite(&server, &alice.token, &other, &bob.user_id).await;
    join(&server, &bob.token, &other).await;
    for room in [&room, &other] {
        let event = send_text(&server, &alice.token, room, "read me").await;
        let url = room_url(&server, room, &format!("/receipt/m.read/{}", enc(&event)));
        ok(server
            .request(Method::POST, url, Some(&bob.token), Some(json!({})))
            .await)
        .await;
        let url = room_url(&server, room, &format!("/typing/{}", enc(&bob.user_id)));
        let body = json!({ "typing": true, "timeout": 30000 });
        ok(server
            .request(Method::PUT, url, Some(&bob.token), Some(body))
            .await)
        .await;
    }
    let ephemeral = |answer: &Value, room: &str| room_types(answer, room, "ephemeral");
    let all = sync_with(&server, &alice, json!({})).await;
    assert_eq!(ephemeral(&all, &room), ["m.receipt", "m.typing"], "{all}");

    let typing_here = sync_with(
        &server,
        &alice,
        json!({ "room": { "ephemeral": { "types": ["m.typing"], "not_rooms": [other] } } }),
    )
    .await;
    assert_eq!(ephemeral(&typing_here, &room), ["m.typing"]);
    assert!(ephemeral(&typing_here, &other).is_empty(), "{typing_here}");

    // Receipts are their readers' events.
    let from_alice = sync_with(
        &server,
        &alice,
        json!({ "room": { "ephemeral": { "senders": [alice.user_id], "rooms": [room] } } }),
    )
    .await;
    assert_eq!(ephemeral(&from_alice, &room), ["m.typing"], "{from_alice}");
    let from_bob = sync_with(
        &server,
        &alice,
        json!({ "room": { "ephemeral": { "senders": [bob.user_id], "types": ["m.receipt"] } } }),
    )
    .await;
    assert_eq!(ephemeral(&from_bob, &other), ["m.receipt"]);
    let receipt = &from_bob["rooms"]["join"][&other]["ephemeral"]["events"][0]["content"];
    let readers: Vec<&String> = receipt
        .as_object()
        .expect("receipt content")
        .values()
        .flat_map(|by_type| by_type["m.read"].as_object().expect("m.read").keys())
        .collect();
    assert_eq!(readers, [&bob.user_id]);

    let one = sync_with(
        &server,
        &alice,
        json!({ "room": { "ephemeral": { "limit": 1 } } }),
    )
    .await;
    assert_eq!(ephemeral(&one, &room).len(), 1, "{one}");
    assert_eq!(ephemeral(&one, &other).len(), 1, "{one}");
}

async fn event_fields_select_the_fields_of_room_events(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let room = create_room(&server, &alice.token, json!({})).await;
    let content = json!({
        "msgtype": "m.text",
        "body": "hello",
        "m.relates_to": { "rel_type": "org.example", "event_id": "$x" },
    });
    ok(send(
        &server,
        &alice.token,
        &room,
        "m.room.message",
        "fields",
        content,
    )
    .await)
    .await;
    let filter = json!({
        "event_fields": ["type", "content.body", r"content.m\.relates_to.rel_type"],
        "room": { "timeline": { "limit": 1 } },
    });
    let answer = sync_with(&server, &alice, filter).await;
    let events = timeline(&answer, "join", &room);
    assert_eq!(
        events[0],
        json!({
            "type": "m.room.message",
            "content": { "body": "hello", "m.relates_to": { "rel_type": "org.example" } },
        })
    );
    let state = &answer["rooms"]["join"][&room]["state"]["events"];
    for event in state.as_array().expect("state") {
        let keys: Vec<&String> = event.as_object().expect("event").keys().collect();
        assert!(
            keys.iter()
                .all(|key| ["type", "content"].contains(&key.as_str())),
            "{event}"
        );
    }
    // The federation format is selected from the same way.
    let filter = json!({
        "event_format": "federation",
        "event_fields": ["event_id", "depth"],
        "room": { "timeline": { "limit": 1 } },
    });
    let answer = sync_with(&server, &alice, filter).await;
    let event = &timeline(&answer, "join", &room)[0];
    assert_eq!(event.as_object().expect("event").len(), 2, "{event}");
    assert!(
        event["depth"].is_u64() && event["event_id"].is_string(),
        "{event}"
    );
    // No list, or an empty one, selects nothing away.
    let answer = sync_with(
        &server,
        &alice,
        json!({ "event_fields": [], "room": { "timeline": { "limit": 1 } } }),
    )
    .await;
    assert_eq!(
        timeline(&answer, "join", &room)[0]["content"]["msgtype"],
        "m.text"
    );
}
