//! MSC4147 `sender_device_keys`: what every Olm payload carries, what a
//! receiver refuses, and how a device keys/query does not list is judged.

use myelin_crypto::{megolm::OutboundGroupSession, olm::Ed25519PublicKey, verify_json_signature};
use serde_json::{Value, json};

use super::{
    ALICE, BOB, CAROL, ROOM, VerificationState, alice_and_bob,
    attacks::{deliver_olm, with_mallory},
    body,
    cross_signing::alice_verified_bob,
    server::{Client, FakeServer},
};
use crate::machine::UtdCause;

/// The decrypted payloads waiting in a device's inbox (taken from it).
fn olm_payloads(server: &mut FakeServer, to: &mut Client) -> Vec<Value> {
    let inbox = server
        .inboxes
        .remove(&(to.user.clone(), to.device.clone()))
        .unwrap_or_default();
    inbox
        .iter()
        .filter_map(|event| {
            let sender = super::user(event["sender"].as_str()?);
            to.machine.decrypt_to_device(&sender, event, to.now_ms).ok()
        })
        .map(|decrypted| decrypted.payload.clone())
        .collect()
}

#[test]
fn every_olm_payload_carries_our_device_keys_with_the_signatures_served_on_them() {
    let mut server = FakeServer::default();
    let (mut alice, mut bob, _) = alice_and_bob(&mut server);
    alice.share(&mut server, ROOM);
    let payloads = olm_payloads(&mut server, &mut bob);
    assert_eq!(payloads.len(), 1);
    assert_eq!(payloads[0]["type"], "m.room_key");
    // Exactly the object Alice uploaded.
    assert_eq!(
        payloads[0]["sender_device_keys"],
        server.device_keys[ALICE]["ALICEDEV"]
    );

    // Once cross-signed, the keys carry the self-signing key's signature
    // too, as keys/query serves them.
    super::cross_signing::bootstrap(&mut alice, &mut server);
    alice.sync(&mut server, vec![]);
    let ssk = server.cross_signing[ALICE]["self_signing_key"]["keys"]
        .as_object()
        .unwrap()
        .values()
        .next()
        .unwrap()
        .as_str()
        .unwrap()
        .to_owned();
    let dummy = alice
        .machine
        .encrypt_for_device(
            &alice
                .machine
                .devices(super::user_id(BOB))
                .into_iter()
                .find(|d| d.device_id == "BOBPHONE")
                .unwrap(),
            "m.dummy",
            &json!({}),
        )
        .unwrap();
    server
        .inboxes
        .entry((BOB.to_owned(), "BOBPHONE".to_owned()))
        .or_default()
        .push(json!({"type": "m.room.encrypted", "sender": ALICE, "content": dummy}));
    let payloads = olm_payloads(&mut server, &mut bob);
    let keys = payloads[0]["sender_device_keys"].as_object().unwrap();
    verify_json_signature(
        &Ed25519PublicKey::from_base64(&ssk).unwrap(),
        ALICE,
        &format!("ed25519:{ssk}"),
        keys,
    )
    .unwrap();
    assert_eq!(keys["keys"], server.device_keys[ALICE]["ALICEDEV"]["keys"]);
}

#[test]
fn a_cross_signed_device_that_keys_query_no_longer_lists_keeps_its_messages_attributed() {
    let mut server = FakeServer::default();
    let (mut alice, mut bob, mut laptop) = alice_verified_bob(&mut server);
    // Bob vouches for his laptop; the laptop learns the signature.
    let request = bob
        .machine
        .verify_own_device(super::device_id("BOBLAPTOP"))
        .unwrap();
    bob.answer(&mut server, &request);
    bob.save();
    laptop.sync(&mut server, vec![]);

    let event = laptop.send(&mut server, ROOM, "from the laptop");
    // The laptop is deleted before Alice fetches anything: her fresh list
    // of Bob's devices no longer has it.
    server.delete_device(BOB, "BOBLAPTOP");
    alice.sync(&mut server, vec![]);
    assert!(
        alice
            .machine
            .devices(super::user_id(BOB))
            .iter()
            .all(|d| d.device_id != "BOBLAPTOP")
    );
    let decrypted = alice.decrypt(ROOM, &event).unwrap();
    assert_eq!(body(&decrypted), "from the laptop");
    assert_eq!(
        decrypted
            .sender_device
            .as_deref()
            .map(ruma::DeviceId::as_str),
        Some("BOBLAPTOP")
    );
    assert_eq!(decrypted.verification, VerificationState::Verified);
    // After a restart too: the keys are kept with the session.
    alice.reload();
    let decrypted = alice.decrypt(ROOM, &event).unwrap();
    assert_eq!(decrypted.verification, VerificationState::Verified);
}

