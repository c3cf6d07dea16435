//! History for newcomers (MSC4268): room key bundles between machines.

use myelin_crypto::attachment::{self, EncryptedFile};
use serde_json::{Value, json};

use super::{
    ALICE, BOB, CAROL, ROOM, encrypted_room, room_id,
    server::{Client, FakeServer, body},
    user_id,
};
use crate::machine::{
    BundleError, BundleShare, CryptoStore, Membership, RoomUpdate, UtdCause,
    history::BUNDLE_IMPORT_WINDOW_MS,
};

const OTHER_ROOM: &str = "!other:example.org";

/// The room as an invitee sees it: encrypted, and our invite from `inviter`.
fn invited(room_id: &str, member: &str, inviter: &str) -> RoomUpdate {
    RoomUpdate {
        room_id: super::room(room_id),
        members: vec![(super::user(member), Membership::Invite)],
        inviter: Some(super::user(inviter)),
        ..encrypted_room(&[inviter])
    }
}

/// The room after `user` joined, as a server's timeline shows it: the
/// invite (without its sender, which the invite's sync gave) and the join.
fn joined(room_id: &str, member: &str) -> RoomUpdate {
    RoomUpdate {
        members: vec![
            (super::user(member), Membership::Invite),
            (super::user(member), Membership::Join),
        ],
        ..RoomUpdate::new(super::room(room_id))
    }
}

impl Client {
    /// Builds `bundle_room`'s bundle and announces it to `user` as the
    /// history of `room_id`; returns the ciphertext the media repo holds.
    fn share_history(
        &mut self,
        server: &mut FakeServer,
        room_id: &str,
        bundle_room: &str,
        user: &str,
    ) -> Vec<u8> {
        let (ciphertext, keys) = self
            .machine
            .build_room_key_bundle(super::room_id(bundle_room))
            .unwrap();
        let file = EncryptedFile {
            url: "mxc://example.org/bundle".to_owned(),
            keys,
        };
        self.announce_bundle(server, room_id, user, &file);
        ciphertext
    }

    fn announce_bundle(
        &mut self,
        server: &mut FakeServer,
        room_id: &str,
        user: &str,
        file: &EncryptedFile,
    ) {
        for _ in 0..5 {
            let step = self
                .machine
                .share_room_key_bundle(super::room_id(room_id), user_id(user), file, self.now_ms)
                .unwrap();
            self.save();
            match step {
                BundleShare::Prepare(requests) => {
                    for request in requests {
                        self.answer(server, &request);
                    }
                    self.save();
                }
                BundleShare::Deliver(request) => {
                    self.answer(server, &request.expect("bob has a device"));
                    self.save();
                    return;
                }
            }
        }
        panic!("sharing the bundle did not settle");
    }
}

/// Alice alone in a shared-history room says `before`, then hands Bob the
/// history and invites him; Bob sees the invite.
fn alice_shares_history_with_bob(
    server: &mut FakeServer,
    before: &str,
) -> (Client, Client, Value, Vec<u8>) {
    let mut alice = Client::new(server, ALICE, "ALICEDEV");
    let mut bob = Client::new(server, BOB, "BOBPHONE");
    alice.sync(server, vec![encrypted_room(&[ALICE])]);
    let event = alice.send(server, ROOM, before);
    let ciphertext = alice.share_history(server, ROOM, ROOM, BOB);
    alice.sync(server, vec![invited(ROOM, BOB, ALICE)]);
    bob.sync(server, vec![invited(ROOM, BOB, ALICE)]);
    (alice, bob, event, ciphertext)
}

