use myelin_crypto::{room_id_from_create_event, to_canonical_string};
use ruma::{
    CanonicalJsonValue, OwnedEventId, RoomVersionId, UInt, events::StateEventType, room_id,
    state_res::Event,
};
use serde_json::json;

use super::*;
use crate::service::rooms::testing::{
    self, assert_matches, create_event, for_each_version, legacy_room_id, new_pdu, user,
};

fn message(version: RoomVersion, create: &Pdu) -> myelin_crypto::SignedPdu {
    let mut new = new_pdu(
        Some(create.room_id().to_owned()),
        &user("alice"),
        "m.room.message",
        None,
        json!({ "msgtype": "m.text", "body": "secret words" }),
    );
    new.prev_events = vec![create.event_id().to_owned()];
    if !version.is_room_id_derived_from_create_event() {
        new.auth_events = vec![create.event_id().to_owned()];
    }
    new.depth = UInt::from(2_u32);
    new.origin_server_ts = ruma::MilliSecondsSinceUnixEpoch(UInt::from(1_234_u32));
    testing::sign(version, new)
}

fn object_of(signed: &myelin_crypto::SignedPdu) -> CanonicalJsonObject {
    signed.pdu().clone()
}

#[test]
fn parsed_pdu_keeps_the_signed_bytes_and_id_of_a_built_pdu() {
    for_each_version!(|version| {
        let create = create_event(version, &user("alice"));
        let signed = message(version, &create);
        let from_signed = Pdu::from_signed(version, signed.clone()).unwrap();
        let parsed = Pdu::from_json(version, signed.canonical_json()).unwrap();

        for pdu in [&from_signed, &parsed] {
            assert_eq!(pdu.event_id(), signed.event_id());
            assert_eq!(pdu.canonical_json(), signed.canonical_json());
            assert_eq!(pdu.as_object(), signed.pdu());
            assert_eq!(pdu.room_id(), create.room_id());
            assert_eq!(pdu.sender(), "@alice:a.test");
            assert_eq!(pdu.kind(), &TimelineEventType::RoomMessage);
            assert_eq!(pdu.state_key(), None);
            assert!(!pdu.is_state());
            assert_eq!(
                pdu.content().get(),
                r#"{"body":"secret words","msgtype":"m.text"}"#
            );
            assert_eq!(pdu.prev_events(), [create.event_id().to_owned()]);
            assert_eq!(pdu.depth(), UInt::from(2_u32));
            assert_eq!(pdu.origin_server_ts().get(), UInt::from(1_234_u32));
            assert_eq!(pdu.redacts(), None);
            assert_eq!(pdu.room_version(), version);
        }
    });
}

#[test]
fn stored_pdu_comes_back_identical_under_its_stored_id_without_rehashing() {
    for_each_version!(|version| {
        let create = create_event(version, &user("alice"));
        let original = Pdu::from_signed(version, message(version, &create)).unwrap();
        let restored = Pdu::from_storage(
            version,
            original.event_id().to_owned(),
            original.canonical_json().to_owned(),
        )
        .unwrap();
        assert_eq!(restored.event_id(), original.event_id());
        assert_eq!(restored.canonical_json(), original.canonical_json());
        assert_eq!(restored.as_object(), original.as_object());
        assert_eq!(restored.room_id(), original.room_id());

        let restored_create = Pdu::from_storage(
            version,
            create.event_id().to_owned(),
            create.canonical_json().to_owned(),
        )
        .unwrap();
        assert_eq!(restored_create.room_id(), create.room_id());

        // The stored id is trusted, not recomputed.
        let trusted = Pdu::from_storage(
            version,
            OwnedEventId::try_from("$stored").unwrap(),
            original.canonical_json().to_owned(),
        )
        .unwrap();
        assert_eq!(trusted.event_id(), "$stored");
    });
}

#[test]
fn non_canonical_input_is_stored_in_canonical_form() {
    let version = RoomVersion::V11;
    let create = create_event(version, &user("alice"));
    let signed = message(version, &create);
    let pretty = serde_json::to_string_pretty(signed.pdu()).unwrap();
    assert_ne!(pretty, signed.canonical_json());

    let pdu = Pdu::from_json(version, &pretty).unwrap();
    assert_eq!(pdu.canonical_json(), signed.canonical_json());
    assert_eq!(pdu.event_id(), signed.event_id());
}

