//! Cross-signing between machines: bootstrap, verifying a user, what that
//! makes verified, and what a lying server cannot make verified.

use myelin_crypto::{cross_signing::CrossSigningKey, olm::Ed25519PublicKey, verify_json_signature};
use serde_json::{Value, json};

use super::{
    ALICE, BOB, CAROL, DeviceWarning, LocalTrust, MachineError, ROOM, VerificationState,
    alice_and_bob, body, encrypted_room,
    server::{Client, FakeServer},
};
use crate::machine::{CrossSigningError, CryptoStore, Request, UtdCause};

/// Bootstraps cross-signing on `client`'s device and sends what follows
/// (the device's own signature).
pub(super) fn bootstrap(client: &mut Client, server: &mut FakeServer) {
    let request = client.machine.bootstrap_cross_signing();
    assert!(matches!(request.request, Request::SigningKeysUpload { .. }));
    client.answer(server, &request);
    client.save();
    client.send_outgoing(server);
}

/// `verifier` verifies `user` (whose keys it has queried) and the server
/// takes the signature.
pub(super) fn verify(client: &mut Client, server: &mut FakeServer, user: &str) {
    let request = client.machine.verify_user(super::user_id(user)).unwrap();
    assert!(matches!(request.request, Request::SignaturesUpload { .. }));
    client.answer(server, &request);
    client.save();
}

fn public_key(object: &Value) -> (String, Ed25519PublicKey) {
    let (id, key) = object["keys"].as_object().unwrap().iter().next().unwrap();
    (
        id.clone(),
        Ed25519PublicKey::from_base64(key.as_str().unwrap()).unwrap(),
    )
}

/// Alice, Bob's phone and laptop in a room; Alice and Bob (from his phone)
/// have bootstrapped, everyone has synced.
pub(super) fn cross_signed_alice_and_bob(server: &mut FakeServer) -> (Client, Client, Client) {
    let (mut alice, mut bob, mut bob2) = alice_and_bob(server);
    bootstrap(&mut alice, server);
    bootstrap(&mut bob, server);
    for client in [&mut alice, &mut bob, &mut bob2] {
        client.sync(server, vec![]);
    }
    (alice, bob, bob2)
}

/// [`cross_signed_alice_and_bob`], then Alice verifies Bob.
pub(super) fn alice_verified_bob(server: &mut FakeServer) -> (Client, Client, Client) {
    let (mut alice, bob, bob2) = cross_signed_alice_and_bob(server);
    verify(&mut alice, server, BOB);
    (alice, bob, bob2)
}

#[test]
fn bootstrap_uploads_keys_that_chain_to_the_master_key() {
    let mut server = FakeServer::default();
    let mut alice = Client::new(&mut server, ALICE, "ALICEDEV");
    assert!(!alice.machine.has_cross_signing_keys());
    bootstrap(&mut alice, &mut server);
    assert!(alice.machine.has_cross_signing_keys());

    let keys = &server.cross_signing[ALICE];
    let (master_id, master) = public_key(&keys["master_key"]);
    assert_eq!(keys["master_key"]["usage"], json!(["master"]));
    for (name, usage) in [
        ("self_signing_key", "self_signing"),
        ("user_signing_key", "user_signing"),
    ] {
        let object = keys[name].as_object().unwrap();
        assert_eq!(object["usage"], json!([usage]));
        assert_eq!(object["user_id"], ALICE);
        verify_json_signature(&master, ALICE, &master_id, object).unwrap();
    }
    // This device is signed by the self-signing key.
    let (ssk_id, ssk) = public_key(&keys["self_signing_key"]);
    let device = server.device_keys[ALICE]["ALICEDEV"].as_object().unwrap();
    verify_json_signature(&ssk, ALICE, &ssk_id, device).unwrap();
    // … and still by itself.
    let own = alice.machine.identity_keys().ed25519;
    verify_json_signature(&own, ALICE, "ed25519:ALICEDEV", device).unwrap();

    let identity = alice.machine.user_identity(super::user_id(ALICE)).unwrap();
    assert!(identity.is_verified);
    assert_eq!(format!("ed25519:{}", identity.master_key), master_id);
    // Nothing is sent twice.
    alice.sync(&mut server, vec![]);
    assert!(alice.machine.outgoing_requests().is_empty());
}

