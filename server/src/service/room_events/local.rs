//! Local events: what this server builds, signs and vouches for when its
//! own users ask, on top of a room's current state.

use std::collections::HashMap;

use myelin_crypto::{NewPdu, V1EventIds, build_pdu};
use rand::{Rng, distributions::Alphanumeric};
use ruma::{
    CanonicalJsonObject, EventId, MilliSecondsSinceUnixEpoch, OwnedDeviceId, OwnedEventId,
    OwnedRoomId, OwnedUserId, RoomId, UInt, UserId,
    events::{StateEventType, TimelineEventType, room::power_levels::UserPowerLevel},
};

use super::RoomEvents;
use crate::service::{
    ServiceError,
    rooms::{
        auth::{
            AuthError, auth_events_for, check_auth, is_redaction_allowed, redact_power_level,
            user_power_level,
        },
        e2e_policy::{self, PolicyError},
        local_rules::{self, LocalRuleError, Requirement},
        pdu::{Pdu, PduError},
        state::RoomState,
        version::RoomVersion,
    },
};

/// An event a local user asks to add to a room.
#[derive(Debug, Clone)]
pub struct LocalEvent {
    /// Who sends it.
    pub sender: OwnedUserId,
    /// Its type.
    pub event_type: TimelineEventType,
    /// Its state key, for state events.
    pub state_key: Option<String>,
    /// Its content, exactly as the client wrote it (opaque to the server
    /// except where the authorization rules or redaction read it).
    pub content: CanonicalJsonObject,
    /// For `m.room.redaction`: the event to redact.
    pub redacts: Option<OwnedEventId>,
    /// The client transaction that sends it, for idempotent retries.
    pub transaction: Option<Transaction>,
}

/// A client transaction: the spec scopes its id to the device and the
/// request path.
#[derive(Debug, Clone)]
pub struct Transaction {
    /// The sending device.
    pub device_id: OwnedDeviceId,
    /// The id scoped to its endpoint (see [`transaction_key`]).
    pub key: String,
    /// The id as the client sent it.
    pub txn_id: String,
}

impl RoomEvents {
    /// Builds and signs the event on top of `state`, then checks it.
    pub(super) fn build(
        &self,
        state: &RoomState,
        room_id: Option<OwnedRoomId>,
        event: &LocalEvent,
        origin_server_ts: MilliSecondsSinceUnixEpoch,
    ) -> Result<Pdu, ServiceError> {
        let version = state.version;
        let depth = UInt::try_from(state.depth() + 1)
            .map_err(|_| ServiceError::Internal("room depth overflow".to_owned()))?;
        let mut new = NewPdu {
            room_id,
            sender: event.sender.clone(),
            event_type: event.event_type.clone(),
            state_key: event.state_key.clone(),
            content: event.content.clone(),
            prev_events: state
                .extremities()
                .iter()
                .map(|pdu| pdu.event_id().to_owned())
                .collect(),
            auth_events: Vec::new(),
            depth,
            origin_server_ts,
            redacts: event.redacts.clone(),
            v1_ids: None,
        };
        new.auth_events = auth_events_for(version, &new, |kind, key| {
            state.get(kind, key).map(|pdu| pdu.event_id().to_owned())
        })
        .map_err(|e| ServiceError::Forbidden(e.to_string()))?;
        if version.has_origin_chosen_event_ids() {
            new.v1_ids = Some(self.v1_ids(state, &new)?);
        }
        let signed = build_pdu(
            new,
            self.keys.server_name(),
            self.keys.current(),
            &version.id(),
        )
        .map_err(|e| match e {
            myelin_crypto::EventError::TooLarge => ServiceError::EventTooLarge,
            other => ServiceError::InvalidParam(format!("cannot build the event: {other}")),
        })?;
        let pdu = Pdu::from_signed(version, signed).map_err(|e| match e {
            PduError::TooLarge { .. } => ServiceError::EventTooLarge,
            other => ServiceError::InvalidParam(format!("invalid event: {other}")),
        })?;
        check_auth(
            version,
            &pdu,
            |id| state.event_by_id(id).cloned(),
            |kind, key| state.get(kind, key).cloned(),
        )
        .map_err(|e| ServiceError::Forbidden(e.to_string()))?;
        Ok(pdu)
    }

