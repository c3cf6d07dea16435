//! A verified user's identity changes, through the SDK against a Myelin
//! server: sending to the room is refused, naming the user, until the
//! application acknowledges the change; then the message goes out and is
//! read.

use myelin_sdk::{
    Error, RoomSecurity,
    machine::{DeviceWarning, MachineError},
};
use myelin_tests::{Backend, PASSWORD, TestServer, backend_tests, random_suffix};

use crate::{
    sdk_e2ee::{second_device, shared_room, until_decrypted},
    sdk_support::{registered, sync_until},
};

backend_tests!(a_verified_users_new_identity_blocks_sending_until_acknowledged);

async fn a_verified_users_new_identity_blocks_sending_until_acknowledged(backend: Backend) {
    let server = TestServer::start(backend).await;
    let url = &server.base_url;
    let suffix = &random_suffix()[..8];
    let alice = registered(url, &format!("alice{suffix}")).await;
    let bob = registered(url, &format!("bob{suffix}")).await;
    let room = shared_room(&alice, &bob, RoomSecurity::Encrypted).await;
    let bob_id = bob.user_id().unwrap();
    alice.bootstrap_cross_signing(PASSWORD).await.unwrap();
    bob.bootstrap_cross_signing(PASSWORD).await.unwrap();
    alice.verify_user(&bob_id).await.unwrap();
    room.send_text("while verified").await.unwrap();
    until_decrypted(&bob, "while verified").await;

    // Bob replaces his identity from another device (Alice cannot tell a
    // reset from a server's keys).
    let bob_laptop = second_device(url, &bob).await;
    bob_laptop.bootstrap_cross_signing(PASSWORD).await.unwrap();
    let changed = DeviceWarning::IdentityChanged {
        user_id: bob_id.clone(),
    };
    sync_until(&alice, |update| update.device_warnings.contains(&changed)).await;
    let identity = alice.user_identity(&bob_id).await.unwrap().unwrap();
    assert!(identity.has_verification_violation && !identity.is_verified);
    assert_eq!(
        alice.verification_violations().await.unwrap(),
        vec![bob_id.clone()]
    );

    let refused = room.send_text("refused").await.unwrap_err();
    match refused {
        Error::Crypto(MachineError::VerificationViolation { user_ids }) => {
            assert_eq!(user_ids, vec![bob_id.to_string()]);
        }
        other => panic!("expected a verification violation, got {other}"),
    }

    assert!(alice.acknowledge_identity_change(&bob_id).await.unwrap());
    assert!(alice.verification_violations().await.unwrap().is_empty());
    room.send_text("after acknowledging").await.unwrap();
    until_decrypted(&bob, "after acknowledging").await;
    // The refused message never reached the room.
    let encrypted = room
        .messages(None, 50)
        .await
        .unwrap()
        .events
        .iter()
        .filter(|event| event.event_type == "m.room.encrypted")
        .count();
    assert_eq!(encrypted, 2);
}
