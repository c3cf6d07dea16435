//! Send-to-device messaging: `PUT /sendToDevice` and `to_device` in `/sync`
//! (delivery until acknowledged, idempotent transactions, `*`, order,
//! paging, wake-ups, malformed input, isolation of
//! inboxes, device deletion and restarts).

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use myelin_tests::{Account, Backend, TestServer, assert_error, backend_tests};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::{
    server_keys::PersistentData,
    sync_support::{next_batch, sync, sync_ok},
};

backend_tests!(
    messages_stay_until_the_next_token_acknowledges_them,
    contents_are_served_byte_for_byte,
    a_retried_transaction_delivers_once,
    wildcard_reaches_every_device_and_named_devices_win,
    order_is_kept_per_sender_under_many_messages,
    a_full_page_leaves_the_rest_for_the_next_sync,
    a_long_poll_wakes_for_a_message_to_its_device,
    malformed_sends_are_refused_with_matrix_errors,
    an_oversized_send_is_refused_whole,
    no_one_reads_another_devices_inbox,
    deleting_a_device_deletes_its_inbox,
    delivery_survives_a_restart,
);

const KEY_TYPE: &str = "m.room_key";

/// `PUT /sendToDevice/{event_type}/{txn_id}`.
async fn send(
    server: &TestServer,
    sender: &Account,
    event_type: &str,
    txn_id: &str,
    body: Value,
) -> (StatusCode, Value) {
    server
        .request(
            Method::PUT,
            server.v3(&format!("/sendToDevice/{event_type}/{txn_id}")),
            Some(&sender.token),
            Some(body),
        )
        .await
}

/// Sends `content` to one device, which must succeed.
async fn send_ok(
    server: &TestServer,
    sender: &Account,
    to: &Account,
    txn_id: &str,
    content: Value,
) {
    let body = json!({ "messages": { &to.user_id: { &to.device_id: content } } });
    let answer = send(server, sender, KEY_TYPE, txn_id, body).await;
    assert_eq!(answer, (StatusCode::OK, json!({})), "send {txn_id}");
}

/// A sync of `account`'s device that does not wait.
async fn device_sync(server: &TestServer, account: &Account, since: Option<&str>) -> Value {
    match since {
        Some(since) => {
            sync_ok(
                server,
                &account.token,
                &[("since", since), ("timeout", "0")],
            )
            .await
        }
        None => sync_ok(server, &account.token, &[]).await,
    }
}

/// The `to_device` events of a sync answer.
#[track_caller]
fn to_device(answer: &Value) -> Vec<Value> {
    answer["to_device"]["events"]
        .as_array()
        .unwrap_or_else(|| panic!("no to_device events in {answer}"))
        .clone()
}

/// The `n` field of each to-device content, in order.
fn numbers(events: &[Value]) -> Vec<u64> {
    events
        .iter()
        .map(|event| event["content"]["n"].as_u64().expect("n"))
        .collect()
}

async fn messages_stay_until_the_next_token_acknowledges_them(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let start = next_batch(&device_sync(&server, &bob, None).await);
    send_ok(&server, &alice, &bob, "t1", json!({ "n": 1 })).await;

    let first = device_sync(&server, &bob, Some(&start)).await;
    let events = to_device(&first);
    assert_eq!(events.len(), 1, "{first}");
    assert_eq!(events[0]["sender"], alice.user_id);
    assert_eq!(events[0]["type"], KEY_TYPE);
    assert_eq!(events[0]["content"], json!({ "n": 1 }));

    // The answer was "lost": syncing from the same token, or from none,
    // delivers the message again.
    let again = device_sync(&server, &bob, Some(&start)).await;
    assert_eq!(to_device(&again), events, "redelivered from the old token");
    let initial = device_sync(&server, &bob, None).await;
    assert_eq!(
        to_device(&initial),
        events,
        "redelivered to an initial sync"
    );

    // The next token acknowledges it: gone, even for a client that goes
    // back to the old token afterwards.
    let acknowledged = device_sync(&server, &bob, Some(&next_batch(&first))).await;
    assert_eq!(to_device(&acknowledged), Vec::<Value>::new());
    let replay = device_sync(&server, &bob, Some(&start)).await;
    assert_eq!(
        to_device(&replay),
        Vec::<Value>::new(),
        "deleted, not hidden"
    );
    assert_eq!(inbox_rows(&server).await, 0);
}

