use proptest::prelude::*;
use ruma::{CanonicalJsonObject, CanonicalJsonValue, RoomVersionId, ServerName, server_name};

use super::{
    EventError, Verified, content_hash, event_id, hash_and_sign_event, reference_hash,
    room_id_from_create_event, sign_event, verify_event,
};
use crate::{
    PublicKeyMap, SignatureError, SigningKey,
    testing::{object, ruma_key, spec_key},
    to_canonical_string,
};

fn domain() -> &'static ServerName {
    server_name!("domain")
}

fn keys_for(key: &SigningKey) -> PublicKeyMap {
    let mut map = PublicKeyMap::new();
    map.entry("domain".to_owned())
        .or_default()
        .insert(key.key_id().to_string(), key.public_key());
    map
}

/// Hashes and signs `input` as `domain` and returns the PDU.
fn hashed_and_signed(
    key: &SigningKey,
    version: &RoomVersionId,
    input: &str,
) -> CanonicalJsonObject {
    let mut pdu = object(input);
    hash_and_sign_event(domain(), key, version, &mut pdu).unwrap();
    pdu
}

// --- Spec appendix and ruma: event signing under room version 1 redaction ---

/// Source: matrix-org/matrix-spec, content/appendices.md, commit
/// d0ba2aaef801e0134a4e5c6054a2c2f41bb55531 ("Signing Events", minimal event).
/// The appendix signs the room version 1 redaction of the event.
const MINIMAL_EVENT: &str = r#"{
    "room_id": "!x:domain",
    "sender": "@a:domain",
    "origin": "domain",
    "origin_server_ts": 1000000,
    "signatures": {},
    "hashes": {},
    "type": "X",
    "content": {},
    "prev_events": [],
    "auth_events": [],
    "depth": 3,
    "unsigned": {
        "age_ts": 1000000
    }
}"#;

/// Source: as [`MINIMAL_EVENT`] ("Signing Events", event with redactable content).
const MESSAGE_EVENT: &str = r#"{
    "content": {
        "body": "Here is the message content"
    },
    "event_id": "$0:domain",
    "origin": "domain",
    "origin_server_ts": 1000000,
    "type": "m.room.message",
    "room_id": "!r:domain",
    "sender": "@u:domain",
    "signatures": {},
    "unsigned": {
        "age_ts": 1000000
    }
}"#;

#[test]
fn spec_event_signing_vectors() {
    let pdu = hashed_and_signed(&spec_key(), &RoomVersionId::V1, MINIMAL_EVENT);
    assert_eq!(
        to_canonical_string(&pdu),
        r#"{"auth_events":[],"content":{},"depth":3,"hashes":{"sha256":"5jM4wQpv6lnBo7CLIghJuHdW+s2CMBJPUOGOC89ncos"},"origin":"domain","origin_server_ts":1000000,"prev_events":[],"room_id":"!x:domain","sender":"@a:domain","signatures":{"domain":{"ed25519:1":"KxwGjPSDEtvnFgU00fwFz+l6d2pJM6XBIaMEn81SXPTRl16AqLAYqfIReFGZlHi5KLjAWbOoMszkwsQma+lYAg"}},"type":"X","unsigned":{"age_ts":1000000}}"#
    );
    // Version 1 verification also wants the `event_id` this event lacks;
    // version 3 redacts identically and does not.
    assert_eq!(
        verify_event(&keys_for(&spec_key()), &RoomVersionId::V3, &pdu).unwrap(),
        Verified::All
    );
    assert!(matches!(
        verify_event(&keys_for(&spec_key()), &RoomVersionId::V1, &pdu),
        Err(EventError::Malformed(_))
    ));

    let pdu = hashed_and_signed(&spec_key(), &RoomVersionId::V1, MESSAGE_EVENT);
    assert_eq!(
        to_canonical_string(&pdu),
        r#"{"content":{"body":"Here is the message content"},"event_id":"$0:domain","hashes":{"sha256":"onLKD1bGljeBWQhWZ1kaP9SorVmRQNdN5aM2JYU2n/g"},"origin":"domain","origin_server_ts":1000000,"room_id":"!r:domain","sender":"@u:domain","signatures":{"domain":{"ed25519:1":"Wm+VzmOUOz08Ds+0NTWb1d4CZrVsJSikkeRxh6aCcUwu6pNC78FunoD7KNWzqFn241eYHYMGCA5McEiVPdhzBA"}},"type":"m.room.message","unsigned":{"age_ts":1000000}}"#
    );
    assert_eq!(
        verify_event(&keys_for(&spec_key()), &RoomVersionId::V1, &pdu).unwrap(),
        Verified::All
    );
}

