//! Machines talking to each other through a fake server, event by event.

mod attacks;
mod backup;
mod backup_reads;
mod cross_signing;
mod history;
mod identity_changes;
mod key_export;
mod persistence;
mod secret_sharing;
mod sender_device_keys;
mod server;
mod verification;

use myelin_crypto::{megolm::MEGOLM_ALGORITHM, olm::Ed25519PublicKey, verify_json_signature};
use ruma::{DeviceId, OwnedRoomId, OwnedUserId, RoomId, UserId};
use serde_json::{Value, json};

use self::server::{Client, FakeServer, body};
use super::{
    DeviceWarning, LocalTrust, MachineError, Membership, Request, RoomUpdate, UtdCause,
    VerificationState,
};

const ROOM: &str = "!room:example.org";
const ALICE: &str = "@alice:example.org";
const BOB: &str = "@bob:example.org";
const CAROL: &str = "@carol:example.org";

/// A test's user id, which it spells right.
fn user(id: &str) -> OwnedUserId {
    id.try_into().expect("a valid user id")
}

/// A test's room id, which it spells right.
fn room(id: &str) -> OwnedRoomId {
    id.try_into().expect("a valid room id")
}

/// A test's room id, borrowed, which it spells right.
fn room_id(id: &str) -> &RoomId {
    <&RoomId>::try_from(id).expect("a valid room id")
}

/// A test's user id, borrowed, which it spells right.
fn user_id(id: &str) -> &UserId {
    <&UserId>::try_from(id).expect("a valid user id")
}

/// A test's device id, borrowed.
fn device_id(id: &str) -> &DeviceId {
    id.into()
}

/// A test's event id, borrowed, which it spells right.
fn event_id(id: &str) -> &ruma::EventId {
    <&ruma::EventId>::try_from(id).expect("a valid event id")
}

/// An encrypted room's state with `members` joined.
fn encrypted_room(members: &[&str]) -> RoomUpdate {
    RoomUpdate {
        room_id: room(ROOM),
        encryption: Some(json!({"algorithm": MEGOLM_ALGORITHM})),
        history_visibility: Some("shared".to_owned()),
        members: members
            .iter()
            .map(|u| (user(u), Membership::Join))
            .collect(),
        inviter: None,
    }
}

fn membership(member: &str, membership: Membership) -> RoomUpdate {
    RoomUpdate {
        members: vec![(user(member), membership)],
        ..RoomUpdate::new(room(ROOM))
    }
}

/// Alice and Bob (two devices) in one encrypted room, everyone synced.
fn alice_and_bob(server: &mut FakeServer) -> (Client, Client, Client) {
    let mut alice = Client::new(server, ALICE, "ALICEDEV");
    let mut bob = Client::new(server, BOB, "BOBPHONE");
    let mut bob2 = Client::new(server, BOB, "BOBLAPTOP");
    for client in [&mut alice, &mut bob, &mut bob2] {
        client.sync(server, vec![encrypted_room(&[ALICE, BOB])]);
    }
    (alice, bob, bob2)
}

#[test]
fn an_initial_sync_refreshes_every_tracked_device_list() {
    let mut server = FakeServer::default();
    let mut alice = Client::new(&mut server, ALICE, "ALICEDEV");
    // A second device appears before Alice's first sync, which (being
    // initial) carries no device_lists.changed.
    let _laptop = Client::new(&mut server, ALICE, "ALICELAPTOP");
    let queries = |machine: &mut super::OlmMachine| {
        machine
            .outgoing_requests()
            .into_iter()
            .filter(|r| matches!(&r.request, Request::KeysQuery { body } if body["device_keys"].get(ALICE).is_some()))
            .collect::<Vec<_>>()
    };
    let quiet = alice
        .machine
        .receive_sync_changes(super::SyncChanges::default());
    assert!(quiet.warnings.is_empty());
    assert!(
        queries(&mut alice.machine).is_empty(),
        "nothing changed yet"
    );
    alice.machine.receive_sync_changes(super::SyncChanges {
        is_initial: true,
        ..super::SyncChanges::default()
    });
    let refresh = queries(&mut alice.machine);
    assert_eq!(refresh.len(), 1);
    alice.answer(&mut server, &refresh[0]);
    let devices: Vec<String> = alice
        .machine
        .devices(user_id(ALICE))
        .into_iter()
        .map(|d| d.device_id.to_string())
        .collect();
    assert!(devices.contains(&"ALICELAPTOP".to_owned()), "{devices:?}");
}

