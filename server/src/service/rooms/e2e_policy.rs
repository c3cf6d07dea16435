//! The E2E-only room policy (`spec-notes/e2e-only-rooms.md`): in a room
//! whose state holds `org.myelin.room.policy` with `{"e2e_required": true}`,
//! every non-state event must be `m.room.encrypted` (or a redaction without
//! a reason), and nothing may remove or weaken the policy or the room's
//! encryption.
//!
//! Pure: the caller hands in the event it is about to sign (its type, state
//! key, content and `redacts` as the room version places them) and a lookup
//! of the room's current state, and runs the check under the room's write
//! lock so that the state it checks against is the state the event lands
//! on. Checking the built event, not the request, is what keeps every
//! route (send, state, redact, createRoom) to the same rule.

use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, EventId,
    events::{StateEventType, TimelineEventType},
};
use serde::Deserialize;

use super::pdu::Pdu;

/// The policy's state event type.
pub const POLICY_EVENT_TYPE: &str = "org.myelin.room.policy";

/// The one room encryption algorithm the spec defines, and the one an
/// E2E-only room must use.
pub const MEGOLM_ALGORITHM: &str = "m.megolm.v1.aes-sha2";

/// An event about to be added to a room.
#[derive(Debug, Clone, Copy)]
pub struct Proposed<'a> {
    /// Its type.
    pub event_type: &'a TimelineEventType,
    /// Its state key, for state events.
    pub state_key: Option<&'a str>,
    /// Its content.
    pub content: &'a CanonicalJsonObject,
    /// For redactions: the event it redacts.
    pub redacts: Option<&'a EventId>,
}

impl<'a> Proposed<'a> {
    /// The fields the policy reads, from a built event.
    pub fn of(pdu: &'a Pdu) -> Self {
        static NO_CONTENT: CanonicalJsonObject = CanonicalJsonObject::new();
        let content = match pdu.as_object().get("content") {
            Some(CanonicalJsonValue::Object(content)) => content,
            // A built PDU always has an object content; an event without
            // one reads as empty, which no rule below lets weaken anything.
            _ => &NO_CONTENT,
        };
        Self {
            event_type: pdu.kind(),
            state_key: pdu.state_key(),
            content,
            redacts: pdu.redacts(),
        }
    }
}

/// Why the policy refuses an event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// The room is E2E-only and the event would leak plaintext or weaken
    /// the policy.
    #[error("{0}")]
    E2eRequired(&'static str),
    /// A policy event that does not say what this server understands, or
    /// that the room cannot honour yet.
    #[error("{0}")]
    InvalidPolicy(&'static str),
}

/// Checks `event` against the policy of the room whose current state
/// `current` looks up.
///
/// # Errors
/// [`PolicyError`] naming the rule the event breaks.
pub fn check<'s>(
    event: Proposed<'_>,
    current: impl Fn(&StateEventType, &str) -> Option<&'s Pdu>,
) -> Result<(), PolicyError> {
    let policy = StateEventType::from(POLICY_EVENT_TYPE);
    let is_e2e_only =
        current(&policy, "").is_some_and(|pdu| is_required_policy(pdu.content().get()));
    let algorithm = current(&StateEventType::RoomEncryption, "")
        .and_then(|pdu| algorithm_of(pdu.content().get()));
    let event_type = event.event_type.to_string();

    // Whatever the event's type and state key, it may not take the policy
    // or the encryption away.
    let protected = [&policy, &StateEventType::RoomEncryption];
    if is_e2e_only
        && let Some(target) = event.redacts
        && protected
            .iter()
            .any(|kind| current(kind, "").is_some_and(|pdu| pdu.event_id() == target))
    {
        return Err(PolicyError::E2eRequired(
            "this room is end-to-end encrypted only: its policy and encryption events \
             cannot be redacted",
        ));
    }
    if let Some(state_key) = event.state_key {
        if event_type == POLICY_EVENT_TYPE {
            return check_policy_event(state_key, event.content, is_e2e_only, algorithm.as_deref());
        }
        if is_e2e_only
            && event_type == "m.room.encryption"
            && state_key.is_empty()
            && string_field(event.content, "algorithm") != algorithm.as_deref()
        {
            return Err(PolicyError::E2eRequired(
                "this room is end-to-end encrypted only: its encryption algorithm cannot change",
            ));
        }
        return Ok(());
    }
    if !is_e2e_only {
        return Ok(());
    }
    match event.event_type {
        TimelineEventType::RoomEncrypted => {
            let room_algorithm = algorithm.as_deref().unwrap_or(MEGOLM_ALGORITHM);
            if string_field(event.content, "algorithm") == Some(room_algorithm) {
                Ok(())
            } else {
                Err(PolicyError::E2eRequired(
                    "this room is end-to-end encrypted only: m.room.encrypted must use the \
                     room's algorithm",
                ))
            }
        }
        TimelineEventType::RoomRedaction => {
            // A reason is text a person typed, and redactions cannot be
            // encrypted. From room version 11 `redacts` itself is content.
            if event.content.keys().any(|key| key != "redacts") {
                return Err(PolicyError::E2eRequired(
                    "this room is end-to-end encrypted only: redactions may not carry a reason",
                ));
            }
            Ok(())
        }
        _ => Err(PolicyError::E2eRequired(
            "this room is end-to-end encrypted only: send m.room.encrypted events",
        )),
    }
}