#[test]
fn a_deleted_device_bob_never_signed_is_still_not_attributed_to_him() {
    let mut server = FakeServer::default();
    let (mut alice, _bob, mut laptop) = alice_verified_bob(&mut server);
    // Unsigned: its own signature is all that says it is Bob's.
    let event = laptop.send(&mut server, ROOM, "unsigned laptop");
    server.delete_device(BOB, "BOBLAPTOP");
    alice.sync(&mut server, vec![]);
    assert_eq!(
        alice.decrypt(ROOM, &event).unwrap_err().cause,
        UtdCause::SenderMismatch
    );
}

#[test]
fn sender_device_keys_that_do_not_check_out_refuse_the_payload() {
    let mut server = FakeServer::default();
    let (_alice, mut bob, mut mallory) = with_mallory(&mut server);
    mallory.send(&mut server, ROOM, "hello"); // Olm session Mallory -> Bob
    bob.sync(&mut server, vec![]);
    let bob_device = mallory
        .machine
        .devices(super::user_id(BOB))
        .into_iter()
        .find(|d| d.device_id == "BOBPHONE")
        .unwrap();
    let mallory_ed25519 = mallory.machine.identity_keys().ed25519.to_base64();
    let genuine = mallory.machine.sender_device_keys();

    // A room key for a fresh session, with the given sender device keys.
    let mut sessions = Vec::new();
    let mut room_key = |device_keys: Value, sender_device: &str| {
        let session = OutboundGroupSession::new();
        let payload = json!({
            "type": "m.room_key",
            "content": {
                "algorithm": "m.megolm.v1.aes-sha2", "room_id": ROOM,
                "session_id": session.session_id(),
                "session_key": session.session_key().to_base64(),
            },
            "sender": CAROL, "sender_device": sender_device,
            "keys": {"ed25519": mallory_ed25519},
            "recipient": BOB, "recipient_keys": {"ed25519": bob_device.ed25519},
            "sender_device_keys": device_keys,
        });
        sessions.push(session.session_id());
        payload
    };

    // 1. Not self-signed: altered after signing.
    let mut altered = genuine.clone();
    altered["algorithms"] = json!(["m.olm.v1.curve25519-aes-sha2"]);
    // 2. Alice's genuine keys: another curve25519 key than the session's,
    //    another user than the sender.
    let alices = server.device_keys[ALICE]["ALICEDEV"].clone();
    // 3. Mallory's own keys, validly self-signed under another device id:
    //    the session's key belongs to MALLORY as keys/query knows it.
    let mut renamed = genuine.clone();
    let keys = renamed["keys"].as_object().unwrap().clone();
    renamed["device_id"] = json!("OTHERDEV");
    renamed["keys"] = json!({
        "curve25519:OTHERDEV": keys["curve25519:MALLORY"],
        "ed25519:OTHERDEV": keys["ed25519:MALLORY"],
    });
    renamed.as_object_mut().unwrap().remove("signatures");
    mallory
        .machine
        .account
        .sign_json(CAROL, "OTHERDEV", renamed.as_object_mut().unwrap())
        .unwrap();

    let refused = [
        room_key(altered, "MALLORY"),
        room_key(alices, "MALLORY"),
        room_key(renamed, "OTHERDEV"),
    ];
    // The genuine keys pass: the refusals above are theirs alone.
    let accepted = room_key(genuine, "MALLORY");
    for payload in refused.iter().chain([&accepted]) {
        deliver_olm(&mut server, &mut mallory, &bob_device, CAROL, payload);
    }
    bob.sync(&mut server, vec![]);

    let stored = |id: &String| bob.machine.inbound.keys().any(|k| k.session_id == *id);
    assert!(!stored(&sessions[0]) && !stored(&sessions[1]) && !stored(&sessions[2]));
    assert!(stored(&sessions[3]));
    let counts = bob.machine.rejected_to_device_counts();
    assert_eq!(counts.get("invalid_sender_device_keys"), Some(&2));
    assert_eq!(counts.get("sender_device_keys_mismatch"), Some(&1));
}
