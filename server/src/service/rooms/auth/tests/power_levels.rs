//! What each power level governs, user power levels and redactions.

use super::*;

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
        let creator = if version.are_creators_privileged() {
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
