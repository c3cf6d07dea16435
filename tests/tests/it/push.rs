//! Server-side push (client-server-api "Push notifications", push-gateway
//! API; spec-notes/push.md): push rules evaluated for each member, the
//! counts sync reports, `GET /notifications`, and what a push gateway
//! receives, checked by a gateway running inside the test.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{Json, Router, extract::State, http::StatusCode as GatewayStatus, routing::post};
use myelin_tests::{Backend, TestServer, assert_error, backend_tests};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::{
    rooms_support::{create_room, enc, join, room_url, send, send_text},
    sync_support::initial_sync,
};

backend_tests!(
    a_message_is_pushed_with_content_per_format,
    encrypted_and_e2e_only_events_are_pushed_without_content,
    counts_follow_the_rules_and_reset_on_read,
    notifications_list_what_notified,
    notifications_are_pruned_once_read_or_past_the_cap,
    a_rejected_pushkey_removes_the_pusher,
    a_failing_gateway_is_retried,
    an_invite_notifies_the_invitee,
);

/// How long a test waits for the gateway before it fails.
const GATEWAY_DEADLINE: Duration = Duration::from_secs(20);

/// A push gateway on 127.0.0.1 that hands every body it receives to the
/// test and answers from a script (200 with no rejection once it runs out).
struct Gateway {
    url: String,
    received: mpsc::UnboundedReceiver<Value>,
    script: Arc<Mutex<VecDeque<(u16, Value)>>>,
}

#[derive(Clone)]
struct GatewayState {
    received: mpsc::UnboundedSender<Value>,
    script: Arc<Mutex<VecDeque<(u16, Value)>>>,
}

impl Gateway {
    async fn start() -> Self {
        let (sender, received) = mpsc::unbounded_channel();
        let script = Arc::new(Mutex::new(VecDeque::new()));
        let state = GatewayState {
            received: sender,
            script: script.clone(),
        };
        let app = Router::new()
            .route("/_matrix/push/v1/notify", post(notify))
            .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "http://{}/_matrix/push/v1/notify",
            listener.local_addr().unwrap()
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            url,
            received,
            script,
        }
    }

    /// Answers the next posts with these statuses and bodies.
    fn answer_next(&self, answers: impl IntoIterator<Item = (u16, Value)>) {
        self.script.lock().unwrap().extend(answers);
    }

    /// The next body posted.
    async fn next(&mut self) -> Value {
        tokio::time::timeout(GATEWAY_DEADLINE, self.received.recv())
            .await
            .expect("the gateway heard nothing")
            .expect("the gateway stopped")
    }
}

async fn notify(
    State(state): State<GatewayState>,
    Json(body): Json<Value>,
) -> (GatewayStatus, Json<Value>) {
    let _ = state.received.send(body);
    let (status, answer) = state
        .script
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or((200, json!({ "rejected": [] })));
    (GatewayStatus::from_u16(status).unwrap(), Json(answer))
}

async fn start_server(backend: Backend) -> TestServer {
    TestServer::start_with(backend, |config| {
        config.push.allow_private_gateways = true;
        config.push.retry_delay_ms = 20;
    })
    .await
}

