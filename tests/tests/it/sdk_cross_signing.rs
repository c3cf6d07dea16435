//! Cross-signing through the SDK against a Myelin server: Alice and Bob
//! bootstrap, Alice verifies Bob, and what follows for Bob's devices (the
//! one he signed is verified, a new one he did not sign is not and gets no
//! key in an "only verified" room until he signs it); and replacing keys
//! needs the password.

use std::sync::Arc;

use myelin_sdk::{
    ErrorKind, RoomSecurity, SqliteStore, Store,
    machine::{DeviceWarning, UtdCause, VerificationState},
};
use myelin_tests::{Backend, PASSWORD, TestServer, backend_tests, random_suffix};

use crate::{
    sdk_e2ee::{second_device, shared_room, until_decrypted, until_undecryptable},
    sdk_support::{client_on, registered, registered_on, sync_until},
};

backend_tests!(
    a_verified_users_signed_device_is_verified_and_an_unsigned_one_is_not,
    replacing_cross_signing_keys_needs_the_password,
    keys_and_trust_survive_a_restart
);

async fn a_verified_users_signed_device_is_verified_and_an_unsigned_one_is_not(backend: Backend) {
    let server = TestServer::start(backend).await;
    a_verified_users_signed_device_is_verified_and_an_unsigned_one_is_not_on(&server.base_url)
        .await;
}

/// The scenario against the homeserver at `url` (open registration, first
/// cross-signing upload without user-interactive auth).
pub async fn a_verified_users_signed_device_is_verified_and_an_unsigned_one_is_not_on(url: &str) {
    let suffix = &random_suffix()[..8];
    let alice = registered(url, &format!("alice{suffix}")).await;
    let bob = registered(url, &format!("bob{suffix}")).await;
    let room = shared_room(&alice, &bob, RoomSecurity::Encrypted).await;
    let room_id = room.room_id().to_owned();
    let bob_id = bob.user_id().unwrap();
    let bob_phone = bob.session().unwrap().device_id;

    // First uploads: no password asked (MSC3967), though one is given.
    alice.bootstrap_cross_signing(PASSWORD).await.unwrap();
    bob.bootstrap_cross_signing(PASSWORD).await.unwrap();
    bob.room(&room_id).send_text("before").await.unwrap();
    let before = until_decrypted(&alice, "before").await;
    assert_eq!(before.verification, VerificationState::Unverified);

    alice.verify_user(&bob_id).await.unwrap();
    let identity = alice.user_identity(&bob_id).await.unwrap().unwrap();
    assert!(identity.is_verified && !identity.has_changed);
    assert!(alice.is_device_verified(&bob_id, &bob_phone).await.unwrap());
    bob.room(&room_id).send_text("after").await.unwrap();
    let after = until_decrypted(&alice, "after").await;
    assert_eq!(after.verification, VerificationState::Verified);

    // Bob logs in on a new device and does not sign it.
    let bob_laptop = second_device(url, &bob).await;
    let laptop_id = bob_laptop.session().unwrap().device_id;
    sync_until(&bob_laptop, |update| {
        update.joined.iter().any(|r| r.room_id == room_id)
    })
    .await;
    // Alice learns of the laptop (an event from a device she has not
    // queried yet would be UnknownDevice, not Unverified).
    sync_until(&alice, |update| {
        update.device_lists.changed.contains(&bob_id)
    })
    .await;
    let bob_devices = alice.devices(&bob_id).await.unwrap();
    assert!(
        bob_devices
            .iter()
            .any(|d| d.device_id == laptop_id.as_str()),
        "{bob_devices:?}"
    );
    bob_laptop
        .room(&room_id)
        .send_text("from the laptop")
        .await
        .unwrap();
    let from_laptop = until_decrypted(&alice, "from the laptop").await;
    assert_eq!(from_laptop.sender_device.as_deref(), Some(&*laptop_id));
    assert_eq!(from_laptop.verification, VerificationState::Unverified);
    assert!(!alice.is_device_verified(&bob_id, &laptop_id).await.unwrap());

    // "Only verified": the phone reads, the laptop is told why it cannot.
    alice.set_only_verified(&room_id, true).await.unwrap();
    let sent = room.send_text("verified eyes only").await.unwrap();
    until_decrypted(&bob, "verified eyes only").await;
    assert_eq!(
        until_undecryptable(&bob_laptop, &sent).await,
        UtdCause::Withheld {
            code: "m.unverified".to_owned()
        }
    );

    // Bob vouches for the laptop from his phone: Alice now trusts it too.
    bob.verify_own_device(&laptop_id).await.unwrap();
    assert!(bob.is_device_verified(&bob_id, &laptop_id).await.unwrap());
    sync_until(&alice, |update| {
        update.device_lists.changed.contains(&bob_id)
    })
    .await;
    assert!(alice.is_device_verified(&bob_id, &laptop_id).await.unwrap());
    room.send_text("welcome, laptop").await.unwrap();
    until_decrypted(&bob_laptop, "welcome, laptop").await;
}

