//! Room state over HTTP: `PUT`/`GET /rooms/{roomId}/state/{eventType}/{stateKey}`
//! (the trailing slash optional for the empty key), `?format=event`,
//! `GET /state`, `/members` (with `membership`/`not_membership`),
//! `/joined_members`, and the power-level rules that guard state.

use myelin_tests::{Backend, TestServer, assert_error, backend_tests};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::rooms_support::{
    create_room, enc, get_room, get_state, invite, join, membership, put_state, room_url,
    state_content, state_map,
};

backend_tests!(
    state_with_empty_and_non_empty_keys,
    format_event_returns_the_client_event,
    missing_state_is_not_found,
    state_default_and_per_type_levels_guard_state,
    power_levels_cannot_be_escalated,
    user_id_state_keys_belong_to_their_user,
    state_and_members_for_members_former_members_and_strangers,
    members_filters,
    joined_members_only_for_members,
    state_the_rules_refuse,
    repeating_the_current_state_writes_nothing,
);

async fn state_with_empty_and_non_empty_keys(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let t = &alice.token;
    let room = create_room(&server, t, json!({ "room_version": "11" })).await;
    let put = |path: &str, body: Value| {
        server.request(
            Method::PUT,
            room_url(&server, &room, path),
            Some(t),
            Some(body),
        )
    };
    let get =
        |path: &str| server.request(Method::GET, room_url(&server, &room, path), Some(t), None);

    // The empty state key, without and with the trailing slash.
    let (status, answer) = put("/state/m.room.topic", json!({ "topic": "one" })).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert!(answer["event_id"].as_str().unwrap().starts_with('$'));
    assert_eq!(
        get("/state/m.room.topic").await,
        (StatusCode::OK, json!({ "topic": "one" }))
    );
    assert_eq!(
        get("/state/m.room.topic/").await,
        (StatusCode::OK, json!({ "topic": "one" }))
    );
    let (status, _) = put("/state/m.room.topic/", json!({ "topic": "two" })).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        get("/state/m.room.topic").await,
        (StatusCode::OK, json!({ "topic": "two" }))
    );

    // Non-empty keys are separate slots, including keys needing escapes.
    for key in ["k", "with space", "a/b", "é", "#x:y"] {
        let path = format!("/state/org.example.slot/{}", enc(key));
        let (status, answer) = put(&path, json!({ "key": key })).await;
        assert_eq!(status, StatusCode::OK, "{key}: {answer}");
        assert_eq!(
            get(&path).await,
            (StatusCode::OK, json!({ "key": key })),
            "{key}"
        );
    }
    assert_error(
        &get("/state/org.example.slot").await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
    // Replacing a slot replaces it.
    let (status, _) = put("/state/org.example.slot/k", json!({ "v": 2 })).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        get("/state/org.example.slot/k").await,
        (StatusCode::OK, json!({ "v": 2 }))
    );
    let (status, all) = get("/state").await;
    assert_eq!(status, StatusCode::OK);
    let all = state_map(&all);
    assert_eq!(all["org.example.slot|k"]["content"], json!({ "v": 2 }));
    assert_eq!(
        all["org.example.slot|a/b"]["content"],
        json!({ "key": "a/b" })
    );
    assert_eq!(all["m.room.topic|"]["content"], json!({ "topic": "two" }));
    // Bodies must be JSON objects.
    for (body, errcode) in [
        ("nope", "M_NOT_JSON"),
        ("[]", "M_BAD_JSON"),
        ("1", "M_BAD_JSON"),
    ] {
        let response = server
            .client
            .put(room_url(&server, &room, "/state/org.example.slot/k"))
            .bearer_auth(t)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("request");
        let status = response.status();
        let answer: Value = response.json().await.expect("JSON error");
        assert_error(&(status, answer), StatusCode::BAD_REQUEST, errcode);
    }
    // Empty content is allowed.
    let (status, _) = put("/state/org.example.empty", json!({})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        get("/state/org.example.empty/").await,
        (StatusCode::OK, json!({}))
    );
}

