//! MSC3814 dehydrated devices: `PUT`, `GET` and `DELETE /dehydrated_device`
//! and the paged `POST /dehydrated_device/{deviceId}/events`, raw HTTP.

use myelin_tests::{Account, Backend, PASSWORD, TestServer, assert_error, backend_tests};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::keys_support::{Device, claim_one, claimed_key, query};

backend_tests!(
    a_dehydrated_device_is_stored_read_back_and_deleted,
    a_new_dehydrated_device_replaces_the_old_one,
    logging_out_everywhere_keeps_the_dehydrated_device,
    messages_to_the_device_come_in_pages_until_acknowledged,
    only_the_users_own_dehydrated_device_has_events,
    malformed_and_oversized_bodies_are_refused,
);

/// `/_matrix/client/unstable/org.matrix.msc3814.v1{path}`.
fn msc3814(server: &TestServer, path: &str) -> String {
    format!(
        "{}/_matrix/client/unstable/org.matrix.msc3814.v1{path}",
        server.base_url
    )
}

/// A device of `owner` that holds no token: its keys sign with its own id.
fn dehydrated(owner: &Account, device_id: &str) -> Device {
    Device::new(&Account {
        device_id: device_id.to_owned(),
        ..owner.clone()
    })
}

/// The `PUT /dehydrated_device` body for `device`, with one one-time key.
fn put_body(device: &Device, data: Value) -> Value {
    let (key_id, key) = device.one_time_key("otk1", false);
    json!({
        "device_id": device.account.device_id,
        "device_data": data,
        "device_keys": device.device_keys(),
        "one_time_keys": { key_id: key },
        "initial_device_display_name": "Dehydrated",
    })
}

async fn call(
    server: &TestServer,
    method: Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    server
        .request(method, msc3814(server, path), Some(token), body)
        .await
}

/// `GET /dehydrated_device`.
async fn stored(server: &TestServer, token: &str) -> (StatusCode, Value) {
    call(server, Method::GET, "/dehydrated_device", token, None).await
}

/// Stores `device` as its owner's dehydrated device, which must succeed.
async fn put_ok(server: &TestServer, device: &Device, data: Value) {
    let answer = call(
        server,
        Method::PUT,
        "/dehydrated_device",
        &device.account.token,
        Some(put_body(device, data)),
    )
    .await;
    assert_eq!(
        answer,
        (
            StatusCode::OK,
            json!({ "device_id": device.account.device_id })
        ),
        "put"
    );
}

/// One page of the events of `device_id`, acknowledging up to `since`.
async fn events(
    server: &TestServer,
    token: &str,
    device_id: &str,
    since: Option<&str>,
) -> (StatusCode, Value) {
    let body = since.map_or_else(|| json!({}), |since| json!({ "next_batch": since }));
    call(
        server,
        Method::POST,
        &format!("/dehydrated_device/{device_id}/events"),
        token,
        Some(body),
    )
    .await
}

/// The device ids `/keys/query` lists for `user_id`.
async fn queried_devices(server: &TestServer, token: &str, user_id: &str) -> Vec<String> {
    let answer = query(server, token, &[user_id]).await;
    answer["device_keys"][user_id]
        .as_object()
        .map(|devices| devices.keys().cloned().collect())
        .unwrap_or_default()
}

/// Sends `{"n": n}` from `sender` to `user_id`'s device `device_id`.
async fn send_to(server: &TestServer, sender: &Account, user_id: &str, device_id: &str, n: u64) {
    let body = json!({ "messages": { user_id: { device_id: { "n": n } } } });
    let (status, answer) = server
        .request(
            Method::PUT,
            server.v3(&format!("/sendToDevice/m.room_key/t{n}")),
            Some(&sender.token),
            Some(body),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "send: {answer}");
}

fn numbers(page: &Value) -> Vec<u64> {
    page["events"]
        .as_array()
        .unwrap_or_else(|| panic!("no events in {page}"))
        .iter()
        .map(|event| event["content"]["n"].as_u64().expect("n"))
        .collect()
}

