//! `GET /pushers` and `POST /pushers/set` (client-server-api, "Push
//! notifications"): HTTP pushers added, replaced and removed, tied to the
//! device that set them, one pushkey per user unless appended, and bad
//! bodies refused.

use myelin_tests::{Backend, TestServer, assert_error, backend_tests, join_all};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

backend_tests!(
    pushers_are_set_listed_replaced_and_removed,
    a_pusher_goes_with_its_device,
    a_pushkey_moves_between_users_unless_appended,
    bad_pushers_are_refused,
);

fn pusher(app_id: &str, pushkey: &str) -> Value {
    json!({
        "app_id": app_id,
        "pushkey": pushkey,
        "kind": "http",
        "app_display_name": "Myelin Chat",
        "device_display_name": "Phone",
        "lang": "en",
        "data": { "url": "https://push.example.org/_matrix/push/v1/notify", "format": "event_id_only" },
    })
}

async fn set(server: &TestServer, token: &str, body: Value) -> (StatusCode, Value) {
    let url = server.v3("/pushers/set");
    server
        .request(Method::POST, url, Some(token), Some(body))
        .await
}

async fn set_ok(server: &TestServer, token: &str, body: Value) {
    assert_eq!(set(server, token, body).await, (StatusCode::OK, json!({})));
}

async fn list(server: &TestServer, token: &str) -> Vec<Value> {
    let (status, answer) = server
        .request(Method::GET, server.v3("/pushers"), Some(token), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    answer["pushers"]
        .as_array()
        .cloned()
        .unwrap_or_else(|| panic!("no pushers in {answer}"))
}

async fn pushers_are_set_listed_replaced_and_removed(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    assert!(list(&server, &alice.token).await.is_empty());

    set_ok(&server, &alice.token, pusher("org.example.chat", "key-1")).await;
    assert_eq!(
        list(&server, &alice.token).await,
        vec![pusher("org.example.chat", "key-1")]
    );

    let mut changed = pusher("org.example.chat", "key-1");
    changed["lang"] = json!("fr");
    changed["profile_tag"] = json!("work");
    set_ok(&server, &alice.token, changed.clone()).await;
    set_ok(&server, &alice.token, pusher("org.example.chat", "key-2")).await;
    assert_eq!(
        list(&server, &alice.token).await,
        vec![changed, pusher("org.example.chat", "key-2")]
    );

    let removal = json!({ "app_id": "org.example.chat", "pushkey": "key-1", "kind": null });
    set_ok(&server, &alice.token, removal.clone()).await;
    assert_eq!(
        list(&server, &alice.token).await,
        vec![pusher("org.example.chat", "key-2")]
    );
    // Removing what is not there is not an error.
    set_ok(&server, &alice.token, removal).await;
}

async fn a_pusher_goes_with_its_device(backend: Backend) {
    let server = TestServer::start(backend).await;
    let phone = server.register("alice").await;
    let laptop = server.login("alice", None).await;
    set_ok(&server, &phone.token, pusher("org.example.chat", "phone")).await;
    set_ok(&server, &laptop.token, pusher("org.example.chat", "laptop")).await;
    assert_eq!(list(&server, &laptop.token).await.len(), 2);

    let answer = server
        .request(
            Method::POST,
            server.v3("/logout"),
            Some(&phone.token),
            Some(json!({})),
        )
        .await;
    assert_eq!(answer.0, StatusCode::OK);
    assert_eq!(
        list(&server, &laptop.token).await,
        vec![pusher("org.example.chat", "laptop")]
    );
}

async fn a_pushkey_moves_between_users_unless_appended(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    set_ok(&server, &alice.token, pusher("org.example.chat", "shared")).await;
    set_ok(&server, &bob.token, pusher("org.example.chat", "shared")).await;
    assert!(
        list(&server, &alice.token).await.is_empty(),
        "the pushkey left alice"
    );
    assert_eq!(list(&server, &bob.token).await.len(), 1);

    let mut appended = pusher("org.example.chat", "shared");
    appended["append"] = json!(true);
    set_ok(&server, &alice.token, appended).await;
    assert_eq!(
        list(&server, &alice.token).await,
        vec![pusher("org.example.chat", "shared")]
    );
    assert_eq!(
        list(&server, &bob.token).await.len(),
        1,
        "appending keeps bob's"
    );
}

async fn bad_pushers_are_refused(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let token = &alice.token;
    let without = |field: &str| {
        let mut body = pusher("org.example.chat", "k");
        body.as_object_mut().map(|body| body.remove(field));
        body
    };
    let with = |field: &str, value: Value| {
        let mut body = pusher("org.example.chat", "k");
        body[field] = value;
        body
    };
    for field in [
        "app_id",
        "pushkey",
        "kind",
        "app_display_name",
        "device_display_name",
        "lang",
        "data",
    ] {
        let answer = set(&server, token, without(field)).await;
        assert_error(&answer, StatusCode::BAD_REQUEST, "M_MISSING_PARAM");
    }
    let invalid = [
        with("kind", json!("email")),
        with("kind", json!(3)),
        with("pushkey", json!("k".repeat(513))),
        with("app_id", json!("a".repeat(65))),
        with("app_id", json!("org.example\u{0}chat")),
        with("pushkey", json!("k\u{0}")),
        with("profile_tag", json!("t".repeat(33))),
        with("append", json!("yes")),
        with(
            "data",
            json!("https://push.example.org/_matrix/push/v1/notify"),
        ),
        with(
            "data",
            json!({ "url": "https://push.example.org/elsewhere" }),
        ),
        with("data", json!({ "url": "file:///_matrix/push/v1/notify" })),
        with(
            "data",
            json!({ "url": "https://push.example.org/_matrix/push/v1/notify", "format": "full" }),
        ),
    ];
    for body in invalid {
        let answer = set(&server, token, body.clone()).await;
        assert_error(&answer, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    }
    assert!(
        list(&server, token).await.is_empty(),
        "nothing refused was kept"
    );

    // An account holds a bounded number of pushers; replacing one is fine.
    let answers = join_all(
        (0..32).map(|i| set(&server, token, pusher("org.example.chat", &format!("k{i}")))),
    )
    .await;
    assert!(answers.iter().all(|(status, _)| *status == StatusCode::OK));
    let answer = set(&server, token, pusher("org.example.chat", "one-too-many")).await;
    assert_error(&answer, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    set_ok(&server, token, pusher("org.example.chat", "k0")).await;
}