#[test]
fn a_verified_users_cross_signed_devices_are_verified_and_others_are_not() {
    let mut server = FakeServer::default();
    let (mut alice, mut bob, mut bob2) = cross_signed_alice_and_bob(&mut server);
    let identity = alice.machine.user_identity(super::user_id(BOB)).unwrap();
    assert!(!identity.is_verified && !identity.has_changed);
    assert!(
        !alice
            .machine
            .is_device_verified(super::user_id(BOB), super::device_id("BOBPHONE"))
    );

    let before = bob.send(&mut server, ROOM, "before");
    alice.sync(&mut server, vec![]);
    let decrypted = alice.decrypt(ROOM, &before).unwrap();
    assert_eq!(decrypted.verification, VerificationState::Unverified);

    verify(&mut alice, &mut server, BOB);
    assert!(
        alice
            .machine
            .user_identity(super::user_id(BOB))
            .unwrap()
            .is_verified
    );
    assert!(
        alice
            .machine
            .is_device_verified(super::user_id(BOB), super::device_id("BOBPHONE"))
    );
    // Bob signed his phone only.
    assert!(
        !alice
            .machine
            .is_device_verified(super::user_id(BOB), super::device_id("BOBLAPTOP"))
    );
    let decrypted = alice.decrypt(ROOM, &before).unwrap();
    assert_eq!(decrypted.verification, VerificationState::Verified);

    // The server's copy (with Alice's signature merged) keeps it verified.
    alice.sync(&mut server, vec![]);
    assert!(
        alice
            .machine
            .is_device_verified(super::user_id(BOB), super::device_id("BOBPHONE"))
    );

    // "Only verified devices": the laptop is left out with m.unverified.
    alice.machine.set_only_verified(super::room_id(ROOM), true);
    let sent = alice.send(&mut server, ROOM, "verified eyes only");
    bob.sync(&mut server, vec![]);
    assert!(bob.decrypt(ROOM, &sent).is_ok());
    bob2.sync(&mut server, vec![]);
    assert_eq!(
        bob2.decrypt(ROOM, &sent).unwrap_err().cause,
        UtdCause::Withheld {
            code: "m.unverified".to_owned()
        }
    );

    // A blacklisted device stays blacklisted, cross-signed or not.
    alice.machine.set_device_trust(
        super::user_id(BOB),
        super::device_id("BOBPHONE"),
        LocalTrust::Blacklisted,
    );
    assert!(
        !alice
            .machine
            .is_device_verified(super::user_id(BOB), super::device_id("BOBPHONE"))
    );
    let decrypted = alice.decrypt(ROOM, &before).unwrap();
    assert_eq!(decrypted.verification, VerificationState::Blacklisted);
}

#[test]
fn our_own_devices_are_verified_once_our_self_signing_key_signs_them() {
    let mut server = FakeServer::default();
    let (mut alice, mut bob, bob2) = cross_signed_alice_and_bob(&mut server);
    // Bob's phone trusts his identity (it made it) and so his signed
    // devices; the laptop, unsigned, is not verified even for him.
    assert!(
        bob.machine
            .user_identity(super::user_id(BOB))
            .unwrap()
            .is_verified
    );
    assert!(
        !bob.machine
            .is_device_verified(super::user_id(BOB), super::device_id("BOBLAPTOP"))
    );
    // Alice's device is signed by her SSK, but Bob has not verified her.
    assert!(
        !bob.machine
            .is_device_verified(super::user_id(ALICE), super::device_id("ALICEDEV"))
    );
    // The laptop never made the keys: it does not trust Bob's identity.
    assert!(
        !bob2
            .machine
            .user_identity(super::user_id(BOB))
            .unwrap()
            .is_verified
    );
    let message = alice.send(&mut server, ROOM, "hi");
    bob.sync(&mut server, vec![]);
    assert_eq!(
        bob.decrypt(ROOM, &message).unwrap().verification,
        VerificationState::Unverified
    );
    verify(&mut bob, &mut server, ALICE);
    assert_eq!(
        bob.decrypt(ROOM, &message).unwrap().verification,
        VerificationState::Verified
    );
}

