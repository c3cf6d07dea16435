//! Room membership over HTTP: join, invite, leave, kick, ban, unban, forget
//! and `GET /joined_rooms` (client-server-api "Room membership"), with the
//! authorization rules deciding who may do what.

use myelin_tests::{Account, Backend, TestServer, assert_error, backend_tests};
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::rooms_support::{
    create_room, enc, get_room, invite, join, joined_rooms, membership, state_content,
};

backend_tests!(
    join_a_public_room_by_id_and_alias,
    joining_unknown_rooms_is_not_found,
    invite_only_rooms_need_an_invite,
    invites_need_membership_and_power,
    leave_rejects_invites_and_allows_rejoining,
    kick_needs_power_and_a_member,
    ban_keeps_users_out_until_unbanned,
    forget_only_after_leaving,
    v12_creators_outrank_everyone,
    unban_needs_kick_and_ban_levels_and_bans_stick,
    a_join_keeps_the_clients_content_but_not_a_forged_authoriser,
);

async fn setup(server: &TestServer, preset: &str) -> (Account, Account, String) {
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = create_room(
        server,
        &alice.token,
        json!({ "preset": preset, "room_version": "11" }),
    )
    .await;
    (alice, bob, room)
}

async fn member_state(server: &TestServer, token: &str, room: &str, user: &str) -> String {
    state_content(server, token, room, "m.room.member", user).await["membership"]
        .as_str()
        .expect("membership")
        .to_owned()
}

async fn join_a_public_room_by_id_and_alias(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let room = create_room(
        &server,
        &alice.token,
        json!({ "preset": "public_chat", "room_alias_name": "lobby" }),
    )
    .await;
    assert_eq!(joined_rooms(&server, &alice.token).await, [room.clone()]);
    join(&server, &bob.token, &room).await;
    let (status, answer) = server
        .request(
            Method::POST,
            server.v3(&format!("/join/{}", enc("#lobby:localhost"))),
            Some(&carol.token),
            Some(json!({ "reason": "hello" })),
        )
        .await;
    assert_eq!(
        (status, answer),
        (StatusCode::OK, json!({ "room_id": room }))
    );
    // "Optional reason to be included as the reason on the subsequent
    // membership event."
    let joined = state_content(
        &server,
        &alice.token,
        &room,
        "m.room.member",
        &carol.user_id,
    )
    .await;
    assert_eq!(joined, json!({ "membership": "join", "reason": "hello" }));
    let answer = membership(
        &server,
        &bob.token,
        &room,
        "join",
        json!({ "reason": "again" }),
    )
    .await;
    assert_eq!(answer.0, StatusCode::OK);
    let joined = state_content(&server, &alice.token, &room, "m.room.member", &bob.user_id).await;
    assert_eq!(joined, json!({ "membership": "join", "reason": "again" }));
    // Joining again is allowed and changes nothing visible.
    let (status, answer) = server
        .request(
            Method::POST,
            server.v3(&format!("/join/{}", enc(&room))),
            Some(&carol.token),
            None,
        )
        .await;
    assert_eq!(
        (status, answer),
        (StatusCode::OK, json!({ "room_id": room }))
    );
    for account in [&alice, &bob, &carol] {
        assert_eq!(joined_rooms(&server, &account.token).await, [room.clone()]);
        assert_eq!(
            member_state(&server, &alice.token, &room, &account.user_id).await,
            "join"
        );
    }
    let (status, members) = get_room(&server, &alice.token, &room, "joined_members").await;
    assert_eq!(status, StatusCode::OK);
    let mut joined: Vec<&String> = members["joined"].as_object().unwrap().keys().collect();
    joined.sort();
    assert_eq!(joined, [&alice.user_id, &bob.user_id, &carol.user_id]);
}