    /// For room versions 1 and 2: a fresh `$opaque:server` id for `new`, and
    /// the reference hash of each event it cites (extremities and auth
    /// events, all in memory).
    fn v1_ids(&self, state: &RoomState, new: &NewPdu) -> Result<V1EventIds, ServiceError> {
        let opaque: String = rand::thread_rng()
            .sample_iter(&Alphanumeric)
            .take(24)
            .map(char::from)
            .collect();
        let event_id = OwnedEventId::try_from(format!("${opaque}:{}", self.keys.server_name()))
            .map_err(|e| ServiceError::Internal(format!("generated event id is invalid: {e}")))?;
        let room_version = state.version.id();
        let mut reference_hashes = HashMap::new();
        let cited = state.extremities().iter().chain(
            new.auth_events
                .iter()
                .filter_map(|id| state.event_by_id(id)),
        );
        for pdu in cited {
            let hash = myelin_crypto::reference_hash(&room_version, pdu.as_object())
                .map_err(|e| ServiceError::Internal(format!("cannot hash a cited event: {e}")))?;
            reference_hashes.insert(pdu.event_id().to_owned(), hash);
        }
        Ok(V1EventIds {
            event_id,
            reference_hashes,
        })
    }

    /// This server's own rules for events its users ask it to sign
    /// ([`local_rules`]), with what they leave to look up: the joining
    /// user's rooms for a restricted join, the invitee's account.
    pub(super) async fn check_local_rules(
        &self,
        state: &RoomState,
        pdu: &Pdu,
    ) -> Result<(), ServiceError> {
        let join_rules = state.get(&StateEventType::RoomJoinRules, "");
        let requirement = local_rules::check(
            pdu,
            self.keys.server_name(),
            |user| state.membership_of(user),
            join_rules,
        )
        .map_err(local_rule_error)?;
        match requirement {
            Requirement::None => Ok(()),
            Requirement::MemberOfOneOf { user, rooms } => {
                let memberships = self.storage.memberships_of(&user, None).await?;
                let allowed = memberships
                    .iter()
                    .any(|m| m.membership == "join" && rooms.contains(&m.room_id));
                if allowed {
                    Ok(())
                } else {
                    Err(ServiceError::Forbidden(
                        "this room admits only members of the rooms its join rules name".to_owned(),
                    ))
                }
            }
            Requirement::ExistingUser(user) => self.check_invitee(&user).await,
        }
    }

    /// An invite of a user of another server, built and signed on the
    /// room's current state under its lock and checked as every local
    /// event is, but not written: the invitee's server must sign it first
    /// (`PUT /v2/invite`). Returns it with the state events that describe
    /// the room to the invitee.
    ///
    /// # Errors
    /// `Forbidden` when the rules refuse or the sender is not in the room.
    pub async fn build_remote_invite(
        &self,
        room_id: &RoomId,
        event: &LocalEvent,
    ) -> Result<(Pdu, Vec<Pdu>), ServiceError> {
        let slot = self.slot(room_id);
        let mut guard = slot.state.lock().await;
        let state = match self.loaded(room_id, &mut guard).await {
            Ok(state) => state,
            Err(ServiceError::NotFound(_)) => return Err(ServiceError::not_in_room()),
            Err(error) => return Err(error),
        };
        let pdu = self.build(
            state,
            Some(room_id.to_owned()),
            event,
            MilliSecondsSinceUnixEpoch::now(),
        )?;
        check_e2e_policy(state, &pdu)?;
        let join_rules = state.get(&StateEventType::RoomJoinRules, "");
        // The invitee's existence is the invitee's server's to vouch for.
        match local_rules::check(
            &pdu,
            self.keys.server_name(),
            |user| state.membership_of(user),
            join_rules,
        )
        .map_err(local_rule_error)?
        {
            Requirement::None | Requirement::ExistingUser(_) => {}
            Requirement::MemberOfOneOf { .. } => {
                return Err(ServiceError::Forbidden("not an invite".to_owned()));
            }
        }
        let described = state.describing_events(pdu.sender()).cloned().collect();
        Ok((pdu, described))
    }

    /// Whether `user` can be invited: a user of this server with an
    /// account (users elsewhere need federation, which is not there yet).
    ///
    /// # Errors
    /// `InvalidParam` for a remote user, `NotFound` for an unknown one.
    pub async fn check_invitee(&self, user: &UserId) -> Result<(), ServiceError> {
        if user.server_name() != self.keys.server_name() {
            return Err(ServiceError::InvalidParam(
                "users on other servers are invited through their server".to_owned(),
            ));
        }
        match self.storage.account(user).await? {
            Some(_) => Ok(()),
            None => Err(ServiceError::NotFound("no such user".to_owned())),
        }
    }

