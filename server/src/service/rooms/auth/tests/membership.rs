//! The `m.room.member` rules: join, invite (including third-party invites),
//! leave and kick, ban and unban, knock.

use super::*;

#[test]
fn anyone_may_join_a_public_room() {
    for_each_version!(|version| {
        let mut room = TestRoom::standard(version);
        room.member("dave", "dave", "join").unwrap();
    });
}

#[test]
fn joining_an_invite_only_room_needs_an_invite() {
    for_each_version!(|version| {
        let mut room = TestRoom::standard(version);
        set_join_rule(&mut room, json!({ "join_rule": "invite" }));
        assert_eq!(
            rule(room.member("dave", "dave", "join")),
            member_rule(MembershipState::Join)
        );

        room.member("alice", "dave", "invite").unwrap();
        room.member("dave", "dave", "join").unwrap();
        // A joined member may "join" again (a profile change).
        room.member("charlie", "charlie", "join").unwrap();
    });
}

#[test]
fn nobody_may_join_on_behalf_of_another_user() {
    for_each_version!(|version| {
        let mut room = TestRoom::standard(version);
        assert_eq!(
            rule(room.member("bob", "dave", "join")),
            member_rule(MembershipState::Join)
        );
    });
}

#[test]
fn banned_user_cannot_rejoin() {
    for_each_version!(|version| {
        let mut room = TestRoom::standard(version);
        room.member("bob", "charlie", "ban").unwrap();
        let error = room.member("charlie", "charlie", "join").unwrap_err();
        assert_eq!(error.rule(), &member_rule(MembershipState::Join));
        assert!(error.reason().contains("banned"), "{error}");
    });
}

#[test]
fn member_at_the_invite_level_may_invite() {
    for_each_version!(|version| {
        let mut room = TestRoom::standard(version);
        room.member("charlie", "dave", "invite").unwrap();
    });
}

#[test]
fn invite_by_a_non_member_is_rejected() {
    for_each_version!(|version| {
        let mut room = TestRoom::standard(version);
        assert_eq!(
            rule(room.member("dave", "erin", "invite")),
            member_rule(MembershipState::Invite)
        );
    });
}

#[test]
fn invite_below_the_invite_level_is_rejected() {
    for_each_version!(|version| {
        let mut room = TestRoom::standard(version);
        let mut pl = power_levels(version, json!({ "@bob:a.test": 50 }));
        pl["invite"] = json!(50);
        set_power_levels(&mut room, pl);
        assert_eq!(
            rule(room.member("charlie", "dave", "invite")),
            member_rule(MembershipState::Invite)
        );
        room.member("bob", "dave", "invite").unwrap();
    });
}

#[test]
fn joined_or_banned_users_cannot_be_invited() {
    for_each_version!(|version| {
        let mut room = TestRoom::standard(version);
        assert_eq!(
            rule(room.member("bob", "charlie", "invite")),
            member_rule(MembershipState::Invite)
        );
        room.member("bob", "dave", "ban").unwrap();
        assert_eq!(
            rule(room.member("bob", "dave", "invite")),
            member_rule(MembershipState::Invite)
        );
    });
}

/// An invite through a third party (an identity server): allowed only if
/// `signed` carries a signature by a key the matching
/// `m.room.third_party_invite` event published, for the invited user, sent
/// by the same user who sent that event.
#[test]
fn third_party_invite_needs_the_invites_key_mxid_and_sender() {
    use myelin_crypto::{SigningKey, sign_json};
    use ruma::server_name;

    let identity = SigningKey::from_seed(&[9; 32], "0").unwrap();
    let impostor = SigningKey::from_seed(&[10; 32], "0").unwrap();
    let signed_by = |key: &SigningKey, mxid: &str| {
        let mut signed =
            crate::service::rooms::testing::content(json!({ "mxid": mxid, "token": "tok" }));
        sign_json(server_name!("id.test"), key, &mut signed).unwrap();
        json!({
            "membership": "invite",
            "third_party_invite": { "display_name": "d", "signed": signed },
        })
    };
    for_each_version!(|version| {
        let mut room = TestRoom::standard(version);
        room.ok(
            "bob",
            "m.room.third_party_invite",
            Some("tok"),
            json!({
                "display_name": "d",
                "key_validity_url": "https://id.test/isvalid",
                "public_key": serde_json::to_value(identity.public_key()).unwrap(),
            }),
        );
        let invite = member_rule(MembershipState::Invite);
        let forged = signed_by(&impostor, "@dave:a.test");
        let error = room
            .send("bob", "m.room.member", Some("@dave:a.test"), forged)
            .unwrap_err();
        assert_eq!(error.rule(), &invite);
        assert!(error.reason().contains("no signature"), "{error}");
        let other_user = signed_by(&identity, "@erin:a.test");
        assert_eq!(
            rule(room.send("bob", "m.room.member", Some("@dave:a.test"), other_user)),
            invite
        );
        let genuine = signed_by(&identity, "@dave:a.test");
        assert_eq!(
            rule(room.send(
                "charlie",
                "m.room.member",
                Some("@dave:a.test"),
                genuine.clone()
            )),
            invite
        );
        let accepted = room
            .send("bob", "m.room.member", Some("@dave:a.test"), genuine)
            .unwrap();
        let token_event =
            room.state[&(StateEventType::RoomThirdPartyInvite, "tok".to_owned())].clone();
        assert!(accepted.auth_events().contains(&token_event));
        room.member("dave", "dave", "join").unwrap();
    });
}

#[test]
fn member_may_leave_once() {
    for_each_version!(|version| {
        let mut room = TestRoom::standard(version);
        room.member("charlie", "charlie", "leave").unwrap();
        assert_eq!(
            rule(room.member("charlie", "charlie", "leave")),
            member_rule(MembershipState::Leave)
        );
    });
}

