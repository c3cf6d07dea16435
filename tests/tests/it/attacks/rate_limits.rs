//! Request floods: each write a client can repeat cheaply (room messages,
//! room creation, invites, to-device, one-time key claims, media uploads) is
//! rate-limited per account, and `X-Forwarded-For` moves an address-keyed
//! limit only when a configured proxy sent it.

use myelin_server::config::{Config, RateLimit};
use myelin_tests::{Account, Backend, TestServer, assert_error, backend_tests};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::rooms_support::{create_room, room_url, send, try_create_room};

backend_tests!(
    room_sends_are_rate_limited_per_user,
    room_creation_is_rate_limited,
    invites_are_rate_limited,
    to_device_sends_are_rate_limited,
    key_claims_are_rate_limited,
    media_uploads_are_rate_limited,
    forwarded_for_counts_only_from_a_trusted_proxy,
    public_room_listings_are_rate_limited_per_address,
);

/// One request at once and nothing more for the test's duration.
const ONCE: RateLimit = RateLimit {
    per_second: 0.001,
    burst: 1,
};

async fn start(backend: Backend, configure: impl FnOnce(&mut Config)) -> TestServer {
    TestServer::start_with(backend, |config| {
        config.rate_limits.enabled = true;
        configure(config);
    })
    .await
}

#[track_caller]
fn assert_limited(answer: &(StatusCode, Value)) {
    assert_error(answer, StatusCode::TOO_MANY_REQUESTS, "M_LIMIT_EXCEEDED");
    assert!(
        answer.1["retry_after_ms"].as_u64().is_some_and(|ms| ms > 0),
        "{}",
        answer.1
    );
}

async fn room_sends_are_rate_limited_per_user(backend: Backend) {
    let server = start(backend, |config| config.rate_limits.sends = ONCE).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = create_room(&server, &alice.token, json!({ "preset": "public_chat" })).await;
    let text = json!({ "msgtype": "m.text", "body": "hi" });
    assert_eq!(
        send(
            &server,
            &alice.token,
            &room,
            "m.room.message",
            "1",
            text.clone()
        )
        .await
        .0,
        StatusCode::OK
    );
    assert_limited(
        &send(
            &server,
            &alice.token,
            &room,
            "m.room.message",
            "2",
            text.clone(),
        )
        .await,
    );
    // Another account has its own budget.
    let bobs = create_room(&server, &bob.token, json!({})).await;
    assert_eq!(
        send(&server, &bob.token, &bobs, "m.room.message", "1", text)
            .await
            .0,
        StatusCode::OK
    );
}

async fn room_creation_is_rate_limited(backend: Backend) {
    let server = start(backend, |config| config.rate_limits.room_creation = ONCE).await;
    let alice = server.register("alice").await;
    assert_eq!(
        try_create_room(&server, &alice.token, json!({})).await.0,
        StatusCode::OK
    );
    assert_limited(&try_create_room(&server, &alice.token, json!({})).await);
}

async fn invites_are_rate_limited(backend: Backend) {
    let server = start(backend, |config| config.rate_limits.invites = ONCE).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let room = create_room(&server, &alice.token, json!({})).await;
    let invite = |user: &Account| {
        server.request(
            Method::POST,
            room_url(&server, &room, "/invite"),
            Some(&alice.token),
            Some(json!({ "user_id": user.user_id })),
        )
    };
    assert_eq!(invite(&bob).await, (StatusCode::OK, json!({})));
    assert_limited(&invite(&carol).await);
}

async fn to_device_sends_are_rate_limited(backend: Backend) {
    let server = start(backend, |config| config.rate_limits.to_device = ONCE).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let body = json!({ "messages": { &bob.user_id: { &bob.device_id: {} } } });
    let send = |txn: &str| {
        server.request(
            Method::PUT,
            server.v3(&format!("/sendToDevice/m.test/{txn}")),
            Some(&alice.token),
            Some(body.clone()),
        )
    };
    assert_eq!(send("1").await, (StatusCode::OK, json!({})));
    assert_limited(&send("2").await);
}

async fn key_claims_are_rate_limited(backend: Backend) {
    let server = start(backend, |config| config.rate_limits.key_claims = ONCE).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let claim = || {
        server.request(
            Method::POST,
            server.v3("/keys/claim"),
            Some(&alice.token),
            Some(json!({ "one_time_keys": { &bob.user_id: { &bob.device_id: "signed_curve25519" } } })),
        )
    };
    assert_eq!(claim().await.0, StatusCode::OK);
    assert_limited(&claim().await);
}

async fn media_uploads_are_rate_limited(backend: Backend) {
    let server = start(backend, |config| config.rate_limits.media_uploads = ONCE).await;
    let alice = server.register("alice").await;
    let upload = || async {
        let response = server
            .client
            .post(format!("{}/_matrix/media/v3/upload", server.base_url))
            .bearer_auth(&alice.token)
            .header("Content-Type", "text/plain")
            .body("x")
            .send()
            .await
            .expect("reaches the server");
        let status = response.status();
        (status, response.json::<Value>().await.expect("JSON"))
    };
    assert_eq!(upload().await.0, StatusCode::OK);
    assert_limited(&upload().await);
}

/// A failed login for a user that does not exist, from `forwarded_for`.
async fn login_from(server: &TestServer, forwarded_for: &str) -> StatusCode {
    server
        .client
        .post(server.v3("/login"))
        .header("X-Forwarded-For", forwarded_for)
        .json(&json!({
            "type": "m.login.password",
            "identifier": { "type": "m.id.user", "user": "nobody" },
            "password": "guess",
        }))
        .send()
        .await
        .expect("reaches the server")
        .status()
}

async fn forwarded_for_counts_only_from_a_trusted_proxy(backend: Backend) {
    let postgres = match &backend {
        Backend::Postgres(_) => Some(backend.clone()),
        Backend::Sqlite => None,
    };
    // Not a proxy: the header is the client's own word, and ignored.
    let server = start(backend, |config| config.rate_limits.login = ONCE).await;
    assert_eq!(login_from(&server, "10.0.0.1").await, StatusCode::FORBIDDEN);
    assert_eq!(
        login_from(&server, "10.0.0.2").await,
        StatusCode::TOO_MANY_REQUESTS
    );
    drop(server);

    // Behind a trusted proxy each forwarded client has its own budget, and
    // what a client prepends to the header changes nothing.
    let backend = postgres.unwrap_or(Backend::Sqlite);
    let server = start(backend, |config| {
        config.rate_limits.login = ONCE;
        config.rate_limits.trusted_proxies = vec!["127.0.0.0/8".parse().expect("range")];
    })
    .await;
    assert_eq!(login_from(&server, "10.0.0.1").await, StatusCode::FORBIDDEN);
    assert_eq!(login_from(&server, "10.0.0.2").await, StatusCode::FORBIDDEN);
    assert_eq!(
        login_from(&server, "192.0.2.9, 10.0.0.1").await,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(
        login_from(&server, "not an address").await,
        StatusCode::FORBIDDEN
    );
}

async fn public_room_listings_are_rate_limited_per_address(backend: Backend) {
    let server = start(backend, |config| config.rate_limits.public_rooms = ONCE).await;
    let list = || server.request(Method::GET, server.v3("/publicRooms"), None, None);
    assert_eq!(list().await.0, StatusCode::OK);
    assert_limited(&list().await);
}
