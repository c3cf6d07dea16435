use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, MilliSecondsSinceUnixEpoch, OwnedEventId,
    RoomVersionId, ServerName, events::TimelineEventType, owned_event_id, owned_room_id,
    owned_user_id, server_name, uint,
};

use super::{NewPdu, SignedPdu, V1EventIds, build_pdu};
use crate::{
    EventError, PublicKeyMap, Verified,
    event::tests::SYNAPSE_VECTORS,
    parse_canonical_object, reference_hash, room_id_from_create_event,
    testing::{object, spec_key},
    verify_event,
};

fn domain() -> &'static ServerName {
    server_name!("domain")
}

fn keys() -> PublicKeyMap {
    let key = spec_key();
    let mut map = PublicKeyMap::new();
    map.entry("domain".to_owned())
        .or_default()
        .insert(key.key_id().to_string(), key.public_key());
    map
}

fn create(room_version: &RoomVersionId) -> NewPdu {
    let mut content = CanonicalJsonObject::new();
    content.insert(
        "room_version".to_owned(),
        CanonicalJsonValue::String(room_version.to_string()),
    );
    if !room_version
        .rules()
        .unwrap()
        .authorization
        .use_room_create_sender
    {
        content.insert(
            "creator".to_owned(),
            CanonicalJsonValue::String("@a:domain".to_owned()),
        );
    }
    NewPdu {
        room_id: (*room_version != RoomVersionId::V12).then(|| owned_room_id!("!r:domain")),
        sender: owned_user_id!("@a:domain"),
        event_type: TimelineEventType::RoomCreate,
        state_key: Some(String::new()),
        content,
        prev_events: vec![],
        auth_events: vec![],
        depth: uint!(1),
        origin_server_ts: MilliSecondsSinceUnixEpoch(uint!(1_000_000)),
        redacts: None,
        v1_ids: None,
    }
}