/// Whether a policy content is exactly `{"e2e_required": true}`.
pub fn is_required_policy_content(content: &CanonicalJsonObject) -> bool {
    content.len() == 1 && content.get("e2e_required") == Some(&CanonicalJsonValue::Bool(true))
}

/// A new policy state event: only the exact required form, only with the
/// empty state key, and only where the room already encrypts with Megolm.
fn check_policy_event(
    state_key: &str,
    content: &CanonicalJsonObject,
    is_e2e_only: bool,
    algorithm: Option<&str>,
) -> Result<(), PolicyError> {
    if state_key.is_empty() && is_required_policy_content(content) {
        if algorithm == Some(MEGOLM_ALGORITHM) {
            return Ok(());
        }
        return Err(PolicyError::InvalidPolicy(
            "an E2E-only room needs m.room.encryption with m.megolm.v1.aes-sha2 first",
        ));
    }
    if is_e2e_only {
        return Err(PolicyError::E2eRequired(
            "this room is end-to-end encrypted only: the policy cannot be weakened or removed",
        ));
    }
    Err(PolicyError::InvalidPolicy(
        "org.myelin.room.policy must have state key \"\" and content {\"e2e_required\": true}",
    ))
}

fn is_required_policy(content: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(content)
        .is_ok_and(|content| content == serde_json::json!({ "e2e_required": true }))
}

fn algorithm_of(content: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct Encryption {
        algorithm: Option<String>,
    }
    serde_json::from_str::<Encryption>(content)
        .ok()
        .and_then(|encryption| encryption.algorithm)
}