#[test]
fn a_new_device_uploads_self_signed_keys_and_tops_up_one_time_keys() {
    let mut server = FakeServer::default();
    let mut alice = Client::new(&mut server, ALICE, "ALICEDEV");
    let key = ("@alice:example.org".to_owned(), "ALICEDEV".to_owned());

    let device_keys = server.device_keys[ALICE]["ALICEDEV"]
        .as_object()
        .unwrap()
        .clone();
    let ed25519 =
        Ed25519PublicKey::from_base64(device_keys["keys"]["ed25519:ALICEDEV"].as_str().unwrap())
            .unwrap();
    assert_eq!(ed25519, alice.machine.identity_keys().ed25519);
    verify_json_signature(&ed25519, ALICE, "ed25519:ALICEDEV", &device_keys).unwrap();
    assert_eq!(
        device_keys["algorithms"],
        json!(["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"])
    );

    let max = server.one_time_keys[&key].len();
    assert_eq!(max, 50);
    for otk in server.one_time_keys[&key].values() {
        verify_json_signature(
            &ed25519,
            ALICE,
            "ed25519:ALICEDEV",
            otk.as_object().unwrap(),
        )
        .unwrap();
    }
    let (_, fallback, used) = &server.fallback_keys[&key];
    assert!(!used);
    assert_eq!(fallback["fallback"], json!(true));
    verify_json_signature(
        &ed25519,
        ALICE,
        "ed25519:ALICEDEV",
        fallback.as_object().unwrap(),
    )
    .unwrap();

    // Nothing more to upload while the server has everything.
    alice.sync(&mut server, vec![]);
    assert!(alice.machine.outgoing_requests().is_empty());

    // Ten keys claimed: the next sync tops up exactly ten.
    let claimed: Vec<String> = server.one_time_keys[&key]
        .keys()
        .take(10)
        .cloned()
        .collect();
    for id in &claimed {
        server.one_time_keys.get_mut(&key).unwrap().remove(id);
    }
    alice.sync(&mut server, vec![]);
    assert_eq!(server.one_time_keys[&key].len(), 50);
    assert!(
        claimed
            .iter()
            .all(|id| !server.one_time_keys[&key].contains_key(id))
    );

    // The fallback key was used: a new one replaces it.
    server.fallback_keys.get_mut(&key).unwrap().2 = true;
    let old_fallback = server.fallback_keys[&key].0.clone();
    alice.sync(&mut server, vec![]);
    let (new_id, _, used) = &server.fallback_keys[&key];
    assert!(!used);
    assert_ne!(*new_id, old_fallback);
}

#[test]
fn keys_are_shared_with_every_device_of_every_member() {
    let mut server = FakeServer::default();
    let (mut alice, mut bob, mut bob2) = alice_and_bob(&mut server);

    let event = alice.send(&mut server, ROOM, "hello bob");
    for device in [&mut bob, &mut bob2] {
        device.sync(&mut server, vec![]);
        let decrypted = device.decrypt(ROOM, &event).unwrap();
        assert_eq!(body(&decrypted), "hello bob");
        assert_eq!(decrypted.sender, ALICE);
        assert_eq!(
            decrypted
                .sender_device
                .as_deref()
                .map(ruma::DeviceId::as_str),
            Some("ALICEDEV")
        );
        assert_eq!(decrypted.verification, VerificationState::Unverified);
    }
    // Alice reads her own message.
    assert_eq!(body(&alice.decrypt(ROOM, &event).unwrap()), "hello bob");

    // Bob answers from his phone; Alice and his laptop read it, and the
    // laptop, once verified by Bob, shows it as verified.
    let reply = bob.send(&mut server, ROOM, "hi alice");
    alice.sync(&mut server, vec![]);
    bob2.sync(&mut server, vec![]);
    assert_eq!(body(&alice.decrypt(ROOM, &reply).unwrap()), "hi alice");
    assert!(bob2.machine.set_device_trust(
        user_id(BOB),
        device_id("BOBPHONE"),
        LocalTrust::Verified
    ));
    let on_laptop = bob2.decrypt(ROOM, &reply).unwrap();
    assert_eq!(on_laptop.verification, VerificationState::Verified);
    assert_eq!(
        on_laptop
            .sender_device
            .as_deref()
            .map(ruma::DeviceId::as_str),
        Some("BOBPHONE")
    );
}