fn redaction(room_version: &RoomVersionId, create_id: OwnedEventId) -> NewPdu {
    NewPdu {
        room_id: Some(owned_room_id!("!r:domain")),
        event_type: TimelineEventType::RoomRedaction,
        state_key: None,
        content: object(r#"{"reason":"spam"}"#),
        prev_events: vec![create_id.clone()],
        auth_events: vec![create_id],
        depth: uint!(2),
        redacts: Some(owned_event_id!("$target")),
        ..create(room_version)
    }
}

/// The create events of [`SYNAPSE_VECTORS`] (Synapse 1.163.2, see there) carry
/// nothing `build_pdu` leaves out except `unsigned`, which no hash or
/// signature covers: the built events must match Synapse's hashes, signatures
/// and ids exactly.
#[test]
fn built_create_events_match_synapse() {
    for vector in SYNAPSE_VECTORS.iter().step_by(2) {
        let version = &vector.room_version;
        let built = build_pdu(create(version), domain(), &spec_key(), version).unwrap();
        let mut expected = parse_canonical_object(vector.signed).unwrap();
        expected.remove("unsigned");
        assert_eq!(built.pdu(), &expected, "room version {version}");
        assert_eq!(
            built.event_id().as_str(),
            vector.event_id,
            "room version {version}"
        );
        assert_eq!(
            built.canonical_json(),
            crate::to_canonical_string(&expected),
            "room version {version}"
        );
    }
}

#[test]
fn built_events_verify() {
    for version in [
        RoomVersionId::V3,
        RoomVersionId::V4,
        RoomVersionId::V5,
        RoomVersionId::V6,
        RoomVersionId::V7,
        RoomVersionId::V8,
        RoomVersionId::V9,
        RoomVersionId::V10,
        RoomVersionId::V11,
        RoomVersionId::V12,
    ] {
        let built = build_pdu(create(&version), domain(), &spec_key(), &version).unwrap();
        let received = parse_canonical_object(built.canonical_json()).unwrap();
        assert_eq!(
            verify_event(&keys(), &version, &received).unwrap(),
            Verified::All
        );
    }
}

#[test]
fn room_version_12_create_defines_the_room_id() {
    let built = build_pdu(
        create(&RoomVersionId::V12),
        domain(),
        &spec_key(),
        &RoomVersionId::V12,
    )
    .unwrap();
    let room_id = room_id_from_create_event(&RoomVersionId::V12, built.pdu()).unwrap();
    assert_eq!(&room_id.as_str()[1..], &built.event_id().as_str()[1..]);
}

#[test]
fn redacts_moves_into_content_from_room_version_11() {
    let v10 = build_pdu(
        redaction(&RoomVersionId::V10, owned_event_id!("$create")),
        domain(),
        &spec_key(),
        &RoomVersionId::V10,
    )
    .unwrap();
    assert!(v10.canonical_json().contains(r#""redacts":"$target""#));
    assert_eq!(
        v10.pdu()["redacts"],
        CanonicalJsonValue::String("$target".to_owned())
    );
    assert_eq!(
        v10.pdu()["content"],
        CanonicalJsonValue::Object(object(r#"{"reason":"spam"}"#))
    );

    let v11 = build_pdu(
        redaction(&RoomVersionId::V11, owned_event_id!("$create")),
        domain(),
        &spec_key(),
        &RoomVersionId::V11,
    )
    .unwrap();
    assert!(!v11.pdu().contains_key("redacts"));
    assert_eq!(
        v11.pdu()["content"],
        CanonicalJsonValue::Object(object(r#"{"reason":"spam","redacts":"$target"}"#))
    );
}

#[test]
fn room_id_presence_is_checked_against_the_room_version() {
    let mut missing = create(&RoomVersionId::V11);
    missing.room_id = None;
    assert!(matches!(
        build_pdu(missing, domain(), &spec_key(), &RoomVersionId::V11),
        Err(EventError::Malformed(_))
    ));

    let mut present = create(&RoomVersionId::V12);
    present.room_id = Some(owned_room_id!("!r:domain"));
    assert!(matches!(
        build_pdu(present, domain(), &spec_key(), &RoomVersionId::V12),
        Err(EventError::Malformed(_))
    ));

    // A non-create event in room version 12 still needs its room id.
    let mut message = redaction(&RoomVersionId::V12, owned_event_id!("$create"));
    message.room_id = None;
    assert!(matches!(
        build_pdu(message, domain(), &spec_key(), &RoomVersionId::V12),
        Err(EventError::Malformed(_))
    ));
}

fn v1_ids(event_id: OwnedEventId, cited: &[(&OwnedEventId, &SignedPdu)]) -> V1EventIds {
    let reference_hashes = cited
        .iter()
        .map(|(id, pdu)| {
            let hash = reference_hash(&RoomVersionId::V1, pdu.pdu()).unwrap();
            ((*id).clone(), hash)
        })
        .collect();
    V1EventIds {
        event_id,
        reference_hashes,
    }
}

/// Room versions 1 and 2 ([v1 event format]): the origin's id in `event_id`,
/// cited events as `[id, {"sha256": reference hash}]`, and a signature the
/// spec's checks (which for these versions include the event id's server)
/// accept.
///
/// [v1 event format]: https://spec.matrix.org/v1.16/rooms/v1/#event-format
#[test]
fn versions_1_and_2_carry_the_origin_chosen_id_and_hashed_references() {
    for version in [RoomVersionId::V1, RoomVersionId::V2] {
        let create_id = owned_event_id!("$create:domain");
        let mut new = create(&version);
        new.v1_ids = Some(v1_ids(create_id.clone(), &[]));
        let created = build_pdu(new, domain(), &spec_key(), &version).unwrap();
        assert_eq!(created.event_id(), &create_id);
        assert_eq!(
            created.pdu()["event_id"],
            CanonicalJsonValue::String("$create:domain".to_owned())
        );

        let mut new = redaction(&version, create_id.clone());
        new.v1_ids = Some(v1_ids(
            owned_event_id!("$second:domain"),
            &[(&create_id, &created)],
        ));
        let built = build_pdu(new, domain(), &spec_key(), &version).unwrap();
        let hash = reference_hash(&version, created.pdu()).unwrap();
        let reference = format!(r#"[["$create:domain",{{"sha256":"{hash}"}}]]"#);
        assert!(
            built
                .canonical_json()
                .contains(&format!(r#""prev_events":{reference}"#)),
            "room version {version}: {}",
            built.canonical_json()
        );
        assert!(
            built
                .canonical_json()
                .contains(&format!(r#""auth_events":{reference}"#))
        );
        let received = parse_canonical_object(built.canonical_json()).unwrap();
        assert_eq!(
            verify_event(&keys(), &version, &received).unwrap(),
            Verified::All
        );
    }
}

#[test]
fn v1_ids_must_match_the_room_version() {
    assert!(matches!(
        build_pdu(
            create(&RoomVersionId::V1),
            domain(),
            &spec_key(),
            &RoomVersionId::V1
        ),
        Err(EventError::Malformed(_))
    ));
    let mut new = create(&RoomVersionId::V3);
    new.v1_ids = Some(v1_ids(owned_event_id!("$x:domain"), &[]));
    assert!(matches!(
        build_pdu(new, domain(), &spec_key(), &RoomVersionId::V3),
        Err(EventError::Malformed(_))
    ));

    // A cited event without its hash cannot be written in the v1 format.
    let mut new = redaction(&RoomVersionId::V1, owned_event_id!("$create:domain"));
    new.v1_ids = Some(v1_ids(owned_event_id!("$x:domain"), &[]));
    assert!(matches!(
        build_pdu(new, domain(), &spec_key(), &RoomVersionId::V1),
        Err(EventError::Malformed(_))
    ));
}

/// Room version 3 writes the reference hash in standard base64 and version 4
/// in URL-safe base64 ([v3](https://spec.matrix.org/v1.16/rooms/v3/#event-ids),
/// [v4](https://spec.matrix.org/v1.16/rooms/v4/#event-ids)): with the same
/// rules otherwise, the ids differ exactly in those two characters.
#[test]
fn version_3_ids_use_standard_base64_and_version_4_url_safe() {
    let mut saw_special = false;
    for ts in 0..64_u32 {
        let ids = [RoomVersionId::V3, RoomVersionId::V4].map(|version| {
            let mut new = create(&version);
            new.content.remove("room_version");
            new.origin_server_ts = MilliSecondsSinceUnixEpoch(ts.into());
            build_pdu(new, domain(), &spec_key(), &version)
                .unwrap()
                .event_id()
                .to_string()
        });
        let [v3, v4] = ids;
        assert!(!v3.contains(['-', '_']), "{v3}");
        assert!(!v4.contains(['+', '/']), "{v4}");
        assert_eq!(v3.replace('+', "-").replace('/', "_"), v4);
        saw_special |= v3.contains(['+', '/']);
    }
    assert!(saw_special, "no id exercised the two differing characters");
}
