//! The rules on changing `m.room.power_levels`.

use super::*;

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
        if !version.are_creators_privileged() {
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
    for_each_version!(where |v| v.rules().authorization.integer_power_levels, |version| {
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

/// Before room version 10 power levels may be strings holding integers
/// ([v10](https://spec.matrix.org/v1.16/rooms/v10/#values-in-mroompower_levels-events-must-be-integers)),
/// and they count as the integers they hold.
#[test]
fn string_power_levels_are_accepted_and_honoured_before_v10() {
    for_each_version!(where |v| !v.rules().authorization.integer_power_levels, |version| {
        let mut room = TestRoom::standard(version);
        let mut pl = power_levels(version, json!({ "@bob:a.test": "50" }));
        pl["ban"] = json!("60");
        room.send("alice", "m.room.power_levels", Some(""), pl)
            .unwrap_or_else(|error| panic!("room version {version}: {error}"));
        assert_eq!(
            rule(room.member("bob", "charlie", "ban")),
            member_rule(MembershipState::Ban),
            "room version {version}: bob (\"50\") is below the ban level (\"60\")"
        );
        room.member("bob", "charlie", "leave")
            .unwrap_or_else(|error| panic!("room version {version}: bob kicks at \"50\": {error}"));
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
        if version.are_creators_privileged() {
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