async fn format_event_returns_the_client_event(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let t = &alice.token;
    let room = create_room(&server, t, json!({ "room_version": "11" })).await;
    let (_, put) = put_state(
        &server,
        t,
        &room,
        "m.room.topic",
        "",
        json!({ "topic": "t" }),
    )
    .await;
    for path in [
        "/state/m.room.topic?format=event",
        "/state/m.room.topic/?format=event",
    ] {
        let (status, event) = server
            .request(Method::GET, room_url(&server, &room, path), Some(t), None)
            .await;
        assert_eq!(status, StatusCode::OK, "{event}");
        assert_eq!(event["event_id"], put["event_id"]);
        assert_eq!(event["type"], "m.room.topic");
        assert_eq!(event["state_key"], "");
        assert_eq!(event["sender"], alice.user_id);
        assert_eq!(event["room_id"], room);
        assert_eq!(event["content"], json!({ "topic": "t" }));
        assert!(event["origin_server_ts"].as_u64().unwrap() > 1_600_000_000_000);
        // Federation-only fields are not in the client format.
        for field in [
            "hashes",
            "signatures",
            "auth_events",
            "prev_events",
            "depth",
            "origin",
        ] {
            assert!(event.get(field).is_none(), "{field} in {event}");
        }
    }
    // Any other format is the content.
    let (status, content) = server
        .request(
            Method::GET,
            room_url(&server, &room, "/state/m.room.topic?format=content"),
            Some(t),
            None,
        )
        .await;
    assert_eq!((status, content), (StatusCode::OK, json!({ "topic": "t" })));
}

