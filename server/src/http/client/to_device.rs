//! `PUT /sendToDevice/{eventType}/{txnId}`.

use std::collections::BTreeMap;

use axum::{Json as Reply, extract::State};
use ruma::OwnedUserId;
use serde::Deserialize;
use serde_json::{Value, json, value::RawValue};

use super::empty_object;
use crate::http::{
    AppState,
    error::{MatrixError, inbox_full},
    extract::{Authed, Json, Path},
};

#[derive(Debug, Deserialize)]
pub struct SendToDeviceBody {
    /// User id -> device id (or `*`) -> content, each content kept as sent.
    messages: BTreeMap<String, BTreeMap<String, Box<RawValue>>>,
}

/// `PUT /sendToDevice/{eventType}/{txnId}`: idempotent per device and
/// transaction id. Devices whose inbox is full are named in
/// `org.myelin.inbox_full`; the others got their message.
pub async fn send_to_device(
    State(state): State<AppState>,
    Authed(session): Authed,
    Path((event_type, txn_id)): Path<(String, String)>,
    Json(body): Json<SendToDeviceBody>,
) -> Result<Reply<Value>, MatrixError> {
    let mut messages = BTreeMap::new();
    for (user_id, by_device) in body.messages {
        let user_id = OwnedUserId::try_from(user_id.as_str())
            .map_err(|e| MatrixError::invalid_param(format!("bad user id {user_id:?}: {e}")))?;
        let mut contents = BTreeMap::new();
        for (device_id, content) in by_device {
            // The one thing read of a content: that it is an object, as the
            // spec's event format requires. Its text is kept byte for byte.
            if !content.get().starts_with('{') {
                return Err(MatrixError::bad_json(format!(
                    "the message for {user_id} {device_id} is not a JSON object"
                )));
            }
            contents.insert(device_id, content.get().to_owned());
        }
        messages.insert(user_id, contents);
    }
    let refused = state
        .to_device
        .send(
            &session.user_id,
            &session.device_id,
            &event_type,
            &txn_id,
            messages,
        )
        .await?;
    if refused.is_empty() {
        return Ok(empty_object());
    }
    Ok(Reply(
        json!({ "org.myelin.inbox_full": inbox_full(&refused) }),
    ))
}
