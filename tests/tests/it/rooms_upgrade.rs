//! `POST /rooms/{roomId}/upgrade` (client-server-api, "Room Upgrades"): the
//! replacement room carries the old room's settings, power levels, aliases,
//! directory listing and E2E-only policy; the old room gets a tombstone and
//! is closed to ordinary members; only those who may tombstone may upgrade.

use myelin_tests::{Backend, TestServer, assert_error, backend_tests};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::rooms_support::{
    create_room, enc, get_state, invite, join, put_state, room_url, state_content,
};

backend_tests!(
    an_upgrade_carries_the_room_over_and_tombstones_the_old_one,
    an_e2e_only_room_stays_e2e_only_when_upgraded,
    only_those_who_may_tombstone_can_upgrade,
    members_push_rules_follow_the_room,
);

async fn upgrade(
    server: &TestServer,
    token: &str,
    room_id: &str,
    body: Value,
) -> (StatusCode, Value) {
    let url = room_url(server, room_id, "/upgrade");
    server
        .request(Method::POST, url, Some(token), Some(body))
        .await
}

async fn upgraded(server: &TestServer, token: &str, room_id: &str, version: &str) -> String {
    let (status, answer) = upgrade(server, token, room_id, json!({ "new_version": version })).await;
    assert_eq!(status, StatusCode::OK, "upgrade: {answer}");
    answer["replacement_room"]
        .as_str()
        .expect("replacement_room")
        .to_owned()
}

