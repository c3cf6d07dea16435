//! A server whose `/keys/query` keeps failing does not stop a client from
//! sending: the room key goes to the devices it knows, and the UTD
//! counters say so.

use std::sync::Arc;

use myelin_sdk::{MemoryStore, RoomSecurity};
use myelin_tests::{Backend, TestServer, backend_tests, random_suffix};
use reqwest::Method;

use crate::{
    sdk_e2ee::{second_device, shared_room, until_decrypted},
    sdk_support::{Fault, FaultyProxy, registered, registered_on, sync_until},
};

backend_tests!(a_failing_keys_query_does_not_block_sending);

async fn a_failing_keys_query_does_not_block_sending(backend: Backend) {
    let server = TestServer::start(backend).await;
    let url = server.base_url.as_str();
    let proxy = FaultyProxy::start(url).await;
    let suffix = &random_suffix()[..8];
    let alice = registered_on(
        &proxy.url,
        &format!("alice{suffix}"),
        Arc::new(MemoryStore::new()),
    )
    .await;
    let bob = registered(url, &format!("bob{suffix}")).await;
    let first = shared_room(&alice, &bob, RoomSecurity::Encrypted).await;
    first.send_text("while all is well").await.unwrap();
    until_decrypted(&bob, "while all is well").await;

    // From now on every keys/query Alice makes fails, and Bob adds a
    // device: his list stays outdated on Alice's side.
    let refused = r#"{"errcode":"M_UNKNOWN","error":"keys unavailable"}"#.to_owned();
    proxy.inject(
        Method::POST,
        "/keys/query",
        Fault::Answer(400, refused),
        1_000,
    );
    let _laptop = second_device(url, &bob).await;
    let bob_id = bob.user_id().unwrap();
    sync_until(&alice, |update| {
        update.device_lists.changed.contains(&bob_id)
    })
    .await;

    // A new room needs a new room key: it goes to the phone Alice knows.
    let room = shared_room(&alice, &bob, RoomSecurity::Encrypted).await;
    room.send_text("despite the failing query").await.unwrap();
    until_decrypted(&bob, "despite the failing query").await;
    let counts = alice.utd_counts().await.unwrap();
    assert!(
        counts.get("shared_with_stale_device_lists") >= Some(&1),
        "{counts:?}"
    );
}
