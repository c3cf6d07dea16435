//! The auth events selection for new events.

use super::*;

fn state_id(room: &TestRoom, kind: StateEventType, key: &str) -> OwnedEventId {
    room.state[&(kind, key.to_owned())].clone()
}

#[test]
fn message_cites_create_before_v12_power_levels_and_sender_membership() {
    for_each_version!(|version| {
        let mut room = TestRoom::standard(version);
        let message = room.build("charlie", "m.room.message", None, json!({}));
        let mut expected = vec![
            state_id(&room, StateEventType::RoomPowerLevels, ""),
            state_id(&room, StateEventType::RoomMember, "@charlie:a.test"),
        ];
        if !version.is_room_id_derived_from_create_event() {
            expected.push(room.create.event_id().to_owned());
        }
        let mut cited = message.auth_events().to_vec();
        cited.sort();
        expected.sort();
        assert_eq!(cited, expected);
    });
}

#[test]
fn membership_events_cite_target_join_rules_and_authorising_user() {
    for_each_version!(where |v| v.rules().authorization.restricted_join_rule, |version| {
        let mut room = TestRoom::standard(version);
        room.member("alice", "dave", "invite").unwrap();
        set_join_rule(&mut room, restricted("restricted"));
        let join = membership_event(
            &mut room,
            "erin",
            "erin",
            json!({ "membership": "join", "join_authorised_via_users_server": "@bob:a.test" }),
        );
        let cited = join.auth_events();
        assert!(cited.contains(&state_id(&room, StateEventType::RoomJoinRules, "")));
        assert!(cited.contains(&state_id(&room, StateEventType::RoomMember, "@bob:a.test")));

        // The invitee's current membership is cited when the inviter acts.
        let kick = membership_event(&mut room, "bob", "dave", json!({ "membership": "leave" }));
        assert!(kick.auth_events().contains(&state_id(
            &room,
            StateEventType::RoomMember,
            "@dave:a.test"
        )));
        // A leave does not cite the join rules.
        assert!(
            !kick
                .auth_events()
                .contains(&state_id(&room, StateEventType::RoomJoinRules, ""))
        );
    });
}

#[test]
fn third_party_invite_membership_cites_the_token_event() {
    for_each_version!(|version| {
        let types = auth_types_for_event(
            version,
            &TimelineEventType::RoomMember,
            &user("bob"),
            Some("@dave:a.test"),
            &serde_json::value::to_raw_value(&json!({
                "membership": "invite",
                "third_party_invite": {
                    "display_name": "d",
                    "signed": { "mxid": "@dave:a.test", "token": "abc", "signatures": {} },
                },
            }))
            .unwrap(),
        )
        .unwrap();
        assert!(types.contains(&(StateEventType::RoomThirdPartyInvite, "abc".to_owned())));
    });
}

#[test]
fn create_event_cites_nothing_and_unreadable_membership_is_an_error() {
    for_each_version!(|version| {
        let empty = serde_json::value::to_raw_value(&json!({})).unwrap();
        assert_eq!(
            auth_types_for_event(
                version,
                &TimelineEventType::RoomCreate,
                &user("alice"),
                Some(""),
                &empty
            )
            .unwrap(),
            vec![]
        );
        let error = auth_types_for_event(
            version,
            &TimelineEventType::RoomMember,
            &user("alice"),
            Some("@alice:a.test"),
            &empty,
        )
        .unwrap_err();
        assert_matches!(error.rule(), AuthRule::Member(None));
    });
}