#[test]
fn an_invitee_reads_the_shared_history_marked_as_shared_by_the_inviter() {
    let mut server = FakeServer::default();
    let (_alice, mut bob, event, ciphertext) =
        alice_shares_history_with_bob(&mut server, "before bob");

    // The m.room_key carried the flag; the event is not Bob's yet.
    assert_eq!(
        bob.decrypt(ROOM, &event).unwrap_err().cause,
        UtdCause::MissingRoomKey
    );
    // Invited, not joined: nothing is downloaded yet.
    assert!(
        bob.machine
            .room_key_bundles_to_import(bob.now_ms)
            .is_empty()
    );

    bob.sync(&mut server, vec![joined(ROOM, BOB)]);
    let ready = bob.machine.room_key_bundles_to_import(bob.now_ms);
    assert_eq!(ready.len(), 1);
    assert_eq!(
        (ready[0].room_id.as_str(), ready[0].sender.as_str()),
        (ROOM, ALICE)
    );
    assert_eq!(ready[0].url, "mxc://example.org/bundle");

    let import = bob
        .machine
        .import_room_key_bundle(room_id(ROOM), user_id(ALICE), &ciphertext, bob.now_ms)
        .unwrap();
    bob.save();
    assert_eq!((import.imported, import.withheld), (1, 0));
    // The event kept from before decrypts at once, marked as shared history.
    assert_eq!(import.late_decryptions.len(), 1);
    let late = &import.late_decryptions[0];
    assert_eq!(body(late), "before bob");
    assert_eq!(late.sender, ALICE);
    assert!(late.forwarded);
    assert_eq!(
        late.shared_by.as_deref().map(ruma::UserId::as_str),
        Some(ALICE)
    );

    // Used up, and still there after a restart.
    assert!(
        bob.machine
            .room_key_bundles_to_import(bob.now_ms)
            .is_empty()
    );
    bob.reload();
    let again = bob.decrypt(ROOM, &event).unwrap();
    assert_eq!(
        again.shared_by.as_deref().map(ruma::UserId::as_str),
        Some(ALICE)
    );
    assert!(matches!(
        bob.machine
            .import_room_key_bundle(room_id(ROOM), user_id(ALICE), &ciphertext, bob.now_ms),
        Err(BundleError::NotPending { .. })
    ));
}

