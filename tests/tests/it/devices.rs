//! Device listing, renaming and deletion with user-interactive auth.

use myelin_tests::{Account, Backend, PASSWORD, TestServer, assert_error, backend_tests};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

backend_tests!(
    list_get_and_rename_devices,
    deleting_a_device_needs_the_password,
    deleting_a_device_with_someone_elses_password_fails,
    delete_devices_in_bulk,
    a_rename_shows_in_room_mates_device_list_changes,
);

fn password_auth(user: &str, password: &str, session: &Value) -> Value {
    json!({
        "type": "m.login.password",
        "identifier": { "type": "m.id.user", "user": user },
        "password": password,
        "session": session,
    })
}

async fn list_get_and_rename_devices(backend: Backend) {
    let server = TestServer::start(backend).await;
    let phone = server.register("alice").await;
    let laptop = server.login("alice", None).await;
    let (status, devices) = server
        .request(Method::GET, server.v3("/devices"), Some(&phone.token), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let mut ids: Vec<&str> = devices["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["device_id"].as_str().unwrap())
        .collect();
    ids.sort_unstable();
    let mut expected = vec![phone.device_id.as_str(), laptop.device_id.as_str()];
    expected.sort_unstable();
    assert_eq!(ids, expected);

    let url = server.v3(&format!("/devices/{}", laptop.device_id));
    let (status, answer) = server
        .request(
            Method::PUT,
            &url,
            Some(&phone.token),
            Some(json!({ "display_name": "Work laptop" })),
        )
        .await;
    assert_eq!((status, answer), (StatusCode::OK, json!({})));
    let (status, device) = server
        .request(Method::GET, &url, Some(&phone.token), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        device,
        json!({ "device_id": laptop.device_id, "display_name": "Work laptop" })
    );

    let missing = server.v3("/devices/NOSUCHDEVICE");
    assert_error(
        &server
            .request(Method::GET, &missing, Some(&phone.token), None)
            .await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
    assert_error(
        &server
            .request(
                Method::PUT,
                &missing,
                Some(&phone.token),
                Some(json!({ "display_name": "x" })),
            )
            .await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
    // Another user's device is not found either, rather than exposed.
    let bob = server.register("bob").await;
    assert_error(
        &server
            .request(Method::GET, &url, Some(&bob.token), None)
            .await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
    let too_long = json!({ "display_name": "x".repeat(300) });
    assert_error(
        &server
            .request(Method::PUT, &url, Some(&phone.token), Some(too_long))
            .await,
        StatusCode::BAD_REQUEST,
        "M_INVALID_PARAM",
    );
}

async fn deleting_a_device_needs_the_password(backend: Backend) {
    let server = TestServer::start(backend).await;
    let phone = server.register("alice").await;
    let laptop = server.login("alice", None).await;
    let url = server.v3(&format!("/devices/{}", laptop.device_id));

    // No body at all: the server answers with the flows.
    let (status, challenge) = server
        .request(Method::DELETE, &url, Some(&phone.token), None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        challenge["flows"],
        json!([{ "stages": ["m.login.password"] }])
    );
    let session = &challenge["session"];

    let wrong = json!({ "auth": password_auth("alice", "not my password", session) });
    let answer = server
        .request(Method::DELETE, &url, Some(&phone.token), Some(wrong))
        .await;
    assert_eq!(answer.0, StatusCode::UNAUTHORIZED);
    assert_eq!(answer.1["errcode"], "M_FORBIDDEN");
    assert_eq!(
        server.whoami(&laptop.token).await.0,
        StatusCode::OK,
        "nothing deleted yet"
    );

    let right = json!({ "auth": password_auth("alice", PASSWORD, session) });
    let (status, answer) = server
        .request(Method::DELETE, &url, Some(&phone.token), Some(right))
        .await;
    assert_eq!((status, answer), (StatusCode::OK, json!({})));
    assert_error(
        &server.whoami(&laptop.token).await,
        StatusCode::UNAUTHORIZED,
        "M_UNKNOWN_TOKEN",
    );
    assert_eq!(server.whoami(&phone.token).await.0, StatusCode::OK);
}

async fn deleting_a_device_with_someone_elses_password_fails(backend: Backend) {
    let server = TestServer::start(backend).await;
    // The thief holds Alice's token and knows only their own password.
    let alice = server.register("alice").await;
    let alice_laptop = server.login("alice", None).await;
    server.register("mallory").await;
    let url = server.v3(&format!("/devices/{}", alice_laptop.device_id));
    let (_, challenge) = server
        .request(Method::DELETE, &url, Some(&alice.token), None)
        .await;
    let auth = json!({ "auth": password_auth("mallory", PASSWORD, &challenge["session"]) });
    let answer = server
        .request(Method::DELETE, &url, Some(&alice.token), Some(auth))
        .await;
    // The spec: a stage naming another user is 403, not another challenge.
    assert_error(&answer, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    assert_eq!(server.whoami(&alice_laptop.token).await.0, StatusCode::OK);
}

async fn delete_devices_in_bulk(backend: Backend) {
    let server = TestServer::start(backend).await;
    let keeper = server.register("alice").await;
    let others: Vec<Account> = vec![
        server.login("alice", None).await,
        server.login("alice", None).await,
    ];
    let ids: Vec<&str> = others.iter().map(|a| a.device_id.as_str()).collect();
    // Used once, so the server has them cached: the deletion must evict them.
    for account in &others {
        assert_eq!(server.whoami(&account.token).await.0, StatusCode::OK);
    }
    let url = server.v3("/delete_devices");
    let (status, challenge) = server
        .request(
            Method::POST,
            &url,
            Some(&keeper.token),
            Some(json!({ "devices": ids })),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let body = json!({ "devices": ids, "auth": password_auth("@alice:localhost", PASSWORD, &challenge["session"]) });
    let (status, answer) = server
        .request(Method::POST, &url, Some(&keeper.token), Some(body))
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    for account in &others {
        assert_error(
            &server.whoami(&account.token).await,
            StatusCode::UNAUTHORIZED,
            "M_UNKNOWN_TOKEN",
        );
    }
    let (_, devices) = server
        .request(
            Method::GET,
            server.v3("/devices"),
            Some(&keeper.token),
            None,
        )
        .await;
    assert_eq!(devices["devices"].as_array().map(Vec::len), Some(1));
}

async fn a_rename_shows_in_room_mates_device_list_changes(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = crate::rooms_support::create_room(&server, &alice.token, json!({})).await;
    crate::rooms_support::invite(&server, &alice.token, &room, &bob.user_id).await;
    crate::rooms_support::join(&server, &bob.token, &room).await;
    let since = crate::sync_support::next_batch(
        &crate::sync_support::initial_sync(&server, &bob.token, 1).await,
    );

    let url = server.v3(&format!("/devices/{}", alice.device_id));
    let body = json!({ "display_name": "Alice's phone" });
    let answer = server
        .request(Method::PUT, url, Some(&alice.token), Some(body))
        .await;
    assert_eq!(answer.0, StatusCode::OK, "{}", answer.1);
    let answer = crate::sync_support::sync_since(&server, &bob.token, &since).await;
    let changed = answer["device_lists"]["changed"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(changed.contains(&json!(alice.user_id)), "{answer}");
}