#[test]
fn a_member_who_leaves_cannot_read_what_follows() {
    let mut server = FakeServer::default();
    let mut alice = Client::new(&mut server, ALICE, "ALICEDEV");
    let mut bob = Client::new(&mut server, BOB, "BOBPHONE");
    let mut carol = Client::new(&mut server, CAROL, "CAROLDEV");
    for client in [&mut alice, &mut bob, &mut carol] {
        client.sync(&mut server, vec![encrypted_room(&[ALICE, BOB, CAROL])]);
    }
    let before = alice.send(&mut server, ROOM, "all three of us");
    let first_session = alice.machine.outbound_session_id(room_id(ROOM)).unwrap();
    carol.sync(&mut server, vec![]);
    assert_eq!(
        body(&carol.decrypt(ROOM, &before).unwrap()),
        "all three of us"
    );

    // Carol leaves. Alice's next message uses a new session Carol never gets.
    for client in [&mut alice, &mut bob, &mut carol] {
        client.sync(&mut server, vec![membership(CAROL, Membership::Leave)]);
    }
    // The old session refuses to encrypt until a share has rotated it, even
    // for a caller that forgets to share first, and even after a restart.
    alice.reload();
    assert!(matches!(
        alice
            .machine
            .encrypt_room_event(room_id(ROOM), "m.room.message", &json!({}), alice.now_ms),
        Err(MachineError::RoomKeyNotShared(_))
    ));
    let after = alice.send(&mut server, ROOM, "just us two");
    assert_ne!(
        alice.machine.outbound_session_id(room_id(ROOM)).unwrap(),
        first_session
    );
    assert!(
        inbox(&server, CAROL, "CAROLDEV").is_empty(),
        "no to-device for Carol"
    );
    carol.sync(&mut server, vec![]);
    // Even with the ciphertext in hand (a malicious server could give it to
    // her), Carol cannot decrypt.
    let utd = carol.decrypt(ROOM, &after).unwrap_err();
    assert_eq!(utd.cause, UtdCause::MissingRoomKey);

    bob.sync(&mut server, vec![]);
    assert_eq!(body(&bob.decrypt(ROOM, &after).unwrap()), "just us two");
}

#[test]
fn a_deleted_device_rotates_the_session() {
    let mut server = FakeServer::default();
    let (mut alice, mut bob, mut bob2) = alice_and_bob(&mut server);
    alice.send(&mut server, ROOM, "one");
    let first_session = alice.machine.outbound_session_id(room_id(ROOM)).unwrap();

    server.delete_device(BOB, "BOBLAPTOP");
    alice.sync(&mut server, vec![]);
    let event = alice.send(&mut server, ROOM, "two");
    assert_ne!(
        alice.machine.outbound_session_id(room_id(ROOM)).unwrap(),
        first_session
    );
    bob2.sync(&mut server, vec![]);
    assert_eq!(
        bob2.decrypt(ROOM, &event).unwrap_err().cause,
        UtdCause::MissingRoomKey
    );
    bob.sync(&mut server, vec![]);
    assert_eq!(body(&bob.decrypt(ROOM, &event).unwrap()), "two");
}

