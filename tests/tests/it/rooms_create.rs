//! `POST /createRoom`, against the spec's "Room creation" section
//! (client-server-api, `POST /_matrix/client/v3/createRoom`): the preset
//! table, the order of the initial events, `creation_content`,
//! `power_level_content_override`, aliases, invites, visibility and room
//! versions.

use myelin_tests::{Backend, TestServer, assert_error, backend_tests};
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::{
    rooms_support::{
        create_room, enc, get_state, join, joined_rooms, room_url, state_content, try_create_room,
    },
    sync_support::{chunk, messages_ok},
};

backend_tests!(
    presets_set_join_rules_history_visibility_and_guest_access,
    creator_power_and_room_ids_per_version,
    trusted_private_chat_gives_invitees_creator_power,
    name_topic_alias_and_invites,
    taken_alias_is_room_in_use,
    initial_state_overrides_the_preset_and_name_overrides_initial_state,
    power_level_content_override_replaces_keys,
    creation_content_keeps_extra_keys_and_server_owns_the_rest,
    visibility_public_lists_the_room,
    unsupported_room_versions_are_refused,
    invalid_initial_state_is_m_invalid_room_state,
    malformed_requests_are_bad_json,
    invalid_alias_names_and_v12_creator_levels_are_refused,
    concurrent_creates_with_one_alias_make_one_room,
);

async fn presets_set_join_rules_history_visibility_and_guest_access(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    // Spec table: private_chat and trusted_private_chat are invite/shared/can_join,
    // public_chat is public/shared/forbidden; without a preset, visibility decides.
    let cases = [
        (json!({ "preset": "private_chat" }), "invite", "can_join"),
        (
            json!({ "preset": "trusted_private_chat" }),
            "invite",
            "can_join",
        ),
        (json!({ "preset": "public_chat" }), "public", "forbidden"),
        (json!({ "visibility": "public" }), "public", "forbidden"),
        (json!({ "visibility": "private" }), "invite", "can_join"),
        (json!({}), "invite", "can_join"),
        // An explicit preset wins over the visibility.
        (
            json!({ "visibility": "public", "preset": "private_chat" }),
            "invite",
            "can_join",
        ),
    ];
    for (mut body, join_rule, guest_access) in cases {
        body["room_version"] = json!("11");
        let room = create_room(&server, &alice.token, body.clone()).await;
        let t = &alice.token;
        assert_eq!(
            state_content(&server, t, &room, "m.room.join_rules", "").await,
            json!({ "join_rule": join_rule }),
            "{body}"
        );
        assert_eq!(
            state_content(&server, t, &room, "m.room.history_visibility", "").await,
            json!({ "history_visibility": "shared" }),
            "{body}"
        );
        assert_eq!(
            state_content(&server, t, &room, "m.room.guest_access", "").await,
            json!({ "guest_access": guest_access }),
            "{body}"
        );
    }
}

