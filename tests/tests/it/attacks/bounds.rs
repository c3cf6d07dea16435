//! Per-account stores a client fills at will: each has a cap, and a request
//! past it gets a Matrix error while nothing of it is kept.

use myelin_tests::{Backend, TestServer, assert_error, backend_tests};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::rooms_support::{create_room, enc, joined_rooms, room_url, send_text, try_create_room};

backend_tests!(
    keys_query_is_capped_in_users,
    a_filter_is_capped_in_size,
    filters_are_capped_per_user,
    backup_versions_are_capped_per_user,
    push_rules_are_capped_in_size,
    receipt_threads_must_be_events_of_the_room,
    typing_is_rate_limited,
    media_is_capped_per_user,
    pending_media_ids_are_capped_per_user,
    key_changes_from_an_ancient_token_do_bounded_work,
    keys_claim_is_capped_in_keys,
    account_data_entries_are_capped_per_user,
    create_room_is_capped_in_initial_events,
);

async fn keys_query_is_capped_in_users(backend: Backend) {
    let server = TestServer::start_with(backend, |config| config.limits.keys_query_users = 2).await;
    let alice = server.register("alice").await;
    let query = |users: &[&str]| {
        let wanted: serde_json::Map<String, Value> = users
            .iter()
            .map(|user| (server.user_id(user), json!([])))
            .collect();
        server.request(
            Method::POST,
            server.v3("/keys/query"),
            Some(&alice.token),
            Some(json!({ "device_keys": wanted })),
        )
    };
    assert_eq!(query(&["alice", "bob"]).await.0, StatusCode::OK);
    assert_error(
        &query(&["alice", "bob", "carol"]).await,
        StatusCode::BAD_REQUEST,
        "M_INVALID_PARAM",
    );
}

async fn create_filter(
    server: &TestServer,
    user_id: &str,
    token: &str,
    filter: Value,
) -> (StatusCode, Value) {
    server
        .request(
            Method::POST,
            server.v3(&format!("/user/{user_id}/filter")),
            Some(token),
            Some(filter),
        )
        .await
}

async fn a_filter_is_capped_in_size(backend: Backend) {
    let server = TestServer::start_with(backend, |config| config.limits.filter_bytes = 1024).await;
    let alice = server.register("alice").await;
    let senders: Vec<String> = (0..100).map(|n| format!("@user{n}:localhost")).collect();
    let big = json!({ "room": { "timeline": { "senders": senders } } });
    assert!(big.to_string().len() > 1024);
    assert_error(
        &create_filter(&server, &alice.user_id, &alice.token, big).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "M_TOO_LARGE",
    );
}

