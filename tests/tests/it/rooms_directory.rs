//! Room aliases (`/directory/room/{roomAlias}`, `GET /rooms/{roomId}/aliases`,
//! `m.room.canonical_alias` checks) and the published room directory
//! (`/directory/list/room/{roomId}`, `GET`/`POST /publicRooms`), per the
//! client-server-api "Room aliases" and "Published room directory" sections.

use myelin_tests::{Backend, TestServer, assert_error, backend_tests};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::rooms_support::{create_room, enc, get_room, invite, join, put_state, state_content};

backend_tests!(
    aliases_are_created_resolved_and_deleted,
    only_members_create_aliases_and_only_local_ones,
    alias_deletion_needs_the_creator_or_canonical_alias_power,
    room_aliases_lists_local_aliases_for_members,
    canonical_alias_must_point_at_the_room,
    visibility_is_set_by_the_powerful,
    public_rooms_lists_searches_and_pages,
    public_rooms_filters_room_types,
    deleting_an_alias_drops_it_from_the_canonical_alias,
);

fn alias_url(server: &TestServer, alias: &str) -> String {
    server.v3(&format!("/directory/room/{}", enc(alias)))
}

async fn put_alias(
    server: &TestServer,
    token: &str,
    alias: &str,
    room: &str,
) -> (StatusCode, Value) {
    server
        .request(
            Method::PUT,
            alias_url(server, alias),
            Some(token),
            Some(json!({ "room_id": room })),
        )
        .await
}

