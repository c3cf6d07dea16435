//! The SDK's error mapping and retries against a Myelin server, with a
//! fault-injecting proxy for what a healthy server never does: lost
//! answers, 429s, 5xx and garbage.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use axum::http::Method;
use myelin_sdk::{Client, Error, ErrorKind, MemoryStore, Registration, RetryPolicy, Store};
use myelin_server::config::{RateLimit, RegistrationMode, Secret};
use myelin_tests::{Backend, PASSWORD, TestServer, backend_tests};
use serde_json::json;

use crate::sdk_support::{
    Fault, FaultyProxy, PASSPHRASE, client_on, has_message, plain_room, quick_sync, registered,
    registered_on, single_with_body, sync_until,
};

backend_tests!(
    matrix_errors_are_typed,
    rate_limits_carry_retry_after,
    retried_sends_do_not_duplicate,
    pending_sends_survive_a_restart,
    sync_retries_429_and_5xx_and_stops_on_garbage,
    registration_token_flow,
    discovery_through_well_known,
);

async fn matrix_errors_are_typed(backend: Backend) {
    let server = TestServer::start(backend).await;
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let alice = registered_on(&server.base_url, "alice", store.clone()).await;
    let alice_id = alice.user_id().unwrap();

    // Wrong password.
    let other = client_on(&server.base_url, Arc::new(MemoryStore::new())).await;
    let wrong = other
        .login_password("alice", "not the password", None)
        .await
        .unwrap_err();
    let matrix = wrong.as_matrix().expect("a Matrix error");
    assert_eq!((matrix.status, &matrix.kind), (403, &ErrorKind::Forbidden));
    assert!(!wrong.is_transient());
    assert!(other.session().is_none());
    // The right one works, and a second login on the same client is refused locally.
    other
        .login_password(alice_id.as_str(), PASSWORD, Some("second"))
        .await
        .unwrap();
    let again = other
        .login_password("alice", PASSWORD, None)
        .await
        .unwrap_err();
    assert!(matches!(again, Error::AlreadyLoggedIn(ref id) if *id == alice_id));

    // Taken username.
    let taken = client_on(&server.base_url, Arc::new(MemoryStore::new()))
        .await
        .register(Registration {
            username: Some("alice".to_owned()),
            password: PASSWORD.to_owned(),
            ..Registration::default()
        })
        .await
        .unwrap_err();
    assert_eq!(taken.kind(), Some(&ErrorKind::UserInUse));

    // Unknown token: a second client restored from the same store keeps
    // using the token after the first logs out.
    let twin = client_on(&server.base_url, store.clone()).await;
    assert_eq!(twin.whoami().await.unwrap().user_id, alice_id);
    alice.logout().await.unwrap();
    let unknown = twin.whoami().await.unwrap_err();
    let matrix = unknown.as_matrix().unwrap();
    assert_eq!(
        (matrix.status, &matrix.kind),
        (401, &ErrorKind::UnknownToken)
    );
    // The sync loop gives up on it at once instead of retrying.
    let ended = tokio::time::timeout(
        Duration::from_secs(10),
        twin.sync(
            quick_sync(),
            |_: &myelin_sdk::SyncUpdate, _: &mut myelin_sdk::Changes| {
                myelin_sdk::LoopControl::Continue
            },
        ),
    )
    .await
    .expect("the loop kept retrying an unknown token");
    assert_eq!(ended.unwrap_err().kind(), Some(&ErrorKind::UnknownToken));

    // Unknown room.
    let other_room = other
        .room(&myelin_sdk::ruma::owned_room_id!("!nowhere:localhost"))
        .send_text("hello?")
        .await
        .unwrap_err();
    assert!(
        matches!(
            other_room.kind(),
            Some(ErrorKind::Forbidden | ErrorKind::NotFound)
        ),
        "{other_room}"
    );
    assert!(
        other.pending_events().await.unwrap().is_empty(),
        "a refused send stays pending"
    );
}