#[test]
fn a_self_signing_key_not_signed_by_the_master_key_is_refused() {
    let mut server = FakeServer::default();
    let (mut alice, _bob, _bob2) = alice_verified_bob(&mut server);
    assert!(
        alice
            .machine
            .is_device_verified(super::user_id(BOB), super::device_id("BOBPHONE"))
    );

    // The server swaps in its own self-signing key, signs Bob's phone with
    // it, and signs that key with a key of its own, not Bob's master key.
    let impostor_master = CrossSigningKey::generate();
    let impostor_ssk = CrossSigningKey::generate();
    let mut ssk = json!({
        "user_id": BOB, "usage": ["self_signing"],
        "keys": { impostor_ssk.key_id(): impostor_ssk.public_key().to_base64() },
    });
    impostor_master
        .sign_json(BOB, ssk.as_object_mut().unwrap())
        .unwrap();
    server
        .cross_signing
        .get_mut(BOB)
        .unwrap()
        .insert("self_signing_key".to_owned(), ssk);
    let phone = server
        .device_keys
        .get_mut(BOB)
        .unwrap()
        .get_mut("BOBPHONE")
        .unwrap();
    phone["signatures"][BOB]
        .as_object_mut()
        .unwrap()
        .retain(|id, _| id == "ed25519:BOBPHONE");
    impostor_ssk
        .sign_json(BOB, phone.as_object_mut().unwrap())
        .unwrap();
    server.notify_change(BOB);

    let output = alice.sync(&mut server, vec![]);
    assert!(
        output
            .warnings
            .contains(&DeviceWarning::InvalidCrossSigningKeys {
                user_id: super::user(BOB)
            }),
        "{:?}",
        output.warnings
    );
    assert_eq!(
        alice
            .machine
            .user_identity(super::user_id(BOB))
            .unwrap()
            .self_signing_key,
        None
    );
    assert!(
        !alice
            .machine
            .is_device_verified(super::user_id(BOB), super::device_id("BOBPHONE"))
    );
}

#[test]
fn a_device_signature_by_another_key_under_the_self_signing_key_id_is_refused() {
    let mut server = FakeServer::default();
    let (mut alice, _bob, _bob2) = alice_verified_bob(&mut server);
    // The server makes the laptop look cross-signed: a signature under the
    // id of Bob's self-signing key, made with another key.
    let (ssk_id, _) = public_key(&server.cross_signing[BOB]["self_signing_key"]);
    let forger = CrossSigningKey::generate();
    let laptop = server
        .device_keys
        .get_mut(BOB)
        .unwrap()
        .get_mut("BOBLAPTOP")
        .unwrap();
    forger
        .sign_json(BOB, laptop.as_object_mut().unwrap())
        .unwrap();
    let forged = laptop["signatures"][BOB][forger.key_id()].clone();
    laptop["signatures"][BOB][&ssk_id] = forged;
    server.notify_change(BOB);
    alice.sync(&mut server, vec![]);
    assert!(
        alice
            .machine
            .is_device_verified(super::user_id(BOB), super::device_id("BOBPHONE"))
    );
    assert!(
        !alice
            .machine
            .is_device_verified(super::user_id(BOB), super::device_id("BOBLAPTOP"))
    );
    let laptop = alice
        .machine
        .devices(super::user_id(BOB))
        .into_iter()
        .find(|d| d.device_id == "BOBLAPTOP")
        .unwrap();
    assert_eq!(laptop.self_signing_key, None);
}