#[test]
fn a_new_device_gets_keys_for_new_messages_only() {
    let mut server = FakeServer::default();
    let mut alice = Client::new(&mut server, ALICE, "ALICEDEV");
    let mut bob = Client::new(&mut server, BOB, "BOBPHONE");
    for client in [&mut alice, &mut bob] {
        client.sync(&mut server, vec![encrypted_room(&[ALICE, BOB])]);
    }
    let old = alice.send(&mut server, ROOM, "before the laptop");
    let session = alice.machine.outbound_session_id(room_id(ROOM)).unwrap();

    let mut laptop = Client::new(&mut server, BOB, "BOBLAPTOP");
    laptop.sync(&mut server, vec![encrypted_room(&[ALICE, BOB])]);
    alice.sync(&mut server, vec![]); // device_lists.changed: Bob
    let new = alice.send(&mut server, ROOM, "after the laptop");
    // Adding a device does not rotate: the laptop gets the current ratchet.
    assert_eq!(
        alice.machine.outbound_session_id(room_id(ROOM)).unwrap(),
        session
    );

    laptop.sync(&mut server, vec![]);
    assert_eq!(
        body(&laptop.decrypt(ROOM, &new).unwrap()),
        "after the laptop"
    );
    let utd = laptop.decrypt(ROOM, &old).unwrap_err();
    assert_eq!(utd.cause, UtdCause::SentBeforeWeJoined);
    assert!(utd.cause.is_expected());
    assert_eq!(laptop.machine.utd_counts()["sent_before_we_joined"], 1);
}

#[test]
fn invitees_get_keys_only_where_history_visibility_lets_them_read() {
    for (visibility, invitee_reads) in [("joined", false), ("shared", true), ("invited", true)] {
        let mut server = FakeServer::default();
        let mut alice = Client::new(&mut server, ALICE, "ALICEDEV");
        let mut carol = Client::new(&mut server, CAROL, "CAROLDEV");
        let mut room = encrypted_room(&[ALICE]);
        room.history_visibility = Some(visibility.to_owned());
        room.members.push((user(CAROL), Membership::Invite));
        for client in [&mut alice, &mut carol] {
            client.sync(&mut server, vec![room.clone()]);
        }
        let event = alice.send(&mut server, ROOM, "welcome");
        carol.sync(&mut server, vec![]);
        assert_eq!(
            carol.decrypt(ROOM, &event).is_ok(),
            invitee_reads,
            "{visibility}"
        );
    }
}

#[test]
fn an_event_whose_key_arrives_later_is_decrypted_then() {
    let mut server = FakeServer::default();
    let (mut alice, mut bob, _) = alice_and_bob(&mut server);
    let event = alice.send(&mut server, ROOM, "early bird");

    // The timeline arrives before the to-device key.
    let utd = bob.decrypt(ROOM, &event).unwrap_err();
    assert_eq!(utd.cause, UtdCause::MissingRoomKey);
    assert!(!utd.cause.is_expected());
    assert_eq!(bob.machine.pending_utd_count(), 1);

    let output = bob.sync(&mut server, vec![]);
    assert_eq!(output.late_decryptions.len(), 1);
    assert_eq!(body(&output.late_decryptions[0]), "early bird");
    assert_eq!(bob.machine.pending_utd_count(), 0);
    // Counted once, though tried twice.
    assert_eq!(bob.machine.utd_counts()["missing_room_key"], 1);
}

#[test]
fn a_verified_own_device_forwards_a_missing_key_and_an_unverified_one_gets_none() {
    let mut server = FakeServer::default();
    let mut alice = Client::new(&mut server, ALICE, "ALICEDEV");
    let mut phone = Client::new(&mut server, BOB, "BOBPHONE");
    for client in [&mut alice, &mut phone] {
        client.sync(&mut server, vec![encrypted_room(&[ALICE, BOB])]);
    }
    let old = alice.send(&mut server, ROOM, "before the new devices");
    phone.sync(&mut server, vec![]);

    let mut laptop = Client::new(&mut server, BOB, "BOBLAPTOP");
    let mut tablet = Client::new(&mut server, BOB, "BOBTABLET");
    for device in [&mut laptop, &mut tablet] {
        device.sync(&mut server, vec![encrypted_room(&[ALICE, BOB])]);
    }
    phone.sync(&mut server, vec![]);
    // The phone talks to both new devices, so each has an Olm channel; only
    // the laptop is verified, both ways.
    phone.send(&mut server, ROOM, "hello new devices");
    assert!(phone.machine.set_device_trust(
        user_id(BOB),
        device_id("BOBLAPTOP"),
        LocalTrust::Verified
    ));
    laptop.sync(&mut server, vec![]);
    tablet.sync(&mut server, vec![]);
    assert!(laptop.machine.set_device_trust(
        user_id(BOB),
        device_id("BOBPHONE"),
        LocalTrust::Verified
    ));
    assert!(tablet.machine.set_device_trust(
        user_id(BOB),
        device_id("BOBPHONE"),
        LocalTrust::Verified
    ));

    for device in [&mut laptop, &mut tablet] {
        assert_eq!(
            device.decrypt(ROOM, &old).unwrap_err().cause,
            UtdCause::MissingRoomKey
        );
        device.send_outgoing(&mut server); // the m.room_key_request to "*"
    }
    phone.sync(&mut server, vec![]);

    let output = laptop.sync(&mut server, vec![]);
    assert_eq!(output.late_decryptions.len(), 1);
    let decrypted = &output.late_decryptions[0];
    assert_eq!(body(decrypted), "before the new devices");
    assert_eq!(decrypted.sender, ALICE);
    assert_eq!(
        decrypted
            .sender_device
            .as_deref()
            .map(ruma::DeviceId::as_str),
        Some("ALICEDEV")
    );
    assert!(decrypted.forwarded);
    assert_eq!(
        decrypted.verification,
        VerificationState::AuthenticityNotGuaranteed
    );

    let output = tablet.sync(&mut server, vec![]);
    assert!(output.late_decryptions.is_empty());
    assert_eq!(
        tablet.decrypt(ROOM, &old).unwrap_err().cause,
        UtdCause::MissingRoomKey
    );
}

