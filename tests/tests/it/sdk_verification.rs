//! Two myelin-sdk users verify each other's devices by emoji (SAS over
//! to-device messages) through a homeserver: request, ready, start,
//! accept, the same seven emoji and three numbers on both sides, both
//! confirm, and each then has the other's device verified and reads the
//! other's messages as from a verified device. `sdk_homeserver` runs the
//! same scenario against Synapse.

use myelin_sdk::{
    RoomSecurity,
    machine::{VerificationPhase, VerificationState},
};
use myelin_tests::{Backend, PASSWORD, TestServer, backend_tests, random_suffix};

use crate::{
    sdk_e2ee::{shared_room, until_decrypted},
    sdk_interop::until_phase,
    sdk_support::registered,
};

backend_tests!(two_users_verify_each_other_by_emoji);

async fn two_users_verify_each_other_by_emoji(backend: Backend) {
    let server = TestServer::start(backend).await;
    two_users_verify_each_other_by_emoji_on(&server.base_url).await;
}

/// The scenario against the homeserver at `url` (open registration, first
/// cross-signing upload without user-interactive auth).
pub async fn two_users_verify_each_other_by_emoji_on(url: &str) {
    let suffix = &random_suffix()[..8];
    let alice = registered(url, &format!("alice{suffix}")).await;
    let bob = registered(url, &format!("bob{suffix}")).await;
    let room = shared_room(&alice, &bob, RoomSecurity::Encrypted).await;
    let room_id = room.room_id().to_owned();
    let (alice_id, bob_id) = (alice.user_id().unwrap(), bob.user_id().unwrap());
    let (alice_device, bob_device) = (
        alice.session().unwrap().device_id,
        bob.session().unwrap().device_id,
    );
    // With cross-signing, the MACs cover the master keys too.
    alice.bootstrap_cross_signing(PASSWORD).await.unwrap();
    bob.bootstrap_cross_signing(PASSWORD).await.unwrap();
    // Each learns the other's device from a message.
    bob.room(&room_id)
        .send_text("before, from bob")
        .await
        .unwrap();
    let before = until_decrypted(&alice, "before, from bob").await;
    assert_eq!(before.verification, VerificationState::Unverified);
    alice
        .room(&room_id)
        .send_text("before, from alice")
        .await
        .unwrap();
    until_decrypted(&bob, "before, from alice").await;

    let txn = alice
        .request_verification(&bob_id, &bob_device)
        .await
        .unwrap();
    let request = until_phase(&bob, &alice_id, &txn, VerificationPhase::Requested).await;
    assert!(!request.we_requested);
    assert_eq!(request.device_id.as_deref(), Some(&*alice_device));
    bob.accept_verification_request(&alice_id, &txn)
        .await
        .unwrap();
    until_phase(&alice, &bob_id, &txn, VerificationPhase::Ready).await;
    alice.start_sas(&bob_id, &txn).await.unwrap();
    until_phase(&bob, &alice_id, &txn, VerificationPhase::Started).await;
    bob.accept_sas(&alice_id, &txn).await.unwrap();

    let (alice_sees, bob_sees) = tokio::join!(
        until_phase(&alice, &bob_id, &txn, VerificationPhase::ShowingSas),
        until_phase(&bob, &alice_id, &txn, VerificationPhase::ShowingSas),
    );
    assert!(alice_sees.emoji.is_some() && alice_sees.decimals.is_some());
    assert_eq!(
        alice_sees.emoji, bob_sees.emoji,
        "the two sides show other emoji"
    );
    assert_eq!(alice_sees.decimals, bob_sees.decimals);

    alice.confirm_sas(&bob_id, &txn).await.unwrap();
    bob.confirm_sas(&alice_id, &txn).await.unwrap();
    tokio::join!(
        until_phase(&alice, &bob_id, &txn, VerificationPhase::Done),
        until_phase(&bob, &alice_id, &txn, VerificationPhase::Done),
    );
    assert!(
        alice
            .is_device_verified(&bob_id, &bob_device)
            .await
            .unwrap()
    );
    assert!(
        bob.is_device_verified(&alice_id, &alice_device)
            .await
            .unwrap()
    );
    bob.room(&room_id)
        .send_text("after, from bob")
        .await
        .unwrap();
    let after = until_decrypted(&alice, "after, from bob").await;
    assert_eq!(after.verification, VerificationState::Verified);
}