async fn aliases_are_created_resolved_and_deleted(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let t = &alice.token;
    let room = create_room(&server, t, json!({ "room_version": "11" })).await;
    let other = create_room(&server, t, json!({ "room_version": "11" })).await;

    assert_eq!(
        put_alias(&server, t, "#a:localhost", &room).await,
        (StatusCode::OK, json!({}))
    );
    // Resolving needs no token.
    let resolved = server
        .request(Method::GET, alias_url(&server, "#a:localhost"), None, None)
        .await;
    assert_eq!(
        resolved,
        (
            StatusCode::OK,
            json!({ "room_id": room, "servers": ["localhost"] })
        )
    );
    // Taken, even for another room: 409.
    let answer = put_alias(&server, t, "#a:localhost", &other).await;
    assert_error(&answer, StatusCode::CONFLICT, "M_UNKNOWN");
    let answer = put_alias(&server, t, "#a:localhost", &room).await;
    assert_error(&answer, StatusCode::CONFLICT, "M_UNKNOWN");
    // Unicode local parts are valid aliases.
    assert_eq!(
        put_alias(&server, t, "#café:localhost", &other).await,
        (StatusCode::OK, json!({}))
    );
    let (_, resolved) = server
        .request(
            Method::GET,
            alias_url(&server, "#café:localhost"),
            None,
            None,
        )
        .await;
    assert_eq!(resolved["room_id"], other);

    let deleted = server
        .request(
            Method::DELETE,
            alias_url(&server, "#a:localhost"),
            Some(t),
            None,
        )
        .await;
    assert_eq!(deleted, (StatusCode::OK, json!({})));
    let answer = server
        .request(Method::GET, alias_url(&server, "#a:localhost"), None, None)
        .await;
    assert_error(&answer, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    let answer = server
        .request(
            Method::DELETE,
            alias_url(&server, "#a:localhost"),
            Some(t),
            None,
        )
        .await;
    assert_error(&answer, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    // Free again: it can point somewhere else now.
    assert_eq!(
        put_alias(&server, t, "#a:localhost", &other).await,
        (StatusCode::OK, json!({}))
    );

    // Malformed aliases.
    for alias in ["nohash:localhost", "#nocolon", "!room:localhost"] {
        let answer = server
            .request(Method::GET, alias_url(&server, alias), None, None)
            .await;
        assert_error(&answer, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
        let answer = put_alias(&server, t, alias, &room).await;
        assert_error(&answer, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    }
    let answer = server
        .request(
            Method::PUT,
            alias_url(&server, "#b:localhost"),
            Some(t),
            Some(json!({})),
        )
        .await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "M_BAD_JSON");
    let answer = server
        .request(
            Method::PUT,
            alias_url(&server, "#b:localhost"),
            None,
            Some(json!({ "room_id": room })),
        )
        .await;
    assert_error(&answer, StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN");
}

async fn only_members_create_aliases_and_only_local_ones(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = create_room(
        &server,
        &alice.token,
        json!({ "preset": "public_chat", "room_version": "11" }),
    )
    .await;
    let answer = put_alias(&server, &bob.token, "#bobs:localhost", &room).await;
    assert_error(&answer, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let answer = server
        .request(
            Method::GET,
            alias_url(&server, "#bobs:localhost"),
            None,
            None,
        )
        .await;
    assert_error(&answer, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    join(&server, &bob.token, &room).await;
    assert_eq!(
        put_alias(&server, &bob.token, "#bobs:localhost", &room).await,
        (StatusCode::OK, json!({}))
    );
    // Another server's alias cannot be created (or deleted) here.
    let answer = put_alias(&server, &alice.token, "#x:elsewhere.example", &room).await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    // A room the server does not know.
    let answer = put_alias(
        &server,
        &alice.token,
        "#ghost:localhost",
        "!ghost:localhost",
    )
    .await;
    assert_error(&answer, StatusCode::NOT_FOUND, "M_NOT_FOUND");
}

async fn alias_deletion_needs_the_creator_or_canonical_alias_power(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let room = create_room(
        &server,
        &alice.token,
        json!({ "preset": "public_chat", "room_version": "11" }),
    )
    .await;
    join(&server, &bob.token, &room).await;
    join(&server, &carol.token, &room).await;
    for alias in ["#bob1:localhost", "#bob2:localhost"] {
        assert_eq!(
            put_alias(&server, &bob.token, alias, &room).await,
            (StatusCode::OK, json!({}))
        );
    }
    let delete = |token: String, alias: &str| {
        let url = alias_url(&server, alias);
        let server = &server;
        async move {
            server
                .request(Method::DELETE, url, Some(&token), None)
                .await
        }
    };
    // Carol neither created it nor may set m.room.canonical_alias (50).
    let answer = delete(carol.token.clone(), "#bob1:localhost").await;
    assert_error(&answer, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    // The creator may.
    assert_eq!(
        delete(bob.token.clone(), "#bob1:localhost").await,
        (StatusCode::OK, json!({}))
    );
    // So may alice, with the power to set the canonical alias.
    assert_eq!(
        delete(alice.token.clone(), "#bob2:localhost").await,
        (StatusCode::OK, json!({}))
    );
    // And power given later counts.
    assert_eq!(
        put_alias(&server, &bob.token, "#bob3:localhost", &room).await,
        (StatusCode::OK, json!({}))
    );
    let mut levels = state_content(&server, &alice.token, &room, "m.room.power_levels", "").await;
    levels["users"][&carol.user_id] = json!(50);
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
    assert_eq!(
        delete(carol.token.clone(), "#bob3:localhost").await,
        (StatusCode::OK, json!({}))
    );
}

async fn room_aliases_lists_local_aliases_for_members(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let stranger = server.register("stranger").await;
    let room = create_room(
        &server,
        &alice.token,
        json!({ "room_version": "11", "room_alias_name": "main" }),
    )
    .await;
    assert_eq!(
        put_alias(&server, &alice.token, "#second:localhost", &room).await,
        (StatusCode::OK, json!({}))
    );
    let (status, answer) = get_room(&server, &alice.token, &room, "aliases").await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let mut aliases: Vec<&str> = answer["aliases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    aliases.sort();
    assert_eq!(aliases, ["#main:localhost", "#second:localhost"]);
    // External users get M_FORBIDDEN...
    let answer = get_room(&server, &stranger.token, &room, "aliases").await;
    assert_error(&answer, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    // ...unless the room is world-readable.
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
    let (status, answer) = get_room(&server, &stranger.token, &room, "aliases").await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["aliases"].as_array().unwrap().len(), 2);
    // A room the server does not know: not a member either.
    let answer = get_room(&server, &stranger.token, "!ghost:localhost", "aliases").await;
    assert_error(&answer, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    // A room without aliases has an empty list.
    let bare = create_room(&server, &alice.token, json!({})).await;
    let answer = get_room(&server, &alice.token, &bare, "aliases").await;
    assert_eq!(answer, (StatusCode::OK, json!({ "aliases": [] })));
}

async fn canonical_alias_must_point_at_the_room(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let t = &alice.token;
    let room = create_room(&server, t, json!({ "room_version": "11" })).await;
    let other = create_room(&server, t, json!({ "room_version": "11" })).await;
    for (alias, target) in [
        ("#here:localhost", &room),
        ("#alt:localhost", &room),
        ("#there:localhost", &other),
    ] {
        assert_eq!(
            put_alias(&server, t, alias, target).await,
            (StatusCode::OK, json!({}))
        );
    }
    let set = |content: Value| put_state(&server, t, &room, "m.room.canonical_alias", "", content);

    // Aliases pointing elsewhere, or nowhere: M_BAD_ALIAS.
    for content in [
        json!({ "alias": "#there:localhost" }),
        json!({ "alias": "#nowhere:localhost" }),
        json!({ "alias": "#here:localhost", "alt_aliases": ["#there:localhost"] }),
    ] {
        let answer = set(content.clone()).await;
        assert_error(&answer, StatusCode::BAD_REQUEST, "M_BAD_ALIAS");
    }
    // Invalid syntax: M_INVALID_PARAM.
    for content in [
        json!({ "alias": "not an alias" }),
        json!({ "alias": "#here:localhost", "alt_aliases": ["nohash"] }),
    ] {
        let answer = set(content.clone()).await;
        assert_error(&answer, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    }
    let answer = get_room(&server, t, &room, "state/m.room.canonical_alias").await;
    assert_error(&answer, StatusCode::NOT_FOUND, "M_NOT_FOUND");

    let (status, answer) =
        set(json!({ "alias": "#here:localhost", "alt_aliases": ["#alt:localhost"] })).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    // Removing every alias is always allowed.
    let (status, answer) = set(json!({})).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let (status, answer) = set(json!({ "alias": "#here:localhost" })).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    // "Servers do not validate aliases which are being removed or are
    // already present in the state event": once bob's alias is deleted from
    // the directory (by bob, who may not change the canonical alias, so it
    // stays there), the event can still be updated while keeping it.
    let bob = server.register("bob").await;
    invite(&server, t, &room, &bob.user_id).await;
    join(&server, &bob.token, &room).await;
    assert_eq!(
        put_alias(&server, &bob.token, "#bobs:localhost", &room).await,
        (StatusCode::OK, json!({}))
    );
    let (status, answer) =
        set(json!({ "alias": "#here:localhost", "alt_aliases": ["#bobs:localhost"] })).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let deleted = server
        .request(
            Method::DELETE,
            alias_url(&server, "#bobs:localhost"),
            Some(&bob.token),
            None,
        )
        .await;
    assert_eq!(deleted.0, StatusCode::OK);
    let (status, answer) = set(json!({
        "alias": "#here:localhost",
        "alt_aliases": ["#bobs:localhost", "#alt:localhost"],
    }))
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    // New aliases are still checked.
    let answer =
        set(json!({ "alias": "#here:localhost", "alt_aliases": ["#there:localhost"] })).await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "M_BAD_ALIAS");
}

async fn visibility_is_set_by_the_powerful(backend: Backend) {
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
    let url = server.v3(&format!("/directory/list/room/{}", enc(&room)));
    let get = || server.request(Method::GET, url.clone(), None, None);
    assert_eq!(
        get().await,
        (StatusCode::OK, json!({ "visibility": "private" }))
    );

    let answer = server
        .request(
            Method::PUT,
            url.clone(),
            Some(&bob.token),
            Some(json!({ "visibility": "public" })),
        )
        .await;
    assert_error(&answer, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    assert_eq!(
        get().await,
        (StatusCode::OK, json!({ "visibility": "private" }))
    );
    let answer = server
        .request(
            Method::PUT,
            url.clone(),
            Some(&alice.token),
            Some(json!({ "visibility": "public" })),
        )
        .await;
    assert_eq!(answer, (StatusCode::OK, json!({})));
    assert_eq!(
        get().await,
        (StatusCode::OK, json!({ "visibility": "public" }))
    );
    let answer = server
        .request(
            Method::PUT,
            url.clone(),
            Some(&alice.token),
            Some(json!({ "visibility": "private" })),
        )
        .await;
    assert_eq!(answer, (StatusCode::OK, json!({})));
    assert_eq!(
        get().await,
        (StatusCode::OK, json!({ "visibility": "private" }))
    );
    // `visibility` "Defaults to 'public'".
    let answer = server
        .request(
            Method::PUT,
            url.clone(),
            Some(&alice.token),
            Some(json!({})),
        )
        .await;
    assert_eq!(answer, (StatusCode::OK, json!({})));
    assert_eq!(
        get().await,
        (StatusCode::OK, json!({ "visibility": "public" }))
    );

    let answer = server
        .request(
            Method::PUT,
            url.clone(),
            Some(&alice.token),
            Some(json!({ "visibility": "secret" })),
        )
        .await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    // Alice keeps her power level entry after leaving, not her say.
    let left =
        crate::rooms_support::membership(&server, &alice.token, &room, "leave", json!({})).await;
    assert_eq!(left.0, StatusCode::OK);
    let answer = server
        .request(
            Method::PUT,
            url.clone(),
            Some(&alice.token),
            Some(json!({ "visibility": "private" })),
        )
        .await;
    assert_error(&answer, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    assert_eq!(
        get().await,
        (StatusCode::OK, json!({ "visibility": "public" }))
    );
    let unknown = server.v3(&format!("/directory/list/room/{}", enc("!ghost:localhost")));
    let answer = server
        .request(Method::GET, unknown.clone(), None, None)
        .await;
    assert_error(&answer, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    let answer = server
        .request(
            Method::PUT,
            unknown,
            Some(&alice.token),
            Some(json!({ "visibility": "public" })),
        )
        .await;
    assert_error(&answer, StatusCode::NOT_FOUND, "M_NOT_FOUND");
}

fn room_ids(page: &Value) -> Vec<String> {
    page["chunk"]
        .as_array()
        .unwrap_or_else(|| panic!("no chunk in {page}"))
        .iter()
        .map(|r| r["room_id"].as_str().unwrap().to_owned())
        .collect()
}

async fn public_rooms_lists_searches_and_pages(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let t = &alice.token;
    let big = create_room(
        &server,
        t,
        json!({
            "visibility": "public",
            "name": "Rust Lounge",
            "topic": "Borrow checker therapy",
            "room_alias_name": "rust",
        }),
    )
    .await;
    join(&server, &bob.token, &big).await;
    let small = create_room(
        &server,
        t,
        json!({ "visibility": "public", "name": "Gardening", "topic": "Tomatoes and RUSTY tools" }),
    )
    .await;
    let third = create_room(&server, t, json!({ "visibility": "public" })).await;
    let _hidden = create_room(
        &server,
        t,
        json!({ "preset": "public_chat", "name": "Rust secret" }),
    )
    .await;

    let (status, page) = server
        .request(Method::GET, server.v3("/publicRooms"), None, None)
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["total_room_count_estimate"], 3);
    let ids = room_ids(&page);
    assert_eq!(ids.len(), 3);
    // Largest rooms first.
    assert_eq!(ids[0], big);
    let entry = &page["chunk"][0];
    assert_eq!(entry["name"], "Rust Lounge");
    assert_eq!(entry["topic"], "Borrow checker therapy");
    assert_eq!(entry["canonical_alias"], "#rust:localhost");
    assert_eq!(entry["num_joined_members"], 2);
    assert_eq!(entry["world_readable"], false);
    assert_eq!(entry["guest_can_join"], false);
    assert_eq!(entry["join_rule"], "public");
    assert!(page.get("next_batch").is_none(), "{page}");

    // Search: name, topic and alias, case-insensitively.
    let search = |term: &str| {
        server.request(
            Method::POST,
            server.v3("/publicRooms"),
            Some(t),
            Some(json!({ "filter": { "generic_search_term": term } })),
        )
    };
    let (status, found) = search("rust").await;
    assert_eq!(status, StatusCode::OK, "{found}");
    let mut ids = room_ids(&found);
    ids.sort();
    let mut expected = vec![big.clone(), small.clone()];
    expected.sort();
    assert_eq!(ids, expected);
    assert_eq!(room_ids(&search("THERAPY").await.1), [big.clone()]);
    assert_eq!(room_ids(&search("#rust:").await.1), [big.clone()]);
    assert_eq!(
        room_ids(&search("nothing like it").await.1),
        Vec::<String>::new()
    );
    assert_eq!(room_ids(&search("").await.1).len(), 3);

    // Paging with limit and since, forwards and back.
    let mut seen = Vec::new();
    let mut since: Option<String> = None;
    let mut first_page_prev = None;
    loop {
        let query = match &since {
            Some(token) => format!("/publicRooms?limit=1&since={}", enc(token)),
            None => "/publicRooms?limit=1".to_owned(),
        };
        let (status, page) = server
            .request(Method::GET, server.v3(&query), None, None)
            .await;
        assert_eq!(status, StatusCode::OK, "{page}");
        assert_eq!(page["chunk"].as_array().unwrap().len(), 1, "{page}");
        if since.is_none() {
            first_page_prev = Some(page.get("prev_batch").cloned());
        }
        seen.extend(room_ids(&page));
        match page["next_batch"].as_str() {
            Some(next) => since = Some(next.to_owned()),
            None => break,
        }
        assert!(seen.len() <= 3, "paging does not end: {seen:?}");
    }
    assert_eq!(
        first_page_prev,
        Some(None),
        "no prev_batch on the first page"
    );
    let mut all = seen.clone();
    all.sort();
    let mut expected = vec![big.clone(), small.clone(), third.clone()];
    expected.sort();
    assert_eq!(all, expected, "every room exactly once");
    // The POST form pages too, and prev_batch goes back.
    let (_, second) = server
        .request(
            Method::POST,
            server.v3("/publicRooms"),
            Some(t),
            Some(json!({ "limit": 1, "since": since_after_first(&server).await })),
        )
        .await;
    assert_eq!(room_ids(&second), [seen[1].clone()]);
    let prev = second["prev_batch"]
        .as_str()
        .expect("prev_batch")
        .to_owned();
    let (_, back) = server
        .request(
            Method::GET,
            server.v3(&format!("/publicRooms?limit=1&since={}", enc(&prev))),
            None,
            None,
        )
        .await;
    assert_eq!(room_ids(&back), [seen[0].clone()]);

    // Other servers' directories need federation, in either form (`server`
    // is a query parameter for both).
    let answer = server
        .request(
            Method::GET,
            server.v3("/publicRooms?server=elsewhere.example"),
            None,
            None,
        )
        .await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    let answer = server
        .request(
            Method::POST,
            server.v3("/publicRooms?server=elsewhere.example"),
            Some(t),
            Some(json!({})),
        )
        .await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    let (status, own) = server
        .request(
            Method::POST,
            server.v3("/publicRooms?server=localhost"),
            Some(t),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{own}");
    assert_eq!(room_ids(&own).len(), 3);
    // The POST form needs a token; the GET form does not.
    let answer = server
        .request(
            Method::POST,
            server.v3("/publicRooms"),
            None,
            Some(json!({})),
        )
        .await;
    assert_error(&answer, StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN");
    let answer = server
        .request(
            Method::GET,
            server.v3("/publicRooms?since=garbage"),
            None,
            None,
        )
        .await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
}

async fn since_after_first(server: &TestServer) -> String {
    let (_, page) = server
        .request(Method::GET, server.v3("/publicRooms?limit=1"), None, None)
        .await;
    page["next_batch"].as_str().expect("next_batch").to_owned()
}

async fn public_rooms_filters_room_types(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let t = &alice.token;
    let room = create_room(&server, t, json!({ "visibility": "public" })).await;
    let space = create_room(
        &server,
        t,
        json!({ "visibility": "public", "creation_content": { "type": "m.space" } }),
    )
    .await;
    let (_, page) = server
        .request(Method::GET, server.v3("/publicRooms"), None, None)
        .await;
    let chunk = page["chunk"].as_array().unwrap();
    let space_entry = chunk
        .iter()
        .find(|r| r["room_id"] == space)
        .expect("space listed");
    assert_eq!(space_entry["room_type"], "m.space");
    let room_entry = chunk
        .iter()
        .find(|r| r["room_id"] == room)
        .expect("room listed");
    assert!(room_entry.get("room_type").is_none(), "{room_entry}");

    let filtered = |types: Value| {
        server.request(
            Method::POST,
            server.v3("/publicRooms"),
            Some(t),
            Some(json!({ "filter": { "room_types": types } })),
        )
    };
    assert_eq!(
        room_ids(&filtered(json!(["m.space"])).await.1),
        [space.clone()]
    );
    // `null` stands for rooms without a type.
    assert_eq!(room_ids(&filtered(json!([null])).await.1), [room.clone()]);
    assert_eq!(
        room_ids(&filtered(json!([null, "m.space"])).await.1).len(),
        2
    );
}

async fn deleting_an_alias_drops_it_from_the_canonical_alias(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = create_room(&server, &alice.token, json!({ "preset": "public_chat" })).await;
    join(&server, &bob.token, &room).await;
    for alias in ["#main:localhost", "#alt:localhost", "#bobs:localhost"] {
        let token = if alias == "#bobs:localhost" {
            &bob.token
        } else {
            &alice.token
        };
        assert_eq!(
            put_alias(&server, token, alias, &room).await,
            (StatusCode::OK, json!({}))
        );
    }
    let canonical = json!({
        "alias": "#main:localhost",
        "alt_aliases": ["#alt:localhost", "#main:localhost", "#bobs:localhost"],
    });
    let (status, answer) = put_state(
        &server,
        &alice.token,
        &room,
        "m.room.canonical_alias",
        "",
        canonical,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let delete = |token: String, alias: &str| {
        let url = alias_url(&server, alias);
        let server = &server;
        async move {
            server
                .request(Method::DELETE, url, Some(&token), None)
                .await
        }
    };

    assert_eq!(
        delete(alice.token.clone(), "#main:localhost").await.0,
        StatusCode::OK
    );
    assert_eq!(
        state_content(&server, &alice.token, &room, "m.room.canonical_alias", "").await,
        json!({ "alt_aliases": ["#alt:localhost", "#bobs:localhost"] })
    );
    // Bob created his alias and may delete it, but may not send the
    // canonical alias event: it keeps naming the alias.
    assert_eq!(
        delete(bob.token.clone(), "#bobs:localhost").await.0,
        StatusCode::OK
    );
    assert_eq!(
        state_content(&server, &alice.token, &room, "m.room.canonical_alias", "").await,
        json!({ "alt_aliases": ["#alt:localhost", "#bobs:localhost"] })
    );
}
