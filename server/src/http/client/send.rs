//! Sending events and redacting.

use axum::{Json as Reply, extract::State};
use ruma::{CanonicalJsonObject, OwnedEventId, OwnedRoomId};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::http::{
    AppState,
    error::MatrixError,
    extract::{Authed, Json, Path},
};

/// `PUT /rooms/{roomId}/send/{eventType}/{txnId}`: idempotent per device and
/// transaction id. The content is stored exactly as sent.
pub async fn send_message_event(
    State(state): State<AppState>,
    Authed(session): Authed,
    Path((room_id, event_type, txn_id)): Path<(OwnedRoomId, String, String)>,
    Json(content): Json<CanonicalJsonObject>,
) -> Result<Reply<Value>, MatrixError> {
    let event_id = state
        .rooms
        .send_message(
            &session.user_id,
            session.device_id,
            &room_id,
            &event_type,
            txn_id,
            content,
        )
        .await?;
    Ok(Reply(json!({ "event_id": event_id })))
}

#[derive(Debug, Default, Deserialize)]
pub struct RedactBody {
    reason: Option<String>,
}

/// `PUT /rooms/{roomId}/redact/{eventId}/{txnId}`.
pub async fn redact_event(
    State(state): State<AppState>,
    Authed(session): Authed,
    Path((room_id, event_id, txn_id)): Path<(OwnedRoomId, OwnedEventId, String)>,
    Json(body): Json<RedactBody>,
) -> Result<Reply<Value>, MatrixError> {
    let redaction = state
        .rooms
        .redact(
            &session.user_id,
            session.device_id,
            &room_id,
            event_id,
            txn_id,
            body.reason,
        )
        .await?;
    Ok(Reply(json!({ "event_id": redaction })))
}
