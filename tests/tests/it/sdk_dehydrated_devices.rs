//! MSC3814 dehydrated devices through the SDK against a Myelin server:
//! Alice keeps a dehydrated device and logs out; Bob's messages meanwhile
//! are shared with it; a new device of Alice's rehydrates it with her
//! recovery key and reads them.

use std::{sync::Arc, time::Duration};

use myelin_sdk::{
    Error, MemoryStore,
    machine::secret_storage::{SecretStorageError, Unlock},
};
use myelin_tests::{Backend, PASSWORD, backend_tests};
use tokio::time::Instant;

use crate::{
    sdk_backup::alice_and_bob,
    sdk_support::{client_on, quick_sync, sync_until},
};

backend_tests!(a_new_device_reads_what_was_sent_while_every_device_was_offline);

async fn a_new_device_reads_what_was_sent_while_every_device_was_offline(backend: Backend) {
    let (server, alice, bob, room) = alice_and_bob(backend).await;
    let url = server.base_url.as_str();
    let alice_id = alice.user_id().unwrap();

    // Without secret storage there is nowhere to keep the key.
    let refused = alice
        .create_dehydrated_device(Unlock::RecoveryKey("EsT"))
        .await
        .unwrap_err();
    assert!(
        matches!(refused, Error::SecretStorage(SecretStorageError::NotSetUp)),
        "{refused:?}"
    );

    alice.bootstrap_cross_signing(PASSWORD).await.unwrap();
    let recovery_key = alice.enable_secret_storage(None).await.unwrap();
    let unlock = Unlock::RecoveryKey(&recovery_key);
    let dehydrated = alice.create_dehydrated_device(unlock).await.unwrap();
    alice.logout().await.unwrap();

    // Bob learns of the dehydrated device (signed by Alice's self-signing
    // key) through the device-list change, then talks to the room.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let devices = bob.devices(&alice_id).await.unwrap();
        if let Some(device) = devices.iter().find(|d| d.device_id == dehydrated) {
            assert!(device.self_signing_key.is_some(), "{device:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Bob never saw the device: {devices:?}"
        );
        bob.sync_once(&quick_sync()).await.unwrap();
    }
    let bob_room = bob.room(room.room_id());
    bob_room.send_text("while alice was away").await.unwrap();
    bob_room.send_text("still away").await.unwrap();

    let new = client_on(url, Arc::new(MemoryStore::new())).await;
    new.login_password(alice_id.localpart(), PASSWORD, Some("new laptop"))
        .await
        .unwrap();
    let wrong = new
        .rehydrate_device(Unlock::RecoveryKey(&recovery_key[1..]))
        .await
        .unwrap_err();
    assert!(matches!(wrong, Error::SecretStorage(_)), "{wrong:?}");
    let rehydration = new.rehydrate_device(unlock).await.unwrap();
    assert_eq!(rehydration.rehydrated, dehydrated);
    assert!(rehydration.room_keys >= 1, "{rehydration:?}");
    assert_eq!(
        rehydration.imported, 1,
        "one Megolm session: {rehydration:?}"
    );
    assert_ne!(rehydration.replacement, dehydrated);

    // Both messages decrypt, in the sync that brings them.
    let mut read = Vec::new();
    sync_until(&new, |update| {
        read.extend(
            update
                .decrypted
                .iter()
                .filter_map(|event| event.content["body"].as_str().map(str::to_owned)),
        );
        read.len() >= 2
    })
    .await;
    assert_eq!(read, ["while alice was away", "still away"]);

    // The replacement is what the next rehydration finds, with nothing
    // sent to it yet.
    let again = new.rehydrate_device(unlock).await.unwrap();
    assert_eq!(again.rehydrated, rehydration.replacement);
    assert_eq!(again.room_keys, 0);
}
