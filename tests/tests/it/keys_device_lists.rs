//! `device_lists` in sync and `GET /keys/changes`: each trigger reaches
//! exactly the users who share a room, with since tokens; long polls wake.

use std::{sync::Arc, time::Duration};

use myelin_tests::{Backend, TestServer, backend_tests};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::{
    keys_support::{CrossSigning, Device, logout, upload_signing_keys},
    rooms_support::{create_room, join, membership},
    sync::spawn_sync,
    sync_support::{next_batch, sync_ok, sync_since},
};

backend_tests!(
    every_trigger_reaches_exactly_the_room_mates,
    keys_changes_matches_sync,
    a_room_mates_long_poll_wakes_on_new_device_keys,
);

/// The sorted user ids in `device_lists.<field>`.
fn listed(answer: &Value, field: &str) -> Vec<String> {
    let mut users: Vec<String> = answer["device_lists"][field]
        .as_array()
        .unwrap_or_else(|| panic!("no device_lists.{field} in {answer}"))
        .iter()
        .map(|user| user.as_str().expect("a user id").to_owned())
        .collect();
    users.sort();
    users
}

/// A user and their sync position.
struct Watcher {
    token: String,
    since: String,
}

impl Watcher {
    async fn new(server: &TestServer, token: &str) -> Self {
        let initial = sync_ok(server, token, &[]).await;
        assert_eq!(
            listed(&initial, "changed"),
            Vec::<String>::new(),
            "initial sync lists nobody"
        );
        Self {
            token: token.to_owned(),
            since: next_batch(&initial),
        }
    }

    /// `(changed, left)` since the last call.
    async fn news(&mut self, server: &TestServer) -> (Vec<String>, Vec<String>) {
        let answer = sync_since(server, &self.token, &self.since).await;
        self.since = next_batch(&answer);
        (listed(&answer, "changed"), listed(&answer, "left"))
    }
}

fn none() -> Vec<String> {
    Vec::new()
}

async fn every_trigger_reaches_exactly_the_room_mates(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let dave = server.register("dave").await;
    let room = create_room(&server, &alice.token, json!({ "preset": "public_chat" })).await;
    join(&server, &bob.token, &room).await;
    let carols_room = create_room(&server, &carol.token, json!({ "preset": "public_chat" })).await;
    let mut bobs = Watcher::new(&server, &bob.token).await;
    let mut carols = Watcher::new(&server, &carol.token).await;
    let mut alices = Watcher::new(&server, &alice.token).await;
    let a = alice.user_id.clone();

    // A new device (login).
    let phone = Device::new(&server.login("alice", Some("PHONE")).await);
    assert_eq!(bobs.news(&server).await, (vec![a.clone()], none()), "login");
    assert_eq!(
        carols.news(&server).await,
        (none(), none()),
        "carol shares no room"
    );
    assert_eq!(
        alices.news(&server).await.0,
        vec![a.clone()],
        "her own change"
    );

    // New device keys.
    phone.publish(&server).await;
    assert_eq!(
        bobs.news(&server).await,
        (vec![a.clone()], none()),
        "device keys"
    );
    assert_eq!(carols.news(&server).await, (none(), none()));

    // Identical keys again change nothing.
    phone.publish(&server).await;
    assert_eq!(bobs.news(&server).await, (none(), none()), "identical keys");

    // Cross-signing keys.
    let identity = CrossSigning::new(&a);
    let answer = upload_signing_keys(&server, &alice.token, identity.upload_body()).await;
    assert_eq!(answer.0, StatusCode::OK, "{}", answer.1);
    assert_eq!(
        bobs.news(&server).await,
        (vec![a.clone()], none()),
        "cross-signing"
    );
    assert_eq!(carols.news(&server).await, (none(), none()));

    // A deleted device (logout).
    logout(&server, &phone.account.token).await;
    assert_eq!(
        bobs.news(&server).await,
        (vec![a.clone()], none()),
        "logout"
    );
    assert_eq!(carols.news(&server).await, (none(), none()));

    // Another user joins a room bob is in: bob must fetch dave's devices.
    join(&server, &dave.token, &room).await;
    assert_eq!(
        bobs.news(&server).await,
        (vec![dave.user_id.clone()], none()),
        "join"
    );
    assert_eq!(carols.news(&server).await, (none(), none()));

    // Dave leaves and shares no other room with bob.
    let (status, body) = membership(&server, &dave.token, &room, "leave", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        bobs.news(&server).await,
        (none(), vec![dave.user_id.clone()]),
        "leave"
    );

    // Bob joins carol's room: carol's devices are news to bob, and bob's to carol.
    join(&server, &bob.token, &carols_room).await;
    assert_eq!(
        bobs.news(&server).await,
        (vec![carol.user_id.clone()], none()),
        "I join"
    );
    assert_eq!(
        carols.news(&server).await,
        (vec![bob.user_id.clone()], none()),
        "bob joins"
    );

    // Alice's change reaches bob but still not carol, who shares no room with her.
    let laptop = Device::new(&server.login("alice", Some("LAPTOP")).await);
    laptop.publish(&server).await;
    assert_eq!(bobs.news(&server).await, (vec![a.clone()], none()));
    assert_eq!(
        carols.news(&server).await,
        (none(), none()),
        "carol never sees alice"
    );

    // Bob leaves carol's room: each is `left` for the other.
    let (status, body) = membership(&server, &bob.token, &carols_room, "leave", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        bobs.news(&server).await,
        (none(), vec![carol.user_id.clone()]),
        "I leave"
    );
    assert_eq!(
        carols.news(&server).await,
        (none(), vec![bob.user_id.clone()]),
        "bob leaves"
    );

    // Nothing else is pending.
    assert_eq!(bobs.news(&server).await, (none(), none()));
}