/// Room versions 1 and 2: the id is the PDU's own `event_id`, and cited
/// events are `[id, {"sha256": hash}]` pairs
/// ([v1 event format](https://spec.matrix.org/v1.16/rooms/v1/#event-format)).
#[test]
fn versions_1_and_2_read_the_event_id_field_and_cited_pairs() {
    for_each_version!(where |v| v.has_origin_chosen_event_ids(), |version| {
        let create = create_event(version, &user("alice"));
        let signed = message(version, &create);
        let pdu = Pdu::from_json(version, signed.canonical_json()).unwrap();
        assert_eq!(pdu.event_id(), signed.event_id());
        assert!(pdu.event_id().as_str().ends_with(":a.test"));
        assert_eq!(pdu.prev_events(), [create.event_id().to_owned()]);
        assert_eq!(pdu.auth_events(), [create.event_id().to_owned()]);

        let mut missing = object_of(&signed);
        missing.remove("event_id");
        assert_matches!(
            Pdu::from_object(version, missing),
            Err(PduError::MissingField { field: "event_id" })
        );
        let mut bare_ids = object_of(&signed);
        bare_ids.insert(
            "prev_events".to_owned(),
            CanonicalJsonValue::Array(vec![CanonicalJsonValue::String(
                create.event_id().to_string(),
            )]),
        );
        assert_matches!(
            Pdu::from_object(version, bare_ids),
            Err(PduError::InvalidField { field: "prev_events", .. })
        );
    });
}

#[test]
fn tampered_header_yields_a_different_event_id() {
    for_each_version!(where |v| !v.has_origin_chosen_event_ids(), |version| {
        let create = create_event(version, &user("alice"));
        let signed = message(version, &create);
        let mut object = object_of(&signed);
        object.insert(
            "depth".to_owned(),
            CanonicalJsonValue::Integer(99_u32.into()),
        );

        let pdu = Pdu::from_object(version, object).unwrap();
        assert_ne!(pdu.event_id(), signed.event_id());
    });
}

/// The reference hash covers the *redacted* event and the content hash, not
/// the content itself: a PDU with forged content keeps its id, and only
/// `myelin_crypto::verify_event` (the caller's job, before auth) notices.
#[test]
fn tampered_content_keeps_the_event_id_so_callers_must_verify_the_content_hash() {
    for_each_version!(|version| {
        let create = create_event(version, &user("alice"));
        let signed = message(version, &create);
        let mut object = object_of(&signed);
        let Some(CanonicalJsonValue::Object(content)) = object.get_mut("content") else {
            panic!("content is an object");
        };
        content.insert(
            "body".to_owned(),
            CanonicalJsonValue::String("forged".to_owned()),
        );

        let pdu = Pdu::from_object(version, object).unwrap();
        assert_eq!(pdu.event_id(), signed.event_id());

        let key = testing::key();
        let mut public_keys = myelin_crypto::PublicKeyMap::new();
        public_keys
            .entry("a.test".to_owned())
            .or_default()
            .insert(key.key_id().to_string(), key.public_key());
        let verified =
            myelin_crypto::verify_event(&public_keys, &version.id(), pdu.as_object()).unwrap();
        assert_eq!(verified, myelin_crypto::Verified::SignaturesOnly);
    });
}

#[test]
fn embedded_event_id_must_be_the_reference_hash() {
    let version = RoomVersion::V11;
    let create = create_event(version, &user("alice"));
    let signed = message(version, &create);

    let mut wrong = object_of(&signed);
    wrong.insert(
        "event_id".to_owned(),
        CanonicalJsonValue::String("$forged".to_owned()),
    );
    assert_matches!(
        Pdu::from_object(version, wrong),
        Err(PduError::EventIdMismatch { claimed, .. }) if claimed == "$forged"
    );
}

#[test]
fn state_event_exposes_its_state_map_key() {
    for_each_version!(|version| {
        let create = create_event(version, &user("alice"));
        assert!(create.is_state());
        assert_eq!(create.state_key(), Some(""));
        assert_eq!(
            create.state_map_key(),
            Some((StateEventType::RoomCreate, String::new()))
        );
    });
}