/// Source: ruma/ruma, crates/ruma-signatures/src/lib.rs (mod tests:
/// `sign_minimal_event`, `sign_redacted_event`), commit
/// 0908aaa9847093ecb32bc6edf0af525f726717fd: the appendix events, ruma's key.
#[test]
fn ruma_event_signing_vectors() {
    let pdu = hashed_and_signed(&ruma_key(), &RoomVersionId::V1, MINIMAL_EVENT);
    assert_eq!(
        to_canonical_string(&pdu),
        r#"{"auth_events":[],"content":{},"depth":3,"hashes":{"sha256":"5jM4wQpv6lnBo7CLIghJuHdW+s2CMBJPUOGOC89ncos"},"origin":"domain","origin_server_ts":1000000,"prev_events":[],"room_id":"!x:domain","sender":"@a:domain","signatures":{"domain":{"ed25519:1":"PxOFMn6ORll8PFSQp0IRF6037MEZt3Mfzu/ROiT/gb/ccs1G+f6Ddoswez4KntLPBI3GKCGIkhctiK37JOy2Aw"}},"type":"X","unsigned":{"age_ts":1000000}}"#
    );
    let pdu = hashed_and_signed(&ruma_key(), &RoomVersionId::V1, MESSAGE_EVENT);
    assert_eq!(
        to_canonical_string(&pdu),
        r#"{"content":{"body":"Here is the message content"},"event_id":"$0:domain","hashes":{"sha256":"onLKD1bGljeBWQhWZ1kaP9SorVmRQNdN5aM2JYU2n/g"},"origin":"domain","origin_server_ts":1000000,"room_id":"!r:domain","sender":"@u:domain","signatures":{"domain":{"ed25519:1":"D2V+qWBJssVuK/pEUJtwaYMdww2q1fP4PRCo226ChlLz8u8AWmQdLKes19NMjs/X0Hv0HIjU0c1TDKFMtGuoCA"}},"type":"m.room.message","unsigned":{"age_ts":1000000}}"#
    );
}

#[test]
fn spec_content_hash() {
    assert_eq!(
        content_hash(&object(MINIMAL_EVENT)).unwrap().encode(),
        "5jM4wQpv6lnBo7CLIghJuHdW+s2CMBJPUOGOC89ncos"
    );
}

// --- gomatrixserverlib: reference hashes of a real room version 5 event ---

/// Source: matrix-org/gomatrixserverlib, eventversion_test.go
/// (`TestEventIDForRoomVersionV3`, `TestEventIDForRoomVersionV4`), commit
/// 02f5c72731feec426421aca361bb255084af37dc: an `m.room.create` event from
/// jki.re with its event id under room versions 3 and 4.
const JKI_CREATE_EVENT: &str = r#"{"auth_events": [], "prev_events": [], "type": "m.room.create", "room_id": "!uXDCzlYgCTHtiWCkEx:jki.re", "sender": "@erikj:jki.re", "content": {"room_version": "5", "predecessor": {"room_id": "!gdRMqOrTFdOCYHNwOo:half-shot.uk", "event_id": "$LP7ROBc4b+cMc1UE9haIz8q5AK2AIW4eJ90FfKLvyZI"}, "creator": "@erikj:jki.re"}, "depth": 1, "prev_state": [], "state_key": "", "origin": "jki.re", "origin_server_ts": 1560284621137, "hashes": {"sha256": "IX6zuNiJpJPNf70BLleL3HSCpjKeq9Uhu7uUpyDjBmc"}, "signatures": {"jki.re": {"ed25519:auto": "O4IyFfF2PPtGp5uaDm8t57dZbdh8vc8Q64LgCwvzYRVItAMI0uisfiAFaxkVT7MRpzh6N2QNN5NMRXZKmgPYDA"}}, "unsigned": {"age": 1321650}}"#;

