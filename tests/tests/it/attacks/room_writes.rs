//! One road to every room write: whatever endpoint builds an event (its own
//! endpoint, the generic state and send endpoints, `createRoom`), the same
//! checks run on the event the server is about to sign. Each test plays an
//! attacker walking around a dedicated endpoint's check.

use myelin_tests::{Account, Backend, TestServer, assert_error, backend_tests};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::rooms_support::{
    create_room, enc, event_id, get_room, invite, join, put_state, room_url, send, send_text,
    try_create_room,
};

backend_tests!(
    an_outsider_cannot_join_a_restricted_room_through_the_state_endpoint,
    an_allowed_member_joins_a_restricted_room_by_either_road,
    a_redaction_built_as_state_cannot_remove_the_e2e_policy,
    clients_cannot_build_create_or_state_redaction_events,
    create_room_runs_the_same_checks_on_its_events,
    invites_name_existing_users_by_every_road,
);

const MEGOLM: &str = "m.megolm.v1.aes-sha2";

/// `alice`'s space, with `member` joined to it, and a room restricted to
/// the space's members.
async fn restricted_room(server: &TestServer, alice: &Account, member: &Account) -> String {
    let space = create_room(server, &alice.token, json!({ "preset": "public_chat" })).await;
    join(server, &member.token, &space).await;
    let restricted = json!({
        "preset": "private_chat",
        "initial_state": [{
            "type": "m.room.join_rules",
            "content": { "join_rule": "restricted", "allow": [{ "type": "m.room_membership", "room_id": space }] },
        }],
    });
    create_room(server, &alice.token, restricted).await
}

/// `PUT /state/m.room.member/{user}` joining `user` with `authoriser` named.
async fn join_by_state(
    server: &TestServer,
    user: &Account,
    room: &str,
    authoriser: &Account,
) -> (StatusCode, Value) {
    put_state(
        server,
        &user.token,
        room,
        "m.room.member",
        &user.user_id,
        json!({ "membership": "join", "join_authorised_via_users_server": authoriser.user_id }),
    )
    .await
}

