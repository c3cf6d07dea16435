use serde_json::{Value, json};

use super::{Account, OlmError, OlmMessage, Session};
use crate::{PickleError, PickleKey, verify_json_signature};

/// Alice claims one of Bob's one-time keys and opens a session.
fn alice_to_bob(alice: &Account, bob: &mut Account) -> Session {
    bob.generate_one_time_keys(1);
    let (_, otk) = bob.unpublished_one_time_keys().remove(0);
    bob.mark_keys_as_published();
    alice
        .create_outbound_session(bob.identity_keys().curve25519, otk)
        .unwrap()
}

fn pre_key(message: OlmMessage) -> vodozemac::olm::PreKeyMessage {
    match message {
        OlmMessage::PreKey(m) => m,
        OlmMessage::Normal(_) => panic!("expected a pre-key message"),
    }
}

#[test]
fn outbound_and_inbound_sessions_talk_both_ways() {
    let alice = Account::new();
    let mut bob = Account::new();
    let mut outbound = alice_to_bob(&alice, &mut bob);

    let first = pre_key(outbound.encrypt(b"hello bob").unwrap());
    let (mut inbound, plaintext) = bob
        .create_inbound_session(alice.identity_keys().curve25519, &first)
        .unwrap();
    assert_eq!(plaintext, b"hello bob");
    assert_eq!(inbound.session_id(), outbound.session_id());
    assert!(outbound.matches(&first));

    let reply = inbound.encrypt(b"hi alice").unwrap();
    assert!(matches!(reply, OlmMessage::Normal(_)));
    assert_eq!(outbound.decrypt(&reply).unwrap(), b"hi alice");
    assert!(outbound.has_received_message());
    // Once Alice has heard back, her messages are no longer pre-key messages.
    assert!(matches!(
        outbound.encrypt(b"x").unwrap(),
        OlmMessage::Normal(_)
    ));
}

#[test]
fn a_one_time_key_creates_one_session_only() {
    let alice = Account::new();
    let mut bob = Account::new();
    let mut outbound = alice_to_bob(&alice, &mut bob);
    let first = pre_key(outbound.encrypt(b"once").unwrap());
    bob.create_inbound_session(alice.identity_keys().curve25519, &first)
        .unwrap();
    // A replayed pre-key message cannot create a second session: the
    // one-time key is gone.
    assert!(matches!(
        bob.create_inbound_session(alice.identity_keys().curve25519, &first),
        Err(OlmError::SessionCreation { .. })
    ));
}

#[test]
fn fallback_key_survives_use() {
    let alice = Account::new();
    let carol = Account::new();
    let mut bob = Account::new();
    bob.generate_fallback_key();
    let (id, fallback) = bob.unpublished_fallback_key().unwrap();
    assert!(id.starts_with("signed_curve25519:"));
    bob.mark_keys_as_published();
    assert!(bob.unpublished_fallback_key().is_none());

    for sender in [&alice, &carol] {
        let mut out = sender
            .create_outbound_session(bob.identity_keys().curve25519, fallback)
            .unwrap();
        let message = pre_key(out.encrypt(b"via fallback").unwrap());
        let (_, plaintext) = bob
            .create_inbound_session(sender.identity_keys().curve25519, &message)
            .unwrap();
        assert_eq!(plaintext, b"via fallback");
    }
}

#[test]
fn pre_key_message_with_another_identity_key_is_refused() {
    let alice = Account::new();
    let mallory = Account::new();
    let mut bob = Account::new();
    let mut outbound = alice_to_bob(&alice, &mut bob);
    let first = pre_key(outbound.encrypt(b"hello").unwrap());
    assert!(matches!(
        bob.create_inbound_session(mallory.identity_keys().curve25519, &first),
        Err(OlmError::SessionCreation { .. })
    ));
}

#[test]
fn replayed_normal_message_is_refused() {
    let alice = Account::new();
    let mut bob = Account::new();
    let mut outbound = alice_to_bob(&alice, &mut bob);
    let first = pre_key(outbound.encrypt(b"hello").unwrap());
    let (mut inbound, _) = bob
        .create_inbound_session(alice.identity_keys().curve25519, &first)
        .unwrap();
    let reply = inbound.encrypt(b"one").unwrap();
    outbound.decrypt(&reply).unwrap();
    assert!(matches!(
        outbound.decrypt(&reply),
        Err(OlmError::Decryption { .. })
    ));
}

