//! The [authorization rules]: whether an event may be part of a room, given
//! the events it cites and the state it lands in.
//!
//! The rules themselves are ruma's ([`ruma::state_res`]); this module decides
//! which of them to run against what, and turns ruma's free-text refusals into
//! an [`AuthError`] that names the rule ([`AuthRule`]).
//!
//! The spec's [checks on receipt of a PDU] map onto these functions:
//!
//! 1. format: [`Pdu`] construction;
//! 2. and 3. signatures, then the content hash (redact the event if only the
//!    hash fails): [`myelin_crypto::verify_event`], **the caller's job,
//!    before anything here** (some rules, such as restricted joins via
//!    another server, assume the signatures were verified);
//! 4. "passes the authorization rules based on the event's auth events":
//!    [`check_auth_events`] (reject on failure);
//! 5. "based on the state before the event": [`check_state`] with that state
//!    (reject on failure);
//! 6. "based on the current state of the room": [`check_state`] with the
//!    current state (soft-fail on failure: store, but do not let the event
//!    change current state or reach clients).
//!
//! For an event this server creates, [`auth_events_for`] picks its
//! `auth_events` from the current state, and [`check_auth`] runs 4 and 5 in
//! one call (its auth events *are* the relevant slice of the current state).
//!
//! Rejected events are kept apart from accepted ones and never handed to
//! the lookups here (a cited rejected event is one they cannot find);
//! [`Pdu`]'s `rejected()` is accordingly always `false`.
//!
//! Note on `redact`: since room version 3 the `redact` power level is not an
//! authorization rule. An `m.room.redaction` event passes auth with the power
//! level its event type requires; whether it then *applies* to its target is
//! [`is_redaction_allowed`], which the room service asks before redacting.
//! [`user_power_level`] answers "how powerful is this user" the way the
//! rules do (creators' infinite power in version 12 included).
//!
//! [authorization rules]: https://spec.matrix.org/v1.16/server-server-api/#authorisation-rules
//! [checks on receipt of a PDU]: https://spec.matrix.org/v1.16/server-server-api/#checks-performed-on-receipt-of-a-pdu

use std::{collections::HashMap, fmt};

use myelin_crypto::NewPdu;
use ruma::{
    EventId, OwnedEventId, UserId,
    events::{
        StateEventType, TimelineEventType,
        room::{member::MembershipState, power_levels::UserPowerLevel},
    },
    int,
    state_res::{
        self,
        events::{RoomCreateEvent, RoomPowerLevelsEvent, RoomPowerLevelsIntField},
    },
};
use serde::Deserialize;
use serde_json::value::RawValue as RawJsonValue;

use super::{pdu::Pdu, version::RoomVersion};

/// The authorization rule an event failed.
///
/// The groups follow the spec's [authorization rules], in their order.
///
/// [authorization rules]: https://spec.matrix.org/v1.16/server-server-api/#authorisation-rules
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthRule {
    /// The rules for `m.room.create` (no `prev_events`, room id domain,
    /// `creator` before v11, `additional_creators` in v12).
    Create,
    /// The rules on `auth_events`: each one found, in the same room, not
    /// rejected, of a type and state key the [auth events selection] allows,
    /// no duplicates, and (before v12) the create event among them.
    ///
    /// [auth events selection]: https://spec.matrix.org/v1.16/server-server-api/#auth-events-selection
    AuthEvents,
    /// `m.federate: false` and the sender is on another server than the
    /// room's creator.
    Federation,
    /// The `m.room.member` rules for the membership the event sets (`None`
    /// if `content.membership` is missing or not a string). Kicks and
    /// unbans are `leave`.
    Member(Option<MembershipState>),
    /// The sender of a non-membership event is not joined.
    SenderMembership,
    /// The `m.room.third_party_invite` rule (sender below the invite level).
    ThirdPartyInvite,
    /// The sender's power level is below the level the event type requires.
    PowerLevel,
    /// A state key starting with `@` that is not the sender's user id.
    StateKeyOwnership,
    /// The `m.room.power_levels` rules: the new content is well formed and
    /// changes nothing the sender has no power over.
    PowerLevelsChange,
    /// Anything else: the state the event was checked against lacks a usable
    /// `m.room.create`, or a state event there is malformed.
    Other,
}