#[test]
fn gomatrixserverlib_event_id_vectors() {
    let pdu = object(JKI_CREATE_EVENT);
    // Version 3: standard alphabet.
    assert_eq!(
        event_id(&RoomVersionId::V3, &pdu).unwrap().as_str(),
        "$RrGxF28UrHLmoASHndYb9Jb/1SFww2ptmtur9INS438"
    );
    assert_eq!(
        reference_hash(&RoomVersionId::V3, &pdu).unwrap(),
        "RrGxF28UrHLmoASHndYb9Jb/1SFww2ptmtur9INS438"
    );
    // Version 4 onwards: URL-safe alphabet.
    assert_eq!(
        event_id(&RoomVersionId::V4, &pdu).unwrap().as_str(),
        "$RrGxF28UrHLmoASHndYb9Jb_1SFww2ptmtur9INS438"
    );
    // Room version 10 redacts an `m.room.create` event exactly as version 4
    // does (all top-level keys kept, including `origin` and `prev_state`; all
    // content kept), so the id is the same. Version 11 drops `origin` and
    // `prev_state`, so it is not.
    assert_eq!(
        event_id(&RoomVersionId::V10, &pdu).unwrap().as_str(),
        "$RrGxF28UrHLmoASHndYb9Jb_1SFww2ptmtur9INS438"
    );
    assert_ne!(
        event_id(&RoomVersionId::V11, &pdu).unwrap().as_str(),
        "$RrGxF28UrHLmoASHndYb9Jb_1SFww2ptmtur9INS438"
    );
}

// --- Synapse: room versions 10, 11 and 12 ---

/// One event hashed, signed and given its id by Synapse.
pub(crate) struct Vector {
    pub(crate) room_version: RoomVersionId,
    /// The event as built, before hashing and signing.
    pub(crate) input: &'static str,
    /// Synapse's hashed and signed event, as canonical JSON.
    pub(crate) signed: &'static str,
    /// Synapse's event id for it.
    pub(crate) event_id: &'static str,
}