async fn keys_changes_matches_sync(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let dave = server.register("dave").await;
    let room = create_room(&server, &alice.token, json!({ "preset": "public_chat" })).await;
    join(&server, &bob.token, &room).await;
    join(&server, &dave.token, &room).await;
    let from = next_batch(&sync_ok(&server, &bob.token, &[]).await);

    Device::new(&server.login("alice", None).await)
        .publish(&server)
        .await;
    let (status, body) = membership(&server, &dave.token, &room, "leave", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let to = next_batch(&sync_ok(&server, &bob.token, &[]).await);

    let url = |from: &str, to: &str| server.v3(&format!("/keys/changes?from={from}&to={to}"));
    let (status, changes) = server
        .request(Method::GET, url(&from, &to), Some(&bob.token), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{changes}");
    assert_eq!(
        changes,
        json!({ "changed": [alice.user_id], "left": [dave.user_id] })
    );
    let synced = sync_since(&server, &bob.token, &from).await;
    assert_eq!(
        synced["device_lists"], changes,
        "the same answer as a sync from `from`"
    );

    // An empty range lists nothing.
    let (_, nothing) = server
        .request(Method::GET, url(&to, &to), Some(&bob.token), None)
        .await;
    assert_eq!(nothing, json!({ "changed": [], "left": [] }));
}

async fn a_room_mates_long_poll_wakes_on_new_device_keys(backend: Backend) {
    let server = Arc::new(TestServer::start(backend).await);
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let room = create_room(&server, &alice.token, json!({ "preset": "public_chat" })).await;
    join(&server, &bob.token, &room).await;
    let bob_since = next_batch(&sync_ok(&server, &bob.token, &[]).await);
    let carol_since = next_batch(&sync_ok(&server, &carol.token, &[]).await);
    let alice_device = Device::new(&alice);

    let params =
        |since: String, timeout: &str| vec![("since", since), ("timeout", timeout.to_owned())];
    let bobs = spawn_sync(&server, &bob.token, params(bob_since, "20000"));
    let carols = spawn_sync(&server, &carol.token, params(carol_since, "1500"));
    tokio::task::yield_now().await;
    alice_device.publish(&server).await;

    let (elapsed, status, answer) = bobs.await.expect("bob's sync");
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert!(
        elapsed < Duration::from_secs(10),
        "bob woke only after {elapsed:?}"
    );
    assert_eq!(listed(&answer, "changed"), vec![alice.user_id.clone()]);

    // Carol shares no room: her long poll runs to its timeout with nothing.
    let (elapsed, status, answer) = carols.await.expect("carol's sync");
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert!(
        elapsed >= Duration::from_millis(1400),
        "carol answered early: {answer}"
    );
    assert_eq!(listed(&answer, "changed"), Vec::<String>::new());
}
