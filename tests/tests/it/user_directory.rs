//! `POST /user_directory/search` (client-server-api, "User directory"):
//! users who share a room with the searcher and users in public rooms, by
//! user id or display name, kept current through joins, leaves, join rule
//! and profile changes and deactivation; everyone with `search_all_users`.

use myelin_tests::{Backend, TestServer, assert_error, backend_tests};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::rooms_support::{create_room, invite, join, membership, put_state};

backend_tests!(
    finds_room_mates_and_members_of_public_rooms_only,
    follows_leaves_join_rules_profiles_and_deactivation,
    search_all_users_finds_everyone,
    results_are_limited_and_bad_searches_refused,
);

async fn search(server: &TestServer, token: &str, body: Value) -> (StatusCode, Value) {
    let url = server.v3("/user_directory/search");
    server
        .request(Method::POST, url, Some(token), Some(body))
        .await
}

/// The user ids found for `term`, in the order given.
async fn found(server: &TestServer, token: &str, term: &str) -> Vec<String> {
    let (status, answer) = search(server, token, json!({ "search_term": term })).await;
    assert_eq!(status, StatusCode::OK, "search {term}: {answer}");
    answer["results"]
        .as_array()
        .unwrap_or_else(|| panic!("no results in {answer}"))
        .iter()
        .map(|user| user["user_id"].as_str().expect("user_id").to_owned())
        .collect()
}

async fn set_displayname(server: &TestServer, token: &str, user_id: &str, name: &str) {
    let url = server.v3(&format!("/profile/{user_id}/displayname"));
    let answer = server
        .request(
            Method::PUT,
            url,
            Some(token),
            Some(json!({ "displayname": name })),
        )
        .await;
    assert_eq!(answer.0, StatusCode::OK, "{}", answer.1);
}

async fn finds_room_mates_and_members_of_public_rooms_only(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let dave = server.register("dave").await;
    let erin = server.register("erin").await;

    let private = create_room(&server, &alice.token, json!({})).await;
    invite(&server, &alice.token, &private, &bob.user_id).await;
    join(&server, &bob.token, &private).await;
    // Public by join rule alone, not listed in the directory.
    create_room(&server, &carol.token, json!({ "preset": "public_chat" })).await;
    // Dave and erin share a private room alice is not in; erin is only invited
    // to alice's.
    let theirs = create_room(&server, &dave.token, json!({})).await;
    invite(&server, &dave.token, &theirs, &erin.user_id).await;
    join(&server, &erin.token, &theirs).await;
    invite(&server, &alice.token, &private, &erin.user_id).await;

    set_displayname(&server, &bob.token, &bob.user_id, "Robert Paulson").await;
    assert_eq!(
        found(&server, &alice.token, "bob").await,
        vec![bob.user_id.clone()]
    );
    assert_eq!(
        found(&server, &alice.token, "PAULS").await,
        vec![bob.user_id.clone()]
    );
    assert_eq!(
        found(&server, &alice.token, "carol").await,
        vec![carol.user_id.clone()]
    );
    assert!(found(&server, &alice.token, "dave").await.is_empty());
    assert!(found(&server, &alice.token, "erin").await.is_empty());
    // Dave finds erin, with whom he shares a room, and carol, who is public.
    assert_eq!(
        found(&server, &dave.token, "erin").await,
        vec![erin.user_id.clone()]
    );
    assert_eq!(
        found(&server, &dave.token, "carol").await,
        vec![carol.user_id.clone()]
    );
    assert!(found(&server, &dave.token, "bob").await.is_empty());

    let (status, answer) = search(&server, &alice.token, json!({ "search_term": "paulson" })).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        answer,
        json!({
            "results": [{ "user_id": bob.user_id, "display_name": "Robert Paulson" }],
            "limited": false,
        })
    );
}