/// Source: generated with matrix-synapse 1.163.2 (PyPI; synapse/crypto/event_signing.py
/// `add_hashes_and_signatures`, synapse/events `make_event_from_dict(..).event_id`)
/// by crypto/tests/vectors/synapse_vectors.py, signing as `domain` with the spec
/// appendix key. For each room version: the create event, then a message
/// citing it. The messages carry a top-level `origin`, which version 10
/// protects and versions 11 and 12 redact, and version 12's create event has
/// no `room_id`: its id is the room id.
pub(crate) const SYNAPSE_VECTORS: &[Vector] = &[
    Vector {
        room_version: RoomVersionId::V10,
        input: r#"{"auth_events":[],"prev_events":[],"type":"m.room.create","state_key":"","sender":"@a:domain","content":{"room_version":"10","creator":"@a:domain"},"depth":1,"origin_server_ts":1000000,"unsigned":{"age_ts":1000000},"room_id":"!r:domain"}"#,
        signed: r#"{"auth_events":[],"content":{"creator":"@a:domain","room_version":"10"},"depth":1,"hashes":{"sha256":"tziz37kOM4eLmR2A/fGV8f8aH1I9Yvt5kWSkjDbzxNQ"},"origin_server_ts":1000000,"prev_events":[],"room_id":"!r:domain","sender":"@a:domain","signatures":{"domain":{"ed25519:1":"3ChYfNQRzVZJKxJzZ0jG2ko71yQM3uwRJGT7vEn53WnVCBCguYiM4A2UGa0oFr1nsJv05ESX7+JAR0QbeS9BDw"}},"state_key":"","type":"m.room.create","unsigned":{"age_ts":1000000}}"#,
        event_id: "$y8K173pAZAN1ERgehkNItZgN1s9dNpL0yI1SPFR5UaM",
    },
    Vector {
        room_version: RoomVersionId::V10,
        input: r#"{"auth_events":["$y8K173pAZAN1ERgehkNItZgN1s9dNpL0yI1SPFR5UaM"],"prev_events":["$y8K173pAZAN1ERgehkNItZgN1s9dNpL0yI1SPFR5UaM"],"type":"m.room.message","room_id":"!r:domain","sender":"@a:domain","origin":"domain","content":{"body":"Here is the message content","msgtype":"m.text"},"depth":2,"origin_server_ts":1000001,"unsigned":{"age_ts":1000001}}"#,
        signed: r#"{"auth_events":["$y8K173pAZAN1ERgehkNItZgN1s9dNpL0yI1SPFR5UaM"],"content":{"body":"Here is the message content","msgtype":"m.text"},"depth":2,"hashes":{"sha256":"94LjHtgq8xIiaOy+jpb4AZ0hLUshalRZUPMc8R4/Kj8"},"origin":"domain","origin_server_ts":1000001,"prev_events":["$y8K173pAZAN1ERgehkNItZgN1s9dNpL0yI1SPFR5UaM"],"room_id":"!r:domain","sender":"@a:domain","signatures":{"domain":{"ed25519:1":"gAIlTr5KIgWzAp7jEeMZ414z9xmzzoLPHDHQKy4Cjle5bRQC5BHh/GhR589N7Ea3Z3+AvRfuUFjEEXs8mPZoCA"}},"type":"m.room.message","unsigned":{"age_ts":1000001}}"#,
        event_id: "$h3l4-MfEY7c3wl_Ve8zLQCwzoqpE_3UTSihvPtnOtHA",
    },
    Vector {
        room_version: RoomVersionId::V11,
        input: r#"{"auth_events":[],"prev_events":[],"type":"m.room.create","state_key":"","sender":"@a:domain","content":{"room_version":"11"},"depth":1,"origin_server_ts":1000000,"unsigned":{"age_ts":1000000},"room_id":"!r:domain"}"#,
        signed: r#"{"auth_events":[],"content":{"room_version":"11"},"depth":1,"hashes":{"sha256":"Ps8hj2OnOSibP5U0izvS/z5UPtQOT8z73SfvK0W6pVs"},"origin_server_ts":1000000,"prev_events":[],"room_id":"!r:domain","sender":"@a:domain","signatures":{"domain":{"ed25519:1":"OI+uCll0cQ9vXNik6QUgcOo/yHWIX26rWf9/MC84N0NhKyxORYd+akxAGiDvAOpNuwolPC7ppu62g6JkIQSdCw"}},"state_key":"","type":"m.room.create","unsigned":{"age_ts":1000000}}"#,
        event_id: "$_WsicK13CXN4QWf5RJ6rPliYN2yXg-86tTo-KGVWkhk",
    },
    Vector {
        room_version: RoomVersionId::V11,
        input: r#"{"auth_events":["$_WsicK13CXN4QWf5RJ6rPliYN2yXg-86tTo-KGVWkhk"],"prev_events":["$_WsicK13CXN4QWf5RJ6rPliYN2yXg-86tTo-KGVWkhk"],"type":"m.room.message","room_id":"!r:domain","sender":"@a:domain","origin":"domain","content":{"body":"Here is the message content","msgtype":"m.text"},"depth":2,"origin_server_ts":1000001,"unsigned":{"age_ts":1000001}}"#,
        signed: r#"{"auth_events":["$_WsicK13CXN4QWf5RJ6rPliYN2yXg-86tTo-KGVWkhk"],"content":{"body":"Here is the message content","msgtype":"m.text"},"depth":2,"hashes":{"sha256":"xM46w07QwA1t3GxS/DFeeGLIVC6fxNDWUKPVpTXX3fA"},"origin":"domain","origin_server_ts":1000001,"prev_events":["$_WsicK13CXN4QWf5RJ6rPliYN2yXg-86tTo-KGVWkhk"],"room_id":"!r:domain","sender":"@a:domain","signatures":{"domain":{"ed25519:1":"B0m7qNCYd48XrnJrU8FBw6+O21PV4QpxCRlC+JwM+A4eoa8o8W4suOTkJvPOk1rGZYVDRkwpTyLysJytwnqjBg"}},"type":"m.room.message","unsigned":{"age_ts":1000001}}"#,
        event_id: "$nwGtFxmaKNegn88NlPxI-esOv-D8thbGoIlCXIc_60w",
    },
    Vector {
        room_version: RoomVersionId::V12,
        input: r#"{"auth_events":[],"prev_events":[],"type":"m.room.create","state_key":"","sender":"@a:domain","content":{"room_version":"12"},"depth":1,"origin_server_ts":1000000,"unsigned":{"age_ts":1000000}}"#,
        signed: r#"{"auth_events":[],"content":{"room_version":"12"},"depth":1,"hashes":{"sha256":"ccqBumrNf46eCfIkdZSYW9RNafS0xFYYDm5rnZBSVJU"},"origin_server_ts":1000000,"prev_events":[],"sender":"@a:domain","signatures":{"domain":{"ed25519:1":"0iTJ32BZFymf41Y7UBttP2wZ0JTo6UjsLDQuf+79LB+WeKVfoLyR2I8RF23ZdFgCuxtjVBl5MKXIOWP+ocELDw"}},"state_key":"","type":"m.room.create","unsigned":{"age_ts":1000000}}"#,
        event_id: "$P5-6WTYQ_woy6f4nmleE0XqxjtZcyKGza5_gDN-KAdM",
    },
    Vector {
        room_version: RoomVersionId::V12,
        input: r#"{"auth_events":[],"prev_events":["$P5-6WTYQ_woy6f4nmleE0XqxjtZcyKGza5_gDN-KAdM"],"type":"m.room.message","room_id":"!P5-6WTYQ_woy6f4nmleE0XqxjtZcyKGza5_gDN-KAdM","sender":"@a:domain","origin":"domain","content":{"body":"Here is the message content","msgtype":"m.text"},"depth":2,"origin_server_ts":1000001,"unsigned":{"age_ts":1000001}}"#,
        signed: r#"{"auth_events":[],"content":{"body":"Here is the message content","msgtype":"m.text"},"depth":2,"hashes":{"sha256":"y/g5ZbQLCmrdxnCp9mAuk2ypXrvenCZINp17e+pIvCg"},"origin":"domain","origin_server_ts":1000001,"prev_events":["$P5-6WTYQ_woy6f4nmleE0XqxjtZcyKGza5_gDN-KAdM"],"room_id":"!P5-6WTYQ_woy6f4nmleE0XqxjtZcyKGza5_gDN-KAdM","sender":"@a:domain","signatures":{"domain":{"ed25519:1":"T+XYlBCnm4jyyP1xcxrhzF0g7jvHVUkWnFtJLvVf0ho9wnJmScNUZ6QmhLiB5HFhHsJBN6EqS3CnF92ZBbrAAw"}},"type":"m.room.message","unsigned":{"age_ts":1000001}}"#,
        event_id: "$2USzM8wZaVneZ6b_mYDHJeucMpnlyol_VjDAejU7UkU",
    },
];