#[test]
fn a_changed_master_key_is_not_trusted_until_acknowledged_and_verified_again() {
    let mut server = FakeServer::default();
    let (mut alice, _bob, mut bob2) = alice_verified_bob(&mut server);
    let old_master = alice
        .machine
        .user_identity(super::user_id(BOB))
        .unwrap()
        .master_key;

    // New keys for Bob, made on his laptop (a reset, or the server's own
    // keys: Alice cannot tell which).
    bootstrap(&mut bob2, &mut server);
    let output = alice.sync(&mut server, vec![]);
    let changed = DeviceWarning::IdentityChanged {
        user_id: super::user(BOB),
    };
    assert!(output.warnings.contains(&changed), "{:?}", output.warnings);
    let identity = alice.machine.user_identity(super::user_id(BOB)).unwrap();
    assert!(identity.has_changed && !identity.is_verified);
    assert_ne!(identity.master_key, old_master);
    // The laptop is signed by the new self-signing key; neither device is
    // verified now.
    assert!(
        !alice
            .machine
            .is_device_verified(super::user_id(BOB), super::device_id("BOBLAPTOP"))
    );
    assert!(
        !alice
            .machine
            .is_device_verified(super::user_id(BOB), super::device_id("BOBPHONE"))
    );
    assert!(matches!(
        alice.machine.verify_user(super::user_id(BOB)),
        Err(MachineError::CrossSigning(CrossSigningError::IdentityChanged(user))) if user == BOB
    ));
    // The warning is raised once per change, not at every query.
    server.notify_change(BOB);
    assert!(!alice.sync(&mut server, vec![]).warnings.contains(&changed));

    assert!(alice.machine.pin_identity(super::user_id(BOB)));
    let identity = alice.machine.user_identity(super::user_id(BOB)).unwrap();
    assert!(!identity.has_changed && !identity.is_verified);
    verify(&mut alice, &mut server, BOB);
    assert!(
        alice
            .machine
            .is_device_verified(super::user_id(BOB), super::device_id("BOBLAPTOP"))
    );
    assert!(
        !alice
            .machine
            .is_device_verified(super::user_id(BOB), super::device_id("BOBPHONE"))
    );
}

#[test]
fn keys_and_trust_survive_a_reload() {
    let mut server = FakeServer::default();
    let (mut alice, _bob, _bob2) = alice_verified_bob(&mut server);
    alice.reload();
    assert!(alice.machine.has_cross_signing_keys());
    assert!(
        alice
            .machine
            .user_identity(super::user_id(ALICE))
            .unwrap()
            .is_verified
    );
    assert!(
        alice
            .machine
            .is_device_verified(super::user_id(BOB), super::device_id("BOBPHONE"))
    );
    let stored =
        String::from_utf8(alice.store.load_all().unwrap()["cross_signing"].clone()).unwrap();
    for secret_free in ["master", "self_signing", "user_signing"] {
        let record: Value = serde_json::from_str(&stored).unwrap();
        let pickle = record["active"][secret_free].as_str().unwrap();
        assert!(
            pickle.len() > 43,
            "{secret_free} is sealed, not a bare seed"
        );
    }

    // The reloaded user-signing key still signs: Carol joins and is verified.
    let mut carol = Client::new(&mut server, CAROL, "CAROLDEV");
    bootstrap(&mut carol, &mut server);
    for client in [&mut alice, &mut carol] {
        client.sync(&mut server, vec![encrypted_room(&[ALICE, BOB, CAROL])]);
    }
    verify(&mut alice, &mut server, CAROL);
    assert!(
        alice
            .machine
            .is_device_verified(super::user_id(CAROL), super::device_id("CAROLDEV"))
    );
    let message = carol.send(&mut server, ROOM, "hello");
    alice.sync(&mut server, vec![]);
    let decrypted = alice.decrypt(ROOM, &message);
    assert_eq!(body(decrypted.as_ref().unwrap()), "hello");
}