#[test]
fn each_required_field_is_required() {
    for_each_version!(|version| {
        let create = create_event(version, &user("alice"));
        let signed = message(version, &create);
        for field in [
            "type",
            "sender",
            "room_id",
            "content",
            "prev_events",
            "auth_events",
            "depth",
            "origin_server_ts",
            "hashes",
            "signatures",
        ] {
            let mut object = object_of(&signed);
            object.remove(field);
            assert_matches!(
                Pdu::from_object(version, object),
                Err(PduError::MissingField { field: missing }) if missing == field,
                "removing `{field}` in version {version}"
            );
        }
    });
}

#[test]
fn fields_of_the_wrong_type_are_refused() {
    let version = RoomVersion::V11;
    let create = create_event(version, &user("alice"));
    let signed = message(version, &create);
    let cases = [
        ("type", CanonicalJsonValue::Integer(1_u32.into())),
        (
            "sender",
            CanonicalJsonValue::String("not a user id".to_owned()),
        ),
        ("room_id", CanonicalJsonValue::String("no sigil".to_owned())),
        ("state_key", CanonicalJsonValue::Bool(true)),
        ("content", CanonicalJsonValue::String("text".to_owned())),
        ("prev_events", CanonicalJsonValue::String("$a".to_owned())),
        (
            "auth_events",
            CanonicalJsonValue::Array(vec![CanonicalJsonValue::Integer(1_u32.into())]),
        ),
        ("depth", CanonicalJsonValue::Integer((-1_i32).into())),
        (
            "origin_server_ts",
            CanonicalJsonValue::String("now".to_owned()),
        ),
        ("hashes", CanonicalJsonValue::Array(vec![])),
        ("signatures", CanonicalJsonValue::Null),
    ];
    for (field, value) in cases {
        let mut object = object_of(&signed);
        object.insert(field.to_owned(), value);
        assert_matches!(
            Pdu::from_object(version, object),
            Err(PduError::InvalidField { field: bad, .. }) if bad == field,
            "bad `{field}`"
        );
    }
}

#[test]
fn identifiers_longer_than_255_bytes_are_refused() {
    let version = RoomVersion::V11;
    let create = create_event(version, &user("alice"));
    let mut new = new_pdu(
        Some(create.room_id().to_owned()),
        &user("alice"),
        "m.room.member",
        Some(&format!("@{}:a.test", "x".repeat(250))),
        json!({ "membership": "join" }),
    );
    new.auth_events = vec![create.event_id().to_owned()];
    let signed = testing::sign(version, new);
    assert_matches!(
        Pdu::from_json(version, signed.canonical_json()),
        Err(PduError::InvalidField {
            field: "state_key",
            ..
        })
    );
}

#[test]
fn more_than_20_prev_events_or_10_auth_events_are_refused() {
    let version = RoomVersion::V11;
    let create = create_event(version, &user("alice"));
    let many: Vec<OwnedEventId> = (0..21)
        .map(|i| OwnedEventId::try_from(format!("$event{i}")).unwrap())
        .collect();

    let mut new = new_pdu(
        Some(legacy_room_id()),
        &user("alice"),
        "m.room.message",
        None,
        json!({}),
    );
    new.prev_events = many.clone();
    new.auth_events = vec![create.event_id().to_owned()];
    let signed = testing::sign(version, new);
    assert_matches!(
        Pdu::from_json(version, signed.canonical_json()),
        Err(PduError::InvalidField {
            field: "prev_events",
            ..
        })
    );

    let mut new = new_pdu(
        Some(legacy_room_id()),
        &user("alice"),
        "m.room.message",
        None,
        json!({}),
    );
    new.auth_events = many[..11].to_vec();
    let signed = testing::sign(version, new);
    assert_matches!(
        Pdu::from_json(version, signed.canonical_json()),
        Err(PduError::InvalidField {
            field: "auth_events",
            ..
        })
    );

    // The limits themselves are allowed.
    let mut new = new_pdu(
        Some(legacy_room_id()),
        &user("alice"),
        "m.room.message",
        None,
        json!({}),
    );
    new.prev_events = many[..20].to_vec();
    new.auth_events = many[..10].to_vec();
    let signed = testing::sign(version, new);
    Pdu::from_json(version, signed.canonical_json()).unwrap();
}

