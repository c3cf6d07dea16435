//! To-device inboxes under attack: an oversized message, a full inbox that
//! must not hold back the sender's other recipients, and one sender trying
//! to fill a device's inbox on its own.

use myelin_tests::{Account, Backend, TestServer, assert_error, backend_tests};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::sync_support::{next_batch, sync_ok};

backend_tests!(
    a_message_over_64_kib_is_refused,
    a_full_inbox_refuses_only_what_is_addressed_to_it,
    one_sender_cannot_fill_an_inbox,
);

const KEY_TYPE: &str = "m.room_key";

async fn send(
    server: &TestServer,
    sender: &Account,
    txn_id: &str,
    body: Value,
) -> (StatusCode, Value) {
    server
        .request(
            Method::PUT,
            server.v3(&format!("/sendToDevice/{KEY_TYPE}/{txn_id}")),
            Some(&sender.token),
            Some(body),
        )
        .await
}

fn to(account: &Account, content: Value) -> Value {
    json!({ "messages": { &account.user_id: { &account.device_id: content } } })
}

/// The `n` of each to-device message `account`'s device has waiting.
async fn inbox(server: &TestServer, account: &Account, since: Option<&str>) -> (Vec<u64>, String) {
    let answer = match since {
        Some(since) => {
            sync_ok(
                server,
                &account.token,
                &[("since", since), ("timeout", "0")],
            )
            .await
        }
        None => sync_ok(server, &account.token, &[]).await,
    };
    let numbers = answer["to_device"]["events"]
        .as_array()
        .unwrap_or_else(|| panic!("no to_device in {answer}"))
        .iter()
        .map(|event| event["content"]["n"].as_u64().expect("n"))
        .collect();
    (numbers, next_batch(&answer))
}

async fn a_message_over_64_kib_is_refused(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    // `{"n":1,"c":"…"}`: 14 bytes around the padding.
    let at_limit = json!({ "n": 1, "c": "A".repeat(65_536 - 14) });
    assert_eq!(at_limit.to_string().len(), 65_536);
    assert_eq!(
        send(&server, &alice, "fits", to(&bob, at_limit)).await,
        (StatusCode::OK, json!({}))
    );
    let over = json!({ "n": 2, "c": "A".repeat(65_536 - 13) });
    let refused = send(&server, &alice, "over", to(&bob, over)).await;
    assert_error(&refused, StatusCode::PAYLOAD_TOO_LARGE, "M_TOO_LARGE");
    assert_eq!(
        inbox(&server, &bob, None).await.0,
        vec![1],
        "nothing of the refused send"
    );
}

async fn a_full_inbox_refuses_only_what_is_addressed_to_it(backend: Backend) {
    let server = TestServer::start_with(backend, |config| {
        config.max_pending_to_device = 3;
        config.max_pending_to_device_per_sender = 3;
    })
    .await;
    let alice = server.register("alice").await;
    let carol = server.register("carol").await;
    let bob = server.register("bob").await;
    let bob_phone = server.login("bob", Some("PHONE")).await;
    for n in 0..3 {
        let sent = send(
            &server,
            &alice,
            &format!("f{n}"),
            to(&bob, json!({ "n": n })),
        )
        .await;
        assert_eq!(sent, (StatusCode::OK, json!({})));
    }

    // Carol's send to every device of bob reaches the phone; the sender is
    // told which device did not get it.
    let everyone = json!({ "messages": { &bob.user_id: { "*": { "n": 9 } } } });
    let (status, answer) = send(&server, &carol, "all", everyone).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(
        answer["org.myelin.inbox_full"],
        json!([{ "user_id": bob.user_id, "device_id": bob.device_id }])
    );
    assert_eq!(inbox(&server, &bob_phone, None).await.0, vec![9]);
    let (full, since) = inbox(&server, &bob, None).await;
    assert_eq!(full, vec![0, 1, 2], "nothing dropped, nothing added");

    // A send whose only recipient is full stores nothing and is refused,
    // so the same transaction can be retried once the device syncs.
    let only_laptop = to(&bob, json!({ "n": 10 }));
    let refused = send(&server, &carol, "laptop", only_laptop.clone()).await;
    assert_error(&refused, StatusCode::TOO_MANY_REQUESTS, "M_LIMIT_EXCEEDED");
    assert_eq!(
        refused.1["org.myelin.inbox_full"],
        json!([{ "user_id": bob.user_id, "device_id": bob.device_id }])
    );
    let (_, after) = inbox(&server, &bob, Some(&since)).await;
    assert_eq!(
        send(&server, &carol, "laptop", only_laptop).await,
        (StatusCode::OK, json!({}))
    );
    assert_eq!(inbox(&server, &bob, Some(&after)).await.0, vec![10]);
}

async fn one_sender_cannot_fill_an_inbox(backend: Backend) {
    let server = TestServer::start_with(backend, |config| {
        config.max_pending_to_device = 10;
        config.max_pending_to_device_per_sender = 3;
    })
    .await;
    let mallory = server.register("mallory").await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    for n in 0..3 {
        let sent = send(
            &server,
            &mallory,
            &format!("m{n}"),
            to(&bob, json!({ "n": n })),
        )
        .await;
        assert_eq!(sent, (StatusCode::OK, json!({})));
    }
    let refused = send(&server, &mallory, "m3", to(&bob, json!({ "n": 3 }))).await;
    assert_error(&refused, StatusCode::TOO_MANY_REQUESTS, "M_LIMIT_EXCEEDED");
    // Bob's inbox still has room for everyone else; mallory's share of
    // another inbox is its own.
    assert_eq!(
        send(&server, &alice, "a0", to(&bob, json!({ "n": 100 }))).await,
        (StatusCode::OK, json!({}))
    );
    assert_eq!(
        send(&server, &mallory, "c0", to(&carol, json!({ "n": 200 }))).await,
        (StatusCode::OK, json!({}))
    );
    assert_eq!(inbox(&server, &bob, None).await.0, vec![0, 1, 2, 100]);
}