async fn replacing_cross_signing_keys_needs_the_password(backend: Backend) {
    let server = TestServer::start(backend).await;
    replacing_cross_signing_keys_needs_the_password_on(&server.base_url).await;
}

/// The scenario against the homeserver at `url`.
pub async fn replacing_cross_signing_keys_needs_the_password_on(url: &str) {
    let suffix = &random_suffix()[..8];
    let alice = registered(url, &format!("alice{suffix}")).await;
    let alice_id = alice.user_id().unwrap();
    alice.bootstrap_cross_signing("ignored").await.unwrap();
    let first = alice.user_identity(&alice_id).await.unwrap().unwrap();
    assert!(first.is_verified);
    // A second device pins the first keys when it first sees them.
    let laptop = second_device(url, &alice).await;
    let pinned = laptop.user_identity(&alice_id).await.unwrap().unwrap();
    assert_eq!(pinned.master_key, first.master_key);

    let refused = alice
        .bootstrap_cross_signing("not the password")
        .await
        .unwrap_err();
    assert_eq!(refused.kind(), Some(&ErrorKind::Forbidden), "{refused}");
    let kept = alice.user_identity(&alice_id).await.unwrap().unwrap();
    assert_eq!(kept.master_key, first.master_key);
    assert!(kept.is_verified);

    alice.bootstrap_cross_signing(PASSWORD).await.unwrap();
    let replaced = alice.user_identity(&alice_id).await.unwrap().unwrap();
    assert_ne!(replaced.master_key, first.master_key);
    assert!(replaced.is_verified);
    // The laptop is told, and trusts the new keys for nothing until it
    // acknowledges them (and, not having made them, not even then).
    let changed = DeviceWarning::IdentityChanged {
        user_id: alice_id.clone(),
    };
    sync_until(&laptop, |update| update.device_warnings.contains(&changed)).await;
    let seen = laptop.user_identity(&alice_id).await.unwrap().unwrap();
    assert_eq!(seen.master_key, replaced.master_key);
    assert!(seen.has_changed && !seen.is_verified);
    assert!(laptop.pin_identity(&alice_id).await.unwrap());
    let seen = laptop.user_identity(&alice_id).await.unwrap().unwrap();
    assert!(!seen.has_changed && !seen.is_verified);
}

async fn keys_and_trust_survive_a_restart(backend: Backend) {
    let server = TestServer::start(backend).await;
    keys_and_trust_survive_a_restart_on(&server.base_url).await;
}

/// The scenario against the homeserver at `url`.
pub async fn keys_and_trust_survive_a_restart_on(url: &str) {
    let suffix = &random_suffix()[..8];
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("alice.db");
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&path).await.unwrap());
    let alice = registered_on(url, &format!("alice{suffix}"), store).await;
    let bob = registered(url, &format!("bob{suffix}")).await;
    let (alice_id, bob_id) = (alice.user_id().unwrap(), bob.user_id().unwrap());
    alice.bootstrap_cross_signing(PASSWORD).await.unwrap();
    bob.bootstrap_cross_signing(PASSWORD).await.unwrap();
    // No shared room: verifying queries Bob first.
    alice.verify_user(&bob_id).await.unwrap();
    drop(alice);

    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&path).await.unwrap());
    let alice = client_on(url, store).await;
    assert!(
        alice
            .user_identity(&alice_id)
            .await
            .unwrap()
            .unwrap()
            .is_verified
    );
    assert!(
        alice
            .user_identity(&bob_id)
            .await
            .unwrap()
            .unwrap()
            .is_verified
    );
    // The private user-signing key came back from the store: it still signs.
    let carol = registered(url, &format!("carol{suffix}")).await;
    carol.bootstrap_cross_signing(PASSWORD).await.unwrap();
    let carol_id = carol.user_id().unwrap();
    alice.verify_user(&carol_id).await.unwrap();
    assert!(
        alice
            .user_identity(&carol_id)
            .await
            .unwrap()
            .unwrap()
            .is_verified
    );
}
