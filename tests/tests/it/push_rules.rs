//! Push rules (client-server-api, "Push rules: API"): the predefined rules,
//! user rules with their placement, enabling and actions, removal, the
//! `m.push_rules` account data sync delivers, and bad input.

use myelin_tests::{Backend, TestServer, assert_error, backend_tests};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::{
    rooms_support::{create_room, enc},
    sync_support::{initial_sync, next_batch, sync_since},
};

backend_tests!(
    predefined_rules_name_the_user,
    user_rules_are_placed_changed_and_removed,
    changes_reach_sync_and_stay_per_user,
    concurrent_edits_are_all_kept,
    bad_rules_are_refused,
    one_kind_is_listed,
);

/// `GET /pushrules/global/{kind}/`: that kind's rules, in order; an
/// unknown kind is a bad parameter.
async fn one_kind_is_listed(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let (status, all) = get(&server, &alice.token, "global/").await;
    assert_eq!(status, StatusCode::OK, "{all}");
    for kind in ["override", "content", "room", "sender", "underride"] {
        let (status, rules) = get(&server, &alice.token, &format!("global/{kind}/")).await;
        assert_eq!(status, StatusCode::OK, "{rules}");
        assert_eq!(rules, all[kind], "{kind}");
    }
    let (_, overrides) = get(&server, &alice.token, "global/override/").await;
    assert_eq!(overrides[0]["rule_id"], json!(".m.rule.master"));
    let answer = get(&server, &alice.token, "global/postcontent/").await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
}

fn url(server: &TestServer, rest: &str) -> String {
    server.v3(&format!("/pushrules/{rest}"))
}

async fn get(server: &TestServer, token: &str, rest: &str) -> (StatusCode, Value) {
    server
        .request(Method::GET, url(server, rest), Some(token), None)
        .await
}

async fn get_ok(server: &TestServer, token: &str, rest: &str) -> Value {
    let (status, answer) = get(server, token, rest).await;
    assert_eq!(status, StatusCode::OK, "GET /pushrules/{rest}: {answer}");
    answer
}

async fn put(server: &TestServer, token: &str, rest: &str, body: Value) -> (StatusCode, Value) {
    server
        .request(Method::PUT, url(server, rest), Some(token), Some(body))
        .await
}

async fn put_ok(server: &TestServer, token: &str, rest: &str, body: Value) {
    let (status, answer) = put(server, token, rest, body).await;
    assert_eq!(status, StatusCode::OK, "PUT /pushrules/{rest}: {answer}");
}

/// The rule ids of one kind, in priority order.
fn rule_ids(ruleset: &Value, kind: &str) -> Vec<String> {
    ruleset[kind]
        .as_array()
        .unwrap_or_else(|| panic!("no {kind} rules in {ruleset}"))
        .iter()
        .map(|rule| rule["rule_id"].as_str().expect("rule_id").to_owned())
        .collect()
}

async fn predefined_rules_name_the_user(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let all = get_ok(&server, &alice.token, "").await;
    let global = &all["global"];
    assert_eq!(get_ok(&server, &alice.token, "global/").await, *global);

    let overrides = rule_ids(global, "override");
    assert_eq!(
        overrides.first().map(String::as_str),
        Some(".m.rule.master")
    );
    for id in [
        ".m.rule.suppress_notices",
        ".m.rule.invite_for_me",
        ".m.rule.is_user_mention",
    ] {
        assert!(
            overrides.iter().any(|o| o == id),
            "{id} missing from {overrides:?}"
        );
    }
    let underrides = rule_ids(global, "underride");
    for id in [
        ".m.rule.message",
        ".m.rule.encrypted",
        ".m.rule.room_one_to_one",
        ".m.rule.encrypted_room_one_to_one",
    ] {
        assert!(
            underrides.iter().any(|u| u == id),
            "{id} missing from {underrides:?}"
        );
    }

    // The master rule is off, and the mention rule names this user.
    let master = get_ok(&server, &alice.token, "global/override/.m.rule.master").await;
    assert_eq!(master["enabled"], false);
    assert_eq!(master["default"], true);
    let mention = get_ok(
        &server,
        &alice.token,
        "global/override/.m.rule.is_user_mention",
    )
    .await;
    assert!(
        mention["conditions"].to_string().contains(&alice.user_id),
        "{mention}"
    );
    let invite = get_ok(
        &server,
        &alice.token,
        "global/override/.m.rule.invite_for_me",
    )
    .await;
    assert!(
        invite["conditions"].to_string().contains(&alice.user_id),
        "{invite}"
    );
}