fn string_field<'a>(content: &'a CanonicalJsonObject, key: &str) -> Option<&'a str> {
    match content.get(key) {
        Some(CanonicalJsonValue::String(value)) => Some(value),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use serde_json::{Value, json};

    use super::*;
    use crate::service::rooms::{
        testing::{content, legacy_room_id, new_pdu, pdu, user},
        version::RoomVersion,
    };

    /// A room's current state, built from `(type, content)` pairs with empty state keys.
    fn room(entries: &[(&str, Value)]) -> HashMap<StateEventType, Pdu> {
        entries
            .iter()
            .map(|(kind, body)| {
                let new = new_pdu(
                    Some(legacy_room_id()),
                    &user("alice"),
                    kind,
                    Some(""),
                    body.clone(),
                );
                (StateEventType::from(*kind), pdu(RoomVersion::V11, new))
            })
            .collect()
    }

    fn e2e_only() -> HashMap<StateEventType, Pdu> {
        room(&[
            (
                "m.room.encryption",
                json!({ "algorithm": MEGOLM_ALGORITHM }),
            ),
            (POLICY_EVENT_TYPE, json!({ "e2e_required": true })),
        ])
    }

    fn check_in(
        state: &HashMap<StateEventType, Pdu>,
        kind: &str,
        state_key: Option<&str>,
        body: Value,
        redacts: Option<&EventId>,
    ) -> Result<(), PolicyError> {
        let event_type = TimelineEventType::from(kind);
        let body = content(body);
        check(
            Proposed {
                event_type: &event_type,
                state_key,
                content: &body,
                redacts,
            },
            |kind, key| state.get(kind).filter(|_| key.is_empty()),
        )
    }

    fn refused(result: Result<(), PolicyError>) -> bool {
        matches!(result, Err(PolicyError::E2eRequired(_)))
    }

    #[test]
    fn only_ciphertext_and_reasonless_redactions_pass_as_messages() {
        let state = e2e_only();
        let megolm = json!({ "algorithm": MEGOLM_ALGORITHM, "ciphertext": "AwgA" });
        assert_eq!(
            check_in(&state, "m.room.encrypted", None, megolm, None),
            Ok(())
        );
        let target = EventId::parse("$other:a.test").unwrap();
        assert_eq!(
            check_in(&state, "m.room.redaction", None, json!({}), Some(&target)),
            Ok(())
        );
        for (kind, body) in [
            (
                "m.room.message",
                json!({ "msgtype": "m.text", "body": "hi" }),
            ),
            ("m.reaction", json!({})),
            ("m.sticker", json!({})),
            (
                "m.room.encrypted",
                json!({ "algorithm": "m.olm.v1.curve25519-aes-sha2" }),
            ),
            ("m.room.encrypted", json!({ "ciphertext": "no algorithm" })),
            ("m.room.redaction", json!({ "reason": "plaintext" })),
        ] {
            assert!(
                refused(check_in(&state, kind, None, body.clone(), Some(&target))),
                "{kind} {body}"
            );
        }
    }

    #[test]
    fn the_policy_and_encryption_cannot_be_weakened() {
        let state = e2e_only();
        for body in [
            json!({ "e2e_required": false }),
            json!({}),
            json!({ "e2e_required": "true" }),
            json!({ "e2e_required": true, "extra": 1 }),
        ] {
            assert!(
                refused(check_in(
                    &state,
                    POLICY_EVENT_TYPE,
                    Some(""),
                    body.clone(),
                    None
                )),
                "{body}"
            );
        }
        assert!(refused(check_in(
            &state,
            POLICY_EVENT_TYPE,
            Some("x"),
            json!({ "e2e_required": true }),
            None
        )));
        for body in [json!({}), json!({ "algorithm": "m.other" })] {
            assert!(
                refused(check_in(
                    &state,
                    "m.room.encryption",
                    Some(""),
                    body.clone(),
                    None
                )),
                "{body}"
            );
        }
        let same = json!({ "algorithm": MEGOLM_ALGORITHM, "rotation_period_ms": 604_800_000 });
        assert_eq!(
            check_in(&state, "m.room.encryption", Some(""), same, None),
            Ok(())
        );
        assert_eq!(
            check_in(
                &state,
                POLICY_EVENT_TYPE,
                Some(""),
                json!({ "e2e_required": true }),
                None
            ),
            Ok(())
        );
        for kind in [POLICY_EVENT_TYPE, "m.room.encryption"] {
            let target = state[&StateEventType::from(kind)].event_id().to_owned();
            assert!(
                refused(check_in(
                    &state,
                    "m.room.redaction",
                    None,
                    json!({}),
                    Some(&target)
                )),
                "{kind}"
            );
            // Whatever shape carries the `redacts`: a state event, or the
            // version 11 content form.
            assert!(
                refused(check_in(
                    &state,
                    "m.room.redaction",
                    Some("x"),
                    json!({ "redacts": target }),
                    Some(&target)
                )),
                "{kind} redacted by a state event"
            );
        }
        let message = EventId::parse("$message:a.test").unwrap();
        assert_eq!(
            check_in(
                &state,
                "m.room.redaction",
                None,
                json!({ "redacts": message }),
                Some(&message)
            ),
            Ok(()),
            "`redacts` in the content is not a reason"
        );
    }

    #[test]
    fn other_rooms_accept_everything_but_a_malformed_policy() {
        let plain = room(&[]);
        let encrypted = room(&[(
            "m.room.encryption",
            json!({ "algorithm": MEGOLM_ALGORITHM }),
        )]);
        for state in [&plain, &encrypted] {
            assert_eq!(
                check_in(state, "m.room.message", None, json!({ "body": "hi" }), None),
                Ok(())
            );
            assert_eq!(
                check_in(state, "m.room.encryption", Some(""), json!({}), None),
                Ok(())
            );
            assert_eq!(
                check_in(
                    state,
                    POLICY_EVENT_TYPE,
                    Some(""),
                    json!({ "e2e_required": false }),
                    None
                ),
                Err(PolicyError::InvalidPolicy(
                    "org.myelin.room.policy must have state key \"\" and content {\"e2e_required\": true}"
                ))
            );
        }
        let adopt = json!({ "e2e_required": true });
        assert_eq!(
            check_in(&encrypted, POLICY_EVENT_TYPE, Some(""), adopt.clone(), None),
            Ok(())
        );
        assert!(matches!(
            check_in(&plain, POLICY_EVENT_TYPE, Some(""), adopt, None),
            Err(PolicyError::InvalidPolicy(_))
        ));
        let other_algorithm = room(&[("m.room.encryption", json!({ "algorithm": "m.other" }))]);
        assert!(matches!(
            check_in(
                &other_algorithm,
                POLICY_EVENT_TYPE,
                Some(""),
                json!({ "e2e_required": true }),
                None
            ),
            Err(PolicyError::InvalidPolicy(_))
        ));
    }

    #[test]
    fn other_state_stays_allowed_in_an_e2e_only_room() {
        let state = e2e_only();
        assert_eq!(
            check_in(
                &state,
                "m.room.name",
                Some(""),
                json!({ "name": "x" }),
                None
            ),
            Ok(())
        );
        assert_eq!(
            check_in(
                &state,
                "m.room.member",
                Some("@bob:a.test"),
                json!({ "membership": "join" }),
                None
            ),
            Ok(())
        );
    }
}
