//! The `m.room.create` rules.

use super::*;

#[test]
fn create_event_passes_auth() {
    for_each_version!(|version| {
        let room = TestRoom::new(version, "alice");
        check_auth(version, &room.create, room.fetch(), |_, _| None).unwrap();
    });
}

#[test]
fn create_event_with_prev_events_is_rejected() {
    for_each_version!(|version| {
        let room = TestRoom::new(version, "alice");
        let mut new = new_pdu(
            room.create
                .as_object()
                .get("room_id")
                .map(|_| room.room_id()),
            &user("alice"),
            "m.room.create",
            Some(""),
            json!({ "creator": "@alice:a.test", "room_version": version.to_string() }),
        );
        new.prev_events = vec![owned_event_id!("$earlier")];
        let create = pdu(version, new);
        assert_eq!(
            rule(check_auth_events(version, &create, room.fetch())),
            AuthRule::Create
        );
    });
}

#[test]
fn create_event_whose_room_id_is_on_another_server_is_rejected() {
    for version in [RoomVersion::V10, RoomVersion::V11] {
        let create = pdu(
            version,
            new_pdu(
                Some(OwnedRoomId::try_from("!room:b.test").unwrap()),
                &user("alice"),
                "m.room.create",
                Some(""),
                json!({ "creator": "@alice:a.test", "room_version": version.to_string() }),
            ),
        );
        assert_eq!(
            rule(check_auth_events(version, &create, |_| None)),
            AuthRule::Create
        );
    }
}

#[test]
fn version_10_create_event_needs_a_creator_but_version_11_does_not() {
    let build = |version: RoomVersion| {
        pdu(
            version,
            new_pdu(
                Some(OwnedRoomId::try_from("!room:a.test").unwrap()),
                &user("alice"),
                "m.room.create",
                Some(""),
                json!({ "room_version": version.to_string() }),
            ),
        )
    };
    let error =
        check_auth_events(RoomVersion::V10, &build(RoomVersion::V10), |_| None).unwrap_err();
    assert_eq!(error.rule(), &AuthRule::Create);
    assert!(error.reason().contains("creator"), "{error}");
    check_auth_events(RoomVersion::V11, &build(RoomVersion::V11), |_| None).unwrap();
}

#[test]
fn version_12_additional_creators_must_be_user_ids() {
    let version = RoomVersion::V12;
    let create = pdu(
        version,
        new_pdu(
            None,
            &user("alice"),
            "m.room.create",
            Some(""),
            json!({ "room_version": "12", "additional_creators": ["not a user id"] }),
        ),
    );
    assert_eq!(
        rule(check_auth_events(version, &create, |_| None)),
        AuthRule::Create
    );
}

#[test]
fn only_the_creator_may_join_right_after_the_create_event() {
    for_each_version!(|version| {
        let mut room = TestRoom::new(version, "alice");
        let mut other = room.clone();
        assert_eq!(
            rule(other.member("bob", "bob", "join")),
            member_rule(MembershipState::Join)
        );
        room.member("alice", "alice", "join").unwrap();
    });
}