#[test]
fn reload_from_the_store_keeps_every_session() {
    let mut server = FakeServer::default();
    let (mut alice, mut bob, _) = alice_and_bob(&mut server);
    let first = alice.send(&mut server, ROOM, "before reload");
    let session = alice.machine.outbound_session_id(room_id(ROOM)).unwrap();
    bob.sync(&mut server, vec![]);
    let reply = bob.send(&mut server, ROOM, "bob before reload");
    alice.sync(&mut server, vec![]);

    alice.reload();
    bob.reload();
    let keys_before = server
        .one_time_keys
        .values()
        .map(|k| k.len())
        .sum::<usize>();

    // Both sides still read the old messages.
    assert_eq!(body(&bob.decrypt(ROOM, &first).unwrap()), "before reload");
    assert_eq!(
        body(&alice.decrypt(ROOM, &reply).unwrap()),
        "bob before reload"
    );
    // Alice's outbound session survived: same session, next index.
    let second = alice.send(&mut server, ROOM, "after reload");
    // …and remembers whom it reached: nothing is shared again.
    assert!(inbox(&server, BOB, "BOBPHONE").is_empty());
    bob.sync(&mut server, vec![]);
    let decrypted = bob.decrypt(ROOM, &second).unwrap();
    assert_eq!(body(&decrypted), "after reload");
    assert_eq!(decrypted.message_index, 1);

    // Olm sessions survived too: a rotation after reload re-shares over the
    // existing sessions without claiming a single one-time key.
    alice.now_ms += 7 * 24 * 60 * 60 * 1000;
    let third = alice.send(&mut server, ROOM, "new session, old olm");
    assert_ne!(
        alice.machine.outbound_session_id(room_id(ROOM)),
        Some(session)
    );
    bob.sync(&mut server, vec![]);
    assert_eq!(
        body(&bob.decrypt(ROOM, &third).unwrap()),
        "new session, old olm"
    );
    let keys_after = server
        .one_time_keys
        .values()
        .map(|k| k.len())
        .sum::<usize>();
    assert_eq!(keys_before, keys_after);
}

#[test]
fn the_change_set_of_a_share_holds_every_olm_session_it_advanced() {
    let mut server = FakeServer::default();
    let (mut alice, _bob, _bob2) = alice_and_bob(&mut server);
    alice.share(&mut server, ROOM);
    // A rotation later, the new session goes out over the Olm sessions the
    // first share made: both advance, and both must be saved before the
    // request goes out, or a restart would reuse their ratchet steps.
    alice.now_ms += 7 * 24 * 60 * 60 * 1000;
    let requests = alice
        .machine
        .share_room_key(room_id(ROOM), alice.now_ms)
        .unwrap();
    assert_eq!(requests.len(), 1);
    let olm_records = |changes: super::Changes| {
        changes
            .records
            .into_iter()
            .filter(|(key, value)| key.starts_with("olm/") && value.is_some())
            .count()
    };
    assert_eq!(olm_records(alice.machine.take_changes()), 2);
    // Saved once: nothing advanced since.
    assert_eq!(olm_records(alice.machine.take_changes()), 0);
}