async fn contents_are_served_byte_for_byte(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    // Odd spacing, key order and escapes that any re-serialisation would change.
    let content = r#"{"z" :  "\u00e9t\u00e9",  "a":[1 ,2.50],"ciphertext":"AwgA\/+=="}"#;
    let body = format!(
        r#"{{"messages":{{"{}":{{"{}":{content}}}}}}}"#,
        bob.user_id, bob.device_id
    );
    let response = server
        .client
        .put(server.v3("/sendToDevice/m.room.encrypted/raw1"))
        .bearer_auth(&alice.token)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let text = server
        .client
        .get(server.v3("/sync"))
        .bearer_auth(&bob.token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains(&format!("\"content\":{content}")),
        "content changed on the way: {text}"
    );
}

async fn a_retried_transaction_delivers_once(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let alice_laptop = server.login("alice", Some("LAPTOP")).await;
    let bob = server.register("bob").await;
    for _ in 0..3 {
        send_ok(&server, &alice, &bob, "same", json!({ "n": 1 })).await;
    }
    // Transaction ids are scoped to the sending device: another device's
    // "same" is another send.
    send_ok(&server, &alice_laptop, &bob, "same", json!({ "n": 2 })).await;
    let answer = device_sync(&server, &bob, None).await;
    assert_eq!(numbers(&to_device(&answer)), vec![1, 2], "{answer}");
}

async fn wildcard_reaches_every_device_and_named_devices_win(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let bob_phone = server.login("bob", Some("PHONE")).await;
    let carol = server.register("carol").await;
    let body = json!({ "messages": {
        &bob.user_id: {
            "*": { "n": 1 },
            "PHONE": { "n": 2 },
            "NO_SUCH_DEVICE": { "n": 3 },
        },
        "@ghost:localhost": { "*": { "n": 4 } },
    }});
    assert_eq!(
        send(&server, &alice, KEY_TYPE, "w1", body).await,
        (StatusCode::OK, json!({})),
        "unknown local users and devices are skipped"
    );
    assert_eq!(
        numbers(&to_device(&device_sync(&server, &bob, None).await)),
        vec![1]
    );
    assert_eq!(
        numbers(&to_device(&device_sync(&server, &bob_phone, None).await)),
        vec![2]
    );
    assert!(to_device(&device_sync(&server, &carol, None).await).is_empty());
}

