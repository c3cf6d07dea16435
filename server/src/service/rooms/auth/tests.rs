//! One or more tests per authorization rule, each run on every supported room
//! version where the rule is shared. Rooms are built with
//! [`TestRoom`](crate::service::rooms::testing::TestRoom): real signed PDUs,
//! auth events picked by [`auth_events_for`], checked by [`check_auth`].

use std::fmt::Debug;

use ruma::{OwnedEventId, OwnedRoomId, events::room::member::MembershipState, owned_event_id};
use serde_json::{Value as JsonValue, json};

use super::*;
use crate::service::rooms::testing::{
    TestRoom, assert_matches, for_each_version, new_pdu, pdu, power_levels, user,
};

/// The rule a refused event failed (panics if it was allowed).
fn rule<T: Debug>(result: Result<T, AuthError>) -> AuthRule {
    match result {
        Ok(value) => panic!("expected a refusal, got {value:?}"),
        Err(error) => error.rule().clone(),
    }
}

fn member_rule(membership: MembershipState) -> AuthRule {
    AuthRule::Member(Some(membership))
}

/// alice replaces the power levels with `pl` (she is creator/admin).
fn set_power_levels(room: &mut TestRoom, pl: JsonValue) {
    room.ok("alice", "m.room.power_levels", Some(""), pl);
}

fn set_join_rule(room: &mut TestRoom, rule: JsonValue) {
    room.ok("alice", "m.room.join_rules", Some(""), rule);
}

fn membership_event(room: &mut TestRoom, sender: &str, target: &str, body: JsonValue) -> Pdu {
    let target = user(target);
    room.build(sender, "m.room.member", Some(target.as_str()), body)
}

/// A restricted join rule allowing members of some other room.
fn restricted(kind: &str) -> JsonValue {
    json!({
        "join_rule": kind,
        "allow": [{ "type": "m.room_membership", "room_id": "!space:a.test" }],
    })
}

// ---- m.room.create ---------------------------------------------------------

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

// ---- m.room.member: join ---------------------------------------------------

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

// ---- m.room.member: invite -------------------------------------------------

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

// ---- m.room.member: leave, kick --------------------------------------------

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

// ---- m.room.member: ban, unban ---------------------------------------------

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

// ---- m.room.member: knock --------------------------------------------------

#[test]
fn knocking_is_allowed_in_knock_and_knock_restricted_rooms() {
    for_each_version!(|version| {
        let mut room = TestRoom::standard(version);
        set_join_rule(&mut room, json!({ "join_rule": "knock" }));
        room.member("dave", "dave", "knock").unwrap();
        set_join_rule(&mut room, restricted("knock_restricted"));
        room.member("erin", "erin", "knock").unwrap();
    });
}

#[test]
fn knocking_on_a_public_or_invite_only_room_is_rejected() {
    for_each_version!(|version| {
        let mut room = TestRoom::standard(version);
        let knock = member_rule(MembershipState::Knock);
        assert_eq!(rule(room.member("dave", "dave", "knock")), knock);
        set_join_rule(&mut room, json!({ "join_rule": "invite" }));
        assert_eq!(rule(room.member("dave", "dave", "knock")), knock);
    });
}