async fn rate_limits_carry_retry_after(backend: Backend) {
    let server = TestServer::start_with(backend, |config| {
        config.rate_limits.enabled = true;
        config.rate_limits.login = RateLimit {
            per_second: 0.01,
            burst: 1,
        };
    })
    .await;
    registered(&server.base_url, "alice").await;
    let client = Client::builder()
        .homeserver_url(&server.base_url)
        .passphrase(PASSPHRASE)
        .request_retry(RetryPolicy::none())
        .build()
        .await
        .unwrap();
    let first = client
        .login_password("alice", "wrong", None)
        .await
        .unwrap_err();
    assert_eq!(first.kind(), Some(&ErrorKind::Forbidden));
    let limited = client
        .login_password("alice", "wrong", None)
        .await
        .unwrap_err();
    let matrix = limited.as_matrix().expect("a Matrix error");
    assert_eq!(
        (matrix.status, &matrix.kind),
        (429, &ErrorKind::LimitExceeded)
    );
    let wait = matrix.retry_after.expect("retry_after_ms");
    assert!(
        wait > Duration::from_secs(1) && wait <= Duration::from_secs(100),
        "{wait:?}"
    );
    assert!(limited.is_transient());
    assert_eq!(limited.retry_after(), Some(wait));
}

async fn retried_sends_do_not_duplicate(backend: Backend) {
    let server = TestServer::start(backend).await;
    let proxy = FaultyProxy::start(&server.base_url).await;
    let alice = registered(&proxy.url, "alice").await;
    let room = plain_room(&alice, Vec::new()).await;

    // The server stores the first attempt, but its answer is lost twice;
    // the third attempt (same transaction id) gets the original event id.
    proxy.inject(Method::PUT, "/send/m.room.message/", Fault::LoseAnswer, 2);
    let event_id = room.send_text("exactly once").await.unwrap();
    assert_eq!(proxy.count(&Method::PUT, "/send/m.room.message/"), 3);
    // The same for a redaction.
    proxy.inject(Method::PUT, "/redact/", Fault::LoseAnswer, 1);
    let kept = room.send_text("keep me").await.unwrap();
    let redaction = room.redact(&kept, None).await.unwrap();
    assert_eq!(proxy.count(&Method::PUT, "/redact/"), 2);

    let history = room.messages(None, 100).await.unwrap();
    assert_eq!(
        single_with_body(&history.events, "exactly once").event_id,
        event_id
    );
    let redactions: Vec<_> = history
        .events
        .iter()
        .filter(|e| e.event_type == "m.room.redaction")
        .collect();
    assert_eq!(redactions.len(), 1);
    assert_eq!(redactions[0].event_id, redaction);
    assert!(alice.pending_events().await.unwrap().is_empty());
}

async fn pending_sends_survive_a_restart(backend: Backend) {
    let server = TestServer::start(backend).await;
    let proxy = FaultyProxy::start(&server.base_url).await;
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let alice = registered_on(&proxy.url, "alice", store.clone()).await;
    let room = plain_room(&alice, Vec::new()).await;

    // Every attempt reaches the server but no answer comes back: the SDK
    // gives up with a transient error and keeps the event pending.
    proxy.inject(Method::PUT, "/send/", Fault::LoseAnswer, 4);
    let failed = room.send_text("sent before the crash").await.unwrap_err();
    assert!(failed.is_transient(), "{failed}");
    let pending = alice.pending_events().await.unwrap();
    assert_eq!(pending.len(), 1);
    drop(alice);

    // A new process on the same store resends it with the same
    // transaction id; the server answers with the event it already has.
    let restarted = client_on(&proxy.url, store).await;
    let outcomes = restarted.resend_pending().await.unwrap();
    assert_eq!(outcomes.len(), 1);
    assert_eq!(outcomes[0].0, pending[0].txn_id);
    let event_id = outcomes[0].1.as_ref().unwrap().clone();
    assert!(restarted.pending_events().await.unwrap().is_empty());
    let history = restarted
        .room(room.room_id())
        .messages(None, 100)
        .await
        .unwrap();
    assert_eq!(
        single_with_body(&history.events, "sent before the crash").event_id,
        event_id
    );
}