async fn order_is_kept_per_sender_under_many_messages(backend: Backend) {
    let server = Arc::new(TestServer::start(backend).await);
    let bob = server.register("bob").await;
    let senders = [
        server.register("alice").await,
        server.register("carol").await,
    ];
    const EACH: u64 = 40;
    // Two senders write at once; each one's messages must arrive in its order.
    let tasks: Vec<_> = senders
        .iter()
        .cloned()
        .map(|sender| {
            let server = Arc::clone(&server);
            let bob = bob.clone();
            tokio::spawn(async move {
                for n in 0..EACH {
                    send_ok(&server, &sender, &bob, &format!("o{n}"), json!({ "n": n })).await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let events = to_device(&device_sync(&server, &bob, None).await);
    assert_eq!(events.len() as u64, 2 * EACH);
    for sender in &senders {
        let theirs: Vec<Value> = events
            .iter()
            .filter(|event| event["sender"] == sender.user_id)
            .cloned()
            .collect();
        assert_eq!(
            numbers(&theirs),
            (0..EACH).collect::<Vec<_>>(),
            "{}",
            sender.user_id
        );
    }
}

async fn a_full_page_leaves_the_rest_for_the_next_sync(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    const TOTAL: u64 = 230;
    const PAGE: usize = 100;
    for n in 0..TOTAL {
        send_ok(&server, &alice, &bob, &format!("p{n}"), json!({ "n": n })).await;
    }
    let first = device_sync(&server, &bob, None).await;
    assert_eq!(numbers(&to_device(&first)), (0..100).collect::<Vec<_>>());
    // Not acknowledged yet: the same page again.
    let lost = device_sync(&server, &bob, None).await;
    assert_eq!(to_device(&lost), to_device(&first));

    let mut received = numbers(&to_device(&first));
    let mut since = next_batch(&first);
    loop {
        // A long timeout: pending messages must be answered at once.
        let started = Instant::now();
        let answer = sync_ok(
            &server,
            &bob.token,
            &[("since", &since), ("timeout", "20000")],
        )
        .await;
        let page = to_device(&answer);
        assert!(page.len() <= PAGE);
        since = next_batch(&answer);
        if page.is_empty() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "pending messages waited {:?}",
            started.elapsed()
        );
        received.extend(numbers(&page));
        if received.len() as u64 == TOTAL {
            let done = device_sync(&server, &bob, Some(&since)).await;
            assert!(to_device(&done).is_empty(), "{done}");
            break;
        }
    }
    assert_eq!(received, (0..TOTAL).collect::<Vec<_>>());
    assert_eq!(inbox_rows(&server).await, 0);
}

async fn a_long_poll_wakes_for_a_message_to_its_device(backend: Backend) {
    let server = Arc::new(TestServer::start(backend).await);
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let bob_phone = server.login("bob", Some("PHONE")).await;
    let since = next_batch(&device_sync(&server, &bob, None).await);
    let phone_since = next_batch(&device_sync(&server, &bob_phone, None).await);
    let long_poll = |account: &Account, since: &str, timeout: &str| {
        let server = Arc::clone(&server);
        let (token, since, timeout) = (account.token.clone(), since.to_owned(), timeout.to_owned());
        tokio::spawn(async move {
            let started = Instant::now();
            let answer = sync(&server, &token, &[("since", &since), ("timeout", &timeout)]).await;
            (started.elapsed(), answer)
        })
    };
    let laptop = long_poll(&bob, &since, "30000");
    // The phone waits too, but the message is not for it.
    let phone = long_poll(&bob_phone, &phone_since, "1500");
    tokio::task::yield_now().await;
    send_ok(&server, &alice, &bob, "wake", json!({ "n": 1 })).await;

    let (elapsed, (status, answer)) = laptop.await.unwrap();
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert!(elapsed < Duration::from_secs(10), "woke after {elapsed:?}");
    assert_eq!(numbers(&to_device(&answer)), vec![1]);
    let (_, (status, answer)) = phone.await.unwrap();
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert!(to_device(&answer).is_empty(), "{answer}");
}

async fn malformed_sends_are_refused_with_matrix_errors(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let to_bob =
        |content: Value| json!({ "messages": { &bob.user_id: { &bob.device_id: content } } });
    let cases = [
        (
            json!({}),
            StatusCode::BAD_REQUEST,
            "M_BAD_JSON",
            "no messages",
        ),
        (
            json!({ "messages": [] }),
            StatusCode::BAD_REQUEST,
            "M_BAD_JSON",
            "messages not an object",
        ),
        (
            json!({ "messages": { &bob.user_id: [] } }),
            StatusCode::BAD_REQUEST,
            "M_BAD_JSON",
            "devices not an object",
        ),
        (
            to_bob(json!("text")),
            StatusCode::BAD_REQUEST,
            "M_BAD_JSON",
            "string content",
        ),
        (
            to_bob(json!([1])),
            StatusCode::BAD_REQUEST,
            "M_BAD_JSON",
            "array content",
        ),
        (
            to_bob(Value::Null),
            StatusCode::BAD_REQUEST,
            "M_BAD_JSON",
            "null content",
        ),
        (
            json!({ "messages": { "bob": { "D": {} } } }),
            StatusCode::BAD_REQUEST,
            "M_INVALID_PARAM",
            "bad user id",
        ),
    ];
    for (n, (body, status, errcode, what)) in cases.into_iter().enumerate() {
        let answer = send(&server, &alice, KEY_TYPE, &format!("bad{n}"), body).await;
        assert_eq!(answer.0, status, "{what}: {}", answer.1);
        assert_eq!(answer.1["errcode"], errcode, "{what}: {}", answer.1);
    }
    // A user of another server is no longer refused: their server gets
    // the message through federation (spec-notes/federation-sender.md).
    let remote = send(
        &server,
        &alice,
        KEY_TYPE,
        "remote",
        json!({ "messages": { "@bob:elsewhere.example": { "*": {} } } }),
    )
    .await;
    assert_eq!(remote.0, StatusCode::OK, "remote user: {}", remote.1);
    let long_type = "t".repeat(256);
    assert_error(
        &send(&server, &alice, &long_type, "long", to_bob(json!({}))).await,
        StatusCode::BAD_REQUEST,
        "M_INVALID_PARAM",
    );
    let not_json = server
        .client
        .put(server.v3("/sendToDevice/m.x/nj"))
        .bearer_auth(&alice.token)
        .body("{messages")
        .send()
        .await
        .unwrap();
    assert_eq!(not_json.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        not_json.json::<Value>().await.unwrap()["errcode"],
        "M_NOT_JSON"
    );
    let anonymous = server
        .request(
            Method::PUT,
            server.v3("/sendToDevice/m.x/anon"),
            None,
            Some(to_bob(json!({}))),
        )
        .await;
    assert_error(&anonymous, StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN");
    for token in ["s5_0_5", "s5_0_x", "s1_0_0_0"] {
        let answer = sync(&server, &bob.token, &[("since", token), ("timeout", "0")]).await;
        assert_error(&answer, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    }
    // Nothing of the refused sends was queued.
    assert!(to_device(&device_sync(&server, &bob, None).await).is_empty());
}

async fn an_oversized_send_is_refused_whole(backend: Backend) {
    let server =
        TestServer::start_with(backend, |config| config.max_request_body_bytes = 4096).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let padding = "A".repeat(8192);
    let body = json!({ "messages": { &bob.user_id: { "*": { "ciphertext": padding } } } });
    assert_error(
        &send(&server, &alice, KEY_TYPE, "big", body).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "M_TOO_LARGE",
    );
    let long_txn = "t".repeat(256);
    let body = json!({ "messages": { &bob.user_id: { "*": {} } } });
    assert_error(
        &send(&server, &alice, KEY_TYPE, &long_txn, body).await,
        StatusCode::BAD_REQUEST,
        "M_INVALID_PARAM",
    );
    assert!(to_device(&device_sync(&server, &bob, None).await).is_empty());
}

async fn no_one_reads_another_devices_inbox(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let bob_phone = server.login("bob", Some("PHONE")).await;
    let mallory = server.register("mallory").await;
    let start = next_batch(&device_sync(&server, &bob, None).await);
    send_ok(&server, &alice, &bob, "secret", json!({ "n": 1 })).await;

    assert!(to_device(&device_sync(&server, &mallory, None).await).is_empty());
    let phone = device_sync(&server, &bob_phone, None).await;
    assert!(to_device(&phone).is_empty(), "{phone}");
    // The phone syncing past the laptop's token acknowledges only its own inbox.
    let later = next_batch(&phone);
    device_sync(&server, &bob_phone, Some(&later)).await;
    let mallory_later = next_batch(&device_sync(&server, &mallory, None).await);
    device_sync(&server, &mallory, Some(&mallory_later)).await;
    assert_eq!(
        numbers(&to_device(&device_sync(&server, &bob, Some(&start)).await)),
        vec![1]
    );
}

async fn deleting_a_device_deletes_its_inbox(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let bob_phone = server.login("bob", Some("PHONE")).await;
    send_ok(&server, &alice, &bob_phone, "to-phone", json!({ "n": 1 })).await;
    send_ok(&server, &alice, &bob, "to-laptop", json!({ "n": 2 })).await;
    assert_eq!(inbox_rows(&server).await, 2);

    let logout = server
        .request(
            Method::POST,
            server.v3("/logout"),
            Some(&bob_phone.token),
            Some(json!({})),
        )
        .await;
    assert_eq!(logout.0, StatusCode::OK, "{}", logout.1);
    assert_eq!(
        inbox_rows(&server).await,
        1,
        "the phone's inbox went with it"
    );
    // A new login that takes the same device id starts with an empty inbox.
    let again = server.login("bob", Some("PHONE")).await;
    assert!(to_device(&device_sync(&server, &again, None).await).is_empty());
    assert_eq!(
        numbers(&to_device(&device_sync(&server, &bob, None).await)),
        vec![2]
    );
}

async fn delivery_survives_a_restart(backend: Backend) {
    let data = PersistentData::new(backend).await;
    let server = data.start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    // Two sends, so the stream's high-water mark is the second one's position.
    send_ok(&server, &alice, &bob, "r1", json!({ "n": 1 })).await;
    send_ok(&server, &alice, &bob, "r1b", json!({ "n": 11 })).await;
    let delivered = device_sync(&server, &bob, None).await;
    assert_eq!(numbers(&to_device(&delivered)), vec![1, 11]);
    server.stop().await.unwrap();

    // The answer was lost in the restart: delivered again.
    let server = data.start().await;
    assert_eq!(
        numbers(&to_device(&device_sync(&server, &bob, None).await)),
        vec![1, 11]
    );
    let acknowledged = device_sync(&server, &bob, Some(&next_batch(&delivered))).await;
    assert!(to_device(&acknowledged).is_empty());
    server.stop().await.unwrap();

    // Every message is deleted now, yet the stream does not restart below
    // the token bob holds, and a new message is still "after" it.
    let server = data.start().await;
    let since = next_batch(&acknowledged);
    assert!(to_device(&device_sync(&server, &bob, Some(&since)).await).is_empty());
    send_ok(&server, &alice, &bob, "r2", json!({ "n": 2 })).await;
    let delivered = device_sync(&server, &bob, Some(&since)).await;
    assert_eq!(numbers(&to_device(&delivered)), vec![2]);
    // A retry stores nothing, yet takes the last position, which bob's
    // next token holds: that too must survive a restart.
    send_ok(&server, &alice, &bob, "r2", json!({ "n": 2 })).await;
    let last = next_batch(&device_sync(&server, &bob, Some(&next_batch(&delivered))).await);
    server.stop().await.unwrap();

    let server = data.start().await;
    let answer = device_sync(&server, &bob, Some(&last)).await;
    assert!(to_device(&answer).is_empty(), "{answer}");
    server.stop().await.unwrap();
}

/// How many messages are waiting in the server's database, all devices together.
async fn inbox_rows(server: &TestServer) -> i64 {
    server
        .count_rows("SELECT COUNT(*) FROM to_device_inbox")
        .await
}
