//! The malicious server and the malicious member fail.

use myelin_crypto::olm::{Account, Curve25519PublicKey};
use serde_json::{Value, json};

use super::{
    ALICE, BOB, CAROL, ROOM, alice_and_bob, body, encrypted_room,
    server::{Client, FakeServer},
};
use crate::machine::{CryptoStore, Device, DeviceWarning, OlmMachine, RoomUpdate, UtdCause};

#[test]
fn a_replayed_ciphertext_under_a_new_event_id_is_refused() {
    let mut server = FakeServer::default();
    let (mut alice, mut bob, _) = alice_and_bob(&mut server);
    let event = alice.send(&mut server, ROOM, "pay 10");
    bob.sync(&mut server, vec![]);
    assert_eq!(body(&bob.decrypt(ROOM, &event).unwrap()), "pay 10");

    let mut replay = event.clone();
    replay["event_id"] = json!("$replayed");
    assert_eq!(
        bob.decrypt(ROOM, &replay).unwrap_err().cause,
        UtdCause::Replay
    );
    // The original still decrypts (a timeline reload is not a replay), also
    // after a restart: the seen indices are persisted.
    bob.reload();
    assert_eq!(body(&bob.decrypt(ROOM, &event).unwrap()), "pay 10");
    assert_eq!(
        bob.decrypt(ROOM, &replay).unwrap_err().cause,
        UtdCause::Replay
    );
}

/// Alice, Bob and Mallory in one room; Mallory is a member with a real
/// device, and she has shared her own session with Bob.
pub(super) fn with_mallory(server: &mut FakeServer) -> (Client, Client, Client) {
    let mut alice = Client::new(server, ALICE, "ALICEDEV");
    let mut bob = Client::new(server, BOB, "BOBPHONE");
    let mut mallory = Client::new(server, CAROL, "MALLORY");
    for client in [&mut alice, &mut bob, &mut mallory] {
        client.sync(server, vec![encrypted_room(&[ALICE, BOB, CAROL])]);
    }
    (alice, bob, mallory)
}

#[test]
fn a_forged_sender_or_sender_key_is_refused() {
    let mut server = FakeServer::default();
    let (mut alice, mut bob, mut mallory) = with_mallory(&mut server);
    let genuine = alice.send(&mut server, ROOM, "from alice");
    let own = mallory.send(&mut server, ROOM, "from mallory");

    // Relabelled before Bob even has the key: refused at once, not kept
    // waiting for a key that would make it look genuine.
    let mut early = genuine.clone();
    early["sender"] = json!(CAROL);
    early["event_id"] = json!("$early");
    assert_eq!(
        bob.decrypt(ROOM, &early).unwrap_err().cause,
        UtdCause::SenderMismatch
    );
    assert_eq!(bob.machine.pending_utd_count(), 0);

    bob.sync(&mut server, vec![]);
    assert_eq!(bob.decrypt(ROOM, &own).unwrap().sender, CAROL);

    // The server relabels Alice's event as Mallory's, and Mallory's as Alice's.
    let mut relabelled = genuine.clone();
    relabelled["sender"] = json!(CAROL);
    relabelled["event_id"] = json!("$relabelled1");
    assert_eq!(
        bob.decrypt(ROOM, &relabelled).unwrap_err().cause,
        UtdCause::SenderMismatch
    );
    let mut impersonation = own.clone();
    impersonation["sender"] = json!(ALICE);
    impersonation["event_id"] = json!("$relabelled2");
    assert_eq!(
        bob.decrypt(ROOM, &impersonation).unwrap_err().cause,
        UtdCause::SenderMismatch
    );

    // Mallory claims Alice's sender key for her own session: no session is
    // found under Alice's key, so nothing decrypts as Alice.
    let mut forged_key = mallory.send(&mut server, ROOM, "i am alice");
    forged_key["sender"] = json!(ALICE);
    forged_key["content"]["sender_key"] =
        json!(alice.machine.identity_keys().curve25519.to_base64());
    assert_eq!(
        bob.decrypt(ROOM, &forged_key).unwrap_err().cause,
        UtdCause::MissingRoomKey
    );
}