async fn follows_leaves_join_rules_profiles_and_deactivation(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let private = create_room(&server, &alice.token, json!({})).await;
    invite(&server, &alice.token, &private, &bob.user_id).await;
    join(&server, &bob.token, &private).await;
    let public = create_room(&server, &carol.token, json!({ "preset": "public_chat" })).await;

    assert_eq!(
        found(&server, &alice.token, "bob").await,
        vec![bob.user_id.clone()]
    );
    let answer = membership(&server, &bob.token, &private, "leave", json!({})).await;
    assert_eq!(answer.0, StatusCode::OK);
    assert!(found(&server, &alice.token, "bob").await.is_empty());

    assert_eq!(
        found(&server, &alice.token, "carol").await,
        vec![carol.user_id.clone()]
    );
    let rule = json!({ "join_rule": "invite" });
    let answer = put_state(
        &server,
        &carol.token,
        &public,
        "m.room.join_rules",
        "",
        rule,
    )
    .await;
    assert_eq!(answer.0, StatusCode::OK);
    assert!(found(&server, &alice.token, "carol").await.is_empty());
    let rule = json!({ "join_rule": "public" });
    let answer = put_state(
        &server,
        &carol.token,
        &public,
        "m.room.join_rules",
        "",
        rule,
    )
    .await;
    assert_eq!(answer.0, StatusCode::OK);
    assert_eq!(
        found(&server, &alice.token, "carol").await,
        vec![carol.user_id.clone()]
    );

    set_displayname(&server, &carol.token, &carol.user_id, "Lewis").await;
    assert_eq!(
        found(&server, &alice.token, "lewis").await,
        vec![carol.user_id.clone()]
    );

    let url = server.v3("/account/deactivate");
    let (status, challenge) = server
        .request(
            Method::POST,
            url.clone(),
            Some(&carol.token),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let auth = json!({
        "type": "m.login.password",
        "identifier": { "type": "m.id.user", "user": "carol" },
        "password": myelin_tests::PASSWORD,
        "session": challenge["session"],
    });
    let answer = server
        .request(
            Method::POST,
            url,
            Some(&carol.token),
            Some(json!({ "auth": auth })),
        )
        .await;
    assert_eq!(answer.0, StatusCode::OK, "{}", answer.1);
    assert!(found(&server, &alice.token, "carol").await.is_empty());
}

async fn search_all_users_finds_everyone(backend: Backend) {
    let server = TestServer::start_with(backend, |config| {
        config.user_directory.search_all_users = true;
    })
    .await;
    let alice = server.register("alice").await;
    let hermit = server.register("hermit").await;
    assert_eq!(
        found(&server, &alice.token, "hermit").await,
        vec![hermit.user_id]
    );
}

async fn results_are_limited_and_bad_searches_refused(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let room = create_room(&server, &alice.token, json!({ "preset": "public_chat" })).await;
    for name in ["fan1", "fan2", "fan3"] {
        let fan = server.register(name).await;
        join(&server, &fan.token, &room).await;
    }
    let (status, answer) = search(
        &server,
        &alice.token,
        json!({ "search_term": "fan", "limit": 2 }),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        answer["results"].as_array().map(Vec::len),
        Some(2),
        "{answer}"
    );
    assert_eq!(answer["limited"], true);
    assert_eq!(found(&server, &alice.token, "fan").await.len(), 3);
    // LIKE wildcards are literal characters.
    assert!(found(&server, &alice.token, "f_n").await.is_empty());
    assert!(found(&server, &alice.token, "%").await.is_empty());

    let missing = search(&server, &alice.token, json!({})).await;
    assert_error(&missing, StatusCode::BAD_REQUEST, "M_BAD_JSON");
    let overlong = search(
        &server,
        &alice.token,
        json!({ "search_term": "x".repeat(300) }),
    )
    .await;
    assert_error(&overlong, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    let nul = search(&server, &alice.token, json!({ "search_term": "a\u{0}b" })).await;
    assert_error(&nul, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    let unauthenticated = server
        .request(
            Method::POST,
            server.v3("/user_directory/search"),
            None,
            Some(json!({ "search_term": "fan" })),
        )
        .await;
    assert_eq!(unauthenticated.0, StatusCode::UNAUTHORIZED);
}