async fn set_pusher(server: &TestServer, token: &str, pushkey: &str, data: Value) {
    let body = json!({
        "app_id": "org.example.chat",
        "pushkey": pushkey,
        "kind": "http",
        "app_display_name": "Chat",
        "device_display_name": "Phone",
        "lang": "en",
        "data": data,
    });
    let (status, answer) = server
        .request(
            Method::POST,
            server.v3("/pushers/set"),
            Some(token),
            Some(body),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
}

async fn pushkeys(server: &TestServer, token: &str) -> Vec<String> {
    let (_, answer) = server
        .request(Method::GET, server.v3("/pushers"), Some(token), None)
        .await;
    answer["pushers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["pushkey"].as_str().unwrap().to_owned())
        .collect()
}

/// Alice and Bob in a two-member room created by Alice.
async fn pair(
    server: &TestServer,
    preset_body: Value,
) -> (myelin_tests::Account, myelin_tests::Account, String) {
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = create_room(server, &alice.token, preset_body).await;
    join(server, &bob.token, &room).await;
    (alice, bob, room)
}

async fn a_message_is_pushed_with_content_per_format(backend: Backend) {
    let server = start_server(backend).await;
    let mut gateway = Gateway::start().await;
    let (alice, bob, room) = pair(&server, json!({ "preset": "public_chat" })).await;
    set_pusher(
        &server,
        &bob.token,
        "full",
        json!({ "url": gateway.url, "extra": 1 }),
    )
    .await;

    // Bob's own message pushes nothing to Bob; Alice's next one is the
    // first thing the gateway hears.
    send_text(&server, &bob.token, &room, "mine").await;
    let event_id = send_text(&server, &alice.token, &room, "hello bob").await;
    let body = gateway.next().await;
    let notification = &body["notification"];
    assert_eq!(notification["event_id"], json!(event_id), "{body}");
    assert_eq!(notification["room_id"], json!(room));
    assert_eq!(notification["type"], json!("m.room.message"));
    assert_eq!(notification["sender"], json!(alice.user_id));
    assert_eq!(notification["content"]["body"], json!("hello bob"));
    assert_eq!(notification["counts"]["unread"], json!(1));
    assert_eq!(notification["prio"], json!("high"));
    let device = &notification["devices"][0];
    assert_eq!(device["app_id"], json!("org.example.chat"));
    assert_eq!(device["pushkey"], json!("full"));
    assert!(
        device["pushkey_ts"].as_i64().unwrap() > 1_600_000_000,
        "{device}"
    );
    // The URL is not sent; the rest of `data` is.
    assert_eq!(device["data"], json!({ "extra": 1 }));
    // Two members: `.m.rule.room_one_to_one` notifies with a sound.
    assert_eq!(device["tweaks"]["sound"], json!("default"), "{device}");

    set_pusher(
        &server,
        &bob.token,
        "full",
        json!({ "url": gateway.url, "format": "event_id_only" }),
    )
    .await;
    let event_id = send_text(&server, &alice.token, &room, "second").await;
    let body = gateway.next().await;
    let notification = body["notification"].as_object().unwrap();
    assert_eq!(notification["event_id"], json!(event_id));
    assert_eq!(notification["counts"]["unread"], json!(2));
    for hidden in ["type", "sender", "content"] {
        assert!(!notification.contains_key(hidden), "{hidden} in {body}");
    }
    assert_eq!(
        notification["devices"][0]["data"],
        json!({ "format": "event_id_only" })
    );
}

async fn encrypted_and_e2e_only_events_are_pushed_without_content(backend: Backend) {
    let server = start_server(backend).await;
    let mut gateway = Gateway::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let megolm = "m.megolm.v1.aes-sha2";
    let e2e_only = create_room(
        &server,
        &alice.token,
        json!({ "preset": "public_chat", "initial_state": [
            { "type": "m.room.encryption", "state_key": "", "content": { "algorithm": megolm } },
            { "type": "org.myelin.room.policy", "state_key": "", "content": { "e2e_required": true } },
        ] }),
    )
    .await;
    let plain = create_room(&server, &alice.token, json!({ "preset": "public_chat" })).await;
    for room in [&e2e_only, &plain] {
        join(&server, &bob.token, room).await;
    }
    // Full format asked for: the privacy rule wins over it.
    set_pusher(&server, &bob.token, "key", json!({ "url": gateway.url })).await;
    let ciphertext = json!({
        "algorithm": megolm, "ciphertext": "AwgAEnACgAkLmt", "device_id": "D",
        "sender_key": "k", "session_id": "s",
    });
    for (room, txn) in [(&e2e_only, "t1"), (&plain, "t2")] {
        let (status, answer) = send(
            &server,
            &alice.token,
            room,
            "m.room.encrypted",
            txn,
            ciphertext.clone(),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        let body = gateway.next().await;
        let notification = body["notification"].as_object().unwrap();
        assert_eq!(notification["event_id"], answer["event_id"]);
        assert_eq!(notification["room_id"], json!(room));
        assert!(notification["counts"]["unread"].as_u64().unwrap() >= 1);
        let mut keys: Vec<&str> = notification.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["counts", "devices", "event_id", "room_id"], "{body}");
        let device = notification["devices"][0].as_object().unwrap();
        assert!(!device.contains_key("tweaks"), "{body}");
        assert!(!body.to_string().contains("AwgAEnACgAkLmt"));
    }
    // A state event of the E2E-only room (never encrypted) is pushed
    // without content too: an invite, with the invitee's display name in it.
    let carol = server.register("carol").await;
    set_pusher(
        &server,
        &carol.token,
        "carol",
        json!({ "url": gateway.url }),
    )
    .await;
    crate::rooms_support::invite(&server, &alice.token, &e2e_only, &carol.user_id).await;
    let body = gateway.next().await;
    let notification = body["notification"].as_object().unwrap();
    assert_eq!(
        notification["devices"][0]["pushkey"],
        json!("carol"),
        "{body}"
    );
    let mut keys: Vec<&str> = notification.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["counts", "devices", "event_id", "room_id"], "{body}");
    assert!(!body.to_string().contains("invite"), "{body}");
}

/// The user's `unread_notifications` in `room`, from a sync right after the
/// sends: a sync waits for the evaluation of every event it can see, so the
/// counts match its timeline.
async fn counts(server: &TestServer, token: &str, room: &str) -> Value {
    initial_sync(server, token, 1).await["rooms"]["join"][room]["unread_notifications"].clone()
}

async fn counts_follow_the_rules_and_reset_on_read(backend: Backend) {
    let server = start_server(backend).await;
    let (alice, bob, room) = pair(&server, json!({ "preset": "public_chat" })).await;
    send_text(&server, &alice.token, &room, "plain").await;
    let (status, answer) = send(
        &server,
        &alice.token,
        &room,
        "m.room.message",
        "mention",
        json!({ "msgtype": "m.text", "body": "hey bob", "m.mentions": { "user_ids": [bob.user_id] } }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let mention = answer["event_id"].as_str().unwrap().to_owned();
    assert_eq!(
        counts(&server, &bob.token, &room).await,
        json!({ "notification_count": 2, "highlight_count": 1 })
    );
    // Alice's own messages never count for her.
    let alice_view = initial_sync(&server, &alice.token, 1).await;
    assert_eq!(
        alice_view["rooms"]["join"][&room]["unread_notifications"],
        json!({ "notification_count": 0, "highlight_count": 0 })
    );
    // The MSC2654 count stays what it was: messages after the receipt.
    assert_eq!(
        initial_sync(&server, &bob.token, 1).await["rooms"]["join"][&room]["org.matrix.msc2654.unread_count"],
        json!(2)
    );
    let (status, answer) = server
        .request(
            Method::POST,
            room_url(
                &server,
                &room,
                &format!("/receipt/m.read/{}", enc(&mention)),
            ),
            Some(&bob.token),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(
        counts(&server, &bob.token, &room).await,
        json!({ "notification_count": 0, "highlight_count": 0 })
    );

    // A room muted by a room rule notifies no more.
    let (status, answer) = server
        .request(
            Method::PUT,
            server.v3(&format!("/pushrules/global/room/{}", enc(&room))),
            Some(&bob.token),
            Some(json!({ "actions": [] })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    send_text(&server, &alice.token, &room, "muted").await;
    let marker = send_text(&server, &alice.token, &room, "still muted").await;
    let (_, page) = server
        .request(
            Method::GET,
            server.v3("/notifications"),
            Some(&bob.token),
            None,
        )
        .await;
    assert!(!page.to_string().contains(&marker), "{page}");
}

async fn notifications_list_what_notified(backend: Backend) {
    let server = start_server(backend).await;
    let (alice, bob, room) = pair(&server, json!({ "preset": "public_chat" })).await;
    let first = send_text(&server, &alice.token, &room, "one").await;
    let (_, answer) = send(
        &server,
        &alice.token,
        &room,
        "m.room.message",
        "t",
        json!({ "msgtype": "m.text", "body": "two", "m.mentions": { "user_ids": [bob.user_id] } }),
    )
    .await;
    let second = answer["event_id"].as_str().unwrap().to_owned();
    assert_eq!(
        counts(&server, &bob.token, &room).await,
        json!({ "notification_count": 2, "highlight_count": 1 })
    );
    let (status, page) = server
        .request(
            Method::GET,
            server.v3("/notifications"),
            Some(&bob.token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let listed = page["notifications"].as_array().unwrap();
    let ids: Vec<&str> = listed
        .iter()
        .map(|n| n["event"]["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [second.as_str(), first.as_str()]);
    assert_eq!(listed[0]["room_id"], json!(room));
    assert_eq!(listed[0]["read"], json!(false));
    assert!(listed[0]["ts"].as_i64().unwrap() > 0);
    assert_eq!(listed[0]["event"]["content"]["body"], json!("two"));
    assert!(
        listed[0]["actions"].to_string().contains("highlight"),
        "{page}"
    );
    assert!(page.get("next_token").is_none(), "{page}");

    let (_, highlights) = server
        .request(
            Method::GET,
            server.v3("/notifications?only=highlight"),
            Some(&bob.token),
            None,
        )
        .await;
    assert_eq!(highlights["notifications"].as_array().unwrap().len(), 1);
    assert_eq!(
        highlights["notifications"][0]["event"]["event_id"],
        json!(second)
    );

    let (_, one) = server
        .request(
            Method::GET,
            server.v3("/notifications?limit=1"),
            Some(&bob.token),
            None,
        )
        .await;
    assert_eq!(one["notifications"][0]["event"]["event_id"], json!(second));
    let token = one["next_token"].as_str().expect("next_token").to_owned();
    let (_, rest) = server
        .request(
            Method::GET,
            server.v3(&format!("/notifications?limit=1&from={token}")),
            Some(&bob.token),
            None,
        )
        .await;
    assert_eq!(rest["notifications"][0]["event"]["event_id"], json!(first));

    // Read up to the first: it reads as read, the second not.
    server
        .request(
            Method::POST,
            room_url(&server, &room, &format!("/receipt/m.read/{}", enc(&first))),
            Some(&bob.token),
            Some(json!({})),
        )
        .await;
    let (_, page) = server
        .request(
            Method::GET,
            server.v3("/notifications"),
            Some(&bob.token),
            None,
        )
        .await;
    assert_eq!(page["notifications"][0]["read"], json!(false));
    assert_eq!(page["notifications"][1]["read"], json!(true));

    for bad in [
        "/notifications?from=nope",
        "/notifications?only=everything",
        "/notifications?limit=x",
    ] {
        let answer = server
            .request(Method::GET, server.v3(bad), Some(&bob.token), None)
            .await;
        assert_error(&answer, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    }
}

async fn a_rejected_pushkey_removes_the_pusher(backend: Backend) {
    let server = start_server(backend).await;
    let mut gateway = Gateway::start().await;
    let (alice, bob, room) = pair(&server, json!({ "preset": "public_chat" })).await;
    set_pusher(&server, &bob.token, "stale", json!({ "url": gateway.url })).await;
    gateway.answer_next([(200, json!({ "rejected": ["stale"] }))]);
    send_text(&server, &alice.token, &room, "hello").await;
    gateway.next().await;
    // The pusher is removed once the answer is read, after the gateway
    // handed the body over: wait for that, with a deadline.
    let deadline = tokio::time::Instant::now() + GATEWAY_DEADLINE;
    while !pushkeys(&server, &bob.token).await.is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the rejected pusher stayed"
        );
        tokio::task::yield_now().await;
    }
}

async fn a_failing_gateway_is_retried(backend: Backend) {
    let server = start_server(backend).await;
    let mut gateway = Gateway::start().await;
    let (alice, bob, room) = pair(&server, json!({ "preset": "public_chat" })).await;
    set_pusher(&server, &bob.token, "key", json!({ "url": gateway.url })).await;
    gateway.answer_next([(500, json!({})), (503, json!({}))]);
    let event_id = send_text(&server, &alice.token, &room, "again").await;
    for attempt in 0..3 {
        let body = gateway.next().await;
        assert_eq!(
            body["notification"]["event_id"],
            json!(event_id),
            "attempt {attempt}"
        );
    }
    // Delivered on the third post: the next event is the next post.
    let next = send_text(&server, &alice.token, &room, "next").await;
    assert_eq!(
        gateway.next().await["notification"]["event_id"],
        json!(next)
    );
    assert_eq!(pushkeys(&server, &bob.token).await, ["key"]);
}

async fn an_invite_notifies_the_invitee(backend: Backend) {
    let server = start_server(backend).await;
    let mut gateway = Gateway::start().await;
    let alice = server.register("alice").await;
    let carol = server.register("carol").await;
    set_pusher(
        &server,
        &carol.token,
        "carol",
        json!({ "url": gateway.url }),
    )
    .await;
    let room = create_room(&server, &alice.token, json!({ "preset": "private_chat" })).await;
    crate::rooms_support::invite(&server, &alice.token, &room, &carol.user_id).await;
    let body = gateway.next().await;
    let notification = &body["notification"];
    assert_eq!(notification["room_id"], json!(room), "{body}");
    assert_eq!(notification["type"], json!("m.room.member"));
    assert_eq!(notification["content"]["membership"], json!("invite"));
    // `.m.rule.invite_for_me`: notify with the default sound.
    assert_eq!(
        notification["devices"][0]["tweaks"]["sound"],
        json!("default"),
        "{body}"
    );
}

/// The event ids `GET /notifications` lists for `token`, newest first.
async fn listed(server: &TestServer, token: &str) -> Vec<String> {
    let (status, page) = server
        .request(Method::GET, server.v3("/notifications"), Some(token), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    page["notifications"]
        .as_array()
        .expect("notifications")
        .iter()
        .map(|n| {
            n["event"]["event_id"]
                .as_str()
                .expect("event_id")
                .to_owned()
        })
        .collect()
}

/// Waits (ten seconds at most) for the pruning task, which runs on its
/// own clock, to leave exactly `expected` listed.
async fn listed_becomes(server: &TestServer, token: &str, expected: &[&String]) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let now = listed(server, token).await;
        if now.iter().collect::<Vec<_>>() == expected {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "listed {now:?}, expected {expected:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

async fn notifications_are_pruned_once_read_or_past_the_cap(backend: Backend) {
    let server = TestServer::start_with(backend, |config| {
        config.push.prune_interval_ms = 20;
        config.push.read_notification_retention_ms = 0;
        config.push.max_notifications_per_user = 3;
    })
    .await;
    let (alice, bob, room) = pair(&server, json!({ "preset": "public_chat" })).await;
    let mut sent = Vec::new();
    for body in ["one", "two", "three", "four", "five"] {
        sent.push(send_text(&server, &alice.token, &room, body).await);
    }
    // Past the cap, the oldest go, unread as they are.
    listed_becomes(&server, &bob.token, &[&sent[4], &sent[3], &sent[2]]).await;
    assert_eq!(
        counts(&server, &bob.token, &room).await,
        json!({ "notification_count": 3, "highlight_count": 0 })
    );
    // Read (and older than the retention, here none): gone; the unread stays.
    let (status, _) = server
        .request(
            Method::POST,
            room_url(
                &server,
                &room,
                &format!("/receipt/m.read/{}", enc(&sent[3])),
            ),
            Some(&bob.token),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    listed_becomes(&server, &bob.token, &[&sent[4]]).await;
    assert_eq!(
        counts(&server, &bob.token, &room).await,
        json!({ "notification_count": 1, "highlight_count": 0 })
    );
}