async fn an_outsider_cannot_join_a_restricted_room_through_the_state_endpoint(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let mallory = server.register("mallory").await;
    let room = restricted_room(&server, &alice, &bob).await;
    send_text(&server, &alice.token, &room, "members only").await;

    let refused = join_by_state(&server, &mallory, &room, &alice).await;
    assert_error(&refused, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    // Naming no authoriser does not help either: the join rule is not public.
    let bare = put_state(
        &server,
        &mallory.token,
        &room,
        "m.room.member",
        &mallory.user_id,
        json!({ "membership": "join" }),
    )
    .await;
    assert_error(&bare, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let history = server
        .request(
            Method::GET,
            room_url(&server, &room, "/messages?dir=b"),
            Some(&mallory.token),
            None,
        )
        .await;
    assert_error(&history, StatusCode::FORBIDDEN, "M_FORBIDDEN");
}

async fn an_allowed_member_joins_a_restricted_room_by_either_road(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let room = restricted_room(&server, &alice, &bob).await;

    let (status, answer) = join_by_state(&server, &bob, &room, &alice).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let (_, members) = get_room(&server, &alice.token, &room, "joined_members").await;
    assert!(members["joined"][&bob.user_id].is_object(), "{members}");

    // An authoriser who may not invite cannot vouch for anyone, and bob
    // (joined, power 0 in a room whose invite level is 0 for private chats)
    // vouching for carol, who is in no allowed room, is refused too.
    let vouched = join_by_state(&server, &carol, &room, &bob).await;
    assert_error(&vouched, StatusCode::FORBIDDEN, "M_FORBIDDEN");
}

async fn a_redaction_built_as_state_cannot_remove_the_e2e_policy(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let room = create_room(
        &server,
        &alice.token,
        json!({
            "preset": "private_chat",
            "initial_state": [
                { "type": "m.room.encryption", "content": { "algorithm": MEGOLM } },
                { "type": "org.myelin.room.policy", "content": { "e2e_required": true } },
            ],
        }),
    )
    .await;
    let (status, policy) = server
        .request(
            Method::GET,
            room_url(
                &server,
                &room,
                "/state/org.myelin.room.policy/?format=event",
            ),
            Some(&alice.token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{policy}");
    let policy_id = policy["event_id"].as_str().expect("policy event id");

    for state_key in ["x", ""] {
        let refused = put_state(
            &server,
            &alice.token,
            &room,
            "m.room.redaction",
            state_key,
            json!({ "redacts": policy_id }),
        )
        .await;
        assert_error(&refused, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    }
    // The policy still stands: plaintext is refused.
    let plaintext = send(
        &server,
        &alice.token,
        &room,
        "m.room.message",
        "t1",
        json!({ "msgtype": "m.text", "body": "in clear" }),
    )
    .await;
    assert_error(&plaintext, StatusCode::FORBIDDEN, "ORG.MYELIN_E2E_REQUIRED");
    // And a redaction through /send meets the policy on the built event.
    let redact = send(
        &server,
        &alice.token,
        &room,
        "m.room.redaction",
        "t2",
        json!({ "redacts": policy_id }),
    )
    .await;
    assert_error(&redact, StatusCode::FORBIDDEN, "ORG.MYELIN_E2E_REQUIRED");
}

async fn clients_cannot_build_create_or_state_redaction_events(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let room = create_room(&server, &alice.token, json!({ "preset": "private_chat" })).await;
    let message = send_text(&server, &alice.token, &room, "hello").await;

    let create = put_state(
        &server,
        &alice.token,
        &room,
        "m.room.create",
        "",
        json!({ "room_version": "12" }),
    )
    .await;
    assert_error(&create, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let create = send(
        &server,
        &alice.token,
        &room,
        "m.room.create",
        "c1",
        json!({ "room_version": "12" }),
    )
    .await;
    assert_error(&create, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let redaction = put_state(
        &server,
        &alice.token,
        &room,
        "m.room.redaction",
        "",
        json!({ "redacts": message }),
    )
    .await;
    assert_error(&redaction, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    // Membership is state: as a message it would be an event whose meaning
    // no server agrees on.
    let member = send(
        &server,
        &alice.token,
        &room,
        "m.room.member",
        "m1",
        json!({ "membership": "join" }),
    )
    .await;
    assert_error(&member, StatusCode::FORBIDDEN, "M_FORBIDDEN");

    // The message is untouched.
    let (status, event) = server
        .request(
            Method::GET,
            room_url(&server, &room, &format!("/event/{}", enc(&message))),
            Some(&alice.token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{event}");
    assert_eq!(event["content"]["body"], "hello");
}

async fn create_room_runs_the_same_checks_on_its_events(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let space = create_room(&server, &alice.token, json!({ "preset": "private_chat" })).await;

    let refusals = [
        // A second create event.
        json!({ "initial_state": [{ "type": "m.room.create", "content": {} }] }),
        // A redaction as state.
        json!({ "initial_state": [{ "type": "m.room.redaction", "state_key": "x", "content": { "redacts": "$x" } }] }),
        // Joining someone else.
        json!({ "initial_state": [{ "type": "m.room.member", "state_key": bob.user_id, "content": { "membership": "join" } }] }),
        // Inviting a user who does not exist.
        json!({ "invite": [server.user_id("ghost")] }),
        json!({ "initial_state": [{ "type": "m.room.member", "state_key": server.user_id("ghost"), "content": { "membership": "invite" } }] }),
    ];
    for body in refusals {
        let answer = try_create_room(&server, &alice.token, body.clone()).await;
        assert!(
            answer.0.is_client_error(),
            "createRoom must refuse {body}: {answer:?}"
        );
    }
    // A restricted room created with an initial state that vouches for a
    // non-member of the allowed room is still restricted for that user.
    let restricted = create_room(
        &server,
        &alice.token,
        json!({
            "initial_state": [{
                "type": "m.room.join_rules",
                "content": { "join_rule": "restricted", "allow": [{ "type": "m.room_membership", "room_id": space }] },
            }],
        }),
    )
    .await;
    let refused = join_by_state(&server, &bob, &restricted, &alice).await;
    assert_error(&refused, StatusCode::FORBIDDEN, "M_FORBIDDEN");
}

async fn invites_name_existing_users_by_every_road(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = create_room(&server, &alice.token, json!({ "preset": "private_chat" })).await;
    let ghost = server.user_id("ghost");

    let by_endpoint = server
        .request(
            Method::POST,
            room_url(&server, &room, "/invite"),
            Some(&alice.token),
            Some(json!({ "user_id": ghost })),
        )
        .await;
    assert_error(&by_endpoint, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    let by_state = put_state(
        &server,
        &alice.token,
        &room,
        "m.room.member",
        &ghost,
        json!({ "membership": "invite" }),
    )
    .await;
    assert_error(&by_state, StatusCode::NOT_FOUND, "M_NOT_FOUND");

    // A real user is invited by either road.
    let (status, answer) = put_state(
        &server,
        &alice.token,
        &room,
        "m.room.member",
        &bob.user_id,
        json!({ "membership": "invite" }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    event_id(&answer);
    join(&server, &bob.token, &room).await;
    let carol = server.register("carol").await;
    invite(&server, &bob.token, &room, &carol.user_id).await;
}
