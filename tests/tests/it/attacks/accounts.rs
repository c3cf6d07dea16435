//! Accounts under attack: user-interactive auth sessions that would fill
//! memory, a flood of password checks, and wrong passwords that would lock
//! the owner out of their own account.

use myelin_tests::{Account, Backend, PASSWORD, TestServer, assert_error, backend_tests, join_all};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

backend_tests!(
    uia_sessions_are_capped_per_user,
    uia_sessions_are_capped_in_total,
    the_password_hashing_queue_is_bounded,
    wrong_passwords_do_not_lock_the_owner_out,
);

/// `POST /delete_devices` without auth: starts a UIA session.
async fn start_delete(server: &TestServer, account: &Account, device: &str) -> (StatusCode, Value) {
    server
        .request(
            Method::POST,
            server.v3("/delete_devices"),
            Some(&account.token),
            Some(json!({ "devices": [device] })),
        )
        .await
}

#[track_caller]
fn assert_challenge(answer: &(StatusCode, Value)) {
    assert_eq!(answer.0, StatusCode::UNAUTHORIZED, "{}", answer.1);
    assert!(answer.1["session"].is_string(), "{}", answer.1);
}

async fn uia_sessions_are_capped_per_user(backend: Backend) {
    let server = TestServer::start_with(backend, |config| {
        config.limits.uia_sessions_per_user = 2;
    })
    .await;
    let mallory = server.register("mallory").await;
    let alice = server.register("alice").await;
    assert_challenge(&start_delete(&server, &mallory, "A").await);
    assert_challenge(&start_delete(&server, &mallory, "B").await);
    assert_error(
        &start_delete(&server, &mallory, "C").await,
        StatusCode::TOO_MANY_REQUESTS,
        "M_LIMIT_EXCEEDED",
    );
    // Others are not held back by mallory's sessions.
    assert_challenge(&start_delete(&server, &alice, "A").await);
}

async fn uia_sessions_are_capped_in_total(backend: Backend) {
    let server = TestServer::start_with(backend, |config| config.limits.uia_sessions = 4).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    // Registration, which needs no account, may hold half of the sessions.
    let register = || server.request(Method::POST, server.v3("/register"), None, Some(json!({})));
    assert_challenge(&register().await);
    assert_challenge(&register().await);
    assert_error(
        &register().await,
        StatusCode::TOO_MANY_REQUESTS,
        "M_LIMIT_EXCEEDED",
    );
    // Signed-in users keep the other half.
    assert_challenge(&start_delete(&server, &alice, "A").await);
    assert_challenge(&start_delete(&server, &bob, "A").await);
    assert_error(
        &start_delete(&server, &carol, "A").await,
        StatusCode::TOO_MANY_REQUESTS,
        "M_LIMIT_EXCEEDED",
    );
}

async fn the_password_hashing_queue_is_bounded(backend: Backend) {
    let server =
        TestServer::start_with(backend, |config| config.limits.password_hash_queue = 1).await;
    server.register("alice").await;
    let login = || {
        server.request(
            Method::POST,
            server.v3("/login"),
            None,
            Some(json!({
                "type": "m.login.password",
                "identifier": { "type": "m.id.user", "user": "alice" },
                "password": "wrong password",
            })),
        )
    };
    let answers = join_all((0..16).map(|_| login())).await;
    let refused: Vec<_> = answers
        .iter()
        .filter(|answer| answer.0 == StatusCode::TOO_MANY_REQUESTS)
        .collect();
    assert!(
        !refused.is_empty(),
        "16 hashes at once with room for one: {answers:?}"
    );
    for answer in &refused {
        assert_error(answer, StatusCode::TOO_MANY_REQUESTS, "M_LIMIT_EXCEEDED");
    }
    // Those that were queued were checked, and failed as wrong passwords.
    assert!(
        answers
            .iter()
            .any(|answer| answer.0 == StatusCode::FORBIDDEN),
        "{answers:?}"
    );
}

async fn wrong_passwords_do_not_lock_the_owner_out(backend: Backend) {
    let server = TestServer::start_with(backend, |config| {
        config.rate_limits.enabled = true;
        config.rate_limits.login.burst = 3;
        config.rate_limits.login.per_second = 0.001;
    })
    .await;
    server.register("alice").await;
    // Mallory guesses from another address of the loopback network.
    let mallory = reqwest::Client::builder()
        .local_address("127.0.0.2".parse::<std::net::IpAddr>().expect("address"))
        .build()
        .expect("client");
    let guess = || async {
        let response = mallory
            .post(server.v3("/login"))
            .json(&json!({
                "type": "m.login.password",
                "identifier": { "type": "m.id.user", "user": "alice" },
                "password": "guess",
            }))
            .send()
            .await
            .expect("reaches the server");
        let status = response.status();
        (status, response.json::<Value>().await.expect("JSON"))
    };
    for _ in 0..3 {
        assert_error(&guess().await, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    }
    assert_error(
        &guess().await,
        StatusCode::TOO_MANY_REQUESTS,
        "M_LIMIT_EXCEEDED",
    );
    // Alice, from her own address, logs in: only failures count against an
    // account, and mallory's count against mallory's address.
    for _ in 0..3 {
        let (status, answer) = server
            .request(
                Method::POST,
                server.v3("/login"),
                None,
                Some(json!({
                    "type": "m.login.password",
                    "identifier": { "type": "m.id.user", "user": "alice" },
                    "password": PASSWORD,
                })),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{answer}");
    }
}