async fn user_rules_are_placed_changed_and_removed(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let token = &alice.token;
    let notify = json!({ "actions": ["notify"], "conditions": [] });

    // A new rule goes first among user rules (after the master rule), and
    // before/after place it relative to other user rules.
    put_ok(&server, token, "global/override/first", notify.clone()).await;
    put_ok(&server, token, "global/override/second", notify.clone()).await;
    put_ok(
        &server,
        token,
        "global/override/third?after=first",
        notify.clone(),
    )
    .await;
    put_ok(
        &server,
        token,
        "global/override/fourth?before=second",
        notify.clone(),
    )
    .await;
    let overrides = rule_ids(&get_ok(&server, token, "global/").await, "override");
    let user: Vec<&str> = overrides
        .iter()
        .map(String::as_str)
        .filter(|id| !id.starts_with('.'))
        .collect();
    assert_eq!(user, ["fourth", "second", "first", "third"]);
    assert_eq!(overrides[0], ".m.rule.master");

    let rule = get_ok(&server, token, "global/override/first").await;
    assert_eq!(
        rule,
        json!({ "rule_id": "first", "default": false, "enabled": true, "conditions": [], "actions": ["notify"] })
    );

    // Content rules carry a pattern; room and sender rules name their target.
    put_ok(
        &server,
        token,
        "global/content/cats",
        json!({ "actions": ["notify"], "pattern": "cat*" }),
    )
    .await;
    assert_eq!(
        get_ok(&server, token, "global/content/cats").await["pattern"],
        "cat*"
    );
    let room = create_room(&server, token, json!({})).await;
    put_ok(
        &server,
        token,
        &format!("global/room/{}", enc(&room)),
        json!({ "actions": [] }),
    )
    .await;
    let room_rule = get_ok(&server, token, &format!("global/room/{}", enc(&room))).await;
    assert_eq!(room_rule["actions"], json!([]));

    // Enabled and actions, on a user rule and on a predefined one.
    put_ok(
        &server,
        token,
        "global/override/first/enabled",
        json!({ "enabled": false }),
    )
    .await;
    assert_eq!(
        get_ok(&server, token, "global/override/first/enabled").await,
        json!({ "enabled": false })
    );
    // Replacing the rule keeps it disabled, as the spec's PUT does.
    put_ok(&server, token, "global/override/first", notify.clone()).await;
    assert_eq!(
        get_ok(&server, token, "global/override/first").await["enabled"],
        false
    );
    put_ok(
        &server,
        token,
        "global/override/.m.rule.master/enabled",
        json!({ "enabled": true }),
    )
    .await;
    assert_eq!(
        get_ok(&server, token, "global/override/.m.rule.master").await["enabled"],
        true
    );
    let quiet = json!({ "actions": [] });
    put_ok(
        &server,
        token,
        "global/underride/.m.rule.message/actions",
        quiet,
    )
    .await;
    assert_eq!(
        get_ok(&server, token, "global/underride/.m.rule.message/actions").await,
        json!({ "actions": [] })
    );

    // Removal: user rules go; predefined ones can only be disabled.
    let (status, answer) = server
        .request(
            Method::DELETE,
            url(&server, "global/override/first"),
            Some(token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_error(
        &get(&server, token, "global/override/first").await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
    let again = server
        .request(
            Method::DELETE,
            url(&server, "global/override/first"),
            Some(token),
            None,
        )
        .await;
    assert_error(&again, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    let predefined = server
        .request(
            Method::DELETE,
            url(&server, "global/override/.m.rule.master"),
            Some(token),
            None,
        )
        .await;
    assert_error(&predefined, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
}

async fn changes_reach_sync_and_stay_per_user(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let since = next_batch(&initial_sync(&server, &alice.token, 1).await);
    put_ok(
        &server,
        &alice.token,
        "global/sender/@spammer:example.org",
        json!({ "actions": [] }),
    )
    .await;

    let synced = sync_since(&server, &alice.token, &since).await;
    let pushed = synced["account_data"]["events"]
        .as_array()
        .and_then(|events| events.iter().find(|e| e["type"] == "m.push_rules"))
        .unwrap_or_else(|| panic!("no m.push_rules in {synced}"));
    assert_eq!(
        rule_ids(&pushed["content"]["global"], "sender"),
        ["@spammer:example.org"]
    );
    assert_eq!(
        pushed["content"]["global"],
        get_ok(&server, &alice.token, "global/").await
    );

    // Bob's rules are his own.
    let bobs = get_ok(&server, &bob.token, "global/").await;
    assert!(rule_ids(&bobs, "sender").is_empty(), "{bobs}");
    assert!(bobs.to_string().contains(&bob.user_id) && !bobs.to_string().contains(&alice.user_id));
}

async fn concurrent_edits_are_all_kept(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let edits = (0..8).map(|i| {
        let (server, token) = (&server, &alice.token);
        async move {
            put_ok(
                server,
                token,
                &format!("global/override/rule{i}"),
                json!({ "actions": ["notify"] }),
            )
            .await;
        }
    });
    myelin_tests::join_all(edits).await;
    let overrides = rule_ids(&get_ok(&server, &alice.token, "global/").await, "override");
    for i in 0..8 {
        assert!(
            overrides.contains(&format!("rule{i}")),
            "rule{i} lost: {overrides:?}"
        );
    }
}

async fn bad_rules_are_refused(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let token = &alice.token;
    let notify = json!({ "actions": ["notify"] });
    let refused = [
        (
            "global/override/.mine",
            notify.clone(),
            StatusCode::BAD_REQUEST,
            "M_INVALID_PARAM",
        ),
        (
            "global/postcontent/x",
            notify.clone(),
            StatusCode::BAD_REQUEST,
            "M_INVALID_PARAM",
        ),
        (
            "global/content/nopattern",
            notify.clone(),
            StatusCode::BAD_REQUEST,
            "M_INVALID_PARAM",
        ),
        (
            "global/room/not-a-room",
            notify.clone(),
            StatusCode::BAD_REQUEST,
            "M_INVALID_PARAM",
        ),
        (
            "global/sender/not-a-user",
            notify.clone(),
            StatusCode::BAD_REQUEST,
            "M_INVALID_PARAM",
        ),
        (
            "global/override/x?before=missing",
            notify.clone(),
            StatusCode::NOT_FOUND,
            "M_NOT_FOUND",
        ),
        (
            "global/override/x?after=.m.rule.master",
            notify.clone(),
            StatusCode::BAD_REQUEST,
            "M_INVALID_PARAM",
        ),
        (
            "global/override/x",
            json!({ "conditions": [] }),
            StatusCode::BAD_REQUEST,
            "M_BAD_JSON",
        ),
        (
            "global/override/x",
            json!({ "actions": "notify" }),
            StatusCode::BAD_REQUEST,
            "M_BAD_JSON",
        ),
        (
            "global/override/nosuch/enabled",
            json!({ "enabled": true }),
            StatusCode::NOT_FOUND,
            "M_NOT_FOUND",
        ),
        (
            "global/override/.m.rule.master/enabled",
            json!({ "enabled": "yes" }),
            StatusCode::BAD_REQUEST,
            "M_BAD_JSON",
        ),
        (
            "global/underride/nosuch/actions",
            notify.clone(),
            StatusCode::NOT_FOUND,
            "M_NOT_FOUND",
        ),
    ];
    for (rest, body, status, errcode) in refused {
        let answer = put(&server, token, rest, body).await;
        assert_eq!(answer.0, status, "PUT {rest}: {}", answer.1);
        assert_eq!(answer.1["errcode"], errcode, "PUT {rest}: {}", answer.1);
    }
    assert_error(
        &get(&server, token, "global/sideways/x").await,
        StatusCode::BAD_REQUEST,
        "M_INVALID_PARAM",
    );
    let response = server
        .client
        .put(url(&server, "global/override/x"))
        .bearer_auth(token)
        .body("{not json")
        .send()
        .await
        .expect("request");
    let not_json = (
        response.status(),
        response.json::<Value>().await.expect("JSON answer"),
    );
    assert_error(&not_json, StatusCode::BAD_REQUEST, "M_NOT_JSON");
    let anonymous = server
        .request(Method::GET, url(&server, ""), None, None)
        .await;
    assert_error(&anonymous, StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN");
    // Nothing refused was stored.
    let overrides = rule_ids(&get_ok(&server, token, "global/").await, "override");
    assert!(
        overrides.iter().all(|id| id.starts_with('.')),
        "{overrides:?}"
    );
}
