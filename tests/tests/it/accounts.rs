//! Registration, login, logout and access tokens.

use myelin_server::config::{RegistrationMode, Secret};
use myelin_tests::{Backend, PASSWORD, TestServer, assert_error, backend_tests};
use reqwest::{Method, StatusCode};
use serde_json::json;

backend_tests!(
    register_with_the_dummy_flow,
    registration_keeps_the_first_requests_parameters,
    registration_keeps_inhibit_login_and_refresh_token,
    a_retried_completed_registration_gets_the_same_account,
    register_refuses_taken_invalid_and_weak,
    register_with_inhibit_login_opens_no_session,
    register_without_username_generates_one,
    username_availability,
    registration_tokens_gate_registration,
    closed_registration_is_forbidden,
    guests_may_not_register,
    login_with_password,
    login_refuses_wrong_credentials_alike,
    login_reuses_a_device_and_revokes_its_old_token,
    logout_kills_the_token_and_device,
    logout_all_kills_every_token,
    tokens_are_required_and_checked,
    capabilities_and_versions,
);

async fn register_with_the_dummy_flow(backend: Backend) {
    let server = TestServer::start(backend).await;
    let body = json!({ "username": "alice", "password": PASSWORD });
    let (status, challenge) = server
        .request(
            Method::POST,
            server.v3("/register"),
            None,
            Some(body.clone()),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(challenge["flows"], json!([{ "stages": ["m.login.dummy"] }]));
    assert!(
        challenge.get("errcode").is_none(),
        "a fresh challenge reports no error: {challenge}"
    );
    let session = challenge["session"].as_str().expect("session id");

    let mut body = body;
    body["auth"] = json!({ "type": "m.login.dummy", "session": session });
    body["initial_device_display_name"] = json!("Alice's phone");
    let (status, answer) = server
        .request(Method::POST, server.v3("/register"), None, Some(body))
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["user_id"], "@alice:localhost");
    let token = answer["access_token"].as_str().expect("token");
    let (status, whoami) = server.whoami(token).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(whoami["user_id"], "@alice:localhost");
    assert_eq!(whoami["device_id"], answer["device_id"]);
    let (_, device) = server
        .request(
            Method::GET,
            server.v3(&format!(
                "/devices/{}",
                answer["device_id"].as_str().unwrap()
            )),
            Some(token),
            None,
        )
        .await;
    assert_eq!(device["display_name"], "Alice's phone");
}

async fn register_refuses_taken_invalid_and_weak(backend: Backend) {
    let server = TestServer::start(backend).await;
    server.register("alice").await;
    let register = |username: &str, password: &str| {
        let body = json!({
            "username": username, "password": password, "auth": { "type": "m.login.dummy" },
        });
        server.request(Method::POST, server.v3("/register"), None, Some(body))
    };
    assert_error(
        &register("alice", PASSWORD).await,
        StatusCode::BAD_REQUEST,
        "M_USER_IN_USE",
    );
    // Upper case folds to the same user id.
    assert_error(
        &register("ALICE", PASSWORD).await,
        StatusCode::BAD_REQUEST,
        "M_USER_IN_USE",
    );
    for bad in ["al ice", "al:ice", "", "ali\u{e9}", &"a".repeat(300)] {
        assert_error(
            &register(bad, PASSWORD).await,
            StatusCode::BAD_REQUEST,
            "M_INVALID_USERNAME",
        );
    }
    assert_error(
        &register("bob", "short").await,
        StatusCode::BAD_REQUEST,
        "M_WEAK_PASSWORD",
    );
    let (status, answer) = register("Carol.Smith_1", PASSWORD).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer["user_id"], "@carol.smith_1:localhost");
}

async fn register_with_inhibit_login_opens_no_session(backend: Backend) {
    let server = TestServer::start(backend).await;
    let body = json!({
        "username": "alice", "password": PASSWORD, "inhibit_login": true,
        "auth": { "type": "m.login.dummy" },
    });
    let (status, answer) = server
        .request(Method::POST, server.v3("/register"), None, Some(body))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer["user_id"], "@alice:localhost");
    assert!(
        answer.get("access_token").is_none() && answer.get("device_id").is_none(),
        "{answer}"
    );
    let account = server.login("alice", None).await;
    let (_, devices) = server
        .request(
            Method::GET,
            server.v3("/devices"),
            Some(&account.token),
            None,
        )
        .await;
    assert_eq!(
        devices["devices"].as_array().map(Vec::len),
        Some(1),
        "only the login's device"
    );
}

