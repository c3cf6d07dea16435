//! A myelin-sdk client and matrix-js-sdk with its Rust crypto, through one
//! homeserver: they exchange encrypted messages both ways and cross-sign
//! (each finds the other's device signed by its owner, and a js-sdk user
//! we verify sends as verified), and they verify each other's devices by
//! SAS, over to-device messages and in their encrypted room, each time
//! once with myelin-sdk requesting and once with matrix-js-sdk doing so:
//! both sides show the same emoji, both end with the other device (and
//! identity) verified, and messages then show as from a verified device
//! on both sides.
//!
//! Ignored by default: tests/interop/sdk-crypto.mjs starts the js-sdk
//! client, then runs these tests one at a time against the same homeserver
//! with `MYELIN_INTEROP_PEER` naming the small HTTP API it drives the js-sdk
//! client with (`tests/interop/with-server.sh tests/interop/run.sh
//! sdk-crypto.mjs` runs them against Myelin).

mod recovery;

use std::time::Duration;

use myelin_sdk::{
    Client, CreateRoom, Room, RoomSecurity,
    machine::{LocalTrust, Verification, VerificationPhase, VerificationState},
    ruma::{OwnedDeviceId, OwnedUserId},
};
use myelin_tests::{PASSWORD, random_suffix};
use ruma_ids::serde::{Base64, base64::Standard};
use serde_json::{Value, json};