async fn missing_state_is_not_found(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let t = &alice.token;
    let room = create_room(&server, t, json!({ "room_version": "11" })).await;
    for (kind, key) in [
        ("m.room.name", ""),
        ("org.example.none", "x"),
        ("m.room.member", "@nobody:localhost"),
        ("m.room.create", "not-empty"),
    ] {
        let answer = get_state(&server, t, &room, kind, key).await;
        assert_error(&answer, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    }
}

async fn state_default_and_per_type_levels_guard_state(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = create_room(
        &server,
        &alice.token,
        json!({
            "preset": "public_chat",
            "room_version": "11",
            "power_level_content_override": { "events": { "org.example.open": 0, "m.room.name": 50 } },
        }),
    )
    .await;
    join(&server, &bob.token, &room).await;
    // state_default (50) guards types without their own level.
    for (kind, key) in [
        ("m.room.topic", ""),
        ("org.example.custom", ""),
        ("org.example.custom", "k"),
    ] {
        let answer = put_state(
            &server,
            &bob.token,
            &room,
            kind,
            key,
            json!({ "topic": "x" }),
        )
        .await;
        assert_error(&answer, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    }
    let answer = put_state(
        &server,
        &bob.token,
        &room,
        "m.room.name",
        "",
        json!({ "name": "x" }),
    )
    .await;
    assert_error(&answer, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    // A per-type level below state_default lets him.
    let (status, answer) = put_state(
        &server,
        &bob.token,
        &room,
        "org.example.open",
        "",
        json!({ "ok": true }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    // Nothing he was refused was stored.
    let answer = get_state(&server, &bob.token, &room, "org.example.custom", "").await;
    assert_error(&answer, StatusCode::NOT_FOUND, "M_NOT_FOUND");

    // Lowering state_default opens the rest.
    let mut levels = state_content(&server, &alice.token, &room, "m.room.power_levels", "").await;
    levels["state_default"] = json!(0);
    let (status, _) = put_state(
        &server,
        &alice.token,
        &room,
        "m.room.power_levels",
        "",
        levels,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, answer) = put_state(
        &server,
        &bob.token,
        &room,
        "m.room.topic",
        "",
        json!({ "topic": "bob" }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    // m.room.name keeps its own 50.
    let answer = put_state(
        &server,
        &bob.token,
        &room,
        "m.room.name",
        "",
        json!({ "name": "x" }),
    )
    .await;
    assert_error(&answer, StatusCode::FORBIDDEN, "M_FORBIDDEN");
}

async fn power_levels_cannot_be_escalated(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let room = create_room(
        &server,
        &alice.token,
        json!({
            "preset": "public_chat",
            "room_version": "11",
            "power_level_content_override": {
                "users": { alice.user_id.clone(): 100, bob.user_id.clone(): 50 },
                "events": { "m.room.power_levels": 50 },
            },
        }),
    )
    .await;
    join(&server, &bob.token, &room).await;
    join(&server, &carol.token, &room).await;
    let levels = state_content(&server, &alice.token, &room, "m.room.power_levels", "").await;
    let with = |edit: &dyn Fn(&mut Value)| {
        let mut levels = levels.clone();
        edit(&mut levels);
        levels
    };
    let refused = [
        // Raising himself above his own level.
        with(&|l| l["users"][&bob.user_id] = json!(51)),
        with(&|l| l["users"][&bob.user_id] = json!(100)),
        // Giving someone more than he has.
        with(&|l| l["users"][&carol.user_id] = json!(60)),
        // Touching someone above him.
        with(&|l| l["users"][&alice.user_id] = json!(50)),
        with(&|l| {
            l["users"].as_object_mut().unwrap().remove(&alice.user_id);
        }),
        // Raising a level past his own.
        with(&|l| l["ban"] = json!(75)),
        with(&|l| l["events"]["m.room.name"] = json!(99)),
        // Changing a level that is already above him.
        with(&|l| l["events"]["m.room.power_levels"] = json!(100)),
    ];
    for levels in refused {
        let answer = put_state(
            &server,
            &bob.token,
            &room,
            "m.room.power_levels",
            "",
            levels.clone(),
        )
        .await;
        assert_error(&answer, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    }
    let current = state_content(&server, &alice.token, &room, "m.room.power_levels", "").await;
    assert_eq!(current, levels, "refused edits left the levels alone");
    // Up to his own level is fine.
    let granted = with(&|l| l["users"][&carol.user_id] = json!(50));
    let (status, answer) = put_state(
        &server,
        &bob.token,
        &room,
        "m.room.power_levels",
        "",
        granted.clone(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    // Carol, now 50 like bob, cannot demote him (equal, not below).
    let demote = with(&|l| {
        l["users"][&carol.user_id] = json!(50);
        l["users"][&bob.user_id] = json!(0);
    });
    let answer = put_state(
        &server,
        &carol.token,
        &room,
        "m.room.power_levels",
        "",
        demote,
    )
    .await;
    assert_error(&answer, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    // But he may lower himself.
    let lowered = with(&|l| {
        l["users"][&carol.user_id] = json!(50);
        l["users"][&bob.user_id] = json!(10);
    });
    let (status, answer) = put_state(
        &server,
        &bob.token,
        &room,
        "m.room.power_levels",
        "",
        lowered,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    // Malformed levels are refused, not stored.
    let answer = put_state(
        &server,
        &alice.token,
        &room,
        "m.room.power_levels",
        "",
        json!({ "users": { "not a user": 5 } }),
    )
    .await;
    assert_error(&answer, StatusCode::FORBIDDEN, "M_FORBIDDEN");
}

async fn user_id_state_keys_belong_to_their_user(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = create_room(
        &server,
        &alice.token,
        json!({ "preset": "public_chat", "room_version": "11" }),
    )
    .await;
    join(&server, &bob.token, &room).await;
    // Rooms v1-v11: a state key starting with `@` must be the sender's own id.
    let answer = put_state(
        &server,
        &alice.token,
        &room,
        "org.example.pos",
        &bob.user_id,
        json!({}),
    )
    .await;
    assert_error(&answer, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let (status, answer) = put_state(
        &server,
        &alice.token,
        &room,
        "org.example.pos",
        &alice.user_id,
        json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    // Member events through the state endpoint still follow membership rules.
    let answer = put_state(
        &server,
        &bob.token,
        &room,
        "m.room.member",
        &alice.user_id,
        json!({ "membership": "leave" }),
    )
    .await;
    assert_error(&answer, StatusCode::FORBIDDEN, "M_FORBIDDEN");
}

async fn state_and_members_for_members_former_members_and_strangers(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let stranger = server.register("stranger").await;
    let room = create_room(
        &server,
        &alice.token,
        json!({ "preset": "public_chat", "room_version": "11", "topic": "before" }),
    )
    .await;
    join(&server, &bob.token, &room).await;
    let (status, state) = get_room(&server, &bob.token, &room, "state").await;
    assert_eq!(status, StatusCode::OK);
    let state = state_map(&state);
    for key in [
        "m.room.create|",
        "m.room.power_levels|",
        "m.room.join_rules|",
        "m.room.history_visibility|",
        "m.room.guest_access|",
        "m.room.topic|",
    ] {
        assert!(state.contains_key(key), "{key} in {state:?}");
    }
    assert_eq!(
        state[&format!("m.room.member|{}", bob.user_id)]["content"]["membership"],
        "join"
    );

    // Bob leaves; the room moves on without him.
    let answer = membership(&server, &bob.token, &room, "leave", json!({})).await;
    assert_eq!(answer.0, StatusCode::OK);
    let (status, _) = put_state(
        &server,
        &alice.token,
        &room,
        "m.room.topic",
        "",
        json!({ "topic": "after" }),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let carol = server.register("carol").await;
    join(&server, &carol.token, &room).await;

    // Bob sees the state as of his leave.
    assert_eq!(
        state_content(&server, &bob.token, &room, "m.room.topic", "").await,
        json!({ "topic": "before" })
    );
    let (status, state) = get_room(&server, &bob.token, &room, "state").await;
    assert_eq!(status, StatusCode::OK);
    let state = state_map(&state);
    assert_eq!(state["m.room.topic|"]["content"]["topic"], "before");
    assert_eq!(
        state[&format!("m.room.member|{}", bob.user_id)]["content"]["membership"],
        "leave"
    );
    assert!(!state.contains_key(&format!("m.room.member|{}", carol.user_id)));
    let (status, members) = get_room(&server, &bob.token, &room, "members").await;
    assert_eq!(status, StatusCode::OK);
    let mut who: Vec<&str> = members["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["state_key"].as_str().unwrap())
        .collect();
    who.sort();
    assert_eq!(who, [alice.user_id.as_str(), bob.user_id.as_str()]);
    // Alice sees the current state.
    assert_eq!(
        state_content(&server, &alice.token, &room, "m.room.topic", "").await,
        json!({ "topic": "after" })
    );

    // An invitee who never joined is not (and was not) a member either.
    let dave = server.register("dave").await;
    invite(&server, &alice.token, &room, &dave.user_id).await;
    for what in ["state", "members", "state/m.room.topic"] {
        let answer = get_room(&server, &dave.token, &room, what).await;
        assert_error(&answer, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    }
    // A stranger sees nothing.
    for what in [
        "state",
        "members",
        "state/m.room.topic",
        "state/m.room.create/",
    ] {
        let answer = get_room(&server, &stranger.token, &room, what).await;
        assert_error(&answer, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    }
    // A room the server does not know is one nobody was in: 403 as well.
    for what in ["state", "members", "joined_members", "state/m.room.create"] {
        let answer = get_room(&server, &stranger.token, "!unknown:localhost", what).await;
        assert_error(&answer, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    }
    // Unless the history is world-readable.
    let (status, _) = put_state(
        &server,
        &alice.token,
        &room,
        "m.room.history_visibility",
        "",
        json!({ "history_visibility": "world_readable" }),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        state_content(&server, &stranger.token, &room, "m.room.topic", "").await,
        json!({ "topic": "after" })
    );
}

async fn members_filters(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let dave = server.register("dave").await;
    let room = create_room(
        &server,
        &alice.token,
        json!({ "preset": "public_chat", "room_version": "11" }),
    )
    .await;
    join(&server, &bob.token, &room).await;
    let answer = membership(&server, &bob.token, &room, "leave", json!({})).await;
    assert_eq!(answer.0, StatusCode::OK);
    invite(&server, &alice.token, &room, &carol.user_id).await;
    let answer = membership(
        &server,
        &alice.token,
        &room,
        "ban",
        json!({ "user_id": dave.user_id }),
    )
    .await;
    assert_eq!(answer.0, StatusCode::OK);

    let members = |query: &'static str| {
        let server = &server;
        let token = alice.token.clone();
        let room = room.clone();
        async move {
            let (status, answer) =
                get_room(server, &token, &room, &format!("members{query}")).await;
            assert_eq!(status, StatusCode::OK, "{query}: {answer}");
            let mut who: Vec<String> = answer["chunk"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| {
                    assert_eq!(m["type"], "m.room.member");
                    format!(
                        "{}={}",
                        m["state_key"]
                            .as_str()
                            .unwrap()
                            .trim_end_matches(":localhost"),
                        m["content"]["membership"].as_str().unwrap()
                    )
                })
                .collect();
            who.sort();
            who
        }
    };
    assert_eq!(
        members("").await,
        ["@alice=join", "@bob=leave", "@carol=invite", "@dave=ban"]
    );
    assert_eq!(members("?membership=join").await, ["@alice=join"]);
    assert_eq!(members("?membership=invite").await, ["@carol=invite"]);
    assert_eq!(
        members("?not_membership=leave").await,
        ["@alice=join", "@carol=invite", "@dave=ban"]
    );
    // "When specified alongside not_membership, the two parameters create an
    // 'or' condition: either the membership is the same as membership or is
    // not the same as not_membership."
    assert_eq!(
        members("?membership=join&not_membership=invite").await,
        ["@alice=join", "@bob=leave", "@dave=ban"]
    );
    let answer = get_room(&server, &alice.token, &room, "members?membership=nonsense").await;
    assert!(
        answer.0 == StatusCode::OK && answer.1["chunk"] == json!([])
            || answer.0 == StatusCode::BAD_REQUEST,
        "{answer:?}"
    );
}

async fn joined_members_only_for_members(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let stranger = server.register("stranger").await;
    let (status, _) = server
        .request(
            Method::PUT,
            server.v3(&format!("/profile/{}/displayname", enc(&alice.user_id))),
            Some(&alice.token),
            Some(json!({ "displayname": "Alice" })),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = server
        .request(
            Method::PUT,
            server.v3(&format!("/profile/{}/avatar_url", enc(&alice.user_id))),
            Some(&alice.token),
            Some(json!({ "avatar_url": "mxc://localhost/a" })),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let room = create_room(
        &server,
        &alice.token,
        json!({ "preset": "public_chat", "room_version": "11", "invite": [stranger.user_id] }),
    )
    .await;
    join(&server, &bob.token, &room).await;
    let (status, answer) = get_room(&server, &bob.token, &room, "joined_members").await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let joined = answer["joined"].as_object().unwrap();
    let mut ids: Vec<&String> = joined.keys().collect();
    ids.sort();
    assert_eq!(
        ids,
        [&alice.user_id, &bob.user_id],
        "invitees are not joined"
    );
    assert_eq!(joined[&alice.user_id]["display_name"], "Alice");
    assert_eq!(joined[&alice.user_id]["avatar_url"], "mxc://localhost/a");
    // Bob has no profile: the fields (strings in the spec) are left out.
    assert_eq!(joined[&bob.user_id], json!({}));

    // The invited stranger, and bob after leaving, are not members.
    let answer = get_room(&server, &stranger.token, &room, "joined_members").await;
    assert_error(&answer, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let left = membership(&server, &bob.token, &room, "leave", json!({})).await;
    assert_eq!(left.0, StatusCode::OK);
    let answer = get_room(&server, &bob.token, &room, "joined_members").await;
    assert_error(&answer, StatusCode::FORBIDDEN, "M_FORBIDDEN");
}

async fn state_the_rules_refuse(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let t = &alice.token;
    let room = create_room(&server, t, json!({ "room_version": "11" })).await;
    let refused = [
        // A second create event (it must be the first event of the room).
        (
            "m.room.create",
            "".to_owned(),
            json!({ "room_version": "11" }),
        ),
        // Unknown or missing memberships.
        (
            "m.room.member",
            alice.user_id.clone(),
            json!({ "membership": "dance" }),
        ),
        (
            "m.room.member",
            alice.user_id.clone(),
            json!({ "displayname": "x" }),
        ),
        // Power levels with non-integer values (v10+).
        ("m.room.power_levels", "".to_owned(), json!({ "ban": "50" })),
        (
            "m.room.power_levels",
            "".to_owned(),
            json!({ "events": { "m.room.name": "1" } }),
        ),
    ];
    for (kind, key, content) in refused {
        let answer = put_state(&server, t, &room, kind, &key, content.clone()).await;
        assert_error(&answer, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    }
    // The room is intact: alice is still joined and in charge.
    let member = state_content(&server, t, &room, "m.room.member", &alice.user_id).await;
    assert_eq!(member["membership"], "join");
    let levels = state_content(&server, t, &room, "m.room.power_levels", "").await;
    assert_eq!(levels["users"][&alice.user_id], 100);
    let create = state_content(&server, t, &room, "m.room.create", "").await;
    assert_eq!(create["room_version"], "11");
}

/// `PUT /state` with the content the slot already has from the same
/// sender, and `/join` while joined, answer with the existing event and
/// add nothing to the room.
/// How many events `/messages` shows of the room, newest first.
async fn event_count(server: &TestServer, token: &str, room: &str) -> usize {
    let url = room_url(server, room, "/messages?dir=b&limit=100");
    let (status, page) = server.request(Method::GET, url, Some(token), None).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    page["chunk"].as_array().expect("chunk").len()
}

async fn repeating_the_current_state_writes_nothing(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let t = &alice.token;
    let anyone_sets_the_topic = json!({
        "preset": "public_chat",
        "power_level_content_override": { "events": { "m.room.topic": 0 } },
    });
    let room = create_room(&server, t, anyone_sets_the_topic).await;
    join(&server, &bob.token, &room).await;
    let topic = json!({ "topic": "the same" });
    let (status, first) = put_state(&server, t, &room, "m.room.topic", "", topic.clone()).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    let before = event_count(&server, t, &room).await;
    let (status, again) = put_state(&server, t, &room, "m.room.topic", "", topic.clone()).await;
    assert_eq!((status, &again), (StatusCode::OK, &first));
    join(&server, &bob.token, &room).await;
    assert_eq!(
        event_count(&server, t, &room).await,
        before,
        "nothing was added"
    );

    // Another sender, or other content, is a new event.
    let (status, by_bob) = put_state(&server, &bob.token, &room, "m.room.topic", "", topic).await;
    assert_eq!(status, StatusCode::OK, "{by_bob}");
    assert_ne!(by_bob, first);
    let (status, changed) = put_state(
        &server,
        t,
        &room,
        "m.room.topic",
        "",
        json!({ "topic": "new" }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{changed}");
    assert_eq!(event_count(&server, t, &room).await, before + 2);
}