#[test]
fn knocking_for_someone_else_or_while_joined_is_rejected() {
    for_each_version!(|version| {
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
    for_each_version!(|version| {
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

// ---- join rules: restricted ------------------------------------------------

#[test]
fn restricted_join_without_an_authorising_user_is_rejected() {
    for_each_version!(|version| {
        for kind in ["restricted", "knock_restricted"] {
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
    for_each_version!(|version| {
        for kind in ["restricted", "knock_restricted"] {
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
    for_each_version!(|version| {
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
    for_each_version!(|version| {
        let mut room = TestRoom::standard(version);
        set_join_rule(&mut room, restricted("restricted"));
        room.member("alice", "dave", "invite").unwrap();
        room.member("dave", "dave", "join").unwrap();
    });
}

// ---- power levels: what each level governs ---------------------------------

#[test]
fn users_default_applies_to_unlisted_users() {
    for_each_version!(|version| {
        let mut room = TestRoom::standard(version);
        let topic = json!({ "topic": "t" });
        assert_eq!(
            rule(room.send("charlie", "m.room.topic", Some(""), topic.clone())),
            AuthRule::PowerLevel
        );
        let mut pl = power_levels(version, json!({ "@bob:a.test": 50 }));
        pl["users_default"] = json!(50);
        set_power_levels(&mut room, pl);
        room.send("charlie", "m.room.topic", Some(""), topic)
            .unwrap();
    });
}

#[test]
fn events_default_governs_message_events() {
    for_each_version!(|version| {
        let mut room = TestRoom::standard(version);
        room.message("charlie").unwrap();
        let mut pl = power_levels(version, json!({ "@bob:a.test": 50 }));
        pl["events_default"] = json!(10);
        set_power_levels(&mut room, pl);
        assert_eq!(rule(room.message("charlie")), AuthRule::PowerLevel);
        room.message("bob").unwrap();
    });
}

#[test]
fn state_default_governs_state_events() {
    for_each_version!(|version| {
        let mut room = TestRoom::standard(version);
        let name = json!({ "name": "n" });
        assert_eq!(
            rule(room.send("charlie", "m.room.name", Some(""), name.clone())),
            AuthRule::PowerLevel
        );
        room.send("bob", "m.room.name", Some(""), name).unwrap();
    });
}

#[test]
fn per_event_levels_override_the_defaults() {
    for_each_version!(|version| {
        let mut room = TestRoom::standard(version);
        let mut pl = power_levels(version, json!({ "@bob:a.test": 50 }));
        pl["events"]["m.room.topic"] = json!(0);
        pl["events"]["m.room.message"] = json!(10);
        set_power_levels(&mut room, pl);
        room.send("charlie", "m.room.topic", Some(""), json!({ "topic": "t" }))
            .unwrap();
        assert_eq!(rule(room.message("charlie")), AuthRule::PowerLevel);
    });
}

#[test]
fn redaction_needs_the_power_level_of_its_event_type() {
    for_each_version!(|version| {
        let mut room = TestRoom::standard(version);
        let target = room.message("bob").unwrap();
        let redact = |room: &mut TestRoom| {
            let mut new = room.new_event("charlie", "m.room.redaction", None, json!({}));
            new.redacts = Some(target.event_id().to_owned());
            let redaction = room.sign(new);
            room.check(&redaction)
        };
        // The `redact` level (50) is applied when redacting, not by auth.
        redact(&mut room).unwrap();
        let mut pl = power_levels(version, json!({ "@bob:a.test": 50 }));
        pl["events"]["m.room.redaction"] = json!(50);
        set_power_levels(&mut room, pl);
        assert_eq!(rule(redact(&mut room)), AuthRule::PowerLevel);
    });
}

#[test]
fn state_key_naming_another_user_is_rejected() {
    for_each_version!(|version| {
        let mut room = TestRoom::standard(version);
        assert_eq!(
            rule(room.send(
                "bob",
                "org.example.status",
                Some("@charlie:a.test"),
                json!({})
            )),
            AuthRule::StateKeyOwnership
        );
        room.send("bob", "org.example.status", Some("@bob:a.test"), json!({}))
            .unwrap();
    });
}

#[test]
fn third_party_invite_needs_the_invite_level() {
    for_each_version!(|version| {
        let mut room = TestRoom::standard(version);
        let mut pl = power_levels(version, json!({ "@bob:a.test": 50 }));
        pl["invite"] = json!(50);
        set_power_levels(&mut room, pl);
        let body =
            json!({ "display_name": "d", "key_validity_url": "https://x", "public_key": "AAAA" });
        assert_eq!(
            rule(room.send(
                "charlie",
                "m.room.third_party_invite",
                Some("token"),
                body.clone()
            )),
            AuthRule::ThirdPartyInvite
        );
        room.send("bob", "m.room.third_party_invite", Some("token"), body)
            .unwrap();
    });
}

#[test]
fn user_power_level_follows_power_levels_and_v12_creators() {
    for_each_version!(|version| {
        let mut room = TestRoom::new(version, "alice");
        room.join("alice");
        let level = |room: &TestRoom, name: &str| {
            user_power_level(version, &user(name), |kind, key| {
                room.state_event(kind, key)
            })
            .unwrap()
        };
        let creator = if version == RoomVersion::V12 {
            UserPowerLevel::Infinite
        } else {
            UserPowerLevel::Int(ruma::int!(100))
        };
        // Without power levels: the creator 100 (infinite in v12), others 0.
        assert_eq!(level(&room, "alice"), creator);
        assert_eq!(level(&room, "bob"), UserPowerLevel::Int(ruma::int!(0)));
        let mut pl = power_levels(version, json!({ "@bob:a.test": 50 }));
        pl["users_default"] = json!(3);
        set_power_levels(&mut room, pl);
        assert_eq!(level(&room, "alice"), creator);
        assert_eq!(level(&room, "bob"), UserPowerLevel::Int(ruma::int!(50)));
        assert_eq!(level(&room, "charlie"), UserPowerLevel::Int(ruma::int!(3)));
    });
}

/// Redactions apply to events from the redacting user's own server, or with
/// the `redact` level. Users on b.test: a moderator at 50 and zed at 0.
#[test]
fn redaction_applies_with_the_redact_level_or_from_the_same_server() {
    for_each_version!(|version| {
        let mut room = TestRoom::standard(version);
        set_power_levels(
            &mut room,
            power_levels(version, json!({ "@bob:a.test": 50, "@mod:b.test": 50 })),
        );
        room.join("@mod:b.test");
        room.join("@zed:b.test");
        let charlies = room.message("charlie").unwrap();
        let zeds = room.message("@zed:b.test").unwrap();
        let allowed = |room: &mut TestRoom, sender: &str, target: &Pdu| {
            let mut new = room.new_event(sender, "m.room.redaction", None, json!({}));
            new.redacts = Some(target.event_id().to_owned());
            let redaction = room.sign(new);
            room.check(&redaction).unwrap();
            is_redaction_allowed(version, &redaction, target, |kind, key| {
                room.state_event(kind, key)
            })
            .unwrap()
        };
        assert!(allowed(&mut room, "@mod:b.test", &charlies));
        assert!(!allowed(&mut room, "@zed:b.test", &charlies));
        assert!(allowed(&mut room, "@zed:b.test", &zeds));
        assert!(allowed(&mut room, "bob", &zeds));

        let mut pl = power_levels(version, json!({ "@bob:a.test": 50, "@mod:b.test": 50 }));
        pl["redact"] = json!(60);
        set_power_levels(&mut room, pl);
        assert!(!allowed(&mut room, "@mod:b.test", &charlies));
        assert!(!allowed(&mut room, "bob", &zeds));
        assert!(allowed(&mut room, "alice", &zeds));
    });
}

// ---- m.room.power_levels: changing them ------------------------------------

/// A standard room where bob (50) may send `m.room.power_levels`, erin is a
/// second moderator (50) and `kick` is set above bob, at 75.
fn room_where_bob_may_edit_power_levels(version: RoomVersion) -> (TestRoom, JsonValue) {
    let mut room = TestRoom::standard(version);
    let mut pl = power_levels(version, json!({ "@bob:a.test": 50, "@erin:a.test": 50 }));
    pl["events"]["m.room.power_levels"] = json!(50);
    pl["kick"] = json!(75);
    set_power_levels(&mut room, pl.clone());
    room.join("erin");
    (room, pl)
}

fn bob_sets(room: &mut TestRoom, pl: JsonValue) -> Result<Pdu, AuthError> {
    room.send("bob", "m.room.power_levels", Some(""), pl)
}

#[test]
fn power_levels_cannot_raise_a_user_above_the_sender() {
    for_each_version!(|version| {
        let (mut room, pl) = room_where_bob_may_edit_power_levels(version);
        let mut raise = pl.clone();
        raise["users"]["@charlie:a.test"] = json!(51);
        assert_eq!(
            rule(bob_sets(&mut room, raise)),
            AuthRule::PowerLevelsChange
        );
        let mut raise_own = pl.clone();
        raise_own["users"]["@bob:a.test"] = json!(60);
        assert_eq!(
            rule(bob_sets(&mut room, raise_own)),
            AuthRule::PowerLevelsChange
        );
        let mut equal = pl;
        equal["users"]["@charlie:a.test"] = json!(50);
        bob_sets(&mut room, equal).unwrap();
    });
}

#[test]
fn power_levels_cannot_demote_a_user_at_or_above_the_sender_except_oneself() {
    for_each_version!(|version| {
        let (mut room, pl) = room_where_bob_may_edit_power_levels(version);
        let mut demote_peer = pl.clone();
        demote_peer["users"]["@erin:a.test"] = json!(0);
        assert_eq!(
            rule(bob_sets(&mut room, demote_peer)),
            AuthRule::PowerLevelsChange
        );
        if version != RoomVersion::V12 {
            let mut demote_admin = pl.clone();
            demote_admin["users"]["@alice:a.test"] = json!(0);
            assert_eq!(
                rule(bob_sets(&mut room, demote_admin)),
                AuthRule::PowerLevelsChange
            );
        }
        let mut demote_self = pl;
        demote_self["users"]["@bob:a.test"] = json!(10);
        bob_sets(&mut room, demote_self).unwrap();
    });
}

#[test]
fn power_levels_cannot_change_a_level_above_the_sender_or_set_one_above() {
    for_each_version!(|version| {
        let (mut room, pl) = room_where_bob_may_edit_power_levels(version);
        // `kick` is 75, above bob.
        let mut lower_kick = pl.clone();
        lower_kick["kick"] = json!(50);
        assert_eq!(
            rule(bob_sets(&mut room, lower_kick)),
            AuthRule::PowerLevelsChange
        );
        let mut raise_ban = pl.clone();
        raise_ban["ban"] = json!(60);
        assert_eq!(
            rule(bob_sets(&mut room, raise_ban)),
            AuthRule::PowerLevelsChange
        );
        // Event levels: history_visibility is 100, above bob.
        let mut lower_event = pl.clone();
        lower_event["events"]["m.room.history_visibility"] = json!(50);
        assert_eq!(
            rule(bob_sets(&mut room, lower_event)),
            AuthRule::PowerLevelsChange
        );
        let mut high_event = pl.clone();
        high_event["events"]["m.room.topic"] = json!(60);
        assert_eq!(
            rule(bob_sets(&mut room, high_event)),
            AuthRule::PowerLevelsChange
        );
        // Within bob's power, all of these are fine.
        let mut fine = pl;
        fine["ban"] = json!(40);
        fine["events"]["m.room.topic"] = json!(40);
        fine["users_default"] = json!(5);
        bob_sets(&mut room, fine).unwrap();
    });
}

#[test]
fn plain_member_cannot_grant_itself_power() {
    for_each_version!(|version| {
        let mut room = TestRoom::standard(version);
        let mut escalate = power_levels(version, json!({ "@bob:a.test": 50 }));
        escalate["users"]["@charlie:a.test"] = json!(100);
        assert_eq!(
            rule(room.send("charlie", "m.room.power_levels", Some(""), escalate)),
            AuthRule::PowerLevel
        );
    });
}

#[test]
fn power_levels_must_be_integers() {
    for_each_version!(|version| {
        let mut room = TestRoom::standard(version);
        let mut pl = power_levels(version, json!({ "@bob:a.test": 50 }));
        pl["ban"] = json!("50");
        assert_eq!(
            rule(room.send("alice", "m.room.power_levels", Some(""), pl)),
            AuthRule::PowerLevelsChange
        );
        let mut pl = power_levels(version, json!({ "@bob:a.test": "50" }));
        pl["ban"] = json!(50);
        assert_eq!(
            rule(room.send("alice", "m.room.power_levels", Some(""), pl)),
            AuthRule::PowerLevelsChange
        );
    });
}

#[test]
fn creator_power_comes_from_power_levels_before_v12_and_is_infinite_from_v12() {
    for_each_version!(|version| {
        let mut room = TestRoom::standard(version);
        // alice drops herself from `users` (before v12 she is listed at 100).
        let mut pl = power_levels(version, json!({ "@bob:a.test": 50 }));
        pl["users"].as_object_mut().unwrap().remove("@alice:a.test");
        set_power_levels(&mut room, pl);
        let name = room.send("alice", "m.room.name", Some(""), json!({ "name": "n" }));
        if version == RoomVersion::V12 {
            name.unwrap();
        } else {
            assert_eq!(rule(name), AuthRule::PowerLevel);
        }
    });
}

#[test]
fn version_12_creators_cannot_be_listed_in_power_levels_or_banned() {
    let version = RoomVersion::V12;
    let mut room = TestRoom::standard(version);
    let listed = json!({ "users": { "@alice:a.test": 100 } });
    assert_eq!(
        rule(room.send("alice", "m.room.power_levels", Some(""), listed)),
        AuthRule::PowerLevelsChange
    );
    set_power_levels(
        &mut room,
        power_levels(version, json!({ "@bob:a.test": 100 })),
    );
    assert_eq!(
        rule(room.member("bob", "alice", "ban")),
        member_rule(MembershipState::Ban)
    );
}

#[test]
fn version_12_additional_creators_have_creator_power() {
    let version = RoomVersion::V12;
    let create = pdu(
        version,
        new_pdu(
            None,
            &user("alice"),
            "m.room.create",
            Some(""),
            json!({ "room_version": "12", "additional_creators": ["@bob:a.test"] }),
        ),
    );
    let mut room = TestRoom::with_create(version, create);
    room.join("alice");
    room.ok(
        "alice",
        "m.room.power_levels",
        Some(""),
        power_levels(version, json!({})),
    );
    room.ok(
        "alice",
        "m.room.join_rules",
        Some(""),
        json!({ "join_rule": "public" }),
    );
    room.join("bob");
    // bob is not in `users`, yet may change anything, and may not be listed.
    room.send(
        "bob",
        "m.room.power_levels",
        Some(""),
        power_levels(version, json!({ "@charlie:a.test": 99 })),
    )
    .unwrap();
    assert_eq!(
        rule(room.send(
            "alice",
            "m.room.power_levels",
            Some(""),
            power_levels(version, json!({ "@bob:a.test": 100 }))
        )),
        AuthRule::PowerLevelsChange
    );
}

// ---- forged and invalid events ---------------------------------------------

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
                (version != RoomVersion::V12)
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
        if version == RoomVersion::V10 {
            body["creator"] = json!("@alice:a.test");
        }
        let create = pdu(
            version,
            new_pdu(
                (version != RoomVersion::V12).then(crate::service::rooms::testing::legacy_room_id),
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

// ---- auth events selection -------------------------------------------------

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
        if version != RoomVersion::V12 {
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
    for_each_version!(|version| {
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