async fn sync_retries_429_and_5xx_and_stops_on_garbage(backend: Backend) {
    let server = TestServer::start(backend).await;
    let proxy = FaultyProxy::start(&server.base_url).await;
    let alice = registered(&proxy.url, "alice").await;
    let room = plain_room(&alice, Vec::new()).await;
    room.send_text("through the storm").await.unwrap();

    // Two rate-limit answers asking for 300 ms each, then a 5xx, then
    // through (the fourth attempt is the policy's last).
    let limited =
        json!({"errcode": "M_LIMIT_EXCEEDED", "error": "slow", "retry_after_ms": 300}).to_string();
    proxy.inject(Method::GET, "/sync", Fault::Answer(429, limited), 2);
    proxy.inject(
        Method::GET,
        "/sync",
        Fault::Answer(503, "<html>down</html>".to_owned()),
        1,
    );
    let started = Instant::now();
    sync_until(&alice, |update| has_message(update, "through the storm")).await;
    assert!(
        started.elapsed() >= Duration::from_millis(600),
        "retry_after_ms not honoured: {:?}",
        started.elapsed()
    );
    assert_eq!(proxy.count(&Method::GET, "/sync"), 4);

    // A 200 that is not a sync answer is an error, not a panic, and not retried.
    let token_before = alice.sync_token().await.unwrap();
    assert!(token_before.is_some());
    proxy.inject(
        Method::GET,
        "/sync",
        Fault::Answer(200, "{\"rooms\": 5}".to_owned()),
        1,
    );
    let garbage = alice.sync_once(&quick_sync()).await.unwrap_err();
    assert!(
        matches!(garbage, Error::UnexpectedResponse { status: 200, .. }),
        "{garbage}"
    );
    // Nothing was saved for it: the next sync starts from the same token.
    assert_eq!(alice.sync_token().await.unwrap(), token_before);
    let next = alice
        .sync_once(&myelin_sdk::SyncSettings {
            timeout: Duration::ZERO,
            ..quick_sync()
        })
        .await
        .unwrap();
    assert!(!next.is_initial);
}

async fn registration_token_flow(backend: Backend) {
    let server = TestServer::start_with(backend, |config| {
        config.registration.mode = RegistrationMode::Token;
        config.registration.tokens = vec![Secret::new("let-me-in".to_owned())];
    })
    .await;
    let registration = |token: Option<&str>| Registration {
        username: Some("dave".to_owned()),
        password: PASSWORD.to_owned(),
        registration_token: token.map(str::to_owned),
        device_display_name: Some("test".to_owned()),
    };
    let client = client_on(&server.base_url, Arc::new(MemoryStore::new())).await;
    let without = client.register(registration(None)).await.unwrap_err();
    assert!(
        matches!(&without, Error::UnsupportedAuthFlows { flows } if flows.iter().any(|f| f.iter().any(|s| s == "m.login.registration_token"))),
        "{without}"
    );
    let wrong = client
        .register(registration(Some("guess")))
        .await
        .unwrap_err();
    assert!(wrong.as_matrix().is_some(), "{wrong}");
    let session = client
        .register(registration(Some("let-me-in")))
        .await
        .unwrap();
    assert_eq!(session.user_id.localpart(), "dave");
    assert_eq!(
        client.whoami().await.unwrap().device_id,
        Some(session.device_id)
    );
}

async fn discovery_through_well_known(backend: Backend) {
    let server = TestServer::start(backend).await;
    let proxy = FaultyProxy::start(&server.base_url).await;
    // Delegation: the well-known names the real server.
    let target = format!("{}/", server.base_url);
    proxy.serve_well_known(json!({"m.homeserver": {"base_url": server.base_url}}).to_string());
    let client = Client::builder()
        .server_name(&proxy.url)
        .passphrase(PASSPHRASE)
        .build()
        .await
        .unwrap();
    assert_eq!(client.homeserver().as_str(), target);

    // No well-known (404): the name itself is the homeserver.
    let direct = FaultyProxy::start(&server.base_url).await;
    let client = Client::builder()
        .server_name(&direct.url)
        .passphrase(PASSPHRASE)
        .build()
        .await
        .unwrap();
    assert_eq!(client.homeserver().as_str(), format!("{}/", direct.url));

    // A well-known naming something that is not a homeserver is a discovery error.
    proxy.serve_well_known(json!({"m.homeserver": {"base_url": "not a url"}}).to_string());
    let bad = Client::builder()
        .server_name(&proxy.url)
        .passphrase(PASSPHRASE)
        .build()
        .await
        .unwrap_err();
    assert!(matches!(bad, Error::Discovery(_)), "{bad}");
}