#[test]
fn invited_user_may_decline_by_leaving() {
    for_each_version!(|version| {
        let mut room = TestRoom::standard(version);
        room.member("alice", "dave", "invite").unwrap();
        room.member("dave", "dave", "leave").unwrap();
    });
}

#[test]
fn moderator_may_kick_a_less_powerful_member() {
    for_each_version!(|version| {
        let mut room = TestRoom::standard(version);
        room.member("bob", "charlie", "leave").unwrap();
    });
}

#[test]
fn kick_needs_the_kick_level_and_more_power_than_the_target() {
    for_each_version!(|version| {
        let mut room = TestRoom::standard(version);
        set_power_levels(
            &mut room,
            power_levels(version, json!({ "@bob:a.test": 50, "@erin:a.test": 50 })),
        );
        room.join("erin");
        let leave = member_rule(MembershipState::Leave);
        // Below the kick level.
        assert_eq!(rule(room.member("charlie", "erin", "leave")), leave);
        // At the kick level, but not above the target.
        assert_eq!(rule(room.member("bob", "erin", "leave")), leave);
        assert_eq!(rule(room.member("bob", "alice", "leave")), leave);
        // A non-member cannot kick at all.
        assert_eq!(rule(room.member("dave", "charlie", "leave")), leave);
    });
}

#[test]
fn moderator_may_ban_and_unban() {
    for_each_version!(|version| {
        let mut room = TestRoom::standard(version);
        room.member("bob", "charlie", "ban").unwrap();
        room.member("bob", "charlie", "leave").unwrap();
        room.member("charlie", "charlie", "join").unwrap();
    });
}

#[test]
fn ban_needs_the_ban_level_and_more_power_than_the_target() {
    for_each_version!(|version| {
        let mut room = TestRoom::standard(version);
        let ban = member_rule(MembershipState::Ban);
        assert_eq!(rule(room.member("charlie", "dave", "ban")), ban);
        assert_eq!(rule(room.member("bob", "alice", "ban")), ban);
        assert_eq!(rule(room.member("dave", "charlie", "ban")), ban);
    });
}

#[test]
fn unban_needs_the_ban_level_and_the_banned_cannot_leave() {
    for_each_version!(|version| {
        let mut room = TestRoom::standard(version);
        room.member("bob", "dave", "ban").unwrap();
        let error = room.member("charlie", "dave", "leave").unwrap_err();
        assert_eq!(error.rule(), &member_rule(MembershipState::Leave));
        assert!(error.reason().contains("unban"), "{error}");
        assert_eq!(
            rule(room.member("dave", "dave", "leave")),
            member_rule(MembershipState::Leave)
        );
    });
}

#[test]
fn knocking_is_allowed_in_knock_and_knock_restricted_rooms() {
    for_each_version!(where |v| v.rules().authorization.knock_restricted_join_rule, |version| {
        let mut room = TestRoom::standard(version);
        set_join_rule(&mut room, json!({ "join_rule": "knock" }));
        room.member("dave", "dave", "knock").unwrap();
        set_join_rule(&mut room, restricted("knock_restricted"));
        room.member("erin", "erin", "knock").unwrap();
    });
}

/// Knocking arrived in room version 7: before it a `knock` membership is
/// refused even where the join rule says `knock`.
#[test]
fn knocking_is_refused_before_v7() {
    for_each_version!(where |v| !v.rules().authorization.knocking, |version| {
        let mut room = TestRoom::standard(version);
        set_join_rule(&mut room, json!({ "join_rule": "knock" }));
        assert_eq!(
            rule(room.member("dave", "dave", "knock")),
            member_rule(MembershipState::Knock),
            "room version {version}"
        );
    });
}

#[test]
fn knocking_on_a_public_or_invite_only_room_is_rejected() {
    for_each_version!(where |v| v.rules().authorization.knocking, |version| {
        let mut room = TestRoom::standard(version);
        let knock = member_rule(MembershipState::Knock);
        assert_eq!(rule(room.member("dave", "dave", "knock")), knock);
        set_join_rule(&mut room, json!({ "join_rule": "invite" }));
        assert_eq!(rule(room.member("dave", "dave", "knock")), knock);
    });
}

#[test]
fn knocking_for_someone_else_or_while_joined_is_rejected() {
    for_each_version!(where |v| v.rules().authorization.knocking, |version| {
        let mut room = TestRoom::standard(version);
        set_join_rule(&mut room, json!({ "join_rule": "knock" }));
        let knock = member_rule(MembershipState::Knock);
        assert_eq!(rule(room.member("charlie", "dave", "knock")), knock);
        assert_eq!(rule(room.member("charlie", "charlie", "knock")), knock);
        room.member("bob", "erin", "ban").unwrap();
        assert_eq!(rule(room.member("erin", "erin", "knock")), knock);
    });
}

#[test]
fn knocking_user_may_withdraw_or_be_invited_and_join() {
    for_each_version!(where |v| v.rules().authorization.knocking, |version| {
        let mut room = TestRoom::standard(version);
        set_join_rule(&mut room, json!({ "join_rule": "knock" }));
        room.member("dave", "dave", "knock").unwrap();
        room.member("dave", "dave", "leave").unwrap();
        room.member("dave", "dave", "knock").unwrap();
        // A knock is not an invite.
        assert_eq!(
            rule(room.member("dave", "dave", "join")),
            member_rule(MembershipState::Join)
        );
        room.member("alice", "dave", "invite").unwrap();
        room.member("dave", "dave", "join").unwrap();
    });
}
