//! `POST /account/deactivate` (client-server-api, "Account deactivation"):
//! the password first, then the account is closed for good — no tokens,
//! devices or keys, no login, no reuse of the id — and it leaves its rooms.

use myelin_tests::{Backend, PASSWORD, TestServer, assert_error, backend_tests};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::{
    keys_support::{Device, keys_call},
    rooms_support::{create_room, invite, join, state_content},
};

backend_tests!(
    deactivation_needs_the_password_and_closes_the_account_for_good,
    a_deactivated_user_leaves_every_room_and_loses_its_keys,
    erasing_clears_the_profile,
    another_users_password_cannot_deactivate,
);

fn password_auth(user: &str, password: &str, session: &str) -> Value {
    json!({
        "type": "m.login.password",
        "identifier": { "type": "m.id.user", "user": user },
        "password": password,
        "session": session,
    })
}

async fn deactivate_request(server: &TestServer, token: &str, body: Value) -> (StatusCode, Value) {
    let url = server.v3("/account/deactivate");
    server
        .request(Method::POST, url, Some(token), Some(body))
        .await
}

/// Runs both UIA rounds with `user`'s password; returns the final answer.
async fn deactivate_as(
    server: &TestServer,
    token: &str,
    user: &str,
    password: &str,
    erase: bool,
) -> (StatusCode, Value) {
    let (status, challenge) = deactivate_request(server, token, json!({ "erase": erase })).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{challenge}");
    assert_eq!(
        challenge["flows"],
        json!([{ "stages": ["m.login.password"] }])
    );
    let session = challenge["session"].as_str().expect("UIA session");
    let auth = password_auth(user, password, session);
    deactivate_request(server, token, json!({ "erase": erase, "auth": auth })).await
}

async fn deactivate(server: &TestServer, token: &str, user: &str, erase: bool) {
    let answer = deactivate_as(server, token, user, PASSWORD, erase).await;
    assert_eq!(
        answer,
        (
            StatusCode::OK,
            json!({ "id_server_unbind_result": "no-support" })
        )
    );
}

async fn login(server: &TestServer, user: &str, password: &str) -> (StatusCode, Value) {
    let body = json!({ "type": "m.login.password", "user": user, "password": password });
    server
        .request(Method::POST, server.v3("/login"), None, Some(body))
        .await
}

async fn deactivation_needs_the_password_and_closes_the_account_for_good(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let second = server.login("alice", None).await;

    let wrong = deactivate_as(&server, &alice.token, "alice", "not the password", false).await;
    assert_eq!(wrong.0, StatusCode::UNAUTHORIZED, "{}", wrong.1);
    assert_eq!(server.whoami(&alice.token).await.0, StatusCode::OK);

    deactivate(&server, &alice.token, "alice", false).await;
    for token in [&alice.token, &second.token] {
        assert_error(
            &server.whoami(token).await,
            StatusCode::UNAUTHORIZED,
            "M_UNKNOWN_TOKEN",
        );
    }
    let answer = login(&server, "alice", PASSWORD).await;
    assert_error(&answer, StatusCode::FORBIDDEN, "M_USER_DEACTIVATED");
    // A wrong password learns nothing about the account.
    let answer = login(&server, "alice", "not the password").await;
    assert_error(&answer, StatusCode::FORBIDDEN, "M_FORBIDDEN");

    let body =
        json!({ "username": "alice", "password": PASSWORD, "auth": { "type": "m.login.dummy" } });
    let answer = server
        .request(Method::POST, server.v3("/register"), None, Some(body))
        .await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "M_USER_IN_USE");
}

async fn a_deactivated_user_leaves_every_room_and_loses_its_keys(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    Device::new(&alice).publish(&server).await;

    let joined = create_room(&server, &bob.token, json!({})).await;
    invite(&server, &bob.token, &joined, &alice.user_id).await;
    join(&server, &alice.token, &joined).await;
    let invited = create_room(&server, &bob.token, json!({})).await;
    invite(&server, &bob.token, &invited, &alice.user_id).await;

    deactivate(&server, &alice.token, "alice", false).await;
    for room in [&joined, &invited] {
        let member =
            state_content(&server, &bob.token, room, "m.room.member", &alice.user_id).await;
        assert_eq!(
            member["membership"], "leave",
            "alice's membership of {room}"
        );
    }
    let query = json!({ "device_keys": { &alice.user_id: [] } });
    let (status, answer) = keys_call(&server, &bob.token, "/query", query).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["device_keys"][&alice.user_id], json!({}), "{answer}");
}

async fn erasing_clears_the_profile(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let url = server.v3(&format!("/profile/{}/displayname", alice.user_id));
    let body = json!({ "displayname": "Alice Liddell" });
    let answer = server
        .request(Method::PUT, url, Some(&alice.token), Some(body))
        .await;
    assert_eq!(answer.0, StatusCode::OK, "{}", answer.1);

    deactivate(&server, &alice.token, "alice", true).await;
    let url = server.v3(&format!("/profile/{}", alice.user_id));
    let (status, profile) = server
        .request(Method::GET, url, Some(&bob.token), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{profile}");
    assert_eq!(profile.get("displayname"), None, "{profile}");
}

async fn another_users_password_cannot_deactivate(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    server.register("mallory").await;
    let answer = deactivate_as(&server, &alice.token, "mallory", PASSWORD, false).await;
    assert_error(&answer, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    assert_eq!(server.whoami(&alice.token).await.0, StatusCode::OK);
}