#[test]
fn one_time_keys_are_listed_until_published() {
    let mut account = Account::new();
    assert!(account.max_one_time_keys() >= 50);
    account.generate_one_time_keys(5);
    let keys = account.unpublished_one_time_keys();
    assert_eq!(keys.len(), 5);
    assert!(
        keys.iter()
            .all(|(id, _)| id.starts_with("signed_curve25519:"))
    );
    account.mark_keys_as_published();
    assert!(account.unpublished_one_time_keys().is_empty());
}

#[test]
fn device_keys_signature_verifies_with_the_identity_key() {
    let account = Account::new();
    let mut device_keys = json!({
        "user_id": "@alice:example.org",
        "device_id": "ALICEDEV",
        "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
        "keys": {
            "curve25519:ALICEDEV": account.identity_keys().curve25519.to_base64(),
            "ed25519:ALICEDEV": account.identity_keys().ed25519.to_base64(),
        },
    });
    let object = device_keys.as_object_mut().unwrap();
    account
        .sign_json("@alice:example.org", "ALICEDEV", object)
        .unwrap();
    verify_json_signature(
        &account.identity_keys().ed25519,
        "@alice:example.org",
        "ed25519:ALICEDEV",
        object,
    )
    .unwrap();
    let other = Account::new();
    assert!(
        verify_json_signature(
            &other.identity_keys().ed25519,
            "@alice:example.org",
            "ed25519:ALICEDEV",
            object,
        )
        .is_err()
    );
    assert!(matches!(
        device_keys["signatures"]["@alice:example.org"]["ed25519:ALICEDEV"],
        Value::String(_)
    ));
}

#[test]
fn pickles_round_trip_and_refuse_a_wrong_key() {
    let key = PickleKey::from_bytes([1; 32]);
    let wrong = PickleKey::from_bytes([2; 32]);
    let alice = Account::new();
    let mut bob = Account::new();
    let mut outbound = alice_to_bob(&alice, &mut bob);

    let alice_again = Account::from_pickle(&alice.pickle(&key), &key).unwrap();
    assert_eq!(alice_again.identity_keys(), alice.identity_keys());
    assert!(matches!(
        Account::from_pickle(&alice.pickle(&key), &wrong),
        Err(PickleError)
    ));

    let pickled = outbound.pickle(&key);
    let mut restored = Session::from_pickle(&pickled, &key).unwrap();
    assert_eq!(restored.session_id(), outbound.session_id());
    // The restored ratchet is the same ratchet: Bob can decrypt what it sends.
    let message = pre_key(restored.encrypt(b"after reload").unwrap());
    let (_, plaintext) = bob
        .create_inbound_session(alice.identity_keys().curve25519, &message)
        .unwrap();
    assert_eq!(plaintext, b"after reload");
    let _ = outbound.encrypt(b"unused").unwrap();
    assert!(Session::from_pickle(&pickled, &wrong).is_err());
}

#[test]
fn debug_shows_no_secrets() {
    let account = Account::new();
    let debug = format!("{account:?}");
    assert!(debug.starts_with("Account { identity_keys:"));
    assert!(debug.ends_with(".. }"));
}

#[test]
fn a_dehydrated_account_opens_with_its_key_only_and_keeps_its_keys() {
    let mut dehydrated = Account::new();
    dehydrated.generate_one_time_keys(2);
    let key = [7u8; 32];
    let data = dehydrated.to_dehydrated_device(&key).expect("dehydrate");

    assert!(Account::from_dehydrated_device(&data, &[8u8; 32]).is_err());
    let mut tampered = data.clone();
    tampered.nonce = "AAAAAAAAAAAAAAAA".to_owned();
    assert!(Account::from_dehydrated_device(&tampered, &key).is_err());

    let mut rehydrated = Account::from_dehydrated_device(&data, &key).expect("rehydrate");
    assert_eq!(rehydrated.identity_keys(), dehydrated.identity_keys());
    // A session started on one of its one-time keys before dehydration
    // opens on the rehydrated account.
    let sender = Account::new();
    let (_, one_time_key) = dehydrated.unpublished_one_time_keys()[0];
    let mut outbound = sender
        .create_outbound_session(dehydrated.identity_keys().curve25519, one_time_key)
        .expect("outbound");
    let message = outbound.encrypt(b"room key").expect("encrypt");
    let (_, plaintext) = rehydrated
        .create_inbound_session(sender.identity_keys().curve25519, &pre_key(message))
        .expect("inbound");
    assert_eq!(plaintext, b"room key");
}
