//! A myelin-sdk client and matrix-js-sdk with its Rust crypto exchange
//! encrypted messages both ways, then cross-sign: each finds the other's
//! device signed by its owner, and a js-sdk user we verify sends as
//! verified. Ignored by default: tests/interop/sdk-crypto.mjs
//! starts the js-sdk client, then runs this test against the same
//! homeserver with `MYELIN_INTEROP_PEER` naming the small HTTP API it
//! drives the js-sdk client with (`tests/interop/with-server.sh
//! tests/interop/run.sh sdk-crypto.mjs` runs it against Myelin).

use myelin_sdk::{CreateRoom, RoomSecurity, machine::VerificationState, ruma::OwnedUserId};
use myelin_tests::{PASSWORD, random_suffix};
use serde_json::{Value, json};

use crate::{
    sdk_e2ee::{has_membership, until_decrypted},
    sdk_support::{registered, sync_until},
};

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("set {name}"))
}

/// Asks the js-sdk peer to run `command`; panics with its error.
async fn peer(command: &str, body: Value) -> Value {
    let answer = reqwest::Client::new()
        .post(format!("{}/{command}", env("MYELIN_INTEROP_PEER")))
        .json(&body)
        .send()
        .await
        .unwrap();
    let ok = answer.status().is_success();
    let answer: Value = answer.json().await.unwrap();
    assert!(ok, "the js-sdk peer failed to {command}: {answer}");
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "driven by tests/interop/sdk-crypto.mjs"]
async fn myelin_sdk_and_matrix_js_sdk_exchange_encrypted_messages() {
    let homeserver = env("MYELIN_SDK_HOMESERVER");
    let js_user = OwnedUserId::try_from(env("MYELIN_INTEROP_PEER_USER")).unwrap();
    let suffix = &random_suffix()[..8];
    let alice = registered(&homeserver, &format!("interop_rust{suffix}")).await;
    let room = alice
        .create_room(CreateRoom {
            invite: vec![js_user.clone()],
            security: RoomSecurity::Encrypted,
            ..CreateRoom::default()
        })
        .await
        .unwrap();
    let room_id = room.room_id().to_owned();
    peer("join", json!({"room_id": room_id})).await;
    sync_until(&alice, |update| {
        has_membership(update, &room_id, &js_user, "join")
    })
    .await;

    let to_js = format!("from myelin-sdk {suffix}");
    room.send_text(&to_js).await.unwrap();
    let seen = peer("expect", json!({"room_id": room_id, "body": to_js})).await;
    assert_eq!(seen["wire_type"], "m.room.encrypted");
    assert_eq!(seen["type"], "m.room.message");
    assert_eq!(seen["sender"], alice.user_id().unwrap().as_str());

    let to_rust = format!("from matrix-js-sdk {suffix}");
    peer("send", json!({"room_id": room_id, "body": to_rust})).await;
    let decrypted = until_decrypted(&alice, &to_rust).await;
    assert_eq!(decrypted.sender, js_user.as_str());

    // Raw history: ciphertext only.
    let history = room.messages(None, 50).await.unwrap().events;
    for event in history.iter().filter(|e| !e.is_state()) {
        assert_eq!(event.event_type, "m.room.encrypted");
    }

    // Cross-signing both ways: each side checks the other's signatures.
    alice.bootstrap_cross_signing(PASSWORD).await.unwrap();
    peer("bootstrap_cross_signing", json!({})).await;
    let alice_device = alice.session().unwrap().device_id;
    let status = peer(
        "device_status",
        json!({"user_id": alice.user_id().unwrap(), "device_id": alice_device}),
    )
    .await;
    assert_eq!(status["signed_by_owner"], true, "{status}");
    alice.verify_user(&js_user).await.unwrap();
    assert!(
        alice
            .user_identity(&js_user)
            .await
            .unwrap()
            .unwrap()
            .is_verified
    );
    let verified = format!("from a verified matrix-js-sdk {suffix}");
    peer("send", json!({"room_id": room_id, "body": verified})).await;
    let decrypted = until_decrypted(&alice, &verified).await;
    assert_eq!(decrypted.verification, VerificationState::Verified);
}
