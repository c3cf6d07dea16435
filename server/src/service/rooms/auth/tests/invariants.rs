//! Invariants over random event sequences: whatever memberships and join
//! rules a random series of (allowed or refused) events produces, the rules
//! let exactly the joined members send.

use rand::{Rng, SeedableRng, rngs::StdRng, seq::SliceRandom};

use super::*;

const USERS: [&str; 5] = ["alice", "bob", "charlie", "dave", "erin"];
const MEMBERSHIPS: [&str; 5] = ["join", "invite", "leave", "ban", "knock"];
const JOIN_RULES: [&str; 4] = ["public", "invite", "knock", "restricted"];

fn membership(room: &TestRoom, name: &str) -> Option<MembershipState> {
    let pdu = room.state_event(&StateEventType::RoomMember, user(name).as_str())?;
    #[derive(serde::Deserialize)]
    struct Content {
        membership: MembershipState,
    }
    serde_json::from_str::<Content>(pdu.content().get())
        .ok()
        .map(|content| content.membership)
}

#[test]
fn only_joined_members_can_send_after_any_sequence_of_membership_events() {
    for_each_version!(|version| {
        let mut rng = StdRng::seed_from_u64(0x6d79_656c_696e);
        let mut room = TestRoom::standard(version);
        let (mut allowed, mut refused) = (0, 0);
        for _ in 0..300 {
            let sender = *USERS.choose(&mut rng).unwrap();
            let result = if rng.gen_range(0..8) == 0 {
                let rule = *JOIN_RULES.choose(&mut rng).unwrap();
                room.send(sender, "m.room.join_rules", Some(""), restricted(rule))
            } else {
                // Half the time a user acts on itself (join, leave, knock).
                let target = if rng.gen_bool(0.5) {
                    sender
                } else {
                    *USERS.choose(&mut rng).unwrap()
                };
                let membership = *MEMBERSHIPS.choose(&mut rng).unwrap();
                room.member(sender, target, membership)
            };
            match result {
                Ok(_) => allowed += 1,
                Err(_) => refused += 1,
            }

            for name in USERS {
                let message = room.build(name, "m.room.message", None, json!({ "body": "x" }));
                let is_joined = membership(&room, name) == Some(MembershipState::Join);
                assert_eq!(
                    room.check(&message).is_ok(),
                    is_joined,
                    "{name} (membership {:?}) in room version {version}",
                    membership(&room, name)
                );
            }
        }
        // The sequence exercised both outcomes (the seed is fixed).
        assert!(
            allowed > 20 && refused > 20,
            "allowed {allowed}, refused {refused}"
        );
    });
}

#[test]
fn nobody_gains_power_from_a_sequence_of_power_level_edits_by_others() {
    // charlie (power 0) never ends up with more than users_default after any
    // number of random power-level edits by bob (50), who may only grant up
    // to his own level.
    for_each_version!(|version| {
        let mut rng = StdRng::seed_from_u64(0x0070_6f77_6572);
        let mut room = TestRoom::standard(version);
        let mut pl = power_levels(version, json!({ "@bob:a.test": 50 }));
        pl["events"]["m.room.power_levels"] = json!(50);
        set_power_levels(&mut room, pl.clone());
        for _ in 0..100 {
            let mut edit = pl.clone();
            let level = rng.gen_range(0..=100);
            edit["users"]["@charlie:a.test"] = json!(level);
            let result = room.send("bob", "m.room.power_levels", Some(""), edit);
            assert_eq!(result.is_ok(), level <= 50, "bob grants {level}");
            let charlie = user_power_level(version, &user("charlie"), |kind, key| {
                room.state_event(kind, key)
            })
            .unwrap();
            assert!(
                charlie <= UserPowerLevel::Int(ruma::int!(50)),
                "{charlie:?}"
            );
        }
    });
}
