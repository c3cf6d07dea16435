//! Account data, room tags, typing, receipts and read markers.

use std::time::Duration;

use axum::{Json as Reply, body::Bytes, extract::State, response::Response};
use ruma::{OwnedEventId, OwnedRoomId, OwnedUserId};
use serde::Deserialize;
use serde_json::{Map, Value, json, value::RawValue};

use super::{empty_object, events::json_response};
use crate::{
    http::{
        AppState,
        error::MatrixError,
        extract::{Authed, Json, Path, parse_json},
    },
    service::ServiceError,
};

/// `PUT /user/{userId}/account_data/{type}`.
pub async fn set_global_account_data(
    State(state): State<AppState>,
    Authed(session): Authed,
    Path((user_id, data_type)): Path<(OwnedUserId, String)>,
    body: Bytes,
) -> Result<Reply<Value>, MatrixError> {
    let content = object_text(&body)?;
    state
        .account_data
        .set(&session.user_id, &user_id, None, &data_type, &content)
        .await?;
    Ok(empty_object())
}

/// `GET /user/{userId}/account_data/{type}`.
pub async fn get_global_account_data(
    State(state): State<AppState>,
    Authed(session): Authed,
    Path((user_id, data_type)): Path<(OwnedUserId, String)>,
) -> Result<Response, MatrixError> {
    let content = state
        .account_data
        .get(&session.user_id, &user_id, None, &data_type)
        .await?;
    raw_response(content)
}

/// `PUT /user/{userId}/rooms/{roomId}/account_data/{type}`.
pub async fn set_room_account_data(
    State(state): State<AppState>,
    Authed(session): Authed,
    Path((user_id, room_id, data_type)): Path<(OwnedUserId, OwnedRoomId, String)>,
    body: Bytes,
) -> Result<Reply<Value>, MatrixError> {
    let content = object_text(&body)?;
    state
        .account_data
        .set(
            &session.user_id,
            &user_id,
            Some(&room_id),
            &data_type,
            &content,
        )
        .await?;
    Ok(empty_object())
}

/// `GET /user/{userId}/rooms/{roomId}/account_data/{type}`.
pub async fn get_room_account_data(
    State(state): State<AppState>,
    Authed(session): Authed,
    Path((user_id, room_id, data_type)): Path<(OwnedUserId, OwnedRoomId, String)>,
) -> Result<Response, MatrixError> {
    let content = state
        .account_data
        .get(&session.user_id, &user_id, Some(&room_id), &data_type)
        .await?;
    raw_response(content)
}

/// `GET /user/{userId}/rooms/{roomId}/tags`.
pub async fn get_tags(
    State(state): State<AppState>,
    Authed(session): Authed,
    Path((user_id, room_id)): Path<(OwnedUserId, OwnedRoomId)>,
) -> Result<Reply<Value>, MatrixError> {
    let tags = state
        .account_data
        .tags(&session.user_id, &user_id, &room_id)
        .await?;
    Ok(Reply(json!({ "tags": tags })))
}

/// `PUT /user/{userId}/rooms/{roomId}/tags/{tag}`.
pub async fn set_tag(
    State(state): State<AppState>,
    Authed(session): Authed,
    Path((user_id, room_id, tag)): Path<(OwnedUserId, OwnedRoomId, String)>,
    Json(content): Json<Map<String, Value>>,
) -> Result<Reply<Value>, MatrixError> {
    state
        .account_data
        .set_tag(&session.user_id, &user_id, &room_id, &tag, content)
        .await?;
    Ok(empty_object())
}

/// `DELETE /user/{userId}/rooms/{roomId}/tags/{tag}`.
pub async fn delete_tag(
    State(state): State<AppState>,
    Authed(session): Authed,
    Path((user_id, room_id, tag)): Path<(OwnedUserId, OwnedRoomId, String)>,
) -> Result<Reply<Value>, MatrixError> {
    state
        .account_data
        .delete_tag(&session.user_id, &user_id, &room_id, &tag)
        .await?;
    Ok(empty_object())
}

