//! Restricted and knock-restricted join rules (the public, invite and knock
//! rules are covered with the memberships they govern).

use super::*;

#[test]
fn restricted_join_without_an_authorising_user_is_rejected() {
    for_each_version!(where |v| v.rules().authorization.restricted_join_rule, |version| {
        let knock_restricted = version.rules().authorization.knock_restricted_join_rule;
        for kind in ["restricted", "knock_restricted"]
            .into_iter()
            .filter(|kind| knock_restricted || *kind == "restricted")
        {
            let mut room = TestRoom::standard(version);
            set_join_rule(&mut room, restricted(kind));
            assert_eq!(
                rule(room.member("dave", "dave", "join")),
                member_rule(MembershipState::Join)
            );
        }
    });
}

#[test]
fn restricted_join_authorised_by_a_member_with_invite_power_is_allowed() {
    for_each_version!(where |v| v.rules().authorization.restricted_join_rule, |version| {
        let knock_restricted = version.rules().authorization.knock_restricted_join_rule;
        for kind in ["restricted", "knock_restricted"]
            .into_iter()
            .filter(|kind| knock_restricted || *kind == "restricted")
        {
            let mut room = TestRoom::standard(version);
            set_join_rule(&mut room, restricted(kind));
            let bob_member =
                room.state[&(StateEventType::RoomMember, "@bob:a.test".to_owned())].clone();
            let join = room
                .send(
                    "dave",
                    "m.room.member",
                    Some("@dave:a.test"),
                    json!({ "membership": "join", "join_authorised_via_users_server": "@bob:a.test" }),
                )
                .unwrap();
            assert!(join.auth_events().contains(&bob_member));
        }
    });
}

#[test]
fn restricted_join_authorised_by_a_non_member_or_powerless_user_is_rejected() {
    for_each_version!(where |v| v.rules().authorization.restricted_join_rule, |version| {
        let mut room = TestRoom::standard(version);
        let mut pl = power_levels(version, json!({ "@bob:a.test": 50 }));
        pl["invite"] = json!(50);
        set_power_levels(&mut room, pl);
        set_join_rule(&mut room, restricted("restricted"));
        for authoriser in ["@charlie:a.test", "@erin:a.test"] {
            let result = room.send(
                "dave",
                "m.room.member",
                Some("@dave:a.test"),
                json!({ "membership": "join", "join_authorised_via_users_server": authoriser }),
            );
            assert_eq!(
                rule(result),
                member_rule(MembershipState::Join),
                "via {authoriser}"
            );
        }
    });
}

#[test]
fn invited_user_joins_a_restricted_room_without_an_authorising_user() {
    for_each_version!(where |v| v.rules().authorization.restricted_join_rule, |version| {
        let mut room = TestRoom::standard(version);
        set_join_rule(&mut room, restricted("restricted"));
        room.member("alice", "dave", "invite").unwrap();
        room.member("dave", "dave", "join").unwrap();
    });
}

/// Restricted joins arrived in room version 8: before it a `restricted` join
/// rule admits nobody uninvited, whoever vouches.
#[test]
fn restricted_joins_are_refused_before_v8() {
    for_each_version!(where |v| !v.rules().authorization.restricted_join_rule, |version| {
        let mut room = TestRoom::standard(version);
        set_join_rule(&mut room, restricted("restricted"));
        let via_bob = room.send(
            "dave",
            "m.room.member",
            Some("@dave:a.test"),
            json!({ "membership": "join", "join_authorised_via_users_server": "@bob:a.test" }),
        );
        assert_eq!(rule(via_bob), member_rule(MembershipState::Join), "room version {version}");
        assert_eq!(
            rule(room.member("dave", "dave", "join")),
            member_rule(MembershipState::Join),
            "room version {version}"
        );
    });
}