#[test]
fn pdu_of_exactly_the_size_limit_is_accepted_and_one_byte_more_refused() {
    let version = RoomVersion::V11;
    let build = |padding: usize| {
        let new = new_pdu(
            Some(legacy_room_id()),
            &user("alice"),
            "m.room.message",
            None,
            json!({ "body": "x".repeat(padding) }),
        );
        testing::sign(version, new)
    };
    // Signature and hash have fixed lengths, so size grows with the padding.
    let probe = build(1000).canonical_json().len();
    let at_limit = build(1000 + MAX_PDU_BYTES - probe);
    assert_eq!(at_limit.canonical_json().len(), MAX_PDU_BYTES);
    Pdu::from_json(version, at_limit.canonical_json()).unwrap();

    // ruma cannot hash a larger event, so grow the stored text by hand.
    let mut object = object_of(&at_limit);
    object.insert(
        "unsigned".to_owned(),
        CanonicalJsonValue::Object(Default::default()),
    );
    let too_big = to_canonical_string(&object);
    assert!(too_big.len() > MAX_PDU_BYTES);
    assert_matches!(
        Pdu::from_json(version, &too_big),
        Err(PduError::TooLarge { size }) if size == too_big.len()
    );
}

#[test]
fn version_12_create_event_has_no_room_id_field_but_a_derived_room_id() {
    let create = create_event(RoomVersion::V12, &user("alice"));
    let derived = room_id_from_create_event(&RoomVersionId::V12, create.as_object()).unwrap();
    assert_eq!(create.room_id(), derived);
    assert_eq!(Event::room_id(&create), None);
    assert_eq!(
        create.room_id().as_str()[1..],
        create.event_id().as_str()[1..]
    );

    // Versions 10 and 11 write the room id in the create event.
    for version in [RoomVersion::V10, RoomVersion::V11] {
        let create = create_event(version, &user("alice"));
        assert_eq!(Event::room_id(&create), Some(room_id!("!room:a.test")));
    }
}

#[test]
fn version_12_create_event_with_a_room_id_is_refused() {
    let create = create_event(RoomVersion::V12, &user("alice"));
    let mut object = create.as_object().clone();
    object.insert(
        "room_id".to_owned(),
        CanonicalJsonValue::String("!room:a.test".to_owned()),
    );
    assert_matches!(
        Pdu::from_object(RoomVersion::V12, object),
        Err(PduError::InvalidField {
            field: "room_id",
            ..
        })
    );
}

#[test]
fn version_12_event_citing_the_create_event_is_refused() {
    let create = create_event(RoomVersion::V12, &user("alice"));
    let mut new = new_pdu(
        Some(create.room_id().to_owned()),
        &user("alice"),
        "m.room.message",
        None,
        json!({}),
    );
    new.auth_events = vec![create.event_id().to_owned()];
    let signed = testing::sign(RoomVersion::V12, new);
    assert_matches!(
        Pdu::from_json(RoomVersion::V12, signed.canonical_json()),
        Err(PduError::InvalidField {
            field: "auth_events",
            ..
        })
    );
}

#[test]
fn redacts_is_read_from_the_top_level_before_v11_and_from_content_after() {
    let target = OwnedEventId::try_from("$target").unwrap();
    for_each_version!(|version| {
        let create = create_event(version, &user("alice"));
        let mut new = new_pdu(
            Some(create.room_id().to_owned()),
            &user("alice"),
            "m.room.redaction",
            None,
            json!({}),
        );
        new.redacts = Some(target.clone());
        let signed = testing::sign(version, new);
        let in_content = signed
            .pdu()
            .get("content")
            .and_then(|content| match content {
                CanonicalJsonValue::Object(content) => content.get("redacts"),
                _ => None,
            })
            .is_some();
        assert_eq!(in_content, version.rules().redaction.content_field_redacts);
        assert_eq!(in_content, version >= RoomVersion::V11);

        let pdu = Pdu::from_json(version, signed.canonical_json()).unwrap();
        assert_eq!(pdu.redacts(), Some(&*target));
        assert_eq!(Event::redacts(&pdu), Some(&target));
    });
}