async fn joining_unknown_rooms_is_not_found(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let answer = membership(
        &server,
        &alice.token,
        "!nowhere:localhost",
        "join",
        json!({}),
    )
    .await;
    assert_error(&answer, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    let answer = server
        .request(
            Method::POST,
            server.v3(&format!("/join/{}", enc("#nothing:localhost"))),
            Some(&alice.token),
            Some(json!({})),
        )
        .await;
    assert_error(&answer, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    let answer = server
        .request(
            Method::POST,
            server.v3("/join/not-an-id"),
            Some(&alice.token),
            Some(json!({})),
        )
        .await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
}

async fn invite_only_rooms_need_an_invite(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (alice, bob, room) = setup(&server, "private_chat").await;
    let answer = membership(&server, &bob.token, &room, "join", json!({})).await;
    assert_error(&answer, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    assert_eq!(
        joined_rooms(&server, &bob.token).await,
        Vec::<String>::new()
    );

    let answer = membership(
        &server,
        &alice.token,
        &room,
        "invite",
        json!({ "user_id": bob.user_id, "reason": "join us" }),
    )
    .await;
    assert_eq!(answer, (StatusCode::OK, json!({})));
    let invited = state_content(&server, &alice.token, &room, "m.room.member", &bob.user_id).await;
    assert_eq!(invited["membership"], "invite");
    assert_eq!(invited["reason"], "join us");
    // "The user has been invited to join the room, or was already invited": 200.
    invite(&server, &alice.token, &room, &bob.user_id).await;
    // An invite is not a join.
    assert_eq!(
        joined_rooms(&server, &bob.token).await,
        Vec::<String>::new()
    );
    join(&server, &bob.token, &room).await;
    assert_eq!(joined_rooms(&server, &bob.token).await, [room.clone()]);

    // Inviting someone already joined is refused by the rules.
    let answer = membership(
        &server,
        &alice.token,
        &room,
        "invite",
        json!({ "user_id": bob.user_id }),
    )
    .await;
    assert_error(&answer, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    // An unknown local user cannot be invited.
    let answer = membership(
        &server,
        &alice.token,
        &room,
        "invite",
        json!({ "user_id": "@ghost:localhost" }),
    )
    .await;
    assert!(
        matches!(answer.0, StatusCode::NOT_FOUND | StatusCode::FORBIDDEN),
        "{answer:?}"
    );
}

async fn invites_need_membership_and_power(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let dave = server.register("dave").await;
    let room = create_room(
        &server,
        &alice.token,
        json!({
            "preset": "public_chat",
            "room_version": "11",
            "power_level_content_override": { "invite": 50 },
        }),
    )
    .await;
    // Carol is not in the room: she may not invite anyone.
    let answer = membership(
        &server,
        &carol.token,
        &room,
        "invite",
        json!({ "user_id": dave.user_id }),
    )
    .await;
    assert_error(&answer, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    // Bob is joined with power 0 < invite 50.
    join(&server, &bob.token, &room).await;
    let answer = membership(
        &server,
        &bob.token,
        &room,
        "invite",
        json!({ "user_id": dave.user_id }),
    )
    .await;
    assert_error(&answer, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let (status, members) = get_room(&server, &alice.token, &room, "members").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        !members["chunk"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["state_key"] == dave.user_id),
        "no invite was stored: {members}"
    );
    // Alice (100) may.
    invite(&server, &alice.token, &room, &dave.user_id).await;
}

async fn leave_rejects_invites_and_allows_rejoining(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (alice, bob, room) = setup(&server, "public_chat").await;
    join(&server, &bob.token, &room).await;
    let answer = membership(
        &server,
        &bob.token,
        &room,
        "leave",
        json!({ "reason": "bye" }),
    )
    .await;
    assert_eq!(answer, (StatusCode::OK, json!({})));
    let left = state_content(&server, &alice.token, &room, "m.room.member", &bob.user_id).await;
    assert_eq!(left["membership"], "leave");
    assert_eq!(left["reason"], "bye");
    assert_eq!(
        joined_rooms(&server, &bob.token).await,
        Vec::<String>::new()
    );
    assert_eq!(joined_rooms(&server, &alice.token).await, [room.clone()]);
    join(&server, &bob.token, &room).await;
    assert_eq!(joined_rooms(&server, &bob.token).await, [room.clone()]);

    // Leaving a room one was never in fails the rules.
    let carol = server.register("carol").await;
    let answer = membership(&server, &carol.token, &room, "leave", json!({})).await;
    assert_error(&answer, StatusCode::FORBIDDEN, "M_FORBIDDEN");

    // Leaving rejects an invite.
    let private = create_room(&server, &alice.token, json!({ "preset": "private_chat" })).await;
    invite(&server, &alice.token, &private, &carol.user_id).await;
    let answer = membership(&server, &carol.token, &private, "leave", json!({})).await;
    assert_eq!(answer, (StatusCode::OK, json!({})));
    assert_eq!(
        member_state(&server, &alice.token, &private, &carol.user_id).await,
        "leave"
    );
    // After rejecting, an invite-only room is closed again.
    let answer = membership(&server, &carol.token, &private, "join", json!({})).await;
    assert_error(&answer, StatusCode::FORBIDDEN, "M_FORBIDDEN");
}

async fn kick_needs_power_and_a_member(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (alice, bob, room) = setup(&server, "public_chat").await;
    let carol = server.register("carol").await;
    join(&server, &bob.token, &room).await;
    join(&server, &carol.token, &room).await;

    // Bob (0) may not kick carol (kick 50).
    let answer = membership(
        &server,
        &bob.token,
        &room,
        "kick",
        json!({ "user_id": carol.user_id }),
    )
    .await;
    assert_error(&answer, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    // Nor alice, who outranks him.
    let answer = membership(
        &server,
        &bob.token,
        &room,
        "kick",
        json!({ "user_id": alice.user_id }),
    )
    .await;
    assert_error(&answer, StatusCode::FORBIDDEN, "M_FORBIDDEN");

    let answer = membership(
        &server,
        &alice.token,
        &room,
        "kick",
        json!({ "user_id": bob.user_id, "reason": "spam" }),
    )
    .await;
    assert_eq!(answer, (StatusCode::OK, json!({})));
    let (status, event) = server
        .request(
            Method::GET,
            crate::rooms_support::room_url(
                &server,
                &room,
                &format!("/state/m.room.member/{}?format=event", enc(&bob.user_id)),
            ),
            Some(&alice.token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(event["sender"], alice.user_id);
    assert_eq!(event["content"]["membership"], "leave");
    assert_eq!(event["content"]["reason"], "spam");
    assert_eq!(
        joined_rooms(&server, &bob.token).await,
        Vec::<String>::new()
    );
    // A kick is not a ban: bob may come back to a public room.
    join(&server, &bob.token, &room).await;

    // Kicking someone who is not in the room.
    let dave = server.register("dave").await;
    let answer = membership(
        &server,
        &alice.token,
        &room,
        "kick",
        json!({ "user_id": dave.user_id }),
    )
    .await;
    assert_error(&answer, StatusCode::FORBIDDEN, "M_FORBIDDEN");
}

async fn ban_keeps_users_out_until_unbanned(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (alice, bob, room) = setup(&server, "public_chat").await;
    let carol = server.register("carol").await;
    join(&server, &bob.token, &room).await;
    join(&server, &carol.token, &room).await;

    // Bob has no ban power.
    let answer = membership(
        &server,
        &bob.token,
        &room,
        "ban",
        json!({ "user_id": carol.user_id }),
    )
    .await;
    assert_error(&answer, StatusCode::FORBIDDEN, "M_FORBIDDEN");

    let answer = membership(
        &server,
        &alice.token,
        &room,
        "ban",
        json!({ "user_id": bob.user_id, "reason": "troll" }),
    )
    .await;
    assert_eq!(answer, (StatusCode::OK, json!({})));
    let banned = state_content(&server, &alice.token, &room, "m.room.member", &bob.user_id).await;
    assert_eq!(banned["membership"], "ban");
    assert_eq!(banned["reason"], "troll");
    assert_eq!(
        joined_rooms(&server, &bob.token).await,
        Vec::<String>::new()
    );
    let answer = membership(&server, &bob.token, &room, "join", json!({})).await;
    assert_error(&answer, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    // A banned user cannot be invited back either.
    let answer = membership(
        &server,
        &alice.token,
        &room,
        "invite",
        json!({ "user_id": bob.user_id }),
    )
    .await;
    assert_error(&answer, StatusCode::FORBIDDEN, "M_FORBIDDEN");

    // Carol may not unban (ban power needed).
    let answer = membership(
        &server,
        &carol.token,
        &room,
        "unban",
        json!({ "user_id": bob.user_id }),
    )
    .await;
    assert_error(&answer, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    // Unbanning someone who is not banned.
    let answer = membership(
        &server,
        &alice.token,
        &room,
        "unban",
        json!({ "user_id": carol.user_id }),
    )
    .await;
    assert_error(&answer, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    assert_eq!(
        member_state(&server, &alice.token, &room, &carol.user_id).await,
        "join",
        "a refused unban must not kick"
    );

    let answer = membership(
        &server,
        &alice.token,
        &room,
        "unban",
        json!({ "user_id": bob.user_id }),
    )
    .await;
    assert_eq!(answer, (StatusCode::OK, json!({})));
    assert_eq!(
        member_state(&server, &alice.token, &room, &bob.user_id).await,
        "leave"
    );
    join(&server, &bob.token, &room).await;
    assert_eq!(joined_rooms(&server, &bob.token).await, [room.clone()]);

    // Banning a user who never joined works too, and keeps them out.
    let dave = server.register("dave").await;
    let answer = membership(
        &server,
        &alice.token,
        &room,
        "ban",
        json!({ "user_id": dave.user_id }),
    )
    .await;
    assert_eq!(answer, (StatusCode::OK, json!({})));
    let answer = membership(&server, &dave.token, &room, "join", json!({})).await;
    assert_error(&answer, StatusCode::FORBIDDEN, "M_FORBIDDEN");
}

async fn forget_only_after_leaving(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (_alice, bob, room) = setup(&server, "public_chat").await;
    join(&server, &bob.token, &room).await;
    // "If the user is currently joined to the room, they must leave the room
    // before calling this API": 400.
    let answer = membership(&server, &bob.token, &room, "forget", json!({})).await;
    assert_eq!(answer.0, StatusCode::BAD_REQUEST, "{answer:?}");
    assert!(answer.1["errcode"].is_string(), "{answer:?}");

    let answer = membership(&server, &bob.token, &room, "leave", json!({})).await;
    assert_eq!(answer, (StatusCode::OK, json!({})));
    // Before forgetting, a former member still reads the state at their leave.
    let (status, _) = get_room(&server, &bob.token, &room, "state").await;
    assert_eq!(status, StatusCode::OK);
    let answer = membership(&server, &bob.token, &room, "forget", json!({})).await;
    assert_eq!(answer, (StatusCode::OK, json!({})));
    assert_eq!(
        joined_rooms(&server, &bob.token).await,
        Vec::<String>::new()
    );
    // "After this API is called, however, a user will no longer be able to
    // retrieve history for this room."
    for what in ["state", "members", "state/m.room.create"] {
        let answer = get_room(&server, &bob.token, &room, what).await;
        assert_error(&answer, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    }
    // Rejoining works, and brings the room back.
    join(&server, &bob.token, &room).await;
    assert_eq!(joined_rooms(&server, &bob.token).await, [room.clone()]);
    let (status, _) = get_room(&server, &bob.token, &room, "state").await;
    assert_eq!(status, StatusCode::OK);
}

async fn v12_creators_outrank_everyone(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = create_room(
        &server,
        &alice.token,
        json!({
            "preset": "public_chat",
            "room_version": "12",
            "power_level_content_override": { "users": { bob.user_id.clone(): 100 } },
        }),
    )
    .await;
    join(&server, &bob.token, &room).await;
    // Bob has 100, the most a `users` entry can give; the creator's power
    // is infinite, so he may neither kick nor ban her.
    for action in ["kick", "ban"] {
        let answer = membership(
            &server,
            &bob.token,
            &room,
            action,
            json!({ "user_id": alice.user_id }),
        )
        .await;
        assert_error(&answer, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    }
    // Creators cannot be listed in `users` (v12 authorization rules).
    let mut levels = state_content(&server, &alice.token, &room, "m.room.power_levels", "").await;
    levels["users"][&alice.user_id] = json!(100);
    let answer = crate::rooms_support::put_state(
        &server,
        &alice.token,
        &room,
        "m.room.power_levels",
        "",
        levels,
    )
    .await;
    assert_error(&answer, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    // She may kick bob despite his 100.
    let answer = membership(
        &server,
        &alice.token,
        &room,
        "kick",
        json!({ "user_id": bob.user_id }),
    )
    .await;
    assert_eq!(answer, (StatusCode::OK, json!({})));
    assert_eq!(
        member_state(&server, &alice.token, &room, &bob.user_id).await,
        "leave"
    );
}

async fn unban_needs_kick_and_ban_levels_and_bans_stick(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let dave = server.register("dave").await;
    let room = create_room(
        &server,
        &alice.token,
        json!({
            "preset": "private_chat",
            "room_version": "11",
            "power_level_content_override": {
                "users": { alice.user_id.clone(): 100, carol.user_id.clone(): 50 },
                "ban": 50,
                "kick": 75,
                "invite": 0,
            },
        }),
    )
    .await;
    for user in [&bob, &carol, &dave] {
        invite(&server, &alice.token, &room, &user.user_id).await;
    }
    join(&server, &bob.token, &room).await;
    join(&server, &carol.token, &room).await;
    // Carol (50) may ban bob (0)...
    let answer = membership(
        &server,
        &carol.token,
        &room,
        "ban",
        json!({ "user_id": bob.user_id }),
    )
    .await;
    assert_eq!(answer, (StatusCode::OK, json!({})));
    // ...but unbanning needs the kick level (75) as well (auth rules: "To
    // unban somebody, you must have power level greater than or equal to
    // both the kick and ban levels").
    let answer = membership(
        &server,
        &carol.token,
        &room,
        "unban",
        json!({ "user_id": bob.user_id }),
    )
    .await;
    assert_error(&answer, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    // A banned user cannot lift the ban by leaving.
    let answer = membership(&server, &bob.token, &room, "leave", json!({})).await;
    assert_error(&answer, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    assert_eq!(
        member_state(&server, &alice.token, &room, &bob.user_id).await,
        "ban"
    );

    // A withdrawn invite (kick of an invitee) closes the door again.
    let answer = membership(
        &server,
        &alice.token,
        &room,
        "kick",
        json!({ "user_id": dave.user_id }),
    )
    .await;
    assert_eq!(answer, (StatusCode::OK, json!({})));
    let answer = membership(&server, &dave.token, &room, "join", json!({})).await;
    assert_error(&answer, StatusCode::FORBIDDEN, "M_FORBIDDEN");

    // Alice (100) may unban; bob, now out but not banned, needs a new invite.
    let answer = membership(
        &server,
        &alice.token,
        &room,
        "unban",
        json!({ "user_id": bob.user_id }),
    )
    .await;
    assert_eq!(answer, (StatusCode::OK, json!({})));
    let answer = membership(&server, &bob.token, &room, "join", json!({})).await;
    assert_error(&answer, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    invite(&server, &alice.token, &room, &bob.user_id).await;
    join(&server, &bob.token, &room).await;
}

async fn a_join_keeps_the_clients_content_but_not_a_forged_authoriser(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (alice, bob, room) = setup(&server, "public_chat").await;
    let url = server.v3(&format!("/profile/{}/displayname", bob.user_id));
    let answer = server
        .request(
            Method::PUT,
            url,
            Some(&bob.token),
            Some(json!({ "displayname": "Bob" })),
        )
        .await;
    assert_eq!(answer.0, StatusCode::OK);

    let body = json!({
        "reason": "hello",
        "org.example.colour": "teal",
        "join_authorised_via_users_server": alice.user_id,
    });
    let answer = membership(&server, &bob.token, &room, "join", body).await;
    assert_eq!(answer.0, StatusCode::OK, "{}", answer.1);
    let member = state_content(&server, &alice.token, &room, "m.room.member", &bob.user_id).await;
    assert_eq!(
        member,
        json!({
            "membership": "join",
            "reason": "hello",
            "org.example.colour": "teal",
            "displayname": "Bob",
        })
    );

    // A per-room display name the client chose stands over the profile's.
    let body = json!({ "displayname": "Bob in this room" });
    let answer = membership(&server, &bob.token, &room, "join", body).await;
    assert_eq!(answer.0, StatusCode::OK, "{}", answer.1);
    let member = state_content(&server, &alice.token, &room, "m.room.member", &bob.user_id).await;
    assert_eq!(member["displayname"], "Bob in this room");

    let bad = membership(&server, &bob.token, &room, "join", json!({ "reason": 7 })).await;
    assert_error(&bad, StatusCode::BAD_REQUEST, "M_BAD_JSON");
}