async fn filters_are_capped_per_user(backend: Backend) {
    let server = TestServer::start_with(backend, |config| config.limits.filters_per_user = 2).await;
    let alice = server.register("alice").await;
    let filter = |limit: u32| json!({ "room": { "timeline": { "limit": limit } } });
    let first = create_filter(&server, &alice.user_id, &alice.token, filter(1)).await;
    assert_eq!(first.0, StatusCode::OK, "{}", first.1);
    assert_eq!(
        create_filter(&server, &alice.user_id, &alice.token, filter(2))
            .await
            .0,
        StatusCode::OK
    );
    // The same filter again is the one stored, not a new one.
    assert_eq!(
        create_filter(&server, &alice.user_id, &alice.token, filter(1)).await,
        first
    );
    assert_error(
        &create_filter(&server, &alice.user_id, &alice.token, filter(3)).await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
}

async fn backup_versions_are_capped_per_user(backend: Backend) {
    let server =
        TestServer::start_with(backend, |config| config.limits.backup_versions_per_user = 2).await;
    let alice = server.register("alice").await;
    let create = || {
        server.request(
            Method::POST,
            server.v3("/room_keys/version"),
            Some(&alice.token),
            Some(json!({
                "algorithm": "m.megolm_backup.v1.curve25519-aes-sha2",
                "auth_data": { "public_key": "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo" },
            })),
        )
    };
    assert_eq!(create().await.0, StatusCode::OK);
    let second = create().await;
    assert_eq!(second.0, StatusCode::OK);
    // Deleting a version keeps its number taken, so it does not free a place.
    let version = second.1["version"].as_str().expect("version").to_owned();
    let deleted = server
        .request(
            Method::DELETE,
            server.v3(&format!("/room_keys/version/{version}")),
            Some(&alice.token),
            None,
        )
        .await;
    assert_eq!(deleted.0, StatusCode::OK, "{}", deleted.1);
    assert_error(&create().await, StatusCode::FORBIDDEN, "M_FORBIDDEN");
}

async fn push_rules_are_capped_in_size(backend: Backend) {
    let server =
        TestServer::start_with(backend, |config| config.limits.push_rules_bytes = 64 * 1024).await;
    let alice = server.register("alice").await;
    let put = |rule: &str, pattern: String| {
        server.request(
            Method::PUT,
            server.v3(&format!("/pushrules/global/content/{rule}")),
            Some(&alice.token),
            Some(json!({ "pattern": pattern, "actions": ["notify"] })),
        )
    };
    assert_eq!(
        put("small", "cake".to_owned()).await,
        (StatusCode::OK, json!({}))
    );
    assert_error(
        &put("big", "x".repeat(64 * 1024)).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "M_TOO_LARGE",
    );
    // The refused rule was not kept.
    let (status, _) = server
        .request(
            Method::GET,
            server.v3("/pushrules/global/content/big"),
            Some(&alice.token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

async fn receipt(
    server: &TestServer,
    token: &str,
    room: &str,
    event: &str,
    body: Value,
) -> (StatusCode, Value) {
    server
        .request(
            Method::POST,
            room_url(server, room, &format!("/receipt/m.read/{}", enc(event))),
            Some(token),
            Some(body),
        )
        .await
}

async fn receipt_threads_must_be_events_of_the_room(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let room = create_room(&server, &alice.token, json!({})).await;
    let event = send_text(&server, &alice.token, &room, "root").await;
    assert_eq!(
        receipt(
            &server,
            &alice.token,
            &room,
            &event,
            json!({ "thread_id": event })
        )
        .await,
        (StatusCode::OK, json!({}))
    );
    // Every made-up thread id would be one more stored receipt.
    let long = format!("${}", "a".repeat(300));
    for thread in [long.as_str(), "$made-up-thread", "not an event id"] {
        assert_error(
            &receipt(
                &server,
                &alice.token,
                &room,
                &event,
                json!({ "thread_id": thread }),
            )
            .await,
            StatusCode::BAD_REQUEST,
            "M_INVALID_PARAM",
        );
    }
}

async fn typing_is_rate_limited(backend: Backend) {
    let server = TestServer::start_with(backend, |config| {
        config.rate_limits.enabled = true;
        config.rate_limits.typing = myelin_server::config::RateLimit {
            per_second: 0.001,
            burst: 1,
        };
    })
    .await;
    let alice = server.register("alice").await;
    let room = create_room(&server, &alice.token, json!({})).await;
    let typing = || {
        server.request(
            Method::PUT,
            room_url(&server, &room, &format!("/typing/{}", enc(&alice.user_id))),
            Some(&alice.token),
            Some(json!({ "typing": true, "timeout": 30000 })),
        )
    };
    assert_eq!(typing().await, (StatusCode::OK, json!({})));
    assert_error(
        &typing().await,
        StatusCode::TOO_MANY_REQUESTS,
        "M_LIMIT_EXCEEDED",
    );
}

async fn upload(server: &TestServer, token: &str, bytes: usize) -> (StatusCode, Value) {
    let response = server
        .client
        .post(format!("{}/_matrix/media/v3/upload", server.base_url))
        .bearer_auth(token)
        .header("Content-Type", "application/octet-stream")
        .body(vec![7u8; bytes])
        .send()
        .await
        .expect("reaches the server");
    let status = response.status();
    (status, response.json().await.expect("JSON"))
}

async fn media_is_capped_per_user(backend: Backend) {
    let server =
        TestServer::start_with(backend, |config| config.limits.media_bytes_per_user = 10).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    assert_eq!(upload(&server, &alice.token, 6).await.0, StatusCode::OK);
    assert_error(
        &upload(&server, &alice.token, 6).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "M_TOO_LARGE",
    );
    // What is left of the quota can still be used; other accounts have their own.
    assert_eq!(upload(&server, &alice.token, 4).await.0, StatusCode::OK);
    assert_error(
        &upload(&server, &alice.token, 1).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "M_TOO_LARGE",
    );
    assert_eq!(upload(&server, &bob.token, 10).await.0, StatusCode::OK);
}

async fn pending_media_ids_are_capped_per_user(backend: Backend) {
    let server =
        TestServer::start_with(backend, |config| config.limits.pending_media_ids = 2).await;
    let alice = server.register("alice").await;
    let create = || {
        server.request(
            Method::POST,
            format!("{}/_matrix/media/v1/create", server.base_url),
            Some(&alice.token),
            Some(json!({})),
        )
    };
    let first = create().await;
    assert_eq!(first.0, StatusCode::OK, "{}", first.1);
    assert_eq!(create().await.0, StatusCode::OK);
    assert_error(
        &create().await,
        StatusCode::TOO_MANY_REQUESTS,
        "M_LIMIT_EXCEEDED",
    );
    // Uploading into a reserved id frees its place.
    let uri = first.1["content_uri"]
        .as_str()
        .expect("content_uri")
        .to_owned();
    let media_id = uri.rsplit('/').next().expect("media id");
    let put = server
        .client
        .put(format!(
            "{}/_matrix/media/v3/upload/localhost/{media_id}",
            server.base_url
        ))
        .bearer_auth(&alice.token)
        .body("x")
        .send()
        .await
        .expect("reaches the server");
    assert_eq!(put.status(), StatusCode::OK);
    assert_eq!(create().await.0, StatusCode::OK);
}

async fn key_changes(
    server: &TestServer,
    token: &str,
    from: &str,
    to: &str,
) -> (StatusCode, Value) {
    let url = server.v3(&format!("/keys/changes?from={from}&to={to}"));
    server.request(Method::GET, url, Some(token), None).await
}

async fn key_changes_from_an_ancient_token_do_bounded_work(backend: Backend) {
    let server =
        TestServer::start_with(backend, |config| config.limits.device_list_window = 5).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = create_room(&server, &alice.token, json!({ "preset": "public_chat" })).await;
    let (status, _) = server
        .request(
            Method::POST,
            room_url(&server, &room, "/join"),
            Some(&bob.token),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let recent = crate::sync_support::next_batch(
        &crate::sync_support::sync_ok(&server, &bob.token, &[]).await,
    );
    send_text(&server, &alice.token, &room, "one").await;
    let now = crate::sync_support::next_batch(
        &crate::sync_support::sync_ok(&server, &bob.token, &[]).await,
    );
    // A recent token reads what changed: nothing.
    assert_eq!(
        key_changes(&server, &bob.token, &recent, &now).await,
        (StatusCode::OK, json!({ "changed": [], "left": [] }))
    );
    // Past the window the server does not read the changes between; it
    // lists everyone the user shares a room with, which is always correct
    // (a client then queries their keys again).
    for n in 0..6 {
        send_text(&server, &alice.token, &room, &format!("m{n}")).await;
    }
    let later = crate::sync_support::next_batch(
        &crate::sync_support::sync_ok(&server, &bob.token, &[]).await,
    );
    let (status, answer) = key_changes(&server, &bob.token, &recent, &later).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let mut changed: Vec<String> = answer["changed"]
        .as_array()
        .expect("changed")
        .iter()
        .map(|user| user.as_str().expect("user id").to_owned())
        .collect();
    changed.sort();
    let mut expected = vec![alice.user_id.clone(), bob.user_id.clone()];
    expected.sort();
    assert_eq!(changed, expected, "{answer}");
}

async fn keys_claim_is_capped_in_keys(backend: Backend) {
    let server = TestServer::start_with(backend, |config| config.limits.keys_claim_keys = 2).await;
    let alice = server.register("alice").await;
    let claim = |devices: &[&str]| {
        let wanted: serde_json::Map<String, Value> = devices
            .iter()
            .map(|device| ((*device).to_owned(), json!("signed_curve25519")))
            .collect();
        server.request(
            Method::POST,
            server.v3("/keys/claim"),
            Some(&alice.token),
            Some(json!({ "one_time_keys": { server.user_id("bob"): wanted } })),
        )
    };
    assert_eq!(claim(&["A", "B"]).await.0, StatusCode::OK);
    assert_error(
        &claim(&["A", "B", "C"]).await,
        StatusCode::BAD_REQUEST,
        "M_INVALID_PARAM",
    );
}

async fn account_data_entries_are_capped_per_user(backend: Backend) {
    let server =
        TestServer::start_with(backend, |config| config.limits.account_data_entries = 2).await;
    let alice = server.register("alice").await;
    let put = |data_type: &str, n: u32| {
        server.request(
            Method::PUT,
            server.v3(&format!(
                "/user/{}/account_data/{data_type}",
                enc(&alice.user_id)
            )),
            Some(&alice.token),
            Some(json!({ "n": n })),
        )
    };
    assert_eq!(put("org.example.a", 1).await, (StatusCode::OK, json!({})));
    assert_eq!(put("org.example.b", 1).await, (StatusCode::OK, json!({})));
    // Changing an entry it has is always allowed.
    assert_eq!(put("org.example.a", 2).await, (StatusCode::OK, json!({})));
    assert_error(
        &put("org.example.c", 1).await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
}

async fn create_room_is_capped_in_initial_events(backend: Backend) {
    let server =
        TestServer::start_with(backend, |config| config.limits.create_room_events = 3).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let topic =
        |n: usize| json!({ "type": "org.example.note", "state_key": n.to_string(), "content": {} });
    let within = json!({ "initial_state": [topic(1), topic(2)], "invite": [bob.user_id] });
    create_room(&server, &alice.token, within).await;
    let over = json!({ "initial_state": [topic(1), topic(2), topic(3)], "invite": [bob.user_id] });
    let refused = try_create_room(&server, &alice.token, over).await;
    assert_error(&refused, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    // Refused before the room existed: alice is in one room only.
    assert_eq!(joined_rooms(&server, &alice.token).await.len(), 1);
}