#[test]
fn state_res_event_trait_reads_the_same_fields() {
    for_each_version!(|version| {
        let create = create_event(version, &user("alice"));
        let pdu = Pdu::from_signed(version, message(version, &create)).unwrap();
        assert_eq!(Event::event_id(&pdu).as_str(), pdu.event_id().as_str());
        assert_eq!(Event::room_id(&pdu), Some(pdu.room_id()));
        assert_eq!(Event::sender(&pdu), pdu.sender());
        assert_eq!(Event::event_type(&pdu), pdu.kind());
        assert_eq!(Event::content(&pdu).get(), pdu.content().get());
        assert_eq!(Event::state_key(&pdu), None);
        assert_eq!(
            Event::prev_events(&pdu).collect::<Vec<_>>(),
            pdu.prev_events().iter().collect::<Vec<_>>()
        );
        assert_eq!(
            Event::auth_events(&pdu).collect::<Vec<_>>(),
            pdu.auth_events().iter().collect::<Vec<_>>()
        );
        assert_eq!(Event::origin_server_ts(&pdu), pdu.origin_server_ts());
        assert!(!Event::rejected(&pdu));
    });
}

#[test]
fn debug_output_names_ids_but_not_content() {
    let version = RoomVersion::V11;
    let create = create_event(version, &user("alice"));
    let pdu = Pdu::from_signed(version, message(version, &create)).unwrap();
    let debug = format!("{pdu:?}");
    assert!(debug.contains(pdu.event_id().as_str()));
    assert!(!debug.contains("secret words"));
}

#[test]
fn clones_share_one_allocation() {
    let pdu = create_event(RoomVersion::V11, &user("alice"));
    let clone = pdu.clone();
    assert!(Arc::ptr_eq(&pdu.0, &clone.0));
}

#[test]
fn pdu_can_be_shared_across_tasks() {
    fn assert_send_sync<T: Send + Sync + 'static>() {}
    assert_send_sync::<Pdu>();
    assert_send_sync::<PduError>();
}