#[test]
fn a_failed_room_key_request_is_sent_again_at_the_next_share() {
    let mut server = FakeServer::default();
    let (mut alice, mut bob, _) = alice_and_bob(&mut server);
    // Alice's first attempt: the sendToDevice fails on the network.
    let mut lost = None;
    for _ in 0..5 {
        let requests = alice
            .machine
            .share_room_key(room_id(ROOM), alice.now_ms)
            .unwrap();
        if requests.is_empty() {
            break;
        }
        for request in requests {
            if matches!(request.request, Request::ToDevice { .. }) {
                alice
                    .machine
                    .mark_request_failed(&request.request_id)
                    .unwrap();
                lost = Some(request.request_id);
            } else {
                alice.answer(&mut server, &request);
            }
        }
    }
    let lost = lost.expect("a room key request was built");
    assert!(matches!(
        alice.machine.mark_request_failed(&lost),
        Err(MachineError::UnknownRequest(_))
    ));
    assert!(inbox(&server, BOB, "BOBPHONE").is_empty());

    let event = alice.send(&mut server, ROOM, "second try");
    bob.sync(&mut server, vec![]);
    assert_eq!(body(&bob.decrypt(ROOM, &event).unwrap()), "second try");
}

#[test]
fn rotation_after_the_configured_number_of_messages_and_time() {
    let mut server = FakeServer::default();
    let mut alice = Client::new(&mut server, ALICE, "ALICEDEV");
    let mut bob = Client::new(&mut server, BOB, "BOBPHONE");
    let mut room = encrypted_room(&[ALICE, BOB]);
    room.encryption = Some(json!({
        "algorithm": MEGOLM_ALGORITHM, "rotation_period_msgs": 2, "rotation_period_ms": 3_600_000
    }));
    for client in [&mut alice, &mut bob] {
        client.sync(&mut server, vec![room.clone()]);
    }
    alice.send(&mut server, ROOM, "1");
    let first = alice.machine.outbound_session_id(room_id(ROOM)).unwrap();
    alice.send(&mut server, ROOM, "2");
    assert_eq!(
        alice.machine.outbound_session_id(room_id(ROOM)).unwrap(),
        first
    );
    // Two messages used up: encrypting without sharing is refused…
    assert!(matches!(
        alice
            .machine
            .encrypt_room_event(room_id(ROOM), "m.room.message", &json!({}), alice.now_ms),
        Err(MachineError::RoomKeyNotShared(_))
    ));
    let third = alice.send(&mut server, ROOM, "3");
    let second = alice.machine.outbound_session_id(room_id(ROOM)).unwrap();
    assert_ne!(second, first);

    // An hour, the shortest period a room can set.
    alice.now_ms += 3_600_000;
    alice.send(&mut server, ROOM, "4");
    assert_ne!(
        alice.machine.outbound_session_id(room_id(ROOM)).unwrap(),
        second
    );

    bob.sync(&mut server, vec![]);
    assert_eq!(body(&bob.decrypt(ROOM, &third).unwrap()), "3");
}

#[test]
fn only_verified_devices_get_keys_and_the_rest_are_told_why() {
    let mut server = FakeServer::default();
    let (mut alice, mut bob, mut bob2) = alice_and_bob(&mut server);
    alice.machine.set_only_verified(room_id(ROOM), true);
    alice.sync(&mut server, vec![]);
    assert!(alice.machine.set_device_trust(
        user_id(BOB),
        device_id("BOBPHONE"),
        LocalTrust::Verified
    ));

    let event = alice.send(&mut server, ROOM, "for verified eyes");
    bob.sync(&mut server, vec![]);
    assert_eq!(
        body(&bob.decrypt(ROOM, &event).unwrap()),
        "for verified eyes"
    );

    // The notice travels inside Olm: only so can the laptop tell it is
    // Alice's and not the server's.
    let withheld = inbox(&server, BOB, "BOBLAPTOP");
    assert_eq!(withheld.len(), 1);
    assert_eq!(withheld[0]["type"], "m.room.encrypted");
    bob2.sync(&mut server, vec![]);
    let utd = bob2.decrypt(ROOM, &event).unwrap_err();
    assert_eq!(
        utd.cause,
        UtdCause::Withheld {
            code: "m.unverified".to_owned()
        }
    );
    assert!(utd.cause.is_expected());

    // Verifying the laptop later shares the same session with it.
    alice
        .machine
        .set_device_trust(user_id(BOB), device_id("BOBLAPTOP"), LocalTrust::Verified);
    let next = alice.send(&mut server, ROOM, "now you too");
    let output = bob2.sync(&mut server, vec![]);
    assert_eq!(body(&bob2.decrypt(ROOM, &next).unwrap()), "now you too");
    // The key it got starts after the first message: that one stays out of
    // reach, now for the expected reason.
    assert!(output.late_decryptions.is_empty());
    assert_eq!(
        bob2.decrypt(ROOM, &event).unwrap_err().cause,
        UtdCause::SentBeforeWeJoined
    );
}

