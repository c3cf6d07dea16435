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

mod create;
mod forged;
mod invariants;
mod join_rules;
mod membership;
mod power_levels;
mod power_levels_change;
mod selection;

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