impl fmt::Display for AuthRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Create => f.write_str("m.room.create"),
            Self::AuthEvents => f.write_str("auth events"),
            Self::Federation => f.write_str("m.federate"),
            Self::Member(Some(membership)) => write!(f, "m.room.member ({membership})"),
            Self::Member(None) => f.write_str("m.room.member"),
            Self::SenderMembership => f.write_str("sender membership"),
            Self::ThirdPartyInvite => f.write_str("m.room.third_party_invite"),
            Self::PowerLevel => f.write_str("event power level"),
            Self::StateKeyOwnership => f.write_str("user state key"),
            Self::PowerLevelsChange => f.write_str("m.room.power_levels"),
            Self::Other => f.write_str("room state"),
        }
    }
}

/// An event failed the authorization rules.
///
/// The reason is ruma's description of the failed check; it names users,
/// event ids and fields, never content values.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("fails the {rule} authorization rule: {reason}")]
pub struct AuthError {
    rule: AuthRule,
    reason: String,
}

impl AuthError {
    /// The rule that failed.
    pub fn rule(&self) -> &AuthRule {
        &self.rule
    }

    /// What exactly failed.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

/// Checks `pdu` against its own `auth_events` (fetched with `fetch_event`)
/// and then against `state`: the authorization checks for an event this
/// server creates, or steps 4 and 5 of the checks on receipt with `state` the
/// state before the event.
///
/// # Errors
///
/// The first failed rule, as for [`check_auth_events`] and [`check_state`].
pub fn check_auth(
    version: RoomVersion,
    pdu: &Pdu,
    fetch_event: impl Fn(&EventId) -> Option<Pdu>,
    state: impl Fn(&StateEventType, &str) -> Option<Pdu>,
) -> Result<(), AuthError> {
    check_auth_events(version, pdu, fetch_event)?;
    check_state(version, pdu, state)
}

/// Checks `pdu` against the authorization rules using only the events it
/// cites: the rules on `auth_events` themselves, the `m.room.create` rules,
/// and every state-dependent rule with the cited events as the state (plus,
/// from version 12, the create event the room id names).
///
/// An event failing this is rejected.
///
/// # Errors
///
/// [`AuthRule::Create`] or [`AuthRule::AuthEvents`] from the
/// state-independent rules (including a cited event `fetch_event` cannot
/// find), then any rule from [`check_state`].
pub fn check_auth_events(
    version: RoomVersion,
    pdu: &Pdu,
    fetch_event: impl Fn(&EventId) -> Option<Pdu>,
) -> Result<(), AuthError> {
    let rules = &version.rules().authorization;
    state_res::check_state_independent_auth_rules(rules, pdu, &fetch_event).map_err(|reason| {
        let rule = if *pdu.kind() == TimelineEventType::RoomCreate {
            AuthRule::Create
        } else {
            AuthRule::AuthEvents
        };
        AuthError { rule, reason }
    })?;
    if *pdu.kind() == TimelineEventType::RoomCreate {
        return Ok(());
    }

    let mut auth_state = HashMap::new();
    let mut cited = pdu.auth_events().to_vec();
    if version.is_room_id_derived_from_create_event() {
        cited.extend(create_event_id(pdu));
    }
    for event_id in cited {
        // The state-independent rules above found each cited event and
        // checked that it is a state event.
        if let Some(event) = fetch_event(&event_id)
            && let Some(key) = event.state_map_key()
        {
            auth_state.insert(key, event);
        }
    }
    check_state(version, pdu, |kind, state_key| {
        auth_state
            .get(&(kind.clone(), state_key.to_owned()))
            .cloned()
    })
}

/// Checks `pdu` against the state-dependent authorization rules with `state`
/// as the room state: the state before the event (reject on failure) or the
/// current state (soft-fail on failure).
///
/// `state` maps `(event type, state key)` to the event in that state. An
/// `m.room.create` event passes trivially: its rules are state-independent.
///
/// # Errors
///
/// [`AuthRule::Federation`], [`AuthRule::Member`],
/// [`AuthRule::SenderMembership`], [`AuthRule::ThirdPartyInvite`],
/// [`AuthRule::PowerLevel`], [`AuthRule::StateKeyOwnership`],
/// [`AuthRule::PowerLevelsChange`] or [`AuthRule::Other`].
pub fn check_state(
    version: RoomVersion,
    pdu: &Pdu,
    state: impl Fn(&StateEventType, &str) -> Option<Pdu>,
) -> Result<(), AuthError> {
    let rules = &version.rules().authorization;
    state_res::check_state_dependent_auth_rules(rules, pdu, state).map_err(|reason| AuthError {
        rule: classify_state_dependent_failure(pdu, &reason),
        reason,
    })
}

/// The `(event type, state key)` pairs whose current state events a new event
/// must cite as `auth_events`, per the spec's [auth events selection]:
/// `m.room.create` (before version 12), `m.room.power_levels`, the sender's
/// `m.room.member`, and for membership events the target's `m.room.member`,
/// `m.room.join_rules` (join, invite, knock), the `m.room.third_party_invite`
/// named by a third-party invite's token, and the authorising user's
/// `m.room.member` for a restricted join (`join_authorised_via_users_server`).
///
/// An `m.room.create` event cites nothing.
///
/// # Errors
///
/// [`AuthRule::Member`] if an `m.room.member` event has no state key or no
/// readable `membership` (or a malformed third-party invite or authorising
/// user).
///
/// [auth events selection]: https://spec.matrix.org/v1.16/server-server-api/#auth-events-selection
pub fn auth_types_for_event(
    version: RoomVersion,
    kind: &TimelineEventType,
    sender: &UserId,
    state_key: Option<&str>,
    content: &RawJsonValue,
) -> Result<Vec<(StateEventType, String)>, AuthError> {
    let rules = &version.rules().authorization;
    state_res::auth_types_for_event(kind, sender, state_key, content, rules).map_err(|reason| {
        AuthError {
            rule: AuthRule::Member(membership_of(content)),
            reason,
        }
    })
}

/// The `auth_events` for a new event: the ids of the events that
/// `current_state` holds for each of [`auth_types_for_event`]'s pairs, in
/// that order, skipping pairs with no current event.
///
/// `current_state` maps `(event type, state key)` to the id of the event in
/// the room's current state.
///
/// # Errors
///
/// As for [`auth_types_for_event`].
pub fn auth_events_for(
    version: RoomVersion,
    new: &NewPdu,
    current_state: impl Fn(&StateEventType, &str) -> Option<OwnedEventId>,
) -> Result<Vec<OwnedEventId>, AuthError> {
    let content = serde_json::value::to_raw_value(&new.content).map_err(|error| AuthError {
        rule: AuthRule::Other,
        reason: format!("content does not serialise: {error}"),
    })?;
    let types = auth_types_for_event(
        version,
        &new.event_type,
        &new.sender,
        new.state_key.as_deref(),
        &content,
    )?;
    Ok(types
        .iter()
        .filter_map(|(kind, state_key)| current_state(kind, state_key))
        .collect())
}

/// `user_id`'s power level in `state`, as the authorization rules compute
/// it: infinite for the room's creators from version 12, otherwise the
/// `users` entry or `users_default` of `m.room.power_levels`, or without that
/// event 100 for the creator and 0 for everyone else.
///
/// # Errors
///
/// [`AuthRule::Other`] if `state` has no `m.room.create` event or the power
/// levels are malformed.
pub fn user_power_level(
    version: RoomVersion,
    user_id: &UserId,
    state: impl Fn(&StateEventType, &str) -> Option<Pdu>,
) -> Result<UserPowerLevel, AuthError> {
    let rules = &version.rules().authorization;
    let create = state(&StateEventType::RoomCreate, "").ok_or_else(|| AuthError {
        rule: AuthRule::Other,
        reason: "no `m.room.create` event in state".to_owned(),
    })?;
    let creators = RoomCreateEvent::new(create)
        .creators(rules)
        .map_err(other)?;
    if rules.explicitly_privilege_room_creators && creators.contains(user_id) {
        return Ok(UserPowerLevel::Infinite);
    }
    match state(&StateEventType::RoomPowerLevels, "") {
        Some(power_levels) => RoomPowerLevelsEvent::new(power_levels)
            .user_power_level(user_id, rules)
            .map(UserPowerLevel::Int)
            .map_err(other),
        None if creators.contains(user_id) => Ok(UserPowerLevel::Int(int!(100))),
        None => Ok(UserPowerLevel::Int(int!(0))),
    }
}

/// Whether `redaction` (an authorised `m.room.redaction`) may redact
/// `target`, per the [redaction rules] of room versions 3 and later: the
/// target is in the same room, and the redaction's sender is on the same
/// server as the target's sender or has at least the `redact` power level in
/// `state` (the state before the redaction).
///
/// The Client-Server API is stricter for local users (redacting someone
/// else's event needs the `redact` level even on the same server); that
/// check belongs to the redact endpoint.
///
/// # Errors
///
/// As for [`user_power_level`].
///
/// [redaction rules]: https://spec.matrix.org/v1.16/rooms/v11/#handling-redactions
pub fn is_redaction_allowed(
    version: RoomVersion,
    redaction: &Pdu,
    target: &Pdu,
    state: impl Fn(&StateEventType, &str) -> Option<Pdu>,
) -> Result<bool, AuthError> {
    if redaction.room_id() != target.room_id() {
        return Ok(false);
    }
    if redaction.sender().server_name() == target.sender().server_name() {
        return Ok(true);
    }
    let redact_level = redact_power_level(version, &state)?;
    Ok(user_power_level(version, redaction.sender(), state)? >= UserPowerLevel::Int(redact_level))
}

/// The `redact` power level of `state`'s `m.room.power_levels`, or its default.
///
/// # Errors
///
/// [`AuthRule::Other`] if the power levels are malformed.
pub fn redact_power_level(
    version: RoomVersion,
    state: impl Fn(&StateEventType, &str) -> Option<Pdu>,
) -> Result<ruma::Int, AuthError> {
    let rules = &version.rules().authorization;
    match state(&StateEventType::RoomPowerLevels, "") {
        Some(power_levels) => RoomPowerLevelsEvent::new(power_levels)
            .get_as_int_or_default(RoomPowerLevelsIntField::Redact, rules)
            .map_err(other),
        None => Ok(RoomPowerLevelsIntField::Redact.default_value()),
    }
}

fn other(reason: String) -> AuthError {
    AuthError {
        rule: AuthRule::Other,
        reason,
    }
}

/// The id of the create event a version 12 room id names.
fn create_event_id(pdu: &Pdu) -> Option<OwnedEventId> {
    let hash = pdu.room_id().as_str().strip_prefix('!')?;
    OwnedEventId::try_from(format!("${hash}")).ok()
}

/// Names the rule behind a refusal from ruma's state-dependent checks.
///
/// ruma reports failures as text; the event's type picks the rule group and
/// the few messages shared across groups are matched here. The tests in
/// `auth/tests.rs` pin each classification, so a ruma upgrade that rewords a
/// message fails them rather than silently misnaming a rule.
fn classify_state_dependent_failure(pdu: &Pdu, reason: &str) -> AuthRule {
    if reason.contains("not federated") {
        return AuthRule::Federation;
    }
    if reason.contains("`m.room.create` event") {
        return AuthRule::Other;
    }
    match pdu.kind() {
        TimelineEventType::RoomMember => AuthRule::Member(membership_of(pdu.content())),
        _ if reason.contains("sender's membership is not `join`") => AuthRule::SenderMembership,
        TimelineEventType::RoomThirdPartyInvite => AuthRule::ThirdPartyInvite,
        _ if reason.contains("enough power to send event of type") => AuthRule::PowerLevel,
        _ if reason.contains("`state_key` matching another user's ID") => {
            AuthRule::StateKeyOwnership
        }
        TimelineEventType::RoomPowerLevels => AuthRule::PowerLevelsChange,
        _ => AuthRule::Other,
    }
}

fn membership_of(content: &RawJsonValue) -> Option<MembershipState> {
    #[derive(Deserialize)]
    struct Membership {
        membership: MembershipState,
    }
    serde_json::from_str::<Membership>(content.get())
        .ok()
        .map(|content| content.membership)
}

#[cfg(test)]
mod tests;