#[test]
fn e2e_only_never_sends_plaintext_and_refuses_downgrades() {
    let mut server = FakeServer::default();
    let (mut alice, _, _) = alice_and_bob(&mut server);
    assert!(matches!(
        alice.machine.encrypt_room_event(
            room_id("!plain:example.org"),
            "m.room.message",
            &json!({}),
            0
        ),
        Err(MachineError::RoomNotEncrypted(_))
    ));
    assert!(matches!(
        alice
            .machine
            .share_room_key(room_id("!plain:example.org"), 0),
        Err(MachineError::RoomNotEncrypted(_))
    ));

    let downgrade = RoomUpdate {
        encryption: Some(json!({"algorithm": "m.none"})),
        ..RoomUpdate::new(room(ROOM))
    };
    let output = alice.sync(&mut server, vec![downgrade]);
    assert_eq!(
        output.warnings,
        vec![DeviceWarning::EncryptionChangeRefused {
            room_id: room(ROOM)
        }]
    );
    assert!(alice.machine.is_room_encrypted(room_id(ROOM)));
    alice.send(&mut server, ROOM, "still encrypted");
}

#[test]
fn a_wedged_olm_session_is_replaced_and_announced_with_a_dummy() {
    const WEEK_MS: u64 = 7 * 24 * 60 * 60 * 1000;
    let mut server = FakeServer::default();
    let (mut alice, mut bob, _) = alice_and_bob(&mut server);
    alice.send(&mut server, ROOM, "one");
    bob.sync(&mut server, vec![]);
    // Bob replies over the same Olm session, so Alice's side of it has
    // received and from now on sends normal (not pre-key) messages.
    bob.send(&mut server, ROOM, "two");
    alice.sync(&mut server, vec![]);

    // Bob loses his Olm sessions (say, restored from an old backup).
    bob.forget_olm_sessions();

    // A week later Alice rotates; her m.room_key reaches Bob on a session he
    // no longer has.
    alice.now_ms += WEEK_MS;
    let lost = alice.send(&mut server, ROOM, "lost");
    bob.sync(&mut server, vec![]);
    assert_eq!(
        bob.decrypt(ROOM, &lost).unwrap_err().cause,
        UtdCause::MissingRoomKey
    );

    // Bob claimed a fresh key of Alice's and sent an m.dummy on a new
    // (pre-key) session.
    let to_alice = inbox(&server, ALICE, "ALICEDEV");
    assert_eq!(to_alice.len(), 1);
    let ciphertext = to_alice[0]["content"]["ciphertext"].as_object().unwrap();
    assert_eq!(ciphertext.values().next().unwrap()["type"], 0);
    alice.sync(&mut server, vec![]);

    // Alice's next message to Bob uses the session Bob started: he reads it.
    alice.now_ms += WEEK_MS;
    let after = alice.send(&mut server, ROOM, "recovered");
    bob.sync(&mut server, vec![]);
    assert_eq!(body(&bob.decrypt(ROOM, &after).unwrap()), "recovered");
    // No further claims: the wedge is over.
    assert!(
        !bob.machine
            .outgoing_requests()
            .iter()
            .any(|r| matches!(r.request, Request::KeysClaim { .. }))
    );
}

/// The to-device events waiting for a device.
fn inbox(server: &FakeServer, user: &str, device: &str) -> Vec<Value> {
    server
        .inboxes
        .get(&(user.to_owned(), device.to_owned()))
        .cloned()
        .unwrap_or_default()
}

