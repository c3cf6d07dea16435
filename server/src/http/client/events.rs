//! Room events as clients see them: the client format of a PDU, with its
//! content served byte for byte as stored.

use axum::{
    http::header,
    response::{IntoResponse, Response},
};
use ruma::{EventId, MilliSecondsSinceUnixEpoch, RoomId, UserId};
use serde::Serialize;
use serde_json::value::RawValue;

use crate::{http::error::MatrixError, service::rooms::pdu::Pdu};

/// The client-server format of a room event.
#[derive(Debug, Serialize)]
pub struct ClientEvent<'a> {
    content: &'a RawValue,
    event_id: &'a EventId,
    origin_server_ts: MilliSecondsSinceUnixEpoch,
    room_id: &'a RoomId,
    sender: &'a UserId,
    #[serde(rename = "type")]
    kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    state_key: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    redacts: Option<&'a EventId>,
}

impl<'a> From<&'a Pdu> for ClientEvent<'a> {
    fn from(pdu: &'a Pdu) -> Self {
        Self {
            content: pdu.content(),
            event_id: pdu.event_id(),
            origin_server_ts: pdu.origin_server_ts(),
            room_id: pdu.room_id(),
            sender: pdu.sender(),
            kind: pdu.kind().to_string(),
            state_key: pdu.state_key(),
            redacts: pdu.redacts(),
        }
    }
}

/// Serialises a response body that borrows from the handler's data.
pub fn json_response(body: &impl Serialize) -> Result<Response, MatrixError> {
    let bytes = serde_json::to_vec(body)
        .map_err(|e| MatrixError::from(crate::service::ServiceError::Internal(e.to_string())))?;
    Ok(([(header::CONTENT_TYPE, "application/json")], bytes).into_response())
}