/// Events hashed, signed and given their ids by Synapse 1.163.2, copied from
/// myelin-crypto's `SYNAPSE_VECTORS` (crypto/src/event/tests.rs, generated
/// by crypto/tests/vectors/synapse_vectors.py): for room versions 10, 11 and
/// 12, a create event and a message citing it.
const SYNAPSE_EVENTS: &[(RoomVersion, &str, &str)] = &[
    (
        RoomVersion::V10,
        r#"{"auth_events":[],"content":{"creator":"@a:domain","room_version":"10"},"depth":1,"hashes":{"sha256":"tziz37kOM4eLmR2A/fGV8f8aH1I9Yvt5kWSkjDbzxNQ"},"origin_server_ts":1000000,"prev_events":[],"room_id":"!r:domain","sender":"@a:domain","signatures":{"domain":{"ed25519:1":"3ChYfNQRzVZJKxJzZ0jG2ko71yQM3uwRJGT7vEn53WnVCBCguYiM4A2UGa0oFr1nsJv05ESX7+JAR0QbeS9BDw"}},"state_key":"","type":"m.room.create","unsigned":{"age_ts":1000000}}"#,
        "$y8K173pAZAN1ERgehkNItZgN1s9dNpL0yI1SPFR5UaM",
    ),
    (
        RoomVersion::V10,
        r#"{"auth_events":["$y8K173pAZAN1ERgehkNItZgN1s9dNpL0yI1SPFR5UaM"],"content":{"body":"Here is the message content","msgtype":"m.text"},"depth":2,"hashes":{"sha256":"94LjHtgq8xIiaOy+jpb4AZ0hLUshalRZUPMc8R4/Kj8"},"origin":"domain","origin_server_ts":1000001,"prev_events":["$y8K173pAZAN1ERgehkNItZgN1s9dNpL0yI1SPFR5UaM"],"room_id":"!r:domain","sender":"@a:domain","signatures":{"domain":{"ed25519:1":"gAIlTr5KIgWzAp7jEeMZ414z9xmzzoLPHDHQKy4Cjle5bRQC5BHh/GhR589N7Ea3Z3+AvRfuUFjEEXs8mPZoCA"}},"type":"m.room.message","unsigned":{"age_ts":1000001}}"#,
        "$h3l4-MfEY7c3wl_Ve8zLQCwzoqpE_3UTSihvPtnOtHA",
    ),
    (
        RoomVersion::V11,
        r#"{"auth_events":[],"content":{"room_version":"11"},"depth":1,"hashes":{"sha256":"Ps8hj2OnOSibP5U0izvS/z5UPtQOT8z73SfvK0W6pVs"},"origin_server_ts":1000000,"prev_events":[],"room_id":"!r:domain","sender":"@a:domain","signatures":{"domain":{"ed25519:1":"OI+uCll0cQ9vXNik6QUgcOo/yHWIX26rWf9/MC84N0NhKyxORYd+akxAGiDvAOpNuwolPC7ppu62g6JkIQSdCw"}},"state_key":"","type":"m.room.create","unsigned":{"age_ts":1000000}}"#,
        "$_WsicK13CXN4QWf5RJ6rPliYN2yXg-86tTo-KGVWkhk",
    ),
    (
        RoomVersion::V11,
        r#"{"auth_events":["$_WsicK13CXN4QWf5RJ6rPliYN2yXg-86tTo-KGVWkhk"],"content":{"body":"Here is the message content","msgtype":"m.text"},"depth":2,"hashes":{"sha256":"xM46w07QwA1t3GxS/DFeeGLIVC6fxNDWUKPVpTXX3fA"},"origin":"domain","origin_server_ts":1000001,"prev_events":["$_WsicK13CXN4QWf5RJ6rPliYN2yXg-86tTo-KGVWkhk"],"room_id":"!r:domain","sender":"@a:domain","signatures":{"domain":{"ed25519:1":"B0m7qNCYd48XrnJrU8FBw6+O21PV4QpxCRlC+JwM+A4eoa8o8W4suOTkJvPOk1rGZYVDRkwpTyLysJytwnqjBg"}},"type":"m.room.message","unsigned":{"age_ts":1000001}}"#,
        "$nwGtFxmaKNegn88NlPxI-esOv-D8thbGoIlCXIc_60w",
    ),
    (
        RoomVersion::V12,
        r#"{"auth_events":[],"content":{"room_version":"12"},"depth":1,"hashes":{"sha256":"ccqBumrNf46eCfIkdZSYW9RNafS0xFYYDm5rnZBSVJU"},"origin_server_ts":1000000,"prev_events":[],"sender":"@a:domain","signatures":{"domain":{"ed25519:1":"0iTJ32BZFymf41Y7UBttP2wZ0JTo6UjsLDQuf+79LB+WeKVfoLyR2I8RF23ZdFgCuxtjVBl5MKXIOWP+ocELDw"}},"state_key":"","type":"m.room.create","unsigned":{"age_ts":1000000}}"#,
        "$P5-6WTYQ_woy6f4nmleE0XqxjtZcyKGza5_gDN-KAdM",
    ),
    (
        RoomVersion::V12,
        r#"{"auth_events":[],"content":{"body":"Here is the message content","msgtype":"m.text"},"depth":2,"hashes":{"sha256":"y/g5ZbQLCmrdxnCp9mAuk2ypXrvenCZINp17e+pIvCg"},"origin":"domain","origin_server_ts":1000001,"prev_events":["$P5-6WTYQ_woy6f4nmleE0XqxjtZcyKGza5_gDN-KAdM"],"room_id":"!P5-6WTYQ_woy6f4nmleE0XqxjtZcyKGza5_gDN-KAdM","sender":"@a:domain","signatures":{"domain":{"ed25519:1":"T+XYlBCnm4jyyP1xcxrhzF0g7jvHVUkWnFtJLvVf0ho9wnJmScNUZ6QmhLiB5HFhHsJBN6EqS3CnF92ZBbrAAw"}},"type":"m.room.message","unsigned":{"age_ts":1000001}}"#,
        "$2USzM8wZaVneZ6b_mYDHJeucMpnlyol_VjDAejU7UkU",
    ),
];

#[test]
fn events_signed_by_synapse_parse_with_synapses_event_ids() {
    for (version, json, event_id) in SYNAPSE_EVENTS {
        let pdu = Pdu::from_json(*version, json).unwrap();
        assert_eq!(pdu.event_id(), *event_id, "room version {version}");
        assert_eq!(pdu.canonical_json(), *json);
        assert_eq!(pdu.sender(), "@a:domain");
    }
    // Version 12: the create event's id names the room.
    let (_, create, _) = SYNAPSE_EVENTS[4];
    let (_, message, _) = SYNAPSE_EVENTS[5];
    let create = Pdu::from_json(RoomVersion::V12, create).unwrap();
    let message = Pdu::from_json(RoomVersion::V12, message).unwrap();
    assert_eq!(create.room_id(), message.room_id());
    assert_eq!(
        create.room_id(),
        "!P5-6WTYQ_woy6f4nmleE0XqxjtZcyKGza5_gDN-KAdM"
    );
}
