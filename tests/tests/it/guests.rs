//! Guest access (client-server-api, "Guest Access"): off unless the
//! operator allows it; a guest registers without credentials, may use the
//! endpoints the spec lists and no others, joins only rooms whose
//! `m.room.guest_access` is `can_join`, sends only messages, and can be
//! upgraded to a full account that keeps its user id.

use myelin_tests::{Backend, TestServer, assert_error, backend_tests};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::{
    rooms_support::{create_room, put_state, room_url},
    sync_support::initial_sync,
};

backend_tests!(
    guests_are_refused_unless_allowed,
    a_guest_uses_the_guest_endpoints_and_nothing_else,
    a_guest_joins_only_rooms_that_let_guests_in,
    a_guest_becomes_a_full_account_keeping_its_id,
);

async fn start_allowing_guests(backend: Backend) -> TestServer {
    TestServer::start_with(backend, |config| config.registration.guests = true).await
}

async fn register_guest(server: &TestServer) -> (StatusCode, Value) {
    let url = format!("{}?kind=guest", server.v3("/register"));
    server
        .request(Method::POST, url, None, Some(json!({})))
        .await
}

/// A guest's user id and access token.
async fn guest(server: &TestServer) -> (String, String) {
    let (status, answer) = register_guest(server).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let field = |name: &str| {
        answer[name]
            .as_str()
            .unwrap_or_else(|| panic!("{name}"))
            .to_owned()
    };
    (field("user_id"), field("access_token"))
}

async fn guests_are_refused_unless_allowed(backend: Backend) {
    let server = TestServer::start(backend).await;
    let answer = register_guest(&server).await;
    assert_error(&answer, StatusCode::FORBIDDEN, "M_GUEST_ACCESS_FORBIDDEN");
}

async fn a_guest_uses_the_guest_endpoints_and_nothing_else(backend: Backend) {
    let server = start_allowing_guests(backend).await;
    let (user_id, token) = guest(&server).await;
    let (status, whoami) = server.whoami(&token).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(whoami["user_id"], user_id.as_str());
    assert_eq!(whoami["is_guest"], true);
    initial_sync(&server, &token, 1).await;

    let refused = [
        (Method::POST, server.v3("/createRoom"), Some(json!({}))),
        (Method::GET, server.v3("/devices"), None),
        (
            Method::POST,
            server.v3("/keys/device_signing/upload"),
            Some(json!({})),
        ),
        (Method::GET, server.v3("/room_keys/version"), None),
        (
            Method::POST,
            server.v3("/user_directory/search"),
            Some(json!({ "search_term": "a" })),
        ),
    ];
    for (method, url, body) in refused {
        let answer = server
            .request(method.clone(), url.clone(), Some(&token), body)
            .await;
        assert_error(&answer, StatusCode::FORBIDDEN, "M_GUEST_ACCESS_FORBIDDEN");
    }
}

async fn a_guest_joins_only_rooms_that_let_guests_in(backend: Backend) {
    let server = start_allowing_guests(backend).await;
    let alice = server.register("alice").await;
    let (_, token) = guest(&server).await;
    // public_chat forbids guests.
    let closed = create_room(&server, &alice.token, json!({ "preset": "public_chat" })).await;
    let open = create_room(&server, &alice.token, json!({ "preset": "public_chat" })).await;
    let answer = put_state(
        &server,
        &alice.token,
        &open,
        "m.room.guest_access",
        "",
        json!({ "guest_access": "can_join" }),
    )
    .await;
    assert_eq!(answer.0, StatusCode::OK);

    let join = |room: String| {
        let url = room_url(&server, &room, "/join");
        let token = token.clone();
        let server = &server;
        async move {
            server
                .request(Method::POST, url, Some(&token), Some(json!({})))
                .await
        }
    };
    let answer = join(closed.clone()).await;
    assert_error(&answer, StatusCode::FORBIDDEN, "M_GUEST_ACCESS_FORBIDDEN");
    let answer = join(open.clone()).await;
    assert_eq!(answer.0, StatusCode::OK, "{}", answer.1);

    let send = |event_type: &str| {
        let url = room_url(
            &server,
            &open,
            &format!("/send/{event_type}/t-{event_type}"),
        );
        server.request(
            Method::PUT,
            url,
            Some(&token),
            Some(json!({ "msgtype": "m.text", "body": "hi" })),
        )
    };
    let answer = send("m.room.message").await;
    assert_eq!(answer.0, StatusCode::OK, "{}", answer.1);
    let answer = send("m.reaction").await;
    assert_error(&answer, StatusCode::FORBIDDEN, "M_GUEST_ACCESS_FORBIDDEN");
}

async fn a_guest_becomes_a_full_account_keeping_its_id(backend: Backend) {
    let server = start_allowing_guests(backend).await;
    let (user_id, token) = guest(&server).await;
    let body = json!({
        "guest_access_token": token,
        "password": myelin_tests::PASSWORD,
        "auth": { "type": "m.login.dummy" },
    });
    let (status, answer) = server
        .request(Method::POST, server.v3("/register"), None, Some(body))
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["user_id"], user_id.as_str());
    let upgraded = answer["access_token"]
        .as_str()
        .expect("access_token")
        .to_owned();
    let (_, whoami) = server.whoami(&upgraded).await;
    assert_eq!(whoami["is_guest"], false);
    let answer = server
        .request(Method::GET, server.v3("/devices"), Some(&upgraded), None)
        .await;
    assert_eq!(
        answer.0,
        StatusCode::OK,
        "a full account is not limited: {}",
        answer.1
    );
    // The guest's token does not upgrade twice.
    let body = json!({ "guest_access_token": token, "password": myelin_tests::PASSWORD, "auth": { "type": "m.login.dummy" } });
    let (status, _) = server
        .request(Method::POST, server.v3("/register"), None, Some(body))
        .await;
    assert_ne!(status, StatusCode::OK);
}