#[test]
fn an_olm_payload_with_a_forged_sender_or_another_recipient_is_dropped() {
    let mut server = FakeServer::default();
    let (alice, mut bob, mut mallory) = with_mallory(&mut server);
    mallory.send(&mut server, ROOM, "hello"); // Olm session Mallory -> Bob
    bob.sync(&mut server, vec![]);
    let bob_device = mallory
        .machine
        .devices(super::user_id(BOB))
        .into_iter()
        .find(|d| d.device_id == "BOBPHONE")
        .unwrap();
    let alice_keys = alice.machine.identity_keys();

    // A session of Mallory's, handed to Bob as if it were Alice's.
    let forged_session = myelin_crypto::megolm::OutboundGroupSession::new();
    let room_key = json!({
        "algorithm": "m.megolm.v1.aes-sha2", "room_id": ROOM,
        "session_id": forged_session.session_id(),
        "session_key": forged_session.session_key().to_base64(),
    });
    let payload_as_alice = json!({
        "type": "m.room_key", "content": room_key,
        "sender": ALICE, "sender_device": "ALICEDEV",
        "keys": {"ed25519": alice_keys.ed25519.to_base64()},
        "recipient": BOB, "recipient_keys": {"ed25519": bob_device.ed25519},
    });
    let mut payload_for_carol = payload_as_alice.clone();
    payload_for_carol["sender"] = json!(CAROL);
    payload_for_carol["keys"]["ed25519"] =
        json!(mallory.machine.identity_keys().ed25519.to_base64());
    payload_for_carol["recipient"] = json!("@dave:example.org");

    for (sender, payload) in [(ALICE, payload_as_alice), (CAROL, payload_for_carol)] {
        deliver_olm(&mut server, &mut mallory, &bob_device, sender, &payload);
    }
    bob.sync(&mut server, vec![]);

    // Neither key was stored: an event on that session stays undecryptable
    // under either sender key.
    let mut group = forged_session;
    for sender_key in [
        alice_keys.curve25519.to_base64(),
        mallory.machine.identity_keys().curve25519.to_base64(),
    ] {
        let ciphertext = group.encrypt(
            br#"{"type":"m.room.message","content":{"body":"x"},"room_id":"!room:example.org"}"#,
        );
        let event = server.room_event(
            ROOM,
            ALICE,
            json!({
                "algorithm": "m.megolm.v1.aes-sha2", "sender_key": sender_key,
                "ciphertext": ciphertext, "session_id": group.session_id(), "device_id": "ALICEDEV",
            }),
        );
        let cause = bob.decrypt(ROOM, &event).unwrap_err().cause;
        assert!(
            matches!(cause, UtdCause::MissingRoomKey | UtdCause::SenderMismatch),
            "{cause:?}"
        );
    }
    assert_eq!(
        bob.machine
            .inbound
            .values()
            .filter(|e| e.key_id.session_id == group.session_id())
            .count(),
        0
    );
}

#[test]
fn a_known_device_whose_identity_keys_change_is_refused() {
    let mut server = FakeServer::default();
    let (mut alice, mut bob, _) = alice_and_bob(&mut server);
    alice.send(&mut server, ROOM, "hello");
    let known = alice.machine.devices(super::user_id(BOB));

    // The server swaps Bob's phone for a device it controls: same id, new
    // keys, validly self-signed.
    let impostor = OlmMachine::new(
        &super::user(BOB),
        "BOBPHONE".into(),
        super::server::pickle_key(),
    );
    server
        .device_keys
        .get_mut(BOB)
        .unwrap()
        .insert("BOBPHONE".to_owned(), impostor.device_keys());
    server.notify_change(BOB);
    let output = alice.sync(&mut server, vec![]);
    assert_eq!(
        output.warnings,
        vec![DeviceWarning::IdentityKeysChanged {
            user_id: super::user(BOB),
            device_id: "BOBPHONE".into()
        }]
    );
    assert_eq!(alice.machine.devices(super::user_id(BOB)), known);

    // Alice keeps encrypting to the real phone.
    alice.now_ms += 7 * 24 * 60 * 60 * 1000;
    let event = alice.send(&mut server, ROOM, "still you?");
    bob.sync(&mut server, vec![]);
    assert_eq!(body(&bob.decrypt(ROOM, &event).unwrap()), "still you?");
}

