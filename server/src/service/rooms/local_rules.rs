//! What this server adds to the authorization rules for the events its own
//! users ask it to sign (spec-notes/threat-model.md, "one road").
//!
//! The authorization rules say which events any server may accept. Some
//! events, though, carry a promise only their signing server can keep: a
//! join to a restricted room names an authoriser, and the signature of the
//! authoriser's server vouches that the joining user is a member of an
//! allowed room. Other events are shapes no endpoint should build for a
//! client (a second `m.room.create`, a redaction that is also state). Both
//! are decided here, on the built event, for every route that writes to a
//! room: the dedicated endpoints, the generic state and send endpoints and
//! `createRoom` alike.
//!
//! Pure: the caller hands in the built event and a lookup of the current
//! state, and does what the answer asks (look up the joining user's rooms,
//! the invitee's account) under the room's lock.

use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, OwnedRoomId, OwnedUserId, ServerName, UserId,
    events::TimelineEventType,
};
use serde::Deserialize;

use super::pdu::Pdu;

/// Why a client may not have the server build an event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LocalRuleError {
    /// An event shape no client route may build.
    #[error("{0}")]
    NotClientWritable(&'static str),
    /// The join names an authoriser on another server, whose promise this
    /// server cannot make.
    #[error("the authorising user must be on this server")]
    RemoteAuthoriser,
}

/// What the caller must still check, outside the pure rules, before the
/// event may be signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    /// Nothing more.
    None,
    /// A join to a restricted room: `user` must be joined to one of `rooms`
    /// (evaluated by this server, against current state).
    MemberOfOneOf {
        /// The joining user.
        user: OwnedUserId,
        /// The rooms the join rules allow.
        rooms: Vec<OwnedRoomId>,
    },
    /// An invite: `user` must exist (on this server; federation is not
    /// there yet).
    ExistingUser(OwnedUserId),
}

/// Refuses the event shapes no client route may build. Type and state key
/// are copied verbatim into the event, so this runs before it is built
/// (some of these shapes cannot be built at all).
///
/// # Errors
/// [`LocalRuleError::NotClientWritable`].
pub fn check_shape(
    kind: &TimelineEventType,
    state_key: Option<&str>,
) -> Result<(), LocalRuleError> {
    match (kind, state_key) {
        (TimelineEventType::RoomCreate, _) => Err(LocalRuleError::NotClientWritable(
            "m.room.create is sent only by createRoom",
        )),
        (TimelineEventType::RoomRedaction, Some(_)) => Err(LocalRuleError::NotClientWritable(
            "m.room.redaction is not a state event: use the redact or send endpoint",
        )),
        (TimelineEventType::RoomMember, None) => Err(LocalRuleError::NotClientWritable(
            "m.room.member is a state event: use the membership or state endpoints",
        )),
        _ => Ok(()),
    }
}

/// Whether a user whose membership is `membership` may ask for this event
/// at all. Outsiders (never in the room, left, banned) may only ask to join
/// or knock; everything else gets the same answer as for a room that does
/// not exist, so that what the authorization rules would say (which names
/// the rule, and so whom the event targets) tells an outsider nothing.
pub fn may_act_in(
    membership: Option<&str>,
    sender: &UserId,
    kind: &TimelineEventType,
    state_key: Option<&str>,
    content: &CanonicalJsonObject,
) -> bool {
    if matches!(membership, Some("join" | "invite" | "knock")) {
        return true;
    }
    *kind == TimelineEventType::RoomMember
        && state_key == Some(sender.as_str())
        && matches!(
            content.get("membership"),
            Some(CanonicalJsonValue::String(m)) if m == "join" || m == "knock"
        )
}

/// Checks a built local event and says what remains to check.
///
/// `membership_of` answers the current membership of a user id (`join`,
/// `invite`, ...), `join_rules` the current `m.room.join_rules` event.
///
/// # Errors
/// [`LocalRuleError`] for an event a client may not build.
pub fn check<'s>(
    pdu: &Pdu,
    server_name: &ServerName,
    membership_of: impl Fn(&str) -> Option<&'s str>,
    join_rules: Option<&Pdu>,
) -> Result<Requirement, LocalRuleError> {
    check_shape(pdu.kind(), pdu.state_key())?;
    match (pdu.kind(), pdu.state_key()) {
        (TimelineEventType::RoomMember, Some(target)) => {
            member_requirement(pdu, target, server_name, membership_of, join_rules)
        }
        _ => Ok(Requirement::None),
    }
}

/// The rooms a restricted room's join rules allow, or `None` when the room
/// is not restricted (or its rules cannot be read, in which case the
/// authorization rules refuse joins anyway).
pub fn allowed_rooms(join_rules: &Pdu) -> Option<Vec<OwnedRoomId>> {
    #[derive(Deserialize)]
    struct JoinRules {
        join_rule: String,
        #[serde(default)]
        allow: Vec<serde_json::Value>,
    }
    #[derive(Deserialize)]
    struct AllowCondition {
        #[serde(rename = "type")]
        kind: String,
        room_id: OwnedRoomId,
    }
    let rules = serde_json::from_str::<JoinRules>(join_rules.content().get()).ok()?;
    if !matches!(rules.join_rule.as_str(), "restricted" | "knock_restricted") {
        return None;
    }
    // Conditions of other types, or malformed ones, allow no one.
    let rooms = rules
        .allow
        .into_iter()
        .filter_map(|condition| serde_json::from_value::<AllowCondition>(condition).ok())
        .filter(|condition| condition.kind == "m.room_membership")
        .map(|condition| condition.room_id)
        .collect();
    Some(rooms)
}

