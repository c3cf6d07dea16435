//! Join rules beyond public and invite: knocking and restricted rooms.

use myelin_tests::{Account, Backend, TestServer, assert_error, backend_tests};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

backend_tests!(
    knocking_asks_to_join,
    restricted_rooms_admit_members_of_allowed_rooms
);

async fn create_room(server: &TestServer, creator: &Account, body: Value) -> String {
    let (status, created) = server
        .request(
            Method::POST,
            server.v3("/createRoom"),
            Some(&creator.token),
            Some(body),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{created}");
    created["room_id"].as_str().unwrap().to_owned()
}

async fn membership(
    server: &TestServer,
    viewer: &Account,
    room: &str,
    user: &Account,
) -> (StatusCode, Value) {
    let url = server.v3(&format!(
        "/rooms/{room}/state/m.room.member/{}",
        user.user_id
    ));
    server
        .request(Method::GET, url, Some(&viewer.token), None)
        .await
}

async fn knocking_asks_to_join(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let knock_rule = json!({ "initial_state": [{ "type": "m.room.join_rules", "content": { "join_rule": "knock" } }] });
    let room = create_room(&server, &alice, knock_rule).await;
    let private = create_room(&server, &alice, json!({ "preset": "private_chat" })).await;

    // Joining directly is refused; knocking is not.
    let join = server
        .request(
            Method::POST,
            server.v3(&format!("/rooms/{room}/join")),
            Some(&bob.token),
            Some(json!({})),
        )
        .await;
    assert_error(&join, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let (status, knocked) = server
        .request(
            Method::POST,
            server.v3(&format!("/knock/{room}")),
            Some(&bob.token),
            Some(json!({ "reason": "let me in" })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{knocked}");
    assert_eq!(knocked["room_id"], room.as_str());
    let (_, member) = membership(&server, &alice, &room, &bob).await;
    assert_eq!(
        member,
        json!({ "membership": "knock", "reason": "let me in" })
    );

    // An invite answers the knock, and the join then succeeds.
    let invite = json!({ "user_id": bob.user_id });
    assert_eq!(
        server
            .request(
                Method::POST,
                server.v3(&format!("/rooms/{room}/invite")),
                Some(&alice.token),
                Some(invite)
            )
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        server
            .request(
                Method::POST,
                server.v3(&format!("/rooms/{room}/join")),
                Some(&bob.token),
                Some(json!({}))
            )
            .await
            .0,
        StatusCode::OK
    );

    // Rooms that do not allow knocking refuse it.
    let refused = server
        .request(
            Method::POST,
            server.v3(&format!("/knock/{private}")),
            Some(&bob.token),
            Some(json!({})),
        )
        .await;
    assert_error(&refused, StatusCode::FORBIDDEN, "M_FORBIDDEN");
}

async fn restricted_rooms_admit_members_of_allowed_rooms(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let space = create_room(&server, &alice, json!({ "invite": [bob.user_id] })).await;
    assert_eq!(
        server
            .request(
                Method::POST,
                server.v3(&format!("/rooms/{space}/join")),
                Some(&bob.token),
                Some(json!({}))
            )
            .await
            .0,
        StatusCode::OK
    );
    let restricted = json!({
        "initial_state": [{
            "type": "m.room.join_rules",
            "content": { "join_rule": "restricted", "allow": [{ "type": "m.room_membership", "room_id": space }] },
        }],
    });
    let room = create_room(&server, &alice, restricted).await;

    let (status, joined) = server
        .request(
            Method::POST,
            server.v3(&format!("/join/{room}")),
            Some(&bob.token),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{joined}");
    let (_, member) = membership(&server, &alice, &room, &bob).await;
    assert_eq!(member["membership"], "join");
    // The join names the local member whose power admitted it, as the restricted rules require.
    assert_eq!(
        member["join_authorised_via_users_server"],
        alice.user_id.as_str()
    );

    let outsider = server
        .request(
            Method::POST,
            server.v3(&format!("/join/{room}")),
            Some(&carol.token),
            Some(json!({})),
        )
        .await;
    assert_error(&outsider, StatusCode::FORBIDDEN, "M_FORBIDDEN");
}