async fn creator_power_and_room_ids_per_version(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let t = &alice.token;
    for version in ["10", "11", "12"] {
        let room = create_room(&server, t, json!({ "room_version": version })).await;
        let (status, create) = server
            .request(
                Method::GET,
                room_url(&server, &room, "/state/m.room.create/?format=event"),
                Some(t),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{create}");
        assert_eq!(create["sender"], alice.user_id);
        assert_eq!(create["room_id"], room);
        assert_eq!(create["content"]["room_version"], version);
        let levels = state_content(&server, t, &room, "m.room.power_levels", "").await;
        match version {
            "12" => {
                // Room ids are the create event's reference hash with `!`.
                let event_id = create["event_id"].as_str().expect("event id");
                assert_eq!(room, format!("!{}", &event_id[1..]), "v12 room id");
                assert!(!room.contains(':'), "v12 room ids have no server: {room}");
                // Creators have infinite power and must not be in `users`.
                assert_eq!(levels["users"].get(&alice.user_id), None, "{levels}");
                assert!(create["content"].get("creator").is_none(), "{create}");
                // Tombstones need more than state_default in v12.
                let tombstone = levels["events"]["m.room.tombstone"].as_i64().unwrap();
                assert!(
                    tombstone > levels["state_default"].as_i64().unwrap(),
                    "{levels}"
                );
            }
            _ => {
                assert!(
                    room.starts_with('!') && room.ends_with(":localhost"),
                    "v{version} room id {room}"
                );
                assert_eq!(levels["users"][&alice.user_id], 100, "{levels}");
                if version == "10" {
                    assert_eq!(create["content"]["creator"], alice.user_id);
                } else {
                    assert!(create["content"].get("creator").is_none(), "{create}");
                }
            }
        }
        // The creator may set state (state_default is 50 or below their level).
        let (status, answer) = crate::rooms_support::put_state(
            &server,
            t,
            &room,
            "m.room.name",
            "",
            json!({ "name": "x" }),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "v{version}: {answer}");
    }
    // The server's default version is 12.
    let room = create_room(&server, t, json!({})).await;
    let create = state_content(&server, t, &room, "m.room.create", "").await;
    assert_eq!(create["room_version"], "12");
}

async fn trusted_private_chat_gives_invitees_creator_power(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let t = &alice.token;

    let room = create_room(
        &server,
        t,
        json!({ "preset": "trusted_private_chat", "room_version": "11", "invite": [bob.user_id] }),
    )
    .await;
    let levels = state_content(&server, t, &room, "m.room.power_levels", "").await;
    assert_eq!(
        levels["users"],
        json!({ alice.user_id.clone(): 100, bob.user_id.clone(): 100 })
    );

    // v12: invitees become additional creators, merged with the client's
    // own `additional_creators` without duplicates (createRoom, step 3 and
    // `creation_content`).
    let room = create_room(
        &server,
        t,
        json!({
            "preset": "trusted_private_chat",
            "room_version": "12",
            "invite": [bob.user_id],
            "creation_content": { "additional_creators": [carol.user_id, bob.user_id] },
        }),
    )
    .await;
    let create = state_content(&server, t, &room, "m.room.create", "").await;
    let mut creators: Vec<&str> = create["additional_creators"]
        .as_array()
        .unwrap_or_else(|| panic!("{create}"))
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    creators.sort();
    assert_eq!(creators, [bob.user_id.as_str(), carol.user_id.as_str()]);
    let levels = state_content(&server, t, &room, "m.room.power_levels", "").await;
    assert_eq!(
        levels["users"],
        json!({}),
        "creators are not listed: {levels}"
    );
    // Bob, a creator, may change power levels once joined.
    join(&server, &bob.token, &room).await;
    let (status, answer) = crate::rooms_support::put_state(
        &server,
        &bob.token,
        &room,
        "m.room.power_levels",
        "",
        levels,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
}

async fn name_topic_alias_and_invites(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let t = &alice.token;
    let room = create_room(
        &server,
        t,
        json!({
            "room_version": "11",
            "name": "The Grand Duke Pub",
            "topic": "All about happy hour",
            "room_alias_name": "thepub",
            "invite": [bob.user_id],
            "is_direct": true,
        }),
    )
    .await;
    assert_eq!(
        state_content(&server, t, &room, "m.room.name", "").await,
        json!({ "name": "The Grand Duke Pub" })
    );
    let topic = state_content(&server, t, &room, "m.room.topic", "").await;
    assert_eq!(topic["topic"], "All about happy hour");
    assert_eq!(
        state_content(&server, t, &room, "m.room.canonical_alias", "").await,
        json!({ "alias": "#thepub:localhost" })
    );
    let (status, resolved) = server
        .request(
            Method::GET,
            server.v3(&format!("/directory/room/{}", enc("#thepub:localhost"))),
            None,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(resolved["room_id"], room);
    assert_eq!(resolved["servers"], json!(["localhost"]));

    let invite = state_content(&server, t, &room, "m.room.member", &bob.user_id).await;
    assert_eq!(invite["membership"], "invite");
    assert_eq!(invite["is_direct"], true);
    let own = state_content(&server, t, &room, "m.room.member", &alice.user_id).await;
    assert_eq!(own["membership"], "join");
    assert!(own.get("is_direct").is_none(), "{own}");
    assert_eq!(
        joined_rooms(&server, &bob.token).await,
        Vec::<String>::new()
    );
    join(&server, &bob.token, &room).await;
    assert_eq!(joined_rooms(&server, &bob.token).await, [room.clone()]);

    // Remote invitees cannot be reached (no federation); that is not a 500.
    let answer = try_create_room(&server, t, json!({ "invite": ["@x:elsewhere.example"] })).await;
    assert!(answer.0.is_client_error(), "{answer:?}");
}

async fn taken_alias_is_room_in_use(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let first = create_room(&server, &alice.token, json!({ "room_alias_name": "pub" })).await;
    let answer = try_create_room(&server, &bob.token, json!({ "room_alias_name": "pub" })).await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "M_ROOM_IN_USE");
    // No room was created for bob, and the alias still points at the first room.
    assert_eq!(
        joined_rooms(&server, &bob.token).await,
        Vec::<String>::new()
    );
    let (_, resolved) = server
        .request(
            Method::GET,
            server.v3(&format!("/directory/room/{}", enc("#pub:localhost"))),
            None,
            None,
        )
        .await;
    assert_eq!(resolved["room_id"], first);
}

async fn initial_state_overrides_the_preset_and_name_overrides_initial_state(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let t = &alice.token;
    let room = create_room(
        &server,
        t,
        json!({
            "preset": "public_chat",
            "room_version": "11",
            "name": "from name",
            "initial_state": [
                { "type": "m.room.history_visibility", "content": { "history_visibility": "world_readable" } },
                { "type": "m.room.name", "state_key": "", "content": { "name": "from initial_state" } },
                { "type": "org.example.custom", "state_key": "k", "content": { "n": 1 } },
            ],
        }),
    )
    .await;
    assert_eq!(
        state_content(&server, t, &room, "m.room.history_visibility", "").await,
        json!({ "history_visibility": "world_readable" })
    );
    assert_eq!(
        state_content(&server, t, &room, "m.room.join_rules", "").await,
        json!({ "join_rule": "public" })
    );
    assert_eq!(
        state_content(&server, t, &room, "m.room.name", "").await,
        json!({ "name": "from name" })
    );
    assert_eq!(
        state_content(&server, t, &room, "org.example.custom", "k").await,
        json!({ "n": 1 })
    );
    // A slot `initial_state` sets gets no preset event before it.
    let history = messages_ok(&server, t, &room, &[("dir", "f"), ("limit", "50")]).await;
    let visibility_events = chunk(&history)
        .iter()
        .filter(|event| event["type"] == "m.room.history_visibility")
        .count();
    assert_eq!(visibility_events, 1, "{history}");
}

async fn power_level_content_override_replaces_keys(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let t = &alice.token;
    let room = create_room(
        &server,
        t,
        json!({
            "preset": "public_chat",
            "room_version": "11",
            "power_level_content_override": {
                "events_default": 20,
                "users": { alice.user_id.clone(): 100, bob.user_id.clone(): 10 },
                "events": { "m.room.topic": 0 },
            },
        }),
    )
    .await;
    let levels = state_content(&server, t, &room, "m.room.power_levels", "").await;
    assert_eq!(levels["events_default"], 20);
    assert_eq!(
        levels["users"],
        json!({ alice.user_id.clone(): 100, bob.user_id.clone(): 10 })
    );
    assert_eq!(levels["events"], json!({ "m.room.topic": 0 }));
    assert_eq!(levels["state_default"], 50, "untouched keys keep defaults");
    // The override takes effect: bob (10) may not send messages (20) but may set the topic (0).
    join(&server, &bob.token, &room).await;
    let answer = crate::rooms_support::send(
        &server,
        &bob.token,
        &room,
        "m.room.message",
        "t1",
        json!({ "body": "hi" }),
    )
    .await;
    assert_error(&answer, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let (status, _) = crate::rooms_support::put_state(
        &server,
        &bob.token,
        &room,
        "m.room.topic",
        "",
        json!({ "topic": "bob's" }),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
}

async fn creation_content_keeps_extra_keys_and_server_owns_the_rest(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let t = &alice.token;
    for version in ["10", "11"] {
        let room = create_room(
            &server,
            t,
            json!({
                "room_version": version,
                "creation_content": {
                    "m.federate": false,
                    "type": "m.space",
                    "creator": "@mallory:localhost",
                    "room_version": "1",
                },
            }),
        )
        .await;
        let create = state_content(&server, t, &room, "m.room.create", "").await;
        assert_eq!(create["m.federate"], false, "{create}");
        assert_eq!(create["type"], "m.space", "{create}");
        assert_eq!(create["room_version"], version, "{create}");
        if version == "10" {
            assert_eq!(create["creator"], alice.user_id, "{create}");
        } else {
            assert!(create.get("creator").is_none(), "{create}");
        }
    }
}

async fn visibility_public_lists_the_room(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let t = &alice.token;
    let public = create_room(
        &server,
        t,
        json!({ "visibility": "public", "name": "Lobby" }),
    )
    .await;
    let private = create_room(&server, t, json!({ "preset": "public_chat" })).await;
    let (status, page) = server
        .request(Method::GET, server.v3("/publicRooms"), None, None)
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let ids: Vec<&str> = page["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["room_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [public.as_str()]);
    for (room, visibility) in [(&public, "public"), (&private, "private")] {
        let (status, answer) = server
            .request(
                Method::GET,
                server.v3(&format!("/directory/list/room/{}", enc(room))),
                None,
                None,
            )
            .await;
        assert_eq!(
            (status, answer),
            (StatusCode::OK, json!({ "visibility": visibility }))
        );
    }
}

async fn unsupported_room_versions_are_refused(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    for version in ["0", "13", "1.0", "org.example.custom", ""] {
        let answer =
            try_create_room(&server, &alice.token, json!({ "room_version": version })).await;
        assert_error(
            &answer,
            StatusCode::BAD_REQUEST,
            "M_UNSUPPORTED_ROOM_VERSION",
        );
    }
    assert_eq!(
        joined_rooms(&server, &alice.token).await,
        Vec::<String>::new()
    );
}

async fn invalid_initial_state_is_m_invalid_room_state(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    // The creator's own power is overridden to 0, below what the preset's
    // state events need: "the initial state implied by the parameters to the
    // request is invalid" is 400 M_INVALID_ROOM_STATE.
    let answer = try_create_room(
        &server,
        &alice.token,
        json!({
            "room_version": "11",
            "power_level_content_override": { "users": {} },
            "name": "unreachable",
            "room_alias_name": "broken",
        }),
    )
    .await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "M_INVALID_ROOM_STATE");
    // The creator is not left in the broken room...
    assert_eq!(
        joined_rooms(&server, &alice.token).await,
        Vec::<String>::new()
    );
    // ...and its alias is free again.
    let (status, _) = server
        .request(
            Method::GET,
            alias_url(&server, "#broken:localhost"),
            None,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    create_room(
        &server,
        &alice.token,
        json!({ "room_alias_name": "broken" }),
    )
    .await;
}

async fn malformed_requests_are_bad_json(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    for body in [
        json!({ "preset": "secret_chat" }),
        json!({ "visibility": "everyone" }),
        json!({ "invite": ["not a user id"] }),
        json!({ "initial_state": [{ "type": "m.room.topic" }] }),
        json!({ "power_level_content_override": { "ban": 1.5 } }),
        json!({ "room_version": 11 }),
        json!({ "creation_content": "not an object" }),
    ] {
        let answer = try_create_room(&server, &alice.token, body.clone()).await;
        assert_error(&answer, StatusCode::BAD_REQUEST, "M_BAD_JSON");
    }
    let answer = server
        .request(
            Method::POST,
            server.v3("/createRoom"),
            None,
            Some(json!({})),
        )
        .await;
    assert_error(&answer, StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN");
}

async fn invalid_alias_names_and_v12_creator_levels_are_refused(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    // room_alias_name is a local part only: anything but `:` and NUL
    // (appendices, "Room aliases").
    for name in ["with:colon", "nul\u{0}"] {
        let answer =
            try_create_room(&server, &alice.token, json!({ "room_alias_name": name })).await;
        assert_error(&answer, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    }
    assert_eq!(
        joined_rooms(&server, &alice.token).await,
        Vec::<String>::new()
    );
    // "In room versions 12 and later, the room creator is given infinite
    // power level and cannot be specified in the users field": overriding
    // users with the creator makes the initial state invalid.
    let answer = try_create_room(
        &server,
        &alice.token,
        json!({
            "room_version": "12",
            "power_level_content_override": { "users": { alice.user_id.clone(): 100 } },
        }),
    )
    .await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "M_INVALID_ROOM_STATE");
}

async fn concurrent_creates_with_one_alias_make_one_room(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    for round in 0..5 {
        let name = format!("race{round}");
        let body = json!({ "room_alias_name": name, "room_version": "11" });
        let (a, b) = tokio::join!(
            try_create_room(&server, &alice.token, body.clone()),
            try_create_room(&server, &bob.token, body.clone()),
        );
        let (winner, loser, loser_token) = match (a.0, b.0) {
            (StatusCode::OK, _) => (a, b, &bob.token),
            _ => (b, a, &alice.token),
        };
        assert_eq!(winner.0, StatusCode::OK, "{}", winner.1);
        assert_error(&loser, StatusCode::BAD_REQUEST, "M_ROOM_IN_USE");
        let room = winner.1["room_id"].as_str().unwrap();
        let alias = format!("#{name}:localhost");
        let (_, resolved) = server
            .request(Method::GET, alias_url(&server, &alias), None, None)
            .await;
        assert_eq!(resolved["room_id"], room);
        // The loser is left with no room naming an alias that is not theirs.
        for joined in joined_rooms(&server, loser_token).await {
            let (status, canonical) =
                get_state(&server, loser_token, &joined, "m.room.canonical_alias", "").await;
            assert!(
                status == StatusCode::NOT_FOUND || canonical.get("alias") != Some(&json!(alias)),
                "round {round}: loser's room {joined} claims {alias}"
            );
        }
    }
}

fn alias_url(server: &TestServer, alias: &str) -> String {
    server.v3(&format!("/directory/room/{}", enc(alias)))
}
