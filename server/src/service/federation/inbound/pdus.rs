//! PDUs received in a transaction: the room's version, its server ACL,
//! the checks before authorization, then the room write path; events the
//! room write path lacks are asked of the origin first.

use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, EventId, OwnedEventId, RoomId, RoomVersionId,
    ServerName,
};
use serde_json::{Value, json};
use tracing::debug;

use super::{Inbound, acl_allows};
use crate::service::{
    ServiceError,
    federation::pdu_check::{CheckedPdu, PduCheckError, check_pdu},
    room_events::{RemoteEventError, RemoteOutcome},
    rooms::{pdu::Pdu, version::RoomVersion},
};
use crate::storage::EventStatus;

/// Most events fetched from the origin for one transaction
/// (`/get_missing_events` and `/event` answers together).
const MAX_FETCHED_PER_TRANSACTION: usize = 100;

/// Most times one PDU is retried after fetching what it lacks.
const MAX_FETCH_ROUNDS: usize = 3;

/// `limit` of a `/get_missing_events` request.
const MISSING_EVENTS_LIMIT: usize = 10;

/// Most missing auth events fetched one by one with `/event` per round.
const MAX_AUTH_FETCHES: usize = 10;

/// What is left of a transaction's allowance of fetched events.
#[derive(Debug)]
pub(super) struct FetchBudget {
    remaining: usize,
}

impl Default for FetchBudget {
    fn default() -> Self {
        Self {
            remaining: MAX_FETCHED_PER_TRANSACTION,
        }
    }
}

impl FetchBudget {
    fn take(&mut self, count: usize) -> bool {
        if self.remaining < count {
            return false;
        }
        self.remaining -= count;
        true
    }
}

impl Inbound {
    /// Takes one PDU of a transaction: its event id and what became of it
    /// (`Err` with the reason for the answer), or `None` when it has no
    /// id to answer under (not an object).
    pub(super) async fn receive_pdu(
        &self,
        origin: &ServerName,
        pdu: Value,
        budget: &mut FetchBudget,
    ) -> Option<(OwnedEventId, Result<(), String>)> {
        let Ok(CanonicalJsonValue::Object(object)) = CanonicalJsonValue::try_from(pdu) else {
            debug!(%origin, "skipped a PDU that is not a canonical JSON object");
            return None;
        };
        let room_id = match object.get("room_id") {
            Some(CanonicalJsonValue::String(id)) => RoomId::parse(id).ok(),
            _ => None,
        };
        let version = match &room_id {
            Some(room_id) => self.services.events.room_version(room_id).await.ok(),
            None => None,
        };
        let event_id = claimed_event_id(&object, version)?;
        let (Some(room_id), Some(version)) = (room_id, version) else {
            return Some((event_id, Err("unknown room".to_owned())));
        };
        let outcome = self
            .take_pdu(origin, &room_id, version, object, budget)
            .await;
        if let Err(reason) = &outcome {
            debug!(%origin, %event_id, %reason, "a received PDU was not taken");
        }
        Some((event_id, outcome))
    }

    async fn take_pdu(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        version: RoomVersion,
        object: CanonicalJsonObject,
        budget: &mut FetchBudget,
    ) -> Result<(), String> {
        let allowed = self
            .room_allows(room_id, |state| acl_allows(state, origin))
            .await
            .map_err(internal)?;
        if !allowed {
            return Err("the room's server ACL denies the origin".to_owned());
        }
        let CheckedPdu { pdu, .. } = self.check(version, object).await?;
        let mut rounds = 0;
        loop {
            match self.services.events.append_remote(pdu.clone()).await {
                Ok(outcome) => return outcome_answer(outcome),
                Err(RemoteEventError::MissingEvents {
                    prev_events,
                    auth_events,
                }) if rounds < MAX_FETCH_ROUNDS => {
                    rounds += 1;
                    let fetched = self
                        .fetch_missing(origin, &pdu, &prev_events, &auth_events, budget)
                        .await;
                    if !fetched {
                        return Err("events it cites could not be fetched".to_owned());
                    }
                }
                Err(RemoteEventError::MissingEvents { .. }) => {
                    return Err("events it cites could not be fetched".to_owned());
                }
                Err(RemoteEventError::Service(error)) => return Err(internal(error)),
                Err(error) => return Err(error.to_string()),
            }
        }
    }

    /// Steps 1 to 3 of the checks on receipt.
    async fn check(
        &self,
        version: RoomVersion,
        object: CanonicalJsonObject,
    ) -> Result<CheckedPdu, String> {
        check_pdu(self.services.federation.keys(), version, object)
            .await
            .map_err(|error| match error {
                PduCheckError::Storage(error) => internal(ServiceError::Storage(error)),
                other => other.to_string(),
            })
    }

    /// Asks `origin` for what `pdu` lacks and stores what it gives, oldest
    /// first: the events between the room's forward extremities and it
    /// (`/get_missing_events`), and missing auth events one by one
    /// (`/event`). Returns whether anything new was stored.
    async fn fetch_missing(
        &self,
        origin: &ServerName,
        pdu: &Pdu,
        prev_events: &[OwnedEventId],
        auth_events: &[OwnedEventId],
        budget: &mut FetchBudget,
    ) -> bool {
        let mut fetched = Vec::new();
        if !prev_events.is_empty() {
            fetched.extend(self.missing_events(origin, pdu, budget).await);
        }
        for event_id in auth_events.iter().take(MAX_AUTH_FETCHES) {
            if !budget.take(1) {
                break;
            }
            if let Some(event) = self.fetch_event(origin, pdu.room_id(), event_id).await {
                fetched.push(event);
            }
        }
        fetched.sort_by_key(Pdu::depth);
        let mut stored_any = false;
        for event in fetched {
            match self.services.events.append_remote(event).await {
                Ok(RemoteOutcome::AlreadyStored(_)) => {}
                Ok(_) => stored_any = true,
                Err(error) => debug!(%origin, %error, "a fetched event was not taken"),
            }
        }
        stored_any
    }

