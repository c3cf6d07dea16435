//! The outbox: events and redactions saved with their transaction id
//! before the first attempt, so that retries, in this process or after a
//! restart, repeat the same request and the server stores the event once.

use std::time::{SystemTime, UNIX_EPOCH};

use rand::Rng;
use reqwest::Method;
use ruma::{OwnedEventId, OwnedRoomId};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::EventIdResponse;
use crate::{
    Client,
    error::Result,
    http::Request,
    store::{Changes, StoreError},
};

/// Where unsent events wait (key: the transaction id).
pub(crate) const OUTBOX_NAMESPACE: &str = "outbox";

/// An event or redaction not yet acknowledged by the server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingEvent {
    /// The transaction id every attempt uses. Ids sort by creation time.
    pub txn_id: String,
    /// The room.
    pub room_id: OwnedRoomId,
    /// What to send.
    pub kind: PendingKind,
}

/// What a [`PendingEvent`] sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PendingKind {
    /// `PUT /rooms/{roomId}/send/{eventType}/{txnId}`.
    Message {
        /// The event type.
        event_type: String,
        /// The content.
        content: Value,
    },
    /// `PUT /rooms/{roomId}/redact/{eventId}/{txnId}`.
    Redaction {
        /// The event to redact.
        event_id: OwnedEventId,
        /// Why.
        reason: Option<String>,
    },
}

impl PendingEvent {
    /// A new pending event with a fresh transaction id.
    pub(crate) fn new(room_id: OwnedRoomId, kind: PendingKind) -> Self {
        let millis = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_millis());
        // Millisecond prefix for ordering, 64 random bits for uniqueness.
        let txn_id = format!("m{millis:013}.{:016x}", rand::thread_rng().r#gen::<u64>());
        Self {
            txn_id,
            room_id,
            kind,
        }
    }

    fn request(&self) -> Request {
        let room = self.room_id.as_str();
        match &self.kind {
            PendingKind::Message {
                event_type,
                content,
            } => Request::v3(
                Method::PUT,
                &["rooms", room, "send", event_type, &self.txn_id],
            )
            .json(content.clone()),
            PendingKind::Redaction { event_id, reason } => {
                let body = reason
                    .as_ref()
                    .map_or_else(|| json!({}), |reason| json!({ "reason": reason }));
                Request::v3(
                    Method::PUT,
                    &["rooms", room, "redact", event_id.as_str(), &self.txn_id],
                )
                .json(body)
            }
        }
    }
}

impl Client {
    /// Events not yet acknowledged by the server, oldest first.
    ///
    /// # Errors
    ///
    /// Store errors.
    pub async fn pending_events(&self) -> Result<Vec<PendingEvent>> {
        self.inner
            .store
            .list(OUTBOX_NAMESPACE)
            .await?
            .into_iter()
            .map(|(key, bytes)| {
                serde_json::from_slice(&bytes).map_err(|error| {
                    StoreError::Encoding(format!("{OUTBOX_NAMESPACE}/{key}: {error}")).into()
                })
            })
            .collect()
    }

    /// Sends every pending event again, oldest first, with its original
    /// transaction id. Call it after a restart. Returns each transaction
    /// id with its outcome.
    ///
    /// # Errors
    ///
    /// Store errors reading the outbox; per-event errors are in the list.
    pub async fn resend_pending(&self) -> Result<Vec<(String, Result<OwnedEventId>)>> {
        let mut outcomes = Vec::new();
        for pending in self.pending_events().await? {
            let outcome = self.deliver(&pending).await;
            outcomes.push((pending.txn_id, outcome));
        }
        Ok(outcomes)
    }

    /// Saves `pending` in the outbox, then delivers it.
    pub(crate) async fn send_pending(&self, pending: PendingEvent) -> Result<OwnedEventId> {
        let mut changes = Changes::new();
        changes.put_json(OUTBOX_NAMESPACE, &pending.txn_id, &pending)?;
        self.inner.store.commit(changes).await?;
        self.deliver(&pending).await
    }

    /// Sends a saved event (retrying transient failures) and removes it
    /// from the outbox once the server has answered for good. After a
    /// transient failure it stays for [`Client::resend_pending`].
    async fn deliver(&self, pending: &PendingEvent) -> Result<OwnedEventId> {
        let outcome: Result<EventIdResponse> = self
            .inner
            .http
            .send_with_retries(&pending.request(), &self.inner.request_retry)
            .await;
        match &outcome {
            Err(error) if error.is_transient() => {
                tracing::debug!(room_id = %pending.room_id, "send failed; kept in the outbox");
            }
            _ => {
                let mut changes = Changes::new();
                changes.delete(OUTBOX_NAMESPACE, &pending.txn_id);
                self.inner.store.commit(changes).await?;
            }
        }
        outcome.map(|response| response.event_id)
    }
}
