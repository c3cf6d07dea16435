//! Profiles.

use myelin_tests::{Backend, TestServer, assert_error, backend_tests};

use crate::rooms_support::{create_room, membership, state_content};
use reqwest::{Method, StatusCode};
use serde_json::json;

backend_tests!(
    set_and_get_profile,
    profile_writes_are_checked,
    profile_changes_reach_the_member_event_of_every_joined_room
);

async fn set_and_get_profile(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let profile = server.v3("/profile/@alice:localhost");
    let get = |url: String| server.request(Method::GET, url, Some(&alice.token), None);
    let (status, empty) = get(profile.clone()).await;
    assert_eq!((status, empty), (StatusCode::OK, json!({})));

    let name_url = format!("{profile}/displayname");
    let avatar_url = format!("{profile}/avatar_url");
    let put = |url: String, body| server.request(Method::PUT, url, Some(&alice.token), Some(body));
    assert_eq!(
        put(name_url.clone(), json!({ "displayname": "Alice" }))
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        put(
            avatar_url.clone(),
            json!({ "avatar_url": "mxc://localhost/abc" })
        )
        .await
        .0,
        StatusCode::OK
    );
    let (_, full) = get(profile.clone()).await;
    assert_eq!(
        full,
        json!({ "displayname": "Alice", "avatar_url": "mxc://localhost/abc" })
    );
    let (_, name) = get(name_url.clone()).await;
    assert_eq!(name, json!({ "displayname": "Alice" }));
    let (_, avatar) = get(avatar_url.clone()).await;
    assert_eq!(avatar, json!({ "avatar_url": "mxc://localhost/abc" }));

    // null and "" both clear a field.
    assert_eq!(
        put(name_url.clone(), json!({ "displayname": null }))
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        put(avatar_url.clone(), json!({ "avatar_url": "" })).await.0,
        StatusCode::OK
    );
    let (_, cleared) = get(profile.clone()).await;
    assert_eq!(cleared, json!({}));
}

async fn profile_writes_are_checked(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    server.register("bob").await;
    let bob_name = server.v3("/profile/@bob:localhost/displayname");
    let answer = server
        .request(
            Method::PUT,
            &bob_name,
            Some(&alice.token),
            Some(json!({ "displayname": "Bobby" })),
        )
        .await;
    assert_error(&answer, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let answer = server
        .request(
            Method::PUT,
            &bob_name,
            None,
            Some(json!({ "displayname": "Bobby" })),
        )
        .await;
    assert_error(&answer, StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN");

    let own = server.v3("/profile/@alice:localhost");
    let answer = server
        .request(
            Method::PUT,
            &format!("{own}/avatar_url"),
            Some(&alice.token),
            Some(json!({ "avatar_url": "javascript:alert(1)" })),
        )
        .await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    let answer = server
        .request(
            Method::PUT,
            &format!("{own}/displayname"),
            Some(&alice.token),
            Some(json!({ "displayname": "x".repeat(257) })),
        )
        .await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");

    let unknown = server
        .request(
            Method::GET,
            server.v3("/profile/@nobody:localhost"),
            Some(&alice.token),
            None,
        )
        .await;
    assert_error(&unknown, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    let malformed = server
        .request(Method::GET, server.v3("/profile/not-a-user-id"), None, None)
        .await;
    assert_error(&malformed, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
}

async fn profile_changes_reach_the_member_event_of_every_joined_room(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let t = &alice.token;
    let rooms = [
        create_room(&server, t, json!({ "preset": "public_chat" })).await,
        create_room(&server, t, json!({ "preset": "private_chat" })).await,
    ];
    let left = create_room(&server, t, json!({ "preset": "public_chat" })).await;
    let (status, _) = membership(&server, t, &left, "leave", json!({})).await;
    assert_eq!(status, StatusCode::OK);

    let put = |field: &str, body| {
        let url = server.v3(&format!("/profile/{}/{field}", alice.user_id));
        server.request(Method::PUT, url, Some(t), Some(body))
    };
    assert_eq!(
        put("displayname", json!({ "displayname": "Alice" }))
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        put("avatar_url", json!({ "avatar_url": "mxc://localhost/a" }))
            .await
            .0,
        StatusCode::OK
    );
    for room in &rooms {
        let member = state_content(&server, t, room, "m.room.member", &alice.user_id).await;
        assert_eq!(
            member,
            json!({ "membership": "join", "displayname": "Alice", "avatar_url": "mxc://localhost/a" })
        );
    }
    assert_eq!(
        put("displayname", json!({ "displayname": null })).await.0,
        StatusCode::OK
    );
    let member = state_content(&server, t, &rooms[0], "m.room.member", &alice.user_id).await;
    assert_eq!(
        member,
        json!({ "membership": "join", "avatar_url": "mxc://localhost/a" })
    );
    // A room she left keeps her leave.
    let gone = state_content(&server, t, &left, "m.room.member", &alice.user_id).await;
    assert_eq!(gone, json!({ "membership": "leave" }));
}