    /// `POST /get_missing_events/{roomId}` to `origin`: the events between
    /// the room's forward extremities and `pdu`, checked, of its room.
    async fn missing_events(
        &self,
        origin: &ServerName,
        pdu: &Pdu,
        budget: &mut FetchBudget,
    ) -> Vec<Pdu> {
        if !budget.take(MISSING_EVENTS_LIMIT) {
            return Vec::new();
        }
        let room_id = pdu.room_id();
        let extremities: Vec<OwnedEventId> = match self
            .services
            .events
            .read_state(room_id, |state| {
                state
                    .extremities()
                    .iter()
                    .map(|e| e.event_id().to_owned())
                    .collect()
            })
            .await
        {
            Ok(Some(extremities)) => extremities,
            _ => return Vec::new(),
        };
        let body = json!({
            "earliest_events": extremities,
            "latest_events": [pdu.event_id()],
            "limit": MISSING_EVENTS_LIMIT,
            // The limit bounds the walk; no depth floor is needed.
            "min_depth": 0,
        });
        let path = format!(
            "/_matrix/federation/v1/get_missing_events/{}",
            encode_segment(room_id.as_str())
        );
        let answer = match self
            .services
            .federation
            .client()
            .post(origin, &path, &body)
            .await
        {
            Ok(answer) => answer,
            Err(error) => {
                debug!(%origin, %error, "get_missing_events failed");
                return Vec::new();
            }
        };
        let events = answer
            .get("events")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let mut checked = Vec::new();
        for event in events.into_iter().take(MISSING_EVENTS_LIMIT) {
            if let Some(event) = self.check_fetched(pdu.room_version(), room_id, event).await {
                checked.push(event);
            }
        }
        checked
    }

    /// `GET /event/{eventId}` from `origin`: the event, checked, if it is
    /// the one asked for and of `room_id`.
    async fn fetch_event(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        event_id: &EventId,
    ) -> Option<Pdu> {
        let version = self.services.events.room_version(room_id).await.ok()?;
        let path = format!(
            "/_matrix/federation/v1/event/{}",
            encode_segment(event_id.as_str())
        );
        let answer = self
            .services
            .federation
            .client()
            .get(origin, &path)
            .await
            .map_err(|error| debug!(%origin, %error, "fetching an event failed"))
            .ok()?;
        let event = answer.get("pdus")?.as_array()?.first()?.clone();
        let pdu = self.check_fetched(version, room_id, event).await?;
        (pdu.event_id() == event_id).then_some(pdu)
    }

    /// A fetched event that passes the checks before authorization and
    /// belongs to `room_id`.
    async fn check_fetched(
        &self,
        version: RoomVersion,
        room_id: &RoomId,
        event: Value,
    ) -> Option<Pdu> {
        let Ok(CanonicalJsonValue::Object(object)) = CanonicalJsonValue::try_from(event) else {
            return None;
        };
        let checked = self.check(version, object).await.ok()?;
        (checked.pdu.room_id() == room_id).then_some(checked.pdu)
    }
}

/// The id to answer a PDU under: derived for the room's version, or (room
/// unknown) as room versions 4 and later derive it, or the `event_id` field
/// versions 1 and 2 carry.
fn claimed_event_id(
    object: &CanonicalJsonObject,
    version: Option<RoomVersion>,
) -> Option<OwnedEventId> {
    let carried = || match object.get("event_id") {
        Some(CanonicalJsonValue::String(id)) => EventId::parse(id).ok(),
        _ => None,
    };
    match version {
        Some(version) if version.has_origin_chosen_event_ids() => carried(),
        Some(version) => myelin_crypto::event_id(&version.id(), object).ok(),
        None => carried().or_else(|| myelin_crypto::event_id(&RoomVersionId::V11, object).ok()),
    }
}

/// The answer for a PDU the write path judged: taken (accepted,
/// soft-failed or withheld by the E2E-only policy, which the spec counts as
/// received), or the rejection.
fn outcome_answer(outcome: RemoteOutcome) -> Result<(), String> {
    match outcome {
        RemoteOutcome::Accepted
        | RemoteOutcome::SoftFailed(_)
        | RemoteOutcome::PolicyWithheld(_)
        | RemoteOutcome::AlreadyStored(EventStatus::Accepted | EventStatus::SoftFailed) => Ok(()),
        RemoteOutcome::Rejected(rejection) => Err(format!("rejected: {rejection:?}")),
        RemoteOutcome::AlreadyStored(_) => Err("rejected before".to_owned()),
    }
}

/// A failure of this server, not of the PDU: logged, answered generically.
fn internal(error: ServiceError) -> String {
    tracing::warn!(%error, "a received PDU could not be processed");
    "internal error".to_owned()
}

/// A path segment with everything but unreserved characters percent-encoded.
fn encode_segment(segment: &str) -> String {
    let mut encoded = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}