#[test]
fn device_keys_without_a_valid_self_signature_are_ignored() {
    let mut server = FakeServer::default();
    let (mut alice, _, _) = alice_and_bob(&mut server);
    let mut forged = OlmMachine::new(
        &super::user(BOB),
        "EVIL".into(),
        super::server::pickle_key(),
    )
    .device_keys();
    forged["keys"]["curve25519:EVIL"] = alice.machine.identity_keys().curve25519.to_base64().into();
    server
        .device_keys
        .get_mut(BOB)
        .unwrap()
        .insert("EVIL".to_owned(), forged);
    // Filed under another device id than it names.
    let misfiled = OlmMachine::new(
        &super::user(BOB),
        "REAL".into(),
        super::server::pickle_key(),
    )
    .device_keys();
    server
        .device_keys
        .get_mut(BOB)
        .unwrap()
        .insert("OTHER".to_owned(), misfiled);
    server.notify_change(BOB);

    let output = alice.sync(&mut server, vec![]);
    assert_eq!(output.warnings.len(), 2);
    assert!(
        output
            .warnings
            .iter()
            .all(|w| matches!(w, DeviceWarning::InvalidDeviceKeys { .. }))
    );
    let ids: Vec<String> = alice
        .machine
        .devices(super::user_id(BOB))
        .into_iter()
        .map(|d| d.device_id.to_string())
        .collect();
    assert_eq!(ids, ["BOBLAPTOP", "BOBPHONE"]);
}

#[test]
fn a_forwarded_key_from_another_user_is_ignored() {
    let mut server = FakeServer::default();
    let (mut alice, mut bob, mut mallory) = with_mallory(&mut server);
    mallory.send(&mut server, ROOM, "hello"); // Olm session Mallory -> Bob
    bob.sync(&mut server, vec![]);
    let event = alice.send(&mut server, ROOM, "secret");
    mallory.sync(&mut server, vec![]);
    // The server drops Alice's key for Bob; Bob asks his own devices.
    server
        .inboxes
        .remove(&(BOB.to_owned(), "BOBPHONE".to_owned()));
    assert_eq!(
        bob.decrypt(ROOM, &event).unwrap_err().cause,
        UtdCause::MissingRoomKey
    );
    bob.send_outgoing(&mut server);

    // Mallory, who holds the real session, answers in Bob's place.
    let session_id = event["content"]["session_id"].as_str().unwrap();
    let sender_key = event["content"]["sender_key"].as_str().unwrap();
    let key_id = crate::machine::inbound::SessionKeyId {
        room_id: ROOM.try_into().unwrap(),
        sender_key: sender_key.to_owned(),
        session_id: session_id.to_owned(),
    };
    let exported = mallory.machine.inbound[&key_id].export().to_base64();
    let bob_device = mallory
        .machine
        .devices(super::user_id(BOB))
        .into_iter()
        .find(|d| d.device_id == "BOBPHONE")
        .unwrap();
    let payload = json!({
        "type": "m.forwarded_room_key",
        "content": {
            "algorithm": "m.megolm.v1.aes-sha2", "room_id": ROOM, "sender_key": sender_key,
            "session_id": session_id, "session_key": exported,
            "sender_claimed_ed25519_key": alice.machine.identity_keys().ed25519.to_base64(),
            "forwarding_curve25519_key_chain": [],
        },
        "sender": CAROL, "sender_device": "MALLORY",
        "keys": {"ed25519": mallory.machine.identity_keys().ed25519.to_base64()},
        "recipient": BOB, "recipient_keys": {"ed25519": bob_device.ed25519},
    });
    deliver_olm(&mut server, &mut mallory, &bob_device, CAROL, &payload);

    let output = bob.sync(&mut server, vec![]);
    assert!(output.late_decryptions.is_empty());
    assert_eq!(
        bob.decrypt(ROOM, &event).unwrap_err().cause,
        UtdCause::MissingRoomKey
    );
}