async fn register_without_username_generates_one(backend: Backend) {
    let server = TestServer::start(backend).await;
    let body = json!({ "password": PASSWORD, "auth": { "type": "m.login.dummy" } });
    let (status, first) = server
        .request(
            Method::POST,
            server.v3("/register"),
            None,
            Some(body.clone()),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, second) = server
        .request(Method::POST, server.v3("/register"), None, Some(body))
        .await;
    assert!(first["user_id"].as_str().unwrap().ends_with(":localhost"));
    assert_ne!(first["user_id"], second["user_id"]);
}

async fn username_availability(backend: Backend) {
    let server = TestServer::start(backend).await;
    let available = |name: &str| {
        server.request(
            Method::GET,
            server.v3(&format!("/register/available?username={name}")),
            None,
            None,
        )
    };
    let (status, answer) = available("alice").await;
    assert_eq!(
        (status, answer),
        (StatusCode::OK, json!({ "available": true }))
    );
    server.register("alice").await;
    assert_error(
        &available("alice").await,
        StatusCode::BAD_REQUEST,
        "M_USER_IN_USE",
    );
    assert_error(
        &available("a%20b").await,
        StatusCode::BAD_REQUEST,
        "M_INVALID_USERNAME",
    );
    let (status, answer) = server
        .request(Method::GET, server.v3("/register/available"), None, None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert_eq!(answer["errcode"], "M_INVALID_PARAM");
}

async fn registration_tokens_gate_registration(backend: Backend) {
    let server = TestServer::start_with(backend, |config| {
        config.registration.mode = RegistrationMode::Token;
        config.registration.tokens = vec![Secret::new("let-me-in")];
    })
    .await;
    let body = json!({ "username": "alice", "password": PASSWORD });
    let (status, challenge) = server
        .request(
            Method::POST,
            server.v3("/register"),
            None,
            Some(body.clone()),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        challenge["flows"],
        json!([{ "stages": ["m.login.registration_token"] }])
    );
    let session = challenge["session"].clone();

    // The dummy stage is not enough.
    let mut attempt = body.clone();
    attempt["auth"] = json!({ "type": "m.login.dummy", "session": session });
    let (status, answer) = server
        .request(Method::POST, server.v3("/register"), None, Some(attempt))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{answer}");

    let mut attempt = body.clone();
    attempt["auth"] =
        json!({ "type": "m.login.registration_token", "token": "guess", "session": session });
    let (status, answer) = server
        .request(Method::POST, server.v3("/register"), None, Some(attempt))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(answer["errcode"], "M_FORBIDDEN");
    assert_eq!(
        answer["session"], session,
        "a failed stage keeps the session"
    );

    let mut attempt = body;
    attempt["auth"] =
        json!({ "type": "m.login.registration_token", "token": "let-me-in", "session": session });
    let (status, answer) = server
        .request(Method::POST, server.v3("/register"), None, Some(attempt))
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");

    let server = &server;
    let validity = |token: &str| {
        let url = format!(
            "{}/_matrix/client/v1/register/m.login.registration_token/validity?token={token}",
            server.base_url
        );
        async move { server.request(Method::GET, &url, None, None).await }
    };
    assert_eq!(
        validity("let-me-in").await,
        (StatusCode::OK, json!({ "valid": true }))
    );
    assert_eq!(
        validity("guess").await,
        (StatusCode::OK, json!({ "valid": false }))
    );
}

async fn closed_registration_is_forbidden(backend: Backend) {
    let server = TestServer::start_with(backend, |config| {
        config.registration.mode = RegistrationMode::Closed;
    })
    .await;
    let body =
        json!({ "username": "alice", "password": PASSWORD, "auth": { "type": "m.login.dummy" } });
    let answer = server
        .request(Method::POST, server.v3("/register"), None, Some(body))
        .await;
    assert_error(&answer, StatusCode::FORBIDDEN, "M_FORBIDDEN");
}

async fn guests_may_not_register(backend: Backend) {
    let server = TestServer::start(backend).await;
    let answer = server
        .request(
            Method::POST,
            server.v3("/register?kind=guest"),
            None,
            Some(json!({})),
        )
        .await;
    assert_error(&answer, StatusCode::FORBIDDEN, "M_GUEST_ACCESS_FORBIDDEN");
}

async fn login_with_password(backend: Backend) {
    let server = TestServer::start(backend).await;
    server.register("alice").await;
    let (status, flows) = server
        .request(Method::GET, server.v3("/login"), None, None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(flows["flows"], json!([{ "type": "m.login.password" }]));

    let by_localpart = server.login("alice", None).await;
    let by_user_id = server.login("@alice:localhost", None).await;
    assert_eq!(by_localpart.user_id, "@alice:localhost");
    assert_eq!(by_user_id.user_id, "@alice:localhost");
    assert_ne!(
        by_localpart.device_id, by_user_id.device_id,
        "each login is a new device"
    );
    assert_ne!(by_localpart.token, by_user_id.token);

    // The deprecated top-level `user` field still works, and names the device.
    let body = json!({
        "type": "m.login.password", "user": "alice", "password": PASSWORD,
        "initial_device_display_name": "Laptop",
    });
    let (status, answer) = server
        .request(Method::POST, server.v3("/login"), None, Some(body))
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let (_, device) = server
        .request(
            Method::GET,
            server.v3(&format!(
                "/devices/{}",
                answer["device_id"].as_str().unwrap()
            )),
            Some(answer["access_token"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(device["display_name"], "Laptop");
}

async fn login_refuses_wrong_credentials_alike(backend: Backend) {
    let server = TestServer::start(backend).await;
    server.register("alice").await;
    let login = |user: &str, password: &str| {
        let body = json!({
            "type": "m.login.password",
            "identifier": { "type": "m.id.user", "user": user },
            "password": password,
        });
        server.request(Method::POST, server.v3("/login"), None, Some(body))
    };
    let wrong_password = login("alice", "not the password").await;
    let unknown_user = login("mallory", PASSWORD).await;
    let other_server = login("@alice:elsewhere.example", PASSWORD).await;
    assert_error(&wrong_password, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    // No answer tells an attacker which user ids exist.
    assert_eq!(wrong_password, unknown_user);
    assert_eq!(wrong_password, other_server);

    let body = json!({ "type": "m.login.token", "token": "x" });
    let answer = server
        .request(Method::POST, server.v3("/login"), None, Some(body))
        .await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "M_UNKNOWN");
    let body = json!({
        "type": "m.login.password",
        "identifier": { "type": "m.id.thirdparty", "medium": "email", "address": "a@b.c" },
        "password": PASSWORD,
    });
    let answer = server
        .request(Method::POST, server.v3("/login"), None, Some(body))
        .await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "M_UNKNOWN");
}

async fn login_reuses_a_device_and_revokes_its_old_token(backend: Backend) {
    let server = TestServer::start(backend).await;
    let first = server.register("alice").await;
    // Used once, so the server has it cached: the new login must evict it.
    assert_eq!(server.whoami(&first.token).await.0, StatusCode::OK);
    let again = server.login("alice", Some(&first.device_id)).await;
    assert_eq!(again.device_id, first.device_id);
    assert_error(
        &server.whoami(&first.token).await,
        StatusCode::UNAUTHORIZED,
        "M_UNKNOWN_TOKEN",
    );
    let (status, whoami) = server.whoami(&again.token).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(whoami["device_id"], first.device_id.as_str());
    let (_, devices) = server
        .request(Method::GET, server.v3("/devices"), Some(&again.token), None)
        .await;
    assert_eq!(devices["devices"].as_array().map(Vec::len), Some(1));

    // A chosen device id that does not exist yet is created.
    let chosen = server.login("alice", Some("MYLAPTOP")).await;
    assert_eq!(chosen.device_id, "MYLAPTOP");
}

async fn logout_kills_the_token_and_device(backend: Backend) {
    let server = TestServer::start(backend).await;
    let phone = server.register("alice").await;
    let laptop = server.login("alice", None).await;
    let (status, answer) = server
        .request(Method::POST, server.v3("/logout"), Some(&phone.token), None)
        .await;
    assert_eq!((status, answer), (StatusCode::OK, json!({})));
    assert_error(
        &server.whoami(&phone.token).await,
        StatusCode::UNAUTHORIZED,
        "M_UNKNOWN_TOKEN",
    );
    let (_, devices) = server
        .request(
            Method::GET,
            server.v3("/devices"),
            Some(&laptop.token),
            None,
        )
        .await;
    assert_eq!(
        devices["devices"],
        json!([{ "device_id": laptop.device_id, "display_name": null }])
    );
}

async fn logout_all_kills_every_token(backend: Backend) {
    let server = TestServer::start(backend).await;
    let phone = server.register("alice").await;
    let laptop = server.login("alice", None).await;
    let bob = server.register("bob").await;
    // Used once, so the server has them cached: logging out must evict them.
    for token in [&phone.token, &laptop.token] {
        assert_eq!(server.whoami(token).await.0, StatusCode::OK);
    }
    let (status, _) = server
        .request(
            Method::POST,
            server.v3("/logout/all"),
            Some(&laptop.token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    for token in [&phone.token, &laptop.token] {
        assert_error(
            &server.whoami(token).await,
            StatusCode::UNAUTHORIZED,
            "M_UNKNOWN_TOKEN",
        );
    }
    assert_eq!(
        server.whoami(&bob.token).await.0,
        StatusCode::OK,
        "other users are untouched"
    );
}

async fn tokens_are_required_and_checked(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let url = server.v3("/account/whoami");
    assert_error(
        &server.request(Method::GET, &url, None, None).await,
        StatusCode::UNAUTHORIZED,
        "M_MISSING_TOKEN",
    );
    let forged = format!("{}x", alice.token);
    let answer = server.whoami(&forged).await;
    assert_error(&answer, StatusCode::UNAUTHORIZED, "M_UNKNOWN_TOKEN");
    assert_eq!(answer.1["soft_logout"], false);
    // The deprecated query parameter is still accepted.
    let (status, whoami) = server
        .request(
            Method::GET,
            &format!("{url}?access_token={}", alice.token),
            None,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(whoami["user_id"], alice.user_id.as_str());
    // A non-bearer scheme is not a token.
    let response = server
        .client
        .get(&url)
        .header("Authorization", format!("Basic {}", alice.token))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

async fn capabilities_and_versions(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (status, versions) = server
        .request(
            Method::GET,
            &format!("{}/_matrix/client/versions", server.base_url),
            None,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        versions["versions"]
            .as_array()
            .unwrap()
            .contains(&json!("v1.1"))
    );
    let url = server.v3("/capabilities");
    assert_error(
        &server.request(Method::GET, &url, None, None).await,
        StatusCode::UNAUTHORIZED,
        "M_MISSING_TOKEN",
    );
    let alice = server.register("alice").await;
    let (status, capabilities) = server
        .request(Method::GET, &url, Some(&alice.token), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        capabilities["capabilities"]["m.change_password"]["enabled"],
        true
    );
    assert_eq!(
        capabilities["capabilities"]["m.room_versions"],
        json!({
            "default": "12",
            "available": {
                "1": "stable", "2": "stable", "3": "stable", "4": "stable",
                "5": "stable", "6": "stable", "7": "stable", "8": "stable",
                "9": "stable", "10": "stable", "11": "stable", "12": "stable",
            },
        })
    );
    // The pre-1.0 path prefix reaches the same endpoints.
    let r0 = format!("{}/_matrix/client/r0/account/whoami", server.base_url);
    assert_eq!(
        server
            .request(Method::GET, &r0, Some(&alice.token), None)
            .await
            .0,
        StatusCode::OK
    );
}

/// Clients may send the parameters with the first request only; the
/// later stages carry `auth` alone (or change nothing they leave out).
async fn registration_keeps_the_first_requests_parameters(backend: Backend) {
    let server = TestServer::start(backend).await;
    let first = json!({
        "username": "carol",
        "password": PASSWORD,
        "device_id": "CAROLPHONE",
        "initial_device_display_name": "Carol's phone",
    });
    let url = server.v3("/register");
    let (status, challenge) = server
        .request(Method::POST, url.clone(), None, Some(first))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{challenge}");
    let session = challenge["session"].as_str().expect("session");
    let auth_only = json!({ "auth": { "type": "m.login.dummy", "session": session } });
    let (status, answer) = server
        .request(Method::POST, url.clone(), None, Some(auth_only))
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["user_id"], server.user_id("carol"));
    assert_eq!(answer["device_id"], "CAROLPHONE");
    let token = answer["access_token"].as_str().expect("access_token");
    let device = server
        .request(
            Method::GET,
            server.v3("/devices/CAROLPHONE"),
            Some(token),
            None,
        )
        .await;
    assert_eq!(device.1["display_name"], "Carol's phone", "{}", device.1);
    let login = json!({ "type": "m.login.password", "user": "carol", "password": PASSWORD });
    let (status, _) = server
        .request(Method::POST, server.v3("/login"), None, Some(login))
        .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the first request's password was kept"
    );

    // What no request gave stays missing.
    let (_, other) = server
        .request(
            Method::POST,
            url.clone(),
            None,
            Some(json!({ "username": "dave" })),
        )
        .await;
    let session = other["session"].as_str().expect("session");
    let auth_only = json!({ "auth": { "type": "m.login.dummy", "session": session } });
    let answer = server
        .request(Method::POST, url, None, Some(auth_only))
        .await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "M_MISSING_PARAM");
}

/// Starts a registration with `first` and returns its UIA session.
async fn registration_session(server: &TestServer, first: serde_json::Value) -> String {
    let (status, challenge) = server
        .request(Method::POST, server.v3("/register"), None, Some(first))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{challenge}");
    challenge["session"].as_str().expect("session").to_owned()
}

async fn registration_keeps_inhibit_login_and_refresh_token(backend: Backend) {
    let server = TestServer::start(backend).await;
    let url = server.v3("/register");
    let first = json!({ "username": "erin", "password": PASSWORD, "inhibit_login": true });
    let session = registration_session(&server, first).await;
    let auth_only = json!({ "auth": { "type": "m.login.dummy", "session": session } });
    let (status, answer) = server
        .request(Method::POST, url.clone(), None, Some(auth_only))
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["user_id"], server.user_id("erin"));
    assert!(
        answer.get("access_token").is_none() && answer.get("device_id").is_none(),
        "inhibit_login from the first request was kept: {answer}"
    );

    let first = json!({ "username": "frank", "password": PASSWORD, "refresh_token": true });
    let session = registration_session(&server, first).await;
    let auth_only = json!({ "auth": { "type": "m.login.dummy", "session": session } });
    let (status, answer) = server
        .request(Method::POST, url.clone(), None, Some(auth_only))
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert!(
        answer["refresh_token"].is_string() && answer["expires_in_ms"].is_u64(),
        "refresh_token from the first request was kept: {answer}"
    );

    // A later stage may still say otherwise.
    let first = json!({ "username": "gina", "password": PASSWORD, "inhibit_login": true });
    let session = registration_session(&server, first).await;
    let last = json!({
        "inhibit_login": false, "auth": { "type": "m.login.dummy", "session": session },
    });
    let (status, answer) = server
        .request(Method::POST, url.clone(), None, Some(last))
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert!(answer["access_token"].is_string(), "{answer}");

    for wrong in [
        json!({ "inhibit_login": "yes" }),
        json!({ "refresh_token": 1 }),
    ] {
        let answer = server
            .request(Method::POST, url.clone(), None, Some(wrong))
            .await;
        assert_error(&answer, StatusCode::BAD_REQUEST, "M_BAD_JSON");
    }
}

async fn a_retried_completed_registration_gets_the_same_account(backend: Backend) {
    let server = TestServer::start(backend).await;
    let url = server.v3("/register");
    let first = json!({ "username": "hank", "password": PASSWORD });
    let session = registration_session(&server, first).await;
    let last = json!({ "auth": { "type": "m.login.dummy", "session": session } });
    let (status, answer) = server
        .request(Method::POST, url.clone(), None, Some(last.clone()))
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let first_token = answer["access_token"].as_str().expect("token").to_owned();

    // The answer was lost: the retry gets the same account on the same
    // device, and the token it replaces ends.
    let (status, again) = server
        .request(Method::POST, url.clone(), None, Some(last.clone()))
        .await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["user_id"], answer["user_id"]);
    assert_eq!(again["device_id"], answer["device_id"]);
    let token = again["access_token"].as_str().expect("token");
    assert_ne!(token, first_token);
    assert_eq!(server.whoami(token).await.0, StatusCode::OK);
    assert_eq!(
        server.whoami(&first_token).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        server.count_rows("SELECT COUNT(*) FROM accounts").await,
        1,
        "no second account"
    );

    // Requests racing to complete one session without a username make
    // one account between them, never two.
    let session = registration_session(&server, json!({ "password": PASSWORD })).await;
    let last = json!({ "auth": { "type": "m.login.dummy", "session": session } });
    let (first, second) = tokio::join!(
        server.request(Method::POST, url.clone(), None, Some(last.clone())),
        server.request(Method::POST, url.clone(), None, Some(last)),
    );
    assert!(
        first.0 == StatusCode::OK || second.0 == StatusCode::OK,
        "{first:?} {second:?}"
    );
    assert_eq!(server.count_rows("SELECT COUNT(*) FROM accounts").await, 2);

    // The spent session does not serve another request.
    let other = json!({
        "username": "ivan", "password": PASSWORD,
        "auth": { "type": "m.login.dummy", "session": session },
    });
    let answer = server.request(Method::POST, url, None, Some(other)).await;
    assert_error(&answer, StatusCode::FORBIDDEN, "M_FORBIDDEN");
}