async fn a_dehydrated_device_is_stored_read_back_and_deleted(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let (status, versions) = server
        .request(
            Method::GET,
            format!("{}/_matrix/client/versions", server.base_url),
            None,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(versions["unstable_features"]["org.matrix.msc3814"], true);

    let none = stored(&server, &alice.token).await;
    assert_error(&none, StatusCode::NOT_FOUND, "M_NOT_FOUND");

    let device = dehydrated(&alice, "DEHYDRATED1");
    let data = json!({ "algorithm": "m.dehydration.v1.olm", "device_pickle": "ZZZ", "n": [1, 2] });
    put_ok(&server, &device, data.clone()).await;
    let answer = stored(&server, &alice.token).await;
    assert_eq!(
        answer,
        (
            StatusCode::OK,
            json!({ "device_id": "DEHYDRATED1", "device_data": data })
        )
    );
    // Others see its keys and can claim its one-time key.
    let seen = query(&server, &bob.token, &[&alice.user_id]).await;
    assert_eq!(
        seen["device_keys"][&alice.user_id]["DEHYDRATED1"]["keys"],
        device.device_keys()["keys"]
    );
    let claimed = claim_one(&server, &bob.token, &alice.user_id, "DEHYDRATED1").await;
    assert!(
        claimed_key(&claimed, &alice.user_id, "DEHYDRATED1").is_some(),
        "{claimed}"
    );

    let deleted = call(
        &server,
        Method::DELETE,
        "/dehydrated_device",
        &alice.token,
        None,
    )
    .await;
    assert_eq!(
        deleted,
        (StatusCode::OK, json!({ "device_id": "DEHYDRATED1" }))
    );
    let gone = stored(&server, &alice.token).await;
    assert_error(&gone, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    assert!(
        !queried_devices(&server, &bob.token, &alice.user_id)
            .await
            .contains(&"DEHYDRATED1".to_owned())
    );
    let again = call(
        &server,
        Method::DELETE,
        "/dehydrated_device",
        &alice.token,
        None,
    )
    .await;
    assert_error(&again, StatusCode::NOT_FOUND, "M_NOT_FOUND");
}

async fn a_new_dehydrated_device_replaces_the_old_one(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let old = dehydrated(&alice, "OLD");
    put_ok(&server, &old, json!({ "v": 1 })).await;
    send_to(&server, &bob, &alice.user_id, "OLD", 1).await;

    let new = dehydrated(&alice, "NEW");
    put_ok(&server, &new, json!({ "v": 2 })).await;
    let answer = stored(&server, &alice.token).await;
    assert_eq!(
        answer.1,
        json!({ "device_id": "NEW", "device_data": { "v": 2 } })
    );
    let listed = queried_devices(&server, &bob.token, &alice.user_id).await;
    assert!(listed.contains(&"NEW".to_owned()), "{listed:?}");
    assert!(!listed.contains(&"OLD".to_owned()), "{listed:?}");
    let old_events = events(&server, &alice.token, "OLD", None).await;
    assert_error(&old_events, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    let new_events = events(&server, &alice.token, "NEW", None).await;
    assert_eq!(numbers(&new_events.1), Vec::<u64>::new());

    // A logged-in device's id cannot be taken over.
    let taken = dehydrated(&alice, &alice.device_id);
    let answer = call(
        &server,
        Method::PUT,
        "/dehydrated_device",
        &alice.token,
        Some(put_body(&taken, json!({}))),
    )
    .await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
}

async fn logging_out_everywhere_keeps_the_dehydrated_device(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    put_ok(&server, &dehydrated(&alice, "KEPT"), json!({})).await;
    let (status, answer) = server
        .request(
            Method::POST,
            server.v3("/logout/all"),
            Some(&alice.token),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(
        queried_devices(&server, &bob.token, &alice.user_id).await,
        vec!["KEPT".to_owned()]
    );
    // No session can be opened on it.
    let body = json!({
        "type": "m.login.password",
        "identifier": { "type": "m.id.user", "user": "alice" },
        "password": PASSWORD,
        "device_id": "KEPT",
    });
    let takeover = server
        .request(Method::POST, server.v3("/login"), None, Some(body))
        .await;
    assert_error(&takeover, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    let later = server.login("alice", None).await;
    let answer = stored(&server, &later.token).await;
    assert_eq!(answer.1["device_id"], "KEPT");
}

async fn messages_to_the_device_come_in_pages_until_acknowledged(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    put_ok(&server, &dehydrated(&alice, "DEHYD"), json!({})).await;
    let total = 150;
    for n in 1..=total {
        send_to(&server, &bob, &alice.user_id, "DEHYD", n).await;
    }

    let first = events(&server, &alice.token, "DEHYD", None).await;
    assert_eq!(first.0, StatusCode::OK, "{}", first.1);
    let first_numbers = numbers(&first.1);
    assert_eq!(first_numbers, (1..=100).collect::<Vec<_>>());
    assert_eq!(first.1["events"][0]["sender"], bob.user_id);
    assert_eq!(first.1["events"][0]["type"], "m.room_key");
    // Unacknowledged: asked again without a token, the first page comes back.
    let repeated = events(&server, &alice.token, "DEHYD", None).await;
    assert_eq!(numbers(&repeated.1), first_numbers);

    let token = first.1["next_batch"]
        .as_str()
        .expect("next_batch")
        .to_owned();
    let second = events(&server, &alice.token, "DEHYD", Some(&token)).await;
    assert_eq!(numbers(&second.1), (101..=total).collect::<Vec<_>>());
    // The first page is deleted now: even without a token it is gone.
    let after_ack = events(&server, &alice.token, "DEHYD", None).await;
    assert_eq!(numbers(&after_ack.1), (101..=total).collect::<Vec<_>>());

    let token = second.1["next_batch"]
        .as_str()
        .expect("next_batch")
        .to_owned();
    let end = events(&server, &alice.token, "DEHYD", Some(&token)).await;
    assert_eq!(numbers(&end.1), Vec::<u64>::new());
    let empty = events(&server, &alice.token, "DEHYD", None).await;
    assert_eq!(numbers(&empty.1), Vec::<u64>::new(), "all acknowledged");
}

async fn only_the_users_own_dehydrated_device_has_events(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    put_ok(&server, &dehydrated(&alice, "ALICEDEHYD"), json!({})).await;
    send_to(&server, &bob, &alice.user_id, "ALICEDEHYD", 1).await;
    send_to(&server, &alice, &bob.user_id, &bob.device_id, 2).await;

    let others = events(&server, &bob.token, "ALICEDEHYD", None).await;
    assert_error(&others, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    // A logged-in device is not a dehydrated one, even the caller's own.
    let logged_in = events(&server, &bob.token, &bob.device_id, None).await;
    assert_error(&logged_in, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    let bad_token = events(&server, &alice.token, "ALICEDEHYD", Some("x1")).await;
    assert_error(&bad_token, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    // Bob's attempts changed nothing for alice.
    let own = events(&server, &alice.token, "ALICEDEHYD", None).await;
    assert_eq!(numbers(&own.1), vec![1]);
}

async fn malformed_and_oversized_bodies_are_refused(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let device = dehydrated(&alice, "DEHYD");
    let put = |body: Value| {
        let server = &server;
        let token = alice.token.clone();
        async move {
            call(
                server,
                Method::PUT,
                "/dehydrated_device",
                &token,
                Some(body),
            )
            .await
        }
    };

    let mut missing_keys = put_body(&device, json!({}));
    missing_keys
        .as_object_mut()
        .expect("object")
        .remove("device_keys");
    assert_error(
        &put(missing_keys).await,
        StatusCode::BAD_REQUEST,
        "M_BAD_JSON",
    );
    let not_an_object = put_body(&device, json!("a string"));
    assert_error(
        &put(not_an_object).await,
        StatusCode::BAD_REQUEST,
        "M_BAD_JSON",
    );
    let oversized = put_body(&device, json!({ "pickle": "A".repeat(130 * 1024) }));
    assert_error(
        &put(oversized).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "M_TOO_LARGE",
    );
    // Keys for another device id than the one named fail `/keys/upload`'s checks.
    let mut wrong_keys = put_body(&device, json!({}));
    wrong_keys["device_id"] = json!("OTHER");
    assert_error(
        &put(wrong_keys).await,
        StatusCode::BAD_REQUEST,
        "M_INVALID_PARAM",
    );
    let mut nul = put_body(&device, json!({}));
    nul["device_id"] = json!("BAD\u{0}ID");
    assert_error(&put(nul).await, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    // A one-time key not signed by the device: nothing is kept.
    let mut unsigned_key = put_body(&device, json!({}));
    unsigned_key["one_time_keys"] = json!({ "signed_curve25519:x": { "key": "abc" } });
    let refused = put(unsigned_key).await;
    assert_eq!(refused.0, StatusCode::BAD_REQUEST, "{}", refused.1);
    let none = stored(&server, &alice.token).await;
    assert_error(&none, StatusCode::NOT_FOUND, "M_NOT_FOUND");

    put_ok(&server, &device, json!({})).await;
    let bad_events = call(
        &server,
        Method::POST,
        "/dehydrated_device/DEHYD/events",
        &alice.token,
        Some(json!({ "next_batch": 5 })),
    )
    .await;
    assert_error(&bad_events, StatusCode::BAD_REQUEST, "M_BAD_JSON");
    let unauthenticated = server
        .request(
            Method::GET,
            msc3814(&server, "/dehydrated_device"),
            None,
            None,
        )
        .await;
    assert_error(
        &unauthenticated,
        StatusCode::UNAUTHORIZED,
        "M_MISSING_TOKEN",
    );
}
