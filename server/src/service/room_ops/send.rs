//! Sending events and state, and redacting.

use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, OwnedDeviceId, OwnedEventId, RoomAliasId, RoomId,
    UserId,
    events::{StateEventType, TimelineEventType},
};

use super::{RoomOps, check_text, with_reason};
use crate::service::{
    ServiceError,
    room_events::{LocalEvent, Transaction, transaction_key},
};

impl RoomOps {
    /// Sends a message-like event. Retrying the same `txn_id` from the same
    /// device returns the first event instead of sending again.
    ///
    /// The content is stored and served exactly as given: the server does
    /// not read it.
    ///
    /// # Errors
    /// `Forbidden` when the sender may not send it; `NotFound` for an unknown room.
    pub async fn send_message(
        &self,
        sender: &UserId,
        device_id: OwnedDeviceId,
        room_id: &RoomId,
        event_type: &str,
        txn_id: String,
        content: CanonicalJsonObject,
    ) -> Result<OwnedEventId, ServiceError> {
        check_text("the event type", event_type)?;
        check_text("the transaction id", &txn_id)?;
        let mut content = content;
        // Redactions may come through `/send` in every room version; the
        // event builder puts `redacts` where the version wants it (top level
        // before v11, in the content from v11), so it is taken out here.
        let redacts = match event_type {
            "m.room.redaction" => match content.remove("redacts") {
                Some(CanonicalJsonValue::String(target)) => Some(
                    OwnedEventId::try_from(target)
                        .map_err(|e| ServiceError::InvalidParam(format!("redacts: {e}")))?,
                ),
                Some(_) => {
                    return Err(ServiceError::InvalidParam(
                        "redacts must be an event id".to_owned(),
                    ));
                }
                None => None,
            },
            _ => None,
        };
        self.events
            .send(
                room_id,
                LocalEvent {
                    sender: sender.to_owned(),
                    event_type: event_type.into(),
                    state_key: None,
                    content,
                    redacts,
                    transaction: Some(Transaction {
                        device_id,
                        key: transaction_key("send", room_id, event_type, &txn_id),
                        txn_id,
                    }),
                },
            )
            .await
    }

    /// Sends a state event.
    ///
    /// # Errors
    /// `Forbidden` from the rules; `BadAlias` when an `m.room.canonical_alias`
    /// names an alias that does not point at this room.
    pub async fn send_state(
        &self,
        sender: &UserId,
        room_id: &RoomId,
        event_type: &str,
        state_key: &str,
        content: CanonicalJsonObject,
    ) -> Result<OwnedEventId, ServiceError> {
        check_text("the event type", event_type)?;
        check_text("the state key", state_key)?;
        if event_type == "m.room.canonical_alias" {
            self.check_canonical_alias(room_id, &content).await?;
        }
        self.events
            .send(
                room_id,
                LocalEvent {
                    sender: sender.to_owned(),
                    event_type: event_type.into(),
                    state_key: Some(state_key.to_owned()),
                    content,
                    redacts: None,
                    transaction: None,
                },
            )
            .await
    }

    /// Redacts an event.
    ///
    /// # Errors
    /// `Forbidden` when the sender may not redact it; `NotFound` when the
    /// event is not in this room.
    pub async fn redact(
        &self,
        sender: &UserId,
        device_id: OwnedDeviceId,
        room_id: &RoomId,
        target: OwnedEventId,
        txn_id: String,
        reason: Option<String>,
    ) -> Result<OwnedEventId, ServiceError> {
        check_text("the transaction id", &txn_id)?;
        self.events
            .send(
                room_id,
                LocalEvent {
                    sender: sender.to_owned(),
                    event_type: TimelineEventType::RoomRedaction,
                    state_key: None,
                    content: with_reason(reason),
                    transaction: Some(Transaction {
                        device_id,
                        key: transaction_key("redact", room_id, target.as_str(), &txn_id),
                        txn_id,
                    }),
                    redacts: Some(target),
                },
            )
            .await
    }

    /// Every alias an `m.room.canonical_alias` adds must be valid and point
    /// at the room; aliases already in the current event are not checked
    /// again (spec, `PUT /rooms/{roomId}/state/{eventType}/{stateKey}`).
    async fn check_canonical_alias(
        &self,
        room_id: &RoomId,
        content: &CanonicalJsonObject,
    ) -> Result<(), ServiceError> {
        let current = match self.events.current_state(room_id).await? {
            Some(state) => state
                .get(&StateEventType::RoomCanonicalAlias, "")
                .and_then(|pdu| {
                    serde_json::from_str::<CanonicalJsonObject>(pdu.content().get()).ok()
                })
                .map(|content| {
                    named_aliases(&content)
                        .into_iter()
                        .cloned()
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default(),
            None => Vec::new(),
        };
        for alias in named_aliases(content) {
            if current.contains(alias) {
                continue;
            }
            let CanonicalJsonValue::String(alias) = alias else {
                return Err(ServiceError::InvalidParam(
                    "aliases must be strings".to_owned(),
                ));
            };
            let alias = RoomAliasId::parse(alias)
                .map_err(|e| ServiceError::InvalidParam(format!("invalid alias: {e}")))?;
            match self.storage.alias(&alias).await? {
                Some((target, _)) if target == room_id => {}
                _ => {
                    return Err(ServiceError::BadAlias(format!(
                        "{alias} does not point to this room"
                    )));
                }
            }
        }
        Ok(())
    }
}

/// The `alias` and `alt_aliases` an `m.room.canonical_alias` content names.
fn named_aliases(content: &CanonicalJsonObject) -> Vec<&CanonicalJsonValue> {
    let mut aliases = Vec::new();
    if let Some(alias) = content.get("alias") {
        aliases.push(alias);
    }
    if let Some(CanonicalJsonValue::Array(alt)) = content.get("alt_aliases") {
        aliases.extend(alt);
    }
    aliases
}