#[test]
fn synapse_vectors_hash_sign_and_id_to_exact_bytes() {
    let key = spec_key();
    for vector in SYNAPSE_VECTORS {
        let version = &vector.room_version;
        let pdu = hashed_and_signed(&key, version, vector.input);
        assert_eq!(
            to_canonical_string(&pdu),
            vector.signed,
            "room version {version}"
        );
        assert_eq!(
            event_id(version, &pdu).unwrap().as_str(),
            vector.event_id,
            "room version {version}"
        );
        assert_eq!(
            reference_hash(version, &pdu).unwrap(),
            vector.event_id[1..],
            "room version {version}"
        );
    }
}

#[test]
fn synapse_vectors_verify() {
    let keys = keys_for(&spec_key());
    for vector in SYNAPSE_VECTORS {
        let pdu = object(vector.signed);
        assert_eq!(
            verify_event(&keys, &vector.room_version, &pdu).unwrap(),
            Verified::All,
            "room version {}",
            vector.room_version
        );
    }
}

#[test]
fn room_version_12_room_id_is_the_create_event_hash() {
    let create = &SYNAPSE_VECTORS[4];
    assert_eq!(create.room_version, RoomVersionId::V12);
    let room_id = room_id_from_create_event(&RoomVersionId::V12, &object(create.signed)).unwrap();
    assert_eq!(
        room_id.as_str(),
        "!P5-6WTYQ_woy6f4nmleE0XqxjtZcyKGza5_gDN-KAdM"
    );

    let v11_create = object(SYNAPSE_VECTORS[2].signed);
    assert!(matches!(
        room_id_from_create_event(&RoomVersionId::V11, &v11_create),
        Err(EventError::RoomIdNotHashed(RoomVersionId::V11))
    ));
}