#[derive(Debug, Deserialize)]
pub struct TypingBody {
    typing: bool,
    timeout: Option<u64>,
}

/// `PUT /rooms/{roomId}/typing/{userId}`.
pub async fn set_typing(
    State(state): State<AppState>,
    Authed(session): Authed,
    Path((room_id, user_id)): Path<(OwnedRoomId, OwnedUserId)>,
    Json(body): Json<TypingBody>,
) -> Result<Reply<Value>, MatrixError> {
    if user_id != session.user_id {
        return Err(
            ServiceError::Forbidden("you may only set your own typing state".to_owned()).into(),
        );
    }
    // Only members type; their fellow members are the ones to wake.
    let members = state
        .rooms
        .joined_members(&session.user_id, &room_id)
        .await?;
    let members: Vec<OwnedUserId> = members
        .into_keys()
        .filter_map(|id| OwnedUserId::try_from(id).ok())
        .collect();
    let timeout = body
        .typing
        .then(|| Duration::from_millis(body.timeout.unwrap_or(30_000)));
    state
        .outbound
        .typing(&room_id, &user_id, body.typing, &members);
    state.typing.set(&room_id, &user_id, timeout, members);
    Ok(empty_object())
}

#[derive(Debug, Default, Deserialize)]
pub struct ReceiptBody {
    thread_id: Option<String>,
}

/// `POST /rooms/{roomId}/receipt/{receiptType}/{eventId}`.
pub async fn create_receipt(
    State(state): State<AppState>,
    Authed(session): Authed,
    Path((room_id, receipt_type, event_id)): Path<(OwnedRoomId, String, OwnedEventId)>,
    body: Bytes,
) -> Result<Reply<Value>, MatrixError> {
    let body: ReceiptBody = if body.iter().all(u8::is_ascii_whitespace) {
        ReceiptBody::default()
    } else {
        parse_json(&body)?
    };
    let thread = body.thread_id.as_deref().filter(|thread| *thread != "main");
    state
        .account_data
        .set_receipt(&session.user_id, &room_id, &receipt_type, &event_id, thread)
        .await?;
    Ok(empty_object())
}

#[derive(Debug, Deserialize)]
pub struct ReadMarkersBody {
    #[serde(rename = "m.fully_read")]
    fully_read: Option<OwnedEventId>,
    #[serde(rename = "m.read")]
    read: Option<OwnedEventId>,
    #[serde(rename = "m.read.private")]
    read_private: Option<OwnedEventId>,
}

/// `POST /rooms/{roomId}/read_markers`.
pub async fn set_read_marker(
    State(state): State<AppState>,
    Authed(session): Authed,
    Path(room_id): Path<OwnedRoomId>,
    Json(body): Json<ReadMarkersBody>,
) -> Result<Reply<Value>, MatrixError> {
    for (receipt_type, event_id) in [
        ("m.fully_read", body.fully_read),
        ("m.read", body.read),
        ("m.read.private", body.read_private),
    ] {
        if let Some(event_id) = event_id {
            state
                .account_data
                .set_receipt(&session.user_id, &room_id, receipt_type, &event_id, None)
                .await?;
        }
    }
    Ok(empty_object())
}

/// A request body that must be a JSON object, as text to store verbatim.
fn object_text(body: &[u8]) -> Result<String, MatrixError> {
    let value: Value = parse_json(body)?;
    if !value.is_object() {
        return Err(MatrixError::bad_json("the content must be a JSON object"));
    }
    Ok(value.to_string())
}

fn raw_response(content: String) -> Result<Response, MatrixError> {
    let raw = RawValue::from_string(content)
        .map_err(|e| MatrixError::from(ServiceError::Internal(e.to_string())))?;
    json_response(&raw)
}