use crate::{
    sdk_e2ee::{has_membership, until_decrypted},
    sdk_support::{quick_sync, registered, sync_until},
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

/// A fresh myelin-sdk user and the js-sdk user, both joined to an
/// encrypted room (so each tracks the other's devices).
struct Pair {
    rust: Client,
    room: Room,
    js_user: OwnedUserId,
    suffix: String,
}

impl Pair {
    async fn in_encrypted_room(localpart: &str) -> Self {
        let homeserver = env("MYELIN_SDK_HOMESERVER");
        let js_user = OwnedUserId::try_from(env("MYELIN_INTEROP_PEER_USER")).unwrap();
        let suffix = random_suffix()[..8].to_owned();
        let rust = registered(&homeserver, &format!("{localpart}{suffix}")).await;
        let room = rust
            .create_room(CreateRoom {
                invite: vec![js_user.clone()],
                security: RoomSecurity::Encrypted,
                ..CreateRoom::default()
            })
            .await
            .unwrap();
        let room_id = room.room_id().to_owned();
        peer("join", json!({"room_id": room_id})).await;
        sync_until(&rust, |update| {
            has_membership(update, &room_id, &js_user, "join")
        })
        .await;
        Self {
            rust,
            room,
            js_user,
            suffix,
        }
    }

    fn rust_user(&self) -> OwnedUserId {
        self.rust.user_id().unwrap()
    }

    fn rust_device(&self) -> OwnedDeviceId {
        self.rust.session().unwrap().device_id
    }

    /// Sends `body` from the Rust side; returns the shield the js client
    /// shows on it once decrypted.
    async fn shield_on_js(&self, body: &str) -> Value {
        self.room.send_text(body).await.unwrap();
        let room_id = self.room.room_id();
        peer("expect", json!({"room_id": room_id, "body": body})).await;
        peer("encryption_info", json!({"room_id": room_id, "body": body})).await
    }

    /// Has the js side send `body`; returns how the Rust side rates its
    /// sender.
    async fn state_on_rust(&self, body: &str) -> VerificationState {
        let room_id = self.room.room_id();
        peer("send", json!({"room_id": room_id, "body": body})).await;
        until_decrypted(&self.rust, body).await.verification
    }

    /// A message each way with nobody verified, then cross-signing set up
    /// on both sides (so the SAS MACs cover the master keys, and the js
    /// client, whose shields follow the sender's cross-signed identity,
    /// can show ours as verified); returns the js device (the one the js
    /// message came from).
    async fn unverified_exchange(&self) -> OwnedDeviceId {
        let body = format!("js, unverified {}", self.suffix);
        assert_eq!(
            self.state_on_rust(&body).await,
            VerificationState::Unverified
        );
        let devices = self.rust.devices(&self.js_user).await.unwrap();
        assert_eq!(devices.len(), 1, "{devices:?}");
        assert_eq!(devices[0].trust, LocalTrust::Unset);
        let shield = self
            .shield_on_js(&format!("rust, unverified {}", self.suffix))
            .await;
        // A device its owner did not cross-sign and the js user did not
        // verify.
        assert_eq!(shield["shield_colour"], "RED", "{shield}");
        self.rust.bootstrap_cross_signing(PASSWORD).await.unwrap();
        peer("bootstrap_cross_signing", json!({})).await;
        OwnedDeviceId::from(devices[0].device_id.as_str())
    }

    /// Both sides show the SAS: the seven emoji and the three numbers
    /// must be the same; then both confirm and both must finish.
    async fn compare_and_confirm(&self, transaction_id: &str) {
        let txn = json!({"transaction_id": transaction_id});
        let (js_sas, ours) = tokio::join!(
            peer("sas", txn.clone()),
            until_phase(
                &self.rust,
                &self.js_user,
                transaction_id,
                VerificationPhase::ShowingSas
            )
        );
        let ours_emoji: Vec<&str> = ours.emoji.unwrap().iter().map(|e| e.name).collect();
        let js_emoji: Vec<&str> = js_sas["emoji"]
            .as_array()
            .unwrap()
            .iter()
            .map(|pair| pair[1].as_str().unwrap())
            .collect();
        assert_eq!(ours_emoji.len(), 7);
        assert_eq!(ours_emoji, js_emoji, "the two sides show other emoji");
        assert_eq!(json!(ours.decimals.unwrap()), js_sas["decimal"]);

        self.rust
            .confirm_sas(&self.js_user, transaction_id)
            .await
            .unwrap();
        peer("confirm_sas", txn.clone()).await;
        let (_, outcome) = tokio::join!(
            until_phase(
                &self.rust,
                &self.js_user,
                transaction_id,
                VerificationPhase::Done
            ),
            peer("verification_outcome", txn)
        );
        assert_eq!(outcome["phase"], "Done", "{outcome}");
        assert_eq!(outcome["verifier"], "done", "{outcome}");
    }

    /// After the SAS: each side has the other device verified, and a
    /// message each way shows as from a verified device.
    async fn assert_verified_both_ways(&self, js_device: &OwnedDeviceId) {
        let devices = self.rust.devices(&self.js_user).await.unwrap();
        let js = devices.iter().find(|d| d.device_id == js_device.as_str());
        assert_eq!(js.map(|d| d.trust), Some(LocalTrust::Verified));
        let status = peer(
            "device_status",
            json!({"user_id": self.rust_user(), "device_id": self.rust_device()}),
        )
        .await;
        assert_eq!(status["locally_verified"], true, "{status}");
        assert_eq!(status["is_verified"], true, "{status}");
        // Our master key was MAC'd: the js user now verifies our identity.
        let identity = peer(
            "device_status",
            json!({"user_id": self.rust_user(), "device_id": self.rust_device(), "until": "identity_verified"}),
        )
        .await;
        assert_eq!(identity["identity_verified"], true, "{identity}");
        // And theirs was: we signed it with our user-signing key.
        let identity = self.rust.user_identity(&self.js_user).await.unwrap();
        assert!(identity.is_some_and(|i| i.is_verified), "the js identity");

        let body = format!("js, verified {}", self.suffix);
        assert_eq!(self.state_on_rust(&body).await, VerificationState::Verified);
        let shield = self
            .shield_on_js(&format!("rust, verified {}", self.suffix))
            .await;
        assert_eq!(shield["shield_colour"], "NONE", "{shield}");
    }
}

impl Pair {
    /// After a QR code verification (which signs master keys, not
    /// devices): each side has verified the other's identity, each device
    /// is verified through its owner's cross-signing, and a message each
    /// way shows as from a verified device.
    async fn assert_identities_verified(&self, js_device: &OwnedDeviceId) {
        let identity = self.rust.user_identity(&self.js_user).await.unwrap();
        assert!(identity.is_some_and(|i| i.is_verified), "the js identity");
        assert!(
            self.rust
                .is_device_verified(&self.js_user, js_device)
                .await
                .unwrap()
        );
        let identity = peer(
            "device_status",
            json!({"user_id": self.rust_user(), "device_id": self.rust_device(), "until": "identity_verified"}),
        )
        .await;
        assert_eq!(identity["identity_verified"], true, "{identity}");
        let status = peer(
            "device_status",
            json!({"user_id": self.rust_user(), "device_id": self.rust_device()}),
        )
        .await;
        assert_eq!(status["cross_signing_verified"], true, "{status}");

        let body = format!("js, verified by QR {}", self.suffix);
        assert_eq!(self.state_on_rust(&body).await, VerificationState::Verified);
        let shield = self
            .shield_on_js(&format!("rust, verified by QR {}", self.suffix))
            .await;
        assert_eq!(shield["shield_colour"], "NONE", "{shield}");
    }
}

/// Syncs `client` until its verification `transaction_id` with `user` is
/// in `phase`; returns it. Panics on a cancel, or after 30 s.
pub(crate) async fn until_phase(
    client: &Client,
    user: &OwnedUserId,
    transaction_id: &str,
    phase: VerificationPhase,
) -> Verification {
    let wait = async {
        loop {
            let flow = client.verification(user, transaction_id).await.unwrap();
            if let Some(flow) = flow {
                assert!(
                    !matches!(flow.phase, VerificationPhase::Cancelled { .. }),
                    "waiting for {phase:?}: {flow:?}"
                );
                if flow.phase == phase {
                    return flow;
                }
            }
            client.sync_once(&quick_sync()).await.unwrap();
        }
    };
    tokio::time::timeout(Duration::from_secs(30), wait)
        .await
        .unwrap_or_else(|_| panic!("verification {transaction_id} not {phase:?} within 30 s"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "driven by tests/interop/sdk-crypto.mjs"]
async fn myelin_sdk_and_matrix_js_sdk_exchange_encrypted_messages() {
    let pair = Pair::in_encrypted_room("interop_rust").await;
    let (alice, room, js_user, suffix) = (&pair.rust, &pair.room, &pair.js_user, &pair.suffix);
    let room_id = room.room_id().to_owned();

    let to_js = format!("from myelin-sdk {suffix}");
    room.send_text(&to_js).await.unwrap();
    let seen = peer("expect", json!({"room_id": room_id, "body": to_js})).await;
    assert_eq!(seen["wire_type"], "m.room.encrypted");
    assert_eq!(seen["type"], "m.room.message");
    assert_eq!(seen["sender"], alice.user_id().unwrap().as_str());

    let to_rust = format!("from matrix-js-sdk {suffix}");
    peer("send", json!({"room_id": room_id, "body": to_rust})).await;
    let decrypted = until_decrypted(alice, &to_rust).await;
    assert_eq!(decrypted.sender, js_user.as_str());

    // Raw history: ciphertext only.
    let history = room.messages(None, 50).await.unwrap().events;
    for event in history.iter().filter(|e| !e.is_state()) {
        assert_eq!(event.event_type, "m.room.encrypted");
    }

    // Cross-signing both ways: each side checks the other's signatures.
    alice.bootstrap_cross_signing(PASSWORD).await.unwrap();
    peer("bootstrap_cross_signing", json!({})).await;
    let alice_device = pair.rust_device();
    let status = peer(
        "device_status",
        json!({"user_id": alice.user_id().unwrap(), "device_id": alice_device, "until": "signed_by_owner"}),
    )
    .await;
    assert_eq!(status["signed_by_owner"], true, "{status}");
    alice.verify_user(js_user).await.unwrap();
    assert!(
        alice
            .user_identity(js_user)
            .await
            .unwrap()
            .unwrap()
            .is_verified
    );
    let verified = format!("from a verified matrix-js-sdk {suffix}");
    peer("send", json!({"room_id": room_id, "body": verified})).await;
    let decrypted = until_decrypted(alice, &verified).await;
    assert_eq!(decrypted.verification, VerificationState::Verified);
}

/// myelin-sdk requests (to-device), js accepts, myelin-sdk starts SAS and
/// js accepts the start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "driven by tests/interop/sdk-crypto.mjs"]
async fn myelin_sdk_starts_sas_with_matrix_js_sdk_and_both_end_verified() {
    let pair = Pair::in_encrypted_room("sas_rust_starts").await;
    let js_device = pair.unverified_exchange().await;

    let txn = pair
        .rust
        .request_verification(&pair.js_user, &js_device)
        .await
        .unwrap();
    let accepted = peer("accept_verification", json!({"user_id": pair.rust_user()})).await;
    assert_eq!(accepted["transaction_id"], txn.as_str(), "{accepted}");
    until_phase(&pair.rust, &pair.js_user, &txn, VerificationPhase::Ready).await;
    pair.rust.start_sas(&pair.js_user, &txn).await.unwrap();
    pair.compare_and_confirm(&txn).await;
    pair.assert_verified_both_ways(&js_device).await;
}

/// js requests (to-device), myelin-sdk accepts, js starts SAS and
/// myelin-sdk accepts the start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "driven by tests/interop/sdk-crypto.mjs"]
async fn matrix_js_sdk_starts_sas_with_myelin_sdk_and_both_end_verified() {
    let pair = Pair::in_encrypted_room("sas_js_starts").await;
    let js_device = pair.unverified_exchange().await;

    let requested = peer(
        "request_verification",
        json!({"user_id": pair.rust_user(), "device_id": pair.rust_device()}),
    )
    .await;
    let txn = requested["transaction_id"].as_str().unwrap().to_owned();
    let request = until_phase(
        &pair.rust,
        &pair.js_user,
        &txn,
        VerificationPhase::Requested,
    )
    .await;
    assert_eq!(
        request.device_id.as_deref().map(|d| d.as_str()),
        Some(js_device.as_str())
    );
    assert!(!request.we_requested);
    pair.rust
        .accept_verification_request(&pair.js_user, &txn)
        .await
        .unwrap();
    let (started, _) = tokio::join!(
        peer("start_sas", json!({"transaction_id": txn})),
        until_phase(&pair.rust, &pair.js_user, &txn, VerificationPhase::Started)
    );
    assert_eq!(started["phase"], "Started", "{started}");
    pair.rust.accept_sas(&pair.js_user, &txn).await.unwrap();
    pair.compare_and_confirm(&txn).await;
    pair.assert_verified_both_ways(&js_device).await;
}

/// myelin-sdk requests in the shared encrypted room (its events go
/// encrypted), js accepts (its events go in the clear), myelin-sdk starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "driven by tests/interop/sdk-crypto.mjs"]
async fn myelin_sdk_requests_in_room_verification_with_matrix_js_sdk_and_both_end_verified() {
    let pair = Pair::in_encrypted_room("room_rust_requests").await;
    let js_device = pair.unverified_exchange().await;

    let txn = pair
        .rust
        .request_verification_in_room(pair.room.room_id(), &pair.js_user)
        .await
        .unwrap();
    assert!(txn.starts_with('$'), "the request's event id: {txn}");
    let accepted = peer("accept_verification", json!({"user_id": pair.rust_user()})).await;
    assert_eq!(accepted["transaction_id"], txn.as_str(), "{accepted}");
    assert_eq!(
        accepted["room_id"],
        pair.room.room_id().as_str(),
        "{accepted}"
    );
    let ready = until_phase(&pair.rust, &pair.js_user, &txn, VerificationPhase::Ready).await;
    assert_eq!(
        ready.device_id.as_deref().map(|d| d.as_str()),
        Some(js_device.as_str()),
        "the js device answered"
    );
    pair.rust.start_sas(&pair.js_user, &txn).await.unwrap();
    pair.compare_and_confirm(&txn).await;
    pair.assert_verified_both_ways(&js_device).await;

    // On the wire: ours encrypted, js's in the clear.
    let history = pair.room.messages(None, 100).await.unwrap().events;
    let messages = history.iter().filter(|e| !e.is_state());
    let (ours, theirs): (Vec<_>, Vec<_>) = messages.partition(|e| e.sender == pair.rust_user());
    assert!(ours.iter().all(|e| e.event_type == "m.room.encrypted"));
    let js_clear: Vec<&str> = theirs
        .iter()
        .map(|e| e.event_type.as_str())
        .filter(|t| t.starts_with("m.key.verification."))
        .collect();
    assert!(
        js_clear.contains(&"m.key.verification.ready"),
        "{js_clear:?}"
    );
}

/// js requests in the shared encrypted room (`requestVerificationDM`,
/// which needs the other user's cross-signing identity), myelin-sdk
/// accepts, js starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "driven by tests/interop/sdk-crypto.mjs"]
async fn matrix_js_sdk_requests_in_room_verification_with_myelin_sdk_and_both_end_verified() {
    let pair = Pair::in_encrypted_room("room_js_requests").await;
    let js_device = pair.unverified_exchange().await;

    let room_id = pair.room.room_id();
    let requested = peer(
        "request_verification_dm",
        json!({"user_id": pair.rust_user(), "room_id": room_id}),
    )
    .await;
    assert_eq!(requested["room_id"], room_id.as_str(), "{requested}");
    let txn = requested["transaction_id"].as_str().unwrap().to_owned();
    let request = until_phase(
        &pair.rust,
        &pair.js_user,
        &txn,
        VerificationPhase::Requested,
    )
    .await;
    assert_eq!(
        request.room_id.as_deref().map(|r| r.as_str()),
        Some(room_id.as_str())
    );
    assert_eq!(
        request.device_id.as_deref().map(|d| d.as_str()),
        Some(js_device.as_str())
    );
    pair.rust
        .accept_verification_request(&pair.js_user, &txn)
        .await
        .unwrap();
    let (started, _) = tokio::join!(
        peer("start_sas", json!({"transaction_id": txn})),
        until_phase(&pair.rust, &pair.js_user, &txn, VerificationPhase::Started)
    );
    assert_eq!(started["phase"], "Started", "{started}");
    pair.rust.accept_sas(&pair.js_user, &txn).await.unwrap();
    pair.compare_and_confirm(&txn).await;
    pair.assert_verified_both_ways(&js_device).await;
}

/// myelin-sdk requests (to-device), js accepts and shows a QR code,
/// myelin-sdk scans it; js confirms the scan.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "driven by tests/interop/sdk-crypto.mjs"]
async fn matrix_js_sdk_shows_a_qr_code_that_myelin_sdk_scans_and_both_verify() {
    let pair = Pair::in_encrypted_room("qr_js_shows").await;
    let js_device = pair.unverified_exchange().await;

    let txn = pair
        .rust
        .request_verification(&pair.js_user, &js_device)
        .await
        .unwrap();
    peer("accept_verification", json!({"user_id": pair.rust_user()})).await;
    until_phase(&pair.rust, &pair.js_user, &txn, VerificationPhase::Ready).await;
    let shown = peer("generate_qr", json!({"transaction_id": txn})).await;
    let code = Base64::<Standard>::parse(shown["data"].as_str().unwrap())
        .unwrap()
        .into_inner();
    assert_eq!(&code[..8], b"MATRIX\x02\x00", "mode 0: another user");
    pair.rust
        .scan_qr_code(&pair.js_user, &txn, &code)
        .await
        .unwrap();
    let txn_body = json!({"transaction_id": txn});
    let (_, confirmed) = tokio::join!(
        until_phase(
            &pair.rust,
            &pair.js_user,
            &txn,
            VerificationPhase::Confirmed
        ),
        peer("confirm_qr_scanned", txn_body.clone())
    );
    assert_eq!(confirmed["phase"], "Started", "{confirmed}");
    let (_, outcome) = tokio::join!(
        until_phase(&pair.rust, &pair.js_user, &txn, VerificationPhase::Done),
        peer("verification_outcome", txn_body)
    );
    assert_eq!(outcome["phase"], "Done", "{outcome}");
    pair.assert_identities_verified(&js_device).await;
}

/// js requests (to-device), myelin-sdk accepts and shows a QR code, js
/// scans it; myelin-sdk confirms the scan.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "driven by tests/interop/sdk-crypto.mjs"]
async fn myelin_sdk_shows_a_qr_code_that_matrix_js_sdk_scans_and_both_verify() {
    let pair = Pair::in_encrypted_room("qr_rust_shows").await;
    let js_device = pair.unverified_exchange().await;

    let requested = peer(
        "request_verification",
        json!({"user_id": pair.rust_user(), "device_id": pair.rust_device()}),
    )
    .await;
    let txn = requested["transaction_id"].as_str().unwrap().to_owned();
    until_phase(
        &pair.rust,
        &pair.js_user,
        &txn,
        VerificationPhase::Requested,
    )
    .await;
    pair.rust
        .accept_verification_request(&pair.js_user, &txn)
        .await
        .unwrap();
    let code = pair
        .rust
        .generate_qr_code(&pair.js_user, &txn)
        .await
        .unwrap();
    let txn_body = json!({"transaction_id": txn});
    let (scanned, _) = tokio::join!(
        peer(
            "scan_qr",
            json!({"transaction_id": txn, "data": Base64::<Standard>::new(code).encode()})
        ),
        until_phase(
            &pair.rust,
            &pair.js_user,
            &txn,
            VerificationPhase::TheyScannedQr
        )
    );
    assert_eq!(scanned["phase"], "Started", "{scanned}");
    pair.rust
        .confirm_qr_scanned(&pair.js_user, &txn)
        .await
        .unwrap();
    let (_, outcome) = tokio::join!(
        until_phase(&pair.rust, &pair.js_user, &txn, VerificationPhase::Done),
        peer("verification_outcome", txn_body)
    );
    assert_eq!(outcome["phase"], "Done", "{outcome}");
    pair.assert_identities_verified(&js_device).await;
}