#[test]
fn sessions_from_a_period_without_shared_history_are_withheld_not_shared() {
    let mut server = FakeServer::default();
    let mut alice = Client::new(&mut server, ALICE, "ALICEDEV");
    let mut bob = Client::new(&mut server, BOB, "BOBPHONE");
    let mut members_only = encrypted_room(&[ALICE]);
    members_only.history_visibility = Some("joined".to_owned());
    alice.sync(&mut server, vec![members_only]);
    let private = alice.send(&mut server, ROOM, "members only");
    let private_session = alice
        .machine
        .outbound_session_id(super::room_id(ROOM))
        .unwrap();

    // The room opens its history: the next message needs a new session.
    alice.sync(
        &mut server,
        vec![RoomUpdate {
            history_visibility: Some("shared".to_owned()),
            ..RoomUpdate::new(super::room(ROOM))
        }],
    );
    let public = alice.send(&mut server, ROOM, "for everyone");
    assert_ne!(
        alice
            .machine
            .outbound_session_id(super::room_id(ROOM))
            .unwrap(),
        private_session
    );

    let contents = alice.machine.bundle_contents(room_id(ROOM));
    let ids = |section: &str| -> Vec<String> {
        contents[section]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["session_id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(ids("withheld"), std::slice::from_ref(&private_session));
    assert_eq!(
        contents["withheld"][0]["code"],
        "io.element.msc4268.history_not_shared"
    );
    assert_eq!(ids("room_keys").len(), 1);
    assert_ne!(ids("room_keys")[0], private_session);
    assert_eq!(
        contents["room_keys"][0]["org.matrix.msc3061.shared_history"],
        true
    );

    let ciphertext = alice.share_history(&mut server, ROOM, ROOM, BOB);
    bob.sync(&mut server, vec![invited(ROOM, BOB, ALICE)]);
    bob.sync(&mut server, vec![joined(ROOM, BOB)]);
    let import = bob
        .machine
        .import_room_key_bundle(room_id(ROOM), user_id(ALICE), &ciphertext, bob.now_ms)
        .unwrap();
    assert_eq!((import.imported, import.withheld), (1, 1));
    assert_eq!(body(&bob.decrypt(ROOM, &public).unwrap()), "for everyone");
    let utd = bob.decrypt(ROOM, &private).unwrap_err();
    assert_eq!(
        utd.cause,
        UtdCause::Withheld {
            code: "io.element.msc4268.history_not_shared".to_owned()
        }
    );
    assert!(utd.cause.is_expected());
}

#[test]
fn bundles_from_anyone_but_the_inviter_or_for_another_room_are_refused() {
    let mut server = FakeServer::default();
    let (mut alice, mut bob, event, _) = alice_shares_history_with_bob(&mut server, "secret");
    // Carol, a member of another of Alice's rooms with the same session
    // data in hand, and not Bob's inviter, sends Bob "history" for ROOM.
    let mut carol = Client::new(&mut server, CAROL, "CAROLDEV");
    carol.sync(&mut server, vec![encrypted_room(&[CAROL])]);
    carol.send(&mut server, ROOM, "carol's own");
    let from_carol = carol.share_history(&mut server, ROOM, ROOM, BOB);
    // Alice sends history of another room under the name of an invite Bob
    // never got, and another room's keys under ROOM's name.
    alice.sync(
        &mut server,
        vec![RoomUpdate {
            room_id: super::room(OTHER_ROOM),
            ..encrypted_room(&[ALICE])
        }],
    );
    let other = alice.send(&mut server, OTHER_ROOM, "elsewhere");
    alice.share_history(&mut server, OTHER_ROOM, OTHER_ROOM, BOB);
    let mislabelled = alice.share_history(&mut server, ROOM, OTHER_ROOM, BOB);
    // And the server injects a plaintext announcement in Alice's name.
    server
        .inboxes
        .entry((BOB.to_owned(), "BOBPHONE".to_owned()))
        .or_default()
        .push(json!({
            "type": "io.element.msc4268.room_key_bundle", "sender": ALICE,
            "content": {"room_id": OTHER_ROOM, "file": {"url": "mxc://evil/x"}},
        }));

    bob.sync(&mut server, vec![joined(ROOM, BOB)]);
    let ready = bob.machine.room_key_bundles_to_import(bob.now_ms);
    assert_eq!(ready.len(), 1, "only Alice's bundle for ROOM: {ready:?}");
    assert_eq!(ready[0].sender, ALICE);
    assert!(matches!(
        bob.machine
            .import_room_key_bundle(room_id(ROOM), user_id(CAROL), &from_carol, bob.now_ms),
        Err(BundleError::NotInvitedBySender)
    ));
    assert!(matches!(
        bob.machine
            .import_room_key_bundle(room_id(OTHER_ROOM), user_id(ALICE), &[], bob.now_ms),
        Err(BundleError::NotInvitedBySender)
    ));

    // The latest of Alice's announcements for ROOM is the mislabelled one:
    // its keys name another room and are skipped.
    let import = bob
        .machine
        .import_room_key_bundle(room_id(ROOM), user_id(ALICE), &mislabelled, bob.now_ms)
        .unwrap();
    assert_eq!((import.imported, import.skipped), (0, 1));
    assert!(import.late_decryptions.is_empty());
    assert_eq!(
        bob.decrypt(OTHER_ROOM, &other).unwrap_err().cause,
        UtdCause::MissingRoomKey
    );
    assert_eq!(
        bob.decrypt(ROOM, &event).unwrap_err().cause,
        UtdCause::MissingRoomKey
    );
}

#[test]
fn a_tampered_bundle_is_refused() {
    // The media repo serves other bytes than were uploaded.
    let mut server = FakeServer::default();
    let (_, mut bob, event, mut ciphertext) = alice_shares_history_with_bob(&mut server, "x");
    bob.sync(&mut server, vec![joined(ROOM, BOB)]);
    ciphertext[0] ^= 1;
    let error = bob
        .machine
        .import_room_key_bundle(room_id(ROOM), user_id(ALICE), &ciphertext, bob.now_ms)
        .unwrap_err();
    assert!(matches!(
        error,
        BundleError::File(attachment::AttachmentError::HashMismatch)
    ));
    assert!(bob.decrypt(ROOM, &event).is_err());
    // The bundle is used up: a tampered download is not retried forever.
    assert!(
        bob.machine
            .room_key_bundles_to_import(bob.now_ms)
            .is_empty()
    );

    // The announcement names another hash than the ciphertext has.
    let mut server = FakeServer::default();
    let mut alice = Client::new(&mut server, ALICE, "ALICEDEV");
    let mut bob = Client::new(&mut server, BOB, "BOBPHONE");
    alice.sync(&mut server, vec![encrypted_room(&[ALICE])]);
    alice.send(&mut server, ROOM, "y");
    let (ciphertext, keys) = alice.machine.build_room_key_bundle(room_id(ROOM)).unwrap();
    let mut file = EncryptedFile {
        url: "mxc://example.org/bundle".to_owned(),
        keys,
    }
    .to_json();
    file["hashes"]["sha256"] = json!("A".repeat(43));
    let file = EncryptedFile::from_json(&file).unwrap();
    alice.announce_bundle(&mut server, ROOM, BOB, &file);
    bob.sync(&mut server, vec![invited(ROOM, BOB, ALICE)]);
    bob.sync(&mut server, vec![joined(ROOM, BOB)]);
    assert!(matches!(
        bob.machine
            .import_room_key_bundle(room_id(ROOM), user_id(ALICE), &ciphertext, bob.now_ms),
        Err(BundleError::File(attachment::AttachmentError::HashMismatch))
    ));
}

#[test]
fn a_bundle_is_imported_only_soon_after_joining() {
    let mut server = FakeServer::default();
    let (_, mut bob, _, ciphertext) = alice_shares_history_with_bob(&mut server, "late");
    bob.sync(&mut server, vec![joined(ROOM, BOB)]);
    let later = bob.now_ms + BUNDLE_IMPORT_WINDOW_MS;
    assert!(bob.machine.room_key_bundles_to_import(later).is_empty());
    assert!(matches!(
        bob.machine
            .import_room_key_bundle(room_id(ROOM), user_id(ALICE), &ciphertext, later),
        Err(BundleError::NotInvitedBySender)
    ));
    // Leaving forgets it altogether.
    bob.sync(&mut server, vec![super::membership(BOB, Membership::Leave)]);
    assert!(matches!(
        bob.machine
            .import_room_key_bundle(room_id(ROOM), user_id(ALICE), &ciphertext, bob.now_ms),
        Err(BundleError::NotPending { .. })
    ));
}

#[test]
fn a_session_received_from_its_creator_is_extended_but_never_downgraded() {
    let mut server = FakeServer::default();
    let (mut alice, mut bob, before, ciphertext) =
        alice_shares_history_with_bob(&mut server, "before the invite");
    // Invitees read under "shared": Bob gets the current session from
    // Alice herself, from the next message on.
    let after = alice.send(&mut server, ROOM, "after the invite");
    bob.sync(&mut server, vec![]);
    let direct = bob.decrypt(ROOM, &after).unwrap();
    assert!(!direct.forwarded);
    // The m.room_key carried Alice's shared_history flag: Bob may pass the
    // session on to whoever he invites.
    let bobs_bundle = bob.machine.bundle_contents(room_id(ROOM));
    assert_eq!(bobs_bundle["room_keys"].as_array().unwrap().len(), 1);
    let utd = bob.decrypt(ROOM, &before).unwrap_err();
    assert_eq!(utd.cause, UtdCause::SentBeforeWeJoined);
    assert!(utd.cause.is_expected());

    bob.sync(&mut server, vec![joined(ROOM, BOB)]);
    let import = bob
        .machine
        .import_room_key_bundle(room_id(ROOM), user_id(ALICE), &ciphertext, bob.now_ms)
        .unwrap();
    assert_eq!(import.imported, 1);
    // The bundle's copy is the same ratchet from an earlier index: the
    // session reaches back, and stays Alice's own, not "shared by".
    let late = &import.late_decryptions;
    assert_eq!(late.len(), 1);
    assert_eq!(body(&late[0]), "before the invite");
    assert!(!late[0].forwarded);
    assert_eq!(late[0].shared_by, None);
    let after = bob.decrypt(ROOM, &after).unwrap();
    assert!(!after.forwarded);
    assert_eq!(after.shared_by, None);

    // A second bundle has nothing better: the session is left as it is.
    let again = alice.share_history(&mut server, ROOM, ROOM, BOB);
    bob.sync(&mut server, vec![]);
    let import = bob
        .machine
        .import_room_key_bundle(room_id(ROOM), user_id(ALICE), &again, bob.now_ms)
        .unwrap();
    assert_eq!((import.imported, import.skipped), (0, 1));
    assert!(!bob.decrypt(ROOM, &before).unwrap().forwarded);
}

#[test]
fn a_key_from_its_creator_upgrades_a_session_a_bundle_gave() {
    let mut server = FakeServer::default();
    let (mut alice, mut bob, before, ciphertext) =
        alice_shares_history_with_bob(&mut server, "before the join");
    bob.sync(&mut server, vec![joined(ROOM, BOB)]);
    bob.machine
        .import_room_key_bundle(room_id(ROOM), user_id(ALICE), &ciphertext, bob.now_ms)
        .unwrap();
    assert_eq!(
        bob.decrypt(ROOM, &before).unwrap().shared_by,
        Some(super::user(ALICE))
    );

    // Alice, seeing Bob joined, shares the same session with him herself.
    alice.sync(&mut server, vec![joined(ROOM, BOB)]);
    let after = alice.send(&mut server, ROOM, "after the join");
    bob.sync(&mut server, vec![]);
    // The same ratchet from Alice's own Olm session: the whole session is
    // now hers, the history included.
    for event in [&after, &before] {
        let decrypted = bob.decrypt(ROOM, event).unwrap();
        assert!(!decrypted.forwarded);
        assert_eq!(decrypted.shared_by, None);
    }
}

#[test]
fn a_forged_copy_of_a_known_session_is_ignored() {
    use ruma::serde::{Base64, base64::Standard};

    let mut server = FakeServer::default();
    let (mut alice, mut bob, before, _) = alice_shares_history_with_bob(&mut server, "real");
    let after = alice.send(&mut server, ROOM, "also real");
    bob.sync(&mut server, vec![]);
    assert!(bob.decrypt(ROOM, &after).is_ok());

    // Alice (or whoever holds the bundle's key) hands Bob a copy of the
    // session under its real id but with another ratchet, from index 0.
    let mut contents = alice.machine.bundle_contents(room_id(ROOM));
    let key = contents["room_keys"][0]["session_key"].as_str().unwrap();
    let mut bytes = Base64::<Standard, Vec<u8>>::parse(key)
        .unwrap()
        .into_inner();
    bytes[10] ^= 0xff; // inside the ratchet, after version and index
    contents["room_keys"][0]["session_key"] = json!(Base64::<Standard, _>::new(bytes).encode());
    let (ciphertext, keys) = attachment::encrypt(&serde_json::to_vec(&contents).unwrap()).unwrap();
    let file = EncryptedFile {
        url: "mxc://example.org/forged".to_owned(),
        keys,
    };
    alice.announce_bundle(&mut server, ROOM, BOB, &file);
    bob.sync(&mut server, vec![joined(ROOM, BOB)]);
    let import = bob
        .machine
        .import_room_key_bundle(room_id(ROOM), user_id(ALICE), &ciphertext, bob.now_ms)
        .unwrap();
    assert_eq!((import.imported, import.skipped), (0, 1));
    // Bob's session is untouched: what it decrypted still does, and the
    // forged past stays out of reach.
    assert_eq!(body(&bob.decrypt(ROOM, &after).unwrap()), "also real");
    assert_eq!(
        bob.decrypt(ROOM, &before).unwrap_err().cause,
        UtdCause::SentBeforeWeJoined
    );
}

#[test]
fn shared_history_does_not_show_as_verified() {
    let mut server = FakeServer::default();
    let (_alice, mut bob, event, ciphertext) =
        alice_shares_history_with_bob(&mut server, "old history");
    bob.sync(&mut server, vec![joined(ROOM, BOB)]);
    assert!(bob.machine.set_device_trust(
        super::user_id(ALICE),
        super::device_id("ALICEDEV"),
        crate::machine::LocalTrust::Verified
    ));
    bob.machine
        .import_room_key_bundle(room_id(ROOM), user_id(ALICE), &ciphertext, bob.now_ms)
        .unwrap();
    let decrypted = bob.decrypt(ROOM, &event).unwrap();
    assert_eq!(body(&decrypted), "old history");
    assert_eq!(
        decrypted.verification,
        crate::machine::VerificationState::AuthenticityNotGuaranteed
    );
}

#[test]
fn a_bundle_keeps_the_shared_history_flag_its_entries_carry() {
    let mut server = FakeServer::default();
    let mut alice = Client::new(&mut server, ALICE, "ALICEDEV");
    let mut bob = Client::new(&mut server, BOB, "BOBPHONE");
    alice.sync(&mut server, vec![encrypted_room(&[ALICE])]);
    alice.send(&mut server, ROOM, "not for re-sharing");
    // A bundle (from another client, say) whose entry does not say the
    // session's creator agreed to share it on.
    let mut contents = alice.machine.bundle_contents(room_id(ROOM));
    contents["room_keys"][0]
        .as_object_mut()
        .unwrap()
        .remove(crate::machine::history::SHARED_HISTORY_FIELD);
    let (ciphertext, keys) = attachment::encrypt(&serde_json::to_vec(&contents).unwrap()).unwrap();
    let file = EncryptedFile {
        url: "mxc://example.org/bundle".to_owned(),
        keys,
    };
    alice.announce_bundle(&mut server, ROOM, BOB, &file);
    alice.sync(&mut server, vec![invited(ROOM, BOB, ALICE)]);
    bob.sync(&mut server, vec![invited(ROOM, BOB, ALICE)]);
    bob.sync(&mut server, vec![joined(ROOM, BOB)]);
    let import = bob
        .machine
        .import_room_key_bundle(room_id(ROOM), user_id(ALICE), &ciphertext, bob.now_ms)
        .unwrap();
    assert_eq!(import.imported, 1);
    // Bob may read it, but never hands it on to the next newcomer.
    let onward = bob.machine.bundle_contents(room_id(ROOM));
    assert_eq!(onward["room_keys"].as_array().unwrap().len(), 0, "{onward}");
    assert_eq!(onward["withheld"].as_array().unwrap().len(), 1);
}

#[test]
fn bundles_whose_ids_carry_a_slash_do_not_share_a_record() {
    let mut server = FakeServer::default();
    let mut bob = Client::new(&mut server, BOB, "BOBPHONE");
    let file = EncryptedFile {
        url: "mxc://example.org/bundle".to_owned(),
        keys: attachment::encrypt(b"{}").unwrap().1,
    }
    .to_json();
    // Announcements (the server writes a to-device `sender`) whose ids
    // carry `/`: a historical user id may hold `/` and `@` in its
    // localpart, a room id's opaque part `/`. A room id that is not one
    // (the Olm payload's word) is refused.
    for (room_id, sender) in [
        ("!ro/om:example.org", ALICE),
        ("!room:example.org", "@m/@alice:example.org"),
        ("room:example.org", ALICE),
    ] {
        let olm = crate::machine::olm::DecryptedOlm {
            sender: super::user(sender),
            sender_key: bob.machine.identity_keys().curve25519.to_base64(),
            claimed_ed25519: bob.machine.identity_keys().ed25519.to_base64(),
            sender_device_keys: None,
            event_type: crate::machine::history::ROOM_KEY_BUNDLE_EVENT.to_owned(),
            content: json!({"room_id": room_id, "file": file}),
            payload: json!({}),
        };
        bob.machine.receive_room_key_bundle(&olm, bob.now_ms);
    }
    bob.save();
    bob.reload();
    assert_eq!(bob.machine.bundles.len(), 2);

    // A record saved under the older `bundle/{room}/{sender}` key moves to
    // its own key at load.
    let records = bob.store.load_all().unwrap();
    let (new_key, value) = records
        .iter()
        .find(|(key, _)| key.starts_with("bundle/") && key.contains(&format!("\"{ALICE}\"")))
        .map(|(key, value)| (key.clone(), value.clone()))
        .unwrap();
    let old_key = format!("bundle/!ro/om:example.org/{ALICE}");
    let mut moved = crate::machine::Changes::default();
    moved.records.insert(new_key.clone(), None);
    moved.records.insert(old_key.clone(), Some(value));
    bob.store.save(moved).unwrap();
    bob.reload();
    assert_eq!(bob.machine.bundles.len(), 2);
    let migration = bob.machine.take_changes();
    assert_eq!(migration.records.get(&old_key), Some(&None));
    assert!(matches!(migration.records.get(&new_key), Some(Some(_))));
}

#[test]
fn a_bundle_record_written_with_string_ids_still_loads() {
    let mut server = FakeServer::default();
    let mut bob = Client::new(&mut server, BOB, "BOBPHONE");
    let file = EncryptedFile {
        url: "mxc://example.org/bundle".to_owned(),
        keys: attachment::encrypt(b"{}").unwrap().1,
    }
    .to_json();
    // The record as the machine wrote it when it kept ids as strings (and
    // before it counted attempts), and one whose room id was never valid.
    let record = |room_id: &str| {
        serde_json::to_vec(&json!({
            "room_id": room_id,
            "sender": ALICE,
            "sender_key": "curve",
            "claimed_ed25519": "ed",
            "file": file,
            "received_ms": 1_000,
        }))
        .unwrap()
    };
    let valid = format!("bundle/{}", json!([ROOM, ALICE]));
    let invalid = format!("bundle/{}", json!(["not a room", ALICE]));
    let mut old = crate::machine::Changes::default();
    old.records.insert(valid.clone(), Some(record(ROOM)));
    old.records
        .insert(invalid.clone(), Some(record("not a room")));
    bob.store.save(old).unwrap();
    bob.reload();
    let key = (room_id(ROOM).to_owned(), user_id(ALICE).to_owned());
    assert_eq!(
        bob.machine.bundles.get(&key).map(|b| b.file.clone()),
        Some(file)
    );
    assert_eq!(bob.machine.bundles.len(), 1);
    let changes = bob.machine.take_changes();
    assert_eq!(changes.records.get(&invalid), Some(&None), "dropped");
    assert!(!changes.records.contains_key(&valid), "kept as it was");
}
