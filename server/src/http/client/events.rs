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
    #[serde(skip_serializing_if = "Option::is_none")]
    room_id: Option<&'a RoomId>,
    sender: &'a UserId,
    #[serde(rename = "type")]
    kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    state_key: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    redacts: Option<&'a EventId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    unsigned: Option<Unsigned<'a>>,
}

/// `unsigned` data the server adds for the reader.
#[derive(Debug, Serialize)]
struct Unsigned<'a> {
    transaction_id: &'a str,
}

impl<'a> ClientEvent<'a> {
    /// The sync format: no `room_id` (the room is the key above it), and the
    /// client's own transaction id on events its device sent.
    pub fn in_sync(pdu: &'a Pdu, transaction_id: Option<&'a str>) -> Self {
        Self {
            room_id: None,
            unsigned: transaction_id.map(|transaction_id| Unsigned { transaction_id }),
            ..Self::from(pdu)
        }
    }
}

/// Stripped state, as invitees see it.
#[derive(Debug, Serialize)]
pub struct StrippedEvent<'a> {
    content: &'a RawValue,
    sender: &'a UserId,
    state_key: Option<&'a str>,
    #[serde(rename = "type")]
    kind: String,
}

impl<'a> From<&'a Pdu> for StrippedEvent<'a> {
    fn from(pdu: &'a Pdu) -> Self {
        Self {
            content: pdu.content(),
            sender: pdu.sender(),
            state_key: pdu.state_key(),
            kind: pdu.kind().to_string(),
        }
    }
}

impl<'a> From<&'a Pdu> for ClientEvent<'a> {
    fn from(pdu: &'a Pdu) -> Self {
        Self {
            content: pdu.content(),
            event_id: pdu.event_id(),
            origin_server_ts: pdu.origin_server_ts(),
            room_id: Some(pdu.room_id()),
            sender: pdu.sender(),
            kind: pdu.kind().to_string(),
            state_key: pdu.state_key(),
            redacts: pdu.redacts(),
            unsigned: None,
        }
    }
}

/// Serialises a response body that borrows from the handler's data.
pub fn json_response(body: &impl Serialize) -> Result<Response, MatrixError> {
    let bytes = serde_json::to_vec(body)
        .map_err(|e| MatrixError::from(crate::service::ServiceError::Internal(e.to_string())))?;
    Ok(([(header::CONTENT_TYPE, "application/json")], bytes).into_response())
}
