//! Forged and invalid events: wrong, missing or foreign auth events,
//! non-members, soft-failure against the current state, `m.federate`.

use super::*;

#[test]
fn non_member_cannot_send() {
    for_each_version!(|version| {
        let mut room = TestRoom::standard(version);
        assert_eq!(rule(room.message("dave")), AuthRule::SenderMembership);
        assert_eq!(
            rule(room.send("dave", "m.room.topic", Some(""), json!({ "topic": "t" }))),
            AuthRule::SenderMembership
        );
    });
}

#[test]
fn member_who_left_cannot_send() {
    for_each_version!(|version| {
        let mut room = TestRoom::standard(version);
        room.member("charlie", "charlie", "leave").unwrap();
        assert_eq!(rule(room.message("charlie")), AuthRule::SenderMembership);
    });
}

/// A message by charlie citing `auth_events` chosen by the test.
fn message_citing(room: &mut TestRoom, auth_events: Vec<OwnedEventId>) -> Pdu {
    let mut new = room.new_event("charlie", "m.room.message", None, json!({ "body": "x" }));
    new.auth_events = auth_events;
    room.sign(new)
}

#[test]
fn citing_an_auth_event_of_a_type_the_selection_does_not_allow_is_rejected() {
    for_each_version!(|version| {
        let mut room = TestRoom::standard(version);
        let message = room.message("bob").unwrap();
        let topic = room.ok("bob", "m.room.topic", Some(""), json!({ "topic": "t" }));
        for wrong in [message, topic] {
            let mut auth = room
                .build("charlie", "m.room.message", None, json!({}))
                .auth_events()
                .to_vec();
            auth.push(wrong.event_id().to_owned());
            let forged = message_citing(&mut room, auth);
            assert_eq!(rule(room.check(&forged)), AuthRule::AuthEvents);
        }
    });
}

#[test]
fn citing_an_auth_event_from_another_room_is_rejected() {
    for_each_version!(|version| {
        let mut room = TestRoom::standard(version);
        let other_create = pdu(
            version,
            new_pdu(
                (!version.is_room_id_derived_from_create_event())
                    .then(|| OwnedRoomId::try_from("!other:a.test").unwrap()),
                &user("alice"),
                "m.room.create",
                Some(""),
                json!({ "creator": "@alice:a.test", "room_version": version.to_string(), "other": true }),
            ),
        );
        let mut other = TestRoom::with_create(version, other_create);
        other.join("alice");
        other.ok(
            "alice",
            "m.room.join_rules",
            Some(""),
            json!({ "join_rule": "public" }),
        );
        let foreign_join = other.join("charlie");
        room.merge_events(&other);

        let mut auth = room
            .build("charlie", "m.room.message", None, json!({}))
            .auth_events()
            .to_vec();
        let own_join =
            room.state[&(StateEventType::RoomMember, "@charlie:a.test".to_owned())].clone();
        auth.retain(|id| *id != own_join);
        auth.push(foreign_join.event_id().to_owned());
        let forged = message_citing(&mut room, auth);
        let error = room.check(&forged).unwrap_err();
        assert_eq!(error.rule(), &AuthRule::AuthEvents);
        assert!(error.reason().contains("same room"), "{error}");
    });
}

#[test]
fn citing_an_unknown_or_duplicate_auth_event_is_rejected() {
    for_each_version!(|version| {
        let mut room = TestRoom::standard(version);
        let first_join =
            room.state[&(StateEventType::RoomMember, "@charlie:a.test".to_owned())].clone();
        room.send(
            "charlie",
            "m.room.member",
            Some("@charlie:a.test"),
            json!({ "membership": "join", "displayname": "C" }),
        )
        .unwrap();
        let current = room
            .build("charlie", "m.room.message", None, json!({}))
            .auth_events()
            .to_vec();

        let mut unknown = current.clone();
        unknown.push(owned_event_id!("$unknown"));
        let forged = message_citing(&mut room, unknown);
        assert_eq!(rule(room.check(&forged)), AuthRule::AuthEvents);

        let mut duplicate = current;
        duplicate.push(first_join);
        let forged = message_citing(&mut room, duplicate);
        let error = room.check(&forged).unwrap_err();
        assert_eq!(error.rule(), &AuthRule::AuthEvents);
        assert!(error.reason().contains("duplicate"), "{error}");
    });
}

#[test]
fn omitting_the_create_event_before_version_12_is_rejected() {
    for version in [RoomVersion::V10, RoomVersion::V11] {
        let mut room = TestRoom::standard(version);
        let mut auth = room
            .build("charlie", "m.room.message", None, json!({}))
            .auth_events()
            .to_vec();
        auth.retain(|id| id != room.create.event_id());
        let forged = message_citing(&mut room, auth);
        assert_eq!(rule(room.check(&forged)), AuthRule::AuthEvents);
    }
}

#[test]
fn version_12_event_in_a_room_whose_create_event_is_unknown_is_rejected() {
    let version = RoomVersion::V12;
    let mut room = TestRoom::standard(version);
    let message = room.build("charlie", "m.room.message", None, json!({}));
    room.events.remove(room.create.event_id());
    assert_eq!(rule(room.check(&message)), AuthRule::AuthEvents);
}

#[test]
fn omitting_the_sender_membership_is_rejected_even_if_the_state_has_it() {
    for_each_version!(|version| {
        let mut room = TestRoom::standard(version);
        let mut auth = room
            .build("charlie", "m.room.message", None, json!({}))
            .auth_events()
            .to_vec();
        let own_join =
            room.state[&(StateEventType::RoomMember, "@charlie:a.test".to_owned())].clone();
        auth.retain(|id| *id != own_join);
        let forged = message_citing(&mut room, auth);
        assert_eq!(
            rule(check_auth_events(version, &forged, room.fetch())),
            AuthRule::SenderMembership
        );
        // Against the current state alone it would pass: both checks matter.
        check_state(version, &forged, |kind, key| room.state_event(kind, key)).unwrap();
    });
}

#[test]
fn event_citing_stale_membership_passes_its_auth_events_but_fails_current_state() {
    for_each_version!(|version| {
        let mut room = TestRoom::standard(version);
        let stale = room.build("charlie", "m.room.message", None, json!({}));
        room.member("bob", "charlie", "ban").unwrap();
        // Received late over federation: allowed by the state it cites (so not
        // rejected), refused by the current state (so soft-failed).
        check_auth_events(version, &stale, room.fetch()).unwrap();
        assert_eq!(
            rule(check_state(version, &stale, |kind, key| room.state_event(kind, key))),
            AuthRule::SenderMembership
        );
    });
}

#[test]
fn unfederated_room_refuses_users_of_other_servers() {
    for_each_version!(|version| {
        let mut body = json!({ "room_version": version.to_string(), "m.federate": false });
        if version.has_creator_field() {
            body["creator"] = json!("@alice:a.test");
        }
        let create = pdu(
            version,
            new_pdu(
                (!version.is_room_id_derived_from_create_event())
                    .then(crate::service::rooms::testing::legacy_room_id),
                &user("alice"),
                "m.room.create",
                Some(""),
                body,
            ),
        );
        let mut room = TestRoom::with_create(version, create);
        room.join("alice");
        room.ok(
            "alice",
            "m.room.join_rules",
            Some(""),
            json!({ "join_rule": "public" }),
        );
        room.join("bob");
        assert_eq!(
            rule(room.member("@zed:b.test", "@zed:b.test", "join")),
            AuthRule::Federation
        );
    });
}
