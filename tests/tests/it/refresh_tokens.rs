//! Refresh tokens (spec: `refresh_token` at login and registration,
//! `POST /refresh`): access tokens that expire, replaced without the
//! password, and refresh tokens that cannot be spent twice.

use std::time::Duration;

use myelin_tests::{Backend, PASSWORD, TestServer, assert_error, backend_tests};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

backend_tests!(
    clients_that_do_not_ask_get_tokens_that_do_not_expire,
    an_expired_access_token_is_a_soft_logout_and_refreshes,
    a_spent_refresh_token_dies_once_its_successor_is_used,
    logging_out_revokes_the_refresh_token,
);

/// Long enough for the requests right after a login to use the token, and
/// short enough to wait out.
const LIFETIME: Duration = Duration::from_millis(1500);

async fn server(backend: Backend) -> TestServer {
    TestServer::start_with(backend, |config| {
        config.refreshable_access_token_lifetime_ms = LIFETIME.as_millis() as u64;
    })
    .await
}

async fn login(server: &TestServer, user: &str, refresh: bool) -> Value {
    let (status, answer) = server
        .request(
            Method::POST,
            server.v3("/login"),
            None,
            Some(json!({
                "type": "m.login.password",
                "identifier": { "type": "m.id.user", "user": user },
                "password": PASSWORD,
                "refresh_token": refresh,
            })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    answer
}

async fn refresh(server: &TestServer, refresh_token: &str) -> (StatusCode, Value) {
    server
        .request(
            Method::POST,
            server.v3("/refresh"),
            None,
            Some(json!({ "refresh_token": refresh_token })),
        )
        .await
}

fn token<'a>(answer: &'a Value, key: &str) -> &'a str {
    answer[key]
        .as_str()
        .unwrap_or_else(|| panic!("no {key} in {answer}"))
}

async fn clients_that_do_not_ask_get_tokens_that_do_not_expire(backend: Backend) {
    let server = server(backend).await;
    server.register("alice").await;
    let answer = login(&server, "alice", false).await;
    assert!(answer.get("refresh_token").is_none(), "{answer}");
    assert!(answer.get("expires_in_ms").is_none(), "{answer}");
    tokio::time::sleep(LIFETIME).await;
    let (status, _) = server.whoami(token(&answer, "access_token")).await;
    assert_eq!(status, StatusCode::OK);
}

async fn an_expired_access_token_is_a_soft_logout_and_refreshes(backend: Backend) {
    let server = server(backend).await;
    server.register("alice").await;
    let answer = login(&server, "alice", true).await;
    assert_eq!(answer["expires_in_ms"], LIFETIME.as_millis() as u64);
    let access = token(&answer, "access_token");
    assert_eq!(server.whoami(access).await.0, StatusCode::OK);

    // The passage of time is what is tested: wait out the lifetime.
    tokio::time::sleep(LIFETIME).await;
    let expired = server.whoami(access).await;
    assert_error(&expired, StatusCode::UNAUTHORIZED, "M_UNKNOWN_TOKEN");
    assert_eq!(expired.1["soft_logout"], true, "{}", expired.1);

    let (status, refreshed) = refresh(&server, token(&answer, "refresh_token")).await;
    assert_eq!(status, StatusCode::OK, "{refreshed}");
    assert_eq!(refreshed["expires_in_ms"], LIFETIME.as_millis() as u64);
    let (status, me) = server.whoami(token(&refreshed, "access_token")).await;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(me["device_id"], answer["device_id"], "same device");
}

async fn a_spent_refresh_token_dies_once_its_successor_is_used(backend: Backend) {
    let server = server(backend).await;
    server.register("alice").await;
    let answer = login(&server, "alice", true).await;
    let first = token(&answer, "refresh_token");

    // Until the new tokens are used, the spent one may be tried again (the
    // answer to the first try could have been lost).
    let (status, lost) = refresh(&server, first).await;
    assert_eq!(status, StatusCode::OK, "{lost}");
    let (status, retried) = refresh(&server, first).await;
    assert_eq!(status, StatusCode::OK, "{retried}");

    assert_eq!(
        server.whoami(token(&retried, "access_token")).await.0,
        StatusCode::OK
    );
    // The retry replaced the lost pair: a device holds one pair at a time.
    let replaced = server.whoami(token(&lost, "access_token")).await;
    assert_error(&replaced, StatusCode::UNAUTHORIZED, "M_UNKNOWN_TOKEN");
    let replaced = refresh(&server, token(&lost, "refresh_token")).await;
    assert_error(&replaced, StatusCode::UNAUTHORIZED, "M_UNKNOWN_TOKEN");
    let spent = refresh(&server, first).await;
    assert_error(&spent, StatusCode::UNAUTHORIZED, "M_UNKNOWN_TOKEN");
    assert_eq!(spent.1["soft_logout"], false);

    // Spending the successor also retires its predecessor.
    let (status, second) = refresh(&server, token(&retried, "refresh_token")).await;
    assert_eq!(status, StatusCode::OK, "{second}");
    let garbage = refresh(&server, "myl_not-a-refresh-token").await;
    assert_error(&garbage, StatusCode::UNAUTHORIZED, "M_UNKNOWN_TOKEN");
    // An access token is not a refresh token.
    let wrong_kind = refresh(&server, token(&second, "access_token")).await;
    assert_error(&wrong_kind, StatusCode::UNAUTHORIZED, "M_UNKNOWN_TOKEN");
}

async fn logging_out_revokes_the_refresh_token(backend: Backend) {
    let server = server(backend).await;
    server.register("alice").await;
    let answer = login(&server, "alice", true).await;
    let (status, _) = server
        .request(
            Method::POST,
            server.v3("/logout"),
            Some(token(&answer, "access_token")),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let revoked = refresh(&server, token(&answer, "refresh_token")).await;
    assert_error(&revoked, StatusCode::UNAUTHORIZED, "M_UNKNOWN_TOKEN");
}
