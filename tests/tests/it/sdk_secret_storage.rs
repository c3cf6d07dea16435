//! Secret storage through the SDK against a Myelin server: Alice keeps her
//! cross-signing keys and backup key in secret storage, logs in on a
//! brand-new device and unlocks them with the recovery key (or passphrase);
//! a mistyped or wrong key is refused with a typed error and imports
//! nothing; the server holds only ciphertext.

use myelin_sdk::{
    Client, Error, SecretStorageUnlock,
    machine::secret_storage::{SecretStorageError, SecretStorageKey, Unlock},
};
use myelin_tests::{Backend, PASSWORD, TestServer, backend_tests, random_suffix};
use reqwest::{Method, StatusCode};

use crate::{
    sdk_backup::alice_and_bob,
    sdk_e2ee::{second_device, until_decrypted},
    sdk_support::registered,
};

backend_tests!(
    a_new_device_unlocks_cross_signing_and_backup_with_the_recovery_key,
    a_passphrase_unlocks_secret_storage,
    a_rotated_key_replaces_the_old_one,
    removed_secret_storage_opens_nothing_and_can_be_set_up_again
);

/// `name`'s account data as the server stores it, read with a token of
/// Alice's own.
async fn stored(server: &TestServer, alice: &Client, name: &str) -> String {
    let user_id = alice.user_id().unwrap();
    let token = server.login(user_id.localpart(), None).await.token;
    let url = server.v3(&format!("/user/{user_id}/account_data/{name}"));
    let (status, content) = server.request(Method::GET, url, Some(&token), None).await;
    assert_eq!(status, StatusCode::OK, "{content}");
    content.to_string()
}

/// Whether `client` trusts its user's identity: it holds the master key.
async fn own_identity_verified(client: &Client) -> bool {
    let user_id = client.user_id().unwrap();
    client
        .user_identity(&user_id)
        .await
        .unwrap()
        .is_some_and(|identity| identity.is_verified)
}

/// Unlocks secret storage on `device` with `recovery_key`, and checks that
/// the cross-signing keys came with it: the identity is trusted and the
/// device counts itself verified at once, as the user's other devices see
/// it.
pub(crate) async fn unlocked_with(device: &Client, recovery_key: &str) -> SecretStorageUnlock {
    let unlocked = device
        .unlock_secret_storage(Unlock::RecoveryKey(recovery_key))
        .await
        .unwrap();
    assert!(unlocked.cross_signing);
    assert!(own_identity_verified(device).await);
    let own = device.session().unwrap();
    assert!(
        device
            .is_device_verified(&own.user_id, &own.device_id)
            .await
            .unwrap()
    );
    unlocked
}

/// A server with Alice, whose cross-signing keys and backup key are in
/// secret storage; returns them and its recovery key.
async fn alice_with_secret_storage(backend: Backend) -> (TestServer, Client, String) {
    let server = TestServer::start(backend).await;
    let url = server.base_url.as_str();
    let alice = registered(url, &format!("alice{}", &random_suffix()[..8])).await;
    alice.bootstrap_cross_signing(PASSWORD).await.unwrap();
    alice.enable_backup().await.unwrap();
    let recovery_key = alice.enable_secret_storage(None).await.unwrap();
    (server, alice, recovery_key.to_string())
}

/// Why `device` could not open secret storage with `recovery_key`.
async fn unlock_error(device: &Client, recovery_key: &str) -> Error {
    device
        .unlock_secret_storage(Unlock::RecoveryKey(recovery_key))
        .await
        .unwrap_err()
}

fn is_secret_storage_error(error: &Error, expected: fn(&SecretStorageError) -> bool) -> bool {
    matches!(error, Error::SecretStorage(e) if expected(e))
}

async fn a_new_device_unlocks_cross_signing_and_backup_with_the_recovery_key(backend: Backend) {
    let (server, alice, bob, room) = alice_and_bob(backend).await;
    let url = server.base_url.as_str();

    alice.bootstrap_cross_signing(PASSWORD).await.unwrap();
    alice.enable_backup().await.unwrap();
    room.send_text("from alice").await.unwrap();
    until_decrypted(&bob, "from alice").await;
    bob.room(room.room_id())
        .send_text("from bob")
        .await
        .unwrap();
    // The sync that brings Bob's key uploads both sessions.
    until_decrypted(&alice, "from bob").await;

    let recovery_key = alice.enable_secret_storage(None).await.unwrap();
    let master = stored(&server, &alice, "m.cross_signing.master").await;
    assert!(master.contains("\"encrypted\""), "{master}");
    let default_key = stored(&server, &alice, "m.secret_storage.default_key").await;
    assert!(default_key.contains("\"key\""), "{default_key}");

    let new = second_device(url, &alice).await;

    // A typo (one character dropped) and another key are told apart, and
    // neither imports anything.
    let typo: String = recovery_key.chars().skip(1).collect();
    let refused = new
        .unlock_secret_storage(Unlock::RecoveryKey(&typo))
        .await
        .unwrap_err();
    assert!(
        is_secret_storage_error(&refused, |e| matches!(
            e,
            SecretStorageError::RecoveryKey(_)
        )),
        "{refused:?}"
    );
    let other = SecretStorageKey::create(None).unwrap().recovery_key;
    let refused = new
        .unlock_secret_storage(Unlock::RecoveryKey(&other))
        .await
        .unwrap_err();
    assert!(
        is_secret_storage_error(&refused, |e| *e == SecretStorageError::WrongKey),
        "{refused:?}"
    );
    assert!(!own_identity_verified(&new).await);

    // The recovery key: the new device holds the cross-signing keys (and
    // so is signed by them) and can read the backup.
    let unlocked = unlocked_with(&new, &recovery_key).await;
    let backup_key = unlocked.backup_recovery_key.unwrap();
    let restore = new.restore_backup(&backup_key).await.unwrap();
    assert_eq!((restore.imported, restore.invalid), (2, 0));
}

