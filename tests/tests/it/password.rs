//! Changing the password.

use myelin_tests::{Backend, PASSWORD, TestServer, assert_error, backend_tests};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

backend_tests!(
    change_password_logs_out_other_devices,
    change_password_can_keep_devices,
    change_password_refuses_weak_and_wrong
);

const NEW_PASSWORD: &str = "a much better passphrase";

async fn change(server: &TestServer, token: &str, body: Value) -> (StatusCode, Value) {
    server
        .request(
            Method::POST,
            server.v3("/account/password"),
            Some(token),
            Some(body),
        )
        .await
}

fn auth(password: &str) -> Value {
    json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "alice" }, "password": password })
}

async fn login_status(server: &TestServer, password: &str) -> StatusCode {
    let body = json!({ "type": "m.login.password", "user": "alice", "password": password });
    server
        .request(Method::POST, server.v3("/login"), None, Some(body))
        .await
        .0
}

async fn change_password_logs_out_other_devices(backend: Backend) {
    let server = TestServer::start(backend).await;
    let current = server.register("alice").await;
    let other = server.login("alice", None).await;
    let (status, challenge) = change(
        &server,
        &current.token,
        json!({ "new_password": NEW_PASSWORD }),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        challenge["flows"],
        json!([{ "stages": ["m.login.password"] }])
    );

    let (status, answer) = change(
        &server,
        &current.token,
        json!({ "new_password": NEW_PASSWORD, "auth": auth(PASSWORD) }),
    )
    .await;
    assert_eq!((status, answer), (StatusCode::OK, json!({})));
    assert_eq!(
        server.whoami(&current.token).await.0,
        StatusCode::OK,
        "the caller stays logged in"
    );
    assert_error(
        &server.whoami(&other.token).await,
        StatusCode::UNAUTHORIZED,
        "M_UNKNOWN_TOKEN",
    );
    assert_eq!(login_status(&server, PASSWORD).await, StatusCode::FORBIDDEN);
    assert_eq!(login_status(&server, NEW_PASSWORD).await, StatusCode::OK);
}

async fn change_password_can_keep_devices(backend: Backend) {
    let server = TestServer::start(backend).await;
    let current = server.register("alice").await;
    let other = server.login("alice", None).await;
    let body =
        json!({ "new_password": NEW_PASSWORD, "logout_devices": false, "auth": auth(PASSWORD) });
    assert_eq!(
        change(&server, &current.token, body).await.0,
        StatusCode::OK
    );
    assert_eq!(server.whoami(&other.token).await.0, StatusCode::OK);
}

async fn change_password_refuses_weak_and_wrong(backend: Backend) {
    let server = TestServer::start(backend).await;
    let current = server.register("alice").await;
    let weak = change(
        &server,
        &current.token,
        json!({ "new_password": "abc", "auth": auth(PASSWORD) }),
    )
    .await;
    assert_error(&weak, StatusCode::BAD_REQUEST, "M_WEAK_PASSWORD");
    let wrong = change(
        &server,
        &current.token,
        json!({ "new_password": NEW_PASSWORD, "auth": auth("guess me") }),
    )
    .await;
    assert_eq!(wrong.0, StatusCode::UNAUTHORIZED);
    assert_eq!(wrong.1["errcode"], "M_FORBIDDEN");
    assert_eq!(
        login_status(&server, PASSWORD).await,
        StatusCode::OK,
        "the password is unchanged"
    );
}