#[test]
fn a_refused_reset_keeps_the_keys_in_force() {
    let mut server = FakeServer::default();
    let (mut alice, _bob, _bob2) = alice_verified_bob(&mut server);
    let master = alice
        .machine
        .user_identity(super::user_id(ALICE))
        .unwrap()
        .master_key;
    let reset = alice.machine.bootstrap_cross_signing();
    alice
        .machine
        .mark_request_failed(&reset.request_id)
        .unwrap();
    alice.save();
    alice.reload();
    let identity = alice.machine.user_identity(super::user_id(ALICE)).unwrap();
    assert_eq!(identity.master_key, master);
    assert!(identity.is_verified);
    assert!(
        alice
            .machine
            .is_device_verified(super::user_id(BOB), super::device_id("BOBPHONE"))
    );
}

#[test]
fn verifying_needs_our_keys_and_their_identity() {
    let mut server = FakeServer::default();
    let (mut alice, _bob, _bob2) = alice_and_bob(&mut server);
    let not_set_up = alice.machine.verify_user(super::user_id(BOB));
    assert!(matches!(
        not_set_up,
        Err(MachineError::CrossSigning(CrossSigningError::NotSetUp))
    ));
    bootstrap(&mut alice, &mut server);
    assert!(matches!(
        alice.machine.verify_user(super::user_id(BOB)),
        Err(MachineError::CrossSigning(CrossSigningError::UnknownIdentity(user))) if user == BOB
    ));
    assert!(matches!(
        alice.machine.verify_user(super::user_id(ALICE)),
        Err(MachineError::CrossSigning(CrossSigningError::OwnUser))
    ));
}

#[test]
fn an_answer_for_replaced_pending_keys_does_not_install_them() {
    let mut server = FakeServer::default();
    let mut alice = Client::new(&mut server, ALICE, "ALICEDEV");
    let first = alice.machine.bootstrap_cross_signing();
    let second = alice.machine.bootstrap_cross_signing();
    let answer = server.handle(ALICE, "ALICEDEV", &first);
    assert!(matches!(
        alice.machine.mark_request_sent(&first.request_id, &answer),
        Err(MachineError::MalformedResponse { .. })
    ));
    assert!(!alice.machine.has_cross_signing_keys());
    alice.answer(&mut server, &second);
    let Request::SigningKeysUpload { body } = &second.request else {
        unreachable!()
    };
    assert_eq!(
        format!(
            "ed25519:{}",
            alice
                .machine
                .user_identity(super::user_id(ALICE))
                .unwrap()
                .master_key
        ),
        public_key(&body["master_key"]).0
    );
}

#[test]
fn an_own_device_we_sign_is_verified_for_us_and_for_who_verified_us() {
    let mut server = FakeServer::default();
    let (mut alice, mut bob, _bob2) = alice_verified_bob(&mut server);
    assert!(
        !alice
            .machine
            .is_device_verified(super::user_id(BOB), super::device_id("BOBLAPTOP"))
    );
    assert!(matches!(
        bob.machine
            .verify_own_device(super::device_id("NOSUCHDEVICE")),
        Err(MachineError::CrossSigning(
            CrossSigningError::UnknownDevice(_)
        ))
    ));

    // Bob, on his phone, vouches for his laptop.
    let request = bob
        .machine
        .verify_own_device(super::device_id("BOBLAPTOP"))
        .unwrap();
    bob.answer(&mut server, &request);
    bob.save();
    assert!(
        bob.machine
            .is_device_verified(super::user_id(BOB), super::device_id("BOBLAPTOP"))
    );
    let (ssk_id, ssk) = public_key(&server.cross_signing[BOB]["self_signing_key"]);
    let laptop = server.device_keys[BOB]["BOBLAPTOP"].as_object().unwrap();
    verify_json_signature(&ssk, BOB, &ssk_id, laptop).unwrap();

    alice.sync(&mut server, vec![]);
    assert!(
        alice
            .machine
            .is_device_verified(super::user_id(BOB), super::device_id("BOBLAPTOP"))
    );
    // Carol, who never verified Bob, sees the signature but not a verified device.
    let mut carol = Client::new(&mut server, CAROL, "CAROLDEV");
    carol.sync(&mut server, vec![encrypted_room(&[ALICE, BOB, CAROL])]);
    let laptop = carol
        .machine
        .devices(super::user_id(BOB))
        .into_iter()
        .find(|d| d.device_id == "BOBLAPTOP")
        .unwrap();
    assert!(laptop.self_signing_key.is_some());
    assert!(
        !carol
            .machine
            .is_device_verified(super::user_id(BOB), super::device_id("BOBLAPTOP"))
    );
}

