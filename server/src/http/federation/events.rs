//! The reads of a room's DAG other servers make: `/event`, `/state`,
//! `/state_ids`, `/event_auth`, `/backfill`, `/get_missing_events`, and
//! the public room directory.

use axum::{Json, extract::State, http::Uri};
use ruma::{OwnedEventId, OwnedRoomId};
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::{Value, json};

use super::Signed;
use crate::{
    http::{
        AppState,
        client::directory::{PublicRoomsFilter, public_rooms_page},
        error::MatrixError,
        extract::{Path, Query},
    },
    service::{
        ServiceError,
        federation::inbound::{Backfill, MAX_BACKFILL, MissingEventsRequest},
    },
    storage::{DagEvent, Millis},
};

/// `GET /event/{eventId}`: `{origin, origin_server_ts, pdus: [pdu]}`.
pub async fn get_event(
    State(state): State<AppState>,
    Path(event_id): Path<OwnedEventId>,
    signed: Signed<IgnoredAny>,
) -> Result<Json<Value>, MatrixError> {
    let event = state
        .inbound
        .event_for_server(&signed.origin, &event_id)
        .await?;
    Ok(Json(transaction_shaped(&state, vec![event])?))
}

#[derive(Debug, Deserialize)]
pub struct AtEvent {
    event_id: OwnedEventId,
}

/// `GET /state_ids/{roomId}?event_id=`: `{pdu_ids, auth_chain_ids}`.
pub async fn get_room_state_ids(
    State(state): State<AppState>,
    Path(room_id): Path<OwnedRoomId>,
    Query(at): Query<AtEvent>,
    signed: Signed<IgnoredAny>,
) -> Result<Json<Value>, MatrixError> {
    let state_at = state
        .inbound
        .state_for_server(&signed.origin, &room_id, &at.event_id)
        .await?;
    let ids = |events: &[DagEvent]| {
        events
            .iter()
            .map(|e| e.event_id.clone())
            .collect::<Vec<_>>()
    };
    Ok(Json(json!({
        "pdu_ids": ids(&state_at.state),
        "auth_chain_ids": ids(&state_at.auth_chain),
    })))
}

/// `GET /state/{roomId}?event_id=`: `{pdus, auth_chain}`.
pub async fn get_room_state(
    State(state): State<AppState>,
    Path(room_id): Path<OwnedRoomId>,
    Query(at): Query<AtEvent>,
    signed: Signed<IgnoredAny>,
) -> Result<Json<Value>, MatrixError> {
    let state_at = state
        .inbound
        .state_for_server(&signed.origin, &room_id, &at.event_id)
        .await?;
    Ok(Json(json!({
        "pdus": pdus(&state_at.state)?,
        "auth_chain": pdus(&state_at.auth_chain)?,
    })))
}

/// `GET /event_auth/{roomId}/{eventId}`: `{auth_chain}`.
pub async fn get_event_authorization(
    State(state): State<AppState>,
    Path((room_id, event_id)): Path<(OwnedRoomId, OwnedEventId)>,
    signed: Signed<IgnoredAny>,
) -> Result<Json<Value>, MatrixError> {
    let chain = state
        .inbound
        .event_auth_for_server(&signed.origin, &room_id, &event_id)
        .await?;
    Ok(Json(json!({ "auth_chain": pdus(&chain)? })))
}

/// `GET /backfill/{roomId}?v=…&limit=`: `{origin, origin_server_ts, pdus}`.
pub async fn get_backfill(
    State(state): State<AppState>,
    Path(room_id): Path<OwnedRoomId>,
    uri: Uri,
    signed: Signed<IgnoredAny>,
) -> Result<Json<Value>, MatrixError> {
    let request = backfill_request(&uri)?;
    let events = state
        .inbound
        .backfill_for_server(&signed.origin, &room_id, request)
        .await?;
    Ok(Json(transaction_shaped(&state, events)?))
}

/// `POST /get_missing_events/{roomId}`: `{events}`, oldest first.
pub async fn get_missing_events(
    State(state): State<AppState>,
    Path(room_id): Path<OwnedRoomId>,
    signed: Signed<MissingEventsRequest>,
) -> Result<Json<Value>, MatrixError> {
    let events = state
        .inbound
        .missing_events_for_server(&signed.origin, &room_id, signed.body)
        .await?;
    Ok(Json(json!({ "events": pdus(&events)? })))
}

#[derive(Debug, Default, Deserialize)]
pub struct PublicRoomsQuery {
    limit: Option<usize>,
    since: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct PublicRoomsBody {
    limit: Option<usize>,
    since: Option<String>,
    #[serde(default)]
    filter: PublicRoomsFilter,
}

/// `GET /publicRooms`: this server's published rooms, paged.
pub async fn get_public_rooms(
    State(state): State<AppState>,
    Query(query): Query<PublicRoomsQuery>,
    signed: Signed<IgnoredAny>,
) -> Result<Json<Value>, MatrixError> {
    let listed = state
        .public_rooms
        .list_for_server(&signed.origin, None)
        .await?;
    let page = public_rooms_page(
        &listed,
        &PublicRoomsFilter::default(),
        query.limit,
        query.since,
    )?;
    Ok(Json(page))
}

/// `POST /publicRooms`: with a search filter.
pub async fn get_public_rooms_filtered(
    State(state): State<AppState>,
    signed: Signed<PublicRoomsBody>,
) -> Result<Json<Value>, MatrixError> {
    let body = signed.body;
    let listed = state
        .public_rooms
        .list_for_server(&signed.origin, body.filter.generic_search_term.as_deref())
        .await?;
    let page = public_rooms_page(&listed, &body.filter, body.limit, body.since)?;
    Ok(Json(page))
}

/// `{origin, origin_server_ts, pdus}`, the shape `/event` and
/// `/backfill` answer in.
fn transaction_shaped(state: &AppState, events: Vec<DagEvent>) -> Result<Value, MatrixError> {
    Ok(json!({
        "origin": state.federation.server_name(),
        "origin_server_ts": Millis::now().0,
        "pdus": pdus(&events)?,
    }))
}

/// Stored events as the PDUs they are.
fn pdus(events: &[DagEvent]) -> Result<Vec<Value>, MatrixError> {
    events
        .iter()
        .map(|event| {
            serde_json::from_str(&event.json).map_err(|e| {
                ServiceError::Internal(format!("stored event {} is invalid: {e}", event.event_id))
                    .into()
            })
        })
        .collect()
}

/// `v` (repeated) and `limit` of a `/backfill` query.
fn backfill_request(uri: &Uri) -> Result<Backfill, MatrixError> {
    // Pairs, since `v` repeats.
    let axum::extract::Query(pairs) =
        axum::extract::Query::<Vec<(String, String)>>::try_from_uri(uri)
            .map_err(|_| MatrixError::invalid_param("malformed query"))?;
    let mut from = Vec::new();
    let mut limit = MAX_BACKFILL;
    for (key, value) in pairs {
        match key.as_str() {
            "v" => from.push(
                OwnedEventId::try_from(value)
                    .map_err(|_| MatrixError::invalid_param("v must be event ids"))?,
            ),
            "limit" => {
                limit = value
                    .parse()
                    .map_err(|_| MatrixError::invalid_param("limit must be a number"))?;
            }
            _ => {}
        }
    }
    if from.is_empty() {
        return Err(ServiceError::MissingParam("v is required".to_owned()).into());
    }
    Ok(Backfill { from, limit })
}