async fn a_passphrase_unlocks_secret_storage(backend: Backend) {
    let server = TestServer::start(backend).await;
    let url = server.base_url.as_str();
    let alice = registered(url, &format!("alice{}", &random_suffix()[..8])).await;
    alice.bootstrap_cross_signing(PASSWORD).await.unwrap();
    alice
        .enable_secret_storage(Some("correct horse battery staple"))
        .await
        .unwrap();

    let new = second_device(url, &alice).await;
    let refused = new
        .unlock_secret_storage(Unlock::Passphrase("correct horse battery stapler"))
        .await
        .unwrap_err();
    assert!(
        is_secret_storage_error(&refused, |e| *e == SecretStorageError::WrongKey),
        "{refused:?}"
    );
    let unlocked = new
        .unlock_secret_storage(Unlock::Passphrase("correct horse battery staple"))
        .await
        .unwrap();
    assert!(unlocked.cross_signing);
    // No backup was enabled, so secret storage holds no backup key.
    assert!(unlocked.backup_recovery_key.is_none());
    assert!(own_identity_verified(&new).await);
}

/// A new default key takes every secret over; the old recovery key opens
/// nothing afterwards, and a wrong current key changes nothing.
async fn a_rotated_key_replaces_the_old_one(backend: Backend) {
    let (server, alice, old) = alice_with_secret_storage(backend).await;
    let url = server.base_url.as_str();

    let other = SecretStorageKey::create(None).unwrap().recovery_key;
    let refused = alice
        .rotate_secret_storage_key(Unlock::RecoveryKey(&other), None)
        .await
        .unwrap_err();
    assert!(
        is_secret_storage_error(&refused, |e| *e == SecretStorageError::WrongKey),
        "{refused:?}"
    );
    let rotation = alice
        .rotate_secret_storage_key(Unlock::RecoveryKey(&old), Some("a new passphrase"))
        .await
        .unwrap();
    assert!(rotation.old_key_retired);
    let new_key = rotation.recovery_key;
    assert_ne!(new_key.as_str(), old.as_str());

    let device = second_device(url, &alice).await;
    let refused = unlock_error(&device, &old).await;
    assert!(
        is_secret_storage_error(&refused, |e| *e == SecretStorageError::WrongKey),
        "{refused:?}"
    );
    // The new recovery key and the new passphrase both open every secret.
    let unlocked = device
        .unlock_secret_storage(Unlock::Passphrase("a new passphrase"))
        .await
        .unwrap();
    assert!(unlocked.cross_signing);
    assert!(unlocked.backup_recovery_key.is_some());
    let unlocked = device
        .unlock_secret_storage(Unlock::RecoveryKey(&new_key))
        .await
        .unwrap();
    assert!(unlocked.backup_recovery_key.is_some());
    // The secrets are held under the new key alone.
    let master = stored(&server, &alice, "m.cross_signing.master").await;
    let stored: serde_json::Value = serde_json::from_str(&master).unwrap();
    assert_eq!(
        stored["encrypted"].as_object().unwrap().len(),
        1,
        "{stored}"
    );
}

/// Removing secret storage clears every entry (empty content, as other
/// clients expect): a new device finds none, and it can be set up again.
async fn removed_secret_storage_opens_nothing_and_can_be_set_up_again(backend: Backend) {
    let (server, alice, old) = alice_with_secret_storage(backend).await;
    let url = server.base_url.as_str();
    let default_key: serde_json::Value =
        serde_json::from_str(&stored(&server, &alice, "m.secret_storage.default_key").await)
            .unwrap();
    let description = format!(
        "m.secret_storage.key.{}",
        default_key["key"].as_str().unwrap()
    );

    alice.disable_secret_storage().await.unwrap();
    for name in [
        "m.secret_storage.default_key",
        description.as_str(),
        "m.cross_signing.master",
        "m.cross_signing.self_signing",
        "m.cross_signing.user_signing",
        "m.megolm_backup.v1",
        "m.megolm_backup.v1.mac",
    ] {
        assert_eq!(stored(&server, &alice, name).await, "{}", "{name}");
    }

    let device = second_device(url, &alice).await;
    let refused = unlock_error(&device, &old).await;
    assert!(
        is_secret_storage_error(&refused, |e| *e == SecretStorageError::NotSetUp),
        "{refused:?}"
    );

    // Set up afresh, it holds the secrets again under the new key.
    let fresh = alice.enable_secret_storage(None).await.unwrap();
    let unlocked = device
        .unlock_secret_storage(Unlock::RecoveryKey(&fresh))
        .await
        .unwrap();
    assert!(unlocked.cross_signing);
    assert!(unlocked.backup_recovery_key.is_some());
}
