//! Recovery across the two stacks: what one side keeps in secret storage
//! and key backup, the other reads back on a new device of the same user
//! with the recovery key alone: the cross-signing keys (the new device
//! signs itself and trusts its identity), the backup key, and the history.
//! Driven, as the rest of `sdk_interop`, by tests/interop/sdk-crypto.mjs.

use std::sync::Arc;

use myelin_sdk::{
    MemoryStore,
    machine::BackupAlgorithm,
    ruma::{OwnedDeviceId, OwnedRoomId, OwnedUserId},
};
use myelin_tests::PASSWORD;
use serde_json::{Value, json};

use super::{Pair, env, peer};
use crate::{
    sdk_backup::read_history,
    sdk_secret_storage::unlocked_with,
    sdk_support::{client_on, sync_until},
};

/// The spec's backup algorithm, the one matrix-js-sdk reads.
const SPEC_BACKUP: &str = "m.megolm_backup.v1.curve25519-aes-sha2";

fn parsed<T: TryFrom<String>>(value: &Value) -> T
where
    T::Error: std::fmt::Debug,
{
    T::try_from(value.as_str().unwrap().to_owned()).unwrap()
}

/// js first: a new js user sets up cross-signing, secret storage and a
/// key backup and writes in an encrypted room; myelin-sdk, on a new device
/// of that user, unlocks secret storage with the recovery key (the js
/// device then sees it cross-signed) and restores the history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "driven by tests/interop/sdk-crypto.mjs"]
async fn myelin_sdk_recovers_what_matrix_js_sdk_kept_in_secret_storage_and_backup() {
    let bodies = ["kept by js, first", "kept by js, second"];
    let setup = peer("recovery_setup", json!({ "bodies": bodies })).await;
    assert_eq!(setup["backup_algorithm"], SPEC_BACKUP, "{setup}");
    let user_id: OwnedUserId = parsed(&setup["user_id"]);
    let room_id: OwnedRoomId = parsed(&setup["room_id"]);

    let rust = client_on(&env("MYELIN_SDK_HOMESERVER"), Arc::new(MemoryStore::new())).await;
    rust.login_password(
        user_id.localpart(),
        setup["password"].as_str().unwrap(),
        Some("myelin-sdk"),
    )
    .await
    .unwrap();
    let device_id = rust.session().unwrap().device_id;
    sync_until(&rust, |update| {
        update.joined.iter().any(|r| r.room_id == room_id)
    })
    .await;

    let unlocked = unlocked_with(&rust, setup["recovery_key"].as_str().unwrap()).await;
    let restore = rust
        .restore_backup(&unlocked.backup_recovery_key.unwrap())
        .await
        .unwrap();
    // Unlocking kept the backup key, and the key of the waiting messages
    // may have been fetched already: the restore then finds it in place.
    assert_eq!(
        (restore.imported + restore.unchanged, restore.invalid),
        (1, 0)
    );
    // A spec-algorithm backup's keys count as forwarded.
    assert_eq!(
        read_history(&rust, &room_id).await,
        bodies.map(|body| Ok((body.to_owned(), true)))
    );

    // Each device trusts the other through the identity they share.
    let js_device: OwnedDeviceId = parsed(&setup["device_id"]);
    assert!(rust.is_device_verified(&user_id, &js_device).await.unwrap());
    let status = peer(
        "device_status",
        json!({"user_id": user_id, "device_id": device_id, "until": "cross_signing_verified", "recovering": true}),
    )
    .await;
    assert_eq!(status["signed_by_owner"], true, "{status}");

    rust.logout().await.unwrap();
    peer("recovery_finish", json!({})).await;
}

/// myelin-sdk first: it sets up cross-signing, an authenticated backup
/// and secret storage, and both users write in their room; a new js
/// device of the myelin-sdk user takes the cross-signing keys from secret
/// storage (and counts as verified on both sides). The js-sdk loads the
/// backup key but will not restore an MSC4048 backup (it reads the spec's
/// algorithm only); after the user moves to a spec-algorithm backup, it
/// restores and decrypts the history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "driven by tests/interop/sdk-crypto.mjs"]
async fn matrix_js_sdk_recovers_what_myelin_sdk_kept_in_secret_storage_and_backup() {
    let pair = Pair::in_encrypted_room("recovery_rust").await;
    let rust = &pair.rust;
    let rust_user = pair.rust_user();
    let room_id = pair.room.room_id();
    rust.bootstrap_cross_signing(PASSWORD).await.unwrap();
    rust.enable_backup().await.unwrap();
    let bodies = [
        format!("kept by myelin-sdk {}", pair.suffix),
        format!("received by myelin-sdk {}", pair.suffix),
    ];
    pair.room.send_text(&bodies[0]).await.unwrap();
    // The sync that decrypts it uploads its key to the backup.
    pair.state_on_rust(&bodies[1]).await;
    let recovery_key = rust.enable_secret_storage(None).await.unwrap();

    let login = peer(
        "recovery_login",
        json!({"user_id": rust_user, "password": PASSWORD, "recovery_key": recovery_key.as_str()}),
    )
    .await;
    let js_device: OwnedDeviceId = parsed(&login["device_id"]);
    let status = peer(
        "device_status",
        json!({"user_id": rust_user, "device_id": js_device, "until": "cross_signing_verified", "recovering": true}),
    )
    .await;
    assert_eq!(status["identity_verified"], true, "{status}");
    sync_until(rust, |update| {
        update.device_lists.changed.contains(&rust_user)
    })
    .await;
    assert!(
        rust.is_device_verified(&rust_user, &js_device)
            .await
            .unwrap()
    );

    let restore =
        json!({"recovery_key": recovery_key.as_str(), "room_id": room_id, "bodies": bodies});
    let refused = peer("recovery_restore", restore).await;
    assert_eq!(
        refused["algorithm"], "org.matrix.msc4048.curve25519-aes-sha2",
        "{refused}"
    );
    assert!(
        refused["error"]
            .as_str()
            .is_some_and(|e| e.contains("Unsupported algorithm")),
        "{refused}"
    );

    // A spec backup (a new version, every key uploaded again), and its key
    // in secret storage under a new recovery key.
    rust.enable_backup_with(BackupAlgorithm::Spec)
        .await
        .unwrap();
    let recovery_key = rust.enable_secret_storage(None).await.unwrap();
    let restore =
        json!({"recovery_key": recovery_key.as_str(), "room_id": room_id, "bodies": bodies});
    let restored = peer("recovery_restore", restore).await;
    assert_eq!(restored["algorithm"], SPEC_BACKUP, "{restored}");
    assert_eq!(restored["error"], Value::Null, "{restored}");
    assert_eq!(restored["imported"], 2, "{restored}");

    peer("recovery_finish", json!({})).await;
}