#[test]
fn a_room_key_from_a_device_the_sender_does_not_have_does_not_decrypt_as_them() {
    let mut server = FakeServer::default();
    let (alice, mut bob, _) = with_mallory(&mut server);
    // A device of a user Bob shares no room with, so Bob does not know it.
    let mut ghost = Client::new(&mut server, "@ghost:example.org", "GHOST");
    let side_room = RoomUpdate {
        room_id: super::room("!side:example.org"),
        ..encrypted_room(&["@ghost:example.org", BOB])
    };
    ghost.sync(&mut server, vec![side_room]);
    // The ghost opens an Olm session to Bob; the server drops what it sent,
    // so Bob has never heard of the ghost's device.
    ghost.send(&mut server, "!side:example.org", "hi");
    server
        .inboxes
        .remove(&(BOB.to_owned(), "BOBPHONE".to_owned()));

    // The ghost hands Bob a session as Alice, and the server labels the
    // to-device event and the room event as Alice's.
    let bob_device = ghost
        .machine
        .devices(super::user_id(BOB))
        .into_iter()
        .find(|d| d.device_id == "BOBPHONE")
        .unwrap();
    let mut group = myelin_crypto::megolm::OutboundGroupSession::new();
    let payload = json!({
        "type": "m.room_key",
        "content": {
            "algorithm": "m.megolm.v1.aes-sha2", "room_id": ROOM,
            "session_id": group.session_id(), "session_key": group.session_key().to_base64(),
        },
        "sender": ALICE, "sender_device": "ALICEDEV",
        "keys": {"ed25519": alice.machine.identity_keys().ed25519.to_base64()},
        "recipient": BOB, "recipient_keys": {"ed25519": bob_device.ed25519},
    });
    deliver_olm(&mut server, &mut ghost, &bob_device, ALICE, &payload);
    bob.sync(&mut server, vec![]);

    let ciphertext = group.encrypt(br#"{"type":"m.room.message","content":{"body":"i am alice"},"room_id":"!room:example.org"}"#);
    let event = server.room_event(
        ROOM,
        ALICE,
        json!({
            "algorithm": "m.megolm.v1.aes-sha2",
            "sender_key": ghost.machine.identity_keys().curve25519.to_base64(),
            "ciphertext": ciphertext, "session_id": group.session_id(), "device_id": "ALICEDEV",
        }),
    );
    // Bob's list of Alice's devices is up to date and has no such key.
    assert_eq!(
        bob.decrypt(ROOM, &event).unwrap_err().cause,
        UtdCause::SenderMismatch
    );
}

#[test]
fn a_withheld_notice_not_from_the_sessions_sender_is_ignored() {
    let mut server = FakeServer::default();
    let (mut alice, mut bob, _) = alice_and_bob(&mut server);
    let event = alice.send(&mut server, ROOM, "secret");
    // The server drops the key and, to make it look intended, sends a
    // withheld notice naming Alice's session, as if from Carol.
    server
        .inboxes
        .remove(&(BOB.to_owned(), "BOBPHONE".to_owned()));
    let notice = json!({
        "type": "m.room_key.withheld",
        "sender": CAROL,
        "content": {
            "algorithm": "m.megolm.v1.aes-sha2", "room_id": ROOM,
            "session_id": event["content"]["session_id"], "sender_key": event["content"]["sender_key"],
            "code": "m.unverified", "reason": "trust me",
        },
    });
    server
        .inboxes
        .entry((BOB.to_owned(), "BOBPHONE".to_owned()))
        .or_default()
        .push(notice);
    bob.sync(&mut server, vec![]);
    let utd = bob.decrypt(ROOM, &event).unwrap_err();
    assert_eq!(utd.cause, UtdCause::MissingRoomKey);
    assert!(!utd.cause.is_expected());
}

#[test]
fn olm_sessions_opened_with_the_fallback_key_are_capped_per_device() {
    let mut server = FakeServer::default();
    let (_, mut bob, _) = alice_and_bob(&mut server);
    let bob_key = (BOB.to_owned(), "BOBPHONE".to_owned());
    let (_, fallback, _) = server.fallback_keys[&bob_key].clone();
    let fallback = Curve25519PublicKey::from_base64(fallback["key"].as_str().unwrap()).unwrap();
    let bob_curve = bob.machine.identity_keys().curve25519;

    // One identity opens 40 sessions through the (reusable) fallback key.
    let attacker = Account::new();
    let sender_key = attacker.identity_keys().curve25519.to_base64();
    for _ in 0..40 {
        let mut session = attacker
            .create_outbound_session(bob_curve, fallback)
            .unwrap();
        let message = session.encrypt(b"{}").unwrap();
        let content = json!({
            "algorithm": "m.olm.v1.curve25519-aes-sha2", "sender_key": sender_key,
            "ciphertext": {bob_curve.to_base64(): message},
        });
        server.inboxes.entry(bob_key.clone()).or_default().push(
            json!({"type": "m.room.encrypted", "sender": "@attacker:example.org", "content": content}),
        );
    }
    bob.sync(&mut server, vec![]);
    let kept = bob
        .store
        .load_all()
        .unwrap()
        .into_keys()
        .filter(|k| k.starts_with(&format!("olm/{sender_key}/")))
        .count();
    assert_eq!(kept, 16);
}

/// Olm-encrypts `payload` from `from` to `device` and has the server
/// deliver it to Bob's phone labelled as sent by `sender`.
pub(super) fn deliver_olm(
    server: &mut FakeServer,
    from: &mut Client,
    device: &Device,
    sender: &str,
    payload: &Value,
) {
    let content = from
        .machine
        .olm_encrypt(device, &serde_json::to_vec(payload).unwrap())
        .unwrap();
    server
        .inboxes
        .entry((BOB.to_owned(), "BOBPHONE".to_owned()))
        .or_default()
        .push(json!({"type": "m.room.encrypted", "sender": sender, "content": content}));
}

#[test]
fn a_replayed_pre_key_message_on_the_fallback_key_is_processed_once() {
    let mut server = FakeServer::default();
    let (mut alice, mut bob, _) = alice_and_bob(&mut server);
    let bob_key = (BOB.to_owned(), "BOBPHONE".to_owned());
    // Bob's one-time keys are used up: Alice's session opens on his
    // fallback key, which stays usable for more sessions.
    server.one_time_keys.remove(&bob_key);
    alice.share(&mut server, ROOM);
    assert!(
        server.fallback_keys[&bob_key].2,
        "the fallback key was claimed"
    );
    bob.sync(&mut server, vec![]);

    let bob_device = alice
        .machine
        .devices(super::user_id(BOB))
        .into_iter()
        .find(|d| d.device_id == "BOBPHONE")
        .unwrap();
    let content = alice
        .machine
        .encrypt_for_device(&bob_device, "org.example.ping", &json!({"n": 1}))
        .unwrap();
    assert_eq!(
        content["ciphertext"][&bob_device.curve25519]["type"], 0,
        "still a pre-key message"
    );
    // The server delivers the same pre-key message twice.
    let event = json!({"type": "m.room.encrypted", "sender": ALICE, "content": content});
    server
        .inboxes
        .entry(bob_key)
        .or_default()
        .extend([event.clone(), event]);
    let output = bob.sync(&mut server, vec![]);
    let pings = output
        .to_device
        .iter()
        .filter(|e| e["type"] == "org.example.ping")
        .count();
    assert_eq!(pings, 1, "the replay was processed as a new message");
}

#[test]
fn a_withheld_notice_in_clear_does_not_make_a_missing_key_expected() {
    let mut server = FakeServer::default();
    let (mut alice, mut bob, _) = alice_and_bob(&mut server);
    let event = alice.send(&mut server, ROOM, "secret");
    // The server drops the key and, to make the failure look intended,
    // forges a withheld notice as if Alice's device sent it: the to-device
    // `sender` is whatever the server writes.
    server
        .inboxes
        .remove(&(BOB.to_owned(), "BOBPHONE".to_owned()));
    let notice = json!({
        "type": "m.room_key.withheld",
        "sender": ALICE,
        "content": {
            "algorithm": "m.megolm.v1.aes-sha2", "room_id": ROOM,
            "session_id": event["content"]["session_id"], "sender_key": event["content"]["sender_key"],
            "code": "m.unverified", "reason": "trust me",
        },
    });
    server
        .inboxes
        .entry((BOB.to_owned(), "BOBPHONE".to_owned()))
        .or_default()
        .push(notice);
    bob.sync(&mut server, vec![]);
    let utd = bob.decrypt(ROOM, &event).unwrap_err();
    assert!(!utd.cause.is_expected(), "{:?}", utd.cause);
}

#[test]
fn a_deleted_device_id_that_returns_with_other_keys_is_refused() {
    let mut server = FakeServer::default();
    let (mut alice, _, _) = alice_and_bob(&mut server);
    let laptop = |alice: &Client| {
        alice
            .machine
            .devices(super::user_id(BOB))
            .into_iter()
            .find(|d| d.device_id == "BOBLAPTOP")
    };
    let original = laptop(&alice).unwrap();
    let served = server.device_keys[BOB]["BOBLAPTOP"].clone();
    // The server leaves the laptop out of one answer...
    server.delete_device(BOB, "BOBLAPTOP");
    alice.sync(&mut server, vec![]);
    assert!(laptop(&alice).is_none());
    // ...then serves a device of its own under the same id.
    let _impostor = Client::new(&mut server, BOB, "BOBLAPTOP");
    let output = alice.sync(&mut server, vec![]);
    assert!(
        output
            .warnings
            .contains(&DeviceWarning::IdentityKeysChanged {
                user_id: super::user(BOB),
                device_id: "BOBLAPTOP".into(),
            }),
        "{:?}",
        output.warnings
    );
    assert!(laptop(&alice).is_none(), "the impostor was accepted");
    // Still refused after a restart.
    alice.reload();
    server.notify_change(BOB);
    alice.sync(&mut server, vec![]);
    assert!(laptop(&alice).is_none());
    // The real laptop, with the keys it always had, is welcome back.
    server
        .device_keys
        .get_mut(BOB)
        .unwrap()
        .insert("BOBLAPTOP".to_owned(), served);
    server.notify_change(BOB);
    alice.sync(&mut server, vec![]);
    assert_eq!(laptop(&alice), Some(original));
}

#[test]
fn to_device_events_whose_sender_is_not_a_user_id_are_refused_and_counted() {
    let mut server = FakeServer::default();
    let (mut alice, mut bob, _) = alice_and_bob(&mut server);
    let event = alice.send(&mut server, ROOM, "secret");
    let bob_key = (BOB.to_owned(), "BOBPHONE".to_owned());
    // The server rewrites the sender of Alice's genuine `m.room_key`, and
    // adds plaintext events that name nobody (or nothing) as their sender.
    let inbox = server.inboxes.get_mut(&bob_key).unwrap();
    assert_eq!(inbox.len(), 1);
    inbox[0]["sender"] = json!("alice");
    inbox.push(json!({"type": "org.example.ping", "sender": "@alice", "content": {}}));
    inbox.push(json!({"type": "org.example.ping", "sender": 7, "content": {}}));
    inbox.push(json!({"type": "org.example.ping", "content": {}}));

    let output = bob.sync(&mut server, vec![]);
    assert!(output.to_device.is_empty(), "{:?}", output.to_device);
    let counts = bob.machine.rejected_to_device_counts();
    assert_eq!(counts.get("invalid_sender"), Some(&4), "{counts:?}");
    assert_eq!(counts.len(), 1, "{counts:?}");
    assert_eq!(
        bob.decrypt(ROOM, &event).unwrap_err().cause,
        UtdCause::MissingRoomKey
    );
}

#[test]
fn room_keys_and_withheld_notices_naming_no_room_id_are_refused() {
    let mut server = FakeServer::default();
    let (mut alice, mut bob, _) = alice_and_bob(&mut server);
    // An Olm session Alice -> Bob, so that what follows is really hers.
    alice.send(&mut server, ROOM, "hello");
    bob.sync(&mut server, vec![]);
    bob.save();
    let bob_device = alice
        .machine
        .devices(super::user_id(BOB))
        .into_iter()
        .find(|d| d.device_id == "BOBPHONE")
        .unwrap();
    let group = myelin_crypto::megolm::OutboundGroupSession::new();
    let sender_key = alice.machine.identity_keys().curve25519.to_base64();
    let olm_payload = |event_type: &str, content: Value| {
        json!({
            "type": event_type, "content": content,
            "sender": ALICE, "sender_device": "ALICEDEV",
            "keys": {"ed25519": alice.machine.identity_keys().ed25519.to_base64()},
            "recipient": BOB, "recipient_keys": {"ed25519": bob_device.ed25519},
        })
    };
    let room_key = olm_payload(
        "m.room_key",
        json!({
            "algorithm": "m.megolm.v1.aes-sha2", "room_id": "not a room",
            "session_id": group.session_id(), "session_key": group.session_key().to_base64(),
        }),
    );
    let withheld_content = json!({
        "algorithm": "m.megolm.v1.aes-sha2", "room_id": "room:example.org",
        "session_id": group.session_id(), "sender_key": sender_key,
        "code": "m.unverified",
    });
    let withheld = olm_payload("m.room_key.withheld", withheld_content.clone());
    deliver_olm(&mut server, &mut alice, &bob_device, ALICE, &room_key);
    deliver_olm(&mut server, &mut alice, &bob_device, ALICE, &withheld);
    server
        .inboxes
        .entry((BOB.to_owned(), "BOBPHONE".to_owned()))
        .or_default()
        .push(json!({"type": "m.room_key.withheld", "sender": ALICE, "content": withheld_content}));

    bob.sync(&mut server, vec![]);
    // Nothing was kept: no session, no withheld code, no record.
    assert!(
        bob.machine
            .inbound
            .keys()
            .all(|key_id| key_id.session_id != group.session_id())
    );
    assert!(bob.machine.withheld.is_empty());
    assert!(bob.machine.withheld_hints.is_empty());
    let changes = bob.machine.take_changes();
    assert!(
        changes
            .records
            .keys()
            .all(|key| !key.contains(&group.session_id())),
        "{changes:?}"
    );
}