fn member_requirement<'s>(
    pdu: &Pdu,
    target: &str,
    server_name: &ServerName,
    membership_of: impl Fn(&str) -> Option<&'s str>,
    join_rules: Option<&Pdu>,
) -> Result<Requirement, LocalRuleError> {
    #[derive(Deserialize)]
    struct Member {
        membership: String,
        join_authorised_via_users_server: Option<OwnedUserId>,
    }
    // A member event without a readable membership fails the authorization
    // rules; nothing to add here.
    let Ok(content) = serde_json::from_str::<Member>(pdu.content().get()) else {
        return Ok(Requirement::None);
    };
    let Ok(target) = UserId::parse(target) else {
        return Ok(Requirement::None);
    };
    match content.membership.as_str() {
        "invite" => Ok(Requirement::ExistingUser(target)),
        "join" => {
            // Already joined or invited: the join rules do not apply.
            if matches!(membership_of(target.as_str()), Some("join" | "invite")) {
                return Ok(Requirement::None);
            }
            let Some(rooms) = join_rules.and_then(allowed_rooms) else {
                return Ok(Requirement::None);
            };
            if content
                .join_authorised_via_users_server
                .is_some_and(|authoriser| authoriser.server_name() != server_name)
            {
                return Err(LocalRuleError::RemoteAuthoriser);
            }
            Ok(Requirement::MemberOfOneOf {
                user: target,
                rooms,
            })
        }
        _ => Ok(Requirement::None),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::service::rooms::{
        testing::{legacy_room_id, new_pdu, pdu, user},
        version::RoomVersion,
    };

    fn event(kind: &str, state_key: Option<&str>, content: serde_json::Value) -> Pdu {
        let new = new_pdu(
            Some(legacy_room_id()),
            &user("alice"),
            kind,
            state_key,
            content,
        );
        pdu(RoomVersion::V11, new)
    }

    fn restricted_to(room: &str) -> Pdu {
        event(
            "m.room.join_rules",
            Some(""),
            json!({ "join_rule": "restricted", "allow": [
                { "type": "m.room_membership", "room_id": room },
                { "type": "m.room_membership" },
                { "type": "org.example.other", "room_id": "!x:y" },
            ] }),
        )
    }

    fn server() -> &'static ServerName {
        ruma::server_name!("a.test")
    }

    #[test]
    fn create_and_misplaced_redactions_and_members_are_not_client_writable() {
        let refused = [
            event("m.room.create", Some(""), json!({})),
            event("m.room.create", None, json!({})),
            event("m.room.redaction", Some(""), json!({ "redacts": "$x" })),
            event("m.room.member", None, json!({ "membership": "join" })),
        ];
        for pdu in refused {
            assert!(
                matches!(
                    check(&pdu, server(), |_| None, None),
                    Err(LocalRuleError::NotClientWritable(_))
                ),
                "{pdu:?}"
            );
        }
        let message = event("m.room.message", None, json!({ "body": "hi" }));
        assert_eq!(
            check(&message, server(), |_| None, None),
            Ok(Requirement::None)
        );
    }

    #[test]
    fn a_join_to_a_restricted_room_must_prove_membership_of_an_allowed_room() {
        let bob = user("bob");
        let join = event(
            "m.room.member",
            Some(bob.as_str()),
            json!({ "membership": "join", "join_authorised_via_users_server": user("alice") }),
        );
        let rules = restricted_to("!space:a.test");
        assert_eq!(
            check(&join, server(), |_| None, Some(&rules)),
            Ok(Requirement::MemberOfOneOf {
                user: bob.clone(),
                rooms: vec![OwnedRoomId::try_from("!space:a.test").unwrap()],
            })
        );
        // Invited or joined users are past the join rules.
        for already in ["invite", "join"] {
            assert_eq!(
                check(&join, server(), |_| Some(already), Some(&rules)),
                Ok(Requirement::None)
            );
        }
        // A public room asks nothing more.
        let public = event(
            "m.room.join_rules",
            Some(""),
            json!({ "join_rule": "public" }),
        );
        assert_eq!(
            check(&join, server(), |_| None, Some(&public)),
            Ok(Requirement::None)
        );
        // This server cannot vouch in another server's name.
        let remote = event(
            "m.room.member",
            Some(bob.as_str()),
            json!({ "membership": "join", "join_authorised_via_users_server": "@eve:elsewhere.test" }),
        );
        assert_eq!(
            check(&remote, server(), |_| None, Some(&rules)),
            Err(LocalRuleError::RemoteAuthoriser)
        );
    }

    #[test]
    fn invites_must_name_an_existing_user() {
        let invite = event(
            "m.room.member",
            Some(user("carol").as_str()),
            json!({ "membership": "invite" }),
        );
        assert_eq!(
            check(&invite, server(), |_| None, None),
            Ok(Requirement::ExistingUser(user("carol")))
        );
    }
}
