//! Secret sharing (`m.secret.request` / `m.secret.send`) between a user's
//! own devices through a Myelin server: a new device verified by emoji
//! asks, and the device holding the cross-signing keys and the backup key
//! sends them over Olm; the new device then signs itself and reads the
//! backup. A device nobody verified asks and gets nothing. The machine's
//! own tests (`machine::tests::secret_sharing`) cover the refusals in
//! detail: answers from unverified devices or other users, requests from
//! them.

use myelin_sdk::{
    Client, RoomSecurity,
    machine::{ReceivedSecret, VerificationPhase},
    ruma::{OwnedDeviceId, OwnedUserId},
};
use myelin_tests::{Backend, PASSWORD, TestServer, backend_tests, random_suffix};
use tokio::task::JoinHandle;

use crate::{
    sdk_e2ee::{second_device, shared_room, until_decrypted},
    sdk_interop::until_phase,
    sdk_support::{quick_sync, registered, sync_until},
};

backend_tests!(
    a_device_verified_by_emoji_gets_the_secrets_from_another,
    an_unverified_device_gets_no_secrets
);

/// Alice's phone, with her identity and a key backup, and her new laptop;
/// the phone has seen the laptop's device keys.
async fn phone_and_new_laptop(url: &str) -> (Client, Client) {
    let phone = registered(url, &format!("alice{}", &random_suffix()[..8])).await;
    phone.bootstrap_cross_signing(PASSWORD).await.unwrap();
    phone.enable_backup().await.unwrap();
    // A first sync, so that the next one reports the new device.
    phone.sync_once(&quick_sync()).await.unwrap();
    let laptop = second_device(url, &phone).await;
    let laptop_id = laptop.session().unwrap().device_id;
    let alice_id = phone.user_id().unwrap();
    sync_until(&phone, |update| {
        update.device_lists.changed.contains(&alice_id)
    })
    .await;
    assert!(
        !phone
            .is_device_verified(&alice_id, &laptop_id)
            .await
            .unwrap()
    );
    (phone, laptop)
}

/// Keeps `device` syncing (answering requests) until the handle is
/// aborted.
fn keep_syncing(device: &Client) -> JoinHandle<()> {
    let device = device.clone();
    tokio::spawn(async move {
        loop {
            device.sync_once(&quick_sync()).await.unwrap();
        }
    })
}

/// The laptop verifies the phone by emoji (both confirm), as a user does
/// after logging in on a new device.
async fn verify_by_emoji(laptop: &Client, phone: &Client, phone_id: &OwnedDeviceId) {
    let alice_id: OwnedUserId = phone.user_id().unwrap();
    let txn = laptop
        .request_verification(&alice_id, phone_id)
        .await
        .unwrap();
    until_phase(phone, &alice_id, &txn, VerificationPhase::Requested).await;
    phone
        .accept_verification_request(&alice_id, &txn)
        .await
        .unwrap();
    until_phase(laptop, &alice_id, &txn, VerificationPhase::Ready).await;
    laptop.start_sas(&alice_id, &txn).await.unwrap();
    until_phase(phone, &alice_id, &txn, VerificationPhase::Started).await;
    phone.accept_sas(&alice_id, &txn).await.unwrap();
    tokio::join!(
        until_phase(laptop, &alice_id, &txn, VerificationPhase::ShowingSas),
        until_phase(phone, &alice_id, &txn, VerificationPhase::ShowingSas),
    );
    laptop.confirm_sas(&alice_id, &txn).await.unwrap();
    phone.confirm_sas(&alice_id, &txn).await.unwrap();
    tokio::join!(
        until_phase(laptop, &alice_id, &txn, VerificationPhase::Done),
        until_phase(phone, &alice_id, &txn, VerificationPhase::Done),
    );
}

async fn a_device_verified_by_emoji_gets_the_secrets_from_another(backend: Backend) {
    let server = TestServer::start(backend).await;
    let url = server.base_url.as_str();
    let (phone, laptop) = phone_and_new_laptop(url).await;
    let alice_id = phone.user_id().unwrap();
    let (phone_id, laptop_id) = (
        phone.session().unwrap().device_id,
        laptop.session().unwrap().device_id,
    );
    verify_by_emoji(&laptop, &phone, &phone_id).await;

    assert_eq!(
        laptop.request_secrets().await.unwrap(),
        4,
        "three cross-signing keys and the backup key"
    );
    let answering = keep_syncing(&phone);
    let mut received = Vec::new();
    sync_until(&laptop, |update| {
        received.extend(update.secrets.iter().cloned());
        received.contains(&ReceivedSecret::CrossSigningKeys)
            && received
                .iter()
                .any(|secret| matches!(secret, ReceivedSecret::BackupKey(_)))
    })
    .await;
    answering.abort();

    assert!(
        received.contains(&ReceivedSecret::CrossSigningKeys),
        "{received:?}"
    );
    let backup_key = received
        .iter()
        .find_map(|secret| match secret {
            ReceivedSecret::BackupKey(key) => Some(key.clone()),
            _ => None,
        })
        .expect("the backup key");
    // With the self-signing key the laptop signed itself (and the server
    // took the signature).
    assert!(
        laptop
            .is_device_verified(&alice_id, &laptop_id)
            .await
            .unwrap()
    );
    // With the user-signing key it verifies other users.
    let bob = registered(url, &format!("bob{}", &random_suffix()[..8])).await;
    bob.bootstrap_cross_signing(PASSWORD).await.unwrap();
    laptop.verify_user(&bob.user_id().unwrap()).await.unwrap();
    // And the backup key opens the phone's backup (a wrong key is refused
    // before anything is read).
    let room = shared_room(&phone, &bob, RoomSecurity::Encrypted).await;
    room.send_text("backed up").await.unwrap();
    until_decrypted(&bob, "backed up").await;
    phone.sync_once(&quick_sync()).await.unwrap();
    let restore = laptop.restore_backup(&backup_key).await.unwrap();
    assert_eq!(restore.refused + restore.invalid, 0);
    assert!(restore.imported + restore.unchanged >= 1, "{restore:?}");
}

async fn an_unverified_device_gets_no_secrets(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (phone, laptop) = phone_and_new_laptop(server.base_url.as_str()).await;
    assert_eq!(laptop.request_secrets().await.unwrap(), 4);
    // The phone's sync that brings the requests also sends whatever it
    // answers before it returns; the laptop's next sync would bring it.
    sync_until(&phone, |update| {
        update
            .to_device
            .iter()
            .any(|event| event.event_type == "m.secret.request")
    })
    .await;
    let update = laptop.sync_once(&quick_sync()).await.unwrap();
    assert!(update.secrets.is_empty(), "{:?}", update.secrets);
    let alice_id = phone.user_id().unwrap();
    let laptop_id = laptop.session().unwrap().device_id;
    assert!(
        !laptop
            .is_device_verified(&alice_id, &laptop_id)
            .await
            .unwrap()
    );
}
