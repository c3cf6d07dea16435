//! Room state and members.

use axum::{Json as Reply, extract::State, response::Response};
use ruma::{CanonicalJsonObject, OwnedRoomId};
use serde::Deserialize;
use serde_json::{Value, json};

use super::events::{ClientEvent, json_response};
use crate::http::{
    AppState,
    error::MatrixError,
    extract::{Authed, Json, Path, Query},
};
use crate::service::sync::StreamToken;

/// `PUT /rooms/{roomId}/state/{eventType}/{stateKey}`.
pub async fn send_state_event(
    State(state): State<AppState>,
    Authed(session): Authed,
    Path((room_id, event_type, state_key)): Path<(OwnedRoomId, String, String)>,
    Json(content): Json<CanonicalJsonObject>,
) -> Result<Reply<Value>, MatrixError> {
    let event_id = state
        .rooms
        .send_state(&session.user_id, &room_id, &event_type, &state_key, content)
        .await?;
    Ok(Reply(json!({ "event_id": event_id })))
}

/// `PUT /rooms/{roomId}/state/{eventType}`: the empty state key.
pub async fn send_state_event_empty_key(
    state: State<AppState>,
    authed: Authed,
    Path((room_id, event_type)): Path<(OwnedRoomId, String)>,
    body: Json<CanonicalJsonObject>,
) -> Result<Reply<Value>, MatrixError> {
    send_state_event(
        state,
        authed,
        Path((room_id, event_type, String::new())),
        body,
    )
    .await
}

#[derive(Debug, Deserialize)]
pub struct FormatQuery {
    format: Option<String>,
}

/// `GET /rooms/{roomId}/state/{eventType}/{stateKey}`: the content, or the
/// whole event with `?format=event`.
pub async fn get_state_event(
    State(state): State<AppState>,
    Authed(session): Authed,
    Path((room_id, event_type, state_key)): Path<(OwnedRoomId, String, String)>,
    Query(query): Query<FormatQuery>,
) -> Result<Response, MatrixError> {
    let pdu = state
        .rooms
        .state_event(&session.user_id, &room_id, &event_type, &state_key)
        .await?;
    if query.format.as_deref() == Some("event") {
        json_response(&ClientEvent::from(&pdu))
    } else {
        json_response(&pdu.content())
    }
}

/// `GET /rooms/{roomId}/state/{eventType}`: the empty state key.
pub async fn get_state_event_empty_key(
    state: State<AppState>,
    authed: Authed,
    Path((room_id, event_type)): Path<(OwnedRoomId, String)>,
    query: Query<FormatQuery>,
) -> Result<Response, MatrixError> {
    get_state_event(
        state,
        authed,
        Path((room_id, event_type, String::new())),
        query,
    )
    .await
}

/// `GET /rooms/{roomId}/state`: every state event the user may see.
pub async fn get_state_events(
    State(state): State<AppState>,
    Authed(session): Authed,
    Path(room_id): Path<OwnedRoomId>,
) -> Result<Response, MatrixError> {
    let pdus = state
        .rooms
        .visible_state(&session.user_id, &room_id)
        .await?;
    let events: Vec<ClientEvent<'_>> = pdus.iter().map(ClientEvent::from).collect();
    json_response(&events)
}

#[derive(Debug, Deserialize)]
pub struct MembersQuery {
    at: Option<String>,
    membership: Option<String>,
    not_membership: Option<String>,
}

/// `GET /rooms/{roomId}/members`, optionally filtered by membership.
pub async fn get_member_events(
    State(state): State<AppState>,
    Authed(session): Authed,
    Path(room_id): Path<OwnedRoomId>,
    Query(query): Query<MembersQuery>,
) -> Result<Response, MatrixError> {
    let at = query
        .at
        .as_deref()
        .map(StreamToken::parse)
        .transpose()?
        .map(|token| token.0);
    let members = state.rooms.members(&session.user_id, &room_id, at).await?;
    let chunk: Vec<ClientEvent<'_>> = members
        .iter()
        .filter(|pdu| {
            let membership = crate::service::room_events::membership(pdu);
            let is = |want: &String| membership.as_ref() == Some(want);
            // The spec: given both, the two parameters are an "or" condition.
            match (&query.membership, &query.not_membership) {
                (None, None) => true,
                (Some(want), None) => is(want),
                (None, Some(skip)) => !is(skip),
                (Some(want), Some(skip)) => is(want) || !is(skip),
            }
        })
        .map(ClientEvent::from)
        .collect();
    json_response(&json!({ "chunk": chunk }))
}

/// `GET /rooms/{roomId}/joined_members`.
pub async fn joined_members(
    State(state): State<AppState>,
    Authed(session): Authed,
    Path(room_id): Path<OwnedRoomId>,
) -> Result<Reply<Value>, MatrixError> {
    let members = state
        .rooms
        .joined_members(&session.user_id, &room_id)
        .await?;
    let joined: serde_json::Map<String, Value> = members
        .into_iter()
        .map(|(user_id, member)| {
            // Both fields are strings in the spec's RoomMember: an unset one
            // is left out, not null.
            let mut profile = serde_json::Map::new();
            if let Some(name) = member.display_name {
                profile.insert("display_name".to_owned(), Value::String(name));
            }
            if let Some(url) = member.avatar_url {
                profile.insert("avatar_url".to_owned(), Value::String(url));
            }
            (user_id, Value::Object(profile))
        })
        .collect();
    Ok(Reply(json!({ "joined": joined })))
}