    /// The redacted form of a redaction's target, if the sender may redact it.
    pub(super) async fn redaction_of(
        &self,
        state: &RoomState,
        redaction: &Pdu,
        target: &EventId,
    ) -> Result<(OwnedEventId, String), ServiceError> {
        let original = self.pdu(state.version, target).await?;
        if original.room_id() != redaction.room_id() {
            return Err(ServiceError::NotFound(
                "no such event in this room".to_owned(),
            ));
        }
        let lookup = |kind: &StateEventType, key: &str| state.get(kind, key).cloned();
        let allowed = is_redaction_allowed(state.version, redaction, &original, lookup)
            .map_err(|e| ServiceError::Forbidden(e.to_string()))?;
        // The Client-Server API is stricter than the federation rule: redacting
        // someone else's event needs the `redact` power level even on this server.
        let allowed = allowed
            && (original.sender() == redaction.sender()
                || may_redact_others(state.version, redaction.sender(), lookup)?);
        if !allowed {
            return Err(ServiceError::Forbidden(
                "you may not redact this event".to_owned(),
            ));
        }
        redacted_form(&original)
    }
}

/// An event's id and its redacted JSON, to store in its place.
pub(super) fn redacted_form(original: &Pdu) -> Result<(OwnedEventId, String), ServiceError> {
    let rules = original.room_version().rules().redaction.clone();
    let redacted = ruma::canonical_json::redact(original.as_object().clone(), &rules, None)
        .map_err(|e| ServiceError::Internal(format!("redaction failed: {e}")))?;
    Ok((
        original.event_id().to_owned(),
        myelin_crypto::to_canonical_string(&redacted),
    ))
}

/// The current state event that `event` would repeat: same slot, same
/// sender, same content. Clients resend state they already set (a join
/// while joined, a topic set twice); the spec's reference server answers
/// with the existing event rather than grow the room, and so does this one.
pub(super) fn unchanged_state<'s>(state: &'s RoomState, event: &LocalEvent) -> Option<&'s EventId> {
    let state_key = event.state_key.as_deref()?;
    let current = state.get(
        &StateEventType::from(event.event_type.to_string()),
        state_key,
    )?;
    let same_content = matches!(
        current.as_object().get("content"),
        Some(ruma::CanonicalJsonValue::Object(content)) if *content == event.content
    );
    (current.sender() == event.sender && same_content).then(|| current.event_id())
}

pub(super) fn local_rule_error(error: LocalRuleError) -> ServiceError {
    match error {
        LocalRuleError::NotClientWritable(reason) => ServiceError::Forbidden(reason.to_owned()),
        LocalRuleError::RemoteAuthoriser => ServiceError::Forbidden(error.to_string()),
    }
}

/// Myelin's E2E-only policy, checked here, on the built event and under
/// the room lock, so that every local write (send, state, redact,
/// membership, initial state) meets it against the state the event will
/// land on.
pub(super) fn check_e2e_policy(state: &RoomState, pdu: &Pdu) -> Result<(), ServiceError> {
    let proposed = e2e_policy::Proposed::of(pdu);
    e2e_policy::check(proposed, |kind, key| state.get(kind, key)).map_err(|e| match e {
        PolicyError::E2eRequired(reason) => ServiceError::E2eRequired(reason.to_owned()),
        PolicyError::InvalidPolicy(reason) => ServiceError::InvalidParam(reason.to_owned()),
    })
}

/// Whether `user_id` reaches the room's `redact` power level.
fn may_redact_others(
    version: RoomVersion,
    user_id: &ruma::UserId,
    state: impl Fn(&StateEventType, &str) -> Option<Pdu>,
) -> Result<bool, ServiceError> {
    let forbidden = |e: AuthError| ServiceError::Forbidden(e.to_string());
    let level = redact_power_level(version, &state).map_err(forbidden)?;
    Ok(user_power_level(version, user_id, state).map_err(forbidden)? >= UserPowerLevel::Int(level))
}

/// The key a client transaction is remembered under. The spec scopes a
/// transaction id to the device and the request path, so the same id sent
/// to another room or endpoint is a new request.
pub fn transaction_key(endpoint: &str, room_id: &RoomId, detail: &str, txn_id: &str) -> String {
    // Room ids hold no `/`; the detail is length-prefixed, so no two
    // different requests share a key.
    format!("{endpoint}/{room_id}/{}:{detail}/{txn_id}", detail.len())
}
