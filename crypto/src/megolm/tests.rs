use super::{
    ExportedSessionKey, InboundGroupSession, MegolmError, OutboundGroupSession, SessionKey,
};
use crate::PickleKey;

fn shared(outbound: &OutboundGroupSession) -> InboundGroupSession {
    let key = SessionKey::from_base64(&outbound.session_key().to_base64()).unwrap();
    InboundGroupSession::new(&key)
}

#[test]
fn recipients_decrypt_from_the_index_they_were_given() {
    let mut outbound = OutboundGroupSession::new();
    let early = outbound.encrypt(b"before bob");
    let mut bob = shared(&outbound);
    assert_eq!(bob.session_id(), outbound.session_id());
    assert_eq!(bob.first_known_index(), 1);
    let later = outbound.encrypt(b"after bob");
    assert_eq!(outbound.message_index(), 2);

    assert_eq!(bob.decrypt(&later).unwrap(), (b"after bob".to_vec(), 1));
    // The key Bob got cannot reach back: forward secrecy for earlier messages.
    assert!(matches!(
        bob.decrypt(&early),
        Err(MegolmError::UnknownMessageIndex {
            first_known_index: 1,
            message_index: 0
        })
    ));
}

#[test]
fn export_at_limits_what_a_forwarded_key_decrypts() {
    let mut outbound = OutboundGroupSession::new();
    let mut alice = shared(&outbound);
    let zero = outbound.encrypt(b"zero");
    let one = outbound.encrypt(b"one");
    let exported = alice.export_at(1).unwrap();
    let mut forwarded = InboundGroupSession::import(
        &ExportedSessionKey::from_base64(&exported.to_base64()).unwrap(),
    );
    assert_eq!(forwarded.decrypt(&one).unwrap().0, b"one");
    assert!(forwarded.decrypt(&zero).is_err());
    assert_eq!(
        alice.export_at_first_known_index().to_base64(),
        alice.export_at(0).unwrap().to_base64()
    );
}

#[test]
fn a_message_from_another_session_fails_authentication() {
    let mut outbound = OutboundGroupSession::new();
    let mut other = OutboundGroupSession::new();
    let mut bob = shared(&outbound);
    let foreign = other.encrypt(b"x");
    let _ = outbound.encrypt(b"y");
    assert!(matches!(
        bob.decrypt(&foreign),
        Err(MegolmError::Authentication { .. })
    ));
    assert!(matches!(
        bob.decrypt("not base64!"),
        Err(MegolmError::MalformedMessage { .. })
    ));
}

#[test]
fn a_tampered_ciphertext_fails() {
    let mut outbound = OutboundGroupSession::new();
    let mut bob = shared(&outbound);
    let message = outbound.encrypt(b"pay 10");
    let mut bytes = vodozemac::base64_decode(&message).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 1;
    let tampered = vodozemac::base64_encode(bytes);
    assert!(bob.decrypt(&tampered).is_err());
}

#[test]
fn invalid_session_keys_are_refused() {
    assert!(matches!(
        SessionKey::from_base64("AAAA"),
        Err(MegolmError::InvalidSessionKey { .. })
    ));
    // An exported key is unsigned, so it is not a valid (signed) session key.
    let outbound = OutboundGroupSession::new();
    let exported = shared(&outbound).export_at_first_known_index().to_base64();
    assert!(SessionKey::from_base64(&exported).is_err());
}

#[test]
fn pickles_round_trip() {
    let key = PickleKey::from_bytes([9; 32]);
    let mut outbound = OutboundGroupSession::new();
    let inbound = shared(&outbound);
    let _ = outbound.encrypt(b"one");
    let mut outbound = OutboundGroupSession::from_pickle(&outbound.pickle(&key), &key).unwrap();
    assert_eq!(outbound.message_index(), 1);
    let mut inbound = InboundGroupSession::from_pickle(&inbound.pickle(&key), &key).unwrap();
    let two = outbound.encrypt(b"two");
    assert_eq!(inbound.decrypt(&two).unwrap(), (b"two".to_vec(), 1));
    assert!(
        InboundGroupSession::from_pickle(&inbound.pickle(&key), &PickleKey::from_bytes([8; 32]))
            .is_err()
    );
}

#[test]
fn debug_is_redacted() {
    let outbound = OutboundGroupSession::new();
    assert_eq!(
        format!("{:?}", outbound.session_key()),
        "SessionKey([redacted])"
    );
    assert!(format!("{outbound:?}").contains("message_index: 0"));
}