async fn an_upgrade_carries_the_room_over_and_tombstones_the_old_one(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let old = create_room(
        &server,
        &alice.token,
        json!({
            "room_version": "10",
            "preset": "public_chat",
            "visibility": "public",
            "name": "Tea",
            "topic": "Kettles",
            "room_alias_name": "tea",
        }),
    )
    .await;
    join(&server, &bob.token, &old).await;
    let mut levels = state_content(&server, &alice.token, &old, "m.room.power_levels", "").await;
    levels["users"][&bob.user_id] = json!(25);
    let answer = put_state(
        &server,
        &alice.token,
        &old,
        "m.room.power_levels",
        "",
        levels,
    )
    .await;
    assert_eq!(answer.0, StatusCode::OK, "{}", answer.1);

    let new = upgraded(&server, &alice.token, &old, "12").await;
    assert_ne!(new, old);

    let create = state_content(&server, &alice.token, &new, "m.room.create", "").await;
    assert_eq!(create["room_version"], "12");
    assert_eq!(create["predecessor"]["room_id"], old.as_str());
    for (kind, key, value) in [
        ("m.room.name", "name", "Tea"),
        ("m.room.topic", "topic", "Kettles"),
        ("m.room.join_rules", "join_rule", "public"),
        ("m.room.history_visibility", "history_visibility", "shared"),
    ] {
        let content = state_content(&server, &alice.token, &new, kind, "").await;
        assert_eq!(content[key], value, "{kind} in the new room");
    }
    let new_levels = state_content(&server, &alice.token, &new, "m.room.power_levels", "").await;
    assert_eq!(new_levels["users"][&bob.user_id], 25, "{new_levels}");
    // Version 12 creators are not listed in `users`.
    assert_eq!(
        new_levels["users"].get(&alice.user_id),
        None,
        "{new_levels}"
    );

    let tombstone = state_content(&server, &bob.token, &old, "m.room.tombstone", "").await;
    assert_eq!(tombstone["replacement_room"], new.as_str());
    let old_levels = state_content(&server, &bob.token, &old, "m.room.power_levels", "").await;
    assert!(
        old_levels["events_default"].as_i64() >= Some(50),
        "{old_levels}"
    );
    assert!(old_levels["invite"].as_i64() >= Some(50), "{old_levels}");
    let (status, _) = server
        .request(
            Method::PUT,
            room_url(&server, &old, "/send/m.room.message/after-upgrade"),
            Some(&bob.token),
            Some(json!({ "msgtype": "m.text", "body": "still here?" })),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "an ordinary member still talks in the old room"
    );

    let user_id = server.user_id("x");
    let (_, server_name) = user_id
        .split_once(':')
        .expect("a user id has a server name");
    let alias = format!("#tea:{server_name}");
    let url = server.v3(&format!("/directory/room/{}", enc(&alias)));
    let (status, resolved) = server.request(Method::GET, url, None, None).await;
    assert_eq!(status, StatusCode::OK, "{resolved}");
    assert_eq!(
        resolved["room_id"],
        new.as_str(),
        "the alias follows the upgrade"
    );
    let canonical = state_content(&server, &alice.token, &new, "m.room.canonical_alias", "").await;
    assert_eq!(canonical["alias"], alias.as_str());
    let old_canonical =
        state_content(&server, &alice.token, &old, "m.room.canonical_alias", "").await;
    assert_eq!(old_canonical.get("alias"), None, "{old_canonical}");

    let (status, directory) = server
        .request(Method::GET, server.v3("/publicRooms"), None, None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let listed: Vec<&str> = directory["chunk"]
        .as_array()
        .expect("chunk")
        .iter()
        .filter_map(|room| room["room_id"].as_str())
        .collect();
    assert_eq!(
        listed,
        vec![new.as_str()],
        "the directory lists the new room only"
    );
}

async fn an_e2e_only_room_stays_e2e_only_when_upgraded(backend: Backend) {
    const POLICY: &str = "org.myelin.room.policy";
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let old = create_room(
        &server,
        &alice.token,
        json!({
            "room_version": "11",
            "initial_state": [
                { "type": "m.room.encryption", "state_key": "", "content": { "algorithm": "m.megolm.v1.aes-sha2" } },
                { "type": POLICY, "state_key": "", "content": { "e2e_required": true } },
            ],
        }),
    )
    .await;
    let new = upgraded(&server, &alice.token, &old, "12").await;
    let policy = state_content(&server, &alice.token, &new, POLICY, "").await;
    assert_eq!(policy["e2e_required"], true);
    let encryption = state_content(&server, &alice.token, &new, "m.room.encryption", "").await;
    assert_eq!(encryption["algorithm"], "m.megolm.v1.aes-sha2");
    let (status, answer) = server
        .request(
            Method::PUT,
            room_url(&server, &new, "/send/m.room.message/plain"),
            Some(&alice.token),
            Some(json!({ "msgtype": "m.text", "body": "in the clear" })),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "plaintext in the upgraded room: {answer}"
    );
}

async fn only_those_who_may_tombstone_can_upgrade(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let room = create_room(&server, &alice.token, json!({})).await;
    invite(&server, &alice.token, &room, &bob.user_id).await;
    join(&server, &bob.token, &room).await;

    let by_member = upgrade(&server, &bob.token, &room, json!({ "new_version": "12" })).await;
    assert_error(&by_member, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let by_outsider = upgrade(&server, &carol.token, &room, json!({ "new_version": "12" })).await;
    assert_error(&by_outsider, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let unknown = upgrade(
        &server,
        &alice.token,
        &room,
        json!({ "new_version": "999" }),
    )
    .await;
    assert_error(
        &unknown,
        StatusCode::BAD_REQUEST,
        "M_UNSUPPORTED_ROOM_VERSION",
    );
    let malformed = upgrade(&server, &alice.token, &room, json!({ "new_version": 12 })).await;
    assert_error(&malformed, StatusCode::BAD_REQUEST, "M_BAD_JSON");
    // Nothing refused left a tombstone behind.
    let (status, _) = get_state(&server, &alice.token, &room, "m.room.tombstone", "").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// `/pushrules/global{rest}` for `token`.
async fn push_rule(
    server: &TestServer,
    token: &str,
    method: Method,
    rest: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let url = server.v3(&format!("/pushrules/global{rest}"));
    server.request(method, url, Some(token), body).await
}

async fn members_push_rules_follow_the_room(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let old = create_room(
        &server,
        &alice.token,
        json!({ "preset": "public_chat", "room_version": "10" }),
    )
    .await;
    join(&server, &bob.token, &old).await;
    let room_condition =
        |room: &str| json!({ "kind": "event_match", "key": "room_id", "pattern": room });
    // Alice mutes the room; bob has a keyword rule for it, and one for
    // elsewhere too, which is not the room's.
    let mute = json!({ "actions": [] });
    let (status, _) = push_rule(
        &server,
        &alice.token,
        Method::PUT,
        &format!("/room/{}", enc(&old)),
        Some(mute),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let keyword = json!({
        "actions": ["notify", { "set_tweak": "highlight" }],
        "conditions": [
            room_condition(&old),
            { "kind": "event_match", "key": "content.body", "pattern": "tea" },
        ],
    });
    let (status, _) = push_rule(
        &server,
        &bob.token,
        Method::PUT,
        "/override/tea",
        Some(keyword),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let elsewhere =
        json!({ "actions": [], "conditions": [room_condition("!elsewhere:localhost")] });
    let (status, _) = push_rule(
        &server,
        &bob.token,
        Method::PUT,
        "/underride/elsewhere",
        Some(elsewhere),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = push_rule(
        &server,
        &bob.token,
        Method::PUT,
        "/override/tea/enabled",
        Some(json!({ "enabled": false })),
    )
    .await;
    assert_eq!(status, StatusCode::OK);

    let new = upgraded(&server, &alice.token, &old, "11").await;
    // The upgrader's rule is there at once.
    let (status, rule) = push_rule(
        &server,
        &alice.token,
        Method::GET,
        &format!("/room/{}", enc(&new)),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{rule}");
    assert_eq!(rule["actions"], json!([]));
    assert_eq!(rule["rule_id"], new.as_str());

    // Bob's arrives when he joins the new room, its condition naming it,
    // disabled as the original is.
    let new_id = enc(&new);
    let (status, _) = push_rule(
        &server,
        &bob.token,
        Method::GET,
        &format!("/override/{new_id}"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    join(&server, &bob.token, &new).await;
    let (status, rule) = push_rule(
        &server,
        &bob.token,
        Method::GET,
        &format!("/override/{new_id}"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{rule}");
    assert_eq!(rule["enabled"], false, "{rule}");
    assert_eq!(
        rule["conditions"],
        json!([room_condition(&new), { "kind": "event_match", "key": "content.body", "pattern": "tea" }])
    );
    assert_eq!(
        rule["actions"],
        json!(["notify", { "set_tweak": "highlight" }])
    );
    let (_, all) = push_rule(&server, &bob.token, Method::GET, "/", None).await;
    let underrides = all["underride"].as_array().expect("underride");
    assert!(
        !underrides
            .iter()
            .any(|r| r["conditions"].to_string().contains(&new)),
        "a rule for another room was not copied: {all}"
    );
    // The originals stay.
    let (status, _) = push_rule(&server, &bob.token, Method::GET, "/override/tea", None).await;
    assert_eq!(status, StatusCode::OK);
}