/// A new device of Alice's that queried her keys.
fn alices_new_device(server: &mut FakeServer) -> Client {
    let mut alice2 = Client::new(server, ALICE, "ALICE2");
    alice2.machine.refresh_user_keys(super::user_id(ALICE));
    alice2.send_outgoing(server);
    alice2
}

#[test]
fn imported_keys_sign_the_new_device() {
    let mut server = FakeServer::default();
    let mut alice = Client::new(&mut server, ALICE, "ALICEDEV");
    bootstrap(&mut alice, &mut server);
    let secrets = alice.machine.cross_signing_secrets().unwrap();
    let names: Vec<_> = secrets.iter().map(|(name, _)| *name).collect();
    assert_eq!(names, crate::machine::cross_signing::SECRET_NAMES);

    let mut alice2 = alices_new_device(&mut server);
    assert!(alice2.machine.cross_signing_secrets().is_none());
    let [(_, master), (_, self_signing), (_, user_signing)] = secrets;
    alice2
        .machine
        .import_cross_signing_keys(&master, &self_signing, &user_signing)
        .unwrap();
    assert!(alice2.machine.has_cross_signing_keys());
    alice2.save();
    alice2.send_outgoing(&mut server);

    // The new device is signed by the self-signing key on the server…
    let keys = &server.cross_signing[ALICE];
    let (ssk_id, ssk) = public_key(&keys["self_signing_key"]);
    let device = server.device_keys[ALICE]["ALICE2"].as_object().unwrap();
    verify_json_signature(&ssk, ALICE, &ssk_id, device).unwrap();
    // … its own identity is verified, and it survives a restart.
    alice2.reload();
    assert!(alice2.machine.has_cross_signing_keys());
    let identity = alice2.machine.user_identity(super::user_id(ALICE)).unwrap();
    assert!(identity.is_verified);
}

#[test]
fn keys_that_are_not_our_identity_are_refused() {
    let mut server = FakeServer::default();
    let mut alice = Client::new(&mut server, ALICE, "ALICEDEV");
    // Before any identity is known.
    let seed = CrossSigningKey::generate().to_base64_seed();
    assert_eq!(
        alice
            .machine
            .import_cross_signing_keys(&seed, &seed, &seed)
            .unwrap_err(),
        CrossSigningError::UnknownIdentity(super::user_id(ALICE).to_owned())
    );
    bootstrap(&mut alice, &mut server);
    let [(_, master), (_, self_signing), (_, user_signing)] =
        alice.machine.cross_signing_secrets().unwrap();

    let mut alice2 = alices_new_device(&mut server);
    for (m, s, u) in [
        (seed.as_str(), self_signing.as_str(), user_signing.as_str()),
        (master.as_str(), seed.as_str(), user_signing.as_str()),
        (master.as_str(), self_signing.as_str(), seed.as_str()),
        (master.as_str(), "not base64!", user_signing.as_str()),
    ] {
        assert_eq!(
            alice2
                .machine
                .import_cross_signing_keys(m, s, u)
                .unwrap_err(),
            CrossSigningError::KeysMismatch
        );
    }
    assert!(!alice2.machine.has_cross_signing_keys());
}
