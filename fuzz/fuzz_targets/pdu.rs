//! PDUs as another server sends them, in every room version: parsing,
//! the crypto crate's hashes and ids, and the checks on receipt before the
//! authorization rules (format, signatures, content hash) with every
//! required signer's key in hand. No panic on any bytes; an event whose hash
//! fails and is redacted keeps its event id; and an event re-signed by each
//! server that must sign it passes unredacted.
//!
//! Input: one byte choosing the room version, then the event's JSON.
#![no_main]

use libfuzzer_sys::fuzz_target;
use myelin_crypto::{
    PublicKeyMap, PublicKeySet, Verified, content_hash, event_id, hash_and_sign_event,
    parse_canonical_object, reference_hash, required_signers, room_id_from_create_event,
    sign_event, verify_event,
};
use myelin_fuzz::signing_key;
use myelin_server::service::{
    federation::pdu_check::check_with_keys,
    rooms::{
        pdu::{Pdu, PduError},
        version::RoomVersion,
    },
};
use ruma::{CanonicalJsonObject, CanonicalJsonValue};

fuzz_target!(|data: &[u8]| {
    let Some((choice, json)) = data.split_first() else {
        return;
    };
    let version = RoomVersion::ALL[usize::from(*choice) % RoomVersion::ALL.len()];
    let Ok(text) = std::str::from_utf8(json) else {
        return;
    };
    let Ok(object) = parse_canonical_object(text) else {
        return;
    };
    let id = version.id();
    let _ = content_hash(&object);
    let _ = reference_hash(&id, &object);
    let _ = event_id(&id, &object);
    let _ = room_id_from_create_event(&id, &object);
    let Ok(signers) = required_signers(&id, &object) else {
        return;
    };
    let keys = keys_for(&object, signers.iter().map(|s| s.as_str()));
    let _ = verify_event(&keys, &id, &object);

    let Ok(pdu) = Pdu::from_object(version, object.clone()) else {
        return;
    };
    let event_id = pdu.event_id().to_owned();
    if let Ok(checked) = check_with_keys(pdu, &keys) {
        assert_eq!(
            checked.pdu.event_id(),
            event_id,
            "redaction kept the event id"
        );
    }

    // Re-signed by every required signer, the event passes as it is.
    let has_own_id = object.contains_key("event_id") && !version.has_origin_chosen_event_ids();
    let mut signed = object;
    let key = signing_key();
    let mut servers = signers.iter();
    let Some(first) = servers.next() else {
        return;
    };
    if hash_and_sign_event(first, &key, &id, &mut signed).is_err()
        || servers.any(|server| sign_event(server, &key, &id, &mut signed).is_err())
    {
        return;
    }
    // Only the key just used: signatures the event carried under other key
    // ids are not ours to make valid.
    let keys = keys_for(
        &CanonicalJsonObject::new(),
        signers.iter().map(|s| s.as_str()),
    );
    assert_eq!(
        verify_event(&keys, &id, &signed).ok(),
        Some(Verified::All),
        "an event just hashed and signed verifies"
    );
    if has_own_id {
        // Its `event_id` field now names the event before signing.
        return;
    }
    let pdu = match Pdu::from_object(version, signed) {
        Ok(pdu) => pdu,
        // The signatures took it over the size limit.
        Err(PduError::TooLarge { .. }) => return,
        Err(error) => panic!("signing made a well-formed event malformed: {error}"),
    };
    let checked = check_with_keys(pdu, &keys).expect("an event just signed passes");
    assert!(!checked.redacted, "an event just hashed is not redacted");
});

/// The fuzzing key under every key id the event names for each signer, and
/// under the key's own id.
fn keys_for<'a>(
    object: &CanonicalJsonObject,
    signers: impl Iterator<Item = &'a str>,
) -> PublicKeyMap {
    let key = signing_key();
    let public = key.public_key();
    let signatures = match object.get("signatures") {
        Some(CanonicalJsonValue::Object(signatures)) => Some(signatures),
        _ => None,
    };
    let mut keys = PublicKeyMap::new();
    for signer in signers {
        let mut set = PublicKeySet::from([(key.key_id().to_string(), public.clone())]);
        if let Some(CanonicalJsonValue::Object(named)) = signatures.and_then(|s| s.get(signer)) {
            set.extend(named.keys().map(|key_id| (key_id.clone(), public.clone())));
        }
        keys.insert(signer.to_owned(), set);
    }
    keys
}