#[test]
fn rotation_settings_are_clamped_to_what_the_peers_accept() {
    let mut server = FakeServer::default();
    let mut alice = Client::new(&mut server, ALICE, "ALICEDEV");
    let mut bob = Client::new(&mut server, BOB, "BOBPHONE");
    // A member with power over state sets periods that would expire every
    // session at birth.
    let mut room = encrypted_room(&[ALICE, BOB]);
    room.encryption = Some(json!({
        "algorithm": MEGOLM_ALGORITHM, "rotation_period_msgs": 0, "rotation_period_ms": 0,
    }));
    for client in [&mut alice, &mut bob] {
        client.sync(&mut server, vec![room.clone()]);
    }
    let first = alice.send(&mut server, ROOM, "one message per session");
    let second = alice.send(&mut server, ROOM, "still sending");
    bob.sync(&mut server, vec![]);
    assert_eq!(
        body(&bob.decrypt(ROOM, &first).unwrap()),
        "one message per session"
    );
    assert_eq!(body(&bob.decrypt(ROOM, &second).unwrap()), "still sending");
    // At least one message, at most 10,000 per session; at least an hour.
    let settings = alice.machine.rooms[ROOM].encryption.unwrap();
    assert_eq!(settings.rotation_period_msgs, 1);
    assert_eq!(settings.rotation_period_ms, 60 * 60 * 1000);
    let mut huge = encrypted_room(&[ALICE, BOB]);
    huge.room_id = self::room("!huge:example.org");
    huge.encryption = Some(json!({
        "algorithm": MEGOLM_ALGORITHM, "rotation_period_msgs": 1_000_000u64,
        "rotation_period_ms": u64::MAX,
    }));
    alice.sync(&mut server, vec![huge]);
    let settings = alice.machine.rooms["!huge:example.org"].encryption.unwrap();
    assert_eq!(settings.rotation_period_msgs, 10_000);
}

#[test]
fn a_failing_keys_query_backs_off_and_sharing_proceeds_with_the_devices_known() {
    let mut server = FakeServer::default();
    let (mut alice, mut bob, _) = alice_and_bob(&mut server);
    // Bob's list changed, and his server fails every keys/query for now.
    alice.machine.receive_sync_changes(super::SyncChanges {
        changed_devices: vec![user(BOB)],
        now_ms: alice.now_ms,
        ..super::SyncChanges::default()
    });
    let mut queries = 0;
    let mut settled = false;
    for _ in 0..6 {
        let requests = alice
            .machine
            .share_room_key(room_id(ROOM), alice.now_ms)
            .unwrap();
        alice.save();
        if requests.is_empty() {
            settled = true;
            break;
        }
        for request in requests {
            if matches!(request.request, Request::KeysQuery { .. }) {
                queries += 1;
                alice
                    .machine
                    .mark_request_failed(&request.request_id)
                    .unwrap();
            } else {
                alice.answer(&mut server, &request);
            }
        }
        alice.save();
    }
    assert!(settled, "sharing waits for a query that keeps failing");
    assert_eq!(queries, 1, "the failing server is asked again at once");
    // The devices Alice knew get the key; the counters say it went out on
    // a list that may be stale.
    let content = alice
        .machine
        .encrypt_room_event(
            room_id(ROOM),
            "m.room.message",
            &json!({"msgtype": "m.text", "body": "despite the query"}),
            alice.now_ms,
        )
        .unwrap();
    let event = server.room_event(ROOM, ALICE, content);
    bob.sync(&mut server, vec![]);
    assert_eq!(
        body(&bob.decrypt(ROOM, &event).unwrap()),
        "despite the query"
    );
    assert_eq!(
        alice
            .machine
            .utd_counts()
            .get("shared_with_stale_device_lists"),
        Some(&1)
    );
    // Once the back-off is over, the list is asked for again.
    alice.now_ms += 60 * 60 * 1000;
    let requests = alice
        .machine
        .share_room_key(room_id(ROOM), alice.now_ms)
        .unwrap();
    assert!(
        requests
            .iter()
            .any(|r| matches!(r.request, Request::KeysQuery { .. })),
        "{requests:?}"
    );
}