#[test]
fn rooms_versions_1_and_2_have_no_hashed_event_ids() {
    for version in [RoomVersionId::V1, RoomVersionId::V2] {
        assert!(matches!(
            event_id(&version, &object(MINIMAL_EVENT)),
            Err(EventError::EventIdNotHashed(v)) if v == version
        ));
    }
}

#[test]
fn unknown_room_versions_are_refused() {
    let version = RoomVersionId::try_from("org.example.custom").unwrap();
    let mut pdu = object(MINIMAL_EVENT);
    assert!(matches!(
        hash_and_sign_event(domain(), &spec_key(), &version, &mut pdu),
        Err(EventError::UnsupportedRoomVersion(v)) if v == version
    ));
    assert!(matches!(
        event_id(&version, &pdu),
        Err(EventError::UnsupportedRoomVersion(_))
    ));
}

// --- Attacks: what a malicious server or relay changes is caught ---

fn v11_message() -> CanonicalJsonObject {
    object(SYNAPSE_VECTORS[3].signed)
}

fn set(pdu: &mut CanonicalJsonObject, key: &str, value: CanonicalJsonValue) {
    pdu.insert(key.to_owned(), value);
}

#[test]
fn altered_content_fails_the_hash_but_not_the_signature() {
    // The signature covers the redacted event, which has no message content;
    // the content hash covers the rest. The spec's answer is to redact.
    let mut pdu = v11_message();
    set(
        &mut pdu,
        "content",
        CanonicalJsonValue::Object(object(r#"{"body":"forged"}"#)),
    );
    let verified = verify_event(&keys_for(&spec_key()), &RoomVersionId::V11, &pdu).unwrap();
    assert_eq!(verified, Verified::SignaturesOnly);
    assert!(!verified.is_content_hash_valid());
}

#[test]
fn altered_protected_fields_fail_the_signature() {
    let keys = keys_for(&spec_key());
    let forged: [(&str, CanonicalJsonValue); 4] = [
        (
            "origin_server_ts",
            CanonicalJsonValue::Integer(2_000_000_u32.into()),
        ),
        ("prev_events", CanonicalJsonValue::Array(vec![])),
        (
            "type",
            CanonicalJsonValue::String("m.room.topic".to_owned()),
        ),
        (
            "hashes",
            CanonicalJsonValue::Object(object(r#"{"sha256":"AAAA"}"#)),
        ),
    ];
    for (field, value) in forged {
        let mut pdu = v11_message();
        set(&mut pdu, field, value);
        let err = verify_event(&keys, &RoomVersionId::V11, &pdu).unwrap_err();
        assert!(
            matches!(err, EventError::Signature(SignatureError::Invalid(_))),
            "{field}: {err:?}"
        );
    }
}

#[test]
fn event_from_a_server_whose_keys_are_unknown_is_refused() {
    let err = verify_event(&PublicKeyMap::new(), &RoomVersionId::V11, &v11_message()).unwrap_err();
    assert!(matches!(
        err,
        EventError::Signature(SignatureError::UnknownEntity { entity }) if entity == "domain"
    ));
}

#[test]
fn event_signed_by_another_server_only_is_refused() {
    // A server other than the sender's signs an event claiming a `domain` sender.
    let mut pdu = object(SYNAPSE_VECTORS[3].input);
    hash_and_sign_event(
        server_name!("evil.example"),
        &spec_key(),
        &RoomVersionId::V11,
        &mut pdu,
    )
    .unwrap();
    let mut keys = keys_for(&spec_key());
    keys.insert("evil.example".to_owned(), keys["domain"].clone());
    let err = verify_event(&keys, &RoomVersionId::V11, &pdu).unwrap_err();
    assert!(matches!(
        err,
        EventError::Signature(SignatureError::MissingSignature { entity }) if entity == "domain"
    ));
}

#[test]
fn malformed_pdus_are_reported_as_malformed() {
    let keys = keys_for(&spec_key());
    let mut no_hashes = v11_message();
    no_hashes.remove("hashes");
    assert!(matches!(
        verify_event(&keys, &RoomVersionId::V11, &no_hashes),
        Err(EventError::Malformed(_))
    ));
    let mut bad_sender = v11_message();
    set(
        &mut bad_sender,
        "sender",
        CanonicalJsonValue::String("not a user id".to_owned()),
    );
    assert!(matches!(
        verify_event(&keys, &RoomVersionId::V11, &bad_sender),
        Err(EventError::Malformed(_))
    ));
}

#[test]
fn oversized_pdus_are_refused() {
    let mut pdu = object(SYNAPSE_VECTORS[3].input);
    let body = "x".repeat(70_000);
    set(
        &mut pdu,
        "content",
        CanonicalJsonValue::Object(object(&format!(r#"{{"body":"{body}"}}"#))),
    );
    assert!(matches!(content_hash(&pdu), Err(EventError::TooLarge)));
    assert!(matches!(
        hash_and_sign_event(domain(), &spec_key(), &RoomVersionId::V11, &mut pdu),
        Err(EventError::TooLarge)
    ));
}

#[test]
fn countersigning_keeps_the_hash_and_adds_a_signature() {
    let mut pdu = v11_message();
    let hashes = pdu["hashes"].clone();
    let other = SigningKey::from_seed(&[7; 32], "x").unwrap();
    sign_event(
        server_name!("other.example"),
        &other,
        &RoomVersionId::V11,
        &mut pdu,
    )
    .unwrap();
    assert_eq!(pdu["hashes"], hashes);

    let mut keys = keys_for(&spec_key());
    keys.entry("other.example".to_owned())
        .or_default()
        .insert(other.key_id().to_string(), other.public_key());
    assert_eq!(
        verify_event(&keys, &RoomVersionId::V11, &pdu).unwrap(),
        Verified::All
    );
    // The event id does not depend on signatures.
    assert_eq!(
        event_id(&RoomVersionId::V11, &pdu).unwrap().as_str(),
        SYNAPSE_VECTORS[3].event_id
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Any message body signs, verifies, and keeps its id across a round trip
    /// through canonical bytes; flipping any byte of the signature breaks it.
    #[test]
    fn signed_events_verify_and_resist_signature_flips(
        body in any::<String>(),
        version in prop::sample::select(vec![RoomVersionId::V10, RoomVersionId::V11, RoomVersionId::V12]),
        index in 0usize..64,
        mask in 1u8..,
    ) {
        let key = spec_key();
        let mut pdu = object(SYNAPSE_VECTORS[3].input);
        let mut content = CanonicalJsonObject::new();
        content.insert("body".to_owned(), CanonicalJsonValue::String(body));
        set(&mut pdu, "content", CanonicalJsonValue::Object(content));
        hash_and_sign_event(domain(), &key, &version, &mut pdu).unwrap();

        let received = object(&to_canonical_string(&pdu));
        prop_assert_eq!(verify_event(&keys_for(&key), &version, &received).unwrap(), Verified::All);
        prop_assert_eq!(event_id(&version, &received).unwrap(), event_id(&version, &pdu).unwrap());

        let signature = received["signatures"].as_object().unwrap()["domain"].as_object().unwrap()
            ["ed25519:1"].as_str().unwrap();
        let mut bytes = crate::base64::decode(signature).unwrap();
        bytes[index] ^= mask;
        let mut tampered = received.clone();
        let mut entity = CanonicalJsonObject::new();
        entity.insert("ed25519:1".to_owned(), CanonicalJsonValue::String(crate::base64::encode(&bytes)));
        let mut signatures = CanonicalJsonObject::new();
        signatures.insert("domain".to_owned(), CanonicalJsonValue::Object(entity));
        set(&mut tampered, "signatures", CanonicalJsonValue::Object(signatures));
        let err = verify_event(&keys_for(&key), &version, &tampered).unwrap_err();
        prop_assert!(matches!(err, EventError::Signature(SignatureError::Invalid(_))), "{:?}", err);
    }
}
