//! The client saves the crypto machine's changes before the requests that
//! carry them leave: an Olm message is never on the wire while the ratchet
//! step that produced it exists only in memory.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use myelin_sdk::{Changes, MemoryStore, RoomSecurity, Store, StoreError, store::StoreFuture};
use myelin_tests::{Backend, PASSWORD, TestServer, backend_tests, random_suffix};
use reqwest::Method;

use crate::{
    sdk_e2ee::{shared_room, until_decrypted},
    sdk_support::{FaultyProxy, registered, registered_on},
};

backend_tests!(
    olm_messages_leave_only_after_the_machine_is_saved,
    a_signature_leaves_only_after_the_machine_is_saved
);

/// A store whose commits of crypto records fail while `failing` is set,
/// as a full disk would.
#[derive(Debug, Default)]
struct FlakyStore {
    inner: MemoryStore,
    failing: AtomicBool,
}

impl Store for FlakyStore {
    fn get<'a>(&'a self, namespace: &'a str, key: &'a str) -> StoreFuture<'a, Option<Vec<u8>>> {
        self.inner.get(namespace, key)
    }

    fn list<'a>(&'a self, namespace: &'a str) -> StoreFuture<'a, Vec<(String, Vec<u8>)>> {
        self.inner.list(namespace)
    }

    fn commit(&self, changes: Changes) -> StoreFuture<'_, ()> {
        let crypto = changes.iter().any(|(ns, _, _)| ns.starts_with("crypto"));
        if crypto && self.failing.load(Ordering::SeqCst) {
            return Box::pin(async { Err(StoreError::Backend("disk full".to_owned())) });
        }
        self.inner.commit(changes)
    }
}

async fn olm_messages_leave_only_after_the_machine_is_saved(backend: Backend) {
    let server = TestServer::start(backend).await;
    let proxy = FaultyProxy::start(&server.base_url).await;
    let suffix = &random_suffix()[..8];
    let store = Arc::new(FlakyStore::default());
    let alice = registered_on(&proxy.url, &format!("alice{suffix}"), store.clone()).await;
    let bob = registered(&server.base_url, &format!("bob{suffix}")).await;
    // A first room gives Alice an Olm session with Bob and his device list.
    let first = shared_room(&alice, &bob, RoomSecurity::Encrypted).await;
    first.send_text("hello").await.unwrap();
    until_decrypted(&bob, "hello").await;
    let room = shared_room(&alice, &bob, RoomSecurity::Encrypted).await;

    // The second room's key would go to Bob over that Olm session at
    // once, but the ratchet step the message comes from cannot be saved:
    // nothing may leave.
    let to_device_before = proxy.count(&Method::PUT, "/sendToDevice/");
    store.failing.store(true, Ordering::SeqCst);
    let refused = room.send_text("not while the disk is full").await;
    assert!(refused.is_err(), "{refused:?}");
    assert_eq!(
        proxy.count(&Method::PUT, "/sendToDevice/"),
        to_device_before,
        "an Olm message left before its state was saved"
    );

    // Once saving works again the same key goes out, before the message.
    store.failing.store(false, Ordering::SeqCst);
    room.send_text("the disk has room again").await.unwrap();
    assert!(proxy.count(&Method::PUT, "/sendToDevice/") > to_device_before);
    let seen = until_decrypted(&bob, "the disk has room again").await;
    assert_eq!(seen.sender, alice.user_id().unwrap().as_str());
}

/// The same for cross-signing: verifying a user uploads a signature only
/// once the machine's state behind it is saved.
async fn a_signature_leaves_only_after_the_machine_is_saved(backend: Backend) {
    let server = TestServer::start(backend).await;
    let proxy = FaultyProxy::start(&server.base_url).await;
    let suffix = &random_suffix()[..8];
    let store = Arc::new(FlakyStore::default());
    let alice = registered_on(&proxy.url, &format!("alice{suffix}"), store.clone()).await;
    let bob = registered(&server.base_url, &format!("bob{suffix}")).await;
    shared_room(&alice, &bob, RoomSecurity::Encrypted).await;
    alice.bootstrap_cross_signing(PASSWORD).await.unwrap();
    bob.bootstrap_cross_signing(PASSWORD).await.unwrap();
    let bob_id = bob.user_id().unwrap();
    // Alice learns Bob's cross-signing keys.
    while alice.user_identity(&bob_id).await.unwrap().is_none() {
        crate::sdk_support::sync_until(&alice, |_| true).await;
    }

    let signatures_before = proxy.count(&Method::POST, "/keys/signatures/upload");
    store.failing.store(true, Ordering::SeqCst);
    assert!(alice.verify_user(&bob_id).await.is_err());
    assert_eq!(
        proxy.count(&Method::POST, "/keys/signatures/upload"),
        signatures_before,
        "a signature left before the machine was saved"
    );
    store.failing.store(false, Ordering::SeqCst);
    alice.verify_user(&bob_id).await.unwrap();
    assert!(
        alice
            .user_identity(&bob_id)
            .await
            .unwrap()
            .unwrap()
            .is_verified
    );
}
